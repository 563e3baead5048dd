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

#include <stdint.h>

#include "attr/attr.h"
#include "ingest/ingest.h"

struct agg;

/** Settings fixed at start. */
struct agg_options {
	unsigned shards;          /**< shard threads, >= 1 */
	uint64_t queue_bytes;     /**< per-shard socket queue, power of two */
	unsigned idle_sleep_max_us; /**< longest idle sleep; bounds pickup latency */
};

/**
 * Create the shards (not yet running). @vocab must outlive the agg.
 * Returns 0 or -errno.
 */
int agg_create(const struct agg_options *o, const struct attr_vocab *vocab,
	       struct agg **out);

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

#endif /* MIXD_AGG_H */
