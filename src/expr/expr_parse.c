/*
 * expr_parse.c -- lexer and precedence-climbing parser for CEXL (Go
 * expression syntax) into a syntax tree that expr_compile.c type-checks.
 */
#include "expr/expr_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- allocation ---------------------------------------------------------- */

static struct pool_chunk *chunk_new(size_t need)
{
	size_t cap = need > 4000 ? need : 4000;
	struct pool_chunk *c = malloc(sizeof *c + cap);
	if (!c)
		return NULL;
	c->next = NULL;
	c->used = 0;
	c->cap = cap;
	return c;
}

static void *chunk_alloc(struct pool_chunk **head, size_t n)
{
	n = (n + 7) & ~(size_t)7;
	struct pool_chunk *c = *head;
	if (!c || c->cap - c->used < n) {
		struct pool_chunk *nc = chunk_new(n);
		if (!nc)
			return NULL;
		nc->next = c;
		*head = nc;
		c = nc;
	}
	void *r = c->data + c->used;
	c->used += n;
	return r;
}

void *expr_arena_alloc(struct ast_arena *a, size_t n)
{
	void *r = chunk_alloc(&a->chunks, n);
	if (r)
		memset(r, 0, n);
	return r;
}

void expr_arena_free(struct ast_arena *a)
{
	while (a->chunks) {
		struct pool_chunk *n = a->chunks->next;
		free(a->chunks);
		a->chunks = n;
	}
}

char *expr_pool_alloc(struct expr_program *p, size_t n)
{
	return chunk_alloc(&p->pool, n ? n : 1);
}

int expr_set_error(struct expr_error *err, const char *text, size_t len,
		   uint32_t off, const char *fmt, ...)
{
	if (!err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n < sizeof err->msg) {
		/* The text may hold any bytes (fuzzing); %.*s stops at a NUL,
		 * which is good enough for a message. */
		snprintf(err->msg + n, sizeof err->msg - (size_t)n,
			 " in \"%.*s\"", (int)(len > 400 ? 400 : len), text);
	}
	err->offset = off;
	return -1;
}

/* ---- lexer ---------------------------------------------------------------- */

static int lex_error(struct parser *ps, uint32_t off, const char *what)
{
	return expr_set_error(ps->err, ps->src, ps->len, off, "syntax error: %s",
			      what);
}

static bool is_ident_start(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	       c == '$';
}

static bool is_ident_char(int c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9');
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static size_t utf8_put(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | cp >> 12);
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | cp >> 18);
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Bytes of the literal starting at @ps's position, its quotes included,
 * up to the end of the text if it has no closing quote: the most its
 * unescaped value takes (an escape is never shorter than what it means).
 * The pool holds literals for the program's life: each takes its own
 * length, not the rest of the text. */
static size_t literal_span(const struct parser *ps)
{
	const char *s = ps->src;
	size_t i = ps->pos + 1;
	while (i < ps->len && s[i] != '"' && s[i] != '\n')
		i += s[i] == '\\' ? 2 : 1;
	return (i < ps->len ? i + 1 : ps->len) - ps->pos;
}

/* A Go interpreted string literal, unescaped into the program's pool. */
static int lex_string(struct parser *ps)
{
	const char *s = ps->src;
	size_t i = ps->pos + 1;
	char *o = expr_pool_alloc(ps->prog, literal_span(ps));
	if (!o)
		return lex_error(ps, ps->tok_off, "out of memory");
	size_t n = 0;
	for (;;) {
		if (i >= ps->len || s[i] == '\n')
			return lex_error(ps, ps->tok_off,
					 "string literal not terminated");
		char c = s[i];
		if (c == '"') {
			i++;
			break;
		}
		if (c != '\\') {
			o[n++] = c;
			i++;
			continue;
		}
		uint32_t eoff = (uint32_t)i;
		if (++i >= ps->len)
			return lex_error(ps, eoff, "escape sequence not terminated");
		c = s[i++];
		int digits = 0, base = 16;
		uint32_t max = 255;
		switch (c) {
		case 'a': o[n++] = '\a'; continue;
		case 'b': o[n++] = '\b'; continue;
		case 'f': o[n++] = '\f'; continue;
		case 'n': o[n++] = '\n'; continue;
		case 'r': o[n++] = '\r'; continue;
		case 't': o[n++] = '\t'; continue;
		case 'v': o[n++] = '\v'; continue;
		case '\\': o[n++] = '\\'; continue;
		case '"': o[n++] = '"'; continue;
		case 'x': digits = 2; break;
		case 'u': digits = 4; max = 0x10FFFF; break;
		case 'U': digits = 8; max = 0x10FFFF; break;
		default:
			if (c >= '0' && c <= '7') {
				digits = 3;
				base = 8;
				i--;
				break;
			}
			return lex_error(ps, eoff, "unknown escape sequence");
		}
		uint32_t v = 0;
		for (int d = 0; d < digits; d++) {
			int h = i < ps->len ? hexval(s[i]) : -1;
			if (h < 0 || h >= base)
				return lex_error(ps, eoff,
						 "invalid escape sequence");
			v = v * (uint32_t)base + (uint32_t)h;
			i++;
		}
		if (v > max || (c != 'x' && !(c >= '0' && c <= '7') &&
				v >= 0xD800 && v < 0xE000))
			return lex_error(ps, eoff,
					 "escape sequence is invalid Unicode "
					 "code point");
		if (c == 'u' || c == 'U')
			n += utf8_put(o + n, v);
		else
			o[n++] = (char)v; /* \x and octal are raw bytes */
	}
	ps->pos = i;
	ps->tok = T_STRING;
	ps->tok_s = o;
	ps->tok_len = (uint32_t)n;
	return 0;
}

static int lex_raw_string(struct parser *ps)
{
	size_t i = ps->pos + 1;
	const char *end = memchr(ps->src + i, '`', ps->len - i);
	char *o = expr_pool_alloc(ps->prog, end ? (size_t)(end - ps->src) - i
						: ps->len - i);
	if (!o)
		return lex_error(ps, ps->tok_off, "out of memory");
	size_t n = 0;
	for (;; i++) {
		if (i >= ps->len)
			return lex_error(ps, ps->tok_off,
					 "raw string literal not terminated");
		if (ps->src[i] == '`')
			break;
		if (ps->src[i] != '\r') /* Go drops CRs in raw strings */
			o[n++] = ps->src[i];
	}
	ps->pos = i + 1;
	ps->tok = T_STRING;
	ps->tok_s = o;
	ps->tok_len = (uint32_t)n;
	return 0;
}

static int lex_number(struct parser *ps)
{
	const char *s = ps->src;
	size_t i = ps->pos;
	bool is_float = false, hex = false;
	if (s[i] == '0' && i + 1 < ps->len && (s[i + 1] == 'x' || s[i + 1] == 'X'))
		hex = true;
	while (i < ps->len) {
		char c = s[i];
		if (c == '.') {
			is_float = true;
		} else if (!hex && (c == 'e' || c == 'E')) {
			is_float = true;
			if (i + 1 < ps->len && (s[i + 1] == '+' || s[i + 1] == '-'))
				i++;
		} else if (!is_ident_char(c)) {
			break;
		}
		i++;
	}
	size_t n = i - ps->pos;
	char buf[64];
	if (n >= sizeof buf)
		return lex_error(ps, ps->tok_off, "number literal too long");
	memcpy(buf, s + ps->pos, n);
	buf[n] = 0;
	char *end;
	if (is_float) {
		if (hex || strchr(buf, '_'))
			return lex_error(ps, ps->tok_off,
					 "malformed float literal");
		errno = 0;
		double d = strtod(buf, &end);
		if (*end || (errno == ERANGE && isinf(d)))
			return lex_error(ps, ps->tok_off,
					 "malformed float literal");
		ps->tok = T_FLOAT;
		ps->tok_d = d;
	} else {
		/* Mixer lexes with Go's scanner and then reads the literal
		 * with strconv.ParseInt(v, 10, 64): decimal digits only, so
		 * 0x1F, 0o17, 0b101 and 1_000 fail, and a leading zero is
		 * just a zero (017 is 17). Go's scanner has already refused
		 * a leading-zero literal with an 8 or 9 in it. */
		uint64_t v = 0;
		bool octal_form = buf[0] == '0' && buf[1];
		for (const char *d = buf; *d; d++) {
			if (*d < '0' || *d > '9' || (octal_form && *d > '7'))
				return lex_error(ps, ps->tok_off,
						 "malformed integer literal "
						 "(decimal digits only)");
			unsigned h = (unsigned)(*d - '0');
			if (v > ((uint64_t)INT64_MAX - h) / 10)
				return lex_error(ps, ps->tok_off,
						 "integer literal out of range");
			v = v * 10 + h;
		}
		ps->tok = T_INT;
		ps->tok_i = (int64_t)v;
	}
	ps->pos = i;
	return 0;
}

/* Past white space and comments, which Mixer's parser (Go's
 * parser.ParseExpr) drops: "// ..." to the end of the line and
 * "/" "* ... *" "/". -1 for a comment never closed. */
static int skip_space(struct parser *ps)
{
	const char *s = ps->src;
	for (;;) {
		while (ps->pos < ps->len &&
		       (s[ps->pos] == ' ' || s[ps->pos] == '\t' ||
			s[ps->pos] == '\n' || s[ps->pos] == '\r'))
			ps->pos++;
		if (ps->pos + 1 >= ps->len || s[ps->pos] != '/' ||
		    (s[ps->pos + 1] != '/' && s[ps->pos + 1] != '*'))
			return 0;
		size_t at = ps->pos;
		if (s[at + 1] == '/') {
			while (ps->pos < ps->len && s[ps->pos] != '\n')
				ps->pos++;
			continue;
		}
		for (ps->pos = at + 2;; ps->pos++) {
			if (ps->pos + 1 >= ps->len)
				return lex_error(ps, (uint32_t)at,
						 "comment not terminated");
			if (s[ps->pos] == '*' && s[ps->pos + 1] == '/')
				break;
		}
		ps->pos += 2;
	}
}

static int next(struct parser *ps)
{
	const char *s = ps->src;
	int rc = skip_space(ps);
	if (rc)
		return rc;
	ps->tok_off = (uint32_t)ps->pos;
	if (ps->pos >= ps->len) {
		ps->tok = T_EOF;
		return 0;
	}
	char c = s[ps->pos];
	char c2 = ps->pos + 1 < ps->len ? s[ps->pos + 1] : 0;
	if (is_ident_start(c)) {
		/* a.b.c is one token: a dotted attribute name */
		size_t i = ps->pos + 1;
		for (;;) {
			while (i < ps->len && is_ident_char(s[i]))
				i++;
			if (i + 1 < ps->len && s[i] == '.' &&
			    is_ident_start(s[i + 1]))
				i++;
			else
				break;
		}
		ps->tok = T_IDENT;
		ps->tok_s = s + ps->pos;
		ps->tok_len = (uint32_t)(i - ps->pos);
		ps->pos = i;
		return 0;
	}
	if ((c >= '0' && c <= '9') || (c == '.' && c2 >= '0' && c2 <= '9'))
		return lex_number(ps);
	if (c == '"')
		return lex_string(ps);
	if (c == '`')
		return lex_raw_string(ps);
	enum tok t;
	int w = 1;
	switch (c) {
	case '(': t = T_LPAREN; break;
	case ')': t = T_RPAREN; break;
	case '[': t = T_LBRACK; break;
	case ']': t = T_RBRACK; break;
	case ',': t = T_COMMA; break;
	case '.': t = T_DOT; break;
	case '+': t = T_PLUS; break;
	case '-': t = T_MINUS; break;
	case '*': t = T_STAR; break;
	case '/': t = T_SLASH; break;
	case '%': t = T_PERCENT; break;
	case '!':
		t = c2 == '=' ? T_NE : T_NOT;
		w = c2 == '=' ? 2 : 1;
		break;
	case '|':
		t = c2 == '|' ? T_OROR : T_PIPE;
		w = c2 == '|' ? 2 : 1;
		break;
	case '&':
		if (c2 != '&')
			return lex_error(ps, ps->tok_off,
					 "operator & is not supported");
		t = T_ANDAND;
		w = 2;
		break;
	case '=':
		if (c2 != '=')
			return lex_error(ps, ps->tok_off,
					 "assignment is not an expression");
		t = T_EQ;
		w = 2;
		break;
	case '<':
		t = c2 == '=' ? T_LE : T_LT;
		w = c2 == '=' ? 2 : 1;
		break;
	case '>':
		t = c2 == '=' ? T_GE : T_GT;
		w = c2 == '=' ? 2 : 1;
		break;
	case '\'':
		return lex_error(ps, ps->tok_off,
				 "rune literals are not supported");
	default:
		return lex_error(ps, ps->tok_off, "unexpected character");
	}
	ps->tok = t;
	ps->pos += (size_t)w;
	return 0;
}

/* ---- parser --------------------------------------------------------------- */

static int syntax_error(struct parser *ps, const char *what)
{
	return expr_set_error(ps->err, ps->src, ps->len, ps->tok_off,
			      "syntax error: %s", what);
}

static struct ast *node(struct parser *ps, enum ast_kind kind, uint32_t off,
			uint32_t nargs)
{
	struct ast *n = expr_arena_alloc(ps->arena, sizeof *n);
	if (!n)
		return NULL;
	n->kind = (uint8_t)kind;
	n->off = off;
	n->slot = -1;
	n->nargs = nargs;
	n->depth = 1;
	if (nargs) {
		n->args = expr_arena_alloc(ps->arena, nargs * sizeof *n->args);
		if (!n->args)
			return NULL;
	}
	return n;
}

/* Height bookkeeping: the evaluator and checker recurse, so the tree's
 * height, not the parser's recursion, is what must be bounded (a+a+a+...
 * is parsed by a loop but is a deep tree). */
static int set_depth(struct parser *ps, struct ast *n)
{
	unsigned d = 0;
	for (uint32_t i = 0; i < n->nargs; i++)
		if (n->args[i]->depth > d)
			d = n->args[i]->depth;
	n->depth = (uint16_t)(d + 1);
	if (n->depth > EXPR_MAX_DEPTH)
		return expr_set_error(ps->err, ps->src, ps->len, n->off,
				      "expression nested too deeply (limit %d)",
				      EXPR_MAX_DEPTH);
	return 0;
}

/* One level deeper into the parser's own recursion, which every nested
 * operand, argument list and map key passes through: bounded, so that a
 * hostile expression is an error, not a stack overflow (set_depth() bounds
 * the tree, but only once its operands have been parsed). */
static int descend(struct parser *ps)
{
	if (++ps->nesting > EXPR_MAX_DEPTH)
		return syntax_error(ps, "expression nested too deeply");
	return 0;
}

static int nomem(struct parser *ps)
{
	return expr_set_error(ps->err, ps->src, ps->len, ps->tok_off,
			      "out of memory");
}

static int parse_binary(struct parser *ps, int min_prec, struct ast **out);

static int binary_prec(enum tok t)
{
	switch (t) {
	case T_OROR:
		return 1;
	case T_ANDAND:
		return 2;
	case T_EQ:
	case T_NE:
	case T_LT:
	case T_LE:
	case T_GT:
	case T_GE:
		return 3;
	case T_PLUS:
	case T_MINUS:
	case T_PIPE:
		return 4;
	case T_STAR:
	case T_SLASH:
	case T_PERCENT:
		return 5;
	default:
		return 0;
	}
}

/* Arguments after '(' up to ')', appended after @first (a receiver). */
static int parse_call(struct parser *ps, const char *name, uint32_t nlen,
		      uint32_t off, struct ast *recv, struct ast **out)
{
	struct ast *tmp[16];
	uint32_t n = 0;
	if (recv)
		tmp[n++] = recv;
	if (next(ps) || descend(ps))
		return -1;
	if (ps->tok != T_RPAREN) {
		for (;;) {
			if (n == sizeof tmp / sizeof tmp[0])
				return syntax_error(ps, "too many arguments");
			if (parse_binary(ps, 1, &tmp[n]))
				return -1;
			n++;
			if (ps->tok == T_COMMA) {
				if (next(ps))
					return -1;
				continue;
			}
			if (ps->tok != T_RPAREN)
				return syntax_error(ps, "expected ',' or ')'");
			break;
		}
	}
	ps->nesting--;
	if (next(ps))
		return -1;
	struct ast *c = node(ps, AK_CALL, off, n);
	if (!c)
		return nomem(ps);
	if (n)
		memcpy(c->args, tmp, n * sizeof *tmp);
	c->str = name;
	c->slen = nlen;
	c->method = recv != NULL;
	*out = c;
	return set_depth(ps, c);
}

static int parse_primary(struct parser *ps, struct ast **out)
{
	struct ast *n = NULL;
	uint32_t off = ps->tok_off;
	switch (ps->tok) {
	case T_INT:
		n = node(ps, AK_CONST, off, 0);
		if (!n)
			return nomem(ps);
		n->k.type = ATTR_INT64;
		n->k.i = ps->tok_i;
		if (next(ps))
			return -1;
		break;
	case T_FLOAT:
		n = node(ps, AK_CONST, off, 0);
		if (!n)
			return nomem(ps);
		n->k.type = ATTR_DOUBLE;
		n->k.d = ps->tok_d;
		if (next(ps))
			return -1;
		break;
	case T_STRING: {
		n = node(ps, AK_CONST, off, 0);
		if (!n)
			return nomem(ps);
		int64_t ns;
		n->str = ps->tok_s;
		n->slen = ps->tok_len;
		if (attr_parse_duration(ps->tok_s, ps->tok_len, &ns) == 0) {
			n->dur_str = true;
			n->k.type = ATTR_DURATION;
			n->k.i = ns;
		} else {
			n->k.type = ATTR_STRING;
			n->k.s = ps->tok_s;
			n->k.len = ps->tok_len;
		}
		if (next(ps))
			return -1;
		break;
	}
	case T_IDENT: {
		const char *name = ps->tok_s;
		uint32_t nlen = ps->tok_len;
		if (next(ps))
			return -1;
		if (ps->tok == T_LPAREN) {
			/* a.b.fn( is the method fn on attribute a.b */
			const char *dot = memrchr(name, '.', nlen);
			if (!dot) {
				if (parse_call(ps, name, nlen, off, NULL, &n))
					return -1;
				break;
			}
			struct ast *r = node(ps, AK_NAME, off, 0);
			if (!r)
				return nomem(ps);
			r->str = name;
			r->slen = (uint32_t)(dot - name);
			uint32_t moff = off + (uint32_t)(dot + 1 - name);
			if (parse_call(ps, dot + 1,
				       nlen - (uint32_t)(dot + 1 - name), moff,
				       r, &n))
				return -1;
			break;
		}
		/* Mixer lowercases a bare name before this test: True and
		 * FALSE are the constants too (ast/expr.go, process()). */
		if (nlen == 4 && strncasecmp(name, "true", 4) == 0) {
			n = node(ps, AK_CONST, off, 0);
			if (!n)
				return nomem(ps);
			n->k.type = ATTR_BOOL;
			n->k.b = true;
		} else if (nlen == 5 && strncasecmp(name, "false", 5) == 0) {
			n = node(ps, AK_CONST, off, 0);
			if (!n)
				return nomem(ps);
			n->k.type = ATTR_BOOL;
			n->k.b = false;
		} else {
			n = node(ps, AK_NAME, off, 0);
			if (!n)
				return nomem(ps);
			n->str = name;
			n->slen = nlen;
		}
		break;
	}
	case T_LPAREN:
		if (next(ps) || parse_binary(ps, 1, &n))
			return -1;
		if (ps->tok != T_RPAREN)
			return syntax_error(ps, "expected ')'");
		if (next(ps))
			return -1;
		break;
	case T_EOF:
		return syntax_error(ps, "unexpected end of expression");
	default:
		return syntax_error(ps, "expected an operand");
	}

	/* postfix: m[key], x.method(args) */
	for (;;) {
		if (ps->tok == T_LBRACK) {
			uint32_t boff = ps->tok_off;
			struct ast *key;
			if (next(ps) || descend(ps) ||
			    parse_binary(ps, 1, &key))
				return -1;
			ps->nesting--;
			if (ps->tok != T_RBRACK)
				return syntax_error(ps, "expected ']'");
			if (next(ps))
				return -1;
			struct ast *ix = node(ps, AK_INDEX, boff, 2);
			if (!ix)
				return nomem(ps);
			ix->args[0] = n;
			ix->args[1] = key;
			if (set_depth(ps, ix))
				return -1;
			n = ix;
		} else if (ps->tok == T_DOT) {
			if (next(ps))
				return -1;
			if (ps->tok != T_IDENT)
				return syntax_error(ps, "expected a method name");
			const char *name = ps->tok_s;
			uint32_t nlen = ps->tok_len, moff = ps->tok_off;
			if (next(ps))
				return -1;
			if (ps->tok != T_LPAREN || memchr(name, '.', nlen))
				return expr_set_error(
					ps->err, ps->src, ps->len, moff,
					"syntax error: selector on a value "
					"must be a method call");
			if (parse_call(ps, name, nlen, moff, n, &n))
				return -1;
		} else {
			break;
		}
	}
	*out = n;
	return 0;
}

static int parse_unary(struct parser *ps, struct ast **out)
{
	if (ps->tok == T_NOT || ps->tok == T_MINUS || ps->tok == T_PLUS) {
		enum tok op = ps->tok;
		uint32_t off = ps->tok_off;
		struct ast *operand;
		if (descend(ps) || next(ps) || parse_unary(ps, &operand))
			return -1;
		ps->nesting--;
		struct ast *n = node(ps, AK_UNARY, off, 1);
		if (!n)
			return nomem(ps);
		n->op = (uint8_t)op;
		n->args[0] = operand;
		*out = n;
		return set_depth(ps, n);
	}
	bool paren = ps->tok == T_LPAREN;
	if (paren && descend(ps))
		return -1;
	int rc = parse_primary(ps, out);
	if (paren)
		ps->nesting--;
	return rc;
}

/* Append @x to an OR chain, flattening nested chains: (a|b)|c and a|(b|c)
 * both mean "first present of a, b, c". */
static int or_append(struct parser *ps, struct ast *chain, struct ast *x)
{
	uint32_t add = x->kind == AK_OR ? x->nargs : 1;
	if (chain->nargs + add > chain->cap) {
		/* doubling keeps a long a|b|c|... chain linear in memory */
		uint32_t cap = (chain->nargs + add) * 2;
		struct ast **na =
			expr_arena_alloc(ps->arena, cap * sizeof *na);
		if (!na)
			return nomem(ps);
		if (chain->nargs)
			memcpy(na, chain->args, chain->nargs * sizeof *na);
		chain->args = na;
		chain->cap = cap;
	}
	if (x->kind == AK_OR)
		memcpy(chain->args + chain->nargs, x->args, add * sizeof *x->args);
	else
		chain->args[chain->nargs] = x;
	chain->nargs += add;
	return 0;
}

static int parse_binary(struct parser *ps, int min_prec, struct ast **out)
{
	struct ast *left;
	if (parse_unary(ps, &left))
		return -1;
	for (;;) {
		enum tok op = ps->tok;
		int prec = binary_prec(op);
		if (prec == 0 || prec < min_prec)
			break;
		uint32_t off = ps->tok_off;
		struct ast *right;
		if (descend(ps) || next(ps) ||
		    parse_binary(ps, prec + 1, &right))
			return -1;
		ps->nesting--;
		struct ast *n;
		if (op == T_PIPE) {
			if (left->kind == AK_OR) {
				n = left;
			} else {
				n = node(ps, AK_OR, left->off, 0);
				if (!n || or_append(ps, n, left))
					return nomem(ps);
			}
			if (or_append(ps, n, right))
				return -1;
			/* incremental: rescanning a long chain is quadratic */
			unsigned d = (unsigned)(left->depth > right->depth
							? left->depth
							: right->depth) + 1;
			if (n == left)
				d = right->depth + 1u > n->depth
					    ? right->depth + 1u
					    : n->depth;
			n->depth = (uint16_t)d;
			if (d > EXPR_MAX_DEPTH)
				return expr_set_error(
					ps->err, ps->src, ps->len, n->off,
					"expression nested too deeply "
					"(limit %d)",
					EXPR_MAX_DEPTH);
		} else {
			n = node(ps, AK_BINARY, off, 2);
			if (!n)
				return nomem(ps);
			n->op = (uint8_t)op;
			n->args[0] = left;
			n->args[1] = right;
			if (set_depth(ps, n))
				return -1;
		}
		left = n;
	}
	*out = left;
	return 0;
}

int expr_parse(struct parser *ps, struct ast **out)
{
	if (next(ps) || parse_binary(ps, 1, out))
		return -1;
	if (ps->tok != T_EOF)
		return syntax_error(ps, "unexpected token after expression");
	return 0;
}
