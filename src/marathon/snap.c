/*
 * snap -- build an immutable snapshot from Marathon's JSON (apps with
 * embedded tasks, pod statuses) and answer uncached lookups on it.
 *
 * A snapshot is one arena: every string, label map, port list and the
 * three hash tables live in it, so publishing is one pointer store and
 * reclaiming one free of a chunk list. Runs on the resolver thread only.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <xxhash.h>

#include "marathon/mar_internal.h"

/* ------------------------------------------------------------------ */
/* Arena */

struct mar_chunk {
	struct mar_chunk *next;
	size_t used, cap, map_len;
	_Alignas(16) uint8_t mem[];
};

struct mar_arena {
	struct mar_chunk *head;
	size_t bytes;
};

/*
 * Chunks are whole, aligned 2 MiB pages, mapped apart from the heap and
 * offered to the kernel as transparent huge pages. A warm lookup's
 * answers lie wherever their instances were built, across the whole
 * snapshot (some 60 MiB for 100,000 tasks): in 4 KiB pages nearly every
 * record's answers miss the first-level TLB, in huge pages a 100,000-task
 * snapshot is a few dozen entries. A snapshot's first chunk, when it is
 * one page (the whole snapshot, in a small deployment), keeps small pages,
 * so it does not take 2 MiB at its first byte; a first allocation larger
 * than that (the instances of a big one) is huge at once. Where the kernel
 * has no huge page to give, a chunk stays in small pages and works the
 * same.
 */
#define ARENA_PAGE (2u << 20)
#define ARENA_CHUNK (ARENA_PAGE - sizeof(struct mar_chunk))

/* @len bytes (a multiple of ARENA_PAGE) at an ARENA_PAGE boundary, in
 * huge pages if @huge, or NULL: the mapping is made a page larger and
 * trimmed at both ends. */
static void *huge_map(size_t len, bool huge)
{
	size_t over = len + ARENA_PAGE;
	uint8_t *p = mmap(NULL, over, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	size_t lead = (ARENA_PAGE - ((uintptr_t)p & (ARENA_PAGE - 1))) &
		      (ARENA_PAGE - 1);
	if (lead)
		munmap(p, lead);
	if (over - lead > len)
		munmap(p + lead + len, over - lead - len);
	/* Advice only: without THP the chunk keeps small pages, and with
	 * THP for everything a small snapshot keeps them too. */
	(void)madvise(p + lead, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return p + lead;
}

static void *arena_alloc(struct mar_arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	struct mar_chunk *c = a->head;
	if (!c || c->cap - c->used < n) {
		size_t len = n > ARENA_CHUNK / 4
				     ? (sizeof *c + n + ARENA_PAGE - 1) &
					       ~(size_t)(ARENA_PAGE - 1)
				     : ARENA_PAGE;
		c = huge_map(len, len > ARENA_PAGE || a->bytes > 0);
		if (!c)
			return NULL;
		c->map_len = len;
		c->cap = len - sizeof *c;
		c->used = 0;
		/* A big block goes behind the head so the head keeps its room
		 * (rounded up, it may be one page too). */
		if (n > ARENA_CHUNK / 4 && a->head) {
			c->next = a->head->next;
			a->head->next = c;
		} else {
			c->next = a->head;
			a->head = c;
		}
		a->bytes += len;
	}
	void *p = c->mem + c->used;
	c->used += n;
	return p;
}

static void arena_free(struct mar_arena *a)
{
	if (!a)
		return;
	for (struct mar_chunk *c = a->head, *n; c; c = n) {
		n = c->next;
		munmap(c, c->map_len);
	}
	free(a);
}

static const char *arena_strndup(struct mar_arena *a, const char *s,
				 size_t n)
{
	char *p = arena_alloc(a, n + 1);
	if (!p)
		return NULL;
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

/* ------------------------------------------------------------------ */
/* Host names */

struct hc_ent {
	char *name;
	uint8_t len; /* 0: did not resolve */
	bool used;   /* looked up since the last refresh */
	bool stale;  /* old: resolve again, keep this answer if that fails */
	uint8_t ip[16];
	int64_t at;  /* when it was resolved (CLOCK_MONOTONIC ns) */
};


struct mar_hostcache {
	struct hc_ent *v;
	size_t n, cap; /* cap: power of two */
	/* An ask failed for want of DNS (no answer in time, a server
	 * failure): DNS is likely down, and each ask may block for the
	 * resolver's timeout. So nothing is asked before dns_hold_until (or
	 * the next refresh): stale answers are kept, new names go without an
	 * address, and both are marked stale, to be asked once it passes. */
	int64_t dns_hold_until, dns_hold_ns;
};

struct mar_hostcache *mar_hostcache_create(void)
{
	struct mar_hostcache *hc = calloc(1, sizeof *hc);
	if (!hc)
		return NULL;
	hc->cap = 256;
	hc->dns_hold_ns = MAR_DNS_HOLD_NS;
	hc->v = calloc(hc->cap, sizeof *hc->v);
	if (!hc->v) {
		free(hc);
		return NULL;
	}
	return hc;
}

void mar_hostcache_destroy(struct mar_hostcache *hc)
{
	if (!hc)
		return;
	for (size_t i = 0; i < hc->cap; i++)
		free(hc->v[i].name);
	free(hc->v);
	free(hc);
}

void mar_hostcache_refresh(struct mar_hostcache *hc, int64_t max_age_ns)
{
	if (!hc)
		return;
	/* Rebuild with what stays (linear probing has no deletes). */
	struct hc_ent *old = hc->v;
	size_t cap = hc->cap;
	struct hc_ent *nv = calloc(cap, sizeof *nv);
	if (!nv)
		return;
	int64_t now = mar_now_ns();
	hc->v = nv;
	hc->n = 0;
	hc->dns_hold_until = 0; /* a full sync asks again */
	for (size_t i = 0; i < cap; i++) {
		if (!old[i].name)
			continue;
		if (!old[i].len || !old[i].used) {
			free(old[i].name);
			continue;
		}
		old[i].stale = now - old[i].at > max_age_ns;
		uint64_t h = mar_hash(old[i].name, strlen(old[i].name), 7);
		size_t j = h & (cap - 1);
		while (nv[j].name)
			j = (j + 1) & (cap - 1);
		nv[j] = old[i];
		nv[j].used = false;
		hc->n++;
	}
	free(old);
}

void mar_hostcache_set_dns_hold(struct mar_hostcache *hc, int64_t ns)
{
	hc->dns_hold_ns = ns;
}

size_t mar_hostcache_size(const struct mar_hostcache *hc)
{
	return hc ? hc->n : 0;
}

static int hc_grow(struct mar_hostcache *hc)
{
	size_t cap = hc->cap * 2;
	struct hc_ent *nv = calloc(cap, sizeof *nv);
	if (!nv)
		return -ENOMEM;
	for (size_t i = 0; i < hc->cap; i++) {
		if (!hc->v[i].name)
			continue;
		uint64_t h = mar_hash(hc->v[i].name, strlen(hc->v[i].name), 7);
		size_t j = h & (cap - 1);
		while (nv[j].name)
			j = (j + 1) & (cap - 1);
		nv[j] = hc->v[i];
	}
	free(hc->v);
	hc->v = nv;
	hc->cap = cap;
	return 0;
}

static bool parse_literal_ip(const char *s, struct attr_value *out)
{
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, s, &a4) == 1) {
		out->type = ATTR_IP;
		out->len = 4;
		memcpy(out->ip, &a4, 4);
		return true;
	}
	if (inet_pton(AF_INET6, s, &a6) == 1) {
		out->type = ATTR_IP;
		out->len = 16;
		memcpy(out->ip, &a6, 16);
		return true;
	}
	return false;
}

/* getaddrinfo() for @name into @e (len 0 if it does not resolve; IPv4
 * preferred: agents are addressed by IPv4 in every DC/OS we know of).
 * Returns getaddrinfo()'s result. */
static int lookup_host(const char *name, struct hc_ent *e)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	e->len = 0;
	int rc = getaddrinfo(name, NULL, &hints, &res);
	if (rc != 0)
		return rc;
	for (int pass = 0; pass < 2 && !e->len; pass++) {
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
			if (pass == 0 && ai->ai_family == AF_INET) {
				struct sockaddr_in *sa = (void *)ai->ai_addr;
				memcpy(e->ip, &sa->sin_addr, 4);
				e->len = 4;
				break;
			}
			if (pass == 1 && ai->ai_family == AF_INET6) {
				struct sockaddr_in6 *sa = (void *)ai->ai_addr;
				memcpy(e->ip, &sa->sin6_addr, 16);
				e->len = 16;
				break;
			}
		}
	}
	freeaddrinfo(res);
	return 0;
}

/* Did an ask fail for want of DNS, rather than because the name does not
 * exist (a definite answer, and a quick one)? */
static bool dns_down(int rc)
{
	return rc == EAI_AGAIN || rc == EAI_FAIL || rc == EAI_SYSTEM;
}

/* Ask for @name into @e, unless DNS is held (@e->len 0 then); a failure
 * for want of DNS holds it. Returns whether @e is an answer: an address,
 * or a definite "no such name". */
static bool ask(struct mar_hostcache *hc, const char *name, struct hc_ent *e)
{
	e->len = 0;
	int64_t now = mar_now_ns();
	if (now < hc->dns_hold_until)
		return false;
	if (dns_down(lookup_host(name, e))) {
		hc->dns_hold_until = now + hc->dns_hold_ns;
		return false;
	}
	return true;
}

/* Resolve @name: a literal, or through the cache, or getaddrinfo. */
static void resolve_host(struct mar_hostcache *hc, const char *name,
			 struct attr_value *out)
{
	memset(out, 0, sizeof *out);
	if (!name || !*name)
		return;
	if (parse_literal_ip(name, out) || !hc)
		return;
	size_t nl = strlen(name);
	uint64_t h = mar_hash(name, nl, 7);
	size_t j = h & (hc->cap - 1);
	while (hc->v[j].name) {
		struct hc_ent *c = &hc->v[j];
		if (!strcmp(c->name, name)) {
			c->used = true;
			struct hc_ent e;
			/* A name that moved is found again; one that fails
			 * keeps its last answer. */
			if (c->stale && ask(hc, name, &e)) {
				if (e.len) {
					c->len = e.len;
					memcpy(c->ip, e.ip, 16);
				}
				c->at = mar_now_ns();
				c->stale = false;
			}
			if (c->len) {
				out->type = ATTR_IP;
				out->len = c->len;
				memcpy(out->ip, c->ip, 16);
			}
			return;
		}
		j = (j + 1) & (hc->cap - 1);
	}
	struct hc_ent e = {0};
	bool answered = ask(hc, name, &e);
	e.used = true;
	e.at = mar_now_ns();
	e.stale = !answered; /* asked again once DNS is not held */
	if (e.len) {
		out->type = ATTR_IP;
		out->len = e.len;
		memcpy(out->ip, e.ip, 16);
	}
	if ((hc->n + 1) * 2 > hc->cap && hc_grow(hc) < 0)
		return;
	e.name = strdup(name);
	if (!e.name)
		return;
	j = h & (hc->cap - 1);
	while (hc->v[j].name)
		j = (j + 1) & (hc->cap - 1);
	hc->v[j] = e;
	hc->n++;
}

/* ------------------------------------------------------------------ */
/* Keys and tables */

bool mar_ip_key(const struct attr_value *v, uint8_t key[MAR_IPKEY_LEN])
{
	if (!v || (v->type != ATTR_IP && v->type != ATTR_BYTES))
		return false;
	if (v->len == 4) {
		memset(key, 0, 10);
		key[10] = key[11] = 0xff;
		memcpy(key + 12, v->ip, 4);
		if (!v->ip[0] && !v->ip[1] && !v->ip[2] && !v->ip[3])
			return false;
		return true;
	}
	if (v->len == 16) {
		memcpy(key, v->ip, 16);
		for (int i = 0; i < 16; i++)
			if (key[i])
				return true;
	}
	return false;
}

/* Feed value @v to @st: its type, its length and the bytes they cover. */
static void fp_value(XXH3_state_t *st, const struct attr_value *v)
{
	uint8_t hd[5] = {v->type};
	memcpy(hd + 1, &v->len, 4);
	XXH3_64bits_update(st, hd, sizeof hd);
	switch (v->type) {
	case ATTR_NONE:
		return;
	case ATTR_BOOL:
		XXH3_64bits_update(st, &v->b, 1);
		return;
	case ATTR_IP:
		XXH3_64bits_update(st, v->ip, v->len);
		return;
	case ATTR_STRING_MAP:
		XXH3_64bits_update(st, v->map, v->len);
		return;
	default:
		if (attr_type_is_string((enum attr_type)v->type) ||
		    v->type == ATTR_BYTES)
			XXH3_64bits_update(st, v->s, v->len);
		else
			XXH3_64bits_update(st, &v->i, sizeof v->i);
	}
}

/* The content hash of @in: every output, every container's name and
 * ports. Equal instances in two snapshots hash equal. */
static uint64_t inst_fingerprint(XXH3_state_t *st, const struct mar_inst *in)
{
	XXH3_64bits_reset(st);
	for (int k = 0; k < MAR_SIDE_FIELDS; k++)
		fp_value(st, &in->v[k]);
	for (uint32_t c = 0; c < in->n_ctr; c++) {
		fp_value(st, &in->ctr[c].name);
		XXH3_64bits_update(st, &in->ctr[c].n_ports, 4);
		XXH3_64bits_update(st, in->ctr[c].ports,
				   in->ctr[c].n_ports * sizeof *in->ctr[c].ports);
	}
	return XXH3_64bits_digest(st);
}

uint64_t mar_result_fingerprint(const struct mar_result *res)
{
	/* Per side: found, and its instance's hash; then the container, its
	 * own hash seeded with its type and length (which one of the
	 * destination's: its content is in the destination's hash). */
	uint64_t w[5] = {0};
	const struct attr_value *side[2] = {res->src, res->dst};
	for (int k = 0; k < 2; k++) {
		w[2 * k] = side[k] != NULL;
		if (side[k])
			w[2 * k + 1] = ((const struct mar_inst *)
					((const char *)side[k] -
					 offsetof(struct mar_inst, v)))->fp;
	}
	const struct attr_value *c = res->dst_container;
	if (c && attr_type_is_string((enum attr_type)c->type))
		w[4] = XXH3_64bits_withSeed(c->s, c->len,
					    c->type | (uint64_t)c->len << 8);
	else if (c)
		w[4] = c->type; /* ATTR_NONE: a container without a name */
	return XXH3_64bits(w, sizeof w);
}

int mar_pick_container(const struct mar_inst *inst, uint32_t port,
		       int named)
{
	if (port) {
		for (uint32_t c = 0; c < inst->n_ctr; c++)
			for (uint32_t i = 0; i < inst->ctr[c].n_ports; i++)
				if (inst->ctr[c].ports[i] == port)
					return (int)c;
	}
	if (named >= 0)
		return named;
	return inst->n_ctr == 1 ? 0 : -1;
}

const struct mar_slot *mar_snap_find(const struct mar_table *t,
				     const void *key, size_t len, uint64_t h)
{
	if (!t->slots)
		return NULL;
	for (uint64_t j = h & t->mask;; j = (j + 1) & t->mask) {
		const struct mar_slot *s = &t->slots[j];
		if (!s->h)
			return NULL;
		if (s->h == h && s->klen == len && !memcmp(s->key, key, len))
			return s->inst ? s : NULL;
	}
}

/* Keys collected during a build, inserted once the count is known. */
struct pend {
	const uint8_t *key;
	uint32_t klen;
	int32_t ctr;
	const struct mar_inst *inst;
};

struct pendv {
	struct pend *v;
	size_t n, cap;
};

struct build {
	struct mar_arena *a;
	struct mar_hostcache *hc;
	struct pendv ids, ips, ipports;
	struct mar_inst *insts;
	size_t n_insts, cap_insts;
	size_t skipped;
	bool nomem;
};

static void pend_add(struct build *b, struct pendv *pv, const void *key,
		     size_t klen, const struct mar_inst *inst, int ctr,
		     bool copy)
{
	if (b->nomem)
		return;
	if (pv->n == pv->cap) {
		size_t cap = pv->cap ? pv->cap * 2 : 1024;
		struct pend *nv = realloc(pv->v, cap * sizeof *nv);
		if (!nv) {
			b->nomem = true;
			return;
		}
		pv->v = nv;
		pv->cap = cap;
	}
	const uint8_t *k = key;
	if (copy) {
		uint8_t *c = arena_alloc(b->a, klen);
		if (!c) {
			b->nomem = true;
			return;
		}
		memcpy(c, key, klen);
		k = c;
	}
	pv->v[pv->n++] = (struct pend){k, (uint32_t)klen, ctr, inst};
}

/* @first_wins: ids are unique in Marathon; a prefix claimed twice (two
 * attempts of one instance) keeps the first. IPs claimed by two instances
 * are ambiguous and resolve to nothing, rather than to a wrong answer. */
static int table_build(struct build *b, struct mar_table *t,
		       const struct pendv *pv, bool first_wins)
{
	uint64_t cap = 16;
	while (cap < pv->n * 2)
		cap <<= 1;
	t->slots = arena_alloc(b->a, cap * sizeof *t->slots);
	if (!t->slots)
		return -ENOMEM;
	memset(t->slots, 0, cap * sizeof *t->slots);
	t->mask = cap - 1;
	t->n = 0;
	for (size_t i = 0; i < pv->n; i++) {
		const struct pend *p = &pv->v[i];
		uint64_t h = mar_hash(p->key, p->klen, 0);
		uint64_t j = h & t->mask;
		for (;; j = (j + 1) & t->mask) {
			struct mar_slot *s = &t->slots[j];
			if (!s->h) {
				*s = (struct mar_slot){h, p->key, p->klen,
						       p->ctr, p->inst};
				t->n++;
				break;
			}
			if (s->h == h && s->klen == p->klen &&
			    !memcmp(s->key, p->key, p->klen)) {
				if (!first_wins && s->inst == p->inst &&
				    s->ctr < 0 && p->ctr < 0)
					s->ctr = -1; /* its own address, not
							only its agent's */
				else if (!first_wins &&
					 (s->inst != p->inst || s->ctr != p->ctr))
					s->inst = NULL;
				break;
			}
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* JSON helpers */

const char *mar_jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

static bool jport(const cJSON *v, uint32_t *out)
{
	if (!cJSON_IsNumber(v) || v->valuedouble < 1 ||
	    v->valuedouble > 65535)
		return false;
	*out = (uint32_t)v->valuedouble;
	return true;
}

/* Marathon's terminal conditions. TASK_UNKNOWN (the master knows nothing
 * of the task) is one, as Gone and Dropped are: a Failure and Lost. */
static const char *const terminal_task_states[] = {
	"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST",
	"TASK_ERROR", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR",
	"TASK_UNKNOWN", NULL};

bool mar_task_terminal(const char *state)
{
	return mar_in_list(terminal_task_states, state);
}

bool mar_in_list(const char *const *l, const char *s)
{
	for (; s && *l; l++)
		if (!strcmp(*l, s))
			return true;
	return false;
}

/*
 * Is pod instance @inst gone? podInstanceStatus PENDING STAGING STABLE
 * DEGRADED TERMINAL. Marathon says TERMINAL of an instance being killed
 * too (its condition Killing), while its containers still run and drain
 * their connections: the instance stays until no container is left that
 * is not terminal, as an app's TASK_KILLING task stays.
 */
static bool instance_terminal(const cJSON *inst)
{
	static const char *const terminal[] = {"TERMINAL", "KILLED",
					       "FINISHED", "FAILED", NULL};
	if (!mar_in_list(terminal, mar_jstr(inst, "status")))
		return false;
	const cJSON *c;
	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(inst,
								 "containers"))
	{
		const char *st = mar_jstr(c, "status");
		if (st && !mar_task_terminal(st))
			return false; /* still running: draining */
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* Per run spec (app or pod): what all its instances share. */

struct spec_info {
	struct attr_value labels, ns, sa, wl_uid, wl_name, owner;
	enum { NET_HOST, NET_BRIDGE, NET_CONTAINER } net;
	/* apps: the container ports and fixed host ports of portMappings */
	uint32_t cports[64], hports[64];
	size_t n_map;
};

static struct attr_value sv(const char *s, size_t n)
{
	return (struct attr_value){.type = ATTR_STRING, .len = (uint32_t)n,
				   .s = s};
}

static struct attr_value arena_sv(struct build *b, const char *s, size_t n)
{
	const char *p = arena_strndup(b->a, s, n);
	if (!p) {
		b->nomem = true;
		return (struct attr_value){0};
	}
	return sv(p, n);
}

static int cmp_label(const void *x, const void *y)
{
	const cJSON *a = *(const cJSON *const *)x, *c = *(const cJSON *const *)y;
	return strcmp(a->string, c->string);
}

/* Labels as attr's STRING_MAP wire form, keys sorted (so two snapshots of
 * one app encode the same bytes). Non-string values are skipped. */
static struct attr_value encode_labels(struct build *b, const cJSON *labels)
{
	const cJSON *l, *sorted[256];
	size_t n = 0, bytes = 4;
	cJSON_ArrayForEach(l, labels)
	{
		if (!cJSON_IsString(l) || !l->string || n == 256)
			continue;
		sorted[n++] = l;
		bytes += 8 + strlen(l->string) + strlen(l->valuestring);
	}
	qsort(sorted, n, sizeof *sorted, cmp_label);
	uint8_t *p = arena_alloc(b->a, bytes);
	if (!p) {
		b->nomem = true;
		return (struct attr_value){0};
	}
	uint32_t u = (uint32_t)n;
	size_t off = 0;
#define PUT32(x)                                                               \
	do {                                                                   \
		uint32_t _v = (x);                                             \
		p[off] = _v & 0xff;                                            \
		p[off + 1] = (_v >> 8) & 0xff;                                 \
		p[off + 2] = (_v >> 16) & 0xff;                                \
		p[off + 3] = _v >> 24;                                         \
		off += 4;                                                      \
	} while (0)
	PUT32(u);
	for (size_t i = 0; i < n; i++) {
		size_t kl = strlen(sorted[i]->string);
		size_t vl = strlen(sorted[i]->valuestring);
		PUT32((uint32_t)kl);
		memcpy(p + off, sorted[i]->string, kl);
		off += kl;
		PUT32((uint32_t)vl);
		memcpy(p + off, sorted[i]->valuestring, vl);
		off += vl;
	}
#undef PUT32
	return (struct attr_value){.type = ATTR_STRING_MAP,
				   .len = (uint32_t)off, .map = p};
}

/* Namespace, workload and owner from a run spec id "/a/b/name". */
static int spec_names(struct build *b, const char *id, const cJSON *labels,
		      bool pod, struct spec_info *si)
{
	size_t idl = strlen(id);
	if (!idl || id[0] != '/' || id[idl - 1] == '/')
		return -1;
	const char *last = strrchr(id, '/') + 1;
	size_t nl = strlen(last);
	/* group path "/a/b" -> "a.b"; the root group -> "default" */
	char nsbuf[1024];
	size_t gl = (size_t)(last - id) - 1; /* "/a/b" without the last '/' */
	if (gl == 0) {
		si->ns = sv("default", 7);
	} else {
		if (gl - 1 >= sizeof nsbuf)
			return -1;
		for (size_t i = 1; i < gl + 0; i++)
			nsbuf[i - 1] = id[i] == '/' ? '.' : id[i];
		si->ns = arena_sv(b, nsbuf, gl - 1);
	}
	si->wl_name = arena_sv(b, last, nl);
	char buf[2048];
	int n = snprintf(buf, sizeof buf, "istio://%.*s/workloads/%s",
			 (int)si->ns.len, si->ns.s ? si->ns.s : "", last);
	if (n < 0 || (size_t)n >= sizeof buf)
		return -1;
	si->wl_uid = arena_sv(b, buf, (size_t)n);
	n = snprintf(buf, sizeof buf, "marathon://%s%s", pod ? "pods" : "apps",
		     id);
	if (n < 0 || (size_t)n >= sizeof buf)
		return -1;
	si->owner = arena_sv(b, buf, (size_t)n);
	si->labels = encode_labels(b, labels);
	const char *sa = mar_jstr(labels, "istio.io/service-account");
	if (!sa)
		sa = mar_jstr(labels, "serviceAccount");
	si->sa = sa ? arena_sv(b, sa, strlen(sa)) : sv("default", 7);
	return b->nomem ? -ENOMEM : 0;
}

/* The mode of an app's or pod's first network (1.5+), or NULL. */
static const char *network_mode(const cJSON *spec)
{
	const cJSON *nets = cJSON_GetObjectItemCaseSensitive(spec, "networks");
	const cJSON *n0 = cJSON_IsArray(nets) ? cJSON_GetArrayItem(nets, 0)
					       : NULL;
	return n0 ? mar_jstr(n0, "mode") : NULL;
}

static void app_network(const cJSON *app, struct spec_info *si)
{
	si->net = NET_HOST;
	si->n_map = 0;
	const char *mode = network_mode(app);
	const cJSON *ctr = cJSON_GetObjectItemCaseSensitive(app, "container");
	const cJSON *docker = cJSON_GetObjectItemCaseSensitive(ctr, "docker");
	const cJSON *maps = cJSON_GetObjectItemCaseSensitive(ctr,
							      "portMappings");
	if (mode) { /* 1.5+ */
		if (!strcmp(mode, "container/bridge"))
			si->net = NET_BRIDGE;
		else if (!strcmp(mode, "container"))
			si->net = NET_CONTAINER;
	} else { /* 1.4: container.docker.network, or an app ipAddress */
		const char *dn = mar_jstr(docker, "network");
		if (dn && !strcmp(dn, "BRIDGE"))
			si->net = NET_BRIDGE;
		else if (dn && !strcmp(dn, "USER"))
			si->net = NET_CONTAINER;
		else if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(
				 app, "ipAddress")))
			si->net = NET_CONTAINER;
	}
	if (!cJSON_IsArray(maps))
		maps = cJSON_GetObjectItemCaseSensitive(docker, "portMappings");
	const cJSON *m;
	cJSON_ArrayForEach(m, maps)
	{
		if (si->n_map == 64)
			break;
		uint32_t cp = 0, hp = 0;
		jport(cJSON_GetObjectItemCaseSensitive(m, "containerPort"), &cp);
		jport(cJSON_GetObjectItemCaseSensitive(m, "hostPort"), &hp);
		si->cports[si->n_map] = cp;
		si->hports[si->n_map] = hp;
		si->n_map++;
	}
}

/* The last @mark in [@id, @id + @len), or NULL. */
static const char *last_mark(const char *id, size_t len, const char *mark)
{
	const char *m = NULL, *end = id + len;
	size_t ml = strlen(mark);
	for (const char *p = id; (p = memmem(p, (size_t)(end - p), mark, ml));
	     p += ml)
		m = p;
	return m;
}

/* Is [@p, @p + 36) a UUID as Marathon writes one (8-4-4-4-12 hex)? */
static bool is_uuid(const char *p)
{
	for (int i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? p[i] != '-' : !isxdigit((unsigned char)p[i]))
			return false;
	}
	return true;
}

/*
 * The instance id of a task id: "<safeId>.instance-<uuid>" (Marathon >=
 * 1.5, apps and pods) or "<safeId>.marathon-<uuid>" (the same with the
 * older prefix), as in Marathon's own pattern
 * ^(.+)\.(instance-|marathon-)([^_.]+)[._]([^_.]+)(\.\d+)?$ -- the last
 * marker, since an app may be called "cart.instance-2"; a resident task's
 * "<safeId>.<uuid>.<attempt>" without its attempt; else the whole id.
 */
static size_t instance_id_len(const char *id, size_t len)
{
	const char *m = last_mark(id, len, ".instance-");
	const char *o = last_mark(id, len, ".marathon-");
	if (o && (!m || o > m))
		m = o;
	if (m) {
		const char *dot =
			memchr(m + 10, '.', len - (size_t)(m + 10 - id));
		return dot ? (size_t)(dot - id) : len;
	}
	/* ResidentTaskIdRegex ^(.+)([._])([^_.]+)(\.)(\d+)$, its instance a
	 * UUID: the id up to the attempt. */
	size_t d = len;
	while (d && isdigit((unsigned char)id[d - 1]))
		d--;
	if (d < len && d > 38 && id[d - 1] == '.' && is_uuid(id + d - 37) &&
	    (id[d - 38] == '.' || id[d - 38] == '_'))
		return d - 1;
	return len;
}

/* Index @id and each of its prefixes that ends at a '.' beyond the
 * instance id: the proxies' uid drops the last .suffix. */
static void index_id(struct build *b, const char *id, size_t len,
		     const struct mar_inst *inst, int ctr)
{
	size_t il = instance_id_len(id, len);
	/* The model's strings change under later events: keys live in the
	 * arena, one copy shared by the id and its prefixes. */
	const char *c = arena_strndup(b->a, id, len);
	if (!c) {
		b->nomem = true;
		return;
	}
	id = c;
	pend_add(b, &b->ids, id, len, inst, ctr, false);
	for (size_t i = il; i < len; i++)
		if (id[i] == '.')
			pend_add(b, &b->ids, id, i, inst, ctr, false);
}

static void index_ipport(struct build *b, const struct attr_value *ip,
			 uint32_t port, const struct mar_inst *inst, int ctr)
{
	uint8_t k[MAR_IPPORT_KEY_LEN];
	if (!port || !mar_ip_key(ip, k))
		return;
	k[16] = (uint8_t)(port >> 8);
	k[17] = (uint8_t)port;
	pend_add(b, &b->ipports, k, sizeof k, inst, ctr, true);
}

/* @ip claimed by @inst: its own address, or (@host) its agent's. */
static void index_ip(struct build *b, const struct attr_value *ip,
		     const struct mar_inst *inst, bool host)
{
	uint8_t k[MAR_IPKEY_LEN];
	if (mar_ip_key(ip, k))
		pend_add(b, &b->ips, k, sizeof k, inst,
			 host ? MAR_CTR_HOST_IP : -1, true);
}

static struct mar_inst *inst_new(struct build *b)
{
	if (b->n_insts == b->cap_insts) {
		b->nomem = true; /* the count pass guarantees room */
		return NULL;
	}
	struct mar_inst *in = &b->insts[b->n_insts++];
	memset(in, 0, sizeof *in);
	return in;
}

static void inst_common(struct build *b, struct mar_inst *in,
			const struct spec_info *si, const char *id, size_t il,
			const struct attr_value *pod_ip,
			const struct attr_value *host_ip)
{
	char buf[1100];
	in->v[MAR_OUT_SOURCE_POD_NAME] = arena_sv(b, id, il);
	int n = snprintf(buf, sizeof buf, "kubernetes://%.*s", (int)il, id);
	if (n > 0 && (size_t)n < sizeof buf)
		in->v[MAR_OUT_SOURCE_POD_UID] = arena_sv(b, buf, (size_t)n);
	in->v[MAR_OUT_SOURCE_POD_IP] = *pod_ip;
	in->v[MAR_OUT_SOURCE_LABELS] = si->labels;
	in->v[MAR_OUT_SOURCE_NAMESPACE] = si->ns;
	in->v[MAR_OUT_SOURCE_SERVICE_ACCOUNT_NAME] = si->sa;
	in->v[MAR_OUT_SOURCE_HOST_IP] = *host_ip;
	in->v[MAR_OUT_SOURCE_WORKLOAD_UID] = si->wl_uid;
	in->v[MAR_OUT_SOURCE_WORKLOAD_NAME] = si->wl_name;
	in->v[MAR_OUT_SOURCE_WORKLOAD_NAMESPACE] = si->ns;
	in->v[MAR_OUT_SOURCE_OWNER] = si->owner;
}

/* The first IPv4 address of an "ipAddresses" / "addresses" list, else
 * its first address: the one a dual-stack task's IPv4 peers see, and what
 * host_ip prefers too. */
static bool first_ip(const cJSON *list, const char *field,
		     struct attr_value *out)
{
	const cJSON *e;
	bool found = false;
	cJSON_ArrayForEach(e, list)
	{
		const char *s = field ? mar_jstr(e, field)
				      : (cJSON_IsString(e) ? e->valuestring
							   : NULL);
		struct attr_value a;
		if (!s || !parse_literal_ip(s, &a))
			continue;
		if (!found || a.len == 4)
			*out = a;
		found = true;
		if (a.len == 4)
			break;
	}
	return found;
}

static void build_task(struct build *b, const struct spec_info *si,
		       const cJSON *task)
{
	const char *id = mar_jstr(task, "id");
	if (!id || !*id || strlen(id) > 1000) {
		b->skipped++;
		return;
	}
	if (mar_task_terminal(mar_jstr(task, "state")))
		return;
	struct mar_inst *in = inst_new(b);
	if (!in)
		return;
	size_t len = strlen(id), il = instance_id_len(id, len);
	struct attr_value host_ip, cip = {0};
	resolve_host(b->hc, mar_jstr(task, "host"), &host_ip);
	const cJSON *ipa = cJSON_GetObjectItemCaseSensitive(task, "ipAddresses");
	bool has_cip = si->net != NET_HOST && first_ip(ipa, "ipAddress", &cip);
	inst_common(b, in, si, id, il, has_cip ? &cip : &host_ip, &host_ip);

	/* One container: the app. Its ports: task host ports and the
	 * portMappings' container / fixed host ports. */
	const cJSON *ports = cJSON_GetObjectItemCaseSensitive(task, "ports");
	int np = cJSON_GetArraySize(ports);
	size_t cap = (size_t)(np > 0 ? np : 0) + 2 * si->n_map;
	uint32_t *pl = arena_alloc(b->a, (cap ? cap : 1) * sizeof *pl);
	struct mar_ctr *c = arena_alloc(b->a, sizeof *c);
	if (!pl || !c) {
		b->nomem = true;
		return;
	}
	uint32_t n = 0, p;
	const cJSON *e;
	cJSON_ArrayForEach(e, ports)
	{
		if (jport(e, &p) && n < cap) {
			pl[n++] = p;
			index_ipport(b, &host_ip, p, in, 0);
		}
	}
	for (size_t i = 0; i < si->n_map; i++) {
		if (si->cports[i])
			pl[n++] = si->cports[i];
		if (si->hports[i])
			pl[n++] = si->hports[i];
	}
	*c = (struct mar_ctr){.name = si->wl_name, .n_ports = n, .ports = pl};
	in->ctr = c;
	in->n_ctr = 1;

	index_id(b, id, len, in, 0);
	/* The host IP is the task's own address on the host network, and
	 * the source of a bridge task's outbound traffic (Docker's NAT):
	 * either claims it, so it names a task only when that task is the
	 * only one on the agent to use it. */
	if (si->net != NET_CONTAINER)
		index_ip(b, &host_ip, in, true);
	if (si->net != NET_HOST) {
		cJSON_ArrayForEach(e, ipa)
		{
			struct attr_value a;
			const char *s = mar_jstr(e, "ipAddress");
			if (!s || !parse_literal_ip(s, &a))
				continue;
			index_ip(b, &a, in, false);
			for (size_t i = 0; i < si->n_map; i++)
				index_ipport(b, &a, si->cports[i], in, 0);
		}
	}
}

static void build_app(struct build *b, const cJSON *app)
{
	const char *id = mar_jstr(app, "id");
	struct spec_info si;
	memset(&si, 0, sizeof si);
	if (!id || spec_names(b, id, cJSON_GetObjectItemCaseSensitive(
					     app, "labels"),
			      false, &si) < 0) {
		b->skipped++;
		return;
	}
	app_network(app, &si);
	const cJSON *t;
	cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(app, "tasks"))
	{
		if (!cJSON_IsObject(t)) {
			b->skipped++;
			continue;
		}
		build_task(b, &si, t);
	}
}

/* The spec container named @name (pod status "spec.containers"). */
static const cJSON *spec_container(const cJSON *spec, const char *name)
{
	const cJSON *c;
	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(spec,
								 "containers"))
	{
		const char *n = mar_jstr(c, "name");
		if (n && name && !strcmp(n, name))
			return c;
	}
	return NULL;
}

static void build_instance(struct build *b, const struct spec_info *si,
			   const cJSON *spec, const cJSON *inst)
{
	const char *id = mar_jstr(inst, "id");
	if (!id || !*id || strlen(id) > 1000) {
		b->skipped++;
		return;
	}
	if (instance_terminal(inst))
		return;
	struct mar_inst *in = inst_new(b);
	if (!in)
		return;
	struct attr_value host_ip, cip = {0};
	resolve_host(b->hc, mar_jstr(inst, "agentHostname"), &host_ip);
	const char *mode = network_mode(spec);
	bool bridge = mode && !strcmp(mode, "container/bridge");
	bool container = mode && !strcmp(mode, "container");
	/* The instance's addresses are its own only on a container or bridge
	 * network: a host pod's are its agent's (Mesos fills a container's
	 * network_infos with the agent's IP when it has none), which it
	 * claims below as a host IP, as an app's host tasks do. */
	const cJSON *nets = bridge || container
				    ? cJSON_GetObjectItemCaseSensitive(inst,
								       "networks")
				    : NULL;
	bool has_cip = false;
	const cJSON *nw;
	cJSON_ArrayForEach(nw, nets)
	{
		if (first_ip(cJSON_GetObjectItemCaseSensitive(nw, "addresses"),
			     NULL, &cip)) {
			has_cip = true;
			break;
		}
	}
	size_t len = strlen(id);
	inst_common(b, in, si, id, len, has_cip ? &cip : &host_ip, &host_ip);
	index_id(b, id, len, in, -1);
	/* As an app's tasks: a host pod claims its agent's IP, and so does a
	 * bridge pod (its outbound traffic leaves with it); a pod on a
	 * container network has an IP of its own, and before it has been
	 * given one (staging) claims none, not its agent's. */
	if (has_cip ? bridge : !container)
		index_ip(b, &host_ip, in, true);
	if (has_cip) {
		cJSON_ArrayForEach(nw, nets)
		{
			const cJSON *a;
			cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(
						      nw, "addresses"))
			{
				struct attr_value ip;
				if (cJSON_IsString(a) &&
				    parse_literal_ip(a->valuestring, &ip))
					index_ip(b, &ip, in, false);
			}
		}
	}

	const cJSON *ctrs = cJSON_GetObjectItemCaseSensitive(inst, "containers");
	int nc = cJSON_GetArraySize(ctrs);
	if (nc <= 0)
		return;
	struct mar_ctr *cv = arena_alloc(b->a, (size_t)nc * sizeof *cv);
	if (!cv) {
		b->nomem = true;
		return;
	}
	uint32_t k = 0;
	const cJSON *c;
	cJSON_ArrayForEach(c, ctrs)
	{
		const char *name = mar_jstr(c, "name");
		if (!name)
			continue;
		const cJSON *sc = spec_container(spec, name);
		const cJSON *eps = cJSON_GetObjectItemCaseSensitive(c,
								    "endpoints");
		const cJSON *seps = cJSON_GetObjectItemCaseSensitive(
			sc, "endpoints");
		size_t cap = 3 * (size_t)(cJSON_GetArraySize(eps) +
					  cJSON_GetArraySize(seps)) +
			     1;
		uint32_t *pl = arena_alloc(b->a, cap * sizeof *pl), n = 0, p;
		if (!pl) {
			b->nomem = true;
			return;
		}
		const cJSON *e;
		cJSON_ArrayForEach(e, eps)
		{
			if (jport(cJSON_GetObjectItemCaseSensitive(
					  e, "allocatedHostPort"),
				  &p) &&
			    n < cap) {
				pl[n++] = p;
				index_ipport(b, &host_ip, p, in, (int)k);
			}
		}
		cJSON_ArrayForEach(e, seps)
		{
			if (jport(cJSON_GetObjectItemCaseSensitive(
					  e, "containerPort"),
				  &p) &&
			    n < cap) {
				pl[n++] = p;
				if (has_cip) {
					cJSON_ArrayForEach(nw, nets)
					{
						const cJSON *a;
						cJSON_ArrayForEach(
							a,
							cJSON_GetObjectItemCaseSensitive(
								nw, "addresses"))
						{
							struct attr_value ip;
							if (cJSON_IsString(a) &&
							    parse_literal_ip(
								    a->valuestring,
								    &ip))
								index_ipport(
									b, &ip,
									p, in,
									(int)k);
						}
					}
				}
			}
			if (jport(cJSON_GetObjectItemCaseSensitive(e,
								   "hostPort"),
				  &p) &&
			    n < cap) {
				pl[n++] = p;
				index_ipport(b, &host_ip, p, in, (int)k);
			}
		}
		cv[k] = (struct mar_ctr){.name = arena_sv(b, name,
							  strlen(name)),
					 .n_ports = n,
					 .ports = pl};
		/* The container's Mesos task id, and <instance>.<name>. */
		const char *cid = mar_jstr(c, "containerId");
		if (cid && strlen(cid) <= 1000)
			index_id(b, cid, strlen(cid), in, (int)k);
		char buf[2100];
		int bl = snprintf(buf, sizeof buf, "%s.%s", id, name);
		if (bl > 0 && (size_t)bl < sizeof buf)
			pend_add(b, &b->ids, buf, (size_t)bl, in, (int)k,
				 true);
		k++;
	}
	in->ctr = cv;
	in->n_ctr = k;
}

static void build_pod(struct build *b, const cJSON *pod)
{
	const char *id = mar_jstr(pod, "id");
	const cJSON *spec = cJSON_GetObjectItemCaseSensitive(pod, "spec");
	struct spec_info si;
	memset(&si, 0, sizeof si);
	if (!id || spec_names(b, id, cJSON_GetObjectItemCaseSensitive(
					     spec, "labels"),
			      true, &si) < 0) {
		b->skipped++;
		return;
	}
	const cJSON *in;
	cJSON_ArrayForEach(in, cJSON_GetObjectItemCaseSensitive(pod,
								"instances"))
	{
		if (!cJSON_IsObject(in)) {
			b->skipped++;
			continue;
		}
		build_instance(b, &si, spec, in);
	}
}

int mar_snap_build(const cJSON *apps, const cJSON *pods,
		   struct mar_hostcache *hc, struct mar_snap **out,
		   size_t *skipped)
{
	struct build b = {.hc = hc};
	struct mar_snap *s = NULL;
	int rc = -ENOMEM;

	b.a = calloc(1, sizeof *b.a);
	if (!b.a)
		goto out;
	/* Count pass: the instance array is one allocation, so instances
	 * never move and keys may point at them. */
	size_t n = 0;
	const cJSON *x, *y;
	cJSON_ArrayForEach(x, apps)
	{
		n += (size_t)cJSON_GetArraySize(
			cJSON_GetObjectItemCaseSensitive(x, "tasks"));
	}
	cJSON_ArrayForEach(x, pods)
	{
		n += (size_t)cJSON_GetArraySize(
			cJSON_GetObjectItemCaseSensitive(x, "instances"));
	}
	b.cap_insts = n;
	b.insts = arena_alloc(b.a, (n ? n : 1) * sizeof *b.insts);
	s = arena_alloc(b.a, sizeof *s);
	if (!b.insts || !s)
		goto out;
	memset(s, 0, sizeof *s);
	cJSON_ArrayForEach(x, apps)
	{
		if (!cJSON_IsObject(x)) {
			b.skipped++;
			continue;
		}
		size_t before = b.n_insts;
		build_app(&b, x);
		s->apps++;
		s->tasks += b.n_insts - before;
	}
	cJSON_ArrayForEach(y, pods)
	{
		if (!cJSON_IsObject(y)) {
			b.skipped++;
			continue;
		}
		size_t before = b.n_insts;
		build_pod(&b, y);
		s->pods++;
		s->pod_instances += b.n_insts - before;
	}
	if (b.nomem)
		goto out;
	if (table_build(&b, &s->by_id, &b.ids, true) < 0 ||
	    table_build(&b, &s->by_ip, &b.ips, false) < 0 ||
	    table_build(&b, &s->by_ipport, &b.ipports, false) < 0)
		goto out;
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		goto out;
	for (size_t i = 0; i < b.n_insts; i++)
		b.insts[i].fp = inst_fingerprint(st, &b.insts[i]);
	XXH3_freeState(st);
	s->insts = b.insts;
	s->n_insts = b.n_insts;
	s->arena = b.a;
	if (skipped)
		*skipped = b.skipped;
	*out = s;
	b.a = NULL;
	rc = 0;
out:
	free(b.ids.v);
	free(b.ips.v);
	free(b.ipports.v);
	arena_free(b.a);
	return rc;
}

void mar_snap_free(struct mar_snap *s)
{
	if (s)
		arena_free(s->arena); /* s itself lives in the arena */
}

/* ------------------------------------------------------------------ */
/* Uncached lookups */

static bool uid_of(const struct attr_value *v, const char **id, size_t *len)
{
	if (!v || !attr_type_is_string((enum attr_type)v->type) || !v->len)
		return false;
	*id = mar_uid_bare(v->s, v->len, len);
	return *len > 0;
}

bool mar_snap_lookup(const struct mar_snap *s, const struct mar_query *q,
		     struct mar_result *out)
{
	const char *id;
	size_t len;
	uint8_t k[MAR_IPPORT_KEY_LEN];
	const struct mar_slot *sl;
	uint32_t port = 0;

	*out = (struct mar_result){0};
	if (!s)
		return false;
	if (q->destination_port && q->destination_port->type == ATTR_INT64 &&
	    q->destination_port->i > 0 && q->destination_port->i <= 65535)
		port = (uint32_t)q->destination_port->i;

	/* A uid, when there is one, decides alone: one Marathon does not
	 * know (another platform's proxy, a task gone) names nobody, not
	 * whoever holds its IP now. */
	if (uid_of(q->source_uid, &id, &len)) {
		if ((sl = mar_snap_find(&s->by_id, id, len,
					mar_hash(id, len, 0))))
			out->src = sl->inst->v;
	} else if (mar_ip_key(q->source_ip, k) &&
		   (sl = mar_snap_find(&s->by_ip, k, MAR_IPKEY_LEN,
				       mar_hash(k, MAR_IPKEY_LEN, 0)))) {
		out->src = sl->inst->v;
	}

	int ctr = -1;
	const struct mar_inst *d = NULL;
	if (uid_of(q->destination_uid, &id, &len)) {
		if ((sl = mar_snap_find(&s->by_id, id, len,
					mar_hash(id, len, 0)))) {
			d = sl->inst;
			ctr = mar_pick_container(d, port, sl->ctr);
		}
	} else if (mar_ip_key(q->destination_ip, k)) {
		k[16] = (uint8_t)(port >> 8);
		k[17] = (uint8_t)port;
		if (port && (sl = mar_snap_find(&s->by_ipport, k,
						MAR_IPPORT_KEY_LEN,
						mar_hash(k, MAR_IPPORT_KEY_LEN,
							 0)))) {
			d = sl->inst;
			ctr = sl->ctr;
		} else if ((sl = mar_snap_find(&s->by_ip, k, MAR_IPKEY_LEN,
					       mar_hash(k, MAR_IPKEY_LEN, 0))) &&
			   !(port && sl->ctr == MAR_CTR_HOST_IP)) {
			d = sl->inst;
			ctr = mar_pick_container(d, port, -1);
		}
	}
	if (d) {
		out->dst = d->v;
		if (ctr >= 0 && (uint32_t)ctr < d->n_ctr)
			out->dst_container = &d->ctr[ctr].name;
	}
	return out->src || out->dst;
}
