/*
 * cfg_kinds.c -- one field table per kind (both protobuf spellings), the
 * few fields that need their own decoder, and the dispatch from `kind`.
 *
 * The tables follow the protos of istio/api (policy/v1beta1 for manifests
 * and rules, the metric / logentry templates, the prometheus and stdio
 * adapters) and of the user's mesos fork (kubernetesenv's shape).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

#define OFF(type, field) offsetof(type, field)

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map,
			    const char *key);

/* ------------------------------------------------------------ manifests */

static int decode_value_type(struct cfg_ctx *x, const struct cfg_field *f,
			     yaml_node_t *node, void *dst)
{
	struct cfg_manifest_attr *a = dst;
	const char *s = cfg_scalar(node);

	a->type = s ? attr_type_parse(s) : ATTR_NONE;
	if (a->type != ATTR_NONE)
		return 0;
	cfg_node_error(x, node,
		       "found %s%s%s, expected STRING, INT64, DOUBLE, BOOL, "
		       "TIMESTAMP, IP_ADDRESS, EMAIL_ADDRESS, URI, DNS_NAME, "
		       "DURATION, STRING_MAP or BYTES",
		       s ? "\"" : "", s ? s : cfg_node_what(node),
		       s ? "\"" : "");
	return -1;
}

static int decode_description(struct cfg_ctx *x, const struct cfg_field *f,
			      yaml_node_t *node, void *dst)
{
	struct cfg_manifest_attr *a = dst;
	const char *s = cfg_scalar(node);

	if (!s) {
		cfg_node_error(x, node, "found %s, expected a string",
			       cfg_node_what(node));
		return -1;
	}
	a->description = cfg_strdup(x->c, s);
	return 0;
}

static const struct cfg_field manifest_attr_fields[] = {
	{"value_type", "valueType", CFG_F_CUSTOM, 0, NULL, decode_value_type,
	 CFG_FF_REQUIRED},
	{"description", NULL, CFG_F_CUSTOM, 0, NULL, decode_description, 0},
};

struct push_arg {
	void *dst; /* the struct holding the array */
	size_t cap;
};

static int manifest_attr_entry(struct cfg_ctx *x, const char *key,
			       yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct push_arg *pa = arg;
	struct cfg_manifest *m = pa->dst;
	struct cfg_manifest_attr *a =
		cfg_push(x->c, &m->attrs, &m->n_attrs, &pa->cap, sizeof(*a));

	if (!a)
		return CFG_ENTRY_FATAL;
	a->name = cfg_strdup(x->c, key);
	a->pos = cfg_node_pos(x, k);
	if (cfg_decode_map(x, v, CFG_FIELDS(manifest_attr_fields), a)) {
		m->n_attrs--;
		return -1;
	}
	return 0;
}

static int decode_manifest_attrs(struct cfg_ctx *x, const struct cfg_field *f,
				 yaml_node_t *node, void *dst)
{
	struct push_arg pa = {dst, 0};

	return cfg_decode_entries(x, node,
				  "found %s, expected a mapping of attribute "
				  "names to {valueType}",
				  "found %s, expected an attribute name", true,
				  manifest_attr_entry, &pa);
}

/* A manifest's revision and name are informational: decoded into scratch
 * strings so that their type is still checked. */
struct manifest_scratch {
	struct cfg_manifest m; /* first: decode_manifest_attrs casts */
	struct cfg_str revision, name;
};

static const struct cfg_field manifest_fields[] = {
	{"revision", NULL, CFG_F_STR, OFF(struct manifest_scratch, revision),
	 NULL, NULL, 0},
	{"name", NULL, CFG_F_STR, OFF(struct manifest_scratch, name), NULL,
	 NULL, 0},
	{"attributes", NULL, CFG_F_CUSTOM, 0, NULL, decode_manifest_attrs, 0},
};

/* ---------------------------------------------------------------- rules */

static const struct cfg_field action_fields[] = {
	{"handler", NULL, CFG_F_STR, OFF(struct cfg_action, handler_ref), NULL,
	 NULL, CFG_FF_REQUIRED},
	{"instances", NULL, CFG_F_STRLIST,
	 OFF(struct cfg_action, instance_refs), NULL, NULL, 0},
	{"name", NULL, CFG_F_STR, OFF(struct cfg_action, name), NULL, NULL, 0},
};

/*
 * A YAML list of structs decoded with @fields into a growing array; @check,
 * if given, validates each element after its fields (and may fail it).
 * A failed element is dropped so later references to it do not dangle.
 */
static int decode_list(struct cfg_ctx *x, yaml_node_t *node, const char *what,
		       void *arr, size_t *n, size_t size, struct cfg_fields fields,
		       int (*check)(struct cfg_ctx *x, yaml_node_t *v, void *elem))
{
	size_t cap = 0, i = 0;
	int rc = 0;

	if (node->type != YAML_SEQUENCE_NODE) {
		cfg_node_error(x, node, "found %s, expected a list of %s",
			       cfg_node_what(node), what);
		return -1;
	}
	for (yaml_node_item_t *it = node->data.sequence.items.start;
	     it < node->data.sequence.items.top; it++, i++) {
		yaml_node_t *v = yaml_document_get_node(x->doc, *it);
		size_t old = cfg_ctx_push(x, "[%zu]", i);
		void *e = cfg_push(x->c, arr, n, &cap, size);

		if (!e)
			return -1;
		/* Every element starts with its position (struct cfg_pos). */
		*(struct cfg_pos *)e = cfg_node_pos(x, v);
		if (cfg_decode_map(x, v, fields, e) || (check && check(x, v, e))) {
			(*n)--;
			rc = -1;
		}
		cfg_ctx_pop(x, old);
	}
	return rc;
}

static int decode_actions(struct cfg_ctx *x, const struct cfg_field *f,
			  yaml_node_t *node, void *dst)
{
	struct cfg_rule *r = dst;

	return decode_list(x, node, "actions", &r->actions, &r->n_actions,
			   sizeof(*r->actions), CFG_FIELDS(action_fields), NULL);
}

/* Header operations act on the check path only; telemetry is unchanged
 * without them, so a config written for Mixer still loads. */
static int warn_ignored(struct cfg_ctx *x, const struct cfg_field *f,
			yaml_node_t *node, void *dst)
{
	struct cfg_pos pos = cfg_node_pos(x, node);

	cfg_warn_at(x->c, &pos, x->fqn, x->path,
		    "not supported by mixd (check path only), ignored");
	return 0;
}

/* Sampling drops reports: ignoring it would change every count. */
static int reject_unsupported(struct cfg_ctx *x, const struct cfg_field *f,
			      yaml_node_t *node, void *dst)
{
	cfg_node_error(x, node,
		       "found %s, expected no %s (not supported by "
		       "mixd)",
		       cfg_node_what(node), f->camel ? f->camel : f->snake);
	return -1;
}

static const struct cfg_field rule_fields[] = {
	{"match", NULL, CFG_F_EXPR, OFF(struct cfg_rule, match), NULL, NULL, 0},
	{"actions", NULL, CFG_F_CUSTOM, 0, NULL, decode_actions, 0},
	{"request_header_operations", "requestHeaderOperations", CFG_F_CUSTOM,
	 0, NULL, warn_ignored, 0},
	{"response_header_operations", "responseHeaderOperations", CFG_F_CUSTOM,
	 0, NULL, warn_ignored, 0},
	{"sampling", NULL, CFG_F_CUSTOM, 0, NULL, reject_unsupported, 0},
};

/* ------------------------------------------------------------ instances */

#define MI(f) OFF(struct cfg_instance, metric.f)
static const struct cfg_field metric_fields[] = {
	{"value", NULL, CFG_F_EXPR, MI(value), NULL, NULL, CFG_FF_REQUIRED},
	{"dimensions", NULL, CFG_F_EXPR_MAP, MI(dimensions), NULL, NULL, 0},
	{"monitored_resource_type", "monitoredResourceType", CFG_F_EXPR,
	 MI(monitored_resource_type), NULL, NULL, 0},
	{"monitored_resource_dimensions", "monitoredResourceDimensions",
	 CFG_F_EXPR_MAP, MI(monitored_resource_dimensions), NULL, NULL, 0},
};
#undef MI

#define ME(f) OFF(struct cfg_instance, mesos.f)
static const struct cfg_field mesos_fields[] = {
	{"source_uid", "sourceUid", CFG_F_EXPR, ME(source_uid), NULL, NULL, 0},
	{"source_ip", "sourceIp", CFG_F_EXPR, ME(source_ip), NULL, NULL, 0},
	{"destination_uid", "destinationUid", CFG_F_EXPR, ME(destination_uid),
	 NULL, NULL, 0},
	{"destination_ip", "destinationIp", CFG_F_EXPR, ME(destination_ip),
	 NULL, NULL, 0},
	{"destination_port", "destinationPort", CFG_F_EXPR,
	 ME(destination_port), NULL, NULL, 0},
	{"attribute_bindings", "attributeBindings", CFG_F_EXPR_MAP,
	 ME(attribute_bindings), NULL, NULL, 0},
};
#undef ME

#define LE(f) OFF(struct cfg_instance, logentry.f)
static const struct cfg_field logentry_fields[] = {
	{"variables", NULL, CFG_F_EXPR_MAP, LE(variables), NULL, NULL, 0},
	{"timestamp", NULL, CFG_F_EXPR, LE(timestamp), NULL, NULL, 0},
	{"severity", NULL, CFG_F_EXPR, LE(severity), NULL, NULL, 0},
	{"monitored_resource_type", "monitoredResourceType", CFG_F_EXPR,
	 LE(monitored_resource_type), NULL, NULL, 0},
	{"monitored_resource_dimensions", "monitoredResourceDimensions",
	 CFG_F_EXPR_MAP, LE(monitored_resource_dimensions), NULL, NULL, 0},
	{"timestamp_format", "timestampFormat", CFG_F_STR, LE(timestamp_format),
	 NULL, NULL, 0},
};
#undef LE

static const struct cfg_field listentry_fields[] = {
	{"value", NULL, CFG_F_EXPR, OFF(struct cfg_instance, listentry.value),
	 NULL, NULL, CFG_FF_REQUIRED},
};

static const struct cfg_field quota_fields[] = {
	{"dimensions", NULL, CFG_F_EXPR_MAP,
	 OFF(struct cfg_instance, quota.dimensions), NULL, NULL, 0},
};

static const struct {
	const char *name;
	struct cfg_fields fields;
} templates[CFG_TMPL_COUNT] = {
	[CFG_TMPL_METRIC] = {"metric", CFG_FIELDS(metric_fields)},
	[CFG_TMPL_MESOS] = {"mesos", CFG_FIELDS(mesos_fields)},
	[CFG_TMPL_LOGENTRY] = {"logentry", CFG_FIELDS(logentry_fields)},
	[CFG_TMPL_LISTENTRY] = {"listentry", CFG_FIELDS(listentry_fields)},
	/* no fields: any given is unknown, an error */
	[CFG_TMPL_CHECKNOTHING] = {"checknothing", {NULL, 0}},
	[CFG_TMPL_QUOTA] = {"quota", CFG_FIELDS(quota_fields)},
};

/* ------------------------------------------------------------- handlers */

static const char *const prom_kinds[] = {"UNSPECIFIED", "GAUGE", "COUNTER",
					 "DISTRIBUTION", NULL};

static int decode_bounds(struct cfg_ctx *x, const struct cfg_field *f,
			 yaml_node_t *node, void *dst)
{
	struct cfg_buckets *b = dst;
	size_t cap = 0, i = 0;
	int rc = 0;

	if (node->type != YAML_SEQUENCE_NODE) {
		cfg_node_error(x, node, "found %s, expected a list of numbers",
			       cfg_node_what(node));
		return -1;
	}
	for (yaml_node_item_t *it = node->data.sequence.items.start;
	     it < node->data.sequence.items.top; it++, i++) {
		yaml_node_t *v = yaml_document_get_node(x->doc, *it);
		const char *s = cfg_scalar(v);
		double *d = cfg_push(x->c, &b->bounds, &b->n_bounds, &cap,
				     sizeof(*d));
		char *end;

		if (!d)
			return -1;
		*d = s && *s ? strtod(s, &end) : 0;
		if (!s || !*s || *end || *d != *d) {
			size_t old = cfg_ctx_push(x, "[%zu]", i);

			cfg_node_error(x, v, "found %s%s%s, expected a number",
				       s ? "\"" : "", s ? s : cfg_node_what(v),
				       s ? "\"" : "");
			cfg_ctx_pop(x, old);
			rc = -1;
			continue;
		}
		if (b->n_bounds > 1 && !(*d > d[-1])) {
			size_t old = cfg_ctx_push(x, "[%zu]", i);

			cfg_node_error(x, v,
				       "found %s after %g, expected bounds in "
				       "strictly increasing order",
				       s, d[-1]);
			cfg_ctx_pop(x, old);
			rc = -1;
		}
	}
	if (!rc && !b->n_bounds) {
		cfg_node_error(x, node,
			       "found an empty list, expected at "
			       "least one bound");
		rc = -1;
	}
	return rc;
}

#define BK(f) OFF(struct cfg_buckets, f)
static const struct cfg_field linear_fields[] = {
	{"num_finite_buckets", "numFiniteBuckets", CFG_F_INT,
	 BK(num_finite_buckets), NULL, NULL, CFG_FF_REQUIRED},
	{"width", NULL, CFG_F_DOUBLE, BK(width), NULL, NULL, CFG_FF_REQUIRED},
	{"offset", NULL, CFG_F_DOUBLE, BK(offset), NULL, NULL, 0},
};
static const struct cfg_field exponential_fields[] = {
	{"num_finite_buckets", "numFiniteBuckets", CFG_F_INT,
	 BK(num_finite_buckets), NULL, NULL, CFG_FF_REQUIRED},
	{"growth_factor", "growthFactor", CFG_F_DOUBLE, BK(growth_factor), NULL,
	 NULL, CFG_FF_REQUIRED},
	{"scale", NULL, CFG_F_DOUBLE, BK(scale), NULL, NULL, CFG_FF_REQUIRED},
};
static const struct cfg_field explicit_fields[] = {
	{"bounds", NULL, CFG_F_CUSTOM, 0, NULL, decode_bounds, CFG_FF_REQUIRED},
};
#undef BK

/* One of the three definitions; the bounds are computed here so that a
 * bad parameter is reported at its own line. */
static int decode_bucket_def(struct cfg_ctx *x, const struct cfg_field *f,
			     yaml_node_t *node, void *dst)
{
	struct cfg_buckets *b = dst;
	struct cfg_fields fields;
	const char *why = NULL, *field = NULL;

	if (b->kind != CFG_BUCKETS_DEFAULT) {
		cfg_node_error(x, node,
			       "found a second bucket definition, "
			       "expected one of explicit_buckets, "
			       "linear_buckets or exponential_buckets");
		return -1;
	}
	if (!strcmp(f->snake, "linear_buckets")) {
		b->kind = CFG_BUCKETS_LINEAR;
		fields = CFG_FIELDS(linear_fields);
	} else if (!strcmp(f->snake, "exponential_buckets")) {
		b->kind = CFG_BUCKETS_EXPONENTIAL;
		fields = CFG_FIELDS(exponential_fields);
	} else {
		b->kind = CFG_BUCKETS_EXPLICIT;
		fields = CFG_FIELDS(explicit_fields);
	}
	if (cfg_decode_map(x, node, fields, b))
		return -1;
	if (!cfg_buckets_compute(x->c, b, &field, &why))
		return 0;
	/* point at the parameter, in the spelling the user wrote */
	for (size_t i = 0; field && i < fields.n; i++) {
		const struct cfg_field *pf = &fields.v[i];
		yaml_node_t *v;

		if (strcmp(pf->snake, field))
			continue;
		if (!(v = map_get(x->doc, node, pf->snake)) && pf->camel)
			v = map_get(x->doc, node, pf->camel);
		if (!v)
			break;
		size_t old = cfg_ctx_push(x, "%s",
					  map_get(x->doc, node, pf->snake)
						  ? pf->snake
						  : pf->camel);
		cfg_node_error(x, v, "%s", why);
		cfg_ctx_pop(x, old);
		return -1;
	}
	cfg_node_error(x, node, "%s", why);
	return -1;
}

static const struct cfg_field buckets_fields[] = {
	{"explicit_buckets", "explicitBuckets", CFG_F_CUSTOM, 0, NULL,
	 decode_bucket_def, 0},
	{"linear_buckets", "linearBuckets", CFG_F_CUSTOM, 0, NULL,
	 decode_bucket_def, 0},
	{"exponential_buckets", "exponentialBuckets", CFG_F_CUSTOM, 0, NULL,
	 decode_bucket_def, 0},
};

static int decode_buckets(struct cfg_ctx *x, const struct cfg_field *f,
			  yaml_node_t *node, void *dst)
{
	struct cfg_prom_metric *m = dst;

	return cfg_decode_map(x, node, CFG_FIELDS(buckets_fields), &m->buckets);
}

#define PM(f) OFF(struct cfg_prom_metric, f)
static const struct cfg_field prom_metric_fields[] = {
	{"namespace", NULL, CFG_F_STR, PM(ns), NULL, NULL, 0},
	{"name", NULL, CFG_F_STR, PM(name), NULL, NULL, 0},
	{"instance_name", "instanceName", CFG_F_STR, PM(instance_name), NULL,
	 NULL, CFG_FF_REQUIRED},
	{"description", NULL, CFG_F_STR, PM(description), NULL, NULL, 0},
	{"kind", NULL, CFG_F_ENUM, PM(kind), prom_kinds, NULL, CFG_FF_REQUIRED},
	{"buckets", NULL, CFG_F_CUSTOM, 0, NULL, decode_buckets, 0},
	{"label_names", "labelNames", CFG_F_STRLIST, PM(label_names), NULL,
	 NULL, 0},
};
#undef PM

/* Mixer refused a metric without a kind. */
static int check_prom_metric(struct cfg_ctx *x, yaml_node_t *v, void *elem)
{
	const struct cfg_prom_metric *m = elem;

	if (m->kind != CFG_PROM_UNSPECIFIED)
		return 0;
	cfg_ctx_push(x, "kind");
	cfg_node_error(x, v,
		       "found UNSPECIFIED, expected "
		       "GAUGE, COUNTER or DISTRIBUTION");
	return -1;
}

static int decode_prom_metrics(struct cfg_ctx *x, const struct cfg_field *f,
			       yaml_node_t *node, void *dst)
{
	struct cfg_prometheus *p = &((struct cfg_handler *)dst)->prometheus;

	return decode_list(x, node, "metrics", &p->metrics, &p->n_metrics,
			   sizeof(*p->metrics), CFG_FIELDS(prom_metric_fields),
			   check_prom_metric);
}

#define PE(f) OFF(struct cfg_prometheus, f)
static const struct cfg_field expiry_fields[] = {
	{"metrics_expiry_duration", "metricsExpiryDuration", CFG_F_DURATION,
	 PE(metrics_expiry_ns), NULL, NULL, 0},
	{"expiry_check_interval_duration", "expiryCheckIntervalDuration",
	 CFG_F_DURATION, PE(expiry_check_interval_ns), NULL, NULL, 0},
};
#undef PE

static int decode_expiry(struct cfg_ctx *x, const struct cfg_field *f,
			 yaml_node_t *node, void *dst)
{
	struct cfg_prometheus *p = &((struct cfg_handler *)dst)->prometheus;

	return cfg_decode_map(x, node, CFG_FIELDS(expiry_fields), p);
}

static const struct cfg_field prometheus_fields[] = {
	{"metrics", NULL, CFG_F_CUSTOM, 0, NULL, decode_prom_metrics, 0},
	{"metrics_expiration_policy", "metricsExpirationPolicy", CFG_F_CUSTOM,
	 0, NULL, decode_expiry, 0},
};

#define MS(f) OFF(struct cfg_handler, mesosenv.f)
static const struct cfg_field mesosenv_fields[] = {
	{"marathon_address", "marathonAddress", CFG_F_PARAM,
	 MS(marathon_address), NULL, NULL, 0},
	{"http_basic_auth_user", "httpBasicAuthUser", CFG_F_PARAM,
	 MS(http_basic_auth_user), NULL, NULL, 0},
	{"http_basic_auth_password", "httpBasicAuthPassword", CFG_F_PARAM,
	 MS(http_basic_auth_password), NULL, NULL, CFG_FF_PASSWORD},
	{"auth_token", "authToken", CFG_F_PARAM, MS(auth_token), NULL, NULL,
	 CFG_FF_PASSWORD},
	{"auth_token_file", "authTokenFile", CFG_F_PARAM, MS(auth_token_file),
	 NULL, NULL, 0},
	{"cache_refresh_duration", "cacheRefreshDuration", CFG_F_DURATION,
	 MS(cache_refresh_ns), NULL, NULL, 0},
	{"ca_file", "caFile", CFG_F_PARAM, MS(ca_file), NULL, NULL, 0},
};
#undef MS

static const char *const stdio_levels[] = {"INFO", "WARNING", "ERROR", NULL};
static const char *const stdio_streams[] = {"STDOUT", "STDERR", "FILE",
					    "ROTATED_FILE", NULL};

static int severity_entry(struct cfg_ctx *x, const char *key, yaml_node_t *k,
			  yaml_node_t *v, void *arg)
{
	static const struct cfg_field level = {
		"level",
		NULL,
		CFG_F_ENUM,
		offsetof(struct cfg_severity_level, level),
		stdio_levels,
		NULL,
		0};
	struct push_arg *pa = arg;
	struct cfg_stdio *s = pa->dst;
	struct cfg_severity_level *l =
		cfg_push(x->c, &s->severity_levels, &s->n_severity_levels,
			 &pa->cap, sizeof(*l));

	if (!l)
		return CFG_ENTRY_FATAL;
	l->severity = cfg_strdup(x->c, key);
	if (cfg_decode_field(x, &level, v, l)) {
		s->n_severity_levels--;
		return -1;
	}
	return 0;
}

static int decode_severity_levels(struct cfg_ctx *x, const struct cfg_field *f,
				  yaml_node_t *node, void *dst)
{
	struct cfg_stdio *s = &((struct cfg_handler *)dst)->stdio;
	struct push_arg pa = {s, 0};

	/* A map given replaces the default one whole: jsonpb made a new map
	 * when it decoded the user's params into Mixer's DefaultConfig. */
	s->severity_levels = NULL;
	s->n_severity_levels = 0;
	return cfg_decode_entries(x, node,
				  "found %s, expected a mapping of severities to "
				  "INFO, WARNING or ERROR",
				  "found %s, expected a severity", false,
				  severity_entry, &pa);
}

#define SO(f) OFF(struct cfg_handler, stdio.f)
static const struct cfg_field stdio_fields[] = {
	{"log_stream", "logStream", CFG_F_ENUM, SO(log_stream), stdio_streams,
	 NULL, 0},
	{"severity_levels", "severityLevels", CFG_F_CUSTOM, 0, NULL,
	 decode_severity_levels, 0},
	{"metric_level", "metricLevel", CFG_F_ENUM, SO(metric_level),
	 stdio_levels, NULL, 0},
	{"output_as_json", "outputAsJson", CFG_F_BOOL, SO(output_as_json), NULL,
	 NULL, 0},
	{"output_level", "outputLevel", CFG_F_ENUM, SO(output_level),
	 stdio_levels, NULL, 0},
	{"output_path", "outputPath", CFG_F_PARAM, SO(output_path), NULL, NULL,
	 0},
	{"max_megabytes_before_rotation", "maxMegabytesBeforeRotation",
	 CFG_F_INT, SO(max_megabytes_before_rotation), NULL, NULL, 0},
	{"max_days_before_rotation", "maxDaysBeforeRotation", CFG_F_INT,
	 SO(max_days_before_rotation), NULL, NULL, 0},
	{"max_rotated_files", "maxRotatedFiles", CFG_F_INT,
	 SO(max_rotated_files), NULL, NULL, 0},
};
#undef SO

/* ------------------------------------------------- policy handlers */

static const char *const list_entry_types[] = {
	"STRINGS", "CASE_INSENSITIVE_STRINGS", "IP_ADDRESSES", "REGEX", NULL};

#define LC(f) OFF(struct cfg_handler, listchecker.f)
static const struct cfg_field listchecker_fields[] = {
	{"provider_url", "providerUrl", CFG_F_PARAM, LC(provider_url), NULL,
	 NULL, 0},
	{"refresh_interval", "refreshInterval", CFG_F_DURATION,
	 LC(refresh_interval_ns), NULL, NULL, 0},
	{"ttl", NULL, CFG_F_DURATION, LC(ttl_ns), NULL, NULL, 0},
	{"caching_interval", "cachingInterval", CFG_F_DURATION,
	 LC(caching_interval_ns), NULL, NULL, 0},
	{"caching_use_count", "cachingUseCount", CFG_F_INT,
	 LC(caching_use_count), NULL, NULL, 0},
	{"overrides", NULL, CFG_F_STRLIST, LC(overrides), NULL, NULL, 0},
	{"entry_type", "entryType", CFG_F_ENUM, LC(entry_type),
	 list_entry_types, NULL, 0},
	{"blacklist", NULL, CFG_F_BOOL, LC(blacklist), NULL, NULL, 0},
};
#undef LC

/* google.rpc.Status.details: Any messages for the caller, which the
 * proxy did not pass on; accepted and not sent. */
static int ignore_details(struct cfg_ctx *x, const struct cfg_field *f,
			  yaml_node_t *node, void *dst)
{
	struct cfg_pos pos = cfg_node_pos(x, node);

	cfg_warn_at(x->c, &pos, x->fqn, x->path,
		    "status details are not sent by mixd, ignored");
	return 0;
}

#define DN(f) OFF(struct cfg_handler, denier.f)
static const struct cfg_field status_fields[] = {
	{"code", NULL, CFG_F_INT, DN(status_code), NULL, NULL, 0},
	{"message", NULL, CFG_F_STR, DN(status_message), NULL, NULL, 0},
	{"details", NULL, CFG_F_CUSTOM, 0, NULL, ignore_details, 0},
};

static int decode_status(struct cfg_ctx *x, const struct cfg_field *f,
			 yaml_node_t *node, void *dst)
{
	return cfg_decode_map(x, node, CFG_FIELDS(status_fields), dst);
}

static const struct cfg_field denier_fields[] = {
	{"status", NULL, CFG_F_CUSTOM, 0, NULL, decode_status, 0},
	{"valid_duration", "validDuration", CFG_F_DURATION,
	 DN(valid_duration_ns), NULL, NULL, 0},
	{"valid_use_count", "validUseCount", CFG_F_INT, DN(valid_use_count),
	 NULL, NULL, 0},
};
#undef DN

static int quota_dim_entry(struct cfg_ctx *x, const char *key, yaml_node_t *k,
			   yaml_node_t *v, void *arg)
{
	static const struct cfg_field value = {
		"value", NULL, CFG_F_STR, offsetof(struct cfg_quota_dim, value),
		NULL, NULL, 0};
	struct push_arg *pa = arg;
	struct cfg_quota_override *o = pa->dst;
	struct cfg_quota_dim *d =
		cfg_push(x->c, &o->dims, &o->n_dims, &pa->cap, sizeof(*d));

	if (!d)
		return CFG_ENTRY_FATAL;
	d->name = cfg_strdup(x->c, key);
	if (cfg_decode_field(x, &value, v, d) || !d->value.s) {
		if (!d->value.s)
			cfg_node_error(x, v, "found %s, expected a string",
				       cfg_node_what(v));
		o->n_dims--;
		return -1;
	}
	return 0;
}

static int decode_quota_dims(struct cfg_ctx *x, const struct cfg_field *f,
			     yaml_node_t *node, void *dst)
{
	struct push_arg pa = {dst, 0};

	return cfg_decode_entries(x, node,
				  "found %s, expected a mapping of dimension "
				  "names to values",
				  "found %s, expected a dimension name", false,
				  quota_dim_entry, &pa);
}

#define QO(f) OFF(struct cfg_quota_override, f)
static const struct cfg_field quota_override_fields[] = {
	{"dimensions", NULL, CFG_F_CUSTOM, 0, NULL, decode_quota_dims, 0},
	{"max_amount", "maxAmount", CFG_F_INT, QO(max_amount), NULL, NULL, 0},
	{"valid_duration", "validDuration", CFG_F_DURATION,
	 QO(valid_duration_ns), NULL, NULL, 0},
};
#undef QO

static int decode_quota_overrides(struct cfg_ctx *x, const struct cfg_field *f,
				  yaml_node_t *node, void *dst)
{
	struct cfg_quota_def *q = dst;

	return decode_list(x, node, "overrides", &q->overrides,
			   &q->n_overrides, sizeof(*q->overrides),
			   CFG_FIELDS(quota_override_fields), NULL);
}

#define QD(f) OFF(struct cfg_quota_def, f)
static const struct cfg_field quota_def_fields[] = {
	{"name", NULL, CFG_F_STR, QD(name), NULL, NULL, CFG_FF_REQUIRED},
	{"max_amount", "maxAmount", CFG_F_INT, QD(max_amount), NULL, NULL, 0},
	{"valid_duration", "validDuration", CFG_F_DURATION,
	 QD(valid_duration_ns), NULL, NULL, 0},
	{"overrides", NULL, CFG_F_CUSTOM, 0, NULL, decode_quota_overrides, 0},
};
#undef QD

static int decode_quotas(struct cfg_ctx *x, const struct cfg_field *f,
			 yaml_node_t *node, void *dst)
{
	struct cfg_memquota *m = &((struct cfg_handler *)dst)->memquota;

	return decode_list(x, node, "quotas", &m->quotas, &m->n_quotas,
			   sizeof(*m->quotas), CFG_FIELDS(quota_def_fields),
			   NULL);
}

static const struct cfg_field memquota_fields[] = {
	{"quotas", NULL, CFG_F_CUSTOM, 0, NULL, decode_quotas, 0},
	{"min_deduplication_duration", "minDeduplicationDuration",
	 CFG_F_DURATION, OFF(struct cfg_handler, memquota.min_dedup_ns), NULL,
	 NULL, 0},
};

static const struct {
	const char *name;
	struct cfg_fields fields;
} adapters[CFG_ADAPTER_COUNT] = {
	[CFG_ADAPTER_PROMETHEUS] = {"prometheus",
				    CFG_FIELDS(prometheus_fields)},
	[CFG_ADAPTER_MESOSENV] = {"mesosenv", CFG_FIELDS(mesosenv_fields)},
	[CFG_ADAPTER_STDIO] = {"stdio", CFG_FIELDS(stdio_fields)},
	[CFG_ADAPTER_LISTCHECKER] = {"listchecker",
				     CFG_FIELDS(listchecker_fields)},
	[CFG_ADAPTER_DENIER] = {"denier", CFG_FIELDS(denier_fields)},
	[CFG_ADAPTER_MEMQUOTA] = {"memquota", CFG_FIELDS(memquota_fields)},
};

/*
 * The stdio adapter's DefaultConfig severityLevels (Istio 1.1-1.4,
 * mixer/adapter/metadata/inventory.go). A severity found in none of the
 * handler's levels is INFO.
 */
static const struct cfg_severity_level default_severity_levels[] = {
	{"INFORMATIONAL", CFG_LEVEL_INFO}, {"informational", CFG_LEVEL_INFO},
	{"INFO", CFG_LEVEL_INFO},	   {"info", CFG_LEVEL_INFO},
	{"WARNING", CFG_LEVEL_WARNING},	   {"warning", CFG_LEVEL_WARNING},
	{"WARN", CFG_LEVEL_WARNING},	   {"warn", CFG_LEVEL_WARNING},
	{"ERROR", CFG_LEVEL_ERROR},	   {"error", CFG_LEVEL_ERROR},
	{"ERR", CFG_LEVEL_ERROR},	   {"err", CFG_LEVEL_ERROR},
	{"FATAL", CFG_LEVEL_ERROR},	   {"fatal", CFG_LEVEL_ERROR},
};

/* Mixer's defaults, applied before decoding so the YAML overrides them. */
static void handler_defaults(struct cfg_handler *h)
{
	const int64_t s = INT64_C(1000000000);

	if (h->adapter == CFG_ADAPTER_MESOSENV)
		h->mesosenv.cache_refresh_ns = 5 * 60 * s;
	/* mixer/adapter/metadata/inventory.go */
	if (h->adapter == CFG_ADAPTER_LISTCHECKER) {
		h->listchecker.refresh_interval_ns = 60 * s;
		h->listchecker.ttl_ns = 300 * s;
		h->listchecker.caching_interval_ns = 300 * s;
		h->listchecker.caching_use_count = 10000;
	}
	if (h->adapter == CFG_ADAPTER_DENIER) {
		h->denier.status_code = 9; /* FAILED_PRECONDITION */
		h->denier.valid_duration_ns = 5 * s;
		h->denier.valid_use_count = 1000;
	}
	if (h->adapter == CFG_ADAPTER_MEMQUOTA)
		h->memquota.min_dedup_ns = s;
	if (h->adapter == CFG_ADAPTER_STDIO) {
		h->stdio.log_stream = CFG_STREAM_STDOUT;
		h->stdio.metric_level = CFG_LEVEL_INFO;
		h->stdio.output_level = CFG_LEVEL_INFO;
		/* true in the DefaultConfig: a handler that did not say
		 * wrote JSON in Mixer */
		h->stdio.output_as_json = true;
		/* read-only: decoding a map replaces the pointer */
		h->stdio.severity_levels =
			(struct cfg_severity_level *)default_severity_levels;
		h->stdio.n_severity_levels = sizeof(default_severity_levels) /
					     sizeof(default_severity_levels[0]);
	}
}

/* ------------------------------------------- Istio 1.4 instance/handler */

/* spec of kind: instance / kind: handler, captured as nodes first: the
 * params' table depends on compiledTemplate / compiledAdapter. */
struct generic_spec {
	yaml_node_t *compiled, *params, *bindings, *unsupported;
	const char *unsupported_name;
};

static int capture_node(struct cfg_ctx *x, const struct cfg_field *f,
			yaml_node_t *node, void *dst)
{
	struct generic_spec *g = dst;

	switch (f->off) {
	case 0:
		if (!cfg_scalar(node)) {
			cfg_node_error(x, node, "found %s, expected a name",
				       cfg_node_what(node));
			return -1;
		}
		g->compiled = node;
		break;
	case 1:
		g->params = node;
		break;
	case 2:
		g->bindings = node;
		break;
	default:
		g->unsupported = node;
		g->unsupported_name = f->camel;
	}
	return 0;
}

static const struct cfg_field instance_spec_fields[] = {
	{"compiled_template", "compiledTemplate", CFG_F_CUSTOM, 0, NULL,
	 capture_node, CFG_FF_REQUIRED},
	{"params", NULL, CFG_F_CUSTOM, 1, NULL, capture_node, 0},
	{"attribute_bindings", "attributeBindings", CFG_F_CUSTOM, 2, NULL,
	 capture_node, 0},
	{"template", NULL, CFG_F_CUSTOM, 3, NULL, reject_unsupported, 0},
};

static const struct cfg_field handler_spec_fields[] = {
	{"compiled_adapter", "compiledAdapter", CFG_F_CUSTOM, 0, NULL,
	 capture_node, CFG_FF_REQUIRED},
	{"params", NULL, CFG_F_CUSTOM, 1, NULL, capture_node, 0},
	{"adapter", NULL, CFG_F_CUSTOM, 3, NULL, reject_unsupported, 0},
	{"connection", NULL, CFG_F_CUSTOM, 3, NULL, reject_unsupported, 0},
};

/* ------------------------------------------------------------- dispatch */

static bool warn_once(struct cfg *c, const char *what)
{
	const char **slot;

	for (size_t i = 0; i < c->n_warned_kinds; i++)
		if (!strcmp(c->warned_kinds[i], what))
			return false;
	slot = cfg_push(c, &c->warned_kinds, &c->n_warned_kinds,
			&c->cap_warned_kinds, sizeof(*slot));
	if (slot)
		*slot = cfg_strdup(c, what);
	return slot != NULL;
}

static void mark_skipped(struct cfg *c, const char *fqn)
{
	cfg_names_add(c, &c->skipped, fqn, CFG_WHAT_SKIPPED, NULL, NULL);
}

bool cfg_is_skipped(const struct cfg *c, const char *fqn)
{
	return cfg_names_find(&c->skipped, fqn) != NULL;
}

/* Names are unique per fully qualified name; the kind is part of it, so
 * only objects of the same kind can collide. */
const struct cfg_meta *cfg_find_meta(const struct cfg *c, const char *fqn)
{
	const struct cfg_named *e = cfg_names_find(&c->objects, fqn);
	return e ? e->meta : NULL;
}

/* Append @obj (its meta @meta) to the array *@arr of *@n, *@cap, and name
 * it. 0, or -1 on ENOMEM. */
static int add_object(struct cfg *c, void *arr, size_t *n, size_t *cap,
		      const void *obj, const struct cfg_meta *meta,
		      enum cfg_what what)
{
	const void **slot = cfg_push(c, arr, n, cap, sizeof *slot);
	if (!slot)
		return -1;
	*slot = obj;
	return cfg_names_add(c, &c->objects, meta->fqn, what, meta, obj);
}

struct object {
	struct cfg_meta meta;
	struct cfg_pos name_pos;
	yaml_node_t *spec;
};

/*
 * An instance of template @t: @params holds the template's fields (the
 * spec itself for kind: metric, spec.params for kind: instance; NULL when
 * absent), @bindings spec.attributeBindings of kind: instance.
 */
static int decode_instance(struct cfg_ctx *x, struct object *o,
			   enum cfg_template t, yaml_node_t *params,
			   const char *params_path, yaml_node_t *bindings)
{
	static const struct cfg_field bindings_field = {
		"attribute_bindings",
		NULL,
		CFG_F_EXPR_MAP,
		offsetof(struct cfg_instance, mesos.attribute_bindings),
		NULL,
		NULL,
		0};
	struct cfg_instance *in = cfg_alloc(x->c, sizeof(*in));
	int rc = 0;

	if (!in)
		return -1;
	in->meta = o->meta;
	in->tmpl = t;
	if (params) {
		size_t old =
			params_path ? cfg_ctx_push(x, "%s", params_path) : 0;

		rc |= cfg_decode_map(x, params, templates[t].fields, in);
		cfg_ctx_pop(x, old);
	} else if (t == CFG_TMPL_METRIC) {
		struct cfg_pos pos = o->meta.pos;

		cfg_error_at(x->c, &pos, x->fqn, "value",
			     "missing, expected a value");
		rc = -1;
	}
	if (bindings) {
		size_t old = cfg_ctx_push(x, "attributeBindings");

		if (t != CFG_TMPL_MESOS) {
			cfg_node_error(x, bindings,
				       "found attribute bindings, expected "
				       "none for template %s",
				       templates[t].name);
			rc = -1;
		} else if (in->mesos.attribute_bindings.n) {
			cfg_node_error(x, bindings,
				       "found bindings in both spec and "
				       "params, expected them in one place");
			rc = -1;
		} else {
			rc |= cfg_decode_field(x, &bindings_field, bindings,
					       in);
		}
		cfg_ctx_pop(x, old);
	}
	if (rc)
		return -1;
	return add_object(x->c, &x->c->instances, &x->c->n_instances,
			  &x->c->cap_instances, in, &in->meta,
			  CFG_WHAT_INSTANCE);
}

static int decode_handler(struct cfg_ctx *x, struct object *o,
			  enum cfg_adapter a, yaml_node_t *params,
			  const char *params_path)
{
	struct cfg_handler *h = cfg_alloc(x->c, sizeof(*h));
	int rc = 0;

	if (!h)
		return -1;
	h->meta = o->meta;
	h->adapter = a;
	handler_defaults(h);
	if (params) {
		size_t old =
			params_path ? cfg_ctx_push(x, "%s", params_path) : 0;

		x->handler_params = true;
		rc = cfg_decode_map(x, params, adapters[a].fields, h);
		x->handler_params = false;
		cfg_ctx_pop(x, old);
	}
	if (rc)
		return -1;
	return add_object(x->c, &x->c->handlers, &x->c->n_handlers,
			  &x->c->cap_handlers, h, &h->meta, CFG_WHAT_HANDLER);
}

static int decode_rule(struct cfg_ctx *x, struct object *o)
{
	struct cfg_rule *r = cfg_alloc(x->c, sizeof(*r));

	if (!r)
		return -1;
	r->meta = o->meta;
	r->match.id = -1;
	if (o->spec && cfg_decode_map(x, o->spec, CFG_FIELDS(rule_fields), r))
		return -1;
	if (!r->match.text) {
		/* absent match: always true; the position is the spec's so
		 * that a message about it still points somewhere useful */
		r->match.text = "";
		r->match.pos = o->meta.pos;
	}
	r->in_default_namespace = !strcmp(r->meta.ns, x->c->default_ns);
	return add_object(x->c, &x->c->rules, &x->c->n_rules,
			  &x->c->cap_rules, r, &r->meta, CFG_WHAT_RULE);
}

static int decode_manifest(struct cfg_ctx *x, struct object *o)
{
	struct manifest_scratch *ms = cfg_alloc(x->c, sizeof(*ms));

	if (!ms)
		return -1;
	ms->m.meta = o->meta;
	if (o->spec &&
	    cfg_decode_map(x, o->spec, CFG_FIELDS(manifest_fields), ms))
		return -1;
	return add_object(x->c, &x->c->manifests, &x->c->n_manifests,
			  &x->c->cap_manifests, &ms->m, &ms->m.meta,
			  CFG_WHAT_MANIFEST);
}

/* A template or adapter mixd does not implement: skip with one warning. */
static void skip_unsupported(struct cfg_ctx *x, struct object *o,
			     const char *what, const char *name,
			     yaml_node_t *at)
{
	char key[128];
	struct cfg_pos pos = at ? cfg_node_pos(x, at) : o->meta.pos;

	snprintf(key, sizeof(key), "%s %s", what, name);
	if (warn_once(x->c, key))
		cfg_warn_at(x->c, &pos, x->fqn, NULL,
			    "%s \"%s\" is not supported by mixd, objects "
			    "using it are skipped",
			    what, name);
	mark_skipped(x->c, o->meta.fqn);
}

static int find_name(const char *name, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(name, names[i]))
			return i;
	return -1;
}

static int template_index(const char *name)
{
	for (int i = 0; i < CFG_TMPL_COUNT; i++)
		if (!strcmp(name, templates[i].name))
			return i;
	return -1;
}

static int adapter_index(const char *name)
{
	for (int i = 0; i < CFG_ADAPTER_COUNT; i++)
		if (!strcmp(name, adapters[i].name))
			return i;
	return -1;
}

/* kind: instance / kind: handler (Istio 1.4) */
static int decode_generic(struct cfg_ctx *x, struct object *o, bool handler)
{
	struct generic_spec g = {0};
	int idx;

	if (cfg_decode_map(x, o->spec,
			   handler ? CFG_FIELDS(handler_spec_fields)
				   : CFG_FIELDS(instance_spec_fields),
			   &g))
		return -1;
	const char *name = cfg_scalar(g.compiled);

	idx = handler ? adapter_index(name) : template_index(name);
	if (idx < 0) {
		skip_unsupported(x, o, handler ? "adapter" : "template", name,
				 g.compiled);
		return 0;
	}
	if (handler)
		return decode_handler(x, o, (enum cfg_adapter)idx, g.params,
				      "params");
	return decode_instance(x, o, (enum cfg_template)idx, g.params, "params",
			       g.bindings);
}

static int decode_spec(struct cfg_ctx *x, struct object *o, const char *kind)
{
	static const char *const generic[] = {"instance", "handler"};
	int idx;

	if (!strcmp(kind, "attributemanifest"))
		return decode_manifest(x, o);
	if (!strcmp(kind, "rule"))
		return decode_rule(x, o);
	if ((idx = template_index(kind)) >= 0)
		return decode_instance(x, o, (enum cfg_template)idx, o->spec,
				       NULL, NULL);
	if ((idx = adapter_index(kind)) >= 0)
		return decode_handler(x, o, (enum cfg_adapter)idx, o->spec,
				      NULL);
	if ((idx = find_name(kind, generic, 2)) >= 0) {
		if (!o->spec) {
			struct cfg_pos pos = o->meta.pos;

			cfg_error_at(x->c, &pos, x->fqn, "spec",
				     "missing, expected a mapping");
			return -1;
		}
		return decode_generic(x, o, idx == 1);
	}
	static const char *const proxy_kinds[] = {
		"QuotaSpec", "QuotaSpecBinding", "HTTPAPISpec",
		"HTTPAPISpecBinding"};
	if (warn_once(x->c, kind)) {
		struct cfg_pos pos = o->meta.pos;

		if (find_name(kind, proxy_kinds, 4) >= 0)
			cfg_warn_at(x->c, &pos, x->fqn, NULL,
				    "kind \"%s\" configures the proxy, not "
				    "Mixer: skipped (a proxy names the quotas "
				    "it asks for in its check requests)",
				    kind);
		else
			cfg_warn_at(x->c, &pos, x->fqn, NULL,
				    "kind \"%s\" is not supported by mixd, "
				    "objects of this kind are skipped",
				    kind);
	}
	mark_skipped(x->c, o->meta.fqn);
	return 0;
}

/* Find key @key in mapping @map (first occurrence), or NULL. */
static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map,
			    const char *key)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
	     p < map->data.mapping.pairs.top; p++) {
		const char *k = cfg_scalar(yaml_document_get_node(doc, p->key));

		if (k && !strcmp(k, key))
			return yaml_document_get_node(doc, p->value);
	}
	return NULL;
}

/* A metadata string: absent is fine, anything else than a scalar is not. */
static int meta_str(struct cfg_ctx *x, yaml_node_t *meta, const char *key,
		    yaml_node_t **out)
{
	yaml_node_t *n = map_get(x->doc, meta, key);

	*out = NULL;
	if (!n)
		return 0;
	if (!cfg_scalar(n) || !*cfg_scalar(n)) {
		size_t old = cfg_ctx_push(x, "metadata.%s", key);

		cfg_node_error(x, n, "found %s, expected a name",
			       cfg_scalar(n) ? "an empty string"
					     : cfg_node_what(n));
		cfg_ctx_pop(x, old);
		return -1;
	}
	*out = n;
	return 0;
}

/*
 * An object's own keys: kind, metadata and spec at most once each (a
 * second one would be ignored: an error); apiVersion and status (kubectl
 * output) taken and ignored; anything else -- a misspelt spec, a spec
 * indented under metadata's sibling -- a warning, since Mixer's loader
 * ignored unknown keys. Returns -1 on an error.
 */
static int check_top_keys(struct cfg_ctx *x, yaml_node_t *root)
{
	static const char *const once[] = {"kind", "metadata", "spec"};
	yaml_node_t *seen[3] = {0};
	int rc = 0;
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
	     p < root->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
		const char *key = cfg_scalar(k);
		struct cfg_pos pos = cfg_node_pos(x, k);
		size_t i = 0;
		while (key && i < 3 && strcmp(key, once[i]))
			i++;
		if (key && i < 3) {
			if (seen[i]) {
				cfg_error_at(x->c, &pos, NULL, once[i],
					     "found a second one (the first is "
					     "at line %u), expected one",
					     cfg_node_pos(x, seen[i]).line);
				rc = -1;
			}
			seen[i] = k;
		} else if (!key || (strcmp(key, "apiVersion") &&
				    strcmp(key, "status"))) {
			cfg_warn_at(x->c, &pos, NULL, NULL,
				    "unknown top-level field \"%s\" ignored; "
				    "expected apiVersion, kind, metadata or spec",
				    key ? key : "(not a string)");
		}
	}
	return rc;
}

void cfg_decode_object(struct cfg_ctx *x, yaml_node_t *root)
{
	struct cfg *c = x->c;
	struct object o = {0};
	yaml_node_t *kind, *meta, *name = NULL, *ns = NULL;
	const struct cfg_meta *dup;

	o.meta.pos = cfg_node_pos(x, root);
	if (root->type != YAML_MAPPING_NODE) {
		cfg_node_error(x, root,
			       "found %s, expected a configuration object "
			       "(kind, metadata, spec)",
			       cfg_node_what(root));
		return;
	}
	/* kubectl get ... -o yaml: one List whose items are the objects */
	kind = map_get(x->doc, root, "kind");
	yaml_node_t *items = map_get(x->doc, root, "items");
	if (kind && cfg_scalar(kind) && !strcmp(cfg_scalar(kind), "List") &&
	    items && items->type == YAML_SEQUENCE_NODE) {
		for (yaml_node_item_t *i = items->data.sequence.items.start;
		     i < items->data.sequence.items.top; i++) {
			yaml_node_t *it = yaml_document_get_node(x->doc, *i);
			yaml_node_t *k = it && it->type == YAML_MAPPING_NODE
						 ? map_get(x->doc, it, "kind")
						 : NULL;
			if (k && cfg_scalar(k) && !strcmp(cfg_scalar(k), "List"))
				cfg_node_error(x, it, "found a List in a List, "
						      "expected an object");
			else if (it)
				cfg_decode_object(x, it);
			x->path[0] = 0;
			x->fqn = NULL;
		}
		return;
	}
	if (check_top_keys(x, root))
		return;
	meta = map_get(x->doc, root, "metadata");
	if (!kind || !cfg_scalar(kind) || !*cfg_scalar(kind)) {
		x->path[0] = 0;
		cfg_ctx_push(x, "kind");
		cfg_node_error(x, kind ? kind : root,
			       "found %s, expected a kind",
			       kind ? cfg_node_what(kind) : "nothing");
		x->path[0] = 0;
		return;
	}
	if (meta && meta->type != YAML_MAPPING_NODE) {
		cfg_ctx_push(x, "metadata");
		cfg_node_error(x, meta, "found %s, expected a mapping",
			       cfg_node_what(meta));
		x->path[0] = 0;
		return;
	}
	if (meta_str(x, meta, "name", &name) ||
	    meta_str(x, meta, "namespace", &ns))
		return;
	if (!name) {
		cfg_ctx_push(x, "metadata.name");
		cfg_node_error(x, meta ? meta : root,
			       "missing, expected the object's name");
		x->path[0] = 0;
		return;
	}
	o.meta.name = cfg_strdup(c, cfg_scalar(name));
	/* an object without a namespace lives in the default one, as a
	 * Kubernetes object would in its client's namespace */
	o.meta.ns = ns ? cfg_strdup(c, cfg_scalar(ns)) : c->default_ns;
	o.meta.kind_name = cfg_strdup(c, cfg_scalar(kind));
	o.meta.fqn = cfg_sprintf(c, "%s.%s.%s", o.meta.name, o.meta.kind_name,
				 o.meta.ns);
	o.name_pos = cfg_node_pos(x, name);
	if (!o.meta.name || !o.meta.ns || !o.meta.kind_name || !o.meta.fqn)
		return;
	x->fqn = o.meta.fqn;
	o.spec = map_get(x->doc, root, "spec");
	if (o.spec && cfg_node_is_null(o.spec))
		o.spec = NULL;
	if ((dup = cfg_find_meta(c, o.meta.fqn))) {
		cfg_error_at(c, &o.name_pos, x->fqn, "metadata.name",
			     "found a second object with this name (the first "
			     "is at %s:%u), expected unique names",
			     dup->pos.file, dup->pos.line);
		return;
	}
	if (decode_spec(x, &o, o.meta.kind_name))
		mark_skipped(c, o.meta.fqn);
}
