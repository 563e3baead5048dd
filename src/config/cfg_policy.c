/*
 * cfg_policy.c -- the policy handlers' parameters, checked as Mixer's
 * adapters checked them when a handler was built (mixer/adapter/list,
 * denier, memquota: Validate()), so that a config Mixer refused is refused
 * here too, with the field named. The list entries' own syntax (an IP
 * network, a regexp) is the policy module's to check: it builds the list.
 */
#include <stdio.h>
#include <string.h>

#include "config/config_internal.h"

#define SECOND INT64_C(1000000000)

/* A URL with a scheme and a host, as Go's url.Parse saw it. */
static bool url_has_scheme_and_host(const char *u)
{
	const char *colon = strchr(u, ':');

	if (!colon || colon == u || strncmp(colon, "://", 3))
		return false;
	for (const char *p = u; p < colon; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (p > u && ((*p >= '0' && *p <= '9') || strchr("+-.", *p)))))
			return false;
	const char *host = colon + 3;
	return *host && *host != '/' && *host != '?' && *host != '#';
}

static void check_listchecker(struct cfg *c, const struct cfg_handler *h)
{
	const struct cfg_listchecker *l = &h->listchecker;
	const struct cfg_pos *pos = &h->meta.pos;

	if (l->provider_url.s && *l->provider_url.s) {
		if (!url_has_scheme_and_host(l->provider_url.s))
			cfg_error_at(c, &l->provider_url.pos, h->meta.fqn,
				     "provider_url",
				     "URL scheme and host cannot be empty");
		if (l->refresh_interval_ns < SECOND)
			cfg_error_at(c, pos, h->meta.fqn, "refresh_interval",
				     "must be at least 1 second");
		if (l->ttl_ns < l->refresh_interval_ns)
			cfg_error_at(c, pos, h->meta.fqn, "ttl",
				     "must be > refreshInterval");
	}
	if (l->caching_interval_ns < 0)
		cfg_error_at(c, pos, h->meta.fqn, "caching_interval",
			     "must be >= 0");
	if (l->caching_use_count < 0 || l->caching_use_count > INT32_MAX)
		cfg_error_at(c, pos, h->meta.fqn, "caching_use_count",
			     "must be >= 0 and fit an int32");
}

static void check_denier(struct cfg *c, const struct cfg_handler *h)
{
	const struct cfg_denier *d = &h->denier;
	const struct cfg_pos *pos = &h->meta.pos;

	/* google.rpc.Code: OK 0 .. UNAUTHENTICATED 16 */
	if (d->status_code < 0 || d->status_code > 16)
		cfg_error_at(c, pos, h->meta.fqn, "status.code",
			     "found %lld, expected a google.rpc.Code (0..16)",
			     (long long)d->status_code);
	if (d->valid_duration_ns < 0)
		cfg_error_at(c, pos, h->meta.fqn, "valid_duration",
			     "must be >= 0");
	if (d->valid_use_count < 0 || d->valid_use_count > INT32_MAX)
		cfg_error_at(c, pos, h->meta.fqn, "valid_use_count",
			     "must be >= 0 and fit an int32");
}

static void check_memquota(struct cfg *c, const struct cfg_handler *h)
{
	const struct cfg_memquota *m = &h->memquota;
	char field[96];

	if (m->min_dedup_ns <= 0)
		cfg_error_at(c, &h->meta.pos, h->meta.fqn,
			     "min_deduplication_duration",
			     "deduplication window must be > 0");
	for (size_t i = 0; i < m->n_quotas; i++) {
		const struct cfg_quota_def *q = &m->quotas[i];

		for (size_t j = 0; j < i; j++)
			if (!strcmp(q->name.s, m->quotas[j].name.s)) {
				snprintf(field, sizeof(field),
					 "quotas[%zu].name", i);
				cfg_error_at(c, &q->name.pos, h->meta.fqn,
					     field,
					     "found \"%s\" a second time, "
					     "expected each quota once",
					     q->name.s);
			}
		if (q->max_amount < 0 || q->valid_duration_ns < 0) {
			snprintf(field, sizeof(field), "quotas[%zu]", i);
			cfg_error_at(c, &q->pos, h->meta.fqn, field,
				     "maxAmount and validDuration must be "
				     ">= 0");
		}
		for (size_t k = 0; k < q->n_overrides; k++) {
			const struct cfg_quota_override *o = &q->overrides[k];

			if (o->max_amount >= 0 && o->valid_duration_ns >= 0)
				continue;
			snprintf(field, sizeof(field),
				 "quotas[%zu].overrides[%zu]", i, k);
			cfg_error_at(c, &o->pos, h->meta.fqn, field,
				     "maxAmount and validDuration must be "
				     ">= 0");
		}
	}
}

/* A quota instance sent to a memquota handler that has no limit for it
 * (Mixer: "did not find limit defined for quota"). */
static void check_quota_limits(struct cfg *c, const struct cfg_rule *r)
{
	for (size_t a = 0; a < r->n_actions; a++) {
		const struct cfg_action *act = &r->actions[a];
		const struct cfg_handler *h = act->handler;

		if (!h || h->adapter != CFG_ADAPTER_MEMQUOTA)
			continue;
		for (size_t i = 0; i < act->n_instances; i++) {
			const char *fqn = act->instances[i]->meta.fqn;
			bool found = false;

			for (size_t q = 0; q < h->memquota.n_quotas && !found;
			     q++)
				found = !strcmp(h->memquota.quotas[q].name.s,
						fqn);
			if (found)
				continue;
			char field[64];
			snprintf(field, sizeof(field), "actions[%zu]", a);
			cfg_error_at(c, &act->pos, r->meta.fqn, field,
				     "did not find limit defined for quota %s "
				     "in handler %s",
				     fqn, h->meta.fqn);
		}
	}
}

void cfg_resolve_policy(struct cfg *c)
{
	for (size_t h = 0; h < c->n_handlers; h++) {
		const struct cfg_handler *hd = c->handlers[h];

		if (hd->adapter == CFG_ADAPTER_LISTCHECKER)
			check_listchecker(c, hd);
		else if (hd->adapter == CFG_ADAPTER_DENIER)
			check_denier(c, hd);
		else if (hd->adapter == CFG_ADAPTER_MEMQUOTA)
			check_memquota(c, hd);
	}
	for (size_t r = 0; r < c->n_rules; r++)
		check_quota_limits(c, c->rules[r]);
}
