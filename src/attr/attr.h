/*
 * attr -- attribute values, the attribute table a record decodes into, and
 * the vocabulary (name -> slot, type) that expressions compile against.
 *
 * This is the common language of ingest (which fills a table from a record),
 * expr (which reads it), config (which extends the vocabulary from
 * attributemanifests) and agg. It depends on nothing but libc.
 *
 * Slots: the dictionary ids of <mixd/attributes.h> are slots
 * 0..MIXD_ATTR_DICT_COUNT-1; names outside the dictionary (from manifests,
 * or arriving inline on the wire) get the following slots, up to
 * ATTR_MAX_SLOTS. A record's table is therefore an array indexed by slot:
 * evaluation never hashes an attribute name.
 */
#ifndef MIXD_ATTR_H
#define MIXD_ATTR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <mixd/attributes.h>

/** Value types. The wire numbering of enum mixd_type, plus ATTR_NONE. */
enum attr_type {
	ATTR_NONE = 0,
	ATTR_STRING = MIXD_T_STRING,
	ATTR_INT64 = MIXD_T_INT64,
	ATTR_DOUBLE = MIXD_T_DOUBLE,
	ATTR_BOOL = MIXD_T_BOOL,
	ATTR_TIMESTAMP = MIXD_T_TIMESTAMP,
	ATTR_DURATION = MIXD_T_DURATION,
	ATTR_IP = MIXD_T_IP,
	ATTR_BYTES = MIXD_T_BYTES,
	ATTR_STRING_MAP = MIXD_T_STRING_MAP,
	ATTR_EMAIL = MIXD_T_EMAIL,
	ATTR_URI = MIXD_T_URI,
	ATTR_DNS_NAME = MIXD_T_DNS_NAME,
	ATTR_TYPE_COUNT = MIXD_T_COUNT,
};

/** Mixer's name of a type ("STRING", "IP_ADDRESS", ...). */
const char *attr_type_name(enum attr_type t);

/** Parse Mixer's valueType name; returns ATTR_NONE if unknown. */
enum attr_type attr_type_parse(const char *name);

/** True for the string-like types (STRING, EMAIL, URI, DNS_NAME). */
static inline bool attr_type_is_string(enum attr_type t)
{
	return t == ATTR_STRING || t == ATTR_EMAIL || t == ATTR_URI ||
	       t == ATTR_DNS_NAME;
}

/**
 * A value. Strings, bytes and maps point into memory the value does not own
 * (a record in a ring, a config constant, a Marathon snapshot); the owner
 * keeps it alive for as long as the value is used.
 *
 * STRING_MAP values point at the wire encoding (u32 n, then n x (u32 klen,
 * key, u32 vlen, value)), already validated; attr_map_get() reads it.
 * TIMESTAMP is nanoseconds since the epoch, DURATION nanoseconds.
 * IP: len 4 or 16, bytes in ip[].
 */
struct attr_value {
	uint8_t type; /* enum attr_type */
	uint32_t len; /* bytes of s / map / ip */
	union {
		int64_t i;
		double d;
		bool b;
		const char *s;
		const uint8_t *map;
		uint8_t ip[16];
	};
};

/** The little-endian u32 at @p, at any alignment (the map encoding's). */
static inline uint32_t attr_get_u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/**
 * One entry of an encoded string map at *@q (u32 klen, key, u32 vlen,
 * value), bounds-checked against @end; advances *@q past it. False if it
 * does not fit. Every walk over a map reads its entries through this.
 */
static inline __attribute__((always_inline)) bool
attr_map_entry(const uint8_t **q, const uint8_t *end, const char **k,
	       uint32_t *kl, const char **v, uint32_t *vl)
{
	const uint8_t *p = *q;
	if (end - p < 8)
		return false;
	*kl = attr_get_u32le(p);
	if ((size_t)(end - p) - 8 < *kl)
		return false;
	*k = (const char *)p + 4;
	*vl = attr_get_u32le(p + 4 + *kl);
	p += 8 + *kl;
	if ((size_t)(end - p) < *vl)
		return false;
	*v = (const char *)p;
	*q = p + *vl;
	return true;
}

/** Look up @key in an encoded string map value. Returns true and sets *out
 *  (a STRING value pointing into the map) when found. */
bool attr_map_get(const struct attr_value *map, const char *key, size_t klen,
		  struct attr_value *out);

/**
 * Walk an encoded string map: set *@off to 0 before the first call; each
 * call stores the next entry's key and value (STRING values pointing into
 * the map) and returns true, or returns false at the end or at a
 * malformed entry. Bounds-checked at every step.
 */
bool attr_map_next(const struct attr_value *map, size_t *off,
		   struct attr_value *key, struct attr_value *val);

/** Number of entries of an encoded string map value. */
uint32_t attr_map_count(const struct attr_value *map);

/**
 * Validate an encoded string map of @len bytes at @p. Returns the number of
 * bytes it occupies (<= len), or 0 if it is malformed.
 */
size_t attr_map_validate(const uint8_t *p, size_t len);

/** Equality as Mixer's == : same type class and same contents. */
bool attr_value_equal(const struct attr_value *a, const struct attr_value *b);

/** Largest number of slots a table has. */
#define ATTR_MAX_SLOTS 512
#define ATTR_PRESENT_WORDS (ATTR_MAX_SLOTS / 64)

/**
 * The attributes of one record, indexed by slot. Only `present` needs
 * clearing between records.
 */
struct attr_table {
	uint64_t present[ATTR_PRESENT_WORDS];
	struct attr_value v[ATTR_MAX_SLOTS];
};

static inline void attr_table_clear(struct attr_table *t)
{
	for (int i = 0; i < ATTR_PRESENT_WORDS; i++)
		t->present[i] = 0;
}

static inline bool attr_table_has(const struct attr_table *t, unsigned slot)
{
	return (t->present[slot >> 6] >> (slot & 63)) & 1;
}

static inline const struct attr_value *attr_table_get(const struct attr_table *t,
						      unsigned slot)
{
	return attr_table_has(t, slot) ? &t->v[slot] : NULL;
}

static inline void attr_table_set(struct attr_table *t, unsigned slot,
				  const struct attr_value *v)
{
	t->v[slot] = *v;
	t->present[slot >> 6] |= 1ull << (slot & 63);
}

/**
 * A vocabulary: attribute name -> (slot, declared type). Built once per
 * config generation: attr_vocab_create() loads the built-in dictionary, the
 * config adds manifest attributes with attr_vocab_add(). Read-only after
 * that, so shards share it without locks.
 */
struct attr_vocab;

/** A vocabulary holding the built-in dictionary. NULL on ENOMEM. */
struct attr_vocab *attr_vocab_create(void);

/** Free; NULL is fine. */
void attr_vocab_destroy(struct attr_vocab *v);

/**
 * Declare @name with type @t. A name already declared with the same type is
 * a no-op; with another type it fails. Returns the slot (>= 0), -EEXIST on a
 * type conflict (*@existing set to the earlier type), -ENOSPC when slots ran
 * out, -ENOMEM.
 */
int attr_vocab_add(struct attr_vocab *v, const char *name, enum attr_type t,
		   enum attr_type *existing);

/** Slot of @name (length @len), or -1. Hashes the name: not for hot paths
 *  except for inline names, which have no better key. */
int attr_vocab_find(const struct attr_vocab *v, const char *name, size_t len);

/** Declared type of @slot. */
enum attr_type attr_vocab_type(const struct attr_vocab *v, unsigned slot);

/** Name of @slot. */
const char *attr_vocab_name(const struct attr_vocab *v, unsigned slot);

/** Number of slots in use. */
unsigned attr_vocab_count(const struct attr_vocab *v);

/**
 * Parse a Go duration ("15ms", "1h30m", "-1.5s", "0") into nanoseconds.
 * Returns 0 on success, -1 if @s is not a duration.
 */
int attr_parse_duration(const char *s, size_t len, int64_t *ns);

/**
 * Format @ns as Go's time.Duration.String() does ("1.5s", "15ms", "0s",
 * "1h30m0s"). Returns the length written (< @cap), NUL-terminated.
 */
size_t attr_format_duration(int64_t ns, char *buf, size_t cap);

/** attr_utf8_valid() past its ASCII test: the whole check. */
bool attr_utf8_check(const void *p, size_t n);

/** How many of the @n bytes at @p are well-formed UTF-8 before the first
 *  that is not (@n when all are): where a bad byte sequence starts. */
size_t attr_utf8_prefix(const void *p, size_t n);

/** Are the @n bytes at @p well-formed UTF-8 (no overlong forms, no
 *  surrogates, nothing above U+10FFFF)? Prometheus refuses any other
 *  label value, and with it the whole scrape. Inline for the usual case,
 *  a short ASCII label value: a few loads, no byte loop. */
static inline bool attr_utf8_valid(const void *p, size_t n)
{
	const uint8_t *s = p;
	uint64_t acc = 0, w;
	uint32_t h;
	if (n >= 8) {
		for (size_t i = 0; i + 8 <= n; i += 8) {
			memcpy(&w, s + i, 8);
			acc |= w;
		}
		memcpy(&w, s + n - 8, 8);
		acc |= w;
	} else if (n >= 4) {
		memcpy(&h, s, 4);
		acc = h;
		memcpy(&h, s + n - 4, 4);
		acc |= h;
	} else {
		for (size_t i = 0; i < n; i++)
			acc |= s[i];
	}
	return !(acc & 0x8080808080808080ull) || attr_utf8_check(p, n);
}

/** Parse an RFC 3339 timestamp into nanoseconds since the epoch. 0 / -1. */
int attr_parse_timestamp(const char *s, size_t len, int64_t *ns);

/** Format @ns as RFC 3339 with nanoseconds trimmed as Go does. */
size_t attr_format_timestamp(int64_t ns, char *buf, size_t cap);

/*
 * Label values as Mixer's adapters wrote them (adapter.Stringify, which
 * its prometheus adapter used for every label). Each writes at most
 * @cap - 1 bytes and a NUL, and returns the length.
 */

/** A TIMESTAMP: UTC, microseconds always six digits:
 *  "2019-06-01T10:30:00.500000Z". */
size_t attr_format_timestamp_us(int64_t ns, char *buf, size_t cap);

/** A DOUBLE as Go's FormatFloat(v, 'f', -1, 64): the fewest digits that
 *  read back exactly, never an exponent ("0.00001", "1000000000000000");
 *  "NaN", "+Inf", "-Inf". At most 330 bytes. */
size_t attr_format_double(double v, char *buf, size_t cap);

/** Longest text attr_format_ip() writes, NUL included. */
#define ATTR_IP_TEXT_MAX 48

/** An IP_ADDRESS as Go's net.IP.String(): 4 bytes, or 16 of the IPv4-mapped
 *  form ::ffff:a.b.c.d, in dots ("10.0.0.1"); other 16-byte addresses in
 *  RFC 5952 form, IPv4-compatible ones included ("fd00::1", "::102:304").
 *  Mixer's adapters printed addresses this way in labels and log entries. */
size_t attr_format_ip(const struct attr_value *v, char *buf, size_t cap);

#endif /* MIXD_ATTR_H */
