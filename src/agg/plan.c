/*
 * plan.c -- compile a config generation into what the record path needs:
 * families with their value and dimension expression ids, dimension sets
 * shared by families with the same labels, rules with the families they
 * feed, and the attribute-generating (mesos) instances to run first.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agg/agg_internal.h"

void plan_ref(struct agg_plan *p)
{
	__atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
}

void plan_unref(struct agg_plan *p)
{
	if (!p || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (size_t i = 0; i < p->ndimsets; i++) {
		free(p->dimsets[i].dims);
		free((void *)p->dimsets[i].labels);
		free(p->dimsets[i].cell_kind);
		free(p->dimsets[i].signature);
		free(p->dimsets[i].key_sig);
	}
	for (size_t i = 0; i < p->nrules; i++) {
		free(p->rules[i].fams);
		free(p->rules[i].logs);
		free(p->rules[i].at);
		free(p->rules[i].off);
		expr_plan_destroy(p->rules[i].xp);
	}
	for (size_t i = 0; i < p->napas; i++) {
		expr_plan_destroy(p->apas[i].in_plan);
		expr_plan_destroy(p->apas[i].bind_plan);
		free(p->apas[i].bind_at);
		free(p->apas[i].bind_slot);
	}
	for (size_t i = 0; i < p->nlogs; i++) {
		if (p->logs[i].own_fd) {
			close(p->logs[i].fd);
			if (p->logs[i].rot)
				pthread_mutex_destroy(&p->logs[i].rot->lock);
			free(p->logs[i].rot);
		}
		free(p->logs[i].vars);
	}
	/* <=: a family being built when the build failed has its bounds. */
	for (size_t i = 0; p->fams && i <= p->nfams; i++) {
		free(p->fams[i].padded);
		free(p->fams[i].octave);
	}
	expr_plan_destroy(p->val_plan);
	free(p->val_at);
	free(p->logs);
	free(p->dimsets);
	free(p->rules);
	free(p->apas);
	free(p->fams);
	cfg_destroy(p->cfg);
	free(p);
}

/* The signature says when a reload may keep a dimension set's rows: same
 * families (name, kind, buckets), same labels, same expressions. Its
 * first part, the labels and expressions, is d->key_sig: rows of a set
 * with the same one have the same keys, and a reload carries over the
 * counts of the families two such sets share. */
static char *signature(const struct agg_plan *p, struct plan_dimset *d)
{
	size_t cap = 256, len = 0;
	char *s = malloc(cap);
	if (!s)
		return NULL;
#define PUT(...)                                                             \
	do {                                                                 \
		int n_ = snprintf(s + len, cap - len, __VA_ARGS__);          \
		while (n_ >= 0 && (size_t)n_ >= cap - len) {                 \
			char *g_ = realloc(s, cap *= 2);                     \
			if (!g_) {                                           \
				free(s);                                     \
				return NULL;                                 \
			}                                                    \
			s = g_;                                              \
			n_ = snprintf(s + len, cap - len, __VA_ARGS__);      \
		}                                                            \
		len += (size_t)n_;                                           \
	} while (0)
	for (size_t i = 0; i < d->ndims; i++)
		PUT("%s=%s;", d->labels[i], expr_text(p->prog, d->dims[i]));
	if (!(d->key_sig = strndup(s, len))) {
		free(s);
		return NULL;
	}
	for (unsigned f = 0; f < d->nfam; f++) {
		const struct plan_family *pf = &p->fams[d->fams[f]];
		PUT("|%s:%d", pf->name, pf->kind);
		for (size_t b = 0; b < pf->nb; b++)
			PUT(",%.17g", pf->bounds[b]);
	}
	/* The rows' layout: a set that gains family times is another set. */
	if (d->tcell)
		PUT("|times");
#undef PUT
	return s;
}

static unsigned dimset_for(struct agg_plan *p, const struct cfg_prom_metric *m,
			   int64_t expiry_ns)
{
	const struct cfg_metric_inst *mi = &m->instance->metric;
	size_t n = m->label_names.n;
	for (size_t i = 0; i < p->ndimsets; i++) {
		struct plan_dimset *d = &p->dimsets[i];
		if (d->ndims != n || d->nfam == 64 || d->expiry_ns != expiry_ns)
			continue;
		size_t k = 0;
		while (k < n && d->dims[k] == (uint32_t)mi->dimensions.v[m->label_dims[k]].expr.id &&
		       strcmp(d->labels[k], m->label_names.v[k].s) == 0)
			k++;
		if (k == n)
			return (unsigned)i;
	}
	struct plan_dimset *d = &p->dimsets[p->ndimsets];
	d->ndims = n;
	d->expiry_ns = expiry_ns;
	d->dims = calloc(n ? n : 1, sizeof *d->dims);
	const char **labels = calloc(n ? n : 1, sizeof *labels);
	if (!d->dims || !labels) {
		free(labels);
		return UINT32_MAX;
	}
	for (size_t k = 0; k < n; k++) {
		d->dims[k] = (uint32_t)mi->dimensions.v[m->label_dims[k]].expr.id;
		labels[k] = m->label_names.v[k].s;
	}
	d->labels = labels; /* the strings themselves live in the config */
	return (unsigned)p->ndimsets++;
}

static int add_u32(uint32_t **v, size_t *n, size_t *cap, uint32_t id)
{
	for (size_t i = 0; i < *n; i++)
		if ((*v)[i] == id)
			return 0;
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		uint32_t *g = realloc(*v, nc * sizeof *g);
		if (!g)
			return -1;
		*v = g;
		*cap = nc;
	}
	(*v)[(*n)++] = id;
	return 0;
}

static int build_rule(struct agg_plan *p, const struct cfg_rule *r)
{
	struct plan_rule *pr = &p->rules[p->nrules++];
	size_t fcap = 0, lcap = 0;
	pr->r = r;
	pr->match_id = (uint32_t)r->match.id;
	pr->all_namespaces = r->in_default_namespace;
	if (!pr->all_namespaces)
		p->scoped = true;
	for (size_t a = 0; a < r->n_actions; a++) {
		const struct cfg_action *act = &r->actions[a];
		const struct cfg_handler *h = act->handler;
		if (!h)
			continue; /* a skipped handler kind: the action does nothing */
		for (size_t i = 0; i < act->n_instances; i++) {
			const struct cfg_instance *inst = act->instances[i];
			if (h->adapter == CFG_ADAPTER_MESOSENV &&
			    inst->tmpl == CFG_TMPL_MESOS) {
				const struct cfg_mesos_inst *mi = &inst->mesos;
				p->apas[p->napas++] = (struct plan_apa){
					.r = r,
					.inst = inst,
					.handler = h,
					.match_id = (uint32_t)r->match.id,
					.all_namespaces = r->in_default_namespace,
					.in = {mi->source_uid.id, mi->source_ip.id,
					       mi->destination_uid.id,
					       mi->destination_ip.id,
					       mi->destination_port.id},
				};
				continue;
			}
			if (h->adapter == CFG_ADAPTER_STDIO &&
			    inst->tmpl == CFG_TMPL_LOGENTRY) {
				p->logs[p->nlogs] = (struct plan_log){
					.inst = inst, .stdio = &h->stdio, .fd = -1};
				if (add_u32(&pr->logs, &pr->nlogs, &lcap,
					     (uint32_t)p->nlogs++))
					return -1;
				continue;
			}
			if (h->adapter != CFG_ADAPTER_PROMETHEUS)
				continue;
			const struct cfg_prometheus *pm = &h->prometheus;
			for (size_t f = 0; f < p->nfams; f++) {
				struct plan_family *pf = &p->fams[f];
				if (pf->m->instance != inst || pf->m < pm->metrics ||
				    pf->m >= pm->metrics + pm->n_metrics)
					continue;
				if (add_u32(&pr->fams, &pr->nfams, &fcap, (uint32_t)f))
					return -1;
			}
		}
	}
	return 0;
}

/* A rule's guarded plan: the match, then each family's value and dims. */
static int plan_rule_exprs(struct agg_plan *p, struct plan_rule *pr)
{
	size_t n = 0;
	for (size_t k = 0; k < pr->nfams; k++)
		n += 1 + p->dimsets[p->fams[pr->fams[k]].dimset].ndims;
	uint32_t *ids = calloc(n + 1, sizeof *ids);
	pr->at = calloc(n + 1, sizeof *pr->at);
	pr->off = calloc(pr->nfams + 1, sizeof *pr->off);
	if (!ids || !pr->at || !pr->off) {
		free(ids);
		return -1;
	}
	n = 0;
	for (size_t k = 0; k < pr->nfams; k++) {
		const struct plan_family *f = &p->fams[pr->fams[k]];
		const struct plan_dimset *d = &p->dimsets[f->dimset];
		pr->off[k] = (uint32_t)n;
		ids[n++] = f->value_id;
		for (size_t j = 0; j < d->ndims; j++)
			ids[n++] = d->dims[j];
	}
	pr->xp = expr_plan_create_guarded(p->prog, pr->match_id, ids, n);
	free(ids);
	if (!pr->xp)
		return -1;
	pr->guard = expr_plan_guard(pr->xp);
	for (size_t i = 0; i < n; i++)
		pr->at[i] = expr_plan_index(pr->xp, i);
	return 0;
}

/* A mesos instance's plans: match and inputs; then its bindings. */
static int plan_apa_exprs(struct agg_plan *p, struct plan_apa *a)
{
	uint32_t ids[5];
	size_t n = 0;
	int which[5];
	for (int k = 0; k < 5; k++) {
		a->in_at[k] = UINT32_MAX;
		if (a->in[k] >= 0) {
			which[n] = k;
			ids[n++] = (uint32_t)a->in[k];
		}
	}
	a->in_plan = expr_plan_create_guarded(p->prog, a->match_id, ids, n);
	if (!a->in_plan)
		return -1;
	a->in_guard = expr_plan_guard(a->in_plan);
	for (size_t i = 0; i < n; i++)
		a->in_at[which[i]] = expr_plan_index(a->in_plan, i);

	const struct cfg_expr_map *b = &a->inst->mesos.attribute_bindings;
	uint32_t *bids = calloc(b->n + 1, sizeof *bids);
	a->bind_at = calloc(b->n + 1, sizeof *a->bind_at);
	a->bind_slot = calloc(b->n + 1, sizeof *a->bind_slot);
	if (!bids || !a->bind_at || !a->bind_slot) {
		free(bids);
		return -1;
	}
	for (size_t k = 0; k < b->n; k++) {
		bids[k] = (uint32_t)b->v[k].expr.id;
		a->bind_slot[k] = b->v[k].slot;
	}
	a->nbind = b->n;
	a->bind_plan = expr_plan_create(p->prog, bids, b->n);
	free(bids);
	if (!a->bind_plan)
		return -1;
	for (size_t k = 0; k < b->n; k++)
		a->bind_at[k] = expr_plan_index(a->bind_plan, k);
	return 0;
}

/* Mark what expression @id reads; -1 and EXPR_PLAN_NO_GUARD are none. */
static bool reads(struct agg_plan *p, int64_t id, uint64_t *mask)
{
	return id < 0 || id == EXPR_PLAN_NO_GUARD ||
	       expr_reads(p->prog, (uint32_t)id, mask, ATTR_PRESENT_WORDS);
}

/* Can a remembered record's value of @f skip val_plan (see plan_family)? */
static void value_direct(const struct agg_plan *p, struct plan_family *f)
{
	struct attr_value k;
	enum attr_type decl = ATTR_NONE;
	uint32_t slot = UINT32_MAX;
	if (!expr_constant(p->prog, f->value_id, &k) &&
	    !expr_load_or_const(p->prog, f->value_id, &slot, &decl, &k))
		return;
	f->val_direct = true;
	f->val_slot = slot;
	f->val_decl = (uint8_t)decl;
	f->val_k_ok = metric_value(&k, &f->val_k) &&
		      (f->kind != FAM_COUNTER || f->val_k >= 0);
}

/*
 * Decide whether the record memo may serve this plan, and over which
 * attributes: everything an attribute-generating instance, a match or a
 * label reads (and, for scoped rules, what the record's namespace comes
 * from). A value expression must not read what a mesos instance binds,
 * because a remembered record skips the bindings; a logentry needs every
 * record's bindings too.
 */
static int plan_memo(struct agg_plan *p)
{
	uint64_t m[ATTR_PRESENT_WORDS] = {0}, vals[ATTR_PRESENT_WORDS] = {0},
		 bound[ATTR_PRESENT_WORDS] = {0};
	bool ok = p->nlogs == 0 && p->ndimsets <= 64 && p->nfams <= 64;

	for (size_t i = 0; i < p->nrules; i++)
		ok &= reads(p, p->rules[i].match_id, m);
	for (size_t d = 0; d < p->ndimsets; d++)
		for (size_t j = 0; j < p->dimsets[d].ndims; j++)
			ok &= reads(p, p->dimsets[d].dims[j], m);
	for (size_t i = 0; i < p->napas; i++) {
		const struct plan_apa *a = &p->apas[i];
		const struct cfg_expr_map *b = &a->inst->mesos.attribute_bindings;
		ok &= reads(p, a->match_id, m);
		for (int k = 0; k < 5; k++)
			ok &= reads(p, a->in[k], m);
		for (size_t k = 0; k < b->n; k++) {
			ok &= reads(p, b->v[k].expr.id, m);
			if (b->v[k].slot >= 0)
				bound[b->v[k].slot / 64] |= 1ull
							    << (b->v[k].slot % 64);
		}
	}
	if (p->scoped)
		cfg_record_namespace_reads(m);
	for (int o = 0; o < MAR_OUT_COUNT; o++)
		if (p->out_slot[o] >= 0)
			bound[p->out_slot[o] / 64] |= 1ull << (p->out_slot[o] % 64);

	uint32_t *ids = calloc(p->nfams + 1, sizeof *ids);
	p->val_at = calloc(p->nfams + 1, sizeof *p->val_at);
	if (!ids || !p->val_at) {
		free(ids);
		return -1;
	}
	for (size_t f = 0; f < p->nfams; f++) {
		ids[f] = p->fams[f].value_id;
		ok &= reads(p, p->fams[f].value_id, vals);
	}
	for (size_t w = 0; w < ATTR_PRESENT_WORDS; w++)
		ok &= !(vals[w] & bound[w]);
	p->val_plan = expr_plan_create(p->prog, ids, p->nfams);
	free(ids);
	if (!p->val_plan)
		return -1;
	for (size_t f = 0; f < p->nfams; f++) {
		p->val_at[f] = expr_plan_index(p->val_plan, f);
		value_direct(p, &p->fams[f]);
	}
	p->memo_ok = ok;
	ingest_keyspec_init(&p->memo_keys, m);
	return 0;
}

bool metric_value_string(const struct attr_value *v, double *out)
{
	char buf[64];
	if (v->len == 0 || v->len >= sizeof buf)
		return false;
	memcpy(buf, v->s, v->len);
	buf[v->len] = 0;
	/* What Go's ParseFloat (Mixer's) takes, by way of strtod, which
	 * takes more: no leading space, no hexadecimal without its 'p'
	 * exponent ("0x10"), no "nan(...)". */
	const char *p = buf + (buf[0] == '+' || buf[0] == '-');
	if (isspace((unsigned char)buf[0]) ||
	    ((p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) &&
	     !strpbrk(p, "pP")) ||
	    strchr(buf, '('))
		return false;
	char *end;
	*out = strtod(buf, &end);
	return *end == 0;
}

static enum fam_kind fam_kind(enum cfg_prom_kind k)
{
	switch (k) {
	case CFG_PROM_DISTRIBUTION:
		return FAM_HISTOGRAM;
	case CFG_PROM_GAUGE:
		return FAM_GAUGE;
	default:
		return FAM_COUNTER;
	}
}

/*
 * Family @pf's octave table (fam_bucket()): for each sign and exponent,
 * the octave [lo, hi) of the positive doubles that have it (lo 0 for the
 * subnormals, +Inf alone for the last), the bounds below lo, when no more
 * than one bound lies in it. Bounds are increasing (the config says so).
 */
static void octaves(struct plan_family *pf)
{
	memset(pf->octave, FAM_OCTAVE_SEARCH, FAM_OCTAVES);
	size_t below = 0, in;
	for (int e = 0; e < 2048; e++) {
		double lo = e == 0 ? 0.0 : e == 2047 ? INFINITY : ldexp(1.0, e - 1023);
		double hi = e >= 2046 ? INFINITY : ldexp(1.0, e - 1022);
		while (below < pf->nb && pf->bounds[below] < lo)
			below++;
		for (in = 0; below + in < pf->nb && pf->bounds[below + in] < hi;)
			in++;
		if (e == 2047) { /* +Inf and the positive NaNs */
			if (pf->nb && isinf(pf->bounds[pf->nb - 1]))
				continue; /* a +Inf bound: the search (NaN) */
			in = 0;
		}
		if (in <= 1 && below < FAM_OCTAVE_SEARCH)
			pf->octave[e] = (uint8_t)below;
	}
}

int plan_buckets(struct plan_family *pf)
{
	pf->npad = 1;
	while (pf->npad < pf->nb)
		pf->npad *= 2;
	pf->padded = malloc((pf->npad + 1) * sizeof *pf->padded);
	pf->octave = malloc(FAM_OCTAVES);
	if (!pf->padded || !pf->octave)
		return -1; /* freed with the family */
	for (size_t b = 0; b <= pf->npad; b++)
		pf->padded[b] = b < pf->nb ? pf->bounds[b] : INFINITY;
	octaves(pf);
	return 0;
}

struct agg_plan *plan_build(struct cfg *cfg, uint64_t generation, int *err)
{
	*err = -ENOMEM;
	struct agg_plan *p = calloc(1, sizeof *p);
	if (!p) {
		cfg_destroy(cfg);
		return NULL;
	}
	p->refs = 1;
	p->cfg = cfg;
	p->prog = cfg_program(cfg);
	p->vocab = cfg_vocab(cfg);
	p->generation = generation;

	size_t nmetrics = 0, nactions = 0;
	for (size_t i = 0; i < cfg_handler_count(cfg); i++) {
		const struct cfg_handler *h = cfg_handler(cfg, i);
		if (h->adapter == CFG_ADAPTER_PROMETHEUS)
			nmetrics += h->prometheus.n_metrics;
	}
	for (size_t i = 0; i < cfg_rule_count(cfg); i++) {
		const struct cfg_rule *r = cfg_rule(cfg, i);
		for (size_t a = 0; a < r->n_actions; a++)
			nactions += r->actions[a].n_instances;
	}
	p->fams = calloc(nmetrics + 1, sizeof *p->fams);
	p->dimsets = calloc(nmetrics + 1, sizeof *p->dimsets);
	p->rules = calloc(cfg_rule_count(cfg) + 1, sizeof *p->rules);
	p->apas = calloc(nactions + 1, sizeof *p->apas);
	p->logs = calloc(nactions + 1, sizeof *p->logs);
	if (!p->fams || !p->dimsets || !p->rules || !p->apas || !p->logs)
		goto fail;

	for (size_t i = 0; i < cfg_handler_count(cfg); i++) {
		const struct cfg_handler *h = cfg_handler(cfg, i);
		if (h->adapter != CFG_ADAPTER_PROMETHEUS)
			continue;
		/* Each handler's policy for its own metrics, as Mixer kept
		 * one expiry cache per handler; the plan's are the shortest,
		 * for when to look. */
		int64_t ttl = h->prometheus.metrics_expiry_ns > 0
				      ? h->prometheus.metrics_expiry_ns
				      : 0;
		if (ttl) {
			int64_t every = h->prometheus.expiry_check_interval_ns;
			if (every <= 0)
				every = ttl / 2 > 0 ? ttl / 2 : 1;
			if (!p->expiry_ns || ttl < p->expiry_ns)
				p->expiry_ns = ttl;
			if (!p->expiry_check_ns || every < p->expiry_check_ns)
				p->expiry_check_ns = every;
		}
		for (size_t m = 0; m < h->prometheus.n_metrics; m++) {
			const struct cfg_prom_metric *cm = &h->prometheus.metrics[m];
			struct plan_family *pf = &p->fams[p->nfams];
			pf->m = cm;
			pf->name = cm->family;
			pf->help = cm->description.s && *cm->description.s
					   ? cm->description.s
					   : cm->name.s;
			pf->kind = fam_kind(cm->kind);
			pf->value_id = (uint32_t)cm->instance->metric.value.id;
			pf->instance = cm->instance->meta.fqn;
			if (pf->kind == FAM_HISTOGRAM) {
				pf->bounds = cm->buckets.bounds;
				pf->nb = cm->buckets.n_bounds;
				if (plan_buckets(pf))
					goto fail;
			}
			unsigned d = dimset_for(p, cm, ttl);
			if (d == UINT32_MAX)
				goto fail;
			struct plan_dimset *ds = &p->dimsets[d];
			pf->dimset = d;
			pf->bit = ds->nfam;
			pf->cell = ds->ncells;
			ds->ncells += plan_family_cells(pf);
			ds->fams[ds->nfam++] = (unsigned)p->nfams;
			p->nfams++;
		}
	}
	for (size_t i = 0; i < p->ndimsets; i++) {
		struct plan_dimset *d = &p->dimsets[i];
		/* Families that share rows and expire: each its own time. */
		if (d->expiry_ns && d->nfam > 1) {
			d->tcell = d->ncells;
			d->ncells += d->nfam;
		}
		if (!(d->signature = signature(p, d)) ||
		    !(d->cell_kind = calloc(d->ncells + 1, 1)))
			goto fail;
		for (unsigned f = 0; d->tcell && f < d->nfam; f++)
			d->cell_kind[d->tcell + f] = CELL_MAX_I64;
		for (unsigned f = 0; f < d->nfam; f++) {
			const struct plan_family *pf = &p->fams[d->fams[f]];
			uint8_t *k = d->cell_kind + pf->cell;
			if (pf->kind == FAM_COUNTER) {
				k[0] = CELL_SUM_DOUBLE;
			} else if (pf->kind == FAM_GAUGE) {
				k[0] = CELL_LAST_DOUBLE;
			} else {
				for (size_t b = 0; b <= pf->nb; b++)
					k[b] = CELL_SUM_U64;
				k[pf->nb + 1] = CELL_SUM_DOUBLE;
				k[pf->nb + 2] = CELL_SUM_U64;
			}
		}
	}
	for (size_t i = 0; i < cfg_rule_count(cfg); i++)
		if (build_rule(p, cfg_rule(cfg, i)) ||
		    plan_rule_exprs(p, &p->rules[p->nrules - 1]))
			goto fail;
	for (size_t i = 0; i < p->napas; i++) {
		struct plan_apa *a = &p->apas[i];
		a->first = (int)i;
		for (size_t j = 0; j < i && a->first == (int)i; j++)
			if (p->apas[j].inst == a->inst &&
			    p->apas[j].handler == a->handler)
				a->first = (int)j;
		if (plan_apa_exprs(p, a))
			goto fail;
	}
	for (int o = 0; o < MAR_OUT_COUNT; o++) {
		char name[64];
		int n = snprintf(name, sizeof name, "$out.%s", mar_out_name(o));
		p->out_slot[o] = attr_vocab_find(p->vocab, name, (size_t)n);
	}
	if (plan_memo(p))
		goto fail;
	if (plan_open_logs(p)) {
		*err = -EIO;
		goto fail;
	}
	return p;
fail:
	plan_unref(p);
	return NULL;
}
