/*
 * sse -- text/event-stream framing as Marathon's Jetty emitter writes it:
 * "event: <type>" and "data: <json>" lines ended by CRLF (LF and lone CR
 * accepted, as the SSE spec allows), a blank line dispatching the event,
 * and bare CRLFs as heartbeats. Comment lines (":...") and unknown fields
 * are ignored. Bytes arrive in arbitrary pieces.
 */
#include <stdlib.h>
#include <string.h>

#include "marathon/mar_internal.h"

void mar_sse_reset(struct mar_sse *p)
{
	p->line_len = 0;
	p->data_len = 0;
	p->type_len = 0;
	p->pending_cr = false;
	p->in_event = false;
	p->overflow = false;
}

void mar_sse_free(struct mar_sse *p)
{
	free(p->line);
	free(p->data);
	p->line = p->data = NULL;
	p->line_cap = p->data_cap = 0;
	mar_sse_reset(p);
}

bool mar_sse_partial(const struct mar_sse *p)
{
	return p->in_event || p->line_len > 0;
}

static int reserve(char **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	if (need > MAR_SSE_MAX_EVENT + 1)
		return -1;
	size_t c = *cap ? *cap : 4096;
	while (c < need)
		c *= 2;
	char *n = realloc(*buf, c);
	if (!n)
		return -1;
	*buf = n;
	*cap = c;
	return 0;
}

/* One complete line (without its terminator). */
static int line_done(struct mar_sse *p, mar_sse_cb cb, void *ctx)
{
	const char *l = p->line;
	size_t n = p->line_len;

	p->line_len = 0;
	if (n == 0) {
		/* Blank line: dispatch, or a heartbeat when nothing pends. */
		if (p->in_event && p->data_len > 0)
			cb(ctx, p->type, p->type_len, p->data, p->data_len);
		p->in_event = false;
		p->data_len = 0;
		p->type_len = 0;
		return 0;
	}
	if (l[0] == ':')
		return 0; /* comment */
	const char *colon = memchr(l, ':', n);
	size_t fl = colon ? (size_t)(colon - l) : n;
	const char *v = colon ? colon + 1 : l + n;
	size_t vl = n - (size_t)(v - l);
	if (vl && *v == ' ') {
		v++;
		vl--;
	}
	if (fl == 5 && !memcmp(l, "event", 5)) {
		p->in_event = true;
		if (vl >= sizeof p->type)
			vl = sizeof p->type - 1; /* no type of ours is so long */
		memcpy(p->type, v, vl);
		p->type[vl] = 0;
		p->type_len = vl;
	} else if (fl == 4 && !memcmp(l, "data", 4)) {
		p->in_event = true;
		size_t need = p->data_len + (p->data_len ? 1 : 0) + vl + 1;
		if (need > MAR_SSE_MAX_EVENT ||
		    reserve(&p->data, &p->data_cap, need) < 0)
			return -1;
		if (p->data_len)
			p->data[p->data_len++] = '\n';
		memcpy(p->data + p->data_len, v, vl);
		p->data_len += vl;
		p->data[p->data_len] = 0;
	} else {
		p->in_event = true; /* id:, retry: -- part of an event */
	}
	return 0;
}

int mar_sse_feed(struct mar_sse *p, const char *buf, size_t len,
		 mar_sse_cb cb, void *ctx)
{
	if (p->overflow)
		return -1;
	size_t i = 0;
	while (i < len) {
		if (p->pending_cr) {
			p->pending_cr = false;
			if (buf[i] == '\n') {
				i++;
				continue;
			}
		}
		/* Take a run of ordinary bytes in one copy. */
		size_t j = i;
		while (j < len && buf[j] != '\n' && buf[j] != '\r')
			j++;
		if (j > i) {
			if (p->line_len + (j - i) > MAR_SSE_MAX_EVENT ||
			    reserve(&p->line, &p->line_cap,
				    p->line_len + (j - i) + 1) < 0) {
				p->overflow = true;
				return -1;
			}
			memcpy(p->line + p->line_len, buf + i, j - i);
			p->line_len += j - i;
		}
		if (j == len)
			break;
		p->pending_cr = buf[j] == '\r';
		i = j + 1;
		if (line_done(p, cb, ctx) < 0) {
			p->overflow = true;
			return -1;
		}
	}
	return 0;
}
