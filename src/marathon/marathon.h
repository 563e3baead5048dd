/*
 * marathon -- the Marathon resolver behind the `mesos` template (the
 * mesosenv handler): who is behind a source or destination uid, IP or
 * port, as kubernetesenv answered for Kubernetes.
 *
 * Threads:
 *
 *   resolver thread (one per mar_resolver, started by mar_resolver_start):
 *     the event stream GET /v2/events (SSE) and, once Marathon has
 *     answered it (so no event falls between the two), a full sync of GET
 *     /v2/apps?embed=apps.tasks and GET /v2/pods/::status. A stream
 *     Marathon refuses (403: an account that may not read events) leaves
 *     it polling: a full sync at start and every refresh, the stream
 *     asked again with backoff. Events update its private
 *     model or invalidate it (a debounced full resync); a full resync also
 *     runs every refresh interval and after every reconnect. Each change
 *     builds a new immutable snapshot off to the side (host names resolved
 *     here, with getaddrinfo, never on a shard) and publishes it with one
 *     pointer store; old snapshots are reclaimed with ck_epoch once no
 *     reader can hold them.
 *
 *   shard threads (any number): each creates one mar_reader, brackets a
 *     batch of records with mar_read_begin() / mar_read_end(), and calls
 *     mar_lookup() per record. No lock, no syscall, no allocation, never a
 *     wait on Marathon. A reader has a 4-way cache of keys and answers in
 *     front of the snapshot; it holds one snapshot generation and
 *     mar_read_begin() empties it when a swap brings a new one, so a swap
 *     needs no coordination with readers.
 *
 * Usage from the aggregator (see also mar_options_from_handler):
 *
 *   struct mar_options o;
 *   mar_options_from_handler(h, flag_marathon_address, &o); // h: mesosenv
 *   struct mar_resolver *r;
 *   if (mar_resolver_start(&o, &r) < 0) -> bad options or ENOMEM only
 *   // per shard thread, on that thread:
 *   struct mar_reader *rd = mar_reader_create(r);
 *   mar_read_begin(rd);
 *   for each record: mar_lookup(rd, &q, &res); mar_result_get(&res, ...)
 *   mar_read_end(rd);       // before the shard sleeps or blocks
 *   mar_reader_destroy(rd); // on the shard thread, before stop
 *   mar_resolver_stop(r);   // after every reader is destroyed
 *
 * Failures never stop serving: Marathon down at start leaves an empty
 * snapshot (every lookup misses, bindings take their defaults, stats say
 * not synced); a later outage, a 401, a 500, malformed JSON or a truncated
 * stream keeps the last good snapshot. Each is counted in mar_stats and
 * logged once per episode to stderr as "mixd: marathon: ...". Credentials
 * are never logged.
 *
 * The mapping from Marathon objects to the template's outputs is in
 * src/marathon/MAPPING.md (and summarised at enum mar_out).
 */
#ifndef MIXD_MARATHON_H
#define MIXD_MARATHON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attr/attr.h"

struct cfg_handler;

/** The resolver: owns the thread, the connection and the snapshots. */
struct mar_resolver;

/** A shard's handle: its epoch record and its lookup cache. One thread. */
struct mar_reader;

/** Default refresh (full resync) interval: Mixer's mesosenv default. */
#define MAR_DEFAULT_REFRESH_NS (5ll * 60 * 1000000000)
/** A stream with no byte for this long is dead: 3 x Marathon's 10 s
 *  heartbeat, so one lost heartbeat or a slow GC pause is not a reconnect. */
#define MAR_DEFAULT_STREAM_TIMEOUT_NS (30ll * 1000000000)
/** Default marathon_address, as the user's mesosenv adapter had it. */
#define MAR_DEFAULT_ADDRESS "http://master.mesos:8080"

/**
 * Settings, copied by mar_resolver_start() (the caller may free its strings
 * afterwards). Zero means "the default" for every number; NULL means unset
 * for every string. Zero-initialise, then set what you need.
 */
struct mar_options {
	/** Comma-separated Marathon addresses for HA; the scheme is optional
	 *  (default http://). The first that answers is used; on failure the
	 *  next is tried. NULL: MAR_DEFAULT_ADDRESS. */
	const char *addresses;
	const char *basic_user;     /**< HTTP basic auth, with basic_password */
	const char *basic_password; /**< secret: never logged */
	/** DC/OS token, sent as "Authorization: token=<JWT>". Secret. */
	const char *auth_token;
	/** File holding the token (one trailing newline dropped); read at
	 *  every (re)connect, so a rotated token is picked up. Wins over
	 *  auth_token when both are set. */
	const char *auth_token_file;
	const char *ca_file; /**< CA bundle for https:// addresses */
	/** ca_file came from a secret (${...}): its path is never printed. */
	bool ca_file_secret;
	int64_t refresh_ns;  /**< full resync interval; default 5 min */
	/** Silence (no byte, heartbeats included) after which the event
	 *  stream is dead; default MAR_DEFAULT_STREAM_TIMEOUT_NS. */
	int64_t stream_timeout_ns;
	int64_t backoff_min_ns; /**< first reconnect delay; default 250 ms */
	int64_t backoff_max_ns; /**< delay cap (doubling); default 30 s */
	/** A full sync request fails when it moves under 1 KiB/s (no answer
	 *  yet, or a stalled body) for this long; default 60 s. The whole
	 *  request's limit is sync_limit_ns: a large body arriving steadily
	 *  is not cut. (Connecting has its own 5 s.) */
	int64_t request_timeout_ns;
	/** The longest a full sync request may take however steadily it
	 *  moves, so that a Marathon trickling its answer cannot hold the
	 *  resolver (no failover, nothing published) for hours; past it the
	 *  sync fails and the next address is tried; default 15 min, some
	 *  ten times what 100,000 tasks take on a slow link. */
	int64_t sync_limit_ns;
	/** An event that cannot be applied in place (a new pod instance, a
	 *  deployment) schedules a full resync this much later, so a burst
	 *  costs one; default 1 s. */
	int64_t resync_delay_ns;
	/** Events applied in place are published at most this often (each
	 *  publish rebuilds the snapshot); default 100 ms. A build that takes
	 *  longer than a tenth of it stretches the interval to ten builds (at
	 *  most 10 s), so rebuilding for events takes at most a tenth of a
	 *  core. */
	int64_t publish_interval_ns;
	/** Log lines go here; NULL: stderr. For tests. */
	void *log_file; /* FILE * */
};

/**
 * Fill @o from a mesosenv handler @h (config.h: struct cfg_mesosenv) and
 * the --marathon-address flag @override_address (NULL or "" when not
 * given; it replaces marathon_address). The strings point into @h and
 * @override_address, which must live until mar_resolver_start() returns.
 * Returns 0, or -EINVAL when @h is not a mesosenv handler.
 */
int mar_options_from_handler(const struct cfg_handler *h,
			     const char *override_address,
			     struct mar_options *o);

/**
 * Would mar_resolver_start() take @o? 0; or -EINVAL with the reason in
 * @why (@cap bytes; never a credential): a marathon_address entry it
 * cannot read, none at all, a password without a user, a ca_file it
 * cannot read; or -ENOMEM.
 */
int mar_options_check(const struct mar_options *o, char *why, size_t cap);

/**
 * Validate @o, start the resolver thread. It never fails because Marathon
 * is unreachable; only -EINVAL (bad address list, unreadable CA file,
 * user without password), -ENOMEM or a thread creation error (-errno).
 * Until the first sync, lookups miss and mar_stats().synced is false.
 */
int mar_resolver_start(const struct mar_options *o, struct mar_resolver **out);

/**
 * Give the running resolver new settings (a config reload that changed
 * the mesosenv handler). Copied, as by mar_resolver_start(). If they
 * differ from the last ones given, the thread drops its connection and
 * what it was fetching, logs "settings changed", and syncs again from the
 * new addresses with the new credentials; the snapshot in force serves
 * until that sync replaces it, and readers carry on untouched. @o NULL
 * pauses it (a reload dropped the handler): no connection, no sync, the
 * snapshot kept, until settings come again. Returns 1 (applying), 0
 * (nothing changed), -EINVAL (bad settings, logged; the old ones stay)
 * or -ENOMEM. Call from one thread at a time. mar_stats().synced is
 * false from the change until a sync on the new settings succeeds (the
 * old snapshot serving meanwhile).
 */
int mar_resolver_reconfigure(struct mar_resolver *r,
			     const struct mar_options *o);

/**
 * Stop the thread (interrupts a request in flight within ~100 ms) and
 * free everything. Every reader must have been destroyed. NULL is fine.
 */
void mar_resolver_stop(struct mar_resolver *r);

/**
 * Create a reader for the calling thread. Cheap but not free (an epoch
 * record and a 516 KiB 4-way cache, of which a shard touches what its
 * working set of uids needs): once per shard thread, not per batch.
 * NULL on ENOMEM.
 */
struct mar_reader *mar_reader_create(struct mar_resolver *r);

/** Destroy @rd (not inside a read section). NULL is fine. */
void mar_reader_destroy(struct mar_reader *rd);

/**
 * Enter a read section and pin the current snapshot. Results of
 * mar_lookup() stay valid until mar_read_end(). Keep sections short (a
 * batch): the resolver cannot free an old snapshot while any reader is
 * inside a section that started before the swap. Never sleep or block
 * inside one. Sections do not nest.
 */
void mar_read_begin(struct mar_reader *rd);

/** Leave the read section. */
void mar_read_end(struct mar_reader *rd);

/**
 * Inside a read section: the generation of the pinned snapshot (0: none
 * yet). mar_lookup()'s answer to a query is a function of the query and
 * this generation, so a caller may keep derived results while it stays
 * the same.
 */
uint64_t mar_reader_generation(const struct mar_reader *rd);

/**
 * The inputs of the mesos template. A NULL pointer is an absent input.
 * uids: STRING (any string-like type), one of
 *   kubernetes://<id>, mesos://<id>, or the bare <id>, where <id> is a
 *   Marathon task id (full, or without its last .suffix as the user's
 *   proxies send it), a pod instance id or a pod container's task id;
 *   "" is treated as absent.
 * ips: IP (len 4 or 16; BYTES of those lengths accepted); 0.0.0.0 and ::
 *   are treated as absent (the seed's default).
 * destination_port: INT64; 0 is treated as absent.
 */
struct mar_query {
	const struct attr_value *source_uid;
	const struct attr_value *source_ip;
	const struct attr_value *destination_uid;
	const struct attr_value *destination_ip;
	const struct attr_value *destination_port;
};

/**
 * The template's outputs (kubernetesenv's names). Values, for the task or
 * pod instance found (details in MAPPING.md):
 *   *_pod_uid             STRING     kubernetes://<pod name>
 *   *_pod_ip              IP         container IP, else the host IP
 *   *_pod_name            STRING     instance id (<safeId>.instance-<uuid>)
 *                                    or the legacy task id
 *   *_labels              STRING_MAP the app's / pod's labels
 *   *_namespace           STRING     group path, '/' -> '.', "default" at /
 *   *_service_account_name STRING    label istio.io/service-account, else
 *                                    serviceAccount, else "default"
 *   *_host_ip             IP         agent host, resolved at build
 *   *_workload_uid        STRING     istio://<namespace>/workloads/<name>
 *   *_workload_name       STRING     last segment of the app / pod id
 *   *_workload_namespace  STRING     = *_namespace
 *   *_owner               STRING     marathon://apps<id> / marathon://pods<id>
 *   destination_container_name STRING the pod container declaring
 *                                    destination_port (apps: the app name)
 * The source outputs come first, in this order, then the destination ones
 * in the same order, then destination_container_name.
 */
enum mar_out {
	MAR_OUT_SOURCE_POD_UID,
	MAR_OUT_SOURCE_POD_IP,
	MAR_OUT_SOURCE_POD_NAME,
	MAR_OUT_SOURCE_LABELS,
	MAR_OUT_SOURCE_NAMESPACE,
	MAR_OUT_SOURCE_SERVICE_ACCOUNT_NAME,
	MAR_OUT_SOURCE_HOST_IP,
	MAR_OUT_SOURCE_WORKLOAD_UID,
	MAR_OUT_SOURCE_WORKLOAD_NAME,
	MAR_OUT_SOURCE_WORKLOAD_NAMESPACE,
	MAR_OUT_SOURCE_OWNER,
	MAR_OUT_DESTINATION_POD_UID,
	MAR_OUT_DESTINATION_POD_IP,
	MAR_OUT_DESTINATION_POD_NAME,
	MAR_OUT_DESTINATION_LABELS,
	MAR_OUT_DESTINATION_NAMESPACE,
	MAR_OUT_DESTINATION_SERVICE_ACCOUNT_NAME,
	MAR_OUT_DESTINATION_HOST_IP,
	MAR_OUT_DESTINATION_WORKLOAD_UID,
	MAR_OUT_DESTINATION_WORKLOAD_NAME,
	MAR_OUT_DESTINATION_WORKLOAD_NAMESPACE,
	MAR_OUT_DESTINATION_OWNER,
	MAR_OUT_DESTINATION_CONTAINER_NAME,
	MAR_OUT_COUNT,
};

/** Outputs per side (source or destination), without the container. */
#define MAR_SIDE_FIELDS 11

/** The output's name as the template spells it ("source_pod_uid"). */
const char *mar_out_name(enum mar_out o);

/** Output by name (@len bytes, without "$out."), or -1. */
int mar_out_find(const char *name, size_t len);

/** Type of output @o (ATTR_STRING, ATTR_IP or ATTR_STRING_MAP). */
enum attr_type mar_out_type(enum mar_out o);

/**
 * What mar_lookup() found. @src and @dst point at MAR_SIDE_FIELDS values
 * (in enum mar_out order) inside the snapshot, NULL when that side was not
 * found; @dst_container likewise. A value with type ATTR_NONE is absent
 * (e.g. a host IP that did not resolve). Valid until mar_read_end().
 * Read it with mar_result_get().
 */
struct mar_result {
	const struct attr_value *src;
	const struct attr_value *dst;
	const struct attr_value *dst_container;
};

/** Output @o of @res, or NULL when absent (bind its default). */
static inline const struct attr_value *
mar_result_get(const struct mar_result *res, enum mar_out o)
{
	const struct attr_value *v;

	if (o < MAR_OUT_DESTINATION_POD_UID)
		v = res->src ? &res->src[o] : NULL;
	else if (o < MAR_OUT_DESTINATION_CONTAINER_NAME)
		v = res->dst ? &res->dst[o - MAR_OUT_DESTINATION_POD_UID]
			     : NULL;
	else
		v = res->dst_container;
	return v && v->type != ATTR_NONE ? v : NULL;
}

/**
 * A hash of what @res found, by content: equal for two lookups, in any two
 * snapshots, that found tasks or instances with the same outputs and
 * containers (and the same container of the destination). A caller that
 * kept results derived from a lookup may keep them across a new snapshot
 * while this stays the same. Reads the tasks' lines: not for every record.
 */
uint64_t mar_result_fingerprint(const struct mar_result *res);

/**
 * Resolve @q against the pinned snapshot (inside a read section).
 * Source: by source_uid, or when it is absent or empty by source_ip.
 * Destination: by destination_uid, or when it is absent or empty by
 * destination_ip + destination_port, else by destination_ip alone (an
 * agent's IP only without a port); destination_port then picks the
 * container, before the one a uid names. An IP shared by several tasks
 * (host networking) resolves only with a port. See MAPPING.md.
 * Returns true when either side was found. Warm-cache cost: see
 * bench/bench_marathon.c.
 */
bool mar_lookup(struct mar_reader *rd, const struct mar_query *q,
		struct mar_result *out);

/** Results of a full sync request, for mixd_marathon_sync_total{result}. */
enum mar_sync_result {
	MAR_SYNC_OK,
	MAR_SYNC_ERROR,	       /**< connect / transport / timeout */
	MAR_SYNC_UNAUTHORIZED, /**< 401 or 403 */
	MAR_SYNC_HTTP_ERROR,   /**< any other non-2xx (500, 503, ...) */
	MAR_SYNC_MALFORMED,    /**< not JSON, or not Marathon's shape */
	MAR_SYNC_TRUNCATED,    /**< body shorter than announced */
	MAR_SYNC_COUNT,
};

/** Label value of @r ("ok", "error", "unauthorized", "http_error",
 *  "malformed", "truncated"). */
const char *mar_sync_result_name(enum mar_sync_result r);

/** Event types counted, for mixd_marathon_events_total{type}. */
enum mar_event {
	MAR_EV_STATUS_UPDATE,
	MAR_EV_INSTANCE_CHANGED,
	MAR_EV_APP_TERMINATED,
	MAR_EV_POD_CREATED,
	MAR_EV_POD_UPDATED,
	MAR_EV_POD_DELETED,
	MAR_EV_DEPLOYMENT_SUCCESS,
	MAR_EV_DEPLOYMENT_FAILED,
	MAR_EV_DEPLOYMENT_INFO,
	MAR_EV_DEPLOYMENT_STEP,
	MAR_EV_API_POST,
	MAR_EV_GROUP_CHANGE,
	MAR_EV_STREAM_ATTACHED,
	MAR_EV_OTHER,	  /**< a type mixd does not use */
	MAR_EV_MALFORMED, /**< data that is not a JSON object of its type */
	MAR_EV_COUNT,
};

/** Label value of @e: Marathon's eventType ("status_update_event", ...),
 *  "other" or "malformed". */
const char *mar_event_name(enum mar_event e);

/** Why the event stream ended, for mixd_marathon_stream_disconnects_total. */
enum mar_disconnect {
	MAR_DISC_EOF,	    /**< the server closed it */
	MAR_DISC_SILENT,    /**< no byte (or no answer) for stream_timeout */
	MAR_DISC_ERROR,	    /**< transport error or other non-200 answer */
	MAR_DISC_TRUNCATED, /**< ended inside an event, or an oversized one */
	MAR_DISC_UNAUTHORIZED, /**< answered 401 or 403 */
	MAR_DISC_COUNT,
};

/** Label value of @d ("eof", "silent", "error", "truncated",
 *  "unauthorized"). */
const char *mar_disconnect_name(enum mar_disconnect d);

/**
 * Self-metrics. Counters are cumulative; gauges describe the published
 * snapshot. Suggested exposition:
 *   mixd_marathon_sync_total{result}            sync[]
 *   mixd_marathon_events_total{type}            events[]
 *   mixd_marathon_stream_disconnects_total{reason} disconnects[]
 *   mixd_marathon_entries_skipped_total         entries_skipped
 *   mixd_marathon_apps                          apps + pods
 *   mixd_marathon_tasks                         tasks + pod_instances
 *   mixd_marathon_last_sync_timestamp_seconds   last_sync_unix
 *   mixd_marathon_synced (and /readyz)          synced
 */
struct mar_stats {
	uint64_t sync[MAR_SYNC_COUNT];
	uint64_t events[MAR_EV_COUNT];
	uint64_t disconnects[MAR_DISC_COUNT];
	/** Entries of /v2/apps and /v2/pods/::status answers (apps, tasks,
	 *  pods, instances) that full syncs skipped for their unexpected
	 *  shape, summed over syncs: each sync counts those it met. */
	uint64_t entries_skipped;
	uint64_t snapshots; /**< snapshots published */
	uint64_t apps;	    /**< apps in the snapshot */
	uint64_t pods;	    /**< pods in the snapshot */
	uint64_t tasks;	    /**< app tasks in the snapshot */
	uint64_t pod_instances;
	double last_sync_unix; /**< last successful full sync; 0: never */
	double last_build_seconds; /**< wall time of the last snapshot build */
	bool synced;	       /**< a full sync on the settings in force has
				    succeeded */
	bool connected;	       /**< the event stream is up now */
};

/** Read the counters; any thread, any time, no lock. */
void mar_stats(const struct mar_resolver *r, struct mar_stats *out);

#endif /* MIXD_MARATHON_H */
