/*
 * config_internal.h -- shared between the files of src/config only.
 *
 * Memory: everything a config owns comes from its arena (chunks freed
 * together by cfg_destroy), so a config abandoned half-way through loading
 * frees exactly like a complete one, and no object needs its own destructor.
 * Arrays grow by copying inside the arena; configs are kilobytes, so the
 * abandoned copies cost nothing worth tracking.
 */
#ifndef MIXD_CONFIG_INTERNAL_H
#define MIXD_CONFIG_INTERNAL_H

#include <stdarg.h>

#include <yaml.h>

#include "config/config.h"

/* Stop collecting after this many errors: a generated file with thousands
 * of broken objects must not make the loader quadratic or the output
 * unreadable. */
#define CFG_MAX_ERRORS 200

struct cfg_chunk;

/** What a name in a struct cfg_names stands for. */
enum cfg_what {
	CFG_WHAT_INSTANCE = 1,
	CFG_WHAT_HANDLER,
	CFG_WHAT_RULE,
	CFG_WHAT_MANIFEST,
	CFG_WHAT_SKIPPED,
};

/** One name of a struct cfg_names; fqn NULL: an empty slot. */
struct cfg_named {
	const char *fqn;
	const struct cfg_meta *meta; /* NULL for a skipped name */
	const void *obj;	     /* the struct cfg_instance etc. */
	enum cfg_what what;
};

/** Names, by open addressing on their hash, in the config's arena. */
struct cfg_names {
	struct cfg_named *slot;
	size_t n, mask;
};

/** Everything of the model lives in `struct cfg`. */
#define CFG_ARENA_BASE ((size_t)64 << 20)
#define CFG_ARENA_PER_BYTE 16

struct cfg {
	unsigned refs; /* atomic: holders beyond the first (cfg_retain()) */
	struct cfg_chunk *chunks;
	bool oom;
	/* The arena is bounded by what was read: CFG_ARENA_BASE plus
	 * CFG_ARENA_PER_BYTE times the YAML's size. Aliases are decoded once
	 * per use, so a small file can otherwise expand without limit. */
	size_t arena_bytes, input_bytes;
	bool too_large; /* the bound was hit (oom is set too) */

	const char *default_ns;
	struct attr_vocab *vocab;
	struct expr_program *program; /* NULL until compiled */

	struct cfg_manifest **manifests;
	size_t n_manifests, cap_manifests;
	struct cfg_rule **rules;
	size_t n_rules, cap_rules;
	struct cfg_instance **instances;
	size_t n_instances, cap_instances;
	struct cfg_handler **handlers;
	size_t n_handlers, cap_handlers;

	/* Every object by fully qualified name, and the names of objects of
	 * known kinds that were skipped (unsupported template or adapter, or
	 * in error), so that references to them are dropped rather than
	 * reported as dangling. Each object and reference is looked up once:
	 * tables, not scans, or loading is quadratic in the objects. */
	struct cfg_names objects, skipped;

	/* kinds already warned about (one warning per kind) */
	const char **warned_kinds;
	size_t n_warned_kinds, cap_warned_kinds;

	const char **errors;
	size_t n_errors, cap_errors;
	bool errors_truncated;
	const char **warnings;
	size_t n_warnings, cap_warnings;

	/* vocabulary size after each step, for the summary */
	unsigned vocab_builtin, vocab_manifests, vocab_outputs;

	const char **sources;
	size_t n_sources, cap_sources;
	size_t n_files;	    /* YAML files read */
	size_t n_documents; /* non-empty documents */
};

/* --- arena (cfg_util.c) --- */

/** Zeroed memory owned by @c; NULL (and c->oom set) on ENOMEM. */
void *cfg_alloc(struct cfg *c, size_t n);
/** Copy of @n bytes at @s plus a NUL. */
char *cfg_strndup(struct cfg *c, const char *s, size_t n);
/** Copy of @s. */
char *cfg_strdup(struct cfg *c, const char *s);
/** printf into the arena. */
char *cfg_sprintf(struct cfg *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/**
 * Append one zeroed element of @size to the array *@arr holding *@n of
 * *@cap; returns it, or NULL on ENOMEM.
 */
void *cfg_push(struct cfg *c, void *arr, size_t *n, size_t *cap, size_t size);

/**
 * Let @fqn (owned by the config) stand in @t for @obj of kind @what (its
 * meta @meta), in place of what it stood for, if anything. Returns 0, or
 * -1 on ENOMEM (c->oom set).
 */
int cfg_names_add(struct cfg *c, struct cfg_names *t, const char *fqn,
		  enum cfg_what what, const struct cfg_meta *meta,
		  const void *obj);
/** The entry of @fqn in @t, or NULL. */
const struct cfg_named *cfg_names_find(const struct cfg_names *t,
				       const char *fqn);

/* --- diagnostics (cfg_util.c) --- */

/**
 * Record an error "file:line:col: fqn: field: message". @fqn and @field may
 * be NULL (then omitted). Never pass a secret value in the message.
 */
void cfg_error_at(struct cfg *c, const struct cfg_pos *pos, const char *fqn,
		  const char *field, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/** As cfg_error_at, into the warnings. */
void cfg_warn_at(struct cfg *c, const struct cfg_pos *pos, const char *fqn,
		 const char *field, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/** Record a path for watches (deduplicated). */
void cfg_add_source(struct cfg *c, const char *path);

/* --- YAML decoding (cfg_yaml.c) --- */

/** Where a field is being decoded: for positions and error context. */
struct cfg_ctx {
	struct cfg *c;
	yaml_document_t *doc;
	const char *file;    /* owned by the config */
	const char *fqn;     /* object being decoded */
	char path[192];	     /* field path, e.g. "metrics[2].buckets" */
	bool handler_params; /* strings may be ${secrets} */
};

/** Field value kinds of the decoding tables. */
enum cfg_ftype {
	CFG_F_STR,	/* struct cfg_str */
	CFG_F_PARAM,	/* struct cfg_str, ${...} resolved (handlers) */
	CFG_F_EXPR,	/* struct cfg_expr */
	CFG_F_EXPR_MAP, /* struct cfg_expr_map */
	CFG_F_STRLIST,	/* struct cfg_strlist */
	CFG_F_BOOL,	/* bool */
	CFG_F_INT,	/* int64_t */
	CFG_F_DOUBLE,	/* double */
	CFG_F_DURATION, /* int64_t ns */
	CFG_F_ENUM,	/* int, names in `names` */
	CFG_F_CUSTOM,	/* decode() */
};

struct cfg_field;

/** A custom field decoder: fills @dst from @node; 0 / -1 (error recorded). */
typedef int (*cfg_decode_fn)(struct cfg_ctx *x, const struct cfg_field *f,
			     yaml_node_t *node, void *dst);

/** One field of a kind: both spellings, its type and where it goes. */
struct cfg_field {
	const char *snake;
	const char *camel;
	enum cfg_ftype type;
	size_t off;
	const char *const *names; /* CFG_F_ENUM: NULL-terminated */
	cfg_decode_fn decode;	  /* CFG_F_CUSTOM */
	unsigned flags;
};

#define CFG_FF_REQUIRED 1u /* missing -> error */
#define CFG_FF_PASSWORD 2u /* always printed <redacted> */

/** A field table. */
struct cfg_fields {
	const struct cfg_field *v;
	size_t n;
};

#define CFG_FIELDS(arr)                                                        \
	((struct cfg_fields){(arr), sizeof(arr) / sizeof((arr)[0])})

/**
 * Decode mapping @node into @dst with @fields: unknown fields, duplicate
 * keys, missing required fields and bad values are errors. Returns 0 when
 * nothing was wrong.
 */
int cfg_decode_map(struct cfg_ctx *x, yaml_node_t *node,
		   struct cfg_fields fields, void *dst);

/**
 * One entry of a mapping whose keys are names (manifest attributes,
 * severities, dimensions): called inside the key's context path. Returns 0,
 * -1 when this entry is bad (the walk goes on), or CFG_ENTRY_FATAL (out of
 * memory: the walk stops).
 */
typedef int (*cfg_entry_fn)(struct cfg_ctx *x, const char *key, yaml_node_t *k,
			    yaml_node_t *v, void *arg);
#define CFG_ENTRY_FATAL (-2)

/**
 * Walk mapping @node, calling @fn for each key. @not_mapping is the error
 * for a node that is no mapping and @bad_key the one for a key that is no
 * scalar (each a format with one %s: what was found); with @nonempty an
 * empty key is refused the same way. Returns 0 when nothing was wrong.
 */
int cfg_decode_entries(struct cfg_ctx *x, yaml_node_t *node,
		       const char *not_mapping, const char *bad_key,
		       bool nonempty, cfg_entry_fn fn, void *arg);

/** Decode @v as field @f into @dst (+ f->off); 0 / -1 (error recorded).
 *  A YAML null leaves the destination unset. */
int cfg_decode_field(struct cfg_ctx *x, const struct cfg_field *f,
		     yaml_node_t *v, void *dst);

/** Position of @node in x's file. */
struct cfg_pos cfg_node_pos(const struct cfg_ctx *x, const yaml_node_t *node);

/** The field path of x with @name appended ("a.b"); in a static buffer of
 *  x (the path is restored by cfg_ctx_pop). Returns the old length. */
size_t cfg_ctx_push(struct cfg_ctx *x, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/** Restore the field path to length @len. */
void cfg_ctx_pop(struct cfg_ctx *x, size_t len);

/** Error at @node in the current object and field path. */
void cfg_node_error(struct cfg_ctx *x, const yaml_node_t *node, const char *fmt,
		    ...) __attribute__((format(printf, 3, 4)));

/** Short description of what a node is, for "found ..." ("a mapping"). */
const char *cfg_node_what(const yaml_node_t *node);

/** YAML null: an empty, ~ or null plain scalar. */
bool cfg_node_is_null(const yaml_node_t *node);

/** Scalar text of @node or NULL when it is not a scalar. */
const char *cfg_scalar(const yaml_node_t *node);

/* --- kinds (cfg_kinds.c) --- */

/**
 * Decode one document's object (@root, a mapping) into @c. Unknown kinds
 * warn; known kinds with errors are recorded but not added.
 */
void cfg_decode_object(struct cfg_ctx *x, yaml_node_t *root);

/* --- validation (cfg_resolve.c) --- */

/** Resolve references and validate the model; errors are recorded. */
void cfg_resolve(struct cfg *c);

/** Check the policy handlers' parameters as Mixer's adapters did at
 *  build time, and that every quota instance sent to a memquota handler
 *  has a limit there (cfg_policy.c). After the rules are resolved. */
void cfg_resolve_policy(struct cfg *c);

/** Compute the bounds of @b (explicit ones are already set); 0 / -1 with
 *  the reason in @why and the offending parameter's snake_case name in
 *  @field (NULL: the definition as a whole). */
int cfg_buckets_compute(struct cfg *c, struct cfg_buckets *b,
			const char **field, const char **why);

/** True when @fqn names an object that was skipped on purpose. */
bool cfg_is_skipped(const struct cfg *c, const char *fqn);

/** The instance, handler, rule or manifest named @fqn, or NULL. */
const struct cfg_meta *cfg_find_meta(const struct cfg *c, const char *fqn);

/* --- vocabulary and expressions (cfg_compile.c) --- */

/** Merge manifests and the mesos outputs into the vocabulary. */
void cfg_build_vocab(struct cfg *c);

/** Type-check and compile every expression into the shared program. */
void cfg_compile(struct cfg *c);

/** Release what cfg_compile built (the program). */
void cfg_compile_free(struct cfg *c);

#endif /* MIXD_CONFIG_INTERNAL_H */
