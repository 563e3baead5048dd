/*
 * expose -- Prometheus text rendering and the HTTP servers (libmicrohttpd)
 * that serve it: the Prometheus endpoint (:42422) and monitoring (:9093).
 *
 * Rendering writes into a growable buffer (struct expose_buf) whose append
 * operations never fail individually: running out of memory sets a sticky
 * flag that the caller checks once at the end (expose_buf_failed()). A
 * renderer producing millions of lines therefore has no error branch per
 * sample, and the hot appends are inline.
 *
 * Text exposition format 0.0.4:
 *   # HELP <name> <help, with \ and newline escaped>
 *   # TYPE <name> counter|gauge|histogram|summary|untyped
 *   <name>{<label>="<value, with \ " newline escaped>",...} <value>
 *
 * Threads: a server calls its route handlers from its own threads, possibly
 * several at once (see expose_http_start()). The rendering helpers keep no
 * global state and may be used from any thread on distinct buffers.
 */
#ifndef MIXD_EXPOSE_H
#define MIXD_EXPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/** Content-Type of the Prometheus text format, version 0.0.4. */
#define EXPOSE_CONTENT_TYPE_PROMETHEUS                                         \
	"text/plain; version=0.0.4; charset=utf-8"

/** Content-Type a handler gets when it sets none. */
#define EXPOSE_CONTENT_TYPE_TEXT "text/plain; charset=utf-8"

/**
 * A growable byte buffer. Zero-initialised (or expose_buf_init()) it is
 * empty and owns nothing. Not NUL-terminated unless expose_buf_cstr() is
 * called. Owned by whoever initialised it; free with expose_buf_free().
 */
struct expose_buf {
	char *data; /**< bytes [0, len) are the content */
	size_t len; /**< bytes used */
	size_t cap; /**< bytes allocated */
	bool oom;   /**< an append could not grow the buffer; sticky */
};

/** Make @b empty, owning nothing. */
void expose_buf_init(struct expose_buf *b);

/** Free @b's memory and make it empty again. */
void expose_buf_free(struct expose_buf *b);

/**
 * Ensure room for @n more bytes. Returns 0, or -1 (and sets the sticky
 * flag) when memory ran out. Slow path of the appends; callers that write
 * many small pieces may reserve once and then append.
 */
int expose_buf_reserve(struct expose_buf *b, size_t n);

/** True if some append since the last init/free was lost to ENOMEM. */
static inline bool expose_buf_failed(const struct expose_buf *b)
{
	return b->oom;
}

/** Append @n bytes at @p. On ENOMEM nothing is appended (sticky flag). */
static inline void expose_buf_append(struct expose_buf *b, const void *p,
				     size_t n)
{
	/* n == 0 may come with a NULL @p or an unallocated buffer */
	if (n == 0 || (b->cap - b->len < n && expose_buf_reserve(b, n) != 0))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

/** Append the NUL-terminated @s. */
static inline void expose_buf_puts(struct expose_buf *b, const char *s)
{
	expose_buf_append(b, s, strlen(s));
}

/** Append one byte. */
static inline void expose_buf_putc(struct expose_buf *b, char c)
{
	if (b->cap == b->len && expose_buf_reserve(b, 1) != 0)
		return;
	b->data[b->len++] = c;
}

/** Append printf-style text. Not for per-sample use: it is slow. */
void expose_buf_printf(struct expose_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/**
 * NUL-terminate @b (the NUL is not counted in len) and return its data,
 * or NULL on ENOMEM. The pointer stays @b's.
 */
const char *expose_buf_cstr(struct expose_buf *b);

/**
 * Largest text expose_format_value() / expose_format_float_go() write, NUL
 * included: "-1.2345678901234567e-308" is 24 characters.
 */
#define EXPOSE_VALUE_MAX 32

/**
 * Format a sample value as Prometheus parses it, into @out (at least
 * EXPOSE_VALUE_MAX bytes), NUL-terminated; returns the length.
 *  - integral values with magnitude below 2^53: plain decimal ("42",
 *    "-7", "1000000"), never an exponent;
 *  - +Inf, -Inf, NaN as "+Inf", "-Inf", "NaN";
 *  - other values: the shortest decimal with at most 15 fraction digits that
 *    reads back as exactly @v ("0.25", "2.5"), found without printf; failing
 *    that, "%.17g", which always reads back exactly.
 * Every output reads back (strtod) as exactly @v.
 */
size_t expose_format_value(double v, char *out);

/**
 * Format @v exactly as Go's strconv.FormatFloat(v, 'g', -1, 64), which is
 * how Mixer (client_golang) printed histogram "le" and summary "quantile"
 * label values ("0.005", "1e+06", "+Inf"). Label values are identity in
 * Prometheus, so a series keeps its identity across Mixer -> mixd only if
 * these match. Slow (several snprintf calls): compute once per bucket bound,
 * not per sample. Returns the length written into @out (EXPOSE_VALUE_MAX).
 */
size_t expose_format_float_go(double v, char *out);

/** Append "# HELP @name @help\n" with \ and newline in @help escaped. */
void expose_help(struct expose_buf *b, const char *name, const char *help);

/** Append "# TYPE @name @type\n"; @type is "counter", "gauge", ... */
void expose_type(struct expose_buf *b, const char *name, const char *type);

/** Append @len bytes of @s as a label value body: \ " newline escaped. */
void expose_label_value(struct expose_buf *b, const char *s, size_t len);

/** One label of a sample. @value is NUL-terminated text. */
struct expose_label {
	const char *name;
	const char *value;
};

/**
 * Append the label pairs `n1="v1",n2="v2"` (no braces), values escaped.
 * A renderer may render a series' labels once with this and reuse the
 * bytes with expose_sample_raw() on every scrape.
 */
void expose_labels(struct expose_buf *b, const struct expose_label *labels,
		   size_t n);

/** Append the value of a sample, formatted by expose_format_value(). */
void expose_value(struct expose_buf *b, double v);

/**
 * Append one sample line `@name{labels} @v\n`; no braces when @n is 0.
 */
void expose_sample(struct expose_buf *b, const char *name,
		   const struct expose_label *labels, size_t n, double v);

/**
 * Append one sample line from pre-rendered pieces, the fast path:
 * `@name@suffix{@labels,@extra} @v\n`. @suffix (e.g. "_bucket"), @labels
 * (as written by expose_labels()) and @extra (e.g. `le="0.005"`) may each be
 * NULL or empty; braces are omitted when both @labels and @extra are.
 */
void expose_sample_raw(struct expose_buf *b, const char *name, size_t name_len,
		       const char *suffix, const char *labels,
		       size_t labels_len, const char *extra, size_t extra_len,
		       double v);

/**
 * A route handler. Renders the response body into @out (empty on entry)
 * and returns 0, or -1 for a 500 response (the body, if any, is sent).
 * *@status is 200 on entry; *@content_type is EXPOSE_CONTENT_TYPE_TEXT and
 * must be set to a string that outlives the call (a literal). Called from
 * the server's threads, possibly concurrently with itself.
 */
typedef int (*expose_handler_fn)(void *ctx, struct expose_buf *out, int *status,
				 const char **content_type);

/**
 * A response body made piece by piece as the client takes it, for bodies
 * too large to hold whole (a big scrape). The server calls read() when it
 * can send more, into its send buffer or its deflater's input, from one
 * thread at a time, and end() exactly once.
 */
struct expose_stream {
	/** Write the next at most @max (> 0) bytes of the body into @buf
	 *  and return the count (> 0); return 0 when the body is complete;
	 *  -1 to abort the response (the connection is closed, the client
	 *  sees a truncated body). */
	long (*read)(void *st, char *buf, size_t max);
	/** The server is done with the stream; free @st. @complete: read()
	 *  returned 0 and every byte was handed to the connection. False when
	 *  the client went away, the stream failed, or nothing was asked of
	 *  it (HEAD). */
	void (*end)(void *st, bool complete);
	void *st; /**< their first argument */
};

/** What a streaming route is asked. */
struct expose_request {
	/** A HEAD request, whose body is never read: the handler may leave
	 *  out what only the body needs (the stream's read() is not called;
	 *  end() is). */
	bool head;
	/** The client's address (AF_INET or AF_INET6); NULL when unknown. */
	const struct sockaddr *peer;
	/** How long the client waits for the whole response, in seconds, as
	 *  Prometheus says it (X-Prometheus-Scrape-Timeout-Seconds); 0 when
	 *  not said, or not a positive finite number. */
	double scrape_timeout_s;
};

/**
 * A streaming route handler: sets up @out and returns 0, or returns -1
 * for a 500 response (@out unused), or for a 503 ("too many requests in
 * flight", with Retry-After) when it set *@status to 503. *@status and
 * *@content_type as for expose_handler_fn. Called from the server's
 * threads, possibly concurrently with itself.
 */
typedef int (*expose_stream_fn)(void *ctx, const struct expose_request *rq,
				struct expose_stream *out, int *status,
				const char **content_type);

/**
 * A streamed body as the server sends it: the stream's pieces, deflated
 * into one gzip member (ISA-L's igzip, level 1) when @gzip. What an HTTP
 * response pulls from; also usable without a server (benchmarks, tests).
 * Owned by the caller.
 */
struct expose_body;

/**
 * Wrap @src (copied; the body calls its end() once, from
 * expose_body_free()). NULL on ENOMEM, and then @src is not ended.
 */
struct expose_body *expose_body_new(const struct expose_stream *src,
				    bool gzip);

/**
 * Copy the next at most @max (> 0) bytes of the body into @buf. Returns the
 * count (> 0), 0 at the end of the body (which makes it complete), or -1 if
 * the stream or the deflater failed.
 */
long expose_body_read(struct expose_body *b, char *buf, size_t max);

/** End the stream (complete if a read returned 0) and free @b. NULL is
 *  fine. */
void expose_body_free(struct expose_body *b);

/** A path served by a handler. */
struct expose_route {
	const char *path;     /**< exact match, e.g. "/metrics" */
	expose_handler_fn fn; /**< the handler; NULL for a streaming route */
	void *ctx;	      /**< its first argument */
	expose_stream_fn stream; /**< the streaming handler, when fn is NULL */
};

/** Options for expose_http_start(); zero means default for each field. */
struct expose_http_options {
	/** Threads serving requests; default 2. See expose.c for why a
	 *  pool rather than one polling thread or a thread per connection. */
	unsigned threads;
	/** Most simultaneous connections; default 256. Of them, one client
	 *  address holds at most 16 (or half, if that is fewer). */
	unsigned max_connections;
	/** Idle connection timeout in seconds; default 30. */
	unsigned idle_timeout_s;
	/** Bodies at least this large are gzipped when the client accepts
	 *  gzip; default 1024 bytes. */
	size_t gzip_min_bytes;
	/** Name used in log lines ("prometheus", "monitoring"); default
	 *  "http". */
	const char *name;
};

/** A running HTTP server. Opaque. */
struct expose_http;

/**
 * Split listen address @address as expose_http_start() reads it: "PORT",
 * ":PORT", "HOST:PORT" or "[V6ADDR]:PORT", a port of at most 5 digits up
 * to 65535 (a bare IPv6 address is refused: its colons are ambiguous).
 * The pieces are written to @buf (@cap bytes); *@host is NULL for every
 * interface. Returns 0, or -EINVAL.
 */
int expose_address_split(const char *address, char *buf, size_t cap,
			 const char **host, const char **port);

/**
 * Listen on @address and serve @routes (copied; the handlers' ctx must stay
 * valid until expose_http_stop()). @address is "HOST:PORT", ":PORT" (every
 * interface, IPv6 included where available), "PORT", or "[V6ADDR]:PORT";
 * HOST is an address or a name. Port 0 picks a free port: see
 * expose_http_port(). Only GET and HEAD are served (405 otherwise, with
 * Allow), unknown paths get 404. Responses are gzipped when the request
 * accepts gzip and the body is large enough; a streamed body whenever the
 * request accepts gzip, deflated piece by piece as it is sent. Streamed
 * bodies go out with chunked transfer encoding (HTTP/1.1), or until the
 * connection closes (HTTP/1.0).
 *
 * Returns 0 and stores the server in *@out; or -EINVAL (bad address or
 * options), -errno of socket()/bind()/listen() (-EADDRINUSE, -EACCES, ...),
 * -ENOMEM. Failures are logged to stderr once, with the address.
 * @opts may be NULL.
 */
int expose_http_start(const char *address, const struct expose_route *routes,
		      size_t nroutes, const struct expose_http_options *opts,
		      struct expose_http **out);

/** The TCP port @h listens on (the one chosen when port 0 was asked). */
uint16_t expose_http_port(const struct expose_http *h);

/**
 * Stop accepting, finish the requests in flight, join the server's threads,
 * close the socket and free @h. NULL is fine. No handler runs after return.
 */
void expose_http_stop(struct expose_http *h);

struct agg_view;

/**
 * Size of the buffers a streamed body is read into (the HTTP server's
 * per-connection memory, which holds the send buffer; the deflater's
 * input; a rendering step): a few hundred label sets, large enough
 * that per-read costs (a send, a deflate call) vanish, small enough to
 * stay in the CPU's L2 cache while it is rendered, sent or deflated.
 */
#define EXPOSE_CHUNK_DEFAULT (256 * 1024)

/** Prometheus text of a view, rendered a read at a time. Opaque. */
struct expose_view_stream;

/**
 * Start rendering @v, which must stay valid (not destroyed) until
 * expose_view_stream_free(). NULL on ENOMEM.
 */
struct expose_view_stream *expose_view_stream_new(const struct agg_view *v);

/**
 * Render the next at most @max (> 0) bytes of the text into @buf: as many
 * whole rows as fit, written in place; a row larger than @max is handed
 * out in @max-byte parts. Returns the count (> 0), 0 once everything was
 * rendered, or -1 on ENOMEM. The concatenated reads are what
 * expose_render_view() writes. Fits expose_stream.read.
 */
long expose_view_stream_read(struct expose_view_stream *s, char *buf,
			     size_t max);

/** Free @s (not its view). NULL is fine. */
void expose_view_stream_free(struct expose_view_stream *s);

/**
 * Render every family of @v that has series as Prometheus text 0.0.4 into
 * @b: HELP and TYPE, escaped label values, histograms as cumulative `le`
 * buckets (le formatted as client_golang did), `+Inf`, `_sum`, `_count`.
 * Rows come in the view's order (sorted by label values). Returns 0, or -1
 * on ENOMEM. The whole text in memory: for tests and small views; a
 * server streams it (expose_view_stream_new()).
 */
int expose_render_view(const struct agg_view *v, struct expose_buf *b);

#endif /* MIXD_EXPOSE_H */
