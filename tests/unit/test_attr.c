/*
 * test_attr -- the vocabulary, encoded string maps, value equality, and the
 * Go duration / RFC 3339 timestamp codecs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "attr/attr.h"

static void test_vocab_builtin(void **state)
{
	struct attr_vocab *v = attr_vocab_create();
	assert_non_null(v);
	assert_int_equal(attr_vocab_count(v), MIXD_ATTR_DICT_COUNT);
	/* slot == dictionary id, for every built-in name */
	static const struct {
		const char *name;
		int type;
	} dict[] = {
#define X_(id, n, t) {n, t},
		MIXD_ATTRIBUTE_LIST(X_)
#undef X_
	};
	for (unsigned i = 0; i < MIXD_ATTR_DICT_COUNT; i++) {
		assert_int_equal(attr_vocab_find(v, dict[i].name,
						 strlen(dict[i].name)),
				 (int)i);
		assert_int_equal(attr_vocab_type(v, i), dict[i].type);
		assert_string_equal(attr_vocab_name(v, i), dict[i].name);
	}
	assert_int_equal(attr_vocab_find(v, "source.ui", 9), -1);
	assert_int_equal(attr_vocab_find(v, "source.uidx", 11), -1);
	/* the length, not a NUL, ends the name */
	assert_int_equal(attr_vocab_find(v, "source.uid.x", 10),
			 MIXD_ATTR_SOURCE_UID);
	assert_int_equal(attr_vocab_type(v, 9999), ATTR_NONE);
	assert_null(attr_vocab_name(v, 9999));
	attr_vocab_destroy(v);
	attr_vocab_destroy(NULL);
}

static void test_vocab_add(void **state)
{
	struct attr_vocab *v = attr_vocab_create();
	enum attr_type prev = ATTR_NONE;
	int s = attr_vocab_add(v, "$out.source_pod_uid", ATTR_STRING, NULL);
	assert_int_equal(s, MIXD_ATTR_DICT_COUNT);
	/* same type again: the same slot */
	assert_int_equal(attr_vocab_add(v, "$out.source_pod_uid", ATTR_STRING,
					NULL),
			 s);
	/* a manifest re-declaring a built-in with its own type is fine */
	assert_int_equal(attr_vocab_add(v, "source.ip", ATTR_IP, NULL),
			 MIXD_ATTR_SOURCE_IP);
	assert_int_equal(attr_vocab_add(v, "source.ip", ATTR_STRING, &prev),
			 -EEXIST);
	assert_int_equal(prev, ATTR_IP);
	assert_int_equal(attr_vocab_add(v, "x", ATTR_NONE, NULL), -EINVAL);
	assert_int_equal(attr_vocab_add(v, "", ATTR_STRING, NULL), -EINVAL);
	assert_int_equal(attr_vocab_find(v, "$out.source_pod_uid", 19), s);
	assert_int_equal(attr_vocab_type(v, (unsigned)s), ATTR_STRING);

	/* fill every slot, then run out */
	char name[32];
	int added = 0;
	for (int i = 0;; i++) {
		snprintf(name, sizeof name, "custom.attr%d", i);
		int r = attr_vocab_add(v, name, ATTR_INT64, NULL);
		if (r == -ENOSPC)
			break;
		assert_true(r >= 0);
		added++;
	}
	assert_int_equal(attr_vocab_count(v), ATTR_MAX_SLOTS);
	assert_int_equal(added, ATTR_MAX_SLOTS - MIXD_ATTR_DICT_COUNT - 1);
	/* every one still found */
	for (int i = 0; i < added; i++) {
		snprintf(name, sizeof name, "custom.attr%d", i);
		assert_true(attr_vocab_find(v, name, strlen(name)) >= 0);
	}
	attr_vocab_destroy(v);
}

static void test_type_names(void **state)
{
	for (int t = ATTR_STRING; t < ATTR_TYPE_COUNT; t++)
		assert_int_equal(attr_type_parse(attr_type_name(t)), t);
	assert_string_equal(attr_type_name(ATTR_IP), "IP_ADDRESS");
	assert_string_equal(attr_type_name(ATTR_STRING_MAP), "STRING_MAP");
	assert_int_equal(attr_type_parse("EMAIL_ADDRESS"), ATTR_EMAIL);
	assert_int_equal(attr_type_parse("bogus"), ATTR_NONE);
	assert_true(attr_type_is_string(ATTR_DNS_NAME));
	assert_false(attr_type_is_string(ATTR_BYTES));
}

static size_t enc(uint8_t *b, const char *const *kv, uint32_t n)
{
	size_t off = 4;
	memcpy(b, &n, 4);
	for (uint32_t i = 0; i < 2 * n; i++) {
		uint32_t l = (uint32_t)strlen(kv[i]);
		memcpy(b + off, &l, 4);
		memcpy(b + off + 4, kv[i], l);
		off += 4 + l;
	}
	return off;
}

static void test_maps(void **state)
{
	uint8_t a[128], b[128];
	static const char *const kva[] = {"istio", "reviews", "version", "v2"};
	static const char *const kvb[] = {"version", "v2", "istio", "reviews"};
	size_t la = enc(a, kva, 2), lb = enc(b, kvb, 2);
	assert_int_equal(attr_map_validate(a, la), la);
	/* trailing bytes are not part of the map */
	assert_int_equal(attr_map_validate(a, la + 3), la);
	/* every truncation is malformed */
	for (size_t i = 0; i < la; i++)
		assert_int_equal(attr_map_validate(a, i), 0);
	/* a count larger than the data */
	uint8_t bad[8] = {5, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(attr_map_validate(bad, sizeof bad), 0);

	struct attr_value ma = {.type = ATTR_STRING_MAP, .len = (uint32_t)la,
				.map = a};
	struct attr_value mb = {.type = ATTR_STRING_MAP, .len = (uint32_t)lb,
				.map = b};
	struct attr_value out;
	assert_int_equal(attr_map_count(&ma), 2);
	assert_true(attr_map_get(&ma, "version", 7, &out));
	assert_int_equal(out.type, ATTR_STRING);
	assert_int_equal(out.len, 2);
	assert_memory_equal(out.s, "v2", 2);
	assert_false(attr_map_get(&ma, "versio", 6, &out));
	assert_false(attr_map_get(&ma, "missing", 7, &out));
	/* key order does not matter for equality */
	assert_true(attr_value_equal(&ma, &mb));
	static const char *const kvc[] = {"istio", "reviews", "version", "v3"};
	uint8_t c[128];
	struct attr_value mc = {.type = ATTR_STRING_MAP,
				.len = (uint32_t)enc(c, kvc, 2), .map = c};
	assert_false(attr_value_equal(&ma, &mc));
	/* a zero-length value is the empty map */
	struct attr_value empty = {.type = ATTR_STRING_MAP};
	assert_int_equal(attr_map_count(&empty), 0);
	assert_false(attr_map_get(&empty, "a", 1, &out));
	/* a map shorter than it claims is not read past its end */
	struct attr_value trunc = ma;
	trunc.len = (uint32_t)la - 1;
	assert_false(attr_map_get(&trunc, "version", 7, &out));

	/* walking: every entry in order, then the end */
	struct attr_value k, v;
	size_t off = 0;
	assert_true(attr_map_next(&ma, &off, &k, &v));
	assert_int_equal(k.len, 5);
	assert_memory_equal(k.s, "istio", 5);
	assert_memory_equal(v.s, "reviews", 7);
	assert_true(attr_map_next(&ma, &off, &k, &v));
	assert_memory_equal(k.s, "version", 7);
	assert_memory_equal(v.s, "v2", 2);
	assert_false(attr_map_next(&ma, &off, &k, &v));
	off = 0;
	assert_false(attr_map_next(&empty, &off, &k, &v));
	/* a truncated map stops at the broken entry */
	off = 0;
	assert_true(attr_map_next(&trunc, &off, &k, &v));
	assert_false(attr_map_next(&trunc, &off, &k, &v));
}

static void test_value_equal(void **state)
{
	struct attr_value s1 = {.type = ATTR_STRING, .len = 3, .s = "abc"};
	struct attr_value s2 = {.type = ATTR_DNS_NAME, .len = 3, .s = "abc"};
	struct attr_value s3 = {.type = ATTR_STRING, .len = 2, .s = "ab"};
	struct attr_value e1 = {.type = ATTR_STRING, .len = 0, .s = NULL};
	struct attr_value e2 = {.type = ATTR_STRING, .len = 0, .s = ""};
	assert_true(attr_value_equal(&s1, &s2));
	assert_false(attr_value_equal(&s1, &s3));
	assert_true(attr_value_equal(&e1, &e2));
	struct attr_value i1 = {.type = ATTR_INT64, .i = 5};
	struct attr_value d1 = {.type = ATTR_DURATION, .i = 5};
	struct attr_value f1 = {.type = ATTR_DOUBLE, .d = 5};
	assert_false(attr_value_equal(&i1, &d1));
	assert_false(attr_value_equal(&i1, &f1));
	assert_true(attr_value_equal(&i1, &i1));
	struct attr_value v4 = {.type = ATTR_IP, .len = 4, .ip = {10, 0, 0, 1}};
	struct attr_value v6 = {.type = ATTR_IP, .len = 16,
				.ip = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
				       10, 0, 0, 1}};
	struct attr_value v6b = v6;
	v6b.ip[10] = 0;
	assert_true(attr_value_equal(&v4, &v6));
	assert_true(attr_value_equal(&v6, &v4));
	assert_false(attr_value_equal(&v4, &v6b));
	struct attr_value b1 = {.type = ATTR_BOOL, .b = true};
	struct attr_value b2 = {.type = ATTR_BOOL, .b = false};
	assert_false(attr_value_equal(&b1, &b2));
}

static void test_duration_parse(void **state)
{
	static const struct {
		const char *s;
		int ok;
		int64_t ns;
	} c[] = {
		{"0", 1, 0},
		{"+0", 1, 0},
		{"-0", 1, 0},
		{"0s", 1, 0},
		{"0ms", 1, 0},
		{"15ms", 1, 15000000},
		{"1.5s", 1, 1500000000},
		{".5s", 1, 500000000},
		{"5.s", 1, 5000000000},
		{"-1s", 1, -1000000000},
		{"1h30m", 1, 5400000000000},
		{"1h0m0s", 1, 3600000000000},
		{"1m30s", 1, 90000000000},
		{"1ns", 1, 1},
		{"1us", 1, 1000},
		{"1\xc2\xb5s", 1, 1000},
		{"1\xce\xbcs", 1, 1000},
		{"1.000001ms", 1, 1000001},
		{"0.1ns", 1, 0},
		{"2562047h47m16.854775807s", 1, INT64_MAX},
		{"-2562047h47m16.854775808s", 1, INT64_MIN},
		{"2562047h47m16.854775808s", 0, 0},
		{"9223372036854775808ns", 0, 0},
		{"", 0, 0},
		{"1", 0, 0},
		{"s", 0, 0},
		{".s", 0, 0},
		{"1x", 0, 0},
		{"1s2", 0, 0},
		{"-", 0, 0},
		{"1 s", 0, 0},
		{"1S", 0, 0},
		{"unknown", 0, 0},
	};
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		int64_t ns = 12345;
		int rc = attr_parse_duration(c[i].s, strlen(c[i].s), &ns);
		if ((rc == 0) != c[i].ok || (rc == 0 && ns != c[i].ns))
			fail_msg("%s: rc %d ns %lld", c[i].s, rc,
				 (long long)ns);
	}
}

static void test_duration_format(void **state)
{
	static const struct {
		int64_t ns;
		const char *s;
	} c[] = {
		{0, "0s"},
		{1, "1ns"},
		{500, "500ns"},
		{1000, "1\xc2\xb5s"},
		{1500, "1.5\xc2\xb5s"},
		{15000000, "15ms"},
		{1000001, "1.000001ms"},
		{1500000000, "1.5s"},
		{90000000000, "1m30s"},
		{3600000000000, "1h0m0s"},
		{5400000000000, "1h30m0s"},
		{-1000000000, "-1s"},
		{-1, "-1ns"},
		{INT64_MAX, "2562047h47m16.854775807s"},
		{INT64_MIN, "-2562047h47m16.854775808s"},
	};
	char buf[64];
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		size_t n = attr_format_duration(c[i].ns, buf, sizeof buf);
		assert_string_equal(buf, c[i].s);
		assert_int_equal(n, strlen(c[i].s));
		/* and it parses back */
		int64_t back;
		assert_int_equal(attr_parse_duration(buf, n, &back), 0);
		assert_int_equal(back, c[i].ns);
	}
	/* truncated to the buffer, always terminated */
	assert_int_equal(attr_format_duration(1500000000, buf, 3), 2);
	assert_string_equal(buf, "1.");
}

static void test_utf8(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		size_t good; /* attr_utf8_prefix(): where it goes wrong */
	} cases[] = {
		{"", 0},
		{"/reviews/0?x=1&y=2", 18},
		{"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 long ascii tail", 30},
		{"\xed\x9f\xbf", 3},          /* U+D7FF */
		{"\xf4\x8f\xbf\xbf", 4},      /* U+10FFFF */
		{"/bad\xff\xfe", 4},
		{"\xc0\xaf", 0},              /* overlong '/' */
		{"\xe0\x80\xaf", 0},          /* overlong */
		{"ab\xed\xa0\x80", 2},        /* a surrogate */
		{"\xf4\x90\x80\x80", 0},      /* above U+10FFFF */
		{"\xc3", 0},                  /* cut short */
		{"abcdefgh\xe2\x82", 8},       /* cut short after a word */
		{"abcdefghijkl\x80", 12},     /* a lone continuation */
		{"\xc3\xa9\xc3(", 2},          /* a lead byte without its tail */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t n = strlen(cases[i].s);
		bool ok = cases[i].good == n;
		if (attr_utf8_valid(cases[i].s, n) != ok)
			fail_msg("case %zu: %s", i, ok ? "refused" : "taken");
		if (attr_utf8_prefix(cases[i].s, n) != cases[i].good)
			fail_msg("case %zu: prefix %zu, want %zu", i,
				 attr_utf8_prefix(cases[i].s, n), cases[i].good);
	}
}

/* Label values as Mixer's adapter.Stringify wrote them: doubles by
 * strconv.FormatFloat(v, 'f', -1, 64), timestamps with six fractional
 * digits. The expected strings are Go's. */
static void test_label_forms(void **state)
{
	(void)state;
	static const struct {
		double v;
		const char *go;
	} d[] = {
		{0, "0"},		{-0.0, "-0"},
		{1, "1"},		{-2.5, "-2.5"},
		{0.1, "0.1"},		{0.00001, "0.00001"},
		{1e15, "1000000000000000"}, {1e21, "1000000000000000000000"},
		{123456.789, "123456.789"}, {1.0 / 3, "0.3333333333333333"},
		{2.0 / 3, "0.6666666666666666"}, {5e-324, NULL},
		{1.7976931348623157e308, NULL},
		{0.1 + 0.2, "0.30000000000000004"},
	};
	char buf[400];
	for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
		size_t n = attr_format_double(d[i].v, buf, sizeof buf);
		assert_int_equal(n, strlen(buf));
		assert_null(strchr(buf, 'e'));
		assert_true(strtod(buf, NULL) == d[i].v); /* reads back */
		if (d[i].go)
			assert_string_equal(buf, d[i].go);
	}
	attr_format_double(5e-324, buf, sizeof buf);
	assert_int_equal(strlen(buf), 2 + 323 + 1); /* 0.000...0005 */
	attr_format_double(0.0 / 0.0, buf, sizeof buf);
	assert_string_equal(buf, "NaN");
	attr_format_double(-1.0 / 0.0, buf, sizeof buf);
	assert_string_equal(buf, "-Inf");
	attr_format_double(1.0 / 0.0, buf, sizeof buf);
	assert_string_equal(buf, "+Inf");

	int64_t ns;
	assert_int_equal(attr_parse_timestamp("2019-06-01T12:30:00.5+02:00", 27,
					      &ns),
			 0);
	attr_format_timestamp_us(ns, buf, sizeof buf);
	assert_string_equal(buf, "2019-06-01T10:30:00.500000Z");
	attr_format_timestamp_us(0, buf, sizeof buf);
	assert_string_equal(buf, "1970-01-01T00:00:00.000000Z");
	attr_format_timestamp_us(1999, buf, sizeof buf); /* 1.999 us: cut */
	assert_string_equal(buf, "1970-01-01T00:00:00.000001Z");
}

/* IP addresses as Go's net.IP.String() printed them (expected strings are
 * Go's): an IPv4-mapped address in dots, an IPv4-compatible one in hex
 * groups (inet_ntop would write "::1.2.3.4"), the first longest zero run
 * shortened, never a single zero group. */
static void test_ip_format(void **state)
{
	(void)state;
	static const struct {
		uint8_t len, ip[16];
		const char *go;
	} c[] = {
		{4, {10, 0, 0, 1}, "10.0.0.1"},
		{16, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3},
		 "10.1.2.3"},
		{16, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, "0.0.0.0"},
		{16, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
		 "::102:304"},
		{16, {0}, "::"},
		{16, {[15] = 1}, "::1"},
		{16, {0xfd, 0, [15] = 1}, "fd00::1"},
		{16, {0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1},
		 "2001:db8::1:0:0:1"}, /* the first of two equal runs */
		{16, {0x20, 1, 0x0d, 0xb8, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1},
		 "2001:db8:0:1:1:1:1:1"}, /* one zero group stays */
		{16, {0xfe, 0x80, [8] = 0x0a, 0xbc, 0, 0, 0, 0, 0xff, 0xff},
		 "fe80::abc:0:0:ffff"},
		{16, {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		 "100::"},
	};
	char buf[ATTR_IP_TEXT_MAX];
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		struct attr_value v = {.type = ATTR_IP, .len = c[i].len};
		memcpy(v.ip, c[i].ip, 16);
		size_t n = attr_format_ip(&v, buf, sizeof buf);
		assert_int_equal(n, strlen(buf));
		assert_string_equal(buf, c[i].go);
	}
	/* cut to the buffer, NUL-terminated */
	struct attr_value v = {.type = ATTR_IP, .len = 4, .ip = {10, 0, 0, 1}};
	assert_int_equal(attr_format_ip(&v, buf, 4), 3);
	assert_string_equal(buf, "10.");
}

static void test_timestamps(void **state)
{
	static const struct {
		const char *in;
		int ok;
		const char *out;
	} c[] = {
		{"1970-01-01T00:00:00Z", 1, "1970-01-01T00:00:00Z"},
		{"2019-01-01T00:00:00Z", 1, "2019-01-01T00:00:00Z"},
		{"2019-06-01T12:30:00.5+02:00", 1, "2019-06-01T10:30:00.5Z"},
		{"2019-06-01T12:30:00.123456789Z", 1,
		 "2019-06-01T12:30:00.123456789Z"},
		{"2019-06-01T12:30:00.100Z", 1, "2019-06-01T12:30:00.1Z"},
		{"2020-02-29T23:59:59-01:00", 1, "2020-03-01T00:59:59Z"},
		{"1969-12-31T23:59:59.5Z", 1, "1969-12-31T23:59:59.5Z"},
		/* the ends of int64 nanoseconds, and one past each */
		{"2262-04-11T23:47:16.854775807Z", 1,
		 "2262-04-11T23:47:16.854775807Z"},
		{"2262-04-11T23:47:16.854775808Z", 0, NULL},
		{"1677-09-21T00:12:43.145224192Z", 1,
		 "1677-09-21T00:12:43.145224192Z"},
		{"1677-09-21T00:12:43.145224191Z", 0, NULL},
		{"1677-09-21T00:12:44Z", 1, "1677-09-21T00:12:44Z"},
		{"2262-04-11T23:47:16Z", 1, "2262-04-11T23:47:16Z"},
		{"9999-12-31T23:59:59Z", 0, NULL},
		{"0001-01-01T00:00:00Z", 0, NULL},
		{"2019-02-29T00:00:00Z", 0, NULL},
		{"2019-13-01T00:00:00Z", 0, NULL},
		{"2019-01-01T24:00:00Z", 0, NULL},
		{"2019-01-01T00:00:60Z", 0, NULL},
		{"2019-01-01 00:00:00Z", 0, NULL},
		{"2019-01-01T00:00:00", 0, NULL},
		{"2019-01-01T00:00:00.Z", 0, NULL},
		{"2019-01-01T00:00:00+0100", 0, NULL},
		{"2019-01-01T00:00:00Zjunk", 0, NULL},
		{"yesterday", 0, NULL},
	};
	char buf[64];
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		int64_t ns;
		int rc = attr_parse_timestamp(c[i].in, strlen(c[i].in), &ns);
		if ((rc == 0) != c[i].ok)
			fail_msg("%s: rc %d", c[i].in, rc);
		if (rc)
			continue;
		attr_format_timestamp(ns, buf, sizeof buf);
		assert_string_equal(buf, c[i].out);
	}
	int64_t ns;
	assert_int_equal(attr_parse_timestamp("2019-01-01T00:00:00Z", 20, &ns),
			 0);
	assert_int_equal(ns, 1546300800LL * 1000000000LL);
	assert_int_equal(attr_parse_timestamp("2262-04-11T23:47:16.854775807Z",
					      30, &ns),
			 0);
	assert_true(ns == INT64_MAX);
	assert_int_equal(attr_parse_timestamp("1677-09-21T00:12:43.145224192Z",
					      30, &ns),
			 0);
	assert_true(ns == INT64_MIN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vocab_builtin),
		cmocka_unit_test(test_vocab_add),
		cmocka_unit_test(test_type_names),
		cmocka_unit_test(test_maps),
		cmocka_unit_test(test_value_equal),
		cmocka_unit_test(test_duration_parse),
		cmocka_unit_test(test_duration_format),
		cmocka_unit_test(test_timestamps),
		cmocka_unit_test(test_label_forms),
		cmocka_unit_test(test_ip_format),
		cmocka_unit_test(test_utf8),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
