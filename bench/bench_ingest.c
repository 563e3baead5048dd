/*
 * bench_ingest -- producer -> ring -> consumer, through the real pieces:
 * libmixd in producer threads, mixd's socket server and shard threads
 * (which decode and validate every record) in the same process.
 *
 * Records are shaped like a proxy's report: 20 attributes, about 250 bytes.
 * A producer that finds its ring full retries, so the rate is what the
 * consumer sustains end to end; producer cost is measured separately, on a
 * ring with room, as the time one record takes through each of libmixd's
 * three ways in: the builder (mixd_record_begin .. mixd_record_commit),
 * mixd_report(), and a record template. Beside them, a floor: a template
 * of one string as long as the proxy record, so that writing it is one
 * copy of the same number of bytes into the same ring -- what the memory
 * traffic alone costs, before any encoding.
 *
 * Between bursts the producer waits for the shard by polling, as a
 * producer under load -- the only time its cost adds up -- never idles.
 * Case 10 measures the template again with mixd_client_flush()'s own wait,
 * 1 ms sleeps, between bursts: on this VM an idle vCPU halts (cpuidle
 * haltpoll), and each burst then starts on a cold core.
 *
 * MIXD_BENCH_CASE=K runs one case alone, in the order printed: 1-4 the
 * producer costs (builder, mixd_report(), template, floor), 5-9 the
 * throughput cases, 10 the template after idle milliseconds.
 * MIXD_BENCH_RING_KIB=N gives the producer-cost cases a ring of N KiB
 * instead of 4 MiB (a power of two; at least 1024, for a
 * burst to fit): where the ring's lines come from, for a probe.
 *
 * Instructions per template record (the repeatable measure on a shared
 * machine), with no mixd and no other thread, so that valgrind runs it:
 *	MIXD_BENCH_OFFLINE=100000 valgrind --tool=callgrind \
 *		--toggle-collect=mixd_template_report build/bench/bench_ingest
 * then divide the total by 100,000.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mixd/client.h>

#include "proxy_record.h"

#include "agg/agg.h"
#include "attr/attr.h"
#include "bench_util.h"
#include "ingest/ingest.h"

#define RECORDS_PER_PRODUCER 4000000

static char sock_path[108];

static int proxy_record(mixd_client *c, uint64_t i)
{
	mixd_record *r = mixd_record_begin(c);
	mixd_set_string(r, MIXD_ATTR_CONTEXT_PROTOCOL, "http", 4);
	mixd_set_string(r, MIXD_ATTR_CONTEXT_REPORTER_KIND, "inbound", 7);
	mixd_set_string(r, MIXD_ATTR_SOURCE_UID, "kubernetes://pp-v1.1f0c", 23);
	mixd_set_string(r, MIXD_ATTR_DESTINATION_UID, "kubernetes://rv-v2.c96b",
			23);
	uint8_t sip[4] = {10, 0, (uint8_t)(i >> 8), (uint8_t)i};
	uint8_t dip[4] = {10, 1, 0, 9};
	mixd_set_ip(r, MIXD_ATTR_SOURCE_IP, sip, 4);
	mixd_set_ip(r, MIXD_ATTR_DESTINATION_IP, dip, 4);
	mixd_set_int64(r, MIXD_ATTR_DESTINATION_PORT, 9080);
	mixd_set_string(r, MIXD_ATTR_DESTINATION_SERVICE_HOST, "reviews", 7);
	mixd_set_string(r, MIXD_ATTR_REQUEST_METHOD, "GET", 3);
	mixd_set_string(r, MIXD_ATTR_REQUEST_PATH, "/reviews/0", 10);
	mixd_set_string(r, MIXD_ATTR_REQUEST_HOST, "reviews:9080", 12);
	mixd_set_int64(r, MIXD_ATTR_REQUEST_SIZE, (int64_t)(i & 1023));
	mixd_set_int64(r, MIXD_ATTR_RESPONSE_SIZE, (int64_t)(i & 4095));
	mixd_set_int64(r, MIXD_ATTR_RESPONSE_CODE, 200);
	mixd_set_duration(r, MIXD_ATTR_RESPONSE_DURATION, 5000000);
	mixd_set_timestamp(r, MIXD_ATTR_REQUEST_TIME, 1700000000000000000ll);
	mixd_set_bool(r, MIXD_ATTR_CONNECTION_MTLS, 1);
	mixd_set_string(r, MIXD_ATTR_SOURCE_PRINCIPAL, "ns/default/sa/pp", 16);
	mixd_set_string(r, MIXD_ATTR_API_PROTOCOL, "http", 4);
	mixd_set_int64(r, MIXD_ATTR_CONNECTION_SENT_BYTES, 300);
	return mixd_record_commit(r);
}

/* The same record through mixd_report(): one call, encoded in place. */
static int proxy_report(mixd_client *c, uint64_t i)
{
#define S(a, s) {.attr = a, .type = MIXD_T_STRING, .len = sizeof(s) - 1, .p = s}
#define I(a, t, v) {.attr = a, .type = t, .i = v}
	uint8_t sip[4] = {10, 0, (uint8_t)(i >> 8), (uint8_t)i};
	uint8_t dip[4] = {10, 1, 0, 9};
	struct mixd_value v[20] = {
		S(MIXD_ATTR_CONTEXT_PROTOCOL, "http"),
		S(MIXD_ATTR_CONTEXT_REPORTER_KIND, "inbound"),
		S(MIXD_ATTR_SOURCE_UID, "kubernetes://pp-v1.1f0c"),
		S(MIXD_ATTR_DESTINATION_UID, "kubernetes://rv-v2.c96b"),
		{.attr = MIXD_ATTR_SOURCE_IP, .type = MIXD_T_IP, .len = 4, .p = sip},
		{.attr = MIXD_ATTR_DESTINATION_IP, .type = MIXD_T_IP, .len = 4,
		 .p = dip},
		I(MIXD_ATTR_DESTINATION_PORT, MIXD_T_INT64, 9080),
		S(MIXD_ATTR_DESTINATION_SERVICE_HOST, "reviews"),
		S(MIXD_ATTR_REQUEST_METHOD, "GET"),
		S(MIXD_ATTR_REQUEST_PATH, "/reviews/0"),
		S(MIXD_ATTR_REQUEST_HOST, "reviews:9080"),
		I(MIXD_ATTR_REQUEST_SIZE, MIXD_T_INT64, (int64_t)(i & 1023)),
		I(MIXD_ATTR_RESPONSE_SIZE, MIXD_T_INT64, (int64_t)(i & 4095)),
		I(MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, 200),
		I(MIXD_ATTR_RESPONSE_DURATION, MIXD_T_DURATION, 5000000),
		I(MIXD_ATTR_REQUEST_TIME, MIXD_T_TIMESTAMP, 1700000000000000000ll),
		{.attr = MIXD_ATTR_CONNECTION_MTLS, .type = MIXD_T_BOOL, .b = 1},
		S(MIXD_ATTR_SOURCE_PRINCIPAL, "ns/default/sa/pp"),
		S(MIXD_ATTR_API_PROTOCOL, "http"),
		I(MIXD_ATTR_CONNECTION_SENT_BYTES, MIXD_T_INT64, 300),
	};
#undef S
#undef I
	return mixd_report(c, v, 20);
}

/*
 * The same record through a template of proxy_fields (proxy_record.h):
 * the layout is prepared once (per client, as a proxy would at start-up);
 * per record only the values.
 */
static mixd_template *proxy_tpl; /* for the client of the current run */

static int proxy_template(mixd_client *c, uint64_t i)
{
	(void)c; /* the template knows its client */
	/* Every value assigned per record, as a proxy fills them from its
	 * request. Not an initializer list: with one, GCC zeroes the whole
	 * array before it stores the values (a rep stos of 320 bytes, some
	 * 25 ns a record here). */
	struct mixd_slot v[20];
#define S(k, s) (v[k].p = s, v[k].len = sizeof(s) - 1)
	uint8_t sip[4] = {10, 0, (uint8_t)(i >> 8), (uint8_t)i};
	static const uint8_t dip[4] = {10, 1, 0, 9};
	S(0, "http");
	S(1, "inbound");
	S(2, "kubernetes://pp-v1.1f0c");
	S(3, "kubernetes://rv-v2.c96b");
	v[4].p = sip, v[4].len = 4;
	v[5].p = dip, v[5].len = 4;
	v[6].i = 9080;
	S(7, "reviews");
	S(8, "GET");
	S(9, "/reviews/0");
	S(10, "reviews:9080");
	v[11].i = (int64_t)(i & 1023);
	v[12].i = (int64_t)(i & 4095);
	v[13].i = 200;
	v[14].i = 5000000;
	v[15].i = 1700000000000000000ll;
	v[16].b = 1;
	S(17, "ns/default/sa/pp");
	S(18, "http");
	v[19].i = 300;
#undef S
	return mixd_template_report(proxy_tpl, v, 0);
}

/* The floor: one string attribute, the proxy record's size in all. */
static const struct mixd_field floor_field[1] = {
	{MIXD_ATTR_REQUEST_PATH, MIXD_T_STRING},
};
static mixd_template *floor_tpl;
static char floor_bytes[1024];
static uint32_t floor_len;

static int floor_template(mixd_client *c, uint64_t i)
{
	(void)c;
	floor_bytes[0] = (char)i;
	struct mixd_slot v[1] = {{.p = floor_bytes, .len = floor_len}};
	return mixd_template_report(floor_tpl, v, 0);
}

typedef int (*write_fn)(mixd_client *c, uint64_t i);

/* mixd's ingest and shards, in this process. */
struct inproc {
	struct attr_vocab *vocab;
	struct agg *agg;
	struct ingest_server *srv;
};

static void inproc_start(struct inproc *d, unsigned shards)
{
	d->vocab = attr_vocab_create();
	struct agg_options o = {.shards = shards};
	if (!d->vocab || agg_create(&o, d->vocab, &d->agg) || agg_start(d->agg))
		abort();
	struct ingest_sink sink = agg_sink(d->agg);
	char err[256];
	if (ingest_server_start(sock_path, &sink, NULL, &d->srv, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
}

static void inproc_stop(struct inproc *d)
{
	ingest_server_stop_accepting(d->srv);
	agg_drain_and_stop(d->agg);
	ingest_server_destroy(d->srv);
	agg_destroy(d->agg);
	attr_vocab_destroy(d->vocab);
}

struct prod_arg {
	write_fn write;
	mixd_client *c;
	uint64_t n;
	uint64_t full; /* commits that found the ring full (retried) */
};

static void *producer(void *p)
{
	struct prod_arg *a = p;
	for (uint64_t i = 0; i < a->n;) {
		if (a->write(a->c, i) == 0)
			i++;
		else
			a->full++;
	}
	return NULL;
}

static uint64_t accepted(struct agg *agg)
{
	struct agg_ingest_stats s;
	agg_ingest_stats(agg, &s);
	return s.records[INGEST_SHM] + s.records[INGEST_SOCKET];
}

/* One run: @np producer threads over @transport. Returns records/s. */
static double run(int np, enum mixd_transport transport, unsigned shards,
		  write_fn write)
{
	struct inproc d;
	inproc_start(&d, shards);
	mixd_client *c;
	struct mixd_client_options co = {.transport = transport,
					 .ring_bytes = 4u << 20};
	if (mixd_client_open(sock_path, &co, &c) ||
	    mixd_template_create(c, proxy_fields, PROXY_FIELDS, &proxy_tpl))
		abort();
	/* Connect and hand the rings over before the clock starts. */
	struct prod_arg a[8];
	pthread_t t[8];
	uint64_t t0 = bench_now_ns();
	for (int i = 0; i < np; i++) {
		a[i] = (struct prod_arg){write, c, RECORDS_PER_PRODUCER, 0};
		pthread_create(&t[i], NULL, producer, &a[i]);
	}
	for (int i = 0; i < np; i++)
		pthread_join(t[i], NULL);
	uint64_t total = (uint64_t)np * RECORDS_PER_PRODUCER;
	while (accepted(d.agg) < total)
		usleep(50);
	double secs = (double)(bench_now_ns() - t0) / 1e9;
	mixd_template_destroy(proxy_tpl);
	mixd_client_close(c);
	inproc_stop(&d);
	return (double)total / secs;
}

/* Until the shard has taken every record committed to @c: polled, so the
 * calling thread's core stays busy (see the top of this file); or, with
 * @idle, mixd_client_flush()'s sleeps. */
static void wait_taken(mixd_client *c, bool idle)
{
	if (!idle)
		while (mixd_client_flush(c, 0) == -ETIMEDOUT)
			;
	if (mixd_client_flush(c, 10000))
		abort();
}

/*
 * Producer cost alone: bursts of 2,000 records into a 4 MiB ring that a live
 * shard empties between bursts, so no commit finds it full and no page is
 * touched for the first time while the clock runs. @idle: wait for the
 * shard asleep, not polling.
 */
static double producer_ns(write_fn write, bool idle)
{
	struct inproc d;
	inproc_start(&d, 1);
	mixd_client *c;
	struct mixd_client_options co = {.ring_bytes = (uint32_t)bench_env("MIXD_BENCH_RING_KIB", 4096) << 10};
	if (mixd_client_open(sock_path, &co, &c) ||
	    mixd_template_create(c, proxy_fields, PROXY_FIELDS, &proxy_tpl) ||
	    mixd_template_create(c, floor_field, 1, &floor_tpl))
		abort();
	uint64_t spent = 0, n = 0;
	/* The thread's ring is made on its first record: one untimed burst
	 * makes it, maps it and hands it over. */
	for (int i = 0; i < 2000; i++)
		if (write(c, (uint64_t)i))
			abort();
	wait_taken(c, idle);
	for (int burst = 0; burst < 300; burst++) {
		uint64_t t0 = bench_now_ns();
		for (int i = 0; i < 2000; i++)
			if (write(c, n + (uint64_t)i))
				abort();
		spent += bench_now_ns() - t0;
		n += 2000;
		wait_taken(c, idle);
	}
	mixd_template_destroy(floor_tpl);
	mixd_template_destroy(proxy_tpl);
	mixd_client_close(c);
	inproc_stop(&d);
	return (double)spent / (double)n;
}

/* Bytes one record takes in a ring, framing included. */
static double record_bytes(void)
{
	mixd_client *c;
	struct mixd_client_options co = {.ring_bytes = 256u << 10};
	if (mixd_client_open("unix:///nonexistent/mixd-bench.sock", &co, &c))
		abort();
	for (int i = 0; i < 100; i++)
		proxy_record(c, (uint64_t)i);
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	mixd_client_close(c);
	return (double)st.bytes / (double)st.written;
}

/* MIXD_BENCH_OFFLINE=N: N template records into a ring nobody reads (one
 * large enough for them all), and nothing else. */
static int offline(uint64_t n)
{
	mixd_client *c;
	struct mixd_client_options co = {.ring_bytes = 256u << 20};
	if (mixd_client_open("unix:///nonexistent/mixd-bench.sock", &co, &c) ||
	    mixd_template_create(c, proxy_fields, PROXY_FIELDS, &proxy_tpl))
		abort();
	uint64_t failed = 0;
	for (uint64_t i = 0; i < n; i++)
		failed += proxy_template(c, i) != 0;
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	printf("offline: %lu template records written, %lu failed, %.1f bytes "
	       "each\n",
	       (unsigned long)st.written, (unsigned long)failed,
	       (double)st.bytes / (double)(st.written ? st.written : 1));
	mixd_template_destroy(proxy_tpl);
	mixd_client_close(c);
	return failed ? 1 : 0;
}

int main(void)
{
	uint64_t off = bench_env("MIXD_BENCH_OFFLINE", 0);
	if (off)
		return offline(off);
	snprintf(sock_path, sizeof sock_path, "/tmp/mixd-bench-%d.sock",
		 (int)getpid());
	int runs = bench_runs(5);
	char workload[512];
	snprintf(workload, sizeof workload,
		 "libmixd producer threads -> ring (shm memfd, or socket) -> "
		 "mixd shard decoding and validating every record; proxy-shaped "
		 "records of 20 attributes, %.0f bytes framed; %d M records per "
		 "producer; 4 MiB rings; a full ring is retried",
		 record_bytes(), RECORDS_PER_PRODUCER / 1000000);
	bench_header("bench_ingest", workload);
	double s[BENCH_RUNS_MAX];
	/* framed = 8-byte frame header + 7-byte attribute header + string */
	floor_len = (uint32_t)record_bytes() - 8 - 7;

	const unsigned only = (unsigned)bench_env("MIXD_BENCH_CASE", 0);
	struct {
		const char *label;
		write_fn write;
	} costs[] = {
		{"producer cost, record builder (begin, 20 setters, commit)",
		 proxy_record},
		{"producer cost, mixd_report (one call, 20 values)", proxy_report},
		{"producer cost, record template (20 values, layout prepared "
		 "once)",
		 proxy_template},
		{"producer floor: one string of the record's size (a copy, no "
		 "encoding)",
		 floor_template},
	};
	const unsigned ncosts = sizeof costs / sizeof costs[0];
	for (unsigned k = 0; k < ncosts; k++) {
		if (only && only != k + 1)
			continue;
		for (int i = 0; i < runs; i++)
			s[i] = producer_ns(costs[k].write, false);
		bench_report(costs[k].label, s, runs, "ns/record");
	}

	struct {
		const char *label;
		int np;
		enum mixd_transport t;
		unsigned shards;
		write_fn write;
	} cases[] = {
		{"shm, 1 producer, 1 shard", 1, MIXD_TRANSPORT_SHM, 1, proxy_report},
		{"shm, 1 producer (template), 1 shard", 1, MIXD_TRANSPORT_SHM, 1,
		 proxy_template},
		{"shm, 2 producers, 2 shards", 2, MIXD_TRANSPORT_SHM, 2,
		 proxy_report},
		{"socket, 1 producer, 1 shard", 1, MIXD_TRANSPORT_SOCKET, 1,
		 proxy_report},
		{"socket, 2 producers, 2 shards", 2, MIXD_TRANSPORT_SOCKET, 2,
		 proxy_report},
	};
	for (unsigned k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		if (only && only != ncosts + k + 1)
			continue;
		for (int i = 0; i < runs; i++)
			s[i] = run(cases[k].np, cases[k].t, cases[k].shards,
				   cases[k].write) / 1e6;
		bench_report(cases[k].label, s, runs, "M records/s");
	}
	const unsigned ncases = sizeof cases / sizeof cases[0];
	if (!only || only == ncosts + ncases + 1) {
		for (int i = 0; i < runs; i++)
			s[i] = producer_ns(proxy_template, true);
		bench_report("producer cost, record template, each burst after "
			     "a 1 ms sleep (a cold core)",
			     s, runs, "ns/record");
	}
	unlink(sock_path);
	return 0;
}
