/*
 * pol_check.c -- the check and quota dispatch of one config generation
 * (policy.h says what a check does; this file is how).
 *
 * At build, every (rule, action, instance) of the policy path becomes a
 * dispatch: check instances (checknothing, listentry) in one array, quota
 * instances in another, each in config order, so a check is two plain
 * loops, after attribute generation (pol_gen.c) has bound what the mesos
 * instances say into the request. Expressions are evaluated through the
 * config's shared program with the thread's scratch: a rule's match used
 * by several dispatches is evaluated once per request.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mixd/check.h>

#include "expr/expr.h"
#include "policy/pol_fetch.h"
#include "policy/pol_gen.h"
#include "policy/pol_list.h"
#include "policy/pol_quota.h"
#include "policy/policy.h"

#define DEFAULT_QUOTA_KEYS 1000000
#define DEFAULT_QUOTA_DEDUP 100000
/* Memory a memquota handler's keys may take, at most: a key of a rolling
 * window costs 80 bytes a second of it (pol_quota.h), so the key limit
 * shrinks for long windows. */
#define QUOTA_BYTES (256u << 20)
#define QUOTA_KEY_BYTES 512u /* a key's own cost, its rendering included */

/* A policy handler and what it keeps. */
struct handler {
	const struct cfg_handler *h;
	struct pol_list *list;	  /* listchecker of overrides alone */
	struct pol_provider *provider; /* listchecker with a providerUrl */
	struct pol_memquota *mq; /* memquota */
};

/* One instance sent to one handler by one rule. */
struct dispatch {
	const struct cfg_rule *r;
	const struct handler *hd;
	const struct cfg_instance *in;
	size_t short_len; /* quota: the instance's name before its first dot */
};

struct pol_engine {
	struct cfg *c; /* held */
	const struct expr_program *prog;
	struct handler *handlers;
	size_t n_handlers;
	struct dispatch *checks, *quotas;
	size_t n_checks, n_quotas;
	struct pol_gen *gen; /* attribute generation, run first */
	/* the dictionary attributes a check's answer depends on */
	uint16_t refs[MIXD_ATTR_DICT_COUNT];
	uint16_t n_refs;
};

struct pol_thread {
	struct expr_scratch *s;
	struct pol_gen_thread *gt;
	/* a quota instance's dimensions, evaluated */
	struct pol_quota_dim dims[POL_QUOTA_DIMS_MAX];
	struct attr_value vals[POL_QUOTA_DIMS_MAX];
};

/* ---- building ------------------------------------------------------------ */

static enum pol_list_type list_type(enum cfg_list_entry_type t)
{
	switch (t) {
	case CFG_LIST_CASE_INSENSITIVE_STRINGS:
		return POL_LIST_CASE_INSENSITIVE_STRINGS;
	case CFG_LIST_IP_ADDRESSES:
		return POL_LIST_IP_ADDRESSES;
	case CFG_LIST_REGEX:
		return POL_LIST_REGEX;
	case CFG_LIST_STRINGS:
		break;
	}
	return POL_LIST_STRINGS;
}

/* A listchecker's list from its overrides: 0, -ENOMEM, or -1 with why. */
static int build_list(const struct cfg_listchecker *l, struct pol_list **out,
		      char *why, size_t why_len)
{
	const char **ov = calloc(l->overrides.n + 1, sizeof(*ov));
	if (!ov)
		return -ENOMEM;
	for (size_t i = 0; i < l->overrides.n; i++)
		ov[i] = l->overrides.v[i].s ? l->overrides.v[i].s : "";
	int rc = pol_list_build(list_type(l->entry_type), NULL, 0, ov,
				l->overrides.n, out, why, why_len);
	free(ov);
	return rc;
}

void pol_validate(struct cfg *c)
{
	for (size_t i = 0; i < cfg_handler_count(c); i++) {
		const struct cfg_handler *h = cfg_handler(c, i);
		if (h->adapter != CFG_ADAPTER_LISTCHECKER)
			continue;
		struct pol_list *l = NULL;
		char why[256];
		int rc = build_list(&h->listchecker, &l, why, sizeof(why));
		if (rc == -1)
			cfg_add_error(c, &h->meta, "overrides", why);
		else if (rc)
			cfg_add_error(c, &h->meta, "overrides",
				      "out of memory building the list");
		pol_list_free(l);
	}
	for (size_t i = 0; i < cfg_instance_count(c); i++) {
		const struct cfg_instance *in = cfg_instance(c, i);
		if (in->tmpl == CFG_TMPL_QUOTA &&
		    in->quota.dimensions.n > POL_QUOTA_DIMS_MAX)
			cfg_add_error(c, &in->meta, "dimensions",
				      "more than 64 dimensions");
	}
}

static size_t short_name_len(const char *fqn)
{
	const char *dot = strchr(fqn, '.');
	return dot ? (size_t)(dot - fqn) : strlen(fqn);
}

static struct handler *handler_of(struct pol_engine *e,
				  const struct cfg_handler *h)
{
	for (size_t i = 0; i < e->n_handlers; i++)
		if (e->handlers[i].h == h)
			return &e->handlers[i];
	return NULL;
}

static int build_handler(struct handler *hd, const struct cfg_handler *h,
			 const struct pol_options *o)
{
	hd->h = h;
	if (h->adapter == CFG_ADAPTER_LISTCHECKER &&
	    h->listchecker.provider_url.s && *h->listchecker.provider_url.s)
		return (hd->provider = pol_provider_start(h)) ? 0 : -ENOMEM;
	if (h->adapter == CFG_ADAPTER_LISTCHECKER) {
		char why[256];
		/* pol_validate() refused bad entries: only memory fails */
		return build_list(&h->listchecker, &hd->list, why, sizeof(why))
			       ? -ENOMEM
			       : 0;
	}
	if (h->adapter != CFG_ADAPTER_MEMQUOTA)
		return 0;
	const struct cfg_memquota *m = &h->memquota;
	struct pol_quota_def *defs = calloc(m->n_quotas + 1, sizeof(*defs));
	size_t n_kv = 0, n_ov = 0;
	for (size_t q = 0; q < m->n_quotas; q++) {
		n_ov += m->quotas[q].n_overrides;
		for (size_t k = 0; k < m->quotas[q].n_overrides; k++)
			n_kv += m->quotas[q].overrides[k].n_dims;
	}
	struct pol_quota_override *ovs = calloc(n_ov + 1, sizeof(*ovs));
	struct pol_quota_kv *kvs = calloc(n_kv + 1, sizeof(*kvs));
	int rc = -ENOMEM;
	if (!defs || !ovs || !kvs)
		goto out;
	struct pol_quota_override *ov = ovs;
	struct pol_quota_kv *kv = kvs;
	for (size_t q = 0; q < m->n_quotas; q++) {
		const struct cfg_quota_def *cq = &m->quotas[q];
		defs[q] = (struct pol_quota_def){
			.name = cq->name.s,
			.limit = {cq->max_amount, cq->valid_duration_ns},
			.overrides = ov,
			.n_overrides = cq->n_overrides};
		for (size_t k = 0; k < cq->n_overrides; k++, ov++) {
			const struct cfg_quota_override *co = &cq->overrides[k];
			*ov = (struct pol_quota_override){
				.dims = kv,
				.n_dims = co->n_dims,
				.limit = {co->max_amount, co->valid_duration_ns}};
			for (size_t d = 0; d < co->n_dims; d++, kv++)
				*kv = (struct pol_quota_kv){co->dims[d].name,
							    co->dims[d].value.s};
		}
	}
	/* the longest window any of its limits keeps */
	int64_t longest = 0;
	for (size_t q = 0; q < m->n_quotas; q++) {
		const struct cfg_quota_def *cq = &m->quotas[q];
		if (cq->valid_duration_ns > longest)
			longest = cq->valid_duration_ns;
		for (size_t k = 0; k < cq->n_overrides; k++)
			if (cq->overrides[k].valid_duration_ns > longest)
				longest = cq->overrides[k].valid_duration_ns;
	}
	uint64_t secs = (uint64_t)(longest + 999999999) / 1000000000u;
	size_t keys = o && o->quota_max_keys ? o->quota_max_keys
					    : DEFAULT_QUOTA_KEYS;
	uint64_t fit = QUOTA_BYTES / (QUOTA_KEY_BYTES + 80 * secs);
	if (!(o && o->quota_max_keys) && fit < keys)
		keys = fit ? (size_t)fit : 1;
	hd->mq = pol_memquota_create(defs, m->n_quotas, m->min_dedup_ns, keys,
				     o && o->quota_max_dedup
					     ? o->quota_max_dedup
					     : DEFAULT_QUOTA_DEDUP);
	rc = hd->mq ? 0 : -ENOMEM;
out:
	free(defs);
	free(ovs);
	free(kvs);
	return rc;
}

static int add_dispatch(struct dispatch **arr, size_t *n,
			const struct dispatch *d)
{
	struct dispatch *na = realloc(*arr, (*n + 1) * sizeof(**arr));
	if (!na)
		return -ENOMEM;
	na[(*n)++] = *d;
	*arr = na;
	return 0;
}

/*
 * What a check's answer (not its grants) depends on, for a client's cache
 * (<mixd/check.h>): the attributes the check dispatches' rules match on
 * and their listentry values read; the namespace attributes when a rule
 * is scoped; and when any of those is one attribute generation binds, it
 * and what generation reads (a generated attribute stands for the inputs
 * it came from, and for itself as it arrived, which a binding with no
 * value leaves). The Marathon snapshot is not an attribute: an answer
 * made under an older one holds for its validity, as with Mixer's proxy.
 * A superset of what a check reads, since a match that is false skips
 * the rest; coarser than Mixer's per-evaluation tracking (a map counts
 * whole, not by key), so at worst fewer reuses, never a wrong one.
 */
static int build_refs(struct pol_engine *e)
{
	size_t nw = (attr_vocab_count(cfg_vocab(e->c)) + 63) / 64;
	uint64_t *reads = calloc(3 * nw, sizeof(*reads));
	if (!reads)
		return -ENOMEM;
	uint64_t *greads = reads + nw, *gbinds = reads + 2 * nw;
	bool scoped = false;
	for (size_t i = 0; i < e->n_checks; i++) {
		const struct dispatch *d = &e->checks[i];
		if (d->r->match.id >= 0)
			expr_reads(e->prog, (uint32_t)d->r->match.id, reads, nw);
		if (d->in->tmpl == CFG_TMPL_LISTENTRY &&
		    d->in->listentry.value.id >= 0)
			expr_reads(e->prog, (uint32_t)d->in->listentry.value.id,
				   reads, nw);
		scoped |= !d->r->in_default_namespace;
	}
	if (scoped)
		cfg_record_namespace_reads(reads);
	pol_gen_slots(e->gen, greads, gbinds, nw);
	bool generated = false;
	for (size_t w = 0; w < nw; w++)
		generated |= (reads[w] & gbinds[w]) != 0;
	for (size_t w = 0; generated && w < nw; w++)
		reads[w] |= greads[w];
	/* dictionary attributes only: a check carries no other */
	for (unsigned id = 0; id < MIXD_ATTR_DICT_COUNT; id++)
		if (reads[id / 64] >> (id % 64) & 1)
			e->refs[e->n_refs++] = (uint16_t)id;
	free(reads);
	return 0;
}

int pol_engine_create(struct cfg *c, const struct pol_options *o,
		      struct pol_engine **out)
{
	struct pol_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->c = cfg_retain(c);
	e->prog = cfg_program(c);
	if (pol_gen_create(c, &e->gen))
		goto nomem;
	e->handlers = calloc(cfg_handler_count(c) + 1, sizeof(*e->handlers));
	if (!e->handlers)
		goto nomem;
	for (size_t i = 0; i < cfg_handler_count(c); i++) {
		const struct cfg_handler *h = cfg_handler(c, i);
		if (!cfg_adapter_is_policy(h->adapter))
			continue;
		if (build_handler(&e->handlers[e->n_handlers++], h, o))
			goto nomem;
	}
	for (size_t ri = 0; ri < cfg_rule_count(c); ri++) {
		const struct cfg_rule *r = cfg_rule(c, ri);
		for (size_t a = 0; a < r->n_actions; a++) {
			const struct cfg_action *act = &r->actions[a];
			if (!act->handler ||
			    !cfg_adapter_is_policy(act->handler->adapter))
				continue;
			const struct handler *hd = handler_of(e, act->handler);
			for (size_t i = 0; i < act->n_instances; i++) {
				const struct cfg_instance *in = act->instances[i];
				struct dispatch d = {r, hd, in, 0};
				int rc;
				if (in->tmpl == CFG_TMPL_QUOTA) {
					d.short_len = short_name_len(in->meta.name);
					rc = add_dispatch(&e->quotas,
							  &e->n_quotas, &d);
				} else {
					rc = add_dispatch(&e->checks,
							  &e->n_checks, &d);
				}
				if (rc)
					goto nomem;
			}
		}
	}
	if (build_refs(e))
		goto nomem;
	*out = e;
	return 0;
nomem:
	pol_engine_destroy(e);
	return -ENOMEM;
}

void pol_engine_destroy(struct pol_engine *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->n_handlers; i++) {
		pol_provider_stop(e->handlers[i].provider);
		pol_list_free(e->handlers[i].list);
		pol_memquota_destroy(e->handlers[i].mq);
	}
	free(e->handlers);
	free(e->checks);
	free(e->quotas);
	pol_gen_destroy(e->gen);
	cfg_destroy(e->c);
	free(e);
}

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/* Two memquota handlers whose parameters are the same, field by field. */
/* The same quotas in the same order: memquota keys name a quota by its
 * position (pol_quota.c), so an adopted state must keep it. */
static bool memquota_eq(const struct cfg_memquota *a,
			const struct cfg_memquota *b)
{
	if (a->min_dedup_ns != b->min_dedup_ns || a->n_quotas != b->n_quotas)
		return false;
	for (size_t q = 0; q < a->n_quotas; q++) {
		const struct cfg_quota_def *x = &a->quotas[q], *y = &b->quotas[q];
		if (!str_eq(x->name.s, y->name.s) ||
		    x->max_amount != y->max_amount ||
		    x->valid_duration_ns != y->valid_duration_ns ||
		    x->n_overrides != y->n_overrides)
			return false;
		for (size_t k = 0; k < x->n_overrides; k++) {
			const struct cfg_quota_override *o = &x->overrides[k],
							*p = &y->overrides[k];
			if (o->max_amount != p->max_amount ||
			    o->valid_duration_ns != p->valid_duration_ns ||
			    o->n_dims != p->n_dims)
				return false;
			for (size_t d = 0; d < o->n_dims; d++)
				if (!str_eq(o->dims[d].name, p->dims[d].name) ||
				    !str_eq(o->dims[d].value.s,
					    p->dims[d].value.s))
					return false;
		}
	}
	return true;
}

void pol_engine_adopt(struct pol_engine *e, struct pol_engine *old)
{
	for (size_t i = 0; i < e->n_handlers; i++) {
		struct handler *hd = &e->handlers[i];
		for (size_t j = 0; hd->mq && j < old->n_handlers; j++) {
			struct handler *ho = &old->handlers[j];
			if (!ho->mq || strcmp(hd->h->meta.fqn, ho->h->meta.fqn) ||
			    !memquota_eq(&hd->h->memquota, &ho->h->memquota))
				continue;
			struct pol_memquota *mq = hd->mq;
			hd->mq = ho->mq; /* its windows and ids go on */
			ho->mq = mq;	 /* freed with the old engine */
			break;
		}
	}
}

void pol_engine_quota_stats(const struct pol_engine *e,
			    struct pol_quota_stats *out)
{
	*out = (struct pol_quota_stats){0};
	for (size_t i = 0; i < e->n_handlers; i++) {
		const struct pol_memquota *mq = e->handlers[i].mq;
		if (!mq)
			continue;
		out->keys += pol_memquota_keys(mq);
		out->full += pol_memquota_full(mq);
		out->dedup_lost += pol_memquota_dedup_lost(mq);
	}
}

const struct attr_vocab *pol_engine_vocab(const struct pol_engine *e)
{
	return cfg_vocab(e->c);
}

struct pol_thread *pol_thread_create(const struct pol_engine *e)
{
	struct pol_thread *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->s = expr_scratch_create(e->prog, 0);
	t->gt = pol_gen_thread_create(e->gen);
	if (!t->s || !t->gt) {
		pol_thread_destroy(t);
		return NULL;
	}
	return t;
}

void pol_thread_destroy(struct pol_thread *t)
{
	if (!t)
		return;
	expr_scratch_destroy(t->s);
	pol_gen_thread_destroy(t->gt);
	free(t);
}

/* ---- checking ------------------------------------------------------------ */

/* The answers being combined, as Mixer's dispatch session kept them. */
struct combined {
	int32_t code;
	bool opinion; /* some result was not "OK with no validity" */
	int64_t valid_ns;
	int64_t uses;
	size_t msg_len;
	bool internal; /* an instance or handler failed: INTERNAL */
};

static void msg_append(struct pol_result *res, struct combined *cb,
		       const char *fmt, ...)
{
	if (cb->msg_len >= POL_MESSAGE_MAX - 1)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(res->message + cb->msg_len,
			  POL_MESSAGE_MAX - cb->msg_len, fmt, ap);
	va_end(ap);
	if (n > 0)
		cb->msg_len += (size_t)n;
	if (cb->msg_len > POL_MESSAGE_MAX - 1)
		cb->msg_len = POL_MESSAGE_MAX - 1;
}

/* One handler's answer into the combination (dispatcher.go). */
static void combine(struct pol_result *res, struct combined *cb,
		    const struct cfg_handler *h, int32_t code, const char *msg,
		    int64_t valid_ns, int64_t uses)
{
	if (cb->internal || (code == POL_OK && !valid_ns && !uses))
		return; /* failed already (INTERNAL), or no opinion */
	if (!cb->opinion) {
		cb->valid_ns = valid_ns;
		cb->uses = uses;
		cb->opinion = true;
	} else {
		if (valid_ns < cb->valid_ns)
			cb->valid_ns = valid_ns;
		if (uses < cb->uses)
			cb->uses = uses;
	}
	if (code == POL_OK)
		return;
	if (cb->code == POL_OK)
		cb->code = code;
	msg_append(res, cb, "%s%s:%s", cb->msg_len ? ", " : "", h->meta.fqn,
		   msg);
}

/* Mixer failed the whole check: the first failure says why. */
static void fail_internal(struct pol_result *res, struct combined *cb,
			  const char *fmt, ...)
{
	if (cb->internal)
		return;
	cb->internal = true;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(res->message, POL_MESSAGE_MAX, fmt, ap);
	va_end(ap);
}

static bool applies(const struct pol_engine *e, struct pol_thread *t,
		    const struct attr_table *attrs, const struct cfg_rule *r)
{
	return pol_rule_applies(e->c, e->prog, t->s, attrs, r);
}

static void check_list(const struct pol_engine *e, struct pol_thread *t,
		       const struct pol_request *req, const struct dispatch *d,
		       struct pol_result *res, struct combined *cb)
{
	const struct cfg_listchecker *l = &d->hd->h->listchecker;
	const struct cfg_expr *x = &d->in->listentry.value;
	struct attr_value v;
	int rc = expr_eval(e->prog, (uint32_t)x->id, req->attrs, t->s, &v);
	if (rc) {
		fail_internal(res, cb, "instance %s: value %s: %s",
			      d->in->meta.fqn, x->text,
			      expr_fail_name((enum expr_fail)-rc));
		return;
	}
	/* a provider's list in force, held for the lookup */
	const struct pol_list *list = d->hd->list;
	char why[512];
	if (d->hd->provider &&
	    !(list = pol_provider_acquire(d->hd->provider, why, sizeof(why)))) {
		pol_provider_release(d->hd->provider);
		fail_internal(res, cb, "%s:%s", d->hd->h->meta.fqn, why);
		return;
	}
	int found = v.type == ATTR_IP ? pol_list_contains_ip(list, v.ip, v.len)
				      : pol_list_contains(list, v.s, v.len);
	enum pol_list_type type = pol_list_type(list);
	if (d->hd->provider)
		pol_provider_release(d->hd->provider);
	int64_t valid = l->caching_interval_ns, uses = l->caching_use_count;
	if (found >= 0 && !l->blacklist == !!found) { /* allowed */
		combine(res, cb, d->hd->h, POL_OK, "", valid, uses);
		return;
	}
	/* the value, as the messages name it */
	char text[64], msg[600];
	const char *s = v.s;
	int len = (int)(v.len > 512 ? 512 : v.len);
	if (v.type == ATTR_IP) {
		len = (int)attr_format_ip(&v, text, sizeof(text));
		s = text;
	}
	if (found < 0 && type != POL_LIST_IP_ADDRESSES) {
		/* a regexp that could not be matched (no memory): the
		 * handler failed, as Mixer's did on an error */
		fail_internal(res, cb, "handler %s: matching %.*s failed",
			      d->hd->h->meta.fqn, len, s);
	} else if (found < 0) {
		snprintf(msg, sizeof(msg), "%.*s is not a valid IP address",
			 len, s);
		combine(res, cb, d->hd->h, POL_INVALID_ARGUMENT, msg, valid,
			uses);
	} else {
		snprintf(msg, sizeof(msg),
			 l->blacklist ? "%.*s is blacklisted"
				      : "%.*s is not whitelisted",
			 len, s);
		combine(res, cb, d->hd->h, POL_PERMISSION_DENIED, msg, valid,
			uses);
	}
}

/* Quota instance @d's grant for @q; false when it failed (no grant). */
static bool ask_quota(const struct pol_engine *e, struct pol_thread *t,
		      const struct pol_request *req, const struct dispatch *d,
		      const struct pol_quota_req *q, int64_t now_ns,
		      struct pol_quota_res *out)
{
	const struct cfg_handler *h = d->hd->h;
	if (h->adapter == CFG_ADAPTER_DENIER) {
		*out = (struct pol_quota_res){0, 0}; /* denier grants nothing */
		return true;
	}
	const struct cfg_expr_map *dm = &d->in->quota.dimensions;
	size_t n = dm->n; /* at most POL_QUOTA_DIMS_MAX: pol_validate() */
	for (size_t i = 0; i < n; i++) {
		if (expr_eval(e->prog, (uint32_t)dm->v[i].expr.id, req->attrs,
			      t->s, &t->vals[i]))
			return false; /* Mixer: the instance is not built */
		t->dims[i] = (struct pol_quota_dim){dm->v[i].name, &t->vals[i]};
	}
	struct pol_quota_args a = {req->dedup_id, req->dedup_len, q->amount,
				   q->best_effort};
	struct pol_quota_grant g;
	int rc = pol_memquota_alloc(d->hd->mq, d->in->meta.fqn, t->dims, n, &a,
				    now_ns, &g);
	if (rc && rc != -ENOSPC)
		return false;
	*out = (struct pol_quota_res){g.amount, g.valid_duration_ns};
	return true;
}

static void run_quota(const struct pol_engine *e, struct pol_thread *t,
		      const struct pol_request *req,
		      const struct pol_quota_req *q, int64_t now_ns,
		      struct pol_quota_res *out)
{
	bool dispatched = false, kept = false;
	for (size_t i = 0; i < e->n_quotas; i++) {
		const struct dispatch *d = &e->quotas[i];
		if (d->short_len != q->name_len ||
		    strncasecmp(d->in->meta.name, q->name, q->name_len) ||
		    !applies(e, t, req->attrs, d->r))
			continue;
		/* Mixer sent the request to every instance of that name
		 * whose rule matched, each allocating from its handler, and
		 * kept the first answer that was not the default (nothing
		 * granted, no validity); one that fails is the default. */
		struct pol_quota_res r;
		if (!ask_quota(e, t, req, d, q, now_ns, &r))
			r = (struct pol_quota_res){0, 0};
		dispatched = true;
		if (!kept && (r.granted || r.valid_duration_ns)) {
			*out = r;
			kept = true;
		}
	}
	if (!dispatched) /* no instance of that name, or none whose rule
			    matches: Mixer granted what was asked, for a
			    minute */
		*out = (struct pol_quota_res){q->amount, POL_DEFAULT_VALID_NS};
	else if (!kept)
		*out = (struct pol_quota_res){0, 0};
}

void pol_check(struct pol_engine *e, struct pol_thread *t,
	       const struct pol_request *req, int64_t now_ns,
	       struct pol_result *res)
{
	struct combined cb = {.code = POL_OK};
	res->message[0] = 0;
	/* Mixer preprocessed a check as a report: the rules below match on
	 * what the mesos instances bind (destination.labels, ...). */
	pol_gen_run(e->gen, t->gt, t->s, req->attrs, req->mar);
	expr_scratch_begin(t->s); /* the table changed under the memo */
	for (size_t i = 0; i < e->n_checks; i++) {
		const struct dispatch *d = &e->checks[i];
		if (!applies(e, t, req->attrs, d->r))
			continue;
		const struct cfg_handler *h = d->hd->h;
		if (h->adapter == CFG_ADAPTER_DENIER) {
			const struct cfg_denier *dn = &h->denier;
			combine(res, &cb, h, (int32_t)dn->status_code,
				dn->status_message.s ? dn->status_message.s
						     : "",
				dn->valid_duration_ns, dn->valid_use_count);
		} else if (h->adapter == CFG_ADAPTER_LISTCHECKER) {
			check_list(e, t, req, d, res, &cb);
		}
	}
	if (cb.internal) {
		res->code = POL_INTERNAL;
		res->valid_duration_ns = 0;
		res->valid_use_count = 0;
		res->refs = NULL;
		return;
	}
	/* <mixd/check.h>: INVALID_ARGUMENT and INTERNAL answers are never
	 * reused, whoever gave them (a denier may be configured with either
	 * code, a listchecker answers INVALID_ARGUMENT for a bad IP). */
	bool reusable = cb.code != POL_INVALID_ARGUMENT &&
			cb.code != POL_INTERNAL;
	res->refs = reusable ? e->refs : NULL;
	res->n_refs = reusable ? e->n_refs : 0;
	res->code = cb.code;
	res->message[cb.msg_len] = 0;
	if (!cb.opinion) {
		res->valid_duration_ns = POL_DEFAULT_VALID_NS;
		res->valid_use_count = POL_DEFAULT_VALID_USES;
	} else {
		res->valid_duration_ns = cb.valid_ns;
		res->valid_use_count = (int32_t)cb.uses;
	}
	if (res->code != POL_OK)
		return; /* quotas run only when the check allows */
	for (size_t i = 0; i < req->n_quotas; i++)
		run_quota(e, t, req, &req->quotas[i], now_ns, &res->quotas[i]);
}
