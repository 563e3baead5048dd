/*
 * test_marathon -- the Marathon resolver: snapshot mapping from fixtures,
 * the SSE framer, and the resolver thread against the Python stand-in
 * (tests/integration/marathon_standin.py, started per test as a process on
 * 127.0.0.1): sync, events, outages, leader redirects, auth, bad payloads,
 * and readers looking up across snapshot swaps from several threads.
 *
 * MIXD_TEST_THREADED: the reader threads also run under TSan.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "marathon/mar_internal.h"
#include "marathon/marathon.h"

#define MS 1000000ll

/* ------------------------------------------------------------------ */
/* Helpers */

static char *slurp(const char *name, size_t *len)
{
	char path[1024];
	const char *fx = getenv("MIXD_FIXTURES");
	snprintf(path, sizeof path, "%s/marathon/%s", fx ? fx : "fixtures",
		 name);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	b[n] = 0;
	fclose(f);
	*len = (size_t)n;
	return b;
}

static struct attr_value str(const char *s)
{
	return (struct attr_value){.type = ATTR_STRING,
				   .len = (uint32_t)strlen(s), .s = s};
}

static struct attr_value ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	return (struct attr_value){.type = ATTR_IP, .len = 4,
				   .ip = {a, b, c, d}};
}

static struct attr_value port(int64_t p)
{
	return (struct attr_value){.type = ATTR_INT64, .i = p};
}

/* Output @o as a C string ("" if absent). */
static const char *out_s(const struct mar_result *r, enum mar_out o,
			 char *buf, size_t cap)
{
	const struct attr_value *v = mar_result_get(r, o);
	if (!v)
		return "";
	if (v->type == ATTR_IP) {
		if (v->len == 4)
			snprintf(buf, cap, "%u.%u.%u.%u", v->ip[0], v->ip[1],
				 v->ip[2], v->ip[3]);
		else
			snprintf(buf, cap, "ipv6");
		return buf;
	}
	if (v->type == ATTR_STRING_MAP)
		return "<map>";
	snprintf(buf, cap, "%.*s", (int)v->len, v->s);
	return buf;
}

#define ASSERT_OUT(res, o, want)                                               \
	do {                                                                   \
		char _b[512];                                                  \
		assert_string_equal(out_s((res), (o), _b, sizeof _b), (want)); \
	} while (0)

static const char *label(const struct mar_result *r, enum mar_out o,
			 const char *k, char *buf, size_t cap)
{
	const struct attr_value *m = mar_result_get(r, o);
	struct attr_value v;
	if (!m || !attr_map_get(m, k, strlen(k), &v))
		return NULL;
	snprintf(buf, cap, "%.*s", (int)v.len, v.s);
	return buf;
}

static struct mar_snap *fixture_snap(void)
{
	size_t la, lp;
	char *a = slurp("mixd-apps-embed-tasks-1.5.json", &la);
	char *p = slurp("mixd-pods-status.json", &lp);
	cJSON *apps = mar_parse_apps(a, la), *pods = mar_parse_pods(p, lp);
	assert_non_null(apps);
	assert_non_null(pods);
	struct mar_hostcache *hc = mar_hostcache_create();
	struct mar_snap *s = NULL;
	size_t skipped = 99;
	assert_int_equal(mar_snap_build(apps, pods, hc, &s, &skipped), 0);
	assert_int_equal(skipped, 0);
	mar_hostcache_destroy(hc);
	cJSON_Delete(apps);
	cJSON_Delete(pods);
	free(a);
	free(p);
	return s;
}

/* ------------------------------------------------------------------ */
/* Snapshot mapping (no thread, no network) */

static void test_snapshot_counts_and_terminal_skipped(void **st)
{
	struct mar_snap *s = fixture_snap();
	assert_int_equal(s->apps, 3);
	assert_int_equal(s->pods, 2);
	assert_int_equal(s->tasks, 5);	       /* one TASK_KILLED left out */
	assert_int_equal(s->pod_instances, 2); /* one TERMINAL left out */
	struct mar_result r;
	struct attr_value ip = ip4(9, 0, 1, 99);
	struct mar_query q = {.destination_ip = &ip};
	assert_false(mar_snap_lookup(s, &q, &r));
	mar_snap_free(s);
}

static void test_uid_forms_of_the_users_proxies(void **st)
{
	struct mar_snap *s = fixture_snap();
	const char *forms[] = {
		"kubernetes://reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-"
		"0242ac110003",
		"mesos://reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-"
		"0242ac110003",
		"reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-0242ac110003",
		"kubernetes://reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-"
		"0242ac110003.reviews",
	};
	for (size_t i = 0; i < 4; i++) {
		struct attr_value u = str(forms[i]);
		struct mar_query q = {.source_uid = &u, .destination_uid = &u};
		struct mar_result r;
		assert_true(mar_snap_lookup(s, &q, &r));
		ASSERT_OUT(&r, MAR_OUT_SOURCE_POD_UID,
			   "kubernetes://reviews-v2.instance-c96bf99f-6a2b-"
			   "11e9-9d6b-0242ac110003");
		ASSERT_OUT(&r, MAR_OUT_SOURCE_POD_NAME,
			   "reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-"
			   "0242ac110003");
		ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAME, "reviews-v2");
		ASSERT_OUT(&r, MAR_OUT_SOURCE_NAMESPACE, "default");
		ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAMESPACE, "default");
		ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_UID,
			   "istio://default/workloads/reviews-v2");
		ASSERT_OUT(&r, MAR_OUT_SOURCE_OWNER,
			   "marathon://pods/reviews-v2");
		ASSERT_OUT(&r, MAR_OUT_SOURCE_SERVICE_ACCOUNT_NAME, "default");
		ASSERT_OUT(&r, MAR_OUT_SOURCE_HOST_IP, "10.0.0.31");
		ASSERT_OUT(&r, MAR_OUT_SOURCE_POD_IP, "10.0.0.31");
		ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME, "reviews-v2");
		/* a container task id names its container; else no port, two
		 * containers: no container name */
		ASSERT_OUT(&r, MAR_OUT_DESTINATION_CONTAINER_NAME,
			   i == 3 ? "reviews" : "");
	}
	/* an app task: full id, without the attempt, the instance id */
	const char *app_forms[] = {
		"shop_backend_reviews-v2.instance-0a1b2c3d-6a2b-11e9-9d6b-"
		"0242ac110003._app.1",
		"kubernetes://shop_backend_reviews-v2.instance-0a1b2c3d-6a2b-"
		"11e9-9d6b-0242ac110003._app",
		"kubernetes://shop_backend_reviews-v2.instance-0a1b2c3d-6a2b-"
		"11e9-9d6b-0242ac110003",
	};
	for (size_t i = 0; i < 3; i++) {
		struct attr_value u = str(app_forms[i]);
		struct mar_query q = {.destination_uid = &u};
		struct mar_result r;
		assert_true(mar_snap_lookup(s, &q, &r));
		assert_null(r.src);
		ASSERT_OUT(&r, MAR_OUT_DESTINATION_NAMESPACE, "shop.backend");
		ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_UID,
			   "istio://shop.backend/workloads/reviews-v2");
		ASSERT_OUT(&r, MAR_OUT_DESTINATION_OWNER,
			   "marathon://apps/shop/backend/reviews-v2");
		ASSERT_OUT(&r, MAR_OUT_DESTINATION_SERVICE_ACCOUNT_NAME,
			   "bookinfo-reviews");
		ASSERT_OUT(&r, MAR_OUT_DESTINATION_POD_IP, "9.0.1.2");
		ASSERT_OUT(&r, MAR_OUT_DESTINATION_HOST_IP, "10.0.0.11");
		ASSERT_OUT(&r, MAR_OUT_DESTINATION_CONTAINER_NAME,
			   "reviews-v2");
		char b[64];
		assert_string_equal(label(&r, MAR_OUT_DESTINATION_LABELS,
					  "version", b, sizeof b),
				    "v2");
		const struct attr_value *m =
			mar_result_get(&r, MAR_OUT_DESTINATION_LABELS);
		assert_int_equal(attr_map_count(m), 3);
		assert_int_equal(attr_map_validate(m->map, m->len), m->len);
	}
	/* legacy id: the full id only (its prefix is the app, ambiguous) */
	struct attr_value u = str("ratings.5dd78972-6771-11e5-94e1-be5b2935a987");
	struct attr_value bad = str("kubernetes://ratings");
	struct mar_query q = {.source_uid = &u, .destination_uid = &bad};
	struct mar_result r;
	assert_true(mar_snap_lookup(s, &q, &r));
	assert_null(r.dst);
	ASSERT_OUT(&r, MAR_OUT_SOURCE_POD_NAME,
		   "ratings.5dd78972-6771-11e5-94e1-be5b2935a987");
	ASSERT_OUT(&r, MAR_OUT_SOURCE_NAMESPACE, "default");
	mar_snap_free(s);
}

static void test_ip_lookups_by_network_mode(void **st)
{
	struct mar_snap *s = fixture_snap();
	struct mar_result r;
	/* container network: the container IP alone */
	struct attr_value ip = ip4(9, 0, 1, 2), p = port(9080);
	struct mar_query q = {.source_ip = &ip, .destination_ip = &ip};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAME, "reviews-v2");
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME, "reviews-v2");
	/* bridge: 172.17.0.2 is on two agents: only host IP + port works */
	ip = ip4(172, 17, 0, 2);
	q = (struct mar_query){.source_ip = &ip, .destination_ip = &ip};
	assert_false(mar_snap_lookup(s, &q, &r));
	ip = ip4(10, 0, 0, 13);
	p = port(31002);
	q = (struct mar_query){.destination_ip = &ip, .destination_port = &p};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_POD_NAME,
		   "shop_frontend_productpage.instance-22222222-6a2b-11e9-"
		   "9d6b-0242ac110003");
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_SERVICE_ACCOUNT_NAME,
		   "productpage");
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_NAMESPACE, "shop.frontend");
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_POD_IP, "172.17.0.2");
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_HOST_IP, "10.0.0.13");
	/* host networking: host IP + port; a host name resolved at build */
	ip = ip4(127, 0, 0, 1);
	p = port(31501);
	q = (struct mar_query){.destination_ip = &ip, .destination_port = &p};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_POD_NAME,
		   "ratings.6ee78972-6771-11e5-94e1-be5b2935a987");
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_HOST_IP, "127.0.0.1");
	/* the only host-network task on 10.0.0.14: its IP alone is enough */
	ip = ip4(10, 0, 0, 14);
	q = (struct mar_query){.source_ip = &ip};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAME, "ratings");
	/* unspecified and unknown addresses miss */
	ip = ip4(0, 0, 0, 0);
	q = (struct mar_query){.source_ip = &ip};
	assert_false(mar_snap_lookup(s, &q, &r));
	mar_snap_free(s);
}

/* An agent's IP names a task only when that task is the only one on the
 * agent to use it: a host-networked task beside a bridge task (whose
 * outbound traffic leaves with the agent's IP) is not named by it; a
 * bridge task alone is; a task on a container network does not count; a
 * bridge pod does. */
static void test_host_ip_shared_with_bridge_tasks(void **st)
{
	static const char json[] =
		"{\"apps\":["
		"{\"id\":\"/infra/hostapp\",\"networks\":[{\"mode\":\"host\"}],"
		"\"tasks\":[{\"id\":\"infra_hostapp.instance-a._app.1\","
		"\"host\":\"10.0.0.5\",\"state\":\"TASK_RUNNING\","
		"\"ports\":[31000]}]},"
		"{\"id\":\"/shop/web\",\"networks\":[{\"mode\":"
		"\"container/bridge\"}],\"container\":{\"portMappings\":"
		"[{\"containerPort\":80,\"hostPort\":0}]},"
		"\"tasks\":[{\"id\":\"shop_web.instance-b._app.1\","
		"\"host\":\"10.0.0.5\",\"state\":\"TASK_RUNNING\","
		"\"ports\":[31001],\"ipAddresses\":[{\"ipAddress\":"
		"\"172.17.0.2\"}]},"
		"{\"id\":\"shop_web.instance-c._app.1\",\"host\":\"10.0.0.6\","
		"\"state\":\"TASK_RUNNING\",\"ports\":[31002],"
		"\"ipAddresses\":[{\"ipAddress\":\"172.17.0.2\"}]}]},"
		"{\"id\":\"/overlay/db\",\"networks\":[{\"mode\":\"container\","
		"\"name\":\"dcos\"}],\"tasks\":[{\"id\":"
		"\"overlay_db.instance-d._app.1\",\"host\":\"10.0.0.6\","
		"\"state\":\"TASK_RUNNING\",\"ipAddresses\":[{\"ipAddress\":"
		"\"9.1.0.7\"}]}]}]}";
	cJSON *apps = mar_parse_apps(json, strlen(json));
	assert_non_null(apps);
	struct mar_snap *s = NULL;
	assert_int_equal(mar_snap_build(apps, NULL, NULL, &s, NULL), 0);
	struct mar_result r;
	struct attr_value ip = ip4(10, 0, 0, 5), p = port(31000);
	struct mar_query q = {.source_ip = &ip};
	assert_false(mar_snap_lookup(s, &q, &r));
	/* host IP + port still names each */
	q = (struct mar_query){.destination_ip = &ip, .destination_port = &p};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME, "hostapp");
	/* 10.0.0.6: one bridge task and one on a container network */
	ip = ip4(10, 0, 0, 6);
	q = (struct mar_query){.source_ip = &ip};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAME, "web");
	mar_snap_free(s);
	/* a bridge pod beside the bridge task on 10.0.0.6 claims it too */
	static const char pods_json[] =
		"[{\"id\":\"/shop/cart\",\"spec\":{\"id\":\"/shop/cart\","
		"\"networks\":[{\"mode\":\"container/bridge\"}],"
		"\"containers\":[{\"name\":\"app\"}]},\"instances\":[{\"id\":"
		"\"shop_cart.instance-e\",\"status\":\"STABLE\","
		"\"agentHostname\":\"10.0.0.6\",\"networks\":[{\"addresses\":"
		"[\"172.31.254.2\"]}],\"containers\":[{\"name\":\"app\","
		"\"status\":\"TASK_RUNNING\"}]}]}]";
	cJSON *pods = mar_parse_pods(pods_json, strlen(pods_json));
	assert_non_null(pods);
	assert_int_equal(mar_snap_build(apps, pods, NULL, &s, NULL), 0);
	assert_false(mar_snap_lookup(s, &q, &r));
	mar_snap_free(s);
	cJSON_Delete(pods);
	cJSON_Delete(apps);
}

/* The snapshot of /v2/apps body @apps and /v2/pods/::status body @pods
 * (NULL: none). */
static struct mar_snap *snap_of(const char *apps, const char *pods)
{
	cJSON *a = mar_parse_apps(apps, strlen(apps));
	cJSON *p = pods ? mar_parse_pods(pods, strlen(pods)) : NULL;
	assert_non_null(a);
	assert_true(!pods || p);
	struct mar_snap *s = NULL;
	assert_int_equal(mar_snap_build(a, p, NULL, &s, NULL), 0);
	cJSON_Delete(p);
	cJSON_Delete(a);
	return s;
}

/* A pod on a container network that has no address yet (staging: its
 * instance's networks are empty) claims no IP, not its agent's: the
 * only host-networked task on that agent is still named by it. */
static void test_a_container_pod_without_an_address_claims_no_ip(void **st)
{
	static const char json[] =
		"{\"apps\":[{\"id\":\"/infra/hostapp\",\"networks\":"
		"[{\"mode\":\"host\"}],\"tasks\":[{\"id\":"
		"\"infra_hostapp.instance-a._app.1\",\"host\":\"10.0.0.8\","
		"\"state\":\"TASK_RUNNING\"}]}]}";
	static const char pods_json[] =
		"[{\"id\":\"/shop/db\",\"spec\":{\"id\":\"/shop/db\","
		"\"networks\":[{\"mode\":\"container\",\"name\":\"dcos\"}],"
		"\"containers\":[{\"name\":\"db\"}]},\"instances\":["
		"{\"id\":\"shop_db.instance-s\",\"status\":\"STAGING\","
		"\"agentHostname\":\"10.0.0.8\",\"networks\":[],"
		"\"containers\":[{\"name\":\"db\",\"status\":"
		"\"TASK_STAGING\"}]},"
		"{\"id\":\"shop_db.instance-t\",\"status\":\"STAGING\","
		"\"agentHostname\":\"10.0.0.7\",\"containers\":[{\"name\":"
		"\"db\",\"status\":\"TASK_STAGING\"}]}]}]";
	struct mar_snap *s = snap_of(json, pods_json);
	struct mar_result r;
	struct attr_value ip = ip4(10, 0, 0, 8);
	struct mar_query q = {.source_ip = &ip};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAME, "hostapp");
	ip = ip4(10, 0, 0, 7);
	assert_false(mar_snap_lookup(s, &q, &r));
	/* still found by its uid */
	struct attr_value u = str("kubernetes://shop_db.instance-t");
	q = (struct mar_query){.source_uid = &u};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAME, "db");
	mar_snap_free(s);
}

/* A running host pod, as Marathon reports it: the Mesos agent fills a
 * container's network_infos with the agent's IP when it has none, so the
 * instance's networks list the agent's address. That is a host IP, named
 * by its declared port or, without a port, as the one task there; never
 * by a port nobody declares (the agent's own 5051). It was taken for the
 * pod's own address and answered any port. */
static void test_a_host_pod_listing_its_agents_address_claims_it_as_host(
	void **st)
{
	(void)st;
	static const char pods_json[] =
		"[{\"id\":\"/reviews-v2\",\"spec\":{\"id\":\"/reviews-v2\","
		"\"containers\":[{\"name\":\"reviews\",\"endpoints\":[{\"name\":"
		"\"http\",\"hostPort\":9080}]}],\"networks\":[{\"mode\":"
		"\"host\"}]},\"instances\":[{\"id\":\"reviews-v2.instance-c96b\","
		"\"status\":\"STABLE\",\"agentHostname\":\"10.0.0.31\","
		"\"networks\":[{\"addresses\":[\"10.0.0.31\"]}],"
		"\"containers\":[{\"name\":\"reviews\",\"status\":"
		"\"TASK_RUNNING\",\"containerId\":"
		"\"reviews-v2.instance-c96b.reviews\",\"endpoints\":[{\"name\":"
		"\"http\",\"allocatedHostPort\":9080}]}]}]}]";
	struct mar_snap *s = snap_of("{\"apps\":[]}", pods_json);
	struct mar_result r;
	struct attr_value ip = ip4(10, 0, 0, 31), p = port(5051);
	struct mar_query q = {.destination_ip = &ip, .destination_port = &p};
	assert_false(mar_snap_lookup(s, &q, &r));
	p = port(9080);
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME, "reviews-v2");
	q = (struct mar_query){.destination_ip = &ip};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME, "reviews-v2");
	mar_snap_free(s);
}

/* An app may be called "cart.instance-2": its tasks' instance ids are
 * cut at the last ".instance-", as Marathon's own pattern does, so each
 * task is its own pod. */
static void test_an_app_named_like_an_instance_keeps_its_tasks_apart(void **st)
{
	static const char json[] =
		"{\"apps\":[{\"id\":\"/shop/cart.instance-2\",\"networks\":"
		"[{\"mode\":\"container\",\"name\":\"dcos\"}],\"tasks\":["
		"{\"id\":\"shop_cart.instance-2.instance-aaaa._app.1\","
		"\"host\":\"10.0.0.5\",\"state\":\"TASK_RUNNING\","
		"\"ipAddresses\":[{\"ipAddress\":\"9.1.0.1\"}]},"
		"{\"id\":\"shop_cart.instance-2.instance-bbbb._app.1\","
		"\"host\":\"10.0.0.6\",\"state\":\"TASK_RUNNING\","
		"\"ipAddresses\":[{\"ipAddress\":\"9.1.0.2\"}]}]}]}";
	struct mar_snap *s = snap_of(json, NULL);
	struct mar_result r;
	struct attr_value ip = ip4(9, 1, 0, 2);
	struct mar_query q = {.source_ip = &ip};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_SOURCE_POD_NAME,
		   "shop_cart.instance-2.instance-bbbb");
	struct attr_value u = str("kubernetes://shop_cart.instance-2.instance-aaaa");
	q = (struct mar_query){.source_uid = &u};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_SOURCE_POD_IP, "9.1.0.1");
	/* the app's name alone is no pod's */
	u = str("kubernetes://shop_cart.instance-2");
	assert_false(mar_snap_lookup(s, &q, &r));
	mar_snap_free(s);
}

/* An app whose one task runs on agent @host. */
static cJSON *app_on(const char *host)
{
	char json[512];
	snprintf(json, sizeof json,
		 "{\"apps\":[{\"id\":\"/a\",\"networks\":[{\"mode\":"
		 "\"host\"}],\"tasks\":[{\"id\":\"a.instance-1._app.1\","
		 "\"host\":\"%s\",\"state\":\"TASK_RUNNING\"}]}]}",
		 host);
	cJSON *apps = mar_parse_apps(json, strlen(json));
	assert_non_null(apps);
	return apps;
}

/* Agent names: resolved once and kept while tasks name them; forgotten
 * at the first refresh after no build looked them up; resolved again at
 * their next use once older than the age given, keeping their answer. */
static void test_host_cache_follows_the_cluster(void **st)
{
	struct mar_hostcache *hc = mar_hostcache_create();
	struct mar_snap *s;
	cJSON *on_local = app_on("localhost"), *on_ip = app_on("10.0.0.9");
	assert_int_equal(mar_snap_build(on_local, NULL, hc, &s, NULL), 0);
	mar_snap_free(s);
	assert_int_equal(mar_hostcache_size(hc), 1);
	/* used since: kept */
	mar_hostcache_refresh(hc, INT64_MAX);
	assert_int_equal(mar_hostcache_size(hc), 1);
	/* older than the age: resolved again at the next build */
	assert_int_equal(mar_snap_build(on_local, NULL, hc, &s, NULL), 0);
	mar_snap_free(s);
	mar_hostcache_refresh(hc, 0);
	assert_int_equal(mar_hostcache_size(hc), 1);
	assert_int_equal(mar_snap_build(on_local, NULL, hc, &s, NULL), 0);
	struct attr_value ip = ip4(127, 0, 0, 1);
	struct mar_query q = {.source_ip = &ip};
	struct mar_result r;
	assert_true(mar_snap_lookup(s, &q, &r));
	mar_snap_free(s);
	assert_int_equal(mar_hostcache_size(hc), 1);
	/* the agent is gone: no build names it; a refresh forgets it */
	mar_hostcache_refresh(hc, INT64_MAX);
	assert_int_equal(mar_snap_build(on_ip, NULL, hc, &s, NULL), 0);
	mar_snap_free(s);
	mar_hostcache_refresh(hc, INT64_MAX);
	assert_int_equal(mar_hostcache_size(hc), 0);
	cJSON_Delete(on_local);
	cJSON_Delete(on_ip);
	mar_hostcache_destroy(hc);
}

/*
 * DNS for agent names under "agent.test", in this process: getaddrinfo()
 * is interposed (the resolver's code is linked into this binary), so a
 * test can count the asks and take DNS down. "<c>.agent.test" is
 * 10.9.0.<c>; a name starting with 'x' does not exist. Every other name
 * goes to the real getaddrinfo().
 */
static int dns_is_down, dns_asks; /* atomic */
static int (*real_getaddrinfo)(const char *, const char *,
			       const struct addrinfo *, struct addrinfo **);

/* Before main(), so before any thread asks. */
__attribute__((constructor)) static void find_getaddrinfo(void)
{
	*(void **)&real_getaddrinfo = dlsym(RTLD_NEXT, "getaddrinfo");
}

int getaddrinfo(const char *node, const char *service,
		const struct addrinfo *hints, struct addrinfo **res)
{
	int (*real)(const char *, const char *, const struct addrinfo *,
		    struct addrinfo **) = real_getaddrinfo;
	size_t n = node ? strlen(node) : 0;
	if (n < 12 || strcmp(node + n - 11, ".agent.test"))
		return real(node, service, hints, res);
	__atomic_add_fetch(&dns_asks, 1, __ATOMIC_RELAXED);
	if (__atomic_load_n(&dns_is_down, __ATOMIC_RELAXED))
		return EAI_AGAIN;
	if (node[0] == 'x')
		return EAI_NONAME;
	char lit[32];
	snprintf(lit, sizeof lit, "10.9.0.%d", node[0]);
	return real(lit, service, hints, res);
}

/* One app a host, each with one task on host-network agent @hosts[i]. */
static cJSON *apps_on(const char *const *hosts, size_t n)
{
	char json[4096];
	size_t o = (size_t)snprintf(json, sizeof json, "{\"apps\":[");
	for (size_t i = 0; i < n; i++)
		o += (size_t)snprintf(
			json + o, sizeof json - o,
			"%s{\"id\":\"/a%zu\",\"networks\":[{\"mode\":\"host\"}],"
			"\"tasks\":[{\"id\":\"a%zu.instance-1._app.1\",\"host\":"
			"\"%s\",\"state\":\"TASK_RUNNING\"}]}",
			i ? "," : "", i, i, hosts[i]);
	snprintf(json + o, sizeof json - o, "]}");
	cJSON *apps = mar_parse_apps(json, strlen(json));
	assert_non_null(apps);
	return apps;
}

/* Does a record from agent 10.9.0.<c> find a task? */
static bool agent_found(const struct mar_snap *s, char c)
{
	struct attr_value ip = ip4(10, 9, 0, (uint8_t)c);
	struct mar_query q = {.source_ip = &ip};
	struct mar_result r;
	return mar_snap_lookup(s, &q, &r);
}

static int asks_for(cJSON *apps, struct mar_hostcache *hc,
		    struct mar_snap **s)
{
	int before = __atomic_load_n(&dns_asks, __ATOMIC_RELAXED);
	assert_int_equal(mar_snap_build(apps, NULL, hc, s, NULL), 0);
	return __atomic_load_n(&dns_asks, __ATOMIC_RELAXED) - before;
}

/* DNS down: one ask blocks (each may take the resolver's timeout), not
 * one per agent; for the hold after it nothing is asked, then the names
 * it skipped are; answers already had are kept; names that simply do not
 * exist say nothing about DNS. */
static void test_host_cache_when_dns_is_down(void **st)
{
	static const char *const hosts[] = {"a.agent.test", "b.agent.test",
					    "c.agent.test", "d.agent.test"};
	struct mar_hostcache *hc = mar_hostcache_create();
	mar_hostcache_set_dns_hold(hc, 300 * MS);
	cJSON *three = apps_on(hosts, 3), *four = apps_on(hosts, 4);
	struct mar_snap *s;

	__atomic_store_n(&dns_is_down, 1, __ATOMIC_RELAXED);
	assert_int_equal(asks_for(three, hc, &s), 1);
	assert_false(agent_found(s, 'a'));
	mar_snap_free(s);
	/* events rebuild during the hold: a new agent is not asked either */
	assert_int_equal(asks_for(four, hc, &s), 0);
	mar_snap_free(s);

	/* after the hold, DNS back: every skipped name asked, no sync needed */
	__atomic_store_n(&dns_is_down, 0, __ATOMIC_RELAXED);
	usleep(350 * 1000);
	assert_int_equal(asks_for(four, hc, &s), 4);
	assert_true(agent_found(s, 'a') && agent_found(s, 'b') &&
		    agent_found(s, 'c') && agent_found(s, 'd'));
	mar_snap_free(s);
	assert_int_equal(asks_for(four, hc, &s), 0); /* cached */
	mar_snap_free(s);

	/* down again when the answers are old: one ask, the answers kept */
	__atomic_store_n(&dns_is_down, 1, __ATOMIC_RELAXED);
	mar_hostcache_refresh(hc, 0);
	assert_int_equal(asks_for(four, hc, &s), 1);
	assert_true(agent_found(s, 'a') && agent_found(s, 'b') &&
		    agent_found(s, 'c') && agent_found(s, 'd'));
	mar_snap_free(s);

	/* a name that does not exist is not DNS being down */
	__atomic_store_n(&dns_is_down, 0, __ATOMIC_RELAXED);
	mar_hostcache_refresh(hc, INT64_MAX);
	static const char *const more[] = {"xgone.agent.test", "e.agent.test"};
	cJSON *two = apps_on(more, 2);
	assert_int_equal(asks_for(two, hc, &s), 2);
	assert_true(agent_found(s, 'e'));
	mar_snap_free(s);

	cJSON_Delete(three);
	cJSON_Delete(four);
	cJSON_Delete(two);
	mar_hostcache_destroy(hc);
}

static void test_destination_port_picks_container(void **st)
{
	struct mar_snap *s = fixture_snap();
	struct mar_result r;
	const char *id = "kubernetes://shop_backend_details.instance-7a1b2c3d-"
			 "6a2b-11e9-9d6b-0242ac110003";
	struct attr_value u = str(id), p = port(15000);
	struct mar_query q = {.destination_uid = &u, .destination_port = &p};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_CONTAINER_NAME, "envoy");
	p = port(9080);
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_CONTAINER_NAME, "app");
	p = port(31201); /* allocated host port of envoy */
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_CONTAINER_NAME, "envoy");
	/* by IP: container network address + containerPort */
	struct attr_value ip = ip4(9, 0, 2, 5);
	p = port(9080);
	q = (struct mar_query){.destination_ip = &ip, .destination_port = &p};
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_CONTAINER_NAME, "app");
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME, "details");
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_SERVICE_ACCOUNT_NAME,
		   "bookinfo-details");
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_OWNER,
		   "marathon://pods/shop/backend/details");
	/* by agent IP + allocated host port */
	ip = ip4(10, 0, 0, 21);
	p = port(31201);
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_CONTAINER_NAME, "envoy");
	/* host-network pod: fixed hostPort 9080 on 10.0.0.31 */
	ip = ip4(10, 0, 0, 31);
	p = port(9080);
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_CONTAINER_NAME, "reviews");
	/* empty uid falls back to the IP */
	struct attr_value empty = str("");
	q.destination_uid = &empty;
	assert_true(mar_snap_lookup(s, &q, &r));
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME, "reviews-v2");
	mar_snap_free(s);
}

static void test_malformed_entries_skipped(void **st)
{
	const char *body =
		"{\"apps\":[1,{\"id\":\"relative\"},{\"id\":\"/ok\",\"tasks\":"
		"[\"x\",{\"id\":7},{\"id\":\"ok.1\",\"host\":\"10.1.1.1\","
		"\"ports\":[\"80\",-1,70000,8080],\"labels\":5}]}]}";
	cJSON *apps = mar_parse_apps(body, strlen(body));
	assert_non_null(apps);
	struct mar_snap *s = NULL;
	size_t skipped = 0;
	assert_int_equal(mar_snap_build(apps, NULL, NULL, &s, &skipped), 0);
	assert_int_equal(skipped, 4);
	assert_int_equal(s->tasks, 1);
	struct attr_value ip = ip4(10, 1, 1, 1), p = port(8080);
	struct mar_query q = {.destination_ip = &ip, .destination_port = &p};
	struct mar_result r;
	assert_true(mar_snap_lookup(s, &q, &r));
	mar_snap_free(s);
	cJSON_Delete(apps);
	assert_null(mar_parse_apps("{\"apps\":{}}", 11));
	assert_null(mar_parse_apps("{\"apps\":[", 9));
	assert_null(mar_parse_pods("{}", 2));
}

/* ------------------------------------------------------------------ */
/* SSE */

struct sse_seen {
	int n;
	char types[8][64];
	size_t lens[8];
};

static void sse_cb(void *ctx, const char *type, size_t tl, const char *data,
		   size_t dl)
{
	struct sse_seen *s = ctx;
	if (s->n < 8) {
		snprintf(s->types[s->n], 64, "%.*s", (int)tl, type);
		s->lens[s->n] = dl;
	}
	s->n++;
}

/* An app_terminated_event removes the app it names, unless the model's
 * app under that id was changed after the event's time: one deleted and
 * created again while a sync was in flight, whose answer already holds
 * the new app when the held event is applied. It was removed until the
 * next sync (its tasks then resolved to nobody). */
static void test_an_app_terminated_before_its_id_came_back_stays(void **st)
{
	(void)st;
	static const char apps[] =
		"{\"apps\":[{\"id\":\"/shop/cart\",\"version\":"
		"\"2026-11-28T10:00:05.000Z\",\"tasks\":[]}]}";
	static const struct {
		const char *ev;
		bool stays;
	} cases[] = {
		/* the delete before the app was made again */
		{"{\"appId\":\"/shop/cart\",\"timestamp\":"
		 "\"2026-11-28T10:00:04.900Z\"}",
		 true},
		/* after its last change: this app is gone */
		{"{\"appId\":\"/shop/cart\",\"timestamp\":"
		 "\"2026-11-28T10:00:06.000Z\"}",
		 false},
		/* no time to tell by: gone, as before */
		{"{\"appId\":\"/shop/cart\"}", false},
		{"{\"appId\":\"/shop/cart\",\"timestamp\":\"soon\"}", false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct mar_model m = {.apps = mar_parse_apps(apps,
							     strlen(apps))};
		assert_non_null(m.apps);
		assert_int_equal(mar_model_apply(&m, "app_terminated_event", 20,
						 cases[i].ev,
						 strlen(cases[i].ev)),
				 MAR_EV_APP_TERMINATED);
		assert_int_equal(cJSON_GetArraySize(m.apps),
				 cases[i].stays ? 1 : 0);
		assert_int_equal(m.dirty, !cases[i].stays);
		mar_model_clear(&m);
	}
}

/* Status updates of a pod's tasks carry the pod id as appId. They change
 * nothing the snapshot reads (instances come with their own
 * instance_changed_event), so they must not ask for a full sync: a pod
 * cluster's task churn was one full sync per update. */
static void test_pod_task_status_update_needs_no_resync(void **st)
{
	size_t la, lp;
	char *a = slurp("mixd-apps-embed-tasks-1.5.json", &la);
	char *p = slurp("mixd-pods-status.json", &lp);
	struct mar_model m = {.apps = mar_parse_apps(a, la),
			      .pods = mar_parse_pods(p, lp)};
	assert_non_null(m.apps);
	assert_non_null(m.pods);
	static const char *const states[] = {"TASK_STAGING", "TASK_RUNNING",
					     "TASK_KILLED"};
	char ev[512];
	for (size_t i = 0; i < 3; i++) {
		int n = snprintf(ev, sizeof ev,
				 "{\"taskId\":\"reviews-v2.instance-c96bf99f-"
				 "6a2b-11e9-9d6b-0242ac110003.reviews\","
				 "\"appId\":\"/reviews-v2\",\"taskStatus\":"
				 "\"%s\",\"host\":\"10.0.0.31\",\"ports\":[]}",
				 states[i]);
		assert_int_equal(mar_model_apply(&m, "status_update_event", 19,
						 ev, (size_t)n),
				 MAR_EV_STATUS_UPDATE);
		/* but a task running: its instance may have an address
		 * now that it did not have at its first sync */
		assert_int_equal(m.need_resync, i == 1);
		m.need_resync = false;
		assert_false(m.dirty);
	}
	/* a new instance's staging task: its instance_changed_event
	 * resyncs */
	int n = snprintf(ev, sizeof ev,
			 "{\"taskId\":\"reviews-v2.instance-0000.reviews\","
			 "\"appId\":\"/reviews-v2\",\"taskStatus\":"
			 "\"TASK_STAGING\"}");
	mar_model_apply(&m, "status_update_event", 19, ev, (size_t)n);
	assert_false(m.need_resync);
	n = snprintf(ev, sizeof ev,
		     "{\"instanceId\":\"reviews-v2.instance-0000\","
		     "\"runSpecId\":\"/reviews-v2\",\"condition\":"
		     "\"Running\"}");
	mar_model_apply(&m, "instance_changed_event", 22, ev, (size_t)n);
	assert_true(m.need_resync);
	/* a run spec the model does not know still asks for a sync */
	m.need_resync = false;
	n = snprintf(ev, sizeof ev,
		     "{\"taskId\":\"nope.instance-0000._app\",\"appId\":"
		     "\"/nope\",\"taskStatus\":\"TASK_RUNNING\"}");
	mar_model_apply(&m, "status_update_event", 19, ev, (size_t)n);
	assert_true(m.need_resync);
	mar_model_clear(&m);
	free(a);
	free(p);
}

/* What a status update can add to the model until the next sync is
 * bounded: of a task, MAR_EVENT_PORTS_MAX ports and MAR_EVENT_ADDRS_MAX
 * addresses; MAR_EVENT_TASKS_MAX new tasks, after which a new one waits
 * for the resync it asks for. A hostile stream grew it by hundreds of
 * megabytes an event. */
static void test_status_updates_are_bounded(void **st)
{
	const char *apps = "{\"apps\":[{\"id\":\"/a\",\"tasks\":[]}]}";
	struct mar_model m = {.apps = mar_parse_apps(apps, strlen(apps))};
	assert_non_null(m.apps);
	const size_t cap = 64 * 1024;
	char *ev = malloc(cap);
	assert_non_null(ev);
	size_t n = (size_t)snprintf(ev, cap,
				    "{\"taskId\":\"a.instance-big._app.1\","
				    "\"appId\":\"/a\",\"taskStatus\":"
				    "\"TASK_RUNNING\",\"ports\":[1");
	for (int i = 0; i < 5000; i++)
		n += (size_t)snprintf(ev + n, cap - n, ",%d", 1 + i % 60000);
	n += (size_t)snprintf(ev + n, cap - n, "],\"ipAddresses\":[");
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(ev + n, cap - n,
				      "%s{\"ipAddress\":\"9.0.0.%d\"}",
				      i ? "," : "", i % 250);
	n += (size_t)snprintf(ev + n, cap - n, "]}");
	assert_true(n < cap);
	assert_int_equal(mar_model_apply(&m, "status_update_event", 19, ev, n),
			 MAR_EV_STATUS_UPDATE);
	const cJSON *t = cJSON_GetArrayItem(
		cJSON_GetObjectItem(cJSON_GetArrayItem(m.apps, 0), "tasks"), 0);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(t, "ports")),
			 MAR_EVENT_PORTS_MAX);
	assert_int_equal(
		cJSON_GetArraySize(cJSON_GetObjectItem(t, "ipAddresses")),
		MAR_EVENT_ADDRS_MAX);
	assert_false(m.need_resync);
	/* new tasks up to the limit, then a resync instead */
	for (int i = 1; i <= MAR_EVENT_TASKS_MAX; i++) {
		n = (size_t)snprintf(ev, cap,
				     "{\"taskId\":\"a.instance-%d._app.1\","
				     "\"appId\":\"/a\",\"taskStatus\":"
				     "\"TASK_RUNNING\"}",
				     i);
		mar_model_apply(&m, "status_update_event", 19, ev, n);
		if (m.need_resync)
			break;
	}
	const cJSON *tasks =
		cJSON_GetObjectItem(cJSON_GetArrayItem(m.apps, 0), "tasks");
	assert_true(m.need_resync);
	assert_int_equal(cJSON_GetArraySize(tasks), MAR_EVENT_TASKS_MAX);
	/* a known task is still followed */
	m.need_resync = false;
	n = (size_t)snprintf(ev, cap,
			     "{\"taskId\":\"a.instance-big._app.1\","
			     "\"appId\":\"/a\",\"taskStatus\":"
			     "\"TASK_KILLED\"}");
	mar_model_apply(&m, "status_update_event", 19, ev, n);
	assert_false(m.need_resync);
	assert_int_equal(cJSON_GetArraySize(tasks), MAR_EVENT_TASKS_MAX - 1);
	free(ev);
	mar_model_clear(&m);
}

/* A task the master knows nothing of (TASK_UNKNOWN) is gone, as Marathon
 * holds Unknown terminal: its address may be another's soon. */
static void test_an_unknown_task_is_gone(void **st)
{
	const char *apps = "{\"apps\":[{\"id\":\"/a\",\"tasks\":[]}]}";
	struct mar_model m = {.apps = mar_parse_apps(apps, strlen(apps))};
	assert_non_null(m.apps);
	const cJSON *tasks =
		cJSON_GetObjectItem(cJSON_GetArrayItem(m.apps, 0), "tasks");
	static const char *const states[] = {"TASK_RUNNING", "TASK_UNKNOWN"};
	for (int i = 0; i < 2; i++) {
		char ev[256];
		int n = snprintf(ev, sizeof ev,
				 "{\"taskId\":\"a.instance-1._app.1\",\"appId\":"
				 "\"/a\",\"taskStatus\":\"%s\"}",
				 states[i]);
		mar_model_apply(&m, "status_update_event", 19, ev, (size_t)n);
		assert_int_equal(cJSON_GetArraySize(tasks), 1 - i);
	}
	mar_model_clear(&m);
}

static void test_sse_fixture_any_split_lf_and_crlf(void **st)
{
	size_t len;
	char *lf = slurp("v2-events-sse-stream-sample.txt", &len);
	char *crlf = malloc(len * 2 + 1);
	size_t cl = 0;
	for (size_t i = 0; i < len; i++) {
		if (lf[i] == '\n')
			crlf[cl++] = '\r';
		crlf[cl++] = lf[i];
	}
	const char *bufs[2] = {lf, crlf};
	size_t lens[2] = {len, cl};
	for (int b = 0; b < 2; b++) {
		for (size_t split = 0; split <= lens[b]; split += 7) {
			struct mar_sse p = {0};
			struct sse_seen seen = {0};
			mar_sse_reset(&p);
			assert_int_equal(mar_sse_feed(&p, bufs[b], split,
						      sse_cb, &seen),
					 0);
			assert_int_equal(mar_sse_feed(&p, bufs[b] + split,
						      lens[b] - split, sse_cb,
						      &seen),
					 0);
			assert_int_equal(seen.n, 3);
			assert_string_equal(seen.types[0],
					    "event_stream_attached");
			assert_string_equal(seen.types[1],
					    "status_update_event");
			assert_false(mar_sse_partial(&p));
			mar_sse_free(&p);
		}
	}
	/* heartbeats alone dispatch nothing; a cut event is partial */
	struct mar_sse p = {0};
	struct sse_seen seen = {0};
	mar_sse_reset(&p);
	assert_int_equal(mar_sse_feed(&p, "\r\n\r\n\r\n: c\r\n", 11, sse_cb,
				      &seen),
			 0);
	assert_int_equal(seen.n, 0);
	/* (a type whose data is read: see test_sse_skips_unread_data) */
	const char *cut = "event: status_update_event\r\ndata: {\"a\"";
	assert_int_equal(mar_sse_feed(&p, cut, strlen(cut), sse_cb, &seen), 0);
	assert_true(mar_sse_partial(&p));
	/* data: lines join with \n */
	assert_int_equal(mar_sse_feed(&p, ":1}\r\ndata: 2\r\n\r\n", 16, sse_cb,
				      &seen),
			 0);
	assert_int_equal(seen.n, 1);
	assert_int_equal(seen.lens[0], strlen("{\"a\":1}\n2"));
	mar_sse_free(&p);
	free(lf);
	free(crlf);
}

static void test_sse_oversized_event_fails(void **st)
{
	struct mar_sse p = {0};
	struct sse_seen seen = {0};
	mar_sse_reset(&p);
	size_t n = 1 << 20;
	char *junk = malloc(n);
	memset(junk, 'a', n);
	assert_int_equal(mar_sse_feed(&p, "data: ", 6, sse_cb, &seen), 0);
	int rc = 0;
	for (int i = 0; i < 20 && rc == 0; i++)
		rc = mar_sse_feed(&p, junk, n, sse_cb, &seen);
	assert_int_equal(rc, -1);
	assert_int_equal(mar_sse_feed(&p, "\r\n\r\n", 4, sse_cb, &seen), -1);
	assert_int_equal(seen.n, 0);
	mar_sse_free(&p);
	free(junk);
}

/* Deployment events carry whole group trees (tens of MB at 10,000 apps)
 * that mixd never reads: once the "event:" line names such a type, its
 * data passes unbuffered and unbounded, and the event is still
 * dispatched (to be counted). Data that is read keeps the bound, and a
 * buffer grown for a large event is given back. */
static void test_sse_skips_unread_data(void **st)
{
	struct mar_sse p = {0};
	struct sse_seen seen = {0};
	mar_sse_reset(&p);
	size_t n = 1 << 20;
	char *junk = malloc(n);
	memset(junk, 'a', n);
	/* 20 MiB of deployment_info data, beyond MAR_SSE_MAX_EVENT, in
	 * pieces, the "data:" prefix split too */
	const char *head = "event: deployment_info\r\nda";
	assert_int_equal(mar_sse_feed(&p, head, strlen(head), sse_cb, &seen), 0);
	assert_int_equal(mar_sse_feed(&p, "ta: {", 5, sse_cb, &seen), 0);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(mar_sse_feed(&p, junk, n, sse_cb, &seen), 0);
		assert_true(p.line_cap <= 4096 && p.data_cap == 0);
	}
	const char *tail = "\r\ndata: more\r\n\r\n";
	assert_int_equal(mar_sse_feed(&p, tail, strlen(tail), sse_cb, &seen), 0);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.types[0], "deployment_info");
	assert_int_equal(seen.lens[0], 0);
	assert_false(mar_sse_partial(&p));
	/* the stream goes on: LF framing, another unread type, then data
	 * that is read */
	const char *more = "event: deployment_success\ndata: {\"id\":1}\n\n"
			   "event: status_update_event\ndata: {}\n\n";
	assert_int_equal(mar_sse_feed(&p, more, strlen(more), sse_cb, &seen), 0);
	assert_int_equal(seen.n, 3);
	assert_string_equal(seen.types[1], "deployment_success");
	assert_int_equal(seen.lens[1], 0);
	assert_string_equal(seen.types[2], "status_update_event");
	assert_int_equal(seen.lens[2], 2);
	/* data before any "event:" line is kept, as its type is not known */
	const char *early = "data: {}\nevent: deployment_info\n\n";
	assert_int_equal(mar_sse_feed(&p, early, strlen(early), sse_cb, &seen),
			 0);
	assert_int_equal(seen.n, 4);
	assert_int_equal(seen.lens[3], 2);
	/* a 512 KiB event that is read: delivered whole, buffers given
	 * back */
	const char *su = "event: status_update_event\r\ndata: ";
	assert_int_equal(mar_sse_feed(&p, su, strlen(su), sse_cb, &seen), 0);
	assert_int_equal(mar_sse_feed(&p, junk, n / 4, sse_cb, &seen), 0);
	assert_int_equal(mar_sse_feed(&p, junk, n / 4, sse_cb, &seen), 0);
	assert_true(p.line_cap > n / 4);
	assert_int_equal(mar_sse_feed(&p, "\r\n\r\n", 4, sse_cb, &seen), 0);
	assert_int_equal(seen.n, 5);
	assert_int_equal(seen.lens[4], n / 2);
	assert_true(p.line_cap <= (64u << 10) && p.data_cap <= (64u << 10));
	/* and the bound holds for it: over MAR_SSE_MAX_EVENT (1 MiB) of
	 * read data is a broken stream */
	assert_int_equal(mar_sse_feed(&p, su, strlen(su), sse_cb, &seen), 0);
	int rc = 0;
	for (int i = 0; i < 2 && rc == 0; i++)
		rc = mar_sse_feed(&p, junk, n, sse_cb, &seen);
	assert_int_equal(rc, -1);
	assert_int_equal(seen.n, 5);
	mar_sse_free(&p);
	free(junk);
}

/* ------------------------------------------------------------------ */
/* The reader's cache answers what the snapshot answers */

/* A resolver that never reaches a Marathon, holding snapshot @s. */
static struct mar_resolver *resolver_with(struct mar_snap *s)
{
	static FILE *devnull;
	if (!devnull)
		devnull = fopen("/dev/null", "w");
	struct mar_options o = {.addresses = "127.0.0.1:1",
				.backoff_min_ns = 60000 * MS,
				.backoff_max_ns = 60000 * MS,
				.log_file = devnull};
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	assert_int_equal(mar_resolver_inject(r, s), 0);
	return r;
}

/* mar_lookup() through @rd and mar_snap_lookup() on @s agree, output for
 * output (the same pointers into the snapshot). */
static void assert_same(struct mar_reader *rd, const struct mar_snap *s,
			const struct mar_query *q)
{
	struct mar_result a, b;
	bool fa = mar_lookup(rd, q, &a), fb = mar_snap_lookup(s, q, &b);
	assert_int_equal(fa, fb);
	assert_ptr_equal(a.src, b.src);
	assert_ptr_equal(a.dst, b.dst);
	assert_ptr_equal(a.dst_container, b.dst_container);
}

/*
 * What a review of the lookups found wrong, each rule through the snapshot
 * and through a reader's cache:
 *   - a uid that is given decides alone: unknown, it names nobody, not the
 *     task that holds the record's IP (only an empty uid falls back);
 *   - an agent's IP with a port goes by IP and port alone: a port no task
 *     on the agent declares names nobody, not the agent's one task;
 *   - destination_port picks the container before the uid's own does;
 *   - a pod instance being killed (TERMINAL, a container TASK_KILLING)
 *     still answers, until no container of it runs;
 *   - ".marathon-" task ids and resident tasks' ids resolve from the
 *     proxies' uid form;
 *   - an instance listing IPv6 first has its IPv4 address as pod IP.
 */
static void test_lookup_rules(void **st)
{
	static const char apps[] =
		"{\"apps\":["
		"{\"id\":\"/edge/host-svc\",\"networks\":[{\"mode\":\"host\"}],"
		"\"tasks\":[{\"id\":\"edge_host-svc.instance-00000000-0000-11e9-"
		"0000-000000000001._app.1\",\"host\":\"10.1.0.9\",\"state\":"
		"\"TASK_RUNNING\",\"ports\":[31900]}]},"
		"{\"id\":\"/shop/cart\",\"networks\":[{\"mode\":\"container\","
		"\"name\":\"dcos\"}],\"tasks\":[{\"id\":\"shop_cart.instance-"
		"00000000-0000-11e9-0000-000000000002._app.1\",\"host\":"
		"\"10.1.0.8\",\"state\":\"TASK_RUNNING\",\"ipAddresses\":["
		"{\"ipAddress\":\"fd00::1:5\"},{\"ipAddress\":\"9.0.7.7\"}]}]},"
		"{\"id\":\"/legacy/mar\",\"tasks\":[{\"id\":\"legacy_mar.marathon-"
		"6dd78972-6771-11e5-94e1-be5b2935a987.$anon\",\"host\":"
		"\"10.1.0.5\",\"state\":\"TASK_RUNNING\"}]},"
		"{\"id\":\"/legacy/res\",\"tasks\":[{\"id\":\"legacy_res.5dd78972-"
		"6771-11e5-94e1-be5b2935a987.3\",\"host\":\"10.1.0.6\",\"state\":"
		"\"TASK_RUNNING\"}]}]}";
	static const char pods[] =
		"[{\"id\":\"/mesh/web\",\"spec\":{\"id\":\"/mesh/web\","
		"\"networks\":[{\"mode\":\"container\",\"name\":\"dcos\"}],"
		"\"containers\":[{\"name\":\"app\",\"endpoints\":[{\"name\":"
		"\"http\",\"containerPort\":8080}]},{\"name\":\"envoy\","
		"\"endpoints\":[{\"name\":\"admin\",\"containerPort\":15000},"
		"{\"name\":\"in\",\"containerPort\":15001}]}]},\"instances\":["
		"{\"id\":\"mesh_web.instance-aaaaaaaa-0000-11e9-9d6b-0242ac110003\","
		"\"status\":\"STABLE\",\"agentHostname\":\"10.1.0.4\","
		"\"networks\":[{\"name\":\"dcos\",\"addresses\":[\"9.4.0.1\"]}],"
		"\"containers\":[{\"name\":\"app\",\"status\":\"TASK_RUNNING\","
		"\"endpoints\":[{\"name\":\"http\"}]},{\"name\":\"envoy\","
		"\"status\":\"TASK_RUNNING\"}]},"
		"{\"id\":\"mesh_web.instance-bbbbbbbb-0000-11e9-9d6b-0242ac110003\","
		"\"status\":\"TERMINAL\",\"agentHostname\":\"10.1.0.4\","
		"\"networks\":[{\"name\":\"dcos\",\"addresses\":[\"9.4.4.4\"]}],"
		"\"containers\":[{\"name\":\"app\",\"status\":\"TASK_KILLING\"},"
		"{\"name\":\"envoy\",\"status\":\"TASK_KILLED\"}]},"
		"{\"id\":\"mesh_web.instance-cccccccc-0000-11e9-9d6b-0242ac110003\","
		"\"status\":\"TERMINAL\",\"agentHostname\":\"10.1.0.4\","
		"\"networks\":[{\"name\":\"dcos\",\"addresses\":[\"9.4.4.5\"]}],"
		"\"containers\":[{\"name\":\"app\",\"status\":\"TASK_KILLED\"},"
		"{\"name\":\"envoy\",\"status\":\"TASK_FINISHED\"}]}]}]";
	struct mar_snap *s = snap_of(apps, pods);
	struct mar_resolver *res = resolver_with(s);
	struct mar_reader *rd = mar_reader_create(res);
	mar_read_begin(rd);
	struct mar_result r;
	struct mar_query q;
#define BOTH(want)                                                             \
	do {                                                                   \
		assert_same(rd, s, &q);                                        \
		assert_same(rd, s, &q); /* again, from the cache */            \
		assert_int_equal(mar_snap_lookup(s, &q, &r), (want));          \
	} while (0)

	/* an unknown uid, an IP a task holds: nobody */
	struct attr_value gw = str("kubernetes://istio-ingressgateway-5d8f");
	struct attr_value hip = ip4(10, 1, 0, 9), cip = ip4(9, 0, 7, 7);
	q = (struct mar_query){.source_uid = &gw, .source_ip = &hip,
			       .destination_uid = &gw, .destination_ip = &cip};
	BOTH(false);
	/* no uid (or an empty one): the IPs */
	struct attr_value empty = str("");
	q = (struct mar_query){.source_uid = &empty, .source_ip = &hip,
			       .destination_ip = &cip};
	BOTH(true);
	ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAME, "host-svc");
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME, "cart");
	/* IPv6 listed first: the pod IP is the IPv4 one */
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_POD_IP, "9.0.7.7");

	/* the agent's IP with the port of no task on it: nobody; with the
	 * task's port, or with none, the host task */
	struct attr_value p = port(5051);
	q = (struct mar_query){.destination_ip = &hip, .destination_port = &p};
	BOTH(false);
	p = port(31900);
	BOTH(true);
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME, "host-svc");
	q.destination_port = NULL;
	BOTH(true);
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME, "host-svc");

	/* the port picks the container, though the uid names the envoy's */
	struct attr_value envoy = str("kubernetes://mesh_web.instance-aaaaaaaa-"
				      "0000-11e9-9d6b-0242ac110003.envoy");
	p = port(8080);
	q = (struct mar_query){.destination_uid = &envoy,
			       .destination_port = &p};
	BOTH(true);
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_CONTAINER_NAME, "app");
	p = port(9999); /* no container's: the uid's */
	BOTH(true);
	ASSERT_OUT(&r, MAR_OUT_DESTINATION_CONTAINER_NAME, "envoy");

	/* being killed: still there; killed: gone */
	struct attr_value killing = ip4(9, 4, 4, 4), killed = ip4(9, 4, 4, 5);
	q = (struct mar_query){.source_ip = &killing};
	BOTH(true);
	ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAME, "web");
	struct attr_value ku = str("kubernetes://mesh_web.instance-bbbbbbbb-"
				   "0000-11e9-9d6b-0242ac110003");
	q = (struct mar_query){.source_uid = &ku};
	BOTH(true);
	q = (struct mar_query){.source_ip = &killed};
	BOTH(false);

	/* ".marathon-" and resident task ids, from the proxies' uid */
	struct attr_value mu = str("kubernetes://legacy_mar.marathon-6dd78972-"
				   "6771-11e5-94e1-be5b2935a987");
	q = (struct mar_query){.source_uid = &mu};
	BOTH(true);
	ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAME, "mar");
	ASSERT_OUT(&r, MAR_OUT_SOURCE_POD_NAME,
		   "legacy_mar.marathon-6dd78972-6771-11e5-94e1-be5b2935a987");
	struct attr_value ru = str("kubernetes://legacy_res.5dd78972-6771-11e5-"
				   "94e1-be5b2935a987");
	q = (struct mar_query){.source_uid = &ru};
	BOTH(true);
	ASSERT_OUT(&r, MAR_OUT_SOURCE_WORKLOAD_NAME, "res");
	ASSERT_OUT(&r, MAR_OUT_SOURCE_POD_NAME,
		   "legacy_res.5dd78972-6771-11e5-94e1-be5b2935a987");
#undef BOTH
	mar_read_end(rd);
	mar_reader_destroy(rd);
	mar_resolver_stop(res);
}

static void test_reader_cache_agrees_with_snapshot(void **st)
{
	struct mar_snap *s = fixture_snap();
	struct mar_resolver *r = resolver_with(s);
	struct mar_reader *rd = mar_reader_create(r);
	/* every uid form, found or not, short (one block), 16 and 64 bytes
	 * (block edges), over 64 (the long path), and near misses that
	 * differ from a known id in one byte at its start, middle or end */
	const char *uids[] = {
		"kubernetes://reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-"
		"0242ac110003",
		"mesos://reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-"
		"0242ac110003",
		"reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-0242ac110003",
		"reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-0242ac110004",
		"reviews-v2.instance-c96bf99e-6a2b-11e9-9d6b-0242ac110003",
		"Reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-0242ac110003",
		"kubernetes://reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-"
		"0242ac110003.reviews",
		"shop_backend_reviews-v2.instance-0a1b2c3d-6a2b-11e9-9d6b-"
		"0242ac110003._app.1",
		"shop_backend_reviews-v2.instance-0a1b2c3d-6a2b-11e9-9d6b-"
		"0242ac110003._app.2",
		"kubernetes://shop_backend_reviews-v2.instance-0a1b2c3d-6a2b-"
		"11e9-9d6b-0242ac110003._app",
		"kubernetes://shop_backend_reviews-v2.instance-0a1b2c3d-6a2b-"
		"11e9-9d6b-0242ac110003",
		"kubernetes://shop_backend_details.instance-7a1b2c3d-6a2b-11e9-"
		"9d6b-0242ac110003",
		"ratings.5dd78972-6771-11e5-94e1-be5b2935a987",
		"ratings.5dd78972-6771-11e5-94e1-be5b2935a98",
		"kubernetes://ratings",
		"kubernetes://",
		"mesos://",
		"",
		"a",
		"abc",
		"abcdefg",
		"0123456789abcdef",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
		"abcdef",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
		"abcdefX",
		/* the fast path's edges: "kubernetes://" then 15, 16, 64 and
		 * 65 bytes; the prefix cut short; another string type */
		"kubernetes://0123456789abcde",
		"kubernetes://0123456789abcdef",
		"kubernetes://0123456789abcdef0123456789abcdef0123456789abcdef"
		"0123456789abcdef",
		"kubernetes://0123456789abcdef0123456789abcdef0123456789abcdef"
		"0123456789abcdefX",
		"kubernetes:/0123456789abcdef0123456789abcdef",
		"kubernetes:/ratings.5dd78972-6771-11e5-94e1-be5b2935a987",
		"kubernetes://ratings.5dd78972-6771-11e5-94e1-be5b2935a987",
		NULL,
	};
	struct attr_value ips[] = {
		ip4(9, 0, 1, 2),   ip4(172, 17, 0, 2), ip4(10, 0, 0, 13),
		ip4(127, 0, 0, 1), ip4(10, 0, 0, 14),  ip4(0, 0, 0, 0),
		ip4(9, 0, 2, 5),   ip4(10, 0, 0, 21),  ip4(10, 0, 0, 31),
		ip4(10, 9, 9, 9),
	};
	struct attr_value ports[] = {port(0), port(9080), port(15000),
				     port(31002), port(31201), port(31501),
				     port(70000)};
	size_t nu = sizeof uids / sizeof *uids, ni = sizeof ips / sizeof *ips,
	       np = sizeof ports / sizeof *ports;
	struct attr_value uv[sizeof uids / sizeof *uids];
	for (size_t i = 0; i < nu; i++)
		uv[i] = uids[i] ? str(uids[i]) : (struct attr_value){0};
	uv[nu - 2].type = ATTR_URI; /* a uid, but not ATTR_STRING */
	/* three rounds: the first fills the cache, the others hit it */
	mar_read_begin(rd);
	for (int round = 0; round < 3; round++)
		for (size_t i = 0; i < nu; i++)
			for (size_t j = 0; j < ni; j++)
				for (size_t p = 0; p < np; p++) {
					size_t u2 = (i * 7 + j + round) % nu;
					struct mar_query q = {
						.source_uid =
							uids[i] ? &uv[i] : NULL,
						.source_ip = &ips[j],
						.destination_uid =
							uids[u2] ? &uv[u2] : NULL,
						.destination_ip =
							&ips[(j + p) % ni],
						.destination_port = &ports[p],
					};
					assert_same(rd, s, &q);
					q.source_uid = NULL;
					q.destination_uid = NULL;
					assert_same(rd, s, &q);
				}
	mar_read_end(rd);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
}

/* Keys whose cache tags collide by construction (the tag folds blocks by
 * adding them: +1 in one block and -1 in the next cancel) must still be
 * told apart by comparing the keys. */
static void test_reader_cache_tag_collision(void **st)
{
	/* a legacy task id of exactly 64 bytes: four whole blocks */
	const char *id = "t.0123456789abcdef0123456789abcdef0123456789abcdef"
			 "0123456789abcd";
	assert_int_equal(strlen(id), 64);
	char body[512];
	int n = snprintf(body, sizeof body,
			 "{\"apps\":[{\"id\":\"/t\",\"tasks\":[{\"id\":"
			 "\"%s\",\"host\":\"10.3.0.1\",\"state\":"
			 "\"TASK_RUNNING\"}]}]}",
			 id);
	cJSON *apps = mar_parse_apps(body, (size_t)n);
	assert_non_null(apps);
	struct mar_snap *s = NULL;
	assert_int_equal(mar_snap_build(apps, NULL, NULL, &s, NULL), 0);
	cJSON_Delete(apps);
	struct mar_resolver *r = resolver_with(s);
	struct mar_reader *rd = mar_reader_create(r);
	/* byte i up, byte i + 16 down: the same lane of blocks 0 and 1 */
	for (int i = 0; i < 16; i++) {
		char y[65];
		memcpy(y, id, 65);
		y[i]++;
		y[i + 16]--;
		struct attr_value xv = str(id), yv = str(y);
		struct mar_query qx = {.destination_uid = &xv};
		struct mar_query qy = {.destination_uid = &yv};
		struct mar_result res;
		mar_read_begin(rd);
		assert_true(mar_lookup(rd, &qx, &res));  /* cached */
		assert_false(mar_lookup(rd, &qy, &res)); /* same tag */
		assert_true(mar_lookup(rd, &qx, &res));
		assert_false(mar_lookup(rd, &qy, &res));
		mar_read_end(rd);
	}
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
}

/* Seventeen ids of one cache tag and set, all in the snapshot: more than a
 * set has ways, each way found by its tag first holding the wrong key
 * about every other time. Every lookup must still find its own task. */
static void test_reader_cache_tag_collision_all_present(void **st)
{
	const char *id = "t.0123456789abcdef0123456789abcdef0123456789abcdef"
			 "0123456789abcd";
	enum { N = 17 };
	char ids[N][65];
	char body[N * 160 + 64];
	size_t len = (size_t)sprintf(body, "{\"apps\":[{\"id\":\"/t\","
					   "\"tasks\":[");
	for (int i = 0; i < N; i++) {
		memcpy(ids[i], id, 65);
		if (i) { /* the same fold as id's, see above */
			ids[i][i - 1]++;
			ids[i][i - 1 + 16]--;
		}
		len += (size_t)sprintf(body + len,
				       "%s{\"id\":\"%s\",\"host\":"
				       "\"10.3.0.%d\",\"state\":"
				       "\"TASK_RUNNING\"}",
				       i ? "," : "", ids[i], i + 1);
	}
	len += (size_t)sprintf(body + len, "]}]}");
	assert_true(len < sizeof body);
	cJSON *apps = mar_parse_apps(body, len);
	assert_non_null(apps);
	struct mar_snap *s = NULL;
	assert_int_equal(mar_snap_build(apps, NULL, NULL, &s, NULL), 0);
	cJSON_Delete(apps);
	assert_int_equal(s->tasks, N);
	struct mar_resolver *r = resolver_with(s);
	struct mar_reader *rd = mar_reader_create(r);
	char kid[N][80];
	struct attr_value v[N], kv[N];
	for (int i = 0; i < N; i++) {
		v[i] = str(ids[i]);
		snprintf(kid[i], sizeof kid[i], "kubernetes://%s", ids[i]);
		kv[i] = str(kid[i]);
	}
	mar_read_begin(rd);
	for (int round = 0; round < 4; round++)
		for (int i = 0; i < N; i++) {
			int j = (i * 5 + round) % N;
			struct mar_query q = {.source_uid = &kv[i],
					      .destination_uid = &v[j]};
			struct mar_result res;
			assert_same(rd, s, &q);
			assert_true(mar_lookup(rd, &q, &res));
			assert_non_null(res.src);
			assert_non_null(res.dst);
			assert_true((res.src == res.dst) == (i == j));
		}
	mar_read_end(rd);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
}

/* More ids than the cache has ways, ids that differ in one hex digit in
 * their middle: evictions and tag collisions must never answer wrongly. */
static void test_reader_cache_under_eviction(void **st)
{
	enum { APPS = 1500, TASKS = 3 };
	size_t cap = (size_t)APPS * (TASKS * 260 + 200) + 64, len = 0;
	char *json = malloc(cap);
	assert_non_null(json);
	len += (size_t)sprintf(json + len, "{\"apps\":[");
	for (int a = 0; a < APPS; a++) {
		len += (size_t)sprintf(json + len,
				       "%s{\"id\":\"/g%d/app%d\",\"tasks\":[",
				       a ? "," : "", a % 10, a);
		for (int t = 0; t < TASKS; t++)
			len += (size_t)sprintf(
				json + len,
				"%s{\"id\":\"g%d_app%d.instance-%08x-6a2b-"
				"11e9-9d6b-0242ac110003._app.1\",\"host\":"
				"\"10.2.%d.%d\",\"state\":\"TASK_RUNNING\","
				"\"ports\":[%d]}",
				t ? "," : "", a % 10, a, a * TASKS + t,
				(a * TASKS + t) / 250, (a * TASKS + t) % 250,
				31000 + t);
		len += (size_t)sprintf(json + len, "]}");
	}
	len += (size_t)sprintf(json + len, "]}");
	assert_true(len < cap);
	cJSON *apps = mar_parse_apps(json, len);
	assert_non_null(apps);
	struct mar_snap *s = NULL;
	assert_int_equal(mar_snap_build(apps, NULL, NULL, &s, NULL), 0);
	cJSON_Delete(apps);
	free(json);
	struct mar_resolver *r = resolver_with(s);
	struct mar_reader *rd = mar_reader_create(r);
	char su[128], du[128];
	struct attr_value p = port(31001);
	mar_read_begin(rd);
	for (int round = 0; round < 2; round++)
		for (int n = 0; n < APPS * TASKS + 50; n++) {
			/* n past the last task: ids the snapshot lacks */
			int a = n / TASKS, m = (n * 7919) % (APPS * TASKS + 50);
			snprintf(su, sizeof su,
				 "kubernetes://g%d_app%d.instance-%08x-6a2b-"
				 "11e9-9d6b-0242ac110003",
				 a % 10, a, n);
			snprintf(du, sizeof du,
				 "g%d_app%d.instance-%08x-6a2b-11e9-9d6b-"
				 "0242ac110003._app.1",
				 (m / TASKS) % 10, m / TASKS, m);
			struct attr_value sv = str(su), dv = str(du);
			struct mar_query q = {.source_uid = &sv,
					      .destination_uid = &dv,
					      .destination_port = &p};
			assert_same(rd, s, &q);
			struct mar_result res;
			assert_int_equal(mar_lookup(rd, &q, &res),
					 n < APPS * TASKS ||
						 m < APPS * TASKS);
		}
	mar_read_end(rd);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
}

/* ------------------------------------------------------------------ */
/* The stand-in */

struct standin {
	pid_t pid;
	FILE *in, *out;
	int port, fport;
};

static void standin_start(struct standin *s, const char *args)
{
	int to[2], from[2];
	/* Close-on-exec: a second stand-in must not hold this one's stdin
	 * open, or this one never sees the EOF that stops it. */
	assert_int_equal(pipe2(to, O_CLOEXEC), 0);
	assert_int_equal(pipe2(from, O_CLOEXEC), 0);
	char cmd[1024];
	snprintf(cmd, sizeof cmd,
		 "exec python3 integration/marathon_standin.py --port 0 %s",
		 args);
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		dup2(to[0], 0);
		dup2(from[1], 1);
		close(to[1]);
		close(from[0]);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(to[0]);
	close(from[1]);
	s->in = fdopen(to[1], "w");
	s->out = fdopen(from[0], "r");
	char line[256];
	assert_non_null(fgets(line, sizeof line, s->out));
	assert_int_equal(sscanf(line, "READY %d %d", &s->port, &s->fport), 2);
}

/* Send one command (printf-style JSON); returns the reply's JSON. */
static cJSON *standin_cmd(struct standin *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static cJSON *standin_cmd(struct standin *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(s->in, fmt, ap);
	va_end(ap);
	fputc('\n', s->in);
	fflush(s->in);
	static char line[1 << 16];
	assert_non_null(fgets(line, sizeof line, s->out));
	if (strncmp(line, "OK ", 3))
		fail_msg("stand-in: %s", line);
	cJSON *j = cJSON_Parse(line + 3);
	assert_non_null(j);
	return j;
}

/* As standin_cmd(), for commands whose reply says nothing. */
#define standin_cmdf(s, ...) cJSON_Delete(standin_cmd((s), __VA_ARGS__))

static void standin_cmd0(struct standin *s, const char *json)
{
	cJSON_Delete(standin_cmd(s, "%s", json));
}

static int standin_requests(struct standin *s, const char *path)
{
	cJSON *j = standin_cmd(s, "{\"cmd\":\"stats\"}");
	cJSON *r = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "requests"),
				       path);
	int n = cJSON_IsNumber(r) ? r->valueint : 0;
	cJSON_Delete(j);
	return n;
}

static void standin_stop(struct standin *s)
{
	fclose(s->in); /* EOF on stdin: the stand-in exits */
	fclose(s->out);
	int status;
	waitpid(s->pid, &status, 0);
}

static struct mar_options fast_options(const char *addresses)
{
	static FILE *devnull;
	if (!devnull && getenv("MIXD_TEST_QUIET"))
		devnull = fopen("/dev/null", "w");
	return (struct mar_options){
		.addresses = addresses,
		.refresh_ns = 60000 * MS,
		.stream_timeout_ns = 2000 * MS,
		.backoff_min_ns = 50 * MS,
		.backoff_max_ns = 200 * MS,
		.request_timeout_ns = 3000 * MS,
		.resync_delay_ns = 50 * MS,
		.publish_interval_ns = 10 * MS,
		.log_file = devnull,
	};
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ll + ts.tv_nsec / 1000000;
}

#define WAIT_UNTIL(cond, ms)                                                   \
	do {                                                                   \
		int64_t _end = mono_ms() + (ms);                               \
		while (!(cond) && mono_ms() < _end)                            \
			usleep(5000);                                          \
		assert_true(cond);                                             \
	} while (0)

static struct mar_stats stats(struct mar_resolver *r)
{
	struct mar_stats s;
	mar_stats(r, &s);
	return s;
}

/* Does destination uid @uid resolve (through the reader and its cache)
 * to workload @wl? @wl NULL: must not resolve. */
static bool dst_is(struct mar_reader *rd, const char *uid, const char *wl)
{
	struct attr_value u = str(uid);
	struct mar_query q = {.destination_uid = &u};
	struct mar_result r;
	mar_read_begin(rd);
	bool found = mar_lookup(rd, &q, &r);
	bool ok;
	if (!wl) {
		ok = !found;
	} else {
		const struct attr_value *v =
			mar_result_get(&r, MAR_OUT_DESTINATION_WORKLOAD_NAME);
		ok = v && v->len == strlen(wl) && !memcmp(v->s, wl, v->len);
	}
	mar_read_end(rd);
	return ok;
}

static char addr_buf[256];
static const char *addr_of(int port)
{
	snprintf(addr_buf, sizeof addr_buf, "127.0.0.1:%d", port);
	return addr_buf;
}

#define FIXTURE_ARGS                                                           \
	"--apps mixd-apps-embed-tasks-1.5.json --pods mixd-pods-status.json"

static const char *REVIEWS_POD =
	"kubernetes://reviews-v2.instance-c96bf99f-6a2b-11e9-9d6b-0242ac110003";

/* ------------------------------------------------------------------ */
/* Resolver against the stand-in */

static int lines_with(FILE *f, const char *needle);

static void test_marathon_down_at_start_then_sync(void **st)
{
	struct standin s;
	standin_start(&s, FIXTURE_ARGS " --heartbeat 0.2");
	standin_cmd0(&s, "{\"cmd\":\"down\"}");
	struct mar_options o = fast_options(addr_of(s.port));
	FILE *log = tmpfile();
	assert_non_null(log);
	o.log_file = log;
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	struct mar_reader *rd = mar_reader_create(r);
	assert_non_null(rd);
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_ERROR] >= 2, 5000);
	assert_false(stats(r).synced);
	assert_true(dst_is(rd, REVIEWS_POD, NULL));
	standin_cmd0(&s, "{\"cmd\":\"up\"}");
	WAIT_UNTIL(stats(r).synced, 5000);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
	struct mar_stats x = stats(r);
	assert_int_equal(x.apps, 3);
	assert_int_equal(x.pods, 2);
	assert_int_equal(x.tasks, 5);
	assert_int_equal(x.pod_instances, 2);
	assert_true(x.last_sync_unix > 1.5e9);
	/* the build that published it was timed (pacing depends on it) */
	assert_true(x.last_build_seconds > 0 && x.last_build_seconds < 5);
	WAIT_UNTIL(stats(r).connected, 2000);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	/* the failure said once, the first sync once, with what it found */
	assert_int_equal(lines_with(log, "sync from"), 1);
	assert_int_equal(lines_with(log, ": 3 apps, 2 pods, 5 tasks, 2 pod "
					 "instances"),
			 1);
	assert_int_equal(lines_with(log, "synced with"), 1);
	fclose(log);
	standin_stop(&s);
}

/* A resolver streaming from a stand-in started on the fixtures, synced,
 * and a reader of it. */
static struct mar_resolver *streaming(struct standin *s,
				      struct mar_reader **rd)
{
	standin_start(s, FIXTURE_ARGS " --heartbeat 0.2");
	struct mar_options o = fast_options(addr_of(s->port));
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	*rd = mar_reader_create(r);
	WAIT_UNTIL(stats(r).synced && stats(r).connected, 5000);
	WAIT_UNTIL(stats(r).events[MAR_EV_STREAM_ATTACHED] >= 1, 2000);
	return r;
}

static const char RATINGS_TASK[] =
	"ratings.7ff78972-6771-11e5-94e1-be5b2935a987";

/* Stand-in command @cmd ("event" or "during_sync") with a status update:
 * task @id of /ratings running on 10.0.0.15:31600. */
static void task_running(struct standin *s, const char *cmd, const char *id)
{
	standin_cmdf(s,
		    "{\"cmd\":\"%s\",\"type\":\"status_update_event\","
		    "\"data\":{\"taskId\":\"%s\",\"appId\":\"/ratings\","
		    "\"taskStatus\":\"TASK_RUNNING\",\"host\":\"10.0.0.15\","
		    "\"ports\":[31600],\"ipAddresses\":[]}}",
		    cmd, id);
}

/* An event that arrives while a full sync is in flight, about a change
 * the sync's answer does not show yet, is applied after the sync. */
static void test_event_during_sync_survives_it(void **st)
{
	struct standin s;
	struct mar_reader *rd;
	struct mar_resolver *r = streaming(&s, &rd);
	uint64_t syncs = stats(r).sync[MAR_SYNC_OK];

	const char *nt = RATINGS_TASK;
	task_running(&s, "during_sync", nt);
	/* a deployment asks for the sync the event will race */
	standin_cmd0(&s, "{\"cmd\":\"event\",\"type\":\"deployment_success\","
			 "\"data\":{\"id\":\"d1\"}}");
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_OK] > syncs, 5000);
	WAIT_UNTIL(dst_is(rd, nt, "ratings"), 3000);
	assert_int_equal(stats(r).events[MAR_EV_STATUS_UPDATE], 1);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_stop(&s);
}

/* A long deployment's events ask for a full sync each; syncs are spaced
 * by ten times the last one's duration, not run back to back. */
static void test_resyncs_are_spaced_by_their_cost(void **st)
{
	struct standin s;
	struct mar_reader *rd;
	struct mar_resolver *r = streaming(&s, &rd);
	standin_cmd0(&s, "{\"cmd\":\"delay\",\"seconds\":0.1}");
	uint64_t syncs = stats(r).sync[MAR_SYNC_OK];
	/* one resync, now slow: 100 ms or more */
	standin_cmd0(&s, "{\"cmd\":\"event\",\"type\":\"deployment_success\","
			 "\"data\":{\"id\":\"d0\"}}");
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_OK] == syncs + 1, 5000);
	/* then a deployment step every 50 ms for 1.5 s: back to back, that
	 * was a sync every 150 ms */
	uint64_t before = stats(r).sync[MAR_SYNC_OK];
	int64_t t0 = mono_ms();
	for (int i = 0; i < 30; i++) {
		standin_cmd0(&s, "{\"cmd\":\"event\",\"type\":"
				 "\"deployment_step_success\",\"data\":{}}");
		usleep(50000);
	}
	uint64_t during = stats(r).sync[MAR_SYNC_OK] - before;
	/* each at least 1 s (10 x 100 ms) after the last */
	assert_true(during <= (uint64_t)(mono_ms() - t0) / 1000 + 1);
	/* the last one still asks: a sync follows, spaced */
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_OK] > before + during, 5000);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_stop(&s);
}

/* A reader that stays in its read section holds every snapshot since: at
 * most two are kept waiting; the newest state is published once it
 * leaves. */
static void test_a_stuck_reader_holds_at_most_two_snapshots(void **st)
{
	struct standin s;
	struct mar_reader *rd;
	struct mar_resolver *r = streaming(&s, &rd);
	mar_read_begin(rd); /* and stays */
	uint64_t before = stats(r).snapshots;
	const char *ids[5] = {
		"ratings.10000000-6771-11e5-94e1-be5b2935a987",
		"ratings.20000000-6771-11e5-94e1-be5b2935a987",
		"ratings.30000000-6771-11e5-94e1-be5b2935a987",
		"ratings.40000000-6771-11e5-94e1-be5b2935a987",
		"ratings.50000000-6771-11e5-94e1-be5b2935a987",
	};
	for (int i = 0; i < 5; i++) {
		task_running(&s, "event", ids[i]);
		WAIT_UNTIL(stats(r).events[MAR_EV_STATUS_UPDATE] == (uint64_t)i + 1,
			   3000);
		usleep(100000); /* ten publish intervals */
	}
	assert_true(stats(r).snapshots <= before + 2);
	mar_read_end(rd);
	WAIT_UNTIL(dst_is(rd, ids[4], "ratings"), 3000);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_stop(&s);
}

static void test_event_churn(void **st)
{
	struct standin s;
	struct mar_reader *rd;
	struct mar_resolver *r = streaming(&s, &rd);
	uint64_t syncs = stats(r).sync[MAR_SYNC_OK];

	/* a new task arrives by status_update_event alone */
	const char *nt = RATINGS_TASK;
	task_running(&s, "event", nt);
	WAIT_UNTIL(dst_is(rd, nt, "ratings"), 3000);
	/* and by host IP + port */
	struct attr_value ip = ip4(10, 0, 0, 15), p = port(31600);
	struct mar_query q = {.destination_ip = &ip, .destination_port = &p};
	struct mar_result res;
	mar_read_begin(rd);
	assert_true(mar_lookup(rd, &q, &res));
	mar_read_end(rd);
	/* killed: gone */
	standin_cmdf(&s,
		    "{\"cmd\":\"event\",\"type\":\"status_update_event\","
		    "\"data\":{\"taskId\":\"%s\",\"appId\":\"/ratings\","
		    "\"taskStatus\":\"TASK_KILLED\",\"host\":\"10.0.0.15\"}}",
		    nt);
	WAIT_UNTIL(dst_is(rd, nt, NULL), 3000);
	/* terminal pod instance: gone without a sync */
	standin_cmd0(&s, "{\"cmd\":\"event\",\"type\":\"instance_changed_event\","
			 "\"data\":{\"instanceId\":\"reviews-v2.instance-"
			 "c96bf99f-6a2b-11e9-9d6b-0242ac110003\",\"runSpecId\":"
			 "\"/reviews-v2\",\"condition\":\"Killed\"}}");
	WAIT_UNTIL(dst_is(rd, REVIEWS_POD, NULL), 3000);
	assert_int_equal(stats(r).sync[MAR_SYNC_OK], syncs);
	assert_int_equal(stats(r).pod_instances, 1);
	/* app_terminated_event drops the app */
	standin_cmd0(&s, "{\"cmd\":\"event\",\"type\":\"app_terminated_event\","
			 "\"data\":{\"appId\":\"/shop/frontend/productpage\"}}");
	WAIT_UNTIL(stats(r).apps == 2, 3000);
	/* a deployment invalidates: the resync brings the stand-in's truth
	 * (the pod instance is still there, productpage too) */
	standin_cmd0(&s, "{\"cmd\":\"event\",\"type\":\"deployment_success\","
			 "\"data\":{\"id\":\"d1\"}}");
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_OK] > syncs, 3000);
	WAIT_UNTIL(dst_is(rd, REVIEWS_POD, "reviews-v2"), 3000);
	assert_int_equal(stats(r).apps, 3);
	/* garbage data is counted, the stream lives on */
	standin_cmd0(&s, "{\"cmd\":\"raw\",\"text\":\"event: status_update_"
			 "event\\r\\ndata: {not json\\r\\n\\r\\n\"}");
	WAIT_UNTIL(stats(r).events[MAR_EV_MALFORMED] == 1, 3000);
	/* the upstream sample (CRLF): counted by type */
	uint64_t su = stats(r).events[MAR_EV_STATUS_UPDATE];
	standin_cmd0(&s, "{\"cmd\":\"replay_sample\"}");
	WAIT_UNTIL(stats(r).events[MAR_EV_STATUS_UPDATE] == su + 2, 3000);
	assert_true(stats(r).connected);
	assert_int_equal(stats(r).disconnects[MAR_DISC_ERROR], 0);

	/* The stream asks for the types the model uses, and only those:
	 * health-check events (most of a large cluster's) never come. */
	cJSON *j = standin_cmd(&s, "{\"cmd\":\"stats\"}");
	cJSON *filters = cJSON_GetObjectItem(j, "stream_filters");
	cJSON *last = cJSON_GetArrayItem(filters, cJSON_GetArraySize(filters) - 1);
	assert_int_equal(cJSON_GetArraySize(last), MAR_EV_OTHER);
	for (int e = 0; e < MAR_EV_OTHER; e++) {
		bool asked = false;
		cJSON *t;
		cJSON_ArrayForEach(t, last)
			asked |= !strcmp(t->valuestring,
					 mar_event_name((enum mar_event)e));
		assert_true(asked);
	}
	cJSON_Delete(j);
	uint64_t other = stats(r).events[MAR_EV_OTHER];
	standin_cmd0(&s, "{\"cmd\":\"event\",\"type\":\"health_status_"
			 "changed_event\",\"data\":{\"alive\":false}}");
	/* A deployment's definitions are not read: only "resync" is. */
	syncs = stats(r).sync[MAR_SYNC_OK];
	uint64_t bad = stats(r).events[MAR_EV_MALFORMED];
	standin_cmd0(&s, "{\"cmd\":\"raw\",\"text\":\"event: deployment_"
			 "info\\r\\ndata: {\\\"plan\\\": [unread\\r\\n\\r\\n\"}");
	WAIT_UNTIL(stats(r).events[MAR_EV_DEPLOYMENT_INFO] >= 1, 3000);
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_OK] > syncs, 3000);
	assert_int_equal(stats(r).events[MAR_EV_MALFORMED], bad);
	assert_int_equal(stats(r).events[MAR_EV_OTHER], other);

	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_cmd0(&s, "{\"cmd\":\"stats\"}");
	standin_stop(&s);
}

static void test_outage_keeps_snapshot_and_resyncs(void **st)
{
	struct standin s;
	standin_start(&s, FIXTURE_ARGS " --heartbeat 0.2");
	struct mar_options o = fast_options(addr_of(s.port));
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	struct mar_reader *rd = mar_reader_create(r);
	WAIT_UNTIL(stats(r).synced && stats(r).connected, 5000);
	standin_cmd0(&s, "{\"cmd\":\"down\"}");
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_ERROR] >= 1, 5000);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
	assert_true(stats(r).synced);
	/* Marathon comes back with a changed world: resync on reconnect */
	standin_cmd0(&s, "{\"cmd\":\"remove_app\",\"appId\":\"/ratings\"}");
	standin_cmd0(&s, "{\"cmd\":\"up\"}");
	WAIT_UNTIL(dst_is(rd, "ratings.5dd78972-6771-11e5-94e1-be5b2935a987",
			  NULL),
		   5000);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
	/* a restart (streams dropped) also resyncs */
	uint64_t ok = stats(r).sync[MAR_SYNC_OK];
	WAIT_UNTIL(stats(r).connected, 3000);
	standin_cmd0(&s, "{\"cmd\":\"drop_streams\"}");
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_OK] > ok, 5000);
	assert_true(stats(r).disconnects[MAR_DISC_EOF] +
			    stats(r).disconnects[MAR_DISC_ERROR] >=
		    1);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_stop(&s);
}

/* A resolver on stand-in @s (started with @args) whose stream is declared
 * silent after 400 ms, synced and streaming. */
static struct mar_resolver *silence_watched(struct standin *s,
					    const char *args)
{
	standin_start(s, args);
	struct mar_options o = fast_options(addr_of(s->port));
	o.stream_timeout_ns = 400 * MS;
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).synced && stats(r).connected, 5000);
	return r;
}

static void test_silent_stream_is_dead(void **st)
{
	struct standin s;
	struct mar_resolver *r =
		silence_watched(&s, FIXTURE_ARGS " --heartbeat 0.1");
	/* heartbeats keep it alive well past the timeout */
	usleep(900 * 1000);
	assert_int_equal(stats(r).disconnects[MAR_DISC_SILENT], 0);
	/* (taken before the silence: the reconnect may resync at once; the
	 * refresh is a minute away, so a sync after this is the reconnect's) */
	uint64_t ok = stats(r).sync[MAR_SYNC_OK];
	standin_cmd0(&s, "{\"cmd\":\"silence\",\"on\":true}");
	WAIT_UNTIL(stats(r).disconnects[MAR_DISC_SILENT] >= 1, 3000);
	standin_cmd0(&s, "{\"cmd\":\"silence\",\"on\":false}");
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_OK] > ok, 3000);
	WAIT_UNTIL(stats(r).connected, 3000);
	mar_resolver_stop(r);
	standin_stop(&s);
}

/* A stream that trickles the bytes of one event and never ends a line is
 * silent too: no event and no heartbeat gets through it. (Any byte kept
 * it alive: one a second would have held it for ever.) */
static void test_a_stream_trickling_one_line_is_silent(void **st)
{
	struct standin s;
	struct mar_resolver *r =
		silence_watched(&s, FIXTURE_ARGS " --heartbeat 30");
	standin_cmd0(&s, "{\"cmd\":\"raw\",\"text\":\"data: {\"}");
	for (int i = 0; i < 30 && !stats(r).disconnects[MAR_DISC_SILENT]; i++) {
		standin_cmd0(&s, "{\"cmd\":\"raw\",\"text\":\"x\"}");
		usleep(100 * 1000);
	}
	assert_true(stats(r).disconnects[MAR_DISC_SILENT] >= 1);
	mar_resolver_stop(r);
	standin_stop(&s);
}

static void test_ha_addresses_and_302_to_leader(void **st)
{
	struct standin s;
	standin_start(&s, FIXTURE_ARGS " --follower --heartbeat 0.2 "
				       "--basic mixd:s3cret");
	/* a dead first address, then the standby (with a scheme and '/') */
	char addrs[256];
	snprintf(addrs, sizeof addrs, "127.0.0.1:1, http://127.0.0.1:%d/",
		 s.fport);
	struct mar_options o = fast_options(addrs);
	o.basic_user = "mixd";
	o.basic_password = "s3cret";
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	struct mar_reader *rd = mar_reader_create(r);
	WAIT_UNTIL(stats(r).synced && stats(r).connected, 5000);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
	assert_true(stats(r).sync[MAR_SYNC_ERROR] >= 1);
	/* the standby redirected the apps request; the leader served all,
	 * with the credentials that followed the redirect */
	assert_true(standin_requests(&s, "follower:/v2/apps") >= 1);
	assert_true(standin_requests(&s, "/v2/apps") >= 1);
	assert_true(standin_requests(&s, "/v2/pods/::status") >= 1);
	assert_true(standin_requests(&s, "/v2/events") >= 1);
	cJSON *j = standin_cmd(&s, "{\"cmd\":\"stats\"}");
	assert_int_equal(cJSON_GetObjectItem(j, "auth_failures")->valueint, 0);
	cJSON_Delete(j);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_stop(&s);
}

static void test_auth_basic_token_and_401(void **st)
{
	struct standin s;
	standin_start(&s, FIXTURE_ARGS " --heartbeat 0.2 --token jwt.abc.def");
	struct mar_options o = fast_options(addr_of(s.port));
	o.auth_token = "wrong";
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_UNAUTHORIZED] >= 2, 5000);
	assert_false(stats(r).synced);
	mar_resolver_stop(r);

	/* the token file wins over auth_token */
	char path[] = "/tmp/mixd-test-token-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "jwt.abc.def\n", 12), 12);
	close(fd);
	o.auth_token_file = path;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).synced && stats(r).connected, 5000);
	assert_int_equal(stats(r).sync[MAR_SYNC_UNAUTHORIZED], 0);
	mar_resolver_stop(r);
	unlink(path);

	/* basic auth; credentials in the address become basic auth */
	standin_cmd0(&s, "{\"cmd\":\"auth\",\"basic\":\"zmcc:Zmcc@001\"}");
	char a[128];
	snprintf(a, sizeof a, "http://zmcc:Zmcc@001@127.0.0.1:%d", s.port);
	o = fast_options(a);
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).synced, 5000);
	mar_resolver_stop(r);
	/* a password with a ',' (legal in userinfo), or escaped (%40: '@') */
	standin_cmd0(&s, "{\"cmd\":\"auth\",\"basic\":\"zmcc:Zm,cc@001\"}");
	snprintf(a, sizeof a, "http://zmcc:Zm,cc@001@127.0.0.1:%d", s.port);
	o = fast_options(a);
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).synced, 5000);
	mar_resolver_stop(r);
	snprintf(a, sizeof a, "http://zmcc:Zm%%2Ccc%%40001@127.0.0.1:%d",
		 s.port);
	o = fast_options(a);
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).synced, 5000);
	mar_resolver_stop(r);
	o = fast_options(addr_of(s.port));
	o.basic_user = "zmcc";
	o.basic_password = "nope";
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_UNAUTHORIZED] >= 1, 5000);
	assert_false(stats(r).synced);
	mar_resolver_stop(r);
	standin_stop(&s);
}

/* Addresses and what is said of a bad one: never a password. A ',' in a
 * password is part of it, not the start of another address (the first
 * piece, "http://zmcc:Zm", was taken for one, and printed in every log
 * line); a port must be a number. */
static void test_bad_addresses_are_refused_without_their_passwords(void **st)
{
	(void)st;
	char why[256];
	struct mar_options o = {0};
	static const char *const good[] = {
		"http://zmcc:Zm,cc@001@127.0.0.1:1",
		"http://a:b@127.0.0.1:1,https://c:d@[::1]:2/x",
		"127.0.0.1:1, 127.0.0.2",
		"master.mesos",
	};
	for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
		o.addresses = good[i];
		assert_int_equal(mar_options_check(&o, why, sizeof why), 0);
	}
	static const char *const bad[] = {
		"http://zmcc:S3cret",	     /* a "port" */
		"http://h:1,zmcc:S3cret",    /* likewise, second */
		"http://u:S3cret@h:99999",   /* past 65535 */
		"ftp://u:S3cret@h",
		"http://u:S3cret@[::1",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		o.addresses = bad[i];
		assert_int_equal(mar_options_check(&o, why, sizeof why),
				 -EINVAL);
		assert_non_null(strstr(why, "bad marathon_address entry"));
		assert_null(strstr(why, "S3cret"));
	}
}

/* Lines of @f (read from its start) that hold @needle. */
static int lines_with(FILE *f, const char *needle)
{
	char line[512];
	int n = 0;
	rewind(f);
	while (fgets(line, sizeof line, f))
		n += strstr(line, needle) != NULL;
	return n;
}

/* An auth_token_file that cannot be read, and no Marathon: each trouble
 * said once, not in turns at every retry (the two shared one episode, so
 * each retry's message ended the other's). */
static void test_a_missing_token_file_is_said_once(void **st)
{
	(void)st;
	FILE *log = tmpfile();
	assert_non_null(log);
	struct mar_options o = fast_options("127.0.0.1:1");
	o.auth_token_file = "/nonexistent/mixd-token";
	o.log_file = log;
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_ERROR] >= 4, 10000);
	mar_resolver_stop(r);
	if (getenv("MIXD_TEST_VERBOSE")) {
		char line[512];
		rewind(log);
		while (fgets(line, sizeof line, log))
			fputs(line, stderr);
	}
	assert_int_equal(lines_with(log, "cannot read auth_token_file"), 1);
	assert_int_equal(lines_with(log, "sync from"), 1);
	fclose(log);
}

static int standin_streams(struct standin *s)
{
	cJSON *j = standin_cmd(s, "{\"cmd\":\"stats\"}");
	int n = cJSON_GetObjectItem(j, "streams")->valueint;
	cJSON_Delete(j);
	return n;
}

/* A config reload that changes the mesosenv handler: the running resolver
 * leaves the old Marathon for the new one, with the new credentials; the
 * old snapshot serves until the new one's first sync; settings it cannot
 * use are refused and change nothing. */
static void test_reconfigure_moves_to_new_settings(void **st)
{
	struct standin a, b;
	standin_start(&a, FIXTURE_ARGS " --heartbeat 0.2");
	standin_start(&b, FIXTURE_ARGS " --heartbeat 0.2");
	/* The new Marathon knows no pods, and wants the rotated password. */
	standin_cmd0(&b, "{\"cmd\":\"set\",\"pods\":[]}");
	standin_cmd0(&b, "{\"cmd\":\"auth\",\"basic\":\"zmcc:rotated\"}");
	char addr_a[64], addr_b[64];
	snprintf(addr_a, sizeof addr_a, "127.0.0.1:%d", a.port);
	snprintf(addr_b, sizeof addr_b, "127.0.0.1:%d", b.port);

	struct mar_options o = fast_options(addr_a);
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	struct mar_reader *rd = mar_reader_create(r);
	WAIT_UNTIL(stats(r).synced && stats(r).connected, 5000);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
	assert_int_equal(stats(r).pods, 2);

	/* The same settings again: nothing to do. */
	assert_int_equal(mar_resolver_reconfigure(r, &o), 0);
	/* Unusable ones: refused, the resolver stays where it is. */
	struct mar_options bad = fast_options("ftp://127.0.0.1:1");
	assert_int_equal(mar_resolver_reconfigure(r, &bad), -EINVAL);
	assert_int_equal(mar_resolver_reconfigure(r, &o), 0);
	/* Paused (a reload dropped the handler): the stream closes, nothing
	 * is fetched, the snapshot stays; settings again resume it. */
	assert_int_equal(mar_resolver_reconfigure(r, NULL), 1);
	WAIT_UNTIL(standin_streams(&a) == 0, 5000);
	int paused_apps = standin_requests(&a, "/v2/apps");
	usleep(300 * 1000);
	assert_int_equal(standin_requests(&a, "/v2/apps"), paused_apps);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
	assert_int_equal(mar_resolver_reconfigure(r, NULL), 0);
	assert_int_equal(mar_resolver_reconfigure(r, &o), 1);
	WAIT_UNTIL(standin_streams(&a) == 1, 5000);
	WAIT_UNTIL(standin_requests(&a, "/v2/apps") > paused_apps, 5000);

	/* The wrong password first: the snapshot in force keeps serving. */
	struct mar_options ob = fast_options(addr_b);
	ob.basic_user = "zmcc";
	ob.basic_password = "Zmcc@001";
	assert_int_equal(mar_resolver_reconfigure(r, &ob), 1);
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_UNAUTHORIZED] >= 1, 5000);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
	assert_int_equal(stats(r).pods, 2);
	WAIT_UNTIL(standin_streams(&a) == 0, 5000);

	/* The rotated one: B's snapshot replaces A's. */
	ob.basic_password = "rotated";
	assert_int_equal(mar_resolver_reconfigure(r, &ob), 1);
	WAIT_UNTIL(stats(r).pods == 0, 5000);
	assert_true(dst_is(rd, REVIEWS_POD, NULL));
	WAIT_UNTIL(standin_streams(&b) == 1, 5000);
	int a_apps = standin_requests(&a, "/v2/apps");
	usleep(300 * 1000);
	assert_int_equal(standin_requests(&a, "/v2/apps"), a_apps);

	/* And back. */
	assert_int_equal(mar_resolver_reconfigure(r, &o), 1);
	WAIT_UNTIL(stats(r).pods == 2, 5000);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));

	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_stop(&a);
	standin_stop(&b);
}

static void test_bad_payloads_keep_last_snapshot(void **st)
{
	struct standin s;
	standin_start(&s, FIXTURE_ARGS " --heartbeat 0.2");
	struct mar_options o = fast_options(addr_of(s.port));
	o.refresh_ns = 150 * MS; /* resync often */
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	struct mar_reader *rd = mar_reader_create(r);
	WAIT_UNTIL(stats(r).synced, 5000);
	static const struct {
		const char *mode;
		enum mar_sync_result res;
	} cases[] = {
		{"malformed", MAR_SYNC_MALFORMED},
		{"truncated", MAR_SYNC_TRUNCATED},
		{"500", MAR_SYNC_HTTP_ERROR},
		{"401", MAR_SYNC_UNAUTHORIZED},
	};
	for (size_t i = 0; i < 4; i++) {
		standin_cmdf(&s, "{\"cmd\":\"mode\",\"mode\":\"%s\"}",
			    cases[i].mode);
		WAIT_UNTIL(stats(r).sync[cases[i].res] >= 1, 5000);
		assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
		assert_int_equal(stats(r).tasks, 5);
	}
	standin_cmd0(&s, "{\"cmd\":\"mode\",\"mode\":\"ok\"}");
	uint64_t ok = stats(r).sync[MAR_SYNC_OK];
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_OK] > ok, 5000);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_stop(&s);
}

static void test_real_upstream_fixtures(void **st)
{
	struct standin s;
	standin_start(&s, "--real --heartbeat 0.2");
	struct mar_options o = fast_options(addr_of(s.port));
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	struct mar_reader *rd = mar_reader_create(r);
	WAIT_UNTIL(stats(r).synced, 5000);
	assert_true(stats(r).apps >= 5);
	assert_true(stats(r).tasks >= 3);
	/* nested group app from /v2/tasks: namespace from the group path */
	struct attr_value u =
		str("mesos://tools_docker_registry.002b4d28-46b9-11e5-b731-"
		    "525400cce7ed");
	struct mar_query q = {.source_uid = &u};
	struct mar_result res;
	mar_read_begin(rd);
	assert_true(mar_lookup(rd, &q, &res));
	ASSERT_OUT(&res, MAR_OUT_SOURCE_NAMESPACE, "tools.docker");
	ASSERT_OUT(&res, MAR_OUT_SOURCE_WORKLOAD_NAME, "registry");
	ASSERT_OUT(&res, MAR_OUT_SOURCE_OWNER,
		   "marathon://apps/tools/docker/registry");
	mar_read_end(rd);
	/* the instance-era task of the group app, as the proxies send it */
	assert_true(dst_is(rd,
			   "kubernetes://minecraft_survival-world.instance-"
			   "564bd685-4c30-11e5-98c1-be5b2935a987",
			   "survival-world"));
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_stop(&s);
}

/* A full sync's body is freed once it is parsed: a daemon does not keep
 * a buffer the size of the largest /v2/apps answer (128 MiB at 100,000
 * tasks) for the days between syncs. */
static void test_sync_body_not_kept_after_sync(void **st)
{
	struct standin s;
	standin_start(&s, FIXTURE_ARGS " --heartbeat 0.2");
	standin_cmd0(&s, "{\"cmd\":\"pad\",\"bytes\":8388608}");
	struct mar_options o = fast_options(addr_of(s.port));
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).synced && stats(r).connected, 10000);
	WAIT_UNTIL(mar_resolver_sync_buffer(r) != SIZE_MAX, 2000);
	assert_int_equal(stats(r).tasks, 5);
	assert_int_equal(mar_resolver_sync_buffer(r), 0);
	/* and after a resync, which needs the buffer again */
	uint64_t ok = stats(r).sync[MAR_SYNC_OK];
	standin_cmd0(&s, "{\"cmd\":\"event\",\"type\":\"deployment_success\","
			 "\"data\":{\"id\":\"d1\"}}");
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_OK] > ok, 10000);
	assert_int_equal(mar_resolver_sync_buffer(r), 0);
	assert_int_equal(stats(r).tasks, 5);
	mar_resolver_stop(r);
	standin_stop(&s);
}

/* A full sync's overall limit is far above request_timeout: a body
 * arriving steadily for longer than request_timeout is taken whole (a
 * fixed limit failed every try of a cluster whose answer outgrew it), up
 * to sync_limit; one that stops arriving fails after request_timeout
 * without progress. */
static void test_slow_sync_body_is_not_cut(void **st)
{
	struct standin s;
	standin_start(&s, FIXTURE_ARGS " --heartbeat 0.2");
	/* about 64 KB at 24 KB/s: 2.7 s, against a 1 s request_timeout */
	standin_cmd0(&s, "{\"cmd\":\"pad\",\"bytes\":60000}");
	standin_cmd0(&s, "{\"cmd\":\"pace\",\"rate\":24000}");
	struct mar_options o = fast_options(addr_of(s.port));
	o.request_timeout_ns = 1000 * MS;
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	struct mar_reader *rd = mar_reader_create(r);
	WAIT_UNTIL(stats(r).synced, 10000);
	assert_int_equal(stats(r).sync[MAR_SYNC_ERROR], 0);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
	assert_int_equal(stats(r).tasks, 5);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);

	/* But not for ever: past sync_limit (here 1.5 s), however steadily
	 * it moves, it fails and is tried again. */
	struct mar_options capped = o;
	capped.sync_limit_ns = 1500 * MS;
	assert_int_equal(mar_resolver_start(&capped, &r), 0);
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_ERROR] >= 1, 10000);
	assert_false(stats(r).synced);
	mar_resolver_stop(r);

	/* A body that stalls after 200 bytes fails the sync. (A new
	 * resolver: the one above spaces its resyncs by ten of its slow
	 * syncs.) */
	standin_cmd0(&s, "{\"cmd\":\"pace\",\"rate\":24000,"
			 "\"stall_after\":200}");
	int64_t t0 = mono_ms();
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_ERROR] >= 1, 10000);
	/* within the stall limit and curl's speed window, not never */
	assert_true(mono_ms() - t0 < 8000);
	assert_false(stats(r).synced);
	/* flowing again: synced */
	standin_cmd0(&s, "{\"cmd\":\"pace\",\"rate\":0}");
	WAIT_UNTIL(stats(r).synced, 10000);
	mar_resolver_stop(r);
	standin_stop(&s);
}

/* A pod task's status update (appId: the pod id) is applied without a
 * full sync, in the running resolver as in the model; but for a task
 * running, whose instance may have an address now. */
static void test_pod_task_status_update_no_sync(void **st)
{
	struct standin s;
	struct mar_reader *rd;
	struct mar_resolver *r = streaming(&s, &rd);
	uint64_t syncs = stats(r).sync[MAR_SYNC_OK];
	static const char *const states[] = {"TASK_STAGING", "TASK_KILLED"};
	for (int i = 0; i < 2; i++)
		standin_cmdf(
			&s,
			"{\"cmd\":\"event\",\"type\":\"status_update_event\","
			"\"data\":{\"taskId\":\"reviews-v2.instance-"
			"c96bf99f-6a2b-11e9-9d6b-0242ac110003.reviews\","
			"\"appId\":\"/reviews-v2\",\"taskStatus\":\"%s\","
			"\"host\":\"10.0.0.31\",\"ports\":[9080]}}",
			states[i]);
	/* an app task's update after them: once it is counted, they were
	 * applied */
	task_running(&s, "event", RATINGS_TASK);
	WAIT_UNTIL(stats(r).events[MAR_EV_STATUS_UPDATE] == 3, 3000);
	/* ten resync delays: a resync asked for would have run */
	usleep(500 * 1000);
	assert_int_equal(stats(r).sync[MAR_SYNC_OK], syncs);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
	/* a pod task running: one sync, for the address its instance may
	 * have been given since it staged */
	standin_cmdf(&s,
		     "{\"cmd\":\"event\",\"type\":\"status_update_event\","
		     "\"data\":{\"taskId\":\"reviews-v2.instance-"
		     "c96bf99f-6a2b-11e9-9d6b-0242ac110003.reviews\","
		     "\"appId\":\"/reviews-v2\",\"taskStatus\":\"%s\","
		     "\"host\":\"10.0.0.31\",\"ports\":[9080]}}",
		     "TASK_RUNNING");
	WAIT_UNTIL(stats(r).sync[MAR_SYNC_OK] == syncs + 1, 5000);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_stop(&s);
}

/* A Marathon whose event stream answers 500 (a standby's or an electing
 * leader's answer) while its apps answer: the stream is asked of the
 * next Marathon, not polled from the first for ever. */
/* Two Marathons, the first answering 500 to its event stream and, if
 * @all, to everything: the resolver syncs and asks the second for @path. */
static void second_marathon_asked(bool all, const char *path)
{
	struct standin a, b;
	standin_start(&a, FIXTURE_ARGS " --heartbeat 0.2");
	standin_start(&b, FIXTURE_ARGS " --heartbeat 0.2");
	standin_cmd0(&a, "{\"cmd\":\"events_mode\",\"mode\":\"500\"}");
	if (all)
		standin_cmd0(&a, "{\"cmd\":\"mode\",\"mode\":\"500\"}");
	char addrs[64];
	snprintf(addrs, sizeof addrs, "127.0.0.1:%d,127.0.0.1:%d", a.port,
		 b.port);
	struct mar_options o = fast_options(addrs);
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).synced && standin_requests(&b, path) > 0, 10000);
	mar_resolver_stop(r);
	standin_stop(&a);
	standin_stop(&b);
}

static void test_a_stream_refused_by_one_marathon_is_asked_of_the_next(void **st)
{
	second_marathon_asked(false, "/v2/events");
}

/* A Marathon that answers 500 to everything (one that cannot see
 * ZooKeeper, or a proxy in front of a dead one): the next is asked. Its
 * failed sync and its refused stream are one failed attempt, not two
 * steps along the list, which with two addresses came back to the first
 * every time and never asked the second. */
static void test_a_marathon_failing_everything_is_passed_over(void **st)
{
	second_marathon_asked(true, "/v2/apps");
}

static void test_options(void **st)
{
	struct cfg_handler h;
	memset(&h, 0, sizeof h);
	h.adapter = CFG_ADAPTER_MESOSENV;
	h.mesosenv.marathon_address.s = "master.mesos:8080";
	h.mesosenv.http_basic_auth_user.s = "zmcc";
	h.mesosenv.http_basic_auth_password.s = "Zmcc@001";
	h.mesosenv.cache_refresh_ns = 300000 * MS;
	struct mar_options o;
	assert_int_equal(mar_options_from_handler(&h, NULL, &o), 0);
	assert_string_equal(o.addresses, "master.mesos:8080");
	assert_string_equal(o.basic_user, "zmcc");
	assert_int_equal(o.refresh_ns, 300000 * MS);
	assert_int_equal(mar_options_from_handler(&h, "127.0.0.1:9", &o), 0);
	assert_string_equal(o.addresses, "127.0.0.1:9");
	assert_int_equal(mar_options_from_handler(&h, "", &o), 0);
	assert_string_equal(o.addresses, "master.mesos:8080");
	h.adapter = CFG_ADAPTER_PROMETHEUS;
	assert_int_equal(mar_options_from_handler(&h, NULL, &o), -EINVAL);

	FILE *devnull = fopen("/dev/null", "w");
	struct mar_resolver *r;
	const char *bad[] = {"ftp://x", ",,", "http://", "127.0.0.1:1,:80"};
	for (size_t i = 0; i < 4; i++) {
		o = (struct mar_options){.addresses = bad[i],
					 .log_file = devnull};
		assert_int_equal(mar_resolver_start(&o, &r), -EINVAL);
	}
	o = (struct mar_options){.addresses = "127.0.0.1:1",
				 .ca_file = "/nonexistent/ca.pem",
				 .log_file = devnull};
	assert_int_equal(mar_resolver_start(&o, &r), -EINVAL);
	/* a ca_file a secret gave is not printed; another is */
	for (int secret = 0; secret < 2; secret++) {
		FILE *log = tmpfile();
		assert_non_null(log);
		o = (struct mar_options){.addresses = "127.0.0.1:1",
					 .ca_file = "/nonexistent/SECRET-ca",
					 .ca_file_secret = secret,
					 .log_file = log};
		assert_int_equal(mar_resolver_start(&o, &r), -EINVAL);
		char said[512] = "";
		rewind(log);
		size_t n = fread(said, 1, sizeof said - 1, log);
		said[n] = 0;
		fclose(log);
		assert_non_null(strstr(said, "cannot read ca_file"));
		assert_true((strstr(said, "SECRET-ca") != NULL) == !secret);
	}
	o = (struct mar_options){.addresses = "127.0.0.1:1",
				 .basic_password = "x", .log_file = devnull};
	assert_int_equal(mar_resolver_start(&o, &r), -EINVAL);
	fclose(devnull);
	/* names */
	assert_string_equal(mar_out_name(MAR_OUT_DESTINATION_CONTAINER_NAME),
			    "destination_container_name");
	assert_int_equal(mar_out_find("source_owner", 12),
			 MAR_OUT_SOURCE_OWNER);
	assert_int_equal(mar_out_type(MAR_OUT_SOURCE_LABELS), ATTR_STRING_MAP);
	assert_int_equal(mar_out_type(MAR_OUT_DESTINATION_HOST_IP), ATTR_IP);
	assert_string_equal(mar_sync_result_name(MAR_SYNC_UNAUTHORIZED),
			    "unauthorized");
	assert_string_equal(mar_event_name(MAR_EV_STATUS_UPDATE),
			    "status_update_event");
	assert_string_equal(mar_disconnect_name(MAR_DISC_SILENT), "silent");
}

/* ------------------------------------------------------------------ */
/* Readers on several threads across snapshot swaps */

struct reader_arg {
	struct mar_resolver *r;
	int stop;
	uint64_t lookups, found, wrong;
};

static void *reader_thread(void *p)
{
	struct reader_arg *a = p;
	struct mar_reader *rd = mar_reader_create(a->r);
	struct attr_value u = str(REVIEWS_POD), pp = port(9080);
	struct attr_value src = str("kubernetes://shop_backend_reviews-v2."
				    "instance-0a1b2c3d-6a2b-11e9-9d6b-"
				    "0242ac110003");
	struct mar_query q = {.source_uid = &src, .destination_uid = &u,
			      .destination_port = &pp};
	while (!__atomic_load_n(&a->stop, __ATOMIC_RELAXED)) {
		mar_read_begin(rd);
		for (int i = 0; i < 64; i++) {
			struct mar_result res;
			a->lookups++;
			if (!mar_lookup(rd, &q, &res))
				continue;
			a->found++;
			const struct attr_value *c = mar_result_get(
				&res, MAR_OUT_DESTINATION_CONTAINER_NAME);
			const struct attr_value *n = mar_result_get(
				&res, MAR_OUT_SOURCE_WORKLOAD_NAME);
			if (!c || c->len != 7 || memcmp(c->s, "reviews", 7) ||
			    !n || n->len != 10 || memcmp(n->s, "reviews-v2", 10))
				a->wrong++;
		}
		mar_read_end(rd);
	}
	mar_reader_destroy(rd);
	return NULL;
}

static void test_threaded_readers_across_swaps(void **st)
{
	struct standin s;
	standin_start(&s, FIXTURE_ARGS " --heartbeat 0.2");
	struct mar_options o = fast_options(addr_of(s.port));
	o.publish_interval_ns = 1 * MS;
	struct mar_resolver *r;
	assert_int_equal(mar_resolver_start(&o, &r), 0);
	WAIT_UNTIL(stats(r).synced && stats(r).connected, 5000);
	struct reader_arg args[3] = {{.r = r}, {.r = r}, {.r = r}};
	pthread_t th[3];
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader_thread,
						&args[i]),
				 0);
	/* churn: each event publishes a new snapshot */
	uint64_t snaps = stats(r).snapshots;
	for (int i = 0; i < 40; i++) {
		uint64_t before = stats(r).snapshots;
		standin_cmdf(&s,
			    "{\"cmd\":\"event\",\"type\":\"status_update_event\","
			    "\"data\":{\"taskId\":\"ratings.%08d-6771-11e5\","
			    "\"appId\":\"/ratings\",\"taskStatus\":\"%s\","
			    "\"host\":\"10.0.0.16\",\"ports\":[%d]}}",
			    i / 2, i % 2 ? "TASK_FINISHED" : "TASK_RUNNING",
			    32000 + i);
		/* one swap per event, while the readers read */
		WAIT_UNTIL(stats(r).snapshots > before, 3000);
	}
	assert_true(stats(r).snapshots >= snaps + 40);
	for (int i = 0; i < 3; i++) {
		__atomic_store_n(&args[i].stop, 1, __ATOMIC_RELAXED);
		pthread_join(th[i], NULL);
		assert_true(args[i].found > 0);
		assert_int_equal(args[i].wrong, 0);
		assert_int_equal(args[i].found, args[i].lookups);
	}
	/* readers recycled after destroy */
	struct mar_reader *rd = mar_reader_create(r);
	assert_true(dst_is(rd, REVIEWS_POD, "reviews-v2"));
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	standin_stop(&s);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_snapshot_counts_and_terminal_skipped),
		cmocka_unit_test(test_uid_forms_of_the_users_proxies),
		cmocka_unit_test(test_ip_lookups_by_network_mode),
		cmocka_unit_test(test_status_updates_are_bounded),
		cmocka_unit_test(test_an_unknown_task_is_gone),
		cmocka_unit_test(test_a_container_pod_without_an_address_claims_no_ip),
		cmocka_unit_test(test_a_host_pod_listing_its_agents_address_claims_it_as_host),
		cmocka_unit_test(test_an_app_named_like_an_instance_keeps_its_tasks_apart),
		cmocka_unit_test(test_a_marathon_failing_everything_is_passed_over),
		cmocka_unit_test(test_host_ip_shared_with_bridge_tasks),
		cmocka_unit_test(test_host_cache_follows_the_cluster),
		cmocka_unit_test(test_host_cache_when_dns_is_down),
		cmocka_unit_test(test_destination_port_picks_container),
		cmocka_unit_test(test_lookup_rules),
		cmocka_unit_test(test_malformed_entries_skipped),
		cmocka_unit_test(test_pod_task_status_update_needs_no_resync),
		cmocka_unit_test(test_an_app_terminated_before_its_id_came_back_stays),
		cmocka_unit_test(test_sse_fixture_any_split_lf_and_crlf),
		cmocka_unit_test(test_sse_oversized_event_fails),
		cmocka_unit_test(test_sse_skips_unread_data),
		cmocka_unit_test(test_reader_cache_agrees_with_snapshot),
		cmocka_unit_test(test_reader_cache_under_eviction),
		cmocka_unit_test(test_reader_cache_tag_collision),
		cmocka_unit_test(test_reader_cache_tag_collision_all_present),
		cmocka_unit_test(test_options),
		cmocka_unit_test(test_marathon_down_at_start_then_sync),
		cmocka_unit_test(test_event_churn),
		cmocka_unit_test(test_event_during_sync_survives_it),
		cmocka_unit_test(test_resyncs_are_spaced_by_their_cost),
		cmocka_unit_test(test_a_stuck_reader_holds_at_most_two_snapshots),
		cmocka_unit_test(test_outage_keeps_snapshot_and_resyncs),
		cmocka_unit_test(test_silent_stream_is_dead),
		cmocka_unit_test(test_a_stream_trickling_one_line_is_silent),
		cmocka_unit_test(test_ha_addresses_and_302_to_leader),
		cmocka_unit_test(test_auth_basic_token_and_401),
		cmocka_unit_test(test_a_missing_token_file_is_said_once),
		cmocka_unit_test(
			test_bad_addresses_are_refused_without_their_passwords),
		cmocka_unit_test(test_reconfigure_moves_to_new_settings),
		cmocka_unit_test(test_bad_payloads_keep_last_snapshot),
		cmocka_unit_test(test_real_upstream_fixtures),
		cmocka_unit_test(test_sync_body_not_kept_after_sync),
		cmocka_unit_test(test_slow_sync_body_is_not_cut),
		cmocka_unit_test(test_pod_task_status_update_no_sync),
		cmocka_unit_test(test_a_stream_refused_by_one_marathon_is_asked_of_the_next),
		cmocka_unit_test(test_threaded_readers_across_swaps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
