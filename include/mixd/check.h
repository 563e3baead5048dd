/*
 * mixd/check.h -- the check protocol: what a policy client (libmixd's
 * mixd_checker) and mixd's policy socket say to each other. Version 2
 * (1 had no referenced attributes in its answers).
 *
 * Only libmixd, mixd's policy module and tests include this header.
 * Change nothing here without bumping MIXD_CHECK_VERSION.
 *
 * A stream connection on the policy socket starts with a struct
 * mixd_hello (<mixd/ring.h>) of kind MIXD_HELLO_CHECK and version
 * MIXD_CHECK_VERSION. Then the client sends requests and mixd answers
 * each, in the order asked: a client may send many before reading any
 * answer (pipelining); the id it chose comes back with each answer.
 * Frames are framed as on the telemetry socket (u32 len, u32 mark,
 * payload, padded to 8 bytes), little-endian, unaligned inside.
 *
 * Request, mark MIXD_FRAME_CHECK:
 *
 *    u64 id
 *    u16 dedup_len, dedup_len bytes   deduplication id for quotas (0:
 *                                      none, every request its own)
 *    u16 n_quotas (<= MIXD_CHECK_QUOTAS_MAX), then per quota:
 *        u16 name_len, name bytes      the quota's short name
 *        i64 amount
 *        u8  best_effort (0 or 1)
 *    u32 record_len, record_len bytes  the attributes: a record payload
 *                                      as <mixd/ring.h> draws it (no
 *                                      layout records)
 *
 *   and nothing after. A request that is malformed in itself (lengths
 *   that do not add up, a bad record) is answered INVALID_ARGUMENT when
 *   its id could be read; a frame that cannot be delimited (a length
 *   over MIXD_CHECK_FRAME_MAX, an unknown mark) closes the connection.
 *
 * Answer, mark MIXD_FRAME_CHECK_ANSWER:
 *
 *    u64 id
 *    i32 code                  google.rpc.Code (0 OK, 7 PERMISSION_DENIED,
 *                              8 RESOURCE_EXHAUSTED, 13 INTERNAL, ...)
 *    i64 valid_duration_ns     how long the answer may be reused
 *    i32 valid_use_count       for how many requests
 *    u16 message_len, message bytes
 *    u16 n_quotas, then per quota asked, in the request's order:
 *        i64 granted
 *        i64 valid_duration_ns
 *    u16 n_refs, then n_refs x u16    the dictionary attributes (ids of
 *                                     <mixd/attributes.h>, ascending) the
 *                                     decision depends on, present or
 *                                     absent; MIXD_CHECK_REFS_NONE (and no
 *                                     ids): the answer must not be reused
 *
 *   Quotas are answered only when code is OK (n_quotas is 0 otherwise).
 *   A request that carried an attribute by name (inline) is answered
 *   MIXD_CHECK_REFS_NONE, as are INTERNAL and INVALID_ARGUMENT answers.
 *   A client may reuse an answer, within its validity, for a request
 *   whose referenced attributes are all encoded as they were in the one
 *   asked (the same absent), as Mixer's proxy cached by
 *   ReferencedAttributes; grants are never reused, nor is any answer for
 *   a request that carries an attribute by name.
 */
#ifndef MIXD_CHECK_H
#define MIXD_CHECK_H

#include "ring.h"

/** Hello kind of a policy connection. */
#define MIXD_HELLO_CHECK 3u

/** Protocol version, in the hello. */
#define MIXD_CHECK_VERSION 2u

/** Frame marks. */
#define MIXD_FRAME_CHECK 0x314B584Du	    /* "MXK1" little-endian */
#define MIXD_FRAME_CHECK_ANSWER 0x3141584Du /* "MXA1" little-endian */

/** Most quotas one request asks for. */
#define MIXD_CHECK_QUOTAS_MAX 16u

/** Longest quota name and deduplication id. */
#define MIXD_CHECK_NAME_MAX 255u

/** Longest message in an answer; longer ones are cut. */
#define MIXD_CHECK_MESSAGE_MAX 1023u

/** n_refs of an answer that must not be reused. */
#define MIXD_CHECK_REFS_NONE 0xFFFFu

/** Largest payload of a request or an answer. */
#define MIXD_CHECK_FRAME_MAX                                                 \
	(MIXD_RECORD_MAX + 8u + 2u + MIXD_CHECK_NAME_MAX + 2u +              \
	 MIXD_CHECK_QUOTAS_MAX * (2u + MIXD_CHECK_NAME_MAX + 9u) + 4u)

/** google.rpc.Code's name for @code ("PERMISSION_DENIED"), or
 *  "UNKNOWN". */
static inline const char *mixd_check_code_name(int code)
{
	static const char *const names[] = {
		"OK",		    "CANCELLED",	  "UNKNOWN",
		"INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS",   "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED",	 "OUT_OF_RANGE",
		"UNIMPLEMENTED",    "INTERNAL",		  "UNAVAILABLE",
		"DATA_LOSS",	    "UNAUTHENTICATED"};
	return code >= 0 && code <= 16 ? names[code] : "UNKNOWN";
}

#endif /* MIXD_CHECK_H */
