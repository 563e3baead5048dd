/*
 * cfg_util.c -- the config's arena, diagnostics and read accessors.
 */
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <xxhash.h>

#include "config/config_internal.h"

struct cfg_chunk {
	struct cfg_chunk *next;
	size_t used, cap;
	alignas(max_align_t) unsigned char data[];
};

/* Big enough that a typical config (a few hundred objects) takes a handful
 * of chunks, small enough not to matter for a tiny one. */
#define CHUNK_MIN (64 * 1024)

void *cfg_alloc(struct cfg *c, size_t n)
{
	const size_t align = alignof(max_align_t);
	struct cfg_chunk *k = c->chunks;
	void *p;

	if (n > SIZE_MAX / 2)
		goto oom;
	n = (n + align - 1) & ~(align - 1);
	if (!k || k->cap - k->used < n) {
		size_t cap = n > CHUNK_MIN ? n : CHUNK_MIN;

		if (c->arena_bytes + cap >
		    CFG_ARENA_BASE + CFG_ARENA_PER_BYTE * c->input_bytes) {
			c->too_large = true;
			goto oom;
		}
		c->arena_bytes += cap;
		k = malloc(sizeof(*k) + cap);
		if (!k)
			goto oom;
		k->cap = cap;
		k->used = 0;
		k->next = c->chunks;
		c->chunks = k;
	}
	p = k->data + k->used;
	k->used += n;
	memset(p, 0, n);
	return p;
oom:
	c->oom = true;
	return NULL;
}

char *cfg_strndup(struct cfg *c, const char *s, size_t n)
{
	char *p = cfg_alloc(c, n + 1);

	if (p && n)
		memcpy(p, s, n);
	return p;
}

char *cfg_strdup(struct cfg *c, const char *s)
{
	return cfg_strndup(c, s, strlen(s));
}

static char *cfg_vsprintf(struct cfg *c, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;
	char *p;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return NULL;
	p = cfg_alloc(c, (size_t)n + 1);
	if (p)
		vsnprintf(p, (size_t)n + 1, fmt, ap);
	return p;
}

char *cfg_sprintf(struct cfg *c, const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	p = cfg_vsprintf(c, fmt, ap);
	va_end(ap);
	return p;
}

void *cfg_push(struct cfg *c, void *arr, size_t *n, size_t *cap, size_t size)
{
	void **a = arr;
	unsigned char *p;

	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 4;
		void *na = cfg_alloc(c, ncap * size);

		if (!na)
			return NULL;
		if (*n)
			memcpy(na, *a, *n * size);
		*a = na;
		*cap = ncap;
	}
	p = (unsigned char *)*a + *n * size;
	memset(p, 0, size);
	(*n)++;
	return p;
}

static char *format_diag(struct cfg *c, const struct cfg_pos *pos,
			 const char *fqn, const char *field, const char *fmt,
			 va_list ap)
{
	char *msg = cfg_vsprintf(c, fmt, ap);
	char where[64] = "";

	if (!msg)
		return NULL;
	if (pos && pos->line)
		snprintf(where, sizeof(where), ":%u:%u", pos->line, pos->col);
	return cfg_sprintf(c, "%s%s: %s%s%s%s%s",
			   pos && pos->file ? pos->file : "<config>", where,
			   fqn ? fqn : "", fqn ? ": " : "", field ? field : "",
			   field ? ": " : "", msg);
}

void cfg_error_at(struct cfg *c, const struct cfg_pos *pos, const char *fqn,
		  const char *field, const char *fmt, ...)
{
	va_list ap;
	char *d, **slot;

	if (c->n_errors >= CFG_MAX_ERRORS) {
		c->errors_truncated = true;
		return;
	}
	va_start(ap, fmt);
	d = format_diag(c, pos, fqn, field && *field ? field : NULL, fmt, ap);
	va_end(ap);
	slot = cfg_push(c, &c->errors, &c->n_errors, &c->cap_errors,
			sizeof(*slot));
	if (!slot)
		return;
	/* An out-of-memory error still counts as an error. */
	*slot = d ? d : "out of memory";
}

void cfg_add_error(struct cfg *c, const struct cfg_meta *meta,
		   const char *field, const char *msg)
{
	cfg_error_at(c, &meta->pos, meta->fqn, field, "%s", msg);
}

void cfg_warn_at(struct cfg *c, const struct cfg_pos *pos, const char *fqn,
		 const char *field, const char *fmt, ...)
{
	va_list ap;
	char *d, **slot;

	if (c->n_warnings >= CFG_MAX_ERRORS)
		return;
	va_start(ap, fmt);
	d = format_diag(c, pos, fqn, field && *field ? field : NULL, fmt, ap);
	va_end(ap);
	if (!d)
		return;
	slot = cfg_push(c, &c->warnings, &c->n_warnings, &c->cap_warnings,
			sizeof(*slot));
	if (slot)
		*slot = d;
}

void cfg_add_source(struct cfg *c, const char *path)
{
	const char **slot;

	for (size_t i = 0; i < c->n_sources; i++)
		if (!strcmp(c->sources[i], path))
			return;
	slot = cfg_push(c, &c->sources, &c->n_sources, &c->cap_sources,
			sizeof(*slot));
	if (slot)
		*slot = cfg_strdup(c, path);
	if (slot && !*slot)
		c->n_sources--;
}

struct cfg *cfg_retain(struct cfg *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
	return c;
}

void cfg_destroy(struct cfg *c)
{
	struct cfg_chunk *k, *next;

	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != ~0u)
		return;
	cfg_compile_free(c);
	attr_vocab_destroy(c->vocab);
	for (k = c->chunks; k; k = next) {
		next = k->next;
		free(k);
	}
	free(c);
}

bool cfg_ok(const struct cfg *c)
{
	return c && !c->oom && c->n_errors == 0 && !c->errors_truncated;
}

size_t cfg_error_count(const struct cfg *c)
{
	return c->n_errors + (c->oom && (!c->n_errors || c->too_large));
}

const char *cfg_error(const struct cfg *c, size_t i)
{
	if (i < c->n_errors)
		return c->errors[i];
	if (c->too_large)
		return "the configuration expands to more memory than mixd "
		       "allows for its size (64 MiB + 16 bytes a byte read): "
		       "YAML aliases are copied at every use";
	return "out of memory while loading the configuration";
}

size_t cfg_warning_count(const struct cfg *c)
{
	return c->n_warnings;
}

const char *cfg_warning(const struct cfg *c, size_t i)
{
	return c->warnings[i];
}

void cfg_print_diagnostics(const struct cfg *c, FILE *out)
{
	for (size_t i = 0; i < cfg_error_count(c); i++)
		fprintf(out, "error: %s\n", cfg_error(c, i));
	if (c->errors_truncated)
		fprintf(out,
			"error: more than %d errors, the rest are not "
			"shown\n",
			CFG_MAX_ERRORS);
	for (size_t i = 0; i < c->n_warnings; i++)
		fprintf(out, "warning: %s\n", c->warnings[i]);
}

const char *cfg_default_namespace(const struct cfg *c)
{
	return c->default_ns;
}

const struct attr_vocab *cfg_vocab(const struct cfg *c)
{
	return c->vocab;
}

size_t cfg_manifest_count(const struct cfg *c)
{
	return c->n_manifests;
}

const struct cfg_manifest *cfg_manifest(const struct cfg *c, size_t i)
{
	return c->manifests[i];
}

size_t cfg_rule_count(const struct cfg *c)
{
	return c->n_rules;
}

const struct cfg_rule *cfg_rule(const struct cfg *c, size_t i)
{
	return c->rules[i];
}

size_t cfg_instance_count(const struct cfg *c)
{
	return c->n_instances;
}

const struct cfg_instance *cfg_instance(const struct cfg *c, size_t i)
{
	return c->instances[i];
}

size_t cfg_handler_count(const struct cfg *c)
{
	return c->n_handlers;
}

const struct cfg_handler *cfg_handler(const struct cfg *c, size_t i)
{
	return c->handlers[i];
}

static size_t name_hash(const char *fqn)
{
	return (size_t)XXH3_64bits(fqn, strlen(fqn));
}

/* The slot of @fqn in @t, or the empty one where it would go. */
static struct cfg_named *name_slot(const struct cfg_names *t, const char *fqn,
				   size_t h)
{
	for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
		struct cfg_named *e = &t->slot[i];
		if (!e->fqn || !strcmp(e->fqn, fqn))
			return e;
	}
}

int cfg_names_add(struct cfg *c, struct cfg_names *t, const char *fqn,
		  enum cfg_what what, const struct cfg_meta *meta,
		  const void *obj)
{
	/* At most half full. A grown table is a new one in the arena: the
	 * old ones add up to less than the last. */
	if (2 * (t->n + 1) > (t->slot ? t->mask + 1 : 0)) {
		size_t cap = t->slot ? 2 * (t->mask + 1) : 64;
		struct cfg_named *slot = cfg_alloc(c, cap * sizeof *slot);
		if (!slot)
			return -1;
		struct cfg_names g = {.slot = slot, .n = t->n, .mask = cap - 1};
		for (size_t i = 0; t->slot && i <= t->mask; i++)
			if (t->slot[i].fqn)
				*name_slot(&g, t->slot[i].fqn,
					   name_hash(t->slot[i].fqn)) =
					t->slot[i];
		*t = g;
	}
	struct cfg_named *e = name_slot(t, fqn, name_hash(fqn));
	if (!e->fqn)
		t->n++;
	*e = (struct cfg_named){
		.fqn = fqn, .meta = meta, .obj = obj, .what = what};
	return 0;
}

const struct cfg_named *cfg_names_find(const struct cfg_names *t,
				       const char *fqn)
{
	if (!t->slot)
		return NULL;
	const struct cfg_named *e = name_slot(t, fqn, name_hash(fqn));
	return e->fqn ? e : NULL;
}

const struct cfg_instance *cfg_find_instance(const struct cfg *c,
					     const char *fqn)
{
	const struct cfg_named *e = cfg_names_find(&c->objects, fqn);
	return e && e->what == CFG_WHAT_INSTANCE ? e->obj : NULL;
}

const struct cfg_handler *cfg_find_handler(const struct cfg *c, const char *fqn)
{
	const struct cfg_named *e = cfg_names_find(&c->objects, fqn);
	return e && e->what == CFG_WHAT_HANDLER ? e->obj : NULL;
}

bool cfg_rule_applies(const struct cfg *c, const struct cfg_rule *r,
		      const char *ns, size_t len)
{
	if (r->in_default_namespace)
		return true;
	return ns && strlen(r->meta.ns) == len && !memcmp(r->meta.ns, ns, len);
}

void cfg_record_namespace_reads(uint64_t *slots)
{
	static const unsigned ids[] = {MIXD_ATTR_CONTEXT_REPORTER_KIND,
				       MIXD_ATTR_SOURCE_NAMESPACE,
				       MIXD_ATTR_DESTINATION_NAMESPACE};
	for (size_t k = 0; k < sizeof(ids) / sizeof(ids[0]); k++)
		slots[ids[k] / 64] |= 1ull << (ids[k] % 64);
}

bool cfg_record_namespace(const struct attr_table *t, const char **ns,
			  size_t *len)
{
	const struct attr_value *k =
		attr_table_get(t, MIXD_ATTR_CONTEXT_REPORTER_KIND);
	bool outbound = k && k->len == 8 && memcmp(k->s, "outbound", 8) == 0;
	const struct attr_value *n =
		attr_table_get(t, outbound ? MIXD_ATTR_SOURCE_NAMESPACE
					   : MIXD_ATTR_DESTINATION_NAMESPACE);
	if (!n)
		return false;
	*ns = n->s;
	*len = n->len;
	return true;
}

const char *const *cfg_sources(const struct cfg *c, size_t *n_out)
{
	*n_out = c->n_sources;
	return c->sources;
}

const char *cfg_template_name(enum cfg_template t)
{
	static const char *const names[] = {"metric",	 "mesos",
					    "logentry",	 "listentry",
					    "checknothing", "quota"};
	_Static_assert(sizeof(names) / sizeof(names[0]) == CFG_TMPL_COUNT,
		       "a name per template");

	return (unsigned)t < CFG_TMPL_COUNT ? names[t] : "?";
}

const char *cfg_adapter_name(enum cfg_adapter a)
{
	static const char *const names[] = {"prometheus",  "mesosenv",
					    "stdio",	   "listchecker",
					    "denier",	   "memquota"};
	_Static_assert(sizeof(names) / sizeof(names[0]) == CFG_ADAPTER_COUNT,
		       "a name per adapter");

	return (unsigned)a < CFG_ADAPTER_COUNT ? names[a] : "?";
}

const char *cfg_address_end(const char *p)
{
	const char *auth = p;
	while (*auth == ' ' || *auth == '\t')
		auth++;
	if (!strncasecmp(auth, "http://", 7))
		auth += 7;
	else if (!strncasecmp(auth, "https://", 8))
		auth += 8;
	else
		auth = p;
	const char *from = auth;
	for (const char *q = auth; *q && *q != '/'; q++) {
		if (!strncmp(q, "://", 3))
			break;
		if (*q == '@')
			from = q + 1;
	}
	return strchr(from, ',');
}
