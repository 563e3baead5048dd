/*
 * test_pol_quota -- memquota as Mixer's adapter answered: the bookinfo
 * productpage rate limit sample, windows returning units at exact 100 ms
 * tick boundaries, best-effort grants, counters and frees, Mixer's
 * StringEquals for overrides, the typed key, deduplication across its
 * two generations, and the bounds (-ENOSPC, a full dedup table, long keys).
 *
 * MIXD_TEST_THREADED: the exactness tests hammer one handler from four
 * threads. Under TSan (MIXD_SANITIZE=thread, set by ctest) only those run.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "policy/pol_quota.h"

#define MS INT64_C(1000000)
#define SEC INT64_C(1000000000)
/* A time on a tick boundary, far from 0 as a monotonic clock's is. */
#define T0 (INT64_C(1000000) * SEC)

static struct attr_value str(const char *s)
{
	return (struct attr_value){
		.type = ATTR_STRING, .len = (uint32_t)strlen(s), .s = s};
}

static struct attr_value ipv(const char *text)
{
	struct attr_value v = {.type = ATTR_IP};
	if (inet_pton(AF_INET, text, v.ip) == 1) {
		v.len = 4;
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, v.ip), 1);
		v.len = 16;
	}
	return v;
}

/* Ask for @amount under the dedup id @id. */
static int ask(struct pol_memquota *m, const char *name,
	       const struct pol_quota_dim *dims, size_t n, int64_t amount,
	       bool best_effort, const char *id, int64_t now,
	       struct pol_quota_grant *g)
{
	struct pol_quota_args a = {id, strlen(id), amount, best_effort};
	return pol_memquota_alloc(m, name, dims, n, &a, now, g);
}

static unsigned seq;

/* The amount granted to a fresh request (a new dedup id each time). */
static int64_t take(struct pol_memquota *m, const char *name,
		    const struct pol_quota_dim *dims, size_t n, int64_t amount,
		    bool best_effort, int64_t now, int64_t *valid)
{
	char id[32];
	struct pol_quota_grant g = {-1, -1};
	snprintf(id, sizeof id, "req-%u", seq++);
	assert_int_equal(
		ask(m, name, dims, n, amount, best_effort, id, now, &g), 0);
	if (valid)
		*valid = g.valid_duration_ns;
	return g.amount;
}

/* One quota @name of @max per @vd, no overrides. */
static struct pol_memquota *one(const char *name, int64_t max, int64_t vd,
				size_t max_keys, size_t max_dedup)
{
	struct pol_quota_def d = {name, {max, vd}, NULL, 0};
	struct pol_memquota *m =
		pol_memquota_create(&d, 1, SEC, max_keys, max_dedup);
	assert_non_null(m);
	return m;
}

/* --------------------------------------------------- the bookinfo sample */

static const char QN[] = "requestcountquota.instance.istio-system";

/* samples/bookinfo/policy/mixer-rule-productpage-ratelimit.yaml */
static struct pol_memquota *productpage_sample(void)
{
	static const struct pol_quota_kv reviews[] = {
		{"destination", "reviews"}};
	static const struct pol_quota_kv pp_src[] = {
		{"destination", "productpage"}, {"source", "10.28.11.20"}};
	static const struct pol_quota_kv pp[] = {
		{"destination", "productpage"}};
	static const struct pol_quota_override ovr[] = {
		{reviews, 1, {1, 5 * SEC}},
		{pp_src, 2, {500, 1 * SEC}},
		{pp, 1, {2, 5 * SEC}},
	};
	struct pol_quota_def d = {QN, {500, 1 * SEC}, ovr, 3};
	struct pol_memquota *m = pol_memquota_create(&d, 1, SEC, 1000, 100000);
	assert_non_null(m);
	return m;
}

static void test_productpage_ratelimit_sample(void **state)
{
	struct pol_memquota *m = productpage_sample();
	struct attr_value src = str("10.28.11.30"), dst = str("reviews"),
			  ver = str("v1");
	struct pol_quota_dim dims[] = {{"source", &src},
				       {"destination", &dst},
				       {"destinationVersion", &ver}};
	int64_t valid;

	/* reviews, whatever the source: 1 per 5 s */
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0, &valid), 1);
	assert_int_equal(valid, 5 * SEC);
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0, &valid), 0);
	assert_int_equal(valid, 0);
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0 + 5 * SEC - 1, NULL),
			 0);
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0 + 5 * SEC, &valid),
			 1);
	assert_int_equal(valid, 5 * SEC);

	/* productpage from another source: the third override, 2 per 5 s */
	dst = str("productpage");
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0, NULL), 1);
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0 + SEC, NULL), 1);
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0 + 2 * SEC, NULL), 0);
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0 + 5 * SEC, NULL), 1);
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0 + 5 * SEC, NULL), 0);
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0 + 6 * SEC, NULL), 1);

	/* productpage from 10.28.11.20: the second override, 500 per 1 s */
	src = str("10.28.11.20");
	int64_t got = 0;
	for (int i = 0; i < 600; i++)
		got += take(m, QN, dims, 3, 1, false, T0 + 10 * MS, &valid);
	assert_int_equal(got, 500);
	assert_int_equal(valid, 0);
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0 + 1010 * MS, &valid),
			 1);
	assert_int_equal(valid, SEC);
	/* the same source as an IP_ADDRESS value matches the override by
	 * address (a key of its own: another type); its two forms are one
	 * key */
	src = ipv("10.28.11.20");
	assert_int_equal(take(m, QN, dims, 3, 499, false, T0 + 1010 * MS, NULL),
			 499);
	src = ipv("::ffff:10.28.11.20");
	assert_int_equal(take(m, QN, dims, 3, 2, false, T0 + 1010 * MS, NULL),
			 0);
	assert_int_equal(take(m, QN, dims, 3, 1, false, T0 + 1010 * MS, NULL),
			 1);
	assert_int_equal(take(m, QN, dims, 3, 500, false, T0 + 2 * SEC, NULL),
			 500);

	/* anything else: the quota's own 500 per 1 s */
	src = str("10.28.11.20");
	dst = str("ratings");
	got = 0;
	for (int i = 0; i < 501; i++)
		got += take(m, QN, dims, 3, 1, false, T0, &valid);
	assert_int_equal(got, 500);
	/* a destination that only starts like an override's is not it */
	dst = str("reviewsX");
	assert_int_equal(take(m, QN, dims, 3, 2, false, T0, NULL), 2);

	/* keys: reviews, productpage x2 (string and IP source are distinct
	 * types), ratings, reviewsX -- and no key for refused requests */
	assert_int_equal(pol_memquota_keys(m), 6);
	pol_memquota_destroy(m);
}

/* --------------------------------------------------------------- windows */

static void test_window_returns_units_at_exact_tick(void **state)
{
	struct pol_memquota *m = one("q", 10, SEC, 100, 1000);
	int64_t valid;

	/* taken at T0 (a tick's start): back at T0 + 1 s, not a ns before */
	assert_int_equal(take(m, "q", NULL, 0, 10, false, T0, &valid), 10);
	assert_int_equal(valid, SEC);
	assert_int_equal(take(m, "q", NULL, 0, 1, false, T0 + 950 * MS, NULL),
			 0);
	assert_int_equal(take(m, "q", NULL, 0, 1, false, T0 + SEC - 1, NULL),
			 0);
	assert_int_equal(take(m, "q", NULL, 0, 10, false, T0 + SEC, NULL), 10);

	/* taken in mid-tick: back at the start of the tick a window later,
	 * 950 ms on */
	int64_t t = T0 + 10 * SEC + 50 * MS;
	assert_int_equal(take(m, "q", NULL, 0, 10, false, t, NULL), 10);
	assert_int_equal(
		take(m, "q", NULL, 0, 1, false, t + 950 * MS - 1, NULL), 0);
	assert_int_equal(take(m, "q", NULL, 0, 10, false, t + 950 * MS, NULL),
			 10);

	/* spread over the window: each part comes back on its own tick */
	t = T0 + 20 * SEC;
	assert_int_equal(take(m, "q", NULL, 0, 3, false, t, NULL), 3);
	assert_int_equal(take(m, "q", NULL, 0, 3, false, t + 300 * MS, NULL),
			 3);
	assert_int_equal(take(m, "q", NULL, 0, 4, false, t + 900 * MS, NULL),
			 4);
	assert_int_equal(take(m, "q", NULL, 0, 1, false, t + 999 * MS, NULL),
			 0);
	assert_int_equal(take(m, "q", NULL, 0, 4, false, t + SEC, NULL), 0);
	assert_int_equal(take(m, "q", NULL, 0, 3, false, t + SEC, NULL), 3);
	assert_int_equal(take(m, "q", NULL, 0, 4, true, t + 1300 * MS, NULL),
			 3);
	/* a long idle gap returns everything at once */
	assert_int_equal(take(m, "q", NULL, 0, 11, true, t + 3600 * SEC, NULL),
			 10);
	pol_memquota_destroy(m);
}

static void test_window_is_whole_seconds_rounded_up(void **state)
{
	int64_t valid;

	/* 1 ms: a 1 s window; the grant's validity is the raw 1 ms */
	struct pol_memquota *m = one("q", 1, MS, 100, 1000);
	assert_int_equal(take(m, "q", NULL, 0, 1, false, T0, &valid), 1);
	assert_int_equal(valid, MS);
	assert_int_equal(take(m, "q", NULL, 0, 1, false, T0 + 999 * MS, NULL),
			 0);
	assert_int_equal(take(m, "q", NULL, 0, 1, false, T0 + SEC, NULL), 1);
	pol_memquota_destroy(m);

	/* 1.5 s: a 2 s window */
	m = one("q", 1, 1500 * MS, 100, 1000);
	assert_int_equal(take(m, "q", NULL, 0, 1, false, T0, &valid), 1);
	assert_int_equal(valid, 1500 * MS);
	assert_int_equal(take(m, "q", NULL, 0, 1, false, T0 + 1500 * MS, NULL),
			 0);
	assert_int_equal(
		take(m, "q", NULL, 0, 1, false, T0 + 2 * SEC - 1, NULL), 0);
	assert_int_equal(take(m, "q", NULL, 0, 1, false, T0 + 2 * SEC, NULL),
			 1);
	pol_memquota_destroy(m);
}

static void test_best_effort_grants_what_is_left(void **state)
{
	struct pol_memquota *m = one("q", 10, SEC, 100, 1000);
	int64_t valid;

	assert_int_equal(take(m, "q", NULL, 0, 4, true, T0, &valid), 4);
	assert_int_equal(valid, SEC);
	assert_int_equal(take(m, "q", NULL, 0, 10, true, T0, &valid), 6);
	assert_int_equal(valid, SEC);
	/* nothing left: 0, still with the window's validity (Mixer) */
	assert_int_equal(take(m, "q", NULL, 0, 3, true, T0, &valid), 0);
	assert_int_equal(valid, SEC);
	/* all or nothing: 0 and no validity */
	assert_int_equal(take(m, "q", NULL, 0, 1, false, T0, &valid), 0);
	assert_int_equal(valid, 0);
	pol_memquota_destroy(m);

	/* all or nothing never grants part of a request, even first */
	m = one("q", 10, SEC, 100, 1000);
	assert_int_equal(take(m, "q", NULL, 0, 11, false, T0, &valid), 0);
	assert_int_equal(valid, 0);
	assert_int_equal(pol_memquota_keys(m), 0);
	assert_int_equal(take(m, "q", NULL, 0, 11, true, T0, &valid), 10);
	assert_int_equal(valid, SEC);
	pol_memquota_destroy(m);
}

static void test_amount_zero_and_unknown_quota(void **state)
{
	struct pol_memquota *m = one("q", 10, SEC, 100, 1000);
	struct pol_quota_grant g = {-1, -1};

	assert_int_equal(ask(m, "q", NULL, 0, 0, false, "z", T0, &g), 0);
	assert_int_equal(g.amount, 0);
	assert_int_equal(g.valid_duration_ns, 0);
	assert_int_equal(pol_memquota_keys(m), 0);
	/* an amount of 0 is not remembered: the id still allocates */
	assert_int_equal(ask(m, "q", NULL, 0, 5, false, "z", T0, &g), 0);
	assert_int_equal(g.amount, 5);

	g = (struct pol_quota_grant){-1, -1};
	assert_int_equal(ask(m, "q.other", NULL, 0, 1, false, "y", T0, &g),
			 -ENOENT);
	assert_int_equal(g.amount, 0);
	assert_int_equal(g.valid_duration_ns, 0);
	pol_memquota_destroy(m);
}

static void test_time_going_back_is_taken_as_the_latest(void **state)
{
	struct pol_memquota *m = one("q", 10, SEC, 100, 1000);

	assert_int_equal(take(m, "q", NULL, 0, 5, false, T0 + 5 * SEC, NULL),
			 5);
	/* an earlier clock reading neither returns units nor breaks the
	 * window */
	assert_int_equal(take(m, "q", NULL, 0, 6, false, T0, NULL), 0);
	assert_int_equal(take(m, "q", NULL, 0, 5, false, T0 - 60 * SEC, NULL),
			 5);
	assert_int_equal(take(m, "q", NULL, 0, 1, false, T0 + 5900 * MS, NULL),
			 0);
	assert_int_equal(take(m, "q", NULL, 0, 10, false, T0 + 6 * SEC, NULL),
			 10);
	pol_memquota_destroy(m);
}

/* ------------------------------------------------------ counters, frees */

static void test_counter_for_valid_duration_zero(void **state)
{
	struct pol_memquota *m = one("q", 5, 0, 100, 1000);
	int64_t valid;

	assert_int_equal(take(m, "q", NULL, 0, 3, false, T0, &valid), 3);
	assert_int_equal(valid, 0);
	assert_int_equal(take(m, "q", NULL, 0, 3, false, T0, &valid), 0);
	assert_int_equal(valid, 0);
	assert_int_equal(take(m, "q", NULL, 0, 3, true, T0, &valid), 2);
	assert_int_equal(valid, 0);
	/* time returns nothing to a counter */
	assert_int_equal(take(m, "q", NULL, 0, 1, true, T0 + 3600 * SEC, NULL),
			 0);
	/* a negative amount frees */
	assert_int_equal(take(m, "q", NULL, 0, -4, false, T0, &valid), 4);
	assert_int_equal(valid, 0);
	assert_int_equal(take(m, "q", NULL, 0, 5, false, T0, NULL), 0);
	assert_int_equal(take(m, "q", NULL, 0, 4, false, T0, NULL), 4);
	assert_int_equal(pol_memquota_keys(m), 1);
	/* freeing more than is held frees what is held, and the key goes */
	assert_int_equal(take(m, "q", NULL, 0, -100, false, T0, NULL), 5);
	assert_int_equal(pol_memquota_keys(m), 0);
	assert_int_equal(take(m, "q", NULL, 0, -1, false, T0, NULL), 0);
	assert_int_equal(take(m, "q", NULL, 0, INT64_MIN, false, T0, NULL), 0);
	assert_int_equal(take(m, "q", NULL, 0, 5, false, T0, NULL), 5);
	pol_memquota_destroy(m);
}

static void test_free_from_a_window_newest_ticks_first(void **state)
{
	struct pol_memquota *m = one("q", 10, SEC, 100, 1000);
	int64_t valid;

	assert_int_equal(take(m, "q", NULL, 0, 3, false, T0, NULL), 3);
	assert_int_equal(take(m, "q", NULL, 0, 3, false, T0 + 500 * MS, NULL),
			 3);
	/* 4 back two ticks later: the 3 of the newest tick holding any,
	 * then 1 of the oldest */
	assert_int_equal(
		take(m, "q", NULL, 0, -4, false, T0 + 700 * MS, &valid), 4);
	assert_int_equal(valid, 0);
	assert_int_equal(take(m, "q", NULL, 0, 9, true, T0 + 900 * MS, NULL),
			 8);
	assert_int_equal(take(m, "q", NULL, 0, -8, false, T0 + 900 * MS, NULL),
			 8);
	/* the 2 left of T0 come back at T0 + 1 s: all 10 then (oldest-first
	 * freeing would have left 2 in the T0 + 500 ms tick) */
	assert_int_equal(take(m, "q", NULL, 0, 10, false, T0 + SEC, NULL), 10);

	/* a window with everything back is dropped */
	assert_int_equal(pol_memquota_keys(m), 1);
	assert_int_equal(take(m, "q", NULL, 0, -20, false, T0 + SEC, NULL), 10);
	assert_int_equal(pol_memquota_keys(m), 0);
	/* freeing where nothing is held frees nothing */
	assert_int_equal(take(m, "q", NULL, 0, -5, false, T0 + SEC, NULL), 0);
	pol_memquota_destroy(m);
}

/* ----------------------------------------------- overrides: StringEquals */

/* Which override of many @m applies to one dimension "d" = @v: each
 * override's max is its number (a counter, so best effort tells). */
static int64_t which(struct pol_memquota *m, const struct attr_value *v)
{
	struct pol_quota_dim dim = {"d", v};
	int64_t n = take(m, "q", &dim, v ? 1 : 0, 1000, true, T0, NULL);
	take(m, "q", &dim, v ? 1 : 0, -1000, false, T0, NULL);
	return n;
}

static void test_override_matching_as_mixers_string_equals(void **state)
{
	static const struct pol_quota_kv kv[][1] = {
		{{"d", "404"}},			 /* 1 */
		{{"d", "True"}},		 /* 2 */
		{{"d", "1.5"}},			 /* 3 */
		{{"d", "1.5s"}},		 /* 4 */
		{{"d", "10.0.0.1"}},		 /* 5 */
		{{"d", "a=b&c=d&junk"}},	 /* 6 */
		{{"d", "2019-06-01T10:30:00Z"}}, /* 7 */
		{{"d", "[104 105]"}},		 /* 8 */
		{{"d", "fe80::1"}},		 /* 9 */
		{{"d", ""}},			 /* 10 */
	};
	struct pol_quota_override ovr[10];
	for (int i = 0; i < 10; i++)
		ovr[i] = (struct pol_quota_override){kv[i], 1, {i + 1, 0}};
	struct pol_quota_def d = {"q", {1000, 0}, ovr, 10};
	struct pol_memquota *m = pol_memquota_create(&d, 1, SEC, 100, 10000);
	assert_non_null(m);
	struct attr_value v;

	/* INT64: Go's ParseInt of the text; text that does not parse
	 * equals only an absent value -- and "" (override 10) any int */
	v = (struct attr_value){.type = ATTR_INT64, .i = 404};
	assert_int_equal(which(m, &v), 1);
	v.i = 405;
	assert_int_equal(which(m, &v), 10);
	/* BOOL: ParseBool's spellings */
	v = (struct attr_value){.type = ATTR_BOOL, .b = true};
	assert_int_equal(which(m, &v), 2);
	v.b = false;
	assert_int_equal(which(m, &v), 10);
	/* DOUBLE by value; DURATION as Go reads "1.5s" */
	v = (struct attr_value){.type = ATTR_DOUBLE, .d = 1.5};
	assert_int_equal(which(m, &v), 3);
	v.d = NAN;
	assert_int_equal(which(m, &v), 10);
	v = (struct attr_value){.type = ATTR_DURATION, .i = 1500 * MS};
	assert_int_equal(which(m, &v), 4);
	/* IP_ADDRESS by address, either form */
	v = ipv("10.0.0.1");
	assert_int_equal(which(m, &v), 5);
	v = ipv("::ffff:10.0.0.1");
	assert_int_equal(which(m, &v), 5);
	v = ipv("FE80:0::1");
	assert_int_equal(which(m, &v), 9);
	v = ipv("10.0.0.2");
	assert_int_equal(which(m, &v), 10);
	/* STRING_MAP against "a=b&c=d" (a part that is no pair ignored),
	 * in any order */
	static const uint8_t map_dc_ba[] = {2,	 0, 0,	 0, 1, 0,   0, 0,
					    'c', 1, 0,	 0, 0, 'd', 1, 0,
					    0,	 0, 'a', 1, 0, 0,   0, 'b'};
	v = (struct attr_value){.type = ATTR_STRING_MAP,
				.len = sizeof map_dc_ba,
				.map = map_dc_ba};
	assert_int_equal(which(m, &v), 6);
	/* TIMESTAMP as RFC 3339 */
	v = (struct attr_value){.type = ATTR_TIMESTAMP,
				.i = INT64_C(1559385000) * SEC};
	assert_int_equal(which(m, &v), 7);
	/* BYTES as Go printed a []byte */
	v = (struct attr_value){.type = ATTR_BYTES, .len = 2, .s = "hi"};
	assert_int_equal(which(m, &v), 8);
	/* strings as they are: "404" the string is override 1 too, "true"
	 * is not "True" */
	v = str("404");
	assert_int_equal(which(m, &v), 1);
	v = str("true");
	assert_int_equal(which(m, &v), 1000);
	/* "" matches the empty string (however it points) and an absent
	 * dimension */
	v = str("");
	assert_int_equal(which(m, &v), 10);
	v.s = NULL;
	assert_int_equal(which(m, &v), 10);
	assert_int_equal(which(m, NULL), 10);
	pol_memquota_destroy(m);
}

static void test_override_spellings_go_accepts(void **state)
{
	static const struct pol_quota_kv ints[] = {{"d", "+404"}};
	static const struct pol_quota_kv bools[] = {{"d", "t"}};
	static const struct pol_quota_kv dbl[] = {{"d", "15e-1"}};
	static const struct pol_quota_kv bad_int[] = {{"d", "0x194"}};
	static const struct pol_quota_kv big[] = {{"d", "1e400"}};
	static const struct pol_quota_kv sp[] = {{"d", " 1.5"}};
	const struct pol_quota_override ovr[] = {
		{bad_int, 1, {1, 0}}, {big, 1, {2, 0}},	  {sp, 1, {3, 0}},
		{ints, 1, {4, 0}},    {bools, 1, {5, 0}}, {dbl, 1, {6, 0}},
	};
	struct pol_quota_def d = {"q", {1000, 0}, ovr, 6};
	struct pol_memquota *m = pol_memquota_create(&d, 1, SEC, 100, 10000);
	assert_non_null(m);
	struct attr_value v = {.type = ATTR_INT64, .i = 404};
	assert_int_equal(which(m, &v), 4);
	v = (struct attr_value){.type = ATTR_BOOL, .b = true};
	assert_int_equal(which(m, &v), 5);
	v = (struct attr_value){.type = ATTR_DOUBLE, .d = 1.5};
	assert_int_equal(which(m, &v), 6);
	v = (struct attr_value){.type = ATTR_DOUBLE, .d = INFINITY};
	assert_int_equal(which(m, &v), 1000);
	pol_memquota_destroy(m);
}

static void test_override_is_a_subset_match_first_wins(void **state)
{
	static const struct pol_quota_kv ab[] = {{"a", "1"}, {"b", "2"}};
	static const struct pol_quota_kv a[] = {{"a", "1"}};
	static const struct pol_quota_kv c[] = {{"c", "3"}};
	const struct pol_quota_override ovr[] = {{ab, 2, {1, 0}},
						 {a, 1, {2, 0}},
						 {c, 1, {3, 0}},
						 {NULL, 0, {4, 0}}};
	struct pol_quota_def d = {"q", {1000, 0}, ovr, 4};
	struct pol_memquota *m = pol_memquota_create(&d, 1, SEC, 100, 10000);
	assert_non_null(m);
	struct attr_value one_ = str("1"), two = str("2"), three = str("3"),
			  x = str("x");
	struct pol_quota_dim dims[3] = {{"a", &one_}, {"b", &two}, {"z", &x}};

	assert_int_equal(take(m, "q", dims, 3, 100, true, T0, NULL), 1);
	dims[1].value = &three;
	assert_int_equal(take(m, "q", dims, 3, 100, true, T0, NULL), 2);
	dims[0].value = &x;
	/* no "c" dimension: absent is "", not "3"; then the empty override
	 * matches everything */
	assert_int_equal(take(m, "q", dims, 3, 100, true, T0, NULL), 4);
	dims[2] = (struct pol_quota_dim){"c", &three};
	assert_int_equal(take(m, "q", dims, 3, 100, true, T0, NULL), 3);
	pol_memquota_destroy(m);
}

/* ------------------------------------------------------------------ keys */

static void test_key_is_typed_sorted_and_unambiguous(void **state)
{
	struct pol_memquota *m = one("q", 1, SEC, 100, 1000);
	struct attr_value v1 = str("b;c=d"), v2 = str("b"), v3 = str("d");

	/* a=b;c=d as one value, or as two dimensions: two keys */
	struct pol_quota_dim one_dim[] = {{"a", &v1}};
	struct pol_quota_dim two_dims[] = {{"a", &v2}, {"c", &v3}};
	assert_int_equal(take(m, "q", one_dim, 1, 1, false, T0, NULL), 1);
	assert_int_equal(take(m, "q", two_dims, 2, 1, false, T0, NULL), 1);
	/* the same dimensions in another order: the same key */
	struct pol_quota_dim swapped[] = {{"c", &v3}, {"a", &v2}};
	assert_int_equal(take(m, "q", swapped, 2, 1, false, T0, NULL), 0);
	/* three in every order but one (each a shift of the sort): one key */
	struct attr_value w1 = str("1"), w2 = str("2"), w3 = str("3");
	struct pol_quota_dim three[6][3] = {
		{{"k", &w1}, {"l", &w2}, {"m", &w3}},
		{{"m", &w3}, {"l", &w2}, {"k", &w1}},
		{{"l", &w2}, {"m", &w3}, {"k", &w1}},
		{{"m", &w3}, {"k", &w1}, {"l", &w2}},
		{{"k", &w1}, {"m", &w3}, {"l", &w2}},
		{{"l", &w2}, {"k", &w1}, {"m", &w3}},
	};
	assert_int_equal(take(m, "q", three[0], 3, 1, false, T0, NULL), 1);
	for (int i = 1; i < 6; i++)
		assert_int_equal(take(m, "q", three[i], 3, 1, false, T0, NULL),
				 0);
	/* more dimensions than a key may have */
	struct pol_quota_dim many[POL_QUOTA_DIMS_MAX + 1];
	char names[POL_QUOTA_DIMS_MAX + 1][8];
	for (int i = 0; i <= POL_QUOTA_DIMS_MAX; i++) {
		snprintf(names[i], sizeof names[i], "d%d", i);
		many[i] = (struct pol_quota_dim){names[i], &w1};
	}
	struct pol_quota_grant g;
	assert_int_equal(ask(m, "q", many, POL_QUOTA_DIMS_MAX + 1, 1, false,
			     "many", T0, &g),
			 -EINVAL);
	assert_int_equal(
		ask(m, "q", many, POL_QUOTA_DIMS_MAX, 1, false, "most", T0, &g),
		0);
	assert_int_equal(g.amount, 1);
	/* one value that holds what would follow it: the next name and a
	 * type byte */
	char tricky[] = {'x', 'b', (char)ATTR_STRING, 'y', 0};
	struct attr_value vx = str("x"), vy = str("y"), vt = str(tricky);
	struct pol_quota_dim pair[] = {{"a", &vx}, {"b", &vy}};
	struct pol_quota_dim joined[] = {{"a", &vt}};
	assert_int_equal(take(m, "q", pair, 2, 1, false, T0, NULL), 1);
	assert_int_equal(take(m, "q", joined, 1, 1, false, T0, NULL), 1);
	/* a name and a value trading bytes: "ab"="c" vs "a"="bc" */
	struct attr_value c = str("c"), bc = str("bc");
	struct pol_quota_dim x[] = {{"ab", &c}};
	struct pol_quota_dim y[] = {{"a", &bc}};
	assert_int_equal(take(m, "q", x, 1, 1, false, T0, NULL), 1);
	assert_int_equal(take(m, "q", y, 1, 1, false, T0, NULL), 1);
	/* the string "10" and the integer 16 (Mixer's key wrote ints in
	 * hex: one key there) */
	struct attr_value s10 = str("10"), i16 = {.type = ATTR_INT64, .i = 16};
	struct pol_quota_dim ds[] = {{"n", &s10}};
	struct pol_quota_dim di[] = {{"n", &i16}};
	assert_int_equal(take(m, "q", ds, 1, 1, false, T0, NULL), 1);
	assert_int_equal(take(m, "q", di, 1, 1, false, T0, NULL), 1);
	/* the string types are one; an absent value is not "" */
	struct attr_value dns = {.type = ATTR_DNS_NAME, .len = 2, .s = "10"};
	struct pol_quota_dim dd[] = {{"n", &dns}};
	assert_int_equal(take(m, "q", dd, 1, 1, false, T0, NULL), 0);
	struct attr_value empty = str("");
	struct pol_quota_dim de[] = {{"n", &empty}};
	struct pol_quota_dim dn[] = {{"n", NULL}};
	assert_int_equal(take(m, "q", de, 1, 1, false, T0, NULL), 1);
	assert_int_equal(take(m, "q", dn, 1, 1, false, T0, NULL), 1);
	/* a map's entries in any order are one map */
	static const uint8_t ab_cd[] = {2,   0, 0,   0, 1, 0,	0, 0,
					'a', 1, 0,   0, 0, 'b', 1, 0,
					0,   0, 'c', 1, 0, 0,	0, 'd'};
	static const uint8_t cd_ab[] = {2,   0, 0,   0, 1, 0,	0, 0,
					'c', 1, 0,   0, 0, 'd', 1, 0,
					0,   0, 'a', 1, 0, 0,	0, 'b'};
	struct attr_value m1 = {.type = ATTR_STRING_MAP,
				.len = sizeof ab_cd,
				.map = ab_cd},
			  m2 = {.type = ATTR_STRING_MAP,
				.len = sizeof cd_ab,
				.map = cd_ab};
	struct pol_quota_dim dm1[] = {{"m", &m1}}, dm2[] = {{"m", &m2}};
	assert_int_equal(take(m, "q", dm1, 1, 1, false, T0, NULL), 1);
	assert_int_equal(take(m, "q", dm2, 1, 1, false, T0, NULL), 0);
	pol_memquota_destroy(m);

	/* a quota's name is part of the key */

	struct pol_quota_def defs[] = {{"q1", {1, SEC}, NULL, 0},
				       {"q2", {1, SEC}, NULL, 0}};
	m = pol_memquota_create(defs, 2, SEC, 100, 1000);
	assert_int_equal(take(m, "q1", NULL, 0, 1, false, T0, NULL), 1);
	assert_int_equal(take(m, "q2", NULL, 0, 1, false, T0, NULL), 1);
	assert_int_equal(take(m, "q1", NULL, 0, 1, false, T0, NULL), 0);
	assert_int_equal(pol_memquota_keys(m), 2);
	pol_memquota_destroy(m);
}

static void test_key_too_long_refused(void **state)
{
	struct pol_memquota *m = one("q", 10, SEC, 100, 1000);
	char *big = malloc(POL_QUOTA_MAX_KEY);
	memset(big, 'x', POL_QUOTA_MAX_KEY);
	struct attr_value v = {
		.type = ATTR_STRING, .len = POL_QUOTA_MAX_KEY, .s = big};
	struct pol_quota_dim d[] = {{"d", &v}};
	struct pol_quota_grant g = {-1, -1};

	assert_int_equal(ask(m, "q", d, 1, 1, false, "a", T0, &g), -E2BIG);
	assert_int_equal(g.amount, 0);
	assert_int_equal(pol_memquota_keys(m), 0);
	/* a long key within the bound takes the heap path */
	v.len = POL_QUOTA_MAX_KEY - 100;
	assert_int_equal(take(m, "q", d, 1, 10, false, T0, NULL), 10);
	assert_int_equal(take(m, "q", d, 1, 1, false, T0, NULL), 0);
	v.len--;
	assert_int_equal(take(m, "q", d, 1, 1, false, T0, NULL), 1);
	pol_memquota_destroy(m);
	free(big);
}

/* ----------------------------------------------------------------- dedup */

static void test_dedup_repeat_gets_the_same_answer(void **state)
{
	struct pol_quota_def d = {"q", {1, 5 * SEC}, NULL, 0};
	struct pol_memquota *m = pol_memquota_create(&d, 1, 10 * SEC, 100, 100);
	struct pol_quota_grant g;

	assert_int_equal(ask(m, "q", NULL, 0, 1, false, "abc", T0, &g), 0);
	assert_int_equal(g.amount, 1);
	assert_int_equal(g.valid_duration_ns, 5 * SEC);
	/* a retry 2 s on: the same 1, valid for what is left */
	assert_int_equal(
		ask(m, "q", NULL, 0, 1, false, "abc", T0 + 2 * SEC, &g), 0);
	assert_int_equal(g.amount, 1);
	assert_int_equal(g.valid_duration_ns, 3 * SEC);
	/* past its validity: still 1, valid for 0 */
	assert_int_equal(
		ask(m, "q", NULL, 0, 1, false, "abc", T0 + 6 * SEC, &g), 0);
	assert_int_equal(g.amount, 1);
	assert_int_equal(g.valid_duration_ns, 0);
	/* the retry took nothing: the window is still spent until T0 + 5 s,
	 * and a denial is remembered as one */
	assert_int_equal(ask(m, "q", NULL, 0, 1, false, "def", T0 + SEC, &g),
			 0);
	assert_int_equal(g.amount, 0);
	assert_int_equal(
		ask(m, "q", NULL, 0, 1, false, "def", T0 + 5 * SEC, &g), 0);
	assert_int_equal(g.amount, 0);
	assert_int_equal(g.valid_duration_ns, 0);
	/* the remembered answer is the id's whatever the request now says */
	assert_int_equal(ask(m, "q", NULL, 0, 7, true, "abc", T0 + 6 * SEC, &g),
			 0);
	assert_int_equal(g.amount, 1);
	/* ... and frees share the ids: a free under "abc" answers 1 */
	assert_int_equal(
		ask(m, "q", NULL, 0, -1, false, "abc", T0 + 6 * SEC, &g), 0);
	assert_int_equal(g.amount, 1);
	assert_int_equal(
		ask(m, "q", NULL, 0, 1, false, "ghi", T0 + 6 * SEC, &g), 0);
	assert_int_equal(g.amount, 1);
	pol_memquota_destroy(m);

	/* a counter's remembered grant has no validity */

	struct pol_quota_def defs[] = {{"c", {5, 0}, NULL, 0},
				       {"w", {5, SEC}, NULL, 0}};
	m = pol_memquota_create(defs, 2, 10 * SEC, 100, 100);
	assert_int_equal(ask(m, "c", NULL, 0, 3, false, "x", T0, &g), 0);
	assert_int_equal(ask(m, "c", NULL, 0, 3, false, "x", T0 + SEC, &g), 0);
	assert_int_equal(g.amount, 3);
	assert_int_equal(g.valid_duration_ns, 0);
	assert_int_equal(take(m, "c", NULL, 0, 3, true, T0, NULL), 2);
	/* the same id on another quota is another request */
	assert_int_equal(ask(m, "w", NULL, 0, 4, false, "x", T0, &g), 0);
	assert_int_equal(g.amount, 4);
	assert_int_equal(g.valid_duration_ns, SEC);
	/* no id, no deduplication (Mixer let every such request share one
	 * entry): each asks anew, and the second finds the window full */
	assert_int_equal(ask(m, "w", NULL, 0, 1, false, "", T0, &g), 0);
	assert_int_equal(g.amount, 1);
	assert_int_equal(ask(m, "w", NULL, 0, 1, false, "", T0, &g), 0);
	assert_int_equal(g.amount, 0);
	assert_int_equal(take(m, "w", NULL, 0, 5, true, T0, NULL), 0);
	assert_int_equal(pol_memquota_dedup_lost(m), 0);
	pol_memquota_destroy(m);
}

static void test_dedup_forgets_after_one_to_two_periods(void **state)
{
	/* a counter with room for everything: a forgotten id allocates
	 * again, which the in-use count shows */
	struct pol_quota_def d = {"q", {1000, 0}, NULL, 0};
	struct pol_memquota *m = pol_memquota_create(&d, 1, SEC, 100, 100);
	struct pol_quota_grant g;

	/* the first call starts the turns: due at T0 + 1 s, + 2 s, ... */
	assert_int_equal(ask(m, "q", NULL, 0, 1, false, "start", T0, &g), 0);
	assert_int_equal(
		ask(m, "q", NULL, 0, 10, false, "a", T0 + 500 * MS, &g), 0);
	assert_int_equal(
		ask(m, "q", NULL, 0, 20, false, "b", T0 + 999 * MS, &g), 0);
	/* 1st turn at T0 + 1 s: a and b are old, still remembered */
	assert_int_equal(ask(m, "q", NULL, 0, 10, false, "a", T0 + SEC, &g), 0);
	assert_int_equal(
		ask(m, "q", NULL, 0, 20, false, "b", T0 + 2 * SEC - 1, &g), 0);
	assert_int_equal(
		ask(m, "q", NULL, 0, 40, false, "c", T0 + 2 * SEC - 1, &g), 0);
	assert_int_equal(take(m, "q", NULL, 0, -1000, false, T0, NULL), 71);
	/* 2nd turn at T0 + 2 s: a (1.5 periods old) and b (1.001) are
	 * forgotten; c (1 ns old, recent before the turn) is remembered */
	assert_int_equal(ask(m, "q", NULL, 0, 10, false, "a", T0 + 2 * SEC, &g),
			 0);
	assert_int_equal(ask(m, "q", NULL, 0, 20, false, "b", T0 + 2 * SEC, &g),
			 0);
	assert_int_equal(ask(m, "q", NULL, 0, 40, false, "c", T0 + 2 * SEC, &g),
			 0);
	assert_int_equal(take(m, "q", NULL, 0, -1000, false, T0, NULL), 30);
	/* turns that fell due while nothing called: two or more forget
	 * everything, recent ids too */
	assert_int_equal(ask(m, "q", NULL, 0, 40, false, "c", T0 + 4 * SEC, &g),
			 0);
	assert_int_equal(take(m, "q", NULL, 0, -1000, false, T0, NULL), 40);
	pol_memquota_destroy(m);
}

/* Many ids, long ones, over turns: enough to grow the slot table many
 * times and fill many arena chunks, then forget them all and fill the
 * kept chunks again. */
static void test_dedup_many_ids_over_turns(void **state)
{
	enum { N = 20000 };
	struct pol_quota_def d = {"q", {INT64_C(1) << 40, 0}, NULL, 0};
	struct pol_memquota *m = pol_memquota_create(&d, 1, SEC, 100, 2 * N);
	struct pol_quota_grant g;
	char id[200];
	int64_t sum = 0;

	for (int round = 0; round < 2; round++) {
		int64_t t = T0 + round * 10 * SEC;
		for (int i = 0; i < N; i++) {
			snprintf(id, sizeof id, "%0150d-%d", i, round);
			assert_int_equal(ask(m, "q", NULL, 0, i % 7 + 1, false,
					     id, t, &g),
					 0);
			assert_int_equal(g.amount, i % 7 + 1);
			sum += i % 7 + 1;
		}
		/* every repeat, recent or (after one turn) old, is answered as
		 * before and allocates nothing */
		for (int pass = 0; pass < 2; pass++)
			for (int i = 0; i < N; i++) {
				snprintf(id, sizeof id, "%0150d-%d", i, round);
				assert_int_equal(ask(m, "q", NULL, 0, 100,
						     false, id, t + pass * SEC,
						     &g),
						 0);
				assert_int_equal(g.amount, i % 7 + 1);
			}
		assert_int_equal(pol_memquota_dedup_lost(m), 0);
		assert_int_equal(take(m, "q", NULL, 0, -(INT64_C(1) << 40),
				      false, t + SEC, NULL),
				 sum);
		sum = 0;
		/* two turns later, forgotten: an id allocates again */
		snprintf(id, sizeof id, "%0150d-%d", 5, round);
		assert_int_equal(
			ask(m, "q", NULL, 0, 3, false, id, t + 3 * SEC, &g), 0);
		assert_int_equal(take(m, "q", NULL, 0, -(INT64_C(1) << 40),
				      false, t + 3 * SEC, NULL),
				 3);
	}
	pol_memquota_destroy(m);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZER_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZER_HEAP 1
#endif
#endif
#ifdef SANITIZER_HEAP
/* <sanitizer/allocator_interface.h>'s, which GCC does not install */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

/* Bytes malloc() has handed out and not had back (the sanitizers'
 * allocator keeps its own count; glibc's mallinfo2() says 0 under it). */
static size_t heap_in_use(void)
{
#ifdef SANITIZER_HEAP
	return __sanitizer_get_current_allocated_bytes();
#else
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
#endif
}

/* What the ids of one generation took is what the next one reuses: two
 * bursts a turn apart hold little more than one, and idle turns give the
 * slots of a burst back. */
static void test_dedup_memory_is_reused_across_generations(void **state)
{
	enum { N = 20000 };
	struct pol_quota_def d = {"q", {INT64_C(1) << 40, 0}, NULL, 0};
	struct pol_memquota *m = pol_memquota_create(&d, 1, SEC, 100, 2 * N);
	struct pol_quota_grant g;
	char id[120];
	size_t base = heap_in_use();

	/* generation A */
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof id, "%0100d-a", i);
		assert_int_equal(ask(m, "q", NULL, 0, 1, false, id, T0, &g), 0);
	}
	size_t one = heap_in_use() - base;
	/* two turns on, A is forgotten; generation B, as large */
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof id, "%0100d-b", i);
		assert_int_equal(
			ask(m, "q", NULL, 0, 1, false, id, T0 + 2 * SEC, &g),
			0);
	}
	size_t two = heap_in_use() - base;
	assert_true(two < one + one / 2);
	/* idle turns: the slots shrink, the chunks stay for the next burst */
	assert_int_equal(ask(m, "q", NULL, 0, 1, false, "x", T0 + 4 * SEC, &g),
			 0);
	assert_int_equal(ask(m, "q", NULL, 0, 1, false, "y", T0 + 6 * SEC, &g),
			 0);
	assert_true(heap_in_use() - base < two);
	assert_int_equal(pol_memquota_dedup_lost(m), 0);
	pol_memquota_destroy(m);
}

static void test_dedup_table_full_is_counted(void **state)
{
	struct pol_quota_def d = {"q", {1000, 0}, NULL, 0};
	struct pol_memquota *m = pol_memquota_create(&d, 1, SEC, 100, 2);
	struct pol_quota_grant g;

	/* (take() asks under an id of its own, which counts too) */
	assert_int_equal(ask(m, "q", NULL, 0, 1, false, "a", T0, &g), 0);
	assert_int_equal(ask(m, "q", NULL, 0, 2, false, "b", T0, &g), 0);
	assert_int_equal(pol_memquota_dedup_lost(m), 0);
	/* no room for c: answered, not remembered, counted */
	assert_int_equal(ask(m, "q", NULL, 0, 4, false, "c", T0, &g), 0);
	assert_int_equal(g.amount, 4);
	assert_int_equal(pol_memquota_dedup_lost(m), 1);
	assert_int_equal(ask(m, "q", NULL, 0, 4, false, "c", T0, &g), 0);
	assert_int_equal(pol_memquota_dedup_lost(m), 2);
	/* a and b are still remembered */
	assert_int_equal(ask(m, "q", NULL, 0, 1, false, "a", T0, &g), 0);
	assert_int_equal(take(m, "q", NULL, 0, -1000, false, T0, NULL), 11);
	assert_int_equal(pol_memquota_dedup_lost(m), 3);
	/* after a turn a and b are old and still take the room; after the
	 * next they are gone */
	assert_int_equal(ask(m, "q", NULL, 0, 8, false, "d", T0 + SEC, &g), 0);
	assert_int_equal(pol_memquota_dedup_lost(m), 4);
	assert_int_equal(ask(m, "q", NULL, 0, 8, false, "e", T0 + 2 * SEC, &g),
			 0);
	assert_int_equal(ask(m, "q", NULL, 0, 8, false, "e", T0 + 2 * SEC, &g),
			 0);
	assert_int_equal(pol_memquota_dedup_lost(m), 4);
	assert_int_equal(take(m, "q", NULL, 0, -1000, false, T0, NULL), 16);
	assert_int_equal(pol_memquota_dedup_lost(m), 4);

	/* an id longer than POL_QUOTA_MAX_DEDUP_ID is never remembered,
	 * room or not */
	char id[POL_QUOTA_MAX_DEDUP_ID + 2];
	memset(id, 'i', sizeof id - 1);
	id[sizeof id - 1] = 0;
	assert_int_equal(ask(m, "q", NULL, 0, 3, false, id, T0 + 4 * SEC, &g),
			 0);
	assert_int_equal(ask(m, "q", NULL, 0, 3, false, id, T0 + 4 * SEC, &g),
			 0);
	assert_int_equal(pol_memquota_dedup_lost(m), 6);
	assert_int_equal(take(m, "q", NULL, 0, -1000, false, T0, NULL), 6);
	/* one byte shorter is */
	id[POL_QUOTA_MAX_DEDUP_ID] = 0;
	assert_int_equal(ask(m, "q", NULL, 0, 3, false, id, T0 + 6 * SEC, &g),
			 0);
	assert_int_equal(ask(m, "q", NULL, 0, 3, false, id, T0 + 6 * SEC, &g),
			 0);
	assert_int_equal(pol_memquota_dedup_lost(m), 6);
	assert_int_equal(take(m, "q", NULL, 0, -1000, false, T0, NULL), 3);
	pol_memquota_destroy(m);
}

/* ---------------------------------------------------------------- bounds */

static void test_key_table_full_then_idle_windows_make_room(void **state)
{
	struct pol_memquota *m = one("q", 1, SEC, 2, 1000);
	struct attr_value k1 = str("k1"), k2 = str("k2"), k3 = str("k3");
	struct pol_quota_dim d1[] = {{"d", &k1}}, d2[] = {{"d", &k2}},
			     d3[] = {{"d", &k3}};
	struct pol_quota_grant g = {-1, -1};

	assert_int_equal(take(m, "q", d1, 1, 1, false, T0, NULL), 1);
	assert_int_equal(take(m, "q", d2, 1, 1, false, T0 + 500 * MS, NULL), 1);
	assert_int_equal(pol_memquota_keys(m), 2);
	/* full of windows still in use: no room for k3 */
	assert_int_equal(ask(m, "q", d3, 1, 1, false, "x1", T0 + 900 * MS, &g),
			 -ENOSPC);
	assert_int_equal(g.amount, 0);
	assert_int_equal(g.valid_duration_ns, 0);
	assert_int_equal(pol_memquota_keys(m), 2);
	/* a refusal is not remembered: the same id may try again */
	assert_int_equal(ask(m, "q", d3, 1, 1, false, "x1", T0 + 999 * MS, &g),
			 -ENOSPC);
	/* known keys are answered as ever */
	assert_int_equal(take(m, "q", d1, 1, 1, false, T0 + 999 * MS, NULL), 0);
	/* a request that would hold nothing needs no key */
	assert_int_equal(take(m, "q", d3, 1, 2, false, T0 + 999 * MS, NULL), 0);
	/* k1's window is whole again at T0 + 1 s: dropped, k3 gets its room */
	assert_int_equal(ask(m, "q", d3, 1, 1, false, "x1", T0 + SEC, &g), 0);
	assert_int_equal(g.amount, 1);
	assert_int_equal(pol_memquota_keys(m), 2);
	/* k1 comes back as new: its old window was dropped, not lost */
	assert_int_equal(ask(m, "q", d1, 1, 1, false, "x2", T0 + SEC, &g),
			 -ENOSPC);
	assert_int_equal(take(m, "q", d1, 1, 1, false, T0 + 1500 * MS, NULL),
			 1);
	pol_memquota_destroy(m);

	/* counters are never idle: a full table of them stays full */
	m = one("c", 5, 0, 1, 1000);
	assert_int_equal(take(m, "c", d1, 1, 1, false, T0, NULL), 1);
	assert_int_equal(ask(m, "c", d2, 1, 1, false, "y", T0 + 3600 * SEC, &g),
			 -ENOSPC);
	assert_int_equal(take(m, "c", d1, 1, -1, false, T0, NULL), 1);
	assert_int_equal(take(m, "c", d2, 1, 1, false, T0, NULL), 1);
	pol_memquota_destroy(m);

	/* no keys at all */
	m = one("q", 1, SEC, 0, 1000);
	assert_int_equal(ask(m, "q", NULL, 0, 1, false, "z", T0, &g), -ENOSPC);
	pol_memquota_destroy(m);
}

static void test_create_refuses_what_the_config_refuses(void **state)
{
	struct pol_quota_def d = {"q", {1, SEC}, NULL, 0};
	assert_null(pol_memquota_create(&d, 1, 0, 10, 10));
	assert_null(pol_memquota_create(&d, 1, -SEC, 10, 10));
	d.limit.max_amount = -1;
	assert_null(pol_memquota_create(&d, 1, SEC, 10, 10));
	d.limit = (struct pol_quota_limit){1, -1};
	assert_null(pol_memquota_create(&d, 1, SEC, 10, 10));
	static const struct pol_quota_kv kv[] = {{"a", "b"}};
	struct pol_quota_override o = {kv, 1, {-5, SEC}};
	d = (struct pol_quota_def){"q", {1, SEC}, &o, 1};
	assert_null(pol_memquota_create(&d, 1, SEC, 10, 10));
	/* none is fine; so is freeing NULL */
	struct pol_memquota *m = pol_memquota_create(NULL, 0, SEC, 10, 10);
	assert_non_null(m);
	struct pol_quota_grant g;
	assert_int_equal(ask(m, "q", NULL, 0, 1, false, "", T0, &g), -ENOENT);
	pol_memquota_destroy(m);
	pol_memquota_destroy(NULL);
}

static void test_defs_are_copied(void **state)
{
	char name[] = "q", dn[] = "d", dv[] = "v";
	struct pol_quota_kv kv = {dn, dv};
	struct pol_quota_override o = {&kv, 1, {3, SEC}};
	struct pol_quota_def d = {name, {1, SEC}, &o, 1};
	struct pol_memquota *m = pol_memquota_create(&d, 1, SEC, 10, 10);
	name[0] = dn[0] = dv[0] = 'z';
	o.limit.max_amount = 100;
	struct attr_value v = str("v");
	struct pol_quota_dim dim = {"d", &v};
	assert_int_equal(take(m, "q", &dim, 1, 10, true, T0, NULL), 3);
	pol_memquota_destroy(m);
}

/* ------------------------------------------------------------ threaded */

#define THREADS 4
#define PER_THREAD 2000

struct worker {
	struct pol_memquota *m;
	int id;
	int phase;
	int64_t granted;
	pthread_barrier_t *start;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	char id[48];
	struct pol_quota_grant g;

	pthread_barrier_wait(w->start);
	for (int i = 0; i < PER_THREAD; i++) {
		struct pol_quota_args a = {id, 0, 1, false};
		int64_t now = T0;
		switch (w->phase) {
		case 0: /* one unit at a time, all at one instant */
			a.dedup_len = (size_t)snprintf(id, sizeof id, "%d-%d",
						       w->id, i);
			break;
		case 1: /* best effort, odd amounts, time moving through
			   a window's 10 ticks in each thread's own order */
			a.dedup_len = (size_t)snprintf(id, sizeof id, "%d-%d",
						       w->id, i);
			a.amount = 1 + (i + w->id) % 7;
			a.best_effort = true;
			now = T0 + ((int64_t)(i * 37 + w->id * 11) % 1000) * MS;
			break;
		case 2: /* every thread asks with the same ids */
			a.dedup_len = (size_t)snprintf(id, sizeof id, "%d", i);
			break;
		}
		assert_int_equal(
			pol_memquota_alloc(w->m, "q", NULL, 0, &a, now, &g), 0);
		w->granted += g.amount;
	}
	return NULL;
}

static int64_t run_workers(struct pol_memquota *m, int phase)
{
	pthread_t th[THREADS];
	struct worker w[THREADS];
	pthread_barrier_t start;
	int64_t total = 0;

	pthread_barrier_init(&start, NULL, THREADS);
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){m, i, phase, 0, &start};
		assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		total += w[i].granted;
	}
	pthread_barrier_destroy(&start);
	return total;
}

static void test_threads_never_get_more_than_the_window(void **state)
{
	/* 8000 requests of 1 against 1000: exactly 1000 granted */
	struct pol_memquota *m = one("q", 1000, SEC, 10, 100000);
	assert_int_equal(run_workers(m, 0), 1000);
	assert_int_equal(take(m, "q", NULL, 0, 1, true, T0, NULL), 0);
	pol_memquota_destroy(m);

	/* best effort at times spread over one window, out of order across
	 * threads: nothing comes back inside it, so exactly 1000 again */
	m = one("q", 1000, SEC, 10, 100000);
	assert_int_equal(run_workers(m, 1), 1000);
	assert_int_equal(take(m, "q", NULL, 0, 1, true, T0 + 999 * MS, NULL),
			 0);
	assert_int_equal(take(m, "q", NULL, 0, 2000, true, T0 + 2 * SEC, NULL),
			 1000);
	pol_memquota_destroy(m);

	/* counters too */
	m = one("q", 1000, 0, 10, 100000);
	assert_int_equal(run_workers(m, 0), 1000);
	assert_int_equal(take(m, "q", NULL, 0, -5000, false, T0, NULL), 1000);
	pol_memquota_destroy(m);
}

static void test_threads_repeating_ids_allocate_once_each(void **state)
{
	/* each of 2000 ids is asked by 4 threads: each answer is 1, and
	 * the window has given out exactly 2000 */
	struct pol_memquota *m = one("q", 3000, SEC, 10, 100000);
	assert_int_equal(run_workers(m, 2), THREADS * PER_THREAD);
	assert_int_equal(take(m, "q", NULL, 0, 3000, true, T0, NULL), 1000);
	pol_memquota_destroy(m);
}

int main(void)
{
	const char *san = getenv("MIXD_SANITIZE");
	if (san && !strcmp(san, "thread"))
		cmocka_set_test_filter("test_threads_*");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_productpage_ratelimit_sample),
		cmocka_unit_test(test_window_returns_units_at_exact_tick),
		cmocka_unit_test(test_window_is_whole_seconds_rounded_up),
		cmocka_unit_test(test_best_effort_grants_what_is_left),
		cmocka_unit_test(test_amount_zero_and_unknown_quota),
		cmocka_unit_test(test_time_going_back_is_taken_as_the_latest),
		cmocka_unit_test(test_counter_for_valid_duration_zero),
		cmocka_unit_test(test_free_from_a_window_newest_ticks_first),
		cmocka_unit_test(
			test_override_matching_as_mixers_string_equals),
		cmocka_unit_test(test_override_spellings_go_accepts),
		cmocka_unit_test(test_override_is_a_subset_match_first_wins),
		cmocka_unit_test(test_key_is_typed_sorted_and_unambiguous),
		cmocka_unit_test(test_key_too_long_refused),
		cmocka_unit_test(test_dedup_repeat_gets_the_same_answer),
		cmocka_unit_test(test_dedup_forgets_after_one_to_two_periods),
		cmocka_unit_test(test_dedup_many_ids_over_turns),
		cmocka_unit_test(
			test_dedup_memory_is_reused_across_generations),
		cmocka_unit_test(test_dedup_table_full_is_counted),
		cmocka_unit_test(
			test_key_table_full_then_idle_windows_make_room),
		cmocka_unit_test(test_create_refuses_what_the_config_refuses),
		cmocka_unit_test(test_defs_are_copied),
		cmocka_unit_test(test_threads_never_get_more_than_the_window),
		cmocka_unit_test(test_threads_repeating_ids_allocate_once_each),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
