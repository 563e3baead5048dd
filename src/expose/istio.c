/*
 * istio.c -- render an aggregator view as Prometheus text 0.0.4, the way
 * Mixer's prometheus adapter (client_golang) exposed it, in pieces.
 *
 * A scrape of 100,000 label sets of the four HTTP families is about four
 * million lines and 2.3 GB of text. It is never held whole: each read
 * renders whole rows straight into the reader's buffer (the connection's
 * send buffer, or the deflater's input), which is sent and filled again.
 * That buffer stays in the CPU's cache, and a scrape's memory is the view
 * plus a buffer, whatever the number of series. Only a row larger than a
 * read goes through a buffer of the stream's own.
 *
 * Cost model, per row of a family: its `{l1="v1",...` block is built once
 * (label names come pre-joined, values are checked for characters to
 * escape a word at a time) and copied into each of its lines (one for a
 * counter, nb + 3 for a histogram); `le` suffixes are formatted once per
 * family; the rest is memcpy and integer formatting, no printf.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "agg/agg.h"
#include "expose/expose.h"
#include "expose/expose_internal.h"
#include "ingest/wire.h"

/* Longest `,le="<value>"} ` suffix: the value and 9 bytes around it. */
#define LE_MAX (EXPOSE_VALUE_MAX + 16)

/* Where rendering goes: the reader's buffer, or (@grow) the stream's own
 * for what does not fit in an empty reader's buffer. */
struct sink {
	char *data;
	size_t len, cap;
	struct expose_buf *grow;
};

struct expose_view_stream {
	const struct agg_view *v;
	size_t fam;   /* family being rendered */
	size_t row;   /* its next row */
	bool started; /* the family's HELP and TYPE are out */
	bool done;
	/* text rendered but not yet read: a row too big for a read */
	struct expose_buf over;
	size_t over_off;
	struct expose_buf head; /* a family's HELP and TYPE */
	struct expose_buf lab;	/* the row's `{l1="v1",...`, no closing brace */
	/* per family: `{l1="` / `,l2="` for each label of its set */
	struct expose_buf names;
	size_t *name_off; /* nlabels + 1 offsets into names */
	size_t name_cap;
	size_t fam_name_len; /* strlen of the current family's name */
	/* per histogram family: `,le="0.005"} ` per bound and +Inf */
	char (*le)[LE_MAX];
	size_t *lel;
	size_t le_cap;
	size_t le_max; /* longest of them */
	/* per set, per row: 0 not yet looked at, 1 no value to escape, 2 some
	 * value to escape; so a row is checked once, not once per family */
	uint8_t **esc;
};

struct expose_view_stream *expose_view_stream_new(const struct agg_view *v)
{
	struct expose_view_stream *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->v = v;
	s->esc = calloc(v->nsets + 1, sizeof *s->esc);
	if (!s->esc) {
		free(s);
		return NULL;
	}
	return s;
}

void expose_view_stream_free(struct expose_view_stream *s)
{
	if (!s)
		return;
	expose_buf_free(&s->over);
	expose_buf_free(&s->head);
	expose_buf_free(&s->lab);
	expose_buf_free(&s->names);
	free(s->name_off);
	for (size_t i = 0; s->esc && i < s->v->nsets; i++)
		free(s->esc[i]);
	free(s->esc);
	free(s->le);
	free(s->lel);
	free(s);
}

/*
 * Copy @n bytes to @d and return the end. Inline (wire_copy) for the short
 * pieces a line is made of (names, label values, suffixes): a libc memcpy
 * call per piece costs more than the copy.
 */
static inline char *put(char *d, const void *src, size_t n)
{
	wire_copy((uint8_t *)d, src, n);
	return d + n;
}

/* Does any of the 8 bytes of @x equal @c? (The classic has-zero-byte
 * test on x ^ c.) */
static inline uint64_t has_byte(uint64_t x, unsigned char c)
{
	uint64_t y = x ^ (0x0101010101010101ull * c);
	return (y - 0x0101010101010101ull) & ~y & 0x8080808080808080ull;
}

static inline bool special(char c)
{
	return c == '\\' || c == '"' || c == '\n';
}

static inline uint64_t specials(uint64_t x)
{
	return has_byte(x, '\\') | has_byte(x, '"') | has_byte(x, '\n');
}

/* Does a value of row @r have a character to escape? A word at a time;
 * short tails as overlapping words, never reading outside a value. */
static bool row_needs_escape(const struct agg_view_row *r)
{
	const uint8_t *k = r->key, *end = r->key + r->key_len;
	uint64_t hit = 0;
	while (k < end) {
		const char *v;
		size_t len, i = 0;
		agg_key_next(&k, &v, &len);
		for (; i + 8 <= len; i += 8) {
			uint64_t x;
			memcpy(&x, v + i, 8);
			hit |= specials(x);
		}
		if (i == len)
			continue;
		if (len >= 8) {
			uint64_t x;
			memcpy(&x, v + len - 8, 8);
			hit |= specials(x);
		} else if (len >= 4) {
			uint32_t a, b; /* zero bytes above them match nothing */
			memcpy(&a, v, 4);
			memcpy(&b, v + len - 4, 4);
			hit |= specials(a) | specials(b);
		} else {
			for (; i < len; i++)
				hit |= special(v[i]);
		}
	}
	return hit != 0;
}

/* Prepare what every row of family @f shares: its set's label names and,
 * for a histogram, the `le` suffixes. */
static int family_begin(struct expose_view_stream *s,
			const struct agg_view_family *f)
{
	const struct agg_view_set *set = &s->v->sets[f->set];

	s->fam_name_len = strlen(f->name);
	if (set->nlabels + 1 > s->name_cap) {
		size_t *o = realloc(s->name_off,
				    (set->nlabels + 1) * sizeof *o);
		if (!o)
			return -1;
		s->name_off = o;
		s->name_cap = set->nlabels + 1;
	}
	s->names.len = 0;
	for (size_t l = 0; l < set->nlabels; l++) {
		s->name_off[l] = s->names.len;
		expose_buf_putc(&s->names, l ? ',' : '{');
		expose_buf_puts(&s->names, set->labels[l]);
		expose_buf_append(&s->names, "=\"", 2);
	}
	s->name_off[set->nlabels] = s->names.len;
	if (expose_buf_failed(&s->names))
		return -1;
	if (!s->esc[f->set]) {
		s->esc[f->set] = calloc(set->nrows + 1, 1);
		if (!s->esc[f->set])
			return -1;
	}

	if (f->kind != AGG_HISTOGRAM)
		return 0;
	if (f->nb + 1 > s->le_cap) {
		char(*le)[LE_MAX] = realloc(s->le, (f->nb + 1) * sizeof *le);
		if (!le)
			return -1;
		s->le = le;
		size_t *lel = realloc(s->lel, (f->nb + 1) * sizeof *lel);
		if (!lel)
			return -1;
		s->lel = lel;
		s->le_cap = f->nb + 1;
	}
	s->le_max = 0;
	for (size_t i = 0; i <= f->nb; i++) {
		char num[EXPOSE_VALUE_MAX];
		size_t n = i < f->nb ? expose_format_float_go(f->bounds[i], num)
				     : (memcpy(num, "+Inf", 4), 4);
		char *p = s->le[i];
		/* `{` instead of `,` when the family has no other label */
		*p++ = set->nlabels ? ',' : '{';
		memcpy(p, "le=\"", 4);
		p += 4;
		memcpy(p, num, n);
		p += n;
		memcpy(p, "\"} ", 3);
		p += 3;
		s->lel[i] = (size_t)(p - s->le[i]);
		if (s->lel[i] > s->le_max)
			s->le_max = s->lel[i];
	}
	return 0;
}

/* Build row @r's `{l1="v1",...` block (just `{` without labels). @clean:
 * no value has a character to escape. */
static int build_labels(struct expose_view_stream *s,
			const struct agg_view_set *set,
			const struct agg_view_row *r, bool clean)
{
	struct expose_buf *b = &s->lab;
	/* the names, the values, a quote each; values at most doubled */
	if (expose_buf_reserve(b, s->names.len + 2 * (size_t)r->key_len +
					  set->nlabels + 1) != 0)
		return -1;
	char *p = b->data;
	const uint8_t *k = r->key;
	for (size_t l = 0; l < set->nlabels; l++) {
		p = put(p, s->names.data + s->name_off[l],
			s->name_off[l + 1] - s->name_off[l]);
		const char *v;
		size_t len;
		agg_key_next(&k, &v, &len);
		if (clean) {
			p = put(p, v, len);
		} else {
			b->len = (size_t)(p - b->data);
			expose_label_value(b, v, len);
			p = b->data + b->len;
		}
		*p++ = '"';
	}
	if (!set->nlabels)
		*p++ = '{';
	b->len = (size_t)(p - b->data);
	return 0;
}

/* Room for @need more bytes in @o: 1, or 0 if they do not fit (a reader's
 * buffer, or one already holding something), -1 on ENOMEM. */
static int sink_room(struct sink *o, size_t need)
{
	if (o->cap - o->len >= need)
		return 1;
	if (!o->grow || o->len)
		return 0;
	if (expose_buf_reserve(o->grow, need) != 0)
		return -1;
	o->data = o->grow->data;
	o->cap = o->grow->cap;
	return 1;
}

/*
 * Append row @row of family @f to @o, whole. Returns 1 if it was written,
 * 0 if it does not fit, -1 on ENOMEM.
 */
static int render_row(struct expose_view_stream *s,
		      const struct agg_view_family *f, size_t row,
		      struct sink *o)
{
	const struct agg_view_set *set = &s->v->sets[f->set];
	const struct agg_view_row *r = &set->rows[row];
	size_t nl = s->fam_name_len;
	uint8_t *esc = &s->esc[f->set][row];
	if (!*esc)
		*esc = row_needs_escape(r) ? 2 : 1;
	if (build_labels(s, set, r, *esc == 1) != 0)
		return -1;
	const char *lab = s->lab.data;
	size_t ll = s->lab.len;
	bool hist = f->kind == AGG_HISTOGRAM;
	/* every line: name, "_bucket", labels, le suffix or "} ", value,
	 * newline */
	size_t lines = hist ? f->nb + 3 : 1;
	size_t need = lines * (nl + 7 + ll + (hist ? s->le_max : 2) +
			       EXPOSE_VALUE_MAX + 1);
	int room = sink_room(o, need);
	if (room <= 0)
		return room;
	char *p = o->data + o->len;
	const uint64_t *c = &r->cells[f->cell];
	if (!hist) {
		double v;
		memcpy(&v, c, 8);
		p = put(p, f->name, nl);
		p = put(p, lab, ll);
		p = put(p, "} ", 2);
		p += expose_format_value(v, p);
		*p++ = '\n';
		o->len = (size_t)(p - o->data);
		return 1;
	}
	/* Cumulative, from one consistent copy: monotonic, and +Inf is the
	 * count. */
	uint64_t cum = 0;
	bool labels = set->nlabels != 0;
	for (size_t i = 0; i <= f->nb; i++) {
		cum += c[i];
		p = put(p, f->name, nl);
		p = put(p, "_bucket", 7);
		if (labels)
			p = put(p, lab, ll);
		p = put(p, s->le[i], s->lel[i]);
		p += expose_fmt_u64(cum, p);
		*p++ = '\n';
	}
	double sum;
	memcpy(&sum, &c[f->nb + 1], 8);
	p = put(p, f->name, nl);
	p = put(p, "_sum", 4);
	p = put(p, lab, ll);
	p = put(p, "} ", 2);
	p += expose_format_value(sum, p);
	*p++ = '\n';
	p = put(p, f->name, nl);
	p = put(p, "_count", 6);
	p = put(p, lab, ll);
	p = put(p, "} ", 2);
	p += expose_fmt_u64(c[f->nb + 2], p);
	*p++ = '\n';
	o->len = (size_t)(p - o->data);
	return 1;
}

/*
 * Render into @o as much as fits, whole lines only: HELP and TYPE as one
 * piece, rows whole. Returns 0 (stopped at the end, or at something that
 * did not fit) or -1 on ENOMEM.
 */
static int render(struct expose_view_stream *s, struct sink *o)
{
	const struct agg_view *v = s->v;

	while (!s->done) {
		if (s->fam == v->nfams) {
			s->done = true;
			break;
		}
		const struct agg_view_family *f = &v->fams[s->fam];
		if (!f->series) { /* no row has data: no HELP or TYPE */
			s->fam++;
			continue;
		}
		const struct agg_view_set *set = &v->sets[f->set];
		if (!s->started) {
			if (family_begin(s, f) != 0)
				return -1;
			struct expose_buf *h = &s->head;
			h->len = 0;
			expose_help(h, f->name, f->help);
			expose_type(h, f->name,
				    f->kind == AGG_HISTOGRAM ? "histogram"
				    : f->kind == AGG_GAUGE   ? "gauge"
							     : "counter");
			if (expose_buf_failed(h))
				return -1;
			int room = sink_room(o, h->len);
			if (room <= 0)
				return room;
			memcpy(o->data + o->len, h->data, h->len);
			o->len += h->len;
			s->started = true;
			s->row = 0;
		}
		for (; s->row < set->nrows; s->row++) {
			const struct agg_view_row *r = &set->rows[s->row];
			if (!((r->touched >> f->bit) & 1))
				continue;
			int rc = render_row(s, f, s->row, o);
			if (rc <= 0) /* full: the row waits for the next read */
				return rc;
		}
		s->fam++;
		s->started = false;
	}
	return 0;
}

long expose_view_stream_read(struct expose_view_stream *s, char *buf,
			     size_t max)
{
	if (max > LONG_MAX)
		max = LONG_MAX;
	if (s->over_off == s->over.len) {
		/* the usual case: whole rows straight into the reader's
		 * buffer, no copy of our own */
		struct sink o = {.data = buf, .cap = max};
		if (render(s, &o) != 0)
			return -1;
		if (o.len || s->done)
			return (long)o.len;
		/* the next row (or HELP) alone is larger than @max: render it
		 * into our buffer and hand it out @max bytes at a time */
		struct sink g = {.data = s->over.data, .cap = s->over.cap,
				 .grow = &s->over};
		if (render(s, &g) != 0)
			return -1;
		s->over.len = g.len;
		s->over_off = 0;
	}
	size_t n = s->over.len - s->over_off;
	if (n > max)
		n = max;
	memcpy(buf, s->over.data + s->over_off, n);
	s->over_off += n;
	return (long)n;
}

int expose_render_view(const struct agg_view *v, struct expose_buf *b)
{
	struct expose_view_stream *s = expose_view_stream_new(v);
	if (!s)
		return -1;
	long n;
	do {
		if (expose_buf_reserve(b, EXPOSE_CHUNK_DEFAULT) != 0) {
			n = -1;
			break;
		}
		n = expose_view_stream_read(s, b->data + b->len,
					    b->cap - b->len);
		if (n > 0)
			b->len += (size_t)n;
	} while (n > 0);
	expose_view_stream_free(s);
	return n < 0 ? -1 : 0;
}
