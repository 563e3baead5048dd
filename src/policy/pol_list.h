/*
 * pol_list.h -- the list of Mixer's `listchecker` adapter: an immutable set
 * of strings, case-insensitive strings, IP networks or Go regexps, built
 * from a list provider's body and the handler's `overrides`.
 *
 * Semantics are Mixer's (mixer/adapter/list):
 *  - STRINGS, CASE_INSENSITIVE_STRINGS and REGEX bodies are split on '\n';
 *    empty lines are skipped and nothing is trimmed (a trailing '\r' stays
 *    part of its entry, as in Mixer). CASE_INSENSITIVE_STRINGS compares
 *    after ASCII upper-casing both sides.
 *  - IP_ADDRESSES bodies are YAML, `whitelist: [entry, ...]` (the key is
 *    `whitelist` in blacklist mode too, matched case-insensitively, the
 *    last one winning; other keys are ignored; an empty body is an empty
 *    list; only the first document is read; aliases in the list are
 *    refused). An entry without
 *    '/' is a single address (/32, or /128 for IPv6: Mixer appended "/32"
 *    to IPv6 addresses too, making "2001:db8::1" the whole 2001:db8::/32;
 *    mixd does not widen a list so); otherwise a CIDR network. A probe is
 *    in the list when any network contains it; an IPv4 address and its
 *    IPv4-mapped IPv6 form are the same address. As in Go, IPv4 networks
 *    hold IPv4 addresses only and IPv6 networks the others only: "::/0"
 *    does not hold 10.0.0.1, "::ffff:0:0/96" holds every IPv4 address.
 *  - REGEX entries are Go regexps (expr_regex_compile()), matched
 *    unanchored: any entry that matches somewhere in the probe finds it.
 *  - Overrides join the provider's entries, with the same syntax per entry.
 *    An empty override is ignored by the string kinds; for REGEX it is
 *    Go's "" regexp, which matches everything (as in Mixer).
 *
 * A list is immutable once built: any number of threads read it without
 * locks; a refresh builds a new list and swaps a pointer.
 *
 * Bounds, since a provider's body is untrusted: a body of at most
 * POL_LIST_MAX_BODY bytes, at most POL_LIST_MAX_ENTRIES entries
 * (provider's and overrides together, before duplicates are dropped),
 * POL_LIST_MAX_REGEXES for REGEX. A list over them is refused, as a body
 * that does not parse is: the caller keeps the list it has.
 */
#ifndef MIXD_POLICY_LIST_H
#define MIXD_POLICY_LIST_H

#include <stddef.h>
#include <stdint.h>

/** Largest provider body taken (64 MiB): a list, not a download. */
#define POL_LIST_MAX_BODY (64u << 20)
/** Most entries of a list of strings or networks: a lookup stays a score
 *  of comparisons, and the list some tens of MiB. */
#define POL_LIST_MAX_ENTRIES 1000000u
/** Most entries of a REGEX list: each is a compiled automaton of some
 *  kilobytes, and every lookup runs them all in turn. */
#define POL_LIST_MAX_REGEXES 10000u

/** listchecker's entryType. */
enum pol_list_type {
	POL_LIST_STRINGS = 0,
	POL_LIST_CASE_INSENSITIVE_STRINGS = 1,
	POL_LIST_IP_ADDRESSES = 2,
	POL_LIST_REGEX = 3,
};

struct pol_list;

/**
 * Build a list of @type from a provider's @body (@len bytes, need not be
 * NUL-terminated; NULL and 0 for none) and @n_overrides NUL-terminated
 * @overrides. Returns 0 and the list in *@out, or -1 with a one-line
 * reason in @why (@why_len bytes) naming the bad entry, in Mixer's words
 * where it had some ("could not parse ip address override 10.0.0.300: ...",
 * "could not parse regex override (: ...", "could not parse list entry
 * x: invalid CIDR address: x/32", "could not unmarshal data from list
 * ..."), or -ENOMEM. Overrides are checked before the body, as Mixer
 * refused them with the config. Entries in a reason are cut at some 90
 * bytes and show bytes other than printable ASCII as \xNN.
 */
int pol_list_build(enum pol_list_type type, const char *body, size_t len,
		   const char *const *overrides, size_t n_overrides,
		   struct pol_list **out, char *why, size_t why_len);

/** Free @l; NULL is fine. */
void pol_list_free(struct pol_list *l);

/** The type @l was built with. */
enum pol_list_type pol_list_type(const struct pol_list *l);

/** Entries in @l (provider entries and overrides, duplicates counted once
 *  for string lists). */
size_t pol_list_size(const struct pol_list *l);

/**
 * Is the string @v (@len bytes, any bytes) in @l? 1 found, 0 not. For an
 * IP_ADDRESSES list @v is the address's text ("10.1.2.3", "::1"); -1 when
 * it is not an IP address (Mixer: "<v> is not a valid IP address"). For
 * a REGEX list, -1 when regexec() failed (out of memory).
 */
int pol_list_contains(const struct pol_list *l, const char *v, size_t len);

/**
 * Is the address @ip (@len = 4 or 16 bytes, network order) in @l? For an
 * IP_ADDRESSES list, as pol_list_contains() of its text; for the string
 * kinds, its text as Go's net.IP.String() writes it (dotted quad for IPv4
 * and IPv4-mapped addresses, RFC 5952 for IPv6) is looked up. -1 for a
 * length other than 4 or 16.
 */
int pol_list_contains_ip(const struct pol_list *l, const uint8_t *ip,
			 size_t len);

#endif /* MIXD_POLICY_LIST_H */
