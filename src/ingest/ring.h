/*
 * ring.h -- the SPSC variable-length ring of <mixd/ring.h>, both ends.
 *
 * Header-only so that libmixd (which links nothing but libc; ck_pr is
 * header-only) and mixd share one implementation of the protocol. The
 * producer end trusts its own memory; the consumer end trusts nothing it
 * reads from the ring (see ring_peek()).
 *
 * Memory ordering, the whole of it:
 *   producer: write frame bytes  -> store-release prod.head
 *   consumer: load-acquire head  -> read frame bytes -> store-release tail
 *   producer: load-acquire tail  -> overwrite the space it frees
 * The release on head makes a frame visible no earlier than its bytes; the
 * release on tail promises the consumer no longer reads the bytes it frees.
 * On x86-64 these are plain moves plus compiler barriers (TSO); ck_pr emits
 * the right thing elsewhere. ck_pr is inline assembly, which ThreadSanitizer
 * cannot see, so TSan builds also annotate each pair explicitly.
 */
#ifndef MIXD_INGEST_RING_H
#define MIXD_INGEST_RING_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <ck_pr.h>
#include <mixd/ring.h>

#ifdef MIXD_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define RING_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#define RING_TSAN_RELEASE(p) __tsan_release((void *)(p))
#else
#define RING_TSAN_ACQUIRE(p) ((void)0)
#define RING_TSAN_RELEASE(p) ((void)0)
#endif

/** Store @v to @p after every earlier store (the frame, or our reads). */
static inline void ring_store_release(uint64_t *p, uint64_t v)
{
	/* Earlier stores (frame bytes) and loads (a consumed frame) must be
	 * complete before the counter that hands the space over moves. */
	ck_pr_fence_release();
	RING_TSAN_RELEASE(p);
	ck_pr_store_64(p, v);
}

/** Load @p; later loads see everything stored before the matching release. */
static inline uint64_t ring_load_acquire(uint64_t *p)
{
	uint64_t v = ck_pr_load_64(p);
	/* Frame bytes (or freed space) are read only after the counter that
	 * published them. */
	ck_pr_fence_acquire();
	RING_TSAN_ACQUIRE(p);
	return v;
}

/** A counter read by other threads only for reporting: no ordering. */
static inline uint64_t ring_load_relaxed(uint64_t *p)
{
	return ck_pr_load_64(p);
}

static inline void ring_store_relaxed(uint64_t *p, uint64_t v)
{
	ck_pr_store_64(p, v);
}

/** Bytes a frame with @len payload bytes occupies. */
static inline uint64_t ring_frame_size(uint32_t len)
{
	return MIXD_FRAME_ALIGN((uint64_t)MIXD_FRAME_HDR + len);
}

/** Initialise a zeroed segment of MIXD_RING_HDR_SIZE + @capacity bytes. */
static inline void ring_init(struct mixd_ring_hdr *h, uint64_t capacity,
			     uint32_t pid, uint32_t tid, uint64_t now_ns)
{
	memset(h->ident.marker, 0, sizeof h->ident.marker);
	memcpy(h->ident.marker, MIXD_RING_MARKER, sizeof(MIXD_RING_MARKER) - 1);
	h->ident.capacity = capacity;
	h->ident.created_ns = now_ns;
	h->ident.pid = pid;
	h->ident.tid = tid;
}

/*
 * Producer end. One thread only. @head is the producer's private copy of
 * prod.head; @tail_cache its last view of cons.tail, refreshed only when the
 * ring looks full so the consumer's cache line is not pulled on every record.
 */
struct ring_prod {
	struct mixd_ring_hdr *hdr;
	uint8_t *data;
	uint64_t cap;
	uint64_t head;
	uint64_t tail_cache;
};

static inline void ring_prod_init(struct ring_prod *p, struct mixd_ring_hdr *h,
				  uint8_t *data)
{
	p->hdr = h;
	p->data = data;
	p->cap = h->ident.capacity;
	p->head = ring_load_relaxed(&h->prod.head);
	p->tail_cache = ring_load_acquire(&h->cons.tail);
}

/**
 * Reserve a frame for a record of @len bytes and return where its payload
 * goes, or NULL when the ring has no room (the caller counts the drop).
 * Nothing is visible to the consumer until ring_publish(). Never blocks.
 */
static inline uint8_t *ring_reserve(struct ring_prod *p, uint32_t len)
{
	uint64_t need = ring_frame_size(len);
	uint64_t pos = p->head & (p->cap - 1);
	uint64_t to_end = p->cap - pos;
	/* A frame never straddles the end: if it does not fit before the end,
	 * a wrap frame fills the rest and the record goes to position 0. */
	uint64_t total = need <= to_end ? need : to_end + need;

	if (p->cap - (p->head - p->tail_cache) < total) {
		p->tail_cache = ring_load_acquire(&p->hdr->cons.tail);
		if (p->cap - (p->head - p->tail_cache) < total)
			return NULL;
	}
	if (need > to_end) {
		uint32_t wrap[2] = {0, MIXD_FRAME_WRAP};
		memcpy(p->data + pos, wrap, sizeof wrap);
		p->head += to_end; /* published with the record */
		pos = 0;
	}
	uint32_t fh[2] = {len, MIXD_FRAME_RECORD};
	memcpy(p->data + pos, fh, sizeof fh);
	return p->data + pos + MIXD_FRAME_HDR;
}

/** Publish the frame ring_reserve() returned, of @len bytes. */
static inline void ring_publish(struct ring_prod *p, uint32_t len)
{
	p->head += ring_frame_size(len);
	ring_store_release(&p->hdr->prod.head, p->head);
}

/**
 * Reserve room for a record of at most @max bytes, for a producer that
 * learns the length only as it encodes: the payload pointer when a frame of
 * that size fits before the end of data (no wrap) and the ring has the space
 * free, else NULL, and the caller takes ring_reserve() with the exact
 * length, which can wrap and which counts as full only what truly does not
 * fit. Writing anywhere in the @max bytes is harmless: the space is free and
 * nothing is visible before ring_commit(). Never blocks.
 */
static inline uint8_t *ring_reserve_max(struct ring_prod *p, uint32_t max)
{
	uint64_t need = ring_frame_size(max);
	uint64_t pos = p->head & (p->cap - 1);
	if (need > p->cap - pos)
		return NULL;
	if (p->cap - (p->head - p->tail_cache) < need) {
		p->tail_cache = ring_load_acquire(&p->hdr->cons.tail);
		if (p->cap - (p->head - p->tail_cache) < need)
			return NULL;
	}
	return p->data + pos + MIXD_FRAME_HDR;
}

/** Publish the frame ring_reserve_max() returned, now of @len bytes. */
static inline void ring_commit(struct ring_prod *p, uint32_t len)
{
	uint32_t fh[2] = {len, MIXD_FRAME_RECORD};
	memcpy(p->data + (p->head & (p->cap - 1)), fh, sizeof fh);
	ring_publish(p, len);
}

/** Append one record of @len bytes at @payload; false when full. */
static inline bool ring_push(struct ring_prod *p, const void *payload,
			     uint32_t len)
{
	uint8_t *dst = ring_reserve(p, len);
	if (!dst)
		return false;
	memcpy(dst, payload, len);
	ring_publish(p, len);
	return true;
}

/*
 * Consumer end. Everything in the segment is untrusted: the capacity was
 * validated once at attach and is kept here, never re-read; head is checked
 * against tail; every frame is bounds-checked before its payload is used.
 */
struct ring_cons {
	struct mixd_ring_hdr *hdr;
	const uint8_t *data;
	uint64_t cap;
	uint64_t tail;      /* private copy of cons.tail */
	uint64_t head;      /* last acquired prod.head */
	uint64_t written;   /* prod.written, read just before head: the
			       producer's count of records up to head */
	uint64_t lim;       /* frames ending beyond it wait (see refresh) */
	uint32_t max_len;   /* largest payload accepted */
};

/** Result of ring_peek(). */
enum ring_peek_rc {
	RING_EMPTY = 0,   /* nothing (taken yet) beyond tail */
	RING_RECORD = 1,  /* *payload / *len set; call ring_advance() after */
	RING_CORRUPT = 2, /* head or a frame is invalid */
};

/**
 * Refresh the consumer's view of head. Returns false if head is invalid.
 *
 * While the producer is writing -- head moved since the last refresh --
 * the frames in the cache line it is writing into wait for a later one:
 * a consumer reading that line as the producer fills the rest of it
 * takes the line from the producer's core and the producer's next store
 * takes it back, twice per record when the consumer keeps up, which
 * doubled the producer's cost. Once head stands still, everything is
 * taken; a frame waits at most until the producer writes past its line
 * or pauses. A shard whose pass left frames waiting (ingest_ring_left())
 * looks again after its shortest sleep, not after an idle one.
 */
static inline bool ring_cons_refresh(struct ring_cons *c)
{
	/* The producer stores its count after the head that publishes the
	 * record: read first, it counts no record beyond the head read
	 * next. */
	uint64_t w = ring_load_acquire(&c->hdr->prod.written);
	uint64_t h = ring_load_acquire(&c->hdr->prod.head);
	/* Frames are 8-aligned, so a head off that grid is no producer's:
	 * no resync could reach it. */
	if ((h & 7) || h < c->tail || h - c->tail > c->cap)
		return false;
	c->lim = h == c->head ? h : h & ~(uint64_t)63;
	c->head = h;
	c->written = w;
	return true;
}

/**
 * Look at the frame at tail, skipping a wrap frame. Does not refresh head:
 * call ring_cons_refresh() once per batch. On RING_RECORD the frame size to
 * pass to ring_advance() is stored in *@size.
 */
static inline enum ring_peek_rc ring_peek(struct ring_cons *c,
					  const uint8_t **payload,
					  uint32_t *len, uint64_t *size)
{
	for (int pass = 0; pass < 2; pass++) {
		if (c->tail == c->head)
			return RING_EMPTY;
		uint64_t pos = c->tail & (c->cap - 1);
		uint64_t avail = c->head - c->tail;
		uint32_t fh[2];
		/* Positions are 8-aligned and cap is a multiple of 8, so a header
		 * always fits before the end; avail guards a short publication. */
		if (avail < MIXD_FRAME_HDR || (pos & 7))
			return RING_CORRUPT;
		memcpy(fh, c->data + pos, sizeof fh);
		if (fh[1] == MIXD_FRAME_WRAP) {
			uint64_t skip = c->cap - pos;
			if (skip > avail)
				return RING_CORRUPT;
			c->tail += skip;
			continue;
		}
		if (fh[1] != MIXD_FRAME_RECORD || fh[0] > c->max_len)
			return RING_CORRUPT;
		uint64_t sz = ring_frame_size(fh[0]);
		if (sz > c->cap - pos || sz > avail)
			return RING_CORRUPT;
		if (c->tail + sz > c->lim)
			return RING_EMPTY; /* in the line being written */
		*payload = c->data + pos + MIXD_FRAME_HDR;
		*len = fh[0];
		*size = sz;
		return RING_RECORD;
	}
	/* Two wraps in a row: the producer never writes that. */
	return RING_CORRUPT;
}

/** Consume the frame ring_peek() returned (tail is published later). */
static inline void ring_advance(struct ring_cons *c, uint64_t size)
{
	c->tail += size;
}

/** Publish tail: the producer may reuse everything before it. */
static inline void ring_cons_commit(struct ring_cons *c)
{
	ring_store_release(&c->hdr->cons.tail, c->tail);
}

#endif /* MIXD_INGEST_RING_H */
