/* The transport interface: a caller-given transport and clock carry the whole session, the POSIX default
   tries every address a host name resolves to, the log hook hears what happens, and the GoAway reason is
   visible to the caller. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "fake_server.h"
#include "sluice.h"

/* A server that acks everything; on connection 0 it sends GoAway after the first ack when asked. */
typedef struct srv {
    int go_away;
    int batches;
} srv;

static void ack_script(fake_server *s, int fd, int conn) {
    srv *v = s->user;
    if (fake_read_hello(fd, NULL) != 0) return;
    fake_welcome(fd, 100000, 0, 0, 100);
    while (!s->stop) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        Sluice__V1__ClientFrame *f = fake_read_frame(fd, 2000, NULL);
        if (f == NULL) return;
        if (f->kind_case == SLUICE__V1__CLIENT_FRAME__KIND_BATCH) {
            uint32_t n = (uint32_t)fake_batch_readings(f->batch);
            v->batches++;
            fake_ack(fd, f->batch->seq, n, 0);
            fake_credit(fd, n);
            if (v->go_away && conn == 0) fake_go_away(fd, 10);
        }
        sluice__v1__client_frame__free_unpacked(f, NULL);
    }
}

static sluice_config base_config(const char *endpoint) {
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = endpoint;
    for (int i = 0; i < 16; i++) cfg.producer_id[i] = (uint8_t)(0x70 + i);
    cfg.connect_timeout_ms = 2000;
    cfg.io_timeout_ms = 5000;
    cfg.reconnect_min_ms = 10;
    cfg.reconnect_max_ms = 100;
    return cfg;
}

static void append_n(sluice_client *c, int n) {
    for (int i = 0; i < n; i++)
        CHECK_RC(c, sluice_append(c, "dev-tp", "temp_c", 1700000000000000 + i * 1000ll, i * 0.5, 0), SLUICE_OK);
}

/* ---- a caller-given transport: the POSIX one wrapped, counting, with a clock of its own -------------- */

typedef struct counting {
    const sluice_transport *inner;
    int connects, sends, recvs, closes, waits, clocks;
    uint64_t bytes_out, bytes_in;
} counting;

static int ct_connect(void *ctx, void *conn, const char *host, const char *port, char *err, size_t errlen) {
    counting *k = ctx;
    k->connects++;
    return k->inner->connect(k->inner->ctx, conn, host, port, err, errlen);
}

static long ct_send(void *ctx, void *conn, const uint8_t *p, size_t n, char *err, size_t errlen) {
    counting *k = ctx;
    k->sends++;
    long w = k->inner->send(k->inner->ctx, conn, p, n, err, errlen);
    if (w > 0) k->bytes_out += (uint64_t)w;
    return w;
}

static long ct_recv(void *ctx, void *conn, uint8_t *p, size_t n, char *err, size_t errlen) {
    counting *k = ctx;
    k->recvs++;
    long r = k->inner->recv(k->inner->ctx, conn, p, n, err, errlen);
    if (r > 0) k->bytes_in += (uint64_t)r;
    return r;
}

static void ct_close(void *ctx, void *conn) {
    counting *k = ctx;
    k->closes++;
    k->inner->close(k->inner->ctx, conn);
}

static int ct_wait(void *ctx, void *conn, int events, int timeout_ms) {
    counting *k = ctx;
    k->waits++;
    return k->inner->wait(k->inner->ctx, conn, events, timeout_ms);
}

static uint64_t ct_now(void *ctx) {
    counting *k = ctx;
    k->clocks++;
    return k->inner->now_ms(k->inner->ctx) + 123456789000ull; /* any origin will do */
}

static void a_caller_given_transport_and_clock_carry_the_session(void) {
    srv v = {0, 0};
    fake_server *s = fake_start(ack_script, &v, 1);
    counting k;
    memset(&k, 0, sizeof k);
    k.inner = sluice_transport_posix();
    sluice_transport t = *k.inner;
    t.connect = ct_connect;
    t.send = ct_send;
    t.recv = ct_recv;
    t.close = ct_close;
    t.wait = ct_wait;
    t.fd = NULL;
    t.events = NULL;
    t.now_ms = ct_now;
    t.ctx = &k;
    sluice_config cfg = base_config(s->endpoint);
    cfg.transport = &t;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 500);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(sluice_fd(c) == -1); /* no fd hook: nothing for an event loop */
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.readings_accepted == 500);
    CHECK(k.connects == 1 && k.sends > 0 && k.recvs > 0 && k.waits > 0 && k.clocks > 0);
    CHECK(k.bytes_out >= st.wire_bytes && k.bytes_in > 0);
    sluice_close(c);
    CHECK(k.closes == 1);
    fake_stop(s);

    /* a transport missing a function is refused by name */
    t.wait = NULL;
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_ERR_INVALID);
    CHECK(strstr(sluice_errstr(c), "config.transport") != NULL);
    sluice_close(c);
}

/* ---- every address of a host name is tried ---------------------------------------------------------- */

/* This test program's own getaddrinfo: "two.test" resolves to two addresses, the first refusing
   connections, the second the fake server. Anything else fails. */
static uint16_t g_dead_port, g_live_port;
static int g_resolved;

static struct addrinfo *make_ai(uint16_t port, struct addrinfo *next) {
    struct addrinfo *ai = calloc(1, sizeof *ai + sizeof(struct sockaddr_in));
    struct sockaddr_in *in = (struct sockaddr_in *)(ai + 1);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ai->ai_family = AF_INET;
    ai->ai_socktype = SOCK_STREAM;
    ai->ai_addr = (struct sockaddr *)in;
    ai->ai_addrlen = sizeof *in;
    ai->ai_next = next;
    return ai;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
    (void)service;
    (void)hints;
    if (node == NULL || strcmp(node, "two.test") != 0) return EAI_NONAME;
    g_resolved++;
    *res = make_ai(g_dead_port, make_ai(g_live_port, NULL));
    return 0;
}

void freeaddrinfo(struct addrinfo *ai) {
    while (ai != NULL) {
        struct addrinfo *next = ai->ai_next;
        free(ai);
        ai = next;
    }
}

static uint16_t closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd); /* nothing listens there now: connecting is refused */
    return ntohs(a.sin_port);
}

static void every_address_of_a_host_name_is_tried(void) {
    srv v = {0, 0};
    fake_server *s = fake_start(ack_script, &v, 1);
    g_dead_port = closed_port();
    g_live_port = s->port;
    sluice_config cfg = base_config("two.test:7878");
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    CHECK(g_resolved == 1);
    append_n(c, 10);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(v.batches == 1);
    sluice_close(c);
    fake_stop(s);

    /* when every address refuses, the error says how many were tried */
    g_live_port = closed_port();
    cfg.reconnect_min_ms = cfg.reconnect_max_ms = 10000;
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_ERR_CONNECT);
    CHECK(strstr(sluice_errstr(c), "two.test:7878") != NULL && strstr(sluice_errstr(c), "tried 2 addresses") != NULL);
    sluice_close(c);

    cfg.endpoints = "nowhere.test:7878";
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_ERR_CONNECT);
    CHECK(strstr(sluice_errstr(c), "cannot resolve \"nowhere.test\"") != NULL);
    sluice_close(c);
}

/* ---- the log hook and the GoAway reason ------------------------------------------------------------- */

typedef struct lines {
    int n, info, warn, error;
    char text[16][256];
} lines;

static void on_log(void *user, int level, const char *msg) {
    lines *l = user;
    if (l->n < 16) snprintf(l->text[l->n], sizeof l->text[0], "%s", msg);
    l->n++;
    if (level == SLUICE_LOG_INFO) l->info++;
    if (level == SLUICE_LOG_WARN) l->warn++;
    if (level == SLUICE_LOG_ERROR) l->error++;
}

static int logged(const lines *l, const char *what) {
    for (int i = 0; i < l->n && i < 16; i++)
        if (strstr(l->text[i], what) != NULL) return 1;
    return 0;
}

static void the_log_hook_hears_sessions_and_the_go_away_reason_is_visible(void) {
    srv v = {1, 0};
    fake_server *s = fake_start(ack_script, &v, 2);
    sluice_config cfg = base_config(s->endpoint);
    lines l;
    memset(&l, 0, sizeof l);
    cfg.log = on_log;
    cfg.log_user = &l;
    sluice_client *c = sluice_create(&cfg);
    CHECK(strcmp(sluice_goaway_reason(c), "") == 0);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 10);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    for (int i = 0; i < 50 && sluice_get_state(c) != SLUICE_STATE_BACKOFF; i++) sluice_poll(c, 20);
    CHECK(strcmp(sluice_goaway_reason(c), "server draining") == 0);
    CHECK(logged(&l, "connecting to 127.0.0.1:") && logged(&l, "session ") && logged(&l, "GoAway (server draining)"));
    CHECK(l.info >= 2 && l.warn >= 1);
    sluice_close(c);
    fake_stop(s);
    CHECK(strcmp(sluice_goaway_reason(NULL), "") == 0);
}

int main(void) {
    RUN(a_caller_given_transport_and_clock_carry_the_session);
    RUN(every_address_of_a_host_name_is_tried);
    RUN(the_log_hook_hears_sessions_and_the_go_away_reason_is_visible);
    CHECK_DONE();
}
