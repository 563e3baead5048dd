/*
 * bench_util -- what every mixd benchmark prints: the workload, the machine
 * (nproc, CPU model) and median/min/max over its runs.
 */
#ifndef MIXD_BENCH_UTIL_H
#define MIXD_BENCH_UTIL_H

#include <stdint.h>

/** Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);

/** Print "machine: N cpus, <model>" and the benchmark's @workload line. */
void bench_header(const char *name, const char *workload);

/**
 * Print "<label>: median M min m max X <unit> over N runs" for @n samples
 * (sorted in place).
 */
void bench_report(const char *label, double *samples, int n, const char *unit);

/** Field @field ("VmRSS", "VmHWM", ...) of /proc/self/status in KiB, or
 *  -1. */
long bench_status_kib(const char *field);

/** Environment variable @name as a positive number, else @dflt (a bench's
 *  knobs: MIXD_BENCH_RUNS, MIXD_BENCH_RECORDS, MIXD_BENCH_CASE, ...). */
long bench_env(const char *name, long dflt);

/** Resident set size of this process in KiB: bench_status_kib("VmRSS"). */
long bench_rss_kib(void);

/** Most runs a bench makes: the benches keep their samples in arrays of
 *  this many. */
#define BENCH_RUNS_MAX 16

/** Number of runs: $MIXD_BENCH_RUNS or @dflt, from 5 to BENCH_RUNS_MAX. */
int bench_runs(int dflt);

#endif
