/*
 * attr.c -- attribute values, encoded string maps, the vocabulary, and the
 * Go-compatible duration and RFC 3339 timestamp codecs.
 */
#include "attr/attr.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- types ------------------------------------------------------------ */

/* Mixer's spelling of each type (istio.policy.v1beta1.ValueType). */
static const char *const type_names[ATTR_TYPE_COUNT] = {
	[ATTR_NONE] = "VALUE_TYPE_UNSPECIFIED",
	[ATTR_STRING] = "STRING",
	[ATTR_INT64] = "INT64",
	[ATTR_DOUBLE] = "DOUBLE",
	[ATTR_BOOL] = "BOOL",
	[ATTR_TIMESTAMP] = "TIMESTAMP",
	[ATTR_DURATION] = "DURATION",
	[ATTR_IP] = "IP_ADDRESS",
	[ATTR_BYTES] = "BYTES",
	[ATTR_STRING_MAP] = "STRING_MAP",
	[ATTR_EMAIL] = "EMAIL_ADDRESS",
	[ATTR_URI] = "URI",
	[ATTR_DNS_NAME] = "DNS_NAME",
};

const char *attr_type_name(enum attr_type t)
{
	if ((unsigned)t >= ATTR_TYPE_COUNT)
		return "INVALID";
	return type_names[t];
}

enum attr_type attr_type_parse(const char *name)
{
	for (int t = ATTR_STRING; t < ATTR_TYPE_COUNT; t++)
		if (strcmp(name, type_names[t]) == 0)
			return (enum attr_type)t;
	return ATTR_NONE;
}

/* ---- encoded string maps ---------------------------------------------- */

size_t attr_map_validate(const uint8_t *p, size_t len)
{
	if (len < 4)
		return 0;
	uint32_t n = attr_get_u32le(p);
	const uint8_t *q = p + 4, *end = p + len;
	for (uint32_t i = 0; i < n; i++) {
		const char *k, *v;
		uint32_t kl, vl;
		if (!attr_map_entry(&q, end, &k, &kl, &v, &vl))
			return 0;
	}
	return (size_t)(q - p);
}

uint32_t attr_map_count(const struct attr_value *map)
{
	/* A zero-length map value (never on the wire) is the empty map. */
	if (map->len < 4 || !map->map)
		return 0;
	return attr_get_u32le(map->map);
}

bool attr_map_next(const struct attr_value *map, size_t *off,
		   struct attr_value *key, struct attr_value *val)
{
	if (!map->map || map->len < 4)
		return false;
	const uint8_t *q = map->map + (*off ? *off : 4);
	const char *k, *v;
	uint32_t kl, vl;
	if (!attr_map_entry(&q, map->map + map->len, &k, &kl, &v, &vl))
		return false;
	*key = (struct attr_value){.type = ATTR_STRING, .len = kl, .s = k};
	*val = (struct attr_value){.type = ATTR_STRING, .len = vl, .s = v};
	*off = (size_t)(q - map->map);
	return true;
}

bool attr_map_get(const struct attr_value *map, const char *key, size_t klen,
		  struct attr_value *out)
{
	if (map->len < 4 || !map->map)
		return false;
	const uint8_t *q = map->map + 4, *end = map->map + map->len;
	uint32_t n = attr_get_u32le(map->map);
	/* Bounds are checked again although the map was validated: a value
	 * built by hand (tests, adapters) must not make us read past it. */
	for (uint32_t i = 0; i < n; i++) {
		const char *k, *v;
		uint32_t kl, vl;
		if (!attr_map_entry(&q, end, &k, &kl, &v, &vl))
			return false;
		if (kl == klen && memcmp(k, key, klen) == 0) {
			*out = (struct attr_value){.type = ATTR_STRING, .len = vl,
						   .s = v};
			return true;
		}
	}
	return false;
}

/* Maps are compared as sets of pairs: producers need not sort keys. */
static bool map_equal(const struct attr_value *a, const struct attr_value *b)
{
	uint32_t n = attr_map_count(a);
	if (n != attr_map_count(b))
		return false;
	const uint8_t *q = a->map + 4, *end = a->map + a->len;
	for (uint32_t i = 0; i < n; i++) {
		const char *k, *v;
		uint32_t kl, vl;
		struct attr_value bv;
		if (!attr_map_entry(&q, end, &k, &kl, &v, &vl) ||
		    !attr_map_get(b, k, kl, &bv) || bv.len != vl ||
		    memcmp(bv.s, v, vl) != 0)
			return false;
	}
	return true;
}

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0,
					     0, 0, 0, 0, 0xff, 0xff};

/* As Go's net.IP.Equal: an IPv4 address equals its IPv4-mapped IPv6
 * form. */
static bool ip_equal(const struct attr_value *a, const struct attr_value *b)
{
	if (a->len == b->len)
		return a->len <= 16 && memcmp(a->ip, b->ip, a->len) == 0;
	const struct attr_value *v4 = a->len == 4 ? a : b;
	const struct attr_value *v6 = a->len == 4 ? b : a;
	if (v4->len != 4 || v6->len != 16)
		return false;
	return memcmp(v6->ip, v4_mapped_prefix, 12) == 0 &&
	       memcmp(v6->ip + 12, v4->ip, 4) == 0;
}

bool attr_value_equal(const struct attr_value *a, const struct attr_value *b)
{
	enum attr_type ta = a->type, tb = b->type;
	if (attr_type_is_string(ta) && attr_type_is_string(tb))
		return a->len == b->len &&
		       (a->len == 0 || memcmp(a->s, b->s, a->len) == 0);
	if (ta != tb)
		return false;
	switch (ta) {
	case ATTR_INT64:
	case ATTR_TIMESTAMP:
	case ATTR_DURATION:
		return a->i == b->i;
	case ATTR_DOUBLE:
		return a->d == b->d;
	case ATTR_BOOL:
		return a->b == b->b;
	case ATTR_IP:
		return ip_equal(a, b);
	case ATTR_BYTES:
		return a->len == b->len &&
		       (a->len == 0 || memcmp(a->s, b->s, a->len) == 0);
	case ATTR_STRING_MAP:
		return map_equal(a, b);
	default:
		return false;
	}
}

/* ---- vocabulary --------------------------------------------------------- */

/* Open addressing, linear probing, at most half full so probes stay short
 * (the table never grows: slots are capped at ATTR_MAX_SLOTS). */
#define VOCAB_HASH_SIZE (ATTR_MAX_SLOTS * 2)

struct attr_vocab {
	unsigned count;
	const char *names[ATTR_MAX_SLOTS];
	uint16_t name_len[ATTR_MAX_SLOTS];
	uint8_t types[ATTR_MAX_SLOTS];
	/* slot + 1, 0 == empty; the hash beside it skips most memcmp()s */
	uint16_t hslot[VOCAB_HASH_SIZE];
	uint32_t hhash[VOCAB_HASH_SIZE];
};

static const struct {
	const char *name;
	enum attr_type type;
} builtin[MIXD_ATTR_DICT_COUNT] = {
#define X_(id, n, t) {n, (enum attr_type)(t)},
	MIXD_ATTRIBUTE_LIST(X_)
#undef X_
};

/* FNV-1a: names are short (< 40 bytes); this is only used at config load
 * and for inline names. */
static uint32_t name_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)s[i];
		h *= 16777619u;
	}
	return h;
}

int attr_vocab_find(const struct attr_vocab *v, const char *name, size_t len)
{
	uint32_t h = name_hash(name, len);
	for (uint32_t i = h & (VOCAB_HASH_SIZE - 1);;
	     i = (i + 1) & (VOCAB_HASH_SIZE - 1)) {
		unsigned s = v->hslot[i];
		if (s == 0)
			return -1;
		s--;
		if (v->hhash[i] == h && v->name_len[s] == len &&
		    memcmp(v->names[s], name, len) == 0)
			return (int)s;
	}
}

static void vocab_insert(struct attr_vocab *v, unsigned slot, const char *name,
			 size_t len, enum attr_type t)
{
	uint32_t h = name_hash(name, len);
	v->names[slot] = name;
	v->name_len[slot] = (uint16_t)len;
	v->types[slot] = (uint8_t)t;
	uint32_t i = h & (VOCAB_HASH_SIZE - 1);
	while (v->hslot[i])
		i = (i + 1) & (VOCAB_HASH_SIZE - 1);
	v->hslot[i] = (uint16_t)(slot + 1);
	v->hhash[i] = h;
}

struct attr_vocab *attr_vocab_create(void)
{
	struct attr_vocab *v = calloc(1, sizeof *v);
	if (!v)
		return NULL;
	for (unsigned i = 0; i < MIXD_ATTR_DICT_COUNT; i++)
		vocab_insert(v, i, builtin[i].name, strlen(builtin[i].name),
			     builtin[i].type);
	v->count = MIXD_ATTR_DICT_COUNT;
	return v;
}

void attr_vocab_destroy(struct attr_vocab *v)
{
	if (!v)
		return;
	/* Built-in names are string literals; the rest were copied. */
	for (unsigned i = MIXD_ATTR_DICT_COUNT; i < v->count; i++)
		free((char *)v->names[i]);
	free(v);
}

int attr_vocab_add(struct attr_vocab *v, const char *name, enum attr_type t,
		   enum attr_type *existing)
{
	size_t len = strlen(name);
	if ((unsigned)t == ATTR_NONE || (unsigned)t >= ATTR_TYPE_COUNT ||
	    len == 0 || len > UINT16_MAX)
		return -EINVAL;
	int s = attr_vocab_find(v, name, len);
	if (s >= 0) {
		if (v->types[s] == t)
			return s;
		if (existing)
			*existing = (enum attr_type)v->types[s];
		return -EEXIST;
	}
	if (v->count >= ATTR_MAX_SLOTS)
		return -ENOSPC;
	char *copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	unsigned slot = v->count++;
	vocab_insert(v, slot, copy, len, t);
	return (int)slot;
}

enum attr_type attr_vocab_type(const struct attr_vocab *v, unsigned slot)
{
	return slot < v->count ? (enum attr_type)v->types[slot] : ATTR_NONE;
}

const char *attr_vocab_name(const struct attr_vocab *v, unsigned slot)
{
	return slot < v->count ? v->names[slot] : NULL;
}

unsigned attr_vocab_count(const struct attr_vocab *v)
{
	return v->count;
}

/* ---- Go durations ------------------------------------------------------ */

#define NS_US 1000ull
#define NS_MS 1000000ull
#define NS_S 1000000000ull
#define NS_M (60 * NS_S)
#define NS_H (60 * NS_M)
#define DUR_LIMIT (1ull << 63)

static uint64_t duration_unit(const char *u, size_t n)
{
	static const struct {
		const char *name;
		uint64_t ns;
	} units[] = {
		{"ns", 1},     {"us", NS_US},
		{"\xc2\xb5s", NS_US}, /* U+00B5 micro sign */
		{"\xce\xbcs", NS_US}, /* U+03BC Greek mu */
		{"ms", NS_MS}, {"s", NS_S},
		{"m", NS_M},   {"h", NS_H},
	};
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
		if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0)
			return units[i].ns;
	return 0;
}

/* A transcription of Go's time.ParseDuration, overflow checks included, so
 * that exactly the strings Mixer took for durations are durations here. */
int attr_parse_duration(const char *s, size_t len, int64_t *ns)
{
	const char *p = s, *end = s + len;
	uint64_t d = 0;
	bool neg = false;

	if (p < end && (*p == '-' || *p == '+')) {
		neg = *p == '-';
		p++;
	}
	if (end - p == 1 && *p == '0') {
		*ns = 0;
		return 0;
	}
	if (p == end)
		return -1;
	while (p < end) {
		uint64_t v = 0, f = 0;
		double scale = 1;
		if (!(*p == '.' || (*p >= '0' && *p <= '9')))
			return -1;
		const char *q = p;
		while (p < end && *p >= '0' && *p <= '9') {
			if (v > DUR_LIMIT / 10)
				return -1;
			v = v * 10 + (uint64_t)(*p - '0');
			if (v > DUR_LIMIT)
				return -1;
			p++;
		}
		bool pre = p != q, post = false;
		if (p < end && *p == '.') {
			p++;
			q = p;
			bool over = false;
			while (p < end && *p >= '0' && *p <= '9') {
				if (!over) {
					if (f > (DUR_LIMIT - 1) / 10) {
						over = true;
					} else {
						uint64_t y = f * 10 +
							     (uint64_t)(*p - '0');
						if (y > DUR_LIMIT)
							over = true;
						else {
							f = y;
							scale *= 10;
						}
					}
				}
				p++;
			}
			post = p != q;
		}
		if (!pre && !post)
			return -1;
		q = p;
		while (p < end && *p != '.' && !(*p >= '0' && *p <= '9'))
			p++;
		uint64_t unit = duration_unit(q, (size_t)(p - q));
		if (unit == 0)
			return -1;
		if (v > DUR_LIMIT / unit)
			return -1;
		v *= unit;
		if (f > 0) {
			v += (uint64_t)((double)f * ((double)unit / scale));
			if (v > DUR_LIMIT)
				return -1;
		}
		d += v;
		if (d > DUR_LIMIT)
			return -1;
	}
	if (neg) {
		*ns = (int64_t)(0 - d);
		return 0;
	}
	if (d > DUR_LIMIT - 1)
		return -1;
	*ns = (int64_t)d;
	return 0;
}

/* Go's fmtFrac: the fraction of @v with @prec digits, trailing zeros and a
 * lone dot omitted, written backwards ending at buf[*w]. */
static uint64_t fmt_frac(char *buf, int *w, uint64_t v, int prec)
{
	bool print = false;
	for (int i = 0; i < prec; i++) {
		unsigned digit = (unsigned)(v % 10);
		print = print || digit != 0;
		if (print)
			buf[--*w] = (char)('0' + digit);
		v /= 10;
	}
	if (print)
		buf[--*w] = '.';
	return v;
}

static void fmt_int(char *buf, int *w, uint64_t v)
{
	if (v == 0) {
		buf[--*w] = '0';
		return;
	}
	while (v > 0) {
		buf[--*w] = (char)('0' + v % 10);
		v /= 10;
	}
}

static size_t copy_out(const char *src, size_t n, char *buf, size_t cap)
{
	if (cap == 0)
		return 0;
	if (n >= cap)
		n = cap - 1;
	memcpy(buf, src, n);
	buf[n] = 0;
	return n;
}

size_t attr_utf8_prefix(const void *p, size_t n)
{
	const uint8_t *const b = p, *s = b, *e = s + n;
	while (s < e) {
		/* ASCII, 8 bytes at a time where it can */
		while (e - s >= 8) {
			uint64_t w;
			memcpy(&w, s, 8);
			if (w & 0x8080808080808080ull)
				break;
			s += 8;
		}
		if (s == e)
			break;
		uint8_t c = *s;
		if (c < 0x80) {
			s++;
			continue;
		}
		size_t k; /* continuation bytes */
		uint8_t lo = 0x80, hi = 0xbf; /* the second byte's range */
		if (c >= 0xc2 && c <= 0xdf) {
			k = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 2;
			if (c == 0xe0)
				lo = 0xa0; /* overlong */
			else if (c == 0xed)
				hi = 0x9f; /* surrogates */
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 3;
			if (c == 0xf0)
				lo = 0x90; /* overlong */
			else if (c == 0xf4)
				hi = 0x8f; /* above U+10FFFF */
		} else {
			return (size_t)(s - b);
		}
		if ((size_t)(e - s) <= k || s[1] < lo || s[1] > hi)
			return (size_t)(s - b);
		for (size_t i = 2; i <= k; i++)
			if ((s[i] & 0xc0) != 0x80)
				return (size_t)(s - b);
		s += k + 1;
	}
	return n;
}

bool attr_utf8_check(const void *p, size_t n)
{
	return attr_utf8_prefix(p, n) == n;
}

size_t attr_format_duration(int64_t ns, char *out, size_t cap)
{
	char buf[32];
	int w = sizeof buf;
	uint64_t u = (uint64_t)ns;
	bool neg = ns < 0;
	if (neg)
		u = 0 - u;
	if (u < NS_S) {
		int prec;
		buf[--w] = 's';
		if (u == 0) {
			buf[--w] = '0';
			return copy_out(buf + w, sizeof buf - (size_t)w, out,
					cap);
		} else if (u < NS_US) {
			prec = 0;
			buf[--w] = 'n';
		} else if (u < NS_MS) {
			prec = 3;
			buf[--w] = '\xb5'; /* "µ" is C2 B5 */
			buf[--w] = '\xc2';
		} else {
			prec = 6;
			buf[--w] = 'm';
		}
		u = fmt_frac(buf, &w, u, prec);
		fmt_int(buf, &w, u);
	} else {
		buf[--w] = 's';
		u = fmt_frac(buf, &w, u, 9);
		fmt_int(buf, &w, u % 60);
		u /= 60;
		if (u > 0) {
			buf[--w] = 'm';
			fmt_int(buf, &w, u % 60);
			u /= 60;
			if (u > 0) {
				buf[--w] = 'h';
				fmt_int(buf, &w, u);
			}
		}
	}
	if (neg)
		buf[--w] = '-';
	return copy_out(buf + w, sizeof buf - (size_t)w, out, cap);
}

/* ---- RFC 3339 timestamps ------------------------------------------------ */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil): no timegm(), which depends on TZ state and time_t. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int digits(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* Go's time.Parse(time.RFC3339, s): "2006-01-02T15:04:05Z07:00" with an
 * optional fraction after the seconds; ranges checked as Go does. */
int attr_parse_timestamp(const char *s, size_t len, int64_t *ns)
{
	static const unsigned mdays[12] = {31, 28, 31, 30, 31, 30,
					   31, 31, 30, 31, 30, 31};
	if (len < 20)
		return -1;
	int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
	int h = digits(s + 11, 2), mi = digits(s + 14, 2),
	    se = digits(s + 17, 2);
	if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':')
		return -1;
	if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 ||
	    mi > 59 || se < 0 || se > 59)
		return -1;
	unsigned dim = mdays[mo - 1] + (mo == 2 && is_leap(y));
	if ((unsigned)d > dim)
		return -1;
	size_t i = 19;
	int64_t frac = 0;
	if (i < len && (s[i] == '.' || s[i] == ',')) {
		i++;
		size_t start = i;
		int64_t scale = 100000000;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			frac += (s[i] - '0') * scale;
			scale /= 10;
			i++;
		}
		if (i == start)
			return -1;
	}
	int64_t off = 0;
	if (i < len && s[i] == 'Z') {
		i++;
	} else if (i + 6 == len && (s[i] == '+' || s[i] == '-') &&
		   s[i + 3] == ':') {
		int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
		if (oh < 0 || om < 0 || oh > 23 || om > 59)
			return -1;
		off = (int64_t)(oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
		i += 6;
	} else {
		return -1;
	}
	if (i != len)
		return -1;
	int64_t secs = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 +
		       h * 3600 + mi * 60 + se - off;
	/* int64 nanoseconds span 1677-09-21T00:12:43.145224192Z to
	 * 2262-04-11T23:47:16.854775807Z. Before 1970 the fraction is taken
	 * from the next second, so that the first second's product does not
	 * overflow on its own. */
	int64_t sub = frac;
	if (secs < 0 && sub) {
		secs++;
		sub -= 1000000000;
	}
	if (__builtin_mul_overflow(secs, (int64_t)1000000000, ns) ||
	    __builtin_add_overflow(*ns, sub, ns))
		return -1;
	return 0;
}

/* @ns as "YYYY-MM-DDTHH:MM:SS" (UTC) into @tmp (64 bytes); returns its
 * length and stores the nanoseconds past the second in *@frac. */
static int format_seconds(int64_t ns, char *tmp, int64_t *frac)
{
	int64_t secs = ns / 1000000000;
	*frac = ns % 1000000000;
	if (*frac < 0) {
		*frac += 1000000000;
		secs--;
	}
	int64_t days = secs / 86400, rem = secs % 86400;
	if (rem < 0) {
		rem += 86400;
		days--;
	}
	int64_t y;
	unsigned m, d;
	civil_from_days(days, &y, &m, &d);
	return snprintf(tmp, 64, "%04lld-%02u-%02uT%02d:%02d:%02d",
			(long long)y, m, d, (int)(rem / 3600),
			(int)(rem / 60 % 60), (int)(rem % 60));
}

size_t attr_format_timestamp(int64_t ns, char *buf, size_t cap)
{
	char tmp[64];
	int64_t frac;
	int n = format_seconds(ns, tmp, &frac);
	if (frac) {
		/* RFC3339Nano: nine digits, trailing zeros dropped */
		char f[16];
		snprintf(f, sizeof f, ".%09lld", (long long)frac);
		size_t fl = strlen(f);
		while (f[fl - 1] == '0')
			fl--;
		memcpy(tmp + n, f, fl);
		n += (int)fl;
	}
	tmp[n++] = 'Z';
	return copy_out(tmp, (size_t)n, buf, cap);
}

size_t attr_format_timestamp_us(int64_t ns, char *buf, size_t cap)
{
	char tmp[64];
	int64_t frac;
	int n = format_seconds(ns, tmp, &frac);
	n += snprintf(tmp + n, sizeof tmp - (size_t)n, ".%06lldZ",
		      (long long)(frac / 1000));
	return copy_out(tmp, (size_t)n, buf, cap);
}

size_t attr_format_double(double v, char *buf, size_t cap)
{
	if (v != v)
		return copy_out("NaN", 3, buf, cap);
	if (v == 1.0 / 0.0 || v == -1.0 / 0.0)
		return copy_out(v > 0 ? "+Inf" : "-Inf", 4, buf, cap);
	/* The fewest significant digits that read back as @v ... */
	char e[40];
	for (int prec = 1;; prec++) {
		snprintf(e, sizeof e, "%.*e", prec - 1, v);
		if (prec == 17 || strtod(e, NULL) == v)
			break;
	}
	/* ... then laid out without an exponent: "-d.ddde+XX" -> digits
	 * and the decimal exponent. */
	const char *p = e;
	bool neg = *p == '-';
	p += neg;
	char digits[20];
	size_t nd = 0;
	for (; *p && *p != 'e'; p++)
		if (*p != '.')
			digits[nd++] = *p;
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	int exp = atoi(p + 1);
	char tmp[400];
	size_t n = 0;
	if (neg)
		tmp[n++] = '-';
	if (exp < 0) {
		tmp[n++] = '0';
		tmp[n++] = '.';
		for (int z = exp + 1; z < 0; z++)
			tmp[n++] = '0';
		memcpy(tmp + n, digits, nd);
		n += nd;
	} else {
		for (int i = 0; i <= exp; i++)
			tmp[n++] = (size_t)i < nd ? digits[i] : '0';
		if (nd > (size_t)exp + 1) {
			tmp[n++] = '.';
			memcpy(tmp + n, digits + exp + 1, nd - (size_t)exp - 1);
			n += nd - (size_t)exp - 1;
		}
	}
	return copy_out(tmp, n, buf, cap);
}

size_t attr_format_ip(const struct attr_value *v, char *buf, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = v->ip;
	char tmp[ATTR_IP_TEXT_MAX];
	int n = 0;

	if (v->len == 4 ||
	    (v->len == 16 && !memcmp(p, v4_mapped_prefix, 12))) {
		p += v->len - 4;
		n = snprintf(tmp, sizeof tmp, "%u.%u.%u.%u", p[0], p[1], p[2],
			     p[3]);
		return copy_out(tmp, (size_t)n, buf, cap);
	}
	if (v->len == 0)
		return copy_out("<nil>", 5, buf, cap);
	if (v->len != 16) { /* never decoded; printed as Go would anyway */
		tmp[n++] = '?';
		for (uint32_t i = 0; i < v->len && i < 16; i++) {
			tmp[n++] = hex[p[i] >> 4];
			tmp[n++] = hex[p[i] & 15];
		}
		return copy_out(tmp, (size_t)n, buf, cap);
	}
	/* The first longest run of two or more zero groups becomes "::".
	 * Unlike inet_ntop, no dotted tail for IPv4-compatible addresses. */
	int e0 = -1, e1 = -1;
	for (int i = 0; i < 16; i += 2) {
		int j = i;
		while (j < 16 && !p[j] && !p[j + 1])
			j += 2;
		if (j > i && j - i > e1 - e0) {
			e0 = i;
			e1 = j;
			i = j;
		}
	}
	if (e1 - e0 <= 2)
		e0 = e1 = -1;
	for (int i = 0; i < 16; i += 2) {
		if (i == e0) {
			tmp[n++] = ':';
			tmp[n++] = ':';
			i = e1;
			if (i >= 16)
				break;
		} else if (i > 0) {
			tmp[n++] = ':';
		}
		unsigned g = (unsigned)p[i] << 8 | p[i + 1];
		bool lead = true;
		for (int sh = 12; sh >= 0; sh -= 4) {
			unsigned d = g >> sh & 15;
			if (lead && d == 0 && sh)
				continue;
			lead = false;
			tmp[n++] = hex[d];
		}
	}
	return copy_out(tmp, (size_t)n, buf, cap);
}
