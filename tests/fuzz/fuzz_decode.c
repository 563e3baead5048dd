/*
 * fuzz_decode -- everything mixd reads from a producer is untrusted: a
 * record payload (ingest_decode) and a whole ring segment (attach, then
 * consume). Corrupt input must be rejected and counted, never crash.
 *
 * Input: first byte selects the target; the rest is a record payload, or
 * the bytes of a segment (header then data) that is padded to the smallest
 * ring a consumer accepts.
 *
 * Every payload is also decoded by ingest_decode_reference(), the plain
 * one-attribute-at-a-time decoder that ingest_decode()'s fast loop must
 * agree with: the same reason, and for an accepted record the same table
 * (present bits, and each present value's type, length and bytes). A
 * rejected record's table is not compared: nothing reads it.
 *
 * ingest_decode_keyed() is checked against it too, under two choices of
 * attributes (every slot; every third): the same reason and table, and a
 * key that is exactly the chosen attributes' encodings in record order.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mixd/ring.h>

#include "attr/attr.h"
#include "ingest/ingest.h"

static struct attr_vocab *vocab;
static struct attr_table table;
static struct attr_table ref_table;

/* The reference key: the encodings ingest_decode_reference() reports
 * for slots in ref_mask, in record order. */
static uint64_t ref_mask[ATTR_PRESENT_WORDS];
static uint8_t ref_key[MIXD_RECORD_MAX];
static size_t ref_klen;

static void ref_encoding(void *ctx, const uint8_t *enc, size_t n, int slot)
{
	(void)ctx;
	if (slot >= 0 && (ref_mask[slot >> 6] >> (slot & 63) & 1)) {
		memcpy(ref_key + ref_klen, enc, n);
		ref_klen += n;
	}
}

static enum ingest_reject ref_decode(const uint8_t *p, size_t len,
				     const struct attr_vocab *vc,
				     struct attr_table *t)
{
	ref_klen = 0;
	return ingest_decode_reference(p, len, vc, t, ref_encoding, NULL);
}

/* The meaningful bytes of two values of an accepted record agree. */
static bool same_value(const struct attr_value *a, const struct attr_value *b)
{
	if (a->type != b->type || a->len != b->len)
		return false;
	switch (a->type) {
	case ATTR_BOOL:
		return a->b == b->b;
	case ATTR_IP:
		return memcmp(a->ip, b->ip, a->len) == 0;
	case ATTR_INT64:
	case ATTR_TIMESTAMP:
	case ATTR_DURATION:
	case ATTR_DOUBLE:
		return memcmp(&a->i, &b->i, 8) == 0;
	default: /* strings, bytes, maps: the same bytes of the record */
		return a->s == b->s;
	}
}

/* ingest_decode() must agree with ref_decode() on every payload. */
static void differential(const uint8_t *p, uint32_t len, enum ingest_reject rc)
{
	attr_table_clear(&ref_table);
	enum ingest_reject want = ref_decode(p, len, vocab, &ref_table);
	if (rc != want)
		abort();
	if (rc != INGEST_REJ_NONE)
		return;
	for (unsigned w = 0; w < ATTR_PRESENT_WORDS; w++)
		if (table.present[w] != ref_table.present[w])
			abort();
	for (unsigned s = 0; s < ATTR_MAX_SLOTS; s++)
		if (attr_table_has(&table, s) &&
		    !same_value(&table.v[s], &ref_table.v[s]))
			abort();
}

/* ingest_decode_keyed() must agree with ref_decode() too, key and all. */
static void keyed(const uint8_t *p, uint32_t len, unsigned every)
{
	static uint8_t kb[INGEST_KEY_ROOM];
	struct ingest_keyspec ks;
	struct ingest_key k = {.buf = kb};
	memset(ref_mask, 0, sizeof ref_mask);
	for (unsigned s = 0; s < ATTR_MAX_SLOTS; s += every)
		ref_mask[s >> 6] |= 1ull << (s & 63);
	ingest_keyspec_init(&ks, ref_mask);
	attr_table_clear(&table);
	enum ingest_reject rc = ingest_decode_keyed(p, len, vocab, &table, &ks,
						    &k);
	differential(p, len, rc);
	if (rc == INGEST_REJ_NONE &&
	    (k.len != ref_klen || memcmp(kb, ref_key, ref_klen) != 0))
		abort();
}

/* ---------------------------------------------------------------------- */

static enum ingest_reject decode(void *ctx, const uint8_t *p, uint32_t len)
{
	keyed(p, len, 1);
	keyed(p, len, 3);
	attr_table_clear(&table);
	enum ingest_reject rc = ingest_decode(p, len, vocab, &table);
	differential(p, len, rc);
	if (rc == INGEST_REJ_NONE) {
		/* Touch every value the decoder accepted, as the pipeline
		 * would: maps must be walkable within their bounds. */
		for (unsigned s = 0; s < ATTR_MAX_SLOTS; s++) {
			const struct attr_value *v = attr_table_get(&table, s);
			struct attr_value e;
			if (v && v->type == ATTR_STRING_MAP)
				(void)attr_map_get(v, "version", 7, &e);
		}
	}
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!vocab) {
		vocab = attr_vocab_create();
		attr_vocab_add(vocab, "x.custom", ATTR_DOUBLE, NULL);
	}
	if (size < 1)
		return 0;
	if (data[0] & 1) {
		decode(NULL, data + 1, size - 1);
		return 0;
	}
	/* A whole segment: the producer controls every byte of it. */
	size_t seg = MIXD_RING_HDR_SIZE + MIXD_RING_MIN_CAPACITY;
	int fd = memfd_create("fuzz-ring", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (ftruncate(fd, (off_t)seg) != 0) {
		close(fd);
		return 0;
	}
	size_t n = size - 1 < seg ? size - 1 : seg;
	if (pwrite(fd, data + 1, n, 0) != (ssize_t)n) {
		close(fd);
		return 0;
	}
	struct ingest_ring *r;
	if (ingest_ring_attach(fd, &r) != 0)
		return 0; /* refused: fine */
	struct ingest_ring_counts counts;
	memset(&counts, 0, sizeof counts);
	static uint8_t scratch[MIXD_RECORD_MAX];
	for (int i = 0; i < 4; i++)
		ingest_ring_poll(r, decode, NULL, 256, &counts, scratch);
	(void)ingest_ring_empty(r);
	ingest_ring_destroy(r);
	return 0;
}
