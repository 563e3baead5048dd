/*
 * cfg_yaml.c -- finding the files, parsing YAML documents, and the
 * table-driven field decoder every kind uses.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_internal.h"

/* A config file is text someone wrote; anything larger is a mistake (or an
 * attack on the loader), not a configuration. */
#define MAX_FILE_BYTES (64u << 20)
/* Secret files hold a password or a token. */
#define MAX_SECRET_BYTES (64u << 10)
/* Symlinked directory loops end here. */
#define MAX_DIR_DEPTH 32

/* ---------------------------------------------------------------- nodes */

struct cfg_pos cfg_node_pos(const struct cfg_ctx *x, const yaml_node_t *node)
{
	struct cfg_pos p = {x->file, 0, 0};

	if (node) {
		p.line = (uint32_t)node->start_mark.line + 1;
		p.col = (uint32_t)node->start_mark.column + 1;
	}
	return p;
}

size_t cfg_ctx_push(struct cfg_ctx *x, const char *fmt, ...)
{
	size_t old = strlen(x->path);
	va_list ap;

	if (old && old + 1 < sizeof(x->path) && fmt[0] != '[')
		x->path[old] = '.', x->path[old + 1] = 0;
	va_start(ap, fmt);
	size_t at = strlen(x->path);
	if (at < sizeof(x->path))
		vsnprintf(x->path + at, sizeof(x->path) - at, fmt, ap);
	va_end(ap);
	return old;
}

void cfg_ctx_pop(struct cfg_ctx *x, size_t len)
{
	x->path[len] = 0;
}

void cfg_node_error(struct cfg_ctx *x, const yaml_node_t *node, const char *fmt,
		    ...)
{
	struct cfg_pos pos = cfg_node_pos(x, node);
	va_list ap;
	char msg[512];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cfg_error_at(x->c, &pos, x->fqn, x->path, "%s", msg);
}

const char *cfg_node_what(const yaml_node_t *node)
{
	switch (node->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

const char *cfg_scalar(const yaml_node_t *node)
{
	if (!node || node->type != YAML_SCALAR_NODE)
		return NULL;
	return (const char *)node->data.scalar.value;
}

/* YAML's null: an empty or ~/null plain scalar. Protobuf JSON reads null as
 * "field not set". */
bool cfg_node_is_null(const yaml_node_t *node)
{
	const char *s = cfg_scalar(node);

	if (!s || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return !*s || !strcmp(s, "~") || !strcmp(s, "null") ||
	       !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Abbreviated scalar for "found ..." (never used on handler parameters,
 * which may be secrets). */
static const char *found_text(const yaml_node_t *node, char *buf, size_t cap)
{
	const char *s = cfg_scalar(node);

	if (!s)
		return cfg_node_what(node);
	if (strlen(s) > 40)
		snprintf(buf, cap, "\"%.37s...\"", s);
	else
		snprintf(buf, cap, "\"%s\"", s);
	return buf;
}

/* ------------------------------------------------------------- secrets */

static bool is_env_name(const char *s, size_t n)
{
	if (!n || isdigit((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return false;
	return true;
}

static char *read_secret_file(struct cfg_ctx *x, yaml_node_t *node,
			      const char *path)
{
	char *buf = NULL, *out = NULL;
	ssize_t n = 0, r;
	/* O_NONBLOCK and the regular-file check: a path naming a FIFO or a
	 * device must fail the load, not hang it */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;

	if (fd < 0) {
		cfg_node_error(x, node, "cannot read secret file %s: %s", path,
			       strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		cfg_node_error(x, node,
			       "found secret file %s, expected a regular file",
			       path);
		close(fd);
		return NULL;
	}
	buf = malloc(MAX_SECRET_BYTES + 1);
	if (!buf) {
		x->c->oom = true;
		goto out;
	}
	while ((r = read(fd, buf + n, MAX_SECRET_BYTES + 1 - (size_t)n)) > 0)
		n += r;
	if (r < 0) {
		cfg_node_error(x, node, "cannot read secret file %s: %s", path,
			       strerror(errno));
		goto out;
	}
	if (n > (ssize_t)MAX_SECRET_BYTES) {
		cfg_node_error(x, node,
			       "secret file %s is larger than %u bytes, "
			       "expected a password or token",
			       path, MAX_SECRET_BYTES);
		goto out;
	}
	/* `echo secret > file` leaves a newline nobody means. */
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	out = cfg_strndup(x->c, buf, (size_t)n);
out:
	free(buf);
	close(fd);
	return out;
}

/*
 * A handler parameter: `${VAR}` / `${env:VAR}` -> environment, `${file:P}`
 * -> file contents, `$${...}` -> literal `${...}`, else the text itself.
 */
static int decode_param(struct cfg_ctx *x, yaml_node_t *node,
			struct cfg_str *dst)
{
	const char *s = cfg_scalar(node);
	size_t n = strlen(s);

	if (!strncmp(s, "$${", 3)) {
		dst->s = cfg_strdup(x->c, s + 1);
		return dst->s ? 0 : -1;
	}
	if (strncmp(s, "${", 2) || n < 3 || s[n - 1] != '}') {
		dst->s = cfg_strdup(x->c, s);
		return dst->s ? 0 : -1;
	}
	const char *ref = s + 2;
	size_t rn = n - 3;

	dst->secret = true;
	if (rn > 5 && !strncmp(ref, "file:", 5)) {
		char *path = cfg_strndup(x->c, ref + 5, rn - 5);

		if (!path)
			return -1;
		dst->s = read_secret_file(x, node, path);
		return dst->s ? 0 : -1;
	}
	if (rn > 4 && !strncmp(ref, "env:", 4))
		ref += 4, rn -= 4;
	if (!is_env_name(ref, rn)) {
		cfg_node_error(x, node,
			       "found %s, expected ${VAR}, ${env:VAR} or "
			       "${file:/path}",
			       s);
		return -1;
	}
	char *name = cfg_strndup(x->c, ref, rn);
	const char *val = name ? getenv(name) : NULL;

	if (!name)
		return -1;
	if (!val) {
		cfg_node_error(x, node,
			       "found %s, but environment variable %s is not "
			       "set",
			       s, name);
		return -1;
	}
	dst->s = cfg_strdup(x->c, val);
	return dst->s ? 0 : -1;
}

/* ------------------------------------------------------ scalar decoders */

static int need_scalar(struct cfg_ctx *x, yaml_node_t *node,
		       const char *expected)
{
	if (node->type == YAML_SCALAR_NODE)
		return 0;
	cfg_node_error(x, node, "found %s, expected %s", cfg_node_what(node),
		       expected);
	return -1;
}

static int decode_str(struct cfg_ctx *x, yaml_node_t *node, struct cfg_str *dst)
{
	if (need_scalar(x, node, "a string"))
		return -1;
	dst->pos = cfg_node_pos(x, node);
	dst->s = cfg_strdup(x->c, cfg_scalar(node));
	return dst->s ? 0 : -1;
}

static void expr_from_node(struct cfg_ctx *x, yaml_node_t *node,
			   struct cfg_expr *e)
{
	e->pos = cfg_node_pos(x, node);
	e->id = -1;
	e->multiline = node->start_mark.line != node->end_mark.line;
	switch (node->data.scalar.style) {
	case YAML_SINGLE_QUOTED_SCALAR_STYLE:
		e->style = CFG_SCALAR_SINGLE_QUOTED;
		e->pos.col++;
		break;
	case YAML_DOUBLE_QUOTED_SCALAR_STYLE:
		e->style = CFG_SCALAR_DOUBLE_QUOTED;
		e->pos.col++;
		break;
	case YAML_LITERAL_SCALAR_STYLE:
	case YAML_FOLDED_SCALAR_STYLE:
		e->style = CFG_SCALAR_BLOCK;
		e->multiline = true;
		break;
	default:
		e->style = CFG_SCALAR_PLAIN;
	}
}

static int decode_expr(struct cfg_ctx *x, yaml_node_t *node,
		       struct cfg_expr *dst)
{
	if (need_scalar(x, node, "an expression string"))
		return -1;
	expr_from_node(x, node, dst);
	dst->text = cfg_strdup(x->c, cfg_scalar(node));
	return dst->text ? 0 : -1;
}

int cfg_decode_entries(struct cfg_ctx *x, yaml_node_t *node,
		       const char *not_mapping, const char *bad_key,
		       bool nonempty, cfg_entry_fn fn, void *arg)
{
	int rc = 0;

	if (node->type != YAML_MAPPING_NODE) {
		cfg_node_error(x, node, not_mapping, cfg_node_what(node));
		return -1;
	}
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
	     p < node->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
		yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
		const char *key = cfg_scalar(k);

		if (!key || (nonempty && !*key)) {
			cfg_node_error(x, k, bad_key,
				       key ? "an empty key" : cfg_node_what(k));
			rc = -1;
			continue;
		}
		size_t old = cfg_ctx_push(x, "%s", key);
		int e = fn(x, key, k, v, arg);
		cfg_ctx_pop(x, old);
		if (e == CFG_ENTRY_FATAL)
			return -1;
		if (e)
			rc = -1;
	}
	return rc;
}

struct expr_map_arg {
	struct cfg_expr_map *dst;
	size_t cap;
};

static int expr_map_entry(struct cfg_ctx *x, const char *key, yaml_node_t *k,
			  yaml_node_t *v, void *arg)
{
	struct expr_map_arg *a = arg;
	struct cfg_expr_map *dst = a->dst;

	for (size_t i = 0; i < dst->n; i++) {
		if (!strcmp(dst->v[i].name, key)) {
			cfg_node_error(x, k,
				       "found a second \"%s\", expected "
				       "each name once",
				       key);
			return -1;
		}
	}
	struct cfg_named_expr *ne =
		cfg_push(x->c, &dst->v, &dst->n, &a->cap, sizeof(*ne));
	if (!ne)
		return CFG_ENTRY_FATAL;
	ne->name = cfg_strdup(x->c, key);
	ne->pos = cfg_node_pos(x, k);
	ne->slot = -1;
	if (!ne->name || decode_expr(x, v, &ne->expr)) {
		dst->n--;
		return -1;
	}
	return 0;
}

static int decode_expr_map(struct cfg_ctx *x, yaml_node_t *node,
			   struct cfg_expr_map *dst)
{
	struct expr_map_arg a = {dst, 0};

	return cfg_decode_entries(x, node,
				  "found %s, expected a mapping of names to "
				  "expressions",
				  "found %s as a key, expected a name", false,
				  expr_map_entry, &a);
}

static int decode_strlist(struct cfg_ctx *x, yaml_node_t *node,
			  struct cfg_strlist *dst)
{
	size_t cap = 0, i = 0;
	int rc = 0;

	if (node->type != YAML_SEQUENCE_NODE) {
		cfg_node_error(x, node, "found %s, expected a list of strings",
			       cfg_node_what(node));
		return -1;
	}
	for (yaml_node_item_t *it = node->data.sequence.items.start;
	     it < node->data.sequence.items.top; it++, i++) {
		yaml_node_t *v = yaml_document_get_node(x->doc, *it);
		size_t old = cfg_ctx_push(x, "[%zu]", i);
		struct cfg_str *s =
			cfg_push(x->c, &dst->v, &dst->n, &cap, sizeof(*s));

		if (!s)
			return -1;
		if (decode_str(x, v, s)) {
			dst->n--;
			rc = -1;
		}
		cfg_ctx_pop(x, old);
	}
	return rc;
}

static int decode_bool(struct cfg_ctx *x, yaml_node_t *node, bool *dst)
{
	static const char *const yes[] = {"true", "True", "TRUE", "yes",
					  "Yes",  "on",	  "On"};
	static const char *const no[] = {"false", "False", "FALSE", "no",
					 "No",	  "off",   "Off"};
	const char *s = cfg_scalar(node);
	char buf[64];

	for (size_t i = 0; s && i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcmp(s, yes[i]))
			return *dst = true, 0;
		if (!strcmp(s, no[i]))
			return *dst = false, 0;
	}
	cfg_node_error(x, node, "found %s, expected true or false",
		       found_text(node, buf, sizeof(buf)));
	return -1;
}

static int decode_int(struct cfg_ctx *x, yaml_node_t *node, int64_t *dst)
{
	const char *s = cfg_scalar(node);
	char *end, buf[64];
	long long v;

	if (s && *s) {
		errno = 0;
		v = strtoll(s, &end, 10);
		if (!*end && !errno) {
			*dst = v;
			return 0;
		}
	}
	cfg_node_error(x, node, "found %s, expected an integer",
		       found_text(node, buf, sizeof(buf)));
	return -1;
}

/** A finite number from a scalar; 0 / -1 (no error recorded). */
static int parse_double(const char *s, double *dst)
{
	char *end;
	double v;

	if (!s || !*s || isspace((unsigned char)*s))
		return -1;
	v = strtod(s, &end);
	if (*end || !isfinite(v))
		return -1;
	*dst = v;
	return 0;
}

static int decode_double(struct cfg_ctx *x, yaml_node_t *node, double *dst)
{
	char buf[64];

	if (!parse_double(cfg_scalar(node), dst))
		return 0;
	cfg_node_error(x, node, "found %s, expected a number",
		       found_text(node, buf, sizeof(buf)));
	return -1;
}

static int decode_duration(struct cfg_ctx *x, yaml_node_t *node, int64_t *dst)
{
	const char *s = cfg_scalar(node);
	char buf[64];

	if (s && !attr_parse_duration(s, strlen(s), dst) && *dst >= 0)
		return 0;
	cfg_node_error(x, node,
		       "found %s, expected a duration such as \"10m\" or "
		       "\"30s\"",
		       found_text(node, buf, sizeof(buf)));
	return -1;
}

static int decode_enum(struct cfg_ctx *x, yaml_node_t *node,
		       const char *const *names, int *dst)
{
	const char *s = cfg_scalar(node);
	char buf[64], want[256] = "";
	size_t n = 0;

	for (; names[n]; n++)
		if (s && !strcmp(s, names[n]))
			return *dst = (int)n, 0;
	/* protobuf JSON also takes an enum's number */
	if (s && isdigit((unsigned char)s[0]) && !s[1] &&
	    (size_t)(s[0] - '0') < n)
		return *dst = s[0] - '0', 0;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(want);
		snprintf(want + l, sizeof(want) - l, "%s%s",
			 i ? (i + 1 == n ? " or " : ", ") : "", names[i]);
	}
	cfg_node_error(x, node, "found %s, expected %s",
		       found_text(node, buf, sizeof(buf)), want);
	return -1;
}

/* -------------------------------------------------------- field tables */

static const struct cfg_field *find_field(struct cfg_fields fields,
					  const char *key)
{
	for (size_t i = 0; i < fields.n; i++)
		if (!strcmp(fields.v[i].snake, key) ||
		    (fields.v[i].camel && !strcmp(fields.v[i].camel, key)))
			return &fields.v[i];
	return NULL;
}

int cfg_decode_field(struct cfg_ctx *x, const struct cfg_field *f,
		     yaml_node_t *v, void *dst)
{
	char *p = (char *)dst + f->off;

	if (f->type == CFG_F_CUSTOM)
		return f->decode(x, f, v, dst);
	if (cfg_node_is_null(v))
		return 0;
	switch (f->type) {
	case CFG_F_STR:
		return decode_str(x, v, (struct cfg_str *)p);
	case CFG_F_PARAM:
		if (need_scalar(x, v, "a string"))
			return -1;
		((struct cfg_str *)p)->pos = cfg_node_pos(x, v);
		return decode_param(x, v, (struct cfg_str *)p);
	case CFG_F_EXPR:
		return decode_expr(x, v, (struct cfg_expr *)p);
	case CFG_F_EXPR_MAP:
		return decode_expr_map(x, v, (struct cfg_expr_map *)p);
	case CFG_F_STRLIST:
		return decode_strlist(x, v, (struct cfg_strlist *)p);
	case CFG_F_BOOL:
		return decode_bool(x, v, (bool *)p);
	case CFG_F_INT:
		return decode_int(x, v, (int64_t *)p);
	case CFG_F_DOUBLE:
		return decode_double(x, v, (double *)p);
	case CFG_F_DURATION:
		return decode_duration(x, v, (int64_t *)p);
	case CFG_F_ENUM:
		return decode_enum(x, v, f->names, (int *)p);
	case CFG_F_CUSTOM:
		break;
	}
	return -1;
}

/* "value, dimensions or monitored_resource_type" for unknown-field errors */
static void field_list(struct cfg_fields fields, char *buf, size_t cap)
{
	buf[0] = 0;
	for (size_t i = 0; i < fields.n; i++) {
		size_t l = strlen(buf);
		snprintf(buf + l, cap - l, "%s%s",
			 i ? (i + 1 == fields.n ? " or " : ", ") : "",
			 fields.v[i].snake);
	}
}

int cfg_decode_map(struct cfg_ctx *x, yaml_node_t *node,
		   struct cfg_fields fields, void *dst)
{
	/* which fields were seen: a key given twice (or in both spellings)
	 * is an error, as protobuf JSON parsing rejected it */
	yaml_node_t *seen[32] = {0};
	char want[512];
	int rc = 0;

	if (node->type != YAML_MAPPING_NODE) {
		cfg_node_error(x, node, "found %s, expected a mapping",
			       cfg_node_what(node));
		return -1;
	}
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
	     p < node->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
		yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
		const char *key = cfg_scalar(k);
		const struct cfg_field *f =
			key ? find_field(fields, key) : NULL;

		if (!f) {
			char buf[64];

			field_list(fields, want, sizeof(want));
			cfg_node_error(x, k, "unknown field %s, expected %s",
				       found_text(k, buf, sizeof(buf)), want);
			rc = -1;
			continue;
		}
		size_t idx = (size_t)(f - fields.v);
		size_t old = cfg_ctx_push(x, "%s", key);

		if (idx < 32 && seen[idx]) {
			struct cfg_pos first = cfg_node_pos(x, seen[idx]);

			cfg_node_error(x, k,
				       "found a second value (the first is at "
				       "line %u), expected one",
				       first.line);
			rc = -1;
		} else {
			if (idx < 32)
				seen[idx] = k;
			if (cfg_decode_field(x, f, v, dst))
				rc = -1;
		}
		cfg_ctx_pop(x, old);
	}
	for (size_t i = 0; i < fields.n && i < 32; i++) {
		if (!(fields.v[i].flags & CFG_FF_REQUIRED) || seen[i])
			continue;
		size_t old = cfg_ctx_push(x, "%s", fields.v[i].snake);

		cfg_node_error(x, node, "missing, expected a value");
		cfg_ctx_pop(x, old);
		rc = -1;
	}
	return rc;
}

/* ------------------------------------------------------------- loading */

static void load_yaml(struct cfg *c, const char *file, const unsigned char *buf,
		      size_t len)
{
	yaml_parser_t parser;
	struct cfg_ctx x = {.c = c, .file = file};

	if (!yaml_parser_initialize(&parser)) {
		c->oom = true;
		return;
	}
	yaml_parser_set_input_string(&parser, buf, len);
	c->input_bytes += len;
	for (;;) {
		yaml_document_t doc;
		yaml_node_t *root;

		if (!yaml_parser_load(&parser, &doc)) {
			struct cfg_pos pos = {
				file, (uint32_t)parser.problem_mark.line + 1,
				(uint32_t)parser.problem_mark.column + 1};

			if (parser.error == YAML_MEMORY_ERROR)
				c->oom = true;
			else if (parser.context)
				cfg_error_at(c, &pos, NULL, NULL,
					     "invalid YAML: %s %s (line %zu)",
					     parser.problem ? parser.problem
							    : "error",
					     parser.context,
					     parser.context_mark.line + 1);
			else
				cfg_error_at(c, &pos, NULL, NULL,
					     "invalid YAML: %s",
					     parser.problem ? parser.problem
							    : "error");
			break;
		}
		root = yaml_document_get_root_node(&doc);
		if (!root) { /* end of the stream */
			yaml_document_delete(&doc);
			break;
		}
		if (!cfg_node_is_null(root)) {
			x.doc = &doc;
			x.fqn = NULL;
			x.path[0] = 0;
			c->n_documents++;
			cfg_decode_object(&x, root);
		}
		yaml_document_delete(&doc);
		if (c->oom)
			break;
	}
	yaml_parser_delete(&parser);
}

static void load_file(struct cfg *c, const char *path)
{
	struct cfg_pos pos = {path, 0, 0};
	unsigned char *buf = NULL;
	struct stat st;
	size_t n = 0;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	const char *file = cfg_strdup(c, path);

	if (!file)
		goto out;
	pos.file = file;
	if (fd < 0 || fstat(fd, &st)) {
		cfg_error_at(c, &pos, NULL, NULL, "cannot read: %s",
			     strerror(errno));
		goto out;
	}
	if (st.st_size > (off_t)MAX_FILE_BYTES) {
		cfg_error_at(c, &pos, NULL, NULL,
			     "found %lld bytes, expected at most %u",
			     (long long)st.st_size, MAX_FILE_BYTES);
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		c->oom = true;
		goto out;
	}
	while (n < (size_t)st.st_size &&
	       (r = read(fd, buf + n, (size_t)st.st_size - n)) > 0)
		n += (size_t)r;
	c->n_files++;
	cfg_add_source(c, path);
	load_yaml(c, file, buf, n);
out:
	free(buf);
	if (fd >= 0)
		close(fd);
}

static bool is_yaml_name(const char *name)
{
	size_t n = strlen(name);

	return (n > 5 && !strcmp(name + n - 5, ".yaml")) ||
	       (n > 4 && !strcmp(name + n - 4, ".yml"));
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Walk @dir: its YAML files and subdirectories in name order, so a
 * directory loads the same way on every machine. Names starting with '.'
 * are skipped: editors' swap files, and Kubernetes ConfigMap mounts, whose
 * ..data symlink would otherwise load every file twice.
 */
/* A directory being walked, and the one it was reached from. */
struct dir_up {
	dev_t dev;
	ino_t ino;
	const struct dir_up *up;
};

/* Every directory walked so far: one reached again through a symlink
 * (not a loop: a link to a sibling) is walked once. Chains of such links
 * would otherwise double the walk at every level. */
struct dir_seen {
	struct { dev_t dev; ino_t ino; } *v;
	size_t n, cap;
};

static bool seen_before(struct cfg *c, struct dir_seen *w, dev_t dev,
			ino_t ino)
{
	for (size_t i = 0; i < w->n; i++)
		if (w->v[i].dev == dev && w->v[i].ino == ino)
			return true;
	__typeof__(w->v) slot = cfg_push(c, &w->v, &w->n, &w->cap, sizeof *slot);
	if (slot) {
		slot->dev = dev;
		slot->ino = ino;
	}
	return false;
}

static void load_dir(struct cfg *c, const char *dir, int depth,
		     const struct dir_up *up, struct dir_seen *w)
{
	struct cfg_pos pos = {dir, 0, 0};
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	if (depth > MAX_DIR_DEPTH) {
		cfg_error_at(c, &pos, NULL, NULL,
			     "found directories nested more than %d deep, "
			     "expected no symlink loop",
			     MAX_DIR_DEPTH);
		return;
	}
	d = opendir(dir);
	if (!d) {
		cfg_error_at(c, &pos, NULL, NULL, "cannot read: %s",
			     strerror(errno));
		return;
	}
	cfg_add_source(c, dir);
	while ((de = readdir(d))) {
		char **slot;

		if (de->d_name[0] == '.')
			continue;
		slot = cfg_push(c, &names, &n, &cap, sizeof(*slot));
		if (!slot ||
		    !(*slot = cfg_sprintf(c, "%s/%s", dir, de->d_name))) {
			closedir(d);
			return;
		}
	}
	closedir(d);
	if (n) /* an empty directory: names is NULL */
		qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n && !c->oom; i++) {
		struct stat st;

		if (stat(names[i], &st))
			continue; /* dangling symlink: nothing to load */
		if (S_ISDIR(st.st_mode)) {
			/* A symlink back to a directory being walked: two
			 * such links made the walk exponential. */
			const struct dir_up *a = up;
			while (a && (a->dev != st.st_dev || a->ino != st.st_ino))
				a = a->up;
			struct cfg_pos at = {names[i], 0, 0};
			if (a) {
				cfg_error_at(c, &at, NULL, NULL,
					     "found a symlink loop (a directory "
					     "containing itself), expected a "
					     "tree");
				continue;
			}
			if (seen_before(c, w, st.st_dev, st.st_ino)) {
				cfg_warn_at(c, &at, NULL, NULL,
					    "the same directory as one loaded "
					    "already (a symlink): loaded once");
				continue;
			}
			struct dir_up here = {st.st_dev, st.st_ino, up};
			load_dir(c, names[i], depth + 1, &here, w);
		}
		else if (S_ISREG(st.st_mode) && is_yaml_name(names[i]))
			load_file(c, names[i]);
	}
}

static struct cfg *cfg_new(const char *default_ns)
{
	struct cfg *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->default_ns = cfg_strdup(c, default_ns && *default_ns
					      ? default_ns
					      : CFG_DEFAULT_NAMESPACE);
	c->vocab = attr_vocab_create();
	if (!c->vocab)
		c->oom = true;
	return c;
}

/* What follows parsing: the same for files and buffers. */
static struct cfg *cfg_finish(struct cfg *c)
{
	if (c->oom)
		return c;
	cfg_build_vocab(c);
	cfg_resolve(c);
	cfg_compile(c);
	return c;
}

struct cfg *cfg_load(const char *path, const char *default_ns)
{
	struct cfg *c = cfg_new(default_ns);
	struct cfg_pos pos = {path, 0, 0};
	struct stat st;

	if (!c)
		return NULL;
	if (!strncmp(path, "fs://", 5)) {
		/* Mixer's store URL: fs:///abs/dir (or fs://rel/dir) */
		path += 5;
		pos.file = path;
		if (!*path) {
			cfg_error_at(c, &pos, NULL, NULL,
				     "found an empty fs:// URL, expected "
				     "fs:///path/to/dir");
			return c;
		}
	}
	if (stat(path, &st)) {
		cfg_error_at(c, &pos, NULL, NULL, "cannot read: %s",
			     strerror(errno));
		return c;
	}
	if (S_ISDIR(st.st_mode)) {
		struct dir_seen w = {0};
		seen_before(c, &w, st.st_dev, st.st_ino);
		load_dir(c, path, 0,
			 &(struct dir_up){st.st_dev, st.st_ino, NULL}, &w);
	} else {
		load_file(c, path);
	}
	return cfg_finish(c);
}

struct cfg *cfg_load_buffer(const char *name, const char *buf, size_t len,
			    const char *default_ns)
{
	struct cfg *c = cfg_new(default_ns);
	const char *file;

	if (!c)
		return NULL;
	file = cfg_strdup(c, name ? name : "<buffer>");
	if (!file)
		return c;
	c->n_files++;
	load_yaml(c, file, (const unsigned char *)buf, len);
	return cfg_finish(c);
}
