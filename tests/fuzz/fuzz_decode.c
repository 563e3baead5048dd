/*
 * fuzz_decode -- everything mixd reads from a producer is untrusted: a
 * record payload (ingest_decode) and a whole ring segment (attach, then
 * consume). Corrupt input must be rejected and counted, never crash.
 *
 * Input: first byte selects the target; the rest is a record payload, or
 * the bytes of a segment (header then data) that is padded to the smallest
 * ring a consumer accepts.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mixd/ring.h>

#include "attr/attr.h"
#include "ingest/ingest.h"

static struct attr_vocab *vocab;
static struct attr_table table;

static enum ingest_reject decode(void *ctx, const uint8_t *p, uint32_t len)
{
	attr_table_clear(&table);
	enum ingest_reject rc = ingest_decode(p, len, vocab, &table);
	if (rc == INGEST_REJ_NONE) {
		/* Touch every value the decoder accepted, as the pipeline
		 * would: maps must be walkable within their bounds. */
		for (unsigned s = 0; s < ATTR_MAX_SLOTS; s++) {
			const struct attr_value *v = attr_table_get(&table, s);
			struct attr_value e;
			if (v && v->type == ATTR_STRING_MAP)
				(void)attr_map_get(v, "version", 7, &e);
		}
	}
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!vocab) {
		vocab = attr_vocab_create();
		attr_vocab_add(vocab, "x.custom", ATTR_DOUBLE, NULL);
	}
	if (size < 1)
		return 0;
	if (data[0] & 1) {
		decode(NULL, data + 1, size - 1);
		return 0;
	}
	/* A whole segment: the producer controls every byte of it. */
	size_t seg = MIXD_RING_HDR_SIZE + MIXD_RING_MIN_CAPACITY;
	int fd = memfd_create("fuzz-ring", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (ftruncate(fd, (off_t)seg) != 0) {
		close(fd);
		return 0;
	}
	size_t n = size - 1 < seg ? size - 1 : seg;
	if (pwrite(fd, data + 1, n, 0) != (ssize_t)n) {
		close(fd);
		return 0;
	}
	struct ingest_ring *r;
	if (ingest_ring_attach(fd, &r) != 0)
		return 0; /* refused: fine */
	struct ingest_ring_counts counts;
	memset(&counts, 0, sizeof counts);
	for (int i = 0; i < 4; i++)
		ingest_ring_poll(r, decode, NULL, 256, &counts);
	(void)ingest_ring_empty(r);
	ingest_ring_destroy(r);
	return 0;
}
