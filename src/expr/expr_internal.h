/*
 * expr_internal.h -- the compiled form shared by the compiler
 * (expr_compile.c), the parser (expr_parse.c) and the evaluator
 * (expr_eval.c). Nothing outside src/expr includes this.
 */
#ifndef MIXD_EXPR_INTERNAL_H
#define MIXD_EXPR_INTERNAL_H

#include <regex.h>
#include <string.h>

#include "expr/expr.h"

/* ---- compiled nodes ----------------------------------------------------- */

/*
 * Evaluated by one switch (expr_eval.c): no function pointer per node, so
 * the compiler can lay the hot cases out as a jump table and inline the
 * leaf reads.
 */
enum expr_op {
	OP_CONST,     /* k */
	OP_LOAD,      /* a = slot; type = declared type */
	OP_OR,        /* args[a .. a+n): first present operand */
	OP_INDEX,     /* a = map; b = key node, or NO_NODE and key in k */
	OP_NOT,       /* a */
	OP_NEG,       /* a */
	OP_AND,       /* a && b */
	OP_LOR,       /* a || b */
	OP_EQ,        /* a == b */
	OP_NE,        /* a != b */
	OP_EQ_K,      /* a == k */
	OP_NE_K,      /* a != k */
	OP_LT,        /* a < b, operand type in aux */
	OP_LE,
	OP_GT,
	OP_GE,
	OP_ADD,       /* a + b, result type in type */
	OP_COND,      /* a ? b : c */
	OP_IP,        /* ip(a) */
	OP_TIMESTAMP, /* timestamp(a) */
	OP_DNS,       /* dnsName(a) */
	OP_EMAIL,     /* email(a) */
	OP_URI,       /* uri(a) */
	OP_MATCH,     /* match(a, b) */
	OP_MATCH_K,   /* match(a, k) with aux = MATCH_* */
	OP_MATCHES,   /* regex c matches a */
	OP_STARTS,    /* a.startsWith(b) */
	OP_ENDS,      /* a.endsWith(b) */
	OP_LOWER,     /* toLower(a) */
	OP_SIZE,      /* size(a) */
	OP_COUNT_
};

#define NO_NODE UINT32_MAX

/* OP_INDEX flag: a missing key is absence (the index is a `|` operand
 * that may fall through) rather than "". */
#define NF_TOLERANT 1
/* OP_OR shapes the evaluator runs without recursion (the seed's
 * dimensions): every operand but the last is an OP_LOAD and the last an
 * OP_CONST; or exactly m["k"] | const with m an OP_LOAD. */
#define NF_LOADS_K 2
#define NF_MAPKEY_K 4
/* OP_COND flag: conditionalString(), which Mixer runs as an ordinary
 * function: both branches are evaluated, and one that fails fails it. */
#define NF_STRICT 8

/* OP_MATCH_K modes, decided once from the constant pattern */
enum { MATCH_EXACT, MATCH_PREFIX, MATCH_SUFFIX };

struct enode {
	uint8_t op;    /* enum expr_op */
	uint8_t type;  /* result type (OP_LOAD: declared type) */
	uint8_t flags; /* NF_* */
	uint8_t aux;   /* operand type (ordering), match mode */
	uint32_t n;    /* operands of OP_OR */
	uint32_t a, b, c;
	struct attr_value k;
};

/* Root shapes evaluated straight from the entry, without touching the
 * node array: the seed's dimensions are nearly all `x | "default"` or
 * `m["k"] | "default"`, and at ~20 of them per record every load and
 * branch counts. */
enum expr_shape {
	SHAPE_NODE,     /* general: expr_eval_node(root) */
	SHAPE_CONST,    /* k */
	SHAPE_LOAD_K,   /* slot | k */
	SHAPE_MAPKEY_K, /* slot[key] | k */
};

/* One distinct expression of a program. */
struct expr_entry {
	uint8_t shape; /* enum expr_shape */
	uint8_t type;
	uint8_t decl;  /* declared type of slot */
	uint16_t slot;
	uint32_t root; /* node index */
	uint32_t klen;
	const char *key; /* in the program's pool */
	struct attr_value k;
	uint32_t hash; /* of text */
	char *text;    /* canonical text, the dedup key */
};

/* Constant strings live in chunks that never move, so attr_values may
 * point into them while the node array is still growing. */
struct pool_chunk {
	struct pool_chunk *next;
	size_t used, cap;
	char data[];
};

struct expr_program {
	const struct attr_vocab *vocab;
	struct enode *nodes;
	uint32_t n_nodes, cap_nodes;
	uint32_t *args;
	uint32_t n_args, cap_args;
	struct expr_entry *exprs;
	uint32_t n_exprs, cap_exprs;
	regex_t **regexes;
	uint32_t n_regexes, cap_regexes;
	struct pool_chunk *pool;
	struct expr_scratch *fold; /* compile-time scratch for folding */
};

/* Evaluate node @ni. Returns 0 or a positive EXPR_E_* code. */
int expr_eval_node(const struct expr_program *p, uint32_t ni,
		   const struct attr_table *t, struct expr_scratch *s,
		   struct attr_value *out);

/* ---- helpers shared by the evaluator and the plan (expr_plan.c) -------- */

/* mixd takes a plain STRING wherever a string-like type is declared. */
static inline bool type_ok(unsigned decl, unsigned got)
{
	return decl == got || (attr_type_is_string((enum attr_type)decl) &&
			       attr_type_is_string((enum attr_type)got));
}

/* Label values and keys are short: a byte loop beats a call to memcmp. */
static inline bool bytes_eq(const char *a, const char *b, uint32_t n)
{
	/* 4..16 bytes (most keys and label values): two overlapping word
	 * compares, no loop and no call */
	if (n >= 8) {
		if (n > 16)
			return memcmp(a, b, n) == 0;
		uint64_t a0, b0, a1, b1;
		memcpy(&a0, a, 8);
		memcpy(&b0, b, 8);
		memcpy(&a1, a + n - 8, 8);
		memcpy(&b1, b + n - 8, 8);
		return ((a0 ^ b0) | (a1 ^ b1)) == 0;
	}
	if (n >= 4) {
		uint32_t a0, b0, a1, b1;
		memcpy(&a0, a, 4);
		memcpy(&b0, b, 4);
		memcpy(&a1, a + n - 4, 4);
		memcpy(&b1, b + n - 4, 4);
		return ((a0 ^ b0) | (a1 ^ b1)) == 0;
	}
	for (uint32_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

static inline bool str_eq(const struct attr_value *a, const char *s,
			  uint32_t len)
{
	return a->len == len && bytes_eq(a->s, s, len);
}

/* attr_map_get(), inlined for the m["k"] dimensions. */
static inline __attribute__((always_inline)) bool
map_find(const struct attr_value *m, const char *key, uint32_t klen,
	 struct attr_value *out)
{
	if (m->len < 4)
		return false;
	const uint8_t *q = m->map, *end = q + m->len;
	uint32_t n = attr_get_u32le(q);
	q += 4;
	while (n--) {
		const char *k, *v;
		uint32_t kl, vl;
		if (!attr_map_entry(&q, end, &k, &kl, &v, &vl))
			return false;
		if (kl == klen && bytes_eq(k, key, klen)) {
			*out = (struct attr_value){
				.type = ATTR_STRING, .len = vl, .s = v};
			return true;
		}
	}
	return false;
}

static inline bool values_equal(const struct attr_value *a,
				const struct attr_value *b)
{
	if (attr_type_is_string((enum attr_type)a->type) &&
	    attr_type_is_string((enum attr_type)b->type))
		return str_eq(a, b->s, b->len);
	return attr_value_equal(a, b);
}

/* Evaluate expression @id (< p->n_exprs) without the memo: 0 or a positive
 * EXPR_E_* code, counted in s->stats.fail. The plan's fallback. */
int expr_eval_root(const struct expr_program *p, uint32_t id,
		   const struct attr_table *t, struct expr_scratch *s,
		   struct attr_value *out);

/* Bump-allocate @n bytes, 8-aligned, from @s's arena; NULL when full. */
static inline void *expr_arena_take(struct expr_scratch *s, size_t n)
{
	size_t at = (s->arena_used + 7) & ~(size_t)7;
	if (at > s->arena_cap || s->arena_cap - at < n)
		return NULL;
	s->arena_used = at + n;
	return s->arena + at;
}

/* The conversions shared by the evaluator and the constant folder: 0 or
 * EXPR_E_VALUE. */
int expr_conv_ip(const char *s, size_t len, struct attr_value *out);
bool expr_valid_dns(const char *s, size_t len);
bool expr_valid_email(const char *s, size_t len);
bool expr_valid_uri(const char *s, size_t len);

/* The empty string map emptyStringMap() returns. */
extern const struct attr_value expr_empty_map;

/* ---- syntax tree (compile time only) ---------------------------------- */

enum ast_kind {
	AK_CONST,
	AK_NAME,
	AK_INDEX, /* args[0][args[1]] */
	AK_UNARY, /* op args[0] */
	AK_BINARY,
	AK_OR,   /* args[0] | ... | args[n-1] */
	AK_CALL, /* fn(args...), a method's receiver is args[0] */
};

/* Operator tokens, also used as AST ops. */
enum tok {
	T_EOF,
	T_IDENT,
	T_INT,
	T_FLOAT,
	T_STRING,
	T_LPAREN,
	T_RPAREN,
	T_LBRACK,
	T_RBRACK,
	T_COMMA,
	T_DOT,
	T_NOT,
	T_MINUS,
	T_PLUS,
	T_STAR,
	T_SLASH,
	T_PERCENT,
	T_PIPE,
	T_OROR,
	T_ANDAND,
	T_EQ,
	T_NE,
	T_LT,
	T_LE,
	T_GT,
	T_GE,
};

struct ast {
	uint8_t kind;   /* enum ast_kind */
	uint8_t op;     /* enum tok for unary/binary, function index for call */
	uint8_t type;   /* set by the checker */
	bool dur_str;   /* string literal that is also a duration */
	bool method;    /* call written as receiver.fn(...) */
	uint16_t depth; /* height of the subtree */
	uint32_t off;   /* byte offset in the text */
	int slot;       /* AK_NAME */
	struct attr_value k; /* AK_CONST value */
	const char *str;     /* name, function name, or a dur_str's text */
	uint32_t slen;
	uint32_t nargs;
	uint32_t cap; /* AK_OR: room in args */
	struct ast **args;
};

/* Compile-time allocations: freed together when compile returns. */
struct ast_arena {
	struct pool_chunk *chunks;
};

struct parser {
	const char *src;
	size_t len;
	size_t pos;
	/* current token */
	enum tok tok;
	uint32_t tok_off;
	const char *tok_s; /* ident text, or unquoted string */
	uint32_t tok_len;
	int64_t tok_i;
	double tok_d;
	struct expr_program *prog; /* string constants go to its pool */
	struct ast_arena *arena;
	struct expr_error *err;
	int nesting;
};

void *expr_arena_alloc(struct ast_arena *a, size_t n);
void expr_arena_free(struct ast_arena *a);
char *expr_pool_alloc(struct expr_program *p, size_t n);

/* Parse the whole text into *out. 0, or -1 with p->err filled. */
int expr_parse(struct parser *ps, struct ast **out);

/* Fill @err with "<what> in "<text>"" at @off. Always returns -1. */
int expr_set_error(struct expr_error *err, const char *text, size_t len,
		   uint32_t off, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

#endif /* MIXD_EXPR_INTERNAL_H */
