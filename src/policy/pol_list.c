/*
 * pol_list.c -- listchecker's lists: a sorted array of strings looked up
 * by binary search, IP networks grouped by prefix length, or compiled
 * regexps tried in turn.
 *
 * Sorted arrays rather than a hash set: a provider's body is untrusted,
 * and a sort has no worst case a crafted body can choose, where a hash
 * table's chains do; a lookup is a score of comparisons.
 *
 * Networks: every one is kept as 16 bytes and a prefix length in that
 * space, an IPv4 network as its IPv4-mapped form (/8 -> /104). Go's
 * IPNet.Contains compares IPv4 networks with IPv4 (or IPv4-mapped)
 * addresses only and IPv6 networks with the other addresses only -- "::/0"
 * does not hold 10.0.0.1 -- so a network also records which of the two it
 * is. Sorted by (family, prefix, address), the networks of one family and
 * prefix length are a run, and a lookup masks the probe once per run and
 * searches it: as many searches as distinct prefix lengths, not one
 * comparison per entry as in Mixer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "attr/attr.h"
#include "expr/expr.h"
#include "policy/pol_list.h"

struct str_ent {
	const char *s;
	size_t len;
};

struct ip_net {
	uint8_t a[16]; /* masked to bits */
	uint8_t bits;  /* 0..128, in the 16-byte space */
	uint8_t v4;    /* an IPv4 network: holds IPv4 addresses only */
};

/* A run of networks of one family and prefix length. */
struct ip_run {
	size_t first, n;
	uint8_t bits, v4;
};

struct pol_list {
	enum pol_list_type type;
	size_t size;
	char *arena; /* the strings' bytes */
	struct str_ent *strs;
	size_t n_strs;
	struct ip_net *nets;
	size_t n_nets;
	struct ip_run *runs;
	size_t n_runs;
	regex_t *res;
	size_t n_res;
};

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static __attribute__((format(printf, 3, 4))) void
fail(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !why_len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
}

/* An entry as a reason shows it: a provider's bytes may be anything and
 * the reason is one line of a log, so other than printable ASCII is
 * escaped and a long entry cut. Printable entries read as Mixer printed
 * them. */
static const char *quote(char *buf, size_t cap, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (o + 8 > cap) { /* room for "\xNN..." and the NUL */
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (c >= 0x20 && c < 0x7f) {
			buf[o++] = (char)c;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	buf[o] = 0;
	return buf;
}

static inline unsigned char ascii_upper(unsigned char c)
{
	return c >= 'a' && c <= 'z' ? (unsigned char)(c - 32) : c;
}

/* -------------------------------------------------------------- strings */

static int str_cmp(const struct str_ent *e, const char *s, size_t len,
		   bool fold)
{
	size_t n = e->len < len ? e->len : len;

	for (size_t i = 0; i < n; i++) {
		unsigned char a = (unsigned char)e->s[i];
		unsigned char b = (unsigned char)s[i];
		if (fold)
			b = ascii_upper(b);
		if (a != b)
			return a < b ? -1 : 1;
	}
	return e->len < len ? -1 : e->len > len;
}

static int str_sort_cmp(const void *x, const void *y)
{
	const struct str_ent *b = y;
	return str_cmp(x, b->s, b->len, false);
}

static bool str_find(const struct pol_list *l, const char *s, size_t len)
{
	bool fold = l->type == POL_LIST_CASE_INSENSITIVE_STRINGS;
	size_t lo = 0, hi = l->n_strs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = str_cmp(&l->strs[mid], s, len, fold);
		if (!c)
			return true;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* Each non-empty line of @body, then each override (@skip_empty: the
 * empty ones skipped), to @fn; stops at the first non-zero return. */
static int each_entry(const char *body, size_t len,
		      const char *const *overrides, size_t n_overrides,
		      bool skip_empty,
		      int (*fn)(void *, const char *, size_t, bool), void *arg)
{
	const char *p = body, *end = len ? body + len : body; /* NULL + 0 */
	int rc;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;
		if (e > p && (rc = fn(arg, p, (size_t)(e - p), false)))
			return rc;
		p = e + 1;
	}
	for (size_t i = 0; i < n_overrides; i++) {
		size_t n = strlen(overrides[i]);
		if ((n || !skip_empty) && (rc = fn(arg, overrides[i], n, true)))
			return rc;
	}
	return 0;
}

struct counter {
	size_t n, bytes;
};

static int count_one(void *arg, const char *s, size_t len, bool ovr)
{
	struct counter *c = arg;
	c->n++;
	c->bytes += len;
	return 0;
}

struct str_fill {
	struct pol_list *l;
	size_t used;
};

static int fill_one(void *arg, const char *s, size_t len, bool ovr)
{
	struct str_fill *f = arg;
	char *d = f->l->arena + f->used;

	if (f->l->type == POL_LIST_CASE_INSENSITIVE_STRINGS)
		for (size_t i = 0; i < len; i++)
			d[i] = (char)ascii_upper((unsigned char)s[i]);
	else
		memcpy(d, s, len);
	f->l->strs[f->l->n_strs++] = (struct str_ent){d, len};
	f->used += len;
	return 0;
}

static int build_strings(struct pol_list *l, const char *body, size_t len,
			 const char *const *ovr, size_t n_ovr)
{
	struct counter c = {0, 0};
	each_entry(body, len, ovr, n_ovr, true, count_one, &c);
	if (c.n > POL_LIST_MAX_ENTRIES)
		return -E2BIG;
	l->arena = malloc(c.bytes ? c.bytes : 1);
	l->strs = malloc((c.n ? c.n : 1) * sizeof *l->strs);
	if (!l->arena || !l->strs)
		return -ENOMEM;
	struct str_fill f = {l, 0};
	each_entry(body, len, ovr, n_ovr, true, fill_one, &f);
	qsort(l->strs, l->n_strs, sizeof *l->strs, str_sort_cmp);
	size_t u = 0;
	for (size_t i = 0; i < l->n_strs; i++)
		if (!u || str_sort_cmp(&l->strs[u - 1], &l->strs[i]))
			l->strs[u++] = l->strs[i];
	l->n_strs = u;
	l->size = u;
	return 0;
}

/* --------------------------------------------------------- IP networks */

static void mask_to(uint8_t a[16], unsigned bits)
{
	for (unsigned i = 0; i < 16; i++) {
		unsigned keep = bits >= 8 * (i + 1) ? 8
				: bits > 8 * i	    ? bits - 8 * i
						    : 0;
		a[i] &= (uint8_t)(0xff00u >> keep);
	}
}

/*
 * @s as Go's net.ParseCIDR read it: an address (IPv4 dotted quad, or
 * IPv6), '/', a prefix length of decimal digits not above the address's
 * bits. Without a '/', the single address (/32 or /128). inet_pton
 * takes the forms Go's ParseIP takes (leading zeros in IPv4 refused, as
 * by Go since 1.17).
 */
static int parse_net(const char *s, size_t len, struct ip_net *out)
{
	char buf[INET6_ADDRSTRLEN + 8];
	uint8_t a[16];
	unsigned bits, max;
	bool v4;

	if (len >= sizeof buf || memchr(s, 0, len))
		return -1;
	memcpy(buf, s, len);
	buf[len] = 0;
	char *slash = strchr(buf, '/');
	if (slash)
		*slash = 0;
	if (inet_pton(AF_INET, buf, a + 12) == 1) {
		memcpy(a, v4_mapped, 12);
		v4 = true;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, a) == 1) {
		v4 = false;
		max = 128;
	} else {
		return -1;
	}
	bits = max;
	if (slash) {
		const char *d = slash + 1;
		if (!*d)
			return -1;
		bits = 0;
		for (; *d; d++) {
			if (*d < '0' || *d > '9')
				return -1;
			bits = bits * 10 + (unsigned)(*d - '0');
			if (bits > max)
				return -1;
		}
	}
	if (v4)
		bits += 96;
	mask_to(a, bits);
	memcpy(out->a, a, 16);
	out->bits = (uint8_t)bits;
	/* An IPv6 network of an IPv4-mapped address is Go's IPv4 network
	 * when its mask keeps the whole ::ffff: prefix. */
	out->v4 = bits >= 96 && !memcmp(a, v4_mapped, 12);
	return 0;
}

static int net_cmp(const void *x, const void *y)
{
	const struct ip_net *a = x, *b = y;

	if (a->v4 != b->v4)
		return a->v4 < b->v4 ? -1 : 1;
	if (a->bits != b->bits)
		return a->bits < b->bits ? -1 : 1;
	return memcmp(a->a, b->a, 16);
}

/* Does network @i of the sorted @n start a run? */
static bool run_starts(const struct ip_net *n, size_t i)
{
	return !i || n[i].bits != n[i - 1].bits || n[i].v4 != n[i - 1].v4;
}

static bool net_find(const struct pol_list *l, const uint8_t ip[16])
{
	bool v4 = !memcmp(ip, v4_mapped, 12);

	for (size_t r = 0; r < l->n_runs; r++) {
		const struct ip_run *run = &l->runs[r];
		if (run->v4 != v4)
			continue;
		struct ip_net probe;
		memcpy(probe.a, ip, 16);
		mask_to(probe.a, run->bits);
		probe.bits = run->bits;
		probe.v4 = run->v4;
		if (bsearch(&probe, l->nets + run->first, run->n,
			    sizeof *l->nets, net_cmp))
			return true;
	}
	return false;
}

struct ip_build {
	struct ip_net *nets;
	size_t n, cap;
	size_t entries; /* as Mixer counts them, duplicates included */
	/* The first entry that did not parse, reported only if no later
	 * whitelist key replaces the list it is in. */
	bool bad;
	char bad_msg[256];
};

static int ip_add(struct ip_build *b, const char *s, size_t len, bool ovr,
		  char *why, size_t why_len)
{
	struct ip_net n;
	char q[96];

	if (b->entries >= POL_LIST_MAX_ENTRIES)
		return -E2BIG;
	b->entries++;
	if (parse_net(s, len, &n)) {
		/* Mixer appended "/32" to an entry without a '/' and
		 * quoted what ParseCIDR saw. */
		const char *sfx = memchr(s, '/', len) ? "" : "/32";
		quote(q, sizeof q, s, len);
		if (ovr) {
			fail(why, why_len,
			     "could not parse ip address override %s: "
			     "invalid CIDR address: %s%s",
			     q, q, sfx);
			return -1;
		}
		if (!b->bad) {
			b->bad = true;
			snprintf(b->bad_msg, sizeof b->bad_msg,
				 "could not parse list entry %s: invalid CIDR "
				 "address: %s%s",
				 q, q, sfx);
		}
		return 0;
	}
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		struct ip_net *nn = realloc(b->nets, cap * sizeof *nn);
		if (!nn)
			return -ENOMEM;
		b->nets = nn;
		b->cap = cap;
	}
	b->nets[b->n++] = n;
	return 0;
}

/*
 * A YAML parse error as Mixer reported it: ghodss/yaml's wrapping of
 * go-yaml v2's message, whose line is libyaml's 0-based mark, plus one
 * for scanner errors only (go-yaml's own quirk, kept so that the numbers
 * agree).
 */
static void yaml_fail(const yaml_parser_t *p, char *why, size_t why_len)
{
	size_t line = 0;
	const char *prob = p->problem ? p->problem
				      : "unknown problem parsing YAML content";

	if (p->problem_mark.line) {
		line = p->problem_mark.line;
		if (p->error == YAML_SCANNER_ERROR)
			line++;
	} else if (p->context_mark.line) {
		line = p->context_mark.line;
	}
	if (line)
		fail(why, why_len,
		     "could not unmarshal data from list error converting "
		     "YAML to JSON: yaml: line %zu: %s",
		     line, prob);
	else
		fail(why, why_len,
		     "could not unmarshal data from list error converting "
		     "YAML to JSON: yaml: %s",
		     prob);
}

/* A body that parses as YAML but is not `whitelist: [strings]`: @what is
 * the node found, between @pre and @post. mixd's words after Mixer's
 * prefix: Go's JSON decoder named Go types. */
static void shape_fail(const yaml_event_t *ev, char *why, size_t why_len,
		       const char *pre, const char *post)
{
	yaml_event_type_t t = ev->type;
	const char *what = t == YAML_SEQUENCE_START_EVENT  ? "a list"
			   : t == YAML_MAPPING_START_EVENT ? "a mapping"
			   : t == YAML_ALIAS_EVENT ? "an alias (not supported)"
						   : "a scalar";

	fail(why, why_len,
	     "could not unmarshal data from list: line %zu: %s %s, expected %s",
	     (size_t)ev->start_mark.line + 1, pre, what, post);
}

static bool is_null(const yaml_event_t *ev)
{
	const char *v = (const char *)ev->data.scalar.value;
	const char *tag = (const char *)ev->data.scalar.tag;

	if (tag && !strcmp(tag, YAML_NULL_TAG))
		return true;
	return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	       (!*v || !strcmp(v, "~") || !strcmp(v, "null") ||
		!strcmp(v, "Null") || !strcmp(v, "NULL"));
}

/* The next event into *@ev (the previous one deleted). 0, or -1 with the
 * reason set; -ENOMEM. */
static int next_event(yaml_parser_t *p, yaml_event_t *ev, char *why,
		      size_t why_len)
{
	yaml_event_delete(ev);
	if (yaml_parser_parse(p, ev))
		return 0;
	memset(ev, 0, sizeof *ev);
	if (p->error == YAML_MEMORY_ERROR)
		return -ENOMEM;
	yaml_fail(p, why, why_len);
	return -1;
}

/* Skip the node that *@ev starts, iteratively: nesting is the input's. */
static int skip_node(yaml_parser_t *p, yaml_event_t *ev, char *why,
		     size_t why_len)
{
	size_t depth = 0;
	int rc;

	for (;;) {
		if (ev->type == YAML_SEQUENCE_START_EVENT ||
		    ev->type == YAML_MAPPING_START_EVENT)
			depth++;
		else if (ev->type == YAML_SEQUENCE_END_EVENT ||
			 ev->type == YAML_MAPPING_END_EVENT)
			depth--;
		if (!depth)
			return 0;
		if ((rc = next_event(p, ev, why, why_len)))
			return rc;
	}
}

/* The value of a `whitelist` key, starting at *@ev, into @b (replacing
 * what an earlier `whitelist` key gave, as the last key wins). */
static int parse_whitelist(yaml_parser_t *p, yaml_event_t *ev,
			   struct ip_build *b, char *why, size_t why_len)
{
	int rc;

	b->n = 0;
	b->entries = 0;
	b->bad = false;
	if (ev->type == YAML_SCALAR_EVENT && is_null(ev))
		return 0;
	if (ev->type != YAML_SEQUENCE_START_EVENT) {
		shape_fail(ev, why, why_len, "whitelist is",
			   "a list of strings");
		return -1;
	}
	for (;;) {
		if ((rc = next_event(p, ev, why, why_len)))
			return rc;
		if (ev->type == YAML_SEQUENCE_END_EVENT)
			return 0;
		if (ev->type != YAML_SCALAR_EVENT) {
			shape_fail(ev, why, why_len, "an entry of whitelist is",
				   "a string");
			return -1;
		}
		/* A null entry is Go's "" (and fails to parse as one). */
		const char *v =
			is_null(ev) ? "" : (const char *)ev->data.scalar.value;
		size_t len = is_null(ev) ? 0 : ev->data.scalar.length;
		if ((rc = ip_add(b, v, len, false, why, why_len)))
			return rc;
	}
}

/*
 * `whitelist: [...]` in the first document of @body. As Mixer's decoder
 * (YAML to JSON, then into a struct): other keys are ignored, the key
 * matches case-insensitively, an empty body or a null document is an
 * empty list, the last of repeated keys wins.
 */
static int parse_ip_body(const char *body, size_t len, struct ip_build *b,
			 char *why, size_t why_len)
{
	yaml_parser_t p;
	yaml_event_t ev;
	int rc;

	memset(&ev, 0, sizeof ev);
	if (!yaml_parser_initialize(&p))
		return -ENOMEM;
	yaml_parser_set_input_string(&p, (const unsigned char *)body, len);
	if ((rc = next_event(&p, &ev, why, why_len)) || /* stream start */
	    (rc = next_event(&p, &ev, why, why_len)))
		goto out;
	if (ev.type == YAML_STREAM_END_EVENT)
		goto out;
	if ((rc = next_event(&p, &ev, why, why_len))) /* past doc start */
		goto out;
	if (ev.type == YAML_SCALAR_EVENT && is_null(&ev))
		goto out;
	if (ev.type != YAML_MAPPING_START_EVENT) {
		shape_fail(&ev, why, why_len, "the list is",
			   "a mapping with a whitelist");
		rc = -1;
		goto out;
	}
	for (;;) {
		if ((rc = next_event(&p, &ev, why, why_len)))
			goto out;
		if (ev.type == YAML_MAPPING_END_EVENT)
			break;
		bool wl = ev.type == YAML_SCALAR_EVENT &&
			  ev.data.scalar.length == 9 &&
			  !strncasecmp((const char *)ev.data.scalar.value,
				       "whitelist", 9);
		if ((rc = skip_node(&p, &ev, why, why_len)) ||
		    (rc = next_event(&p, &ev, why, why_len)))
			goto out;
		rc = wl ? parse_whitelist(&p, &ev, b, why, why_len)
			: skip_node(&p, &ev, why, why_len);
		if (rc)
			goto out;
	}
	if (b->bad) {
		fail(why, why_len, "%s", b->bad_msg);
		rc = -1;
	}
out:
	yaml_event_delete(&ev);
	yaml_parser_delete(&p);
	return rc;
}

static int build_ips(struct pol_list *l, const char *body, size_t len,
		     const char *const *ovr, size_t n_ovr, char *why,
		     size_t why_len)
{
	struct ip_build b = {0};
	int rc = 0;

	/* Overrides first: Mixer refused them with the config, before any
	 * fetch. */
	for (size_t i = 0; i < n_ovr && !rc; i++)
		rc = ip_add(&b, ovr[i], strlen(ovr[i]), true, why, why_len);
	size_t n_ovr_nets = b.n, n_ovr_entries = b.entries;
	if (!rc && len) {
		/* The body into a build of its own, which a later
		 * whitelist key restarts, then after the overrides. */
		struct ip_build body_b = {0};
		rc = parse_ip_body(body, len, &body_b, why, why_len);
		if (!rc &&
		    body_b.entries + n_ovr_entries > POL_LIST_MAX_ENTRIES)
			rc = -E2BIG;
		if (!rc && body_b.n) {
			struct ip_net *nn = realloc(
				b.nets, (n_ovr_nets + body_b.n) * sizeof *nn);
			if (!nn) {
				rc = -ENOMEM;
			} else {
				memcpy(nn + n_ovr_nets, body_b.nets,
				       body_b.n * sizeof *nn);
				b.nets = nn;
				b.n = n_ovr_nets + body_b.n;
			}
		}
		b.entries += body_b.entries;
		free(body_b.nets);
	}
	if (rc) {
		free(b.nets);
		return rc;
	}
	l->nets = b.nets;
	l->size = b.entries;
	if (b.n)
		qsort(l->nets, b.n, sizeof *l->nets, net_cmp);
	size_t u = 0;
	for (size_t i = 0; i < b.n; i++)
		if (!u || net_cmp(&l->nets[u - 1], &l->nets[i]))
			l->nets[u++] = l->nets[i];
	l->n_nets = u;
	for (size_t i = 0; i < u; i++)
		l->n_runs += run_starts(l->nets, i);
	l->runs = malloc((l->n_runs ? l->n_runs : 1) * sizeof *l->runs);
	if (!l->runs)
		return -ENOMEM;
	for (size_t i = 0, r = 0; i < u; i++) {
		if (run_starts(l->nets, i))
			l->runs[r++] = (struct ip_run){i, 0, l->nets[i].bits,
						       l->nets[i].v4};
		l->runs[r - 1].n++;
	}
	return 0;
}

/* -------------------------------------------------------------- regexps */

struct re_fill {
	struct pol_list *l;
	char *why;
	size_t why_len;
};

static int compile_one(void *arg, const char *s, size_t len, bool ovr)
{
	struct re_fill *f = arg;
	char q[96], err[256];
	char *pat;

	quote(q, sizeof q, s, len);
	if (memchr(s, 0, len)) {
		fail(f->why, f->why_len,
		     "could not parse regex %s: NUL byte in pattern", q);
		return -1;
	}
	if (!(pat = strndup(s, len)))
		return -ENOMEM;
	int rc = expr_regex_compile(pat, &f->l->res[f->l->n_res], err,
				    sizeof err);
	free(pat);
	if (rc) {
		fail(f->why, f->why_len, "could not parse regex%s %s: %s",
		     ovr ? " override" : "", q, err);
		return -1;
	}
	f->l->n_res++;
	return 0;
}

static int build_regexes(struct pol_list *l, const char *body, size_t len,
			 const char *const *ovr, size_t n_ovr, char *why,
			 size_t why_len)
{
	struct counter c = {0, 0};

	/* Go's regexp compiles "" (matching everything): an empty
	 * override counts, where the empty lines of a body do not. */
	each_entry(body, len, ovr, n_ovr, false, count_one, &c);
	if (c.n > POL_LIST_MAX_REGEXES)
		return -E2BIG;
	if (!(l->res = malloc((c.n ? c.n : 1) * sizeof *l->res)))
		return -ENOMEM;
	struct re_fill f = {l, why, why_len};
	/* Overrides first, as for IP lists; each_entry() runs the body
	 * first, so the overrides go through alone before it. */
	int rc = each_entry(NULL, 0, ovr, n_ovr, false, compile_one, &f);
	if (!rc)
		rc = each_entry(body, len, NULL, 0, false, compile_one, &f);
	l->size = l->n_res;
	return rc;
}

static int re_find(const struct pol_list *l, const char *s, size_t len)
{
	/* REG_STARTEND matches the counted string, but sanitizers'
	 * regexec interceptors strlen() it: NUL-terminate a copy. */
	char sbuf[256], *subj = sbuf;
	int found = 0;

	if (len >= sizeof sbuf && !(subj = malloc(len + 1)))
		return -1;
	if (len)
		memcpy(subj, s, len);
	subj[len] = 0;
	for (size_t i = 0; i < l->n_res && !found; i++) {
		regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)len};
		int rc = regexec(&l->res[i], subj, 1, &m, REG_STARTEND);
		if (rc == 0)
			found = 1;
		else if (rc != REG_NOMATCH)
			found = -1;
	}
	if (subj != sbuf)
		free(subj);
	return found;
}

/* ---------------------------------------------------------------- API */

int pol_list_build(enum pol_list_type type, const char *body, size_t len,
		   const char *const *overrides, size_t n_overrides,
		   struct pol_list **out, char *why, size_t why_len)
{
	struct pol_list *l;
	int rc;

	*out = NULL;
	if (!body)
		len = 0;
	if (len > POL_LIST_MAX_BODY) {
		fail(why, why_len,
		     "list body of %zu bytes is larger than the %u bytes mixd "
		     "takes",
		     len, POL_LIST_MAX_BODY);
		return -1;
	}
	if (!(l = calloc(1, sizeof *l))) {
		fail(why, why_len, "out of memory");
		return -ENOMEM;
	}
	l->type = type;
	switch (type) {
	case POL_LIST_STRINGS:
	case POL_LIST_CASE_INSENSITIVE_STRINGS:
		rc = build_strings(l, body, len, overrides, n_overrides);
		break;
	case POL_LIST_IP_ADDRESSES:
		rc = build_ips(l, body, len, overrides, n_overrides, why,
			       why_len);
		break;
	case POL_LIST_REGEX:
		rc = build_regexes(l, body, len, overrides, n_overrides, why,
				   why_len);
		break;
	default:
		fail(why, why_len, "unknown list entry type %d", (int)type);
		rc = -1;
	}
	if (rc == -E2BIG) {
		fail(why, why_len,
		     "list has more than the %u entries mixd "
		     "takes for its type",
		     type == POL_LIST_REGEX ? POL_LIST_MAX_REGEXES
					    : POL_LIST_MAX_ENTRIES);
		rc = -1;
	} else if (rc == -ENOMEM) {
		fail(why, why_len, "out of memory");
	}
	if (rc) {
		pol_list_free(l);
		return rc;
	}
	*out = l;
	return 0;
}

void pol_list_free(struct pol_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n_res; i++)
		regfree(&l->res[i]);
	free(l->res);
	free(l->runs);
	free(l->nets);
	free(l->strs);
	free(l->arena);
	free(l);
}

enum pol_list_type pol_list_type(const struct pol_list *l)
{
	return l->type;
}

size_t pol_list_size(const struct pol_list *l)
{
	return l->size;
}

int pol_list_contains(const struct pol_list *l, const char *v, size_t len)
{
	char buf[INET6_ADDRSTRLEN];
	uint8_t ip[16];

	switch (l->type) {
	case POL_LIST_STRINGS:
	case POL_LIST_CASE_INSENSITIVE_STRINGS:
		return str_find(l, v, len);
	case POL_LIST_REGEX:
		return re_find(l, v, len);
	case POL_LIST_IP_ADDRESSES:
		break;
	}
	/* Go's net.ParseIP: no prefix, no zone, no spaces. */
	if (!len || len >= sizeof buf || memchr(v, 0, len))
		return -1;
	memcpy(buf, v, len);
	buf[len] = 0;
	if (inet_pton(AF_INET, buf, ip + 12) == 1)
		memcpy(ip, v4_mapped, 12);
	else if (inet_pton(AF_INET6, buf, ip) != 1)
		return -1;
	return net_find(l, ip);
}

int pol_list_contains_ip(const struct pol_list *l, const uint8_t *ip,
			 size_t len)
{
	struct attr_value v = {.type = ATTR_IP, .len = (uint32_t)len};
	char text[ATTR_IP_TEXT_MAX];

	if (len != 4 && len != 16)
		return -1;
	memcpy(v.ip, ip, len);
	if (l->type == POL_LIST_IP_ADDRESSES) {
		uint8_t a[16];
		memcpy(a, v4_mapped, 12);
		memcpy(a + 16 - len, ip, len);
		return net_find(l, a);
	}
	size_t n = attr_format_ip(&v, text, sizeof text);
	return pol_list_contains(l, text, n);
}
