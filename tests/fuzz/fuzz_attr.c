/*
 * fuzz_attr -- the attribute module's parsers of untrusted text and bytes,
 * each against what it must agree with. The first byte picks the target;
 * the rest is its input:
 *   0: a Go duration (config, expressions, mixd-report): one that parses
 *      formats back (attr_format_duration()) to text that parses to the
 *      same value; and any int64 (the first 8 bytes) formats to text that
 *      parses back to it exactly.
 *   1: an RFC 3339 timestamp (timestamp() on record strings, mixd-report):
 *      the same round trip, through attr_format_timestamp() and, to the
 *      microsecond, attr_format_timestamp_us(); any int64 round-trips
 *      too.
 *   2: UTF-8 (label values from records, which Prometheus refuses whole
 *      when one is malformed): attr_utf8_valid() and attr_utf8_check()
 *      agree with a plain decoder written from RFC 3629 here.
 *   3: an encoded string map (a record's STRING_MAP value): what
 *      attr_map_validate() accepts is walked by attr_map_next() entry by
 *      entry to exactly its end, counted by attr_map_count(), found by
 *      attr_map_get() (first of equal keys), cut shorter is refused; what
 *      it refuses cannot be walked for its count of entries.
 *   4: a double and an address from a record as labels: attr_format_double()
 *      reads back (strtod) as the same double; attr_format_ip() reads back
 *      (inet_pton) as the same address.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attr/attr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static int64_t ld_i64(const uint8_t *p)
{
	int64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* The remainder of floor(a / b), for b > 0. */
static int64_t floor_mod(int64_t a, int64_t b)
{
	int64_t r = a % b;
	return r < 0 ? r + b : r;
}

static void duration_roundtrip(int64_t ns)
{
	char buf[64];
	int64_t back;
	size_t n = attr_format_duration(ns, buf, sizeof buf);
	if (n == 0 || n >= sizeof buf || buf[n] != 0 || strlen(buf) != n)
		abort();
	if (attr_parse_duration(buf, n, &back) != 0 || back != ns)
		abort(); /* Go: ParseDuration(d.String()) == d, for every d */
}

static void duration(const uint8_t *p, size_t len)
{
	int64_t ns;
	if (attr_parse_duration((const char *)p, len, &ns) == 0)
		duration_roundtrip(ns);
	if (len >= 8)
		duration_roundtrip(ld_i64(p));
}

static void timestamp_roundtrip(int64_t ns)
{
	char buf[64];
	int64_t back;
	size_t n = attr_format_timestamp(ns, buf, sizeof buf);
	if (n < 20 || n >= sizeof buf || strlen(buf) != n || buf[n - 1] != 'Z')
		abort();
	if (attr_parse_timestamp(buf, n, &back) != 0 || back != ns)
		abort();
	/* microseconds: the value floored to the microsecond, which in the
	 * first microsecond of int64 lies before its range */
	n = attr_format_timestamp_us(ns, buf, sizeof buf);
	if (n != 27 || strlen(buf) != n || buf[19] != '.' || buf[26] != 'Z')
		abort();
	int64_t floored;
	bool fits = !__builtin_sub_overflow(ns, floor_mod(ns, 1000), &floored);
	if ((attr_parse_timestamp(buf, n, &back) == 0) != fits ||
	    (fits && back != floored))
		abort();
}

static void timestamp(const uint8_t *p, size_t len)
{
	int64_t ns;
	if (attr_parse_timestamp((const char *)p, len, &ns) == 0)
		timestamp_roundtrip(ns);
	/* every int64 of nanoseconds is a timestamp it reads */
	if (len >= 8)
		timestamp_roundtrip(ld_i64(p));
}

/* RFC 3629, one code point at a time. */
static bool utf8_reference(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = s[i];
		uint32_t cp, min;
		size_t k;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1;
			cp = c & 0x1f;
			min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2;
			cp = c & 0x0f;
			min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3;
			cp = c & 0x07;
			min = 0x10000;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

static void utf8(const uint8_t *p, size_t len)
{
	bool want = utf8_reference(p, len);
	if (attr_utf8_check(p, len) != want || attr_utf8_valid(p, len) != want)
		abort();
	/* and the inputs cut short by up to 7 bytes: the 8-byte fast path's
	 * tail, and a sequence cut in the middle */
	for (size_t cut = len; cut-- > 0 && cut + 8 > len;)
		if (attr_utf8_valid(p, cut) != utf8_reference(p, cut))
			abort();
}

static void string_map(const uint8_t *p, size_t len)
{
	size_t n = attr_map_validate(p, len);
	if (n > len)
		abort();
	struct attr_value m = {
		.type = ATTR_STRING_MAP, .len = (uint32_t)len, .map = p};
	if (len > UINT32_MAX)
		return;
	if (n == 0) {
		/* refused: its entries cannot all be walked */
		if (len < 4)
			return;
		uint32_t count = attr_map_count(&m);
		size_t off = 0;
		struct attr_value k, v;
		for (uint32_t i = 0; i < count; i++)
			if (!attr_map_next(&m, &off, &k, &v))
				return;
		abort();
	}
	m.len = (uint32_t)n;
	uint32_t count = attr_map_count(&m);
	if (count != attr_get_u32le(p))
		abort();
	size_t off = 0;
	struct attr_value k, v, got;
	bool unique = true;
	for (uint32_t i = 0; i < count; i++) {
		size_t before = off;
		if (!attr_map_next(&m, &off, &k, &v))
			abort(); /* validated, so every entry walks */
		if (off < (before ? before : 4) + 8 || off > n)
			abort(); /* an entry is at least its two lengths */
		if (k.type != ATTR_STRING || v.type != ATTR_STRING ||
		    (const uint8_t *)k.s < p + 4 ||
		    (const uint8_t *)v.s < p + 4 ||
		    (const uint8_t *)k.s + k.len > p + n ||
		    (const uint8_t *)v.s + v.len > p + n)
			abort();
		/* attr_map_get() finds the first entry with this key */
		if (!attr_map_get(&m, k.s, k.len, &got))
			abort();
		if (got.s != v.s || got.len != v.len)
			unique = false; /* an earlier entry had this key */
	}
	if (count && off != n)
		abort(); /* the walk ends where validation ended ... */
	if (count && attr_map_next(&m, &off, &k, &v))
		abort(); /* ... and goes no further */
	/* a map cut short is no map */
	if (n > 4 && attr_map_validate(p, n - 1) != 0)
		abort();
	if (attr_map_validate(p, n) != n)
		abort();
	/* maps compare as sets of pairs: one with distinct keys equals
	 * itself */
	if (unique && !attr_value_equal(&m, &m))
		abort();
}

static void labels(const uint8_t *p, size_t len)
{
	char buf[400];
	if (len >= 8) {
		double d;
		memcpy(&d, p, 8);
		size_t n = attr_format_double(d, buf, sizeof buf);
		if (n == 0 || n >= sizeof buf || strlen(buf) != n)
			abort();
		if (d == d && d - d == 0) { /* finite */
			char *end;
			double back = strtod(buf, &end);
			if (end != buf + n || back != d)
				abort();
			if (memchr(buf, 'e', n) || memchr(buf, 'E', n))
				abort(); /* never an exponent */
		}
	}
	if (len >= 4) {
		struct attr_value v = {.type = ATTR_IP};
		uint8_t back[16];
		v.len = len >= 16 ? 16 : 4;
		memcpy(v.ip, p, v.len);
		size_t n = attr_format_ip(&v, buf, sizeof buf);
		if (n == 0 || n >= ATTR_IP_TEXT_MAX || strlen(buf) != n)
			abort();
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
						   0, 0, 0, 0, 0xff, 0xff};
		if (v.len == 4 || !memcmp(v.ip, mapped, 12)) {
			if (inet_pton(AF_INET, buf, back) != 1 ||
			    memcmp(back, v.ip + v.len - 4, 4) != 0)
				abort();
		} else if (inet_pton(AF_INET6, buf, back) != 1 ||
			   memcmp(back, v.ip, 16) != 0) {
			abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *p = data + 1;
	size_t len = size - 1;
	switch (data[0] % 5) {
	case 0:
		duration(p, len);
		break;
	case 1:
		timestamp(p, len);
		break;
	case 2:
		utf8(p, len);
		break;
	case 3:
		string_map(p, len);
		break;
	case 4:
		labels(p, len);
		break;
	}
	return 0;
}
