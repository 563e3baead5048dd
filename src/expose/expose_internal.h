/*
 * expose_internal.h -- what text.c and istio.c share: the number
 * formatters of the per-sample path, inline so a renderer writing millions
 * of lines does not pay a call for each.
 */
#ifndef MIXD_EXPOSE_INTERNAL_H
#define MIXD_EXPOSE_INTERNAL_H

#include <stdint.h>
#include <string.h>

extern const char expose_digit_pairs[201];

/* Decimal digits of @v into @out (room for 20); returns the length. Two
 * digits per division: half the divisions of the naive loop. */
static inline size_t expose_fmt_u64(uint64_t v, char *out)
{
	char tmp[20];
	char *p = tmp + sizeof(tmp);

	if (v < 10) { /* bucket counts and small counters: the common case */
		*out = (char)('0' + v);
		return 1;
	}
	while (v >= 100) {
		unsigned i = (unsigned)(v % 100) * 2;
		v /= 100;
		*--p = expose_digit_pairs[i + 1];
		*--p = expose_digit_pairs[i];
	}
	if (v >= 10) {
		unsigned i = (unsigned)v * 2;
		*--p = expose_digit_pairs[i + 1];
		*--p = expose_digit_pairs[i];
	} else {
		*--p = (char)('0' + v);
	}
	size_t n = (size_t)(tmp + sizeof(tmp) - p);
	memcpy(out, p, n);
	return n;
}

#endif /* MIXD_EXPOSE_INTERNAL_H */
