/*
 * producer -- a test producer: writes proxy-shaped records through libmixd
 * exactly as a sidecar would, and can misbehave on purpose.
 *
 *   producer --address unix:///p [--transport shm|socket] [--count N]
 *            [--threads T] [--rate R] [--progress FILE]
 *            [--evil truncate|scribble|forever|forever-closed|bad-utf8]
 *            [--evil-after N] [--linger-ms MS]
 *            [--flush-ms MS] [--template] [--sets N]
 *
 * --template: write through a record template (mixd_template_report())
 * instead of the record builder; over shared memory its records are
 * layout records (values alone, the layout in the segment's header).
 *
 * --sets N: record i describes label set i % N: every attribute a label
 * or a mesos instance reads (protocol, reporter, IPs, destination host
 * "svc-<k>", response code, mTLS) comes from i % N, sizes and durations
 * from i, so records repeat every N and make at most N label sets per
 * family. Without it they come from i (every record a source IP of its
 * own) and the host is one of four services.
 *
 * --progress FILE: after every commit the producer stores two counters in
 * FILE (mapped shared): records started, records committed, and when the
 * last commit happened (CLOCK_MONOTONIC, ns). A test that
 * kills the producer with SIGKILL reads them afterwards and knows how many
 * records were committed, to within the one in flight.
 *
 * --phases "N1,N2,...": write N1 records, then wait until the file
 * FILE.go1 exists (FILE from --progress), write N2, wait for FILE.go2, ...
 * so a test can kill and restart mixd at exact points of the stream.
 * After writing phase n it creates FILE.done<n>. --rate paces each phase.
 *
 * --evil truncate: after --evil-after records, shrink its own ring memfds
 * (found through /proc/self/fd) to zero; the seal libmixd added refuses.
 * --evil scribble: once all records are written, publish 4 KiB of garbage
 * frames in its own ring.
 * --evil forever: once all records are written, write on into its ring
 * for a minute, keeping the head a whole ring ahead of mixd's tail.
 * --evil bad-utf8: every record's destination.service.host is "rev\xff\xfe",
 * not UTF-8 (mixd-report refuses to send such a line; a proxy may).
 * --evil forever-closed: the same from a child that keeps only the ring's
 * mapping: the producer exits, its connection closes.
 *
 * At the end it flushes (waits for mixd to take everything, up to
 * --flush-ms) and prints one JSON line: written, dropped, invalid, the
 * slowest commit in microseconds, and whether the flush completed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mixd/client.h>
#include <mixd/ring.h>

#include "proxy_record.h"

struct progress {
	uint64_t started;
	uint64_t committed;
	uint64_t last_commit_ns; /* CLOCK_MONOTONIC of the last commit */
};

static mixd_client *client;
static long long count = 100000;
static unsigned threads = 1;
static double rate;
static struct progress *prog;
static const char *evil;
static long long evil_after = 1000;
static uint64_t max_commit_ns; /* atomic max */
static const char *phases;
static const char *progress_path;
static bool use_template;
static uint64_t sets; /* --sets: 0 for none */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static mixd_template *tpl; /* --template */
static int write_template(uint64_t i);

/* The destination host of label set @k, in @buf (32 bytes). */
static const char *host_of(uint64_t k, char *buf)
{
	static const char *const svc[] = {"reviews", "ratings", "details",
					  "productpage"};
	if (evil && !strcmp(evil, "bad-utf8"))
		return "rev\xff\xfe";
	if (!sets)
		return svc[k % 4];
	snprintf(buf, 32, "svc-%llu", (unsigned long long)k);
	return buf;
}

/* About 20 attributes and 250 bytes, as an Envoy report is. */
static int write_record(uint64_t i)
{
	if (tpl)
		return write_template(i);
	static const char *const proto[] = {"http", "grpc", "tcp"};
	uint64_t k = sets ? i % sets : i; /* what labels are made of */
	char host[32];
	mixd_record *r = mixd_record_begin(client);
	mixd_set_cstr(r, MIXD_ATTR_CONTEXT_PROTOCOL, proto[k % 3]);
	mixd_set_cstr(r, MIXD_ATTR_CONTEXT_REPORTER_KIND,
		      k & 1 ? "inbound" : "outbound");
	mixd_set_cstr(r, MIXD_ATTR_SOURCE_UID,
		      "kubernetes://productpage-v1.instance-1f0c2a5e");
	mixd_set_cstr(r, MIXD_ATTR_DESTINATION_UID,
		      "kubernetes://reviews-v2.instance-c96bf99f");
	uint8_t sip[4] = {10, 0, (uint8_t)(k >> 8), (uint8_t)k};
	uint8_t dip[4] = {10, 1, 0, (uint8_t)(k % 7)};
	mixd_set_ip(r, MIXD_ATTR_SOURCE_IP, sip, 4);
	mixd_set_ip(r, MIXD_ATTR_DESTINATION_IP, dip, 4);
	mixd_set_int64(r, MIXD_ATTR_DESTINATION_PORT, 9080);
	mixd_set_cstr(r, MIXD_ATTR_DESTINATION_SERVICE_HOST,
		      host_of(k, host));
	mixd_set_cstr(r, MIXD_ATTR_REQUEST_METHOD, "GET");
	mixd_set_cstr(r, MIXD_ATTR_REQUEST_PATH, "/reviews/0");
	mixd_set_cstr(r, MIXD_ATTR_REQUEST_HOST, "reviews:9080");
	mixd_set_int64(r, MIXD_ATTR_REQUEST_SIZE, (int64_t)(i % 1000));
	mixd_set_int64(r, MIXD_ATTR_RESPONSE_SIZE, (int64_t)(i % 5000));
	mixd_set_int64(r, MIXD_ATTR_RESPONSE_CODE, k % 10 ? 200 : 503);
	mixd_set_duration(r, MIXD_ATTR_RESPONSE_DURATION,
			  (int64_t)(i % 100) * 1000000);
	mixd_set_timestamp(r, MIXD_ATTR_REQUEST_TIME, 1700000000000000000ll);
	mixd_set_bool(r, MIXD_ATTR_CONNECTION_MTLS, (int)(k & 2));
	mixd_set_cstr(r, MIXD_ATTR_SOURCE_PRINCIPAL,
		      "cluster.local/ns/default/sa/productpage");
	mixd_set_cstr(r, MIXD_ATTR_API_PROTOCOL, proto[k % 3]);
	mixd_set_int64(r, MIXD_ATTR_CONNECTION_SENT_BYTES, (int64_t)(i % 300));
	return mixd_record_commit(r);
}

/* The same record through a template of proxy_fields (proxy_record.h),
 * made once in main(). */
static int write_template(uint64_t i)
{
	static const char *const proto[] = {"http", "grpc", "tcp"};
	uint64_t k = sets ? i % sets : i; /* what labels are made of */
	char host[32];
#define S(s) {.p = (s), .len = (uint32_t)strlen(s)}
	uint8_t sip[4] = {10, 0, (uint8_t)(k >> 8), (uint8_t)k};
	uint8_t dip[4] = {10, 1, 0, (uint8_t)(k % 7)};
	struct mixd_slot v[20] = {
		S(proto[k % 3]),
		S(k & 1 ? "inbound" : "outbound"),
		S("kubernetes://productpage-v1.instance-1f0c2a5e"),
		S("kubernetes://reviews-v2.instance-c96bf99f"),
		{.p = sip, .len = 4},
		{.p = dip, .len = 4},
		{.i = 9080},
		S(host_of(k, host)),
		S("GET"),
		S("/reviews/0"),
		S("reviews:9080"),
		{.i = (int64_t)(i % 1000)},
		{.i = (int64_t)(i % 5000)},
		{.i = k % 10 ? 200 : 503},
		{.i = (int64_t)(i % 100) * 1000000},
		{.i = 1700000000000000000ll},
		{.b = (int)(k & 2)},
		S("cluster.local/ns/default/sa/productpage"),
		S(proto[k % 3]),
		{.i = (int64_t)(i % 300)},
	};
#undef S
	return mixd_template_report(tpl, v, 0);
}

/*
 * Write into ring @fd for a minute (or until killed): empty records' frames
 * everywhere, and the head kept a whole ring ahead of mixd's tail. @closed:
 * from a child that keeps nothing but the mapping, the producer itself
 * gone, so its connection closes while the ring is still written on.
 */
static void write_forever(int fd, bool closed)
{
	struct stat st;
	fstat(fd, &st);
	uint8_t *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
			  MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return;
	uint64_t cap;
	memcpy(&cap, p + 16, 8); /* ident.capacity */
	for (uint64_t off = 0; off < cap; off += 8) {
		uint32_t fh[2] = {0, MIXD_FRAME_RECORD};
		memcpy(p + MIXD_RING_HDR_SIZE + off, fh, 8);
	}
	if (closed) {
		if (fork() != 0) {
			/* The producer, once mixd has followed the child's
			 * writing two ring's worth (or after 30 s): gone,
			 * connection and all. */
			uint64_t give_up = now_ns() + 30000000000ull;
			while (__atomic_load_n((uint64_t *)(p + 128),
					       __ATOMIC_ACQUIRE) < 2 * cap &&
			       now_ns() < give_up) {
				struct timespec ts = {0, 1000000};
				nanosleep(&ts, NULL);
			}
			_exit(0);
		}
		for (int f = 3; f < 1024; f++)
			close(f);
	}
	fprintf(stderr, "producer: writing on and on into the ring\n");
	uint64_t end = now_ns() + 60000000000ull;
	while (now_ns() < end) {
		uint64_t tail = __atomic_load_n((uint64_t *)(p + 128),
						__ATOMIC_ACQUIRE); /* cons.tail */
		__atomic_store_n((uint64_t *)(p + 64), tail + cap,
				 __ATOMIC_RELEASE); /* prod.head */
		for (int k = 0; k < 64; k++) /* a few microseconds */
			__builtin_ia32_pause();
	}
	_exit(0);
}

/* Find the memfds libmixd made for our rings, through /proc/self/fd. */
static void misbehave(void)
{
	/* Make sure mixd holds the ring first. */
	mixd_client_flush(client, 10000);
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char path[300], target[256];
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(path, target, sizeof target - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		if (!strstr(target, "memfd:mixd-ring"))
			continue;
		int fd = atoi(e->d_name);
		if (strncmp(evil, "forever", 7) == 0) {
			write_forever(fd, strcmp(evil, "forever-closed") == 0);
		} else if (strcmp(evil, "truncate") == 0) {
			int rc = ftruncate(fd, 0);
			fprintf(stderr, "producer: truncate %s: %s\n", target,
				rc ? strerror(errno) : "done");
		} else {
			struct stat st;
			fstat(fd, &st);
			uint8_t *p = mmap(NULL, (size_t)st.st_size,
					  PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (p == MAP_FAILED)
				continue;
			/* Publish 4 KiB of garbage where mixd reads next: frames
			 * that lie about their length and mark. */
			uint64_t tail, cap;
			memcpy(&tail, p + 128, 8); /* cons.tail */
			memcpy(&cap, p + 16, 8);   /* ident.capacity */
			for (size_t i = 0; i < 4096; i++)
				p[4096 + ((tail + i) & (cap - 1))] = (uint8_t)(i * 37 + 1);
			uint64_t head = tail + 4096;
			__atomic_store_n((uint64_t *)(p + 64), head, __ATOMIC_RELEASE);
			munmap(p, (size_t)st.st_size);
			fprintf(stderr, "producer: scribbled over %s\n", target);
		}
	}
	if (d)
		closedir(d);
}

static void *run(void *arg)
{
	uintptr_t t = (uintptr_t)arg;
	long long mine = count / threads + (t < (uintptr_t)(count % threads));
	uint64_t start = now_ns();
	double per_ns = rate > 0 ? 1e9 / (rate / threads) : 0;
	for (long long i = 0; i < mine; i++) {
		if (per_ns > 0) {
			uint64_t due = start + (uint64_t)(per_ns * (double)i);
			while (now_ns() < due) {
				struct timespec ts = {0, 200000};
				nanosleep(&ts, NULL);
			}
		}
		if (prog)
			__atomic_add_fetch(&prog->started, 1, __ATOMIC_SEQ_CST);
		uint64_t t0 = now_ns();
		int rc = write_record((uint64_t)i * threads + t);
		uint64_t dt = now_ns() - t0;
		if (prog && rc == 0)
			__atomic_add_fetch(&prog->committed, 1, __ATOMIC_SEQ_CST);
		if (prog && rc != 0) /* not committed: not in flight either */
			__atomic_sub_fetch(&prog->started, 1, __ATOMIC_SEQ_CST);
		uint64_t cur = __atomic_load_n(&max_commit_ns, __ATOMIC_RELAXED);
		while (dt > cur && !__atomic_compare_exchange_n(
					   &max_commit_ns, &cur, dt, false,
					   __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			;
		if (evil && !strcmp(evil, "truncate") && t == 0 && i == evil_after)
			misbehave();
	}
	/* While this thread lives its ring does: scribble before leaving. */
	if (evil && (!strcmp(evil, "scribble") || !strncmp(evil, "forever", 7)) &&
	    t == 0)
		misbehave();
	return NULL;
}

static void wait_for_file(const char *path)
{
	while (access(path, F_OK) != 0) {
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
}

static void run_phases(void)
{
	char *list = strdup(phases), *save = NULL;
	int n = 0;
	uint64_t i = 0;
	for (char *tok = strtok_r(list, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (n > 0) {
			char go[4200];
			snprintf(go, sizeof go, "%s.go%d", progress_path, n);
			wait_for_file(go);
		}
		count = atoll(tok);
		threads = 1;
		uint64_t start = now_ns(); /* --rate paces each phase */
		for (long long k = 0; k < count; k++, i++) {
			while (rate > 0 &&
			       now_ns() < start + (uint64_t)(1e9 / rate * (double)k)) {
				struct timespec ts = {0, 200000};
				nanosleep(&ts, NULL);
			}
			__atomic_add_fetch(&prog->started, 1, __ATOMIC_SEQ_CST);
			uint64_t t0 = now_ns();
			int rc = write_record(i);
			uint64_t dt = now_ns() - t0;
			if (rc == 0) {
				__atomic_store_n(&prog->last_commit_ns, now_ns(),
						 __ATOMIC_SEQ_CST);
				__atomic_add_fetch(&prog->committed, 1, __ATOMIC_SEQ_CST);
			} else {
				__atomic_sub_fetch(&prog->started, 1, __ATOMIC_SEQ_CST);
			}
			if (dt > max_commit_ns)
				max_commit_ns = dt;
		}
		n++;
		/* Tell the test this phase is written: FILE.done<n>. */
		char done[4200];
		snprintf(done, sizeof done, "%s.done%d", progress_path, n);
		int fd = open(done, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0)
			close(fd);
	}
	free(list);
}

int main(int argc, char **argv)
{
	const char *address = NULL, *progress = NULL, *transport = "shm";
	long linger_ms = 0, flush_ms = 30000;
	static const struct option opts[] = {
		{"address", required_argument, NULL, 'a'},
		{"transport", required_argument, NULL, 't'},
		{"count", required_argument, NULL, 'n'},
		{"threads", required_argument, NULL, 'T'},
		{"rate", required_argument, NULL, 'r'},
		{"progress", required_argument, NULL, 'p'},
		{"evil", required_argument, NULL, 'e'},
		{"evil-after", required_argument, NULL, 'E'},
		{"linger-ms", required_argument, NULL, 'l'},
		{"flush-ms", required_argument, NULL, 'f'},
		{"phases", required_argument, NULL, 'P'},
		{"template", no_argument, NULL, 'X'},
		{"sets", required_argument, NULL, 'S'},
		{0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'a': address = optarg; break;
		case 't': transport = optarg; break;
		case 'n': count = atoll(optarg); break;
		case 'T': threads = (unsigned)atoi(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 'p': progress = optarg; break;
		case 'e': evil = optarg; break;
		case 'E': evil_after = atoll(optarg); break;
		case 'l': linger_ms = atol(optarg); break;
		case 'f': flush_ms = atol(optarg); break;
		case 'P': phases = optarg; break;
		case 'X': use_template = true; break;
		case 'S': sets = (uint64_t)atoll(optarg); break;
		default:
			fprintf(stderr, "producer: bad arguments\n");
			return 2;
		}
	}
	/* A test that fails half-way must not leave us waiting for a
	 * go-file forever: die with the test. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (!address || threads == 0) {
		fprintf(stderr, "producer: --address is required\n");
		return 2;
	}
	if (phases && !progress) {
		fprintf(stderr, "producer: --phases needs --progress\n");
		return 2;
	}
	progress_path = progress;
	if (progress) {
		int fd = open(progress, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, sizeof *prog) != 0)
			return 2;
		prog = mmap(NULL, sizeof *prog, PROT_READ | PROT_WRITE,
			    MAP_SHARED, fd, 0);
		close(fd);
		if (prog == MAP_FAILED)
			return 2;
	}
	struct mixd_client_options o = {0};
	o.transport = strcmp(transport, "socket") == 0 ? MIXD_TRANSPORT_SOCKET
						       : MIXD_TRANSPORT_SHM;
	o.reconnect_max_ms = 100;
	int rc = mixd_client_open(address, &o, &client);
	if (rc) {
		fprintf(stderr, "producer: mixd_client_open: %s\n", strerror(-rc));
		return 2;
	}
	if (use_template && (rc = mixd_template_create(client, proxy_fields,
						       PROXY_FIELDS, &tpl)) != 0) {
		fprintf(stderr, "producer: mixd_template_create: %s\n",
			strerror(-rc));
		return 2;
	}
	pthread_t th[64];
	if (threads > 64)
		threads = 64;
	if (phases) {
		run_phases();
	} else {
		for (uintptr_t t = 0; t < threads; t++)
			pthread_create(&th[t], NULL, run, (void *)t);
		for (unsigned t = 0; t < threads; t++)
			pthread_join(th[t], NULL);
	}
	if (linger_ms) {
		struct timespec ts = {linger_ms / 1000, (linger_ms % 1000) * 1000000};
		nanosleep(&ts, NULL);
	}
	int flushed = mixd_client_flush(client, (int)flush_ms) == 0;
	struct mixd_client_stats st;
	mixd_client_stats(client, &st);
	printf("{\"written\": %llu, \"dropped\": %llu, \"dropped_full\": %llu, "
	       "\"invalid\": %llu, \"max_commit_us\": %.1f, \"flushed\": %s}\n",
	       (unsigned long long)st.written, (unsigned long long)st.dropped,
	       (unsigned long long)st.dropped_full,
	       (unsigned long long)st.dropped_invalid, max_commit_ns / 1000.0,
	       flushed ? "true" : "false");
	fflush(stdout);
	mixd_template_destroy(tpl);
	mixd_client_close(client);
	return 0;
}
