/*
 * fuzz_pol_list -- listchecker lists built from arbitrary bytes, as a
 * provider's body is: byte 0 picks the entry type, byte 1 how many
 * overrides (0-3) follow as NUL-terminated strings, the rest is the body.
 * Oracles besides ASan: a refusal's reason is one terminated line of
 * printable text; a built list finds each of its own string entries; a
 * lookup answers 0 or 1 (-1 only for an IP list's non-address); an IPv4
 * address and its IPv4-mapped form get one answer, and an address's
 * bytes the same answer as its text.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/pol_list.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reason(const char *why, size_t cap)
{
	const char *end = memchr(why, 0, cap);
	if (!end || end == why)
		abort(); /* terminated and not empty */
	for (const char *p = why; p < end; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
			abort(); /* one printable line */
}

/* The list's answers for an address made of @b, in all its forms. */
static void check_address(const struct pol_list *l, const uint8_t *b, size_t n)
{
	uint8_t a[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	char text[INET6_ADDRSTRLEN];
	int r4, r16;

	memcpy(a + 12, b, n < 4 ? n : 4);
	r4 = pol_list_contains_ip(l, a + 12, 4);
	r16 = pol_list_contains_ip(l, a, 16);
	if (r4 < 0 || r4 > 1 || r4 != r16)
		abort();
	if (pol_list_type(l) == POL_LIST_IP_ADDRESSES) {
		inet_ntop(AF_INET, a + 12, text, sizeof text);
		if (pol_list_contains(l, text, strlen(text)) != r4)
			abort();
		if (n >= 16) {
			memcpy(a, b, 16);
			inet_ntop(AF_INET6, a, text, sizeof text);
			if (pol_list_contains(l, text, strlen(text)) !=
			    pol_list_contains_ip(l, a, 16))
				abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *ovr[3];
	size_t n_ovr = 0;
	char why[256];
	struct pol_list *l;

	if (size < 2)
		return 0;
	enum pol_list_type type = (enum pol_list_type)(data[0] % 4);
	size_t want = data[1] % 4;
	const char *p = (const char *)data + 2,
		   *end = (const char *)data + size;
	while (n_ovr < want) {
		const char *nul = memchr(p, 0, (size_t)(end - p));
		if (!nul)
			break;
		ovr[n_ovr++] = p;
		p = nul + 1;
	}
	size_t len = (size_t)(end - p);
	/* a copy of its own, so that ASan sees a read past the body */
	char *body = malloc(len ? len : 1);
	if (!body)
		return 0;
	memcpy(body, p, len);

	int rc = pol_list_build(type, body, len, ovr, n_ovr, &l, why,
				sizeof why);
	if (rc) {
		if (rc != -1 || l)
			abort();
		check_reason(why, sizeof why);
		free(body);
		return 0;
	}
	if (pol_list_type(l) != type)
		abort();
	/* every line and override is a probe; a string list finds each
	 * non-empty one */
	const char *q = body, *bend = body + len;
	while (q <= bend) {
		const char *nl = memchr(q, '\n', (size_t)(bend - q));
		const char *e = nl ? nl : bend;
		int r = pol_list_contains(l, q, (size_t)(e - q));
		if (r < -1 || r > 1 ||
		    (r < 0 && type != POL_LIST_IP_ADDRESSES &&
		     type != POL_LIST_REGEX))
			abort();
		if (type <= POL_LIST_CASE_INSENSITIVE_STRINGS && e > q &&
		    r != 1)
			abort();
		if (!nl)
			break;
		q = nl + 1;
	}
	for (size_t i = 0; i < n_ovr; i++) {
		int r = pol_list_contains(l, ovr[i], strlen(ovr[i]));
		if (type <= POL_LIST_CASE_INSENSITIVE_STRINGS && *ovr[i] &&
		    r != 1)
			abort();
	}
	check_address(l, data, size);
	if (size >= 16)
		check_address(l, data + size - 16, 16);
	pol_list_free(l);
	free(body);
	return 0;
}
