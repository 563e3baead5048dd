/*
 * cfg_compile.c -- the vocabulary (built-in + manifests + mesos outputs)
 * and the type-checked compilation of every expression into the config's
 * one shared program.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config/config_internal.h"
#include "expr/expr.h"

/* The mesos template's outputs (kubernetesenv's OutputTemplate), which
 * attribute_bindings read as $out.<name>. */
static const struct {
	const char *name;
	enum attr_type type;
} mesos_outputs[] = {
	{"source_pod_uid", ATTR_STRING},
	{"source_pod_ip", ATTR_IP},
	{"source_pod_name", ATTR_STRING},
	{"source_labels", ATTR_STRING_MAP},
	{"source_namespace", ATTR_STRING},
	{"source_service_account_name", ATTR_STRING},
	{"source_host_ip", ATTR_IP},
	{"source_workload_uid", ATTR_STRING},
	{"source_workload_name", ATTR_STRING},
	{"source_workload_namespace", ATTR_STRING},
	{"source_owner", ATTR_STRING},
	{"destination_pod_uid", ATTR_STRING},
	{"destination_pod_ip", ATTR_IP},
	{"destination_pod_name", ATTR_STRING},
	{"destination_container_name", ATTR_STRING},
	{"destination_labels", ATTR_STRING_MAP},
	{"destination_namespace", ATTR_STRING},
	{"destination_service_account_name", ATTR_STRING},
	{"destination_host_ip", ATTR_IP},
	{"destination_workload_uid", ATTR_STRING},
	{"destination_workload_name", ATTR_STRING},
	{"destination_workload_namespace", ATTR_STRING},
	{"destination_owner", ATTR_STRING},
};

/* Where @name was declared before @upto, for a conflict message. */
static const struct cfg_manifest_attr *
earlier_decl(const struct cfg *c, const char *name,
	     const struct cfg_manifest_attr *upto)
{
	for (size_t i = 0; i < c->n_manifests; i++) {
		const struct cfg_manifest *m = c->manifests[i];

		for (size_t j = 0; j < m->n_attrs; j++) {
			if (&m->attrs[j] == upto)
				return NULL;
			if (!strcmp(m->attrs[j].name, name))
				return &m->attrs[j];
		}
	}
	return NULL;
}

static void add_manifest_attr(struct cfg *c, const struct cfg_manifest *m,
			      const struct cfg_manifest_attr *a)
{
	enum attr_type old = ATTR_NONE;
	int rc = attr_vocab_add(c->vocab, a->name, a->type, &old);
	char field[160];

	snprintf(field, sizeof(field), "attributes.%s.valueType", a->name);
	if (rc == -EEXIST) {
		const struct cfg_manifest_attr *e = earlier_decl(c, a->name, a);
		char where[128] = "the built-in proxy vocabulary";

		if (e)
			snprintf(where, sizeof(where), "%s:%u", e->pos.file,
				 e->pos.line);
		cfg_error_at(c, &a->pos, m->meta.fqn, field,
			     "found %s, expected %s as declared by %s",
			     attr_type_name(a->type), attr_type_name(old),
			     where);
	} else if (rc == -ENOSPC) {
		cfg_error_at(c, &a->pos, m->meta.fqn, field,
			     "found attribute number %u, expected at most %d "
			     "attributes",
			     attr_vocab_count(c->vocab) + 1, ATTR_MAX_SLOTS);
	} else if (rc < 0) {
		c->oom = true;
	}
}

void cfg_build_vocab(struct cfg *c)
{
	bool mesos = false;

	c->vocab_builtin = attr_vocab_count(c->vocab);
	for (size_t i = 0; i < c->n_manifests; i++)
		for (size_t j = 0; j < c->manifests[i]->n_attrs; j++)
			add_manifest_attr(c, c->manifests[i],
					  &c->manifests[i]->attrs[j]);
	c->vocab_manifests = attr_vocab_count(c->vocab) - c->vocab_builtin;
	for (size_t i = 0; i < c->n_instances; i++)
		mesos |= c->instances[i]->tmpl == CFG_TMPL_MESOS;
	if (!mesos)
		return;
	for (size_t i = 0; i < sizeof(mesos_outputs) / sizeof(mesos_outputs[0]);
	     i++) {
		char name[64];
		int rc;

		snprintf(name, sizeof(name), "$out.%s", mesos_outputs[i].name);
		rc = attr_vocab_add(c->vocab, name, mesos_outputs[i].type,
				    NULL);
		if (rc == -ENOMEM)
			c->oom = true;
		else if (rc < 0) {
			struct cfg_pos pos = {NULL, 0, 0};

			cfg_error_at(c, &pos, NULL, NULL,
				     "cannot declare %s: %s", name,
				     rc == -ENOSPC ? "too many attributes"
						   : "conflicting type");
		}
	}
	c->vocab_outputs = attr_vocab_count(c->vocab) - c->vocab_builtin -
			   c->vocab_manifests;
}

/* --------------------------------------------------------- expressions */

/* What an expression field must produce. */
enum want {
	WANT_ANY,
	WANT_BOOL,
	WANT_STRING,
	WANT_IP,
	WANT_INT64,
	WANT_TIMESTAMP,
	WANT_NUMBER, /* a metric value: INT64, DOUBLE, DURATION or STRING */
};

static const char *const want_text[] = {
	[WANT_ANY] = "any type",
	[WANT_BOOL] = "BOOL",
	[WANT_STRING] = "STRING",
	[WANT_IP] = "IP_ADDRESS",
	[WANT_INT64] = "INT64",
	[WANT_TIMESTAMP] = "TIMESTAMP",
	[WANT_NUMBER] = "INT64, DOUBLE, DURATION or STRING",
};

static bool type_fits(enum want w, enum attr_type t)
{
	switch (w) {
	case WANT_ANY:
		return true;
	case WANT_BOOL:
		return t == ATTR_BOOL;
	case WANT_STRING:
		return attr_type_is_string(t);
	case WANT_IP:
		return t == ATTR_IP;
	case WANT_INT64:
		return t == ATTR_INT64;
	case WANT_TIMESTAMP:
		return t == ATTR_TIMESTAMP;
	case WANT_NUMBER:
		return t == ATTR_INT64 || t == ATTR_DOUBLE ||
		       t == ATTR_DURATION || attr_type_is_string(t);
	}
	return false;
}

/*
 * Byte @offset of @e's text as a file position. A one-line plain scalar's
 * text is the file's text; a quoted one is too, shifted by the quote
 * (escapes in double quotes make the column approximate). A scalar that
 * spans lines was folded by YAML, so its offsets no longer match the file:
 * point at its start.
 */
static struct cfg_pos expr_pos(const struct cfg_expr *e, uint32_t offset)
{
	struct cfg_pos p = e->pos;
	size_t len = strlen(e->text);

	if (e->multiline || !p.line)
		return p;
	if (offset > len)
		offset = (uint32_t)len;
	/* libyaml counts columns in characters: skip UTF-8 continuations */
	for (uint32_t i = 0; i < offset; i++)
		if (((unsigned char)e->text[i] & 0xc0) != 0x80)
			p.col++;
	return p;
}

struct compiling {
	struct cfg *c;
	const char *fqn;
	bool bindings; /* compiling attribute_bindings: $out.* allowed */
};

/* Offset of a `$` outside string literals, or -1. `$` only starts the
 * adapter outputs ($out.x), which exist only while attribute_bindings are
 * evaluated: anywhere else they would compile (they are in the shared
 * vocabulary) and then never be present. */
static long out_ref(const char *text)
{
	char quote = 0;

	for (const char *p = text; *p; p++) {
		if (quote) {
			if (*p == '\\' && quote == '"' && p[1])
				p++;
			else if (*p == quote)
				quote = 0;
		} else if (*p == '"' || *p == '`' || *p == '\'') {
			quote = *p;
		} else if (*p == '$') {
			return p - text;
		}
	}
	return -1;
}

static void compile_expr(struct compiling *k, const char *field,
			 struct cfg_expr *e, enum want w)
{
	struct cfg *c = k->c;
	struct expr_error err = {0};
	const char *text = e->text;
	int id;

	e->id = -1;
	if (!text)
		return;
	long out = k->bindings ? -1 : out_ref(text);
	if (out >= 0) {
		struct cfg_pos pos = expr_pos(e, (uint32_t)out);
		int n = (int)strspn(text + out, "$._abcdefghijklmnopqrstuvwxyz"
						"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
						"0123456789");

		cfg_error_at(c, &pos, k->fqn, field,
			     "found adapter output %.*s in \"%s\", expected "
			     "$out.* only in attribute_bindings",
			     n, text + out, text);
		return;
	}
	id = expr_compile(c->program, text, strlen(text), &err);
	if (id < 0) {
		struct cfg_pos pos = expr_pos(e, err.offset);

		if (!err.msg[0])
			snprintf(err.msg, sizeof(err.msg), "out of memory");
		cfg_error_at(c, &pos, k->fqn, field, "%s", err.msg);
		return;
	}
	e->id = id;
	e->type = expr_type(c->program, (uint32_t)id);
	if (!type_fits(w, e->type)) {
		struct cfg_pos pos = expr_pos(e, 0);

		cfg_error_at(c, &pos, k->fqn, field,
			     "found %s expression \"%s\", expected %s",
			     attr_type_name(e->type), text, want_text[w]);
	}
}

static void compile_map(struct compiling *k, const char *prefix,
			struct cfg_expr_map *m, enum want w)
{
	char field[192];

	for (size_t i = 0; i < m->n; i++) {
		snprintf(field, sizeof(field), "%s.%s", prefix, m->v[i].name);
		compile_expr(k, field, &m->v[i].expr, w);
	}
}

/* attribute_bindings: the target must be an attribute of the vocabulary
 * (not another $out) with the binding's type. */
static void compile_bindings(struct compiling *k, struct cfg_expr_map *m)
{
	struct cfg *c = k->c;
	char field[192];

	for (size_t i = 0; i < m->n; i++) {
		struct cfg_named_expr *b = &m->v[i];
		int slot;
		enum attr_type t;

		snprintf(field, sizeof(field), "attribute_bindings.%s",
			 b->name);
		k->bindings = true;
		compile_expr(k, field, &b->expr, WANT_ANY);
		k->bindings = false;
		slot = attr_vocab_find(c->vocab, b->name, strlen(b->name));
		if (slot < 0 || b->name[0] == '$') {
			cfg_error_at(c, &b->pos, k->fqn, field,
				     "found \"%s\", expected the name of an "
				     "attribute of the vocabulary",
				     b->name);
			continue;
		}
		b->slot = slot;
		t = attr_vocab_type(c->vocab, (unsigned)slot);
		if (b->expr.id < 0 || t == b->expr.type ||
		    (attr_type_is_string(t) &&
		     attr_type_is_string(b->expr.type)))
			continue;
		struct cfg_pos pos = expr_pos(&b->expr, 0);

		cfg_error_at(c, &pos, k->fqn, field,
			     "found %s expression \"%s\", expected %s (the "
			     "type of attribute %s)",
			     attr_type_name(b->expr.type), b->expr.text,
			     attr_type_name(t), b->name);
	}
}

static void compile_instance(struct cfg *c, struct cfg_instance *in)
{
	struct compiling k = {c, in->meta.fqn, false};

	switch (in->tmpl) {
	case CFG_TMPL_METRIC:
		/* Required; given as null it decoded to nothing. */
		if (!in->metric.value.text)
			cfg_error_at(c, &in->meta.pos, in->meta.fqn, "value",
				     "found nothing, expected an expression "
				     "of a number or duration");
		compile_expr(&k, "value", &in->metric.value, WANT_NUMBER);
		compile_map(&k, "dimensions", &in->metric.dimensions, WANT_ANY);
		compile_expr(&k, "monitored_resource_type",
			     &in->metric.monitored_resource_type, WANT_STRING);
		compile_map(&k, "monitored_resource_dimensions",
			    &in->metric.monitored_resource_dimensions,
			    WANT_ANY);
		break;
	case CFG_TMPL_MESOS:
		compile_expr(&k, "source_uid", &in->mesos.source_uid,
			     WANT_STRING);
		compile_expr(&k, "source_ip", &in->mesos.source_ip, WANT_IP);
		compile_expr(&k, "destination_uid", &in->mesos.destination_uid,
			     WANT_STRING);
		compile_expr(&k, "destination_ip", &in->mesos.destination_ip,
			     WANT_IP);
		compile_expr(&k, "destination_port",
			     &in->mesos.destination_port, WANT_INT64);
		compile_bindings(&k, &in->mesos.attribute_bindings);
		break;
	case CFG_TMPL_LOGENTRY:
		compile_expr(&k, "severity", &in->logentry.severity,
			     WANT_STRING);
		compile_expr(&k, "timestamp", &in->logentry.timestamp,
			     WANT_TIMESTAMP);
		compile_map(&k, "variables", &in->logentry.variables, WANT_ANY);
		compile_expr(&k, "monitored_resource_type",
			     &in->logentry.monitored_resource_type,
			     WANT_STRING);
		compile_map(&k, "monitored_resource_dimensions",
			    &in->logentry.monitored_resource_dimensions,
			    WANT_ANY);
		break;
	case CFG_TMPL_LISTENTRY:
		if (!in->listentry.value.text)
			cfg_error_at(c, &in->meta.pos, in->meta.fqn, "value",
				     "found nothing, expected an expression "
				     "of a string or IP address");
		compile_expr(&k, "value", &in->listentry.value, WANT_ANY);
		if (in->listentry.value.id >= 0 &&
		    !attr_type_is_string(in->listentry.value.type) &&
		    in->listentry.value.type != ATTR_IP) {
			struct cfg_pos pos = expr_pos(&in->listentry.value, 0);

			cfg_error_at(c, &pos, in->meta.fqn, "value",
				     "found %s expression \"%s\", expected a "
				     "STRING or IP_ADDRESS",
				     attr_type_name(in->listentry.value.type),
				     in->listentry.value.text);
		}
		break;
	case CFG_TMPL_QUOTA:
		compile_map(&k, "dimensions", &in->quota.dimensions, WANT_ANY);
		break;
	case CFG_TMPL_CHECKNOTHING:
	case CFG_TMPL_COUNT:
		break;
	}
}

void cfg_compile(struct cfg *c)
{
	c->program = expr_program_create(c->vocab);
	if (!c->program) {
		c->oom = true;
		return;
	}
	for (size_t i = 0; i < c->n_rules; i++) {
		struct cfg_rule *r = c->rules[i];
		struct compiling k = {c, r->meta.fqn, false};

		/* an empty match is always true; compiling it gives every
		 * rule a match id, so the evaluator has no special case */
		if (!r->match.text[0]) {
			r->match.text = "true";
			r->match.multiline = true; /* no offsets into it */
		}
		compile_expr(&k, "match", &r->match, WANT_BOOL);
	}
	for (size_t i = 0; i < c->n_instances; i++)
		compile_instance(c, c->instances[i]);
}

void cfg_compile_free(struct cfg *c)
{
	expr_program_destroy(c->program);
	c->program = NULL;
}

const struct expr_program *cfg_program(const struct cfg *c)
{
	return c->program;
}
