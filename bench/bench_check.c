/*
 * bench_check -- checks through the real pieces: libmixd's checker in
 * client threads, mixd's policy server thread (decode, Istio's sample
 * policies, answer) in the same process, over the unix socket.
 *
 * A request is a proxy's attributes for the sample rules (labels,
 * addresses, path, service) and one quota with a deduplication id, so
 * every check goes to mixd (grants are never cached). Cases:
 *
 *   1, 2  one and two client threads, each sending one check at a time
 *         and waiting for its answer (mixd_check(), the blocking call);
 *   3, 4  one and two client threads, each keeping PIPELINE checks in
 *         flight on its connection (mixd_check_async() and
 *         mixd_checker_dispatch(), as a proxy's event loop would);
 *   5     one client thread, blocking, the same request without a quota:
 *         the checker's cache answers all but the first two;
 *   6     two client threads, each an event loop over CONNS connections
 *         (a checker each, DEPTH checks in flight on each): epoll over
 *         their mixd_checker_fd()s, mixd_checker_dispatch() on those
 *         that are readable.
 *
 * Reported per run: checks a second (all clients together) and the
 * latency of a check, p50 and p99, from the call that asks to the answer
 * (the callback, for the asynchronous cases).
 *
 * MIXD_BENCH_CASE=K runs case K alone. MIXD_BENCH_CHECKS sets the checks
 * per client per run (default 50,000; ten times that for case 5).
 */
#include <pthread.h>
#include <sys/epoll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mixd/client.h>

#include "bench_util.h"
#include "config/config.h"
#include "policy/pol_server.h"
#include "policy/policy.h"

/* Istio's samples (tests/fixtures/policy), inline: a denier by label, an
 * IP whitelist at the ingress, productpage's rate limit. */
static const char policy_yaml[] =
	"kind: handler\n"
	"metadata: {name: denyreviewsv3handler, namespace: istio-system}\n"
	"spec: {compiledAdapter: denier, params: {status: {code: 7, message: "
	"Not allowed}}}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: denyreviewsv3request, namespace: istio-system}\n"
	"spec: {compiledTemplate: checknothing}\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: denyreviewsv3, namespace: istio-system}\n"
	"spec:\n"
	"  match: destination.labels[\"app\"] == \"ratings\" && "
	"source.labels[\"app\"]==\"reviews\" && source.labels[\"version\"] == "
	"\"v3\"\n"
	"  actions: [{handler: denyreviewsv3handler, instances: "
	"[denyreviewsv3request]}]\n"
	"---\n"
	"kind: handler\n"
	"metadata: {name: whitelistip, namespace: istio-system}\n"
	"spec: {compiledAdapter: listchecker, params: {overrides: "
	"[\"10.57.0.0/16\"], blacklist: false, entryType: IP_ADDRESSES}}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: sourceip, namespace: istio-system}\n"
	"spec: {compiledTemplate: listentry, params: {value: source.ip | "
	"ip(\"0.0.0.0\")}}\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: checkip, namespace: istio-system}\n"
	"spec:\n"
	"  match: source.labels[\"istio\"] == \"ingressgateway\"\n"
	"  actions: [{handler: whitelistip, instances: [sourceip]}]\n"
	"---\n"
	"kind: handler\n"
	"metadata: {name: quotahandler, namespace: istio-system}\n"
	"spec:\n"
	"  compiledAdapter: memquota\n"
	"  params:\n"
	"    quotas:\n"
	"    - name: requestcountquota.instance.istio-system\n"
	"      maxAmount: 1000000000\n"
	"      validDuration: 1s\n"
	"      overrides: [{dimensions: {destination: reviews}, maxAmount: 1, "
	"validDuration: 5s}]\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: requestcountquota, namespace: istio-system}\n"
	"spec:\n"
	"  compiledTemplate: quota\n"
	"  params:\n"
	"    dimensions:\n"
	"      source: request.headers[\"x-forwarded-for\"] | \"unknown\"\n"
	"      destination: destination.labels[\"app\"] | "
	"destination.service.name | \"unknown\"\n"
	"      destinationVersion: destination.labels[\"version\"] | "
	"\"unknown\"\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: quota, namespace: istio-system}\n"
	"spec: {actions: [{handler: quotahandler, instances: "
	"[requestcountquota]}]}\n";

#define PIPELINE 64
#define CONNS 8
#define DEPTH 8

static char address[160];
static long checks_per_client;

enum mode { BLOCKING, PIPELINED, CACHED, MANY };

struct client_run {
	enum mode mode;
	double *lat_ns; /* each check's latency */
	long n;
	int failed;
	long answered;	 /* PIPELINED, MANY: callbacks run */
	long conn_answered[CONNS]; /* MANY: per connection */
	uint64_t *sent;	 /* PIPELINED: when check i was asked */
};

/* A pipelined check: which run, which check, on which connection. */
struct ticket {
	struct client_run *cr;
	long i;
	int conn;
};

static void on_answer(void *arg, int rc, const struct mixd_check_answer *a)
{
	const struct ticket *t = arg;
	struct client_run *cr = t->cr;
	cr->lat_ns[t->i] = (double)(bench_now_ns() - cr->sent[t->i]);
	if (rc || a->code != 0 || a->n_quotas != 1 || a->quotas[0].granted != 1)
		cr->failed = 1;
	cr->answered++;
	cr->conn_answered[t->conn]++;
}

/* A deduplication id unique to (@cr, @i), as a proxy's request id: hex,
 * without printf's cost, which would be a tenth of a pipelined check. */
static void make_id(char *o, const struct client_run *cr, long i)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t a = (uint64_t)(uintptr_t)cr, b = (uint64_t)i;
	for (int k = 15; k >= 0; k--, a >>= 4)
		o[k] = hex[a & 15];
	o[16] = '-';
	for (int k = 32; k >= 17; k--, b >>= 4)
		o[k] = hex[b & 15];
	o[33] = 0;
}

/* Case 6: an event loop over CONNS checkers. */
static void many(struct client_run *cr, const struct mixd_value *v,
		 size_t nv, const struct mixd_check_quota *q)
{
	mixd_checker *ks[CONNS];
	long asked[CONNS] = {0};
	int ep = epoll_create1(0);
	for (int c = 0; c < CONNS; c++) {
		if (mixd_checker_open(address, NULL, &ks[c]))
			abort();
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)c};
		epoll_ctl(ep, EPOLL_CTL_ADD, mixd_checker_fd(ks[c]), &ev);
	}
	struct ticket *t = malloc((size_t)cr->n * sizeof(*t));
	cr->sent = malloc((size_t)cr->n * sizeof(*cr->sent));
	if (!t || !cr->sent)
		abort();
	long next = 0;
	char id[40];
	while (cr->answered < cr->n) {
		for (int c = 0; c < CONNS; c++)
			while (next < cr->n &&
			       asked[c] - cr->conn_answered[c] < DEPTH) {
				make_id(id, cr, next);
				t[next] = (struct ticket){cr, next, c};
				cr->sent[next] = bench_now_ns();
				mixd_check_async(ks[c], v, nv, id, q, 1, 1000,
						 on_answer, &t[next]);
				asked[c]++;
				next++;
			}
		struct epoll_event evs[CONNS];
		int n = epoll_wait(ep, evs, CONNS, 1000);
		for (int i = 0; i < n; i++)
			mixd_checker_dispatch(ks[evs[i].data.u32], 0);
	}
	for (int c = 0; c < CONNS; c++)
		mixd_checker_close(ks[c]);
	close(ep);
	free(t);
	free(cr->sent);
}

static void *client(void *arg)
{
	struct client_run *cr = arg;
	mixd_checker *k;
	if (mixd_checker_open(address, NULL, &k)) {
		cr->failed = 1;
		return NULL;
	}
	static const struct mixd_kv src[] = {
		{"app", 3, "productpage", 11},
		{"version", 7, "v1", 2},
		{"istio", 5, "ingressgateway", 14}};
	static const struct mixd_kv dst[] = {{"app", 3, "details", 7},
					     {"version", 7, "v1", 2}};
	uint8_t ip[4] = {10, 57, 3, 4};
#define STR(id, s)                                                           \
	{.attr = (id), .type = MIXD_T_STRING, .len = sizeof(s) - 1, .p = (s)}
	struct mixd_value v[] = {
		{.attr = MIXD_ATTR_SOURCE_LABELS, .type = MIXD_T_STRING_MAP,
		 .len = 3, .map = src},
		{.attr = MIXD_ATTR_DESTINATION_LABELS,
		 .type = MIXD_T_STRING_MAP, .len = 2, .map = dst},
		{.attr = MIXD_ATTR_SOURCE_IP, .type = MIXD_T_IP, .len = 4,
		 .p = ip},
		STR(MIXD_ATTR_DESTINATION_SERVICE_NAME, "details"),
		STR(MIXD_ATTR_REQUEST_PATH, "/details/0"),
		STR(MIXD_ATTR_CONTEXT_PROTOCOL, "http"),
	};
#undef STR
	const size_t nv = sizeof(v) / sizeof(v[0]);
	struct mixd_check_quota q = {"requestcountquota", 1, 0};
	struct mixd_check_answer a;
	char id[40];
	if (cr->mode == MANY)
		many(cr, v, nv, &q);
	if (cr->mode == PIPELINED) {
		struct ticket *t = malloc((size_t)cr->n * sizeof(*t));
		cr->sent = malloc((size_t)cr->n * sizeof(*cr->sent));
		if (!t || !cr->sent)
			abort();
		long asked = 0;
		while (cr->answered < cr->n) {
			while (asked < cr->n && asked - cr->answered < PIPELINE) {
				make_id(id, cr, asked);
				t[asked] = (struct ticket){cr, asked, 0};
				cr->sent[asked] = bench_now_ns();
				mixd_check_async(k, v, nv, id, &q, 1, 1000,
						 on_answer, &t[asked]);
				asked++;
			}
			mixd_checker_dispatch(k, 1000);
		}
		free(t);
		free(cr->sent);
	}
	for (long i = 0; cr->mode == BLOCKING || cr->mode == CACHED ? i < cr->n
								   : 0;
	     i++) {
		make_id(id, cr, i);
		bool cached = cr->mode == CACHED;
		uint64_t t0 = bench_now_ns();
		int rc = mixd_check(k, v, nv, cached ? NULL : id,
				    cached ? NULL : &q, cached ? 0 : 1, 1000,
				    &a);
		cr->lat_ns[i] = (double)(bench_now_ns() - t0);
		if (rc || a.code != 0 || (!cached && a.quotas[0].granted != 1))
			cr->failed = 1;
	}
	mixd_checker_close(k);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* One run of @nc clients: checks a second, and p50 / p99 in µs. */
static void run(int nc, enum mode mode, long each, double *rate, double *p50,
		double *p99)
{
	pthread_t t[8];
	struct client_run cr[8];
	long total = (long)nc * each;
	double *lat = malloc((size_t)total * sizeof(*lat));
	if (!lat)
		abort();
	uint64_t t0 = bench_now_ns();
	for (int i = 0; i < nc; i++) {
		cr[i] = (struct client_run){.mode = mode,
					    .lat_ns = lat + i * each,
					    .n = each};
		pthread_create(&t[i], NULL, client, &cr[i]);
	}
	for (int i = 0; i < nc; i++) {
		pthread_join(t[i], NULL);
		if (cr[i].failed) {
			fprintf(stderr, "bench_check: a check failed\n");
			exit(1);
		}
	}
	double secs = (double)(bench_now_ns() - t0) / 1e9;
	qsort(lat, (size_t)total, sizeof(*lat), cmp_double);
	*rate = (double)total / secs;
	*p50 = lat[total / 2] / 1e3;
	*p99 = lat[total * 99 / 100] / 1e3;
	free(lat);
}

static const struct {
	int clients;
	enum mode mode;
	const char *name;
} cases[] = {
	{1, BLOCKING, "1 client, blocking"},
	{2, BLOCKING, "2 clients, blocking"},
	{1, PIPELINED, "1 client, 64 in flight"},
	{2, PIPELINED, "2 clients, 64 in flight each"},
	{1, CACHED, "1 client, blocking, cached"},
	{2, MANY, "2 clients, 8 connections each, 8 in flight on each"},
};

int main(void)
{
	int runs = bench_runs(5);
	checks_per_client = bench_env("MIXD_BENCH_CHECKS", 50000);
	const long only = bench_env("MIXD_BENCH_CASE", 0);
	char workload[400];
	snprintf(workload, sizeof(workload),
		 "libmixd checker -> unix socket -> mixd policy thread; "
		 "Istio's sample policies (denier, IP list, memquota), 6 "
		 "attributes + 1 quota with a dedup id (no quota in the cached "
		 "case); %ld checks a client a run (x10 cached)",
		 checks_per_client);
	bench_header("bench_check", workload);
	char dir[] = "/tmp/bench_check.XXXXXX";
	if (!mkdtemp(dir))
		abort();
	snprintf(address, sizeof(address), "unix://%s/policy.sock", dir);
	struct cfg *c = cfg_load_buffer("bench.yaml", policy_yaml,
					sizeof(policy_yaml) - 1, NULL);
	pol_validate(c);
	if (!cfg_ok(c)) {
		cfg_print_diagnostics(c, stderr);
		return 1;
	}
	struct pol_engine *e;
	struct pol_server *srv;
	char err[256];
	if (pol_engine_create(c, NULL, &e) ||
	    pol_server_start(address, e, 0, &srv, err, sizeof(err))) {
		fprintf(stderr, "bench_check: %s\n", err);
		return 1;
	}
	cfg_destroy(c);

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		if (only && only != (long)k + 1)
			continue;
		double rate[BENCH_RUNS_MAX], p50[BENCH_RUNS_MAX],
			p99[BENCH_RUNS_MAX];
		long each = checks_per_client *
			    (cases[k].mode == CACHED ? 10 : 1);
		for (int i = 0; i < runs; i++)
			run(cases[k].clients, cases[k].mode, each, &rate[i],
			    &p50[i], &p99[i]);
		char label[96];
		snprintf(label, sizeof(label), "%s, checks/s", cases[k].name);
		bench_report(label, rate, runs, "checks/s");
		snprintf(label, sizeof(label), "%s, latency p50",
			 cases[k].name);
		bench_report(label, p50, runs, "us");
		snprintf(label, sizeof(label), "%s, latency p99",
			 cases[k].name);
		bench_report(label, p99, runs, "us");
	}
	pol_server_stop(srv);
	rmdir(dir);
	return 0;
}
