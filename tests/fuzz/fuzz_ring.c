/*
 * fuzz_ring -- a producer's segment is hostile memory it keeps writing to
 * while mixd reads it. The input is a script that interleaves what a
 * producer does to its segment with mixd's polls of it:
 *
 *   op 0: publish a record (ring_push(), the producer code libmixd uses),
 *         its bytes from the input, 1 to 128 times; a full ring counts a
 *         drop, as libmixd does;
 *   op 1: write a layout slot (allowed: a slot is written before the
 *         records that name it; mixd keeps the copy it read first);
 *   op 2: poll with a budget from the input;
 *   op 3: restart mixd: destroy the ring and attach the segment again,
 *         resuming at the tail the last one published (DESIGN.md,
 *         invariant 4); refused only when the ident line was scribbled;
 *   op 4: scribble: write input bytes anywhere in the segment, header
 *         included (head, tail, counters, and the capacity and marker,
 *         which a consumer reads once, at attach);
 *   op 5: move head by a signed amount;
 *   op 6: ask ingest_ring_empty() and ingest_ring_left().
 *
 * Checked at every poll: the records announced are exactly those handed
 * over, in order, each a copy (in the scratch buffer) of at most
 * MIXD_RECORD_MAX bytes; what is counted adds up to what the poll says it
 * took (the records, accepted or rejected, plus one for a resync, whose
 * lost records are the producer's word: counted through the allowance,
 * perhaps later); the tail published is 8-aligned, never behind the last
 * one published and never past head. A ring whose head is invalid stops
 * being read.
 *
 * While only ops 0-3 and 6 have run, the producer is well behaved, and
 * accounting is exact (invariant 2): once drained, records pushed =
 * accepted + rejected, none counted as a corrupt ring, and the drops
 * reported are the drops made.
 */
#include <fcntl.h>
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
#include "ingest/ring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CAP MIXD_RING_MIN_CAPACITY
#define SEG (MIXD_RING_HDR_SIZE + CAP)

static struct attr_vocab *vocab;
static struct attr_table table;
static uint8_t scratch[INGEST_POLL_SCRATCH];

/* The input, read as a script. */
struct script {
	const uint8_t *p;
	size_t left;
};

static bool take(struct script *s, void *out, size_t n)
{
	if (s->left < n)
		return false;
	memcpy(out, s->p, n);
	s->p += n;
	s->left -= n;
	return true;
}

/* What one poll did, seen from its callbacks. */
#define SEEN_MAX 512
struct seen {
	unsigned announced, handed, accepted;
	const uint8_t *ann_p[SEEN_MAX];
	uint32_t ann_len[SEEN_MAX];
};

static void ahead(void *ctx, const uint8_t *p, uint32_t len,
		  const struct ingest_layout *lay)
{
	struct seen *s = ctx;
	(void)lay;
	if (s->announced == SEEN_MAX)
		abort(); /* more than the budget */
	s->ann_p[s->announced] = p;
	s->ann_len[s->announced++] = len;
}

static enum ingest_reject decode(void *ctx, const uint8_t *p, uint32_t len,
				 const struct ingest_layout *lay)
{
	struct seen *s = ctx;
	/* announced before, in the same order, the same bytes */
	if (s->handed >= s->announced || s->ann_p[s->handed] != p ||
	    s->ann_len[s->handed] != len)
		abort();
	s->handed++;
	/* a private copy, never the segment itself */
	if (len > MIXD_RECORD_MAX || p < scratch ||
	    p + len > scratch + sizeof scratch)
		abort();
	attr_table_clear(&table);
	enum ingest_reject rc =
		lay ? ingest_decode_layout(lay, p, len, &table, NULL, NULL)
		    : ingest_decode(p, len, vocab, &table);
	if (rc == INGEST_REJ_NONE)
		s->accepted++;
	return rc;
}

static uint64_t sum_rejected(const struct ingest_ring_counts *c, bool ring)
{
	uint64_t n = 0;
	for (int i = 1; i < INGEST_REJ_COUNT; i++)
		if ((i == INGEST_REJ_RING) == ring)
			n += c->rejected[i];
	return n;
}

/* The consumer as mixd runs it, and what the test knows of it. */
struct consumer {
	struct ingest_ring *r;
	struct ingest_ring_counts counts;
	bool dead;
	uint64_t tail; /* the tail it last published */
};

static unsigned poll_once(struct consumer *c, struct mixd_ring_hdr *h,
			  unsigned budget)
{
	struct seen s = {0};
	struct ingest_ring_counts before = c->counts;
	uint64_t tail0 = ring_load_relaxed(&h->cons.tail);
	unsigned n = ingest_ring_poll(c->r, decode, ahead, &s, budget,
				      &c->counts, scratch);
	uint64_t rec = c->counts.records - before.records;
	uint64_t rej =
		sum_rejected(&c->counts, false) - sum_rejected(&before, false);
	uint64_t ring = c->counts.rejected[INGEST_REJ_RING] -
			before.rejected[INGEST_REJ_RING];
	if (s.handed != s.announced || rec != s.accepted)
		abort();
	if (c->dead && (n || rec || rej))
		abort(); /* a dead ring is not read again */
	if (n != rec + rej && n != rec + rej + 1)
		abort(); /* the records, and perhaps a resync */
	if (n > budget + 1 || rec + rej > budget)
		abort();
	bool died = !c->dead && ingest_ring_dead(c->r);
	if (died && (n || !ring))
		abort(); /* a head beyond reach: counted, nothing taken */
	c->dead |= died;
	/* the tail it publishes: only when it took something */
	uint64_t tail = ring_load_relaxed(&h->cons.tail);
	if (n && !c->dead) {
		uint64_t head = ring_load_relaxed(&h->prod.head);
		if ((tail & 7) || tail < c->tail || tail > head)
			abort();
		c->tail = tail;
	} else if (tail != tail0) {
		abort(); /* it took nothing: it writes nothing */
	}
	return n;
}

static int attach(int fd, struct consumer *c, struct mixd_ring_hdr *h)
{
	int dup_fd = dup(fd);
	if (dup_fd < 0)
		abort();
	memset(c, 0, sizeof *c);
	if (ingest_ring_attach(dup_fd, 0, &c->r) != 0)
		return -1;
	/* where it resumes: checked, so 8-aligned and within reach */
	c->tail = ring_load_relaxed(&h->cons.tail);
	uint64_t head = ring_load_relaxed(&h->prod.head);
	if (c->tail & 7 || c->tail > head || head - c->tail > CAP)
		abort();
	return 0;
}

static void add_counts(struct ingest_ring_counts *to,
		       const struct ingest_ring_counts *c)
{
	for (int i = 0; i < INGEST_REJ_COUNT; i++)
		to->rejected[i] += c->rejected[i];
	to->records += c->records;
	to->dropped += c->dropped;
	to->invalid += c->invalid;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t rec[MIXD_RECORD_MAX];
	struct script s = {data, size};
	uint8_t flags;
	if (!vocab)
		vocab = attr_vocab_create();
	if (!take(&s, &flags, 1))
		return 0;

	int fd = memfd_create("fuzz-ring", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (ftruncate(fd, SEG) != 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) { /* as libmixd */
		close(fd);
		return 0;
	}
	struct mixd_ring_hdr *h =
		mmap(NULL, SEG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED) {
		close(fd);
		return 0;
	}
	uint8_t *seg = (uint8_t *)h;
	ring_init(h, CAP, 1, 1, 0);
	if (flags & 1) /* a version 1 segment: no layouts */
		memcpy(h->ident.marker, MIXD_RING_MARKER_V1,
		       sizeof MIXD_RING_MARKER_V1 - 1);
	struct ring_prod prod;
	ring_prod_init(&prod, h, seg + MIXD_RING_HDR_SIZE);

	struct consumer c;
	struct ingest_ring_counts total = {0};
	bool behaved = true, ident = false;
	uint64_t pushed = 0, drops = 0;
	if (attach(fd, &c, h) != 0)
		abort(); /* a well-formed segment is taken */

	uint8_t op;
	while (take(&s, &op, 1)) {
		switch (op % 7) {
		case 0: { /* publish a record */
			uint16_t v;
			if (!take(&s, &v, 2))
				break;
			uint32_t len = v % 512, times = 1 + (v >> 9);
			if (len > s.left)
				len = (uint32_t)s.left;
			take(&s, rec, len);
			while (times--) {
				if (ring_push(&prod, rec, len)) {
					pushed++;
					ring_store_relaxed(&h->prod.written,
							   h->prod.written + 1);
				} else {
					drops++;
					ring_store_relaxed(&h->prod.dropped,
							   h->prod.dropped + 1);
				}
			}
			break;
		}
		case 1: { /* a layout slot */
			uint8_t slot;
			struct mixd_layout l;
			if (!take(&s, &slot, 1) || !take(&s, &l, sizeof l))
				break;
			memcpy(seg + MIXD_LAYOUT_OFFSET +
				       (slot % MIXD_LAYOUT_SLOTS) * sizeof l,
			       &l, sizeof l);
			break;
		}
		case 2: { /* poll */
			uint8_t b;
			if (!take(&s, &b, 1))
				break;
			poll_once(&c, h, 1 + b % 64);
			break;
		}
		case 3: /* mixd restarts */
			add_counts(&total, &c.counts);
			ingest_ring_destroy(c.r);
			if (attach(fd, &c, h) != 0) {
				if (!ident)
					abort();
				goto out; /* refused: nothing more to read */
			}
			break;
		case 4: { /* scribble */
			uint16_t at;
			uint8_t n;
			if (!take(&s, &at, 2) || !take(&s, &n, 1))
				break;
			n %= 17;
			if (n > s.left)
				n = (uint8_t)s.left;
			size_t off = at % SEG;
			if (off + n > SEG)
				n = (uint8_t)(SEG - off);
			take(&s, seg + off, n);
			ident |= off < sizeof h->ident;
			behaved = false;
			break;
		}
		case 5: { /* move head */
			int16_t d;
			if (!take(&s, &d, 2))
				break;
			/* odd: by bytes, off the 8-byte grid; even: by
			 * frames' worth */
			ring_store_relaxed(
				&h->prod.head,
				h->prod.head +
					(uint64_t)(d & 1 ? d : d / 2 * 8));
			behaved = false;
			break;
		}
		case 6:
			/* empty and records left at once: only when head is
			 * invalid (empty() leaves that to poll) */
			if (ingest_ring_empty(c.r) && ingest_ring_left(c.r) &&
			    behaved)
				abort();
			break;
		}
	}

	/* Drain: a head that stands still lets every record through. One
	 * poll at least, which takes the drops into account. */
	unsigned rounds = 0;
	do {
		poll_once(&c, h, 64);
		if (++rounds > CAP / 8 + 4)
			abort(); /* a ring that never empties */
	} while (!c.dead && !ingest_ring_empty(c.r));
	add_counts(&total, &c.counts);
	if (behaved) {
		/* Invariant 2: every record pushed is accounted for, once. */
		if (c.dead || total.rejected[INGEST_REJ_RING] ||
		    total.records + sum_rejected(&total, false) != pushed ||
		    total.dropped != drops)
			abort();
		if (ring_load_relaxed(&h->cons.tail) !=
		    ring_load_relaxed(&h->prod.head))
			abort(); /* drained means consumed to head */
	}
	ingest_ring_destroy(c.r);
out:
	munmap(h, SEG);
	close(fd);
	return 0;
}
