/*
 * cfg_resolve.c -- references between objects (resolved as Mixer did),
 * the prometheus handler's cross-checks, and bucket bounds.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config/config_internal.h"

/* Largest numFiniteBuckets: every series of a histogram carries one counter
 * per bucket, so a typo of 1e6 would cost gigabytes at scale. */
#define MAX_FINITE_BUCKETS 1000

/* Prometheus' DefBuckets: what Mixer's adapter used for a DISTRIBUTION
 * without a bucket definition. */
static const double default_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
					0.5,   1,    2.5,   5,	  10};

int cfg_buckets_compute(struct cfg *c, struct cfg_buckets *b,
			const char **field, const char **why)
{
	int64_t n = b->num_finite_buckets;

	switch (b->kind) {
	case CFG_BUCKETS_DEFAULT:
		b->bounds = (double *)default_bounds;
		b->n_bounds =
			sizeof(default_bounds) / sizeof(default_bounds[0]);
		return 0;
	case CFG_BUCKETS_EXPLICIT:
		return 0; /* checked while decoding, element by element */
	case CFG_BUCKETS_LINEAR:
		if (!(b->width > 0)) {
			*field = "width";
			*why = cfg_sprintf(c, "found %g, expected a width > 0",
					   b->width);
			return -1;
		}
		break;
	case CFG_BUCKETS_EXPONENTIAL:
		if (!(b->growth_factor > 1)) {
			*field = "growth_factor";
			*why = cfg_sprintf(c,
					   "found %g, expected a growth "
					   "factor > 1",
					   b->growth_factor);
			return -1;
		}
		if (!(b->scale > 0)) {
			*field = "scale";
			*why = cfg_sprintf(c, "found %g, expected a scale > 0",
					   b->scale);
			return -1;
		}
		break;
	}
	if (n <= 0 || n > MAX_FINITE_BUCKETS) {
		*field = "num_finite_buckets";
		*why = cfg_sprintf(c, "found %lld, expected 1 to %d",
				   (long long)n, MAX_FINITE_BUCKETS);
		return -1;
	}
	b->n_bounds = (size_t)n + 1;
	b->bounds = cfg_alloc(c, b->n_bounds * sizeof(double));
	if (!b->bounds) {
		*why = "out of memory";
		return -1;
	}
	/*
	 * Step by step, as client_golang's LinearBuckets(offset, width, N+1)
	 * and ExponentialBuckets(scale, growth_factor, N+1), which Mixer's
	 * adapter called, compute them (start += width; start *= factor):
	 * offset + width * i rounds differently (0.1 steps give 0.6 here,
	 * 0.6000000000000001 by multiplying), and a bound is an "le" label,
	 * part of a series' identity in Prometheus.
	 */
	double v = b->kind == CFG_BUCKETS_LINEAR ? b->offset : b->scale;
	for (size_t i = 0; i < b->n_bounds; i++) {
		/* large parameters overflow, or stop increasing once the
		 * width is below the precision of the offset */
		if (!isfinite(v) || (i && !(v > b->bounds[i - 1]))) {
			*field = NULL;
			*why = cfg_sprintf(c,
					   "found bound %zu = %g, expected "
					   "finite, strictly increasing "
					   "bounds",
					   i, v);
			return -1;
		}
		b->bounds[i] = v;
		if (b->kind == CFG_BUCKETS_LINEAR)
			v += b->width;
		else
			v *= b->growth_factor;
	}
	return 0;
}

/*
 * Mixer's reference rule: two dots or more is already fully qualified;
 * one dot is name.kind in @ns; no dot is Istio 1.4's short form, the name
 * of a `kind: handler` / `kind: instance` (@generic_kind) in @ns.
 */
static const char *canonical(struct cfg *c, const char *ref, const char *ns,
			     const char *generic_kind)
{
	int dots = 0;

	for (const char *p = ref; *p; p++)
		dots += *p == '.';
	if (dots >= 2)
		return ref;
	if (dots == 1)
		return cfg_sprintf(c, "%s.%s", ref, ns);
	return cfg_sprintf(c, "%s.%s.%s", ref, generic_kind, ns);
}

/*
 * A rule's reference @ref as Mixer's getCanonicalRef() reads it
 * (runtime/config/util.go): canonical(), and for a one-dot reference that
 * names nothing so, its other reading, name.namespace of a `kind: handler`
 * / `kind: instance` (@generic_kind), if that names something.
 */
static const char *action_ref(struct cfg *c, const char *ref, const char *ns,
			      const char *generic_kind)
{
	const char *fqn = canonical(c, ref, ns, generic_kind);
	const char *dot = strchr(ref, '.');
	if (!fqn || !dot || strchr(dot + 1, '.') || cfg_find_meta(c, fqn) ||
	    cfg_is_skipped(c, fqn))
		return fqn;
	const char *alt = cfg_sprintf(c, "%.*s.%s.%s", (int)(dot - ref), ref,
				      generic_kind, dot + 1);
	return alt && (cfg_find_meta(c, alt) || cfg_is_skipped(c, alt)) ? alt
									 : fqn;
}

/* Which templates each adapter takes (Mixer's adapter info). */
static bool adapter_takes(enum cfg_adapter a, enum cfg_template t)
{
	switch (a) {
	case CFG_ADAPTER_PROMETHEUS:
		return t == CFG_TMPL_METRIC;
	case CFG_ADAPTER_MESOSENV:
		return t == CFG_TMPL_MESOS;
	case CFG_ADAPTER_STDIO:
		return t == CFG_TMPL_LOGENTRY || t == CFG_TMPL_METRIC;
	case CFG_ADAPTER_LISTCHECKER:
		return t == CFG_TMPL_LISTENTRY;
	case CFG_ADAPTER_DENIER:
		return t == CFG_TMPL_CHECKNOTHING || t == CFG_TMPL_LISTENTRY ||
		       t == CFG_TMPL_QUOTA;
	case CFG_ADAPTER_MEMQUOTA:
		return t == CFG_TMPL_QUOTA;
	default:
		return false;
	}
}

/* An empty reference (`handler:` with no value) names nothing: say so
 * rather than resolve it. */
static bool ref_given(struct cfg *c, const struct cfg_str *ref,
		      const struct cfg_pos *around, const char *obj,
		      const char *field, const char *what)
{
	if (ref->s && *ref->s)
		return true;
	/* A null value has no position of its own: use its element's. */
	cfg_error_at(c, ref->pos.file ? &ref->pos : around, obj, field,
		     "found nothing, expected the name of %s", what);
	return false;
}

static void resolve_action(struct cfg *c, struct cfg_rule *r, size_t ai)
{
	struct cfg_action *a = &r->actions[ai];
	char field[96];

	snprintf(field, sizeof(field), "actions[%zu].handler", ai);
	if (!ref_given(c, &a->handler_ref, &a->pos, r->meta.fqn, field,
		       "a handler"))
		return;
	const char *fqn = action_ref(c, a->handler_ref.s, r->meta.ns, "handler");
	if (!fqn)
		return;
	a->handler = cfg_find_handler(c, fqn);
	if (!a->handler && !cfg_is_skipped(c, fqn)) {
		snprintf(field, sizeof(field), "actions[%zu].handler", ai);
		cfg_error_at(c, &a->handler_ref.pos, r->meta.fqn, field,
			     "found \"%s\" (%s), expected the name of a "
			     "handler",
			     a->handler_ref.s, fqn);
	}
	a->instances =
		cfg_alloc(c, (a->instance_refs.n + 1) * sizeof(*a->instances));
	if (!a->instances)
		return;
	for (size_t i = 0; i < a->instance_refs.n; i++) {
		struct cfg_str *ref = &a->instance_refs.v[i];
		const struct cfg_instance *in;

		snprintf(field, sizeof(field), "actions[%zu].instances[%zu]",
			 ai, i);
		if (!ref_given(c, ref, &a->pos, r->meta.fqn, field,
			       "an instance"))
			continue;
		fqn = action_ref(c, ref->s, r->meta.ns, "instance");
		if (!fqn)
			return;
		in = cfg_find_instance(c, fqn);
		if (!in) {
			if (!cfg_is_skipped(c, fqn))
				cfg_error_at(c, &ref->pos, r->meta.fqn, field,
					     "found \"%s\" (%s), expected the "
					     "name of an instance",
					     ref->s, fqn);
			continue;
		}
		if (a->handler &&
		    !adapter_takes(a->handler->adapter, in->tmpl)) {
			char want[64] = "";

			for (int t = 0; t < CFG_TMPL_COUNT; t++)
				if (adapter_takes(a->handler->adapter, t))
					snprintf(want + strlen(want),
						 sizeof(want) - strlen(want),
						 "%s%s", want[0] ? " or " : "",
						 cfg_template_name(t));
			cfg_error_at(c, &ref->pos, r->meta.fqn, field,
				     "found %s instance %s, expected a %s "
				     "instance (handler %s is %s)",
				     cfg_template_name(in->tmpl), fqn, want,
				     a->handler->meta.fqn,
				     cfg_adapter_name(a->handler->adapter));
			continue;
		}
		if (a->handler && a->handler->adapter == CFG_ADAPTER_STDIO &&
		    in->tmpl == CFG_TMPL_METRIC) {
			/* Mixer's stdio handler logged metrics too; mixd's
			 * writes logentry instances only. Say so, once per
			 * dispatch, rather than drop them unannounced. */
			cfg_warn_at(c, &ref->pos, r->meta.fqn, field,
				    "metric instance %s sent to stdio handler "
				    "%s is not written: mixd's stdio handler "
				    "writes logentry instances",
				    fqn, a->handler->meta.fqn);
			continue;
		}
		a->instances[a->n_instances++] = in;
	}
}

/* Mixer's safeName(), in place: a leading '/' dropped, '/', '.' and ' '
 * made '_', '-' dropped. */
static void sanitize(char *s)
{
	char *w = s;
	for (const char *p = s + (*s == '/'); *p; p++) {
		if (*p == '-')
			continue;
		*w++ = (*p == '/' || *p == '.' || *p == ' ') ? '_' : *p;
	}
	*w = 0;
}

/* The family name: namespace and name each made safe, then joined, as
 * Prometheus' client joins them. */
static char *safe_name(struct cfg *c, const char *ns, const char *name)
{
	char *sn = cfg_sprintf(c, "%s", ns), *sm = cfg_sprintf(c, "%s", name);
	if (!sn || !sm)
		return NULL;
	sanitize(sn);
	sanitize(sm);
	return cfg_sprintf(c, "%s_%s", sn, sm);
}

/* Is @s a name Prometheus takes: [a-zA-Z_:][a-zA-Z0-9_:]* for a metric,
 * without ':' for a label (@colon false)? */
static bool prom_name_ok(const char *s, bool colon)
{
	if (!*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' ||
		      (colon && *s == ':')))
			return false;
	return true;
}

/* Names that would break every scrape of the family are refused, as
 * Mixer's Prometheus client refused to register them. */
static void check_prom_names(struct cfg *c, struct cfg_handler *h, size_t mi)
{
	const struct cfg_prom_metric *m = &h->prometheus.metrics[mi];
	char field[96];

	if (!prom_name_ok(m->family, true)) {
		snprintf(field, sizeof(field), "metrics[%zu].name", mi);
		cfg_error_at(c, &m->name.pos, h->meta.fqn, field,
			     "found family name \"%s\", expected one of "
			     "[a-zA-Z_:][a-zA-Z0-9_:]*",
			     m->family);
	}
	for (size_t l = 0; l < m->label_names.n; l++) {
		const struct cfg_str *ln = &m->label_names.v[l];
		const char *why =
			!prom_name_ok(ln->s, false)
				? "expected a name of [a-zA-Z_][a-zA-Z0-9_]*"
			: !strncmp(ln->s, "__", 2)
				? "expected a name that does not start with "
				  "__ (reserved)"
			: m->kind == CFG_PROM_DISTRIBUTION && !strcmp(ln->s, "le")
				? "expected a name other than le, which a "
				  "histogram's buckets take"
				: NULL;
		if (!why)
			continue;
		snprintf(field, sizeof(field), "metrics[%zu].label_names[%zu]",
			 mi, l);
		cfg_error_at(c, &ln->pos, h->meta.fqn, field, "found \"%s\", %s",
			     ln->s, why);
	}
}

static const struct cfg_prom_metric *
find_family(struct cfg *c, const char *family,
	    const struct cfg_prom_metric *upto)
{
	for (size_t h = 0; h < c->n_handlers; h++) {
		struct cfg_handler *hd = c->handlers[h];

		if (hd->adapter != CFG_ADAPTER_PROMETHEUS)
			continue;
		for (size_t i = 0; i < hd->prometheus.n_metrics; i++) {
			const struct cfg_prom_metric *m =
				&hd->prometheus.metrics[i];

			if (m == upto)
				return NULL;
			if (m->family && !strcmp(m->family, family))
				return m;
		}
	}
	return NULL;
}

static void resolve_prom_metric(struct cfg *c, struct cfg_handler *h, size_t mi)
{
	struct cfg_prom_metric *m = &h->prometheus.metrics[mi];
	const struct cfg_prom_metric *other;
	const struct cfg_metric_inst *mt;
	const char *fqn;
	char field[96];

	if (!m->name.s || !*m->name.s) {
		/* As Mixer: the instance_name, made safe, names the family
		 * ("requestcount.metric.istio-system" ->
		 * istio_requestcount_metric_istiosystem). */
		if (!m->instance_name.s || !*m->instance_name.s) {
			snprintf(field, sizeof(field), "metrics[%zu]", mi);
			cfg_error_at(c, &m->pos, h->meta.fqn, field,
				     "found neither name nor instance_name, "
				     "expected the metric's instance_name");
			return;
		}
		m->name = m->instance_name;
	}
	m->family = safe_name(c, m->ns.s && *m->ns.s ? m->ns.s : "istio",
			      m->name.s);
	if (!m->family)
		return;
	check_prom_names(c, h, mi);
	if ((other = find_family(c, m->family, m))) {
		snprintf(field, sizeof(field), "metrics[%zu].name", mi);
		cfg_error_at(c, &m->name.pos, h->meta.fqn, field,
			     "found a second metric family %s (the first is "
			     "at %s:%u), expected unique names",
			     m->family, other->pos.file, other->pos.line);
	}
	snprintf(field, sizeof(field), "metrics[%zu].instance_name", mi);
	if (!ref_given(c, &m->instance_name, &m->pos, h->meta.fqn, field,
		       "a metric instance"))
		return;
	fqn = canonical(c, m->instance_name.s, h->meta.ns, "instance");
	if (!fqn)
		return;
	m->instance = cfg_find_instance(c, fqn);
	if (!m->instance) {
		/* A skipped object is not one: a family needs its instance. */
		cfg_error_at(c, &m->instance_name.pos, h->meta.fqn, field,
			     cfg_is_skipped(c, fqn)
				     ? "found \"%s\", an object mixd skips, "
				       "expected a metric instance"
				     : "found \"%s\", expected the name of a "
				       "metric instance",
			     m->instance_name.s);
		return;
	}
	if (m->instance->tmpl != CFG_TMPL_METRIC) {
		cfg_error_at(c, &m->instance_name.pos, h->meta.fqn, field,
			     "found %s instance %s, expected a metric "
			     "instance",
			     cfg_template_name(m->instance->tmpl), fqn);
		m->instance = NULL;
		return;
	}
	mt = &m->instance->metric;
	m->label_dims =
		cfg_alloc(c, (m->label_names.n + 1) * sizeof(*m->label_dims));
	if (!m->label_dims)
		return;
	for (size_t l = 0; l < m->label_names.n; l++) {
		const struct cfg_str *ln = &m->label_names.v[l];
		size_t d = 0;

		while (d < mt->dimensions.n &&
		       strcmp(mt->dimensions.v[d].name, ln->s))
			d++;
		m->label_dims[l] = d;
		if (d == mt->dimensions.n) {
			snprintf(field, sizeof(field),
				 "metrics[%zu].label_names[%zu]", mi, l);
			cfg_error_at(c, &ln->pos, h->meta.fqn, field,
				     "found \"%s\", expected a dimension of "
				     "%s",
				     ln->s, fqn);
		}
		for (size_t k = 0; k < l; k++) {
			if (strcmp(m->label_names.v[k].s, ln->s))
				continue;
			snprintf(field, sizeof(field),
				 "metrics[%zu].label_names[%zu]", mi, l);
			cfg_error_at(c, &ln->pos, h->meta.fqn, field,
				     "found \"%s\" twice, expected each "
				     "label once",
				     ln->s);
			break;
		}
	}
}

static void resolve_prometheus(struct cfg *c, struct cfg_handler *h)
{
	struct cfg_prometheus *p = &h->prometheus;

	for (size_t i = 0; i < p->n_metrics; i++) {
		struct cfg_prom_metric *m = &p->metrics[i];
		const char *field, *why;

		if (m->kind == CFG_PROM_DISTRIBUTION &&
		    m->buckets.kind == CFG_BUCKETS_DEFAULT)
			cfg_buckets_compute(c, &m->buckets, &field, &why);
		resolve_prom_metric(c, h, i);
	}
	/* Mixer's default: check for expired series twice per expiry */
	if (p->metrics_expiry_ns && !p->expiry_check_interval_ns)
		p->expiry_check_interval_ns = p->metrics_expiry_ns / 2;
}

void cfg_resolve(struct cfg *c)
{
	for (size_t h = 0; h < c->n_handlers; h++)
		if (c->handlers[h]->adapter == CFG_ADAPTER_PROMETHEUS)
			resolve_prometheus(c, c->handlers[h]);
	for (size_t r = 0; r < c->n_rules; r++)
		for (size_t a = 0; a < c->rules[r]->n_actions; a++)
			resolve_action(c, c->rules[r], a);
	cfg_resolve_policy(c);
}
