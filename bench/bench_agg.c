/*
 * bench_agg -- the aggregation pipeline on one shard core, with the user's
 * configuration (tests/fixtures/config/mixer-seed.yaml, unchanged):
 * decode, mesos attribute generation, rule matches, 17 dimensions, the
 * label-set probe and the updates of the four HTTP families per record.
 *
 * Records are proxy-shaped (20 attributes): productpage's pod (source IP
 * 9.0.0.2) calling reviews' (9.0.0.3), as a proxy reports it. The label
 * set a record falls in is chosen by its destination.service.host and
 * response.code, so the mix of distinct label sets is exact: 1,000 or
 * 100,000; sizes and durations vary per record. The "every record new"
 * case gives each record its own source IP, an input of the mesos
 * instance, so no record repeats another and the shard's record memo
 * never serves: the cost of the full path.
 *
 * Also: resident memory per label set (all four HTTP families), and a
 * scrape of 100,000 label sets as the daemon serves it: the consistent
 * view, then the body pulled through expose_body_read() -- the HTTP
 * server's own reader, which renders the view piece by piece -- into a
 * buffer the size of an HTTP connection's, counted and dropped. Plain and
 * gzipped; with the peak memory the scrape added.
 *
 * MIXD_BENCH_SCRAPE_ONLY=1 skips the throughput cases, MIXD_BENCH_SETS=N
 * scrapes N label sets instead of 100,000 (for callgrind:
 * MIXD_BENCH_SCRAPE_ONLY=1 MIXD_BENCH_SETS=10000; every case still runs
 * at least 5 times).
 * MIXD_BENCH_CASE=K runs throughput case K alone (1: 1,000 label sets,
 * 2: 100,000, 3: resolver on, 4: every record new, 5: resolver on and a
 * new snapshot of the same tasks every 100,000 records, as Marathon's
 * events publish them; 6, 7: 3 and 5 at 100,000 label sets) and no
 * scrape, and
 * MIXD_BENCH_NO_AHEAD=1 hands records over without announcing them
 * first (state_ahead()): what the memo's prefetching gains.
 * MIXD_BENCH_RECORDS=N makes its workload N records: for instructions
 * per record, MIXD_BENCH_CASE=1 MIXD_BENCH_RECORDS=20000 valgrind
 * --tool=callgrind --toggle-collect=state_record ... and divide by the
 * records it prints.
 */
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agg/agg_internal.h"
#include "bench_util.h"
#include "expose/expose.h"
#include "ingest/ingest.h"
#include "ingest/wire.h"
#include "marathon/mar_internal.h"

#define RECORD_CAP 512

static const char *seed_path(void)
{
	const char *e = getenv("MIXD_SEED_CONFIG");
	return e ? e : "tests/fixtures/config/mixer-seed.yaml";
}

/* One attribute of a bench record. */
struct fld {
	uint16_t id;
	uint8_t type;
	uint32_t len; /* IP, strings */
	const void *p;
	int64_t i;    /* words, bool */
};

/* Record @i of a workload with @sets distinct label sets (@fresh: a source
 * IP of its own), as the 21 attributes a proxy reports; returns how many.
 * Strings point into @host and @sip, which must live until encoded. */
static unsigned record_fields(struct fld *f, uint64_t i, uint64_t sets,
			      bool fresh, char *host, uint8_t *sip)
{
	static const uint8_t dip[4] = {9, 0, 0, 3};
	uint64_t set = i % sets;
	int n = snprintf(host, 64, "svc-%llu.default.svc.cluster.local",
			 (unsigned long long)(set / 4));
	sip[0] = 9, sip[1] = 0, sip[2] = 0, sip[3] = 2;
	if (fresh) {
		sip[0] = 10;
		sip[1] = (uint8_t)(i >> 16);
		sip[2] = (uint8_t)(i >> 8);
		sip[3] = (uint8_t)i;
	}
	unsigned k = 0;
#define STR(a, s, l) f[k++] = (struct fld){a, MIXD_T_STRING, (uint32_t)(l), s, 0}
#define I64(a, t, v) f[k++] = (struct fld){a, t, 8, NULL, (int64_t)(v)}
	STR(MIXD_ATTR_CONTEXT_PROTOCOL, "http", 4);
	STR(MIXD_ATTR_CONTEXT_REPORTER_KIND, "inbound", 7);
	STR(MIXD_ATTR_SOURCE_UID, "kubernetes://bookinfo_pp-v1.instance-1f0c._app",
	    46);
	STR(MIXD_ATTR_DESTINATION_UID,
	    "kubernetes://bookinfo_rv-v2.instance-c96b._app", 46);
	f[k++] = (struct fld){MIXD_ATTR_SOURCE_IP, MIXD_T_IP, 4, sip, 0};
	f[k++] = (struct fld){MIXD_ATTR_DESTINATION_IP, MIXD_T_IP, 4, dip, 0};
	I64(MIXD_ATTR_DESTINATION_PORT, MIXD_T_INT64, 9080);
	STR(MIXD_ATTR_DESTINATION_SERVICE_HOST, host, n);
	STR(MIXD_ATTR_DESTINATION_SERVICE_NAME, host, 8);
	STR(MIXD_ATTR_REQUEST_METHOD, "GET", 3);
	STR(MIXD_ATTR_REQUEST_PATH, "/reviews/0", 10);
	I64(MIXD_ATTR_REQUEST_SIZE, MIXD_T_INT64, (i * 37) % 5000);
	I64(MIXD_ATTR_RESPONSE_SIZE, MIXD_T_INT64, (i * 91) % 50000);
	I64(MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, 200 + (int64_t)(set % 4));
	I64(MIXD_ATTR_RESPONSE_DURATION, MIXD_T_DURATION,
	    (int64_t)((i * 7919) % 300) * 1000000);
	I64(MIXD_ATTR_REQUEST_TIME, MIXD_T_TIMESTAMP, 1700000000000000000ll);
	f[k++] = (struct fld){MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL, 1, NULL, 1};
	STR(MIXD_ATTR_SOURCE_PRINCIPAL, "ns/default/sa/pp", 16);
	STR(MIXD_ATTR_DESTINATION_PRINCIPAL, "ns/default/sa/rv", 16);
	STR(MIXD_ATTR_API_PROTOCOL, "http", 4);
#undef STR
#undef I64
	return k;
}

/* A field's group in a layout: words, bools, IPs, strings. */
static int group(uint8_t type)
{
	switch (type) {
	case MIXD_T_INT64:
	case MIXD_T_DOUBLE:
	case MIXD_T_TIMESTAMP:
	case MIXD_T_DURATION:
		return 0;
	case MIXD_T_BOOL:
		return 1;
	case MIXD_T_IP:
		return 2;
	default:
		return 3;
	}
}

/* The fields in layout order (stable within a group). */
static void layout_order(struct fld *f, unsigned n)
{
	struct fld tmp[32];
	unsigned k = 0;
	for (int g = 0; g < 4; g++)
		for (unsigned j = 0; j < n; j++)
			if (group(f[j].type) == g)
				tmp[k++] = f[j];
	memcpy(f, tmp, n * sizeof *f);
}

/* The layout of the bench's records, as a template's ring carries it. */
static struct ingest_layout bench_layout;

static void make_layout(void)
{
	struct fld f[32];
	char host[64];
	uint8_t sip[4];
	unsigned n = record_fields(f, 0, 1, false, host, sip);
	layout_order(f, n);
	struct mixd_layout raw = {.n = n};
	for (unsigned j = 0; j < n; j++)
		raw.f[j] = (struct mixd_layout_field){f[j].id, f[j].type, 0};
	if (!ingest_layout_load(&bench_layout, &raw))
		abort();
}

/*
 * Encode record @i: as a layout record (what a template writes into a
 * shared-memory ring: values alone) or, @attrs, attribute by attribute
 * with headers (what mixd_report() writes). Returns its length.
 */
static uint32_t encode(uint8_t *buf, uint64_t i, uint64_t sets, bool fresh,
		       bool attrs)
{
	struct fld f[32];
	char host[64];
	uint8_t sip[4];
	unsigned n = record_fields(f, i, sets, fresh, host, sip);
	if (attrs) {
		struct wire_writer w;
		wire_init(&w, buf, RECORD_CAP);
		for (unsigned j = 0; j < n; j++) {
			wire_attr(&w, f[j].id, f[j].type, NULL, 0);
			if (f[j].type == MIXD_T_IP)
				wire_ip(&w, f[j].p, f[j].len);
			else if (f[j].type == MIXD_T_BOOL)
				wire_u8(&w, (uint8_t)f[j].i);
			else if (group(f[j].type) == 0)
				wire_u64(&w, (uint64_t)f[j].i);
			else
				wire_bytes(&w, f[j].p, f[j].len);
		}
		if (w.overflow)
			abort();
		return w.len;
	}
	layout_order(f, n);
	uint8_t *o = buf;
	uint32_t hdr = MIXD_ATTR_LAYOUT;
	memcpy(o, &hdr, 4);
	o += 4;
	unsigned nvar = 0;
	for (unsigned j = 0; j < n; j++) {
		if (group(f[j].type) == 0) {
			memcpy(o, &f[j].i, 8);
			o += 8;
		} else if (group(f[j].type) == 1) {
			*o++ = (uint8_t)f[j].i;
		} else {
			nvar++;
		}
	}
	uint8_t *lens = o;
	o += 2 * nvar;
	for (unsigned j = 0; j < n; j++) {
		if (group(f[j].type) < 2)
			continue;
		uint16_t l = (uint16_t)f[j].len;
		memcpy(lens, &l, 2);
		lens += 2;
		memcpy(o, f[j].p, f[j].len);
		o += f[j].len;
	}
	if (o - buf > RECORD_CAP)
		abort();
	return (uint32_t)(o - buf);
}

struct workload {
	uint8_t *buf;
	uint32_t *len;
	size_t n;
	const struct ingest_layout *lay; /* NULL: records with headers */
};

static void make_workload(struct workload *wl, size_t n, uint64_t sets,
			  bool fresh, bool attrs)
{
	wl->buf = malloc(n * RECORD_CAP);
	wl->len = malloc(n * sizeof *wl->len);
	wl->n = n;
	wl->lay = attrs ? NULL : &bench_layout;
	for (size_t i = 0; i < n; i++)
		wl->len[i] = encode(wl->buf + i * RECORD_CAP, i, sets, fresh,
				    attrs);
}

static struct agg *make_agg(void)
{
	struct cfg *c = cfg_load(seed_path(), "default");
	if (!c || !cfg_ok(c)) {
		fprintf(stderr, "bench_agg: cannot load %s (set MIXD_SEED_CONFIG)\n",
			seed_path());
		if (c)
			cfg_print_diagnostics(c, stderr);
		exit(1);
	}
	struct agg *a;
	struct agg_options o = {.shards = 1, .series_limit = 1000000};
	if (agg_create(&o, NULL, &a) || agg_set_config(a, c))
		abort();
	/* Play the shard thread here: one core, no rings. */
	struct shard *sh = &a->shards[0];
	sh->state = state_create(a->plan, NULL, &a->epoch, &sh->retired);
	if (!sh->state)
		abort();
	return a;
}

/* Marathon churn: a new snapshot published every CHURN_EVERY records. */
#define CHURN_EVERY 100000
#define CHURN_MAX 64

struct churn {
	struct mar_resolver *res;
	struct mar_snap *snap[CHURN_MAX]; /* built ahead, published in turn */
	size_t n, next;
};

static size_t gcd(size_t a, size_t b)
{
	while (b) {
		size_t r = a % b;
		a = b;
		b = r;
	}
	return a;
}

/*
 * @passes over the workload's records, in order (@scatter false), or in
 * a scattered order that visits each once (@scatter). Label sets get
 * their rows in the order records first name them: a first pass in the
 * workload's own order would leave the rows in memory in the order the
 * later passes visit them, a stream the hardware prefetcher follows and
 * no daemon sees (a record may name any label set), so the pass that
 * makes them is scattered.
 */
static void run(struct agg *a, const struct workload *wl, size_t passes,
		struct churn *ch, bool scatter)
{
	struct shard *sh = &a->shards[0];
	static struct attr_table t;
	size_t since = 0, stride = 1;
	bool ahead = false;
	static int noahead = -1;
	if (noahead < 0)
		noahead = getenv("MIXD_BENCH_NO_AHEAD") != NULL;
	if (scatter)
		for (stride = 7919; gcd(stride, wl->n) != 1; stride += 2)
			;
	for (size_t p = 0; p < passes; p++) {
		for (size_t k = 0; k < wl->n; k++) {
			size_t i = k * stride % wl->n;
			if (ch && ++since == CHURN_EVERY && ch->next < ch->n) {
				/* between read sections, as the resolver's
				 * thread would publish */
				if (mar_resolver_inject(ch->res,
							ch->snap[ch->next++]))
					abort();
				since = 0;
			}
			/* A shard pins one snapshot per pass of 1,024 records. */
			if (sh->mar && k % 1024 == 0)
				mar_read_begin(sh->mar);
			/* As a shard's poll of 1,024 records does: it asks
			 * once whether to announce; if so each record is
			 * announced INGEST_AHEAD records before it is handed
			 * over (the first at the start), none beyond the
			 * poll's end. */
			size_t end = (k / 1024 + 1) * 1024;
			if (k % 1024 == 0)
				ahead = !noahead &&
					state_wants_ahead(sh->state);
			for (size_t m = k % 1024 ? k + INGEST_AHEAD : k;
			     ahead && m <= k + INGEST_AHEAD && m < end &&
			     m < wl->n;
			     m++) {
				size_t im = m * stride % wl->n;
				state_ahead(sh->state, wl->buf + im * RECORD_CAP,
					    wl->len[im], wl->lay);
			}
			if (state_record(sh->state, &t, wl->buf + i * RECORD_CAP,
					 wl->len[i], wl->lay, 0,
					 a->o.series_limit, sh->mar,
					 &a->epoch, &sh->retired))
				abort();
			if (sh->mar && (k % 1024 == 1023 || k + 1 == wl->n))
				mar_read_end(sh->mar);
		}
	}
}

/*
 * A Marathon resolver holding the two apps the records name (an injected
 * snapshot: no Marathon needed), so every record's source and destination
 * resolve and their workloads, apps and versions become labels.
 */
static struct mar_snap *bookinfo_snap(void);

static struct mar_resolver *bookinfo_resolver(void)
{
	struct mar_options o = {.addresses = "127.0.0.1:1",
				.backoff_min_ns = 10000000000ll,
				.log_file = fopen("/dev/null", "w")};
	struct mar_resolver *r;
	if (mar_resolver_start(&o, &r) < 0 ||
	    mar_resolver_inject(r, bookinfo_snap()))
		abort();
	return r;
}

/* The snapshot: the same two apps every time it is built. */
static struct mar_snap *bookinfo_snap(void)
{
	static const char json[] =
		"{\"apps\":["
		"{\"id\":\"/bookinfo/pp-v1\",\"labels\":{\"istio\":\"productpage\","
		"\"version\":\"v1\"},\"networks\":[{\"mode\":\"container\"}],"
		"\"tasks\":[{\"id\":\"bookinfo_pp-v1.instance-1f0c._app.1\","
		"\"appId\":\"/bookinfo/pp-v1\",\"host\":\"10.1.0.1\","
		"\"state\":\"TASK_RUNNING\",\"ipAddresses\":[{\"ipAddress\":"
		"\"9.0.0.2\"}]}]},"
		"{\"id\":\"/bookinfo/rv-v2\",\"labels\":{\"istio\":\"reviews\","
		"\"version\":\"v2\"},\"networks\":[{\"mode\":\"container\"}],"
		"\"tasks\":[{\"id\":\"bookinfo_rv-v2.instance-c96b._app.1\","
		"\"appId\":\"/bookinfo/rv-v2\",\"host\":\"10.1.0.2\","
		"\"state\":\"TASK_RUNNING\",\"ipAddresses\":[{\"ipAddress\":"
		"\"9.0.0.3\"}]}]}]}";
	cJSON *apps = mar_parse_apps(json, sizeof json - 1);
	struct mar_snap *snap = NULL;
	if (!apps || mar_snap_build(apps, NULL, NULL, &snap, NULL) < 0)
		abort();
	cJSON_Delete(apps);
	return snap;
}

static void throughput(uint64_t sets, int runs, bool marathon, bool fresh,
		       bool churn, bool attrs)
{
	struct workload wl;
	size_t n = (size_t)bench_env("MIXD_BENCH_RECORDS",
				     sets > 200000 ? (long)sets : 200000);
	make_workload(&wl, n, sets, fresh, attrs);
	double s[32];
	uint64_t hits = 0, misses = 0;
	for (int r = 0; r < runs; r++) {
		struct agg *a = make_agg();
		struct mar_resolver *res = marathon ? bookinfo_resolver() : NULL;
		if (res)
			a->shards[0].mar = mar_reader_create(res);
		struct churn ch = {.res = res};
		if (churn)
			for (; ch.n < CHURN_MAX && ch.n * CHURN_EVERY < 3 * wl.n;
			     ch.n++)
				ch.snap[ch.n] = bookinfo_snap();
		/* every label set made, scattered: steady state after */
		run(a, &wl, 1, NULL, true);
		uint64_t h0, m0;
		state_memo_stats(a->shards[0].state, &h0, &m0);
		uint64_t t0 = bench_now_ns();
		run(a, &wl, 3, churn ? &ch : NULL, false);
		if (churn && ch.next < 2)
			abort(); /* the workload is too short to churn */
		while (ch.next < ch.n)
			mar_snap_free(ch.snap[ch.next++]);
		double ns = (double)(bench_now_ns() - t0) / (double)(3 * wl.n);
		s[r] = 1e3 / ns; /* M records/s */
		state_memo_stats(a->shards[0].state, &hits, &misses);
		hits -= h0;
		misses -= m0;
		if (marathon) {
			/* Every record resolved: its workload is a label. */
			struct agg_view *v;
			if (agg_view_create(a, &v) || !v->sets[0].nrows ||
			    !memmem(v->sets[0].rows[0].key, v->sets[0].rows[0].key_len,
				    "pp-v1", 5))
				abort();
			agg_view_destroy(v);
			mar_reader_destroy(a->shards[0].mar);
			a->shards[0].mar = NULL;
		}
		agg_destroy(a);
		mar_resolver_stop(res);
	}
	char label[256];
	snprintf(label, sizeof label, "%llu label sets%s%s%s%s: throughput per shard core",
		 (unsigned long long)sets,
		 marathon ? ", Marathon resolver on" : "",
		 churn ? ", a new snapshot every 100,000 records" : "",
		 fresh ? ", every record new" : "",
		 attrs ? ", records with attribute headers (mixd_report)" : "");
	bench_report(label, s, runs, "M records/s");
	printf("  record memo (last run, the 3 timed passes): %llu served, "
	       "%llu missed\n",
	       (unsigned long long)hits, (unsigned long long)misses);
	printf("  records decoded and processed: %llu (%d runs x 4 passes x "
	       "%zu)\n",
	       (unsigned long long)runs * 4 * wl.n, runs, wl.n);
	free(wl.buf);
	free(wl.len);
}

/* ---- a scrape, as the daemon serves one ------------------------------- */

/* Report "<what> of <sets> label sets<after>". */
static void report_sets(const char *what, const char *after, uint64_t sets,
			double *v, int runs, const char *unit)
{
	char label[160];
	snprintf(label, sizeof label, "%s of %llu label sets%s", what,
		 (unsigned long long)sets, after);
	bench_report(label, v, runs, unit);
}

/* Restart VmHWM from the current resident set. */
static void hwm_reset(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	if (f) {
		fputs("5", f);
		fclose(f);
	}
}

/* CPU time of this process: on a machine shared with other work, a
 * steadier figure than the wall clock. */
static double cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct scrape {
	struct expose_view_stream *vs;
	bool complete;
};

static long scrape_read(void *st, char *buf, size_t max)
{
	return expose_view_stream_read(((struct scrape *)st)->vs, buf, max);
}

static void scrape_end(void *st, bool complete)
{
	((struct scrape *)st)->complete = complete;
}

/* What the HTTP server reads a body into for each send: its connection
 * buffer (see http.c, CONNECTION_MEMORY). */
#define SEND_BUF (256 * 1024)

struct scrape_result {
	double seconds;
	double cpu_seconds; /* of this process: the scrape runs on this thread */
	uint64_t bytes;  /* of the body sent */
	uint64_t lines;  /* when counted */
	long peak_kib;   /* resident memory the scrape added at its peak */
};

/*
 * One scrape: view, stream, body, read to the end into @buf, free. Lines
 * are counted only when @count_lines (the count costs a pass of its own).
 */
static struct scrape_result scrape(struct agg *a, bool gzip, bool count_lines,
				   char *buf)
{
	struct scrape_result res = {0};
	long rss0 = bench_rss_kib();
	hwm_reset();
	double c0 = cpu_seconds();
	uint64_t t0 = bench_now_ns();
	struct agg_view *v;
	if (agg_view_create(a, &v))
		abort();
	struct scrape sc = {.vs = expose_view_stream_new(v)};
	struct expose_stream src = {
		.read = scrape_read, .end = scrape_end, .st = &sc};
	struct expose_body *body = sc.vs ? expose_body_new(&src, gzip) : NULL;
	if (!body)
		abort();
	long n;
	while ((n = expose_body_read(body, buf, SEND_BUF)) > 0) {
		res.bytes += (uint64_t)n;
		if (count_lines)
			for (const char *p = buf, *e = buf + n;
			     (p = memchr(p, '\n', (size_t)(e - p))); p++)
				res.lines++;
	}
	if (n < 0)
		abort();
	expose_body_free(body);
	if (!sc.complete)
		abort();
	res.peak_kib = bench_status_kib("VmHWM") - rss0;
	expose_view_stream_free(sc.vs);
	agg_view_destroy(v);
	res.seconds = (double)(bench_now_ns() - t0) / 1e9;
	res.cpu_seconds = cpu_seconds() - c0;
	return res;
}

/* Lines a scrape of @a must have: per family with series, HELP, TYPE and
 * one line per series (nb + 3 for a histogram). */
static uint64_t expected_lines(struct agg *a)
{
	struct agg_view *v;
	uint64_t n = 0;
	if (agg_view_create(a, &v))
		abort();
	for (size_t f = 0; f < v->nfams; f++)
		if (v->fams[f].series)
			n += 2 + v->fams[f].series *
					 (v->fams[f].kind == AGG_HISTOGRAM
						  ? v->fams[f].nb + 3
						  : 1);
	agg_view_destroy(v);
	return n;
}

static void scrapes(int runs, uint64_t sets)
{
	double mem[32], view_s[32], counts_s[32], first_s[32], later_s[32];
	double later_cpu[32];
	double gz_s[32], gz_cpu[32];
	double peak[32], counts_peak[32];
	uint64_t lines = 0, bytes = 0, gz_bytes = 0;
	char *buf = malloc(SEND_BUF);
	if (!buf)
		abort();
	for (int r = 0; r < runs; r++) {
		struct workload wl;
		make_workload(&wl, sets, sets, false, false);
		/* what the last run freed must not be counted as reused */
		malloc_trim(0);
		long before = bench_rss_kib();
		struct agg *a = make_agg();
		run(a, &wl, 1, NULL, false);
		long after = bench_rss_kib();
		free(wl.buf);
		free(wl.len);
		mem[r] = (double)(after - before) * 1024.0 / (double)sets;

		/* What a scrape of mixd's own /metrics takes, first: its
		 * arrays come from the heap, where an earlier view's would
		 * be found free. */
		long rss0 = bench_rss_kib();
		hwm_reset();
		uint64_t t0 = bench_now_ns();
		struct agg_view *v;
		if (agg_view_counts(a, &v))
			abort();
		counts_s[r] = (double)(bench_now_ns() - t0) / 1e9;
		counts_peak[r] =
			(double)(bench_status_kib("VmHWM") - rss0) / 1024.0;
		agg_view_destroy(v);
		malloc_trim(0); /* the scrape below starts from the same */

		/* The first scrape of the process: nothing of an earlier one
		 * is mapped. */
		struct scrape_result first = scrape(a, false, false, buf);
		first_s[r] = first.seconds;
		peak[r] = (double)first.peak_kib / 1024.0;

		t0 = bench_now_ns();
		if (agg_view_create(a, &v))
			abort();
		view_s[r] = (double)(bench_now_ns() - t0) / 1e9;
		agg_view_destroy(v);

		struct scrape_result later = scrape(a, false, false, buf);
		later_s[r] = later.seconds;
		later_cpu[r] = later.cpu_seconds;
		struct scrape_result gz = scrape(a, true, false, buf);
		gz_s[r] = gz.seconds;
		gz_cpu[r] = gz.cpu_seconds;
		gz_bytes = gz.bytes;
		if (r == 0) {
			/* the check: every line there, counted once */
			struct scrape_result all = scrape(a, false, true, buf);
			lines = all.lines;
			bytes = all.bytes;
			if (lines != expected_lines(a) || bytes != first.bytes) {
				fprintf(stderr,
					"bench_agg: scrape has %llu lines, "
					"%llu bytes; want %llu lines, %llu "
					"bytes\n",
					(unsigned long long)lines,
					(unsigned long long)bytes,
					(unsigned long long)expected_lines(a),
					(unsigned long long)first.bytes);
				abort();
			}
		}
		agg_destroy(a);
	}
	free(buf);
	bench_report("resident memory per label set (4 HTTP families)", mem, runs,
		     "bytes");
	printf("scrape of %llu label sets: %llu lines, %.0f MB of text, "
	       "%.1f MB gzipped\n",
	       (unsigned long long)sets, (unsigned long long)lines,
	       (double)bytes / 1e6, (double)gz_bytes / 1e6);
	report_sets("view (consistent merged copy)", "", sets, view_s, runs, "s");
	report_sets("counts alone (agg_view_counts, for mixd's /metrics)", "",
		    sets, counts_s, runs, "s");
	report_sets("peak memory the counts alone add", "", sets, counts_peak,
		    runs, "MiB");
	report_sets("view + streamed render", ", first scrape", sets, first_s,
		    runs, "s");
	report_sets("view + streamed render", ", later scrapes", sets, later_s,
		    runs, "s");
	report_sets("view + streamed render", ", later scrapes, CPU time", sets,
		    later_cpu, runs, "s");
	report_sets("view + streamed render + gzip (as served)", "", sets, gz_s,
		    runs, "s");
	report_sets("view + streamed render + gzip (as served)", ", CPU time",
		    sets, gz_cpu, runs, "s");
	report_sets("peak memory a scrape", " adds (view + buffers)", sets, peak,
		    runs, "MiB");
}

int main(void)
{
	int runs = bench_runs(5);
	uint64_t sets = (uint64_t)bench_env("MIXD_BENCH_SETS", 100000);
	if (sets < 4)
		sets = 4;
	bench_header("bench_agg",
		     "the user's config (seed); proxy-shaped records of 20 "
		     "attributes; decode + mesos bindings + rule match + 17 "
		     "dimensions + 4 HTTP families per record, one shard core; "
		     "label sets chosen by destination.service.host and "
		     "response.code");
	static const struct {
		uint64_t sets;
		bool marathon, fresh, churn, attrs;
	} cases[] = {{1000, false, false, false, false},
		     {100000, false, false, false, false},
		     {1000, true, false, false, false},
		     {1000, false, true, false, false},
		     {1000, true, false, true, false},
		     {100000, true, false, false, false},
		     {100000, true, false, true, false},
		     {1000, false, false, false, true},
		     {100000, false, false, false, true}};
	make_layout();
	const unsigned ncases = sizeof cases / sizeof cases[0];
	unsigned k = (unsigned)bench_env("MIXD_BENCH_CASE", 0);
	if (k >= 1 && k <= ncases) {
		throughput(cases[k - 1].sets, runs, cases[k - 1].marathon,
			   cases[k - 1].fresh, cases[k - 1].churn,
			   cases[k - 1].attrs);
		return 0;
	}
	const char *only = getenv("MIXD_BENCH_SCRAPE_ONLY");
	if (!only || !*only || *only == '0')
		for (k = 0; k < ncases; k++)
			throughput(cases[k].sets, runs, cases[k].marathon,
				   cases[k].fresh, cases[k].churn,
				   cases[k].attrs);
	scrapes(runs, sets);
	return 0;
}
