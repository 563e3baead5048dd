/*
 * test_expr -- CEXL semantics: every literal form, operator and function,
 * presence vs emptiness for |, map indexing, short-circuiting, type errors,
 * constant folding, dedup and memoization.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "attr/attr.h"
#include "expr/expr.h"

/* ---- fixture: a proxy-like record ---------------------------------------- */

struct fixture {
	struct attr_vocab *vocab;
	struct attr_table table;
	uint8_t labels[128];
	uint8_t headers[8];
	int slot_double, slot_out_uid, slot_out_labels;
};

static size_t map_encode(uint8_t *buf, const char *const *kv, uint32_t n)
{
	size_t off = 0;
	memcpy(buf, &n, 4); /* tests run on little-endian hosts */
	off = 4;
	for (uint32_t i = 0; i < 2 * n; i++) {
		uint32_t l = (uint32_t)strlen(kv[i]);
		memcpy(buf + off, &l, 4);
		memcpy(buf + off + 4, kv[i], l);
		off += 4 + l;
	}
	return off;
}

static void set_str(struct attr_table *t, unsigned slot, const char *s)
{
	struct attr_value v = {.type = ATTR_STRING,
			       .len = (uint32_t)strlen(s), .s = s};
	attr_table_set(t, slot, &v);
}

static void set_int(struct attr_table *t, unsigned slot, enum attr_type ty,
		    int64_t i)
{
	struct attr_value v = {.type = (uint8_t)ty, .i = i};
	attr_table_set(t, slot, &v);
}

static struct fixture *fixture_new(void)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	f->vocab = attr_vocab_create();
	assert_non_null(f->vocab);
	f->slot_double = attr_vocab_add(f->vocab, "test.double", ATTR_DOUBLE,
					NULL);
	f->slot_out_uid = attr_vocab_add(f->vocab, "$out.source_pod_uid",
					 ATTR_STRING, NULL);
	f->slot_out_labels = attr_vocab_add(f->vocab, "$out.source_labels",
					    ATTR_STRING_MAP, NULL);
	assert_true(f->slot_double >= 0 && f->slot_out_uid >= 0 &&
		    f->slot_out_labels >= 0);

	struct attr_table *t = &f->table;
	attr_table_clear(t);
	set_str(t, MIXD_ATTR_SOURCE_UID, "kubernetes://reviews-v2.abc");
	set_str(t, MIXD_ATTR_SOURCE_NAME, ""); /* present but empty */
	set_int(t, MIXD_ATTR_DESTINATION_PORT, ATTR_INT64, 9080);
	set_int(t, MIXD_ATTR_REQUEST_SIZE, ATTR_INT64, 100);
	set_int(t, MIXD_ATTR_RESPONSE_CODE, ATTR_INT64, 404);
	set_int(t, MIXD_ATTR_RESPONSE_DURATION, ATTR_DURATION, 1500000000);
	set_int(t, MIXD_ATTR_REQUEST_TIME, ATTR_TIMESTAMP,
		1546300800LL * 1000000000LL); /* 2019-01-01T00:00:00Z */
	set_str(t, MIXD_ATTR_CONTEXT_PROTOCOL, "http");
	set_str(t, MIXD_ATTR_CONTEXT_REPORTER_KIND, "outbound");
	set_str(t, MIXD_ATTR_REQUEST_PATH, "/api/v1/Items");
	set_str(t, MIXD_ATTR_REQUEST_HOST, "Example.COM");
	set_str(t, (unsigned)f->slot_out_uid, "pod-1");

	struct attr_value v = {.type = ATTR_BOOL, .b = true};
	attr_table_set(t, MIXD_ATTR_CONNECTION_MTLS, &v);
	v = (struct attr_value){.type = ATTR_DOUBLE, .d = 2.5};
	attr_table_set(t, (unsigned)f->slot_double, &v);
	v = (struct attr_value){.type = ATTR_IP, .len = 4,
				.ip = {10, 0, 0, 1}};
	attr_table_set(t, MIXD_ATTR_SOURCE_IP, &v);

	static const char *const kv[] = {"istio", "reviews", "version", "v2"};
	v = (struct attr_value){.type = ATTR_STRING_MAP, .map = f->labels};
	v.len = (uint32_t)map_encode(f->labels, kv, 2);
	attr_table_set(t, MIXD_ATTR_SOURCE_LABELS, &v);
	v = (struct attr_value){.type = ATTR_STRING_MAP, .map = f->headers};
	v.len = (uint32_t)map_encode(f->headers, NULL, 0);
	attr_table_set(t, MIXD_ATTR_REQUEST_HEADERS, &v);
	return f;
}

static void fixture_free(struct fixture *f)
{
	attr_vocab_destroy(f->vocab);
	free(f);
}

static int setup(void **state)
{
	*state = fixture_new();
	return 0;
}

static int teardown(void **state)
{
	fixture_free(*state);
	return 0;
}

/* Text form of a value, the expected column of the table. */
static void render(const struct attr_value *v, char *buf, size_t cap)
{
	switch (v->type) {
	case ATTR_STRING:
	case ATTR_EMAIL:
	case ATTR_URI:
	case ATTR_DNS_NAME:
		snprintf(buf, cap, "%.*s", (int)v->len, v->s);
		break;
	case ATTR_INT64:
		snprintf(buf, cap, "%lld", (long long)v->i);
		break;
	case ATTR_DOUBLE:
		snprintf(buf, cap, "%g", v->d);
		break;
	case ATTR_BOOL:
		snprintf(buf, cap, "%s", v->b ? "true" : "false");
		break;
	case ATTR_DURATION:
		attr_format_duration(v->i, buf, cap);
		break;
	case ATTR_TIMESTAMP:
		attr_format_timestamp(v->i, buf, cap);
		break;
	case ATTR_IP:
		inet_ntop(v->len == 4 ? AF_INET : AF_INET6, v->ip, buf,
			  (socklen_t)cap);
		break;
	case ATTR_STRING_MAP:
		snprintf(buf, cap, "map[%u]", attr_map_count(v));
		break;
	default:
		snprintf(buf, cap, "<type %d>", v->type);
	}
}

/* ---- plans agree with expr_eval() -------------------------------------------- */

/*
 * Evaluate @ids with a plan and one by one with expr_eval(), each in a
 * fresh scratch: same success, same value, same failure counts. Returns
 * false (and prints why) on a difference.
 */
static bool plan_agrees(const struct expr_program *p, const uint32_t *ids,
			size_t n, const struct attr_table *t, size_t arena)
{
	struct expr_plan *pl = expr_plan_create(p, ids, n);
	assert_non_null(pl);
	struct expr_scratch *s1 = expr_scratch_create(p, arena);
	struct expr_scratch *s2 = expr_scratch_create(p, arena);
	const struct attr_value **res =
		calloc(expr_plan_size(pl), sizeof *res);
	assert_true(s1 && s2 && res);
	bool ok = true;
	for (int rec = 0; rec < 2; rec++) { /* twice: arena reuse */
		expr_scratch_begin(s1);
		expr_scratch_begin(s2);
		unsigned failed = expr_plan_eval(pl, t, s1, res);
		unsigned want_failed;
		for (size_t i = 0; i < n; i++) {
			struct attr_value v;
			int rc = expr_eval(p, ids[i], t, s2, &v);
			const struct attr_value *pv =
				res[expr_plan_index(pl, i)];
			char a[700] = "", b[700] = "";
			if (rc == 0)
				render(&v, a, sizeof a);
			if (pv)
				render(pv, b, sizeof b);
			if ((rc == 0) != (pv != NULL) || strcmp(a, b) != 0 ||
			    (pv && pv->type != v.type)) {
				print_error("plan: %s: eval rc %d \"%s\", plan "
					    "%s \"%s\"\n",
					    expr_text(p, ids[i]), rc, a,
					    pv ? "ok" : "failed", b);
				ok = false;
			}
		}
		want_failed = 0;
		for (int c = 0; c < EXPR_E_COUNT; c++) {
			if (s1->stats.fail[c] != s2->stats.fail[c]) {
				print_error("plan: fail[%s] %llu, eval %llu\n",
					    expr_fail_name((enum expr_fail)c),
					    (unsigned long long)s1->stats.fail[c],
					    (unsigned long long)s2->stats.fail[c]);
				ok = false;
			}
			want_failed += (unsigned)s2->stats.fail[c];
		}
		if (s1->stats.evals != s2->stats.evals) {
			print_error("plan: %llu evals, eval %llu\n",
				    (unsigned long long)s1->stats.evals,
				    (unsigned long long)s2->stats.evals);
			ok = false;
		}
		if (rec == 0 && failed != want_failed) {
			print_error("plan: %u failed, eval %u\n", failed,
				    want_failed);
			ok = false;
		}
	}
	free(res);
	expr_scratch_destroy(s1);
	expr_scratch_destroy(s2);
	expr_plan_destroy(pl);
	return ok;
}

/* ---- the table -------------------------------------------------------------- */

enum want { V, CE, EF };

struct tcase {
	const char *expr;
	enum want want;
	enum attr_type type; /* V: static type */
	const char *value;   /* V: rendered value; CE: message substring */
	int fail;            /* EF: expected reason */
};

#define S ATTR_STRING
#define I ATTR_INT64
#define D ATTR_DOUBLE
#define B ATTR_BOOL
#define DUR ATTR_DURATION
#define TS ATTR_TIMESTAMP
#define IPT ATTR_IP
#define MAP ATTR_STRING_MAP

static const struct tcase cases[] = {
	/* literals */
	{"1", V, I, "1", 0},
	/* Mixer: strconv.ParseInt(literal, 10, 64) after Go's scanner */
	{"017", V, I, "17", 0},
	{"007", V, I, "7", 0},
	{"0", V, I, "0", 0},
	{"0x1F", CE, 0, "decimal digits only", 0},
	{"0o17", CE, 0, "decimal digits only", 0},
	{"0b101", CE, 0, "decimal digits only", 0},
	{"1_000", CE, 0, "decimal digits only", 0},
	{"019", CE, 0, "decimal digits only", 0},
	{"9223372036854775807", V, I, "9223372036854775807", 0},
	{"1.5", V, D, "1.5", 0},
	{".5", V, D, "0.5", 0},
	{"1e3", V, D, "1000", 0},
	{"2.5e-1", V, D, "0.25", 0},
	{"\"abc\"", V, S, "abc", 0},
	{"\"\"", V, S, "", 0},
	{"\"a\\tb\"", V, S, "a\tb", 0},
	{"\"\\x41\\u00e9\"", V, S, "A\xc3\xa9", 0},
	{"\"\\101\\U0001F600\"", V, S, "A\xf0\x9f\x98\x80", 0},
	{"\"\\\"q\\\\\"", V, S, "\"q\\", 0},
	{"`raw\\n`", V, S, "raw\\n", 0},
	{"true", V, B, "true", 0},
	{"false", V, B, "false", 0},
	/* Mixer lowercases a bare name before testing for the constants */
	{"True", V, B, "true", 0},
	{"FALSE", V, B, "false", 0},
	{"conditional(tRuE && !False, \"a\", \"b\")", V, S, "a", 0},
	/* string literals that are durations */
	{"\"10s\"", V, DUR, "10s", 0},
	{"\"1h30m\"", V, DUR, "1h30m0s", 0},
	{"\"0\"", V, DUR, "0s", 0},
	{"\"0ms\"", V, DUR, "0s", 0},
	{"\"-1.5s\"", V, DUR, "-1.5s", 0},
	{"\".5s\"", V, DUR, "500ms", 0},
	{"\"15ms\"", V, DUR, "15ms", 0},
	{"\"1us\"", V, DUR, "1\xc2\xb5s", 0},
	{"\"10x\"", V, S, "10x", 0},
	{"\"1\"", V, S, "1", 0},
	/* lexical and syntax errors */
	{"\"abc", CE, 0, "not terminated", 0},
	{"\"\\q\"", CE, 0, "unknown escape", 0},
	{"\"\\xZZ\"", CE, 0, "invalid escape", 0},
	{"\"\\uD800\"", CE, 0, "Unicode", 0},
	{"9223372036854775808", CE, 0, "out of range", 0},
	{"09", CE, 0, "malformed integer", 0},
	{"1.2.3", CE, 0, "malformed float", 0},
	{"'a'", CE, 0, "rune", 0},
	{"1 +", CE, 0, "unexpected end", 0},
	{"", CE, 0, "unexpected end", 0},
	{"(1", CE, 0, "expected ')'", 0},
	{"1 2", CE, 0, "unexpected token", 0},
	{"a = b", CE, 0, "assignment", 0},
	{"1 & 2", CE, 0, "operator &", 0},
	{"source.uid[\"a\"", CE, 0, "expected ']'", 0},
	{"f(1,", CE, 0, "unexpected end", 0},
	{"#", CE, 0, "unexpected character", 0},
	{"foo.bar", CE, 0, "unknown attribute \"foo.bar\"", 0},
	{"source.uid | foo.bar", CE, 0, "unknown attribute \"foo.bar\"", 0},
	/* comments, as Go's parser drops them */
	{"destination.uid /* absent */ | \"unknown\"", V, S, "unknown", 0},
	{"1 + // one more\n 2", V, I, "3", 0},
	{"/**/1/**/", V, I, "1", 0},
	{"1 + /* plus */ 2", V, I, "3", 0},
	{"6 / 2", CE, 0, "operator / is not supported", 0},
	{"1 // all of it", V, I, "1", 0},
	{"1 /* never closed", CE, 0, "comment not terminated", 0},
	{"1 /*/", CE, 0, "comment not terminated", 0},
	/* attributes */
	{"source.uid", V, S, "kubernetes://reviews-v2.abc", 0},
	{"source.name", V, S, "", 0},
	{"destination.port", V, I, "9080", 0},
	{"response.duration", V, DUR, "1.5s", 0},
	{"connection.mtls", V, B, "true", 0},
	{"source.ip", V, IPT, "10.0.0.1", 0},
	{"request.time", V, TS, "2019-01-01T00:00:00Z", 0},
	{"test.double", V, D, "2.5", 0},
	{"$out.source_pod_uid", V, S, "pod-1", 0},
	{"destination.uid", EF, 0, NULL, EXPR_E_ABSENT},
	{"$out.source_labels", EF, 0, NULL, EXPR_E_ABSENT},
	/* | : presence, not emptiness */
	{"destination.uid | \"unknown\"", V, S, "unknown", 0},
	{"source.uid | \"unknown\"", V, S, "kubernetes://reviews-v2.abc", 0},
	{"source.name | \"unknown\"", V, S, "", 0},
	{"destination.uid | source.principal | \"x\"", V, S, "x", 0},
	{"destination.uid | source.uid | \"x\"", V, S,
	 "kubernetes://reviews-v2.abc", 0},
	{"destination.uid | source.principal", EF, 0, NULL, EXPR_E_ABSENT},
	/* Mixer: only an attribute, m["k"] or a `|` falls through */
	{"toLower(destination.uid) | \"d\"", EF, 0, NULL, EXPR_E_ABSENT},
	{"conditional(connection.mtls, destination.uid, \"b\") | \"d\"", EF,
	 0, NULL, EXPR_E_ABSENT},
	{"(destination.uid == \"x\") | false", EF, 0, NULL, EXPR_E_ABSENT},
	{"toLower(source.uid) | \"d\"", V, S, "kubernetes://reviews-v2.abc", 0},
	/* conditionalString() is a function to Mixer: every argument runs */
	{"conditionalString(true, \"a\", destination.uid)", EF, 0, NULL,
	 EXPR_E_ABSENT},
	{"conditionalString(connection.mtls, \"a\", destination.uid)", EF, 0,
	 NULL, EXPR_E_ABSENT},
	{"conditionalString(connection.mtls, source.uid, \"b\")", V, S,
	 "kubernetes://reviews-v2.abc", 0},
	{"conditionalString(false, \"a\", \"b\")", V, S, "b", 0},
	{"conditional(true, \"a\", destination.uid)", V, S, "a", 0},
	{"destination.labels[\"app\"] | (destination.uid | \"d\")", V, S, "d",
	 0},
	{"response.code | 200", V, I, "404", 0},
	{"request.total_size | 200", V, I, "200", 0},
	{"response.duration | \"0ms\"", V, DUR, "1.5s", 0},
	{"connection.duration | \"0ms\"", V, DUR, "0s", 0},
	{"destination.uid | \"0\"", V, S, "0", 0},
	{"destination.uid | \"10s\"", V, S, "10s", 0},
	{"\"10s\" | destination.uid", V, S, "10s", 0},
	{"source.ip | ip(\"0.0.0.0\")", V, IPT, "10.0.0.1", 0},
	{"destination.ip | ip(\"0.0.0.0\")", V, IPT, "0.0.0.0", 0},
	{"destination.labels | emptyStringMap()", V, MAP, "map[0]", 0},
	{"source.labels | emptyStringMap()", V, MAP, "map[2]", 0},
	{"$out.source_labels | source.labels", V, MAP, "map[2]", 0},
	{"$out.source_pod_uid | \"unknown\"", V, S, "pod-1", 0},
	{"\"a\" | destination.uid", V, S, "a", 0},
	{"(destination.uid | \"a\") | \"b\"", V, S, "a", 0},
	{"destination.uid | (source.principal | \"c\")", V, S, "c", 0},
	{"api.protocol | context.protocol | \"unknown\"", V, S, "http", 0},
	{"destination.uid | 1", CE, 0, "argument 2 of |: expected STRING, got INT64", 0},
	{"response.code | \"x\"", CE, 0, "argument 2 of |: expected INT64, got STRING", 0},
	{"response.duration | \"abc\"", CE, 0, "expected DURATION, got STRING", 0},
	{"source.labels | \"x\"", CE, 0, "expected STRING_MAP, got STRING", 0},
	/* precedence */
	{"destination.uid | \"x\" == \"x\"", V, B, "true", 0},
	{"source.uid | \"x\" == \"x\"", V, B, "false", 0},
	{"1 + 2 == 3", V, B, "true", 0},
	{"true || false && false", V, B, "true", 0},
	{"(true || false) && false", V, B, "false", 0},
	{"1 + 2 < 4 && \"a\" + \"b\" == \"ab\"", V, B, "true", 0},
	{"!true == false", V, B, "true", 0},
	{"-1 + 2", V, I, "1", 0},
	{"- -3", V, I, "3", 0},
	{"+3", V, I, "3", 0},
	/* equality and ordering */
	{"response.code == 404", V, B, "true", 0},
	{"response.code != 404", V, B, "false", 0},
	{"404 == response.code", V, B, "true", 0},
	{"response.code == 404.0", CE, 0, "argument 2 of ==: expected INT64, got DOUBLE", 0},
	{"\"a\" == \"a\"", V, B, "true", 0},
	{"\"a\" == \"b\"", V, B, "false", 0},
	{"\"a\" != \"b\"", V, B, "true", 0},
	{"context.protocol == \"http\"", V, B, "true", 0},
	{"context.protocol == \"htt\"", V, B, "false", 0},
	{"context.protocol == \"http\" || context.protocol == \"grpc\"", V, B,
	 "true", 0},
	{"context.protocol == \"grpc\" || context.protocol == \"tcp\"", V, B,
	 "false", 0},
	{"context.protocol == request.path", V, B, "false", 0},
	{"source.uid == source.uid", V, B, "true", 0},
	{"source.ip == ip(\"10.0.0.1\")", V, B, "true", 0},
	{"source.ip == ip(\"::ffff:10.0.0.1\")", V, B, "true", 0},
	{"source.ip != ip(\"10.0.0.2\")", V, B, "true", 0},
	{"connection.mtls == true", V, B, "true", 0},
	{"response.duration == \"1500ms\"", V, B, "true", 0},
	{"response.duration > \"1s\"", V, B, "true", 0},
	{"response.duration <= \"1s\"", V, B, "false", 0},
	{"request.time < timestamp(\"2020-01-01T00:00:00Z\")", V, B, "true", 0},
	{"request.time >= timestamp(\"2019-01-01T00:00:00Z\")", V, B, "true", 0},
	{"request.time == timestamp(\"2019-01-01T01:00:00+01:00\")", V, B, "true", 0},
	{"1 < 2", V, B, "true", 0},
	{"2 <= 2", V, B, "true", 0},
	{"3 > 4", V, B, "false", 0},
	{"1.5 >= 1.5", V, B, "true", 0},
	{"test.double > 2.0", V, B, "true", 0},
	{"destination.port < request.size", V, B, "false", 0},
	/* strings in Go's order, as Mixer's LTString and its kin */
	{"\"a\" < \"b\"", V, B, "true", 0},
	{"\"ab\" < \"a\"", V, B, "false", 0},
	{"\"a\" <= \"a\"", V, B, "true", 0},
	{"\"\" < \"a\"", V, B, "true", 0},
	{"\"B\" > \"a\"", V, B, "false", 0},
	{"request.path >= \"/api/v1/Items\"", V, B, "true", 0},
	{"request.path > \"/api/v1/Items\"", V, B, "false", 0},
	{"request.path < \"/api/v1/Items/\"", V, B, "true", 0},
	{"\"\\xff\" > \"a\"", V, B, "true", 0},
	{"request.path < 3", CE, 0, "", 0},
	{"true < false", CE, 0, "got BOOL", 0},
	{"source.labels == source.labels", V, B, "true", 0},
	{"source.labels == emptyStringMap()", V, B, "false", 0},
	{"request.headers == emptyStringMap()", V, B, "true", 0},
	{"destination.port == \"9080\"", CE, 0, "expected INT64, got STRING", 0},
	{"email(\"a@b.com\") == \"a@b.com\"", V, B, "true", 0},
	{"destination.uid == \"x\"", EF, 0, NULL, EXPR_E_ABSENT},
	/* arithmetic */
	{"1 + 2", V, I, "3", 0},
	{"1.5 + 2.25", V, D, "3.75", 0},
	{"\"a\" + \"b\"", V, S, "ab", 0},
	{"source.name + \"x\"", V, S, "x", 0},
	{"request.host + \"|\" + request.path", V, S, "Example.COM|/api/v1/Items", 0},
	{"request.size + 1", V, I, "101", 0},
	{"test.double + 0.5", V, D, "3", 0},
	{"9223372036854775807 + 1", V, I, "-9223372036854775808", 0},
	{"\"1s\" + \"x\"", V, S, "1sx", 0},
	{"1 + \"a\"", CE, 0, "argument 2 of +: expected INT64, got STRING", 0},
	{"true + true", CE, 0, "expected STRING, INT64 or DOUBLE, got BOOL", 0},
	{"2 * 3", CE, 0, "operator * is not supported", 0},
	{"4 / 2", CE, 0, "operator / is not supported", 0},
	{"5 % 2", CE, 0, "operator % is not supported", 0},
	{"3 - 1", CE, 0, "operator - is not supported", 0},
	{"-response.code", V, I, "-404", 0},
	{"-test.double", V, D, "-2.5", 0},
	{"-\"1s\"", V, DUR, "-1s", 0},
	{"-\"abc\"", CE, 0, "argument 1 of unary -: expected INT64, DOUBLE or DURATION, got STRING", 0},
	{"-true", CE, 0, "got BOOL", 0},
	/* boolean logic and short-circuits */
	{"!connection.mtls", V, B, "false", 0},
	{"!!connection.mtls", V, B, "true", 0},
	{"!1", CE, 0, "argument 1 of !: expected BOOL, got INT64", 0},
	{"false && destination.uid == \"x\"", V, B, "false", 0},
	{"true || destination.uid == \"x\"", V, B, "true", 0},
	{"connection.mtls || destination.uid == \"x\"", V, B, "true", 0},
	{"!connection.mtls && destination.uid == \"x\"", V, B, "false", 0},
	{"connection.mtls && destination.uid == \"x\"", EF, 0, NULL, EXPR_E_ABSENT},
	{"true && connection.mtls", V, B, "true", 0},
	{"false || connection.mtls", V, B, "true", 0},
	{"1 && true", CE, 0, "argument 1 of &&: expected BOOL, got INT64", 0},
	{"connection.mtls || 1", CE, 0, "argument 2 of ||: expected BOOL, got INT64", 0},
	/* conditional */
	{"conditional(true, \"a\", \"b\")", V, S, "a", 0},
	{"conditional(false, \"a\", \"b\")", V, S, "b", 0},
	{"conditional(connection.mtls, \"mutual_tls\", \"none\")", V, S, "mutual_tls", 0},
	{"conditional(connection.mtls | false, \"mutual_tls\", \"none\")", V, S,
	 "mutual_tls", 0},
	{"conditional((context.reporter.kind | \"inbound\") == \"outbound\", "
	 "\"source\", \"destination\")",
	 V, S, "source", 0},
	{"conditional((context.reporter.kind | \"inbound\") == \"outbound\", "
	 "\"unknown\", conditional(connection.mtls | false, \"mutual_tls\", "
	 "\"none\"))",
	 V, S, "unknown", 0},
	{"conditional(connection.mtls, 1, \"x\")", CE, 0,
	 "argument 2 of conditional: expected STRING, got INT64 in "
	 "\"conditional(connection.mtls, 1, \"x\")\"", 0},
	{"conditional(1, \"a\", \"b\")", CE, 0,
	 "argument 1 of conditional: expected BOOL, got INT64", 0},
	{"conditional(true, \"a\")", CE, 0, "conditional: expected 3 arguments, got 2", 0},
	{"conditional(false, destination.uid, \"b\")", V, S, "b", 0},
	{"conditional(connection.mtls, \"b\", destination.uid)", V, S, "b", 0},
	{"conditional(!connection.mtls, \"b\", destination.uid)", EF, 0, NULL,
	 EXPR_E_ABSENT},
	{"conditional(destination.uid == \"x\", 1, 2)", EF, 0, NULL, EXPR_E_ABSENT},
	{"conditional(connection.mtls, \"1s\", \"x\")", V, S, "1s", 0},
	{"conditional(connection.mtls, \"1s\", \"2s\")", V, DUR, "1s", 0},
	{"conditional(connection.mtls, 1, 2) + 1", V, I, "2", 0},
	{"conditionalString(connection.mtls, \"a\", \"b\")", V, S, "a", 0},
	{"conditionalString(connection.mtls, 1, \"b\")", CE, 0,
	 "argument 2 of conditionalString: expected STRING, got INT64", 0},
	/* map index */
	{"source.labels[\"istio\"]", V, S, "reviews", 0},
	{"source.labels[\"version\"] | \"unknown\"", V, S, "v2", 0},
	{"source.labels[\"missing\"]", V, S, "", 0},
	{"source.labels[\"missing\"] | \"unknown\"", V, S, "unknown", 0},
	{"source.labels[\"missing\"] | source.labels[\"istio\"] | \"u\"", V, S,
	 "reviews", 0},
	{"destination.labels[\"istio\"] | \"unknown\"", V, S, "unknown", 0},
	{"destination.labels[\"istio\"]", EF, 0, NULL, EXPR_E_ABSENT},
	{"destination.uid | source.labels[\"missing\"]", V, S, "", 0},
	{"request.headers[\"x\"] | \"d\"", V, S, "d", 0},
	{"source.labels[context.protocol] | \"none\"", V, S, "none", 0},
	{"source.labels[\"ist\" + \"io\"]", V, S, "reviews", 0},
	{"(source.labels | emptyStringMap())[\"version\"]", V, S, "v2", 0},
	{"emptyStringMap()[\"a\"] | \"z\"", V, S, "z", 0},
	{"emptyStringMap()[\"a\"]", V, S, "", 0},
	{"source.uid[\"x\"]", CE, 0, "argument 1 of []: expected STRING_MAP, got STRING", 0},
	{"source.labels[1]", CE, 0, "argument 2 of []: expected STRING, got INT64", 0},
	/* size */
	{"size(source.labels)", V, I, "2", 0},
	{"size(request.headers)", V, I, "0", 0},
	{"size(\"hello\")", V, I, "5", 0},
	{"size(source.uid)", V, I, "27", 0},
	{"size(emptyStringMap())", V, I, "0", 0},
	{"size(1)", CE, 0, "argument 1 of size: expected STRING or STRING_MAP, got INT64", 0},
	{"size()", CE, 0, "size: expected 1 argument, got 0", 0},
	/* conversions */
	{"ip(\"10.1.2.3\")", V, IPT, "10.1.2.3", 0},
	{"ip(\"::1\")", V, IPT, "::1", 0},
	{"ip(\"nonsense\")", CE, 0, "invalid constant", 0},
	{"ip(source.uid)", EF, 0, NULL, EXPR_E_VALUE},
	{"ip(1)", CE, 0, "argument 1 of ip: expected STRING, got INT64", 0},
	{"timestamp(\"2019-06-01T12:30:00.5+02:00\")", V, TS,
	 "2019-06-01T10:30:00.5Z", 0},
	{"timestamp(\"yesterday\")", CE, 0, "invalid constant", 0},
	{"timestamp(source.name)", EF, 0, NULL, EXPR_E_VALUE},
	{"dnsName(\"example.com\")", V, ATTR_DNS_NAME, "example.com", 0},
	{"dnsName(\"bad..name\")", CE, 0, "invalid constant", 0},
	{"dnsName(request.path)", EF, 0, NULL, EXPR_E_VALUE},
	{"email(\"user@example.com\")", V, ATTR_EMAIL, "user@example.com", 0},
	{"email(\"nope\")", CE, 0, "invalid constant", 0},
	{"uri(\"http://x/y\")", V, ATTR_URI, "http://x/y", 0},
	{"uri(request.path)", V, ATTR_URI, "/api/v1/Items", 0},
	{"uri(\"\")", CE, 0, "invalid constant", 0},
	/* match, matches, startsWith, endsWith */
	{"match(request.path, \"/api/*\")", V, B, "true", 0},
	{"match(request.path, \"*Items\")", V, B, "true", 0},
	{"match(request.path, \"/api\")", V, B, "false", 0},
	{"match(request.path, \"/api/v1/Items\")", V, B, "true", 0},
	{"match(\"abc\", \"*\")", V, B, "true", 0},
	{"match(\"*abc\", \"*abc\")", V, B, "true", 0},
	{"match(request.path, \"*items\")", V, B, "false", 0},
	{"match(request.path, context.protocol + \"*\")", V, B, "false", 0},
	{"match(context.protocol, request.path)", V, B, "false", 0},
	{"match(1, \"a\")", CE, 0, "argument 1 of match: expected STRING, got INT64", 0},
	{"\"^/api/v[0-9]+/\".matches(request.path)", V, B, "true", 0},
	{"\"items$\".matches(request.path)", V, B, "false", 0},
	{"\"Items\".matches(request.path)", V, B, "true", 0},
	{"\"^$\".matches(source.name)", V, B, "true", 0},
	{"\"(\".matches(request.path)", CE, 0, "receiver of matches", 0},
	/* what Go's regexp refuses, and the C library compiles in
	 * exponential time: nested repetition, counts over 1000 */
	{"\"/a**\".matches(request.path)", CE, 0,
	 "receiver of matches: invalid nested repetition operator", 0},
	{"\"a{2}{3}\".matches(request.path)", CE, 0,
	 "receiver of matches: invalid nested repetition operator", 0},
	{"\"a*??\".matches(request.path)", CE, 0,
	 "receiver of matches: invalid nested repetition operator", 0},
	{"\"a{1001}\".matches(request.path)", CE, 0,
	 "receiver of matches: invalid repeat count", 0},
	{"\".*?Items\".matches(request.path)", V, B, "true", 0},
	{"\"^/ap(i){1,3}/v[[:digit:]]+/[]*+]*It\".matches(request.path)", V, B,
	 "true", 0},
	{"\"^/api/v1/Items{0,1000}$\".matches(request.path)", V, B, "true", 0},
	{"\"[*]+\".matches(request.path)", V, B, "false", 0},
	/* escapes RE2 and POSIX read alike, and ones they do not */
	{"\"^/\\\\w+/v1\\\\/Items\\\\b\".matches(request.path)", V, B, "true", 0},
	{"\"^\\\\d+$\".matches(request.path)", CE, 0,
	 "receiver of matches: a backslash before a letter or digit", 0},
	{"\"\\\\x41\".matches(request.path)", CE, 0,
	 "receiver of matches: a backslash before a letter or digit", 0},
	{"\"[\\\\d]\".matches(request.path)", CE, 0,
	 "receiver of matches: a backslash in a bracket expression", 0},
	/* read as Go reads them, not as glibc would */
	{"\"\\\\<F\".matches(\"Foo\")", V, B, "false", 0},
	{"\"\\\\<F\".matches(\"x<Foo\")", V, B, "true", 0},
	{"\"o\\\\>\".matches(\"Foo\")", V, B, "false", 0},
	{"\"\\\\`a\\\\'\".matches(\"`a'\")", V, B, "true", 0},
	{"\"a{,3}\".matches(\"a\")", V, B, "false", 0},
	{"\"^a{,3}$\".matches(\"a{,3}\")", V, B, "true", 0},
	{"\"a{2}\".matches(\"aa\")", V, B, "true", 0},
	{"\"^a{01}$\".matches(\"a\")", V, B, "false", 0},
	{"\"^a{01}$\".matches(\"a{01}\")", V, B, "true", 0},
	{"\"a{2000000}\".matches(request.path)", CE, 0,
	 "receiver of matches: invalid repeat count", 0},
	{"\"a.b\".matches(\"a\\nb\")", V, B, "false", 0},
	{"\"a.b\".matches(\"a.b\")", V, B, "true", 0},
	{"\"a[^x]b\".matches(\"a\\nb\")", V, B, "true", 0},
	{"\"a\\\\.b\".matches(\"axb\")", V, B, "false", 0},
	{"context.protocol.matches(\"http\")", CE, 0, "constant string", 0},
	{"\"a\".matches(1)", CE, 0, "argument 1 of matches: expected STRING, got INT64", 0},
	{"request.path.startsWith(\"/api\")", V, B, "true", 0},
	{"request.path.endsWith(\"Items\")", V, B, "true", 0},
	{"request.path.startsWith(\"api\")", V, B, "false", 0},
	{"request.path.endsWith(\"\")", V, B, "true", 0},
	{"\"abc\".startsWith(\"ab\")", V, B, "true", 0},
	{"(source.uid | \"\").startsWith(\"kubernetes://\")", V, B, "true", 0},
	{"toLower(request.host).endsWith(\".com\")", V, B, "true", 0},
	{"request.path.startsWith(1)", CE, 0,
	 "argument 1 of startsWith: expected STRING, got INT64", 0},
	{"response.code.startsWith(\"4\")", CE, 0,
	 "receiver of startsWith: expected STRING, got INT64", 0},
	{"startsWith(request.path, \"/\")", CE, 0, "is a method", 0},
	{"request.path.toLower()", CE, 0, "is a function", 0},
	{"source.uid.bogus(\"x\")", CE, 0, "unknown function \"bogus\"", 0},
	{"foo(1)", CE, 0, "unknown function \"foo\"", 0},
	{"request.path.startsWith", CE, 0, "unknown attribute", 0},
	/* toLower, emptyStringMap */
	{"toLower(request.host)", V, S, "example.com", 0},
	{"toLower(\"ABC\")", V, S, "abc", 0},
	{"toLower(source.name)", V, S, "", 0},
	{"toLower(request.host) == \"example.com\"", V, B, "true", 0},
	{"toLower()", CE, 0, "toLower: expected 1 argument, got 0", 0},
	{"emptyStringMap()", V, MAP, "map[0]", 0},
	{"emptyStringMap(1)", CE, 0, "expected 0 arguments, got 1", 0},
	/* type errors on names */
	{"source.labels == \"x\"", CE, 0, "expected STRING_MAP, got STRING", 0},
	{"connection.mtls + 1", CE, 0, "got BOOL", 0},
};

static void test_table(void **state)
{
	struct fixture *f = *state;
	size_t n = sizeof cases / sizeof cases[0];
	int failures = 0;
	assert_true(n >= 150);
	for (size_t i = 0; i < n; i++) {
		const struct tcase *tc = &cases[i];
		struct expr_program *p = expr_program_create(f->vocab);
		assert_non_null(p);
		struct expr_error err;
		int id = expr_compile(p, tc->expr, strlen(tc->expr), &err);
		char got[700] = "";
		bool ok = true;
		if (tc->want == CE) {
			ok = id < 0 && strstr(err.msg, tc->value) != NULL;
			snprintf(got, sizeof got, "%s",
				 id < 0 ? err.msg : "compiled");
		} else if (id < 0) {
			ok = false;
			snprintf(got, sizeof got, "compile error: %s (at %u)",
				 err.msg, err.offset);
		} else {
			struct expr_scratch *s = expr_scratch_create(p, 0);
			assert_non_null(s);
			expr_scratch_begin(s);
			struct attr_value v;
			int rc = expr_eval(p, (uint32_t)id, &f->table, s, &v);
			if (tc->want == EF) {
				ok = rc == -tc->fail;
				snprintf(got, sizeof got, "rc %d", rc);
			} else if (rc) {
				ok = false;
				snprintf(got, sizeof got, "eval failed: %s",
					 expr_fail_name((enum expr_fail)-rc));
			} else {
				render(&v, got, sizeof got);
				ok = strcmp(got, tc->value) == 0 &&
				     expr_type(p, (uint32_t)id) == tc->type;
				if (expr_type(p, (uint32_t)id) != tc->type)
					snprintf(got + strlen(got),
						 sizeof got - strlen(got),
						 " (type %s)",
						 attr_type_name(expr_type(
							 p, (uint32_t)id)));
			}
			expr_scratch_destroy(s);
			/* the plan path gives the same answer */
			uint32_t one = (uint32_t)id;
			if (!plan_agrees(p, &one, 1, &f->table, 0)) {
				ok = false;
				snprintf(got + strlen(got),
					 sizeof got - strlen(got),
					 " (plan differs)");
			}
		}
		if (!ok) {
			print_error("case %zu: %s\n  want %s%s\n  got  %s\n", i,
				    tc->expr,
				    tc->want == EF ? "failure " : "",
				    tc->want == EF
					    ? expr_fail_name(
						      (enum expr_fail)tc->fail)
					    : tc->value,
				    got);
			failures++;
		}
		expr_program_destroy(p);
	}
	assert_int_equal(failures, 0);
}

/* ---- everything the user's config holds compiles, with the right type ---- */

static void test_seed_expressions(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *expr;
		enum attr_type type;
	} seed[] = {
		{"context.protocol == \"tcp\"", B},
		{"source.uid | \"\"", S},
		{"source.ip | ip(\"0.0.0.0\")", IPT},
		{"destination.uid | \"\"", S},
		{"destination.port | 0", I},
		{"$out.source_pod_uid | \"unknown\"", S},
		{"$out.source_labels | emptyStringMap()", MAP},
		{"1", I},
		{"response.duration | \"0ms\"", DUR},
		{"request.size | 0", I},
		{"response.size | 0", I},
		{"connection.sent.bytes | 0", I},
		{"connection.received.bytes | 0", I},
		{"\"UNSPECIFIED\"", S},
		{"conditional((context.reporter.kind | \"inbound\") == "
		 "\"outbound\", \"source\", \"destination\")",
		 S},
		{"source.workload.name | \"unknown\"", S},
		{"source.workload.namespace | \"unknown\"", S},
		{"source.principal | \"unknown\"", S},
		{"source.labels[\"istio\"] | \"unknown\"", S},
		{"source.labels[\"version\"] | \"unknown\"", S},
		{"destination.workload.name | \"unknown\"", S},
		{"destination.workload.namespace | \"unknown\"", S},
		{"destination.principal | \"unknown\"", S},
		{"destination.labels[\"istio\"] | \"unknown\"", S},
		{"destination.labels[\"version\"] | \"unknown\"", S},
		{"destination.service.host | \"unknown\"", S},
		{"destination.service.name | \"unknown\"", S},
		{"destination.service.namespace | \"unknown\"", S},
		{"api.protocol | context.protocol | \"unknown\"", S},
		{"response.code | 200", I},
		{"conditional((context.reporter.kind | \"inbound\") == "
		 "\"outbound\", \"unknown\", conditional(connection.mtls | "
		 "false, \"mutual_tls\", \"none\"))",
		 S},
		{"context.protocol == \"http\" || context.protocol == \"grpc\"", B},
	};
	struct expr_program *p = expr_program_create(f->vocab);
	for (size_t i = 0; i < sizeof seed / sizeof seed[0]; i++) {
		struct expr_error err;
		int id = expr_compile(p, seed[i].expr, strlen(seed[i].expr),
				      &err);
		if (id < 0)
			fail_msg("%s: %s", seed[i].expr, err.msg);
		assert_int_equal(expr_type(p, (uint32_t)id), seed[i].type);
	}
	expr_program_destroy(p);
}

/* ---- errors point at the offending token ----------------------------------- */

static void test_error_offsets(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *expr;
		uint32_t offset;
	} cases_off[] = {
		{"source.uid | foo.bar", 13},
		{"conditional(connection.mtls, 1, \"x\")", 29},
		{"1 + \"a\"", 4},
		{"(1", 2},
		{"\"abc", 0},
		{"a.b | \"x\" == 1 && true", 0},
		{"request.path.startsWith(1)", 24},
		{"foo(1)", 0},
		{"3 - 1", 2},
		{"1 + /* x", 4},
	};
	struct expr_program *p = expr_program_create(f->vocab);
	for (size_t i = 0; i < sizeof cases_off / sizeof cases_off[0]; i++) {
		struct expr_error err;
		int id = expr_compile(p, cases_off[i].expr,
				      strlen(cases_off[i].expr), &err);
		assert_int_equal(id, -1);
		if (err.offset != cases_off[i].offset)
			fail_msg("%s: offset %u, want %u (%s)",
				 cases_off[i].expr, err.offset,
				 cases_off[i].offset, err.msg);
	}
	/* a failed compile leaves the program usable */
	assert_int_equal(expr_count(p), 0);
	assert_int_equal(expr_compile(p, "1", 1, NULL), 0);
	expr_program_destroy(p);
}

/* ---- dedup and memoization --------------------------------------------------- */

static void test_dedup_and_memo(void **state)
{
	struct fixture *f = *state;
	struct expr_program *p = expr_program_create(f->vocab);
	const char *a = "source.uid | \"x\"";
	const char *b = "source.uid|\"x\"";
	const char *c = "(source.uid) | (\"x\")";
	const char *d = "source.uid | \"y\"";
	int ia = expr_compile(p, a, strlen(a), NULL);
	int ib = expr_compile(p, b, strlen(b), NULL);
	int ic = expr_compile(p, c, strlen(c), NULL);
	int id = expr_compile(p, d, strlen(d), NULL);
	assert_true(ia >= 0);
	assert_int_equal(ia, ib);
	assert_int_equal(ia, ic);
	assert_int_not_equal(ia, id);
	assert_int_equal(expr_count(p), 2);
	assert_string_equal(expr_text(p, (uint32_t)ia), "(source.uid | \"x\")");

	struct expr_scratch *s = expr_scratch_create(p, 0);
	struct attr_value v;
	expr_scratch_begin(s);
	/* four instances sharing one dimension: one evaluation */
	for (int i = 0; i < 4; i++) {
		assert_int_equal(expr_eval(p, (uint32_t)ia, &f->table, s, &v), 0);
		assert_int_equal(v.len, 27);
	}
	assert_int_equal(s->stats.evals, 1);

	/* a new record evaluates again, and sees the new table */
	struct attr_table *t2 = malloc(sizeof *t2);
	attr_table_clear(t2);
	expr_scratch_begin(s);
	assert_int_equal(expr_eval(p, (uint32_t)ia, t2, s, &v), 0);
	assert_int_equal(v.len, 1);
	assert_int_equal(s->stats.evals, 2);

	/* failures are memoized and counted once per record */
	const char *e = "destination.uid";
	int ie = expr_compile(p, e, strlen(e), NULL);
	assert_int_equal(expr_scratch_reserve(s, p), 0);
	expr_scratch_begin(s);
	assert_int_equal(expr_eval(p, (uint32_t)ie, t2, s, &v), -EXPR_E_ABSENT);
	assert_int_equal(expr_eval(p, (uint32_t)ie, t2, s, &v), -EXPR_E_ABSENT);
	assert_int_equal(s->stats.fail[EXPR_E_ABSENT], 1);

	/* the generation counter wrapping forgets everything */
	s->gen = UINT32_MAX;
	expr_scratch_begin(s);
	uint64_t before = s->stats.evals;
	assert_int_equal(expr_eval(p, (uint32_t)ia, &f->table, s, &v), 0);
	assert_int_equal(s->stats.evals, before + 1);

	/* batch: each distinct id once, results read in place */
	const char *f2 = "source.labels[\"istio\"] | \"unknown\"";
	int i_f = expr_compile(p, f2, strlen(f2), NULL);
	assert_int_equal(expr_scratch_reserve(s, p), 0);
	uint32_t batch[] = {(uint32_t)ia, (uint32_t)ie, (uint32_t)i_f,
			    (uint32_t)ia, 999};
	expr_scratch_begin(s);
	const struct attr_value *pv = NULL;
	assert_int_equal(expr_result(s, (uint32_t)ia, &pv), -EXPR_E_ABSENT);
	before = s->stats.evals;
	/* destination.uid is absent; 999 is no id */
	assert_int_equal(expr_eval_batch(p, batch, 5, &f->table, s), 2);
	assert_int_equal(s->stats.evals, before + 3);
	assert_int_equal(expr_result(s, (uint32_t)ia, &pv), 0);
	assert_int_equal(pv->len, 27);
	assert_int_equal(expr_result(s, (uint32_t)i_f, &pv), 0);
	assert_int_equal(pv->len, 7);
	assert_memory_equal(pv->s, "reviews", 7);
	assert_int_equal(expr_result(s, (uint32_t)ie, &pv), -EXPR_E_ABSENT);
	/* a later expr_eval() of a batched id is a memo hit */
	assert_int_equal(expr_eval(p, (uint32_t)i_f, &f->table, s, &v), 0);
	assert_int_equal(s->stats.evals, before + 3);

	free(t2);
	expr_scratch_destroy(s);
	expr_program_destroy(p);
}

/* ---- constant folding ----------------------------------------------------------- */

static void test_folding(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *expr;
		bool folded;
	} fc[] = {
		{"1 + 2", true},
		{"\"a\" + \"b\" == \"ab\"", true},
		{"conditional(false, destination.uid, \"b\")", true},
		{"false && destination.uid == \"x\"", true},
		{"true || destination.uid == \"x\"", true},
		{"\"a\" | destination.uid", true},
		{"toLower(\"ABC\")", true},
		{"ip(\"1.2.3.4\")", true},
		{"\"x\".matches(\"x\")", true},
		{"match(\"abc\", \"a*\")", true},
		{"size(emptyStringMap())", true},
		{"source.uid | \"x\"", false},
		{"true && connection.mtls", false},
		{"emptyStringMap()[\"a\"] | \"z\"", false},
	};
	struct expr_program *p = expr_program_create(f->vocab);
	for (size_t i = 0; i < sizeof fc / sizeof fc[0]; i++) {
		int id = expr_compile(p, fc[i].expr, strlen(fc[i].expr), NULL);
		assert_true(id >= 0);
		struct attr_value v;
		if (expr_constant(p, (uint32_t)id, &v) != fc[i].folded)
			fail_msg("%s: folded %d", fc[i].expr, !fc[i].folded);
	}
	/* a folded expression never reads the table: an empty one will do */
	const char *e = "conditional(1 < 2, \"yes\", destination.uid)";
	int id = expr_compile(p, e, strlen(e), NULL);
	struct attr_value v;
	assert_true(expr_constant(p, (uint32_t)id, &v));
	assert_int_equal(v.len, 3);
	assert_memory_equal(v.s, "yes", 3);
	/* true && x folds to x itself: one node */
	uint32_t before = expr_node_count(p);
	e = "true && connection.mtls";
	id = expr_compile(p, e, strlen(e), NULL);
	const char *e2 = "connection.mtls";
	int id2 = expr_compile(p, e2, strlen(e2), NULL);
	assert_int_not_equal(id, id2);
	assert_int_equal(expr_node_count(p), before + 1);
	expr_program_destroy(p);
}

/* ---- runtime robustness ------------------------------------------------------ */

/* expr_reads: exactly the attributes an expression may look at. */
static void test_reads(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *expr;
		unsigned slots[4];
		unsigned n;
	} rc[] = {
		{"1 + 2", {0}, 0},
		{"source.uid | \"x\"", {MIXD_ATTR_SOURCE_UID}, 1},
		{"source.labels[\"app\"] | destination.uid | \"u\"",
		 {MIXD_ATTR_SOURCE_LABELS, MIXD_ATTR_DESTINATION_UID}, 2},
		{"conditional(connection.mtls, request.path, request.host)",
		 {MIXD_ATTR_CONNECTION_MTLS, MIXD_ATTR_REQUEST_PATH,
		  MIXD_ATTR_REQUEST_HOST},
		 3},
		{"request.headers[request.host] == \"a\" && "
		 "response.code >= 500",
		 {MIXD_ATTR_REQUEST_HEADERS, MIXD_ATTR_REQUEST_HOST,
		  MIXD_ATTR_RESPONSE_CODE},
		 3},
		{"request.path.startsWith(source.name) || "
		 "\"x.*\".matches(toLower(request.host))",
		 {MIXD_ATTR_REQUEST_PATH, MIXD_ATTR_SOURCE_NAME,
		  MIXD_ATTR_REQUEST_HOST},
		 3},
	};
	struct expr_program *p = expr_program_create(f->vocab);
	assert_non_null(p);
	for (size_t i = 0; i < sizeof rc / sizeof rc[0]; i++) {
		struct expr_error err;
		int id = expr_compile(p, rc[i].expr, strlen(rc[i].expr), &err);
		if (id < 0)
			fail_msg("%s: %s", rc[i].expr, err.msg);
		uint64_t got[4] = {0}, want[4] = {0};
		for (unsigned k = 0; k < rc[i].n; k++)
			want[rc[i].slots[k] / 64] |= 1ull << (rc[i].slots[k] % 64);
		assert_true(expr_reads(p, (uint32_t)id, got, 4));
		if (memcmp(got, want, sizeof got))
			fail_msg("%s: wrong slots", rc[i].expr);
		/* A bitmap one word short of a slot is reported; one that
		 * holds every slot is not. */
		uint64_t one[1] = {0};
		bool fits = true;
		for (unsigned k = 0; k < rc[i].n; k++)
			fits &= rc[i].slots[k] < 64;
		assert_int_equal(expr_reads(p, (uint32_t)id, one, 1), fits);
	}
	expr_program_destroy(p);
}

static void test_runtime_failures(void **state)
{
	struct fixture *f = *state;
	struct expr_program *p = expr_program_create(f->vocab);
	struct attr_value v;

	/* a value whose type is not the declared one is refused */
	struct attr_table *t = malloc(sizeof *t);
	memcpy(t, &f->table, sizeof *t);
	set_int(t, MIXD_ATTR_SOURCE_UID, ATTR_INT64, 7);
	const char *e = "source.uid | \"x\"";
	int id = expr_compile(p, e, strlen(e), NULL);
	/* a typed string where STRING is declared is fine */
	struct attr_value em = {.type = ATTR_EMAIL, .len = 3, .s = "a@b"};
	attr_table_set(t, MIXD_ATTR_SOURCE_PRINCIPAL, &em);
	const char *e2 = "source.principal == \"a@b\"";
	int id2 = expr_compile(p, e2, strlen(e2), NULL);
	struct expr_scratch *s = expr_scratch_create(p, 8);
	expr_scratch_begin(s);
	assert_int_equal(expr_eval(p, (uint32_t)id, t, s, &v), -EXPR_E_TYPE);
	assert_int_equal(expr_eval(p, (uint32_t)id2, t, s, &v), 0);
	assert_true(v.b);
	expr_scratch_destroy(s);

	/* the string arena is bounded and reset per record */
	e = "request.host + request.path";
	id = expr_compile(p, e, strlen(e), NULL);
	s = expr_scratch_create(p, 16);
	expr_scratch_begin(s);
	assert_int_equal(expr_eval(p, (uint32_t)id, &f->table, s, &v),
			 -EXPR_E_NOMEM);
	assert_int_equal(s->stats.fail[EXPR_E_NOMEM], 1);
	expr_scratch_destroy(s);
	s = expr_scratch_create(p, 32);
	for (int r = 0; r < 3; r++) {
		expr_scratch_begin(s);
		assert_int_equal(expr_eval(p, (uint32_t)id, &f->table, s, &v),
				 0);
		assert_int_equal(v.len, 24);
	}
	expr_scratch_destroy(s);
	free(t);
	expr_program_destroy(p);
}

static void test_limits(void **state)
{
	struct fixture *f = *state;
	struct expr_program *p = expr_program_create(f->vocab);
	struct expr_error err;
	char *buf = malloc(64 * 1024);

	/* deep trees are refused (the evaluator recurses) */
	size_t n = 0;
	for (int i = 0; i < 200; i++)
		buf[n++] = '(';
	buf[n++] = '1';
	for (int i = 0; i < 200; i++)
		buf[n++] = ')';
	assert_int_equal(expr_compile(p, buf, n, &err), -1);
	assert_non_null(strstr(err.msg, "nested too deeply"));

	n = 0;
	n += (size_t)sprintf(buf, "1");
	for (int i = 0; i < 100; i++)
		n += (size_t)sprintf(buf + n, " + 1");
	assert_int_equal(expr_compile(p, buf, n, &err), -1);
	assert_non_null(strstr(err.msg, "nested too deeply"));

	/* but a long | chain is one flat node */
	n = 0;
	for (int i = 0; i < 2000; i++)
		n += (size_t)sprintf(buf + n, "source.principal | ");
	n += (size_t)sprintf(buf + n, "\"end\"");
	int id = expr_compile(p, buf, n, &err);
	assert_true(id >= 0);
	struct expr_scratch *s = expr_scratch_create(p, 0);
	expr_scratch_begin(s);
	struct attr_value v;
	assert_int_equal(expr_eval(p, (uint32_t)id, &f->table, s, &v), 0);
	assert_int_equal(v.len, 3);

	/* arguments and map keys nested far past the stack's depth: an
	 * error, not a crash (the tree's height is known only after its
	 * operands are parsed) */
	{
		const int deep = 100000;
		static const char *const open[] = {"toLower(",
						   "request.headers["};
		static const char *const close[] = {")", "]"};
		for (int k = 0; k < 2; k++) {
			size_t ol = strlen(open[k]), cap = deep * (ol + 1) + 32;
			char *d = malloc(cap);
			size_t m = 0;
			for (int i = 0; i < deep; i++, m += ol)
				memcpy(d + m, open[k], ol);
			m += (size_t)sprintf(d + m, "\"x\"");
			for (int i = 0; i < deep; i++)
				d[m++] = close[k][0];
			assert_int_equal(expr_compile(p, d, m, &err), -1);
			assert_non_null(strstr(err.msg, "nested too deeply"));
			free(d);
		}
	}

	/* bytes that are not text are rejected, not misread */
	static const char nul[] = "\"a\0b\" == 1";
	assert_int_equal(expr_compile(p, nul, sizeof nul - 1, &err), -1);
	expr_scratch_destroy(s);
	free(buf);
	expr_program_destroy(p);
}

/* ---- plans ------------------------------------------------------------------- */

static const char *const plan_exprs[] = {
	"context.protocol == \"http\" || context.protocol == \"grpc\"",
	"1",
	"response.duration | \"0ms\"",
	"request.size | 0",
	"conditional((context.reporter.kind | \"inbound\") == \"outbound\", "
	"\"source\", \"destination\")",
	"source.workload.name | \"unknown\"",
	"source.uid | \"unknown\"",
	"source.labels[\"istio\"] | \"unknown\"",
	"source.labels[\"version\"] | \"unknown\"",
	"source.labels[\"version\"] | \"other\"",
	"source.labels[\"istio\"] | source.uid",
	"source.labels[\"\"] | \"empty key\"",
	"$out.source_labels[\"istio\"] | \"unknown\"",
	"request.headers[\"x\"] | \"none\"",
	"source.labels[\"istio\"]",
	"api.protocol | context.protocol | \"unknown\"",
	"source.principal | source.uid | \"unknown\"",
	"response.code | 200",
	"conditional((context.reporter.kind | \"inbound\") == \"outbound\", "
	"\"unknown\", conditional(connection.mtls | false, \"mutual_tls\", "
	"\"none\"))",
	"(context.reporter.kind | \"inbound\") == \"outbound\"",
	"context.reporter.kind | \"inbound\"",
	"source.uid",
	"destination.uid",
	"destination.uid == \"x\"",
	"!(source.uid == \"x\")",
	"source.uid != request.path",
	"response.code == 404 && connection.mtls",
	"response.code != 404 || destination.uid == \"x\"",
	"conditional(connection.mtls, source.uid, destination.uid)",
	"conditional(connection.mtls, source.uid, \"b\") == \"a\"",
	"source.ip | ip(\"0.0.0.0\")",
	"toLower(request.host) == \"example.com\"",
	"request.host + request.path",
	"source.name | \"unknown\"",
	"test.double | 1.5",
	"response.duration == \"1.5s\"",
	"source.ip == ip(\"10.0.0.1\")",
	"source.principal == \"a@b\"",
	"true && connection.mtls",
	"connection.mtls",
	/* set-like matches, chains of || and &&, constant branches */
	"context.protocol != \"http\" && context.protocol != \"grpc\"",
	"context.protocol == \"http\" || context.protocol == \"grpc\" || "
	"context.protocol == \"tcp\"",
	"(context.reporter.kind | \"x\") == \"a\" || "
	"(context.reporter.kind | \"x\") == \"outbound\"",
	"context.protocol == \"http\" || request.path == \"grpc\"",
	"context.protocol == \"http\" && context.protocol != \"grpc\"",
	"conditional(connection.mtls, \"a\", source.uid)",
	"conditional(connection.mtls | false, source.uid, \"b\")",
	"conditional(connection.mtls, source.uid, destination.uid | \"d\")",
	/* == chains the plan fuses into one set compare, or must not: a
	 * constant over 16 bytes, more strings than one instruction holds,
	 * an operand that is not a load, mixed operators */
	"context.protocol == \"http\" || "
	"context.protocol == \"a-protocol-over-16\"",
	"context.protocol == \"a\" || context.protocol == \"b\" || "
	"context.protocol == \"c\" || context.protocol == \"d\" || "
	"context.protocol == \"e\" || context.protocol == \"f\" || "
	"context.protocol == \"g\" || context.protocol == \"h\" || "
	"context.protocol == \"i\" || context.protocol == \"j\" || "
	"context.protocol == \"k\" || context.protocol == \"l\" || "
	"context.protocol == \"m\" || context.protocol == \"n\" || "
	"context.protocol == \"o\" || context.protocol == \"p\" || "
	"context.protocol == \"grpc\"",
	"(api.protocol | context.protocol | \"u\") == \"grpc\" || "
	"(api.protocol | context.protocol | \"u\") == \"g\"",
	"(source.labels[\"istio\"] | \"u\") != \"a\" && "
	"(source.labels[\"istio\"] | \"u\") != \"productpage\"",
	"context.protocol == \"http\" || context.protocol != \"grpc\"",
	"context.protocol == \"http\" || (context.protocol == \"grpc\" && "
	"connection.mtls)",
};

#define N_PLAN_EXPRS (sizeof plan_exprs / sizeof plan_exprs[0])

static void test_plan(void **state)
{
	struct fixture *f = *state;
	struct expr_program *p = expr_program_create(f->vocab);
	uint32_t ids[2 * N_PLAN_EXPRS];
	for (size_t i = 0; i < N_PLAN_EXPRS; i++) {
		struct expr_error err;
		int id = expr_compile(p, plan_exprs[i], strlen(plan_exprs[i]),
				      &err);
		if (id < 0)
			fail_msg("%s: %s", plan_exprs[i], err.msg);
		ids[i] = ids[2 * N_PLAN_EXPRS - 1 - i] = (uint32_t)id;
	}
	/* shared subexpressions and duplicate ids share results */
	struct expr_plan *pl = expr_plan_create(p, ids, 2 * N_PLAN_EXPRS);
	assert_non_null(pl);
	assert_true(expr_plan_size(pl) >= expr_count(p));
	for (size_t i = 0; i < N_PLAN_EXPRS; i++)
		assert_int_equal(expr_plan_index(pl, i),
				 expr_plan_index(pl, 2 * N_PLAN_EXPRS - 1 - i));
	expr_plan_destroy(pl);

	/* the fixture record, then the same record spoiled in every way a
	 * plan might get wrong */
	assert_true(plan_agrees(p, ids, 2 * N_PLAN_EXPRS, &f->table, 0));
	struct attr_table *t = malloc(sizeof *t);
	attr_table_clear(t);
	assert_true(plan_agrees(p, ids, N_PLAN_EXPRS, t, 0)); /* empty */

	static const uint8_t dup[] = {
		/* 3 entries: istio=a, istio=b, version=c */
		3, 0, 0, 0, 5, 0, 0, 0, 'i', 's', 't', 'i', 'o', 1, 0, 0, 0,
		'a', 5, 0, 0, 0, 'i', 's', 't', 'i', 'o', 1, 0, 0, 0, 'b', 7,
		0, 0, 0, 'v', 'e', 'r', 's', 'i', 'o', 'n', 1, 0, 0, 0, 'c'};
	static const uint8_t empty_key[] = {
		2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'e', 7, 0, 0, 0,
		'v', 'e', 'r', 's', 'i', 'o', 'n', 0, 0, 0, 0};
	struct {
		unsigned slot;
		struct attr_value v;
	} spoil[] = {
		{MIXD_ATTR_SOURCE_UID, {.type = ATTR_INT64, .i = 7}},
		{MIXD_ATTR_SOURCE_LABELS, {.type = ATTR_STRING, .len = 1, .s = "x"}},
		{MIXD_ATTR_SOURCE_LABELS, {.type = ATTR_STRING_MAP, .len = sizeof dup,
					   .map = dup}},
		/* cut inside the second entry: the walk stops there */
		{MIXD_ATTR_SOURCE_LABELS, {.type = ATTR_STRING_MAP, .len = 30,
					   .map = dup}},
		{MIXD_ATTR_SOURCE_LABELS, {.type = ATTR_STRING_MAP, .len = 3,
					   .map = dup}},
		{MIXD_ATTR_SOURCE_LABELS, {.type = ATTR_STRING_MAP,
					   .len = sizeof empty_key,
					   .map = empty_key}},
		{MIXD_ATTR_CONTEXT_REPORTER_KIND, {.type = ATTR_BOOL, .b = true}},
		{MIXD_ATTR_CONTEXT_REPORTER_KIND, {.type = ATTR_STRING, .len = 8,
						   .s = "outbound"}},
		{MIXD_ATTR_CONTEXT_REPORTER_KIND, {.type = ATTR_STRING, .len = 7,
						   .s = "inbound"}},
		{MIXD_ATTR_CONNECTION_MTLS, {.type = ATTR_BOOL, .b = false}},
		{MIXD_ATTR_CONNECTION_MTLS, {.type = ATTR_STRING, .len = 1, .s = "y"}},
		{MIXD_ATTR_CONTEXT_PROTOCOL, {.type = ATTR_STRING, .len = 4,
					      .s = "grpc"}},
		{MIXD_ATTR_API_PROTOCOL, {.type = ATTR_STRING, .len = 1, .s = "g"}},
		{MIXD_ATTR_API_PROTOCOL, {.type = ATTR_INT64, .i = 1}},
		{MIXD_ATTR_SOURCE_PRINCIPAL, {.type = ATTR_EMAIL, .len = 3,
					      .s = "a@b"}},
		{MIXD_ATTR_SOURCE_PRINCIPAL, {.type = ATTR_DOUBLE, .d = 1}},
		{MIXD_ATTR_DESTINATION_UID, {.type = ATTR_STRING, .len = 1, .s = "x"}},
		{MIXD_ATTR_RESPONSE_CODE, {.type = ATTR_INT64, .i = 200}},
		{MIXD_ATTR_RESPONSE_DURATION, {.type = ATTR_INT64, .i = 1}},
		{MIXD_ATTR_SOURCE_IP, {.type = ATTR_IP, .len = 16,
				       .ip = {[10] = 0xff, [11] = 0xff, 10, 0, 0, 1}}},
		{(unsigned)f->slot_out_labels, {.type = ATTR_STRING_MAP,
						.len = sizeof dup, .map = dup}},
	};
	for (size_t k = 0; k < sizeof spoil / sizeof spoil[0]; k++) {
		memcpy(t, &f->table, sizeof *t);
		attr_table_set(t, spoil[k].slot, &spoil[k].v);
		if (!plan_agrees(p, ids, N_PLAN_EXPRS, t, 0))
			fail_msg("spoiled record %zu differs", k);
		/* and the spoiled attribute alone */
		attr_table_clear(t);
		attr_table_set(t, spoil[k].slot, &spoil[k].v);
		if (!plan_agrees(p, ids, N_PLAN_EXPRS, t, 0))
			fail_msg("record of only %zu differs", k);
	}

	/* every table case that compiles, in one plan */
	struct expr_program *q = expr_program_create(f->vocab);
	uint32_t *all = calloc(sizeof cases / sizeof cases[0], sizeof *all);
	size_t n = 0;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int id = expr_compile(q, cases[i].expr, strlen(cases[i].expr),
				      NULL);
		if (id >= 0)
			all[n++] = (uint32_t)id;
	}
	assert_true(n > 100);
	assert_true(plan_agrees(q, all, n, &f->table, 0));
	free(all);
	expr_program_destroy(q);

	/* a plan keeps its per-record values in the arena: a full arena
	 * fails the plan's expressions as NOMEM, counted */
	const uint32_t mk = ids[7]; /* source.labels["istio"] | "unknown" */
	pl = expr_plan_create(p, &mk, 1);
	struct expr_scratch *s = expr_scratch_create(p, 8);
	const struct attr_value *r[4];
	assert_true(expr_plan_size(pl) <= 4);
	expr_scratch_begin(s);
	assert_int_equal(expr_plan_eval(pl, &f->table, s, r), 1);
	assert_null(r[expr_plan_index(pl, 0)]);
	assert_int_equal(s->stats.fail[EXPR_E_NOMEM], 1);
	expr_scratch_destroy(s);
	s = expr_scratch_create(p, 0);
	expr_scratch_begin(s);
	assert_int_equal(expr_plan_eval(pl, &f->table, s, r), 0);
	assert_int_equal(r[expr_plan_index(pl, 0)]->len, 7);
	assert_memory_equal(r[expr_plan_index(pl, 0)]->s, "reviews", 7);
	expr_scratch_destroy(s);
	expr_plan_destroy(pl);

	/* a guarded plan: the guard first, the rest only if it holds */
	{
		const char *gt = "context.protocol == \"http\"";
		const char *gf = "context.protocol == \"tcp\"";
		const char *ga = "destination.uid == \"x\""; /* absent */
		const char *g1 = "response.code | 200";         /* not BOOL */
		uint32_t g[4];
		const char *gs[4] = {gt, gf, ga, g1};
		for (int i = 0; i < 4; i++)
			g[i] = (uint32_t)expr_compile(p, gs[i], strlen(gs[i]),
						      NULL);
		assert_null(expr_plan_create_guarded(p, g[3], ids,
						     N_PLAN_EXPRS));
		const struct attr_value **res =
			calloc(4 * N_PLAN_EXPRS + 8, sizeof *res);
		struct expr_scratch *s1 = expr_scratch_create(p, 0);
		struct expr_scratch *s2 = expr_scratch_create(p, 0);
		for (int i = 0; i < 3; i++) {
			pl = expr_plan_create_guarded(p, g[i], ids,
						      N_PLAN_EXPRS);
			assert_non_null(pl);
			assert_true(expr_plan_size(pl) <= 4 * N_PLAN_EXPRS + 8);
			struct expr_stats before = s1->stats;
			expr_scratch_begin(s1);
			unsigned failed = expr_plan_eval(pl, &f->table, s1, res);
			const struct attr_value *gv = res[expr_plan_guard(pl)];
			if (i == 0) {
				/* holds: as the unguarded plan would */
				assert_true(gv && gv->b);
				expr_scratch_begin(s2);
				for (size_t k = 0; k < N_PLAN_EXPRS; k++) {
					struct attr_value v;
					int rc = expr_eval(p, ids[k], &f->table,
							   s2, &v);
					const struct attr_value *pv =
						res[expr_plan_index(pl, k)];
					assert_int_equal(rc == 0, pv != NULL);
				}
				assert_int_equal(s1->stats.evals - before.evals,
						 N_PLAN_EXPRS + 1);
			} else {
				/* false, or failed: only the guard ran */
				assert_true(i == 1 ? gv && !gv->b : gv == NULL);
				assert_int_equal(failed, i == 2);
				assert_int_equal(s1->stats.evals - before.evals, 1);
				assert_int_equal(s1->stats.fail[EXPR_E_ABSENT] -
							 before.fail[EXPR_E_ABSENT],
						 i == 2);
				assert_int_equal(s1->stats.fail[EXPR_E_TYPE],
						 before.fail[EXPR_E_TYPE]);
			}
			expr_plan_destroy(pl);
		}
		/* a guard that is also one of the ids shares its result */
		uint32_t two[2] = {ids[5], g[0]};
		pl = expr_plan_create_guarded(p, g[0], two, 2);
		assert_int_equal(expr_plan_index(pl, 1), expr_plan_guard(pl));
		expr_scratch_begin(s1);
		assert_int_equal(expr_plan_eval(pl, &f->table, s1, res), 0);
		assert_true(res[expr_plan_index(pl, 1)]->b);
		expr_plan_destroy(pl);
		free(res);
		expr_scratch_destroy(s1);
		expr_scratch_destroy(s2);
	}

	/* more keys of one map than one pass handles (32): several passes */
	{
		uint8_t big[2048];
		const char *kv[2 * 40];
		char names[40][8];
		for (int i = 0; i < 40; i++) {
			snprintf(names[i], sizeof names[i], "k%d", i);
			kv[2 * i] = names[i];
			kv[2 * i + 1] = names[(i * 7) % 40];
		}
		struct attr_value mv = {.type = ATTR_STRING_MAP, .map = big};
		mv.len = (uint32_t)map_encode(big, kv, 30); /* k0..k29 */
		memcpy(t, &f->table, sizeof *t);
		attr_table_set(t, MIXD_ATTR_DESTINATION_LABELS, &mv);
		uint32_t kids[40];
		for (int i = 0; i < 40; i++) {
			char e[64];
			snprintf(e, sizeof e,
				 "destination.labels[\"k%d\"] | \"none\"",
				 39 - i);
			kids[i] = (uint32_t)expr_compile(p, e, strlen(e), NULL);
		}
		assert_true(plan_agrees(p, kids, 40, t, 0));
	}

	/* an id that is not in the program is refused */
	uint32_t bad = expr_count(p);
	assert_null(expr_plan_create(p, &bad, 1));
	/* an empty plan evaluates nothing */
	pl = expr_plan_create(p, NULL, 0);
	assert_non_null(pl);
	s = expr_scratch_create(p, 0);
	expr_scratch_begin(s);
	assert_int_equal(expr_plan_eval(pl, &f->table, s, r), 0);
	expr_scratch_destroy(s);
	expr_plan_destroy(pl);
	free(t);
	expr_program_destroy(p);
}

/* ---- plans: short-string compares -------------------------------------------- */

/*
 * The plan compares strings of up to 16 bytes against constants as two
 * words, and finds map keys by length bucket: every length class (0, 1-3,
 * 4-7, 8-16, longer, the last bucket's 63 and more), against values that
 * differ from the constant in one byte at the start, middle or end, or in
 * length only, as operands of ==, != and m["k"] | "d".
 */
static void test_plan_words(void **state)
{
	struct fixture *f = *state;
	static const unsigned lens[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15,
					16, 17, 24, 62, 63, 64, 70};
	enum { NL = sizeof lens / sizeof lens[0], NV = 5 * NL };
	char consts[NL][80], vals[NV][80];
	for (unsigned i = 0; i < NL; i++) {
		for (unsigned j = 0; j < lens[i]; j++)
			consts[i][j] = (char)('a' + (j * 7 + i) % 26);
		consts[i][lens[i]] = 0;
		/* the constant, then one byte off at the start, middle and
		 * end, then one byte longer */
		for (unsigned v = 0; v < 5; v++) {
			char *x = vals[5 * i + v];
			memcpy(x, consts[i], lens[i] + 1);
			unsigned at = v == 1 ? 0 : v == 2 ? lens[i] / 2
							  : lens[i] - 1;
			if (v >= 1 && v <= 3 && lens[i])
				x[at] = (char)(x[at] == 'z' ? 'A' : x[at] + 1);
			if (v == 4) {
				x[lens[i]] = 'q';
				x[lens[i] + 1] = 0;
			}
		}
	}
	struct expr_program *p = expr_program_create(f->vocab);
	uint32_t ids[5 * NL];
	size_t n = 0;
	for (unsigned i = 0; i < NL; i++) {
		char e[1600]; /* gcc cannot bound %s by the row */
		snprintf(e, sizeof e, "request.path == \"%s\"", consts[i]);
		ids[n++] = (uint32_t)expr_compile(p, e, strlen(e), NULL);
		snprintf(e, sizeof e, "source.principal != \"%s\"", consts[i]);
		ids[n++] = (uint32_t)expr_compile(p, e, strlen(e), NULL);
		/* an operand in a register rather than read in place */
		snprintf(e, sizeof e,
			 "(api.protocol | request.path | \"\") == \"%s\"",
			 consts[i]);
		ids[n++] = (uint32_t)expr_compile(p, e, strlen(e), NULL);
		snprintf(e, sizeof e, "destination.labels[\"%s\"] | \"none\"",
			 consts[i]);
		ids[n++] = (uint32_t)expr_compile(p, e, strlen(e), NULL);
		snprintf(e, sizeof e, "destination.labels[\"%s\"] | \"other\"",
			 consts[i]);
		ids[n++] = (uint32_t)expr_compile(p, e, strlen(e), NULL);
	}
	for (size_t i = 0; i < n; i++)
		assert_true(ids[i] < expr_count(p));

	struct attr_table *t = malloc(sizeof *t);
	static uint8_t map[NV * 2 * 96];
	const char *kv[2 * NV];
	for (unsigned v = 0; v < NV; v++) {
		memcpy(t, &f->table, sizeof *t);
		struct attr_value sv = {.type = ATTR_STRING,
					.len = (uint32_t)strlen(vals[v]),
					.s = vals[v]};
		attr_table_set(t, MIXD_ATTR_REQUEST_PATH, &sv);
		sv.type = ATTR_EMAIL;
		attr_table_set(t, MIXD_ATTR_SOURCE_PRINCIPAL, &sv);
		/* a map of the near misses up to this value, in an order
		 * that puts each exact key after its near misses */
		uint32_t ne = 0;
		for (unsigned k = v + 1; k-- > 0 && ne < NV;) {
			kv[2 * ne] = vals[k];
			kv[2 * ne + 1] = vals[(k * 3) % NV];
			ne++;
		}
		struct attr_value mv = {.type = ATTR_STRING_MAP, .map = map};
		mv.len = (uint32_t)map_encode(map, kv, ne);
		attr_table_set(t, MIXD_ATTR_DESTINATION_LABELS, &mv);
		if (!plan_agrees(p, ids, n, t, 0))
			fail_msg("value %u (\"%s\") differs", v, vals[v]);
	}
	/* absent and mistyped operands */
	memcpy(t, &f->table, sizeof *t);
	struct attr_value iv = {.type = ATTR_INT64, .i = 4};
	attr_table_set(t, MIXD_ATTR_REQUEST_PATH, &iv);
	attr_table_set(t, MIXD_ATTR_SOURCE_PRINCIPAL, &iv);
	attr_table_set(t, MIXD_ATTR_DESTINATION_LABELS, &iv);
	assert_true(plan_agrees(p, ids, n, t, 0));
	attr_table_clear(t);
	assert_true(plan_agrees(p, ids, n, t, 0));
	free(t);
	expr_program_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seed_expressions, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_error_offsets, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_dedup_and_memo, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_folding, setup, teardown),
		cmocka_unit_test_setup_teardown(test_runtime_failures, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plan_words, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
