/*
 * resolver -- the Marathon thread (libcurl multi: the event stream and the
 * sync requests share one loop, so a long sync never starves the stream's
 * silence check), snapshot publication with ck_epoch, and the shards'
 * readers with their caches.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ck_epoch.h>
#include <curl/curl.h>

#include "config/config.h"
#include "marathon/mar_internal.h"

#ifdef MIXD_TSAN
/* ck_epoch is inline assembly and an uninstrumented library: TSan sees
 * neither the grace period nor its fences. Each reader releases its own
 * address when it leaves a section; the reclaim callback acquires every
 * reader's before freeing, which is what the grace period guarantees. */
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define MAR_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#define MAR_TSAN_RELEASE(p) __tsan_release((void *)(p))
#else
#define MAR_TSAN_ACQUIRE(p) ((void)0)
#define MAR_TSAN_RELEASE(p) ((void)0)
#endif

#define MAX_ADDRS 16
/* 100k tasks is ~100 MiB of JSON, parsed into a few times that; a body
 * (after decompression: a small gzip body can say a gigabyte) is refused
 * past this, as a broken sync. */
#define MAX_BODY (256u << 20)
#define CACHE_WAYS 4	    /* 4-way: direct-mapped thrashed at 256 keys */
#define CACHE_SETS 512	    /* per side: 256 hot keys overflow no set */
#define TICK_MS 100	    /* longest wait: bounds stop latency */
/* A sync request moving fewer bytes a second than this for
 * request_timeout has stalled: far below any working link (a healthy
 * leader sends megabytes a second), so a connection this slow is as good
 * as dead. */
#define SYNC_LOW_SPEED 1024

enum key_kind { K_UID = 1, K_IP, K_IPPORT };

/* Two 64-bit lanes: one SSE2 / NEON register, no intrinsics needed. */
typedef uint64_t v2u64 __attribute__((vector_size(16)));

/*
 * The cache: per side (source, destination), CACHE_SETS sets of four ways
 * and a dense array of the ways' tags. A hit reads one word of the tags
 * (4 KiB for both sides, so they stay close to the core while the ways do
 * not) and the two lines of its way: the key, then the answer. The set's
 * other ways are not read, and a way's lines sit together, so one address
 * reaches both (the answer fills half its line: packing two answers to a
 * line would save memory no hit touches, for more address arithmetic).
 *
 * A key of up to 64 bytes (most Marathon ids, every IP key) is kept whole,
 * as the four 16-byte blocks a probe reads (see key_blocks()), so a hit
 * compares it against blocks already in registers without following a
 * pointer into the snapshot. A longer key points at the snapshot's copy
 * (@key); one the snapshot lacks has no copy to compare with, so its
 * absence is not cached (fill()). Answers are pointers into the
 * snapshot, ready to hand out. Every entry belongs to the reader's
 * snapshot generation: mar_read_begin() empties the cache when it changes,
 * so no entry carries one.
 */
struct cache_way {
	v2u64 blk[4];		      /* first line: the key */
	uint64_t meta;		      /* klen | port << 32 | kind << 48 */
	const struct attr_value *v;   /* the instance's outputs; NULL: absent */
	const struct attr_value *ctr; /* its container's name, or NULL */
	const uint8_t *key; /* > 64 bytes: the snapshot's copy */
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct cache_way) == 2 * 64, "two whole lines");

/* A set's four 8-bit tags are one word of @tags, way w in bits 8w to
 * 8w + 7: one load and a few word operations find the way (probe_hit()).
 * Tag 0: an empty way. A byte a way keeps the array at 2 KiB a side, few
 * enough lines to stay in L1 between uses; a false match (1 in 128 per
 * occupied way) costs only a look at the set's other ways. */
struct cache_side {
	uint32_t tags[CACHE_SETS];
	struct cache_way way[CACHE_SETS][CACHE_WAYS];
};

struct mar_reader {
	ck_epoch_record_t rec; /* first: recycled records map back here */
	struct mar_resolver *r;
	const struct mar_snap *snap;
	uint64_t gen;		 /* generation the cache holds; 0: none */
	struct mar_reader *next; /* all readers ever, for stop and TSan */
	struct cache_side src, dst;
};

struct counters {
	uint64_t sync[MAR_SYNC_COUNT];
	uint64_t events[MAR_EV_COUNT];
	uint64_t disconnects[MAR_DISC_COUNT];
	uint64_t entries_skipped;
	uint64_t snapshots, apps, pods, tasks, pod_instances;
	uint64_t last_sync_ms;
	uint64_t last_build_us; /* the last snapshot build, wall time */
	/* Bytes the sync buffer kept when the last sync ended; UINT64_MAX:
	 * none has ended yet. */
	uint64_t body_cap;
	uint64_t synced, connected;
};

struct buf {
	char *p;
	size_t len, cap;
	bool too_big;
};

/* Append @n bytes at @p to @b, kept NUL-terminated; false (nothing
 * added) when that would take it beyond @max (too_big set) or on ENOMEM. */
static bool buf_append(struct buf *b, const void *p, size_t n, size_t max)
{
	if (n + 1 > max - b->len) {
		b->too_big = true;
		return false;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1 << 16;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (!np)
			return false;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = 0;
	return true;
}

/*
 * Events that arrive while a full sync is in flight, in order, each as
 * [u32 type length][u32 data length][type][data]. The sync replaces the
 * model, so an event applied to the old one would be lost whenever
 * Marathon wrote its answer before the change the event reports; held,
 * they are applied to whichever model the sync leaves. Bounded: an event
 * that does not fit is lost, and a resync follows.
 */
#define HELD_MAX (64u << 20)

/* struct mar_options, parsed and copied: what the thread runs on. */
struct settings {
	char *addrs[MAX_ADDRS];
	size_t n_addrs;
	char *user, *password, *token, *token_file, *ca_file;
	int64_t refresh_ns, stream_timeout_ns, backoff_min_ns, backoff_max_ns;
	int64_t request_timeout_ns, resync_delay_ns, publish_interval_ns;
	int64_t sync_limit_ns;
};

struct mar_resolver {
	struct settings s; /* the thread's own once it runs */
	FILE *log;

	pthread_t thread;
	int stop; /* atomic */
	/* mar_resolver_reconfigure(): the settings last asked for (to tell a
	 * change), and those the thread has yet to take (NULL: none); under
	 * set_mu. reconf (atomic) is set while one waits, and aborts what
	 * the thread is doing, as stop does. */
	pthread_mutex_t set_mu;
	struct settings asked;
	struct settings *pending;
	int reconf;

	/* snapshots */
	ck_epoch_t epoch;
	ck_epoch_record_t wrec;
	struct mar_snap *cur; /* atomic; published with release */
	uint64_t gen;
	/* Snapshots injected and then replaced (tests): a reader may hold
	 * one until it leaves its section, so they go at stop. */
	struct injected { struct mar_snap *s; struct injected *next; } *injected;
	uint64_t injected_gen;
	pthread_mutex_t readers_mu;
	struct mar_reader *readers;

	struct counters c; /* written by the thread with atomic stores */

	/* resolver thread only */
	CURLM *multi;
	CURL *sync_h, *stream_h;
	struct curl_slist *hdrs, *stream_hdrs;
	char errbuf[CURL_ERROR_SIZE];
	struct buf body;
	bool sync_done;
	CURLcode sync_code;
	bool stream_up, stream_done;
	CURLcode stream_code;
	/* The status of the stream's last response (after redirects) once
	 * its headers ended; 0: none yet. 200 is not yet "attached": Marathon
	 * answers first, then an actor subscribes the stream, whose first
	 * event is event_stream_attached (stream_subscribed); only after it
	 * can the sync that follows miss no event. */
	long stream_status;
	bool stream_attached;
	bool stream_subscribed;
	int64_t stream_answered_ns; /* when the 200 came */
	char stream_errbuf[CURL_ERROR_SIZE]; /* the sync has its own */
	bool stream_got_bytes;
	int64_t stream_last_line_ns, stream_started_ns;
	struct mar_sse sse;
	bool syncing;     /* a full sync is in flight: events are held */
	struct buf held;  /* too_big: one was lost */
	struct mar_model model;
	struct mar_hostcache *hc;
	char base[1024]; /* the leader we talk to (after redirects) */
	int episode;	 /* what we last logged as failing; 0: healthy */
	/* The same for the event stream, apart: a stream Marathon keeps
	 * refusing is one episode however many syncs succeed meanwhile. */
	int stream_episode;
	bool token_file_failing; /* said once, until it is read again */
	/* The next publish is a full sync's: count the entries it skips
	 * (an event's publish would count the same ones again). */
	bool count_skips;
	bool skips_logged; /* since the last sync that skipped none */
	int64_t resync_at, next_refresh, last_publish;
	/* Least time between publishes of applied events: publish_interval,
	 * or PUBLISH_DUTY times the last build (at most PUBLISH_GAP_MAX_NS),
	 * whichever is longer. */
	int64_t publish_gap_ns;
	/* Least time from the end of one full sync to a resync that events
	 * ask for: resync_delay, or SYNC_DUTY times the last sync (its GETs,
	 * parse and build), whichever is longer, at most SYNC_GAP_MAX_NS. */
	int64_t sync_gap_ns, last_sync_end;
};

/*
 * A deployment sends events for every step; each asks for a full sync,
 * which at 100,000 tasks fetches 20-odd MB from the leader and rebuilds
 * for most of a second. Spacing them by ten syncs keeps that under a
 * tenth of the resolver's time (and of what it asks of Marathon) however
 * long a deployment runs; status updates are applied between them.
 */
#define SYNC_DUTY 10

/* Agent names are resolved again after this long (at the next full sync;
 * the old answer stays if DNS fails): an agent that moved is found; one
 * that left is forgotten sooner, at the first sync whose tasks no longer
 * name it. */
#define HOST_TTL_NS (10 * 60 * 1000000000ll)
#define SYNC_GAP_MAX_NS 60000000000ll

/*
 * A publish rebuilds the whole snapshot (200-300 ms for 100,000 tasks on a
 * slow core), and a large cluster sends events without pause. Spacing
 * publishes by ten builds keeps rebuilding under a tenth of a core
 * whatever the churn; a change then shows within ten builds' time (about
 * 3 s at that size, the publish interval in small clusters), and never
 * later than PUBLISH_GAP_MAX after the last publish, however slow one
 * build was (a stalled VM must not hold events back for minutes).
 */
#define PUBLISH_DUTY 10
#define PUBLISH_GAP_MAX_NS 10000000000ll

/* The least gap after work that took @took: @duty times it, at least
 * @min, at most @max (publishes and resyncs keep to a duty cycle). */
static int64_t paced(int64_t took, int64_t duty, int64_t min, int64_t max)
{
	int64_t gap = took * duty;
	gap = gap < max ? gap : max;
	return gap > min ? gap : min;
}

/* ------------------------------------------------------------------ */
/* Names */

static const char *const out_names[MAR_OUT_COUNT] = {
	"source_pod_uid",
	"source_pod_ip",
	"source_pod_name",
	"source_labels",
	"source_namespace",
	"source_service_account_name",
	"source_host_ip",
	"source_workload_uid",
	"source_workload_name",
	"source_workload_namespace",
	"source_owner",
	"destination_pod_uid",
	"destination_pod_ip",
	"destination_pod_name",
	"destination_labels",
	"destination_namespace",
	"destination_service_account_name",
	"destination_host_ip",
	"destination_workload_uid",
	"destination_workload_name",
	"destination_workload_namespace",
	"destination_owner",
	"destination_container_name",
};

const char *mar_out_name(enum mar_out o)
{
	return (unsigned)o < MAR_OUT_COUNT ? out_names[o] : "";
}

int mar_out_find(const char *name, size_t len)
{
	for (int i = 0; i < MAR_OUT_COUNT; i++)
		if (strlen(out_names[i]) == len && !memcmp(out_names[i], name, len))
			return i;
	return -1;
}

enum attr_type mar_out_type(enum mar_out o)
{
	switch (o) {
	case MAR_OUT_SOURCE_POD_IP:
	case MAR_OUT_SOURCE_HOST_IP:
	case MAR_OUT_DESTINATION_POD_IP:
	case MAR_OUT_DESTINATION_HOST_IP:
		return ATTR_IP;
	case MAR_OUT_SOURCE_LABELS:
	case MAR_OUT_DESTINATION_LABELS:
		return ATTR_STRING_MAP;
	default:
		return (unsigned)o < MAR_OUT_COUNT ? ATTR_STRING : ATTR_NONE;
	}
}

const char *mar_sync_result_name(enum mar_sync_result r)
{
	static const char *const n[MAR_SYNC_COUNT] = {
		"ok", "error", "unauthorized", "http_error", "malformed",
		"truncated"};
	return (unsigned)r < MAR_SYNC_COUNT ? n[r] : "";
}

const char *mar_disconnect_name(enum mar_disconnect d)
{
	static const char *const n[MAR_DISC_COUNT] = {
		"eof", "silent", "error", "truncated", "unauthorized"};
	return (unsigned)d < MAR_DISC_COUNT ? n[d] : "";
}

/* ------------------------------------------------------------------ */
/* Small things */

static void cnt_add(uint64_t *p, uint64_t v)
{
	__atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

static void cnt_set(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static bool stop_asked(const struct mar_resolver *r)
{
	return __atomic_load_n(&r->stop, __ATOMIC_ACQUIRE);
}

/* Stop asked, or new settings waiting: what the thread is doing ends
 * (transfers abort, waits return) and nothing of it counts as failure. */
static bool stopping(const struct mar_resolver *r)
{
	return stop_asked(r) || __atomic_load_n(&r->reconf, __ATOMIC_ACQUIRE);
}

static void logv(FILE *log, const char *fmt, va_list ap)
{
	char line[2048];
	vsnprintf(line, sizeof line, fmt, ap);
	fprintf(log, "mixd: marathon: %s\n", line);
	fflush(log);
}

static void logf_(struct mar_resolver *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void logf_(struct mar_resolver *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	logv(r->log, fmt, ap);
	va_end(ap);
}

/* Where settings_parse() says what it refuses: a log, or a buffer. */
struct say {
	FILE *log;  /* when not NULL */
	char *why;  /* else here, @cap bytes */
	size_t cap;
};

static void sayf(const struct say *to, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void sayf(const struct say *to, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (to->log)
		logv(to->log, fmt, ap);
	else if (to->cap)
		vsnprintf(to->why, to->cap, fmt, ap);
	va_end(ap);
}

/* Failure kinds share one number space for episode tracking. */
#define EP_SYNC(res) (1 + (int)(res))
#define EP_STREAM(d) (32 + (int)(d))

/* Log @what once per episode: again only after a success, or when the
 * kind of failure changes. Never with credentials (URLs are stored
 * without userinfo). */
static void episode_fail(struct mar_resolver *r, int kind, const char *what)
{
	if (r->episode == kind)
		return;
	r->episode = kind;
	logf_(r, "%s", what);
}

static void episode_ok(struct mar_resolver *r)
{
	if (!r->episode)
		return;
	r->episode = 0;
	logf_(r, "synced with %s again", r->base);
}

/* ------------------------------------------------------------------ */
/* Options */

int mar_options_from_handler(const struct cfg_handler *h,
			     const char *override_address,
			     struct mar_options *o)
{
	memset(o, 0, sizeof *o);
	if (!h || h->adapter != CFG_ADAPTER_MESOSENV)
		return -EINVAL;
	const struct cfg_mesosenv *m = &h->mesosenv;
	o->addresses = override_address && *override_address
			       ? override_address
			       : m->marathon_address.s;
	o->basic_user = m->http_basic_auth_user.s;
	o->basic_password = m->http_basic_auth_password.s;
	o->auth_token = m->auth_token.s;
	o->auth_token_file = m->auth_token_file.s;
	o->ca_file = m->ca_file.s;
	o->ca_file_secret = m->ca_file.secret;
	o->refresh_ns = m->cache_refresh_ns;
	return 0;
}

static char *dup_or_null(const char *s)
{
	return s && *s ? strdup(s) : NULL;
}

/* "host:port", "http://host:port/", "https://u:p@host" -> base URL without
 * userinfo or trailing '/'. Userinfo becomes basic auth when none is set. */
/* @s with its %XX escapes decoded (RFC 3986: a password's '@', ',' or
 * '%' is written so), in place of @s; NULL on ENOMEM. */
static char *unescaped(char *s)
{
	int n;
	char *u = curl_easy_unescape(NULL, s, 0, &n);
	char *d = u ? strndup(u, (size_t)n) : NULL;
	curl_free(u);
	free(s);
	return d;
}

/* Whether @h (@n bytes) is host[:port] or [v6][:port], a port 1 to 65535. */
static bool host_port_ok(const char *h, size_t n)
{
	const char *end = h + n, *port = NULL;
	if (n && *h == '[') {
		const char *rb = memchr(h, ']', n);
		if (!rb || rb == h + 1)
			return false;
		if (rb + 1 < end) {
			if (rb[1] != ':')
				return false;
			port = rb + 2;
		}
	} else {
		const char *colon = memchr(h, ':', n);
		if (colon == h)
			return false;
		port = colon ? colon + 1 : NULL;
	}
	if (!port)
		return true;
	size_t digits = (size_t)(end - port);
	unsigned v = 0;
	if (digits == 0 || digits > 5)
		return false;
	for (const char *q = port; q < end; q++) {
		if (*q < '0' || *q > '9')
			return false;
		v = v * 10 + (unsigned)(*q - '0');
	}
	return v >= 1 && v <= 65535;
}

static int add_address(struct settings *st, const char *a, size_t n)
{
	while (n && (*a == ' ' || *a == '\t')) {
		a++;
		n--;
	}
	while (n && (a[n - 1] == ' ' || a[n - 1] == '\t'))
		n--;
	if (!n)
		return 0;
	if (st->n_addrs == MAX_ADDRS || n > 900)
		return -EINVAL;
	char tmp[1024];
	const char *scheme = "http://";
	const char *sep = memmem(a, n, "://", 3);
	if (sep) {
		size_t sl = (size_t)(sep - a);
		if (!(sl == 4 && !strncasecmp(a, "http", 4)) &&
		    !(sl == 5 && !strncasecmp(a, "https", 5)))
			return -EINVAL;
		scheme = sl == 5 ? "https://" : "http://";
		n -= sl + 3;
		a = sep + 3;
	}
	while (n && a[n - 1] == '/')
		n--;
	const char *slash = memchr(a, '/', n);
	size_t auth_len = slash ? (size_t)(slash - a) : n;
	const char *at = NULL;
	for (size_t i = 0; i < auth_len; i++)
		if (a[i] == '@')
			at = a + i;
	if (at) {
		const char *colon = memchr(a, ':', (size_t)(at - a));
		if (!st->user && colon) {
			st->user = strndup(a, (size_t)(colon - a));
			st->password = strndup(colon + 1,
					       (size_t)(at - colon - 1));
			if (st->user)
				st->user = unescaped(st->user);
			if (st->password)
				st->password = unescaped(st->password);
			if (!st->user || !st->password)
				return -ENOMEM;
		}
		n -= (size_t)(at + 1 - a);
		a = at + 1;
	}
	slash = memchr(a, '/', n);
	if (!n || *a == '/' || !host_port_ok(a, slash ? (size_t)(slash - a) : n))
		return -EINVAL;
	snprintf(tmp, sizeof tmp, "%s%.*s", scheme, (int)n, a);
	st->addrs[st->n_addrs] = strdup(tmp);
	if (!st->addrs[st->n_addrs])
		return -ENOMEM;
	st->n_addrs++;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Snapshots */

struct retired {
	ck_epoch_entry_t entry;
	struct mar_snap *snap;
	struct mar_resolver *r;
};

static void reclaim_cb(ck_epoch_entry_t *e)
{
	struct retired *rt = (struct retired *)e;
#ifdef MIXD_TSAN
	pthread_mutex_lock(&rt->r->readers_mu);
	for (struct mar_reader *rd = rt->r->readers; rd; rd = rd->next)
		MAR_TSAN_ACQUIRE(rd);
	pthread_mutex_unlock(&rt->r->readers_mu);
#endif
	mar_snap_free(rt->snap);
	free(rt);
}

/*
 * Snapshots retired and not yet freed, at most: a reader that stays in its
 * read section (a shard blocked in a write to a stalled stdout pipe)
 * keeps every snapshot published since from being freed -- 140 MiB each
 * at 100,000 tasks. Beyond this many, publishing waits for the readers
 * (the model stays dirty; events are still applied to it).
 */
#define RETIRED_MAX 2

static void publish(struct mar_resolver *r)
{
	ck_epoch_poll(&r->wrec);
	if (r->cur && r->wrec.n_pending >= RETIRED_MAX) {
		r->model.dirty = true;
		return;
	}
	struct mar_snap *s = NULL;
	size_t skipped = 0;
	int64_t t0 = mar_now_ns();
	int rc = mar_snap_build(r->model.apps, r->model.pods, r->hc, &s,
				&skipped);
	int64_t built = mar_now_ns() - t0;
	r->publish_gap_ns = paced(built, PUBLISH_DUTY, r->s.publish_interval_ns,
				  PUBLISH_GAP_MAX_NS);
	cnt_set(&r->c.last_build_us, (uint64_t)built / 1000);
	if (rc == 0 && r->count_skips) {
		r->count_skips = false;
		cnt_add(&r->c.entries_skipped, skipped);
		/* Once per run of syncs that skip some: the same bad app is
		 * met again at every sync until someone fixes it. */
		if (skipped && !r->skips_logged)
			logf_(r, "sync from %s skipped %zu malformed entries "
			      "(apps, tasks, pods or instances); see "
			      "mixd_marathon_entries_skipped_total", r->base,
			      skipped);
		r->skips_logged = skipped > 0;
	}
	if (rc < 0) {
		/* Keep the old one and the dirty flag: retried next tick. */
		episode_fail(r, EP_SYNC(MAR_SYNC_COUNT),
			     "out of memory building a snapshot; keeping the "
			     "last one");
		return;
	}
	s->gen = ++r->gen;
	struct mar_snap *old = r->cur;
	/* Release: the snapshot's bytes before the pointer that shows it. */
	__atomic_store_n(&r->cur, s, __ATOMIC_RELEASE);
	r->model.dirty = false;
	r->last_publish = mar_now_ns();
	cnt_add(&r->c.snapshots, 1);
	cnt_set(&r->c.apps, s->apps);
	cnt_set(&r->c.pods, s->pods);
	cnt_set(&r->c.tasks, s->tasks);
	cnt_set(&r->c.pod_instances, s->pod_instances);
	if (!old)
		return;
	struct retired *rt = malloc(sizeof *rt);
	if (!rt) {
		/* No memory to defer: wait out the readers instead. */
		ck_epoch_synchronize(&r->wrec);
		struct retired tmp = {.snap = old, .r = r};
		struct retired *heap = malloc(sizeof *heap);
		if (heap) {
			*heap = tmp;
			reclaim_cb(&heap->entry);
		} else {
			mar_snap_free(old); /* TSan may not see this path */
		}
		return;
	}
	rt->snap = old;
	rt->r = r;
	ck_epoch_call(&r->wrec, &rt->entry, reclaim_cb);
}

/* ------------------------------------------------------------------ */
/* curl */

static size_t body_write(char *p, size_t sz, size_t n, void *ud)
{
	return buf_append(ud, p, sz * n, MAX_BODY) ? sz * n : 0;
}

/*
 * Free the sync buffer once its body is parsed (or refused). It grows to
 * the next power of two above the largest /v2/apps answer -- 128 MiB at
 * 100,000 tasks -- and a sync comes every few minutes: kept, it would be
 * the resolver's largest allocation, idle between syncs for as long as
 * the daemon runs. Growing it again costs a few reallocs per sync. Safe
 * because nothing keeps a pointer into it: cJSON copies every string it
 * parses, and the snapshot is built from the model, not the body.
 */
static void body_release(struct mar_resolver *r)
{
	free(r->body.p);
	r->body.p = NULL;
	r->body.len = r->body.cap = 0;
	r->body.too_big = false;
}

static void apply_event(struct mar_resolver *r, const char *type, size_t tl,
			const char *data, size_t dl)
{
	bool had = r->model.need_resync;
	enum mar_event ev = mar_model_apply(&r->model, type, tl, data, dl);
	cnt_add(&r->c.events[ev], 1);
	if (!had && r->model.need_resync)
		r->resync_at = mar_now_ns() + r->s.resync_delay_ns;
}

/* Keep an event for release_held(); once one is lost, none (the resync
 * that follows brings them all). */
static void hold(struct buf *h, const char *type, size_t tl,
		 const char *data, size_t dl)
{
	uint32_t l[2] = {(uint32_t)tl, (uint32_t)dl};
	size_t at = h->len;
	if (h->too_big || !buf_append(h, l, 8, HELD_MAX) ||
	    !buf_append(h, type, tl, HELD_MAX) ||
	    !buf_append(h, data, dl, HELD_MAX)) {
		h->len = at;
		h->too_big = true;
	}
}

/* Forget what the sync held: mixd is stopping. */
static void drop_held(struct mar_resolver *r)
{
	r->syncing = false;
	r->held.len = 0;
	r->held.too_big = false;
}

/* The sync is over: apply what it held, in order, to the model it left
 * (new or, when it failed, the old one); a lost event asks for a resync. */
static void release_held(struct mar_resolver *r)
{
	struct buf *h = &r->held;
	r->syncing = false;
	for (size_t at = 0; at < h->len;) {
		uint32_t l[2];
		memcpy(l, h->p + at, 8);
		apply_event(r, h->p + at + 8, l[0], h->p + at + 8 + l[0], l[1]);
		at += 8 + (size_t)l[0] + l[1];
	}
	h->len = 0;
	if (h->cap > 1 << 20) { /* a burst's buffer is not kept */
		free(h->p);
		h->p = NULL;
		h->cap = 0;
	}
	if (h->too_big) {
		h->too_big = false;
		if (!r->model.need_resync) {
			r->model.need_resync = true;
			r->resync_at = mar_now_ns() + r->s.resync_delay_ns;
		}
	}
}

static void on_event(void *ctx, const char *type, size_t tl,
		     const char *data, size_t dl)
{
	struct mar_resolver *r = ctx;
	static const char attached[] = "event_stream_attached";
	if (tl == sizeof attached - 1 && !memcmp(type, attached, tl))
		r->stream_subscribed = true;
	if (r->syncing)
		hold(&r->held, type, tl, data, dl);
	else
		apply_event(r, type, tl, data, dl);
}

static size_t stream_header(char *p, size_t sz, size_t n, void *ud)
{
	struct mar_resolver *r = ud;
	/* The blank line that ends a response's headers (a redirect's too:
	 * the status is the last response's). */
	if (sz * n <= 2 && (sz * n == 0 || *p == '\r' || *p == '\n')) {
		long code = 0;
		curl_easy_getinfo(r->stream_h, CURLINFO_RESPONSE_CODE, &code);
		r->stream_status = code;
		r->stream_attached = code == 200;
		r->stream_answered_ns = mar_now_ns();
	}
	return sz * n;
}

static size_t stream_write(char *p, size_t sz, size_t n, void *ud)
{
	struct mar_resolver *r = ud;
	long code = 0;
	curl_easy_getinfo(r->stream_h, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200)
		return 0; /* an error page is not a stream */
	r->stream_got_bytes = true;
	uint64_t lines = r->sse.lines;
	if (mar_sse_feed(&r->sse, p, sz * n, on_event, r) < 0)
		return 0;
	/* Alive when a line ends (a heartbeat is one), not at any byte: a
	 * stream that trickles one event's bytes for ever is silent. */
	if (r->sse.lines != lines)
		r->stream_last_line_ns = mar_now_ns();
	return sz * n;
}

static int xfer_cb(void *ud, curl_off_t a, curl_off_t b, curl_off_t c,
		   curl_off_t d)
{
	return stopping(ud); /* nonzero aborts the transfer */
}

/* Options every request to @url shares. */
static int setup_common(struct mar_resolver *r, CURL *h, const char *url)
{
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	/* A standby answers 302 to the leader: credentials must follow it.
	 * The configured addresses are trusted to name their leader, but not
	 * to send credentials given for TLS over plain HTTP. */
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR,
			 strncasecmp(url, "https://", 8) ? "http,https" : "https");
	curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, xfer_cb);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, r);
	if (r->s.user) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, r->s.user);
		curl_easy_setopt(h, CURLOPT_PASSWORD,
				 r->s.password ? r->s.password : "");
	}
	if (r->s.ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, r->s.ca_file);
	return 0;
}

/* The DC/OS token, read fresh at every (re)connect. */
static void refresh_headers(struct mar_resolver *r)
{
	curl_slist_free_all(r->hdrs);
	curl_slist_free_all(r->stream_hdrs);
	r->hdrs = r->stream_hdrs = NULL;
	char *tok = r->s.token ? strdup(r->s.token) : NULL;
	if (r->s.token_file) {
		FILE *f = fopen(r->s.token_file, "r");
		char buf[16384];
		size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
		if (f)
			fclose(f);
		/* An episode of its own: sharing the syncs' would make the
		 * two messages take turns at every retry. */
		if (!f && !r->token_file_failing)
			logf_(r, "cannot read auth_token_file: %s",
			      strerror(errno));
		r->token_file_failing = !f;
		while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			n--;
		buf[n] = 0;
		if (n) {
			free(tok);
			tok = strdup(buf);
		}
		memset(buf, 0, sizeof buf);
	}
	struct curl_slist *a = curl_slist_append(NULL, "Accept: application/json");
	struct curl_slist *s = curl_slist_append(NULL, "Accept: text/event-stream");
	if (tok) {
		size_t n = strlen(tok) + 32;
		char *h = malloc(n);
		if (h) {
			snprintf(h, n, "Authorization: token=%s", tok);
			a = curl_slist_append(a, h);
			s = curl_slist_append(s, h);
			memset(h, 0, n);
			free(h);
		}
		memset(tok, 0, strlen(tok));
		free(tok);
	}
	r->hdrs = a;
	r->stream_hdrs = s;
}

/* One round of the multi loop: wait up to @ms, move transfers, collect
 * finished ones, check the stream's silence. */
static void drive(struct mar_resolver *r, int ms)
{
	int running;
	curl_multi_poll(r->multi, NULL, 0, ms, NULL);
	curl_multi_perform(r->multi, &running);
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(r->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		if (m->easy_handle == r->sync_h) {
			r->sync_done = true;
			r->sync_code = m->data.result;
		} else if (m->easy_handle == r->stream_h) {
			r->stream_done = true;
			r->stream_code = m->data.result;
		}
	}
	ck_epoch_poll(&r->wrec);
}

/* Run one GET on the sync handle; drive the stream meanwhile. */
static enum mar_sync_result get(struct mar_resolver *r, const char *base,
				const char *path, bool may_404, bool *is_404)
{
	char url[1200];
	snprintf(url, sizeof url, "%s%s", base, path);
	CURL *h = r->sync_h;
	curl_easy_reset(h);
	setup_common(r, h, url);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->hdrs);
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	/* No tight limit on the whole request: /v2/apps?embed=apps.tasks is
	 * over 100 MiB at 100,000 tasks, and a fixed limit that a big
	 * cluster's answer outgrows fails every retry alike, so that Marathon
	 * never syncs. A steadily arriving body takes what it takes; what fails is
	 * one that stops moving (no answer yet, or a stalled one). curl
	 * counts in whole seconds: at least one. */
	long stall_s =
		(long)((r->s.request_timeout_ns + 999999999) / 1000000000);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, (long)SYNC_LOW_SPEED);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, stall_s > 0 ? stall_s : 1L);
	/* ... up to a limit of its own, far above what a working one takes
	 * (mar_options.sync_limit_ns). */
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
			 (long)(r->s.sync_limit_ns / 1000000));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
	r->body.len = 0;
	r->body.too_big = false;
	r->errbuf[0] = 0;
	r->sync_done = false;
	if (curl_multi_add_handle(r->multi, h) != CURLM_OK)
		return MAR_SYNC_ERROR;
	while (!r->sync_done && !stopping(r))
		drive(r, TICK_MS);
	curl_multi_remove_handle(r->multi, h);
	if (!r->sync_done)
		return MAR_SYNC_ERROR; /* stopping */
	long code = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	if (r->sync_code == CURLE_PARTIAL_FILE)
		return MAR_SYNC_TRUNCATED;
	if (r->sync_code != CURLE_OK)
		return r->body.too_big ? MAR_SYNC_MALFORMED : MAR_SYNC_ERROR;
	if (code == 401 || code == 403)
		return MAR_SYNC_UNAUTHORIZED;
	if (may_404 && code == 404) {
		*is_404 = true;
		return MAR_SYNC_OK;
	}
	if (code < 200 || code > 299)
		return MAR_SYNC_HTTP_ERROR;
	/* The leader, for what follows: the URL after redirects, minus path. */
	char *eff = NULL;
	curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &eff);
	if (eff) {
		size_t el = strlen(eff), pl = strcspn(path, "?");
		const char *q = strchr(eff, '?');
		size_t upto = q ? (size_t)(q - eff) : el;
		if (upto >= pl && !strncmp(eff + upto - pl, path, pl) &&
		    upto - pl < sizeof r->base)
			snprintf(r->base, sizeof r->base, "%.*s",
				 (int)(upto - pl), eff);
	}
	return MAR_SYNC_OK;
}

static void sync_failed(struct mar_resolver *r, enum mar_sync_result res,
			const char *base, const char *what)
{
	char msg[1600];
	cnt_add(&r->c.sync[res], 1);
	bool detail = res == MAR_SYNC_ERROR && r->errbuf[0];
	snprintf(msg, sizeof msg, "sync from %s failed (%s%s%s); %s", base,
		 mar_sync_result_name(res), detail ? ": " : "",
		 detail ? r->errbuf : "", what);
	episode_fail(r, EP_SYNC(res), msg);
}

/* Full sync from @base (apps, then pods from the same leader). On success
 * the model is replaced and a snapshot published. */
static int sync_from(struct mar_resolver *r, const char *base_in)
{
	bool no_pods = false;
	char base[sizeof r->base]; /* base_in may be r->base itself */
	snprintf(base, sizeof base, "%s", base_in);
	snprintf(r->base, sizeof r->base, "%s", base);
	r->syncing = true;
	int64_t t0 = mar_now_ns();
	enum mar_sync_result res = get(r, base, "/v2/apps?embed=apps.tasks",
				       false, NULL);
	cJSON *apps = NULL, *pods = NULL;
	if (res == MAR_SYNC_OK && !stopping(r)) {
		apps = mar_parse_apps(r->body.p ? r->body.p : "", r->body.len);
		if (!apps)
			res = MAR_SYNC_MALFORMED;
	}
	/* Before the pods GET: the apps body is the big one, and is not
	 * needed while the pods answer arrives. */
	body_release(r);
	if (stopping(r)) {
		cJSON_Delete(apps);
		drop_held(r);
		return -1;
	}
	if (res == MAR_SYNC_OK) {
		char leader[sizeof r->base];
		snprintf(leader, sizeof leader, "%s", r->base);
		res = get(r, leader, "/v2/pods/::status", true, &no_pods);
		if (res == MAR_SYNC_OK && !no_pods) {
			pods = mar_parse_pods(r->body.p ? r->body.p : "",
					      r->body.len);
			if (!pods)
				res = MAR_SYNC_MALFORMED;
		}
		body_release(r);
	}
	if (stopping(r)) {
		cJSON_Delete(apps);
		cJSON_Delete(pods);
		drop_held(r);
		return -1;
	}
	if (res != MAR_SYNC_OK) {
		cJSON_Delete(apps);
		cJSON_Delete(pods);
		release_held(r); /* to the model kept */
		/* Atomic: mar_resolver_inject() (tests) publishes too. */
		bool kept = __atomic_load_n(&r->cur, __ATOMIC_RELAXED) != NULL;
		sync_failed(r, res, base, kept ? "keeping the last snapshot"
					       : "no snapshot yet");
		return -1;
	}
	if (!pods)
		pods = cJSON_CreateArray(); /* Marathon before 1.4: no pods */
	mar_model_clear(&r->model);
	r->model.apps = apps;
	r->model.pods = pods;
	r->model.dirty = true;
	r->model.need_resync = false;
	r->model.event_tasks = 0;
	release_held(r);
	mar_hostcache_refresh(r->hc, HOST_TTL_NS);
	r->count_skips = true;
	publish(r);
	r->last_sync_end = mar_now_ns();
	r->sync_gap_ns = paced(r->last_sync_end - t0, SYNC_DUTY,
			       r->s.resync_delay_ns, SYNC_GAP_MAX_NS);
	cnt_add(&r->c.sync[MAR_SYNC_OK], 1);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	cnt_set(&r->c.last_sync_ms,
		(uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
	bool first = !__atomic_load_n(&r->c.synced, __ATOMIC_RELAXED);
	cnt_set(&r->c.synced, 1);
	r->next_refresh = mar_now_ns() + r->s.refresh_ns;
	/* The first sync is said (the log then shows the resolver working,
	 * not only failing), and ends any failure's episode; later ones are
	 * counted in mixd_marathon_sync_total, and said only after a
	 * failure. */
	if (first) {
		r->episode = 0;
		logf_(r, "synced with %s: %llu apps, %llu pods, %llu tasks, %llu "
			 "pod instances",
		      r->base,
		      (unsigned long long)__atomic_load_n(&r->c.apps,
							  __ATOMIC_RELAXED),
		      (unsigned long long)__atomic_load_n(&r->c.pods,
							  __ATOMIC_RELAXED),
		      (unsigned long long)__atomic_load_n(&r->c.tasks,
							  __ATOMIC_RELAXED),
		      (unsigned long long)__atomic_load_n(&r->c.pod_instances,
							  __ATOMIC_RELAXED));
	}
	episode_ok(r);
	return 0;
}

/* sync_from(), and what its buffer keeps afterwards (for tests: it must
 * not keep the body; see body_release()). */
static int full_sync(struct mar_resolver *r, const char *base)
{
	int rc = sync_from(r, base);
	cnt_set(&r->c.body_cap, r->body.cap);
	return rc;
}

static void stream_stop(struct mar_resolver *r)
{
	if (!r->stream_up)
		return;
	curl_multi_remove_handle(r->multi, r->stream_h);
	r->stream_up = false;
	cnt_set(&r->c.connected, 0);
}

static int stream_start(struct mar_resolver *r)
{
	/* The types the model uses, and no others: a large cluster's stream
	 * is mostly health-check events, and each would be parsed for
	 * nothing. (A Marathon without the filter sends every type; the
	 * model counts the rest as "other".) */
	char url[2048];
	_Static_assert(sizeof url > sizeof r->base + 32 * MAR_EV_OTHER,
		       "room for the base and every event_type");
	size_t n = (size_t)snprintf(url, sizeof url, "%s/v2/events", r->base);
	for (int e = 0; e < MAR_EV_OTHER && n < sizeof url; e++)
		n += (size_t)snprintf(url + n, sizeof url - n, "%cevent_type=%s",
				      e ? '&' : '?',
				      mar_event_name((enum mar_event)e));
	CURL *h = r->stream_h;
	curl_easy_reset(h);
	setup_common(r, h, url);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->stream_hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, stream_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, stream_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->stream_errbuf);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	mar_sse_reset(&r->sse);
	r->stream_errbuf[0] = 0;
	r->stream_status = 0;
	r->stream_attached = false;
	r->stream_subscribed = false;
	r->stream_done = false;
	r->stream_got_bytes = false;
	r->stream_last_line_ns = r->stream_started_ns = mar_now_ns();
	if (curl_multi_add_handle(r->multi, h) != CURLM_OK)
		return -1;
	r->stream_up = true;
	cnt_set(&r->c.connected, 1);
	return 0;
}

/* The stream's own episodes (see stream_episode): logged once each. */
static void stream_episode_fail(struct mar_resolver *r, int kind,
				const char *what)
{
	if (r->stream_episode == kind)
		return;
	r->stream_episode = kind;
	logf_(r, "%s", what);
}

/* Has the stream died, or failed before it was answered? Counts the
 * reason and logs it, with the HTTP status of a refusal. */
static bool stream_dead(struct mar_resolver *r)
{
	enum mar_disconnect why;
	/* An error page, not a stream: counted as the sync counts it. (A
	 * redirect is not: curl follows it.) */
	long refused = r->stream_status >= 400 ? r->stream_status : 0;
	if (stopping(r))
		return false; /* our own abort, not Marathon's doing */
	if (r->stream_done) {
		if (refused)
			why = refused == 401 || refused == 403
				      ? MAR_DISC_UNAUTHORIZED
				      : MAR_DISC_ERROR;
		else if (r->stream_code == CURLE_OK)
			why = mar_sse_partial(&r->sse) ? MAR_DISC_TRUNCATED
						       : MAR_DISC_EOF;
		else if (r->sse.overflow)
			why = MAR_DISC_TRUNCATED;
		else if (r->stream_code == CURLE_PARTIAL_FILE)
			why = MAR_DISC_TRUNCATED;
		else
			why = MAR_DISC_ERROR;
	} else if (mar_now_ns() - r->stream_last_line_ns > r->s.stream_timeout_ns) {
		why = MAR_DISC_SILENT;
	} else {
		return false;
	}
	cnt_add(&r->c.disconnects[why], 1);
	char detail[CURL_ERROR_SIZE + 16] = "";
	if (refused)
		snprintf(detail, sizeof detail, ": HTTP %ld", refused);
	else if (why == MAR_DISC_ERROR && r->stream_errbuf[0])
		snprintf(detail, sizeof detail, ": %s", r->stream_errbuf);
	char msg[1400];
	snprintf(msg, sizeof msg, "event stream from %s %s (%s%s); "
		 "reconnecting", r->base,
		 r->stream_attached ? "ended" : "failed",
		 mar_disconnect_name(why), detail);
	/* The kind includes the status: a 403 turning into a 500 is news,
	 * the tenth 403 is not. */
	stream_episode_fail(r, 1 + (int)why + (int)(refused << 4), msg);
	stream_stop(r);
	return true;
}

/* How long after its 200 a stream may take to send event_stream_attached
 * (a Marathon that filters it out, or never sends it, is waited for no
 * longer: the sync then runs with the window the event would close). */
#define SUBSCRIBE_WAIT_NS (2 * 1000000000ll)

/* Wait for Marathon to subscribe the stream just started: true once it
 * has (event_stream_attached, or SUBSCRIBE_WAIT_NS after its 200), false
 * when it failed (counted and logged) or stop was asked. */
static bool stream_attach(struct mar_resolver *r)
{
	while (!stopping(r)) {
		drive(r, TICK_MS);
		if (r->stream_attached &&
		    (r->stream_subscribed ||
		     mar_now_ns() - r->stream_answered_ns >= SUBSCRIBE_WAIT_NS)) {
			if (r->stream_episode) {
				r->stream_episode = 0;
				logf_(r, "event stream from %s attached again",
				      r->base);
			}
			return true;
		}
		if (stream_dead(r))
			return false;
	}
	return false;
}

static void wait_ns(struct mar_resolver *r, int64_t ns)
{
	int64_t end = mar_now_ns() + ns;
	while (!stopping(r)) {
		int64_t left = end - mar_now_ns();
		if (left <= 0)
			break;
		drive(r, left / 1000000 > TICK_MS ? TICK_MS
						  : (int)(left / 1000000) + 1);
	}
}

static bool take_settings(struct mar_resolver *r);

static void *thread_main(void *arg)
{
	struct mar_resolver *r = arg;
	size_t ai = 0;
	int64_t backoff = r->s.backoff_min_ns;

	while (!stop_asked(r)) {
		if (take_settings(r)) {
			/* Start over on the new settings; the snapshot in
			 * force stays until their first sync replaces it. */
			stream_stop(r);
			drop_held(r);
			ai = 0;
			backoff = r->s.backoff_min_ns;
			r->publish_gap_ns = r->s.publish_interval_ns;
			r->episode = 0;
			r->stream_episode = 0;
			/* Synced means with the settings in force: the snapshot
			 * serves on, but readiness waits for them to work. */
			cnt_set(&r->c.synced, 0);
			if (r->s.n_addrs)
				logf_(r, "settings changed: following %s",
				      r->s.addrs[0]);
			else
				logf_(r, "paused: no mesosenv handler");
		}
		if (!r->s.n_addrs) {
			/* Paused: nothing asks, so nothing is fetched until
			 * new settings or stop wake the thread (both call
			 * curl_multi_wakeup()). */
			drive(r, 1000);
			continue;
		}
		if (!r->stream_up) {
			/* (Re)connect: the stream first, and the full sync
			 * once Marathon has answered it: an event after the
			 * sync's answer then reaches the stream (and is held
			 * through the sync), so none falls between. */
			refresh_headers(r);
			const char *base = r->s.addrs[ai];
			snprintf(r->base, sizeof r->base, "%s", base);
			bool attached = stream_start(r) == 0 && stream_attach(r);
			if (stopping(r)) {
				stream_stop(r);
				continue; /* stop, or new settings */
			}
			/* A stream Marathon refuses while it serves apps (403:
			 * an account that may not read events) leaves mixd
			 * polling: a sync at start and every refresh, not one
			 * at every try of the stream. An unreachable Marathon
			 * still gets its sync (the outage is counted there,
			 * and the next address tried). */
			bool poll_only =
				!attached && r->stream_status >= 400 &&
				__atomic_load_n(&r->c.synced, __ATOMIC_RELAXED) &&
				mar_now_ns() < r->next_refresh;
			bool synced = !poll_only && full_sync(r, base) == 0;
			bool next = false; /* once an attempt, whatever failed */
			if (!poll_only && !synced) {
				stream_stop(r);
				if (stopping(r))
					continue; /* stop, or new settings */
				next = true;
			}
			/* A stream refused for another reason than the
			 * account (a standby's or an electing leader's 503)
			 * is asked of the next Marathon. */
			if (!attached && r->stream_status >= 400 &&
			    r->stream_status != 401 && r->stream_status != 403)
				next = true;
			if (next)
				ai = (ai + 1) % r->s.n_addrs;
			if (!attached || !synced) {
				/* Retry (the stream, or the next address) with
				 * the backoff: a refusal is not news every
				 * 250 ms. */
				wait_ns(r, backoff);
				backoff = backoff * 2 > r->s.backoff_max_ns
						  ? r->s.backoff_max_ns
						  : backoff * 2;
				continue;
			}
		}
		drive(r, TICK_MS);
		int64_t now = mar_now_ns();
		if (stream_dead(r)) {
			/* Flapping stays backed off; a stream that lived
			 * long enough starts over from the minimum. */
			if (now - r->stream_started_ns > r->s.backoff_max_ns)
				backoff = r->s.backoff_min_ns;
			wait_ns(r, backoff);
			backoff = backoff * 2 > r->s.backoff_max_ns
					  ? r->s.backoff_max_ns
					  : backoff * 2;
			continue;
		}
		if ((r->model.need_resync && now >= r->resync_at &&
		     now - r->last_sync_end >= r->sync_gap_ns) ||
		    now >= r->next_refresh) {
			if (full_sync(r, r->base) < 0) {
				/* The leader stopped answering: start over,
				 * with the next address. */
				stream_stop(r);
				ai = (ai + 1) % r->s.n_addrs;
				wait_ns(r, backoff);
				continue;
			}
		}
		if (r->model.dirty &&
		    now - r->last_publish >= r->publish_gap_ns)
			publish(r);
	}
	stream_stop(r);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Lifecycle */

static void settings_free(struct settings *st)
{
	for (size_t i = 0; i < st->n_addrs; i++)
		free(st->addrs[i]);
	free(st->user);
	if (st->password) {
		memset(st->password, 0, strlen(st->password));
		free(st->password);
	}
	if (st->token) {
		memset(st->token, 0, strlen(st->token));
		free(st->token);
	}
	free(st->token_file);
	free(st->ca_file);
	memset(st, 0, sizeof *st);
}

static void destroy(struct mar_resolver *r)
{
	if (r->multi)
		curl_multi_cleanup(r->multi);
	if (r->sync_h)
		curl_easy_cleanup(r->sync_h);
	if (r->stream_h)
		curl_easy_cleanup(r->stream_h);
	curl_slist_free_all(r->hdrs);
	curl_slist_free_all(r->stream_hdrs);
	free(r->body.p);
	free(r->held.p);
	mar_sse_free(&r->sse);
	mar_model_clear(&r->model);
	mar_hostcache_destroy(r->hc);
	settings_free(&r->s);
	settings_free(&r->asked);
	if (r->pending) {
		settings_free(r->pending);
		free(r->pending);
	}
	pthread_mutex_destroy(&r->set_mu);
	pthread_mutex_destroy(&r->readers_mu);
	free(r);
}

static void global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int64_t dflt(int64_t v, int64_t d)
{
	return v > 0 ? v : d;
}

/* Parse and copy @o into @st (zeroed): 0, -EINVAL (said to @to; never a
 * credential) or -ENOMEM. On failure @st holds what was copied, for
 * settings_free(). @o NULL: paused, no address. */
static int settings_parse(const struct say *to, struct settings *st,
			  const struct mar_options *o)
{
	if (!o)
		return 0; /* paused: no address */
	const char *as = o->addresses && *o->addresses ? o->addresses
						       : MAR_DEFAULT_ADDRESS;
	int rc;
	st->user = dup_or_null(o->basic_user);
	st->password = dup_or_null(o->basic_password);
	st->token = dup_or_null(o->auth_token);
	st->token_file = dup_or_null(o->auth_token_file);
	st->ca_file = dup_or_null(o->ca_file);
	if ((o->basic_user && *o->basic_user && !st->user) ||
	    (o->basic_password && *o->basic_password && !st->password) ||
	    (o->auth_token && *o->auth_token && !st->token) ||
	    (o->auth_token_file && *o->auth_token_file && !st->token_file) ||
	    (o->ca_file && *o->ca_file && !st->ca_file))
		return -ENOMEM;
	for (const char *p = as;; ) {
		const char *c = cfg_address_end(p);
		size_t n = c ? (size_t)(c - p) : strlen(p);
		if ((rc = add_address(st, p, n)) < 0) {
			/* Not echoed: it may hold a password. */
			sayf(to, "bad marathon_address entry %zu: want "
				 "[http[s]://][user:password@]host[:port][/path],"
				 " a password's '%%' written %%25",
			      st->n_addrs + 1);
			return rc;
		}
		if (!c)
			break;
		p = c + 1;
	}
	if (!st->n_addrs) {
		sayf(to, "marathon_address names no address");
		return -EINVAL;
	}
	if (st->password && !st->user) {
		sayf(to, "http_basic_auth_password without a user");
		return -EINVAL;
	}
	if (st->ca_file) {
		FILE *f = fopen(st->ca_file, "r");
		if (!f) {
			int e = errno;
			if (o->ca_file_secret)
				sayf(to, "cannot read ca_file (the path a "
					 "secret gave): %s",
				     strerror(e));
			else
				sayf(to, "cannot read ca_file %s: %s",
				     st->ca_file, strerror(e));
			return -EINVAL;
		}
		fclose(f);
	}
	st->refresh_ns = dflt(o->refresh_ns, MAR_DEFAULT_REFRESH_NS);
	st->stream_timeout_ns =
		dflt(o->stream_timeout_ns, MAR_DEFAULT_STREAM_TIMEOUT_NS);
	st->backoff_min_ns = dflt(o->backoff_min_ns, 250000000ll);
	st->backoff_max_ns = dflt(o->backoff_max_ns, 30000000000ll);
	if (st->backoff_max_ns < st->backoff_min_ns)
		st->backoff_max_ns = st->backoff_min_ns;
	st->request_timeout_ns = dflt(o->request_timeout_ns, 60000000000ll);
	st->resync_delay_ns = dflt(o->resync_delay_ns, 1000000000ll);
	st->publish_interval_ns = dflt(o->publish_interval_ns, 100000000ll);
	st->sync_limit_ns = dflt(o->sync_limit_ns, 15 * 60 * 1000000000ll);
	return 0;
}

int mar_options_check(const struct mar_options *o, char *why, size_t cap)
{
	struct settings st = {0};
	const struct say to = {.why = why, .cap = cap};
	if (cap)
		why[0] = '\0';
	int rc = settings_parse(&to, &st, o);
	settings_free(&st);
	if (rc == -ENOMEM && cap)
		snprintf(why, cap, "out of memory");
	return rc;
}

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static bool settings_equal(const struct settings *a, const struct settings *b)
{
	if (a->n_addrs != b->n_addrs)
		return false;
	for (size_t i = 0; i < a->n_addrs; i++)
		if (strcmp(a->addrs[i], b->addrs[i]))
			return false;
	return same_str(a->user, b->user) &&
	       same_str(a->password, b->password) &&
	       same_str(a->token, b->token) &&
	       same_str(a->token_file, b->token_file) &&
	       same_str(a->ca_file, b->ca_file) &&
	       a->refresh_ns == b->refresh_ns &&
	       a->stream_timeout_ns == b->stream_timeout_ns &&
	       a->backoff_min_ns == b->backoff_min_ns &&
	       a->backoff_max_ns == b->backoff_max_ns &&
	       a->request_timeout_ns == b->request_timeout_ns &&
	       a->resync_delay_ns == b->resync_delay_ns &&
	       a->publish_interval_ns == b->publish_interval_ns &&
	       a->sync_limit_ns == b->sync_limit_ns;
}

int mar_resolver_start(const struct mar_options *o, struct mar_resolver **out)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	int rc = -ENOMEM;
	if (!o)
		return -EINVAL;
	struct mar_resolver *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	pthread_mutex_init(&r->readers_mu, NULL);
	pthread_mutex_init(&r->set_mu, NULL);
	r->c.body_cap = UINT64_MAX;
	r->log = o->log_file ? o->log_file : stderr;
	const struct say to = {.log = r->log};
	if ((rc = settings_parse(&to, &r->s, o)) ||
	    (rc = settings_parse(&to, &r->asked, o)))
		goto fail;
	r->publish_gap_ns = r->s.publish_interval_ns;
	logf_(r, "following %s", r->s.addrs[0]); /* no userinfo kept */

	rc = -ENOMEM;
	/* curl_global_init is not thread-safe; mixd starts one resolver per
	 * handler from main, but tests may start several. */
	pthread_once(&once, global_init);
	r->hc = mar_hostcache_create();
	r->multi = curl_multi_init();
	r->sync_h = curl_easy_init();
	r->stream_h = curl_easy_init();
	if (!r->hc || !r->multi || !r->sync_h || !r->stream_h)
		goto fail;
	ck_epoch_init(&r->epoch);
	ck_epoch_register(&r->epoch, &r->wrec, NULL);
	int e = pthread_create(&r->thread, NULL, thread_main, r);
	if (e) {
		rc = -e;
		goto fail;
	}
	*out = r;
	return 0;
fail:
	destroy(r);
	return rc;
}

int mar_resolver_reconfigure(struct mar_resolver *r,
			     const struct mar_options *o)
{
	struct settings *st = calloc(1, sizeof *st);
	if (!st)
		return -ENOMEM;
	const struct say to = {.log = r->log};
	int rc = settings_parse(&to, st, o);
	pthread_mutex_lock(&r->set_mu);
	if (!rc && settings_equal(st, &r->asked)) {
		rc = 0;
	} else if (!rc) {
		/* A copy to compare the next call with, and this one for the
		 * thread (replacing any it has not taken yet). */
		struct settings mine = {0};
		if ((rc = settings_parse(&to, &mine, o))) {
			settings_free(&mine);
		} else {
			settings_free(&r->asked);
			r->asked = mine;
			if (r->pending) {
				settings_free(r->pending);
				free(r->pending);
			}
			r->pending = st;
			st = NULL;
			__atomic_store_n(&r->reconf, 1, __ATOMIC_RELEASE);
			rc = 1;
		}
	}
	pthread_mutex_unlock(&r->set_mu);
	if (st) {
		settings_free(st);
		free(st);
	}
	if (rc == 1)
		curl_multi_wakeup(r->multi);
	return rc;
}

/* On the thread: the settings mar_resolver_reconfigure() left, if any,
 * now in force. */
static bool take_settings(struct mar_resolver *r)
{
	if (!__atomic_load_n(&r->reconf, __ATOMIC_ACQUIRE))
		return false;
	pthread_mutex_lock(&r->set_mu);
	struct settings *st = r->pending;
	r->pending = NULL;
	__atomic_store_n(&r->reconf, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&r->set_mu);
	if (!st)
		return false;
	settings_free(&r->s);
	r->s = *st;
	free(st);
	return true;
}

void mar_resolver_stop(struct mar_resolver *r)
{
	if (!r)
		return;
	__atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
	curl_multi_wakeup(r->multi);
	pthread_join(r->thread, NULL);
	/* No reader is left: everything retired can go now. */
	ck_epoch_barrier(&r->wrec);
	mar_snap_free(r->cur);
	for (struct injected *i = r->injected, *n; i; i = n) {
		n = i->next;
		mar_snap_free(i->s);
		free(i);
	}
	for (struct mar_reader *rd = r->readers, *n; rd; rd = n) {
		n = rd->next;
		free(rd);
	}
	destroy(r);
}

/* ------------------------------------------------------------------ */
/* Readers */

struct mar_reader *mar_reader_create(struct mar_resolver *r)
{
	struct mar_reader *rd;
	pthread_mutex_lock(&r->readers_mu);
	ck_epoch_record_t *rec = ck_epoch_recycle(&r->epoch, NULL);
	if (rec) {
		rd = (struct mar_reader *)rec; /* rec is the first member */
	} else {
		rd = aligned_alloc(64, (sizeof *rd + 63) & ~(size_t)63);
		if (!rd) {
			pthread_mutex_unlock(&r->readers_mu);
			return NULL;
		}
		memset(rd, 0, sizeof *rd);
		ck_epoch_register(&r->epoch, &rd->rec, NULL);
		rd->next = r->readers;
		r->readers = rd;
	}
	rd->r = r;
	rd->snap = NULL;
	rd->gen = 0;
	memset(&rd->src, 0, sizeof rd->src);
	memset(&rd->dst, 0, sizeof rd->dst);
	pthread_mutex_unlock(&r->readers_mu);
	return rd;
}

void mar_reader_destroy(struct mar_reader *rd)
{
	if (!rd)
		return;
	struct mar_resolver *r = rd->r;
	pthread_mutex_lock(&r->readers_mu);
	/* The record stays on ck's list (it cannot leave it); the next
	 * mar_reader_create() recycles it. Freed at mar_resolver_stop(). */
	ck_epoch_unregister(&rd->rec);
	pthread_mutex_unlock(&r->readers_mu);
}

/* Empty every way (the entries behind a zero tag are never read): 4 KiB
 * of tags, however many sets were in use. */
static void cache_clear(struct mar_reader *rd)
{
	memset(rd->src.tags, 0, sizeof rd->src.tags);
	memset(rd->dst.tags, 0, sizeof rd->dst.tags);
}

void mar_read_begin(struct mar_reader *rd)
{
	ck_epoch_begin(&rd->rec, NULL);
	/* Acquire pairs with publish()'s release: the snapshot's bytes. */
	const struct mar_snap *s = __atomic_load_n(&rd->r->cur,
						   __ATOMIC_ACQUIRE);
	rd->snap = s;
	/* A new snapshot: every cached pointer may point into the old one
	 * (about to be freed). Emptying the cache here, at most once per
	 * publish (publish_interval, 100 ms by default), costs less than a
	 * generation compare on every probe of every record. */
	uint64_t gen = s ? s->gen : 0;
	if (gen != rd->gen) {
		cache_clear(rd);
		rd->gen = gen;
	}
}

uint64_t mar_reader_generation(const struct mar_reader *rd)
{
	return rd->gen;
}

void mar_read_end(struct mar_reader *rd)
{
	rd->snap = NULL;
	MAR_TSAN_RELEASE(rd);
	ck_epoch_end(&rd->rec, NULL);
}

/* The bare id of uid @v (@n bytes), or NULL when @v is absent or empty. */
static inline const uint8_t *uid_key(const struct attr_value *v,
				     uint32_t *n)
{
	if (!v || !attr_type_is_string((enum attr_type)v->type))
		return NULL;
	size_t len;
	const char *id = mar_uid_bare(v->s, v->len, &len);
	*n = (uint32_t)len; /* <= v->len, a uint32_t */
	return len ? (const uint8_t *)id : NULL;
}

static inline v2u64 ld16(const uint8_t *p)
{
	v2u64 v;
	memcpy(&v, p, 16);
	return v;
}

static inline uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/*
 * A key of 1 to 64 bytes as four 16-byte blocks: at 0, 16, 32 and the one
 * ending where the key ends, each moved back so as not to pass the end
 * (so short keys repeat blocks). With the length they are the key, exactly:
 * every byte is in at least one block, nothing past the key is read, and
 * there is no byte-wise tail. A key under 16 bytes is one block of two
 * overlapping 8-byte (or 4-byte) halves, four times.
 */
static inline void key_blocks(const uint8_t *p, uint32_t n, v2u64 b[4])
{
	if (n >= 16) {
		uint32_t last = n - 16;
		b[0] = ld16(p);
		b[1] = ld16(p + min_u32(16, last));
		b[2] = ld16(p + min_u32(32, last));
		b[3] = ld16(p + last);
		return;
	}
	uint64_t x, y;
	mar_short_words(p, n, &x, &y);
	v2u64 v = {x, y};
	b[0] = b[1] = b[2] = b[3] = v;
}

/*
 * The cache's hash of a key: its blocks folded by add and xor (so equal or
 * swapped blocks do not cancel), the two lanes and @meta (length, port,
 * kind) folded into one word, then one multiply by an odd constant. Its
 * top bits (they depend on every bit below) pick the set, the 8 below
 * them are the tag. Two instructions a block against six for mar_hash(),
 * and no dependency chain through the multiplier: the hash only spreads
 * keys over the sets and skips ways that cannot match; a hit compares the
 * key itself.
 */
static inline uint64_t hash_of(v2u64 acc, uint64_t meta)
{
	uint64_t x = acc[0] + ((acc[1] << 29 | acc[1] >> 35) ^ meta);
	return x * 0x9e3779b97f4a7c15ull;
}

static inline uint64_t hash_blocks(const v2u64 b[4], uint64_t meta)
{
	return hash_of(((b[0] + b[1]) ^ b[2]) + b[3], meta);
}

static inline uint32_t set_of(uint64_t h)
{
	return (uint32_t)(h >> 55);
}
_Static_assert(CACHE_SETS == 512, "set_of() takes the hash's top 9 bits");

/* Never 0 (an empty way). Bits 48-54: below the set's. */
static inline uint8_t tag_of(uint64_t h)
{
	return (uint8_t)(h >> 47) | 1;
}

static inline uint64_t meta_of(uint32_t kind, uint32_t klen, uint32_t port)
{
	return klen | (uint64_t)port << 32 | (uint64_t)kind << 48;
}

static inline uint8_t way_tag(const struct cache_side *c, uint32_t si,
			      unsigned w)
{
	return (uint8_t)(c->tags[si] >> (8 * w));
}

/* The miss path: look @key up in @t and take a way of set @si for it. Out
 * of line, so the hit path stays small. */
static __attribute__((noinline)) const struct cache_way *
fill(struct cache_side *c, const struct mar_table *t, uint64_t h,
     uint64_t meta, const uint8_t *key, uint32_t klen, uint32_t port)
{
	uint32_t si = set_of(h);
	/* An empty way, else the one the hash picks: no LRU state to write
	 * on hits. */
	unsigned w = (unsigned)(h >> 32) & (CACHE_WAYS - 1);
	for (unsigned i = 0; i < CACHE_WAYS; i++)
		if (!way_tag(c, si, i)) {
			w = i;
			break;
		}
	uint64_t kh = mar_hash(key, klen, 0);
	const struct mar_slot *sl = mar_snap_find(t, key, klen, kh);
	/* An absent key over 64 bytes has no copy to be compared with: it is
	 * looked up each time (a proxy naming a long id Marathon does not
	 * know: rare) rather than matched by its hash, which a colliding key
	 * -- one that is present -- would match too. */
	static const struct cache_way absent;
	if (!sl && klen > 64)
		return &absent;
	struct cache_way *e = &c->way[si][w];
	c->tags[si] = (c->tags[si] & ~(0xffu << (8 * w))) |
		      (uint32_t)tag_of(h) << (8 * w);
	e->meta = meta;
	e->v = NULL;
	e->ctr = NULL;
	if (klen <= 64)
		key_blocks(key, klen, e->blk);
	e->key = NULL;
	/* An agent's IP names its one task only when no port says which
	 * task on the agent was meant (mar_snap_lookup()). */
	const uint32_t kind = (uint32_t)(meta >> 48); /* meta_of() */
	if (sl && kind == K_IP && port && sl->ctr == MAR_CTR_HOST_IP)
		sl = NULL;
	if (sl) {
		const struct mar_inst *in = sl->inst;
		int ci = kind == K_IPPORT ? sl->ctr
					  : mar_pick_container(in, port,
							       sl->ctr);
		e->v = in->v;
		if (ci >= 0 && (uint32_t)ci < in->n_ctr)
			e->ctr = &in->ctr[ci].name;
		e->key = sl->key;
	}
	return e;
}

/* probe() for keys over 64 bytes (long group paths): hashed by the same
 * fold over all their blocks, compared through the snapshot's copy. */
static __attribute__((noinline)) const struct cache_way *
probe_long(struct cache_side *c, const struct mar_table *t, uint32_t kind,
	   const uint8_t *key, uint32_t klen, uint32_t port)
{
	uint32_t last = klen - 16;
	v2u64 acc = ld16(key);
	for (uint32_t o = 16;; o += 32) {
		acc += ld16(key + min_u32(o, last));
		if (o >= last)
			break;
		acc ^= ld16(key + min_u32(o + 16, last));
		if (o + 16 >= last)
			break;
	}
	uint64_t meta = meta_of(kind, klen, port), h = hash_of(acc, meta);
	uint32_t si = set_of(h);
	for (unsigned w = 0; w < CACHE_WAYS; w++) {
		const struct cache_way *e = &c->way[si][w];
		if (way_tag(c, si, w) != tag_of(h) || e->meta != meta)
			continue;
		if (e->v && !memcmp(e->key, key, klen)) /* always found */
			return e;
	}
	return fill(c, t, h, meta, key, klen, port);
}

/* Does @e hold the key of blocks @b and @meta? */
static inline bool way_is(const struct cache_way *e, uint64_t meta,
			  const v2u64 b[4])
{
	v2u64 d = ((e->blk[0] ^ b[0]) | (e->blk[1] ^ b[1])) |
		  ((e->blk[2] ^ b[2]) | (e->blk[3] ^ b[3]));
	return e->meta == meta && !(d[0] | d[1]);
}

/*
 * The hit path: the way of set_of(@h) whose tag is tag_of(@h), picked
 * without a branch (which way holds a key is arbitrary, so a loop's exit
 * would be mispredicted about every other probe), if it holds the key of
 * blocks @b and @meta; else NULL (a miss, or another way of the same tag:
 * probe_more() decides).
 */
_Static_assert(CACHE_WAYS == 4, "a set's tags are one 32-bit word");

static inline const struct cache_way *
probe_hit(const struct cache_side *c, const v2u64 b[4], uint64_t meta,
	  uint64_t h)
{
	uint32_t si = set_of(h);
	/* The bytes of x that are 0 are the ways of our tag. Of the bits
	 * that flags, the lowest is exact (a borrow only runs upwards):
	 * bit 8w + 7 for the first such way w. */
	uint32_t x = c->tags[si] ^ tag_of(h) * 0x01010101u;
	uint32_t m = (x - 0x01010101u) & ~x & 0x80808080u;
	if (!m)
		return NULL;
	_Static_assert(sizeof(struct cache_way) == 128, "offset = 16 x bit");
	const struct cache_way *e =
		(const void *)((const char *)c->way[si] +
			       ((size_t)__builtin_ctz(m) * 16 - 7 * 16));
	return way_is(e, meta, b) ? e : NULL;
}

/* The rest of probe(): every way whose tag matches (two keys of one tag
 * in a set: rare), then the snapshot. */
static __attribute__((noinline)) const struct cache_way *
probe_more(struct cache_side *c, const struct mar_table *t, uint32_t kind,
	   const uint8_t *key, uint32_t klen, uint32_t port, uint64_t h)
{
	uint64_t meta = meta_of(kind, klen, port);
	uint32_t si = set_of(h);
	v2u64 b[4];
	key_blocks(key, klen, b);
	for (unsigned w = 0; w < CACHE_WAYS; w++)
		if (way_tag(c, si, w) == tag_of(h) &&
		    way_is(&c->way[si][w], meta, b))
			return &c->way[si][w];
	return fill(c, t, h, meta, key, klen, port);
}

/* The way of @c holding (@kind, @key of at most 64 bytes, @port), or
 * NULL; *@h: the key's hash, for a fill. The hit path of probe() and of
 * mar_lookup()'s fast path. */
static inline __attribute__((always_inline)) const struct cache_way *
cached(const struct cache_side *c, uint32_t kind, const uint8_t *key,
       uint32_t klen, uint32_t port, uint64_t *h)
{
	v2u64 b[4];
	key_blocks(key, klen, b);
	uint64_t meta = meta_of(kind, klen, port);
	*h = hash_blocks(b, meta);
	return probe_hit(c, b, meta, *h);
}

/* The entry for (@kind, @key, @port) in cache side @c, filled from @t on a
 * miss. */
static inline __attribute__((always_inline)) const struct cache_way *
probe(struct cache_side *c, const struct mar_table *t, uint32_t kind,
      const uint8_t *key, uint32_t klen, uint32_t port)
{
	if (klen > 64)
		return probe_long(c, t, kind, key, klen, port);
	uint64_t h;
	const struct cache_way *e = cached(c, kind, key, klen, port, &h);
	return e ? e : probe_more(c, t, kind, key, klen, port, h);
}

/* destination_port, if it is one (1 to 65535), else 0. */
static inline uint32_t port_of(const struct attr_value *v)
{
	if (v && v->type == ATTR_INT64 && v->i > 0 && v->i <= 65535)
		return (uint32_t)v->i;
	return 0;
}

/* mar_lookup() in full: every key kind, misses, fallbacks to IPs. */
static __attribute__((noinline)) bool
lookup_slow(struct mar_reader *rd, const struct mar_query *q,
	    struct mar_result *out)
{
	const struct mar_snap *s = rd->snap;
	const uint8_t *id;
	uint32_t len;
	uint8_t k[MAR_IPPORT_KEY_LEN];
	const struct cache_way *e = NULL;
	const struct attr_value *src = NULL, *dst = NULL, *ctr = NULL;
	uint32_t port;

	if (!s)
		goto out;
	port = port_of(q->destination_port);

	/* A uid, when there is one, decides alone (mar_snap_lookup()). */
	if ((id = uid_key(q->source_uid, &len)))
		e = probe(&rd->src, &s->by_id, K_UID, id, len, 0);
	else if (q->source_ip && mar_ip_key(q->source_ip, k))
		e = probe(&rd->src, &s->by_ip, K_IP, k, MAR_IPKEY_LEN, 0);
	if (e)
		src = e->v;

	e = NULL;
	if ((id = uid_key(q->destination_uid, &len))) {
		e = probe(&rd->dst, &s->by_id, K_UID, id, len, port);
	} else if (q->destination_ip && mar_ip_key(q->destination_ip, k)) {
		if (port) {
			k[16] = (uint8_t)(port >> 8);
			k[17] = (uint8_t)port;
			e = probe(&rd->dst, &s->by_ipport, K_IPPORT, k,
				  MAR_IPPORT_KEY_LEN, port);
		}
		if (!e || !e->v)
			e = probe(&rd->dst, &s->by_ip, K_IP, k, MAR_IPKEY_LEN,
				  port);
	}
	if (e && e->v) {
		dst = e->v;
		ctr = e->ctr;
	}
out:
	out->src = src;
	out->dst = dst;
	out->dst_container = ctr;
	return src || dst;
}

/* The cached answer for uid @v (K_UID, @port) in @c when it is the common
 * case: a string whose bare id is 16 to 64 bytes, found in the snapshot,
 * held in the first way of its tag. Else NULL: lookup_slow() decides. */
static inline __attribute__((always_inline)) const struct cache_way *
uid_hit(const struct cache_side *c, const struct attr_value *v,
	uint32_t port)
{
	static const char k8s[] = "kubernetes://";
	const size_t kl = sizeof k8s - 1;
	uint64_t k0, k1;
	memcpy(&k0, k8s, 8);
	memcpy(&k1, k8s + kl - 8, 8);

	if (!v || v->type != ATTR_STRING)
		return NULL;
	const uint8_t *id = (const uint8_t *)v->s;
	uint32_t len = v->len;
	/* What the proxies send, tested in one branch: the prefix's two
	 * overlapping words (mar_uid_bare() for every other form). */
	if (len - (kl + 16) <= 64 - 16 &&
	    !((mar_ld64(id) ^ k0) | (mar_ld64(id + kl - 8) ^ k1))) {
		id += kl;
		len -= kl;
	} else {
		size_t n;
		id = (const uint8_t *)mar_uid_bare(v->s, len, &n);
		len = (uint32_t)n;
		if (len - 16 > 64 - 16)
			return NULL;
	}
	uint64_t h;
	const struct cache_way *e = cached(c, K_UID, id, len, port, &h);
	return e && e->v ? e : NULL;
}

/*
 * Records that carry both uids (what Istio's proxies send) take the path
 * above, twice, and nothing else: no call, so no registers to save, and no
 * test for what they do not carry. Anything else starts over in
 * lookup_slow(), which repeats at most the two hit attempts.
 */
bool mar_lookup(struct mar_reader *rd, const struct mar_query *q,
		struct mar_result *out)
{
	const struct cache_way *se, *de;
	if (!rd->snap ||
	    !(se = uid_hit(&rd->src, q->source_uid, 0)) ||
	    !(de = uid_hit(&rd->dst, q->destination_uid,
			   port_of(q->destination_port))))
		return lookup_slow(rd, q, out);
	out->src = se->v;
	out->dst = de->v;
	out->dst_container = de->ctr;
	return true;
}

void mar_stats(const struct mar_resolver *r, struct mar_stats *out)
{
	const struct counters *c = &r->c;
	memset(out, 0, sizeof *out);
	for (int i = 0; i < MAR_SYNC_COUNT; i++)
		out->sync[i] = __atomic_load_n(&c->sync[i], __ATOMIC_RELAXED);
	for (int i = 0; i < MAR_EV_COUNT; i++)
		out->events[i] = __atomic_load_n(&c->events[i],
						 __ATOMIC_RELAXED);
	for (int i = 0; i < MAR_DISC_COUNT; i++)
		out->disconnects[i] = __atomic_load_n(&c->disconnects[i],
						      __ATOMIC_RELAXED);
	out->entries_skipped = __atomic_load_n(&c->entries_skipped,
					       __ATOMIC_RELAXED);
	out->snapshots = __atomic_load_n(&c->snapshots, __ATOMIC_RELAXED);
	out->apps = __atomic_load_n(&c->apps, __ATOMIC_RELAXED);
	out->pods = __atomic_load_n(&c->pods, __ATOMIC_RELAXED);
	out->tasks = __atomic_load_n(&c->tasks, __ATOMIC_RELAXED);
	out->pod_instances = __atomic_load_n(&c->pod_instances,
					     __ATOMIC_RELAXED);
	out->last_sync_unix =
		(double)__atomic_load_n(&c->last_sync_ms, __ATOMIC_RELAXED) /
		1000.0;
	out->last_build_seconds =
		(double)__atomic_load_n(&c->last_build_us, __ATOMIC_RELAXED) /
		1e6;
	out->synced = __atomic_load_n(&c->synced, __ATOMIC_RELAXED);
	out->connected = __atomic_load_n(&c->connected, __ATOMIC_RELAXED);
}

size_t mar_resolver_sync_buffer(const struct mar_resolver *r)
{
	uint64_t v = __atomic_load_n(&r->c.body_cap, __ATOMIC_RELAXED);
	return v == UINT64_MAX ? SIZE_MAX : (size_t)v;
}

int mar_resolver_inject(struct mar_resolver *r, struct mar_snap *s)
{
	/* Generations apart from the thread's own. */
	const uint64_t base = 1ull << 62;
	struct mar_snap *old = __atomic_load_n(&r->cur, __ATOMIC_ACQUIRE);
	if (old && old->gen < base)
		return -EBUSY; /* the thread has synced: not ours to replace */
	struct injected *keep = NULL;
	if (old && !(keep = malloc(sizeof *keep)))
		return -ENOMEM;
	s->gen = base + ++r->injected_gen;
	if (!__atomic_compare_exchange_n(&r->cur, &old, s, false,
					 __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
		free(keep);
		return -EBUSY;
	}
	if (keep) {
		keep->s = old;
		keep->next = r->injected;
		r->injected = keep;
	}
	return 0;
}
