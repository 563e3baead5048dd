/*
 * pol_server.c -- the policy socket's thread: epoll over the listening
 * socket, an eventfd for stop and engine changes, and each client.
 *
 * A client's bytes are read into its buffer, which holds at most one
 * whole frame; every complete request in it is answered into the
 * client's answer buffer, which is written when the batch is done. So a
 * pipelining client gets many answers per write, and a client that sends
 * one request at a time gets its answer at once. Checks run here, on this
 * thread: the engine's work per request is a few rule matches, less than
 * a hop to another thread would cost.
 *
 * The thread's Marathon reader is in a read section while it serves the
 * events of one epoll_wait(), and out of it across the wait, so a
 * snapshot the resolver replaced is freed at the latest one batch later.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mixd/check.h>

#include "ingest/ingest.h"
#include "marathon/marathon.h"
#include "policy/pol_server.h"
#include "policy/pol_wire.h"

/* After answering, the thread looks for the next request without
 * sleeping this long: a sleeping thread is woken in tens of
 * microseconds (more on a VM whose idle vCPU the host has descheduled),
 * which would be most of a check's latency. The cost: at most this much
 * of a core after each batch of requests (10% of one at 1,000 checks a
 * second arriving one by one; nothing extra under a steady stream). */
#define POL_SPIN_NS 100000
#define HELLO_TIMEOUT_NS (2 * INT64_C(1000000000)) /* to send the hello */
#define HELLO_SIZE sizeof(struct mixd_hello)
/* Bytes read from one client before the thread looks at the others: a
 * client that pipelines as fast as it can would otherwise hold the
 * thread until its answers back up (POL_ANSWERS_CLIENT_MAX, some 20,000 checks; tens
 * of milliseconds). Level-triggered epoll brings it back next round.
 * Some 1,300 of the smallest checks, a hundred of a proxy's. */
#define READ_BUDGET (32u << 10)
#define FRAME_BYTES(len) (8u + (((uint64_t)(len) + 7u) & ~(uint64_t)7u))

struct client {
	struct client *prev, *next; /* the server's list */
	int fd;
	bool hello;	/* the hello was read and right */
	bool closing;	/* the peer shut its side: drop once answers are out */
	int64_t born_ns; /* accepted at; a client without a hello by
			    born_ns + HELLO_TIMEOUT_NS is closed */
	bool reading;	/* EPOLLIN armed (off while answers back up) */
	bool writing;	/* EPOLLOUT armed */
	uint8_t *rbuf;
	size_t rlen;
	uint8_t *wbuf;
	size_t woff, wlen, wcap;
};

struct client_list {
	struct client *first, *last;
};

static void list_append(struct client_list *l, struct client *c)
{
	c->next = NULL;
	c->prev = l->last;
	if (l->last)
		l->last->next = c;
	else
		l->first = c;
	l->last = c;
}

static void list_remove(struct client_list *l, struct client *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		l->first = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		l->last = c->prev;
}

struct pol_server {
	char path[108];
	ino_t ino;
	int listen_fd, ep, wake_fd;
	unsigned max_clients, n_clients;
	size_t wbuf_bytes; /* the clients' answer buffers, allocated */
	int64_t accept_resume_ns; /* out of fds: listen_fd off epoll until */
	/* Clients that said hello; and those yet to, oldest first, so that
	 * housekeep() looks at no more than the ones whose time is up and
	 * the next. */
	struct client_list clients, waiting;
	pthread_t thread;
	bool stop;		       /* atomic */
	struct pol_engine *next;       /* atomic: handed over, not taken */
	struct pol_engine *engine;     /* the thread's */
	struct pol_thread *pt;	       /* the thread's, for engine */
	struct mar_resolver *next_resolver; /* atomic: handed over */
	struct mar_resolver *resolver; /* the thread's reader is of it */
	struct mar_reader *mar;	       /* the thread's; NULL: none */
	struct attr_vocab *vocab; /* the built-in one, while no engine is */
	struct attr_table attrs;
	struct pol_wire_request req;
	struct pol_quota_res granted[MIXD_CHECK_QUOTAS_MAX];
	struct pol_result res;
	struct pol_server_stats st; /* written by the thread, relaxed */
	struct pol_quota_stats quota_base; /* counted by engines since gone */
};

static void count(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n,
			 __ATOMIC_RELAXED);
}

/* ---- requests and answers ------------------------------------------------- */

/* The most answers @s lets a client leave unread now. */
static size_t backlog_max(const struct pol_server *s)
{
	return s->wbuf_bytes < POL_ANSWERS_TOTAL ? POL_ANSWERS_CLIENT_MAX
						 : POL_ANSWERS_KEEP;
}

/* Give back @c's answer buffer. */
static void wfree(struct pol_server *s, struct client *c)
{
	s->wbuf_bytes -= c->wcap;
	free(c->wbuf);
	c->wbuf = NULL;
	c->wcap = c->woff = c->wlen = 0;
}

static bool wreserve(struct pol_server *s, struct client *c, size_t n)
{
	if (c->wlen + n <= c->wcap)
		return true;
	if (c->woff) { /* slide what is left to the front first */
		memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
		c->wlen -= c->woff;
		c->woff = 0;
		if (c->wlen + n <= c->wcap)
			return true;
	}
	size_t cap = c->wcap ? c->wcap : 4096;
	while (cap < c->wlen + n)
		cap *= 2;
	uint8_t *b = realloc(c->wbuf, cap);
	if (!b)
		return false;
	s->wbuf_bytes += cap - c->wcap;
	c->wbuf = b;
	c->wcap = cap;
	return true;
}

/* Whether a request carried an attribute by name (inline, not in the
 * dictionary): an answer's refs cannot name it, so the answer must not
 * be reused (libmixd's checker never sends one; another client may). */
static bool carries_named(const struct attr_table *t)
{
	unsigned w = MIXD_ATTR_DICT_COUNT / 64;
	if (t->present[w] >> (MIXD_ATTR_DICT_COUNT % 64))
		return true;
	for (w++; w < ATTR_PRESENT_WORDS; w++)
		if (t->present[w])
			return true;
	return false;
}

/* Answer the request in @p (@len bytes); false when the client must go. */
static bool serve(struct pol_server *s, struct client *c, const uint8_t *p,
		  size_t len)
{
	struct pol_wire_request *q = &s->req;
	struct pol_result *res = &s->res;
	enum pol_wire_rc rc = pol_wire_parse(p, len, q);
	if (rc == POL_WIRE_NO_ID)
		return false; /* not even an id to answer to */
	attr_table_clear(&s->attrs);
	res->message[0] = 0;
	res->quotas = s->granted;
	bool malformed = rc == POL_WIRE_MALFORMED;
	/* With no configuration yet, the record is still decoded: a bad one
	 * is INVALID_ARGUMENT whatever would have judged it. */
	enum ingest_reject why =
		malformed ? INGEST_REJ_NONE
			  : ingest_decode(q->record, q->record_len,
					  s->engine ? pol_engine_vocab(s->engine)
						    : s->vocab,
					  &s->attrs);
	if (malformed) {
		*res = (struct pol_result){.code = POL_INVALID_ARGUMENT,
					   .quotas = s->granted};
		snprintf(res->message, sizeof(res->message),
			 "malformed check request");
	} else if (why != INGEST_REJ_NONE) {
		malformed = true;
		*res = (struct pol_result){.code = POL_INVALID_ARGUMENT,
					   .quotas = s->granted};
		snprintf(res->message, sizeof(res->message),
			 "malformed attributes: %s", ingest_reject_name(why));
	} else if (!s->engine) {
		*res = (struct pol_result){.code = POL_OK,
					   .valid_duration_ns =
						   POL_DEFAULT_VALID_NS,
					   .valid_use_count =
						   POL_DEFAULT_VALID_USES,
					   .quotas = s->granted};
		for (size_t i = 0; i < q->n_quotas; i++)
			s->granted[i] = (struct pol_quota_res){
				q->quotas[i].amount, POL_DEFAULT_VALID_NS};
	} else {
		bool named = carries_named(&s->attrs);
		struct pol_request pr = {&s->attrs, q->dedup, q->dedup_len,
					 q->quotas, q->n_quotas, s->mar};
		pol_check(s->engine, s->pt, &pr, pol_now_ns(), res);
		if (named) /* refs name dictionary attributes only */
			res->refs = NULL;
	}
	if (malformed)
		count(&s->st.malformed, 1);
	if (res->code >= 0 && res->code <= POL_UNAUTHENTICATED)
		count(&s->st.checks[res->code], 1);
	if (!wreserve(s, c, POL_WIRE_ANSWER_MAX(q->n_quotas)))
		return false;
	c->wlen += pol_wire_answer(c->wbuf + c->wlen, q->id, res, s->granted,
				   q->n_quotas);
	return true;
}

/* ---- connections --------------------------------------------------------- */

static void arm(struct pol_server *s, struct client *c, bool reading,
		bool writing)
{
	if (c->reading == reading && c->writing == writing)
		return;
	struct epoll_event ev = {
		.events = (reading ? EPOLLIN : 0u) | (writing ? EPOLLOUT : 0u),
		.data.ptr = c};
	epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->reading = reading;
	c->writing = writing;
}

static void drop(struct pol_server *s, struct client *c)
{
	list_remove(c->hello ? &s->clients : &s->waiting, c);
	epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->rbuf);
	wfree(s, c);
	free(c);
	s->n_clients--;
	count(&s->st.clients, (uint64_t)-1);
}

/* Write what answers are pending; false when the client is gone. */
static bool flush(struct pol_server *s, struct client *c)
{
	while (c->woff < c->wlen) {
		ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			c->woff += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
	}
	c->woff = c->wlen = 0;
	if (c->wcap > POL_ANSWERS_IDLE) /* a burst's: not kept for the next */
		wfree(s, c);
	return true;
}

/* Take the frames in the read buffer; false when the client must go. */
static bool parse(struct pol_server *s, struct client *c)
{
	size_t off = 0;
	if (!c->hello) {
		if (c->rlen < HELLO_SIZE)
			return true;
		struct mixd_hello h;
		memcpy(&h, c->rbuf, sizeof(h));
		if (memcmp(h.marker, MIXD_HELLO_MARKER, sizeof(h.marker)) ||
		    h.version != MIXD_CHECK_VERSION ||
		    h.kind != MIXD_HELLO_CHECK)
			return false;
		c->hello = true;
		list_remove(&s->waiting, c);
		list_append(&s->clients, c);
		off = HELLO_SIZE;
	}
	/* Not past the backlog: the rest waits in rbuf until the client has
	 * read (on_writable() comes back here). */
	while (c->rlen - off >= 8 && c->wlen - c->woff < backlog_max(s)) {
		uint32_t len, mark;
		memcpy(&len, c->rbuf + off, 4);
		memcpy(&mark, c->rbuf + off + 4, 4);
		if (mark != MIXD_FRAME_CHECK || len > MIXD_CHECK_FRAME_MAX)
			return false;
		if (c->rlen - off < FRAME_BYTES(len))
			break;
		if (!serve(s, c, c->rbuf + off + 8, len))
			return false;
		off += FRAME_BYTES(len);
	}
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	return true;
}

/*
 * Send what the client will take, and while that empties the answers and
 * requests held back for them wait in rbuf, answer those too: nothing
 * else would, as no more bytes may come (a client that sent a batch and
 * reads every answer before it sends again would wait forever). False
 * when the client must go.
 */
static bool flush_and_catch_up(struct pol_server *s, struct client *c)
{
	for (;;) {
		if (!flush(s, c))
			return false;
		size_t before = c->rlen;
		if (c->woff < c->wlen)
			return true;
		if (!parse(s, c)) {
			count(&s->st.closed_bad, 1);
			return false;
		}
		if (c->rlen == before) /* nothing whole was waiting */
			return true;
	}
}

static void on_readable(struct pol_server *s, struct client *c)
{
	/* Room for one whole frame (and the hello before the first). */
	const size_t cap = HELLO_SIZE + FRAME_BYTES(MIXD_CHECK_FRAME_MAX);
	for (size_t taken = 0; taken < READ_BUDGET;) {
		/* Full only of frames parse() left for the backlog. */
		if (c->rlen == cap)
			break;
		size_t room = cap - c->rlen;
		ssize_t n = recv(c->fd, c->rbuf + c->rlen,
				 room < READ_BUDGET ? room : READ_BUDGET,
				 MSG_DONTWAIT);
		if (n == 0 && c->woff < c->wlen) {
			c->closing = true; /* answer what was asked, then go */
			break;
		}
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
			       errno != EINTR)) {
			drop(s, c);
			return;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		c->rlen += (size_t)n;
		taken += (size_t)n;
		if (!parse(s, c)) {
			count(&s->st.closed_bad, 1);
			drop(s, c);
			return;
		}
		if (c->wlen - c->woff >= backlog_max(s))
			break; /* answers back up: stop reading */
	}
	if (!flush_and_catch_up(s, c)) {
		drop(s, c);
		return;
	}
	bool pending = c->woff < c->wlen;
	if (c->closing && !pending) {
		drop(s, c);
		return;
	}
	arm(s, c, !c->closing && c->wlen - c->woff < backlog_max(s), pending);
}

static void on_writable(struct pol_server *s, struct client *c)
{
	/* requests held back while answers backed up, answered now */
	if (!flush_and_catch_up(s, c)) {
		drop(s, c);
		return;
	}
	if (c->closing && c->woff == c->wlen) {
		drop(s, c);
		return;
	}
	arm(s, c, !c->closing && c->wlen - c->woff < backlog_max(s),
	    c->woff < c->wlen);
}

static void on_accept(struct pol_server *s)
{
	for (;;) {
		int fd = accept4(s->listen_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				/* level-triggered: would wake at once, forever */
				struct epoll_event ev = {.events = 0,
							 .data.ptr = &s->listen_fd};
				epoll_ctl(s->ep, EPOLL_CTL_MOD, s->listen_fd, &ev);
				s->accept_resume_ns = pol_now_ns() + 100000000;
			}
			return; /* EAGAIN, or a transient error: next time */
		}
		if (s->n_clients >= s->max_clients) {
			close(fd);
			count(&s->st.refused, 1);
			continue;
		}
		struct client *c = calloc(1, sizeof(*c));
		if (c)
			c->rbuf = malloc(HELLO_SIZE +
					 FRAME_BYTES(MIXD_CHECK_FRAME_MAX));
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
		if (!c || !c->rbuf || epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev)) {
			if (c)
				free(c->rbuf);
			free(c);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->reading = true;
		c->born_ns = pol_now_ns();
		list_append(&s->waiting, c);
		s->n_clients++;
		count(&s->st.clients, 1);
	}
}

/* A new engine, if one was handed over: take it, free the old one. */
static void take_engine(struct pol_server *s)
{
	struct pol_engine *e =
		__atomic_exchange_n(&s->next, NULL, __ATOMIC_ACQ_REL);
	if (!e)
		return;
	struct pol_thread *pt = pol_thread_create(e);
	if (!pt) { /* no memory: keep checking with the old one */
		pol_engine_destroy(e);
		return;
	}
	if (s->engine) { /* a reload: quotas go on where they were */
		/* and their counters with them; what the old engine counted
		 * in handlers that do not go on is kept here */
		struct pol_quota_stats before, after;
		pol_engine_quota_stats(s->engine, &before);
		pol_engine_adopt(e, s->engine);
		pol_engine_quota_stats(e, &after);
		s->quota_base.full += before.full - after.full;
		s->quota_base.dedup_lost += before.dedup_lost - after.dedup_lost;
	}
	pol_thread_destroy(s->pt);
	pol_engine_destroy(s->engine);
	s->engine = e;
	s->pt = pt;
}

/* A resolver handed over: a reader of it, made on this thread as
 * marathon.h asks, in place of the last one (out of any read section). */
static void take_resolver(struct pol_server *s)
{
	struct mar_resolver *r =
		__atomic_load_n(&s->next_resolver, __ATOMIC_ACQUIRE);
	if (r == s->resolver)
		return;
	mar_reader_destroy(s->mar);
	s->mar = r ? mar_reader_create(r) : NULL;
	/* No memory: checks go on without it, bindings at their defaults;
	 * the next wake tries again. */
	s->resolver = s->mar ? r : NULL;
}

/* Close the clients that did not say hello in time; resume accepting
 * after running out of fds. Returns the ms until the next sweep is due
 * (-1: none). */
static int housekeep(struct pol_server *s, int64_t now)
{
	int64_t next = INT64_MAX;
	struct client *c;
	while ((c = s->waiting.first) && now - c->born_ns >= HELLO_TIMEOUT_NS) {
		count(&s->st.closed_bad, 1);
		drop(s, c);
	}
	if (c)
		next = c->born_ns + HELLO_TIMEOUT_NS;
	if (s->accept_resume_ns && now >= s->accept_resume_ns) {
		struct epoll_event ev = {.events = EPOLLIN,
					 .data.ptr = &s->listen_fd};
		epoll_ctl(s->ep, EPOLL_CTL_MOD, s->listen_fd, &ev);
		s->accept_resume_ns = 0;
	} else if (s->accept_resume_ns && s->accept_resume_ns < next) {
		next = s->accept_resume_ns;
	}
	return next == INT64_MAX ? -1 : (int)((next - now) / 1000000 + 1);
}

/* The engine's quota counters and the answer buffers' bytes, for
 * pol_server_stats() (which cannot reach the engine: it is this
 * thread's, freed at a reload). */
static void publish_stats(struct pol_server *s)
{
	__atomic_store_n(&s->st.answer_bytes, s->wbuf_bytes, __ATOMIC_RELAXED);
	struct pol_quota_stats q = {0};
	if (s->engine)
		pol_engine_quota_stats(s->engine, &q);
	__atomic_store_n(&s->st.quota_keys, q.keys, __ATOMIC_RELAXED);
	__atomic_store_n(&s->st.quota_full, s->quota_base.full + q.full,
			 __ATOMIC_RELAXED);
	__atomic_store_n(&s->st.quota_dedup_lost,
			 s->quota_base.dedup_lost + q.dedup_lost,
			 __ATOMIC_RELAXED);
}

static void *run(void *arg)
{
	struct pol_server *s = arg;
	struct epoll_event evs[64];
	int64_t busy_until = 0; /* look without sleeping until then */
	take_resolver(s); /* one handed over before the thread ran */
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		int64_t now = pol_now_ns();
		int sweep_ms = housekeep(s, now);
		int n = epoll_wait(s->ep, evs, 64,
				   now < busy_until ? 0 : sweep_ms);
		if (n > 0)
			busy_until = pol_now_ns() + POL_SPIN_NS;
		else if (now >= busy_until)
			busy_until = 0;
		bool woken = false, reading = false;
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &s->listen_fd) {
				on_accept(s);
			} else if (p == &s->wake_fd) {
				uint64_t v;
				ssize_t r = read(s->wake_fd, &v, sizeof(v));
				(void)r;
				woken = true; /* after the batch: no read section */
			} else {
				struct client *c = p;
				if (s->mar && !reading) {
					mar_read_begin(s->mar);
					reading = true;
				}
				if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					on_readable(s, c);
				else if (evs[i].events & EPOLLOUT)
					on_writable(s, c);
			}
		}
		if (reading)
			mar_read_end(s->mar);
		if (woken) {
			take_resolver(s);
			take_engine(s);
		}
		if (n > 0)
			publish_stats(s);
	}
	mar_reader_destroy(s->mar); /* on this thread, as made */
	s->mar = NULL;
	return NULL;
}

static void wake(struct pol_server *s)
{
	uint64_t one = 1;
	ssize_t r = write(s->wake_fd, &one, sizeof(one));
	(void)r; /* a full counter still wakes the thread */
}

int pol_server_start(const char *address, struct pol_engine *e,
		     unsigned max_clients, struct pol_server **out, char *err,
		     size_t errlen)
{
	const char *path = ingest_address_path(address);
	if (!path) {
		snprintf(err, errlen,
			 "bad address \"%s\": expected unix:///absolute/path",
			 address);
		return -EINVAL;
	}
	struct pol_server *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	snprintf(s->path, sizeof(s->path), "%s", path);
	s->max_clients = max_clients ? max_clients : 1024;
	s->vocab = attr_vocab_create();
	s->ep = epoll_create1(EPOLL_CLOEXEC);
	s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->listen_fd = -1;
	int rc = -errno;
	if (s->ep < 0 || s->wake_fd < 0) {
		snprintf(err, errlen, "policy server: %s", strerror(-rc));
		goto fail;
	}
	if (!s->vocab) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	s->listen_fd = ingest_listen_unix(s->path, &s->ino, err, errlen);
	if (s->listen_fd < 0) {
		rc = s->listen_fd;
		goto fail;
	}
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &s->listen_fd};
	struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &s->wake_fd};
	if (fcntl(s->listen_fd, F_SETFL, O_NONBLOCK) ||
	    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->listen_fd, &lev) ||
	    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->wake_fd, &wev)) {
		rc = -errno;
		snprintf(err, errlen, "policy server: %s", strerror(errno));
		goto fail;
	}
	if (e) {
		s->pt = pol_thread_create(e);
		if (!s->pt) {
			rc = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		s->engine = e;
		e = NULL;
	}
	rc = -pthread_create(&s->thread, NULL, run, s);
	if (rc) {
		snprintf(err, errlen, "policy server thread: %s",
			 strerror(-rc));
		goto fail;
	}
	pthread_setname_np(s->thread, "mixd-policy"); /* top -H, perf */
	*out = s;
	return 0;
fail:
	pol_engine_destroy(e);
	pol_thread_destroy(s->pt);
	pol_engine_destroy(s->engine);
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		ingest_unlink_socket(s->path, s->ino);
	}
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	if (s->ep >= 0)
		close(s->ep);
	attr_vocab_destroy(s->vocab);
	free(s);
	return rc;
}

void pol_server_set_engine(struct pol_server *s, struct pol_engine *e)
{
	struct pol_engine *old =
		__atomic_exchange_n(&s->next, e, __ATOMIC_ACQ_REL);
	/* One the thread never took: nobody checked with it. */
	pol_engine_destroy(old);
	wake(s);
}

void pol_server_set_resolver(struct pol_server *s, struct mar_resolver *r)
{
	__atomic_store_n(&s->next_resolver, r, __ATOMIC_RELEASE);
	wake(s);
}

void pol_server_stats(const struct pol_server *s, struct pol_server_stats *out)
{
	const uint64_t *in = (const uint64_t *)&s->st;
	uint64_t *o = (uint64_t *)out;
	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		o[i] = __atomic_load_n(&in[i], __ATOMIC_RELAXED);
}

void pol_server_stop(struct pol_server *s)
{
	if (!s)
		return;
	__atomic_store_n(&s->stop, true, __ATOMIC_RELEASE);
	wake(s);
	pthread_join(s->thread, NULL);
	/* The thread is gone: the clients are ours to close. */
	while (s->clients.first)
		drop(s, s->clients.first);
	while (s->waiting.first)
		drop(s, s->waiting.first);
	close(s->listen_fd);
	ingest_unlink_socket(s->path, s->ino);
	pol_engine_destroy(__atomic_exchange_n(&s->next, NULL, __ATOMIC_ACQ_REL));
	pol_thread_destroy(s->pt);
	pol_engine_destroy(s->engine);
	close(s->wake_fd);
	close(s->ep);
	attr_vocab_destroy(s->vocab);
	free(s);
}
