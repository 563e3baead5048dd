/*
 * pol_gen.h -- attribute generation on the check path: the `mesos`
 * instances a config's rules send to a `mesosenv` handler, run on a check
 * request's attributes before its policy rules match.
 *
 * Mixer preprocessed a Check as it did a Report (grpcServer.Check called
 * dispatcher.Preprocess, then Check on the preprocessed bag), so a policy
 * rule may match on what the Marathon resolver says of the request: Istio's
 * deny-by-label sample (`destination.labels["app"] == "ratings"`) works
 * against proxies that send uids and IPs only because of it.
 *
 * What a request goes through, as the telemetry path's run_apas()
 * (src/agg/series.c) does for a record:
 *  - Every rule that sends a mesos instance to a mesosenv handler is a
 *    dispatch, in config order. A dispatch runs when its rule applies to
 *    the request's namespace (cfg_rule_applies()) and its match is true
 *    (a match that fails to evaluate is false); an (instance, handler)
 *    that two rules send runs once per request, at the first that runs.
 *  - The instance's inputs (source_uid, source_ip, destination_uid,
 *    destination_ip, destination_port) are evaluated against the request
 *    as it arrived; one that fails to evaluate is absent. The resolver's
 *    answer fills the $out.* outputs; with no resolver, or none found,
 *    they stay absent and the bindings take their defaults (`| "unknown"`).
 *  - Its attribute_bindings are evaluated; a binding that has no value
 *    leaves its attribute as it is. Every dispatch's bindings are applied
 *    together once all have run, each over what the client sent (Mixer's
 *    child bag shadowed its parent), a later dispatch's over an earlier
 *    one's.
 *
 * Cost: plain expr_eval() per expression and one mar_lookup() per
 * dispatch that runs; microseconds, next to the check itself.
 *
 * Threads: a pol_gen is built once per config generation and read-only
 * afterwards, shared like the engine; each thread that runs it owns a
 * struct pol_gen_thread of its own.
 */
#ifndef MIXD_POL_GEN_H
#define MIXD_POL_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attr/attr.h"
#include "config/config.h"

struct expr_scratch;
struct mar_reader;

/** One config generation's attribute-generating dispatches. */
struct pol_gen;

/** A thread's state for running a pol_gen: the bindings found so far and
 *  the copies of the strings they built. */
struct pol_gen_thread;

/** Bytes of strings built by bindings (`"v" + ...`, toLower()) a request
 *  keeps; a binding whose string does not fit leaves its attribute as it
 *  is (the telemetry path's bound, BIND_MAX). */
#define POL_GEN_BIND_MAX (16 * 1024)

/** Bindings a request applies at most; more are dropped, as the
 *  telemetry path drops them. */
#define POL_GEN_OUT_MAX 128

/**
 * Build the attribute-generating dispatches of @c (which must be ok):
 * every (rule, action, instance) whose handler is a mesosenv one and whose
 * instance is a mesos one. Holds @c (cfg_retain()) until
 * pol_gen_destroy(). A config without any gives a pol_gen that does
 * nothing. 0, or -ENOMEM.
 */
int pol_gen_create(struct cfg *c, struct pol_gen **out);

/** Free @g once no thread runs it; NULL is fine. */
void pol_gen_destroy(struct pol_gen *g);

/** The number of dispatches (0: pol_gen_run() never changes a table). */
size_t pol_gen_count(const struct pol_gen *g);

/** A thread's state for running @g. NULL on ENOMEM. */
struct pol_gen_thread *pol_gen_thread_create(const struct pol_gen *g);

/** Free; NULL is fine. */
void pol_gen_thread_destroy(struct pol_gen_thread *t);

/**
 * Run @g's dispatches on @attrs, a table against @g's config's
 * vocabulary, and write what they bind into it. @mar is the calling
 * thread's reader, inside a read section (mar_read_begin()); NULL: no
 * resolver, every lookup misses. @s is the thread's scratch for the
 * config's program; it is begun afresh (expr_scratch_begin()) per
 * dispatch, so call expr_scratch_begin() before evaluating anything
 * against @attrs afterwards: its memo may hold what the table said
 * before.
 *
 * Values written into @attrs point into the request's own bytes, the
 * config's constants, @t (strings the bindings built) or the resolver's
 * snapshot: they are valid until the next pol_gen_run() with @t and, for
 * the last, until mar_read_end(). The $out.* outputs are absent from
 * @attrs afterwards (they exist only while bindings are evaluated).
 * Returns the number of dispatches that ran.
 */
size_t pol_gen_run(const struct pol_gen *g, struct pol_gen_thread *t,
		   struct expr_scratch *s, struct attr_table *attrs,
		   struct mar_reader *mar);

/**
 * What generation depends on and what it writes, as bitmaps of @nwords
 * 64-bit words indexed by attribute slot (expr_reads()'s form;
 * ATTR_PRESENT_WORDS covers every slot). Either may be NULL.
 *
 * @reads: every request attribute a run of @g reads: each dispatch's rule
 * match, the instance's inputs and what its bindings read besides $out.*;
 * and, when some dispatching rule is not in the default namespace, what
 * the request's namespace comes from (context.reporter.kind,
 * source.namespace, destination.namespace). @binds: every attribute a
 * binding may write (the bindings' target slots); $out.* are in neither.
 *
 * Together: after pol_gen_run(), a bound attribute is a function of the
 * @reads attributes and of itself as the request arrived (a binding
 * without a value leaves it) and of the resolver's snapshot
 * (mar_reader_generation()); any other attribute is as it arrived.
 * Bits are only set, never cleared. Returns false if a slot fell outside
 * the bitmaps.
 */
bool pol_gen_slots(const struct pol_gen *g, uint64_t *reads, uint64_t *binds,
		   size_t nwords);

/**
 * Does rule @r apply to @attrs, as Mixer's dispatcher decided for both
 * attribute generation and checks: its namespace (a rule outside the
 * default namespace only for requests of its own, cfg_rule_applies()),
 * then its match evaluated with @s against @prog (one that fails to
 * evaluate is false).
 */
bool pol_rule_applies(const struct cfg *c, const struct expr_program *prog,
		      struct expr_scratch *s, const struct attr_table *attrs,
		      const struct cfg_rule *r);

#endif /* MIXD_POL_GEN_H */
