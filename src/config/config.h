/*
 * config -- Mixer configuration (YAML) -> an immutable, validated model.
 *
 * One call loads a configuration generation: cfg_load() reads a file, a
 * directory (walked recursively, *.yaml / *.yml in sorted order) or Mixer's
 * fs:///dir store URL; cfg_load_buffer() reads YAML from memory (tests,
 * fuzzing). Loading parses every document, decodes the kinds mixd knows into
 * typed objects, merges attribute manifests into the built-in proxy
 * vocabulary, resolves references as Mixer did and type-checks every
 * expression into one shared program. Everything found wrong is collected
 * (cfg_error_count / cfg_error); a config with errors must not be used.
 *
 * Lifetime: the returned struct cfg owns everything reachable from it (the
 * model, the vocabulary, the compiled program, the diagnostics). It is
 * immutable after load, so any number of threads read it without locks; the
 * daemon reloads by loading a new generation and swapping a pointer, then
 * destroys the old one once no reader holds it.
 *
 * Kinds: attributemanifest, rule, metric, mesos, logentry, listentry,
 * checknothing, quota (instances), prometheus, mesosenv, stdio,
 * listchecker, denier, memquota (handlers), and Istio 1.4's `instance`
 * (spec.compiledTemplate + spec.params) and `handler` (spec.compiledAdapter
 * + spec.params). Other kinds are skipped with one warning per kind; so
 * are the proxy's QuotaSpec and QuotaSpecBinding, which configure the
 * proxy, not Mixer.
 * Every field accepts both protobuf JSON spellings (snake_case and
 * lowerCamelCase); an unknown field in a known kind is an error.
 *
 * Rule fields mixd does not implement: requestHeaderOperations and
 * responseHeaderOperations (check-path only, no effect on telemetry) are
 * skipped with a warning; `sampling` is an error, because ignoring it would
 * silently change what is counted.
 *
 * References resolve as Mixer did: a name with two or more dots is fully
 * qualified (`requestcount.metric.default`); with one dot it is name.kind
 * in the referring object's namespace (`handler.prometheus`); with none it
 * is Istio 1.4's short form, `name.handler.<ns>` or `name.instance.<ns>`.
 * The prometheus handler's instance_name follows the same rule in the
 * handler's namespace. A reference to an object that was skipped (an
 * unsupported kind, template or adapter) is dropped without an error; the
 * skipped kind has already been warned about.
 *
 * An object without metadata.namespace lives in the default namespace.
 * Directory walks skip names starting with '.' (editor files, and the
 * ..data symlink of Kubernetes ConfigMap mounts, which would load every
 * file twice).
 *
 * Secrets: a string parameter of a mesosenv or stdio handler (prometheus
 * parameters are names, not secrets) whose whole value is `${VAR}` or
 * `${env:VAR}`
 * takes the environment variable VAR; `${file:/path}` takes the contents of
 * the file (one trailing newline removed). `$${...}` stands for a literal
 * `${...}`. Resolved values are marked secret; they are never printed, and
 * password/token fields print as <redacted> whatever their origin. A missing
 * variable or unreadable file is an error naming the variable or the file.
 *
 * Diagnostics have the form
 *   file:line:column: <name.kind.namespace>: <field>: <found>, <expected>
 * with 1-based line and column of the YAML node (for an expression error,
 * of the offending byte inside the scalar when the scalar is on one line).
 */
#ifndef MIXD_CONFIG_H
#define MIXD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "attr/attr.h"

/** Mixer's default for --configDefaultNamespace. */
#define CFG_DEFAULT_NAMESPACE "istio-system"

/** Where a YAML node starts. @file is owned by the config. Line and column
 *  are 1-based; 0 means "no position" (an object built from nothing). */
struct cfg_pos {
	const char *file;
	uint32_t line;
	uint32_t col;
};

/** A string field. @secret: the value came from ${...} and must never be
 *  printed. An absent field has s == NULL. */
struct cfg_str {
	const char *s;
	struct cfg_pos pos;
	bool secret;
};

/** A list of strings (label_names, an action's instances). */
struct cfg_strlist {
	struct cfg_str *v;
	size_t n;
};

/** YAML scalar styles, which decide how an expression offset maps to a
 *  column (a quoted scalar starts one column after its quote). */
enum cfg_scalar_style {
	CFG_SCALAR_PLAIN,
	CFG_SCALAR_SINGLE_QUOTED,
	CFG_SCALAR_DOUBLE_QUOTED,
	CFG_SCALAR_BLOCK, /**< literal | or folded > */
};

/**
 * An expression as written. @text is NULL when the field is absent.
 * After load, @id is the expression's index in the config's shared program
 * (see cfg_program()) and @type its result type; identical texts share one
 * id, so an evaluator computes them once per record.
 */
struct cfg_expr {
	const char *text;
	struct cfg_pos pos; /**< first character of the scalar's contents */
	uint8_t style;	    /**< enum cfg_scalar_style */
	bool multiline;	    /**< the scalar spans lines: offsets map to @pos */
	int id;		    /**< program index, -1 when absent / not compiled */
	enum attr_type type; /**< result type once compiled */
};

/** A named expression: a metric dimension, a logentry variable, an
 *  attribute binding. Order is the YAML order. */
struct cfg_named_expr {
	const char *name;
	struct cfg_pos pos; /**< of the key */
	struct cfg_expr expr;
	int slot; /**< attribute_bindings: vocabulary slot of the target */
};

/** An ordered name -> expression map. */
struct cfg_expr_map {
	struct cfg_named_expr *v;
	size_t n;
};

/** The configuration kinds mixd models. */
enum cfg_kind {
	CFG_KIND_ATTRIBUTEMANIFEST,
	CFG_KIND_RULE,
	CFG_KIND_INSTANCE, /**< metric, mesos, logentry, or `instance` */
	CFG_KIND_HANDLER,  /**< prometheus, mesosenv, stdio, or `handler` */
	CFG_KIND_COUNT,
};

/** What every object has. @kind_name is the kind as written in the YAML
 *  (`metric`, `instance`, ...), which is part of the fully qualified name
 *  @fqn = name.kind_name.namespace. */
struct cfg_meta {
	const char *name;
	const char *ns;
	const char *kind_name;
	const char *fqn;
	struct cfg_pos pos; /**< of the document */
};

/** One attribute of a manifest. */
struct cfg_manifest_attr {
	const char *name;
	struct cfg_pos pos;
	enum attr_type type;
	const char *description;
};

/** kind: attributemanifest */
struct cfg_manifest {
	struct cfg_meta meta;
	struct cfg_manifest_attr *attrs;
	size_t n_attrs;
};

/** Instance templates. */
enum cfg_template {
	CFG_TMPL_METRIC,
	CFG_TMPL_MESOS, /**< attribute generation: Marathon metadata */
	CFG_TMPL_LOGENTRY,
	CFG_TMPL_LISTENTRY,    /**< policy: a value to look up in a list */
	CFG_TMPL_CHECKNOTHING, /**< policy: no fields */
	CFG_TMPL_QUOTA,	       /**< policy: dimensions of a quota */
	CFG_TMPL_COUNT,
};

/** Template `metric`. */
struct cfg_metric_inst {
	struct cfg_expr value;
	struct cfg_expr_map dimensions;
	struct cfg_expr monitored_resource_type;
	struct cfg_expr_map monitored_resource_dimensions;
};

/** Template `mesos` (kubernetesenv's inputs, attribute_bindings over the
 *  $out.* outputs). Absent inputs have text == NULL. */
struct cfg_mesos_inst {
	struct cfg_expr source_uid;
	struct cfg_expr source_ip;
	struct cfg_expr destination_uid;
	struct cfg_expr destination_ip;
	struct cfg_expr destination_port;
	struct cfg_expr_map attribute_bindings; /**< slot = target attribute */
};

/** Template `logentry`. */
struct cfg_logentry_inst {
	struct cfg_expr severity;
	struct cfg_expr timestamp;
	struct cfg_expr_map variables;
	struct cfg_expr monitored_resource_type;
	struct cfg_expr_map monitored_resource_dimensions;
	struct cfg_str timestamp_format;
};

/** Template `listentry`: a STRING (or string-like) or IP_ADDRESS value. */
struct cfg_listentry_inst {
	struct cfg_expr value;
};

/** Template `quota`: the dimensions that key its state and pick its
 *  limit. */
struct cfg_quota_inst {
	struct cfg_expr_map dimensions;
};

/** An instance. */
struct cfg_instance {
	struct cfg_meta meta;
	enum cfg_template tmpl;
	union {
		struct cfg_metric_inst metric;
		struct cfg_mesos_inst mesos;
		struct cfg_logentry_inst logentry;
		struct cfg_listentry_inst listentry;
		struct cfg_quota_inst quota;
	};
};

/** Prometheus metric kinds. */
enum cfg_prom_kind {
	CFG_PROM_UNSPECIFIED,
	CFG_PROM_GAUGE,
	CFG_PROM_COUNTER,
	CFG_PROM_DISTRIBUTION,
};

/** Which bucket definition a distribution used. */
enum cfg_buckets_kind {
	CFG_BUCKETS_DEFAULT, /**< none given: Prometheus' DefBuckets */
	CFG_BUCKETS_EXPLICIT,
	CFG_BUCKETS_LINEAR,
	CFG_BUCKETS_EXPONENTIAL,
};

/** A distribution's buckets: the definition and the finite upper bounds it
 *  yields (strictly increasing; +Inf is implicit). */
struct cfg_buckets {
	enum cfg_buckets_kind kind;
	int64_t num_finite_buckets;  /**< linear / exponential */
	double width, offset;	     /**< linear */
	double growth_factor, scale; /**< exponential */
	double *bounds;
	size_t n_bounds;
};

/** One metric of a prometheus handler. */
struct cfg_prom_metric {
	struct cfg_pos pos;
	struct cfg_str name;
	struct cfg_str ns;	      /**< default "istio" */
	struct cfg_str description;   /**< HELP; default: the name */
	struct cfg_str instance_name; /**< as written */
	enum cfg_prom_kind kind;
	struct cfg_strlist label_names;
	struct cfg_buckets buckets;
	/** Exposed name, <namespace>_<name> sanitised as Mixer did. */
	const char *family;
	/** The resolved metric instance. */
	const struct cfg_instance *instance;
	/** For label i, the index of the instance dimension it reads. */
	size_t *label_dims;
};

/** Handler adapter `prometheus`. Durations in nanoseconds, 0 = unset. */
struct cfg_prometheus {
	struct cfg_prom_metric *metrics;
	size_t n_metrics;
	int64_t metrics_expiry_ns;
	/** Defaults to half the expiry when an expiry is set. */
	int64_t expiry_check_interval_ns;
};

/** Handler adapter `mesosenv` (the user's Marathon resolver). */
struct cfg_mesosenv {
	struct cfg_str
		marathon_address; /**< default http://master.mesos:8080 */
	struct cfg_str http_basic_auth_user;
	struct cfg_str http_basic_auth_password; /**< printed <redacted> */
	struct cfg_str auth_token;		 /**< printed <redacted> */
	struct cfg_str auth_token_file;
	struct cfg_str ca_file;
	int64_t cache_refresh_ns; /**< default 5 minutes */
};

/**
 * The ',' that ends the address at @p in a marathon_address list, or NULL
 * at the last. A password may hold a ',' (RFC 3986 lets userinfo have one
 * unescaped): an address's userinfo runs to its last '@' before the next
 * '/' or the next address's "://", and the address ends at the first ','
 * after that. The resolver splits the list with it; the summary redacts
 * each address's userinfo by it.
 */
const char *cfg_address_end(const char *p);

/** stdio's Level enum. */
enum cfg_stdio_level {
	CFG_LEVEL_INFO,
	CFG_LEVEL_WARNING,
	CFG_LEVEL_ERROR,
};

/** stdio's Stream enum. */
enum cfg_stdio_stream {
	CFG_STREAM_STDOUT,
	CFG_STREAM_STDERR,
	CFG_STREAM_FILE,
	CFG_STREAM_ROTATED_FILE,
};

/** A severityLevels entry: a logentry severity string -> level. */
struct cfg_severity_level {
	const char *severity;
	enum cfg_stdio_level level;
};

/** Handler adapter `stdio`. */
struct cfg_stdio {
	enum cfg_stdio_stream log_stream;
	/** Mixer's default map (INFO/info/WARN/warn/ERR/FATAL/... to their
	 *  levels) unless the config gives one, which replaces it whole. */
	struct cfg_severity_level *severity_levels;
	size_t n_severity_levels;
	enum cfg_stdio_level metric_level;
	/** Accepted and, as in Mixer, filters nothing: its adapter wrote each
	 *  entry with zapcore.Core.Write, which skips the level check. */
	enum cfg_stdio_level output_level;
	/** Default true, as in Mixer's DefaultConfig (Istio 1.1-1.4). mixd
	 *  writes JSON lines either way: false is accepted, not honoured. */
	bool output_as_json;
	struct cfg_str output_path;
	int64_t max_megabytes_before_rotation;
	int64_t max_days_before_rotation;
	int64_t max_rotated_files;
};

/** listchecker's entryType. */
enum cfg_list_entry_type {
	CFG_LIST_STRINGS,
	CFG_LIST_CASE_INSENSITIVE_STRINGS,
	CFG_LIST_IP_ADDRESSES,
	CFG_LIST_REGEX,
};

/** Handler adapter `listchecker`, with Mixer's defaults. Durations in
 *  nanoseconds. The entries' syntax (IPs, regexps) is the policy
 *  module's to check. */
struct cfg_listchecker {
	struct cfg_str provider_url;   /**< absent: the overrides alone */
	int64_t refresh_interval_ns;   /**< default 60 s */
	int64_t ttl_ns;		       /**< default 300 s */
	int64_t caching_interval_ns;   /**< default 300 s */
	int64_t caching_use_count;     /**< default 10000 */
	struct cfg_strlist overrides;
	enum cfg_list_entry_type entry_type; /**< default STRINGS */
	bool blacklist;			     /**< default false: a whitelist */
};

/** Handler adapter `denier`: every check it sees gets this answer. */
struct cfg_denier {
	int64_t status_code;	   /**< google.rpc.Code; default 9 */
	struct cfg_str status_message;
	int64_t valid_duration_ns; /**< default 5 s */
	int64_t valid_use_count;   /**< default 1000 */
};

/** One dimension of a memquota override: name = value, as written. */
struct cfg_quota_dim {
	const char *name;
	struct cfg_str value;
};

/** A memquota override. */
struct cfg_quota_override {
	struct cfg_pos pos;
	struct cfg_quota_dim *dims;
	size_t n_dims;
	int64_t max_amount;
	int64_t valid_duration_ns;
};

/** One entry of memquota's quotas. */
struct cfg_quota_def {
	struct cfg_pos pos;
	struct cfg_str name; /**< the quota instance's fully qualified name */
	int64_t max_amount;
	int64_t valid_duration_ns; /**< 0: an allocation quota */
	struct cfg_quota_override *overrides;
	size_t n_overrides;
};

/** Handler adapter `memquota`. */
struct cfg_memquota {
	struct cfg_quota_def *quotas;
	size_t n_quotas;
	int64_t min_dedup_ns; /**< minDeduplicationDuration; default 1 s */
};

/** Adapters. */
enum cfg_adapter {
	CFG_ADAPTER_PROMETHEUS,
	CFG_ADAPTER_MESOSENV,
	CFG_ADAPTER_STDIO,
	CFG_ADAPTER_LISTCHECKER,
	CFG_ADAPTER_DENIER,
	CFG_ADAPTER_MEMQUOTA,
	CFG_ADAPTER_COUNT,
};

/** True for the adapters of the check and quota path (policy). */
static inline bool cfg_adapter_is_policy(enum cfg_adapter a)
{
	return a == CFG_ADAPTER_LISTCHECKER || a == CFG_ADAPTER_DENIER ||
	       a == CFG_ADAPTER_MEMQUOTA;
}

/** A handler. */
struct cfg_handler {
	struct cfg_meta meta;
	enum cfg_adapter adapter;
	union {
		struct cfg_prometheus prometheus;
		struct cfg_mesosenv mesosenv;
		struct cfg_stdio stdio;
		struct cfg_listchecker listchecker;
		struct cfg_denier denier;
		struct cfg_memquota memquota;
	};
};

/** One action of a rule: a handler and the instances sent to it. */
struct cfg_action {
	struct cfg_pos pos;
	struct cfg_str name;
	struct cfg_str handler_ref; /**< as written */
	/** NULL when the handler was skipped (unsupported kind or adapter):
	 *  the action then does nothing. */
	const struct cfg_handler *handler;
	struct cfg_strlist instance_refs; /**< as written */
	/** The resolved instances, in order; references to skipped objects
	 *  are left out, so n_instances <= instance_refs.n. */
	const struct cfg_instance **instances;
	size_t n_instances;
};

/** kind: rule */
struct cfg_rule {
	struct cfg_meta meta;
	struct cfg_expr match; /**< text "" when absent: always true */
	struct cfg_action *actions;
	size_t n_actions;
	/** The rule lives in the default namespace: it applies to every
	 *  record (see cfg_rule_applies). */
	bool in_default_namespace;
};

struct cfg;
struct expr_program;

/**
 * Load a configuration from @path: a YAML file, a directory (recursive;
 * files ending in .yaml or .yml, sorted by path; others ignored) or an
 * fs:///dir URL. @default_ns is --configDefaultNamespace (NULL:
 * CFG_DEFAULT_NAMESPACE). Returns a config whether or not it has errors;
 * check cfg_ok(). NULL only when memory ran out before anything could be
 * recorded. The caller owns it: cfg_destroy().
 */
struct cfg *cfg_load(const char *path, const char *default_ns);

/**
 * As cfg_load(), from @len bytes of YAML at @buf (need not be
 * NUL-terminated). @name stands for the file name in diagnostics.
 */
struct cfg *cfg_load_buffer(const char *name, const char *buf, size_t len,
			    const char *default_ns);

/** Free everything; NULL and half-built configs are fine. With holders
 *  from cfg_retain(), the last cfg_destroy() frees. */
void cfg_destroy(struct cfg *c);

/** Another holder of @c (a thread that outlives the one that loaded it:
 *  the policy server's engine). Returns @c. */
struct cfg *cfg_retain(struct cfg *c);

/** True when the config loaded without errors and may be used. */
bool cfg_ok(const struct cfg *c);

/** Number of errors collected (loading does not stop at the first). */
size_t cfg_error_count(const struct cfg *c);

/** Error @i (< cfg_error_count) as one line, without newline. Owned by
 *  @c. Never contains a secret value. */
const char *cfg_error(const struct cfg *c, size_t i);

/**
 * Add an error about object @meta's @field (NULL: the object) found by a
 * check outside the config module (a handler's settings its adapter
 * refuses): the config is then not ok. @msg is one line; never a secret.
 */
void cfg_add_error(struct cfg *c, const struct cfg_meta *meta,
		   const char *field, const char *msg);

/** Number of warnings (skipped kinds, ignored fields). */
size_t cfg_warning_count(const struct cfg *c);

/** Warning @i, formatted like an error. Owned by @c. */
const char *cfg_warning(const struct cfg *c, size_t i);

/** Print every error and warning, one per line ("error: " / "warning: "
 *  prefixed) to @out. */
void cfg_print_diagnostics(const struct cfg *c, FILE *out);

/** The default namespace the config was loaded with. */
const char *cfg_default_namespace(const struct cfg *c);

/** The vocabulary: built-in proxy attributes, the user's manifests and the
 *  mesos template's $out.* outputs. Owned by @c. */
const struct attr_vocab *cfg_vocab(const struct cfg *c);

/**
 * The shared program holding every expression of the config (see
 * src/expr/expr.h): rule matches (an absent match compiles as `true`),
 * instance values, dimensions, inputs, bindings and variables; each
 * struct cfg_expr's @id indexes it. Owned by @c, immutable, NULL only if
 * loading failed before compiling. Shards create their expr_scratch from
 * it.
 */
const struct expr_program *cfg_program(const struct cfg *c);

/** Attribute manifests, in load order. */
size_t cfg_manifest_count(const struct cfg *c);
/** Manifest @i. */
const struct cfg_manifest *cfg_manifest(const struct cfg *c, size_t i);

/** Rules, in load order. */
size_t cfg_rule_count(const struct cfg *c);
/** Rule @i. */
const struct cfg_rule *cfg_rule(const struct cfg *c, size_t i);

/** Instances, in load order. */
size_t cfg_instance_count(const struct cfg *c);
/** Instance @i. */
const struct cfg_instance *cfg_instance(const struct cfg *c, size_t i);

/** Handlers, in load order. */
size_t cfg_handler_count(const struct cfg *c);
/** Handler @i. */
const struct cfg_handler *cfg_handler(const struct cfg *c, size_t i);

/** Instance by fully qualified name, or NULL. */
const struct cfg_instance *cfg_find_instance(const struct cfg *c,
					     const char *fqn);

/** Handler by fully qualified name, or NULL. */
const struct cfg_handler *cfg_find_handler(const struct cfg *c,
					   const char *fqn);

/**
 * Whether rule @r applies to a record whose namespace is @ns (@len bytes):
 * destination.namespace for an inbound report, source.namespace for an
 * outbound one. Rules in the default namespace apply to every record;
 * others only when the namespaces are equal. @ns may be NULL (namespace
 * unknown): then only default-namespace rules apply.
 */
bool cfg_rule_applies(const struct cfg *c, const struct cfg_rule *r,
		      const char *ns, size_t len);

/**
 * The namespace a record is scoped by: destination.namespace, or
 * source.namespace when context.reporter.kind is "outbound" (Mixer's
 * getIdentityNamespace). False when the record does not carry it.
 */
bool cfg_record_namespace(const struct attr_table *t, const char **ns,
			  size_t *len);

/** Mark in @slots (a bitmap of attribute slots, dictionary ids first)
 *  the attributes cfg_record_namespace() reads. */
void cfg_record_namespace_reads(uint64_t *slots);

/**
 * What to watch for changes: the files read and the directories walked
 * (for a directory load, every directory, so new files are noticed).
 * Paths as opened. Owned by @c. @n_out receives the count.
 */
const char *const *cfg_sources(const struct cfg *c, size_t *n_out);

/** Name of a template ("metric", "mesos", "logentry"). */
const char *cfg_template_name(enum cfg_template t);

/** Name of an adapter ("prometheus", "mesosenv", "stdio"). */
const char *cfg_adapter_name(enum cfg_adapter a);

/**
 * Print the --check-config summary of @c to @out: objects by kind, rules,
 * instances, handlers, metric families, vocabulary size, then the
 * diagnostics and a verdict line. Secrets print as <redacted>.
 */
void cfg_print_summary(const struct cfg *c, FILE *out);

/**
 * `mixd --check-config PATH`: load @path with @default_ns, run @check on
 * it (may be NULL: the checks of modules outside this one, which report
 * with cfg_add_error()), print the summary (or, when nothing could be
 * loaded, the reason) to @out. Returns 0 when the config is valid, 1
 * otherwise (the process exit status).
 */
int cfg_check(const char *path, const char *default_ns, FILE *out,
	      void (*check)(struct cfg *c, void *arg), void *arg);

#endif /* MIXD_CONFIG_H */
