/*
 * test_pol_list -- listchecker's lists as Mixer's list adapter built and
 * read them: provider bodies split on '\n' and kept byte for byte,
 * case-folding, IP networks with Go's IPv4/IPv6 rules, unanchored Go
 * regexps, the reasons a body or an override is refused, and the text an
 * IP_ADDRESS value is looked up as.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "policy/pol_list.h"

static char why[512];

/* A list of @type from @body and @n overrides; fails the test if it is
 * refused. */
static struct pol_list *build(enum pol_list_type type, const char *body,
			      const char *const *ovr, size_t n)
{
	struct pol_list *l = NULL;
	why[0] = 0;
	int rc = pol_list_build(type, body, body ? strlen(body) : 0, ovr, n, &l,
				why, sizeof why);
	if (rc)
		fail_msg("refused: %s", why);
	assert_non_null(l);
	assert_int_equal(pol_list_type(l), type);
	return l;
}

/* The reason @body and overrides are refused with; fails if they are
 * not. */
static const char *refusal(enum pol_list_type type, const char *body,
			   const char *const *ovr, size_t n)
{
	struct pol_list *l = (struct pol_list *)1;
	why[0] = 0;
	assert_int_equal(pol_list_build(type, body, body ? strlen(body) : 0,
					ovr, n, &l, why, sizeof why),
			 -1);
	assert_null(l);
	assert_non_null(memchr(why, 0, sizeof why));
	return why;
}

static int has(const struct pol_list *l, const char *v)
{
	return pol_list_contains(l, v, strlen(v));
}

static int has_ip(const struct pol_list *l, const char *text)
{
	uint8_t a[16];
	if (inet_pton(AF_INET, text, a) == 1)
		return pol_list_contains_ip(l, a, 4);
	assert_int_equal(inet_pton(AF_INET6, text, a), 1);
	return pol_list_contains_ip(l, a, 16);
}

/* ------------------------------------------------------------- strings */

static void test_strings_lines_kept_byte_for_byte(void **state)
{
	/* empty lines skipped, nothing trimmed: " b", "c\r", "d " stay */
	static const char body[] = "a\n b\n\n\nc\r\nd \na\n";
	const char *ovr[] = {"v1", "", "v2", "a"};
	struct pol_list *l = build(POL_LIST_STRINGS, body, ovr, 4);

	/* a, " b", "c\r", "d ", v1, v2: duplicates and "" count once/never */
	assert_int_equal(pol_list_size(l), 6);
	assert_int_equal(has(l, "a"), 1);
	assert_int_equal(has(l, " b"), 1);
	assert_int_equal(has(l, "b"), 0);
	assert_int_equal(has(l, "c\r"), 1);
	assert_int_equal(has(l, "c"), 0);
	assert_int_equal(has(l, "d "), 1);
	assert_int_equal(has(l, "d"), 0);
	assert_int_equal(has(l, "v1"), 1);
	assert_int_equal(has(l, "v2"), 1);
	assert_int_equal(has(l, "V1"), 0);
	assert_int_equal(has(l, ""), 0);
	assert_int_equal(has(l, "v"), 0);
	assert_int_equal(has(l, "v22"), 0);
	/* any bytes: a NUL inside a probe is part of it */
	assert_int_equal(pol_list_contains(l, "a\0", 2), 0);
	assert_int_equal(pol_list_contains(l, NULL, 0), 0);
	pol_list_free(l);
}

static void test_strings_body_with_nul_and_no_final_newline(void **state)
{
	static const char body[] = "x\0y\nlast";
	struct pol_list *l = NULL;
	assert_int_equal(pol_list_build(POL_LIST_STRINGS, body, sizeof body - 1,
					NULL, 0, &l, why, sizeof why),
			 0);
	assert_int_equal(pol_list_size(l), 2);
	assert_int_equal(pol_list_contains(l, "x\0y", 3), 1);
	assert_int_equal(has(l, "x"), 0);
	assert_int_equal(has(l, "last"), 1);
	pol_list_free(l);
}

static void test_strings_many_entries_all_found(void **state)
{
	/* enough entries that the search is a real one, in no order */
	enum { N = 5000 };
	char *body = malloc(N * 12);
	size_t o = 0;
	for (unsigned i = 0; i < N; i++)
		o += (size_t)sprintf(body + o, "k%u\n", (i * 7919u) % N);
	struct pol_list *l = build(POL_LIST_STRINGS, body, NULL, 0);
	assert_int_equal(pol_list_size(l), N);
	char k[16];
	for (unsigned i = 0; i < N; i++) {
		snprintf(k, sizeof k, "k%u", i);
		assert_int_equal(has(l, k), 1);
	}
	assert_int_equal(has(l, "k5000"), 0);
	assert_int_equal(has(l, "k"), 0);
	assert_int_equal(has(l, "j1"), 0);
	pol_list_free(l);
	free(body);
}

static void test_case_insensitive_ascii_upper_both_sides(void **state)
{
	const char *ovr[] = {"MiXeD"};
	struct pol_list *l = build(POL_LIST_CASE_INSENSITIVE_STRINGS,
				   "Foo\nbar\nFOO\nx-Api-Key\r\n", ovr, 1);
	assert_int_equal(pol_list_size(l), 4); /* Foo and FOO are one */
	assert_int_equal(has(l, "foo"), 1);
	assert_int_equal(has(l, "FOO"), 1);
	assert_int_equal(has(l, "fOo"), 1);
	assert_int_equal(has(l, "BAR"), 1);
	assert_int_equal(has(l, "mixed"), 1);
	assert_int_equal(has(l, "X-API-KEY\r"), 1);
	assert_int_equal(has(l, "x-api-key"), 0);
	assert_int_equal(has(l, "fo"), 0);
	assert_int_equal(has(l, "fooo"), 0);
	/* ASCII only: '@' (0x40) and '`' (0x60) are not each other's case */
	pol_list_free(l);
	l = build(POL_LIST_CASE_INSENSITIVE_STRINGS, "a@b\n\xc3\xa4", NULL, 0);
	assert_int_equal(has(l, "A@B"), 1);
	assert_int_equal(has(l, "a`b"), 0);
	assert_int_equal(has(l, "\xc3\xa4"), 1);
	assert_int_equal(has(l, "\xc3\x84"), 0); /* "Ä" is not "ä" here */
	pol_list_free(l);
	/* the strings kind is not folded */
	l = build(POL_LIST_STRINGS, "Foo", NULL, 0);
	assert_int_equal(has(l, "foo"), 0);
	assert_int_equal(has(l, "Foo"), 1);
	pol_list_free(l);
}

/* The samples' mixer-rule-deny-whitelist: overrides v1, v2. */
static void test_sample_deny_whitelist(void **state)
{
	const char *ovr[] = {"v1", "v2"};
	struct pol_list *l = build(POL_LIST_STRINGS, NULL, ovr, 2);
	assert_int_equal(pol_list_size(l), 2);
	assert_int_equal(has(l, "v1"), 1);
	assert_int_equal(has(l, "v2"), 1);
	assert_int_equal(has(l, "v3"), 0);
	pol_list_free(l);
}

/* ---------------------------------------------------------- IP networks */

/* The samples' mixer-rule-deny-ip: overrides ["10.57.0.0/16"]. */
static void test_sample_deny_ip(void **state)
{
	const char *ovr[] = {"10.57.0.0/16"};
	struct pol_list *l = build(POL_LIST_IP_ADDRESSES, NULL, ovr, 1);
	assert_int_equal(pol_list_size(l), 1);
	assert_int_equal(has(l, "10.57.1.2"), 1);
	assert_int_equal(has(l, "10.57.255.255"), 1);
	assert_int_equal(has(l, "10.58.0.0"), 0);
	assert_int_equal(has(l, "10.56.255.255"), 0);
	assert_int_equal(has(l, "0.0.0.0"), 0); /* ip("0.0.0.0") default */
	assert_int_equal(has_ip(l, "10.57.0.1"), 1);
	assert_int_equal(has_ip(l, "::ffff:10.57.0.1"), 1);
	assert_int_equal(has_ip(l, "10.1.0.1"), 0);
	pol_list_free(l);
}

static void test_ip_body_whitelist_and_overrides_join(void **state)
{
	const char *ovr[] = {"192.168.0.0/24"};
	struct pol_list *l = build(POL_LIST_IP_ADDRESSES,
				   "whitelist:\n"
				   "- 10.0.0.1\n"
				   "- \"172.16.0.0/12\"\n"
				   "- '2001:db8::/32'\n"
				   "- fe80::1\n"
				   "- 10.0.0.1\n",
				   ovr, 1);
	assert_int_equal(pol_list_size(l), 6); /* Mixer counts duplicates */
	assert_int_equal(has(l, "10.0.0.1"), 1);
	assert_int_equal(has(l, "10.0.0.2"), 0);
	assert_int_equal(has(l, "172.31.255.255"), 1);
	assert_int_equal(has(l, "172.32.0.0"), 0);
	assert_int_equal(has(l, "2001:db8:ffff::1"), 1);
	assert_int_equal(has(l, "2001:db9::"), 0);
	assert_int_equal(has(l, "fe80::1"), 1);
	assert_int_equal(has(l, "FE80:0:0:0:0:0:0:1"), 1);
	/* a single IPv6 address is /128 (Mixer's "/32" would take fe80::/32) */
	assert_int_equal(has(l, "fe80::2"), 0);
	assert_int_equal(has(l, "192.168.0.255"), 1);
	assert_int_equal(has(l, "192.168.1.0"), 0);
	pol_list_free(l);
}

static void test_ip_prefix_edges(void **state)
{
	struct pol_list *l;

	/* /0 of IPv4 holds every IPv4 address, IPv4-mapped included, and
	 * no IPv6 one; ::/0 the reverse (Go's IPNet.Contains) */
	l = build(POL_LIST_IP_ADDRESSES, "whitelist: [0.0.0.0/0]", NULL, 0);
	assert_int_equal(has(l, "0.0.0.0"), 1);
	assert_int_equal(has(l, "255.255.255.255"), 1);
	assert_int_equal(has(l, "::ffff:1.2.3.4"), 1);
	assert_int_equal(has(l, "::1"), 0);
	assert_int_equal(has(l, "::"), 0);
	pol_list_free(l);
	l = build(POL_LIST_IP_ADDRESSES, "whitelist: ['::/0']", NULL, 0);
	assert_int_equal(has(l, "::1"), 1);
	assert_int_equal(has(l, "ffff::"), 1);
	assert_int_equal(has(l, "::"), 1);
	assert_int_equal(has(l, "1.2.3.4"), 0);
	assert_int_equal(has(l, "::ffff:1.2.3.4"), 0);
	assert_int_equal(has(l, "::1.2.3.4"), 1); /* IPv4-compatible is v6 */
	pol_list_free(l);

	/* /32 and /31 at the edges of their ranges */
	l = build(POL_LIST_IP_ADDRESSES,
		  "whitelist: [1.2.3.4/32, 10.0.0.2/31, 9.9.9.9/8]", NULL, 0);
	assert_int_equal(has(l, "1.2.3.4"), 1);
	assert_int_equal(has(l, "1.2.3.5"), 0);
	assert_int_equal(has(l, "1.2.3.3"), 0);
	assert_int_equal(has(l, "10.0.0.2"), 1);
	assert_int_equal(has(l, "10.0.0.3"), 1);
	assert_int_equal(has(l, "10.0.0.1"), 0);
	assert_int_equal(has(l, "10.0.0.4"), 0);
	/* a network's host bits are masked off, as ParseCIDR did */
	assert_int_equal(has(l, "9.0.0.0"), 1);
	assert_int_equal(has(l, "9.255.255.255"), 1);
	assert_int_equal(has(l, "8.255.255.255"), 0);
	pol_list_free(l);

	/* IPv6 /128 and /127, /1 */
	l = build(POL_LIST_IP_ADDRESSES,
		  "whitelist: ['2001:db8::1/128', '2001:db8::4/127', "
		  "'8000::/1']",
		  NULL, 0);
	assert_int_equal(has(l, "2001:db8::1"), 1);
	assert_int_equal(has(l, "2001:db8::"), 0);
	assert_int_equal(has(l, "2001:db8::2"), 0);
	assert_int_equal(has(l, "2001:db8::4"), 1);
	assert_int_equal(has(l, "2001:db8::5"), 1);
	assert_int_equal(has(l, "2001:db8::6"), 0);
	assert_int_equal(has(l, "ffff::1"), 1);
	assert_int_equal(has(l, "7fff::1"), 0);
	pol_list_free(l);

	/* IPv4-mapped networks: with the whole ::ffff: prefix kept (/96 or
	 * more) an IPv4 network, else an IPv6 one holding no IPv4 address */
	l = build(POL_LIST_IP_ADDRESSES,
		  "whitelist: ['::ffff:10.0.0.0/104', '::ffff:192.168.1.1']",
		  NULL, 0);
	assert_int_equal(has(l, "10.200.0.1"), 1);
	assert_int_equal(has(l, "::ffff:10.200.0.1"), 1);
	assert_int_equal(has(l, "11.0.0.1"), 0);
	assert_int_equal(has(l, "192.168.1.1"), 1);
	assert_int_equal(has(l, "192.168.1.2"), 0);
	pol_list_free(l);
	l = build(POL_LIST_IP_ADDRESSES, "whitelist: ['::ffff:0:0/96']", NULL,
		  0);
	assert_int_equal(has(l, "1.2.3.4"), 1);
	assert_int_equal(has(l, "255.255.255.255"), 1);
	assert_int_equal(has(l, "::1"), 0);
	pol_list_free(l);
	l = build(POL_LIST_IP_ADDRESSES,
		  "whitelist: ['::ffff:0:0/95', '::/80']", NULL, 0);
	assert_int_equal(has(l, "1.2.3.4"), 0);
	assert_int_equal(has(l, "::ffff:1.2.3.4"), 0);
	assert_int_equal(has(l, "::fffe:1.2.3.4"), 1);
	assert_int_equal(has(l, "::5"), 1);
	pol_list_free(l);

	/* a leading-zero prefix length is decimal, as Go's dtoi read it */
	l = build(POL_LIST_IP_ADDRESSES, "whitelist: [10.0.0.0/08]", NULL, 0);
	assert_int_equal(has(l, "10.9.9.9"), 1);
	assert_int_equal(has(l, "11.0.0.0"), 0);
	pol_list_free(l);
}

static void test_ip_probe_that_is_not_an_address(void **state)
{
	struct pol_list *l = build(POL_LIST_IP_ADDRESSES,
				   "whitelist: [0.0.0.0/0, '::/0']", NULL, 0);
	assert_int_equal(has(l, "abc"), -1);
	assert_int_equal(has(l, ""), -1);
	assert_int_equal(pol_list_contains(l, NULL, 0), -1);
	assert_int_equal(has(l, "10.0.0.1/8"), -1);
	assert_int_equal(has(l, " 10.0.0.1"), -1);
	assert_int_equal(has(l, "10.0.0.1 "), -1);
	assert_int_equal(has(l, "10.0.0"), -1);
	assert_int_equal(has(l, "10.0.0.256"), -1);
	assert_int_equal(has(l, "fe80::1%eth0"), -1);
	assert_int_equal(pol_list_contains(l, "10.0.0.1\0", 9), -1);
	char longer[100];
	memset(longer, '1', sizeof longer);
	assert_int_equal(pol_list_contains(l, longer, sizeof longer), -1);
	uint8_t a[16] = {0};
	assert_int_equal(pol_list_contains_ip(l, a, 5), -1);
	assert_int_equal(pol_list_contains_ip(l, a, 0), -1);
	assert_int_equal(pol_list_contains_ip(l, a, 4), 1);
	assert_int_equal(pol_list_contains_ip(l, a, 16), 1);
	pol_list_free(l);
}

static void test_ip_yaml_forms(void **state)
{
	struct pol_list *l;

	/* nothing, a null document, a null whitelist: empty lists */
	l = build(POL_LIST_IP_ADDRESSES, "", NULL, 0);
	assert_int_equal(pol_list_size(l), 0);
	assert_int_equal(has(l, "1.2.3.4"), 0);
	pol_list_free(l);
	l = build(POL_LIST_IP_ADDRESSES, "~\n", NULL, 0);
	assert_int_equal(pol_list_size(l), 0);
	pol_list_free(l);
	l = build(POL_LIST_IP_ADDRESSES, "whitelist:\nother: 1\n", NULL, 0);
	assert_int_equal(pol_list_size(l), 0);
	pol_list_free(l);
	l = build(POL_LIST_IP_ADDRESSES, "# just a comment\n", NULL, 0);
	assert_int_equal(pol_list_size(l), 0);
	pol_list_free(l);

	/* the key case-insensitively (Go's JSON field match); other keys,
	 * however nested, ignored; the last whitelist wins, and an entry
	 * that did not parse in an earlier one is no error */
	l = build(POL_LIST_IP_ADDRESSES,
		  "blacklist: [1.1.1.1]\n"
		  "WhiteList: [bogus, 2.2.2.2]\n"
		  "meta: {a: [1, {b: c}], d: &x e, f: *x}\n"
		  "? [complex, key]\n"
		  ": value\n"
		  "whitelist: [3.3.3.3]\n",
		  NULL, 0);
	assert_int_equal(pol_list_size(l), 1);
	assert_int_equal(has(l, "1.1.1.1"), 0);
	assert_int_equal(has(l, "2.2.2.2"), 0);
	assert_int_equal(has(l, "3.3.3.3"), 1);
	pol_list_free(l);

	/* only the first document is read */
	l = build(POL_LIST_IP_ADDRESSES,
		  "---\nwhitelist: [4.4.4.4]\n---\n[unclosed\n", NULL, 0);
	assert_int_equal(has(l, "4.4.4.4"), 1);
	pol_list_free(l);

	/* the body need not end in a NUL */
	static const char body[] = "whitelist: [5.5.5.5]XXXX";
	assert_int_equal(pol_list_build(POL_LIST_IP_ADDRESSES, body,
					sizeof body - 5, NULL, 0, &l, why,
					sizeof why),
			 0);
	assert_int_equal(has(l, "5.5.5.5"), 1);
	pol_list_free(l);
}

static void test_ip_entries_refused_in_mixers_words(void **state)
{
	const char *ovr[2];

	ovr[0] = "10.0.0.300";
	assert_string_equal(refusal(POL_LIST_IP_ADDRESSES, NULL, ovr, 1),
			    "could not parse ip address override 10.0.0.300: "
			    "invalid CIDR address: 10.0.0.300/32");
	ovr[0] = "10.0.0.0/33";
	assert_string_equal(refusal(POL_LIST_IP_ADDRESSES, NULL, ovr, 1),
			    "could not parse ip address override 10.0.0.0/33: "
			    "invalid CIDR address: 10.0.0.0/33");
	ovr[0] = "";
	assert_string_equal(refusal(POL_LIST_IP_ADDRESSES, NULL, ovr, 1),
			    "could not parse ip address override : "
			    "invalid CIDR address: /32");
	/* overrides are refused first, as Mixer refused the config */
	ovr[0] = "1.2.3.4";
	ovr[1] = "::1/129";
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES, "whitelist: [bad]", ovr, 2),
		"could not parse ip address override ::1/129: "
		"invalid CIDR address: ::1/129");

	assert_string_equal(refusal(POL_LIST_IP_ADDRESSES,
				    "whitelist: [1.1.1.1, 10.0.0.300]", NULL,
				    0),
			    "could not parse list entry 10.0.0.300: "
			    "invalid CIDR address: 10.0.0.300/32");
	static const char *const bad[] = {
		"1.2.3.4/",	"1.2.3.4/ 8", "1.2.3.4/8/9", "1.2.3.4/-1",
		"1.2.3.4/+8",	"/8",	      "01.2.3.4",    "1.2.3",
		"fe80::1%eth0", "::1/1x",     " 1.2.3.4",    "1.2.3.4/032x",
	};
	char body[96], want[256];
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		snprintf(body, sizeof body, "whitelist: ['%s']", bad[i]);
		snprintf(want, sizeof want,
			 "could not parse list entry %s: invalid CIDR "
			 "address: %s%s",
			 bad[i], bad[i], strchr(bad[i], '/') ? "" : "/32");
		assert_string_equal(
			refusal(POL_LIST_IP_ADDRESSES, body, NULL, 0), want);
	}
	/* a null entry is Go's "" */
	assert_string_equal(refusal(POL_LIST_IP_ADDRESSES,
				    "whitelist: [1.1.1.1, ~]", NULL, 0),
			    "could not parse list entry : invalid CIDR "
			    "address: /32");
}

static void test_ip_entry_in_reason_escaped_and_cut(void **state)
{
	char body[400];
	char ent[300];
	memset(ent, 'a', sizeof ent - 1);
	ent[sizeof ent - 1] = 0;
	snprintf(body, sizeof body, "whitelist: [\"\\e1\\t%s\"]", ent);
	const char *r = refusal(POL_LIST_IP_ADDRESSES, body, NULL, 0);
	assert_true(
		!strncmp(r, "could not parse list entry \\x1b1\\x09aaa", 39));
	assert_non_null(strstr(r, "...: invalid CIDR address: \\x1b1"));
	assert_true(strlen(r) < 250);
	for (const char *p = r; *p; p++)
		assert_true(*p >= 0x20 && *p < 0x7f);
}

static void test_ip_malformed_yaml_refused(void **state)
{
	/* syntax errors: Mixer's chain of messages, go-yaml's numbering */
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES, "whitelist: [10.0.0.1\n", NULL,
			0),
		"could not unmarshal data from list error converting YAML to "
		"JSON: yaml: line 1: did not find expected ',' or ']'");
	/* a parser error: the 0-based line of libyaml's mark, unlike a
	 * scanner error's (go-yaml v2's numbering, kept) */
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES,
			"whitelist:\n  - 1.1.1.1\n - 2.2.2.2\n", NULL, 0),
		"could not unmarshal data from list error converting YAML to "
		"JSON: yaml: line 2: did not find expected key");
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES, "a: b\n  c: d\n", NULL, 0),
		"could not unmarshal data from list error converting YAML to "
		"JSON: yaml: line 2: mapping values are not allowed in this "
		"context");
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES, "whitelist: \"abc\n", NULL, 0),
		"could not unmarshal data from list error converting YAML to "
		"JSON: yaml: line 2: found unexpected end of stream");
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES, "a: *undefined\n\t", NULL, 0),
		"could not unmarshal data from list error "
		"converting YAML to JSON: yaml: line 2: found "
		"character that cannot start any token");
	/* not UTF-8 */
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES, "whitelist: [\xff]", NULL, 0),
		"could not unmarshal data from list error converting YAML to "
		"JSON: yaml: invalid leading UTF-8 octet");

	/* YAML, but not the shape */
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES, "- 1.1.1.1\n", NULL, 0),
		"could not unmarshal data from list: line 1: the list is a "
		"list, expected a mapping with a whitelist");
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES, "10.0.0.1", NULL, 0),
		"could not unmarshal data from list: line 1: the list is a "
		"scalar, expected a mapping with a whitelist");
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES, "whitelist: 10.0.0.1\n", NULL,
			0),
		"could not unmarshal data from list: line 1: whitelist is a "
		"scalar, expected a list of strings");
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES, "whitelist: {a: b}\n", NULL, 0),
		"could not unmarshal data from list: line 1: whitelist is a "
		"mapping, expected a list of strings");
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES,
			"whitelist:\n- 1.1.1.1\n- [2.2.2.2]\n", NULL, 0),
		"could not unmarshal data from list: line 3: an entry of "
		"whitelist is a list, expected a string");
	assert_string_equal(
		refusal(POL_LIST_IP_ADDRESSES,
			"x: &a 1.1.1.1\nwhitelist: [*a]\n", NULL, 0),
		"could not unmarshal data from list: line 2: an entry of "
		"whitelist is an alias (not supported), expected a string");
}

/* -------------------------------------------------------------- regexps */

static void test_regex_unanchored_like_go(void **state)
{
	const char *ovr[] = {"^exact$"};
	struct pol_list *l =
		build(POL_LIST_REGEX, "ab+c\n\nx[0-9]{2}y\n", ovr, 1);
	assert_int_equal(pol_list_size(l), 3);
	assert_int_equal(has(l, "abc"), 1);
	assert_int_equal(has(l, "zzabbbbczz"), 1); /* a substring matches */
	assert_int_equal(has(l, "ac"), 0);
	assert_int_equal(has(l, "-x42y-"), 1);
	assert_int_equal(has(l, "x4y"), 0);
	assert_int_equal(has(l, "exact"), 1);
	assert_int_equal(has(l, "inexact"), 0);
	assert_int_equal(has(l, "exactly"), 0);
	/* the probe is counted: bytes after its length are not read */
	assert_int_equal(pol_list_contains(l, "abcdef", 2), 0);
	/* long probes take the heap copy */
	char big[1000];
	memset(big, 'q', sizeof big);
	memcpy(big + 900, "abc", 3);
	assert_int_equal(pol_list_contains(l, big, sizeof big), 1);
	assert_int_equal(pol_list_contains(l, big, 900), 0);
	pol_list_free(l);

	/* a trailing '\r' stays part of the pattern, as in Mixer */
	l = build(POL_LIST_REGEX, "^v1\r\n", NULL, 0);
	assert_int_equal(has(l, "v1"), 0);
	assert_int_equal(has(l, "v1\r"), 1);
	pol_list_free(l);

	/* '.' stops at a newline, as Go's does without (?s) */
	l = build(POL_LIST_REGEX, "a.b", NULL, 0);
	assert_int_equal(has(l, "a-b"), 1);
	assert_int_equal(has(l, "a\nb"), 0);
	pol_list_free(l);

	/* an empty override is Go's "" regexp: it matches everything */
	const char *empty[] = {""};
	l = build(POL_LIST_REGEX, NULL, empty, 1);
	assert_int_equal(pol_list_size(l), 1);
	assert_int_equal(has(l, "anything"), 1);
	assert_int_equal(has(l, ""), 1);
	assert_int_equal(pol_list_contains(l, NULL, 0), 1);
	pol_list_free(l);
	l = build(POL_LIST_REGEX, "\n\n", NULL, 0);
	assert_int_equal(pol_list_size(l), 0);
	assert_int_equal(has(l, "anything"), 0);
	pol_list_free(l);
}

static void test_regex_refused_with_reason(void **state)
{
	const char *ovr[] = {"\\d+"};
	const char *r = refusal(POL_LIST_REGEX, NULL, ovr, 1);
	assert_true(!strncmp(r, "could not parse regex override \\d+: ", 34));
	assert_non_null(strstr(r, "[0-9] for \\d"));

	ovr[0] = "(";
	r = refusal(POL_LIST_REGEX, "fine", ovr, 1);
	assert_true(!strncmp(r, "could not parse regex override (: ", 34));

	r = refusal(POL_LIST_REGEX, "ok\n[a-\nnever", NULL, 0);
	assert_true(!strncmp(r, "could not parse regex [a-: ", 27));
	r = refusal(POL_LIST_REGEX, "a**", NULL, 0);
	assert_string_equal(r, "could not parse regex a**: invalid nested "
			       "repetition operator");

	static const char nul[] = "a\0b\n";
	struct pol_list *l = (struct pol_list *)1;
	assert_int_equal(pol_list_build(POL_LIST_REGEX, nul, sizeof nul - 1,
					NULL, 0, &l, why, sizeof why),
			 -1);
	assert_null(l);
	assert_string_equal(
		why, "could not parse regex a\\x00b: NUL byte in pattern");
}

/* ------------------------------------------------- IP values as strings */

static void test_contains_ip_renders_as_go(void **state)
{
	struct pol_list *l = build(POL_LIST_STRINGS,
				   "10.0.0.1\n"
				   "::ffff:10.0.0.2\n"
				   "2001:db8::1\n"
				   "::102:304\n"
				   "::1.2.3.5\n"
				   "fe80::1:0:0:1\n",
				   NULL, 0);
	uint8_t a[16];

	assert_int_equal(has_ip(l, "10.0.0.1"), 1);
	/* IPv4-mapped 16 bytes print as the dotted quad */
	assert_int_equal(inet_pton(AF_INET6, "::ffff:10.0.0.1", a), 1);
	assert_int_equal(pol_list_contains_ip(l, a, 16), 1);
	/* so the entry "::ffff:10.0.0.2" matches no address */
	assert_int_equal(has_ip(l, "10.0.0.2"), 0);
	assert_int_equal(has_ip(l, "::ffff:10.0.0.2"), 0);
	/* RFC 5952: lower case, zeros compressed */
	assert_int_equal(has_ip(l, "2001:0DB8:0:0:0:0:0:1"), 1);
	/* IPv4-compatible: hex groups, not inet_ntop's dotted tail */
	assert_int_equal(has_ip(l, "::1.2.3.4"), 1);
	assert_int_equal(has_ip(l, "::1.2.3.5"), 0);
	/* the first longest zero run is the one compressed */
	assert_int_equal(has_ip(l, "fe80:0:0:0:1:0:0:1"), 1);
	assert_int_equal(pol_list_contains_ip(l, a, 15), -1);
	pol_list_free(l);

	l = build(POL_LIST_CASE_INSENSITIVE_STRINGS, "2001:DB8::A", NULL, 0);
	assert_int_equal(has_ip(l, "2001:db8::a"), 1);
	pol_list_free(l);

	/* the text of an address, for a regexp */
	l = build(POL_LIST_REGEX, "^10\\.57\\.", NULL, 0);
	assert_int_equal(has_ip(l, "10.57.3.4"), 1);
	assert_int_equal(has_ip(l, "::ffff:10.57.3.4"), 1);
	assert_int_equal(has_ip(l, "10.58.3.4"), 0);
	pol_list_free(l);
}

/* ---------------------------------------------------------------- limits */

static void test_limits_refused_with_reason(void **state)
{
	struct pol_list *l = NULL;

	/* a body over 64 MiB */
	size_t big = POL_LIST_MAX_BODY + 1;
	char *body = malloc(big);
	assert_non_null(body);
	memset(body, 'a', big);
	assert_int_equal(pol_list_build(POL_LIST_STRINGS, body, big, NULL, 0,
					&l, why, sizeof why),
			 -1);
	assert_null(l);
	assert_string_equal(why, "list body of 67108865 bytes is larger than "
				 "the 67108864 bytes mixd takes");
	/* exactly 64 MiB is taken */
	assert_int_equal(pol_list_build(POL_LIST_STRINGS, body, big - 1, NULL,
					0, &l, why, sizeof why),
			 0);
	assert_int_equal(pol_list_size(l), 1);
	pol_list_free(l);

	/* 1,000,000 entries taken, one more refused (duplicates count) */
	for (size_t i = 0; i < 2 * POL_LIST_MAX_ENTRIES; i += 2)
		memcpy(body + i, "a\n", 2);
	assert_int_equal(pol_list_build(POL_LIST_STRINGS, body,
					2 * POL_LIST_MAX_ENTRIES, NULL, 0, &l,
					why, sizeof why),
			 0);
	assert_int_equal(pol_list_size(l), 1);
	pol_list_free(l);
	const char *ovr[] = {"b"};
	assert_int_equal(pol_list_build(POL_LIST_STRINGS, body,
					2 * POL_LIST_MAX_ENTRIES, ovr, 1, &l,
					why, sizeof why),
			 -1);
	assert_string_equal(why, "list has more than the 1000000 entries mixd "
				 "takes for its type");

	/* IP networks: the body's and the overrides' together */
	const char **many = malloc(POL_LIST_MAX_ENTRIES * sizeof *many);
	for (size_t i = 0; i < POL_LIST_MAX_ENTRIES; i++)
		many[i] = "1.1.1.1";
	assert_int_equal(pol_list_build(POL_LIST_IP_ADDRESSES, NULL, 0, many,
					POL_LIST_MAX_ENTRIES, &l, why,
					sizeof why),
			 0);
	assert_int_equal(pol_list_size(l), POL_LIST_MAX_ENTRIES);
	assert_int_equal(has(l, "1.1.1.1"), 1);
	pol_list_free(l);
	static const char one[] = "whitelist: [2.2.2.2]";
	assert_int_equal(
		pol_list_build(POL_LIST_IP_ADDRESSES, one, sizeof one - 1, many,
			       POL_LIST_MAX_ENTRIES, &l, why, sizeof why),
		-1);
	assert_string_equal(why, "list has more than the 1000000 entries mixd "
				 "takes for its type");
	free(many);

	/* regexps: 10,000 */
	for (size_t i = 0; i < 2 * (POL_LIST_MAX_REGEXES + 1); i += 2)
		memcpy(body + i, "a\n", 2);
	assert_int_equal(pol_list_build(POL_LIST_REGEX, body,
					2 * (POL_LIST_MAX_REGEXES + 1), NULL, 0,
					&l, why, sizeof why),
			 -1);
	assert_string_equal(why, "list has more than the 10000 entries mixd "
				 "takes for its type");
	free(body);
}

static void test_build_reason_buffer_optional(void **state)
{
	struct pol_list *l = (struct pol_list *)1;
	const char *ovr[] = {"bad"};
	assert_int_equal(pol_list_build(POL_LIST_IP_ADDRESSES, NULL, 0, ovr, 1,
					&l, NULL, 0),
			 -1);
	assert_null(l);
	/* a short buffer gets a cut, terminated reason */
	char small[8];
	assert_int_equal(pol_list_build(POL_LIST_IP_ADDRESSES, NULL, 0, ovr, 1,
					&l, small, sizeof small),
			 -1);
	assert_string_equal(small, "could n");
	assert_int_equal(pol_list_build((enum pol_list_type)9, NULL, 0, NULL, 0,
					&l, why, sizeof why),
			 -1);
	assert_string_equal(why, "unknown list entry type 9");
	pol_list_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strings_lines_kept_byte_for_byte),
		cmocka_unit_test(
			test_strings_body_with_nul_and_no_final_newline),
		cmocka_unit_test(test_strings_many_entries_all_found),
		cmocka_unit_test(test_case_insensitive_ascii_upper_both_sides),
		cmocka_unit_test(test_sample_deny_whitelist),
		cmocka_unit_test(test_sample_deny_ip),
		cmocka_unit_test(test_ip_body_whitelist_and_overrides_join),
		cmocka_unit_test(test_ip_prefix_edges),
		cmocka_unit_test(test_ip_probe_that_is_not_an_address),
		cmocka_unit_test(test_ip_yaml_forms),
		cmocka_unit_test(test_ip_entries_refused_in_mixers_words),
		cmocka_unit_test(test_ip_entry_in_reason_escaped_and_cut),
		cmocka_unit_test(test_ip_malformed_yaml_refused),
		cmocka_unit_test(test_regex_unanchored_like_go),
		cmocka_unit_test(test_regex_refused_with_reason),
		cmocka_unit_test(test_contains_ip_renders_as_go),
		cmocka_unit_test(test_limits_refused_with_reason),
		cmocka_unit_test(test_build_reason_buffer_optional),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
