/*
 * memo.c -- a shard's record memo: what the record path decided for
 * records that looked the same.
 *
 * Everything the record path decides but the metric values -- which mesos
 * instances ran and what they bound, which rules matched, every label
 * value, hence which row of which table -- is a function of the attributes
 * the plan's expressions read (CEXL has no clock and no state), of the
 * Marathon snapshot and of the tables' rows. Proxies send the same few
 * hundred combinations of those attributes over and over; only sizes,
 * durations and times change per request. So the key of a record is the
 * values of the attributes in the plan's memo set, as they arrived, and
 * the memo maps it to the rows to update.
 *
 * Layout: buckets of MEMO_WAYS entries, each entry a fixed-stride header
 * followed by its per-set rows and outcomes and per-family dispatch
 * counts; keys live in per-entry buffers reused when a slot is recycled.
 * Hashes and key addresses sit in a separate array, a bucket's to a cache
 * line: with 100,000 label sets the memo is far larger than the caches,
 * and a probe that read each way's entry to see its hash took a miss per
 * way.
 * A key has two candidate buckets; a victim is the least recently used
 * entry of the two. Entries are valid for one memo generation: expiry
 * (rows freed) or a resize starts a new one. A new Marathon snapshot does
 * not: an entry remembers the fingerprint of the resolver's answers for
 * its record, and the record path checks it once under each new snapshot
 * (series.c, still_answers()), so the memo stays warm through Marathon's
 * churn and forgets only the records whose tasks changed.
 */
#include <stdlib.h>
#include <string.h>

#include "agg/agg_internal.h"

static size_t stride(unsigned nd, unsigned nf)
{
	size_t s = sizeof(struct memo_ent) + nd * (sizeof(struct row *) + 1) + nf;
	return (s + 7) & ~(size_t)7;
}

int memo_init(struct memo *m, unsigned nd, unsigned nf, uint64_t entries,
	      size_t key_budget)
{
	uint64_t nb = 1;
	while (nb * MEMO_WAYS < entries)
		nb <<= 1;
	memset(m, 0, sizeof *m);
	m->nd = nd;
	m->nf = nf;
	m->stride = stride(nd, nf);
	m->mask = nb - 1;
	m->gen = 1;
	m->key_budget = key_budget;
	_Static_assert(MEMO_WAYS * sizeof(struct memo_tag) == 64,
		       "a bucket's tags are one cache line");
	m->tags = aligned_alloc(64, nb * MEMO_WAYS * sizeof *m->tags);
	m->ents = calloc(nb * MEMO_WAYS, m->stride);
	if (!m->tags || !m->ents) {
		free(m->tags);
		free(m->ents);
		m->tags = NULL;
		m->ents = NULL;
		return -1;
	}
	memset(m->tags, 0, nb * MEMO_WAYS * sizeof *m->tags);
	return 0;
}

void memo_free(struct memo *m)
{
	for (uint64_t i = 0; m->tags && i < (m->mask + 1) * MEMO_WAYS; i++)
		free(m->tags[i].key);
	free(m->tags);
	free(m->ents);
	m->tags = NULL;
	m->ents = NULL;
}

uint64_t memo_capacity(const struct memo *m)
{
	return (m->mask + 1) * MEMO_WAYS;
}

int memo_resize(struct memo *m, uint64_t entries)
{
	struct memo n;
	if (memo_init(&n, m->nd, m->nf, entries, m->key_budget))
		return -1;
	n.gen = m->gen;
	memo_free(m);
	*m = n;
	return 0;
}

void memo_invalidate(struct memo *m)
{
	if (++m->gen)
		return;
	/* The generation wrapped (after 4 G invalidations): forget all. */
	for (uint64_t i = 0; i < memo_capacity(m); i++)
		memo_ent_at(m, i)->gen = 0;
	m->gen = 1;
}

struct memo_ent *memo_find(struct memo *m, uint64_t h, const uint8_t *key,
			   uint32_t len)
{
	for (unsigned c = 0; c < 2; c++) {
		uint64_t b = memo_bucket(m, h, c);
		const struct memo_tag *tg = &m->tags[b];
		for (unsigned w = 0; w < MEMO_WAYS; w++) {
			if (tg[w].hash != h)
				continue;
			struct memo_ent *e = memo_ent_at(m, b + w);
			if (e->gen == m->gen && e->key_len == len &&
			    memcmp(tg[w].key, key, len) == 0) {
				e->tick = ++m->tick;
				return e;
			}
		}
	}
	return NULL;
}

struct memo_ent *memo_claim(struct memo *m, uint64_t h, const uint8_t *key,
			    uint32_t len)
{
	struct memo_ent *v = NULL;
	uint64_t vi = 0;
	for (unsigned c = 0; c < 2 * MEMO_WAYS; c++) {
		uint64_t i = memo_bucket(m, h, c / MEMO_WAYS) + c % MEMO_WAYS;
		struct memo_ent *e = memo_ent_at(m, i);
		if (e->gen != m->gen) { /* empty or stale: take it */
			v = e;
			vi = i;
			break;
		}
		if (!v || (int32_t)(e->tick - v->tick) < 0) {
			v = e; /* else the least recently used */
			vi = i;
		}
	}
	struct memo_tag *tg = &m->tags[vi];
	if (len > MEMO_KEY_LIMIT)
		return NULL;
	if (v->key_cap < len) {
		/* Producers choose the keys' sizes: the budget bounds them. */
		if (m->key_bytes - v->key_cap + len > m->key_budget)
			return NULL;
		uint8_t *k = realloc(tg->key, len);
		if (!k)
			return NULL;
		m->key_bytes += len - v->key_cap;
		tg->key = k;
		v->key_cap = (uint16_t)len;
	}
	memcpy(tg->key, key, len);
	v->key_len = (uint16_t)len;
	v->overflow_gen = 0;
	if (len > m->key_max)
		m->key_max = len;
	tg->hash = h;
	v->gen = m->gen;
	v->tick = ++m->tick;
	m->claims++;
	return v;
}

/* 64 x 64 -> 128-bit multiply, folded: the mixing step of wyhash and
 * XXH3, one multiply per 16 bytes. */
static inline uint64_t fold_mul(uint64_t a, uint64_t b)
{
	unsigned __int128 p = (unsigned __int128)a * b;
	return (uint64_t)p ^ (uint64_t)(p >> 64);
}

/*
 * The key's hash. Keys are a few hundred bytes, where XXH3 takes its long
 * path; this is its mid-size scheme (independent 16-byte lanes, each one
 * folded multiply, summed) with a per-lane secret, reading the zero
 * padding the caller leaves after the key.
 */
uint64_t memo_hash_portable(const uint8_t *p, uint32_t n)
{
	uint64_t acc = n * 0x9E3779B97F4A7C15ull, k = 0xBE4BA423396CFEB8ull;
#pragma GCC unroll 2
	for (uint32_t i = 0; i < n; i += 16) {
		uint64_t w0, w1;
		memcpy(&w0, p + i, 8);
		memcpy(&w1, p + i + 8, 8);
		acc += fold_mul(w0 ^ k, w1 ^ (k + 0x1CAD21F72C81017Cull));
		k += 0xDB979083E96DD4DEull;
	}
	acc ^= acc >> 37;
	acc *= 0x165667919E3779F9ull;
	return acc ^ (acc >> 32);
}

#if defined(__x86_64__)
/*
 * The same job in a third of the instructions where the CPU has SSE4.2
 * (every x86-64 server of the last decade): CRC32C over 8-byte words, in
 * three independent streams (the instruction's latency is three cycles),
 * folded and mixed to 64 bits. CRC is linear, so keys made to collide
 * collide; that costs their sender misses (each one then takes the full
 * record path), never a wrong answer: an entry serves only a key equal
 * byte for byte. Reads whole words up to 7 bytes past the key, into the
 * zero padding the caller leaves.
 */
__attribute__((target("sse4.2"))) static uint64_t hash_crc(const uint8_t *p,
							     uint32_t n)
{
	uint64_t a = n, b = 0x9E3779B97F4A7C15ull, c = 0xBE4BA423396CFEB8ull;
	uint32_t i = 0;
#pragma GCC unroll 2
	for (; i + 24 <= n; i += 24) {
		uint64_t w0, w1, w2;
		memcpy(&w0, p + i, 8);
		memcpy(&w1, p + i + 8, 8);
		memcpy(&w2, p + i + 16, 8);
		a = __builtin_ia32_crc32di(a, w0);
		b = __builtin_ia32_crc32di(b, w1);
		c = __builtin_ia32_crc32di(c, w2);
	}
	for (; i < n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, sizeof w);
		a = __builtin_ia32_crc32di(a, w);
		uint64_t t = a;
		a = b, b = c, c = t;
	}
	uint64_t h = (a << 32 | b) ^ (c * 0x9E3779B97F4A7C15ull);
	h ^= h >> 33; /* murmur3's finaliser: every bit reaches every bit */
	h *= 0xFF51AFD7ED558CCDull;
	h ^= h >> 33;
	h *= 0xC4CEB9FE1A85EC53ull;
	return h ^ (h >> 33);
}

static int have_crc = -1; /* unknown yet; then 0 or 1 */

uint64_t memo_hash(const uint8_t *p, uint32_t n)
{
	int crc = __atomic_load_n(&have_crc, __ATOMIC_RELAXED);
	if (__builtin_expect(crc < 0, 0)) {
		__builtin_cpu_init();
		crc = __builtin_cpu_supports("sse4.2") ? 1 : 0;
		__atomic_store_n(&have_crc, crc, __ATOMIC_RELAXED);
	}
	return crc ? hash_crc(p, n) : memo_hash_portable(p, n);
}
#else
uint64_t memo_hash(const uint8_t *p, uint32_t n)
{
	return memo_hash_portable(p, n);
}
#endif

