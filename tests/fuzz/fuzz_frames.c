/*
 * fuzz_frames -- the socket transport's byte stream is untrusted and comes
 * in arbitrary pieces. Input: byte 0 seeds the piece sizes and how often
 * the consumer refuses a record; the rest is the stream. Every record that
 * comes out is decoded as mixd would.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "attr/attr.h"
#include "ingest/ingest.h"

static struct attr_vocab *vocab;
static struct attr_table table;

struct sink {
	unsigned calls, refuse_every;
};

static bool take(void *ctx, const uint8_t *p, uint32_t len)
{
	struct sink *s = ctx;
	if (s->refuse_every && ++s->calls % s->refuse_every == 0)
		return false; /* the queue is full: retried on the next feed */
	attr_table_clear(&table);
	(void)ingest_decode(p, len, vocab, &table);
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!vocab)
		vocab = attr_vocab_create();
	if (size < 1)
		return 0;
	unsigned seed = data[0];
	struct sink s = {0, seed & 7};
	struct ingest_framer f = {0};
	const uint8_t *p = data + 1;
	size_t left = size - 1;
	while (left) {
		size_t piece = 1 + (seed = seed * 33 + 7) % 97;
		if (piece > left)
			piece = left;
		size_t off = 0;
		int stuck = 0;
		while (off < piece) {
			ssize_t k = ingest_framer_feed(&f, p + off, piece - off, take, &s);
			if (k < 0)
				goto out; /* bad frame: the stream is dropped */
			off += (size_t)k;
			if (k == 0 && ++stuck > 2)
				break;
		}
		p += piece;
		left -= piece;
	}
out:
	ingest_framer_free(&f);
	return 0;
}
