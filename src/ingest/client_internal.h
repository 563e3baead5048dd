/*
 * client_internal.h -- what libmixd's two halves share: the telemetry
 * client (client.c) and the checker (checker.c). Not installed.
 */
#ifndef MIXD_CLIENT_INTERNAL_H
#define MIXD_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>

#include <mixd/client.h>

#include "ingest/wire.h"

/* The shared library exports only the API; everything else is hidden. */
#ifdef MIXD_BUILDING_SHARED
#define API __attribute__((visibility("default")))
#else
#define API
#endif

#define REC_SLACK 8 /* bytes after a builder's buffer: see room() */

struct tl_ring;

/* A record builder: a telemetry thread's (ring set) or a checker's (ring
 * and client NULL). */
struct mixd_record {
	struct wire_writer w;
	struct tl_ring *ring; /* NULL: no ring could be made; commit drops */
	struct mixd_client *client;
	bool invalid;
};

static inline uint64_t now_ns(int clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* This process's id, without a syscall: kept by an atfork handler. */
pid_t client_process(void);

/* "unix:///path" or "/path" into @sa: 0 or -EINVAL. */
int client_parse_address(const char *address, struct sockaddr_un *sa);

/* Bytes @n dictionary values @v take on the wire; -EINVAL for one that
 * cannot be encoded (a custom attribute among them), -EMSGSIZE past
 * MIXD_RECORD_MAX. */
ssize_t client_dict_values_size(const struct mixd_value *v, size_t n);

/* Encode @n values client_dict_values_size() accepted at @o; the end. */
uint8_t *client_encode_values(const struct mixd_value *v, size_t n,
			      uint8_t *o);

#endif /* MIXD_CLIENT_INTERNAL_H */
