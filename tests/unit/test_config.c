/*
 * test_config -- loading Mixer configuration: the user's seed file, the
 * corpus of broken configs with their exact errors, both field spellings,
 * directories and fs:// URLs, Istio 1.4 kinds, secrets, namespace scoping.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "expose/expose.h"
#include "expr/expr.h"

static char fixtures[PATH_MAX];

static const char *fixture(const char *rel)
{
	static char buf[4][PATH_MAX + 256];
	static int i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", fixtures, rel);
	return buf[i];
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* All errors, one per line, as the .err files hold them. */
static char *errors_text(const struct cfg *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	for (size_t i = 0; i < cfg_error_count(c); i++)
		fprintf(f, "%s\n", cfg_error(c, i));
	fclose(f);
	return buf;
}

static char *summary_text(const struct cfg *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	cfg_print_summary(c, f);
	fclose(f);
	return buf;
}

static struct cfg *load_text(const char *yaml)
{
	struct cfg *c =
		cfg_load_buffer("test.yaml", yaml, strlen(yaml), "default");

	assert_non_null(c);
	return c;
}

/* @c has exactly the errors @want (one line each), and is destroyed. */
static void assert_errors(struct cfg *c, const char *want)
{
	char *got = errors_text(c);
	assert_string_equal(got, want);
	free(got);
	cfg_destroy(c);
}

static void assert_loads(const struct cfg *c)
{
	if (!cfg_ok(c)) {
		char *e = errors_text(c);

		fprintf(stderr, "unexpected errors:\n%s", e);
		free(e);
	}
	assert_true(cfg_ok(c));
}

/* ----------------------------------------------------------- the seed */

static const struct cfg_handler *handler_of(const struct cfg *c,
					    enum cfg_adapter a)
{
	for (size_t i = 0; i < cfg_handler_count(c); i++)
		if (cfg_handler(c, i)->adapter == a)
			return cfg_handler(c, i);
	return NULL;
}

static void test_seed_loads_and_type_checks(void **state)
{
	struct cfg *c = cfg_load(fixture("config/mixer-seed.yaml"), "default");
	size_t n_metric = 0, n_mesos = 0;

	assert_non_null(c);
	assert_loads(c);
	assert_int_equal(cfg_warning_count(c), 0);
	assert_int_equal(cfg_manifest_count(c), 1);
	assert_int_equal(cfg_rule_count(c), 4);
	assert_int_equal(cfg_instance_count(c), 7);
	assert_int_equal(cfg_handler_count(c), 3);
	for (size_t i = 0; i < cfg_instance_count(c); i++) {
		n_metric += cfg_instance(c, i)->tmpl == CFG_TMPL_METRIC;
		n_mesos += cfg_instance(c, i)->tmpl == CFG_TMPL_MESOS;
	}
	assert_int_equal(n_metric, 6);
	assert_int_equal(n_mesos, 1);
	assert_non_null(handler_of(c, CFG_ADAPTER_PROMETHEUS));
	assert_non_null(handler_of(c, CFG_ADAPTER_MESOSENV));
	assert_non_null(handler_of(c, CFG_ADAPTER_STDIO));
	assert_true(handler_of(c, CFG_ADAPTER_STDIO)->stdio.output_as_json);
	assert_string_equal(cfg_default_namespace(c), "default");
	cfg_destroy(c);
}

static void test_seed_prometheus_families(void **state)
{
	static const double explicit_bounds[] = {
		0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
	static const char *const families[] = {
		"istio_requests_total",	      "istio_request_duration_seconds",
		"istio_request_bytes",	      "istio_response_bytes",
		"istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"};
	struct cfg *c = cfg_load(fixture("config/mixer-seed.yaml"), "default");
	const struct cfg_prometheus *p;

	assert_loads(c);
	p = &handler_of(c, CFG_ADAPTER_PROMETHEUS)->prometheus;
	assert_int_equal(p->n_metrics, 6);
	for (size_t i = 0; i < 6; i++) {
		assert_string_equal(p->metrics[i].family, families[i]);
		assert_non_null(p->metrics[i].instance);
	}
	assert_int_equal(p->metrics[0].kind, CFG_PROM_COUNTER);
	assert_ptr_equal(p->metrics[0].instance,
			 cfg_find_instance(c, "requestcount.metric.default"));

	const struct cfg_buckets *b = &p->metrics[1].buckets;
	assert_int_equal(p->metrics[1].kind, CFG_PROM_DISTRIBUTION);
	assert_int_equal(b->kind, CFG_BUCKETS_EXPLICIT);
	assert_int_equal(b->n_bounds, 11);
	for (size_t i = 0; i < 11; i++)
		assert_true(b->bounds[i] == explicit_bounds[i]);

	for (size_t m = 2; m <= 3; m++) {
		double want = 1;

		b = &p->metrics[m].buckets;
		assert_int_equal(b->kind, CFG_BUCKETS_EXPONENTIAL);
		assert_int_equal(b->num_finite_buckets, 8);
		assert_int_equal(b->n_bounds, 9);
		for (size_t i = 0; i < 9; i++, want *= 10)
			assert_true(b->bounds[i] == want);
	}

	/* labels map onto the instance's dimensions, in YAML order */
	const struct cfg_prom_metric *rc = &p->metrics[0];
	const struct cfg_metric_inst *mi = &rc->instance->metric;
	assert_int_equal(rc->label_names.n, 17);
	assert_int_equal(mi->dimensions.n, 17);
	assert_string_equal(mi->dimensions.v[0].name, "reporter");
	assert_string_equal(mi->dimensions.v[16].name,
			    "connection_security_policy");
	for (size_t l = 0; l < rc->label_names.n; l++)
		assert_string_equal(mi->dimensions.v[rc->label_dims[l]].name,
				    rc->label_names.v[l].s);
	cfg_destroy(c);
}

static void test_seed_expressions_share_one_program(void **state)
{
	struct cfg *c = cfg_load(fixture("config/mixer-seed.yaml"), "default");
	const struct cfg_instance *a, *b, *mesos;
	const struct expr_program *p;

	assert_loads(c);
	p = cfg_program(c);
	assert_non_null(p);
	a = cfg_find_instance(c, "requestcount.metric.default");
	b = cfg_find_instance(c, "tcpbytesent.metric.default");
	mesos = cfg_find_instance(c, "attributes.mesos.default");
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(mesos);
	assert_int_equal(a->metric.value.type, ATTR_INT64);
	assert_int_equal(cfg_find_instance(c, "requestduration.metric.default")
				 ->metric.value.type,
			 ATTR_DURATION);
	/* the same dimension text in two instances is one expression */
	assert_true(a->metric.dimensions.v[0].expr.id >= 0);
	assert_int_equal(a->metric.dimensions.v[0].expr.id,
			 b->metric.dimensions.v[0].expr.id);
	for (size_t i = 0; i < cfg_rule_count(c); i++) {
		const struct cfg_rule *r = cfg_rule(c, i);

		assert_true(r->match.id >= 0);
		assert_int_equal(expr_type(p, (uint32_t)r->match.id),
				 ATTR_BOOL);
	}
	/* mesos inputs and bindings compiled; binding targets resolved */
	assert_int_equal(mesos->mesos.source_ip.type, ATTR_IP);
	assert_int_equal(mesos->mesos.destination_port.type, ATTR_INT64);
	assert_null(mesos->mesos.destination_ip.text);
	assert_int_equal(mesos->mesos.attribute_bindings.n, 21);
	for (size_t i = 0; i < mesos->mesos.attribute_bindings.n; i++) {
		const struct cfg_named_expr *ne =
			&mesos->mesos.attribute_bindings.v[i];

		assert_true(ne->expr.id >= 0);
		assert_true(ne->slot >= 0);
		assert_string_equal(
			attr_vocab_name(cfg_vocab(c), (unsigned)ne->slot),
			ne->name);
	}
	assert_true(attr_vocab_find(cfg_vocab(c), "$out.source_pod_ip", 18) >=
		    0);
	cfg_destroy(c);
}

static void test_seed_check_config_summary(void **state)
{
	struct cfg *c = cfg_load(fixture("config/mixer-seed.yaml"), "default");
	char *want = read_all(fixture("config/mixer-seed.summary"));
	char *got;

	assert_non_null(want);
	assert_loads(c);
	got = summary_text(c);
	if (strcmp(got, want))
		fprintf(stderr, "summary differs; got:\n%s", got);
	assert_string_equal(got, want);
	/* the password in the user's file is never printed */
	assert_null(strstr(got, "Zmcc@001"));
	free(got);
	free(want);
	cfg_destroy(c);
}

static void test_check_config_exit_status(void **state)
{
	FILE *null = fopen("/dev/null", "w");

	assert_int_equal(cfg_check(fixture("config/mixer-seed.yaml"), "default",
				   null, NULL, NULL),
			 0);
	assert_int_equal(cfg_check(fixture("config/broken/bad_yaml.yaml"),
				   "default", null, NULL, NULL),
			 1);
	assert_int_equal(cfg_check(fixture("config/does-not-exist.yaml"),
				   "default", null, NULL, NULL),
			 1);
	fclose(null);
}

/* --------------------------------------------------- broken configs */

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_broken_corpus_exact_errors(void **state)
{
	char cwd[PATH_MAX];
	char *names[256];
	size_t n = 0, failed = 0;
	DIR *d;
	struct dirent *de;

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	/* load by bare name so the expected text has no directory */
	assert_int_equal(chdir(fixture("config/broken")), 0);
	d = opendir(".");
	assert_non_null(d);
	while ((de = readdir(d)) && n < 256) {
		size_t l = strlen(de->d_name);

		if (l > 5 && !strcmp(de->d_name + l - 5, ".yaml"))
			names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_names);
	assert_true(n >= 19);
	unsetenv("MIXD_TEST_UNSET_PASSWORD");
	for (size_t i = 0; i < n; i++) {
		char errf[PATH_MAX];
		char *want, *got;
		struct cfg *c = cfg_load(names[i], "default");

		snprintf(errf, sizeof(errf), "%.*s.err",
			 (int)strlen(names[i]) - 5, names[i]);
		want = read_all(errf);
		got = errors_text(c);
		if (!want || strcmp(got, want) || cfg_ok(c) || !*got) {
			fprintf(stderr, "%s: expected:\n%sgot:\n%s", names[i],
				want ? want : "(no .err file)\n", got);
			failed++;
		}
		free(want);
		free(got);
		free(names[i]);
		cfg_destroy(c);
	}
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(failed, 0);
}

/* Family names as Mixer's prometheus adapter made them: the name, or the
 * instance_name when there is none, and the namespace, each with a
 * leading '/' dropped, '/', '.' and ' ' made '_', '-' dropped. */
static void test_family_names_as_mixer_made_them(void **state)
{
	(void)state;
	struct cfg *c = load_text(
		"kind: metric\n"
		"metadata: {name: requestcount, namespace: istio-system}\n"
		"spec: {value: \"1\", dimensions: {}}\n"
		"---\n"
		"kind: prometheus\n"
		"metadata: {name: handler, namespace: istio-system}\n"
		"spec:\n"
		"  metrics:\n"
		"  - instance_name: requestcount.metric.istio-system\n"
		"    kind: COUNTER\n"
		"  - name: /requests/total\n"
		"    namespace: /my-mesh\n"
		"    instance_name: requestcount.metric.istio-system\n"
		"    kind: COUNTER\n");
	assert_loads(c);
	const struct cfg_handler *h = NULL;
	for (size_t i = 0; i < cfg_handler_count(c); i++)
		if (cfg_handler(c, i)->adapter == CFG_ADAPTER_PROMETHEUS)
			h = cfg_handler(c, i);
	assert_non_null(h);
	assert_int_equal(h->prometheus.n_metrics, 2);
	assert_string_equal(h->prometheus.metrics[0].family,
			    "istio_requestcount_metric_istiosystem");
	assert_string_equal(h->prometheus.metrics[1].family,
			    "mymesh_requests_total");
	cfg_destroy(c);
}

static void test_errors_are_all_collected(void **state)
{
	struct cfg *c = cfg_load(fixture("config/broken/bad_kind_values.yaml"),
				 "default");

	assert_false(cfg_ok(c));
	assert_true(cfg_error_count(c) >= 7);
	cfg_destroy(c);
}

static void test_expression_error_column_in_quoted_scalar(void **state)
{
	struct cfg *c = load_text("kind: metric\n"
				  "metadata: {name: m, namespace: default}\n"
				  "spec:\n"
				  "  value: '1'\n"
				  "  dimensions:\n"
				  "    a: 'source.uid | sourc.name'\n"
				  "    b: \"request.size | nope\"\n");
	/* 'source.uid | sourc.name': the quote is column 8, sourc.name
	 * starts 13 bytes into the text */
	assert_errors(
		c, "test.yaml:6:22: m.metric.default: dimensions.a: unknown "
		   "attribute \"sourc.name\" in \"source.uid | sourc.name\"\n"
		   "test.yaml:7:24: m.metric.default: dimensions.b: unknown "
		   "attribute \"nope\" in \"request.size | nope\"\n");
}

static void test_value_must_be_numeric(void **state)
{
	struct cfg *c = load_text("kind: metric\n"
				  "metadata: {name: m, namespace: default}\n"
				  "spec:\n"
				  "  value: connection.mtls | false\n");
	assert_errors(c, "test.yaml:4:10: m.metric.default: value: found "
			 "BOOL expression \"connection.mtls | false\", "
			 "expected INT64, DOUBLE, DURATION or STRING\n");
}

/* ----------------------------------------------- spellings and kinds */

static const char *const prom_snake =
	"kind: metric\n"
	"metadata: {name: rc, namespace: default}\n"
	"spec:\n"
	"  value: '1'\n"
	"  dimensions: {reporter: '\"x\"'}\n"
	"  monitored_resource_type: '\"UNSPECIFIED\"'\n"
	"---\n"
	"kind: prometheus\n"
	"metadata: {name: h, namespace: default}\n"
	"spec:\n"
	"  metrics_expiration_policy:\n"
	"    metrics_expiry_duration: 10m\n"
	"  metrics:\n"
	"  - name: a\n"
	"    instance_name: rc.metric.default\n"
	"    kind: DISTRIBUTION\n"
	"    label_names: [reporter]\n"
	"    buckets:\n"
	"      linear_buckets: {num_finite_buckets: 3, width: 2, offset: 1}\n"
	"  - name: b\n"
	"    instance_name: rc.metric.default\n"
	"    kind: DISTRIBUTION\n"
	"    buckets:\n"
	"      exponential_buckets: {num_finite_buckets: 2, growth_factor: 2,"
	" scale: 0.5}\n";

static const char *const prom_camel =
	"kind: metric\n"
	"metadata: {name: rc, namespace: default}\n"
	"spec:\n"
	"  value: '1'\n"
	"  dimensions: {reporter: '\"x\"'}\n"
	"  monitoredResourceType: '\"UNSPECIFIED\"'\n"
	"---\n"
	"kind: prometheus\n"
	"metadata: {name: h, namespace: default}\n"
	"spec:\n"
	"  metricsExpirationPolicy:\n"
	"    metricsExpiryDuration: 10m\n"
	"    expiryCheckIntervalDuration: 1m\n"
	"  metrics:\n"
	"  - name: a\n"
	"    instanceName: rc.metric.default\n"
	"    kind: DISTRIBUTION\n"
	"    labelNames: [reporter]\n"
	"    buckets:\n"
	"      linearBuckets: {numFiniteBuckets: 3, width: 2, offset: 1}\n"
	"  - name: b\n"
	"    instanceName: rc.metric.default\n"
	"    kind: DISTRIBUTION\n"
	"    buckets:\n"
	"      exponentialBuckets: {numFiniteBuckets: 2, growthFactor: 2,"
	" scale: 0.5}\n";

static void check_prom_model(const struct cfg *c, int64_t check_ns)
{
	const struct cfg_prometheus *p =
		&handler_of(c, CFG_ADAPTER_PROMETHEUS)->prometheus;
	const struct cfg_buckets *lin = &p->metrics[0].buckets;
	const struct cfg_buckets *exp = &p->metrics[1].buckets;

	assert_int_equal(p->n_metrics, 2);
	assert_int_equal(p->metrics_expiry_ns, 600 * INT64_C(1000000000));
	assert_int_equal(p->expiry_check_interval_ns, check_ns);
	assert_int_equal(p->metrics[0].label_names.n, 1);
	assert_int_equal(lin->kind, CFG_BUCKETS_LINEAR);
	assert_int_equal(lin->n_bounds, 4); /* offset + width * i, i=0..3 */
	assert_true(lin->bounds[0] == 1 && lin->bounds[1] == 3 &&
		    lin->bounds[2] == 5 && lin->bounds[3] == 7);
	assert_int_equal(exp->kind, CFG_BUCKETS_EXPONENTIAL);
	assert_int_equal(exp->n_bounds, 3); /* scale * growth^i */
	assert_true(exp->bounds[0] == 0.5 && exp->bounds[1] == 1 &&
		    exp->bounds[2] == 2);
	assert_non_null(cfg_find_instance(c, "rc.metric.default")
				->metric.monitored_resource_type.text);
}

static void test_both_field_spellings(void **state)
{
	struct cfg *snake = load_text(prom_snake);
	struct cfg *camel = load_text(prom_camel);

	assert_loads(snake);
	assert_loads(camel);
	/* without an interval, Mixer checked twice per expiry */
	check_prom_model(snake, 300 * INT64_C(1000000000));
	check_prom_model(camel, 60 * INT64_C(1000000000));
	cfg_destroy(snake);
	cfg_destroy(camel);
}

/*
 * Bounds accumulate as client_golang's LinearBuckets / ExponentialBuckets
 * did for Mixer (start += width; start *= factor), not offset + width * i
 * or scale * factor^i: where the two round apart, the "le" label differs
 * and Prometheus sees a new series. Expected values are Go's.
 */
static void test_bucket_bounds_accumulate_as_client_golang(void **state)
{
	struct cfg *c = load_text("kind: metric\n"
				  "metadata: {name: rc, namespace: default}\n"
				  "spec: {value: '1'}\n"
				  "---\n"
				  "kind: prometheus\n"
				  "metadata: {name: h, namespace: default}\n"
				  "spec:\n"
				  "  metrics:\n"
				  "  - name: lin\n"
				  "    instance_name: rc.metric.default\n"
				  "    kind: DISTRIBUTION\n"
				  "    buckets:\n"
				  "      linearBuckets: {numFiniteBuckets: 10, "
				  "width: 0.1, offset: 0}\n"
				  "  - name: exp\n"
				  "    instance_name: rc.metric.default\n"
				  "    kind: DISTRIBUTION\n"
				  "    buckets:\n"
				  "      exponentialBuckets: "
				  "{numFiniteBuckets: 5, growthFactor: 3,"
				  " scale: 0.1}\n");
	static const struct {
		size_t m, i;
		double v;
		const char *le; /* strconv.FormatFloat(v, 'g', -1, 64) */
	} want[] = {
		{0, 3, 0.30000000000000004, "0.30000000000000004"},
		{0, 6, 0.6, "0.6"}, /* 0.6000000000000001 multiplied */
		{0, 8, 0.7999999999999999, "0.7999999999999999"},
		{0, 10, 0.9999999999999999, "0.9999999999999999"}, /* not 1 */
		{1, 2, 0.9000000000000001, "0.9000000000000001"},  /* not 0.9 */
		{1, 4, 8.100000000000001, "8.100000000000001"},
		{1, 5, 24.300000000000004, "24.300000000000004"},
	};
	const struct cfg_prometheus *p;
	char le[EXPOSE_VALUE_MAX];

	assert_loads(c);
	p = &handler_of(c, CFG_ADAPTER_PROMETHEUS)->prometheus;
	assert_int_equal(p->metrics[0].buckets.n_bounds, 11);
	assert_int_equal(p->metrics[1].buckets.n_bounds, 6);
	for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
		double got = p->metrics[want[k].m].buckets.bounds[want[k].i];

		expose_format_float_go(got, le);
		if (got != want[k].v || strcmp(le, want[k].le))
			fail_msg("metric %zu bound %zu: %.17g (le=\"%s\"), "
				 "want %s",
				 want[k].m, want[k].i, got, le, want[k].le);
	}
	cfg_destroy(c);
}

static void test_both_spellings_at_once_is_an_error(void **state)
{
	struct cfg *c = load_text("kind: prometheus\n"
				  "metadata: {name: h, namespace: default}\n"
				  "spec:\n"
				  "  metrics:\n"
				  "  - name: a\n"
				  "    instance_name: x.metric.default\n"
				  "    instanceName: x.metric.default\n"
				  "    kind: COUNTER\n");
	assert_errors(c, "test.yaml:7:5: h.prometheus.default: "
			 "metrics[0].instanceName: found a second value "
			 "(the first is at line 6), expected one\n");
}

static void test_unknown_kinds_warn_once(void **state)
{
	struct cfg *c = load_text("kind: opa\n"
				  "metadata: {name: a, namespace: default}\n"
				  "spec: {}\n"
				  "---\n"
				  "kind: opa\n"
				  "metadata: {name: b, namespace: default}\n"
				  "---\n"
				  "kind: kubernetesenv\n"
				  "metadata: {name: c, namespace: default}\n"
				  "---\n"
				  "kind: rule\n"
				  "metadata: {name: r, namespace: default}\n"
				  "spec:\n"
				  "  requestHeaderOperations: [{name: x}]\n"
				  "  actions:\n"
				  "  - handler: a.opa\n");

	assert_loads(c);
	assert_int_equal(cfg_warning_count(c), 3);
	assert_string_equal(cfg_warning(c, 0),
			    "test.yaml:1:1: a.opa.default: kind \"opa\" "
			    "is not supported by mixd, objects of this kind "
			    "are skipped");
	assert_string_equal(cfg_warning(c, 1),
			    "test.yaml:8:1: c.kubernetesenv.default: kind "
			    "\"kubernetesenv\" is not supported by mixd, "
			    "objects of this kind are skipped");
	assert_string_equal(cfg_warning(c, 2),
			    "test.yaml:14:28: r.rule.default: "
			    "requestHeaderOperations: not supported by mixd "
			    "(check path only), ignored");
	/* the action's handler was skipped: no dangling-reference error */
	assert_int_equal(cfg_rule(c, 0)->n_actions, 1);
	assert_null(cfg_rule(c, 0)->actions[0].handler);
	cfg_destroy(c);
}

static void test_sampling_is_rejected(void **state)
{
	struct cfg *c =
		load_text("kind: rule\n"
			  "metadata: {name: r, namespace: default}\n"
			  "spec:\n"
			  "  sampling: {random: {percentSampled: 10}}\n");
	assert_errors(c, "test.yaml:4:13: r.rule.default: sampling: "
			 "found a mapping, expected no sampling (not "
			 "supported by mixd)\n");
}

static void test_istio14_instance_and_handler(void **state)
{
	struct cfg *c = load_text(
		"apiVersion: config.istio.io/v1alpha2\n"
		"kind: instance\n"
		"metadata: {name: requestcount, namespace: istio-system}\n"
		"spec:\n"
		"  compiledTemplate: metric\n"
		"  params:\n"
		"    value: '1'\n"
		"    dimensions: {reporter: '\"x\"'}\n"
		"---\n"
		"kind: instance\n"
		"metadata: {name: attributes, namespace: istio-system}\n"
		"spec:\n"
		"  compiledTemplate: mesos\n"
		"  params: {source_uid: 'source.uid | \"\"'}\n"
		"  attributeBindings:\n"
		"    source.name: $out.source_pod_name | \"unknown\"\n"
		"---\n"
		"kind: instance\n"
		"metadata: {name: k8s, namespace: istio-system}\n"
		"spec: {compiledTemplate: kubernetes}\n"
		"---\n"
		"kind: handler\n"
		"metadata: {name: prometheus, namespace: istio-system}\n"
		"spec:\n"
		"  compiledAdapter: prometheus\n"
		"  params:\n"
		"    metrics:\n"
		"    - name: requests_total\n"
		"      instance_name: requestcount.instance.istio-system\n"
		"      kind: COUNTER\n"
		"      label_names: [reporter]\n"
		"---\n"
		"kind: rule\n"
		"metadata: {name: promhttp, namespace: istio-system}\n"
		"spec:\n"
		"  actions:\n"
		"  - handler: prometheus\n"
		"    instances: [requestcount, k8s]\n");
	const struct cfg_rule *r;

	assert_loads(c);
	assert_int_equal(cfg_instance_count(c), 2);
	assert_int_equal(cfg_handler_count(c), 1);
	assert_int_equal(cfg_warning_count(c), 1);
	assert_string_equal(cfg_warning(c, 0),
			    "test.yaml:20:26: k8s.instance.istio-system: "
			    "template \"kubernetes\" is not supported by mixd, "
			    "objects using it are skipped");
	r = cfg_rule(c, 0);
	assert_non_null(r->actions[0].handler);
	assert_string_equal(r->actions[0].handler->meta.fqn,
			    "prometheus.handler.istio-system");
	assert_int_equal(r->actions[0].n_instances, 1);
	assert_string_equal(r->actions[0].instances[0]->meta.fqn,
			    "requestcount.instance.istio-system");
	assert_int_equal(
		cfg_find_instance(c, "attributes.instance.istio-system")
			->mesos.attribute_bindings.n,
		1);
	/* default_ns is "default": istio-system rules are scoped */
	assert_false(r->in_default_namespace);
	cfg_destroy(c);
}

static void test_istio14_params_errors_name_the_path(void **state)
{
	struct cfg *c = load_text("kind: handler\n"
				  "metadata: {name: p, namespace: default}\n"
				  "spec:\n"
				  "  compiledAdapter: prometheus\n"
				  "  params: {metric: []}\n");
	assert_errors(c, "test.yaml:5:12: p.handler.default: params: "
			 "unknown field \"metric\", expected metrics or "
			 "metrics_expiration_policy\n");
}

/* ----------------------------------------------- files and directories */

static char tmpdir[PATH_MAX];

static void make_tmpdir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/mixd-cfg-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(tmpdir));
}

static void rm_rf(const char *path)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	assert_int_equal(system(cmd), 0);
}

static const char *tmp(const char *rel)
{
	static char buf[4][PATH_MAX + 256];
	static int i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", tmpdir, rel);
	return buf[i];
}

static void build_tree(void)
{
	make_tmpdir();
	assert_int_equal(mkdir(tmp("a"), 0700), 0);
	assert_int_equal(mkdir(tmp("a/b"), 0700), 0);
	assert_int_equal(mkdir(tmp(".hidden"), 0700), 0);
	write_file(tmp("1.yaml"), "kind: metric\n"
				  "metadata: {name: one, namespace: default}\n"
				  "spec: {value: '1'}\n");
	write_file(tmp("a/2.yml"),
		   "kind: metric\n"
		   "metadata: {name: two, namespace: default}\n"
		   "spec: {value: '2'}\n"
		   "---\n"
		   "kind: metric\n"
		   "metadata: {name: three, namespace: default}\n"
		   "spec: {value: '3'}\n");
	write_file(tmp("a/b/4.yaml"), "kind: metric\n"
				      "metadata: {name: four}\n"
				      "spec: {value: '4'}\n");
	write_file(tmp("a/notes.txt"), "this is: [not yaml\n");
	write_file(tmp(".hidden/5.yaml"), "kind: metric\n"
					  "metadata: {name: one}\n"
					  "spec: {value: '5'}\n");
}

static void test_directory_load_is_recursive_and_sorted(void **state)
{
	struct cfg *c;
	const char *const *src;
	size_t n;

	build_tree();
	c = cfg_load(tmpdir, "default");
	assert_loads(c);
	assert_int_equal(cfg_instance_count(c), 4);
	assert_string_equal(cfg_instance(c, 0)->meta.name, "one");
	assert_string_equal(cfg_instance(c, 1)->meta.name, "two");
	assert_string_equal(cfg_instance(c, 2)->meta.name, "three");
	/* no namespace: the default one */
	assert_string_equal(cfg_instance(c, 3)->meta.fqn,
			    "four.metric.default");
	/* watches: every directory walked and every file read */
	src = cfg_sources(c, &n);
	assert_int_equal(n, 6);
	assert_string_equal(src[0], tmpdir);
	assert_string_equal(src[1], tmp("1.yaml"));
	assert_string_equal(src[2], tmp("a"));
	assert_string_equal(src[3], tmp("a/2.yml"));
	assert_string_equal(src[4], tmp("a/b"));
	assert_string_equal(src[5], tmp("a/b/4.yaml"));
	cfg_destroy(c);
	rm_rf(tmpdir);
}

/* An alias is decoded at every use: 1,000 uses of a 100 KB anchor would
 * take 100 MB from 100 KB of YAML. The arena is bounded by the input. */
static void test_aliases_cannot_expand_without_bound(void **state)
{
	size_t big = 100 * 1024, uses = 1000;
	size_t cap = big + uses * 8 + 512;
	char *y = malloc(cap), *o = y;
	o += sprintf(o, "kind: prometheus\n"
			"metadata: {name: h, namespace: default}\n"
			"spec:\n"
			"  metrics:\n"
			"  - name: x\n"
			"    instance_name: m.metric\n"
			"    kind: COUNTER\n"
			"    description: &big ");
	memset(o, 'a', big);
	o += big;
	o += sprintf(o, "\n    label_names: [");
	for (size_t i = 0; i < uses; i++)
		o += sprintf(o, "%s*big", i ? ", " : "");
	o += sprintf(o, "]\n");
	assert_true((size_t)(o - y) < cap);
	struct cfg *c = cfg_load_buffer("test.yaml", y, (size_t)(o - y),
					"default");
	free(y);
	assert_non_null(c);
	assert_false(cfg_ok(c));
	char *got = errors_text(c);
	assert_non_null(strstr(got, "YAML aliases are copied at every use"));
	free(got);
	cfg_destroy(c);
}

/* Two symlinks back to the top made the walk 2^depth directories long;
 * a loop is an error, found at once. */
static void test_symlink_loops(void **state)
{
	build_tree();
	assert_int_equal(symlink("..", tmp("a/up1")), 0);
	assert_int_equal(symlink("..", tmp("a/up2")), 0);
	struct cfg *c = cfg_load(tmpdir, "default");
	assert_false(cfg_ok(c));
	assert_int_equal(cfg_error_count(c), 2);
	char *got = errors_text(c);
	assert_non_null(strstr(got, "a/up1: found a symlink loop"));
	assert_non_null(strstr(got, "a/up2: found a symlink loop"));
	free(got);
	assert_int_equal(cfg_instance_count(c), 4); /* each file once */
	cfg_destroy(c);
	rm_rf(tmpdir);

	/* Links to a directory walked already, not a loop: walked once (a
	 * chain of two such links a level would double the walk each
	 * level). */
	build_tree();
	assert_int_equal(symlink("a/b", tmp("z1")), 0);
	assert_int_equal(symlink("a/b", tmp("z2")), 0);
	c = cfg_load(tmpdir, "default");
	assert_loads(c);
	assert_int_equal(cfg_instance_count(c), 4);
	assert_int_equal(cfg_warning_count(c), 2);
	assert_non_null(strstr(cfg_warning(c, 0), "z1: the same directory"));
	cfg_destroy(c);
	rm_rf(tmpdir);
}

static void test_fs_url(void **state)
{
	char url[PATH_MAX + 8];
	struct cfg *c;

	build_tree();
	snprintf(url, sizeof(url), "fs://%s", tmpdir);
	c = cfg_load(url, "default");
	assert_loads(c);
	assert_int_equal(cfg_instance_count(c), 4);
	cfg_destroy(c);
	c = cfg_load("fs://", "default");
	assert_false(cfg_ok(c));
	cfg_destroy(c);
	rm_rf(tmpdir);
}

static void test_single_file_sources(void **state)
{
	struct cfg *c = cfg_load(fixture("config/mixer-seed.yaml"), NULL);
	size_t n;
	const char *const *src = cfg_sources(c, &n);

	assert_int_equal(n, 1);
	assert_string_equal(src[0], fixture("config/mixer-seed.yaml"));
	/* Mixer's default namespace when none is given */
	assert_string_equal(cfg_default_namespace(c), "istio-system");
	cfg_destroy(c);
}

/* ---------------------------------------------------------- secrets */

/* Credentials in marathon_address (user:password@, which the resolver
 * takes as basic auth) are not printed by --check-config either; a ','
 * in the password does not hide the rest of it. */
static void test_address_credentials_are_not_printed(void **state)
{
	(void)state;
	static const char *const addrs[] = {
		"http://zmcc:S3cret@master.mesos:8080",
		"http://zmcc:S3,cret@10.0.0.1:8080,https://u:S3cret@10.0.0.2/m",
		"10.0.0.1:8080,http://u:S3cret@10.0.0.2",
	};
	for (size_t i = 0; i < sizeof addrs / sizeof *addrs; i++) {
		char yaml[512];
		snprintf(yaml, sizeof yaml,
			 "kind: mesosenv\n"
			 "metadata: {name: h, namespace: default}\n"
			 "spec: {marathon_address: '%s'}\n",
			 addrs[i]);
		struct cfg *c = load_text(yaml);
		assert_loads(c);
		char *s = summary_text(c);
		assert_null(strstr(s, "S3"));
		assert_null(strstr(s, "cret"));
		assert_non_null(strstr(s, i ? "<redacted>@10.0.0.2"
					    : "<redacted>@master.mesos"));
		free(s);
		cfg_destroy(c);
	}
}

static void test_secrets_from_env_and_file(void **state)
{
	char yaml[1024];
	struct cfg *c;
	const struct cfg_mesosenv *m;
	char *s;

	make_tmpdir();
	write_file(tmp("token"), "t0ken-from-file\n");
	setenv("MIXD_TEST_PW", "pa55-from-env", 1);
	setenv("MIXD_TEST_USER", "user-from-env", 1);
	snprintf(yaml, sizeof(yaml),
		 "kind: mesosenv\n"
		 "metadata: {name: h, namespace: default}\n"
		 "spec:\n"
		 "  marathon_address: '$${literal}'\n"
		 "  http_basic_auth_user: ${env:MIXD_TEST_USER}\n"
		 "  http_basic_auth_password: ${MIXD_TEST_PW}\n"
		 "  auth_token: ${file:%s}\n",
		 tmp("token"));
	c = load_text(yaml);
	assert_loads(c);
	m = &handler_of(c, CFG_ADAPTER_MESOSENV)->mesosenv;
	assert_string_equal(m->marathon_address.s, "${literal}");
	assert_false(m->marathon_address.secret);
	assert_string_equal(m->http_basic_auth_user.s, "user-from-env");
	assert_true(m->http_basic_auth_user.secret);
	assert_string_equal(m->http_basic_auth_password.s, "pa55-from-env");
	assert_string_equal(m->auth_token.s, "t0ken-from-file");
	s = summary_text(c);
	assert_null(strstr(s, "pa55-from-env"));
	assert_null(strstr(s, "user-from-env"));
	assert_null(strstr(s, "t0ken-from-file"));
	assert_non_null(strstr(s, "password <redacted>"));
	free(s);
	cfg_destroy(c);

	/* an error elsewhere in the same handler does not leak them */
	snprintf(yaml, sizeof(yaml),
		 "kind: mesosenv\n"
		 "metadata: {name: h, namespace: default}\n"
		 "spec:\n"
		 "  http_basic_auth_password: ${MIXD_TEST_PW}\n"
		 "  auth_token: ${file:%s}\n"
		 "  cache_refresh_duration: ${MIXD_TEST_PW}\n"
		 "  passwd: ${MIXD_TEST_PW}\n",
		 tmp("token"));
	c = load_text(yaml);
	assert_false(cfg_ok(c));
	s = errors_text(c);
	assert_null(strstr(s, "pa55-from-env"));
	assert_null(strstr(s, "t0ken-from-file"));
	assert_non_null(strstr(s, "unknown field \"passwd\""));
	free(s);
	s = summary_text(c);
	assert_null(strstr(s, "pa55-from-env"));
	assert_null(strstr(s, "t0ken-from-file"));
	free(s);
	cfg_destroy(c);
	unsetenv("MIXD_TEST_PW");
	unsetenv("MIXD_TEST_USER");
	rm_rf(tmpdir);
}

static void test_secret_file_must_be_regular(void **state)
{
	struct cfg *c = load_text("kind: stdio\n"
				  "metadata: {name: h, namespace: default}\n"
				  "spec: {output_path: '${file:/dev/null}'}\n");
	assert_errors(c, "test.yaml:3:21: h.stdio.default: output_path: "
			 "found secret file /dev/null, expected a "
			 "regular file\n");
}

static void test_logentry_and_stdio(void **state)
{
	struct cfg *c =
		load_text("kind: logentry\n"
			  "metadata: {name: accesslog, namespace: default}\n"
			  "spec:\n"
			  "  severity: '\"Info\"'\n"
			  "  timestamp: request.time | context.time\n"
			  "  variables:\n"
			  "    path: request.path | \"\"\n"
			  "    latency: response.duration | \"0ms\"\n"
			  "  timestampFormat: \"2006-01-02\"\n"
			  "---\n"
			  "kind: stdio\n"
			  "metadata: {name: handler, namespace: default}\n"
			  "spec:\n"
			  "  logStream: STDERR\n"
			  "  outputLevel: WARNING\n"
			  "  severityLevels: {Info: INFO, Error: ERROR}\n"
			  "  max_rotated_files: 3\n"
			  "---\n"
			  "kind: rule\n"
			  "metadata: {name: log, namespace: default}\n"
			  "spec:\n"
			  "  actions: [{handler: handler.stdio, name: a1,\n"
			  "             instances: [accesslog.logentry]}]\n");
	const struct cfg_instance *in;
	const struct cfg_stdio *st;

	assert_loads(c);
	in = cfg_find_instance(c, "accesslog.logentry.default");
	assert_non_null(in);
	assert_int_equal(in->tmpl, CFG_TMPL_LOGENTRY);
	assert_int_equal(in->logentry.timestamp.type, ATTR_TIMESTAMP);
	assert_int_equal(in->logentry.variables.n, 2);
	assert_int_equal(in->logentry.variables.v[1].expr.type, ATTR_DURATION);
	assert_string_equal(in->logentry.timestamp_format.s, "2006-01-02");
	st = &handler_of(c, CFG_ADAPTER_STDIO)->stdio;
	assert_int_equal(st->log_stream, CFG_STREAM_STDERR);
	assert_int_equal(st->output_level, CFG_LEVEL_WARNING);
	assert_int_equal(st->metric_level, CFG_LEVEL_INFO);
	assert_int_equal(st->n_severity_levels, 2);
	assert_string_equal(st->severity_levels[1].severity, "Error");
	assert_int_equal(st->severity_levels[1].level, CFG_LEVEL_ERROR);
	assert_int_equal(st->max_rotated_files, 3);
	assert_string_equal(cfg_rule(c, 0)->actions[0].name.s, "a1");
	assert_ptr_equal(cfg_rule(c, 0)->actions[0].instances[0], in);
	cfg_destroy(c);
}

/* The level of @sev in @st, as the stdio handler looks it up (the last
 * entry wins, as the last JSON key did); -1 if absent. */
static int severity_level(const struct cfg_stdio *st, const char *sev)
{
	int l = -1;

	for (size_t i = 0; i < st->n_severity_levels; i++)
		if (!strcmp(st->severity_levels[i].severity, sev))
			l = (int)st->severity_levels[i].level;
	return l;
}

/* Without severityLevels, Mixer's DefaultConfig map applies; a map given
 * replaces it whole (jsonpb decoded into a new map). */
static void test_stdio_severity_levels_default_as_mixers(void **state)
{
	struct cfg *c = load_text("kind: stdio\n"
				  "metadata: {name: dflt, namespace: default}\n"
				  "spec: {outputAsJson: true}\n"
				  "---\n"
				  "kind: stdio\n"
				  "metadata: {name: own, namespace: default}\n"
				  "spec:\n"
				  "  severityLevels: {Warning: WARNING}\n"
				  "---\n"
				  "kind: stdio\n"
				  "metadata: {name: none, namespace: default}\n"
				  "spec: {severity_levels: {}}\n");
	const struct cfg_stdio *st[3];

	assert_loads(c);
	assert_int_equal(cfg_handler_count(c), 3);
	for (size_t i = 0; i < 3; i++)
		st[i] = &cfg_handler(c, i)->stdio;
	assert_int_equal(st[0]->n_severity_levels, 14);
	assert_int_equal(severity_level(st[0], "INFORMATIONAL"),
			 CFG_LEVEL_INFO);
	assert_int_equal(severity_level(st[0], "info"), CFG_LEVEL_INFO);
	assert_int_equal(severity_level(st[0], "WARN"), CFG_LEVEL_WARNING);
	assert_int_equal(severity_level(st[0], "warning"), CFG_LEVEL_WARNING);
	assert_int_equal(severity_level(st[0], "err"), CFG_LEVEL_ERROR);
	assert_int_equal(severity_level(st[0], "FATAL"), CFG_LEVEL_ERROR);
	assert_int_equal(severity_level(st[0], "Warning"), -1); /* exact case */
	assert_int_equal(st[1]->n_severity_levels, 1);
	assert_int_equal(severity_level(st[1], "Warning"), CFG_LEVEL_WARNING);
	assert_int_equal(severity_level(st[1], "WARN"), -1);
	assert_int_equal(st[2]->n_severity_levels, 0);
	cfg_destroy(c);
}

/* outputAsJson defaults to true, as in Mixer's DefaultConfig for stdio
 * (Istio 1.1-1.4), for a legacy kind and a compiledAdapter handler alike;
 * false given stays false. */
static void test_stdio_output_as_json_defaults_to_true(void **state)
{
	struct cfg *c = load_text("kind: stdio\n"
				  "metadata: {name: dflt, namespace: default}\n"
				  "spec: {logStream: STDERR}\n"
				  "---\n"
				  "kind: handler\n"
				  "metadata: {name: h14, namespace: default}\n"
				  "spec: {compiledAdapter: stdio}\n"
				  "---\n"
				  "kind: stdio\n"
				  "metadata: {name: text, namespace: default}\n"
				  "spec: {outputAsJson: false}\n");

	(void)state;
	assert_loads(c);
	assert_int_equal(cfg_handler_count(c), 3);
	assert_true(cfg_handler(c, 0)->stdio.output_as_json);
	assert_true(cfg_handler(c, 1)->stdio.output_as_json);
	assert_false(cfg_handler(c, 2)->stdio.output_as_json);
	cfg_destroy(c);
}

/* A misspelt spec is not a rule without actions, unannounced; a second
 * spec is not silently ignored. */
static void test_top_level_keys(void **state)
{
	struct cfg *c =
		load_text("apiVersion: config.istio.io/v1alpha2\n"
			  "kind: rule\n"
			  "metadata: {name: r, namespace: default}\n"
			  "sepc: {match: \"true\"}\n"
			  "status: {}\n");

	assert_loads(c);
	assert_int_equal(cfg_warning_count(c), 1);
	assert_string_equal(cfg_warning(c, 0),
			    "test.yaml:4:1: unknown top-level field \"sepc\" "
			    "ignored; expected apiVersion, kind, metadata or "
			    "spec");
	cfg_destroy(c);
	c = load_text("kind: rule\n"
		      "metadata: {name: r, namespace: default}\n"
		      "spec: {match: \"true\"}\n"
		      "spec: {match: \"false\"}\n");
	assert_false(cfg_ok(c));
	assert_errors(c, "test.yaml:4:1: spec: found a second one (the "
			 "first is at line 3), expected one\n");
}

/* Mixer's stdio handler logged metrics too; mixd's does not, and says so. */
static void test_metric_to_stdio_is_announced(void **state)
{
	struct cfg *c =
		load_text("kind: metric\n"
			  "metadata: {name: m, namespace: default}\n"
			  "spec: {value: \"1\"}\n"
			  "---\n"
			  "kind: stdio\n"
			  "metadata: {name: handler, namespace: default}\n"
			  "---\n"
			  "kind: rule\n"
			  "metadata: {name: r, namespace: default}\n"
			  "spec:\n"
			  "  actions: [{handler: handler.stdio, instances: [m.metric]}]\n");

	assert_loads(c);
	assert_int_equal(cfg_warning_count(c), 1);
	assert_string_equal(cfg_warning(c, 0),
			    "test.yaml:11:50: r.rule.default: "
			    "actions[0].instances[0]: metric instance "
			    "m.metric.default sent to stdio handler "
			    "handler.stdio.default is not written: mixd's "
			    "stdio handler writes logentry instances");
	assert_int_equal(cfg_rule(c, 0)->actions[0].n_instances, 0);
	cfg_destroy(c);
}

/* ------------------------------------------------------ namespaces */

static void test_rule_namespace_scoping(void **state)
{
	struct cfg *c =
		load_text("kind: rule\n"
			  "metadata: {name: all, namespace: default}\n"
			  "---\n"
			  "kind: rule\n"
			  "metadata: {name: bi, namespace: bookinfo}\n");
	const struct cfg_rule *all, *bi;

	assert_loads(c);
	all = cfg_rule(c, 0);
	bi = cfg_rule(c, 1);
	assert_true(all->in_default_namespace);
	assert_true(cfg_rule_applies(c, all, "bookinfo", 8));
	assert_true(cfg_rule_applies(c, all, "other", 5));
	assert_true(cfg_rule_applies(c, all, NULL, 0));
	assert_false(bi->in_default_namespace);
	assert_true(cfg_rule_applies(c, bi, "bookinfo", 8));
	assert_false(cfg_rule_applies(c, bi, "bookinf", 7));
	assert_false(cfg_rule_applies(c, bi, "bookinfo2", 9));
	assert_false(cfg_rule_applies(c, bi, NULL, 0));
	/* an absent match is true */
	assert_string_equal(all->match.text, "true");
	cfg_destroy(c);
}

/* A one-dot reference is name.kind in the rule's namespace, or, as
 * Mixer's getCanonicalRef() also tries, name.namespace of a `kind:
 * handler` / `kind: instance`. */
static void test_name_dot_namespace_references(void **state)
{
	(void)state;
	struct cfg *c = load_text(
		"kind: instance\n"
		"metadata: {name: requestcount, namespace: istio-system}\n"
		"spec:\n"
		"  compiledTemplate: metric\n"
		"  params: {value: \"1\", dimensions: {code: response.code | 200}}\n"
		"---\n"
		"kind: handler\n"
		"metadata: {name: prom, namespace: istio-system}\n"
		"spec:\n"
		"  compiledAdapter: prometheus\n"
		"  params:\n"
		"    metrics:\n"
		"    - name: requests_total\n"
		"      instance_name: requestcount.instance.istio-system\n"
		"      kind: COUNTER\n"
		"      label_names: [code]\n"
		"---\n"
		"kind: rule\n"
		"metadata: {name: promhttp, namespace: default}\n"
		"spec:\n"
		"  actions:\n"
		"  - handler: prom.istio-system\n"
		"    instances: [requestcount.istio-system]\n");
	assert_loads(c);
	const struct cfg_rule *r = cfg_rule(c, 0);
	assert_non_null(r->actions[0].handler);
	assert_string_equal(r->actions[0].handler->meta.fqn,
			    "prom.handler.istio-system");
	assert_int_equal(r->actions[0].n_instances, 1);
	assert_string_equal(r->actions[0].instances[0]->meta.fqn,
			    "requestcount.instance.istio-system");
	cfg_destroy(c);
}

/* kubectl get ... -A -o yaml writes one List: its items are the objects. */
static void test_a_kubectl_list_is_its_items(void **state)
{
	(void)state;
	struct cfg *c = load_text("apiVersion: v1\n"
				  "kind: List\n"
				  "metadata: {resourceVersion: \"\"}\n"
				  "items:\n"
				  "- apiVersion: config.istio.io/v1alpha2\n"
				  "  kind: rule\n"
				  "  metadata: {name: a, namespace: default}\n"
				  "- kind: rule\n"
				  "  metadata: {name: b, namespace: bookinfo}\n");
	assert_loads(c);
	assert_string_equal(cfg_rule(c, 0)->meta.fqn, "a.rule.default");
	assert_string_equal(cfg_rule(c, 1)->meta.fqn, "b.rule.bookinfo");
	cfg_destroy(c);
}

/* --------------------------------------------------- odd inputs */

static void test_odd_buffers(void **state)
{
	static const char *const inputs[] = {
		"",
		"---\n",
		"--- ~\n---\n",
		"kind: \xff\n",
		"[[[[[[[[",
		"a: &x [*x]",
		"kind: metric\nmetadata: {name: m}\nspec: [1]\n",
		"kind: [metric]\n",
		"kind: rule\nmetadata: {name: \"\"}\n"};

	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		struct cfg *c = cfg_load_buffer("odd.yaml", inputs[i],
						strlen(inputs[i]), NULL);

		assert_non_null(c);
		assert_int_equal(cfg_ok(c), i < 3);
		cfg_destroy(c);
	}
	cfg_destroy(NULL);
}

int main(void)
{
	const char *env = getenv("MIXD_FIXTURES");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seed_loads_and_type_checks),
		cmocka_unit_test(test_seed_prometheus_families),
		cmocka_unit_test(test_seed_expressions_share_one_program),
		cmocka_unit_test(test_seed_check_config_summary),
		cmocka_unit_test(test_check_config_exit_status),
		cmocka_unit_test(test_broken_corpus_exact_errors),
		cmocka_unit_test(test_family_names_as_mixer_made_them),
		cmocka_unit_test(test_errors_are_all_collected),
		cmocka_unit_test(test_expression_error_column_in_quoted_scalar),
		cmocka_unit_test(test_value_must_be_numeric),
		cmocka_unit_test(test_both_field_spellings),
		cmocka_unit_test(
			test_bucket_bounds_accumulate_as_client_golang),
		cmocka_unit_test(test_both_spellings_at_once_is_an_error),
		cmocka_unit_test(test_unknown_kinds_warn_once),
		cmocka_unit_test(test_sampling_is_rejected),
		cmocka_unit_test(test_istio14_instance_and_handler),
		cmocka_unit_test(test_istio14_params_errors_name_the_path),
		cmocka_unit_test(test_directory_load_is_recursive_and_sorted),
		cmocka_unit_test(test_symlink_loops),
		cmocka_unit_test(test_aliases_cannot_expand_without_bound),
		cmocka_unit_test(test_fs_url),
		cmocka_unit_test(test_single_file_sources),
		cmocka_unit_test(test_secrets_from_env_and_file),
		cmocka_unit_test(test_address_credentials_are_not_printed),
		cmocka_unit_test(test_secret_file_must_be_regular),
		cmocka_unit_test(test_logentry_and_stdio),
		cmocka_unit_test(test_stdio_severity_levels_default_as_mixers),
		cmocka_unit_test(test_stdio_output_as_json_defaults_to_true),
		cmocka_unit_test(test_metric_to_stdio_is_announced),
		cmocka_unit_test(test_top_level_keys),
		cmocka_unit_test(test_rule_namespace_scoping),
		cmocka_unit_test(test_name_dot_namespace_references),
		cmocka_unit_test(test_a_kubectl_list_is_its_items),
		cmocka_unit_test(test_odd_buffers),
	};

	/* ctest sets MIXD_FIXTURES; run by hand from tests/, "fixtures" */
	if (!realpath(env ? env : "fixtures", fixtures)) {
		fprintf(stderr, "test_config: fixtures not found: %s\n",
			strerror(errno));
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
