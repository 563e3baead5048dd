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

#include "expose/expose.h"

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

static void test_buf_grows_and_printf(void **state)
{
	struct expose_buf b;
	expose_buf_init(&b);
	for (int i = 0; i < 100000; i++)
		expose_u64(&b, (uint64_t)i);
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
	expose_u64(&b, 0);
	expose_buf_putc(&b, ' ');
	expose_u64(&b, 9);
	expose_buf_putc(&b, ' ');
	expose_u64(&b, 10);
	expose_buf_putc(&b, ' ');
	expose_u64(&b, UINT64_MAX);
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
}

/* ---- HTTP --------------------------------------------------------------- */

struct reply {
	int status;
	char headers[4096];
	char *body;
	size_t body_len;
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

static const struct expose_route routes[] = {
	{"/sized", h_sized, NULL},   {"/metrics", h_metrics, NULL},
	{"/big", h_big, NULL},	     {"/fail", h_fail, NULL},
	{"/teapot", h_teapot, NULL}, {"/slow", h_slow, NULL},
	{"/healthz", h_ok, NULL},
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

/* A route reuses its last response's buffer: a body that shrinks, grows
 * or empties must still be exactly what the handler rendered. */
static void test_http_body_reuse_across_requests(void **state)
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
			test_http_body_reuse_across_requests, setup_server,
			teardown_server),
		cmocka_unit_test_setup_teardown(
			test_http_slow_handler_does_not_block_others,
			setup_server, teardown_server),
		cmocka_unit_test(test_http_bad_addresses),
		cmocka_unit_test(test_http_port_in_use_then_freed_by_stop),
		cmocka_unit_test(test_http_all_interfaces_and_ipv6),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
