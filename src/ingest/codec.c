/*
 * codec.c -- decode a record payload (layout drawn in <mixd/ring.h>) into an
 * attribute table. The input is untrusted and may even change while it is
 * read: every length is loaded once into a local, checked, and never
 * re-read, so no input makes the decoder read or write out of bounds. (The
 * memo key of ingest_decode_keyed() is only meaningful on memory that holds
 * still: see ingest.h.)
 */
#include <string.h>

#include "ingest/ingest.h"
#include "ingest/wire.h"

static const char *const reject_names[INGEST_REJ_COUNT] = {
	[INGEST_REJ_NONE] = "none",
	[INGEST_REJ_TRUNCATED] = "truncated",
	[INGEST_REJ_ATTRIBUTE] = "attribute",
	[INGEST_REJ_TYPE] = "type",
	[INGEST_REJ_VALUE] = "value",
	[INGEST_REJ_FRAME] = "frame",
	[INGEST_REJ_RING] = "corrupt_ring",
};

const char *ingest_reject_name(enum ingest_reject r)
{
	return (unsigned)r < INGEST_REJ_COUNT ? reject_names[r] : "unknown";
}

const char *ingest_transport_name(enum ingest_transport t)
{
	return t == INGEST_SOCKET ? "socket" : "shm";
}

/* The declared type of each dictionary id, for the hot check. */
static const uint8_t dict_type[MIXD_ATTR_DICT_COUNT] = {
#define DICT_TYPE_(id, name, type) [MIXD_ATTR_##id] = type,
	MIXD_ATTRIBUTE_LIST(DICT_TYPE_)
#undef DICT_TYPE_
};

static inline uint16_t rd16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}

static inline uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static inline uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/*
 * Decode the one attribute at *@pp, trusting nothing: every case the wire
 * allows, in the order the checks have always been made (so a malformed
 * record gets the same reason whichever path finds it). The fast loop in
 * ingest_decode() hands over to this whenever its own assumptions do not
 * hold; most records never come here.
 */
static __attribute__((noinline)) enum ingest_reject
decode_one(const uint8_t **pp, const uint8_t *end, const struct attr_vocab *vocab,
	   struct attr_table *t, int *slot_out)
{
	const uint8_t *p = *pp;
	struct attr_value unused; /* values of inline names nobody declared */

	if (end - p < 3)
		return INGEST_REJ_TRUNCATED;
	unsigned id = p[0] | (unsigned)p[1] << 8;
	uint8_t type = p[2];
	p += 3;

	struct attr_value *v;
	uint8_t declared;
	if (id < MIXD_ATTR_DICT_COUNT) {
		declared = dict_type[id];
		v = &t->v[id];
		t->present[id >> 6] |= 1ull << (id & 63);
		*slot_out = (int)id;
	} else if (id == MIXD_ATTR_INLINE) {
		if (end - p < 2)
			return INGEST_REJ_TRUNCATED;
		unsigned nl = p[0] | (unsigned)p[1] << 8;
		p += 2;
		if (nl == 0)
			return INGEST_REJ_ATTRIBUTE;
		if (end - p < nl)
			return INGEST_REJ_TRUNCATED;
		/* "$out.*" are the mesos instance's outputs, slots of the
		 * vocabulary but never attributes: a record that names one
		 * must not stand in for what Marathon did not say. */
		int slot = vocab && p[0] != '$'
				   ? attr_vocab_find(vocab, (const char *)p, nl)
				   : -1;
		p += nl;
		if (type == ATTR_NONE || type >= ATTR_TYPE_COUNT)
			return INGEST_REJ_TYPE;
		*slot_out = slot;
		if (slot >= 0) {
			declared = attr_vocab_type(vocab, (unsigned)slot);
			v = &t->v[slot];
			t->present[slot >> 6] |= 1ull << (slot & 63);
		} else {
			declared = type;
			v = &unused;
		}
	} else {
		return INGEST_REJ_ATTRIBUTE;
	}
	/* A declared type is always valid, so equality also proves the wire
	 * type is; the string-like types stand for one another. */
	if (type != declared &&
	    !(attr_type_is_string(type) && attr_type_is_string(declared)))
		return INGEST_REJ_TYPE;

	v->type = declared;
	switch (type) {
	case ATTR_STRING:
	case ATTR_BYTES:
	case ATTR_EMAIL:
	case ATTR_URI:
	case ATTR_DNS_NAME: {
		if (end - p < 4)
			return INGEST_REJ_TRUNCATED;
		uint32_t n = rd32(p);
		p += 4;
		if ((size_t)(end - p) < n)
			return INGEST_REJ_TRUNCATED;
		v->s = (const char *)p;
		v->len = n;
		p += n;
		break;
	}
	case ATTR_INT64:
	case ATTR_TIMESTAMP:
	case ATTR_DURATION:
	case ATTR_DOUBLE:
		if (end - p < 8)
			return INGEST_REJ_TRUNCATED;
		memcpy(&v->i, p, 8); /* the union's 8 bytes, any of them */
		v->len = 8;
		p += 8;
		break;
	case ATTR_BOOL:
		if (end - p < 1)
			return INGEST_REJ_TRUNCATED;
		if (*p > 1)
			return INGEST_REJ_VALUE;
		v->b = *p;
		v->len = 1;
		p += 1;
		break;
	case ATTR_IP: {
		if (end - p < 1)
			return INGEST_REJ_TRUNCATED;
		uint8_t n = *p++;
		if (n != 4 && n != 16)
			return INGEST_REJ_VALUE;
		if (end - p < n)
			return INGEST_REJ_TRUNCATED;
		memcpy(v->ip, p, n);
		v->len = n;
		p += n;
		break;
	}
	case ATTR_STRING_MAP: {
		size_t n = attr_map_validate(p, (size_t)(end - p));
		if (n == 0)
			return INGEST_REJ_VALUE;
		v->map = p;
		v->len = (uint32_t)n;
		p += n;
		break;
	}
	default:
		return INGEST_REJ_TYPE;
	}
	*pp = p;
	return INGEST_REJ_NONE;
}

enum ingest_reject ingest_decode_reference(const uint8_t *p, size_t len,
					   const struct attr_vocab *vocab,
					   struct attr_table *t,
					   ingest_encoding_fn each, void *ctx)
{
	const uint8_t *const end = p + len;
	while (p != end) {
		const uint8_t *a = p;
		int slot = -1;
		enum ingest_reject why = decode_one(&p, end, vocab, t, &slot);
		if (why != INGEST_REJ_NONE)
			return why;
		if (each)
			each(ctx, a, (size_t)(p - a), slot);
	}
	return INGEST_REJ_NONE;
}

/*
 * How the fast loop decodes a dictionary attribute, from its declared type.
 * STRING_MAP (rare, and validated by walking it) is left to decode_one().
 */
enum fast_kind {
	FK_STRING, /* u32 length in the header word, bytes after it */
	FK_WORD,   /* 8 bytes */
	FK_BOOL,
	FK_IP,
	FK_SLOW,
	FK_KEY = 8, /* or-ed in: the attribute is chosen for the key */
};

#define FAST_KIND_(t)                                                        \
	((t) == MIXD_T_STRING_MAP ? FK_SLOW                                  \
	 : (t) == MIXD_T_IP	  ? FK_IP                                    \
	 : (t) == MIXD_T_BOOL	  ? FK_BOOL                                  \
	 : ((t) == MIXD_T_INT64 || (t) == MIXD_T_DOUBLE ||                   \
	    (t) == MIXD_T_TIMESTAMP || (t) == MIXD_T_DURATION)               \
		 ? FK_WORD                                                   \
		 : FK_STRING)

static const uint8_t dict_kind[MIXD_ATTR_DICT_COUNT] = {
#define DICT_KIND_(id, name, type) [MIXD_ATTR_##id] = FAST_KIND_(type),
	MIXD_ATTRIBUTE_LIST(DICT_KIND_)
#undef DICT_KIND_
};

_Static_assert(sizeof(((struct ingest_keyspec *)0)->kind) ==
		       sizeof dict_kind,
	       "a key spec has a kind per dictionary id");

void ingest_keyspec_init(struct ingest_keyspec *ks, const uint64_t *mask)
{
	memcpy(ks->mask, mask, sizeof ks->mask);
	for (unsigned id = 0; id < MIXD_ATTR_DICT_COUNT; id++)
		ks->kind[id] = dict_kind[id] |
			       (mask[id >> 6] >> (id & 63) & 1 ? FK_KEY : 0);
}

/* The fast loop keeps the dictionary's present bits in two registers. */
_Static_assert(MIXD_ATTR_DICT_COUNT <= 128, "dictionary fits two words");

/*
 * The hot loop: about twenty attributes per record, at millions of records a
 * second per shard, on every shard. The common attribute is a dictionary id
 * carrying exactly its declared type with at least 8 bytes left in the
 * record: then one 8-byte load holds the id, the type and the first bytes of
 * the value (a string's length, a bool, an IP's length), and the only checks
 * left are the ones the value's own length needs. Each kind of value has its
 * own handler, entered through a table of label addresses indexed by the
 * id's kind and ending in the next attribute's dispatch: no switch range
 * check, no jump back to a loop head. The present bits of dictionary slots
 * gather in two registers and reach the table once, on the way out,
 * whatever the outcome (decode_one() sets its own bits in the table; the
 * two sets are or-ed). Anything else -- a record's last few bytes, an inline
 * name, a string-like type standing for another, a map, any malformation --
 * goes to decode_one(), which checks everything in the original order.
 * Values are written straight into their slot.
 *
 * The loop is made twice (decode_loop.h). The keyed variant also copies
 * each chosen attribute's encoding, as the handler that decoded it knows
 * its size, to the key: a store or two for fixed widths, a string's copy;
 * the plain one carries none of it.
 */
#define DECODE_NAME decode_plain
#define DECODE_KEYED 0
#include "ingest/decode_loop.h"

#define DECODE_NAME decode_keyed
#define DECODE_KEYED 1
#include "ingest/decode_loop.h"

enum ingest_reject ingest_decode(const uint8_t *p, size_t len,
				 const struct attr_vocab *vocab,
				 struct attr_table *t)
{
	return decode_plain(p, len, vocab, t, NULL, NULL);
}

enum ingest_reject ingest_decode_keyed(const uint8_t *p, size_t len,
				       const struct attr_vocab *vocab,
				       struct attr_table *t,
				       const struct ingest_keyspec *ks,
				       struct ingest_key *k)
{
	return decode_keyed(p, len, vocab, t, ks, k);
}

/* ---- layout records --------------------------------------------------- */

/* A field kind's place in a layout's order: words, bools, IPs, strings. */
static const uint8_t group_rank[] = {
	[FK_WORD] = 0, [FK_BOOL] = 1, [FK_IP] = 2, [FK_STRING] = 3,
};

bool ingest_layout_load(struct ingest_layout *out,
			const struct mixd_layout *raw)
{
	uint32_t n = raw->n;
	uint64_t seen[ATTR_PRESENT_WORDS] = {0};
	unsigned count[4] = {0}, last = 0;

	if (n == 0 || n > MIXD_LAYOUT_FIELDS)
		return false;
	memset(out, 0, sizeof *out);
	for (uint32_t i = 0; i < n; i++) {
		const struct mixd_layout_field f = raw->f[i];
		if (f.id >= MIXD_ATTR_DICT_COUNT || f.type != dict_type[f.id] ||
		    f.zero_ != 0 || dict_kind[f.id] == FK_SLOW ||
		    (seen[f.id >> 6] >> (f.id & 63) & 1))
			return false;
		unsigned rank = group_rank[dict_kind[f.id]];
		if (rank < last)
			return false;
		last = rank;
		count[rank]++;
		seen[f.id >> 6] |= 1ull << (f.id & 63);
		out->hw[i] = f.id | (uint32_t)f.type << 16;
	}
	out->n = (uint8_t)n;
	out->nword = (uint8_t)count[0];
	out->nbool = (uint8_t)count[1];
	out->nip = (uint8_t)count[2];
	out->fixed = 4 + 8 * count[0] + count[1] + 2 * (count[2] + count[3]);
	memcpy(out->present, seen, sizeof seen);
	static uint64_t serials; /* atomic */
	out->serial = __atomic_add_fetch(&serials, 1, __ATOMIC_RELAXED);
	return true;
}

void ingest_layout_key_init(struct ingest_layout_key *lk,
			    const struct ingest_layout *lay,
			    const struct ingest_keyspec *ks)
{
	const unsigned nfix = lay->nword + lay->nbool;
	memset(lk, 0, sizeof *lk);
	for (unsigned i = 0; i < lay->n; i++) {
		if (!(ks->kind[(uint16_t)lay->hw[i]] & FK_KEY))
			continue;
		if (i < lay->nword) {
			lk->word[lk->nword++] = (uint8_t)i;
		} else if (i < nfix) {
			lk->bool_[lk->nbool++] = (uint8_t)(i - lay->nword);
		} else {
			unsigned j = i - nfix, r = lk->nrun;
			if (r && lk->run_first[r - 1] + lk->run_n[r - 1] == j) {
				lk->run_n[r - 1]++;
			} else {
				lk->run_first[r] = (uint8_t)j;
				lk->run_n[r] = 1;
				lk->nrun++;
			}
		}
	}
}

/* The first word of a layout record: MIXD_ATTR_LAYOUT, a slot, a zero. */
static inline bool layout_header_ok(const uint8_t *p)
{
	uint32_t w = rd32(p);
	return (uint16_t)w == MIXD_ATTR_LAYOUT && w >> 24 == 0;
}

/*
 * The checks are ingest_decode_layout()'s, folded: a record it accepts is
 * one whose header bytes are right, whose bools are 0 or 1, whose IPs are
 * 4 or 16 bytes, and whose lengths add up to its size exactly (each
 * length fits what follows it exactly when their sum fits, as none is
 * negative). @p is the consumer's own copy, so it is read as often as
 * convenient.
 */
uint32_t ingest_layout_key(const struct ingest_layout *lay,
			   const struct ingest_layout_key *lk,
			   const uint8_t *p, size_t len, uint8_t *out)
{
	const unsigned nword = lay->nword, nbool = lay->nbool;
	const unsigned nvar = lay->n - nword - nbool, nip = lay->nip;
	uint32_t off[MIXD_LAYOUT_FIELDS + 1];

	if (len < lay->fixed || !layout_header_ok(p))
		return 0;
	const uint8_t *bools = p + 4 + 8 * nword, *lens = bools + nbool;
	const uint8_t *var = p + lay->fixed;
	unsigned bits = 0, bad = 0;
	for (unsigned i = 0; i < nbool; i++)
		bits |= bools[i];
	for (unsigned j = 0; j < nip; j++) {
		unsigned m = rd16(lens + 2 * j);
		bad |= m != 4 && m != 16;
	}
	uint32_t sum = 0;
#pragma GCC unroll 4
	for (unsigned j = 0; j < nvar; j++) {
		off[j] = sum;
		sum += rd16(lens + 2 * j);
	}
	off[nvar] = sum;
	if (bits > 1 || bad || sum != len - lay->fixed)
		return 0;

	uint8_t *o = out;
	for (unsigned k = 0; k < lk->nword; k++, o += 8)
		memcpy(o, p + 4 + 8 * lk->word[k], 8);
	for (unsigned k = 0; k < lk->nbool; k++)
		*o++ = bools[lk->bool_[k]];
	for (unsigned r = 0; r < lk->nrun; r++) {
		wire_copy(o, lens + 2 * lk->run_first[r], 2u * lk->run_n[r]);
		o += 2 * lk->run_n[r];
	}
	for (unsigned r = 0; r < lk->nrun; r++) {
		unsigned a = lk->run_first[r], b = a + lk->run_n[r];
		uint32_t n = off[b] - off[a];
		wire_copy(o, var + off[a], n);
		o += n;
	}
	return (uint32_t)(o - out);
}

/*
 * One loop per group, each field's slot and type from the layout: no
 * header to parse, no dispatch. The only checks left are the ones values
 * need (a bool's byte, an IP's length) and that the lengths add up. A
 * chosen field's key bytes are written as its header-and-value encoding
 * would be, so the key does not depend on the record's form. Made twice,
 * keyed and not (@keyed a constant); restrict and the locals let the
 * compiler keep the layout in registers across the stores into the table.
 */
static inline __attribute__((always_inline)) enum ingest_reject
decode_layout(const struct ingest_layout *restrict lay,
	      const uint8_t *restrict p, size_t len,
	      struct attr_value *restrict tv, uint64_t *restrict present,
	      const uint8_t *restrict kind, uint8_t *restrict kp,
	      uint32_t *restrict klen, const bool keyed)
{
	const uint8_t *const end = p + len;
	uint8_t *const k0 = kp;
	const unsigned nword = lay->nword, nfix = nword + lay->nbool;
	const unsigned nipe = nfix + lay->nip, n = lay->n;
	const uint32_t *restrict hw = lay->hw;
	unsigned i = 0;

	if (len < lay->fixed)
		return INGEST_REJ_TRUNCATED;
	if (!layout_header_ok(p))
		return INGEST_REJ_ATTRIBUTE;
	const uint8_t *q = p + 4;
#define CHOSEN(h) (keyed && (kind[(uint16_t)(h)] & FK_KEY))
	for (; i < nword; i++, q += 8) {
		uint32_t h = hw[i];
		struct attr_value *v = &tv[(uint16_t)h];
		v->type = (uint8_t)(h >> 16);
		memcpy(&v->i, q, 8);
		v->len = 8;
		if (CHOSEN(h)) {
			memcpy(kp, &h, 4);
			memcpy(kp + 3, q, 8);
			kp += 11;
		}
	}
	for (; i < nfix; i++, q++) {
		uint32_t h = hw[i];
		uint8_t b = *q;
		if (b > 1)
			return INGEST_REJ_VALUE;
		struct attr_value *v = &tv[(uint16_t)h];
		v->type = (uint8_t)(h >> 16);
		v->b = b;
		v->len = 1;
		if (CHOSEN(h)) {
			h |= (uint32_t)b << 24;
			memcpy(kp, &h, 4);
			kp += 4;
		}
	}
	const uint8_t *lens = q; /* a u16 per IP and string */
	q += 2 * (n - nfix);
	for (; i < nipe; i++) {
		uint32_t h = hw[i], m = rd16(lens + 2 * (i - nfix));
		struct attr_value *v = &tv[(uint16_t)h];
		/* The length, then the room: the headered decoder's order. */
		if (m != 4 && m != 16)
			return INGEST_REJ_VALUE;
		if (m > (size_t)(end - q))
			return INGEST_REJ_TRUNCATED;
		if (m == 4)
			memcpy(v->ip, q, 4);
		else
			memcpy(v->ip, q, 16);
		v->type = (uint8_t)(h >> 16);
		v->len = m;
		if (CHOSEN(h)) {
			h |= m << 24;
			memcpy(kp, &h, 4);
			if (m == 4)
				memcpy(kp + 4, q, 4);
			else
				memcpy(kp + 4, q, 16);
			kp += 4 + m;
		}
		q += m;
	}
	for (; i < n; i++) {
		uint32_t h = hw[i], m = rd16(lens + 2 * (i - nfix));
		struct attr_value *v = &tv[(uint16_t)h];
		if (m > (size_t)(end - q))
			return INGEST_REJ_TRUNCATED;
		v->type = (uint8_t)(h >> 16);
		v->len = m;
		v->s = (const char *)q;
		if (CHOSEN(h)) {
			memcpy(kp, &h, 4);
			memcpy(kp + 3, &m, 4);
			wire_copy(kp + 7, q, m);
			kp += 7 + m;
		}
		q += m;
	}
#undef CHOSEN
	if (q != end)
		return INGEST_REJ_TRUNCATED;
	present[0] |= lay->present[0];
	present[1] |= lay->present[1];
	if (keyed)
		*klen = (uint32_t)(kp - k0);
	return INGEST_REJ_NONE;
}

enum ingest_reject ingest_decode_layout(const struct ingest_layout *lay,
					const uint8_t *p, size_t len,
					struct attr_table *t,
					const struct ingest_keyspec *ks,
					struct ingest_key *k)
{
	if (k)
		return decode_layout(lay, p, len, t->v, t->present, ks->kind,
				     k->buf, &k->len, true);
	return decode_layout(lay, p, len, t->v, t->present, NULL, NULL, NULL,
			     false);
}
