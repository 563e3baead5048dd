/*
 * pol_fetch.c -- a listchecker's provider thread (pol_fetch.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "policy/pol_fetch.h"
#include "policy/policy.h"

_Static_assert((int)CFG_LIST_STRINGS == (int)POL_LIST_STRINGS &&
		       (int)CFG_LIST_CASE_INSENSITIVE_STRINGS ==
			       (int)POL_LIST_CASE_INSENSITIVE_STRINGS &&
		       (int)CFG_LIST_IP_ADDRESSES == (int)POL_LIST_IP_ADDRESSES &&
		       (int)CFG_LIST_REGEX == (int)POL_LIST_REGEX,
	       "the config's entry types are the list's");

struct pol_provider {
	const struct cfg_handler *h;
	pthread_t thread;
	pthread_mutex_t mu; /* stop, and the wait between fetches */
	pthread_cond_t cv;
	bool stop;		/* under mu; read unlocked by the transfer */
	pthread_rwlock_t lock;	/* list and why, against checks */
	struct pol_list *list;	/* NULL: none in force */
	char why[1024];		/* the last fetch's error */
	/* the thread's own */
	char *body;
	size_t len;
	bool too_large;
	char *last_body; /* the body the list in force was built from */
	size_t last_len;
	char err[1024];
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
	struct pol_provider *v = arg;
	size_t k = size * n;
	if (v->len + k > POL_LIST_MAX_BODY) {
		v->too_large = true;
		return 0; /* the transfer fails: the list in force stays */
	}
	char *b = realloc(v->body, v->len + k + 1);
	if (!b)
		return 0;
	memcpy(b + v->len, p, k);
	v->body = b;
	v->len += k;
	return k;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut,
		       curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	struct pol_provider *v = arg;
	return __atomic_load_n(&v->stop, __ATOMIC_RELAXED); /* non-0 aborts */
}

/* Fetch the provider's URL into v->body: 0, or -1 with v->err set. */
static int fetch(struct pol_provider *v, CURL *c)
{
	const struct cfg_listchecker *l = &v->h->listchecker;
	free(v->body);
	v->body = NULL;
	v->len = 0;
	v->too_large = false;
	/* no longer than a refresh, nor than 30 s */
	long timeout_ms = (long)(l->refresh_interval_ns / 1000000);
	if (timeout_ms > 30000)
		timeout_ms = 30000;
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, l->provider_url.s);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, v);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, v);
	char cerr[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	CURLcode rc = curl_easy_perform(c);
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (rc == CURLE_OK && status == 200)
		return 0;
	char what[CURL_ERROR_SIZE + 64];
	if (v->too_large)
		snprintf(what, sizeof(what), "a body over %u bytes",
			 (unsigned)POL_LIST_MAX_BODY);
	else if (rc != CURLE_OK)
		snprintf(what, sizeof(what), "%s",
			 cerr[0] ? cerr : curl_easy_strerror(rc));
	else
		snprintf(what, sizeof(what), "HTTP status %ld", status);
	snprintf(v->err, sizeof(v->err), "could not fetch list from %s: %s",
		 l->provider_url.s, what);
	return -1;
}

/* Install @list (NULL: drop the one in force) and @why. */
static void install(struct pol_provider *v, struct pol_list *list,
		    const char *why)
{
	pthread_rwlock_wrlock(&v->lock);
	struct pol_list *old = v->list;
	v->list = list;
	snprintf(v->why, sizeof(v->why), "%s", why);
	pthread_rwlock_unlock(&v->lock);
	if (old != list)
		pol_list_free(old);
}

/* One fetch and what follows from it; true when the list in force is
 * fresh. */
static bool refresh(struct pol_provider *v, CURL *c)
{
	const struct cfg_listchecker *l = &v->h->listchecker;
	if (fetch(v, c))
		return false;
	if (v->list && v->last_body && v->len == v->last_len &&
	    !memcmp(v->body, v->last_body, v->len))
		return true; /* unchanged: the list in force is fresh */
	const char **ov = calloc(l->overrides.n + 1, sizeof(*ov));
	if (!ov) {
		snprintf(v->err, sizeof(v->err), "out of memory");
		return false;
	}
	for (size_t i = 0; i < l->overrides.n; i++)
		ov[i] = l->overrides.v[i].s ? l->overrides.v[i].s : "";
	struct pol_list *list = NULL;
	char why[400];
	int rc = pol_list_build((enum pol_list_type)l->entry_type, v->body,
				v->len, ov, l->overrides.n, &list, why,
				sizeof(why));
	free(ov);
	if (rc) {
		snprintf(v->err, sizeof(v->err), "Could not parse data from %s: %s",
			 l->provider_url.s, rc == -1 ? why : "out of memory");
		return false;
	}
	install(v, list, "");
	free(v->last_body);
	v->last_body = v->body; /* kept, to tell an unchanged body */
	v->last_len = v->len;
	v->body = NULL;
	v->len = 0;
	return true;
}

/* Sleep until @until_ns (CLOCK_MONOTONIC) or a stop; true on a stop. */
static bool sleep_until(struct pol_provider *v, int64_t until_ns)
{
	struct timespec until = {until_ns / 1000000000, until_ns % 1000000000};
	pthread_mutex_lock(&v->mu);
	while (!v->stop &&
	       pthread_cond_timedwait(&v->cv, &v->mu, &until) != ETIMEDOUT)
		;
	bool stop = v->stop;
	pthread_mutex_unlock(&v->mu);
	return stop;
}

static void *run(void *arg)
{
	struct pol_provider *v = arg;
	const struct cfg_listchecker *l = &v->h->listchecker;
	CURL *c = curl_easy_init();
	int64_t last_ok = pol_now_ns(); /* the ttl runs from the start */
	int64_t next_fetch = last_ok; /* at once */
	bool failing = false;
	int64_t wake;
	do {
		int64_t now = pol_now_ns();
		if (now >= next_fetch) {
			bool ok = c && refresh(v, c);
			if (!c)
				snprintf(v->err, sizeof(v->err),
					 "no libcurl handle");
			now = pol_now_ns();
			next_fetch = now + l->refresh_interval_ns;
			if (ok && failing)
				fprintf(stderr, "mixd: %s: list fetched from %s\n",
					v->h->meta.fqn, l->provider_url.s);
			if (!ok && !failing &&
			    !__atomic_load_n(&v->stop, __ATOMIC_RELAXED))
				fprintf(stderr, "mixd: %s: %s\n", v->h->meta.fqn,
					v->err);
			if (ok)
				last_ok = now;
			else {
				/* why a check fails, once there is no list */
				pthread_rwlock_wrlock(&v->lock);
				snprintf(v->why, sizeof(v->why), "%s", v->err);
				pthread_rwlock_unlock(&v->lock);
			}
			failing = !ok;
		}
		if (failing && v->list && now - last_ok >= l->ttl_ns) {
			fprintf(stderr,
				"mixd: %s: purging the list: not refreshed "
				"within its ttl\n",
				v->h->meta.fqn);
			install(v, NULL, v->err);
		}
		/* the next fetch, or the purge if it comes first */
		wake = next_fetch;
		if (failing && v->list && last_ok + l->ttl_ns < wake)
			wake = last_ok + l->ttl_ns;
		if (wake < now)
			wake = now;
		/* (v->list is this thread's to write: read without the lock) */
	} while (!sleep_until(v, wake));
	if (c)
		curl_easy_cleanup(c);
	return NULL;
}

struct pol_provider *pol_provider_start(const struct cfg_handler *h)
{
	struct pol_provider *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->h = h;
	snprintf(v->why, sizeof(v->why), "list from %s not fetched yet",
		 h->listchecker.provider_url.s);
	pthread_mutex_init(&v->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&v->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_rwlock_init(&v->lock, NULL);
	if (pthread_create(&v->thread, NULL, run, v)) {
		pthread_rwlock_destroy(&v->lock);
		pthread_cond_destroy(&v->cv);
		pthread_mutex_destroy(&v->mu);
		free(v);
		return NULL;
	}
	return v;
}

const struct pol_list *pol_provider_acquire(struct pol_provider *p, char *why,
					    size_t why_len)
{
	pthread_rwlock_rdlock(&p->lock);
	if (!p->list)
		snprintf(why, why_len, "%s", p->why);
	return p->list;
}

void pol_provider_release(struct pol_provider *p)
{
	pthread_rwlock_unlock(&p->lock);
}

void pol_provider_stop(struct pol_provider *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	__atomic_store_n(&p->stop, true, __ATOMIC_RELAXED);
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->thread, NULL);
	pol_list_free(p->list);
	free(p->body);
	free(p->last_body);
	pthread_rwlock_destroy(&p->lock);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}
