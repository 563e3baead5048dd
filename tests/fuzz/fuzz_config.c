/*
 * fuzz_config -- the YAML loader on arbitrary bytes: parsing, decoding,
 * reference resolution, expression compilation, the summary and
 * destruction of whatever was half built. Leaks and overflows are found by
 * ASan; the oracle is "does not crash".
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg *c = cfg_load_buffer("fuzz.yaml", (const char *)data, size,
					"default");
	FILE *null;

	if (!c)
		return 0;
	null = fopen("/dev/null", "w");
	if (null) {
		cfg_print_summary(c, null);
		fclose(null);
	}
	cfg_destroy(c);
	return 0;
}
