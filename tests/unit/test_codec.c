/*
 * test_codec -- record encoding (wire.h, as libmixd writes it) and decoding
 * (ingest_decode): a round trip of every type, inline names, and every
 * reason a malformed record is rejected for; the keyed decoder's key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "attr/attr.h"
#include "ingest/ingest.h"
#include "ingest/wire.h"

static struct attr_vocab *vocab;
static struct attr_table table;
static uint8_t buf[4096];

static int setup(void **state)
{
	vocab = attr_vocab_create();
	return vocab ? 0 : -1;
}

static int teardown(void **state)
{
	attr_vocab_destroy(vocab);
	return 0;
}

static enum ingest_reject decode(const struct wire_writer *w)
{
	attr_table_clear(&table);
	return ingest_decode(w->buf, w->len, vocab, &table);
}

static void every_type_round_trips(void **state)
{
	/* DOUBLE, BYTES, EMAIL and URI have no dictionary attribute: names
	 * declared with them, as a config's manifest declares them. */
	struct attr_vocab *v2 = attr_vocab_create();
	assert_non_null(v2);
	int ratio = attr_vocab_add(v2, "x.ratio", ATTR_DOUBLE, NULL);
	int blob = attr_vocab_add(v2, "x.blob", ATTR_BYTES, NULL);
	int mail = attr_vocab_add(v2, "x.mail", ATTR_EMAIL, NULL);
	int uri = attr_vocab_add(v2, "x.uri", ATTR_URI, NULL);
	assert_true(ratio >= 0 && blob >= 0 && mail >= 0 && uri >= 0);
	struct wire_writer w;
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_SOURCE_UID, MIXD_T_STRING, NULL, 0);
	wire_bytes(&w, "kubernetes://a.b", 16);
	wire_attr(&w, MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, NULL, 0);
	wire_u64(&w, (uint64_t)-503);
	wire_attr(&w, MIXD_ATTR_RESPONSE_DURATION, MIXD_T_DURATION, NULL, 0);
	wire_u64(&w, 15000000);
	wire_attr(&w, MIXD_ATTR_REQUEST_TIME, MIXD_T_TIMESTAMP, NULL, 0);
	wire_u64(&w, 1700000000123456789ull);
	wire_attr(&w, MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL, NULL, 0);
	wire_u8(&w, 1);
	uint8_t v4[4] = {10, 1, 2, 3};
	wire_attr(&w, MIXD_ATTR_SOURCE_IP, MIXD_T_IP, NULL, 0);
	wire_ip(&w, v4, 4);
	uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
	wire_attr(&w, MIXD_ATTR_DESTINATION_IP, MIXD_T_IP, NULL, 0);
	wire_ip(&w, v6, 16);
	wire_attr(&w, MIXD_ATTR_DESTINATION_LABELS, MIXD_T_STRING_MAP, NULL, 0);
	wire_u32(&w, 2);
	wire_bytes(&w, "istio", 5);
	wire_bytes(&w, "reviews", 7);
	wire_bytes(&w, "version", 7);
	wire_bytes(&w, "v2", 2);
	double d = 2.5;
	uint64_t bits;
	memcpy(&bits, &d, 8);
	wire_attr(&w, MIXD_ATTR_INLINE, MIXD_T_DOUBLE, "x.ratio", 7);
	wire_u64(&w, bits);
	/* bytes are counted, not NUL-terminated: NULs inside and at the end */
	wire_attr(&w, MIXD_ATTR_INLINE, MIXD_T_BYTES, "x.blob", 6);
	wire_bytes(&w, "\0\1\0\377\0", 5);
	wire_attr(&w, MIXD_ATTR_INLINE, MIXD_T_EMAIL, "x.mail", 6);
	wire_bytes(&w, "ops@example.com", 15);
	wire_attr(&w, MIXD_ATTR_INLINE, MIXD_T_URI, "x.uri", 5);
	wire_bytes(&w, "https://a/b?c=d", 15);
	/* a name the vocabulary does not know decodes fine (and is skipped) */
	wire_attr(&w, MIXD_ATTR_INLINE, MIXD_T_BYTES, "x.unknown", 9);
	wire_bytes(&w, "zz", 2);
	wire_attr(&w, MIXD_ATTR_DESTINATION_SERVICE_HOST, MIXD_T_DNS_NAME, NULL, 0);
	wire_bytes(&w, "reviews.default.svc", 19);
	/* a URI where the dictionary declares a STRING */
	wire_attr(&w, MIXD_ATTR_REQUEST_PATH, MIXD_T_URI, NULL, 0);
	wire_bytes(&w, "/reviews/0", 10);
	assert_false(w.overflow);

	attr_table_clear(&table);
	assert_int_equal(ingest_decode(w.buf, w.len, v2, &table),
			 INGEST_REJ_NONE);
	const struct attr_value *v;
	v = attr_table_get(&table, MIXD_ATTR_SOURCE_UID);
	assert_non_null(v);
	assert_int_equal(v->type, ATTR_STRING);
	assert_int_equal(v->len, 16);
	assert_memory_equal(v->s, "kubernetes://a.b", 16);
	v = attr_table_get(&table, MIXD_ATTR_RESPONSE_CODE);
	assert_int_equal(v->type, ATTR_INT64);
	assert_int_equal(v->i, -503);
	v = attr_table_get(&table, MIXD_ATTR_RESPONSE_DURATION);
	assert_int_equal(v->type, ATTR_DURATION);
	assert_int_equal(v->i, 15000000);
	v = attr_table_get(&table, MIXD_ATTR_REQUEST_TIME);
	assert_int_equal(v->type, ATTR_TIMESTAMP);
	assert_true(v->i == 1700000000123456789ll);
	v = attr_table_get(&table, MIXD_ATTR_CONNECTION_MTLS);
	assert_int_equal(v->type, ATTR_BOOL);
	assert_true(v->b);
	v = attr_table_get(&table, MIXD_ATTR_SOURCE_IP);
	assert_int_equal(v->len, 4);
	assert_memory_equal(v->ip, v4, 4);
	v = attr_table_get(&table, MIXD_ATTR_DESTINATION_IP);
	assert_int_equal(v->len, 16);
	assert_memory_equal(v->ip, v6, 16);
	v = attr_table_get(&table, MIXD_ATTR_DESTINATION_LABELS);
	assert_int_equal(v->type, ATTR_STRING_MAP);
	assert_int_equal(attr_map_count(v), 2);
	struct attr_value e;
	assert_true(attr_map_get(v, "version", 7, &e));
	assert_int_equal(e.len, 2);
	assert_memory_equal(e.s, "v2", 2);
	assert_false(attr_map_get(v, "app", 3, &e));
	v = attr_table_get(&table, (unsigned)ratio);
	assert_non_null(v);
	assert_int_equal(v->type, ATTR_DOUBLE);
	assert_true(v->d == 2.5);
	v = attr_table_get(&table, (unsigned)blob);
	assert_non_null(v);
	assert_int_equal(v->type, ATTR_BYTES);
	assert_int_equal(v->len, 5);
	assert_memory_equal(v->s, "\0\1\0\377\0", 5);
	v = attr_table_get(&table, (unsigned)mail);
	assert_non_null(v);
	assert_int_equal(v->type, ATTR_EMAIL);
	assert_int_equal(v->len, 15);
	assert_memory_equal(v->s, "ops@example.com", 15);
	v = attr_table_get(&table, (unsigned)uri);
	assert_non_null(v);
	assert_int_equal(v->type, ATTR_URI);
	assert_int_equal(v->len, 15);
	assert_memory_equal(v->s, "https://a/b?c=d", 15);
	/* DNS_NAME and URI on the wire are kept as the declared STRING. */
	v = attr_table_get(&table, MIXD_ATTR_DESTINATION_SERVICE_HOST);
	assert_int_equal(v->type, ATTR_STRING);
	assert_int_equal(v->len, 19);
	assert_memory_equal(v->s, "reviews.default.svc", 19);
	v = attr_table_get(&table, MIXD_ATTR_REQUEST_PATH);
	assert_int_equal(v->type, ATTR_STRING);
	assert_int_equal(v->len, 10);
	assert_memory_equal(v->s, "/reviews/0", 10);
	assert_null(attr_table_get(&table, MIXD_ATTR_SOURCE_NAME));
	attr_vocab_destroy(v2);
}

static void inline_names_known_to_the_vocabulary_fill_their_slot(void **state)
{
	struct attr_vocab *v2 = attr_vocab_create();
	int slot = attr_vocab_add(v2, "x.ratio", ATTR_DOUBLE, NULL);
	assert_true(slot >= MIXD_ATTR_DICT_COUNT);
	struct wire_writer w;
	wire_init(&w, buf, sizeof buf);
	double d = 0.125;
	uint64_t bits;
	memcpy(&bits, &d, 8);
	wire_attr(&w, MIXD_ATTR_INLINE, MIXD_T_DOUBLE, "x.ratio", 7);
	wire_u64(&w, bits);
	attr_table_clear(&table);
	assert_int_equal(ingest_decode(w.buf, w.len, v2, &table), INGEST_REJ_NONE);
	const struct attr_value *v = attr_table_get(&table, (unsigned)slot);
	assert_non_null(v);
	assert_true(v->d == 0.125);

	/* A mesos output ($out.*) is in a vocabulary, but no record may
	 * carry it: the name is unknown, and dropped. */
	int out = attr_vocab_add(v2, "$out.source_labels", ATTR_STRING, NULL);
	assert_true(out >= 0);
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_INLINE, MIXD_T_STRING, "$out.source_labels",
		  18);
	wire_bytes(&w, "forged", 6);
	attr_table_clear(&table);
	assert_int_equal(ingest_decode(w.buf, w.len, v2, &table), INGEST_REJ_NONE);
	assert_null(attr_table_get(&table, (unsigned)out));

	/* The same name with another type is a type error. */
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_INLINE, MIXD_T_STRING, "x.ratio", 7);
	wire_bytes(&w, "half", 4);
	attr_table_clear(&table);
	assert_int_equal(ingest_decode(w.buf, w.len, v2, &table), INGEST_REJ_TYPE);
	attr_vocab_destroy(v2);
}

static void empty_record_is_valid(void **state)
{
	struct wire_writer w;
	wire_init(&w, buf, sizeof buf);
	assert_int_equal(decode(&w), INGEST_REJ_NONE);
}

/* Each malformed record, with the reason it must be rejected for. */
static void malformed_records_are_rejected_with_a_reason(void **state)
{
	struct wire_writer w;
	uint16_t id;

	/* Unknown dictionary id. */
	wire_init(&w, buf, sizeof buf);
	id = MIXD_ATTR_DICT_COUNT;
	wire_attr(&w, id, MIXD_T_STRING, NULL, 0);
	wire_bytes(&w, "x", 1);
	assert_int_equal(decode(&w), INGEST_REJ_ATTRIBUTE);

	/* Wrong type for a dictionary attribute. */
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_RESPONSE_CODE, MIXD_T_STRING, NULL, 0);
	wire_bytes(&w, "200", 3);
	assert_int_equal(decode(&w), INGEST_REJ_TYPE);

	/* Type code out of range. */
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_RESPONSE_CODE, 99, NULL, 0);
	wire_u64(&w, 1);
	assert_int_equal(decode(&w), INGEST_REJ_TYPE);

	/* String longer than the record. */
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_SOURCE_UID, MIXD_T_STRING, NULL, 0);
	wire_u32(&w, 1000);
	wire_bytes(&w, "short", 5);
	assert_int_equal(decode(&w), INGEST_REJ_TRUNCATED);

	/* INT64 cut short. */
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, NULL, 0);
	wire_u32(&w, 200);
	assert_int_equal(decode(&w), INGEST_REJ_TRUNCATED);

	/* Header cut short. */
	wire_init(&w, buf, sizeof buf);
	wire_u8(&w, 1);
	assert_int_equal(decode(&w), INGEST_REJ_TRUNCATED);

	/* IP of length 5. */
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_SOURCE_IP, MIXD_T_IP, NULL, 0);
	wire_u8(&w, 5);
	wire_bytes(&w, "abcde", 5);
	assert_int_equal(decode(&w), INGEST_REJ_VALUE);

	/* BOOL of 2. */
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL, NULL, 0);
	wire_u8(&w, 2);
	assert_int_equal(decode(&w), INGEST_REJ_VALUE);

	/* A string map claiming more entries than it has. */
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_SOURCE_LABELS, MIXD_T_STRING_MAP, NULL, 0);
	wire_u32(&w, 3);
	wire_bytes(&w, "k", 1);
	wire_bytes(&w, "v", 1);
	assert_int_equal(decode(&w), INGEST_REJ_VALUE);

	/* A string map whose value runs past the end. */
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, MIXD_ATTR_SOURCE_LABELS, MIXD_T_STRING_MAP, NULL, 0);
	wire_u32(&w, 1);
	wire_bytes(&w, "k", 1);
	wire_u32(&w, 0xFFFFFFF0u);
	assert_int_equal(decode(&w), INGEST_REJ_VALUE);

	/* An inline name of length zero, and one past the end. */
	wire_init(&w, buf, sizeof buf);
	id = MIXD_ATTR_INLINE;
	wire_attr(&w, id, MIXD_T_STRING, "", 0);
	wire_bytes(&w, "x", 1);
	assert_int_equal(decode(&w), INGEST_REJ_ATTRIBUTE);
	wire_init(&w, buf, sizeof buf);
	wire_attr(&w, id, MIXD_T_STRING, "abc", 3);
	w.len -= 2; /* cut into the name */
	assert_int_equal(decode(&w), INGEST_REJ_TRUNCATED);
}

/*
 * ingest_decode_keyed(): the key is exactly the chosen attributes'
 * encodings, in record order, whatever path decoded them (the fast loop,
 * decode_one() for inline names, maps and stand-in types, the last bytes
 * of a record); the table is ingest_decode()'s; so are the reject reasons.
 */
struct keyed_rec {
	uint8_t buf[1024];
	uint8_t key[1024];
	size_t len, klen;
};

static void put_chosen(struct keyed_rec *r, const struct wire_writer *w,
		       size_t from)
{
	memcpy(r->key + r->klen, w->buf + from, w->len - from);
	r->klen += w->len - from;
}

static void keyed_record(struct keyed_rec *r, int ratio_slot, const char *uid,
			 int64_t size, int64_t code)
{
	struct wire_writer w;
	size_t at;
	uint8_t v4[4] = {10, 1, 2, 3}, v6[16] = {0x20, 0x01, [15] = 7};
	double d = 0.5;
	uint64_t bits;
	memcpy(&bits, &d, 8);
	wire_init(&w, r->buf, sizeof r->buf);
	r->klen = 0;

	at = w.len; /* chosen */
	wire_attr(&w, MIXD_ATTR_SOURCE_UID, MIXD_T_STRING, NULL, 0);
	wire_bytes(&w, uid, strlen(uid));
	put_chosen(r, &w, at);
	wire_attr(&w, MIXD_ATTR_REQUEST_SIZE, MIXD_T_INT64, NULL, 0);
	wire_u64(&w, (uint64_t)size);
	at = w.len; /* chosen, and adjacent to the next */
	wire_attr(&w, MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, NULL, 0);
	wire_u64(&w, (uint64_t)code);
	wire_attr(&w, MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL, NULL, 0);
	wire_u8(&w, 1);
	wire_attr(&w, MIXD_ATTR_SOURCE_IP, MIXD_T_IP, NULL, 0);
	wire_ip(&w, v4, 4);
	wire_attr(&w, MIXD_ATTR_DESTINATION_IP, MIXD_T_IP, NULL, 0);
	wire_ip(&w, v6, 16);
	put_chosen(r, &w, at);
	wire_attr(&w, MIXD_ATTR_REQUEST_PATH, MIXD_T_STRING, NULL, 0);
	wire_bytes(&w, "/a/b", 4);
	at = w.len; /* a map and a stand-in type: decode_one() */
	wire_attr(&w, MIXD_ATTR_DESTINATION_LABELS, MIXD_T_STRING_MAP, NULL, 0);
	wire_u32(&w, 1);
	wire_bytes(&w, "app", 3);
	wire_bytes(&w, "rv", 2);
	wire_attr(&w, MIXD_ATTR_DESTINATION_SERVICE_HOST, MIXD_T_DNS_NAME, NULL,
		  0);
	wire_bytes(&w, "rv.default", 10);
	put_chosen(r, &w, at);
	/* inline names: one declared (chosen), one nobody declared */
	wire_attr(&w, MIXD_ATTR_INLINE, MIXD_T_STRING, "x.other", 7);
	wire_bytes(&w, "zz", 2);
	at = w.len;
	wire_attr(&w, MIXD_ATTR_INLINE, MIXD_T_DOUBLE, "x.ratio", 7);
	wire_u64(&w, bits);
	if (ratio_slot >= 0)
		put_chosen(r, &w, at);
	at = w.len; /* a record's last four bytes: decode_one() again */
	wire_attr(&w, MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL, NULL, 0);
	wire_u8(&w, 0);
	put_chosen(r, &w, at);
	assert_false(w.overflow);
	r->len = w.len;
}

/* Record @r decodes, keyed by @ks, to the key @want (@n bytes). */
static void key_is(const struct keyed_rec *r, const struct attr_vocab *vc,
		   const struct ingest_keyspec *ks, const uint8_t *want,
		   size_t n)
{
	static uint8_t kb[INGEST_KEY_ROOM];
	struct ingest_key k = {.buf = kb};
	attr_table_clear(&table);
	assert_int_equal(ingest_decode_keyed(r->buf, r->len, vc, &table, ks, &k),
			 INGEST_REJ_NONE);
	assert_int_equal(k.len, n);
	assert_memory_equal(kb, want, n);
}

static void keyed_decoding_copies_the_chosen_encodings(void **state)
{
	struct attr_vocab *v2 = attr_vocab_create();
	int ratio = attr_vocab_add(v2, "x.ratio", ATTR_DOUBLE, NULL);
	assert_true(ratio >= MIXD_ATTR_DICT_COUNT);
	uint64_t mask[ATTR_PRESENT_WORDS] = {0};
	const int chosen[] = {MIXD_ATTR_SOURCE_UID, MIXD_ATTR_RESPONSE_CODE,
			      MIXD_ATTR_CONNECTION_MTLS, MIXD_ATTR_SOURCE_IP,
			      MIXD_ATTR_DESTINATION_IP,
			      MIXD_ATTR_DESTINATION_LABELS,
			      MIXD_ATTR_DESTINATION_SERVICE_HOST, ratio};
	for (size_t i = 0; i < sizeof chosen / sizeof chosen[0]; i++)
		mask[chosen[i] / 64] |= 1ull << (chosen[i] % 64);
	struct ingest_keyspec ks;
	ingest_keyspec_init(&ks, mask);
	static struct keyed_rec a, b, c;
	static uint8_t kb[INGEST_KEY_ROOM];
	static struct attr_table plain;
	struct ingest_key k = {.buf = kb};

	keyed_record(&a, ratio, "kubernetes://pp", 100, 200);
	key_is(&a, v2, &ks, a.key, a.klen);
	attr_table_clear(&plain);
	assert_int_equal(ingest_decode(a.buf, a.len, v2, &plain),
			 INGEST_REJ_NONE);
	assert_memory_equal(plain.present, table.present, sizeof plain.present);
	for (unsigned s = 0; s < ATTR_MAX_SLOTS; s++)
		if (attr_table_get(&plain, s))
			assert_memory_equal(&plain.v[s], &table.v[s],
					    sizeof plain.v[s]);

	/* Another value of an attribute not chosen: the same key. */
	keyed_record(&b, ratio, "kubernetes://pp", 7777, 200);
	key_is(&b, v2, &ks, a.key, a.klen);
	/* Another value of a chosen one: another key. */
	keyed_record(&c, ratio, "kubernetes://pp", 100, 503);
	key_is(&c, v2, &ks, c.key, c.klen);
	assert_memory_not_equal(c.key, a.key, a.klen);

	/* Every prefix and every corrupted byte: the same verdict as
	 * ingest_decode(), and a key never longer than the record. */
	for (size_t n = 0; n <= a.len; n++) {
		attr_table_clear(&plain);
		attr_table_clear(&table);
		assert_int_equal(ingest_decode_keyed(a.buf, n, v2, &table, &ks, &k),
				 ingest_decode(a.buf, n, v2, &plain));
		assert_true(k.len <= n);
	}
	for (size_t i = 0; i < a.len; i++) {
		uint8_t was = a.buf[i];
		a.buf[i] = (uint8_t)(was + 0x41);
		attr_table_clear(&plain);
		attr_table_clear(&table);
		assert_int_equal(ingest_decode_keyed(a.buf, a.len, v2, &table, &ks,
						     &k),
				 ingest_decode(a.buf, a.len, v2, &plain));
		assert_true(k.len <= a.len);
		a.buf[i] = was;
	}
	attr_vocab_destroy(v2);
}

/* ---- layout records ---- */

/* A layout of every kind a layout takes: two words, a bool, an IP, a DNS
 * name and two strings, in group order. */
static const struct mixd_layout_field lay_fields[] = {
	{MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, 0},
	{MIXD_ATTR_RESPONSE_DURATION, MIXD_T_DURATION, 0},
	{MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL, 0},
	{MIXD_ATTR_SOURCE_IP, MIXD_T_IP, 0},
	{MIXD_ATTR_DESTINATION_SERVICE_HOST, MIXD_T_STRING, 0},
	{MIXD_ATTR_REQUEST_PATH, MIXD_T_STRING, 0},
	{MIXD_ATTR_SOURCE_UID, MIXD_T_STRING, 0},
};
#define LAY_N (sizeof lay_fields / sizeof lay_fields[0])

static struct mixd_layout raw_layout(void)
{
	struct mixd_layout raw = {.n = LAY_N};
	memcpy(raw.f, lay_fields, sizeof lay_fields);
	return raw;
}

/* Record @i of the layout, both ways: @lrec as values alone, @hrec with a
 * header before each value (as mixd_report() writes it). */
static void layout_pair(unsigned i, uint8_t *lrec, uint32_t *llen,
			struct wire_writer *h)
{
	static const char *const hosts[] = {"reviews", "", "ratings.default"};
	const char *host = hosts[i % 3], *uid = "kubernetes://pp-v1.1f0c";
	char path[300];
	size_t pl = i * 37 % sizeof path;
	memset(path, 'a' + (int)(i % 26), pl);
	uint8_t ip4[4] = {10, 0, 0, (uint8_t)i}, ip6[16] = {0x20, 1, [15] = 9};
	const uint8_t *ip = i & 1 ? ip6 : ip4;
	uint16_t ipl = i & 1 ? 16 : 4;
	int64_t code = 200 + i, dur = (int64_t)i * 1000000;
	uint8_t mtls = (uint8_t)(i & 1);

	uint8_t *o = lrec;
	uint32_t hd = MIXD_ATTR_LAYOUT;
	memcpy(o, &hd, 4), o += 4;
	memcpy(o, &code, 8), o += 8;
	memcpy(o, &dur, 8), o += 8;
	*o++ = mtls;
	uint16_t lens[4] = {ipl, (uint16_t)strlen(host), (uint16_t)pl,
			    (uint16_t)strlen(uid)};
	memcpy(o, lens, sizeof lens), o += sizeof lens;
	memcpy(o, ip, ipl), o += ipl;
	memcpy(o, host, lens[1]), o += lens[1];
	memcpy(o, path, pl), o += pl;
	memcpy(o, uid, lens[3]), o += lens[3];
	*llen = (uint32_t)(o - lrec);

	wire_init(h, buf, sizeof buf);
	wire_attr(h, MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, NULL, 0);
	wire_u64(h, (uint64_t)code);
	wire_attr(h, MIXD_ATTR_RESPONSE_DURATION, MIXD_T_DURATION, NULL, 0);
	wire_u64(h, (uint64_t)dur);
	wire_attr(h, MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL, NULL, 0);
	wire_u8(h, mtls);
	wire_attr(h, MIXD_ATTR_SOURCE_IP, MIXD_T_IP, NULL, 0);
	wire_ip(h, ip, ipl);
	wire_attr(h, MIXD_ATTR_DESTINATION_SERVICE_HOST, MIXD_T_STRING, NULL, 0);
	wire_bytes(h, host, strlen(host));
	wire_attr(h, MIXD_ATTR_REQUEST_PATH, MIXD_T_STRING, NULL, 0);
	wire_bytes(h, path, pl);
	wire_attr(h, MIXD_ATTR_SOURCE_UID, MIXD_T_STRING, NULL, 0);
	wire_bytes(h, uid, strlen(uid));
	assert_false(h->overflow);
}

static void same_tables(const struct attr_table *a, const struct attr_table *b)
{
	assert_memory_equal(a->present, b->present, sizeof a->present);
	for (unsigned s = 0; s < ATTR_MAX_SLOTS; s++) {
		if (!attr_table_has(a, s))
			continue;
		const struct attr_value *x = &a->v[s], *y = &b->v[s];
		assert_int_equal(x->type, y->type);
		assert_int_equal(x->len, y->len);
		if (attr_type_is_string((enum attr_type)x->type))
			assert_memory_equal(x->s, y->s, x->len);
		else if (x->type == ATTR_IP)
			assert_memory_equal(x->ip, y->ip, x->len);
		else if (x->type == ATTR_BOOL)
			assert_int_equal(x->b, y->b);
		else
			assert_int_equal(x->i, y->i);
	}
}

static void a_layout_record_decodes_as_its_headered_form(void **state)
{
	(void)state;
	struct mixd_layout raw = raw_layout();
	struct ingest_layout lay;
	assert_true(ingest_layout_load(&lay, &raw));
	assert_int_equal(lay.nword, 2);
	assert_int_equal(lay.nbool, 1);
	assert_int_equal(lay.nip, 1);
	/* keys over two choices: every field; host, mtls and the IP */
	uint64_t all[ATTR_PRESENT_WORDS] = {0}, some[ATTR_PRESENT_WORDS] = {0};
	for (size_t f = 0; f < LAY_N; f++)
		all[lay_fields[f].id / 64] |= 1ull << (lay_fields[f].id % 64);
	const unsigned pick[] = {MIXD_ATTR_DESTINATION_SERVICE_HOST,
				 MIXD_ATTR_CONNECTION_MTLS, MIXD_ATTR_SOURCE_IP};
	for (size_t f = 0; f < 3; f++)
		some[pick[f] / 64] |= 1ull << (pick[f] % 64);
	struct ingest_keyspec ks[2];
	ingest_keyspec_init(&ks[0], all);
	ingest_keyspec_init(&ks[1], some);

	static uint8_t lrec[1024], k1[INGEST_KEY_ROOM], k2[INGEST_KEY_ROOM];
	static struct attr_table lt;
	for (unsigned i = 0; i < 60; i++) {
		uint32_t llen;
		struct wire_writer h;
		layout_pair(i, lrec, &llen, &h);
		attr_table_clear(&lt);
		assert_int_equal(ingest_decode_layout(&lay, lrec, llen, &lt, NULL,
						      NULL),
				 INGEST_REJ_NONE);
		assert_int_equal(decode(&h), INGEST_REJ_NONE);
		same_tables(&lt, &table);
		for (int c = 0; c < 2; c++) {
			struct ingest_key a = {.buf = k1}, b = {.buf = k2};
			attr_table_clear(&lt);
			assert_int_equal(ingest_decode_layout(&lay, lrec, llen,
							      &lt, &ks[c], &a),
					 INGEST_REJ_NONE);
			attr_table_clear(&table);
			assert_int_equal(ingest_decode_keyed(h.buf, h.len, vocab,
							     &table, &ks[c], &b),
					 INGEST_REJ_NONE);
			assert_int_equal(a.len, b.len);
			assert_memory_equal(k1, k2, a.len);
		}
	}
}

static void malformed_layouts_and_layout_records_are_rejected(void **state)
{
	(void)state;
	struct ingest_layout lay;
	struct mixd_layout raw = raw_layout();
	raw.n = 0;
	assert_false(ingest_layout_load(&lay, &raw));
	raw.n = MIXD_LAYOUT_FIELDS + 1;
	assert_false(ingest_layout_load(&lay, &raw));
	/* an id outside the dictionary, a type not the declared one, a map,
	 * a repeat, a group out of order, a padding byte */
	const struct {
		unsigned at;
		struct mixd_layout_field f;
	} bad[] = {
		{0, {MIXD_ATTR_DICT_COUNT, MIXD_T_INT64, 0}},
		{0, {MIXD_ATTR_RESPONSE_CODE, MIXD_T_DOUBLE, 0}},
		{6, {MIXD_ATTR_REQUEST_HEADERS, MIXD_T_STRING_MAP, 0}},
		{6, {MIXD_ATTR_REQUEST_PATH, MIXD_T_STRING, 0}},
		{1, {MIXD_ATTR_SOURCE_UID, MIXD_T_STRING, 0}},
		{2, {MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL, 1}},
	};
	for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
		raw = raw_layout();
		raw.f[bad[b].at] = bad[b].f;
		assert_false(ingest_layout_load(&lay, &raw));
	}
	raw = raw_layout();
	assert_true(ingest_layout_load(&lay, &raw));

	static uint8_t rec[1024];
	uint32_t len;
	struct wire_writer h;
	layout_pair(2, rec, &len, &h); /* IPv4, host "ratings.default" */
	static struct attr_table t;
	const uint32_t bool_at = 4 + 16, len_at = bool_at + 1;
#define REJECTS(why, l)                                                     	do {                                                                		attr_table_clear(&t);                                       		assert_int_equal(ingest_decode_layout(&lay, rec, (l), &t,   						      NULL, NULL),          				 (why));                                    	} while (0)
	REJECTS(INGEST_REJ_NONE, len);
	REJECTS(INGEST_REJ_TRUNCATED, len - 1);
	REJECTS(INGEST_REJ_TRUNCATED, len + 1); /* a byte after the values */
	REJECTS(INGEST_REJ_TRUNCATED, 10);
	rec[3] = 1; /* the reserved header byte */
	REJECTS(INGEST_REJ_ATTRIBUTE, len);
	rec[3] = 0;
	rec[bool_at] = 2;
	REJECTS(INGEST_REJ_VALUE, len);
	rec[bool_at] = 1;
	uint16_t l5 = 5;
	memcpy(rec + len_at, &l5, 2); /* the IP's length: 5 */
	REJECTS(INGEST_REJ_VALUE, len + 1);
	/* neither 4 nor 16, and longer than the record: its value first, as
	 * the headered decoder */
	uint16_t big = 60000, four = 4;
	memcpy(rec + len_at, &big, 2);
	REJECTS(INGEST_REJ_VALUE, len);
	memcpy(rec + len_at, &four, 2);
	memcpy(rec + len_at + 2, &big, 2); /* the first string's */
	REJECTS(INGEST_REJ_TRUNCATED, len);
#undef REJECTS
}

static void writer_refuses_to_overflow(void **state)
{
	struct wire_writer w;
	uint8_t small[8];
	wire_init(&w, small, sizeof small);
	wire_attr(&w, MIXD_ATTR_SOURCE_UID, MIXD_T_STRING, NULL, 0);
	wire_bytes(&w, "too long for eight bytes", 24);
	assert_true(w.overflow);
	assert_true(w.len <= sizeof small);
	uint8_t ip3[3] = {1, 2, 3};
	wire_init(&w, buf, sizeof buf);
	wire_ip(&w, ip3, 3);
	assert_true(w.overflow);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_type_round_trips),
		cmocka_unit_test(inline_names_known_to_the_vocabulary_fill_their_slot),
		cmocka_unit_test(empty_record_is_valid),
		cmocka_unit_test(malformed_records_are_rejected_with_a_reason),
		cmocka_unit_test(keyed_decoding_copies_the_chosen_encodings),
		cmocka_unit_test(a_layout_record_decodes_as_its_headered_form),
		cmocka_unit_test(malformed_layouts_and_layout_records_are_rejected),
		cmocka_unit_test(writer_refuses_to_overflow),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
