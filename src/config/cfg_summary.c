/*
 * cfg_summary.c -- what `mixd --check-config PATH` prints.
 *
 * The summary is meant for a person checking a config before deploying it,
 * and for tests, which compare it byte for byte: keep it deterministic
 * (load order, sorted kinds) and never print a secret.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"
#include "expr/expr.h"

#define REDACTED "<redacted>"

struct kind_count {
	const char *kind;
	size_t n;
};

static void count_kind(struct kind_count *kc, size_t *n, const char *kind)
{
	for (size_t i = 0; i < *n; i++)
		if (!strcmp(kc[i].kind, kind)) {
			kc[i].n++;
			return;
		}
	kc[*n].kind = kind;
	kc[*n].n = 1;
	(*n)++;
}

static int cmp_kind(const void *a, const void *b)
{
	return strcmp(((const struct kind_count *)a)->kind,
		      ((const struct kind_count *)b)->kind);
}

static void print_kinds(const struct cfg *c, FILE *out)
{
	size_t total =
		c->n_manifests + c->n_rules + c->n_instances + c->n_handlers;
	struct kind_count *kc = calloc(total + 1, sizeof(*kc));
	size_t n = 0;

	if (!kc)
		return;
	for (size_t i = 0; i < c->n_manifests; i++)
		count_kind(kc, &n, c->manifests[i]->meta.kind_name);
	for (size_t i = 0; i < c->n_rules; i++)
		count_kind(kc, &n, c->rules[i]->meta.kind_name);
	for (size_t i = 0; i < c->n_instances; i++)
		count_kind(kc, &n, c->instances[i]->meta.kind_name);
	for (size_t i = 0; i < c->n_handlers; i++)
		count_kind(kc, &n, c->handlers[i]->meta.kind_name);
	qsort(kc, n, sizeof(*kc), cmp_kind);
	fprintf(out, "objects by kind:\n");
	for (size_t i = 0; i < n; i++)
		fprintf(out, "  %-20s %zu\n", kc[i].kind, kc[i].n);
	free(kc);
}

static void print_rules(const struct cfg *c, FILE *out)
{
	fprintf(out, "rules: %zu\n", c->n_rules);
	for (size_t i = 0; i < c->n_rules; i++) {
		const struct cfg_rule *r = c->rules[i];

		fprintf(out, "  %s%s\n    match: %s\n", r->meta.fqn,
			r->in_default_namespace ? " (all namespaces)" : "",
			r->match.text);
		for (size_t a = 0; a < r->n_actions; a++) {
			const struct cfg_action *ac = &r->actions[a];

			fprintf(out, "    -> %s:",
				ac->handler	     ? ac->handler->meta.fqn
				: ac->handler_ref.s ? ac->handler_ref.s
						     : "(none)");
			for (size_t j = 0; j < ac->n_instances; j++)
				fprintf(out, " %s", ac->instances[j]->meta.fqn);
			fputc('\n', out);
		}
	}
}

static void print_instance(const struct cfg_instance *in, FILE *out)
{
	fprintf(out, "  %s: %s", in->meta.fqn, cfg_template_name(in->tmpl));
	switch (in->tmpl) {
	case CFG_TMPL_METRIC:
		fprintf(out, ", value %s, %zu dimensions\n",
			attr_type_name(in->metric.value.type),
			in->metric.dimensions.n);
		break;
	case CFG_TMPL_MESOS:
		fprintf(out, ", %zu attribute bindings\n",
			in->mesos.attribute_bindings.n);
		break;
	case CFG_TMPL_LOGENTRY:
		fprintf(out, ", %zu variables\n", in->logentry.variables.n);
		break;
	case CFG_TMPL_LISTENTRY:
		fprintf(out, ", value %s\n",
			attr_type_name(in->listentry.value.type));
		break;
	case CFG_TMPL_QUOTA:
		fprintf(out, ", %zu dimensions\n", in->quota.dimensions.n);
		break;
	default:
		fputc('\n', out);
	}
}

/* A parameter: its value unless it is secret or a password. */
static void print_param(FILE *out, const char *label, const struct cfg_str *s,
			bool password)
{
	if (!s->s)
		return;
	fprintf(out, ", %s %s", label, password || s->secret ? REDACTED : s->s);
}

/* Marathon addresses ("a,b,...", split as the resolver splits them:
 * cfg_address_end()), each with its user:password@ replaced. */
static void print_addresses(FILE *out, const struct cfg_str *s)
{
	if (!s->s)
		return;
	if (s->secret) {
		fprintf(out, ", marathon " REDACTED);
		return;
	}
	fputs(", marathon ", out);
	for (const char *p = s->s;;) {
		const char *end = cfg_address_end(p);
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *sep = memmem(p, n, "://", 3);
		const char *auth = sep ? sep + 3 : p, *at = NULL;
		for (const char *q = auth; q < p + n && *q != '/'; q++)
			if (*q == '@')
				at = q;
		if (at)
			fprintf(out, "%.*s" REDACTED "%.*s", (int)(auth - p), p,
				(int)(p + n - at), at);
		else
			fprintf(out, "%.*s", (int)n, p);
		if (!end)
			break;
		fputc(',', out);
		p = end + 1;
	}
}

static void print_handler(const struct cfg_handler *h, FILE *out)
{
	char dur[64];

	fprintf(out, "  %s: %s", h->meta.fqn, cfg_adapter_name(h->adapter));
	switch (h->adapter) {
	case CFG_ADAPTER_PROMETHEUS:
		fprintf(out, ", %zu metrics", h->prometheus.n_metrics);
		if (h->prometheus.metrics_expiry_ns) {
			attr_format_duration(h->prometheus.metrics_expiry_ns,
					     dur, sizeof(dur));
			fprintf(out, ", series expire after %s", dur);
		}
		break;
	case CFG_ADAPTER_MESOSENV:
		print_addresses(out, &h->mesosenv.marathon_address);
		print_param(out, "user", &h->mesosenv.http_basic_auth_user,
			    false);
		print_param(out, "password",
			    &h->mesosenv.http_basic_auth_password, true);
		print_param(out, "token", &h->mesosenv.auth_token, true);
		print_param(out, "token file", &h->mesosenv.auth_token_file,
			    false);
		attr_format_duration(h->mesosenv.cache_refresh_ns, dur,
				     sizeof(dur));
		fprintf(out, ", refresh %s", dur);
		break;
	case CFG_ADAPTER_STDIO:
		fprintf(out, ", %s", h->stdio.output_as_json ? "json" : "text");
		print_param(out, "path", &h->stdio.output_path, false);
		break;
	case CFG_ADAPTER_LISTCHECKER: {
		static const char *const types[] = {
			"strings", "case-insensitive strings", "IP addresses",
			"regexps"};
		const struct cfg_listchecker *l = &h->listchecker;

		fprintf(out, ", %s of %s, %zu overrides",
			l->blacklist ? "blacklist" : "whitelist",
			types[l->entry_type], l->overrides.n);
		print_param(out, "provider", &l->provider_url, false);
		break;
	}
	case CFG_ADAPTER_DENIER:
		fprintf(out, ", status %lld", (long long)h->denier.status_code);
		if (h->denier.status_message.s)
			fprintf(out, " \"%s\"", h->denier.status_message.s);
		break;
	case CFG_ADAPTER_MEMQUOTA:
		fprintf(out, ", %zu quotas", h->memquota.n_quotas);
		break;
	default:
		break;
	}
	fputc('\n', out);
}

static const char *prom_kind_name(enum cfg_prom_kind k)
{
	switch (k) {
	case CFG_PROM_GAUGE:
		return "gauge";
	case CFG_PROM_COUNTER:
		return "counter";
	case CFG_PROM_DISTRIBUTION:
		return "histogram";
	default:
		return "?";
	}
}

static void print_families(const struct cfg *c, FILE *out)
{
	size_t n = 0;

	for (size_t h = 0; h < c->n_handlers; h++)
		if (c->handlers[h]->adapter == CFG_ADAPTER_PROMETHEUS)
			n += c->handlers[h]->prometheus.n_metrics;
	fprintf(out, "metric families: %zu\n", n);
	for (size_t h = 0; h < c->n_handlers; h++) {
		const struct cfg_handler *hd = c->handlers[h];

		if (hd->adapter != CFG_ADAPTER_PROMETHEUS)
			continue;
		for (size_t i = 0; i < hd->prometheus.n_metrics; i++) {
			const struct cfg_prom_metric *m =
				&hd->prometheus.metrics[i];

			fprintf(out, "  %s: %s, %zu labels",
				m->family ? m->family : m->name.s,
				prom_kind_name(m->kind), m->label_names.n);
			if (m->kind == CFG_PROM_DISTRIBUTION) {
				fprintf(out, ", buckets");
				for (size_t b = 0; b < m->buckets.n_bounds; b++)
					fprintf(out, "%s%g", b ? " " : " [",
						m->buckets.bounds[b]);
				fprintf(out, "%s",
					m->buckets.n_bounds ? "]" : "");
			}
			fprintf(out, ", from %s\n",
				m->instance	       ? m->instance->meta.fqn
				: m->instance_name.s ? m->instance_name.s
						       : "(none)");
		}
	}
}

void cfg_print_summary(const struct cfg *c, FILE *out)
{
	fprintf(out,
		"config: %zu file%s, %zu document%s, default namespace "
		"%s\n",
		c->n_files, c->n_files == 1 ? "" : "s", c->n_documents,
		c->n_documents == 1 ? "" : "s", c->default_ns);
	print_kinds(c, out);
	print_rules(c, out);
	fprintf(out, "instances: %zu\n", c->n_instances);
	for (size_t i = 0; i < c->n_instances; i++)
		print_instance(c->instances[i], out);
	fprintf(out, "handlers: %zu\n", c->n_handlers);
	for (size_t i = 0; i < c->n_handlers; i++)
		print_handler(c->handlers[i], out);
	print_families(c, out);
	fprintf(out,
		"vocabulary: %u attributes (%u built in, %u from manifests, "
		"%u adapter outputs)\n",
		c->vocab ? attr_vocab_count(c->vocab) : 0, c->vocab_builtin,
		c->vocab_manifests, c->vocab_outputs);
	fprintf(out, "expressions: %u distinct\n",
		c->program ? expr_count(c->program) : 0);
	cfg_print_diagnostics(c, out);
	fprintf(out, "%zu error%s, %zu warning%s: %s\n", cfg_error_count(c),
		cfg_error_count(c) == 1 ? "" : "s", c->n_warnings,
		c->n_warnings == 1 ? "" : "s",
		cfg_ok(c) ? "config OK" : "config INVALID");
}

int cfg_check(const char *path, const char *default_ns, FILE *out,
	      void (*check)(struct cfg *c, void *arg), void *arg)
{
	struct cfg *c = cfg_load(path, default_ns);
	int rc;

	if (!c) {
		fprintf(out, "%s: out of memory\n", path);
		return 1;
	}
	if (check)
		check(c, arg);
	cfg_print_summary(c, out);
	rc = cfg_ok(c) ? 0 : 1;
	cfg_destroy(c);
	return rc;
}
