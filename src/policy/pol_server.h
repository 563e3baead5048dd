/*
 * pol_server.h -- the policy socket: check requests in, answers out
 * (<mixd/check.h>), on one thread of its own.
 *
 * The thread owns every connection and the engine it checks with. A new
 * config generation's engine is handed over with pol_server_set_engine();
 * the thread takes it between two batches of requests and frees the old
 * one itself, so a check never sees an engine change under it.
 *
 * The Marathon resolver, for the mesos instances checks run first, is
 * handed over likewise (pol_server_set_resolver()): the thread makes its
 * own reader of it, on itself, brackets each batch of requests with a
 * read section (never across a wait), and destroys the reader before it
 * exits.
 *
 * Untrusted input: everything a client sends. Every length is checked
 * before it is used; a request that is malformed in itself gets an
 * INVALID_ARGUMENT answer, a stream that cannot be delimited is closed.
 * Memory is bounded: at most max_clients connections, each holding at
 * most one request frame and 1 MiB of answers not yet read (a client that
 * does not read is not read from until it does).
 */
#ifndef MIXD_POLICY_SERVER_H
#define MIXD_POLICY_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "policy/policy.h"

struct mar_resolver;
struct pol_server;

/*
 * Answers a client has not read: up to POL_ANSWERS_CLIENT_MAX bytes each
 * (some 20,000 checks) while the answer buffers of all clients together
 * take less than POL_ANSWERS_TOTAL, else up to POL_ANSWERS_KEEP each.
 * Beyond its limit a client's requests wait unread until it reads. A
 * buffer over POL_ANSWERS_IDLE is freed once sent: one that size holds
 * the answers a client with 64 checks in flight gets in a round, kept
 * from round to round, and 1,024 idle clients hold a quarter of the
 * total at most. A buffer is a power of two a little over what it holds,
 * so all of them together stay under POL_ANSWERS_TOTAL + 2 *
 * POL_ANSWERS_CLIENT_MAX + 2 * POL_ANSWERS_KEEP a client: for 1,024
 * clients that never read, 194 MiB, not two gigabytes.
 */
#define POL_ANSWERS_CLIENT_MAX (1u << 20)
#define POL_ANSWERS_KEEP (64u << 10)
#define POL_ANSWERS_TOTAL (64u << 20)
#define POL_ANSWERS_IDLE (16u << 10)

/** What the server has done, for /metrics. */
struct pol_server_stats {
	uint64_t checks[POL_UNAUTHENTICATED + 1]; /**< answers, by code */
	uint64_t malformed;	/**< requests answered INVALID_ARGUMENT */
	uint64_t closed_bad;	/**< connections closed for a bad stream */
	uint64_t refused;	/**< connections over max_clients */
	uint64_t clients;	/**< open now */
	uint64_t quota_keys;	/**< memquota keys held now */
	uint64_t quota_full;	/**< quota requests granted nothing: a
				     memquota's key table was full */
	uint64_t quota_dedup_lost; /**< deduplication ids not remembered */
	uint64_t answer_bytes;	/**< answer buffers allocated now (see
				     POL_ANSWERS_TOTAL) */
};

/**
 * Listen on @address (unix:///path) and start the thread, checking with
 * @e (owned from now on; NULL: every check is OK, as with no policy
 * rules). At most @max_clients connections (0: 1024). 0, or -errno with
 * the reason in @err.
 */
int pol_server_start(const char *address, struct pol_engine *e,
		     unsigned max_clients, struct pol_server **out, char *err,
		     size_t errlen);

/** Check with @e from the next batch on (owned from now on). */
void pol_server_set_engine(struct pol_server *s, struct pol_engine *e);

/**
 * Check with Marathon resolver @r from the next batch on (NULL: none, the
 * mesos bindings take their defaults). @r, and any resolver given before,
 * must keep running until pol_server_stop() has returned: the thread
 * holds a reader of it until then.
 */
void pol_server_set_resolver(struct pol_server *s, struct mar_resolver *r);

/** Copy the counters. Any thread. */
void pol_server_stats(const struct pol_server *s, struct pol_server_stats *out);

/** Stop the thread, close every connection, remove the socket file, free
 *  everything (the engine too). NULL is fine. */
void pol_server_stop(struct pol_server *s);

#endif /* MIXD_POLICY_SERVER_H */
