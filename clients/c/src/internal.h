/* libsluice internals shared by the source files. Not installed. */
#ifndef SLUICE_INTERNAL_H
#define SLUICE_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "sluice.h"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

/* ---- Memory: every allocation is counted against the ceiling ---------------------------------------- */

/* Allocation tiers. Each may fill the ceiling only up to its own limit, so that buffered readings can never
   take the memory needed to encode the next batch, and neither can take what decoding an ack needs:
   otherwise a full buffer could stop the very acks that would empty it. */
enum sl_tier {
    SL_TIER_READINGS = 0, /* open batch and submitted series: up to limit - seal reserve - recv reserve */
    SL_TIER_SEAL = 1,     /* encoded batches, encoding scratch, zstd compression: up to limit - recv    */
    SL_TIER_RECV = 2,     /* decoding one server frame (zstd, protobuf-c): up to limit                  */
    SL_TIER_FIXED = 3     /* allocated at create: checked against limit                                 */
};

typedef struct sl_mem {
    sluice_allocator a;
    size_t live;
    size_t peak;
    size_t limit;
    size_t tier_limit[4];
    int tier;          /* the tier callbacks from protobuf-c and zstd allocate in */
    int last_refusal;  /* 1 = ceiling, 2 = allocator returned NULL */
} sl_mem;

void sl_mem_init(sl_mem *m, const sluice_allocator *a);
void *sl_alloc(sl_mem *m, size_t n, int tier);
void sl_free(sl_mem *m, void *p);
/* Adapters so protobuf-c and zstd allocate through `m` in tier m->tier. */
ProtobufCAllocator sl_protobuf_allocator(sl_mem *m);

/* ---- Series: readings of one device+metric, columnar ------------------------------------------------ */

typedef struct sl_series {
    struct sl_series *next;
    char *device; /* points into the same allocation as the struct */
    char *metric;
    size_t device_len, metric_len;
    size_t start; /* readings before start were already sealed into batches */
    size_t len;
    size_t cap;
    int64_t *times;
    double *values;
    uint32_t *quality; /* NULL until a non-zero code arrives */
} sl_series;

typedef struct sl_series_list {
    sl_series *head, *tail;
    sl_series *last_hit; /* appends usually hit the series appended to last */
    uint64_t readings;   /* readings not yet sealed */
} sl_series_list;

int sl_check_device(const char *s, size_t *len, char *why, size_t whylen);
int sl_check_metric(const char *s, size_t *len, char *why, size_t whylen);
/* Adds readings to the series (device, metric) of `list`, creating it. 0, or SLUICE_ERR_FULL/NOMEM. */
int sl_series_append(sl_mem *m, sl_series_list *list, const char *device, size_t dlen, const char *metric,
                     size_t mlen, size_t n, const int64_t *times, const double *values, const uint32_t *quality);
void sl_series_list_free(sl_mem *m, sl_series_list *list);
/* Moves every series of `from` to the end of `to`. */
void sl_series_list_splice(sl_series_list *to, sl_series_list *from);
/* Frees fully sealed series at the front of `list`. */
void sl_series_list_trim(sl_mem *m, sl_series_list *list);

/* The decimal scaling rule, bit for bit the same as SeriesBuilder.swift's DecimalScaling. */
int sl_common_exponent(const double *values, size_t n, int *exponent_out);
int64_t sl_scaled(double v, int exponent);
double sl_scaled_value(int64_t k, int exponent);

/* ---- Batches: encoded frames kept until acked ------------------------------------------------------- */

typedef struct sl_batch {
    struct sl_batch *next;
    uint64_t seq;
    uint32_t readings;
    int compressed;
    uint32_t sends; /* times its writing started, over all connections */
    int stored;     /* kept by store_put (always 1 without store hooks) */
    uint8_t *buf;  /* allocation; the frame is buf[off, off+len) */
    size_t off, len;
} sl_batch;

typedef struct sl_encode_limits {
    uint64_t max_readings;
    size_t max_bytes;   /* frame payload before compression */
} sl_encode_limits;

/* Encodes the next batch from the front of `queue` (at most lim readings/bytes) with `seq` into a whole
   frame (prefix included), compressed with `cctx` when that is smaller (cctx may be NULL). Returns 0 and
   *out, or SLUICE_ERR_FULL/NOMEM (queue untouched). Allocates in SL_TIER_SEAL. */
int sl_encode_batch(sl_mem *m, sl_series_list *queue, uint64_t seq, sl_encode_limits lim,
                    struct ZSTD_CCtx_s **cctx, int level, sl_batch **out);
void sl_batch_free(sl_mem *m, sl_batch *b);
/* Upper bound of a Series' encoded size holding `n` readings, names included. */
size_t sl_series_bound(size_t device_len, size_t metric_len, size_t n);

/* ---- Wire helpers ----------------------------------------------------------------------------------- */

size_t sl_put_varint(uint8_t *p, uint64_t v);
size_t sl_varint_len(uint64_t v);
void sl_put_be32(uint8_t *p, uint32_t v);
uint32_t sl_get_be32(const uint8_t *p);

/* ---- Endpoints -------------------------------------------------------------------------------------- */

typedef struct sl_endpoint {
    char *host; /* in the endpoints allocation */
    char *port;
} sl_endpoint;

/* ---- The handle ------------------------------------------------------------------------------------- */

struct sluice_client {
    sl_mem mem;
    sluice_config cfg; /* string fields NULL: copies live below */
    int err;
    char errstr[320];

    /* fixed allocations */
    char *endpoint_text;
    sl_endpoint *endpoints;
    size_t n_endpoints;
    size_t endpoint_next;
    size_t endpoint_current;
    uint8_t *hello;      /* preface + Hello frame, written first on every connection */
    size_t hello_len;
    uint8_t *rx;
    size_t rx_len, rx_cap;

    /* readings */
    sl_series_list open;
    sl_series_list queue;
    sl_batch *unacked_head, *unacked_tail;
    uint64_t unacked_batches, unacked_readings;

    /* connection */
    sluice_transport tp; /* copied at create */
    void *conn;          /* tp.conn_size bytes: the transport's state of the connection */
    int conn_open;       /* between tp.connect and tp.close */
    char terr[160];      /* the transport's last error text */
    char goaway_reason[128];
    int state;
    uint64_t deadline_ms;     /* connect/handshake or drain deadline */
    uint64_t reconnect_at_ms;
    uint32_t backoff_attempt;
    uint64_t last_rx_ms, last_tx_ms;
    size_t hello_off;         /* bytes of `hello` written */
    sl_batch *tx_batch;       /* next unacked batch to write on this connection (NULL: all written) */
    size_t tx_off;            /* bytes of tx_batch's frame written */
    uint8_t ctrl[64];         /* control frame being written (Pong, Ping, CreditRequest, CreditReturn): filled
                                 only at a frame boundary once the one before is written whole; what is owed
                                 meanwhile waits in the flags below, so none overwrites another */
    size_t ctrl_len, ctrl_off;
    int return_pending;       /* a CreditReturn is owed (the answer to CreditRecall): written before any batch */
    uint64_t return_readings; /* its readings: the credit given back by the recalls answered since the last one */
    int pong_pending;
    uint64_t pong_nonce;
    int ping_due;
    uint64_t ping_nonce;
    uint64_t goaway_delay_ms;
    int credit_stalled;
    uint64_t progress; /* bumped by every write, frame and connection step: a pump that made some returns
                          without waiting, so blocking calls re-check their condition at once */

    /* session */
    uint64_t credit;
    uint64_t next_seq;
    uint64_t seq_reserved_below; /* seqs below this are covered by seq_store (UINT64_MAX without hooks) */
    uint64_t seq_retry_at_ms;    /* after a failed seq_store: not called again before this (0: none)  */
    uint64_t store_retry_at_ms;  /* after a failed store_put: not called again before this (0: at once) */
    uint64_t session_id;
    uint32_t srv_max_batch_readings;
    uint32_t srv_max_frame_bytes;
    int srv_credit_requests;    /* Welcome.credit_requests: the server reads CreditRequest              */
    uint64_t credit_requested;  /* credit asked for on this session and not used yet (0: none)          */
    uint32_t heartbeat_ms;

    struct ZSTD_CCtx_s *cctx;
    struct ZSTD_DCtx_s *dctx;
    uint64_t rng;

    sluice_stats st;

    /* re-entrancy: set while a public call runs (its callbacks may not call back in, except sluice_close,
       which is deferred until the outermost call returns) */
    int busy;
    int close_deferred;
};

int sl_seterr(sluice_client *c, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

uint64_t sl_now_ms(const sluice_client *c); /* the transport's clock */
/* Formats and hands a line to config.log, if set. */
void sl_log(sluice_client *c, int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Overwrites n bytes in a way the compiler may not elide (the token in the Hello buffer). */
void sl_wipe(void *p, size_t n);

/* conn.c */
int sl_parse_endpoints(sluice_client *c, const char *text);
int sl_start_connect(sluice_client *c);   /* opens a socket to the next endpoint; state CONNECTING */
void sl_drop_connection(sluice_client *c, int schedule_delay_ms);
int sl_pump(sluice_client *c, int timeout_ms); /* one round of waiting + I/O + timers */
void sl_reset_tx_for_session(sluice_client *c);

/* seq.c */
#define SL_SEQ_RETRY_MS 1000 /* a failed seq_store is retried after this long */
int sl_seq_load(sluice_client *c); /* at create: applies seq_load; SLUICE_ERR_PERSIST on failure */
/* Before sealing a batch with seq next_seq: stores a new reservation if it is not covered. SLUICE_OK: go
   ahead; 1: not now (a failed store waits for its retry time); SLUICE_ERR_PERSIST: the store failed now. */
int sl_seq_reserve(sluice_client *c, uint64_t now_ms);
/* 1 when sealing waits for a seq_store retry (nothing to write until then). */
int sl_seq_waiting(const sluice_client *c, uint64_t now_ms);

/* store.c */
int sl_store_load(sluice_client *c);              /* at create: kept batches back as unacked */
int sl_store_put(sluice_client *c, sl_batch *b);   /* SLUICE_OK, 1 (not now: retry later) or SLUICE_ERR_PERSIST */
void sl_store_remove(sluice_client *c, const sl_batch *b);
int sl_store_waiting(const sluice_client *c, uint64_t now_ms);

/* frames.c */
int sl_handle_frame(sluice_client *c, uint8_t flags, const uint8_t *payload, size_t len);
int sl_encode_hello(sluice_client *c);
size_t sl_encode_ping_pong(uint8_t *out, int is_pong, uint64_t nonce);
/* ClientFrame { credit_request { readings } } as a whole frame into `out` (at least 20 bytes). */
size_t sl_encode_credit_request(uint8_t *out, uint64_t readings);
/* ClientFrame { credit_return { readings } } as a whole frame into `out` (at least 20 bytes). */
size_t sl_encode_credit_return(uint8_t *out, uint64_t readings);

#endif
