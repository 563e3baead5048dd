/*
 * fuzz_decode -- everything mixd reads from a producer is untrusted: a
 * record payload (ingest_decode) and a whole ring segment (attach, then
 * consume). Corrupt input must be rejected and counted, never crash.
 *
 * Input: first byte selects the target (bit 0: a record payload; else bit
 * 1: a layout slot and a layout record; else a segment); the rest is the
 * payload, the slot and record, or the bytes of a segment (header then
 * data) that is padded to the smallest ring a consumer accepts.
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
 *
 * Layout records (a third target: a 128-byte layout slot, then a record;
 * and any v2 segment's slots) are checked against the same reference: the
 * fuzzer rewrites the record with a header before each value, as the
 * layout lists them, and ingest_decode_layout() must accept exactly when
 * that rewrite exists and the reference accepts it, with the same table
 * and, keyed, the same key.
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
static uint8_t ref_key[2 * MIXD_RECORD_MAX];
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

/*
 * Layout record @p of @lay with a header before each value, as
 * <mixd/ring.h> says it decodes: false when its lengths do not add up.
 * Written from the ABI's drawing, apart from codec.c.
 */
static bool expand(const struct ingest_layout *lay, const uint8_t *p,
		   size_t len, uint8_t *out, size_t *outlen)
{
	unsigned nfix = lay->nword + lay->nbool, nvar = lay->n - nfix;
	size_t need = 4 + 8u * lay->nword + lay->nbool + 2u * nvar;
	if (len < need)
		return false;
	const uint8_t *q = p + 4, *lens = p + 4 + 8u * lay->nword + lay->nbool;
	const uint8_t *var = lens + 2u * nvar;
	size_t o = 0;
	for (unsigned i = 0; i < lay->n; i++) {
		uint16_t id = (uint16_t)lay->hw[i];
		memcpy(out + o, &id, 2);
		out[o + 2] = (uint8_t)(lay->hw[i] >> 16);
		o += 3;
		if (i < lay->nword) {
			memcpy(out + o, q, 8);
			q += 8;
			o += 8;
		} else if (i < nfix) {
			out[o++] = *q++;
		} else {
			uint16_t n;
			memcpy(&n, lens + 2 * (i - nfix), 2);
			if ((size_t)(p + len - var) < n)
				return false;
			if (i < nfix + lay->nip && n > UINT8_MAX)
				return false; /* no headered form: a u8 length */
			if (i < nfix + lay->nip) {
				out[o++] = (uint8_t)n; /* u8 length */
			} else {
				uint32_t n32 = n;
				memcpy(out + o, &n32, 4);
				o += 4;
			}
			memcpy(out + o, var, n);
			var += n;
			o += n;
		}
	}
	*outlen = o;
	return var == p + len && p[0] == 0xFE && p[1] == 0xFF && p[3] == 0;
}

static void layout_check(const struct ingest_layout *lay, const uint8_t *p,
			 uint32_t len)
{
	static uint8_t ex[2 * MIXD_RECORD_MAX], kb[INGEST_KEY_ROOM];
	size_t exlen = 0;
	bool ok = expand(lay, p, len, ex, &exlen);
	attr_table_clear(&ref_table);
	if (ok) {
		/* slots of every third id chosen for the reference key */
		memset(ref_mask, 0, sizeof ref_mask);
		for (unsigned s = 0; s < ATTR_MAX_SLOTS; s += 3)
			ref_mask[s >> 6] |= 1ull << (s & 63);
		ok = ref_decode(ex, (uint32_t)exlen, vocab, &ref_table) ==
		     INGEST_REJ_NONE;
	}
	attr_table_clear(&table);
	enum ingest_reject rc = ingest_decode_layout(lay, p, len, &table, NULL,
						     NULL);
	if ((rc == INGEST_REJ_NONE) != ok)
		abort();
	struct ingest_keyspec ks;
	struct ingest_key k = {.buf = kb};
	ingest_keyspec_init(&ks, ref_mask);
	struct attr_table t2;
	attr_table_clear(&t2);
	if (ingest_decode_layout(lay, p, len, &t2, &ks, &k) != rc)
		abort();
	/* The compact key: made exactly for the records the decoder takes,
	 * and equal to the chosen values as the decoder read them. */
	static uint8_t ck[2 * MIXD_RECORD_MAX], want[2 * MIXD_RECORD_MAX];
	struct ingest_layout_key lk;
	ingest_layout_key_init(&lk, lay, &ks);
	uint32_t cklen = ingest_layout_key(lay, &lk, p, len, ck);
	if ((cklen != 0 || rc != INGEST_REJ_NONE) &&
	    (cklen == 0) != (rc != INGEST_REJ_NONE))
		abort();
	if (rc == INGEST_REJ_NONE) {
		size_t wl = 0, lensl = 0;
		uint8_t lensb[2 * MIXD_LAYOUT_FIELDS], bytes[MIXD_RECORD_MAX];
		size_t bl = 0;
		unsigned nfix = lay->nword + lay->nbool;
		for (unsigned i = 0; i < lay->n; i++) {
			unsigned id = (uint16_t)lay->hw[i];
			if (!(ref_mask[id >> 6] >> (id & 63) & 1))
				continue;
			const struct attr_value *v = &t2.v[id];
			if (i < lay->nword) {
				memcpy(want + wl, &v->i, 8);
				wl += 8;
			} else if (i < nfix) {
				want[wl++] = v->b;
			} else {
				uint16_t l = (uint16_t)v->len;
				memcpy(lensb + lensl, &l, 2);
				lensl += 2;
				memcpy(bytes + bl, i < nfix + lay->nip
							   ? (const void *)v->ip
							   : (const void *)v->s,
				       v->len);
				bl += v->len;
			}
		}
		memcpy(want + wl, lensb, lensl);
		memcpy(want + wl + lensl, bytes, bl);
		/* an empty key is 0, as "malformed": the caller then keys
		 * the record the headered way */
		if (wl + lensl + bl != cklen)
			abort();
		if (memcmp(ck, want, cklen) != 0)
			abort();
	}
	if (!ok)
		return;
	for (unsigned w = 0; w < ATTR_PRESENT_WORDS; w++)
		if (table.present[w] != ref_table.present[w])
			abort();
	for (unsigned s = 0; s < ATTR_MAX_SLOTS; s++) {
		if (!attr_table_has(&table, s))
			continue;
		const struct attr_value *a = &table.v[s], *b = &ref_table.v[s];
		/* strings point into different buffers: compare bytes */
		bool str = attr_type_is_string((enum attr_type)a->type) ||
			   a->type == ATTR_BYTES;
		if (str ? a->type != b->type || a->len != b->len ||
				  memcmp(a->s, b->s, a->len) != 0
			: !same_value(a, b))
			abort();
	}
	if (k.len != ref_klen || memcmp(kb, ref_key, ref_klen) != 0)
		abort();
}

/* ---------------------------------------------------------------------- */

/* Announced records are read whole (ASan checks they are still there). */
static uint64_t announced;

static void ahead(void *ctx, const uint8_t *p, uint32_t len,
		  const struct ingest_layout *lay)
{
	(void)ctx;
	(void)lay;
	for (uint32_t i = 0; i < len; i++)
		announced += p[i];
}

static enum ingest_reject decode(void *ctx, const uint8_t *p, uint32_t len,
				 const struct ingest_layout *lay)
{
	(void)ctx;
	if (lay) {
		layout_check(lay, p, len);
		return ingest_decode_layout(lay, p, len, &table, NULL, NULL);
	}
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
		decode(NULL, data + 1, size - 1, NULL);
		return 0;
	}
	if (data[0] & 2) {
		/* a layout slot, then a record of it */
		struct mixd_layout raw;
		struct ingest_layout lay;
		if (size - 1 < sizeof raw)
			return 0;
		memcpy(&raw, data + 1, sizeof raw);
		if (ingest_layout_load(&lay, &raw))
			layout_check(&lay, data + 1 + sizeof raw,
				     (uint32_t)(size - 1 - sizeof raw));
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
	if (ingest_ring_attach(fd, 0, &r) != 0)
		return 0; /* refused: fine */
	struct ingest_ring_counts counts;
	memset(&counts, 0, sizeof counts);
	static uint8_t scratch[INGEST_POLL_SCRATCH];
	for (int i = 0; i < 4; i++)
		ingest_ring_poll(r, decode, ahead, NULL, 256, &counts, scratch);
	(void)ingest_ring_empty(r);
	ingest_ring_destroy(r);
	return 0;
}
