/*
 * framer.c -- split a producer's socket byte stream into records.
 *
 * The stream is untrusted and arrives in arbitrary pieces: a frame header
 * or payload may be split anywhere. Whole frames are handed over straight
 * from the caller's buffer; a split one is collected in a buffer of the
 * largest frame, allocated on first need.
 */
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"
#include "ingest/ring.h"

/* Validate a frame header: a record, or a producer's counts. Returns the
 * frame's size or 0 if it is bad. */
static uint64_t frame_check(const uint8_t *h, uint32_t *len, bool *counts)
{
	uint32_t fh[2];
	memcpy(fh, h, sizeof fh);
	*counts = fh[1] == MIXD_FRAME_COUNTS;
	if (*counts ? fh[0] != sizeof(struct mixd_frame_counts)
		    : fh[1] != MIXD_FRAME_RECORD || fh[0] > MIXD_RECORD_MAX)
		return 0;
	*len = fh[0];
	return ring_frame_size(fh[0]);
}

/* A counts frame's payload: added up until the caller takes them. The
 * producer's word only moves counters, so a lie costs nothing but them. */
static void take_counts(struct ingest_framer *f, const uint8_t *p)
{
	struct mixd_frame_counts c;
	memcpy(&c, p, sizeof c);
	f->dropped = ingest_count_add(f->dropped, c.dropped);
	f->invalid = ingest_count_add(f->invalid, c.invalid);
}

ssize_t ingest_framer_feed(struct ingest_framer *f, const uint8_t *p, size_t n,
			   ingest_frame_fn push, void *ctx)
{
	uint32_t len = 0;
	uint64_t sz;
	size_t used = 0;
	bool counts;

	if (f->part_full) {
		frame_check(f->part, &len, &counts);
		if (!push(ctx, f->part + MIXD_FRAME_HDR, len))
			return 0;
		f->part_full = false;
		f->part_len = 0;
	}
	while (used < n) {
		const uint8_t *q = p + used;
		size_t left = n - used;
		if (f->part_len == 0 && left >= MIXD_FRAME_HDR) {
			/* The common case: whole frames straight from the buffer. */
			if (!(sz = frame_check(q, &len, &counts)))
				return -1;
			if (left >= sz) {
				if (counts)
					take_counts(f, q + MIXD_FRAME_HDR);
				else if (!push(ctx, q + MIXD_FRAME_HDR, len))
					return (ssize_t)used;
				used += sz;
				continue;
			}
		}
		/* A frame split across pieces: collect it. */
		if (!f->part &&
		    !(f->part = malloc(MIXD_FRAME_HDR + MIXD_RECORD_MAX + 8)))
			return -1;
		uint32_t want = MIXD_FRAME_HDR;
		if (f->part_len >= MIXD_FRAME_HDR)
			want = (uint32_t)frame_check(f->part, &len, &counts);
		uint32_t take = want - f->part_len;
		if (take > left)
			take = (uint32_t)left;
		memcpy(f->part + f->part_len, q, take);
		f->part_len += take;
		used += take;
		if (f->part_len < MIXD_FRAME_HDR)
			continue;
		if (!(sz = frame_check(f->part, &len, &counts)))
			return -1;
		if (f->part_len == sz && counts) {
			take_counts(f, f->part + MIXD_FRAME_HDR);
			f->part_len = 0;
		} else if (f->part_len == sz) {
			if (!push(ctx, f->part + MIXD_FRAME_HDR, len)) {
				f->part_full = true;
				return (ssize_t)used;
			}
			f->part_len = 0;
		}
	}
	return (ssize_t)used;
}

bool ingest_framer_idle(const struct ingest_framer *f)
{
	return f->part_len == 0 && !f->part_full;
}

void ingest_framer_free(struct ingest_framer *f)
{
	free(f->part);
	*f = (struct ingest_framer){0};
}
