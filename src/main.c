/*
 * main.c -- mixd: flags, wiring, signals, lifecycle. No logic of its own.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agg/agg.h"
#include "attr/attr.h"
#include "expose/expose.h"
#include "ingest/ingest.h"

/* ---- settings: one table, from which parsing and --help come ---------- */

struct settings {
	char address[PATH_MAX + 8];
	const char *monitoring_address;
	const char *prometheus_address;
	unsigned shards;
	unsigned idle_sleep_max_us;
};

enum opt_id {
	OPT_ADDRESS = 1,
	OPT_MONITORING,
	OPT_PROMETHEUS,
	OPT_SHARDS,
	OPT_IDLE_SLEEP,
	OPT_HELP,
	OPT_VERSION,
};

struct setting {
	const char *name;
	const char *alias; /* Mixer's spelling, if different */
	enum opt_id id;
	const char *arg;   /* NULL: a switch */
	const char *dflt;
	const char *help;
};

static const struct setting settings_table[] = {
	{"address", NULL, OPT_ADDRESS, "unix:///PATH",
	 "$XDG_RUNTIME_DIR/mixd.sock, else /tmp/mixd.sock",
	 "Unix socket producers connect to (Mixer's --address)."},
	{"monitoring-address", "monitoringPort", OPT_MONITORING, "HOST:PORT",
	 ":9093",
	 "Self-metrics, /healthz, /readyz and /version. Port 0 picks a free "
	 "port (printed at start)."},
	{"prometheus-address", NULL, OPT_PROMETHEUS, "HOST:PORT", ":42422",
	 "The istio_* metrics for Prometheus, as Mixer's prometheus adapter "
	 "served them."},
	{"shards", NULL, OPT_SHARDS, "N", "online CPUs",
	 "Aggregator threads; each owns a share of the producers."},
	{"idle-sleep-max-us", NULL, OPT_IDLE_SLEEP, "US", "5000",
	 "Longest an idle shard sleeps before looking at its rings again: "
	 "the worst-case pickup latency when mixd is idle."},
	{"help", NULL, OPT_HELP, NULL, NULL, "Print this help and exit."},
	{"version", NULL, OPT_VERSION, NULL, NULL, "Print the version and exit."},
};

#define NSETTINGS (sizeof settings_table / sizeof settings_table[0])

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: mixd [OPTION]...\n"
		"Aggregate Istio Mixer telemetry from sidecar proxies into "
		"Prometheus metrics.\n\n");
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *s = &settings_table[i];
		char lhs[64];
		snprintf(lhs, sizeof lhs, "--%s%s%s", s->name, s->arg ? " " : "",
			 s->arg ? s->arg : "");
		fprintf(f, "  %-32s %s\n", lhs, s->help);
		if (s->alias)
			fprintf(f, "  %-32s   Also spelled --%s.\n", "", s->alias);
		if (s->dflt)
			fprintf(f, "  %-32s   Default: %s.\n", "", s->dflt);
	}
	fprintf(f, "\nSignals: SIGTERM or SIGINT stop accepting producers, drain "
		   "their rings and exit 0.\n");
}

static int parse_uint(const char *flag, const char *v, unsigned lo, unsigned hi,
		      unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (errno || *end || end == v || n < lo || n > hi) {
		fprintf(stderr, "mixd: --%s: \"%s\" is not a number in [%u, %u]\n",
			flag, v, lo, hi);
		return -1;
	}
	*out = (unsigned)n;
	return 0;
}

static int parse_flags(int argc, char **argv, struct settings *st)
{
	struct option longopts[2 * NSETTINGS + 1];
	size_t n = 0;
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *s = &settings_table[i];
		int has = s->arg ? required_argument : no_argument;
		longopts[n++] = (struct option){s->name, has, NULL, (int)s->id};
		if (s->alias)
			longopts[n++] = (struct option){s->alias, has, NULL, (int)s->id};
	}
	longopts[n] = (struct option){0};

	const char *xdg = getenv("XDG_RUNTIME_DIR");
	snprintf(st->address, sizeof st->address, "unix://%s/mixd.sock",
		 xdg && *xdg ? xdg : "/tmp");
	st->monitoring_address = ":9093";
	st->prometheus_address = ":42422";
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	st->shards = ncpu > 0 ? (unsigned)ncpu : 1;
	st->idle_sleep_max_us = 5000;

	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_ADDRESS:
			if (strlen(optarg) >= sizeof st->address) {
				fprintf(stderr, "mixd: --address: too long\n");
				return -1;
			}
			strcpy(st->address, optarg);
			break;
		case OPT_MONITORING:
			st->monitoring_address = optarg;
			break;
		case OPT_PROMETHEUS:
			st->prometheus_address = optarg;
			break;
		case OPT_SHARDS:
			if (parse_uint("shards", optarg, 1, 256, &st->shards))
				return -1;
			break;
		case OPT_IDLE_SLEEP:
			if (parse_uint("idle-sleep-max-us", optarg, 10, 1000000,
				       &st->idle_sleep_max_us))
				return -1;
			break;
		case 'h':
		case OPT_HELP:
			usage(stdout);
			exit(0);
		case OPT_VERSION:
			printf("mixd %s\n", MIXD_VERSION);
			exit(0);
		default:
			fprintf(stderr, "mixd: unknown or incomplete option \"%s\"\n"
					"Try 'mixd --help'.\n",
				argv[optind - 1]);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mixd: unexpected argument \"%s\"\nTry 'mixd --help'.\n",
			argv[optind]);
		return -1;
	}
	return 0;
}

/* ---- the running daemon ------------------------------------------------ */

struct mixd {
	struct settings st;
	struct attr_vocab *vocab;
	struct agg *agg;
	struct ingest_server *server;
	struct expose_http *monitoring;
	struct expose_http *prometheus;
	int serving; /* atomic */
};

static void family(struct expose_buf *b, const char *name, const char *type,
		   const char *help)
{
	expose_help(b, name, help);
	expose_type(b, name, type);
}

static void sample1(struct expose_buf *b, const char *name, const char *label,
		    const char *value, double v)
{
	struct expose_label l = {label, value};
	expose_sample(b, name, &l, label ? 1 : 0, v);
}

static int render_self(void *ctx, struct expose_buf *b, int *status,
		       const char **ctype)
{
	struct mixd *m = ctx;
	struct agg_ingest_stats a;
	struct ingest_server_stats s;
	agg_ingest_stats(m->agg, &a);
	ingest_server_stats(m->server, &s);

	family(b, "mixd_ingest_records_total", "counter",
	       "Records accepted from producers, by transport.");
	for (int t = 0; t < INGEST_TRANSPORT_COUNT; t++)
		sample1(b, "mixd_ingest_records_total", "transport",
			ingest_transport_name(t), (double)a.records[t]);

	family(b, "mixd_ingest_dropped_total", "counter",
	       "Records producers could not hand over, by reason: ring_full "
	       "(a producer's shared-memory ring was full), invalid (a "
	       "producer's builder refused the record). Socket producers "
	       "count their own drops: mixd pushes back instead of dropping.");
	sample1(b, "mixd_ingest_dropped_total", "reason", "ring_full",
		(double)a.dropped_ring_full);
	sample1(b, "mixd_ingest_dropped_total", "reason", "invalid",
		(double)a.dropped_invalid);

	family(b, "mixd_ingest_rejected_total", "counter",
	       "Records or connections mixd refused as malformed, by reason.");
	for (int r = 1; r < INGEST_REJ_COUNT; r++) {
		double v = (double)a.rejected[r];
		if (r == INGEST_REJ_FRAME)
			v += (double)s.stream_rejected;
		sample1(b, "mixd_ingest_rejected_total", "reason",
			ingest_reject_name(r), v);
	}
	sample1(b, "mixd_ingest_rejected_total", "reason", "handshake",
		(double)s.handshake_failed);

	family(b, "mixd_producers", "gauge",
	       "Producer connections open now (one per producer thread).");
	sample1(b, "mixd_producers", NULL, NULL, (double)s.producers);
	family(b, "mixd_ingest_rings", "gauge",
	       "Shared-memory rings being consumed (including rings of "
	       "producers that left, until drained).");
	sample1(b, "mixd_ingest_rings", NULL, NULL, (double)a.rings);
	family(b, "mixd_ingest_connections_total", "counter",
	       "Producer connections accepted.");
	sample1(b, "mixd_ingest_connections_total", NULL, NULL,
		(double)s.connections);
	family(b, "mixd_build_info", "gauge", "mixd's version.");
	sample1(b, "mixd_build_info", "version", MIXD_VERSION, 1);
	(void)status;
	*ctype = EXPOSE_CONTENT_TYPE_PROMETHEUS;
	return 0;
}

static int render_healthz(void *ctx, struct expose_buf *b, int *status,
			  const char **ctype)
{
	struct mixd *m = ctx;
	bool up = __atomic_load_n(&m->serving, __ATOMIC_ACQUIRE);
	*status = up ? 200 : 503;
	expose_buf_puts(b, up ? "ok\n" : "stopping\n");
	*ctype = EXPOSE_CONTENT_TYPE_TEXT;
	return 0;
}

static int render_version(void *ctx, struct expose_buf *b, int *status,
			  const char **ctype)
{
	expose_buf_puts(b, "mixd " MIXD_VERSION "\n");
	*ctype = EXPOSE_CONTENT_TYPE_TEXT;
	return 0;
}

static int render_istio(void *ctx, struct expose_buf *b, int *status,
			const char **ctype)
{
	/* The istio_* families arrive with the aggregation pipeline. */
	*ctype = EXPOSE_CONTENT_TYPE_PROMETHEUS;
	return 0;
}

static int start_http(struct mixd *m)
{
	const struct expose_route mon[] = {
		{"/metrics", render_self, m},
		{"/healthz", render_healthz, m},
		{"/readyz", render_healthz, m},
		{"/version", render_version, m},
	};
	const struct expose_route prom[] = {
		{"/metrics", render_istio, m},
	};
	struct expose_http_options mo = {.name = "monitoring"};
	struct expose_http_options po = {.name = "prometheus"};
	if (expose_http_start(m->st.monitoring_address, mon,
			      sizeof mon / sizeof mon[0], &mo, &m->monitoring))
		return -1;
	if (expose_http_start(m->st.prometheus_address, prom, 1, &po,
			      &m->prometheus))
		return -1;
	fprintf(stderr, "mixd: monitoring on http://%s:%u\n",
		"127.0.0.1", expose_http_port(m->monitoring));
	fprintf(stderr, "mixd: prometheus on http://%s:%u\n",
		"127.0.0.1", expose_http_port(m->prometheus));
	return 0;
}

static void shutdown_all(struct mixd *m)
{
	expose_http_stop(m->prometheus);
	expose_http_stop(m->monitoring);
	ingest_server_destroy(m->server);
	agg_destroy(m->agg);
	attr_vocab_destroy(m->vocab);
}

int main(int argc, char **argv)
{
	struct mixd m = {0};
	if (parse_flags(argc, argv, &m.st))
		return 2;

	/* Signals are taken by this thread alone, with sigwait: every thread
	 * started below inherits the mask. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	int rc = 1;
	m.vocab = attr_vocab_create();
	if (!m.vocab) {
		fprintf(stderr, "mixd: out of memory\n");
		return 1;
	}
	struct agg_options ao = {
		.shards = m.st.shards,
		.idle_sleep_max_us = m.st.idle_sleep_max_us,
	};
	if ((rc = agg_create(&ao, m.vocab, &m.agg))) {
		fprintf(stderr, "mixd: cannot create shards: %s\n", strerror(-rc));
		goto out;
	}
	if ((rc = agg_start(m.agg))) {
		fprintf(stderr, "mixd: cannot start shards: %s\n", strerror(-rc));
		goto out;
	}
	struct ingest_sink sink = agg_sink(m.agg);
	char err[256];
	if ((rc = ingest_server_start(m.st.address, &sink, &m.server, err,
				      sizeof err))) {
		fprintf(stderr, "mixd: %s\n", err);
		goto out;
	}
	__atomic_store_n(&m.serving, 1, __ATOMIC_RELEASE);
	if ((rc = start_http(&m)))
		goto out;
	fprintf(stderr, "mixd: %s: producers on %s, %u shards\n", MIXD_VERSION,
		m.st.address, m.st.shards);

	for (;;) {
		int sig;
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGTERM || sig == SIGINT)
			break;
		/* SIGHUP: config reload (with the config module); SIGPIPE:
		 * nothing. */
	}
	fprintf(stderr, "mixd: stopping: draining producer rings\n");
	__atomic_store_n(&m.serving, 0, __ATOMIC_RELEASE);
	ingest_server_stop_accepting(m.server);
	agg_drain_and_stop(m.agg);
	rc = 0;
out:
	shutdown_all(&m);
	if (rc == 0)
		fprintf(stderr, "mixd: stopped\n");
	return rc ? 1 : 0;
}
