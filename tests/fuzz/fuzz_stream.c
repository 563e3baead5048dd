/*
 * fuzz_stream -- the socket transport's framer against the ABI. A stream
 * of frames (<mixd/ring.h>: records, and the counts frames in which a
 * socket producer reports what it dropped and refused) must come out of
 * ingest_framer_feed() the same however it is cut into pieces and however
 * often the consumer refuses a record:
 *
 *   - the records, in order and byte for byte, are exactly those a plain
 *     walk of the stream written here from the ABI finds before its first
 *     bad frame (a mark other than RECORD or COUNTS, a record over
 *     MIXD_RECORD_MAX, a counts frame of another length);
 *   - the feed fails (-1) exactly when there is such a frame, and only
 *     once its whole header has been fed;
 *   - the framer's dropped / invalid are the sums of the counts frames
 *     before that point, as ingest_count_add() bounds them (each frame's
 *     word up to INGEST_STEP_MAX, the sum up to INGEST_COUNT_MAX), the
 *     same whichever feed took which frame;
 *   - ingest_framer_idle() at the end says whether the stream ended
 *     between frames.
 *
 * Input: byte 0 seeds the piece sizes, byte 1 how often a record is
 * refused; the rest is the stream. (fuzz_frames decodes what comes out;
 * this checks that what comes out is right.)
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mixd/ring.h>

#include "ingest/ingest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the plain walk finds. */
struct walk {
	size_t nrec;
	size_t rec_off[8192]; /* payload offsets in the stream */
	uint32_t rec_len[8192];
	uint64_t dropped, invalid;
	bool bad;      /* a bad frame ends it */
	size_t bad_at; /* where that frame starts */
	bool tail;     /* the stream ends inside a frame */
};

static struct walk want;

/* A consumer's running total of what the framer reports after each feed
 * (already bounded): it stops at INGEST_COUNT_MAX. */
static uint64_t sum(uint64_t a, uint64_t b)
{
	return INGEST_COUNT_MAX - a < b ? INGEST_COUNT_MAX : a + b;
}

static void walk(const uint8_t *s, size_t n, struct walk *w)
{
	size_t at = 0;
	w->nrec = 0;
	w->dropped = w->invalid = 0;
	w->bad = w->tail = false;
	while (at < n) {
		if (n - at < MIXD_FRAME_HDR) {
			w->tail = true;
			return;
		}
		uint32_t len, mark;
		memcpy(&len, s + at, 4);
		memcpy(&mark, s + at + 4, 4);
		bool ok = mark == MIXD_FRAME_RECORD
				  ? len <= MIXD_RECORD_MAX
				  : mark == MIXD_FRAME_COUNTS &&
					    len == sizeof(struct
							  mixd_frame_counts);
		if (!ok) {
			w->bad = true;
			w->bad_at = at;
			return;
		}
		uint64_t sz = MIXD_FRAME_ALIGN(MIXD_FRAME_HDR + (uint64_t)len);
		if (n - at < sz) {
			w->tail = true;
			return;
		}
		if (mark == MIXD_FRAME_COUNTS) {
			struct mixd_frame_counts c;
			memcpy(&c, s + at + MIXD_FRAME_HDR, sizeof c);
			w->dropped = ingest_count_add(w->dropped, c.dropped);
			w->invalid = ingest_count_add(w->invalid, c.invalid);
		} else {
			if (w->nrec == sizeof w->rec_off / sizeof *w->rec_off)
				abort(); /* inputs are never this large */
			w->rec_off[w->nrec] = at + MIXD_FRAME_HDR;
			w->rec_len[w->nrec++] = len;
		}
		at += sz;
	}
}

struct sink {
	const uint8_t *stream;
	size_t got;
	unsigned calls, refuse_every;
};

static bool take(void *ctx, const uint8_t *p, uint32_t len)
{
	struct sink *s = ctx;
	if (s->refuse_every && ++s->calls % s->refuse_every == 0)
		return false; /* the queue is full: offered again */
	if (s->got >= want.nrec || len != want.rec_len[s->got] ||
	    memcmp(p, s->stream + want.rec_off[s->got], len) != 0)
		abort(); /* not the next record of the stream */
	s->got++;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	unsigned seed = data[0];
	const uint8_t *stream = data + 2;
	size_t n = size - 2;
	unsigned every = data[1] % 5;
	struct sink s = {stream, 0, 0, every ? every + 1 : 0};
	struct ingest_framer f = {0};
	uint64_t dropped = 0, invalid = 0;
	bool failed = false;
	size_t fed = 0, upto = 0;

	walk(stream, n, &want);
	while (fed < n && !failed) {
		size_t piece = 1 + (seed = seed * 33 + 7) % 131;
		if (piece > n - fed)
			piece = n - fed;
		size_t off = 0;
		upto = fed + piece;
		while (off < piece) {
			ssize_t k = ingest_framer_feed(&f, stream + fed + off,
						       piece - off, take, &s);
			dropped = sum(dropped, f.dropped);
			invalid = sum(invalid, f.invalid);
			f.dropped = f.invalid = 0;
			if (k < 0) {
				failed = true;
				break;
			}
			if ((size_t)k > piece - off)
				abort();
			off += (size_t)k;
			/* refused: nothing was lost, offer the rest again
			 * (never two refusals in a row: every >= 2) */
		}
		fed += off;
	}
	/* a refused whole frame still waits: hand it over */
	while (!failed && f.part_full) {
		if (ingest_framer_feed(&f, NULL, 0, take, &s) < 0)
			abort();
	}
	if (failed != want.bad)
		abort();
	/* the bad header is refused in the piece that completes it */
	if (failed && (upto < want.bad_at + MIXD_FRAME_HDR ||
		       fed >= want.bad_at + MIXD_FRAME_HDR))
		abort();
	if (s.got != want.nrec)
		abort(); /* records lost or made up */
	if (dropped != want.dropped || invalid != want.invalid)
		abort();
	if (!failed && ingest_framer_idle(&f) == want.tail)
		abort();
	ingest_framer_free(&f);
	return 0;
}
