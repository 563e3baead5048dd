/*
 * marathon internals: the snapshot (built from the JSON model, read by
 * shards), the model the resolver thread keeps, and the SSE framer. Only
 * src/marathon/ sources, tests/unit/test_marathon*.c, fuzz_marathon*.c
 * and bench/bench_marathon.c include this file.
 */
#ifndef MIXD_MAR_INTERNAL_H
#define MIXD_MAR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "marathon/marathon.h"

/* ------------------------------------------------------------------ */
/* Hashing */

static inline uint64_t mar_ld64(const void *p)
{
	uint64_t x;
	memcpy(&x, p, 8);
	return x;
}

/* 64x64 -> 128 multiply folded to 64 bits: every input bit reaches
 * every output bit, in one instruction on x86-64 and arm64. */
static inline uint64_t mar_mix(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/** A key of at most 16 bytes as two words, with no byte-wise loop: two
 *  overlapping halves of 8 (or 4) bytes, or first, middle and last byte;
 *  with the length they are the key exactly. Shared by mar_hash() and the
 *  reader cache, which keeps keys in this form. */
static inline void mar_short_words(const uint8_t *b, size_t len, uint64_t *x,
				   uint64_t *y)
{
	*x = *y = 0;
	if (len >= 8) {
		*x = mar_ld64(b);
		*y = mar_ld64(b + len - 8);
	} else if (len >= 4) {
		uint32_t lo, hi;
		memcpy(&lo, b, 4);
		memcpy(&hi, b + len - 4, 4);
		*x = lo;
		*y = hi;
	} else if (len > 0) {
		*x = ((uint64_t)b[0] << 16) | ((uint64_t)b[len >> 1] << 8) |
		     b[len - 1];
	}
}

/**
 * 64-bit hash of @len bytes, never 0 (0 marks an empty slot). Not
 * cryptographic: keys come from Marathon and from records, and a chosen
 * collision costs only a longer probe, because every table compares the
 * key itself. Inline: it is short, and the call would cost about as much
 * as hashing a 60-byte id.
 */
static inline uint64_t mar_hash(const void *p, size_t len, uint64_t seed)
{
	const uint8_t *b = p;
	uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ull), x = 0, y = 0;

	if (len > 16) {
		/* 16 bytes a round (ids are 40-90 bytes: 3-6 rounds); the
		 * last round reads the last 16 bytes, overlapping the one
		 * before, so there is no byte-wise tail. */
		const uint8_t *last = b + len - 16;
		for (; b < last; b += 16)
			h = mar_mix(mar_ld64(b) ^ 0xa0761d6478bd642full,
				    mar_ld64(b + 8) ^ h);
		x = mar_ld64(last);
		y = mar_ld64(last + 8);
	} else {
		mar_short_words(b, len, &x, &y);
	}
	return mar_mix(x ^ 0xe7037ed1a0b428dbull, y ^ h) | 1;
}

/* ------------------------------------------------------------------ */
/* Snapshot */

/** A container of a task / pod instance. Apps have exactly one. */
struct mar_ctr {
	struct attr_value name;
	uint32_t n_ports;
	const uint32_t *ports; /**< containerPort, hostPort, allocated port */
};

/** A task (app) or an instance (pod): what a lookup resolves to. */
struct mar_inst {
	struct attr_value v[MAR_SIDE_FIELDS]; /**< enum mar_out source order */
	uint32_t n_ctr;
	const struct mar_ctr *ctr;
	/** XXH3 of everything above, by content: the same in every snapshot
	 *  while the task is unchanged (mar_result_fingerprint()). */
	uint64_t fp;
};

/** Open-addressing table slot. @inst NULL with @h set: an ambiguous key
 *  (two instances claim it), which resolves to nothing. */
struct mar_slot {
	uint64_t h;
	const uint8_t *key;
	uint32_t klen;
	int32_t ctr; /**< container index, -1: decided by port,
		       MAR_CTR_HOST_IP: a host IP's claim (by_ip only) */
	const struct mar_inst *inst;
};

/** One table: power-of-two slots, linear probing, load <= 1/2. */
struct mar_table {
	struct mar_slot *slots;
	uint64_t mask;
	uint64_t seed;
	size_t n;
};

/** Key of an IP table entry: 16 bytes (IPv4 as ::ffff:a.b.c.d), then the
 *  port big-endian for the ip+port table. */
#define MAR_IPKEY_LEN 16
#define MAR_IPPORT_KEY_LEN 18

struct mar_arena;

/** An immutable snapshot. Everything it points to lives in @arena. */
struct mar_snap {
	uint64_t gen; /**< publish generation, never 0 */
	struct mar_table by_id;	    /**< bare ids -> instance */
	struct mar_table by_ip;	    /**< unique container / host IP */
	struct mar_table by_ipport; /**< (IP, port) -> instance, container */
	struct mar_inst *insts;
	size_t n_insts;
	uint64_t apps, pods, tasks, pod_instances;
	struct mar_arena *arena;
};

/** CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t mar_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/** Host name -> address cache the resolver keeps across builds (so a
 *  rebuild does not call getaddrinfo for every task). */
struct mar_hostcache;

/** A host cache; NULL on ENOMEM. */
struct mar_hostcache *mar_hostcache_create(void);
/** Free; NULL is fine. */
void mar_hostcache_destroy(struct mar_hostcache *hc);
/** At a full sync: forget negative answers (retried) and names no build
 *  has looked up since the last call (agents gone: the cache stays the
 *  size of the cluster). Answers older than @max_age_ns are resolved
 *  again at their next use (a name that moved is found); one that fails
 *  keeps its answer. When an ask fails for want of DNS (each could block
 *  for the resolver's timeout), nothing is asked for MAR_DNS_HOLD_NS or
 *  until this is called, whichever comes first; the names it skipped are
 *  asked then. */
void mar_hostcache_refresh(struct mar_hostcache *hc, int64_t max_age_ns);
#define MAR_DNS_HOLD_NS (60 * 1000000000ll)
/** Tests: hold DNS asks @ns after a failure instead of MAR_DNS_HOLD_NS. */
void mar_hostcache_set_dns_hold(struct mar_hostcache *hc, int64_t ns);
/** Names cached (tests). */
size_t mar_hostcache_size(const struct mar_hostcache *hc);

/**
 * Build a snapshot from @apps (the "apps" array of /v2/apps?embed=apps.tasks,
 * tasks embedded) and @pods (the /v2/pods/::status array); either may be
 * NULL. Entries with unexpected shapes are skipped (counted in
 * *@skipped when non-NULL). @hc may be NULL (no name resolution: only
 * literal IPs). Returns 0, or -ENOMEM.
 */
int mar_snap_build(const cJSON *apps, const cJSON *pods,
		   struct mar_hostcache *hc, struct mar_snap **out,
		   size_t *skipped);

/** Free a snapshot; NULL is fine. */
void mar_snap_free(struct mar_snap *s);

/** Find bare id @id (@len bytes). */
const struct mar_slot *mar_snap_find(const struct mar_table *t,
				     const void *key, size_t len, uint64_t h);

/** Uncached lookup (the reader's slow path; tests and fuzzing). */
bool mar_snap_lookup(const struct mar_snap *s, const struct mar_query *q,
		     struct mar_result *out);

/** Strip "kubernetes://" / "mesos://" from a uid; returns the bare id.
 *  Inline: it runs twice per record on the shard. */
static inline const char *mar_uid_bare(const char *s, size_t len,
				       size_t *out_len)
{
	static const char k8s[] = "kubernetes://", mesos[] = "mesos://";
	if (len >= sizeof k8s - 1 && !memcmp(s, k8s, sizeof k8s - 1)) {
		s += sizeof k8s - 1;
		len -= sizeof k8s - 1;
	} else if (len >= sizeof mesos - 1 &&
		   !memcmp(s, mesos, sizeof mesos - 1)) {
		s += sizeof mesos - 1;
		len -= sizeof mesos - 1;
	}
	*out_len = len;
	return s;
}

/** Normalise an IP value to a 16-byte key. False if not an address or
 *  unspecified (0.0.0.0, ::). */
bool mar_ip_key(const struct attr_value *v, uint8_t key[MAR_IPKEY_LEN]);

/** The string member @k of JSON object @o, or NULL. */
const char *mar_jstr(const cJSON *o, const char *k);

/** Is @state a Mesos task state after which the task never serves? The
 *  full sync and the event stream must agree, so both ask here. */
bool mar_task_terminal(const char *state);

/** Is @s (may be NULL) one of the strings of the NULL-terminated @l? */
bool mar_in_list(const char *const *l, const char *s);

/*
 * A by_ip slot of an agent's IP, claimed by the one task (or pod instance)
 * on the agent that uses it: host networking, or a bridge's outbound
 * traffic. Such an IP names the task only when no port says otherwise: a
 * destination IP with a port goes by IP and port (by_ipport) alone.
 */
#define MAR_CTR_HOST_IP (-2)

/** The container of @inst that declares @port (when @port is not 0), else
 *  @named (the container a uid names; -1: none), else the instance's only
 *  container; -1 when none of these is. The port comes first: it says
 *  which container a request was for, where a uid may name the proxy's
 *  own container. */
int mar_pick_container(const struct mar_inst *inst, uint32_t port,
		       int named);

/**
 * Publish @s on @r, whose thread must never sync (an unreachable
 * address): the first snapshot, or one replacing the injected one before
 * it (kept until mar_resolver_stop(): a reader may still hold it). Call
 * from one thread. For the benchmarks and tests that measure readers
 * without a Marathon. Returns 0, or -EBUSY when @r's thread has published
 * a snapshot of its own, -ENOMEM (then @s is not taken).
 */
int mar_resolver_inject(struct mar_resolver *r, struct mar_snap *s);

/** Bytes the full-sync buffer of @r held when its last sync ended, or
 *  SIZE_MAX before one has (any thread; tests). A body is freed once
 *  parsed, so this is 0 however large the last /v2/apps answer was. */
size_t mar_resolver_sync_buffer(const struct mar_resolver *r);

/* ------------------------------------------------------------------ */
/* Model: what the resolver thread knows, as Marathon's own JSON. */

/** The model. @apps / @pods are cJSON arrays owned here. */
struct mar_model {
	cJSON *apps;
	cJSON *pods;
	bool dirty;	     /**< changed since the last publish */
	bool need_resync;    /**< an event could not be applied in place */
	uint32_t event_tasks; /**< tasks events added since the last sync */
};

/**
 * Parse a /v2/apps?embed=apps.tasks body. Returns the "apps" array
 * (detached, caller frees with cJSON_Delete) or NULL when the body is not
 * JSON or not {"apps": [...]}.
 */
cJSON *mar_parse_apps(const char *body, size_t len);

/** Parse a /v2/pods/::status body: a JSON array. NULL if not. */
cJSON *mar_parse_pods(const char *body, size_t len);

/** Is the data of an event named @name (@len > 0: by its "event:" line)
 *  left unread -- a type mixd does not use, or one that only says
 *  "resync"? The SSE framer drops such data unbuffered; the model does
 *  not parse it. */
bool mar_event_data_unread(const char *name, size_t len);

/** Map an SSE event name to its counter. */
enum mar_event mar_event_from_name(const char *name, size_t len);

/**
 * Apply one event (@type, JSON @data of @len bytes) to @m. Sets dirty when
 * the model changed in place, need_resync when only a full sync can
 * bring it up to date. Returns the counter to bump (MAR_EV_MALFORMED when
 * @data is not a JSON object).
 */
enum mar_event mar_model_apply(struct mar_model *m, const char *type,
			       size_t type_len, const char *data,
			       size_t len);

/** Free the model's arrays. */
void mar_model_clear(struct mar_model *m);

/* ------------------------------------------------------------------ */
/* SSE framing (text/event-stream, LF or CRLF line ends). */

/** Largest event we read; a bigger one is a broken stream. The events
 *  whose data is read (task status updates, instance changes, removals)
 *  are a few hundred bytes; no Marathon object is over ZooKeeper's 1 MB
 *  node limit. (Events whose data is not read are not bounded: they are
 *  not kept.) */
#define MAR_SSE_MAX_EVENT (1u << 20)

/** Of a task status update, the ports and IP addresses kept: a task has a
 *  few; more are a hostile stream's, which would otherwise be kept (and
 *  indexed, one entry each) until the next full sync. */
#define MAR_EVENT_PORTS_MAX 1000
#define MAR_EVENT_ADDRS_MAX 32

/** Tasks that events may add to the model between full syncs; past it, a
 *  new task waits for the resync it asks for. */
#define MAR_EVENT_TASKS_MAX 10000

/** Called for each complete event (type may be "" when none was given;
 *  data is "" when it was dropped: mar_event_data_unread()). */
typedef void (*mar_sse_cb)(void *ctx, const char *type, size_t type_len,
			   const char *data, size_t data_len);

/** The framer's state. Zero-initialise, then mar_sse_reset(). */
struct mar_sse {
	char *line; /**< the current line, partial */
	size_t line_len, line_cap;
	char *data; /**< data: lines of the pending event, '\n'-joined */
	size_t data_len, data_cap;
	char type[128];
	size_t type_len;
	bool pending_cr; /**< last byte was CR: a following LF is its pair */
	bool in_event;	 /**< a field was seen since the last dispatch */
	bool overflow;	 /**< the event exceeded MAR_SSE_MAX_EVENT */
	bool skip;	 /**< the event's data is not read: drop data lines */
	bool skipped;	 /**< data of the pending event was dropped */
	bool discard;	 /**< drop the rest of the current line */
	uint64_t lines;	 /**< lines completed since the start */
};

/** Forget a partial event (a new connection). */
void mar_sse_reset(struct mar_sse *p);

/** Free buffers. */
void mar_sse_free(struct mar_sse *p);

/**
 * Feed @len bytes; calls @cb for every complete event. Returns 0, or -1
 * once an event overflowed (the stream must be dropped).
 */
int mar_sse_feed(struct mar_sse *p, const char *buf, size_t len,
		 mar_sse_cb cb, void *ctx);

/** True when a partial event is pending (the stream ended inside it). */
bool mar_sse_partial(const struct mar_sse *p);

#endif /* MIXD_MAR_INTERNAL_H */
