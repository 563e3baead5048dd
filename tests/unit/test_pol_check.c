/*
 * test_pol_check -- checks and quotas against Istio's sample policies
 * (tests/fixtures/policy, loaded unchanged): the denier by label, the IP
 * and version whitelists, productpage's rate limit with its overrides;
 * how results combine, when quotas run, and what fails a check whole.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "policy/policy.h"
#include "policy_fixture.h"

#define SECOND INT64_C(1000000000)

static char fixtures[PATH_MAX];

/* A config, its engine and a thread, and the record being built. */
struct fx {
	struct cfg *c;
	struct pol_engine *e;
	struct pol_thread *t;
	struct attr_table attrs;
	uint8_t maps[4][512]; /* encoded string maps */
	int nmaps;
};

static struct pol_options *opts; /* for the next open_cfg() */

static struct fx *open_cfg(struct cfg *c)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->c = c;
	assert_non_null(c);
	pol_validate(c);
	if (!cfg_ok(c))
		cfg_print_diagnostics(c, stderr);
	assert_true(cfg_ok(c));
	assert_int_equal(pol_engine_create(c, opts, &f->e), 0);
	f->t = pol_thread_create(f->e);
	assert_non_null(f->t);
	return f;
}

static struct fx *open_sample(const char *name)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/policy/%s", fixtures, name);
	return open_cfg(cfg_load(path, NULL));
}

static struct fx *open_text(const char *yaml)
{
	return open_cfg(cfg_load_buffer("test.yaml", yaml, strlen(yaml), NULL));
}

static void close_fx(struct fx *f)
{
	pol_thread_destroy(f->t);
	pol_engine_destroy(f->e);
	cfg_destroy(f->c);
	free(f);
}

static unsigned slot(struct fx *f, const char *name)
{
	int s = attr_vocab_find(cfg_vocab(f->c), name, strlen(name));
	assert_true(s >= 0);
	return (unsigned)s;
}

static void set_str(struct fx *f, const char *name, const char *v)
{
	struct attr_value a = {.type = ATTR_STRING, .len = (uint32_t)strlen(v),
			       .s = v};
	attr_table_set(&f->attrs, slot(f, name), &a);
}

static void set_ip4(struct fx *f, const char *name, uint8_t a, uint8_t b,
		    uint8_t c, uint8_t d)
{
	struct attr_value v = {.type = ATTR_IP, .len = 4, .ip = {a, b, c, d}};
	attr_table_set(&f->attrs, slot(f, name), &v);
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

/* A string map of @n "key", "value" pairs. */
static void set_map(struct fx *f, const char *name, int n, ...)
{
	uint8_t *m = f->maps[f->nmaps++], *p = put_u32(m, (uint32_t)n);
	va_list ap;
	va_start(ap, n);
	for (int i = 0; i < 2 * n; i++) {
		const char *s = va_arg(ap, const char *);
		p = put_u32(p, (uint32_t)strlen(s));
		memcpy(p, s, strlen(s));
		p += strlen(s);
	}
	va_end(ap);
	struct attr_value v = {.type = ATTR_STRING_MAP,
			       .len = (uint32_t)(p - m),
			       .map = m};
	attr_table_set(&f->attrs, slot(f, name), &v);
}

static void check(struct fx *f, const struct pol_quota_req *q, size_t nq,
		  int64_t now, struct pol_result *res)
{
	/* a new deduplication id each time, as a proxy's new requests */
	static unsigned serial;
	char id[32];
	int n = snprintf(id, sizeof(id), "req-%u", ++serial);
	struct pol_request req = {&f->attrs, id, (size_t)n, q, nq, NULL};
	pol_check(f->e, f->t, &req, now, res);
}

/* The answer's referenced attributes, as dictionary names joined by
 * spaces ("-" when it must not be reused). */
static const char *refs_of(const struct fx *f, const struct pol_result *r)
{
	static char buf[512];
	size_t n = 0;
	if (!r->refs)
		return "-";
	buf[0] = 0;
	for (size_t i = 0; i < r->n_refs; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s",
				      i ? " " : "",
				      attr_vocab_name(cfg_vocab(f->c),
						      r->refs[i]));
	return buf;
}

static void test_deny_by_label(void **state)
{
	(void)state;
	struct fx *f = open_sample("mixer-rule-deny-label.yaml");
	struct pol_result r;

	/* reviews v3 calling ratings: denied, as the denier says */
	set_map(f, "destination.labels", 1, "app", "ratings");
	set_map(f, "source.labels", 2, "app", "reviews", "version", "v3");
	check(f, NULL, 0, 0, &r);
	assert_int_equal(r.code, POL_PERMISSION_DENIED);
	assert_string_equal(r.message, "denyreviewsv3handler.handler.istio-"
				       "system:Not allowed");
	assert_int_equal(r.valid_duration_ns, 5 * SECOND);
	assert_int_equal(r.valid_use_count, 1000);
	/* what a client's cache keys the answer by: what the match reads */
	assert_string_equal(refs_of(f, &r), "source.labels destination.labels");

	/* v2: the rule does not match, nobody has an opinion */
	f->nmaps = 0;
	set_map(f, "source.labels", 2, "app", "reviews", "version", "v2");
	check(f, NULL, 0, 0, &r);
	assert_int_equal(r.code, POL_OK);
	assert_string_equal(r.message, "");
	assert_int_equal(r.valid_duration_ns, POL_DEFAULT_VALID_NS);
	assert_int_equal(r.valid_use_count, POL_DEFAULT_VALID_USES);

	/* no labels at all: the match cannot be evaluated, so it is false */
	attr_table_clear(&f->attrs);
	check(f, NULL, 0, 0, &r);
	assert_int_equal(r.code, POL_OK);
	close_fx(f);
}

static void test_ip_whitelist(void **state)
{
	(void)state;
	struct fx *f = open_sample("mixer-rule-deny-ip.yaml");
	struct pol_result r;

	set_map(f, "source.labels", 1, "istio", "ingressgateway");
	set_ip4(f, "source.ip", 10, 57, 200, 1);
	check(f, NULL, 0, 0, &r);
	assert_int_equal(r.code, POL_OK);
	/* the match and the listentry's value */
	assert_string_equal(refs_of(f, &r), "source.ip source.labels");
	/* the list's caching validity, allow or deny */
	assert_int_equal(r.valid_duration_ns, 300 * SECOND);
	assert_int_equal(r.valid_use_count, 10000);

	set_ip4(f, "source.ip", 10, 58, 0, 1);
	check(f, NULL, 0, 0, &r);
	assert_int_equal(r.code, POL_PERMISSION_DENIED);
	assert_string_equal(r.message, "whitelistip.handler.istio-system:"
				       "10.58.0.1 is not whitelisted");
	assert_int_equal(r.valid_duration_ns, 300 * SECOND);

	/* absent source.ip: the value's default, 0.0.0.0, is not listed */
	attr_table_clear(&f->attrs);
	f->nmaps = 0;
	set_map(f, "source.labels", 1, "istio", "ingressgateway");
	check(f, NULL, 0, 0, &r);
	assert_int_equal(r.code, POL_PERMISSION_DENIED);
	assert_string_equal(r.message, "whitelistip.handler.istio-system:"
				       "0.0.0.0 is not whitelisted");
	close_fx(f);
}

static void test_version_whitelist_and_internal(void **state)
{
	(void)state;
	struct fx *f = open_sample("mixer-rule-deny-whitelist.yaml");
	struct pol_result r;

	set_map(f, "destination.labels", 1, "app", "ratings");
	set_map(f, "source.labels", 1, "version", "v2");
	check(f, NULL, 0, 0, &r);
	assert_int_equal(r.code, POL_OK);

	f->nmaps = 0;
	set_map(f, "destination.labels", 1, "app", "ratings");
	set_map(f, "source.labels", 1, "version", "v3");
	check(f, NULL, 0, 0, &r);
	assert_int_equal(r.code, POL_PERMISSION_DENIED);
	assert_string_equal(r.message,
			    "whitelist.handler.istio-system:v3 is not "
			    "whitelisted");

	/* no source.labels: the instance cannot be built, the whole check
	 * fails INTERNAL (the proxy's fail-open policy decides) */
	attr_table_clear(&f->attrs);
	f->nmaps = 0;
	set_map(f, "destination.labels", 1, "app", "ratings");
	check(f, NULL, 0, 0, &r);
	assert_int_equal(r.code, POL_INTERNAL);
	assert_non_null(strstr(r.message, "appversion.instance.istio-system"));
	close_fx(f);
}

static void test_productpage_rate_limit(void **state)
{
	(void)state;
	struct fx *f = open_sample("mixer-rule-productpage-ratelimit.yaml");
	struct pol_result r;
	struct pol_quota_res got[2];
	struct pol_quota_req q[2] = {{"requestcountquota", 17, 1, false},
				     {"unknownquota", 12, 3, false}};
	r.quotas = got;

	/* productpage from anywhere: 2 per 5 s (the third override) */
	set_str(f, "destination.service.name", "productpage");
	for (int i = 0; i < 3; i++) {
		check(f, q, 2, 100 * i, &r);
		assert_int_equal(r.code, POL_OK);
		assert_int_equal(got[0].granted, i < 2 ? 1 : 0);
		if (i < 2)
			assert_int_equal(got[0].valid_duration_ns, 5 * SECOND);
		/* a quota no instance has: granted in full for a minute */
		assert_int_equal(got[1].granted, 3);
		assert_int_equal(got[1].valid_duration_ns, POL_DEFAULT_VALID_NS);
	}
	/* the window rolls: 5 s later there is room again */
	check(f, q, 1, 5 * SECOND + 200, &r);
	assert_int_equal(got[0].granted, 1);

	/* from 10.28.11.20 (x-forwarded-for): 500 per second */
	set_map(f, "request.headers", 1, "x-forwarded-for", "10.28.11.20");
	for (int i = 0; i < 10; i++) {
		check(f, q, 1, 0, &r);
		assert_int_equal(got[0].granted, 1);
	}

	/* the same deduplication id again: the earlier answer, not a
	 * second allocation (reviews allows 1 per 5 s) */
	attr_table_clear(&f->attrs);
	f->nmaps = 0;
	set_str(f, "destination.service.name", "reviews");
	struct pol_request req = {&f->attrs, "dup", 3, q, 1, NULL};
	pol_check(f->e, f->t, &req, 0, &r);
	assert_int_equal(got[0].granted, 1);
	pol_check(f->e, f->t, &req, 100, &r);
	assert_int_equal(got[0].granted, 1);
	req.dedup_id = "other";
	req.dedup_len = 5;
	pol_check(f->e, f->t, &req, 200, &r);
	assert_int_equal(got[0].granted, 0);
	close_fx(f);
}

static const char denier_and_quota[] =
	"kind: handler\n"
	"metadata: {name: no, namespace: istio-system}\n"
	"spec:\n"
	"  compiledAdapter: denier\n"
	"  params: {status: {code: 16, message: who are you}, "
	"validDuration: 2s, validUseCount: 7}\n"
	"---\n"
	"kind: handler\n"
	"metadata: {name: slow, namespace: istio-system}\n"
	"spec:\n"
	"  compiledAdapter: denier\n"
	"  params: {status: {code: 7, message: not today}, "
	"validDuration: 9s, validUseCount: 3}\n"
	"---\n"
	"kind: handler\n"
	"metadata: {name: q, namespace: istio-system}\n"
	"spec:\n"
	"  compiledAdapter: memquota\n"
	"  params: {quotas: [{name: rq.instance.istio-system, maxAmount: "
	"5}]}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: nothing, namespace: istio-system}\n"
	"spec: {compiledTemplate: checknothing}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: rq, namespace: istio-system}\n"
	"spec: {compiledTemplate: quota}\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: a, namespace: istio-system}\n"
	"spec:\n"
	"  match: request.path == \"/a\"\n"
	"  actions: [{handler: no, instances: [nothing]}, "
	"{handler: slow, instances: [nothing]}]\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: b, namespace: bookinfo}\n"
	"spec:\n"
	"  actions: [{handler: q.handler.istio-system, instances: "
	"[rq.instance.istio-system]}]\n";

static void test_combination_and_scoping(void **state)
{
	(void)state;
	struct fx *f = open_text(denier_and_quota);
	struct pol_result r;
	struct pol_quota_res got;
	struct pol_quota_req q = {"RQ", 2, 4, false};
	r.quotas = &got;

	/* two denials: the first's code, both messages, the least validity */
	set_str(f, "request.path", "/a");
	check(f, &q, 1, 0, &r);
	assert_int_equal(r.code, POL_UNAUTHENTICATED);
	assert_string_equal(r.message, "no.handler.istio-system:who are you, "
				       "slow.handler.istio-system:not today");
	assert_int_equal(r.valid_duration_ns, 2 * SECOND);
	assert_int_equal(r.valid_use_count, 3);

	/* rule b lives in bookinfo: it applies to bookinfo's requests only
	 * (here: none), so the quota is granted in full */
	set_str(f, "request.path", "/b");
	check(f, &q, 1, 0, &r);
	assert_int_equal(r.code, POL_OK);
	assert_int_equal(got.granted, 4);
	assert_int_equal(got.valid_duration_ns, POL_DEFAULT_VALID_NS);

	/* inbound to bookinfo: the memquota counter (no validDuration) gives
	 * 4 of 5, then nothing for 4, then 1 best effort */
	set_str(f, "destination.namespace", "bookinfo");
	check(f, &q, 1, 0, &r);
	assert_int_equal(got.granted, 4);
	assert_int_equal(got.valid_duration_ns, 0);
	check(f, &q, 1, 0, &r);
	assert_int_equal(got.granted, 0);
	q.best_effort = true;
	check(f, &q, 1, 0, &r);
	assert_int_equal(got.granted, 1);

	/* outbound: the source's namespace decides */
	set_str(f, "context.reporter.kind", "outbound");
	check(f, &q, 1, 0, &r);
	assert_int_equal(got.granted, 4); /* rule b no longer applies */
	close_fx(f);
}

/* An instance that cannot be built fails the check INTERNAL, and says
 * why, whatever other handlers answer after it. */
static void test_internal_says_why(void **state)
{
	(void)state;
	struct fx *f = open_text(
		"kind: handler\n"
		"metadata: {name: users, namespace: istio-system}\n"
		"spec: {compiledAdapter: listchecker, params: {overrides: [a]}}\n"
		"---\n"
		"kind: instance\n"
		"metadata: {name: user, namespace: istio-system}\n"
		"spec:\n"
		"  compiledTemplate: listentry\n"
		"  params: {value: 'source.labels[\"user\"]'}\n"
		"---\n"
		"kind: handler\n"
		"metadata: {name: deny, namespace: istio-system}\n"
		"spec: {compiledAdapter: denier, params: {status: {code: 7}}}\n"
		"---\n"
		"kind: instance\n"
		"metadata: {name: nothing, namespace: istio-system}\n"
		"spec: {compiledTemplate: checknothing}\n"
		"---\n"
		"kind: rule\n"
		"metadata: {name: r, namespace: istio-system}\n"
		"spec: {actions: [{handler: users, instances: [user]}, "
		"{handler: deny, instances: [nothing]}]}\n");
	struct pol_result r;
	check(f, NULL, 0, 0, &r);
	assert_int_equal(r.code, POL_INTERNAL);
	assert_string_equal(r.message,
			    "instance user.instance.istio-system: value "
			    "source.labels[\"user\"]: absent");
	assert_string_equal(refs_of(f, &r), "-"); /* never reused */
	close_fx(f);
}

/* A denier configured with INVALID_ARGUMENT or INTERNAL gives answers
 * that must not be reused (<mixd/check.h>), as mixd's own such answers
 * are; another code is reusable. */
static void test_denier_codes_never_reused(void **state)
{
	(void)state;
	static const struct {
		int code;
		const char *refs;
	} cases[] = {{3, "-"}, {13, "-"}, {7, "request.path"}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char yaml[1024];
		snprintf(yaml, sizeof(yaml),
			 YAML_DENIER("{status: {code: %d}}") YAML_NOTHING
				 YAML_DENY_WHEN("request.path == \"/x\""),
			 cases[i].code);
		struct fx *f = open_text(yaml);
		set_str(f, "request.path", "/x");
		struct pol_result r;
		check(f, NULL, 0, 0, &r);
		assert_int_equal(r.code, cases[i].code);
		assert_string_equal(refs_of(f, &r), cases[i].refs);
		close_fx(f);
	}
}

/* The memquota's bounds cost requests, and say so. */
static void test_quota_bounds_counted(void **state)
{
	(void)state;
	struct pol_options o = {.quota_max_keys = 2, .quota_max_dedup = 1};
	opts = &o;
	struct fx *f = open_sample("mixer-rule-productpage-ratelimit.yaml");
	opts = NULL;
	struct pol_result r;
	struct pol_quota_res got;
	struct pol_quota_req q = {"requestcountquota", 17, 1, false};
	struct pol_quota_stats st;
	r.quotas = &got;
	pol_engine_quota_stats(f->e, &st);
	assert_int_equal(st.keys + st.full + st.dedup_lost, 0);

	/* three destinations, three keys: the third finds no room; each
	 * request's id (check() makes a new one) past the first is not
	 * remembered */
	const char *dst[] = {"a", "b", "c"};
	for (int i = 0; i < 3; i++) {
		set_str(f, "destination.service.name", dst[i]);
		check(f, &q, 1, 0, &r);
		assert_int_equal(got.granted, i < 2 ? 1 : 0);
	}
	pol_engine_quota_stats(f->e, &st);
	assert_int_equal(st.keys, 2);
	assert_int_equal(st.full, 1);
	assert_int_equal(st.dedup_lost, 1);
	close_fx(f);
}

/* Two handlers for one quota instance: Mixer sent the request to both,
 * each allocating, and kept the first answer that granted something. */
static void test_quota_every_instance(void **state)
{
	(void)state;
	struct fx *f = open_text(
		"kind: handler\n"
		"metadata: {name: small, namespace: istio-system}\n"
		"spec: {compiledAdapter: memquota, params: {quotas: [{name: "
		"rq.instance.istio-system, maxAmount: 1}]}}\n"
		"---\n"
		"kind: handler\n"
		"metadata: {name: large, namespace: istio-system}\n"
		"spec: {compiledAdapter: memquota, params: {quotas: [{name: "
		"rq.instance.istio-system, maxAmount: 3}]}}\n"
		"---\n"
		"kind: instance\n"
		"metadata: {name: rq, namespace: istio-system}\n"
		"spec: {compiledTemplate: quota}\n"
		"---\n"
		"kind: rule\n"
		"metadata: {name: q, namespace: istio-system}\n"
		"spec: {actions: [{handler: small, instances: [rq]}, "
		"{handler: large, instances: [rq]}]}\n");
	struct pol_result r;
	struct pol_quota_res got;
	struct pol_quota_req q = {"rq", 2, 1, false};
	r.quotas = &got;
	/* small grants the first; large counts it too, and grants the next
	 * two alone; then neither has room */
	for (int i = 0; i < 4; i++) {
		check(f, &q, 1, 0, &r);
		assert_int_equal(got.granted, i < 3 ? 1 : 0);
	}
	close_fx(f);
}

int main(void)
{
	const char *env = getenv("MIXD_FIXTURES");
	snprintf(fixtures, sizeof(fixtures), "%s",
		 env ? env : "tests/fixtures");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deny_by_label),
		cmocka_unit_test(test_ip_whitelist),
		cmocka_unit_test(test_version_whitelist_and_internal),
		cmocka_unit_test(test_productpage_rate_limit),
		cmocka_unit_test(test_combination_and_scoping),
		cmocka_unit_test(test_internal_says_why),
		cmocka_unit_test(test_denier_codes_never_reused),
		cmocka_unit_test(test_quota_bounds_counted),
		cmocka_unit_test(test_quota_every_instance),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
