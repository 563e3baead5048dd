/*
 * Prometheus text exposition format 0.0.4: the output buffer, escaping and
 * number formatting.
 *
 * Speed matters here: a large scrape is millions of sample lines, so the
 * per-sample helpers reserve once and then copy, and integers (counters,
 * bucket counts) are formatted by hand rather than by snprintf.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "expose/expose.h"
#include "expose/expose_internal.h"

/* 2^53: below it every integer is exactly representable, so an integral
 * double prints as an integer without losing or inventing digits. */
#define EXACT_INT_LIMIT 9007199254740992.0

void expose_buf_init(struct expose_buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->oom = false;
}

void expose_buf_free(struct expose_buf *b)
{
	free(b->data);
	expose_buf_init(b);
}

int expose_buf_reserve(struct expose_buf *b, size_t n)
{
	if (b->oom)
		return -1;
	if (b->cap - b->len >= n)
		return 0;
	if (n > SIZE_MAX / 2 - b->len) {
		b->oom = true;
		return -1;
	}
	/* Doubling keeps appends amortised O(1); glibc turns large
	 * reallocs into mremap, so growing a big scrape does not copy. */
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < n)
		cap *= 2;
	char *p = realloc(b->data, cap);
	if (!p) {
		b->oom = true;
		return -1;
	}
	b->data = p;
	b->cap = cap;
	return 0;
}

void expose_buf_printf(struct expose_buf *b, const char *fmt, ...)
{
	va_list ap;
	char small[256];

	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(small)) {
		expose_buf_append(b, small, (size_t)n);
		return;
	}
	if (expose_buf_reserve(b, (size_t)n + 1) != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

const char *expose_buf_cstr(struct expose_buf *b)
{
	if (expose_buf_reserve(b, 1) != 0)
		return NULL;
	b->data[b->len] = '\0';
	return b->data;
}

const char expose_digit_pairs[201] = "00010203040506070809"
				    "10111213141516171819"
				    "20212223242526272829"
				    "30313233343536373839"
				    "40414243444546474849"
				    "50515253545556575859"
				    "60616263646566676869"
				    "70717273747576777879"
				    "80818283848586878889"
				    "90919293949596979899";

static const double pow10_table[] = {
	1e0, 1e1, 1e2,	1e3,  1e4,  1e5,  1e6,	1e7,
	1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
};

/*
 * Non-integral @a > 0 as the shortest fixed-point decimal m / 10^k that
 * reads back exactly, or 0 if none with k <= 15 and m < 2^53 exists.
 * Why this is exact: m and 10^k are exact doubles, so m / 10^k is the
 * correctly rounded quotient, which is what strtod returns for the decimal
 * text. The smallest k that works gives the fewest digits.
 */
static size_t fmt_fixed(double a, char *out)
{
	for (unsigned k = 1; k < sizeof(pow10_table) / sizeof(pow10_table[0]);
	     k++) {
		double p = pow10_table[k];
		double m = nearbyint(a * p);
		if (m >= EXACT_INT_LIMIT)
			return 0;
		if (m / p != a)
			continue;
		uint64_t mi = (uint64_t)m;
		uint64_t pi = (uint64_t)p;
		size_t n = expose_fmt_u64(mi / pi, out);
		out[n++] = '.';
		char frac[20];
		size_t fn = expose_fmt_u64(mi % pi, frac);
		/* zero-pad the fraction to k digits: 0.05 is m=5, k=2 */
		for (size_t z = fn; z < k; z++)
			out[n++] = '0';
		memcpy(out + n, frac, fn);
		return n + fn;
	}
	return 0;
}

size_t expose_format_value(double v, char *out)
{
	size_t n;

	if (isnan(v)) {
		memcpy(out, "NaN", 4);
		return 3;
	}
	if (isinf(v)) {
		memcpy(out, v > 0 ? "+Inf" : "-Inf", 5);
		return 4;
	}
	double a = fabs(v);
	char *p = out;
	if (a < EXACT_INT_LIMIT && a == trunc(a)) {
		if (v < 0)
			*p++ = '-';
		n = expose_fmt_u64((uint64_t)a, p);
		p[n] = '\0';
		return (size_t)(p - out) + n;
	}
	if (v < 0)
		*p++ = '-';
	n = fmt_fixed(a, p);
	if (n) {
		p[n] = '\0';
		return (size_t)(p - out) + n;
	}
	int r = snprintf(out, EXPOSE_VALUE_MAX, "%.17g", v);
	return r > 0 ? (size_t)r : 0;
}

/* @n digits of @dig (no point) with decimal exponent @exp, in %e's
 * shape, to @buf: "d.ddde-08". */
static void digits_e(char *buf, const char *dig, int n, int exp)
{
	char *p = buf;
	*p++ = dig[0];
	if (n > 1) {
		*p++ = '.';
		memcpy(p, dig + 1, (size_t)n - 1);
		p += n - 1;
	}
	sprintf(p, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
}

/* @dig (@n digits) one unit up (@dir 1) or down (-1) in its last place.
 * False when that changes the digit count (a carry out of the first, a
 * first digit gone to 0): such a number has fewer digits, and was tried
 * with them. */
static bool digits_step(char *dig, int n, int dir)
{
	for (int i = n - 1; i >= 0; i--) {
		if (dir > 0 && dig[i] != '9') {
			dig[i]++;
			return true;
		}
		if (dir < 0 && dig[i] != '0') {
			dig[i]--;
			return i > 0 || dig[0] != '0';
		}
		dig[i] = dir > 0 ? '0' : '9';
	}
	return false;
}

/*
 * The digits Go's strconv finds for @v (finite, > 0): of the decimals of
 * fewest significant digits that read back as @v, the nearest. At each
 * count the nearest decimal is the correctly rounded one (%e), unless it
 * does not read back: next to a power of two the doubles below are twice
 * as dense as those above, and the decimal one unit away on the other
 * side of @v may read back when the nearest does not (2^-24 is
 * 5.960464477539063e-08, not 5.9604644775390625e-08). No other decimal of
 * as many digits can. Writes the digits to @dig; returns their count, and
 * in *@exp the exponent of the first.
 */
static int shortest_digits(double v, char *dig, int *exp)
{
	char buf[EXPOSE_VALUE_MAX];
	for (int p = 1;; p++) {
		snprintf(buf, sizeof buf, "%.*e", p - 1, v);
		int n = 0;
		const char *q = buf;
		for (; *q != 'e'; q++)
			if (*q != '.')
				dig[n++] = *q;
		*exp = atoi(q + 1);
		double r = strtod(buf, NULL);
		if (r == v || p == 17)
			return n; /* 17 digits always read back */
		/* The neighbour on @v's side of the rounded decimal. */
		char alt[24];
		memcpy(alt, dig, (size_t)n);
		if (digits_step(alt, n, r < v ? 1 : -1)) {
			digits_e(buf, alt, n, *exp);
			if (strtod(buf, NULL) == v) {
				memcpy(dig, alt, (size_t)n);
				return n;
			}
		}
	}
}

size_t expose_format_float_go(double v, char *out)
{
	if (isnan(v) || isinf(v))
		return expose_format_value(v, out);
	if (v == 0) {
		const char *z = signbit(v) ? "-0" : "0";
		strcpy(out, z);
		return strlen(z);
	}
	char dig[24], *p = out;
	int exp;
	if (v < 0)
		*p++ = '-';
	int n = shortest_digits(fabs(v), dig, &exp);
	while (n > 1 && dig[n - 1] == '0')
		n--; /* %e pads: 1e+06 is one digit */
	/* strconv 'g' with shortest precision: exponent form when the
	 * exponent is < -4 or >= 6 (Go uses 6, not the digit count, when the
	 * precision is "shortest"), at least two exponent digits, no '.' for
	 * one digit; else plain decimals. */
	if (exp < -4 || exp >= 6) {
		digits_e(p, dig, n, exp);
		return strlen(out);
	}
	if (exp < 0) {
		*p++ = '0';
		*p++ = '.';
		for (int i = -1; i > exp; i--)
			*p++ = '0';
		memcpy(p, dig, (size_t)n);
		p += n;
	} else {
		for (int i = 0; i <= exp || i < n; i++) {
			if (i == exp + 1)
				*p++ = '.';
			*p++ = i < n ? dig[i] : '0';
		}
	}
	*p = '\0';
	return (size_t)(p - out);
}

/* Escape @len bytes of @s: backslash and newline always, '"' when
 * @quote. Copies runs without escapes in one memcpy: most label values and
 * help texts have none. */
static void append_escaped(struct expose_buf *b, const char *s, size_t len,
			   bool quote)
{
	size_t run = 0;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		const char *esc;
		if (c == '\\')
			esc = "\\\\";
		else if (c == '\n')
			esc = "\\n";
		else if (c == '"' && quote)
			esc = "\\\"";
		else
			continue;
		expose_buf_append(b, s + run, i - run);
		expose_buf_append(b, esc, 2);
		run = i + 1;
	}
	expose_buf_append(b, s + run, len - run);
}

void expose_help(struct expose_buf *b, const char *name, const char *help)
{
	expose_buf_append(b, "# HELP ", 7);
	expose_buf_puts(b, name);
	expose_buf_putc(b, ' ');
	append_escaped(b, help, strlen(help), false);
	expose_buf_putc(b, '\n');
}

void expose_type(struct expose_buf *b, const char *name, const char *type)
{
	expose_buf_append(b, "# TYPE ", 7);
	expose_buf_puts(b, name);
	expose_buf_putc(b, ' ');
	expose_buf_puts(b, type);
	expose_buf_putc(b, '\n');
}

void expose_label_value(struct expose_buf *b, const char *s, size_t len)
{
	append_escaped(b, s, len, true);
}

void expose_labels(struct expose_buf *b, const struct expose_label *labels,
		   size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i)
			expose_buf_putc(b, ',');
		expose_buf_puts(b, labels[i].name);
		expose_buf_append(b, "=\"", 2);
		expose_label_value(b, labels[i].value, strlen(labels[i].value));
		expose_buf_putc(b, '"');
	}
}

void expose_value(struct expose_buf *b, double v)
{
	if (expose_buf_reserve(b, EXPOSE_VALUE_MAX) != 0)
		return;
	b->len += expose_format_value(v, b->data + b->len);
}

void expose_sample(struct expose_buf *b, const char *name,
		   const struct expose_label *labels, size_t n, double v)
{
	expose_buf_puts(b, name);
	if (n) {
		expose_buf_putc(b, '{');
		expose_labels(b, labels, n);
		expose_buf_putc(b, '}');
	}
	expose_buf_putc(b, ' ');
	expose_value(b, v);
	expose_buf_putc(b, '\n');
}

void expose_sample_raw(struct expose_buf *b, const char *name, size_t name_len,
		       const char *suffix, const char *labels,
		       size_t labels_len, const char *extra, size_t extra_len,
		       double v)
{
	size_t suffix_len = suffix ? strlen(suffix) : 0;
	if (!labels)
		labels_len = 0;
	if (!extra)
		extra_len = 0;
	/* One reservation for the whole line, then plain copies: this is the
	 * per-sample path of a scrape. "{,} \n" is 5 bytes. */
	if (expose_buf_reserve(b, name_len + suffix_len + labels_len +
					  extra_len + 5 + EXPOSE_VALUE_MAX) !=
	    0)
		return;
	char *p = b->data + b->len;
	memcpy(p, name, name_len);
	p += name_len;
	if (suffix_len) {
		memcpy(p, suffix, suffix_len);
		p += suffix_len;
	}
	if (labels_len || extra_len) {
		*p++ = '{';
		if (labels_len) {
			memcpy(p, labels, labels_len);
			p += labels_len;
		}
		if (labels_len && extra_len)
			*p++ = ',';
		if (extra_len) {
			memcpy(p, extra, extra_len);
			p += extra_len;
		}
		*p++ = '}';
	}
	*p++ = ' ';
	p += expose_format_value(v, p);
	*p++ = '\n';
	b->len = (size_t)(p - b->data);
}
