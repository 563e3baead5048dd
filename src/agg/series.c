/*
 * series.c -- the record path after decoding, and the tables it writes.
 *
 * Per record: attribute generation (mesos instances; their bindings shadow
 * the proxy's attributes, as outputs in Mixer's child bag did), then each
 * report rule's match, then per dimension set one key built from the label
 * values, one hash (XXH3), one probe, and the updates of every family of
 * the set that a matching rule feeds.
 *
 * Keys are the formatted label values themselves (u16 length + bytes each),
 * hashed and compared directly: one hash and one probe per record, where
 * interning each value first would cost a probe per label. A row's labels
 * are formatted once, when it is created, and rendered from the key.
 *
 * Tables: open addressing with linear probing, grown by rehashing into a
 * new array that is published whole; expiry rebuilds the array without the
 * expired rows. Old arrays and rows are freed through the epoch, so scrapes
 * read without locks.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include <ck_pr.h>

#include "agg/agg_internal.h"
#include "ingest/wire.h"

#define KEY_MAX (64 * 1024)
/* The series limit N bounds a table's label bytes too, to N times this:
 * producers choose label values, up to KEY_MAX a label set, and N such
 * sets would be gigabytes. Istio's labels take a few hundred bytes. */
#define SERIES_KEY_AVG 1024
#define BIND_MAX (16 * 1024)
/* A record whose memo key would be longer is not remembered (keys are
 * about 300 bytes with the user's config), and a shard's keys take at
 * most MEMO_KEY_BUDGET bytes: bounded whatever producers send, and room
 * for MEMO_MAX_ENTRIES keys of 500 bytes. */
#define MEMO_KEY_MAX 1024
_Static_assert(MEMO_KEY_MAX <= MEMO_KEY_LIMIT, "a memo key fits its entry");
#define MEMO_KEY_BUDGET (64u << 20)
/* Memo entries: twice the rows, within these bounds. The memo's memory
 * per entry is about its key (the attributes the config reads, a few
 * hundred bytes) plus a row pointer per dimension set. */
#define MEMO_MIN_ENTRIES 1024
/* From this capacity on (with its rows and keys, several MiB), the memo's
 * lines are fetched ahead of announced records (state_ahead()). */
#define MEMO_PREFETCH_MIN (16 * 1024)
#define MEMO_MAX_ENTRIES (128 * 1024)
/* Traffic that never repeats (every record a new source IP, say) would pay
 * for a key and a lookup per record and gain nothing: when the memo has
 * been filled over its whole size since it was sized (so it is no longer
 * just cold) and fewer than one in MEMO_MIN_SHARE of a window's records
 * were served, it stands aside for MEMO_BACKOFF records, then tries again. */
#define MEMO_WINDOW 4096
#define MEMO_MIN_SHARE 8
#define MEMO_BACKOFF (16 * MEMO_WINDOW)

/* ---- rows: the seqlock ---------------------------------------------------
 *
 * Ordering without fences (ThreadSanitizer does not model fences): every
 * cell store is a release, so the odd count stored before it is visible
 * first; every cell load is an acquire, so the second count is read after
 * the cells. On x86-64 all of these are plain moves.
 */

static inline void row_write_begin(struct row *r)
{
	__atomic_store_n(&r->seq, r->seq + 1, __ATOMIC_RELAXED);
}

static inline void row_write_end(struct row *r)
{
	__atomic_store_n(&r->seq, r->seq + 1, __ATOMIC_RELEASE);
}

static inline void cell_add_u64(uint64_t *c, uint64_t v)
{
	__atomic_store_n(c, *c + v, __ATOMIC_RELEASE);
}

static inline void cell_add_double(uint64_t *c, double v)
{
	double d;
	memcpy(&d, c, 8);
	d += v;
	uint64_t bits;
	memcpy(&bits, &d, 8);
	__atomic_store_n(c, bits, __ATOMIC_RELEASE);
}

static inline void cell_set_double(uint64_t *c, double v)
{
	uint64_t bits;
	memcpy(&bits, &v, 8);
	__atomic_store_n(c, bits, __ATOMIC_RELEASE);
}

void row_read(const struct row *r, unsigned ncells, uint64_t *cells,
	      uint64_t *touched, int64_t *last_ns)
{
	for (;;) {
		uint32_t q1 = __atomic_load_n(&r->seq, __ATOMIC_ACQUIRE);
		if (q1 & 1) {
			ck_pr_stall();
			continue;
		}
		for (unsigned i = 0; i < ncells; i++)
			cells[i] = __atomic_load_n(&r->cells[i], __ATOMIC_ACQUIRE);
		*touched = __atomic_load_n(&r->touched, __ATOMIC_ACQUIRE);
		*last_ns = __atomic_load_n(&r->last_ns, __ATOMIC_ACQUIRE);
		if (__atomic_load_n(&r->seq, __ATOMIC_RELAXED) == q1)
			return;
	}
}

/* ---- tables -------------------------------------------------------------- */

static struct table_array *array_new(uint64_t size)
{
	struct table_array *a = calloc(1, sizeof *a + size * sizeof a->slot[0]);
	if (a)
		a->mask = size - 1;
	return a;
}

static void put(struct table_array *a, struct row *r)
{
	uint64_t i = r->hash & a->mask;
	while (a->slot[i])
		i = (i + 1) & a->mask;
	/* The row is complete before readers can reach it. */
	__atomic_store_n(&a->slot[i], r, __ATOMIC_RELEASE);
}

static struct series *series_new(unsigned ncells, const char *signature)
{
	struct series *se = calloc(1, sizeof *se);
	if (!se)
		return NULL;
	se->ncells = ncells;
	se->signature = strdup(signature);
	se->arr = array_new(64);
	if (!se->signature || !se->arr) {
		free(se->signature);
		free(se->arr);
		free(se);
		return NULL;
	}
	return se;
}

static void free_series(void *p)
{
	struct series *se = p;
	for (uint64_t i = 0; i <= se->arr->mask; i++)
		free(se->arr->slot[i]);
	free(se->arr);
	free(se->signature);
	free(se);
}

static int grow(struct series *se, struct agg_epoch *e, struct epoch_retired **rl)
{
	struct table_array *old = se->arr;
	struct table_array *a = array_new((old->mask + 1) * 2);
	if (!a)
		return -1;
	for (uint64_t i = 0; i <= old->mask; i++)
		if (old->slot[i])
			put(a, old->slot[i]);
	__atomic_store_n(&se->arr, a, __ATOMIC_RELEASE);
	epoch_retire(e, rl, free, old);
	return 0;
}

static struct row *lookup(struct series *se, uint64_t h, const uint8_t *key,
			  uint32_t klen)
{
	struct table_array *a = se->arr;
	for (uint64_t i = h & a->mask;; i = (i + 1) & a->mask) {
		struct row *r = a->slot[i];
		if (!r)
			return NULL;
		if (r->hash == h && r->key_len == klen &&
		    memcmp(row_key(r, se->ncells), key, klen) == 0)
			return r;
	}
}

/* ---- label sets other shards hold ---------------------------------------
 *
 * Each producer's ring feeds one shard, so a label set reported through
 * several rings has a row in several shards, and a scrape adds them up.
 * Whether a label set has gone idle, and whether it is new, are questions
 * about all of its rows: a shard that dropped its idle row of a label set
 * another shard still updates would take its counts out of the exported
 * sum (a counter going down), and a shard at its series limit that
 * refused a label set another shard exports would leave that series short.
 * So both ask the other shards, reading their tables as a scrape does.
 */

/* The series of state @st holding dimension set @d of plan @own, or NULL
 * (a state of another plan, between reloads, may lack it). */
static const struct series *peer_series(const struct shard_state *st,
					const struct agg_plan *own, size_t d)
{
	const struct agg_plan *sp = st->plan;
	if (sp == own)
		return st->series[d];
	for (size_t k = 0; k < sp->ndimsets; k++)
		if (strcmp(sp->dimsets[k].signature, own->dimsets[d].signature) == 0)
			return st->series[k];
	return NULL;
}

/* lookup() in a table another thread writes: its array and slots are read
 * as published. */
static const struct row *peek(const struct series *se, uint64_t h,
			      const uint8_t *key, uint32_t klen)
{
	const struct table_array *a = __atomic_load_n(&se->arr, __ATOMIC_ACQUIRE);
	for (uint64_t i = h & a->mask;; i = (i + 1) & a->mask) {
		const struct row *r = __atomic_load_n(&a->slot[i], __ATOMIC_ACQUIRE);
		if (!r)
			return NULL;
		if (r->hash == h && r->key_len == klen &&
		    memcmp(row_key(r, se->ncells), key, klen) == 0)
			return r;
	}
}

#define NOWHERE INT64_MIN

/* The last update of label set @key (hash @h) of dimension set @d in the
 * shards other than @s's, and (*@touched) the families their rows have;
 * NOWHERE when none of them holds it. With @fresh (a set with family
 * times), *@fresh: the families some other row updated at @since or
 * later. The caller is in a read section of the epoch: the others may
 * retire rows, tables and states meanwhile. */
static int64_t elsewhere_ns(const struct shard_state *s, size_t d, uint64_t h,
			    const uint8_t *key, uint32_t klen,
			    uint64_t *touched, int64_t since, uint64_t *fresh)
{
	const struct plan_dimset *ds = &s->plan->dimsets[d];
	int64_t last = NOWHERE;
	*touched = 0;
	if (fresh)
		*fresh = 0;
	for (unsigned i = 0; s->peers && i < s->npeers; i++) {
		const struct shard_state *st;
		const struct series *se;
		const struct row *r;
		if (i == s->self ||
		    !(st = __atomic_load_n(&s->peers[i].state, __ATOMIC_ACQUIRE)) ||
		    !(se = peer_series(st, s->plan, d)) ||
		    !(r = peek(se, h, key, klen)))
			continue;
		int64_t t = __atomic_load_n(&r->last_ns, __ATOMIC_ACQUIRE);
		if (t > last)
			last = t;
		uint64_t has = __atomic_load_n(&r->touched, __ATOMIC_ACQUIRE);
		*touched |= has;
		/* The same signature: the same layout, times included. */
		for (uint64_t b = fresh ? has : 0; b; b &= b - 1) {
			unsigned k = (unsigned)__builtin_ctzll(b);
			if ((int64_t)__atomic_load_n(&r->cells[ds->tcell + k],
						     __ATOMIC_ACQUIRE) >= since)
				*fresh |= 1ull << k;
		}
	}
	return last;
}

/* The rows the shards have added, ever, as a stamp (odd, so never 0); 0
 * for a state on its own. A remembered overflow stands while it holds:
 * a row added since, in any shard, may be the refused label set. */
static uint32_t rows_gen(const struct shard_state *s)
{
	if (!s->peers || s->npeers < 2)
		return 0;
	return (uint32_t)__atomic_load_n(&s->peers[s->self].agg->rows_added,
					 __ATOMIC_ACQUIRE) | 1;
}

/* Another shard holds label set @key of dimension set @d. */
static bool held_elsewhere(const struct shard_state *s, struct agg_epoch *e,
			   size_t d, uint64_t h, const uint8_t *key,
			   uint32_t klen)
{
	if (!s->peers || s->npeers < 2)
		return false;
	int slot = epoch_enter(e);
	uint64_t touched;
	bool held = elsewhere_ns(s, d, h, key, klen, &touched, 0, NULL) !=
		    NOWHERE;
	epoch_exit(e, slot);
	return held;
}

static struct row *insert(struct series *se, uint64_t h, const uint8_t *key,
			  uint32_t klen, struct agg_epoch *e,
			  struct epoch_retired **rl)
{
	if ((se->n + 1) * 2 > se->arr->mask + 1 && grow(se, e, rl))
		return NULL;
	struct row *r = calloc(1, sizeof *r + se->ncells * 8 + klen);
	if (!r)
		return NULL;
	r->hash = h;
	r->key_len = klen;
	memcpy((uint8_t *)&r->cells[se->ncells], key, klen);
	put(se->arr, r);
	se->n++;
	se->key_bytes += klen;
	return r;
}

/* ---- label values, formatted as Mixer's prometheus adapter did ---------- */

/* Decimal, without snprintf: response codes are in most keys. */
static size_t fmt_i64(int64_t v, char *buf)
{
	char tmp[24];
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		tmp[n++] = '-';
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

struct kv_ref {
	const char *k, *v;
	uint32_t kl, vl;
};

static int kv_cmp(const void *a, const void *b)
{
	const struct kv_ref *x = a, *y = b;
	uint32_t n = x->kl < y->kl ? x->kl : y->kl;
	int c = memcmp(x->k, y->k, n);
	return c ? c : (int)x->kl - (int)y->kl;
}

/* Append one label value to the key; false if it cannot be formatted. */
static bool key_put(uint8_t *key, uint32_t *len, const struct attr_value *v)
{
	if (*len + 2 > KEY_MAX)
		return false; /* the labels before filled the key */
	uint8_t *out = key + *len + 2;
	size_t room = KEY_MAX - *len - 2, n = 0;
	char tmp[400]; /* a double without an exponent: up to 330 bytes */

	switch (v->type) {
	case ATTR_STRING:
	case ATTR_EMAIL:
	case ATTR_URI:
	case ATTR_DNS_NAME:
	case ATTR_BYTES:
		/* The common case, by far: label values are short strings. */
		if (v->len > room || v->len > UINT16_MAX ||
		    !attr_utf8_valid(v->s, v->len))
			return false; /* a label Prometheus would refuse */
		wire_copy(out, v->s, v->len);
		uint16_t l16 = (uint16_t)v->len;
		memcpy(key + *len, &l16, 2);
		*len += 2 + v->len;
		return true;
	case ATTR_INT64:
		n = fmt_i64(v->i, tmp);
		goto copy;
	case ATTR_DOUBLE:
		n = attr_format_double(v->d, tmp, sizeof tmp);
		goto copy;
	case ATTR_BOOL:
		n = v->b ? 4 : 5;
		memcpy(tmp, v->b ? "true" : "false", n);
		goto copy;
	case ATTR_DURATION:
		n = attr_format_duration(v->i, tmp, sizeof tmp);
		goto copy;
	case ATTR_TIMESTAMP:
		n = attr_format_timestamp_us(v->i, tmp, sizeof tmp);
		goto copy;
	case ATTR_IP:
		/* As Go's net.IP prints it (Mixer's label values). */
		if (!(n = attr_format_ip(v, tmp, sizeof tmp)))
			return false;
		goto copy;
	case ATTR_STRING_MAP: {
		/* Sorted k=v&k2=v2, as Mixer rendered a map label. */
		struct kv_ref kv[256];
		struct attr_value k, val;
		size_t off = 0;
		uint32_t cnt = 0;
		while (attr_map_next(v, &off, &k, &val)) {
			if (cnt == 256)
				return false;
			kv[cnt++] = (struct kv_ref){k.s, val.s, k.len, val.len};
		}
		qsort(kv, cnt, sizeof kv[0], kv_cmp);
		for (uint32_t i = 0; i < cnt; i++) {
			size_t need = kv[i].kl + kv[i].vl + 2;
			if (n + need > room)
				return false;
			if (i)
				out[n++] = '&';
			memcpy(out + n, kv[i].k, kv[i].kl);
			n += kv[i].kl;
			out[n++] = '=';
			memcpy(out + n, kv[i].v, kv[i].vl);
			n += kv[i].vl;
		}
		break;
	}
	default:
		return false;
	}
	goto done;
copy:
	if (n > room)
		return false;
	memcpy(out, tmp, n);
done:
	if (n > UINT16_MAX || !attr_utf8_valid(out, n)) /* a map's strings */
		return false;
	uint16_t l16 = (uint16_t)n;
	memcpy(key + *len, &l16, 2);
	*len += 2 + (uint32_t)n;
	return true;
}

/* ---- per-shard state ---------------------------------------------------- */

struct shard_scratch {
	uint8_t key[KEY_MAX];
	char bind[BIND_MAX];
};

/*
 * Layout records and the memo. A layout record's memo key is its compact
 * key (ingest_layout_key(): the chosen fields' values, no headers) behind
 * a byte 2 and the layout's id among the layouts this state has seen (by
 * content, so every proxy running one template shares entries; a headered
 * record's key starts with 1). A record whose entry is found and still
 * right, and whose families' values are constants or 8-byte fields of the
 * layout, is served without being decoded at all: the key walk checks
 * what the decoder would, and the values are read from the record.
 */
#define LAY_CACHE 256          /* serial -> id, direct-mapped */
#define LAY_IDS_MAX 1024       /* distinct layouts given a key id */
#define LAY_INDEX (2 * LAY_IDS_MAX) /* content -> id, open addressing */
#define LAY_FAMS_MAX 64

/* A layout this state has seen, by content, and how it keys and serves
 * its records. Ids index x->lay_ids. */
struct lay_ent {
	/* What each record reads, first. */
	bool direct;      /* a found record needs no decoding */
	struct ingest_layout_key lk;
	/* Per family, when direct: its value's 8-byte field, or -1 for the
	 * constant (the value is one, or its attribute is not in the layout). */
	int8_t val_word[LAY_FAMS_MAX];
	/* The content, for interning. */
	uint32_t n;
	uint32_t hw[MIXD_LAYOUT_FIELDS];
};

/* The id of the layout with serial @serial (a ring's loaded slot); the
 * same content loaded by many rings has one id. */
struct lay_seen {
	uint64_t serial; /* 0: empty */
	uint32_t id;
};

/* Where a remembered record's values come from: the decoded table, or
 * (@le set) the layout record itself. */
struct val_src {
	const struct attr_table *t;
	const struct lay_ent *le;
	const uint8_t *rec;
};

/* Slots for the record being processed and the INGEST_AHEAD announced
 * after it: a power of two, so a record's slot is a mask away. */
#define STATE_SLOTS 4
_Static_assert(STATE_SLOTS > INGEST_AHEAD, "a slot per record in flight");
_Static_assert(!(STATE_SLOTS & (STATE_SLOTS - 1)), "a power of two");

/* A record announced by state_ahead(), by its place in the order. */
struct ahead {
	uint64_t seq;       /* which record: turn when it is processed */
	const uint8_t *rec; /* NULL: not keyed ahead */
	const struct ingest_layout *lay;
	uint32_t len;
	uint32_t klen; /* its key's length, with the 3 bytes before */
	uint32_t le;   /* its layout's id */
	uint64_t mh;   /* its key's hash */
};

/*
 * The stdio lines a replaced state had not written yet. Its successor's
 * passes (state_flush()) write them to the old outputs, which the plan
 * reference keeps open, never waiting, until they are taken or
 * log_final_deadline() of the reload; then what is left is counted lost. A
 * reload so never holds a shard for a slow output: records go on being
 * taken while a stalled reader's lines wait. Lines of the old and the new
 * configuration may then reach one output in either order (whole lines
 * still, never interleaved).
 */
struct log_drain {
	struct log_drain *next;
	struct agg_plan *plan;
	uint64_t until_ns; /* CLOCK_MONOTONIC */
	struct log_buf b;
};
#define LOG_DRAINS_MAX 8 /* beyond, the oldest is given up: bounded memory */

/* Kept beside the state; allocated with it. */
struct state_ext {
	struct shard_state s;
	struct shard_scratch x;
	/* One buffer per output (plan_log.out), so that lines for one wait
	 * for it without holding up another's. */
	struct log_buf *logs;
	uint64_t log_lost;	  /* of buffers gone: old states', drains' */
	struct log_drain *drains; /* newest first */
	/* Per-record results of the plans, one array per rule and per mesos
	 * instance (inputs, bindings). */
	const struct attr_value ***rule_res;
	const struct attr_value ***in_res;
	const struct attr_value ***bind_res;
	uint32_t *src_rule;  /* per family: the rule whose results feed it */
	uint32_t *src_k;     /* ... and its index in that rule's fams */
	/* The record memo, and what the full path did for the record now
	 * being processed, to remember it by. */
	struct memo memo;       /* when the plan's memo_ok */
	uint64_t memo_count[2]; /* served, missed; carried across reloads */
	uint64_t memo_snap;  /* the reader's snapshot generation now */
	struct lay_seen lay_cache[LAY_CACHE]; /* by layout serial */
	struct lay_ent *lay_ids;  /* layouts seen, by content: memo key ids */
	uint16_t *lay_index;      /* LAY_INDEX: id + 1 by content hash; 0 */
	uint32_t nlay_ids, cap_lay_ids;
	uint64_t cap_answers; /* run_apas()'s fingerprint of the answers */
	uint32_t cap_ogen;    /* rows_gen() at a set's overflow; 0: none */
	uint32_t memo_win, memo_win_hits, memo_aside;
	const struct attr_value **val_res;
	/* What process() remembers of a record: written only while its mlen
	 * is not 0, which is only with the memo on, for plans of at most 64
	 * sets and families (plan_memo()). */
	uint8_t cap_st[64];
	struct row *cap_row[64];
	uint8_t cap_hits[64];
	/* Records in order: turn processed, said announced (state_ahead());
	 * record j's announcement and key in slot j % STATE_SLOTS. */
	uint64_t turn, said;
	uint64_t ahead_used; /* records keyed when announced */
	struct ahead ahead[STATE_SLOTS];
	/* Memo keys: byte 1 (so that no key is empty), then the encodings
	 * of the record's memo attributes as the decoder copies them; or,
	 * for a layout record, byte 2, its layout's id (2 bytes) and its
	 * compact key. Room for a whole record, then the hash's padding. */
	uint8_t keys[STATE_SLOTS][1 + INGEST_KEY_ROOM + 16];
	uint8_t *mkey; /* the key of the record being processed */
	uint32_t hits[];
};

static const struct attr_value **res_array(const struct expr_plan *pl)
{
	return calloc(expr_plan_size(pl) + 1, sizeof(struct attr_value *));
}

/* Drop @d, counting in @x what it lost. */
static void drain_free(struct state_ext *x, struct log_drain *d)
{
	x->log_lost += d->b.lost;
	plan_unref(d->plan);
	free(d);
}

void state_flush(struct shard_state *s, uint64_t until_ns)
{
	struct state_ext *x = (struct state_ext *)s;
	for (struct log_drain **pp = &x->drains, *d; (d = *pp);) {
		if (until_ns)
			log_flush(&d->b, until_ns);
		if (until_ns || log_drain(&d->b, d->until_ns)) {
			*pp = d->next;
			drain_free(x, d);
		} else {
			pp = &d->next;
		}
	}
	for (size_t i = 0; i < s->plan->nouts; i++)
		if (x->logs[i].len || x->logs[i].torn)
			log_flush(&x->logs[i], until_ns);
}

/* Take over what @ox, the state @x replaces, has not written yet (not
 * waiting for it: struct log_drain), and the lines it lost. */
static void take_logs(struct state_ext *x, struct state_ext *ox)
{
	x->drains = ox->drains;
	ox->drains = NULL;
	for (size_t i = 0; i < ox->s.plan->nouts; i++) {
		struct log_buf *b = &ox->logs[i];
		log_flush(b, 0);
		if (!b->len && !b->torn)
			continue;
		struct log_drain *d = malloc(sizeof *d);
		if (d) {
			d->b = *b;
			d->b.lost = 0; /* what it loses from now on */
			d->plan = ox->s.plan;
			plan_ref(d->plan);
			d->until_ns = log_final_deadline();
			d->next = x->drains;
			x->drains = d;
			b->len = 0;
			b->torn = false;
		} else {
			/* No memory to wait in the background: wait here. */
			log_flush(b, log_final_deadline());
		}
	}
	x->log_lost = state_log_lost(&ox->s);
	/* The oldest beyond LOG_DRAINS_MAX: given up. */
	unsigned n = 0;
	for (struct log_drain **pp = &x->drains, *d; (d = *pp);) {
		if (++n <= LOG_DRAINS_MAX) {
			pp = &d->next;
			continue;
		}
		log_flush(&d->b, 1); /* past: what it does not take is lost */
		*pp = d->next;
		drain_free(x, d);
	}
}

static void free_results(struct state_ext *x, const struct agg_plan *plan)
{
	for (size_t i = 0; x->rule_res && i < plan->nrules; i++)
		free(x->rule_res[i]);
	for (size_t i = 0; x->in_res && i < plan->napas; i++)
		free(x->in_res[i]);
	for (size_t i = 0; x->bind_res && i < plan->napas; i++)
		free(x->bind_res[i]);
	free(x->rule_res);
	free(x->in_res);
	free(x->bind_res);
	free(x->src_rule);
	free(x->src_k);
	free(x->val_res);
	free(x->lay_ids);
	free(x->lay_index);
	if (plan->memo_ok)
		memo_free(&x->memo);
}

/* Free @x, a state for @plan, made whole or in part (calloc'd pieces;
 * NULL ones skipped), and the series it owns. Not the plan. */
static void free_parts(struct state_ext *x, const struct agg_plan *plan)
{
	struct shard_state *s = &x->s;
	while (x->drains) { /* flushed already (agg_destroy()) */
		struct log_drain *d = x->drains;
		x->drains = d->next;
		drain_free(x, d);
	}
	free_results(x, plan);
	for (size_t d = 0; s->series && s->owns && d < plan->ndimsets; d++)
		if (s->owns[d])
			free_series(s->series[d]);
	free(s->series);
	free(s->owns);
	free(s->inst_errors);
	free(s->log_errors);
	expr_scratch_destroy(s->scratch);
	free(x->logs);
	free(x);
}

/* Do families @a and @b count the same way (so cells of one can go on as
 * the other's)? */
static bool same_family(const struct plan_family *a,
			const struct plan_family *b)
{
	return a->kind == b->kind && a->nb == b->nb &&
	       strcmp(a->name, b->name) == 0 &&
	       (!a->nb || !memcmp(a->bounds, b->bounds, a->nb * sizeof *a->bounds));
}

uint64_t plan_set_touched(const struct plan_dimset *ds, const int from[64],
			  uint64_t touched)
{
	uint64_t t = 0;
	for (unsigned b = 0; b < ds->nfam; b++)
		if (from[b] >= 0 && (touched >> from[b] & 1))
			t |= 1ull << b;
	return t;
}

void plan_set_move(const struct agg_plan *p, const struct plan_dimset *ds,
		   const struct agg_plan *op, const struct plan_dimset *ok,
		   const int from[64], uint64_t touched, uint64_t *cells,
		   const uint64_t *old, int64_t old_ns)
{
	for (unsigned b = 0; b < ds->nfam; b++) {
		if (!(touched >> b & 1))
			continue;
		const struct plan_family *pf = &p->fams[ds->fams[b]];
		const struct plan_family *of = &op->fams[ok->fams[from[b]]];
		memcpy(&cells[pf->cell], &old[of->cell],
		       plan_family_cells(pf) * sizeof cells[0]);
		if (ds->tcell)
			cells[ds->tcell + b] =
				(uint64_t)fam_ns(ok, old, (unsigned)from[b], old_ns);
	}
}

bool plan_set_map(const struct agg_plan *p, const struct plan_dimset *ds,
		  const struct agg_plan *op, const struct plan_dimset *ok,
		  int from[64])
{
	if (strcmp(ok->key_sig, ds->key_sig) != 0)
		return false;
	bool any = false;
	for (unsigned b = 0; b < ds->nfam; b++) {
		from[b] = -1;
		for (unsigned ob = 0; ob < ok->nfam && from[b] < 0; ob++)
			if (same_family(&p->fams[ds->fams[b]],
					&op->fams[ok->fams[ob]]))
				from[b] = (int)ob;
		any |= from[b] >= 0;
	}
	return any;
}

long plan_errors_home(const struct agg_plan *p, const struct agg_plan *op,
		      size_t g)
{
	const struct plan_family *of = &op->fams[g];
	long any = -1;
	for (size_t f = 0; f < p->nfams; f++) {
		if (strcmp(p->fams[f].instance, of->instance))
			continue;
		if (!strcmp(p->fams[f].name, of->name))
			return (long)f;
		if (any < 0)
			any = (long)f;
	}
	return any;
}

/*
 * Fill new dimension set @d of @s, whose families differ from every old
 * set's, with the rows of @old's sets that have its labels: the cells,
 * touched bits and counts of each family both plans have. A reload that
 * adds or removes one metric (their rows are shared by every metric of
 * the same labels) keeps the others' series and counts, as Mixer's
 * adapter, which kept a collector per metric, did.
 */
static int carry_rows(struct shard_state *s, size_t d,
		      const struct shard_state *old, struct agg_epoch *e,
		      struct epoch_retired **rl)
{
	const struct agg_plan *p = s->plan, *op = old->plan;
	const struct plan_dimset *ds = &p->dimsets[d];
	struct series *se = s->series[d];
	for (size_t k = 0; k < op->ndimsets; k++) {
		const struct plan_dimset *ok = &op->dimsets[k];
		int from[64]; /* per family of @d: its bit in set k, or -1 */
		if (!plan_set_map(p, ds, op, ok, from))
			continue;
		const struct series *os = old->series[k];
		for (unsigned b = 0; b < ds->nfam; b++)
			if (from[b] >= 0) {
				se->expired[b] += os->expired[from[b]];
				se->overflow[b] += os->overflow[from[b]];
			}
		for (uint64_t i = 0; i <= os->arr->mask; i++) {
			const struct row *r = os->arr->slot[i];
			if (!r)
				continue;
			uint64_t touched =
				plan_set_touched(ds, from, r->touched);
			if (!touched)
				continue; /* only families that are gone */
			const uint8_t *key = row_key(r, os->ncells);
			struct row *n = lookup(se, r->hash, key, r->key_len);
			if (!n && !(n = insert(se, r->hash, key, r->key_len, e, rl)))
				return -1;
			plan_set_move(p, ds, op, ok, from, touched, n->cells,
				      r->cells, r->last_ns);
			n->touched |= touched;
			if (r->last_ns > n->last_ns)
				n->last_ns = r->last_ns;
		}
	}
	return 0;
}

/*
 * The scratch arena of a shard on @p: the plans evaluated for one record
 * between two expr_scratch_begin() calls (the attribute generators' and
 * every rule's; the value plan's has a begin of its own) each keep their
 * values there until the record is done, and the strings their
 * expressions make take the default arena besides. Sized once from the
 * plan, so that no rule runs short however many there are.
 */
static size_t scratch_bytes(const struct agg_plan *p)
{
	size_t n = 0;
	for (size_t i = 0; i < p->napas; i++)
		n += expr_plan_arena_bytes(p->apas[i].in_plan) +
		     (p->apas[i].bind_plan
			      ? expr_plan_arena_bytes(p->apas[i].bind_plan)
			      : 0);
	for (size_t i = 0; i < p->nrules; i++)
		n += expr_plan_arena_bytes(p->rules[i].xp);
	if (p->val_plan && expr_plan_arena_bytes(p->val_plan) > n)
		n = expr_plan_arena_bytes(p->val_plan);
	return EXPR_SCRATCH_ARENA_DEFAULT + n + 8 * (p->napas + p->nrules + 1);
}

struct shard_state *state_create(struct agg_plan *plan, struct shard_state *old,
				 struct agg_epoch *e, struct epoch_retired **rl)
{
	struct state_ext *x = calloc(1, sizeof *x + (plan->nfams + 1) * 4);
	if (!x)
		return NULL;
	struct shard_state *s = &x->s;
	s->plan = plan;
	x->logs = calloc(plan->nouts + 1, sizeof *x->logs);
	for (size_t i = 0; x->logs && i < plan->nouts; i++)
		x->logs[i].fd = -1; /* no output yet (0 is one) */
	s->series = calloc(plan->ndimsets + 1, sizeof *s->series);
	s->owns = calloc(plan->ndimsets + 1, sizeof *s->owns);
	s->inst_errors = calloc(plan->nfams + 1, sizeof *s->inst_errors);
	s->log_errors = calloc(plan->nlogs + 1, sizeof *s->log_errors);
	s->scratch = expr_scratch_create(plan->prog, scratch_bytes(plan));
	x->rule_res = calloc(plan->nrules + 1, sizeof *x->rule_res);
	x->in_res = calloc(plan->napas + 1, sizeof *x->in_res);
	x->bind_res = calloc(plan->napas + 1, sizeof *x->bind_res);
	x->src_rule = calloc(plan->nfams + 1, sizeof *x->src_rule);
	x->src_k = calloc(plan->nfams + 1, sizeof *x->src_k);
	if (!x->logs || !s->series || !s->owns || !s->inst_errors ||
	    !s->log_errors ||
	    !s->scratch ||
	    !x->rule_res ||
	    !x->in_res || !x->bind_res || !x->src_rule || !x->src_k)
		goto fail;
	for (size_t i = 0; i < plan->nrules; i++)
		if (!(x->rule_res[i] = res_array(plan->rules[i].xp)))
			goto fail;
	/* The memo's counts go on across reloads; the old state's are final
	 * (a shard switches states between records). So do the lines lost
	 * (take_logs(), once nothing can fail). */
	if (old) {
		struct state_ext *ox = (struct state_ext *)old;
		memcpy(x->memo_count, ox->memo_count, sizeof x->memo_count);
	}
	/* So do the instance errors (counters must not reset on a reload;
	 * they are exported per instance): a family's as
	 * plan_errors_home() says, a logentry's by its instance's, all of
	 * an old instance's on the new plan's first log of it. */
	for (size_t g = 0; old && g < old->plan->nfams; g++) {
		long f = plan_errors_home(plan, old->plan, g);
		if (f >= 0)
			s->inst_errors[f] += old->inst_errors[g];
	}
	for (size_t g = 0; old && g < old->plan->nlogs; g++)
		for (size_t l = 0; l < plan->nlogs; l++)
			if (!strcmp(plan->logs[l].inst->meta.fqn,
				    old->plan->logs[g].inst->meta.fqn)) {
				s->log_errors[l] += old->log_errors[g];
				break;
			}
	if (plan->memo_ok) {
		if (!(x->val_res = res_array(plan->val_plan)) ||
		    memo_init(&x->memo, (unsigned)plan->ndimsets,
			      (unsigned)plan->nfams, MEMO_MIN_ENTRIES,
			      MEMO_KEY_BUDGET))
			goto fail;
	}
	for (size_t i = 0; i < plan->napas; i++)
		if (!(x->in_res[i] = res_array(plan->apas[i].in_plan)) ||
		    !(x->bind_res[i] = res_array(plan->apas[i].bind_plan)))
			goto fail;
	for (size_t d = 0; d < plan->ndimsets; d++) {
		const struct plan_dimset *ds = &plan->dimsets[d];
		/* Keep the rows of an unchanged dimension set across a reload. */
		for (size_t k = 0; old && k < old->plan->ndimsets; k++) {
			struct series *os = old->series[k];
			if (old->owns[k] &&
			    strcmp(os->signature, ds->signature) == 0) {
				s->series[d] = os;
				break;
			}
		}
		if (!s->series[d]) {
			if (!(s->series[d] = series_new(ds->ncells, ds->signature)))
				goto fail;
			s->owns[d] = true;
			if (old && carry_rows(s, d, old, e, rl))
				goto fail;
		}
	}
	/* Only now, when nothing can fail: take the adopted series over,
	 * and the old state's stdio lines. */
	for (size_t d = 0; d < plan->ndimsets; d++)
		for (size_t k = 0; old && !s->owns[d] && k < old->plan->ndimsets;
		     k++)
			if (old->series[k] == s->series[d]) {
				old->owns[k] = false;
				s->owns[d] = true;
			}
	if (old)
		take_logs(x, (struct state_ext *)old);
	plan_ref(plan);
	return s;
fail:
	free_parts(x, plan);
	(void)e;
	(void)rl;
	return NULL;
}

static void free_state(void *p)
{
	struct shard_state *s = p;
	struct agg_plan *plan = s->plan;
	free_parts((struct state_ext *)s, plan); /* the state_ext starts with s */
	plan_unref(plan);
}

void state_memo_stats(const struct shard_state *s, uint64_t *hits,
		      uint64_t *misses)
{
	const struct state_ext *x = (const struct state_ext *)s;
	*hits = x->memo_count[0];
	*misses = x->memo_count[1];
}

uint64_t state_log_lost(const struct shard_state *s)
{
	const struct state_ext *x = (const struct state_ext *)s;
	uint64_t n = x->log_lost;
	for (size_t i = 0; i < s->plan->nouts; i++)
		n += x->logs[i].lost;
	return n;
}

void state_retire(struct shard_state *s, struct agg_epoch *e,
		  struct epoch_retired **rl)
{
	if (!s)
		return;
	state_flush(s, 0); /* handed over (take_logs()), or waited for
			    * (agg_destroy()) */
	epoch_retire(e, rl, free_state, s);
}

/* ---- the record path ----------------------------------------------------- */

static bool rule_applies(const struct agg_plan *p, const struct cfg_rule *r,
			 bool all, const struct attr_table *t)
{
	if (all)
		return true;
	const char *ns;
	size_t len;
	return cfg_record_namespace(t, &ns, &len) &&
	       cfg_rule_applies(p->cfg, r, ns, len);
}

/* The resolver's answer for mesos instance @a, its inputs evaluated in
 * @in; false when it found nothing. */
static bool ask(const struct plan_apa *a, const struct attr_value **in,
		struct mar_reader *mar, struct mar_result *res)
{
	const struct attr_value *q5[5];
	for (int k = 0; k < 5; k++)
		q5[k] = a->in_at[k] == UINT32_MAX ? NULL : in[a->in_at[k]];
	struct mar_query q = {q5[0], q5[1], q5[2], q5[3], q5[4]};
	return mar_lookup(mar, &q, res);
}

/* Whether mesos instance @a could be built from its inputs evaluated in
 * @in: Mixer skipped an instance one of whose fields failed to evaluate
 * (an attribute absent, no `|` default), asking its adapter nothing and
 * binding nothing (dispatcher/session.go). */
static bool inputs_built(const struct plan_apa *a,
			 const struct attr_value **in)
{
	for (int k = 0; k < 5; k++)
		if (a->in_at[k] != UINT32_MAX && !in[a->in_at[k]])
			return false;
	return true;
}

/* Fold one answer's fingerprint (0: none found) into a record's. */
#define ANSWERS_NONE 0x243f6a8885a308d3ull /* no instance asked */
#define ANSWER_SKIPPED 1 /* an instance not built (inputs_built()) */
static uint64_t answers_fold(uint64_t fp, uint64_t answer)
{
	return (fp ^ answer) * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
}

/*
 * Does mesos instance @i run for record @t (inputs evaluated into its
 * in_res)? @dispatched: bit per instance that ran already, for rules
 * that send one instance twice.
 */
static bool apa_runs(const struct agg_plan *p, struct state_ext *x,
		     const struct attr_table *t, struct expr_scratch *sc,
		     size_t i, uint64_t *dispatched)
{
	const struct plan_apa *a = &p->apas[i];
	if (a->first != (int)i && a->first < 64 &&
	    ((*dispatched >> a->first) & 1))
		return false; /* the same instance already ran */
	const struct attr_value **in = x->in_res[i];
	expr_plan_eval(a->in_plan, t, sc, in);
	const struct attr_value *g = in[a->in_guard];
	if (!g || g->type != ATTR_BOOL || !g->b ||
	    !rule_applies(p, a->r, a->all_namespaces, t))
		return false;
	if (a->first < 64)
		*dispatched |= 1ull << a->first;
	return true;
}

/*
 * Attribute generation. Every matching mesos instance whose inputs
 * evaluate asks the Marathon resolver (inputs evaluated against the record
 * as it arrived), whose outputs fill $out.*; its bindings are then
 * evaluated -- all of them bound, or none if one fails, as Mixer did --
 * and all instances' bindings are applied together. Outputs the resolver
 * lacks leave $out.* absent, so those bindings take their defaults -- what
 * Mixer did when its adapter had no data. Bindings shadow what the proxy
 * sent, as outputs in Mixer's child bag did.
 */
static void run_apas(struct shard_state *s, struct state_ext *x,
		     struct attr_table *t, struct mar_reader *mar)
{
	struct agg_plan *p = s->plan;
	struct expr_scratch *sc = s->scratch;
	struct {
		int slot;
		const struct attr_value *v;
	} out[128];
	size_t nout = 0, used = 0;
	uint64_t dispatched = 0; /* bit i: apas[i] ran this record */
	uint64_t fp = ANSWERS_NONE;

	bool asked = false;
	for (size_t i = 0; i < p->napas; i++) {
		const struct plan_apa *a = &p->apas[i];
		if (!apa_runs(p, x, t, sc, i, &dispatched))
			continue;
		if (!inputs_built(a, x->in_res[i])) {
			if (p->memo_ok)
				fp = answers_fold(fp, ANSWER_SKIPPED);
			continue;
		}
		/* $out.* is this instance's answer alone: a second instance
		 * that finds less must not bind the first one's outputs. */
		for (int o = 0; asked && o < MAR_OUT_COUNT; o++)
			if (p->out_slot[o] >= 0)
				t->present[p->out_slot[o] >> 6] &=
					~(1ull << (p->out_slot[o] & 63));
		asked = true;
		struct mar_result res;
		bool found = mar && ask(a, x->in_res[i], mar, &res);
		for (int o = 0; found && o < MAR_OUT_COUNT; o++) {
			const struct attr_value *v = mar_result_get(&res, o);
			if (v && p->out_slot[o] >= 0)
				attr_table_set(t, (unsigned)p->out_slot[o], v);
		}
		if (p->memo_ok)
			fp = answers_fold(fp, found ? mar_result_fingerprint(&res)
						    : 0);
		const struct attr_value **br = x->bind_res[i];
		expr_plan_eval(a->bind_plan, t, sc, br);
		/* One binding that fails to evaluate, and Mixer's output
		 * mapper bound none of the instance's: the attributes stay
		 * as they are (template.NewOutputMapperFn). */
		size_t k = 0;
		while (k < a->nbind && br[a->bind_at[k]])
			k++;
		for (size_t j = 0; k == a->nbind && j < a->nbind && nout < 128;
		     j++)
			out[nout++] = (typeof(out[0])){a->bind_slot[j],
						       br[a->bind_at[j]]};
	}
	/* Strings built during evaluation live in the scratch arena, which
	 * the report phase resets: keep copies. Values are copied field by
	 * field, in the widths they were written with: a 24-byte struct copy
	 * of a value the plan has just stored stalls on store forwarding. */
	for (size_t i = 0; i < nout; i++) {
		const struct attr_value *v = out[i].v;
		unsigned slot = (unsigned)out[i].slot;
		const char *kept = NULL;
		if ((attr_type_is_string(v->type) || v->type == ATTR_BYTES) &&
		    v->s >= sc->arena && v->s < sc->arena + sc->arena_cap) {
			if (used + v->len > BIND_MAX)
				continue; /* no room to keep it: leave the attribute */
			memcpy(x->x.bind + used, v->s, v->len);
			kept = x->x.bind + used;
			used += v->len;
		}
		struct attr_value *d = &t->v[slot];
		uint64_t u[2];
		memcpy(u, &v->i, 16);
		d->type = v->type;
		d->len = v->len;
		memcpy(&d->i, u, 16);
		if (kept)
			d->s = kept;
		t->present[slot >> 6] |= 1ull << (slot & 63);
	}
	if (nout)
		expr_scratch_begin(sc);
	x->cap_answers = fp;
}

/*
 * Remembered entry @e was made under an older Marathon snapshot: is it
 * right under this one? It is when every mesos instance the record runs
 * finds answers with the same fingerprint (same outputs, same container):
 * its bindings, hence everything after them, come out the same. A lookup
 * per instance, against the record path's thousands of instructions.
 */
static bool still_answers(struct shard_state *s, struct state_ext *x,
			  const struct attr_table *t, struct mar_reader *mar,
			  const struct memo_ent *e)
{
	const struct agg_plan *p = s->plan;
	uint64_t fp = ANSWERS_NONE, dispatched = 0;
	expr_scratch_begin(s->scratch);
	for (size_t i = 0; i < p->napas; i++) {
		if (!apa_runs(p, x, t, s->scratch, i, &dispatched))
			continue;
		if (!inputs_built(&p->apas[i], x->in_res[i])) {
			fp = answers_fold(fp, ANSWER_SKIPPED);
			continue;
		}
		struct mar_result res;
		bool found = mar && ask(&p->apas[i], x->in_res[i], mar, &res);
		fp = answers_fold(fp, found ? mar_result_fingerprint(&res) : 0);
	}
	return fp == e->answers;
}

static inline __attribute__((always_inline)) void
update(const struct plan_family *f, uint64_t *cells, double v)
{
	uint64_t *c = cells + f->cell;
	switch (f->kind) {
	case FAM_COUNTER:
		cell_add_double(c, v);
		break;
	case FAM_GAUGE:
		cell_set_double(c, v);
		break;
	case FAM_HISTOGRAM: {
		size_t b = fam_bucket(f, v);
		cell_add_u64(&c[b], 1);
		cell_add_double(&c[f->nb + 1], v);
		cell_add_u64(&c[f->nb + 2], 1);
		break;
	}
	}
}

/* @n dispatches of family @f failed: instance errors (read by scrapes). */
static inline void count_errors(struct shard_state *s, uint32_t f, uint32_t n)
{
	__atomic_store_n(&s->inst_errors[f], s->inst_errors[f] + n,
			 __ATOMIC_RELAXED);
}

/* A label of set @ds failed: every dispatched family of it is skipped. */
static void count_dimfail(struct shard_state *s, const struct plan_dimset *ds,
			  const uint32_t *cnt)
{
	for (unsigned k = 0; k < ds->nfam; k++)
		if (cnt[k])
			count_errors(s, ds->fams[k], cnt[k]);
}

/* Family @f's value for this record into *@out; false (and its dispatches
 * counted as instance errors) if it has none a Prometheus family takes. */
static inline bool family_value(struct shard_state *s, uint32_t f,
				const struct attr_value *v, uint32_t hits, double *out)
{
	if (v && metric_value(v, out) &&
	    (s->plan->fams[f].kind != FAM_COUNTER || *out >= 0))
		return true;
	count_errors(s, f, hits);
	return false;
}

/* The families of set @ds in @ok (by bit) were dispatched but the label
 * set has no row: counted, not stored, so memory stays bounded. */
static void count_overflow(struct series *se, const struct plan_dimset *ds,
			   uint64_t ok)
{
	for (unsigned k = 0; k < ds->nfam; k++)
		if ((ok >> k) & 1)
			__atomic_store_n(&se->overflow[k], se->overflow[k] + 1,
					 __ATOMIC_RELAXED);
}

/* Inside a row write: the families of @ds in @ok were updated at
 * @now_ns. */
static inline void row_mark(const struct plan_dimset *ds, struct row *r,
			    uint64_t ok, int64_t now_ns)
{
	if ((r->touched | ok) != r->touched)
		__atomic_store_n(&r->touched, r->touched | ok, __ATOMIC_RELEASE);
	__atomic_store_n(&r->last_ns, now_ns, __ATOMIC_RELEASE);
	if (ds->tcell)
		for (uint64_t b = ok; b; b &= b - 1)
			__atomic_store_n(&r->cells[ds->tcell + __builtin_ctzll(b)],
					 (uint64_t)now_ns, __ATOMIC_RELEASE);
}

/* Update row @r: family k of @ds (bit k of @ok) @hits[f] times by val[k]. */
static void row_apply(const struct agg_plan *p, const struct plan_dimset *ds,
		      struct row *r, uint64_t ok, const uint32_t *cnt,
		      const double *val, int64_t now_ns)
{
	row_write_begin(r);
	for (unsigned k = 0; k < ds->nfam; k++) {
		if (!((ok >> k) & 1))
			continue;
		for (uint32_t c = cnt[k]; c; c--)
			update(&p->fams[ds->fams[k]], r->cells, val[k]);
	}
	row_mark(ds, r, ok, now_ns);
	row_write_end(r);
}

/*
 * Family @f's value for a remembered record (dispatched @hits times), as
 * family_value() of its val_plan result would be; false: an instance
 * error, counted. Most values are `attribute | constant`, an attribute
 * alone or a constant, read here directly: from the layout record itself
 * when @src has its layout (lay_ent_init() made sure each is a word or the
 * constant), else from the table; others, and an attribute of a type
 * other than the declared one, take val_plan (evaluated once per record,
 * *@evaluated).
 */
/* The 8-byte field of layout record @rec that lay_ent_init() chose for
 * family @f (@pf), as an attribute in *@word; NULL: the constant. */
static inline const struct attr_value *
layout_word(const struct lay_ent *le, const uint8_t *rec,
	    const struct plan_family *pf, uint32_t f, struct attr_value *word)
{
	int w = le->val_word[f];
	if (w < 0)
		return NULL;
	word->type = pf->val_decl;
	memcpy(&word->i, rec + 4 + 8 * w, 8);
	return word;
}

/* Family @f's (@pf's) value when it is direct: attribute @v, or (NULL:
 * absent) the constant; false: an instance error, counted. */
static inline bool direct_value(struct shard_state *s,
				const struct plan_family *pf, uint32_t f,
				const struct attr_value *v, uint32_t hits,
				double *out)
{
	if (v)
		return family_value(s, f, v, hits, out);
	if (pf->val_k_ok) {
		*out = pf->val_k;
		return true;
	}
	count_errors(s, f, hits);
	return false;
}

static inline bool value_of(struct shard_state *s, struct state_ext *x,
			    const struct val_src *src, bool *evaluated,
			    uint32_t f, uint32_t hits, double *out)
{
	const struct agg_plan *p = s->plan;
	const struct plan_family *pf = &p->fams[f];
	const struct attr_value *v = NULL; /* NULL: absent, the constant */
	struct attr_value word;
	if (src->le) { /* lay_ent_init() made sure: every value is direct */
		v = layout_word(src->le, src->rec, pf, f, &word);
	} else if (pf->val_direct) {
		uint32_t slot = pf->val_slot;
		if (slot != UINT32_MAX && attr_table_has(src->t, slot))
			v = &src->t->v[slot];
		if (v && v->type != pf->val_decl)
			goto plan;
	} else {
		goto plan;
	}
	return direct_value(s, pf, f, v, hits, out);
plan:
	if (!*evaluated) {
		expr_scratch_begin(s->scratch);
		expr_plan_eval(p->val_plan, src->t, s->scratch, x->val_res);
		*evaluated = true;
	}
	return family_value(s, f, x->val_res[p->val_at[f]], hits, out);
}

/* Set @d of a remembered record, which became @st (not MEMO_SKIP) when it
 * was remembered: @mh its dispatches per family, @r its row (MEMO_ROW). */
static void replay_set(struct shard_state *s, struct state_ext *x, size_t d,
		       uint8_t st, const uint8_t *mh, struct row *r,
		       const struct val_src *src, bool *evaluated,
		       int64_t now_ns)
{
	const struct plan_dimset *ds = &s->plan->dimsets[d];
	uint32_t cnt[64]; /* dispatches of the set's k-th family */
	for (unsigned k = 0; k < ds->nfam; k++)
		cnt[k] = mh[ds->fams[k]];
	if (st == MEMO_DIMFAIL) {
		count_dimfail(s, ds, cnt);
		return;
	}
	double val[64];
	uint64_t ok = 0;
	for (unsigned k = 0; k < ds->nfam; k++)
		if (cnt[k] && value_of(s, x, src, evaluated, ds->fams[k], cnt[k],
				       &val[k]))
			ok |= 1ull << k;
	if (!ok)
		return;
	if (st == MEMO_OVERFLOW)
		count_overflow(s->series[d], ds, ok);
	else
		row_apply(s->plan, ds, r, ok, cnt, val, now_ns);
}

/* A remembered record: only its values are evaluated. */
static void replay(struct shard_state *s, struct state_ext *x,
		   struct memo_ent *e, const struct val_src *src,
		   int64_t now_ns)
{
	const uint8_t *st = memo_st(&x->memo, e), *mh = memo_hits(&x->memo, e);
	struct row **rows = memo_rows(e);
	bool evaluated = false;
	for (size_t d = 0; d < s->plan->ndimsets; d++)
		if (st[d] != MEMO_SKIP)
			replay_set(s, x, d, st[d], mh, rows[d], src, &evaluated,
				   now_ns);
}

/*
 * A remembered record of a direct layout (lay_ent_init()): replay() in one
 * pass, each family's value read from the record and applied as it is
 * read, the common case of a set with its row. A set that failed or
 * overflowed when the record was remembered takes replay_set().
 */
static void replay_direct(struct shard_state *s, struct state_ext *x,
			  struct memo_ent *e, const struct lay_ent *le,
			  const uint8_t *rec, int64_t now_ns)
{
	const struct agg_plan *p = s->plan;
	const uint8_t *st = memo_st(&x->memo, e), *mh = memo_hits(&x->memo, e);
	struct row **rows = memo_rows(e);
	const struct val_src src = {.le = le, .rec = rec};
	bool evaluated = false; /* never set: a direct layout's values are */

	for (size_t d = 0; d < p->ndimsets; d++) {
		if (st[d] == MEMO_SKIP)
			continue;
		const struct plan_dimset *ds = &p->dimsets[d];
		if (__builtin_expect(st[d] != MEMO_ROW, 0)) {
			replay_set(s, x, d, st[d], mh, NULL, &src, &evaluated,
				   now_ns);
			continue;
		}
		struct row *r = rows[d];
		uint64_t ok = 0;
		row_write_begin(r);
		for (unsigned k = 0; k < ds->nfam; k++) {
			uint32_t f = ds->fams[k], n = mh[f];
			const struct plan_family *pf = &p->fams[f];
			struct attr_value word;
			double v;
			if (!n || !direct_value(s, pf, f,
						layout_word(le, rec, pf, f, &word),
						n, &v))
				continue;
			ok |= 1ull << k;
			do
				update(pf, r->cells, v);
			while (--n);
		}
		if (ok)
			row_mark(ds, r, ok, now_ns);
		row_write_end(r);
	}
}

/* Remember what the full path did for the record keyed @key. */
static void remember(struct shard_state *s, struct state_ext *x, uint64_t h,
		     uint32_t len)
{
	const struct agg_plan *p = s->plan;
	struct memo *m = &x->memo;
	uint64_t rows = 0;
	for (size_t d = 0; d < p->ndimsets; d++)
		rows += s->series[d]->n;
	uint64_t cap = memo_capacity(m);
	if (rows * 2 > cap && cap < MEMO_MAX_ENTRIES) {
		uint64_t want = cap;
		while (want < rows * 2 && want < MEMO_MAX_ENTRIES)
			want *= 2;
		/* On ENOMEM the memo keeps its size: not an error. */
		(void)memo_resize(m, want);
	}
	struct memo_ent *e = memo_claim(m, h, x->mkey, len);
	if (!e)
		return;
	e->snap_gen = x->memo_snap;
	e->answers = x->cap_answers;
	e->overflow_gen = x->cap_ogen;
	memcpy(memo_rows(e), x->cap_row, p->ndimsets * sizeof x->cap_row[0]);
	memcpy(memo_st(m, e), x->cap_st, p->ndimsets);
	memcpy(memo_hits(m, e), x->cap_hits, p->nfams);
}

/*
 * The memo's entry for the record keyed x->mkey[0 .. @keylen) (0: it has
 * no key), or NULL; *@mh and *@mlen: what to remember it by (mlen 0:
 * nothing); @hashed: *@mh holds the key's hash already. *@looked: the
 * memo was consulted -- it stands aside for a while when records do not
 * repeat. The entry may have been made under another Marathon snapshot
 * (process() checks).
 */
static struct memo_ent *memo_look(struct state_ext *x, uint32_t keylen,
				  bool hashed, struct mar_reader *mar,
				  bool *looked, uint64_t *mh, uint32_t *mlen)
{
	/* The snapshot in use: an entry made under another one is checked
	 * against it before it serves (still_answers()). */
	x->memo_snap = mar ? mar_reader_generation(mar) : 0;
	*looked = false;
	*mlen = 0;
	if (x->memo_aside) {
		x->memo_aside--;
		return NULL;
	}
	*looked = true;
	/* Longer keys are not remembered (see MEMO_KEY_MAX); a record with
	 * none (over MIXD_RECORD_MAX, which no ring or frame passes) is a
	 * miss too. */
	if (!keylen || keylen > MEMO_KEY_MAX)
		return NULL;
	*mlen = keylen;
	if (!hashed) {
		memset(x->mkey + keylen, 0, 16);
		*mh = memo_hash(x->mkey, keylen);
	}
	return memo_find(&x->memo, *mh, x->mkey, keylen);
}

/* Count a consulted record served or missed; stand aside when too few
 * of a window's records were served. */
static void memo_tally(struct state_ext *x, bool served)
{
	x->memo_count[!served]++;
	x->memo_win_hits += served;
	if (++x->memo_win == MEMO_WINDOW) {
		if (x->memo_win_hits * MEMO_MIN_SHARE < MEMO_WINDOW &&
		    x->memo.claims >= memo_capacity(&x->memo))
			x->memo_aside = MEMO_BACKOFF;
		x->memo_win = x->memo_win_hits = 0;
	}
}

/* Run the plan over decoded record @t. @me, @looked, @mh, @mlen: what
 * memo_look() said (all zero when the memo is off). */
static void process(struct shard_state *s, struct attr_table *t,
		    struct memo_ent *me, bool looked, uint64_t mh,
		    uint32_t mlen, int64_t now_ns,
		    uint64_t series_limit, struct mar_reader *mar,
		    struct agg_epoch *e, struct epoch_retired **rl)
{
	struct state_ext *x = (struct state_ext *)s;
	struct agg_plan *p = s->plan;
	struct expr_scratch *sc = s->scratch;
	uint32_t *hits = x->hits;
	bool any = false;

	/* A refusal at the series limit, with rows added since. */
	if (me && me->overflow_gen && me->overflow_gen != rows_gen(s)) {
		memo_drop(me);
		me = NULL;
	}
	/* Made under another snapshot: still right? Once per entry and
	 * snapshot. */
	if (me && me->snap_gen != x->memo_snap) {
		if (still_answers(s, x, t, mar, me)) {
			me->snap_gen = x->memo_snap;
		} else {
			memo_drop(me);
			me = NULL;
		}
	}
	if (looked)
		memo_tally(x, me != NULL);
	if (me) {
		replay(s, x, me, &(struct val_src){.t = t}, now_ns);
		return;
	}

	expr_scratch_begin(sc);
	x->cap_answers = ANSWERS_NONE;
	x->cap_ogen = 0;
	if (p->napas)
		run_apas(s, x, t, mar);

	for (size_t i = 0; i < p->nrules; i++) {
		const struct plan_rule *r = &p->rules[i];
		if (!r->nfams && !r->nlogs)
			continue;
		/* Its namespace first: a rule that cannot apply to the record
		 * is not evaluated. */
		if (!rule_applies(p, r->r, r->all_namespaces, t))
			continue;
		const struct attr_value **res = x->rule_res[i];
		expr_plan_eval(r->xp, t, sc, res);
		/* A match that fails to evaluate counts as false, as in Mixer. */
		const struct attr_value *g = res[r->guard];
		if (!g || g->type != ATTR_BOOL || !g->b)
			continue;
		for (size_t k = 0; k < r->nlogs; k++) {
			uint32_t l = r->logs[k];
			if (log_entry(p, &p->logs[l], t, sc,
				      &x->logs[p->logs[l].out]))
				__atomic_store_n(&s->log_errors[l],
						 s->log_errors[l] + 1,
						 __ATOMIC_RELAXED);
		}
		/* Every dispatch counts, as in Mixer: two rules sending one
		 * instance to one handler count it twice. */
		for (size_t k = 0; k < r->nfams; k++) {
			uint32_t f = r->fams[k];
			if (!hits[f]++) {
				x->src_rule[f] = (uint32_t)i;
				x->src_k[f] = (uint32_t)k;
			}
		}
		any |= r->nfams > 0;
	}
	/* What to remember: the dispatches, then per set what became of it. */
	for (size_t f = 0; f < p->nfams && mlen; f++) {
		if (hits[f] > UINT8_MAX)
			mlen = 0;
		x->cap_hits[f] = (uint8_t)hits[f];
	}
	for (size_t d = 0; d < p->ndimsets && mlen; d++)
		x->cap_st[d] = MEMO_SKIP;
	if (!any) {
		if (mlen)
			remember(s, x, mh, mlen);
		return;
	}

	for (size_t d = 0; d < p->ndimsets; d++) {
		const struct plan_dimset *ds = &p->dimsets[d];
		int lead = -1;
		for (unsigned k = 0; k < ds->nfam && lead < 0; k++)
			if (hits[ds->fams[k]])
				lead = (int)ds->fams[k];
		if (lead < 0)
			continue;
		/* The key: every label value, formatted, from the results of a
		 * rule that feeds the set (the expressions are the set's, so any
		 * such rule has the same values). A dimension that fails skips
		 * every instance that needs it. */
		const struct plan_rule *lr = &p->rules[x->src_rule[lead]];
		const struct attr_value **lres = x->rule_res[x->src_rule[lead]];
		const uint32_t *dat = lr->at + lr->off[x->src_k[lead]] + 1;
		uint32_t klen = 0, cnt[64];
		bool ok = true;
		for (unsigned k = 0; k < ds->nfam; k++)
			cnt[k] = hits[ds->fams[k]];
		for (size_t k = 0; k < ds->ndims && ok; k++) {
			const struct attr_value *v = lres[dat[k]];
			ok = v && key_put(x->x.key, &klen, v);
		}
		if (!ok) {
			count_dimfail(s, ds, cnt);
			if (mlen)
				x->cap_st[d] = MEMO_DIMFAIL;
			continue;
		}
		double val[64];
		uint64_t vok = 0;
		for (unsigned k = 0; k < ds->nfam; k++) {
			uint32_t f = ds->fams[k];
			if (!cnt[k])
				continue;
			const struct plan_rule *fr = &p->rules[x->src_rule[f]];
			const struct attr_value *v =
				x->rule_res[x->src_rule[f]][fr->at[fr->off[x->src_k[f]]]];
			if (family_value(s, f, v, cnt[k], &val[k]))
				vok |= 1ull << k;
		}
		if (!vok) {
			mlen = 0; /* the row was not looked for: nothing to keep */
			continue;
		}
		struct series *se = s->series[d];
		uint64_t h = XXH3_64bits(x->x.key, klen);
		struct row *r = lookup(se, h, x->x.key, klen);
		/* At the limit, a label set another shard stores is not new:
		 * it is stored here too, or its series would miss these
		 * records. A refusal is remembered with the rows' stamp taken
		 * before looking: a row added since, anywhere, undoes it. */
		bool full = !r && (se->n >= series_limit ||
				   se->key_bytes + klen >
					   series_limit * SERIES_KEY_AVG);
		/* But never past twice the limit: with N shards each keeping
		 * the label sets the others keep, a shard would hold N times
		 * it. Past that, such records are counted like any other. */
		bool hard = full && (se->n >= 2 * series_limit ||
				     se->key_bytes + klen >
					     2 * series_limit * SERIES_KEY_AVG);
		uint32_t ogen = full ? rows_gen(s) : 0;
		if (full &&
		    (hard || !held_elsewhere(s, e, d, h, x->x.key, klen))) {
			count_overflow(se, ds, vok);
			if (mlen) {
				x->cap_st[d] = MEMO_OVERFLOW;
				x->cap_ogen = ogen;
			}
			continue;
		}
		if (!r) {
			if (!(r = insert(se, h, x->x.key, klen, e, rl))) {
				count_overflow(se, ds, vok); /* no memory */
				mlen = 0;
				continue;
			}
			if (s->peers)
				__atomic_add_fetch(
					&s->peers[s->self].agg->rows_added, 1,
					__ATOMIC_RELEASE);
		}
		row_apply(p, ds, r, vok, cnt, val, now_ns);
		if (mlen) {
			x->cap_st[d] = MEMO_ROW;
			x->cap_row[d] = r;
		}
	}
	for (size_t f = 0; f < p->nfams; f++)
		hits[f] = 0;
	if (mlen)
		remember(s, x, mh, mlen);
}

/* How @le keys and serves records of layout @lay under plan @p. */
static void lay_ent_init(struct lay_ent *le, const struct agg_plan *p,
			 const struct ingest_layout *lay)
{
	ingest_layout_key_init(&le->lk, lay, &p->memo_keys);
	le->direct = p->nfams <= LAY_FAMS_MAX;
	for (size_t f = 0; f < p->nfams && le->direct; f++) {
		const struct plan_family *pf = &p->fams[f];
		unsigned i = 0;
		while (i < lay->n && (uint16_t)lay->hw[i] != pf->val_slot)
			i++;
		le->val_word[f] = -1;
		if (!pf->val_direct)
			le->direct = false;
		else if (i < lay->nword && lay->hw[i] >> 16 == pf->val_decl)
			le->val_word[f] = (int8_t)i;
		else if (i < lay->n)
			le->direct = false; /* a field, not a word: decode */
	}
}

/* The id of @lay's content among the layouts this state has seen, given
 * one if new; -1 when LAY_IDS_MAX have been seen, or on ENOMEM. */
static int lay_intern(struct state_ext *x, const struct agg_plan *p,
		      const struct ingest_layout *lay)
{
	if (!x->lay_index &&
	    !(x->lay_index = calloc(LAY_INDEX, sizeof *x->lay_index)))
		return -1;
	uint64_t h = XXH3_64bits(lay->hw, lay->n * sizeof lay->hw[0]);
	for (uint32_t i = (uint32_t)h;; i++) {
		uint16_t *slot = &x->lay_index[i % LAY_INDEX];
		if (*slot) {
			const struct lay_ent *e = &x->lay_ids[*slot - 1];
			if (e->n == lay->n &&
			    !memcmp(e->hw, lay->hw, lay->n * sizeof lay->hw[0]))
				return *slot - 1;
			continue;
		}
		/* Not seen: a new id (the index is never more than half
		 * full, so the probe ends). */
		uint32_t id = x->nlay_ids;
		if (id == LAY_IDS_MAX)
			return -1;
		if (id == x->cap_lay_ids) {
			uint32_t cap = x->cap_lay_ids ? 2 * x->cap_lay_ids : 8;
			struct lay_ent *n = realloc(x->lay_ids, cap * sizeof *n);
			if (!n)
				return -1;
			x->lay_ids = n;
			x->cap_lay_ids = cap;
		}
		struct lay_ent *e = &x->lay_ids[id];
		memset(e, 0, sizeof *e);
		e->n = lay->n;
		memcpy(e->hw, lay->hw, sizeof lay->hw);
		lay_ent_init(e, p, lay);
		x->nlay_ids++;
		*slot = (uint16_t)(id + 1);
		return (int)id;
	}
}

/*
 * The id of layout @lay as this state keys and serves it (an index of
 * lay_ids); -1 when it cannot be given one. A ring's slot is named by its
 * serial: the first record of a serial (and one whose cache entry another
 * serial took) finds its id by content, a hash and a compare.
 */
static inline int lay_id(struct state_ext *x, const struct agg_plan *p,
			 const struct ingest_layout *lay)
{
	struct lay_seen *c = &x->lay_cache[lay->serial % LAY_CACHE];
	if (c->serial != lay->serial) {
		int id = lay_intern(x, p, lay);
		if (id < 0)
			return -1;
		c->serial = lay->serial;
		c->id = (uint32_t)id;
	}
	return (int)c->id;
}

/*
 * Key layout record @rec into @key (the 3 bytes before its compact key
 * included) and hash it into *@a; false when it cannot be keyed so (no
 * memo, no layout id, or a record the key walk rejects: the decoder says
 * why). Inlined in both callers: it is most of what they do.
 */
static inline __attribute__((always_inline)) bool
key_layout(struct state_ext *x, const struct agg_plan *p, const uint8_t *rec,
	   uint32_t len, const struct ingest_layout *lay, uint8_t *key,
	   struct ahead *a)
{
	int id;
	uint32_t klen;
	if (!lay || !p->memo_ok || x->memo_aside || len > MIXD_RECORD_MAX ||
	    (id = lay_id(x, p, lay)) < 0 ||
	    !(klen = ingest_layout_key(lay, &x->lay_ids[id].lk, rec, len,
				       key + 3)))
		return false;
	uint16_t id16 = (uint16_t)id;
	key[0] = 2;
	memcpy(key + 1, &id16, 2);
	klen += 3;
	a->rec = rec;
	a->lay = lay;
	a->len = len;
	a->klen = klen;
	a->le = (uint32_t)id;
	a->mh = 0; /* no hash: not looked up (MEMO_KEY_MAX) */
	if (klen <= MEMO_KEY_MAX) {
		memset(key + klen, 0, 16);
		a->mh = memo_hash(key, klen);
	}
	return true;
}

uint64_t state_ahead_used(const struct shard_state *s)
{
	return ((const struct state_ext *)s)->ahead_used;
}

bool state_wants_ahead(const struct shard_state *s)
{
	/* A memo the caches hold is left to them. */
	const struct state_ext *x = (const struct state_ext *)s;
	return s->plan->memo_ok && memo_capacity(&x->memo) >= MEMO_PREFETCH_MIN;
}

/* Start loading the rows the memo entry for hash @h names, if its bucket
 * and entry have arrived (memo_prefetch_entry() a step ago): each row's
 * header and cells, where a replay writes, up to ROW_PREFETCH_LINES. */
#define ROW_PREFETCH_LINES 8
static void prefetch_rows(const struct shard_state *s,
			  const struct state_ext *x, uint64_t h)
{
	const struct memo *m = &x->memo;
	uint64_t b = memo_bucket(m, h, 0);
	for (unsigned w = 0; w < MEMO_WAYS; w++) {
		if (m->tags[b + w].hash != h)
			continue;
		struct memo_ent *e = memo_ent_at(m, b + w);
		if (e->gen != m->gen)
			return;
		for (unsigned d = 0; d < m->nd; d++) {
			const struct row *r = memo_rows(e)[d];
			if (!r)
				continue;
			uintptr_t l = (uintptr_t)r & ~(uintptr_t)63;
			uintptr_t end = (uintptr_t)&r->cells[s->series[d]->ncells];
			for (unsigned k = 0; l < end && k < ROW_PREFETCH_LINES;
			     l += 64, k++)
				__builtin_prefetch((const void *)l, 1);
		}
		return;
	}
}

/*
 * A record's memo lookup is misses in a row when the memo is far larger
 * than the caches (100,000 label sets): its bucket's tags, then its entry
 * and key, then the rows it names. Announced records take them a step
 * per announcement, so each step has a record's processing to arrive:
 * the record announced now is keyed, hashed and its bucket fetched; the
 * one announced before it, whose bucket has arrived, has its entry and
 * key fetched; the one before that, whose entry has arrived, its rows,
 * and it is processed next.
 */
void state_ahead(struct shard_state *s, const uint8_t *rec, uint32_t len,
		 const struct ingest_layout *lay)
{
	struct state_ext *x = (struct state_ext *)s;
	if (x->said < x->turn)
		x->said = x->turn;
	if (x->said - x->turn > INGEST_AHEAD)
		return; /* announced too far ahead: ignored */
	uint64_t j = x->said++;
	struct ahead *a = &x->ahead[j % STATE_SLOTS];
	const struct ahead *w = &x->ahead[(j - 1) % STATE_SLOTS];
	const struct ahead *v = &x->ahead[(j - 2) % STATE_SLOTS];
	if (j > x->turn + 1 && v->seq == j - 2 && v->rec &&
	    v->klen <= MEMO_KEY_MAX)
		prefetch_rows(s, x, v->mh);
	if (j > x->turn && w->seq == j - 1 && w->rec &&
	    w->klen <= MEMO_KEY_MAX)
		memo_prefetch_entry(&x->memo, w->mh);
	a->seq = j;
	a->rec = NULL;
	if (key_layout(x, s->plan, rec, len, lay, x->keys[j % STATE_SLOTS],
		       a) &&
	    a->klen <= MEMO_KEY_MAX)
		memo_prefetch(&x->memo, a->mh);
}

enum ingest_reject state_record(struct shard_state *s, struct attr_table *t,
				const uint8_t *rec, uint32_t len,
				const struct ingest_layout *lay,
				int64_t now_ns, uint64_t series_limit,
				struct mar_reader *mar, struct agg_epoch *e,
				struct epoch_retired **rl)
{
	struct state_ext *x = (struct state_ext *)s;
	const struct agg_plan *p = s->plan;
	struct memo_ent *me = NULL;
	bool looked = false;
	uint64_t mh = 0;
	uint32_t mlen = 0;
	enum ingest_reject rc;

	/* This record's turn: its key's buffer, and its announcement if it
	 * had one (the one announced for its place, at its address). */
	uint64_t j = x->turn++;
	struct ahead own, *a = &own;
	x->mkey = x->keys[j % STATE_SLOTS];
	bool keyed = false;
	if (x->said > j) {
		struct ahead *an = &x->ahead[j % STATE_SLOTS];
		keyed = an->seq == j && an->rec == rec && an->len == len &&
			an->lay == lay && lay && !x->memo_aside;
		x->ahead_used += keyed;
		an->rec = NULL;
		a = an;
	}
	attr_table_clear(t);
	if (!keyed && lay)
		keyed = key_layout(x, p, rec, len, lay, x->mkey, a);
	if (keyed) {
		const struct lay_ent *le = &x->lay_ids[a->le];
		mh = a->mh;
		me = memo_look(x, a->klen, true, mar, &looked, &mh, &mlen);
		if (me && le->direct && me->snap_gen == x->memo_snap &&
		    !me->overflow_gen) {
			/* The key walk checked the record: no decoding. */
			memo_tally(x, true);
			replay_direct(s, x, me, le, rec, now_ns);
			return INGEST_REJ_NONE;
		}
		rc = ingest_decode_layout(lay, rec, len, t, NULL, NULL);
	} else if (p->memo_ok && !x->memo_aside && len <= MIXD_RECORD_MAX) {
		/* The decoder copies the memo key's bytes on its way through
		 * the record, for a few instructions an attribute. */
		struct ingest_key k = {.buf = x->mkey + 1};
		x->mkey[0] = 1;
		rc = lay ? ingest_decode_layout(lay, rec, len, t, &p->memo_keys, &k)
			 : ingest_decode_keyed(rec, len, p->vocab, t,
					       &p->memo_keys, &k);
		if (rc == INGEST_REJ_NONE)
			me = memo_look(x, 1 + k.len, false, mar, &looked, &mh,
				       &mlen);
	} else {
		rc = lay ? ingest_decode_layout(lay, rec, len, t, NULL, NULL)
			 : ingest_decode(rec, len, p->vocab, t);
		if (rc == INGEST_REJ_NONE && p->memo_ok)
			me = memo_look(x, 0, false, mar, &looked, &mh, &mlen);
	}
	if (rc == INGEST_REJ_NONE)
		process(s, t, me, looked, mh, mlen, now_ns, series_limit, mar,
			e, rl);
	return rc;
}

/* The rows one expiry removed and the table that held them, retired as
 * one. */
struct dead_rows {
	struct table_array *old;
	uint64_t n;
	struct row *r[];
};

static void free_dead_rows(void *p)
{
	struct dead_rows *dr = p;
	for (uint64_t i = 0; i < dr->n; i++)
		free(dr->r[i]);
	free(dr->old);
	free(dr);
}

/*
 * The families of set @d's rows that share a row with others but have
 * been idle past the expiry (@ttl) in every shard, while a sibling goes on
 * (a row idle as a whole is state_expire()'s): each is emptied and left
 * out of the row, as if never updated, and counts expired when no other
 * shard's row has it. Mixer kept each metric's series apart; here they
 * share a row, so each has its own time (tcell).
 */
static void expire_families(struct shard_state *s, size_t d, int64_t now_ns,
			    int64_t ttl, struct agg_epoch *e)
{
	const struct agg_plan *p = s->plan;
	const struct plan_dimset *ds = &p->dimsets[d];
	struct series *se = s->series[d];
	const struct table_array *a = se->arr;
	uint64_t dead[64] = {0};
	int slot = s->peers ? epoch_enter(e) : -1;
	for (uint64_t i = 0; i <= a->mask; i++) {
		struct row *r = a->slot[i];
		if (!r || now_ns - r->last_ns > ttl)
			continue;
		uint64_t stale = 0;
		for (uint64_t b = r->touched; b; b &= b - 1) {
			unsigned k = (unsigned)__builtin_ctzll(b);
			if (now_ns - (int64_t)r->cells[ds->tcell + k] > ttl)
				stale |= 1ull << k;
		}
		if (!stale)
			continue;
		uint64_t others, fresh;
		elsewhere_ns(s, d, r->hash, row_key(r, se->ncells), r->key_len,
			     &others, now_ns - ttl, &fresh);
		if (!(stale &= ~fresh))
			continue;
		row_write_begin(r);
		for (uint64_t b = stale; b; b &= b - 1) {
			unsigned k = (unsigned)__builtin_ctzll(b);
			const struct plan_family *pf = &p->fams[ds->fams[k]];
			for (unsigned c = 0; c < plan_family_cells(pf); c++)
				__atomic_store_n(&r->cells[pf->cell + c], 0,
						 __ATOMIC_RELEASE);
			__atomic_store_n(&r->cells[ds->tcell + k], 0,
					 __ATOMIC_RELEASE);
			dead[k] += !(others >> k & 1);
		}
		__atomic_store_n(&r->touched, r->touched & ~stale,
				 __ATOMIC_RELEASE);
		row_write_end(r);
	}
	if (slot >= 0)
		epoch_exit(e, slot);
	for (unsigned k = 0; k < ds->nfam; k++)
		if (dead[k])
			__atomic_store_n(&se->expired[k], se->expired[k] + dead[k],
					 __ATOMIC_RELAXED);
}

/*
 * A row of @s idle for longer than the expiry is removed when the label
 * set is idle in every shard (elsewhere_ns()). Rows of a label set
 * another shard still updates stay: the exported sum must not go down
 * while the series lives (and a scrape leaves out a label set idle past
 * the expiry in every shard, whichever of its rows are still there:
 * view.c). The shards take turns (the aggregator's expiry_lock; false:
 * another shard's pass is under way, try again later), so the rows another
 * shard holds are what they are: a family counts expired at the removal of
 * the last row that has it.
 */
bool state_expire(struct shard_state *s, int64_t now_ns, struct agg_epoch *e,
		  struct epoch_retired **rl)
{
	struct agg_plan *p = s->plan;
	pthread_mutex_t *turn = s->peers ? &s->peers[s->self].agg->expiry_lock
					 : NULL;
	if (!p->expiry_ns)
		return true;
	if (turn && pthread_mutex_trylock(turn))
		return false;
	for (size_t d = 0; d < p->ndimsets; d++) {
		const int64_t ttl = p->dimsets[d].expiry_ns;
		if (!ttl)
			continue; /* its handler has no expiration policy */
		if (p->dimsets[d].tcell)
			expire_families(s, d, now_ns, ttl, e);
		struct series *se = s->series[d];
		struct table_array *old = se->arr;
		uint64_t idle = 0, key_bytes = 0, fam_dead[64] = {0};
		for (uint64_t i = 0; i <= old->mask; i++) {
			struct row *r = old->slot[i];
			idle += r && now_ns - r->last_ns > ttl;
		}
		if (!idle)
			continue;
		struct dead_rows *dr = malloc(sizeof *dr + idle * sizeof dr->r[0]);
		if (!dr)
			continue; /* try again at the next check */
		dr->n = 0;
		int slot = s->peers ? epoch_enter(e) : -1;
		for (uint64_t i = 0; i <= old->mask; i++) {
			struct row *r = old->slot[i];
			if (!r || now_ns - r->last_ns <= ttl)
				continue;
			uint64_t others;
			int64_t t = elsewhere_ns(s, d, r->hash,
						 row_key(r, se->ncells),
						 r->key_len, &others, 0, NULL);
			if (t != NOWHERE && now_ns - t <= ttl)
				continue; /* live in another shard */
			dr->r[dr->n++] = r;
			key_bytes += r->key_len;
			uint64_t last = r->touched & ~others;
			for (unsigned k = 0; k < 64; k++)
				fam_dead[k] += (last >> k) & 1;
		}
		if (slot >= 0)
			epoch_exit(e, slot);
		struct table_array *a = dr->n ? array_new(old->mask + 1) : NULL;
		if (!a) {
			free(dr);
			continue; /* none dead; or no memory: the next check */
		}
		dr->old = old;
		/* dr->r is in table order: the rows to keep are the others. */
		for (uint64_t i = 0, j = 0; i <= old->mask; i++) {
			struct row *r = old->slot[i];
			if (!r)
				continue;
			if (j < dr->n && dr->r[j] == r)
				j++;
			else
				put(a, r);
		}
		/* Unlinked first, then retired (epoch.c): a scrape that
		 * enters after the ticket must not reach the old table. */
		__atomic_store_n(&se->arr, a, __ATOMIC_RELEASE);
		epoch_retire(e, rl, free_dead_rows, dr);
		se->n -= dr->n;
		se->key_bytes -= key_bytes;
		/* Remembered records may point at the rows just retired. */
		struct state_ext *x = (struct state_ext *)s;
		if (p->memo_ok)
			memo_invalidate(&x->memo);
		for (unsigned k = 0; k < 64; k++)
			if (fam_dead[k])
				__atomic_store_n(&se->expired[k],
						 se->expired[k] + fam_dead[k],
						 __ATOMIC_RELAXED);
	}
	if (turn)
		pthread_mutex_unlock(turn);
	return true;
}
