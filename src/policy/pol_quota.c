/*
 * pol_quota.c -- memquota's state: per-key rolling windows and counters
 * in a chained hash table, and the two generations of remembered
 * deduplication ids, each an open-addressed table over an arena, behind
 * one mutex.
 *
 * One mutex per handler, as Mixer's one lock: a grant is a handful of
 * loads and stores, the answer must be exact (concurrent callers never
 * share out more than max_amount), and what a caller does outside the
 * lock -- choosing the limit, rendering the key, hashing it -- is most of
 * the work.
 *
 * Time comes from the caller (now_ns): nothing here reads a clock, so a
 * test can step time to the nanosecond. Mixer's ticker that turned the
 * dedup generations every min_dedup_ns becomes a check on each call:
 * the turns that are due are made before the call is answered.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

/* Header-only xxHash: the policy module does not link libxxhash itself. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "policy/pol_quota.h"

/* Mixer's ticksPerSecond = 10: windows move in 100 ms steps. */
#define TICK_NS INT64_C(100000000)
#define TICKS_PER_SECOND 10
#define SECOND_NS INT64_C(1000000000)
/* A key usually fits here; longer ones up to POL_QUOTA_MAX_KEY go to the
 * heap. */
#define KEY_STACK 512

/* Entries of the key table start with this; the key bytes live in the same
 * allocation, so freeing an entry is one free(). */
struct hent {
	struct hent *next;
	uint64_t hash;
	const uint8_t *key;
	uint32_t len;
};

struct htab {
	struct hent **b;
	size_t mask; /* buckets - 1 */
	size_t n;
};

/* The state of one key. */
struct qkey {
	struct hent h;
	int64_t max;	  /* the limit when the key was first used */
	int64_t avail;	  /* window: units available; counter: units in use */
	int64_t cur_tick; /* window: the tick slot `cur` stands for */
	uint32_t n_slots; /* window: ticks in it; 0: a counter */
	uint32_t cur;
	int64_t slots[]; /* then the key's bytes */
};

/* A remembered answer, in its generation's arena. */
struct qdedup {
	int64_t amount;
	int64_t exp_ns; /* INT64_MIN: the answer had no validity */
	uint32_t len;
	uint8_t key[];
};

/*
 * One generation of remembered ids. Nearly every id is asked once (a
 * proxy's retry is the exception), so the common lookup is a miss, in a
 * table of up to max_dedup ids: the slots carry each id's hash, and a
 * miss reads one or two slot lines and no entry. Entries are bump
 * allocated from chunks that a turn hands to the handler's spare list,
 * from which either generation takes before it allocates: a remembered id
 * costs no malloc() and a turn no free() per id, and the chunks held, in
 * use or spare, are never more than the most both generations held at
 * once (at most max_dedup ids) and two partly used.
 */
struct dslot {
	uint64_t hash;
	struct qdedup *e; /* NULL: empty */
};

struct dchunk {
	struct dchunk *next;
	size_t used;
	uint8_t mem[];
};

struct dtab {
	struct dslot *s;
	size_t mask; /* slots - 1 */
	size_t n;
	struct dchunk *chunks; /* in use, newest first */
};

struct pol_memquota {
	pthread_mutex_t mu;
	struct pol_quota_def *defs; /* with everything they point to, in one
				       block */
	size_t n_defs;
	int64_t min_dedup_ns;
	size_t max_keys, max_dedup;
	uint64_t seed;

	/* under mu */
	struct htab keys;
	struct dtab dedup[2]; /* [recent], [!recent] */
	struct dchunk *spare; /* chunks the dedup tables gave back */
	int recent;
	bool dedup_started;
	int64_t dedup_turn_ns; /* when the next turn is due */
	int64_t swept_tick;    /* the tick of the last full-table sweep */

	/* also read without mu: atomics */
	size_t n_keys;
	uint64_t dedup_lost;
	uint64_t full; /* requests refused a new key: the table was full */
};

/* ---------------------------------------------------------- hash tables */

static int ht_init(struct htab *t)
{
	t->b = calloc(16, sizeof *t->b);
	t->mask = 15;
	t->n = 0;
	return t->b ? 0 : -1;
}

static struct hent *ht_find(const struct htab *t, uint64_t h,
			    const uint8_t *key, uint32_t len)
{
	for (struct hent *e = t->b[h & t->mask]; e; e = e->next)
		if (e->hash == h && e->len == len && !memcmp(e->key, key, len))
			return e;
	return NULL;
}

/* Add @e. The table doubles at one entry a bucket; when that allocation
 * fails, chains grow instead: slower, still right. */
static void ht_add(struct htab *t, struct hent *e)
{
	if (t->n > t->mask) {
		size_t nb = (t->mask + 1) * 2;
		struct hent **b = calloc(nb, sizeof *b);
		if (b) {
			for (size_t i = 0; i <= t->mask; i++)
				for (struct hent *x = t->b[i], *nx; x; x = nx) {
					nx = x->next;
					x->next = b[x->hash & (nb - 1)];
					b[x->hash & (nb - 1)] = x;
				}
			free(t->b);
			t->b = b;
			t->mask = nb - 1;
		}
	}
	struct hent **head = &t->b[e->hash & t->mask];
	e->next = *head;
	*head = e;
	t->n++;
}

static void ht_del(struct htab *t, struct hent *e)
{
	struct hent **pp = &t->b[e->hash & t->mask];
	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	t->n--;
	free(e);
}

static void ht_clear(struct htab *t)
{
	for (size_t i = 0; i <= t->mask; i++) {
		for (struct hent *e = t->b[i], *nx; e; e = nx) {
			nx = e->next;
			free(e);
		}
		t->b[i] = NULL;
	}
	t->n = 0;
}

/* ------------------------------------------- dimensions as Mixer saw them */

/* Go's strconv.ParseInt(s, 10, 64). */
static bool go_parse_int(const char *s, int64_t *out)
{
	bool neg = *s == '-';
	uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX;

	if (*s == '+' || *s == '-')
		s++;
	if (!*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		unsigned d = (unsigned)(*s - '0');
		if (v > (lim - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

/* Go's strconv.ParseFloat(s, 64) for decimal text and the special
 * values: strtod() once the text is known to be Go's (strtod would also
 * take leading spaces, hex without an exponent, "nan(...)"). */
static bool go_parse_float(const char *s, double *out)
{
	const char *p = s + (*s == '+' || *s == '-');

	if (!strcasecmp(p, "inf") || !strcasecmp(p, "infinity") ||
	    !strcasecmp(p, "nan")) {
		*out = strtod(s, NULL);
		return true;
	}
	size_t mant = 0;
	for (; *p >= '0' && *p <= '9'; p++)
		mant++;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			mant++;
	if (!mant)
		return false;
	if (*p == 'e' || *p == 'E') {
		p += 1 + (p[1] == '+' || p[1] == '-');
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p)
		return false;
	errno = 0;
	*out = strtod(s, NULL);
	/* Go refuses overflow (ErrRange with ±Inf) but rounds underflow. */
	return !(errno == ERANGE && isinf(*out));
}

/* Go's strconv.ParseBool. */
static bool go_parse_bool(const char *s, bool *out)
{
	static const char *const words[] = {
		"1",	 "t",	  "T",
		"TRUE",	 "true",  "True", /* then the false ones */
		"0",	 "f",	  "F",
		"FALSE", "false", "False",
	};

	for (size_t i = 0; i < 12; i++) {
		if (!strcmp(s, words[i])) {
			*out = i < 6;
			return true;
		}
	}
	return false;
}

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* An address of 4 or 16 bytes as 16, IPv4 as IPv4-mapped: Go's
 * net.IP.Equal holds the two forms equal. */
static bool ip16(const uint8_t *ip, size_t len, uint8_t out[16])
{
	if (len == 16) {
		memcpy(out, ip, 16);
		return true;
	}
	if (len != 4)
		return false;
	memcpy(out, v4_mapped, 12);
	memcpy(out + 12, ip, 4);
	return true;
}

/* Part @i (0-based) of @s split on '&', as (k, v) when it splits on '='
 * into exactly two, as Go's strEqualsObject read "a=b&c=d". False when
 * there is no part @i; *@ok false when the part is not a pair. */
static bool map_part(const char *s, size_t i, const char **k, size_t *kl,
		     const char **v, size_t *vl, bool *ok)
{
	const char *p = s;

	for (; i; i--) {
		if (!(p = strchr(p, '&')))
			return false;
		p++;
	}
	const char *end = strchr(p, '&');
	if (!end)
		end = p + strlen(p);
	const char *eq = memchr(p, '=', (size_t)(end - p));
	*ok = eq && !memchr(eq + 1, '=', (size_t)(end - eq - 1));
	if (*ok) {
		*k = p;
		*kl = (size_t)(eq - p);
		*v = eq + 1;
		*vl = (size_t)(end - eq - 1);
	}
	return true;
}

/* The value the last pair of @s with key @k gives it (Go filled a map in
 * order); false when none does. */
static bool map_lookup(const char *s, const char *k, size_t kl, const char **v,
		       size_t *vl)
{
	const char *pk, *pv;
	size_t pkl, pvl;
	bool ok, found = false;

	for (size_t i = 0; map_part(s, i, &pk, &pkl, &pv, &pvl, &ok); i++)
		if (ok && pkl == kl && !memcmp(pk, k, kl)) {
			*v = pv;
			*vl = pvl;
			found = true;
		}
	return found;
}

/* A STRING_MAP value against "a=b&c=d": as many distinct keys, and each
 * of the map's values equal to the text's for its key ("" when it has
 * none: Go read a missing key as ""). */
static bool map_equals(const struct attr_value *m, const char *s)
{
	const char *pk, *pv, *tv;
	size_t pkl, pvl, tvl;
	bool ok;
	size_t distinct = 0;

	for (size_t i = 0; map_part(s, i, &pk, &pkl, &pv, &pvl, &ok); i++) {
		if (!ok)
			continue;
		const char *lv;
		size_t lvl;
		/* counted at its last occurrence: the pair that stays */
		const char *rest = pv + pvl;
		if (!*rest || !map_lookup(rest + 1, pk, pkl, &lv, &lvl))
			distinct++;
	}
	if (distinct != attr_map_count(m))
		return false;
	size_t off = 0;
	struct attr_value k, v;
	while (attr_map_next(m, &off, &k, &v)) {
		if (!map_lookup(s, k.s, k.len, &tv, &tvl)) {
			tv = "";
			tvl = 0;
		}
		if (tvl != v.len || memcmp(tv, v.s, tvl))
			return false;
	}
	return true;
}

/* BYTES against Go's fmt "%v" of a []byte: "[104 105]". */
static bool bytes_equal(const struct attr_value *v, const char *s)
{
	const uint8_t *b = (const uint8_t *)v->s;
	char num[8];

	if (*s++ != '[')
		return false;
	for (uint32_t i = 0; i < v->len; i++) {
		int n = snprintf(num, sizeof num, i ? " %u" : "%u", b[i]);
		if (strncmp(s, num, (size_t)n))
			return false;
		s += n;
	}
	return !strcmp(s, "]");
}

/* Go's adapter.StringEquals(value, text): the text parsed as the value's
 * type; text that does not parse as it equals only an absent value --
 * Go fell through to `len(str) == 0`. */
static bool dim_equals(const struct attr_value *v, const char *s)
{
	int64_t i;
	double d;
	bool b;
	uint8_t a[16], x[16];

	if (!v || v->type == ATTR_NONE)
		return !*s;
	switch ((enum attr_type)v->type) {
	case ATTR_STRING:
	case ATTR_EMAIL:
	case ATTR_URI:
	case ATTR_DNS_NAME:
		return strlen(s) == v->len &&
		       (!v->len || !memcmp(s, v->s, v->len));
	case ATTR_INT64:
		if (go_parse_int(s, &i))
			return i == v->i;
		break;
	case ATTR_DOUBLE:
		if (go_parse_float(s, &d))
			return d == v->d;
		break;
	case ATTR_BOOL:
		if (go_parse_bool(s, &b))
			return b == v->b;
		break;
	case ATTR_TIMESTAMP:
		if (!attr_parse_timestamp(s, strlen(s), &i))
			return i == v->i;
		break;
	case ATTR_DURATION:
		if (!attr_parse_duration(s, strlen(s), &i))
			return i == v->i;
		break;
	case ATTR_IP:
		if (inet_pton(AF_INET, s, a + 12) == 1)
			memcpy(a, v4_mapped, 12);
		else if (inet_pton(AF_INET6, s, a) != 1)
			break;
		return ip16(v->ip, v->len, x) && !memcmp(a, x, 16);
	case ATTR_STRING_MAP:
		return map_equals(v, s);
	case ATTR_BYTES:
		return bytes_equal(v, s);
	case ATTR_NONE:
	case ATTR_TYPE_COUNT:
		break;
	}
	return !*s;
}

/* The first override of @d all of whose dimensions the request's equal,
 * else @d's own limit. */
static const struct pol_quota_limit *
select_limit(const struct pol_quota_def *d, const struct pol_quota_dim *dims,
	     size_t n)
{
	for (size_t o = 0; o < d->n_overrides; o++) {
		const struct pol_quota_override *ov = &d->overrides[o];
		bool match = true;
		for (size_t k = 0; k < ov->n_dims && match; k++) {
			const struct attr_value *v = NULL;
			for (size_t j = 0; j < n; j++)
				if (!strcmp(dims[j].name, ov->dims[k].name)) {
					v = dims[j].value;
					break;
				}
			match = dim_equals(v, ov->dims[k].value);
		}
		if (match)
			return &ov->limit;
	}
	return &d->limit;
}

/* ------------------------------------------------------------------ keys */

/*
 * The key: the quota (its index in the handler's: the first of its name,
 * find_def()'s), then each dimension in name order as (name, type,
 * value). Lengths prefix every variable part, so no split of one value
 * into two ("a=b;c") can read as another key, and the type is part of
 * it, so the string "10" and the integer 16 are not one key (Mixer's text
 * rendering made them one). Values Mixer's key could not tell apart are
 * one here too: the string types, the two forms of an IPv4 address, a
 * map's entries in any order.
 */
struct kbuf {
	uint8_t *p;
	size_t cap, len;
};

static void put(struct kbuf *k, const void *src, size_t n)
{
	if (n && k->len + n <= k->cap)
		memcpy(k->p + k->len, src, n);
	k->len += n;
}

static void put_u32(struct kbuf *k, size_t v)
{
	uint32_t u = (uint32_t)v;
	put(k, &u, 4);
}

static void put_str(struct kbuf *k, const void *s, size_t n)
{
	put_u32(k, n);
	put(k, s, n);
}

static int pair_cmp(const struct attr_value *k1, const struct attr_value *v1,
		    const struct attr_value *k2, const struct attr_value *v2)
{
	size_t n = k1->len < k2->len ? k1->len : k2->len;
	int c = memcmp(k1->s, k2->s, n);
	if (c || k1->len != k2->len)
		return c ? c : k1->len < k2->len ? -1 : 1;
	n = v1->len < v2->len ? v1->len : v2->len;
	c = memcmp(v1->s, v2->s, n);
	return c ? c : (v1->len > v2->len) - (v1->len < v2->len);
}

/* A map's entries in (key, value) order: each pass picks the least
 * entry above the last one written. Quadratic, and bounded: a map whose
 * encoding exceeds POL_QUOTA_MAX_KEY never gets here. */
static void put_map(struct kbuf *kb, const struct attr_value *m)
{
	struct attr_value lk = {0}, lv = {0}, k, v, bk, bv;
	bool first = true;
	uint32_t n = attr_map_count(m);

	put_u32(kb, n);
	for (uint32_t i = 0; i < n; i++) {
		bool have = false;
		size_t off = 0;
		while (attr_map_next(m, &off, &k, &v)) {
			if (!first && pair_cmp(&k, &v, &lk, &lv) <= 0)
				continue;
			if (!have || pair_cmp(&k, &v, &bk, &bv) < 0) {
				bk = k;
				bv = v;
				have = true;
			}
		}
		if (!have)
			break; /* the rest repeat entries already written */
		put_str(kb, bk.s, bk.len);
		put_str(kb, bv.s, bv.len);
		lk = bk;
		lv = bv;
		first = false;
	}
}

static void put_value(struct kbuf *kb, const struct attr_value *v)
{
	uint8_t tag = v ? v->type : ATTR_NONE;
	uint8_t a[16];

	if (attr_type_is_string((enum attr_type)tag))
		tag = ATTR_STRING;
	put(kb, &tag, 1);
	switch ((enum attr_type)tag) {
	case ATTR_STRING:
	case ATTR_BYTES:
		put_str(kb, v->s, v->len);
		break;
	case ATTR_INT64:
	case ATTR_TIMESTAMP:
	case ATTR_DURATION:
		put(kb, &v->i, 8);
		break;
	case ATTR_DOUBLE: {
		double d = isnan(v->d) ? NAN : v->d;
		put(kb, &d, 8);
		break;
	}
	case ATTR_BOOL: {
		uint8_t b = v->b;
		put(kb, &b, 1);
		break;
	}
	case ATTR_IP:
		if (ip16(v->ip, v->len, a))
			put(kb, a, 16);
		else
			put_str(kb, v->ip, v->len < 16 ? v->len : 16);
		break;
	case ATTR_STRING_MAP:
		if (v->len > POL_QUOTA_MAX_KEY)
			kb->len += v->len; /* too long either way */
		else
			put_map(kb, v);
		break;
	default:
		break;
	}
}

/* Render the key of quota @q and @dims (at most POL_QUOTA_DIMS_MAX) into
 * @kb (its length counted past the capacity: the caller retries with
 * room). Dimensions in name order: an insertion sort of their indexes,
 * as a request has a few, and an instance's come in the same order every
 * time (sorted already, it is n - 1 comparisons). */
static void make_key(struct kbuf *kb, uint32_t q,
		     const struct pol_quota_dim *dims, size_t n)
{
	uint8_t ord[POL_QUOTA_DIMS_MAX];

	for (size_t i = 0; i < n; i++) {
		size_t j = i;
		for (; j && strcmp(dims[ord[j - 1]].name, dims[i].name) > 0;
		     j--)
			ord[j] = ord[j - 1];
		ord[j] = (uint8_t)i;
	}
	put_u32(kb, q);
	for (size_t i = 0; i < n; i++) {
		const struct pol_quota_dim *d = &dims[ord[i]];
		put_str(kb, d->name, strlen(d->name));
		put_value(kb, d->value);
	}
}

/* ------------------------------------------------------------- windows */

/* Move @k to @tick, returning to the pool what was allocated a window
 * ago (Mixer's rollingWindow.roll). A tick before the window's is taken
 * as the window's: callers' clocks are read before the lock, so they
 * arrive a little out of order. */
static void roll(struct qkey *k, int64_t tick)
{
	if (tick <= k->cur_tick)
		return;
	uint64_t behind = (uint64_t)(tick - k->cur_tick);
	if (behind > k->n_slots)
		behind = k->n_slots;
	for (uint64_t i = 0; i < behind; i++) {
		uint32_t s = (uint32_t)((k->cur + 1 + i) % k->n_slots);
		k->avail += k->slots[s];
		k->slots[s] = 0;
	}
	k->cur = (uint32_t)((k->cur + behind) % k->n_slots);
	k->cur_tick = tick;
}

/* Give back up to @amount, newest ticks first (Mixer's release). */
static int64_t release(struct qkey *k, int64_t amount)
{
	int64_t total = 0;
	uint32_t s = k->cur;

	for (uint32_t i = 0; i < k->n_slots && amount; i++) {
		int64_t take = k->slots[s] < amount ? k->slots[s] : amount;
		k->slots[s] -= take;
		total += take;
		amount -= take;
		s = s ? s - 1 : k->n_slots - 1;
	}
	k->avail += total;
	return total;
}

/* Drop every window that has all its units back: such a key holds
 * nothing a new one would not. Counters are dropped as they reach 0. */
static void sweep(struct pol_memquota *m, int64_t tick)
{
	struct htab *t = &m->keys;

	for (size_t i = 0; i <= t->mask; i++) {
		for (struct hent **pp = &t->b[i]; *pp;) {
			struct qkey *k = (struct qkey *)*pp;
			if (k->n_slots)
				roll(k, tick);
			if (k->n_slots && k->avail == k->max) {
				*pp = k->h.next;
				t->n--;
				free(k);
			} else {
				pp = &(*pp)->next;
			}
		}
	}
}

/* A new key for @lim, or -ENOSPC when the table is full even after a
 * sweep (one a tick at most: windows come back only as ticks pass, so a
 * second sweep in the same tick would find nothing, and a flood of new
 * keys must not cost a walk of the table each). */
static int new_key(struct pol_memquota *m, const struct pol_quota_limit *lim,
		   const struct kbuf *kb, uint64_t h, int64_t tick,
		   struct qkey **out)
{
	uint64_t n_slots = 0;

	if (m->keys.n >= m->max_keys && m->swept_tick != tick) {
		m->swept_tick = tick;
		sweep(m, tick);
	}
	if (m->keys.n >= m->max_keys) {
		__atomic_fetch_add(&m->full, 1, __ATOMIC_RELAXED);
		return -ENOSPC;
	}
	if (lim->valid_duration_ns) {
		int64_t vd = lim->valid_duration_ns;
		uint64_t secs =
			(uint64_t)(vd / SECOND_NS + (vd % SECOND_NS != 0));
		n_slots = secs * TICKS_PER_SECOND;
		/* the slot index is 32 bits; a window of 1.7 years of
		 * ticks (4 GiB) would not be allocated anyway */
		if (n_slots > UINT32_MAX / sizeof(int64_t))
			return -ENOMEM;
	}
	struct qkey *k =
		calloc(1, sizeof *k + n_slots * sizeof(int64_t) + kb->len);
	if (!k)
		return -ENOMEM;
	uint8_t *key = (uint8_t *)(k->slots + n_slots);
	memcpy(key, kb->p, kb->len);
	k->h = (struct hent){NULL, h, key, (uint32_t)kb->len};
	k->max = lim->max_amount;
	k->avail = n_slots ? lim->max_amount : 0;
	k->cur_tick = tick;
	k->n_slots = (uint32_t)n_slots;
	ht_add(&m->keys, &k->h);
	*out = k;
	return 0;
}

/*
 * Mixer's alloc: all or nothing, or with best_effort what is left. A
 * window's grant (even a best-effort 0) is valid for the limit's
 * valid_duration; a refusal and a counter's grant for 0. *@exp_ns: when
 * the grant stops being valid, INT64_MIN for never.
 */
static int do_alloc(struct pol_memquota *m, const struct pol_quota_limit *lim,
		    const struct kbuf *kb, uint64_t h,
		    const struct pol_quota_args *a, int64_t tick, int64_t now,
		    struct pol_quota_grant *out, int64_t *exp_ns)
{
	struct qkey *k =
		(struct qkey *)ht_find(&m->keys, h, kb->p, (uint32_t)kb->len);
	bool window = lim->valid_duration_ns > 0;
	int64_t left, grant;

	if (k && window)
		roll(k, tick);
	left = k ? (window ? k->avail : k->max - k->avail) : lim->max_amount;
	grant = a->amount <= left ? a->amount : a->best_effort ? left : 0;
	/* A key is made only to hold something: one that would hold nothing
	 * is what its absence means already. */
	if (grant && !k) {
		int rc = new_key(m, lim, kb, h, tick, &k);
		if (rc)
			return rc;
	}
	if (grant) {
		if (window) {
			k->slots[k->cur] += grant;
			k->avail -= grant;
		} else {
			k->avail += grant;
		}
	}
	*out = (struct pol_quota_grant){grant, 0};
	*exp_ns = INT64_MIN;
	if (window && (grant || a->best_effort)) {
		out->valid_duration_ns = lim->valid_duration_ns;
		*exp_ns = now > INT64_MAX - lim->valid_duration_ns
				  ? INT64_MAX
				  : now + lim->valid_duration_ns;
	}
	return 0;
}

/* Mixer's free: a counter gives back at most what it holds and goes at
 * 0; a window gives back from its newest ticks and goes when whole. */
static void do_free(struct pol_memquota *m, const struct kbuf *kb, uint64_t h,
		    int64_t amount, int64_t tick, struct pol_quota_grant *out)
{
	struct qkey *k =
		(struct qkey *)ht_find(&m->keys, h, kb->p, (uint32_t)kb->len);
	int64_t freed = 0;

	if (k && k->n_slots) {
		roll(k, tick);
		freed = release(k, amount);
		if (k->avail == k->max)
			ht_del(&m->keys, &k->h);
	} else if (k) {
		freed = amount < k->avail ? amount : k->avail;
		k->avail -= freed;
		if (!k->avail)
			ht_del(&m->keys, &k->h);
	}
	*out = (struct pol_quota_grant){freed, 0};
}

/* ---------------------------------------------------------------- dedup */

/* Arena chunks. An entry (an id of at most POL_QUOTA_MAX_DEDUP_ID bytes,
 * its length and the quota's index) always fits in one. */
#define DCHUNK_BYTES (64u << 10)
_Static_assert(sizeof(struct qdedup) + 8 + POL_QUOTA_MAX_DEDUP_ID + 7 <=
		       DCHUNK_BYTES,
	       "a remembered id fits in a chunk");

static int dt_init(struct dtab *t)
{
	*t = (struct dtab){.mask = 15};
	t->s = calloc(16, sizeof *t->s);
	return t->s ? 0 : -1;
}

/* The entry of @t for @key (hash @h), or NULL. */
static const struct qdedup *dt_find(const struct dtab *t, uint64_t h,
				    const uint8_t *key, uint32_t len)
{
	for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
		const struct dslot *x = &t->s[i];
		if (!x->e)
			return NULL;
		if (x->hash == h && x->e->len == len &&
		    !memcmp(x->e->key, key, len))
			return x->e;
	}
}

static void dt_put(struct dslot *s, size_t mask, uint64_t h, struct qdedup *e)
{
	size_t i = h & mask;
	while (s[i].e)
		i = (i + 1) & mask;
	s[i] = (struct dslot){h, e};
}

/* Room for an entry of @len key bytes in @t's arena, or NULL; @spare is
 * the handler's list of chunks to take first. */
static struct qdedup *dt_alloc(struct dtab *t, struct dchunk **spare,
			       uint32_t len)
{
	size_t need = (sizeof(struct qdedup) + len + 7) & ~(size_t)7;
	struct dchunk *c = t->chunks;
	if (!c || DCHUNK_BYTES - c->used < need) {
		if ((c = *spare))
			*spare = c->next;
		else if (!(c = malloc(sizeof *c + DCHUNK_BYTES)))
			return NULL;
		c->used = 0;
		c->next = t->chunks;
		t->chunks = c;
	}
	struct qdedup *e = (struct qdedup *)(void *)(c->mem + c->used);
	c->used += need;
	return e;
}

/* Add an entry for @key (hash @h) to @t, which holds no such key: the
 * slots stay at most three quarters full. False when memory ran out. */
static bool dt_add(struct dtab *t, struct dchunk **spare, uint64_t h,
		   const uint8_t *key, uint32_t len, int64_t amount,
		   int64_t exp_ns)
{
	if ((t->n + 1) * 4 > (t->mask + 1) * 3) {
		size_t nm = t->mask * 2 + 1;
		struct dslot *ns = calloc(nm + 1, sizeof *ns);
		if (!ns)
			return false;
		for (size_t i = 0; i <= t->mask; i++)
			if (t->s[i].e)
				dt_put(ns, nm, t->s[i].hash, t->s[i].e);
		free(t->s);
		t->s = ns;
		t->mask = nm;
	}
	struct qdedup *e = dt_alloc(t, spare, len);
	if (!e)
		return false;
	e->amount = amount;
	e->exp_ns = exp_ns;
	e->len = len;
	memcpy(e->key, key, len);
	dt_put(t->s, t->mask, h, e);
	t->n++;
	return true;
}

/* Forget every id of @t, its chunks to @spare. Its slots are kept for
 * the next generation, which is likely to grow as large, unless this one
 * used less than an eighth of them: then they shrink to its size (a turn
 * after a burst need not clear a burst's slots, nor keep them). */
static void dt_clear(struct dtab *t, struct dchunk **spare)
{
	size_t want = 16; /* the slots dt_add() grew to for this many */
	while (want * 3 < t->n * 4)
		want *= 2;
	struct dslot *ns;
	if (want * 8 <= t->mask + 1 && (ns = calloc(want, sizeof *ns))) {
		free(t->s);
		t->s = ns;
		t->mask = want - 1;
	} else if (t->n) {
		memset(t->s, 0, (t->mask + 1) * sizeof *t->s);
	}
	t->n = 0;
	for (struct dchunk *c = t->chunks, *nx; c; c = nx) {
		nx = c->next;
		c->next = *spare;
		*spare = c;
	}
	t->chunks = NULL;
}

static void dt_free(struct dtab *t)
{
	for (struct dchunk *c = t->chunks, *nx; c; c = nx) {
		nx = c->next;
		free(c);
	}
	free(t->s);
	*t = (struct dtab){0};
}

/* Make the generation turns due by @now: each turn forgets the old ids
 * and makes the recent ones old, so an id is remembered from one to two
 * periods. The first call starts the clock. */
static void dedup_turn(struct pol_memquota *m, int64_t now)
{
	int64_t p = m->min_dedup_ns;

	if (!m->dedup_started) {
		m->dedup_started = true;
		m->dedup_turn_ns = now > INT64_MAX - p ? INT64_MAX : now + p;
		return;
	}
	if (now < m->dedup_turn_ns)
		return;
	int64_t turns = (now - m->dedup_turn_ns) / p + 1;
	dt_clear(&m->dedup[!m->recent], &m->spare);
	if (turns > 1)
		dt_clear(&m->dedup[m->recent], &m->spare);
	m->recent = !m->recent; /* the emptied old is the new recent */
	m->dedup_turn_ns = turns > (INT64_MAX - m->dedup_turn_ns) / p
				   ? INT64_MAX
				   : m->dedup_turn_ns + turns * p;
}

static void dedup_remember(struct pol_memquota *m, const struct kbuf *dk,
			   uint64_t h, const struct pol_quota_grant *g,
			   int64_t exp_ns)
{
	if (m->dedup[0].n + m->dedup[1].n >= m->max_dedup ||
	    !dt_add(&m->dedup[m->recent], &m->spare, h, dk->p,
		    (uint32_t)dk->len, g->amount, exp_ns))
		__atomic_fetch_add(&m->dedup_lost, 1, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ API */

/* @src into the string area at *@s, which it advances. */
static const char *copy_str(char **s, const char *src)
{
	size_t n = strlen(src) + 1;
	char *dst = *s;

	memcpy(dst, src, n);
	*s += n;
	return dst;
}

struct pol_memquota *pol_memquota_create(const struct pol_quota_def *defs,
					 size_t n, int64_t min_dedup_ns,
					 size_t max_keys, size_t max_dedup)
{
	size_t n_ovr = 0, n_kv = 0, bytes = 0;

	if (min_dedup_ns <= 0)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const struct pol_quota_def *d = &defs[i];
		if (d->limit.max_amount < 0 || d->limit.valid_duration_ns < 0)
			return NULL;
		bytes += strlen(d->name) + 1;
		n_ovr += d->n_overrides;
		for (size_t o = 0; o < d->n_overrides; o++) {
			const struct pol_quota_override *ov = &d->overrides[o];
			if (ov->limit.max_amount < 0 ||
			    ov->limit.valid_duration_ns < 0)
				return NULL;
			n_kv += ov->n_dims;
			for (size_t k = 0; k < ov->n_dims; k++)
				bytes += strlen(ov->dims[k].name) +
					 strlen(ov->dims[k].value) + 2;
		}
	}
	struct pol_memquota *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	if (pthread_mutex_init(&m->mu, NULL)) {
		free(m);
		return NULL;
	}
	/* The copies in one block: the arrays (all 8-byte aligned), then
	 * the strings. */
	size_t sz = n * sizeof *m->defs +
		    n_ovr * sizeof(struct pol_quota_override) +
		    n_kv * sizeof(struct pol_quota_kv) + bytes;
	m->defs = malloc(sz ? sz : 1);
	if (!m->defs || ht_init(&m->keys) || dt_init(&m->dedup[0]) ||
	    dt_init(&m->dedup[1])) {
		pol_memquota_destroy(m);
		return NULL;
	}
	struct pol_quota_override *ovr =
		(struct pol_quota_override *)(m->defs + n);
	struct pol_quota_kv *kv = (struct pol_quota_kv *)(ovr + n_ovr);
	char *s = (char *)(kv + n_kv);
	for (size_t i = 0; i < n; i++) {
		const struct pol_quota_def *d = &defs[i];
		struct pol_quota_def *c = &m->defs[i];
		*c = *d;
		c->name = copy_str(&s, d->name);
		c->overrides = ovr;
		for (size_t o = 0; o < d->n_overrides; o++, ovr++) {
			*ovr = d->overrides[o];
			ovr->dims = kv;
			for (size_t k = 0; k < ovr->n_dims; k++, kv++) {
				const struct pol_quota_kv *src =
					&d->overrides[o].dims[k];
				kv->name = copy_str(&s, src->name);
				kv->value = copy_str(&s, src->value);
			}
		}
	}
	m->n_defs = n;
	m->min_dedup_ns = min_dedup_ns;
	m->max_keys = max_keys;
	m->max_dedup = max_dedup;
	m->swept_tick = INT64_MIN;
	/* A secret seed, so that dimension values chosen to collide (a
	 * client's x-forwarded-for) cannot make one chain of every key.
	 * Answers never depend on it. */
	if (getrandom(&m->seed, sizeof m->seed, GRND_NONBLOCK) !=
	    (ssize_t)sizeof m->seed)
		m->seed = (uint64_t)(uintptr_t)m * 0x9E3779B97F4A7C15ull;
	return m;
}

void pol_memquota_destroy(struct pol_memquota *m)
{
	if (!m)
		return;
	/* A half-built m has a NULL bucket array where ht_init() failed,
	 * and zeroed dedup tables (which dt_free() takes). */
	if (m->keys.b)
		ht_clear(&m->keys);
	free(m->keys.b);
	dt_free(&m->dedup[0]);
	dt_free(&m->dedup[1]);
	for (struct dchunk *c = m->spare, *nx; c; c = nx) {
		nx = c->next;
		free(c);
	}
	pthread_mutex_destroy(&m->mu);
	free(m->defs);
	free(m);
}

static const struct pol_quota_def *find_def(const struct pol_memquota *m,
					    const char *name)
{
	/* A handler has a few quotas: a scan costs less than a lookup
	 * structure would. */
	for (size_t i = 0; i < m->n_defs; i++)
		if (!strcmp(m->defs[i].name, name))
			return &m->defs[i];
	return NULL;
}

int pol_memquota_alloc(struct pol_memquota *m, const char *name,
		       const struct pol_quota_dim *dims, size_t n,
		       const struct pol_quota_args *a, int64_t now_ns,
		       struct pol_quota_grant *out)
{
	uint8_t kbuf[KEY_STACK], dbuf[KEY_STACK];
	struct kbuf kb = {kbuf, sizeof kbuf, 0}, dk = {dbuf, sizeof dbuf, 0};
	int rc = 0;

	*out = (struct pol_quota_grant){0, 0};
	const struct pol_quota_def *d = find_def(m, name);
	if (!d)
		return -ENOENT;
	uint32_t q = (uint32_t)(d - m->defs);
	if (!a->amount)
		return 0;
	if (n > POL_QUOTA_DIMS_MAX)
		return -EINVAL;
	const struct pol_quota_limit *lim = select_limit(d, dims, n);

	/* Everything but the table work, outside the lock. */
	make_key(&kb, q, dims, n);
	if (kb.len > POL_QUOTA_MAX_KEY)
		return -E2BIG;
	if (kb.len > kb.cap) {
		if (!(kb.p = malloc(kb.len)))
			return -ENOMEM;
		kb.cap = kb.len;
		kb.len = 0;
		make_key(&kb, q, dims, n);
	}
	uint64_t kh = XXH3_64bits_withSeed(kb.p, kb.len, m->seed);
	/* The dedup key: the id, length first, then the quota. No id,
	 * no deduplication (Mixer shared one entry among all requests
	 * without one: their first answer, repeated, for a whole window). */
	bool dedup = a->dedup_len && a->dedup_len <= POL_QUOTA_MAX_DEDUP_ID;
	uint64_t dh = 0;
	if (dedup) {
		_Static_assert(4 + POL_QUOTA_MAX_DEDUP_ID + 4 <= KEY_STACK,
			       "a dedup key fits on the stack");
		put_str(&dk, a->dedup_id, a->dedup_len);
		put_u32(&dk, q);
		dh = XXH3_64bits_withSeed(dk.p, dk.len, m->seed);
	}
	/* floor, so that tick boundaries are every 100 ms on either side
	 * of 0 */
	int64_t tick = now_ns / TICK_NS - (now_ns % TICK_NS < 0);
	int64_t exp_ns = INT64_MIN;

	pthread_mutex_lock(&m->mu);
	dedup_turn(m, now_ns);
	if (dedup) {
		const struct qdedup *hit = dt_find(&m->dedup[m->recent], dh,
						   dk.p, (uint32_t)dk.len);
		if (!hit)
			hit = dt_find(&m->dedup[!m->recent], dh, dk.p,
				      (uint32_t)dk.len);
		if (hit) {
			out->amount = hit->amount;
			out->valid_duration_ns =
				hit->exp_ns > now_ns ? hit->exp_ns - now_ns : 0;
			goto unlock;
		}
	}
	if (a->amount > 0)
		rc = do_alloc(m, lim, &kb, kh, a, tick, now_ns, out, &exp_ns);
	else
		do_free(m, &kb, kh,
			a->amount == INT64_MIN ? INT64_MAX : -a->amount, tick,
			out);
	if (!rc) {
		if (dedup)
			dedup_remember(m, &dk, dh, out, exp_ns);
		else if (a->dedup_len) /* an id too long to remember */
			__atomic_fetch_add(&m->dedup_lost, 1, __ATOMIC_RELAXED);
	}
unlock:
	__atomic_store_n(&m->n_keys, m->keys.n, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&m->mu);
	if (kb.p != kbuf)
		free(kb.p);
	return rc;
}

size_t pol_memquota_keys(const struct pol_memquota *m)
{
	return __atomic_load_n(&m->n_keys, __ATOMIC_RELAXED);
}

uint64_t pol_memquota_dedup_lost(const struct pol_memquota *m)
{
	return __atomic_load_n(&m->dedup_lost, __ATOMIC_RELAXED);
}

uint64_t pol_memquota_full(const struct pol_memquota *m)
{
	return __atomic_load_n(&m->full, __ATOMIC_RELAXED);
}
