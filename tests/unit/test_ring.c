/*
 * test_ring -- the SPSC ring of <mixd/ring.h>: wraparound, full ring,
 * largest record, mixed sizes, corruption, and a producer and a consumer on
 * two threads checking every byte (also run under TSan); a shared ring's
 * records reach the consumer as private copies.
 *
 * MIXD_TEST_THREADED
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ingest/ingest.h"
#include "ingest/ring.h"

struct seg {
	struct mixd_ring_hdr *h;
	struct ring_prod p;
	struct ring_cons c;
};

static void seg_init(struct seg *s, uint64_t cap)
{
	s->h = aligned_alloc(4096, MIXD_RING_HDR_SIZE + cap);
	assert_non_null(s->h);
	memset(s->h, 0, MIXD_RING_HDR_SIZE + cap);
	ring_init(s->h, cap, 1, 1, 0);
	uint8_t *data = (uint8_t *)s->h + MIXD_RING_HDR_SIZE;
	ring_prod_init(&s->p, s->h, data);
	s->c = (struct ring_cons){.hdr = s->h, .data = data, .cap = cap,
				  .max_len = MIXD_RECORD_MAX};
}

/* Fill @buf with a pattern derived from (seq, i) so any byte can be checked. */
static void pattern(uint8_t *buf, uint32_t len, uint64_t seq)
{
	for (uint32_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seq * 131 + i * 7 + (i >> 8));
}

static int check_pattern(const uint8_t *buf, uint32_t len, uint64_t seq)
{
	for (uint32_t i = 0; i < len; i++)
		if (buf[i] != (uint8_t)(seq * 131 + i * 7 + (i >> 8)))
			return -1;
	return 0;
}

/* Take one record, the producer having paused; returns its length or -1
 * when empty, -2 when corrupt. */
static int take(struct seg *s, uint8_t *out)
{
	const uint8_t *p;
	uint32_t len;
	uint64_t size;
	if (!ring_cons_refresh(&s->c))
		return -2;
	enum ring_peek_rc rc = ring_peek(&s->c, &p, &len, &size);
	if (rc == RING_EMPTY) {
		/* In the line the producer wrote last: taken once head has
		 * stood still for a refresh. */
		if (!ring_cons_refresh(&s->c))
			return -2;
		rc = ring_peek(&s->c, &p, &len, &size);
	}
	if (rc == RING_EMPTY)
		return -1;
	if (rc == RING_CORRUPT)
		return -2;
	memcpy(out, p, len);
	ring_advance(&s->c, size);
	ring_cons_commit(&s->c);
	return (int)len;
}

static void empty_ring_yields_nothing(void **state)
{
	struct seg s;
	uint8_t out[64];
	seg_init(&s, MIXD_RING_MIN_CAPACITY);
	assert_int_equal(take(&s, out), -1);
	free(s.h);
}

/*
 * While head moves, frames in the cache line the producer is writing into
 * wait; once head stands still for a refresh, they are taken.
 */
static void the_line_being_written_waits_until_the_producer_pauses(void **state)
{
	(void)state;
	struct seg s;
	static uint8_t buf[64];
	const uint8_t *p = NULL;
	uint32_t len = 0;
	uint64_t size = 0;
	seg_init(&s, MIXD_RING_MIN_CAPACITY);
	/* 5 frames of 24 bytes: 0-24-48 | 72-96 | 120 (line 1 ends at 128) */
	for (int i = 0; i < 5; i++) {
		pattern(buf, 16, (uint64_t)i);
		assert_true(ring_push(&s.p, buf, 16));
	}
	assert_int_equal(s.p.head, 120);
	assert_true(ring_cons_refresh(&s.c)); /* head moved: up to 64 */
	int taken = 0;
	while (ring_peek(&s.c, &p, &len, &size) == RING_RECORD) {
		assert_int_equal(check_pattern(p, len, (uint64_t)taken++), 0);
		ring_advance(&s.c, size);
	}
	assert_int_equal(taken, 2); /* 0-24, 24-48; 48-72 crosses 64 */
	ring_cons_commit(&s.c);
	pattern(buf, 16, 5);
	assert_true(ring_push(&s.p, buf, 16)); /* 120-144 */
	assert_true(ring_cons_refresh(&s.c)); /* moved again: up to 128 */
	while (ring_peek(&s.c, &p, &len, &size) == RING_RECORD) {
		assert_int_equal(check_pattern(p, len, (uint64_t)taken++), 0);
		ring_advance(&s.c, size);
	}
	assert_int_equal(taken, 5);
	assert_true(ring_cons_refresh(&s.c)); /* stood still: all of it */
	assert_int_equal(ring_peek(&s.c, &p, &len, &size), RING_RECORD);
	assert_int_equal(check_pattern(p, len, 5), 0);
	ring_advance(&s.c, size);
	assert_int_equal(ring_peek(&s.c, &p, &len, &size), RING_EMPTY);
	free(s.h);
}

static void wraparound_keeps_records_whole(void **state)
{
	struct seg s;
	static uint8_t buf[4096], out[4096];
	seg_init(&s, MIXD_RING_MIN_CAPACITY);
	/* 1000-byte records never divide 64 KiB evenly: every lap wraps at a
	 * different place, and each wrap needs a wrap frame. */
	for (uint64_t seq = 0; seq < 1000; seq++) {
		pattern(buf, 1000, seq);
		assert_true(ring_push(&s.p, buf, 1000));
		assert_int_equal(take(&s, out), 1000);
		assert_int_equal(check_pattern(out, 1000, seq), 0);
	}
	assert_true(s.p.head > 10 * MIXD_RING_MIN_CAPACITY);
	free(s.h);
}

static void full_ring_refuses_then_recovers(void **state)
{
	struct seg s;
	uint8_t buf[256], out[256];
	seg_init(&s, MIXD_RING_MIN_CAPACITY);
	pattern(buf, 248, 0);
	/* 248 + 8 = 256 bytes a frame: exactly 256 fit. */
	int n = 0;
	while (ring_push(&s.p, buf, 248))
		n++;
	assert_int_equal(n, MIXD_RING_MIN_CAPACITY / 256);
	assert_false(ring_push(&s.p, buf, 0));
	assert_int_equal(take(&s, out), 248);
	assert_true(ring_push(&s.p, buf, 248));
	for (int i = 0; i < n; i++)
		assert_int_equal(take(&s, out), 248);
	assert_int_equal(take(&s, out), -1);
	free(s.h);
}

static void largest_record_fits_after_any_wrap(void **state)
{
	struct seg s;
	uint8_t *buf = malloc(MIXD_RECORD_MAX), *out = malloc(MIXD_RECORD_MAX);
	seg_init(&s, 256 * 1024); /* libmixd's smallest ring */
	for (uint64_t seq = 0; seq < 40; seq++) {
		uint32_t small = (uint32_t)(seq * 977 % 30000);
		pattern(buf, small, seq);
		assert_true(ring_push(&s.p, buf, small));
		pattern(buf, MIXD_RECORD_MAX, seq + 1);
		assert_true(ring_push(&s.p, buf, MIXD_RECORD_MAX));
		assert_int_equal(take(&s, out), (int)small);
		assert_int_equal(check_pattern(out, small, seq), 0);
		assert_int_equal(take(&s, out), (int)MIXD_RECORD_MAX);
		assert_int_equal(check_pattern(out, MIXD_RECORD_MAX, seq + 1), 0);
	}
	free(buf);
	free(out);
	free(s.h);
}

/*
 * ring_reserve_max(): a producer that learns the length as it writes gets
 * room only where a largest record fits without a wrap and is free; near the
 * end or when nearly full it is told no (and falls back to ring_reserve()),
 * and what it commits reads back whole, whatever it scribbled beyond.
 */
static void reserve_max_commits_what_was_written(void **state)
{
	struct seg s;
	static uint8_t out[4096];
	const uint32_t max = 2048;
	uint64_t seq = 0, told_no = 0;
	seg_init(&s, MIXD_RING_MIN_CAPACITY);
	for (int i = 0; i < 2000; i++, seq++) {
		uint32_t len = (uint32_t)(seq * 37 % 700);
		uint8_t *dst = ring_reserve_max(&s.p, max);
		if (dst) {
			uint64_t pos = s.p.head & (s.p.cap - 1);
			assert_true(pos + ring_frame_size(max) <= s.p.cap);
			memset(dst, 0xa5, max); /* beyond the record too */
			pattern(dst, len, seq);
			ring_commit(&s.p, len);
		} else {
			told_no++;
			uint8_t buf[1024];
			pattern(buf, len, seq);
			assert_true(ring_push(&s.p, buf, len));
		}
		assert_int_equal(take(&s, out), (int)len);
		assert_int_equal(check_pattern(out, len, seq), 0);
	}
	assert_true(told_no > 0); /* the end of data came round */
	/* Nearly full: no room for a largest record, until it is consumed. */
	uint8_t small[64] = {0};
	while (s.p.cap - (s.p.head - s.h->cons.tail) >= ring_frame_size(max))
		assert_true(ring_push(&s.p, small, 56));
	assert_null(ring_reserve_max(&s.p, max));
	while (take(&s, out) >= 0)
		;
	assert_true(ring_reserve_max(&s.p, max) != NULL ||
		    s.p.cap - (s.p.head & (s.p.cap - 1)) < ring_frame_size(max));
	free(s.h);
}

static void corrupt_frames_are_detected(void **state)
{
	struct seg s;
	uint8_t buf[64], out[64];
	seg_init(&s, MIXD_RING_MIN_CAPACITY);
	pattern(buf, 40, 3);
	assert_true(ring_push(&s.p, buf, 40));
	uint8_t *data = (uint8_t *)s.h + MIXD_RING_HDR_SIZE;

	/* A bad mark. */
	uint32_t saved;
	memcpy(&saved, data + 4, 4);
	memset(data + 4, 0x41, 4);
	assert_int_equal(take(&s, out), -2);
	memcpy(data + 4, &saved, 4);

	/* A length beyond what was published. */
	uint32_t big = 4000;
	memcpy(data, &big, 4);
	assert_int_equal(take(&s, out), -2);
	uint32_t forty = 40;
	memcpy(data, &forty, 4);

	/* A head behind tail, or too far ahead. */
	uint64_t head = s.h->prod.head;
	s.h->prod.head = head + 2 * MIXD_RING_MIN_CAPACITY;
	assert_int_equal(take(&s, out), -2);
	s.h->prod.head = head;
	assert_int_equal(take(&s, out), 40);
	s.h->prod.head = 0;
	assert_int_equal(take(&s, out), -2);
	free(s.h);
}

/* ---- two threads ------------------------------------------------------- */

#define MT_RECORDS 400000

static void *mt_producer(void *arg)
{
	struct seg *s = arg;
	static uint8_t buf[2048];
	for (uint64_t seq = 0; seq < MT_RECORDS;) {
		uint32_t len = (uint32_t)((seq * 2654435761u) % 1500) + 4;
		pattern(buf + 4, len - 4, seq);
		uint32_t sq = (uint32_t)seq;
		memcpy(buf, &sq, 4);
		if (ring_push(&s->p, buf, len))
			seq++;
	}
	return NULL;
}

static void producer_and_consumer_threads_agree_on_every_byte(void **state)
{
	struct seg s;
	static uint8_t out[2048];
	seg_init(&s, MIXD_RING_MIN_CAPACITY);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, mt_producer, &s), 0);
	uint64_t seq = 0;
	while (seq < MT_RECORDS) {
		int n = take(&s, out);
		assert_int_not_equal(n, -2);
		if (n < 0)
			continue;
		uint32_t want = (uint32_t)((seq * 2654435761u) % 1500) + 4;
		assert_int_equal(n, want);
		uint32_t sq;
		memcpy(&sq, out, 4);
		assert_int_equal(sq, (uint32_t)seq);
		assert_int_equal(check_pattern(out + 4, want - 4, seq), 0);
		seq++;
	}
	pthread_join(t, NULL);
	assert_int_equal(take(&s, out), -1);
	free(s.h);
}

/*
 * A producer can write to its shared ring at any time, also while mixd
 * decodes one of its records: ingest_ring_poll() hands the consumer a copy
 * in its own buffer, never the ring's bytes (queue rings, mixd's own, are
 * read in place).
 */
struct seen {
	const uint8_t *scratch;
	int calls;
};

static enum ingest_reject expect_copy(void *ctx, const uint8_t *p,
				      uint32_t len,
				      const struct ingest_layout *lay)
{
	assert_null(lay);
	struct seen *s = ctx;
	uint8_t want[100];
	pattern(want, sizeof want, 7);
	assert_true(p == s->scratch || p == s->scratch + MIXD_RECORD_MAX);
	assert_int_equal(len, sizeof want);
	assert_memory_equal(p, want, sizeof want);
	s->calls++;
	return INGEST_REJ_NONE;
}

static enum ingest_reject expect_in_place(void *ctx, const uint8_t *p,
					  uint32_t len,
					  const struct ingest_layout *lay)
{
	assert_null(lay);
	struct seen *s = ctx;
	assert_true(p < s->scratch || p >= s->scratch + INGEST_POLL_SCRATCH);
	(void)len;
	s->calls++;
	return INGEST_REJ_NONE;
}

/* Two polls: the first, head having moved, leaves the 100-byte record in
 * the line the producer wrote last, and says so; the second, head having
 * stood still, takes it. */
static void poll_twice(struct ingest_ring *r, ingest_record_fn fn,
		       void *ctx, struct ingest_ring_counts *n,
		       uint8_t *scratch)
{
	assert_int_equal(ingest_ring_poll(r, fn, NULL, ctx, 16, n, scratch), 0);
	assert_true(ingest_ring_left(r));
	assert_int_equal(ingest_ring_poll(r, fn, NULL, ctx, 16, n, scratch), 1);
	assert_false(ingest_ring_left(r));
}

/* A memfd segment of the smallest capacity, mapped, with a producer on
 * it; *@fd for ingest_ring_attach(). */
static struct mixd_ring_hdr *shared_segment(struct ring_prod *prod,
					    size_t *size, int *fd)
{
	const uint64_t cap = MIXD_RING_MIN_CAPACITY;
	*size = MIXD_RING_HDR_SIZE + cap;
	*fd = memfd_create("test-ring", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	assert_true(*fd >= 0);
	assert_int_equal(ftruncate(*fd, (off_t)*size), 0);
	assert_int_equal(fcntl(*fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
	struct mixd_ring_hdr *h = mmap(NULL, *size, PROT_READ | PROT_WRITE,
				       MAP_SHARED, *fd, 0);
	assert_true(h != MAP_FAILED);
	ring_init(h, cap, 1, 1, 0);
	ring_prod_init(prod, h, (uint8_t *)h + MIXD_RING_HDR_SIZE);
	return h;
}

static void shared_records_are_read_from_a_private_copy(void **state)
{
	struct ring_prod prod;
	size_t size;
	int fd;
	struct mixd_ring_hdr *h = shared_segment(&prod, &size, &fd);
	uint8_t rec[100];
	pattern(rec, sizeof rec, 7);
	assert_true(ring_push(&prod, rec, sizeof rec));

	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct seen seen = {.scratch = scratch};
	struct ingest_ring_counts n = {0};
	struct ingest_ring *r;
	assert_int_equal(ingest_ring_attach(fd, 0, &r), 0); /* takes fd */
	poll_twice(r, expect_copy, &seen, &n, scratch);
	assert_int_equal(seen.calls, 1);
	assert_int_equal(n.records, 1);
	ingest_ring_destroy(r);
	munmap(h, size);

	assert_int_equal(ingest_ring_create_queue(INGEST_QUEUE_MIN, &r), 0);
	assert_true(ingest_queue_push(r, rec, sizeof rec));
	poll_twice(r, expect_in_place, &seen, &n, scratch);
	assert_int_equal(seen.calls, 2);
	ingest_ring_destroy(r);
}

/*
 * Each record is announced as it is taken, in order, at most INGEST_AHEAD
 * records before it is handed over, with the very bytes and address it is
 * then handed over with; a record beyond the budget is neither announced
 * nor taken, and the next poll starts with it.
 */
struct order {
	const uint8_t *said[10]; /* where record k was announced, or NULL */
	uint8_t said_bytes[10][64];
	int announced;           /* records announced: the next one's seed */
	int records;             /* handed over: the next one's seed */
};

static void note_ahead(void *ctx, const uint8_t *p, uint32_t len,
		       const struct ingest_layout *lay)
{
	struct order *o = ctx;
	int k = o->announced++;
	uint8_t want[64];
	assert_null(lay);
	assert_true(k < 10);
	assert_true(k - o->records <= INGEST_AHEAD);
	assert_int_equal(len, 16 + k % 40);
	pattern(want, len, (uint64_t)k);
	assert_memory_equal(p, want, len);
	o->said[k] = p;
	memcpy(o->said_bytes[k], p, len);
}

static enum ingest_reject check_order(void *ctx, const uint8_t *p,
				      uint32_t len,
				      const struct ingest_layout *lay)
{
	struct order *o = ctx;
	int k = o->records++;
	uint8_t want[64];
	assert_null(lay);
	assert_int_equal(len, 16 + k % 40);
	pattern(want, len, (uint64_t)k);
	assert_memory_equal(p, want, len);
	/* announced first, where it is handed over, unchanged since */
	assert_ptr_equal(o->said[k], p);
	assert_memory_equal(o->said_bytes[k], p, len);
	return INGEST_REJ_NONE;
}

static void records_are_announced_before_they_are_handed_over(void **state)
{
	(void)state;
	struct ring_prod prod;
	size_t size;
	int fd;
	struct mixd_ring_hdr *h = shared_segment(&prod, &size, &fd);
	for (uint8_t i = 0; i < 10; i++) {
		uint8_t rec[64];
		uint32_t len = 16 + i % 40u;
		pattern(rec, len, i);
		assert_true(ring_push(&prod, rec, len));
	}
	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct order o = {0};
	struct ingest_ring_counts n = {0};
	struct ingest_ring *r;
	assert_int_equal(ingest_ring_attach(fd, 0, &r), 0); /* takes fd */
	/* 4 of 10, then, head having stood still since, all the rest */
	assert_int_equal(ingest_ring_poll(r, check_order, note_ahead, &o, 4,
					  &n, scratch),
			 4);
	assert_int_equal(o.records, 4);
	assert_int_equal(o.announced, 4);
	assert_true(ingest_ring_left(r)); /* the budget ran out */
	assert_int_equal(ingest_ring_poll(r, check_order, note_ahead, &o, 100,
					  &n, scratch),
			 6);
	assert_int_equal(o.records, 10);
	assert_int_equal(o.announced, 10);
	assert_int_equal(n.records, 10);
	assert_false(ingest_ring_left(r));
	assert_true(ingest_ring_empty(r));
	ingest_ring_destroy(r);
	munmap(h, size);
}

/*
 * A corrupt frame after good ones in one poll: the good ones are handed
 * over and counted, and only what the producer wrote beyond them is
 * counted lost (its own tally of written records, less those consumed).
 */
static enum ingest_reject count_only(void *ctx, const uint8_t *p,
				     uint32_t len,
				     const struct ingest_layout *lay)
{
	(void)p;
	(void)len;
	(void)lay;
	++*(int *)ctx;
	return INGEST_REJ_NONE;
}

static void a_corrupt_frame_after_good_ones_loses_only_what_follows(void **state)
{
	(void)state;
	struct ring_prod prod;
	size_t size;
	int fd;
	struct mixd_ring_hdr *h = shared_segment(&prod, &size, &fd);
	uint8_t rec[40];
	for (uint8_t i = 0; i < 3; i++) {
		pattern(rec, sizeof rec, i);
		assert_true(ring_push(&prod, rec, sizeof rec));
	}
	/* a frame of no known type, then the producer's word that it wrote
	 * five records in all */
	uint8_t *bad = ring_reserve(&prod, 16);
	assert_non_null(bad);
	uint32_t junk = 0xdeadbeef;
	memcpy(bad - 4, &junk, 4);
	ring_publish(&prod, 16);
	ring_store_relaxed(&h->prod.written, 5);

	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts n = {0};
	struct ingest_ring *r;
	int seen = 0;
	assert_int_equal(ingest_ring_attach(fd, 0, &r), 0); /* takes fd */
	for (int i = 0; i < 3; i++) /* the last line may wait a poll */
		ingest_ring_poll(r, count_only, NULL, &seen, 100, &n, scratch);
	assert_int_equal(seen, 3);
	assert_int_equal(n.records, 3);
	assert_int_equal(n.rejected[INGEST_REJ_RING], 2);
	assert_int_equal(ring_load_relaxed(&h->cons.consumed), 5);
	assert_true(ingest_ring_empty(r));
	ingest_ring_destroy(r);
	munmap(h, size);
}

/* A producer that goes on writing while mixd reads past a corrupt frame:
 * what it publishes meanwhile is read and counted by the next poll, and
 * not also among the records the resync skipped. These were counted from
 * the producer's tally when the resync came, which included them. */
static struct ring_prod busy_prod;
static struct mixd_ring_hdr *busy_hdr;
static uint64_t busy_written;
static int busy_more; /* records to publish at the next one taken */

/* libmixd's order: head, then the count. */
static void busy_push(uint8_t seq)
{
	uint8_t rec[40];
	pattern(rec, sizeof rec, seq);
	assert_true(ring_push(&busy_prod, rec, sizeof rec));
	ring_store_relaxed(&busy_hdr->prod.written, ++busy_written);
}

static enum ingest_reject take_while_writing(void *ctx, const uint8_t *p,
					     uint32_t len,
					     const struct ingest_layout *lay)
{
	for (; busy_more; busy_more--)
		busy_push(100);
	return count_only(ctx, p, len, lay);
}

static void records_written_during_a_resync_are_counted_once(void **state)
{
	(void)state;
	size_t size;
	int fd;
	busy_hdr = shared_segment(&busy_prod, &size, &fd);
	busy_written = 0;
	for (uint8_t i = 0; i < 3; i++)
		busy_push(i);
	uint8_t *bad = ring_reserve(&busy_prod, 16);
	assert_non_null(bad);
	uint32_t junk = 0xdeadbeef;
	memcpy(bad - 4, &junk, 4);
	ring_publish(&busy_prod, 16);
	ring_store_relaxed(&busy_hdr->prod.written, ++busy_written);

	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts n = {0};
	struct ingest_ring *r;
	int seen = 0;
	assert_int_equal(ingest_ring_attach(fd, 0, &r), 0); /* takes fd */
	(void)ingest_ring_empty(r); /* head seen standing: nothing waits */
	busy_more = 5;
	for (int i = 0; i < 6; i++) {
		ingest_ring_poll(r, take_while_writing, NULL, &seen, 100, &n,
				 scratch);
		(void)ingest_ring_empty(r);
	}
	assert_int_equal(n.records, 8); /* 3 before the bad frame, 5 after */
	assert_int_equal(n.rejected[INGEST_REJ_RING], 1);
	assert_int_equal(ring_load_relaxed(&busy_hdr->cons.consumed),
			 busy_written);
	assert_true(ingest_ring_empty(r));
	ingest_ring_destroy(r);
	munmap(busy_hdr, size);
}

/* A head that no frame can end at (frames are 8-aligned): the ring is
 * dead at once, not resynchronised for ever at a place short of head
 * (which kept its shard from ever sleeping or releasing the ring). */
static void a_head_off_the_frame_grid_kills_the_ring(void **state)
{
	(void)state;
	struct ring_prod prod;
	size_t size;
	int fd;
	struct mixd_ring_hdr *h = shared_segment(&prod, &size, &fd);
	ring_store_release(&h->prod.head, 4);

	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts n = {0};
	struct ingest_ring *r;
	int seen = 0;
	assert_int_equal(ingest_ring_attach(fd, 0, &r), 0); /* takes fd */
	for (int i = 0; i < 3; i++)
		assert_int_equal(ingest_ring_poll(r, count_only, NULL, &seen,
						  100, &n, scratch),
				 0);
	assert_int_equal(seen, 0);
	assert_int_equal(n.rejected[INGEST_REJ_RING], 1);
	assert_true(ingest_ring_empty(r));
	/* Its producer's drops are still counted: it writes on into a ring
	 * nobody reads until it reconnects. They were no longer read. */
	ring_store_relaxed(&h->prod.dropped, 1000);
	ingest_ring_poll(r, count_only, NULL, &seen, 100, &n, scratch);
	assert_int_equal(n.dropped, 1000);
	ingest_ring_destroy(r);
	munmap(h, size);
}

/* A segment its producer did not seal against shrinking is refused (mixd
 * does not add the seal: that takes a lock the producer can hold), and
 * one sealed already, also against further seals, is taken. */
static void only_a_sealed_segment_is_taken(void **state)
{
	(void)state;
	struct ring_prod prod;
	size_t size;
	int fd;
	struct mixd_ring_hdr *h = shared_segment(&prod, &size, &fd);
	struct ingest_ring *r;
	int unsealed = memfd_create("test-unsealed", MFD_ALLOW_SEALING);
	assert_true(unsealed >= 0);
	assert_int_equal(ftruncate(unsealed, (off_t)size), 0);
	void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
		       unsealed, 0);
	assert_true(m != MAP_FAILED);
	memcpy(m, h, MIXD_RING_HDR_SIZE); /* a valid header */
	assert_int_equal(ingest_ring_attach(unsealed, 0, &r), -EPERM);
	munmap(m, size);
	/* no seals allowed at all: refused the same way */
	int plain = memfd_create("test-plain", 0);
	assert_true(plain >= 0);
	assert_int_equal(ftruncate(plain, (off_t)size), 0);
	assert_int_equal(ingest_ring_attach(plain, 0, &r), -EPERM);
	/* shrink and seal seals: taken */
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL), 0);
	assert_int_equal(ingest_ring_attach(fd, 0, &r), 0);
	ingest_ring_destroy(r);
	munmap(h, size);
}

/* Only a memfd of shared memory is taken: not a hugetlb memfd (holes
 * punched in it read as SIGBUS whatever the seals), not a file on disk,
 * not a socket. Refusing a socket whose peer never reads, with a long
 * SO_LINGER, does not wait out the linger. */
static void only_shared_memory_is_taken_and_refusals_do_not_wait(void **state)
{
	(void)state;
	struct ingest_ring *r;
	int fd = memfd_create("test-huge", MFD_HUGETLB | MFD_ALLOW_SEALING);
	if (fd >= 0) { /* the kernel may not offer huge pages: then skip */
		(void)ftruncate(fd, 2 << 20);
		assert_int_equal(ingest_ring_attach(fd, 0, &r), -EBADF);
	}
	char path[] = "/var/tmp/mixd-test-ring-XXXXXX";
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	assert_true(ingest_ring_attach(fd, 0, &r) < 0);

	/* A loopback TCP connection nobody reads, its send buffer full. */
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof a;
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
	int peer = accept(l, NULL, NULL);
	assert_true(peer >= 0);
	int small = 4096;
	setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
	setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
	fcntl(c, F_SETFL, O_NONBLOCK);
	static char junk[65536];
	while (send(c, junk, sizeof junk, MSG_NOSIGNAL) > 0)
		;
	struct linger lg = {.l_onoff = 1, .l_linger = 30};
	setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	fcntl(c, F_SETFL, 0); /* a blocking close() would linger */
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_true(ingest_ring_attach(c, 0, &r) < 0); /* takes c */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 2);
	close(peer);
	close(l);
}

/* The most one allowance can have let through since @t0
 * (ingest_now_coarse()): the burst and its rate (one more: it counts on a
 * grid of its own, up to one step before @t0). */
static uint64_t said_most(uint64_t t0)
{
	return INGEST_SAID_BURST + 1 + (ingest_now_coarse() - t0) /
					       (1000000000 / INGEST_SAID_PER_S);
}

/* The largest record fits an empty socket queue wherever a shorter one
 * left its head: in a queue of one largest frame it never did behind a
 * short record (found by fuzz_hello: its connection waited for ever). A
 * smaller queue is refused. */
static void the_largest_record_fits_an_empty_queue_anywhere(void **state)
{
	(void)state;
	static uint8_t scratch[INGEST_POLL_SCRATCH], big[MIXD_RECORD_MAX];
	struct ingest_ring *q;
	assert_int_equal(ingest_ring_create_queue(INGEST_QUEUE_MIN / 2, &q),
			 -EINVAL);
	assert_int_equal(ingest_ring_create_queue(INGEST_QUEUE_MIN, &q), 0);
	for (uint32_t len = 1; len < 3000; len += 37) {
		struct ingest_ring_counts n = {0};
		int got = 0;
		assert_true(ingest_queue_push(q, big, len));
		for (int k = 0; k < 2; k++) /* the second: head stood still */
			ingest_ring_poll(q, count_only, NULL, &got, 16, &n,
					 scratch);
		assert_true(ingest_queue_push(q, big, sizeof big));
		for (int k = 0; k < 2; k++)
			ingest_ring_poll(q, count_only, NULL, &got, 16, &n,
					 scratch);
		assert_int_equal(got, 2);
	}
	ingest_ring_destroy(q);
}

/* A shared segment (*@h, *@size) attached as *@r. */
static void attached_segment(struct mixd_ring_hdr **h, size_t *size,
			     struct ingest_ring **r)
{
	struct ring_prod prod;
	int fd;
	*h = shared_segment(&prod, size, &fd);
	assert_int_equal(ingest_ring_attach(fd, 0, r), 0); /* takes fd */
}

/* The producer's tallies in its segment are its word: mixd counts them no
 * faster than a producer could lose records (a burst, then
 * INGEST_SAID_PER_S a second), never lets a sum wrap round, and keeps its
 * own mark of what it counted -- here the producer sets dropped near 2^64
 * and the segment's mark back to 0, again and again. */
static void a_producers_tallies_cannot_run_counters_backwards(void **state)
{
	(void)state;
	size_t size;
	struct mixd_ring_hdr *h;
	struct ingest_ring *r;
	attached_segment(&h, &size, &r);
	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts n = {0};
	uint64_t t0 = ingest_now_coarse();
	for (int k = 0; k < 50; k++) {
		h->prod.dropped = UINT64_MAX - 1000;
		h->cons.dropped_seen = 0;
		ingest_ring_poll(r, count_only, NULL, NULL, 16, &n, scratch);
		usleep(1000);
	}
	assert_true(n.dropped >= INGEST_SAID_BURST && n.dropped <= said_most(t0));
	/* Our mark of what was taken (the rest waits for the allowance),
	 * written when the tally moves, for a restarted mixd. */
	h->prod.dropped = UINT64_MAX - 999;
	ingest_ring_poll(r, count_only, NULL, NULL, 16, &n, scratch);
	assert_true(h->cons.dropped_seen == UINT64_MAX - 999);
	n.dropped = INGEST_COUNT_MAX - 1;
	usleep(20 * 1000);
	ingest_ring_poll(r, count_only, NULL, NULL, 16, &n, scratch);
	assert_true(n.dropped == INGEST_COUNT_MAX);
	ingest_ring_destroy(r);
	munmap(h, size);
}

/* One segment is one ring: sent again (in a second hello) while it is
 * attached it is refused, or two consumers would count each record; once
 * the first is destroyed it is taken again. */
static void a_segment_attached_twice_is_refused(void **state)
{
	(void)state;
	struct ring_prod prod;
	size_t size;
	int fd;
	struct mixd_ring_hdr *h = shared_segment(&prod, &size, &fd);
	int again = dup(fd);
	struct ingest_ring *r, *r2;
	assert_int_equal(ingest_ring_attach(fd, 0, &r), 0); /* takes fd */
	int later = dup(again);
	assert_int_equal(ingest_ring_attach(again, 0, &r2), -EEXIST);
	ingest_ring_destroy(r);
	assert_int_equal(ingest_ring_attach(later, 0, &r2), 0);
	ingest_ring_destroy(r2);
	munmap(h, size);
}

/* The limit on segment bytes mapped at once: a segment that would go
 * beyond it is refused (-ENOSPC) and maps nothing; once a ring is
 * destroyed, its bytes are free for the next. */
static void segments_beyond_the_mapping_limit_are_refused(void **state)
{
	(void)state;
	struct ring_prod p1, p2;
	size_t size;
	int fd1, fd2;
	struct mixd_ring_hdr *h1 = shared_segment(&p1, &size, &fd1);
	struct mixd_ring_hdr *h2 = shared_segment(&p2, &size, &fd2);
	const uint64_t base = ingest_ring_mapped_bytes();
	const uint64_t limit = base + size + size / 2; /* one fits, not two */
	struct ingest_ring *r1, *r2;
	int again = dup(fd2);
	assert_int_equal(ingest_ring_attach(fd1, limit, &r1), 0);
	assert_int_equal(ingest_ring_mapped_bytes(), base + size);
	assert_int_equal(ingest_ring_attach(fd2, limit, &r2), -ENOSPC);
	assert_int_equal(ingest_ring_mapped_bytes(), base + size);
	/* 0: no limit, whatever is mapped */
	int third = dup(again);
	assert_int_equal(ingest_ring_attach(again, 0, &r2), 0);
	assert_int_equal(ingest_ring_mapped_bytes(), base + 2 * size);
	ingest_ring_destroy(r2);
	ingest_ring_destroy(r1);
	assert_int_equal(ingest_ring_mapped_bytes(), base);
	assert_int_equal(ingest_ring_attach(third, limit, &r2), 0);
	ingest_ring_destroy(r2);
	assert_int_equal(ingest_ring_mapped_bytes(), base);
	/* a shard's queue for socket records is mixd's own: not counted */
	assert_int_equal(ingest_ring_create_queue(INGEST_QUEUE_MIN, &r2), 0);
	assert_int_equal(ingest_ring_mapped_bytes(), base);
	ingest_ring_destroy(r2);
	assert_int_equal(ingest_ring_mapped_bytes(), base);
	munmap(h1, size);
	munmap(h2, size);
}

/* Rings that share an allowance (a shard's) share its burst: a producer
 * that comes back with a new ring (or a hundred) gets no new one. */
static void a_new_ring_brings_no_new_burst(void **state)
{
	(void)state;
	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_said said = {0};
	struct ingest_ring_counts n = {0};
	uint64_t t0 = ingest_now_coarse();
	for (int k = 0; k < 100; k++) {
		size_t size;
		struct mixd_ring_hdr *h;
		struct ingest_ring *r;
		attached_segment(&h, &size, &r);
		ingest_ring_set_said(r, &said);
		h->prod.dropped = 1ull << 40;
		ingest_ring_poll(r, count_only, NULL, NULL, 16, &n, scratch);
		ingest_ring_destroy(r);
		munmap(h, size);
	}
	assert_true(n.dropped >= INGEST_SAID_BURST && n.dropped <= said_most(t0));
}

/* A true tally larger than the burst (a producer that dropped 50 million
 * records while mixd was down) is counted whole, over a few looks. */
static void a_large_true_tally_arrives_whole(void **state)
{
	(void)state;
	size_t size;
	struct mixd_ring_hdr *h;
	struct ingest_ring *r;
	attached_segment(&h, &size, &r);
	static uint8_t scratch[INGEST_POLL_SCRATCH];
	struct ingest_ring_counts n = {0};
	const uint64_t want = 3 * INGEST_SAID_BURST;
	h->prod.dropped = want; /* dropped while mixd was down */
	h->prod.invalid = 7;
	ingest_ring_poll(r, count_only, NULL, NULL, 16, &n, scratch);
	assert_int_equal(n.dropped, INGEST_SAID_BURST); /* so far */
	for (int k = 0; k < 300 && (n.dropped < want || n.invalid < 7); k++) {
		usleep(10 * 1000);
		ingest_ring_poll(r, count_only, NULL, NULL, 16, &n, scratch);
	}
	assert_int_equal(n.dropped, want);
	assert_int_equal(n.invalid, 7);
	ingest_ring_destroy(r);
	munmap(h, size);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty_ring_yields_nothing),
		cmocka_unit_test(records_written_during_a_resync_are_counted_once),
		cmocka_unit_test(a_producers_tallies_cannot_run_counters_backwards),
		cmocka_unit_test(a_large_true_tally_arrives_whole),
		cmocka_unit_test(a_new_ring_brings_no_new_burst),
		cmocka_unit_test(the_largest_record_fits_an_empty_queue_anywhere),
		cmocka_unit_test(a_segment_attached_twice_is_refused),
		cmocka_unit_test(only_a_sealed_segment_is_taken),
		cmocka_unit_test(only_shared_memory_is_taken_and_refusals_do_not_wait),
		cmocka_unit_test(wraparound_keeps_records_whole),
		cmocka_unit_test(full_ring_refuses_then_recovers),
		cmocka_unit_test(largest_record_fits_after_any_wrap),
		cmocka_unit_test(reserve_max_commits_what_was_written),
		cmocka_unit_test(corrupt_frames_are_detected),
		cmocka_unit_test(producer_and_consumer_threads_agree_on_every_byte),
		cmocka_unit_test(shared_records_are_read_from_a_private_copy),
		cmocka_unit_test(segments_beyond_the_mapping_limit_are_refused),
		cmocka_unit_test(records_are_announced_before_they_are_handed_over),
		cmocka_unit_test(a_head_off_the_frame_grid_kills_the_ring),
		cmocka_unit_test(a_corrupt_frame_after_good_ones_loses_only_what_follows),
		cmocka_unit_test(the_line_being_written_waits_until_the_producer_pauses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
