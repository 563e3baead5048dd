/*
 * shard.c -- shard threads: consume rings, decode, count.
 *
 * Idle policy: a shard that finds nothing sleeps on its doorbell (a futex)
 * with a timeout that doubles up to idle_sleep_max_us. Producers never ring
 * it -- that would put a system call on their path -- so the timeout is what
 * bounds how long a record waits when mixd is idle (5 ms by default, under
 * the 10 ms promised). The io thread does ring it, once per batch of socket
 * records, and shutdown does.
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <ck_pr.h>

#include "agg/agg_internal.h"

/* ---- the shard thread -------------------------------------------------- */

static enum ingest_reject on_record(void *ctx, const uint8_t *p, uint32_t len,
				    const struct ingest_layout *lay)
{
	struct shard *sh = ctx;
	struct shard_state *st = sh->state;
	if (!st) { /* no configuration yet: validate and count */
		attr_table_clear(&sh->table);
		return lay ? ingest_decode_layout(lay, p, len, &sh->table, NULL,
						  NULL)
			   : ingest_decode(p, len, sh->agg->vocab, &sh->table);
	}
	enum ingest_reject rc = state_record(
		st, &sh->table, p, len, lay, sh->now_ns, sh->agg->o.series_limit,
		sh->mar, &sh->agg->epoch, &sh->retired);
	sh->processed += rc == INGEST_REJ_NONE;
	return rc;
}

static void on_ahead(void *ctx, const uint8_t *p, uint32_t len,
		     const struct ingest_layout *lay)
{
	struct shard *sh = ctx;
	state_ahead(sh->state, p, len, lay);
}

/*
 * Between two records: adopt a newly installed plan, run expiry when due,
 * free what readers have left. Every record is processed wholly under the
 * state it started with.
 */
static void housekeeping(struct shard *sh)
{
	struct agg *a = sh->agg;
	sh->now_ns = (int64_t)ingest_now_coarse();
	struct agg_plan *p = __atomic_load_n(&a->plan, __ATOMIC_ACQUIRE);
	if (p && (!sh->state || sh->state->plan != p)) {
		/* The agg's reference keeps p alive until our own is taken:
		 * a newer plan retires it through the epoch we are not in...
		 * so enter it for the moment we take the reference. */
		int slot = epoch_enter(&a->epoch);
		p = __atomic_load_n(&a->plan, __ATOMIC_ACQUIRE);
		struct shard_state *ns = state_create(p, sh->state, &a->epoch,
						      &sh->retired);
		epoch_exit(&a->epoch, slot);
		if (ns) {
			struct shard_state *old = sh->state;
			ns->peers = a->shards;
			ns->npeers = a->o.shards;
			ns->self = sh->idx;
			ns->next_expiry_ns =
				p->expiry_check_ns
					? expiry_next(sh->now_ns,
						      p->expiry_check_ns)
					: 0;
			__atomic_store_n(&sh->state, ns, __ATOMIC_RELEASE);
			state_retire(old, &a->epoch, &sh->retired);
		}
	}
	struct shard_state *st = sh->state;
	/* Another shard's pass under way: this one's at the next pass. */
	if (st && st->plan->expiry_ns && sh->now_ns >= st->next_expiry_ns &&
	    state_expire(st, sh->now_ns, &a->epoch, &sh->retired))
		st->next_expiry_ns =
			expiry_next(sh->now_ns, st->plan->expiry_check_ns);
	if (sh->retired)
		epoch_poll(&a->epoch, &sh->retired, false);
	/* The resolver, once there is one (at start, or from the first
	 * reload whose config has a mesosenv handler): a reader of our own. */
	struct mar_resolver *res;
	if (!sh->mar && !sh->mar_failed &&
	    (res = __atomic_load_n(&a->resolver, __ATOMIC_ACQUIRE)) &&
	    !(sh->mar = mar_reader_create(res))) {
		sh->mar_failed = true;
		fprintf(stderr, "mixd: shard %u: no memory for a Marathon "
				"reader; its records take the binding defaults\n",
			sh->idx);
	}
	if (sh->processed != sh->pub_processed)
		__atomic_store_n(&sh->pub_processed, sh->processed, __ATOMIC_RELAXED);
}

static void take_inbox(struct shard *sh)
{
	pthread_mutex_lock(&sh->lock);
	struct inbox_msg *m = sh->inbox;
	sh->inbox = NULL;
	sh->inbox_tail = &sh->inbox;
	__atomic_store_n(&sh->inbox_n, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&sh->lock);

	while (m) {
		struct inbox_msg *next = m->next;
		if (!m->close) {
			struct shard_ring *sr = calloc(1, sizeof *sr);
			if (sr) {
				sr->r = m->r;
				ingest_ring_set_said(sr->r, &sh->said);
				sr->next = sh->rings;
				sh->rings = sr;
			} else {
				/* Cannot track it: better lose one producer's ring
				 * than crash. Counted as a corrupt ring. */
				sh->mine[INGEST_SHM].rejected[INGEST_REJ_RING]++;
				ingest_ring_destroy(m->r);
				ck_pr_dec_64(&sh->nrings);
			}
		} else {
			for (struct shard_ring *sr = sh->rings; sr; sr = sr->next)
				if (sr->r == m->r)
					sr->closing = true;
		}
		free(m);
		m = next;
	}
}

static void publish(struct shard *sh)
{
	uint64_t memo[2] = {0, 0};
	if (sh->state)
		state_memo_stats(sh->state, &memo[0], &memo[1]);
	for (int i = 0; i < 2; i++)
		if (sh->pub_memo[i] != memo[i])
			__atomic_store_n(&sh->pub_memo[i], memo[i], __ATOMIC_RELAXED);
	uint64_t lost = sh->state ? state_log_lost(sh->state) : 0;
	if (sh->pub_log_lost != lost)
		__atomic_store_n(&sh->pub_log_lost, lost, __ATOMIC_RELAXED);
	for (int t = 0; t < INGEST_TRANSPORT_COUNT; t++) {
		uint64_t *src = (uint64_t *)&sh->mine[t];
		uint64_t *dst = (uint64_t *)&sh->pub[t];
		for (size_t i = 0; i < sizeof sh->mine[t] / 8; i++)
			if (ck_pr_load_64(&dst[i]) != src[i])
				ck_pr_store_64(&dst[i], src[i]);
	}
}

/* Once @stopping (its connection closed, or mixd draining), ring @r is
 * followed one capacity further, to *@stop_at, and no more: true when it
 * is there. A producer that goes on writing cannot keep it, or mixd,
 * alive. */
static bool past_stop(const struct ingest_ring *r, bool stopping,
		      uint64_t *stop_at)
{
	if (stopping && !*stop_at)
		*stop_at = ingest_ring_consumed(r) + ingest_ring_capacity(r);
	return *stop_at && ingest_ring_consumed(r) >= *stop_at;
}

/* One pass over everything the shard owns; returns records taken.
 * *@left: some ring has published records this pass left for the next
 * (ingest_ring_left()): the shard must not sleep long, nor stop
 * draining. */
static unsigned pass(struct shard *sh, bool draining, bool *left)
{
	unsigned n = 0;
	*left = false;
	housekeeping(sh);
	if (__atomic_load_n(&sh->inbox_n, __ATOMIC_ACQUIRE))
		take_inbox(sh);
	/* One Marathon snapshot per pass: lookups stay valid for the pass,
	 * and the resolver waits for no more than one pass to free the old
	 * snapshot. */
	if (sh->mar)
		mar_read_begin(sh->mar);
	struct shard_ring **pp = &sh->rings, *sr;
	ingest_ahead_fn ahead =
		sh->state && state_wants_ahead(sh->state) ? on_ahead : NULL;
	while ((sr = *pp)) {
		if (past_stop(sr->r, sr->closing || draining, &sr->stop_at)) {
			if (!sr->closing) { /* draining: no more of it */
				pp = &sr->next;
				continue;
			}
			/* Written on after its connection closed, a ring's
			 * worth and more: given up, counted. */
			if (!ingest_ring_empty(sr->r))
				sh->mine[INGEST_SHM].rejected[INGEST_REJ_RING]++;
			*pp = sr->next;
			ingest_ring_destroy(sr->r);
			free(sr);
			ck_pr_dec_64(&sh->nrings);
			continue;
		}
		enum ingest_transport t = ingest_ring_transport(sr->r);
		unsigned k = ingest_ring_poll(sr->r, on_record, ahead, sh, 1024,
					      &sh->mine[t], sh->record);
		n += k;
		*left |= ingest_ring_left(sr->r);
		if (sr->closing && k == 0 && ingest_ring_empty(sr->r)) {
			/* The producer is gone and we have all it wrote. */
			*pp = sr->next;
			ingest_ring_destroy(sr->r);
			free(sr);
			ck_pr_dec_64(&sh->nrings);
			continue;
		}
		pp = &sr->next;
	}
	/* The socket producers' queue: the io thread goes on filling it
	 * from connections open at SIGTERM, so the drain stops there too. */
	if (!past_stop(sh->queue, draining, &sh->queue_stop_at)) {
		n += ingest_ring_poll(sh->queue, on_record, ahead, sh, 4096,
				      &sh->mine[INGEST_SOCKET], sh->record);
		*left |= ingest_ring_left(sh->queue);
	}
	if (sh->mar)
		mar_read_end(sh->mar);
	/* What waited for the allowance (a ring gone may have left some). */
	ingest_said_count_ring(&sh->said, &sh->mine[INGEST_SHM]);
	if (sh->state)
		state_flush(sh->state, 0);
	publish(sh);
	return n;
}

static void doze(struct shard *sh, unsigned us)
{
	uint32_t bell = __atomic_load_n(&sh->doorbell, __ATOMIC_ACQUIRE);
	__atomic_store_n(&sh->sleeping, 1, __ATOMIC_SEQ_CST);
	/* Look once more after announcing sleep: a kick that came before the
	 * flag was visible changed the doorbell, and the wait returns at once. */
	if (!__atomic_load_n(&sh->inbox_n, __ATOMIC_SEQ_CST)) {
		struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
		syscall(SYS_futex, &sh->doorbell, FUTEX_WAIT_PRIVATE, bell, &ts,
			NULL, 0);
	}
	__atomic_store_n(&sh->sleeping, 0, __ATOMIC_RELEASE);
}

static void kick(struct shard *sh)
{
	__atomic_add_fetch(&sh->doorbell, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&sh->sleeping, __ATOMIC_SEQ_CST))
		syscall(SYS_futex, &sh->doorbell, FUTEX_WAKE_PRIVATE, 1, NULL,
			NULL, 0);
}

static void *shard_main(void *arg)
{
	struct shard *sh = arg;
	unsigned sleep_us = 0;
	for (;;) {
		bool draining = __atomic_load_n(&sh->agg->state, __ATOMIC_ACQUIRE) ==
				DRAIN;
		bool left;
		unsigned n = pass(sh, draining, &left);
		if (n) {
			sleep_us = 0;
			continue;
		}
		if (draining) {
			if (left)
				continue; /* the next pass takes them */
			break; /* a whole pass after the drain began found nothing */
		}
		/* Records left in a line a producer was writing are looked at
		 * again after the shortest sleep: by then it has written past
		 * the line or paused. Not at once: a shard spinning on a
		 * producer's head would cost it a cache miss a record. */
		sleep_us = left ? 50 : sleep_us ? sleep_us * 2 : 50;
		if (sleep_us > sh->agg->o.idle_sleep_max_us)
			sleep_us = sh->agg->o.idle_sleep_max_us;
		doze(sh, sleep_us);
	}
	mar_reader_destroy(sh->mar);
	sh->mar = NULL;
	return NULL;
}

/* ---- the sink: called on the io thread -------------------------------- */

/* False when there was no memory for the message: the shard never learns
 * of the ring. An attached one is then destroyed here (the caller drops
 * its connection); a closed one is drained at shutdown. */
static bool post(struct shard *sh, bool close, struct ingest_ring *r)
{
	struct inbox_msg *m = malloc(sizeof *m);
	if (!m) {
		if (!close) {
			ingest_ring_destroy(r);
			ck_pr_dec_64(&sh->nrings);
		}
		return false;
	}
	m->close = close;
	m->r = r;
	m->next = NULL;
	pthread_mutex_lock(&sh->lock);
	*sh->inbox_tail = m;
	sh->inbox_tail = &m->next;
	__atomic_store_n(&sh->inbox_n, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&sh->lock);
	kick(sh);
	return true;
}

static void *sink_ring_attached(void *ctx, struct ingest_ring *r)
{
	struct agg *a = ctx;
	struct shard *best = &a->shards[0];
	for (unsigned i = 1; i < a->o.shards; i++)
		if (ck_pr_load_64(&a->shards[i].nrings) < ck_pr_load_64(&best->nrings))
			best = &a->shards[i];
	ck_pr_inc_64(&best->nrings);
	return post(best, false, r) ? best : NULL;
}

static void sink_ring_closed(void *ctx, void *token, struct ingest_ring *r)
{
	post(token, true, r);
}

static struct ingest_ring *sink_stream_queue(void *ctx, unsigned conn_id)
{
	struct agg *a = ctx;
	return a->shards[conn_id % a->o.shards].queue;
}

static void sink_queue_kick(void *ctx, struct ingest_ring *q)
{
	struct agg *a = ctx;
	for (unsigned i = 0; i < a->o.shards; i++)
		if (a->shards[i].queue == q)
			kick(&a->shards[i]);
}

struct ingest_sink agg_sink(struct agg *a)
{
	return (struct ingest_sink){
		.ring_attached = sink_ring_attached,
		.ring_closed = sink_ring_closed,
		.stream_queue = sink_stream_queue,
		.queue_kick = sink_queue_kick,
		.ctx = a,
	};
}

/* ---- lifecycle --------------------------------------------------------- */

int agg_create(const struct agg_options *o, const struct attr_vocab *vocab,
	       struct agg **out)
{
	if (!o->shards)
		return -EINVAL;
	struct agg *a = calloc(1, sizeof *a);
	if (!a)
		return -ENOMEM;
	a->o = *o;
	if (!a->o.queue_bytes)
		a->o.queue_bytes = 4u << 20;
	if (!a->o.idle_sleep_max_us)
		a->o.idle_sleep_max_us = 5000;
	if (!a->o.series_limit)
		a->o.series_limit = AGG_SERIES_LIMIT_DEFAULT;
	a->epoch.global = 1;
	pthread_mutex_init(&a->ctl_lock, NULL);
	pthread_mutex_init(&a->expiry_lock, NULL);
	a->vocab = vocab;
	a->shards = aligned_alloc(64, sizeof(struct shard) * o->shards);
	if (!a->shards) {
		free(a);
		return -ENOMEM;
	}
	memset(a->shards, 0, sizeof(struct shard) * o->shards);
	for (unsigned i = 0; i < o->shards; i++) {
		struct shard *sh = &a->shards[i];
		sh->agg = a;
		sh->idx = i;
		pthread_mutex_init(&sh->lock, NULL);
		sh->inbox_tail = &sh->inbox;
		int rc = ingest_ring_create_queue(a->o.queue_bytes, &sh->queue);
		if (rc) {
			a->o.shards = i; /* destroy only what exists */
			agg_destroy(a);
			return rc;
		}
	}
	*out = a;
	return 0;
}

int agg_start(struct agg *a)
{
	for (unsigned i = 0; i < a->o.shards; i++) {
		int rc = pthread_create(&a->shards[i].thread, NULL, shard_main,
					&a->shards[i]);
		if (rc) {
			agg_drain_and_stop(a);
			return -rc;
		}
		a->shards[i].started = a->shards[i].ran = true;
	}
	return 0;
}

void agg_drain_and_stop(struct agg *a)
{
	__atomic_store_n(&a->state, DRAIN, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < a->o.shards; i++) {
		struct shard *sh = &a->shards[i];
		if (!sh->started)
			continue;
		kick(sh);
		pthread_join(sh->thread, NULL);
		sh->started = false;
	}
}

/*
 * What reached shard @sh after its thread stopped: the io thread hands
 * rings and socket records over until it is stopped itself, after the
 * shards (ingest_server_destroy() before agg_destroy()). Drained on the
 * calling thread, now that no one else can hand anything over, as the
 * shard drains (each ring at most a capacity past its start).
 */
static void drain_rest(struct shard *sh)
{
	bool left;
	while (pass(sh, true, &left) || left)
		;
	mar_reader_destroy(sh->mar);
	sh->mar = NULL;
}

void agg_destroy(struct agg *a)
{
	if (!a)
		return;
	agg_drain_and_stop(a);
	for (unsigned i = 0; i < a->o.shards; i++)
		if (a->shards[i].ran)
			drain_rest(&a->shards[i]);
	/* The stdio lines the shards still hold: one wait for them all. */
	uint64_t until = log_final_deadline();
	for (unsigned i = 0; i < a->o.shards; i++)
		if (a->shards[i].state)
			state_flush(a->shards[i].state, until);
	for (unsigned i = 0; i < a->o.shards; i++) {
		struct shard *sh = &a->shards[i];
		take_inbox(sh);
		for (struct shard_ring *sr = sh->rings, *next; sr; sr = next) {
			next = sr->next;
			ingest_ring_destroy(sr->r);
			free(sr);
		}
		ingest_ring_destroy(sh->queue);
		pthread_mutex_destroy(&sh->lock);
		state_retire(sh->state, &a->epoch, &sh->retired);
		epoch_poll(&a->epoch, &sh->retired, true);
	}
	plan_unref(a->plan);
	epoch_poll(&a->epoch, &a->retired, true);
	pthread_mutex_destroy(&a->ctl_lock);
	pthread_mutex_destroy(&a->expiry_lock);
	free(a->shards);
	free(a);
}

static void unref_plan(void *p)
{
	plan_unref(p);
}

int agg_set_config(struct agg *a, struct cfg *cfg)
{
	pthread_mutex_lock(&a->ctl_lock);
	int err;
	struct agg_plan *p = plan_build(cfg, a->generation + 1, &err);
	if (!p) {
		pthread_mutex_unlock(&a->ctl_lock);
		return err;
	}
	if (a->o.no_memo)
		p->memo_ok = false;
	__atomic_store_n(&a->generation, a->generation + 1, __ATOMIC_RELAXED);
	struct agg_plan *old = __atomic_exchange_n(&a->plan, p, __ATOMIC_ACQ_REL);
	/* Shards and scrapes take their own references inside the epoch;
	 * ours goes once they have. */
	if (old)
		epoch_retire(&a->epoch, &a->retired, unref_plan, old);
	epoch_poll(&a->epoch, &a->retired, false);
	pthread_mutex_unlock(&a->ctl_lock);
	for (unsigned i = 0; i < a->o.shards; i++)
		kick(&a->shards[i]);
	return 0;
}

void agg_set_resolver(struct agg *a, struct mar_resolver *r)
{
	__atomic_store_n(&a->resolver, r, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < a->o.shards; i++)
		kick(&a->shards[i]);
}

uint64_t agg_generation(struct agg *a)
{
	return __atomic_load_n(&a->generation, __ATOMIC_RELAXED);
}

void agg_ingest_stats(struct agg *a, struct agg_ingest_stats *out)
{
	memset(out, 0, sizeof *out);
	for (unsigned i = 0; i < a->o.shards; i++) {
		struct shard *sh = &a->shards[i];
		for (int t = 0; t < INGEST_TRANSPORT_COUNT; t++) {
			struct ingest_ring_counts *c = &sh->pub[t];
			out->records[t] += ck_pr_load_64(&c->records);
			for (int r = 0; r < INGEST_REJ_COUNT; r++)
				out->rejected[r] += ck_pr_load_64(&c->rejected[r]);
			out->dropped_ring_full += ck_pr_load_64(&c->dropped);
			out->dropped_invalid += ck_pr_load_64(&c->invalid);
		}
		out->rings += ck_pr_load_64(&sh->nrings);
	}
}
