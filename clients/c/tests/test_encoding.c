/* Unit tests without a network: decimal scaling, series encoding, batch splitting, compression. */
#include <math.h>
#include <string.h>
#include <zstd.h>

#include "check.h"
#include "internal.h"
#include "sluice/v1/sluice.pb-c.h"

static sl_mem mem;

static int exponent_of(const double *v, size_t n) {
    int e = 99;
    if (!sl_common_exponent(v, n, &e)) return 99; /* 99: no exponent, the double column */
    return e;
}

static void scaling_picks_the_coarsest_lossless_exponent(void) {
    double a[] = {21.37, 21.38};
    CHECK(exponent_of(a, 2) == -2);
    double b[] = {1, 2, 3, -7};
    CHECK(exponent_of(b, 4) == 0);
    double c[] = {0.5, 0.25, 0.125};
    CHECK(exponent_of(c, 3) == -3);
    double d[] = {1e-9};
    CHECK(exponent_of(d, 1) == -9);
    double e[] = {20.0, 21.5, 21.37};
    CHECK(exponent_of(e, 3) == -2);
    CHECK(exponent_of(NULL, 0) == 0);
}

static void scaling_falls_back_to_doubles_when_it_would_lose_anything(void) {
    double nan_[] = {1.0, NAN};
    CHECK(exponent_of(nan_, 2) == 99);
    double inf[] = {INFINITY};
    CHECK(exponent_of(inf, 1) == 99);
    double negzero[] = {1.5, -0.0};
    CHECK(exponent_of(negzero, 2) == 99);
    double sum[] = {0.1 + 0.2};
    CHECK(exponent_of(sum, 1) == 99);
    double tiny[] = {1e-10};
    CHECK(exponent_of(tiny, 1) == 99);
    double huge[] = {1e300};
    CHECK(exponent_of(huge, 1) == 99);
    double big[] = {9007199254740994.0}; /* 2^53 + 2: an integer, but above 2^53 */
    CHECK(exponent_of(big, 1) == 99);
    /* exact alone at -2 but beyond 2^53 once scaled to -9: the whole series must use doubles */
    double mixed[] = {90071992547409.92, 1e-9};
    CHECK(exponent_of(mixed, 2) == 99);
}

/* Every decimal with up to 9 fraction digits round-trips bit for bit; random doubles never lie. */
static void scaling_round_trips_bit_for_bit(void) {
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int digits = (int)(x % 10);
        int64_t k = (int64_t)(x >> 20) % 100000000000ll - 50000000000ll;
        double p = 1;
        for (int j = 0; j < digits; j++) p *= 10;
        double v = (double)k / p;
        int e;
        CHECK(sl_common_exponent(&v, 1, &e));
        if (sl_common_exponent(&v, 1, &e)) {
            double back = sl_scaled_value(sl_scaled(v, e), e);
            CHECK(memcmp(&back, &v, sizeof v) == 0);
            CHECK(e >= -digits);
        }
        double r;
        uint64_t bits = x * 0x9e3779b97f4a7c15ull;
        memcpy(&r, &bits, sizeof r);
        if (sl_common_exponent(&r, 1, &e)) {
            double back = sl_scaled_value(sl_scaled(r, e), e);
            CHECK(memcmp(&back, &r, sizeof r) == 0);
        }
    }
}

/* Decodes series `s` back into absolute times and values (the server's rule, SeriesDecoding.swift). */
static size_t expand(const Sluice__V1__Series *s, int64_t *t, double *v) {
    int64_t at = s->base_time_us;
    for (size_t i = 0; i < s->n_time_deltas_us; i++) {
        at = (int64_t)((uint64_t)at + (uint64_t)s->time_deltas_us[i]);
        t[i] = at;
    }
    if (s->n_values > 0 || (s->n_scaled_deltas == 0 && s->decimal_exponent == 0)) {
        for (size_t i = 0; i < s->n_values; i++) v[i] = s->values[i];
    } else {
        int64_t k = 0;
        for (size_t i = 0; i < s->n_scaled_deltas; i++) {
            k = (int64_t)((uint64_t)k + (uint64_t)s->scaled_deltas[i]);
            v[i] = sl_scaled_value(k, s->decimal_exponent);
        }
    }
    return s->n_time_deltas_us;
}

/* Unpacks a whole frame (prefix included) into a ClientFrame, decompressing if flagged. */
static Sluice__V1__ClientFrame *unframe(const sl_batch *b) {
    const uint8_t *p = b->buf + b->off;
    uint32_t len = sl_get_be32(p + 1);
    CHECK(len + 5 == b->len);
    if (p[0] & 1) {
        unsigned long long n = ZSTD_getFrameContentSize(p + 5, len);
        uint8_t *out = malloc(n ? n : 1);
        size_t r = ZSTD_decompress(out, n, p + 5, len);
        CHECK(!ZSTD_isError(r) && r == n);
        Sluice__V1__ClientFrame *f = sluice__v1__client_frame__unpack(NULL, r, out);
        free(out);
        return f;
    }
    return sluice__v1__client_frame__unpack(NULL, len, p + 5);
}

static int append(sl_series_list *l, const char *dev, const char *met, size_t n, const int64_t *t, const double *v,
                  const uint32_t *q) {
    return sl_series_append(&mem, l, dev, strlen(dev), met, strlen(met), n, t, v, q);
}

static void a_batch_encodes_columns_that_decode_to_the_same_readings(void) {
    sl_series_list q = {0};
    int64_t t[5] = {1700000000000000, 1700000001000000, 1700000002000000, 1700000002500000, 1700000001000000};
    double v1[5] = {21.37, 21.38, 21.38, 21.2, -3.5};
    double v2[3] = {1.0, NAN, 2.0};
    uint32_t qual[3] = {0, 7, 0};
    CHECK(append(&q, "dev-1", "temp_c", 5, t, v1, NULL) == SLUICE_OK);
    CHECK(append(&q, "dev-2", "rh", 3, t, v2, qual) == SLUICE_OK);
    CHECK(q.readings == 8);
    sl_batch *b = NULL;
    ZSTD_CCtx *cctx = NULL;
    sl_encode_limits lim = {1000, 1 << 20};
    CHECK(sl_encode_batch(&mem, &q, 7, lim, &cctx, 3, &b) == SLUICE_OK);
    CHECK(q.readings == 0 && q.head == NULL);
    CHECK(b->seq == 7 && b->readings == 8 && !b->compressed); /* too small to compress */
    Sluice__V1__ClientFrame *f = unframe(b);
    CHECK(f != NULL && f->kind_case == SLUICE__V1__CLIENT_FRAME__KIND_BATCH);
    if (f && f->kind_case == SLUICE__V1__CLIENT_FRAME__KIND_BATCH) {
        Sluice__V1__Batch *bt = f->batch;
        CHECK(bt->seq == 7 && bt->n_series == 2);
        int64_t tt[8];
        double vv[8];
        Sluice__V1__Series *s0 = bt->series[0], *s1 = bt->series[1];
        CHECK(strcmp(s0->device_id, "dev-1") == 0 && strcmp(s0->metric, "temp_c") == 0);
        CHECK(s0->decimal_exponent == -2 && s0->n_scaled_deltas == 5 && s0->n_values == 0 && s0->n_quality == 0);
        CHECK(s0->scaled_deltas[0] == 2137 && s0->scaled_deltas[1] == 1 && s0->time_deltas_us[0] == 0);
        CHECK(s0->time_deltas_us[4] == -1500000); /* out-of-order times are kept, as negative deltas */
        CHECK(expand(s0, tt, vv) == 5);
        CHECK(memcmp(tt, t, sizeof t) == 0 && memcmp(vv, v1, sizeof v1) == 0);
        CHECK(s1->n_values == 3 && s1->n_scaled_deltas == 0); /* NaN forces the double column */
        CHECK(s1->n_quality == 3 && s1->quality[1] == 7);
        CHECK(expand(s1, tt, vv) == 3 && isnan(vv[1]) && vv[2] == 2.0);
    }
    sluice__v1__client_frame__free_unpacked(f, NULL);
    sl_batch_free(&mem, b);
    ZSTD_freeCCtx(cctx);
    CHECK(mem.live == 0);
}

static void batches_split_at_the_reading_limit_keeping_order(void) {
    sl_series_list q = {0};
    int64_t t[100];
    double v[100];
    for (int i = 0; i < 100; i++) {
        t[i] = 1700000000000000 + i * 1000000ll;
        v[i] = i;
    }
    CHECK(append(&q, "a", "m", 100, t, v, NULL) == SLUICE_OK);
    CHECK(append(&q, "b", "m", 100, t, v, NULL) == SLUICE_OK);
    CHECK(append(&q, "c", "m", 100, t, v, NULL) == SLUICE_OK);
    sl_encode_limits lim = {150, 1 << 20};
    sl_batch *b1, *b2, *b3;
    ZSTD_CCtx *cctx = NULL;
    CHECK(sl_encode_batch(&mem, &q, 1, lim, &cctx, -1, &b1) == SLUICE_OK);
    CHECK(b1->readings == 150 && q.readings == 150);
    CHECK(sl_encode_batch(&mem, &q, 2, lim, &cctx, -1, &b2) == SLUICE_OK);
    CHECK(b2->readings == 150 && q.readings == 0 && q.head == NULL);
    CHECK(sl_encode_batch(&mem, &q, 3, lim, &cctx, -1, &b3) == SLUICE_ERR_INVALID); /* nothing left */
    Sluice__V1__ClientFrame *f1 = unframe(b1), *f2 = unframe(b2);
    CHECK(f1->batch->n_series == 2 && f1->batch->series[1]->n_time_deltas_us == 50);
    CHECK(strcmp(f1->batch->series[1]->device_id, "b") == 0);
    CHECK(f2->batch->n_series == 2 && strcmp(f2->batch->series[0]->device_id, "b") == 0);
    /* the second half of series b starts where the first ended */
    CHECK(f2->batch->series[0]->base_time_us == t[50] && f2->batch->series[0]->scaled_deltas[0] == 50);
    CHECK(f2->batch->series[1]->n_time_deltas_us == 100);
    sluice__v1__client_frame__free_unpacked(f1, NULL);
    sluice__v1__client_frame__free_unpacked(f2, NULL);
    sl_batch_free(&mem, b1);
    sl_batch_free(&mem, b2);
    CHECK(mem.live == 0);
}

static void batches_split_at_the_byte_limit(void) {
    sl_series_list q = {0};
    enum { N = 5000 };
    static int64_t t[N];
    static double v[N];
    for (int i = 0; i < N; i++) {
        t[i] = 1700000000000000 + i * 1000003ll;
        v[i] = 1.0 / (i + 3); /* doubles: 8 bytes each */
    }
    CHECK(append(&q, "dev", "m", N, t, v, NULL) == SLUICE_OK);
    sl_encode_limits lim = {100000, 4096};
    ZSTD_CCtx *cctx = NULL;
    uint64_t total = 0;
    int batches = 0;
    while (q.readings > 0) {
        sl_batch *b;
        CHECK(sl_encode_batch(&mem, &q, (uint64_t)batches + 1, lim, &cctx, -1, &b) == SLUICE_OK);
        CHECK(b->len - 5 <= 4096);
        total += b->readings;
        batches++;
        sl_batch_free(&mem, b);
        if (batches > 1000) break;
    }
    CHECK(total == N && batches > 10);
    CHECK(mem.live == 0);
}

/* DESIGN §6: a regular 1 Hz series at 0.01 resolution costs at most 2 bytes per reading on the wire. */
static void a_regular_series_compresses_below_two_bytes_per_reading(void) {
    sl_series_list q = {0};
    enum { N = 10000 };
    static int64_t t[N];
    static double v[N];
    double temp = 21.37;
    uint64_t x = 12345;
    for (int i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t[i] = 1700000000000000 + i * 1000000ll;
        temp += ((int)(x % 3) - 1) * 0.01;
        v[i] = round(temp * 100) / 100;
    }
    CHECK(append(&q, "boiler-7", "temp_c", N, t, v, NULL) == SLUICE_OK);
    sl_encode_limits lim = {N, 1 << 20};
    ZSTD_CCtx *cctx = NULL;
    sl_batch *b;
    CHECK(sl_encode_batch(&mem, &q, 1, lim, &cctx, 3, &b) == SLUICE_OK);
    CHECK(b->compressed);
    double per = (double)b->len / N;
    fprintf(stderr, "  %d readings -> %zu bytes on the wire (%.2f bytes/reading)\n", N, b->len, per);
    CHECK(per <= 2.0);
    Sluice__V1__ClientFrame *f = unframe(b);
    static int64_t tt[N];
    static double vv[N];
    CHECK(f && expand(f->batch->series[0], tt, vv) == N);
    CHECK(memcmp(tt, t, sizeof t) == 0 && memcmp(vv, v, sizeof v) == 0);
    sluice__v1__client_frame__free_unpacked(f, NULL);
    sl_batch_free(&mem, b);
    ZSTD_freeCCtx(cctx);
    CHECK(mem.live == 0);
}

static void names_are_checked_before_buffering(void) {
    char why[200];
    size_t n;
    CHECK(sl_check_device("boiler-7:a_b.c", &n, why, sizeof why) == SLUICE_OK && n == 14);
    CHECK(sl_check_device("", &n, why, sizeof why) == SLUICE_ERR_INVALID);
    CHECK(sl_check_device("has space", &n, why, sizeof why) == SLUICE_ERR_INVALID && strstr(why, "0x20"));
    CHECK(sl_check_metric("Temp", &n, why, sizeof why) == SLUICE_ERR_INVALID);
    CHECK(sl_check_metric("temp_c.avg", &n, why, sizeof why) == SLUICE_OK);
    char long_[80];
    memset(long_, 'a', 65);
    long_[65] = '\0';
    CHECK(sl_check_metric(long_, &n, why, sizeof why) == SLUICE_ERR_INVALID && strstr(why, "64"));
    long_[64] = '\0';
    CHECK(sl_check_metric(long_, &n, why, sizeof why) == SLUICE_OK);
}

static void the_readings_tier_refuses_at_its_limit_and_changes_nothing(void) {
    sl_mem m;
    sl_mem_init(&m, NULL);
    m.tier_limit[SL_TIER_READINGS] = 4096;
    sl_series_list q = {0};
    int64_t t[64] = {0};
    double v[64] = {0};
    int rc = SLUICE_OK;
    int added = 0;
    for (int i = 0; i < 100 && rc == SLUICE_OK; i++) {
        rc = sl_series_append(&m, &q, "d", 1, "m", 1, 16, t, v, NULL);
        if (rc == SLUICE_OK) added += 16;
    }
    CHECK(rc == SLUICE_ERR_FULL);
    CHECK(m.live <= 4096 && m.peak <= 4096);
    CHECK(q.readings == (uint64_t)added);
    sl_series_list_free(&m, &q);
    CHECK(m.live == 0);
}

int main(void) {
    sl_mem_init(&mem, NULL);
    RUN(scaling_picks_the_coarsest_lossless_exponent);
    RUN(scaling_falls_back_to_doubles_when_it_would_lose_anything);
    RUN(scaling_round_trips_bit_for_bit);
    RUN(a_batch_encodes_columns_that_decode_to_the_same_readings);
    RUN(batches_split_at_the_reading_limit_keeping_order);
    RUN(batches_split_at_the_byte_limit);
    RUN(a_regular_series_compresses_below_two_bytes_per_reading);
    RUN(names_are_checked_before_buffering);
    RUN(the_readings_tier_refuses_at_its_limit_and_changes_nothing);
    CHECK_DONE();
}
