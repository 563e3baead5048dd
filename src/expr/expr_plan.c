/*
 * expr_plan.c -- a fixed set of expressions lowered into one straight-line
 * program over a register file of value pointers.
 *
 * Why: agg evaluates the same ~20 expressions for every record of a rule.
 * Per expression, the memo path pays a shape dispatch, a generation check
 * and a 32-byte memo store, and per use a bounds check, a generation check
 * and a copy. Here each record runs a precomputed instruction list:
 *
 *  - the expressions' trees are flattened into instructions whose
 *    operands are registers; identical subtrees are one instruction
 *    (common-subexpression sharing: `(context.reporter.kind | "inbound")
 *    == "outbound"` is compared once for the two dimensions using it);
 *  - a register is a `const struct attr_value *`: the table slot, the
 *    plan's constant, or a value built in the scratch arena -- no value is
 *    copied, NULL is failure;
 *  - every m["k"] | k over one map is a single pass over the map;
 *  - instructions are sorted by (depth, opcode) and run as batches of one
 *    opcode each, so there is one dispatch per batch, not per instruction.
 *
 * Only pure operators are flattened (loads, `|` of loads or of one map key
 * ending in a constant, == and !=, !, &&, ||, conditional): evaluating
 * their operands eagerly cannot allocate or fail visibly, so the
 * short-circuit operators may select among eagerly computed registers
 * without changing any result. An expression holding anything else is
 * evaluated whole by the general evaluator (P_NODE).
 *
 * Failure reasons are not carried in registers: a root that came out NULL
 * is evaluated again by the general evaluator, which counts the reason
 * exactly as expr_eval() would. Failures are rare; the common path stays a
 * pointer per register.
 */
#include "expr/expr_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum pop {
	P_CONST,   /* r[dst] = k */
	P_LOAD_K,  /* r[dst] = slot present ? typed value : k (k may be NULL) */
	P_LOAD_R,  /* r[dst] = slot present ? typed value : r[a] */
	P_MAPKEY,  /* build time only: merged into P_MAPKEYS */
	P_MAPKEYS, /* keys[a .. a+n) of the map in slot, one pass */
	P_EQ_KS,   /* r[dst] = r[a] == k, both strings (F_NEG: !=) */
	P_EQ_K,	   /* r[dst] = r[a] == k, any types (F_NEG: !=) */
	P_EQ,	   /* r[dst] = r[a] == r[b] (F_NEG: !=) */
	P_NOT,	   /* r[dst] = !r[a] */
	P_AND,	   /* r[dst] = r[a] && r[b] */
	P_LOR,	   /* r[dst] = r[a] || r[b] */
	P_COND,	   /* r[dst] = r[a] ? r[b] : r[c] */
	P_NODE,	   /* r[dst] = general evaluation of expression a, into
		      vals[b] */
	P_COUNT_
};

#define F_NEG 1

struct pinsn {
	uint8_t op;
	uint8_t flags;
	uint16_t slot;
	uint16_t accept; /* runtime types the slot's declared type takes */
	uint16_t n;	 /* P_MAPKEYS: keys */
	uint32_t dst, a, b, c;
	const struct attr_value *k;
	uint32_t level; /* build time: 1 + the deepest operand */
	uint32_t kidx;	/* build time: index of k in consts, or NO_NODE */
};

struct pkey {
	const char *key;
	uint32_t klen;
	uint32_t dst;
	uint32_t val;  /* index in the record's vals */
	uint32_t kidx; /* build time: index of dflt in consts */
	const struct attr_value *dflt;
};

struct prun {
	uint32_t op, start, end;
};

struct expr_plan {
	const struct expr_program *p;
	struct pinsn *insns;
	uint32_t n_insns;
	struct prun *runs;
	uint32_t n_runs;
	struct pkey *keys;
	uint32_t n_keys;
	struct attr_value *consts;
	uint32_t n_consts;
	uint32_t n_regs;
	uint32_t n_vals; /* attr_values taken from the arena per record */
	uint32_t n_roots;
	uint32_t *root_reg; /* [n_roots] */
	uint32_t *root_id;  /* [n_roots] */
	uint8_t *root_node; /* [n_roots]: evaluated by P_NODE */
	uint32_t *use_reg;  /* [n_uses] */
	size_t n_uses;
};

static const struct attr_value k_false = {.type = ATTR_BOOL, .b = false};
static const struct attr_value k_true = {.type = ATTR_BOOL, .b = true};

/* ---- building ------------------------------------------------------------ */

struct pbuild {
	struct expr_plan *pl;
	uint32_t cap_insns, cap_keys, cap_consts;
	bool oom;
};

static uint16_t accept_mask(unsigned decl)
{
	if (attr_type_is_string((enum attr_type)decl))
		return (uint16_t)(1u << ATTR_STRING | 1u << ATTR_EMAIL |
				  1u << ATTR_URI | 1u << ATTR_DNS_NAME);
	return decl < 16 ? (uint16_t)(1u << decl) : 0;
}

static bool same_const(const struct attr_value *a, const struct attr_value *b)
{
	if (a->type != b->type || a->len != b->len)
		return false;
	switch (a->type) {
	case ATTR_STRING:
	case ATTR_EMAIL:
	case ATTR_URI:
	case ATTR_DNS_NAME:
	case ATTR_BYTES:
		return a->len == 0 || memcmp(a->s, b->s, a->len) == 0;
	case ATTR_STRING_MAP:
		return a->len == 0 || memcmp(a->map, b->map, a->len) == 0;
	case ATTR_IP:
		return memcmp(a->ip, b->ip, sizeof a->ip) == 0;
	case ATTR_BOOL:
		return a->b == b->b;
	default: /* INT64, DOUBLE (bitwise), TIMESTAMP, DURATION */
		return a->i == b->i;
	}
}

static uint32_t add_const(struct pbuild *b, const struct attr_value *k)
{
	struct expr_plan *pl = b->pl;
	for (uint32_t i = 0; i < pl->n_consts; i++)
		if (same_const(&pl->consts[i], k))
			return i;
	if (pl->n_consts == b->cap_consts) {
		uint32_t cap = b->cap_consts ? b->cap_consts * 2 : 16;
		struct attr_value *n = realloc(pl->consts, cap * sizeof *n);
		if (!n) {
			b->oom = true;
			return 0;
		}
		pl->consts = n;
		b->cap_consts = cap;
	}
	/* a bool constant is stored whole: readers test ->b */
	pl->consts[pl->n_consts] = *k;
	return pl->n_consts++;
}

static bool same_insn(const struct pinsn *x, const struct pinsn *y)
{
	return x->op == y->op && x->flags == y->flags && x->slot == y->slot &&
	       x->a == y->a && x->b == y->b && x->c == y->c &&
	       x->kidx == y->kidx;
}

/* Append @in (or find an identical instruction) and return its register. */
static uint32_t add_insn(struct pbuild *b, struct pinsn *in)
{
	struct expr_plan *pl = b->pl;
	if (in->op != P_NODE)
		for (uint32_t i = 0; i < pl->n_insns; i++)
			if (same_insn(&pl->insns[i], in))
				return pl->insns[i].dst;
	if (pl->n_insns == b->cap_insns) {
		uint32_t cap = b->cap_insns ? b->cap_insns * 2 : 32;
		struct pinsn *n = realloc(pl->insns, cap * sizeof *n);
		if (!n) {
			b->oom = true;
			return 0;
		}
		pl->insns = n;
		b->cap_insns = cap;
	}
	in->dst = pl->n_regs++;
	pl->insns[pl->n_insns++] = *in;
	return in->dst;
}

/* While building, register i is produced by instruction i. */
static uint32_t reg_level(const struct pbuild *b, uint32_t reg)
{
	return b->pl->insns[reg].level;
}

static uint32_t deeper(const struct pbuild *b, uint32_t r1, uint32_t r2)
{
	uint32_t l1 = reg_level(b, r1),
		 l2 = r2 == NO_NODE ? 0 : reg_level(b, r2);
	return 1 + (l1 > l2 ? l1 : l2);
}

/*
 * Lower node @ni into instructions; its register in *@reg. Returns false
 * if the subtree holds an operator that is not flattened (the whole root
 * then becomes a P_NODE; the instructions emitted so far stay, unused).
 */
static bool lower(struct pbuild *b, uint32_t ni, uint32_t *reg)
{
	const struct expr_program *p = b->pl->p;
	const struct enode *e = &p->nodes[ni];
	struct pinsn in = {
		.a = NO_NODE, .b = NO_NODE, .c = NO_NODE, .kidx = NO_NODE};
	uint32_t ra, rb, rc;

	switch ((enum expr_op)e->op) {
	case OP_CONST:
		in.op = P_CONST;
		in.kidx = add_const(b, &e->k);
		break;
	case OP_LOAD:
		in.op = P_LOAD_K; /* no fallback: absent is a failure */
		in.slot = (uint16_t)e->a;
		in.accept = accept_mask(e->type);
		break;
	case OP_OR: {
		const uint32_t *ops = p->args + e->a;
		const struct enode *last = &p->nodes[ops[e->n - 1]];
		if (e->flags & NF_MAPKEY_K) {
			const struct enode *ix = &p->nodes[ops[0]];
			in.op = P_MAPKEY;
			in.slot = (uint16_t)p->nodes[ix->a].a;
			in.k = &ix->k; /* the key: program-owned, stable */
			in.b = add_const(b, &ix->k); /* dedup key by value */
			in.kidx = add_const(b, &last->k);
			break;
		}
		if (!(e->flags & NF_LOADS_K))
			return false;
		/* a | b | k: b | k first, then a over it; every load is
		 * pure, so evaluating b when a is present changes nothing */
		uint32_t r = NO_NODE, kidx = add_const(b, &last->k);
		for (uint32_t i = e->n - 1; i-- > 0;) {
			const struct enode *ld = &p->nodes[ops[i]];
			struct pinsn x = {.slot = (uint16_t)ld->a,
					  .accept = accept_mask(ld->type),
					  .a = NO_NODE,
					  .b = NO_NODE,
					  .c = NO_NODE,
					  .kidx = NO_NODE};
			if (r == NO_NODE) {
				x.op = P_LOAD_K;
				x.kidx = kidx;
			} else {
				x.op = P_LOAD_R;
				x.a = r;
				x.level = 1 + reg_level(b, r);
			}
			r = add_insn(b, &x);
			if (b->oom)
				return false;
		}
		*reg = r;
		return true;
	}
	case OP_EQ_K:
	case OP_NE_K:
		if (!lower(b, e->a, &ra))
			return false;
		in.op = attr_type_is_string(
				(enum attr_type)p->nodes[e->a].type) &&
					attr_type_is_string(
						(enum attr_type)e->k.type)
				? P_EQ_KS
				: P_EQ_K;
		in.flags = e->op == OP_NE_K ? F_NEG : 0;
		in.a = ra;
		in.kidx = add_const(b, &e->k);
		in.level = deeper(b, ra, NO_NODE);
		break;
	case OP_EQ:
	case OP_NE:
		if (!lower(b, e->a, &ra) || !lower(b, e->b, &rb))
			return false;
		in.op = P_EQ;
		in.flags = e->op == OP_NE ? F_NEG : 0;
		in.a = ra;
		in.b = rb;
		in.level = deeper(b, ra, rb);
		break;
	case OP_NOT:
		if (!lower(b, e->a, &ra))
			return false;
		in.op = P_NOT;
		in.a = ra;
		in.level = deeper(b, ra, NO_NODE);
		break;
	case OP_AND:
	case OP_LOR:
		if (!lower(b, e->a, &ra) || !lower(b, e->b, &rb))
			return false;
		in.op = e->op == OP_AND ? P_AND : P_LOR;
		in.a = ra;
		in.b = rb;
		in.level = deeper(b, ra, rb);
		break;
	case OP_COND:
		if (!lower(b, e->a, &ra) || !lower(b, e->b, &rb) ||
		    !lower(b, e->c, &rc))
			return false;
		in.op = P_COND;
		in.a = ra;
		in.b = rb;
		in.c = rc;
		in.level = deeper(b, ra, rb);
		if (reg_level(b, rc) + 1 > in.level)
			in.level = reg_level(b, rc) + 1;
		break;
	default:
		return false;
	}
	*reg = add_insn(b, &in);
	return !b->oom;
}

static int insn_cmp(const void *x, const void *y)
{
	const struct pinsn *a = x, *b = y;
	if (a->level != b->level)
		return a->level < b->level ? -1 : 1;
	if (a->op != b->op)
		return a->op < b->op ? -1 : 1;
	/* stable: by register, i.e. emission order */
	return a->dst < b->dst ? -1 : a->dst > b->dst;
}

/* Merge the P_MAPKEYs reading one slot into P_MAPKEYS of up to 32 keys
 * each (the found-set is a 32-bit mask): one pass over the map per
 * record instead of one per key. */
static int merge_mapkeys(struct pbuild *b)
{
	struct expr_plan *pl = b->pl;
	uint32_t nk = 0;
	for (uint32_t i = 0; i < pl->n_insns; i++)
		nk += pl->insns[i].op == P_MAPKEY;
	if (!nk)
		return 0;
	pl->keys = calloc(nk, sizeof *pl->keys);
	struct pinsn *out = calloc(pl->n_insns, sizeof *out);
	bool *done = calloc(pl->n_insns, sizeof *done);
	if (!pl->keys || !out || !done) {
		free(out);
		free(done);
		return -1;
	}
	uint32_t w = 0;
	for (uint32_t i = 0; i < pl->n_insns; i++) {
		const struct pinsn *in = &pl->insns[i];
		if (in->op != P_MAPKEY) {
			out[w++] = *in;
			continue;
		}
		if (done[i])
			continue;
		struct pinsn *g = NULL;
		for (uint32_t j = i; j < pl->n_insns; j++) {
			const struct pinsn *m = &pl->insns[j];
			if (m->op != P_MAPKEY || m->slot != in->slot || done[j])
				continue;
			if (!g || g->n == 32) {
				g = &out[w++];
				*g = (struct pinsn){.op = P_MAPKEYS,
						    .slot = in->slot,
						    .a = pl->n_keys,
						    .b = NO_NODE,
						    .c = NO_NODE,
						    .dst = NO_NODE,
						    .kidx = NO_NODE};
			}
			struct pkey *k = &pl->keys[pl->n_keys++];
			k->key = m->k->s;
			k->klen = m->k->len;
			k->dst = m->dst;
			k->val = pl->n_vals++;
			k->kidx = m->kidx;
			g->n++;
			done[j] = true;
		}
	}
	free(pl->insns);
	free(done);
	pl->insns = out;
	pl->n_insns = w;
	return 0;
}

static int finish(struct pbuild *b)
{
	struct expr_plan *pl = b->pl;
	if (merge_mapkeys(b))
		return -1;
	if (pl->n_insns)
		qsort(pl->insns, pl->n_insns, sizeof *pl->insns, insn_cmp);
	/* constants may now be addressed: the array no longer grows */
	for (uint32_t i = 0; i < pl->n_insns; i++) {
		struct pinsn *in = &pl->insns[i];
		in->k = in->kidx == NO_NODE ? NULL : &pl->consts[in->kidx];
	}
	for (uint32_t i = 0; i < pl->n_keys; i++)
		pl->keys[i].dflt = &pl->consts[pl->keys[i].kidx];
	pl->runs = calloc(pl->n_insns ? pl->n_insns : 1, sizeof *pl->runs);
	if (!pl->runs)
		return -1;
	for (uint32_t i = 0; i < pl->n_insns; i++) {
		struct prun *last =
			pl->n_runs ? &pl->runs[pl->n_runs - 1] : NULL;
		if (last && last->op == pl->insns[i].op && last->end == i) {
			last->end++;
			continue;
		}
		pl->runs[pl->n_runs++] = (struct prun){
			.op = pl->insns[i].op, .start = i, .end = i + 1};
	}
	return 0;
}

struct expr_plan *expr_plan_create(const struct expr_program *p,
				   const uint32_t *ids, size_t n)
{
	struct expr_plan *pl = calloc(1, sizeof *pl);
	struct pbuild b = {.pl = pl};
	if (!pl)
		return NULL;
	pl->p = p;
	pl->n_uses = n;
	pl->use_reg = calloc(n ? n : 1, sizeof *pl->use_reg);
	pl->root_reg = calloc(n ? n : 1, sizeof *pl->root_reg);
	pl->root_id = calloc(n ? n : 1, sizeof *pl->root_id);
	pl->root_node = calloc(n ? n : 1, sizeof *pl->root_node);
	if (!pl->use_reg || !pl->root_reg || !pl->root_id || !pl->root_node)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		uint32_t id = ids[i];
		if (id >= p->n_exprs) {
			errno = EINVAL;
			goto fail;
		}
		uint32_t j = 0;
		while (j < pl->n_roots && pl->root_id[j] != id)
			j++;
		if (j == pl->n_roots) {
			uint32_t reg;
			uint32_t mark = pl->n_insns, rmark = pl->n_regs;
			bool node = !lower(&b, p->exprs[id].root, &reg);
			if (b.oom)
				goto fail;
			if (node) {
				/* drop what the failed lowering emitted: it
				 * may hold unflattenable leftovers nobody
				 * reads */
				pl->n_insns = mark;
				pl->n_regs = rmark;
				struct pinsn in = {.op = P_NODE,
						   .a = id,
						   .b = pl->n_vals++,
						   .c = NO_NODE,
						   .kidx = NO_NODE};
				reg = add_insn(&b, &in);
				if (b.oom)
					goto fail;
			}
			pl->root_id[j] = id;
			pl->root_reg[j] = reg;
			pl->root_node[j] = node;
			pl->n_roots++;
		}
		pl->use_reg[i] = pl->root_reg[j];
	}
	if (finish(&b))
		goto fail;
	return pl;
fail:
	expr_plan_destroy(pl);
	return NULL;
}

void expr_plan_destroy(struct expr_plan *pl)
{
	if (!pl)
		return;
	free(pl->insns);
	free(pl->runs);
	free(pl->keys);
	free(pl->consts);
	free(pl->root_reg);
	free(pl->root_id);
	free(pl->root_node);
	free(pl->use_reg);
	free(pl);
}

uint32_t expr_plan_size(const struct expr_plan *pl)
{
	return pl->n_regs;
}

uint32_t expr_plan_index(const struct expr_plan *pl, size_t i)
{
	return i < pl->n_uses ? pl->use_reg[i] : 0;
}

/* ---- evaluation ------------------------------------------------------------
 */

static inline __attribute__((always_inline)) const struct attr_value *
load_or(const struct attr_table *t, const struct pinsn *in,
	const struct attr_value *fb)
{
	if (!attr_table_has(t, in->slot))
		return fb;
	const struct attr_value *v = &t->v[in->slot];
	unsigned ty = v->type;
	return ty < 16 && ((in->accept >> ty) & 1) ? v : NULL;
}

static void map_keys(const struct expr_plan *pl, const struct pinsn *in,
		     const struct attr_table *t, const struct attr_value **r,
		     struct attr_value *vals)
{
	const struct pkey *keys = pl->keys + in->a;
	uint32_t nk = in->n;
	for (uint32_t j = 0; j < nk; j++)
		r[keys[j].dst] = keys[j].dflt;
	if (!attr_table_has(t, in->slot))
		return;
	const struct attr_value *m = &t->v[in->slot];
	if (m->type != ATTR_STRING_MAP) {
		for (uint32_t j = 0; j < nk; j++)
			r[keys[j].dst] = NULL;
		return;
	}
	/* map_find()'s walk and bounds checks, once for all the keys; a key
	 * takes its first occurrence, as map_find() does */
	if (m->len < 4)
		return;
	const uint8_t *p = m->map;
	uint32_t n = get_u32le(p), len = m->len;
	uint32_t want = nk == 32 ? UINT32_MAX : (1u << nk) - 1, found = 0;
	size_t off = 4;
	for (uint32_t i = 0; i < n && found != want; i++) {
		if (len - off < 8)
			return;
		uint32_t kl = get_u32le(p + off);
		off += 4;
		if (len - off < kl || len - off - kl < 4)
			return;
		const char *k = (const char *)p + off;
		off += kl;
		uint32_t vl = get_u32le(p + off);
		off += 4;
		if (len - off < vl)
			return;
		for (uint32_t j = 0; j < nk; j++) {
			if (keys[j].klen != kl || (found >> j & 1) ||
			    !bytes_eq(k, keys[j].key, kl))
				continue;
			struct attr_value *v = &vals[keys[j].val];
			*v = (struct attr_value){.type = ATTR_STRING,
						 .len = vl,
						 .s = (const char *)p + off};
			r[keys[j].dst] = v;
			found |= 1u << j;
		}
		off += vl;
	}
}

static inline const struct attr_value *as_bool(bool b)
{
	return b ? &k_true : &k_false;
}

unsigned expr_plan_eval(const struct expr_plan *pl, const struct attr_table *t,
			struct expr_scratch *s, const struct attr_value **r)
{
	struct attr_value *vals = NULL;
	if (pl->n_vals &&
	    !(vals = expr_arena_take(s, pl->n_vals * sizeof *vals))) {
		for (uint32_t i = 0; i < pl->n_regs; i++)
			r[i] = NULL;
		s->stats.fail[EXPR_E_NOMEM] += pl->n_roots;
		return pl->n_roots;
	}
	const struct pinsn *insns = pl->insns;
	for (const struct prun *ru = pl->runs, *re = ru + pl->n_runs; ru < re;
	     ru++) {
		const struct pinsn *in = insns + ru->start,
				   *ie = insns + ru->end;
		switch ((enum pop)ru->op) {
		case P_CONST:
			for (; in < ie; in++)
				r[in->dst] = in->k;
			break;
		case P_LOAD_K:
			for (; in < ie; in++)
				r[in->dst] = load_or(t, in, in->k);
			break;
		case P_LOAD_R:
			for (; in < ie; in++)
				r[in->dst] = load_or(t, in, r[in->a]);
			break;
		case P_MAPKEYS:
			for (; in < ie; in++)
				map_keys(pl, in, t, r, vals);
			break;
		case P_EQ_KS:
			for (; in < ie; in++) {
				const struct attr_value *x = r[in->a];
				r[in->dst] = x ? as_bool(str_eq(x, in->k->s,
								in->k->len) ^
							 (in->flags & F_NEG))
					       : NULL;
			}
			break;
		case P_EQ_K:
			for (; in < ie; in++) {
				const struct attr_value *x = r[in->a];
				r[in->dst] =
					x ? as_bool(values_equal(x, in->k) ^
						    (in->flags & F_NEG))
					  : NULL;
			}
			break;
		case P_EQ:
			for (; in < ie; in++) {
				const struct attr_value *x = r[in->a],
							*y = r[in->b];
				r[in->dst] =
					x && y ? as_bool(values_equal(x, y) ^
							 (in->flags & F_NEG))
					       : NULL;
			}
			break;
		case P_NOT:
			for (; in < ie; in++) {
				const struct attr_value *x = r[in->a];
				r[in->dst] = x ? as_bool(!x->b) : NULL;
			}
			break;
		case P_AND:
			for (; in < ie; in++) {
				const struct attr_value *x = r[in->a];
				r[in->dst] = !x	    ? NULL
					     : x->b ? r[in->b]
						    : &k_false;
			}
			break;
		case P_LOR:
			for (; in < ie; in++) {
				const struct attr_value *x = r[in->a];
				r[in->dst] = !x	    ? NULL
					     : x->b ? &k_true
						    : r[in->b];
			}
			break;
		case P_COND:
			for (; in < ie; in++) {
				const struct attr_value *x = r[in->a];
				r[in->dst] = !x	    ? NULL
					     : x->b ? r[in->b]
						    : r[in->c];
			}
			break;
		case P_NODE:
			for (; in < ie; in++) {
				struct attr_value *v = &vals[in->b];
				int rc = expr_eval_root(pl->p, in->a, t, s, v);
				r[in->dst] = rc ? NULL : v;
			}
			break;
		case P_MAPKEY:
		case P_COUNT_:
			break;
		}
	}
	unsigned failed = 0;
	for (uint32_t i = 0; i < pl->n_roots; i++)
		failed += r[pl->root_reg[i]] == NULL;
	s->stats.evals += pl->n_roots;
	if (__builtin_expect(failed != 0, 0)) {
		/* count each failed root's reason as expr_eval() would; a
		 * P_NODE root counted its own */
		for (uint32_t i = 0; i < pl->n_roots; i++) {
			if (r[pl->root_reg[i]] || pl->root_node[i])
				continue;
			struct attr_value v;
			(void)expr_eval_root(pl->p, pl->root_id[i], t, s, &v);
		}
	}
	return failed;
}
