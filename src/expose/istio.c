/*
 * istio.c -- render an aggregator view as Prometheus text 0.0.4, the way
 * Mixer's prometheus adapter (client_golang) exposed it.
 *
 * Cost model: a scrape of 100,000 label sets of the four HTTP families is
 * about four million lines. Each row's label text is escaped once per
 * scrape and reused by every family and bucket line of its set; `le`
 * values are formatted once per family; the rest is memcpy and integer
 * formatting.
 */
#include <stdlib.h>
#include <string.h>

#include "agg/agg.h"
#include "expose/expose.h"

/* Every row's `{l1="v1",...` (no closing brace) for one set. */
struct set_labels {
	struct expose_buf text;
	size_t *off; /* nrows + 1 offsets into text */
};

static int build_labels(const struct agg_view_set *s, struct set_labels *out)
{
	expose_buf_init(&out->text);
	out->off = malloc((s->nrows + 1) * sizeof *out->off);
	if (!out->off)
		return -1;
	for (size_t r = 0; r < s->nrows; r++) {
		out->off[r] = out->text.len;
		const uint8_t *p = s->rows[r].key;
		for (size_t l = 0; l < s->nlabels; l++) {
			const char *v;
			size_t len;
			agg_key_next(&p, &v, &len);
			expose_buf_putc(&out->text, l ? ',' : '{');
			expose_buf_puts(&out->text, s->labels[l]);
			expose_buf_append(&out->text, "=\"", 2);
			expose_label_value(&out->text, v, len);
			expose_buf_putc(&out->text, '"');
		}
		if (!s->nlabels)
			expose_buf_putc(&out->text, '{');
	}
	out->off[s->nrows] = out->text.len;
	return expose_buf_failed(&out->text) ? -1 : 0;
}

static inline void put_name(struct expose_buf *b, const char *name, size_t nl,
			    const char *suffix, size_t sl, const struct set_labels *L,
			    size_t r)
{
	expose_buf_append(b, name, nl);
	expose_buf_append(b, suffix, sl);
	expose_buf_append(b, L->text.data + L->off[r], L->off[r + 1] - L->off[r]);
}

static void render_family(struct expose_buf *b, const struct agg_view_family *f,
			  const struct agg_view_set *s, const struct set_labels *L)
{
	size_t nl = strlen(f->name);
	bool empty_labels = s->nlabels == 0;
	expose_help(b, f->name, f->help);
	expose_type(b, f->name, f->kind == AGG_HISTOGRAM ? "histogram"
				: f->kind == AGG_GAUGE	 ? "gauge"
							 : "counter");
	if (f->kind != AGG_HISTOGRAM) {
		for (size_t r = 0; r < s->nrows; r++) {
			const struct agg_view_row *row = &s->rows[r];
			if (!((row->touched >> f->bit) & 1))
				continue;
			double v;
			memcpy(&v, &row->cells[f->cell], 8);
			put_name(b, f->name, nl, "", 0, L, r);
			expose_buf_append(b, "} ", 2);
			expose_value(b, v);
			expose_buf_putc(b, '\n');
		}
		return;
	}
	/* `,le="0.005"} ` per bound, formatted once; `{` instead of `,` when
	 * the family has no other label. */
	char (*le)[EXPOSE_VALUE_MAX + 16] = malloc((f->nb + 1) * sizeof *le);
	size_t *lel = malloc((f->nb + 1) * sizeof *lel);
	if (!le || !lel) {
		free(le);
		free(lel);
		b->oom = true;
		return;
	}
	for (size_t i = 0; i <= f->nb; i++) {
		char num[EXPOSE_VALUE_MAX];
		size_t n = i < f->nb ? expose_format_float_go(f->bounds[i], num)
				     : (memcpy(num, "+Inf", 4), 4);
		size_t k = 0;
		le[i][k++] = empty_labels ? '{' : ',';
		memcpy(le[i] + k, "le=\"", 4);
		k += 4;
		memcpy(le[i] + k, num, n);
		k += n;
		memcpy(le[i] + k, "\"} ", 3);
		k += 3;
		lel[i] = k;
	}
	for (size_t r = 0; r < s->nrows; r++) {
		const struct agg_view_row *row = &s->rows[r];
		if (!((row->touched >> f->bit) & 1))
			continue;
		const uint64_t *c = &row->cells[f->cell];
		/* Cumulative, from one consistent copy: monotonic, and +Inf is
		 * the count. */
		uint64_t cum = 0;
		size_t lo = L->off[r], ll = L->off[r + 1] - lo;
		for (size_t i = 0; i <= f->nb; i++) {
			cum += c[i];
			expose_buf_append(b, f->name, nl);
			expose_buf_append(b, "_bucket", 7);
			if (!empty_labels)
				expose_buf_append(b, L->text.data + lo, ll);
			expose_buf_append(b, le[i], lel[i]);
			expose_u64(b, cum);
			expose_buf_putc(b, '\n');
		}
		double sum;
		memcpy(&sum, &c[f->nb + 1], 8);
		put_name(b, f->name, nl, "_sum", 4, L, r);
		expose_buf_append(b, "} ", 2);
		expose_value(b, sum);
		expose_buf_putc(b, '\n');
		put_name(b, f->name, nl, "_count", 6, L, r);
		expose_buf_append(b, "} ", 2);
		expose_u64(b, c[f->nb + 2]);
		expose_buf_putc(b, '\n');
	}
	free(le);
	free(lel);
}

int expose_render_view(const struct agg_view *v, struct expose_buf *b)
{
	struct set_labels *L = calloc(v->nsets + 1, sizeof *L);
	if (!L)
		return -1;
	int rc = 0;
	for (size_t s = 0; s < v->nsets && !rc; s++)
		rc = build_labels(&v->sets[s], &L[s]);
	for (size_t f = 0; f < v->nfams && !rc; f++) {
		const struct agg_view_family *fam = &v->fams[f];
		if (fam->series)
			render_family(b, fam, &v->sets[fam->set], &L[fam->set]);
	}
	for (size_t s = 0; s < v->nsets; s++) {
		expose_buf_free(&L[s].text);
		free(L[s].off);
	}
	free(L);
	return rc || expose_buf_failed(b) ? -1 : 0;
}
