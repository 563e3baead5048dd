/*
 * policy -- Mixer's check and quota path (istio-policy): one config
 * generation's policy rules, evaluated against a request's attributes.
 *
 * A check goes as Mixer's dispatcher took it (mixer/pkg/runtime):
 *  - First, attribute generation, as Mixer's Preprocess ran it for Check
 *    as for Report (pol_gen.h): every rule sending a `mesos` instance to
 *    a `mesosenv` handler that applies (namespace, match) asks the
 *    Marathon resolver through the request's reader (pol_request.mar)
 *    and binds what it answers (destination.labels, ...) into the
 *    request's attributes; an answer the resolver lacks, or no reader,
 *    leaves the bindings to their defaults. Everything below sees the
 *    attributes so bound, the namespace scoping included.
 *  - Every rule that applies to the request's namespace (the rule's own,
 *    or any for a rule in the default namespace; the namespace is the
 *    destination's, the source's for an outbound request) and whose
 *    `match` is true dispatches its check instances (checknothing,
 *    listentry) to its handlers (denier, listchecker). A match that fails
 *    to evaluate is false.
 *  - Results combine: the first non-OK status, in config order, gives the
 *    code; the message is every non-OK result's "<handler>:<message>",
 *    joined by ", "; the validity is the smallest of all results' (a
 *    result that is OK with no validity has no opinion). With no opinion
 *    at all the answer is OK for one minute or 10,000 uses.
 *  - An instance that cannot be built (its listentry value fails to
 *    evaluate) or a handler that cannot answer fails the whole check with
 *    INTERNAL, as Mixer's gRPC server did; the proxy's network policy
 *    (fail open by default) then decides.
 *  - Quotas are asked for by name only when the check allows: each goes
 *    to every quota instance of that short name (`requestcountquota` for
 *    `requestcountquota.instance.istio-system`, compared without case) of
 *    the rules whose match is true, in config order, each allocating from
 *    its handler; the answer is the first that grants something or has a
 *    validity (none such: nothing granted). A name no instance has, or
 *    whose rules do not match, is granted in full for one minute.
 *
 * A listchecker with a providerUrl fetches its list on a thread of its
 * own (pol_fetch.h); until a first fetch succeeds, and once ttl has
 * passed since the last, its checks fail INTERNAL with the fetch's error.
 *
 * The listchecker answers PERMISSION_DENIED "<value> is not whitelisted"
 * on a whitelist miss, as Istio 1.1-1.4 did (1.0 answered NOT_FOUND), and
 * PERMISSION_DENIED "<value> is blacklisted" on a blacklist hit; both
 * answers, and allowing ones, are valid for its cachingInterval and
 * cachingUseCount. The memquota handler grants 0 of what does not fit
 * (best_effort: what is left) and never fails a check.
 *
 * Threads: an engine is built once per config generation and shared; each
 * thread that checks owns a struct pol_thread, and a mar_reader of its
 * own (mar_reader_create() on that thread) that it passes in each
 * request. Lists are immutable; quota state is locked per handler, exact
 * under concurrency.
 */
#ifndef MIXD_POLICY_H
#define MIXD_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "attr/attr.h"
#include "config/config.h"

/** google.rpc.Code: what a check answers. */
enum pol_code {
	POL_OK = 0,
	POL_CANCELLED = 1,
	POL_UNKNOWN = 2,
	POL_INVALID_ARGUMENT = 3,
	POL_DEADLINE_EXCEEDED = 4,
	POL_NOT_FOUND = 5,
	POL_ALREADY_EXISTS = 6,
	POL_PERMISSION_DENIED = 7,
	POL_RESOURCE_EXHAUSTED = 8,
	POL_FAILED_PRECONDITION = 9,
	POL_ABORTED = 10,
	POL_OUT_OF_RANGE = 11,
	POL_UNIMPLEMENTED = 12,
	POL_INTERNAL = 13,
	POL_UNAVAILABLE = 14,
	POL_DATA_LOSS = 15,
	POL_UNAUTHENTICATED = 16,
};

/** Mixer's validity for an answer no handler gave an opinion on. */
#define POL_DEFAULT_VALID_NS (60 * INT64_C(1000000000))
#define POL_DEFAULT_VALID_USES 10000

/** The longest message a result carries; longer ones are cut. */
#define POL_MESSAGE_MAX 1024

/** Engine limits (0: the default). */
struct pol_options {
	/** per memquota handler; default 1,000,000, fewer where its longest
	 *  window would make them take more than 256 MiB (a key costs 80
	 *  bytes a second of window: a one-hour window, some 900 keys) */
	size_t quota_max_keys;
	size_t quota_max_dedup; /**< per memquota handler; default 100,000 */
};

/** One quota a request asks for. */
struct pol_quota_req {
	const char *name; /**< the quota's (instance's) short name */
	size_t name_len;
	int64_t amount;
	bool best_effort;
};

/** What a quota was granted. */
struct pol_quota_res {
	int64_t granted;
	int64_t valid_duration_ns;
};

/** A check request. */
struct pol_request {
	/** Against the config's vocabulary. Attribute generation writes what
	 *  it binds into it (see the top of this file): the caller's scratch
	 *  table, whose values stay valid as pol_gen_run() says. */
	struct attr_table *attrs;
	const char *dedup_id;		/**< for quotas; may be empty */
	size_t dedup_len;
	const struct pol_quota_req *quotas;
	size_t n_quotas;
	/** The calling thread's Marathon reader, inside a read section
	 *  (mar_read_begin()) for the whole of pol_check(); NULL: no
	 *  resolver, the mesos bindings take their defaults. */
	struct mar_reader *mar;
};

/** A check's answer. */
struct pol_result {
	int32_t code; /**< enum pol_code */
	char message[POL_MESSAGE_MAX];
	int64_t valid_duration_ns;
	int32_t valid_use_count;
	/** n_quotas entries, the caller's; filled only when code is OK. */
	struct pol_quota_res *quotas;
	/** The dictionary attributes (ids, ascending) the answer depends on,
	 *  present or absent, for a client's cache; NULL: it must not be
	 *  reused. The engine's, valid while it is. */
	const uint16_t *refs;
	uint16_t n_refs;
};

struct pol_engine;
struct pol_thread;
struct mar_reader;

/**
 * Check what of @c's policy handlers only the policy module can check (a
 * list override that is not an IP network or a regexp its list refuses;
 * a quota instance of more than 64 dimensions), adding
 * errors to @c with cfg_add_error(). Call before deciding the config is
 * usable.
 */
void pol_validate(struct cfg *c);

/**
 * Build the policy of @c (which must be ok): its lists and quota state.
 * The engine holds @c (cfg_retain()) until pol_engine_destroy(). 0, or
 * -ENOMEM.
 */
int pol_engine_create(struct cfg *c, const struct pol_options *o,
		      struct pol_engine **out);

/**
 * Let @e, a new config generation's engine, carry on @old's quota state:
 * a memquota handler of the same name and the same parameters takes the
 * old one's windows, counters and deduplication ids, as Mixer kept a
 * handler whose configuration did not change; others start afresh.
 * Neither engine may be checking with while this runs.
 */
void pol_engine_adopt(struct pol_engine *e, struct pol_engine *old);

/** Free @e once no thread checks with it; NULL is fine. */
void pol_engine_destroy(struct pol_engine *e);

/** What the memquota handlers of an engine hold and refused, summed. */
struct pol_quota_stats {
	uint64_t keys;	     /**< keys held now */
	uint64_t full;	     /**< requests granted nothing: key table full */
	uint64_t dedup_lost; /**< ids not remembered: dedup table full */
};

/**
 * @e's memquota counters. Counters belong to the handler: one a reload
 * carried over (pol_engine_adopt()) keeps counting, a new one starts at
 * 0. Any thread, while @e lives.
 */
void pol_engine_quota_stats(const struct pol_engine *e,
			    struct pol_quota_stats *out);

/** The vocabulary requests are decoded against: the config's. */
const struct attr_vocab *pol_engine_vocab(const struct pol_engine *e);

/** CLOCK_MONOTONIC in nanoseconds: the policy module's one clock (quota
 *  windows, deadlines, the spin after a batch). */
static inline int64_t pol_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/** A thread's scratch for checking with @e. NULL on ENOMEM. */
struct pol_thread *pol_thread_create(const struct pol_engine *e);

/** Free; NULL is fine. */
void pol_thread_destroy(struct pol_thread *t);

/**
 * Check @req at @now_ns (a monotonic clock: quota windows tick with it)
 * into @res. Runs attribute generation on @req->attrs first (which it
 * therefore changes). Never fails: every outcome is a code in @res.
 */
void pol_check(struct pol_engine *e, struct pol_thread *t,
	       const struct pol_request *req, int64_t now_ns,
	       struct pol_result *res);

#endif /* MIXD_POLICY_H */
