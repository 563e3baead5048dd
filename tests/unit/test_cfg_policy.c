/*
 * test_cfg_policy -- the policy kinds of a Mixer config: Istio's own
 * sample policies (tests/fixtures/policy, unchanged) load into the model
 * with Mixer's defaults, in both their Istio 1.4 (handler/instance) and
 * older per-kind forms; what Mixer's adapters refused at build time is
 * refused here, with the field named.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"

#define SECOND INT64_C(1000000000)

static char fixtures[PATH_MAX];

static struct cfg *load_sample(const char *name)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/policy/%s", fixtures, name);
	struct cfg *c = cfg_load(path, NULL);
	assert_non_null(c);
	if (!cfg_ok(c))
		cfg_print_diagnostics(c, stderr);
	assert_true(cfg_ok(c));
	return c;
}

static struct cfg *load_text(const char *yaml)
{
	struct cfg *c = cfg_load_buffer("test.yaml", yaml, strlen(yaml), NULL);
	assert_non_null(c);
	return c;
}

/* @c has exactly the errors @want (one line each), and is destroyed. */
static void assert_errors(struct cfg *c, const char *want)
{
	char *got = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&got, &len);
	for (size_t i = 0; i < cfg_error_count(c); i++)
		fprintf(f, "%s\n", cfg_error(c, i));
	fclose(f);
	assert_string_equal(got, want);
	free(got);
	cfg_destroy(c);
}

static void test_deny_label(void **state)
{
	(void)state;
	static const char *const files[] = {"mixer-rule-deny-label.yaml",
					    "mixer-rule-deny-label-crd.yaml"};
	static const char *const handler[] = {
		"denyreviewsv3handler.handler.istio-system",
		"denyreviewsv3handler.denier.istio-system"};
	static const char *const instance[] = {
		"denyreviewsv3request.instance.istio-system",
		"denyreviewsv3request.checknothing.istio-system"};
	for (int i = 0; i < 2; i++) {
		struct cfg *c = load_sample(files[i]);
		const struct cfg_handler *h = cfg_find_handler(c, handler[i]);
		assert_non_null(h);
		assert_int_equal(h->adapter, CFG_ADAPTER_DENIER);
		assert_int_equal(h->denier.status_code, 7);
		assert_string_equal(h->denier.status_message.s, "Not allowed");
		/* Mixer's defaults where the sample says nothing */
		assert_int_equal(h->denier.valid_duration_ns, 5 * SECOND);
		assert_int_equal(h->denier.valid_use_count, 1000);
		const struct cfg_instance *in = cfg_find_instance(c, instance[i]);
		assert_non_null(in);
		assert_int_equal(in->tmpl, CFG_TMPL_CHECKNOTHING);
		assert_int_equal(cfg_rule_count(c), 1);
		const struct cfg_rule *r = cfg_rule(c, 0);
		assert_int_equal(r->n_actions, 1);
		assert_ptr_equal(r->actions[0].handler, h);
		assert_int_equal(r->actions[0].n_instances, 1);
		assert_ptr_equal(r->actions[0].instances[0], in);
		assert_int_equal(r->match.type, ATTR_BOOL);
		cfg_destroy(c);
	}
}

static void test_productpage_ratelimit(void **state)
{
	(void)state;
	struct cfg *c = load_sample("mixer-rule-productpage-ratelimit.yaml");
	const struct cfg_handler *h =
		cfg_find_handler(c, "quotahandler.handler.istio-system");
	assert_non_null(h);
	assert_int_equal(h->adapter, CFG_ADAPTER_MEMQUOTA);
	const struct cfg_memquota *m = &h->memquota;
	assert_int_equal(m->min_dedup_ns, SECOND); /* the default */
	assert_int_equal(m->n_quotas, 1);
	const struct cfg_quota_def *q = &m->quotas[0];
	assert_string_equal(q->name.s,
			    "requestcountquota.instance.istio-system");
	assert_int_equal(q->max_amount, 500);
	assert_int_equal(q->valid_duration_ns, SECOND);
	assert_int_equal(q->n_overrides, 3);
	assert_int_equal(q->overrides[0].n_dims, 1);
	assert_string_equal(q->overrides[0].dims[0].name, "destination");
	assert_string_equal(q->overrides[0].dims[0].value.s, "reviews");
	assert_int_equal(q->overrides[0].max_amount, 1);
	assert_int_equal(q->overrides[0].valid_duration_ns, 5 * SECOND);
	assert_int_equal(q->overrides[1].n_dims, 2);
	assert_string_equal(q->overrides[1].dims[1].name, "source");
	assert_string_equal(q->overrides[1].dims[1].value.s, "10.28.11.20");
	assert_int_equal(q->overrides[2].max_amount, 2);

	const struct cfg_instance *in =
		cfg_find_instance(c, "requestcountquota.instance.istio-system");
	assert_non_null(in);
	assert_int_equal(in->tmpl, CFG_TMPL_QUOTA);
	assert_int_equal(in->quota.dimensions.n, 3);
	assert_string_equal(in->quota.dimensions.v[1].name, "destination");
	assert_int_equal(in->quota.dimensions.v[1].expr.type, ATTR_STRING);
	/* QuotaSpec and QuotaSpecBinding are the proxy's: warned, skipped */
	assert_int_equal(cfg_warning_count(c), 2);
	assert_non_null(strstr(cfg_warning(c, 0), "configures the proxy"));
	cfg_destroy(c);

	c = load_sample("mixer-rule-productpage-ratelimit-crd.yaml");
	h = cfg_find_handler(c, "handler.memquota.istio-system");
	assert_non_null(h);
	assert_int_equal(h->memquota.n_quotas, 1);
	assert_string_equal(h->memquota.quotas[0].name.s,
			    "requestcount.quota.istio-system");
	cfg_destroy(c);
}

static void test_lists(void **state)
{
	(void)state;
	struct cfg *c = load_sample("mixer-rule-deny-ip.yaml");
	const struct cfg_handler *h =
		cfg_find_handler(c, "whitelistip.handler.istio-system");
	assert_non_null(h);
	const struct cfg_listchecker *l = &h->listchecker;
	assert_int_equal(l->entry_type, CFG_LIST_IP_ADDRESSES);
	assert_false(l->blacklist);
	assert_int_equal(l->overrides.n, 1);
	assert_string_equal(l->overrides.v[0].s, "10.57.0.0/16");
	assert_null(l->provider_url.s);
	/* inventory.go's defaults */
	assert_int_equal(l->refresh_interval_ns, 60 * SECOND);
	assert_int_equal(l->ttl_ns, 300 * SECOND);
	assert_int_equal(l->caching_interval_ns, 300 * SECOND);
	assert_int_equal(l->caching_use_count, 10000);
	const struct cfg_instance *in =
		cfg_find_instance(c, "sourceip.instance.istio-system");
	assert_int_equal(in->tmpl, CFG_TMPL_LISTENTRY);
	assert_int_equal(in->listentry.value.type, ATTR_IP);
	cfg_destroy(c);

	c = load_sample("mixer-rule-deny-whitelist.yaml");
	h = cfg_find_handler(c, "whitelist.handler.istio-system");
	assert_int_equal(h->listchecker.entry_type, CFG_LIST_STRINGS);
	assert_int_equal(h->listchecker.overrides.n, 2);
	in = cfg_find_instance(c, "appversion.instance.istio-system");
	assert_int_equal(in->listentry.value.type, ATTR_STRING);
	cfg_destroy(c);

	for (const char *const *f = (const char *const[]){
		     "mixer-rule-deny-ip-crd.yaml",
		     "mixer-rule-deny-whitelist-crd.yaml",
		     "mixer-rule-ratings-ratelimit.yaml",
		     "mixer-rule-ratings-denial.yaml",
		     "mixer-rule-ingress-denial.yaml", NULL};
	     *f; f++)
		cfg_destroy(load_sample(*f));
}

static void test_refused_as_mixer_refused(void **state)
{
	(void)state;
	assert_errors(
		load_text("kind: handler\n"
			  "metadata: {name: q, namespace: ns}\n"
			  "spec:\n"
			  "  compiledAdapter: memquota\n"
			  "  params:\n"
			  "    minDeduplicationDuration: 0s\n"
			  "    quotas:\n"
			  "    - name: a.instance.ns\n"
			  "      maxAmount: -1\n"
			  "---\n"
			  "kind: instance\n"
			  "metadata: {name: b, namespace: ns}\n"
			  "spec: {compiledTemplate: quota}\n"
			  "---\n"
			  "kind: rule\n"
			  "metadata: {name: r, namespace: ns}\n"
			  "spec:\n"
			  "  actions:\n"
			  "  - {handler: q, instances: [b]}\n"),
		"test.yaml:1:1: q.handler.ns: min_deduplication_duration: "
		"deduplication window must be > 0\n"
		"test.yaml:8:7: q.handler.ns: quotas[0]: maxAmount and "
		"validDuration must be >= 0\n"
		"test.yaml:19:5: r.rule.ns: actions[0]: did not find limit "
		"defined for quota b.instance.ns in handler q.handler.ns\n");
	assert_errors(
		load_text("kind: denier\n"
			  "metadata: {name: d, namespace: ns}\n"
			  "spec: {status: {code: 17}, validUseCount: -1}\n"),
		"test.yaml:1:1: d.denier.ns: status.code: found 17, expected "
		"a google.rpc.Code (0..16)\n"
		"test.yaml:1:1: d.denier.ns: valid_use_count: must be >= 0 "
		"and fit an int32\n");
	assert_errors(
		load_text("kind: listchecker\n"
			  "metadata: {name: l, namespace: ns}\n"
			  "spec:\n"
			  "  providerUrl: lists.example.com/x\n"
			  "  refreshInterval: 10s\n"
			  "  ttl: 5s\n"),
		"test.yaml:4:16: l.listchecker.ns: provider_url: URL scheme "
		"and host cannot be empty\n"
		"test.yaml:1:1: l.listchecker.ns: ttl: must be > "
		"refreshInterval\n");
	/* a listentry value must be a string or an address */
	struct cfg *c = load_text("kind: listentry\n"
				  "metadata: {name: v, namespace: ns}\n"
				  "spec: {value: response.code}\n");
	assert_int_equal(cfg_error_count(c), 1);
	assert_non_null(strstr(cfg_error(c, 0),
			       "found INT64 expression \"response.code\", "
			       "expected a STRING or IP_ADDRESS"));
	cfg_destroy(c);
	/* checknothing has no fields */
	c = load_text("kind: checknothing\n"
		      "metadata: {name: n, namespace: ns}\n"
		      "spec: {value: x}\n");
	assert_int_equal(cfg_error_count(c), 1);
	cfg_destroy(c);
	/* a metric instance sent to a denier */
	c = load_text("kind: denier\n"
		      "metadata: {name: d, namespace: ns}\n"
		      "spec: {}\n"
		      "---\n"
		      "kind: metric\n"
		      "metadata: {name: m, namespace: ns}\n"
		      "spec: {value: \"1\"}\n"
		      "---\n"
		      "kind: rule\n"
		      "metadata: {name: r, namespace: ns}\n"
		      "spec: {actions: [{handler: d.denier, instances: "
		      "[m.metric]}]}\n");
	assert_int_equal(cfg_error_count(c), 1);
	assert_non_null(strstr(cfg_error(c, 0),
			       "expected a listentry or checknothing or quota "
			       "instance"));
	cfg_destroy(c);
}

int main(void)
{
	const char *env = getenv("MIXD_FIXTURES");
	snprintf(fixtures, sizeof(fixtures), "%s",
		 env ? env : "tests/fixtures");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deny_label),
		cmocka_unit_test(test_productpage_ratelimit),
		cmocka_unit_test(test_lists),
		cmocka_unit_test(test_refused_as_mixer_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
