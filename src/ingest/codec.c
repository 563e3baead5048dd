/*
 * codec.c -- decode a record payload (layout drawn in <mixd/ring.h>) into an
 * attribute table. The input is untrusted and, for shared memory, may change
 * while it is read: every length is loaded once into a local, checked, and
 * never re-read.
 */
#include <string.h>

#include "ingest/ingest.h"

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

static inline uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/*
 * The hot loop: about twenty attributes per record, at millions of records a
 * second per shard. Values are written straight into their slot (no local
 * copy), a dictionary id needs no lookup beyond its declared type, and the
 * type check is one compare in the common case.
 */
enum ingest_reject ingest_decode(const uint8_t *p, size_t len,
				 const struct attr_vocab *vocab,
				 struct attr_table *t)
{
	const uint8_t *end = p + len;
	struct attr_value unused; /* values of inline names nobody declared */

	while (p != end) {
		if (end - p < 3)
			return INGEST_REJ_TRUNCATED;
		unsigned id = p[0] | (unsigned)p[1] << 8;
		uint8_t type = p[2];
		p += 3;

		struct attr_value *v;
		uint8_t declared;
		if (__builtin_expect(id < MIXD_ATTR_DICT_COUNT, 1)) {
			declared = dict_type[id];
			v = &t->v[id];
			t->present[id >> 6] |= 1ull << (id & 63);
		} else if (id == MIXD_ATTR_INLINE) {
			if (end - p < 2)
				return INGEST_REJ_TRUNCATED;
			unsigned nl = p[0] | (unsigned)p[1] << 8;
			p += 2;
			if (nl == 0)
				return INGEST_REJ_ATTRIBUTE;
			if (end - p < nl)
				return INGEST_REJ_TRUNCATED;
			int slot = vocab ? attr_vocab_find(vocab, (const char *)p, nl)
					 : -1;
			p += nl;
			if (type == ATTR_NONE || type >= ATTR_TYPE_COUNT)
				return INGEST_REJ_TYPE;
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
		/* A declared type is always valid, so equality also proves the
		 * wire type is; the string-like types stand for one another. */
		if (__builtin_expect(type != declared, 0) &&
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
	}
	return INGEST_REJ_NONE;
}
