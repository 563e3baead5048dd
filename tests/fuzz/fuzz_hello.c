/*
 * fuzz_hello -- the producer socket as a producer sees it: the real
 * server (ingest_server_start(), its io_uring loop, handshake, stream
 * reassembly and backpressure) on a socket of its own, and a connection
 * per input that sends the input's bytes and closes.
 *
 * Input: byte 0 chooses the descriptors sent with the hello (bits 0-1:
 * none, one, two, or five, which is more than the server's room for
 * them; bit 2: the first is a well-formed ring segment, else /dev/null)
 * and, with the rest, the sizes of the pieces the bytes go out in;
 * bytes 1-16 are the hello (struct mixd_hello); the rest is what follows
 * it, the frames of a stream producer (a shared-memory producer sends
 * nothing more).
 *
 * Once the server has let go of the connection:
 *   - a hello is accepted exactly when it is whole, its marker and
 *     version are right, and it is a stream hello without a descriptor
 *     or a shared-memory hello whose one descriptor is a ring; else it is
 *     counted once as a failed handshake (extra descriptors are closed;
 *     more than fit refuse the hello);
 *   - an accepted ring is handed to the sink, pid and all, and handed
 *     back when the connection closes; a byte after its hello is one
 *     rejected stream;
 *   - a stream's records reach the consumer's queue exactly as a plain
 *     walk of the bytes written here from <mixd/ring.h> finds them,
 *     however they were cut and however full the queue was (one that
 *     names a layout, which only a shared ring has, is refused there as
 *     a bad attribute, and counted); its counts
 *     frames add up to the dropped and invalid counters, exactly while
 *     they are believable (all of a stream's within INGEST_STEP_MAX),
 *     and never past what ingest_count_add() allows each frame, nor
 *     backwards, when they are not; a bad frame, or the connection
 *     closing inside one, counts one rejected stream;
 *   - no descriptor stays open in the process.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mixd/ring.h>

#include "ingest/ingest.h"
#include "ingest/ring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the sink ---------------------------------------------------------- */

static struct ingest_server *srv;
static struct ingest_ring *queue;	      /* every stream connection's */
static struct ingest_ring *attached, *closed; /* io thread -> us */
static char dir[64], path[128];
static int token;

static void *ring_attached(void *ctx, struct ingest_ring *r)
{
	if (__atomic_load_n(&attached, __ATOMIC_ACQUIRE))
		abort(); /* one connection at a time */
	__atomic_store_n(&attached, r, __ATOMIC_RELEASE);
	return &token;
}

static void ring_closed(void *ctx, void *tok, struct ingest_ring *r)
{
	if (tok != &token || r != __atomic_load_n(&attached, __ATOMIC_ACQUIRE))
		abort();
	__atomic_store_n(&closed, r, __ATOMIC_RELEASE);
}

static struct ingest_ring *stream_queue(void *ctx, unsigned conn_id)
{
	return queue;
}

static void queue_kick(void *ctx, struct ingest_ring *q)
{
	if (q != queue)
		abort();
}

/* ---- what the queue delivers --------------------------------------------- */

static uint8_t *got;
static size_t got_len, got_cap, got_n;
static uint64_t got_named; /* refused: they name a layout (see walk()) */

static enum ingest_reject collect(void *ctx, const uint8_t *p, uint32_t len,
				  const struct ingest_layout *lay)
{
	if (lay || len > MIXD_RECORD_MAX)
		abort(); /* a queue carries plain records */
	if (got_len + 4 + len > got_cap) {
		size_t cap = got_cap ? got_cap : 1 << 16;
		while (cap < got_len + 4 + len)
			cap *= 2;
		if (!(got = realloc(got, cap)))
			abort();
		got_cap = cap;
	}
	memcpy(got + got_len, &len, 4);
	memcpy(got + got_len + 4, p, len);
	got_len += 4 + len;
	got_n++;
	return INGEST_REJ_NONE;
}

static void drain(void)
{
	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts c = {0};
	/* A poll leaves the frames of the line the server was writing for
	 * the next (ring_cons_refresh()): poll until none is left. */
	while (ingest_ring_poll(queue, collect, NULL, NULL, 256, &c, scratch) ||
	       ingest_ring_left(queue))
		;
	got_named += c.rejected[INGEST_REJ_ATTRIBUTE];
	for (int i = 1; i < INGEST_REJ_COUNT; i++)
		if (c.rejected[i] && i != INGEST_REJ_ATTRIBUTE)
			abort(); /* mixd's own ring is never corrupt */
}

/* ---- the plain walk of a stream -------------------------------------------
 */

struct walk {
	size_t nrec;  /* records: the queue's, delivered or refused */
	size_t named; /* of them, refused: they name a layout */
	uint64_t dropped, invalid;	   /* as ingest_count_add() sums them */
	uint64_t raw_dropped, raw_invalid; /* plain sums, up to UINT64_MAX */
	bool bad, tail;
};

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return UINT64_MAX - a < b ? UINT64_MAX : a + b;
}

/* A counter of the server went from @a to @b for this stream. */
/* A count before (@c0 counted, @w0 waiting for the allowance) and after
 * (@c1, @w1) an input whose frames told @raw (a plain sum) or @want (as
 * the server adds them up). */
static void check_count(uint64_t c0, uint64_t w0, uint64_t c1, uint64_t w1,
			uint64_t raw, uint64_t want)
{
	if (c1 < c0 || c1 > INGEST_COUNT_MAX || w1 > INGEST_COUNT_MAX)
		abort(); /* backwards, or past the bound */
	if (c1 == INGEST_COUNT_MAX || w1 == INGEST_COUNT_MAX)
		return; /* at the bound, what moves is no longer the sum */
	uint64_t told = c1 + w1 - (c0 + w0); /* may wrap: unsigned */
	if (raw <= INGEST_STEP_MAX) {
		if (told != raw)
			abort(); /* believable counts are exact */
	} else if (told > want) {
		abort(); /* more than the frames may add */
	}
}

/* Walk @s, checking the records delivered (got) against it. */
static void walk(const uint8_t *s, size_t n, struct walk *w)
{
	size_t at = 0, g = 0;
	memset(w, 0, sizeof *w);
	while (at < n) {
		uint32_t len, mark;
		if (n - at < MIXD_FRAME_HDR) {
			w->tail = true;
			return;
		}
		memcpy(&len, s + at, 4);
		memcpy(&mark, s + at + 4, 4);
		if (mark == MIXD_FRAME_RECORD ? len > MIXD_RECORD_MAX
		    : mark == MIXD_FRAME_COUNTS
			    ? len != sizeof(struct mixd_frame_counts)
			    : true) {
			w->bad = true;
			return;
		}
		uint64_t sz = MIXD_FRAME_ALIGN(MIXD_FRAME_HDR + (uint64_t)len);
		if (n - at < sz) {
			w->tail = true;
			return;
		}
		if (mark == MIXD_FRAME_COUNTS) {
			struct mixd_frame_counts c;
			memcpy(&c, s + at + MIXD_FRAME_HDR, sizeof c);
			w->dropped = ingest_count_add(w->dropped, c.dropped);
			w->invalid = ingest_count_add(w->invalid, c.invalid);
			w->raw_dropped = add_sat(w->raw_dropped, c.dropped);
			w->raw_invalid = add_sat(w->raw_invalid, c.invalid);
		} else if (len >= 4 && s[at + MIXD_FRAME_HDR] ==
					       (MIXD_ATTR_LAYOUT & 0xff) &&
			   s[at + MIXD_FRAME_HDR + 1] == MIXD_ATTR_LAYOUT >> 8) {
			/* Layouts live in a shared ring; a stream has none, so
			 * its consumer refuses such a record, as a bad one. */
			w->nrec++;
			w->named++;
		} else {
			uint32_t gl;
			if (w->nrec - w->named >= got_n)
				abort(); /* a record never delivered */
			memcpy(&gl, got + g, 4);
			if (gl != len ||
			    memcmp(got + g + 4, s + at + MIXD_FRAME_HDR, len))
				abort(); /* not the record sent */
			g += 4 + len;
			w->nrec++;
		}
		at += sz;
	}
}

/* ---- the producer ---------------------------------------------------------
 */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		abort();
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* A well-formed, empty ring segment. */
static int ring_fd(void)
{
	size_t seg = MIXD_RING_HDR_SIZE + MIXD_RING_MIN_CAPACITY;
	int fd = memfd_create("fuzz-hello", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)seg) != 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) /* as libmixd does */
		abort();
	struct mixd_ring_hdr *h =
		mmap(NULL, MIXD_RING_HDR_SIZE, PROT_READ | PROT_WRITE,
		     MAP_SHARED, fd, 0);
	if (h == MAP_FAILED)
		abort();
	ring_init(h, MIXD_RING_MIN_CAPACITY, (uint32_t)getpid(), 0, 0);
	munmap(h, MIXD_RING_HDR_SIZE);
	return fd;
}

static void cleanup(void)
{
	ingest_server_destroy(srv);
	ingest_ring_destroy(queue);
	unlink(path);
	rmdir(dir);
}

/* The directories of runs that crashed (abort() runs no atexit()):
 * /tmp/mixd-fuzz-hello.<pid>.XXXXXX of a process that is gone. */
static void remove_stale(void)
{
	DIR *d = opendir("/tmp");
	struct dirent *e;
	char p[300];
	if (!d)
		return;
	while ((e = readdir(d))) {
		int pid, n = 0;
		if (sscanf(e->d_name, "mixd-fuzz-hello.%d.%*6[^/]%n", &pid,
			   &n) != 1 ||
		    n != (int)strlen(e->d_name) || pid <= 0 ||
		    kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(p, sizeof p, "/tmp/%s/sock", e->d_name);
		unlink(p);
		snprintf(p, sizeof p, "/tmp/%s", e->d_name);
		rmdir(p);
	}
	closedir(d);
}

static void setup(void)
{
	static const struct ingest_sink sink = {ring_attached, ring_closed,
						stream_queue, queue_kick, NULL};
	char err[256];
	remove_stale();
	snprintf(dir, sizeof dir, "/tmp/mixd-fuzz-hello.%d.XXXXXX",
		 (int)getpid());
	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof path, "%s/sock", dir);
	/* the smallest queue: a large stream fills it, and the server must
	 * hold back rather than lose */
	if (ingest_ring_create_queue(INGEST_QUEUE_MIN, &queue) != 0 ||
	    ingest_server_start(path, &sink, NULL, &srv, err, sizeof err) != 0) {
		fprintf(stderr, "fuzz_hello: %s\n", err);
		abort();
	}
	atexit(cleanup);
	/* The closer of producers' descriptors (ingest_close_untrusted())
	 * starts at its first use, with a pipe of its own: before any count. */
	int fd = dup(0);
	if (fd < 0)
		abort();
	ingest_close_untrusted(fd);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void send_hello(int s, const uint8_t *p, size_t n, unsigned nfds,
		       bool ring)
{
	int fds[5];
	char cbuf[CMSG_SPACE(sizeof fds)]
		__attribute__((aligned(__alignof__(struct cmsghdr))));
	struct iovec iov = {(void *)p, n};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	for (unsigned i = 0; i < nfds; i++) {
		fds[i] = i == 0 && ring
				 ? ring_fd()
				 : open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			abort();
	}
	if (nfds) {
		memset(cbuf, 0, sizeof cbuf);
		msg.msg_control = cbuf;
		msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	if (sendmsg(s, &msg, MSG_NOSIGNAL) != (ssize_t)n)
		abort(); /* the server reads the hello before it answers */
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned nfds_of[4] = {0, 1, 2, 5};
	if (!srv)
		setup();
	if (size < 2)
		return 0;
	unsigned flags = data[0], seed = data[0] >> 3;
	unsigned nfds = nfds_of[flags & 3];
	bool ring = flags & 4;
	const uint8_t *hello = data + 1, *rest;
	size_t hlen = size - 1 < sizeof(struct mixd_hello)
			      ? size - 1
			      : sizeof(struct mixd_hello);
	rest = hello + hlen;
	size_t rlen = size - 1 - hlen;

	ingest_close_untrusted_wait();
	int fds0 = count_fds();
	struct ingest_server_stats s0, s1;
	ingest_server_stats(srv, &s0);
	got_len = got_n = 0;
	got_named = 0;

	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0)
		abort();
	send_hello(s, hello, hlen, nfds, ring);
	for (size_t off = 0; off < rlen;) {
		size_t piece = 1 + (seed = seed * 33 + 7) % 257;
		if (piece > rlen - off)
			piece = rlen - off;
		ssize_t k =
			send(s, rest + off, piece, MSG_NOSIGNAL | MSG_DONTWAIT);
		drain(); /* a full queue holds the server back */
		if (k < 0 && errno == EAGAIN) {
			usleep(10);
			continue;
		}
		if (k < 0)
			break; /* the server ended the connection */
		off += (size_t)k;
	}
	/* Done: the server sees the end, and lets go of the connection. It
	 * never writes, so the socket turns readable when the server closes
	 * its end (free_conn(), which then counts it out of producers; or
	 * kill_conn() before it). */
	shutdown(s, SHUT_WR);
	int64_t deadline = now_ms() + 4000; /* under ctest's -timeout=5 */
	bool ended = false;
	for (;;) {
		drain();
		struct pollfd pfd = {s, POLLIN, 0};
		char b;
		if (!ended && poll(&pfd, 1, 0) == 1 &&
		    recv(s, &b, 1, MSG_DONTWAIT) <= 0)
			ended = true;
		ingest_server_stats(srv, &s1);
		if (ended && s1.producers == 0)
			break;
		if (now_ms() > deadline)
			abort(); /* the server never let go */
		usleep(10);
	}
	drain();
	close(s);
	if (s1.connections != s0.connections + 1)
		abort();

	struct mixd_hello h;
	memset(&h, 0, sizeof h);
	memcpy(&h, hello, hlen);
	/* Room for one descriptor: with more the control data is cut. */
	bool got_fd = nfds == 1, cut = nfds > 1;
	bool whole = hlen == sizeof h &&
		     !memcmp(h.marker, MIXD_HELLO_MARKER, 8) &&
		     h.version == MIXD_HELLO_VERSION && !cut;
	bool shm = whole && h.kind == MIXD_HELLO_SHM && got_fd && ring;
	bool stream = whole && h.kind == MIXD_HELLO_STREAM && !got_fd;
	struct ingest_ring *r = __atomic_load_n(&attached, __ATOMIC_ACQUIRE);

	if (s1.handshake_failed - s0.handshake_failed != !(shm || stream))
		abort();
	if (shm) {
		if (!r || __atomic_load_n(&closed, __ATOMIC_ACQUIRE) != r ||
		    ingest_ring_pid(r) != (uint32_t)getpid() ||
		    ingest_ring_transport(r) != INGEST_SHM)
			abort();
		if (s1.stream_rejected - s0.stream_rejected != (rlen > 0))
			abort(); /* bytes after a shm hello: not ours */
		ingest_ring_destroy(r);
		attached = closed = NULL;
	} else if (r) {
		abort(); /* a ring from a refused hello */
	}
	struct walk w = {0};
	if (stream)
		walk(rest, rlen, &w);
	if (w.nrec - w.named != got_n || w.named != got_named ||
	    s1.stream_records - s0.stream_records != w.nrec)
		abort(); /* records made up, or lost */
	/* Counted, or waiting for the allowance all socket producers share
	 * (whose waiting counts carry from one input to the next). */
	check_count(s0.stream_dropped, s0.stream_dropped_waiting,
		    s1.stream_dropped, s1.stream_dropped_waiting, w.raw_dropped,
		    w.dropped);
	check_count(s0.stream_invalid, s0.stream_invalid_waiting,
		    s1.stream_invalid, s1.stream_invalid_waiting, w.raw_invalid,
		    w.invalid);
	if (stream &&
	    s1.stream_rejected - s0.stream_rejected != (w.bad || w.tail))
		abort(); /* one bad stream, counted once */
	if (!stream && !shm && s1.stream_rejected != s0.stream_rejected)
		abort();
	ingest_close_untrusted_wait(); /* closes are made on their thread */
	if (count_fds() != fds0)
		abort(); /* a descriptor left open */
	return 0;
}
