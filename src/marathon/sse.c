/*
 * sse -- text/event-stream framing as Marathon's Jetty emitter writes it:
 * "event: <type>" and "data: <json>" lines ended by CRLF (LF and lone CR
 * accepted, as the SSE spec allows), a blank line dispatching the event,
 * and bare CRLFs as heartbeats. Comment lines (":...") and unknown fields
 * are ignored. Bytes arrive in arbitrary pieces.
 *
 * An event whose "event:" line names a type mixd does not read
 * (mar_event_data_unread(): deployments carry whole group trees, tens of
 * MB at 10,000 apps) has its data lines dropped as they pass, neither
 * buffered nor bounded: it is dispatched with empty data, to be counted.
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
	p->skip = p->skipped = p->discard = false;
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

/* A buffer grown for an unusually large event goes back once it is
 * used: the stream lives for days, and one deployment must not pin tens
 * of MB for the rest of it. */
#define SSE_KEEP (64u << 10)

static void shrink(char **buf, size_t *cap)
{
	if (*cap <= SSE_KEEP)
		return;
	free(*buf);
	*buf = NULL;
	*cap = 0;
}

/* One complete line (without its terminator). */
static int line_done(struct mar_sse *p, mar_sse_cb cb, void *ctx)
{
	const char *l = p->line;
	size_t n = p->line_len;

	p->line_len = 0;
	if (n == 0) {
		/* Blank line: dispatch, or a heartbeat when nothing pends. */
		if (p->in_event && (p->data_len > 0 || p->skipped))
			cb(ctx, p->type, p->type_len,
			   p->data_len ? p->data : "", p->data_len);
		p->in_event = false;
		p->data_len = 0;
		p->type_len = 0;
		p->skip = p->skipped = false;
		shrink(&p->data, &p->data_cap);
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
		/* Once data was dropped, a later "event:" line naming a type
		 * that is read gets empty data (malformed), not half of it. */
		p->skip = p->skipped || mar_event_data_unread(p->type, vl);
	} else if (fl == 4 && !memcmp(l, "data", 4)) {
		p->in_event = true;
		if (p->skip) {
			p->skipped = true;
			return 0;
		}
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

/* Add @n bytes to the current line; -1 (overflow) beyond the bound. */
static int append(struct mar_sse *p, const char *b, size_t n)
{
	if (p->line_len + n > MAR_SSE_MAX_EVENT ||
	    reserve(&p->line, &p->line_cap, p->line_len + n + 1) < 0) {
		p->overflow = true;
		return -1;
	}
	memcpy(p->line + p->line_len, b, n);
	p->line_len += n;
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
		size_t from = i;
		if (p->skip && !p->discard && p->line_len < 5 && j > from) {
			/* Enough of the line to know a "data:" one, whose
			 * rest is dropped without being kept. */
			size_t head = 5 - p->line_len;
			head = head < j - from ? head : j - from;
			if (append(p, buf + from, head) < 0)
				return -1;
			from += head;
			if (p->line_len == 5 && !memcmp(p->line, "data:", 5)) {
				p->discard = true;
				p->skipped = p->in_event = true;
				p->line_len = 0;
			}
		}
		if (!p->discard && j > from && append(p, buf + from, j - from) < 0)
			return -1;
		if (j == len)
			break;
		p->pending_cr = buf[j] == '\r';
		i = j + 1;
		p->lines++;
		if (p->discard) {
			p->discard = false;
			continue;
		}
		if (line_done(p, cb, ctx) < 0) {
			p->overflow = true;
			return -1;
		}
		shrink(&p->line, &p->line_cap);
	}
	return 0;
}
