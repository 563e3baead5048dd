/*
 * epoch.c -- deferred reclamation for the series tables and plans.
 *
 * Correctness rests on sequential consistency between three steps: a writer
 * unlinks an object, then takes a ticket by incrementing the global epoch;
 * a reader stores its entry epoch in a slot, then reads the structure. If
 * the reader's slot store comes after the writer's scan, it also comes after
 * the unlink, so the reader cannot reach the object; if before, the scan
 * sees an entry epoch no later than the ticket and the free waits.
 */
#include <sched.h>
#include <stdlib.h>

#include "agg/agg_internal.h"

int epoch_enter(struct agg_epoch *e)
{
	for (;;) {
		uint64_t g = __atomic_load_n(&e->global, __ATOMIC_SEQ_CST);
		for (int i = 0; i < EPOCH_SLOTS; i++) {
			uint64_t zero = 0;
			if (__atomic_compare_exchange_n(&e->slot[i], &zero, g, false,
							__ATOMIC_SEQ_CST,
							__ATOMIC_RELAXED))
				return i;
		}
		sched_yield(); /* more concurrent readers than slots: rare */
	}
}

void epoch_exit(struct agg_epoch *e, int slot)
{
	__atomic_store_n(&e->slot[slot], 0, __ATOMIC_RELEASE);
}

void epoch_retire(struct agg_epoch *e, struct epoch_retired **list,
		  void (*fn)(void *), void *p)
{
	struct epoch_retired *r = malloc(sizeof *r);
	uint64_t ticket = __atomic_fetch_add(&e->global, 1, __ATOMIC_SEQ_CST);
	if (!r) {
		/* Nowhere to remember it: wait out the readers here instead. */
		while (true) {
			bool busy = false;
			for (int i = 0; i < EPOCH_SLOTS; i++) {
				uint64_t v = __atomic_load_n(&e->slot[i],
							     __ATOMIC_SEQ_CST);
				busy |= v && v <= ticket;
			}
			if (!busy)
				break;
			sched_yield();
		}
		fn(p);
		return;
	}
	r->epoch = ticket;
	r->fn = fn;
	r->p = p;
	r->next = *list;
	*list = r;
}

void epoch_poll(struct agg_epoch *e, struct epoch_retired **list, bool all)
{
	do {
		uint64_t oldest = UINT64_MAX;
		for (int i = 0; i < EPOCH_SLOTS; i++) {
			uint64_t v = __atomic_load_n(&e->slot[i], __ATOMIC_SEQ_CST);
			if (v && v < oldest)
				oldest = v;
		}
		struct epoch_retired **pp = list, *r;
		while ((r = *pp)) {
			if (r->epoch < oldest) {
				*pp = r->next;
				r->fn(r->p);
				free(r);
			} else {
				pp = &r->next;
			}
		}
		if (all && *list)
			sched_yield();
	} while (all && *list);
}
