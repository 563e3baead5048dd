/*
 * test_pol_gen -- attribute generation on the check path: the user's
 * mesos instance (tests/fixtures/config/mixer-seed.yaml) runs before the
 * policy rules, so Istio's deny-by-label sample denies a request that
 * carries only uids when Marathon knows its apps, and does not when the
 * resolver misses, there is none, or the config has no mesos instance.
 * Also: each instance once a request, strings the bindings build
 * outliving the scratch, namespace scoping by the generated namespace,
 * and what pol_gen_slots() says is read and bound.
 *
 * The resolvers never reach a Marathon (an unreachable address); their
 * snapshots are injected, as test_agg does. MIXD_TEST_THREADED (each
 * resolver runs a thread; the readers are this one's).
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
#include "expr/expr.h"
#include "marathon/mar_internal.h"
#include "policy/pol_gen.h"
#include "policy/policy.h"

static char fixtures[PATH_MAX];

#define RATINGS_TASK "bookinfo_ratings-v1.instance-a11c._app"
#define REVIEWS3_TASK "bookinfo_reviews-v3.instance-b22d._app"
#define REVIEWS2_TASK "bookinfo_reviews-v2.instance-c33e._app"

/* The user's proxies send a task id without its last .suffix. */
#define UID(task) "kubernetes://" task

/* One app of one running task (id @task".1"). */
static int put_app(char *p, size_t cap, const char *id, const char *labels,
		   const char *task, const char *ip)
{
	return snprintf(
		p, cap,
		"{\"id\":\"%s\",\"labels\":%s,\"networks\":[{\"mode\":"
		"\"container\"}],\"tasks\":[{\"id\":\"%s.1\",\"appId\":"
		"\"%s\",\"host\":\"10.1.0.1\",\"state\":\"TASK_RUNNING\","
		"\"ipAddresses\":[{\"ipAddress\":\"%s\"}]}]}",
		id, labels, task, id, ip);
}

/* Bookinfo's reviews v2 and v3 and, @ratings or not, ratings v1. */
static struct mar_snap *bookinfo(bool ratings)
{
	char json[4096];
	size_t n = (size_t)snprintf(json, sizeof(json), "{\"apps\":[");
	n += (size_t)put_app(json + n, sizeof(json) - n, "/bookinfo/reviews-v3",
			     "{\"app\":\"reviews\",\"version\":\"v3\"}",
			     REVIEWS3_TASK, "9.0.0.3");
	n += (size_t)snprintf(json + n, sizeof(json) - n, ",");
	n += (size_t)put_app(json + n, sizeof(json) - n, "/bookinfo/reviews-v2",
			     "{\"app\":\"reviews\",\"version\":\"v2\"}",
			     REVIEWS2_TASK, "9.0.0.2");
	if (ratings) {
		n += (size_t)snprintf(json + n, sizeof(json) - n, ",");
		n += (size_t)put_app(json + n, sizeof(json) - n,
				     "/bookinfo/ratings-v1",
				     "{\"app\":\"ratings\",\"version\":\"v1\"}",
				     RATINGS_TASK, "9.0.0.1");
	}
	n += (size_t)snprintf(json + n, sizeof(json) - n, "]}");
	assert_true(n < sizeof(json));
	cJSON *apps = mar_parse_apps(json, n);
	assert_non_null(apps);
	struct mar_snap *snap = NULL;
	assert_true(mar_snap_build(apps, NULL, NULL, &snap, NULL) >= 0);
	cJSON_Delete(apps);
	return snap;
}

/* A resolver that never reaches Marathon, holding bookinfo(@ratings), and
 * this thread's reader of it. */
struct resolver {
	FILE *log;
	struct mar_resolver *r;
	struct mar_reader *rd;
};

static void resolver_start(struct resolver *res, bool ratings)
{
	struct mar_options o = {.addresses = "127.0.0.1:1",
				.backoff_min_ns = 10000000000ll,
				.log_file = res->log = fopen("/dev/null", "w")};
	assert_int_equal(mar_resolver_start(&o, &res->r), 0);
	assert_int_equal(mar_resolver_inject(res->r, bookinfo(ratings)), 0);
	assert_non_null(res->rd = mar_reader_create(res->r));
}

static void resolver_stop(struct resolver *res)
{
	mar_reader_destroy(res->rd);
	mar_resolver_stop(res->r);
	fclose(res->log);
}

/* A config, its engine and a thread, and the request being built. */
struct fx {
	struct cfg *c;
	struct pol_engine *e;
	struct pol_thread *t;
	struct attr_table attrs;
};

static struct fx *open_cfg(struct cfg *c)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_non_null(c);
	f->c = c;
	pol_validate(c);
	if (!cfg_ok(c))
		cfg_print_diagnostics(c, stderr);
	assert_true(cfg_ok(c));
	assert_int_equal(pol_engine_create(c, NULL, &f->e), 0);
	assert_non_null(f->t = pol_thread_create(f->e));
	return f;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *in = fopen(path, "rb");
	assert_non_null(in);
	char *buf = malloc(1 << 16);
	assert_non_null(buf);
	*len = fread(buf, 1, 1 << 16, in);
	assert_true(*len < 1 << 16);
	fclose(in);
	return buf;
}

/* The user's config and, unless NULL, a policy sample beside it, in the
 * user's default namespace ("default"). */
static struct fx *open_seed(const char *sample)
{
	char path[PATH_MAX + 64];
	size_t n1, n2 = 0;
	snprintf(path, sizeof(path), "%s/config/mixer-seed.yaml", fixtures);
	char *seed = slurp(path, &n1);
	char *pol = NULL;
	if (sample) {
		snprintf(path, sizeof(path), "%s/policy/%s", fixtures, sample);
		pol = slurp(path, &n2);
	}
	char *yaml = malloc(n1 + n2 + 8);
	assert_non_null(yaml);
	memcpy(yaml, seed, n1);
	size_t n = n1;
	if (pol) {
		memcpy(yaml + n, "\n---\n", 5);
		memcpy(yaml + n + 5, pol, n2);
		n += 5 + n2;
	}
	struct fx *f =
		open_cfg(cfg_load_buffer("seed.yaml", yaml, n, "default"));
	free(seed);
	free(pol);
	free(yaml);
	return f;
}

static struct fx *open_text(const char *yaml)
{
	return open_cfg(
		cfg_load_buffer("test.yaml", yaml, strlen(yaml), "default"));
}

static void close_fx(struct fx *f)
{
	pol_thread_destroy(f->t);
	pol_engine_destroy(f->e);
	cfg_destroy(f->c);
	free(f);
}

static unsigned slot(const struct cfg *c, const char *name)
{
	int s = attr_vocab_find(cfg_vocab(c), name, strlen(name));
	assert_true(s >= 0);
	return (unsigned)s;
}

static void set_str(struct fx *f, const char *name, const char *v)
{
	struct attr_value a = {
		.type = ATTR_STRING, .len = (uint32_t)strlen(v), .s = v};
	attr_table_set(&f->attrs, slot(f->c, name), &a);
}

/* A string map of @n entries, "@kv[2i]": "@kv[2i + 1]", built in @buf. */
static void set_map(struct fx *f, uint8_t *buf, const char *name,
		    const char *const *kv, uint32_t n)
{
	uint8_t *p = buf;
	memcpy(p, &n, 4); /* the tests run little-endian, as mixd */
	p += 4;
	for (uint32_t i = 0; i < 2 * n; i++) {
		uint32_t l = (uint32_t)strlen(kv[i]);
		memcpy(p, &l, 4);
		memcpy(p + 4, kv[i], l);
		p += 4 + l;
	}
	struct attr_value a = {.type = ATTR_STRING_MAP,
			       .len = (uint32_t)(p - buf),
			       .map = buf};
	attr_table_set(&f->attrs, slot(f->c, name), &a);
}

/* A string map of one "key": "value". */
static void set_map1(struct fx *f, uint8_t *buf, const char *name,
		     const char *k, const char *v)
{
	const char *kv[] = {k, v};
	set_map(f, buf, name, kv, 1);
}

/* A request from @src to @dst (uids; NULL: not sent). */
static void request(struct fx *f, const char *src, const char *dst)
{
	attr_table_clear(&f->attrs);
	set_str(f, "context.protocol", "http");
	if (src)
		set_str(f, "source.uid", src);
	if (dst)
		set_str(f, "destination.uid", dst);
}

/* Check the request in @f with reader @rd (NULL: none). */
static void check(struct fx *f, struct mar_reader *rd, struct pol_result *res)
{
	struct pol_request req = {.attrs = &f->attrs, .mar = rd};
	if (rd)
		mar_read_begin(rd);
	pol_check(f->e, f->t, &req, 0, res);
	if (rd)
		mar_read_end(rd);
}

/* Attribute @name of the checked request, a string, as a C string. */
static const char *str_of(struct fx *f, const char *name)
{
	static char buf[256];
	const struct attr_value *v =
		attr_table_get(&f->attrs, slot(f->c, name));
	assert_non_null(v);
	assert_int_equal(v->type, ATTR_STRING);
	snprintf(buf, sizeof(buf), "%.*s", (int)v->len, v->s);
	return buf;
}

/* Label @k of map attribute @name of the checked request, or "" when the
 * map lacks it. */
static const char *label_of(struct fx *f, const char *name, const char *k)
{
	static char buf[256];
	const struct attr_value *m =
		attr_table_get(&f->attrs, slot(f->c, name));
	struct attr_value v;
	assert_non_null(m);
	assert_int_equal(m->type, ATTR_STRING_MAP);
	if (!attr_map_get(m, k, strlen(k), &v))
		return "";
	snprintf(buf, sizeof(buf), "%.*s", (int)v.len, v.s);
	return buf;
}

/* Istio's deny-by-label sample, on the user's config: the labels come
 * from Marathon, found by the uids the proxies send. */
static void test_deny_by_generated_label(void **state)
{
	(void)state;
	struct resolver knows, misses;
	resolver_start(&knows, true);
	resolver_start(&misses, false); /* no ratings app */
	struct fx *f = open_seed("mixer-rule-deny-label.yaml");
	struct pol_result r;

	/* reviews v3 calling ratings, by uid alone: Marathon's labels match */
	request(f, UID(REVIEWS3_TASK), UID(RATINGS_TASK));
	check(f, knows.rd, &r);
	assert_int_equal(r.code, POL_PERMISSION_DENIED);
	assert_string_equal(r.message,
			    "denyreviewsv3handler.handler.default:Not allowed");
	/* the bindings are in the request, as the rules saw it */
	assert_string_equal(label_of(f, "destination.labels", "app"),
			    "ratings");
	assert_string_equal(label_of(f, "source.labels", "version"), "v3");
	assert_string_equal(str_of(f, "destination.workload.name"),
			    "ratings-v1");
	assert_string_equal(str_of(f, "destination.namespace"), "bookinfo");
	assert_null(attr_table_get(&f->attrs,
				   slot(f->c, "$out.destination_labels")));
	/* the answer depends on what the labels came from (the uids, ...)
	 * and on the labels as sent, which a binding with no value keeps */
	bool dep[MIXD_ATTR_DICT_COUNT] = {false};
	assert_non_null(r.refs);
	for (size_t i = 0; i < r.n_refs; i++)
		dep[r.refs[i]] = true;
	assert_true(dep[MIXD_ATTR_SOURCE_UID] && dep[MIXD_ATTR_DESTINATION_UID]);
	assert_true(dep[MIXD_ATTR_SOURCE_IP] && dep[MIXD_ATTR_DESTINATION_PORT]);
	assert_true(dep[MIXD_ATTR_SOURCE_LABELS] &&
		    dep[MIXD_ATTR_DESTINATION_LABELS]);
	assert_false(dep[MIXD_ATTR_REQUEST_PATH]);

	/* reviews v2: the same app, another version, no match */
	request(f, UID(REVIEWS2_TASK), UID(RATINGS_TASK));
	check(f, knows.rd, &r);
	assert_int_equal(r.code, POL_OK);
	assert_int_equal(r.valid_duration_ns, POL_DEFAULT_VALID_NS);

	/* a resolver that does not know ratings: its labels default to the
	 * empty map, the match fails (an absent label), the check passes */
	request(f, UID(REVIEWS3_TASK), UID(RATINGS_TASK));
	check(f, misses.rd, &r);
	assert_int_equal(r.code, POL_OK);
	assert_string_equal(label_of(f, "destination.labels", "app"), "");
	assert_string_equal(label_of(f, "source.labels", "app"), "reviews");
	assert_string_equal(str_of(f, "destination.workload.name"), "unknown");

	/* no resolver at all: every binding takes its default */
	request(f, UID(REVIEWS3_TASK), UID(RATINGS_TASK));
	check(f, NULL, &r);
	assert_int_equal(r.code, POL_OK);
	assert_string_equal(str_of(f, "source.workload.name"), "unknown");
	assert_string_equal(str_of(f, "destination.namespace"), "default");

	/* Labels the client sends are shadowed by the bindings, as Mixer's
	 * child bag shadowed them: unknown uids, so no denial. */
	uint8_t m1[64], m2[64];
	request(f, "kubernetes://nobody.instance-x._app", NULL);
	set_map1(f, m1, "destination.labels", "app", "ratings");
	set_map1(f, m2, "source.labels", "app", "reviews");
	check(f, knows.rd, &r);
	assert_int_equal(r.code, POL_OK);
	assert_string_equal(label_of(f, "destination.labels", "app"), "");

	close_fx(f);
	resolver_stop(&knows);
	resolver_stop(&misses);
}

/* The seed's rules send its one mesos instance twice (every request, and
 * tcp ones): it runs once. What it reads and binds, slot by slot. */
/* pol_gen on @f's config, a thread of it and a scratch, as a caller
 * of pol_gen_run() holds them. */
static void open_gen(struct fx *f, struct pol_gen **g,
		     struct pol_gen_thread **gt, struct expr_scratch **s)
{
	assert_int_equal(pol_gen_create(f->c, g), 0);
	assert_non_null(*gt = pol_gen_thread_create(*g));
	assert_non_null(*s = expr_scratch_create(cfg_program(f->c), 0));
}

static void test_once_a_request_and_slots(void **state)
{
	(void)state;
	struct resolver knows;
	resolver_start(&knows, true);
	struct fx *f = open_seed(NULL);
	struct pol_gen *g;
	struct pol_gen_thread *gt;
	struct expr_scratch *s;
	open_gen(f, &g, &gt, &s);
	assert_int_equal(pol_gen_count(g), 2);

	request(f, UID(REVIEWS3_TASK), UID(RATINGS_TASK));
	set_str(f, "context.protocol", "tcp");
	mar_read_begin(knows.rd);
	assert_int_equal(pol_gen_run(g, gt, s, &f->attrs, knows.rd), 1);
	mar_read_end(knows.rd);
	assert_string_equal(str_of(f, "source.workload.name"), "reviews-v3");

	uint64_t reads[ATTR_PRESENT_WORDS] = {0},
		 binds[ATTR_PRESENT_WORDS] = {0};
	assert_true(pol_gen_slots(g, reads, binds, ATTR_PRESENT_WORDS));
#define HAS(m, name) ((m[slot(f->c, name) >> 6] >> (slot(f->c, name) & 63)) & 1)
	/* the inputs and the second rule's match */
	assert_true(HAS(reads, "source.uid"));
	assert_true(HAS(reads, "source.ip"));
	assert_true(HAS(reads, "destination.uid"));
	assert_true(HAS(reads, "destination.port"));
	assert_true(HAS(reads, "context.protocol"));
	assert_false(HAS(reads, "destination.labels"));
	assert_false(HAS(reads, "destination.namespace")); /* no rule scoped */
	assert_false(HAS(reads, "$out.destination_labels"));
	/* the bindings' targets */
	assert_true(HAS(binds, "destination.labels"));
	assert_true(HAS(binds, "destination.workload.name"));
	assert_true(HAS(binds, "destination.namespace"));
	assert_true(HAS(binds, "source.ip")); /* read and bound */
	assert_false(HAS(binds, "context.protocol"));
	assert_false(HAS(binds, "destination.port"));
	assert_false(HAS(binds, "$out.destination_labels"));
#undef HAS

	expr_scratch_destroy(s);
	pol_gen_thread_destroy(gt);
	pol_gen_destroy(g);
	close_fx(f);
	resolver_stop(&knows);
}

/*
 * Istio's deny-by-label sample alone: a config without a mesos instance.
 * Generation has nothing to run, even with a resolver that knows the
 * request's uids, so the rule sees the request as the client sent it:
 * uids alone bring no labels and pass (with the seed they deny), labels
 * the client sends are shadowed by nothing and deny (with the seed,
 * bindings replace them), and the answer depends on the labels the rule
 * reads, not on the uids nothing looked up.
 */
static void test_no_mesos_instance_generates_nothing(void **state)
{
	(void)state;
	struct resolver knows;
	resolver_start(&knows, true);
	char path[PATH_MAX + 64];
	size_t len;
	snprintf(path, sizeof(path), "%s/policy/mixer-rule-deny-label.yaml",
		 fixtures);
	char *yaml = slurp(path, &len);
	struct fx *f = open_cfg(
		cfg_load_buffer("deny-label.yaml", yaml, len, "default"));
	free(yaml);
	struct pol_result r;

	/* reviews v3 calling ratings, by uid alone: nothing is bound from
	 * what Marathon knows, so no labels, and no denial */
	request(f, UID(REVIEWS3_TASK), UID(RATINGS_TASK));
	check(f, knows.rd, &r);
	assert_int_equal(r.code, POL_OK);
	assert_null(attr_table_get(&f->attrs,
				   slot(f->c, "destination.labels")));
	assert_null(attr_table_get(&f->attrs, slot(f->c, "source.labels")));
	assert_null(attr_table_get(&f->attrs,
				   slot(f->c, "destination.workload.name")));
	assert_null(attr_table_get(&f->attrs,
				   slot(f->c, "destination.namespace")));
	/* the seed's binding would have rewritten it from $out.* */
	assert_string_equal(str_of(f, "destination.uid"), UID(RATINGS_TASK));
	/* what the answer depends on: the labels the rule reads, and
	 * nothing generation would have read */
	bool dep[MIXD_ATTR_DICT_COUNT] = {false};
	assert_non_null(r.refs);
	for (size_t i = 0; i < r.n_refs; i++)
		dep[r.refs[i]] = true;
	assert_true(dep[MIXD_ATTR_SOURCE_LABELS] &&
		    dep[MIXD_ATTR_DESTINATION_LABELS]);
	assert_false(dep[MIXD_ATTR_SOURCE_UID]);
	assert_false(dep[MIXD_ATTR_DESTINATION_UID]);
	assert_false(dep[MIXD_ATTR_SOURCE_IP]);
	assert_false(dep[MIXD_ATTR_DESTINATION_PORT]);

	/* reviews v2's uid with labels that say v3: the client's labels are
	 * what the rule sees (Marathon would have said v2), so it denies */
	uint8_t m1[64], m2[64];
	static const char *const v3[] = {"app", "reviews", "version", "v3"};
	request(f, UID(REVIEWS2_TASK), UID(RATINGS_TASK));
	set_map1(f, m1, "destination.labels", "app", "ratings");
	set_map(f, m2, "source.labels", v3, 2);
	check(f, knows.rd, &r);
	assert_int_equal(r.code, POL_PERMISSION_DENIED);
	assert_string_equal(r.message,
			    "denyreviewsv3handler.handler.default:Not allowed");
	assert_string_equal(label_of(f, "source.labels", "version"), "v3");
	assert_null(attr_table_get(&f->attrs,
				   slot(f->c, "source.workload.name")));

	/* pol_gen itself, on that request as it arrives: nothing runs, the
	 * table is as it was (no attribute added, none changed, none
	 * cleared), and nothing is read or bound */
	request(f, UID(REVIEWS2_TASK), UID(RATINGS_TASK));
	set_map1(f, m1, "destination.labels", "app", "ratings");
	set_map(f, m2, "source.labels", v3, 2);
	struct pol_gen *g;
	struct pol_gen_thread *gt;
	struct expr_scratch *s;
	open_gen(f, &g, &gt, &s);
	struct attr_table *sent = malloc(sizeof(*sent));
	assert_non_null(sent);
	memcpy(sent, &f->attrs, sizeof(*sent));
	mar_read_begin(knows.rd);
	size_t ran = pol_gen_run(g, gt, s, &f->attrs, knows.rd);
	mar_read_end(knows.rd);
	assert_int_equal(ran, 0);
	assert_memory_equal(f->attrs.present, sent->present,
			    sizeof(sent->present));
	for (unsigned i = 0; i < ATTR_MAX_SLOTS; i++)
		if (attr_table_has(sent, i))
			assert_memory_equal(&f->attrs.v[i], &sent->v[i],
					    sizeof(sent->v[i]));
	free(sent);
	uint64_t reads[ATTR_PRESENT_WORDS] = {0},
		 binds[ATTR_PRESENT_WORDS] = {0};
	assert_true(pol_gen_slots(g, reads, binds, ATTR_PRESENT_WORDS));
	for (size_t w = 0; w < ATTR_PRESENT_WORDS; w++)
		assert_true(reads[w] == 0 && binds[w] == 0);
	expr_scratch_destroy(s);
	close_fx(f); /* g holds the config */
	assert_int_equal(pol_gen_count(g), 0);
	pol_gen_thread_destroy(gt);
	pol_gen_destroy(g);
	resolver_stop(&knows);
}

/*
 * A binding that builds a string ("wl-" + ...) keeps it past the scratch
 * the policy rules then evaluate with (a match that builds a longer one
 * first); a policy rule in another namespace applies by the namespace
 * the resolver gave.
 */
static const char built[] =
	"kind: mesosenv\n"
	"metadata: {name: handler}\n"
	"spec: {marathon_address: \"127.0.0.1:1\"}\n"
	"---\n"
	"kind: mesos\n"
	"metadata: {name: attributes}\n"
	"spec:\n"
	"  destination_uid: destination.uid | \"\"\n"
	"  attribute_bindings:\n"
	"    destination.workload.name: '\"wl-\" + "
	"($out.destination_workload_name | \"none\")'\n"
	"    destination.namespace: $out.destination_namespace | \"default\"\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: generate}\n"
	"spec: {actions: [{handler: handler.mesosenv, "
	"instances: [attributes.mesos]}]}\n"
	"---\n"
	"kind: handler\n"
	"metadata: {name: blocked}\n"
	"spec:\n"
	"  compiledAdapter: listchecker\n"
	"  params: {overrides: [wl-ratings-v1], blacklist: true}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: workload}\n"
	"spec:\n"
	"  compiledTemplate: listentry\n"
	"  params: {value: destination.workload.name}\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: blocked}\n"
	"spec:\n"
	"  match: '(\"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\" + "
	"(request.path | \"\")) != \"x\"'\n"
	"  actions: [{handler: blocked, instances: [workload]}]\n"
	"---\n"
	"kind: handler\n"
	"metadata: {name: bookinfoonly, namespace: bookinfo}\n"
	"spec: {compiledAdapter: denier, params: {status: {code: 7, "
	"message: in bookinfo}}}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: nothing, namespace: bookinfo}\n"
	"spec: {compiledTemplate: checknothing}\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: bookinfoonly, namespace: bookinfo}\n"
	"spec: {actions: [{handler: bookinfoonly, instances: [nothing]}]}\n";

static void test_built_strings_and_scoping(void **state)
{
	(void)state;
	struct resolver knows;
	resolver_start(&knows, true);
	struct fx *f = open_text(built);
	struct pol_result r;

	request(f, NULL, UID(RATINGS_TASK));
	check(f, knows.rd, &r);
	assert_int_equal(r.code, POL_PERMISSION_DENIED);
	assert_string_equal(r.message,
			    "blocked.handler.default:wl-ratings-v1 is "
			    "blacklisted, bookinfoonly.handler.bookinfo:in "
			    "bookinfo");
	assert_string_equal(str_of(f, "destination.workload.name"),
			    "wl-ratings-v1");

	/* reviews: not listed, but in bookinfo all the same */
	request(f, NULL, UID(REVIEWS2_TASK));
	check(f, knows.rd, &r);
	assert_int_equal(r.code, POL_PERMISSION_DENIED);
	assert_string_equal(r.message,
			    "bookinfoonly.handler.bookinfo:in bookinfo");

	/* no resolver: "wl-none", in the default namespace: allowed */
	request(f, NULL, UID(RATINGS_TASK));
	check(f, NULL, &r);
	assert_int_equal(r.code, POL_OK);
	assert_string_equal(str_of(f, "destination.workload.name"), "wl-none");

	close_fx(f);
	resolver_stop(&knows);
}

/* A mesos instance whose input or binding can fail (no `|` default). */
static const char failing[] =
	"kind: mesosenv\n"
	"metadata: {name: handler}\n"
	"spec: {marathon_address: \"127.0.0.1:1\"}\n"
	"---\n"
	"kind: mesos\n"
	"metadata: {name: attributes}\n"
	"spec:\n"
	"  source_uid: source.uid | \"\"\n"
	"  destination_uid: destination.uid\n"
	"  attribute_bindings:\n"
	"    destination.workload.name: $out.destination_workload_name | "
	"\"unknown\"\n"
	"    source.name: $out.source_pod_name\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: generate}\n"
	"spec: {actions: [{handler: handler.mesosenv, "
	"instances: [attributes.mesos]}]}\n"
	"---\n"
	"kind: handler\n"
	"metadata: {name: never}\n"
	"spec: {compiledAdapter: denier, params: {status: {code: 7}}}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: nothing}\n"
	"spec: {compiledTemplate: checknothing}\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: never}\n"
	"spec:\n"
	"  match: destination.workload.name == \"never\"\n"
	"  actions: [{handler: never, instances: [nothing]}]\n";

/* As Mixer: an instance one of whose inputs fails to evaluate is not
 * dispatched (dispatcher/session.go), and one binding that fails to
 * evaluate binds none of the instance's (template.NewOutputMapperFn):
 * the attributes stay as the client sent them. */
static void test_a_failing_input_or_binding_binds_nothing(void **state)
{
	(void)state;
	struct resolver knows;
	resolver_start(&knows, true);
	struct fx *f = open_text(failing);
	struct pol_result r;

	/* both found: every binding evaluates, all are bound */
	request(f, UID(REVIEWS3_TASK), UID(RATINGS_TASK));
	set_str(f, "destination.workload.name", "from-client");
	check(f, knows.rd, &r);
	assert_int_equal(r.code, POL_OK);
	assert_string_equal(str_of(f, "destination.workload.name"),
			    "ratings-v1");
	assert_string_equal(str_of(f, "source.name"),
			    "bookinfo_reviews-v3.instance-b22d"); /* the pod */

	/* no source found: source.name's binding fails, so neither is */
	request(f, NULL, UID(RATINGS_TASK));
	set_str(f, "destination.workload.name", "from-client");
	check(f, knows.rd, &r);
	assert_string_equal(str_of(f, "destination.workload.name"),
			    "from-client");

	/* no destination.uid: the instance is not built, nothing asked */
	request(f, UID(REVIEWS3_TASK), NULL);
	set_str(f, "destination.workload.name", "from-client");
	check(f, knows.rd, &r);
	assert_string_equal(str_of(f, "destination.workload.name"),
			    "from-client");
	assert_null(attr_table_get(&f->attrs, slot(f->c, "source.name")));

	close_fx(f);
	resolver_stop(&knows);
}

int main(void)
{
	const char *env = getenv("MIXD_FIXTURES");
	snprintf(fixtures, sizeof(fixtures), "%s",
		 env ? env : "tests/fixtures");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deny_by_generated_label),
		cmocka_unit_test(test_once_a_request_and_slots),
		cmocka_unit_test(test_no_mesos_instance_generates_nothing),
		cmocka_unit_test(test_built_strings_and_scoping),
		cmocka_unit_test(test_a_failing_input_or_binding_binds_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
