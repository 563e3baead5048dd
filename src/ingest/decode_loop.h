/*
 * decode_loop.h -- the body of the record decoder, included by codec.c
 * once per variant: GCC neither inlines nor clones a function with a
 * computed goto, so the variants are made here, each with its constant.
 *
 * DECODE_NAME:  the function to define.
 * DECODE_KEYED: 1 to also copy the chosen attributes' encodings into @k
 *               (see ingest_decode_keyed()), 0 to ignore @ks and @k.
 *
 * codec.c explains the loop.
 */
static enum ingest_reject DECODE_NAME(const uint8_t *p, size_t len,
				      const struct attr_vocab *vocab,
				      struct attr_table *t,
				      const struct ingest_keyspec *ks,
				      struct ingest_key *k)
{
	static const void *const handler[] = {
		[FK_STRING] = &&h_string, [FK_WORD] = &&h_word,
		[FK_BOOL] = &&h_bool,	  [FK_IP] = &&h_ip,
		[FK_SLOW] = &&careful,
		/* a chosen attribute's encoding goes to the key first */
		[FK_STRING | FK_KEY] = &&k_string, [FK_WORD | FK_KEY] = &&k_word,
		[FK_BOOL | FK_KEY] = &&k_bool,	   [FK_IP | FK_KEY] = &&k_ip,
		[FK_SLOW | FK_KEY] = &&careful,
	};
	/* Keyed, the kinds are the spec's: chosen ids carry FK_KEY. */
	const uint8_t *const kind = DECODE_KEYED ? ks->kind : dict_kind;
	const uint8_t *const end = p + len;
	uint64_t lo = 0, hi = 0; /* present bits of slots 0..63, 64..127 */
	enum ingest_reject why = INGEST_REJ_NONE;
	struct attr_value *v;
	size_t left;
	uint64_t w;
	/* Keyed: where the next chosen encoding goes. The key is a subset of
	 * the record, and the caller's buffer holds a whole record. */
	uint8_t *kp = DECODE_KEYED ? k->buf : NULL;

	/* Decode the header at p and go to its value's handler. */
#define DISPATCH()                                                           \
	do {                                                                 \
		left = (size_t)(end - p);                                    \
		if (__builtin_expect(left < 8, 0))                           \
			goto tail;                                           \
		w = rd64(p); /* loaded once: the producer may rewrite p[] */ \
		size_t id_ = (uint16_t)w;                                    \
		if (__builtin_expect(id_ >= MIXD_ATTR_DICT_COUNT, 0))        \
			goto careful;                                        \
		uint8_t type_ = (uint8_t)(w >> 16);                          \
		if (__builtin_expect(type_ != dict_type[id_], 0))            \
			goto careful;                                        \
		v = &t->v[id_];                                              \
		v->type = type_;                                             \
		if (id_ < 64)                                                \
			lo |= 1ull << (id_ & 63);                            \
		else                                                         \
			hi |= 1ull << (id_ & 63);                            \
		goto *handler[kind[id_]];                                    \
	} while (0)

	DISPATCH();
h_string: {
	uint32_t n = (uint32_t)(w >> 24);
	if (__builtin_expect(n > left - 7, 0)) {
		why = INGEST_REJ_TRUNCATED;
		goto out;
	}
	v->s = (const char *)p + 7;
	v->len = n;
	p += 7 + (size_t)n;
	DISPATCH();
}
h_word:
	if (__builtin_expect(left < 11, 0)) {
		why = INGEST_REJ_TRUNCATED;
		goto out;
	}
	memcpy(&v->i, p + 3, 8); /* the union's 8 bytes */
	v->len = 8;
	p += 11;
	DISPATCH();
h_bool: {
	uint8_t b = (uint8_t)(w >> 24);
	if (b > 1) {
		why = INGEST_REJ_VALUE;
		goto out;
	}
	v->b = b;
	v->len = 1;
	p += 4;
	DISPATCH();
}
h_ip: {
	uint8_t n = (uint8_t)(w >> 24);
	if (n == 4) { /* left >= 8 already covers it */
		memcpy(v->ip, p + 4, 4);
	} else if (n == 16 && left >= 20) {
		memcpy(v->ip, p + 4, 16);
	} else {
		why = n == 16 ? INGEST_REJ_TRUNCATED : INGEST_REJ_VALUE;
		goto out;
	}
	v->len = n;
	p += 4 + (size_t)n;
	DISPATCH();
}
	/* The keyed handlers copy what their plain one is about to decode,
	 * once it is known to be within the record, and go on to it (which
	 * checks the value itself: a bad one rejects the record, key and
	 * all). Only the keyed variant ever dispatches here. */
k_string: {
	uint32_t n = (uint32_t)(w >> 24);
	if (DECODE_KEYED && n <= left - 7) {
		wire_copy(kp, p, 7 + (size_t)n);
		kp += 7 + (size_t)n;
	}
	goto h_string;
}
k_word:
	if (DECODE_KEYED && left >= 11) {
		memcpy(kp, p, 8);
		memcpy(kp + 3, p + 3, 8);
		kp += 11;
	}
	goto h_word;
k_bool:
	if (DECODE_KEYED) {
		memcpy(kp, p, 4);
		kp += 4;
	}
	goto h_bool;
k_ip: {
	uint8_t n = (uint8_t)(w >> 24);
	if (DECODE_KEYED && n == 4) {
		memcpy(kp, p, 8);
		kp += 8;
	} else if (DECODE_KEYED && n == 16 && left >= 20) {
		memcpy(kp, p, 20);
		kp += 20;
	}
	goto h_ip;
}
tail:
	if (left == 0)
		goto out;
careful: {
	/* Through a copy: p itself must not have its address taken, or it
	 * lives on the stack for the whole loop. */
	const uint8_t *q = p;
	int slot = -1;
	why = decode_one(&q, end, vocab, t, &slot);
	if (why == INGEST_REJ_NONE) {
		if (DECODE_KEYED && slot >= 0 &&
		    (ks->mask[slot >> 6] >> (slot & 63) & 1)) {
			memcpy(kp, p, (size_t)(q - p));
			kp += q - p;
		}
		p = q;
		DISPATCH();
	}
}
out:
	t->present[0] |= lo;
	t->present[1] |= hi;
	if (DECODE_KEYED)
		k->len = (uint32_t)(kp - k->buf);
	return why;
#undef DISPATCH
}

#undef DECODE_NAME
#undef DECODE_KEYED
