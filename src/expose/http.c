/*
 * HTTP servers on libmicrohttpd: route table, GET/HEAD only, gzip.
 *
 * Threading model: MHD_USE_INTERNAL_POLLING_THREAD with a small thread pool
 * (MHD_OPTION_THREAD_POOL_SIZE, default 2), epoll where available.
 *  - Not a single polling thread: a large scrape takes a long time
 *    (hundreds of ms at millions of series, for the view and the
 *    rendering as the body is sent); with one thread every /healthz probe
 *    from Marathon would wait behind it and a slow scrape could fail the
 *    health check.
 *  - Not a thread per connection: that makes the thread count a function of
 *    the clients, and memory must stay bounded (DESIGN.md invariant 7);
 *    together with MHD_OPTION_CONNECTION_LIMIT a pool bounds both.
 *
 * Large bodies (a scrape of millions of series) are streamed: the route
 * hands over a struct expose_stream and MHD has it write the body into the
 * connection's send buffer as the socket drains
 * (MHD_create_response_from_callback), so a response never exists whole
 * in memory; when the client accepts gzip the stream writes into the
 * input of one deflate stream instead.
 *
 * Two deflaters: a streamed body (a scrape, gigabytes at 100,000 label
 * sets) goes through ISA-L's igzip, which compresses this text several
 * times faster than zlib's fastest level, to the same size (bench_agg's
 * gzipped scrape); Prometheus asks for gzip on every scrape. Buffered bodies (self-metrics, health, a
 * few KB) keep zlib, whose cost there is microseconds.
 *
 * The listening socket is created here, not by MHD, so that a bind failure
 * reports the real errno (EADDRINUSE, EACCES, ...) and so that the port
 * chosen for port 0 is known from getsockname() at once. MHD takes the
 * socket over (MHD_OPTION_LISTEN_SOCKET) and closes it in MHD_stop_daemon().
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <isa-l/igzip_lib.h>
#include <microhttpd.h>
#include <zlib.h>

#include "expose/expose.h"

#define DEFAULT_THREADS 2
/* Connections a port takes, and from one client address: a client that
 * holds its connections open (headers sent a byte at a time, a body never
 * read) takes at most 16 of 256, so that it takes 16 addresses to keep
 * Prometheus and the health checks out. An idle connection costs the
 * pages of its pool it touched (CONNECTION_MEMORY) and its socket. */
#define DEFAULT_MAX_CONNECTIONS 256
#define PER_ADDRESS_CONNECTIONS 16
#define DEFAULT_IDLE_TIMEOUT_S 30
#define DEFAULT_GZIP_MIN 1024
#define LISTEN_BACKLOG 128

/* zlib takes lengths as uInt; a buffered body above this is sent
 * uncompressed. Large bodies are streamed, and deflated piece by piece. */
#define GZIP_MAX_BYTES ((size_t)UINT_MAX / 2)

/* MHD's buffer for a streamed response sent without chunked encoding
 * (HTTP/1.0); with chunking it fills the connection's own buffer. */
#define STREAM_BLOCK (64 * 1024)
/* A connection's kernel buffer for what it is sent (Linux doubles it):
 * bounded, so that a slow reader pins little kernel memory, and a
 * streamed body is rendered, and its route's deadline checked, as the
 * client takes it rather than megabytes ahead. More than a LAN's
 * bandwidth-delay product. */
#define SEND_BUFFER (256 * 1024)

/* Each connection's memory pool, which holds the request and, for a
 * chunked (streamed) response, the buffer each send() goes out of. MHD's
 * default, 32 KiB, makes a 2 GB scrape some 70,000 sends; this makes it
 * under 10,000. The pool is mapped, so an idle or small connection keeps
 * only the pages it touched. */
#define CONNECTION_MEMORY EXPOSE_CHUNK_DEFAULT

struct route {
	char *path;
	expose_handler_fn fn;
	expose_stream_fn stream;
	void *ctx;
};

/*
 * igzip's level 1 with its "small" level buffer (84 KiB), which holds the
 * pending tokens of a block: the fastest level that compresses the text
 * as well as zlib's level 1 (bench_agg's gzipped scrape, bench/README.md).
 * The other levels and libdeflate were compared once, by hand, when the
 * deflater was chosen: level 0 larger, level 3 far slower.
 */
#define IGZIP_LEVEL 1
#define IGZIP_LEVEL_BUF ISAL_DEF_LVL1_SMALL

/* The gzip state of a streamed body, one allocation: ~420 KiB. */
struct gz {
	struct isal_zstream zs;
	uint8_t level_buf[IGZIP_LEVEL_BUF];
	char in[EXPOSE_CHUNK_DEFAULT]; /* the stream renders into this */
};

/* A streamed body: the route's stream and, with gzip, its deflater. */
struct expose_body {
	struct expose_stream src;
	bool src_done; /* read() returned 0 */
	bool complete; /* the whole body was handed out */
	bool z_done;   /* the gzip trailer was handed out */
	struct gz *gz; /* NULL: plain */
};

struct expose_http {
	struct MHD_Daemon *mhd;
	struct route *routes;
	size_t nroutes;
	size_t gzip_min;
	uint16_t port;
	char name[32];
	/* log_mhd()'s: the second it last said something (-1: none yet), and
	 * what it did not say since. */
	pthread_mutex_t log_lock;
	time_t log_s;
	uint64_t log_quiet;
};

/*
 * libmicrohttpd's messages, at most one a second per server: it has one
 * for every connection a client drops or the limit refuses, and anyone
 * who can connect could otherwise write thousands of lines a second to
 * mixd's stderr (a sandbox's disk). The next line said counts those not.
 */
static void log_mhd(void *cls, const char *fmt, va_list ap)
{
	struct expose_http *h = cls;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);

	pthread_mutex_lock(&h->log_lock);
	if (now.tv_sec == h->log_s) {
		h->log_quiet++;
		pthread_mutex_unlock(&h->log_lock);
		return;
	}
	h->log_s = now.tv_sec;
	uint64_t quiet = h->log_quiet;
	h->log_quiet = 0;
	char msg[512];
	vsnprintf(msg, sizeof msg, fmt, ap);
	size_t n = strlen(msg);
	while (n && msg[n - 1] == '\n') /* MHD's mostly end in one */
		msg[--n] = 0;
	if (quiet)
		fprintf(stderr, "mixd: %s http: %s (and %llu more messages "
				"in the second before)\n",
			h->name, msg, (unsigned long long)quiet);
	else
		fprintf(stderr, "mixd: %s http: %s\n", h->name, msg);
	pthread_mutex_unlock(&h->log_lock);
}

/*
 * Does an Accept-Encoding value accept gzip? Codings are comma-separated,
 * each with optional parameters; a q of 0 refuses. An entry naming gzip
 * (or x-gzip) decides over "*" (RFC 9110, 12.5.3): "gzip;q=0, *" refuses.
 */
static bool accepts_gzip(const char *ae)
{
	if (!ae)
		return false;
	double gzip_q = -1, star_q = -1; /* -1: not named */
	const char *p = ae;
	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *tok = p;
		while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
			p++;
		size_t tlen = (size_t)(p - tok);
		bool gz = (tlen == 4 && strncasecmp(tok, "gzip", 4) == 0) ||
			  (tlen == 6 && strncasecmp(tok, "x-gzip", 6) == 0);
		bool star = tlen == 1 && *tok == '*';
		double q = 1;
		while (*p && *p != ',') {
			if (*p == ';') {
				p++;
				while (*p == ' ' || *p == '\t')
					p++;
				if ((*p == 'q' || *p == 'Q') && p[1] == '=')
					q = strtod(p + 2, NULL);
				continue;
			}
			p++;
		}
		if (gz && q > gzip_q)
			gzip_q = q;
		if (star && q > star_q)
			star_q = q;
	}
	return gzip_q >= 0 ? gzip_q > 0 : star_q > 0;
}

/* gzip @len bytes at @in into a new buffer; NULL if that fails or does not
 * pay (then the body goes out as it is). */
static char *gzip_body(const char *in, size_t len, size_t *out_len)
{
	z_stream zs;
	char *out = NULL;

	if (len > GZIP_MAX_BYTES)
		return NULL;
	memset(&zs, 0, sizeof(zs));
	/* Level 1: Prometheus always asks for gzip, so a big scrape is
	 * compressed every time; the fastest level is several times quicker
	 * than the default and metric text still shrinks ~10x. 16 + MAX_WBITS
	 * selects the gzip wrapper rather than zlib's. */
	if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return NULL;
	uLong bound = deflateBound(&zs, (uLong)len);
	if (bound > UINT_MAX)
		goto out;
	out = malloc(bound);
	if (!out)
		goto out;
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)len;
	zs.next_out = (Bytef *)out;
	zs.avail_out = (uInt)bound;
	/* deflateBound() guarantees one Z_FINISH call completes */
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
		free(out);
		out = NULL;
		goto out;
	}
	*out_len = zs.total_out;
out:
	deflateEnd(&zs);
	return out;
}

struct expose_body *expose_body_new(const struct expose_stream *src,
				    bool gzip)
{
	struct expose_body *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->src = *src;
	if (gzip) {
		/* not calloc: the buffers are written before they are read */
		r->gz = malloc(sizeof(*r->gz));
		if (!r->gz) {
			free(r);
			return NULL;
		}
		struct isal_zstream *zs = &r->gz->zs;
		/* isal_deflate_init() leaves next_in and avail_in alone */
		memset(zs, 0, sizeof(*zs));
		isal_deflate_init(zs);
		zs->level = IGZIP_LEVEL;
		zs->level_buf = r->gz->level_buf;
		zs->level_buf_size = sizeof(r->gz->level_buf);
		/* a plain gzip header and trailer around the deflate data */
		zs->gzip_flag = IGZIP_GZIP;
	}
	return r;
}

long expose_body_read(struct expose_body *r, char *buf, size_t max)
{
	if (max > LONG_MAX)
		max = LONG_MAX;
	if (!r->gz) {
		/* the stream renders straight into the send buffer */
		if (r->src_done)
			return 0;
		long n = r->src.read(r->src.st, buf, max);
		if (n == 0) {
			r->src_done = true;
			r->complete = true;
		}
		return n;
	}

	if (r->z_done) {
		r->complete = true;
		return 0;
	}
	struct isal_zstream *zs = &r->gz->zs;
	if (max > UINT32_MAX)
		max = UINT32_MAX;
	zs->next_out = (uint8_t *)buf;
	zs->avail_out = (uint32_t)max;
	int idle = 0; /* isal_deflate() calls in a row that moved no byte */
	while (zs->avail_out > 0) {
		if (zs->avail_in == 0 && !r->src_done) {
			long n = r->src.read(r->src.st, r->gz->in,
					     sizeof(r->gz->in));
			if (n < 0)
				return -1;
			r->src_done = n == 0;
			zs->next_in = (uint8_t *)r->gz->in;
			zs->avail_in = (uint32_t)n;
			/* the last input (possibly none): finish the member */
			zs->end_of_stream = r->src_done;
			continue;
		}
		/* NO_FLUSH (isal_deflate_init's): blocks end when igzip's
		 * buffers fill, so a scrape compresses as the whole body
		 * would */
		uint32_t in0 = zs->avail_in, out0 = zs->avail_out;
		if (isal_deflate(zs) != COMP_OK)
			return -1;
		if (zs->internal_state.state == ZSTATE_END) {
			r->z_done = true;
			break;
		}
		/* A call that neither takes nor gives a byte may only move
		 * igzip's state on; a run of them is a stall, never seen
		 * (igzip writes through a buffer of its own when @buf is
		 * small), which would spin the server's thread: fail the
		 * response instead. */
		if (zs->avail_in != in0 || zs->avail_out != out0)
			idle = 0;
		else if (++idle > 8)
			return -1;
	}
	size_t n = max - zs->avail_out;
	if (n == 0) { /* finished exactly at the previous call's end */
		r->complete = true;
		return 0;
	}
	return (long)n;
}

void expose_body_free(struct expose_body *r)
{
	if (!r)
		return;
	r->src.end(r->src.st, r->complete);
	free(r->gz);
	free(r);
}

/*
 * MHD's content reader, into the connection's send buffer. Never returns 0
 * (in MHD's internal polling that would spin): expose_body_read() returns
 * bytes until the body ends.
 */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos; /* MHD asks in order: the response is never reused */
	long n = expose_body_read(cls, buf, max);
	if (n < 0)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	return n ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

/* MHD is done with a streamed response: sent, failed or abandoned. */
static void stream_free(void *cls)
{
	expose_body_free(cls);
}

/* A short text response; @allow: a 405's Allow; a 503 says when to come
 * back (Retry-After). */
static enum MHD_Result queue_text(struct MHD_Connection *conn, unsigned status,
				  const char *text, const char *allow)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
		strlen(text), (void *)(uintptr_t)text, MHD_RESPMEM_PERSISTENT);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
				EXPOSE_CONTENT_TYPE_TEXT);
	if (allow)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
	if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Queue @r (NULL: fail the connection) with the headers every response
 * has, and drop our reference. */
static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status,
			     struct MHD_Response *r, const char *ctype, bool gz)
{
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	/* The representation depends on Accept-Encoding whether or not this
	 * one was compressed; caches must key on it. */
	MHD_add_response_header(r, MHD_HTTP_HEADER_VARY,
				MHD_HTTP_HEADER_ACCEPT_ENCODING);
	if (gz)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_ENCODING,
					"gzip");
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static void on_connection(void *cls, struct MHD_Connection *conn,
			  void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	(void)cls;
	(void)socket_context;
	if (code != MHD_CONNECTION_NOTIFY_STARTED)
		return;
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
		conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	int v = SEND_BUFFER;
	if (ci)
		setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
}

/* Prometheus' X-Prometheus-Scrape-Timeout-Seconds, if it is a positive
 * finite number of seconds; else 0. */
static double scrape_timeout(struct MHD_Connection *conn)
{
	const char *v = MHD_lookup_connection_value(
		conn, MHD_HEADER_KIND, "X-Prometheus-Scrape-Timeout-Seconds");
	char *end;
	if (!v)
		return 0;
	double t = strtod(v, &end);
	while (*end == ' ' || *end == '\t')
		end++;
	return end != v && !*end && t > 0 && t < 1e9 ? t : 0;
}

/* The body of a HEAD response: none. */
static ssize_t no_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	(void)pos;
	(void)buf;
	(void)max;
	return MHD_CONTENT_READER_END_OF_STREAM;
}

/* A streaming route: its body is pulled piece by piece as it is sent. */
static enum MHD_Result serve_stream(struct route *rt,
				    struct MHD_Connection *conn, bool head,
				    bool gzip_ok)
{
	int status = MHD_HTTP_OK;
	const char *ctype = EXPOSE_CONTENT_TYPE_TEXT;
	struct expose_stream src;
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
		conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct expose_request rq = {
		.head = head,
		.peer = ci ? ci->client_addr : NULL,
		.scrape_timeout_s = scrape_timeout(conn)};
	if (rt->stream(rt->ctx, &rq, &src, &status, &ctype) != 0)
		return status == MHD_HTTP_SERVICE_UNAVAILABLE
			       ? queue_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
					    "too many requests in flight; "
					    "try again\n",
					    NULL)
			       : queue_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
					    "cannot render the response\n",
					    NULL);
	if (head) {
		/* GET's headers, no body. A GET's length is unknown until its
		 * end, and a HEAD response may give no other (RFC 9110 8.6):
		 * a buffer response would say "Content-Length: 0". Nor
		 * chunked: libmicrohttpd 0.9.75 sends the last chunk
		 * ("0\r\n\r\n") even for HEAD, which a kept-alive client
		 * takes for the start of its next response. So the length is
		 * left unknown and the connection closed after the headers. */
		src.end(src.st, false);
		struct MHD_Response *hr = MHD_create_response_from_callback(
			MHD_SIZE_UNKNOWN, 64, no_body, NULL, NULL);
		if (hr)
			MHD_set_response_options(
				hr, MHD_RF_HTTP_1_0_COMPATIBLE_STRICT, MHD_RO_END);
		return queue(conn, (unsigned)status, hr, ctype, gzip_ok);
	}
	/* A streamed body's size is unknown until its end, so it is gzipped
	 * whenever the client accepts it: it is large. */
	struct expose_body *body = expose_body_new(&src, gzip_ok);
	if (!body) {
		src.end(src.st, false);
		return queue_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
				  "out of memory\n", NULL);
	}
	struct MHD_Response *r = MHD_create_response_from_callback(
		MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, body, stream_free);
	if (!r) /* the body was never handed over: end it here */
		expose_body_free(body);
	return queue(conn, (unsigned)status, r, ctype, gzip_ok);
}

/* A buffered route: its body is rendered whole, then sent. */
static enum MHD_Result serve_buffered(struct expose_http *h, struct route *rt,
				      struct MHD_Connection *conn,
				      bool gzip_ok)
{
	int status = MHD_HTTP_OK;
	const char *ctype = EXPOSE_CONTENT_TYPE_TEXT;
	struct expose_buf body;
	expose_buf_init(&body);
	int rc = rt->fn(rt->ctx, &body, &status, &ctype);
	if (expose_buf_failed(&body)) {
		expose_buf_free(&body);
		return queue_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
				  "out of memory rendering the response\n",
				  NULL);
	}
	if (rc != 0)
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	char *data = body.data;
	size_t len = body.len;
	bool gz = false;
	if (len >= h->gzip_min && gzip_ok) {
		size_t zlen;
		char *z = gzip_body(data, len, &zlen);
		if (z) {
			expose_buf_free(&body);
			data = z;
			len = zlen;
			gz = true;
		}
	}
	struct MHD_Response *r;
	if (len == 0) {
		free(data);
		r = MHD_create_response_from_buffer(0, (void *)"",
						    MHD_RESPMEM_PERSISTENT);
	} else {
		/* sent from the buffer itself, freed once sent */
		r = MHD_create_response_from_buffer_with_free_callback(len, data,
								       free);
		if (!r)
			free(data);
	}
	return queue(conn, (unsigned)status, r, ctype, gz);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload_data,
				  size_t *upload_data_size, void **req_cls)
{
	struct expose_http *h = cls;
	static char seen;

	/* Other methods are answered at once, body unread (MHD discards it
	 * and closes the connection). */
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return queue_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
				  "method not allowed\n", "GET, HEAD");
	/* GET and HEAD on the second call, once the request is whole: a
	 * response queued on the first call closes the connection
	 * (libmicrohttpd 0.9.75), and Prometheus keeps its connection
	 * alive between scrapes. A body is read and ignored. */
	if (!*req_cls) {
		*req_cls = &seen;
		return MHD_YES;
	}
	if (*upload_data_size) {
		*upload_data_size = 0;
		return MHD_YES;
	}

	struct route *rt = NULL;
	for (size_t i = 0; i < h->nroutes; i++) {
		if (strcmp(h->routes[i].path, url) == 0) {
			rt = &h->routes[i];
			break;
		}
	}
	if (!rt)
		return queue_text(conn, MHD_HTTP_NOT_FOUND, "not found\n",
				  NULL);

	bool gzip_ok = accepts_gzip(MHD_lookup_connection_value(
		conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING));
	if (rt->stream)
		return serve_stream(rt, conn,
				    strcmp(method, MHD_HTTP_METHOD_HEAD) == 0,
				    gzip_ok);
	return serve_buffered(h, rt, conn, gzip_ok);
}

int expose_address_split(const char *address, char *buf, size_t cap,
			 const char **host, const char **port)
{
	if (!address || strlen(address) >= cap)
		return -EINVAL;
	strcpy(buf, address);
	char *colon;
	if (buf[0] == '[') {
		char *close = strchr(buf, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		*close = '\0';
		*host = buf + 1;
		*port = close + 2;
	} else if ((colon = strrchr(buf, ':'))) {
		if (strchr(buf, ':') != colon) /* bare IPv6 needs brackets */
			return -EINVAL;
		*colon = '\0';
		*host = buf[0] ? buf : NULL;
		*port = colon + 1;
	} else {
		*host = NULL;
		*port = buf;
	}
	const char *p = *port;
	if (!*p || strlen(p) > 5)
		return -EINVAL;
	for (; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	if (atoi(*port) > 65535)
		return -EINVAL;
	return 0;
}

static int listen_on(const struct sockaddr *sa, socklen_t salen, int family)
{
	int one = 1, zero = 0;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* a restarted mixd must not fail on its predecessor's TIME_WAITs */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* "[::]:PORT" and ":PORT" serve IPv4 too */
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, sa, salen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* A listening socket for @host:@port; the socket, or -errno. */
static int open_listener(const char *host, const char *port, int *family)
{
	if (!host) {
		/* every interface: one dual-stack socket, or IPv4 alone on a
		 * host without IPv6 */
		struct sockaddr_in6 s6 = {.sin6_family = AF_INET6,
					  .sin6_addr = IN6ADDR_ANY_INIT,
					  .sin6_port =
						  htons((uint16_t)atoi(port))};
		int fd =
			listen_on((struct sockaddr *)&s6, sizeof(s6), AF_INET6);
		if (fd != -EAFNOSUPPORT) {
			*family = AF_INET6;
			return fd;
		}
		struct sockaddr_in s4 = {.sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_ANY),
					 .sin_port =
						 htons((uint16_t)atoi(port))};
		*family = AF_INET;
		return listen_on((struct sockaddr *)&s4, sizeof(s4), AF_INET);
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	int gai = getaddrinfo(host, port, &hints, &res);
	if (gai != 0)
		return gai == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
	int fd = -EADDRNOTAVAIL;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = listen_on(ai->ai_addr, ai->ai_addrlen, ai->ai_family);
		if (fd >= 0) {
			*family = ai->ai_family;
			break;
		}
	}
	freeaddrinfo(res);
	return fd;
}

static uint16_t bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void free_server(struct expose_http *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->nroutes; i++)
		free(h->routes[i].path);
	free(h->routes);
	pthread_mutex_destroy(&h->log_lock);
	free(h);
}

int expose_http_start(const char *address, const struct expose_route *routes,
		      size_t nroutes, const struct expose_http_options *opts,
		      struct expose_http **out)
{
	static const struct expose_http_options defaults;
	char abuf[256];
	const char *host, *port;
	int rc, fd = -1, family = AF_INET;
	struct expose_http *h = NULL;

	if (!opts)
		opts = &defaults;
	const char *name = opts->name ? opts->name : "http";
	rc = expose_address_split(address, abuf, sizeof(abuf), &host, &port);
	if (rc != 0) {
		fprintf(stderr,
			"mixd: %s: bad listen address \"%s\": want HOST:PORT, "
			":PORT, PORT or [IPV6]:PORT\n",
			name, address ? address : "(null)");
		return rc;
	}
	for (size_t i = 0; i < nroutes; i++) {
		if (!routes[i].path || !routes[i].fn == !routes[i].stream) {
			fprintf(stderr,
				"mixd: %s: route %zu needs a path and "
				"one handler\n",
				name, i);
			return -EINVAL;
		}
	}
	rc = -ENOMEM;
	h = calloc(1, sizeof(*h));
	if (!h)
		goto fail;
	snprintf(h->name, sizeof(h->name), "%s", name);
	pthread_mutex_init(&h->log_lock, NULL);
	h->log_s = -1;
	h->gzip_min =
		opts->gzip_min_bytes ? opts->gzip_min_bytes : DEFAULT_GZIP_MIN;
	h->routes = calloc(nroutes ? nroutes : 1, sizeof(*h->routes));
	if (!h->routes)
		goto fail;
	for (size_t i = 0; i < nroutes; i++) {
		h->routes[i].path = strdup(routes[i].path);
		if (!h->routes[i].path)
			goto fail;
		h->nroutes = i + 1;
		h->routes[i].fn = routes[i].fn;
		h->routes[i].stream = routes[i].stream;
		h->routes[i].ctx = routes[i].ctx;
	}

	fd = open_listener(host, port, &family);
	if (fd < 0) {
		rc = fd;
		fd = -1;
		fprintf(stderr, "mixd: %s: cannot listen on %s: %s\n", name,
			address, strerror(-rc));
		goto fail;
	}
	h->port = bound_port(fd);

	unsigned max = opts->max_connections ? opts->max_connections
					     : DEFAULT_MAX_CONNECTIONS;
	unsigned per_address = max / 2 < PER_ADDRESS_CONNECTIONS
				       ? max / 2
				       : PER_ADDRESS_CONNECTIONS;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
			 MHD_USE_ERROR_LOG;
	if (family == AF_INET6)
		flags |= MHD_USE_IPv6;
	h->mhd = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
		log_mhd, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
		MHD_OPTION_THREAD_POOL_SIZE,
		(unsigned)(opts->threads ? opts->threads : DEFAULT_THREADS),
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
		MHD_OPTION_CONNECTION_LIMIT, max,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_address,
		MHD_OPTION_CONNECTION_TIMEOUT,
		(unsigned)(opts->idle_timeout_s ? opts->idle_timeout_s
						: DEFAULT_IDLE_TIMEOUT_S),
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
		MHD_OPTION_END);
	if (!h->mhd) {
		rc = -EIO;
		fprintf(stderr,
			"mixd: %s: cannot start the HTTP server on %s "
			"(libmicrohttpd refused; see its message above)\n",
			name, address);
		goto fail;
	}
	*out = h;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	if (rc == -ENOMEM)
		fprintf(stderr, "mixd: %s: out of memory starting on %s\n",
			name, address);
	free_server(h);
	return rc;
}

uint16_t expose_http_port(const struct expose_http *h)
{
	return h->port;
}

void expose_http_stop(struct expose_http *h)
{
	if (!h)
		return;
	/* joins the pool threads after their requests complete, destroys
	 * the responses (ending their streams) and closes the listening
	 * socket */
	MHD_stop_daemon(h->mhd);
	free_server(h);
}
