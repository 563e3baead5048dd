/*
 * bench_expr -- cost per record of the seed config's HTTP expression set:
 * the promhttp match, then the value and 17 dimensions of each of the four
 * HTTP metric instances (requestcount, requestduration, requestsize,
 * responsesize), 73 uses of 22 distinct expressions, three ways:
 *  (a) one expr_eval() per use, memoized per record;
 *  (b) expr_eval_batch() over the distinct ids, expr_result() per use;
 *  (c) one guarded plan (expr_plan_create_guarded()): the match, then the
 *      instances, in one expr_plan_eval(), a pointer load per use -- what
 *      agg does.
 * Each use's value is consumed (its length summed) so nothing is skipped;
 * the three checksums must agree.
 *
 * Instructions per record, deterministic where the wall clock is not:
 *	MIXD_BENCH_RUNS=5 MIXD_BENCH_RECORDS=100000 \
 *	valgrind --tool=callgrind bench_expr
 * then each run_* function's inclusive count / (5 x 100000).
 *
 * MIXD_BENCH_CASE=3 runs way (c) alone (1 and 2 likewise (a) and (b)), for
 * alternating two builds' timings without the minute the others take; the
 * checksums are then printed but not compared.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attr/attr.h"
#include "bench_util.h"
#include "expr/expr.h"

static const char *const match_expr =
	"context.protocol == \"http\" || context.protocol == \"grpc\"";

static const char *const values[4] = {
	"1",
	"response.duration | \"0ms\"",
	"request.size | 0",
	"response.size | 0",
};

static const char *const dims[17] = {
	"conditional((context.reporter.kind | \"inbound\") == \"outbound\", "
	"\"source\", \"destination\")",
	"source.workload.name | \"unknown\"",
	"source.workload.namespace | \"unknown\"",
	"source.principal | \"unknown\"",
	"source.labels[\"istio\"] | \"unknown\"",
	"source.labels[\"version\"] | \"unknown\"",
	"destination.workload.name | \"unknown\"",
	"destination.workload.namespace | \"unknown\"",
	"destination.principal | \"unknown\"",
	"destination.labels[\"istio\"] | \"unknown\"",
	"destination.labels[\"version\"] | \"unknown\"",
	"destination.service.host | \"unknown\"",
	"destination.service.name | \"unknown\"",
	"destination.service.namespace | \"unknown\"",
	"api.protocol | context.protocol | \"unknown\"",
	"response.code | 200",
	"conditional((context.reporter.kind | \"inbound\") == \"outbound\", "
	"\"unknown\", conditional(connection.mtls | false, \"mutual_tls\", "
	"\"none\"))",
};

static size_t map_encode(uint8_t *buf, const char *const *kv, uint32_t n)
{
	size_t off = 4;
	memcpy(buf, &n, 4);
	for (uint32_t i = 0; i < 2 * n; i++) {
		uint32_t l = (uint32_t)strlen(kv[i]);
		memcpy(buf + off, &l, 4);
		memcpy(buf + off + 4, kv[i], l);
		off += 4 + l;
	}
	return off;
}

static void set_str(struct attr_table *t, unsigned slot, const char *s)
{
	struct attr_value v = {.type = ATTR_STRING, .len = (uint32_t)strlen(s),
			       .s = s};
	attr_table_set(t, slot, &v);
}

static void set_i(struct attr_table *t, unsigned slot, enum attr_type ty,
		  int64_t i)
{
	struct attr_value v = {.type = (uint8_t)ty, .i = i};
	attr_table_set(t, slot, &v);
}

/* What an inbound sidecar reports for one HTTP request after enrichment:
 * about 20 attributes, labels maps with istio/version keys. */
static void fill_record(struct attr_table *t, uint8_t *sl, uint8_t *dl)
{
	static const char *const skv[] = {"istio", "productpage", "version",
					  "v1", "pod-template-hash", "abc123"};
	static const char *const dkv[] = {"app", "reviews", "istio", "reviews",
					  "version", "v2"};
	attr_table_clear(t);
	set_str(t, MIXD_ATTR_SOURCE_UID,
		"kubernetes://productpage-v1.instance-3f2a");
	set_str(t, MIXD_ATTR_SOURCE_WORKLOAD_NAME, "productpage-v1");
	set_str(t, MIXD_ATTR_SOURCE_WORKLOAD_NAMESPACE, "default");
	set_str(t, MIXD_ATTR_DESTINATION_UID,
		"kubernetes://reviews-v2.instance-c96bf99f");
	set_str(t, MIXD_ATTR_DESTINATION_WORKLOAD_NAME, "reviews-v2");
	set_str(t, MIXD_ATTR_DESTINATION_WORKLOAD_NAMESPACE, "default");
	set_str(t, MIXD_ATTR_DESTINATION_SERVICE_HOST,
		"reviews.default.svc.cluster.local");
	set_str(t, MIXD_ATTR_DESTINATION_SERVICE_NAME, "reviews");
	set_str(t, MIXD_ATTR_DESTINATION_SERVICE_NAMESPACE, "default");
	set_str(t, MIXD_ATTR_CONTEXT_PROTOCOL, "http");
	set_str(t, MIXD_ATTR_CONTEXT_REPORTER_KIND, "inbound");
	set_str(t, MIXD_ATTR_REQUEST_PATH, "/reviews/0");
	set_str(t, MIXD_ATTR_REQUEST_METHOD, "GET");
	set_str(t, MIXD_ATTR_REQUEST_HOST, "reviews:9080");
	set_i(t, MIXD_ATTR_DESTINATION_PORT, ATTR_INT64, 9080);
	set_i(t, MIXD_ATTR_REQUEST_SIZE, ATTR_INT64, 0);
	set_i(t, MIXD_ATTR_RESPONSE_SIZE, ATTR_INT64, 295);
	set_i(t, MIXD_ATTR_RESPONSE_CODE, ATTR_INT64, 200);
	set_i(t, MIXD_ATTR_RESPONSE_DURATION, ATTR_DURATION, 7400000);
	struct attr_value v = {.type = ATTR_BOOL, .b = false};
	attr_table_set(t, MIXD_ATTR_CONNECTION_MTLS, &v);
	v = (struct attr_value){.type = ATTR_STRING_MAP, .map = sl};
	v.len = (uint32_t)map_encode(sl, skv, 3);
	attr_table_set(t, MIXD_ATTR_SOURCE_LABELS, &v);
	v = (struct attr_value){.type = ATTR_STRING_MAP, .map = dl};
	v.len = (uint32_t)map_encode(dl, dkv, 3);
	attr_table_set(t, MIXD_ATTR_DESTINATION_LABELS, &v);
}

static int compile(struct expr_program *p, const char *text)
{
	struct expr_error err;
	int id = expr_compile(p, text, strlen(text), &err);
	if (id < 0) {
		fprintf(stderr, "bench_expr: %s\n", err.msg);
		exit(1);
	}
	return id;
}

/* Each way of evaluating is its own function so that callgrind's
 * inclusive counts separate them. */
static __attribute__((noinline)) uint64_t
run_per_use(const struct expr_program *p, uint32_t match_id,
	    const uint32_t ids[4][18], const struct attr_table *t,
	    struct expr_scratch *s, int records)
{
	uint64_t sink = 0;
	for (int i = 0; i < records; i++) {
		struct attr_value v;
		expr_scratch_begin(s);
		if (expr_eval(p, match_id, t, s, &v) || !v.b)
			continue;
		for (int m = 0; m < 4; m++)
			for (int k = 0; k < 18; k++)
				if (expr_eval(p, ids[m][k], t, s, &v) == 0)
					sink += v.len;
	}
	return sink;
}

static __attribute__((noinline)) uint64_t
run_batch(const struct expr_program *p, uint32_t match_id,
	  const uint32_t ids[4][18], const uint32_t *uniq, size_t nuniq,
	  const struct attr_table *t, struct expr_scratch *s, int records)
{
	uint64_t sink = 0;
	for (int i = 0; i < records; i++) {
		struct attr_value v;
		const struct attr_value *pv;
		expr_scratch_begin(s);
		if (expr_eval(p, match_id, t, s, &v) || !v.b)
			continue;
		expr_eval_batch(p, uniq, nuniq, t, s);
		for (int m = 0; m < 4; m++)
			for (int k = 0; k < 18; k++)
				if (expr_result(s, ids[m][k], &pv) == 0)
					sink += pv->len;
	}
	return sink;
}

/* (c) one guarded plan per rule: the match, then (only if it holds) the
 * 72 uses; agg keeps the result index of each use in one flat array,
 * instance by instance (value, then dimensions) */
static __attribute__((noinline)) uint64_t
run_plan(const struct expr_plan *pl, uint32_t guard, const uint32_t *at,
	 size_t nat, const struct attr_value **res,
	 const struct attr_table *t, struct expr_scratch *s, int records)
{
	uint64_t sink = 0;
	for (int i = 0; i < records; i++) {
		expr_scratch_begin(s);
		expr_plan_eval(pl, t, s, res);
		if (!res[guard] || !res[guard]->b)
			continue;
		for (size_t u = 0; u < nat; u++) {
			const struct attr_value *v = res[at[u]];
			if (v)
				sink += v->len;
		}
	}
	return sink;
}

int main(void)
{
	struct attr_vocab *vocab = attr_vocab_create();
	struct expr_program *p = expr_program_create(vocab);
	uint32_t match_id = (uint32_t)compile(p, match_expr);
	/* as config does: every instance compiles its own copy, dedup maps
	 * them to one id */
	uint32_t ids[4][18];
	for (int m = 0; m < 4; m++) {
		ids[m][0] = (uint32_t)compile(p, values[m]);
		for (int d = 0; d < 17; d++)
			ids[m][1 + d] = (uint32_t)compile(p, dims[d]);
	}
	struct expr_scratch *s = expr_scratch_create(p, 0);
	struct attr_table *t = malloc(sizeof *t);
	uint8_t sl[256], dl[256];
	fill_record(t, sl, dl);

	char workload[256];
	snprintf(workload, sizeof workload,
		 "seed promhttp match + 4 metrics x (value + 17 dims) = 73 "
		 "evals/record, %u distinct expressions, %u nodes; 21 attrs",
		 expr_count(p), expr_node_count(p));
	bench_header("bench_expr", workload);

	/* the rule's distinct ids, as agg builds them at config load */
	uint32_t uniq[4 * 18];
	size_t nuniq = 0;
	for (int m = 0; m < 4; m++)
		for (int k = 0; k < 18; k++) {
			size_t j = 0;
			while (j < nuniq && uniq[j] != ids[m][k])
				j++;
			if (j == nuniq)
				uniq[nuniq++] = ids[m][k];
		}

	/* $MIXD_BENCH_RECORDS shortens a run, for callgrind */
	const int records = (int)bench_env("MIXD_BENCH_RECORDS", 2000000);
	int runs = bench_runs(7);
	double *ns = calloc((size_t)runs, sizeof *ns);
	uint64_t sink = 0;
	const int only = (int)bench_env("MIXD_BENCH_CASE", 0);

	/* (a) one expr_eval() per use: 73 calls, 22 evaluations */
	for (int r = 0; r < runs && (!only || only == 1); r++) {
		uint64_t t0 = bench_now_ns();
		sink += run_per_use(p, match_id, ids, t, s, records);
		ns[r] = (double)(bench_now_ns() - t0) / records;
	}
	if (!only || only == 1)
		bench_report("expr_eval per use: ns per record", ns, runs,
			     "ns");
	uint64_t evals_a = s->stats.evals;

	/* (b) expr_eval_batch() over the rule's distinct ids, then
	 * expr_result() per use */
	for (int r = 0; r < runs && (!only || only == 2); r++) {
		uint64_t t0 = bench_now_ns();
		sink += run_batch(p, match_id, ids, uniq, nuniq, t, s, records);
		ns[r] = (double)(bench_now_ns() - t0) / records;
	}
	if (!only || only == 2)
		bench_report("expr_eval_batch + expr_result: ns per record", ns,
			     runs, "ns");
	uint64_t evals_b = s->stats.evals;

	/* (c) a guarded plan, built at config load; per record one call,
	 * then a load per use */
	struct expr_plan *pl =
		expr_plan_create_guarded(p, match_id, &ids[0][0], 4 * 18);
	if (!pl) {
		fprintf(stderr, "bench_expr: expr_plan_create failed\n");
		return 1;
	}
	uint32_t at[4 * 18];
	for (size_t u = 0; u < 4 * 18; u++)
		at[u] = expr_plan_index(pl, u);
	const struct attr_value **res =
		calloc(expr_plan_size(pl), sizeof *res);
	uint64_t sink_b = sink;
	for (int r = 0; r < runs && (!only || only == 3); r++) {
		uint64_t t0 = bench_now_ns();
		sink += run_plan(pl, expr_plan_guard(pl), at, 4 * 18, res, t, s,
				 records);
		ns[r] = (double)(bench_now_ns() - t0) / records;
	}
	if (!only || only == 3)
		bench_report("expr_plan_eval (guarded) + result pointers: ns "
			     "per record",
			     ns, runs, "ns");
	if (!only && sink - sink_b != sink_b / 2) {
		fprintf(stderr, "bench_expr: plan results differ (%llu, %llu)\n",
			(unsigned long long)(sink - sink_b),
			(unsigned long long)sink_b);
		return 1;
	}
	printf("expr evaluations per record: %.1f, %.1f, %.1f "
	       "(checksum %llu)\n",
	       (double)evals_a / ((double)records * runs),
	       (double)(evals_b - evals_a) / ((double)records * runs),
	       (double)(s->stats.evals - evals_b) / ((double)records * runs),
	       (unsigned long long)sink);
	free(res);
	expr_plan_destroy(pl);
	free(ns);
	free(t);
	expr_scratch_destroy(s);
	expr_program_destroy(p);
	attr_vocab_destroy(vocab);
	return 0;
}
