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
 *  - every m["k"] | k over one map is a single pass over the map, its
 *    keys found by length bucket and compared as two words taken once at
 *    build time (str_words());
 *  - a chain x == "a" || x == "b" (or one x == "a") against short string
 *    constants is one set compare, P_IN_KW, or P_IN_KS reading x's slot in
 *    place when x is a load; conditional()'s constant branches are read
 *    from the plan's constants; instructions whose register nothing reads
 *    are dropped;
 *  - instructions are sorted by (depth, opcode) and run as batches of one
 *    opcode each, so there is one dispatch per batch, not per instruction;
 *  - a guarded plan (a rule) sorts its guard's instructions first and
 *    stops after them when the guard does not hold.
 *
 * On the seed (bench_expr under callgrind) expr_plan_eval() takes ~860
 * instructions per record, where expr_eval_batch() takes ~1,390.
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
 * pointer per register, plus one flag set on the paths that produce NULL.
 */
#include "expr/expr_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum pop {
	P_CONST,   /* r[dst] = k */
	P_LOAD,	   /* r[dst] = slot c's value, NULL if absent or mistyped */
	P_LOAD_K,  /* r[dst] = slot c present ? its typed value : k */
	P_LOAD_R,  /* r[dst] = slot c present ? its typed value : r[a] */
	P_MAPKEY,  /* build time only: merged into P_MAPKEYS */
	P_MAPKEYS, /* keys[a .. a+n) of the map in slot c, one pass; b is
		      the group (its length buckets) */
	P_EQ_KS,   /* r[dst] = r[a] == k, both strings (F_NEG: !=) */
	P_IN_KW,   /* r[dst] = r[a] equals one of the n strings of <= 16
		      bytes words[b ..] (F_NEG: none): x == "k" and chains
		      of x == "k1" || x == "k2" (x != "k1" && ...) */
	P_IN_KS,   /* P_IN_KW of x = slot c | k (a P_LOAD when k is NULL)
		      read in place, its strings at words[a ..] */
	P_EQ_K,	   /* r[dst] = r[a] == k, any types (F_NEG: !=) */
	P_EQ,	   /* r[dst] = r[a] == r[b] (F_NEG: !=) */
	P_NOT,	   /* r[dst] = !r[a] */
	P_AND,	   /* r[dst] = r[a] && r[b] */
	P_LOR,	   /* r[dst] = r[a] || r[b] */
	P_COND,	   /* r[dst] = r[a] ? r[b] : r[c]; F_BK, F_CK: b, c are
		      indexes in consts, not registers */
	P_NODE,	   /* r[dst] = general evaluation of expression a, into
		      vals[b] */
	P_GUARD,   /* a run of its own after the guard's instructions: stop
		      unless the guard holds */
	P_COUNT_
};

#define F_NEG 1
#define F_BK 2
#define F_CK 4

/* One instruction, 32 bytes: two per cache line. */
struct pinsn {
	uint8_t op;
	uint8_t flags;
	uint8_t decl;	 /* loads: the slot's declared type */
	uint8_t word;	 /* loads: the slot's word in attr_table.present */
	uint16_t accept; /* loads: runtime types the declared type takes */
	uint16_t n;	 /* P_MAPKEYS: keys; P_IN_K*: strings */
	uint32_t dst, a, b, c; /* loads: c is the slot, b its byte offset in
				  the table */
	const struct attr_value *k;
};

/* A string constant of <= 16 bytes as P_IN_KW compares it. */
struct pword {
	uint64_t w0, w1; /* str_words() */
	uint32_t len;
};

/* P_IN_KW's most strings: the longest chain of == it fuses */
#define IN_MAX 16

struct pkey {
	uint64_t w0, w1; /* the key's words (str_words()), <= 16 bytes */
	const char *key;
	uint32_t klen;
	uint32_t dst;
	uint32_t val; /* index in the record's vals */
	uint8_t next; /* next key of the group in this length bucket */
	const struct attr_value *dflt;
};

#define NO_KEY 0xff
#define LEN_BUCKETS 64 /* lengths 0..62, and 63 for all longer keys */

/* A P_MAPKEYS group's index by key length: a map entry whose length no
 * key has is skipped with one load, and the others compare against only
 * the keys of their length. */
struct pgroup {
	uint8_t first[LEN_BUCKETS]; /* first key (within the group) or NO_KEY */
	uint32_t all;		    /* a bit per key of the group */
};

/*
 * A string of @n <= 16 bytes as two words: equal lengths and equal words
 * mean equal bytes. Short label values and map keys are compared this way
 * against constants whose words were taken once at build time: no call,
 * no loop, no load of the constant's bytes.
 */
static inline __attribute__((always_inline)) void
str_words(const char *s, uint32_t n, uint64_t *w0, uint64_t *w1)
{
	if (n >= 8) {
		memcpy(w0, s, 8);
		memcpy(w1, s + n - 8, 8);
	} else if (n >= 4) {
		uint32_t lo, hi;
		memcpy(&lo, s, 4);
		memcpy(&hi, s + n - 4, 4);
		*w0 = (uint64_t)hi << 32 | lo;
		*w1 = 0;
	} else {
		/* bytes 0, n/2 and n-1 cover every byte of n <= 3 */
		*w0 = n ? (uint64_t)(uint8_t)s[0] |
				  (uint64_t)(uint8_t)s[n / 2] << 8 |
				  (uint64_t)(uint8_t)s[n - 1] << 16
			: 0;
		*w1 = 0;
	}
}

/* A batch of instructions of one opcode: one dispatch for all. */
struct prun {
	uint32_t op;
	const struct pinsn *start, *end;
};

struct expr_plan {
	const struct expr_program *p;
	struct pinsn *insns;
	uint32_t n_insns;
	struct prun *runs;
	uint32_t n_runs;
	struct pkey *keys;
	uint32_t n_keys;
	struct pgroup *groups; /* per P_MAPKEYS, in->b */
	struct attr_value *consts;
	uint32_t n_consts;
	struct pword *words; /* P_IN_KW's strings */
	uint32_t n_words, cap_words;
	uint32_t n_regs;
	uint32_t n_vals; /* attr_values taken from the arena per record */
	uint32_t n_roots;
	uint32_t *root_reg; /* [n_roots] */
	uint32_t *root_id;  /* [n_roots] */
	uint8_t *root_node; /* [n_roots]: evaluated by P_NODE */
	uint32_t *use_reg;  /* [n_uses] */
	size_t n_uses;
	uint32_t guard_reg; /* NO_NODE: not guarded */
};

static const struct attr_value k_false = {.type = ATTR_BOOL, .b = false};
static const struct attr_value k_true = {.type = ATTR_BOOL, .b = true};

/* ---- building ------------------------------------------------------------ */

/* An instruction while building: register i is produced by bi[i]. */
struct pbi {
	struct pinsn in;
	uint32_t level; /* 1 + the deepest operand; leaves 0 */
	uint32_t kidx;	/* k as an index in consts, or NO_NODE */
	uint32_t key;	/* P_MAPKEY: the key as an index in consts */
	const struct attr_value *keyv; /* P_MAPKEY: the key (program's) */
	uint8_t part; /* 0: the guard's instructions, 1: the others */
};

struct pbuild {
	struct expr_plan *pl;
	struct pbi *bi;
	uint32_t n, cap, cap_consts;
	uint8_t part; /* of the instructions now emitted */
	bool oom;
};

/* The runtime types a load of declared type @decl takes (type_ok()). */
static uint16_t accept_mask(unsigned decl)
{
	uint16_t m = 0;
	for (unsigned t = 0; t < 16; t++)
		if (type_ok(decl, t))
			m |= (uint16_t)(1u << t);
	return m;
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
	pl->consts[pl->n_consts] = *k;
	return pl->n_consts++;
}

static bool same_insn(const struct pbi *x, const struct pbi *y)
{
	return x->in.op == y->in.op && x->in.flags == y->in.flags &&
	       x->in.n == y->in.n &&
	       x->in.a == y->in.a && x->in.b == y->in.b && x->in.c == y->in.c &&
	       x->kidx == y->kidx && x->key == y->key;
}

/* Append @x (or find an identical instruction) and return its register. */
static uint32_t add_insn(struct pbuild *b, struct pbi *x)
{
	if (x->in.op != P_NODE)
		for (uint32_t i = 0; i < b->n; i++)
			if (same_insn(&b->bi[i], x))
				return i;
	if (b->n == b->cap) {
		uint32_t cap = b->cap ? b->cap * 2 : 32;
		struct pbi *n = realloc(b->bi, cap * sizeof *n);
		if (!n) {
			b->oom = true;
			return 0;
		}
		b->bi = n;
		b->cap = cap;
	}
	x->in.dst = b->n;
	x->part = b->part;
	b->bi[b->n] = *x;
	return b->n++;
}

static uint32_t level_of(const struct pbuild *b, uint32_t r1, uint32_t r2,
			 uint32_t r3)
{
	uint32_t l = b->bi[r1].level;
	if (r2 != NO_NODE && b->bi[r2].level > l)
		l = b->bi[r2].level;
	if (r3 != NO_NODE && b->bi[r3].level > l)
		l = b->bi[r3].level;
	return l + 1;
}

static struct pbi new_pbi(void)
{
	return (struct pbi){.in = {.a = NO_NODE, .b = NO_NODE, .c = NO_NODE},
			    .kidx = NO_NODE,
			    .key = NO_NODE};
}

static bool same_words(const struct pword *w, const struct attr_value *const *k,
		       uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct pword x = {.len = k[i]->len};
		str_words(k[i]->s, k[i]->len, &x.w0, &x.w1);
		if (w[i].len != x.len || w[i].w0 != x.w0 || w[i].w1 != x.w1)
			return false;
	}
	return true;
}

/* The words of @n string constants @k (each <= 16 bytes), appended unless
 * already there (so that same_insn() shares equal P_IN_KWs); returns the
 * first's index in pl->words. */
static uint32_t add_words(struct pbuild *b, const struct attr_value *const *k,
			  uint32_t n)
{
	struct expr_plan *pl = b->pl;
	for (uint32_t at = 0; at + n <= pl->n_words; at++)
		if (same_words(&pl->words[at], k, n))
			return at;
	if (pl->n_words + n > pl->cap_words) {
		uint32_t cap = pl->cap_words ? pl->cap_words * 2 : 16;
		while (cap < pl->n_words + n)
			cap *= 2;
		struct pword *w = realloc(pl->words, cap * sizeof *w);
		if (!w) {
			b->oom = true;
			return 0;
		}
		pl->words = w;
		pl->cap_words = cap;
	}
	uint32_t at = pl->n_words;
	for (uint32_t i = 0; i < n; i++) {
		struct pword *w = &pl->words[pl->n_words++];
		w->len = k[i]->len;
		str_words(k[i]->s, k[i]->len, &w->w0, &w->w1);
	}
	return at;
}

static bool lower(struct pbuild *b, uint32_t ni, uint32_t *reg);

/*
 * Make @x a P_IN_KW of register @ra and strings @w, or, when @ra is a
 * load, a P_IN_KS that reads the slot itself: the load then has no
 * reader left (the seed's match and reporter kind) and finish() drops
 * it, one instruction and one run fewer.
 */
static void in_operand(struct pbuild *b, struct pbi *x, uint32_t ra,
		       uint32_t w)
{
	const struct pbi *ld = &b->bi[ra];
	if (ld->in.op == P_LOAD || ld->in.op == P_LOAD_K) {
		x->in.op = P_IN_KS;
		x->in.a = w;
		x->in.c = ld->in.c;
		x->in.decl = ld->in.decl;
		x->in.accept = ld->in.accept;
		x->kidx = ld->kidx;
		x->level = 0;
		return;
	}
	x->in.op = P_IN_KW;
	x->in.a = ra;
	x->in.b = w;
	x->level = level_of(b, ra, NO_NODE, NO_NODE);
}

/* The leaves of a chain of @op (OP_LOR or OP_AND) under node @ni into
 * @leaf; false if there are more than IN_MAX. */
static bool chain_leaves(const struct expr_program *p, uint32_t ni,
			 uint8_t op, uint32_t *leaf, uint32_t *n)
{
	const struct enode *e = &p->nodes[ni];
	if (e->op == op)
		return chain_leaves(p, e->a, op, leaf, n) &&
		       chain_leaves(p, e->b, op, leaf, n);
	if (*n == IN_MAX)
		return false;
	leaf[(*n)++] = ni;
	return true;
}

/*
 * x == "k1" || x == "k2" || ... (or x != "k1" && x != "k2" && ...) over one
 * string operand x and constants of <= 16 bytes, as one P_IN_KW in @x:
 * the seed's match (context.protocol == "http" || ... == "grpc") takes
 * one word compare per constant instead of two compares and an ||. Exact:
 * every leaf is NULL exactly when x is, and || (&&) of leaves that are
 * all present is their disjunction (conjunction). False if @ni is not of
 * that shape (with b->oom on allocation failure).
 */
static bool lower_in(struct pbuild *b, uint32_t ni, struct pbi *x)
{
	const struct expr_program *p = b->pl->p;
	const struct enode *e = &p->nodes[ni];
	uint8_t leaf_op = e->op == OP_LOR ? OP_EQ_K : OP_NE_K;
	uint32_t leaf[IN_MAX], n = 0, ra = NO_NODE;
	const struct attr_value *k[IN_MAX];
	if (!chain_leaves(p, ni, e->op, leaf, &n))
		return false;
	for (uint32_t i = 0; i < n; i++) {
		const struct enode *l = &p->nodes[leaf[i]];
		if (l->op != leaf_op || l->k.len > 16 ||
		    !attr_type_is_string((enum attr_type)l->k.type) ||
		    !attr_type_is_string(
			    (enum attr_type)p->nodes[l->a].type))
			return false;
		k[i] = &l->k;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t r;
		/* shared operands lower to one register */
		if (!lower(b, p->nodes[leaf[i]].a, &r) || (i && r != ra))
			return false;
		ra = r;
	}
	x->in.flags = e->op == OP_AND ? F_NEG : 0;
	x->in.n = (uint16_t)n;
	in_operand(b, x, ra, add_words(b, k, n));
	return !b->oom;
}

/*
 * Lower node @ni into instructions; its register in *@reg. Returns false
 * if the subtree holds an operator that is not flattened: the whole root
 * then becomes a P_NODE.
 */
static bool lower(struct pbuild *b, uint32_t ni, uint32_t *reg)
{
	const struct expr_program *p = b->pl->p;
	const struct enode *e = &p->nodes[ni];
	struct pbi x = new_pbi();
	uint32_t ra, rb, rc;

	switch ((enum expr_op)e->op) {
	case OP_CONST:
		x.in.op = P_CONST;
		x.kidx = add_const(b, &e->k);
		break;
	case OP_LOAD:
		x.in.op = P_LOAD; /* no fallback: absent is a failure */
		x.in.c = e->a;
		x.in.decl = e->type;
		x.in.accept = accept_mask(e->type);
		break;
	case OP_OR: {
		const uint32_t *ops = p->args + e->a;
		const struct enode *last = &p->nodes[ops[e->n - 1]];
		if (e->flags & NF_MAPKEY_K) {
			const struct enode *ix = &p->nodes[ops[0]];
			x.in.op = P_MAPKEY;
			x.in.c = p->nodes[ix->a].a;
			x.keyv = &ix->k;
			x.key = add_const(b, &ix->k); /* dedup by value */
			x.kidx = add_const(b, &last->k);
			break;
		}
		if (!(e->flags & NF_LOADS_K))
			return false;
		/* a | b | k: b | k first, then a over it; loads are pure,
		 * so evaluating b when a is present changes nothing */
		uint32_t r = NO_NODE, kidx = add_const(b, &last->k);
		for (uint32_t i = e->n - 1; i-- > 0;) {
			const struct enode *ld = &p->nodes[ops[i]];
			struct pbi y = new_pbi();
			y.in.c = ld->a;
			y.in.decl = ld->type;
			y.in.accept = accept_mask(ld->type);
			if (r == NO_NODE) {
				y.in.op = P_LOAD_K;
				y.kidx = kidx;
			} else {
				y.in.op = P_LOAD_R;
				y.in.a = r;
				y.level = level_of(b, r, NO_NODE, NO_NODE);
			}
			r = add_insn(b, &y);
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
		x.in.op = attr_type_is_string(
				  (enum attr_type)p->nodes[e->a].type) &&
					  attr_type_is_string(
						  (enum attr_type)e->k.type)
				  ? P_EQ_KS
				  : P_EQ_K;
		x.in.flags = e->op == OP_NE_K ? F_NEG : 0;
		x.in.a = ra;
		if (x.in.op == P_EQ_KS && e->k.len <= 16) {
			const struct attr_value *k1 = &e->k;
			x.in.n = 1;
			in_operand(b, &x, ra, add_words(b, &k1, 1));
			break;
		}
		x.kidx = add_const(b, &e->k);
		x.level = level_of(b, ra, NO_NODE, NO_NODE);
		break;
	case OP_EQ:
	case OP_NE:
		if (!lower(b, e->a, &ra) || !lower(b, e->b, &rb))
			return false;
		x.in.op = P_EQ;
		x.in.flags = e->op == OP_NE ? F_NEG : 0;
		x.in.a = ra;
		x.in.b = rb;
		x.level = level_of(b, ra, rb, NO_NODE);
		break;
	case OP_NOT:
		if (!lower(b, e->a, &ra))
			return false;
		x.in.op = P_NOT;
		x.in.a = ra;
		x.level = level_of(b, ra, NO_NODE, NO_NODE);
		break;
	case OP_AND:
	case OP_LOR:
		if (lower_in(b, ni, &x))
			break;
		if (b->oom || !lower(b, e->a, &ra) || !lower(b, e->b, &rb))
			return false;
		x.in.op = e->op == OP_AND ? P_AND : P_LOR;
		x.in.a = ra;
		x.in.b = rb;
		x.level = level_of(b, ra, rb, NO_NODE);
		break;
	case OP_COND:
		if (e->flags & NF_STRICT)
			return false; /* conditionalString(): the tree's */
		/* constant branches (the seed's label values) are read from
		 * consts: no register, no store per record */
		if (!lower(b, e->a, &ra) ||
		    (p->nodes[e->b].op != OP_CONST && !lower(b, e->b, &rb)) ||
		    (p->nodes[e->c].op != OP_CONST && !lower(b, e->c, &rc)))
			return false;
		x.in.op = P_COND;
		x.in.a = ra;
		if (p->nodes[e->b].op == OP_CONST) {
			x.in.flags |= F_BK;
			rb = NO_NODE;
			x.in.b = add_const(b, &p->nodes[e->b].k);
		} else {
			x.in.b = rb;
		}
		if (p->nodes[e->c].op == OP_CONST) {
			x.in.flags |= F_CK;
			rc = NO_NODE;
			x.in.c = add_const(b, &p->nodes[e->c].k);
		} else {
			x.in.c = rc;
		}
		x.level = level_of(b, ra, rb, rc);
		break;
	default:
		return false;
	}
	if (b->oom)
		return false;
	*reg = add_insn(b, &x);
	return !b->oom;
}

static int pbi_cmp(const void *x, const void *y)
{
	const struct pbi *a = x, *b = y;
	if (a->part != b->part)
		return a->part < b->part ? -1 : 1;
	if (a->level != b->level)
		return a->level < b->level ? -1 : 1;
	if (a->in.op != b->in.op)
		return a->in.op < b->in.op ? -1 : 1;
	/* stable: by register, i.e. emission order */
	return a->in.dst < b->in.dst ? -1 : a->in.dst > b->in.dst;
}

/* Merge the P_MAPKEYs reading one slot into P_MAPKEYS of up to 32 keys
 * each (the found-set is a 32-bit mask): one pass over the map per
 * record instead of one per key. */
static int merge_mapkeys(struct pbuild *b)
{
	struct expr_plan *pl = b->pl;
	uint32_t nk = 0;
	for (uint32_t i = 0; i < b->n; i++)
		nk += b->bi[i].in.op == P_MAPKEY;
	if (!nk)
		return 0;
	pl->keys = calloc(nk, sizeof *pl->keys);
	pl->groups = calloc(nk, sizeof *pl->groups);
	struct pbi *out = calloc(b->n, sizeof *out);
	bool *done = calloc(b->n, sizeof *done);
	if (!pl->keys || !pl->groups || !out || !done) {
		free(out);
		free(done);
		return -1;
	}
	uint32_t w = 0, ng = 0;
	for (uint32_t i = 0; i < b->n; i++) {
		const struct pbi *x = &b->bi[i];
		if (x->in.op != P_MAPKEY) {
			out[w++] = *x;
			continue;
		}
		if (done[i])
			continue;
		struct pbi *g = NULL;
		for (uint32_t j = i; j < b->n; j++) {
			const struct pbi *m = &b->bi[j];
			if (m->in.op != P_MAPKEY || m->in.c != x->in.c ||
			    m->part != x->part || done[j])
				continue;
			if (!g || g->in.n == 32) {
				g = &out[w++];
				*g = new_pbi();
				g->in.op = P_MAPKEYS;
				g->in.c = x->in.c;
				g->in.a = pl->n_keys;
				g->in.b = ng++;
				g->in.dst = NO_NODE;
				g->part = x->part;
				memset(pl->groups[g->in.b].first, NO_KEY,
				       LEN_BUCKETS);
			}
			struct pkey *k = &pl->keys[pl->n_keys++];
			k->key = m->keyv->s;
			k->klen = m->keyv->len;
			if (k->klen <= 16)
				str_words(k->key, k->klen, &k->w0, &k->w1);
			k->dst = m->in.dst;
			k->val = pl->n_vals++;
			k->dflt = &pl->consts[m->kidx]; /* consts are final */
			/* append to its length bucket, keeping key order */
			uint8_t *link =
				&pl->groups[g->in.b]
					 .first[k->klen < LEN_BUCKETS - 1
							? k->klen
							: LEN_BUCKETS - 1];
			while (*link != NO_KEY)
				link = &pl->keys[g->in.a + *link].next;
			*link = (uint8_t)g->in.n;
			k->next = NO_KEY;
			pl->groups[g->in.b].all |= 1u << g->in.n;
			g->in.n++;
			done[j] = true;
		}
	}
	free(b->bi);
	free(done);
	b->bi = out;
	b->n = w;
	return 0;
}

/* @in's register operands, NULL-terminated: what drop_dead() keeps
 * alive and renumber() renames. */
static void operands(struct pinsn *in, uint32_t *ops[4])
{
	unsigned n = 0;
	switch ((enum pop)in->op) {
	case P_LOAD_R:
	case P_IN_KW:
	case P_EQ_KS:
	case P_EQ_K:
	case P_NOT:
		ops[n++] = &in->a;
		break;
	case P_EQ:
	case P_AND:
	case P_LOR:
		ops[n++] = &in->a;
		ops[n++] = &in->b;
		break;
	case P_COND:
		ops[n++] = &in->a;
		if (!(in->flags & F_BK))
			ops[n++] = &in->b;
		if (!(in->flags & F_CK))
			ops[n++] = &in->c;
		break;
	default: /* no register operands */
		break;
	}
	ops[n] = NULL;
}

/* Drop the instructions whose register nothing reads: loads that a
 * P_IN_KS took over. Operands come before their readers, so one pass
 * from the end marks them. */
static int drop_dead(struct pbuild *b)
{
	struct expr_plan *pl = b->pl;
	bool *live = calloc(b->n + 1, sizeof *live);
	if (!live)
		return -1;
	for (uint32_t i = 0; i < pl->n_roots; i++)
		live[pl->root_reg[i]] = true;
	for (uint32_t i = b->n; i-- > 0;) {
		uint32_t *ops[4];
		if (!live[i])
			continue;
		operands(&b->bi[i].in, ops);
		for (unsigned k = 0; ops[k]; k++)
			live[*ops[k]] = true;
	}
	uint32_t w = 0;
	for (uint32_t i = 0; i < b->n; i++)
		if (live[i])
			b->bi[w++] = b->bi[i];
	b->n = w;
	free(live);
	return 0;
}

/*
 * Number the registers in the order the instructions run: a run's
 * destinations are then consecutive, and its loop stores through a
 * pointer it advances rather than loading and scaling each instruction's
 * dst. Dropped instructions leave no holes in the register file.
 */
static int renumber(struct expr_plan *pl)
{
	uint32_t *ren = malloc((pl->n_regs + 1) * sizeof *ren), next = 0;
	if (!ren)
		return -1;
	for (uint32_t i = 0; i < pl->n_insns; i++) {
		struct pinsn *in = &pl->insns[i];
		if (in->op == P_MAPKEYS)
			for (uint32_t j = 0; j < in->n; j++)
				ren[pl->keys[in->a + j].dst] = next++;
		else
			ren[in->dst] = next++;
	}
	for (uint32_t i = 0; i < pl->n_insns; i++) {
		struct pinsn *in = &pl->insns[i];
		uint32_t *ops[4];
		if (in->op == P_MAPKEYS) {
			for (uint32_t j = 0; j < in->n; j++)
				pl->keys[in->a + j].dst =
					ren[pl->keys[in->a + j].dst];
			continue;
		}
		in->dst = ren[in->dst];
		operands(in, ops);
		for (unsigned k = 0; ops[k]; k++)
			*ops[k] = ren[*ops[k]];
	}
	for (uint32_t i = 0; i < pl->n_roots; i++)
		pl->root_reg[i] = ren[pl->root_reg[i]];
	for (size_t i = 0; i < pl->n_uses; i++)
		pl->use_reg[i] = ren[pl->use_reg[i]];
	if (pl->guard_reg != NO_NODE)
		pl->guard_reg = ren[pl->guard_reg];
	pl->n_regs = next;
	free(ren);
	return 0;
}

static int finish(struct pbuild *b)
{
	struct expr_plan *pl = b->pl;
	if (drop_dead(b) || merge_mapkeys(b))
		return -1;
	if (b->n)
		qsort(b->bi, b->n, sizeof *b->bi, pbi_cmp);
	pl->insns = calloc(b->n ? b->n : 1, sizeof *pl->insns);
	pl->runs = calloc(b->n + 1, sizeof *pl->runs);
	if (!pl->insns || !pl->runs)
		return -1;
	for (uint32_t i = 0; i < b->n; i++) {
		struct pinsn *in = &pl->insns[i];
		*in = b->bi[i].in;
		in->k = b->bi[i].kidx == NO_NODE ? NULL
						 : &pl->consts[b->bi[i].kidx];
		if (in->op == P_LOAD || in->op == P_LOAD_K ||
		    in->op == P_LOAD_R || in->op == P_IN_KS) {
			/* the evaluator adds these to the table pointer
			 * instead of scaling the slot */
			in->word = (uint8_t)(in->c >> 6);
			in->b = (uint32_t)(offsetof(struct attr_table, v) +
					   in->c * sizeof(struct attr_value));
		}
		if (pl->guard_reg != NO_NODE && b->bi[i].part == 1 &&
		    (i == 0 || b->bi[i - 1].part == 0))
			pl->runs[pl->n_runs++] = (struct prun){.op = P_GUARD};
		struct prun *last =
			pl->n_runs ? &pl->runs[pl->n_runs - 1] : NULL;
		if (last && last->op == in->op && last->end == in) {
			last->end++;
			continue;
		}
		pl->runs[pl->n_runs++] =
			(struct prun){.op = in->op, .start = in, .end = in + 1};
	}
	if (pl->guard_reg != NO_NODE &&
	    (b->n == 0 || b->bi[b->n - 1].part == 0))
		pl->runs[pl->n_runs++] = (struct prun){.op = P_GUARD};
	pl->n_insns = b->n;
	return renumber(pl);
}

/* Add @id as a root of @pl (once): its register is root_reg[returned]. */
static int add_root(struct expr_plan *pl, struct pbuild *b, uint32_t id)
{
	const struct expr_program *p = pl->p;
	uint32_t j = 0;
	if (id >= p->n_exprs) {
		errno = EINVAL;
		return -1;
	}
	while (j < pl->n_roots && pl->root_id[j] != id)
		j++;
	if (j < pl->n_roots)
		return (int)j;
	uint32_t reg, mark = b->n;
	bool node = !lower(b, p->exprs[id].root, &reg);
	if (b->oom)
		return -1;
	if (node) {
		/* drop what the failed lowering emitted: nothing reads it */
		b->n = mark;
		struct pbi x = new_pbi();
		x.in.op = P_NODE;
		x.in.a = id;
		x.in.b = pl->n_vals++;
		reg = add_insn(b, &x);
		if (b->oom)
			return -1;
	}
	pl->root_id[j] = id;
	pl->root_reg[j] = reg;
	pl->root_node[j] = node;
	pl->n_roots++;
	return (int)j;
}

struct expr_plan *expr_plan_create_guarded(const struct expr_program *p,
					   uint32_t guard, const uint32_t *ids,
					   size_t n)
{
	struct expr_plan *pl = calloc(1, sizeof *pl);
	struct pbuild b = {.pl = pl};
	if (!pl)
		return NULL;
	pl->p = p;
	pl->n_uses = n;
	pl->guard_reg = NO_NODE;
	pl->use_reg = calloc(n + 1, sizeof *pl->use_reg);
	pl->root_reg = calloc(n + 1, sizeof *pl->root_reg);
	pl->root_id = calloc(n + 1, sizeof *pl->root_id);
	pl->root_node = calloc(n + 1, sizeof *pl->root_node);
	if (!pl->use_reg || !pl->root_reg || !pl->root_id || !pl->root_node)
		goto fail;
	if (guard != EXPR_PLAN_NO_GUARD) {
		if (guard >= p->n_exprs || p->exprs[guard].type != ATTR_BOOL) {
			errno = EINVAL;
			goto fail;
		}
		/* root 0, whose instructions sort before all others */
		if (add_root(pl, &b, guard) < 0)
			goto fail;
		pl->guard_reg = pl->root_reg[0];
	}
	b.part = 1;
	for (size_t i = 0; i < n; i++) {
		int j = add_root(pl, &b, ids[i]);
		if (j < 0)
			goto fail;
		pl->use_reg[i] = pl->root_reg[j];
	}
	pl->n_regs = b.n;
	/* consts no longer grow: the keys' default pointers are final */
	if (finish(&b))
		goto fail;
	free(b.bi);
	return pl;
fail:
	free(b.bi);
	expr_plan_destroy(pl);
	return NULL;
}

struct expr_plan *expr_plan_create(const struct expr_program *p,
				   const uint32_t *ids, size_t n)
{
	return expr_plan_create_guarded(p, EXPR_PLAN_NO_GUARD, ids, n);
}

void expr_plan_destroy(struct expr_plan *pl)
{
	if (!pl)
		return;
	free(pl->insns);
	free(pl->runs);
	free(pl->keys);
	free(pl->groups);
	free(pl->consts);
	free(pl->words);
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

size_t expr_plan_arena_bytes(const struct expr_plan *pl)
{
	return (size_t)pl->n_vals * sizeof(struct attr_value);
}

uint32_t expr_plan_index(const struct expr_plan *pl, size_t i)
{
	return i < pl->n_uses ? pl->use_reg[i] : 0;
}

uint32_t expr_plan_guard(const struct expr_plan *pl)
{
	return pl->guard_reg == NO_NODE ? 0 : pl->guard_reg;
}

/* ---- evaluation ------------------------------------------------------------
 */

/* The value in slot in->c if present (NULL if mistyped, and *bad set), else
 * @fb. The exact declared type is the one compare of the common case. */
static inline __attribute__((always_inline)) const struct attr_value *
load_or(const struct attr_table *t, const struct pinsn *in,
	const struct attr_value *fb, bool *bad)
{
	if (!((t->present[in->word] >> (in->c & 63)) & 1))
		return fb;
	const struct attr_value *v =
		(const struct attr_value *)((const char *)t + in->b);
	unsigned ty = v->type;
	if (__builtin_expect(ty == in->decl, 1))
		return v;
	if (ty < 16 && ((in->accept >> ty) & 1))
		return v;
	*bad = true;
	return NULL;
}

/* A key of more than 16 bytes: rare in label maps, kept out of line so
 * that the walk below keeps its values in registers. */
static __attribute__((noinline, cold)) bool
long_key_eq(const struct pkey *key, const char *k, uint32_t kl)
{
	return key->klen == kl && memcmp(k, key->key, kl) == 0;
}

/* One walk of the map @m (a STRING_MAP of >= 4 bytes) for the keys of a
 * P_MAPKEYS, with map_find()'s bounds checks, a key taking its first
 * occurrence as map_find() does. Returns the keys found. */
static inline __attribute__((always_inline)) uint32_t
map_walk(const struct pgroup *g, const struct pkey *keys,
	 const struct attr_value *m, const struct attr_value **r,
	 struct attr_value *vals)
{
	const uint8_t *q = m->map, *end = q + m->len;
	uint32_t n = attr_get_u32le(q), found = 0;
	q += 4;
	while (n--) {
		const char *k, *val;
		uint32_t kl, vl;
		if (!attr_map_entry(&q, end, &k, &kl, &val, &vl))
			break;
		unsigned j = g->first[kl < LEN_BUCKETS - 1 ? kl : LEN_BUCKETS - 1];
		if (j == NO_KEY)
			continue;
		/* the bucket is this length exactly up to 62 bytes: words
		 * alone decide for keys of <= 16 */
		uint64_t w0 = 0, w1 = 0;
		bool shrt = kl <= 16;
		if (shrt)
			str_words(k, kl, &w0, &w1);
		do {
			const struct pkey *key = &keys[j];
			if (!(found >> j & 1) &&
			    (shrt ? key->w0 == w0 && key->w1 == w1
				  : long_key_eq(key, k, kl))) {
				/* field by field: a compound literal would
				 * also zero the padding */
				struct attr_value *v = &vals[key->val];
				v->type = ATTR_STRING;
				v->len = vl;
				v->s = val;
				r[key->dst] = v;
				found |= 1u << j;
				if (found == g->all)
					return found;
			}
			j = key->next;
		} while (j != NO_KEY);
	}
	return found;
}

/* Every key of one P_MAPKEYS: one walk of the map, then the defaults of
 * the keys it lacks. Returns true if a register came out NULL. */
static inline __attribute__((always_inline)) bool
map_keys(const struct expr_plan *pl, const struct pinsn *in,
	 const struct attr_table *t, const struct attr_value **r,
	 struct attr_value *vals)
{
	const struct pkey *keys = pl->keys + in->a;
	const struct pgroup *g = &pl->groups[in->b];
	uint32_t slot = in->c, found = 0;
	if ((t->present[slot >> 6] >> (slot & 63)) & 1) {
		const struct attr_value *m = &t->v[slot];
		if (__builtin_expect(m->type != ATTR_STRING_MAP, 0)) {
			for (uint32_t j = 0; j < in->n; j++)
				r[keys[j].dst] = NULL;
			return true;
		}
		if (m->len >= 4)
			found = map_walk(g, keys, m, r, vals);
	}
	if (found != g->all) /* a key missing: the seed's maps have all */
		for (uint32_t j = 0; j < in->n; j++)
			if (!(found >> j & 1))
				r[keys[j].dst] = keys[j].dflt;
	return false;
}

static inline const struct attr_value *as_bool(bool b)
{
	return b ? &k_true : &k_false;
}

/* P_IN_K*: whether @x is one of the @n strings at @w. */
static inline __attribute__((always_inline)) bool
in_words(const struct attr_value *x, const struct pword *w, uint32_t n)
{
	const struct pword *we = w + n;
	uint32_t len = x->len;
	uint64_t w0, w1;
	/* most values differ from every string in length: no words */
	while (w < we && w->len != len)
		w++;
	if (w == we)
		return false;
	str_words(x->s, len, &w0, &w1);
	for (; w < we; w++)
		if (w->len == len && w->w0 == w0 && w->w1 == w1)
			return true;
	return false;
}

/* Count the reasons of the failed roots as expr_eval() would: evaluate
 * them again with the general evaluator (a P_NODE root counted its own). */
static __attribute__((noinline)) unsigned
count_failures(const struct expr_plan *pl, uint32_t n_roots,
	       const struct attr_table *t, struct expr_scratch *s,
	       const struct attr_value **r)
{
	unsigned failed = 0;
	for (uint32_t i = 0; i < n_roots; i++) {
		if (r[pl->root_reg[i]])
			continue;
		failed++;
		if (!pl->root_node[i]) {
			struct attr_value v;
			(void)expr_eval_root(pl->p, pl->root_id[i], t, s, &v);
		}
	}
	return failed;
}

unsigned expr_plan_eval(const struct expr_plan *pl, const struct attr_table *t,
			struct expr_scratch *s, const struct attr_value **r)
{
	struct attr_value *vals = NULL;
	if (pl->n_vals &&
	    !(vals = expr_arena_take(s, pl->n_vals * sizeof *vals))) {
		for (uint32_t i = 0; i < pl->n_regs; i++)
			r[i] = NULL;
		s->stats.evals += pl->n_roots;
		s->stats.fail[EXPR_E_NOMEM] += pl->n_roots;
		return pl->n_roots;
	}
	/* set whenever a register comes out NULL (a NULL operand has set it
	 * already): the roots are only scanned when it is */
	bool bad = false;
	for (const struct prun *ru = pl->runs, *re = ru + pl->n_runs; ru < re;
	     ru++) {
		const struct pinsn *in = ru->start, *ie = ru->end;
		switch ((enum pop)ru->op) {
		case P_CONST:
			for (; in < ie; in++)
				r[in->dst] = in->k;
			break;
		case P_LOAD:
			for (; in < ie; in++) {
				const struct attr_value *v =
					load_or(t, in, NULL, &bad);
				bad |= !v;
				r[in->dst] = v;
			}
			break;
		case P_LOAD_K: {
			/* renumber(): a run's registers are consecutive */
			const struct attr_value **o = r + in->dst;
			for (; in < ie; in++, o++)
				*o = load_or(t, in, in->k, &bad);
			break;
		}
		case P_LOAD_R:
			for (; in < ie; in++)
				r[in->dst] = load_or(t, in, r[in->a], &bad);
			break;
		case P_MAPKEYS:
			for (; in < ie; in++)
				bad |= map_keys(pl, in, t, r, vals);
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
		case P_IN_KW:
			for (; in < ie; in++) {
				const struct attr_value *x = r[in->a];
				r[in->dst] =
					x ? as_bool(in_words(x, pl->words + in->b,
							     in->n) ^
						    (in->flags & F_NEG))
					  : NULL;
			}
			break;
		case P_IN_KS:
			for (; in < ie; in++) {
				const struct attr_value *x =
					load_or(t, in, in->k, &bad);
				bad |= !x; /* absent, of a P_LOAD */
				r[in->dst] =
					x ? as_bool(in_words(x, pl->words + in->a,
							     in->n) ^
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
		case P_COND: {
			const struct attr_value **o = r + in->dst;
			for (; in < ie; in++, o++) {
				const struct attr_value *x = r[in->a];
				if (!x)
					*o = NULL;
				else if (x->b)
					*o = in->flags & F_BK
						     ? &pl->consts[in->b]
						     : r[in->b];
				else
					*o = in->flags & F_CK
						     ? &pl->consts[in->c]
						     : r[in->c];
			}
			break;
		}
		case P_NODE:
			for (; in < ie; in++) {
				struct attr_value *v = &vals[in->b];
				int rc = expr_eval_root(pl->p, in->a, t, s, v);
				bad |= rc != 0;
				r[in->dst] = rc ? NULL : v;
			}
			break;
		case P_GUARD: {
			const struct attr_value *g = r[pl->guard_reg];
			if (__builtin_expect(g && g->b, 1))
				break;
			/* not this rule's record: the guard was the only
			 * expression evaluated */
			s->stats.evals++;
			return bad ? count_failures(pl, 1, t, s, r) : 0;
		}
		case P_MAPKEY:
		case P_COUNT_:
		default:
			/* finish() emits neither: no range check on dispatch */
			__builtin_unreachable();
		}
	}
	s->stats.evals += pl->n_roots;
	if (__builtin_expect(!bad, 1))
		return 0;
	return count_failures(pl, pl->n_roots, t, s, r);
}
