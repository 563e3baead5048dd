/*
 * test_server.c -- the producer socket server on its own: a stream
 * connection's last, cut-off frame counted however its close arrives; the
 * socket file never taken from, nor removed under, another mixd.
 *
 * MIXD_TEST_THREADED: the server's io thread runs beside the test's.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <mixd/client.h>
#include <mixd/ring.h>

#include "frames.h"
#include "ingest/ingest.h"
#include "ingest/ring.h"

static char sock_path[108];
static struct ingest_ring *queue;

static struct ingest_ring *queue_of(void *ctx, unsigned id)
{
	(void)ctx;
	(void)id;
	return queue;
}

static void kick_none(void *ctx, struct ingest_ring *q)
{
	(void)ctx;
	(void)q;
}

/* A producer's ring arrives: taken (attached counts them), destroyed at
 * its close. */
static int attached; /* atomic */

static void *take_ring(void *ctx, struct ingest_ring *r)
{
	(void)ctx;
	__atomic_add_fetch(&attached, 1, __ATOMIC_RELEASE);
	return r;
}

static void ring_gone(void *ctx, void *token, struct ingest_ring *r)
{
	(void)ctx;
	(void)token;
	ingest_ring_destroy(r);
}

static const struct ingest_sink sink = {.ring_attached = take_ring,
					.ring_closed = ring_gone,
					.stream_queue = queue_of,
					.queue_kick = kick_none};

static enum ingest_reject count_it(void *ctx, const uint8_t *p, uint32_t len,
				   const struct ingest_layout *lay)
{
	(void)p;
	(void)len;
	(void)lay;
	++*(uint64_t *)ctx;
	return INGEST_REJ_NONE;
}

static struct ingest_server *start(void)
{
	struct ingest_server *srv;
	char err[256];
	int rc = ingest_server_start(sock_path, &sink, NULL, &srv, err, sizeof err);
	if (rc)
		fail_msg("%s", err);
	return srv;
}

static void stop(struct ingest_server *srv)
{
	ingest_server_stop_accepting(srv);
	ingest_server_destroy(srv);
}

/* A stream connection that has sent its hello. */
static int stream_connection(void)
{
	struct mixd_hello h = {.version = MIXD_HELLO_VERSION,
			       .kind = MIXD_HELLO_STREAM};
	memcpy(h.marker, MIXD_HELLO_MARKER, 8);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", sock_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(send(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
	return fd;
}

/* A counts frame telling of @dropped records into @f (24 bytes). */
static void counts_frame(uint8_t *f, uint64_t dropped)
{
	uint32_t hdr[2] = {sizeof(struct mixd_frame_counts), MIXD_FRAME_COUNTS};
	struct mixd_frame_counts fc = {.dropped = dropped};
	memcpy(f, hdr, 8);
	memcpy(f + 8, &fc, sizeof fc);
}

/*
 * A server (*@srv) whose one stream connection, returned, has sent
 * STALL_FRAMES frames and is stalled on a full queue; *@filler: the
 * records filling it.
 */
#define STALL_FRAMES 40
static int stalled_stream(struct ingest_server **srv, uint64_t *filler)
{
	assert_int_equal(ingest_ring_create_queue(INGEST_QUEUE_MIN, &queue),
			 0);
	uint8_t rec[11] = {0};
	*filler = 0;
	while (ingest_queue_push(queue, rec, sizeof rec))
		++*filler;
	*srv = start();
	int fd = stream_connection();
	static uint8_t buf[CODE_FRAME_LEN * STALL_FRAMES];
	for (int i = 0; i < STALL_FRAMES; i++)
		code_frame(buf + CODE_FRAME_LEN * i);
	assert_int_equal(send(fd, buf, sizeof buf, 0), (ssize_t)sizeof buf);
	usleep(100 * 1000); /* received and stalled: the queue is full */
	return fd;
}

/*
 * A stream connection sends its hello, a whole frame and half of another,
 * and closes, all before the server reads it. With @full_queue the shard
 * queue is full first, so the connection stalls and its end of file
 * arrives while it is stalled. Either way the whole frame is delivered and
 * the cut one counted as a bad frame (stream_rejected).
 */
static void cut_frame(bool full_queue)
{
	assert_int_equal(ingest_ring_create_queue(INGEST_QUEUE_MIN, &queue),
			 0);
	uint8_t rec[11] = {0};
	uint64_t before = 0;
	while (full_queue && ingest_queue_push(queue, rec, sizeof rec))
		before++;
	struct ingest_server *srv = start();
	uint8_t buf[16 + 24 + 24];
	const size_t len = 16 + 24 + 12;
	struct mixd_hello h = {.version = MIXD_HELLO_VERSION,
			       .kind = MIXD_HELLO_STREAM};
	memcpy(h.marker, MIXD_HELLO_MARKER, 8);
	memcpy(buf, &h, 16);
	code_frame(buf + 16);
	code_frame(buf + 40); /* its first 12 bytes only */
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", sock_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(send(fd, buf, len, 0), (ssize_t)len);
	close(fd);
	usleep(100 * 1000); /* received, stalled if full, end of file seen */

	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts n = {0};
	struct ingest_server_stats st;
	uint64_t got = 0;
	for (int i = 0; i < 5000; i++) {
		ingest_ring_poll(queue, count_it, NULL, &got, 1u << 20, &n,
				 scratch);
		ingest_server_stats(srv, &st);
		if (st.connections == 1 && st.producers == 0 && got == before + 1)
			break;
		usleep(1000);
	}
	assert_int_equal(st.producers, 0);
	assert_int_equal(got, before + 1);
	assert_int_equal(st.stream_rejected, 1);
	stop(srv);
	ingest_ring_destroy(queue);
}

/*
 * Stopping while a stream connection is stalled on a full queue: what it
 * holds goes to the queue once there is room, as the server stops (mixd
 * drains the queues after the io thread; agg_destroy()). Here the queue
 * is emptied just before the stop, so the io thread's 1 ms tick has
 * almost never pushed the held frames by then; the stop must. They used
 * to be freed with the connection.
 */
static void what_a_stall_holds_is_handed_over_at_the_stop(void **state)
{
	(void)state;
	struct ingest_server *srv;
	uint64_t filler;
	int fd = stalled_stream(&srv, &filler);

	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts n = {0};
	uint64_t got = 0;
	while (got < filler)
		ingest_ring_poll(queue, count_it, NULL, &got, 1u << 20, &n,
				 scratch);
	stop(srv);
	close(fd);
	ingest_ring_poll(queue, count_it, NULL, &got, 1u << 20, &n, scratch);
	assert_int_equal(got - filler, STALL_FRAMES);
	ingest_ring_destroy(queue);
}

/*
 * Stopping while a stream connection is stalled on a queue that stays
 * full: what it holds cannot be handed over, and the stop says how much
 * was not processed (every byte after the hello), not nothing.
 */
static void what_a_stall_cannot_hand_over_is_said_at_the_stop(void **state)
{
	(void)state;
	struct ingest_server *srv;
	uint64_t filler;
	int fd = stalled_stream(&srv, &filler);

	char path[] = "/tmp/mixd-test-server-XXXXXX";
	int out = mkstemp(path), err = dup(2);
	assert_true(out >= 0 && err >= 0);
	unlink(path);
	fflush(stderr);
	dup2(out, 2);
	stop(srv);
	fflush(stderr);
	dup2(err, 2);
	close(err);
	close(fd);
	char said[512] = {0};
	assert_true(pread(out, said, sizeof said - 1, 0) > 0);
	close(out);
	assert_non_null(strstr(said, "mixd: stopping: 960 bytes of records that 1 "
				     "stalled socket connection(s) sent were "
				     "not processed"));
	ingest_ring_destroy(queue);
}

/*
 * Socket producers' counts frames are their word, counted no faster than
 * producers could lose records, through one allowance for them all: 100
 * connections, each with one frame claiming 2^32 drops, add the burst and
 * what the time since allows, not 2^38 (nor a burst each). On another
 * server, a true claim above the burst arrives whole although its
 * connection closes at once.
 */
static void counts_frames_are_counted_no_faster_than_producers_lose(
	void **state)
{
	(void)state;
	assert_int_equal(ingest_ring_create_queue(INGEST_QUEUE_MIN, &queue),
			 0);
	struct ingest_server *srv = start();
	uint64_t t0 = ingest_now_coarse(); /* the allowance's clock */
	uint8_t f[24];
	counts_frame(f, 1ull << 32);
	for (int i = 0; i < 100; i++) {
		int liar = stream_connection();
		assert_int_equal(send(liar, f, sizeof f, 0), (ssize_t)sizeof f);
		close(liar);
	}
	usleep(100 * 1000);
	struct ingest_server_stats st;
	ingest_server_stats(srv, &st);
	/* (one more: the allowance counts on a grid of its own, up to one
	 * step before t0) */
	uint64_t most = INGEST_SAID_BURST + 1 + (ingest_now_coarse() - t0) /
							(1000000000 / INGEST_SAID_PER_S);
	assert_true(st.stream_dropped >= INGEST_SAID_BURST &&
		    st.stream_dropped <= most);
	stop(srv);

	srv = start();
	const uint64_t want = 3 * INGEST_SAID_BURST;
	int fd = stream_connection();
	counts_frame(f, want);
	assert_int_equal(send(fd, f, sizeof f, 0), (ssize_t)sizeof f);
	close(fd);
	for (int i = 0; i < 500 && st.stream_dropped < want; i++) {
		usleep(10 * 1000);
		ingest_server_stats(srv, &st);
	}
	assert_int_equal(st.stream_dropped, want);
	stop(srv);
	ingest_ring_destroy(queue);
}

static void a_cut_off_frame_is_counted(void **state)
{
	(void)state;
	cut_frame(false);
}

static void a_cut_off_frame_is_counted_when_the_close_comes_in_a_stall(
	void **state)
{
	(void)state;
	cut_frame(true);
}

/* A second mixd on the path of a running one is refused: it would take
 * the name, leave the first without producers, and lose it when the first
 * stopped and removed the file. */
static void a_socket_in_use_is_not_taken(void **state)
{
	(void)state;
	struct ingest_server *a = start(), *b;
	char err[256];
	assert_int_equal(ingest_server_start(sock_path, &sink, NULL, &b, err,
					     sizeof err),
			 -EADDRINUSE);
	assert_non_null(strstr(err, "in use"));
	struct stat st;
	assert_int_equal(stat(sock_path, &st), 0);
	stop(a);
	assert_int_not_equal(stat(sock_path, &st), 0);
}

/* A server removes the socket file at its stop only if it is still its
 * own: here the file was removed and another server made the path its. */
static void only_its_own_socket_file_is_removed(void **state)
{
	(void)state;
	struct ingest_server *a = start();
	assert_int_equal(unlink(sock_path), 0);
	struct ingest_server *b = start();
	stop(a);
	struct stat st;
	assert_int_equal(stat(sock_path, &st), 0);
	stop(b);
	assert_int_not_equal(stat(sock_path, &st), 0);
}

/* close(), interposed (libmixd is linked into this binary): closing
 * slow_fd takes a second, as a close on a producer's own FUSE file takes
 * as long as the producer likes; which thread closed it is noted. */
static int slow_fd = -1;          /* atomic */
static int slow_closed;           /* atomic */
static pthread_t slow_closer;
static int (*real_close)(int);

__attribute__((constructor)) static void find_close(void)
{
	*(void **)&real_close = dlsym(RTLD_NEXT, "close");
}

/* ... and closing a descriptor of the pipe numbered stuck_ino, on any
 * thread but the test's, does not return until stuck_ino is 0 again, as
 * a close on a FUSE file whose server never answers. */
static uint64_t stuck_ino; /* atomic */
static pthread_t test_thread;

static bool is_stuck(int fd)
{
	uint64_t ino = __atomic_load_n(&stuck_ino, __ATOMIC_ACQUIRE);
	struct stat st;
	return ino && !pthread_equal(pthread_self(), test_thread) &&
	       fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_ino == ino;
}

int close(int fd)
{
	if (fd >= 0 && is_stuck(fd)) {
		while (__atomic_load_n(&stuck_ino, __ATOMIC_ACQUIRE))
			usleep(1000);
		return real_close(fd);
	}
	if (fd >= 0 && fd == __atomic_load_n(&slow_fd, __ATOMIC_ACQUIRE)) {
		slow_closer = pthread_self();
		struct timespec ts = {1, 0};
		nanosleep(&ts, NULL);
		int rc = real_close(fd);
		__atomic_store_n(&slow_closed, 1, __ATOMIC_RELEASE);
		return rc;
	}
	return real_close(fd);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A descriptor from a producer is closed on a thread of its own: its
 * close may wait on the producer, and the io thread, every producer's,
 * must not. It is closed all the same. */
/* The mode of the socket mixd makes at @path under umask 077. */
static mode_t socket_mode_at(const char *path)
{
	char keep[sizeof sock_path];
	memcpy(keep, sock_path, sizeof keep);
	snprintf(sock_path, sizeof sock_path, "%s", path);
	mode_t old = umask(077);
	struct ingest_server *srv = start();
	umask(old);
	struct stat st;
	assert_int_equal(stat(sock_path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	stop(srv);
	memcpy(sock_path, keep, sizeof keep);
	return st.st_mode & 07777;
}

/* Producers run as other users than mixd: the socket is 0666 whatever
 * mixd's umask, and its directory decides who may reach it -- except in
 * a directory anyone may write to (/tmp), where the umask's mode stays. */
static void the_socket_is_open_to_every_user(void **state)
{
	(void)state;
	char dir[] = "/tmp/mixd-test-server.XXXXXX", path[64];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/mixd.sock", dir);
	assert_int_equal(socket_mode_at(path), 0666);
	assert_int_equal(chmod(dir, 01777), 0);
	assert_int_equal(socket_mode_at(path), 0700);
	rmdir(dir);
}

static void an_untrusted_close_does_not_wait(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	__atomic_store_n(&slow_fd, p[0], __ATOMIC_RELEASE);
	double t0 = now_s();
	ingest_close_untrusted(p[0]);
	assert_true(now_s() - t0 < 0.5);
	for (int i = 0; i < 3000 && !__atomic_load_n(&slow_closed,
						      __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	assert_true(__atomic_load_n(&slow_closed, __ATOMIC_ACQUIRE));
	assert_false(pthread_equal(slow_closer, pthread_self()));
	__atomic_store_n(&slow_fd, -1, __ATOMIC_RELEASE);
	real_close(p[1]);
}

/* A connection that sends a shared-memory hello with descriptor @fd. */
static int shm_hello(int fd)
{
	struct mixd_hello h = {.version = MIXD_HELLO_VERSION,
			       .kind = MIXD_HELLO_SHM};
	memcpy(h.marker, MIXD_HELLO_MARKER, 8);
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", sock_path);
	assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
	struct iovec iov = {&h, sizeof h};
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
			   .msg_control = u.b, .msg_controllen = sizeof u.b};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	assert_int_equal(sendmsg(c, &m, 0), (ssize_t)sizeof h);
	return c;
}

/* This process's descriptors of the pipe numbered @ino. */
static int pipe_fds(uint64_t ino)
{
	char want[64], path[64], got[64];
	snprintf(want, sizeof want, "pipe:[%llu]", (unsigned long long)ino);
	int n = 0;
	for (int fd = 0; fd < 4096; fd++) {
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
		ssize_t k = readlink(path, got, sizeof got - 1);
		if (k > 0 && (got[k] = 0, !strcmp(got, want)))
			n++;
	}
	return n;
}

/* A memfd ring a producer would send. */
static int ring_memfd(void)
{
	int fd = memfd_create("test-server", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	size_t size = MIXD_RING_HDR_SIZE + MIXD_RING_MIN_CAPACITY;
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
	struct mixd_ring_hdr *h =
		mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(h != MAP_FAILED);
	ring_init(h, MIXD_RING_MIN_CAPACITY, 1, 1, 0);
	munmap(h, size);
	return fd;
}

/* Wait (2 s at most) for @srv to have refused @n hellos in all. */
static void failed_to(struct ingest_server *srv, uint64_t n)
{
	struct ingest_server_stats ss;
	ingest_server_stats(srv, &ss);
	for (int i = 0; i < 2000 && ss.handshake_failed < n; i++) {
		usleep(1000);
		ingest_server_stats(srv, &ss);
	}
	assert_int_equal(ss.handshake_failed, n);
}

/*
 * Descriptors whose close never returns (a FUSE file's, its server
 * silent) hold the closer; while 64 wait, mixd takes no more: hellos'
 * descriptors are dropped by the kernel unopened (200 more hellos, and
 * mixd holds no more of them), a good shared-memory hello is refused,
 * and the io thread goes on (a stream record still arrives). Once the
 * closes return, rings are taken again.
 */
static void descriptors_whose_close_hangs_are_bounded(void **state)
{
	(void)state;
	assert_int_equal(ingest_ring_create_queue(INGEST_QUEUE_MIN, &queue),
			 0);
	struct ingest_server *srv = start();
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct stat st;
	assert_int_equal(fstat(p[0], &st), 0);
	test_thread = pthread_self();
	__atomic_store_n(&stuck_ino, (uint64_t)st.st_ino, __ATOMIC_RELEASE);
	struct ingest_server_stats ss;
	ingest_server_stats(srv, &ss);
	const uint64_t failed0 = ss.handshake_failed;
	int conns[300], n = 0;
	for (; n < 70; n++)
		conns[n] = shm_hello(p[0]);
	failed_to(srv, failed0 + 70); /* taken, refused, waiting to close */
	assert_true(ingest_close_untrusted_backed_up());
	int held = pipe_fds(st.st_ino);
	for (; n < 270; n++)
		conns[n] = shm_hello(p[0]);
	failed_to(srv, failed0 + 270);
	assert_true(pipe_fds(st.st_ino) <= held);
	int mfd = ring_memfd();
	conns[n++] = shm_hello(mfd);
	failed_to(srv, failed0 + 271);
	assert_int_equal(__atomic_load_n(&attached, __ATOMIC_ACQUIRE), 0);
	int fd = stream_connection();
	uint8_t f[CODE_FRAME_LEN];
	code_frame(f);
	assert_int_equal(send(fd, f, sizeof f, 0), (ssize_t)sizeof f);
	for (int i = 0; i < 2000 && ss.stream_records == 0; i++) {
		usleep(1000);
		ingest_server_stats(srv, &ss);
	}
	assert_int_equal(ss.stream_records, 1);

	__atomic_store_n(&stuck_ino, 0, __ATOMIC_RELEASE); /* they return */
	ingest_close_untrusted_wait();
	conns[n++] = shm_hello(mfd);
	for (int i = 0; i < 2000 && !__atomic_load_n(&attached, __ATOMIC_ACQUIRE);
	     i++)
		usleep(1000);
	assert_int_equal(__atomic_load_n(&attached, __ATOMIC_ACQUIRE), 1);
	for (int i = 0; i < n; i++)
		real_close(conns[i]);
	real_close(fd);
	real_close(mfd);
	real_close(p[0]);
	real_close(p[1]);
	stop(srv);
	ingest_ring_destroy(queue);
}

int main(void)
{
	snprintf(sock_path, sizeof sock_path, "/tmp/mixd-test-server-%d.sock",
		 (int)getpid());
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_cut_off_frame_is_counted),
		cmocka_unit_test(a_cut_off_frame_is_counted_when_the_close_comes_in_a_stall),
		cmocka_unit_test(what_a_stall_holds_is_handed_over_at_the_stop),
		cmocka_unit_test(what_a_stall_cannot_hand_over_is_said_at_the_stop),
		cmocka_unit_test(
			counts_frames_are_counted_no_faster_than_producers_lose),
		cmocka_unit_test(descriptors_whose_close_hangs_are_bounded),
		cmocka_unit_test(a_socket_in_use_is_not_taken),
		cmocka_unit_test(only_its_own_socket_file_is_removed),
		cmocka_unit_test(an_untrusted_close_does_not_wait),
		cmocka_unit_test(the_socket_is_open_to_every_user),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
