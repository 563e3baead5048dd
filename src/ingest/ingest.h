/*
 * ingest -- how records reach mixd: producer rings in shared memory, the
 * unix-socket server (io_uring), and the record decoder.
 *
 * Threads: the socket server runs its own io thread. It accepts producers,
 * attaches their rings and hands them to a consumer (a shard, in agg) through
 * the ingest_sink callbacks; records that arrive on the socket itself are
 * copied into a per-sink queue ring that the same consumer drains. A ring is
 * consumed by exactly one thread at a time.
 *
 * Untrusted input: everything in a ring or on the socket. ingest_decode()
 * and the ring consumer bound-check every length; a bad record is rejected
 * and counted under a reason, never trusted further.
 */
#ifndef MIXD_INGEST_H
#define MIXD_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <mixd/ring.h>

#include "attr/attr.h"

/** Why a record (or a ring) was rejected. Exported as a metric label. */
enum ingest_reject {
	INGEST_REJ_NONE = 0,
	INGEST_REJ_TRUNCATED,  /**< an attribute runs past the record's end */
	INGEST_REJ_ATTRIBUTE,  /**< unknown dictionary id, bad inline name, or
				    unknown layout */
	INGEST_REJ_TYPE,       /**< unknown type, or not the declared type */
	INGEST_REJ_VALUE,      /**< bad IP length, bool, or string map */
	INGEST_REJ_FRAME,      /**< bad frame on the socket */
	INGEST_REJ_RING,       /**< corrupt ring: frames skipped to resync */
	INGEST_REJ_COUNT
};

/** Label value of a reject reason ("truncated", "attribute", ...). */
const char *ingest_reject_name(enum ingest_reject r);

/**
 * Decode one record payload into @t (which the caller cleared) against
 * @vocab: dictionary ids are slots; inline names are looked up in @vocab and
 * ignored when unknown. Values point into @p, so @p must outlive the use of
 * @t. A wire type must equal the declared type, except that the
 * string-like types (STRING, EMAIL, URI, DNS_NAME) stand for one another;
 * the value takes the declared type.
 * Returns INGEST_REJ_NONE or the reason the record is malformed (the first
 * malformation in the record, in the order the checks are documented in
 * codec.c); on a reject @t holds an unspecified part of the record and must
 * not be used.
 */
enum ingest_reject ingest_decode(const uint8_t *p, size_t len,
				 const struct attr_vocab *vocab,
				 struct attr_table *t);

/** Told of each attribute ingest_decode_reference() decodes: its whole
 *  encoding (@n bytes at @enc) and its slot, -1 for an undeclared name. */
typedef void (*ingest_encoding_fn)(void *ctx, const uint8_t *enc, size_t n,
				   int slot);

/**
 * The decoder's definition: one attribute at a time, every check in the
 * order that decides which reason a malformed record gets, no fast path.
 * ingest_decode() and ingest_decode_keyed() must agree with it on every
 * input (fuzz_decode checks). @each, if not NULL, is called per attribute.
 */
enum ingest_reject ingest_decode_reference(const uint8_t *p, size_t len,
					   const struct attr_vocab *vocab,
					   struct attr_table *t,
					   ingest_encoding_fn each, void *ctx);

/** Bytes an ingest_key's buffer must hold: a key is at most the record
 *  it was made from, and a layout record's at most 5 bytes a field more
 *  (a string's header and length in place of its u16 length). */
#define INGEST_KEY_ROOM (MIXD_RECORD_MAX + 5 * MIXD_LAYOUT_FIELDS)

/** The key ingest_decode_keyed() builds. */
struct ingest_key {
	uint8_t *buf; /**< in: INGEST_KEY_ROOM bytes */
	uint32_t len; /**< out: bytes of the key */
};

/** Which attributes ingest_decode_keyed() copies to the key, in the form
 *  its loop dispatches on. Build with ingest_keyspec_init(). */
struct ingest_keyspec {
	uint64_t mask[ATTR_PRESENT_WORDS]; /**< chosen slots */
	uint8_t kind[MIXD_ATTR_DICT_COUNT]; /**< per dictionary id (private) */
};

/** Choose the attributes whose slots are set in @mask (ATTR_PRESENT_WORDS
 *  words). */
void ingest_keyspec_init(struct ingest_keyspec *ks, const uint64_t *mask);

/**
 * ingest_decode(), also copying the encoding (header, inline name, value)
 * of each attribute @ks chooses to @k, in record order. A chosen attribute
 * costs its copy; the others cost nothing more than in ingest_decode(). An encoding determines its slot (given @vocab)
 * and its value, and encodings are self-delimiting, so two records with
 * equal keys have equal values in every chosen slot: a key for those
 * values, made on the decoder's way through the record. @len must be at
 * most MIXD_RECORD_MAX (as every ring and frame ensures), and @p must not
 * change while it is decoded: the key copies bytes the decoder has already
 * checked, and on changing memory the two could differ (ingest_ring_poll()
 * copies shared-memory records for this). Valid only when INGEST_REJ_NONE
 * is returned.
 */
enum ingest_reject ingest_decode_keyed(const uint8_t *p, size_t len,
				       const struct attr_vocab *vocab,
				       struct attr_table *t,
				       const struct ingest_keyspec *ks,
				       struct ingest_key *k);

/**
 * A layout (<mixd/ring.h>) as mixd keeps it: checked, with what decoding
 * its records needs. Fill with ingest_layout_load().
 */
struct ingest_layout {
	uint8_t n;                         /**< fields */
	uint8_t nword, nbool, nip;         /**< the groups; strings are the rest */
	uint32_t fixed;                    /**< bytes before the first IP or
					        string byte */
	/** Field i: its dictionary id | its declared type << 16, as a
	 *  header word. */
	uint32_t hw[MIXD_LAYOUT_FIELDS];
	uint64_t present[ATTR_PRESENT_WORDS]; /**< the slots of all fields */
	uint64_t serial; /**< unique to this load in the process, never 0 */
};

/**
 * Check layout slot @raw (a copy of the producer's bytes: it may be
 * anything) and fill @out. False when it is empty or breaks a rule of
 * <mixd/ring.h>: a field count of 0 or over MIXD_LAYOUT_FIELDS, an id
 * outside the dictionary, a type other than the declared one, a string
 * map, a repeated id, groups out of order, a nonzero padding byte.
 */
bool ingest_layout_load(struct ingest_layout *out,
			const struct mixd_layout *raw);

/**
 * Decode layout record @p of @len bytes (it starts with MIXD_ATTR_LAYOUT
 * and the slot @lay was loaded from) into @t, cleared by the caller. The
 * table comes out as ingest_decode() makes it from the record that lists
 * the same attributes with headers, in the layout's order; rejects are
 * TRUNCATED (lengths and values do not add up to @len exactly), VALUE (a
 * bool other than 0 or 1, an IP of neither 4 nor 16 bytes) and ATTRIBUTE
 * (a header byte that is not the layout's). With @ks and @k, also makes
 * the key ingest_decode_keyed() makes from that record: equal records of
 * either form have equal keys.
 */
enum ingest_reject ingest_decode_layout(const struct ingest_layout *lay,
					const uint8_t *p, size_t len,
					struct attr_table *t,
					const struct ingest_keyspec *ks,
					struct ingest_key *k);

/**
 * The compact key of a layout's records under a key spec: the chosen
 * fields' values alone, in layout order -- 8-byte values, bools, then a
 * u16 length per chosen IP or string, then their bytes. Two records of
 * one layout have equal compact keys exactly when their chosen fields
 * are equal; the caller tells layouts apart. Fill with
 * ingest_layout_key_init().
 */
struct ingest_layout_key {
	uint8_t nword, nbool, nrun;
	uint8_t word[MIXD_LAYOUT_FIELDS]; /**< chosen 8-byte values, by index */
	uint8_t bool_[MIXD_LAYOUT_FIELDS];/**< chosen bools, by index */
	/** Runs of consecutive chosen IPs and strings: the first's index
	 *  among them, how many. */
	uint8_t run_first[MIXD_LAYOUT_FIELDS], run_n[MIXD_LAYOUT_FIELDS];
};

/** The compact key of @lay's records under the choice @ks. */
void ingest_layout_key_init(struct ingest_layout_key *lk,
			    const struct ingest_layout *lay,
			    const struct ingest_keyspec *ks);

/**
 * Check layout record @p (@len bytes) of @lay, accepting exactly what
 * ingest_decode_layout() accepts, and write its compact key (@lk) to
 * @out, which holds @len bytes (a key is never longer than its record).
 * Returns its length; 0 when the record is malformed
 * (ingest_decode_layout() says why) or the key is empty (nothing chosen).
 * @p must hold still (a private copy): it is read more than once.
 */
uint32_t ingest_layout_key(const struct ingest_layout *lay,
			   const struct ingest_layout_key *lk,
			   const uint8_t *p, size_t len, uint8_t *out);

/* ---------------------------------------------------------------------- */
/* Consumer side of a ring.                                                */

/*
 * A producer's own tallies (dropped, invalid) and what a broken ring
 * loses are the producer's word: each step is taken up to
 * INGEST_STEP_MAX, and a sum stops at INGEST_COUNT_MAX, so that no lie
 * can wrap a counter and make it run backwards on /metrics.
 */
#define INGEST_STEP_MAX (1ull << 32)
#define INGEST_COUNT_MAX (1ull << 53) /* still exact as a double */

/** @sum + @step, each bounded as above. */
static inline uint64_t ingest_count_add(uint64_t sum, uint64_t step)
{
	if (step > INGEST_STEP_MAX)
		step = INGEST_STEP_MAX;
	return INGEST_COUNT_MAX - sum < step ? INGEST_COUNT_MAX : sum + step;
}

/*
 * Producers' words are also bounded in time. What they tell of their
 * losses (drops, refusals, a broken ring's) is added to a pending sum and
 * counted from it no faster than producers could lose records: a burst,
 * then INGEST_SAID_PER_S a second (a thread writing flat out drops a few
 * tens of millions). One allowance is shared by all the producers it
 * serves -- a shard's rings, or every socket connection -- so that no
 * reconnecting, and no number of liars, runs a sum up to INGEST_COUNT_MAX
 * (where nobody's losses would show any more) in under years; a true
 * count larger than the burst arrives late, but whole.
 */
#define INGEST_SAID_BURST (1ull << 24)
#define INGEST_SAID_PER_S 100000000ull

/** Which of a producer's tallies. */
enum ingest_said_kind {
	INGEST_SAID_DROPPED,
	INGEST_SAID_INVALID,
	INGEST_SAID_RING, /* a broken ring's records (INGEST_REJ_RING) */
	INGEST_SAID_KINDS
};

/** An allowance and what waits for it; zeroed, it starts with the burst.
 *  One thread's. */
struct ingest_said {
	uint64_t tokens, at_ns;
	uint64_t pending[INGEST_SAID_KINDS]; /* each at most INGEST_COUNT_MAX */
};

/** Add @n of kind @k to what @s has to count. */
static inline void ingest_said_add(struct ingest_said *s,
				   enum ingest_said_kind k, uint64_t n)
{
	s->pending[k] = ingest_count_add(s->pending[k], n);
}

/** True when @s has counts waiting for its allowance. */
static inline bool ingest_said_waiting(const struct ingest_said *s)
{
	return s->pending[0] | s->pending[1] | s->pending[2];
}

/** CLOCK_MONOTONIC_COARSE in ns: the allowance's clock, and the shards'. */
uint64_t ingest_now_coarse(void);

/** Move what the allowance lets of @s's pending counts into @out (by
 *  kind), added to what @out holds. No clock read when nothing waits. */
void ingest_said_count(struct ingest_said *s, uint64_t out[INGEST_SAID_KINDS]);

/** A ring attached for consuming: a producer's segment or a socket queue. */
struct ingest_ring;

/** Transport a ring's records arrived by (a metric label). */
enum ingest_transport {
	INGEST_SHM = 0,
	INGEST_SOCKET = 1,
	INGEST_TRANSPORT_COUNT
};

/** Label value: "shm" or "socket". */
const char *ingest_transport_name(enum ingest_transport t);

/**
 * Take a producer's memfd: check it is a regular file in shared memory
 * (tmpfs; -EBADF otherwise) that its producer sealed against shrinking
 * (-EPERM otherwise: adding the seal here would take a lock the producer
 * could hold), check its size and marker, map it. Takes ownership of @fd
 * (closed on failure too, by ingest_close_untrusted()). Returns 0 and the
 * ring, or -errno (-EPROTO: not a mixd ring; -EEXIST: a ring attached now,
 * until destroyed, has this segment; -ENOSPC: mapping it would take the
 * bytes of producers' segments mapped in this process beyond @limit, when
 * @limit is not 0).
 */
int ingest_ring_attach(int fd, uint64_t limit, struct ingest_ring **out);

/** Bytes of producers' segments mapped now in this process (attached
 *  rings, headers included, until ingest_ring_destroy()). */
uint64_t ingest_ring_mapped_bytes(void);

/**
 * Close @fd, received from a producer, without waiting on it: a socket is
 * first set to linger 0, so a close() with unsent data and SO_LINGER
 * cannot hold anyone, and the close() itself is made on a thread of its
 * own (a file on the producer's own FUSE filesystem would hold it until
 * the producer answered). Never calls into the file's filesystem here.
 */
void ingest_close_untrusted(int fd);

/** True while so many descriptors wait to be closed (one whose close
 *  does not return holds the rest) that no more should be taken. */
bool ingest_close_untrusted_backed_up(void);

/** Wait until every descriptor given to ingest_close_untrusted() so far is
 *  closed (for tests that count descriptors). */
void ingest_close_untrusted_wait(void);

/** The smallest socket queue: two of the largest frames, so that one
 *  always fits an empty queue wherever its head stands (a frame does not
 *  wrap; in a smaller ring one behind a short record never would, and its
 *  connection would wait for ever). */
#define INGEST_QUEUE_MIN (128u * 1024u)

/**
 * A private ring of @capacity bytes (a power of two, at least
 * INGEST_QUEUE_MIN; -EINVAL otherwise) that the socket server fills with
 * records received on the socket, for one consumer to drain.
 */
int ingest_ring_create_queue(uint64_t capacity, struct ingest_ring **out);

/** Unmap and free. The ring must no longer be in use. */
void ingest_ring_destroy(struct ingest_ring *r);

/** The allowance (owned by the thread that polls @r, outliving it) that
 *  shared ring @r's producer's tallies are counted through; until this
 *  is called, one of the ring's own. */
void ingest_ring_set_said(struct ingest_ring *r, struct ingest_said *s);

/**
 * Called for each record taken off a ring; returns the reject reason.
 * @lay: for a layout record, the layout its slot holds (decode it with
 * ingest_decode_layout()); NULL for any other record. A layout record
 * whose slot is empty or malformed, or that comes on a ring without
 * layouts, never reaches @fn: it is counted as INGEST_REJ_ATTRIBUTE.
 */
typedef enum ingest_reject (*ingest_record_fn)(void *ctx, const uint8_t *p,
					       uint32_t len,
					       const struct ingest_layout *lay);

/** How many records a poll takes and announces before it hands one over:
 *  two, so that a shard has a step for each of the three misses a record
 *  of a large memo takes (see state_ahead()). */
#define INGEST_AHEAD 2

/**
 * Told of each record as it is taken off the ring, in order, up to
 * INGEST_AHEAD records before @fn is called with it: a consumer can start
 * fetching what the record will need while the ones before it are
 * processed. @p stays valid and unchanged until @fn has been called with
 * it. Exactly the records that will reach @fn are announced.
 */
typedef void (*ingest_ahead_fn)(void *ctx, const uint8_t *p, uint32_t len,
				const struct ingest_layout *lay);

/** Bytes of the scratch buffer ingest_ring_poll() needs: a record and
 *  the INGEST_AHEAD taken after it. */
#define INGEST_POLL_SCRATCH ((INGEST_AHEAD + 1) * MIXD_RECORD_MAX)

/** Counters of one ring, owned by its consumer. */
struct ingest_ring_counts {
	uint64_t records;               /**< accepted */
	uint64_t rejected[INGEST_REJ_COUNT];
	uint64_t dropped;               /**< dropped by the producer (ring full) */
	uint64_t invalid;               /**< refused by the producer's builder */
};

/** ingest_said_count() into a ring's counts. */
void ingest_said_count_ring(struct ingest_said *s, struct ingest_ring_counts *n);

/**
 * Consume up to @budget records, calling @fn for each, and @ahead (when
 * not NULL) for each as it is taken, ahead of @fn. Adds to @counts
 * and returns the number of records taken (0 when empty). A corrupt ring
 * is resynchronised at the producer's head and the skipped records
 * counted as INGEST_REJ_RING; a ring whose head itself is invalid stops
 * being read.
 *
 * A shared-memory record is first copied to @scratch (INGEST_POLL_SCRATCH
 * bytes), and @fn sees the copy: the producer can still write to its
 * ring, and a record that changed while it was decoded and counted could
 * make a consumer remember one value under another (the record memo), so
 * decoding reads only memory the producer cannot reach. Queue rings are
 * mixd's own and are read in place.
 */
unsigned ingest_ring_poll(struct ingest_ring *r, ingest_record_fn fn,
			  ingest_ahead_fn ahead, void *ctx, unsigned budget,
			  struct ingest_ring_counts *counts, uint8_t *scratch);

/** True when every published record has been consumed. */
bool ingest_ring_empty(struct ingest_ring *r);

/** True once @r's head was found beyond reach (counted as one
 *  INGEST_REJ_RING): it is read no more. */
bool ingest_ring_dead(const struct ingest_ring *r);

/** Where @r's consumer is, in bytes (its private tail, which only moves
 *  forward), and the ring's capacity: a consumer that stops
 *  following a producer (closed, or mixd draining) takes at most one
 *  ring's worth more. */
uint64_t ingest_ring_consumed(const struct ingest_ring *r);
uint64_t ingest_ring_capacity(const struct ingest_ring *r);

/** True when the last ingest_ring_poll() left published records for the
 *  next one: its budget ran out, or it held back the line the producer
 *  was writing (see ring_cons_refresh()). Poll again soon: the next poll
 *  takes them. */
bool ingest_ring_left(const struct ingest_ring *r);

/** The transport whose records this ring carries. */
enum ingest_transport ingest_ring_transport(const struct ingest_ring *r);

/** Producer's pid as written in the segment (diagnostics only). */
uint32_t ingest_ring_pid(const struct ingest_ring *r);

/**
 * Producer end of a queue ring (the socket server's side). Returns false when
 * the queue is full: the caller holds the record back and retries later.
 */
bool ingest_queue_push(struct ingest_ring *q, const void *p, uint32_t len);

/* ---------------------------------------------------------------------- */
/* Frames on a byte stream (the socket transport).                         */

/** Called for each whole record; false refuses it (the queue is full). */
typedef bool (*ingest_frame_fn)(void *ctx, const uint8_t *p, uint32_t len);

/** Reassembly state of one stream. Zero-initialise. */
struct ingest_framer {
	uint8_t *part;      /* a frame split across pieces, being collected */
	uint32_t part_len;
	bool part_full;     /* part holds a whole frame @push refused */
	/** What the producer's counts frames (MIXD_FRAME_COUNTS) reported:
	 *  records it dropped and refused. The caller takes them (and zeroes
	 *  them) after each feed. */
	uint64_t dropped, invalid;
};

/**
 * Feed @n untrusted bytes of a stream: each whole frame's payload goes to
 * @push. Returns how many bytes were consumed -- fewer than @n when @push
 * refused a record (feed the rest later; a refused frame is retried
 * first) -- or -1 on a bad frame or ENOMEM, after which the stream cannot
 * be trusted.
 */
ssize_t ingest_framer_feed(struct ingest_framer *f, const uint8_t *p, size_t n,
			   ingest_frame_fn push, void *ctx);

/** True when no frame is half received or waiting to be pushed. */
bool ingest_framer_idle(const struct ingest_framer *f);

/** Free what @f holds; it is zeroed and may be used again. */
void ingest_framer_free(struct ingest_framer *f);

/* ---------------------------------------------------------------------- */
/* The socket server.                                                      */

/**
 * Where the server delivers work. Called on the io thread; each callback
 * must be quick and must not block.
 */
struct ingest_sink {
	/** A producer's ring arrived; return a token that identifies the
	 *  consumer now owning it (passed back to ring_closed), or NULL when
	 *  it could not be taken (out of memory): the ring is destroyed and
	 *  the connection is closed. */
	void *(*ring_attached)(void *ctx, struct ingest_ring *r);
	/** The producer's connection closed: drain @r, then destroy it. */
	void (*ring_closed)(void *ctx, void *token, struct ingest_ring *r);
	/** A stream connection opened: the queue ring its records go to. */
	struct ingest_ring *(*stream_queue)(void *ctx, unsigned conn_id);
	/** Records were pushed to @q: wake its consumer if it sleeps. */
	void (*queue_kick)(void *ctx, struct ingest_ring *q);
	void *ctx;
};

/** Counters of the socket server (read from any thread). */
struct ingest_server_stats {
	uint64_t connections;     /**< accepted, ever */
	uint64_t producers;       /**< connections now open */
	uint64_t stream_records;  /**< records queued from the socket */
	uint64_t stream_dropped;  /**< socket producers' drops (ring full),
				       as their counts frames reported */
	uint64_t stream_invalid;  /**< records their builders refused */
	uint64_t stream_dropped_waiting; /**< told, not yet counted: beyond
					      the allowance (ingest_said) */
	uint64_t stream_invalid_waiting; /**< the same of stream_invalid */
	uint64_t stream_rejected; /**< bad frames (the connection is closed) */
	uint64_t handshake_failed;/**< bad hello, bad memfd */
	uint64_t ring_memory_refused; /**< good hellos refused: their segments
					   would have gone beyond
					   ingest_limits.ring_bytes */
	uint64_t limit_reached;   /**< times accepting paused at the limit */
	uint64_t missed_wakeups;  /**< quiet connections' recvs re-armed with
				       the peer's close or bytes waiting */
};

struct ingest_server;

/**
 * The socket path of producer address @address ("unix:///path" or an
 * absolute path that fits a sockaddr_un), or NULL when it is not one.
 */
const char *ingest_address_path(const char *address);

/**
 * Listen on the unix socket @path (non-blocking accepts are the caller's
 * to arrange): a stale socket file of an earlier run is replaced, a live
 * one (another mixd) or a file that is not a socket is not. *@ino gets
 * the socket file's inode, for ingest_unlink_socket(). Returns the
 * listening descriptor, or -errno with the reason in @err.
 */
int ingest_listen_unix(const char *path, ino_t *ino, char *err,
		       size_t errlen);

/** Remove the socket file @path if it is still the one of inode @ino
 *  (never one another process has put there since). */
void ingest_unlink_socket(const char *path, ino_t ino);

/** What an ingest server takes at most; a zero field: no limit. */
struct ingest_limits {
	/** Connections open at once: there, accepting pauses (counted,
	 *  limit_reached), and newcomers wait in the socket's backlog, their
	 *  records in their rings or socket buffers, until a connection
	 *  closes; with the backlog full, their connect() fails and they
	 *  retry after a backoff. */
	unsigned producers;
	/** Bytes of producers' segments mapped at once
	 *  (ingest_ring_mapped_bytes()): a shared-memory hello whose segment
	 *  would go beyond is refused (counted, ring_memory_refused), and its
	 *  producer retries after a backoff, its records in its ring. */
	uint64_t ring_bytes;
};

/**
 * Listen on @address ("unix:///path" or an absolute path) and start the io
 * thread, within @lim (NULL: no limits). An existing socket file at the
 * path is replaced. Returns 0 or -errno, with a message in @err.
 */
int ingest_server_start(const char *address, const struct ingest_sink *sink,
			const struct ingest_limits *lim,
			struct ingest_server **out, char *err, size_t errlen);

/** Stop accepting and close the listening socket (connections stay). */
void ingest_server_stop_accepting(struct ingest_server *s);

/** Stop the io thread, close everything, free. Rings already handed to a
 *  sink are the sink's. */
void ingest_server_destroy(struct ingest_server *s);

/** Snapshot of the counters. */
void ingest_server_stats(struct ingest_server *s, struct ingest_server_stats *out);

#endif /* MIXD_INGEST_H */
