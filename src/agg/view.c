/*
 * view.c -- a scrape's consistent, merged copy of every family.
 *
 * Each shard's state is read inside the epoch, so nothing it points to is
 * freed meanwhile; each row is copied under its sequence count, so a row
 * is never torn. A shard still on an older plan contributes the sets whose
 * signature is unchanged. Rows of one label set from several shards are
 * merged (counters and histograms add; a gauge takes the latest write),
 * and each set is sorted by its label values for a stable order.
 *
 * Cost model, 100,000 label sets: the rows are sorted first, by reference
 * and inside the epoch, then copied in that order. So the copies lie in
 * the arena in the order a scrape reads them (four passes, one per
 * family, that the hardware prefetcher can follow), and duplicates from
 * several shards are adjacent and merged as they are copied. The sort
 * compares 8-byte abbreviations of the keys and reads a key again only on
 * a tie (see abbreviate()).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "agg/agg_internal.h"

/* A row to copy: the shard's row, its key, the key's abbreviation. */
struct sref {
	uint64_t ab;
	const uint8_t *key;
	const struct row *r;
	uint32_t key_len;
};

/* A set's rows from every shard, in table order until sorted. */
struct vset {
	struct sref *rows;
	size_t n, cap;
};

/*
 * Chunked arena for the copies: freed with the view. The chunks are mapped
 * and unmapped here rather than malloc'd: a view of 100,000 label sets is
 * some 60 MB, and malloc would keep it in the heap after the scrape (its
 * mmap threshold rises to the size of the chunks freed), so the daemon
 * would hold a scrape's worth of memory between scrapes. MAP_POPULATE:
 * a chunk is filled right away, so its pages are better faulted in by one
 * call than by 256 faults.
 */
#define CHUNK_BYTES (1u << 20)

struct chunk {
	struct chunk *next;
	size_t used, cap;
	uint8_t data[];
};

struct view_ext {
	struct agg_view v;
	struct agg_plan *plan;
	struct chunk *chunks;
};

static void *arena_alloc(struct view_ext *x, size_t n)
{
	n = (n + 7) & ~(size_t)7;
	struct chunk *c = x->chunks;
	if (!c || c->cap - c->used < n) {
		size_t cap = n > CHUNK_BYTES ? n : CHUNK_BYTES;
		c = mmap(NULL, sizeof *c + cap, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (c == MAP_FAILED)
			return NULL;
		c->used = 0;
		c->cap = cap;
		c->next = x->chunks;
		x->chunks = c;
	}
	void *p = c->data + c->used;
	c->used += n;
	return p;
}

/* Offset of the first byte where @a and @b differ, or @n. Eight bytes at
 * a time: label sets share long prefixes (reporter, source_app="unknown",
 * ...), and this is where the sort spends its time. */
static inline uint32_t first_diff(const uint8_t *a, const uint8_t *b,
				  uint32_t n)
{
	uint32_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t x, y;
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		/* little-endian (x86-64, arm64): the lowest set bit is in
		 * the first differing byte */
		if (x != y)
			return i + (uint32_t)__builtin_ctzll(x ^ y) / 8;
	}
	while (i < n && a[i] == b[i])
		i++;
	return i;
}

/*
 * What every key of a set shares: its first @bytes bytes, which hold whole
 * labels up to the one starting at @label. Comparisons start there, and
 * the abbreviated keys are taken from there.
 */
struct prefix {
	uint32_t bytes;
	uint32_t label;
};

/*
 * Order rows by their label values, value by value, as a person reads
 * them (the length prefixes would otherwise sort short values first),
 * without walking value by value: find the first differing byte, then the
 * label it falls in. Bytes before it are equal, so both keys have the same
 * label boundaries up to that label. A difference inside a value decides
 * by that byte; one inside a length prefix means the values' lengths
 * differ, and the shorter value, a prefix of the other up to its end,
 * sorts first. @pf: a prefix both keys share.
 */
static int key_cmp(const uint8_t *a, uint32_t alen, const uint8_t *b,
		   uint32_t blen, const struct prefix *pf)
{
	uint32_t n = alen < blen ? alen : blen;
	uint32_t d = pf->bytes + first_diff(a + pf->bytes, b + pf->bytes,
					    n - pf->bytes);
	if (d == n) /* equal; one key a prefix of another is not in one set */
		return (alen > blen) - (alen < blen);
	uint32_t s = pf->label;
	for (;;) {
		uint16_t la;
		memcpy(&la, a + s, 2);
		if (d < s + 2) {
			uint16_t lb;
			memcpy(&lb, b + s, 2);
			int c = memcmp(a + s + 2, b + s + 2, la < lb ? la : lb);
			if (c)
				return c;
			return la < lb ? -1 : 1;
		}
		if (d < s + 2u + la)
			return a[d] < b[d] ? -1 : 1;
		s += 2u + la;
	}
}

/* The prefix that all @n keys of @rows share (n >= 1). */
static struct prefix common_prefix(const struct sref *rows, size_t n)
{
	const struct sref *r0 = &rows[0];
	uint32_t c = r0->key_len;
	for (size_t i = 1; i < n && c; i++) {
		const struct sref *r = &rows[i];
		uint32_t m = r->key_len < c ? r->key_len : c;
		c = first_diff(r0->key, r->key, m);
	}
	/* the label holding byte c (or c itself, at the end of the key) */
	uint32_t s = 0;
	for (;;) {
		uint16_t l;
		if (s + 2 > c)
			break;
		memcpy(&l, r0->key + s, 2);
		if (s + 2u + l > c)
			break;
		s += 2u + l;
	}
	return (struct prefix){.bytes = c, .label = s};
}

/*
 * The first eight bytes, from the shared prefix on, of the key written so
 * that plain byte order is label order: each value followed by 0x00 0x00,
 * a 0x00 inside a value written 0x00 0xff. Packed big-endian, so unequal
 * abbreviations order two keys without reading them again; equal ones
 * leave it to key_cmp(). This is what keeps the sort within its array
 * instead of chasing every key through memory on every comparison.
 */
static uint64_t abbreviate(const struct sref *r, const struct prefix *pf)
{
	uint64_t ab = 0;
	unsigned n = 0;
	uint32_t s = pf->label;
	/* within the first label, from the first byte that may differ */
	uint32_t from = pf->bytes > s + 2 ? pf->bytes : s + 2;
	while (n < 8 && s + 2 <= r->key_len) {
		uint16_t l;
		memcpy(&l, r->key + s, 2);
		const uint8_t *v = r->key + s + 2;
		for (uint32_t i = from - (s + 2); i < l && n < 8; i++) {
			ab = ab << 8 | v[i];
			n++;
			if (!v[i] && n < 8) {
				ab = ab << 8 | 0xff;
				n++;
			}
		}
		for (unsigned t = 0; t < 2 && n < 8; t++) {
			ab <<= 8;
			n++;
		}
		s += 2u + l;
		from = s + 2;
	}
	/* zero-padded: a key that ends sorts before one that goes on */
	return n == 0 ? 0 : n < 8 ? ab << 8 * (8 - n) : ab;
}

/* Room for more rows in @vs: 0, or -ENOMEM. */
static int grow(struct vset *vs)
{
	size_t nc = vs->cap ? vs->cap * 2 : 1024;
	struct sref *g = realloc(vs->rows, nc * sizeof *g);
	if (!g)
		return -ENOMEM;
	vs->rows = g;
	vs->cap = nc;
	return 0;
}

/* Collect the rows of one shard's series @se that have data. */
static int collect_series(struct vset *vs, const struct series *se,
			  unsigned ncells)
{
	const struct table_array *arr = __atomic_load_n(&se->arr, __ATOMIC_ACQUIRE);
	for (uint64_t i = 0; i <= arr->mask; i++) {
		const struct row *r = __atomic_load_n(&arr->slot[i], __ATOMIC_ACQUIRE);
		if (!r)
			continue;
		/* created, never completed an update: not shown */
		if (!__atomic_load_n(&r->touched, __ATOMIC_ACQUIRE))
			continue;
		if (vs->n == vs->cap && grow(vs))
			return -ENOMEM;
		vs->rows[vs->n++] = (struct sref){
			.key = row_key(r, ncells), /* immutable */
			.key_len = r->key_len,
			.r = r,
		};
	}
	return 0;
}

/*
 * The rows for set @d of @x's plan held by shard state @st, which is on
 * another plan: a reload under way, its shards switching one at a time.
 * @st's sets with the same labels give theirs, copied with each cell moved
 * to where @x's plan keeps its family (as carry_rows() moves them when the
 * shard switches); families @x's plan does not have are left out. Without
 * this, for the moment a shard is behind, every series of a set whose
 * families changed would lose that shard's share, and a counter going down
 * reads as a reset to Prometheus.
 */
static int collect_moved(struct view_ext *x, struct vset *vs, size_t d,
			 const struct shard_state *st,
			 struct agg_view_family *fams)
{
	const struct agg_plan *p = x->plan, *sp = st->plan;
	const struct plan_dimset *ds = &p->dimsets[d];
	for (size_t k = 0; k < sp->ndimsets; k++) {
		const struct plan_dimset *ok = &sp->dimsets[k];
		int from[64];
		if (!plan_set_map(p, ds, sp, ok, from))
			continue;
		const struct series *se = st->series[k];
		for (unsigned b = 0; b < ds->nfam; b++)
			if (from[b] >= 0) {
				struct agg_view_family *vf = &fams[ds->fams[b]];
				vf->overflow += __atomic_load_n(
					&se->overflow[from[b]], __ATOMIC_RELAXED);
				vf->expired += __atomic_load_n(
					&se->expired[from[b]], __ATOMIC_RELAXED);
			}
		struct vset old = {0};
		uint64_t *tmp = malloc(ok->ncells * sizeof *tmp + 8);
		if (!tmp || collect_series(&old, se, ok->ncells)) {
			free(tmp);
			free(old.rows);
			return -ENOMEM;
		}
		for (size_t i = 0; i < old.n; i++) {
			const struct row *r = old.rows[i].r;
			uint64_t touched;
			int64_t ns;
			row_read(r, ok->ncells, tmp, &touched, &ns);
			uint64_t moved = plan_set_touched(ds, from, touched);
			if (!moved)
				continue;
			struct row *n = arena_alloc(
				x, sizeof *n + ds->ncells * sizeof n->cells[0] +
					   r->key_len);
			if (!n || (vs->n == vs->cap && grow(vs))) {
				free(tmp);
				free(old.rows);
				return -ENOMEM;
			}
			*n = (struct row){.hash = r->hash,
					  .key_len = r->key_len,
					  .touched = moved,
					  .last_ns = ns};
			memset(n->cells, 0, ds->ncells * sizeof n->cells[0]);
			plan_set_move(p, ds, sp, ok, from, moved, n->cells, tmp,
				      ns);
			uint8_t *key = (uint8_t *)row_key(n, ds->ncells);
			memcpy(key, old.rows[i].key, r->key_len);
			vs->rows[vs->n++] = (struct sref){
				.key = key, .key_len = r->key_len, .r = n};
		}
		free(tmp);
		free(old.rows);
	}
	return 0;
}

/* By abbreviation, then (@pf not NULL) by key. */
static inline int sref_cmp(const struct sref *x, const struct sref *y,
			   const struct prefix *pf)
{
	if (x->ab != y->ab)
		return x->ab < y->ab ? -1 : 1;
	return pf ? key_cmp(x->key, x->key_len, y->key, y->key_len, pf) : 0;
}

/* Merge sort of @n rows, @tmp holding n / 2, by sref_cmp(). Not qsort():
 * the comparison inlines, and runs already in order cost one
 * comparison. */
static void sort_rows(struct sref *a, struct sref *tmp, size_t n,
		      const struct prefix *pf)
{
	if (n <= 12) {
		for (size_t i = 1; i < n; i++) {
			struct sref r = a[i];
			size_t j = i;
			for (; j > 0 && sref_cmp(&a[j - 1], &r, pf) > 0; j--)
				a[j] = a[j - 1];
			a[j] = r;
		}
		return;
	}
	size_t h = n / 2;
	sort_rows(a, tmp, h, pf);
	sort_rows(a + h, tmp, n - h, pf);
	if (sref_cmp(&a[h - 1], &a[h], pf) <= 0)
		return;
	memcpy(tmp, a, h * sizeof *a);
	/* writing a[k] never overtakes the unread a[j]: k < j */
	size_t i = 0, j = h, k = 0;
	while (i < h && j < n)
		a[k++] = sref_cmp(&a[j], &tmp[i], pf) < 0 ? a[j++] : tmp[i++];
	while (i < h)
		a[k++] = tmp[i++];
}

/*
 * Sort @n rows (@tmp holding n / 2) by label values. First by their
 * abbreviations alone, never reading a key; then each run of equal
 * abbreviations again, by new abbreviations taken past what that run
 * shares, keys compared only where those tie too. Label sets that differ
 * in two places far apart (a service, and a response code 150 bytes
 * later) are then ordered without chasing keys through memory.
 */
static void sort_set(struct sref *a, struct sref *tmp, size_t n)
{
	struct prefix pf = common_prefix(a, n);
	for (size_t i = 0; i < n; i++)
		a[i].ab = abbreviate(&a[i], &pf);
	sort_rows(a, tmp, n, NULL);
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && a[j].ab == a[i].ab; j++)
			;
		if (j - i < 2)
			continue;
		struct prefix rp = common_prefix(a + i, j - i);
		for (size_t k = i; k < j; k++)
			a[k].ab = abbreviate(&a[k], &rp);
		sort_rows(a + i, tmp, j - i, &rp);
	}
}

/*
 * A label set last updated (in any shard) at @newest has expired by now
 * (@gone_before: now less the expiry; INT64_MIN without one): a scrape
 * leaves it out though some shard has not removed its row yet, so that an
 * expired series vanishes whole, as in Mixer, and never shows a part.
 */
static inline bool expired(int64_t newest, int64_t gone_before)
{
	return newest < gone_before;
}

/*
 * Gauge times of a merged row, per family of its set: when the copy whose
 * value it holds was last written; INT64_MIN: no copy set it.
 */
static void gauge_times(const struct agg_plan *p, const struct plan_dimset *d,
			const uint64_t *cells, uint64_t touched, int64_t ns,
			int64_t *gns)
{
	for (unsigned k = 0; k < d->nfam; k++)
		gns[k] = p->fams[d->fams[k]].kind == FAM_GAUGE &&
					 (touched >> k & 1)
				 ? fam_ns(d, cells, k, ns)
				 : INT64_MIN;
}

/*
 * Add the cells @src (families @src_touched, last written at @src_ns) of
 * another shard's copy of a label set into @dst (*@dst_touched, gauge
 * times @gns). Sums add; family times take the newest; a gauge takes the
 * value of the copy written last among those that set it (by the gauge's
 * own time where the set keeps family times, else by the copy's last
 * record, of any family).
 */
static void merge_cells(const struct agg_plan *p, const struct plan_dimset *d,
			uint64_t *dst, uint64_t *dst_touched, int64_t *gns,
			const uint64_t *src, uint64_t src_touched,
			int64_t src_ns)
{
	for (unsigned c = 0; c < d->ncells; c++) {
		double a, b;
		switch (d->cell_kind[c]) {
		case CELL_SUM_U64:
			dst[c] += src[c];
			break;
		case CELL_SUM_DOUBLE:
			memcpy(&a, &dst[c], 8);
			memcpy(&b, &src[c], 8);
			a += b;
			memcpy(&dst[c], &a, 8);
			break;
		case CELL_MAX_I64:
			if ((int64_t)src[c] > (int64_t)dst[c])
				dst[c] = src[c];
			break;
		case CELL_LAST_DOUBLE:
			break; /* below, by family */
		}
	}
	for (unsigned k = 0; k < d->nfam; k++) {
		const struct plan_family *f = &p->fams[d->fams[k]];
		int64_t t = fam_ns(d, src, k, src_ns);
		if (f->kind == FAM_GAUGE && (src_touched >> k & 1) &&
		    t > gns[k]) {
			dst[f->cell] = src[f->cell];
			gns[k] = t;
		}
	}
	*dst_touched |= src_touched;
}

/*
 * A merged row (newest: its last update in any shard) as a scrape shows
 * it: false when it has expired by now (expired()); else true, with the
 * families that have expired on their own taken out of its *@touched (by
 * their times @ft, per family; NULL where the set keeps none), false if
 * none is left.
 */
static bool row_shown(const uint64_t *ft, uint64_t *touched, int64_t newest,
		      int64_t gone_before)
{
	if (expired(newest, gone_before))
		return false;
	for (uint64_t b = ft ? *touched : 0; b; b &= b - 1) {
		unsigned k = (unsigned)__builtin_ctzll(b);
		if (expired((int64_t)ft[k], gone_before))
			*touched &= ~(1ull << k);
	}
	return *touched != 0;
}

/* The family times of a row's @cells of set @d, or NULL. */
static inline const uint64_t *fam_times(const struct plan_dimset *d,
					const uint64_t *cells)
{
	return d->tcell ? cells + d->tcell : NULL;
}

/* Ask for the @n bytes at @p ahead of their use (copies of rows in sorted
 * order read the shards' tables at random). */
static inline void prefetch(const void *p, size_t n)
{
	const char *c = p;
	for (size_t o = 0; o < n && o < 1024; o += 64)
		__builtin_prefetch(c + o);
}

/* How far ahead the copy loop prefetches rows: enough to overlap the
 * misses of several rows, few enough to stay in L1. */
#define PREFETCH_ROWS 6

/*
 * Sort @vs's rows and copy them, merged, in that order into @x's arena;
 * fills @out (rows, nrows). Inside the epoch: the rows are the shards'.
 */
static int copy_sorted(struct view_ext *x, struct vset *vs,
		       const struct plan_dimset *d, struct agg_view_set *out,
		       int64_t gone_before)
{
	unsigned ncells = d->ncells;
	struct agg_view_row *rows = calloc(vs->n + 1, sizeof *rows);
	if (!rows)
		return -ENOMEM;
	out->rows = rows;
	if (!vs->n)
		return 0;
	struct sref *tmp = malloc((vs->n / 2 + 1) * sizeof *tmp);
	uint64_t *dup = malloc(ncells * sizeof *dup + 8);
	if (!tmp || !dup) {
		free(tmp);
		free(dup);
		return -ENOMEM;
	}
	sort_set(vs->rows, tmp, vs->n);
	free(tmp);

	size_t n = 0;
	uint64_t *last = NULL; /* cells of rows[n - 1] */
	int64_t gns[64];       /* its gauges' times */
	int64_t newest = 0;    /* its last update, in any shard */
	for (size_t i = 0; i < vs->n; i++) {
		if (i + PREFETCH_ROWS < vs->n) {
			const struct sref *ahead = &vs->rows[i + PREFETCH_ROWS];
			prefetch(ahead->r, sizeof *ahead->r + ncells * 8);
			prefetch(ahead->key, ahead->key_len);
		}
		const struct sref *s = &vs->rows[i];
		uint64_t touched;
		int64_t ns;
		if (n && rows[n - 1].key_len == s->key_len &&
		    memcmp(rows[n - 1].key, s->key, s->key_len) == 0) {
			/* the same label set from another shard */
			row_read(s->r, ncells, dup, &touched, &ns);
			merge_cells(x->plan, d, last, &rows[n - 1].touched,
				    gns, dup, touched, ns);
			newest = ns > newest ? ns : newest;
			continue;
		}
		if (n && !row_shown(fam_times(d, last), &rows[n - 1].touched,
				    newest, gone_before))
			n--; /* its place (and arena bytes) are the next's */
		uint64_t *cells = arena_alloc(x, ncells * 8 + s->key_len);
		if (!cells) {
			free(dup);
			return -ENOMEM;
		}
		row_read(s->r, ncells, cells, &touched, &ns);
		uint8_t *k = (uint8_t *)(cells + ncells);
		memcpy(k, s->key, s->key_len);
		rows[n++] = (struct agg_view_row){
			.key = k,
			.key_len = s->key_len,
			.touched = touched,
			.cells = cells,
		};
		last = cells;
		newest = ns;
		gauge_times(x->plan, d, cells, touched, ns, gns);
	}
	if (n && !row_shown(fam_times(d, last), &rows[n - 1].touched, newest,
			    gone_before))
		n--;
	free(dup);
	out->nrows = n;
	return 0;
}

/*
 * agg_view_counts()'s half of copy_sorted(): sort @vs's rows and count,
 * per family of @d, the distinct label sets that have its data (the
 * copies of one set in several shards count once), into @fams. Inside the
 * epoch; nothing is copied.
 */
static int count_sorted(struct vset *vs, const struct plan_dimset *d,
			struct agg_view_family *fams, int64_t gone_before)
{
	if (!vs->n)
		return 0;
	struct sref *tmp = malloc((vs->n / 2 + 1) * sizeof *tmp);
	if (!tmp)
		return -ENOMEM;
	sort_set(vs->rows, tmp, vs->n);
	free(tmp);
	for (size_t i = 0, j; i < vs->n; i = j) {
		const struct sref *s = &vs->rows[i];
		uint64_t touched = 0;
		int64_t newest = INT64_MIN;
		uint64_t times[64]; /* the newest of each family's (tcell) */
		for (unsigned k = 0; d->tcell && k < d->nfam; k++)
			times[k] = (uint64_t)INT64_MIN;
		for (j = i; j < vs->n && vs->rows[j].key_len == s->key_len &&
			    memcmp(vs->rows[j].key, s->key, s->key_len) == 0;
		     j++) {
			const struct row *r = vs->rows[j].r;
			int64_t ns = __atomic_load_n(&r->last_ns, __ATOMIC_ACQUIRE);
			touched |= __atomic_load_n(&r->touched, __ATOMIC_RELAXED);
			newest = ns > newest ? ns : newest;
			for (unsigned k = 0; d->tcell && k < d->nfam; k++) {
				int64_t t = (int64_t)__atomic_load_n(
					&r->cells[d->tcell + k], __ATOMIC_RELAXED);
				if (t > (int64_t)times[k])
					times[k] = (uint64_t)t;
			}
		}
		if (!row_shown(d->tcell ? times : NULL, &touched, newest,
			       gone_before))
			continue;
		for (unsigned b = 0; b < d->nfam; b++)
			fams[d->fams[b]].series += touched >> b & 1;
	}
	return 0;
}

/* The index of @p's dimset with @sig, or -1. */
static int find_set(const struct agg_plan *p, const char *sig)
{
	for (size_t k = 0; k < p->ndimsets; k++)
		if (strcmp(p->dimsets[k].signature, sig) == 0)
			return (int)k;
	return -1;
}

/* agg_view_create() (@rows) or agg_view_counts(). */
static int view_create(struct agg *a, struct agg_view **out, bool rows)
{
	struct view_ext *x = calloc(1, sizeof *x);
	if (!x)
		return -ENOMEM;
	struct agg_view *v = &x->v;
	int rc = -ENOMEM;

	int slot = epoch_enter(&a->epoch);
	struct agg_plan *p = __atomic_load_n(&a->plan, __ATOMIC_ACQUIRE);
	if (p)
		plan_ref(p);
	for (unsigned i = 0; i < a->o.shards; i++) {
		const struct shard *sh = &a->shards[i];
		v->records += __atomic_load_n(&sh->pub_processed, __ATOMIC_RELAXED);
		v->memo_served += __atomic_load_n(&sh->pub_memo[0], __ATOMIC_RELAXED);
		v->memo_missed += __atomic_load_n(&sh->pub_memo[1], __ATOMIC_RELAXED);
		v->log_lines_lost +=
			__atomic_load_n(&sh->pub_log_lost, __ATOMIC_RELAXED);
	}
	if (!p) {
		epoch_exit(&a->epoch, slot);
		*out = v;
		return 0;
	}
	x->plan = p;
	v->generation = p->generation;
	struct vset *sets = calloc(p->ndimsets + 1, sizeof *sets);
	v->fams = calloc(p->nfams + 1, sizeof *v->fams);
	v->sets = calloc(p->ndimsets + 1, sizeof *v->sets);
	v->logs = calloc(p->nlogs + 1, sizeof *v->logs);
	if (!sets || !v->fams || !v->sets || !v->logs)
		goto out;
	v->nlogs = p->nlogs;
	for (size_t l = 0; l < p->nlogs; l++)
		v->logs[l].instance = p->logs[l].inst->meta.fqn;
	v->nfams = p->nfams;
	v->nsets = p->ndimsets;
	for (size_t f = 0; f < p->nfams; f++) {
		const struct plan_family *pf = &p->fams[f];
		v->fams[f] = (struct agg_view_family){
			.name = pf->name,
			.help = pf->help,
			.instance = pf->instance,
			.kind = pf->kind == FAM_HISTOGRAM ? AGG_HISTOGRAM
				: pf->kind == FAM_GAUGE	   ? AGG_GAUGE
							   : AGG_COUNTER,
			.bounds = pf->bounds,
			.nb = pf->nb,
			.set = pf->dimset,
			.bit = pf->bit,
			.cell = pf->cell,
		};
	}

	for (unsigned i = 0; i < a->o.shards; i++) {
		const struct shard_state *st =
			__atomic_load_n(&a->shards[i].state, __ATOMIC_ACQUIRE);
		if (!st)
			continue;
		const struct agg_plan *sp = st->plan;
		for (size_t d = 0; d < p->ndimsets; d++) {
			int k = find_set(sp, p->dimsets[d].signature);
			if (k < 0) {
				if (collect_moved(x, &sets[d], d, st, v->fams))
					goto out;
				continue;
			}
			const struct series *se = st->series[k];
			if (collect_series(&sets[d], se, p->dimsets[d].ncells))
				goto out;
			/* Per-family counters, matched by the bit within the set
			 * (the signature guarantees the same families). */
			for (unsigned b = 0; b < p->dimsets[d].nfam; b++) {
				struct agg_view_family *vf =
					&v->fams[p->dimsets[d].fams[b]];
				vf->overflow += __atomic_load_n(&se->overflow[b],
								__ATOMIC_RELAXED);
				vf->expired += __atomic_load_n(&se->expired[b],
							       __ATOMIC_RELAXED);
			}
		}
		/* A state of an older plan: its families' errors where the
		 * state that replaces it will keep them. */
		for (size_t g = 0; g < sp->nfams; g++) {
			long f = sp == p ? (long)g : plan_errors_home(p, sp, g);
			if (f >= 0)
				v->fams[f].errors += __atomic_load_n(
					&st->inst_errors[g], __ATOMIC_RELAXED);
		}
		/* A state of an older plan: its logs' errors under their
		 * instance's name, on the first log of that name. */
		for (size_t l = 0; l < sp->nlogs; l++) {
			size_t k = l;
			if (sp != p)
				for (k = 0; k < p->nlogs &&
					    strcmp(p->logs[k].inst->meta.fqn,
						   sp->logs[l].inst->meta.fqn);
				     k++)
					;
			if (k < p->nlogs)
				v->logs[k].errors += __atomic_load_n(
					&st->log_errors[l], __ATOMIC_RELAXED);
		}
	}
	/* The shards' clock (shard.c, sh->now_ns). */
	const int64_t now = (int64_t)ingest_now_coarse();
	for (size_t d = 0; d < p->ndimsets; d++) {
		/* Rows idle past their handler's expiry are gone, whether or
		 * not an expiry pass has removed them yet. */
		const int64_t ttl = p->dimsets[d].expiry_ns;
		const int64_t gone_before = ttl ? now - ttl : INT64_MIN;
		v->sets[d] = (struct agg_view_set){
			.labels = p->dimsets[d].labels,
			.nlabels = p->dimsets[d].ndims,
		};
		if (rows ? copy_sorted(x, &sets[d], &p->dimsets[d], &v->sets[d],
				       gone_before)
			 : count_sorted(&sets[d], &p->dimsets[d], v->fams,
					gone_before))
			goto out;
	}
	epoch_exit(&a->epoch, slot);
	slot = -1;

	for (size_t d = 0; d < p->ndimsets && rows; d++) {
		const struct agg_view_set *vs = &v->sets[d];
		for (size_t r = 0; r < vs->nrows; r++)
			for (unsigned b = 0; b < p->dimsets[d].nfam; b++)
				if ((vs->rows[r].touched >> b) & 1)
					v->fams[p->dimsets[d].fams[b]].series++;
	}
	rc = 0;
out:
	if (slot >= 0)
		epoch_exit(&a->epoch, slot);
	if (sets)
		for (size_t d = 0; d < p->ndimsets; d++)
			free(sets[d].rows);
	free(sets);
	if (rc) {
		agg_view_destroy(v);
		return rc;
	}
	*out = v;
	return 0;
}

int agg_view_create(struct agg *a, struct agg_view **out)
{
	return view_create(a, out, true);
}

int agg_view_counts(struct agg *a, struct agg_view **out)
{
	return view_create(a, out, false);
}

void agg_view_destroy(struct agg_view *v)
{
	if (!v)
		return;
	struct view_ext *x = (struct view_ext *)v;
	for (size_t d = 0; d < v->nsets && v->sets; d++)
		free(v->sets[d].rows);
	free(v->sets);
	free(v->fams);
	free(v->logs);
	while (x->chunks) {
		struct chunk *c = x->chunks;
		x->chunks = c->next;
		munmap(c, sizeof *c + c->cap);
	}
	plan_unref(x->plan);
	free(x);
}
