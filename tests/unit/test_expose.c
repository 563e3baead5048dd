/*
 * expose: Prometheus text rendering and the HTTP server.
 *
 * MIXD_TEST_THREADED: the server runs handlers on its pool threads, so this
 * test also runs under TSan.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "agg/agg.h"
#include "expose/expose.h"
#include "expose/expose_internal.h"

/* ---- rendering ---------------------------------------------------------- */

static const char *render_help(const char *help)
{
	static char out[256];
	struct expose_buf b = {0};
	expose_help(&b, "m", help);
	snprintf(out, sizeof(out), "%s", expose_buf_cstr(&b));
	expose_buf_free(&b);
	return out;
}

static void test_help_escapes_backslash_and_newline(void **state)
{
	assert_string_equal(render_help("plain"), "# HELP m plain\n");
	assert_string_equal(render_help("a\\b\nc\"d"),
			    "# HELP m a\\\\b\\nc\"d\n");
	assert_string_equal(render_help(""), "# HELP m \n");
}

static void test_type_line(void **state)
{
	struct expose_buf b = {0};
	expose_type(&b, "mixd_x_total", "counter");
	assert_string_equal(expose_buf_cstr(&b),
			    "# TYPE mixd_x_total counter\n");
	expose_buf_free(&b);
}

static void test_label_value_escapes(void **state)
{
	struct expose_buf b = {0};
	const char v[] = "a\\b\"c\nd";
	expose_label_value(&b, v, sizeof(v) - 1);
	assert_string_equal(expose_buf_cstr(&b), "a\\\\b\\\"c\\nd");
	expose_buf_free(&b);

	/* embedded NUL and non-ASCII pass through unchanged */
	const char w[] = "x\0y\xc3\xa9";
	expose_label_value(&b, w, sizeof(w) - 1);
	assert_int_equal(b.len, sizeof(w) - 1);
	assert_memory_equal(b.data, w, sizeof(w) - 1);
	expose_buf_free(&b);
}

static void test_sample_lines(void **state)
{
	struct expose_buf b = {0};
	struct expose_label l[] = {{"code", "200"}, {"path", "/a\"b"}};
	expose_sample(&b, "req_total", l, 2, 42);
	expose_sample(&b, "up", NULL, 0, 1);
	expose_sample(&b, "lat", l, 1, 0.25);
	assert_string_equal(expose_buf_cstr(&b),
			    "req_total{code=\"200\",path=\"/a\\\"b\"} 42\n"
			    "up 1\n"
			    "lat{code=\"200\"} 0.25\n");
	expose_buf_free(&b);

	struct expose_buf labels = {0};
	expose_labels(&labels, l, 1);
	const char le[] = "le=\"0.005\"";
	expose_sample_raw(&b, "h", 1, "_bucket", labels.data, labels.len, le,
			  sizeof(le) - 1, 3);
	expose_sample_raw(&b, "h", 1, "_count", labels.data, labels.len, NULL,
			  0, 3);
	expose_sample_raw(&b, "h", 1, NULL, NULL, 0, le, sizeof(le) - 1,
			  INFINITY);
	expose_sample_raw(&b, "h", 1, "_sum", NULL, 0, NULL, 0, -1.5);
	assert_string_equal(expose_buf_cstr(&b),
			    "h_bucket{code=\"200\",le=\"0.005\"} 3\n"
			    "h_count{code=\"200\"} 3\n"
			    "h{le=\"0.005\"} +Inf\n"
			    "h_sum -1.5\n");
	expose_buf_free(&b);
	expose_buf_free(&labels);
}

/* expose_fmt_u64() into @b, as the renderer appends counters. */
static void put_u64(struct expose_buf *b, uint64_t v)
{
	if (expose_buf_reserve(b, 20) == 0)
		b->len += expose_fmt_u64(v, b->data + b->len);
}

static void test_buf_grows_and_printf(void **state)
{
	struct expose_buf b;
	expose_buf_init(&b);
	for (int i = 0; i < 100000; i++)
		put_u64(&b, (uint64_t)i);
	assert_false(expose_buf_failed(&b));
	assert_true(b.len > 100000);
	expose_buf_free(&b);

	char big[1000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	expose_buf_printf(&b, "<%s>%d", big, 7);
	assert_int_equal(b.len, sizeof(big) - 1 + 3);
	assert_memory_equal(b.data + b.len - 2, ">7", 2);
	expose_buf_free(&b);
	assert_null(b.data);
}

static void test_u64(void **state)
{
	struct expose_buf b = {0};
	put_u64(&b, 0);
	expose_buf_putc(&b, ' ');
	put_u64(&b, 9);
	expose_buf_putc(&b, ' ');
	put_u64(&b, 10);
	expose_buf_putc(&b, ' ');
	put_u64(&b, UINT64_MAX);
	assert_string_equal(expose_buf_cstr(&b), "0 9 10 18446744073709551615");
	expose_buf_free(&b);
}

static const char *fv(double v)
{
	static char out[EXPOSE_VALUE_MAX];
	size_t n = expose_format_value(v, out);
	assert_int_equal(n, strlen(out));
	return out;
}

static void test_value_format(void **state)
{
	assert_string_equal(fv(0), "0");
	assert_string_equal(fv(-0.0), "0");
	assert_string_equal(fv(1), "1");
	assert_string_equal(fv(-7), "-7");
	assert_string_equal(fv(1e6), "1000000");
	assert_string_equal(fv(1e15), "1000000000000000");
	assert_string_equal(fv(9007199254740991.0), "9007199254740991");
	/* from 2^53 on, integers are no longer all exact: %.17g */
	assert_string_equal(fv(9007199254740992.0), "9007199254740992");
	assert_string_equal(fv(1e20), "1e+20");
	assert_string_equal(fv(0.5), "0.5");
	assert_string_equal(fv(0.1), "0.1");
	assert_string_equal(fv(0.005), "0.005");
	assert_string_equal(fv(-2.5), "-2.5");
	assert_string_equal(fv(123.456), "123.456");
	assert_string_equal(fv(1e-7), "0.0000001");
	assert_string_equal(fv(0.1 + 0.2), "0.30000000000000004");
	assert_string_equal(fv(INFINITY), "+Inf");
	assert_string_equal(fv(-INFINITY), "-Inf");
	assert_string_equal(fv(NAN), "NaN");
	assert_string_equal(fv(5e-324), "4.9406564584124654e-324");
	assert_string_equal(fv(-1.7976931348623157e308),
			    "-1.7976931348623157e+308");
}

/* xorshift: deterministic, no libc rand state */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void test_value_format_roundtrips(void **state)
{
	char out[EXPOSE_VALUE_MAX];
	for (int i = 0; i < 200000; i++) {
		double v;
		uint64_t bits = next_rand();
		switch (i % 4) {
		case 0: /* any bit pattern */
			memcpy(&v, &bits, sizeof(v));
			break;
		case 1: /* durations in seconds, the common sum */
			v = (double)(bits % 100000000000ull) / 1e9;
			break;
		case 2: /* decimals with few digits */
			v = (double)(int64_t)(bits % 2000001) / 1000 - 1000;
			break;
		default: /* integers around 2^53 */
			v = (double)(int64_t)(bits >> 9) - (double)(1ll << 54);
			break;
		}
		size_t n = expose_format_value(v, out);
		assert_true(n > 0 && n < EXPOSE_VALUE_MAX);
		assert_int_equal(strlen(out), n);
		double back = strtod(out, NULL);
		if (isnan(v)) {
			assert_true(isnan(back));
			continue;
		}
		if (back != v) {
			fprintf(stderr, "%.17g formatted as %s\n", v, out);
			fail();
		}
		/* integers below 2^53 never get an exponent */
		if (fabs(v) < 9007199254740992.0 && v == trunc(v))
			assert_null(strpbrk(out, "e."));
	}
}

static const char *gv(double v)
{
	static char out[EXPOSE_VALUE_MAX];
	size_t n = expose_format_float_go(v, out);
	assert_int_equal(n, strlen(out));
	return out;
}

/* Expected strings are Go's strconv.FormatFloat(v, 'g', -1, 64), as Mixer
 * printed "le" labels (istio_request_bytes_bucket{le="1e+06"}). */
static void test_go_float_format(void **state)
{
	assert_string_equal(gv(0.005), "0.005");
	assert_string_equal(gv(0.01), "0.01");
	assert_string_equal(gv(2.5), "2.5");
	assert_string_equal(gv(10), "10");
	assert_string_equal(gv(100000), "100000");
	assert_string_equal(gv(1e6), "1e+06");
	assert_string_equal(gv(1e7), "1e+07");
	assert_string_equal(gv(1234567.5), "1.2345675e+06");
	assert_string_equal(gv(0.0001), "0.0001");
	assert_string_equal(gv(0.00001), "1e-05");
	assert_string_equal(gv(0.1 + 0.2), "0.30000000000000004");
	assert_string_equal(gv(1e100), "1e+100");
	assert_string_equal(gv(0), "0");
	assert_string_equal(gv(-0.0), "-0");
	assert_string_equal(gv(-1.5), "-1.5");
	assert_string_equal(gv(INFINITY), "+Inf");
	assert_string_equal(gv(-INFINITY), "-Inf");
	assert_string_equal(gv(NAN), "NaN");
	/* Next to a power of two the shortest decimal that reads back is
	 * not the correctly rounded one of its length (Go's, from Python's
	 * repr: same digits). */
	assert_string_equal(gv(ldexp(1, -24)), "5.960464477539063e-08");
	assert_string_equal(gv(ldexp(1, -44)), "5.684341886080802e-14");
	assert_string_equal(gv(-ldexp(1, -24)), "-5.960464477539063e-08");
	assert_string_equal(gv(5e-324), "5e-324");
	assert_string_equal(gv(1.7976931348623157e308), "1.7976931348623157e+308");
	assert_string_equal(gv(123456), "123456");
	assert_string_equal(gv(999999.5), "999999.5");
	assert_string_equal(gv(0.000123), "0.000123");
	assert_string_equal(gv(1e21), "1e+21");
}

/* ---- rendering a view ------------------------------------------------------ */

/* A key: each value as u16 length + bytes. */
static size_t make_key(uint8_t *out, const char *const *vals, size_t n)
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		uint16_t l = (uint16_t)strlen(vals[i]);
		memcpy(out + len, &l, 2);
		memcpy(out + len + 2, vals[i], l);
		len += 2u + l;
	}
	return len;
}

static uint64_t dbits(double d)
{
	uint64_t u;
	memcpy(&u, &d, 8);
	return u;
}

/*
 * A view as agg_view_create() makes one: a set with two labels (a row
 * whose values need escaping, a row without the histogram), a set without
 * labels, a family without series. Its text is spelled out below.
 */
struct test_view {
	struct agg_view v;
	struct agg_view_family fams[5];
	struct agg_view_set sets[2];
	struct agg_view_row rows0[3], rows1[1];
	uint8_t keys[3][64];
	uint64_t cells0[3][6], cells1[1][5];
};

static const char *const labels0[] = {"code", "path"};
static const double bounds_a[] = {0.005, 1e6};
static const double bounds_b[] = {1};

static void make_view(struct test_view *t)
{
	memset(t, 0, sizeof(*t));
	const char *const k0[] = {"200", "/a"};
	const char *const k1[] = {"404", "q\"\\\nz"};
	const char *const k2[] = {"500", ""};
	const char *const *keys[] = {k0, k1, k2};
	/* set 0, cells: counter (1), histogram (2 bounds + Inf, sum, count) */
	const uint64_t c0[3][6] = {
		{7, 1, 2, 0, dbits(0.25), 3},
		{1, 0, 0, 1, dbits(2e6), 1},
		{dbits(1.5), 0, 0, 0, 0, 0},
	};
	for (int r = 0; r < 3; r++) {
		t->rows0[r].key = t->keys[r];
		t->rows0[r].key_len = (uint32_t)make_key(t->keys[r], keys[r], 2);
		memcpy(t->cells0[r], c0[r], sizeof(c0[r]));
		t->rows0[r].cells = t->cells0[r];
		t->rows0[r].touched = r == 2 ? 1 : 3;
	}
	/* the counter cell holds double bits */
	t->cells0[0][0] = dbits(7);
	t->cells0[1][0] = dbits(1);
	/* set 1, no labels: gauge (1), histogram (1 bound + Inf, sum, count) */
	const uint64_t c1[5] = {dbits(-2.5), 4, 1, dbits(3.75), 5};
	memcpy(t->cells1[0], c1, sizeof(c1));
	t->rows1[0] = (struct agg_view_row){
		.key = (const uint8_t *)"", .cells = t->cells1[0], .touched = 3};
	t->sets[0] = (struct agg_view_set){
		.labels = labels0, .nlabels = 2, .rows = t->rows0, .nrows = 3};
	t->sets[1] = (struct agg_view_set){.rows = t->rows1, .nrows = 1};
	t->fams[0] = (struct agg_view_family){
		.name = "req_total", .help = "Requests.", .kind = AGG_COUNTER,
		.set = 0, .bit = 0, .cell = 0, .series = 3};
	t->fams[1] = (struct agg_view_family){
		.name = "empty_total", .help = "None.", .kind = AGG_COUNTER,
		.set = 0, .bit = 5, .cell = 0, .series = 0};
	t->fams[2] = (struct agg_view_family){
		.name = "size", .help = "Sizes\nin \\ bytes.",
		.kind = AGG_HISTOGRAM, .bounds = bounds_a, .nb = 2, .set = 0,
		.bit = 1, .cell = 1, .series = 2};
	t->fams[3] = (struct agg_view_family){
		.name = "temp", .help = "Temperature.", .kind = AGG_GAUGE,
		.set = 1, .bit = 0, .cell = 0, .series = 1};
	t->fams[4] = (struct agg_view_family){
		.name = "lat", .help = "Latency.", .kind = AGG_HISTOGRAM,
		.bounds = bounds_b, .nb = 1, .set = 1, .bit = 1, .cell = 1,
		.series = 1};
	t->v = (struct agg_view){
		.fams = t->fams, .nfams = 5, .sets = t->sets, .nsets = 2};
}

static const char view_text[] =
	"# HELP req_total Requests.\n"
	"# TYPE req_total counter\n"
	"req_total{code=\"200\",path=\"/a\"} 7\n"
	"req_total{code=\"404\",path=\"q\\\"\\\\\\nz\"} 1\n"
	"req_total{code=\"500\",path=\"\"} 1.5\n"
	"# HELP size Sizes\\nin \\\\ bytes.\n"
	"# TYPE size histogram\n"
	"size_bucket{code=\"200\",path=\"/a\",le=\"0.005\"} 1\n"
	"size_bucket{code=\"200\",path=\"/a\",le=\"1e+06\"} 3\n"
	"size_bucket{code=\"200\",path=\"/a\",le=\"+Inf\"} 3\n"
	"size_sum{code=\"200\",path=\"/a\"} 0.25\n"
	"size_count{code=\"200\",path=\"/a\"} 3\n"
	"size_bucket{code=\"404\",path=\"q\\\"\\\\\\nz\",le=\"0.005\"} 0\n"
	"size_bucket{code=\"404\",path=\"q\\\"\\\\\\nz\",le=\"1e+06\"} 0\n"
	"size_bucket{code=\"404\",path=\"q\\\"\\\\\\nz\",le=\"+Inf\"} 1\n"
	"size_sum{code=\"404\",path=\"q\\\"\\\\\\nz\"} 2000000\n"
	"size_count{code=\"404\",path=\"q\\\"\\\\\\nz\"} 1\n"
	"# HELP temp Temperature.\n"
	"# TYPE temp gauge\n"
	"temp{} -2.5\n"
	"# HELP lat Latency.\n"
	"# TYPE lat histogram\n"
	"lat_bucket{le=\"1\"} 4\n"
	"lat_bucket{le=\"+Inf\"} 5\n"
	"lat_sum{} 3.75\n"
	"lat_count{} 5\n";

static void test_render_view_text(void **state)
{
	struct test_view t;
	make_view(&t);
	struct expose_buf b = {0};
	assert_int_equal(expose_render_view(&t.v, &b), 0);
	assert_string_equal(expose_buf_cstr(&b), view_text);
	expose_buf_free(&b);
}

/* Read @s to its end in reads of at most @max bytes; the text. */
static char *drain(struct expose_view_stream *s, size_t max, size_t *len)
{
	struct expose_buf b = {0};
	char *buf = malloc(max);
	assert_non_null(buf);
	long n;
	while ((n = expose_view_stream_read(s, buf, max)) > 0) {
		assert_true((size_t)n <= max);
		expose_buf_append(&b, buf, (size_t)n);
	}
	assert_int_equal(n, 0);
	/* and stays at the end */
	assert_int_equal(expose_view_stream_read(s, buf, max), 0);
	free(buf);
	*len = b.len;
	return (char *)expose_buf_cstr(&b);
}

/* Reads of any size, smaller than a line or than a label set, give the
 * same text; so does a label set larger than any read. */
static void test_render_view_in_reads(void **state)
{
	struct test_view t;
	make_view(&t);
	const size_t sizes[] = {1, 7, 60, 100, 333, 4096, 1 << 20};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t len;
		struct expose_view_stream *s = expose_view_stream_new(&t.v);
		assert_non_null(s);
		char *text = drain(s, sizes[i], &len);
		expose_view_stream_free(s);
		assert_string_equal(text, view_text);
		free(text);
	}

	/* a value of 20,000 bytes: its rows are larger than a 4 KiB read */
	static uint8_t bigkey[2 * 20100];
	char *v = malloc(20001);
	assert_non_null(v);
	memset(v, 'x', 20000);
	v[20000] = '\0';
	const char *const kv[] = {"201", v};
	t.rows0[2].key = bigkey;
	t.rows0[2].key_len = (uint32_t)make_key(bigkey, kv, 2);
	t.rows0[2].touched = 3;
	struct expose_buf want = {0};
	assert_int_equal(expose_render_view(&t.v, &want), 0);
	assert_true(want.len > 5 * 20000);
	assert_non_null(memmem(want.data, want.len,
			       "size_count{code=\"201\",path=\"xxx", 30));
	const size_t big[] = {4096, 65536};
	for (size_t i = 0; i < 2; i++) {
		size_t len;
		struct expose_view_stream *s = expose_view_stream_new(&t.v);
		assert_non_null(s);
		char *text = drain(s, big[i], &len);
		expose_view_stream_free(s);
		assert_int_equal(len, want.len);
		assert_memory_equal(text, want.data, len);
		free(text);
	}
	free(v);
	expose_buf_free(&want);
}

/* ---- HTTP --------------------------------------------------------------- */

struct reply {
	int status;
	char headers[4096];
	char *body;
	size_t body_len;
	bool truncated; /* chunked, and the last chunk never came */
};

static void reply_free(struct reply *r)
{
	free(r->body);
	r->body = NULL;
}

/* The value of header @name in @r, copied to a static buffer, or NULL. */
static const char *header(const struct reply *r, const char *name)
{
	static char val[512];
	size_t nl = strlen(name);
	const char *p = r->headers;
	while ((p = strstr(p, "\r\n"))) {
		p += 2;
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			const char *e = strstr(v, "\r\n");
			size_t n = e ? (size_t)(e - v) : strlen(v);
			if (n >= sizeof(val))
				n = sizeof(val) - 1;
			memcpy(val, v, n);
			val[n] = '\0';
			return val;
		}
	}
	return NULL;
}

static int connect_port(int family, uint16_t port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int rc;
	if (family == AF_INET6) {
		struct sockaddr_in6 sa = {.sin6_family = AF_INET6,
					  .sin6_port = htons(port),
					  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	} else {
		struct sockaddr_in sa = {.sin_family = AF_INET,
					 .sin_port = htons(port),
					 .sin_addr.s_addr =
						 htonl(INADDR_LOOPBACK)};
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	}
	assert_int_equal(rc, 0);
	return fd;
}

/* Undo chunked transfer encoding in place: hex size, CRLF, data, CRLF;
 * a zero size ends the body. Without it the body was cut short. */
static void dechunk(struct reply *r)
{
	const char *p = r->body, *end = r->body + r->body_len;
	size_t out = 0;
	r->truncated = true;
	while (p < end) {
		char *e;
		unsigned long long n = strtoull(p, &e, 16);
		const char *crlf = strstr(e, "\r\n");
		if (e == p || !crlf || crlf > end)
			break;
		p = crlf + 2;
		if (n == 0) {
			r->truncated = false;
			break;
		}
		if ((size_t)(end - p) < n + 2)
			break;
		memmove(r->body + out, p, n);
		out += n;
		p += n + 2;
	}
	r->body_len = out;
	r->body[out] = '\0';
}

/*
 * A tiny HTTP/1.1 client: one request with "Connection: close", read to
 * EOF, split status, headers and body (checked against Content-Length).
 */
static void http_request(int family, uint16_t port, const char *method,
			 const char *path, const char *extra_headers,
			 struct reply *r)
{
	int fd = connect_port(family, port);
	char req[1024];
	int n = snprintf(req, sizeof(req),
			 "%s %s HTTP/1.1\r\nHost: localhost\r\n%s"
			 "Connection: close\r\n\r\n",
			 method, path, extra_headers ? extra_headers : "");
	assert_int_equal(write(fd, req, (size_t)n), n);

	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	for (;;) {
		if (cap - len < 4096) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		ssize_t got = read(fd, buf + len, cap - len - 1);
		assert_true(got >= 0); /* a timeout fails the test */
		if (got == 0)
			break;
		len += (size_t)got;
	}
	close(fd);
	buf[len] = '\0';

	char *end = strstr(buf, "\r\n\r\n");
	assert_non_null(end);
	size_t hlen = (size_t)(end - buf) + 2;
	assert_true(hlen < sizeof(r->headers));
	memcpy(r->headers, buf, hlen);
	r->headers[hlen] = '\0';
	assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &r->status), 1);
	r->body_len = len - (hlen + 2);
	r->body = malloc(r->body_len + 1);
	assert_non_null(r->body);
	memcpy(r->body, end + 4, r->body_len);
	r->body[r->body_len] = '\0';
	free(buf);

	const char *cl = header(r, "Content-Length");
	if (cl && strcmp(method, "HEAD") != 0)
		assert_int_equal(strtoull(cl, NULL, 10), r->body_len);
	const char *te = header(r, "Transfer-Encoding");
	r->truncated = false;
	if (te && strcasecmp(te, "chunked") == 0 && strcmp(method, "HEAD"))
		dechunk(r);
}

static char *big_body; /* rendered by h_big, compared after inflating */

static int h_metrics(void *ctx, struct expose_buf *out, int *status,
		     const char **content_type)
{
	*content_type = EXPOSE_CONTENT_TYPE_PROMETHEUS;
	expose_help(out, "up", "Is it up.");
	expose_type(out, "up", "gauge");
	expose_sample(out, "up", NULL, 0, 1);
	return 0;
}

static int h_big(void *ctx, struct expose_buf *out, int *status,
		 const char **content_type)
{
	expose_buf_puts(out, big_body);
	return 0;
}

static int h_fail(void *ctx, struct expose_buf *out, int *status,
		  const char **content_type)
{
	expose_buf_puts(out, "broken\n");
	return -1;
}

static int h_teapot(void *ctx, struct expose_buf *out, int *status,
		    const char **content_type)
{
	*status = 418;
	return 0;
}

/* Blocks until the test posts; proves /healthz is served meanwhile. */
static sem_t slow_entered, slow_release;
static int h_slow(void *ctx, struct expose_buf *out, int *status,
		  const char **content_type)
{
	sem_post(&slow_entered);
	sem_wait(&slow_release);
	expose_buf_puts(out, "slow\n");
	return 0;
}

static int h_ok(void *ctx, struct expose_buf *out, int *status,
		const char **content_type)
{
	expose_buf_puts(out, "ok\n");
	return 0;
}

/* Renders sized_lines lines: the body size changes between requests. */
static int sized_lines;
static int h_sized(void *ctx, struct expose_buf *out, int *status,
		   const char **content_type)
{
	for (int i = 0; i < sized_lines; i++)
		expose_sample(out, "line", NULL, 0, i);
	return 0;
}

/* ---- streamed bodies ---- */

/* Byte @i of every streamed test body: text, not too compressible. */
static char stream_byte(size_t i)
{
	return (i & 63) == 63 ? '\n' : "0123456789abcdef"[(i ^ (i >> 7)) & 15];
}

/* A body of @total bytes in reads of irregular size (1 byte to 64 KiB,
 * at most what the server asks), or a stream that fails halfway. */
struct tstream {
	size_t sent, total, reads;
	bool fail_midway;
};

static atomic_int ends_complete, ends_incomplete;

static long ts_read(void *st, char *buf, size_t max)
{
	struct tstream *t = st;
	if (t->fail_midway && t->sent > t->total / 2)
		return -1;
	size_t n = (t->reads++ * 7919) % 65536 + 1;
	if (n > max)
		n = max;
	if (n > t->total - t->sent)
		n = t->total - t->sent;
	for (size_t i = 0; i < n; i++)
		buf[i] = stream_byte(t->sent + i);
	t->sent += n;
	return (long)n;
}

static void ts_end(void *st, bool complete)
{
	atomic_fetch_add(complete ? &ends_complete : &ends_incomplete, 1);
	free(st);
}

#define STREAM_BODY (3u << 20) /* gunzip() takes up to 4 MiB */
#define HUGE_BODY (1ull << 30)

static int start_stream(size_t total, bool fail, struct expose_stream *out,
			const char **content_type)
{
	struct tstream *t = calloc(1, sizeof(*t));
	if (!t)
		return -1;
	t->total = total;
	t->fail_midway = fail;
	*out = (struct expose_stream){.read = ts_read, .end = ts_end, .st = t};
	*content_type = EXPOSE_CONTENT_TYPE_PROMETHEUS;
	return 0;
}

static int h_stream(void *ctx, const struct expose_request *rq,
		    struct expose_stream *out,
		    int *status, const char **content_type)
{
	return start_stream(STREAM_BODY, false, out, content_type);
}

static int h_stream_huge(void *ctx, const struct expose_request *rq,
			 struct expose_stream *out,
			 int *status, const char **content_type)
{
	return start_stream(HUGE_BODY, false, out, content_type);
}

static int h_stream_fail(void *ctx, const struct expose_request *rq,
			 struct expose_stream *out,
			 int *status, const char **content_type)
{
	return start_stream(STREAM_BODY, true, out, content_type);
}

static int h_stream_refuse(void *ctx, const struct expose_request *rq,
			   struct expose_stream *out,
			   int *status, const char **content_type)
{
	return -1;
}

/* What /stream-busy was last asked; it answers 503. */
static struct {
	int family;
	uint8_t addr[16];
	double timeout_s;
	bool head;
} asked;

static int h_stream_busy(void *ctx, const struct expose_request *rq,
			 struct expose_stream *out, int *status,
			 const char **content_type)
{
	memset(&asked, 0, sizeof asked);
	asked.family = rq->peer ? rq->peer->sa_family : -1;
	if (asked.family == AF_INET)
		memcpy(asked.addr,
		       &((const struct sockaddr_in *)(const void *)rq->peer)
				->sin_addr,
		       4);
	asked.timeout_s = rq->scrape_timeout_s;
	asked.head = rq->head;
	*status = 503;
	return -1;
}

static const struct expose_route routes[] = {
	{"/sized", h_sized, NULL, NULL},
	{"/metrics", h_metrics, NULL, NULL},
	{"/big", h_big, NULL, NULL},
	{"/fail", h_fail, NULL, NULL},
	{"/teapot", h_teapot, NULL, NULL},
	{"/slow", h_slow, NULL, NULL},
	{"/healthz", h_ok, NULL, NULL},
	{"/stream", NULL, NULL, h_stream},
	{"/stream-huge", NULL, NULL, h_stream_huge},
	{"/stream-fail", NULL, NULL, h_stream_fail},
	{"/stream-refuse", NULL, NULL, h_stream_refuse},
	{"/stream-busy", NULL, NULL, h_stream_busy},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static int setup_server(void **state)
{
	struct expose_http *h;
	int rc = expose_http_start("127.0.0.1:0", routes, NROUTES, NULL, &h);
	if (rc != 0)
		return -1;
	*state = h;
	return 0;
}

static int teardown_server(void **state)
{
	expose_http_stop(*state);
	return 0;
}

static void test_http_get_metrics(void **state)
{
	struct expose_http *h = *state;
	uint16_t port = expose_http_port(h);
	assert_true(port != 0);

	struct reply r;
	http_request(AF_INET, port, "GET", "/metrics", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(header(&r, "Content-Type"),
			    "text/plain; version=0.0.4; charset=utf-8");
	assert_string_equal(r.body, "# HELP up Is it up.\n# TYPE up gauge\n"
				    "up 1\n");
	/* small bodies go out plain even when gzip is accepted */
	reply_free(&r);
	http_request(AF_INET, port, "GET", "/metrics",
		     "Accept-Encoding: gzip\r\n", &r);
	assert_null(header(&r, "Content-Encoding"));
	assert_string_equal(r.body, "# HELP up Is it up.\n# TYPE up gauge\n"
				    "up 1\n");
	reply_free(&r);
}

static void test_http_head_has_no_body(void **state)
{
	struct reply r;
	http_request(AF_INET, expose_http_port(*state), "HEAD", "/metrics",
		     NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 0);
	reply_free(&r);
}

static void test_http_404_and_405(void **state)
{
	uint16_t port = expose_http_port(*state);
	struct reply r;
	http_request(AF_INET, port, "GET", "/nope", NULL, &r);
	assert_int_equal(r.status, 404);
	reply_free(&r);
	http_request(AF_INET, port, "GET", "/metrics?x=1", NULL, &r);
	assert_int_equal(r.status, 200); /* the query is not part of the path */
	reply_free(&r);
	http_request(AF_INET, port, "POST", "/metrics", "Content-Length: 3\r\n",
		     &r);
	/* the body "abc" is never sent; the server answers regardless */
	assert_int_equal(r.status, 405);
	assert_non_null(header(&r, "Allow"));
	assert_string_equal(header(&r, "Allow"), "GET, HEAD");
	reply_free(&r);
	http_request(AF_INET, port, "DELETE", "/nope", NULL, &r);
	assert_int_equal(r.status, 405);
	reply_free(&r);
}

static void test_http_handler_status(void **state)
{
	uint16_t port = expose_http_port(*state);
	struct reply r;
	http_request(AF_INET, port, "GET", "/fail", NULL, &r);
	assert_int_equal(r.status, 500);
	assert_string_equal(r.body, "broken\n");
	reply_free(&r);
	http_request(AF_INET, port, "GET", "/teapot", NULL, &r);
	assert_int_equal(r.status, 418);
	assert_int_equal(r.body_len, 0);
	assert_string_equal(header(&r, "Content-Type"),
			    EXPOSE_CONTENT_TYPE_TEXT);
	reply_free(&r);
}

static char *gunzip(const char *in, size_t len, size_t *out_len)
{
	size_t cap = 1 << 22;
	char *out = malloc(cap);
	assert_non_null(out);
	z_stream zs = {0};
	assert_int_equal(inflateInit2(&zs, 16 + MAX_WBITS), Z_OK);
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)len;
	zs.next_out = (Bytef *)out;
	zs.avail_out = (uInt)cap;
	assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
	assert_int_equal(zs.avail_in, 0); /* one member, nothing after it */
	*out_len = zs.total_out;
	inflateEnd(&zs);
	return out;
}

static void test_http_gzip(void **state)
{
	uint16_t port = expose_http_port(*state);
	struct expose_buf b = {0};
	for (int i = 0; i < 20000; i++) {
		struct expose_label l[] = {{"i", "x"}};
		expose_sample(&b, "series_total", l, 1, i);
	}
	big_body = (char *)expose_buf_cstr(&b);
	assert_non_null(big_body);

	const char *accepts[] = {"Accept-Encoding: gzip\r\n",
				 "Accept-Encoding: deflate, gzip;q=0.5\r\n",
				 "Accept-Encoding: br, *\r\n"};
	for (size_t i = 0; i < sizeof(accepts) / sizeof(accepts[0]); i++) {
		struct reply r;
		http_request(AF_INET, port, "GET", "/big", accepts[i], &r);
		assert_int_equal(r.status, 200);
		assert_non_null(header(&r, "Content-Encoding"));
		assert_string_equal(header(&r, "Content-Encoding"), "gzip");
		assert_string_equal(header(&r, "Vary"), "Accept-Encoding");
		assert_true(r.body_len < b.len / 4);
		size_t n;
		char *plain = gunzip(r.body, r.body_len, &n);
		assert_int_equal(n, b.len);
		assert_memory_equal(plain, b.data, n);
		free(plain);
		reply_free(&r);
	}

	const char *refuses[] = {NULL, "Accept-Encoding: identity\r\n",
				 "Accept-Encoding: gzip;q=0\r\n",
				 "Accept-Encoding: gzip;q=0, *\r\n",
				 "Accept-Encoding: *, x-gzip;q=0.000\r\n",
				 "Accept-Encoding: gzipx\r\n"};
	for (size_t i = 0; i < sizeof(refuses) / sizeof(refuses[0]); i++) {
		struct reply r;
		http_request(AF_INET, port, "GET", "/big", refuses[i], &r);
		assert_int_equal(r.status, 200);
		assert_null(header(&r, "Content-Encoding"));
		assert_int_equal(r.body_len, b.len);
		assert_memory_equal(r.body, b.data, b.len);
		reply_free(&r);
	}
	big_body = NULL;
	expose_buf_free(&b);
}

/* Bodies that shrink, grow or empty between requests, plain and gzipped,
 * are exactly what the handler rendered. */
static void test_http_bodies_of_changing_size(void **state)
{
	uint16_t port = expose_http_port(*state);
	const int sizes[] = {50000, 10, 0, 50000, 200000, 3, 1};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		sized_lines = sizes[i];
		struct expose_buf want = {0};
		h_sized(NULL, &want, NULL, NULL);
		struct reply r;
		http_request(AF_INET, port, "GET", "/sized",
			     i % 2 ? "Accept-Encoding: gzip\r\n" : NULL, &r);
		assert_int_equal(r.status, 200);
		size_t n = r.body_len;
		char *got = r.body;
		if (header(&r, "Content-Encoding"))
			got = gunzip(r.body, r.body_len, &n);
		assert_int_equal(n, want.len);
		if (n)
			assert_memory_equal(got, want.data, n);
		if (got != r.body)
			free(got);
		reply_free(&r);
		expose_buf_free(&want);
	}
}

/* Wait (5 s at most) until @counter reaches @want: the server ends a
 * stream when it destroys the response, just after the client sees EOF. */
static void wait_count(atomic_int *counter, int want)
{
	for (int i = 0; i < 500 && atomic_load(counter) < want; i++)
		usleep(10000);
	assert_int_equal(atomic_load(counter), want);
}

static void check_stream_body(const char *body, size_t len)
{
	assert_int_equal(len, STREAM_BODY);
	for (size_t i = 0; i < len; i++)
		if (body[i] != stream_byte(i)) {
			fprintf(stderr, "byte %zu differs\n", i);
			fail();
		}
}

/* A gzipped body read in pieces of any size -- down to a byte, below
 * what igzip writes at once -- is one gzip member of the whole stream,
 * with the stream ended complete; so is an empty body. A stream that
 * fails fails the body, and ends incomplete. */
static void test_body_gzip_in_reads(void **state)
{
	/* more than one piece of the stream (EXPOSE_CHUNK_DEFAULT) */
	const size_t total = 600 * 1024;
	const size_t sizes[] = {1, 7, 223, 4096, 65536, 1 << 20};
	char *buf = malloc(1 << 20);
	char *z = malloc(total + 4096);
	assert_non_null(buf);
	assert_non_null(z);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (size_t len = 0; len <= total; len += total) {
			int done = atomic_load(&ends_complete);
			struct tstream *t = calloc(1, sizeof(*t));
			assert_non_null(t);
			t->total = len;
			struct expose_stream src = {
				.read = ts_read, .end = ts_end, .st = t};
			struct expose_body *b = expose_body_new(&src, true);
			assert_non_null(b);
			size_t zlen = 0;
			long n;
			while ((n = expose_body_read(b, buf, sizes[i])) > 0) {
				assert_true((size_t)n <= sizes[i]);
				assert_true(zlen + (size_t)n <= total + 4096);
				memcpy(z + zlen, buf, (size_t)n);
				zlen += (size_t)n;
			}
			assert_int_equal(n, 0);
			/* the end stays the end */
			assert_int_equal(expose_body_read(b, buf, sizes[i]), 0);
			expose_body_free(b);
			assert_int_equal(atomic_load(&ends_complete), done + 1);
			size_t plen;
			char *plain = gunzip(z, zlen, &plen);
			assert_int_equal(plen, len);
			for (size_t j = 0; j < plen; j++)
				assert_int_equal(plain[j], stream_byte(j));
			free(plain);
		}
	}

	int cut = atomic_load(&ends_incomplete);
	struct tstream *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->total = total;
	t->fail_midway = true;
	struct expose_stream src = {.read = ts_read, .end = ts_end, .st = t};
	struct expose_body *b = expose_body_new(&src, true);
	assert_non_null(b);
	long n;
	while ((n = expose_body_read(b, buf, 4096)) > 0)
		;
	assert_int_equal(n, -1);
	expose_body_free(b);
	assert_int_equal(atomic_load(&ends_incomplete), cut + 1);
	free(z);
	free(buf);
}

/* A streamed body arrives whole, chunked, plain or gzipped; the stream is
 * ended as complete each time, as incomplete for HEAD. */
static void test_http_stream_plain_and_gzip(void **state)
{
	uint16_t port = expose_http_port(*state);
	int done = atomic_load(&ends_complete);
	int cut = atomic_load(&ends_incomplete);
	struct reply r;

	http_request(AF_INET, port, "GET", "/stream", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(header(&r, "Transfer-Encoding"), "chunked");
	assert_null(header(&r, "Content-Encoding"));
	assert_string_equal(header(&r, "Content-Type"),
			    EXPOSE_CONTENT_TYPE_PROMETHEUS);
	assert_false(r.truncated);
	check_stream_body(r.body, r.body_len);
	reply_free(&r);
	wait_count(&ends_complete, ++done);

	http_request(AF_INET, port, "GET", "/stream",
		     "Accept-Encoding: gzip\r\n", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(header(&r, "Content-Encoding"), "gzip");
	assert_string_equal(header(&r, "Vary"), "Accept-Encoding");
	assert_false(r.truncated);
	assert_true(r.body_len < STREAM_BODY / 2);
	size_t n;
	char *plain = gunzip(r.body, r.body_len, &n);
	check_stream_body(plain, n);
	free(plain);
	reply_free(&r);
	wait_count(&ends_complete, ++done);

	/* HEAD: GET's headers, but a GET's length is unknown until its end,
	 * so no Content-Length (RFC 9110 8.6: only the GET body's own), and
	 * no chunked framing, whose last chunk would be a stray body. */
	for (int gz = 0; gz < 2; gz++) {
		http_request(AF_INET, port, "HEAD", "/stream",
			     gz ? "Accept-Encoding: gzip\r\n" : NULL, &r);
		assert_int_equal(r.status, 200);
		assert_int_equal(r.body_len, 0);
		assert_null(header(&r, "Content-Length"));
		assert_null(header(&r, "Transfer-Encoding"));
		if (gz)
			assert_string_equal(header(&r, "Content-Encoding"),
					    "gzip");
		else
			assert_null(header(&r, "Content-Encoding"));
		reply_free(&r);
		wait_count(&ends_incomplete, ++cut);
	}

	http_request(AF_INET, port, "GET", "/stream-refuse", NULL, &r);
	assert_int_equal(r.status, 500);
	reply_free(&r);
	assert_int_equal(atomic_load(&ends_complete), done);
	assert_int_equal(atomic_load(&ends_incomplete), cut);
}

/* A streaming route learns who asks (the peer) and how long Prometheus
 * waits (X-Prometheus-Scrape-Timeout-Seconds, when it is a positive
 * number); its 503 says when to come back. */
static void test_http_stream_request(void **state)
{
	uint16_t port = expose_http_port(*state);
	static const struct {
		const char *hdr;
		double want;
	} cases[] = {
		{NULL, 0},
		{"X-Prometheus-Scrape-Timeout-Seconds: 7.5\r\n", 7.5},
		{"x-prometheus-scrape-timeout-seconds: 10\r\n", 10},
		{"X-Prometheus-Scrape-Timeout-Seconds: 0\r\n", 0},
		{"X-Prometheus-Scrape-Timeout-Seconds: -3\r\n", 0},
		{"X-Prometheus-Scrape-Timeout-Seconds: 5s\r\n", 0},
		{"X-Prometheus-Scrape-Timeout-Seconds: inf\r\n", 0},
		{"X-Prometheus-Scrape-Timeout-Seconds: nan\r\n", 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct reply r;
		http_request(AF_INET, port, "GET", "/stream-busy", cases[i].hdr,
			     &r);
		assert_int_equal(r.status, 503);
		assert_string_equal(header(&r, "Retry-After"), "1");
		assert_int_equal(asked.family, AF_INET);
		assert_memory_equal(asked.addr, "\x7f\0\0\x01", 4);
		assert_true(asked.timeout_s == cases[i].want);
		assert_false(asked.head);
		reply_free(&r);
	}
	struct reply r;
	http_request(AF_INET, port, "HEAD", "/stream-busy", NULL, &r);
	assert_true(asked.head);
	reply_free(&r);
}

/* A stream that fails halfway cuts the response short: no last chunk, so
 * the client can tell; the stream ends as incomplete. */
static void test_http_stream_failure_truncates(void **state)
{
	uint16_t port = expose_http_port(*state);
	int cut = atomic_load(&ends_incomplete);
	const char *enc[] = {NULL, "Accept-Encoding: gzip\r\n"};
	for (int i = 0; i < 2; i++) {
		struct reply r;
		http_request(AF_INET, port, "GET", "/stream-fail", enc[i], &r);
		assert_int_equal(r.status, 200);
		assert_true(r.truncated);
		reply_free(&r);
		wait_count(&ends_incomplete, ++cut);
	}
}

/* A client that goes away mid-body: the server stops pulling and ends the
 * stream (a scrape's view is freed then, not after 1 GB). */
static void test_http_stream_client_gone(void **state)
{
	uint16_t port = expose_http_port(*state);
	int cut = atomic_load(&ends_incomplete);
	int fd = connect_port(AF_INET, port);
	const char req[] = "GET /stream-huge HTTP/1.1\r\nHost: x\r\n\r\n";
	assert_int_equal(write(fd, req, sizeof(req) - 1), sizeof(req) - 1);
	static char buf[65536];
	size_t got = 0;
	while (got < (1u << 20)) {
		ssize_t n = read(fd, buf, sizeof(buf));
		assert_true(n > 0);
		got += (size_t)n;
	}
	close(fd);
	wait_count(&ends_incomplete, cut + 1);
}

static void *slow_client(void *arg)
{
	struct reply *r = arg;
	http_request(AF_INET, (uint16_t)r->status, "GET", "/slow", NULL, r);
	return NULL;
}

/* A long render (a big scrape) must not hold up a health probe: the
 * reason for the thread pool. */
static void test_http_slow_handler_does_not_block_others(void **state)
{
	uint16_t port = expose_http_port(*state);
	assert_int_equal(sem_init(&slow_entered, 0, 0), 0);
	assert_int_equal(sem_init(&slow_release, 0, 0), 0);
	struct reply slow = {.status = port};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, slow_client, &slow), 0);
	sem_wait(&slow_entered);

	struct reply r;
	http_request(AF_INET, port, "GET", "/healthz", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "ok\n");
	reply_free(&r);

	sem_post(&slow_release);
	pthread_join(t, NULL);
	assert_int_equal(slow.status, 200);
	assert_string_equal(slow.body, "slow\n");
	reply_free(&slow);
	sem_destroy(&slow_entered);
	sem_destroy(&slow_release);
}

static void test_http_bad_addresses(void **state)
{
	struct expose_http *h = NULL;
	const char *bad[] = {
		"",	  "127.0.0.1:", "127.0.0.1:x",	    "1.2.3.4:65536",
		"::1:80", "[::1]80",	"127.0.0.1:123456", NULL};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(
			expose_http_start(bad[i], routes, NROUTES, NULL, &h),
			-EINVAL);
	assert_null(h);
}

static void test_http_port_in_use_then_freed_by_stop(void **state)
{
	struct expose_http *a, *b;
	char addr[64];

	assert_int_equal(
		expose_http_start("127.0.0.1:0", routes, NROUTES, NULL, &a), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", expose_http_port(a));
	assert_int_equal(expose_http_start(addr, routes, NROUTES, NULL, &b),
			 -EADDRINUSE);
	expose_http_stop(a);
	/* stop closed the listening socket: the port is free again */
	assert_int_equal(expose_http_start(addr, routes, NROUTES, NULL, &b), 0);
	struct reply r;
	http_request(AF_INET, expose_http_port(b), "GET", "/healthz", NULL, &r);
	assert_int_equal(r.status, 200);
	reply_free(&r);
	expose_http_stop(b);
	expose_http_stop(NULL);
}

static bool have_ipv6_loopback(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6,
				  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

static void test_http_all_interfaces_and_ipv6(void **state)
{
	struct expose_http *h;
	struct reply r;

	/* ":0" and "0" listen everywhere: reachable over IPv4 loopback */
	const char *any[] = {":0", "0"};
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(
			expose_http_start(any[i], routes, NROUTES, NULL, &h),
			0);
		http_request(AF_INET, expose_http_port(h), "GET", "/healthz",
			     NULL, &r);
		assert_int_equal(r.status, 200);
		reply_free(&r);
		if (have_ipv6_loopback()) {
			http_request(AF_INET6, expose_http_port(h), "GET",
				     "/healthz", NULL, &r);
			assert_int_equal(r.status, 200);
			reply_free(&r);
		}
		expose_http_stop(h);
	}
	if (!have_ipv6_loopback())
		return;
	assert_int_equal(
		expose_http_start("[::1]:0", routes, NROUTES, NULL, &h), 0);
	http_request(AF_INET6, expose_http_port(h), "GET", "/metrics", NULL,
		     &r);
	assert_int_equal(r.status, 200);
	reply_free(&r);
	expose_http_stop(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_help_escapes_backslash_and_newline),
		cmocka_unit_test(test_type_line),
		cmocka_unit_test(test_label_value_escapes),
		cmocka_unit_test(test_sample_lines),
		cmocka_unit_test(test_buf_grows_and_printf),
		cmocka_unit_test(test_u64),
		cmocka_unit_test(test_value_format),
		cmocka_unit_test(test_value_format_roundtrips),
		cmocka_unit_test(test_go_float_format),
		cmocka_unit_test(test_render_view_text),
		cmocka_unit_test(test_render_view_in_reads),
		cmocka_unit_test_setup_teardown(test_http_get_metrics,
						setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_http_head_has_no_body,
						setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_http_404_and_405,
						setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_http_handler_status,
						setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_http_gzip, setup_server,
						teardown_server),
		cmocka_unit_test_setup_teardown(
			test_http_bodies_of_changing_size, setup_server,
			teardown_server),
		cmocka_unit_test(test_body_gzip_in_reads),
		cmocka_unit_test_setup_teardown(test_http_stream_plain_and_gzip,
						setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_http_stream_request,
						setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(
			test_http_stream_failure_truncates, setup_server,
			teardown_server),
		cmocka_unit_test_setup_teardown(test_http_stream_client_gone,
						setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(
			test_http_slow_handler_does_not_block_others,
			setup_server, teardown_server),
		cmocka_unit_test(test_http_bad_addresses),
		cmocka_unit_test(test_http_port_in_use_then_freed_by_stop),
		cmocka_unit_test(test_http_all_interfaces_and_ipv6),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
