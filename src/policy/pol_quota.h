/*
 * pol_quota.h -- the state of Mixer's `memquota` adapter: rate limits
 * (rolling windows) and allocation quotas (counters), exact under
 * concurrency, with Mixer's deduplication and a bounded footprint.
 *
 * Semantics are Mixer's (mixer/adapter/memquota):
 *  - A quota is named by its instance's fully qualified name
 *    (`requestcountquota.instance.istio-system`). Its limit is the first
 *    override whose every listed dimension equals the instance's (a
 *    subset match; an override listing none matches all), else the
 *    quota's own.
 *  - State is kept per key: the quota, then each dimension in sorted
 *    name order. The limit that applies is the one found when the
 *    key is first used.
 *  - valid_duration > 0: a rolling window of ceil(valid_duration / 1 s)
 *    seconds in 100 ms ticks; an allocation at tick T returns to the
 *    pool at tick T + window. valid_duration == 0: a plain counter that
 *    only a negative amount gives back.
 *  - An allocation is all or nothing (granted 0 when it does not fit)
 *    unless best_effort, which grants what is available. A grant's
 *    validity is the limit's valid_duration. A negative amount frees.
 *  - Deduplication: a repeat of a deduplication id (with the same quota
 *    name) seen within min_dedup_ns to 2 x min_dedup_ns gets the earlier
 *    answer, its validity shortened by the time since (0 once past);
 *    denials and frees too. A request with no id (empty) is not
 *    deduplicated: Mixer let all such requests share one entry. The
 *    ids turn generation every min_dedup_ns counted from the first
 *    call's now_ns (Mixer's ticker, made on the calls that find a turn
 *    due).
 *
 * Bounds: at most max_keys keys and max_dedup remembered ids. A full key
 * table first drops keys whose windows are idle (everything returned),
 * at most once per 100 ms tick; a request whose key still finds no room
 * is answered -ENOSPC (the caller grants nothing and counts it): a flood
 * of distinct dimension values can cost its own requests, never mixd's
 * memory. A key is made only when something is granted under it (one
 * holding nothing is what its absence means). A key costs some 80 bytes,
 * its rendering (at most POL_QUOTA_MAX_KEY) and, for a window, 8 bytes a
 * 100 ms tick of it (80 bytes a second of valid_duration). A remembered
 * id costs its bytes and some 32 more, kept for later generations once
 * forgotten, and 16 to 43 bytes of table slots. A full dedup table
 * (recent and old ids together) remembers no more ids until a turn
 * forgets some, nor are ids longer than POL_QUOTA_MAX_DEDUP_ID remembered
 * (pol_memquota_dedup_lost() counts both: their requests are answered,
 * but a retry allocates again).
 *
 * Differences from Mixer, none visible to a well-behaved caller: a now_ns
 * earlier than one a window has seen is taken as that one (Mixer's window
 * index went negative and panicked); the key is typed and length-prefixed
 * (Mixer's text key made the string "10" and the integer 16 one key).
 */
#ifndef MIXD_POLICY_QUOTA_H
#define MIXD_POLICY_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attr/attr.h"

/** A limit: how much, over how long (0: an allocation counter). */
struct pol_quota_limit {
	int64_t max_amount;
	int64_t valid_duration_ns;
};

/** Longest key (the quota and its rendered dimensions) taken: a request
 *  with a longer one is refused (-E2BIG), as a key is memory held. */
#define POL_QUOTA_MAX_KEY 4096
/** Longest deduplication id remembered (proxies send 36-byte UUIDs). */
#define POL_QUOTA_MAX_DEDUP_ID 256

/** One dimension as the config writes it: name = value. */
struct pol_quota_kv {
	const char *name;
	const char *value;
};

/** An override: a limit for instances whose dimensions match. */
struct pol_quota_override {
	const struct pol_quota_kv *dims;
	size_t n_dims;
	struct pol_quota_limit limit;
};

/** One entry of memquota's `quotas`. */
struct pol_quota_def {
	const char *name; /**< the quota instance's fully qualified name */
	struct pol_quota_limit limit;
	const struct pol_quota_override *overrides;
	size_t n_overrides;
};

/** One dimension of an instance, as evaluated for a request. */
struct pol_quota_dim {
	const char *name;
	const struct attr_value *value; /**< NULL: absent (equals "") */
};

/** A request for @amount of a quota. */
struct pol_quota_args {
	const char *dedup_id; /**< the request's, may be empty */
	size_t dedup_len;
	int64_t amount;
	bool best_effort;
};

/** The answer. */
struct pol_quota_grant {
	int64_t amount;
	int64_t valid_duration_ns;
};

struct pol_memquota;

/**
 * State for one memquota handler's @n @defs (copied), deduplicating over
 * @min_dedup_ns (> 0), holding at most @max_keys keys and @max_dedup
 * remembered ids. NULL when out of memory, or for what the config refuses
 * (min_dedup_ns <= 0, a negative max_amount or valid_duration_ns). Of two
 * defs with one name, the first is used.
 */
struct pol_memquota *pol_memquota_create(const struct pol_quota_def *defs,
					 size_t n, int64_t min_dedup_ns,
					 size_t max_keys, size_t max_dedup);

/** Free @m; NULL is fine. */
void pol_memquota_destroy(struct pol_memquota *m);

/** The most dimensions a request's key has (Mixer set no bound). */
#define POL_QUOTA_DIMS_MAX 64

/**
 * Allocate (or, with a negative amount, free) for the quota instance
 * @name whose dimensions for this request are @dims (@n, at most
 * POL_QUOTA_DIMS_MAX, any order, names distinct: a repeated name is keyed
 * as often as it comes), at @now_ns (any monotonic nanosecond clock;
 * windows tick every 100 ms of it). Returns 0 with the answer in *@out;
 * -ENOENT when @m has no quota @name; -ENOSPC when the key table is full,
 * -E2BIG when the key is longer than POL_QUOTA_MAX_KEY, -EINVAL for more
 * than POL_QUOTA_DIMS_MAX dimensions, -ENOMEM (*@out is then a
 * grant of 0, and nothing is remembered for the dedup id). An amount of
 * 0 is answered 0 at once, as in Mixer. Thread-safe; exact: concurrent
 * callers never get more than a window's max_amount between them.
 *
 * Dimension values compare with an override's text as Mixer's
 * adapter.StringEquals did: strings as they are, INT64 as Go's decimal
 * ParseInt, BOOL as ParseBool (1 t T TRUE true True, and the false
 * ones), DOUBLE by value (decimal, inf, nan), IP_ADDRESS by address (an
 * IPv4 address equals its IPv4-mapped form), DURATION as a Go duration,
 * TIMESTAMP as RFC 3339, STRING_MAP as "a=b&c=d" (a part without exactly
 * one '=' ignored), BYTES as Go printed a []byte ("[104 105]"). Text that
 * does not parse as the value's type equals nothing but an absent value,
 * and an absent value equals "" (so an override's "" matches an absent
 * dimension, and any value of a type whose parse of "" fails, as Go's
 * did).
 */
int pol_memquota_alloc(struct pol_memquota *m, const char *name,
		       const struct pol_quota_dim *dims, size_t n,
		       const struct pol_quota_args *a, int64_t now_ns,
		       struct pol_quota_grant *out);

/** Keys held now (rolling windows and counters). */
size_t pol_memquota_keys(const struct pol_memquota *m);

/** Requests whose id could not be remembered: the dedup table was full. */
uint64_t pol_memquota_dedup_lost(const struct pol_memquota *m);

/** Requests granted nothing because their key was new and the key table
 *  full (-ENOSPC). */
uint64_t pol_memquota_full(const struct pol_memquota *m);

#endif /* MIXD_POLICY_QUOTA_H */
