/*
 * test_logs -- the stdio handler's JSON lines, byte for byte as Mixer's
 * stdio adapter (zap's JSON encoder) wrote them: formatDate's timestamps
 * (Go's zero time without a timestamp expression), strconv 'f' floats with
 * NaN and the infinities quoted, net.IP.String() addresses, BYTES in
 * base64, zap's string escapes, the default severity map, every entry
 * written whatever the handler's outputLevel, and none written whose
 * instance failed to build.
 *
 * A config is compiled into a plan as the daemon does; records are set
 * into an attribute table by hand and formatted with log_entry(). One test
 * runs two writers at once, as two shards (MIXD_TEST_THREADED: TSan too).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agg/agg_internal.h"

struct fixture {
	char dir[64];
	char log[128];
	struct agg_plan *plan;
	struct expr_scratch *sc;
	struct attr_table t;
	struct log_buf buf;
	int reader; /* log_fifo's read end, or -1 */
};

/* The logentry most tests use: a variable of each type they need. */
#define LOGENTRY                                                               \
	"  severity: t.sev | \"\"\n"                                             \
	"  timestamp: t.ts\n"                                                   \
	"  variables: {s: t.s, d: t.d, ts: t.ts, ip: t.ip}\n"

/* Logentry @logentry (its spec's lines) sent to a stdio handler that
 * writes to @f->log, with @handler's lines added to the handler's spec.
 * outputLevel ERROR: Mixer wrote the entries below it anyway. */
static const char *log_stream = "FILE"; /* the handler's logStream */
static bool log_fifo; /* the output path a FIFO, read by @f->reader */
static const char *log_preset; /* the output file's bytes before the plan */

static struct fixture *setup_with(const char *logentry, const char *handler)
{
	struct fixture *f = calloc(1, sizeof *f);
	char path[128];
	FILE *y;

	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/mixd-test-logs-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->log, sizeof f->log, "%s/access.log", f->dir);
	snprintf(path, sizeof path, "%s/logs.yaml", f->dir);
	y = fopen(path, "w");
	assert_non_null(y);
	fprintf(y,
		"kind: attributemanifest\n"
		"metadata: {name: t, namespace: default}\n"
		"spec:\n"
		"  attributes:\n"
		"    t.d: {valueType: DOUBLE}\n"
		"    t.s: {valueType: STRING}\n"
		"    t.ip: {valueType: IP_ADDRESS}\n"
		"    t.ts: {valueType: TIMESTAMP}\n"
		"    t.sev: {valueType: STRING}\n"
		"    t.b: {valueType: BYTES}\n"
		"    t.mr: {valueType: STRING}\n"
		"    t.m: {valueType: STRING_MAP}\n"
		"---\n"
		"kind: logentry\n"
		"metadata: {name: le, namespace: default}\n"
		"spec:\n"
		"%s"
		"---\n"
		"kind: stdio\n"
		"metadata: {name: h, namespace: default}\n"
		"spec:\n"
		"  logStream: %s\n"
		"  outputPath: %s\n"
		"  outputLevel: ERROR\n"
		"%s"
		"---\n"
		"kind: rule\n"
		"metadata: {name: r, namespace: default}\n"
		"spec:\n"
		"  actions: [{handler: h.stdio, instances: [le.logentry]}]\n",
		logentry, log_stream, f->log, handler);
	fclose(y);
	f->reader = -1;
	if (log_fifo) {
		assert_int_equal(mkfifo(f->log, 0600), 0);
		f->reader = open(f->log, O_RDONLY | O_NONBLOCK);
		assert_true(f->reader >= 0);
		/* The smallest pipe: a page. */
		assert_true(fcntl(f->reader, F_SETPIPE_SZ, 4096) >= 4096);
	}

	if (log_preset) {
		FILE *o = fopen(f->log, "w");
		assert_non_null(o);
		fputs(log_preset, o);
		fclose(o);
	}
	struct cfg *c = cfg_load(path, "default");
	assert_non_null(c);
	assert_true(cfg_ok(c));
	int err;
	f->plan = plan_build(c, 1, &err);
	assert_non_null(f->plan);
	assert_int_equal(f->plan->nlogs, 1);
	f->sc = expr_scratch_create(f->plan->prog, 0);
	assert_non_null(f->sc);
	f->buf.fd = -1;
	unlink(path);
	return f;
}

static struct fixture *setup(const char *severity_levels)
{
	return setup_with(LOGENTRY, severity_levels);
}

static void teardown(struct fixture *f)
{
	if (f->reader >= 0)
		close(f->reader);
	expr_scratch_destroy(f->sc);
	plan_unref(f->plan);
	unlink(f->log);
	rmdir(f->dir);
	free(f);
}

static void set(struct fixture *f, const char *name, struct attr_value v)
{
	int slot = attr_vocab_find(f->plan->vocab, name, strlen(name));

	assert_true(slot >= 0);
	attr_table_set(&f->t, (unsigned)slot, &v);
}

static void set_str(struct fixture *f, const char *name, const char *s,
		    size_t len)
{
	set(f, name,
	    (struct attr_value){
		    .type = ATTR_STRING, .len = (uint32_t)len, .s = s});
}

/* 2019-03-01T10:00:00Z in nanoseconds */
#define T0 (INT64_C(1551434400) * 1000000000)

/* Format the record in @f->t; log_entry()'s answer. */
static int format(struct fixture *f)
{
	expr_scratch_begin(f->sc);
	return log_entry(f->plan, &f->plan->logs[0], &f->t, f->sc, &f->buf);
}

/* One record: every variable but the severity, which @sev sets if given. */
static void entry(struct fixture *f, double d, const char *sev)
{
	static const uint8_t mapped[16] = {[10] = 0xff, 0xff, 10, 1, 2, 3};
	static const char s[] = "plain";
	struct attr_value ip = {.type = ATTR_IP, .len = 16};

	memcpy(ip.ip, mapped, 16);
	attr_table_clear(&f->t);
	set(f, "t.d", (struct attr_value){.type = ATTR_DOUBLE, .d = d});
	set(f, "t.ip", ip);
	set(f, "t.ts", (struct attr_value){.type = ATTR_TIMESTAMP, .i = T0});
	set_str(f, "t.s", s, sizeof s - 1);
	if (sev)
		set_str(f, "t.sev", sev, strlen(sev));
	assert_int_equal(format(f), 0);
}

/* A record whose t.s is @n bytes of 'x' (at most 40,000). */
static void long_entry(struct fixture *f, size_t n)
{
	static char big[40000];
	memset(big, 'x', sizeof big);
	attr_table_clear(&f->t);
	set(f, "t.d", (struct attr_value){.type = ATTR_DOUBLE, .d = 1});
	set(f, "t.ts", (struct attr_value){.type = ATTR_TIMESTAMP, .i = T0});
	set(f, "t.ip", (struct attr_value){.type = ATTR_IP, .len = 4});
	set_str(f, "t.s", big, n);
}

/* The file's lines so far, checked against @want (NULL-terminated). */
static void expect_lines(struct fixture *f, const char *const *want)
{
	char line[4096];
	FILE *in;
	size_t i = 0;

	log_flush(&f->buf, 0);
	in = fopen(f->log, "r");
	assert_non_null(in);
	while (fgets(line, sizeof line, in)) {
		assert_non_null(want[i]);
		line[strcspn(line, "\n")] = 0;
		assert_string_equal(line, want[i]);
		i++;
	}
	fclose(in);
	assert_null(want[i]);
}

#define HEAD(level)                                                            \
	"{\"level\":\"" level "\",\"time\":\"2019-03-01T10:00:00.000000Z\","   \
	"\"instance\":\"le.logentry.default\","
#define TAIL                                                                   \
	"\"ip\":\"10.1.2.3\",\"s\":\"plain\","                                 \
	"\"ts\":\"2019-03-01T10:00:00.000000Z\"}"

/* Doubles as strconv.FormatFloat(v, 'f', -1, 64), never an exponent; NaN
 * and the infinities as JSON strings (zap's appendFloat), not as bare
 * words a JSON parser refuses. The timestamp always has six fraction
 * digits; an IPv4-mapped address prints in dots. */
static void test_values_as_zap_wrote_them(void **state)
{
	struct fixture *f = setup("");
	static const char *const want[] = {
		HEAD("info") "\"d\":0.1," TAIL,
		HEAD("info") "\"d\":1000000000000000000000," TAIL,
		HEAD("info") "\"d\":0.00001," TAIL,
		HEAD("info") "\"d\":-0," TAIL,
		HEAD("info") "\"d\":\"NaN\"," TAIL,
		HEAD("info") "\"d\":\"+Inf\"," TAIL,
		HEAD("info") "\"d\":\"-Inf\"," TAIL,
		NULL,
	};

	(void)state;
	entry(f, 0.1, NULL);
	entry(f, 1e21, NULL);
	entry(f, 0.00001, NULL);
	entry(f, -0.0, NULL);
	entry(f, NAN, NULL);
	entry(f, INFINITY, NULL);
	entry(f, -INFINITY, NULL);
	expect_lines(f, want);
	teardown(f);
}

/* formatDate: UTC, microseconds cut (not rounded) to six digits. */
static void test_timestamps_have_six_fraction_digits(void **state)
{
	struct fixture *f = setup("");
	static const char *const want[] = {
		"{\"level\":\"info\",\"time\":\"2019-03-01T10:00:00.123456Z\","
		"\"instance\":\"le.logentry.default\",\"d\":1,"
		"\"ip\":\"10.1.2.3\",\"s\":\"plain\","
		"\"ts\":\"2019-03-01T10:00:00.123456Z\"}",
		NULL,
	};

	(void)state;
	entry(f, 1, NULL);
	f->buf.len = 0; /* keep only the second */
	set(f, "t.ts",
	    (struct attr_value){.type = ATTR_TIMESTAMP, .i = T0 + 123456789});
	assert_int_equal(format(f), 0);
	expect_lines(f, want);
	teardown(f);
}

/* zap's safeAddString: \" \\ \n \r \t, other control bytes as \u00XX,
 * DEL and well-formed UTF-8 as they are, each byte of ill-formed UTF-8
 * (a stray continuation byte, a truncated sequence, an encoded surrogate,
 * an overlong form) as \ufffd. Always one line per entry. */
static void test_strings_escaped_as_zap_did(void **state)
{
	struct fixture *f = setup("");
	static const char s[] = "q\"b\\n\nr\rt\tc\x01\x1f|\x7f|\xc3\xa9|"
				"\xf0\x9f\x98\x80|\x80|\xe2\x82|\xed\xa0\x80|"
				"\xc0\xaf|\0z";
	static const char *const want[] = {
		"{\"level\":\"info\",\"time\":\"2019-03-01T10:00:00.000000Z\","
		"\"instance\":\"le.logentry.default\",\"d\":1,"
		"\"ip\":\"10.1.2.3\","
		"\"s\":\"q\\\"b\\\\n\\nr\\rt\\tc\\u0001\\u001f|\x7f|\xc3\xa9|"
		"\xf0\x9f\x98\x80|\\ufffd|\\ufffd\\ufffd|"
		"\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd|\\u0000z\","
		"\"ts\":\"2019-03-01T10:00:00.000000Z\"}",
		NULL,
	};

	(void)state;
	entry(f, 1, NULL);
	f->buf.len = 0;
	set_str(f, "t.s", s, sizeof s - 1);
	assert_int_equal(format(f), 0);
	expect_lines(f, want);
	teardown(f);
}

/* Whether an entry is written does not depend on what the buffer holds:
 * one that does not fit after what is there goes to an empty buffer. A
 * line longer than the whole buffer is not written (counted). */
static void test_a_long_entry_after_another_is_written(void **state)
{
	struct fixture *f = setup("");
	(void)state;
	for (size_t n = 30000; n <= 40000; n += 10000) {
		long_entry(f, n);
		assert_int_equal(format(f), 0);
	}
	log_flush(&f->buf, 0);
	FILE *in = fopen(f->log, "r");
	assert_non_null(in);
	size_t lines = 0, bytes = 0;
	int c;
	while ((c = fgetc(in)) != EOF) {
		lines += c == '\n';
		bytes++;
	}
	fclose(in);
	assert_int_equal(lines, 2);
	assert_true(bytes > 70000);
	/* 12,000 control bytes: 72,000 escaped, more than the buffer */
	static char ctl[12001];
	memset(ctl, 1, sizeof ctl - 1);
	set_str(f, "t.s", ctl, sizeof ctl - 1);
	assert_int_equal(format(f), -1);
	teardown(f);
}

/* Lines in file @path (each whole: the file ends with one), its size in
 * *@bytes. */
static size_t file_lines(const char *path, size_t *bytes)
{
	FILE *in = fopen(path, "r");
	assert_non_null(in);
	size_t lines = 0;
	int c, last = '\n';
	*bytes = 0;
	while ((c = fgetc(in)) != EOF) {
		lines += c == '\n';
		last = c;
		(*bytes)++;
	}
	fclose(in);
	assert_int_equal(last, '\n');
	return lines;
}

/* ROTATED_FILE: a file about to pass maxMegabytesBeforeRotation is renamed
 * access-<UTC time>.log and a new one started; of the backups, the newest
 * maxRotatedFiles stay. No line is split or lost between the file and the
 * backups kept. */
static void test_a_rotated_file_is_rotated_and_pruned(void **state)
{
	(void)state;
	log_stream = "ROTATED_FILE";
	struct fixture *f = setup_with(LOGENTRY,
				       "  maxMegabytesBeforeRotation: 1\n"
				       "  maxRotatedFiles: 2\n");
	log_stream = "FILE";
	long_entry(f, 20000);
	const size_t n = 250; /* about 5 MB: four rotations */
	for (size_t i = 0; i < n; i++)
		assert_int_equal(format(f), 0);
	log_flush(&f->buf, 0);
	size_t bytes, lines = file_lines(f->log, &bytes);
	assert_true(bytes <= (1u << 20) && lines > 0);
	/* every line the same length: a file holds this many */
	const size_t per_file = (1u << 20) / (bytes / lines);
	const size_t rotations = (n - 1) / per_file;
	assert_true(rotations >= 3);
	assert_int_equal(lines, n - rotations * per_file);
	DIR *d = opendir(f->dir);
	assert_non_null(d);
	struct dirent *e;
	size_t backups = 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || !strcmp(e->d_name, "access.log"))
			continue;
		/* access-2026-11-27T08-01-02.345.log */
		assert_int_equal(strlen(e->d_name), strlen("access-") + 23 + 4);
		assert_memory_equal(e->d_name, "access-", 7);
		assert_string_equal(e->d_name + 7 + 23, ".log");
		char p[512];
		snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
		size_t b;
		assert_int_equal(file_lines(p, &b), per_file);
		backups++;
		unlink(p);
	}
	closedir(d);
	assert_int_equal(backups, 2);
	teardown(f);
}

/* Without severityLevels, the adapter's default map: exact spellings
 * only, anything else info. outputLevel ERROR drops nothing. */
static void test_default_severity_levels(void **state)
{
	struct fixture *f = setup("");
	static const char *const want[] = {
		HEAD("warn") "\"d\":1," TAIL,  HEAD("warn") "\"d\":2," TAIL,
		HEAD("error") "\"d\":3," TAIL, HEAD("error") "\"d\":4," TAIL,
		HEAD("info") "\"d\":5," TAIL,  HEAD("info") "\"d\":6," TAIL,
		HEAD("info") "\"d\":7," TAIL,  NULL,
	};

	(void)state;
	entry(f, 1, "WARN");
	entry(f, 2, "warning");
	entry(f, 3, "fatal");
	entry(f, 4, "ERR");
	entry(f, 5, "INFORMATIONAL");
	entry(f, 6, "Warning"); /* not a key of the default map */
	entry(f, 7, NULL);
	expect_lines(f, want);
	teardown(f);
}

/* A severityLevels given replaces the default map. */
static void test_given_severity_levels_replace_the_default(void **state)
{
	struct fixture *f = setup("  severityLevels: {Warning: WARNING}\n");
	static const char *const want[] = {
		HEAD("warn") "\"d\":1," TAIL,
		HEAD("info") "\"d\":2," TAIL,
		NULL,
	};

	(void)state;
	entry(f, 1, "Warning");
	entry(f, 2, "ERROR");
	expect_lines(f, want);
	teardown(f);
}

/* Mixer built an instance before its adapter saw it, and a field whose
 * expression failed (no attribute, no `|` default) failed the build: the
 * whole entry was dropped, not written without the field. Variables, the
 * severity, the timestamp, and the monitored resource fields the adapter
 * never wrote alike. */
static void test_an_entry_is_dropped_when_a_field_fails(void **state)
{
	struct fixture *f = setup_with("  severity: t.sev\n"
				       "  timestamp: t.ts\n"
				       "  variables: {s: t.s, d: t.d | 0.5}\n"
				       "  monitoredResourceType: t.mr\n"
				       "  monitoredResourceDimensions: {k: t.b}\n",
				       "");
	static const char *const skip[] = {"t.s", "t.sev", "t.ts", "t.mr",
					   "t.b"};
	static const char *const want[] = {
		HEAD("warn") "\"d\":0.5,\"s\":\"plain\"}",
		HEAD("warn") "\"d\":2,\"s\":\"plain\"}",
		NULL,
	};

	(void)state;
	for (size_t i = 0; i <= sizeof skip / sizeof skip[0]; i++) {
		const char *gone = i ? skip[i - 1] : "";

		attr_table_clear(&f->t);
		if (strcmp(gone, "t.s"))
			set_str(f, "t.s", "plain", 5);
		if (strcmp(gone, "t.sev"))
			set_str(f, "t.sev", "WARN", 4);
		if (strcmp(gone, "t.ts"))
			set(f, "t.ts",
			    (struct attr_value){.type = ATTR_TIMESTAMP, .i = T0});
		if (strcmp(gone, "t.mr"))
			set_str(f, "t.mr", "global", 6);
		if (strcmp(gone, "t.b"))
			set(f, "t.b",
			    (struct attr_value){
				    .type = ATTR_BYTES, .len = 1, .s = "b"});
		/* the first has all (d defaults); the others lack one each */
		assert_int_equal(format(f), i ? -1 : 0);
	}
	set(f, "t.d", (struct attr_value){.type = ATTR_DOUBLE, .d = 2});
	set(f, "t.b",
	    (struct attr_value){.type = ATTR_BYTES, .len = 1, .s = "b"});
	assert_int_equal(format(f), 0);
	expect_lines(f, want);
	teardown(f);
}

/* Without a timestamp expression the instance's Timestamp was Go's zero
 * time.Time, which formatDate wrote as year 1, not the time of writing.
 * Without a severity expression the severity was "", looked up like any
 * other: info unless the handler's map has "". */
static void test_without_a_timestamp_the_time_is_gos_zero_time(void **state)
{
	static const char *const le = "  variables: {s: t.s}\n";
	static const char *const want[] = {
		"{\"level\":\"info\",\"time\":\"0001-01-01T00:00:00.000000Z\","
		"\"instance\":\"le.logentry.default\",\"s\":\"plain\"}",
		NULL,
	};
	static const char *const want_error[] = {
		"{\"level\":\"error\",\"time\":\"0001-01-01T00:00:00.000000Z\","
		"\"instance\":\"le.logentry.default\",\"s\":\"plain\"}",
		NULL,
	};
	struct fixture *f = setup_with(le, "");

	(void)state;
	attr_table_clear(&f->t);
	set_str(f, "t.s", "plain", 5);
	assert_int_equal(format(f), 0);
	expect_lines(f, want);
	teardown(f);

	f = setup_with(le, "  severityLevels: {'': ERROR}\n");
	attr_table_clear(&f->t);
	set_str(f, "t.s", "plain", 5);
	assert_int_equal(format(f), 0);
	expect_lines(f, want_error);
	teardown(f);
}

/* zap.Any took a []byte as zap.Binary, which the JSON encoder's AddBinary
 * wrote as standard base64 with padding, not as the bytes themselves. */
static void test_bytes_in_base64(void **state)
{
	struct fixture *f = setup_with("  timestamp: t.ts\n"
				       "  variables: {b: t.b}\n",
				       "");
	static const struct {
		const char *in;
		size_t len;
	} bytes[] = {
		{"", 0},       {"a", 1},	    {"ab", 2},
		{"abc", 3},    {"\xfb\xff\xbf", 3}, {"mixd\0\n", 6},
	};
	static const char *const want[] = {
#define B64(s) HEAD("info") "\"b\":\"" s "\"}"
		B64(""), B64("YQ=="), B64("YWI="), B64("YWJj"), B64("+/+/"),
		B64("bWl4ZAAK"), NULL,
#undef B64
	};

	(void)state;
	for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++) {
		attr_table_clear(&f->t);
		set(f, "t.ts",
		    (struct attr_value){.type = ATTR_TIMESTAMP, .i = T0});
		set(f, "t.b",
		    (struct attr_value){.type = ATTR_BYTES,
					.len = (uint32_t)bytes[i].len,
					.s = bytes[i].in});
		assert_int_equal(format(f), 0);
	}
	expect_lines(f, want);
	teardown(f);
}


/* Everything @f->reader can read now appended to @got (@cap bytes). */
static size_t drain(struct fixture *f, char *got, size_t len, size_t cap)
{
	ssize_t k;
	while (len < cap && (k = read(f->reader, got + len, cap - len)) > 0)
		len += (size_t)k;
	assert_true(len < cap);
	return len;
}

/* An output read too slowly (a FIFO whose reader does not read) never
 * holds the shard: what it does not take waits in the buffer, a line with
 * no room is dropped and counted; once read again it gets every line
 * kept, whole. Written + lost = formatted. */
static void test_a_slow_reader_never_blocks_and_loses_nothing_silently(void **state)
{
	(void)state;
	log_fifo = true;
	struct fixture *f = setup("");
	log_fifo = false;
	const size_t n = 2000; /* about 300 KB: the pipe and buffer hold less */
	for (size_t i = 0; i < n; i++) {
		entry(f, (double)i, NULL);
		if (i % 100 == 99)
			log_flush(&f->buf, 0); /* as a shard's pass does */
	}
	log_flush(&f->buf, 0);
	assert_true(f->buf.lost > 0);
	assert_true(f->buf.len > 0 && f->buf.blocked); /* kept for later */
	static char got[1 << 20];
	size_t len = drain(f, got, 0, sizeof got);
	log_flush(&f->buf, 0);
	len = drain(f, got, len, sizeof got);
	while (f->buf.len) { /* more than a page kept: a page a round */
		log_flush(&f->buf, 0);
		len = drain(f, got, len, sizeof got);
	}
	size_t lines = 0;
	for (const char *p = got, *e = got + len, *nl; p < e; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(e - p));
		assert_non_null(nl); /* no line cut short */
		assert_memory_equal(p, "{\"level\":", 9);
		assert_memory_equal(nl - 2, "\"}", 2);
		lines++;
	}
	assert_true(lines > 0);
	assert_int_equal(lines + f->buf.lost, n);
	teardown(f);
}

/* A line the output took part of before the rest was given up (waited for
 * in vain) is ended with a newline before anything else is written, so
 * the next line is a line of its own. */
static void test_a_line_cut_short_is_ended_before_the_next(void **state)
{
	(void)state;
	log_fifo = true;
	struct fixture *f = setup("");
	log_fifo = false;
	long_entry(f, 10000);
	assert_int_equal(format(f), 0); /* longer than the pipe */
	log_flush(&f->buf, 1); /* a deadline long past: a page taken, the rest lost */
	assert_int_equal(f->buf.lost, 1);
	assert_true(f->buf.torn);
	static char got[1 << 16];
	size_t len = drain(f, got, 0, sizeof got);
	assert_int_equal(len, 4096);
	entry(f, 2, NULL);
	log_flush(&f->buf, 0);
	len = drain(f, got, len, sizeof got);
	assert_int_equal(got[4096], '\n');
	assert_memory_equal(got + 4097, "{\"level\":", 9);
	assert_int_equal(got[len - 1], '\n');
	assert_null(memchr(got + 4097, '\n', len - 4098));
	assert_false(f->buf.torn);
	teardown(f);
}

/* A shard of its own: its record, scratch and buffer; @c fills t.s. */
struct writer {
	struct fixture *f;
	char c;
	struct attr_table *t;
	struct expr_scratch *sc;
	struct log_buf buf;
};

#define LONG_LINE 10000 /* t.s: past PIPE_BUF, so a line is several pages */
#define LONG_LINES 300	/* a writer's */

static void *long_writer(void *arg)
{
	struct writer *w = arg;
	static char big[2][LONG_LINE];
	char *s = big[w->c == 'b'];
	memset(s, w->c, LONG_LINE);
	const struct agg_plan *p = w->f->plan;
	struct attr_value v[4] = {
		{.type = ATTR_DOUBLE, .d = 1},
		{.type = ATTR_TIMESTAMP, .i = T0},
		{.type = ATTR_IP, .len = 4},
		{.type = ATTR_STRING, .len = LONG_LINE, .s = s},
	};
	static const char *const names[4] = {"t.d", "t.ts", "t.ip", "t.s"};
	for (int k = 0; k < 4; k++)
		attr_table_set(w->t,
			       (unsigned)attr_vocab_find(p->vocab, names[k],
							 strlen(names[k])),
			       &v[k]);
	for (int i = 0; i < LONG_LINES; i++) {
		expr_scratch_begin(w->sc);
		if (log_entry(p, &p->logs[0], w->t, w->sc, &w->buf))
			return "not formatted";
		log_flush(&w->buf, 0); /* each line a write of its own */
	}
	return NULL;
}

/* Two shards writing lines longer than PIPE_BUF to one file at once: each
 * line is written whole, never with the other's inside it. (They went in
 * PIPE_BUF pieces, which another shard's could come between.) */
static void test_long_lines_of_two_shards_never_interleave_in_a_file(void **state)
{
	(void)state;
	struct fixture *f = setup(""); /* a FILE output: a regular file */
	struct writer w[2];
	pthread_t th[2];
	for (int i = 0; i < 2; i++) {
		w[i] = (struct writer){.f = f, .c = (char)('a' + i)};
		w[i].t = calloc(1, sizeof *w[i].t);
		w[i].sc = expr_scratch_create(f->plan->prog, 0);
		assert_true(w[i].t && w[i].sc);
		w[i].buf.fd = -1;
		assert_int_equal(pthread_create(&th[i], NULL, long_writer, &w[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		void *rc;
		assert_int_equal(pthread_join(th[i], &rc), 0);
		assert_null(rc);
		assert_int_equal(w[i].buf.lost, 0);
		expr_scratch_destroy(w[i].sc);
		free(w[i].t);
	}
	FILE *in = fopen(f->log, "r");
	assert_non_null(in);
	static char line[2 * LONG_LINE];
	int n[2] = {0, 0};
	while (fgets(line, sizeof line, in)) {
		char *v = strstr(line, "\"s\":\"");
		assert_non_null(v);
		v += 5;
		char c = v[0];
		assert_true(c == 'a' || c == 'b');
		size_t run = strspn(v, c == 'a' ? "a" : "b");
		assert_int_equal(run, LONG_LINE); /* the other's bytes not inside */
		assert_memory_equal(line + strlen(line) - 3, "\"}\n", 3);
		n[c == 'b']++;
	}
	fclose(in);
	assert_int_equal(n[0], LONG_LINES);
	assert_int_equal(n[1], LONG_LINES);
	teardown(f);
}

/* The file's whole contents (at most 64 KiB). */
static size_t file_bytes(const char *path, char *out)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, out, 65536);
	close(fd);
	assert_true(n >= 0);
	return (size_t)n;
}

/* An output file left inside a line (a mixd killed, a full disk) is
 * ended when it is opened, so the first new line is a line of its own;
 * one that ends a line, or is empty, is left as it is. */
static void test_a_file_left_inside_a_line_is_ended_when_opened(void **state)
{
	(void)state;
	static char got[65536];
	log_preset = "{\"level\":\"info\",\"cut";
	struct fixture *f = setup("");
	log_preset = NULL;
	entry(f, 1, NULL);
	log_flush(&f->buf, 0);
	size_t n = file_bytes(f->log, got);
	assert_memory_equal(got, "{\"level\":\"info\",\"cut\n{\"level\":", 29);
	assert_int_equal(got[n - 1], '\n');
	teardown(f);

	log_preset = "{}\n";
	f = setup("");
	log_preset = NULL;
	entry(f, 1, NULL);
	log_flush(&f->buf, 0);
	n = file_bytes(f->log, got);
	assert_memory_equal(got, "{}\n{\"level\":", 12);
	teardown(f);
}

/* A shard whose line was cut short ends it -- unless the file was ended
 * since (by a reload's new outputs, opened meanwhile): no empty line. */
static void test_a_cut_line_ended_since_is_not_ended_twice(void **state)
{
	(void)state;
	static char got[65536];
	struct fixture *f = setup("");
	entry(f, 1, NULL);
	log_flush(&f->buf, 0);
	size_t n0 = file_bytes(f->log, got);
	f->buf.torn = true; /* as if its last line had been cut */
	entry(f, 2, NULL);
	log_flush(&f->buf, 0);
	size_t n = file_bytes(f->log, got);
	assert_false(f->buf.torn);
	assert_memory_equal(got + n0, "{\"level\":", 9); /* no "\n" first */
	assert_int_equal(got[n - 1], '\n');
	teardown(f);
}

/* A ROTATED_FILE someone removed is started again at its size, not
 * renamed (there is nothing to rename) nor left unrotated. */
static void test_a_removed_rotated_file_is_started_again(void **state)
{
	(void)state;
	log_stream = "ROTATED_FILE";
	struct fixture *f = setup_with(LOGENTRY,
				       "  maxMegabytesBeforeRotation: 1\n");
	log_stream = "FILE";
	long_entry(f, 20000);
	for (size_t i = 0; i < 10; i++)
		assert_int_equal(format(f), 0);
	log_flush(&f->buf, 0);
	assert_int_equal(unlink(f->log), 0);
	for (size_t i = 0; i < 60; i++) /* past the size: about 1.2 MB */
		assert_int_equal(format(f), 0);
	log_flush(&f->buf, 0);
	size_t bytes, lines = file_lines(f->log, &bytes);
	assert_true(lines > 0 && lines < 60 && bytes <= (1u << 20));
	DIR *d = opendir(f->dir);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)))
		assert_true(e->d_name[0] == '.' ||
			    !strcmp(e->d_name, "access.log"));
	closedir(d);
	assert_int_equal(f->buf.lost, 0);
	teardown(f);
}

/* A string map as encoding/json wrote a Go map for zap.Any: keys sorted
 * whatever the record's order, a repeated key once (its first value, as
 * a lookup finds), U+2028 and U+2029 escaped. */
static void test_a_string_map_is_written_as_go_wrote_a_map(void **state)
{
	(void)state;
	struct fixture *f = setup_with("  variables: {m: t.m}\n", "");
	static const struct {
		const char *k, *v;
	} pairs[] = {{"version", "v1"}, {"app", "a\xe2\x80\xa8" "b"},
		     {"b", "\xe2\x80\xa9"}, {"app", "later"}, {"ab", "<&>"}};
	uint8_t wire[256], *q = wire + 4;
	uint32_t u = 5;
	memcpy(wire, &u, 4);
	for (size_t i = 0; i < 5; i++) {
		u = (uint32_t)strlen(pairs[i].k);
		memcpy(q, &u, 4);
		memcpy(q + 4, pairs[i].k, u);
		q += 4 + u;
		u = (uint32_t)strlen(pairs[i].v);
		memcpy(q, &u, 4);
		memcpy(q + 4, pairs[i].v, u);
		q += 4 + u;
	}
	attr_table_clear(&f->t);
	set(f, "t.m", (struct attr_value){.type = ATTR_STRING_MAP,
					  .len = (uint32_t)(q - wire),
					  .map = wire});
	assert_int_equal(format(f), 0);
	static const char *const want[] = {
		"{\"level\":\"info\",\"time\":\"0001-01-01T00:00:00.000000Z\","
		"\"instance\":\"le.logentry.default\",\"m\":{\"ab\":\"<&>\","
		"\"app\":\"a\\u2028b\",\"b\":\"\\u2029\",\"version\":\"v1\"}}",
		NULL};
	expect_lines(f, want);
	teardown(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_values_as_zap_wrote_them),
		cmocka_unit_test(test_timestamps_have_six_fraction_digits),
		cmocka_unit_test(test_strings_escaped_as_zap_did),
		cmocka_unit_test(test_a_long_entry_after_another_is_written),
		cmocka_unit_test(test_a_rotated_file_is_rotated_and_pruned),
		cmocka_unit_test(test_default_severity_levels),
		cmocka_unit_test(
			test_given_severity_levels_replace_the_default),
		cmocka_unit_test(test_an_entry_is_dropped_when_a_field_fails),
		cmocka_unit_test(
			test_without_a_timestamp_the_time_is_gos_zero_time),
		cmocka_unit_test(test_bytes_in_base64),
		cmocka_unit_test(
			test_a_slow_reader_never_blocks_and_loses_nothing_silently),
		cmocka_unit_test(test_a_line_cut_short_is_ended_before_the_next),
		cmocka_unit_test(test_a_removed_rotated_file_is_started_again),
		cmocka_unit_test(
			test_long_lines_of_two_shards_never_interleave_in_a_file),
		cmocka_unit_test(
			test_a_file_left_inside_a_line_is_ended_when_opened),
		cmocka_unit_test(test_a_cut_line_ended_since_is_not_ended_twice),
		cmocka_unit_test(test_a_string_map_is_written_as_go_wrote_a_map),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
