/*
 * wire.h -- encoder for the record payload of <mixd/ring.h>.
 *
 * Header-only: libmixd's record builder and mixd's tests and benchmarks
 * encode with the same code. The decoder, which must distrust its input, is
 * ingest_decode() in codec.c.
 *
 * Every put writes into @w->buf and marks @w overflowed instead of writing
 * past @w->cap, so a caller checks once, at the end.
 */
#ifndef MIXD_INGEST_WIRE_H
#define MIXD_INGEST_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <mixd/ring.h>

struct wire_writer {
	uint8_t *buf;
	uint32_t len;
	uint32_t cap;
	bool overflow;
};

static inline void wire_init(struct wire_writer *w, uint8_t *buf, uint32_t cap)
{
	w->buf = buf;
	w->len = 0;
	w->cap = cap;
	w->overflow = false;
}

/*
 * Copy @n bytes. Proxy attribute values are mostly a few to a few dozen
 * bytes, where a call into libc's memcpy costs more than the copy: copy them
 * with two overlapping loads and stores of the widest size that fits (and
 * three single bytes below 4), never reading or writing outside [s, s + n)
 * and [d, d + n).
 */
static inline void wire_copy(uint8_t *d, const void *src, size_t n)
{
	const uint8_t *s = src;
	if (n <= 16) {
		if (n >= 8) {
			uint64_t a, b;
			memcpy(&a, s, 8);
			memcpy(&b, s + n - 8, 8);
			memcpy(d, &a, 8);
			memcpy(d + n - 8, &b, 8);
		} else if (n >= 4) {
			uint32_t a, b;
			memcpy(&a, s, 4);
			memcpy(&b, s + n - 4, 4);
			memcpy(d, &a, 4);
			memcpy(d + n - 4, &b, 4);
		} else if (n) {
			/* 1, 2 or 3 bytes: first, middle, last. */
			uint8_t a = s[0], b = s[n / 2], c = s[n - 1];
			d[0] = a;
			d[n / 2] = b;
			d[n - 1] = c;
		}
	} else if (n <= 32) {
		uint8_t a[16], b[16];
		memcpy(a, s, 16);
		memcpy(b, s + n - 16, 16);
		memcpy(d, a, 16);
		memcpy(d + n - 16, b, 16);
	} else {
		memcpy(d, s, n);
	}
}

/* @bytes (1..8) of @v at @p, little-endian; returns the end. The check
 * protocol's fields (<mixd/check.h>), on both its sides. On a
 * little-endian host, one store of the low bytes (a byte loop of 8 is more
 * than GCC unrolls and merges at -O2: 8 stores and a loop a field). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define WIRE_LITTLE_ENDIAN 1
#endif

static inline uint8_t *wire_put_le(uint8_t *p, uint64_t v, unsigned bytes)
{
#ifdef WIRE_LITTLE_ENDIAN
	memcpy(p, &v, bytes);
	return p + bytes;
#else
	for (unsigned i = 0; i < bytes; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
#endif
}

/* The little-endian value of @bytes (1..8) at @p. */
static inline uint64_t wire_get_le(const uint8_t *p, unsigned bytes)
{
	uint64_t v = 0;
#ifdef WIRE_LITTLE_ENDIAN
	memcpy(&v, p, bytes);
#else
	for (unsigned i = 0; i < bytes; i++)
		v |= (uint64_t)p[i] << (8 * i);
#endif
	return v;
}

/* Reserve @n bytes; NULL (and overflow) when they do not fit. */
static inline uint8_t *wire_reserve(struct wire_writer *w, size_t n)
{
	if (w->overflow || n > (size_t)(w->cap - w->len)) {
		w->overflow = true;
		return NULL;
	}
	uint8_t *p = w->buf + w->len;
	w->len += (uint32_t)n;
	return p;
}

/* Attribute header: id and type; for inline names, the name. */
static inline bool wire_attr(struct wire_writer *w, uint16_t id, uint8_t type,
			     const char *name, size_t name_len)
{
	bool inl = id == MIXD_ATTR_INLINE;
	if (inl && name_len > UINT16_MAX) {
		w->overflow = true;
		return false;
	}
	uint8_t *p = wire_reserve(w, 3 + (inl ? 2 + name_len : 0));
	if (!p)
		return false;
	memcpy(p, &id, 2);
	p[2] = type;
	if (inl) {
		uint16_t nl = (uint16_t)name_len;
		memcpy(p + 3, &nl, 2);
		memcpy(p + 5, name, name_len);
	}
	return true;
}

static inline void wire_u64(struct wire_writer *w, uint64_t v)
{
	uint8_t *p = wire_reserve(w, 8);
	if (p)
		memcpy(p, &v, 8);
}

static inline void wire_bytes(struct wire_writer *w, const void *s, size_t len)
{
	if (len > UINT32_MAX) {
		w->overflow = true;
		return;
	}
	uint8_t *p = wire_reserve(w, 4 + len);
	if (p) {
		uint32_t l = (uint32_t)len;
		memcpy(p, &l, 4);
		wire_copy(p + 4, s, len);
	}
}

static inline void wire_u8(struct wire_writer *w, uint8_t v)
{
	uint8_t *p = wire_reserve(w, 1);
	if (p)
		*p = v;
}

static inline void wire_ip(struct wire_writer *w, const void *addr, size_t len)
{
	if (len != 4 && len != 16) {
		w->overflow = true;
		return;
	}
	uint8_t *p = wire_reserve(w, 1 + len);
	if (p) {
		p[0] = (uint8_t)len;
		memcpy(p + 1, addr, len);
	}
}

static inline void wire_u32(struct wire_writer *w, uint32_t v)
{
	uint8_t *p = wire_reserve(w, 4);
	if (p)
		memcpy(p, &v, 4);
}

#endif /* MIXD_INGEST_WIRE_H */
