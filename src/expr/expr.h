/*
 * expr -- the Mixer expression language (CEXL): parse, type-check, compile
 * and evaluate.
 *
 * A config generation compiles every expression it holds (rule matches,
 * instance values and dimensions, attribute bindings) into one *program*:
 *
 *	struct expr_program *p = expr_program_create(vocab);
 *	int id = expr_compile(p, text, len, &err);   // id >= 0, or -1 + err
 *	...                                           // more expressions
 *	if (expr_type(p, id) != ATTR_BOOL) ...        // caller checks kinds
 *
 * The program is then immutable and shared by every shard thread. Each
 * thread owns a scratch (memo + string arena) and, per record:
 *
 *	expr_scratch_begin(s);                        // forget the last record
 *	rc = expr_eval(p, id, table, s, &val);        // 0, or -EXPR_E_*
 *
 * Identical expressions (same canonical text, see expr_text()) get the same
 * id, and a scratch memoizes results per id for the current record, so an
 * expression used by several instances is evaluated once per record. A
 * caller that knows a rule's ids up front (agg) does much better with a
 * *plan* (expr_plan_create_guarded(), below): the rule's match and its
 * instances' values and dimensions lowered once into straight-line code
 * that fills an array of value pointers, one call per rule and record --
 * about half the cost of expr_eval_batch() + expr_result() on the seed
 * (bench_expr). expr_eval_batch() remains for callers without a plan.
 *
 * Attribute names are resolved against the attr_vocab at compile time into
 * slots; evaluation reads attr_table slots directly and never hashes a name.
 * Names that are not attributes of a record -- the outputs `$out.<field>` of
 * an attribute-generating adapter -- are declared by the caller as ordinary
 * vocabulary entries before compiling (attr_vocab_add(vocab,
 * "$out.source_pod_uid", ATTR_STRING, NULL)); the adapter then stores its
 * outputs in those slots of the table before the bindings are evaluated.
 *
 * Language (reference/mixer.md), with mixd's decisions:
 *  - Go syntax and precedence: unary; * / %; + - |; == != < <= > >=; &&;
 *    ||. Binary * / % - parse but are rejected by the type checker, as in
 *    Mixer. Dotted names (`source.labels`) are one attribute name.
 *  - Literals: ints (decimal digits only, as Mixer's strconv.ParseInt(v,
 *    10, 64): 017 is 17, 0x1F is an error), floats, "strings" with Go
 *    escapes, `raw strings`, true, false. A string literal that parses as a
 *    Go duration ("0ms", "1h30m", "0") is a DURATION constant; where a
 *    STRING is required instead (`x | "0"` with x a STRING) it stays the
 *    string it spells.
 *  - `a | b | c`: the first operand that is present. As in Mixer's
 *    compiler, only an attribute, a map lookup m["k"] (the map or the key
 *    absent) or another `|` falls through; any other operand over
 *    something absent (toLower(x) | "d", conditional(c, x, y) | "d")
 *    fails the evaluation. A present "" is a value. The last operand never
 *    falls through: if it is absent the evaluation fails. Failures other
 *    than absence propagate. (Mixer fails a parenthesised `(f(x) | y) | z`
 *    whose f(x) is absent; mixd goes on to z.)
 *  - m["k"] outside a `|` operand: an absent map fails, a missing key is "".
 *  - ! is accepted on BOOL (Mixer 1.0 rejected it; Go syntax and later Istio
 *    accept it, and refusing it buys nothing). Unary - on INT64, DOUBLE,
 *    DURATION.
 *  - ==, != on every type (string-like types compare as strings; an IPv4
 *    address equals its IPv4-mapped IPv6 form); < <= > >= on INT64, DOUBLE,
 *    TIMESTAMP, DURATION; + on STRING (concatenation), INT64 (wraps),
 *    DOUBLE. &&, || and conditional() short-circuit.
 *  - Functions: conditional(BOOL, T, T) T; conditionalString(BOOL, STRING,
 *    STRING), an ordinary function to Mixer, so it evaluates (and fails
 *    on) both branches; ip(STRING) IP_ADDRESS; timestamp(STRING) TIMESTAMP (RFC
 *    3339); dnsName, email, uri (STRING -> typed, lightly validated);
 *    match(STRING, STRING) BOOL (trailing * = prefix, leading * = suffix,
 *    else exact); "re".matches(STRING) BOOL; s.startsWith(STRING),
 *    s.endsWith(STRING) BOOL; emptyStringMap() STRING_MAP; toLower(STRING)
 *    STRING (ASCII only; Go lowers all of Unicode); size(STRING or
 *    STRING_MAP) INT64 (bytes, entries).
 *  - matches() needs a constant pattern, compiled once with POSIX regcomp
 *    (REG_EXTENDED | REG_NOSUB), unanchored like Go's MatchString. Mixer
 *    used RE2: RE2-only syntax that would mean something else in POSIX ERE
 *    is rejected at load (a backslash before a letter or digit but \w \W
 *    \s \S \b \B, which glibc reads as RE2 does; any backslash inside a
 *    bracket expression; (?i) and named groups fail to compile); a
 *    non-greedy *? cannot change a yes/no match, nor can POSIX's
 *    leftmost-longest rule. What both accept but read differently is
 *    rewritten to Go's reading: '.' does not match a newline; \< \> \`
 *    \' are those characters; a '{' that starts no counted repetition
 *    ("a{,3}") is a '{'. Patterns work on bytes, not UTF-8 characters
 *    ("^.$" does not match "é").
 *  - Constant subexpressions are folded at compile time; a constant that
 *    cannot be converted (ip("nonsense")) is a compile error.
 */
#ifndef MIXD_EXPR_H
#define MIXD_EXPR_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attr/attr.h"

/** Deepest expression tree accepted; bounds the evaluator's recursion. */
#define EXPR_MAX_DEPTH 64

/** Why an evaluation failed. expr_eval() returns the negated code. */
enum expr_fail {
	EXPR_OK = 0,
	EXPR_E_ABSENT = 1, /**< an attribute (or a map) the result needs is
			        absent from the record */
	EXPR_E_TYPE = 2,   /**< a table value's type is not the attribute's
			        declared type */
	EXPR_E_VALUE = 3,  /**< a conversion failed: ip(), timestamp(),
			        dnsName(), email(), uri() */
	EXPR_E_NOMEM = 4,  /**< the scratch string arena is full */
	EXPR_E_REGEX = 5,  /**< regexec() failed for a reason other than no
			        match */
	EXPR_E_COUNT = 6,  /**< number of codes, for counter arrays */
};

/** Short name of a failure code ("absent", "type", ...), for metrics. */
const char *expr_fail_name(enum expr_fail code);

/** A compile error: where and why. */
struct expr_error {
	/** Byte offset of the offending token within the expression text;
	 *  the config layer turns it into file:line:col. */
	uint32_t offset;
	/** Human-readable message naming the expression, e.g.
	 *  `argument 2 of conditional: expected STRING, got INT64 in "..."`.*/
	char msg[512];
};

/** A compiled set of expressions. Opaque. */
struct expr_program;

/**
 * Create an empty program compiling against @vocab. The program keeps the
 * pointer: @vocab must outlive it and must not change while expressions
 * are being compiled (adding names between compiles is fine). NULL on
 * ENOMEM.
 */
struct expr_program *expr_program_create(const struct attr_vocab *vocab);

/** Free a program and everything it owns. NULL is fine. Not while any
 *  thread still evaluates it. */
void expr_program_destroy(struct expr_program *p);

/**
 * Parse, type-check, fold and add the expression @text (@len bytes, no NUL
 * needed) to @p. Returns its id (>= 0): the id of an identical expression
 * already in @p if there is one. On error returns -1 and fills @err (may be
 * NULL). Not thread-safe: compile from one thread, then share.
 */
int expr_compile(struct expr_program *p, const char *text, size_t len,
		 struct expr_error *err);

/** Number of distinct expressions (ids are 0 .. count-1). */
uint32_t expr_count(const struct expr_program *p);

/**
 * Static type of expression @id. A STRING expression's value may carry any
 * string-like runtime type (EMAIL, URI, DNS_NAME): compare with
 * attr_type_is_string() when that matters.
 */
enum attr_type expr_type(const struct expr_program *p, uint32_t id);

/** Canonical text of expression @id: fully parenthesized, used as the
 *  dedup key; owned by @p. */
const char *expr_text(const struct expr_program *p, uint32_t id);

/**
 * True if @id folded to a constant, which is then stored in *@out (strings
 * owned by @p). Evaluating such an expression never reads the table.
 */
bool expr_constant(const struct expr_program *p, uint32_t id,
		   struct attr_value *out);

/**
 * True if @id is `attribute | constant`, the usual metric value
 * (`request.size | 0`), or the attribute alone: then *@slot is the
 * attribute's slot, *@decl its declared type and *@k the constant
 * (strings owned by @p; type ATTR_NONE for the attribute alone). Its value
 * is the attribute when the record has it -- an error if the attribute's
 * type is not @decl, string-like types standing for one another -- and
 * else the constant (alone: an error, the attribute is absent). A caller
 * may compute that itself.
 */
bool expr_load_or_const(const struct expr_program *p, uint32_t id,
			uint32_t *slot, enum attr_type *decl,
			struct attr_value *k);

/**
 * Mark in @slots, a bitmap of @nwords 64-bit words indexed by attribute
 * slot, every attribute expression @id reads. An expression's value is a
 * function of those attributes alone (CEXL has no clock and no state), so
 * a caller may reuse a result for a record whose marked attributes are
 * equal. Returns false if a slot fell outside the bitmap.
 */
bool expr_reads(const struct expr_program *p, uint32_t id, uint64_t *slots,
		size_t nwords);

/** Number of compiled nodes over all expressions (a size measure). */
uint32_t expr_node_count(const struct expr_program *p);

/** One memoized result. Private to expr; public only for expr_eval(). */
struct expr_memo {
	uint32_t gen;
	int32_t rc;
	struct attr_value v;
};

/** Per-thread evaluation counters; the caller exports them. */
struct expr_stats {
	/** Expressions actually evaluated (memo misses). Memo hits are not
	 *  counted: a counter bumped on every hit is a store-to-load chain
	 *  across the whole record's worth of lookups. */
	uint64_t evals;
	uint64_t fail[EXPR_E_COUNT]; /**< evaluations failed, by reason */
};

/**
 * A thread's evaluation scratch: the memo of the current record and the
 * arena where strings built during evaluation (+, toLower) live. The
 * fields are private to expr; the struct is public so that expr_eval()'s
 * memo hit inlines. Never share one between threads.
 */
struct expr_scratch {
	uint32_t gen;   /* current record; memo entries of other gens are stale */
	uint32_t cap;   /* memo entries */
	struct expr_memo *memo;
	char *arena;
	size_t arena_used, arena_cap;
	struct expr_stats stats; /**< readable by the owner thread */
};

/** Default arena size of a scratch: generous for header-sized strings. */
#define EXPR_SCRATCH_ARENA_DEFAULT (64 * 1024)

/**
 * Create a scratch able to evaluate @p (may be NULL: reserve later) with
 * an arena of @arena_bytes (0: EXPR_SCRATCH_ARENA_DEFAULT). NULL on ENOMEM.
 */
struct expr_scratch *expr_scratch_create(const struct expr_program *p,
					 size_t arena_bytes);

/** Grow @s so it can evaluate @p (after a config reload). 0 / -ENOMEM. */
int expr_scratch_reserve(struct expr_scratch *s, const struct expr_program *p);

/** Free. NULL is fine. */
void expr_scratch_destroy(struct expr_scratch *s);

/** Called when the generation counter wraps; use expr_scratch_begin(). */
void expr_scratch_wrap_(struct expr_scratch *s);

/**
 * Start a new record: forget memoized results and free the string arena.
 * Values returned for the previous record become invalid if they pointed
 * into the arena.
 */
static inline void expr_scratch_begin(struct expr_scratch *s)
{
	if (__builtin_expect(++s->gen == 0, 0))
		expr_scratch_wrap_(s);
	s->arena_used = 0;
}

/** Evaluate @id without consulting the memo; stores the result in it. Use
 *  expr_eval(). */
int expr_eval_uncached(const struct expr_program *p, uint32_t id,
		       const struct attr_table *t, struct expr_scratch *s,
		       struct attr_value *out);

/**
 * Evaluate expression @id of @p against the record in @t. Returns 0 and
 * sets *@out, or returns -EXPR_E_* (see enum expr_fail) and counts the
 * failure in s->stats. Within one record (between expr_scratch_begin()
 * calls) a second call for the same id returns the memoized result, so @t
 * must not change during a record. *@out may point into @t's referents,
 * @p's constants or @s's arena; it is valid until the next
 * expr_scratch_begin(). @s must have been sized for @p. No allocation, no
 * locks: @p is read-only here.
 */
static inline int expr_eval(const struct expr_program *p, uint32_t id,
			    const struct attr_table *t, struct expr_scratch *s,
			    struct attr_value *out)
{
	if (__builtin_expect(id < s->cap, 1)) {
		const struct expr_memo *m = &s->memo[id];
		if (m->gen == s->gen) {
			*out = m->v;
			return m->rc;
		}
	}
	return expr_eval_uncached(p, id, t, s, out);
}

/**
 * Evaluate the @n expressions @ids (a rule's distinct values, dimensions
 * and matches, built once at config load) for the current record, into
 * @s's memo; read each result with expr_result(). Ids already evaluated
 * this record are skipped. This is expr_eval() without a call and a copy
 * per use: the way to evaluate a set of instances that share dimensions.
 * Returns how many of them failed (an id out of range counts as failed).
 */
unsigned expr_eval_batch(const struct expr_program *p, const uint32_t *ids,
			 size_t n, const struct attr_table *t,
			 struct expr_scratch *s);

/**
 * The result of @id for the current record, after expr_eval() or
 * expr_eval_batch() computed it: 0 and *@v pointing at the value (valid
 * until the next expr_scratch_begin()), or -EXPR_E_*. An id not evaluated
 * this record yields -EXPR_E_ABSENT.
 */
static inline int expr_result(const struct expr_scratch *s, uint32_t id,
			      const struct attr_value **v)
{
	if (__builtin_expect(id >= s->cap || s->memo[id].gen != s->gen, 0))
		return -EXPR_E_ABSENT;
	*v = &s->memo[id].v;
	return s->memo[id].rc;
}

/**
 * A plan: a fixed list of expressions (a rule's match, or the values and
 * dimensions of the rule's instances) lowered once, at config load, into
 * one straight-line program that evaluates all of them per record into an
 * array of value pointers. It is the fastest way to evaluate a set of
 * expressions that is known up front:
 *
 *  - no memo: no generation check or result copy per expression or use;
 *  - identical subexpressions of different expressions are computed once
 *    (`(context.reporter.kind | "inbound") == "outbound"` in two
 *    dimensions);
 *  - every `m["k"] | "default"` over one map is a single pass over it;
 *  - results are pointers to the table slot, a constant of the plan, or a
 *    value in the scratch arena: nothing is copied.
 *
 * Results and failures are those of expr_eval() for the same ids, and
 * each failed expression is counted once in s->stats.fail by reason, as
 * expr_eval() counts it (s->stats.evals grows by the number of distinct
 * ids). A plan does not read or fill the scratch's memo.
 *
 * The aggregator's pattern, per rule (one guarded plan: the match, then
 * the instances' values and dimensions):
 *
 *	// config load, once per rule
 *	uint32_t ids[] = {value0, dim0_0, dim0_1, ..., value1, dim1_0, ...};
 *	struct expr_plan *pl =
 *		expr_plan_create_guarded(prog, match_id, ids, n);
 *	uint32_t at[n];                 // where each use's result lands
 *	for (i = 0; i < n; i++) at[i] = expr_plan_index(pl, i);
 *	uint32_t g = expr_plan_guard(pl);
 *	// per shard thread: expr_plan_size(pl) pointers, reused per record
 *	const struct attr_value **res = calloc(expr_plan_size(pl), sizeof *res);
 *
 *	// per record
 *	expr_scratch_begin(s);          // once per record, for all rules
 *	expr_plan_eval(pl, table, s, res);
 *	if (!res[g] || !res[g]->b)
 *		continue;               // no match (or it failed): next rule
 *	for each instance, for each of its uses i:
 *		v = res[at[i]];         // NULL: failed -> skip the instance
 *
 * A rule without a match uses expr_plan_create() (or EXPR_PLAN_NO_GUARD).
 * A plan is immutable after creation: share it between shard threads;
 * each thread has its own scratch and result array.
 */
struct expr_plan;

/**
 * Build a plan evaluating the @n expression ids @ids of @p (duplicates are
 * fine: they share one result). @p must be complete: compiling more
 * expressions into it afterwards is fine, but the plan keeps a pointer to
 * @p, which must outlive it. The plan is immutable and may be shared by
 * threads. NULL on ENOMEM, or EINVAL (errno) if an id is out of range.
 */
struct expr_plan *expr_plan_create(const struct expr_program *p,
				   const uint32_t *ids, size_t n);

/** "No guard" for expr_plan_create_guarded(). */
#define EXPR_PLAN_NO_GUARD UINT32_MAX

/**
 * expr_plan_create() for a rule: @guard (a BOOL expression id, the rule's
 * match) is evaluated first, and the @ids only if it holds -- the way
 * Mixer dispatches a rule's instances, in one call per record. After
 * expr_plan_eval(), res[expr_plan_guard(pl)] is the guard's value (NULL if
 * it failed); when that is not true, no other expression was evaluated or
 * counted, and the other entries of res are stale. EINVAL if @guard is not
 * a BOOL expression. @guard may be EXPR_PLAN_NO_GUARD.
 */
struct expr_plan *expr_plan_create_guarded(const struct expr_program *p,
					   uint32_t guard, const uint32_t *ids,
					   size_t n);

/** Where a guarded plan's guard value lands in the result array. */
uint32_t expr_plan_guard(const struct expr_plan *pl);

/** Free a plan. NULL is fine. */
void expr_plan_destroy(struct expr_plan *pl);

/**
 * Number of entries of the result array expr_plan_eval() fills: one per
 * distinct result (ids that compute the same value share one) and per
 * temporary the plan keeps.
 */
uint32_t expr_plan_size(const struct expr_plan *pl);

/**
 * Bytes of the scratch arena one expr_plan_eval() of @pl takes for its
 * own values, besides the strings its expressions make. A scratch that
 * serves several plans between two expr_scratch_begin() calls needs their
 * sum, and room for the strings, in its arena.
 */
size_t expr_plan_arena_bytes(const struct expr_plan *pl);

/**
 * Where the result of ids[@i] (the @i-th id given to expr_plan_create())
 * lands in the result array. Compute it once, at config load.
 */
uint32_t expr_plan_index(const struct expr_plan *pl, size_t i);

/**
 * Evaluate every expression of @pl against the record in @t. @res has
 * expr_plan_size(@pl) entries; afterwards res[expr_plan_index(pl, i)] is
 * the value of ids[i], or NULL if its evaluation failed. The values are
 * valid until the next expr_scratch_begin(@s) (they may live in @s's
 * arena, which also holds the plan's per-record values, a few dozen bytes
 * per map key: a scratch whose arena is full fails every expression with
 * EXPR_E_NOMEM). Other entries of @res are scratch. Returns how many
 * distinct expressions failed. No allocation, no locks.
 */
unsigned expr_plan_eval(const struct expr_plan *pl, const struct attr_table *t,
			struct expr_scratch *s, const struct attr_value **res);

/**
 * Compile @pattern, a regular expression in the syntax of Go's regexp
 * (Mixer's, for `matches` and the list adapter's REGEX entries), into @re
 * as a POSIX extended regex (REG_NOSUB) that matches the same strings:
 * '.' stops at a newline, Go's literal escapes are kept literal, and
 * patterns the two libraries read differently (\d, a backslash in a
 * bracket expression) or that would compile in exponential time (a
 * repetition of a repetition, a count over 1000) are refused. Matching
 * with regexec() is unanchored, as Go's MatchString. Returns 0, or -1
 * with a one-line reason in @why (@why_len bytes); regfree(@re) after 0.
 */
int expr_regex_compile(const char *pattern, regex_t *re, char *why,
		       size_t why_len);

#endif /* MIXD_EXPR_H */
