#define _POSIX_C_SOURCE 200809L
#include "fake_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

static void *run(void *arg) {
    fake_server *s = arg;
    while (!s->stop && s->conns < s->max_conns) {
        struct pollfd p = {s->listen_fd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0) continue;
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0) continue;
        int conn = s->conns++;
        s->script(s, fd, conn);
        close(fd);
    }
    return NULL;
}

fake_server *fake_start(fake_script script, void *user, int max_conns) {
    fake_server *s = calloc(1, sizeof *s);
    s->script = script;
    s->user = user;
    s->max_conns = max_conns;
    s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(s->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->listen_fd, 16) != 0 ||
        getsockname(s->listen_fd, (struct sockaddr *)&a, &len) != 0) {
        close(s->listen_fd);
        free(s);
        return NULL;
    }
    s->port = ntohs(a.sin_port);
    snprintf(s->endpoint, sizeof s->endpoint, "127.0.0.1:%u", s->port);
    pthread_create(&s->thread, NULL, run, s);
    return s;
}

void fake_stop(fake_server *s) {
    if (s == NULL) return;
    s->stop = 1;
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
    free(s);
}

int fake_write_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes, waiting at most timeout_ms overall; 0 on success. */
static int read_exact(int fd, uint8_t *p, size_t n, int timeout_ms) {
    while (n > 0) {
        struct pollfd pf = {fd, POLLIN, 0};
        int r = poll(&pf, 1, timeout_ms);
        if (r <= 0) return -1;
        ssize_t got = recv(fd, p, n, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static uint8_t *read_payload(int fd, int timeout_ms, uint8_t *flags, size_t *len) {
    uint8_t prefix[5];
    if (read_exact(fd, prefix, 5, timeout_ms) != 0) return NULL;
    uint32_t n = (uint32_t)prefix[1] << 24 | (uint32_t)prefix[2] << 16 | (uint32_t)prefix[3] << 8 | prefix[4];
    uint8_t *buf = malloc(n ? n : 1);
    if (read_exact(fd, buf, n, timeout_ms) != 0) {
        free(buf);
        return NULL;
    }
    *flags = prefix[0];
    if (prefix[0] & 1) {
        unsigned long long size = ZSTD_getFrameContentSize(buf, n);
        if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > (64u << 20)) {
            free(buf);
            return NULL;
        }
        uint8_t *out = malloc(size ? size : 1);
        size_t r = ZSTD_decompress(out, size, buf, n);
        free(buf);
        if (ZSTD_isError(r)) {
            free(out);
            return NULL;
        }
        buf = out;
        n = (uint32_t)r;
    }
    *len = n;
    return buf;
}

int fake_read_hello(int fd, Sluice__V1__Hello **hello) {
    uint8_t preface[4];
    if (read_exact(fd, preface, 4, 5000) != 0 || memcmp(preface, "SLU1", 4) != 0) return -1;
    uint8_t flags;
    size_t len;
    uint8_t *p = read_payload(fd, 5000, &flags, &len);
    if (p == NULL) return -1;
    Sluice__V1__ClientFrame *f = sluice__v1__client_frame__unpack(NULL, len, p);
    free(p);
    if (f == NULL || f->kind_case != SLUICE__V1__CLIENT_FRAME__KIND_HELLO) {
        if (f) sluice__v1__client_frame__free_unpacked(f, NULL);
        return -1;
    }
    if (hello) {
        *hello = f->hello;
        f->hello = NULL;
        f->kind_case = SLUICE__V1__CLIENT_FRAME__KIND__NOT_SET;
    }
    sluice__v1__client_frame__free_unpacked(f, NULL);
    return 0;
}

Sluice__V1__ClientFrame *fake_read_frame(int fd, int timeout_ms, uint8_t *flags_out) {
    uint8_t flags;
    size_t len;
    uint8_t *p = read_payload(fd, timeout_ms, &flags, &len);
    if (p == NULL) return NULL;
    Sluice__V1__ClientFrame *f = sluice__v1__client_frame__unpack(NULL, len, p);
    free(p);
    if (flags_out) *flags_out = flags;
    return f;
}

int fake_send(int fd, const Sluice__V1__ServerFrame *f, int compress) {
    size_t n = protobuf_c_message_get_packed_size(&f->base);
    uint8_t *buf = malloc(5 + n);
    protobuf_c_message_pack(&f->base, buf + 5);
    size_t len = n;
    buf[0] = 0;
    if (compress) {
        size_t cap = ZSTD_compressBound(n);
        uint8_t *c = malloc(5 + cap);
        len = ZSTD_compress(c + 5, cap, buf + 5, n, 3);
        free(buf);
        buf = c;
        buf[0] = 1;
    }
    buf[1] = (uint8_t)(len >> 24);
    buf[2] = (uint8_t)(len >> 16);
    buf[3] = (uint8_t)(len >> 8);
    buf[4] = (uint8_t)len;
    int r = fake_write_all(fd, buf, 5 + len);
    free(buf);
    return r;
}

int fake_welcome(int fd, uint64_t credit, uint64_t committed_seq, uint32_t heartbeat_ms, uint32_t max_batch) {
    Sluice__V1__Welcome w = SLUICE__V1__WELCOME__INIT;
    w.protocol_version = 1;
    w.session_id = 42;
    w.initial_credit = credit;
    w.max_batch_readings = max_batch;
    w.max_frame_bytes = 4u << 20;
    w.max_decompressed_bytes = 32u << 20;
    w.heartbeat_interval_ms = heartbeat_ms;
    w.committed_seq = committed_seq;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_WELCOME;
    f.welcome = &w;
    return fake_send(fd, &f, 0);
}

int fake_welcome_requests(int fd, uint64_t credit, uint32_t max_batch) {
    Sluice__V1__Welcome w = SLUICE__V1__WELCOME__INIT;
    w.protocol_version = 1;
    w.session_id = 43;
    w.initial_credit = credit;
    w.max_batch_readings = max_batch;
    w.max_frame_bytes = 4u << 20;
    w.max_decompressed_bytes = 32u << 20;
    w.credit_requests = 1;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_WELCOME;
    f.welcome = &w;
    return fake_send(fd, &f, 0);
}

int fake_ack(int fd, uint64_t seq, uint32_t accepted, int duplicate) {
    Sluice__V1__Ack a = SLUICE__V1__ACK__INIT;
    a.seq = seq;
    a.accepted = accepted;
    a.duplicate = duplicate;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_ACK;
    f.ack = &a;
    return fake_send(fd, &f, 0);
}

int fake_credit(int fd, uint64_t readings) {
    Sluice__V1__Credit cr = SLUICE__V1__CREDIT__INIT;
    cr.readings = readings;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_CREDIT;
    f.credit = &cr;
    return fake_send(fd, &f, 0);
}

int fake_error(int fd, int code, const char *msg, uint64_t seq, int closing) {
    Sluice__V1__Error e = SLUICE__V1__ERROR__INIT;
    e.code = code;
    e.message = (char *)msg;
    e.seq = seq;
    e.closing = closing;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_ERROR;
    f.error = &e;
    return fake_send(fd, &f, 0);
}

int fake_go_away(int fd, uint32_t reconnect_after_ms) {
    Sluice__V1__GoAway g = SLUICE__V1__GO_AWAY__INIT;
    g.reason = (char *)"server draining";
    g.reconnect_after_ms = reconnect_after_ms;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_GO_AWAY;
    f.go_away = &g;
    return fake_send(fd, &f, 0);
}

int fake_ping(int fd, uint64_t nonce) {
    Sluice__V1__Ping p = SLUICE__V1__PING__INIT;
    p.nonce = nonce;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_PING;
    f.ping = &p;
    return fake_send(fd, &f, 0);
}

int fake_credit_recall(int fd, uint64_t readings) {
    Sluice__V1__CreditRecall r = SLUICE__V1__CREDIT_RECALL__INIT;
    r.readings = readings;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_CREDIT_RECALL;
    f.credit_recall = &r;
    return fake_send(fd, &f, 0);
}

uint64_t fake_batch_readings(const Sluice__V1__Batch *b) {
    uint64_t n = 0;
    for (size_t i = 0; i < b->n_series; i++) n += b->series[i]->n_time_deltas_us;
    return n;
}
