/*
 * bench_marathon -- the Marathon resolver's two costs:
 *   1. snapshot build from /v2/apps?embed=apps.tasks JSON for 10,000 apps
 *      (three-level groups, 3 labels) with 100,000 tasks (container
 *      network, 1,000 agents as literal IPs): parse time, build time and
 *      the snapshot's resident memory;
 *   2. mar_lookup() per record with the reader's cache warm: a record
 *      carries source uid, destination uid and destination port in the
 *      user's proxies' form (kubernetes://<instance id>), over a working
 *      set of 256 (source, destination) pairs, reading three outputs.
 *
 * Instructions per lookup (the repeatable measure on a shared machine):
 *	MIXD_BENCH_LOOKUPS=100000 valgrind --tool=callgrind \
 *		--toggle-collect=mar_lookup build/bench/bench_marathon
 * then divide mar_lookup's inclusive Ir by 5 x MIXD_BENCH_LOOKUPS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "marathon/mar_internal.h"

#define APPS 10000
#define TASKS_PER_APP 10
#define PAIRS 256
#define LOOKUPS 4000000 /* per run, unless $MIXD_BENCH_LOOKUPS */

static char *gen_json(size_t *len)
{
	size_t cap = (size_t)APPS * TASKS_PER_APP * 400 + APPS * 600;
	char *b = malloc(cap), *p = b;
	p += sprintf(p, "{\"apps\":[");
	for (int a = 0; a < APPS; a++) {
		p += sprintf(p,
			     "%s{\"id\":\"/g%d/s%d/app%d\",\"labels\":{\"app\":"
			     "\"app%d\",\"version\":\"v%d\",\"istio.io/"
			     "service-account\":\"sa%d\"},\"networks\":[{"
			     "\"mode\":\"container\",\"name\":\"dcos\"}],"
			     "\"container\":{\"portMappings\":[{"
			     "\"containerPort\":9080,\"hostPort\":0}]},"
			     "\"tasks\":[",
			     a ? "," : "", a % 100, a % 7, a, a, a % 3, a);
		for (int t = 0; t < TASKS_PER_APP; t++) {
			int n = a * TASKS_PER_APP + t, h = n % 1000;
			p += sprintf(p,
				     "%s{\"id\":\"g%d_s%d_app%d.instance-%08x-"
				     "6a2b-11e9-9d6b-0242ac110003._app.1\","
				     "\"appId\":\"/g%d/s%d/app%d\",\"host\":"
				     "\"10.1.%d.%d\",\"state\":\"TASK_RUNNING\","
				     "\"ports\":[%d],\"ipAddresses\":[{"
				     "\"ipAddress\":\"9.%d.%d.%d\",\"protocol\":"
				     "\"IPv4\"}]}",
				     t ? "," : "", a % 100, a % 7, a, n, a % 100,
				     a % 7, a, h / 256, h % 256,
				     31000 + n % 1000, (n >> 16) & 255,
				     (n >> 8) & 255, n & 255);
		}
		p += sprintf(p, "]}");
	}
	p += sprintf(p, "]}");
	*len = (size_t)(p - b);
	return b;
}

int main(void)
{
	int runs = bench_runs(5);
	/* $MIXD_BENCH_LOOKUPS shortens the lookup runs, for callgrind */
	const int lookups = (int)bench_env("MIXD_BENCH_LOOKUPS", LOOKUPS);
	bench_header("bench_marathon",
		     "10,000 apps / 100,000 tasks (container network, 3 labels, "
		     "nested groups); lookups: src uid + dst uid + dst port, "
		     "256 pairs, cache warm");
	size_t len;
	char *json = gen_json(&len);
	printf("apps JSON: %.1f MiB\n", (double)len / (1 << 20));

	double parse_ms[32], build_ms[32], rss_mib[32];
	struct mar_snap *keep = NULL;
	for (int i = 0; i < runs && i < 32; i++) {
		long rss0 = bench_rss_kib();
		uint64_t t0 = bench_now_ns();
		cJSON *apps = mar_parse_apps(json, len);
		uint64_t t1 = bench_now_ns();
		struct mar_snap *s = NULL;
		if (!apps || mar_snap_build(apps, NULL, NULL, &s, NULL) < 0) {
			fprintf(stderr, "build failed\n");
			return 1;
		}
		uint64_t t2 = bench_now_ns();
		cJSON_Delete(apps);
		/* what stays resident: the snapshot alone */
		rss_mib[i] = (double)(bench_rss_kib() - rss0) / 1024.0;
		parse_ms[i] = (double)(t1 - t0) / 1e6;
		build_ms[i] = (double)(t2 - t1) / 1e6;
		if (s->tasks != (uint64_t)APPS * TASKS_PER_APP) {
			fprintf(stderr, "tasks %lu\n", (unsigned long)s->tasks);
			return 1;
		}
		if (keep)
			mar_snap_free(s);
		else
			keep = s;
	}
	int n = runs < 32 ? runs : 32;
	bench_report("JSON parse (cJSON)", parse_ms, n, "ms");
	bench_report("snapshot build", build_ms, n, "ms");
	bench_report("snapshot RSS growth", rss_mib, n, "MiB");

	/* lookups through a real reader on an injected snapshot */
	struct mar_options o = {.addresses = "127.0.0.1:1",
				.backoff_min_ns = 10000000000ll,
				.log_file = fopen("/dev/null", "w")};
	struct mar_resolver *r;
	if (mar_resolver_start(&o, &r) < 0 || mar_resolver_inject(r, keep)) {
		fprintf(stderr, "resolver\n");
		return 1;
	}
	static char uids[2 * PAIRS][128];
	static struct attr_value su[PAIRS], du[PAIRS];
	struct attr_value port = {.type = ATTR_INT64, .i = 9080};
	for (int i = 0; i < PAIRS; i++) {
		int a = (i * 37) % APPS, b = (i * 91 + 5) % APPS;
		int na = a * TASKS_PER_APP + i % 10, nb = b * TASKS_PER_APP;
		snprintf(uids[2 * i], 128,
			 "kubernetes://g%d_s%d_app%d.instance-%08x-6a2b-11e9-"
			 "9d6b-0242ac110003",
			 a % 100, a % 7, a, na);
		snprintf(uids[2 * i + 1], 128,
			 "kubernetes://g%d_s%d_app%d.instance-%08x-6a2b-11e9-"
			 "9d6b-0242ac110003",
			 b % 100, b % 7, b, nb);
		su[i] = (struct attr_value){.type = ATTR_STRING,
					    .len = (uint32_t)strlen(uids[2 * i]),
					    .s = uids[2 * i]};
		du[i] = (struct attr_value){
			.type = ATTR_STRING,
			.len = (uint32_t)strlen(uids[2 * i + 1]),
			.s = uids[2 * i + 1]};
	}
	struct mar_reader *rd = mar_reader_create(r);
	double ns[32], cpu[32];
	uint64_t sink = 0;
	struct timespec c0, c1;
	for (int run = 0; run < n; run++) {
		mar_read_begin(rd);
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
		uint64_t t0 = bench_now_ns();
		for (int i = 0; i < lookups; i++) {
			int k = i & (PAIRS - 1);
			struct mar_query q = {.source_uid = &su[k],
					      .destination_uid = &du[k],
					      .destination_port = &port};
			struct mar_result res;
			if (!mar_lookup(rd, &q, &res))
				abort();
			sink += mar_result_get(&res,
					       MAR_OUT_SOURCE_WORKLOAD_NAME)
					->len;
			sink += mar_result_get(&res,
					       MAR_OUT_DESTINATION_WORKLOAD_NAME)
					->len;
			sink += mar_result_get(
					&res, MAR_OUT_DESTINATION_CONTAINER_NAME)
					->len;
		}
		uint64_t t1 = bench_now_ns();
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
		mar_read_end(rd);
		ns[run] = (double)(t1 - t0) / lookups;
		/* CPU time too: on a shared machine wall time includes time
		 * the scheduler gave to others */
		cpu[run] = ((double)(c1.tv_sec - c0.tv_sec) * 1e9 +
			    (double)(c1.tv_nsec - c0.tv_nsec)) /
			   lookups;
	}
	bench_report("lookup per record (warm cache), wall", ns, n, "ns");
	bench_report("lookup per record (warm cache), thread CPU", cpu, n,
		     "ns");
	printf("(checksum %lu)\n", (unsigned long)sink);
	mar_reader_destroy(rd);
	mar_resolver_stop(r);
	free(json);
	return 0;
}
