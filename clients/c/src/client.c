/* The public API: handle lifetime, configuration, readings, and the blocking/non-blocking calls. */
#include <stdio.h>
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY /* memory estimates for the reserves */
#include <zstd.h>

#include "internal.h"

#define SL_DEFAULT_MEMORY (8u << 20)
#define SL_MIN_FOR_READINGS (64u << 10)
#define SL_MAX_TOKEN 4096
#define SL_MAX_CLIENT_NAME 256
#define SL_MAX_SEQ_RESERVE (1u << 20)
/* Upper bounds of the size and time settings: they keep the reserve arithmetic far from overflow on 32-bit
   targets and every millisecond value within an int. */
#define SL_MAX_BATCH_READINGS 1000000u
#define SL_MAX_BATCH_BYTES (64u << 20)
#define SL_MAX_CONNECT_TIMEOUT_MS 600000u   /* 10 min */
#define SL_MAX_IO_TIMEOUT_MS 86400000u      /* 24 h */
#define SL_MAX_RECONNECT_MS 3600000u        /* 1 h */

int sl_seterr(sluice_client *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errstr, sizeof c->errstr, fmt, ap);
    va_end(ap);
    c->err = code;
    if (c->cfg.log != NULL) c->cfg.log(c->cfg.log_user, SLUICE_LOG_ERROR, c->errstr);
    return code;
}

void sl_log(sluice_client *c, int level, const char *fmt, ...) {
    if (c->cfg.log == NULL) return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    c->cfg.log(c->cfg.log_user, level, line);
}

void sluice_config_init(sluice_config *cfg) {
    if (cfg != NULL) memset(cfg, 0, sizeof *cfg);
}

static void apply_defaults(sluice_config *k) {
    if (k->connect_timeout_ms == 0) k->connect_timeout_ms = 5000;
    if (k->io_timeout_ms == 0) k->io_timeout_ms = 30000;
    if (k->reconnect_min_ms == 0) k->reconnect_min_ms = 100;
    if (k->reconnect_max_ms == 0) k->reconnect_max_ms = 5000;
    if (k->memory_limit == 0) k->memory_limit = SL_DEFAULT_MEMORY;
    if (k->max_batch_readings == 0) k->max_batch_readings = 10000;
    if (k->max_batch_bytes == 0) k->max_batch_bytes = 256u << 10;
    if (k->max_server_frame_bytes == 0) k->max_server_frame_bytes = 64u << 10;
    if (k->compression_level == 0) k->compression_level = 3;
    if (k->client_name == NULL || k->client_name[0] == '\0') k->client_name = "libsluice";
    if (k->seq_reserve == 0) k->seq_reserve = 64;
}

static int validate(sluice_client *c, const sluice_config *k) {
    if (k->endpoints == NULL || k->endpoints[0] == '\0')
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.endpoints is required, e.g. \"127.0.0.1:7878\"");
    int nonzero = 0;
    for (int i = 0; i < 16; i++) nonzero |= k->producer_id[i];
    if (!nonzero)
        return sl_seterr(c, SLUICE_ERR_INVALID,
                         "config.producer_id is all zero: give the device a stable 16-byte id (the server "
                         "deduplicates batches by it)");
    if (k->token != NULL && strlen(k->token) > SL_MAX_TOKEN)
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.token is longer than %d bytes", SL_MAX_TOKEN);
    if (strlen(k->client_name) > SL_MAX_CLIENT_NAME)
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.client_name is longer than %d bytes", SL_MAX_CLIENT_NAME);
    if (k->reconnect_min_ms > k->reconnect_max_ms)
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.reconnect_min_ms (%u) is above reconnect_max_ms (%u)",
                         k->reconnect_min_ms, k->reconnect_max_ms);
    if (k->max_batch_bytes < 1024 || k->max_batch_bytes > SL_MAX_BATCH_BYTES)
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.max_batch_bytes (%u) is outside 1024-%u", k->max_batch_bytes,
                         SL_MAX_BATCH_BYTES);
    if (k->max_batch_readings > SL_MAX_BATCH_READINGS)
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.max_batch_readings (%u) is above %u", k->max_batch_readings,
                         SL_MAX_BATCH_READINGS);
    if (k->connect_timeout_ms > SL_MAX_CONNECT_TIMEOUT_MS)
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.connect_timeout_ms (%u) is above %u", k->connect_timeout_ms,
                         SL_MAX_CONNECT_TIMEOUT_MS);
    if (k->io_timeout_ms > SL_MAX_IO_TIMEOUT_MS)
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.io_timeout_ms (%u) is above %u", k->io_timeout_ms,
                         SL_MAX_IO_TIMEOUT_MS);
    if (k->reconnect_max_ms > SL_MAX_RECONNECT_MS)
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.reconnect_max_ms (%u) is above %u", k->reconnect_max_ms,
                         SL_MAX_RECONNECT_MS);
    if (k->memory_limit > ((size_t)-1) / 2)
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.memory_limit (%zu) is above half the address space",
                         k->memory_limit);
    if (k->max_server_frame_bytes < 1024 || k->max_server_frame_bytes > (64u << 20))
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.max_server_frame_bytes (%u) is outside 1 KiB-64 MiB",
                         k->max_server_frame_bytes);
    if ((k->seq_load == NULL) != (k->seq_store == NULL))
        return sl_seterr(c, SLUICE_ERR_INVALID,
                         "config.seq_load and config.seq_store go together: set both (e.g. with "
                         "sluice_config_seq_file) or neither");
    {
        int n = (k->store_put != NULL) + (k->store_remove != NULL) + (k->store_next != NULL) + (k->store_read != NULL);
        if (n != 0 && n != 4)
            return sl_seterr(c, SLUICE_ERR_INVALID,
                             "config.store_put, store_remove, store_next and store_read go together: set all four "
                             "(e.g. with sluice_config_store_file) or none");
    }
    if (k->seq_load == sluice_seq_file_load && (k->seq_user == NULL || ((const char *)k->seq_user)[0] == '\0'))
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.seq_user must be the seq file's path for the file hooks");
    if (k->seq_reserve > SL_MAX_SEQ_RESERVE)
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.seq_reserve (%u) is above %u", k->seq_reserve,
                         SL_MAX_SEQ_RESERVE);
    if (k->compression_level < -1 || k->compression_level > ZSTD_maxCLevel())
        return sl_seterr(c, SLUICE_ERR_INVALID, "config.compression_level %d is outside -1..%d", k->compression_level,
                         ZSTD_maxCLevel());
    return SLUICE_OK;
}

sluice_client *sluice_create(const sluice_config *cfg) {
    sl_mem mem;
    sl_mem_init(&mem, cfg ? cfg->allocator : NULL);
    if (cfg != NULL && cfg->memory_limit != 0) mem.tier_limit[SL_TIER_FIXED] = cfg->memory_limit;
    sluice_client *c = sl_alloc(&mem, sizeof *c, SL_TIER_FIXED);
    if (c == NULL) return NULL;
    memset(c, 0, sizeof *c);
    c->mem = mem;
    c->next_seq = 1;
    c->state = SLUICE_STATE_FAILED; /* until the config is accepted */
    if (cfg == NULL) {
        sl_seterr(c, SLUICE_ERR_INVALID, "config is NULL: fill one with sluice_config_init()");
        return c;
    }
    c->cfg = *cfg;
    c->cfg.allocator = NULL;
    c->cfg.transport = NULL;
    c->cfg.log = NULL; /* until the config is accepted: errors of a refused config are not logged */
    if (cfg->transport != NULL) {
        c->tp = *cfg->transport;
    } else {
#ifndef SLUICE_NO_POSIX
        c->tp = *sluice_transport_posix();
#endif
    }
    if (c->tp.connect == NULL || c->tp.send == NULL || c->tp.recv == NULL || c->tp.close == NULL ||
        c->tp.wait == NULL || c->tp.now_ms == NULL) {
        sl_seterr(c, SLUICE_ERR_INVALID, "config.transport needs connect, send, recv, close, wait and now_ms");
        return c;
    }
    if (c->cfg.first_seq > 1) c->next_seq = c->cfg.first_seq;
    apply_defaults(&c->cfg);
    if (validate(c, &c->cfg) != SLUICE_OK) return c;
    c->mem.limit = c->cfg.memory_limit;
    c->mem.tier_limit[SL_TIER_FIXED] = c->cfg.memory_limit;
    c->conn = sl_alloc(&c->mem, c->tp.conn_size ? c->tp.conn_size : 1, SL_TIER_FIXED);
    if (c->conn == NULL) {
        sl_seterr(c, SLUICE_ERR_NOMEM, "no memory for the transport's %zu-byte connection state", c->tp.conn_size);
        return c;
    }
    memset(c->conn, 0, c->tp.conn_size ? c->tp.conn_size : 1);

    /* Fixed buffers, counted against the ceiling like everything else. */
    if (sl_parse_endpoints(c, c->cfg.endpoints) != SLUICE_OK) return c;
    if (sl_encode_hello(c) != SLUICE_OK) return c;
    c->rx_cap = 5 + (size_t)c->cfg.max_server_frame_bytes;
    c->rx = sl_alloc(&c->mem, c->rx_cap, SL_TIER_FIXED);
    if (c->rx == NULL) {
        sl_seterr(c, c->mem.last_refusal == 2 ? SLUICE_ERR_NOMEM : SLUICE_ERR_INVALID,
                  "no room for the %zu-byte receive buffer within memory_limit %zu", c->rx_cap, c->cfg.memory_limit);
        return c;
    }
    /* The strings were only needed for Hello, which is encoded now. */
    c->cfg.endpoints = NULL;
    c->cfg.token = NULL;
    c->cfg.client_name = NULL;

    /* Reserves: encoding one batch (scratch, compressed copy, exact copy, delta columns, zstd context) and
       decoding one server frame (zstd context, decompressed copy, protobuf-c's structures). */
    size_t mb = c->cfg.max_batch_bytes;
    size_t seal = 3 * (mb + 64) + 2 * 8 * (size_t)c->cfg.max_batch_readings + (16u << 10);
    if (c->cfg.compression_level >= 0) {
        int lvl = c->cfg.compression_level == 0 ? 3 : c->cfg.compression_level;
        seal += ZSTD_estimateCCtxSize_usingCParams(ZSTD_getCParams(lvl, mb, 0)) + (16u << 10);
    }
    size_t sf = c->cfg.max_server_frame_bytes;
    size_t recv = ZSTD_estimateDCtxSize() + (16u << 10) + 2 * sf + (32u << 10);
    size_t fixed = c->mem.live;
    size_t need = fixed + seal + recv + SL_MIN_FOR_READINGS;
    if (c->cfg.memory_limit < need) {
        sl_seterr(c, SLUICE_ERR_INVALID,
                  "memory_limit %zu is below the minimum %zu for these settings (fixed %zu + encoding reserve %zu + "
                  "receive reserve %zu + 64 KiB for readings): raise it, or lower max_batch_bytes, "
                  "max_batch_readings, compression_level or max_server_frame_bytes",
                  c->cfg.memory_limit, need, fixed, seal, recv);
        return c;
    }
    c->mem.tier_limit[SL_TIER_READINGS] = c->cfg.memory_limit - seal - recv;
    c->mem.tier_limit[SL_TIER_SEAL] = c->cfg.memory_limit - recv;
    c->mem.tier_limit[SL_TIER_RECV] = c->cfg.memory_limit;
    c->mem.tier = SL_TIER_RECV;

    /* Last: the stored seq decides where this run starts (never below a seq an earlier run may have used). */
    if (sl_seq_load(c) != SLUICE_OK) return c;
    /* Then the batches kept by the store hooks: unacked again, resent first, the next seq above them. */
    if (sl_store_load(c) != SLUICE_OK) return c;

    c->cfg.log = cfg->log;
    uint64_t seed = sl_now_ms(c) ^ (uint64_t)(uintptr_t)c;
    for (int i = 0; i < 16; i++) seed = seed * 1099511628211ull ^ c->cfg.producer_id[i];
    c->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
    c->state = SLUICE_STATE_IDLE;
    c->err = SLUICE_OK;
    c->errstr[0] = '\0';
    return c;
}

void sl_wipe(void *p, size_t n) {
    volatile unsigned char *v = p;
    while (n-- > 0) *v++ = 0;
}

static void destroy(sluice_client *c) {
    sl_drop_connection(c, 0);
    sl_series_list_free(&c->mem, &c->open);
    sl_series_list_free(&c->mem, &c->queue);
    sl_batch *b = c->unacked_head;
    while (b != NULL) {
        sl_batch *next = b->next;
        sl_batch_free(&c->mem, b);
        b = next;
    }
    ZSTD_freeCCtx(c->cctx); /* zstd frees through the custom allocator it was created with */
    ZSTD_freeDCtx(c->dctx);
    sl_free(&c->mem, c->endpoint_text);
    sl_free(&c->mem, c->endpoints);
    if (c->hello != NULL) sl_wipe(c->hello, c->hello_len); /* it holds the token */
    sl_free(&c->mem, c->hello);
    sl_free(&c->mem, c->rx);
    sl_free(&c->mem, c->conn);
    sl_mem mem = c->mem;
    sl_wipe(c, sizeof *c);
    sl_free(&mem, c);
}

void sluice_close(sluice_client *c) {
    if (c == NULL) return;
    if (c->busy) {
        /* From a callback: the call that ran it is still using the handle. It stops at the next step and
           frees the handle as it returns. */
        c->close_deferred = 1;
        return;
    }
    destroy(c);
}

/* Entry and exit of every public call that may run callbacks (ack, seq, allocator hooks). A call made from
   inside one of them finds the handle busy: it fails with SLUICE_ERR_STATE and changes nothing. */
static int enter(sluice_client *c, const char *fn) {
    if (c == NULL) return SLUICE_ERR_STATE;
    if (c->busy) {
        return sl_seterr(c, SLUICE_ERR_STATE,
                         "%s called from inside a callback of the same handle (ack, seq, allocator or log hook): "
                         "only sluice_close (deferred until the outer call returns), sluice_err, sluice_errstr, "
                         "sluice_get_state and sluice_get_stats may be called there",
                         fn);
    }
    c->busy = 1;
    return SLUICE_OK;
}

static int leave(sluice_client *c, int rc) {
    c->busy = 0;
    if (c->close_deferred) destroy(c);
    return rc;
}

/* ---- Errors --------------------------------------------------------------------------------------- */

const char *sluice_strerror(int status) {
    switch (status) {
    case SLUICE_OK: return "SLUICE_OK";
    case SLUICE_ERR_INVALID: return "SLUICE_ERR_INVALID";
    case SLUICE_ERR_NOMEM: return "SLUICE_ERR_NOMEM";
    case SLUICE_ERR_FULL: return "SLUICE_ERR_FULL";
    case SLUICE_ERR_TIMEOUT: return "SLUICE_ERR_TIMEOUT";
    case SLUICE_ERR_CONNECT: return "SLUICE_ERR_CONNECT";
    case SLUICE_ERR_IO: return "SLUICE_ERR_IO";
    case SLUICE_ERR_PROTOCOL: return "SLUICE_ERR_PROTOCOL";
    case SLUICE_ERR_FRAME_TOO_LARGE: return "SLUICE_ERR_FRAME_TOO_LARGE";
    case SLUICE_ERR_AUTH: return "SLUICE_ERR_AUTH";
    case SLUICE_ERR_UNSUPPORTED: return "SLUICE_ERR_UNSUPPORTED";
    case SLUICE_ERR_REJECTED: return "SLUICE_ERR_REJECTED";
    case SLUICE_ERR_SERVER: return "SLUICE_ERR_SERVER";
    case SLUICE_ERR_STATE: return "SLUICE_ERR_STATE";
    case SLUICE_ERR_PERSIST: return "SLUICE_ERR_PERSIST";
    default: return "SLUICE_ERR_UNKNOWN";
    }
}

int sluice_err(const sluice_client *c) {
    return c ? c->err : SLUICE_ERR_NOMEM;
}

const char *sluice_errstr(const sluice_client *c) {
    if (c == NULL) return "no handle: the allocator could not provide one";
    if (c->errstr[0] == '\0') return c->err == SLUICE_OK ? "no error" : sluice_strerror(c->err);
    return c->errstr;
}

sluice_state sluice_get_state(const sluice_client *c) {
    return c ? (sluice_state)c->state : SLUICE_STATE_FAILED;
}

/* Every operation starts here: a failed handle answers with its fatal error, others start clean. */
static int begin(sluice_client *c) {
    if (c == NULL) return SLUICE_ERR_STATE;
    if (c->state == SLUICE_STATE_FAILED) return c->err != SLUICE_OK ? c->err : SLUICE_ERR_STATE;
    c->err = SLUICE_OK;
    c->errstr[0] = '\0';
    return SLUICE_OK;
}

static int fatal(const sluice_client *c) {
    return c->state == SLUICE_STATE_FAILED;
}

/* ---- Readings ------------------------------------------------------------------------------------- */

static int do_append_series(sluice_client *c, const char *device_id, const char *metric, size_t n,
                            const int64_t *times_us, const double *values, const uint32_t *quality) {
    int rc = begin(c);
    if (rc != SLUICE_OK) return rc;
    char why[200];
    size_t dlen, mlen;
    if (sl_check_device(device_id, &dlen, why, sizeof why) != SLUICE_OK ||
        sl_check_metric(metric, &mlen, why, sizeof why) != SLUICE_OK)
        return sl_seterr(c, SLUICE_ERR_INVALID, "%s", why);
    if (n > 0 && (times_us == NULL || values == NULL))
        return sl_seterr(c, SLUICE_ERR_INVALID, "times_us and values must not be NULL when n > 0");
    rc = sl_series_append(&c->mem, &c->open, device_id, dlen, metric, mlen, n, times_us, values, quality);
    if (rc == SLUICE_ERR_FULL) {
        return sl_seterr(c, rc,
                         "memory ceiling reached (%zu of %zu bytes in use, %llu readings buffered, %llu unacked): "
                         "send and wait for acks, then retry",
                         c->mem.live, c->mem.limit, (unsigned long long)(c->open.readings + c->queue.readings),
                         (unsigned long long)c->unacked_readings);
    }
    if (rc == SLUICE_ERR_NOMEM) return sl_seterr(c, rc, "the allocator returned NULL while buffering readings");
    return rc;
}


/* ---- Driving -------------------------------------------------------------------------------------- */

static void submit(sluice_client *c) {
    sl_series_list_splice(&c->queue, &c->open);
    if (c->state == SLUICE_STATE_IDLE && (c->queue.readings > 0 || c->unacked_head != NULL)) sl_start_connect(c);
}

static int do_connect(sluice_client *c) {
    int rc = begin(c);
    if (rc != SLUICE_OK) return rc;
    if (c->state == SLUICE_STATE_READY || c->state == SLUICE_STATE_DRAINING) return SLUICE_OK;
    if (c->state != SLUICE_STATE_CONNECTING) {
        rc = sl_start_connect(c);
        if (c->cfg.nonblocking) return rc;
    }
    if (c->cfg.nonblocking) return SLUICE_OK;
    /* Blocking: each endpoint gets one attempt. */
    size_t attempts = 1;
    for (;;) {
        while (c->state == SLUICE_STATE_CONNECTING && !c->close_deferred) {
            int r = sl_pump(c, (int)c->cfg.connect_timeout_ms);
            if (r != SLUICE_OK) rc = r;
        }
        if (c->close_deferred) return SLUICE_ERR_STATE;
        if (c->state == SLUICE_STATE_READY || c->state == SLUICE_STATE_DRAINING) return SLUICE_OK;
        if (fatal(c)) return c->err;
        if (attempts >= c->n_endpoints) return rc != SLUICE_OK ? rc : sl_seterr(c, SLUICE_ERR_CONNECT, "not connected");
        attempts++;
        int r = sl_start_connect(c);
        if (r != SLUICE_OK) rc = r;
    }
}

static int do_poll(sluice_client *c, int timeout_ms) {
    int rc = begin(c);
    if (rc != SLUICE_OK) return rc;
    if (timeout_ms < 0) timeout_ms = 0;
    if (c->state == SLUICE_STATE_IDLE && c->queue.readings == 0 && c->unacked_head == NULL) {
        if (timeout_ms > 0) sl_pump(c, timeout_ms);
        return SLUICE_OK;
    }
    if (c->state == SLUICE_STATE_IDLE) sl_start_connect(c);
    rc = sl_pump(c, timeout_ms);
    return rc;
}

/* Runs the pump until done(c) or the deadline. Transient errors are remembered for the timeout message. */
static int wait_until(sluice_client *c, int (*done)(const sluice_client *), uint64_t deadline, const char *what,
                      unsigned timeout_ms) {
    char last[sizeof c->errstr];
    char rejected[sizeof c->errstr];
    last[0] = '\0';
    rejected[0] = '\0';
    for (;;) {
        if (done(c)) {
            /* Settled, but a batch the server refused is data the caller lost: say so. */
            if (rejected[0]) return sl_seterr(c, SLUICE_ERR_REJECTED, "%s", rejected);
            return SLUICE_OK;
        }
        uint64_t now = sl_now_ms(c);
        if (now >= deadline) break;
        uint64_t left = deadline - now;
        int r = sl_pump(c, left > 1000000 ? 1000000 : (int)left);
        if (c->close_deferred) return SLUICE_ERR_STATE; /* closed by a callback: freed as the call returns */
        if (fatal(c)) return c->err;
        /* Storage refused the seq reservation: say so now rather than time out (the readings stay queued). */
        if (r == SLUICE_ERR_PERSIST) return r;
        if (r == SLUICE_ERR_REJECTED) memcpy(rejected, c->errstr, sizeof rejected);
        if (r != SLUICE_OK) {
            memcpy(last, c->errstr, sizeof last);
            c->err = SLUICE_OK;
            c->errstr[0] = '\0';
        }
    }
    return sl_seterr(c, SLUICE_ERR_TIMEOUT,
                     "%s timed out after %u ms: %llu readings not yet in a batch, %llu in %llu unacked batches, "
                     "credit %llu%s%s",
                     what, timeout_ms, (unsigned long long)c->queue.readings, (unsigned long long)c->unacked_readings,
                     (unsigned long long)c->unacked_batches, (unsigned long long)c->credit,
                     last[0] ? "; last error: " : "", last);
}

static int all_written(const sluice_client *c) {
    return c->state == SLUICE_STATE_READY && c->queue.readings == 0 && c->tx_batch == NULL && c->tx_off == 0;
}

static int all_acked(const sluice_client *c) {
    return c->queue.readings == 0 && c->unacked_head == NULL;
}

static int do_send(sluice_client *c) {
    int rc = begin(c);
    if (rc != SLUICE_OK) return rc;
    submit(c);
    if (c->cfg.nonblocking) return sl_pump(c, 0);
    return wait_until(c, all_written, sl_now_ms(c) + c->cfg.io_timeout_ms, "sluice_send", c->cfg.io_timeout_ms);
}

static int do_flush(sluice_client *c, int timeout_ms) {
    int rc = begin(c);
    if (rc != SLUICE_OK) return rc;
    if (timeout_ms < 0) timeout_ms = 0;
    submit(c);
    if (all_acked(c)) return SLUICE_OK;
    if (timeout_ms == 0) {
        rc = sl_pump(c, 0);
        if (all_acked(c)) return SLUICE_OK;
        if (rc != SLUICE_OK) return rc;
    }
    return wait_until(c, all_acked, sl_now_ms(c) + (uint64_t)timeout_ms, "sluice_flush", (unsigned)timeout_ms);
}

void sluice_get_stats(const sluice_client *c, sluice_stats *out) {
    if (out == NULL) return;
    memset(out, 0, sizeof *out);
    if (c == NULL) return;
    *out = c->st;
    out->readings_open = c->open.readings;
    out->readings_queued = c->queue.readings;
    out->readings_unacked = c->unacked_readings;
    out->batches_unacked = c->unacked_batches;
    out->credit = c->credit;
    out->memory_used = c->mem.live;
    out->memory_peak = c->mem.peak;
    out->memory_limit = c->mem.limit;
    out->memory_for_readings = c->mem.tier_limit[SL_TIER_READINGS];
}

int sluice_append_series(sluice_client *c, const char *device_id, const char *metric, size_t n,
                         const int64_t *times_us, const double *values, const uint32_t *quality) {
    int rc = enter(c, "sluice_append_series");
    if (rc != SLUICE_OK) return rc;
    return leave(c, do_append_series(c, device_id, metric, n, times_us, values, quality));
}

int sluice_connect(sluice_client *c) {
    int rc = enter(c, "sluice_connect");
    if (rc != SLUICE_OK) return rc;
    return leave(c, do_connect(c));
}

int sluice_poll(sluice_client *c, int timeout_ms) {
    int rc = enter(c, "sluice_poll");
    if (rc != SLUICE_OK) return rc;
    return leave(c, do_poll(c, timeout_ms));
}

int sluice_send(sluice_client *c) {
    int rc = enter(c, "sluice_send");
    if (rc != SLUICE_OK) return rc;
    return leave(c, do_send(c));
}

int sluice_flush(sluice_client *c, int timeout_ms) {
    int rc = enter(c, "sluice_flush");
    if (rc != SLUICE_OK) return rc;
    return leave(c, do_flush(c, timeout_ms));
}

int sluice_append(sluice_client *c, const char *device_id, const char *metric, int64_t time_us, double value,
                  uint32_t quality) {
    int rc = enter(c, "sluice_append");
    if (rc != SLUICE_OK) return rc;
    return leave(c, do_append_series(c, device_id, metric, 1, &time_us, &value, quality ? &quality : NULL));
}

const char *sluice_goaway_reason(const sluice_client *c) {
    return c != NULL ? c->goaway_reason : "";
}
