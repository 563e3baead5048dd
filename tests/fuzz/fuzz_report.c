/*
 * fuzz_report -- mixd-report's JSON-lines reader (tools/mixd-report.c,
 * compiled in here with its main() renamed) on arbitrary lines, against a
 * reading of the same line written here.
 *
 * libmixd is replaced by a recorder of the calls the tool makes, so what
 * the tool would send is seen exactly; the dictionary and the custom-name
 * rules are libmixd's (<mixd/attributes.h>, at most 1024 custom names of
 * 1 to 65535 bytes), and a commit can be told the ring is full.
 *
 * For each line (the input split at '\n', as getline() reads it):
 *   - the result is one of sent (1), dropped (0: only when the ring was
 *     full), rejected (-1, with a reason) or blank (2);
 *   - a sent line made exactly one record, committed once, with one
 *     setter per member of the object, in order, each for the member's
 *     attribute (a custom name always the same handle) and with its value:
 *     a string's bytes, the number (an INT64 read from its token is the
 *     double cJSON read, rounded the same way), the boolean, the duration
 *     and timestamp as attr_parse_*() read them, the address inet_pton()
 *     reads, the map's entries (in any order);
 *   - a line this reading finds good (UTF-8, every member's JSON kind fits
 *     its type, its value parses, no name or map key twice, no NUL in a
 *     string, within MIXD_RECORD_MAX) is sent, and one it finds bad is
 *     not; lines whose INT64 values are beyond 2^53, or that have numbers
 *     with a fraction or an exponent, are not judged this way when the
 *     double is an integer (the token decides);
 *     a number JSON does not write ("01", "1.", "-.5": cJSON reads them)
 *     makes a line bad, as does a DOUBLE beyond a double's range;
 *   - a rejected line committed nothing, and aborted what it began.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <mixd/client.h>

int report_main(int argc, char **argv);
#define main report_main
#include "../../tools/mixd-report.c"
#undef main

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- libmixd, recorded -------------------------------------------------- */

#define CUSTOM_BASE 0x1000
#define CUSTOM_MAX 1024
#define CALLS_MAX 4096

enum setter {
	SET_STRING = 1,
	SET_TYPED,
	SET_BYTES,
	SET_INT64,
	SET_DOUBLE,
	SET_BOOL,
	SET_TIMESTAMP,
	SET_DURATION,
	SET_IP,
	SET_MAP,
};

struct call {
	enum setter set;
	mixd_attr a;
	int t; /* SET_TYPED's type */
	int64_t i;
	double d;
	int b;
	size_t at, len; /* bytes in the arena: a string, an address, or a
			   map's entries as (u32 klen, key, u32 vlen, value) */
	size_t n;	/* map entries */
};

struct mixd_record {
	bool open;
	size_t ncalls;
	struct call calls[CALLS_MAX];
};

static struct mixd_record rec;
static char *arena;
static size_t arena_len, arena_cap;
static unsigned commits, begins, aborts;
static unsigned full_every, commit_no;
static bool last_full;

static struct {
	char *name;
	size_t len;
} custom[CUSTOM_MAX];
static unsigned ncustom;

static const struct {
	const char *name;
	int type;
} dict[] = {
#define DICT_(id, name, type) {name, type},
	MIXD_ATTRIBUTE_LIST(DICT_)
#undef DICT_
};

static size_t keep(const void *p, size_t n)
{
	if (arena_len + n > arena_cap) {
		size_t cap = arena_cap ? arena_cap : 4096;
		while (cap < arena_len + n)
			cap *= 2;
		arena = realloc(arena, cap);
		if (!arena)
			abort();
		arena_cap = cap;
	}
	if (n)
		memcpy(arena + arena_len, p, n);
	arena_len += n;
	return arena_len - n;
}

static struct call *call(mixd_record *r, enum setter set, mixd_attr a)
{
	if (r != &rec || !r->open || r->ncalls == CALLS_MAX)
		abort();
	struct call *c = &r->calls[r->ncalls++];
	memset(c, 0, sizeof *c);
	c->set = set;
	c->a = a;
	return c;
}

int mixd_client_open(const char *address,
		     const struct mixd_client_options *opts, mixd_client **out)
{
	abort(); /* main() is not run */
}

void mixd_client_close(mixd_client *c)
{
	abort();
}

int mixd_client_flush(mixd_client *c, int timeout_ms)
{
	abort();
}

void mixd_client_stats(mixd_client *c, struct mixd_client_stats *out)
{
	abort();
}

uint64_t mixd_client_pending(mixd_client *c)
{
	abort();
}

/* --check is main()'s too: the lines read here are reported */
int mixd_checker_open(const char *address,
		      const struct mixd_checker_options *o, mixd_checker **out)
{
	abort();
}

void mixd_checker_close(mixd_checker *k)
{
	abort();
}

const char *mixd_code_name(int code)
{
	abort();
}

mixd_record *mixd_check_begin(mixd_checker *k)
{
	abort();
}

int mixd_check_record(mixd_checker *k, mixd_record *r, const char *dedup_id,
		      const struct mixd_check_quota *q, size_t nq,
		      int timeout_ms, struct mixd_check_answer *out)
{
	abort();
}

int mixd_attr_lookup(const char *name)
{
	for (size_t i = 0; i < sizeof dict / sizeof *dict; i++)
		if (strcmp(dict[i].name, name) == 0)
			return (int)i;
	return -1;
}

int mixd_attr_type(mixd_attr a)
{
	return a < sizeof dict / sizeof *dict ? dict[a].type : 0;
}

int mixd_attr_custom(mixd_client *c, const char *name, mixd_attr *out)
{
	size_t len = name ? strlen(name) : 0;
	if (len == 0 || len > UINT16_MAX)
		return -EINVAL;
	int id = mixd_attr_lookup(name);
	if (id >= 0) {
		*out = (mixd_attr)id;
		return 0;
	}
	for (unsigned i = 0; i < ncustom; i++) {
		if (custom[i].len == len &&
		    !memcmp(custom[i].name, name, len)) {
			*out = (mixd_attr)(CUSTOM_BASE + i);
			return 0;
		}
	}
	if (ncustom == CUSTOM_MAX)
		return -ENOSPC;
	custom[ncustom].name = strdup(name);
	if (!custom[ncustom].name)
		abort();
	custom[ncustom].len = len;
	*out = (mixd_attr)(CUSTOM_BASE + ncustom++);
	return 0;
}

mixd_record *mixd_record_begin(mixd_client *c)
{
	if (rec.open)
		abort(); /* one line, one record */
	rec.open = true;
	rec.ncalls = 0;
	begins++;
	return &rec;
}

void mixd_record_abort(mixd_record *r)
{
	if (r != &rec || !r->open)
		abort();
	r->open = false;
	aborts++;
}

/* Bytes of an attribute's encoding (<mixd/ring.h>) without its value. */
static size_t head_bytes(mixd_attr a)
{
	return a >= CUSTOM_BASE ? 3 + 2 + custom[a - CUSTOM_BASE].len : 3;
}

static size_t encoded(const struct call *c)
{
	switch (c->set) {
	case SET_STRING:
	case SET_TYPED:
	case SET_BYTES:
		return head_bytes(c->a) + 4 + c->len;
	case SET_BOOL:
		return head_bytes(c->a) + 1;
	case SET_IP:
		return head_bytes(c->a) + 1 + c->len;
	case SET_MAP:
		return head_bytes(c->a) + 4 + c->len;
	default:
		return head_bytes(c->a) + 8;
	}
}

int mixd_record_commit(mixd_record *r)
{
	if (r != &rec || !r->open)
		abort();
	r->open = false;
	commits++;
	size_t bytes = 0;
	for (size_t i = 0; i < r->ncalls; i++)
		bytes += encoded(&r->calls[i]);
	if (bytes > MIXD_RECORD_MAX)
		return -EMSGSIZE;
	last_full = full_every && ++commit_no % full_every == 0;
	return last_full ? -ENOBUFS : 0;
}

void mixd_set_string(mixd_record *r, mixd_attr a, const char *s, size_t len)
{
	struct call *c = call(r, SET_STRING, a);
	c->at = keep(s, len);
	c->len = len;
}

void mixd_set_typed_string(mixd_record *r, mixd_attr a, enum mixd_type t,
			   const char *s, size_t len)
{
	struct call *c = call(r, SET_TYPED, a);
	c->t = t;
	c->at = keep(s, len);
	c->len = len;
}

void mixd_set_bytes(mixd_record *r, mixd_attr a, const void *p, size_t len)
{
	struct call *c = call(r, SET_BYTES, a);
	c->at = keep(p, len);
	c->len = len;
}

void mixd_set_int64(mixd_record *r, mixd_attr a, int64_t v)
{
	call(r, SET_INT64, a)->i = v;
}

void mixd_set_double(mixd_record *r, mixd_attr a, double v)
{
	call(r, SET_DOUBLE, a)->d = v;
}

void mixd_set_bool(mixd_record *r, mixd_attr a, int v)
{
	call(r, SET_BOOL, a)->b = v;
}

void mixd_set_timestamp(mixd_record *r, mixd_attr a, int64_t ns)
{
	call(r, SET_TIMESTAMP, a)->i = ns;
}

void mixd_set_duration(mixd_record *r, mixd_attr a, int64_t ns)
{
	call(r, SET_DURATION, a)->i = ns;
}

void mixd_set_ip(mixd_record *r, mixd_attr a, const void *addr, size_t len)
{
	struct call *c = call(r, SET_IP, a);
	c->at = keep(addr, len);
	c->len = len;
}

void mixd_set_string_map(mixd_record *r, mixd_attr a, const struct mixd_kv *kv,
			 size_t n)
{
	struct call *c = call(r, SET_MAP, a);
	c->at = arena_len;
	c->n = n;
	for (size_t i = 0; i < n; i++) {
		uint32_t kl = (uint32_t)kv[i].key_len,
			 vl = (uint32_t)kv[i].value_len;
		keep(&kl, 4);
		keep(kv[i].key, kl);
		keep(&vl, 4);
		keep(kv[i].value, vl);
	}
	c->len = arena_len - c->at;
}

/* ---- the reading of a line written here --------------------------------- */

enum verdict { GOOD, BAD, UNSURE };

static enum verdict worst(enum verdict a, enum verdict b)
{
	return a == BAD || b == BAD	    ? BAD
	       : a == UNSURE || b == UNSURE ? UNSURE
					    : GOOD;
}

/* A "\u0000" escape: a 'u' after an odd run of backslashes, then 0000. */
static bool has_nul_escape(const char *s)
{
	for (const char *p = strstr(s, "u0000"); p;
	     p = strstr(p + 1, "u0000")) {
		size_t bs = 0;
		while (p - bs > s && p[-1 - (ptrdiff_t)bs] == '\\')
			bs++;
		if (bs & 1)
			return true;
	}
	return false;
}

static bool same_bytes(const struct call *c, const char *s)
{
	size_t n = strlen(s);
	/* (no string yet: arena may still be NULL) */
	return c->len == n && (!n || !memcmp(arena + c->at, s, n));
}

/* The map's entries as the recorder keeps them, from the JSON object. */
/* The map the tool set holds the object's entries, in any order (a map's
 * order means nothing; the object has no key twice). */
static bool same_map(const struct call *c, const cJSON *o)
{
	size_t n = 0;
	for (const cJSON *e = o->child; e; e = e->next, n++) {
		bool found = false;
		for (size_t at = c->at; at < c->at + c->len && !found;) {
			uint32_t kl, vl;
			memcpy(&kl, arena + at, 4);
			const char *k = arena + at + 4;
			at += 4 + kl;
			memcpy(&vl, arena + at, 4);
			found = kl == strlen(e->string) &&
				!memcmp(k, e->string, kl) &&
				vl == strlen(e->valuestring) &&
				!memcmp(arena + at + 4, e->valuestring, vl);
			at += 4 + vl;
		}
		if (!found)
			return false;
	}
	return n == c->n;
}

/* Is [p, e) a number as RFC 8259 writes one? A grammar of its own here,
 * not the tool's. */
static bool json_number(const char *p, const char *e)
{
	int state = 0; /* 0 sign, 1 int, 2 int digits, 3 '.', 4 frac, 5 'e',
			  6 exp sign, 7 exp digits */
	for (bool zero = false; p < e; p++) {
		char ch = *p;
		bool dig = ch >= '0' && ch <= '9';
		if ((state == 0 && ch == '-') || (state == 5 && (ch == '+' || ch == '-')))
			state++;
		else if ((state == 0 || state == 1) && dig)
			state = 2, zero = ch == '0';
		else if (state == 2 && dig && !zero)
			;
		else if (state == 2 && ch == '.')
			state = 3;
		else if ((state == 3 || state == 4) && dig)
			state = 4;
		else if ((state == 2 || state == 4) && (ch == 'e' || ch == 'E'))
			state = 5;
		else if ((state >= 5) && dig)
			state = 7;
		else
			return false;
	}
	return state == 2 || state == 4 || state == 7;
}

/* The next number token of a line from *@p on (outside strings, starting
 * with a sign or a digit: "true" and "false" are no numbers): its start,
 * *@n bytes long, *@p past it; NULL when there is none. */
static const char *next_number(const char *s, const char **p, size_t *n)
{
	for (const char *q = *p; *q; q++) {
		if (*q == '"') {
			for (q++; *q && *q != '"'; q++)
				if (*q == '\\' && q[1])
					q++;
			if (!*q)
				break;
			continue;
		}
		if (!(*q == '-' || (*q >= '0' && *q <= '9')) ||
		    (q > s && strchr("0123456789.eE+-", q[-1])))
			continue;
		*n = strspn(q, "0123456789.eE+-");
		*p = q + *n;
		return q;
	}
	return NULL;
}

/* Has @s a number token of @n bytes at @t for which @is() holds? */
static bool any_number(const char *s, bool (*is)(const char *t, size_t n))
{
	const char *p = s, *t;
	size_t n;
	while ((t = next_number(s, &p, &n)))
		if (is(t, n))
			return true;
	return false;
}

static bool not_json(const char *t, size_t n)
{
	return !json_number(t, t + n);
}

/*
 * Is a number outside strings not JSON (RFC 8259): "01", "1.", "-.5"?
 * cJSON reads those; the tool refuses them. In a line this reading would
 * send, every number is a member's value, so such a line is bad.
 */
static bool has_bad_number(const char *s)
{
	return any_number(s, not_json);
}

static bool fraction_or_exponent(const char *t, size_t n)
{
	return memchr(t, '.', n) || memchr(t, 'e', n) || memchr(t, 'E', n);
}

/* Has @s a number token with a fraction or an exponent? */
static bool has_written_number(const char *s)
{
	return any_number(s, fraction_or_exponent);
}

/* Is @d an integer that an INT64 member surely takes? (@written: the line
 * has a number with a fraction or an exponent, whose text, not its
 * double, says whether it is an integer: 1.0000000000000001 is not.) */
static enum verdict int_verdict(double d, bool written)
{
	double a = d < 0 ? -d : d;
	if (a > 9007199254740992.0)
		return UNSURE; /* the token decides */
	if ((double)(int64_t)d != d)
		return BAD; /* no integer's text reads as a fraction */
	return written ? UNSURE : GOOD;
}


/* The line judged has a number with a fraction or an exponent. */
static bool written_numbers;
/* Its one number token, when it has exactly one (NULL otherwise): the
 * value of the one number member, judged exactly from its text. */
static const char *only_num;
static size_t only_num_len;

/*
 * The exact int64 that number token [@t, @t + @n) is, by a reading of its
 * own: its significant digits D and a power of ten E (the exponent less
 * the fraction's digits), an integer when E >= 0 or D's last -E digits are
 * zeros, within int64 when the digits say so. GOOD with *@v set, or BAD.
 */
static enum verdict exact_int64(const char *t, size_t n, int64_t *v)
{
	const char *e = t + n;
	bool neg = t < e && *t == '-';
	char d[128];
	size_t nd = 0;
	long pow10 = 0;
	bool dot = false, overflow = false;
	const char *p = t + neg;
	for (; p < e && ((*p >= '0' && *p <= '9') || *p == '.'); p++) {
		if (*p == '.') {
			dot = true;
			continue;
		}
		if (dot)
			pow10--;
		if (nd == 0 && *p == '0')
			continue; /* a leading zero: no digit of D */
		if (nd < sizeof d)
			d[nd++] = *p;
		else if (*p != '0')
			overflow = true; /* past 128 significant digits */
		else
			pow10++; /* a zero not kept: one more power */
	}
	if (p < e) { /* an exponent: its digits, saturated */
		p++;
		bool eneg = *p == '-';
		if (*p == '-' || *p == '+')
			p++;
		long x = 0;
		for (; p < e; p++)
			if (x < 10000000)
				x = x * 10 + (*p - '0');
		pow10 += eneg ? -x : x;
	}
	size_t lead = 0;
	while (lead < nd && d[lead] == '0')
		lead++;
	if (lead == nd) { /* zero */
		*v = 0;
		return GOOD;
	}
	if (overflow)
		return BAD;
	/* D x 10^pow10 with D = d[lead..nd) */
	while (pow10 < 0 && nd > lead && d[nd - 1] == '0')
		nd--, pow10++;
	if (pow10 < 0)
		return BAD; /* a fraction */
	if (nd - lead + (size_t)pow10 > 19)
		return BAD; /* 20 digits or more: past int64 */
	uint64_t u = 0;
	for (size_t i = lead; i < nd; i++)
		u = u * 10 + (uint64_t)(d[i] - '0');
	for (long i = 0; i < pow10; i++)
		u *= 10;
	if (u > (uint64_t)INT64_MAX + (neg ? 1 : 0))
		return BAD;
	*v = neg ? (int64_t)(0 - u) : (int64_t)u;
	return GOOD;
}

/* Check one member against the setter the tool called (when @c), and
 * judge it. */
static enum verdict member(const cJSON *m, const struct call *c,
			   mixd_attr handle, size_t *bytes)
{
	const char *name = m->string;
	int id = mixd_attr_lookup(name);
	int t = id >= 0 ? dict[id].type : 0;
	int64_t v;
	uint8_t ip[16];

	if (c && c->a != handle)
		abort();
	if (t == 0) { /* custom: the JSON kind decides */
		if (cJSON_IsString(m))
			t = MIXD_T_STRING;
		else if (cJSON_IsNumber(m))
			t = MIXD_T_DOUBLE; /* or INT64: checked below */
		else if (cJSON_IsBool(m))
			t = MIXD_T_BOOL;
		else if (cJSON_IsObject(m))
			t = MIXD_T_STRING_MAP;
		else
			return BAD;
		*bytes += 2 + strlen(name);
	}
	*bytes += 3;
	switch (t) {
	case MIXD_T_STRING:
	case MIXD_T_EMAIL:
	case MIXD_T_URI:
	case MIXD_T_DNS_NAME:
	case MIXD_T_BYTES:
		if (!cJSON_IsString(m))
			return BAD;
		*bytes += 4 + strlen(m->valuestring);
		if (c && (c->set != (t == MIXD_T_STRING	 ? SET_STRING
				     : t == MIXD_T_BYTES ? SET_BYTES
							 : SET_TYPED) ||
			  (c->set == SET_TYPED && c->t != t) ||
			  !same_bytes(c, m->valuestring)))
			abort();
		return GOOD;
	case MIXD_T_INT64:
		if (!cJSON_IsNumber(m))
			return BAD;
		*bytes += 8;
		if (c &&
		    (c->set != SET_INT64 || (double)c->i != m->valuedouble))
			abort();
		if (only_num) { /* its text, exactly */
			int64_t want;
			enum verdict ev = exact_int64(only_num, only_num_len,
						      &want);
			if (c && (ev != GOOD || c->i != want))
				abort();
			return ev;
		}
		return int_verdict(m->valuedouble, written_numbers);
	case MIXD_T_DOUBLE:
		if (!cJSON_IsNumber(m))
			return BAD;
		*bytes += 8;
		if (c && !(c->set == SET_DOUBLE && c->d == m->valuedouble) &&
		    !(id < 0 && c->set == SET_INT64 &&
		      (double)c->i == m->valuedouble))
			abort();
		if (!(m->valuedouble - m->valuedouble == 0))
			return id < 0 ? UNSURE : BAD; /* 1e400: no double */
		if (id < 0) {
			/* an integer token must fit an int64: beyond 2^53
			 * only the token tells */
			double a = m->valuedouble < 0 ? -m->valuedouble
						      : m->valuedouble;
			if (a > 9007199254740992.0)
				return UNSURE;
		}
		return GOOD;
	case MIXD_T_BOOL:
		if (!cJSON_IsBool(m))
			return BAD;
		*bytes += 1;
		if (c && (c->set != SET_BOOL || !c->b != !cJSON_IsTrue(m)))
			abort();
		return GOOD;
	case MIXD_T_DURATION:
		if (!cJSON_IsString(m) ||
		    attr_parse_duration(m->valuestring, strlen(m->valuestring),
					&v) != 0)
			return BAD;
		*bytes += 8;
		if (c && (c->set != SET_DURATION || c->i != v))
			abort();
		return GOOD;
	case MIXD_T_TIMESTAMP:
		if (!cJSON_IsString(m) ||
		    attr_parse_timestamp(m->valuestring, strlen(m->valuestring),
					 &v) != 0)
			return BAD;
		*bytes += 8;
		if (c && (c->set != SET_TIMESTAMP || c->i != v))
			abort();
		return GOOD;
	case MIXD_T_IP: {
		size_t n = 0;
		if (!cJSON_IsString(m))
			return BAD;
		if (inet_pton(AF_INET, m->valuestring, ip) == 1)
			n = 4;
		else if (inet_pton(AF_INET6, m->valuestring, ip) == 1)
			n = 16;
		else
			return BAD;
		*bytes += 1 + n;
		if (c && (c->set != SET_IP || c->len != n ||
			  memcmp(arena + c->at, ip, n)))
			abort();
		return GOOD;
	}
	case MIXD_T_STRING_MAP:
		if (!cJSON_IsObject(m))
			return BAD;
		*bytes += 4;
		for (const cJSON *e = m->child; e; e = e->next) {
			if (!cJSON_IsString(e))
				return BAD;
			for (const cJSON *o = m->child; o != e; o = o->next)
				if (!strcmp(o->string, e->string))
					return BAD; /* a key twice */
			*bytes +=
				8 + strlen(e->string) + strlen(e->valuestring);
		}
		if (c && (c->set != SET_MAP || !same_map(c, m)))
			abort();
		return GOOD;
	default:
		return BAD; /* a type the tool cannot send */
	}
}

/* The reading of @line (@len bytes, NUL-terminated) and, when @sent, the
 * check of the record the tool made. */
static enum verdict judge(const char *line, size_t len, bool sent)
{
	if (memchr(line, 0, len) || !attr_utf8_check(line, len))
		return BAD;
	written_numbers = has_written_number(line);
	{
		const char *p = line, *t;
		size_t n, count = 0;
		only_num = NULL;
		while ((t = next_number(line, &p, &n)))
			if (count++ == 0) {
				only_num = t;
				only_num_len = n;
			}
		if (count != 1 || !json_number(only_num, only_num + only_num_len))
			only_num = NULL;
	}
	cJSON *j = cJSON_ParseWithOpts(line, NULL, 1);
	if (!j)
		return BAD;
	enum verdict v = GOOD;
	size_t bytes = 0, n = 0, unasked = 0;
	if (!cJSON_IsObject(j) || has_nul_escape(line))
		v = BAD;
	else if (has_bad_number(line))
		v = BAD;
	for (const cJSON *m = j->child; m && v != BAD; m = m->next, n++) {
		mixd_attr handle = 0;
		int id = mixd_attr_lookup(m->string);
		if (id >= 0) {
			handle = (mixd_attr)id;
		} else {
			size_t nl = strlen(m->string);
			if (nl == 0) {
				v = BAD;
				break;
			}
			unsigned i;
			for (i = 0; i < ncustom; i++)
				if (custom[i].len == nl &&
				    !memcmp(custom[i].name, m->string, nl))
					break;
			if (i == ncustom) {
				/* the tool stopped before it asked: it would
				 * get a handle while there is room */
				if (sent)
					abort();
				if (++unasked + ncustom > CUSTOM_MAX - 8)
					v = worst(v, UNSURE);
			}
			handle = (mixd_attr)(CUSTOM_BASE + i);
		}
		for (const cJSON *o = j->child; o != m; o = o->next)
			if (!strcmp(o->string, m->string))
				v = BAD; /* twice */
		if (sent && n >= rec.ncalls)
			abort();
		v = worst(v, member(m, sent ? &rec.calls[n] : NULL, handle,
				    &bytes));
	}
	if (v != BAD && bytes > MIXD_RECORD_MAX)
		v = BAD;
	if (sent && (v == BAD || n != rec.ncalls))
		abort();
	cJSON_Delete(j);
	return v;
}

static struct line_ctx x;
static char *buf;
static size_t buf_cap;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	/* Fresh names: this input's, not the ones before it. */
	names_free();
	memset(names, 0, sizeof names);
	names_used = 0;
	for (unsigned i = 0; i < ncustom; i++)
		free(custom[i].name);
	ncustom = 0;
	full_every = data[0] % 4; /* 0: the ring is never full */
	commit_no = 0;

	const uint8_t *p = data + 1, *end = data + size;
	while (p < end) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
		if (len + 1 > buf_cap) {
			buf_cap = len + 1;
			buf = realloc(buf, buf_cap);
			if (!buf)
				abort();
		}
		memcpy(buf, p, len);
		buf[len] = 0;
		p += len;

		/* the line without its end, as send_line() cuts it */
		size_t l = len;
		while (l && (buf[l - 1] == '\n' || buf[l - 1] == '\r'))
			l--;
		unsigned c0 = commits, a0 = aborts, b0 = begins;
		arena_len = 0;
		rec.ncalls = 0;
		last_full = false;
		x.why[0] = 0;
		int r = send_line(&x, buf, len);
		if (rec.open)
			abort(); /* a record left begun */
		switch (r) {
		case 2: /* blank */
			for (size_t i = 0; i < l; i++)
				if (buf[i] != ' ' && buf[i] != '\t')
					abort();
			if (begins != b0)
				abort();
			break;
		case 1:
		case 0:
			if (commits != c0 + 1 || aborts != a0 ||
			    last_full != (r == 0))
				abort();
			judge(buf, l, true);
			break;
		case -1:
			if (!x.why[0] ||
			    commits - c0 + aborts - a0 != begins - b0)
				abort();
			if (!strcmp(x.why, "cannot read the numbers"))
				abort(); /* "cannot happen" */
			if (judge(buf, l, false) == GOOD)
				abort(); /* a good line refused */
			break;
		default:
			abort();
		}
	}
	return 0;
}
