/*
 * test_client -- libmixd against mixd's real socket server and shards, in
 * one process: records made before mixd listens arrive once it does, a full
 * ring drops and counts, one ring per thread, the socket transport, invalid
 * records, custom names, retired rings, and what each setter writes.
 *
 * MIXD_TEST_THREADED
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <mixd/client.h>
#include <mixd/ring.h>

#include "agg/agg.h"
#include "frames.h"
#include "attr/attr.h"
#include "ingest/ingest.h"

struct daemon {
	struct attr_vocab *vocab;
	struct agg *agg;
	struct ingest_server *srv;
};

static char sock_path[108];

static void daemon_start(struct daemon *d)
{
	d->vocab = attr_vocab_create();
	assert_non_null(d->vocab);
	struct agg_options o = {.shards = 2, .idle_sleep_max_us = 1000};
	assert_int_equal(agg_create(&o, d->vocab, &d->agg), 0);
	assert_int_equal(agg_start(d->agg), 0);
	struct ingest_sink sink = agg_sink(d->agg);
	char err[256];
	int rc = ingest_server_start(sock_path, &sink, NULL, &d->srv, err, sizeof err);
	if (rc)
		fail_msg("%s", err);
}

static void daemon_stop(struct daemon *d)
{
	ingest_server_stop_accepting(d->srv);
	agg_drain_and_stop(d->agg);
	ingest_server_destroy(d->srv);
	agg_destroy(d->agg);
	attr_vocab_destroy(d->vocab);
}

static uint64_t accepted(struct daemon *d)
{
	struct agg_ingest_stats s;
	agg_ingest_stats(d->agg, &s);
	return s.records[INGEST_SHM] + s.records[INGEST_SOCKET];
}

/* Wait until the daemon has accepted @n records (or 10 s pass). */
static uint64_t wait_accepted(struct daemon *d, uint64_t n)
{
	for (int i = 0; i < 10000 && accepted(d) < n; i++)
		usleep(1000);
	return accepted(d);
}

/* After a flush: mixd accepted all @written records of @c and rejected
 * none, and @c refused @invalid records of its own. */
static void assert_delivered(struct mixd_client *c, struct daemon *d,
			     uint64_t written, uint64_t invalid)
{
	assert_int_equal(mixd_client_flush(c, 10000), 0);
	assert_int_equal(wait_accepted(d, written), written);
	struct agg_ingest_stats as;
	agg_ingest_stats(d->agg, &as);
	for (int r = 1; r < INGEST_REJ_COUNT; r++)
		assert_int_equal(as.rejected[r], 0);
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	assert_int_equal(st.written, written);
	assert_int_equal(st.dropped_invalid, invalid);
}

/* A client of a mixd that is not there: its records stay in its rings. */
static mixd_client *client_without_mixd(void)
{
	mixd_client *c;
	assert_int_equal(mixd_client_open("unix:///nonexistent/mixd.sock", NULL,
					  &c),
			 0);
	return c;
}

static int proxy_record_rc(mixd_client *c, int64_t code)
{
	mixd_record *r = mixd_record_begin(c);
	mixd_set_cstr(r, MIXD_ATTR_CONTEXT_PROTOCOL, "http");
	mixd_set_cstr(r, MIXD_ATTR_SOURCE_UID, "kubernetes://productpage-v1.x");
	mixd_set_int64(r, MIXD_ATTR_RESPONSE_CODE, code);
	mixd_set_duration(r, MIXD_ATTR_RESPONSE_DURATION, 5000000);
	uint8_t ip[4] = {10, 0, 0, 7};
	mixd_set_ip(r, MIXD_ATTR_DESTINATION_IP, ip, 4);
	struct mixd_kv kv[] = {{"istio", 5, "reviews", 7}, {"version", 7, "v1", 2}};
	mixd_set_string_map(r, MIXD_ATTR_DESTINATION_LABELS, kv, 2);
	return mixd_record_commit(r);
}

static void proxy_record(mixd_client *c, int64_t code)
{
	assert_int_equal(proxy_record_rc(c, code), 0);
}

static int setup(void **state)
{
	snprintf(sock_path, sizeof sock_path, "/tmp/mixd-test-client-%d.sock",
		 (int)getpid());
	return 0;
}

static void records_made_before_mixd_listens_arrive_when_it_does(void **state)
{
	mixd_client *c;
	unlink(sock_path);
	assert_int_equal(mixd_client_open(sock_path, NULL, &c), 0);
	for (int i = 0; i < 500; i++)
		proxy_record(c, 200);
	/* No mixd: the records wait in the ring; nothing blocks. */
	assert_int_equal(mixd_client_flush(c, 50), -ETIMEDOUT);
	assert_int_equal(mixd_client_pending(c), 500);
	struct daemon d;
	daemon_start(&d);
	assert_int_equal(mixd_client_flush(c, 10000), 0);
	assert_int_equal(mixd_client_pending(c), 0);
	assert_int_equal(wait_accepted(&d, 500), 500);
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	assert_int_equal(st.written, 500);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.rings, 1);
	mixd_client_close(c);
	daemon_stop(&d);
}

static void a_full_ring_drops_and_counts_and_mixd_sees_the_drops(void **state)
{
	mixd_client *c;
	unlink(sock_path);
	struct mixd_client_options o = {.ring_bytes = 256 * 1024};
	assert_int_equal(mixd_client_open(sock_path, &o, &c), 0);
	int ok = 0, full = 0;
	for (int i = 0; i < 5000; i++) {
		mixd_record *r = mixd_record_begin(c);
		mixd_set_string(r, MIXD_ATTR_REQUEST_PATH,
				"/0123456789012345678901234567890123456789", 41);
		int rc = mixd_record_commit(r);
		if (rc == 0)
			ok++;
		else if (rc == -ENOBUFS)
			full++;
	}
	assert_int_equal(ok + full, 5000);
	assert_true(full > 0);
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	assert_int_equal(st.written, (uint64_t)ok);
	assert_int_equal(st.dropped_full, (uint64_t)full);

	struct daemon d;
	daemon_start(&d);
	assert_int_equal(mixd_client_flush(c, 10000), 0);
	assert_int_equal(wait_accepted(&d, (uint64_t)ok), (uint64_t)ok);
	struct agg_ingest_stats as;
	for (int i = 0; i < 1000; i++) {
		agg_ingest_stats(d.agg, &as);
		if (as.dropped_ring_full == (uint64_t)full)
			break;
		usleep(1000);
	}
	assert_int_equal(as.dropped_ring_full, (uint64_t)full);
	mixd_client_close(c);
	daemon_stop(&d);
}

struct thread_arg {
	mixd_client *c;
	int n;
};

static void *record_thread(void *p)
{
	struct thread_arg *a = p;
	/* No cmocka assertions off the main thread: a full ring is allowed
	 * here, and accounted for by the caller through the stats. */
	for (int i = 0; i < a->n; i++)
		(void)proxy_record_rc(a->c, 200 + i % 5);
	return NULL;
}

static void each_thread_gets_its_own_ring(void **state)
{
	struct daemon d;
	daemon_start(&d);
	mixd_client *c;
	assert_int_equal(mixd_client_open(sock_path, NULL, &c), 0);
	pthread_t t[4];
	struct thread_arg a = {c, 20000};
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, record_thread, &a), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	/* Exited threads' rings stay until drained, so all four may show. */
	assert_true(st.rings <= 4);
	assert_int_equal(st.written + st.dropped, 80000);
	assert_int_equal(mixd_client_flush(c, -1), 0); /* no deadline */
	assert_int_equal(wait_accepted(&d, st.written), st.written);
	mixd_client_close(c);
	daemon_stop(&d);
}

/* A thread may outlive its client: threads done with it whose exit
 * races the client's close ring it through their own descriptor, never
 * through the freed client or its closed (perhaps reused) eventfd. Under
 * TSan the old code showed the read of the freed client. */
static pthread_barrier_t done_reporting;

static void *report_then_exit(void *p)
{
	(void)proxy_record_rc(p, 200);
	pthread_barrier_wait(&done_reporting);
	return NULL; /* the thread's rings retire now, as close runs */
}

static void threads_exiting_while_the_client_closes(void **state)
{
	(void)state;
	for (int round = 0; round < 20; round++) {
		mixd_client *c = client_without_mixd();
		pthread_barrier_init(&done_reporting, NULL, 5);
		pthread_t t[4];
		for (int i = 0; i < 4; i++)
			assert_int_equal(
				pthread_create(&t[i], NULL, report_then_exit, c), 0);
		pthread_barrier_wait(&done_reporting);
		mixd_client_close(c);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&done_reporting);
	}
}

/* A "mixd" that takes each connection and closes it at once, as mixd
 * does when it refuses a ring: the client must back off, not reconnect
 * every 10 ms for ever. */
struct slammer {
	int fd, accepts;
	pthread_t t;
};

static void *slam(void *p)
{
	struct slammer *s = p;
	int c;
	while ((c = accept(s->fd, NULL, NULL)) >= 0) {
		__atomic_add_fetch(&s->accepts, 1, __ATOMIC_RELAXED);
		close(c);
	}
	return NULL;
}

/* A mixd that reads its one stream connection slowly (800 KB/s), parsing
 * frames and counting those that tell it of drops, until @stop. */
struct slow_reader {
	char path[108];
	int fd;
	int tells, stop; /* atomic: counts frames with drops seen */
	pthread_t t;
};

static void *read_slowly(void *p)
{
	struct slow_reader *s = p;
	int c = accept(s->fd, NULL, NULL);
	assert_true(c >= 0);
	static uint8_t buf[1 << 20];
	size_t have = 0, at = sizeof(struct mixd_hello);
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		usleep(20 * 1000);
		ssize_t k = recv(c, buf + have, 16 * 1024, MSG_DONTWAIT);
		if (k > 0)
			have += (size_t)k;
		uint32_t fh[2];
		while (have >= at + sizeof fh) {
			memcpy(fh, buf + at, sizeof fh);
			uint64_t size = MIXD_FRAME_ALIGN(MIXD_FRAME_HDR + (uint64_t)fh[0]);
			if (have < at + size)
				break;
			struct mixd_frame_counts fc;
			if (fh[1] == MIXD_FRAME_COUNTS) {
				memcpy(&fc, buf + at + MIXD_FRAME_HDR, sizeof fc);
				if (fc.dropped)
					__atomic_add_fetch(&s->tells, 1,
							   __ATOMIC_RELEASE);
			}
			at += size;
		}
		if (at > sizeof buf / 2) { /* keep the unparsed rest */
			memmove(buf, buf + at, have - at);
			have -= at;
			at = 0;
		}
	}
	close(c);
	return NULL;
}

/* A slow reader listening on a path of its own; its address in @addr. */
static void slow_reader_start(struct slow_reader *s, char *addr, size_t n)
{
	snprintf(s->path, sizeof s->path, "/tmp/mixd-slow-%d.sock", (int)getpid());
	unlink(s->path);
	s->fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", s->path);
	assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(s->fd, 16), 0);
	assert_int_equal(pthread_create(&s->t, NULL, read_slowly, s), 0);
	snprintf(addr, n, "unix://%s", s->path);
}

static void slow_reader_stop(struct slow_reader *s)
{
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	pthread_join(s->t, NULL);
	close(s->fd);
	unlink(s->path);
}

/* A socket ring that never empties (mixd reads slower than the proxy
 * writes) still tells mixd of its drops while they happen, again and
 * again (each 100 ms), not once the load is over. */
static void drops_are_told_while_a_socket_ring_stays_full(void **state)
{
	(void)state;
	struct slow_reader s = {0};
	char addr[128];
	slow_reader_start(&s, addr, sizeof addr);
	mixd_client *c;
	struct mixd_client_options o = {.transport = MIXD_TRANSPORT_SOCKET};
	assert_int_equal(mixd_client_open(addr, &o, &c), 0);
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	bool told = false;
	for (;;) { /* flat out: far more than 800 KB/s */
		for (int i = 0; i < 1000; i++)
			(void)proxy_record_rc(c, 200); /* -ENOBUFS: dropped */
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((told = __atomic_load_n(&s.tells, __ATOMIC_ACQUIRE) >= 5) ||
		    t.tv_sec - t0.tv_sec > 5)
			break;
	}
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	assert_true(st.dropped_full > 0);
	assert_true(told);
	slow_reader_stop(&s);
	mixd_client_close(c);
}

struct flat_out {
	mixd_client *c;
	int stop; /* atomic */
};

static void *write_flat_out(void *p)
{
	struct flat_out *w = p;
	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
		(void)proxy_record_rc(w->c, 200); /* -ENOBUFS: dropped */
	return NULL;
}

/* A flush waits for what was committed before it, not for a moment when
 * every ring is empty: with a thread writing flat out to a mixd that reads
 * slower (the ring never empties) it still returns, once what the ring
 * held at the call is read. */
static void a_flush_returns_while_another_thread_writes_on(void **state)
{
	(void)state;
	struct slow_reader s = {0};
	char addr[128];
	slow_reader_start(&s, addr, sizeof addr);
	struct mixd_client_options o = {.transport = MIXD_TRANSPORT_SOCKET,
					.ring_bytes = 256 * 1024};
	struct flat_out w = {0};
	assert_int_equal(mixd_client_open(addr, &o, &w.c), 0);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, write_flat_out, &w), 0);
	usleep(200 * 1000); /* the ring full */
	assert_int_equal(mixd_client_flush(w.c, 10000), 0);
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	struct mixd_client_stats st;
	mixd_client_stats(w.c, &st);
	assert_true(st.dropped_full > 0); /* it was full */
	slow_reader_stop(&s);
	mixd_client_close(w.c);
}

static void a_connection_dropped_at_once_backs_off(void **state)
{
	(void)state;
	struct slammer s = {0};
	char path[108];
	snprintf(path, sizeof path, "/tmp/mixd-slam-%d.sock", (int)getpid());
	unlink(path);
	s.fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
	assert_int_equal(bind(s.fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(s.fd, 16), 0);
	assert_int_equal(pthread_create(&s.t, NULL, slam, &s), 0);
	char addr[128];
	snprintf(addr, sizeof addr, "unix://%s", path);
	mixd_client *c;
	assert_int_equal(mixd_client_open(addr, NULL, &c), 0);
	proxy_record(c, 200); /* a ring, so a connection to make */
	usleep(1000 * 1000);
	int n = __atomic_load_n(&s.accepts, __ATOMIC_RELAXED);
	mixd_client_close(c);
	/* 10, 20, 40, ... ms apart: about 7 in a second, not 100 */
	assert_true(n >= 2);
	assert_true(n <= 12);
	shutdown(s.fd, SHUT_RDWR);
	close(s.fd);
	pthread_join(s.t, NULL);
	unlink(path);
}

static void the_socket_transport_delivers_the_same_records(void **state)
{
	struct daemon d;
	daemon_start(&d);
	mixd_client *c;
	struct mixd_client_options o = {.transport = MIXD_TRANSPORT_SOCKET};
	assert_int_equal(mixd_client_open(sock_path, &o, &c), 0);
	int sent = 0;
	for (int i = 0; i < 100000; i++) {
		mixd_record *r = mixd_record_begin(c);
		mixd_set_cstr(r, MIXD_ATTR_CONTEXT_PROTOCOL, "grpc");
		mixd_set_int64(r, MIXD_ATTR_REQUEST_SIZE, i);
		if (mixd_record_commit(r) == 0)
			sent++;
		if (i % 4096 == 0)
			usleep(100); /* let the sender keep up: no drops here */
	}
	assert_int_equal(mixd_client_flush(c, 10000), 0);
	assert_int_equal(wait_accepted(&d, (uint64_t)sent), (uint64_t)sent);
	struct agg_ingest_stats as;
	agg_ingest_stats(d.agg, &as);
	assert_int_equal(as.records[INGEST_SOCKET], (uint64_t)sent);
	assert_int_equal(as.records[INGEST_SHM], 0);
	mixd_client_close(c);
	daemon_stop(&d);
}

/* Records committed just before mixd_client_close(), after the background
 * thread's last pass, still go: the close gives each socket what it takes
 * at once (these few fit its buffer). They were left in the ring. */
static void a_socket_close_sends_what_the_socket_takes(void **state)
{
	(void)state;
	struct daemon d;
	daemon_start(&d);
	mixd_client *c;
	struct mixd_client_options o = {.transport = MIXD_TRANSPORT_SOCKET};
	assert_int_equal(mixd_client_open(sock_path, &o, &c), 0);
	proxy_record(c, 200);
	assert_int_equal(mixd_client_flush(c, 10000), 0); /* connected */
	const struct mixd_value v = {.attr = MIXD_ATTR_RESPONSE_CODE,
				     .type = MIXD_T_INT64,
				     .i = 200};
	for (int i = 0; i < 300; i++)
		assert_int_equal(mixd_report(c, &v, 1), 0);
	mixd_client_close(c);
	assert_int_equal(wait_accepted(&d, 301), 301);
	daemon_stop(&d);
}

static void invalid_records_are_dropped_and_counted(void **state)
{
	struct daemon d;
	daemon_start(&d);
	mixd_client *c;
	assert_int_equal(mixd_client_open(sock_path, NULL, &c), 0);
	mixd_record *r = mixd_record_begin(c);
	uint8_t ip[3] = {1, 2, 3};
	mixd_set_ip(r, MIXD_ATTR_SOURCE_IP, ip, 3);
	assert_int_equal(mixd_record_commit(r), -EMSGSIZE);
	r = mixd_record_begin(c);
	mixd_set_cstr(r, 0x7000, "no such attribute");
	assert_int_equal(mixd_record_commit(r), -EMSGSIZE);
	r = mixd_record_begin(c);
	static char big[MIXD_RECORD_MAX];
	memset(big, 'x', sizeof big);
	mixd_set_string(r, MIXD_ATTR_REQUEST_PATH, big, sizeof big);
	assert_int_equal(mixd_record_commit(r), -EMSGSIZE);
	/* A dictionary attribute of another type than its own: mixd would
	 * refuse the whole record (reason "type"); the client does, counted
	 * as invalid. */
	r = mixd_record_begin(c);
	mixd_set_int64(r, MIXD_ATTR_REQUEST_HOST, 5);
	assert_int_equal(mixd_record_commit(r), -EMSGSIZE);
	r = mixd_record_begin(c);
	mixd_set_bytes(r, MIXD_ATTR_REQUEST_PATH, "/x", 2);
	assert_int_equal(mixd_record_commit(r), -EMSGSIZE);
	r = mixd_record_begin(c);
	mixd_set_bool(r, MIXD_ATTR_RESPONSE_CODE, 1);
	assert_int_equal(mixd_record_commit(r), -EMSGSIZE);
	const struct mixd_value wrong = {.attr = MIXD_ATTR_RESPONSE_CODE,
					 .type = MIXD_T_DOUBLE,
					 .d = 200};
	assert_int_equal(mixd_report(c, &wrong, 1), -EMSGSIZE);
	/* ... but the string types stand for one another */
	r = mixd_record_begin(c);
	mixd_set_typed_string(r, MIXD_ATTR_REQUEST_PATH, MIXD_T_URI, "/x", 2);
	assert_int_equal(mixd_record_commit(r), 0);
	proxy_record(c, 201);
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	assert_int_equal(st.written, 2);
	assert_int_equal(st.dropped_invalid, 7);
	assert_int_equal(mixd_client_flush(c, 10000), 0);
	assert_int_equal(wait_accepted(&d, 2), 2);
	struct agg_ingest_stats as;
	for (int i = 0; i < 1000; i++) {
		agg_ingest_stats(d.agg, &as);
		if (as.dropped_invalid == 7)
			break;
		usleep(1000);
	}
	assert_int_equal(as.dropped_invalid, 7);
	for (int k = 1; k < INGEST_REJ_COUNT; k++)
		assert_int_equal(as.rejected[k], 0);
	mixd_client_close(c);
	daemon_stop(&d);
}

static void custom_names_travel_inline(void **state)
{
	mixd_client *c;
	assert_int_equal(mixd_client_open(sock_path, NULL, &c), 0);
	mixd_attr a, b, again;
	assert_int_equal(mixd_attr_custom(c, "my.custom", &a), 0);
	assert_int_equal(mixd_attr_custom(c, "source.uid", &b), 0);
	assert_int_equal(b, MIXD_ATTR_SOURCE_UID);
	assert_int_equal(mixd_attr_custom(c, "my.custom", &again), 0);
	assert_int_equal(a, again);
	assert_int_equal(mixd_attr_custom(c, "", &again), -EINVAL);
	/* The longest name a record can carry, with a bool; one byte more
	 * could never be sent. */
	static char longest[MIXD_ATTR_NAME_MAX + 2];
	memset(longest, 'n', MIXD_ATTR_NAME_MAX + 1);
	mixd_attr big;
	assert_int_equal(mixd_attr_custom(c, longest, &big), -EINVAL);
	longest[MIXD_ATTR_NAME_MAX] = 0;
	assert_int_equal(mixd_attr_custom(c, longest, &big), 0);
	mixd_record *rb = mixd_record_begin(c);
	mixd_set_bool(rb, big, 1);
	assert_int_equal(mixd_record_commit(rb), 0);
	assert_int_equal(mixd_attr_lookup("response.code"), MIXD_ATTR_RESPONSE_CODE);
	assert_int_equal(mixd_attr_lookup("no.such"), -1);
	assert_int_equal(mixd_attr_type(MIXD_ATTR_RESPONSE_DURATION),
			 MIXD_T_DURATION);

	struct daemon d;
	daemon_start(&d);
	mixd_record *r = mixd_record_begin(c);
	mixd_set_cstr(r, a, "value");
	mixd_set_double(r, a, 1.5); /* the same name twice: last one wins */
	assert_int_equal(mixd_record_commit(r), 0);
	assert_int_equal(mixd_client_flush(c, 10000), 0);
	assert_int_equal(wait_accepted(&d, 2), 2); /* the longest name's too */
	mixd_client_close(c);
	daemon_stop(&d);
}

static void mixd_report_writes_a_whole_record_in_one_call(void **state)
{
	struct daemon d;
	daemon_start(&d);
	mixd_client *c;
	assert_int_equal(mixd_client_open(sock_path, NULL, &c), 0);
	mixd_attr custom;
	assert_int_equal(mixd_attr_custom(c, "x.custom", &custom), 0);
	uint8_t ip[16] = {0x20, 0x01, [15] = 1};
	struct mixd_kv kv[] = {{"istio", 5, "reviews", 7}};
	struct mixd_value v[] = {
		{.attr = MIXD_ATTR_CONTEXT_PROTOCOL, .type = MIXD_T_STRING,
		 .len = 4, .p = "http"},
		{.attr = MIXD_ATTR_RESPONSE_CODE, .type = MIXD_T_INT64, .i = 503},
		{.attr = MIXD_ATTR_RESPONSE_DURATION, .type = MIXD_T_DURATION,
		 .i = 1000},
		{.attr = MIXD_ATTR_CONNECTION_MTLS, .type = MIXD_T_BOOL, .b = 1},
		{.attr = MIXD_ATTR_SOURCE_IP, .type = MIXD_T_IP, .len = 16, .p = ip},
		{.attr = MIXD_ATTR_SOURCE_LABELS, .type = MIXD_T_STRING_MAP,
		 .len = 1, .map = kv},
		{.attr = custom, .type = MIXD_T_DOUBLE, .d = 0.5},
	};
	for (int i = 0; i < 1000; i++)
		assert_int_equal(mixd_report(c, v, sizeof v / sizeof v[0]), 0);
	/* Invalid: an IP of 3 bytes, an unknown type, an unknown handle. */
	struct mixd_value bad[] = {
		{.attr = MIXD_ATTR_SOURCE_IP, .type = MIXD_T_IP, .len = 3, .p = ip},
	};
	assert_int_equal(mixd_report(c, bad, 1), -EMSGSIZE);
	bad[0] = (struct mixd_value){.attr = MIXD_ATTR_SOURCE_UID, .type = 77};
	assert_int_equal(mixd_report(c, bad, 1), -EMSGSIZE);
	bad[0] = (struct mixd_value){.attr = 0x8100, .type = MIXD_T_INT64};
	assert_int_equal(mixd_report(c, bad, 1), -EMSGSIZE);
	assert_delivered(c, &d, 1000, 3);
	mixd_client_close(c);
	daemon_stop(&d);
}

/* A template's fields of every fast kind: strings, a word, an IP, a bool,
 * a duration. */
static const struct mixd_field mixed_fields[6] = {
	{MIXD_ATTR_REQUEST_PATH, MIXD_T_STRING},
	{MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64},
	{MIXD_ATTR_SOURCE_IP, MIXD_T_IP},
	{MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL},
	{MIXD_ATTR_REQUEST_HOST, MIXD_T_STRING},
	{MIXD_ATTR_RESPONSE_DURATION, MIXD_T_DURATION},
};

/*
 * A template whose attributes are distinct is encoded grouped (fixed-width
 * fields first) and straight into the ring: across many wraps of a small
 * ring, with strings short and long, every record must decode, and those
 * that meet the ring's end go through the stack instead.
 */
static void a_grouped_template_survives_ring_wraps(void **state)
{
	struct daemon d;
	daemon_start(&d);
	mixd_client *c;
	struct mixd_client_options co = {.ring_bytes = 256u << 10};
	assert_int_equal(mixd_client_open(sock_path, &co, &c), 0);
	mixd_template *t;
	assert_int_equal(mixd_template_create(c, mixed_fields, 6, &t), 0);
	static char path[1500];
	memset(path, 'p', sizeof path);
	uint8_t ip6[16] = {0x20, 0x01, [15] = 1};
	const int n = 6000;
	for (int i = 0; i < n; i++) {
		struct mixd_slot v[6] = {
			{.p = path, .len = (uint32_t)(i * 7 % sizeof path)},
			{.i = 200 + i % 5},
			{.p = ip6, .len = 16},
			{.b = i & 1},
			{.p = "reviews:9080", .len = (uint32_t)(i % 13)},
			{.i = i},
		};
		int rc;
		while ((rc = mixd_template_report(t, v, 0)) == -ENOBUFS)
			assert_int_equal(mixd_client_flush(c, 10000), 0);
		assert_int_equal(rc, 0);
	}
	assert_delivered(c, &d, (uint64_t)n, 0);
	mixd_template_destroy(t);
	mixd_client_close(c);
	daemon_stop(&d);
}

/*
 * What a template writes, decoded: a sink of the test's own takes the
 * producer's ring from the real server, and every record is decoded and
 * its values compared with what was reported -- grouped records (fixed
 * widths first), grouped records with a field left out, and ones going
 * the long way (a custom name), across wraps of a small ring.
 */
struct capture {
	pthread_mutex_t mu;
	struct ingest_ring *ring; /* the producer's, once attached */
	struct ingest_ring *queue;
};

static void *cap_attached(void *ctx, struct ingest_ring *r)
{
	struct capture *c = ctx;
	pthread_mutex_lock(&c->mu);
	assert_null(c->ring); /* one producer thread: one ring */
	c->ring = r;
	pthread_mutex_unlock(&c->mu);
	return c;
}

static void cap_closed(void *ctx, void *token, struct ingest_ring *r)
{
	(void)ctx, (void)token, (void)r; /* destroyed by the test */
}

static struct ingest_ring *cap_queue(void *ctx, unsigned conn_id)
{
	(void)conn_id;
	return ((struct capture *)ctx)->queue;
}

static void cap_kick(void *ctx, struct ingest_ring *q)
{
	(void)ctx, (void)q;
}

/* Consume what the producer's ring holds, once the server has handed it
 * over; false before that. */
static bool cap_poll(struct capture *c, ingest_record_fn fn, void *ctx,
		     struct ingest_ring_counts *counts, uint8_t *scratch)
{
	pthread_mutex_lock(&c->mu);
	struct ingest_ring *r = c->ring;
	pthread_mutex_unlock(&c->mu);
	if (r)
		ingest_ring_poll(r, fn, NULL, ctx, 1u << 20, counts, scratch);
	return r != NULL;
}

struct tpl_check {
	const struct attr_vocab *vocab;
	int custom_slot;
	uint64_t seen;
	uint64_t layouts; /* records that came as layout records */
};

static const char tpl_path[700] = {[0 ... 699] = 'q'};

/* Record i's values, as tpl_values_are_what_the_ring_carries() reports. */
static enum ingest_reject tpl_check_record(void *ctx, const uint8_t *p,
					   uint32_t len,
					   const struct ingest_layout *lay)
{
	struct tpl_check *k = ctx;
	static struct attr_table t;
	attr_table_clear(&t);
	assert_int_equal(lay ? ingest_decode_layout(lay, p, len, &t, NULL, NULL)
			     : ingest_decode(p, len, k->vocab, &t),
			 INGEST_REJ_NONE);
	k->layouts += lay != NULL;
	const struct attr_value *v = attr_table_get(&t, MIXD_ATTR_RESPONSE_DURATION);
	assert_non_null(v);
	int64_t i = v->i;
	assert_int_equal(i, (int64_t)k->seen);
	unsigned kind = (unsigned)(i % 3); /* 0 whole, 1 mTLS left out, 2 slow */
	v = attr_table_get(&t, MIXD_ATTR_REQUEST_PATH);
	assert_non_null(v);
	assert_int_equal(v->len, (uint32_t)(i * 7 % sizeof tpl_path));
	assert_memory_equal(v->s, tpl_path, v->len);
	v = attr_table_get(&t, MIXD_ATTR_RESPONSE_CODE);
	assert_int_equal(v->type, ATTR_INT64);
	assert_int_equal(v->i, 200 + i % 5);
	v = attr_table_get(&t, MIXD_ATTR_CONNECTION_MTLS);
	if (kind == 1) {
		assert_null(v);
	} else {
		assert_non_null(v);
		assert_int_equal(v->b, i & 1);
	}
	v = attr_table_get(&t, MIXD_ATTR_SOURCE_IP);
	assert_int_equal(v->len, i & 2 ? 16 : 4);
	assert_int_equal(v->ip[0], i & 2 ? 0x20 : 10);
	assert_int_equal(v->ip[v->len - 1], (uint8_t)i);
	v = attr_table_get(&t, MIXD_ATTR_REQUEST_HOST);
	assert_int_equal(v->len, (uint32_t)(i % 13));
	assert_memory_equal(v->s, "reviews:9080", v->len);
	v = attr_table_get(&t, MIXD_ATTR_REQUEST_TIME);
	assert_int_equal(v->type, ATTR_TIMESTAMP);
	assert_true(v->i == 1700000000000000000ll + i);
	v = attr_table_get(&t, (unsigned)k->custom_slot);
	if (kind == 2) {
		assert_non_null(v);
		assert_true(v->d == (double)i / 4);
	} else {
		assert_null(v);
	}
	k->seen++;
	return INGEST_REJ_NONE;
}

/* Keys of the records taken, as mixd's record memo would make them. */
struct key_check {
	const struct attr_vocab *vocab;
	struct ingest_keyspec ks;
	uint8_t key[2][1024];
	uint32_t len[2];
	unsigned seen;
};

static enum ingest_reject key_of_record(void *ctx, const uint8_t *p,
					uint32_t len,
					const struct ingest_layout *lay)
{
	struct key_check *k = ctx;
	static struct attr_table t;
	static uint8_t kb[INGEST_KEY_ROOM];
	struct ingest_key key = {.buf = kb};
	attr_table_clear(&t);
	assert_int_equal(lay ? ingest_decode_layout(lay, p, len, &t, &k->ks, &key)
			     : ingest_decode_keyed(p, len, k->vocab, &t, &k->ks,
						   &key),
			 INGEST_REJ_NONE);
	assert_true(k->seen < 2 && key.len <= sizeof k->key[0]);
	memcpy(k->key[k->seen], kb, key.len);
	k->len[k->seen++] = key.len;
	return INGEST_REJ_NONE;
}

/* An empty record, as an empty template writes it: no layout. */
static enum ingest_reject empty_record(void *ctx, const uint8_t *p,
				       uint32_t len,
				       const struct ingest_layout *lay)
{
	(void)p;
	assert_null(lay);
	assert_int_equal(len, 0);
	++*(unsigned *)ctx;
	return INGEST_REJ_NONE;
}

/* A socket server on sock_path whose stream records go to @cap's queue. */
static struct ingest_server *capture_server(struct capture *cap)
{
	assert_int_equal(ingest_ring_create_queue(INGEST_QUEUE_MIN, &cap->queue), 0);
	struct ingest_sink sink = {cap_attached, cap_closed, cap_queue,
				   cap_kick, cap};
	struct ingest_server *srv;
	char err[256];
	if (ingest_server_start(sock_path, &sink, NULL, &srv, err, sizeof err))
		fail_msg("%s", err);
	return srv;
}

static void tpl_values_are_what_the_ring_carries(void **state)
{
	struct capture cap = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct ingest_server *srv = capture_server(&cap);

	struct attr_vocab *vocab = attr_vocab_create();
	struct tpl_check check = {
		.vocab = vocab,
		.custom_slot = attr_vocab_add(vocab, "x.quarter", ATTR_DOUBLE,
					      NULL)};
	assert_true(check.custom_slot >= 0);
	mixd_client *c;
	struct mixd_client_options co = {.ring_bytes = 256u << 10}; /* least */
	assert_int_equal(mixd_client_open(sock_path, &co, &c), 0);
	mixd_attr custom;
	assert_int_equal(mixd_attr_custom(c, "x.quarter", &custom), 0);
	struct mixd_field fields[8];
	memcpy(fields, mixed_fields, sizeof mixed_fields);
	fields[6] = (struct mixd_field){MIXD_ATTR_REQUEST_TIME,
					MIXD_T_TIMESTAMP};
	fields[7] = (struct mixd_field){custom, MIXD_T_DOUBLE};
	/* Without the custom field: grouped, whatever is left out; with it,
	 * every record goes the long way. */
	mixd_template *t, *slow;
	assert_int_equal(mixd_template_create(c, fields, 7, &t), 0);
	assert_int_equal(mixd_template_create(c, fields, 8, &slow), 0);

	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts counts = {0};
	const uint64_t n = 6000; /* ~2 MB: the ring wraps several times */
	for (uint64_t i = 0; i < n;) {
		uint8_t ip4[4] = {10, 0, 0, (uint8_t)i};
		uint8_t ip6[16] = {0x20, 0x01, [15] = (uint8_t)i};
		struct mixd_slot v[8] = {
			{.p = tpl_path, .len = (uint32_t)(i * 7 % sizeof tpl_path)},
			{.i = 200 + (int64_t)(i % 5)},
			{.p = i & 2 ? ip6 : ip4, .len = i & 2 ? 16 : 4},
			{.b = (int)(i & 1)},
			{.p = "reviews:9080", .len = (uint32_t)(i % 13)},
			{.i = (int64_t)i},
			{.i = 1700000000000000000ll + (int64_t)i},
			{.d = (double)i / 4},
		};
		int rc = i % 3 == 0   ? mixd_template_report(t, v, 0)
			 : i % 3 == 1 ? mixd_template_report(t, v, 1u << 3)
				      : mixd_template_report(slow, v, 0);
		if (rc == 0) {
			i++;
			continue;
		}
		assert_int_equal(rc, -ENOBUFS);
		/* Full: drain what the server has handed over. */
		if (!cap_poll(&cap, tpl_check_record, &check, &counts, scratch))
			usleep(1000);
	}
	for (int w = 0; w < 10000 && check.seen < n; w++) {
		cap_poll(&cap, tpl_check_record, &check, &counts, scratch);
		usleep(1000);
	}
	assert_int_equal(check.seen, n);
	/* whole records of the grouped template came as layout records */
	assert_int_equal(check.layouts, (n + 2) / 3);
	assert_int_equal(counts.records, n);
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	assert_int_equal(st.written, n);
	assert_int_equal(st.dropped_invalid, 0);

	/* Leaving a field out keeps the others in the grouped order, so the
	 * memo key of the fields mixd reads is the same either way (and the
	 * whole record, a layout record, has the key of its grouped form). */
	struct key_check kc = {.vocab = vocab};
	uint64_t mask[ATTR_PRESENT_WORDS] = {0};
	const unsigned chosen[] = {MIXD_ATTR_REQUEST_PATH,
				   MIXD_ATTR_RESPONSE_CODE,
				   MIXD_ATTR_SOURCE_IP, MIXD_ATTR_REQUEST_HOST};
	for (size_t i = 0; i < sizeof chosen / sizeof chosen[0]; i++)
		mask[chosen[i] / 64] |= 1ull << (chosen[i] % 64);
	ingest_keyspec_init(&kc.ks, mask);
	uint8_t ip4[4] = {10, 0, 0, 1};
	struct mixd_slot same[7] = {
		{.p = tpl_path, .len = 9}, {.i = 503}, {.p = ip4, .len = 4},
		{.b = 1},		   {.p = "reviews", .len = 7},
		{.i = 1},		   {.i = 2},
	};
	assert_int_equal(mixd_template_report(t, same, 0), 0);
	assert_int_equal(mixd_template_report(t, same, 1u << 3), 0);
	for (int w = 0; w < 10000 && kc.seen < 2; w++) {
		cap_poll(&cap, key_of_record, &kc, &counts, scratch);
		usleep(1000);
	}
	assert_int_equal(kc.seen, 2);
	assert_int_equal(kc.len[0], kc.len[1]);
	assert_memory_equal(kc.key[0], kc.key[1], kc.len[0]);

	/* A template of no fields writes empty records, which mixd takes. */
	mixd_template *none;
	unsigned empty = 0;
	assert_int_equal(mixd_template_create(c, NULL, 0, &none), 0);
	assert_int_equal(mixd_template_report(none, NULL, 0), 0);
	for (int w = 0; w < 10000 && !empty; w++) {
		cap_poll(&cap, empty_record, &empty, &counts, scratch);
		usleep(1000);
	}
	assert_int_equal(empty, 1);
	mixd_template_destroy(none);

	mixd_template_destroy(slow);
	mixd_template_destroy(t);
	mixd_client_close(c);
	ingest_server_stop_accepting(srv);
	ingest_server_destroy(srv);
	ingest_ring_destroy(cap.ring);
	ingest_ring_destroy(cap.queue);
	attr_vocab_destroy(vocab);
}

/*
 * Wide layout templates, of one kind and of every kind, decoded value by value: the encoder runs a
 * group's fields from its end (more than 16 partly in a loop), so every
 * count of a group and every length class of a string must land where the
 * layout says. Strings are 0 to 40 bytes (past TPL_SHORT too), IPs both
 * lengths.
 */
enum { WIDE_RECORDS = 2000, WIDE_FIELDS = 24 };

static const char wide_pool[] =
	"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+-";

struct wide_check {
	const mixd_attr *attr; /* the template's fields */
	const uint8_t *type;
	unsigned n;
	uint64_t seen, layouts;
};

/* Field @j of record @i: a string's length, a word, a bool, an IP's. */
static uint32_t wide_len(uint64_t i, unsigned j)
{
	return (uint32_t)((i * 7 + j * 5) % 41);
}

static int64_t wide_word(uint64_t i, unsigned j)
{
	return (int64_t)(i * 1000003 + j);
}

static enum ingest_reject wide_record(void *ctx, const uint8_t *p,
				      uint32_t len,
				      const struct ingest_layout *lay)
{
	struct wide_check *k = ctx;
	static struct attr_table t;
	attr_table_clear(&t);
	assert_non_null(lay);
	assert_int_equal(ingest_decode_layout(lay, p, len, &t, NULL, NULL),
			 INGEST_REJ_NONE);
	k->layouts++;
	uint64_t i = k->seen++;
	for (unsigned j = 0; j < k->n; j++) {
		const struct attr_value *v = attr_table_get(&t, k->attr[j]);
		assert_non_null(v);
		switch (k->type[j]) {
		case MIXD_T_STRING:
			assert_int_equal(v->len, wide_len(i, j));
			assert_memory_equal(v->s, wide_pool + (i + j) % 16,
					    v->len);
			break;
		case MIXD_T_BOOL:
			assert_int_equal(v->b, (i + j) & 1);
			break;
		case MIXD_T_IP:
			assert_int_equal(v->len, (i + j) & 1 ? 16 : 4);
			for (uint32_t b = 0; b < v->len; b++)
				assert_int_equal(v->ip[b], (uint8_t)(i + j + b));
			break;
		case MIXD_T_DOUBLE:
			assert_true(v->d == (double)wide_word(i, j));
			break;
		default: /* int64, timestamp, duration */
			assert_true(v->i == wide_word(i, j));
		}
	}
	return INGEST_REJ_NONE;
}

/* Write WIDE_RECORDS records of the template of @n fields and read them
 * back through @cap. */
static void wide_round_trip(mixd_client *c, struct capture *cap,
			    const mixd_attr *attr, const uint8_t *type,
			    unsigned n)
{
	struct mixd_field f[MIXD_LAYOUT_FIELDS];
	for (unsigned j = 0; j < n; j++)
		f[j] = (struct mixd_field){attr[j], type[j]};
	mixd_template *t;
	assert_int_equal(mixd_template_create(c, f, n, &t), 0);
	struct wide_check k = {.attr = attr, .type = type, .n = n};
	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts counts = {0};
	for (uint64_t i = 0; i < WIDE_RECORDS;) {
		struct mixd_slot v[MIXD_LAYOUT_FIELDS];
		uint8_t ip[MIXD_LAYOUT_FIELDS][16];
		for (unsigned j = 0; j < n; j++) {
			switch (type[j]) {
			case MIXD_T_STRING:
				v[j].p = wide_pool + (i + j) % 16;
				v[j].len = wide_len(i, j);
				break;
			case MIXD_T_BOOL:
				v[j].b = (int)((i + j) & 1);
				break;
			case MIXD_T_IP:
				for (unsigned b = 0; b < 16; b++)
					ip[j][b] = (uint8_t)(i + j + b);
				v[j].p = ip[j];
				v[j].len = (i + j) & 1 ? 16 : 4;
				break;
			case MIXD_T_DOUBLE:
				v[j].d = (double)wide_word(i, j);
				break;
			default:
				v[j].i = wide_word(i, j);
			}
		}
		int rc = mixd_template_report(t, v, 0);
		if (rc == 0) {
			i++;
			continue;
		}
		assert_int_equal(rc, -ENOBUFS);
		if (!cap_poll(cap, wide_record, &k, &counts, scratch))
			usleep(1000);
	}
	for (int w = 0; w < 10000 && k.seen < WIDE_RECORDS; w++) {
		cap_poll(cap, wide_record, &k, &counts, scratch);
		usleep(1000);
	}
	assert_int_equal(k.seen, WIDE_RECORDS);
	assert_int_equal(k.layouts, WIDE_RECORDS);
	mixd_template_destroy(t);
}

static void wide_layout_templates_carry_every_field(void **state)
{
	(void)state;
	struct capture cap = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct ingest_server *srv = capture_server(&cap);
	mixd_client *c;
	struct mixd_client_options co = {.ring_bytes = 256u << 10};
	assert_int_equal(mixd_client_open(sock_path, &co, &c), 0);

	/* The dictionary's attributes by kind, each list as long as a
	 * grouped template takes (more strings would need over half of a
	 * template's 2 KiB at their worst: not grouped, no layout); and one of
	 * every kind. */
	enum { STR, WORD, OTHER, MIXED, LISTS };
	mixd_attr attr[LISTS][MIXD_LAYOUT_FIELDS];
	uint8_t type[LISTS][MIXD_LAYOUT_FIELDS];
	unsigned n[LISTS] = {0};
	for (unsigned a = 0; a < MIXD_ATTR_DICT_COUNT; a++) {
		int ty = mixd_attr_type((mixd_attr)a);
		unsigned l = ty == MIXD_T_STRING ? STR
			     : ty == MIXD_T_INT64 || ty == MIXD_T_DOUBLE ||
					     ty == MIXD_T_TIMESTAMP ||
					     ty == MIXD_T_DURATION
				     ? WORD
			     : ty == MIXD_T_BOOL || ty == MIXD_T_IP ? OTHER
								   : LISTS;
		if (l == LISTS)
			continue;
		if (n[l] < WIDE_FIELDS) {
			attr[l][n[l]] = (mixd_attr)a;
			type[l][n[l]++] = (uint8_t)ty;
		}
		/* Mixed: every word, bool and IP, strings to fill up. */
		if (n[MIXED] < WIDE_FIELDS && (l != STR || n[STR] <= 6)) {
			attr[MIXED][n[MIXED]] = (mixd_attr)a;
			type[MIXED][n[MIXED]++] = (uint8_t)ty;
		}
	}
	/* Strings past 16 (the loop), words and the rest as many as the
	 * dictionary has, a mixed layout at the widest. */
	assert_true(n[STR] > 16 && n[WORD] >= 8 && n[OTHER] >= 3);
	assert_true(n[MIXED] > 16);
	for (unsigned l = 0; l < LISTS; l++)
		wide_round_trip(c, &cap, attr[l], type[l], n[l]);
	/* Every count of strings from 1 to 17 (each case of the unrolled
	 * steps, and the loop's first), in order. */
	for (unsigned m = 1; m <= 17; m++)
		wide_round_trip(c, &cap, attr[STR], type[STR], m);

	mixd_client_close(c);
	ingest_server_stop_accepting(srv);
	ingest_server_destroy(srv);
	ingest_ring_destroy(cap.ring);
	ingest_ring_destroy(cap.queue);
}

/*
 * What mixd_set_bytes() and mixd_set_typed_string() write, decoded: the
 * values byte for byte (NULs included: lengths are counted), and the type
 * each carries on the wire, which mixd_set_typed_string() takes from its
 * caller.
 */
struct setter_check {
	const struct attr_vocab *vocab;
	int blob, mail; /* slots of the custom names */
	uint8_t wire_type[ATTR_MAX_SLOTS];
	unsigned seen;
};

static void note_wire_type(void *ctx, const uint8_t *enc, size_t n, int slot)
{
	struct setter_check *k = ctx;
	assert_true(n >= 3 && slot >= 0);
	k->wire_type[slot] = enc[2]; /* after the u16 attribute id */
}

static const char blob_value[] = {'\0', 'a', '\0', '\377', '\0'};
static const char long_blob[300] = {[0 ... 149] = '\1', [151 ... 299] = '\2'};

static void assert_value(const struct setter_check *k,
			 const struct attr_table *t, unsigned slot,
			 uint8_t wire_type, const void *want, uint32_t len)
{
	const struct attr_value *v = attr_table_get(t, slot);
	assert_non_null(v);
	assert_int_equal(k->wire_type[slot], wire_type);
	assert_int_equal(v->len, len);
	assert_memory_equal(v->s, want, len);
}

static enum ingest_reject setter_record(void *ctx, const uint8_t *p,
					uint32_t len,
					const struct ingest_layout *lay)
{
	struct setter_check *k = ctx;
	static struct attr_table t;
	assert_null(lay); /* the builder writes headered records */
	attr_table_clear(&t);
	memset(k->wire_type, 0, sizeof k->wire_type);
	assert_int_equal(ingest_decode_reference(p, len, k->vocab, &t,
						 note_wire_type, k),
			 INGEST_REJ_NONE);
	if (k->seen++ == 0) {
		assert_value(k, &t, (unsigned)k->blob, MIXD_T_BYTES, blob_value,
			     sizeof blob_value);
		assert_value(k, &t, MIXD_ATTR_SOURCE_UID, MIXD_T_STRING,
			     "kubernetes://a", 14);
		assert_value(k, &t, MIXD_ATTR_REQUEST_PATH, MIXD_T_URI,
			     "/a?b=c", 6);
		assert_value(k, &t, MIXD_ATTR_DESTINATION_SERVICE_HOST,
			     MIXD_T_DNS_NAME, "reviews.default", 15);
		assert_value(k, &t, (unsigned)k->mail, MIXD_T_EMAIL,
			     "ops@example.com", 15);
		assert_value(k, &t, MIXD_ATTR_SOURCE_USER, MIXD_T_EMAIL, "a@b",
			     3);
	} else {
		/* a value longer than the inline copies, and an empty one */
		assert_value(k, &t, (unsigned)k->blob, MIXD_T_BYTES, long_blob,
			     sizeof long_blob);
		assert_value(k, &t, (unsigned)k->mail, MIXD_T_EMAIL, "", 0);
	}
	return INGEST_REJ_NONE;
}

static void bytes_and_typed_strings_are_what_the_ring_carries(void **state)
{
	struct capture cap = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct ingest_server *srv = capture_server(&cap);
	struct attr_vocab *vocab = attr_vocab_create();
	struct setter_check check = {
		.vocab = vocab,
		.blob = attr_vocab_add(vocab, "x.blob", ATTR_BYTES, NULL),
		.mail = attr_vocab_add(vocab, "x.mail", ATTR_EMAIL, NULL),
	};
	assert_true(check.blob >= 0 && check.mail >= 0);
	mixd_client *c;
	assert_int_equal(mixd_client_open(sock_path, NULL, &c), 0);
	mixd_attr blob, mail;
	assert_int_equal(mixd_attr_custom(c, "x.blob", &blob), 0);
	assert_int_equal(mixd_attr_custom(c, "x.mail", &mail), 0);

	mixd_record *r = mixd_record_begin(c);
	mixd_set_bytes(r, blob, blob_value, sizeof blob_value);
	mixd_set_typed_string(r, MIXD_ATTR_SOURCE_UID, MIXD_T_STRING,
			      "kubernetes://a", 14);
	mixd_set_typed_string(r, MIXD_ATTR_REQUEST_PATH, MIXD_T_URI, "/a?b=c",
			      6);
	mixd_set_typed_string(r, MIXD_ATTR_DESTINATION_SERVICE_HOST,
			      MIXD_T_DNS_NAME, "reviews.default", 15);
	mixd_set_typed_string(r, mail, MIXD_T_EMAIL, "ops@example.com", 15);
	mixd_set_typed_string(r, MIXD_ATTR_SOURCE_USER, MIXD_T_EMAIL, "a@b", 3);
	assert_int_equal(mixd_record_commit(r), 0);
	r = mixd_record_begin(c);
	mixd_set_bytes(r, blob, long_blob, sizeof long_blob);
	mixd_set_typed_string(r, mail, MIXD_T_EMAIL, "", 0);
	assert_int_equal(mixd_record_commit(r), 0);

	/* Only the string-like types are typed strings: BYTES has its own
	 * setter, and anything else marks the record invalid. */
	static const enum mixd_type not_strings[] = {
		MIXD_T_BYTES, MIXD_T_INT64, MIXD_T_STRING_MAP, 0, MIXD_T_COUNT};
	for (size_t i = 0; i < sizeof not_strings / sizeof not_strings[0];
	     i++) {
		r = mixd_record_begin(c);
		mixd_set_typed_string(r, MIXD_ATTR_REQUEST_PATH, not_strings[i],
				      "x", 1);
		assert_int_equal(mixd_record_commit(r), -EMSGSIZE);
	}
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	assert_int_equal(st.written, 2);
	assert_int_equal(st.dropped_invalid,
			 sizeof not_strings / sizeof not_strings[0]);

	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts counts = {0};
	for (int w = 0; w < 10000 && check.seen < 2; w++) {
		cap_poll(&cap, setter_record, &check, &counts, scratch);
		usleep(1000);
	}
	assert_int_equal(check.seen, 2);
	mixd_client_close(c);
	ingest_server_stop_accepting(srv);
	ingest_server_destroy(srv);
	ingest_ring_destroy(cap.ring);
	ingest_ring_destroy(cap.queue);
	attr_vocab_destroy(vocab);
}

static void a_template_writes_records_of_a_fixed_shape(void **state)
{
	struct daemon d;
	daemon_start(&d);
	mixd_client *c;
	assert_int_equal(mixd_client_open(sock_path, NULL, &c), 0);
	static const struct mixd_field fields[] = {
		{MIXD_ATTR_CONTEXT_PROTOCOL, MIXD_T_STRING},
		{MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64},
		{MIXD_ATTR_RESPONSE_DURATION, MIXD_T_DURATION},
		{MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL},
		{MIXD_ATTR_SOURCE_IP, MIXD_T_IP},
		{MIXD_ATTR_DESTINATION_IP, MIXD_T_IP},
		{MIXD_ATTR_REQUEST_PATH, MIXD_T_STRING},
	};
	mixd_template *t;
	assert_int_equal(mixd_template_create(c, fields, 7, &t), 0);
	uint8_t ip4[4] = {10, 0, 0, 1}, ip6[16] = {0x20, 0x01, [15] = 1};
	static char path[300]; /* longer than the inline copies */
	memset(path, '/', sizeof path);
	struct mixd_slot v[7] = {
		{.p = "http", .len = 4}, {.i = 200}, {.i = 1000}, {.b = 7},
		{.p = ip4, .len = 4},   {.p = ip6, .len = 16},
		{.p = path, .len = sizeof path},
	};
	for (int i = 0; i < 1000; i++) {
		v[6].len = (uint32_t)(i % sizeof path);
		/* Every other record leaves out the bool and the IPv6. */
		assert_int_equal(mixd_template_report(t, v, i & 1 ? 0x28 : 0), 0);
	}

	/* A custom name and a map take the long way, with the same result. */
	mixd_attr custom;
	assert_int_equal(mixd_attr_custom(c, "x.custom", &custom), 0);
	struct mixd_field slow_fields[] = {
		{custom, MIXD_T_DOUBLE},
		{MIXD_ATTR_SOURCE_LABELS, MIXD_T_STRING_MAP},
		{MIXD_ATTR_CONTEXT_PROTOCOL, MIXD_T_STRING},
	};
	mixd_template *slow;
	assert_int_equal(mixd_template_create(c, slow_fields, 3, &slow), 0);
	struct mixd_kv kv[] = {{"istio", 5, "reviews", 7}};
	struct mixd_slot sv[3] = {{.d = 0.5}, {.map = kv, .len = 1},
				  {.p = "tcp", .len = 3}};
	assert_int_equal(mixd_template_report(slow, sv, 0), 0);
	assert_int_equal(mixd_template_report(slow, sv, 1), 0);

	/* Invalid records are dropped and counted: a 3-byte IP, a string
	 * larger than a record. */
	v[4].len = 3;
	assert_int_equal(mixd_template_report(t, v, 0), -EMSGSIZE);
	v[4].len = 4;
	static char big[MIXD_RECORD_MAX];
	v[6] = (struct mixd_slot){.p = big, .len = sizeof big};
	assert_int_equal(mixd_template_report(t, v, 0), -EMSGSIZE);
	/* ... unless the offending field is left out. */
	assert_int_equal(mixd_template_report(t, v, 1u << 6), 0);

	/* Bad templates are refused. */
	mixd_template *bad;
	struct mixd_field bf[] = {{MIXD_ATTR_REQUEST_PATH, 0}};
	assert_int_equal(mixd_template_create(c, bf, 1, &bad), -EINVAL);
	bf[0] = (struct mixd_field){0x8100, MIXD_T_STRING};
	assert_int_equal(mixd_template_create(c, bf, 1, &bad), -EINVAL);
	bf[0] = (struct mixd_field){MIXD_ATTR_REQUEST_PATH, MIXD_T_COUNT};
	assert_int_equal(mixd_template_create(c, bf, 1, &bad), -EINVAL);
	struct mixd_field many[MIXD_TEMPLATE_MAX + 1];
	for (int i = 0; i <= MIXD_TEMPLATE_MAX; i++)
		many[i] = (struct mixd_field){MIXD_ATTR_REQUEST_PATH,
					      MIXD_T_STRING};
	assert_int_equal(mixd_template_create(c, many, MIXD_TEMPLATE_MAX + 1,
					      &bad),
			 -EINVAL);
	assert_int_equal(mixd_template_create(c, many, MIXD_TEMPLATE_MAX, &bad),
			 0);
	mixd_template_destroy(bad);
	/* A repeated attribute keeps the template's order: the long way. */
	mixd_template *twice;
	assert_int_equal(mixd_template_create(c, many, 2, &twice), 0);
	struct mixd_slot two[2] = {{.p = "/a", .len = 2}, {.p = "/b", .len = 2}};
	assert_int_equal(mixd_template_report(twice, two, 0), 0);
	mixd_template_destroy(twice);

	assert_delivered(c, &d, 1004, 2);
	mixd_template_destroy(t);
	mixd_template_destroy(slow);
	mixd_client_close(c);
	daemon_stop(&d);
}

/* A template field of another type than its dictionary attribute's
 * would have every record refused by mixd: refused at creation. */
static void template_fields_must_have_their_attributes_types(void **state)
{
	(void)state;
	mixd_client *c = client_without_mixd();
	mixd_template *t;
	static const struct mixd_field bytes_path[] = {
		{MIXD_ATTR_REQUEST_PATH, MIXD_T_BYTES}};
	static const struct mixd_field double_code[] = {
		{MIXD_ATTR_RESPONSE_CODE, MIXD_T_DOUBLE}};
	static const struct mixd_field uri_path[] = {
		{MIXD_ATTR_REQUEST_PATH, MIXD_T_URI}};
	assert_int_equal(mixd_template_create(c, bytes_path, 1, &t), -EINVAL);
	assert_int_equal(mixd_template_create(c, double_code, 1, &t), -EINVAL);
	assert_int_equal(mixd_template_create(c, uri_path, 1, &t), 0);
	mixd_template_destroy(t);
	mixd_client_close(c);
}

/* fork(): the child's records through its parent's client go nowhere
 * near the parent's ring (they raced the parent's in the same shared
 * memory); the parent's records arrive exactly; a client the child opens
 * itself works. Not under the sanitizers: TSan cannot start threads in
 * the child of a threaded process, and GCC 12's ASan does not lock its
 * allocator around fork(), so a child whose parent had a thread inside
 * it (this process runs the daemon's threads too) can wait for ever on
 * the lock that thread held; glibc's malloc, which libmixd uses in a
 * proxy, takes its locks around fork(). */
static void a_forked_child_does_not_write_its_parents_rings(void **state)
{
	(void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	const int own_n = 0;
#else
	const int own_n = 50;
#endif
	struct daemon d;
	daemon_start(&d);
	mixd_client *c;
	assert_int_equal(mixd_client_open(sock_path, NULL, &c), 0);
	for (int i = 0; i < 100; i++)
		proxy_record(c, 200);
	mixd_attr before_fork;
	assert_int_equal(mixd_attr_custom(c, "x.before_fork", &before_fork), 0);
	/* Forked once every thread is quiet, as a proxy forks workers. */
	assert_int_equal(mixd_client_flush(c, 10000), 0);
	assert_int_equal(wait_accepted(&d, 100), 100);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Only async-signal-safe calls and libmixd's own here. */
		for (int i = 0; i < 1000; i++)
			proxy_record_rc(c, 500);
		struct mixd_client_stats st;
		mixd_client_stats(c, &st);
		mixd_client_close(c);
		/* The exit status says which check failed. */
		if (st.dropped_full != 1000 || st.written != 0)
			_exit(1);
		/* The parent's names without its lock; no new one. */
		mixd_attr a;
		if (mixd_attr_custom(c, "x.before_fork", &a) != 0 ||
		    a != before_fork ||
		    mixd_attr_custom(c, "x.in_child", &a) != -ECHILD)
			_exit(6);
		if (own_n) {
			mixd_client *own;
			if (mixd_client_open(sock_path, NULL, &own) != 0)
				_exit(2);
			for (int i = 0; i < own_n; i++)
				if (proxy_record_rc(own, 201) != 0)
					_exit(3);
			if (mixd_client_flush(own, 10000) != 0) {
				/* Where the records stopped: not connected,
				 * or connected and never taken. */
				struct mixd_client_stats os;
				mixd_client_stats(own, &os);
				char b[160];
				int k = snprintf(b, sizeof b,
						 "child: flush timed out; written "
						 "%llu, rings %u, connected %u\n",
						 (unsigned long long)os.written,
						 (unsigned)os.rings,
						 (unsigned)os.connected);
				if (k > 0 && write(2, b, (size_t)k) < 0)
					_exit(5);
				_exit(4);
			}
		}
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		struct ingest_server_stats ss;
		ingest_server_stats(d.srv, &ss);
		fprintf(stderr,
			"mixd: connections %llu, open %llu, handshakes failed "
			"%llu, missed wakeups %llu, records %llu\n",
			(unsigned long long)ss.connections,
			(unsigned long long)ss.producers,
			(unsigned long long)ss.handshake_failed,
			(unsigned long long)ss.missed_wakeups,
			(unsigned long long)accepted(&d));
		fail_msg("the child %s %d (1: the parent's client counted other "
			 "than 1,000 drops, 2: open, 3: a record, 4: flush, "
			 "6: a custom name)",
			 WIFEXITED(status) ? "exited" : "was killed by signal",
			 WIFEXITED(status) ? WEXITSTATUS(status)
					   : WTERMSIG(status));
	}
	for (int i = 0; i < 100; i++)
		proxy_record(c, 200);
	/* the parent's 200 and the child's own client's, nothing else */
	const uint64_t want = 200 + (uint64_t)own_n;
	assert_int_equal(mixd_client_flush(c, 10000), 0);
	assert_int_equal(wait_accepted(&d, want), want);
	usleep(100 * 1000);
	assert_int_equal(accepted(&d), want);
	struct agg_ingest_stats as;
	agg_ingest_stats(d.agg, &as);
	for (int r = 1; r < INGEST_REJ_COUNT; r++)
		assert_int_equal(as.rejected[r], 0);
	mixd_client_close(c);
	daemon_stop(&d);
}

/* mixd learns a producer has gone when its connection closes: a child
 * that lives on after a fork (a pre-forked worker) must not hold copies
 * of its parent's connections, or a client its parent closes would stay
 * in mixd, ring and producer slot, as long as the child lives. */
static void a_forked_child_does_not_keep_its_parents_connections(void **state)
{
	(void)state;
	struct daemon d;
	daemon_start(&d);
	mixd_client *c;
	assert_int_equal(mixd_client_open(sock_path, NULL, &c), 0);
	for (int i = 0; i < 10; i++)
		proxy_record(c, 200);
	assert_int_equal(mixd_client_flush(c, 10000), 0);
	assert_int_equal(wait_accepted(&d, 10), 10);
	struct ingest_server_stats ss;
	ingest_server_stats(d.srv, &ss);
	assert_int_equal(ss.producers, 1);
	int go[2];
	assert_int_equal(pipe(go), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) { /* lives until the parent says */
		char b;
		close(go[1]);
		_exit(read(go[0], &b, 1) < 0 ? 1 : 0);
	}
	close(go[0]);
	mixd_client_close(c);
	for (int i = 0; i < 5000; i++) {
		ingest_server_stats(d.srv, &ss);
		if (ss.producers == 0)
			break;
		usleep(1000);
	}
	close(go[1]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(ss.producers, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	daemon_stop(&d);
}

/* How many of this process's descriptors and mappings are rings'
 * memfds ("/memfd:mixd-ring"). */
static int ring_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	for (struct dirent *e; d && (e = readdir(d));) {
		char path[300], to[256];
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(path, to, sizeof to - 1);
		if (k > 0) {
			to[k] = 0;
			n += strstr(to, "memfd:mixd-ring") != NULL;
		}
	}
	if (d)
		closedir(d);
	return n;
}

static int ring_maps(void)
{
	int n = 0;
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof line, f))
		n += strstr(line, "memfd:mixd-ring") != NULL;
	if (f)
		fclose(f);
	return n;
}

/* A child that never uses its parent's client (a pre-forked server's
 * worker) holds nothing of its rings: no memfd, no mapping. It held a
 * descriptor and a mapping of each, which kept the parent's ring memory
 * allocated after the parent had freed it, as long as the child lived. */
static void a_forked_child_holds_none_of_its_parents_rings(void **state)
{
	(void)state;
	mixd_client *c = client_without_mixd();
	proxy_record(c, 200);
	assert_true(ring_fds() >= 1 && ring_maps() >= 1);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(ring_fds() == 0 && ring_maps() == 0 ? 0 : 1);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	proxy_record(c, 200); /* the parent's ring is whole */
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	assert_int_equal(st.written, 2);
	mixd_client_close(c);
}

/* memfd_create(), interposed (libmixd is linked into this binary), to
 * make ring creation fail and count the tries. */
static int memfd_fails, memfd_tries; /* atomic */
static int (*real_memfd_create)(const char *, unsigned int);

__attribute__((constructor)) static void find_memfd_create(void)
{
	*(void **)&real_memfd_create = dlsym(RTLD_NEXT, "memfd_create");
}

static int memfd_calls; /* atomic */

int memfd_create(const char *name, unsigned int flags)
{
	__atomic_add_fetch(&memfd_calls, 1, __ATOMIC_RELAXED);
	if (__atomic_load_n(&memfd_fails, __ATOMIC_RELAXED)) {
		__atomic_add_fetch(&memfd_tries, 1, __ATOMIC_RELAXED);
		errno = EMFILE;
		return -1;
	}
	return real_memfd_create(name, flags);
}

/* A thread that cannot get a ring (out of descriptors) drops its records
 * and tries again a second later, not on every record. */
static void a_ring_that_cannot_be_made_is_tried_again_later(void **state)
{
	(void)state;
	mixd_client *c = client_without_mixd();
	__atomic_store_n(&memfd_fails, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(proxy_record_rc(c, 200), -ENOMEM);
	__atomic_store_n(&memfd_fails, 0, __ATOMIC_RELAXED);
	assert_int_equal(__atomic_load_n(&memfd_tries, __ATOMIC_RELAXED), 1);
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	assert_int_equal(st.dropped_full, 1000);
	usleep(1100 * 1000);
	assert_int_equal(proxy_record_rc(c, 200), 0);
	mixd_client_stats(c, &st);
	assert_int_equal(st.written, 1);
	mixd_client_close(c);
}

/* A record the forking thread began before fork() and committed in the
 * child goes to no ring, counted: its builder pointed at the parent's
 * ring, whose mapping the child does not have, and the commit faulted. */
static void a_record_begun_before_fork_is_dropped_in_the_child(void **state)
{
	(void)state;
	mixd_client *c = client_without_mixd();
	proxy_record(c, 200); /* the thread's ring */
	mixd_record *r = mixd_record_begin(c);
	mixd_set_int64(r, MIXD_ATTR_RESPONSE_CODE, 503);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int rc = mixd_record_commit(r);
		struct mixd_client_stats st;
		mixd_client_stats(c, &st);
		_exit(rc == -ENOMEM && st.dropped_full == 1 ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(mixd_record_commit(r), 0); /* the parent's goes on */
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	assert_int_equal(st.written, 2);
	mixd_client_close(c);
}

static mixd_client *churn_client;
static int churn_stop; /* atomic */

static void *one_record(void *arg)
{
	(void)arg;
	proxy_record(churn_client, 200);
	return NULL;
}

/* Threads one after another, each making a ring for one record. */
static void *churn(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&churn_stop, __ATOMIC_ACQUIRE)) {
		pthread_t t;
		if (pthread_create(&t, NULL, one_record, NULL) == 0)
			pthread_join(t, NULL);
	}
	return NULL;
}

/* A fork while another thread makes its ring gives the child none of it:
 * the memfd was open before the ring was in the list the child cleans
 * up, and over 1,000 forks more than half the children kept one (and the
 * ring's memory with it). Not under the sanitizers, whose allocators a
 * child of this busy a process can find locked for ever (see above). */
static void a_fork_while_a_ring_is_made_leaves_the_child_none(void **state)
{
	(void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	skip();
#endif
	/* No mixd: each exited thread's ring waits for one, and past
	 * RETIRED_MAX the oldest is let go; threads go on making rings. */
	churn_client = client_without_mixd();
	const int made = __atomic_load_n(&memfd_calls, __ATOMIC_RELAXED);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, churn, NULL), 0);
	int kept = 0;
	for (int i = 0; i < 1000; i++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			_exit(ring_fds() ? 1 : 0);
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		kept += WEXITSTATUS(status);

	}
	__atomic_store_n(&churn_stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	mixd_client_close(churn_client);
	/* rings were made all along */
	assert_true(__atomic_load_n(&memfd_calls, __ATOMIC_RELAXED) - made >
		    100);
	assert_int_equal(kept, 0);
}

static void *one_record_then_exit(void *p)
{
	(void)proxy_record_rc(p, 200);
	return NULL;
}

/* While mixd is away, exited threads' rings are kept for it, but only the
 * newest 64: a proxy whose threads come and go would otherwise keep a
 * megabyte and a descriptor for every thread it ever had. What the older
 * ones held is counted as dropped, nothing silently. */
static void rings_of_exited_threads_are_bounded_while_mixd_is_away(void **state)
{
	(void)state;
	mixd_client *c = client_without_mixd();
	for (int i = 0; i < 100; i++) {
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, one_record_then_exit, c),
				 0);
		pthread_join(t, NULL);
	}
	struct mixd_client_stats st;
	for (int i = 0; i < 300; i++) { /* the background thread's pass */
		mixd_client_stats(c, &st);
		if (st.rings <= 64)
			break;
		usleep(10 * 1000);
	}
	assert_int_equal(st.rings, 64);
	assert_int_equal(st.written, 64);
	assert_int_equal(st.dropped_full, 36);
	mixd_client_close(c);
}

struct held {
	mixd_client *c;
	pthread_barrier_t *b;
};

/* One record, then wait twice: the ring stays, its thread alive. */
static void *record_then_hold(void *p)
{
	struct held *h = p;
	(void)proxy_record_rc(h->c, 200);
	pthread_barrier_wait(h->b);
	pthread_barrier_wait(h->b);
	return NULL;
}

/*
 * With mixd away and 300 threads' rings waiting for it, the background
 * thread sleeps between tries. It polled with a timeout of 0 whenever a
 * ring's try was due within the millisecond -- with hundreds of rings,
 * nearly always: 11 % of a core at 300 rings, 24 % at 1,000 -- and every
 * due ring tried to connect, though one finding mixd away tells for all.
 */
static void many_rings_waiting_for_mixd_cost_little_cpu(void **state)
{
	(void)state;
	enum { N = 300 };
	mixd_client *c = client_without_mixd();
	pthread_barrier_t b;
	pthread_barrier_init(&b, NULL, N + 1);
	struct held h = {c, &b};
	static pthread_t t[N];
	for (int i = 0; i < N; i++) { /* tries spread over the backoff */
		assert_int_equal(pthread_create(&t[i], NULL, record_then_hold,
						&h),
				 0);
		usleep(2000);
	}
	pthread_barrier_wait(&b);
	usleep(1500 * 1000); /* the backoffs at their longest */
	struct timespec c0, c1;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
	usleep(1000 * 1000);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
	double cpu = (double)(c1.tv_sec - c0.tv_sec) +
		     (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
	const char *san = getenv("MIXD_SANITIZE");
	double limit = san && *san ? 0.25 : 0.05; /* of one second */
	if (cpu >= limit || getenv("MIXD_TEST_VERBOSE"))
		fprintf(stderr, "%.3f s of CPU in 1 s\n", cpu);
	assert_true(cpu < limit);
	pthread_barrier_wait(&b);
	for (int i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&b);
	mixd_client_close(c);
}

/* The background thread ("mixd-client") blocks every signal, whatever the
 * mask of the thread that opened the client: a host that waits for
 * SIGTERM with sigwait() was killed by it instead, the signal's default
 * action taken on the one thread that had it unblocked. */
static void the_background_thread_takes_no_signals(void **state)
{
	(void)state;
	sigset_t none, old;
	sigemptyset(&none);
	pthread_sigmask(SIG_SETMASK, &none, &old);
	mixd_client *c = client_without_mixd();
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	DIR *d = opendir("/proc/self/task");
	assert_non_null(d);
	int found = 0;
	for (struct dirent *e; (e = readdir(d));) {
		char path[300], line[256];
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		bool ours = fgets(line, sizeof line, f) &&
			    !strcmp(line, "mixd-client\n");
		fclose(f);
		if (!ours)
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/status",
			 e->d_name);
		assert_non_null(f = fopen(path, "r"));
		unsigned long long blk = 0;
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "SigBlk: %llx", &blk) == 1)
				break;
		fclose(f);
		static const int sigs[] = {SIGHUP, SIGINT, SIGTERM, SIGALRM,
					   SIGUSR1, SIGCHLD, SIGPIPE};
		for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
			assert_true(blk >> (sigs[i] - 1) & 1);
		found++;
	}
	closedir(d);
	assert_true(found >= 1);
	mixd_client_close(c);
}

struct burst {
	mixd_client *c;
	int n, after;        /* records before and after mixd goes away */
	pthread_mutex_t *mu; /* held by the test until the thread may exit */
};

static void *burst_then_wait(void *p)
{
	struct burst *b = p;
	for (int i = 0; i < b->n; i++)
		(void)proxy_record_rc(b->c, 200);
	pthread_mutex_lock(b->mu);
	for (int i = 0; i < b->after; i++) /* written while mixd is away */
		(void)proxy_record_rc(b->c, 200);
	pthread_mutex_unlock(b->mu);
	return NULL;
}

/* Wait for @c's background thread to let rings go, down to 64. */
static void wait_rings_bounded(mixd_client *c, struct mixd_client_stats *st)
{
	for (int i = 0; i < 300; i++) {
		mixd_client_stats(c, st);
		if (st->rings <= 64)
			break;
		usleep(10 * 1000);
	}
	assert_int_equal(st->rings, 64);
}

/*
 * The same bound over the socket transport, where the client is its own
 * consumer: a thread sends 1,000 records mixd takes, mixd goes away, the
 * thread writes @after more and exits -- first of 65 (@first_out), or
 * last. The ring let go is the one whose thread exited first, and it
 * loses only what mixd never got.
 */
static void evict_socket_ring(bool first_out, int after, uint64_t lost)
{
	struct daemon d;
	daemon_start(&d);
	mixd_client *c;
	struct mixd_client_options o = {.transport = MIXD_TRANSPORT_SOCKET};
	assert_int_equal(mixd_client_open(sock_path, &o, &c), 0);
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&mu);
	struct burst b = {c, 1000, after, &mu};
	pthread_t a;
	assert_int_equal(pthread_create(&a, NULL, burst_then_wait, &b), 0);
	assert_int_equal(wait_accepted(&d, 1000), 1000);
	assert_int_equal(mixd_client_flush(c, 10000), 0);
	daemon_stop(&d);
	struct mixd_client_stats st;
	for (int i = 0; i < 1000; i++) { /* the client sees mixd gone */
		mixd_client_stats(c, &st);
		if (!st.connected)
			break;
		usleep(1000);
	}
	assert_int_equal(st.connected, 0);
	if (first_out) {
		pthread_mutex_unlock(&mu);
		pthread_join(a, NULL);
		usleep(50 * 1000); /* seen retired before the others */
	}
	for (int i = 0; i < 64; i++) {
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, one_record_then_exit, c),
				 0);
		pthread_join(t, NULL);
		if (i == 0)
			usleep(50 * 1000);
	}
	if (!first_out) {
		pthread_mutex_unlock(&mu);
		pthread_join(a, NULL);
	}
	wait_rings_bounded(c, &st);
	assert_int_equal(st.dropped_full, lost);
	assert_int_equal(st.written, 1000 + (uint64_t)after + 64 - lost);
	mixd_client_close(c);
}

static void an_evicted_socket_ring_loses_only_what_mixd_never_got(void **state)
{
	(void)state;
	evict_socket_ring(true, 1, 1); /* it goes: one record lost, not 1,001 */
}

static void the_ring_evicted_is_the_first_whose_thread_exited(void **state)
{
	(void)state;
	evict_socket_ring(false, 2, 1); /* the first of the 64 goes, not it */
}

/* libmixd.so loaded as a plugin would load it, and a thread of the host
 * that recorded through it. */
struct plugin {
	void *so;
	int (*open)(const char *, const struct mixd_client_options *,
		    mixd_client **);
	int (*report)(mixd_client *, const struct mixd_value *, size_t);
	void (*close)(mixd_client *);
	mixd_client *c;
	pthread_mutex_t may_exit;
	int rc, done; /* done: atomic */
};

static void *plugin_thread(void *p)
{
	struct plugin *pl = p;
	struct mixd_value v = {.attr = MIXD_ATTR_RESPONSE_CODE,
			       .type = MIXD_T_INT64,
			       .i = 200};
	pl->rc = pl->report(pl->c, &v, 1);
	__atomic_store_n(&pl->done, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&pl->may_exit);
	pthread_mutex_unlock(&pl->may_exit);
	return NULL; /* the library's TLS destructor runs now */
}

/* Unloaded (dlclose()) after its client is closed, while a thread that
 * recorded through it lives on: that thread's exit runs the library's
 * destructor, which must still be there (the library is never unloaded:
 * -z nodelete). */
static void the_shared_library_survives_dlclose(void **state)
{
	(void)state;
	struct plugin pl = {.may_exit = PTHREAD_MUTEX_INITIALIZER};
	pl.so = dlopen(MIXD_SHARED_LIB, RTLD_NOW | RTLD_LOCAL);
	assert_non_null(pl.so);
	*(void **)&pl.open = dlsym(pl.so, "mixd_client_open");
	*(void **)&pl.report = dlsym(pl.so, "mixd_report");
	*(void **)&pl.close = dlsym(pl.so, "mixd_client_close");
	assert_true(pl.open && pl.report && pl.close);
	assert_int_equal(pl.open("unix:///nonexistent/mixd.sock", NULL, &pl.c),
			 0);
	pthread_mutex_lock(&pl.may_exit);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, plugin_thread, &pl), 0);
	for (int i = 0; i < 5000 && !__atomic_load_n(&pl.done, __ATOMIC_ACQUIRE);
	     i++)
		usleep(1000);
	assert_int_equal(pl.rc, 0);
	pl.close(pl.c);
	dlclose(pl.so);
	pthread_mutex_unlock(&pl.may_exit);
	pthread_join(t, NULL); /* a SIGSEGV here, if it were unmapped */
}

/* A sink whose stream queues are never drained but the last one's: the
 * connections of the others stall on their full queues. */
#define STUCK 48
struct stuck_sink {
	struct ingest_ring *q[STUCK + 1];
	unsigned n;
	pthread_mutex_t mu;
};

static struct ingest_ring *stuck_queue(void *ctx, unsigned conn_id)
{
	(void)conn_id;
	struct stuck_sink *k = ctx;
	pthread_mutex_lock(&k->mu);
	struct ingest_ring *q = k->n <= STUCK ? k->q[k->n++] : NULL;
	pthread_mutex_unlock(&k->mu);
	return q;
}

static void stuck_kick(void *ctx, struct ingest_ring *q)
{
	(void)ctx, (void)q;
}

static enum ingest_reject count_it(void *ctx, const uint8_t *p, uint32_t len,
				   const struct ingest_layout *lay)
{
	(void)p, (void)len, (void)lay;
	++*(uint64_t *)ctx;
	return INGEST_REJ_NONE;
}

/* A stream producer's connection, its hello sent. */
static int stream_socket(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", sock_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	struct mixd_hello h = {.version = MIXD_HELLO_VERSION,
			       .kind = MIXD_HELLO_STREAM};
	memcpy(h.marker, MIXD_HELLO_MARKER, 8);
	assert_int_equal(send(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
	return fd;
}

/* Send up to @n frames of one small record on @fd, for at most @ms
 * milliseconds of a full socket; returns the frames sent. */
static uint64_t stream_frames(int fd, uint64_t n, int ms)
{
	uint8_t f[CODE_FRAME_LEN];
	code_frame(f);
	uint8_t burst[24 * 256];
	for (int i = 0; i < 256; i++)
		memcpy(burst + 24 * i, f, 24);
	uint64_t sent = 0;
	for (int waited = 0; sent < n && waited < ms;) {
		uint64_t k = n - sent < 256 ? n - sent : 256;
		ssize_t w = send(fd, burst, 24 * k, MSG_DONTWAIT);
		if (w <= 0) { /* the socket is full: mixd is not reading */
			usleep(1000);
			waited++;
			continue;
		}
		assert_int_equal(w % 24, 0); /* whole frames, for the count */
		sent += (uint64_t)w / 24;
	}
	return sent;
}

/* Connections stalled on consumers that do not keep up keep what they
 * received in memory of their own, not in the server's 64 shared receive
 * buffers: a producer whose consumer keeps up is not starved by them. */
static void stalled_connections_do_not_starve_the_others(void **state)
{
	(void)state;
	struct stuck_sink k = {.mu = PTHREAD_MUTEX_INITIALIZER};
	for (unsigned i = 0; i <= STUCK; i++)
		assert_int_equal(
			ingest_ring_create_queue(INGEST_QUEUE_MIN, &k.q[i]), 0);
	struct ingest_sink sink = {.stream_queue = stuck_queue,
				   .queue_kick = stuck_kick, .ctx = &k};
	struct ingest_server *srv;
	char err[256];
	assert_int_equal(ingest_server_start(sock_path, &sink, NULL, &srv, err,
					     sizeof err),
			 0);
	int fds[STUCK + 1];
	for (int i = 0; i < STUCK; i++) {
		fds[i] = stream_socket();
		/* far more than a queue holds: the connection stalls */
		stream_frames(fds[i], 1u << 16, 20);
	}
	usleep(300 * 1000);
	fds[STUCK] = stream_socket();
	const uint64_t want = 5000; /* what its queue holds */
	assert_int_equal(stream_frames(fds[STUCK], want, 5000), want);
	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts n = {0};
	uint64_t got = 0;
	for (int i = 0; i < 5000 && got < want; i++) {
		ingest_ring_poll(k.q[STUCK], count_it, NULL, &got, 1u << 20, &n,
				 scratch);
		usleep(1000);
	}
	assert_int_equal(got, want);
	for (int i = 0; i <= STUCK; i++)
		close(fds[i]);
	ingest_server_stop_accepting(srv);
	ingest_server_destroy(srv);
	for (unsigned i = 0; i <= STUCK; i++)
		ingest_ring_destroy(k.q[i]);
}

static void bad_options_are_refused(void **state)
{
	mixd_client *c;
	struct mixd_client_options o = {.ring_bytes = 300000};
	assert_int_equal(mixd_client_open(sock_path, &o, &c), -EINVAL);
	o.ring_bytes = 64 * 1024;
	assert_int_equal(mixd_client_open(sock_path, &o, &c), -EINVAL);
	assert_int_equal(mixd_client_open("tcp://1.2.3.4:5", NULL, &c), -EINVAL);
	assert_int_equal(mixd_client_open("relative/path", NULL, &c), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(records_made_before_mixd_listens_arrive_when_it_does),
		cmocka_unit_test(a_full_ring_drops_and_counts_and_mixd_sees_the_drops),
		cmocka_unit_test(each_thread_gets_its_own_ring),
		cmocka_unit_test(threads_exiting_while_the_client_closes),
		cmocka_unit_test(a_connection_dropped_at_once_backs_off),
		cmocka_unit_test(the_socket_transport_delivers_the_same_records),
		cmocka_unit_test(a_socket_close_sends_what_the_socket_takes),
		cmocka_unit_test(drops_are_told_while_a_socket_ring_stays_full),
		cmocka_unit_test(a_flush_returns_while_another_thread_writes_on),
		cmocka_unit_test(invalid_records_are_dropped_and_counted),
		cmocka_unit_test(custom_names_travel_inline),
		cmocka_unit_test(mixd_report_writes_a_whole_record_in_one_call),
		cmocka_unit_test(a_template_writes_records_of_a_fixed_shape),
		cmocka_unit_test(wide_layout_templates_carry_every_field),
		cmocka_unit_test(template_fields_must_have_their_attributes_types),
		cmocka_unit_test(a_forked_child_does_not_write_its_parents_rings),
		cmocka_unit_test(a_forked_child_does_not_keep_its_parents_connections),
		cmocka_unit_test(a_forked_child_holds_none_of_its_parents_rings),
		cmocka_unit_test(a_record_begun_before_fork_is_dropped_in_the_child),
		cmocka_unit_test(a_fork_while_a_ring_is_made_leaves_the_child_none),
		cmocka_unit_test(a_ring_that_cannot_be_made_is_tried_again_later),
		cmocka_unit_test(rings_of_exited_threads_are_bounded_while_mixd_is_away),
		cmocka_unit_test(many_rings_waiting_for_mixd_cost_little_cpu),
		cmocka_unit_test(the_background_thread_takes_no_signals),
		cmocka_unit_test(an_evicted_socket_ring_loses_only_what_mixd_never_got),
		cmocka_unit_test(the_ring_evicted_is_the_first_whose_thread_exited),
		cmocka_unit_test(the_shared_library_survives_dlclose),
		cmocka_unit_test(stalled_connections_do_not_starve_the_others),
		cmocka_unit_test(a_grouped_template_survives_ring_wraps),
		cmocka_unit_test(tpl_values_are_what_the_ring_carries),
		cmocka_unit_test(bytes_and_typed_strings_are_what_the_ring_carries),
		cmocka_unit_test(bad_options_are_refused),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
