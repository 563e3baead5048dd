/*
 * fuzz_expr -- compile arbitrary bytes as an expression against the
 * built-in vocabulary (plus a few $out names); if it compiles, evaluate it
 * against a record with some attributes set and check the result's type;
 * then evaluate it through a plan (expr_plan_eval(), guarded by itself
 * when it is a BOOL) and check the plan agrees with expr_eval().
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attr/attr.h"
#include "expr/expr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct attr_vocab *vocab;
static struct attr_table *table;

static void set_str(unsigned slot, const char *s)
{
	struct attr_value v = {.type = ATTR_STRING, .len = (uint32_t)strlen(s),
			       .s = s};
	attr_table_set(table, slot, &v);
}

/* Same type and value; doubles bitwise, so that a NaN equals itself. */
static bool same_value(const struct attr_value *a, const struct attr_value *b)
{
	if (a->type != b->type)
		return false;
	if (attr_type_is_string((enum attr_type)a->type))
		return a->len == b->len &&
		       (a->len == 0 || memcmp(a->s, b->s, a->len) == 0);
	if (a->type == ATTR_DOUBLE)
		return memcmp(&a->d, &b->d, sizeof a->d) == 0;
	return attr_value_equal(a, b);
}

/* The plan of @id, with @id also its guard when it is a BOOL, agrees with
 * expr_eval()'s @rc and @v: the same success, type and value. */
static void check_plan(struct expr_program *p, uint32_t id, int rc,
		       const struct attr_value *v)
{
	bool guarded = expr_type(p, id) == ATTR_BOOL;
	struct expr_plan *pl =
		expr_plan_create_guarded(p, guarded ? id : EXPR_PLAN_NO_GUARD,
					 &id, 1);
	/* the room expr_eval() had for strings, and the plan's own values
	 * besides (a shard sizes its scratch so: series.c) */
	struct expr_scratch *s = expr_scratch_create(
		p, 4096 + (pl ? expr_plan_arena_bytes(pl) : 0));
	const struct attr_value **res =
		pl ? calloc(expr_plan_size(pl) + 1, sizeof *res) : NULL;
	if (pl && s && res) {
		expr_scratch_begin(s);
		unsigned failed = expr_plan_eval(pl, table, s, res);
		const struct attr_value *pv = res[expr_plan_index(pl, 0)];
		if (guarded && pv != res[expr_plan_guard(pl)])
			abort(); /* the guard and the id share a register */
		if ((rc == 0) != (pv != NULL) ||
		    failed != (unsigned)(rc != 0))
			abort();
		if (pv && !same_value(pv, v))
			abort();
		if (rc < 0 && s->stats.fail[-rc] != 1)
			abort(); /* counted once, for the same reason */
	}
	free(res);
	expr_scratch_destroy(s);
	expr_plan_destroy(pl);
}

static void setup(void)
{
	static const uint8_t labels[] = {
		2, 0, 0, 0, 5, 0, 0, 0, 'i', 's', 't', 'i', 'o', 7, 0, 0, 0,
		'r', 'e', 'v', 'i', 'e', 'w', 's', 7, 0, 0, 0, 'v', 'e', 'r',
		's', 'i', 'o', 'n', 2, 0, 0, 0, 'v', '2'};
	vocab = attr_vocab_create();
	attr_vocab_add(vocab, "$out.source_pod_uid", ATTR_STRING, NULL);
	attr_vocab_add(vocab, "$out.source_labels", ATTR_STRING_MAP, NULL);
	table = calloc(1, sizeof *table);
	if (!vocab || !table)
		abort();
	set_str(MIXD_ATTR_SOURCE_UID, "kubernetes://reviews-v2.abc");
	set_str(MIXD_ATTR_SOURCE_NAME, "");
	set_str(MIXD_ATTR_CONTEXT_PROTOCOL, "http");
	set_str(MIXD_ATTR_CONTEXT_REPORTER_KIND, "outbound");
	set_str(MIXD_ATTR_REQUEST_PATH, "/api/v1/Items");
	set_str(MIXD_ATTR_REQUEST_HOST, "Example.COM");
	struct attr_value v = {.type = ATTR_INT64, .i = 404};
	attr_table_set(table, MIXD_ATTR_RESPONSE_CODE, &v);
	v = (struct attr_value){.type = ATTR_INT64, .i = INT64_MAX};
	attr_table_set(table, MIXD_ATTR_REQUEST_SIZE, &v);
	v = (struct attr_value){.type = ATTR_DURATION, .i = 1500000000};
	attr_table_set(table, MIXD_ATTR_RESPONSE_DURATION, &v);
	v = (struct attr_value){.type = ATTR_TIMESTAMP, .i = INT64_MIN};
	attr_table_set(table, MIXD_ATTR_REQUEST_TIME, &v);
	v = (struct attr_value){.type = ATTR_BOOL, .b = true};
	attr_table_set(table, MIXD_ATTR_CONNECTION_MTLS, &v);
	v = (struct attr_value){.type = ATTR_IP, .len = 4, .ip = {10, 0, 0, 1}};
	attr_table_set(table, MIXD_ATTR_SOURCE_IP, &v);
	v = (struct attr_value){.type = ATTR_STRING_MAP,
				.len = sizeof labels, .map = labels};
	attr_table_set(table, MIXD_ATTR_SOURCE_LABELS, &v);
	/* a value whose type contradicts the vocabulary */
	v = (struct attr_value){.type = ATTR_INT64, .i = 1};
	attr_table_set(table, MIXD_ATTR_SOURCE_PRINCIPAL, &v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!vocab)
		setup();
	struct expr_program *p = expr_program_create(vocab);
	if (!p)
		return 0;
	struct expr_error err;
	int id = expr_compile(p, (const char *)data, size, &err);
	if (id < 0) {
		if (!memchr(err.msg, 0, sizeof err.msg))
			abort(); /* message must be terminated */
	} else {
		/* compiling it twice yields the same id */
		if (expr_compile(p, (const char *)data, size, NULL) != id)
			abort();
		struct expr_scratch *s = expr_scratch_create(p, 4096);
		if (s) {
			expr_scratch_begin(s);
			struct attr_value v;
			int rc = expr_eval(p, (uint32_t)id, table, s, &v);
			enum attr_type t = expr_type(p, (uint32_t)id);
			if (rc == 0 && v.type != t &&
			    !(attr_type_is_string(t) &&
			      attr_type_is_string((enum attr_type)v.type)))
				abort(); /* the checker's type is the truth */
			if (rc > 0 || rc <= -EXPR_E_COUNT)
				abort();
			/* memoized: the same answer again */
			struct attr_value v2;
			if (expr_eval(p, (uint32_t)id, table, s, &v2) != rc)
				abort();
			check_plan(p, (uint32_t)id, rc, &v);
			expr_scratch_destroy(s);
		}
	}
	expr_program_destroy(p);
	return 0;
}
