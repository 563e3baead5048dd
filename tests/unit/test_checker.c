/*
 * test_checker -- libmixd's checker against mixd's policy server, in one
 * process: mixd_check() with values and mixd_check_record() with the
 * builder get the engine's answers, quotas included; bad requests are
 * refused before they are sent; a new engine is taken at once; several
 * threads on their own checkers get exact quotas between them; many
 * asynchronous checks in flight on one connection each get their own
 * answer; the cache answers again what mixd said may be reused, for as
 * long and as often as it said, keyed by the attributes the decision
 * read; a mixd that does not answer, or goes away, gets the fail
 * policy's answer in time; a client that pipelines without pause does
 * not keep the others waiting.
 *
 * MIXD_TEST_THREADED (the server thread and client threads: under TSan)
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include <mixd/client.h>

#include "config/config.h"
#include "policy/pol_server.h"
#include "policy/policy.h"
#include "policy_fixture.h"

static const char yaml[] = YAML_DENY_ADMIN
	"---\n"
	"kind: handler\n"
	"metadata: {name: q, namespace: istio-system}\n"
	"spec: {compiledAdapter: memquota, params: {quotas: [{name: "
	"rq.instance.istio-system, maxAmount: 100, validDuration: 60s}]}}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: rq, namespace: istio-system}\n"
	"spec: {compiledTemplate: quota}\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: quota, namespace: istio-system}\n"
	"spec: {actions: [{handler: q, instances: [rq]}]}\n";

static struct policy_sock ps;
static struct pol_server *srv;

/* Hand the server @e and wait until it checks with it: the engine is
 * taken on the server's wakeup, which two round trips later it has
 * surely seen (the first may be served in the same batch as the wakeup,
 * before it). */
static const struct mixd_checker_options no_cache = {.cache_entries = -1};

static void install(struct pol_engine *e)
{
	pol_server_set_engine(srv, e);
	mixd_checker *k;
	struct mixd_check_answer a;
	assert_int_equal(mixd_checker_open(ps.address, &no_cache, &k), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(mixd_check(k, NULL, 0, NULL, NULL, 0, 5000, &a),
				 0);
	mixd_checker_close(k);
}

static int setup(void **state)
{
	(void)state;
	policy_sock_make(&ps, "test_checker");
	srv = server_of(ps.address, yaml);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pol_server_stop(srv);
	policy_sock_remove(&ps);
	return 0;
}


static void test_values_and_builder(void **state)
{
	(void)state;
	mixd_checker *k;
	assert_int_equal(mixd_checker_open(ps.address, NULL, &k), 0);
	struct mixd_check_answer a;

	struct mixd_value admin[] = {STR(MIXD_ATTR_REQUEST_PATH, "/admin")};
	assert_int_equal(mixd_check(k, admin, 1, NULL, NULL, 0, 1000, &a), 0);
	assert_int_equal(a.from_mixd, 1);
	assert_int_equal(a.code, 7);
	assert_string_equal(a.message, "no.handler.istio-system:go away");
	assert_int_equal(a.valid_duration_ns, 5000000000);
	assert_int_equal(a.valid_use_count, 1000);
	assert_int_equal(a.n_quotas, 0);

	/* the builder, with quotas: 30 of 100, then 80 best effort = 70 */
	mixd_record *r = mixd_check_begin(k);
	mixd_set_string(r, MIXD_ATTR_REQUEST_PATH, "/", 1);
	struct mixd_check_quota q[2] = {{"rq", 30, 0}, {"other", 5, 0}};
	assert_int_equal(mixd_check_record(k, r, "a", q, 2, 1000, &a), 0);
	assert_int_equal(a.code, 0);
	assert_int_equal(a.n_quotas, 2);
	assert_int_equal(a.quotas[0].granted, 30);
	assert_int_equal(a.quotas[0].valid_duration_ns, 60000000000);
	assert_int_equal(a.quotas[1].granted, 5); /* no such quota: all */
	/* a retry of "a" is the same grant, not another */
	r = mixd_check_begin(k);
	assert_int_equal(mixd_check_record(k, r, "a", q, 1, 1000, &a), 0);
	assert_int_equal(a.quotas[0].granted, 30);
	q[0] = (struct mixd_check_quota){"RQ", 80, 1};
	r = mixd_check_begin(k);
	assert_int_equal(mixd_check_record(k, r, "b", q, 1, 1000, &a), 0);
	assert_int_equal(a.quotas[0].granted, 70);

	/* refused before sending, answered by the fail policy */
	struct mixd_value bad[] = {{.attr = MIXD_ATTR_REQUEST_PATH,
				    .type = MIXD_T_INT64,
				    .i = 1}};
	assert_int_equal(mixd_check(k, bad, 1, NULL, NULL, 0, 1000, &a),
			 -EINVAL);
	assert_int_equal(a.from_mixd, 0);
	assert_int_equal(a.code, 3); /* INVALID_ARGUMENT, not fail-open's OK */
	r = mixd_check_begin(k);
	assert_int_equal(mixd_record_commit(r), -EINVAL);
	mixd_checker_close(k);

	/* fail closed: UNAVAILABLE when nobody listens */
	struct mixd_checker_options o = {.fail_policy = MIXD_FAIL_CLOSE};
	assert_int_equal(
		mixd_checker_open("unix:///nonexistent/policy.sock", &o, &k), 0);
	assert_int_equal(mixd_check(k, admin, 1, NULL, NULL, 0, 100, &a),
			 -ENOENT);
	assert_int_equal(a.code, 14);
	assert_int_equal(a.from_mixd, 0);
	mixd_checker_close(k);

	/* fail open, a quota asked: OK, and no quota decided (n_quotas 0:
	 * quotas[] holds nothing to read) */
	assert_int_equal(
		mixd_checker_open("unix:///nonexistent/policy.sock", NULL, &k),
		0);
	struct mixd_check_quota rq = {"RQ", 5, 0};
	memset(&a, 0x7f, sizeof a);
	assert_int_equal(mixd_check(k, admin, 1, "c", &rq, 1, 100, &a),
			 -ENOENT);
	assert_int_equal(a.code, 0);
	assert_int_equal(a.from_mixd, 0);
	assert_int_equal(a.n_quotas, 0);
	mixd_checker_close(k);
}

static void test_new_engine_taken(void **state)
{
	(void)state;
	mixd_checker *k;
	/* (a cache would answer from the old engine until its answer
	 * expires, as Mixer's proxy did) */
	assert_int_equal(mixd_checker_open(ps.address, &no_cache, &k), 0);
	struct mixd_value admin[] = {STR(MIXD_ATTR_REQUEST_PATH, "/admin")};
	struct mixd_check_answer a;
	pol_server_set_engine(srv, engine_of("kind: rule\n"
					     "metadata: {name: r, namespace: "
					     "istio-system}\n"
					     "spec: {}\n"));
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(
			mixd_check(k, admin, 1, NULL, NULL, 0, 1000, &a), 0);
		if (a.code == 0)
			break;
		usleep(1000);
	}
	assert_int_equal(a.code, 0); /* no denier any more */
	mixd_checker_close(k);
}

#define THREADS 4
#define EACH 50

static void *ask(void *arg)
{
	long *granted = arg;
	mixd_checker *k;
	if (mixd_checker_open(ps.address, NULL, &k))
		return NULL;
	struct mixd_check_quota q = {"rq", 1, 0};
	struct mixd_check_answer a;
	char id[32];
	for (int i = 0; i < EACH; i++) {
		snprintf(id, sizeof(id), "%p-%d", (void *)granted, i);
		if (mixd_check(k, NULL, 0, id, &q, 1, 5000, &a) == 0 &&
		    a.n_quotas == 1)
			*granted += a.quotas[0].granted;
	}
	mixd_checker_close(k);
	return NULL;
}

static void test_threads_share_the_quota_exactly(void **state)
{
	(void)state;
	/* a fresh engine: 100 in the window, 200 asked */
	install(engine_of(yaml));
	pthread_t t[THREADS];
	long granted[THREADS] = {0};
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, ask, &granted[i]);
	long sum = 0;
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		sum += granted[i];
	}
	assert_int_equal(sum, 100);
	struct pol_server_stats st;
	pol_server_stats(srv, &st);
	assert_true(st.checks[POL_OK] >= THREADS * EACH);
	assert_int_equal(st.quota_keys, 1); /* one window: no dimensions */
	assert_int_equal(st.quota_full + st.quota_dedup_lost, 0);

	/* A reload of the same memquota keeps its window (Mixer kept a
	 * handler whose configuration did not change); a changed one starts
	 * afresh. */
	mixd_checker *k;
	struct mixd_check_answer a;
	struct mixd_check_quota q = {"rq", 5, 0};
	assert_int_equal(mixd_checker_open(ps.address, NULL, &k), 0);
	install(engine_of(yaml));
	assert_int_equal(mixd_check(k, NULL, 0, "r1", &q, 1, 5000, &a), 0);
	assert_int_equal(a.quotas[0].granted, 0);
	char *more = strdup(yaml), *at = strstr(more, "maxAmount: 100");
	memcpy(at, "maxAmount: 101", 14);
	install(engine_of(more));
	free(more);
	assert_int_equal(mixd_check(k, NULL, 0, "r2", &q, 1, 5000, &a), 0);
	assert_int_equal(a.quotas[0].granted, 5);
	mixd_checker_close(k);
}

/* ---- asynchronous checks ------------------------------------------------ */

struct slot {
	int calls, rc, code, cached;
};

static void note(void *arg, int rc, const struct mixd_check_answer *a)
{
	struct slot *s = arg;
	s->calls++;
	s->rc = rc;
	s->code = a->code;
	s->cached = a->cached;
}

#define ASYNC_N 2000

static void test_async_many_in_flight(void **state)
{
	(void)state;
	install(engine_of(yaml));
	mixd_checker *k;
	struct mixd_checker_options o = {.cache_entries = -1,
					 .max_in_flight = 256};
	assert_int_equal(mixd_checker_open(ps.address, &o, &k), 0);
	assert_int_equal(mixd_checker_timeout(k), -1);
	struct mixd_value admin[] = {STR(MIXD_ATTR_REQUEST_PATH, "/admin")};
	struct mixd_value home[] = {STR(MIXD_ATTR_REQUEST_PATH, "/")};
	static struct slot slots[ASYNC_N];
	memset(slots, 0, sizeof(slots));
	struct pol_server_stats before, after;
	pol_server_stats(srv, &before);
	/* keep 200 in flight: each answer goes to its own check */
	int sent = 0, done = 0;
	while (done < ASYNC_N) {
		while (sent < ASYNC_N && sent - done < 200) {
			struct mixd_value *v = sent % 3 ? home : admin;
			assert_int_equal(mixd_check_async(k, v, 1, NULL, NULL,
							  0, 5000, note,
							  &slots[sent]),
					 0);
			sent++;
		}
		int n = mixd_checker_dispatch(k, 1000);
		assert_true(n > 0);
		done += n;
	}
	assert_int_equal(done, ASYNC_N);
	for (int i = 0; i < ASYNC_N; i++) {
		assert_int_equal(slots[i].calls, 1);
		assert_int_equal(slots[i].rc, 0);
		assert_int_equal(slots[i].code, i % 3 ? 0 : 7);
	}
	struct mixd_checker_stats st;
	mixd_checker_stats(k, &st);
	assert_int_equal(st.checks, ASYNC_N);
	assert_int_equal(st.answered, ASYNC_N);
	assert_int_equal(st.in_flight, 0);
	assert_int_equal(mixd_checker_timeout(k), -1);
	pol_server_stats(srv, &after);
	assert_int_equal(after.checks[7] - before.checks[7], (ASYNC_N + 2) / 3);

	/* past max_in_flight: answered at once, by the fail policy */
	static struct slot more[300];
	memset(more, 0, sizeof(more));
	for (int i = 0; i < 300; i++)
		mixd_check_async(k, home, 1, NULL, NULL, 0, 5000, note,
				 &more[i]);
	for (int i = 256; i < 300; i++) {
		assert_int_equal(more[i].calls, 1);
		assert_int_equal(more[i].rc, -ENOBUFS);
	}
	while (mixd_checker_dispatch(k, 1000) > 0)
		;
	for (int i = 0; i < 256; i++)
		assert_int_equal(more[i].rc, 0);

	/* the descriptor polls readable once an answer has come */
	struct slot one = {0};
	mixd_check_async(k, admin, 1, NULL, NULL, 0, 5000, note, &one);
	struct pollfd pf = {.fd = mixd_checker_fd(k), .events = POLLIN};
	assert_int_equal(poll(&pf, 1, 5000), 1);
	assert_int_equal(one.calls, 0);
	assert_int_equal(mixd_checker_dispatch(k, 0), 1);
	assert_int_equal(one.code, 7);
	mixd_checker_close(k);
}

/* ---- the cache ---------------------------------------------------------- */

static const char short_lived[] =
	YAML_DENIER("{status: {code: 7}, validDuration: 300ms, "
		    "validUseCount: 3}")
	YAML_NOTHING YAML_DENY_WHEN("request.path == \"/admin\"");

static void test_cache(void **state)
{
	(void)state;
	install(engine_of(short_lived));
	mixd_checker *k;
	assert_int_equal(mixd_checker_open(ps.address, NULL, &k), 0);
	struct mixd_check_answer a;
	struct mixd_checker_stats st;
	struct pol_server_stats before, after;
	/* the decision reads request.path alone: another attribute does not
	 * make another key */
	struct mixd_value admin[] = {STR(MIXD_ATTR_REQUEST_PATH, "/admin"),
				     STR(MIXD_ATTR_REQUEST_METHOD, "GET")};
	struct mixd_value admin2[] = {STR(MIXD_ATTR_REQUEST_METHOD, "PUT"),
				      STR(MIXD_ATTR_REQUEST_PATH, "/admin")};
	struct mixd_value home[] = {STR(MIXD_ATTR_REQUEST_PATH, "/home")};
	pol_server_stats(srv, &before);
	/* the first answer names what decisions read; the second is kept */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(mixd_check(k, admin, 2, NULL, NULL, 0, 1000,
					    &a),
				 0);
		assert_int_equal(a.cached, 0);
		assert_int_equal(a.code, 7);
	}
	/* reused, as often as mixd said (3 uses), then asked again */
	for (int i = 2; i >= 1; i--) {
		assert_int_equal(mixd_check(k, admin2, 2, NULL, NULL, 0, 1000,
					    &a),
				 0);
		assert_int_equal(a.cached, 1);
		assert_int_equal(a.from_mixd, 1);
		assert_int_equal(a.code, 7);
		assert_int_equal(a.valid_use_count, i);
		assert_true(a.valid_duration_ns > 0 &&
			    a.valid_duration_ns <= 300000000);
	}
	assert_int_equal(mixd_check(k, admin, 2, NULL, NULL, 0, 1000, &a), 0);
	assert_int_equal(a.valid_use_count, 0);
	assert_int_equal(mixd_check(k, admin, 2, NULL, NULL, 0, 1000, &a), 0);
	assert_int_equal(a.cached, 0); /* used up */
	/* another value of what was read: another answer */
	assert_int_equal(mixd_check(k, home, 1, NULL, NULL, 0, 1000, &a), 0);
	assert_int_equal(a.code, 0);
	assert_int_equal(a.cached, 0);
	assert_int_equal(mixd_check(k, home, 1, NULL, NULL, 0, 1000, &a), 0);
	assert_int_equal(a.code, 0);
	assert_int_equal(a.cached, 1);
	/* absent is a value too */
	assert_int_equal(mixd_check(k, NULL, 0, NULL, NULL, 0, 1000, &a), 0);
	assert_int_equal(a.cached, 0);
	/* quotas are never answered from the cache */
	struct mixd_check_quota q = {"rq", 1, 0};
	assert_int_equal(mixd_check(k, home, 1, NULL, &q, 1, 1000, &a), 0);
	assert_int_equal(a.cached, 0);
	assert_int_equal(a.n_quotas, 1);
	/* an asynchronous check answered from the cache runs its callback
	 * before it returns */
	struct slot s = {0};
	assert_int_equal(mixd_check_async(k, home, 1, NULL, NULL, 0, 1000,
					  note, &s),
			 0);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.cached, 1);
	/* expired after 300 ms */
	assert_int_equal(mixd_check(k, admin, 2, NULL, NULL, 0, 1000, &a), 0);
	assert_int_equal(mixd_check(k, admin, 2, NULL, NULL, 0, 1000, &a), 0);
	assert_int_equal(a.cached, 1);
	usleep(350000);
	assert_int_equal(mixd_check(k, admin, 2, NULL, NULL, 0, 1000, &a), 0);
	assert_int_equal(a.cached, 0);
	assert_int_equal(a.code, 7);

	mixd_checker_stats(k, &st);
	pol_server_stats(srv, &after);
	uint64_t asked = 0;
	for (int i = 0; i <= POL_UNAUTHENTICATED; i++)
		asked += after.checks[i] - before.checks[i];
	assert_int_equal(st.checks, 14);
	assert_int_equal(st.cache_hits, 7);
	assert_int_equal(asked, st.checks - st.cache_hits);
	mixd_checker_close(k);

	/* no check rule: the answer depends on nothing, one key for all */
	install(engine_of("kind: rule\n"
			  "metadata: {name: r, namespace: istio-system}\n"
			  "spec: {}\n"));
	assert_int_equal(mixd_checker_open(ps.address, NULL, &k), 0);
	for (int i = 0; i < 3; i++) {
		struct mixd_value *v = i == 2 ? admin : home;
		assert_int_equal(mixd_check(k, v, i == 2 ? 2 : 1, NULL, NULL,
					    0, 1000, &a),
				 0);
		assert_int_equal(a.cached, i == 2);
		assert_int_equal(a.valid_use_count,
				 i == 2 ? POL_DEFAULT_VALID_USES - 1
					: POL_DEFAULT_VALID_USES);
	}
	mixd_checker_close(k);

	/* with the cache off, every check asks */
	struct mixd_checker_options o = {.cache_entries = -1};
	assert_int_equal(mixd_checker_open(ps.address, &o, &k), 0);
	for (int i = 0; i < 3; i++)
		mixd_check(k, admin, 2, NULL, NULL, 0, 1000, &a);
	mixd_checker_stats(k, &st);
	assert_int_equal(st.cache_hits, 0);
	assert_int_equal(st.answered, 3);
	mixd_checker_close(k);
}

/* ---- a mixd that does not answer, and one that goes away --------------- */

static void test_silent_and_gone(void **state)
{
	(void)state;
	char path[100];
	snprintf(path, sizeof(path), "%s/silent.sock", ps.dir);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 16), 0); /* and never accepts */
	char addr[160];
	snprintf(addr, sizeof(addr), "unix://%s", path);
	mixd_checker *k;
	struct mixd_checker_options o = {.fail_policy = MIXD_FAIL_CLOSE};
	assert_int_equal(mixd_checker_open(addr, &o, &k), 0);
	struct slot s[3] = {{0}};
	mixd_check_async(k, NULL, 0, NULL, NULL, 0, 50, note, &s[0]);
	mixd_check_async(k, NULL, 0, NULL, NULL, 0, 5000, note, &s[1]);
	int t = mixd_checker_timeout(k);
	assert_true(t >= 0 && t <= 50);
	assert_int_equal(mixd_checker_dispatch(k, 1000), 1);
	assert_int_equal(s[0].rc, -ETIMEDOUT);
	assert_int_equal(s[0].code, 14);
	assert_int_equal(s[1].calls, 0);
	/* a blocking check runs out of time the same way */
	struct mixd_check_answer a;
	assert_int_equal(mixd_check(k, NULL, 0, NULL, NULL, 0, 30, &a),
			 -ETIMEDOUT);
	assert_int_equal(a.code, 14);
	/* mixd goes away: what is in flight fails at once */
	close(l);
	unlink(path);
	assert_int_equal(mixd_checker_dispatch(k, 1000), 1);
	assert_int_equal(s[1].calls, 1);
	assert_true(s[1].rc == -ECONNRESET || s[1].rc == -EPIPE);
	assert_int_equal(s[1].code, 14);
	/* and the next check finds nobody there */
	mixd_check_async(k, NULL, 0, NULL, NULL, 0, 50, note, &s[2]);
	assert_int_equal(s[2].calls, 1);
	assert_int_equal(s[2].rc, -ENOENT);
	assert_int_equal(mixd_checker_timeout(k), -1);
	mixd_checker_close(k);
}

/* ---- a client that never stops asking does not starve the others ------- */

struct flood {
	int fd;
	bool stop; /* atomic */
};

static void *drain_answers(void *arg)
{
	struct flood *f = arg;
	char buf[65536];
	while (recv(f->fd, buf, sizeof(buf), 0) > 0)
		;
	return NULL;
}

static void *send_requests(void *arg)
{
	struct flood *f = arg;
	/* 1,000 checks of no attributes: id, no dedup, no quotas, empty
	 * record (16 bytes, framed 24) */
	static uint8_t reqs[1000 * 24];
	for (int i = 0; i < 1000; i++) {
		uint8_t *p = reqs + 24 * i;
		uint32_t len = 16, mark = 0x314B584Du;
		uint64_t id = (uint64_t)i;
		memcpy(p, &len, 4);
		memcpy(p + 4, &mark, 4);
		memcpy(p + 8, &id, 8);
		memset(p + 16, 0, 8);
	}
	struct {
		char marker[8];
		uint32_t version, kind;
	} hello = {"MIXDHELO", 2, 3};
	if (send(f->fd, &hello, sizeof(hello), MSG_NOSIGNAL) < 0)
		return NULL;
	for (int n = 0; n < 100000 && !__atomic_load_n(&f->stop,
							  __ATOMIC_ACQUIRE);
	     n++)
		if (send(f->fd, reqs, sizeof(reqs), MSG_NOSIGNAL) < 0)
			break;
	shutdown(f->fd, SHUT_WR);
	return NULL;
}

static void test_flood_does_not_starve(void **state)
{
	(void)state;
	install(engine_of(yaml));
	struct flood f = {.fd = socket(AF_UNIX, SOCK_STREAM, 0)};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, ps.address + 7, strlen(ps.address + 7) + 1);
	assert_int_equal(connect(f.fd, (struct sockaddr *)&sa, sizeof(sa)),
			 0);
	pthread_t tx, rx;
	pthread_create(&rx, NULL, drain_answers, &f);
	pthread_create(&tx, NULL, send_requests, &f);
	usleep(100000); /* the flood is on */
	mixd_checker *k;
	assert_int_equal(mixd_checker_open(ps.address, &no_cache, &k), 0);
	struct mixd_check_answer a;
	struct mixd_value admin[] = {STR(MIXD_ATTR_REQUEST_PATH, "/admin")};
	/* served between the flood's batches, well within the timeout */
	for (int i = 0; i < 20; i++) {
		assert_int_equal(
			mixd_check(k, admin, 1, NULL, NULL, 0, 2000, &a), 0);
		assert_int_equal(a.code, 7);
	}
	mixd_checker_close(k);
	__atomic_store_n(&f.stop, true, __ATOMIC_RELEASE);
	pthread_join(tx, NULL);
	pthread_join(rx, NULL);
	close(f.fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_values_and_builder),
		cmocka_unit_test(test_new_engine_taken),
		cmocka_unit_test(test_threads_share_the_quota_exactly),
		cmocka_unit_test(test_async_many_in_flight),
		cmocka_unit_test(test_cache),
		cmocka_unit_test(test_silent_and_gone),
		cmocka_unit_test(test_flood_does_not_starve),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
