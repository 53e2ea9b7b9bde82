/* Hostile or broken servers: each must give a clear error code and message, no crash, no leak (the test
   runs under valgrind), and leave the handle able to reconnect. */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include "check.h"
#include "fake_server.h"
#include "sluice.h"

typedef void (*behaviour)(int fd);

static void script(fake_server *s, int fd, int conn) {
    (void)conn;
    if (fake_read_hello(fd, NULL) != 0) return;
    ((behaviour)s->user)(fd);
    /* let the client read everything before the close */
    struct pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, 300);
}

static size_t g_memory_limit; /* 0 = default */

/* Connects a fresh client to a server behaving like `b`; returns the status of sluice_connect plus polls. */
static int run_against(behaviour b, char *msg, size_t msglen, uint32_t max_server_frame) {
    fake_server *s = fake_start(script, (void *)b, 1);
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = s->endpoint;
    cfg.producer_id[0] = 9;
    cfg.connect_timeout_ms = 1000;
    cfg.reconnect_min_ms = cfg.reconnect_max_ms = 10000; /* one attempt in this test */
    cfg.max_server_frame_bytes = max_server_frame;
    if (g_memory_limit) {
        cfg.memory_limit = g_memory_limit;
        cfg.compression_level = -1;
        cfg.max_batch_bytes = 16u << 10;
    }
    cfg.io_timeout_ms = 300;
    sluice_client *c = sluice_create(&cfg);
    int rc = sluice_connect(c);
    for (int i = 0; i < 10 && rc == SLUICE_OK; i++) {
        /* Read what the server sends unasked first: a blocking send that met the bad frame would treat the
         * lost connection as transient and wait out io_timeout_ms reconnecting (slow machines, valgrind). */
        rc = sluice_poll(c, 200);
        if (rc != SLUICE_OK) break;
        sluice_append(c, "dev", "m", 1700000000000000 + i, i, 0);
        int sent = sluice_send(c);
        if (sent != SLUICE_OK) rc = sent;
    }
    snprintf(msg, msglen, "%s", sluice_errstr(c));
    CHECK(sluice_get_state(c) == SLUICE_STATE_BACKOFF);
    CHECK(sluice_fd(c) == -1);
    sluice_close(c);
    fake_stop(s);
    fprintf(stderr, "  %s: %s\n", sluice_strerror(rc), msg);
    return rc;
}

static void http_answer(int fd) {
    const char *r = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    fake_write_all(fd, r, strlen(r));
}

static void garbage_protobuf(int fd) {
    uint8_t f[5 + 12] = {0, 0, 0, 0, 12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x07};
    fake_write_all(fd, f, sizeof f);
}

static void empty_frame(int fd) {
    uint8_t f[5] = {0, 0, 0, 0, 0};
    fake_write_all(fd, f, sizeof f);
}

static void close_mid_frame(int fd) {
    fake_welcome(fd, 1000, 0, 0, 0);
    uint8_t f[5 + 20] = {0, 0, 0, 0, 100};
    fake_write_all(fd, f, sizeof f);
    shutdown(fd, SHUT_WR);
}

static void close_mid_prefix(int fd) {
    uint8_t f[3] = {0, 0, 0};
    fake_write_all(fd, f, sizeof f);
    shutdown(fd, SHUT_WR);
}

static void oversized_frame(int fd) {
    uint8_t f[5] = {0, 0x10, 0, 0, 0}; /* 256 MiB announced: refused on the prefix, before any payload */
    fake_write_all(fd, f, sizeof f);
}

static void reserved_flags(int fd) {
    uint8_t f[5] = {0x80, 0, 0, 0, 0};
    fake_write_all(fd, f, sizeof f);
}

static void ack_before_welcome(int fd) {
    fake_ack(fd, 1, 1, 0);
}

static void recall_before_welcome(int fd) {
    fake_credit_recall(fd, 10);
}

static void wrong_version(int fd) {
    Sluice__V1__Welcome w = SLUICE__V1__WELCOME__INIT;
    w.protocol_version = 2;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_WELCOME;
    f.welcome = &w;
    fake_send(fd, &f, 0);
}

static void send_compressed(int fd, size_t size, int declare) {
    /* 1 MiB of zeros compresses to a few dozen bytes: a bomb for a 64 KiB client limit */
    uint8_t *zeros = calloc(1, size);
    size_t cap = ZSTD_compressBound(size);
    uint8_t *out = malloc(5 + cap);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, declare);
    size_t n = ZSTD_compress2(cc, out + 5, cap, zeros, size);
    ZSTD_freeCCtx(cc);
    out[0] = 1;
    out[1] = (uint8_t)(n >> 24);
    out[2] = (uint8_t)(n >> 16);
    out[3] = (uint8_t)(n >> 8);
    out[4] = (uint8_t)n;
    fake_write_all(fd, out, 5 + n);
    free(out);
    free(zeros);
}

static void zstd_bomb_declared(int fd) {
    send_compressed(fd, 1u << 20, 1);
}

static void zstd_bomb_undeclared(int fd) {
    send_compressed(fd, 1u << 20, 0);
}

static void not_zstd(int fd) {
    uint8_t f[5 + 8] = {1, 0, 0, 0, 8, 'n', 'o', 't', ' ', 'z', 's', 't', 'd'};
    fake_write_all(fd, f, sizeof f);
}

static void truncated_zstd(int fd) {
    uint8_t *zeros = calloc(1, 4096);
    uint8_t out[5 + 256];
    size_t n = ZSTD_compress(out + 5, 256, zeros, 4096, 3);
    free(zeros);
    n -= 3;
    out[0] = 1;
    out[1] = out[2] = out[3] = 0;
    out[4] = (uint8_t)n;
    fake_write_all(fd, out, 5 + n);
}

/* A valid compressed Welcome must work: compression is the server's choice. */
static void compressed_welcome_then_close(int fd) {
    Sluice__V1__Welcome w = SLUICE__V1__WELCOME__INIT;
    w.protocol_version = 1;
    w.initial_credit = 10;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_WELCOME;
    f.welcome = &w;
    fake_send(fd, &f, 1);
    poll(NULL, 0, 100);
}

/* Many empty repeated submessages: cheap on the wire, expensive to decode. Bounded by the ceiling. */
static void amplification(int fd) {
    fake_welcome(fd, 1000, 0, 0, 0);
    size_t n = 60000;
    uint8_t *buf = malloc(5 + 2 + 4 + n);
    size_t body = 0;
    uint8_t *p = buf + 5 + 1 + 3; /* ServerFrame.ack tag + 3-byte length */
    for (size_t i = 0; i + 2 <= n; i += 2) {
        p[body++] = 0x22; /* Ack.reasons, empty Rejection */
        p[body++] = 0x00;
    }
    buf[5] = 0x12;
    buf[6] = (uint8_t)(0x80 | (body & 0x7f));
    buf[7] = (uint8_t)(0x80 | ((body >> 7) & 0x7f));
    buf[8] = (uint8_t)(body >> 14);
    size_t len = 4 + body;
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = (uint8_t)(len >> 16);
    buf[3] = (uint8_t)(len >> 8);
    buf[4] = (uint8_t)len;
    fake_write_all(fd, buf, 5 + len);
    free(buf);
}

static void silent(int fd) {
    (void)fd;
    poll(NULL, 0, 1500);
}

static void answers_garbage(void) {
    char m[320];
    CHECK(run_against(http_answer, m, sizeof m, 0) == SLUICE_ERR_PROTOCOL && strstr(m, "reserved bits"));
    CHECK(run_against(garbage_protobuf, m, sizeof m, 0) == SLUICE_ERR_PROTOCOL && strstr(m, "not a valid"));
    CHECK(run_against(empty_frame, m, sizeof m, 0) == SLUICE_ERR_PROTOCOL && strstr(m, "no known message"));
    CHECK(run_against(reserved_flags, m, sizeof m, 0) == SLUICE_ERR_PROTOCOL && strstr(m, "0x80"));
    CHECK(run_against(ack_before_welcome, m, sizeof m, 0) == SLUICE_ERR_PROTOCOL && strstr(m, "before Welcome"));
    CHECK(run_against(recall_before_welcome, m, sizeof m, 0) == SLUICE_ERR_PROTOCOL &&
          strstr(m, "sent CreditRecall before Welcome"));
}

static void closes_mid_frame(void) {
    char m[320];
    CHECK(run_against(close_mid_frame, m, sizeof m, 0) == SLUICE_ERR_IO && strstr(m, "20 of 100"));
    CHECK(run_against(close_mid_prefix, m, sizeof m, 0) == SLUICE_ERR_IO && strstr(m, "3 of 5"));
}

static void sends_an_oversized_frame(void) {
    char m[320];
    CHECK(run_against(oversized_frame, m, sizeof m, 0) == SLUICE_ERR_FRAME_TOO_LARGE && strstr(m, "268435456"));
    g_memory_limit = 1u << 20;
    CHECK(run_against(amplification, m, sizeof m, 0) == SLUICE_ERR_FRAME_TOO_LARGE && strstr(m, "more memory"));
    g_memory_limit = 0;
}

static void sends_a_zstd_bomb(void) {
    char m[320];
    CHECK(run_against(zstd_bomb_declared, m, sizeof m, 0) == SLUICE_ERR_FRAME_TOO_LARGE && strstr(m, "declares"));
    CHECK(run_against(zstd_bomb_undeclared, m, sizeof m, 0) == SLUICE_ERR_FRAME_TOO_LARGE && strstr(m, "expands"));
    CHECK(run_against(not_zstd, m, sizeof m, 0) == SLUICE_ERR_PROTOCOL && strstr(m, "not a zstd frame"));
    CHECK(run_against(truncated_zstd, m, sizeof m, 0) == SLUICE_ERR_PROTOCOL);
}

static void speaks_another_version(void) {
    fake_server *s = fake_start(script, (void *)wrong_version, 1);
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = s->endpoint;
    cfg.producer_id[0] = 9;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_ERR_UNSUPPORTED);
    CHECK(sluice_get_state(c) == SLUICE_STATE_FAILED && strstr(sluice_errstr(c), "version 2"));
    sluice_close(c);
    fake_stop(s);
}

static void accepts_a_compressed_welcome(void) {
    fake_server *s = fake_start(script, (void *)compressed_welcome_then_close, 1);
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = s->endpoint;
    cfg.producer_id[0] = 9;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.credit == 10);
    sluice_close(c);
    fake_stop(s);
}

static void never_answers_or_refuses(void) {
    char m[320];
    CHECK(run_against(silent, m, sizeof m, 0) == SLUICE_ERR_CONNECT && strstr(m, "timed out"));
    /* a port nobody listens on */
    fake_server *s = fake_start(script, (void *)silent, 0);
    char ep[64];
    snprintf(ep, sizeof ep, "%s", s->endpoint);
    fake_stop(s);
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = ep;
    cfg.producer_id[0] = 9;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_ERR_CONNECT);
    CHECK(strstr(sluice_errstr(c), "refused") != NULL);
    CHECK(sluice_get_state(c) == SLUICE_STATE_BACKOFF);
    /* readings still buffer while disconnected, and flush reports the cause when it gives up */
    CHECK_RC(c, sluice_append(c, "dev", "m", 1, 1, 0), SLUICE_OK);
    CHECK_RC(c, sluice_flush(c, 300), SLUICE_ERR_TIMEOUT);
    CHECK(strstr(sluice_errstr(c), "refused") != NULL);
    sluice_close(c);
}

int main(void) {
    RUN(answers_garbage);
    RUN(closes_mid_frame);
    RUN(sends_an_oversized_frame);
    RUN(sends_a_zstd_bomb);
    RUN(speaks_another_version);
    RUN(accepts_a_compressed_welcome);
    RUN(never_answers_or_refuses);
    CHECK_DONE();
}
