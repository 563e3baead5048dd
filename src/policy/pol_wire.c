/*
 * pol_wire.c -- the check protocol's request decoder and answer encoder.
 */
#include <string.h>

#include "ingest/wire.h"
#include "policy/pol_wire.h"

/* A little-endian cursor that goes bad, and stays bad, at the end. */
struct rd {
	const uint8_t *p, *end;
	bool bad;
};

static const uint8_t *take(struct rd *r, size_t n)
{
	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *q = r->p;
	r->p += n;
	return q;
}

static uint64_t take_le(struct rd *r, unsigned bytes)
{
	const uint8_t *q = take(r, bytes);
	return q ? wire_get_le(q, bytes) : 0;
}

enum pol_wire_rc pol_wire_parse(const uint8_t *p, size_t len,
				struct pol_wire_request *out)
{
	struct rd r = {p, p + len, false};
	memset(out, 0, sizeof(*out));
	out->id = take_le(&r, 8);
	if (r.bad)
		return POL_WIRE_NO_ID;
	out->dedup_len = (size_t)take_le(&r, 2);
	out->dedup = (const char *)take(&r, out->dedup_len);
	size_t nq = (size_t)take_le(&r, 2);
	if (nq > MIXD_CHECK_QUOTAS_MAX || out->dedup_len > MIXD_CHECK_NAME_MAX)
		return POL_WIRE_MALFORMED;
	for (size_t i = 0; i < nq && !r.bad; i++) {
		size_t nl = (size_t)take_le(&r, 2);
		const uint8_t *name = take(&r, nl);
		int64_t amount = (int64_t)take_le(&r, 8);
		uint64_t be = take_le(&r, 1);
		if (nl > MIXD_CHECK_NAME_MAX || be > 1)
			return POL_WIRE_MALFORMED;
		out->quotas[i] = (struct pol_quota_req){(const char *)name, nl,
							amount, be == 1};
	}
	out->n_quotas = nq;
	out->record_len = (size_t)take_le(&r, 4);
	out->record = take(&r, out->record_len);
	if (r.bad || r.p != r.end)
		return POL_WIRE_MALFORMED;
	return POL_WIRE_OK;
}

size_t pol_wire_answer(uint8_t *out, uint64_t id, const struct pol_result *r,
		       const struct pol_quota_res *q, size_t nq)
{
	size_t mlen = strnlen(r->message, sizeof(r->message));
	if (mlen > MIXD_CHECK_MESSAGE_MAX)
		mlen = MIXD_CHECK_MESSAGE_MAX;
	if (r->code != POL_OK)
		nq = 0;
	size_t nrefs = r->refs ? r->n_refs : 0;
	size_t len = 8 + 4 + 8 + 4 + 2 + mlen + 2 + 16 * nq + 2 + 2 * nrefs;
	size_t framed = 8 + ((len + 7) & ~(size_t)7);
	uint8_t *p = out;
	p = wire_put_le(p, len, 4);
	p = wire_put_le(p, MIXD_FRAME_CHECK_ANSWER, 4);
	p = wire_put_le(p, id, 8);
	p = wire_put_le(p, (uint32_t)r->code, 4);
	p = wire_put_le(p, (uint64_t)r->valid_duration_ns, 8);
	p = wire_put_le(p, (uint32_t)r->valid_use_count, 4);
	p = wire_put_le(p, mlen, 2);
	memcpy(p, r->message, mlen);
	p += mlen;
	p = wire_put_le(p, nq, 2);
	for (size_t i = 0; i < nq; i++) {
		p = wire_put_le(p, (uint64_t)q[i].granted, 8);
		p = wire_put_le(p, (uint64_t)q[i].valid_duration_ns, 8);
	}
	p = wire_put_le(p, r->refs ? nrefs : MIXD_CHECK_REFS_NONE, 2);
	for (size_t i = 0; i < nrefs; i++)
		p = wire_put_le(p, r->refs[i], 2);
	memset(p, 0, framed - (size_t)(p - out));
	return framed;
}
