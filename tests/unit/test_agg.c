/*
 * test_agg -- the record path with its memo against the record path
 * without it: the same records, with the user's config, must leave the
 * same rows, cells, instance errors and overflow counts either way.
 *
 * The config is mixer-seed.yaml plus memo-edges.yaml (labels and values
 * that fail, a gauge, double dispatch, a namespace-scoped rule). Records
 * are drawn from small pools, so label sets and memo keys repeat as a
 * proxy's do, with absent attributes, label sets beyond a series limit,
 * expiry between records, and Marathon snapshots swapped under the shard.
 *
 * MIXD_TEST_THREADED: one test reads the tables from a second thread, as
 * a scrape does, while rows expire. Under TSan (MIXD_SANITIZE=thread, set
 * by ctest) only that one runs: the others have one thread.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "agg/agg_internal.h"
#include "ingest/ingest.h"
#include "ingest/wire.h"
#include "marathon/mar_internal.h"

#define RECORD_CAP 1024

/* The user's config with tests/fixtures/config/memo-edges.yaml beside it,
 * as a directory mixd loads whole. */
static const char *config_dir(void)
{
	static char dir[] = "/tmp/mixd-test-agg-XXXXXX";
	static bool made;
	if (made)
		return dir;
	assert_non_null(mkdtemp(dir));
	const char *fx = getenv("MIXD_FIXTURES");
	char src[1024], dst[1024];
	static const char *const files[] = {"mixer-seed.yaml", "memo-edges.yaml"};
	for (size_t i = 0; i < 2; i++) {
		snprintf(src, sizeof src, "%s/config/%s",
			 fx ? fx : "fixtures", files[i]);
		char *abs = realpath(src, NULL);
		assert_non_null(abs);
		snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
		assert_int_equal(symlink(abs, dst), 0);
		free(abs);
	}
	made = true;
	return dir;
}

static void remove_config_dir(void)
{
	char p[1024];
	const char *dir = config_dir();
	snprintf(p, sizeof p, "%s/mixer-seed.yaml", dir);
	unlink(p);
	snprintf(p, sizeof p, "%s/memo-edges.yaml", dir);
	unlink(p);
	rmdir(dir);
}

/* xorshift: the same sequence on every run */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void put_str(struct wire_writer *w, uint16_t id, const char *s)
{
	wire_attr(w, id, MIXD_T_STRING, NULL, 0);
	wire_bytes(w, s, strlen(s));
}

static void put_i64(struct wire_writer *w, uint16_t id, uint8_t type, int64_t v)
{
	wire_attr(w, id, type, NULL, 0);
	wire_u64(w, (uint64_t)v);
}

/*
 * One record. What the config's rules and labels read comes from one of
 * 300 shapes (each attribute present or not, from a pool), so memo keys
 * repeat as a proxy's do; sizes, durations and times vary per record, and
 * are sometimes absent or unusable.
 */
static bool unique_shapes;

static uint32_t make_record(uint8_t *buf, uint64_t *seed)
{
	static const char *const proto[] = {"http", "grpc", "tcp", "http"};
	static const char *const kind[] = {"inbound", "outbound"};
	static const char *const uid[] = {
		"kubernetes://bookinfo_pp-v1.instance-1f0c._app",
		"kubernetes://bookinfo_rv-v2.instance-c96b._app",
		"kubernetes://unknown-task.instance-0000._app",
	};
	static const char *const host[] = {
		"reviews.default.svc.cluster.local",
		"ratings.default.svc.cluster.local",
		"productpage.default.svc.cluster.local",
		"details.default.svc.cluster.local",
		"", /* present but empty */
	};
	static const int64_t code[] = {200, 200, 404, 503, 0};
	static const char *const ns[] = {"bookinfo", "default"};
	/* 300 shapes, or with @unique_shapes one per record */
	uint64_t shape = 0x2545f4914f6cdd1dull *
			 (1 + (unique_shapes ? rnd(seed) : rnd(seed) % 300)),
		 *sh = &shape;
	struct wire_writer w;
	wire_init(&w, buf, RECORD_CAP);
#define MAYBE(s, pct) (rnd(s) % 100 < (pct))
#define PICK(s, a) a[rnd(s) % (sizeof a / sizeof a[0])]
	if (MAYBE(sh, 95))
		put_str(&w, MIXD_ATTR_CONTEXT_PROTOCOL, PICK(sh, proto));
	if (MAYBE(sh, 90))
		put_str(&w, MIXD_ATTR_CONTEXT_REPORTER_KIND, PICK(sh, kind));
	if (MAYBE(sh, 85))
		put_str(&w, MIXD_ATTR_SOURCE_UID, PICK(sh, uid));
	if (MAYBE(sh, 85))
		put_str(&w, MIXD_ATTR_DESTINATION_UID, PICK(sh, uid));
	if (unique_shapes || MAYBE(sh, 50)) {
		uint8_t ip[4] = {9, (uint8_t)(unique_shapes ? rnd(sh) : 0),
				 (uint8_t)(unique_shapes ? rnd(sh) : 0),
				 (uint8_t)(2 + rnd(sh) % 3)};
		wire_attr(&w, MIXD_ATTR_SOURCE_IP, MIXD_T_IP, NULL, 0);
		wire_ip(&w, ip, 4);
	}
	if (MAYBE(sh, 80))
		put_i64(&w, MIXD_ATTR_DESTINATION_PORT, MIXD_T_INT64,
			rnd(sh) % 2 ? 9080 : 8080);
	if (MAYBE(sh, 90))
		put_str(&w, MIXD_ATTR_DESTINATION_SERVICE_HOST, PICK(sh, host));
	if (MAYBE(sh, 60))
		put_str(&w, MIXD_ATTR_DESTINATION_SERVICE_NAME, "reviews");
	if (MAYBE(sh, 90))
		put_i64(&w, MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, PICK(sh, code));
	if (MAYBE(sh, 70)) {
		wire_attr(&w, MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL, NULL, 0);
		wire_u8(&w, rnd(sh) % 2);
	}
	if (MAYBE(sh, 50))
		put_str(&w, MIXD_ATTR_SOURCE_PRINCIPAL, "ns/default/sa/pp");
	if (MAYBE(sh, 60))
		put_str(&w, MIXD_ATTR_SOURCE_NAMESPACE, PICK(sh, ns));
	if (MAYBE(sh, 60))
		put_str(&w, MIXD_ATTR_DESTINATION_NAMESPACE, PICK(sh, ns));
	/* per request */
	if (MAYBE(seed, 90))
		put_i64(&w, MIXD_ATTR_REQUEST_SIZE, MIXD_T_INT64,
			(int64_t)(rnd(seed) % 3000) - 5);
	if (MAYBE(seed, 90))
		put_i64(&w, MIXD_ATTR_RESPONSE_SIZE, MIXD_T_INT64,
			(int64_t)(rnd(seed) % 100000));
	if (MAYBE(seed, 90))
		put_i64(&w, MIXD_ATTR_RESPONSE_DURATION, MIXD_T_DURATION,
			(int64_t)(rnd(seed) % 2000) * 1000000);
	put_i64(&w, MIXD_ATTR_REQUEST_TIME, MIXD_T_TIMESTAMP,
		1700000000000000000ll + (int64_t)(rnd(seed) % 1000000));
	if (MAYBE(seed, 30))
		put_i64(&w, MIXD_ATTR_CONNECTION_SENT_BYTES, MIXD_T_INT64,
			(int64_t)(rnd(seed) % 5000));
#undef MAYBE
#undef PICK
	assert_false(w.overflow);
	return w.len;
}

/* A snapshot with the two bookinfo apps; @version labels them. */
static struct mar_snap *bookinfo(const char *version)
{
	char json[2048];
	snprintf(json, sizeof json,
		 "{\"apps\":["
		 "{\"id\":\"/bookinfo/pp-v1\",\"labels\":{\"istio\":\"productpage\","
		 "\"version\":\"%s\"},\"networks\":[{\"mode\":\"container\"}],"
		 "\"tasks\":[{\"id\":\"bookinfo_pp-v1.instance-1f0c._app.1\","
		 "\"appId\":\"/bookinfo/pp-v1\",\"host\":\"10.1.0.1\","
		 "\"state\":\"TASK_RUNNING\",\"ipAddresses\":[{\"ipAddress\":"
		 "\"9.0.0.2\"}]}]},"
		 "{\"id\":\"/bookinfo/rv-v2\",\"labels\":{\"istio\":\"reviews\","
		 "\"version\":\"%s\"},\"networks\":[{\"mode\":\"container\"}],"
		 "\"tasks\":[{\"id\":\"bookinfo_rv-v2.instance-c96b._app.1\","
		 "\"appId\":\"/bookinfo/rv-v2\",\"host\":\"10.1.0.2\","
		 "\"state\":\"TASK_RUNNING\",\"ipAddresses\":[{\"ipAddress\":"
		 "\"9.0.0.3\"}]}]}]}",
		 version, version);
	cJSON *apps = mar_parse_apps(json, strlen(json));
	struct mar_snap *snap = NULL;
	assert_non_null(apps);
	assert_true(mar_snap_build(apps, NULL, NULL, &snap, NULL) >= 0);
	cJSON_Delete(apps);
	return snap;
}

/* One shard, driven from this thread as the shard thread would. */
struct side {
	struct agg *a;
	struct shard *sh;
};

static void side_init(struct side *s, bool memo, uint64_t series_limit,
		      int64_t expiry_ns, struct mar_resolver *res)
{
	struct cfg *c = cfg_load(config_dir(), "default");
	assert_non_null(c);
	assert_true(cfg_ok(c));
	struct agg_options o = {.shards = 1, .series_limit = series_limit,
				.no_memo = !memo};
	assert_int_equal(agg_create(&o, NULL, &s->a), 0);
	assert_int_equal(agg_set_config(s->a, c), 0);
	struct agg_plan *p = s->a->plan;
	/* the seed's config is one the memo serves, unless told not to */
	assert_int_equal(p->memo_ok, memo);
	if (expiry_ns) { /* as if every handler had this policy */
		p->expiry_ns = expiry_ns;
		p->expiry_check_ns = expiry_ns / 2;
		for (size_t d = 0; d < p->ndimsets; d++)
			p->dimsets[d].expiry_ns = expiry_ns;
	}
	s->sh = &s->a->shards[0];
	s->sh->state = state_create(p, NULL, &s->a->epoch, &s->sh->retired);
	assert_non_null(s->sh->state);
	if (res)
		assert_non_null(s->sh->mar = mar_reader_create(res));
}

static void side_free(struct side *s)
{
	mar_reader_destroy(s->sh->mar);
	s->sh->mar = NULL;
	agg_destroy(s->a);
}

static void side_record_as(struct side *s, const uint8_t *rec, uint32_t len,
			   const struct ingest_layout *lay, int64_t now_ns)
{
	static struct attr_table t;
	struct shard_state *st = s->sh->state;
	if (s->sh->mar)
		mar_read_begin(s->sh->mar);
	assert_int_equal(state_record(st, &t, rec, len, lay, now_ns,
				      s->a->o.series_limit, s->sh->mar,
				      &s->a->epoch, &s->sh->retired),
			 INGEST_REJ_NONE);
	if (s->sh->mar)
		mar_read_end(s->sh->mar);
}

static void side_record(struct side *s, const uint8_t *rec, uint32_t len,
			int64_t now_ns)
{
	side_record_as(s, rec, len, NULL, now_ns);
}

/*
 * Record @rec (attribute by attribute, as make_record() writes it) as a
 * template would send it: a layout record (@out, *@olen) and its layout,
 * one per set of attributes, kept for the test's life as a ring keeps
 * its slots, and loaded twice, as by two rings, used in turn. Over a
 * thousand sets of attributes come up: more than a state gives key ids
 * (the rest are keyed the headered way) and than its cache of serials
 * holds. Written from the ABI's drawing in <mixd/ring.h>.
 */
#define LAYOUTS_MAX 8192
static struct {
	struct mixd_layout raw;
	struct ingest_layout lay, twin; /* as two rings load one template */
} *layouts;
static size_t nlayouts;

static const struct ingest_layout *as_layout(const uint8_t *rec, uint32_t len,
					     uint8_t *out, uint32_t *olen)
{
	struct fld {
		uint16_t id;
		uint8_t type, group;
		const uint8_t *v;
		uint32_t n;
	} f[MIXD_LAYOUT_FIELDS], g[MIXD_LAYOUT_FIELDS];
	unsigned k = 0;
	for (const uint8_t *p = rec, *end = rec + len; p < end; k++) {
		assert_true(k < MIXD_LAYOUT_FIELDS);
		memcpy(&f[k].id, p, 2);
		f[k].type = p[2];
		p += 3;
		switch (f[k].type) {
		case MIXD_T_INT64:
		case MIXD_T_DOUBLE:
		case MIXD_T_TIMESTAMP:
		case MIXD_T_DURATION:
			f[k].group = 0, f[k].v = p, f[k].n = 8, p += 8;
			break;
		case MIXD_T_BOOL:
			f[k].group = 1, f[k].v = p, f[k].n = 1, p += 1;
			break;
		case MIXD_T_IP:
			f[k].group = 2, f[k].n = p[0], f[k].v = p + 1;
			p += 1 + p[0];
			break;
		default:
			f[k].group = 3;
			memcpy(&f[k].n, p, 4);
			f[k].v = p + 4;
			p += 4 + f[k].n;
		}
	}
	unsigned n = 0;
	for (uint8_t grp = 0; grp < 4; grp++)
		for (unsigned i = 0; i < k; i++)
			if (f[i].group == grp)
				g[n++] = f[i];
	struct mixd_layout raw = {.n = n};
	for (unsigned i = 0; i < n; i++)
		raw.f[i] = (struct mixd_layout_field){g[i].id, g[i].type, 0};
	size_t at = 0;
	while (at < nlayouts && memcmp(&layouts[at].raw, &raw, sizeof raw))
		at++;
	if (at == nlayouts) {
		if (!layouts)
			assert_non_null(layouts = calloc(LAYOUTS_MAX,
							 sizeof *layouts));
		assert_true(nlayouts < LAYOUTS_MAX);
		layouts[at].raw = raw;
		assert_true(ingest_layout_load(&layouts[at].lay, &raw));
		assert_true(ingest_layout_load(&layouts[at].twin, &raw));
		nlayouts++;
	}
	uint8_t *o = out;
	uint32_t hd = MIXD_ATTR_LAYOUT;
	memcpy(o, &hd, 4), o += 4;
	for (unsigned i = 0; i < n; i++)
		if (g[i].group < 2)
			memcpy(o, g[i].v, g[i].n), o += g[i].n;
	for (unsigned i = 0; i < n; i++)
		if (g[i].group >= 2) {
			uint16_t l = (uint16_t)g[i].n;
			memcpy(o, &l, 2), o += 2;
		}
	for (unsigned i = 0; i < n; i++)
		if (g[i].group >= 2)
			memcpy(o, g[i].v, g[i].n), o += g[i].n;
	*olen = (uint32_t)(o - out);
	static unsigned turn;
	return turn++ & 1 ? &layouts[at].twin : &layouts[at].lay;
}

/* The memo side gets records as layout records, the other side as they
 * were made (set by the layout tests). */
static bool as_layouts;

struct flat_row {
	const struct row *r;
	unsigned ncells;
};

static int flat_cmp(const void *a, const void *b)
{
	const struct flat_row *x = a, *y = b;
	uint32_t n = x->r->key_len < y->r->key_len ? x->r->key_len : y->r->key_len;
	int c = memcmp(row_key(x->r, x->ncells), row_key(y->r, y->ncells), n);
	return c ? c : (int)x->r->key_len - (int)y->r->key_len;
}

static struct flat_row *sorted_rows(const struct series *se, size_t *n)
{
	struct flat_row *v = calloc(se->n + 1, sizeof *v);
	assert_non_null(v);
	*n = 0;
	for (uint64_t i = 0; i <= se->arr->mask; i++)
		if (se->arr->slot[i])
			v[(*n)++] = (struct flat_row){se->arr->slot[i], se->ncells};
	assert_int_equal(*n, se->n);
	qsort(v, *n, sizeof *v, flat_cmp);
	return v;
}

/* Every row, cell, error and overflow count equal; returns rows seen. */
static size_t assert_same(const struct side *x, const struct side *y)
{
	const struct shard_state *a = x->sh->state, *b = y->sh->state;
	const struct agg_plan *p = a->plan;
	size_t rows = 0;
	for (size_t f = 0; f < p->nfams; f++)
		if (a->inst_errors[f] != b->inst_errors[f])
			fail_msg("family %s: %llu instance errors with the memo, "
				 "%llu without",
				 p->fams[f].name,
				 (unsigned long long)a->inst_errors[f],
				 (unsigned long long)b->inst_errors[f]);
	for (size_t d = 0; d < p->ndimsets; d++) {
		const struct series *sa = a->series[d], *sb = b->series[d];
		assert_memory_equal(sa->overflow, sb->overflow, sizeof sa->overflow);
		assert_memory_equal(sa->expired, sb->expired, sizeof sa->expired);
		size_t na, nb;
		struct flat_row *ra = sorted_rows(sa, &na), *rb = sorted_rows(sb, &nb);
		assert_int_equal(na, nb);
		for (size_t i = 0; i < na; i++) {
			assert_int_equal(flat_cmp(&ra[i], &rb[i]), 0);
			assert_int_equal(ra[i].r->touched, rb[i].r->touched);
			assert_int_equal(ra[i].r->last_ns, rb[i].r->last_ns);
			assert_memory_equal(ra[i].r->cells, rb[i].r->cells,
					    sa->ncells * 8);
		}
		rows += na;
		free(ra);
		free(rb);
	}
	return rows;
}

/* The memo served most records (and missed some): it was exercised. */
static void assert_memo_used(const struct side *m, const struct side *n)
{
	uint64_t hits, misses;
	state_memo_stats(m->sh->state, &hits, &misses);
	if (hits < misses || misses == 0)
		fail_msg("memo: %llu hits, %llu misses",
			 (unsigned long long)hits, (unsigned long long)misses);
	state_memo_stats(n->sh->state, &hits, &misses);
	assert_int_equal(hits + misses, 0);
}

/* Feed both sides the same records, a record every @step_ns; expire every
 * @expire_every records, inject a new snapshot every @swap_every. */
/* A record as both sides get it. */
struct fed {
	uint8_t rec[RECORD_CAP], lrec[RECORD_CAP];
	uint32_t len, llen;
	const struct ingest_layout *lay;
};

static void make_fed(struct fed *f, uint64_t *seed)
{
	f->len = make_record(f->rec, seed);
	if (as_layouts)
		f->lay = as_layout(f->rec, f->len, f->lrec, &f->llen);
}

/*
 * @records records to both sides. Layout records go to the memo side as a
 * ring's poll hands them over: each announced (state_ahead())
 * INGEST_AHEAD records before it is processed -- across expiry and
 * snapshot swaps too -- except that every 7th announcement names another
 * buffer than the record comes in (which must only waste it).
 */
static void feed(struct side *m, struct side *n, size_t records,
		 uint64_t seed, int64_t step_ns, size_t expire_every,
		 struct mar_resolver *res, size_t swap_every)
{
	static struct fed f[INGEST_AHEAD + 1];
	int64_t now = 1000000000;
	size_t made = 0;
	for (size_t i = 0; i < records; i++) {
		for (; made < records && made <= i + INGEST_AHEAD; made++) {
			struct fed *g = &f[made % (INGEST_AHEAD + 1)];
			make_fed(g, &seed);
			static uint8_t decoy[RECORD_CAP];
			if (as_layouts && made % 7 == 6)
				memcpy(decoy, g->lrec, g->llen);
			if (as_layouts)
				state_ahead(m->sh->state,
					    made % 7 == 6 ? decoy : g->lrec,
					    g->llen, g->lay);
		}
		const struct fed *cur = &f[i % (INGEST_AHEAD + 1)];
		now += step_ns;
		if (as_layouts)
			side_record_as(m, cur->lrec, cur->llen, cur->lay, now);
		else
			side_record(m, cur->rec, cur->len, now);
		side_record(n, cur->rec, cur->len, now);
		if (expire_every && i % expire_every == expire_every - 1) {
			state_expire(m->sh->state, now, &m->a->epoch,
				     &m->sh->retired);
			state_expire(n->sh->state, now, &n->a->epoch,
				     &n->sh->retired);
		}
		if (res && swap_every && i % swap_every == swap_every - 1) {
			char v[16];
			snprintf(v, sizeof v, "v%zu", i / swap_every % 3);
			assert_int_equal(mar_resolver_inject(res, bookinfo(v)), 0);
		}
	}
}

/* feed(), then check the memo was exercised. */
static void drive(struct side *m, struct side *n, size_t records,
		  uint64_t seed, int64_t step_ns, size_t expire_every,
		  struct mar_resolver *res, size_t swap_every)
{
	feed(m, n, records, seed, step_ns, expire_every, res, swap_every);
	assert_memo_used(m, n);
}

/* Sum of a per-family counter array of struct series (at @off) over every
 * set of @s. */
static uint64_t sum_counts(const struct side *s, size_t off)
{
	uint64_t n = 0;
	for (size_t d = 0; d < s->sh->state->plan->ndimsets; d++) {
		const uint64_t *c = (const uint64_t *)((const char *)
						       s->sh->state->series[d] + off);
		for (int k = 0; k < 64; k++)
			n += c[k];
	}
	return n;
}

static void test_same_as_without_memo(void **state)
{
	(void)state;
	struct side m, n;
	side_init(&m, true, 100000, 0, NULL);
	side_init(&n, false, 100000, 0, NULL);
	drive(&m, &n, 50000, 0x9e3779b97f4a7c15ull, 1000, 0, NULL, 0);
	size_t rows = assert_same(&m, &n);
	assert_true(rows > 50);
	/* The edge cases happened: labels and values failed. */
	uint64_t errors = 0;
	for (size_t f = 0; f < m.sh->state->plan->nfams; f++)
		errors += m.sh->state->inst_errors[f];
	assert_true(errors > 1000);
	side_free(&m);
	side_free(&n);
}

/* Records that never repeat: the memo stands aside (it looks up only a
 * window's worth now and then), and takes over again when they do. */
static void test_memo_stands_aside(void **state)
{
	(void)state;
	struct side m, n;
	uint64_t hits, misses;
	side_init(&m, true, 100000, 0, NULL);
	side_init(&n, false, 100000, 0, NULL);
	unique_shapes = true;
	feed(&m, &n, 60000, 99, 1000, 0, NULL, 0);
	unique_shapes = false;
	assert_same(&m, &n);
	state_memo_stats(m.sh->state, &hits, &misses);
	if (hits + misses > 60000 / 4)
		fail_msg("the memo looked up %llu of 60000 unique records",
			 (unsigned long long)(hits + misses));
	feed(&m, &n, 200000, 100, 1000, 0, NULL, 0);
	assert_same(&m, &n);
	uint64_t h2, m2;
	state_memo_stats(m.sh->state, &h2, &m2);
	assert_true(h2 - hits > 100000); /* serving again */
	side_free(&m);
	side_free(&n);
}

/* The memo itself: keys found exactly, its key budget holds, and an
 * invalidation forgets everything. */
static void test_memo_table(void **state)
{
	(void)state;
	struct memo m;
	uint8_t key[300];
	assert_int_equal(memo_init(&m, 2, 3, 64, 1000), 0);
	assert_true(memo_capacity(&m) >= 64);
	/* Three keys of 300 bytes fit a budget of 1,000; a fourth does not. */
	for (int i = 0; i < 4; i++) {
		memset(key, 'a' + i, sizeof key);
		struct memo_ent *e = memo_claim(&m, 1000 + i, key, sizeof key);
		if (i < 3) {
			assert_non_null(e);
			memo_rows(e)[1] = (struct row *)(uintptr_t)(i + 1);
			memo_hits(&m, e)[2] = (uint8_t)(10 + i);
		} else {
			assert_null(e);
		}
	}
	assert_true(m.key_bytes <= 1000);
	for (int i = 0; i < 3; i++) {
		memset(key, 'a' + i, sizeof key);
		struct memo_ent *e = memo_find(&m, 1000 + i, key, sizeof key);
		assert_non_null(e);
		assert_ptr_equal(memo_rows(e)[1], (struct row *)(uintptr_t)(i + 1));
		assert_int_equal(memo_hits(&m, e)[2], 10 + i);
		key[299] ^= 1; /* same hash, other key: not found */
		assert_null(memo_find(&m, 1000 + i, key, sizeof key));
	}
	memo_invalidate(&m);
	memset(key, 'a', sizeof key);
	assert_null(memo_find(&m, 1000, key, sizeof key));
	/* Recycled entries reuse their key buffers: still within budget. */
	for (int i = 0; i < 100; i++) {
		memset(key, i, sizeof key);
		memo_claim(&m, (uint64_t)i * 0x9e3779b97f4a7c15ull, key, sizeof key);
		assert_true(m.key_bytes <= 1000);
	}
	memo_free(&m);
}

/* Both sides at a series limit of 20 label sets: the same overflow. */
static void at_the_series_limit(void)
{
	struct side m, n;
	side_init(&m, true, 20, 0, NULL);
	side_init(&n, false, 20, 0, NULL);
	drive(&m, &n, 30000, 12345, 1000, 0, NULL, 0);
	assert_same(&m, &n);
	assert_true(sum_counts(&m, offsetof(struct series, overflow)) > 0);
	side_free(&m);
	side_free(&n);
}

static void test_series_limit(void **state)
{
	(void)state;
	at_the_series_limit();
}

static void test_expiry(void **state)
{
	(void)state;
	struct side m, n;
	/* A record every 1 ms; rows expire after 300 ms without one, and
	 * expiry runs every 2 s. */
	side_init(&m, true, 100000, 300000000, NULL);
	side_init(&n, false, 100000, 300000000, NULL);
	drive(&m, &n, 30000, 777, 1000000, 2000, NULL, 0);
	assert_same(&m, &n);
	assert_true(sum_counts(&m, offsetof(struct series, expired)) > 0);
	side_free(&m);
	side_free(&n);
}

/* An edge record: http, code 200, host reviews; @rsize < 0: no
 * response.size (edge_gauge's value, which has no default, fails). */
static uint32_t edge_record(uint8_t *buf, int64_t rsize)
{
	struct wire_writer w;
	wire_init(&w, buf, RECORD_CAP);
	put_str(&w, MIXD_ATTR_CONTEXT_PROTOCOL, "http");
	put_str(&w, MIXD_ATTR_DESTINATION_SERVICE_HOST, "reviews");
	put_i64(&w, MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, 200);
	wire_attr(&w, MIXD_ATTR_CONNECTION_MTLS, MIXD_T_BOOL, NULL, 0);
	wire_u8(&w, 1);
	put_i64(&w, MIXD_ATTR_REQUEST_SIZE, MIXD_T_INT64, 10);
	if (rsize >= 0)
		put_i64(&w, MIXD_ATTR_RESPONSE_SIZE, MIXD_T_INT64, rsize);
	assert_false(w.overflow);
	return w.len;
}

/* An agg of three shards on the test config, each with its state, played
 * by the caller's thread. */
static struct agg *three_shards(void)
{
	struct cfg *c = cfg_load(config_dir(), "default");
	assert_non_null(c);
	struct agg *a;
	struct agg_options o = {.shards = 3};
	assert_int_equal(agg_create(&o, NULL, &a), 0);
	assert_int_equal(agg_set_config(a, c), 0);
	for (int i = 0; i < 3; i++)
		assert_non_null(a->shards[i].state =
					state_create(a->plan, NULL, &a->epoch,
						     &a->shards[i].retired));
	return a;
}

/* A label set on three shards: the gauge is the value of the shard that
 * set it last, whatever another wrote later (only the counter beside it)
 * and in whatever order the copies are merged. */
static void test_gauge_merged_across_shards(void **state)
{
	(void)state;
	struct agg *a = three_shards();
	uint8_t rec[RECORD_CAP];
	static struct attr_table t;
	/* shard 0 sets the gauge to 100, shard 2 later to 500; shard 1,
	 * later still, only counts */
	const int64_t rsize[3] = {100, -1, 500}, when[3] = {1000, 3000, 2000};
	for (int i = 0; i < 3; i++) {
		uint32_t len = edge_record(rec, rsize[i]);
		assert_int_equal(state_record(a->shards[i].state, &t, rec, len,
					      NULL, when[i], 1000, NULL,
					      &a->epoch, &a->shards[i].retired),
				 INGEST_REJ_NONE);
	}
	struct agg_view *v;
	assert_int_equal(agg_view_create(a, &v), 0);
	int seen = 0;
	for (size_t f = 0; f < v->nfams; f++) {
		const struct agg_view_family *vf = &v->fams[f];
		bool gauge = !strcmp(vf->name, "istio_edge_gauge");
		if (!gauge && strcmp(vf->name, "istio_edge_total"))
			continue;
		const struct agg_view_set *vs = &v->sets[vf->set];
		assert_int_equal(vs->nrows, 1);
		const struct agg_view_row *r = &vs->rows[0];
		assert_true(r->touched >> vf->bit & 1);
		double d;
		memcpy(&d, &r->cells[vf->cell], 8);
		assert_true(d == (gauge ? 500.0 : 30.0));
		seen++;
	}
	assert_int_equal(seen, 2);
	agg_view_destroy(v);
	agg_destroy(a);
}

/* agg_view_counts() counts what agg_view_create() counts, without rows:
 * label sets held by several shards once, overflow past a small series
 * limit summed. */
static void test_view_counts(void **state)
{
	(void)state;
	struct agg *a = three_shards();
	uint8_t rec[RECORD_CAP];
	static struct attr_table t;
	uint64_t seed = 99;
	for (int k = 0; k < 3000; k++) {
		uint32_t len = make_record(rec, &seed);
		int i = k % 3;
		state_record(a->shards[i].state, &t, rec, len, NULL, k,
			     /* series limit */ 40, NULL, &a->epoch,
			     &a->shards[i].retired);
	}
	struct agg_view *v, *n;
	assert_int_equal(agg_view_create(a, &v), 0);
	assert_int_equal(agg_view_counts(a, &n), 0);
	assert_int_equal(n->nfams, v->nfams);
	uint64_t series = 0, overflow = 0, stored = 0, merged = 0;
	for (size_t f = 0; f < v->nfams; f++) {
		assert_int_equal(n->fams[f].series, v->fams[f].series);
		assert_int_equal(n->fams[f].overflow, v->fams[f].overflow);
		assert_int_equal(n->fams[f].expired, v->fams[f].expired);
		assert_int_equal(n->fams[f].errors, v->fams[f].errors);
		series += v->fams[f].series;
		overflow += v->fams[f].overflow;
	}
	for (size_t d = 0; d < n->nsets; d++) {
		assert_int_equal(n->sets[d].nrows, 0);
		merged += v->sets[d].nrows;
	}
	for (int i = 0; i < 3; i++)
		for (size_t d = 0; d < a->plan->ndimsets; d++)
			stored += a->shards[i].state->series[d]->n;
	/* the same label sets in several shards, and a limit reached */
	assert_true(series > 0 && overflow > 0);
	assert_true(stored > merged);
	agg_view_destroy(n);
	agg_view_destroy(v);
	agg_destroy(a);
}

/* Two reloads while a scrape holds the epoch: both old states are freed
 * by one poll, the newer first. The older one gave its series (and its
 * error counts) to the newer, which frees them; the older must not look
 * at them then. */
static void test_two_states_freed_in_one_poll(void **state)
{
	(void)state;
	struct side m;
	side_init(&m, true, 100000, 0, NULL);
	uint64_t seed = 99;
	uint8_t rec[RECORD_CAP];
	for (int i = 0; i < 1000; i++) {
		uint32_t len = make_record(rec, &seed);
		side_record(&m, rec, len, 1000000000 + i);
	}
	struct agg_epoch *e = &m.a->epoch;
	struct epoch_retired **rl = &m.sh->retired;
	struct shard_state *s1 = m.sh->state;
	int slot = epoch_enter(e); /* the scrape */
	/* the same config again: s2 takes s1's series over */
	struct shard_state *s2 = state_create(s1->plan, s1, e, rl);
	assert_non_null(s2);
	assert_ptr_equal(s2->series[0], s1->series[0]);
	/* and its instance errors go on (counters must not reset) */
	uint64_t errs = 0;
	for (size_t f = 0; f < s1->plan->nfams; f++) {
		assert_int_equal(s2->inst_errors[f], s1->inst_errors[f]);
		errs += s1->inst_errors[f];
	}
	assert_true(errs > 0);
	state_retire(s1, e, rl);
	/* a config whose sets all changed (a fresh state): s2's go */
	struct shard_state *s3 = state_create(s2->plan, NULL, e, rl);
	assert_non_null(s3);
	state_retire(s2, e, rl);
	m.sh->state = s3;
	epoch_poll(e, rl, false);
	assert_non_null(*rl); /* nothing is freed while the scrape is in */
	epoch_exit(e, slot);
	epoch_poll(e, rl, false);
	assert_null(*rl);
	side_free(&m);
}

/* A scrape's reading of one shard: every row of every table, in the
 * epoch, over and over until told to stop. */
struct scraper {
	struct side *s;
	int stop;      /* atomic */
	uint64_t rows; /* atomic */
	bool too_wide; /* a set had more cells than the buffer */
};

static void *scrape_loop(void *arg)
{
	struct scraper *sc = arg;
	struct agg_epoch *e = &sc->s->a->epoch;
	const struct shard_state *st = sc->s->sh->state;
	uint64_t cells[4096];
	while (!__atomic_load_n(&sc->stop, __ATOMIC_ACQUIRE)) {
		int slot = epoch_enter(e);
		for (size_t d = 0; d < st->plan->ndimsets; d++) {
			const struct series *se = st->series[d];
			const struct table_array *a =
				__atomic_load_n(&se->arr, __ATOMIC_ACQUIRE);
			if (se->ncells > 4096) { /* no cmocka assert here */
				sc->too_wide = true;
				continue;
			}
			for (uint64_t i = 0; i <= a->mask; i++) {
				const struct row *r =
					__atomic_load_n(&a->slot[i], __ATOMIC_ACQUIRE);
				uint64_t touched;
				int64_t last;
				if (!r)
					continue;
				row_read(r, se->ncells, cells, &touched, &last);
				__atomic_add_fetch(&sc->rows, 1, __ATOMIC_RELAXED);
			}
		}
		epoch_exit(e, slot);
	}
	return NULL;
}

/* Rows expire while a scrape reads the tables: a row is freed only once
 * no reader can reach it (ASan and TSan see any other order). */
static void test_expiry_under_a_scrape(void **state)
{
	(void)state;
	struct side m;
	side_init(&m, true, 100000, 1000000, NULL); /* expire after 1 ms */
	struct scraper sc = {.s = &m};
	pthread_t t;
	uint64_t seed = 4711;
	int64_t now = 1000000000;
	uint8_t rec[RECORD_CAP];
	for (int i = 0; i < 300; i++) { /* rows for the first pass */
		uint32_t len = make_record(rec, &seed);
		side_record(&m, rec, len, now += 1000);
	}
	assert_int_equal(pthread_create(&t, NULL, scrape_loop, &sc), 0);
	while (!__atomic_load_n(&sc.rows, __ATOMIC_RELAXED))
		sched_yield();
	for (int round = 0; round < 300; round++) {
		for (int i = 0; i < 300; i++) {
			uint32_t len = make_record(rec, &seed);
			side_record(&m, rec, len, now += 1000);
		}
		now += 10000000; /* every row is older than the expiry now */
		state_expire(m.sh->state, now, &m.a->epoch, &m.sh->retired);
		epoch_poll(&m.a->epoch, &m.sh->retired, false);
	}
	__atomic_store_n(&sc.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	assert_true(sum_counts(&m, offsetof(struct series, expired)) > 0);
	assert_false(sc.too_wide);
	side_free(&m);
}

/* Two sides, memo and not, reading a resolver that never reaches
 * Marathon and holds bookinfo("v1"); returns the resolver. */
static struct mar_resolver *resolver_sides(struct side *m, struct side *n,
					   FILE **log)
{
	struct mar_options o = {.addresses = "127.0.0.1:1",
				.backoff_min_ns = 10000000000ll,
				.log_file = *log = fopen("/dev/null", "w")};
	struct mar_resolver *res;
	assert_int_equal(mar_resolver_start(&o, &res), 0);
	assert_int_equal(mar_resolver_inject(res, bookinfo("v1")), 0);
	side_init(m, true, 100000, 0, res);
	side_init(n, false, 100000, 0, res);
	return res;
}

/* Undo resolver_sides(). */
static void resolver_sides_free(struct side *m, struct side *n,
				struct mar_resolver *res, FILE *log)
{
	side_free(m);
	side_free(n);
	mar_resolver_stop(res);
	fclose(log);
}

/* Label sets whose key holds @needle, over every set of @s. */
static size_t rows_with(const struct side *s, const char *needle, size_t n)
{
	size_t found = 0;
	for (size_t d = 0; d < s->sh->state->plan->ndimsets; d++) {
		size_t nr;
		struct flat_row *r = sorted_rows(s->sh->state->series[d], &nr);
		for (size_t i = 0; i < nr; i++)
			found += memmem(row_key(r[i].r, r[i].ncells),
					r[i].r->key_len, needle, n) != NULL;
		free(r);
	}
	return found;
}

static void test_snapshot_swaps(void **state)
{
	(void)state;
	FILE *log;
	struct side m, n;
	struct mar_resolver *res = resolver_sides(&m, &n, &log);
	drive(&m, &n, 30000, 4242, 1000, 0, res, 2500);
	size_t rows = assert_same(&m, &n);
	assert_true(rows > 50);
	/* The snapshots' versions became labels. */
	assert_true(rows_with(&m, "\x02\x00v2", 4) > 0);
	resolver_sides_free(&m, &n, res, log);
}

static uint64_t memo_misses(const struct side *s)
{
	uint64_t hits, misses;
	state_memo_stats(s->sh->state, &hits, &misses);
	return misses;
}

/* A new snapshot with the same tasks leaves the memo warm; one whose tasks
 * changed makes it forget exactly the records that resolve to them. */
static void test_memo_across_snapshots(void **state)
{
	(void)state;
	FILE *log;
	struct side m, n;
	struct mar_resolver *res = resolver_sides(&m, &n, &log);
	const uint64_t seed = 777;
	feed(&m, &n, 20000, seed, 1000, 0, NULL, 0);
	uint64_t m1 = memo_misses(&m);
	feed(&m, &n, 20000, seed, 1000, 0, NULL, 0); /* the same records */
	uint64_t warm = memo_misses(&m) - m1;
	/* three publishes of the same content, the records again */
	for (int k = 0; k < 3; k++)
		assert_int_equal(mar_resolver_inject(res, bookinfo("v1")), 0);
	uint64_t m2 = memo_misses(&m);
	feed(&m, &n, 20000, seed, 1000, 0, NULL, 0);
	assert_int_equal(memo_misses(&m) - m2, warm);
	/* the tasks' version changes: records that resolve miss once */
	assert_int_equal(mar_resolver_inject(res, bookinfo("v7")), 0);
	uint64_t m3 = memo_misses(&m);
	feed(&m, &n, 20000, seed, 1000, 0, NULL, 0);
	uint64_t changed = memo_misses(&m) - m3;
	assert_true(changed > warm + 50);
	assert_true(rows_with(&m, "\x02\x00v7", 4) > 0);
	assert_same(&m, &n);
	/* and are remembered again under it */
	uint64_t m4 = memo_misses(&m);
	feed(&m, &n, 20000, seed, 1000, 0, NULL, 0);
	assert_int_equal(memo_misses(&m) - m4, warm);
	assert_same(&m, &n);
	resolver_sides_free(&m, &n, res, log);
}

/* Layout records (what templates send) on the memo side, with their own
 * memo keys and the path that serves a found record without decoding it,
 * against the records with headers on the full path: the same tables --
 * through failing values and labels, expiry, and snapshot swaps. */
static void test_layout_records_same_as_without_memo(void **state)
{
	(void)state;
	struct side m, n;
	as_layouts = true;
	side_init(&m, true, 100000, 0, NULL);
	side_init(&n, false, 100000, 0, NULL);
	drive(&m, &n, 50000, 0x9e3779b97f4a7c15ull, 1000, 0, NULL, 0);
	assert_true(assert_same(&m, &n) > 50);
	assert_true(nlayouts > 10);
	/* most records were keyed when announced; no decoy was */
	uint64_t used = state_ahead_used(m.sh->state);
	assert_true(used > 50000 / 2);
	assert_true(used <= 50000 - 50000 / 7);
	side_free(&m);
	side_free(&n);

	side_init(&m, true, 100000, 0, NULL);
	side_init(&n, false, 100000, 0, NULL);
	drive(&m, &n, 30000, 777, 1000000, 2000, NULL, 0); /* expiry */
	assert_same(&m, &n);
	side_free(&m);
	side_free(&n);

	at_the_series_limit();

	FILE *log;
	struct mar_resolver *res = resolver_sides(&m, &n, &log);
	drive(&m, &n, 30000, 4242, 1000, 0, res, 2500); /* swaps */
	assert_same(&m, &n);
	assert_true(rows_with(&m, "\x02\x00v2", 4) > 0);
	resolver_sides_free(&m, &n, res, log);
	as_layouts = false;
}

/* Two shards of the seed's config, driven from this thread, each
 * knowing the other (as shard.c sets them up), at series limit @limit. */
static struct agg *two_shards(uint64_t limit)
{
	struct cfg *c = cfg_load(config_dir(), "default");
	assert_non_null(c);
	struct agg *a;
	struct agg_options o = {.shards = 2, .series_limit = limit};
	assert_int_equal(agg_create(&o, NULL, &a), 0);
	assert_int_equal(agg_set_config(a, c), 0);
	for (unsigned i = 0; i < 2; i++) {
		struct shard *sh = &a->shards[i];
		assert_non_null(sh->state = state_create(a->plan, NULL, &a->epoch,
							 &sh->retired));
		sh->state->peers = a->shards;
		sh->state->npeers = 2;
		sh->state->self = i;
	}
	return a;
}

/*
 * Two shards hold the same label sets, all idle, and expire at the same
 * moment: each label set is removed from both and counted expired once,
 * as the shards take turns (state_expire() returns false to the one that
 * must wait).
 */
struct expirer {
	struct agg *a;
	struct shard *sh;
	int64_t now;
	pthread_barrier_t *go;
};

static void *expire_when_told(void *arg)
{
	struct expirer *x = arg;
	pthread_barrier_wait(x->go);
	while (!state_expire(x->sh->state, x->now, &x->a->epoch,
			     &x->sh->retired))
		sched_yield();
	return NULL;
}

static void test_two_shards_expiring_at_once_count_once(void **state)
{
	(void)state;
	enum { SETS = 30000 };
	struct agg *a = two_shards(100000);
	a->plan->expiry_ns = 1000000000;
	for (size_t d = 0; d < a->plan->ndimsets; d++)
		a->plan->dimsets[d].expiry_ns = a->plan->expiry_ns;
	static struct attr_table t;
	uint8_t rec[RECORD_CAP];
	for (int k = 0; k < SETS; k++) {
		struct wire_writer w;
		wire_init(&w, rec, RECORD_CAP);
		put_str(&w, MIXD_ATTR_CONTEXT_PROTOCOL, "http");
		wire_attr(&w, MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, NULL, 0);
		wire_u64(&w, (uint64_t)(1000 + k));
		for (unsigned i = 0; i < 2; i++)
			assert_int_equal(state_record(a->shards[i].state, &t, rec,
						      w.len, NULL, 1000, 100000,
						      NULL, &a->epoch,
						      &a->shards[i].retired),
					 INGEST_REJ_NONE);
	}
	size_t d = 0; /* the set of istio_requests_total: the one with rows */
	while (!a->shards[0].state->series[d]->n)
		d++;
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, 2);
	struct expirer x[2];
	pthread_t th[2];
	for (unsigned i = 0; i < 2; i++) {
		x[i] = (struct expirer){a, &a->shards[i], 1000 + 10000000000ll, &go};
		assert_int_equal(pthread_create(&th[i], NULL, expire_when_told,
						&x[i]), 0);
	}
	for (unsigned i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&go);
	uint64_t expired = 0;
	for (unsigned i = 0; i < 2; i++) {
		const struct series *se = a->shards[i].state->series[d];
		assert_int_equal(se->n, 0);
		expired += se->expired[0]; /* the set's first family */
	}
	assert_int_equal(expired, SETS);
	agg_destroy(a);
}

/* A record of label set @code (response.code), with headers. */
static uint32_t code_record(uint8_t *buf, int64_t code)
{
	struct wire_writer w;
	wire_init(&w, buf, RECORD_CAP);
	put_str(&w, MIXD_ATTR_CONTEXT_PROTOCOL, "http");
	put_i64(&w, MIXD_ATTR_RESPONSE_CODE, MIXD_T_INT64, code);
	return w.len;
}

/* The sum and series of counter family @name in a new view of @a. */
static double counter_sum(struct agg *a, const char *name, uint64_t *series,
			  uint64_t *expired)
{
	struct agg_view *v;
	assert_int_equal(agg_view_create(a, &v), 0);
	double sum = -1;
	for (size_t f = 0; f < v->nfams; f++) {
		const struct agg_view_family *vf = &v->fams[f];
		if (strcmp(vf->name, name))
			continue;
		const struct agg_view_set *vs = &v->sets[vf->set];
		sum = 0;
		for (size_t r = 0; r < vs->nrows; r++) {
			if (!(vs->rows[r].touched >> vf->bit & 1))
				continue;
			double d;
			memcpy(&d, &vs->rows[r].cells[vf->cell], 8);
			sum += d;
		}
		*series = vf->series;
		*expired = vf->expired;
	}
	agg_view_destroy(v);
	return sum;
}

/* A directory holding the seed config and @extra as extra.yaml; its
 * path in @dir (from mkdtemp), removed by remove_extra_dir(). */
static void extra_dir(char *dir, const char *extra)
{
	char p[1200];
	assert_non_null(mkdtemp(dir));
	snprintf(p, sizeof p, "%s/mixer-seed.yaml", config_dir());
	char *seed = realpath(p, NULL);
	assert_non_null(seed);
	snprintf(p, sizeof p, "%s/mixer-seed.yaml", dir);
	assert_int_equal(symlink(seed, p), 0);
	free(seed);
	snprintf(p, sizeof p, "%s/extra.yaml", dir);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(extra, f);
	assert_int_equal(fclose(f), 0);
}

static void remove_extra_dir(const char *dir)
{
	char p[1200];
	snprintf(p, sizeof p, "%s/extra.yaml", dir);
	unlink(p);
	snprintf(p, sizeof p, "%s/mixer-seed.yaml", dir);
	unlink(p);
	rmdir(dir);
}

/* A prometheus handler (@policy: its spec line before the metrics) with
 * one counter on the seed's requestcount instance and its labels, and a
 * rule sending http records to it. */
#define COPY_HANDLER(policy)                                                   \
	"apiVersion: config.istio.io/v1alpha2\n"                               \
	"kind: prometheus\n"                                                   \
	"metadata: {name: copy, namespace: default}\n"                         \
	"spec:\n" policy "  metrics:\n"                                        \
	"  - name: requests_copy_total\n"                                      \
	"    instance_name: requestcount.metric.default\n"                     \
	"    kind: COUNTER\n"                                                  \
	"    label_names: [reporter, source_app, source_principal,\n"          \
	"      source_workload, source_workload_namespace,\n"                  \
	"      source_version, destination_app, destination_principal,\n"      \
	"      destination_workload, destination_workload_namespace,\n"        \
	"      destination_version, destination_service,\n"                    \
	"      destination_service_name, destination_service_namespace,\n"     \
	"      request_protocol, response_code,\n"                             \
	"      connection_security_policy]\n"                                  \
	"---\n"                                                                \
	"apiVersion: config.istio.io/v1alpha2\n"                               \
	"kind: rule\n"                                                         \
	"metadata: {name: copy, namespace: default}\n"                         \
	"spec:\n"                                                              \
	"  match: context.protocol == \"http\"\n"                              \
	"  actions:\n"                                                         \
	"  - handler: copy.prometheus\n"                                       \
	"    instances: [requestcount.metric]\n"

/* An agg of @n shards on the config in @dir, their states made, each
 * the others' peer as the shards make them. */
static struct agg *shards_on(const char *dir, unsigned n)
{
	struct cfg *c = cfg_load(dir, "default");
	assert_non_null(c);
	assert_true(cfg_ok(c));
	struct agg *a;
	struct agg_options o = {.shards = n, .series_limit = 1000};
	assert_int_equal(agg_create(&o, NULL, &a), 0);
	assert_int_equal(agg_set_config(a, c), 0);
	for (unsigned i = 0; i < n; i++) {
		struct shard *sh = &a->shards[i];
		assert_non_null(sh->state = state_create(a->plan, NULL,
							 &a->epoch,
							 &sh->retired));
		if (n > 1) {
			sh->state->peers = a->shards;
			sh->state->npeers = n;
			sh->state->self = i;
		}
	}
	return a;
}

static struct agg *one_shard_on(const char *dir)
{
	return shards_on(dir, 1);
}

/* Reload @a's one shard onto the config in @dir, as the shard does. */
static void reload_on(struct agg *a, const char *dir)
{
	struct cfg *c = cfg_load(dir, "default");
	assert_non_null(c);
	assert_true(cfg_ok(c));
	assert_int_equal(agg_set_config(a, c), 0);
	struct shard *sh = &a->shards[0];
	struct shard_state *old = sh->state;
	assert_non_null(sh->state = state_create(a->plan, old, &a->epoch,
						 &sh->retired));
	state_retire(old, &a->epoch, &sh->retired);
}

/* @n http records of label set @code into @a's one shard at @now. */
static void code_records(struct agg *a, int64_t code, int n, int64_t now)
{
	static struct attr_table t;
	uint8_t rec[RECORD_CAP];
	struct shard *sh = &a->shards[0];
	for (int i = 0; i < n; i++)
		assert_int_equal(state_record(sh->state, &t, rec,
					      code_record(rec, code), NULL, now,
					      1000, NULL, &a->epoch,
					      &sh->retired),
				 INGEST_REJ_NONE);
}

/* A reload that adds a metric with the labels of the seed's four HTTP
 * metrics (they share one table of rows) keeps their series and counts;
 * so does one that removes it again. Before, the new set of families
 * started empty: every series of the four reset to zero. */
static void test_a_reload_adding_a_metric_keeps_the_others_counts(void **state)
{
	(void)state;
	char dir[] = "/tmp/mixd-test-agg-add-XXXXXX";
	extra_dir(dir, COPY_HANDLER(""));
	struct agg *a = one_shard_on(config_dir());
	uint64_t series, expired;
	code_records(a, 200, 10, 1000);
	code_records(a, 404, 2, 1000);
	reload_on(a, dir);
	assert_true(counter_sum(a, "istio_requests_total", &series,
				&expired) == 12);
	assert_int_equal(series, 2);
	assert_true(counter_sum(a, "istio_requests_copy_total", &series,
				&expired) == 0);
	assert_int_equal(series, 0);
	code_records(a, 200, 5, 2000);
	assert_true(counter_sum(a, "istio_requests_total", &series,
				&expired) == 17);
	assert_true(counter_sum(a, "istio_requests_copy_total", &series,
				&expired) == 5);
	assert_int_equal(series, 1);
	reload_on(a, config_dir());
	assert_true(counter_sum(a, "istio_requests_total", &series,
				&expired) == 17);
	assert_int_equal(series, 2);
	assert_true(counter_sum(a, "istio_requests_copy_total", &series,
				&expired) == -1); /* gone */
	agg_destroy(a);
	remove_extra_dir(dir);
}

/* A handler with one counter, named @name, on an instance whose value
 * (request.size) code_record()'s records lack: each is an instance
 * error. */
#define SIZED_HANDLER(name)                                                    \
	"apiVersion: config.istio.io/v1alpha2\n"                               \
	"kind: metric\n"                                                       \
	"metadata: {name: sized, namespace: default}\n"                        \
	"spec:\n"                                                              \
	"  value: request.size\n"                                              \
	"  dimensions: {response_code: response.code | 200}\n"                 \
	"---\n"                                                                \
	"apiVersion: config.istio.io/v1alpha2\n"                               \
	"kind: prometheus\n"                                                   \
	"metadata: {name: sized, namespace: default}\n"                        \
	"spec:\n"                                                              \
	"  metrics:\n"                                                         \
	"  - name: " name "\n"                                                 \
	"    instance_name: sized.metric.default\n"                            \
	"    kind: COUNTER\n"                                                  \
	"    label_names: [response_code]\n"                                   \
	"---\n"                                                                \
	"apiVersion: config.istio.io/v1alpha2\n"                               \
	"kind: rule\n"                                                         \
	"metadata: {name: sized, namespace: default}\n"                        \
	"spec:\n"                                                              \
	"  match: context.protocol == \"http\"\n"                              \
	"  actions:\n"                                                         \
	"  - handler: sized.prometheus\n"                                      \
	"    instances: [sized.metric]\n"

/* The instance errors a view of @a gives instance @fqn, summed over the
 * families it feeds, as mixd exports them. */
static uint64_t instance_errors(struct agg *a, const char *fqn)
{
	struct agg_view *v;
	assert_int_equal(agg_view_create(a, &v), 0);
	uint64_t n = 0;
	for (size_t f = 0; f < v->nfams; f++)
		if (!strcmp(v->fams[f].instance, fqn))
			n += v->fams[f].errors;
	agg_view_destroy(v);
	return n;
}

/* Instance errors are exported per instance, so a reload that renames
 * the family an instance feeds keeps them: in a scrape while the shard
 * is still on the old plan, and after. They were carried by family name,
 * and went back to 0. */
static void test_a_reload_renaming_a_family_keeps_its_instance_errors(
	void **state)
{
	(void)state;
	char before[] = "/tmp/mixd-test-agg-err1-XXXXXX";
	char after[] = "/tmp/mixd-test-agg-err2-XXXXXX";
	extra_dir(before, SIZED_HANDLER("sized_total"));
	extra_dir(after, SIZED_HANDLER("sized_renamed_total"));
	struct agg *a = one_shard_on(before);
	code_records(a, 200, 3, 1000);
	assert_int_equal(instance_errors(a, "sized.metric.default"), 3);
	/* the new plan published, the shard not switched yet */
	struct cfg *c = cfg_load(after, "default");
	assert_non_null(c);
	assert_int_equal(agg_set_config(a, c), 0);
	assert_int_equal(instance_errors(a, "sized.metric.default"), 3);
	/* switched */
	struct shard *sh = &a->shards[0];
	struct shard_state *old = sh->state;
	assert_non_null(sh->state = state_create(a->plan, old, &a->epoch,
						 &sh->retired));
	state_retire(old, &a->epoch, &sh->retired);
	assert_int_equal(instance_errors(a, "sized.metric.default"), 3);
	code_records(a, 200, 2, 2000);
	assert_int_equal(instance_errors(a, "sized.metric.default"), 5);
	agg_destroy(a);
	remove_extra_dir(before);
	remove_extra_dir(after);
}

/* Many rules, each evaluating twenty dimensions for one record: every
 * dispatch counts. The values of each rule's plan came out of one scratch
 * arena of a fixed 64 KiB per record; past about 140 such rules the rest
 * failed for want of memory, silently, as a failed match. */
static void test_every_one_of_many_rules_counts(void **state)
{
	(void)state;
	enum { RULES = 300, DIMS = 20 };
	size_t cap = 4096 + RULES * 256, n = 0;
	char *extra = malloc(cap);
	assert_non_null(extra);
	n += (size_t)snprintf(extra + n, cap - n,
			      "apiVersion: config.istio.io/v1alpha2\n"
			      "kind: metric\n"
			      "metadata: {name: wide, namespace: default}\n"
			      "spec:\n  value: \"1\"\n  dimensions:\n");
	for (int d = 0; d < DIMS; d++)
		n += (size_t)snprintf(extra + n, cap - n,
				      "    d%d: source.labels[\"k%d\"] | "
				      "\"unknown\"\n",
				      d, d);
	n += (size_t)snprintf(extra + n, cap - n,
			      "---\napiVersion: config.istio.io/v1alpha2\n"
			      "kind: prometheus\n"
			      "metadata: {name: wide, namespace: default}\n"
			      "spec:\n  metrics:\n  - name: wide_total\n"
			      "    instance_name: wide.metric.default\n"
			      "    kind: COUNTER\n    label_names: [");
	for (int d = 0; d < DIMS; d++)
		n += (size_t)snprintf(extra + n, cap - n, "%sd%d", d ? ", " : "",
				      d);
	n += (size_t)snprintf(extra + n, cap - n, "]\n");
	for (int r = 0; r < RULES; r++)
		n += (size_t)snprintf(extra + n, cap - n,
				      "---\napiVersion: config.istio.io/v1alpha2\n"
				      "kind: rule\n"
				      "metadata: {name: wide%d, namespace: default}\n"
				      "spec:\n  match: context.protocol == \"http\"\n"
				      "  actions:\n  - handler: wide.prometheus\n"
				      "    instances: [wide.metric]\n",
				      r);
	assert_true(n < cap);
	char dir[] = "/tmp/mixd-test-agg-wide-XXXXXX";
	extra_dir(dir, extra);
	free(extra);
	struct agg *a = one_shard_on(dir);
	uint64_t series, expired;
	code_records(a, 200, 2, 1000);
	assert_true(counter_sum(a, "istio_wide_total", &series, &expired) ==
		    2 * RULES);
	assert_int_equal(series, 1);
	agg_destroy(a);
	remove_extra_dir(dir);
}

/* More label lists than the memo takes (64): the memo is off, and every
 * family counts. The sets' memo states used to be written regardless,
 * past their 64-entry arrays (UBSan stopped it; a release build went on
 * overwriting the shard's record counters). */
static void test_more_label_lists_than_the_memo_takes(void **state)
{
	(void)state;
	enum { SETS = 80 };
	size_t cap = 4096 + SETS * 512, n = 0;
	char *extra = malloc(cap);
	assert_non_null(extra);
	for (int i = 0; i < SETS; i++)
		n += (size_t)snprintf(extra + n, cap - n,
				      "apiVersion: config.istio.io/v1alpha2\n"
				      "kind: metric\n"
				      "metadata: {name: m%d, namespace: default}\n"
				      "spec:\n  value: \"1\"\n"
				      "  dimensions: {l%d: response.code | 0}\n---\n",
				      i, i);
	n += (size_t)snprintf(extra + n, cap - n,
			      "apiVersion: config.istio.io/v1alpha2\n"
			      "kind: prometheus\n"
			      "metadata: {name: sets, namespace: default}\n"
			      "spec:\n  metrics:\n");
	for (int i = 0; i < SETS; i++)
		n += (size_t)snprintf(extra + n, cap - n,
				      "  - {name: fam%d_total, instance_name: "
				      "m%d.metric.default, kind: COUNTER, "
				      "label_names: [l%d]}\n",
				      i, i, i);
	n += (size_t)snprintf(extra + n, cap - n,
			      "---\napiVersion: config.istio.io/v1alpha2\n"
			      "kind: rule\n"
			      "metadata: {name: sets, namespace: default}\n"
			      "spec:\n  actions:\n  - handler: sets.prometheus\n"
			      "    instances: [");
	for (int i = 0; i < SETS; i++)
		n += (size_t)snprintf(extra + n, cap - n, "%sm%d.metric",
				      i ? ", " : "", i);
	n += (size_t)snprintf(extra + n, cap - n, "]\n");
	assert_true(n < cap);
	char dir[] = "/tmp/mixd-test-agg-sets-XXXXXX";
	extra_dir(dir, extra);
	free(extra);
	struct agg *a = one_shard_on(dir);
	assert_false(a->plan->memo_ok);
	code_records(a, 200, 3, 1000);
	code_records(a, 404, 1, 1000);
	for (int i = 0; i < SETS; i++) {
		char name[64];
		uint64_t series, expired;
		snprintf(name, sizeof name, "istio_fam%d_total", i);
		assert_true(counter_sum(a, name, &series, &expired) == 4);
		assert_int_equal(series, 2);
	}
	assert_true(counter_sum(a, "istio_requests_total", &(uint64_t){0},
				&(uint64_t){0}) == 4);
	agg_destroy(a);
	remove_extra_dir(dir);
}

/* A scrape while a reload is under way, one shard on the new plan and one
 * still on the old, when the reload adds a metric to the labels of the
 * seed's four HTTP metrics (so their set is a new one): every shard's
 * share is counted. The lagging shard's rows used to be left out, and
 * istio_requests_total went down until it switched. */
static void test_a_scrape_in_mid_reload_counts_every_shard(void **state)
{
	(void)state;
	char dir[] = "/tmp/mixd-test-agg-lag-XXXXXX";
	extra_dir(dir, COPY_HANDLER(""));
	struct agg *a = three_shards();
	static struct attr_table t;
	uint8_t rec[RECORD_CAP];
	uint64_t series, expired;
	for (int i = 0; i < 3; i++)
		for (int k = 0; k <= i; k++)
			assert_int_equal(
				state_record(a->shards[i].state, &t, rec,
					     code_record(rec, 200 + k), NULL,
					     1000, 1000, NULL, &a->epoch,
					     &a->shards[i].retired),
				INGEST_REJ_NONE);
	assert_true(counter_sum(a, "istio_requests_total", &series,
				&expired) == 6);
	assert_int_equal(series, 3);

	struct cfg *c = cfg_load(dir, "default");
	assert_non_null(c);
	assert_true(cfg_ok(c));
	assert_int_equal(agg_set_config(a, c), 0);
	for (int i = 0; i < 3; i++) {
		/* shard i switched, the ones after it not yet */
		struct shard *sh = &a->shards[i];
		struct shard_state *old = sh->state;
		assert_non_null(sh->state = state_create(a->plan, old,
							 &a->epoch,
							 &sh->retired));
		state_retire(old, &a->epoch, &sh->retired);
		assert_true(counter_sum(a, "istio_requests_total", &series,
					&expired) == 6);
		assert_int_equal(series, 3);
		assert_true(counter_sum(a, "istio_requests_copy_total",
					&series, &expired) == 0);
		assert_int_equal(series, 0);
	}
	agg_destroy(a);
	remove_extra_dir(dir);
}

/* Records the io thread hands over after the shards have stopped (it goes
 * on until it is stopped itself, after them) are taken at the end, by
 * agg_destroy(): here ten socket records pushed once the drain is over,
 * each written by a stdio logentry. They used to be freed unread. */
static void test_records_handed_over_after_the_drain_are_taken(void **state)
{
	(void)state;
	char out[] = "/tmp/mixd-test-agg-late-out-XXXXXX";
	assert_non_null(mkdtemp(out));
	char log[sizeof out + 16], extra[2048];
	snprintf(log, sizeof log, "%s/log", out);
	snprintf(extra, sizeof extra,
		 "apiVersion: config.istio.io/v1alpha2\n"
		 "kind: stdio\n"
		 "metadata: {name: late, namespace: default}\n"
		 "spec: {outputAsJson: true, logStream: FILE, outputPath: %s}\n"
		 "---\napiVersion: config.istio.io/v1alpha2\n"
		 "kind: logentry\n"
		 "metadata: {name: late, namespace: default}\n"
		 "spec: {severity: '\"Info\"', variables: {code: response.code | 0}}\n"
		 "---\napiVersion: config.istio.io/v1alpha2\n"
		 "kind: rule\n"
		 "metadata: {name: late, namespace: default}\n"
		 "spec: {actions: [{handler: late.stdio, instances: [late.logentry]}]}\n",
		 log);
	char dir[] = "/tmp/mixd-test-agg-late-XXXXXX";
	extra_dir(dir, extra);
	struct cfg *c = cfg_load(dir, "default");
	assert_non_null(c);
	assert_true(cfg_ok(c));
	struct agg *a;
	struct agg_options o = {.shards = 2};
	assert_int_equal(agg_create(&o, NULL, &a), 0);
	assert_int_equal(agg_set_config(a, c), 0);
	assert_int_equal(agg_start(a), 0);
	agg_drain_and_stop(a);

	struct ingest_sink sink = agg_sink(a);
	uint8_t rec[RECORD_CAP];
	for (unsigned k = 0; k < 2; k++) {
		struct ingest_ring *q = sink.stream_queue(sink.ctx, k);
		for (int i = 0; i < 5; i++)
			assert_true(ingest_queue_push(q, rec,
						      code_record(rec, 200 + i)));
		sink.queue_kick(sink.ctx, q);
	}
	agg_destroy(a);

	FILE *f = fopen(log, "r");
	assert_non_null(f);
	int lines = 0;
	for (int ch; (ch = fgetc(f)) != EOF;)
		lines += ch == '\n';
	fclose(f);
	assert_int_equal(lines, 10);
	unlink(log);
	rmdir(out);
	remove_extra_dir(dir);
}

/* Each prometheus handler's metricsExpirationPolicy applies to its own
 * metrics, as Mixer kept one expiry cache per handler: a second handler
 * with a 1-minute policy, whose counter has the labels of the seed's
 * istio_requests_total, expires its series and leaves the seed's (whose
 * handler has no policy) alone. */
static void test_each_handler_expires_its_own_series(void **state)
{
	(void)state;
	char dir[] = "/tmp/mixd-test-agg-ttl-XXXXXX";
	extra_dir(dir, COPY_HANDLER("  metricsExpirationPolicy: "
				    "{metricsExpiryDuration: 1m}\n"));
	struct agg *a = one_shard_on(dir);
	assert_int_equal(a->plan->expiry_ns, 60000000000ll);
	/* The shards' clock: a scrape hides rows idle past their expiry by
	 * it, whether or not they have been removed yet. */
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	const int64_t t0 = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	for (int i = 0; i < 10; i++)
		code_records(a, 200 + i, 1, t0);
	uint64_t series, expired;
	assert_true(counter_sum(a, "istio_requests_copy_total", &series,
				&expired) == 10);
	assert_int_equal(series, 10);
	struct shard *sh = &a->shards[0];
	state_expire(sh->state, t0 + 120000000000ll, &a->epoch, &sh->retired);
	assert_true(counter_sum(a, "istio_requests_total", &series,
				&expired) == 10);
	assert_int_equal(series, 10);
	assert_int_equal(expired, 0);
	assert_true(counter_sum(a, "istio_requests_copy_total", &series,
				&expired) == 0);
	assert_int_equal(series, 0);
	assert_int_equal(expired, 10);
	agg_destroy(a);
	remove_extra_dir(dir);
}

/* A handler (@policy: its spec line before the metrics, as
 * COPY_HANDLER's) with two counters of the same labels (so one row holds
 * both): pair_all_total counts every http record, pair_err_total those
 * of a 5xx, from a rule of its own. */
#define PAIR_METRIC(name)                                                      \
	"apiVersion: config.istio.io/v1alpha2\n"                               \
	"kind: metric\n"                                                       \
	"metadata: {name: " name ", namespace: default}\n"                     \
	"spec:\n"                                                              \
	"  value: \"1\"\n"                                                     \
	"  dimensions: {proto: context.protocol}\n"                            \
	"---\n"
#define PAIR_RULE(name, match)                                                 \
	"---\n"                                                                \
	"apiVersion: config.istio.io/v1alpha2\n"                               \
	"kind: rule\n"                                                         \
	"metadata: {name: " name ", namespace: default}\n"                     \
	"spec:\n"                                                              \
	"  match: " match "\n"                                                 \
	"  actions:\n"                                                         \
	"  - handler: pair.prometheus\n"                                       \
	"    instances: [" name ".metric]\n"
#define PAIR_HANDLER(policy)                                                   \
	PAIR_METRIC("pairall")                                                 \
	PAIR_METRIC("pairerr")                                                 \
	"apiVersion: config.istio.io/v1alpha2\n"                               \
	"kind: prometheus\n"                                                   \
	"metadata: {name: pair, namespace: default}\n"                         \
	"spec:\n" policy "  metrics:\n"                                        \
	"  - {name: pair_all_total, instance_name: pairall.metric.default,\n"  \
	"     kind: COUNTER, label_names: [proto]}\n"                          \
	"  - {name: pair_err_total, instance_name: pairerr.metric.default,\n"  \
	"     kind: COUNTER, label_names: [proto]}\n"                          \
	PAIR_RULE("pairall", "context.protocol == \"http\"")                   \
	PAIR_RULE("pairerr", "response.code >= 500")

#define A_MINUTE "  metricsExpirationPolicy: {metricsExpiryDuration: 1m}\n"

/* The shards' clock, CLOCK_MONOTONIC_COARSE: a scrape hides what has
 * expired by it. */
static int64_t shard_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Counter family @name, in a new view of @a, sums to @sum over @series
 * label sets, with @expired expired. */
static void assert_counter(struct agg *a, const char *name, double sum,
			   uint64_t series, uint64_t expired)
{
	uint64_t n, x;
	double got = counter_sum(a, name, &n, &x);
	if (got != sum || n != series || x != expired)
		fail_msg("%s: sum %g over %llu series, %llu expired; want %g, "
			 "%llu, %llu",
			 name, got, (unsigned long long)n, (unsigned long long)x,
			 sum, (unsigned long long)series,
			 (unsigned long long)expired);
}

/* Families that share a row expire each on its own: 5xx records stop, and
 * a minute later pair_err_total's series is gone (from a scrape at once,
 * from the row at the next expiry pass, counted expired), while
 * pair_all_total's, updated since, stays. Before, the row's one time kept
 * both alive as long as either was updated. */
static void test_families_sharing_a_row_expire_each_on_its_own(void **state)
{
	(void)state;
	char dir[] = "/tmp/mixd-test-agg-pair-XXXXXX";
	extra_dir(dir, PAIR_HANDLER(A_MINUTE));
	struct agg *a = one_shard_on(dir);
	const int64_t now = shard_now(), minute = 60000000000ll;
	size_t f = 0;
	while (strcmp(a->plan->fams[f].name, "istio_pair_err_total"))
		f++;
	assert_int_not_equal(a->plan->dimsets[a->plan->fams[f].dimset].tcell, 0);
	code_records(a, 503, 1, now - 2 * minute);
	code_records(a, 200, 3, now);
	/* a scrape before any expiry pass */
	assert_counter(a, "istio_pair_all_total", 4, 1, 0);
	assert_counter(a, "istio_pair_err_total", 0, 0, 0);
	struct agg_view *v;
	assert_int_equal(agg_view_counts(a, &v), 0);
	assert_int_equal(v->fams[f].series, 0);
	agg_view_destroy(v);
	/* the pass */
	struct shard *sh = &a->shards[0];
	state_expire(sh->state, now, &a->epoch, &sh->retired);
	assert_counter(a, "istio_pair_err_total", 0, 0, 1);
	assert_counter(a, "istio_pair_all_total", 4, 1, 0);
	/* a 5xx again: a new series, from 1 */
	code_records(a, 503, 1, now);
	assert_counter(a, "istio_pair_err_total", 1, 1, 1);
	assert_counter(a, "istio_pair_all_total", 5, 1, 0);
	agg_destroy(a);
	remove_extra_dir(dir);
}

/* ... but not while another shard updates the family: shard 0's 5xx are a
 * minute old, shard 1's new. Shard 0's pass keeps its share (the sum must
 * not go down while the series lives), and a scrape shows both. */
static void test_a_family_another_shard_updates_does_not_expire(void **state)
{
	(void)state;
	char dir[] = "/tmp/mixd-test-agg-pair2-XXXXXX";
	extra_dir(dir, PAIR_HANDLER(A_MINUTE));
	struct agg *a = shards_on(dir, 2);
	const int64_t now = shard_now(), minute = 60000000000ll;
	static struct attr_table t;
	uint8_t rec[RECORD_CAP];
	const struct {
		unsigned shard;
		int64_t code, when;
	} in[] = {{0, 503, now - 2 * minute}, {0, 200, now},
		  {1, 503, now}};
	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
		struct shard *sh = &a->shards[in[i].shard];
		assert_int_equal(state_record(sh->state, &t, rec,
					      code_record(rec, in[i].code),
					      NULL, in[i].when, 1000, NULL,
					      &a->epoch, &sh->retired),
				 INGEST_REJ_NONE);
	}
	assert_counter(a, "istio_pair_err_total", 2, 1, 0);
	state_expire(a->shards[0].state, now, &a->epoch,
		     &a->shards[0].retired);
	assert_counter(a, "istio_pair_err_total", 2, 1, 0);
	assert_counter(a, "istio_pair_all_total", 3, 1, 0);
	agg_destroy(a);
	remove_extra_dir(dir);
}

/* A reload that gives the handler an expiry gives the rows' families their
 * times: the rows' own last update, so that nothing expires early. */
static void test_a_reload_adding_an_expiry_times_the_families(void **state)
{
	(void)state;
	char before[] = "/tmp/mixd-test-agg-pair3-XXXXXX";
	char after[] = "/tmp/mixd-test-agg-pair4-XXXXXX";
	extra_dir(before, PAIR_HANDLER(""));
	extra_dir(after, PAIR_HANDLER(A_MINUTE));
	struct agg *a = one_shard_on(before);
	const int64_t now = shard_now();
	code_records(a, 503, 2, now);
	reload_on(a, after);
	size_t f = 0;
	while (strcmp(a->plan->fams[f].name, "istio_pair_err_total"))
		f++;
	assert_int_not_equal(a->plan->dimsets[a->plan->fams[f].dimset].tcell, 0);
	struct shard *sh = &a->shards[0];
	state_expire(sh->state, now + 1000000000, &a->epoch, &sh->retired);
	assert_counter(a, "istio_pair_err_total", 2, 1, 0);
	assert_counter(a, "istio_pair_all_total", 2, 1, 0);
	agg_destroy(a);
	remove_extra_dir(before);
	remove_extra_dir(after);
}

/* The shards look for expired series on one grid, whenever each started
 * or last looked: a label set one shard removes is soon removed from the
 * others. Each re-armed its own "now + interval" before, and shards that
 * started or woke at different moments drifted apart by up to an
 * interval, a window in which a record revived the others' stale shares. */
static void test_shards_look_for_expired_series_together(void **state)
{
	(void)state;
	const int64_t every = 30000000000ll; /* 30 s */
	const int64_t t = 1234567890123456789ll - 1234567890123456789ll % every;
	/* started 1 ms and 29 s into one interval: the same next look */
	assert_true(expiry_next(t + 1000000, every) == t + every);
	assert_true(expiry_next(t + 29000000000ll, every) == t + every);
	/* a look exactly on the grid: the next one, a whole interval on */
	assert_true(expiry_next(t, every) == t + every);
	for (int64_t now = t - 5; now < t + 5; now++) {
		int64_t n = expiry_next(now, every);
		assert_true(n > now && n - now <= every && n % every == 0);
	}
}

/* A shard at the series limit keeps a label set another shard keeps (its
 * series must have all its records), but never past twice the limit:
 * three shards, limit 5, each with 5 label sets of its own; then shard 0
 * gets the other two's 10. It keeps 5 of them and counts the rest. */
static void test_label_sets_kept_for_other_shards_stop_at_twice_the_limit(
	void **state)
{
	(void)state;
	struct agg *a = three_shards();
	for (unsigned i = 0; i < 3; i++) {
		a->shards[i].state->peers = a->shards;
		a->shards[i].state->npeers = 3;
		a->shards[i].state->self = i;
	}
	static struct attr_table t;
	uint8_t rec[RECORD_CAP];
	const uint64_t limit = 5;
#define ON3(i, code)                                                           \
	assert_int_equal(state_record(a->shards[i].state, &t, rec,             \
				      code_record(rec, code), NULL, 1000,      \
				      limit, NULL, &a->epoch,                  \
				      &a->shards[i].retired),                  \
			 INGEST_REJ_NONE)
	for (int i = 0; i < 3; i++)
		for (int k = 0; k < 5; k++)
			ON3(i, 100 * (i + 1) + k);
	for (int i = 1; i < 3; i++)
		for (int k = 0; k < 5; k++)
			ON3(0, 100 * (i + 1) + k);
#undef ON3
	size_t f = 0;
	while (strcmp(a->plan->fams[f].name, "istio_requests_total"))
		f++;
	const struct series *se =
		a->shards[0].state->series[a->plan->fams[f].dimset];
	assert_int_equal(se->n, 2 * limit);
	assert_int_equal(se->overflow[a->plan->fams[f].bit], 5);
	agg_destroy(a);
}

/*
 * Shard B at the series limit refuses label set Z and remembers that;
 * once shard A stores Z, B's remembered refusal no longer stands (a row
 * was added somewhere): B stores Z too, so Z's series has every record.
 */
static void test_a_remembered_refusal_ends_when_another_shard_stores_it(void **state)
{
	(void)state;
	struct agg *a = two_shards(1);
	assert_true(a->plan->memo_ok);
	static struct attr_table t;
	uint8_t rec[RECORD_CAP];
	struct shard *sa = &a->shards[0], *sb = &a->shards[1];
#define ON(sh, code)                                                          \
	assert_int_equal(state_record((sh)->state, &t, rec,                   \
				      code_record(rec, code), NULL, 1000, 1,  \
				      NULL, &a->epoch, &(sh)->retired),       \
			 INGEST_REJ_NONE)
	ON(sb, 200); /* B's one label set */
	ON(sb, 404); /* refused, remembered */
	uint64_t served, missed;
	state_memo_stats(sb->state, &served, &missed);
	ON(sb, 404); /* refused again, from the memo */
	uint64_t served2, missed2;
	state_memo_stats(sb->state, &served2, &missed2);
	assert_int_equal(served2, served + 1);
	ON(sa, 404); /* A stores it */
	ON(sb, 404); /* B's refusal does not stand: B stores it too */
	ON(sb, 404);
#undef ON
	size_t d = 0;
	while (!sb->state->series[d]->n)
		d++;
	assert_int_equal(sb->state->series[d]->n, 2);
	assert_int_equal(sb->state->series[d]->overflow[0], 2);
	agg_destroy(a);
}

/* The bucket a value lands in, by the octave table, is the binary
 * search's for every kind of bounds: Istio's explicit and exponential
 * ones (at most one bound an octave), linear ones (many), negative,
 * subnormal and huge ones, and the values on, next to and between them,
 * zeros, infinities and NaN. */
static size_t bucket_by_count(const double *bd, size_t nb, double v)
{
	if (v != v)
		return nb;
	size_t b = 0;
	while (b < nb && v > bd[b])
		b++;
	return b;
}

static void test_octave_buckets(void **state)
{
	(void)state;
	static const double dur[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
				     0.5,   1,    2.5,   5,    10};
	static const double expo[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7};
	static const double few[] = {-3, -0.0, 1e-310, 7};
	static const double to_inf[] = {1, 2, INFINITY}; /* the config takes inf */
	double lin[40], many[300], pow2[8];
	for (int i = 0; i < 40; i++)
		lin[i] = -2 + 0.25 * i;
	for (int i = 0; i < 300; i++)
		many[i] = i;
	for (int i = 0; i < 8; i++)
		pow2[i] = ldexp(1.0, i - 2);
	const struct {
		const double *b;
		size_t n;
	} sets[] = {{dur, 11}, {expo, 8}, {few, 4}, {lin, 40},
		    {many, 300}, {pow2, 8}, {dur, 1}, {to_inf, 3}};
	uint64_t seed = 0x9E3779B97F4A7C15ull;
	for (size_t k = 0; k < sizeof sets / sizeof sets[0]; k++) {
		struct plan_family f = {.kind = FAM_HISTOGRAM,
					.bounds = sets[k].b,
					.nb = sets[k].n};
		assert_int_equal(plan_buckets(&f), 0);
		double v[4096];
		size_t nv = 0;
		const double special[] = {0.0, -0.0, INFINITY, -INFINITY, NAN,
					  -NAN, 1e-320, -1e-320, DBL_MAX,
					  -DBL_MAX, DBL_MIN, 0.5, 1, 2};
		for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
			v[nv++] = special[i];
		for (size_t i = 0; i < f.nb && nv + 5 < 4096; i++) {
			double b = f.bounds[i];
			v[nv++] = b;
			v[nv++] = nextafter(b, INFINITY);
			v[nv++] = nextafter(b, -INFINITY);
			v[nv++] = b * 1.5;
			v[nv++] = b / 3;
		}
		while (nv < 4096) { /* random bits: every exponent */
			seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
			double d;
			memcpy(&d, &seed, sizeof d);
			v[nv] = nv % 2 ? d : ldexp((double)(seed >> 11),
						   (int)(seed % 80) - 60);
			nv++;
		}
		for (size_t i = 0; i < nv; i++) {
			size_t want = bucket_by_count(f.bounds, f.nb, v[i]);
			if (fam_bucket(&f, v[i]) != want ||
			    fam_bucket_search(&f, v[i]) != want)
				fail_msg("bounds set %zu, value %a: %zu, search "
					 "%zu, want %zu",
					 k, v[i], fam_bucket(&f, v[i]),
					 fam_bucket_search(&f, v[i]), want);
		}
		free(f.padded);
		free(f.octave);
	}
}

/* Both memo hashes (the CRC32C one this CPU likely runs, and the portable
 * one) depend on every byte and on the length, and spread keys that
 * differ little: no two of 8,000 such keys share a hash, nor a bucket
 * half (the low or high 32 bits) more often than chance allows. */
static void test_memo_hashes(void **state)
{
	(void)state;
	uint64_t (*const fn[2])(const uint8_t *, uint32_t) = {memo_hash,
							       memo_hash_portable};
	static uint8_t key[320 + 16];
	for (int k = 0; k < 2; k++) {
		for (uint32_t len = 1; len <= 320; len += 29) {
			memset(key, 0, sizeof key);
			for (uint32_t i = 0; i < len; i++)
				key[i] = (uint8_t)(i * 7 + 1);
			uint64_t h = fn[k](key, len);
			for (uint32_t i = 0; i < len; i++) {
				key[i] ^= 0x10;
				assert_true(fn[k](key, len) != h);
				key[i] ^= 0x10;
			}
			if (len > 1) { /* a trailing zero is not nothing */
				key[len - 1] = 0;
				assert_true(fn[k](key, len) != fn[k](key, len - 1));
			}
		}
		enum { N = 8000 };
		static uint64_t hs[N];
		memset(key, 'a', 225);
		memset(key + 225, 0, 16);
		for (uint32_t i = 0; i < N; i++) {
			/* a host name and a response code, as label sets vary */
			snprintf((char *)key + 100, 8, "%05u", i / 4);
			key[200] = (uint8_t)(i % 4);
			hs[i] = fn[k](key, 225);
		}
		unsigned low = 0, high = 0;
		for (uint32_t i = 0; i < N; i++)
			for (uint32_t j = i + 1; j < N; j++) {
				assert_true(hs[i] != hs[j]);
				low += (uint32_t)hs[i] == (uint32_t)hs[j];
				high += hs[i] >> 32 == hs[j] >> 32;
			}
		/* 3.2e7 pairs over 2^32 values: about 0.01 expected */
		assert_true(low <= 2 && high <= 2);
	}
}

int main(void)
{
	const char *san = getenv("MIXD_SANITIZE");
	if (san && !strcmp(san, "thread"))
		cmocka_set_test_filter("test_expiry_under_a_scrape");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_as_without_memo),
		cmocka_unit_test(test_memo_stands_aside),
		cmocka_unit_test(test_memo_table),
		cmocka_unit_test(test_memo_across_snapshots),
		cmocka_unit_test(test_layout_records_same_as_without_memo),
		cmocka_unit_test(test_gauge_merged_across_shards),
		cmocka_unit_test(test_view_counts),
		cmocka_unit_test(test_two_states_freed_in_one_poll),
		cmocka_unit_test(test_expiry_under_a_scrape),
		cmocka_unit_test(test_octave_buckets),
		cmocka_unit_test(test_memo_hashes),
		cmocka_unit_test(test_series_limit),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_each_handler_expires_its_own_series),
		cmocka_unit_test(test_families_sharing_a_row_expire_each_on_its_own),
		cmocka_unit_test(test_a_family_another_shard_updates_does_not_expire),
		cmocka_unit_test(test_a_reload_adding_an_expiry_times_the_families),
		cmocka_unit_test(test_shards_look_for_expired_series_together),
		cmocka_unit_test(test_a_reload_adding_a_metric_keeps_the_others_counts),
		cmocka_unit_test(test_a_reload_renaming_a_family_keeps_its_instance_errors),
		cmocka_unit_test(test_every_one_of_many_rules_counts),
		cmocka_unit_test(test_more_label_lists_than_the_memo_takes),
		cmocka_unit_test(test_a_scrape_in_mid_reload_counts_every_shard),
		cmocka_unit_test(test_records_handed_over_after_the_drain_are_taken),
		cmocka_unit_test(test_label_sets_kept_for_other_shards_stop_at_twice_the_limit),
		cmocka_unit_test(test_two_shards_expiring_at_once_count_once),
		cmocka_unit_test(test_a_remembered_refusal_ends_when_another_shard_stores_it),
		cmocka_unit_test(test_snapshot_swaps),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	remove_config_dir();
	return rc;
}
