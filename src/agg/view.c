/*
 * view.c -- a scrape's consistent, merged copy of every family.
 *
 * Each shard's state is read inside the epoch, so nothing it points to is
 * freed meanwhile; each row is copied under its sequence count, so a row
 * is never torn. A shard still on an older plan contributes the sets whose
 * signature is unchanged. Rows of one label set from several shards are
 * merged (counters and histograms add; a gauge takes the latest write),
 * and each set is sorted by its key for a stable order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agg/agg_internal.h"

struct vrow {
	const uint8_t *key;
	uint32_t key_len;
	uint64_t touched;
	int64_t last_ns;
	uint64_t *cells;
};

struct vset {
	struct vrow *rows;
	size_t n, cap;
};

/* Chunked arena for the copies: freed with the view. */
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
		size_t cap = n > (1u << 20) ? n : (1u << 20);
		c = malloc(sizeof *c + cap);
		if (!c)
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

/* Order rows by their label values, value by value, as a person reads
 * them (the length prefixes would otherwise sort short values first). */
static int key_cmp(const void *a, const void *b)
{
	const struct vrow *x = a, *y = b;
	const uint8_t *p = x->key, *pe = x->key + x->key_len;
	const uint8_t *q = y->key, *qe = y->key + y->key_len;
	while (p < pe && q < qe) {
		const char *s, *t;
		size_t sl, tl;
		agg_key_next(&p, &s, &sl);
		agg_key_next(&q, &t, &tl);
		int c = memcmp(s, t, sl < tl ? sl : tl);
		if (c)
			return c;
		if (sl != tl)
			return sl < tl ? -1 : 1;
	}
	return (p < pe) - (q < qe);
}

/* Copy every row of one shard's series @se into @vs. */
static int copy_series(struct view_ext *x, struct vset *vs,
		       const struct series *se, unsigned ncells)
{
	const struct table_array *arr = __atomic_load_n(&se->arr, __ATOMIC_ACQUIRE);
	for (uint64_t i = 0; i <= arr->mask; i++) {
		const struct row *r = __atomic_load_n(&arr->slot[i], __ATOMIC_ACQUIRE);
		if (!r)
			continue;
		if (vs->n == vs->cap) {
			size_t nc = vs->cap ? vs->cap * 2 : 1024;
			struct vrow *g = realloc(vs->rows, nc * sizeof *g);
			if (!g)
				return -ENOMEM;
			vs->rows = g;
			vs->cap = nc;
		}
		struct vrow *v = &vs->rows[vs->n];
		v->cells = arena_alloc(x, ncells * 8 + r->key_len);
		if (!v->cells)
			return -ENOMEM;
		row_read(r, ncells, v->cells, &v->touched, &v->last_ns);
		if (!v->touched)
			continue; /* created, never completed an update */
		uint8_t *k = (uint8_t *)(v->cells + ncells);
		memcpy(k, row_key(r, ncells), r->key_len); /* immutable */
		v->key = k;
		v->key_len = r->key_len;
		vs->n++;
	}
	return 0;
}

/* Merge rows with equal keys (adjacent after sorting) into the first. */
static size_t merge(struct vset *vs, const struct plan_dimset *d)
{
	size_t out = 0;
	for (size_t i = 0; i < vs->n; i++) {
		struct vrow *r = &vs->rows[i];
		if (out && key_cmp(&vs->rows[out - 1], r) == 0) {
			struct vrow *m = &vs->rows[out - 1];
			for (unsigned c = 0; c < d->ncells; c++) {
				double a, b;
				switch (d->cell_kind[c]) {
				case CELL_SUM_U64:
					m->cells[c] += r->cells[c];
					break;
				case CELL_SUM_DOUBLE:
					memcpy(&a, &m->cells[c], 8);
					memcpy(&b, &r->cells[c], 8);
					a += b;
					memcpy(&m->cells[c], &a, 8);
					break;
				case CELL_LAST_DOUBLE:
					if (r->last_ns > m->last_ns)
						m->cells[c] = r->cells[c];
					break;
				}
			}
			m->touched |= r->touched;
			if (r->last_ns > m->last_ns)
				m->last_ns = r->last_ns;
			continue;
		}
		vs->rows[out++] = *r;
	}
	return out;
}

/* The index of @p's dimset with @sig, or -1. */
static int find_set(const struct agg_plan *p, const char *sig)
{
	for (size_t k = 0; k < p->ndimsets; k++)
		if (strcmp(p->dimsets[k].signature, sig) == 0)
			return (int)k;
	return -1;
}

/* Index of @p's family named @name, or -1. */
static int find_family(const struct agg_plan *p, const char *name)
{
	for (size_t f = 0; f < p->nfams; f++)
		if (strcmp(p->fams[f].name, name) == 0)
			return (int)f;
	return -1;
}

int agg_view_create(struct agg *a, struct agg_view **out)
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
	for (unsigned i = 0; i < a->o.shards; i++)
		v->records += __atomic_load_n(&a->shards[i].pub_processed,
					      __ATOMIC_RELAXED);
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
	if (!sets || !v->fams || !v->sets)
		goto out;
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
			if (k < 0)
				continue;
			const struct series *se = st->series[k];
			if (copy_series(x, &sets[d], se, p->dimsets[d].ncells))
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
		for (size_t f = 0; f < p->nfams; f++) {
			int sf = sp == p ? (int)f : find_family(sp, p->fams[f].name);
			if (sf >= 0)
				v->fams[f].errors += __atomic_load_n(
					&st->inst_errors[sf], __ATOMIC_RELAXED);
		}
	}
	epoch_exit(&a->epoch, slot);
	slot = -1;

	for (size_t d = 0; d < p->ndimsets; d++) {
		struct vset *vs = &sets[d];
		if (vs->n) {
			qsort(vs->rows, vs->n, sizeof *vs->rows, key_cmp);
			vs->n = merge(vs, &p->dimsets[d]);
		}
		struct agg_view_row *rows = calloc(vs->n + 1, sizeof *rows);
		if (!rows)
			goto out;
		for (size_t r = 0; r < vs->n; r++) {
			rows[r] = (struct agg_view_row){
				.key = vs->rows[r].key,
				.key_len = vs->rows[r].key_len,
				.touched = vs->rows[r].touched,
				.cells = vs->rows[r].cells,
			};
			for (unsigned b = 0; b < p->dimsets[d].nfam; b++)
				if ((vs->rows[r].touched >> b) & 1)
					v->fams[p->dimsets[d].fams[b]].series++;
		}
		v->sets[d] = (struct agg_view_set){
			.labels = p->dimsets[d].labels,
			.nlabels = p->dimsets[d].ndims,
			.rows = rows,
			.nrows = vs->n,
		};
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

void agg_view_destroy(struct agg_view *v)
{
	if (!v)
		return;
	struct view_ext *x = (struct view_ext *)v;
	for (size_t d = 0; d < v->nsets && v->sets; d++)
		free(v->sets[d].rows);
	free(v->sets);
	free(v->fams);
	while (x->chunks) {
		struct chunk *c = x->chunks;
		x->chunks = c->next;
		free(c);
	}
	plan_unref(x->plan);
	free(x);
}
