/*
 * expr_eval.c -- the evaluator over the flat node array, the conversion
 * functions, and the per-thread scratch.
 *
 * The hot path is a handful of shapes (the seed's dimensions): a `|` chain
 * of attribute loads ending in a constant, a map lookup with a constant
 * key, a string compared with a constant. Those are special-cased below so
 * that a dimension costs a few loads and compares, not a tree walk.
 */
#include "expr/expr_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t empty_map_bytes[4];

const struct attr_value expr_empty_map = {
	.type = ATTR_STRING_MAP,
	.len = sizeof empty_map_bytes,
	.map = empty_map_bytes,
};

const char *expr_fail_name(enum expr_fail code)
{
	switch (code) {
	case EXPR_OK: return "ok";
	case EXPR_E_ABSENT: return "absent";
	case EXPR_E_TYPE: return "type";
	case EXPR_E_VALUE: return "value";
	case EXPR_E_NOMEM: return "nomem";
	case EXPR_E_REGEX: return "regex";
	case EXPR_E_COUNT: break;
	}
	return "unknown";
}

/* ---- conversions -------------------------------------------------------- */

int expr_conv_ip(const char *s, size_t len, struct attr_value *out)
{
	char buf[INET6_ADDRSTRLEN + 1];
	if (len >= sizeof buf || memchr(s, 0, len))
		return EXPR_E_VALUE;
	memcpy(buf, s, len);
	buf[len] = 0;
	memset(out, 0, sizeof *out);
	out->type = ATTR_IP;
	/* IPv4 keeps its 4-byte form, as proxies send it (equality treats
	 * it as equal to the IPv4-mapped IPv6 form, like Go's net.IP). */
	if (inet_pton(AF_INET, buf, out->ip) == 1) {
		out->len = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, out->ip) == 1) {
		out->len = 16;
		return 0;
	}
	return EXPR_E_VALUE;
}

/* RFC 1035 host names, with '_' allowed as in SRV-style labels and an
 * optional trailing dot. */
bool expr_valid_dns(const char *s, size_t len)
{
	if (len && s[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	size_t lab = 0;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? s[i] : '.';
		if (c == '.') {
			if (lab == 0 || lab > 63 || s[i - 1] == '-' ||
			    s[i - lab] == '-')
				return false;
			lab = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
		lab++;
	}
	return true;
}

/* Only an address, no display name (Mixer required the parsed address to
 * be the whole string): local@domain, no spaces or controls. */
bool expr_valid_email(const char *s, size_t len)
{
	const char *at = memchr(s, '@', len);
	if (!at || at == s || at == s + len - 1)
		return false;
	if (memchr(at + 1, '@', (size_t)(s + len - at - 1)))
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= ' ' || s[i] == '<' || s[i] == '>' ||
		    s[i] == 0x7f)
			return false;
	return expr_valid_dns(at + 1, (size_t)(s + len - at - 1));
}

/* Go's url.Parse accepts nearly anything; it rejects controls, and Mixer
 * rejected the empty string. */
bool expr_valid_uri(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < ' ' || s[i] == 0x7f || s[i] == ' ')
			return false;
	return true;
}

/* ---- scratch ---------------------------------------------------------------- */

static char *arena_alloc(struct expr_scratch *s, size_t n)
{
	if (s->arena_cap - s->arena_used < n)
		return NULL;
	char *r = s->arena + s->arena_used;
	s->arena_used += n;
	return r;
}

struct expr_scratch *expr_scratch_create(const struct expr_program *p,
					 size_t arena_bytes)
{
	struct expr_scratch *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->arena_cap = arena_bytes ? arena_bytes : EXPR_SCRATCH_ARENA_DEFAULT;
	s->arena = malloc(s->arena_cap);
	s->gen = 1; /* memo entries start at gen 0: stale */
	if (!s->arena || (p && expr_scratch_reserve(s, p))) {
		expr_scratch_destroy(s);
		return NULL;
	}
	return s;
}

int expr_scratch_reserve(struct expr_scratch *s, const struct expr_program *p)
{
	uint32_t need = expr_count(p);
	if (need <= s->cap)
		return 0;
	struct expr_memo *m = realloc(s->memo, need * sizeof *m);
	if (!m)
		return -ENOMEM;
	memset(m + s->cap, 0, (need - s->cap) * sizeof *m);
	s->memo = m;
	s->cap = need;
	return 0;
}

void expr_scratch_destroy(struct expr_scratch *s)
{
	if (!s)
		return;
	free(s->memo);
	free(s->arena);
	free(s);
}

void expr_scratch_wrap_(struct expr_scratch *s)
{
	/* After 2^32 records a stale entry could look current: clear. */
	memset(s->memo, 0, s->cap * sizeof *s->memo);
	s->gen = 1;
}

/* ---- evaluation ------------------------------------------------------------- */

static inline int load(const struct enode *e, const struct attr_table *t,
		       struct attr_value *out)
{
	if (!attr_table_has(t, e->a))
		return EXPR_E_ABSENT;
	const struct attr_value *v = &t->v[e->a];
	if (__builtin_expect(!type_ok(e->type, v->type), 0))
		return EXPR_E_TYPE;
	*out = *v;
	return 0;
}

/* OP_OR with NF_LOADS_K or NF_MAPKEY_K: fails only on a mistyped value,
 * like the general path. */
static inline __attribute__((always_inline)) int
eval_or_fast(const struct expr_program *p,
				const struct enode *e,
				const struct attr_table *t,
				struct attr_value *out)
{
	const uint32_t *ops = p->args + e->a;
	uint32_t last = e->n - 1;
	if (e->flags & NF_LOADS_K) {
		for (uint32_t i = 0; i < last; i++) {
			const struct enode *o = &p->nodes[ops[i]];
			if (attr_table_has(t, o->a)) {
				const struct attr_value *v = &t->v[o->a];
				if (__builtin_expect(!type_ok(o->type, v->type),
						     0))
					return EXPR_E_TYPE;
				*out = *v;
				return 0;
			}
		}
	} else {
		const struct enode *ix = &p->nodes[ops[0]];
		const struct enode *m = &p->nodes[ix->a];
		if (attr_table_has(t, m->a)) {
			if (t->v[m->a].type != ATTR_STRING_MAP)
				return EXPR_E_TYPE;
			if (map_find(&t->v[m->a], ix->k.s, ix->k.len, out))
				return 0;
		}
	}
	*out = p->nodes[ops[last]].k;
	return 0;
}

static bool has_prefix(const struct attr_value *s, const char *p, uint32_t n)
{
	return s->len >= n && (n == 0 || memcmp(s->s, p, n) == 0);
}

static bool has_suffix(const struct attr_value *s, const char *p, uint32_t n)
{
	return s->len >= n && (n == 0 || memcmp(s->s + s->len - n, p, n) == 0);
}

/* Whole-struct stores: the memo then copies *out with wide loads, and a
 * wide load of bytes written by several narrow stores cannot be
 * store-forwarded (a stall per evaluation). */
static inline void set_bool(struct attr_value *out, bool b)
{
	*out = (struct attr_value){.type = ATTR_BOOL, .b = b};
}

static inline void set_int(struct attr_value *out, enum attr_type t, int64_t i)
{
	*out = (struct attr_value){.type = (uint8_t)t, .i = i};
}

#define EV(ni, v)                                                   \
	do {                                                        \
		int rc_ = expr_eval_node(p, (ni), t, s, (v));       \
		if (rc_)                                            \
			return rc_;                                 \
	} while (0)

/* Operands that are leaves or fast `|` chains are evaluated in the
 * caller's frame: the seed's conditionals and matches are two or three
 * levels of these, and a recursive call costs more than the work. */
static inline __attribute__((always_inline)) int
eval_child(const struct expr_program *p, uint32_t ni,
	   const struct attr_table *t, struct expr_scratch *s,
	   struct attr_value *out)
{
	const struct enode *c = &p->nodes[ni];
	if (c->op == OP_CONST) {
		*out = c->k;
		return 0;
	}
	if (c->op == OP_LOAD)
		return load(c, t, out);
	if (c->op == OP_OR && (c->flags & (NF_LOADS_K | NF_MAPKEY_K)))
		return eval_or_fast(p, c, t, out);
	return expr_eval_node(p, ni, t, s, out);
}

#define EVC(ni, v)                                                  \
	do {                                                        \
		int rc_ = eval_child(p, (ni), t, s, (v));           \
		if (rc_)                                            \
			return rc_;                                 \
	} while (0)

/*
 * The operators the seed's hot expressions never use, out of line: their
 * locals (a regex subject buffer) would otherwise bloat the frame of every
 * recursive call of expr_eval_node().
 */
static __attribute__((noinline)) int eval_cold(const struct expr_program *p,
					       const struct enode *e,
					       const struct attr_table *t,
					       struct expr_scratch *s,
					       struct attr_value *out)
{
	struct attr_value x, y;

	switch ((enum expr_op)e->op) {
	case OP_ADD:
		EV(e->a, &x);
		EV(e->b, &y);
		if (e->type == ATTR_INT64) {
			set_int(out, ATTR_INT64,
				(int64_t)((uint64_t)x.i + (uint64_t)y.i));
		} else if (e->type == ATTR_DOUBLE) {
			out->type = ATTR_DOUBLE;
			out->len = 0;
			out->d = x.d + y.d;
		} else {
			if ((uint64_t)x.len + y.len > UINT32_MAX)
				return EXPR_E_NOMEM;
			char *b = arena_alloc(s, (size_t)x.len + y.len);
			if (!b)
				return EXPR_E_NOMEM;
			if (x.len)
				memcpy(b, x.s, x.len);
			if (y.len)
				memcpy(b + x.len, y.s, y.len);
			out->type = ATTR_STRING;
			out->len = x.len + y.len;
			out->s = b;
		}
		return 0;
	case OP_IP:
		EV(e->a, &x);
		return expr_conv_ip(x.s, x.len, out);
	case OP_TIMESTAMP: {
		EV(e->a, &x);
		int64_t ns;
		if (attr_parse_timestamp(x.s, x.len, &ns))
			return EXPR_E_VALUE;
		set_int(out, ATTR_TIMESTAMP, ns);
		return 0;
	}
	case OP_DNS:
	case OP_EMAIL:
	case OP_URI: {
		EV(e->a, &x);
		bool ok = e->op == OP_DNS     ? expr_valid_dns(x.s, x.len)
			  : e->op == OP_EMAIL ? expr_valid_email(x.s, x.len)
					      : expr_valid_uri(x.s, x.len);
		if (!ok)
			return EXPR_E_VALUE;
		*out = x;
		out->type = e->type;
		return 0;
	}
	case OP_MATCH:
		EV(e->a, &x);
		EV(e->b, &y);
		/* Mixer's ExternMatch: a trailing * wins over a leading one */
		if (y.len && y.s[y.len - 1] == '*')
			set_bool(out, has_prefix(&x, y.s, y.len - 1));
		else if (y.len && y.s[0] == '*')
			set_bool(out, has_suffix(&x, y.s + 1, y.len - 1));
		else
			set_bool(out, str_eq(&x, y.s, y.len));
		return 0;
	case OP_MATCH_K:
		EV(e->a, &x);
		set_bool(out, e->aux == MATCH_PREFIX ? has_prefix(&x, e->k.s, e->k.len)
			      : e->aux == MATCH_SUFFIX
				      ? has_suffix(&x, e->k.s, e->k.len)
				      : str_eq(&x, e->k.s, e->k.len));
		return 0;
	case OP_MATCHES: {
		EV(e->a, &x);
		/* REG_STARTEND alone would match the counted string in place,
		 * but sanitizers' regexec interceptors strlen() the subject:
		 * NUL-terminate a copy (on the stack when short). */
		char sbuf[256], *subj = sbuf;
		if (x.len >= sizeof sbuf && !(subj = arena_alloc(s, x.len + 1)))
			return EXPR_E_NOMEM;
		if (x.len)
			memcpy(subj, x.s, x.len);
		subj[x.len] = 0;
		regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)x.len};
		int rc = regexec(p->regexes[e->c], subj, 1, &m, REG_STARTEND);
		if (rc != 0 && rc != REG_NOMATCH)
			return EXPR_E_REGEX;
		set_bool(out, rc == 0);
		return 0;
	}
	case OP_STARTS:
	case OP_ENDS:
		EV(e->a, &x);
		EV(e->b, &y);
		set_bool(out, e->op == OP_STARTS ? has_prefix(&x, y.s, y.len)
						 : has_suffix(&x, y.s, y.len));
		return 0;
	case OP_LOWER: {
		EV(e->a, &x);
		char *b = arena_alloc(s, x.len);
		if (!b && x.len)
			return EXPR_E_NOMEM;
		for (uint32_t i = 0; i < x.len; i++) {
			char ch = x.s[i];
			b[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
		}
		out->type = ATTR_STRING;
		out->len = x.len;
		out->s = x.len ? b : "";
		return 0;
	}
	case OP_SIZE:
		EV(e->a, &x);
		set_int(out, ATTR_INT64,
			x.type == ATTR_STRING_MAP ? (int64_t)attr_map_count(&x)
						  : (int64_t)x.len);
		return 0;
	default:
		break;
	}
	return EXPR_E_TYPE;
}

int expr_eval_node(const struct expr_program *p, uint32_t ni,
		   const struct attr_table *t, struct expr_scratch *s,
		   struct attr_value *out)
{
	const struct enode *e = &p->nodes[ni];
	struct attr_value x, y;

	switch ((enum expr_op)e->op) {
	case OP_CONST:
		*out = e->k;
		return 0;
	case OP_LOAD:
		return load(e, t, out);
	case OP_OR: {
		if (e->flags & (NF_LOADS_K | NF_MAPKEY_K))
			return eval_or_fast(p, e, t, out);
		const uint32_t *ops = p->args + e->a;
		uint32_t last = e->n - 1;
		for (uint32_t i = 0; i < last; i++) {
			const struct enode *o = &p->nodes[ops[i]];
			int rc;
			if (o->op == OP_LOAD) /* the common case, inline */
				rc = load(o, t, out);
			else
				rc = expr_eval_node(p, ops[i], t, s, out);
			/* As Mixer: only an attribute, a map lookup or another
			 * `|` falls through; a function, an operator or
			 * conditional() over something absent fails. */
			if (rc != EXPR_E_ABSENT ||
			    (o->op != OP_LOAD && o->op != OP_INDEX &&
			     o->op != OP_OR))
				return rc;
		}
		const struct enode *o = &p->nodes[ops[last]];
		if (o->op == OP_CONST) {
			*out = o->k;
			return 0;
		}
		return expr_eval_node(p, ops[last], t, s, out);
	}
	case OP_INDEX: {
		EVC(e->a, &x);
		const char *key = e->k.s;
		uint32_t klen = e->k.len;
		if (e->b != NO_NODE) {
			EVC(e->b, &y);
			key = y.s;
			klen = y.len;
		}
		if (map_find(&x, key, klen, out))
			return 0;
		if (e->flags & NF_TOLERANT)
			return EXPR_E_ABSENT;
		*out = (struct attr_value){.type = ATTR_STRING, .s = ""};
		return 0;
	}
	case OP_NOT:
		EVC(e->a, &x);
		set_bool(out, !x.b);
		return 0;
	case OP_NEG:
		EVC(e->a, &x);
		if (e->type == ATTR_DOUBLE) {
			out->type = ATTR_DOUBLE;
			out->len = 0;
			out->d = -x.d;
		} else {
			/* wraps like Go instead of overflowing into UB */
			set_int(out, (enum attr_type)e->type,
				(int64_t)(0 - (uint64_t)x.i));
		}
		return 0;
	case OP_AND:
		EVC(e->a, &x);
		if (!x.b) {
			set_bool(out, false);
			return 0;
		}
		EVC(e->b, out);
		return 0;
	case OP_LOR:
		EVC(e->a, &x);
		if (x.b) {
			set_bool(out, true);
			return 0;
		}
		EVC(e->b, out);
		return 0;
	case OP_EQ:
	case OP_NE:
		EVC(e->a, &x);
		EVC(e->b, &y);
		set_bool(out, values_equal(&x, &y) == (e->op == OP_EQ));
		return 0;
	case OP_EQ_K:
	case OP_NE_K:
		EVC(e->a, &x);
		set_bool(out, values_equal(&x, &e->k) == (e->op == OP_EQ_K));
		return 0;
	case OP_LT:
	case OP_LE:
	case OP_GT:
	case OP_GE: {
		EVC(e->a, &x);
		EVC(e->b, &y);
		int cmp;
		if (e->aux == ATTR_DOUBLE) {
			/* NaN compares false every way, as in Go */
			if (x.d != x.d || y.d != y.d) {
				set_bool(out, false);
				return 0;
			}
			cmp = (x.d > y.d) - (x.d < y.d);
		} else if (attr_type_is_string((enum attr_type)e->aux)) {
			/* bytes, then length: Go's string order */
			uint32_t n = x.len < y.len ? x.len : y.len;
			cmp = n ? memcmp(x.s, y.s, n) : 0;
			if (!cmp)
				cmp = (x.len > y.len) - (x.len < y.len);
		} else {
			cmp = (x.i > y.i) - (x.i < y.i);
		}
		bool r = e->op == OP_LT	  ? cmp < 0
			 : e->op == OP_LE ? cmp <= 0
			 : e->op == OP_GT ? cmp > 0
					  : cmp >= 0;
		set_bool(out, r);
		return 0;
	}
	case OP_COND:
		EVC(e->a, &x);
		if (__builtin_expect(e->flags & NF_STRICT, 0)) {
			EVC(e->b, &y);
			EVC(e->c, out);
			if (x.b)
				*out = y;
			return 0;
		}
		return eval_child(p, x.b ? e->b : e->c, t, s, out);
	case OP_COUNT_:
		break;
	default:
		return eval_cold(p, e, t, s, out);
	}
	return EXPR_E_TYPE;
}

/* Evaluate root @id into @v; returns 0 or a positive code, counted. */
static inline __attribute__((always_inline)) int
eval_root(const struct expr_program *p, uint32_t id, const struct attr_table *t,
	  struct expr_scratch *s, struct attr_value *v)
{
	const struct expr_entry *x = &p->exprs[id];
	int rc = 0;
	switch (x->shape) {
	case SHAPE_CONST:
		*v = x->k;
		return 0;
	case SHAPE_LOAD_K:
		if (!attr_table_has(t, x->slot)) {
			*v = x->k;
			return 0;
		}
		if (__builtin_expect(type_ok(x->decl, t->v[x->slot].type), 1)) {
			*v = t->v[x->slot];
			return 0;
		}
		rc = EXPR_E_TYPE;
		break;
	case SHAPE_MAPKEY_K:
		if (!attr_table_has(t, x->slot) ||
		    (t->v[x->slot].type == ATTR_STRING_MAP &&
		     !map_find(&t->v[x->slot], x->key, x->klen, v))) {
			*v = x->k;
			return 0;
		}
		if (t->v[x->slot].type == ATTR_STRING_MAP)
			return 0;
		rc = EXPR_E_TYPE;
		break;
	default:
		rc = expr_eval_node(p, x->root, t, s, v);
		break;
	}
	if (__builtin_expect(rc != 0, 0)) {
		s->stats.fail[rc]++;
		*v = (struct attr_value){.type = ATTR_NONE};
	}
	return rc;
}

int expr_eval_root(const struct expr_program *p, uint32_t id,
		   const struct attr_table *t, struct expr_scratch *s,
		   struct attr_value *out)
{
	return eval_root(p, id, t, s, out);
}

int expr_eval_uncached(const struct expr_program *p, uint32_t id,
		       const struct attr_table *t, struct expr_scratch *s,
		       struct attr_value *out)
{
	if (id >= p->n_exprs) /* a caller's bug; never index past the end */
		return -EXPR_E_TYPE;
	s->stats.evals++;
	if (id >= s->cap)
		return -eval_root(p, id, t, s, out);
	/* evaluate straight into the memo, then copy out whole */
	struct expr_memo *m = &s->memo[id];
	int rc = eval_root(p, id, t, s, &m->v);
	m->gen = s->gen;
	m->rc = -rc;
	*out = m->v;
	return -rc;
}

unsigned expr_eval_batch(const struct expr_program *p, const uint32_t *ids,
			 size_t n, const struct attr_table *t,
			 struct expr_scratch *s)
{
	unsigned failed = 0;
	uint64_t evals = 0;
	uint32_t gen = s->gen;
	/* one bound for both arrays, so the loop checks a single compare */
	uint32_t lim = p->n_exprs < s->cap ? p->n_exprs : s->cap;
	for (size_t i = 0; i < n; i++) {
		uint32_t id = ids[i];
		if (__builtin_expect(id >= lim, 0)) {
			failed++;
			continue;
		}
		struct expr_memo *m = &s->memo[id];
		if (m->gen == gen) {
			failed += m->rc != 0;
			continue;
		}
		int rc = eval_root(p, id, t, s, &m->v);
		evals++;
		m->gen = gen;
		m->rc = -rc;
		failed += rc != 0;
	}
	s->stats.evals += evals; /* once, not a store per expression */
	return failed;
}
