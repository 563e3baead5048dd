/*
 * checker.c -- libmixd's checks: a connection to mixd's policy socket
 * (<mixd/check.h>), the checks in flight on it, and the answers kept for
 * reuse. See <mixd/client.h> for the contract.
 *
 * Checks in flight sit in a ring in the order they were sent, and mixd
 * answers in that order: the first answer read belongs to the check at
 * the head (its id says so, or the connection is dropped as bad). A
 * check whose time runs out is answered by the fail policy and stays in
 * the ring, abandoned, until mixd's late answer comes and is thrown away,
 * so that the answers after it still find their checks. A connection that
 * breaks fails every check not yet answered (their callbacks are due at
 * once); the next check makes a new one.
 *
 * A request waits in the out buffer while another awaits its answer on
 * the connection, and goes with the next dispatch, which the caller runs
 * to get that answer (a dispatch also sends, before it returns, what its
 * callbacks asked): so checks asked while others are answered travel
 * together, one write for many, and mixd answers them with one write too.
 * The wait is bounded by a round trip, since an answer is always coming.
 *
 * The cache keeps answers mixd said may be reused, keyed by the encoded
 * values of the attributes the decision depends on (absent ones marked),
 * per set of such attributes ("refset": usually one per config). Entries
 * are chained in a hash table and in an LRU list, key and message in one
 * allocation. An answer is stored with the key its request made under
 * the refset the answer names; the first request under a new refset
 * (after a reload that changed it) is not stored, the next ones are.
 *
 * Callbacks run with the lock released, so one may check again; the lock
 * is held while a call waits, so calls on one checker are served one at
 * a time.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mixd/check.h>
#include <mixd/client.h>

#include "ingest/client_internal.h"
#include "ingest/wire.h"

#define IN_FLIGHT_DEFAULT 1024
#define CACHE_DEFAULT 10000
#define REFSETS 4
/* Buffered requests past this go out without waiting for a dispatch. */
#define OUT_SOON (64u << 10)
/* Requests waiting to be sent, at most, beyond one of the largest. */
#define OUT_MAX (1u << 20)
#define IN_CAP (64u << 10) /* answers read at once; one is < 2 KiB */
#define KEY_MAX 4096u	   /* a request with a longer key is not cached */
/* How long a waiting call looks for its answer before it sleeps: an
 * answer usually comes within this, and a sleeping thread is woken tens
 * of microseconds late (more on a VM), which would be most of a check. */
#define SPIN_NS 50000u
#define NIL UINT32_MAX
#define DICT_WORDS ((MIXD_ATTR_DICT_COUNT + 63) / 64)
#define FRAME_HDR MIXD_FRAME_HDR

/* A set of attributes decisions depend on, as mixd named it. */
struct refset {
	uint32_t serial; /* 0: unused */
	uint64_t mask[DICT_WORDS];
};

/* A cached answer. */
struct centry {
	uint64_t hash;
	uint64_t expires_ns; /* CLOCK_MONOTONIC */
	uint32_t next;	     /* bucket chain, or the free list */
	uint32_t lru_prev, lru_next;
	uint32_t serial; /* of the refset the key was made under */
	int32_t code;
	int32_t uses; /* left */
	uint32_t key_len;
	uint16_t msg_len;
	uint8_t *blob; /* key, then message; NULL: a free entry */
};

/* A check in flight. */
struct pending {
	uint64_t id;
	uint64_t deadline;
	mixd_check_done done; /* NULL: answered already (abandoned) */
	void *arg;
	int rc;	       /* not 0: that connection broke (this is why) */
	uint16_t nq;
	uint32_t serial; /* refset of key; 0: not to be cached */
	uint32_t key_len;
	uint64_t hash;
	uint8_t *key; /* owned */
};

/* A callback to run, found with the lock held, run without it. */
struct completion {
	mixd_check_done fn;
	void *arg;
	int rc;
	struct mixd_check_answer a;
};

struct mixd_checker {
	pthread_mutex_t lock;
	struct sockaddr_un sa;
	int fd; /* -1: not connected */
	int ep; /* epoll over fd: mixd_checker_fd() */
	pid_t pid;
	int fail_policy;
	uint64_t next_id;
	bool want_out; /* fd registered for EPOLLOUT too */

	struct pending *q; /* ring, in the order sent */
	uint32_t qcap, qhead, qlen;
	uint32_t live;		/* of them, with a callback still to run */
	uint32_t awaiting;	/* of them, sent on fd and not answered */
	uint64_t next_deadline; /* no live deadline is earlier */

	uint8_t *out; /* requests to send: [out_off, out_len) */
	size_t out_off, out_len, out_cap;
	uint8_t *in; /* answers read, not yet taken: [in_off, in_len) */
	size_t in_off, in_len;

	uint32_t cache_max, n_cached; /* cache_max 0: no cache */
	struct centry *ents;	      /* cache_max, made at the first store */
	uint32_t *buckets;
	uint32_t nbuckets;
	uint32_t lru_head, lru_tail, free_head;
	struct refset refsets[REFSETS];
	unsigned cur; /* refsets[cur]: the last one an answer named */
	uint32_t next_serial;
	uint8_t *keybuf;		    /* KEY_MAX */
	int32_t at[MIXD_ATTR_DICT_COUNT]; /* where each attribute sits */

	struct mixd_checker_stats st;

	uint8_t *scratch; /* mixd_check()'s values, encoded */
	struct mixd_record rec; /* mixd_check_begin()'s builder */
	uint8_t *recbuf;
};

/* ---- the cache --------------------------------------------------------- */

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
	uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
	for (; n >= 8; n -= 8, p += 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
		h ^= h >> 31;
	}
	uint64_t w = 0;
	memcpy(&w, p, n);
	h = (h ^ w) * 0x94D049BB133111EBull;
	return h ^ (h >> 29);
}

/* Bytes the value of type @t at @p takes (@left there); 0: malformed. */
static size_t value_len(unsigned t, const uint8_t *p, size_t left)
{
	switch (t) {
	case MIXD_T_STRING:
	case MIXD_T_BYTES:
	case MIXD_T_EMAIL:
	case MIXD_T_URI:
	case MIXD_T_DNS_NAME:
		return left >= 4 && wire_get_le(p, 4) <= left - 4
			       ? 4 + (size_t)wire_get_le(p, 4)
			       : 0;
	case MIXD_T_INT64:
	case MIXD_T_DOUBLE:
	case MIXD_T_TIMESTAMP:
	case MIXD_T_DURATION:
		return left >= 8 ? 8 : 0;
	case MIXD_T_BOOL:
		return left >= 1 ? 1 : 0;
	case MIXD_T_IP:
		return left >= 1 && p[0] < left ? 1 + (size_t)p[0] : 0;
	case MIXD_T_STRING_MAP: {
		if (left < 4)
			return 0;
		size_t n = (size_t)wire_get_le(p, 4), off = 4;
		for (size_t i = 0; i < 2 * n; i++) {
			if (left - off < 4 || wire_get_le(p + off, 4) > left - off - 4)
				return 0;
			off += 4 + (size_t)wire_get_le(p + off, 4);
		}
		return off;
	}
	}
	return 0;
}

/*
 * The cache key of record @rec (@len bytes) under refset @rs, into
 * k->keybuf: per attribute of the set, ascending, its id and then its
 * encoding (type and value; the last one when it repeats) or 0xFF when
 * absent. Its length (0 for an empty set: every request has that key),
 * or -1 when it cannot be made (a malformed record, mixd would refuse it;
 * a key over KEY_MAX).
 */
static ssize_t make_key(struct mixd_checker *k, const struct refset *rs,
			const uint8_t *rec, size_t len)
{
	for (unsigned w = 0; w < DICT_WORDS; w++)
		for (uint64_t m = rs->mask[w]; m; m &= m - 1)
			k->at[w * 64 + (unsigned)__builtin_ctzll(m)] = -1;
	for (size_t off = 0; off < len;) {
		if (len - off < 3)
			return -1;
		unsigned id = (unsigned)wire_get_le(rec + off, 2);
		size_t vl = value_len(rec[off + 2], rec + off + 3, len - off - 3);
		if (id >= MIXD_ATTR_DICT_COUNT || !vl)
			return -1;
		if (rs->mask[id / 64] >> (id % 64) & 1) {
			if (vl + 1 > KEY_MAX)
				return -1;
			k->at[id] = (int32_t)off;
		}
		off += 3 + vl;
	}
	size_t n = 0;
	for (unsigned w = 0; w < DICT_WORDS; w++)
		for (uint64_t m = rs->mask[w]; m; m &= m - 1) {
			unsigned id = w * 64 + (unsigned)__builtin_ctzll(m);
			size_t vl = 0;
			if (k->at[id] >= 0)
				vl = 1 + value_len(rec[k->at[id] + 2],
						   rec + k->at[id] + 3,
						   len - (size_t)k->at[id] - 3);
			if (n + 2 + (vl ? vl : 1) > KEY_MAX)
				return -1;
			wire_put_le(k->keybuf + n, id, 2);
			n += 2;
			if (vl)
				memcpy(k->keybuf + n, rec + k->at[id] + 2, vl);
			else
				k->keybuf[n] = 0xFF;
			n += vl ? vl : 1;
		}
	return (ssize_t)n;
}

static void lru_unlink(struct mixd_checker *k, uint32_t i)
{
	struct centry *e = &k->ents[i];
	if (e->lru_prev != NIL)
		k->ents[e->lru_prev].lru_next = e->lru_next;
	else
		k->lru_head = e->lru_next;
	if (e->lru_next != NIL)
		k->ents[e->lru_next].lru_prev = e->lru_prev;
	else
		k->lru_tail = e->lru_prev;
}

static void lru_push(struct mixd_checker *k, uint32_t i)
{
	struct centry *e = &k->ents[i];
	e->lru_prev = NIL;
	e->lru_next = k->lru_head;
	if (k->lru_head != NIL)
		k->ents[k->lru_head].lru_prev = i;
	else
		k->lru_tail = i;
	k->lru_head = i;
}

static void cache_remove(struct mixd_checker *k, uint32_t i)
{
	struct centry *e = &k->ents[i];
	uint32_t *link = &k->buckets[e->hash & (k->nbuckets - 1)];
	while (*link != i)
		link = &k->ents[*link].next;
	*link = e->next;
	lru_unlink(k, i);
	free(e->blob);
	e->blob = NULL;
	e->next = k->free_head;
	k->free_head = i;
	k->n_cached--;
}

/* The live entry for (@serial, key @key of @len bytes, @h), or NIL. */
static uint32_t cache_find(struct mixd_checker *k, uint32_t serial,
			   const uint8_t *key, size_t len, uint64_t h,
			   uint64_t now)
{
	if (!k->n_cached)
		return NIL;
	for (uint32_t i = k->buckets[h & (k->nbuckets - 1)]; i != NIL;) {
		struct centry *e = &k->ents[i];
		uint32_t next = e->next;
		if (e->hash == h && e->serial == serial && e->key_len == len &&
		    !memcmp(e->blob, key, len)) {
			if (e->expires_ns > now && e->uses > 0)
				return i;
			cache_remove(k, i);
			return NIL;
		}
		i = next;
	}
	return NIL;
}

/* Answer from the cache, if it can: true with *@a filled. */
static bool cache_answer(struct mixd_checker *k, const uint8_t *rec,
			 size_t len, uint64_t now, struct mixd_check_answer *a)
{
	for (unsigned n = 0; n < REFSETS; n++) {
		const struct refset *rs = &k->refsets[(k->cur + n) % REFSETS];
		if (!rs->serial)
			continue;
		ssize_t kl = make_key(k, rs, rec, len);
		uint32_t i = kl >= 0 ? cache_find(k, rs->serial, k->keybuf,
						  (size_t)kl,
						  hash_bytes(k->keybuf,
							     (size_t)kl),
						  now)
				     : NIL;
		if (i == NIL)
			continue;
		struct centry *e = &k->ents[i];
		memset(a, 0, offsetof(struct mixd_check_answer, quotas));
		a->code = e->code;
		memcpy(a->message, e->blob + e->key_len, e->msg_len);
		a->message[e->msg_len] = 0;
		a->valid_duration_ns = (int64_t)(e->expires_ns - now);
		a->valid_use_count = --e->uses;
		a->from_mixd = 1;
		a->cached = 1;
		if (!e->uses) {
			cache_remove(k, i);
		} else {
			lru_unlink(k, i);
			lru_push(k, i);
		}
		return true;
	}
	return false;
}

/* The refset an answer names (its ids, @n of them), made current: its
 * serial, or 0 when it cannot be told (a malformed list). */
static uint32_t refset_of(struct mixd_checker *k, const uint8_t *ids,
			  size_t n)
{
	struct refset rs = {0};
	for (size_t i = 0; i < n; i++) {
		unsigned id = (unsigned)wire_get_le(ids + 2 * i, 2);
		if (id >= MIXD_ATTR_DICT_COUNT)
			return 0;
		rs.mask[id / 64] |= 1ull << (id % 64);
	}
	for (unsigned i = 0; i < REFSETS; i++)
		if (k->refsets[i].serial &&
		    !memcmp(k->refsets[i].mask, rs.mask, sizeof rs.mask)) {
			k->cur = i;
			return k->refsets[i].serial;
		}
	/* a new one (a reload changed the config) takes the oldest's place;
	 * the entries made under that one are never found again and leave
	 * as the LRU's tail */
	k->cur = (k->cur + REFSETS - 1) % REFSETS;
	rs.serial = ++k->next_serial ? k->next_serial : ++k->next_serial;
	k->refsets[k->cur] = rs;
	return rs.serial;
}

/* Keep @a, the answer to @p, if mixd allowed it: @p's key passes on to
 * the cache. */
static void cache_store(struct mixd_checker *k, struct pending *p,
			const struct mixd_check_answer *a, uint32_t serial,
			uint64_t now)
{
	if (!p->key || p->serial != serial || a->valid_duration_ns <= 0 ||
	    a->valid_use_count <= 0 || a->code == 3 /* INVALID_ARGUMENT */ ||
	    a->code == 13 /* INTERNAL */)
		return;
	if (!k->ents) {
		uint32_t nb = 1;
		while (nb < k->cache_max)
			nb <<= 1;
		k->ents = calloc(k->cache_max, sizeof *k->ents);
		k->buckets = malloc(nb * sizeof *k->buckets);
		if (!k->ents || !k->buckets) {
			free(k->ents);
			free(k->buckets);
			k->ents = NULL;
			k->buckets = NULL;
			return;
		}
		k->nbuckets = nb;
		memset(k->buckets, 0xFF, nb * sizeof *k->buckets);
		for (uint32_t i = 0; i < k->cache_max; i++)
			k->ents[i].next = i + 1 < k->cache_max ? i + 1 : NIL;
		k->free_head = 0;
		k->lru_head = k->lru_tail = NIL;
	}
	uint32_t old = cache_find(k, serial, p->key, p->key_len, p->hash, 0);
	if (old != NIL) /* two checks of one key were in flight */
		cache_remove(k, old);
	if (k->free_head == NIL)
		cache_remove(k, k->lru_tail);
	size_t ml = strlen(a->message);
	uint8_t *blob = realloc(p->key, p->key_len + ml + 1);
	if (!blob)
		return;
	p->key = NULL;
	memcpy(blob + p->key_len, a->message, ml);
	uint32_t i = k->free_head;
	struct centry *e = &k->ents[i];
	k->free_head = e->next;
	*e = (struct centry){.hash = p->hash,
			     .expires_ns = now + (uint64_t)a->valid_duration_ns,
			     .serial = serial,
			     .code = a->code,
			     .uses = a->valid_use_count,
			     .key_len = p->key_len,
			     .msg_len = (uint16_t)ml,
			     .blob = blob};
	uint32_t *b = &k->buckets[p->hash & (k->nbuckets - 1)];
	e->next = *b;
	*b = i;
	lru_push(k, i);
	k->n_cached++;
}

/* ---- the connection ---------------------------------------------------- */

static void watch(struct mixd_checker *k, bool out)
{
	if (k->fd < 0 || out == k->want_out)
		return;
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0u)};
	epoll_ctl(k->ep, EPOLL_CTL_MOD, k->fd, &ev);
	k->want_out = out;
}

/* The connection broke (or is bad): every check not yet answered fails
 * with @rc (its requests, sent or waiting, are gone with it), at once:
 * the next dispatch runs their callbacks. Taken out of the epoll set
 * first: after fork() a child may hold the socket open, and close()
 * alone would leave it there. */
static void conn_fail(struct mixd_checker *k, int rc)
{
	if (k->fd < 0)
		return;
	epoll_ctl(k->ep, EPOLL_CTL_DEL, k->fd, NULL);
	close(k->fd);
	k->fd = -1;
	for (uint32_t n = 0; n < k->qlen; n++) {
		struct pending *p = &k->q[(k->qhead + n) % k->qcap];
		if (!p->rc)
			p->rc = rc;
	}
	k->out_off = k->out_len = 0;
	k->in_off = k->in_len = 0;
	k->awaiting = 0;
	k->next_deadline = 0; /* their callbacks are due: dispatch now */
}

/* The connection failed in a send or a recv: whatever the call said
 * (EPIPE, ECONNRESET, ENOBUFS...), it means what client.h calls
 * -ECONNRESET, mixd went away. */
static void conn_broken(struct mixd_checker *k)
{
	conn_fail(k, -ECONNRESET);
}

/* Connect and say hello, unless connected: 0 or -errno. A full backlog
 * (EAGAIN) is tried again until @deadline when @wait, else it fails. */
static int connect_mixd(struct mixd_checker *k, uint64_t deadline, bool wait)
{
	if (k->fd >= 0)
		return 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	while (connect(fd, (struct sockaddr *)&k->sa, sizeof k->sa) != 0) {
		int e = errno;
		if (e == EINTR)
			continue;
		if (e != EAGAIN || !wait ||
		    now_ns(CLOCK_MONOTONIC) >= deadline) {
			close(fd);
			return e == EAGAIN && wait ? -ETIMEDOUT : -e;
		}
		struct timespec ts = {0, 200000};
		nanosleep(&ts, NULL);
	}
	struct mixd_hello h = {.version = MIXD_CHECK_VERSION,
			       .kind = MIXD_HELLO_CHECK};
	memcpy(h.marker, MIXD_HELLO_MARKER, sizeof h.marker);
	struct epoll_event ev = {.events = EPOLLIN};
	if (send(fd, &h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h ||
	    epoll_ctl(k->ep, EPOLL_CTL_ADD, fd, &ev)) {
		close(fd);
		return -ECONNRESET;
	}
	k->fd = fd;
	k->want_out = false;
	return 0;
}

/* Send what waits to be sent, without waiting. */
static void flush_out(struct mixd_checker *k)
{
	while (k->fd >= 0 && k->out_off < k->out_len) {
		ssize_t n = send(k->fd, k->out + k->out_off,
				 k->out_len - k->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			k->out_off += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			break;
		} else {
			conn_broken(k);
			return;
		}
	}
	if (k->out_off == k->out_len)
		k->out_off = k->out_len = 0;
	watch(k, k->out_off < k->out_len);
}

/* Read what answers have come, without waiting. */
static void read_in(struct mixd_checker *k)
{
	/* the answers taken go, once a read, not once an answer */
	memmove(k->in, k->in + k->in_off, k->in_len - k->in_off);
	k->in_len -= k->in_off;
	k->in_off = 0;
	while (k->fd >= 0 && k->in_len < IN_CAP) {
		ssize_t n = recv(k->fd, k->in + k->in_len, IN_CAP - k->in_len,
				 MSG_DONTWAIT);
		if (n > 0) {
			k->in_len += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return;
		} else {
			conn_broken(k);
			return;
		}
	}
}

/* After fork(), in the child: the parent's connection and checks are not
 * ours. The cache is: its answers hold. */
static void after_fork(struct mixd_checker *k)
{
	pid_t me = client_process();
	if (k->pid == me)
		return;
	k->pid = me;
	if (k->fd >= 0)
		close(k->fd);
	k->fd = -1;
	/* the epoll set is shared with the parent: a new one, same number */
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep >= 0) {
		dup3(ep, k->ep, O_CLOEXEC);
		close(ep);
	}
	for (; k->qlen; k->qlen--, k->qhead = (k->qhead + 1) % k->qcap)
		free(k->q[k->qhead].key);
	k->live = k->awaiting = 0;
	k->out_off = k->out_len = k->in_off = k->in_len = 0;
}

/* ---- answers ----------------------------------------------------------- */

static void fail_answer(const struct mixd_checker *k, int rc,
			struct mixd_check_answer *out)
{
	memset(out, 0, offsetof(struct mixd_check_answer, quotas));
	if (rc == -EINVAL || rc == -EMSGSIZE) {
		/* the caller's to fix: never let through by a fail-open policy */
		out->code = 3; /* INVALID_ARGUMENT */
		snprintf(out->message, sizeof out->message,
			 "the request cannot be sent: %s", strerror(-rc));
		return;
	}
	out->code = k->fail_policy == MIXD_FAIL_CLOSE ? 14 /* UNAVAILABLE */
						      : 0;
	snprintf(out->message, sizeof out->message, "mixd did not answer: %s",
		 strerror(-rc));
}

/*
 * The answer payload @p (@len bytes) to a check of @id with @nq quotas,
 * into *@out, and the ids of the attributes it depends on (*@refs, *@nrefs;
 * *@refs NULL: not to be reused). 0 or -EPROTO.
 */
static int decode_answer(const uint8_t *p, size_t len, uint64_t id, size_t nq,
			 struct mixd_check_answer *out, const uint8_t **refs,
			 size_t *nrefs)
{
	const uint8_t *e = p + len;
	if (len < 8 + 4 + 8 + 4 + 2 || wire_get_le(p, 8) != id)
		return -EPROTO;
	memset(out, 0, offsetof(struct mixd_check_answer, quotas));
	out->code = (int)(int32_t)wire_get_le(p + 8, 4);
	out->valid_duration_ns = (int64_t)wire_get_le(p + 12, 8);
	out->valid_use_count = (int32_t)wire_get_le(p + 20, 4);
	size_t mlen = (size_t)wire_get_le(p + 24, 2);
	p += 26;
	if ((size_t)(e - p) < mlen + 2 || mlen >= sizeof out->message)
		return -EPROTO;
	memcpy(out->message, p, mlen);
	out->message[mlen] = 0;
	p += mlen;
	size_t got = (size_t)wire_get_le(p, 2);
	p += 2;
	if ((got != nq && got != 0) || (size_t)(e - p) < 16 * got + 2 ||
	    (got && out->code != 0))
		return -EPROTO;
	out->n_quotas = got;
	for (size_t i = 0; i < got; i++, p += 16) {
		out->quotas[i].granted = (int64_t)wire_get_le(p, 8);
		out->quotas[i].valid_duration_ns = (int64_t)wire_get_le(p + 8, 8);
	}
	size_t n = (size_t)wire_get_le(p, 2);
	p += 2;
	*refs = n == MIXD_CHECK_REFS_NONE ? NULL : p;
	*nrefs = n == MIXD_CHECK_REFS_NONE ? 0 : n;
	if ((size_t)(e - p) != 2 * *nrefs)
		return -EPROTO;
	out->from_mixd = 1;
	return 0;
}

static struct pending *head(struct mixd_checker *k)
{
	return k->qlen ? &k->q[k->qhead] : NULL;
}

static void pop(struct mixd_checker *k)
{
	free(k->q[k->qhead].key);
	k->qhead = (k->qhead + 1) % k->qcap;
	k->qlen--;
}

/* Hand @p's callback its answer (in @c->a, or the fail policy's for
 * @rc): fill @c and pop @p. */
static void complete(struct mixd_checker *k, struct pending *p, int rc,
		     struct completion *c)
{
	c->fn = p->done;
	c->arg = p->arg;
	c->rc = rc;
	if (rc) {
		fail_answer(k, rc, &c->a);
		k->st.failed++;
	} else {
		k->st.answered++;
	}
	p->done = NULL;
	k->live--;
}

/* With the lock held: the next callback to run, if any. */
static bool next_completion(struct mixd_checker *k, uint64_t now,
			    struct completion *c)
{
	struct pending *p;
	/* checks of a connection that broke */
	while ((p = head(k)) && p->rc) {
		bool run = p->done;
		if (run)
			complete(k, p, p->rc, c);
		pop(k);
		if (run)
			return true;
	}
	/* answers read */
	while (k->in_len - k->in_off >= FRAME_HDR && (p = head(k))) {
		const uint8_t *f = k->in + k->in_off;
		uint64_t len = wire_get_le(f, 4);
		if (wire_get_le(f + 4, 4) != MIXD_FRAME_CHECK_ANSWER ||
		    len > MIXD_CHECK_FRAME_MAX ||
		    FRAME_HDR + MIXD_FRAME_ALIGN(len) > IN_CAP) {
			conn_fail(k, -EPROTO);
			return next_completion(k, now, c);
		}
		size_t framed = FRAME_HDR + MIXD_FRAME_ALIGN(len);
		if (k->in_len - k->in_off < framed)
			break;
		const uint8_t *refs;
		size_t nrefs;
		int rc = decode_answer(f + FRAME_HDR, len, p->id, p->nq,
				       &c->a, &refs, &nrefs);
		if (rc) {
			conn_fail(k, rc);
			return next_completion(k, now, c);
		}
		k->awaiting--;
		bool run = p->done;
		if (run) {
			uint32_t serial = refs && k->cache_max
						  ? refset_of(k, refs, nrefs)
						  : 0;
			if (serial)
				cache_store(k, p, &c->a, serial, now);
			complete(k, p, 0, c);
		}
		pop(k);
		k->in_off += framed;
		if (run)
			return true;
	}
	if (k->in_len > k->in_off && !k->qlen) { /* an answer unasked for */
		conn_fail(k, -EPROTO);
		return false;
	}
	/* checks whose time is up */
	if (now < k->next_deadline)
		return false;
	uint64_t next = UINT64_MAX;
	for (uint32_t n = 0; n < k->qlen; n++) {
		p = &k->q[(k->qhead + n) % k->qcap];
		if (!p->done)
			continue;
		if (p->deadline <= now) {
			/* stays, abandoned, for mixd's answer */
			complete(k, p, -ETIMEDOUT, c);
			return true;
		}
		if (p->deadline < next)
			next = p->deadline;
	}
	k->next_deadline = next;
	return false;
}

/* ---- checks ------------------------------------------------------------ */

/* What a check asks: values to encode (@values), or a record built. */
struct ask {
	bool values;
	const struct mixd_value *v;
	size_t n;
	const uint8_t *rec;
	size_t rec_len;
	const char *dedup;
	const struct mixd_check_quota *q;
	size_t nq;
	int rc; /* -EINVAL, -EMSGSIZE: it cannot be sent */
	/* request_size()'s, for write_request() */
	size_t dlen;
	uint16_t qlen[MIXD_CHECK_QUOTAS];
};

/* The framed size of @a's request, or -errno; notes the lengths of its
 * strings in @a. */
static ssize_t request_size(struct ask *a)
{
	size_t dlen = a->dedup ? strlen(a->dedup) : 0;
	if (a->rc)
		return a->rc;
	if (a->nq > MIXD_CHECK_QUOTAS || dlen > MIXD_CHECK_NAME_MAX ||
	    (a->nq && !a->q))
		return -EINVAL;
	a->dlen = dlen;
	size_t len = 8 + 2 + dlen + 2 + 4 + a->rec_len;
	for (size_t i = 0; i < a->nq; i++) {
		size_t nl = a->q[i].name ? strlen(a->q[i].name) : 0;
		if (!nl || nl > MIXD_CHECK_NAME_MAX)
			return -EINVAL;
		a->qlen[i] = (uint16_t)nl;
		len += 2 + nl + 9;
	}
	return (ssize_t)(FRAME_HDR + MIXD_FRAME_ALIGN(len));
}

/* Write @a's request, sized by request_size(), as check @id at @o
 * (@framed bytes). */
static void write_request(uint8_t *o, size_t framed, uint64_t id,
			  const struct ask *a)
{
	size_t dlen = a->dlen;
	uint8_t *p = o + FRAME_HDR;
	p = wire_put_le(p, id, 8);
	p = wire_put_le(p, dlen, 2);
	memcpy(p, a->dedup ? a->dedup : "", dlen);
	p += dlen;
	p = wire_put_le(p, a->nq, 2);
	for (size_t i = 0; i < a->nq; i++) {
		size_t nl = a->qlen[i];
		p = wire_put_le(p, nl, 2);
		memcpy(p, a->q[i].name, nl);
		p += nl;
		p = wire_put_le(p, (uint64_t)a->q[i].amount, 8);
		*p++ = a->q[i].best_effort ? 1 : 0;
	}
	p = wire_put_le(p, a->rec_len, 4);
	memcpy(p, a->rec, a->rec_len);
	p += a->rec_len;
	wire_put_le(o, (uint64_t)(p - o - FRAME_HDR), 4);
	wire_put_le(o + 4, MIXD_FRAME_CHECK, 4);
	memset(p, 0, framed - (size_t)(p - o));
}

/* Room for @n more bytes in the out buffer: 0 or -ENOBUFS. */
static int out_room(struct mixd_checker *k, size_t n)
{
	if (k->out_len + n <= k->out_cap)
		return 0;
	flush_out(k);
	if (k->out_off) {
		memmove(k->out, k->out + k->out_off, k->out_len - k->out_off);
		k->out_len -= k->out_off;
		k->out_off = 0;
	}
	if (k->out_len + n <= k->out_cap)
		return 0;
	if (k->out_len && k->out_len + n > OUT_MAX + FRAME_HDR +
						   MIXD_CHECK_FRAME_MAX)
		return -ENOBUFS;
	size_t cap = k->out_cap ? k->out_cap : 16384;
	while (cap < k->out_len + n)
		cap *= 2;
	uint8_t *b = realloc(k->out, cap);
	if (!b)
		return -ENOBUFS;
	k->out = b;
	k->out_cap = cap;
	return 0;
}

/* A connection, and room in its out buffer for @framed bytes: 0, or
 * -errno. */
static int ready_to_send(struct mixd_checker *k, size_t framed,
			 uint64_t deadline, bool wait)
{
	int rc = connect_mixd(k, deadline, wait);
	if (!rc)
		rc = out_room(k, framed);
	if (!rc && k->fd < 0)
		rc = -ECONNRESET;
	return rc;
}

/* Check @p's request (@a, @framed bytes) into the out buffer. */
static void put_request(struct mixd_checker *k, const struct pending *p,
			const struct ask *a, size_t framed)
{
	write_request(k->out + k->out_len, framed, p->id, a);
	k->out_len += framed;
}

/*
 * Check @p (@a, @framed bytes), the only one in flight, found its
 * connection closed by the time it was sent: mixd went away while the
 * connection stood idle (a restart), and the check never left. It goes
 * once more, on a new connection; else it fails as it did. (The failed
 * connection left next_deadline due: the next dispatch recomputes it.)
 */
static void resend(struct mixd_checker *k, struct pending *p,
		   const struct ask *a, size_t framed, uint64_t deadline,
		   bool wait)
{
	int rc = ready_to_send(k, framed, deadline, wait);
	if (rc) {
		p->rc = rc;
		return;
	}
	p->rc = 0;
	put_request(k, p, a, framed);
	k->awaiting = 1;
	flush_out(k);
}

/*
 * Ask @a: from the cache, or sent (or waiting to be), or failed at once.
 * @done runs here when the answer is known at once (with the lock
 * released), else from a dispatch. @wait: a full backlog may be waited
 * for (a blocking call).
 */
static void submit(struct mixd_checker *k, const struct ask *in,
		   int timeout_ms, bool wait, mixd_check_done done, void *arg)
{
	uint64_t now = now_ns(CLOCK_MONOTONIC);
	uint64_t deadline = now + (uint64_t)timeout_ms * 1000000u;
	struct completion c = {.fn = done, .arg = arg};
	bool at_once = false;
	struct ask ask = *in, *a = &ask;
	pthread_mutex_lock(&k->lock);
	after_fork(k);
	k->st.checks++;
	if (a->values) { /* into the checker's scratch: under the lock */
		ssize_t len = a->n && !a->v
				      ? -EINVAL
				      : client_dict_values_size(a->v, a->n);
		if (len < 0)
			a->rc = (int)len;
		else
			a->rec_len = (size_t)(client_encode_values(
						      a->v, a->n, k->scratch) -
					      k->scratch);
		a->rec = k->scratch;
	}
	ssize_t framed = request_size(a);
	int rc = framed < 0 ? (int)framed : 0;
	if (!rc && !a->nq && k->cache_max &&
	    cache_answer(k, a->rec, a->rec_len, now, &c.a)) {
		k->st.cache_hits++;
		at_once = true;
		goto out;
	}
	if (!rc && k->qlen == k->qcap && !head(k)->done) {
		/* Full, the oldest check given up: mixd does not answer.
		 * Start again, and make room now of the checks nobody waits
		 * for: with none of them taken off, every later check found
		 * the ring full, for good. */
		conn_fail(k, -ETIMEDOUT);
		struct pending *h;
		while ((h = head(k)) && h->rc && !h->done)
			pop(k);
	}
	if (!rc && k->qlen == k->qcap)
		rc = -ENOBUFS; /* full of checks their callers wait for */
	if (!rc)
		rc = ready_to_send(k, (size_t)framed, deadline, wait);
	if (rc) {
		fail_answer(k, rc, &c.a);
		c.rc = rc;
		k->st.failed++;
		at_once = true;
		goto out;
	}
	struct pending *p = &k->q[(k->qhead + k->qlen) % k->qcap];
	*p = (struct pending){.id = ++k->next_id,
			      .deadline = deadline,
			      .done = done,
			      .arg = arg,
			      .nq = (uint16_t)a->nq};
	const struct refset *rs = &k->refsets[k->cur];
	if (!a->nq && k->cache_max && rs->serial) {
		ssize_t kl = make_key(k, rs, a->rec, a->rec_len);
		/* (+1: an empty key is a key, and malloc(0) may be NULL) */
		if (kl >= 0 && (p->key = malloc((size_t)kl + 1))) {
			memcpy(p->key, k->keybuf, (size_t)kl);
			p->key_len = (uint32_t)kl;
			p->hash = hash_bytes(p->key, (size_t)kl);
			p->serial = rs->serial;
		}
	}
	put_request(k, p, a, (size_t)framed);
	k->qlen++;
	k->live++;
	if (deadline < k->next_deadline)
		k->next_deadline = deadline;
	/* alone: at once; else with the dispatch the answers bring */
	bool idle = !k->awaiting;
	if (!k->awaiting++ || k->out_len - k->out_off >= OUT_SOON)
		flush_out(k);
	if (idle && p->rc == -ECONNRESET)
		resend(k, p, a, (size_t)framed, deadline, wait);
out:
	pthread_mutex_unlock(&k->lock);
	if (at_once)
		done(arg, c.rc, &c.a);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/* Dispatch until a callback ran, @until (CLOCK_MONOTONIC ns) passed, or
 * nothing is left to wait for; spinning first when @spin. */
static int dispatch(struct mixd_checker *k, uint64_t until, bool spin)
{
	struct completion c;
	int ran = 0;
	uint64_t spin_until = 0;
	pthread_mutex_lock(&k->lock);
	after_fork(k);
	for (;;) {
		flush_out(k);
		read_in(k);
		uint64_t now = now_ns(CLOCK_MONOTONIC);
		while (next_completion(k, now, &c)) {
			pthread_mutex_unlock(&k->lock);
			c.fn(c.arg, c.rc, &c.a);
			pthread_mutex_lock(&k->lock);
			ran++;
		}
		if (ran || !k->live || now >= until)
			break;
		if (spin && !spin_until)
			spin_until = now + SPIN_NS;
		if (now < spin_until) {
			cpu_relax();
			continue;
		}
		uint64_t wake = until < k->next_deadline ? until
							 : k->next_deadline;
		int ms = wake == UINT64_MAX
				 ? -1
				 : (int)((wake - now + 999999) / 1000000);
		struct pollfd pf = {
			.fd = k->fd,
			.events = (short)(POLLIN | (k->out_off < k->out_len
							    ? POLLOUT
							    : 0))};
		poll(&pf, 1, ms);
	}
	flush_out(k); /* what callbacks asked while answers were read */
	pthread_mutex_unlock(&k->lock);
	return ran;
}

API int mixd_checker_dispatch(mixd_checker *k, int wait_ms)
{
	if (!k)
		return -EINVAL;
	uint64_t until = wait_ms < 0 ? UINT64_MAX
				     : now_ns(CLOCK_MONOTONIC) +
					       (uint64_t)wait_ms * 1000000u;
	return dispatch(k, until, false);
}

/* A blocking check waits for this. */
struct waiter {
	bool done; /* atomic: set by whichever thread ran the callback */
	int rc;
	struct mixd_check_answer *out;
};

static void wake_waiter(void *arg, int rc, const struct mixd_check_answer *a)
{
	struct waiter *w = arg;
	w->rc = rc;
	memcpy(w->out, a, offsetof(struct mixd_check_answer, quotas) +
				 a->n_quotas * sizeof a->quotas[0]);
	__atomic_store_n(&w->done, true, __ATOMIC_RELEASE);
}

static int check_blocking(struct mixd_checker *k, const struct ask *a,
			  int timeout_ms, struct mixd_check_answer *out)
{
	struct waiter w = {.out = out};
	submit(k, a, timeout_ms, true, wake_waiter, &w);
	/* its own deadline ends the wait at the latest */
	while (!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE))
		dispatch(k, UINT64_MAX, true);
	return w.rc;
}

static struct ask ask_record(struct mixd_checker *k, mixd_record *r,
			     const char *dedup, const struct mixd_check_quota *q,
			     size_t nq)
{
	struct ask a = {.rec = r->w.buf, .rec_len = r->w.len, .dedup = dedup,
			.q = q, .nq = nq};
	if (r != &k->rec || r->invalid)
		a.rc = -EINVAL;
	else if (r->w.overflow)
		a.rc = -EMSGSIZE;
	return a;
}

API int mixd_check(mixd_checker *k, const struct mixd_value *v, size_t n,
		   const char *dedup_id, const struct mixd_check_quota *q,
		   size_t nq, int timeout_ms, struct mixd_check_answer *out)
{
	if (!k || !out || timeout_ms <= 0)
		return -EINVAL;
	struct ask a = {.values = true, .v = v, .n = n, .dedup = dedup_id,
			.q = q, .nq = nq};
	return check_blocking(k, &a, timeout_ms, out);
}

API int mixd_check_record(mixd_checker *k, mixd_record *r,
			  const char *dedup_id,
			  const struct mixd_check_quota *q, size_t nq,
			  int timeout_ms, struct mixd_check_answer *out)
{
	if (!k || !out || !r || timeout_ms <= 0)
		return -EINVAL;
	struct ask a = ask_record(k, r, dedup_id, q, nq);
	return check_blocking(k, &a, timeout_ms, out);
}

API int mixd_check_async(mixd_checker *k, const struct mixd_value *v,
			 size_t n, const char *dedup_id,
			 const struct mixd_check_quota *q, size_t nq,
			 int timeout_ms, mixd_check_done done, void *arg)
{
	if (!k || !done || timeout_ms <= 0)
		return -EINVAL;
	struct ask a = {.values = true, .v = v, .n = n, .dedup = dedup_id,
			.q = q, .nq = nq};
	submit(k, &a, timeout_ms, false, done, arg);
	return 0;
}

API int mixd_check_record_async(mixd_checker *k, mixd_record *r,
				const char *dedup_id,
				const struct mixd_check_quota *q, size_t nq,
				int timeout_ms, mixd_check_done done,
				void *arg)
{
	if (!k || !r || !done || timeout_ms <= 0)
		return -EINVAL;
	struct ask a = ask_record(k, r, dedup_id, q, nq);
	submit(k, &a, timeout_ms, false, done, arg);
	return 0;
}

API int mixd_checker_fd(mixd_checker *k)
{
	if (!k)
		return -EINVAL;
	pthread_mutex_lock(&k->lock);
	after_fork(k);
	int ep = k->ep;
	pthread_mutex_unlock(&k->lock);
	return ep;
}

API int mixd_checker_timeout(mixd_checker *k)
{
	if (!k)
		return -EINVAL;
	pthread_mutex_lock(&k->lock);
	int ms = -1;
	if (k->live) {
		uint64_t now = now_ns(CLOCK_MONOTONIC);
		ms = k->next_deadline <= now
			     ? 0
			     : (int)((k->next_deadline - now + 999999) / 1000000);
	}
	pthread_mutex_unlock(&k->lock);
	return ms;
}

API void mixd_checker_stats(mixd_checker *k, struct mixd_checker_stats *out)
{
	pthread_mutex_lock(&k->lock);
	*out = k->st;
	out->cached = k->n_cached;
	out->in_flight = k->live;
	pthread_mutex_unlock(&k->lock);
}

API int mixd_checker_open(const char *address,
			  const struct mixd_checker_options *o,
			  mixd_checker **out)
{
	struct mixd_checker_options opt = {0};
	if (o)
		opt = *o;
	if (!address || !out ||
	    (opt.fail_policy != MIXD_FAIL_OPEN &&
	     opt.fail_policy != MIXD_FAIL_CLOSE) ||
	    opt.max_in_flight < 0)
		return -EINVAL;
	struct sockaddr_un sa;
	if (client_parse_address(address, &sa))
		return -EINVAL;
	struct mixd_checker *k = calloc(1, sizeof *k);
	if (!k)
		return -ENOMEM;
	pthread_mutex_init(&k->lock, NULL);
	k->sa = sa;
	k->fd = -1;
	k->fail_policy = opt.fail_policy;
	k->qcap = opt.max_in_flight ? (uint32_t)opt.max_in_flight
				    : IN_FLIGHT_DEFAULT;
	k->cache_max = opt.cache_entries < 0	 ? 0
		       : opt.cache_entries == 0 ? CACHE_DEFAULT
						: (uint32_t)opt.cache_entries;
	k->next_deadline = UINT64_MAX;
	k->pid = client_process();
	k->ep = epoll_create1(EPOLL_CLOEXEC);
	k->q = calloc(k->qcap, sizeof *k->q);
	k->in = malloc(IN_CAP);
	k->keybuf = malloc(KEY_MAX);
	k->scratch = malloc(MIXD_RECORD_MAX + REC_SLACK);
	k->recbuf = malloc(MIXD_RECORD_MAX + REC_SLACK);
	if (k->ep < 0 || !k->q || !k->in || !k->keybuf || !k->scratch ||
	    !k->recbuf) {
		mixd_checker_close(k);
		return -ENOMEM;
	}
	*out = k;
	return 0;
}

API void mixd_checker_close(mixd_checker *k)
{
	if (!k)
		return;
	if (k->fd >= 0)
		close(k->fd);
	if (k->ep >= 0)
		close(k->ep);
	for (; k->q && k->qlen; k->qlen--, k->qhead = (k->qhead + 1) % k->qcap)
		free(k->q[k->qhead].key);
	for (uint32_t i = 0; k->ents && i < k->cache_max; i++)
		free(k->ents[i].blob);
	free(k->ents);
	free(k->buckets);
	free(k->q);
	free(k->out);
	free(k->in);
	free(k->keybuf);
	free(k->scratch);
	free(k->recbuf);
	pthread_mutex_destroy(&k->lock);
	free(k);
}

API mixd_record *mixd_check_begin(mixd_checker *k)
{
	k->rec.client = NULL;
	k->rec.ring = NULL;
	k->rec.invalid = false;
	wire_init(&k->rec.w, k->recbuf, MIXD_RECORD_MAX);
	return &k->rec;
}

API const char *mixd_code_name(int code)
{
	return mixd_check_code_name(code);
}
