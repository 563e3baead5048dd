/*
 * segment.c -- the consumer side of producer rings (memfd segments) and of
 * the private queue rings that carry socket records to a shard.
 *
 * A segment is hostile memory: the producer may rewrite any byte at any
 * time, including the header. What mixd relies on is therefore copied out
 * once, at attach (the capacity), and only a memfd its producer sealed
 * against shrinking is mapped, so the file cannot shrink under the
 * mapping.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "ingest/ingest.h"
#include "ingest/ring.h"

struct ingest_ring {
	struct ring_cons c;
	void *map;
	size_t map_len;
	enum ingest_transport transport;
	uint32_t pid;
	bool dead;                 /* head invalid: no longer read */
	bool layouts;              /* a v2 segment: layout records allowed */
	uint32_t lay_loaded;       /* bit per slot: lay[slot] checked */
	struct ingest_layout *lay; /* MIXD_LAYOUT_SLOTS, on first use */
	struct ring_prod queue;    /* queue rings only: the io thread's end */
	/* Shared rings: the producer's tallies counted so far (the marks in
	 * the segment are for a restarted mixd, read once, at attach), and
	 * its allowance. */
	uint64_t seen_dropped, seen_invalid;
	struct ingest_said *said, own_said; /* said: own_said or the shard's */
	/* Shared rings: the segment's file, in the set of those attached. */
	dev_t dev;
	ino_t ino;
	struct ingest_ring *same_next; /* attached_set's chain */
};

/*
 * The segments attached now, by file. One memfd sent in two hellos would
 * be two consumers of one ring: every record counted twice, and the
 * consumer's marks in the segment raced for. A hello whose segment is
 * attached already is refused (its producer reconnects when the first
 * one is gone: a mixd restart never has the first).
 */
#define ATTACHED_BUCKETS 1024
static struct ingest_ring *attached_set[ATTACHED_BUCKETS];
static pthread_mutex_t attached_lock = PTHREAD_MUTEX_INITIALIZER;

static struct ingest_ring **attached_bucket(dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)ino ^ (uint64_t)dev * 0x9e3779b97f4a7c15ull) *
		     0xff51afd7ed558ccdull;
	return &attached_set[h >> 54]; /* 10 bits */
}

/* Put @r (its dev, ino set) in the set; false when its file is there. */
static bool attached_add(struct ingest_ring *r)
{
	pthread_mutex_lock(&attached_lock);
	struct ingest_ring **b = attached_bucket(r->dev, r->ino), *o;
	for (o = *b; o && !(o->dev == r->dev && o->ino == r->ino);
	     o = o->same_next)
		;
	if (!o) {
		r->same_next = *b;
		*b = r;
	}
	pthread_mutex_unlock(&attached_lock);
	return !o;
}

static void attached_remove(struct ingest_ring *r)
{
	pthread_mutex_lock(&attached_lock);
	struct ingest_ring **pp = attached_bucket(r->dev, r->ino);
	while (*pp && *pp != r)
		pp = &(*pp)->same_next;
	if (*pp)
		*pp = r->same_next;
	pthread_mutex_unlock(&attached_lock);
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* A ring over @map (header, then @cap bytes of data), for consuming. */
static struct ingest_ring *ring_new(void *map, uint64_t cap,
				    enum ingest_transport t)
{
	struct ingest_ring *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->map = map;
	r->said = &r->own_said;
	r->map_len = MIXD_RING_HDR_SIZE + cap;
	r->transport = t;
	r->c.hdr = map;
	r->c.data = (const uint8_t *)map + MIXD_RING_HDR_SIZE;
	r->c.cap = cap;
	r->c.max_len = MIXD_RECORD_MAX;
	return r;
}

/*
 * Descriptors from producers are closed on a thread of their own. A file
 * on a filesystem the producer serves (FUSE) makes close() a request to
 * the producer, answered when it likes -- or never: the io thread, every
 * producer's, must not wait for it. The closer reads descriptor numbers
 * from a pipe; a number stays open, so it is not reused, until it has
 * closed it. While CLOSE_BACKLOG_MAX wait, the server takes no more
 * descriptors (ingest_close_untrusted_backed_up()), so a close that never
 * returns holds one thread and a bounded number of descriptors, and the
 * pipe (16 Ki numbers) never fills; were it full, the caller would close.
 */
#define CLOSE_BACKLOG_MAX 64
static int closer_pipe[2] = {-1, -1};
static pthread_once_t closer_once = PTHREAD_ONCE_INIT;
static uint64_t closes_queued, closes_done; /* atomic */

static void *closer_main(void *arg)
{
	(void)arg;
	int fd;
	while (read(closer_pipe[0], &fd, sizeof fd) == (ssize_t)sizeof fd) {
		close(fd);
		__atomic_add_fetch(&closes_done, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

bool ingest_close_untrusted_backed_up(void)
{
	return __atomic_load_n(&closes_queued, __ATOMIC_ACQUIRE) -
		       __atomic_load_n(&closes_done, __ATOMIC_ACQUIRE) >=
	       CLOSE_BACKLOG_MAX;
}

void ingest_close_untrusted_wait(void)
{
	while (__atomic_load_n(&closes_done, __ATOMIC_ACQUIRE) !=
	       __atomic_load_n(&closes_queued, __ATOMIC_ACQUIRE)) {
		struct timespec ts = {0, 100000};
		nanosleep(&ts, NULL);
	}
}

static void closer_start(void)
{
	if (pipe2(closer_pipe, O_CLOEXEC) != 0)
		return;
	pthread_attr_t at;
	pthread_t t;
	bool ok = fcntl(closer_pipe[1], F_SETFL, O_NONBLOCK) == 0 &&
		  pthread_attr_init(&at) == 0;
	if (ok) {
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		ok = pthread_create(&t, &at, closer_main, NULL) == 0;
		pthread_attr_destroy(&at);
	}
	if (!ok) {
		close(closer_pipe[0]);
		close(closer_pipe[1]);
		closer_pipe[0] = closer_pipe[1] = -1;
	}
}

void ingest_close_untrusted(int fd)
{
	/* A socket whose peer does not read, with SO_LINGER set, would hold
	 * close() for as long as the linger says: drop its data instead.
	 * Set on any file: on one that is not a socket it fails (ENOTSOCK)
	 * without asking its filesystem, as fstat() would. */
	struct linger now = {.l_onoff = 1, .l_linger = 0};
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &now, sizeof now);
	pthread_once(&closer_once, closer_start);
	__atomic_add_fetch(&closes_queued, 1, __ATOMIC_ACQ_REL);
	if (closer_pipe[1] >= 0 &&
	    write(closer_pipe[1], &fd, sizeof fd) == (ssize_t)sizeof fd)
		return;
	close(fd);
	__atomic_add_fetch(&closes_done, 1, __ATOMIC_RELEASE);
}

/*
 * Bytes of producers' segments mapped now, in this process. A segment is
 * memory the producer chose the size of and may leave sparse: every page
 * the consumer reads that the producer never wrote is allocated then, and
 * charged to mixd. ingest_ring_attach()'s limit on the sum is what bounds
 * that, whatever producers send.
 */
static uint64_t shm_mapped; /* atomic */

uint64_t ingest_ring_mapped_bytes(void)
{
	return __atomic_load_n(&shm_mapped, __ATOMIC_RELAXED);
}

/* Take @len bytes of @limit (0: none) for a mapping; false: they would go
 * beyond it. */
static bool mapped_take(uint64_t len, uint64_t limit)
{
	uint64_t cur = __atomic_load_n(&shm_mapped, __ATOMIC_RELAXED);
	do {
		if (limit && (cur > limit || len > limit - cur))
			return false;
	} while (!__atomic_compare_exchange_n(&shm_mapped, &cur, cur + len,
					      true, __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	return true;
}

static void mapped_give(uint64_t len)
{
	__atomic_sub_fetch(&shm_mapped, len, __ATOMIC_RELAXED);
}

int ingest_ring_attach(int fd, uint64_t limit, struct ingest_ring **out)
{
	struct ingest_ring *r = NULL;
	void *map = MAP_FAILED;
	size_t len = 0;
	struct stat st;
	int rc;

	/* Only a memfd's kind of file: a regular file in shared memory
	 * (tmpfs). On hugetlbfs a seal against shrinking still lets the
	 * producer punch holes, and a read of one is SIGBUS. Asking for the
	 * seals first refuses any other file (one on FUSE or NFS, whose
	 * stat could hang) without a call into its filesystem. */
	struct statfs fs;
	bool memfd_kind = false; /* its close cannot wait on anyone */
	int seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0) {
		rc = -EBADF;
		goto fail;
	}
	memfd_kind = true;
	if (fstat(fd, &st) != 0 || fstatfs(fd, &fs) != 0) {
		rc = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || fs.f_type != TMPFS_MAGIC) {
		rc = -EBADF;
		goto fail;
	}
	/* Sealed against shrinking by the producer, or refused: the seal is
	 * what keeps the file from shrinking under our mapping (which would
	 * turn reads into SIGBUS), and seals are never removed. We only read
	 * the seals, which takes no lock: adding one takes the file's inode
	 * lock, which the producer can hold for as long as it likes (a
	 * write() into the memfd from a page that is slow to fault in, on a
	 * FUSE mount of its own), and this is the io thread every producer's
	 * handshake waits on. The size is read after the seal is known. */
	if (!(seals & F_SEAL_SHRINK)) {
		rc = -EPERM;
		goto fail;
	}
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto fail;
	}
	if (st.st_size < (off_t)(MIXD_RING_HDR_SIZE + MIXD_RING_MIN_CAPACITY)) {
		rc = -EPROTO;
		goto fail;
	}
	/* Map only the header first to learn the capacity it claims. */
	struct mixd_ring_hdr *h = mmap(NULL, MIXD_RING_HDR_SIZE, PROT_READ,
				       MAP_SHARED, fd, 0);
	if (h == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	char marker[MIXD_RING_MARKER_LEN];
	memcpy(marker, h->ident.marker, sizeof marker);
	uint64_t cap = ck_pr_load_64(&h->ident.capacity);
	uint32_t pid = h->ident.pid;
	munmap(h, MIXD_RING_HDR_SIZE);
	bool v2 = memcmp(marker, MIXD_RING_MARKER,
			 sizeof(MIXD_RING_MARKER) - 1) == 0;
	if ((!v2 && memcmp(marker, MIXD_RING_MARKER_V1,
			   sizeof(MIXD_RING_MARKER_V1) - 1) != 0) ||
	    !is_pow2(cap) || cap < MIXD_RING_MIN_CAPACITY ||
	    cap > MIXD_RING_MAX_CAPACITY ||
	    (uint64_t)st.st_size < MIXD_RING_HDR_SIZE + cap) {
		rc = -EPROTO;
		goto fail;
	}
	if (!mapped_take(MIXD_RING_HDR_SIZE + cap, limit)) {
		rc = -ENOSPC;
		goto fail;
	}
	len = MIXD_RING_HDR_SIZE + cap;
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	if (!(r = ring_new(map, cap, INGEST_SHM))) {
		rc = -ENOMEM;
		goto fail;
	}
	r->pid = pid;
	r->layouts = v2;
	r->dev = st.st_dev;
	r->ino = st.st_ino;
	if (!attached_add(r)) {
		free(r);
		r = NULL;
		rc = -EEXIST;
		goto fail;
	}
	/* Resume where the previous consumer (perhaps a mixd that died)
	 * stopped. The value is the producer's to scribble on, so check it. */
	uint64_t head = ring_load_acquire(&r->c.hdr->prod.head);
	uint64_t tail = ring_load_acquire(&r->c.hdr->cons.tail);
	if (tail > head || head - tail > cap || (tail & 7)) {
		tail = head & ~(uint64_t)7;
		r->c.hdr->cons.tail = tail;
	}
	r->c.tail = tail;
	r->c.head = tail;
	r->seen_dropped = ring_load_relaxed(&r->c.hdr->cons.dropped_seen);
	r->seen_invalid = ring_load_relaxed(&r->c.hdr->cons.invalid_seen);
	close(fd); /* the mapping keeps the memory */
	*out = r;
	return 0;
fail:
	if (map != MAP_FAILED)
		munmap(map, len);
	if (len) /* taken from the limit */
		mapped_give(len);
	if (memfd_kind)
		close(fd);
	else
		ingest_close_untrusted(fd);
	return rc;
}

_Static_assert(INGEST_QUEUE_MIN >=
		       2 * MIXD_FRAME_ALIGN(MIXD_FRAME_HDR + MIXD_RECORD_MAX),
	       "the largest frame fits an empty queue wherever its head is");

int ingest_ring_create_queue(uint64_t capacity, struct ingest_ring **out)
{
	if (!is_pow2(capacity) || capacity < INGEST_QUEUE_MIN)
		return -EINVAL;
	size_t len = MIXD_RING_HDR_SIZE + capacity;
	void *map = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return -errno;
	struct ingest_ring *r = ring_new(map, capacity, INGEST_SOCKET);
	if (!r) {
		munmap(map, len);
		return -ENOMEM;
	}
	ring_init(map, capacity, (uint32_t)getpid(), 0, 0);
	ring_prod_init(&r->queue, map, (uint8_t *)map + MIXD_RING_HDR_SIZE);
	*out = r;
	return 0;
}

void ingest_ring_destroy(struct ingest_ring *r)
{
	if (!r)
		return;
	if (r->transport == INGEST_SHM)
		attached_remove(r);
	munmap(r->map, r->map_len);
	if (r->transport == INGEST_SHM) /* unmapped first: never over */
		mapped_give(r->map_len);
	free(r->lay);
	free(r);
}

bool ingest_queue_push(struct ingest_ring *q, const void *p, uint32_t len)
{
	return ring_push(&q->queue, p, len);
}

enum ingest_transport ingest_ring_transport(const struct ingest_ring *r)
{
	return r->transport;
}

uint32_t ingest_ring_pid(const struct ingest_ring *r)
{
	return r->pid;
}

bool ingest_ring_left(const struct ingest_ring *r)
{
	return !r->dead && r->c.tail != r->c.head;
}

uint64_t ingest_ring_consumed(const struct ingest_ring *r)
{
	return r->c.tail;
}

uint64_t ingest_ring_capacity(const struct ingest_ring *r)
{
	return r->c.cap;
}

bool ingest_ring_dead(const struct ingest_ring *r)
{
	return r->dead;
}

bool ingest_ring_empty(struct ingest_ring *r)
{
	if (r->dead)
		return true;
	if (!ring_cons_refresh(&r->c))
		return true; /* poll() will find out and count it */
	return r->c.tail == r->c.head;
}

uint64_t ingest_now_coarse(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void ingest_said_count(struct ingest_said *s, uint64_t out[INGEST_SAID_KINDS])
{
	if (!ingest_said_waiting(s))
		return;
	const uint64_t ns_each = 1000000000ull / INGEST_SAID_PER_S;
	uint64_t now = ingest_now_coarse();
	if (now > s->at_ns) {
		uint64_t add = (now - s->at_ns) / ns_each;
		s->tokens = add >= INGEST_SAID_BURST - s->tokens
				    ? INGEST_SAID_BURST
				    : s->tokens + add;
		s->at_ns += add * ns_each;
	}
	for (int k = 0; k < INGEST_SAID_KINDS; k++) {
		uint64_t got = s->pending[k] < s->tokens ? s->pending[k]
							 : s->tokens;
		s->tokens -= got;
		s->pending[k] -= got;
		out[k] = ingest_count_add(out[k], got);
	}
}

void ingest_ring_set_said(struct ingest_ring *r, struct ingest_said *s)
{
	/* What the ring's own allowance still holds goes with it. */
	for (int k = 0; k < INGEST_SAID_KINDS; k++)
		ingest_said_add(s, (enum ingest_said_kind)k, r->own_said.pending[k]);
	memset(r->own_said.pending, 0, sizeof r->own_said.pending);
	r->said = s;
}

/*
 * Account for drops the producer made since any consumer last looked:
 * added to what the allowance counts. The marks of what was taken are ours
 * (seen_*), written to the segment for a restarted mixd, which starts from
 * them and so counts exactly the drops made while it was down; read back
 * only then (ingest_ring_attach()).
 */
static void account_drops(struct ingest_ring *r)
{
	struct mixd_ring_hdr *h = r->c.hdr;
	uint64_t d = ring_load_relaxed(&h->prod.dropped);
	if (d > r->seen_dropped) {
		ingest_said_add(r->said, INGEST_SAID_DROPPED, d - r->seen_dropped);
		r->seen_dropped = d;
		ring_store_relaxed(&h->cons.dropped_seen, d);
	}
	uint64_t inv = ring_load_relaxed(&h->prod.invalid);
	if (inv > r->seen_invalid) {
		ingest_said_add(r->said, INGEST_SAID_INVALID, inv - r->seen_invalid);
		r->seen_invalid = inv;
		ring_store_relaxed(&h->cons.invalid_seen, inv);
	}
}

void ingest_said_count_ring(struct ingest_said *s, struct ingest_ring_counts *n)
{
	if (!ingest_said_waiting(s))
		return; /* every poll of every ring: nothing to copy */
	uint64_t out[INGEST_SAID_KINDS] = {n->dropped, n->invalid,
					   n->rejected[INGEST_REJ_RING]};
	ingest_said_count(s, out);
	n->dropped = out[INGEST_SAID_DROPPED];
	n->invalid = out[INGEST_SAID_INVALID];
	n->rejected[INGEST_REJ_RING] = out[INGEST_SAID_RING];
}

/*
 * The producer broke the framing. Skip everything it has published, up to
 * the head this poll read, and count the skipped records from its own
 * tally of written records as of that head: the best estimate there is,
 * since the frames themselves can no longer be trusted (counted through
 * the allowance, as the producer's word). Its tally now would count the
 * records it published since, which the next poll reads and counts.
 */
static void resync(struct ingest_ring *r)
{
	struct mixd_ring_hdr *h = r->c.hdr;
	uint64_t written = r->c.written;
	uint64_t consumed = ring_load_relaxed(&h->cons.consumed);
	uint64_t lost = written > consumed ? written - consumed : 1;
	if (lost > r->c.cap / MIXD_FRAME_HDR)
		lost = r->c.cap / MIXD_FRAME_HDR; /* a ring holds no more */
	ingest_said_add(r->said, INGEST_SAID_RING, lost);
	ring_store_relaxed(&h->cons.consumed, consumed + lost);
	r->c.tail = r->c.head & ~(uint64_t)7;
	ring_cons_commit(&r->c);
}

/*
 * The layout in slot @slot of shared ring @r, read and checked the first
 * time a record names it and kept from then on; NULL when the ring has no
 * such slot or its bytes are not a layout (read again next time: the
 * producer may not have written it when it published, which is its own
 * loss).
 */
static const struct ingest_layout *ring_layout(struct ingest_ring *r,
					       unsigned slot)
{
	if (!r->layouts || slot >= MIXD_LAYOUT_SLOTS)
		return NULL;
	if (r->lay_loaded >> slot & 1)
		return &r->lay[slot];
	if (!r->lay && !(r->lay = calloc(MIXD_LAYOUT_SLOTS, sizeof *r->lay)))
		return NULL;
	struct mixd_layout raw;
	memcpy(&raw, (const uint8_t *)r->map + MIXD_LAYOUT_OFFSET +
			     slot * sizeof raw,
	       sizeof raw);
	if (!ingest_layout_load(&r->lay[slot], &raw))
		return NULL;
	r->lay_loaded |= 1u << slot;
	return &r->lay[slot];
}

/* A record taken off a ring by take(). */
struct taken {
	const uint8_t *p;
	uint32_t len;
	const struct ingest_layout *lay;
	enum ingest_reject why; /* before decoding: a layout slot it lacks */
};

/*
 * The record at @r's tail into *@t: copied to @buf when the ring is
 * shared, its layout found. The tail moves past it; the space is handed
 * back with the batch (ring_cons_commit()), so a queue ring's record,
 * read in place, stays put until then.
 */
static enum ring_peek_rc take(struct ingest_ring *r, uint8_t *buf,
			      struct taken *t)
{
	uint64_t size;
	enum ring_peek_rc rc = ring_peek(&r->c, &t->p, &t->len, &size);
	if (rc != RING_RECORD)
		return rc;
	if (r->transport == INGEST_SHM) { /* len <= max_len = MIXD_RECORD_MAX */
		memcpy(buf, t->p, t->len);
		t->p = buf;
	}
	t->lay = NULL;
	t->why = INGEST_REJ_NONE;
	if (t->len >= 4 && t->p[0] == (MIXD_ATTR_LAYOUT & 0xff) &&
	    t->p[1] == MIXD_ATTR_LAYOUT >> 8 &&
	    !(t->lay = ring_layout(r, t->p[2])))
		t->why = INGEST_REJ_ATTRIBUTE;
	ring_advance(&r->c, size);
	return rc;
}

unsigned ingest_ring_poll(struct ingest_ring *r, ingest_record_fn fn,
			  ingest_ahead_fn ahead, void *ctx, unsigned budget,
			  struct ingest_ring_counts *n, uint8_t *scratch)
{
	/* A dead ring's producer goes on writing until it reconnects, and
	 * drops once its ring is full: those drops are still its word. */
	if (r->transport == INGEST_SHM) {
		account_drops(r);
		ingest_said_count_ring(r->said, n);
	}
	if (r->dead)
		return 0;
	if (!ring_cons_refresh(&r->c)) {
		/* head is beyond reach: we cannot even tell where to resume. */
		n->rejected[INGEST_REJ_RING]++;
		r->dead = true;
		return 0;
	}
	/* Records are taken, each into its own part of @scratch, and
	 * announced up to INGEST_AHEAD records before they are handed over. */
	struct taken t[INGEST_AHEAD + 1];
	unsigned taken = 0, handed = 0;
	enum ring_peek_rc rc = RING_RECORD;
	for (;;) {
		while (rc == RING_RECORD && taken < budget &&
		       taken - handed <= INGEST_AHEAD) {
			unsigned k = taken % (INGEST_AHEAD + 1);
			rc = take(r, scratch + k * MIXD_RECORD_MAX, &t[k]);
			if (rc != RING_RECORD)
				break;
			if (ahead && t[k].why == INGEST_REJ_NONE)
				ahead(ctx, t[k].p, t[k].len, t[k].lay);
			taken++;
		}
		if (handed == taken)
			break;
		const struct taken *cur = &t[handed++ % (INGEST_AHEAD + 1)];
		enum ingest_reject why = cur->why;
		if (why == INGEST_REJ_NONE)
			why = fn(ctx, cur->p, cur->len, cur->lay);
		if (why == INGEST_REJ_NONE)
			n->records++;
		else
			n->rejected[why]++;
	}
	if (taken) {
		struct mixd_ring_hdr *h = r->c.hdr;
		ring_store_relaxed(&h->cons.consumed,
				   ring_load_relaxed(&h->cons.consumed) + taken);
		ring_cons_commit(&r->c);
	}
	if (rc == RING_CORRUPT) {
		resync(r);
		ingest_said_count_ring(r->said, n);
		taken++;
	}
	return taken;
}
