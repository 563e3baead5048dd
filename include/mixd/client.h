/*
 * mixd/client.h -- libmixd, the producer library a proxy links to hand mixd
 * one attribute record per request or connection.
 *
 * Contract:
 *  - The calling thread never blocks and never makes a system call per
 *    record: a record is built in thread-local memory and copied into the
 *    thread's own ring on commit. The first record of a thread creates that
 *    ring (a memfd: a few system calls, once) and registers it with the
 *    client under a lock the background thread also takes, briefly, while
 *    it connects or sends; mixd_client_stats() takes it too.
 *  - No allocation per record.
 *  - A full ring drops the record and counts it; nothing is lost silently,
 *    with two exceptions, both over the socket transport: records already
 *    in the kernel's socket buffers when mixd dies are lost uncounted (a
 *    socket carries no acknowledgement), and so are records and drops not
 *    yet sent when the client is closed without mixd_client_flush(). A
 *    shared-memory ring has no such window: a restarted mixd takes it back
 *    where the last one stopped, and a closed client's rings stay
 *    readable.
 *  - mixd need not be running. A background thread connects, hands over each
 *    ring, and reconnects (with backoff) when mixd restarts; a restarted mixd
 *    drains what was written while it was down, up to the ring's capacity.
 *  - Thread-safe: any number of threads may record through one client.
 *    Each thread that records costs the host up to three descriptors (its
 *    ring's memfd with the shared-memory transport, a wakeup eventfd, and
 *    its connection to mixd) until it exits and mixd has drained its ring:
 *    count them against RLIMIT_NOFILE.
 *  - Not async-signal-safe: no function here may be called from a signal
 *    handler (one that interrupts its own thread's record would corrupt
 *    that thread's ring, and one on a thread holding the client's lock
 *    would deadlock). The background thread, named "mixd-client", blocks
 *    every signal, so the host's signals go to the host's threads.
 *  - A client belongs to the process that opened it. In a child made by
 *    fork(), records through the parent's clients are dropped and counted
 *    (dropped_full), a record begun before the fork and committed after
 *    it included; mixd_client_flush() returns 0 at once and
 *    mixd_client_close() only forgets the client; the parent's rings are
 *    never written from the child, and the child has none of its parent's
 *    rings and connections to mixd: their mappings are not inherited and
 *    their descriptors are closed at the fork (so a long-lived child keeps
 *    neither a ring its parent is done with alive in mixd, nor the memory
 *    behind it). fork() waits for each client's background thread to
 *    finish its current pass, and for a thread making its ring or a
 *    client being opened to finish that. A child opens a client of its
 *    own.
 *
 * Three ways to write a record, slowest first: the builder
 * (mixd_record_begin(), one setter per attribute, mixd_record_commit()) for
 * code that discovers attributes one at a time; mixd_report(), the whole
 * record as an array of values; and a record template
 * (mixd_template_create() once, mixd_template_report() per record) for
 * records of a fixed shape, the cheapest per record.
 *
 * Links nothing but libc (and libpthread, part of libc on current glibc).
 *
 * Example:
 *
 *   mixd_client *c;
 *   if (mixd_client_open("unix:///sock/mixer.socket", NULL, &c) != 0)
 *           abort();
 *   mixd_record *r = mixd_record_begin(c);
 *   mixd_set_cstr(r, MIXD_ATTR_CONTEXT_PROTOCOL, "http");
 *   mixd_set_int64(r, MIXD_ATTR_RESPONSE_CODE, 200);
 *   mixd_set_duration(r, MIXD_ATTR_RESPONSE_DURATION, 15 * 1000000);
 *   mixd_record_commit(r);
 *   ...
 *   mixd_client_close(c);
 */
#ifndef MIXD_CLIENT_H
#define MIXD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "attributes.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A connection to mixd shared by all threads of a process. Opaque. */
typedef struct mixd_client mixd_client;

/** The calling thread's record under construction. Opaque. */
typedef struct mixd_record mixd_record;

/**
 * An attribute: a dictionary id (enum mixd_attr_id, MIXD_ATTR_*) or a handle
 * returned by mixd_attr_custom() for a name outside the dictionary.
 */
typedef uint16_t mixd_attr;

/** How records travel to mixd. */
enum mixd_transport {
	/** Shared-memory ring per thread; no system call per record. */
	MIXD_TRANSPORT_SHM = 0,
	/**
	 * Length-framed records over the unix socket, for producers that cannot
	 * map shared memory with mixd. Records still go through a private
	 * per-thread ring; the background thread sends them in batches.
	 */
	MIXD_TRANSPORT_SOCKET = 1,
};

/** Ring data bytes per producer thread when the options ask for none
 *  (about 4,000 proxy-sized records). */
#define MIXD_RING_BYTES_DEFAULT (1u << 20)

/** Options for mixd_client_open(). Zero means "default" for every field. */
struct mixd_client_options {
	enum mixd_transport transport; /**< default MIXD_TRANSPORT_SHM */
	/** Ring data bytes per producer thread, a power of two between 256 KiB
	 *  and 256 MiB; default MIXD_RING_BYTES_DEFAULT. */
	uint32_t ring_bytes;
	/** Longest wait between reconnection attempts; default 1000 ms. */
	uint32_t reconnect_max_ms;
};

/**
 * Open a client on @address ("unix:///path/to/socket", or a bare absolute
 * path). Returns at once: connecting happens in the background.
 * @opts may be NULL. On success stores the client in *@out and returns 0;
 * otherwise returns -EINVAL (bad address or options) or -ENOMEM / -errno
 * from starting the background thread.
 */
int mixd_client_open(const char *address,
		     const struct mixd_client_options *opts, mixd_client **out);

/**
 * Stop the background thread, close every connection and free the client.
 * Records still in a shared-memory ring stay readable by mixd, which drains a
 * ring before releasing it; call mixd_client_flush() first to wait for that.
 * Over the socket transport each connection is given what its socket takes
 * at once; records it does not take, and drops mixd was not yet told of,
 * are lost with the client: call mixd_client_flush() first, which waits
 * for both. Never blocks beyond the background thread's current pass.
 * No thread may use @c, or a record from it, during or after this call.
 */
void mixd_client_close(mixd_client *c);

/**
 * Wait up to @timeout_ms for mixd to take every record committed before the
 * call (shared memory: consumed from the rings; socket: written to the
 * socket, and the drops until then told), whatever other threads commit
 * meanwhile; a negative @timeout_ms waits as long as that takes. Returns 0,
 * -ETIMEDOUT, or -ENOMEM. This is the one call that may block.
 */
int mixd_client_flush(mixd_client *c, int timeout_ms);

/** Counters of one client, summed over its threads. */
struct mixd_client_stats {
	uint64_t written;           /**< records committed into a ring. Not
					 monotonic: those of a ring let go
					 unread (see dropped_full) move from
					 here to dropped_full, so that written
					 + dropped stays every record tried */
	uint64_t dropped;           /**< records dropped: the sum of the two below */
	uint64_t dropped_full;      /**< ... because the thread's ring was full,
					 or it could have none (no memory for
					 it when its first record came), or
					 the thread exited while mixd was
					 away and 64 newer exited threads'
					 rings were kept instead */
	uint64_t dropped_invalid;   /**< ... because they were malformed: larger
					 than MIXD_RECORD_MAX, an IP of a bad
					 length, an unknown attribute handle,
					 an attribute of the wrong type */
	uint64_t bytes;             /**< ring bytes those records took, framing
					 included (rings alive now) */
	uint32_t rings;             /**< producer rings now (threads that recorded
					 and are alive, or whose ring mixd has
					 not drained yet) */
	uint32_t connected;         /**< rings currently handed to a live mixd */
};

/** Fill *@out with @c's counters. Cheap; callable from any thread. */
void mixd_client_stats(mixd_client *c, struct mixd_client_stats *out);

/**
 * Records committed to @c's rings that have not reached mixd: what would
 * be lost if the process exited now. With the shared-memory transport,
 * the records of rings mixd has not been handed (it is down, or not
 * reached yet); a ring mixd holds is drained by it after the producer is
 * gone, so its records are not counted, taken or not. With the socket
 * transport, records not yet written to mixd's connection (one written to
 * it counts as reached, though a mixd that dies before reading it loses
 * it). Call it after mixd_client_flush() timed out, to say how many are
 * lost. Cheap; callable from any thread. 0 in a forked child.
 */
uint64_t mixd_client_pending(mixd_client *c);

/**
 * Dictionary id of a well-known attribute @name, or -1 if it has none.
 * Not for the per-record path: resolve names once, up front.
 */
int mixd_attr_lookup(const char *name);

/** Value type the dictionary declares for id @a (enum mixd_type), or 0. */
int mixd_attr_type(mixd_attr a);

/** The longest attribute name a record can carry: <mixd/ring.h>'s
 *  MIXD_RECORD_MAX less the name's 5-byte header and a 1-byte value. */
#define MIXD_ATTR_NAME_MAX 65522u

/**
 * A handle for an attribute name outside the dictionary; records carry the
 * name inline. Returns the dictionary id instead if @name has one. At most
 * 1024 custom names per client, each of 1 to MIXD_ATTR_NAME_MAX bytes
 * (longer: -EINVAL). Returns 0 and stores the handle, or -EINVAL /
 * -ENOSPC / -ENOMEM. In a child forked from the process that opened @c, the names @c
 * had at the fork are found and a new one is refused with -ECHILD (records
 * through a parent's client are dropped in a child anyway).
 */
int mixd_attr_custom(mixd_client *c, const char *name, mixd_attr *out);

/**
 * Start a record on the calling thread and return its builder. Never NULL
 * and never blocks. A record already begun on this thread and client is
 * discarded (uncounted) and restarted.
 */
mixd_record *mixd_record_begin(mixd_client *c);

/**
 * Setters. Each appends one attribute to @r. A value of the wrong width
 * (an IP of a length other than 4 or 16), an attribute that is neither a
 * dictionary id nor a handle from mixd_attr_custom(), a dictionary
 * attribute set with another type than its own (the string types, not
 * BYTES, stand for one another; mixd would refuse the whole record), or a
 * record outgrowing MIXD_RECORD_MAX marks @r invalid; its commit then
 * drops it and counts it.
 * Setters copy their arguments; the caller's buffers are free on return.
 */
void mixd_set_string(mixd_record *r, mixd_attr a, const char *s, size_t len);
/** As mixd_set_string() for a NUL-terminated @s. */
void mixd_set_cstr(mixd_record *r, mixd_attr a, const char *s);
/**
 * A string tagged @t: MIXD_T_EMAIL, MIXD_T_URI or MIXD_T_DNS_NAME (or
 * MIXD_T_STRING, as mixd_set_string()). Any other @t, MIXD_T_BYTES included
 * (see mixd_set_bytes()), marks @r invalid.
 */
void mixd_set_typed_string(mixd_record *r, mixd_attr a, enum mixd_type t,
			   const char *s, size_t len);
void mixd_set_int64(mixd_record *r, mixd_attr a, int64_t v);
void mixd_set_double(mixd_record *r, mixd_attr a, double v);
void mixd_set_bool(mixd_record *r, mixd_attr a, int v);
/** @ns: nanoseconds since the Unix epoch. */
void mixd_set_timestamp(mixd_record *r, mixd_attr a, int64_t ns);
/** @ns: nanoseconds. */
void mixd_set_duration(mixd_record *r, mixd_attr a, int64_t ns);
/** @addr: 4 bytes (IPv4) or 16 bytes (IPv6) in network order. */
void mixd_set_ip(mixd_record *r, mixd_attr a, const void *addr, size_t len);
/** @len bytes at @p, any values, NUL included, tagged MIXD_T_BYTES. */
void mixd_set_bytes(mixd_record *r, mixd_attr a, const void *p, size_t len);

/** One entry of a string map. */
struct mixd_kv {
	const char *key;
	size_t key_len;
	const char *value;
	size_t value_len;
};

/** A string map of @n entries. */
void mixd_set_string_map(mixd_record *r, mixd_attr a, const struct mixd_kv *kv,
			 size_t n);

/**
 * Publish @r to mixd. Returns 0 when the record is in the ring, -ENOBUFS when
 * the ring was full, -EMSGSIZE when the record was invalid, -ENOMEM when
 * the thread could not get a ring. Every non-zero return is counted as
 * dropped. @r is finished either way. -EINVAL, uncounted, for a check's
 * builder (mixd_check_begin()), which is sent with mixd_check_record().
 */
int mixd_record_commit(mixd_record *r);

/** Forget @r without counting it. */
void mixd_record_abort(mixd_record *r);

/**
 * One attribute of a record for mixd_report(): the whole record as an array,
 * for a proxy that has its attributes at hand anyway. Pointers are read
 * during the call only.
 */
struct mixd_value {
	mixd_attr attr; /**< dictionary id or custom handle */
	uint8_t type;   /**< enum mixd_type */
	uint32_t len;   /**< bytes (string-like, BYTES, IP: 4 or 16), or
			     entries (STRING_MAP); unused otherwise */
	union {
		int64_t i;   /**< INT64; TIMESTAMP and DURATION in ns */
		double d;    /**< DOUBLE */
		int b;       /**< BOOL */
		const void *p; /**< string-like, BYTES, IP */
		const struct mixd_kv *map; /**< STRING_MAP */
	};
};

/**
 * Write a record of @n attributes in one call. Encodes
 * straight into the calling thread's ring; nothing is copied twice. Same
 * returns and accounting as mixd_record_commit(); -EMSGSIZE also for a value
 * of an unknown type, a bad length, or a type a dictionary attribute does
 * not have (as the setters). Does not disturb a record begun with
 * mixd_record_begin() on the same thread.
 */
int mixd_report(mixd_client *c, const struct mixd_value *v, size_t n);

/*
 * Record templates: the fastest way in, for a proxy whose records have the
 * same shape every time (Envoy's per-request report: the same twenty-odd
 * attributes, only the values change). The attribute ids and types are
 * given once, to mixd_template_create(); per record the proxy fills an array
 * of values in the template's order and calls mixd_template_report(), which
 * encodes them into the calling thread's ring with no per-attribute lookup,
 * type dispatch or validation beyond what a value's length needs.
 *
 *   static const struct mixd_field fields[] = {
 *           {MIXD_ATTR_REQUEST_PATH, MIXD_T_STRING},
 *           {MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64},
 *           {MIXD_ATTR_RESPONSE_DURATION, MIXD_T_DURATION},
 *   };
 *   mixd_template *t;
 *   if (mixd_template_create(c, fields, 3, &t) != 0)
 *           abort();
 *   ...per request:
 *   struct mixd_slot v[3];
 *   v[0].p = path, v[0].len = path_len;
 *   v[1].i = status;
 *   v[2].i = duration_ns;
 *   mixd_template_report(t, v, 0);
 *
 * Fill the array by assignment, as above, or keep one per thread and
 * change only what differs: an initializer list ("= {{.p = path}, ...}")
 * makes the compiler zero the whole array before storing the values,
 * which for twenty slots cost GCC 12 about 25 ns a record, a quarter of
 * the benchmark's time.
 */

/** The largest number of fields a template has. */
#define MIXD_TEMPLATE_MAX 64

/** One attribute of a template: what every record made from it carries. */
struct mixd_field {
	mixd_attr attr; /**< dictionary id or custom handle */
	uint8_t type;   /**< enum mixd_type */
};

/** The value of one template field in one record. */
struct mixd_slot {
	union {
		int64_t i;   /**< INT64; TIMESTAMP and DURATION in ns */
		double d;    /**< DOUBLE */
		int b;       /**< BOOL */
		const void *p; /**< string-like, BYTES, IP */
		const struct mixd_kv *map; /**< STRING_MAP */
	};
	uint32_t len; /**< bytes (string-like, BYTES, IP: 4 or 16), or entries
			   (STRING_MAP); unused otherwise */
};

/** A prepared record layout. Opaque; read-only once created. */
typedef struct mixd_template mixd_template;

/**
 * Prepare a template of @n fields (at most MIXD_TEMPLATE_MAX) for records to
 * @c. Each field's attribute must be a dictionary id or a handle from
 * mixd_attr_custom() on @c, and its type a valid enum mixd_type; a
 * dictionary attribute's type its own (mixd_attr_type()), or for a string
 * attribute another of STRING, EMAIL, URI, DNS_NAME. The fields are
 * copied. Returns 0 and stores the template in *@out, or -EINVAL (a bad
 * field, or too many) or -ENOMEM. Not for the per-record path: create
 * templates once, up front. Dictionary fields of every type but STRING_MAP
 * take the fast path; a template with a custom name or a string map still
 * works, at mixd_report()'s cost. Fastest of all is a template whose
 * attributes are all distinct: its records are written straight into the
 * ring, fixed-width fields first, in the same order whichever fields a
 * record leaves out (mixd's values do not depend on the order, but its
 * shards remember records by the bytes of the attributes they read, so
 * one order per template means one entry per combination of values).
 */
int mixd_template_create(mixd_client *c, const struct mixd_field *fields,
			 size_t n, mixd_template **out);

/**
 * Write one record made from @t: field i of the template with value @v[i].
 * Bit i of @omit leaves field i out of this record (for an attribute the
 * proxy does not have this time); @v[i] is then not read. Thread-safe: any
 * thread may report through one template, each into its own ring, as with
 * mixd_report(). Never blocks, never allocates. Same returns and accounting
 * as mixd_record_commit(): 0, -ENOBUFS (ring full), -EMSGSIZE (an IP of a
 * length other than 4 or 16, a record larger than MIXD_RECORD_MAX), -ENOMEM;
 * every non-zero return is counted as dropped. Pointers in @v are read during
 * the call only.
 */
int mixd_template_report(const mixd_template *t, const struct mixd_slot *v,
			 uint64_t omit);

/**
 * Free @t. May come before or after mixd_client_close() of its client, but
 * no thread may be using @t; a template must not be used once its client is
 * closed.
 */
void mixd_template_destroy(mixd_template *t);

/*
 * Checks (policy): ask mixd's policy socket whether a request may go on,
 * and for quota, as Mixer's Check API did. A checker is a connection to
 * the policy socket (mixd --role policy or both, --policy-address); it is
 * independent of the telemetry client above.
 *
 *   mixd_checker *k;
 *   mixd_checker_open("unix:///run/mixd/policy.sock", NULL, &k);
 *   struct mixd_value v[] = {...the request's attributes...};
 *   struct mixd_check_quota q = {"requestcountquota", 1, 0};
 *   struct mixd_check_answer a;
 *   mixd_check(k, v, n, "request-uuid", &q, 1, 50, &a);
 *   if (a.code != 0) ...refuse the request (a.message says why)...
 *   if (a.n_quotas && a.quotas[0].granted < 1) ...429...
 *
 * Or without waiting (an event loop's way): mixd_check_async() sends,
 * and the answer comes to a callback when mixd_checker_dispatch() runs,
 * which the loop calls when mixd_checker_fd() polls readable or
 * mixd_checker_timeout() has passed. Many checks may be in flight on one
 * connection; mixd answers them in order, many per read and write.
 *
 * The cache: mixd says with each answer how long it may be reused
 * (valid_duration_ns, valid_use_count) and which attributes it depends
 * on. A checker keeps answers (not grants: a check that asks for quota
 * always goes to mixd) and answers a later check whose attributes are
 * the same in all the ways the decision read them without asking mixd,
 * as Mixer's proxy did; `cached` says so. A configuration change takes
 * effect on cached answers when they expire, as with Mixer.
 */

/** A connection to mixd's policy socket. Opaque. */
typedef struct mixd_checker mixd_checker;

/** What a check answers when mixd does not (down, too slow). */
enum mixd_fail_policy {
	MIXD_FAIL_OPEN = 0,  /**< OK: the request goes on (Mixer's default) */
	MIXD_FAIL_CLOSE = 1, /**< UNAVAILABLE (14): the request is refused */
};

/** Checker options; zero-initialise for the defaults. */
struct mixd_checker_options {
	int fail_policy; /**< enum mixd_fail_policy; default MIXD_FAIL_OPEN */
	/** answers kept for reuse, at most; 0: 10,000; negative: no cache
	 *  (every check asks mixd) */
	int cache_entries;
	/** checks sent and not yet answered, at most; 0: 1,024; a check past
	 *  it is answered by the fail policy (-ENOBUFS) */
	int max_in_flight;
};

/** The most quotas one check asks for. */
#define MIXD_CHECK_QUOTAS 16

/** One quota a check asks for. */
struct mixd_check_quota {
	const char *name; /**< the quota instance's short name */
	int64_t amount;
	int best_effort; /**< grant what is left rather than nothing */
};

/** The answer to a check. */
struct mixd_check_answer {
	int code;	   /**< google.rpc.Code: 0 OK, 7 PERMISSION_DENIED, ... */
	char message[1024];/**< why, when code is not 0; NUL-terminated */
	int64_t valid_duration_ns; /**< the answer may be reused this long */
	int32_t valid_use_count;   /**< ... for this many requests */
	int from_mixd;	   /**< 1: mixd's decision (now or cached); 0: the
			        fail policy's */
	int cached;	   /**< 1: from the checker's cache (validity is
			        what is left of it) */
	size_t n_quotas;   /**< as asked when mixd answered with code 0;
				else 0, the fail policy's answer (from_mixd
				0) included: no quota decided, a fail-open
				caller lets the request go on */
	struct {
		int64_t granted;
		int64_t valid_duration_ns;
	} quotas[MIXD_CHECK_QUOTAS];
};

/**
 * Open a checker for the policy socket @address ("unix:///path"); @o may
 * be NULL. It connects on the first check, and again after a failure.
 * Returns 0, or -EINVAL (a bad address or option), -ENOMEM.
 */
int mixd_checker_open(const char *address,
		      const struct mixd_checker_options *o,
		      mixd_checker **out);

/**
 * Check a request whose attributes are @v (@n; dictionary attributes only,
 * as mixd_report() takes them) and ask for @nq quotas @q (at most
 * MIXD_CHECK_QUOTAS), deduplicated by @dedup_id (NULL: none; the same id
 * again, within mixd's deduplication window, gets the same grant rather
 * than a second one: send a retry of one request with its first id).
 * Waits at most @timeout_ms (> 0) for the answer. Returns 0 with mixd's
 * answer in *@out (or a cached one); otherwise *@out holds the fail
 * policy's answer (from_mixd 0, the reason in message) and the return
 * says why: -ETIMEDOUT, -ECONNREFUSED or -ENOENT (mixd not there),
 * -ECONNRESET (mixd went away), -EPROTO (a bad answer), -ENOBUFS (too
 * many checks in flight), -EAGAIN (mixd's connection backlog is full: an
 * asynchronous check does not wait for room); or, answered
 * INVALID_ARGUMENT (3) whatever the fail policy, -EMSGSIZE or -EINVAL (a
 * request that cannot be sent: too large, a custom attribute, a bad
 * value, too many quotas, a name over 255 bytes). While it waits it also
 * runs the callbacks of asynchronous checks whose answers come.
 *
 * Thread-safe, as every call on a checker, but calls on one checker are
 * served one at a time: a call made while another thread waits in one
 * (mixd_check(), mixd_checker_dispatch()) waits its turn, however short
 * its own timeout. Threads that check in parallel open a checker each
 * (one connection; cheap). After fork() a checker connects anew in the
 * child on its next call, forgetting the parent's checks in flight (fork
 * only while no thread of the parent is using it).
 */
int mixd_check(mixd_checker *k, const struct mixd_value *v, size_t n,
	       const char *dedup_id, const struct mixd_check_quota *q,
	       size_t nq, int timeout_ms, struct mixd_check_answer *out);

/**
 * The record builder of checker @k: fill it with the setters
 * (mixd_set_string() and the others; dictionary attributes only, a custom
 * one makes the record invalid), then send it with mixd_check_record() or
 * mixd_check_record_async(). One builder per checker, reused: build and
 * check from one thread at a time.
 */
mixd_record *mixd_check_begin(mixd_checker *k);

/**
 * As mixd_check(), for the attributes built in @r, which must be
 * mixd_check_begin(@k)'s. -EINVAL for a record a setter refused (a bad
 * value, a custom attribute), -EMSGSIZE for one too large.
 */
int mixd_check_record(mixd_checker *k, mixd_record *r, const char *dedup_id,
		      const struct mixd_check_quota *q, size_t nq,
		      int timeout_ms, struct mixd_check_answer *out);

/**
 * An asynchronous check's answer: @rc and *@a as mixd_check() would
 * return and fill them. @a lives only during the call.
 */
typedef void (*mixd_check_done)(void *arg, int rc,
				const struct mixd_check_answer *a);

/**
 * As mixd_check(), without waiting: @done(@arg, ...) runs exactly once
 * with the answer. It runs before this returns when the answer is known
 * at once (from the cache; the fail policy's when mixd cannot be reached
 * or the request cannot be sent), else from a later
 * mixd_checker_dispatch() (or mixd_check(), which dispatches while it
 * waits), on the thread that calls it, by @timeout_ms from now. A
 * callback may check again (mixd_check_async()), but not wait
 * (mixd_check(), mixd_checker_dispatch()) or close the checker. The
 * request goes out at once when nothing else is in flight, otherwise
 * with the next dispatch (checks asked while others are answered travel
 * together). Returns 0, or -EINVAL (@k or @done NULL, @timeout_ms <= 0)
 * and @done never runs.
 */
int mixd_check_async(mixd_checker *k, const struct mixd_value *v, size_t n,
		     const char *dedup_id, const struct mixd_check_quota *q,
		     size_t nq, int timeout_ms, mixd_check_done done,
		     void *arg);

/** As mixd_check_async(), for mixd_check_begin(@k)'s record @r. */
int mixd_check_record_async(mixd_checker *k, mixd_record *r,
			    const char *dedup_id,
			    const struct mixd_check_quota *q, size_t nq,
			    int timeout_ms, mixd_check_done done, void *arg);

/**
 * Send what waits to be sent, read the answers that have come and run
 * their callbacks, and those of checks whose time is up (the fail
 * policy's answer, -ETIMEDOUT). Waits up to @wait_ms (0: not at all,
 * negative: until a callback has run or nothing is in flight) for at
 * least one. Returns how many callbacks ran, or -EINVAL.
 */
int mixd_checker_dispatch(mixd_checker *k, int wait_ms);

/**
 * A descriptor an event loop polls for reading: readable when answers
 * have come, mixd closed the connection, or requests wait for room to be
 * sent: then call mixd_checker_dispatch(@k, 0). Checks that failed
 * otherwise (a send that broke) are due at once: mixd_checker_timeout()
 * says 0.
 * The same number for the checker's life; the checker closes it. A child
 * after fork() gets its own under the same number: register it again.
 */
int mixd_checker_fd(mixd_checker *k);

/**
 * Milliseconds until the next check in flight runs out of time (call
 * mixd_checker_dispatch() then), 0 if one has, -1 with none in flight.
 */
int mixd_checker_timeout(mixd_checker *k);

/** What a checker did, counted since it was opened. */
struct mixd_checker_stats {
	uint64_t checks;      /**< checks asked */
	uint64_t cache_hits;  /**< of them, answered from the cache */
	uint64_t answered;    /**< answered by mixd */
	uint64_t failed;      /**< answered by the fail policy, or
				   INVALID_ARGUMENT unsent */
	uint64_t cached;      /**< answers in the cache now */
	uint64_t in_flight;   /**< checks sent and not yet answered now */
};

/** Fill *@out with @k's counters. */
void mixd_checker_stats(mixd_checker *k, struct mixd_checker_stats *out);

/** Close the connection and free @k; NULL is fine. Checks still in
 *  flight are forgotten: their callbacks never run. */
void mixd_checker_close(mixd_checker *k);

/** The google.rpc name of a check's code ("PERMISSION_DENIED"); "UNKNOWN"
 *  for a code it does not have. */
const char *mixd_code_name(int code);

/** Library version, "MAJOR.MINOR.PATCH". */
const char *mixd_version(void);

#ifdef __cplusplus
}
#endif

#endif /* MIXD_CLIENT_H */
