/*
 * main.c -- mixd: flags, wiring, signals, lifecycle. No logic of its own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mixd/check.h>
#include <mixd/client.h>
#include <mixd/ring.h>

#include "agg/agg.h"
#include "attr/attr.h"
#include "config/config.h"
#include "expose/expose.h"
#include "ingest/ingest.h"
#include "marathon/marathon.h"
#include "policy/pol_server.h"
#include "policy/policy.h"

/* ---- settings: one table, from which parsing and --help come ---------- */

/* What this process serves: Mixer's istio-telemetry, istio-policy, or
 * both (bits). */
enum role {
	ROLE_TELEMETRY = 1,
	ROLE_POLICY = 2,
};

struct settings {
	char address[PATH_MAX + 8];
	char policy_address[PATH_MAX + 8];
	unsigned role; /* enum role bits */
	unsigned policy_clients; /* policy connections at once */
	const char *monitoring_address;
	const char *prometheus_address;
	const char *config;        /* file, directory or fs:// URL */
	const char *default_ns;
	const char *check_config;  /* --check-config: validate and exit */
	const char *marathon_address;
	unsigned shards;
	unsigned max_producers;
	unsigned long max_ring_mib; /* 0: a default ring per producer */
	uint64_t ring_bytes;        /* the limit, from the two above */
	unsigned idle_sleep_max_us;
	bool no_memo;
	unsigned long series_limit;
};

enum opt_id {
	OPT_ADDRESS = 1,
	OPT_MONITORING,
	OPT_PROMETHEUS,
	OPT_CONFIG,
	OPT_STORE_URL,
	OPT_DEFAULT_NS,
	OPT_CHECK_CONFIG,
	OPT_MARATHON,
	OPT_SHARDS,
	OPT_MAX_PRODUCERS,
	OPT_MAX_RING_MEMORY,
	OPT_SERIES_LIMIT,
	OPT_IDLE_SLEEP,
	OPT_NO_MEMO,
	OPT_ROLE,
	OPT_POLICY_ADDRESS,
	OPT_HELP,
	OPT_VERSION,
	OPT_IGNORED, /* Mixer flags mixd accepts and does not use */
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
	{"role", NULL, OPT_ROLE, "telemetry|policy|both", "telemetry",
	 "What to serve: records and /metrics (Mixer's istio-telemetry), "
	 "checks and quotas on --policy-address (istio-policy), or both in "
	 "one process."},
	{"policy-address", NULL, OPT_POLICY_ADDRESS, "unix:///PATH",
	 "$XDG_RUNTIME_DIR/mixd-policy.sock, else /tmp/mixd-policy.sock",
	 "Unix socket policy clients (mixd_checker) connect to, with "
	 "--role policy or both."},
	{"config", NULL, OPT_CONFIG, "PATH", "none: ingest only",
	 "Mixer configuration: a YAML file, or a directory walked recursively "
	 "for .yaml/.yml files. Reloaded on SIGHUP and when the files change."},
	{"configStoreURL", NULL, OPT_STORE_URL, "fs:///DIR", NULL,
	 "Mixer's spelling of --config; only fs:// stores exist here."},
	{"configDefaultNamespace", NULL, OPT_DEFAULT_NS, "NS", "istio-system",
	 "Rules in this namespace apply to every record; rules elsewhere only "
	 "to records of their namespace (as in Mixer)."},
	{"check-config", NULL, OPT_CHECK_CONFIG, "PATH", NULL,
	 "Validate a configuration, print a summary, exit 1 on any "
	 "error."},
	{"monitoring-address", "monitoringPort", OPT_MONITORING, "HOST:PORT",
	 ":9093",
	 "Self-metrics, /healthz, /readyz and /version. Port 0 picks a free "
	 "port (printed at start)."},
	{"prometheus-address", NULL, OPT_PROMETHEUS, "HOST:PORT", ":42422",
	 "The istio_* metrics for Prometheus, as Mixer's prometheus adapter "
	 "served them."},
	{"marathon-address", NULL, OPT_MARATHON, "URL[,URL...]", NULL,
	 "Override the mesosenv handler's marathon_address (local runs, "
	 "tests)."},
	{"shards", NULL, OPT_SHARDS, "N", "usable CPUs",
	 "Aggregator threads; each owns a share of the producers."},
	{"max-producers", NULL, OPT_MAX_PRODUCERS, "N", "4096",
	 "Producer connections open at once (one per producer thread). At "
	 "the limit mixd stops accepting (mixd_producers_limit_reached_total) "
	 "and newcomers wait, their records in their rings, until one "
	 "leaves. mixd raises its open-files limit to fit, up to the hard "
	 "limit."},
	{"max-ring-memory", NULL, OPT_MAX_RING_MEMORY, "MIB",
	 "a default ring per --max-producers (4,112 MiB for 4,096)",
	 "MiB of producers' shared-memory rings mixd maps at once (each "
	 "producer thread's ring is 1 MiB and a 4 KiB header unless it asks "
	 "for another size). Beyond, a new producer is refused "
	 "(mixd_ingest_rejected_total{reason=\"ring_memory\"}) and retries "
	 "after a backoff, its records in its ring meanwhile: a producer "
	 "cannot make mixd hold memory it chose the size of without bound. "
	 "Give mixd's container this much memory, and its own besides."},
	{"series-limit", NULL, OPT_SERIES_LIMIT, "N", "100000",
	 "Label sets a shard keeps per metric family that no other shard "
	 "keeps, and N KiB of their label values; beyond either, the records "
	 "of new label sets are counted (mixd_series_overflow_total), not "
	 "stored. Label sets other shards keep are kept too, up to 2N."},
	{"idle-sleep-max-us", NULL, OPT_IDLE_SLEEP, "US", "5000",
	 "Longest an idle shard sleeps before looking at its rings again: "
	 "the worst-case pickup latency when mixd is idle."},
	{"no-record-memo", NULL, OPT_NO_MEMO, NULL, NULL,
	 "Run every record through the whole configuration: no shard "
	 "remembers what records with the same attributes did "
	 "(mixd_record_memo_total). For comparisons and diagnosis."},
	{"help", NULL, OPT_HELP, NULL, NULL, "Print this help and exit."},
	{"version", NULL, OPT_VERSION, NULL, NULL, "Print the version and exit."},
};

/* Mixer server flags that a drop-in must accept. Each is named once at
 * start with what mixd does instead; none is silently dropped. */
static const struct {
	const char *name;
	bool arg;
	const char *why;
} ignored_flags[] = {
	{"trace_zipkin_url", true, "mixd does not trace requests"},
	{"trace_jaeger_url", true, "mixd does not trace requests"},
	{"trace_log_spans", false, "mixd does not trace requests"},
	{"port", true, "mixd has no gRPC API; producers use --address"},
	{"log_output_level", true, "mixd logs only what needs attention"},
	{"log_as_json", false, "mixd logs plain lines to stderr"},
	{"log_target", true, "mixd logs to stderr"},
	{"ctrlz_port", true, "mixd has no ControlZ; see --monitoring-address"},
	{"livenessProbePath", true, "mixd serves /healthz on the monitoring port"},
	{"readinessProbePath", true, "mixd serves /readyz on the monitoring port"},
	{"numCheckCacheEntries", true,
	 "mixd's checkers cache in the client library (mixd_checker)"},
	{"maxMessageSize", true, "mixd bounds records at 64 KiB"},
	{"maxConcurrentStreams", true, "mixd has no gRPC streams"},
	{"apiWorkerPoolSize", true, "mixd sizes its shards with --shards"},
	{"adapterWorkerPoolSize", true, "mixd sizes its shards with --shards"},
	{"singleThreaded", false, "see --shards"},
	{"useAdapterCRDs", false, "mixd reads kinds from files"},
	{"useTemplateCRDs", false, "mixd reads kinds from files"},
	{"profile", false, "use perf"},
};

/* A value Go's strconv.ParseBool takes, as Mixer's boolean flags did. */
static bool go_bool(const char *s)
{
	static const char *const ok[] = {"1", "t", "T", "TRUE", "true", "True",
					 "0", "f", "F", "FALSE", "false",
					 "False"};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
		if (!strcmp(s, ok[i]))
			return true;
	return false;
}

#define NSETTINGS (sizeof settings_table / sizeof settings_table[0])
#define NIGNORED (sizeof ignored_flags / sizeof ignored_flags[0])

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: mixd [server] [OPTION]...\n"
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
	fprintf(f, "\nAccepted for compatibility with Mixer's `mixs server`, and "
		   "ignored with a notice:\n ");
	for (size_t i = 0; i < NIGNORED; i++)
		fprintf(f, " --%s", ignored_flags[i].name);
	fprintf(f,
		"\n\nSignals: SIGHUP reloads the configuration (so do changes to "
		"its files); SIGTERM\nor SIGINT stop accepting producers, drain "
		"their rings and exit 0.\n");
}

static int parse_ulong(const char *flag, const char *v, unsigned long lo,
		       unsigned long hi, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (errno || *end || end == v || n < lo || n > hi) {
		fprintf(stderr, "mixd: --%s: \"%s\" is not a number in [%lu, %lu]\n",
			flag, v, lo, hi);
		return -1;
	}
	*out = n;
	return 0;
}

/*
 * Addresses are checked as the options are read, with the rules of the
 * servers that will use them, so that a malformed one is a bad command line
 * (exit 2) and nothing is started; whether it can be bound is known only
 * when it is (exit 1).
 */

static int check_listen(const char *flag, const char *address)
{
	char buf[256];
	const char *host, *port;
	if (expose_address_split(address, buf, sizeof buf, &host, &port) == 0)
		return 0;
	fprintf(stderr,
		"mixd: --%s: bad listen address \"%s\": want HOST:PORT, "
		":PORT, PORT or [IPV6]:PORT (port 0 to 65535)\n",
		flag, address);
	return -1;
}

static int check_socket_address(const char *address)
{
	if (ingest_address_path(address))
		return 0;
	fprintf(stderr,
		"mixd: --address: bad address \"%s\": want unix:///PATH or "
		"/PATH, an absolute path of at most %zu bytes\n",
		address, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	return -1;
}

/* --configStoreURL: fs:// only; explain the Kubernetes store away. */
static const char *store_path(const char *url)
{
	if (strncmp(url, "fs://", 5) == 0)
		return url + 5;
	if (strncmp(url, "k8s://", 6) == 0 || strncmp(url, "mcp://", 6) == 0) {
		fprintf(stderr,
			"mixd: --configStoreURL %s: mixd reads its configuration "
			"from files, not from Kubernetes or MCP.\n"
			"  Export the objects once, e.g.\n"
			"    kubectl get attributemanifests,rules,handlers,instances,"
			"metrics,prometheuses,mesosenvs,mesoses,stdios,logentries,"
			"deniers,listcheckers,listentries,memquotas,quotas,"
			"checknothings -A -o yaml > mixer.yaml\n"
			"  and start mixd with --configStoreURL fs:///path/to/dir "
			"(or --config mixer.yaml).\n",
			url);
		return NULL;
	}
	if (url[0] == '/')
		return url;
	fprintf(stderr, "mixd: --configStoreURL %s: expected fs:///path\n", url);
	return NULL;
}

/* Two numbers from file @path ("max" reads as -1); false if unreadable. */
static bool read_two(const char *path, long long *a, long long *b)
{
	FILE *f = fopen(path, "r");
	char w[32];
	int n = f ? fscanf(f, "%31s %lld", w, b) : 0;
	if (f)
		fclose(f);
	if (n < 1)
		return false;
	*a = strcmp(w, "max") ? atoll(w) : -1;
	return true;
}

/*
 * The CPUs the cgroup's quota allows, rounded up; 0: no quota. cgroup v2's
 * cpu.max ("QUOTA PERIOD"), else v1's cpu.cfs_quota_us and
 * cpu.cfs_period_us, of the cgroup /proc/self/cgroup names and of each
 * ancestor up to the hierarchy's root, the tightest (a slice's quota
 * bounds its services'). A container sees its own cgroup as the root
 * (cgroup namespace), or, without one, mounted there: that is read too.
 */
static unsigned cgroup_cpus(void)
{
	char line[512], dir[512] = "", path[700];
	bool v2 = false;
	FILE *f = fopen("/proc/self/cgroup", "r");
	while (f && fgets(line, sizeof line, f)) {
		char *ctl = strchr(line, ':'), *p = ctl ? strchr(++ctl, ':') : NULL;
		if (!p)
			continue;
		*p++ = 0;
		p[strcspn(p, "\n")] = 0;
		char list[512];
		snprintf(list, sizeof list, ",%s,", ctl);
		if (!*ctl && !strncmp(line, "0:", 2)) {
			v2 = true; /* a v1 cpu controller, if any, wins */
			snprintf(dir, sizeof dir, "%s", p);
		} else if (strstr(list, ",cpu,")) {
			v2 = false;
			snprintf(dir, sizeof dir, "%s", p);
			break;
		}
	}
	if (f)
		fclose(f);
	/* The tightest quota of the cgroup and its ancestors, up to the
	 * hierarchy's root. */
	unsigned best = 0;
	for (;;) {
		long long quota = -1, period = 0, unused;
		if (v2) {
			snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", dir);
			if (!read_two(path, &quota, &period))
				quota = -1;
		} else {
			snprintf(path, sizeof path,
				 "/sys/fs/cgroup/cpu%s/cpu.cfs_quota_us", dir);
			if (!read_two(path, &quota, &unused))
				quota = -1;
			snprintf(path, sizeof path,
				 "/sys/fs/cgroup/cpu%s/cpu.cfs_period_us", dir);
			if (!read_two(path, &period, &unused))
				period = 0;
		}
		if (quota > 0 && period > 0) {
			long long n = (quota + period - 1) / period;
			unsigned u = n > 4096 ? 4096 : (unsigned)n;
			if (!best || u < best)
				best = u;
		}
		char *slash = strrchr(dir, '/');
		if (!*dir || !slash)
			break;
		*slash = 0; /* "/a/b" -> "/a" -> "" (the root) */
	}
	return best;
}

/* CPUs mixd may run on: those of its affinity mask (taskset, cpusets),
 * no more than its cgroup's quota allows (a container's --cpus,
 * Marathon's cpus). --shards' default. */
static unsigned usable_cpus(void)
{
	cpu_set_t set;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
		n = CPU_COUNT(&set);
	unsigned q = cgroup_cpus();
	if (q && (long)q < n)
		n = q;
	return n < 1 ? 1 : n > 256 ? 256 : (unsigned)n;
}

static int parse_flags(int argc, char **argv, struct settings *st)
{
	bool policy_set = false; /* --policy-address given */
	struct option longopts[2 * NSETTINGS + NIGNORED + 1];
	size_t n = 0;
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *s = &settings_table[i];
		int has = s->arg ? required_argument : no_argument;
		longopts[n++] = (struct option){s->name, has, NULL, (int)s->id};
		if (s->alias)
			longopts[n++] = (struct option){s->alias, has, NULL, (int)s->id};
	}
	for (size_t i = 0; i < NIGNORED; i++)
		longopts[n++] = (struct option){
			ignored_flags[i].name,
			/* Mixer's booleans take =true or =false, as Go's
			 * flag package allows */
			ignored_flags[i].arg ? required_argument
					     : optional_argument,
			NULL, (int)(OPT_IGNORED + i)};
	longopts[n] = (struct option){0};

	const char *xdg = getenv("XDG_RUNTIME_DIR");
	snprintf(st->address, sizeof st->address, "unix://%s/mixd.sock",
		 xdg && *xdg ? xdg : "/tmp");
	snprintf(st->policy_address, sizeof st->policy_address,
		 "unix://%s/mixd-policy.sock", xdg && *xdg ? xdg : "/tmp");
	st->role = ROLE_TELEMETRY;
	st->policy_clients = 1024;
	st->monitoring_address = ":9093";
	st->prometheus_address = ":42422";
	st->default_ns = CFG_DEFAULT_NAMESPACE;
	st->shards = usable_cpus();
	st->max_producers = 4096;
	st->idle_sleep_max_us = 5000;
	st->series_limit = AGG_SERIES_LIMIT_DEFAULT;

	/* `mixs server ...`: the subcommand is the only one there is. */
	if (argc > 1 && strcmp(argv[1], "server") == 0) {
		argv[1] = argv[0];
		argv++;
		argc--;
	}
	int c;
	unsigned long v;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_ADDRESS:
			if (check_socket_address(optarg))
				return -1;
			/* fits: a sun_path is far shorter than st->address */
			strcpy(st->address, optarg);
			break;
		case OPT_MONITORING:
			if (check_listen("monitoring-address", optarg))
				return -1;
			st->monitoring_address = optarg;
			break;
		case OPT_PROMETHEUS:
			if (check_listen("prometheus-address", optarg))
				return -1;
			st->prometheus_address = optarg;
			break;
		case OPT_CONFIG:
			st->config = optarg;
			if (!*optarg) {
				fprintf(stderr, "mixd: --config: an empty path\n");
				return -1;
			}
			break;
		case OPT_STORE_URL:
			if (!(st->config = store_path(optarg)))
				return -1;
			if (!*st->config) {
				fprintf(stderr, "mixd: --configStoreURL %s: no path\n",
					optarg);
				return -1;
			}
			break;
		case OPT_DEFAULT_NS:
			st->default_ns = optarg;
			break;
		case OPT_CHECK_CONFIG:
			st->check_config = optarg;
			break;
		case OPT_MARATHON: {
			/* As the resolver would take it: a bad one is the
			 * command line's error, not the config's. */
			struct mar_options mo = {.addresses = optarg};
			char why[512];
			if (mar_options_check(&mo, why, sizeof why)) {
				fprintf(stderr, "mixd: --marathon-address: %s\n",
					why);
				return -1;
			}
			st->marathon_address = optarg;
			break;
		}
		case OPT_SHARDS:
			if (parse_ulong("shards", optarg, 1, 256, &v))
				return -1;
			st->shards = (unsigned)v;
			break;
		case OPT_MAX_PRODUCERS:
			if (parse_ulong("max-producers", optarg, 1, 1u << 20, &v))
				return -1;
			st->max_producers = (unsigned)v;
			break;
		case OPT_MAX_RING_MEMORY:
			if (parse_ulong("max-ring-memory", optarg, 1, 1ul << 30,
					&st->max_ring_mib))
				return -1;
			break;
		case OPT_SERIES_LIMIT:
			if (parse_ulong("series-limit", optarg, 1, 100000000,
					&st->series_limit))
				return -1;
			break;
		case OPT_IDLE_SLEEP:
			if (parse_ulong("idle-sleep-max-us", optarg, 10, 1000000, &v))
				return -1;
			st->idle_sleep_max_us = (unsigned)v;
			break;
		case OPT_NO_MEMO:
			st->no_memo = true;
			break;
		case OPT_ROLE:
			if (!strcmp(optarg, "telemetry"))
				st->role = ROLE_TELEMETRY;
			else if (!strcmp(optarg, "policy"))
				st->role = ROLE_POLICY;
			else if (!strcmp(optarg, "both"))
				st->role = ROLE_TELEMETRY | ROLE_POLICY;
			else {
				fprintf(stderr,
					"mixd: --role: \"%s\": want telemetry, "
					"policy or both\n",
					optarg);
				return -1;
			}
			break;
		case OPT_POLICY_ADDRESS:
			if (!ingest_address_path(optarg)) {
				fprintf(stderr,
					"mixd: --policy-address: bad address "
					"\"%s\": want unix:///PATH\n",
					optarg);
				return -1;
			}
			snprintf(st->policy_address, sizeof st->policy_address,
				 "%s", optarg);
			policy_set = true;
			break;
		case 'h':
		case OPT_HELP:
			usage(stdout);
			exit(0);
		case OPT_VERSION:
			printf("mixd %s\n", MIXD_VERSION);
			exit(0);
		default:
			if (c >= OPT_IGNORED && c < OPT_IGNORED + (int)NIGNORED) {
				const char *name = ignored_flags[c - OPT_IGNORED].name;
				if (!ignored_flags[c - OPT_IGNORED].arg && optarg &&
				    !go_bool(optarg)) {
					fprintf(stderr,
						"mixd: bad --%s=%s: want true or "
						"false\n",
						name, optarg);
					return -1;
				}
				fprintf(stderr, "mixd: notice: ignoring --%s: %s\n",
					name, ignored_flags[c - OPT_IGNORED].why);
				break;
			}
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
	/* Flags that this run has no use for: said, as ignored ones are. */
	if (policy_set && !(st->role & ROLE_POLICY))
		fprintf(stderr, "mixd: notice: --policy-address unused: --role "
				"telemetry serves no checks\n");
	if (st->marathon_address && !st->config && !st->check_config)
		fprintf(stderr, "mixd: notice: --marathon-address unused: "
				"without a configuration there is no mesosenv "
				"handler\n");
	return 0;
}

/* ---- the running daemon ------------------------------------------------ */

/*
 * Scrapes in flight at once on the Prometheus port. Each holds its view
 * (tens of MB at 100,000 label sets) until its client has read the whole
 * body; a Prometheus pair scrapes with one connection each. Beyond this,
 * a scrape is answered 503 at once: memory stays bounded whatever the
 * clients do. So that slow readers cannot keep Prometheus out, one client
 * address holds at most SCRAPES_PER_PEER of them, and a scrape is cut
 * (the connection closed) once it has run the scrape timeout its client
 * gave (Prometheus sends it; up to SCRAPE_TIMEOUT_MAX_S), or
 * SCRAPE_DEADLINE_S seconds when it gave none: past that, no Prometheus
 * is still waiting for it.
 */
#define SCRAPES_MAX 4
#define SCRAPES_PER_PEER 2
#define SCRAPE_DEADLINE_S 60
#define SCRAPE_TIMEOUT_MAX_S 120

struct inode_id {
	dev_t dev;
	ino_t ino;
};

struct mixd {
	struct settings st;
	struct attr_vocab *vocab;
	struct agg *agg;
	struct ingest_server *server;
	struct pol_server *policy;
	struct pol_engine *engine; /* built at start, before the server */
	struct expose_http *monitoring;
	struct expose_http *prometheus;
	struct mar_resolver *resolver; /* atomic: set once, by main */
	bool mesosenv; /* atomic: the config in force has a mesosenv handler */
	int serving; /* atomic */

	/* config reloads: written by the main thread, read by scrapes */
	uint64_t reload_failures;       /* atomic */
	double last_reload_ok;          /* atomic (bits), unix seconds */
	uint64_t last_scrape_ns;        /* atomic */
	uint64_t scrapes_refused;       /* atomic */
	uint64_t scrapes_cut;           /* atomic */
	/* The scrapes' slots: whose they are, under scrape_lock. */
	pthread_mutex_t scrape_lock;
	struct {
		bool used;
		uint8_t peer[16]; /* the client's IP, IPv4 mapped to IPv6 */
	} scrape_slot[SCRAPES_MAX];
	int inotify_fd;
	/* The directory holding the config path (or, while the path is
	 * missing, its nearest existing ancestor): its watch, and the name in
	 * it that leads to the config. A file or directory replaced by rename
	 * or by a symlink swap is a new inode, which no watch of the old one
	 * sees. */
	int dir_wd;
	char file_name[NAME_MAX + 1];
	bool watch_warned; /* live reload's trouble said once */
	/* The files and directories the inotify instance watches, by inode
	 * (as inotify knows them), sorted (rewatch()). */
	struct inode_id *watched;
	size_t nwatched;
};

#define TEXT_(x) #x
#define TEXT(x) TEXT_(x) /* a macro's value as a string literal */

static double wall_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

/* A family of one sample, with no labels. */
static void single(struct expose_buf *b, const char *name, const char *type,
		   double v, const char *help)
{
	family(b, name, type, help);
	sample1(b, name, NULL, NULL, v);
}

/* Bytes of rings mixd maps at most: --max-ring-memory, else room for a
 * default ring (and its header) per producer slot, so that the limit
 * refuses only rings larger than the default, never a producer that
 * --max-producers lets in. Once the producer limit is final. */
static uint64_t ring_limit(const struct settings *st)
{
	if (st->max_ring_mib)
		return (uint64_t)st->max_ring_mib << 20;
	return (uint64_t)st->max_producers *
	       (MIXD_RING_BYTES_DEFAULT + MIXD_RING_HDR_SIZE);
}

/* Descriptors mixd keeps for itself beside its producers': listening
 * sockets, HTTP connections (64 a server), Marathon, config, shards. */
#define FD_RESERVE 256

/*
 * Room for --max-producers connections, and for the one descriptor each
 * may send in its hello, which waits to be closed when it is refused
 * (ingest_close_untrusted(): a close may not return): the soft open-files
 * limit raised to fit, as far as the hard limit allows (distributions
 * start services at 1,024). Where even the hard limit is too low, fewer
 * producers, and stderr says so: accepting paused at a limit mixd counts
 * is better than accept() failing for want of a descriptor, which nothing
 * counts.
 */
static void fit_fd_limit(struct settings *st)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY)
		return;
	/* a producer: its connection and the descriptor its hello may
	 * carry; a policy client: its connection */
	rlim_t producers = st->role & ROLE_TELEMETRY ? st->max_producers : 0;
	rlim_t policy = st->role & ROLE_POLICY ? st->policy_clients : 0;
	rlim_t need = 2 * producers + policy + FD_RESERVE;
	if (rl.rlim_cur < need) {
		rlim_t to = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need
				    ? rl.rlim_max
				    : need;
		struct rlimit nl = {to, rl.rlim_max};
		if (to > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &nl) == 0)
			rl.rlim_cur = to;
	}
	if (rl.rlim_cur >= need)
		return;
	/* what there is, beyond mixd's own, shared in proportion */
	rlim_t room = rl.rlim_cur > 2 * FD_RESERVE ? rl.rlim_cur - FD_RESERVE
						   : rl.rlim_cur / 2;
	if (producers) {
		unsigned fit =
			(unsigned)(room * producers / (2 * producers + policy));
		fprintf(stderr,
			"mixd: --max-producers %u lowered to %u: the open-files "
			"limit (RLIMIT_NOFILE) is %llu\n",
			st->max_producers, fit ? fit : 1,
			(unsigned long long)rl.rlim_cur);
		st->max_producers = fit ? fit : 1;
	}
	if (policy) {
		unsigned fit = (unsigned)(room * policy / (2 * producers + policy));
		fprintf(stderr,
			"mixd: policy clients at once lowered from %u to %u: "
			"the open-files limit (RLIMIT_NOFILE) is %llu\n",
			st->policy_clients, fit ? fit : 1,
			(unsigned long long)rl.rlim_cur);
		st->policy_clients = fit ? fit : 1;
	}
}

static void render_ingest(struct mixd *m, struct expose_buf *b)
{
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
	       "(a producer's ring was full), invalid (a producer's builder "
	       "refused the record); as shared-memory producers' headers and "
	       "socket producers' counts frames tell. mixd itself pushes back "
	       "instead of dropping.");
	sample1(b, "mixd_ingest_dropped_total", "reason", "ring_full",
		(double)(a.dropped_ring_full + s.stream_dropped));
	sample1(b, "mixd_ingest_dropped_total", "reason", "invalid",
		(double)(a.dropped_invalid + s.stream_invalid));

	family(b, "mixd_ingest_rejected_total", "counter",
	       "Records or connections mixd refused, by reason: malformed, "
	       "or (ring_memory) a ring beyond --max-ring-memory.");
	for (int r = 1; r < INGEST_REJ_COUNT; r++) {
		double v = (double)a.rejected[r];
		if (r == INGEST_REJ_FRAME)
			v += (double)s.stream_rejected;
		sample1(b, "mixd_ingest_rejected_total", "reason",
			ingest_reject_name(r), v);
	}
	sample1(b, "mixd_ingest_rejected_total", "reason", "handshake",
		(double)s.handshake_failed);
	sample1(b, "mixd_ingest_rejected_total", "reason", "ring_memory",
		(double)s.ring_memory_refused);

	single(b, "mixd_producers", "gauge", (double)s.producers,
	       "Producer connections open now (one per producer thread).");
	single(b, "mixd_producers_limit", "gauge", (double)m->st.max_producers,
	       "Producer connections mixd keeps open at most "
	       "(--max-producers).");
	single(b, "mixd_producers_limit_reached_total", "counter",
	       (double)s.limit_reached,
	       "Times mixd stopped accepting producers because --max-producers "
	       "were open; newcomers wait in the socket's backlog until one "
	       "leaves.");
	single(b, "mixd_ingest_rings", "gauge", (double)a.rings,
	       "Shared-memory rings being consumed (including rings of "
	       "producers that left, until drained).");
	single(b, "mixd_ingest_ring_bytes", "gauge",
	       (double)ingest_ring_mapped_bytes(),
	       "Bytes of producers' shared-memory rings mapped now.");
	single(b, "mixd_ingest_ring_bytes_limit", "gauge",
	       (double)m->st.ring_bytes,
	       "Bytes of producers' rings mixd maps at most "
	       "(--max-ring-memory).");
	single(b, "mixd_ingest_connections_total", "counter",
	       (double)s.connections, "Producer connections accepted.");
	single(b, "mixd_ingest_missed_wakeups_total", "counter",
	       (double)s.missed_wakeups,
	       "Receives of quiet producer connections re-armed because the "
	       "producer's close or bytes were waiting: a bound on the wakeups "
	       "some kernels miss (liburing#1549), which the once-a-second "
	       "sweep recovers.");
}

static void render_config(struct mixd *m, struct expose_buf *b)
{
	single(b, "mixd_config_generation", "gauge",
	       (double)agg_generation(m->agg),
	       "Configuration generation in force: 1 at start, +1 per "
	       "successful reload; 0 without a configuration.");
	single(b, "mixd_config_reload_failures_total", "counter",
	       (double)__atomic_load_n(&m->reload_failures, __ATOMIC_RELAXED),
	       "Reloads rejected because the new configuration had errors "
	       "(the previous one stayed in force).");
	uint64_t bits = __atomic_load_n((uint64_t *)&m->last_reload_ok,
					__ATOMIC_RELAXED);
	double t;
	memcpy(&t, &bits, 8);
	family(b, "mixd_config_last_reload_success_timestamp_seconds", "gauge",
	       "When the configuration in force was loaded (Unix time).");
	sample1(b, "mixd_config_last_reload_success_timestamp_seconds", NULL,
		NULL, t);
}

/* Scrapes holding a view now: the slots taken. */
static unsigned scrapes_in_flight(struct mixd *m)
{
	unsigned n = 0;
	pthread_mutex_lock(&m->scrape_lock);
	for (int i = 0; i < SCRAPES_MAX; i++)
		n += m->scrape_slot[i].used;
	pthread_mutex_unlock(&m->scrape_lock);
	return n;
}

static void render_series(struct agg_view *v, struct expose_buf *b,
			  struct mixd *m)
{
	single(b, "mixd_records_processed_total", "counter", (double)v->records,
	       "Records run through the configured rules.");
	family(b, "mixd_record_memo_total", "counter",
	       "Records the shards looked up in their record memo: served "
	       "(the rows a record with the same attributes updated, without "
	       "evaluating the config) or missed (the full path ran).");
	sample1(b, "mixd_record_memo_total", "result", "served",
		(double)v->memo_served);
	sample1(b, "mixd_record_memo_total", "result", "missed",
		(double)v->memo_missed);
	single(b, "mixd_log_lines_lost_total", "counter",
	       (double)v->log_lines_lost,
	       "Lines of stdio handlers not written: their output refused "
	       "them (a write failed: a full disk, a closed pipe).");
	static const struct {
		const char *name, *type, *help;
		size_t off;
	} per_family[] = {
		{"mixd_series", "gauge", "Label sets stored, by metric family.",
		 offsetof(struct agg_view_family, series)},
		{"mixd_series_overflow_total", "counter",
		 "Records of label sets not stored, counted instead: the "
		 "family was at its series limit.",
		 offsetof(struct agg_view_family, overflow)},
		{"mixd_series_expired_total", "counter",
		 "Label sets removed after metricsExpiryDuration without "
		 "updates.",
		 offsetof(struct agg_view_family, expired)},
	};
	for (size_t k = 0; k < sizeof per_family / sizeof per_family[0]; k++) {
		family(b, per_family[k].name, per_family[k].type, per_family[k].help);
		for (size_t f = 0; f < v->nfams; f++) {
			uint64_t n;
			memcpy(&n, (const char *)&v->fams[f] + per_family[k].off, 8);
			sample1(b, per_family[k].name, "family", v->fams[f].name,
				(double)n);
		}
	}
	family(b, "mixd_instance_errors_total", "counter",
	       "Records for which an instance's value, a dimension or a "
	       "logentry's field failed to evaluate, or a logentry's line "
	       "exceeded 64 KiB (the instance was skipped for that record).");
	/* Per instance: families and rules may share one, so each name is
	 * reported once, its errors summed. */
	size_t ni = v->nfams + v->nlogs;
	struct agg_view_log *inst = malloc((ni + 1) * sizeof *inst);
	for (size_t i = 0; inst && i < ni; i++)
		inst[i] = i < v->nfams ? (struct agg_view_log){v->fams[i].instance,
							       v->fams[i].errors}
				       : v->logs[i - v->nfams];
	for (size_t i = 0; inst && i < ni; i++) {
		bool seen = false;
		uint64_t n = 0;
		for (size_t k = 0; k < ni; k++) {
			if (strcmp(inst[k].instance, inst[i].instance))
				continue;
			seen |= k < i;
			n += inst[k].errors;
		}
		if (!seen)
			sample1(b, "mixd_instance_errors_total", "instance",
				inst[i].instance, (double)n);
	}
	free(inst);
	single(b, "mixd_scrape_duration_seconds", "gauge",
	       (double)__atomic_load_n(&m->last_scrape_ns, __ATOMIC_RELAXED) /
		       1e9,
	       "Time the last complete scrape of the Prometheus port took, "
	       "from the request to its last byte rendered (the body is "
	       "rendered as the client takes it).");
	family(b, "mixd_scrapes_in_flight", "gauge",
	       "Scrapes of the Prometheus port holding a view, at most "
	       TEXT(SCRAPES_MAX) ".");
	sample1(b, "mixd_scrapes_in_flight", NULL, NULL,
		(double)scrapes_in_flight(m));
	family(b, "mixd_scrapes_refused_total", "counter",
	       "Scrapes answered 503 because " TEXT(SCRAPES_MAX)
	       " were in flight already, or " TEXT(SCRAPES_PER_PEER)
	       " from the same client address.");
	sample1(b, "mixd_scrapes_refused_total", NULL, NULL,
		(double)__atomic_load_n(&m->scrapes_refused, __ATOMIC_RELAXED));
	family(b, "mixd_scrapes_cut_total", "counter",
	       "Scrapes cut off (connection closed) because their client was "
	       "still reading after its own scrape timeout "
	       "(X-Prometheus-Scrape-Timeout-Seconds), or " TEXT(
		       SCRAPE_DEADLINE_S) " s when it gave none.");
	sample1(b, "mixd_scrapes_cut_total", NULL, NULL,
		(double)__atomic_load_n(&m->scrapes_cut, __ATOMIC_RELAXED));
}

static void render_marathon(struct mixd *m, struct expose_buf *b)
{
	/* Only while the configuration has a mesosenv handler: one a reload
	 * dropped leaves a paused resolver, whose "not synced" is no alarm. */
	struct mar_resolver *res = __atomic_load_n(&m->resolver, __ATOMIC_ACQUIRE);
	if (!res || !__atomic_load_n(&m->mesosenv, __ATOMIC_ACQUIRE))
		return;
	struct mar_stats st;
	mar_stats(res, &st);
	family(b, "mixd_marathon_sync_total", "counter",
	       "Full syncs with Marathon (/v2/apps, /v2/pods/::status), by "
	       "result.");
	for (int r = 0; r < MAR_SYNC_COUNT; r++)
		sample1(b, "mixd_marathon_sync_total", "result",
			mar_sync_result_name(r), (double)st.sync[r]);
	family(b, "mixd_marathon_events_total", "counter",
	       "Marathon events received on /v2/events, by type.");
	for (int e = 0; e < MAR_EV_COUNT; e++)
		sample1(b, "mixd_marathon_events_total", "type", mar_event_name(e),
			(double)st.events[e]);
	family(b, "mixd_marathon_stream_disconnects_total", "counter",
	       "Event stream disconnections, by reason.");
	for (int d = 0; d < MAR_DISC_COUNT; d++)
		sample1(b, "mixd_marathon_stream_disconnects_total", "reason",
			mar_disconnect_name(d), (double)st.disconnects[d]);
	single(b, "mixd_marathon_entries_skipped_total", "counter",
	       (double)st.entries_skipped,
	       "Apps, tasks, pods and instances that full syncs skipped for "
	       "their unexpected shape (each sync counts those it met).");
	single(b, "mixd_marathon_apps", "gauge", (double)(st.apps + st.pods),
	       "Marathon apps and pods in the snapshot in use.");
	single(b, "mixd_marathon_tasks", "gauge",
	       (double)(st.tasks + st.pod_instances),
	       "App tasks and pod instances in the snapshot in use.");
	single(b, "mixd_marathon_last_sync_timestamp_seconds", "gauge",
	       st.last_sync_unix,
	       "When the last full sync succeeded (Unix time; 0: never).");
	single(b, "mixd_marathon_snapshot_build_seconds", "gauge",
	       st.last_build_seconds,
	       "Wall time of the last snapshot build. Events are published "
	       "at most every 100 ms or every ten builds, whichever is "
	       "longer.");
	single(b, "mixd_marathon_snapshots_total", "counter",
	       (double)st.snapshots,
	       "Snapshots published (full syncs and applied events).");
	single(b, "mixd_marathon_synced", "gauge", st.synced ? 1 : 0,
	       "1 once a full sync on the Marathon settings in force has "
	       "succeeded (then /readyz is 200); 0 again from a reload that "
	       "changes them until they work.");
}

/* The policy socket's work, with --role policy or both. */
static void render_policy(struct mixd *m, struct expose_buf *b)
{
	if (!m->policy)
		return;
	struct pol_server_stats s;
	pol_server_stats(m->policy, &s);
	family(b, "mixd_policy_checks_total", "counter",
	       "Checks answered, by google.rpc code.");
	for (int c = 0; c <= POL_UNAUTHENTICATED; c++)
		if (s.checks[c] || c == POL_OK)
			sample1(b, "mixd_policy_checks_total", "code",
				mixd_check_code_name(c), (double)s.checks[c]);
	single(b, "mixd_policy_malformed_total", "counter", (double)s.malformed,
	       "Check requests answered INVALID_ARGUMENT: malformed request "
	       "or attributes.");
	single(b, "mixd_policy_clients", "gauge", (double)s.clients,
	       "Policy clients connected now.");
	family(b, "mixd_policy_connections_closed_total", "counter",
	       "Policy connections mixd closed: a stream it could not read "
	       "(bad), or one over the connection limit (refused).");
	sample1(b, "mixd_policy_connections_closed_total", "reason", "bad",
		(double)s.closed_bad);
	sample1(b, "mixd_policy_connections_closed_total", "reason",
		"refused", (double)s.refused);
	single(b, "mixd_policy_answer_buffer_bytes", "gauge",
	       (double)s.answer_bytes,
	       "Bytes of buffers the policy server holds answers in until "
	       "clients read them (bounded: a client that does not read is "
	       "not read from).");
	single(b, "mixd_policy_quota_keys", "gauge", (double)s.quota_keys,
	       "Keys (dimension value sets) the memquota handlers hold.");
	family(b, "mixd_policy_quota_lost_total", "counter",
	       "Quota requests a memquota bound cost: granted nothing because "
	       "the key table was full (keys_full), or answered without their "
	       "deduplication id remembered, so a retry is granted again "
	       "(dedup_full).");
	sample1(b, "mixd_policy_quota_lost_total", "reason", "keys_full",
		(double)s.quota_full);
	sample1(b, "mixd_policy_quota_lost_total", "reason", "dedup_full",
		(double)s.quota_dedup_lost);
}

static int render_self(void *ctx, struct expose_buf *b, int *status,
		       const char **ctype)
{
	struct mixd *m = ctx;
	struct agg_view *v;
	/* what a role does not do is not shown as zeros */
	if (m->st.role & ROLE_TELEMETRY)
		render_ingest(m, b);
	render_config(m, b);
	render_marathon(m, b);
	render_policy(m, b);
	if ((m->st.role & ROLE_TELEMETRY) && agg_view_counts(m->agg, &v) == 0) {
		render_series(v, b, m);
		agg_view_destroy(v);
	}
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

/* Ready: serving, and the Marathon resolver (if configured) has synced. */
static int render_readyz(void *ctx, struct expose_buf *b, int *status,
			 const char **ctype)
{
	struct mixd *m = ctx;
	*ctype = EXPOSE_CONTENT_TYPE_TEXT;
	if (!__atomic_load_n(&m->serving, __ATOMIC_ACQUIRE)) {
		*status = 503;
		expose_buf_puts(b, "stopping\n");
		return 0;
	}
	struct mar_resolver *res = __atomic_load_n(&m->resolver, __ATOMIC_ACQUIRE);
	if (res && __atomic_load_n(&m->mesosenv, __ATOMIC_ACQUIRE)) {
		struct mar_stats st;
		mar_stats(res, &st);
		if (!st.synced) {
			*status = 503;
			expose_buf_puts(b, "marathon resolver not synced yet\n");
			return 0;
		}
	}
	expose_buf_puts(b, "ready\n");
	return 0;
}

static int render_version(void *ctx, struct expose_buf *b, int *status,
			  const char **ctype)
{
	expose_buf_puts(b, "mixd " MIXD_VERSION "\n");
	*ctype = EXPOSE_CONTENT_TYPE_TEXT;
	return 0;
}

/* One scrape of the Prometheus port: its view, rendered as it is sent. */
struct scrape {
	struct mixd *m;
	int slot;           /* in m->scrape_slot; -1: none taken */
	struct timespec t0; /* the request's arrival */
	struct timespec t1; /* the last byte rendered */
	double deadline_s;  /* since t0 */
	struct agg_view *v;
	struct expose_view_stream *vs;
};

static double since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) +
	       (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* @peer's IP as IPv6 (an IPv4 one mapped); zeros when unknown. */
static void peer_key(const struct sockaddr *peer, uint8_t key[16])
{
	memset(key, 0, 16);
	if (peer && peer->sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12,
		       &((const struct sockaddr_in *)(const void *)peer)->sin_addr,
		       4);
	} else if (peer && peer->sa_family == AF_INET6) {
		memcpy(key,
		       &((const struct sockaddr_in6 *)(const void *)peer)
				->sin6_addr,
		       16);
	}
}

/* A scrape slot for @peer, or -1: all SCRAPES_MAX taken, or
 * SCRAPES_PER_PEER of them by @peer. */
static int scrape_slot_take(struct mixd *m, const struct sockaddr *peer)
{
	uint8_t key[16];
	int free_slot = -1, theirs = 0;
	peer_key(peer, key);
	pthread_mutex_lock(&m->scrape_lock);
	for (int i = 0; i < SCRAPES_MAX; i++) {
		if (!m->scrape_slot[i].used)
			free_slot = free_slot < 0 ? i : free_slot; /* the first */
		else if (!memcmp(m->scrape_slot[i].peer, key, 16))
			theirs++;
	}
	if (theirs >= SCRAPES_PER_PEER)
		free_slot = -1;
	if (free_slot >= 0) {
		m->scrape_slot[free_slot].used = true;
		memcpy(m->scrape_slot[free_slot].peer, key, 16);
	}
	pthread_mutex_unlock(&m->scrape_lock);
	return free_slot;
}

static void scrape_slot_give(struct mixd *m, int slot)
{
	if (slot < 0)
		return;
	pthread_mutex_lock(&m->scrape_lock);
	m->scrape_slot[slot].used = false;
	pthread_mutex_unlock(&m->scrape_lock);
}

static long scrape_read(void *st, char *buf, size_t max)
{
	struct scrape *s = st;
	long n = expose_view_stream_read(s->vs, buf, max);
	if (n == 0) {
		clock_gettime(CLOCK_MONOTONIC, &s->t1); /* whole: never cut */
	} else if (since(&s->t0) > s->deadline_s) {
		__atomic_add_fetch(&s->m->scrapes_cut, 1, __ATOMIC_RELAXED);
		return -1; /* the client reads too slowly: cut it off */
	}
	return n;
}

/* The server is done with the scrape: a complete one sets
 * mixd_scrape_duration_seconds, from the request to its last byte. */
static void scrape_end(void *st, bool complete)
{
	struct scrape *s = st;
	if (complete)
		__atomic_store_n(
			&s->m->last_scrape_ns,
			(uint64_t)((s->t1.tv_sec - s->t0.tv_sec) * 1000000000 +
				   (s->t1.tv_nsec - s->t0.tv_nsec)),
			__ATOMIC_RELAXED);
	expose_view_stream_free(s->vs);
	agg_view_destroy(s->v);
	scrape_slot_give(s->m, s->slot);
	free(s);
}

/* A HEAD's body: never read. */
static long no_body_read(void *st, char *buf, size_t max)
{
	(void)st;
	(void)buf;
	(void)max;
	return 0;
}

static void no_body_end(void *st, bool complete)
{
	(void)st;
	(void)complete;
}

/*
 * /metrics of the Prometheus port. The view is taken now, when the request
 * arrives, so the scrape is one consistent copy however slowly the client
 * reads; it is rendered into the connection's buffer, a send at a time,
 * as the client takes the text, and freed when the response completes or
 * the client goes away.
 */
static int render_istio(void *ctx, const struct expose_request *rq,
			struct expose_stream *out, int *status,
			const char **ctype)
{
	*ctype = EXPOSE_CONTENT_TYPE_PROMETHEUS;
	if (rq->head) { /* headers only: no view, and no scrape slot */
		*out = (struct expose_stream){.read = no_body_read,
					      .end = no_body_end};
		return 0;
	}
	struct scrape *s = calloc(1, sizeof *s);
	if (!s)
		return -1;
	s->m = ctx;
	clock_gettime(CLOCK_MONOTONIC, &s->t0);
	s->deadline_s = !rq->scrape_timeout_s ? SCRAPE_DEADLINE_S
			: rq->scrape_timeout_s < SCRAPE_TIMEOUT_MAX_S
				? rq->scrape_timeout_s
				: SCRAPE_TIMEOUT_MAX_S;
	if ((s->slot = scrape_slot_take(s->m, rq->peer)) < 0) {
		__atomic_add_fetch(&s->m->scrapes_refused, 1, __ATOMIC_RELAXED);
		*status = 503;
		goto fail;
	}
	if (agg_view_create(s->m->agg, &s->v) != 0)
		goto fail;
	s->vs = expose_view_stream_new(s->v);
	if (!s->vs)
		goto fail;
	*out = (struct expose_stream){
		.read = scrape_read, .end = scrape_end, .st = s};
	return 0;
fail:
	scrape_slot_give(s->m, s->slot);
	agg_view_destroy(s->v);
	free(s);
	return -1;
}

/*
 * The host of a URL reaching the server listening on @address. An address
 * of its own is the host it bound: an IP as given (an IPv6 one in
 * brackets), a name as given, which resolved to the address bound. A
 * wildcard (no host, 0.0.0.0 or [::]) binds every interface: 127.0.0.1 is
 * printed then, a URL that works on this machine (the IPv6 wildcard socket
 * is dual-stack, so it takes IPv4 too).
 */
static const char *url_host(const char *address, char *buf, size_t cap)
{
	char a[256];
	const char *host, *port;
	unsigned char ip[16];
	static const unsigned char any[16];

	if (expose_address_split(address, a, sizeof a, &host, &port) != 0 ||
	    !host || !*host ||
	    (inet_pton(AF_INET, host, ip) == 1 && !memcmp(ip, any, 4)) ||
	    (inet_pton(AF_INET6, host, ip) == 1 && !memcmp(ip, any, 16)))
		return "127.0.0.1";
	bool v6 = address[0] == '[';
	snprintf(buf, cap, "%s%s%s", v6 ? "[" : "", host, v6 ? "]" : "");
	return buf;
}

static int start_http(struct mixd *m)
{
	const struct expose_route mon[] = {
		{"/metrics", render_self, m, NULL},
		{"/healthz", render_healthz, m, NULL},
		{"/readyz", render_readyz, m, NULL},
		{"/version", render_version, m, NULL},
	};
	const struct expose_route prom[] = {
		{"/metrics", NULL, m, render_istio},
	};
	struct expose_http_options mo = {.name = "monitoring"};
	struct expose_http_options po = {.name = "prometheus"};
	if (expose_http_start(m->st.monitoring_address, mon,
			      sizeof mon / sizeof mon[0], &mo, &m->monitoring))
		return -1;
	if ((m->st.role & ROLE_TELEMETRY) &&
	    expose_http_start(m->st.prometheus_address, prom, 1, &po,
			      &m->prometheus))
		return -1;
	char host[260];
	fprintf(stderr, "mixd: monitoring on http://%s:%u\n",
		url_host(m->st.monitoring_address, host, sizeof host),
		expose_http_port(m->monitoring));
	if (m->prometheus)
		fprintf(stderr, "mixd: prometheus on http://%s:%u\n",
			url_host(m->st.prometheus_address, host, sizeof host),
			expose_http_port(m->prometheus));
	return 0;
}

/* ---- configuration: load, watch, reload --------------------------------- */

/*
 * @path as one whose last component names it in its directory, into @out
 * (@cap bytes): absolute, without trailing "/" or "/." ("conf/." and "."
 * name a directory by "."; its holding directory would be itself, and the
 * events for the files in it filtered out by that name). A last ".." is
 * resolved in full. False if it does not fit.
 */
static bool holding_path(const char *path, char *out, size_t cap)
{
	char cwd[PATH_MAX];
	int n = path[0] == '/' ? snprintf(out, cap, "%s", path)
		: getcwd(cwd, sizeof cwd)
			? snprintf(out, cap, "%s/%s", cwd, path)
			: -1;
	if (n < 0 || (size_t)n >= cap)
		return false;
	size_t l = (size_t)n;
	for (;;) {
		while (l > 1 && out[l - 1] == '/')
			out[--l] = '\0';
		if (l >= 2 && !strcmp(out + l - 2, "/."))
			out[l -= 2] = '\0';
		else
			break;
	}
	if (l == 0)
		strcpy(out, "/");
	if (l > 3 && !strcmp(out + l - 3, "/..")) {
		char *r = realpath(out, NULL);
		if (!r || strlen(r) >= cap) {
			free(r);
			return false;
		}
		strcpy(out, r);
		free(r);
	}
	return true;
}

/* Watch every file and directory the config came from, and the directory
 * that holds the config path. A new inotify instance per load: the set of
 * files may have changed. The old one is the caller's to drain (what
 * changed while the files were read) and close. */
static void watch_config(struct mixd *m, const struct cfg *c)
{
	m->dir_wd = -1;
	m->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (m->inotify_fd < 0) {
		if (!m->watch_warned)
			fprintf(stderr, "mixd: config: cannot watch for changes "
					"(inotify: %s); SIGHUP still reloads\n",
				strerror(errno));
		m->watch_warned = true;
		return;
	}
	size_t n, failed = 0;
	int err = 0;
	const char *const *src = c ? cfg_sources(c, &n) : (n = 0, NULL);
	/* Without a config read (at start, before the first read; out of
	 * memory), the path itself: a directory's files come and go in it. */
	const char *root = m->st.config;
	if (!strncmp(root, "fs://", 5))
		root += 5;
	if (!c)
		(void)inotify_add_watch(m->inotify_fd, root,
					IN_CLOSE_WRITE | IN_MOVED_TO |
						IN_MOVED_FROM | IN_CREATE |
						IN_DELETE | IN_ATTRIB);
	for (size_t i = 0; i < n; i++)
		if (inotify_add_watch(m->inotify_fd, src[i],
				      IN_CLOSE_WRITE | IN_MOVED_TO |
					      IN_MOVED_FROM | IN_CREATE |
					      IN_DELETE | IN_DELETE_SELF |
					      IN_MOVE_SELF | IN_ATTRIB) < 0) {
			failed++;
			err = errno;
		}
	/* The directory that holds the path, filtered by the path's name;
	 * while the path is missing, its nearest existing ancestor, by the
	 * name that leads down to it. */
	char dir[PATH_MAX], name[NAME_MAX + 1];
	if (!holding_path(root, dir, sizeof dir))
		return;
	struct stat st;
	do {
		size_t l = strlen(dir);
		while (l > 1 && dir[l - 1] == '/')
			dir[--l] = '\0';
		char *slash = strrchr(dir, '/');
		const char *base = slash ? slash + 1 : dir;
		if (strlen(base) >= sizeof name)
			return;
		memcpy(name, base, strlen(base) + 1);
		if (!slash)
			strcpy(dir, ".");
		else if (slash == dir)
			dir[1] = '\0'; /* "/f": the root */
		else
			*slash = '\0';
	} while ((stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) &&
		 strcmp(dir, ".") != 0 && strcmp(dir, "/") != 0);
	snprintf(m->file_name, sizeof m->file_name, "%s", name);
	m->dir_wd = inotify_add_watch(m->inotify_fd, dir,
				      IN_CLOSE_WRITE | IN_MOVED_TO |
					      IN_MOVED_FROM | IN_CREATE |
					      IN_DELETE | IN_ATTRIB |
					      IN_DELETE_SELF | IN_MOVE_SELF);
	if (m->dir_wd < 0) {
		failed++;
		err = errno;
	}
	if (failed && !m->watch_warned) {
		fprintf(stderr, "mixd: config: cannot watch %zu of the config's "
				"paths for changes (inotify: %s); SIGHUP still "
				"reloads\n",
			failed, strerror(err));
		m->watch_warned = true;
	}
}

/* Does a name in a watched directory matter to the config: a YAML file, a
 * directory, or a Kubernetes ConfigMap mount's "..data" and its swaps? */
static bool config_name(const struct inotify_event *ev)
{
	size_t l = strlen(ev->name);
	return (ev->mask & IN_ISDIR) || !strncmp(ev->name, "..", 2) ||
	       (l > 5 && !strcmp(ev->name + l - 5, ".yaml")) ||
	       (l > 4 && !strcmp(ev->name + l - 4, ".yml"));
}

/* Did the events in @buf (@len bytes) of a watch whose holding directory
 * is @dir_wd, filtered by @name, touch the config? */
static bool config_touched(int dir_wd, const char *name, const char *buf,
			   size_t len)
{
	for (size_t at = 0; at + sizeof(struct inotify_event) <= len;) {
		const struct inotify_event *ev = (const void *)(buf + at);
		at += sizeof *ev + ev->len;
		if (ev->mask & IN_IGNORED)
			continue; /* a watch removed: its file's event came */
		if (ev->wd == dir_wd) {
			/* the name, or the directory itself gone: a reload
			 * then watches the nearest ancestor left */
			if (!ev->len || !strcmp(ev->name, name) ||
			    !strcmp(ev->name, "..data"))
				return true;
		} else if (!ev->len || config_name(ev)) {
			return true;
		}
	}
	return false;
}

/* Read every event waiting on inotify instance @fd (its holding
 * directory's watch @dir_wd, filtered by @name); did one touch the
 * config? */
static bool drain_watch(int fd, int dir_wd, const char *name)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t got;
	bool touched = false;
	while (fd >= 0 && (got = read(fd, buf, sizeof buf)) > 0)
		touched |= config_touched(dir_wd, name, buf, (size_t)got);
	return touched;
}

/*
 * The Marathon resolver serves the first mesosenv handler, for the
 * telemetry shards and the policy thread's checks alike (Mixer generated
 * attributes for both). It starts with the first config that has one, at
 * start or at a reload (each shard, and the policy thread, then makes its
 * reader at its next pass). A reload that changes the handler's settings
 * hands them to the running resolver, which reconnects; one that drops
 * the handler pauses it (no connection, no sync) and readiness no longer
 * waits for it. --marathon-address overrides the address throughout.
 * Called once the config is installed.
 */
static void start_resolver(struct mixd *m, const struct cfg *c, bool initial)
{
	const struct cfg_handler *h = NULL;
	for (size_t i = 0; i < cfg_handler_count(c) && !h; i++)
		if (cfg_handler(c, i)->adapter == CFG_ADAPTER_MESOSENV)
			h = cfg_handler(c, i);
	__atomic_store_n(&m->mesosenv, h != NULL, __ATOMIC_RELEASE);
	if (!h) {
		if (initial && m->st.marathon_address)
			fprintf(stderr, "mixd: notice: --marathon-address unused: "
					"the config has no mesosenv handler\n");
		if (m->resolver)
			mar_resolver_reconfigure(m->resolver, NULL);
		return;
	}
	struct mar_options o = {0};
	if (mar_options_from_handler(h, m->st.marathon_address, &o))
		return;
	struct mar_resolver *res = m->resolver; /* only this thread stores it */
	if (res) {
		int rc = mar_resolver_reconfigure(res, &o);
		if (rc < 0)
			fprintf(stderr, "mixd: marathon resolver: new mesosenv "
					"settings refused (%s); keeping the "
					"old ones\n",
				strerror(-rc));
		return;
	}
	int rc = mar_resolver_start(&o, &res);
	if (rc) {
		fprintf(stderr, "mixd: marathon resolver: %s; mesos bindings take "
				"their defaults\n",
			strerror(-rc));
		return;
	}
	__atomic_store_n(&m->resolver, res, __ATOMIC_RELEASE);
	if (m->st.role & ROLE_TELEMETRY)
		agg_set_resolver(m->agg, res);
	if (m->policy) /* else main() hands it over as it starts the server */
		pol_server_set_resolver(m->policy, res);
}

static int inode_cmp(const void *a, const void *b)
{
	const struct inode_id *x = a, *y = b;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Is the inode of @st watched now? */
static bool inode_watched(const struct mixd *m, const struct stat *st)
{
	struct inode_id k = {st->st_dev, st->st_ino};
	return m->nwatched &&
	       bsearch(&k, m->watched, m->nwatched, sizeof k, inode_cmp);
}

/* Is the directory holding @path watched now? */
static bool dir_watched(const struct mixd *m, const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (!slash)
		strcpy(dir, ".");
	else
		snprintf(dir, sizeof dir, "%.*s",
			 slash == path ? 1 : (int)(slash - path), path);
	struct stat st;
	return stat(dir, &st) == 0 && inode_watched(m, &st);
}

/* Remember what the inotify instance now watches: @c's sources, or the
 * path alone. */
static void remember_watched(struct mixd *m, const struct cfg *c)
{
	free(m->watched);
	m->watched = NULL;
	m->nwatched = 0;
	size_t n = 1;
	const char *root = m->st.config;
	if (!strncmp(root, "fs://", 5))
		root += 5;
	const char *const *src = c ? cfg_sources(c, &n) : &root;
	if (!(m->watched = calloc(n + 1, sizeof *m->watched)))
		return;
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (stat(src[i], &st) == 0)
			m->watched[m->nwatched++] =
				(struct inode_id){st.st_dev, st.st_ino};
	}
	qsort(m->watched, m->nwatched, sizeof *m->watched, inode_cmp);
}

/*
 * Of what @c was read from, was anything the old watch did not cover
 * modified at or after @since (less 10 ms: file times come from the
 * kernel's coarse clock)? A directory this load read first (new, or
 * swapped in by a rename or a symlink) was not watched while it read, so
 * a file made or written in it meanwhile was seen by no watch: only its
 * time says so. A file directly in a watched directory was covered by
 * that directory's watch.
 */
static bool unwatched_changed(const struct mixd *m, const struct cfg *c,
			      const struct timespec *since)
{
	size_t n;
	const char *const *src = cfg_sources(c, &n);
	int64_t t0 = (int64_t)since->tv_sec * 1000000000 + since->tv_nsec -
		     10000000;
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (stat(src[i], &st) != 0)
			return true; /* gone since: read again */
		if (inode_watched(m, &st) ||
		    (!S_ISDIR(st.st_mode) && dir_watched(m, src[i])))
			continue;
		if ((int64_t)st.st_mtim.tv_sec * 1000000000 +
			    st.st_mtim.tv_nsec >=
		    t0)
			return true;
	}
	return false;
}

/*
 * A new watch of what @c was read from (or, @c NULL, of the path), in
 * place of the old one; true when the config changed since reading began
 * at @since, as the old watch saw (drained then) or, for what it did not
 * watch, as the files' times say: the caller loads again, or that change
 * would be lost. Files replaced since the last load are new inodes the
 * old watches do not see: each load watches what it read.
 */
static bool rewatch(struct mixd *m, const struct cfg *c,
		    const struct timespec *since)
{
	int old_fd = m->inotify_fd, old_dir = m->dir_wd;
	char old_name[sizeof m->file_name];
	memcpy(old_name, m->file_name, sizeof old_name);
	watch_config(m, c);
	/* The new watches are in place: what changes from here they see. */
	bool changed = drain_watch(old_fd, old_dir, old_name) ||
		       (c && unwatched_changed(m, c, since));
	remember_watched(m, c);
	if (old_fd >= 0)
		close(old_fd);
	return changed;
}

/*
 * The first mesosenv handler's settings (the one the resolver serves), as
 * the resolver would take them, with --marathon-address: a setting it
 * refuses is an error of the config, so the config is refused whole
 * rather than installed with the resolver left on the old settings, or
 * none.
 */
static void check_mesosenv(struct cfg *c, void *arg)
{
	const char *override_address = arg;
	for (size_t i = 0; i < cfg_handler_count(c); i++) {
		const struct cfg_handler *h = cfg_handler(c, i);
		if (h->adapter != CFG_ADAPTER_MESOSENV)
			continue;
		struct mar_options o;
		char why[512];
		if (!mar_options_from_handler(h, override_address, &o) &&
		    mar_options_check(&o, why, sizeof why))
			cfg_add_error(c, &h->meta,
				      override_address && *override_address
					      ? "--marathon-address or params"
					      : "params",
				      why);
		return;
	}
}

/* What only other modules can check of a config: the mesosenv handler's
 * Marathon settings and the policy handlers' entries. */
static void check_handlers(struct cfg *c, void *arg)
{
	check_mesosenv(c, arg);
	pol_validate(c);
}

/* Load the config and install it; on error keep the one in force.
 * *@changed: it changed while it was being read (see rewatch()). */
static int load_config(struct mixd *m, bool initial, bool *changed)
{
	/* What changed until now, this load reads. */
	drain_watch(m->inotify_fd, m->dir_wd, m->file_name);
	struct timespec since;
	clock_gettime(CLOCK_REALTIME, &since);
	struct cfg *c = cfg_load(m->st.config, m->st.default_ns);
	if (!c) {
		fprintf(stderr, "mixd: config: out of memory\n");
		*changed = rewatch(m, NULL, &since);
		goto fail;
	}
	*changed = rewatch(m, c, &since);
	check_handlers(c, (void *)m->st.marathon_address);
	if (!cfg_ok(c)) {
		fprintf(stderr, "mixd: config %s has errors; %s\n", m->st.config,
			initial ? "not starting"
				: "keeping the configuration in force");
		cfg_print_diagnostics(c, stderr);
		cfg_destroy(c);
		goto fail;
	}
	for (size_t i = 0; i < cfg_warning_count(c); i++)
		fprintf(stderr, "mixd: config: warning: %s\n", cfg_warning(c, i));
	/* The policy first: the engine holds the config, which the telemetry
	 * side takes for its own (and frees on a failure). */
	struct pol_engine *engine = NULL;
	if ((m->st.role & ROLE_POLICY) && pol_engine_create(c, NULL, &engine)) {
		fprintf(stderr, "mixd: config %s not installed: out of memory "
				"for its policy; %s\n",
			m->st.config,
			initial ? "not starting"
				: "keeping the configuration in force");
		cfg_destroy(c);
		goto fail;
	}
	if (!(m->st.role & ROLE_TELEMETRY)) {
		/* checks run the mesos instances too: the resolver serves
		 * --role policy as it does telemetry */
		start_resolver(m, c, initial);
		cfg_destroy(c); /* the engine holds it */
		goto installed;
	}
	int err = agg_set_config(m->agg, c);
	if (err) {
		fprintf(stderr, "mixd: config %s not installed: %s; %s\n",
			m->st.config,
			err == -EIO ? "a stdio handler's output cannot be "
				      "opened (above)"
				    : "out of memory",
			initial ? "not starting"
				: "keeping the configuration in force");
		pol_engine_destroy(engine);
		goto fail;
	}
	start_resolver(m, c, initial);
installed:
	if (engine && m->policy)
		pol_server_set_engine(m->policy, engine);
	else if (engine)
		m->engine = engine; /* the server starts with it */
	double now = wall_seconds();
	uint64_t bits;
	memcpy(&bits, &now, 8);
	__atomic_store_n((uint64_t *)&m->last_reload_ok, bits, __ATOMIC_RELAXED);
	if (m->st.role & ROLE_TELEMETRY)
		fprintf(stderr, "mixd: config generation %llu from %s\n",
			(unsigned long long)agg_generation(m->agg),
			m->st.config);
	else
		fprintf(stderr, "mixd: policy from %s\n", m->st.config);
	return 0;
fail:
	if (!initial)
		__atomic_add_fetch(&m->reload_failures, 1, __ATOMIC_RELAXED);
	return -1;
}

static void shutdown_all(struct mixd *m)
{
	expose_http_stop(m->prometheus);
	expose_http_stop(m->monitoring);
	pol_server_stop(m->policy);
	pol_engine_destroy(m->engine);
	ingest_server_destroy(m->server);
	agg_destroy(m->agg); /* shards gone: no reader is left */
	mar_resolver_stop(m->resolver);
	attr_vocab_destroy(m->vocab);
	if (m->inotify_fd >= 0)
		close(m->inotify_fd);
	free(m->watched);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The control loop: signals (through a signalfd) and config file changes.
 * Changes are applied once the config has been quiet for 200 ms, so an
 * editor's several writes make one reload; events on other files in the
 * same directories do not put it off.
 */
#define QUIET_MS 200
static void control_loop(struct mixd *m, int sfd, bool changed_at_start)
{
	/* when a reload is due (mono_ms()); -1: none */
	int64_t due = changed_at_start ? mono_ms() + QUIET_MS : -1;
	for (;;) {
		struct pollfd p[2] = {{sfd, POLLIN, 0}, {m->inotify_fd, POLLIN, 0}};
		int64_t wait = due < 0 ? -1 : due - mono_ms();
		int n = poll(p, m->inotify_fd >= 0 ? 2 : 1,
			     due < 0 ? -1 : wait > 0 ? (int)wait : 0);
		if (due >= 0 && mono_ms() >= due) {
			bool changed;
			load_config(m, false, &changed);
			due = changed ? mono_ms() + QUIET_MS : -1;
			continue;
		}
		if (n > 0 && (p[1].revents & POLLIN) &&
		    drain_watch(m->inotify_fd, m->dir_wd, m->file_name))
			due = mono_ms() + QUIET_MS;
		if (n > 0 && (p[0].revents & POLLIN)) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof si) != sizeof si)
				continue;
			if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
				break;
			if (si.ssi_signo == SIGHUP && m->st.config) {
				fprintf(stderr, "mixd: SIGHUP: reloading %s\n",
					m->st.config);
				/* It reads every change so far: none is due. */
				bool changed;
				load_config(m, false, &changed);
				due = changed ? mono_ms() + QUIET_MS : -1;
			}
		}
	}
}

/*
 * Started with stdin, stdout or stderr closed, mixd would hand the number
 * to the first thing it opens -- a signalfd, a config file, a socket --
 * and a stdio handler's STDOUT or the error messages would go there. Each
 * closed one is /dev/null instead, as a daemon's are. False if one cannot
 * be (then nothing is safe to write).
 */
static bool std_fds_open(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		/* The lowest free number: @fd, the ones below being open;
		 * inherited, as a real one would be. */
		int n = open("/dev/null", O_RDWR);
		if (n != fd) {
			if (n >= 0)
				close(n);
			return false;
		}
	}
	return true;
}

int main(int argc, char **argv)
{
	struct mixd m = {.inotify_fd = -1,
			 .dir_wd = -1,
			 .scrape_lock = PTHREAD_MUTEX_INITIALIZER};
	if (!std_fds_open())
		return 1;
	if (parse_flags(argc, argv, &m.st))
		return 2;
	if (m.st.check_config)
		return cfg_check(m.st.check_config, m.st.default_ns, stdout,
				 check_handlers, (void *)m.st.marathon_address);

	/* Signals go to the control loop alone: every thread started below
	 * inherits the mask. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* Made first: without it no signal would ever reach mixd (they are
	 * blocked everywhere), and one sent during start-up waits in it. */
	int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0) {
		fprintf(stderr, "mixd: signalfd: %s\n", strerror(errno));
		return 1;
	}

	int rc = 1;
	m.vocab = attr_vocab_create();
	if (!m.vocab) {
		fprintf(stderr, "mixd: out of memory\n");
		return 1;
	}
	struct agg_options ao = {
		.shards = m.st.shards,
		.idle_sleep_max_us = m.st.idle_sleep_max_us,
		.series_limit = m.st.series_limit,
		.no_memo = m.st.no_memo,
	};
	if ((rc = agg_create(&ao, m.vocab, &m.agg))) {
		fprintf(stderr, "mixd: cannot create shards: %s\n", strerror(-rc));
		goto out;
	}
	/* Watched before it is read: a change while it is, is seen. */
	bool changed = false;
	if (m.st.config) {
		watch_config(&m, NULL);
		remember_watched(&m, NULL);
	}
	if (m.st.config && (rc = load_config(&m, true, &changed)))
		goto out;
	if ((rc = agg_start(m.agg))) {
		fprintf(stderr, "mixd: cannot start shards: %s\n", strerror(-rc));
		goto out;
	}
	struct ingest_sink sink = agg_sink(m.agg);
	char err[256];
	fit_fd_limit(&m.st);
	m.st.ring_bytes = ring_limit(&m.st);
	if ((m.st.role & ROLE_TELEMETRY) &&
	    (rc = ingest_server_start(
		     m.st.address, &sink,
		     &(struct ingest_limits){
			     .producers = m.st.max_producers,
			     .ring_bytes = m.st.ring_bytes},
		     &m.server, err, sizeof err))) {
		fprintf(stderr, "mixd: %s\n", err);
		goto out;
	}
	if (m.st.role & ROLE_POLICY) {
		/* without a config, every check is OK (no policy rules) */
		rc = pol_server_start(m.st.policy_address, m.engine,
				      m.st.policy_clients, &m.policy, err,
				      sizeof err);
		m.engine = NULL; /* the server's, whatever happened */
		if (rc) {
			fprintf(stderr, "mixd: %s\n", err);
			goto out;
		}
		/* started by the config, before the server was */
		if (m.resolver)
			pol_server_set_resolver(m.policy, m.resolver);
		fprintf(stderr, "mixd: policy checks on %s\n",
			m.st.policy_address);
		if (!m.st.config)
			fprintf(stderr, "mixd: warning: --role %s without "
					"--config: every check is allowed\n",
				m.st.role & ROLE_TELEMETRY ? "both" : "policy");
	}
	__atomic_store_n(&m.serving, 1, __ATOMIC_RELEASE);
	if ((rc = start_http(&m)))
		goto out;
	if (m.st.role & ROLE_TELEMETRY)
		fprintf(stderr, "mixd: %s: producers on %s, %u shard%s\n",
			MIXD_VERSION, m.st.address, m.st.shards,
			m.st.shards == 1 ? "" : "s");

	control_loop(&m, sfd, changed);

	fprintf(stderr, "mixd: stopping%s\n",
		m.server ? ": draining producer rings" : "");
	__atomic_store_n(&m.serving, 0, __ATOMIC_RELEASE);
	if (m.server)
		ingest_server_stop_accepting(m.server);
	agg_drain_and_stop(m.agg);
	rc = 0;
out:
	shutdown_all(&m);
	close(sfd);
	if (rc == 0)
		fprintf(stderr, "mixd: stopped\n");
	return rc ? 1 : 0;
}
