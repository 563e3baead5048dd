/*
 * pol_gen.c -- attribute generation for checks (pol_gen.h says what it
 * does; this file is how).
 *
 * The telemetry path's run_apas() (src/agg/series.c) does the same per
 * record, with compiled expression plans, a record memo and answer
 * fingerprints, all there because a shard runs it millions of times a
 * second. A check costs microseconds whatever generation does, so this is
 * the plain version: expr_eval() per expression, nothing kept between
 * requests, nothing shared with the record path that could slow it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expr/expr.h"
#include "marathon/marathon.h"
#include "policy/pol_gen.h"

#define N_INPUTS 5

/* A mesos instance sent to a mesosenv handler by one rule. */
struct dispatch {
	const struct cfg_rule *r;
	const struct cfg_instance *in;
	const struct cfg_handler *h;
	/* expression ids of source_uid, source_ip, destination_uid,
	 * destination_ip, destination_port (mar_query's order); -1: not
	 * given, the input is absent */
	int inputs[N_INPUTS];
	size_t pair; /* its (instance, handler): each runs once a request */
};

struct pol_gen {
	struct cfg *c; /* held */
	const struct expr_program *prog;
	struct dispatch *d;
	size_t n;
	size_t n_pairs;
	int out_slot[MAR_OUT_COUNT]; /* vocabulary slot of $out.<name>, -1 */
	bool scoped; /* some dispatching rule is not in the default namespace */
};

/* A binding's value, applied once every dispatch has run. */
struct pending {
	unsigned slot;
	struct attr_value v;
};

struct pol_gen_thread {
	uint64_t *ran; /* bit per (instance, handler): ran this request */
	size_t ran_words;
	size_t n_out;
	struct pending out[POL_GEN_OUT_MAX];
	size_t used; /* bytes of bind[] this request */
	char bind[POL_GEN_BIND_MAX];
};

/* ---- building ------------------------------------------------------------ */

static int add(struct pol_gen *g, const struct cfg_rule *r,
	       const struct cfg_handler *h, const struct cfg_instance *in)
{
	struct dispatch *nd = realloc(g->d, (g->n + 1) * sizeof(*nd));
	if (!nd)
		return -ENOMEM;
	g->d = nd;
	const struct cfg_mesos_inst *mi = &in->mesos;
	struct dispatch *d = &nd[g->n];
	*d = (struct dispatch){
		.r = r,
		.in = in,
		.h = h,
		.inputs = {mi->source_uid.id, mi->source_ip.id,
			   mi->destination_uid.id, mi->destination_ip.id,
			   mi->destination_port.id},
		.pair = g->n_pairs,
	};
	/* a second rule sending the same instance to the same handler: the
	 * instance still runs once, as plan.c's `first` has it */
	for (size_t j = 0; j < g->n; j++)
		if (nd[j].in == in && nd[j].h == h) {
			d->pair = nd[j].pair;
			break;
		}
	if (d->pair == g->n_pairs)
		g->n_pairs++;
	if (!r->in_default_namespace)
		g->scoped = true;
	g->n++;
	return 0;
}

int pol_gen_create(struct cfg *c, struct pol_gen **out)
{
	*out = NULL;
	struct pol_gen *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->c = cfg_retain(c);
	g->prog = cfg_program(c);
	for (size_t ri = 0; ri < cfg_rule_count(c); ri++) {
		const struct cfg_rule *r = cfg_rule(c, ri);
		for (size_t a = 0; a < r->n_actions; a++) {
			const struct cfg_action *act = &r->actions[a];
			/* no handler: a skipped kind, doing nothing */
			if (!act->handler ||
			    act->handler->adapter != CFG_ADAPTER_MESOSENV)
				continue;
			for (size_t i = 0; i < act->n_instances; i++) {
				const struct cfg_instance *in =
					act->instances[i];
				if (in->tmpl == CFG_TMPL_MESOS &&
				    add(g, r, act->handler, in)) {
					pol_gen_destroy(g);
					return -ENOMEM;
				}
			}
		}
	}
	for (int o = 0; o < MAR_OUT_COUNT; o++) {
		char name[64];
		int n = snprintf(name, sizeof(name), "$out.%s",
				 mar_out_name((enum mar_out)o));
		g->out_slot[o] = attr_vocab_find(cfg_vocab(c), name, (size_t)n);
	}
	*out = g;
	return 0;
}

void pol_gen_destroy(struct pol_gen *g)
{
	if (!g)
		return;
	free(g->d);
	cfg_destroy(g->c);
	free(g);
}

size_t pol_gen_count(const struct pol_gen *g)
{
	return g->n;
}

struct pol_gen_thread *pol_gen_thread_create(const struct pol_gen *g)
{
	struct pol_gen_thread *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->ran_words = (g->n_pairs + 63) / 64;
	t->ran = calloc(t->ran_words + 1, sizeof(*t->ran));
	if (!t->ran) {
		free(t);
		return NULL;
	}
	return t;
}

void pol_gen_thread_destroy(struct pol_gen_thread *t)
{
	if (!t)
		return;
	free(t->ran);
	free(t);
}

/* ---- running ------------------------------------------------------------- */

bool pol_rule_applies(const struct cfg *c, const struct expr_program *prog,
		      struct expr_scratch *s, const struct attr_table *attrs,
		      const struct cfg_rule *r)
{
	const char *ns;
	size_t len;
	if (!r->in_default_namespace &&
	    !(cfg_record_namespace(attrs, &ns, &len) &&
	      cfg_rule_applies(c, r, ns, len)))
		return false;
	if (r->match.id < 0) /* cfg compiles an absent match as "true" */
		return true;
	struct attr_value v;
	/* a match that cannot be evaluated is false, as in Mixer */
	return expr_eval(prog, (uint32_t)r->match.id, attrs, s, &v) == 0 &&
	       v.type == ATTR_BOOL && v.b;
}

/* $out.* absent: before an instance's answer (a second instance that
 * finds less must not bind the first one's outputs), and after all. */
static void clear_outputs(const struct pol_gen *g, struct attr_table *attrs)
{
	for (int o = 0; o < MAR_OUT_COUNT; o++)
		if (g->out_slot[o] >= 0)
			attrs->present[g->out_slot[o] >> 6] &=
				~(1ull << (g->out_slot[o] & 63));
}

/*
 * Make @v outlive the scratch's next begin: bytes it points at in the
 * scratch's arena (a string a binding built) are copied into @t. Bytes
 * anywhere else (the request, the config's constants, the snapshot) stay
 * where they are. False when they do not fit.
 */
static bool keep(struct pol_gen_thread *t, const struct expr_scratch *s,
		 struct attr_value *v)
{
	if (!attr_type_is_string(v->type) && v->type != ATTR_BYTES &&
	    v->type != ATTR_STRING_MAP)
		return true;
	uintptr_t p = (uintptr_t)v->s, a = (uintptr_t)s->arena;
	if (!v->len || p < a || p >= a + s->arena_cap)
		return true;
	if (v->len > POL_GEN_BIND_MAX - t->used)
		return false;
	memcpy(t->bind + t->used, v->s, v->len);
	v->s = t->bind + t->used; /* a map's bytes alike (the union) */
	t->used += v->len;
	return true;
}

/* Dispatch @d's instance: ask the resolver, evaluate the bindings into
 * @t's pending values. */
static void run_one(const struct pol_gen *g, struct pol_gen_thread *t,
		    struct expr_scratch *s, struct attr_table *attrs,
		    struct mar_reader *mar, const struct dispatch *d)
{
	struct attr_value in[N_INPUTS];
	const struct attr_value *q[N_INPUTS];
	for (int k = 0; k < N_INPUTS; k++) {
		q[k] = NULL; /* not given: absent */
		if (d->inputs[k] < 0)
			continue;
		if (expr_eval(g->prog, (uint32_t)d->inputs[k], attrs, s,
			      &in[k]))
			return; /* not built: Mixer skipped the instance */
		q[k] = &in[k];
	}
	clear_outputs(g, attrs);
	struct mar_query mq = {q[0], q[1], q[2], q[3], q[4]};
	struct mar_result res;
	if (mar && mar_lookup(mar, &mq, &res)) {
		for (int o = 0; o < MAR_OUT_COUNT; o++) {
			const struct attr_value *v =
				mar_result_get(&res, (enum mar_out)o);
			if (v && g->out_slot[o] >= 0)
				attr_table_set(attrs, (unsigned)g->out_slot[o],
					       v);
		}
	}
	/* All bindings or, if one fails to evaluate, none: Mixer's output
	 * mapper gave up at the first failure. */
	const struct cfg_expr_map *b = &d->in->mesos.attribute_bindings;
	size_t first = t->n_out, used = t->used;
	for (size_t k = 0; k < b->n && t->n_out < POL_GEN_OUT_MAX; k++) {
		struct attr_value v;
		if (b->v[k].slot < 0 || b->v[k].expr.id < 0)
			continue;
		if (expr_eval(g->prog, (uint32_t)b->v[k].expr.id, attrs, s,
			      &v)) {
			t->n_out = first;
			t->used = used;
			return;
		}
		if (!keep(t, s, &v))
			continue; /* no room to keep it: the attribute stays */
		t->out[t->n_out++] =
			(struct pending){(unsigned)b->v[k].slot, v};
	}
}

size_t pol_gen_run(const struct pol_gen *g, struct pol_gen_thread *t,
		   struct expr_scratch *s, struct attr_table *attrs,
		   struct mar_reader *mar)
{
	if (!g->n)
		return 0;
	size_t ran = 0;
	memset(t->ran, 0, t->ran_words * sizeof(*t->ran));
	t->n_out = 0;
	t->used = 0;
	for (size_t i = 0; i < g->n; i++) {
		const struct dispatch *d = &g->d[i];
		uint64_t bit = 1ull << (d->pair & 63);
		if (t->ran[d->pair >> 6] & bit)
			continue; /* the same instance ran already */
		/* A fresh memo: the last dispatch changed $out.*, and what its
		 * bindings built in the arena is in t->bind by now. */
		expr_scratch_begin(s);
		if (!pol_rule_applies(g->c, g->prog, s, attrs, d->r))
			continue;
		t->ran[d->pair >> 6] |= bit;
		ran++;
		run_one(g, t, s, attrs, mar, d);
	}
	/* Every instance saw the request as it arrived; now the bindings
	 * shadow it, a later instance's over an earlier one's. */
	clear_outputs(g, attrs);
	for (size_t i = 0; i < t->n_out; i++)
		attr_table_set(attrs, t->out[i].slot, &t->out[i].v);
	return ran;
}

/* ---- what it reads and writes -------------------------------------------- */

/* Mark what expression @id reads into @m; -1 (absent) reads nothing. */
static bool reads(const struct pol_gen *g, int id, uint64_t *m)
{
	return id < 0 ||
	       expr_reads(g->prog, (uint32_t)id, m, ATTR_PRESENT_WORDS);
}

/* OR @from into @to, which has @nwords: false if a bit did not fit. */
static bool merge(uint64_t *to, const uint64_t *from, size_t nwords)
{
	bool ok = true;
	for (size_t w = 0; w < ATTR_PRESENT_WORDS; w++) {
		if (w < nwords)
			to[w] |= from[w];
		else if (from[w])
			ok = false;
	}
	return ok;
}

bool pol_gen_slots(const struct pol_gen *g, uint64_t *reads_out,
		   uint64_t *binds_out, size_t nwords)
{
	uint64_t r[ATTR_PRESENT_WORDS] = {0}, b[ATTR_PRESENT_WORDS] = {0};
	bool ok = true;
	for (size_t i = 0; i < g->n; i++) {
		const struct dispatch *d = &g->d[i];
		const struct cfg_expr_map *bm =
			&d->in->mesos.attribute_bindings;
		ok &= reads(g, d->r->match.id, r);
		for (int k = 0; k < N_INPUTS; k++)
			ok &= reads(g, d->inputs[k], r);
		for (size_t k = 0; k < bm->n; k++) {
			/* besides $out.*, a binding may read the request
			 * (`$out.x | destination.labels`) */
			ok &= reads(g, bm->v[k].expr.id, r);
			int slot = bm->v[k].slot;
			if (slot >= 0 && slot < ATTR_MAX_SLOTS)
				b[slot >> 6] |= 1ull << (slot & 63);
		}
	}
	if (g->scoped)
		cfg_record_namespace_reads(r);
	/* The outputs are the resolver's, not the request's: a request that
	 * sends one has it cleared before anything reads it. */
	for (int o = 0; o < MAR_OUT_COUNT; o++)
		if (g->out_slot[o] >= 0)
			r[g->out_slot[o] >> 6] &=
				~(1ull << (g->out_slot[o] & 63));
	if (reads_out)
		ok &= merge(reads_out, r, nwords);
	if (binds_out)
		ok &= merge(binds_out, b, nwords);
	return ok;
}
