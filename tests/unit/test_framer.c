/*
 * test_framer -- records reassembled from a socket byte stream cut into
 * pieces of every size, a consumer that pushes back, and bad frames.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ingest/ingest.h"
#include "ingest/ring.h"

struct got {
	uint32_t lens[64];
	uint8_t first[64];
	int n;
	int refuse_next;
};

static bool take(void *ctx, const uint8_t *p, uint32_t len)
{
	struct got *g = ctx;
	if (g->refuse_next) {
		g->refuse_next--;
		return false;
	}
	g->lens[g->n] = len;
	g->first[g->n] = len ? p[0] : 0;
	g->n++;
	return true;
}

/* Frames of payload lengths 0, 1, 7, 8, 100, 3000, each filled with its
 * index, back to back as a producer's sender writes them. */
static size_t stream(uint8_t *buf)
{
	static const uint32_t lens[] = {0, 1, 7, 8, 100, 3000};
	size_t off = 0;
	for (int i = 0; i < 6; i++) {
		uint32_t fh[2] = {lens[i], MIXD_FRAME_RECORD};
		memcpy(buf + off, fh, 8);
		memset(buf + off + 8, i + 1, lens[i]);
		off += ring_frame_size(lens[i]);
	}
	return off;
}

static void pieces_of_every_size_give_the_same_records(void **state)
{
	static uint8_t buf[8192];
	size_t n = stream(buf);
	for (size_t piece = 1; piece <= n; piece += piece < 64 ? 1 : 97) {
		struct ingest_framer f = {0};
		struct got g = {0};
		for (size_t off = 0; off < n; off += piece) {
			size_t k = n - off < piece ? n - off : piece;
			assert_int_equal(ingest_framer_feed(&f, buf + off, k, take, &g),
					 (ssize_t)k);
		}
		assert_int_equal(g.n, 6);
		assert_int_equal(g.lens[5], 3000);
		assert_int_equal(g.first[5], 6);
		assert_int_equal(g.first[2], 3);
		assert_true(ingest_framer_idle(&f));
		ingest_framer_free(&f);
	}
}

static void a_refused_record_is_retried_first(void **state)
{
	static uint8_t buf[8192];
	size_t n = stream(buf);
	struct ingest_framer f = {0};
	struct got g = {.refuse_next = 1};
	/* Whole buffer at once: the first record is refused at once. */
	assert_int_equal(ingest_framer_feed(&f, buf, n, take, &g), 0);
	assert_int_equal(g.n, 0);
	assert_int_equal(ingest_framer_feed(&f, buf, n, take, &g), (ssize_t)n);
	assert_int_equal(g.n, 6);

	/* Split inside the big frame, refused when complete: retried from
	 * the framer's own copy before any new byte. */
	ingest_framer_free(&f);
	memset(&g, 0, sizeof g);
	size_t cut = n - 100;
	assert_int_equal(ingest_framer_feed(&f, buf, cut, take, &g), (ssize_t)cut);
	g.refuse_next = 1;
	assert_int_equal(ingest_framer_feed(&f, buf + cut, 100, take, &g), 100);
	assert_int_equal(g.n, 5);
	assert_false(ingest_framer_idle(&f));
	assert_int_equal(ingest_framer_feed(&f, NULL, 0, take, &g), 0);
	assert_int_equal(g.n, 6);
	assert_true(ingest_framer_idle(&f));
	ingest_framer_free(&f);
}

static void bad_frames_end_the_stream(void **state)
{
	uint8_t buf[64] = {0};
	struct ingest_framer f = {0};
	struct got g = {0};
	uint32_t bad_mark[2] = {4, 0x41414141};
	memcpy(buf, bad_mark, 8);
	assert_int_equal(ingest_framer_feed(&f, buf, 16, take, &g), -1);
	ingest_framer_free(&f);
	uint32_t too_long[2] = {MIXD_RECORD_MAX + 1, MIXD_FRAME_RECORD};
	memcpy(buf, too_long, 8);
	assert_int_equal(ingest_framer_feed(&f, buf, 16, take, &g), -1);
	ingest_framer_free(&f);
	/* The same, arriving a byte at a time. */
	ssize_t rc = 0;
	for (int i = 0; i < 8 && rc >= 0; i++)
		rc = ingest_framer_feed(&f, buf + i, 1, take, &g);
	assert_int_equal(rc, -1);
	ingest_framer_free(&f);
	assert_int_equal(g.n, 0);
}

/* Counts frames between records, cut anywhere: added up in the framer,
 * never handed over as records; one of another length is bad. */
static void counts_frames_are_added_up_not_handed_over(void **state)
{
	(void)state;
	static uint8_t buf[8192];
	size_t n = stream(buf);
	struct mixd_frame_counts c = {.dropped = 5, .invalid = 2};
	uint32_t fh[2] = {sizeof c, MIXD_FRAME_COUNTS};
	for (int k = 0; k < 2; k++) { /* two, after the records */
		memcpy(buf + n, fh, 8);
		memcpy(buf + n + 8, &c, sizeof c);
		n += ring_frame_size(sizeof c);
	}
	for (size_t piece = 1; piece <= n; piece++) {
		struct ingest_framer f = {0};
		struct got g = {0};
		for (size_t off = 0; off < n; off += piece) {
			size_t k = n - off < piece ? n - off : piece;
			assert_int_equal(ingest_framer_feed(&f, buf + off, k, take, &g),
					 (ssize_t)k);
		}
		assert_int_equal(g.n, 6);
		assert_int_equal(f.dropped, 10);
		assert_int_equal(f.invalid, 4);
		assert_true(ingest_framer_idle(&f));
		ingest_framer_free(&f);
	}
	struct ingest_framer f = {0};
	struct got g = {0};
	/* A producer's lies move the counts only so far, never round. */
	c = (struct mixd_frame_counts){.dropped = UINT64_MAX, .invalid = 1};
	for (int k = 0; k < 4; k++) {
		memcpy(buf, fh, 8);
		memcpy(buf + 8, &c, sizeof c);
		uint64_t before = f.dropped;
		assert_int_equal(ingest_framer_feed(&f, buf,
						    ring_frame_size(sizeof c),
						    take, &g),
				 (ssize_t)ring_frame_size(sizeof c));
		assert_true(f.dropped - before == INGEST_STEP_MAX);
	}
	f.dropped = INGEST_COUNT_MAX - 3;
	memcpy(buf, fh, 8);
	memcpy(buf + 8, &c, sizeof c);
	ingest_framer_feed(&f, buf, ring_frame_size(sizeof c), take, &g);
	assert_true(f.dropped == INGEST_COUNT_MAX);
	uint32_t bad[2] = {sizeof c + 8, MIXD_FRAME_COUNTS};
	memset(buf, 0, 64);
	memcpy(buf, bad, 8);
	assert_int_equal(ingest_framer_feed(&f, buf, 32, take, &g), -1);
	ingest_framer_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pieces_of_every_size_give_the_same_records),
		cmocka_unit_test(a_refused_record_is_retried_first),
		cmocka_unit_test(bad_frames_end_the_stream),
		cmocka_unit_test(counts_frames_are_added_up_not_handed_over),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
