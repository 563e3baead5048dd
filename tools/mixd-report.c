/*
 * mixd-report -- send attribute records to mixd from JSON lines.
 *
 * Each input line is one JSON object, attribute name -> value, typed by the
 * built-in dictionary (<mixd/attributes.h>); names outside it are sent
 * inline with a type taken from the JSON value. A bad line is reported as
 * FILE:LINE: reason and skipped; every other line is sent. A line is bad
 * whether this tool or the client library (at commit) finds it so; only a
 * full ring is a drop. See usage().
 *
 * Why the number text is scanned separately: cJSON keeps a number only as a
 * double, which cannot tell 3 from 3.0 (a custom attribute's INT64 vs
 * DOUBLE) and loses int64 values beyond 2^53. The raw number tokens of a
 * line, in document order, are matched to cJSON's number items in the same
 * order.
 *
 * With --check the records go to mixd's policy socket as check requests
 * instead, one at a time, and each answer is printed as a JSON line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h> /* isinf: a macro, no libm */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <mixd/client.h>
#include <mixd/ring.h> /* MIXD_RECORD_MAX */

#include "attr/attr.h"

#define EXIT_BAD_LINES 1
#define EXIT_USAGE 2

struct options {
	const char *address;
	bool check;			/* --check */
	struct mixd_checker_options checker;
	int check_timeout_ms;
	struct mixd_check_quota quotas[MIXD_CHECK_QUOTAS];
	size_t n_quotas;
	struct mixd_client_options client;
	int flush_timeout_ms;
	unsigned long repeat;
	double rate; /* records per second; 0: as fast as possible */
	unsigned long sync_every; /* records between flushes; 0: never */
	bool sync_set;
	/* Without --sync-every: bytes written between flushes, half a
	 * ring, so that no record, however large, finds it full. */
	uint32_t sync_bytes;
};

/* ---- name cache --------------------------------------------------------- */

/*
 * Attribute name -> (handle, declared type). mixd_attr_lookup() is not for
 * per-record use and a custom name must get one handle, not one per line
 * (the client allows 1024), so each name is resolved once.
 */
struct name_entry {
	char *name;
	mixd_attr handle;
	int type; /* enum mixd_type of a dictionary name; 0 for a custom one */
};

#define NAME_SLOTS 4096 /* > 1024 custom names + the dictionary */

static struct name_entry names[NAME_SLOTS];
static unsigned names_used;

static uint32_t hash_name(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

/* Resolve @name (@check: for a check, which carries dictionary names
 * only); returns the entry or NULL with *@why set. */
static const struct name_entry *resolve(mixd_client *c, bool check,
					const char *name, const char **why)
{
	uint32_t i = hash_name(name) & (NAME_SLOTS - 1);
	while (names[i].name) {
		if (strcmp(names[i].name, name) == 0)
			return &names[i];
		i = (i + 1) & (NAME_SLOTS - 1);
	}
	if (names_used >= NAME_SLOTS / 2) {
		*why = "too many distinct attribute names";
		return NULL;
	}
	struct name_entry e = {0};
	int id = mixd_attr_lookup(name);
	if (id >= 0) {
		e.handle = (mixd_attr)id;
		e.type = mixd_attr_type(e.handle);
	} else if (check) {
		*why = "not in mixd's dictionary (a check carries dictionary "
		       "attributes only)";
		return NULL;
	} else {
		int rc = mixd_attr_custom(c, name, &e.handle);
		if (rc != 0) {
			*why = rc == -ENOSPC
				       ? "too many custom attribute names "
					 "(the client allows 1024)"
				       : "invalid attribute name";
			return NULL;
		}
		e.type = 0;
	}
	e.name = strdup(name);
	if (!e.name) {
		*why = "out of memory";
		return NULL;
	}
	names[i] = e;
	names_used++;
	return &names[i];
}

static void names_free(void)
{
	for (unsigned i = 0; i < NAME_SLOTS; i++)
		free(names[i].name);
}

/* ---- number tokens ------------------------------------------------------ */

struct span {
	const char *p;
	size_t len;
};

struct spans {
	struct span *v;
	size_t n, cap;
};

static bool number_char(char c)
{
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' ||
	       c == 'e' || c == 'E';
}

/*
 * The number tokens of a line cJSON has already accepted, in document
 * order. Outside strings a number is the only token that starts with '-' or
 * a digit (true/false/null contain 'e' but never start a token with it).
 */
static int scan_numbers(const char *s, struct spans *out)
{
	out->n = 0;
	for (const char *p = s; *p;) {
		if (*p == '"') {
			for (p++; *p && *p != '"'; p++)
				if (*p == '\\' && p[1])
					p++;
			if (*p)
				p++;
			continue;
		}
		if (*p == '-' || (*p >= '0' && *p <= '9')) {
			const char *start = p;
			while (number_char(*p))
				p++;
			if (out->n == out->cap) {
				size_t cap = out->cap ? out->cap * 2 : 64;
				struct span *v =
					realloc(out->v, cap * sizeof(*v));
				if (!v)
					return -1;
				out->v = v;
				out->cap = cap;
			}
			out->v[out->n++] =
				(struct span){start, (size_t)(p - start)};
			continue;
		}
		p++;
	}
	return 0;
}

/*
 * The first \u0000 escape inside a string of a line cJSON has accepted, or
 * NULL. cJSON decodes it into a NUL and keeps no length, so the rest of the
 * string (a value, a name or a map entry) would be lost without a word: a
 * line holding one is refused instead.
 */
static const char *find_nul_escape(const char *s)
{
	for (const char *p = s; *p; p++) {
		if (*p != '"')
			continue;
		for (p++; *p && *p != '"'; p++) {
			if (*p != '\\')
				continue;
			if (strncmp(p, "\\u0000", 6) == 0)
				return p;
			if (p[1])
				p++;
		}
		if (!*p)
			break;
	}
	return NULL;
}

static size_t count_numbers(const cJSON *j)
{
	if (cJSON_IsNumber(j))
		return 1;
	size_t n = 0;
	for (const cJSON *c = j->child; c; c = c->next)
		n += count_numbers(c);
	return n;
}

/* Is the token an integer in JSON's syntax (no fraction, no exponent)? */
static bool integer_syntax(const struct span *t)
{
	for (size_t i = 0; i < t->len; i++)
		if (t->p[i] == '.' || t->p[i] == 'e' || t->p[i] == 'E')
			return false;
	return true;
}

/* Whether the token is a number as JSON writes one (RFC 8259): cJSON
 * also takes "01", "1." and ".5". */
static bool json_number_syntax(const struct span *t)
{
	const char *p = t->p, *e = t->p + t->len;
	if (p < e && *p == '-')
		p++;
	if (p < e && *p == '0')
		p++;
	else if (p < e && *p >= '1' && *p <= '9')
		while (p < e && *p >= '0' && *p <= '9')
			p++;
	else
		return false;
	if (p < e && *p == '.') {
		const char *d = ++p;
		while (p < e && *p >= '0' && *p <= '9')
			p++;
		if (p == d)
			return false;
	}
	if (p < e && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < e && (*p == '+' || *p == '-'))
			p++;
		const char *d = p;
		while (p < e && *p >= '0' && *p <= '9')
			p++;
		if (p == d)
			return false;
	}
	return p == e;
}

/*
 * A number token written with a fraction or an exponent, as the decimal
 * digits of the integer it is: 0, or -1 when it is not one (*@digits
 * empty for a zero). Decided from the text, not the double, which cannot
 * tell 9007199254740993.0 from ...992 nor 1.0000000000000001 from 1.
 */
static int token_integer_digits(const struct span *t, char *digits,
				size_t cap)
{
	const char *p = t->p, *e = t->p + t->len;
	char d[64]; /* the significant digits, leading zeros dropped */
	size_t nd = 0;
	long nint = 0; /* digits before the point (negative: zeros after it) */
	bool point = false, lost = false;
	long exp = 0;
	if (p < e && *p == '-')
		p++;
	for (; p < e && ((*p >= '0' && *p <= '9') || *p == '.'); p++) {
		if (*p == '.') {
			point = true;
			continue;
		}
		if (nd == 0 && *p == '0') { /* a leading zero */
			if (point)
				nint--; /* 0.05: the point moves right */
			continue;
		}
		if (nd == sizeof d)
			lost = *p != '0' || lost; /* beyond any int64 anyway */
		else
			d[nd++] = *p;
		if (!point)
			nint++;
	}
	if (p < e && (*p == 'e' || *p == 'E')) {
		exp = strtol(p + 1, NULL, 10); /* json_number_syntax() checked */
		/* Far beyond any int64 either way; and whole below cannot
		 * overflow (LONG_MAX itself comes without ERANGE). */
		if (exp > 100000)
			exp = 100000;
		else if (exp < -100000)
			exp = -100000;
	}
	while (nd && d[nd - 1] == '0') /* 0.d x 10^(nint + exp) keeps its */
		nd--;			/* value without them */
	if (nd == 0) {
		digits[0] = '\0';
		return 0; /* zero, however written */
	}
	/* The value has nint + exp digits before its point; an integer has
	 * no significant digit after them. */
	long whole = (long)nint + exp;
	if (whole >= (long)cap)
		return 1; /* beyond any int64, integer or not */
	if (lost || whole < (long)nd)
		return -1;
	memcpy(digits, d, nd);
	memset(digits + nd, '0', (size_t)whole - nd);
	digits[whole] = '\0';
	return 0;
}

/* The token as an int64; 0, or -1 with *@why set. A number written with a
 * fraction or exponent is accepted when its value is an exact integer
 * ("1e3", "2.50e1"), since it is one: decided from the text. */
static int token_int64(const struct span *t, int64_t *out, const char **why)
{
	char buf[32];
	const char *text = buf;
	if (integer_syntax(t)) {
		if (t->len >= sizeof(buf)) {
			*why = "integer out of the int64 range";
			return -1;
		}
		memcpy(buf, t->p, t->len);
		buf[t->len] = '\0';
	} else {
		/* The digits after a '-' kept for the token's sign. */
		int rc = token_integer_digits(t, buf + 1, sizeof buf - 1);
		if (rc != 0) {
			*why = rc < 0 ? "expected an integer"
				      : "integer out of the int64 range";
			return -1;
		}
		buf[0] = '-';
		text = !buf[1] ? "0" : t->p[0] == '-' ? buf : buf + 1;
	}
	errno = 0;
	long long v = strtoll(text, NULL, 10);
	if (errno == ERANGE) {
		*why = "integer out of the int64 range";
		return -1;
	}
	*out = v;
	return 0;
}

/* ---- one line ----------------------------------------------------------- */

struct counters {
	uint64_t sent, dropped, rejected;
};

struct line_ctx {
	mixd_client *c;	 /* NULL with --check */
	mixd_checker *k; /* --check */
	struct spans nums;
	size_t next_num;    /* index into nums of the current member */
	struct mixd_kv *kv; /* string map scratch */
	size_t kv_cap;
	mixd_attr *seen; /* attributes of this line, for duplicates */
	size_t nseen, seen_cap;
	char why[256]; /* reason a line was rejected */
	const struct options *o;
	const char *file; /* --check: where the line is, for its answer */
	unsigned long lineno;
	uint64_t checks; /* --check: requests made, for dedup ids */
};

static const char *json_kind(const cJSON *j)
{
	if (cJSON_IsString(j))
		return "a string";
	if (cJSON_IsNumber(j))
		return "a number";
	if (cJSON_IsBool(j))
		return "a boolean";
	if (cJSON_IsNull(j))
		return "null";
	if (cJSON_IsArray(j))
		return "an array";
	return "an object";
}

static const char *type_name(int t)
{
	static const char *const n[MIXD_T_COUNT] = {
		[MIXD_T_STRING] = "STRING",
		[MIXD_T_INT64] = "INT64",
		[MIXD_T_DOUBLE] = "DOUBLE",
		[MIXD_T_BOOL] = "BOOL",
		[MIXD_T_TIMESTAMP] = "TIMESTAMP",
		[MIXD_T_DURATION] = "DURATION",
		[MIXD_T_IP] = "IP_ADDRESS",
		[MIXD_T_BYTES] = "BYTES",
		[MIXD_T_STRING_MAP] = "STRING_MAP",
		[MIXD_T_EMAIL] = "EMAIL_ADDRESS",
		[MIXD_T_URI] = "URI",
		[MIXD_T_DNS_NAME] = "DNS_NAME",
	};
	return t > 0 && t < MIXD_T_COUNT && n[t] ? n[t] : "?";
}

static int kv_cmp(const void *a, const void *b)
{
	const struct mixd_kv *x = a, *y = b;
	return strcmp(x->key, y->key);
}

static int set_string_map(struct line_ctx *x, mixd_record *r, mixd_attr a,
			  const cJSON *obj, const char *name)
{
	size_t n = 0;
	for (const cJSON *e = obj->child; e; e = e->next) {
		if (!cJSON_IsString(e)) {
			snprintf(x->why, sizeof(x->why),
				 "\"%s\": map value \"%s\" is %s, expected a "
				 "string",
				 name, e->string, json_kind(e));
			return -1;
		}
		if (n == x->kv_cap) {
			size_t cap = x->kv_cap ? x->kv_cap * 2 : 16;
			struct mixd_kv *kv = realloc(x->kv, cap * sizeof(*kv));
			if (!kv) {
				snprintf(x->why, sizeof(x->why),
					 "out of memory");
				return -1;
			}
			x->kv = kv;
			x->kv_cap = cap;
		}
		x->kv[n++] = (struct mixd_kv){e->string, strlen(e->string),
					      e->valuestring,
					      strlen(e->valuestring)};
	}
	/* A key twice is refused, as a name twice is: JSON readers differ on
	 * which value wins. Sorted (a map's order means nothing), so that a
	 * map of many keys costs n log n. */
	if (n > 1) /* (x->kv is NULL before the first map of two) */
		qsort(x->kv, n, sizeof *x->kv, kv_cmp);
	for (size_t i = 1; i < n; i++)
		if (!kv_cmp(&x->kv[i - 1], &x->kv[i])) {
			snprintf(x->why, sizeof(x->why),
				 "\"%s\": key \"%.64s\" appears twice", name,
				 x->kv[i].key);
			return -1;
		}
	mixd_set_string_map(r, a, x->kv, n);
	return 0;
}

static int wrong_type(struct line_ctx *x, const char *name, int t,
		      const cJSON *v, const char *expected)
{
	snprintf(x->why, sizeof(x->why), "\"%s\" (%s): expected %s, got %s",
		 name, type_name(t), expected, json_kind(v));
	return -1;
}

/* Append member @v named @name to @r; 0, or -1 with x->why set. */
static int set_member(struct line_ctx *x, mixd_record *r, const char *name,
		      const cJSON *v)
{
	const char *why = NULL;
	const struct name_entry *e = resolve(x->c, x->k != NULL, name, &why);
	const struct span *num = NULL;

	/* every member consumes its own number tokens, even when rejected */
	if (cJSON_IsNumber(v))
		num = &x->nums.v[x->next_num];
	x->next_num += count_numbers(v);
	if (num && !json_number_syntax(num)) {
		snprintf(x->why, sizeof(x->why), "\"%s\": %.*s is not a JSON number",
			 name, (int)num->len, num->p);
		return -1;
	}
	if (!e) {
		snprintf(x->why, sizeof(x->why), "\"%s\": %s", name, why);
		return -1;
	}
	for (size_t i = 0; i < x->nseen; i++)
		if (x->seen[i] == e->handle) {
			snprintf(x->why, sizeof(x->why), "\"%s\" appears twice",
				 name);
			return -1;
		}
	x->seen[x->nseen++] = e->handle; /* build_record sized seen[] */

	int t = e->type;
	if (t == 0) { /* custom: the JSON value decides */
		if (cJSON_IsString(v))
			t = MIXD_T_STRING;
		else if (cJSON_IsNumber(v))
			t = integer_syntax(num) ? MIXD_T_INT64 : MIXD_T_DOUBLE;
		else if (cJSON_IsBool(v))
			t = MIXD_T_BOOL;
		else if (cJSON_IsObject(v))
			t = MIXD_T_STRING_MAP;
		else {
			snprintf(x->why, sizeof(x->why),
				 "\"%s\": %s cannot be sent (custom "
				 "attributes take strings, numbers, "
				 "booleans or objects of strings)",
				 name, json_kind(v));
			return -1;
		}
	}

	int64_t i64;
	switch (t) {
	case MIXD_T_STRING:
	case MIXD_T_EMAIL:
	case MIXD_T_URI:
	case MIXD_T_DNS_NAME:
	case MIXD_T_BYTES:
		if (!cJSON_IsString(v))
			return wrong_type(x, name, t, v, "a string");
		if (t == MIXD_T_STRING)
			mixd_set_string(r, e->handle, v->valuestring,
					strlen(v->valuestring));
		else if (t == MIXD_T_BYTES)
			mixd_set_bytes(r, e->handle, v->valuestring,
				       strlen(v->valuestring));
		else
			mixd_set_typed_string(r, e->handle, (enum mixd_type)t,
					      v->valuestring,
					      strlen(v->valuestring));
		break;
	case MIXD_T_INT64:
		if (!cJSON_IsNumber(v))
			return wrong_type(x, name, t, v, "an integer");
		if (token_int64(num, &i64, &why) != 0) {
			snprintf(x->why, sizeof(x->why),
				 "\"%s\" (INT64): %s, "
				 "got %.*s",
				 name, why, (int)num->len, num->p);
			return -1;
		}
		mixd_set_int64(r, e->handle, i64);
		break;
	case MIXD_T_DOUBLE:
		if (!cJSON_IsNumber(v))
			return wrong_type(x, name, t, v, "a number");
		if (!(v->valuedouble - v->valuedouble == 0)) { /* not finite */
			snprintf(x->why, sizeof(x->why),
				 "\"%s\" (DOUBLE): %.*s is out of a double's "
				 "range",
				 name, (int)num->len, num->p);
			return -1;
		}
		mixd_set_double(r, e->handle, v->valuedouble);
		break;
	case MIXD_T_BOOL:
		if (!cJSON_IsBool(v))
			return wrong_type(x, name, t, v, "true or false");
		mixd_set_bool(r, e->handle, cJSON_IsTrue(v));
		break;
	case MIXD_T_DURATION:
		if (!cJSON_IsString(v))
			return wrong_type(x, name, t, v,
					  "a duration string like \"15ms\"");
		if (attr_parse_duration(v->valuestring, strlen(v->valuestring),
					&i64) != 0) {
			snprintf(x->why, sizeof(x->why),
				 "\"%s\" (DURATION): \"%s\" is not a duration "
				 "like \"15ms\" or \"1m30s\" within "
				 "+-2562047h (int64 nanoseconds)",
				 name, v->valuestring);
			return -1;
		}
		mixd_set_duration(r, e->handle, i64);
		break;
	case MIXD_T_TIMESTAMP:
		if (!cJSON_IsString(v))
			return wrong_type(x, name, t, v,
					  "an RFC 3339 timestamp string");
		if (attr_parse_timestamp(v->valuestring, strlen(v->valuestring),
					 &i64) != 0) {
			snprintf(
				x->why, sizeof(x->why),
				"\"%s\" (TIMESTAMP): \"%s\" is not an RFC 3339 "
				"timestamp (as Go reads one) from 1677 to 2262 "
				"(int64 nanoseconds)",
				name, v->valuestring);
			return -1;
		}
		mixd_set_timestamp(r, e->handle, i64);
		break;
	case MIXD_T_IP: {
		uint8_t ip[16];
		if (!cJSON_IsString(v))
			return wrong_type(x, name, t, v,
					  "an IP address string");
		if (inet_pton(AF_INET, v->valuestring, ip) == 1) {
			mixd_set_ip(r, e->handle, ip, 4);
		} else if (inet_pton(AF_INET6, v->valuestring, ip) == 1) {
			mixd_set_ip(r, e->handle, ip, 16);
		} else {
			snprintf(x->why, sizeof(x->why),
				 "\"%s\" (IP_ADDRESS): \"%s\" is not an IPv4 "
				 "or IPv6 address",
				 name, v->valuestring);
			return -1;
		}
		break;
	}
	case MIXD_T_STRING_MAP:
		if (!cJSON_IsObject(v))
			return wrong_type(x, name, t, v,
					  "an object of strings");
		if (set_string_map(x, r, e->handle, v, name) != 0)
			return -1;
		break;
	default:
		snprintf(x->why, sizeof(x->why),
			 "\"%s\": the dictionary declares type %d, which this "
			 "tool cannot send",
			 name, t);
		return -1;
	}
	return 0;
}

/* Build the record of one parsed object; 0, or -1 with x->why set and
 * nothing committed. */
static int build_record(struct line_ctx *x, const cJSON *obj, mixd_record *r)
{
	size_t n = 0;
	for (const cJSON *m = obj->child; m; m = m->next)
		n++;
	if (n > x->seen_cap) {
		mixd_attr *s = realloc(x->seen, n * sizeof(*s));
		if (!s) {
			snprintf(x->why, sizeof(x->why), "out of memory");
			return -1;
		}
		x->seen = s;
		x->seen_cap = n;
	}
	x->nseen = 0;
	x->next_num = 0;
	for (const cJSON *m = obj->child; m; m = m->next)
		if (set_member(x, r, m->string, m) != 0)
			return -1;
	return 0;
}

/*
 * Commit @r; 1 if sent, 0 if dropped, -1 with x->why set if the client
 * refused the record. Only a full ring, or no ring at all (the client could
 * not make one: it counts that with full rings), is a drop: the record was
 * fine and a later one may get through. Anything else is the line's own
 * doing and happens again on every pass.
 */
static int commit_line(struct line_ctx *x, mixd_record *r)
{
	int rc = mixd_record_commit(r);
	if (rc == 0)
		return 1;
	if (rc == -ENOBUFS || rc == -ENOMEM)
		return 0;
	if (rc == -EMSGSIZE)
		snprintf(x->why, sizeof(x->why),
			 "the record is too large: over %u bytes encoded "
			 "(MIXD_RECORD_MAX)",
			 (unsigned)MIXD_RECORD_MAX);
	else
		snprintf(x->why, sizeof(x->why),
			 "the client refused the record: %s", strerror(-rc));
	return -1;
}

/*
 * Send @r as a check and print the answer as one JSON line; 1 if mixd
 * answered, 0 if not (the fail policy's answer is printed, marked), -1
 * with x->why set if the request could not be sent.
 */
static int check_line(struct line_ctx *x, mixd_record *r)
{
	const struct options *o = x->o;
	char dedup[64];
	snprintf(dedup, sizeof(dedup), "mixd-report-%ld-%" PRIu64,
		 (long)getpid(), ++x->checks);
	struct mixd_check_answer a;
	int rc = mixd_check_record(x->k, r, dedup, o->quotas, o->n_quotas,
				   o->check_timeout_ms, &a);
	if (rc == -EINVAL || rc == -EMSGSIZE) {
		snprintf(x->why, sizeof(x->why), "%s",
			 rc == -EMSGSIZE ? "the record is too large"
					 : "the client refused the record");
		return -1;
	}
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "file", x->file);
	cJSON_AddNumberToObject(j, "line", (double)x->lineno);
	cJSON_AddBoolToObject(j, "answered", a.from_mixd);
	cJSON_AddBoolToObject(j, "cached", a.cached);
	cJSON_AddNumberToObject(j, "code", a.code);
	cJSON_AddStringToObject(j, "status", mixd_code_name(a.code));
	cJSON_AddStringToObject(j, "message", a.message);
	cJSON_AddNumberToObject(j, "valid_duration_ns",
				(double)a.valid_duration_ns);
	cJSON_AddNumberToObject(j, "valid_use_count", a.valid_use_count);
	if (a.n_quotas) {
		cJSON *q = cJSON_AddObjectToObject(j, "quotas");
		for (size_t i = 0; i < a.n_quotas; i++) {
			cJSON *g = cJSON_AddObjectToObject(q, o->quotas[i].name);
			cJSON_AddNumberToObject(g, "granted",
						(double)a.quotas[i].granted);
			cJSON_AddNumberToObject(
				g, "valid_duration_ns",
				(double)a.quotas[i].valid_duration_ns);
		}
	}
	char *text = cJSON_PrintUnformatted(j);
	if (text)
		printf("%s\n", text);
	free(text);
	cJSON_Delete(j);
	return rc == 0;
}

/*
 * Parse one line (NUL-terminated, @len bytes before the NUL) into a record
 * and commit it. Returns 1 if sent, 0 if dropped by the client, -1 if the
 * line was rejected (x->why set), 2 for an empty line.
 */
static int send_line(struct line_ctx *x, char *line, size_t len)
{
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		line[--len] = '\0';
	size_t k = 0;
	while (k < len && (line[k] == ' ' || line[k] == '\t'))
		k++;
	if (k == len)
		return 2;
	if (strlen(line) != len) {
		snprintf(x->why, sizeof(x->why), "NUL byte in line");
		return -1;
	}
	/* JSON text is UTF-8 (RFC 8259 8.1); cJSON passes any bytes through,
	 * and mixd would take the record only to refuse its strings. */
	size_t good = attr_utf8_prefix(line, len);
	if (good != len) {
		snprintf(x->why, sizeof(x->why), "invalid UTF-8 at column %zu",
			 good + 1);
		return -1;
	}

	const char *end = NULL;
	cJSON *j = cJSON_ParseWithOpts(line, &end, 1);
	if (!j) {
		const char *at = end ? end : cJSON_GetErrorPtr();
		long col = at && at >= line ? (long)(at - line) + 1 : 0;
		snprintf(x->why, sizeof(x->why), "bad JSON at column %ld", col);
		return -1;
	}
	int ret = -1;
	mixd_record *r = NULL;
	if (!cJSON_IsObject(j)) {
		snprintf(x->why, sizeof(x->why), "not a JSON object but %s",
			 json_kind(j));
		goto out;
	}
	const char *nul = find_nul_escape(line);
	if (nul) {
		snprintf(x->why, sizeof(x->why),
			 "\\u0000 in a string at column %ld: NUL characters "
			 "cannot be sent (the JSON parser ends strings there)",
			 (long)(nul - line) + 1);
		goto out;
	}
	if (scan_numbers(line, &x->nums) != 0 ||
	    x->nums.n != count_numbers(j)) {
		/* cannot happen for a line cJSON accepted; refuse rather than
		 * pair numbers with the wrong tokens */
		snprintf(x->why, sizeof(x->why), "cannot read the numbers");
		goto out;
	}
	r = x->k ? mixd_check_begin(x->k) : mixd_record_begin(x->c);
	if (build_record(x, j, r) != 0) {
		mixd_record_abort(r);
		goto out;
	}
	ret = x->k ? check_line(x, r) : commit_line(x, r);
out:
	cJSON_Delete(j);
	return ret;
}

/* ---- pacing ------------------------------------------------------------- */

static struct timespec t_start;

/* SIGINT or SIGTERM: stop reading, flush, say what was sent. */
static volatile sig_atomic_t stop_signal;
/* The input being read (-1: none), and /dev/null to put in its place. */
static volatile sig_atomic_t input_fd = -1;
static int null_fd = -1;

static void on_stop(int sig)
{
	int saved = errno;
	stop_signal = sig;
	/* A read that blocks is interrupted (no SA_RESTART); one about to
	 * begin, after the loop looked at the flag, reads /dev/null's end
	 * instead of waiting for input that may never come. */
	if (input_fd >= 0 && null_fd >= 0)
		dup2(null_fd, input_fd);
	errno = saved;
}

static void pace(const struct options *o, uint64_t nth)
{
	if (o->rate <= 0)
		return;
	double at = (double)nth / o->rate;
	if (!(at < 1e9)) /* a rate of 1e-300 records a second: not a time_t */
		at = 1e9;
	struct timespec due = t_start;
	time_t whole = (time_t)at;
	due.tv_sec += whole;
	due.tv_nsec += (long)((at - (double)whole) * 1e9);
	if (due.tv_nsec >= 1000000000L) {
		due.tv_sec++;
		due.tv_nsec -= 1000000000L;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) ==
		       EINTR &&
	       !stop_signal)
		;
}

/* ---- input -------------------------------------------------------------- */

/* A line of JSON longer than this cannot be a record: one is at most 64
 * KiB encoded, and JSON's escapes take at most six bytes a byte. */
#define LINE_MAX_BYTES (1u << 20)

enum line_rc { LINE_EOF = 0, LINE_OK = 1, LINE_TOO_LONG = 2, LINE_ERROR = -1 };

/*
 * The next line of @in into *@buf (grown as needed, to at most
 * LINE_MAX_BYTES, a newline and a NUL), its length, newline included, in
 * *@len. LINE_TOO_LONG: the line was longer, and the rest of it has been read and
 * dropped. LINE_ERROR: a read error, or no memory, errno set. A signal
 * interrupting a read of a pipe or terminal also ends with LINE_ERROR
 * (EINTR), so that the caller can see stop_signal.
 */
static enum line_rc read_line(FILE *in, char **buf, size_t *cap, size_t *len)
{
	size_t n = 0;
	bool over = false;
	int ch;
	while ((ch = getc_unlocked(in)) != EOF) {
		/* The limit is on what precedes the newline, with one or
		 * without (a last line). */
		if (ch != '\n' && n == LINE_MAX_BYTES)
			over = true;
		if (!over && n + 2 > *cap) { /* room for ch and a NUL */
			size_t c = *cap ? *cap * 2 : 4096;
			if (c > LINE_MAX_BYTES + 2)
				c = LINE_MAX_BYTES + 2;
			char *b = realloc(*buf, c);
			if (!b) {
				errno = ENOMEM;
				return LINE_ERROR;
			}
			*buf = b;
			*cap = c;
		}
		if (!over)
			(*buf)[n++] = (char)ch;
		if (ch == '\n')
			break;
	}
	if (ch == EOF && ferror(in))
		return LINE_ERROR;
	if (over)
		return LINE_TOO_LONG;
	if (n == 0)
		return LINE_EOF;
	(*buf)[n] = '\0';
	*len = n;
	return LINE_OK;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: mixd-report --address unix:///PATH [OPTION]... "
		"[FILE]...\n"
		"Send attribute records to mixd, one per line of JSON.\n"
		"\n"
		"Each line of each FILE (standard input when there is none, or "
		"for \"-\")\n"
		"is a JSON object mapping attribute names to values, e.g.\n"
		"  {\"destination.service\": \"web\", \"response.code\": 200,\n"
		"   \"response.duration\": \"15ms\", \"source.ip\": "
		"\"10.0.0.1\"}\n"
		"\n"
		"Names in mixd's dictionary take the dictionary's type:\n"
		"  STRING (and EMAIL_ADDRESS, URI, DNS_NAME)  a JSON string\n"
		"  INT64        a JSON integer (1e3 and 2.50e1 are, 1.5 is "
		"not)\n"
		"  DOUBLE       a JSON number\n"
		"  BOOL         true or false\n"
		"  DURATION     a Go duration string: \"15ms\", \"1m30s\", "
		"\"0.5s\"\n"
		"  TIMESTAMP    an RFC 3339 string: "
		"\"2019-05-01T10:00:00.5Z\"\n"
		"  IP_ADDRESS   \"10.0.0.1\" or \"fd00::1\"\n"
		"  STRING_MAP   an object whose values are strings\n"
		"Other names are sent inline, typed by their JSON value: "
		"string STRING,\n"
		"integer INT64, other number DOUBLE, boolean BOOL, object "
		"STRING_MAP.\n"
		"\n"
		"A line that is not a JSON object, is not JSON (invalid UTF-8 "
		"included), is\n"
		"longer than 1 MiB, names an attribute or a map key twice, "
		"has a value of\n"
		"the wrong type, has \\u0000 in a string, or makes a record "
		"too large for\n"
		"mixd is reported on standard error as FILE:LINE: reason, "
		"skipped and\n"
		"counted as rejected. A record is dropped only when the ring "
		"to mixd is\n"
		"full. Empty lines are ignored. SIGINT or SIGTERM stops the "
		"reading; what\n"
		"was read is flushed and the summary printed.\n"
		"With --transport socket, records mixd had not read when it "
		"stopped or\n"
		"died are lost with no count: prefer shm (the default).\n"
		"\n"
		"Options:\n"
		"  -a, --address ADDR      mixd's producer socket, "
		"unix:///PATH or /PATH\n"
		"  -t, --transport KIND    shm (shared-memory ring, default) "
		"or socket\n"
		"      --ring-bytes N      ring size, a power of two (default: "
		"the client's)\n"
		"      --flush-timeout MS  wait at most MS for mixd to take "
		"every record at\n"
		"                          the end (default 10000)\n"
		"      --sync-every N      wait for mixd to take what was sent "
		"every N\n"
		"                          records, so a full ring does not "
		"drop them;\n"
		"                          0 never waits (load tests; default: "
		"whenever\n"
		"                          half the ring has been written)\n"
		"      --repeat N          send the input N times (default 1)\n"
		"      --rate R            send at most R records per second\n"
		"      --check             send each record as a check request "
		"to mixd's\n"
		"                          policy socket (--address is then "
		"that socket)\n"
		"                          and print each answer as a JSON "
		"line: file, line,\n"
		"                          answered, cached, code, status, "
		"message,\n"
		"                          valid_duration_ns, valid_use_count,\n"
		"                          quotas {NAME: {granted, "
		"valid_duration_ns}}\n"
		"      --quota NAME[:AMOUNT]  with --check, ask for AMOUNT "
		"(default 1) of\n"
		"                          quota NAME; up to 16 times\n"
		"      --best-effort       grant what is left of a quota rather "
		"than nothing\n"
		"      --check-timeout MS  wait at most MS for each answer "
		"(default 1000)\n"
		"      --no-cache          ask mixd every time (default: an "
		"answer mixd\n"
		"                          said may be reused answers the "
		"same request\n"
		"                          again, \"cached\": true)\n"
		"      --fail-closed       when mixd does not answer, answer "
		"UNAVAILABLE\n"
		"                          (default: OK, as Mixer's proxies "
		"failed open)\n"
		"  -h, --help              show this help and exit\n"
		"      --version           print the version and exit\n"
		"\n"
		"Prints \"mixd-report: sent N records, dropped D, rejected R "
		"lines\";\n"
		"N counts what reached mixd (after a flush timeout, stderr "
		"says how many\n"
		"never did: lost).\n"
		"Exit status: 0 all lines sent; 1 some lines rejected or "
		"records dropped;\n"
		"2 usage error, unreadable input, no client, the final "
		"flush timed out,\n"
		"or a signal stopped the reading.\n"
		"With --check: \"mixd-report: checked N records: A answered, "
		"U unanswered,\n"
		"rejected R lines\" on standard error; exit 0 when mixd "
		"answered every\n"
		"check (whatever it answered), 1 some lines rejected, 2 some "
		"not answered.\n");
}

static int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	if (!*s || *s == '-')
		return -1;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum {
		O_RING = 256,
		O_FLUSH,
		O_SYNC,
		O_REPEAT,
		O_RATE,
		O_CHECK,
		O_QUOTA,
		O_BEST_EFFORT,
		O_CHECK_TIMEOUT,
		O_FAIL_CLOSED,
		O_NO_CACHE
	};
	static const struct option longopts[] = {
		{"address", required_argument, NULL, 'a'},
		{"transport", required_argument, NULL, 't'},
		{"ring-bytes", required_argument, NULL, O_RING},
		{"flush-timeout", required_argument, NULL, O_FLUSH},
		{"sync-every", required_argument, NULL, O_SYNC},
		{"repeat", required_argument, NULL, O_REPEAT},
		{"rate", required_argument, NULL, O_RATE},
		{"check", no_argument, NULL, O_CHECK},
		{"quota", required_argument, NULL, O_QUOTA},
		{"best-effort", no_argument, NULL, O_BEST_EFFORT},
		{"check-timeout", required_argument, NULL, O_CHECK_TIMEOUT},
		{"fail-closed", no_argument, NULL, O_FAIL_CLOSED},
		{"no-cache", no_argument, NULL, O_NO_CACHE},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	unsigned long v;
	char *end;
	int c;

	o->flush_timeout_ms = 10000;
	o->check_timeout_ms = 1000;
	o->repeat = 1;
	bool best_effort = false;
	while ((c = getopt_long(argc, argv, "a:t:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'a':
			o->address = optarg;
			break;
		case 't':
			if (strcmp(optarg, "shm") == 0)
				o->client.transport = MIXD_TRANSPORT_SHM;
			else if (strcmp(optarg, "socket") == 0)
				o->client.transport = MIXD_TRANSPORT_SOCKET;
			else {
				fprintf(stderr,
					"mixd-report: --transport: "
					"\"%s\" is neither shm nor "
					"socket\n",
					optarg);
				return -1;
			}
			break;
		case O_RING:
			if (parse_ulong(optarg, 256ul << 20, &v) != 0 ||
			    v < 256ul << 10 || (v & (v - 1)) != 0) {
				fprintf(stderr,
					"mixd-report: --ring-bytes: "
					"\"%s\" is not a power of two "
					"from 262144 (256 KiB) to "
					"268435456 (256 MiB)\n",
					optarg);
				return -1;
			}
			o->client.ring_bytes = (uint32_t)v;
			break;
		case O_FLUSH:
			if (parse_ulong(optarg, INT32_MAX, &v) != 0 || !v) {
				fprintf(stderr,
					"mixd-report: --flush-timeout: "
					"\"%s\" is not a positive number "
					"of milliseconds\n",
					optarg);
				return -1;
			}
			o->flush_timeout_ms = (int)v;
			break;
		case O_SYNC:
			if (parse_ulong(optarg, ULONG_MAX, &o->sync_every) !=
			    0) {
				fprintf(stderr,
					"mixd-report: --sync-every: "
					"\"%s\" is not a count\n",
					optarg);
				return -1;
			}
			o->sync_set = true;
			break;
		case O_REPEAT:
			if (parse_ulong(optarg, ULONG_MAX, &o->repeat) != 0 ||
			    o->repeat == 0) {
				fprintf(stderr,
					"mixd-report: --repeat: \"%s\" "
					"is not a positive count\n",
					optarg);
				return -1;
			}
			break;
		case O_RATE:
			errno = 0;
			o->rate = strtod(optarg, &end);
			if (errno || *end || !(o->rate > 0) || isinf(o->rate)) {
				fprintf(stderr,
					"mixd-report: --rate: \"%s\" "
					"is not a positive number of "
					"records per second\n",
					optarg);
				return -1;
			}
			break;
		case O_CHECK:
			o->check = true;
			break;
		case O_QUOTA: {
			char *colon = strrchr(optarg, ':');
			long long amount = 1;
			if (colon) {
				errno = 0;
				amount = strtoll(colon + 1, &end, 10);
				if (errno || *end || colon[1] == 0) {
					fprintf(stderr,
						"mixd-report: --quota: \"%s\": "
						"want NAME or NAME:AMOUNT\n",
						optarg);
					return -1;
				}
				*colon = 0;
			}
			for (size_t i = 0; i < o->n_quotas; i++)
				if (!strcmp(o->quotas[i].name, optarg)) {
					fprintf(stderr,
						"mixd-report: --quota %s: "
						"given twice\n",
						optarg);
					return -1;
				}
			if (!*optarg || o->n_quotas == MIXD_CHECK_QUOTAS) {
				fprintf(stderr,
					"mixd-report: --quota: %s\n",
					*optarg ? "at most 16 quotas"
						: "an empty name");
				return -1;
			}
			o->quotas[o->n_quotas++] = (struct mixd_check_quota){
				optarg, (int64_t)amount, 0};
			break;
		}
		case O_BEST_EFFORT:
			best_effort = true;
			break;
		case O_FAIL_CLOSED:
			o->checker.fail_policy = MIXD_FAIL_CLOSE;
			break;
		case O_NO_CACHE:
			o->checker.cache_entries = -1;
			break;
		case O_CHECK_TIMEOUT:
			if (parse_ulong(optarg, INT32_MAX, &v) != 0 || !v) {
				fprintf(stderr,
					"mixd-report: --check-timeout: "
					"\"%s\" is not a positive number "
					"of milliseconds\n",
					optarg);
				return -1;
			}
			o->check_timeout_ms = (int)v;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("%s %s\n", "mixd-report", MIXD_VERSION);
			exit(0);
		default:
			return -1;
		}
	}
	for (size_t i = 0; i < o->n_quotas; i++)
		o->quotas[i].best_effort = best_effort;
	if (!o->check && (o->n_quotas || best_effort ||
			  o->checker.fail_policy != MIXD_FAIL_OPEN ||
			  o->checker.cache_entries)) {
		fprintf(stderr, "mixd-report: --quota, --best-effort, "
				"--fail-closed and --no-cache are for "
				"--check\n");
		return -1;
	}
	if (!o->address) {
		fprintf(stderr, "mixd-report: --address is required\n");
		return -1;
	}
	if (!o->sync_set) {
		uint32_t ring =
			o->client.ring_bytes ? o->client.ring_bytes : 1u << 20;
		o->sync_bytes = ring / 2; /* + a record < 64 KiB < ring / 2 */
	}
	return 0;
}

/* Open input @path ("-" is stdin). For stdin read more than once the bytes
 * are spooled to a temporary file first, since a pipe cannot be re-read. */
static FILE *open_input(const char *path, bool again, FILE **spool)
{
	if (strcmp(path, "-") != 0)
		return fopen(path, "r");
	if (!again)
		return stdin;
	if (!*spool) {
		FILE *t = tmpfile();
		if (!t)
			return NULL;
		char buf[65536];
		size_t n;
		while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
			if (fwrite(buf, 1, n, t) != n) {
				fclose(t);
				return NULL;
			}
		if (ferror(stdin)) {
			fclose(t);
			return NULL;
		}
		*spool = t;
	}
	rewind(*spool);
	return *spool;
}

/* Time to wait for mixd to take what was sent: every --sync-every
 * records, else once half a ring has been written since the last wait
 * (*@synced: the client's byte count then). */
static bool sync_due(const struct options *o, mixd_client *c, uint64_t records,
		     uint64_t *synced)
{
	if (o->sync_every)
		return records % o->sync_every == 0;
	if (!o->sync_bytes)
		return false;
	struct mixd_client_stats st;
	mixd_client_stats(c, &st);
	if (st.bytes - *synced < o->sync_bytes)
		return false;
	*synced = st.bytes;
	return true;
}

int main(int argc, char **argv)
{
	static const char *const stdin_only[] = {"-"};
	struct options o = {0};
	struct counters n = {0};
	struct line_ctx x = {0};
	FILE *spool = NULL;
	char *line = NULL;
	size_t line_cap = 0;
	bool io_error = false, syncing = true;
	uint64_t synced_bytes = 0;
	int rc;

	if (parse_args(argc, argv, &o) != 0) {
		fprintf(stderr, "Try 'mixd-report --help'.\n");
		return EXIT_USAGE;
	}
	const char *const *files = stdin_only;
	size_t nfiles = 1;
	if (optind < argc) {
		files = (const char *const *)argv + optind;
		nfiles = (size_t)(argc - optind);
	}
	/* stdin named twice would be read once and then be empty */
	bool stdin_again = o.repeat > 1;
	for (size_t i = 0, seen = 0; i < nfiles; i++)
		if (strcmp(files[i], "-") == 0 && ++seen > 1)
			stdin_again = true;

	x.o = &o;
	rc = o.check ? mixd_checker_open(o.address, &o.checker, &x.k)
		     : mixd_client_open(o.address, &o.client, &x.c);
	if (rc != 0) {
		fprintf(stderr,
			"mixd-report: cannot open a %s for %s: %s\n",
			o.check ? "checker" : "client", o.address,
			strerror(-rc));
		return EXIT_USAGE;
	}
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	/* No SA_RESTART: a read of a pipe that waits returns, and the loop
	 * sees the flag. */
	FILE *devnull = fopen("/dev/null", "re"); /* kept to the end */
	null_fd = devnull ? fileno(devnull) : -1;
	struct sigaction sa = {.sa_handler = on_stop};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	for (unsigned long pass = 0; pass < o.repeat; pass++) {
		for (size_t f = 0; f < nfiles; f++) {
			const char *name = strcmp(files[f], "-") == 0
						   ? "<stdin>"
						   : files[f];
			FILE *in = open_input(files[f], stdin_again, &spool);
			if (!in) {
				if (pass == 0)
					fprintf(stderr, "mixd-report: %s: %s\n",
						name, strerror(errno));
				io_error = true;
				continue;
			}
			size_t len;
			unsigned long lineno = 0;
			enum line_rc lr = LINE_EOF;
			x.file = name;
			input_fd = fileno(in);
			while (!stop_signal &&
			       (lr = read_line(in, &line, &line_cap, &len)) !=
				       LINE_EOF) {
				if (lr == LINE_ERROR)
					break;
				lineno++;
				x.lineno = lineno;
				if (lr == LINE_TOO_LONG) {
					if (pass == 0) {
						fprintf(stderr,
							"%s:%lu: line longer "
							"than %u bytes\n",
							name, lineno,
							LINE_MAX_BYTES);
						n.rejected++;
					}
					continue;
				}
				pace(&o, n.sent + n.dropped);
				int r = send_line(&x, line, len);
				if (r == 1)
					n.sent++;
				else if (r == 0)
					n.dropped++;
				else if (r < 0 && pass == 0) {
					/* the same line is bad on every
					 * pass: report and count it once */
					fprintf(stderr, "%s:%lu: %s\n", name,
						lineno, x.why);
					n.rejected++;
				}
				if (r >= 0 && r <= 1 && syncing && x.c &&
				    sync_due(&o, x.c, n.sent + n.dropped,
					     &synced_bytes) &&
				    mixd_client_flush(
					    x.c, o.flush_timeout_ms) != 0) {
					fprintf(stderr,
						"mixd-report: mixd took no "
						"records for %d ms; sending "
						"on without waiting\n",
						o.flush_timeout_ms);
					syncing = false;
				}
			}
			if (!stop_signal && lr == LINE_ERROR) {
				fprintf(stderr,
					"mixd-report: %s: read error: "
					"%s\n",
					name, strerror(errno));
				io_error = true;
			}
			input_fd = -1;
			if (in != stdin && in != spool)
				fclose(in);
			if (stop_signal)
				break;
		}
		if (stop_signal)
			break;
	}
	if (stop_signal) {
		fprintf(stderr,
			"mixd-report: %s: stopped reading; sending what was "
			"read\n",
			strsignal(stop_signal));
		io_error = true; /* not all the input was sent: exit 2 */
	}

	int status = 0;
	if (o.check) {
		mixd_checker_close(x.k);
		/* stdout holds the answers alone */
		fprintf(stderr,
			"mixd-report: checked %" PRIu64 " records: %" PRIu64
			" answered, %" PRIu64 " unanswered, rejected %" PRIu64
			" lines\n",
			n.sent + n.dropped, n.sent, n.dropped, n.rejected);
		status = io_error || n.dropped ? EXIT_USAGE
			 : n.rejected	       ? EXIT_BAD_LINES
					       : 0;
		if (fflush(stdout) != 0 || ferror(stdout)) {
			fprintf(stderr, "mixd-report: writing the answers: "
					"%s\n",
				strerror(errno));
			status = EXIT_USAGE;
		}
		goto done;
	}
	rc = mixd_client_flush(x.c, o.flush_timeout_ms);
	if (rc != 0) {
		/* What never reached mixd is lost when this process exits:
		 * not sent. (A ring mixd holds, it drains later.) */
		uint64_t lost = mixd_client_pending(x.c);
		if (lost > n.sent)
			lost = n.sent;
		n.sent -= lost;
		if (lost)
			fprintf(stderr,
				"mixd-report: flush timed out after %d ms: "
				"%" PRIu64 " records never reached mixd at "
				"%s and are lost (is it running?)\n",
				o.flush_timeout_ms, lost, o.address);
		else
			fprintf(stderr,
				"mixd-report: flush timed out after %d ms: "
				"mixd at %s holds the records but has not "
				"taken them all yet (is it stopped?)\n",
				o.flush_timeout_ms, o.address);
		status = EXIT_USAGE;
	}
	mixd_client_close(x.c);
	printf("mixd-report: sent %" PRIu64 " records, dropped %" PRIu64
	       ", rejected %" PRIu64 " lines\n",
	       n.sent, n.dropped, n.rejected);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "mixd-report: writing the summary: %s\n",
			strerror(errno));
		status = EXIT_USAGE;
	}
	if (io_error)
		status = EXIT_USAGE;
	else if (status == 0 && (n.dropped || n.rejected))
		status = EXIT_BAD_LINES;

done:
	null_fd = -1;
	if (devnull)
		fclose(devnull);
	if (spool)
		fclose(spool);
	free(line);
	free(x.nums.v);
	free(x.kv);
	free(x.seen);
	names_free();
	return status;
}
