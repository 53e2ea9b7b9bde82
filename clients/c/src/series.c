/* Buffered readings, one columnar series per device+metric, and the decimal scaling rule. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* ---- Name checks (DESIGN §3): caught here, they cost the caller a clear error, not a dead letter ---- */

static int check_name(const char *s, size_t *len, const char *what, int (*ok)(int), const char *allowed,
                      char *why, size_t whylen) {
    if (s == NULL) {
        snprintf(why, whylen, "%s is NULL", what);
        return SLUICE_ERR_INVALID;
    }
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if (n >= 64) {
            snprintf(why, whylen, "%s is longer than 64 bytes", what);
            return SLUICE_ERR_INVALID;
        }
        if (!ok((unsigned char)s[n])) {
            snprintf(why, whylen, "%s \"%.64s\" has byte 0x%02x at %zu; allowed: %s", what, s,
                     (unsigned char)s[n], n, allowed);
            return SLUICE_ERR_INVALID;
        }
    }
    if (n == 0) {
        snprintf(why, whylen, "%s is empty (1-64 bytes of %s)", what, allowed);
        return SLUICE_ERR_INVALID;
    }
    *len = n;
    return SLUICE_OK;
}

static int device_char(int ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' ||
           ch == '_' || ch == ':' || ch == '-';
}

static int metric_char(int ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.';
}

int sl_check_device(const char *s, size_t *len, char *why, size_t whylen) {
    return check_name(s, len, "device_id", device_char, "[A-Za-z0-9._:-]", why, whylen);
}

int sl_check_metric(const char *s, size_t *len, char *why, size_t whylen) {
    return check_name(s, len, "metric", metric_char, "[a-z0-9_.]", why, whylen);
}

/* ---- Series buffers ------------------------------------------------------------------------------- */

static int fail_code(sl_mem *m) {
    return m->last_refusal == 2 ? SLUICE_ERR_NOMEM : SLUICE_ERR_FULL;
}

/* Grows the columns of `s` to hold at least `need` readings (compacting sealed readings away first). */
static int reserve(sl_mem *m, sl_series *s, size_t need, int want_quality) {
    size_t live = s->len - s->start;
    if (need <= s->cap && (!want_quality || s->quality != NULL) && s->start == 0) return SLUICE_OK;
    size_t cap = s->cap;
    if (need > cap) {
        cap = cap < 8 ? 8 : cap;
        while (cap < need) {
            if (cap > SIZE_MAX / 2 / sizeof(int64_t)) return SLUICE_ERR_FULL;
            cap *= 2;
        }
    }
    int has_q = s->quality != NULL || want_quality;
    int64_t *t = sl_alloc(m, cap * sizeof *t, SL_TIER_READINGS);
    double *v = t ? sl_alloc(m, cap * sizeof *v, SL_TIER_READINGS) : NULL;
    uint32_t *q = (v && has_q) ? sl_alloc(m, cap * sizeof *q, SL_TIER_READINGS) : NULL;
    if (t == NULL || v == NULL || (has_q && q == NULL)) {
        int code = fail_code(m);
        sl_free(m, t);
        sl_free(m, v);
        return code;
    }
    if (live > 0) {
        memcpy(t, s->times + s->start, live * sizeof *t);
        memcpy(v, s->values + s->start, live * sizeof *v);
    }
    if (q != NULL) {
        if (s->quality != NULL && live > 0) {
            memcpy(q, s->quality + s->start, live * sizeof *q);
        } else {
            memset(q, 0, live * sizeof *q);
        }
    }
    sl_free(m, s->times);
    sl_free(m, s->values);
    sl_free(m, s->quality);
    s->times = t;
    s->values = v;
    s->quality = q;
    s->cap = cap;
    s->len = live;
    s->start = 0;
    return SLUICE_OK;
}

static sl_series *find(sl_series_list *list, const char *device, size_t dlen, const char *metric, size_t mlen) {
    sl_series *s = list->last_hit;
    if (s != NULL && s->device_len == dlen && s->metric_len == mlen && memcmp(s->device, device, dlen) == 0 &&
        memcmp(s->metric, metric, mlen) == 0)
        return s;
    for (s = list->head; s != NULL; s = s->next) {
        if (s->device_len == dlen && s->metric_len == mlen && memcmp(s->device, device, dlen) == 0 &&
            memcmp(s->metric, metric, mlen) == 0)
            return s;
    }
    return NULL;
}

int sl_series_append(sl_mem *m, sl_series_list *list, const char *device, size_t dlen, const char *metric,
                     size_t mlen, size_t n, const int64_t *times, const double *values, const uint32_t *quality) {
    if (n == 0) return SLUICE_OK;
    sl_series *s = find(list, device, dlen, metric, mlen);
    int created = 0;
    if (s == NULL) {
        s = sl_alloc(m, sizeof *s + dlen + mlen + 2, SL_TIER_READINGS);
        if (s == NULL) return fail_code(m);
        memset(s, 0, sizeof *s);
        s->device = (char *)(s + 1);
        s->metric = s->device + dlen + 1;
        memcpy(s->device, device, dlen);
        s->device[dlen] = '\0';
        memcpy(s->metric, metric, mlen);
        s->metric[mlen] = '\0';
        s->device_len = dlen;
        s->metric_len = mlen;
        created = 1;
    }
    int want_q = 0;
    if (quality != NULL && s->quality == NULL) {
        for (size_t i = 0; i < n; i++) {
            if (quality[i] != 0) {
                want_q = 1;
                break;
            }
        }
    }
    size_t live = s->len - s->start;
    if (n > SIZE_MAX / 16 - live) {
        if (created) sl_free(m, s);
        return SLUICE_ERR_FULL;
    }
    int rc = reserve(m, s, live + n, want_q);
    if (rc != SLUICE_OK) {
        if (created) sl_free(m, s);
        return rc;
    }
    memcpy(s->times + s->len, times, n * sizeof *times);
    memcpy(s->values + s->len, values, n * sizeof *values);
    if (s->quality != NULL) {
        if (quality != NULL) {
            memcpy(s->quality + s->len, quality, n * sizeof *quality);
        } else {
            memset(s->quality + s->len, 0, n * sizeof *quality);
        }
    }
    s->len += n;
    list->readings += n;
    if (created) {
        if (list->tail) {
            list->tail->next = s;
        } else {
            list->head = s;
        }
        list->tail = s;
    }
    list->last_hit = s;
    return SLUICE_OK;
}

static void series_free(sl_mem *m, sl_series *s) {
    sl_free(m, s->times);
    sl_free(m, s->values);
    sl_free(m, s->quality);
    sl_free(m, s);
}

void sl_series_list_free(sl_mem *m, sl_series_list *list) {
    sl_series *s = list->head;
    while (s != NULL) {
        sl_series *next = s->next;
        series_free(m, s);
        s = next;
    }
    memset(list, 0, sizeof *list);
}

void sl_series_list_splice(sl_series_list *to, sl_series_list *from) {
    if (from->head == NULL) return;
    if (to->tail) {
        to->tail->next = from->head;
    } else {
        to->head = from->head;
    }
    to->tail = from->tail;
    to->readings += from->readings;
    to->last_hit = NULL;
    memset(from, 0, sizeof *from);
}

void sl_series_list_trim(sl_mem *m, sl_series_list *list) {
    while (list->head != NULL && list->head->start == list->head->len) {
        sl_series *s = list->head;
        list->head = s->next;
        if (list->tail == s) list->tail = NULL;
        if (list->last_hit == s) list->last_hit = NULL;
        series_free(m, s);
    }
}

/* ---- Decimal scaling (SeriesBuilder.swift, DecimalScaling): keep the two in step ------------------ */

static const double powers[16] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7,
                                  1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
static const double max_exact_integer = 9007199254740992.0; /* 2^53 */

double sl_scaled_value(int64_t k, int exponent) {
    return exponent >= 0 ? (double)k * powers[exponent] : (double)k / powers[-exponent];
}

int64_t sl_scaled(double v, int exponent) {
    double s = exponent >= 0 ? v / powers[exponent] : v * powers[-exponent];
    return (int64_t)round(s);
}

static int is_exact(double v, int exponent) {
    if (!isfinite(v)) return 0;
    double s = exponent >= 0 ? v / powers[exponent] : v * powers[-exponent];
    if (fabs(s) > max_exact_integer) return 0;
    int64_t k = (int64_t)round(s);
    double back = sl_scaled_value(k, exponent);
    return memcmp(&back, &v, sizeof v) == 0; /* bit for bit: -0.0 is not 0.0 */
}

int sl_common_exponent(const double *values, size_t n, int *exponent_out) {
    int exponent = 0;
    for (size_t i = 0; i < n; i++) {
        double v = values[i];
        if (is_exact(v, exponent)) continue;
        int e = exponent - 1;
        while (e >= -9 && !is_exact(v, e)) e--;
        if (e < -9) return 0;
        exponent = e;
    }
    /* A value exact at a coarser exponent is exact at a finer one only if it stays below 2^53 there. */
    if (exponent < 0) {
        for (size_t i = 0; i < n; i++) {
            if (!is_exact(values[i], exponent)) return 0;
        }
    }
    *exponent_out = exponent;
    return 1;
}
