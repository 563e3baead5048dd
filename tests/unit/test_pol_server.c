/*
 * test_pol_server -- the policy socket's server, through its wire
 * protocol (<mixd/check.h>) from a raw socket, where the checker's tests
 * (test_checker) go through libmixd.
 *
 * A client that sends a burst of requests and reads the answers as they
 * come, while the server holds some requests back because a megabyte of
 * answers is unread, gets every answer: the held requests are answered
 * when the backlog drains, whether or not the client sends again. With
 * no configuration yet, a request whose record does not decode is still
 * answered INVALID_ARGUMENT and counted.
 *
 * MIXD_TEST_THREADED: a writer thread beside the reader, and the server's.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include <mixd/check.h>
#include <mixd/ring.h>

#include "policy/pol_server.h"
#include "policy_fixture.h"

/* Requests per burst: with answers of about 1 KiB, several megabytes of
 * answers, so the server's 1 MiB backlog fills many times over. */
#define BURST 5000
#define TRIALS 10
/* A request: frame header, id, no dedup id, no quotas, an empty record. */
#define REQ_BYTES 24

static struct policy_sock ps;
static struct pol_server *srv;

/* A denier whose every answer carries a message of 1,000 bytes. */
static const char *long_message_yaml(void)
{
	static char yaml[2048];
	char msg[1001];
	memset(msg, 'x', 1000);
	msg[1000] = 0;
	snprintf(yaml, sizeof yaml,
		 YAML_DENIER("{status: {code: 7, message: %s}}")
			 YAML_NOTHING YAML_DENY_WHEN("true"),
		 msg);
	return yaml;
}

static int connect_hello_to(const char *sock)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	memcpy(a.sun_path, sock, strlen(sock) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	struct mixd_hello h = {.version = MIXD_CHECK_VERSION,
			       .kind = MIXD_HELLO_CHECK};
	memcpy(h.marker, MIXD_HELLO_MARKER, sizeof h.marker);
	assert_int_equal(write(fd, &h, sizeof h), (ssize_t)sizeof h);
	return fd;
}

static int connect_hello(void)
{
	return connect_hello_to(ps.path);
}

/* @n requests of ids 0 to @n - 1 at @b, written whole to @fd; false
 * when a write failed. */
static bool write_requests(int fd, uint8_t *b, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		uint8_t *p = b + i * REQ_BYTES;
		uint32_t len = REQ_BYTES - 8, mark = MIXD_FRAME_CHECK;
		memset(p, 0, REQ_BYTES);
		memcpy(p, &len, 4);
		memcpy(p + 4, &mark, 4);
		memcpy(p + 8, &i, 8);
	}
	for (size_t off = 0; off < n * REQ_BYTES;) {
		ssize_t w = write(fd, b + off, n * REQ_BYTES - off);
		if (w <= 0)
			return false;
		off += (size_t)w;
	}
	return true;
}

/* The burst, written whole from its own thread. */
static void *write_burst(void *arg)
{
	static uint8_t b[BURST * REQ_BYTES];
	return write_requests(*(const int *)arg, b, BURST) ? NULL : (void *)1;
}

/* Answers read from @fd until there have been @want, or none came for
 * 2 s. */
static size_t read_answers(int fd, size_t want)
{
	static uint8_t buf[1 << 20];
	size_t have = 0, got = 0;
	while (got < want) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, 2000) != 1)
			break;
		ssize_t r = read(fd, buf + have, sizeof buf - have);
		if (r <= 0)
			break;
		have += (size_t)r;
		size_t off = 0;
		while (have - off >= 8) {
			uint32_t len;
			memcpy(&len, buf + off, 4);
			size_t frame = 8 + ((len + 7u) & ~7u);
			if (have - off < frame)
				break;
			got++;
			off += frame;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	return got;
}

static void test_held_requests_are_answered(void **state)
{
	(void)state;
	for (int t = 0; t < TRIALS; t++) {
		int fd = connect_hello();
		pthread_t w;
		assert_int_equal(pthread_create(&w, NULL, write_burst, &fd), 0);
		size_t got = read_answers(fd, BURST);
		void *wrc;
		pthread_join(w, &wrc);
		assert_null(wrc);
		if (got != BURST)
			fail_msg("trial %d: %zu answers of %d, then none for 2 s",
				 t, got, BURST);
		close(fd);
	}
}

/* Clients that send and never read: each one's answers fill its socket
 * and then the server's buffer for it, to its limit; together they fill
 * the server's total, and then each holds little. What the server holds
 * stays within the bound pol_server.h gives, where without the total it
 * would be some 2 MiB a client; every answer still arrives once the
 * clients read, and the buffers of the bursts are given back. */
#define IDLE_CLIENTS 48
/* answers of 1 KiB: past one client's limit even with a socket buffer of
 * a megabyte (a raised net.core.wmem_default) */
#define IDLE_BURST 3000

static struct pol_server_stats stats_now(void)
{
	struct pol_server_stats st;
	pol_server_stats(srv, &st);
	return st;
}

/* Until @what of the server's stats holds, for up to 30 s. */
#define WAIT_STATS(st, what)                                                 \
	do {                                                                 \
		for (int ms_ = 0; ms_ < 30000; ms_ += 10) {                  \
			st = stats_now();                                    \
			if (what)                                            \
				break;                                       \
			usleep(10000);                                       \
		}                                                            \
		if (!(what))                                                 \
			fail_msg("after 30 s, not %s: %llu bytes held", #what, \
				 (unsigned long long)st.answer_bytes);       \
	} while (0)

static void test_answers_unread_are_bounded(void **state)
{
	(void)state;
	static uint8_t b[IDLE_BURST * REQ_BYTES];
	int fds[IDLE_CLIENTS];
	for (int i = 0; i < IDLE_CLIENTS; i++) {
		fds[i] = connect_hello();
		assert_true(write_requests(fds[i], b, IDLE_BURST));
	}
	/* The total is reached: no client may then go past its small share,
	 * however long the server goes on. */
	struct pol_server_stats st;
	WAIT_STATS(st, st.answer_bytes >= POL_ANSWERS_TOTAL);
	usleep(300000);
	st = stats_now();
	const uint64_t bound = POL_ANSWERS_TOTAL + 2ull * POL_ANSWERS_CLIENT_MAX +
			       2ull * POL_ANSWERS_KEEP * IDLE_CLIENTS;
	if (st.answer_bytes > bound)
		fail_msg("%llu bytes of answers held; bound %llu",
			 (unsigned long long)st.answer_bytes,
			 (unsigned long long)bound);
	for (int i = 0; i < IDLE_CLIENTS; i++) {
		size_t got = read_answers(fds[i], IDLE_BURST);
		if (got != IDLE_BURST)
			fail_msg("client %d: %zu answers of %d", i, got,
				 IDLE_BURST);
	}
	WAIT_STATS(st, st.answer_bytes <=
			       (uint64_t)POL_ANSWERS_IDLE * IDLE_CLIENTS);
	for (int i = 0; i < IDLE_CLIENTS; i++)
		close(fds[i]);
}

/* The code of the one answer to a request of @id whose record is
 * @record (@n bytes), sent on @fd. */
static int32_t answer_code(int fd, uint64_t id, const void *record,
			   uint32_t n)
{
	uint8_t req[64] = {0};
	uint32_t len = 8 + 2 + 2 + 4 + n, mark = MIXD_FRAME_CHECK;
	assert_true(8 + len <= sizeof req);
	memcpy(req, &len, 4);
	memcpy(req + 4, &mark, 4);
	memcpy(req + 8, &id, 8); /* then no dedup id, no quotas */
	memcpy(req + 20, &n, 4);
	if (n)
		memcpy(req + 24, record, n);
	size_t framed = 8 + ((len + 7u) & ~7u);
	assert_int_equal(write(fd, req, framed), (ssize_t)framed);
	uint8_t ans[4096];
	size_t have = 0;
	while (have < 20) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		assert_int_equal(poll(&pf, 1, 2000), 1);
		ssize_t r = read(fd, ans + have, sizeof ans - have);
		assert_true(r > 0);
		have += (size_t)r;
	}
	uint64_t got_id;
	int32_t code;
	memcpy(&got_id, ans + 8, 8);
	memcpy(&code, ans + 16, 4);
	assert_int_equal(got_id, id);
	return code;
}

static void test_no_config_still_refuses_bad_records(void **state)
{
	(void)state;
	char sock[128], address[160], err[256];
	snprintf(sock, sizeof sock, "%s/bare.sock", ps.dir);
	snprintf(address, sizeof address, "unix://%s", sock);
	struct pol_server *bare;
	assert_int_equal(
		pol_server_start(address, NULL, 0, &bare, err, sizeof err), 0);
	int fd = connect_hello_to(sock);
	static const uint8_t bad[3] = {0xff, 0xff, 0xff}; /* half a header */
	assert_int_equal(answer_code(fd, 1, bad, sizeof bad), 3);
	assert_int_equal(answer_code(fd, 2, NULL, 0), 0); /* empty: OK */
	struct pol_server_stats st;
	pol_server_stats(bare, &st);
	assert_int_equal(st.malformed, 1);
	close(fd);
	pol_server_stop(bare);
}

static int setup(void **state)
{
	(void)state;
	policy_sock_make(&ps, "test_pol_server");
	srv = server_of(ps.address, long_message_yaml());
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pol_server_stop(srv);
	policy_sock_remove(&ps);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_held_requests_are_answered),
		cmocka_unit_test(test_answers_unread_are_bounded),
		cmocka_unit_test(test_no_config_still_refuses_bad_records),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
