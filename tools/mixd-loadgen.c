/*
 * mixd-loadgen -- realistic service-mesh telemetry through libmixd.
 *
 * Simulates a small mesh on Marathon (Istio's bookinfo: an ingress gateway,
 * productpage, details, reviews v1/v2/v3, ratings and mongodb, plus
 * generated backends with --workloads) whose workloads call each other over
 * http, grpc and tcp. Each simulated call produces the two records a pair of
 * Envoy proxies report: one with context.reporter.kind "outbound" from the
 * caller's proxy and one "inbound" from the callee's, carrying Mixer's
 * attribute vocabulary with uids in the form the user's proxies send
 * (kubernetes://<Marathon task id without its last .suffix>).
 *
 * Records go through mixd_report(), the array API, at a steady rate (a token
 * bucket per thread; threads sleep between refills, never spin). With --print
 * the records are written as JSON lines mixd-report accepts instead.
 *
 * The tool links libmixd, libc and libm only, as a proxy embedding the
 * library would.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mixd/client.h>

#define EXIT_FLUSH 1
#define EXIT_USAGE 2

#define SUMMARY_EVERY_NS (10 * NS_PER_S)
#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
/* A thread wakes at most this often: at 1 ms a thread sending 1M records/s
 * writes ~1000 per wakeup, which keeps syscalls off the per-record path. */
#define MIN_TICK_NS NS_PER_MS
/* ...and at least this often, so that a stop request is seen promptly even
 * at a rate of a few records per second. */
#define MAX_TICK_NS (100 * NS_PER_MS)
/* Debt the bucket may hold: after a stall (SIGSTOP, an overloaded machine)
 * the thread resumes at the rate instead of bursting to catch up. */
#define BURST_NS (50 * NS_PER_MS)

#define MAX_VALUES 40
#define BOOKINFO_WORKLOADS 8
#define MAX_WORKLOADS 1000
#define MAX_INSTANCES 3

struct options {
	const char *address;
	struct mixd_client_options client;
	double rate;	   /* records per second */
	double duration_s; /* 0: until a signal */
	unsigned threads;
	uint64_t seed;
	unsigned workloads;
	uint64_t count; /* records; 0: unlimited */
	int flush_timeout_ms;
	bool print;
	bool rate_set;
};

/* ---- random numbers ------------------------------------------------------ */

/* xoshiro256**: fast, good enough for traffic shapes, and reproducible from a
 * seed on every platform (rand_r is neither). */
struct rng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

/* uniform in [0, 1) */
static double rng_unit(struct rng *r)
{
	return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static uint32_t rng_below(struct rng *r, uint32_t n)
{
	return (uint32_t)(((rng_next(r) >> 32) * n) >> 32);
}

/*
 * A standard normal variate as the sum of twelve uniforms minus six
 * (Irwin-Hall): mean 0, variance 1, tails to +-6 sigma, which is plenty for
 * latency shapes, and needs neither log() nor sqrt(). Three draws give the
 * twelve 16-bit uniforms.
 */
static double rng_normal(struct rng *r)
{
	double sum = 0;
	for (int i = 0; i < 3; i++) {
		uint64_t x = rng_next(r);
		for (int k = 0; k < 4; k++, x >>= 16)
			sum += (double)(x & 0xffff);
	}
	return sum / 65536.0 - 6.0;
}

/* log-normal with median @median and shape @sigma */
static double rng_lognormal(struct rng *r, double median, double sigma)
{
	return median * exp(sigma * rng_normal(r));
}

/* ---- the simulated mesh ---------------------------------------------------
 */

enum proto { P_HTTP, P_GRPC, P_TCP };

static const char *const proto_name[] = {"http", "grpc", "tcp"};

struct workload {
	char app[32];
	char version[8];
	char safe_id[48];      /* Marathon app id, / -> _ */
	char host[80];	       /* destination.service.host */
	char principal[96];    /* the identity mTLS presents */
	char request_host[48]; /* Host header callers send */
	int port;
	enum proto proto;
	double median_ms, sigma; /* server-side latency */
	double resp_bytes;	 /* median response size */
	double err_404, err_5xx; /* probabilities */
	unsigned ninst;
	char uid[MAX_INSTANCES][128];
	uint8_t ip[MAX_INSTANCES][4];
	struct mixd_kv labels[3];
};

struct path_choice {
	const char *method;
	const char *path;
	double weight;
};

struct edge {
	unsigned from, to;
	double weight; /* share of the calls */
	const struct path_choice *paths;
	unsigned npaths;
};

struct mesh {
	struct workload *w;
	unsigned nw;
	struct edge *e;
	unsigned ne;
	double total_weight;
};

/* The bookinfo set, in an order where any prefix is a connected mesh. */
static const struct {
	const char *app, *version;
	int port;
	enum proto proto;
	double median_ms, sigma, resp_bytes, err_404, err_5xx;
	unsigned ninst;
} bookinfo[BOOKINFO_WORKLOADS] = {
	{"istio-ingressgateway", "v1", 80, P_HTTP, 1, 0.3, 0, 0, 0, 2},
	{"productpage", "v1", 9080, P_HTTP, 28, 0.45, 5200, 0.02, 0.01, 2},
	{"details", "v1", 9080, P_HTTP, 3, 0.35, 178, 0.005, 0.004, 2},
	{"reviews", "v1", 9080, P_HTTP, 6, 0.4, 295, 0.003, 0.005, 2},
	{"ratings", "v1", 9080, P_GRPC, 2, 0.35, 48, 0.01, 0.005, 2},
	{"reviews", "v2", 9080, P_HTTP, 12, 0.5, 379, 0.003, 0.006, 2},
	/* the version that misbehaves: slow and failing more often */
	{"reviews", "v3", 9080, P_HTTP, 35, 0.8, 375, 0.003, 0.04, 1},
	{"mongodb", "v1", 27017, P_TCP, 1, 0.5, 900, 0, 0, 1},
};

static const struct path_choice pp_paths[] = {
	{"GET", "/productpage", 0.85},
	{"GET", "/static/bootstrap/css/bootstrap.min.css", 0.06},
	{"POST", "/login", 0.03},
	{"GET", "/logout", 0.02},
	{"GET", "/api/v1/products", 0.04},
};
static const struct path_choice details_paths[] = {
	{"GET", "/details/0", 1},
};
static const struct path_choice reviews_paths[] = {
	{"GET", "/reviews/0", 1},
};
static const struct path_choice ratings_paths[] = {
	{"POST", "/ratings.Ratings/GetRatings", 0.95},
	{"POST", "/ratings.Ratings/PostRating", 0.05},
};
static const struct path_choice backend_http_paths[] = {
	{"GET", "/api/v1/items", 0.7},
	{"POST", "/api/v1/items", 0.2},
	{"DELETE", "/api/v1/items/1", 0.1},
};
static const struct path_choice backend_grpc_paths[] = {
	{"POST", "/backend.Backend/Get", 0.8},
	{"POST", "/backend.Backend/Put", 0.2},
};
static const struct path_choice tcp_paths[] = {{NULL, NULL, 1}};

#define NPATHS(a) (unsigned)(sizeof(a) / sizeof((a)[0]))

static void format_uuid(struct rng *r, char out[37])
{
	static const char hex[] = "0123456789abcdef";
	uint64_t a = rng_next(r), b = rng_next(r);
	/* RFC 4122 version 4, variant 1, as Marathon's instance ids are */
	a = (a & ~0xf000ULL) | 0x4000ULL;
	b = (b & ~(3ULL << 62)) | (2ULL << 62);
	uint8_t bytes[16];
	for (int i = 0; i < 8; i++) {
		bytes[i] = (uint8_t)(a >> (56 - 8 * i));
		bytes[8 + i] = (uint8_t)(b >> (56 - 8 * i));
	}
	int o = 0;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[bytes[i] >> 4];
		out[o++] = hex[bytes[i] & 15];
	}
	out[o] = 0;
}

static void workload_init(struct workload *w, unsigned index, struct rng *r)
{
	/* safeId "reviews-v2" for app /reviews-v2: one Marathon app or pod
	 * per version, as the user's deployment does; the gateway is one
	 * unversioned app */
	if (index == 0)
		snprintf(w->safe_id, sizeof w->safe_id, "%s", w->app);
	else
		snprintf(w->safe_id, sizeof w->safe_id, "%s-%s", w->app,
			 w->version);
	snprintf(w->host, sizeof w->host, "%s.marathon.slave.mesos", w->app);
	snprintf(w->principal, sizeof w->principal,
		 "cluster.local/ns/default/sa/%s", w->app);
	snprintf(w->request_host, sizeof w->request_host, "%s:%d", w->app,
		 w->port);
	for (unsigned i = 0; i < w->ninst; i++) {
		char uuid[37];
		format_uuid(r, uuid);
		snprintf(w->uid[i], sizeof w->uid[i],
			 "kubernetes://%s.instance-%s", w->safe_id, uuid);
		/* DC/OS' default overlay network is 9.0.0.0/8 */
		w->ip[i][0] = 9;
		w->ip[i][1] = (uint8_t)(index >> 8);
		w->ip[i][2] = (uint8_t)index;
		w->ip[i][3] = (uint8_t)(2 + i);
	}
	w->labels[0] = (struct mixd_kv){"app", 3, w->app, strlen(w->app)};
	w->labels[1] = (struct mixd_kv){"istio", 5, w->app, strlen(w->app)};
	w->labels[2] =
		(struct mixd_kv){"version", 7, w->version, strlen(w->version)};
}

static int add_edge(struct mesh *m, unsigned from, unsigned to, double weight,
		    const struct path_choice *paths, unsigned npaths)
{
	if (from >= m->nw || to >= m->nw)
		return 0; /* an endpoint outside --workloads */
	m->e[m->ne++] = (struct edge){from, to, weight, paths, npaths};
	m->total_weight += weight;
	return 0;
}

static int mesh_build(struct mesh *m, unsigned n, uint64_t seed)
{
	struct rng r;
	rng_seed(&r, seed ^ 0x6d657368ULL); /* "mesh" */
	m->w = calloc(n, sizeof *m->w);
	/* the bookinfo edges plus one per generated backend */
	m->e = calloc(16 + n, sizeof *m->e);
	if (!m->w || !m->e)
		return -1;
	m->nw = n;
	for (unsigned i = 0; i < n; i++) {
		struct workload *w = &m->w[i];
		if (i < BOOKINFO_WORKLOADS) {
			snprintf(w->app, sizeof w->app, "%s", bookinfo[i].app);
			snprintf(w->version, sizeof w->version, "%s",
				 bookinfo[i].version);
			w->port = bookinfo[i].port;
			w->proto = bookinfo[i].proto;
			w->median_ms = bookinfo[i].median_ms;
			w->sigma = bookinfo[i].sigma;
			w->resp_bytes = bookinfo[i].resp_bytes;
			w->err_404 = bookinfo[i].err_404;
			w->err_5xx = bookinfo[i].err_5xx;
			w->ninst = bookinfo[i].ninst;
		} else {
			/* generated backends: more series for cardinality
			 * tests, half http and half grpc */
			unsigned k = i - BOOKINFO_WORKLOADS + 1;
			snprintf(w->app, sizeof w->app, "backend-%u", k);
			snprintf(w->version, sizeof w->version, "v%u",
				 1 + k % 2);
			w->port = 8080;
			w->proto = k % 2 ? P_GRPC : P_HTTP;
			w->median_ms = 2 + (double)rng_below(&r, 40);
			w->sigma = 0.3 + rng_unit(&r) * 0.5;
			w->resp_bytes = 100 + (double)rng_below(&r, 4000);
			w->err_404 = 0.01;
			w->err_5xx = rng_unit(&r) * 0.03;
			w->ninst = 1 + rng_below(&r, MAX_INSTANCES);
		}
		workload_init(w, i, &r);
	}
	/* Weights follow bookinfo's fan-out per page view: the gateway calls
	 * productpage once, which calls details once and one reviews version
	 * (a third each); v2 and v3 call ratings, which reads mongodb over one
	 * connection report per call. */
	add_edge(m, 0, 1, 1, pp_paths, NPATHS(pp_paths));
	add_edge(m, 1, 2, 1, details_paths, NPATHS(details_paths));
	add_edge(m, 1, 3, 1.0 / 3, reviews_paths, NPATHS(reviews_paths));
	add_edge(m, 1, 5, 1.0 / 3, reviews_paths, NPATHS(reviews_paths));
	add_edge(m, 1, 6, 1.0 / 3, reviews_paths, NPATHS(reviews_paths));
	add_edge(m, 5, 4, 1.0 / 3, ratings_paths, NPATHS(ratings_paths));
	add_edge(m, 6, 4, 1.0 / 3, ratings_paths, NPATHS(ratings_paths));
	add_edge(m, 4, 7, 2.0 / 3, tcp_paths, NPATHS(tcp_paths));
	for (unsigned i = BOOKINFO_WORKLOADS; i < n; i++) {
		if (m->w[i].proto == P_GRPC)
			add_edge(m, 1, i, 0.2, backend_grpc_paths,
				 NPATHS(backend_grpc_paths));
		else
			add_edge(m, 1, i, 0.2, backend_http_paths,
				 NPATHS(backend_http_paths));
	}
	if (m->ne == 0)
		return -1;
	return 0;
}

static void mesh_free(struct mesh *m)
{
	free(m->w);
	free(m->e);
}

/* ---- one call, two records ---------------------------------------------- */

/* Per-thread state: the generator and the bytes the records point into. */
struct gen {
	struct rng rng;
	const struct mesh *mesh;
	char request_id[37];
	char conn_id[24];
	uint64_t conn_seq;
	unsigned thread;
};

struct call {
	struct mixd_value v[2][MAX_VALUES];
	size_t n[2];
};

static void put_str(struct mixd_value *v, size_t *n, mixd_attr a, const char *s)
{
	v[(*n)++] = (struct mixd_value){.attr = a,
					.type = MIXD_T_STRING,
					.len = (uint32_t)strlen(s),
					.p = s};
}

static void put_int(struct mixd_value *v, size_t *n, mixd_attr a, int64_t x)
{
	v[(*n)++] =
		(struct mixd_value){.attr = a, .type = MIXD_T_INT64, .i = x};
}

static void put_dur(struct mixd_value *v, size_t *n, mixd_attr a, int64_t ns)
{
	v[(*n)++] = (struct mixd_value){
		.attr = a, .type = MIXD_T_DURATION, .i = ns};
}

static void put_bool(struct mixd_value *v, size_t *n, mixd_attr a, int b)
{
	v[(*n)++] = (struct mixd_value){.attr = a, .type = MIXD_T_BOOL, .b = b};
}

static void put_ip(struct mixd_value *v, size_t *n, mixd_attr a,
		   const uint8_t ip[4])
{
	v[(*n)++] = (struct mixd_value){
		.attr = a, .type = MIXD_T_IP, .len = 4, .p = ip};
}

static void put_map(struct mixd_value *v, size_t *n, mixd_attr a,
		    const struct mixd_kv *kv, uint32_t count)
{
	v[(*n)++] = (struct mixd_value){
		.attr = a, .type = MIXD_T_STRING_MAP, .len = count, .map = kv};
}

static const struct path_choice *pick_path(struct rng *r, const struct edge *e)
{
	double x = rng_unit(r);
	for (unsigned i = 0; i + 1 < e->npaths; i++) {
		if (x < e->paths[i].weight)
			return &e->paths[i];
		x -= e->paths[i].weight;
	}
	return &e->paths[e->npaths - 1];
}

static const struct edge *pick_edge(struct rng *r, const struct mesh *m)
{
	double x = rng_unit(r) * m->total_weight;
	for (unsigned i = 0; i + 1 < m->ne; i++) {
		if (x < m->e[i].weight)
			return &m->e[i];
		x -= m->e[i].weight;
	}
	return &m->e[m->ne - 1];
}

static int64_t ms_to_ns(double ms)
{
	return (int64_t)(ms * (double)NS_PER_MS);
}

/*
 * Build the outbound (caller's proxy, v[0]) and inbound (callee's proxy,
 * v[1]) records of one call. Both proxies see the same request, response
 * code and sizes; the caller measures the callee's time plus its own hop.
 */
static void make_call(struct gen *g, struct call *c)
{
	struct rng *r = &g->rng;
	const struct edge *e = pick_edge(r, g->mesh);
	const struct workload *src = &g->mesh->w[e->from];
	const struct workload *dst = &g->mesh->w[e->to];
	unsigned si = rng_below(r, src->ninst), di = rng_below(r, dst->ninst);
	/* the callee's proxy terminates mTLS; the gateway's callers are
	 * outside the mesh, but the gateway itself speaks mTLS inward */
	bool mtls = true;

	for (int k = 0; k < 2; k++) {
		struct mixd_value *v = c->v[k];
		size_t *n = &c->n[k];
		*n = 0;
		put_str(v, n, MIXD_ATTR_CONTEXT_REPORTER_KIND,
			k == 0 ? "outbound" : "inbound");
		put_str(v, n, MIXD_ATTR_CONTEXT_REPORTER_UID,
			k == 0 ? src->uid[si] : dst->uid[di]);
		put_str(v, n, MIXD_ATTR_CONTEXT_PROTOCOL,
			proto_name[dst->proto]);
		put_str(v, n, MIXD_ATTR_SOURCE_UID, src->uid[si]);
		put_ip(v, n, MIXD_ATTR_SOURCE_IP, src->ip[si]);
		put_map(v, n, MIXD_ATTR_SOURCE_LABELS, src->labels, 3);
		put_str(v, n, MIXD_ATTR_DESTINATION_UID, dst->uid[di]);
		put_ip(v, n, MIXD_ATTR_DESTINATION_IP, dst->ip[di]);
		put_int(v, n, MIXD_ATTR_DESTINATION_PORT, dst->port);
		put_map(v, n, MIXD_ATTR_DESTINATION_LABELS, dst->labels, 3);
		put_str(v, n, MIXD_ATTR_DESTINATION_SERVICE_HOST, dst->host);
		put_str(v, n, MIXD_ATTR_DESTINATION_SERVICE_NAME, dst->app);
		put_str(v, n, MIXD_ATTR_DESTINATION_SERVICE_NAMESPACE,
			"default");
		put_bool(v, n, MIXD_ATTR_CONNECTION_MTLS, mtls);
		if (k == 1 && mtls) {
			/* only the server side learns the peer's identity */
			put_str(v, n, MIXD_ATTR_SOURCE_PRINCIPAL,
				src->principal);
			put_str(v, n, MIXD_ATTR_DESTINATION_PRINCIPAL,
				dst->principal);
		}
	}

	if (dst->proto == P_TCP) {
		/* one periodic connection report; sent/received are the
		 * destination's view, the same in both reports (Mixer) */
		int64_t sent = (int64_t)rng_lognormal(r, dst->resp_bytes, 0.9);
		int64_t recv = (int64_t)rng_lognormal(r, 180, 0.6);
		bool closing = rng_unit(r) < 0.25;
		snprintf(g->conn_id, sizeof g->conn_id, "%u-%" PRIu64,
			 g->thread, ++g->conn_seq);
		int64_t dur = ms_to_ns(rng_lognormal(r, 800, 1.0));
		for (int k = 0; k < 2; k++) {
			struct mixd_value *v = c->v[k];
			size_t *n = &c->n[k];
			put_int(v, n, MIXD_ATTR_CONNECTION_SENT_BYTES, sent);
			put_int(v, n, MIXD_ATTR_CONNECTION_RECEIVED_BYTES,
				recv);
			put_str(v, n, MIXD_ATTR_CONNECTION_EVENT,
				closing ? "close" : "continue");
			put_str(v, n, MIXD_ATTR_CONNECTION_ID, g->conn_id);
			if (closing)
				put_dur(v, n, MIXD_ATTR_CONNECTION_DURATION,
					dur);
		}
		return;
	}

	const struct path_choice *pc = pick_path(r, e);
	double x = rng_unit(r);
	int64_t code = 200;
	const char *grpc_status = "0";
	double median = dst->median_ms, sigma = dst->sigma;
	if (dst->proto == P_GRPC) {
		/* gRPC errors travel in grpc-status over an HTTP 200; an
		 * overloaded upstream is a 503 from the proxy itself */
		if (x < dst->err_404) {
			grpc_status = "5"; /* NOT_FOUND */
		} else if (x < dst->err_404 + dst->err_5xx * 0.6) {
			grpc_status = "13"; /* INTERNAL */
		} else if (x < dst->err_404 + dst->err_5xx) {
			code = 503;
			grpc_status = "14"; /* UNAVAILABLE */
			median = 0.5;
			sigma = 0.3;
		}
	} else if (x < dst->err_404) {
		code = 404;
		median *= 0.3;
	} else if (x < dst->err_404 + dst->err_5xx * 0.5) {
		code = 500;
	} else if (x < dst->err_404 + dst->err_5xx) {
		/* the proxy's circuit breaker or a dead upstream: fast */
		code = 503;
		median = 0.5;
		sigma = 0.3;
	}
	/* one call in 200 hits a slow path (GC pause, cold cache) */
	if (rng_unit(r) < 0.005)
		median *= 10;
	int64_t server_ns = ms_to_ns(rng_lognormal(r, median, sigma));
	int64_t hop_ns = ms_to_ns(rng_lognormal(r, 0.4, 0.3));
	int64_t req_size = strcmp(pc->method, "POST") == 0
				   ? (int64_t)rng_lognormal(r, 420, 0.5)
				   : 0;
	int64_t resp_size =
		code == 200 ? (int64_t)rng_lognormal(r, dst->resp_bytes, 0.25)
			    : (int64_t)(20 + rng_below(r, 200));
	format_uuid(r, g->request_id);

	for (int k = 0; k < 2; k++) {
		struct mixd_value *v = c->v[k];
		size_t *n = &c->n[k];
		put_str(v, n, MIXD_ATTR_API_PROTOCOL, proto_name[dst->proto]);
		put_str(v, n, MIXD_ATTR_REQUEST_METHOD, pc->method);
		put_str(v, n, MIXD_ATTR_REQUEST_PATH, pc->path);
		put_str(v, n, MIXD_ATTR_REQUEST_HOST, dst->request_host);
		put_str(v, n, MIXD_ATTR_REQUEST_SCHEME, "http");
		put_str(v, n, MIXD_ATTR_REQUEST_ID, g->request_id);
		put_str(v, n, MIXD_ATTR_REQUEST_USERAGENT,
			dst->proto == P_GRPC ? "grpc-java-netty/1.19.0"
					     : "python-requests/2.21.0");
		put_int(v, n, MIXD_ATTR_REQUEST_SIZE, req_size);
		put_int(v, n, MIXD_ATTR_RESPONSE_CODE, code);
		put_int(v, n, MIXD_ATTR_RESPONSE_SIZE, resp_size);
		put_dur(v, n, MIXD_ATTR_RESPONSE_DURATION,
			k == 0 ? server_ns + hop_ns : server_ns);
		if (dst->proto == P_GRPC)
			put_str(v, n, MIXD_ATTR_RESPONSE_GRPC_STATUS,
				grpc_status);
	}
}

/* ---- --print: JSON lines for mixd-report ----------------------------------
 */

static const char *const attr_names[] = {
#define X_(id, name, type) [MIXD_ATTR_##id] = name,
	MIXD_ATTRIBUTE_LIST(X_)
#undef X_
};

static void json_str(FILE *f, const char *s, size_t len)
{
	fputc('"', f);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static int print_record(FILE *f, const struct mixd_value *v, size_t n)
{
	fputc('{', f);
	for (size_t i = 0; i < n; i++) {
		const struct mixd_value *x = &v[i];
		if (i)
			fputs(", ", f);
		fprintf(f, "\"%s\": ", attr_names[x->attr]);
		switch (x->type) {
		case MIXD_T_INT64:
			fprintf(f, "%" PRId64, x->i);
			break;
		case MIXD_T_DURATION:
			/* Go accepts an integer count of nanoseconds */
			fprintf(f, "\"%" PRId64 "ns\"", x->i);
			break;
		case MIXD_T_BOOL:
			fputs(x->b ? "true" : "false", f);
			break;
		case MIXD_T_IP: {
			const uint8_t *ip = x->p;
			fprintf(f, "\"%u.%u.%u.%u\"", ip[0], ip[1], ip[2],
				ip[3]);
			break;
		}
		case MIXD_T_STRING_MAP:
			fputc('{', f);
			for (uint32_t k = 0; k < x->len; k++) {
				if (k)
					fputs(", ", f);
				json_str(f, x->map[k].key, x->map[k].key_len);
				fputs(": ", f);
				json_str(f, x->map[k].value,
					 x->map[k].value_len);
			}
			fputc('}', f);
			break;
		default:
			json_str(f, x->p, x->len);
			break;
		}
	}
	fputs("}\n", f);
	return ferror(f) ? -1 : 0;
}

/* ---- threads ---------------------------------------------------------------
 */

struct worker {
	pthread_t tid;
	struct gen gen;
	double rate;		/* this thread's share */
	uint64_t quota;		/* records; 0: unlimited */
	uint64_t sent, dropped; /* atomic: read by the summary */
	int done;		/* atomic */
	int write_error;
};

static const struct options *opts;
static mixd_client *client;
static int stopping; /* atomic */

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
	struct timespec ts = {.tv_sec = t / NS_PER_S, .tv_nsec = t % NS_PER_S};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
	       EINTR)
		;
}

/* Send one record; false when the thread must stop (output error). */
static bool emit(struct worker *w, const struct mixd_value *v, size_t n)
{
	if (opts->print) {
		if (print_record(stdout, v, n) != 0) {
			w->write_error = 1;
			return false;
		}
		__atomic_add_fetch(&w->sent, 1, __ATOMIC_RELAXED);
		return true;
	}
	if (mixd_report(client, v, n) == 0)
		__atomic_add_fetch(&w->sent, 1, __ATOMIC_RELAXED);
	else
		__atomic_add_fetch(&w->dropped, 1, __ATOMIC_RELAXED);
	return true;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct call *c = malloc(sizeof *c);
	uint64_t emitted = 0;
	bool paced = !opts->print || opts->rate_set;
	/* both records of a call go out before the bucket is checked again,
	 * so a call is never split across ticks */
	size_t pending = 0, next = 0;
	int64_t start = now_ns();
	double per_ns = w->rate / (double)NS_PER_S;
	uint64_t burst = (uint64_t)(w->rate * (double)BURST_NS / NS_PER_S) + 2;

	if (!c)
		goto out;
	while (!__atomic_load_n(&stopping, __ATOMIC_RELAXED)) {
		uint64_t allowed = UINT64_MAX;
		int64_t t = now_ns();
		if (paced) {
			allowed = (uint64_t)((double)(t - start) * per_ns);
			if (allowed > emitted + burst) {
				/* stalled: forgive the debt beyond a burst */
				start = t -
					(int64_t)((double)(emitted + burst) /
						  per_ns);
				allowed = emitted + burst;
			}
		}
		if (w->quota && allowed > w->quota)
			allowed = w->quota;
		while (emitted < allowed) {
			/* unpaced (--print) runs this loop for ever */
			if ((emitted & 1023) == 1023 &&
			    __atomic_load_n(&stopping, __ATOMIC_RELAXED))
				goto out;
			if (next == pending) {
				make_call(&w->gen, c);
				pending = 2;
				next = 0;
			}
			if (!emit(w, c->v[next], c->n[next]))
				goto out;
			next++;
			emitted++;
		}
		if (w->quota && emitted >= w->quota)
			break;
		if (!paced)
			continue;
		/* sleep until the next record is due, within the tick bounds */
		int64_t due = start + (int64_t)((double)(emitted + 1) / per_ns);
		int64_t now = now_ns();
		if (due < now + MIN_TICK_NS)
			due = now + MIN_TICK_NS;
		if (due > now + MAX_TICK_NS)
			due = now + MAX_TICK_NS;
		sleep_until(due);
	}
out:
	free(c);
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* ---- main ---------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: mixd-loadgen [OPTION]...\n"
		"Write realistic service-mesh telemetry to mixd through "
		"libmixd.\n"
		"\n"
		"Simulates Istio's bookinfo mesh on Marathon: "
		"istio-ingressgateway ->\n"
		"productpage -> details, reviews v1/v2/v3 (a third each); "
		"reviews v2/v3 ->\n"
		"ratings over gRPC; ratings -> mongodb over TCP. Each call "
		"writes the two\n"
		"records a pair of Envoy proxies report (context.reporter.kind "
		"outbound\n"
		"from the caller, inbound from the callee) with uids "
		"kubernetes://<task\n"
		"id without its last .suffix>, labels app/istio/version, "
		"destination.service.*,\n"
		"request.*, response codes (mostly 200; some 404, 500, 503; "
		"gRPC statuses),\n"
		"log-normal latencies with a median per workload, "
		"connection.mtls, and TCP\n"
		"byte counts.\n"
		"\n"
		"Options:\n"
		"  -a, --address ADDR     mixd's producer socket, "
		"unix:///PATH or /PATH\n"
		"                         (default: unix://$XDG_RUNTIME_DIR/"
		"mixd.sock,\n"
		"                         else unix:///tmp/mixd.sock)\n"
		"  -r, --rate R           records per second, over all threads "
		"(default 1000)\n"
		"  -d, --duration S       stop after S seconds (default: run "
		"until SIGINT or\n"
		"                         SIGTERM)\n"
		"  -n, --count N          stop after N records\n"
		"  -j, --threads N        producer threads, each with its own "
		"ring and an equal\n"
		"                         share of the rate (default 1)\n"
		"  -t, --transport KIND   shm (shared-memory ring, default) or "
		"socket\n"
		"  -s, --seed N           random seed (default 1): the same "
		"seed, "
		"workloads and\n"
		"                         thread count give the same records "
		"in the same order\n"
		"  -w, --workloads N      workloads to simulate, 2..%d "
		"(default "
		"%d): the\n"
		"                         bookinfo set (a prefix of it when "
		"N < %d), then\n"
		"                         generated backends called by "
		"productpage\n"
		"      --ring-bytes N     ring size per thread, a power of two "
		"(default: the\n"
		"                         client's)\n"
		"      --flush-timeout MS wait at most MS at exit for mixd to "
		"take every\n"
		"                         record (default 2000)\n"
		"      --print            write the records to standard output "
		"as JSON lines\n"
		"                         (mixd-report's input) instead of "
		"sending them;\n"
		"                         unpaced unless --rate is given; one "
		"thread only\n"
		"  -h, --help             show this help and exit\n"
		"      --version          print the version and exit\n"
		"\n"
		"Every 10 s prints to standard error\n"
		"  mixd-loadgen: T s: sent N records, dropped D (R/s)\n"
		"and at exit\n"
		"  mixd-loadgen: done after T s: sent N records, dropped D (R/s)\n"
		"Dropped records are those libmixd refused (the ring was full "
		"or mixd is\n"
		"not taking records).\n"
		"\n"
		"Exit status: 0 stopped by SIGINT, SIGTERM, --duration or "
		"--count with every\n"
		"record taken by mixd; 1 records were dropped, the final flush "
		"timed out or\n"
		"output failed; 2 usage error or no client.\n",
		MAX_WORKLOADS, BOOKINFO_WORKLOADS, BOOKINFO_WORKLOADS);
}

static int bad_value(const char *flag, const char *v, const char *what)
{
	fprintf(stderr, "mixd-loadgen: --%s: \"%s\" is not %s\n", flag, v,
		what);
	return -1;
}

/* @s in decimal (010 is ten), or any C base when @any_base (a seed). */
static int parse_u64_base(const char *s, uint64_t lo, uint64_t hi,
			  uint64_t *out, bool any_base)
{
	char *end;
	if (!*s || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, any_base ? 0 : 10);
	if (errno || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	return parse_u64_base(s, lo, hi, out, false);
}

static int parse_pos_double(const char *s, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || !(v <= max))
		return -1;
	*out = v;
	return 0;
}

static char default_address[4200];

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { O_RING = 256, O_FLUSH, O_PRINT };
	static const struct option longopts[] = {
		{"address", required_argument, NULL, 'a'},
		{"rate", required_argument, NULL, 'r'},
		{"duration", required_argument, NULL, 'd'},
		{"count", required_argument, NULL, 'n'},
		{"threads", required_argument, NULL, 'j'},
		{"transport", required_argument, NULL, 't'},
		{"seed", required_argument, NULL, 's'},
		{"workloads", required_argument, NULL, 'w'},
		{"ring-bytes", required_argument, NULL, O_RING},
		{"flush-timeout", required_argument, NULL, O_FLUSH},
		{"print", no_argument, NULL, O_PRINT},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	uint64_t v;
	int c;

	const char *xdg = getenv("XDG_RUNTIME_DIR");
	snprintf(default_address, sizeof default_address, "unix://%s/mixd.sock",
		 xdg && *xdg ? xdg : "/tmp");
	o->address = default_address;
	o->rate = 1000;
	o->threads = 1;
	o->seed = 1;
	o->workloads = BOOKINFO_WORKLOADS;
	o->flush_timeout_ms = 2000;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "a:r:d:n:j:t:s:w:h", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'a':
			o->address = optarg;
			break;
		case 'r':
			/* the bucket's arithmetic is in doubles per ns */
			if (parse_pos_double(optarg, 1e9, &o->rate))
				return bad_value("rate", optarg,
						 "a positive number of records "
						 "per second (at most 1e9)");
			o->rate_set = true;
			break;
		case 'd':
			if (parse_pos_double(optarg, 1e7, &o->duration_s))
				return bad_value(
					"duration", optarg,
					"a positive number of seconds");
			break;
		case 'n':
			if (parse_u64(optarg, 1, UINT64_MAX / 2, &o->count))
				return bad_value("count", optarg,
						 "a positive count");
			break;
		case 'j':
			if (parse_u64(optarg, 1, 256, &v))
				return bad_value("threads", optarg,
						 "a thread count in [1, 256]");
			o->threads = (unsigned)v;
			break;
		case 't':
			if (strcmp(optarg, "shm") == 0)
				o->client.transport = MIXD_TRANSPORT_SHM;
			else if (strcmp(optarg, "socket") == 0)
				o->client.transport = MIXD_TRANSPORT_SOCKET;
			else
				return bad_value("transport", optarg,
						 "shm or socket");
			break;
		case 's':
			if (parse_u64_base(optarg, 0, UINT64_MAX, &o->seed, true))
				return bad_value("seed", optarg,
						 "an unsigned 64-bit number");
			break;
		case 'w':
			if (parse_u64(optarg, 2, MAX_WORKLOADS, &v)) {
				fprintf(stderr,
					"mixd-loadgen: --workloads: \"%s\" is "
					"not a count in [2, %d]\n",
					optarg, MAX_WORKLOADS);
				return -1;
			}
			o->workloads = (unsigned)v;
			break;
		case O_RING:
			if (parse_u64(optarg, 256u << 10, 256u << 20, &v) ||
			    (v & (v - 1)) != 0)
				return bad_value("ring-bytes", optarg,
						 "a power of two from 262144 "
						 "(256 KiB) to 268435456 "
						 "(256 MiB)");
			o->client.ring_bytes = (uint32_t)v;
			break;
		case O_FLUSH:
			if (parse_u64(optarg, 1, INT32_MAX, &v))
				return bad_value("flush-timeout", optarg,
						 "a positive number of "
						 "milliseconds");
			o->flush_timeout_ms = (int)v;
			break;
		case O_PRINT:
			o->print = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("%s %s\n", "mixd-loadgen", MIXD_VERSION);
			exit(0);
		default:
			fprintf(stderr,
				"mixd-loadgen: unknown or incomplete option "
				"\"%s\"\n",
				argv[optind - 1]);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mixd-loadgen: unexpected argument \"%s\"\n",
			argv[optind]);
		return -1;
	}
	if (o->print && o->threads != 1) {
		fprintf(stderr, "mixd-loadgen: --print writes from one thread "
				"only; drop --threads\n");
		return -1;
	}
	return 0;
}

static void totals(struct worker *w, unsigned n, uint64_t *sent,
		   uint64_t *dropped)
{
	*sent = *dropped = 0;
	for (unsigned i = 0; i < n; i++) {
		*sent += __atomic_load_n(&w[i].sent, __ATOMIC_RELAXED);
		*dropped += __atomic_load_n(&w[i].dropped, __ATOMIC_RELAXED);
	}
}

static void summary(struct worker *w, unsigned n, int64_t start, int64_t end,
		    const char *prefix)
{
	uint64_t sent, dropped;
	totals(w, n, &sent, &dropped);
	double secs = (double)(end - start) / NS_PER_S;
	fprintf(stderr,
		"mixd-loadgen: %s%.1f s: sent %" PRIu64
		" records, dropped %" PRIu64 " (%.0f/s)\n",
		prefix, secs, sent, dropped,
		secs > 0 ? (double)(sent + dropped) / secs : 0.0);
}

int main(int argc, char **argv)
{
	struct options o = {0};
	struct mesh mesh = {0};
	struct worker *w = NULL;
	unsigned started = 0;
	int status = EXIT_USAGE, rc;

	if (parse_args(argc, argv, &o) != 0) {
		fprintf(stderr, "Try 'mixd-loadgen --help'.\n");
		return EXIT_USAGE;
	}
	opts = &o;

	/* Signals are taken by this thread alone, with sigtimedwait; every
	 * thread started below (libmixd's included) inherits the mask. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	if (mesh_build(&mesh, o.workloads, o.seed) != 0) {
		fprintf(stderr, "mixd-loadgen: out of memory\n");
		goto out;
	}
	if (!o.print) {
		rc = mixd_client_open(o.address, &o.client, &client);
		if (rc != 0) {
			fprintf(stderr,
				"mixd-loadgen: cannot open a client for %s: "
				"%s\n",
				o.address, strerror(-rc));
			goto out;
		}
	}
	w = calloc(o.threads, sizeof *w);
	if (!w) {
		fprintf(stderr, "mixd-loadgen: out of memory\n");
		goto out;
	}
	char rate[64];
	if (o.print && !o.rate_set) /* no rate: as fast as it prints */
		snprintf(rate, sizeof rate, "unpaced");
	else
		snprintf(rate, sizeof rate, "%g records/s", o.rate);
	fprintf(stderr,
		"mixd-loadgen: %u workloads, %s, %u thread%s, "
		"seed %" PRIu64 ", %s%s\n",
		mesh.nw, rate, o.threads, o.threads == 1 ? "" : "s", o.seed,
		o.print ? "printing to " : "to ",
		o.print ? "stdout" : o.address);

	int64_t start = now_ns();
	for (unsigned i = 0; i < o.threads; i++) {
		w[i].rate = o.rate / o.threads;
		if (o.count)
			w[i].quota = o.count / o.threads +
				     (i < o.count % o.threads ? 1 : 0);
		w[i].gen.mesh = &mesh;
		w[i].gen.thread = i;
		rng_seed(&w[i].gen.rng, o.seed + 0x100000001b3ULL * i);
		if (o.count && w[i].quota == 0) {
			w[i].done = 1;
			continue;
		}
		rc = pthread_create(&w[i].tid, NULL, worker_main, &w[i]);
		if (rc != 0) {
			fprintf(stderr,
				"mixd-loadgen: cannot start a thread: "
				"%s\n",
				strerror(rc));
			__atomic_store_n(&stopping, 1, __ATOMIC_RELAXED);
			break;
		}
		started = i + 1;
	}

	int64_t end = o.duration_s > 0
			      ? start + (int64_t)(o.duration_s * NS_PER_S)
			      : INT64_MAX;
	int64_t next_summary = start + SUMMARY_EVERY_NS;
	while (!__atomic_load_n(&stopping, __ATOMIC_RELAXED)) {
		/* wake every 100 ms to notice workers that met --count, and
		 * at --duration's end */
		int64_t left = end - now_ns();
		if (left <= 0)
			break;
		struct timespec tick = {0, left < 100 * NS_PER_MS
						   ? (long)left
						   : 100 * NS_PER_MS};
		int sig = sigtimedwait(&sigs, NULL, &tick);
		if (sig == SIGINT || sig == SIGTERM)
			break;
		int64_t t = now_ns();
		if (t >= end)
			break;
		bool all_done = true;
		for (unsigned i = 0; i < o.threads; i++)
			if (!__atomic_load_n(&w[i].done, __ATOMIC_ACQUIRE))
				all_done = false;
		if (all_done)
			break;
		if (t >= next_summary) {
			summary(w, o.threads, start, t, "");
			next_summary += SUMMARY_EVERY_NS;
		}
	}
	__atomic_store_n(&stopping, 1, __ATOMIC_RELAXED);
	/* the rate is the sending time's, without the final flush */
	int64_t stopped = now_ns();
	status = 0;
	for (unsigned i = 0; i < started; i++) {
		if (o.count && w[i].quota == 0)
			continue;
		pthread_join(w[i].tid, NULL);
		if (w[i].write_error)
			status = EXIT_FLUSH;
	}
	if (o.print) {
		if (fflush(stdout) != 0 || status) {
			fprintf(stderr, "mixd-loadgen: writing to standard "
					"output failed\n");
			status = EXIT_FLUSH;
		}
	} else if (mixd_client_flush(client, o.flush_timeout_ms) != 0) {
		fprintf(stderr,
			"mixd-loadgen: flush timed out after %d ms: mixd at %s "
			"has not taken every record (is it running?)\n",
			o.flush_timeout_ms, o.address);
		status = EXIT_FLUSH;
	}
	summary(w, o.threads, start, stopped, "done after ");
	uint64_t sent, dropped;
	totals(w, o.threads, &sent, &dropped);
	if (dropped && !status) {
		fprintf(stderr,
			"mixd-loadgen: %" PRIu64 " records dropped: libmixd "
			"refused them (mostly a full ring: mixd too slow, or not "
			"taking records)\n",
			dropped);
		status = EXIT_FLUSH;
	}
out:
	if (client)
		mixd_client_close(client);
	free(w);
	mesh_free(&mesh);
	return status;
}
