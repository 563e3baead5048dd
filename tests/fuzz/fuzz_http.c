/*
 * fuzz_http -- what mixd's HTTP servers make of a request: the real server
 * (expose_http_start(), libmicrohttpd, the route table, GET/HEAD only,
 * the Accept-Encoding reading, gzip by zlib for a buffered body and by
 * ISA-L for a streamed one) on 127.0.0.1, a connection per input.
 *
 * Input: byte 0 picks the path (bits 0-1: a buffered body over the gzip
 * threshold, one under it, a streamed body, an unknown path), HEAD or GET
 * (bit 2) and the mode (raw when bits 3 and 4 are set):
 *   - Accept-Encoding: the rest is the header's value (CR, LF and NUL
 *     taken out). The answer is 200 (404 for the unknown path) with
 *     "Vary: Accept-Encoding"; its body, undone from gzip when it says
 *     Content-Encoding: gzip, and from chunked transfer coding, is the
 *     route's body byte for byte (none for HEAD); it is gzipped only when
 *     the value names gzip or "*", and, for a value that is well formed
 *     (RFC 9110, 12.5.3: codings with an optional weight), exactly when
 *     gzip is acceptable by that section (the best weight of gzip and
 *     x-gzip, else of "*", above 0) and the body is streamed or large
 *     enough. A request libmicrohttpd refuses (400) is not judged.
 *   - raw: the rest is the request, sent as it is; whatever comes back
 *     starts as a status line does, and the server still answers a plain
 *     GET after it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "expose/expose.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GZIP_MIN 1024

static struct expose_http *srv;
static uint16_t port;
static char big[4000], stream_body[5 * 4096 + 123];

/* ---- the routes ---------------------------------------------------------- */

static int serve_big(void *ctx, struct expose_buf *out, int *status,
		     const char **ctype)
{
	expose_buf_append(out, big, sizeof big);
	return 0;
}

static int serve_small(void *ctx, struct expose_buf *out, int *status,
		       const char **ctype)
{
	expose_buf_puts(out, "ok\n");
	return 0;
}

struct piece_state {
	size_t at;
};

static long piece_read(void *st, char *buf, size_t max)
{
	struct piece_state *p = st;
	size_t n = sizeof stream_body - p->at;
	if (n > max)
		n = max;
	if (n > 4096) /* in pieces, as a scrape renders */
		n = 4096;
	memcpy(buf, stream_body + p->at, n);
	p->at += n;
	return (long)n;
}

static void piece_end(void *st, bool complete)
{
	free(st);
}

static int serve_stream(void *ctx, const struct expose_request *rq,
			struct expose_stream *out,
			int *status, const char **ctype)
{
	struct piece_state *p = calloc(1, sizeof *p);
	if (!p)
		return -1;
	out->read = piece_read;
	out->end = piece_end;
	out->st = p;
	return 0;
}

static void setup(void)
{
	static const struct expose_route routes[] = {
		{"/big", serve_big, NULL, NULL},
		{"/small", serve_small, NULL, NULL},
		{"/stream", NULL, NULL, serve_stream},
	};
	struct expose_http_options o = {.threads = 2,
					.idle_timeout_s = 5,
					.gzip_min_bytes = GZIP_MIN,
					.name = "fuzz"};
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = "metric_total{a=\"b\"} 42\n"[i % 24];
	for (size_t i = 0; i < sizeof stream_body; i++)
		stream_body[i] = (char)('a' + (i * 7 + i / 13) % 26);
	if (expose_http_start("127.0.0.1:0", routes, 3, &o, &srv) != 0)
		abort();
	port = expose_http_port(srv);
}

/* ---- one exchange -----------------------------------------------------------
 */

static char resp[1 << 20];
static size_t resp_len;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* connect(), with a signal (libFuzzer's timers) in the middle of it: the
 * connection goes on, and is waited for. False with errno set. */
static bool connected(int s, const struct sockaddr_in *sa)
{
	if (connect(s, (const struct sockaddr *)sa, sizeof *sa) == 0)
		return true;
	if (errno != EINTR)
		return false;
	struct pollfd p = {s, POLLOUT, 0};
	int rc;
	while ((rc = poll(&p, 1, 4000)) < 0 && errno == EINTR)
		;
	int err = 0;
	socklen_t len = sizeof err;
	if (rc != 1 || getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = rc == 0 ? ETIMEDOUT : errno;
	errno = err;
	return err == 0;
}

/*
 * Send @req and read the answer until the server closes. A raw request
 * (@raw) may be incomplete or ask to keep the connection: the writing
 * side is closed after it, and reading stops after 30 ms of silence
 * (libmicrohttpd keeps a half-closed connection until its idle timeout).
 */
static void exchange(const char *req, size_t len, bool raw)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	/* Hundreds of exchanges a second leave their ports in TIME_WAIT, and
	 * loopback runs out of them within a run (EADDRNOTAVAIL): then the
	 * next source address of 127/8 is used, each with ports of its own. */
	static uint8_t src = 1;
	int s = -1;
	for (int tries = 0; tries < 254; tries++) {
		s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0)
			abort();
		struct sockaddr_in from = {
			.sin_family = AF_INET,
			.sin_addr.s_addr = htonl(0x7f000000u | src)};
		if (bind(s, (struct sockaddr *)&from, sizeof from) == 0 &&
		    connected(s, &sa))
			break;
		if (errno != EADDRNOTAVAIL && errno != EADDRINUSE) {
			fprintf(stderr, "fuzz_http: connect: %s\n",
				strerror(errno));
			abort(); /* the server refused: a bug */
		}
		close(s);
		s = -1;
		src = (uint8_t)(src % 254 + 1);
	}
	if (s < 0)
		abort();
	for (size_t off = 0; off < len;) {
		ssize_t k = send(s, req + off, len - off, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break; /* the server answered and closed already */
		off += (size_t)k;
	}
	if (raw)
		shutdown(s, SHUT_WR);
	resp_len = 0;
	int64_t deadline = now_ms() + (raw ? 30 : 4000);
	for (;;) {
		struct pollfd p = {s, POLLIN, 0};
		int64_t left = deadline - now_ms();
		if (left <= 0 && raw)
			break;
		if (left <= 0)
			abort(); /* no answer, and no close */
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		ssize_t k = recv(s, resp + resp_len, sizeof resp - resp_len, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == ECONNRESET)
			break;
		if (k <= 0)
			break;
		resp_len += (size_t)k;
		if (raw)
			deadline = now_ms() + 30;
		if (resp_len == sizeof resp)
			abort(); /* more than any route's body */
	}
	/* no TIME_WAIT on our side: a new connection per input */
	struct linger l = {1, 0};
	setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
	close(s);
}

/* A parsed answer. */
struct answer {
	int status;
	bool chunked, gzip, vary;
	long clen; /* -1: none */
	const char *body;
	size_t body_len;
};

static bool header_is(const char *line, size_t n, const char *name,
		      const char **val)
{
	size_t nl = strlen(name);
	if (n <= nl || line[nl] != ':' || strncasecmp(line, name, nl))
		return false;
	*val = line + nl + 1;
	while (**val == ' ' || **val == '\t')
		(*val)++;
	return true;
}

static void parse(struct answer *a)
{
	memset(a, 0, sizeof *a);
	a->clen = -1;
	resp[resp_len < sizeof resp ? resp_len : sizeof resp - 1] = 0;
	if (resp_len < 12 || memcmp(resp, "HTTP/1.", 7) || resp[8] != ' ' ||
	    resp[9] < '1' || resp[9] > '5' || resp[10] < '0' ||
	    resp[10] > '9' || resp[11] < '0' || resp[11] > '9')
		abort(); /* not a status line */
	a->status = atoi(resp + 9);
	char *end = memmem(resp, resp_len, "\r\n\r\n", 4);
	if (!end)
		abort(); /* headers never ended */
	for (char *l = strstr(resp, "\r\n") + 2; l < end;) {
		char *e = strstr(l, "\r\n");
		const char *v;
		size_t n = (size_t)(e - l);
		if (header_is(l, n, "Content-Encoding", &v))
			a->gzip = !strncasecmp(v, "gzip", 4);
		else if (header_is(l, n, "Transfer-Encoding", &v))
			a->chunked = !strncasecmp(v, "chunked", 7);
		else if (header_is(l, n, "Content-Length", &v))
			a->clen = atol(v);
		else if (header_is(l, n, "Vary", &v))
			a->vary = !strncasecmp(v, "Accept-Encoding", 15);
		l = e + 2;
	}
	a->body = end + 4;
	a->body_len = resp_len - (size_t)(a->body - resp);
}

/* Undo chunked transfer coding in place; false when it is broken. */
static bool unchunk(struct answer *a)
{
	const char *p = a->body, *e = a->body + a->body_len;
	char *out = (char *)a->body;
	size_t n = 0;
	for (;;) {
		char *q;
		unsigned long sz = strtoul(p, &q, 16);
		if (q == p || q >= e)
			return false;
		const char *crlf = memmem(q, (size_t)(e - q), "\r\n", 2);
		if (!crlf)
			return false;
		p = crlf + 2;
		if (sz == 0)
			break;
		if ((size_t)(e - p) < sz + 2 || memcmp(p + sz, "\r\n", 2))
			return false;
		memmove(out + n, p, sz);
		n += sz;
		p += sz + 2;
	}
	a->body_len = n;
	return true;
}

static bool same_gunzipped(const char *z, size_t zl, const char *want,
			   size_t wl)
{
	static char out[64 * 1024];
	z_stream zs;
	memset(&zs, 0, sizeof zs);
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		abort();
	zs.next_in = (Bytef *)(uintptr_t)z;
	zs.avail_in = (uInt)zl;
	zs.next_out = (Bytef *)out;
	zs.avail_out = sizeof out;
	int rc = inflate(&zs, Z_FINISH);
	size_t n = zs.total_out;
	bool whole = zs.avail_in == 0;
	inflateEnd(&zs);
	return rc == Z_STREAM_END && whole && n == wl && !memcmp(out, want, wl);
}

/* ---- Accept-Encoding by RFC 9110, for well-formed values --------------------
 */

static bool tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/*
 * 1: gzip acceptable, 0: not, -1: @v is not a well-formed Accept-Encoding
 * value (#( codings [ weight ] ), weight = OWS ";" OWS "q=" qvalue).
 */
static int rfc_accepts_gzip(const char *v)
{
	int gz = -1, star = -1; /* best weight in thousandths; -1: unnamed */
	const char *p = ows(v);
	while (*p) {
		if (*p == ',') { /* empty list elements are allowed */
			p = ows(p + 1);
			continue;
		}
		const char *tok = p;
		while (tchar(*p))
			p++;
		size_t tl = (size_t)(p - tok);
		if (tl == 0)
			return -1;
		int q = 1000;
		p = ows(p);
		while (*p == ';') {
			p = ows(p + 1);
			if ((*p != 'q' && *p != 'Q') || p[1] != '=')
				return -1;
			p += 2;
			if (*p == '0') {
				q = 0;
				p++;
				if (*p == '.') {
					p++;
					for (int i = 0, m = 100;
					     i < 3 && *p >= '0' && *p <= '9';
					     i++, m /= 10)
						q += (*p++ - '0') * m;
				}
			} else if (*p == '1') {
				q = 1000;
				p++;
				if (*p == '.') {
					p++;
					for (int i = 0; i < 3 && *p == '0'; i++)
						p++;
				}
			} else {
				return -1;
			}
			p = ows(p);
		}
		if (*p && *p != ',')
			return -1;
		bool isgz = (tl == 4 && !strncasecmp(tok, "gzip", 4)) ||
			    (tl == 6 && !strncasecmp(tok, "x-gzip", 6));
		bool isstar = tl == 1 && *tok == '*';
		if (isgz && q > gz)
			gz = q;
		if (isstar && q > star)
			star = q;
	}
	return gz >= 0 ? gz > 0 : star > 0;
}

/* ---- the input
 * --------------------------------------------------------------- */

static void check_alive(void)
{
	static const char req[] = "GET /small HTTP/1.1\r\nHost: fuzz\r\n"
				  "Connection: close\r\n\r\n";
	struct answer a;
	exchange(req, sizeof req - 1, false);
	parse(&a);
	if (a.status != 200)
		abort(); /* the server stopped serving */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const paths[4] = {"/big", "/small", "/stream",
					     "/nope"};
	static char req[16384], value[8192];
	if (!srv)
		setup();
	if (size < 1)
		return 0;
	unsigned route = data[0] & 3;
	bool head = data[0] & 4, raw = (data[0] & 0x18) == 0x18;
	const char *p = (const char *)data + 1;
	size_t n = size - 1;

	if (raw) {
		/* nothing, or a status line first (the rest may be cut off
		 * by a close, or by our wait) */
		exchange(p, n, true);
		if (memcmp(resp, "HTTP/1.", resp_len < 7 ? resp_len : 7) ||
		    (resp_len >= 10 &&
		     (resp[8] != ' ' || resp[9] < '1' || resp[9] > '5')))
			abort();
		check_alive();
		return 0;
	}

	size_t vl = 0;
	for (size_t i = 0; i < n && vl < sizeof value - 1; i++)
		if (p[i] != '\r' && p[i] != '\n' && p[i] != 0)
			value[vl++] = p[i];
	value[vl] = 0;
	int len = snprintf(req, sizeof req,
			   "%s %s HTTP/1.1\r\nHost: fuzz\r\n"
			   "Accept-Encoding: %s\r\nConnection: close\r\n\r\n",
			   head ? "HEAD" : "GET", paths[route], value);
	if (len < 0 || (size_t)len >= sizeof req)
		return 0;
	exchange(req, (size_t)len, false);
	struct answer a;
	parse(&a);
	if (a.status == 400 || a.status == 413 || a.status == 431)
		return 0; /* libmicrohttpd's refusal: not ours to judge */
	if (route == 3) {
		if (a.status != 404)
			abort();
		return 0;
	}
	if (a.status != 200 || !a.vary)
		abort();
	if (a.chunked && !unchunk(&a))
		abort();
	if (head && a.body_len)
		abort(); /* HEAD has no body */
	if (a.clen >= 0 && !head && (size_t)a.clen != a.body_len)
		abort();

	/* which body, and is it compressed as it should be? */
	const char *want = route == 0 ? big : route == 1 ? "ok\n" : stream_body;
	size_t wl = route == 0	 ? sizeof big
		    : route == 1 ? 3
				 : sizeof stream_body;
	bool large = route == 2 || wl >= GZIP_MIN;
	/* MHD drops the value's surrounding whitespace */
	const char *v = ows(value);
	char trimmed[sizeof value];
	size_t tl = strlen(v);
	while (tl && (v[tl - 1] == ' ' || v[tl - 1] == '\t'))
		tl--;
	memcpy(trimmed, v, tl);
	trimmed[tl] = 0;
	bool named = strcasestr(trimmed, "gzip") || strchr(trimmed, '*');
	if (a.gzip && (!large || !named))
		abort(); /* gzipped without being asked */
	int rfc = rfc_accepts_gzip(trimmed);
	if (rfc >= 0 && a.gzip != (rfc && large))
		abort(); /* not what RFC 9110 says of this value */
	if (head)
		return 0;
	if (a.gzip ? !same_gunzipped(a.body, a.body_len, want, wl)
		   : a.body_len != wl || memcmp(a.body, want, wl))
		abort(); /* not the route's body */
	return 0;
}
