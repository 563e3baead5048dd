/*
 * agg_internal.h -- what the aggregator's files share: the plan compiled
 * from a config generation, the series tables, the reclamation epoch.
 */
#ifndef MIXD_AGG_INTERNAL_H
#define MIXD_AGG_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "agg/agg.h"
#include "config/config.h"
#include "expr/expr.h"
#include "marathon/marathon.h"

/* ---- epoch: deferred frees that readers never race ---------------------
 *
 * A small epoch scheme on C11 atomics rather than ck_epoch: ck's inline
 * assembly is invisible to ThreadSanitizer, which would then report every
 * deferred free as a race with the reader that finished before it. Readers
 * (scrapes) take a slot for the duration of a read; a writer retires memory
 * tagged with the epoch it unlinked it in, and frees it once no reader that
 * might have seen it is still inside.
 */
#define EPOCH_SLOTS 64

struct agg_epoch {
	uint64_t global;             /* atomic; starts at 1 */
	uint64_t slot[EPOCH_SLOTS];  /* atomic; 0 = free, else entry epoch */
};

struct epoch_retired {
	uint64_t epoch;
	void (*fn)(void *);
	void *p;
	struct epoch_retired *next;
};

/** Enter a read section; returns the slot to pass to epoch_exit(). */
int epoch_enter(struct agg_epoch *e);
void epoch_exit(struct agg_epoch *e, int slot);
/** Defer fn(p) until every reader now inside has left. */
void epoch_retire(struct agg_epoch *e, struct epoch_retired **list,
		  void (*fn)(void *), void *p);
/** Run the deferred frees that have become safe; @all: wait for all. */
void epoch_poll(struct agg_epoch *e, struct epoch_retired **list, bool all);

/* ---- the plan: a config generation, compiled for the record path ------ */

enum fam_kind { FAM_COUNTER, FAM_GAUGE, FAM_HISTOGRAM };

/* One Prometheus metric family. */
struct plan_family {
	const struct cfg_prom_metric *m;
	const char *name;             /* exposed, e.g. istio_requests_total */
	const char *help;
	enum fam_kind kind;
	uint32_t value_id;            /* the instance's value expression */
	const double *bounds;         /* histogram finite upper bounds */
	size_t nb;
	/* The bounds padded with +Inf to a power of two (npad), and one
	 * more, for a search without a branch per step. */
	double *padded;
	size_t npad;
	/* By a value's top 12 bits (sign and exponent: its binary octave),
	 * how many bounds lie below the octave, when at most one lies in it
	 * (then the bucket is that count, plus one if the value exceeds the
	 * next bound); FAM_OCTAVE_SEARCH when more do, or for a negative
	 * value: the search decides. fam_bucket(). */
	uint8_t *octave;
	/* How a remembered record's value is found (series.c, value_of()):
	 * from val_plan, or directly: the constant (val_slot UINT32_MAX) or
	 * the attribute in val_slot when it has type val_decl (another type
	 * takes val_plan), else the constant. val_k_ok: the constant is a
	 * valid value, val_k; false too for an attribute alone, whose absence
	 * is an error. */
	bool val_direct, val_k_ok;
	uint8_t val_decl;
	uint32_t val_slot;
	double val_k;
	unsigned dimset;
	unsigned bit;                 /* its bit in a row's touched mask */
	unsigned cell;                /* first cell in a row */
	const char *instance;         /* fqn, for instance error counts */
};

/* Cells a row holds for family @f: a value, or a histogram's buckets,
 * +Inf, sum and count. */
static inline unsigned plan_family_cells(const struct plan_family *f)
{
	return f->kind == FAM_HISTOGRAM ? (unsigned)f->nb + 3 : 1;
}

/*
 * Families whose label expressions are the same list share a dimension set:
 * one key, one table probe and one row per record serve them all.
 */
struct plan_dimset {
	uint32_t *dims;               /* expression ids, in label order */
	const char *const *labels;    /* label names */
	size_t ndims;
	unsigned fams[64];
	unsigned nfam;
	unsigned ncells;              /* row cells for all its families */
	/* With more than one family and an expiry, the rows end in one cell
	 * per family (by its bit), its last update (int64 ns), so that each
	 * family expires on its own: the first of them; 0: none, the row's
	 * last_ns stands for all its families. */
	unsigned tcell;
	uint8_t *cell_kind;           /* per cell: enum cell_kind */
	char *signature;              /* identity across config reloads */
	char *key_sig;                /* its labels and expressions alone */
	int64_t expiry_ns;            /* its handler's metricsExpiryDuration;
					 0: its rows never expire. Families of
					 handlers with different policies never
					 share a set. */
};

/* How a cell merges across shards. */
enum cell_kind {
	CELL_SUM_DOUBLE,
	CELL_SUM_U64,
	CELL_LAST_DOUBLE,
	CELL_MAX_I64, /* a family's last update (tcell) */
};

/* Family @k's last update in @cells, a row's of set @ds with family times
 * (ds->tcell); @row_ns where the set has none. */
static inline int64_t fam_ns(const struct plan_dimset *ds,
			     const uint64_t *cells, unsigned k, int64_t row_ns)
{
	return ds->tcell ? (int64_t)cells[ds->tcell + k] : row_ns;
}

/* A ROTATED_FILE stdio handler's file, shared by the plan's logs that
 * write it (logs.c, log_rotate()). */
struct log_rot {
	pthread_mutex_t lock;         /* one rotation at a time */
	uint64_t size;                /* atomic: bytes in the file */
	uint64_t max_bytes;           /* 0: never rotated */
	uint64_t max_backups;         /* 0: all kept */
	int64_t max_age_s;            /* 0: kept whatever their age */
	const char *path;
	int fd;                       /* the logs'; a new file is dup2()ed
					 over it, so every shard writes on */
	bool failing;                 /* the last rotation failed (said) */
	int64_t retry_s;              /* ... not tried again before this
					 CLOCK_MONOTONIC second */
};

/* A logentry instance dispatched to a stdio handler. */
struct plan_log {
	const struct cfg_instance *inst;
	const struct cfg_stdio *stdio;
	int fd;                       /* never blocks a shard (logs.c) */
	bool own_fd;
	bool send;                    /* fd is a socket: send(MSG_DONTWAIT) */
	bool regular;                 /* fd is a regular file */
	unsigned out;                 /* its output's number: logs that
					 share fd share it (< nouts) */
	int std;                      /* 1 or 2: the stream it writes, or 0 */
	struct log_rot *rot;          /* ROTATED_FILE: shared, freed with
					 own_fd */
	/* The instance's variables in name order, as Mixer's adapter wrote
	 * them: sorted once here, not per record. */
	const struct cfg_named_expr **vars;
	size_t nvars;
};

/* What one report rule does for a record. */
struct plan_rule {
	const struct cfg_rule *r;
	uint32_t match_id;
	uint32_t *fams;               /* families its actions feed */
	size_t nfams;
	uint32_t *logs;               /* plan_log indexes its actions feed */
	size_t nlogs;
	bool all_namespaces;
	/* The rule's match, then per family its value and its dimensions,
	 * as one guarded expression plan. For family k of fams[], the value
	 * lands at res[at[off[k]]], dimension j at res[at[off[k] + 1 + j]]. */
	struct expr_plan *xp;
	uint32_t guard;
	uint32_t *at;
	uint32_t *off;
};

/* An attribute-generating (mesos) instance dispatched by a rule. */
struct plan_apa {
	const struct cfg_rule *r;
	const struct cfg_instance *inst;
	const struct cfg_handler *handler;
	uint32_t match_id;
	bool all_namespaces;
	int32_t in[5];                /* expression ids of the mesos inputs
					 (source_uid, source_ip, destination_uid,
					 destination_ip, destination_port), -1 */
	int first;                    /* index of the first mesos instance
					 with the same instance and handler:
					 each is dispatched once a record */
	struct expr_plan *in_plan;    /* match (guard) and the inputs */
	uint32_t in_guard;
	uint32_t in_at[5];            /* UINT32_MAX: input not given */
	struct expr_plan *bind_plan;  /* the attribute bindings */
	uint32_t *bind_at;
	int *bind_slot;
	size_t nbind;
};

struct agg_plan {
	int refs; /* atomic */
	struct cfg *cfg;
	const struct expr_program *prog;
	const struct attr_vocab *vocab;
	struct plan_family *fams;
	size_t nfams;
	struct plan_dimset *dimsets;
	size_t ndimsets;
	struct plan_rule *rules;
	size_t nrules;
	struct plan_apa *apas;
	size_t napas;
	struct plan_log *logs;
	size_t nlogs;
	size_t nouts; /* distinct outputs of the logs (plan_log.out) */
	int out_slot[MAR_OUT_COUNT];  /* vocabulary slot of $out.<name>, -1 */
	/* The record memo (memo.c). When memo_ok, everything the record
	 * path decides but the metric values is a function of the attributes
	 * in memo_keys.mask (as the record arrived) and of the Marathon snapshot:
	 * no logentry action, and no value expression reads an attribute a
	 * mesos instance binds. The values are then found alone: read
	 * directly when a family's value is `attribute | constant` or a
	 * constant (plan_family.val_direct), else by val_plan, family f's at
	 * val_res[val_at[f]]. */
	bool memo_ok;
	struct ingest_keyspec memo_keys; /* memo attributes, for the decoder */
	struct expr_plan *val_plan;
	uint32_t *val_at;
	bool scoped;                  /* some rule is namespace-scoped */
	int64_t expiry_ns;            /* the shortest of the dimension sets'
					 (0: no series expire) */
	int64_t expiry_check_ns;      /* the shortest check interval of the
					 handlers with a policy */
	uint64_t generation;
};

/* When a shard at @now_ns next looks for expired series, every
 * @every_ns (> 0): on one grid for all shards, whenever each started, so
 * that they look at about the same moment. One shard may remove its
 * copy of a label set idle everywhere only when the others look too: in
 * between, a record for it would revive the others' stale shares. */
static inline int64_t expiry_next(int64_t now_ns, int64_t every_ns)
{
	return now_ns - now_ns % every_ns + every_ns;
}

#define FAM_OCTAVES 4096
#define FAM_OCTAVE_SEARCH 255

/** Histogram family @f's bucket for @v: how many of its bounds @v
 *  exceeds (a bucket counts v <= bound), by binary search over the padded
 *  bounds with a conditional move per step, not a branch: where a value
 *  lands is random. NaN: the +Inf bucket alone, as Prometheus' clients. */
static inline size_t fam_bucket_search(const struct plan_family *f, double v)
{
	const double *pb = f->padded;
	size_t b = 0;
	if (__builtin_expect(v != v, 0))
		return f->nb;
	for (size_t half = f->npad / 2; half; half /= 2)
		b = v > pb[b + half - 1] ? b + half : b;
	return b + (v > pb[b]);
}

/** fam_bucket_search()'s answer, mostly from the octave table: one load
 *  and one compare when bounds are at least a factor of two apart, as
 *  Istio's explicit and exponential buckets are. */
static inline size_t fam_bucket(const struct plan_family *f, double v)
{
	uint64_t bits;
	memcpy(&bits, &v, sizeof bits);
	size_t b = f->octave[bits >> 52];
	if (__builtin_expect(b == FAM_OCTAVE_SEARCH, 0))
		return fam_bucket_search(f, v);
	return b + (v > f->padded[b]); /* positive NaN: b = nb, +Inf */
}

/** Make histogram family @pf's padded bounds and octave table from its
 *  bounds and nb; -1 on ENOMEM (what was made is freed with the plan). */
int plan_buckets(struct plan_family *pf);

/** metric_value() of a string: one that parses as a number whole. */
bool metric_value_string(const struct attr_value *v, double *out);

/** A metric value as Prometheus takes it (a number; a duration in
 *  seconds; a string that parses as one); false if @v is none. */
static inline bool metric_value(const struct attr_value *v, double *out)
{
	switch (v->type) {
	case ATTR_INT64:
		*out = (double)v->i;
		return true;
	case ATTR_DOUBLE:
		*out = v->d;
		return true;
	case ATTR_DURATION:
		/* Observed in seconds, computed as Go's Duration.Seconds()
		 * does, so bucket edges fall exactly where Mixer's did. */
		*out = (double)(v->i / 1000000000) +
		       (double)(v->i % 1000000000) / 1e9;
		return true;
	case ATTR_STRING:
		return metric_value_string(v, out);
	default:
		return false;
	}
}

/** Compile @cfg (taken over: freed with the plan). NULL on failure, *@err
 *  then -ENOMEM, or -EIO when a stdio handler's output could not be opened
 *  (said on stderr). */
struct agg_plan *plan_build(struct cfg *cfg, uint64_t generation, int *err);
void plan_ref(struct agg_plan *p);
void plan_unref(struct agg_plan *p);

/* ---- the record memo (memo.c) ----------------------------------------- */

/* What became of a dimension set for a remembered record. */
enum memo_st {
	MEMO_SKIP,     /* no matching rule feeds the set */
	MEMO_ROW,      /* the row to update */
	MEMO_DIMFAIL,  /* a label value failed: instance errors */
	MEMO_OVERFLOW, /* the series limit: counted, not stored */
};

/* One remembered record; followed by struct row *row[nd], uint8_t st[nd]
 * (enum memo_st) and uint8_t hits[nf] (dispatches per family). */
struct memo_ent {
	uint32_t gen;   /* valid while it equals the memo's */
	uint32_t tick;  /* last use, for the victim choice */
	uint16_t key_len, key_cap; /* a key is at most MEMO_KEY_LIMIT */
	/* A set that overflowed the series limit when the entry was made:
	 * the aggregator's rows_added then (odd: never 0); 0 when none did.
	 * A row added anywhere since may be its label set (series.c). */
	uint32_t overflow_gen;
	/* The Marathon snapshot the entry was last known right under, and
	 * the fingerprint of the resolver's answers for the record then. */
	uint64_t snap_gen;
	uint64_t answers;
};

/* An entry's hash and key, kept apart from it: a bucket's four in one
 * cache line, so a probe reads one line per bucket, and the key's address
 * is known before the entry is read (the two loads overlap). */
struct memo_tag {
	uint64_t hash;
	uint8_t *key;
};

struct memo {
	struct memo_tag *tags; /* per entry, 64-byte aligned */
	uint8_t *ents;
	size_t stride;
	uint64_t mask;  /* buckets - 1 */
	uint32_t gen, tick;
	unsigned nd, nf;
	uint64_t claims;  /* entries filled since it was sized */
	size_t key_bytes, key_budget; /* key buffers held, and their cap */
	uint32_t key_max; /* the longest key claimed: what a prefetch takes */
};

/* Forget @e (its slot is free for memo_claim()). */
static inline void memo_drop(struct memo_ent *e)
{
	e->gen = 0; /* never a memo's generation */
}

static inline struct row **memo_rows(struct memo_ent *e)
{
	return (struct row **)(e + 1);
}

static inline uint8_t *memo_st(const struct memo *m, struct memo_ent *e)
{
	return (uint8_t *)(memo_rows(e) + m->nd);
}

static inline uint8_t *memo_hits(const struct memo *m, struct memo_ent *e)
{
	return memo_st(m, e) + m->nd;
}

/** Room for at least @entries records over @nd sets and @nf families,
 *  their keys taking at most @key_budget bytes. */
int memo_init(struct memo *m, unsigned nd, unsigned nf, uint64_t entries,
	      size_t key_budget);
void memo_free(struct memo *m);
uint64_t memo_capacity(const struct memo *m);
/** Start over with room for @entries (the contents are dropped). */
int memo_resize(struct memo *m, uint64_t entries);
/** Forget every entry (rows were freed). */
void memo_invalidate(struct memo *m);
/** The hash of the @len bytes of @key, which must be followed by 16 zero
 *  bytes (the hash reads whole 8- and 16-byte lanes): CRC32C where the CPU
 *  has SSE4.2, else memo_hash_portable(); one or the other for the whole
 *  process. */
uint64_t memo_hash(const uint8_t *key, uint32_t len);
uint64_t memo_hash_portable(const uint8_t *key, uint32_t len);
/** The live entry for a key, or NULL. */
struct memo_ent *memo_find(struct memo *m, uint64_t h, const uint8_t *key,
			   uint32_t len);
#define MEMO_WAYS 4

/* A key may live in either of two buckets (two-choice hashing): at the
 * loads the memo runs at, a bucket that overflows is then rare, where one
 * choice would leave some keys evicting each other on every record. The
 * index of bucket @which's first way. */
static inline uint64_t memo_bucket(const struct memo *m, uint64_t h,
				   unsigned which)
{
	return ((which ? h >> 32 : h) & m->mask) * MEMO_WAYS;
}

static inline struct memo_ent *memo_ent_at(const struct memo *m, uint64_t i)
{
	return (struct memo_ent *)(m->ents + i * m->stride);
}

/* Prefetches: a key is almost always in its first bucket (a claim takes
 * its first free way), so only that bucket is fetched. */

/** Start loading the line memo_find() reads first for hash @h. */
static inline void memo_prefetch(const struct memo *m, uint64_t h)
{
	__builtin_prefetch(&m->tags[memo_bucket(m, h, 0)]);
}

/** ... and once that line has arrived, the entry and the key it names:
 *  the whole key (a few hundred bytes, several lines), since the compare
 *  reads it all. */
static inline void memo_prefetch_entry(const struct memo *m, uint64_t h)
{
	uint64_t b = memo_bucket(m, h, 0);
	const struct memo_tag *tg = &m->tags[b];
	for (unsigned w = 0; w < MEMO_WAYS; w++)
		if (tg[w].hash == h) {
			uintptr_t k = (uintptr_t)tg[w].key;
			__builtin_prefetch(memo_ent_at(m, b + w));
			for (uintptr_t l = k & ~(uintptr_t)63; l < k + m->key_max;
			     l += 64)
				__builtin_prefetch((const void *)l);
		}
}

/** The longest key the memo keeps. */
#define MEMO_KEY_LIMIT UINT16_MAX

/** An entry for a key (recycling its buckets' least recently used one),
 *  or NULL on ENOMEM, for a key over MEMO_KEY_LIMIT, or when its key would
 *  exceed the key budget; the caller fills rows, st and hits. */
struct memo_ent *memo_claim(struct memo *m, uint64_t h, const uint8_t *key,
			    uint32_t len);

/* ---- series: rows in per-shard, per-dimension-set tables -------------- */

/*
 * A row: one label set and the data of every family of its dimension set.
 * Written by its shard only, under a sequence count, so a scrape copies a
 * consistent row (never a histogram whose +Inf differs from its count).
 * cells[] per family: counter/gauge 1 cell (double bits); histogram
 * nb + 1 bucket counts (not cumulative), then sum (double bits), count.
 * The key -- each label value as u16 length + bytes -- follows the cells.
 */
struct row {
	uint64_t hash;
	uint32_t seq;      /* atomic: odd while the shard writes */
	uint32_t key_len;
	uint64_t touched;  /* atomic: families that were ever updated */
	int64_t last_ns;   /* atomic: last update, for expiry and gauges */
	uint64_t cells[];
};

static inline const uint8_t *row_key(const struct row *r, unsigned ncells)
{
	return (const uint8_t *)&r->cells[ncells];
}

/* Slots array as published to readers (the array and its size together). */
struct table_array {
	uint64_t mask;
	struct row *slot[];
};

/* A dimension set's table in one shard. */
struct series {
	struct table_array *arr;  /* atomic: readers load it once */
	uint64_t n;               /* rows */
	uint64_t key_bytes;       /* their label bytes (keys) */
	unsigned ncells;
	char *signature;
	/* per family of the set (by its bit), single writer, read by scrapes */
	uint64_t expired[64];
	uint64_t overflow[64];
};

/* What one shard keeps per plan. */
struct shard;

struct shard_state {
	struct agg_plan *plan;
	struct series **series;   /* per dimset */
	/* Per dimset: this state frees the series -- it has not given it to
	 * a newer state. Kept here, not in the series: states retired
	 * together are freed in any order, and one must not read a series
	 * another has freed. */
	bool *owns;
	struct expr_scratch *scratch;
	uint64_t *inst_errors;    /* per family: value or dimension failed */
	uint64_t *log_errors;     /* per plan log: entries not written */
	int64_t next_expiry_ns;
	/* The shards, this state's being peers[self]: a label set may have
	 * rows in several (each ring feeds one shard), and its expiry and
	 * the series limit are decided over all of them (series.c,
	 * elsewhere_ns()). NULL: a state on its own (tests, benchmarks). */
	const struct shard *peers;
	unsigned npeers, self;
};

/** Build the state for @plan, adopting @old's series whose signature
 *  matches (counters survive a reload that leaves them alone). */
struct shard_state *state_create(struct agg_plan *plan, struct shard_state *old,
				 struct agg_epoch *e, struct epoch_retired **rl);
/** Retire a state no reader may still use (series it gave away are not
 *  freed). */
void state_retire(struct shard_state *s, struct agg_epoch *e,
		  struct epoch_retired **rl);

/** Records the shard's memo served (*@hits) and looked up in vain
 *  (*@misses), since the shard started (carried across reloads). Owner
 *  thread only. */
void state_memo_stats(const struct shard_state *s, uint64_t *hits,
		      uint64_t *misses);

/** Lines of stdio handlers the shard could not write (log_flush()),
 *  since it started (carried across reloads). Owner thread only. */
uint64_t state_log_lost(const struct shard_state *s);

/** Write out the stdio lines @s buffered, and those of the states it
 *  replaced (state_create() hands them over): once per shard pass, not
 *  waiting (@until_ns 0); at stop, waiting until @until_ns for a slow
 *  output (log_flush()). */
void state_flush(struct shard_state *s, uint64_t until_ns);

/** Decode record @rec (@len bytes, untrusted; a layout record when @lay,
 *  its layout) into @t and run @s's plan over it. @mar: the shard's
 *  Marathon reader, inside a read section, or NULL. Returns why the record
 *  was rejected (then nothing was counted), or INGEST_REJ_NONE. */
enum ingest_reject state_record(struct shard_state *s, struct attr_table *t,
				const uint8_t *rec, uint32_t len,
				const struct ingest_layout *lay,
				int64_t now_ns, uint64_t series_limit,
				struct mar_reader *mar, struct agg_epoch *e,
				struct epoch_retired **rl);

/**
 * Announce the next record in order that state_record() has not been
 * given or told of (@rec, @len, @lay as it will be), up to INGEST_AHEAD
 * records before its turn, so that its memo lookup starts while the
 * records before it are processed: a layout record is keyed and hashed
 * now, and its turn reuses the key. @rec must not change until then.
 * Announcements out of order or too far ahead are only wasted: a record
 * is taken as announced only if it is the one announced for its place,
 * at the same address.
 */
void state_ahead(struct shard_state *s, const uint8_t *rec, uint32_t len,
		 const struct ingest_layout *lay);

/** Whether announcing records to @s (state_ahead()) pays now: only when
 *  its memo has outgrown the caches. Asked once per poll. */
bool state_wants_ahead(const struct shard_state *s);

/** Records @s processed with the key made when they were announced. */
uint64_t state_ahead_used(const struct shard_state *s);

/*
 * stdio output (logs.c). Each shard formats JSON lines into a buffer of its
 * own for each output and writes whole lines, so shards never interleave
 * within a line, and a slow output holds up no other's lines. The
 * writes never wait: what an output cannot take yet stays in the buffer
 * for the next pass; a line with no room left is dropped and counted.
 */
struct log_buf {
	int fd;
	bool send;           /* fd is a socket */
	bool regular;        /* fd is a regular file: lines written whole */
	bool blocked;        /* fd took not all of the last flush */
	bool mid;            /* fd's last byte from us is inside a line */
	bool torn;           /* ... whose rest was lost: end it first */
	struct log_rot *rot; /* fd's, when rotated */
	uint64_t lost;       /* lines not written: output failed or full */
	size_t len;
	char data[64 * 1024];
};

/** Format logentry @l for the current record and append it to @b
 *  (flushing first if needed). Returns -1, writing nothing, if one of its
 *  fields failed to evaluate (Mixer dropped the instance) or its line
 *  would not fit the buffer. */
int log_entry(const struct agg_plan *p, const struct plan_log *l,
	      const struct attr_table *t, struct expr_scratch *sc,
	      struct log_buf *b);

/** Write out what @b holds, waiting until @until_ns (CLOCK_MONOTONIC) for
 *  an output that cannot take it yet (0: not at all; what it did not take
 *  stays in @b). Lines a failed write left unwritten, and with @until_ns
 *  those the wait did not get out, are counted in @b->lost (the first such
 *  loss in the process is reported on stderr), not retried: an output that
 *  refuses them would hold the shard for ever. */
void log_flush(struct log_buf *b, uint64_t until_ns);

/** Write out what @b holds, not waiting, until @deadline_ns
 *  (CLOCK_MONOTONIC); from then on what is left is counted lost. True when
 *  @b is done with: emptied, or given up. */
bool log_drain(struct log_buf *b, uint64_t deadline_ns);

/** When a slow stdio output's lines are given up: those a reload left
 *  (written meanwhile by the shard's passes, never waiting), and at stop
 *  (one deadline for all shards, waited for); half a second from now. */
uint64_t log_final_deadline(void);

/** Open the handlers' outputs for @p and order each instance's variables;
 *  0 or -1 (logged). */
int plan_open_logs(struct agg_plan *p);

/** Drop rows not updated for the plan's expiry in any shard; counts
 *  them. False when another shard's pass was under way: nothing done. */
bool state_expire(struct shard_state *s, int64_t now_ns, struct agg_epoch *e,
		  struct epoch_retired **rl);

/**
 * Set @ok of plan @op as set @ds of plan @p, across a reload: true when
 * they have the same labels and at least one family in common, with
 * from[b] the bit in @ok of @ds's family b (the same name, kind and
 * buckets), or -1.
 */
bool plan_set_map(const struct agg_plan *p, const struct plan_dimset *ds,
		  const struct agg_plan *op, const struct plan_dimset *ok,
		  int from[64]);

/** A row's @touched bits of set @ok as those of set @ds (plan_set_map()'s
 *  @from): the families both have. */
uint64_t plan_set_touched(const struct plan_dimset *ds, const int from[64],
			  uint64_t touched);

/** Copy the cells of @ds's families in @touched (plan_set_touched()'s)
 *  from @old, a row's cells as set @ok of plan @op keeps them, to where
 *  set @ds of plan @p keeps them in @cells; and their times, @old_ns
 *  (the old row's last update) where @ok kept none. */
void plan_set_move(const struct agg_plan *p, const struct plan_dimset *ds,
		   const struct agg_plan *op, const struct plan_dimset *ok,
		   const int from[64], uint64_t touched, uint64_t *cells,
		   const uint64_t *old, int64_t old_ns);

/** Where family @g of plan @op keeps its instance errors in plan @p,
 *  across a reload: the family of the same name fed by the same instance,
 *  else the first family fed by that instance (the errors are exported
 *  per instance); -1 when no family of @p is. */
long plan_errors_home(const struct agg_plan *p, const struct agg_plan *op,
		      size_t g);

/** Copy a row consistently into @cells (ncells), *@touched, *@last_ns. */
void row_read(const struct row *r, unsigned ncells, uint64_t *cells,
	      uint64_t *touched, int64_t *last_ns);

/* ---- shards and the agg (shard.c; view.c reads them) ------------------ */

#include <pthread.h>

enum { RUN = 0, DRAIN = 1 };

struct shard_ring {
	struct ingest_ring *r;
	bool closing;
	/* Once its connection closed or mixd began to drain, the ring is
	 * followed only up to here (one ring's worth on): a producer that
	 * goes on writing cannot keep it, or mixd, alive (the socket queue
	 * has the same, shard.queue_stop_at). 0: not yet. */
	uint64_t stop_at;
	struct shard_ring *next;
};

struct inbox_msg {
	bool close;
	struct ingest_ring *r;
	struct inbox_msg *next;
};

struct shard {
	struct agg *agg;
	unsigned idx;
	pthread_t thread;
	bool started;
	bool ran; /* was started: its leftovers are drained at the end */

	/* Written by the io thread, under lock. */
	pthread_mutex_t lock;
	struct inbox_msg *inbox;
	struct inbox_msg **inbox_tail;
	int inbox_n;  /* atomic: non-zero when inbox has messages */
	uint32_t doorbell; /* futex word */
	int sleeping;      /* atomic */
	uint64_t nrings;   /* atomic; for placing new rings */

	/* The shard thread's own. */
	struct shard_ring *rings;
	struct ingest_ring *queue;
	uint64_t queue_stop_at; /* drained up to here (shard_ring.stop_at) */
	struct attr_table table;
	uint8_t record[INGEST_POLL_SCRATCH]; /* shm records, copied to decode */
	struct ingest_ring_counts mine[INGEST_TRANSPORT_COUNT];
	/* Its shared rings' producers' words, counted through one allowance
	 * (ingest_ring_set_said()). */
	struct ingest_said said;
	struct epoch_retired *retired; /* memory waiting for readers to leave */
	struct mar_reader *mar;        /* this thread's Marathon reader */
	bool mar_failed; /* no memory for the reader: not tried again */
	int64_t now_ns;                /* coarse clock, once per pass */
	uint64_t processed;            /* records run through the plan */

	/* Read by scrapes: the state (atomic pointer) and published counts. */
	struct shard_state *state;
	uint64_t pub_processed;
	uint64_t pub_memo[2];  /* served, missed */
	uint64_t pub_log_lost; /* stdio lines not written */

	/* Copies of mine[] for readers, stored with ck_pr once per pass. */
	struct ingest_ring_counts pub[INGEST_TRANSPORT_COUNT];
} __attribute__((aligned(64)));

struct agg {
	struct agg_options o;
	const struct attr_vocab *vocab;
	int state; /* atomic: RUN, DRAIN */
	struct shard *shards;
	struct agg_epoch epoch;

	struct mar_resolver *resolver;

	/* The installed plan: an atomic pointer holding one reference. */
	struct agg_plan *plan;
	uint64_t generation;             /* atomic */
	uint64_t rows_added; /* atomic: rows any shard inserted, ever */
	pthread_mutex_t ctl_lock;       /* agg_set_config callers */
	/* One shard's expiry pass at a time (series.c, state_expire()):
	 * each decides what the others hold; a shard that finds it taken
	 * tries again at its next check. */
	pthread_mutex_t expiry_lock;
	struct epoch_retired *retired;  /* under ctl_lock */
};


#endif /* MIXD_AGG_INTERNAL_H */
