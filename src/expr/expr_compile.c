/*
 * expr_compile.c -- type checking, canonical text (the dedup key), constant
 * folding and emission of the flat node array; the program object.
 */
#include "expr/expr_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- functions ------------------------------------------------------------ */

enum fn_id {
	FN_CONDITIONAL,
	FN_CONDSTR,
	FN_IP,
	FN_TIMESTAMP,
	FN_DNS,
	FN_EMAIL,
	FN_URI,
	FN_MATCH,
	FN_MATCHES,
	FN_STARTS,
	FN_ENDS,
	FN_EMPTYMAP,
	FN_LOWER,
	FN_SIZE,
};

/* ATTR_NONE in arg[] means "checked by hand" (see check_call). */
static const struct fn_def {
	const char *name;
	bool method; /* receiver.name(args): the receiver is argument 0 */
	uint8_t nargs; /* including the receiver */
	uint8_t ret;
	uint8_t arg[3];
	uint8_t op;
} fns[] = {
	[FN_CONDITIONAL] = {"conditional", false, 3, ATTR_NONE,
			    {ATTR_BOOL, ATTR_NONE, ATTR_NONE}, OP_COND},
	[FN_CONDSTR] = {"conditionalString", false, 3, ATTR_STRING,
			{ATTR_BOOL, ATTR_STRING, ATTR_STRING}, OP_COND},
	[FN_IP] = {"ip", false, 1, ATTR_IP, {ATTR_STRING}, OP_IP},
	[FN_TIMESTAMP] = {"timestamp", false, 1, ATTR_TIMESTAMP, {ATTR_STRING},
			  OP_TIMESTAMP},
	[FN_DNS] = {"dnsName", false, 1, ATTR_DNS_NAME, {ATTR_STRING}, OP_DNS},
	[FN_EMAIL] = {"email", false, 1, ATTR_EMAIL, {ATTR_STRING}, OP_EMAIL},
	[FN_URI] = {"uri", false, 1, ATTR_URI, {ATTR_STRING}, OP_URI},
	[FN_MATCH] = {"match", false, 2, ATTR_BOOL, {ATTR_STRING, ATTR_STRING},
		      OP_MATCH},
	[FN_MATCHES] = {"matches", true, 2, ATTR_BOOL,
			{ATTR_STRING, ATTR_STRING}, OP_MATCHES},
	[FN_STARTS] = {"startsWith", true, 2, ATTR_BOOL,
		       {ATTR_STRING, ATTR_STRING}, OP_STARTS},
	[FN_ENDS] = {"endsWith", true, 2, ATTR_BOOL, {ATTR_STRING, ATTR_STRING},
		     OP_ENDS},
	[FN_EMPTYMAP] = {"emptyStringMap", false, 0, ATTR_STRING_MAP, {0},
			 OP_CONST},
	[FN_LOWER] = {"toLower", false, 1, ATTR_STRING, {ATTR_STRING},
		      OP_LOWER},
	[FN_SIZE] = {"size", false, 1, ATTR_INT64, {ATTR_NONE}, OP_SIZE},
};

#define N_FNS (sizeof fns / sizeof fns[0])

/* ---- type checking -------------------------------------------------------- */

struct cctx {
	struct expr_program *p;
	const char *text;
	size_t len;
	struct expr_error *err;
};

static int cerr(struct cctx *c, uint32_t off, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int cerr(struct cctx *c, uint32_t off, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return expr_set_error(c->err, c->text, c->len, off, "%s", msg);
}

static const char *tname(unsigned t)
{
	return attr_type_name((enum attr_type)t);
}

static bool same_class(unsigned a, unsigned b)
{
	return a == b || (attr_type_is_string((enum attr_type)a) &&
			  attr_type_is_string((enum attr_type)b));
}

/* A string literal that spells a duration is a DURATION until a STRING is
 * wanted in its place; then it is the string it spells. */
static void coerce_to_string(struct ast *n)
{
	n->dur_str = false;
	n->type = ATTR_STRING;
	n->k.type = ATTR_STRING;
	n->k.s = n->str;
	n->k.len = n->slen;
}

static bool accepts(unsigned want, struct ast *n)
{
	if (same_class(want, n->type))
		return true;
	if (n->dur_str && attr_type_is_string((enum attr_type)want)) {
		coerce_to_string(n);
		return true;
	}
	return false;
}

/* Describe argument @i of @what for messages: "argument 2 of |". */
static void arg_label(char *buf, size_t cap, const char *what, bool method,
		      uint32_t i)
{
	if (method && i == 0)
		snprintf(buf, cap, "receiver of %s", what);
	else
		snprintf(buf, cap, "argument %u of %s", method ? i : i + 1,
			 what);
}

/*
 * All of @args[from..to) must have one type. The type comes from the first
 * operand that is not a duration-or-string literal (the last one if
 * @from_last, so conditional(c, 1, "x") reports argument 2); literals
 * adapt to it.
 */
static int unify(struct cctx *c, struct ast **args, uint32_t from, uint32_t to,
		 const char *what, bool from_last, uint8_t *type)
{
	int ref = -1;
	for (uint32_t k = from; k < to; k++) {
		uint32_t i = from_last ? to - 1 - (k - from) : k;
		if (!args[i]->dur_str) {
			ref = (int)i;
			break;
		}
	}
	unsigned want = ref >= 0 ? args[ref]->type : ATTR_DURATION;
	bool mixed = false;
	for (uint32_t k = from; k < to; k++) {
		uint32_t i = from_last ? to - 1 - (k - from) : k;
		if ((int)i == ref)
			continue;
		if (!accepts(want, args[i])) {
			char lbl[64];
			arg_label(lbl, sizeof lbl, what, false, i);
			return cerr(c, args[i]->off, "%s: expected %s, got %s",
				    lbl, tname(want), tname(args[i]->type));
		}
		mixed |= args[i]->type != want;
	}
	/* EMAIL | STRING is a string, not an email */
	*type = (uint8_t)(mixed ? ATTR_STRING : want);
	return 0;
}

static int check(struct cctx *c, struct ast *n);

static int expect(struct cctx *c, struct ast *n, unsigned want,
		  const char *what, bool method, uint32_t i)
{
	if (accepts(want, n))
		return 0;
	char lbl[64];
	arg_label(lbl, sizeof lbl, what, method, i);
	return cerr(c, n->off, "%s: expected %s, got %s", lbl, tname(want),
		    tname(n->type));
}

static int check_call(struct cctx *c, struct ast *n)
{
	int fi = -1;
	for (unsigned i = 0; i < N_FNS; i++)
		if (strlen(fns[i].name) == n->slen &&
		    memcmp(fns[i].name, n->str, n->slen) == 0)
			fi = (int)i;
	if (fi < 0)
		return cerr(c, n->off, "unknown function \"%.*s\"",
			    (int)n->slen, n->str);
	const struct fn_def *f = &fns[fi];
	if (f->method != n->method)
		return cerr(c, n->off,
			    f->method ? "%s is a method: write x.%s(...)"
				      : "%s is a function: write %s(x)",
			    f->name, f->name);
	if (n->nargs != f->nargs) {
		unsigned want = f->nargs - f->method, got = n->nargs - n->method;
		return cerr(c, n->off, "%s: expected %u argument%s, got %u",
			    f->name, want, want == 1 ? "" : "s", got);
	}
	n->op = (uint8_t)fi;
	for (uint32_t i = 0; i < n->nargs; i++)
		if (check(c, n->args[i]))
			return -1;
	for (uint32_t i = 0; i < n->nargs; i++)
		if (f->arg[i] != ATTR_NONE &&
		    expect(c, n->args[i], f->arg[i], f->name, f->method, i))
			return -1;
	n->type = f->ret;
	if (fi == FN_CONDITIONAL)
		return unify(c, n->args, 1, 3, "conditional", true, &n->type);
	if (fi == FN_SIZE) {
		struct ast *a = n->args[0];
		if (a->dur_str)
			coerce_to_string(a);
		if (!attr_type_is_string((enum attr_type)a->type) &&
		    a->type != ATTR_STRING_MAP)
			return cerr(c, a->off,
				    "argument 1 of size: expected STRING or "
				    "STRING_MAP, got %s",
				    tname(a->type));
	}
	return 0;
}

static const char *op_text(unsigned op)
{
	switch (op) {
	case T_NOT: return "!";
	case T_MINUS: return "-";
	case T_PLUS: return "+";
	case T_STAR: return "*";
	case T_SLASH: return "/";
	case T_PERCENT: return "%";
	case T_PIPE: return "|";
	case T_OROR: return "||";
	case T_ANDAND: return "&&";
	case T_EQ: return "==";
	case T_NE: return "!=";
	case T_LT: return "<";
	case T_LE: return "<=";
	case T_GT: return ">";
	case T_GE: return ">=";
	default: return "?";
	}
}

/* What <, <=, > and >= take: Mixer's generateLt() and its kin compile
 * them for strings (Go's byte order), integers, doubles and timestamps. */
static bool is_ordered(unsigned t)
{
	return t == ATTR_INT64 || t == ATTR_DOUBLE || t == ATTR_TIMESTAMP ||
	       t == ATTR_DURATION || t == ATTR_STRING;
}

static int check_binary(struct cctx *c, struct ast *n)
{
	struct ast *l = n->args[0], *r = n->args[1];
	const char *ops = op_text(n->op);
	switch (n->op) {
	case T_ANDAND:
	case T_OROR:
		if (expect(c, l, ATTR_BOOL, ops, false, 0) ||
		    expect(c, r, ATTR_BOOL, ops, false, 1))
			return -1;
		n->type = ATTR_BOOL;
		return 0;
	case T_EQ:
	case T_NE:
		if (unify(c, n->args, 0, 2, ops, false, &n->type))
			return -1;
		n->type = ATTR_BOOL;
		return 0;
	case T_LT:
	case T_LE:
	case T_GT:
	case T_GE: {
		uint8_t t = 0; /* gcc -O3 cannot see unify() set it */
		if (unify(c, n->args, 0, 2, ops, false, &t))
			return -1;
		if (!is_ordered(t))
			return cerr(c, l->off,
				    "argument 1 of %s: expected STRING, INT64, "
				    "DOUBLE, TIMESTAMP or DURATION, got %s",
				    ops, tname(t));
		n->type = ATTR_BOOL;
		return 0;
	}
	case T_PLUS: {
		uint8_t t = 0; /* as above */
		if (!l->dur_str && !attr_type_is_string((enum attr_type)l->type) &&
		    l->type != ATTR_INT64 && l->type != ATTR_DOUBLE)
			return cerr(c, l->off,
				    "argument 1 of +: expected STRING, INT64 "
				    "or DOUBLE, got %s",
				    tname(l->type));
		if (l->dur_str && r->dur_str) {
			coerce_to_string(l);
			coerce_to_string(r);
		}
		if (unify(c, n->args, 0, 2, ops, false, &t))
			return -1;
		if (!attr_type_is_string((enum attr_type)t) &&
		    t != ATTR_INT64 && t != ATTR_DOUBLE)
			return cerr(c, l->off,
				    "argument 1 of +: expected STRING, INT64 "
				    "or DOUBLE, got %s",
				    tname(t));
		n->type = attr_type_is_string((enum attr_type)t) ? ATTR_STRING
								 : t;
		return 0;
	}
	default:
		return cerr(c, n->off,
			    "operator %s is not supported (Mixer supports + "
			    "only)",
			    ops);
	}
}

static int check(struct cctx *c, struct ast *n)
{
	switch (n->kind) {
	case AK_CONST:
		n->type = n->k.type;
		return 0;
	case AK_NAME: {
		int slot = attr_vocab_find(c->p->vocab, n->str, n->slen);
		if (slot < 0)
			return cerr(c, n->off, "unknown attribute \"%.*s\"",
				    (int)n->slen, n->str);
		n->slot = slot;
		n->type = (uint8_t)attr_vocab_type(c->p->vocab, (unsigned)slot);
		if (n->type == ATTR_NONE)
			return cerr(c, n->off, "attribute \"%.*s\" has no type",
				    (int)n->slen, n->str);
		return 0;
	}
	case AK_INDEX:
		if (check(c, n->args[0]) || check(c, n->args[1]))
			return -1;
		if (n->args[0]->type != ATTR_STRING_MAP)
			return cerr(c, n->args[0]->off,
				    "argument 1 of []: expected STRING_MAP, "
				    "got %s",
				    tname(n->args[0]->type));
		if (expect(c, n->args[1], ATTR_STRING, "[]", false, 1))
			return -1;
		n->type = ATTR_STRING;
		return 0;
	case AK_UNARY: {
		struct ast *a = n->args[0];
		if (check(c, a))
			return -1;
		if (n->op == T_NOT) {
			if (expect(c, a, ATTR_BOOL, "!", false, 0))
				return -1;
			n->type = ATTR_BOOL;
			return 0;
		}
		if (a->type != ATTR_INT64 && a->type != ATTR_DOUBLE &&
		    a->type != ATTR_DURATION)
			return cerr(c, a->off,
				    "argument 1 of unary %s: expected INT64, "
				    "DOUBLE or DURATION, got %s",
				    op_text(n->op), tname(a->type));
		n->type = a->type;
		return 0;
	}
	case AK_BINARY:
		if (check(c, n->args[0]) || check(c, n->args[1]))
			return -1;
		return check_binary(c, n);
	case AK_OR:
		for (uint32_t i = 0; i < n->nargs; i++)
			if (check(c, n->args[i]))
				return -1;
		return unify(c, n->args, 0, n->nargs, "|", false, &n->type);
	case AK_CALL:
		return check_call(c, n);
	}
	return cerr(c, n->off, "internal error: bad node");
}

/* ---- canonical text --------------------------------------------------------- */

struct sbuf {
	char *b;
	size_t n, cap;
	bool oom;
};

static void sb_put(struct sbuf *sb, const char *s, size_t n)
{
	if (sb->oom)
		return;
	if (sb->n + n + 1 > sb->cap) {
		size_t cap = (sb->n + n + 1) * 2;
		char *nb = realloc(sb->b, cap);
		if (!nb) {
			sb->oom = true;
			return;
		}
		sb->b = nb;
		sb->cap = cap;
	}
	memcpy(sb->b + sb->n, s, n);
	sb->n += n;
	sb->b[sb->n] = 0;
}

static void sb_str(struct sbuf *sb, const char *s)
{
	sb_put(sb, s, strlen(s));
}

static void sb_quote(struct sbuf *sb, const char *s, size_t n)
{
	sb_put(sb, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		char e[8];
		if (ch == '"' || ch == '\\') {
			e[0] = '\\';
			e[1] = (char)ch;
			sb_put(sb, e, 2);
		} else if (ch < 0x20 || ch == 0x7f) {
			snprintf(e, sizeof e, "\\x%02x", ch);
			sb_put(sb, e, 4);
		} else {
			sb_put(sb, (const char *)&ch, 1);
		}
	}
	sb_put(sb, "\"", 1);
}

static void canon(struct sbuf *sb, const struct ast *n)
{
	char num[48];
	switch (n->kind) {
	case AK_CONST:
		if (n->str) { /* a string literal, whatever it became */
			sb_quote(sb, n->str, n->slen);
		} else if (n->k.type == ATTR_INT64) {
			snprintf(num, sizeof num, "%lld", (long long)n->k.i);
			sb_str(sb, num);
		} else if (n->k.type == ATTR_DOUBLE) {
			/* %a is exact and never looks like an int */
			snprintf(num, sizeof num, "%a", n->k.d);
			sb_str(sb, num);
		} else if (n->k.type == ATTR_BOOL) {
			sb_str(sb, n->k.b ? "true" : "false");
		}
		return;
	case AK_NAME:
		sb_put(sb, n->str, n->slen);
		return;
	case AK_INDEX:
		canon(sb, n->args[0]);
		sb_put(sb, "[", 1);
		canon(sb, n->args[1]);
		sb_put(sb, "]", 1);
		return;
	case AK_UNARY:
		sb_put(sb, "(", 1);
		sb_str(sb, op_text(n->op));
		canon(sb, n->args[0]);
		sb_put(sb, ")", 1);
		return;
	case AK_BINARY:
		sb_put(sb, "(", 1);
		canon(sb, n->args[0]);
		sb_put(sb, " ", 1);
		sb_str(sb, op_text(n->op));
		sb_put(sb, " ", 1);
		canon(sb, n->args[1]);
		sb_put(sb, ")", 1);
		return;
	case AK_OR:
		sb_put(sb, "(", 1);
		for (uint32_t i = 0; i < n->nargs; i++) {
			if (i)
				sb_put(sb, " | ", 3);
			canon(sb, n->args[i]);
		}
		sb_put(sb, ")", 1);
		return;
	case AK_CALL: {
		uint32_t i = 0;
		if (n->method) {
			canon(sb, n->args[0]);
			sb_put(sb, ".", 1);
			i = 1;
		}
		sb_put(sb, n->str, n->slen);
		sb_put(sb, "(", 1);
		for (uint32_t first = i; i < n->nargs; i++) {
			if (i > first)
				sb_put(sb, ", ", 2);
			canon(sb, n->args[i]);
		}
		sb_put(sb, ")", 1);
		return;
	}
	}
}

/* ---- emission and folding ------------------------------------------------- */

static int nomem(struct cctx *c)
{
	return cerr(c, 0, "out of memory");
}

static int push_node(struct cctx *c, const struct enode *e, uint32_t *out)
{
	struct expr_program *p = c->p;
	if (p->n_nodes == p->cap_nodes) {
		uint32_t cap = p->cap_nodes ? p->cap_nodes * 2 : 64;
		struct enode *nn = realloc(p->nodes, cap * sizeof *nn);
		if (!nn)
			return nomem(c);
		p->nodes = nn;
		p->cap_nodes = cap;
	}
	*out = p->n_nodes;
	p->nodes[p->n_nodes++] = *e;
	return 0;
}

static int push_args(struct cctx *c, const uint32_t *a, uint32_t n)
{
	struct expr_program *p = c->p;
	if (p->n_args + n > p->cap_args) {
		uint32_t cap = (p->n_args + n) * 2;
		uint32_t *na = realloc(p->args, cap * sizeof *na);
		if (!na)
			return nomem(c);
		p->args = na;
		p->cap_args = cap;
	}
	memcpy(p->args + p->n_args, a, n * sizeof *a);
	p->n_args += n;
	return 0;
}

static bool is_const(struct cctx *c, uint32_t ni)
{
	return c->p->nodes[ni].op == OP_CONST;
}

/*
 * The operand nodes of @e into @k; returns how many. OP_OR's operands are
 * a run of args, not nodes: -1 (as for leaves, which have none: 0).
 */
static int operands(const struct enode *e, uint32_t k[3])
{
	switch ((enum expr_op)e->op) {
	case OP_CONST:
	case OP_LOAD:
	case OP_COUNT_:
		return 0;
	case OP_OR:
		return -1;
	case OP_INDEX:
		k[0] = e->a;
		k[1] = e->b; /* NO_NODE: the key is constant, in k */
		return e->b == NO_NODE ? 1 : 2;
	case OP_AND:
	case OP_LOR:
	case OP_EQ:
	case OP_NE:
	case OP_LT:
	case OP_LE:
	case OP_GT:
	case OP_GE:
	case OP_ADD:
	case OP_MATCH:
	case OP_STARTS:
	case OP_ENDS:
		k[0] = e->a;
		k[1] = e->b;
		return 2;
	case OP_COND:
		k[0] = e->a;
		k[1] = e->b;
		k[2] = e->c;
		return 3;
	default: /* one operand; OP_MATCHES' c is its regex, not a node */
		k[0] = e->a;
		return 1;
	}
}

static bool kids_const(struct cctx *c, const struct enode *e)
{
	uint32_t k[3];
	int n = operands(e, k);
	if (n <= 0)
		return false;
	for (int i = 0; i < n; i++)
		if (!is_const(c, k[i]))
			return false;
	return true;
}

/*
 * Push @e; if its operands are all constants, evaluate it now and replace
 * it and them (the nodes from @mark on, emitted post-order) by a constant.
 * A conversion of a constant that fails (ip("x")) would fail for every
 * record: report it now.
 */
static int push_folded(struct cctx *c, const struct enode *e, uint32_t mark,
		       uint32_t args_mark, uint32_t off, uint32_t *out)
{
	struct expr_program *p = c->p;
	static const struct attr_table empty; /* folding never loads */
	if (push_node(c, e, out))
		return -1;
	if (!kids_const(c, e))
		return 0;
	struct attr_value v;
	expr_scratch_begin(p->fold);
	int rc = expr_eval_node(p, *out, &empty, p->fold, &v);
	if (rc == EXPR_E_VALUE)
		return cerr(c, off, "invalid constant argument");
	if (rc)
		return 0; /* e.g. a tolerant index: leave it to run time */
	/* the fold scratch's arena is reused: keep strings in the pool */
	if (attr_type_is_string((enum attr_type)v.type) && v.len) {
		char *copy = expr_pool_alloc(p, v.len);
		if (!copy)
			return nomem(c);
		memcpy(copy, v.s, v.len);
		v.s = copy;
	}
	p->n_nodes = mark;
	p->n_args = args_mark;
	struct enode k = {.op = OP_CONST, .type = e->type, .k = v};
	return push_node(c, &k, out);
}

static int emit(struct cctx *c, struct ast *n, bool tolerant, uint32_t *out);

static int emit_or(struct cctx *c, struct ast *n, uint32_t *out)
{
	struct expr_program *p = c->p;
	uint32_t *ops = malloc(n->nargs * sizeof *ops);
	if (!ops)
		return nomem(c);
	uint32_t k = 0;
	int rc = 0;
	for (uint32_t i = 0; i < n->nargs; i++) {
		/* only a non-last operand may fall through on a missing key */
		rc = emit(c, n->args[i], i + 1 < n->nargs, &ops[k]);
		if (rc)
			goto out;
		/* a constant is never absent: nothing after it can be used */
		if (is_const(c, ops[k++]))
			break;
	}
	if (k == 1) {
		*out = ops[0];
		goto out;
	}
	struct enode e = {.op = OP_OR, .type = n->type, .n = k, .a = p->n_args};
	bool loads = true;
	for (uint32_t i = 0; i + 1 < k; i++)
		loads &= p->nodes[ops[i]].op == OP_LOAD;
	if (loads && is_const(c, ops[k - 1]))
		e.flags |= NF_LOADS_K;
	const struct enode *ix = &p->nodes[ops[0]];
	if (k == 2 && ix->op == OP_INDEX && ix->b == NO_NODE &&
	    p->nodes[ix->a].op == OP_LOAD && is_const(c, ops[1]))
		e.flags |= NF_MAPKEY_K;
	rc = push_args(c, ops, k);
	if (!rc)
		rc = push_node(c, &e, out);
out:
	free(ops);
	return rc;
}

/* A counted repetition at @p ("{m}", "{m,}", "{m,n}"): its length, or 0
 * when @p is not one (then '{' is a literal, as in Go); *@max: the
 * largest count in it. */
static size_t counted(const char *p, unsigned long *max)
{
	const char *q = p + 1;
	*max = 0;
	for (int part = 0; part < 2; part++) {
		const char *d = q;
		unsigned long v = 0;
		for (; *q >= '0' && *q <= '9'; q++) /* every digit; the value
						      * stops growing past 1e6 */
			v = v > 1000000 ? v : v * 10 + (unsigned long)(*q - '0');
		if (q == d && part == 0)
			return 0; /* no first count */
		if (q - d > 1 && *d == '0')
			return 0; /* Go's parseInt: no leading zero ("{01}") */
		*max = v > *max ? v : *max;
		if (*q == '}')
			return (size_t)(q + 1 - p);
		if (*q != ',' || part == 1)
			return 0;
		q++;
	}
	return 0;
}

/* Past the bracket expression opening at @s: its ']' may come first, and
 * its classes ("[:alpha:]", "[.x.]", "[=e=]") hold brackets of their own;
 * nothing in it is a repetition. */
static const char *bracket_end(const char *s)
{
	s++;
	if (*s == '^')
		s++;
	if (*s == ']')
		s++;
	while (*s && *s != ']') {
		if (s[0] == '[' && (s[1] == ':' || s[1] == '.' || s[1] == '=')) {
			const char end[3] = {s[1], ']', 0};
			const char *e = strstr(s + 2, end);
			if (e) {
				s = e + 2;
				continue;
			}
		}
		s++;
	}
	return *s ? s + 1 : s;
}

/*
 * Refuse what Go's regexp (Mixer's) refuses and the C library would take
 * exponential time to compile: a repetition of a repetition ("a**",
 * "a{2}{3}"; one '?' after a repetition is Go's non-greedy marker) and a
 * count over 1000. And what the two read differently, so that a pattern
 * never silently matches other strings than under Mixer: a backslash
 * before a letter or digit other than \w \W \s \S \b \B (RE2's \d,
 * \pL, \x41, \n, \A ... are the letters themselves to POSIX), and any
 * backslash in a bracket expression (an escape to RE2, itself to POSIX).
 * NULL, or why not.
 */
static const char *regex_unsafe(const char *s)
{
	static const char letter[] =
		"a backslash before a letter or digit means something else in "
		"POSIX regex than in Mixer's RE2 (only \\w \\W \\s \\S "
		"\\b \\B mean the same); write a bracket expression, "
		"[0-9] for \\d";
	static const char in_bracket[] =
		"a backslash in a bracket expression is an escape to Mixer's "
		"RE2 and itself to POSIX regex; write the class without one";
	bool after_rep = false, lazy = false;
	while (*s) {
		size_t len = 1;
		unsigned long max = 0;
		bool rep = *s == '*' || *s == '+' || *s == '?';
		if (*s == '{' && (len = counted(s, &max)) != 0)
			rep = true;
		else
			len = 1;
		if (rep) {
			if (max > 1000)
				return "invalid repeat count";
			if (after_rep && !(*s == '?' && !lazy)) /* x*? is lazy */
				return "invalid nested repetition operator";
			lazy = after_rep;
			after_rep = true;
			s += len;
			continue;
		}
		after_rep = lazy = false;
		if (*s == '\\' && s[1]) {
			unsigned char e = (unsigned char)s[1];
			if (isalnum(e) && !strchr("wWsSbB", e))
				return letter;
			s += 2;
		} else if (*s == '[') {
			const char *end = bracket_end(s);
			if (memchr(s, '\\', (size_t)(end - s)))
				return in_bracket;
			s = end;
		} else {
			s++;
		}
	}
	return NULL;
}

/*
 * Pattern @s (regex_unsafe() passed it) as POSIX extended regex that
 * matches what Go's regexp matches, where the two read the same text
 * differently: Go's '.' matches anything but a newline (POSIX: anything);
 * Go takes an escaped '<', '>', '`' or '\'' as the character (glibc: word
 * and buffer edges); and a '{' that starts no counted repetition ("{,3}")
 * is a literal to Go (glibc: "{0,3}"). Bracket expressions go through as
 * they are. Returns a malloc()ed string, or NULL on ENOMEM.
 */
static char *regex_go_to_posix(const char *s)
{
	char *out = malloc(5 * strlen(s) + 1), *o = out; /* '.': 5 bytes */
	if (!out)
		return NULL;
	while (*s) {
		unsigned long max;
		if (*s == '[') {
			const char *end = bracket_end(s);
			memcpy(o, s, (size_t)(end - s));
			o += end - s;
			s = end;
		} else if (*s == '\\' && s[1]) {
			if (!strchr("<>`'", s[1]))
				*o++ = '\\';
			*o++ = s[1];
			s += 2;
		} else if (*s == '.') {
			memcpy(o, "[^\n]", 4);
			o += 4;
			s++;
		} else if (*s == '{' && !counted(s, &max)) {
			*o++ = '\\';
			*o++ = *s++;
		} else {
			*o++ = *s++;
		}
	}
	*o = 0;
	return out;
}

int expr_regex_compile(const char *pattern, regex_t *re, char *why,
		       size_t why_len)
{
	const char *unsafe = regex_unsafe(pattern);
	if (unsafe) {
		snprintf(why, why_len, "%s", unsafe);
		return -1;
	}
	char *posix = regex_go_to_posix(pattern);
	if (!posix) {
		snprintf(why, why_len, "out of memory");
		return -1;
	}
	int rc = regcomp(re, posix, REG_EXTENDED | REG_NOSUB);
	free(posix);
	if (rc) {
		regerror(rc, re, why, why_len);
		return -1;
	}
	return 0;
}

static int compile_regex(struct cctx *c, struct ast *n, const struct enode *pat,
			 uint32_t *idx)
{
	struct expr_program *p = c->p;
	if (pat->op != OP_CONST)
		return cerr(c, n->args[0]->off,
			    "receiver of matches: the pattern must be a "
			    "constant string");
	if (memchr(pat->k.s, 0, pat->k.len))
		return cerr(c, n->args[0]->off,
			    "receiver of matches: NUL byte in pattern");
	if (p->n_regexes == p->cap_regexes) {
		uint32_t cap = p->cap_regexes ? p->cap_regexes * 2 : 8;
		regex_t **nr = realloc(p->regexes, cap * sizeof *nr);
		if (!nr)
			return nomem(c);
		p->regexes = nr;
		p->cap_regexes = cap;
	}
	char *s = malloc(pat->k.len + 1);
	regex_t *re = malloc(sizeof *re);
	if (!s || !re) {
		free(s);
		free(re);
		return nomem(c);
	}
	memcpy(s, pat->k.s, pat->k.len);
	s[pat->k.len] = 0;
	char why[160];
	int rc = expr_regex_compile(s, re, why, sizeof why);
	free(s);
	if (rc) {
		free(re);
		return cerr(c, n->args[0]->off, "receiver of matches: %s", why);
	}
	*idx = p->n_regexes;
	p->regexes[p->n_regexes++] = re;
	return 0;
}

static int emit_call(struct cctx *c, struct ast *n, uint32_t mark,
		     uint32_t args_mark, uint32_t *out)
{
	const struct fn_def *f = &fns[n->op];
	struct enode e = {.op = f->op, .type = n->type, .b = NO_NODE,
			  .c = NO_NODE};
	uint32_t kid[3] = {NO_NODE, NO_NODE, NO_NODE};

	if (n->op == FN_EMPTYMAP) {
		e.k = expr_empty_map;
		return push_node(c, &e, out);
	}
	if (n->op == FN_CONDITIONAL || n->op == FN_CONDSTR) {
		if (emit(c, n->args[0], false, &kid[0]))
			return -1;
		if (n->op == FN_CONDSTR)
			e.flags |= NF_STRICT; /* folded only when all are */
		else if (is_const(c, kid[0])) {
			bool b = c->p->nodes[kid[0]].k.b;
			c->p->n_nodes = mark;
			c->p->n_args = args_mark;
			return emit(c, n->args[b ? 1 : 2], false, out);
		}
		if (emit(c, n->args[1], false, &kid[1]) ||
		    emit(c, n->args[2], false, &kid[2]))
			return -1;
		e.a = kid[0];
		e.b = kid[1];
		e.c = kid[2];
		return push_folded(c, &e, mark, args_mark, n->off, out);
	}
	for (uint32_t i = 0; i < n->nargs; i++)
		if (emit(c, n->args[i], false, &kid[i]))
			return -1;
	e.a = kid[0];
	if (n->nargs > 1)
		e.b = kid[1];
	if (n->op == FN_MATCHES) {
		/* receiver is the pattern, argument the subject */
		if (compile_regex(c, n, &c->p->nodes[kid[0]], &e.c))
			return -1;
		e.a = kid[1];
		e.b = NO_NODE;
	} else if (n->op == FN_MATCH && is_const(c, kid[1])) {
		struct attr_value pat = c->p->nodes[kid[1]].k;
		if (pat.len && pat.s[pat.len - 1] == '*') {
			e.aux = MATCH_PREFIX;
			pat.len--;
		} else if (pat.len && pat.s[0] == '*') {
			e.aux = MATCH_SUFFIX;
			pat.s++;
			pat.len--;
		} else {
			e.aux = MATCH_EXACT;
		}
		e.op = OP_MATCH_K;
		e.k = pat;
		e.b = NO_NODE;
	}
	return push_folded(c, &e, mark, args_mark, n->off, out);
}

static const uint8_t binop[] = {
	[T_EQ] = OP_EQ, [T_NE] = OP_NE, [T_LT] = OP_LT,     [T_LE] = OP_LE,
	[T_GT] = OP_GT, [T_GE] = OP_GE, [T_PLUS] = OP_ADD,
};

static int emit(struct cctx *c, struct ast *n, bool tolerant, uint32_t *out)
{
	struct expr_program *p = c->p;
	uint32_t mark = p->n_nodes, args_mark = p->n_args;
	struct enode e = {.type = n->type, .b = NO_NODE, .c = NO_NODE};
	uint32_t a, b;

	switch (n->kind) {
	case AK_CONST:
		e.op = OP_CONST;
		e.k = n->k;
		return push_node(c, &e, out);
	case AK_NAME:
		e.op = OP_LOAD;
		e.a = (uint32_t)n->slot;
		return push_node(c, &e, out);
	case AK_INDEX:
		if (emit(c, n->args[0], false, &a) ||
		    emit(c, n->args[1], false, &b))
			return -1;
		e.op = OP_INDEX;
		e.flags = tolerant ? NF_TOLERANT : 0;
		e.a = a;
		if (is_const(c, b) && b == p->n_nodes - 1) {
			/* the usual m["k"]: keep the key in the node */
			e.k = p->nodes[b].k;
			p->n_nodes--;
		} else {
			e.b = b;
		}
		return push_folded(c, &e, mark, args_mark, n->off, out);
	case AK_UNARY:
		if (emit(c, n->args[0], false, &a))
			return -1;
		if (n->op == T_PLUS)
			return *out = a, 0;
		e.op = n->op == T_NOT ? OP_NOT : OP_NEG;
		e.a = a;
		return push_folded(c, &e, mark, args_mark, n->off, out);
	case AK_BINARY:
		if (emit(c, n->args[0], false, &a))
			return -1;
		if ((n->op == T_ANDAND || n->op == T_OROR) && is_const(c, a)) {
			bool v = p->nodes[a].k.b;
			/* false && x, true || x: x is never evaluated */
			if (v == (n->op == T_OROR))
				return *out = a, 0;
			p->n_nodes = mark;
			p->n_args = args_mark;
			return emit(c, n->args[1], false, out);
		}
		if (emit(c, n->args[1], false, &b))
			return -1;
		e.a = a;
		e.b = b;
		e.aux = n->args[0]->type;
		if (n->op == T_ANDAND || n->op == T_OROR) {
			e.op = n->op == T_ANDAND ? OP_AND : OP_LOR;
		} else {
			e.op = binop[n->op];
		}
		if ((e.op == OP_EQ || e.op == OP_NE) &&
		    is_const(c, a) != is_const(c, b)) {
			/* compare against a constant held in the node */
			uint32_t kn = is_const(c, a) ? a : b;
			e.k = p->nodes[kn].k;
			e.a = kn == a ? b : a;
			e.b = NO_NODE;
			e.op = e.op == OP_EQ ? OP_EQ_K : OP_NE_K;
			if (kn == p->n_nodes - 1)
				p->n_nodes--;
		}
		return push_folded(c, &e, mark, args_mark, n->off, out);
	case AK_OR:
		return emit_or(c, n, out);
	case AK_CALL:
		return emit_call(c, n, mark, args_mark, out);
	}
	return cerr(c, n->off, "internal error: bad node");
}

/* ---- program ---------------------------------------------------------------- */

struct expr_program *expr_program_create(const struct attr_vocab *vocab)
{
	struct expr_program *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	p->vocab = vocab;
	p->fold = expr_scratch_create(NULL, 0);
	if (!p->fold) {
		free(p);
		return NULL;
	}
	return p;
}

void expr_program_destroy(struct expr_program *p)
{
	if (!p)
		return;
	for (uint32_t i = 0; i < p->n_exprs; i++)
		free(p->exprs[i].text);
	for (uint32_t i = 0; i < p->n_regexes; i++) {
		regfree(p->regexes[i]);
		free(p->regexes[i]);
	}
	while (p->pool) {
		struct pool_chunk *n = p->pool->next;
		free(p->pool);
		p->pool = n;
	}
	expr_scratch_destroy(p->fold);
	free(p->regexes);
	free(p->exprs);
	free(p->args);
	free(p->nodes);
	free(p);
}

static uint32_t text_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++) {
		h ^= (uint8_t)s[i];
		h *= 16777619u;
	}
	return h;
}

int expr_compile(struct expr_program *p, const char *text, size_t len,
		 struct expr_error *err)
{
	struct ast_arena arena = {0};
	struct parser ps = {.src = text, .len = len, .prog = p,
			    .arena = &arena, .err = err};
	struct cctx c = {.p = p, .text = text, .len = len, .err = err};
	struct sbuf sb = {0};
	struct ast *root;
	int id = -1;
	uint32_t mark = p->n_nodes, args_mark = p->n_args;

	if (err) {
		err->offset = 0;
		err->msg[0] = 0;
	}
	if (len > UINT32_MAX / 2) {
		expr_set_error(err, text, 0, 0, "expression too long");
		goto out;
	}
	if (expr_parse(&ps, &root) || check(&c, root))
		goto out;

	canon(&sb, root);
	if (sb.oom) {
		nomem(&c);
		goto out;
	}
	uint32_t h = text_hash(sb.b, sb.n);
	for (uint32_t i = 0; i < p->n_exprs; i++) {
		if (p->exprs[i].hash == h && strcmp(p->exprs[i].text, sb.b) == 0) {
			id = (int)i;
			goto out;
		}
	}
	if (p->n_exprs == p->cap_exprs) {
		uint32_t cap = p->cap_exprs ? p->cap_exprs * 2 : 16;
		struct expr_entry *ne = realloc(p->exprs, cap * sizeof *ne);
		if (!ne) {
			nomem(&c);
			goto out;
		}
		p->exprs = ne;
		p->cap_exprs = cap;
	}
	uint32_t rootn;
	if (emit(&c, root, false, &rootn)) {
		/* drop the half-emitted nodes; the program stays usable */
		p->n_nodes = mark;
		p->n_args = args_mark;
		goto out;
	}
	struct expr_entry en = {
		.root = rootn, .hash = h, .type = root->type, .text = sb.b};
	const struct enode *r = &p->nodes[rootn];
	if (r->op == OP_CONST) {
		en.shape = SHAPE_CONST;
		en.k = r->k;
	} else if (r->op == OP_OR && r->n == 2 && (r->flags & NF_LOADS_K)) {
		const struct enode *ld = &p->nodes[p->args[r->a]];
		en.shape = SHAPE_LOAD_K;
		en.slot = (uint16_t)ld->a;
		en.decl = ld->type;
		en.k = p->nodes[p->args[r->a + 1]].k;
	} else if (r->op == OP_OR && (r->flags & NF_MAPKEY_K)) {
		const struct enode *ix = &p->nodes[p->args[r->a]];
		en.shape = SHAPE_MAPKEY_K;
		en.slot = (uint16_t)p->nodes[ix->a].a;
		en.decl = ATTR_STRING_MAP;
		en.key = ix->k.s;
		en.klen = ix->k.len;
		en.k = p->nodes[p->args[r->a + 1]].k;
	}
	p->exprs[p->n_exprs] = en;
	sb.b = NULL;
	id = (int)p->n_exprs++;
out:
	free(sb.b);
	expr_arena_free(&arena);
	return id;
}

uint32_t expr_count(const struct expr_program *p)
{
	return p->n_exprs;
}

enum attr_type expr_type(const struct expr_program *p, uint32_t id)
{
	return id < p->n_exprs ? (enum attr_type)p->exprs[id].type : ATTR_NONE;
}

const char *expr_text(const struct expr_program *p, uint32_t id)
{
	return id < p->n_exprs ? p->exprs[id].text : NULL;
}

bool expr_constant(const struct expr_program *p, uint32_t id,
		   struct attr_value *out)
{
	if (id >= p->n_exprs)
		return false;
	const struct enode *e = &p->nodes[p->exprs[id].root];
	if (e->op != OP_CONST)
		return false;
	*out = e->k;
	return true;
}

bool expr_load_or_const(const struct expr_program *p, uint32_t id,
			uint32_t *slot, enum attr_type *decl,
			struct attr_value *k)
{
	if (id >= p->n_exprs)
		return false;
	const struct expr_entry *en = &p->exprs[id];
	const struct enode *r = &p->nodes[en->root];
	if (en->shape == SHAPE_LOAD_K) {
		*slot = en->slot;
		*decl = (enum attr_type)en->decl;
		*k = en->k;
		return true;
	}
	if (r->op == OP_LOAD) { /* the attribute alone: absent is an error */
		*slot = r->a;
		*decl = (enum attr_type)r->type;
		*k = (struct attr_value){.type = ATTR_NONE};
		return true;
	}
	return false;
}

uint32_t expr_node_count(const struct expr_program *p)
{
	return p->n_nodes;
}

static bool reads_node(const struct expr_program *p, uint32_t ni,
		       uint64_t *slots, size_t nwords)
{
	const struct enode *e = &p->nodes[ni];
	bool ok = true;
	uint32_t k[3];
	int n = operands(e, k);

	if (e->op == OP_LOAD) {
		if (e->a / 64 >= nwords)
			return false;
		slots[e->a / 64] |= 1ull << (e->a % 64);
	}
	if (n < 0) /* OP_OR */
		for (uint32_t i = 0; i < e->n; i++)
			ok &= reads_node(p, p->args[e->a + i], slots, nwords);
	for (int i = 0; i < n; i++)
		ok &= reads_node(p, k[i], slots, nwords);
	return ok;
}

bool expr_reads(const struct expr_program *p, uint32_t id, uint64_t *slots,
		size_t nwords)
{
	if (id >= p->n_exprs)
		return false;
	return reads_node(p, p->exprs[id].root, slots, nwords);
}
