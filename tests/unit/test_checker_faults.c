/*
 * test_checker_faults -- libmixd's checker where things go wrong around
 * it, each case a bug a review found: a check asked from a callback is
 * sent at once; after fork() neither the parent's descriptor nor the
 * child's is stale; connections that break twice leave no check stuck at
 * the head of the ring; and an answer to a request that named an
 * attribute inline is never offered for reuse.
 *
 * Not run under TSan: it forks a process that starts threads, which
 * TSan does not support; test_checker covers the checker's threads.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <mixd/check.h>
#include <mixd/client.h>

#include "config/config.h"
#include "policy/pol_server.h"
#include "policy/policy.h"
#include "policy_fixture.h"

static const char yaml[] = YAML_DENY_ADMIN;

static struct policy_sock ps;
static struct pol_server *srv;
static const struct mixd_checker_options no_cache = {.cache_entries = -1};

static void start_server(void)
{
	srv = server_of(ps.address, yaml);
}

static int setup(void **state)
{
	(void)state;
	policy_sock_make(&ps, "test_checker_faults");
	start_server();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pol_server_stop(srv);
	policy_sock_remove(&ps);
	return 0;
}


static void msleep(int ms)
{
	usleep((useconds_t)ms * 1000);
}

struct note {
	int ran, rc;
	int code, from_mixd; /* of the answer the callback was given */
	mixd_checker *k; /* chain a check from the callback */
	struct note *chain;
};

static void note(void *arg, int rc, const struct mixd_check_answer *a)
{
	struct note *n = arg;
	n->ran++;
	n->rc = rc;
	n->code = a->code;
	n->from_mixd = a->from_mixd;
	if (n->k) {
		struct mixd_value v[] = {STR(MIXD_ATTR_REQUEST_PATH, "/b")};
		mixd_check_async(n->k, v, 1, NULL, NULL, 0, 1000, note,
				 n->chain);
	}
}

/*
 * A check asked from a callback, while another answer waits in the read
 * buffer, goes out before the dispatch returns: an event loop that waits
 * on the descriptor hears its answer, rather than its timeout.
 */
static void test_unsent_after_callback(void **state)
{
	(void)state;
	mixd_checker *k;
	assert_int_equal(mixd_checker_open(ps.address, &no_cache, &k), 0);
	struct mixd_value v[] = {STR(MIXD_ATTR_REQUEST_PATH, "/a")};
	struct note a1 = {0}, a2 = {0}, a3 = {0}, b = {0};
	a2.k = k;
	a2.chain = &b;
	mixd_check_async(k, v, 1, NULL, NULL, 0, 5000, note, &a1); /* sent */
	mixd_check_async(k, v, 1, NULL, NULL, 0, 5000, note, &a2); /* kept */
	mixd_check_async(k, v, 1, NULL, NULL, 0, 5000, note, &a3); /* kept */
	msleep(50);
	/* a1's answer; a2 and a3 go out, and are answered together (in
	 * this dispatch already, or the next): a2's callback asks b while
	 * a3's answer waits to be read */
	int got = mixd_checker_dispatch(k, 0);
	struct pollfd pf = {.fd = mixd_checker_fd(k), .events = POLLIN};
	if (got < 3) {
		msleep(50);
		assert_int_equal(poll(&pf, 1, 1000), 1);
		got += mixd_checker_dispatch(k, 0);
	}
	assert_int_equal(got, 3);
	assert_int_equal(b.ran, 0);
	/* an event loop: wait on the fd for as long as the checker says */
	int t = mixd_checker_timeout(k);
	int n = poll(&pf, 1, t);
	mixd_checker_dispatch(k, 0);
	mixd_checker_close(k);
	assert_int_equal(n, 1);
	assert_int_equal(b.rc, 0);
}

/* mixd in a process of its own, on @addr, until it is killed. */
static pid_t fork_mixd(const char *addr)
{
	pid_t pid = fork();
	if (pid == 0) {
		struct pol_server *s;
		char err[256];
		if (pol_server_start(addr, engine_of(yaml), 0, &s, err,
				     sizeof(err)))
			_exit(1);
		for (;;)
			pause();
	}
	return pid;
}

/*
 * After fork(), in the parent: a connection that broke leaves the epoll
 * set though the child still holds the socket (a close alone would not
 * take it out), so an idle descriptor is not readable.
 */
static void test_fork_parent_stale_epoll(void **state)
{
	(void)state;
	char spath[100], saddr[160];
	snprintf(spath, sizeof(spath), "%s/p2.sock", ps.dir);
	snprintf(saddr, sizeof(saddr), "unix://%s", spath);
	/* mixd in a process of its own (the in-process one's fds would be
	 * inherited by the child below) */
	pid_t m1 = fork_mixd(saddr);
	msleep(200);
	mixd_checker *k;
	struct mixd_check_answer a;
	assert_int_equal(mixd_checker_open(saddr, &no_cache, &k), 0);
	assert_int_equal(mixd_check(k, NULL, 0, NULL, NULL, 0, 1000, &a), 0);
	pid_t pid = fork();
	if (pid == 0) { /* a child that does not use the checker */
		sleep(5);
		_exit(0);
	}
	/* mixd restarts */
	kill(m1, SIGKILL);
	waitpid(m1, NULL, 0);
	unlink(spath);
	pid_t m2 = fork_mixd(saddr);
	msleep(200);
	/* the parent finds out (the first check may be the one that does)
	 * and reconnects */
	mixd_check(k, NULL, 0, NULL, NULL, 0, 1000, &a);
	assert_int_equal(mixd_check(k, NULL, 0, NULL, NULL, 0, 1000, &a), 0);
	/* nothing in flight: the fd must not be readable */
	int spins = 0;
	for (int i = 0; i < 100; i++) {
		struct pollfd pf = {.fd = mixd_checker_fd(k), .events = POLLIN};
		if (poll(&pf, 1, 0) == 1) {
			spins++;
			mixd_checker_dispatch(k, 0);
		}
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	kill(m2, SIGKILL);
	waitpid(m2, NULL, 0);
	unlink(spath);
	mixd_checker_close(k);
	assert_int_equal(spins, 0);
}

/*
 * After fork(), in the child: mixd_checker_fd() asked before the child's
 * first check is already the child's own, and hears its answers.
 */
static void test_fork_child_fd(void **state)
{
	(void)state;
	mixd_checker *k;
	struct mixd_check_answer a;
	assert_int_equal(mixd_checker_open(ps.address, &no_cache, &k), 0);
	assert_int_equal(mixd_check(k, NULL, 0, NULL, NULL, 0, 1000, &a), 0);
	pid_t pid = fork();
	if (pid == 0) {
		int ep = epoll_create1(0);
		struct epoll_event ev = {.events = EPOLLIN};
		epoll_ctl(ep, EPOLL_CTL_ADD, mixd_checker_fd(k), &ev);
		struct note n = {0};
		mixd_check_async(k, NULL, 0, NULL, NULL, 0, 2000, note, &n);
		int got = epoll_wait(ep, &ev, 1, 1000);
		_exit(got == 1 ? 0 : 1);
	}
	int st;
	waitpid(pid, &st, 0);
	mixd_checker_close(k);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- a fake mixd ---------------------------------------------------- */

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* Read what the client sent (hello and frames); the ids into @ids. */
static int rd_wait = 200;
static size_t read_requests(int s, uint64_t *ids, size_t max, bool hello)
{
	static uint8_t buf[1 << 20];
	size_t len = 0;
	for (;;) {
		struct pollfd pf = {.fd = s, .events = POLLIN};
		if (poll(&pf, 1, rd_wait) != 1)
			break;
		ssize_t n = recv(s, buf + len, sizeof(buf) - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	size_t off = hello ? sizeof(struct mixd_hello) : 0, n = 0;
	while (off + 8 <= len) {
		uint32_t fl;
		memcpy(&fl, buf + off, 4);
		if (n < max)
			ids[n] = rd64(buf + off + 8);
		n++;
		off += 8 + MIXD_FRAME_ALIGN(fl);
	}
	return n;
}

static void answer_ok(int s, uint64_t id)
{
	uint8_t f[48] = {0};
	uint32_t len = 8 + 4 + 8 + 4 + 2 + 2 + 2, mark = MIXD_FRAME_CHECK_ANSWER;
	memcpy(f, &len, 4);
	memcpy(f + 4, &mark, 4);
	memcpy(f + 8, &id, 8);
	uint16_t none = MIXD_CHECK_REFS_NONE;
	memcpy(f + 8 + 28, &none, 2);
	ssize_t n = send(s, f, 8 + MIXD_FRAME_ALIGN(len), MSG_NOSIGNAL);
	if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
		return; /* the checker gave this connection up */
	assert_int_equal(n, (ssize_t)(8 + MIXD_FRAME_ALIGN(len)));
}

static int stop_healthy; /* atomic */

/* Accept and answer every request OK, until stop_healthy. */
static void *healthy(void *arg)
{
	int l = *(int *)arg;
	rd_wait = 5;
	int c[16], nc = 0;
	bool hello[16];
	while (!__atomic_load_n(&stop_healthy, __ATOMIC_ACQUIRE)) {
		struct pollfd pf = {.fd = l, .events = POLLIN};
		if (poll(&pf, 1, 10) == 1 && nc < 16) {
			hello[nc] = true;
			c[nc++] = accept(l, NULL, NULL);
		}
		for (int i = 0; i < nc; i++) {
			if (c[i] < 0)
				continue;
			uint64_t ids[64];
			struct pollfd q = {.fd = c[i], .events = POLLIN};
			if (poll(&q, 1, 0) != 1)
				continue;
			size_t n = read_requests(c[i], ids, 64, hello[i]);
			hello[i] = false;
			for (size_t j = 0; j < n && j < 64; j++)
				answer_ok(c[i], ids[j]);
		}
	}
	for (int i = 0; i < nc; i++)
		close(c[i]);
	return NULL;
}

/*
 * Connections that break one after the other, one of them found broken
 * by a send that makes room for a new check: no check is left at the
 * head of the ring unanswered (every answer after it would mismatch),
 * and a healthy mixd afterwards answers every check.
 *
 * The first three checks each get the fail policy's answer (fail open
 * here: code 0, from_mixd 0), exactly once: C, which found the
 * connection gone while making room, at once, inside its own
 * mixd_check_async() (client.h: "the fail policy's when mixd cannot be
 * reached"), with -ECONNRESET; A and B, in flight on that connection, at
 * the next dispatch, with the error that broke it. Neither is answered
 * by mixd, times out or is answered -EPROTO: that would be a check left
 * behind in the ring, which is the bug.
 */
static void test_ring_desync(void **state)
{
	(void)state;
	char fpath[100], faddr[160];
	snprintf(fpath, sizeof(fpath), "%s/fake.sock", ps.dir);
	snprintf(faddr, sizeof(faddr), "unix://%s", fpath);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fpath);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 16), 0);

	mixd_checker *k;
	assert_int_equal(mixd_checker_open(faddr, &no_cache, &k), 0);
	static char big[10000];
	memset(big, 'x', sizeof(big));
	struct mixd_value bv[] = {{.attr = MIXD_ATTR_REQUEST_PATH,
				   .type = MIXD_T_STRING,
				   .len = sizeof(big),
				   .p = big}};
	struct note na = {0}, nb = {0}, nc = {0}, nd = {0}, ne = {0};
	uint64_t ids[16];

	/* connection 1: mixd reads A and goes away */
	mixd_check_async(k, NULL, 0, NULL, NULL, 0, 60000, note, &na);
	int s1 = accept(l, NULL, NULL);
	assert_int_equal(read_requests(s1, ids, 16, true), 1);
	close(s1);
	msleep(20);
	/* B waits in the out buffer behind A; C needs room: the flush finds
	 * mixd gone (conn_fail, failing A and B), and C, with no connection
	 * to go out on, fails at once */
	mixd_check_async(k, bv, 1, NULL, NULL, 0, 60000, note, &nb);
	mixd_check_async(k, bv, 1, NULL, NULL, 0, 300, note, &nc);
	int c_at_once = nc.ran, ab_at_once = na.ran + nb.ran;
	int first_dispatch = mixd_checker_dispatch(k, 0);
	int ab_by_dispatch = na.ran + nb.ran;

	/* connection 2: D goes out on it (alone: C is gone); mixd crashes
	 * before answering */
	mixd_check_async(k, NULL, 0, NULL, NULL, 0, 60000, note, &nd);
	mixd_checker_dispatch(k, 0);
	int s2 = accept(l, NULL, NULL);
	assert_int_equal(read_requests(s2, ids, 16, true), 1);
	close(s2);
	msleep(20);
	mixd_checker_dispatch(k, 0);

	/* connection 3: a healthy mixd answers E */
	mixd_check_async(k, NULL, 0, NULL, NULL, 0, 60000, note, &ne);
	int s3 = accept(l, NULL, NULL);
	assert_int_equal(read_requests(s3, ids, 16, true), 1);
	answer_ok(s3, ids[0]);
	msleep(20);
	mixd_checker_dispatch(k, 0);
	close(s3);
	msleep(400);
	mixd_checker_dispatch(k, 0);
	/* from now on a healthy mixd answers everything, at once */
	pthread_t th;
	pthread_create(&th, NULL, healthy, &l);
	int ok = 0;
	for (int i = 0; i < 5; i++) {
		struct mixd_check_answer a;
		int rc = mixd_check(k, NULL, 0, NULL, NULL, 0, 300, &a);
		ok += rc == 0;
	}
	__atomic_store_n(&stop_healthy, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	mixd_checker_close(k);
	close(l);
	unlink(fpath);
	/* C: failed inside its own call, mixd went away */
	assert_int_equal(c_at_once, 1);
	assert_int_equal(nc.ran, 1);
	assert_int_equal(nc.rc, -ECONNRESET);
	assert_int_equal(nc.code, 0);
	assert_int_equal(nc.from_mixd, 0);
	/* A and B: not at once (the broken connection is found by C's
	 * flush, after their calls returned), both by the next dispatch,
	 * once each, failed with -ECONNRESET, "mixd went away" (whatever
	 * the send said: -EPIPE on Linux for a peer that closed): never an
	 * answer, a timeout or a mismatch */
	assert_int_equal(ab_at_once, 0);
	assert_int_equal(first_dispatch, 2);
	assert_int_equal(ab_by_dispatch, 2);
	struct note *ab[] = {&na, &nb};
	for (int i = 0; i < 2; i++) {
		assert_int_equal(ab[i]->ran, 1);
		assert_int_equal(ab[i]->rc, -ECONNRESET);
		assert_int_equal(ab[i]->code, 0);
		assert_int_equal(ab[i]->from_mixd, 0);
	}
	assert_int_equal(nd.ran, 1);
	assert_int_equal(ne.rc, 0);
	assert_int_equal(ok, 5);
}


/* A listening socket at a path of its own in the test's directory:
 * *@addr for the checker; the caller closes and unlinks. */
static int fake_mixd(const char *name, char *path, size_t plen, char *addr,
		     size_t alen)
{
	snprintf(path, plen, "%s/%s", ps.dir, name);
	snprintf(addr, alen, "unix://%s", path);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 16), 0);
	return l;
}

/* Answers of @n blocking checks by @k, 300 ms each at most, that came
 * from mixd with rc 0. */
static int answered(mixd_checker *k, int n)
{
	int ok = 0;
	for (int i = 0; i < n; i++) {
		struct mixd_check_answer a;
		ok += mixd_check(k, NULL, 0, NULL, NULL, 0, 300, &a) == 0 &&
		      a.from_mixd;
	}
	return ok;
}

/*
 * A mixd that stops answering until the checker's ring is full of
 * checks given up (4 here), then answers again: the checks after that
 * reach it. The full ring was failed but its given-up checks were taken
 * off only by a dispatch, which a check answered at once never runs:
 * every check from then on was refused -ENOBUFS, for good, though nothing
 * was in flight.
 */
static void test_a_ring_full_of_given_up_checks_is_emptied(void **state)
{
	(void)state;
	char path[100], addr[160];
	int l = fake_mixd("stalled.sock", path, sizeof path, addr, sizeof addr);
	struct mixd_checker_options o = {.cache_entries = -1,
					 .max_in_flight = 4};
	mixd_checker *k;
	assert_int_equal(mixd_checker_open(addr, &o, &k), 0);
	/* nobody accepts or answers: each check times out */
	int refused = 0;
	for (int i = 0; i < 8; i++) {
		struct mixd_check_answer a;
		int rc = mixd_check(k, NULL, 0, NULL, NULL, 0, 20, &a);
		assert_true(rc == -ETIMEDOUT || rc == -ENOBUFS);
		refused += rc == -ENOBUFS;
	}
	assert_int_equal(refused, 0);
	__atomic_store_n(&stop_healthy, 0, __ATOMIC_RELEASE);
	pthread_t th;
	pthread_create(&th, NULL, healthy, &l);
	int ok = answered(k, 5);
	__atomic_store_n(&stop_healthy, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	mixd_checker_close(k);
	close(l);
	unlink(path);
	assert_int_equal(ok, 5);
}

/*
 * mixd restarts while a blocking client's connection stands idle: the
 * first check after it goes to the new mixd. It was written to the old
 * connection, found it closed and got the fail policy's answer, though
 * it had never left and a mixd was there to answer it.
 */
static void test_the_first_check_after_a_restart_reaches_mixd(void **state)
{
	(void)state;
	char path[100], addr[160];
	int l = fake_mixd("restart.sock", path, sizeof path, addr, sizeof addr);
	mixd_checker *k;
	assert_int_equal(mixd_checker_open(addr, &no_cache, &k), 0);
	pthread_t th;
	int ok[2];
	for (int run = 0; run < 2; run++) {
		/* each run a mixd that answers, then goes: its connections
		 * closed */
		__atomic_store_n(&stop_healthy, 0, __ATOMIC_RELEASE);
		pthread_create(&th, NULL, healthy, &l);
		ok[run] = answered(k, 3);
		__atomic_store_n(&stop_healthy, 1, __ATOMIC_RELEASE);
		pthread_join(th, NULL);
		msleep(20);
	}
	mixd_checker_close(k);
	close(l);
	unlink(path);
	assert_int_equal(ok[0], 3);
	assert_int_equal(ok[1], 3);
}

/*
 * The protocol: a request may carry inline (named) attributes, which
 * mixd decides on, but refs name dictionary ids only: such an answer is
 * not to be reused (n_refs MIXD_CHECK_REFS_NONE).
 */
static const char custom_yaml[] =
	"kind: attributemanifest\n"
	"metadata: {name: mine, namespace: istio-system}\n"
	"spec: {attributes: {my.flag: {valueType: STRING}}}\n"
	"---\n"
	YAML_DENIER("{status: {code: 7, message: go away}}")
	YAML_NOTHING YAML_DENY_WHEN("my.flag == \"x\"");

/* Send one request with record @rec, return code and n_refs. */
static void raw_check(const char *sp, const uint8_t *rec, uint32_t rl,
		      int32_t *code, uint16_t *nrefs)
{
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sp);
	assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	struct mixd_hello h = {.version = MIXD_CHECK_VERSION,
			       .kind = MIXD_HELLO_CHECK};
	memcpy(h.marker, MIXD_HELLO_MARKER, sizeof(h.marker));
	uint8_t f[256] = {0};
	uint32_t len = 8 + 2 + 2 + 4 + rl, mark = MIXD_FRAME_CHECK;
	uint64_t id = 42;
	memcpy(f, &len, 4);
	memcpy(f + 4, &mark, 4);
	memcpy(f + 8, &id, 8);
	memcpy(f + 8 + 12, &rl, 4);
	memcpy(f + 8 + 16, rec, rl);
	send(s, &h, sizeof(h), 0);
	send(s, f, 8 + MIXD_FRAME_ALIGN(len), 0);
	uint8_t a[256];
	ssize_t n = 0;
	uint32_t al = 0;
	while (n < 8 || n < (ssize_t)(8 + MIXD_FRAME_ALIGN(al))) {
		ssize_t r = recv(s, a + n, sizeof(a) - (size_t)n, 0);
		assert_true(r > 0);
		n += r;
		if (n >= 8)
			memcpy(&al, a, 4);
	}
	memcpy(code, a + 8 + 8, 4);
	uint16_t ml;
	memcpy(&ml, a + 8 + 24, 2);
	memcpy(nrefs, a + 8 + 26 + ml + 2, 2);
	close(s);
}

static void test_inline_attribute_refs(void **state)
{
	(void)state;
	char sp[100], saddr[160], err[256];
	snprintf(sp, sizeof(sp), "%s/custom.sock", ps.dir);
	snprintf(saddr, sizeof(saddr), "unix://%s", sp);
	struct pol_server *s2;
	assert_int_equal(pol_server_start(saddr, engine_of(custom_yaml), 0,
					  &s2, err, sizeof(err)),
			 0);
	/* inline attribute: u16 MIXD_ATTR_INLINE, u8 type, u16 name_len,
	 * name, value */
	uint8_t rec[64];
	uint16_t inl = MIXD_ATTR_INLINE, nl = 7;
	uint32_t vl = 1;
	size_t o = 0;
	memcpy(rec + o, &inl, 2);
	rec[o + 2] = MIXD_T_STRING;
	memcpy(rec + o + 3, &nl, 2);
	memcpy(rec + o + 5, "my.flag", 7);
	memcpy(rec + o + 12, &vl, 4);
	rec[o + 16] = 'x';
	o += 17;
	int32_t code, code0;
	uint16_t nrefs, nrefs0;
	raw_check(sp, rec, (uint32_t)o, &code, &nrefs);
	raw_check(sp, rec, 0, &code0, &nrefs0);
	pol_server_stop(s2);
	unlink(sp);
	/* a denial that depends on my.flag must not say "reusable for any
	 * request" (n_refs 0) */
	assert_int_equal(code, 7);
	assert_int_equal(nrefs, MIXD_CHECK_REFS_NONE);
	/* without it: OK, and reusable for any request without names */
	assert_int_equal(code0, 0);
	assert_int_equal(nrefs0, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unsent_after_callback),
		cmocka_unit_test(test_fork_parent_stale_epoll),
		cmocka_unit_test(test_fork_child_fd),
		cmocka_unit_test(test_ring_desync),
		cmocka_unit_test(test_a_ring_full_of_given_up_checks_is_emptied),
		cmocka_unit_test(test_the_first_check_after_a_restart_reaches_mixd),
		cmocka_unit_test(test_inline_attribute_refs),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
