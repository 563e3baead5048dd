/*
 * frames.h -- the smallest record frame of the socket protocol, for the
 * unit tests that stream to a server: response.code 200, framed as
 * <mixd/ring.h> says, padded to 8 bytes.
 */
#ifndef MIXD_TESTS_FRAMES_H
#define MIXD_TESTS_FRAMES_H

#include <stdint.h>
#include <string.h>

#include <mixd/attributes.h>
#include <mixd/ring.h>

#define CODE_FRAME_LEN 24

/* The frame at @f (CODE_FRAME_LEN bytes). */
static inline void code_frame(uint8_t *f)
{
	memset(f, 0, CODE_FRAME_LEN);
	uint32_t hdr[2] = {11, MIXD_FRAME_RECORD};
	memcpy(f, hdr, 8);
	f[8] = MIXD_ATTR_RESPONSE_CODE & 0xff;
	f[9] = MIXD_ATTR_RESPONSE_CODE >> 8;
	f[10] = MIXD_T_INT64;
	int64_t code = 200;
	memcpy(f + 11, &code, 8);
}

#endif
