/*
 * agg -- the shard threads: each consumes its producers' rings and its
 * socket queue, decodes and validates every record, and (with a config)
 * evaluates rules and instances into its own series tables.
 *
 * Threads: one per shard. A ring belongs to one shard for its whole life;
 * the io thread hands rings over through a per-shard inbox (a mutex taken
 * once per ring, never per record). Counters are single-writer and read by
 * the HTTP threads without locks.
 */
#ifndef MIXD_AGG_H
#define MIXD_AGG_H

#include <stdbool.h>
#include <stdint.h>

#include "attr/attr.h"
#include "ingest/ingest.h"

struct cfg;
struct mar_resolver;

struct agg;

/** Settings fixed at start. */
struct agg_options {
	unsigned shards;          /**< shard threads, >= 1 */
	uint64_t queue_bytes;     /**< per-shard socket queue, power of two */
	unsigned idle_sleep_max_us; /**< longest idle sleep; bounds pickup latency */
	uint64_t series_limit;    /**< label sets kept per family per shard;
				       default AGG_SERIES_LIMIT_DEFAULT */
	bool no_memo;             /**< every record through the whole plan:
				       no record memo (src/agg/memo.c) */
};

/** Default per-family, per-shard series limit. */
#define AGG_SERIES_LIMIT_DEFAULT 100000

/**
 * Create the shards (not yet running). @vocab must outlive the agg.
 * Returns 0 or -errno.
 */
int agg_create(const struct agg_options *o, const struct attr_vocab *vocab,
	       struct agg **out);

/**
 * Install a config generation; the agg takes @cfg over (and frees it on
 * failure). Each shard switches between two records, so every record is
 * counted under exactly one generation; series of metric families whose
 * definition did not change carry over. Returns 0, -ENOMEM, or -EIO when
 * a stdio handler's output could not be opened (said on stderr). Callable
 * from any one thread at a time, before or after agg_start().
 */
int agg_set_config(struct agg *a, struct cfg *cfg);

/**
 * Serve the mesos attribute-generating instances from @r (NULL: none; the
 * bindings then take their defaults). Once, before or after agg_start():
 * each shard makes its reader at its next pass. @r must outlive
 * agg_destroy().
 */
void agg_set_resolver(struct agg *a, struct mar_resolver *r);

/** Generation of the config now installed (0: none yet). */
uint64_t agg_generation(struct agg *a);

/** Start the shard threads. */
int agg_start(struct agg *a);

/** The callbacks the socket server delivers rings and records to. */
struct ingest_sink agg_sink(struct agg *a);

/**
 * Drain: every shard consumes what its rings hold now, until a pass finds
 * nothing, then its thread exits. Blocks until all have exited.
 */
void agg_drain_and_stop(struct agg *a);

/** Free everything (stops the threads first if they run). */
void agg_destroy(struct agg *a);

/** Ingest counters summed over the shards. */
struct agg_ingest_stats {
	uint64_t records[INGEST_TRANSPORT_COUNT];  /**< accepted */
	uint64_t rejected[INGEST_REJ_COUNT];       /**< by reason */
	uint64_t dropped_ring_full;                /**< producers' ring full */
	uint64_t dropped_invalid;                  /**< producers' builder refused */
	uint64_t rings;                            /**< rings being consumed */
};

/** Sum the shards' counters; callable from any thread at any time. */
void agg_ingest_stats(struct agg *a, struct agg_ingest_stats *out);

/* ---- read side: a consistent, merged copy for one scrape ------------- */

/** Kind of a metric family. */
enum agg_kind { AGG_COUNTER, AGG_GAUGE, AGG_HISTOGRAM };

/** A row of a view: one label set, merged across shards. */
struct agg_view_row {
	const uint8_t *key; /**< label values: u16 length + bytes each */
	uint32_t key_len;
	uint64_t touched;   /**< bit i: family i of the set has data */
	const uint64_t *cells;
};

/** Label sets shared by families with the same labels. */
struct agg_view_set {
	const char *const *labels;
	size_t nlabels;
	struct agg_view_row *rows; /**< sorted by key: a stable order */
	size_t nrows;
};

/** One metric family of a view. */
struct agg_view_family {
	const char *name;
	const char *help;
	const char *instance;   /**< fully qualified instance name */
	enum agg_kind kind;
	const double *bounds;   /**< histogram: finite upper bounds */
	size_t nb;
	unsigned set;           /**< index into the view's sets */
	unsigned bit;           /**< row->touched bit */
	unsigned cell;          /**< first cell in row->cells: counter and
				     gauge one double; histogram nb+1 bucket
				     counts (not cumulative), sum, count */
	uint64_t series;        /**< rows with data for this family */
	uint64_t overflow;      /**< records of label sets not stored (the
				     series limit), counted instead */
	uint64_t expired;       /**< rows removed by expiry */
	uint64_t errors;        /**< records whose value or labels failed */
};

/** An instance and its errors: a logentry a stdio handler writes. */
struct agg_view_log {
	const char *instance;   /**< fully qualified instance name */
	uint64_t errors;        /**< entries not written: a field failed */
};

/** A scrape's view. Immutable; free with agg_view_destroy(). */
struct agg_view {
	uint64_t generation;
	struct agg_view_family *fams;
	size_t nfams;
	struct agg_view_log *logs; /**< one per rule action: a name may repeat */
	size_t nlogs;
	struct agg_view_set *sets;
	size_t nsets;
	uint64_t records;       /**< records run through the pipeline */
	uint64_t memo_served;   /**< of those, served by the record memo */
	uint64_t memo_missed;   /**< looked up in the memo in vain */
	uint64_t log_lines_lost;/**< stdio handlers' lines their output
				     refused (a write failed) */
};

/**
 * Take a consistent, merged copy of every family. No lock is taken and no
 * shard waits; each row is copied whole (a histogram is never torn).
 * Returns 0 (and a view with no families before any config) or -ENOMEM.
 */
int agg_view_create(struct agg *a, struct agg_view **out);

/**
 * A view of the counters alone, for self-monitoring: records, the memo's,
 * and every family's series, overflow, expired and errors, as
 * agg_view_create() would count them; its sets have no rows. It sorts the
 * label sets' keys (to count a set held by several shards once) but
 * copies no cells: at 100,000 label sets a few MB and some tens of ms
 * where a whole view is some 60 MB. Free with agg_view_destroy().
 */
int agg_view_counts(struct agg *a, struct agg_view **out);

/** Free a view. */
void agg_view_destroy(struct agg_view *v);

/** Walk a row's label values: sets *s, *len and advances *p. */
static inline void agg_key_next(const uint8_t **p, const char **s, size_t *len)
{
	uint16_t l;
	__builtin_memcpy(&l, *p, 2);
	*s = (const char *)*p + 2;
	*len = l;
	*p += 2 + l;
}

#endif /* MIXD_AGG_H */
