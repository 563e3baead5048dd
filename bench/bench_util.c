#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void cpu_model(char *buf, size_t cap)
{
	snprintf(buf, cap, "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, "model name", 10) == 0) {
			char *colon = strchr(line, ':');
			if (colon) {
				snprintf(buf, cap, "%s", colon + 2);
				buf[strcspn(buf, "\n")] = 0;
			}
			break;
		}
	}
	fclose(f);
}

void bench_header(const char *name, const char *workload)
{
	char model[256];
	cpu_model(model, sizeof model);
	printf("== %s\n", name);
	printf("machine: %ld cpus (nproc), %s\n", sysconf(_SC_NPROCESSORS_ONLN),
	       model);
	printf("workload: %s\n", workload);
	fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

void bench_report(const char *label, double *s, int n, const char *unit)
{
	qsort(s, (size_t)n, sizeof *s, cmp_double);
	double med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	printf("%s: median %.4g min %.4g max %.4g %s over %d runs\n", label, med,
	       s[0], s[n - 1], unit, n);
	fflush(stdout);
}

long bench_status_kib(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	char line[256];
	size_t n = strlen(field);
	long kib = -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, field, n) && line[n] == ':' &&
		    sscanf(line + n + 1, "%ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

long bench_rss_kib(void)
{
	return bench_status_kib("VmRSS");
}

long bench_env(const char *name, long dflt)
{
	const char *e = getenv(name);
	long v = e ? strtol(e, NULL, 10) : 0;
	return v > 0 ? v : dflt;
}

int bench_runs(int dflt)
{
	long n = bench_env("MIXD_BENCH_RUNS", dflt);
	return n < 5 ? 5 : n > BENCH_RUNS_MAX ? BENCH_RUNS_MAX : (int)n;
}
