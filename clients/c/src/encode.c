/* Sealing readings into batch frames: choose what fits, encode columnar, compress when it pays. */
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_createCCtx_advanced: zstd allocates through our hooks */
#include <zstd.h>

#include "internal.h"
#include "sluice/v1/sluice.pb-c.h"

/* Payloads smaller than this are not worth a zstd frame header (same threshold as the Swift encoder). */
#define SL_COMPRESS_ABOVE 512

/* Bytes in front of the first series: prefix (5), ClientFrame.batch tag + length (1 + 5), Batch.seq tag +
   value (1 + 10). */
#define SL_HEAD_ROOM 22

size_t sl_put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

size_t sl_varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

void sl_put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint32_t sl_get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Per reading at most: time delta 10 + value 10 (sint64 scaled delta; a double is 8) + quality 5.
   Per series: names with tag and length, base time 11, three packed headers 6 each, exponent 6, and the
   Batch.series tag + length 6. */
#define SL_PER_READING 25
size_t sl_series_bound(size_t device_len, size_t metric_len, size_t n) {
    return device_len + metric_len + 6 + 11 + 18 + 6 + 6 + 1 + SL_PER_READING * n;
}

void sl_batch_free(sl_mem *m, sl_batch *b) {
    if (b == NULL) return;
    sl_free(m, b->buf);
    sl_free(m, b);
}

static void *zstd_alloc(void *opaque, size_t n) {
    sl_mem *m = opaque;
    return sl_alloc(m, n, m->tier);
}

static void zstd_free(void *opaque, void *p) {
    sl_free(opaque, p);
}

/* What the next batch takes from the queue: walks from the front, each series at most once, splitting the
   last one if the budget ends inside it. `visit` is called for each chunk. */
typedef struct chunk_walk {
    uint64_t readings;
    size_t bound;
    size_t max_chunk;
    size_t chunks;
} chunk_walk;

static chunk_walk plan(const sl_series_list *queue, sl_encode_limits lim) {
    chunk_walk w = {0, SL_HEAD_ROOM, 0, 0};
    uint64_t left = lim.max_readings;
    size_t bytes_left = lim.max_bytes > SL_HEAD_ROOM - 5 ? lim.max_bytes - (SL_HEAD_ROOM - 5) : 0;
    for (const sl_series *s = queue->head; s != NULL && left > 0; s = s->next) {
        size_t avail = s->len - s->start;
        if (avail == 0) continue;
        size_t over = sl_series_bound(s->device_len, s->metric_len, 0);
        if (bytes_left < over + SL_PER_READING) break;
        size_t take = avail;
        if (take > left) take = (size_t)left;
        size_t fit = (bytes_left - over) / SL_PER_READING;
        if (take > fit) take = fit;
        w.readings += take;
        w.bound += over + SL_PER_READING * take;
        w.chunks++;
        if (take > w.max_chunk) w.max_chunk = take;
        left -= take;
        bytes_left -= over + SL_PER_READING * take;
        if (take < avail) break;
    }
    return w;
}

static int fail_code(sl_mem *m) {
    return m->last_refusal == 2 ? SLUICE_ERR_NOMEM : SLUICE_ERR_FULL;
}

/* Encodes one chunk (readings [s->start, s->start + take)) as Batch.series at `out`; returns bytes. */
static size_t encode_chunk(const sl_series *s, size_t take, int64_t *tdelta, int64_t *vdelta, uint8_t *out) {
    Sluice__V1__Series msg = SLUICE__V1__SERIES__INIT;
    const int64_t *t = s->times + s->start;
    const double *v = s->values + s->start;
    msg.device_id = s->device;
    msg.metric = s->metric;
    msg.base_time_us = t[0];
    int64_t prev = t[0];
    for (size_t i = 0; i < take; i++) {
        /* wrapping difference, as the Swift encoder's &- */
        tdelta[i] = (int64_t)((uint64_t)t[i] - (uint64_t)prev);
        prev = t[i];
    }
    msg.n_time_deltas_us = take;
    msg.time_deltas_us = tdelta;
    int exponent;
    if (sl_common_exponent(v, take, &exponent)) {
        int64_t prevk = 0;
        for (size_t i = 0; i < take; i++) {
            int64_t k = sl_scaled(v[i], exponent);
            vdelta[i] = (int64_t)((uint64_t)k - (uint64_t)prevk);
            prevk = k;
        }
        msg.decimal_exponent = exponent;
        msg.n_scaled_deltas = take;
        msg.scaled_deltas = vdelta;
    } else {
        msg.n_values = take;
        msg.values = (double *)v;
    }
    if (s->quality != NULL) {
        const uint32_t *q = s->quality + s->start;
        for (size_t i = 0; i < take; i++) {
            if (q[i] != 0) {
                msg.n_quality = take;
                msg.quality = (uint32_t *)q;
                break;
            }
        }
    }
    size_t size = protobuf_c_message_get_packed_size(&msg.base);
    size_t n = 0;
    out[n++] = 0x12; /* Batch.series, length-delimited */
    n += sl_put_varint(out + n, size);
    n += protobuf_c_message_pack(&msg.base, out + n);
    return n;
}

int sl_encode_batch(sl_mem *m, sl_series_list *queue, uint64_t seq, sl_encode_limits lim, ZSTD_CCtx **cctx,
                    int level, sl_batch **out) {
    *out = NULL;
    chunk_walk w = plan(queue, lim);
    if (w.readings == 0) return SLUICE_ERR_INVALID;

    sl_batch *b = sl_alloc(m, sizeof *b, SL_TIER_SEAL);
    uint8_t *scratch = b ? sl_alloc(m, w.bound, SL_TIER_SEAL) : NULL;
    int64_t *tdelta = scratch ? sl_alloc(m, w.max_chunk * sizeof(int64_t), SL_TIER_SEAL) : NULL;
    int64_t *vdelta = tdelta ? sl_alloc(m, w.max_chunk * sizeof(int64_t), SL_TIER_SEAL) : NULL;
    if (vdelta == NULL) {
        int code = fail_code(m);
        sl_free(m, tdelta);
        sl_free(m, scratch);
        sl_free(m, b);
        return code;
    }

    /* Series first, then the headers right in front of them (their lengths depend on the series). */
    size_t pos = SL_HEAD_ROOM;
    uint64_t left = w.readings;
    for (sl_series *s = queue->head; s != NULL && left > 0; s = s->next) {
        size_t avail = s->len - s->start;
        if (avail == 0) continue;
        size_t take = avail < left ? avail : (size_t)left;
        pos += encode_chunk(s, take, tdelta, vdelta, scratch + pos);
        left -= take;
    }
    sl_free(m, vdelta);
    sl_free(m, tdelta);

    size_t series_bytes = pos - SL_HEAD_ROOM;
    uint8_t head[SL_HEAD_ROOM];
    size_t batch_len = 1 + sl_varint_len(seq) + series_bytes;
    size_t h = 0;
    head[h++] = 0x12; /* ClientFrame.batch */
    h += sl_put_varint(head + h, batch_len);
    head[h++] = 0x08; /* Batch.seq */
    h += sl_put_varint(head + h, seq);
    size_t start = SL_HEAD_ROOM - h - 5;
    memcpy(scratch + SL_HEAD_ROOM - h, head, h);
    size_t payload = h + series_bytes;
    scratch[start] = 0;
    sl_put_be32(scratch + start + 1, (uint32_t)payload);

    /* zstd when it pays; any failure here (memory included) just means sending uncompressed. */
    uint8_t *cbuf = NULL;
    size_t clen = 0;
    if (level >= 0 && payload >= SL_COMPRESS_ABOVE) {
        int saved = m->tier;
        m->tier = SL_TIER_SEAL;
        if (*cctx == NULL) {
            ZSTD_customMem cm = {zstd_alloc, zstd_free, m};
            *cctx = ZSTD_createCCtx_advanced(cm);
            if (*cctx != NULL) {
                ZSTD_CCtx_setParameter(*cctx, ZSTD_c_compressionLevel, level == 0 ? 3 : level);
                ZSTD_CCtx_setParameter(*cctx, ZSTD_c_contentSizeFlag, 1);
            }
        }
        size_t cap = ZSTD_compressBound(payload);
        if (*cctx != NULL && (cbuf = sl_alloc(m, 5 + cap, SL_TIER_SEAL)) != NULL) {
            size_t r = ZSTD_compress2(*cctx, cbuf + 5, cap, scratch + start + 5, payload);
            if (!ZSTD_isError(r) && r < payload) {
                clen = r;
            } else {
                ZSTD_CCtx_reset(*cctx, ZSTD_reset_session_only);
            }
        }
        m->tier = saved;
    }

    /* Keep an exact-size copy: unacked batches may wait a long time, and the bound is generous. */
    size_t final_len = 5 + (clen ? clen : payload);
    uint8_t *final = sl_alloc(m, final_len, SL_TIER_SEAL);
    if (final == NULL) {
        int code = fail_code(m);
        sl_free(m, cbuf);
        sl_free(m, scratch);
        sl_free(m, b);
        return code;
    }
    if (clen) {
        final[0] = 0x01;
        sl_put_be32(final + 1, (uint32_t)clen);
        memcpy(final + 5, cbuf + 5, clen);
    } else {
        memcpy(final, scratch + start, final_len);
    }
    sl_free(m, cbuf);
    sl_free(m, scratch);

    /* Commit: the readings now belong to the batch. */
    left = w.readings;
    for (sl_series *s = queue->head; s != NULL && left > 0; s = s->next) {
        size_t avail = s->len - s->start;
        if (avail == 0) continue;
        size_t take = avail < left ? avail : (size_t)left;
        s->start += take;
        left -= take;
    }
    queue->readings -= w.readings;
    sl_series_list_trim(m, queue);

    memset(b, 0, sizeof *b);
    b->seq = seq;
    b->readings = (uint32_t)w.readings;
    b->compressed = clen != 0;
    b->buf = final;
    b->off = 0;
    b->len = final_len;
    *out = b;
    return SLUICE_OK;
}
