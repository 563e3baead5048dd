/*
 * mixd/ring.h -- the producer ABI: shared-memory ring layout, record framing,
 * record encoding and the socket handshake. Version 2 (version 1 is version 2
 * without layouts). mixd reads both; a libmixd that writes v2 needs a mixd
 * that reads it, so upgrade mixd before its producers.
 *
 * This header owns every byte that crosses from a producer (a proxy linking
 * libmixd) to mixd. Only these files may include it: src/ingest/client.c
 * (libmixd), src/ingest/ (ring consumer, codec, socket server) and tests.
 * Change nothing here without bumping MIXD_RING_MARKER; a consumer refuses a
 * segment whose marker it does not know.
 *
 * Segment: one memfd per producer thread, created with MFD_ALLOW_SEALING,
 * sealed with F_SEAL_SHRINK by the producer, and handed to mixd over the
 * unix socket with SCM_RIGHTS. mixd refuses a memfd without that seal
 * (it checks, it does not add it), so a producer that truncates its memfd
 * cannot make mixd fault.
 *
 *   offset 0      64          128         192       256               4096
 *   +-------------+-----------+-----------+---------+------ ... ------+-------------+
 *   | identity    | producer  | consumer  | reserved| layouts (v2)    | data[cap]   |
 *   | (write once)| line      | line      |         | 30 x 128 bytes  | (power of 2)|
 *   +-------------+-----------+-----------+---------+------ ... ------+-------------+
 *
 * head and tail are byte counters that only grow; a position in data is
 * counter & (capacity - 1). The producer owns head, the consumer owns tail;
 * they sit on separate cache lines so neither side's stores invalidate the
 * other's line on every record.
 *
 * A frame in data, always 8-byte aligned, never split across the end:
 *
 *    0        4        8                       8+len     align8(8+len)
 *    +--------+--------+-----------------------+---------+
 *    |  len   |  mark  |  payload (len bytes)  | padding |
 *    +--------+--------+-----------------------+---------+
 *      u32 LE   u32 LE
 *
 *   mark == MIXD_FRAME_RECORD: a record, payload as drawn below.
 *   mark == MIXD_FRAME_WRAP:   nothing more before the end of data; the next
 *                              frame starts at position 0. len is 0.
 * Anything else is corruption: the consumer resynchronises at head.
 *
 * Publication: the producer writes the whole frame, then store-releases head.
 * A producer killed mid-record therefore never published it; the ring is
 * never stuck on a half-written frame.
 *
 * Record payload: a sequence of attributes, packed, little-endian, unaligned:
 *
 *    +--------+------+ - - - - - - - - - - - - - - - +---------------+
 *    | id u16 | type | name_len u16 | name bytes     |    value      |
 *    +--------+------+ - - only when id == INLINE - -+---------------+
 *
 *   value by type (enum mixd_type in mixd/attributes.h):
 *     STRING, BYTES, EMAIL, URI, DNS_NAME   u32 len, bytes
 *     INT64, TIMESTAMP, DURATION            i64
 *     DOUBLE                                f64
 *     BOOL                                  u8 (0 or 1)
 *     IP                                    u8 len (4 or 16), bytes
 *     STRING_MAP                            u32 n, n x (u32 klen, key,
 *                                                       u32 vlen, value)
 *
 * Layout records (v2, shared memory only). A producer that sends records of
 * one fixed shape (a template) describes the shape once, in a layout slot of
 * its segment's header, before the first record that names it; it never
 * changes a slot afterwards. A slot (struct mixd_layout) lists up to
 * MIXD_LAYOUT_FIELDS dictionary attributes, each with its declared type,
 * none twice, grouped in this order: 8-byte values (INT64, DOUBLE,
 * TIMESTAMP, DURATION), BOOLs, IPs, then the string-like types and BYTES.
 * A record of the layout then carries only values:
 *
 *    +--------+------+------+---------------+----------+-----------+-------+
 *    | 0xFFFE | slot | 0    | 8-byte values | bools    | u16 len   | bytes |
 *    |  u16   |  u8  |  u8  | (in order)    | u8 (0,1) | per IP and| in    |
 *    |        |      |      |               | each     | string    | order |
 *    +--------+------+------+---------------+----------+-----------+-------+
 *
 *   and decodes exactly as the record that lists the same attributes, in
 *   the layout's order, with headers. Its length is exact: no byte before or
 *   after the values. The slot is read when the first record naming it is
 *   consumed, the record's publication ordering it; mixd keeps its own
 *   copy of each slot it has read, so a slot rewritten later is not seen.
 *   A record naming a slot that is empty or malformed is rejected.
 *
 * Socket transport: the same frames, back to back, on a stream connection
 * whose first message is a mixd_hello with kind MIXD_HELLO_STREAM; and,
 * between records, MIXD_FRAME_COUNTS frames (struct mixd_frame_counts):
 * what the producer dropped (its ring full) and refused (invalid records)
 * since its previous counts frame, which a shared-memory producer's header
 * tells mixd instead. (Added with hello version 1 unchanged: a mixd built
 * before counts frames existed takes one for a bad frame and closes the
 * connection; run a mixd at least as new as its producers' libmixd.) A
 * shared-memory producer sends a mixd_hello with kind MIXD_HELLO_SHM and the
 * memfd as SCM_RIGHTS ancillary data, then nothing; closing the connection
 * tells mixd to drain the ring and release it.
 */
#ifndef MIXD_RING_H
#define MIXD_RING_H

#include <stdint.h>

#include "attributes.h"

/** The marker doubles as the ABI version. */
#define MIXD_RING_MARKER "MIXD-RING-v2\n"
/** The version before layouts; consumers still read it. */
#define MIXD_RING_MARKER_V1 "MIXD-RING-v1\n"
#define MIXD_RING_MARKER_LEN 16

/** Bytes before data; a page so that data is page-aligned. */
#define MIXD_RING_HDR_SIZE 4096u

/** Smallest and largest data capacity a consumer accepts. */
#define MIXD_RING_MIN_CAPACITY (64u * 1024u)
#define MIXD_RING_MAX_CAPACITY (256u * 1024u * 1024u)

/** Largest payload of one record, on either transport. */
#define MIXD_RECORD_MAX (64u * 1024u - 8u)

/** Frame marks. Chosen to be unlikely in zeroed or text-filled memory. */
#define MIXD_FRAME_RECORD 0x3152584Du /* "MXR1" little-endian */
#define MIXD_FRAME_WRAP 0x3157584Du   /* "MXW1" little-endian */
#define MIXD_FRAME_COUNTS 0x3143584Du /* "MXC1" little-endian; socket only */

/** Payload of a MIXD_FRAME_COUNTS frame: records lost since the last one. */
struct mixd_frame_counts {
	uint64_t dropped; /**< the producer's ring was full */
	uint64_t invalid; /**< the producer's builder refused them */
};

/** Frame header size and alignment. */
#define MIXD_FRAME_HDR 8u
#define MIXD_FRAME_ALIGN(n) (((n) + 7u) & ~(uint64_t)7u)

/** Identity line: written once by the producer before the segment is sent. */
struct mixd_ring_ident {
	char marker[MIXD_RING_MARKER_LEN]; /**< MIXD_RING_MARKER, NUL padded */
	uint64_t capacity;                 /**< data bytes, power of two */
	uint64_t created_ns;               /**< CLOCK_REALTIME at creation */
	uint32_t pid;                      /**< producer process (diagnostics) */
	uint32_t tid;                      /**< producer thread (diagnostics) */
	uint8_t reserved_[24];
};

/** Producer line: written only by the producer thread. */
struct mixd_ring_prod {
	uint64_t head;    /**< bytes ever published; store-release after a frame */
	uint64_t written; /**< records committed (the producer's own count) */
	uint64_t dropped; /**< records dropped by the producer: ring full */
	uint64_t invalid; /**< records the producer's builder refused (too
			       large, bad value): never written */
	uint8_t reserved_[32];
};

/** Consumer line: written only by the consumer (mixd). */
struct mixd_ring_cons {
	uint64_t tail;         /**< bytes ever consumed; store-release */
	uint64_t consumed;     /**< records taken off the ring (any outcome) */
	uint64_t dropped_seen; /**< prod.dropped already accounted by a mixd */
	uint64_t invalid_seen; /**< prod.invalid already accounted by a mixd */
	uint8_t reserved_[32];
};

/** The segment header. Lives at offset 0 of the memfd. */
struct mixd_ring_hdr {
	struct mixd_ring_ident ident;
	struct mixd_ring_prod prod;
	struct mixd_ring_cons cons;
};

_Static_assert(sizeof(struct mixd_ring_ident) == 64, "ident is one line");
_Static_assert(sizeof(struct mixd_ring_prod) == 64, "prod is one line");
_Static_assert(sizeof(struct mixd_ring_cons) == 64, "cons is one line");
_Static_assert(sizeof(struct mixd_ring_hdr) <= MIXD_RING_HDR_SIZE,
	       "header fits before data");

/** Layout slots (v2): where they start, how many, and the most fields a
 *  slot lists; a slot is a struct mixd_layout, 128 bytes. */
#define MIXD_LAYOUT_OFFSET 256u
#define MIXD_LAYOUT_SLOTS 30u
#define MIXD_LAYOUT_FIELDS 31u

/** The attribute id that starts a layout record. */
#define MIXD_ATTR_LAYOUT 0xFFFEu

/** One field of a layout: a dictionary attribute and its declared type. */
struct mixd_layout_field {
	uint16_t id;
	uint8_t type;
	uint8_t zero_; /**< 0 */
};

/** A layout slot. Empty while @n is 0. */
struct mixd_layout {
	uint32_t n; /**< fields, 1..MIXD_LAYOUT_FIELDS */
	struct mixd_layout_field f[MIXD_LAYOUT_FIELDS];
};

_Static_assert(sizeof(struct mixd_layout) == 128, "a layout is two lines");
_Static_assert(MIXD_LAYOUT_OFFSET + MIXD_LAYOUT_SLOTS * 128 <=
		       MIXD_RING_HDR_SIZE,
	       "layouts fit in the header page");

/** Handshake kinds. */
enum mixd_hello_kind {
	MIXD_HELLO_SHM = 1,    /**< a memfd ring travels as SCM_RIGHTS */
	MIXD_HELLO_STREAM = 2, /**< frames follow on this connection */
};

#define MIXD_HELLO_MARKER "MIXDHELO"

/** First message on every producer connection. */
struct mixd_hello {
	char marker[8];   /**< MIXD_HELLO_MARKER, no NUL */
	uint32_t version; /**< 1 */
	uint32_t kind;    /**< enum mixd_hello_kind */
};

#define MIXD_HELLO_VERSION 1u

#endif /* MIXD_RING_H */
