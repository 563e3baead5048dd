/*
 * server.c -- the producer socket: accept, handshake, stream records.
 *
 * One io thread runs an io_uring loop:
 *   - one accept at a time on the listening socket, while there is room
 *     under the producer limit;
 *   - per connection, one RECVMSG for the 16-byte hello, which may carry the
 *     producer's memfd (SCM_RIGHTS) -- multishot recv cannot take ancillary
 *     data, the hello is the only message that has any;
 *   - then a multishot recv into a provided-buffer ring: a stream
 *     producer's frames, or, for a shared-memory producer, nothing until
 *     the connection closes (which is how we learn the producer is gone).
 * Stream frames are reassembled across buffers and copied into the queue
 * ring of the consumer the sink assigned, so a buffer normally goes back to
 * the kernel as soon as its CQE is handled.
 *
 * Backpressure, not loss: when a consumer's queue is full the connection
 * stalls. Its unpushed bytes are copied out of the shared buffers (so a
 * connection stalled on one consumer starves no other), its recv is
 * cancelled, and a 1 ms timer retries; meanwhile the kernel's socket
 * buffer fills, the producer's sends stop, its own ring fills, and the
 * producer drops and counts -- the one place a record is ever dropped for
 * lack of room.
 *
 * A connection is freed only after its last CQE (no F_MORE): to end one
 * early we shut it down and let the pending recv complete.
 */
#include <errno.h>
#include <inttypes.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mixd/ring.h>

#include "ingest/ingest.h"
#include "ingest/ring.h"

#define QUEUE_DEPTH 512
#define BUF_GROUP 1
#define BUF_COUNT 64 /* power of two */
#define BUF_SIZE (64u * 1024u)

enum op {
	OP_ACCEPT = 1,
	OP_HELLO = 2,
	OP_RECV = 3,
	OP_WAKE = 4,
	OP_CANCEL = 5,
	OP_TIMER = 6,
	OP_SWEEP = 7,
};

/* How often quiet connections are looked at (sweep()). */
#define SWEEP_S 1

/* Bytes received but not yet pushed, copied out of the provided buffer
 * they came in (which goes straight back to the kernel): a connection
 * stalled on one consumer must not hold the buffers every other
 * connection receives into. */
struct stalled {
	uint32_t off, len;
	struct stalled *next;
	uint8_t data[];
};

enum conn_kind {
	CONN_HELLO = 0,
	CONN_SHM = MIXD_HELLO_SHM,
	CONN_STREAM = MIXD_HELLO_STREAM,
};

struct conn {
	int fd;
	struct __kernel_timespec hello_by; /* CLOCK_MONOTONIC, absolute */
	unsigned id;
	enum conn_kind kind;
	struct ingest_ring *ring; /* shm: handed to the sink */
	void *token;
	struct ingest_ring *queue; /* stream: where records go */
	bool dead;                 /* shut down; waiting for the last CQE */
	bool kicked;               /* records pushed in this CQE batch */
	struct conn *kick_next;
	struct conn *prev, *next;  /* every open connection */

	/* hello */
	struct mixd_hello hello;
	uint32_t hello_len;
	struct msghdr msg;
	struct iovec iov;
	/* Room for a few fds: extras are closed (one ring per connection). */
	char cmsg[CMSG_SPACE(sizeof(int))]
		__attribute__((aligned(__alignof__(struct cmsghdr))));

	struct ingest_framer framer; /* stream reassembly */
	bool heard;                  /* a recv completion since the sweep */

	/* backpressure */
	bool recv_armed;     /* a multishot recv is in flight */
	bool cancelling;     /* and we asked for it to stop */
	bool stalled;        /* on the server's stalled list */
	bool eof;            /* the peer closed; free once unstalled */
	struct stalled *held, **held_tail;
	struct conn *stall_next;
};

struct ingest_server {
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	int listen_fd;
	int wake_fd;
	uint64_t wake_val;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	ino_t path_ino; /* the socket file we made there */
	struct ingest_sink sink;
	pthread_t thread;
	int stop;         /* atomic */
	int stop_accept;  /* atomic */
	unsigned max_open; /* connections open at once; 0: no limit */
	uint64_t ring_limit; /* segment bytes mapped at once; 0: no limit */
	bool accepting;    /* until shutdown */
	bool accept_armed; /* an accept is in flight */
	bool paused;       /* at the limit: no accept armed */
	bool ring_limit_said; /* refused for ring memory since the last
				 segment let in */
	unsigned next_id;
	struct conn *kicks;
	struct conn *conns;
	struct conn *stalls;
	bool timer_armed;
	bool accept_later; /* accept failed: re-arm it at the next tick */
	struct __kernel_timespec tick;
	struct __kernel_timespec sweep_every;

	/* counters: written by the io thread, read by anyone */
	uint64_t n_connections, n_open, n_records, n_rejected,
		n_handshake_failed, n_limit_reached, n_dropped, n_invalid,
		n_missed_wakeups, n_dropped_waiting, n_invalid_waiting,
		n_ring_memory_refused;
	struct ingest_said said; /* socket producers' words (count_said()) */
};

static inline uint64_t tag(void *p, enum op op)
{
	return (uint64_t)(uintptr_t)p | (uint64_t)op;
}

static inline void bump(uint64_t *c)
{
	ck_pr_store_64(c, ck_pr_load_64(c) + 1);
}

/*
 * A free submission entry; the full queue is submitted first. Submitting
 * fails for want of kernel memory (-EAGAIN), which is waited out. (An
 * overflowed completion queue refuses submissions, -EBUSY, only on
 * kernels without IORING_FEAT_NODROP, older than any with the multishot
 * receives mixd needs.) Anything else is a broken ring, and mixd stops
 * rather than lose track of its connections.
 */
static struct io_uring_sqe *get_sqe(struct ingest_server *s)
{
	struct io_uring_sqe *sqe;
	while (!(sqe = io_uring_get_sqe(&s->ring))) {
		int rc = io_uring_submit(&s->ring);
		if (rc == -EAGAIN || rc == -EINTR) {
			nanosleep(&(struct timespec){.tv_nsec = 100000}, NULL);
		} else if (rc < 0) {
			fprintf(stderr, "mixd: io_uring_submit: %s\n",
				strerror(-rc));
			abort();
		}
	}
	return sqe;
}

/* A single accept, not a multishot one: that takes the whole backlog in
 * one go, and a limit could only be enforced by closing what it took. */
static void arm_accept(struct ingest_server *s)
{
	struct io_uring_sqe *sqe = get_sqe(s);
	io_uring_prep_accept(sqe, s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, tag(s, OP_ACCEPT));
	s->accept_armed = true;
}

static bool at_limit(const struct ingest_server *s)
{
	return s->max_open && ck_pr_load_64(&s->n_open) >= s->max_open;
}

/*
 * The next accept, while there is room: at --max-producers none is armed,
 * and newcomers wait in the listening socket's backlog (their hellos, and
 * a socket producer's first records, in their sockets' buffers; the rest
 * in their rings) until a connection closes. Closing them instead would
 * lose what a socket producer had already sent. When the backlog is full
 * too, connect() fails and the producer backs off.
 */
static void accept_as_room_allows(struct ingest_server *s)
{
	if (!s->accepting || __atomic_load_n(&s->stop_accept, __ATOMIC_ACQUIRE) ||
	    s->accept_armed || s->accept_later)
		return;
	if (at_limit(s)) {
		if (!s->paused)
			bump(&s->n_limit_reached);
		s->paused = true;
		return;
	}
	s->paused = false;
	arm_accept(s);
}

static void arm_wake(struct ingest_server *s)
{
	struct io_uring_sqe *sqe = get_sqe(s);
	io_uring_prep_read(sqe, s->wake_fd, &s->wake_val, sizeof s->wake_val, 0);
	io_uring_sqe_set_data64(sqe, tag(s, OP_WAKE));
}

/* The hello's receive, with a deadline linked to it: a connection that
 * says nothing is closed (and counted as a failed handshake) after
 * HELLO_TIMEOUT_S instead of holding a descriptor of mixd's for ever. The
 * two entries go into one submission, so the link holds. */
#define HELLO_TIMEOUT_S 5
static void say_backed_up(void)
{
	static bool said;
	if (!said)
		fprintf(stderr,
			"mixd: descriptors producers sent wait to be closed (a "
			"close that does not return: a file on a FUSE mount?); "
			"until they are, shared-memory producers are refused\n");
	said = true;
}

static void arm_hello(struct ingest_server *s, struct conn *c)
{
	c->iov.iov_base = (uint8_t *)&c->hello + c->hello_len;
	c->iov.iov_len = sizeof c->hello - c->hello_len;
	memset(&c->msg, 0, sizeof c->msg);
	c->msg.msg_iov = &c->iov;
	c->msg.msg_iovlen = 1;
	/* Room for the one descriptor a hello has: the kernel installs no
	 * more (and a hello with more is refused). None while descriptors
	 * already taken wait to be closed: the kernel then drops what a
	 * hello carries without giving it to mixd (no close to wait on),
	 * and a shared-memory hello is refused. */
	if (!ingest_close_untrusted_backed_up()) {
		c->msg.msg_control = c->cmsg;
		c->msg.msg_controllen = CMSG_LEN(sizeof(int));
	} else {
		say_backed_up();
	}
	if (io_uring_sq_space_left(&s->ring) < 2)
		io_uring_submit(&s->ring);
	struct io_uring_sqe *sqe = get_sqe(s);
	io_uring_prep_recvmsg(sqe, c->fd, &c->msg, MSG_CMSG_CLOEXEC);
	io_uring_sqe_set_data64(sqe, tag(c, OP_HELLO));
	sqe->flags |= IOSQE_IO_LINK;
	sqe = get_sqe(s);
	/* Absolute: a hello sent a byte at a time gets no more time. */
	io_uring_prep_link_timeout(sqe, &c->hello_by, IORING_TIMEOUT_ABS);
	io_uring_sqe_set_data64(sqe, tag(s, OP_CANCEL)); /* nothing to do */
}

static void arm_recv(struct ingest_server *s, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(s);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BUF_GROUP;
	io_uring_sqe_set_data64(sqe, tag(c, OP_RECV));
	c->recv_armed = true;
	c->cancelling = false;
}

static void arm_timer(struct ingest_server *s)
{
	if (s->timer_armed)
		return;
	s->tick = (struct __kernel_timespec){.tv_nsec = 1000000};
	struct io_uring_sqe *sqe = get_sqe(s);
	io_uring_prep_timeout(sqe, &s->tick, 0, 0);
	io_uring_sqe_set_data64(sqe, tag(s, OP_TIMER));
	s->timer_armed = true;
}

/* Ask @c's multishot recv to stop; its last completion says when. */
static void cancel_recv(struct ingest_server *s, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(s);
	io_uring_prep_cancel64(sqe, tag(c, OP_RECV), 0);
	io_uring_sqe_set_data64(sqe, tag(s, OP_CANCEL));
	c->cancelling = true;
}

static void arm_sweep(struct ingest_server *s)
{
	s->sweep_every = (struct __kernel_timespec){.tv_sec = SWEEP_S};
	struct io_uring_sqe *sqe = get_sqe(s);
	io_uring_prep_timeout(sqe, &s->sweep_every, 0, 0);
	io_uring_sqe_set_data64(sqe, tag(s, OP_SWEEP));
}

/* What the allowance lets of the socket producers' pending counts, into
 * the counters (the io thread alone writes them: bounded sums, no wrap).
 * After each counts frame, and each second for what had to wait. */
static void count_said(struct ingest_server *s)
{
	uint64_t out[INGEST_SAID_KINDS] = {ck_pr_load_64(&s->n_dropped),
					   ck_pr_load_64(&s->n_invalid), 0};
	ingest_said_count(&s->said, out);
	ck_pr_store_64(&s->n_dropped, out[INGEST_SAID_DROPPED]);
	ck_pr_store_64(&s->n_invalid, out[INGEST_SAID_INVALID]);
	ck_pr_store_64(&s->n_dropped_waiting, s->said.pending[INGEST_SAID_DROPPED]);
	ck_pr_store_64(&s->n_invalid_waiting, s->said.pending[INGEST_SAID_INVALID]);
}

/*
 * Some kernels (6.18 among them; axboe/liburing#1549) can miss the wakeup
 * of a multishot recv on a unix socket when the peer closes or writes:
 * the recv never completes, and the connection -- its descriptor, its
 * ring, its producer slot -- would stay until the producer's next write,
 * if any. So once a second every connection whose recv has said nothing
 * since the last look is peeked at: at end of file or with bytes waiting,
 * its recv is cancelled and, on the cancel's completion, armed again
 * (on_recv()); the new recv finds what the old one missed. Not ended
 * here: the recv may have taken the last bytes and the end of file
 * already, their completions not yet handled, and those bytes must be.
 * So the count is of receives re-armed, a bound on wakeups missed.
 */
static void sweep(struct ingest_server *s)
{
	for (struct conn *c = s->conns; c; c = c->next) {
		bool quiet = !c->heard;
		c->heard = false;
		if (!quiet || !c->recv_armed || c->cancelling || c->stalled)
			continue;
		/* Shut down by us (kill_conn()) and that wakeup missed too:
		 * the cancel's completion frees it. Else a peek: bytes, end of
		 * file or an error waiting, the recv is re-armed. */
		char b;
		if (!c->dead && recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
		    (errno == EAGAIN || errno == EWOULDBLOCK))
			continue; /* quiet indeed */
		cancel_recv(s, c);
		bump(&s->n_missed_wakeups);
	}
	count_said(s);
	arm_sweep(s);
}

static void give_back(struct ingest_server *s, unsigned bid)
{
	io_uring_buf_ring_add(s->br, s->bufs + (size_t)bid * BUF_SIZE, BUF_SIZE,
			      (unsigned short)bid,
			      io_uring_buf_ring_mask(BUF_COUNT), 0);
	io_uring_buf_ring_advance(s->br, 1);
}

/* End a connection early: its pending recv completes with 0 and frees it. */
static void kill_conn(struct conn *c)
{
	if (!c->dead) {
		c->dead = true;
		shutdown(c->fd, SHUT_RDWR);
	}
}

/* A stream that cannot be trusted further: counted rejected once, here,
 * and what its framer held is not also "a frame cut off by the close". */
static void stream_broken(struct ingest_server *s, struct conn *c)
{
	bump(&s->n_rejected);
	ingest_framer_free(&c->framer);
	kill_conn(c);
}

/* Give back every buffer @c holds. */
static void drop_held(struct conn *c)
{
	while (c->held) {
		struct stalled *h = c->held;
		c->held = h->next;
		free(h);
	}
}

static void free_conn(struct ingest_server *s, struct conn *c)
{
	if (c->kind == CONN_SHM && c->ring)
		s->sink.ring_closed(s->sink.ctx, c->token, c->ring);
	if (c->kicked) { /* records of this batch: kick now, forget the conn */
		struct conn **pp = &s->kicks;
		while (*pp != c)
			pp = &(*pp)->kick_next;
		*pp = c->kick_next;
		s->sink.queue_kick(s->sink.ctx, c->queue);
	}
	drop_held(c);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	ingest_framer_free(&c->framer);
	free(c);
	ck_pr_store_64(&s->n_open, ck_pr_load_64(&s->n_open) - 1);
	accept_as_room_allows(s);
}

/* Queue one record for the consumer; false when its queue is full. */
static bool push_record(struct ingest_server *s, struct conn *c,
			const uint8_t *p, uint32_t len)
{
	if (!ingest_queue_push(c->queue, p, len))
		return false;
	bump(&s->n_records);
	if (!c->kicked) {
		c->kicked = true;
		c->kick_next = s->kicks;
		s->kicks = c;
	}
	return true;
}

struct push_ctx {
	struct ingest_server *s;
	struct conn *c;
};

static bool push_frame(void *ctx, const uint8_t *p, uint32_t len)
{
	struct push_ctx *pc = ctx;
	return push_record(pc->s, pc->c, p, len);
}

/*
 * Bytes received on a stream connection. Returns how many were consumed:
 * fewer than @n when the consumer's queue filled (the rest waits), -1 on a
 * bad frame.
 */
static ssize_t stream_bytes(struct ingest_server *s, struct conn *c,
			    const uint8_t *p, size_t n)
{
	struct push_ctx pc = {s, c};
	ssize_t k = ingest_framer_feed(&c->framer, p, n, push_frame, &pc);
	/* What the producer lost on its side, as it told us: counted as the
	 * allowance all socket producers share lets (count_said()). */
	if (c->framer.dropped | c->framer.invalid) {
		ingest_said_add(&s->said, INGEST_SAID_DROPPED, c->framer.dropped);
		ingest_said_add(&s->said, INGEST_SAID_INVALID, c->framer.invalid);
		c->framer.dropped = c->framer.invalid = 0;
		count_said(s);
	}
	return k;
}

/* Keep bytes [off, len) of buffer @bid for later; stall the connection. */
static void hold(struct ingest_server *s, struct conn *c, unsigned bid,
		 uint32_t off, uint32_t len)
{
	struct stalled *h = malloc(sizeof *h + (len - off));
	if (h) {
		*h = (struct stalled){0, len - off, NULL};
		memcpy(h->data, s->bufs + (size_t)bid * BUF_SIZE + off, len - off);
	}
	give_back(s, bid);
	if (!h) {
		/* Cannot even remember them: the stream is broken. */
		stream_broken(s, c);
		return;
	}
	if (!c->held)
		c->held_tail = &c->held;
	*c->held_tail = h;
	c->held_tail = &h->next;
}

static void stall(struct ingest_server *s, struct conn *c)
{
	if (!c->stalled) {
		c->stalled = true;
		c->stall_next = s->stalls;
		s->stalls = c;
	}
	if (c->recv_armed && !c->cancelling)
		cancel_recv(s, c);
	arm_timer(s);
}

/* Push what a stalled connection holds; true when all of it went. */
static bool unstall(struct ingest_server *s, struct conn *c)
{
	while (c->held && !c->dead) {
		struct stalled *h = c->held;
		ssize_t k = stream_bytes(s, c, h->data + h->off, h->len - h->off);
		if (k < 0) {
			stream_broken(s, c);
			break;
		}
		h->off += (uint32_t)k;
		if (h->off < h->len || c->framer.part_full)
			return false;
		c->held = h->next;
		free(h);
	}
	if (c->framer.part_full && !c->dead) {
		if (stream_bytes(s, c, NULL, 0) < 0 || c->framer.part_full)
			return false;
	}
	drop_held(c); /* dead: drop what is left */
	return true;
}

/* A connection whose receiving is over: a frame its producer's close cut
 * off is counted, as a bad frame. */
static void end_conn(struct ingest_server *s, struct conn *c)
{
	if (c->kind == CONN_STREAM && !ingest_framer_idle(&c->framer))
		bump(&s->n_rejected);
	free_conn(s, c);
}

static void on_timer(struct ingest_server *s)
{
	s->timer_armed = false;
	if (s->accept_later) {
		s->accept_later = false;
		accept_as_room_allows(s);
	}
	struct conn **pp = &s->stalls, *c;
	while ((c = *pp)) {
		if (!unstall(s, c)) {
			pp = &c->stall_next;
			continue;
		}
		*pp = c->stall_next;
		c->stalled = false;
		if (c->eof || (c->dead && !c->recv_armed))
			end_conn(s, c);
		else if (!c->recv_armed && !c->dead)
			arm_recv(s, c);
	}
	if (s->stalls)
		arm_timer(s);
}

static void on_accept(struct ingest_server *s, struct io_uring_cqe *cqe)
{
	s->accept_armed = false;
	if (cqe->res < 0) {
		/* Cancelled at shutdown, or failed (out of descriptors, say):
		 * then again not at once, which would fail at once, for
		 * ever, but at the next tick. */
		if (cqe->res != -ECANCELED && s->accepting) {
			s->accept_later = true;
			arm_timer(s);
		}
		return;
	}
	if (!s->accepting) {
		close(cqe->res); /* shutting down */
		return;
	}
	struct conn *c = calloc(1, sizeof *c);
	if (!c) {
		close(cqe->res);
		accept_as_room_allows(s);
		return;
	}
	c->fd = cqe->res;
	c->id = s->next_id++;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	bump(&s->n_connections);
	bump(&s->n_open);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	c->hello_by = (struct __kernel_timespec){
		.tv_sec = now.tv_sec + HELLO_TIMEOUT_S, .tv_nsec = now.tv_nsec};
	arm_hello(s, c);
	accept_as_room_allows(s);
}

/* The one descriptor of a hello, or -1. Every other descriptor the
 * kernel installed is closed, and all of them when the control data was
 * cut short (more than fit: the hello is refused): each is an open file
 * in mixd, and a producer sending many would run mixd out of them. */
static int take_fd(struct conn *c)
{
	int fd = -1;
	bool cut = c->msg.msg_flags & MSG_CTRUNC;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&c->msg); cm;
	     cm = CMSG_NXTHDR(&c->msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int f;
			memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof f);
			if (fd < 0 && !cut)
				fd = f;
			else /* one ring per connection */
				ingest_close_untrusted(f);
		}
	}
	return fd;
}

/* Once per episode: from the first hello the ring memory limit refuses to
 * the next segment let in. */
static void say_ring_memory(struct ingest_server *s)
{
	if (!s->ring_limit_said)
		fprintf(stderr,
			"mixd: producers' rings take %" PRIu64 " KiB of the "
			"%" PRIu64 " KiB --max-ring-memory allows: "
			"shared-memory producers are refused until some leave "
			"(they retry; mixd_ingest_rejected_total"
			"{reason=\"ring_memory\"} counts them)\n",
			(ingest_ring_mapped_bytes() + 1023) >> 10,
			s->ring_limit >> 10);
	s->ring_limit_said = true;
}

static void on_hello(struct ingest_server *s, struct conn *c,
		     struct io_uring_cqe *cqe)
{
	int fd = cqe->res > 0 ? take_fd(c) : -1;
	if (cqe->res <= 0 || (c->msg.msg_flags & MSG_CTRUNC))
		goto fail; /* too many descriptors: refused, whatever the kind */
	c->hello_len += (uint32_t)cqe->res;
	if (c->hello_len < sizeof c->hello) {
		if (fd >= 0)
			goto fail; /* the fd must come with the first bytes only */
		arm_hello(s, c);
		return;
	}
	if (memcmp(c->hello.marker, MIXD_HELLO_MARKER, 8) != 0 ||
	    c->hello.version != MIXD_HELLO_VERSION)
		goto fail;
	if (c->hello.kind == MIXD_HELLO_SHM && fd >= 0) {
		struct ingest_ring *r;
		int rc = ingest_ring_attach(fd, s->ring_limit, &r);
		fd = -1; /* attach took it */
		if (rc == -ENOSPC) {
			say_ring_memory(s);
			bump(&s->n_ring_memory_refused);
			free_conn(s, c);
			return;
		}
		if (rc)
			goto fail;
		s->ring_limit_said = false;
		if (!(c->token = s->sink.ring_attached(s->sink.ctx, r)))
			goto fail; /* and r with it */
		c->kind = CONN_SHM;
		c->ring = r;
	} else if (c->hello.kind == MIXD_HELLO_STREAM && fd < 0) {
		c->kind = CONN_STREAM;
		c->queue = s->sink.stream_queue(s->sink.ctx, c->id);
		if (!c->queue)
			goto fail;
	} else {
		goto fail;
	}
	arm_recv(s, c);
	return;
fail:
	if (fd >= 0)
		ingest_close_untrusted(fd);
	bump(&s->n_handshake_failed);
	free_conn(s, c);
}

static void on_recv(struct ingest_server *s, struct conn *c,
		    struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	c->heard = true;
	if (!more)
		c->recv_armed = false;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		uint32_t n = cqe->res > 0 ? (uint32_t)cqe->res : 0;
		ssize_t k = 0;
		if (n && !c->dead && c->kind == CONN_STREAM && !c->stalled)
			k = stream_bytes(s, c, s->bufs + (size_t)bid * BUF_SIZE, n);
		else if (n && !c->dead && c->kind != CONN_STREAM)
			k = -1; /* bytes from a shm producer: not our protocol */
		if (k < 0) {
			/* The stream cannot be trusted past a bad frame. */
			stream_broken(s, c);
			give_back(s, bid);
		} else if (!c->dead && ((uint32_t)k < n || c->framer.part_full)) {
			/* The queue is full: keep what it did not take -- the
			 * rest of the buffer, or a whole frame the framer put
			 * together -- and retry from the timer. */
			if ((uint32_t)k < n)
				hold(s, c, bid, (uint32_t)k, n);
			else
				give_back(s, bid);
			stall(s, c);
		} else {
			give_back(s, bid);
		}
	}
	if (more)
		return;
	if (c->stalled) {
		/* The timer re-arms the recv, or frees the connection at EOF,
		 * once what it holds has gone to the consumer. */
		if (cqe->res == 0 || (cqe->res < 0 && cqe->res != -ECANCELED &&
				      cqe->res != -ENOBUFS))
			c->eof = true;
		return;
	}
	if (cqe->res == -ENOBUFS && !c->dead) {
		/* Every buffer is in use (received, not yet handled): retry
		 * on the next tick rather than spin. */
		stall(s, c);
		return;
	}
	/* More data, or our own cancel landing after the connection was
	 * unstalled (the timer may push what it held before the cancel of
	 * its receive completes): receive again. */
	if ((cqe->res > 0 || cqe->res == -ECANCELED) && !c->dead) {
		arm_recv(s, c);
		return;
	}
	end_conn(s, c);
}

/* Remove the socket file, if it is still the one we made: another may
 * have taken its name since (a mixd started after the file was removed). */
void ingest_unlink_socket(const char *path, ino_t ino)
{
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == ino)
		unlink(path);
}

static void unlink_ours(const struct ingest_server *s)
{
	ingest_unlink_socket(s->path, s->path_ino);
}

static void stop_accepting(struct ingest_server *s)
{
	if (!s->accepting)
		return;
	s->accepting = false;
	if (s->accept_armed) { /* paused at the limit, it is not */
		struct io_uring_sqe *sqe = get_sqe(s);
		io_uring_prep_cancel64(sqe, tag(s, OP_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, tag(s, OP_CANCEL));
	}
	io_uring_submit(&s->ring);
	unlink_ours(s);
}

/* One wakeup per consumer per batch, not per record. */
static void kick_consumers(struct ingest_server *s)
{
	for (struct conn *c = s->kicks, *next; c; c = next) {
		next = c->kick_next;
		c->kicked = false;
		s->sink.queue_kick(s->sink.ctx, c->queue);
	}
	s->kicks = NULL;
}

/*
 * Stopping: what has been received already goes to the sink still -- the
 * completions waiting (records, and hellos: their rings), and what
 * stalled connections hold, as far as the queues take it -- since the
 * sink drains what it was handed once this thread is gone
 * (agg_destroy()). Nothing is armed or received any more; what the
 * queues cannot take is said on stderr, not lost silently.
 */
static void hand_over_the_rest(struct ingest_server *s)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0;
	io_uring_for_each_cqe(&s->ring, head, cqe)
	{
		seen++;
		uint64_t ud = cqe->user_data;
		void *p = (void *)(uintptr_t)(ud & ~(uint64_t)7);
		if ((enum op)(ud & 7) == OP_HELLO)
			on_hello(s, p, cqe);
		else if ((enum op)(ud & 7) == OP_RECV)
			on_recv(s, p, cqe);
	}
	io_uring_cq_advance(&s->ring, seen);
	uint64_t left = 0, conns = 0;
	for (struct conn *c = s->stalls; c; c = c->stall_next) {
		if (unstall(s, c))
			continue;
		conns++;
		left += c->framer.part_len;
		for (const struct stalled *h = c->held; h; h = h->next)
			left += h->len - h->off;
	}
	kick_consumers(s);
	if (left)
		fprintf(stderr,
			"mixd: stopping: %" PRIu64 " bytes of records that %" PRIu64
			" stalled socket connection(s) sent were not processed "
			"(the shards' queues were full)\n",
			left, conns);
}

static void *io_main(void *arg)
{
	struct ingest_server *s = arg;
	arm_accept(s);
	arm_wake(s);
	arm_sweep(s);

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		struct io_uring_cqe *cqe;
		io_uring_submit_and_wait(&s->ring, 1);
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&s->ring, head, cqe)
		{
			seen++;
			uint64_t ud = cqe->user_data;
			void *p = (void *)(uintptr_t)(ud & ~(uint64_t)7);
			switch ((enum op)(ud & 7)) {
			case OP_ACCEPT:
				on_accept(s, cqe);
				break;
			case OP_HELLO:
				on_hello(s, p, cqe);
				break;
			case OP_RECV:
				on_recv(s, p, cqe);
				break;
			case OP_WAKE:
				if (__atomic_load_n(&s->stop_accept, __ATOMIC_ACQUIRE))
					stop_accepting(s);
				arm_wake(s);
				break;
			case OP_CANCEL:
				break;
			case OP_TIMER:
				on_timer(s);
				break;
			case OP_SWEEP:
				sweep(s);
				break;
			}
		}
		io_uring_cq_advance(&s->ring, seen);
		kick_consumers(s);
	}
	hand_over_the_rest(s);
	return NULL;
}

static int setup_buffers(struct ingest_server *s)
{
	size_t ring_len = BUF_COUNT * sizeof(struct io_uring_buf);
	s->br = mmap(NULL, ring_len, PROT_READ | PROT_WRITE,
		     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (s->br == MAP_FAILED)
		return -errno;
	s->bufs = malloc((size_t)BUF_COUNT * BUF_SIZE);
	if (!s->bufs)
		return -ENOMEM;
	struct io_uring_buf_reg reg = {
		.ring_addr = (unsigned long)s->br,
		.ring_entries = BUF_COUNT,
		.bgid = BUF_GROUP,
	};
	int rc = io_uring_register_buf_ring(&s->ring, &reg, 0);
	if (rc)
		return rc;
	io_uring_buf_ring_init(s->br);
	for (unsigned i = 0; i < BUF_COUNT; i++)
		io_uring_buf_ring_add(s->br, s->bufs + (size_t)i * BUF_SIZE,
				      BUF_SIZE, (unsigned short)i,
				      io_uring_buf_ring_mask(BUF_COUNT), (int)i);
	io_uring_buf_ring_advance(s->br, BUF_COUNT);
	return 0;
}

/* Whether anyone may create files in @path's directory. */
static bool dir_open_to_all(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		return false;
	slash[slash == dir] = '\0'; /* "/x" -> "/" */
	struct stat st;
	return stat(dir, &st) == 0 && (st.st_mode & S_IWOTH);
}

/* The socket is open to every local user (0666) whatever the umask, as a
 * proxy's user is rarely mixd's: who may report is decided by the
 * permissions of its directory. Except in a directory anyone may write to
 * (/tmp), whose permissions decide nothing: there the socket keeps the
 * mode the umask gives it. */
int ingest_listen_unix(const char *path, ino_t *ino, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* A stale socket file from an earlier run would make bind fail.
	 * Replace only sockets, never a regular file someone put there, and
	 * never one a running mixd still listens on: it would go on without
	 * producers, and remove ours when it stops. */
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		bool live = probe >= 0 &&
			    connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
		if (probe >= 0)
			close(probe);
		if (live) {
			close(fd);
			snprintf(err, errlen,
				 "unix://%s is in use: another mixd listens "
				 "on it",
				 path);
			return -EADDRINUSE;
		}
		unlink(path);
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    (!dir_open_to_all(path) && chmod(path, 0666) != 0) ||
	    listen(fd, 1024) != 0 || lstat(path, &st) != 0)
		goto fail;
	*ino = st.st_ino;
	return fd;
fail:;
	int e = errno;
	snprintf(err, errlen, "cannot listen on unix://%s: %s", path,
		 strerror(e));
	if (fd >= 0)
		close(fd);
	return -e;
}

const char *ingest_address_path(const char *address)
{
	const char *path = address;
	if (strncmp(path, "unix://", 7) == 0)
		path += 7;
	if (path[0] != '/' ||
	    strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return NULL;
	return path;
}

/*
 * Room for every completion that can be pending at once, so that none
 * waits in the kernel's overflow list (which keeps them, but allocates).
 * A connection has at most two operations in flight (its hello's receive
 * and deadline; or its multishot receive's last completion and a cancel),
 * three allowed; the multishot receives' data completions hold a provided
 * buffer each; the server's own (accept and its cancel, wake, timer,
 * sweep) are five. The kernel allows at most 65,536 (IORING_SETUP_CLAMP):
 * so up to some 21,800 producers, and without a limit, the overflow list
 * may still serve.
 */
static unsigned cq_entries(unsigned max_open)
{
	uint64_t n = max_open ? 3ull * max_open + BUF_COUNT + 5 : UINT32_MAX;
	if (n < 2 * QUEUE_DEPTH)
		n = 2 * QUEUE_DEPTH;
	return n > UINT32_MAX / 2 ? UINT32_MAX / 2 : (unsigned)n;
}

int ingest_server_start(const char *address, const struct ingest_sink *sink,
			const struct ingest_limits *lim,
			struct ingest_server **out, char *err, size_t errlen)
{
	unsigned max_producers = lim ? lim->producers : 0;
	const char *path = ingest_address_path(address);
	struct ingest_server *s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->listen_fd = s->wake_fd = -1;
	s->br = MAP_FAILED;
	int rc;
	if (!path) {
		snprintf(err, errlen,
			 "bad address \"%s\": expected unix:///absolute/path",
			 address);
		free(s);
		return -EINVAL;
	}
	strcpy(s->path, path);
	s->sink = *sink;
	s->max_open = max_producers;
	s->ring_limit = lim ? lim->ring_bytes : 0;
	struct io_uring_params p = {.flags = IORING_SETUP_CQSIZE |
					     IORING_SETUP_CLAMP,
				    .cq_entries = cq_entries(max_producers)};
	rc = io_uring_queue_init_params(QUEUE_DEPTH, &s->ring, &p);
	if (rc) {
		snprintf(err, errlen, "io_uring_queue_init: %s", strerror(-rc));
		free(s);
		return rc;
	}
	if ((rc = setup_buffers(s))) {
		snprintf(err, errlen, "io_uring provided buffers: %s",
			 strerror(-rc));
		goto fail;
	}
	s->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (s->wake_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto fail;
	}
	s->listen_fd = ingest_listen_unix(path, &s->path_ino, err, errlen);
	if (s->listen_fd < 0) {
		rc = s->listen_fd;
		goto fail;
	}
	s->accepting = true;
	rc = -pthread_create(&s->thread, NULL, io_main, s);
	if (rc) {
		snprintf(err, errlen, "pthread_create: %s", strerror(-rc));
		goto fail;
	}
	*out = s;
	return 0;
fail:
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		unlink_ours(s);
	}
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	io_uring_queue_exit(&s->ring);
	if (s->br != MAP_FAILED)
		munmap(s->br, BUF_COUNT * sizeof(struct io_uring_buf));
	free(s->bufs);
	free(s);
	return rc;
}

static void poke(struct ingest_server *s)
{
	uint64_t one = 1;
	ssize_t n = write(s->wake_fd, &one, sizeof one);
	(void)n;
}

void ingest_server_stop_accepting(struct ingest_server *s)
{
	__atomic_store_n(&s->stop_accept, 1, __ATOMIC_RELEASE);
	poke(s);
}

void ingest_server_destroy(struct ingest_server *s)
{
	if (!s)
		return;
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	poke(s);
	pthread_join(s->thread, NULL);
	/* Tearing down the ring cancels what is in flight; then no CQE can
	 * refer to a connection and they are ours to free. Their rings belong
	 * to the sink, which is told nothing: it is shutting down too. */
	io_uring_queue_exit(&s->ring);
	for (struct conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		close(c->fd);
		ingest_framer_free(&c->framer);
		drop_held(c);
		free(c);
	}
	if (s->accepting)
		unlink_ours(s);
	close(s->listen_fd);
	close(s->wake_fd);
	munmap(s->br, BUF_COUNT * sizeof(struct io_uring_buf));
	free(s->bufs);
	free(s);
}

void ingest_server_stats(struct ingest_server *s, struct ingest_server_stats *o)
{
	if (!s) { /* not serving producers (mixd --role policy) */
		memset(o, 0, sizeof *o);
		return;
	}
	o->connections = ck_pr_load_64(&s->n_connections);
	o->producers = ck_pr_load_64(&s->n_open);
	o->stream_records = ck_pr_load_64(&s->n_records);
	o->stream_dropped = ck_pr_load_64(&s->n_dropped);
	o->stream_invalid = ck_pr_load_64(&s->n_invalid);
	o->stream_dropped_waiting = ck_pr_load_64(&s->n_dropped_waiting);
	o->stream_invalid_waiting = ck_pr_load_64(&s->n_invalid_waiting);
	o->stream_rejected = ck_pr_load_64(&s->n_rejected);
	o->handshake_failed = ck_pr_load_64(&s->n_handshake_failed);
	o->ring_memory_refused = ck_pr_load_64(&s->n_ring_memory_refused);
	o->limit_reached = ck_pr_load_64(&s->n_limit_reached);
	o->missed_wakeups = ck_pr_load_64(&s->n_missed_wakeups);
}
