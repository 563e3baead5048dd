/*
 * fuzz_check -- a check request as the policy socket takes it
 * (pol_wire_parse(), then the attributes through ingest_decode(), then
 * pol_check() against Istio's sample policies, then pol_wire_answer()),
 * from arbitrary bytes.
 *
 * The input is the request payload. Beside the sanitizers, a model:
 *   - the parse is POL_WIRE_NO_ID exactly when there are fewer than 8
 *     bytes; otherwise the id is the first 8 bytes;
 *   - an accepted request's pieces lie inside the input, in order, and
 *     end exactly at its end: dedup, each quota name, the record;
 *   - the answer is framed as <mixd/check.h> says: its length word, mark,
 *     the id, a code google.rpc knows, the message within its limit, and
 *     the grants: one per quota asked when the code is OK, none otherwise;
 *     a frame of at most POL_WIRE_ANSWER_MAX;
 *   - without a deduplication id, a grant of a positive amount is never
 *     more than was asked, nor negative.
 * Time advances 37 ms a request, so quota windows roll under the fuzzer.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "ingest/ingest.h"
#include "policy/pol_wire.h"
#include "policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char policy_yaml[] =
	"kind: handler\n"
	"metadata: {name: deny, namespace: istio-system}\n"
	"spec: {compiledAdapter: denier, params: {status: {code: 7, message: "
	"no}}}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: nothing, namespace: istio-system}\n"
	"spec: {compiledTemplate: checknothing}\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: deny, namespace: istio-system}\n"
	"spec:\n"
	"  match: source.labels[\"app\"] == \"evil\"\n"
	"  actions: [{handler: deny, instances: [nothing]}]\n"
	"---\n"
	"kind: handler\n"
	"metadata: {name: ips, namespace: istio-system}\n"
	"spec: {compiledAdapter: listchecker, params: {entryType: "
	"IP_ADDRESSES, overrides: [\"10.0.0.0/8\", \"fd00::/8\"]}}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: sourceip, namespace: istio-system}\n"
	"spec: {compiledTemplate: listentry, params: {value: source.ip | "
	"ip(\"0.0.0.0\")}}\n"
	"---\n"
	"kind: handler\n"
	"metadata: {name: paths, namespace: istio-system}\n"
	"spec: {compiledAdapter: listchecker, params: {entryType: REGEX, "
	"blacklist: true, overrides: [\"^/admin\", \"secret\"]}}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: path, namespace: istio-system}\n"
	"spec: {compiledTemplate: listentry, params: {value: request.path}}\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: lists, namespace: istio-system}\n"
	"spec:\n"
	"  match: context.protocol == \"http\"\n"
	"  actions: [{handler: ips, instances: [sourceip]}, {handler: paths, "
	"instances: [path]}]\n"
	"---\n"
	"kind: handler\n"
	"metadata: {name: q, namespace: istio-system}\n"
	"spec:\n"
	"  compiledAdapter: memquota\n"
	"  params:\n"
	"    quotas:\n"
	"    - name: rq.instance.istio-system\n"
	"      maxAmount: 50\n"
	"      validDuration: 1s\n"
	"      overrides: [{dimensions: {dest: reviews}, maxAmount: 2}]\n"
	"    - name: cells.instance.istio-system\n"
	"      maxAmount: 5\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: rq, namespace: istio-system}\n"
	"spec: {compiledTemplate: quota, params: {dimensions: {dest: "
	"destination.service.name | \"unknown\", code: response.code | 0}}}\n"
	"---\n"
	"kind: instance\n"
	"metadata: {name: cells, namespace: istio-system}\n"
	"spec: {compiledTemplate: quota}\n"
	"---\n"
	"kind: rule\n"
	"metadata: {name: quota, namespace: istio-system}\n"
	"spec: {actions: [{handler: q, instances: [rq, cells]}]}\n";

static struct pol_engine *engine;
static struct pol_thread *thread;
static struct attr_table attrs;
static int64_t now;

static void setup(void)
{
	struct cfg *c = cfg_load_buffer("fuzz.yaml", policy_yaml,
					sizeof(policy_yaml) - 1, NULL);
	if (!c)
		abort();
	pol_validate(c);
	if (!cfg_ok(c)) {
		cfg_print_diagnostics(c, stderr);
		abort();
	}
	/* small bounds, so the fuzzer reaches them */
	struct pol_options o = {.quota_max_keys = 64, .quota_max_dedup = 64};
	if (pol_engine_create(c, &o, &engine))
		abort();
	cfg_destroy(c); /* the engine holds it */
	if (!(thread = pol_thread_create(engine)))
		abort();
}

static uint64_t le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static bool inside(const void *p, size_t n, const uint8_t *data, size_t size)
{
	const uint8_t *q = p;
	return n == 0 || (q >= data && q + n <= data + size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!engine)
		setup();
	struct pol_wire_request req;
	enum pol_wire_rc rc = pol_wire_parse(data, size, &req);
	if ((rc == POL_WIRE_NO_ID) != (size < 8))
		abort();
	if (rc == POL_WIRE_NO_ID)
		return 0;
	if (req.id != le(data, 8))
		abort();
	struct pol_result res = {0};
	struct pol_quota_res granted[MIXD_CHECK_QUOTAS_MAX];
	res.quotas = granted;
	size_t nq = 0;
	if (rc == POL_WIRE_OK) {
		if (!inside(req.dedup, req.dedup_len, data, size) ||
		    !inside(req.record, req.record_len, data, size) ||
		    req.record + req.record_len != data + size ||
		    req.n_quotas > MIXD_CHECK_QUOTAS_MAX)
			abort();
		for (size_t i = 0; i < req.n_quotas; i++)
			if (!inside(req.quotas[i].name, req.quotas[i].name_len,
				    data, size))
				abort();
		nq = req.n_quotas;
		attr_table_clear(&attrs);
		if (ingest_decode(req.record, req.record_len,
				  pol_engine_vocab(engine),
				  &attrs) == INGEST_REJ_NONE) {
			struct pol_request pr = {&attrs, req.dedup,
						 req.dedup_len, req.quotas,
						 nq, NULL};
			now += 37000000;
			pol_check(engine, thread, &pr, now, &res);
		} else {
			res.code = POL_INVALID_ARGUMENT;
		}
	} else {
		res.code = POL_INVALID_ARGUMENT;
	}
	if (res.code < 0 || res.code > POL_UNAUTHENTICATED ||
	    !memchr(res.message, 0, sizeof(res.message)))
		abort();
	/* (a repeated deduplication id gets its first answer, whatever it
	 * asks now) */
	if (res.code == POL_OK && !req.dedup_len)
		for (size_t i = 0; i < nq; i++) {
			int64_t want = req.quotas[i].amount;
			if (want >= 0 && (granted[i].granted < 0 ||
					  granted[i].granted > want))
				abort();
		}

	static uint8_t out[POL_WIRE_ANSWER_MAX(MIXD_CHECK_QUOTAS_MAX)];
	size_t n = pol_wire_answer(out, req.id, &res, granted, nq);
	size_t want_q = res.code == POL_OK ? nq : 0;
	uint64_t len = le(out, 4);
	if (n > POL_WIRE_ANSWER_MAX(nq) || n != 8 + ((len + 7) & ~7ull) ||
	    le(out + 4, 4) != MIXD_FRAME_CHECK_ANSWER || le(out + 8, 8) != req.id ||
	    (int32_t)le(out + 16, 4) != res.code)
		abort();
	size_t mlen = le(out + 32, 2);
	if (mlen > MIXD_CHECK_MESSAGE_MAX || 34 + mlen + 2 > 8 + len ||
	    le(out + 34 + mlen, 2) != want_q)
		abort();
	/* then the referenced attributes: none to reuse, or the engine's */
	size_t at = 34 + mlen + 2 + 16 * want_q;
	size_t want_refs = res.refs ? res.n_refs : 0;
	if (at + 2 > 8 + len ||
	    le(out + at, 2) != (res.refs ? res.n_refs : MIXD_CHECK_REFS_NONE) ||
	    8 + len != at + 2 + 2 * want_refs)
		abort();
	for (size_t i = 0; i < want_refs; i++)
		if (le(out + at + 2 + 2 * i, 2) >= MIXD_ATTR_DICT_COUNT ||
		    (i && le(out + at + 2 * i, 2) >= le(out + at + 2 + 2 * i, 2)))
			abort();
	return 0;
}
