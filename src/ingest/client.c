/*
 * client.c -- libmixd. See <mixd/client.h> for the contract.
 *
 * Shape: every (thread, client) pair owns a producer ring (struct tl_ring)
 * and a record builder. The producer thread touches only its ring; the
 * client's background thread owns the connections: it connects, hands each
 * ring to mixd (shared memory) or sends its bytes (socket), and reconnects
 * after mixd restarts. The two meet only at the ring's counters, ordered as
 * described in ring.h, and at the client's list of rings, under a mutex
 * taken once per ring creation.
 *
 * Lifetime: a ring is referenced by its thread (until the thread exits) and
 * by its client (until the client closes, or the ring is retired and
 * drained). Whoever drops the last reference frees it; so a thread may
 * outlive its client and a client its threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mixd/client.h>


#include "ingest/ring.h"
#include "ingest/client_internal.h"
#include "ingest/wire.h"

#define CUSTOM_BASE 0x8000u
#define CUSTOM_MAX 1024u
/* A largest record must fit even right after a wrap (see ring_push). */
#define RING_MIN (256u << 10)
#define BACKOFF_MIN_MS 10u
/* Rings of exited threads kept for mixd while it is away (see bg_main). */
#define RETIRED_MAX 64u
#define CONNECTION_LASTED_NS 1000000000ull
#define SEND_CHUNK (256u << 10)

struct tl_ring {
	/* The producer thread's. */
	struct ring_prod prod;
	struct mixd_record rec;
	uint64_t written, dropped, invalid; /* mirrors of the header's */
	uint32_t lay_written;               /* layout slots written, by bit */
	struct tl_ring *tl_next;            /* the thread's list */
	struct mixd_client *client;
	uint64_t client_id;
	uint64_t serial; /* unique in the process (mixd_client_flush()) */

	/* Shared. */
	int refs;     /* atomic */
	int retired;  /* atomic: the thread exited */
	int orphaned; /* atomic: the client closed */
	void *map;
	size_t map_len;
	int memfd; /* -1 for socket transport */
	/* The ring's own descriptor of the client's wakeup eventfd: the
	 * thread's exit rings the client through it, and the client may be
	 * closed (its wake_fd closed, the number reused) by then. */
	int wake_fd;

	/* The background thread's. */
	struct tl_ring *next; /* the client's list */
	int sock;
	uint64_t retry_at_ns;
	uint64_t connected_ns; /* when the connection in use was made */
	uint32_t backoff_ms;
	struct ring_cons send; /* socket transport: the sender's end */
	uint32_t send_part;    /* bytes of the frame at send.tail already sent */
	bool want_out;         /* last send hit EAGAIN */
	uint64_t last_send_ns; /* when records were last sent */
	uint64_t retired_seq;  /* bg's pass that saw it retired (1, ...); 0 */
	/* Socket transport: the drops mixd has been told of (counts frames
	 * sent whole; atomic, flush reads them), and the counts frame being
	 * sent, when counts_on. */
	uint64_t told_dropped, told_invalid;
	uint64_t told_ns; /* when a counts frame last went whole */
	uint8_t counts[MIXD_FRAME_HDR + sizeof(struct mixd_frame_counts)];
	bool counts_on;
	uint32_t counts_off;
	int linked; /* atomic: sock is connected (flush reads it) */
};

struct mixd_client {
	uint64_t id;
	pid_t pid; /* the process that opened it (see forked_child()) */
	struct sockaddr_un addr;
	enum mixd_transport transport;
	uint32_t ring_bytes;
	uint32_t reconnect_max_ms;

	pthread_mutex_t lock;
	struct tl_ring *rings;
	uint32_t nrings;
	pthread_t bg;
	/* bg only: a connect found no mixd, so no ring tries before this
	 * (that ring's next try): one try per backoff, not one per ring. */
	uint64_t away_until;
	int wake_fd;
	int stop;                /* atomic */
	uint64_t dropped_noring; /* atomic */
	/* Counts of rings already freed, so stats stay cumulative; under lock. */
	uint64_t gone_written, gone_dropped, gone_invalid;
	uint32_t connected;      /* atomic, maintained by bg */

	struct mixd_client *next_open; /* open_clients' list */

	uint32_t nlayouts; /* atomic: layout slots given to templates */
	uint32_t ncustom; /* atomic; names published before the count */
	char *custom[CUSTOM_MAX];
	uint16_t custom_len[CUSTOM_MAX];
};

/* Read on every record: initial-exec, so libmixd.so reaches it with one
 * %fs-relative load rather than a __tls_get_addr() call. That puts the
 * library's whole TLS block (80 bytes) in static TLS, well within what
 * glibc keeps for libraries dlopen()ed later. */
static __thread struct tl_ring *tl_rings
	__attribute__((tls_model("initial-exec")));
static __thread struct mixd_record tl_norecord;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;
static uint64_t next_client_id = 1; /* atomic */

/*
 * fork(): a child has copies of its parent's clients and of the forking
 * thread's rings, but not the parent's background threads, and its
 * writes into a ring would race the parent's in the same shared memory.
 * So a client belongs to the process that opened it: in a child, its
 * records are dropped (counted, as with no ring) and mixd_client_close()
 * only forgets it. A child opens a client of its own.
 *
 * Nor does the child keep its copies of the parent's connections: mixd
 * learns that a producer is gone when its connection closes, and a
 * long-lived child (a pre-forked worker) holding copies would keep every
 * ring its parent retires, and its producer slot, in mixd for as long as
 * the child lives. So the fork is taken with every open client's lock
 * held (each ring's socket changes only under it), and the child closes
 * the sockets it finds.
 */
static pid_t proc_pid; /* this process: set at the first open, and in a child */
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mixd_client *open_clients; /* this process's; under open_lock */

/*
 * Held for reading from a client's or a ring's first descriptor until the
 * client or ring is in the lists the child cleans up: a fork in between
 * would give the child descriptors nothing closes (a memfd, so the ring's
 * memory, for as long as a pre-forked worker lives). fork() takes it for
 * writing, so waits for those few calls, once a thread or a client; it is
 * preferred, so that threads being made all the time cannot hold it off.
 */
#ifdef PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP
#define FORK_GUARD_INIT PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP
#else
#define FORK_GUARD_INIT PTHREAD_RWLOCK_INITIALIZER
#endif
static pthread_rwlock_t fork_guard = FORK_GUARD_INIT;

static void fork_prepare(void)
{
	pthread_rwlock_wrlock(&fork_guard);
	pthread_mutex_lock(&open_lock);
	for (struct mixd_client *c = open_clients; c; c = c->next_open)
		pthread_mutex_lock(&c->lock);
}

static void fork_parent(void)
{
	for (struct mixd_client *c = open_clients; c; c = c->next_open)
		pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&open_lock);
	pthread_rwlock_unlock(&fork_guard);
}

/* In a child: the parent's clients are never used here (every call
 * checks c->pid), so it lets go of their descriptors -- connections,
 * memfds, wakeups -- which would otherwise keep the parent's rings, and
 * the memory behind them, alive as long as the child lives. The rings'
 * mappings were never inherited (MADV_DONTFORK, ring_create()). */
static void forked_child(void)
{
	for (struct mixd_client *c = open_clients; c; c = c->next_open) {
		for (struct tl_ring *r = c->rings; r; r = r->next) {
			if (r->sock >= 0)
				close(r->sock);
			if (r->memfd >= 0)
				close(r->memfd);
			close(r->wake_fd);
			r->sock = r->memfd = r->wake_fd = -1;
		}
		close(c->wake_fd);
		c->wake_fd = -1;
		pthread_mutex_unlock(&c->lock);
	}
	open_clients = NULL; /* the parent's, not ours to close */
	pthread_mutex_unlock(&open_lock);
	/* Made anew, not unlocked: its writer was the parent's thread. */
	fork_guard = (pthread_rwlock_t)FORK_GUARD_INIT;
	proc_pid = getpid();
	/* The parent's: never written from here. A record the forking
	 * thread began before the fork is committed to no ring (counted);
	 * the descriptors of its rings of clients closed since are let go
	 * too (an open client's are, above). */
	for (struct tl_ring *r = tl_rings; r; r = r->tl_next) {
		r->rec.ring = NULL;
		if (r->sock >= 0)
			close(r->sock);
		if (r->memfd >= 0)
			close(r->memfd);
		if (r->wake_fd >= 0)
			close(r->wake_fd);
		r->sock = r->memfd = r->wake_fd = -1;
	}
	tl_rings = NULL;
}

static void fork_init(void)
{
	proc_pid = getpid();
	pthread_atfork(fork_prepare, fork_parent, forked_child);
}

pid_t client_process(void)
{
	pthread_once(&fork_once, fork_init);
	return proc_pid;
}

static void wake(struct mixd_client *c)
{
	uint64_t one = 1;
	ssize_t n = write(c->wake_fd, &one, sizeof one);
	(void)n; /* EAGAIN: a wakeup is already pending */
}

/* ---- ring lifetime ---------------------------------------------------- */

static void ring_unref(struct tl_ring *r)
{
	if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	if (r->sock >= 0)
		close(r->sock);
	if (r->memfd >= 0)
		close(r->memfd);
	close(r->wake_fd);
	munmap(r->map, r->map_len);
	free(r->rec.w.buf);
	free(r);
}

/* Thread exit: retire the thread's rings; the client drains and frees. */
static void tl_destructor(void *unused)
{
	struct tl_ring *r = tl_rings, *next;
	tl_rings = NULL;
	for (; r; r = next) {
		next = r->tl_next;
		__atomic_store_n(&r->retired, 1, __ATOMIC_RELEASE);
		if (!__atomic_load_n(&r->orphaned, __ATOMIC_ACQUIRE)) {
			uint64_t one = 1; /* never r->client: it may be freed */
			ssize_t n = write(r->wake_fd, &one, sizeof one);
			(void)n; /* EAGAIN: a wakeup is already pending */
		}
		ring_unref(r);
	}
}

static void tl_init_key(void)
{
	pthread_key_create(&tl_key, tl_destructor);
}

static struct tl_ring *ring_create(struct mixd_client *c)
{
	struct tl_ring *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->memfd = -1;
	r->sock = -1;
	r->map = MAP_FAILED;
	r->map_len = MIXD_RING_HDR_SIZE + c->ring_bytes;
	pthread_rwlock_rdlock(&fork_guard);
	r->wake_fd = fcntl(c->wake_fd, F_DUPFD_CLOEXEC, 0);
	if (r->wake_fd < 0)
		goto fail;
	if (c->transport == MIXD_TRANSPORT_SHM) {
		r->memfd = memfd_create("mixd-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		/* Sealed against shrinking before mixd sees it: mixd maps
		 * only a sealed segment (<mixd/ring.h>), and checks the seal
		 * rather than adding it, which would take a lock the sender
		 * could hold. */
		if (r->memfd < 0 || ftruncate(r->memfd, (off_t)r->map_len) != 0 ||
		    fcntl(r->memfd, F_ADD_SEALS, F_SEAL_SHRINK) != 0)
			goto fail;
		/* Populate now: a page fault costs more than a hundred
		 * records, and this thread should never pay one per record. */
		r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_POPULATE, r->memfd, 0);
	} else {
		r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	}
	if (r->map == MAP_FAILED)
		goto fail;
	/* Not into a forked child, which never uses it (forked_child()). */
	(void)madvise(r->map, r->map_len, MADV_DONTFORK);
	uint8_t *buf = malloc(MIXD_RECORD_MAX + REC_SLACK);
	if (!buf)
		goto fail;
	struct mixd_ring_hdr *h = r->map;
	ring_init(h, c->ring_bytes, (uint32_t)getpid(), (uint32_t)gettid(),
		  now_ns(CLOCK_REALTIME));
	ring_prod_init(&r->prod, h, (uint8_t *)r->map + MIXD_RING_HDR_SIZE);
	r->send.hdr = h;
	r->send.data = (const uint8_t *)r->map + MIXD_RING_HDR_SIZE;
	r->send.cap = c->ring_bytes;
	r->send.max_len = MIXD_RECORD_MAX;
	wire_init(&r->rec.w, buf, MIXD_RECORD_MAX);
	r->rec.ring = r;
	r->rec.client = c;
	r->client = c;
	r->client_id = c->id;
	static uint64_t serials; /* atomic */
	r->serial = __atomic_add_fetch(&serials, 1, __ATOMIC_RELAXED);
	r->refs = 2; /* the thread's and the client's */
	r->backoff_ms = BACKOFF_MIN_MS;

	pthread_once(&tl_once, tl_init_key);
	pthread_setspecific(tl_key, r); /* any non-NULL value: run destructor */
	r->tl_next = tl_rings;
	tl_rings = r;

	pthread_mutex_lock(&c->lock);
	r->next = c->rings;
	c->rings = r;
	c->nrings++;
	pthread_mutex_unlock(&c->lock);
	pthread_rwlock_unlock(&fork_guard);
	wake(c);
	return r;
fail:
	if (r->map != MAP_FAILED)
		munmap(r->map, r->map_len);
	if (r->memfd >= 0)
		close(r->memfd);
	if (r->wake_fd >= 0)
		close(r->wake_fd);
	pthread_rwlock_unlock(&fork_guard);
	free(r);
	return NULL;
}

/* The calling thread's ring for @c; forgets rings of closed clients. */
static struct tl_ring *ring_find(struct mixd_client *c)
{
	struct tl_ring **pp = &tl_rings, *r;
	while ((r = *pp)) {
		if (r->client == c && r->client_id == c->id)
			return r;
		if (__atomic_load_n(&r->orphaned, __ATOMIC_ACQUIRE)) {
			*pp = r->tl_next;
			ring_unref(r);
			continue;
		}
		pp = &r->tl_next;
	}
	return NULL;
}

/* A thread whose ring could not be made (out of memory or descriptors)
 * tries again after this long, not on every record: each try is a few
 * system calls and a 1 MiB allocation. */
#define RING_RETRY_NS 1000000000ull
static __thread struct {
	const struct mixd_client *c;
	uint64_t id, until;
} tl_ring_failed;

/* The calling thread's ring for @c, made if it has none; NULL when it
 * cannot have one (no memory, or @c is a parent's in a forked child). */
static struct tl_ring *ring_get(struct mixd_client *c)
{
	struct tl_ring *r = ring_find(c);
	if (r || c->pid != proc_pid)
		return r;
	uint64_t now = now_ns(CLOCK_MONOTONIC_COARSE); /* vDSO: no syscall */
	if (tl_ring_failed.c == c && tl_ring_failed.id == c->id &&
	    now < tl_ring_failed.until)
		return NULL;
	if (!(r = ring_create(c))) {
		tl_ring_failed.c = c;
		tl_ring_failed.id = c->id;
		tl_ring_failed.until = now + RING_RETRY_NS;
	}
	return r;
}

/* ---- records ---------------------------------------------------------- */

API mixd_record *mixd_record_begin(mixd_client *c)
{
	struct tl_ring *r = tl_rings;
	if (!r || r->client != c || r->client_id != c->id)
		r = ring_get(c);
	if (!r) {
		/* No ring: a builder with no room, which commit counts as a
		 * drop. */
		tl_norecord.client = c;
		tl_norecord.ring = NULL;
		wire_init(&tl_norecord.w, NULL, 0);
		return &tl_norecord;
	}
	struct mixd_record *rec = &r->rec;
	rec->w.len = 0;
	rec->w.overflow = false;
	rec->invalid = false;
	return rec;
}

/*
 * The setters' fast path, for dictionary attributes: one bounds check, the
 * attribute header (and a string's length) written as one word, the value
 * copied inline. It may store up to 8 bytes past what it keeps, hence the
 * slack after the builder's buffer (REC_SLACK).
 */
static inline uint8_t *room(mixd_record *r, size_t n)
{
	if (__builtin_expect(n > (size_t)(r->w.cap - r->w.len), 0)) {
		r->w.overflow = true;
		return NULL;
	}
	return r->w.buf + r->w.len;
}

/* Type classes of the fast encoders, as bit masks over enum mixd_type. */
#define T_STRINGS                                                            \
	(1u << MIXD_T_STRING | 1u << MIXD_T_BYTES | 1u << MIXD_T_EMAIL |     \
	 1u << MIXD_T_URI | 1u << MIXD_T_DNS_NAME)
#define T_WORDS                                                              \
	(1u << MIXD_T_INT64 | 1u << MIXD_T_DOUBLE | 1u << MIXD_T_TIMESTAMP | \
	 1u << MIXD_T_DURATION)
/* The types mixd takes for one another on a string attribute. */
#define T_TEXT                                                                 \
	(1u << MIXD_T_STRING | 1u << MIXD_T_EMAIL | 1u << MIXD_T_URI |         \
	 1u << MIXD_T_DNS_NAME)

/* Every dictionary attribute's name and declared type. */
static const struct {
	const char *name;
	uint8_t type;
} dictionary[MIXD_ATTR_DICT_COUNT] = {
#define DICT_ENTRY_(id, n, t) [MIXD_ATTR_##id] = {n, t},
	MIXD_ATTRIBUTE_LIST(DICT_ENTRY_)
#undef DICT_ENTRY_
};

/* The types each dictionary attribute takes, as a bit mask: its own, or
 * any string type for a string (they stand for one another). */
#define TYPES_OF_(t) ((1u << (t)) & T_TEXT ? T_TEXT : 1u << (t))
static const uint16_t dict_types[MIXD_ATTR_DICT_COUNT] = {
#define DICT_TYPES_(id, n, t) [MIXD_ATTR_##id] = TYPES_OF_(t),
	MIXD_ATTRIBUTE_LIST(DICT_TYPES_)
#undef DICT_TYPES_
};
_Static_assert(MIXD_T_COUNT <= 16, "a type mask is 16 bits");

/* A dictionary attribute @a given a value of another type than its own:
 * mixd would refuse the whole record, so the client refuses it, counted
 * as invalid. @type < 32. */
static inline bool mistyped(mixd_attr a, unsigned type)
{
	return !(dict_types[a] >> type & 1);
}

/* Write the attribute header for @a the slow way: custom names. */
static bool put_custom(mixd_record *r, mixd_attr a, uint8_t type)
{
	uint32_t i = (uint32_t)a - CUSTOM_BASE;
	/* a check's builder has no client, and no custom names */
	if (r->client && a >= CUSTOM_BASE &&
	    i < __atomic_load_n(&r->client->ncustom, __ATOMIC_ACQUIRE))
		return wire_attr(&r->w, MIXD_ATTR_INLINE, type,
				 r->client->custom[i], r->client->custom_len[i]);
	r->invalid = true;
	return false;
}

static inline void put_bytes(mixd_record *r, mixd_attr a, uint8_t type,
			     const void *s, size_t len)
{
	if (__builtin_expect(a < MIXD_ATTR_DICT_COUNT && len <= UINT32_MAX, 1)) {
		if (__builtin_expect(mistyped(a, type), 0)) {
			r->invalid = true;
			return;
		}
		uint8_t *p = room(r, 7 + len);
		if (!p)
			return;
		uint64_t h = a | (uint64_t)type << 16 | (uint64_t)len << 24;
		memcpy(p, &h, 8);
		wire_copy(p + 7, s, len);
		r->w.len += (uint32_t)(7 + len);
	} else if (put_custom(r, a, type)) {
		wire_bytes(&r->w, s, len);
	}
}

static inline void put_u64(mixd_record *r, mixd_attr a, uint8_t type,
			   uint64_t v)
{
	if (__builtin_expect(a < MIXD_ATTR_DICT_COUNT, 1)) {
		if (__builtin_expect(mistyped(a, type), 0)) {
			r->invalid = true;
			return;
		}
		uint8_t *p = room(r, 11);
		if (!p)
			return;
		uint32_t h = a | (uint32_t)type << 16;
		memcpy(p, &h, 4);
		memcpy(p + 3, &v, 8);
		r->w.len += 11;
	} else if (put_custom(r, a, type)) {
		wire_u64(&r->w, v);
	}
}

/* Header only, for the rarer types. */
static inline bool put_attr(mixd_record *r, mixd_attr a, uint8_t type)
{
	if (a < MIXD_ATTR_DICT_COUNT && mistyped(a, type)) {
		r->invalid = true;
		return false;
	}
	if (a < MIXD_ATTR_DICT_COUNT)
		return wire_attr(&r->w, a, type, NULL, 0);
	return put_custom(r, a, type);
}

API void mixd_set_typed_string(mixd_record *r, mixd_attr a, enum mixd_type t,
			       const char *s, size_t len)
{
	/* not BYTES: it is no string (mixd refuses it where a string is
	 * declared), and mixd_set_bytes() writes it */
	if (t != MIXD_T_STRING && t != MIXD_T_EMAIL && t != MIXD_T_URI &&
	    t != MIXD_T_DNS_NAME) {
		r->invalid = true;
		return;
	}
	put_bytes(r, a, (uint8_t)t, s, len);
}

API void mixd_set_string(mixd_record *r, mixd_attr a, const char *s, size_t len)
{
	put_bytes(r, a, MIXD_T_STRING, s, len);
}

API void mixd_set_cstr(mixd_record *r, mixd_attr a, const char *s)
{
	mixd_set_string(r, a, s, strlen(s));
}

API void mixd_set_bytes(mixd_record *r, mixd_attr a, const void *p, size_t len)
{
	put_bytes(r, a, MIXD_T_BYTES, p, len);
}

API void mixd_set_int64(mixd_record *r, mixd_attr a, int64_t v)
{
	put_u64(r, a, MIXD_T_INT64, (uint64_t)v);
}

API void mixd_set_double(mixd_record *r, mixd_attr a, double v)
{
	uint64_t bits;
	memcpy(&bits, &v, 8);
	put_u64(r, a, MIXD_T_DOUBLE, bits);
}

API void mixd_set_timestamp(mixd_record *r, mixd_attr a, int64_t ns)
{
	put_u64(r, a, MIXD_T_TIMESTAMP, (uint64_t)ns);
}

API void mixd_set_duration(mixd_record *r, mixd_attr a, int64_t ns)
{
	put_u64(r, a, MIXD_T_DURATION, (uint64_t)ns);
}

API void mixd_set_bool(mixd_record *r, mixd_attr a, int v)
{
	if (put_attr(r, a, MIXD_T_BOOL))
		wire_u8(&r->w, v ? 1 : 0);
}

API void mixd_set_ip(mixd_record *r, mixd_attr a, const void *addr, size_t len)
{
	if (len != 4 && len != 16) {
		r->invalid = true;
		return;
	}
	if (put_attr(r, a, MIXD_T_IP))
		wire_ip(&r->w, addr, len);
}

API void mixd_set_string_map(mixd_record *r, mixd_attr a,
			     const struct mixd_kv *kv, size_t n)
{
	if (n > UINT32_MAX) {
		r->invalid = true;
		return;
	}
	if (!put_attr(r, a, MIXD_T_STRING_MAP))
		return;
	wire_u32(&r->w, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		wire_bytes(&r->w, kv[i].key, kv[i].key_len);
		wire_bytes(&r->w, kv[i].value, kv[i].value_len);
	}
}

/* Copy a record encoded elsewhere into the ring and publish it. */
static inline int publish_local(struct tl_ring *r, const uint8_t *rec,
				uint32_t size)
{
	if (__builtin_expect(!ring_push(&r->prod, rec, size), 0)) {
		ring_store_relaxed(&r->prod.hdr->prod.dropped, ++r->dropped);
		return -ENOBUFS;
	}
	ring_store_relaxed(&r->prod.hdr->prod.written, ++r->written);
	return 0;
}

/* Publish the record encoded in place at ring_reserve_max()'s pointer. */
static inline void commit_direct(struct tl_ring *r, uint32_t len)
{
	ring_commit(&r->prod, len);
	ring_store_relaxed(&r->prod.hdr->prod.written, ++r->written);
}

API int mixd_record_commit(mixd_record *rec)
{
	struct tl_ring *r = rec->ring;
	if (!r) {
		if (!rec->client) /* a check's builder: mixd_check_record() */
			return -EINVAL;
		__atomic_add_fetch(&rec->client->dropped_noring, 1,
				   __ATOMIC_RELAXED);
		return -ENOMEM;
	}
	if (rec->invalid || rec->w.overflow) {
		ring_store_relaxed(&r->prod.hdr->prod.invalid, ++r->invalid);
		return -EMSGSIZE;
	}
	return publish_local(r, rec->w.buf, (uint32_t)rec->w.len);
}

/* Bytes attribute @v takes on the wire; 0 if it cannot be encoded. */
static inline size_t value_size(const struct mixd_client *c,
				const struct mixd_value *v)
{
	size_t h = 3;
	if (__builtin_expect(v->attr >= MIXD_ATTR_DICT_COUNT, 0)) {
		uint32_t i = (uint32_t)v->attr - CUSTOM_BASE;
		if (v->attr < CUSTOM_BASE ||
		    i >= __atomic_load_n(&c->ncustom, __ATOMIC_ACQUIRE))
			return 0;
		h += 2 + c->custom_len[i];
	} else if (v->type >= MIXD_T_COUNT || mistyped(v->attr, v->type)) {
		return 0;
	}
	switch (v->type) {
	case MIXD_T_STRING:
	case MIXD_T_BYTES:
	case MIXD_T_EMAIL:
	case MIXD_T_URI:
	case MIXD_T_DNS_NAME:
		return h + 4 + v->len;
	case MIXD_T_INT64:
	case MIXD_T_DOUBLE:
	case MIXD_T_TIMESTAMP:
	case MIXD_T_DURATION:
		return h + 8;
	case MIXD_T_BOOL:
		return h + 1;
	case MIXD_T_IP:
		return v->len == 4 || v->len == 16 ? h + 1 + v->len : 0;
	case MIXD_T_STRING_MAP: {
		size_t n = h + 4;
		for (uint32_t k = 0; k < v->len; k++) {
			/* each bounded first, so the sum cannot wrap */
			if (v->map[k].key_len > MIXD_RECORD_MAX ||
			    v->map[k].value_len > MIXD_RECORD_MAX ||
			    n > MIXD_RECORD_MAX)
				return 0;
			n += 8 + v->map[k].key_len + v->map[k].value_len;
		}
		return n;
	}
	}
	return 0;
}

/*
 * Encode @n values whose sizes value_size() accepted at @o: no bounds
 * checks, exact stores. Returns the end.
 */
static uint8_t *encode_values(const struct mixd_client *c,
			      const struct mixd_value *v, size_t n, uint8_t *o)
{
	for (size_t i = 0; i < n; i++) {
		const struct mixd_value *x = &v[i];
		uint16_t id = x->attr;
		if (x->attr >= MIXD_ATTR_DICT_COUNT) {
			uint32_t k = (uint32_t)x->attr - CUSTOM_BASE;
			uint16_t nl = c->custom_len[k];
			id = MIXD_ATTR_INLINE;
			memcpy(o, &id, 2);
			o[2] = x->type;
			memcpy(o + 3, &nl, 2);
			memcpy(o + 5, c->custom[k], nl);
			o += 5 + nl;
		} else {
			memcpy(o, &id, 2);
			o[2] = x->type;
			o += 3;
		}
		switch (x->type) {
		case MIXD_T_INT64:
		case MIXD_T_TIMESTAMP:
		case MIXD_T_DURATION:
		case MIXD_T_DOUBLE: /* the union's 8 bytes, any of them */
			memcpy(o, &x->i, 8);
			o += 8;
			break;
		case MIXD_T_BOOL:
			*o++ = x->b ? 1 : 0;
			break;
		case MIXD_T_IP:
			*o++ = (uint8_t)x->len;
			memcpy(o, x->p, x->len);
			o += x->len;
			break;
		case MIXD_T_STRING_MAP:
			memcpy(o, &x->len, 4);
			o += 4;
			for (uint32_t k = 0; k < x->len; k++) {
				uint32_t l = (uint32_t)x->map[k].key_len;
				memcpy(o, &l, 4);
				wire_copy(o + 4, x->map[k].key, l);
				o += 4 + l;
				l = (uint32_t)x->map[k].value_len;
				memcpy(o, &l, 4);
				wire_copy(o + 4, x->map[k].value, l);
				o += 4 + l;
			}
			break;
		default: /* the string-like types and BYTES */
			memcpy(o, &x->len, 4);
			wire_copy(o + 4, x->p, x->len);
			o += 4 + x->len;
			break;
		}
	}
	return o;
}

/*
 * mixd_report() the long way: any record, custom names, maps, records too
 * large for the stack buffer, and every invalid one. Sizes first, so the
 * record is encoded once, in place.
 */
static __attribute__((noinline)) int
report_slow(struct mixd_client *c, struct tl_ring *r,
		       const struct mixd_value *v, size_t n)
{
	struct mixd_ring_hdr *h = r->prod.hdr;
	size_t size = 0;
	for (size_t i = 0; i < n; i++) {
		size_t k = value_size(c, &v[i]);
		if (!k) {
			size = SIZE_MAX;
			break;
		}
		size += k;
	}
	if (size > MIXD_RECORD_MAX) {
		ring_store_relaxed(&h->prod.invalid, ++r->invalid);
		return -EMSGSIZE;
	}
	uint8_t *dst = ring_reserve(&r->prod, (uint32_t)size);
	if (!dst) {
		ring_store_relaxed(&h->prod.dropped, ++r->dropped);
		return -ENOBUFS;
	}
	/* Encode a proxy-sized record on the stack and copy it into the ring
	 * whole: field-by-field stores into shared memory that the consumer
	 * is reading next door cost more than the copy. */
	uint8_t local[1024];
	uint8_t *o = size <= sizeof local ? local : dst, *start = o;
	encode_values(c, v, n, o); /* sizes checked above */
	if (start == local)
		memcpy(dst, local, size);
	ring_publish(&r->prod, (uint32_t)size);
	ring_store_relaxed(&h->prod.written, ++r->written);
	return 0;
}

/* The calling thread's ring for @c, made on first use; NULL: none. */
static inline struct tl_ring *ring_of(struct mixd_client *c)
{
	struct tl_ring *r = tl_rings;
	if (__builtin_expect(r && r->client == c && r->client_id == c->id, 1))
		return r;
	if (!(r = ring_get(c)))
		__atomic_add_fetch(&c->dropped_noring, 1, __ATOMIC_RELAXED);
	return r;
}

/* Bytes of a stack-encoded record, and slack for the 8-byte header stores
 * that may reach past the record's last byte. */
#define LOCAL_MAX 1024u
#define LOCAL_SLACK 16u
/* A template's stack buffer: room for 64 fixed-width fields and strings. */
#define TPL_LOCAL_MAX 2048u

/*
 * Where to encode a record of at most @max bytes (and LOCAL_SLACK more
 * that the encoder may scribble): straight into the ring when that fits
 * before the ring's end and is free (almost always), so the record is
 * written once; else @local, copied in by encoded().
 */
static inline uint8_t *encode_at(struct tl_ring *r, uint32_t max,
				 uint8_t *local)
{
	uint8_t *dst = ring_reserve_max(&r->prod, max + LOCAL_SLACK);
	return __builtin_expect(dst != NULL, 1) ? dst : local;
}

/* publish_local() of a record encode_at() put on the stack: rare, so out of
 * line, and the in-place commit stays small. */
static __attribute__((noinline)) int publish_stack(struct tl_ring *r,
						   const uint8_t *rec,
						   uint32_t size)
{
	return publish_local(r, rec, size);
}

/* Publish the record encoded at @o (encode_at()'s) up to @e. */
static inline __attribute__((always_inline)) int
encoded(struct tl_ring *r, const uint8_t *o, const uint8_t *e,
	const uint8_t *local)
{
	if (__builtin_expect(o != local, 1)) {
		commit_direct(r, (uint32_t)(e - o));
		return 0;
	}
	return publish_stack(r, local, (uint32_t)(e - local));
}

static inline void st32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static inline void st64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

/*
 * One dictionary attribute of a common type, encoded at @o with its header
 * word @hw (id | type << 16) stored whole: returns the end. Bounds are the
 * caller's; the header stores may write up to 8 bytes past a short value.
 */
static inline uint8_t *enc_string(uint8_t *o, uint32_t hw, const void *p,
				  uint32_t len)
{
	st64(o, hw | (uint64_t)len << 24);
	wire_copy(o + 7, p, len);
	return o + 7 + (size_t)len;
}

static inline uint8_t *enc_word(uint8_t *o, uint32_t hw, const void *word)
{
	st32(o, hw);
	memcpy(o + 3, word, 8); /* a slot's union, whichever member */
	return o + 11;
}

static inline uint8_t *enc_bool(uint8_t *o, uint32_t hw, int b)
{
	st32(o, hw | (uint32_t)(b ? 1 : 0) << 24);
	return o + 4;
}

/* @len is 4 or 16. */
static inline uint8_t *enc_ip(uint8_t *o, uint32_t hw, const void *p,
			      uint32_t len)
{
	st32(o, hw | len << 24);
	if (len == 4)
		memcpy(o + 4, p, 4);
	else
		memcpy(o + 4, p, 16);
	return o + 4 + len;
}

/*
 * One pass, no size pass: each dictionary attribute of a common type is
 * encoded at @o with its header (and a string's length) as one store,
 * checked once against what is left before @lim. Returns the record's end,
 * or NULL at the first attribute that is anything else (a custom name, a
 * map, a bad value, a record outgrowing the room), and the caller sends the
 * whole record to report_slow(), which starts over; nothing has been
 * published by then. May write 8 bytes beyond @lim.
 */
static inline __attribute__((always_inline)) uint8_t *
report_encode(const struct mixd_value *v, size_t n, uint8_t *o,
	      const uint8_t *lim)
{
	for (size_t i = 0; i < n; i++) {
		const struct mixd_value *x = &v[i];
		unsigned type = x->type;
		uint32_t len = x->len;
		if (__builtin_expect(x->attr >= MIXD_ATTR_DICT_COUNT || type > 31 ||
					     mistyped(x->attr, type),
				     0))
			return NULL;
		uint32_t hw = x->attr | type << 16;
		size_t room = (size_t)(lim - o);
		unsigned bit = 1u << type;
		if (bit & T_STRINGS) {
			if (__builtin_expect((size_t)len + 7 > room, 0))
				return NULL;
			o = enc_string(o, hw, x->p, len);
		} else if (bit & T_WORDS) {
			if (__builtin_expect(room < 11, 0))
				return NULL;
			o = enc_word(o, hw, &x->i);
		} else if (type == MIXD_T_BOOL && room >= 4) {
			o = enc_bool(o, hw, x->b);
		} else if (type == MIXD_T_IP && len == 4 && room >= 8) {
			o = enc_ip(o, hw, x->p, 4);
		} else if (type == MIXD_T_IP && len == 16 && room >= 20) {
			o = enc_ip(o, hw, x->p, 16);
		} else {
			return NULL;
		}
	}
	return o;
}

/* A record of @n values, encoded where encode_at() says. */
static inline int report_into(struct mixd_client *c, struct tl_ring *r,
			      const struct mixd_value *v, size_t n)
{
	uint8_t local[LOCAL_MAX + LOCAL_SLACK];
	uint8_t *o = encode_at(r, LOCAL_MAX, local);
	uint8_t *e = report_encode(v, n, o, o + LOCAL_MAX);
	if (__builtin_expect(!e, 0))
		return report_slow(c, r, v, n);
	return encoded(r, o, e, local);
}

API int mixd_report(mixd_client *c, const struct mixd_value *v, size_t n)
{
	struct tl_ring *r = ring_of(c);
	if (!r)
		return -ENOMEM;
	return report_into(c, r, v, n);
}

/* ---- record templates ------------------------------------------------ */


/* The group of the grouped layout a template field falls in. */
enum tpl_kind {
	TK_STRING, /* header word carries the length; bytes follow */
	TK_WORD,   /* 8 bytes */
	TK_BOOL,
	TK_IP,
	TK_SLOW, /* custom name or string map: the record goes the long way */
};

struct tpl_field {
	uint8_t kind; /* enum tpl_kind */
	uint8_t type;
	mixd_attr attr;
};

/*
 * The grouped layout of a template whose every field has a fast kind and
 * whose attributes are distinct: the fixed-width fields first (words, then
 * bools), then IPs, then strings, each group a plain loop over these ops
 * with no per-field dispatch. Since no attribute repeats, the order of the
 * fields in a record changes no value the decoder sees. Records that omit
 * fields keep the same order, so two records of a template with the same
 * values in the fields mixd's record memo reads also have the same memo
 * key (the key is those fields' encodings in record order).
 */
struct tpl_op {
	uint32_t hw;   /* id | type << 16 */
	uint32_t voff; /* byte offset of the field's mixd_slot in the array */
};

/* Strings up to this long are copied inline with no bounds check: the
 * template reserves their worst case (see tpl_group()). */
#define TPL_SHORT 32u

struct mixd_template {
	struct mixd_client *c;
	uint32_t n;
	bool grouped; /* ops[] apply */
	int lay;      /* its layout slot in every shm ring, -1: none */
	uint32_t lay_reserve; /* worst-case bytes but long strings, as a
				 layout record */
	struct mixd_layout desc;
	uint8_t nword, nbool, nip, nstr;
	uint32_t reserve; /* worst-case bytes of every field but long strings */
	struct tpl_field f[MIXD_TEMPLATE_MAX];
	struct tpl_op op[MIXD_TEMPLATE_MAX];
};

/* Lay out the grouped encoding of @t, if it has one. */
static void tpl_group(struct mixd_template *t)
{
	static const struct {
		uint8_t kind;
		uint8_t worst; /* bytes one such field can take, inline */
	} groups[] = {
		{TK_WORD, 11}, {TK_BOOL, 4}, {TK_IP, 20}, {TK_STRING, 7 + TPL_SHORT},
	};
	uint32_t k = 0;

	for (uint32_t i = 0; i < t->n; i++)
		if (t->f[i].kind == TK_SLOW)
			return; /* a custom name or a map: the long way */
	for (uint32_t i = 0; i < t->n; i++)
		for (uint32_t j = 0; j < i; j++)
			if (t->f[i].attr == t->f[j].attr)
				return; /* a repeat: order matters, keep it */
	for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
		uint32_t first = k;
		for (uint32_t i = 0; i < t->n; i++) {
			if (t->f[i].kind != groups[g].kind)
				continue;
			t->op[k].hw = t->f[i].attr | (uint32_t)t->f[i].type << 16;
			t->op[k].voff = i * (uint32_t)sizeof(struct mixd_slot);
			t->reserve += groups[g].worst;
			k++;
		}
		uint8_t cnt = (uint8_t)(k - first);
		if (groups[g].kind == TK_WORD)
			t->nword = cnt;
		else if (groups[g].kind == TK_BOOL)
			t->nbool = cnt;
		else if (groups[g].kind == TK_IP)
			t->nip = cnt;
		else
			t->nstr = cnt;
	}
	/* Half the buffer at most, so long strings keep the other half. */
	t->grouped = t->reserve <= TPL_LOCAL_MAX / 2;
}

/*
 * Give grouped template @t a layout slot (<mixd/ring.h>) if it can have
 * one: shared-memory transport, at most MIXD_LAYOUT_FIELDS fields, each
 * of its attribute's declared type, and a slot left (the first
 * MIXD_LAYOUT_SLOTS templates of a client get one). Its records then carry
 * values alone.
 */
static void tpl_layout(struct mixd_template *t)
{
	t->lay = -1;
	if (!t->grouped || t->c->transport != MIXD_TRANSPORT_SHM ||
	    t->n == 0 || t->n > MIXD_LAYOUT_FIELDS)
		return; /* an empty template writes empty records */
	for (uint32_t i = 0; i < t->n; i++) {
		uint16_t id = (uint16_t)t->op[i].hw;
		uint8_t type = (uint8_t)(t->op[i].hw >> 16);
		if (type != dictionary[id].type)
			return;
		t->desc.f[i] = (struct mixd_layout_field){.id = id, .type = type};
	}
	/* A slot is the template's for the client's life (a ring never
	 * rewrites one): the count stops at the last, never wraps. */
	uint32_t slot = __atomic_load_n(&t->c->nlayouts, __ATOMIC_RELAXED);
	do {
		if (slot >= MIXD_LAYOUT_SLOTS)
			return;
	} while (!__atomic_compare_exchange_n(&t->c->nlayouts, &slot, slot + 1,
					      true, __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	t->desc.n = t->n;
	t->lay = (int)slot;
	/* 4 header bytes; a word 8, a bool 1, an IP 2 + 16, a short string
	 * 2 + TPL_SHORT. */
	t->lay_reserve = 4 + 8u * t->nword + t->nbool + 18u * t->nip +
			 (2 + TPL_SHORT) * (uint32_t)t->nstr;
}

API int mixd_template_create(mixd_client *c, const struct mixd_field *f,
			     size_t n, mixd_template **out)
{
	if (!c || !out || (n && !f) || n > MIXD_TEMPLATE_MAX)
		return -EINVAL;
	struct mixd_template *t = calloc(1, sizeof *t);
	if (!t)
		return -ENOMEM;
	t->c = c;
	t->n = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		unsigned type = f[i].type, a = f[i].attr;
		struct tpl_field *x = &t->f[i];
		if (type == 0 || type >= MIXD_T_COUNT)
			goto inval;
		if (a >= MIXD_ATTR_DICT_COUNT &&
		    (a < CUSTOM_BASE ||
		     a - CUSTOM_BASE >= __atomic_load_n(&c->ncustom, __ATOMIC_ACQUIRE)))
			goto inval;
		/* A dictionary attribute of another type than its own: mixd
		 * would refuse every record made from the template. */
		if (a < MIXD_ATTR_DICT_COUNT && mistyped((mixd_attr)a, type))
			goto inval;
		x->attr = (mixd_attr)a;
		x->type = (uint8_t)type;
		if (a >= MIXD_ATTR_DICT_COUNT || type == MIXD_T_STRING_MAP)
			x->kind = TK_SLOW;
		else if ((1u << type) & T_STRINGS)
			x->kind = TK_STRING;
		else if ((1u << type) & T_WORDS)
			x->kind = TK_WORD;
		else if (type == MIXD_T_BOOL)
			x->kind = TK_BOOL;
		else
			x->kind = TK_IP;
	}
	tpl_group(t);
	tpl_layout(t);
	*out = t;
	return 0;
inval:
	free(t);
	return -EINVAL;
}

API void mixd_template_destroy(mixd_template *t)
{
	free(t);
}

/* A template record as the array mixd_report() takes, and through its
 * path: templates with a custom name, a map or a repeated attribute, and
 * records the grouped encoder hands back (a bad IP, long strings). */
static __attribute__((noinline)) int
template_slow(const struct mixd_template *t, struct tl_ring *r,
	      const struct mixd_slot *v, uint64_t omit)
{
	struct mixd_value a[MIXD_TEMPLATE_MAX];
	size_t k = 0;
	for (uint32_t i = 0; i < t->n; i++) {
		if (omit >> i & 1)
			continue;
		a[k] = (struct mixd_value){.attr = t->f[i].attr,
					   .type = t->f[i].type,
					   .len = v[i].len};
		memcpy(&a[k].i, &v[i].i, 8); /* the union, whichever member */
		k++;
	}
	return report_into(t->c, r, a, k);
}

/*
 * A record of a grouped template with every field present, encoded at @o:
 * returns its end, or NULL when it needs the long way (an IP of a bad
 * length, long strings beyond @lim). Fields of a fixed width and short
 * strings need no bounds check: @lim leaves room for their worst case
 * (t->reserve), so a long string may take whatever is left before @lim.
 * May write 8 bytes beyond the returned end.
 */
static inline __attribute__((always_inline)) uint8_t *
tpl_encode_grouped(const struct mixd_template *t, uint8_t *o, const uint8_t *lim,
		   const struct mixd_slot *v, uint64_t omit, const bool any_omitted)
{
	const struct tpl_op *op = t->op, *e;
	const uint8_t *base = (const uint8_t *)v;
	/* Is the field of @op left out? (voff is its index times the slot
	 * size; a constant when nothing is.) */
#define OMITTED(op)                                                          \
	(any_omitted &&                                                      \
	 (omit >> ((op)->voff / sizeof(struct mixd_slot)) & 1))

	for (e = op + t->nword; op < e; op++) {
		if (OMITTED(op))
			continue;
		o = enc_word(o, op->hw, base + op->voff);
	}
	for (e = op + t->nbool; op < e; op++) {
		if (OMITTED(op))
			continue;
		const struct mixd_slot *x = (const void *)(base + op->voff);
		o = enc_bool(o, op->hw, x->b);
	}
	for (e = op + t->nip; op < e; op++) {
		if (OMITTED(op))
			continue;
		const struct mixd_slot *x = (const void *)(base + op->voff);
		if (x->len == 4)
			o = enc_ip(o, op->hw, x->p, 4);
		else if (x->len == 16)
			o = enc_ip(o, op->hw, x->p, 16);
		else
			return NULL; /* report_slow() counts it invalid */
	}
	for (e = op + t->nstr; op < e; op++) {
		if (OMITTED(op))
			continue;
		const struct mixd_slot *x = (const void *)(base + op->voff);
		uint32_t len = x->len;
		/* Signed: short fields may have taken o past lim (into their
		 * reserve), and then no long string fits. */
		if (__builtin_expect(len > TPL_SHORT, 0) &&
		    (ptrdiff_t)len + 7 > lim - o)
			return NULL;
		o = enc_string(o, op->hw, x->p, len);
	}
	return o;
#undef OMITTED
}

/*
 * A record of a grouped template, the usual case, encoded where
 * encode_at() says.
 */
static inline __attribute__((always_inline)) int
template_grouped(const struct mixd_template *t, struct tl_ring *r,
		 const struct mixd_slot *v, uint64_t omit,
		 const bool any_omitted)
{
	uint8_t local[TPL_LOCAL_MAX + LOCAL_SLACK];
	uint8_t *o = encode_at(r, TPL_LOCAL_MAX, local);
	uint8_t *e = tpl_encode_grouped(t, o, o + TPL_LOCAL_MAX - t->reserve,
					v, omit, any_omitted);
	if (__builtin_expect(!e, 0))
		return template_slow(t, r, v, omit);
	return encoded(r, o, e, local);
}

/*
 * STEP(k) for k = @n down to 1, in that order: the k-th op from a group's
 * end, at offsets the compiler knows, with no loop counter or pointer to
 * advance per field. Groups of more than 16 run their first fields in a
 * loop. A proxy's template has 7 words and 10 strings: this saves three or
 * four instructions a field, a sixth of a record's (448 -> 373).
 */
#define TPL_FALL __attribute__((fallthrough))
#define TPL_FROM_END(n, STEP)                                                \
	switch (n) {                                                         \
	default:                                                             \
		for (uint32_t k_ = (n); k_ > 16; k_--)                       \
			STEP(k_);                                            \
		TPL_FALL;                                                    \
	case 16: STEP(16); TPL_FALL;                                         \
	case 15: STEP(15); TPL_FALL;                                         \
	case 14: STEP(14); TPL_FALL;                                         \
	case 13: STEP(13); TPL_FALL;                                         \
	case 12: STEP(12); TPL_FALL;                                         \
	case 11: STEP(11); TPL_FALL;                                         \
	case 10: STEP(10); TPL_FALL;                                         \
	case 9: STEP(9); TPL_FALL;                                           \
	case 8: STEP(8); TPL_FALL;                                           \
	case 7: STEP(7); TPL_FALL;                                           \
	case 6: STEP(6); TPL_FALL;                                           \
	case 5: STEP(5); TPL_FALL;                                           \
	case 4: STEP(4); TPL_FALL;                                           \
	case 3: STEP(3); TPL_FALL;                                           \
	case 2: STEP(2); TPL_FALL;                                           \
	case 1: STEP(1); TPL_FALL;                                           \
	case 0:;                                                             \
	}

/*
 * A layout record of @t at @o: values alone, in the layout's order.
 * Returns its end, or NULL when the record needs another form (an IP of a
 * bad length, a string over 64 KiB, long strings beyond @lim). May write 8
 * bytes beyond the returned end.
 */
static inline __attribute__((always_inline)) uint8_t *
tpl_encode_layout(const struct mixd_template *t, uint8_t *o,
		  const uint8_t *lim, const struct mixd_slot *v)
{
	const uint8_t *base = (const uint8_t *)v;
	const struct tpl_op *e;
	/* The slot of the k-th op before e. */
#define SLOT(k) ((const struct mixd_slot *)(base + e[-(ptrdiff_t)(k)].voff))
	st32(o, MIXD_ATTR_LAYOUT | (uint32_t)t->lay << 16);
	o += 4;

	e = t->op + t->nword;
	o += 8 * (size_t)t->nword;
#define WORD(k) memcpy(o - 8 * (k), SLOT(k), 8)
	TPL_FROM_END(t->nword, WORD)
#undef WORD

	e += t->nbool;
	o += t->nbool;
#define BOOL(k) (o[-(ptrdiff_t)(k)] = SLOT(k)->b ? 1 : 0)
	TPL_FROM_END(t->nbool, BOOL)
#undef BOOL

	/* Then a 16-bit length for each IP and string, then their bytes. */
	e += t->nip;
	uint8_t *lens = o + 2 * (size_t)t->nip;
	o += 2 * (size_t)(t->nip + t->nstr);
#define IP(k)                                                                \
	do {                                                                 \
		const struct mixd_slot *x_ = SLOT(k);                        \
		if (x_->len == 4)                                            \
			memcpy(o, x_->p, 4);                                 \
		else if (x_->len == 16)                                      \
			memcpy(o, x_->p, 16);                                \
		else                                                         \
			return NULL; /* report_slow() counts it invalid */   \
		uint16_t l_ = (uint16_t)x_->len;                             \
		memcpy(lens - 2 * (k), &l_, 2);                              \
		o += l_;                                                     \
	} while (0)
	TPL_FROM_END(t->nip, IP)
#undef IP

	e += t->nstr;
	lens += 2 * (size_t)t->nstr;
#define STR(k)                                                               \
	do {                                                                 \
		const struct mixd_slot *x_ = SLOT(k);                        \
		uint32_t len_ = x_->len;                                     \
		if (__builtin_expect(len_ > TPL_SHORT, 0) &&                 \
		    (len_ > UINT16_MAX || (ptrdiff_t)len_ > lim - o))        \
			return NULL;                                         \
		uint16_t l_ = (uint16_t)len_;                                \
		memcpy(lens - 2 * (k), &l_, 2);                              \
		wire_copy(o, x_->p, len_);                                   \
		o += len_;                                                   \
	} while (0)
	TPL_FROM_END(t->nstr, STR)
#undef STR
#undef SLOT
	return o;
}

/* A record of @t as a layout record, its layout first written to @r's
 * segment if this ring has not had it yet. */
static inline __attribute__((always_inline)) int
template_layout(const struct mixd_template *t, struct tl_ring *r,
		const struct mixd_slot *v)
{
	if (__builtin_expect(!(r->lay_written >> t->lay & 1), 0)) {
		/* Before any record that names it: the release store of head
		 * that publishes the record publishes the slot too. */
		memcpy((uint8_t *)r->map + MIXD_LAYOUT_OFFSET +
			       (size_t)t->lay * sizeof t->desc,
		       &t->desc, sizeof t->desc);
		r->lay_written |= 1u << t->lay;
	}
	uint8_t local[TPL_LOCAL_MAX + LOCAL_SLACK];
	uint8_t *o = encode_at(r, TPL_LOCAL_MAX, local);
	uint8_t *e = tpl_encode_layout(t, o, o + TPL_LOCAL_MAX - t->lay_reserve,
				       v);
	if (__builtin_expect(!e, 0))
		return template_grouped(t, r, v, 0, false);
	return encoded(r, o, e, local);
}

API int mixd_template_report(const mixd_template *t,
			     const struct mixd_slot *v, uint64_t omit)
{
	struct tl_ring *r = ring_of(t->c);
	if (!r)
		return -ENOMEM;
	if (__builtin_expect(t->lay >= 0 && !omit, 1))
		return template_layout(t, r, v);
	if (__builtin_expect(t->grouped, 1))
		return omit ? template_grouped(t, r, v, omit, true)
			    : template_grouped(t, r, v, 0, false);
	return template_slow(t, r, v, omit);
}

API void mixd_record_abort(mixd_record *rec)
{
	rec->w.len = 0;
}

/* ---- the background thread -------------------------------------------- */

static int send_hello(struct mixd_client *c, struct tl_ring *r, int fd)
{
	struct mixd_hello hello = {.version = MIXD_HELLO_VERSION};
	memcpy(hello.marker, MIXD_HELLO_MARKER, sizeof hello.marker);
	hello.kind = r->memfd >= 0 ? MIXD_HELLO_SHM : MIXD_HELLO_STREAM;
	struct iovec iov = {.iov_base = &hello, .iov_len = sizeof hello};
	char cbuf[CMSG_SPACE(sizeof(int))]
		__attribute__((aligned(__alignof__(struct cmsghdr))));
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (r->memfd >= 0) {
		memset(cbuf, 0, sizeof cbuf);
		msg.msg_control = cbuf;
		msg.msg_controllen = sizeof cbuf;
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &r->memfd, sizeof(int));
	}
	ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	return n == (ssize_t)sizeof hello ? 0 : -1;
}

/* Drop the retired ring at *@pp from @c's list, its counts kept in the
 * client's, @lost of its written records (never taken by mixd) counted as
 * dropped instead. Under c->lock. */
static void forget_ring(struct mixd_client *c, struct tl_ring **pp,
			uint64_t lost)
{
	struct tl_ring *r = *pp;
	struct mixd_ring_hdr *h = r->prod.hdr;
	c->gone_written += ring_load_relaxed(&h->prod.written) - lost;
	c->gone_dropped += ring_load_relaxed(&h->prod.dropped) + lost;
	c->gone_invalid += ring_load_relaxed(&h->prod.invalid);
	*pp = r->next;
	c->nrings--;
	ring_unref(r);
}

static bool ring_done(struct tl_ring *r);

/*
 * Threads come and go while mixd is away: of the exited threads' rings
 * mixd has not got, keep the RETIRED_MAX that exited last, not a megabyte
 * and a descriptor for every one. Forget the one that exited first (of
 * those seen exited in the same pass, the one made first: the list is
 * newest first); what it holds is lost, and counted. Under c->lock.
 */
static void forget_oldest_waiting(struct mixd_client *c)
{
	struct tl_ring **oldest = NULL;
	for (struct tl_ring **pp = &c->rings; *pp; pp = &(*pp)->next) {
		struct tl_ring *r = *pp;
		if (r->retired_seq && r->sock < 0 && !ring_done(r) &&
		    (!oldest || r->retired_seq <= (*oldest)->retired_seq))
			oldest = pp;
	}
	if (!oldest)
		return;
	struct mixd_ring_hdr *h = (*oldest)->prod.hdr;
	uint64_t w = ring_load_relaxed(&h->prod.written);
	uint64_t got = ring_load_relaxed(&h->cons.consumed);
	forget_ring(c, oldest, w > got ? w - got : 0);
}

/* Try again after the backoff, which doubles up to reconnect_max_ms. */
static void retry_later(struct mixd_client *c, struct tl_ring *r,
			uint64_t now)
{
	r->retry_at_ns = now + (uint64_t)r->backoff_ms * 1000000u;
	r->backoff_ms = r->backoff_ms > c->reconnect_max_ms / 2
				? c->reconnect_max_ms
				: r->backoff_ms * 2;
}

/* Connect @r to mixd and say hello, or set its next try. False when no
 * connection could be made at all (mixd down, its socket gone or its
 * backlog full): then no other ring's would either. */
static bool try_connect(struct mixd_client *c, struct tl_ring *r, uint64_t now)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	bool reached = fd >= 0 && connect(fd, (struct sockaddr *)&c->addr,
					  sizeof c->addr) == 0;
	if (reached && send_hello(c, r, fd) == 0) {
		r->sock = fd;
		__atomic_store_n(&r->linked, 1, __ATOMIC_RELEASE);
		r->connected_ns = now; /* the backoff waits to see it last */
		r->send_part = 0;
		r->want_out = false;
		__atomic_add_fetch(&c->connected, 1, __ATOMIC_RELAXED);
		return true;
	}
	if (fd >= 0)
		close(fd);
	retry_later(c, r, now);
	return reached;
}

static void disconnect(struct mixd_client *c, struct tl_ring *r, uint64_t now)
{
	close(r->sock);
	r->sock = -1;
	__atomic_store_n(&r->linked, 0, __ATOMIC_RELEASE);
	/* A frame cut short is sent again, whole, on the next connection;
	 * mixd discards the partial one with the connection. A counts frame
	 * is made again, with what is untold by then. */
	r->send_part = 0;
	r->counts_on = false;
	/* A connection that lasted starts the backoff over; one that mixd
	 * dropped at once (it refused the ring, say) backs off as a failed
	 * connect does, or every thread would reconnect 100 times a second
	 * for ever. */
	if (now - r->connected_ns >= CONNECTION_LASTED_NS)
		r->backoff_ms = BACKOFF_MIN_MS;
	retry_later(c, r, now);
	__atomic_sub_fetch(&c->connected, 1, __ATOMIC_RELAXED);
}

/* Send up to @n bytes without blocking: how many went, 0 when the socket
 * is full (want_out set), -1 when the connection failed. */
static ssize_t send_some(struct tl_ring *r, const void *p, size_t n)
{
	for (;;) {
		ssize_t k = send(r->sock, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k >= 0)
			return k;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			r->want_out = true;
			return 0;
		}
		if (errno != EINTR)
			return -1;
	}
}

/*
 * Socket transport: tell mixd what this ring dropped and refused since it
 * last did, in a counts frame (<mixd/ring.h>), which a shared-memory
 * ring's header tells instead; once sent whole it is told. Same returns as
 * pump().
 */
static int tell_counts(struct tl_ring *r)
{
	struct mixd_ring_hdr *h = r->prod.hdr;
	struct mixd_frame_counts fc;
	if (!r->counts_on) {
		fc = (struct mixd_frame_counts){
			ring_load_relaxed(&h->prod.dropped) - r->told_dropped,
			ring_load_relaxed(&h->prod.invalid) - r->told_invalid,
		};
		if (!fc.dropped && !fc.invalid)
			return 0;
		uint32_t fh[2] = {sizeof fc, MIXD_FRAME_COUNTS};
		memcpy(r->counts, fh, sizeof fh);
		memcpy(r->counts + sizeof fh, &fc, sizeof fc);
		r->counts_on = true;
		r->counts_off = 0;
	}
	while (r->counts_off < sizeof r->counts) {
		ssize_t n = send_some(r, r->counts + r->counts_off,
				      sizeof r->counts - r->counts_off);
		if (n <= 0)
			return n < 0 ? -1 : 1;
		r->counts_off += (uint32_t)n;
	}
	memcpy(&fc, r->counts + MIXD_FRAME_HDR, sizeof fc); /* what it told */
	ring_store_relaxed(&r->told_dropped, r->told_dropped + fc.dropped);
	ring_store_relaxed(&r->told_invalid, r->told_invalid + fc.invalid);
	r->counts_on = false;
	r->told_ns = now_ns(CLOCK_MONOTONIC);
	return 0;
}

/* A ring under sustained load may never be empty, when pump() tells its
 * drops: between whole frames it tells them at least this often too, so
 * that mixd counts them while they happen. */
#define TELL_EVERY_NS 100000000u

/* Everything committed so far has been taken by mixd (or the socket). */
static bool ring_taken(struct tl_ring *r)
{
	struct mixd_ring_hdr *h = r->prod.hdr;
	return ring_load_acquire(&h->cons.tail) ==
	       ring_load_acquire(&h->prod.head);
}

/* mixd knows of every record the ring dropped or refused: a shared ring's
 * header tells it; a socket ring's counts frames (tell_counts()). */
static bool ring_told(struct tl_ring *r)
{
	struct mixd_ring_hdr *h = r->prod.hdr;
	return r->memfd >= 0 ||
	       (ring_load_relaxed(&r->told_dropped) ==
			ring_load_relaxed(&h->prod.dropped) &&
		ring_load_relaxed(&r->told_invalid) ==
			ring_load_relaxed(&h->prod.invalid));
}

/*
 * Socket transport: send what the producer published, as it lies in the
 * ring (frames back to back, wrap frames skipped), in chunks, then what it
 * dropped (tell_counts()). Returns 1 if bytes remain to send, 0 if all is
 * sent, -1 if the connection failed.
 */
static int pump(struct tl_ring *r)
{
	struct ring_cons *s = &r->send;
	/* A counts frame begun goes out whole before any record's byte. */
	if (r->counts_on) {
		int t = tell_counts(r);
		if (t)
			return t;
	}
	/* Drops to tell between frames: a frame begun is finished first,
	 * and nothing sent after it until they are told. */
	bool due = !ring_told(r) &&
		   now_ns(CLOCK_MONOTONIC) - r->told_ns >= TELL_EVERY_NS;
	for (int rounds = 0; rounds < 64; rounds++) {
		if (due && !r->send_part) {
			int t = tell_counts(r);
			if (t)
				return t;
			due = false;
		}
		s->head = ring_load_acquire(&s->hdr->prod.head);
		if (s->tail == s->head)
			return tell_counts(r);
		uint64_t pos = s->tail & (s->cap - 1);
		uint32_t fh[2];
		memcpy(fh, s->data + pos, sizeof fh);
		if (fh[1] == MIXD_FRAME_WRAP) {
			s->tail += s->cap - pos;
			ring_cons_commit(s);
			continue;
		}
		/* Gather whole frames up to the end of data, a wrap, or
		 * SEND_CHUNK. Our own memory: no need to distrust it. */
		uint64_t end = s->tail;
		while (end < s->head && end - s->tail < SEND_CHUNK &&
		       !(due && end > s->tail)) {
			uint64_t p = end & (s->cap - 1);
			if (end != s->tail && p == 0)
				break;
			memcpy(fh, s->data + p, sizeof fh);
			if (fh[1] == MIXD_FRAME_WRAP)
				break;
			end += ring_frame_size(fh[0]);
		}
		size_t want = (size_t)(end - s->tail) - r->send_part;
		ssize_t n = send_some(r, s->data + pos + r->send_part, want);
		if (n <= 0)
			return n < 0 ? -1 : 1;
		/* Advance tail over the frames sent whole; remember how much of
		 * the next one went out. */
		uint64_t done = s->tail + r->send_part + (uint64_t)n, sent = 0;
		while (s->tail < done) {
			memcpy(fh, s->data + (s->tail & (s->cap - 1)), sizeof fh);
			uint64_t sz = ring_frame_size(fh[0]);
			if (s->tail + sz > done)
				break;
			s->tail += sz;
			sent++;
		}
		r->send_part = (uint32_t)(done - s->tail);
		/* As mixd counts a shared ring's records taken: what is not
		 * counted here is what a forgotten ring lost (forget_ring()). */
		ring_store_relaxed(&s->hdr->cons.consumed,
				   ring_load_relaxed(&s->hdr->cons.consumed) +
					   sent);
		ring_cons_commit(s);
		if ((size_t)n < want) {
			r->want_out = true;
			return 1;
		}
	}
	return 1;
}

/* Nothing left for mixd: a finished thread's ring can go. */
static bool ring_done(struct tl_ring *r)
{
	return ring_taken(r) && ring_told(r);
}

static void *bg_main(void *arg)
{
	struct mixd_client *c = arg;
	struct pollfd *pfd = NULL;
	struct tl_ring **who = NULL;
	uint32_t cap = 0;
	uint64_t retire_clock = 0;

	while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
		uint64_t now = now_ns(CLOCK_MONOTONIC);
		int timeout = 1000;
		uint32_t n = 0;

		pthread_mutex_lock(&c->lock);
		retire_clock++;
		if (c->nrings + 1 > cap) {
			uint32_t ncap = (c->nrings + 1) * 2;
			struct pollfd *np = realloc(pfd, ncap * sizeof *np);
			if (np)
				pfd = np;
			struct tl_ring **nw = realloc(who, ncap * sizeof *nw);
			if (nw)
				who = nw;
			if (np && nw)
				cap = ncap;
		}
		struct tl_ring **pp = &c->rings, *r;
		uint32_t waiting = 0; /* retired rings mixd has not got */
		while ((r = *pp)) {
			bool retired = __atomic_load_n(&r->retired, __ATOMIC_ACQUIRE);
			if (retired && !r->retired_seq)
				r->retired_seq = retire_clock;
			if (r->sock < 0 && now >= r->retry_at_ns &&
			    now >= c->away_until && !(retired && ring_done(r)) &&
			    !try_connect(c, r, now))
				c->away_until = r->retry_at_ns;
			if (r->sock >= 0 && r->memfd < 0) {
				uint64_t before = r->send.tail;
				int p = pump(r);
				if (r->send.tail != before)
					r->last_send_ns = now;
				if (p < 0)
					disconnect(c, r, now);
				else if (p > 0 && !r->want_out)
					timeout = 0;
			}
			if (retired && ring_done(r)) {
				/* Its thread is gone and mixd has it all. */
				if (r->sock >= 0)
					disconnect(c, r, now);
				forget_ring(c, pp, 0);
				continue;
			}
			if (r->sock < 0) {
				/* Rounded up: a try due within the millisecond is
				 * slept to, not polled for with a timeout of 0 (with
				 * hundreds of rings one nearly always is). */
				uint64_t at = r->retry_at_ns > c->away_until
						      ? r->retry_at_ns
						      : c->away_until;
				int64_t wait = ((int64_t)(at - now) + 999999) /
					       1000000;
				if (wait < timeout)
					timeout = wait < 0 ? 0 : (int)wait;
			} else if (n + 1 < cap) { /* room for wake_fd's too */
				/* Watch for mixd going away; for POLLOUT too when
				 * the socket pushed back. */
				pfd[n].fd = r->sock;
				pfd[n].events = POLLIN | (r->want_out ? POLLOUT : 0);
				who[n++] = r;
			}
			if (r->memfd < 0 && r->sock >= 0 && !r->want_out) {
				/* Socket: nothing tells us of new records, so look
				 * again soon: every millisecond while traffic
				 * flows, every 5 when it has been quiet. */
				int next = now - r->last_send_ns < 100000000u ? 1 : 5;
				if (timeout > next)
					timeout = next;
			}
			if (retired && r->sock < 0 && !ring_done(r))
				waiting++;
			pp = &r->next;
		}
		for (; waiting > RETIRED_MAX; waiting--)
			forget_oldest_waiting(c);
		pthread_mutex_unlock(&c->lock);

		if (!cap) {
			/* Out of memory: try again in a while, not at once
			 * for ever. */
			struct timespec ts = {0, 10000000};
			nanosleep(&ts, NULL);
			continue;
		}
		pfd[n].fd = c->wake_fd;
		pfd[n].events = POLLIN;
		if (poll(pfd, n + 1, timeout) <= 0)
			continue;
		now = now_ns(CLOCK_MONOTONIC);
		/* Under the lock: a ring's socket changes only under it
		 * (fork_prepare()). */
		pthread_mutex_lock(&c->lock);
		for (uint32_t i = 0; i < n; i++) {
			if (pfd[i].revents & POLLOUT)
				who[i]->want_out = false;
			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			/* mixd never sends on a producer connection: readable
			 * means closed (or a protocol we do not speak). */
			char b[64];
			ssize_t k = recv(who[i]->sock, b, sizeof b, MSG_DONTWAIT);
			if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR) ||
			    (pfd[i].revents & (POLLHUP | POLLERR)))
				disconnect(c, who[i], now);
		}
		pthread_mutex_unlock(&c->lock);
		if (pfd[n].revents & POLLIN) {
			uint64_t v;
			ssize_t k = read(c->wake_fd, &v, sizeof v);
			(void)k;
		}
	}
	free(pfd);
	free(who);
	return NULL;
}

/* ---- the client ------------------------------------------------------- */

int client_parse_address(const char *address, struct sockaddr_un *sa)
{
	const char *path = address;
	if (strncmp(address, "unix://", 7) == 0)
		path = address + 7;
	if (path[0] != '/' || strlen(path) >= sizeof sa->sun_path)
		return -EINVAL;
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	strcpy(sa->sun_path, path);
	return 0;
}

API int mixd_client_open(const char *address,
			 const struct mixd_client_options *opts,
			 mixd_client **out)
{
	struct mixd_client_options o = {0};
	if (opts)
		o = *opts;
	if (!o.ring_bytes)
		o.ring_bytes = MIXD_RING_BYTES_DEFAULT;
	if (!o.reconnect_max_ms)
		o.reconnect_max_ms = 1000;
	if (!address || !out || (o.ring_bytes & (o.ring_bytes - 1)) ||
	    o.ring_bytes < RING_MIN || o.ring_bytes > MIXD_RING_MAX_CAPACITY ||
	    (o.transport != MIXD_TRANSPORT_SHM &&
	     o.transport != MIXD_TRANSPORT_SOCKET))
		return -EINVAL;
	if (o.reconnect_max_ms < BACKOFF_MIN_MS)
		o.reconnect_max_ms = BACKOFF_MIN_MS;

	struct mixd_client *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->wake_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	int rc = client_parse_address(address, &c->addr);
	if (rc)
		goto fail;
	pthread_once(&fork_once, fork_init);
	c->pid = proc_pid;
	c->id = __atomic_fetch_add(&next_client_id, 1, __ATOMIC_RELAXED);
	c->transport = o.transport;
	c->ring_bytes = o.ring_bytes;
	c->reconnect_max_ms = o.reconnect_max_ms;
	pthread_rwlock_rdlock(&fork_guard);
	c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->wake_fd < 0) {
		rc = -errno;
		pthread_rwlock_unlock(&fork_guard);
		goto fail;
	}
	/* The background thread takes none of the host's signals (it starts
	 * with every one blocked): a host waiting for SIGTERM in sigwait(), or
	 * whose handler records, must get them on its own threads. */
	sigset_t all, mask;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &mask);
	rc = -pthread_create(&c->bg, NULL, bg_main, c);
	pthread_sigmask(SIG_SETMASK, &mask, NULL);
	if (!rc) /* for top -H and the like */
		(void)pthread_setname_np(c->bg, "mixd-client");
	if (rc)
		goto fail;
	pthread_mutex_lock(&open_lock);
	c->next_open = open_clients;
	open_clients = c;
	pthread_mutex_unlock(&open_lock);
	pthread_rwlock_unlock(&fork_guard);
	*out = c;
	return 0;
fail:
	if (c->wake_fd >= 0) { /* from here on the guard is held */
		close(c->wake_fd);
		pthread_rwlock_unlock(&fork_guard);
	}
	pthread_mutex_destroy(&c->lock);
	free(c);
	return rc;
}

API void mixd_client_close(mixd_client *c)
{
	if (!c || c->pid != proc_pid)
		return; /* a parent's, in a forked child: not ours to tear down */
	__atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
	wake(c);
	pthread_join(c->bg, NULL);
	/* The sockets under the lock, as a fork sees them, each given what
	 * it takes now of its ring (no waiting: mixd_client_flush() waits);
	 * then out of the list of open clients. */
	pthread_mutex_lock(&c->lock);
	for (struct tl_ring *r = c->rings; r; r = r->next) {
		if (r->sock >= 0) {
			if (r->memfd < 0 &&
			    __atomic_load_n(&r->linked, __ATOMIC_ACQUIRE))
				(void)pump(r);
			close(r->sock);
			r->sock = -1;
		}
		/* Nothing hands it over again; a thread that goes on
		 * writing needs only the mapping. Closed now, not when that
		 * thread lets go, or a fork meanwhile would give the child a
		 * descriptor no client lists, and the ring's memory with it. */
		if (r->memfd >= 0) {
			close(r->memfd);
			r->memfd = -1;
		}
	}
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_lock(&open_lock);
	struct mixd_client **pp = &open_clients;
	while (*pp && *pp != c)
		pp = &(*pp)->next_open;
	if (*pp)
		*pp = c->next_open;
	pthread_mutex_unlock(&open_lock);
	struct tl_ring *r = c->rings, *next;
	for (; r; r = next) {
		next = r->next;
		__atomic_store_n(&r->orphaned, 1, __ATOMIC_RELEASE);
		ring_unref(r);
	}
	close(c->wake_fd);
	for (uint32_t i = 0; i < c->ncustom; i++)
		free(c->custom[i]);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* What mixd_client_flush() waits for of one ring: its records and drops
 * up to the call. */
struct flush_mark {
	const struct tl_ring *r;
	uint64_t serial, head, dropped, invalid;
};

/* @m's ring has been taken up to its mark and, while mixd is there to hear
 * it, told of its drops up to it (with no connection the drops wait for
 * one, but a flush does not: it promises records only). Under c->lock. */
static bool flushed(struct tl_ring *r, const struct flush_mark *m)
{
	struct mixd_ring_hdr *h = r->prod.hdr;
	if (ring_load_acquire(&h->cons.tail) < m->head)
		return false;
	return r->memfd >= 0 || !__atomic_load_n(&r->linked, __ATOMIC_ACQUIRE) ||
	       (ring_load_relaxed(&r->told_dropped) >= m->dropped &&
		ring_load_relaxed(&r->told_invalid) >= m->invalid);
}

API int mixd_client_flush(mixd_client *c, int timeout_ms)
{
	if (c->pid != proc_pid)
		return 0; /* a parent's, in a child: nothing of ours in it */
	/* Negative: no deadline (the unsigned sum would have wrapped to
	 * one in the past). */
	uint64_t deadline = timeout_ms < 0
				    ? UINT64_MAX
				    : now_ns(CLOCK_MONOTONIC) +
					      (uint64_t)timeout_ms * 1000000u;
	/* The records committed so far, each ring's to its head now: not
	 * until a ring is empty, which under steady load may be never. */
	pthread_mutex_lock(&c->lock);
	uint32_t n = 0;
	struct flush_mark *m = calloc(c->nrings + 1, sizeof *m);
	for (struct tl_ring *r = c->rings; m && r; r = r->next) {
		struct mixd_ring_hdr *h = r->prod.hdr;
		m[n++] = (struct flush_mark){
			r, r->serial, ring_load_acquire(&h->prod.head),
			ring_load_relaxed(&h->prod.dropped),
			ring_load_relaxed(&h->prod.invalid)};
	}
	pthread_mutex_unlock(&c->lock);
	if (!m)
		return -ENOMEM;
	for (;;) {
		bool done = true;
		pthread_mutex_lock(&c->lock);
		/* A ring gone from the list is done with: mixd has all of it,
		 * or it was let go (counted). Lists are short: one ring a
		 * producer thread. */
		for (struct tl_ring *r = c->rings; r && done; r = r->next)
			for (uint32_t i = 0; i < n; i++)
				if (m[i].r == r && m[i].serial == r->serial) {
					done = flushed(r, &m[i]);
					break;
				}
		pthread_mutex_unlock(&c->lock);
		if (done || now_ns(CLOCK_MONOTONIC) >= deadline) {
			free(m);
			return done ? 0 : -ETIMEDOUT;
		}
		wake(c);
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
}

API void mixd_client_stats(mixd_client *c, struct mixd_client_stats *out)
{
	memset(out, 0, sizeof *out);
	if (c->pid != proc_pid) { /* a parent's, in a child: no lock to take */
		out->dropped = out->dropped_full =
			__atomic_load_n(&c->dropped_noring, __ATOMIC_RELAXED);
		return;
	}
	pthread_mutex_lock(&c->lock);
	out->written = c->gone_written;
	out->dropped_full = c->gone_dropped;
	out->dropped_invalid = c->gone_invalid;
	for (struct tl_ring *r = c->rings; r; r = r->next) {
		struct mixd_ring_hdr *h = r->prod.hdr;
		out->written += ring_load_relaxed(&h->prod.written);
		out->dropped_full += ring_load_relaxed(&h->prod.dropped);
		out->dropped_invalid += ring_load_relaxed(&h->prod.invalid);
		out->bytes += ring_load_relaxed(&h->prod.head);
		out->rings++;
	}
	pthread_mutex_unlock(&c->lock);
	out->dropped_full += __atomic_load_n(&c->dropped_noring, __ATOMIC_RELAXED);
	out->dropped = out->dropped_full + out->dropped_invalid;
	out->connected = __atomic_load_n(&c->connected, __ATOMIC_RELAXED);
}

API uint64_t mixd_client_pending(mixd_client *c)
{
	if (c->pid != proc_pid)
		return 0; /* a parent's rings, in a child: not ours to send */
	uint64_t n = 0;
	pthread_mutex_lock(&c->lock);
	for (struct tl_ring *r = c->rings; r; r = r->next) {
		struct mixd_ring_hdr *h = r->prod.hdr;
		/* A shared ring mixd holds (handed over on a connection that
		 * stands) is drained by it after we are gone. */
		if (r->memfd >= 0 && r->sock >= 0)
			continue;
		/* consumed is mixd's (or, for a socket ring, the background
		 * thread's): never above written from a sane mixd, but not
		 * trusted to be. */
		uint64_t w = ring_load_relaxed(&h->prod.written);
		uint64_t got = ring_load_relaxed(&h->cons.consumed);
		n += w > got ? w - got : 0;
	}
	pthread_mutex_unlock(&c->lock);
	return n;
}

/* ---- attribute names -------------------------------------------------- */

API int mixd_attr_lookup(const char *name)
{
	for (int i = 0; i < MIXD_ATTR_DICT_COUNT; i++)
		if (strcmp(dictionary[i].name, name) == 0)
			return i;
	return -1;
}

API int mixd_attr_type(mixd_attr a)
{
	return a < MIXD_ATTR_DICT_COUNT ? dictionary[a].type : 0;
}

_Static_assert(MIXD_ATTR_NAME_MAX == MIXD_RECORD_MAX - 6u,
	       "a name's 5-byte header and a bool's byte");

API int mixd_attr_custom(mixd_client *c, const char *name, mixd_attr *out)
{
	size_t len = name ? strlen(name) : 0;
	/* Longer, and no record could carry it: the name inline behind its
	 * 5-byte header, and the smallest value (a bool) behind that. */
	if (len == 0 || len > MIXD_ATTR_NAME_MAX)
		return -EINVAL;
	int id = mixd_attr_lookup(name);
	if (id >= 0) {
		*out = (mixd_attr)id;
		return 0;
	}
	if (c->pid != proc_pid) {
		/* A parent's, in a child: its lock may have been held at the
		 * fork, by a thread the child does not have. The names it
		 * had are read without it (they are only ever appended);
		 * a new one is refused. */
		uint32_t n = __atomic_load_n(&c->ncustom, __ATOMIC_ACQUIRE);
		for (uint32_t i = 0; i < n; i++)
			if (c->custom_len[i] == len &&
			    memcmp(c->custom[i], name, len) == 0) {
				*out = (mixd_attr)(CUSTOM_BASE + i);
				return 0;
			}
		return -ECHILD;
	}
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	uint32_t n = c->ncustom;
	for (uint32_t i = 0; i < n; i++) {
		if (c->custom_len[i] == len && memcmp(c->custom[i], name, len) == 0) {
			*out = (mixd_attr)(CUSTOM_BASE + i);
			goto out;
		}
	}
	if (n == CUSTOM_MAX) {
		rc = -ENOSPC;
		goto out;
	}
	c->custom[n] = strdup(name);
	if (!c->custom[n]) {
		rc = -ENOMEM;
		goto out;
	}
	c->custom_len[n] = (uint16_t)len;
	__atomic_store_n(&c->ncustom, n + 1, __ATOMIC_RELEASE);
	*out = (mixd_attr)(CUSTOM_BASE + n);
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

API const char *mixd_version(void)
{
	return MIXD_VERSION;
}

ssize_t client_dict_values_size(const struct mixd_value *v, size_t n)
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		size_t sz = v[i].attr < MIXD_ATTR_DICT_COUNT
				    ? value_size(NULL, &v[i])
				    : 0;
		if (!sz)
			return -EINVAL;
		if ((len += sz) > MIXD_RECORD_MAX)
			return -EMSGSIZE;
	}
	return (ssize_t)len;
}

uint8_t *client_encode_values(const struct mixd_value *v, size_t n,
			      uint8_t *o)
{
	return encode_values(NULL, v, n, o);
}
