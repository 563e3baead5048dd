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
 *  - at build time, what a record cannot change is decided once: a
 *    conditional()'s constant branch is selected directly (no register
 *    written per record), `x == "a" || x == "b"` is one set test, and
 *    what no root reads any more is dropped;
 *  - instructions run as batches of one opcode each, ordered to make as
 *    few batches as dependencies allow; batches are threaded (computed
 *    goto), and registers are numbered in instruction order, so no
 *    instruction names or loads its destination;
 *  - a guarded plan (a rule) orders its guard's instructions first and
 *    stops after them when the guard does not hold.
 *
 * On the seed (bench_expr) this is ~975 instructions per expr_plan_eval()
 * (~1,130 before the build-time rewrites and threading); expr_eval_batch()
 * + expr_result() take ~3,200.
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
	P_CONST,   /* r = k */
	P_LOAD,	   /* r = the slot's value, NULL if absent or mistyped */
	P_LOAD_K,  /* r = slot present ? its typed value : k */
	P_LOAD_R,  /* r = slot present ? its typed value : r[b] */
	P_MAPKEYS, /* keys[a .. a+decl) of the map in the slot, one pass,
		      into decl consecutive registers; b has a bit per key,
		      c is the group (its length buckets) */
	P_IN_KS,   /* r = r[a] is one of the strings klist[b .. b+c)
		      (F_NEG: none of them) */
	P_EQ_KS,   /* r = r[a] == k, both strings (F_NEG: !=) */
	P_EQ_K,	   /* r = r[a] == k, any types (F_NEG: !=) */
	P_EQ,	   /* r = r[a] == r[b] (F_NEG: !=) */
	P_NOT,	   /* r = !r[a] */
	P_AND,	   /* r = r[a] && r[b] */
	P_LOR,	   /* r = r[a] || r[b] */
	P_COND,	   /* r = r[a] ? r[b] : r[c] */
	P_COND_KR, /* r = r[a] ? consts[b] : r[c] */
	P_COND_RK, /* r = r[a] ? r[b] : consts[c] */
	P_COND_KK, /* r = r[a] ? consts[b] : consts[c] */
	P_NODE,	   /* r = general evaluation of expression a, into vals[b] */
	P_GUARD,   /* a run of its own after the guard's instructions: stop
		      unless the guard holds */
	P_END,	   /* the last run */
	P_MAPKEY,  /* build time only: merged into P_MAPKEYS */
	P_COUNT_
};

#define F_NEG 1

/*
 * One instruction, 16 bytes: four per cache line. The destination is
 * implicit: registers are numbered in instruction order, so a run of
 * instructions writes a run of consecutive registers (MAPKEYS one per
 * key) and no instruction carries or loads its destination.
 */
struct pinsn {
	uint16_t slot; /* loads, P_MAPKEYS: the attribute's slot */
	uint8_t decl;  /* loads: the slot's declared type */
	uint8_t flags; /* F_NEG; loads: the slot's word in present[] */
	uint32_t a;    /* loads: the slot's value's byte offset in the
			  table, which the evaluator adds to the table
			  pointer; P_LOAD_R's operand is b */
	union {
		const struct attr_value *k;
		struct {
			uint32_t b, c;
		};
	};
};

/*
 * A key of a P_MAPKEYS, 32 bytes, with its bytes as key_hit() compares
 * them: a key of up to 8 bytes is the last @klen bytes of w0, w1 the mask
 * that keeps them; one of 9 to 16 bytes is w0 (its first 8 bytes) and w1
 * (its last 8); a longer one is compared from @key.
 */
struct pkey {
	union {
		struct {
			uint64_t w0, w1;
		};
		const char *key;
	};
	const struct attr_value *dflt;
	uint32_t klen;
	uint8_t next; /* next key of the group in this length bucket */
};

#define NO_KEY 0xff
#define LEN_BUCKETS 64 /* lengths 0..62, and 63 for all longer keys */

/* A P_MAPKEYS group's index by key length: a map entry whose length no
 * key has is skipped with one load, and the others compare against only
 * the keys of their length. */
struct pgroup {
	uint8_t first[LEN_BUCKETS]; /* first key (within the group) or NO_KEY */
};

/* A batch of instructions of one opcode: one dispatch for all. A run
 * starts where the previous one ended, and so do its registers. */
struct prun {
	const struct pinsn *end;
	uint32_t op;
};

struct expr_plan {
	const struct expr_program *p;
	struct pinsn *insns;
	uint32_t n_insns;
	struct prun *runs;
	uint32_t n_runs;
	struct pkey *keys; /* key i's value lives in vals[i] */
	uint32_t n_keys;
	struct pgroup *groups; /* per P_MAPKEYS, in->c */
	struct attr_value *consts;
	uint32_t n_consts;
	const struct attr_value **klist; /* P_IN_KS's strings */
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

/* An instruction while building. Its register is dst, fixed at creation
 * (operands always have lower registers than their users); finish()
 * renumbers the registers once the instructions are in their final order.
 * Operand fields as in struct pinsn, but registers and constant indexes
 * (kidx, and b/c of P_COND_K*) are 32-bit. */
struct pbi {
	uint8_t op;
	uint8_t flags;
	uint8_t decl;
	uint8_t part;	/* 0: the guard's instructions, 1: the others */
	uint32_t slot;
	uint32_t a, b, c;
	uint32_t dst;
	uint32_t kidx;	/* k as an index in consts, or NO_NODE */
	uint32_t key;	/* P_MAPKEY: the key as an index in consts */
	const struct attr_value *keyv; /* P_MAPKEY: the key (program's) */
};

struct pbuild {
	struct expr_plan *pl;
	struct pbi *bi;
	uint32_t n, cap, cap_consts;
	uint32_t n_regs; /* registers created (b->n before anything is
			    dropped) */
	uint32_t *kl;	 /* P_IN_KS's constants, as indexes in consts */
	uint32_t n_kl, cap_kl;
	uint8_t part; /* of the instructions now emitted */
	bool oom;
};

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
	return x->op == y->op && x->flags == y->flags && x->slot == y->slot &&
	       x->a == y->a && x->b == y->b && x->c == y->c &&
	       x->kidx == y->kidx && x->key == y->key;
}

/* Append @x (or find an identical instruction) and return its register. */
static uint32_t add_insn(struct pbuild *b, struct pbi *x)
{
	if (x->op != P_NODE)
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
	x->dst = b->n;
	x->part = b->part;
	b->bi[b->n] = *x;
	return b->n++;
}

static struct pbi new_pbi(void)
{
	return (struct pbi){.a = NO_NODE,
			    .b = NO_NODE,
			    .c = NO_NODE,
			    .kidx = NO_NODE,
			    .key = NO_NODE};
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
		x.op = P_CONST;
		x.kidx = add_const(b, &e->k);
		break;
	case OP_LOAD:
		x.op = P_LOAD; /* no fallback: absent is a failure */
		x.slot = e->a;
		x.decl = e->type;
		break;
	case OP_OR: {
		const uint32_t *ops = p->args + e->a;
		const struct enode *last = &p->nodes[ops[e->n - 1]];
		if (e->flags & NF_MAPKEY_K) {
			const struct enode *ix = &p->nodes[ops[0]];
			x.op = P_MAPKEY;
			x.slot = p->nodes[ix->a].a;
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
			y.slot = ld->a;
			y.decl = ld->type;
			if (r == NO_NODE) {
				y.op = P_LOAD_K;
				y.kidx = kidx;
			} else {
				y.op = P_LOAD_R;
				y.a = r;
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
		x.op = attr_type_is_string((enum attr_type)p->nodes[e->a].type) &&
				       attr_type_is_string((enum attr_type)e->k.type)
			       ? P_EQ_KS
			       : P_EQ_K;
		x.flags = e->op == OP_NE_K ? F_NEG : 0;
		x.a = ra;
		x.kidx = add_const(b, &e->k);
		break;
	case OP_EQ:
	case OP_NE:
		if (!lower(b, e->a, &ra) || !lower(b, e->b, &rb))
			return false;
		x.op = P_EQ;
		x.flags = e->op == OP_NE ? F_NEG : 0;
		x.a = ra;
		x.b = rb;
		break;
	case OP_NOT:
		if (!lower(b, e->a, &ra))
			return false;
		x.op = P_NOT;
		x.a = ra;
		break;
	case OP_AND:
	case OP_LOR:
		if (!lower(b, e->a, &ra) || !lower(b, e->b, &rb))
			return false;
		x.op = e->op == OP_AND ? P_AND : P_LOR;
		x.a = ra;
		x.b = rb;
		break;
	case OP_COND:
		if (!lower(b, e->a, &ra) || !lower(b, e->b, &rb) ||
		    !lower(b, e->c, &rc))
			return false;
		x.op = P_COND;
		x.a = ra;
		x.b = rb;
		x.c = rc;
		break;
	default:
		return false;
	}
	if (b->oom)
		return false;
	*reg = add_insn(b, &x);
	return !b->oom;
}

/* A comparison of r[a] with string constants: one == k (or != k when
 * @neg), or a P_IN_KS already built from such comparisons. */
static bool is_kset(const struct pbi *x, uint8_t neg)
{
	return (x->op == P_EQ_KS || x->op == P_IN_KS) &&
	       (x->flags & F_NEG) == neg;
}

/* Append @x's constants (one, or a P_IN_KS's list) to b->kl. */
static void kset_append(struct pbuild *b, const struct pbi *x)
{
	uint32_t n = x->op == P_IN_KS ? x->c : 1;
	if (b->n_kl + n > b->cap_kl) {
		uint32_t cap = b->cap_kl ? b->cap_kl * 2 : 16;
		while (cap < b->n_kl + n)
			cap *= 2;
		uint32_t *kl = realloc(b->kl, cap * sizeof *kl);
		if (!kl) {
			b->oom = true;
			return;
		}
		b->kl = kl;
		b->cap_kl = cap;
	}
	for (uint32_t i = 0; i < n; i++)
		b->kl[b->n_kl++] = x->op == P_IN_KS ? b->kl[x->b + i] : x->kidx;
}

/*
 * Rewrite instructions into cheaper equivalents, now that every operand
 * is known (operands precede their users, so one pass in register order
 * sees an operand's final form before its users):
 *  - a conditional() whose branch is a constant selects the constant
 *    directly: the P_CONST register is no longer written per record;
 *  - `x == "a" || x == "b" || ...` (the seed's rule match) is one
 *    P_IN_KS, and so is `x != "a" && x != "b"` negated: both comparisons
 *    fail together (when x does), so the short circuit is the set test.
 * What no root reads any more is dropped by prune().
 */
static void rewrite(struct pbuild *b)
{
	for (uint32_t i = 0; i < b->n && !b->oom; i++) {
		struct pbi *x = &b->bi[i];
		if (x->op == P_COND) {
			bool kb = b->bi[x->b].op == P_CONST;
			bool kc = b->bi[x->c].op == P_CONST;
			if (kb)
				x->b = b->bi[x->b].kidx;
			if (kc)
				x->c = b->bi[x->c].kidx;
			x->op = kb ? (kc ? P_COND_KK : P_COND_KR)
				   : (kc ? P_COND_RK : P_COND);
			continue;
		}
		if (x->op != P_LOR && x->op != P_AND)
			continue;
		uint8_t neg = x->op == P_AND ? F_NEG : 0;
		const struct pbi *l = &b->bi[x->a], *r = &b->bi[x->b];
		if (!is_kset(l, neg) || !is_kset(r, neg) || l->a != r->a)
			continue;
		uint32_t start = b->n_kl;
		kset_append(b, l);
		kset_append(b, r);
		x->op = P_IN_KS;
		x->flags = neg;
		x->a = l->a;
		x->b = start;
		x->c = b->n_kl - start;
	}
}

/* The registers instruction @x reads, into @ops; returns how many. */
static unsigned operands(const struct pbi *x, uint32_t ops[3])
{
	switch (x->op) {
	case P_LOAD_R:
	case P_IN_KS:
	case P_EQ_KS:
	case P_EQ_K:
	case P_NOT:
	case P_COND_KK:
		ops[0] = x->a;
		return 1;
	case P_EQ:
	case P_AND:
	case P_LOR:
	case P_COND_RK:
		ops[0] = x->a;
		ops[1] = x->b;
		return 2;
	case P_COND_KR:
		ops[0] = x->a;
		ops[1] = x->c;
		return 2;
	case P_COND:
		ops[0] = x->a;
		ops[1] = x->b;
		ops[2] = x->c;
		return 3;
	default:
		return 0;
	}
}

/* Drop the instructions no root reads (what rewrite() made dead, and what
 * a root lowered to P_NODE had emitted before giving up). Registers keep
 * their numbers until finish() renumbers them. */
static int prune(struct pbuild *b)
{
	struct expr_plan *pl = b->pl;
	bool *live = calloc(b->n + 1, sizeof *live);
	if (!live)
		return -1;
	for (uint32_t j = 0; j < pl->n_roots; j++)
		live[pl->root_reg[j]] = true;
	for (uint32_t i = b->n; i-- > 0;) {
		uint32_t ops[3];
		if (!live[i])
			continue;
		for (unsigned k = operands(&b->bi[i], ops); k-- > 0;)
			live[ops[k]] = true;
	}
	uint32_t w = 0;
	for (uint32_t i = 0; i < b->n; i++)
		if (live[i])
			b->bi[w++] = b->bi[i];
	b->n = w;
	free(live);
	return 0;
}

/* Fill @k's compare words (struct pkey), byte by byte: the same on
 * either endianness. */
static void key_words(struct pkey *k, const char *key)
{
	uint8_t w[8] = {0}, m[8] = {0};
	if (k->klen > 16) {
		k->key = key;
		return;
	}
	if (k->klen > 8) {
		memcpy(&k->w0, key, 8);
		memcpy(&k->w1, key + k->klen - 8, 8);
		return;
	}
	if (k->klen) { /* an empty key: mask 0, any 0-byte key is it */
		memcpy(w + 8 - k->klen, key, k->klen);
		memset(m + 8 - k->klen, 0xff, k->klen);
	}
	memcpy(&k->w0, w, 8);
	memcpy(&k->w1, m, 8);
}

/* Merge the P_MAPKEYs reading one slot into P_MAPKEYS of up to 32 keys
 * each (the found-set is a 32-bit mask): one pass over the map per
 * record instead of one per key. A key's register is in keys[].dst until
 * finish() renumbers. */
static int merge_mapkeys(struct pbuild *b, uint32_t *key_dst)
{
	struct expr_plan *pl = b->pl;
	uint32_t nk = 0;
	for (uint32_t i = 0; i < b->n; i++)
		nk += b->bi[i].op == P_MAPKEY;
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
		if (x->op != P_MAPKEY) {
			out[w++] = *x;
			continue;
		}
		if (done[i])
			continue;
		struct pbi *g = NULL;
		for (uint32_t j = i; j < b->n; j++) {
			const struct pbi *m = &b->bi[j];
			if (m->op != P_MAPKEY || m->slot != x->slot ||
			    m->part != x->part || done[j])
				continue;
			if (!g || g->b == 32) {
				g = &out[w++];
				*g = new_pbi();
				g->op = P_MAPKEYS;
				g->slot = x->slot;
				g->a = pl->n_keys;
				g->b = 0;
				g->c = ng++;
				g->dst = x->dst;
				g->part = x->part;
				memset(pl->groups[g->c].first, NO_KEY,
				       LEN_BUCKETS);
			}
			uint32_t ki = pl->n_keys++;
			struct pkey *k = &pl->keys[ki];
			k->klen = m->keyv->len;
			key_words(k, m->keyv->s);
			k->dflt = &pl->consts[m->kidx]; /* consts are final */
			key_dst[ki] = m->dst;
			/* append to its length bucket, keeping key order */
			uint8_t *link =
				&pl->groups[g->c].first[k->klen < LEN_BUCKETS - 1
								? k->klen
								: LEN_BUCKETS - 1];
			while (*link != NO_KEY)
				link = &pl->keys[g->a + *link].next;
			*link = (uint8_t)g->b;
			k->next = NO_KEY;
			g->b++;
			done[j] = true;
		}
	}
	free(b->bi);
	free(done);
	b->bi = out;
	b->n = w;
	pl->n_vals = pl->n_keys;
	return 0;
}

/* Number the registers in instruction order and point every reference at
 * the new numbers. */
static int renumber(struct pbuild *b, const uint32_t *key_dst)
{
	struct expr_plan *pl = b->pl;
	uint32_t *nr = malloc((b->n_regs + 1) * sizeof *nr);
	if (!nr)
		return -1;
	uint32_t next = 0;
	for (uint32_t i = 0; i < b->n; i++) {
		struct pbi *x = &b->bi[i];
		if (x->op == P_MAPKEYS) {
			x->dst = next;
			for (uint32_t k = 0; k < x->b; k++)
				nr[key_dst[x->a + k]] = next++;
		} else {
			nr[x->dst] = next;
			x->dst = next++;
		}
	}
	for (uint32_t i = 0; i < b->n; i++) {
		struct pbi *x = &b->bi[i];
		switch (x->op) {
		case P_LOAD_R:
		case P_IN_KS:
		case P_EQ_KS:
		case P_EQ_K:
		case P_NOT:
		case P_COND_KK:
			x->a = nr[x->a];
			break;
		case P_EQ:
		case P_AND:
		case P_LOR:
		case P_COND_RK:
			x->a = nr[x->a];
			x->b = nr[x->b];
			break;
		case P_COND_KR:
			x->a = nr[x->a];
			x->c = nr[x->c];
			break;
		case P_COND:
			x->a = nr[x->a];
			x->b = nr[x->b];
			x->c = nr[x->c];
			break;
		default:
			break;
		}
	}
	for (uint32_t j = 0; j < pl->n_roots; j++)
		pl->root_reg[j] = nr[pl->root_reg[j]];
	for (size_t i = 0; i < pl->n_uses; i++)
		pl->use_reg[i] = nr[pl->use_reg[i]];
	if (pl->guard_reg != NO_NODE)
		pl->guard_reg = nr[pl->guard_reg];
	pl->n_regs = next;
	free(nr);
	return 0;
}

/*
 * Order the instructions into as few runs as a valid order allows, the
 * guard's part first: repeatedly take the opcode with the most
 * instructions whose operands are computed, and emit every instruction of
 * that opcode that is or becomes ready (a `|` chain's P_LOAD_Rs in one
 * run). Sorting by depth would split an opcode over every depth it
 * occurs at; each run costs a dispatch per record.
 */
static int schedule(struct pbuild *b, const uint32_t *key_dst)
{
	uint32_t n = b->n;
	uint32_t *at = malloc((b->n_regs + 1) * sizeof *at); /* reg -> insn */
	bool *done = calloc(n + 1, sizeof *done);
	struct pbi *out = calloc(n + 1, sizeof *out);
	int rc = -1;
	if (!at || !done || !out)
		goto out;
	for (uint32_t i = 0; i < n; i++) {
		const struct pbi *x = &b->bi[i];
		if (x->op == P_MAPKEYS)
			for (uint32_t k = 0; k < x->b; k++)
				at[key_dst[x->a + k]] = i;
		else
			at[x->dst] = i;
	}
	uint32_t w = 0;
	for (uint8_t part = 0; part < 2; part++) {
		for (;;) {
			uint32_t count[P_COUNT_] = {0}, ops[3];
			for (uint32_t i = 0; i < n; i++) {
				const struct pbi *x = &b->bi[i];
				bool ready = !done[i] && x->part == part;
				for (unsigned k = ready ? operands(x, ops) : 0;
				     k-- > 0;)
					ready &= done[at[ops[k]]];
				count[x->op] += ready;
			}
			unsigned op = P_COUNT_;
			for (unsigned o = 0; o < P_COUNT_; o++)
				if (count[o] &&
				    (op == P_COUNT_ || count[o] > count[op]))
					op = o;
			if (op == P_COUNT_)
				break;
			for (bool more = true; more;) {
				more = false;
				for (uint32_t i = 0; i < n; i++) {
					const struct pbi *x = &b->bi[i];
					bool ready = !done[i] && x->op == op &&
						     x->part == part;
					for (unsigned k = ready ? operands(x, ops)
								: 0;
					     k-- > 0;)
						ready &= done[at[ops[k]]];
					if (!ready)
						continue;
					out[w++] = *x;
					done[i] = more = true;
				}
			}
		}
	}
	free(b->bi);
	b->bi = out;
	out = NULL;
	rc = 0;
out:
	free(at);
	free(done);
	free(out);
	return rc;
}

static int finish(struct pbuild *b)
{
	struct expr_plan *pl = b->pl;
	uint32_t *key_dst = malloc((b->n + 1) * sizeof *key_dst);
	int rc = -1;
	if (!key_dst)
		return -1;
	rewrite(b);
	if (b->oom || prune(b) || merge_mapkeys(b, key_dst) ||
	    schedule(b, key_dst) || renumber(b, key_dst))
		goto out;
	pl->insns = calloc(b->n + 1, sizeof *pl->insns);
	pl->runs = calloc(b->n + 3, sizeof *pl->runs);
	pl->klist = calloc(b->n_kl + 1, sizeof *pl->klist);
	if (!pl->insns || !pl->runs || !pl->klist)
		goto out;
	for (uint32_t i = 0; i < b->n_kl; i++)
		pl->klist[i] = &pl->consts[b->kl[i]];
	for (uint32_t i = 0; i < b->n; i++) {
		const struct pbi *x = &b->bi[i];
		struct pinsn *in = &pl->insns[i];
		in->slot = (uint16_t)x->slot;
		in->decl = x->decl;
		in->flags = x->flags;
		in->a = x->a;
		switch (x->op) {
		case P_LOAD:
		case P_LOAD_K:
		case P_LOAD_R:
			in->flags = (uint8_t)(x->slot >> 6);
			in->a = (uint32_t)(offsetof(struct attr_table, v) +
					   x->slot * sizeof(struct attr_value));
			if (x->op == P_LOAD_R)
				in->b = x->a;
			else
				in->k = x->op == P_LOAD_K ? &pl->consts[x->kidx]
							  : NULL;
			break;
		case P_CONST:
		case P_EQ_KS:
		case P_EQ_K:
			in->k = &pl->consts[x->kidx];
			break;
		case P_NODE:
			/* its value after the keys' */
			in->b = pl->n_vals++;
			break;
		case P_MAPKEYS:
			/* the count (at most 32) and a bit per key */
			in->decl = (uint8_t)x->b;
			in->b = x->b == 32 ? ~0u : (1u << x->b) - 1;
			in->c = x->c;
			break;
		default:
			in->b = x->b;
			in->c = x->c;
			break;
		}
		if (pl->guard_reg != NO_NODE && x->part == 1 &&
		    (i == 0 || b->bi[i - 1].part == 0))
			pl->runs[pl->n_runs++] =
				(struct prun){.op = P_GUARD, .end = in};
		struct prun *last =
			pl->n_runs ? &pl->runs[pl->n_runs - 1] : NULL;
		if (last && last->op == x->op) {
			last->end++;
			continue;
		}
		pl->runs[pl->n_runs++] =
			(struct prun){.op = x->op, .end = in + 1};
	}
	const struct pinsn *end = pl->insns + b->n;
	if (pl->guard_reg != NO_NODE &&
	    (b->n == 0 || b->bi[b->n - 1].part == 0))
		pl->runs[pl->n_runs++] = (struct prun){.op = P_GUARD, .end = end};
	pl->runs[pl->n_runs++] = (struct prun){.op = P_END, .end = end};
	pl->n_insns = b->n;
	rc = 0;
out:
	free(key_dst);
	return rc;
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
	uint32_t reg;
	bool node = !lower(b, p->exprs[id].root, &reg);
	if (b->oom)
		return -1;
	if (node) {
		/* what the failed lowering emitted is left for prune(): an
		 * identical instruction found by a later root may be it */
		struct pbi x = new_pbi();
		x.op = P_NODE;
		x.a = id;
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
	b.n_regs = b.n;
	/* consts no longer grow: the keys' default pointers are final */
	if (finish(&b))
		goto fail;
	free(b.bi);
	free(b.kl);
	return pl;
fail:
	free(b.bi);
	free(b.kl);
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
	free(pl->klist);
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

uint32_t expr_plan_guard(const struct expr_plan *pl)
{
	return pl->guard_reg == NO_NODE ? 0 : pl->guard_reg;
}

/* ---- evaluation ------------------------------------------------------------
 */

static inline bool has(const struct attr_table *t, unsigned slot)
{
	return (t->present[slot >> 6] >> (slot & 63)) & 1;
}

/* A load's slot is present; its value. */
static inline bool present(const struct attr_table *t, const struct pinsn *in)
{
	return (t->present[in->flags] >> (in->slot & 63)) & 1;
}

static inline const struct attr_value *at(const struct attr_table *t,
					  const struct pinsn *in)
{
	return (const struct attr_value *)((const char *)t + in->a);
}

/* A load whose value's type is not exactly the declared one: the default
 * @fb if the slot is absent, the value if its type is string-like like the
 * declared one, else NULL (a type failure) with *@bad set. Out of line:
 * the hot loops keep one compare per load. */
static __attribute__((noinline, cold)) const struct attr_value *
load_slow(const struct attr_table *t, const struct pinsn *in,
	  const struct attr_value *fb, bool *bad)
{
	if (!has(t, in->slot))
		return fb;
	if (type_ok(in->decl, t->v[in->slot].type))
		return &t->v[in->slot];
	*bad = true;
	return NULL;
}

/* bytes_eq() without the memcmp() call for long keys: a call in the walk
 * of map_keys() makes the compiler spill its live registers around every
 * key compare, taken or not. */
static inline bool key_eq(const char *a, const char *b, uint32_t n)
{
	uint64_t d = 0, x, y;
	uint32_t i = 0;
	for (; i + 8 <= n; i += 8) {
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		d |= x ^ y;
	}
	memcpy(&x, a + n - 8, 8);
	memcpy(&y, b + n - 8, 8);
	return (d | (x ^ y)) == 0;
}

/*
 * Is the map key at @k (@kl bytes, in a bucket of @key's length) @key? A
 * key of up to 8 bytes is one 8-byte load ending where the key ends: the
 * bytes before it are still the map's (its count and the entry's length
 * come first, 8 bytes before the first key), and the mask drops them.
 */
static inline bool key_hit(const char *k, uint32_t kl, const struct pkey *key)
{
	uint64_t x, y;
	if (kl <= 8) {
		memcpy(&x, k + kl - 8, 8);
		return ((x ^ key->w0) & key->w1) == 0;
	}
	if (kl <= 16) {
		memcpy(&x, k, 8);
		memcpy(&y, k + kl - 8, 8);
		return ((x ^ key->w0) | (y ^ key->w1)) == 0;
	}
	return kl == key->klen && key_eq(k, key->key, kl);
}

/*
 * The keys @keys[j] (j in @pending, a bit per key) of the map @m
 * (present, a STRING_MAP of at least 4 bytes) into their registers @o[j],
 * values in @kv[j]: one walk with map_find()'s bounds checks, a key taking
 * its first occurrence as map_find() does, stopping once every key is
 * found; then the defaults of the keys not found. Out of line, with one
 * mask for both "found" and "done": inlined into the evaluator, the walk
 * spilled half of its registers around every map.
 */
static __attribute__((noinline)) void
map_walk(const struct attr_value *m, const uint8_t *first,
	 const struct pkey *keys, const struct attr_value **o,
	 struct attr_value *kv, uint32_t pending)
{
	const uint8_t *q = m->map, *end = q + m->len;
	uint32_t n = get_u32le(q);
	q += 4;
	while (n--) {
		/* map_entry()'s checks, each read only once it is in bounds */
		size_t room = (size_t)(end - q);
		if (room < 8)
			break;
		uint32_t kl = get_u32le(q);
		if (room - 8 < kl)
			break;
		uint32_t vl = get_u32le(q + 4 + kl);
		if (room - 8 - kl < vl)
			break;
		const char *k = (const char *)q + 4;
		q += 8 + (size_t)kl + vl;
		for (unsigned j = first[kl < LEN_BUCKETS - 1 ? kl
							      : LEN_BUCKETS - 1];
		     j != NO_KEY; j = keys[j].next) {
			if (!(pending >> j & 1) || !key_hit(k, kl, &keys[j]))
				continue;
			/* field by field: a compound literal would also zero
			 * the padding, two more stores */
			kv[j].type = ATTR_STRING;
			kv[j].len = vl;
			kv[j].s = k + kl + 4;
			o[j] = &kv[j];
			pending &= ~(1u << j);
			if (!pending)
				return;
		}
	}
	for (; pending; pending &= pending - 1)
		o[__builtin_ctz(pending)] = keys[__builtin_ctz(pending)].dflt;
}

/* One P_MAPKEYS into @o[0 .. in->decl). Returns true if a register came
 * out NULL (the attribute is not a map). */
static inline bool map_keys(const struct expr_plan *pl, const struct pinsn *in,
			    const struct attr_table *t,
			    const struct attr_value **o, struct attr_value *vals)
{
	const struct pkey *keys = pl->keys + in->a;
	uint32_t nk = in->decl;
	const struct attr_value *m = &t->v[in->slot];
	if (!has(t, in->slot) ||
	    (m->type == ATTR_STRING_MAP && __builtin_expect(m->len < 4, 0))) {
		/* absent, or too short to hold an entry */
		for (uint32_t j = 0; j < nk; j++)
			o[j] = keys[j].dflt;
		return false;
	}
	if (__builtin_expect(m->type != ATTR_STRING_MAP, 0)) {
		for (uint32_t j = 0; j < nk; j++)
			o[j] = NULL;
		return true;
	}
	map_walk(m, pl->groups[in->c].first, keys, o, vals + in->a, in->b);
	return false;
}

static inline const struct attr_value *as_bool(bool b)
{
	return b ? &k_true : &k_false;
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

/*
 * The runs are threaded, as the kernel's BPF interpreter threads its
 * instructions: each run ends by jumping straight to the next run's code
 * (computed goto), with no loop or range check around a switch. Operands
 * need no fields either: the instructions of consecutive runs are
 * consecutive in memory, and so are the registers they write (@o).
 */
unsigned expr_plan_eval(const struct expr_plan *pl, const struct attr_table *t,
			struct expr_scratch *s, const struct attr_value **r)
{
	static const void *const go[P_COUNT_] = {
		[P_CONST] = &&do_const,	     [P_LOAD] = &&do_load,
		[P_LOAD_K] = &&do_load_k,    [P_LOAD_R] = &&do_load_r,
		[P_MAPKEYS] = &&do_mapkeys,  [P_IN_KS] = &&do_in_ks,
		[P_EQ_KS] = &&do_eq_ks,	     [P_EQ_K] = &&do_eq_k,
		[P_EQ] = &&do_eq,	     [P_NOT] = &&do_not,
		[P_AND] = &&do_and,	     [P_LOR] = &&do_lor,
		[P_COND] = &&do_cond,	     [P_COND_KR] = &&do_cond_kr,
		[P_COND_RK] = &&do_cond_rk,  [P_COND_KK] = &&do_cond_kk,
		[P_NODE] = &&do_node,	     [P_GUARD] = &&do_guard,
		[P_END] = &&do_end,
	};
	struct attr_value *vals = NULL;
	if (pl->n_vals &&
	    !(vals = expr_arena_take(s, pl->n_vals * sizeof *vals))) {
		for (uint32_t i = 0; i < pl->n_regs; i++)
			r[i] = NULL;
		s->stats.evals += pl->n_roots;
		s->stats.fail[EXPR_E_NOMEM] += pl->n_roots;
		return pl->n_roots;
	}
	const struct attr_value *consts = pl->consts;
	const struct prun *ru = pl->runs;
	const struct pinsn *in = pl->insns, *ie;
	const struct attr_value **o = r;
	/* set whenever a register comes out NULL (a NULL operand has set it
	 * already): the roots are only scanned when it is */
	bool bad = false;

#define NEXT_RUN()                       \
	do {                             \
		ie = ru->end;            \
		goto *go[(ru++)->op];    \
	} while (0)

	NEXT_RUN();
do_const:
	for (; in < ie; in++)
		*o++ = in->k;
	NEXT_RUN();
do_load:
	for (; in < ie; in++) {
		const struct attr_value *v = NULL;
		if (present(t, in)) {
			v = at(t, in);
			if (__builtin_expect(v->type != in->decl, 0))
				v = load_slow(t, in, NULL, &bad);
		} else {
			bad = true;
		}
		*o++ = v;
	}
	NEXT_RUN();
do_load_k:
	/* the slot or the default without a branch on presence, which
	 * varies from record to record; then one compare with the declared
	 * type, which the default also has unless it is another string-like
	 * type (load_slow() sorts that out) */
	for (; in < ie; in++) {
		const struct attr_value *v = present(t, in) ? at(t, in) : in->k;
		if (__builtin_expect(v->type != in->decl, 0))
			v = load_slow(t, in, in->k, &bad);
		*o++ = v;
	}
	NEXT_RUN();
do_load_r:
	for (; in < ie; in++) {
		const struct attr_value *v = r[in->b];
		if (present(t, in)) {
			v = at(t, in);
			if (__builtin_expect(v->type != in->decl, 0))
				v = load_slow(t, in, NULL, &bad);
		}
		*o++ = v;
	}
	NEXT_RUN();
do_mapkeys:
	for (; in < ie; in++) {
		bad |= map_keys(pl, in, t, o, vals);
		o += in->decl;
	}
	NEXT_RUN();
do_in_ks:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a];
		if (!x) {
			*o++ = NULL;
			continue;
		}
		const struct attr_value *const *k = pl->klist + in->b;
		bool hit = false;
		for (uint32_t j = 0; j < in->c && !hit; j++)
			hit = str_eq(x, k[j]->s, k[j]->len);
		*o++ = as_bool(hit ^ (in->flags & F_NEG));
	}
	NEXT_RUN();
do_eq_ks:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a];
		*o++ = x ? as_bool(str_eq(x, in->k->s, in->k->len) ^
				   (in->flags & F_NEG))
			 : NULL;
	}
	NEXT_RUN();
do_eq_k:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a];
		*o++ = x ? as_bool(values_equal(x, in->k) ^ (in->flags & F_NEG))
			 : NULL;
	}
	NEXT_RUN();
do_eq:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a], *y = r[in->b];
		*o++ = x && y ? as_bool(values_equal(x, y) ^
					(in->flags & F_NEG))
			      : NULL;
	}
	NEXT_RUN();
do_not:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a];
		*o++ = x ? as_bool(!x->b) : NULL;
	}
	NEXT_RUN();
do_and:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a];
		*o++ = !x ? NULL : x->b ? r[in->b] : &k_false;
	}
	NEXT_RUN();
do_lor:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a];
		*o++ = !x ? NULL : x->b ? &k_true : r[in->b];
	}
	NEXT_RUN();
do_cond:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a];
		*o++ = !x ? NULL : x->b ? r[in->b] : r[in->c];
	}
	NEXT_RUN();
do_cond_kr:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a];
		*o++ = !x ? NULL : x->b ? &consts[in->b] : r[in->c];
	}
	NEXT_RUN();
do_cond_rk:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a];
		*o++ = !x ? NULL : x->b ? r[in->b] : &consts[in->c];
	}
	NEXT_RUN();
do_cond_kk:
	for (; in < ie; in++) {
		const struct attr_value *x = r[in->a];
		*o++ = !x ? NULL : x->b ? &consts[in->b] : &consts[in->c];
	}
	NEXT_RUN();
do_node:
	for (; in < ie; in++) {
		struct attr_value *v = &vals[in->b];
		int rc = expr_eval_root(pl->p, in->a, t, s, v);
		bad |= rc != 0;
		*o++ = rc ? NULL : v;
	}
	NEXT_RUN();
do_guard: {
	const struct attr_value *g = r[pl->guard_reg];
	if (__builtin_expect(g && g->b, 1))
		NEXT_RUN();
	/* not this rule's record: the guard was the only expression
	 * evaluated */
	s->stats.evals++;
	return bad ? count_failures(pl, 1, t, s, r) : 0;
}
do_end:
#undef NEXT_RUN
	s->stats.evals += pl->n_roots;
	if (__builtin_expect(!bad, 1))
		return 0;
	return count_failures(pl, pl->n_roots, t, s, r);
}
