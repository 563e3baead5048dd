/*
 * fuzz_expr -- compile arbitrary bytes as an expression against the
 * built-in vocabulary (plus a few $out names); if it compiles, evaluate it
 * against a record with some attributes set and check the result's type.
 */
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
			expr_scratch_destroy(s);
		}
	}
	expr_program_destroy(p);
	return 0;
}
