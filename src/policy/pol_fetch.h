/*
 * pol_fetch.h -- a listchecker's list provider: its providerUrl fetched
 * with libcurl on a thread of its own, every refreshInterval, as Mixer's
 * list adapter did.
 *
 *  - Each successful fetch (HTTP 200, a body that builds a list) installs
 *    a new list, the handler's overrides joined. A fetch that fails (no
 *    answer, another status, a body the list refuses, a body over
 *    POL_LIST_MAX_BODY) keeps the list in force and is said on stderr
 *    once, until a fetch succeeds again.
 *  - A list is dropped once ttl has passed since the last success: a
 *    check then fails INTERNAL with the last fetch's error, as Mixer's
 *    did, until a fetch succeeds. The same before the first success: the
 *    first fetch is made at once, on the thread, so loading a config never
 *    waits for a provider.
 *  - A check never waits for a fetch: it reads the list in force under a
 *    read lock that a new list's installation holds for a pointer swap.
 */
#ifndef MIXD_POLICY_FETCH_H
#define MIXD_POLICY_FETCH_H

#include <stddef.h>

#include "config/config.h"
#include "policy/pol_list.h"

struct pol_provider;

/**
 * Start fetching for listchecker @h (which has a providerUrl; @h must
 * outlive the provider). NULL when out of memory or no thread could be
 * made.
 */
struct pol_provider *pol_provider_start(const struct cfg_handler *h);

/**
 * The list in force, held until pol_provider_release(); NULL when there
 * is none, with the reason (the last fetch's error) in @why.
 */
const struct pol_list *pol_provider_acquire(struct pol_provider *p, char *why,
					    size_t why_len);

/** Let go of what pol_provider_acquire() gave (or did not). */
void pol_provider_release(struct pol_provider *p);

/** Stop the thread (a fetch in progress is cut short) and free @p; NULL
 *  is fine. */
void pol_provider_stop(struct pol_provider *p);

#endif /* MIXD_POLICY_FETCH_H */
