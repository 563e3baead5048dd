/*
 * fuzz_marathon -- Marathon's bytes into the resolver's parsers. The first
 * byte picks the target:
 *   0: /v2/apps?embed=apps.tasks body -> snapshot (then lookups on it)
 *   1: /v2/pods/::status body -> snapshot
 *   2: an SSE stream, fed in pieces, each event applied to a model that
 *      starts from the fixture-like apps below, then a snapshot of it
 *      (events whose data the framer drops: seed-sse-unread-data)
 * No host name is resolved (no host cache): literal IPs only.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "marathon/mar_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char base_apps[] =
	"{\"apps\":[{\"id\":\"/a/b\",\"labels\":{\"x\":\"y\"},\"tasks\":[{"
	"\"id\":\"a_b.instance-1._app.1\",\"host\":\"10.0.0.1\",\"ports\":"
	"[31000],\"state\":\"TASK_RUNNING\"}]}]}";
static const char base_pods[] =
	"[{\"id\":\"/p\",\"spec\":{\"containers\":[{\"name\":\"c\"}]},"
	"\"instances\":[{\"id\":\"p.instance-2\",\"agentHostname\":\"10.0.0.2\","
	"\"containers\":[{\"name\":\"c\"}]}]}]";

static void probe(const struct mar_snap *s)
{
	struct attr_value u = {.type = ATTR_STRING, .len = 21,
			       .s = "a_b.instance-1._app.1"};
	struct attr_value ip = {.type = ATTR_IP, .len = 4, .ip = {10, 0, 0, 1}};
	struct attr_value p = {.type = ATTR_INT64, .i = 31000};
	struct mar_query q = {.source_uid = &u, .source_ip = &ip,
			      .destination_ip = &ip, .destination_port = &p};
	struct mar_result r;
	mar_snap_lookup(s, &q, &r);
	for (int o = 0; o < MAR_OUT_COUNT; o++) {
		const struct attr_value *v = mar_result_get(&r, o);
		if (v && v->type == ATTR_STRING_MAP &&
		    attr_map_validate(v->map, v->len) != v->len)
			abort();
	}
}

struct ctx {
	struct mar_model *m;
};

static void on_event(void *c, const char *type, size_t tl, const char *d,
		     size_t dl)
{
	struct ctx *x = c;
	/* Dropped data comes as "": a NUL-terminated string either way. */
	if (d[dl] != 0)
		abort();
	mar_model_apply(x->m, type, tl, d, dl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int which = data[0] % 3;
	const char *body = (const char *)data + 1;
	size_t len = size - 1;
	struct mar_snap *s = NULL;
	if (which == 0 || which == 1) {
		cJSON *apps = which == 0 ? mar_parse_apps(body, len) : NULL;
		cJSON *pods = which == 1 ? mar_parse_pods(body, len) : NULL;
		if (mar_snap_build(apps, pods, NULL, &s, NULL) == 0) {
			probe(s);
			mar_snap_free(s);
		}
		cJSON_Delete(apps);
		cJSON_Delete(pods);
		return 0;
	}
	struct mar_model m = {0};
	m.apps = mar_parse_apps(base_apps, sizeof base_apps - 1);
	m.pods = mar_parse_pods(base_pods, sizeof base_pods - 1);
	struct mar_sse p = {0};
	struct ctx c = {&m};
	mar_sse_reset(&p);
	/* pieces of 1..16 bytes decided by the data itself */
	size_t i = 0;
	while (i < len) {
		size_t n = 1 + ((uint8_t)body[i] & 15);
		if (n > len - i)
			n = len - i;
		if (mar_sse_feed(&p, body + i, n, on_event, &c) < 0)
			break;
		i += n;
	}
	mar_sse_partial(&p);
	mar_sse_free(&p);
	if (mar_snap_build(m.apps, m.pods, NULL, &s, NULL) == 0) {
		probe(s);
		mar_snap_free(s);
	}
	mar_model_clear(&m);
	return 0;
}
