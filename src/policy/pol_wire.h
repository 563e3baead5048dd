/*
 * pol_wire.h -- the check protocol's request and answer (<mixd/check.h>)
 * as the policy server reads and writes them. Apart from the server so
 * that the fuzz target drives the very decoder the socket uses.
 */
#ifndef MIXD_POLICY_WIRE_H
#define MIXD_POLICY_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <mixd/check.h>

#include "policy/policy.h"

/** A request, its strings pointing into the frame it was read from. */
struct pol_wire_request {
	uint64_t id;
	const char *dedup;
	size_t dedup_len;
	struct pol_quota_req quotas[MIXD_CHECK_QUOTAS_MAX];
	size_t n_quotas;
	const uint8_t *record;
	size_t record_len;
};

/** What pol_wire_parse() made of a request. */
enum pol_wire_rc {
	POL_WIRE_OK = 0,
	POL_WIRE_MALFORMED = 1, /**< the id was read: answer INVALID_ARGUMENT */
	POL_WIRE_NO_ID = 2,	/**< not even an id: close the connection */
};

/**
 * Read the request payload @p (@len bytes, untrusted) into @out. Every
 * length is checked against what is left; nothing is read past @len, and
 * the payload must end exactly where the record does.
 */
enum pol_wire_rc pol_wire_parse(const uint8_t *p, size_t len,
				struct pol_wire_request *out);

/** Bytes the answer to a check of @nq quotas takes, framed, at most. */
#define POL_WIRE_ANSWER_MAX(nq)                                              \
	(8u + 8u + 4u + 8u + 4u + 2u + MIXD_CHECK_MESSAGE_MAX + 2u +         \
	 16u * (nq) + 2u + 2u * MIXD_ATTR_DICT_COUNT + 8u)

/**
 * Write the framed answer to request @id at @out (room for
 * POL_WIRE_ANSWER_MAX(@nq)): @r's code, validity and message (cut at
 * MIXD_CHECK_MESSAGE_MAX bytes), the @nq grants @q when the code is
 * OK, and @r's referenced attributes (at most MIXD_ATTR_DICT_COUNT).
 * Returns the bytes written.
 */
size_t pol_wire_answer(uint8_t *out, uint64_t id, const struct pol_result *r,
		       const struct pol_quota_res *q, size_t nq);

#endif /* MIXD_POLICY_WIRE_H */
