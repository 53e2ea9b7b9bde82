/* The client against a well-behaved fake server (a thread of this process): credit, splitting, acks,
   reconnect and resend, Welcome.committed_seq, heartbeats, GoAway, non-blocking mode, server errors,
   CreditRequest and CreditRecall. */
#define _POSIX_C_SOURCE 200809L
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "check.h"
#include "fake_server.h"
#include "sluice.h"

#define MAXB 4096

typedef struct good {
    uint64_t initial_credit;
    uint64_t committed_seq[4];
    uint32_t heartbeat_ms;
    uint32_t max_batch;
    int grant_after_ack;
    volatile int hold_credit;
    int close_after_batches[4]; /* 0 = never */
    int ack_limit[4];           /* 0 = ack everything */
    int silent;                 /* never answer anything after Welcome */
    int answer_pings;
    uint64_t reject_seq;        /* answer this seq with INVALID_ARGUMENT */
    int go_away_after_first_ack_on_conn0;
    int auth_fail;
    uint64_t ping_nonce;        /* send a Ping with this nonce after Welcome */
    int credit_requests;        /* Welcome.credit_requests; each CreditRequest is answered with what it lacks */
    uint64_t initial_credit_conn[4]; /* overrides initial_credit on that connection when nonzero */
    /* recorded */
    pthread_mutex_t mu;
    int n;
    uint64_t seq[MAXB];
    int conn[MAXB];
    uint64_t readings[MAXB];
    int credit_violations;
    int pings;
    uint64_t pong_nonce;
    int requests;
    int request_conn[16];
    uint64_t request_readings[16];
} good;

static void good_init(good *g) {
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    g->initial_credit = 100000;
    g->grant_after_ack = 1;
    g->answer_pings = 1;
}

static void good_script(fake_server *s, int fd, int conn) {
    good *g = s->user;
    if (fake_read_hello(fd, NULL) != 0) return;
    if (g->auth_fail) {
        fake_error(fd, SLUICE__V1__STATUS_CODE__STATUS_CODE_UNAUTHENTICATED, "token unknown: check --token", 0, 1);
        return;
    }
    int k = conn < 4 ? conn : 3;
    uint64_t credit = g->initial_credit_conn[k] ? g->initial_credit_conn[k] : g->initial_credit;
    if (g->credit_requests) {
        fake_welcome_requests(fd, credit, g->max_batch);
    } else {
        fake_welcome(fd, credit, g->committed_seq[k], g->heartbeat_ms, g->max_batch);
    }
    if (g->ping_nonce) fake_ping(fd, g->ping_nonce);
    int batches = 0, acks = 0;
    while (!s->stop) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        Sluice__V1__ClientFrame *f = fake_read_frame(fd, 2000, NULL);
        if (f == NULL) return; /* client closed */
        if (f->kind_case == SLUICE__V1__CLIENT_FRAME__KIND_PING) {
            pthread_mutex_lock(&g->mu);
            g->pings++;
            pthread_mutex_unlock(&g->mu);
            if (g->answer_pings && !g->silent) {
                Sluice__V1__Pong po = SLUICE__V1__PONG__INIT;
                po.nonce = f->ping->nonce;
                Sluice__V1__ServerFrame sf = SLUICE__V1__SERVER_FRAME__INIT;
                sf.kind_case = SLUICE__V1__SERVER_FRAME__KIND_PONG;
                sf.pong = &po;
                fake_send(fd, &sf, 0);
            }
        } else if (f->kind_case == SLUICE__V1__CLIENT_FRAME__KIND_PONG) {
            g->pong_nonce = f->pong->nonce;
        } else if (f->kind_case == SLUICE__V1__CLIENT_FRAME__KIND_CREDIT_REQUEST) {
            uint64_t want = f->credit_request->readings;
            pthread_mutex_lock(&g->mu);
            if (g->requests < 16) {
                g->request_conn[g->requests] = conn;
                g->request_readings[g->requests] = want;
            }
            g->requests++;
            pthread_mutex_unlock(&g->mu);
            if (want > credit) {
                fake_credit(fd, want - credit);
                credit = want;
            }
        } else if (f->kind_case == SLUICE__V1__CLIENT_FRAME__KIND_BATCH) {
            uint64_t n = fake_batch_readings(f->batch);
            uint64_t seq = f->batch->seq;
            pthread_mutex_lock(&g->mu);
            if (g->n < MAXB) {
                g->seq[g->n] = seq;
                g->conn[g->n] = conn;
                g->readings[g->n] = n;
                g->n++;
            }
            if (n > credit) g->credit_violations++;
            pthread_mutex_unlock(&g->mu);
            credit -= n > credit ? credit : n;
            batches++;
            if (g->close_after_batches[k] && batches >= g->close_after_batches[k]) {
                sluice__v1__client_frame__free_unpacked(f, NULL);
                return;
            }
            if (!g->silent) {
                if (seq == g->reject_seq) {
                    fake_error(fd, SLUICE__V1__STATUS_CODE__STATUS_CODE_INVALID_ARGUMENT,
                               "series 0: 3 timestamps but 2 values", seq, 0);
                } else if (g->ack_limit[k] == 0 || acks < g->ack_limit[k]) {
                    /* As sluiced does: a seq at or below committed_seq is acked as a duplicate. */
                    fake_ack(fd, seq, (uint32_t)n, seq <= g->committed_seq[k]);
                    acks++;
                    if (conn == 0 && g->go_away_after_first_ack_on_conn0 && acks == 1) fake_go_away(fd, 50);
                }
                if (g->grant_after_ack) {
                    while (g->hold_credit && !s->stop) poll(NULL, 0, 10);
                    fake_credit(fd, n);
                    credit += n;
                }
            }
        }
        sluice__v1__client_frame__free_unpacked(f, NULL);
    }
}

static sluice_config base_config(const char *endpoint) {
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = endpoint;
    for (int i = 0; i < 16; i++) cfg.producer_id[i] = (uint8_t)(i + 1);
    cfg.connect_timeout_ms = 2000;
    cfg.io_timeout_ms = 5000;
    cfg.reconnect_min_ms = 10;
    cfg.reconnect_max_ms = 100;
    return cfg;
}

static void append_n(sluice_client *c, const char *dev, int n, int64_t t0) {
    for (int i = 0; i < n; i++) {
        int rc = sluice_append(c, dev, "temp_c", t0 + i * 1000000ll, 20.0 + (i % 100) * 0.01, 0);
        if (rc != SLUICE_OK) {
            CHECK_RC(c, rc, SLUICE_OK);
            return;
        }
    }
}

static uint64_t sum_readings(good *g, int conn) {
    uint64_t s = 0;
    for (int i = 0; i < g->n; i++)
        if (conn < 0 || g->conn[i] == conn) s += g->readings[i];
    return s;
}

static void sends_everything_in_credit_sized_batches_and_flushes(void) {
    good g;
    good_init(&g);
    g.initial_credit = 1000;
    fake_server *s = fake_start(good_script, &g, 1);
    sluice_config cfg = base_config(s->endpoint);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    CHECK(sluice_get_state(c) == SLUICE_STATE_READY);
    append_n(c, "dev-a", 1200, 1700000000000000);
    append_n(c, "dev-b", 800, 1700000000000000);
    append_n(c, "dev-c", 500, 1700000000000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.readings_unacked == 0 && st.readings_queued == 0 && st.batches_unacked == 0);
    CHECK(st.readings_accepted == 2500);
    CHECK(st.batches_acked == (uint64_t)g.n && g.n >= 3);
    CHECK(g.credit_violations == 0);
    CHECK(sum_readings(&g, -1) == 2500);
    for (int i = 0; i < g.n; i++) {
        CHECK(g.seq[i] == (uint64_t)i + 1);
        CHECK(g.readings[i] <= 1000);
    }
    sluice_close(c);
    fake_stop(s);
}

static void waits_for_credit_without_losing_anything(void) {
    good g;
    good_init(&g);
    g.initial_credit = 100;
    g.hold_credit = 1;
    fake_server *s = fake_start(good_script, &g, 1);
    sluice_config cfg = base_config(s->endpoint);
    cfg.io_timeout_ms = 300;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, "dev-a", 1000, 1700000000000000);
    CHECK_RC(c, sluice_send(c), SLUICE_ERR_TIMEOUT);
    CHECK(strstr(sluice_errstr(c), "credit 0") != NULL);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.credit == 0 && st.credit_stalls >= 1);
    CHECK(st.readings_queued == 900 && st.readings_unacked + st.readings_accepted == 100);
    g.hold_credit = 0;
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(g.credit_violations == 0 && sum_readings(&g, -1) == 1000);
    sluice_close(c);
    fake_stop(s);
}

static void without_credit_it_asks_for_a_whole_batch_when_the_server_reads_requests(void) {
    good g;
    good_init(&g);
    g.initial_credit = 100;
    g.grant_after_ack = 0; /* credit comes only as the answer to a CreditRequest */
    g.credit_requests = 1;
    fake_server *s = fake_start(good_script, &g, 1);
    sluice_config cfg = base_config(s->endpoint);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, "dev-a", 1000, 1700000000000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(g.credit_violations == 0 && sum_readings(&g, -1) == 1000);
    CHECK(g.n == 2 && g.readings[0] == 100 && g.readings[1] == 900);
    CHECK(g.requests == 1 && g.request_readings[0] == 900); /* once per need */
    sluice_close(c);
    fake_stop(s);
}

static void a_resend_bigger_than_the_new_sessions_credit_is_asked_for_whole(void) {
    good g;
    good_init(&g);
    g.initial_credit = 1000;
    g.initial_credit_conn[1] = 10;   /* after the reconnect: far less than the batch to resend */
    g.close_after_batches[0] = 1;    /* the first connection dies with the batch unacked */
    g.grant_after_ack = 0;
    g.credit_requests = 1;
    fake_server *s = fake_start(good_script, &g, 2);
    sluice_config cfg = base_config(s->endpoint);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, "dev-a", 1000, 1700000000000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.connects == 2 && st.resent_batches == 1 && st.readings_accepted == 1000);
    CHECK(g.credit_violations == 0);
    CHECK(g.requests >= 1 && g.request_conn[0] == 1 && g.request_readings[0] == 1000);
    sluice_close(c);
    fake_stop(s);
}

static void no_credit_request_to_a_server_that_does_not_read_them(void) {
    good g;
    good_init(&g);
    g.initial_credit = 100;
    fake_server *s = fake_start(good_script, &g, 1);
    sluice_config cfg = base_config(s->endpoint);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, "dev-a", 1000, 1700000000000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(sum_readings(&g, -1) == 1000 && g.requests == 0);
    sluice_close(c);
    fake_stop(s);
}

/* ---- CreditRecall: a server that records every frame the client writes; the test sends it frames ---------- */

#define MAXF 64

typedef struct recorder {
    uint64_t initial_credit;
    pthread_mutex_t mu; /* guards what follows, and the writes to fd of both threads */
    int fd;             /* the connection once Welcome is written, else -1 */
    int hello_credit_returns;
    uint64_t held;  /* the credit the client holds, as the server counts it (charged in arrival order) */
    int violations; /* a batch or a CreditReturn above what the client held */
    int n;
    int kind[MAXF];       /* SLUICE__V1__CLIENT_FRAME__KIND_* */
    uint64_t value[MAXF]; /* readings of a Batch, CreditRequest or CreditReturn; nonce of a Pong */
} recorder;

static void recorder_init(recorder *r, uint64_t initial_credit) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    r->fd = -1;
    r->hello_credit_returns = -1;
    r->initial_credit = initial_credit;
}

static void recorder_script(fake_server *s, int fd, int conn) {
    (void)conn;
    recorder *r = s->user;
    int one = 1; /* frames the test sends back to back leave at once, not held by Nagle for the client's ack */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Sluice__V1__Hello *h = NULL;
    if (fake_read_hello(fd, &h) != 0) return;
    pthread_mutex_lock(&r->mu);
    r->hello_credit_returns = h->credit_returns ? 1 : 0;
    r->held = r->initial_credit;
    fake_welcome_requests(fd, r->initial_credit, 0);
    r->fd = fd;
    pthread_mutex_unlock(&r->mu);
    sluice__v1__hello__free_unpacked(h, NULL);
    while (!s->stop) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        Sluice__V1__ClientFrame *f = fake_read_frame(fd, 2000, NULL);
        if (f == NULL) break; /* client closed */
        uint64_t v = 0;
        pthread_mutex_lock(&r->mu);
        switch (f->kind_case) {
        case SLUICE__V1__CLIENT_FRAME__KIND_BATCH:
            v = fake_batch_readings(f->batch);
            if (v > r->held) r->violations++;
            r->held -= v > r->held ? r->held : v;
            fake_ack(fd, f->batch->seq, (uint32_t)v, 0);
            break;
        case SLUICE__V1__CLIENT_FRAME__KIND_CREDIT_RETURN:
            v = f->credit_return->readings;
            if (v > r->held) r->violations++;
            r->held -= v > r->held ? r->held : v;
            break;
        case SLUICE__V1__CLIENT_FRAME__KIND_CREDIT_REQUEST:
            v = f->credit_request->readings;
            break;
        case SLUICE__V1__CLIENT_FRAME__KIND_PONG:
            v = f->pong->nonce;
            break;
        default:
            break;
        }
        if (r->n < MAXF) {
            r->kind[r->n] = f->kind_case;
            r->value[r->n] = v;
            r->n++;
        }
        pthread_mutex_unlock(&r->mu);
        sluice__v1__client_frame__free_unpacked(f, NULL);
    }
    pthread_mutex_lock(&r->mu);
    r->fd = -1;
    pthread_mutex_unlock(&r->mu);
}

/* The server grants `readings` (Credit). */
static void recorder_grant(recorder *r, uint64_t readings) {
    pthread_mutex_lock(&r->mu);
    r->held += readings;
    CHECK(fake_credit(r->fd, readings) == 0);
    pthread_mutex_unlock(&r->mu);
}

static void recorder_recall(recorder *r, uint64_t readings) {
    pthread_mutex_lock(&r->mu);
    CHECK(fake_credit_recall(r->fd, readings) == 0);
    pthread_mutex_unlock(&r->mu);
}

static int recorded(recorder *r) {
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Runs the client until the server has recorded `n` frames (3 s at most); 1 if it did. */
static int run_until_frames(sluice_client *c, recorder *r, int n) {
    for (int i = 0; i < 150 && recorded(r) < n; i++) CHECK_RC(c, sluice_poll(c, 20), SLUICE_OK);
    return recorded(r) >= n;
}

/* Frame i as recorded: its kind and value. */
static int frame_is(recorder *r, int i, int kind, uint64_t value) {
    pthread_mutex_lock(&r->mu);
    int ok = i < r->n && r->kind[i] == kind && r->value[i] == value;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* A non-blocking client (so the test decides when it reads) connected to `s`. */
static sluice_client *recorder_client(fake_server *s, recorder *r) {
    sluice_config cfg = base_config(s->endpoint);
    cfg.nonblocking = 1;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    for (int i = 0; i < 150 && sluice_get_state(c) != SLUICE_STATE_READY; i++) sluice_poll(c, 20);
    CHECK(sluice_get_state(c) == SLUICE_STATE_READY);
    pthread_mutex_lock(&r->mu);
    CHECK(r->fd >= 0);
    pthread_mutex_unlock(&r->mu);
    return c;
}

/* Frames the test sends back to back while the client does not read reach it together: it handles all of
   them before it writes again. */
static void let_them_arrive(void) {
    poll(NULL, 0, 30);
}

#define RETURN_ SLUICE__V1__CLIENT_FRAME__KIND_CREDIT_RETURN
#define REQUEST_ SLUICE__V1__CLIENT_FRAME__KIND_CREDIT_REQUEST
#define BATCH_ SLUICE__V1__CLIENT_FRAME__KIND_BATCH
#define PONG_ SLUICE__V1__CLIENT_FRAME__KIND_PONG

static void the_hello_says_the_client_answers_credit_recalls(void) {
    recorder r;
    recorder_init(&r, 100);
    fake_server *s = fake_start(recorder_script, &r, 1);
    sluice_client *c = recorder_client(s, &r);
    CHECK(r.hello_credit_returns == 1);
    sluice_close(c);
    fake_stop(s);
}

static void a_recall_is_answered_at_once_and_ahead_of_any_later_batch(void) {
    recorder r;
    recorder_init(&r, 0);
    fake_server *s = fake_start(recorder_script, &r, 1);
    sluice_client *c = recorder_client(s, &r);
    append_n(c, "dev-a", 300, 1700000000000000);
    CHECK_RC(c, sluice_send(c), SLUICE_OK);
    CHECK(run_until_frames(c, &r, 1) && frame_is(&r, 0, REQUEST_, 300));
    /* Credit for the waiting batch and a recall, handled together: the batch may only follow the return. */
    recorder_grant(&r, 1000);
    recorder_recall(&r, 400);
    let_them_arrive();
    CHECK(run_until_frames(c, &r, 3));
    CHECK(frame_is(&r, 1, RETURN_, 400));
    CHECK(frame_is(&r, 2, BATCH_, 300));
    CHECK_RC(c, sluice_flush(c, 3000), SLUICE_OK);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.credit == 300 && st.credit_returned == 400 && st.readings_accepted == 300);
    pthread_mutex_lock(&r.mu);
    CHECK(r.held == st.credit && r.violations == 0 && r.n == 3);
    pthread_mutex_unlock(&r.mu);
    sluice_close(c);
    fake_stop(s);
}

static void a_recall_above_the_credit_held_returns_exactly_what_is_held(void) {
    recorder r;
    recorder_init(&r, 1000);
    fake_server *s = fake_start(recorder_script, &r, 1);
    sluice_client *c = recorder_client(s, &r);
    append_n(c, "dev-a", 300, 1700000000000000);
    CHECK_RC(c, sluice_send(c), SLUICE_OK);
    CHECK_RC(c, sluice_flush(c, 3000), SLUICE_OK);
    CHECK(frame_is(&r, 0, BATCH_, 300));
    recorder_recall(&r, 5000);
    CHECK(run_until_frames(c, &r, 2) && frame_is(&r, 1, RETURN_, 700));
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.credit == 0 && st.credit_returned == 700);
    /* Holding nothing, it still answers (0), and neither that answer nor a Pong owed with it is lost. */
    pthread_mutex_lock(&r.mu);
    CHECK(fake_ping(r.fd, 9) == 0);
    CHECK(fake_credit_recall(r.fd, 50) == 0);
    pthread_mutex_unlock(&r.mu);
    let_them_arrive();
    CHECK(run_until_frames(c, &r, 4));
    CHECK((frame_is(&r, 2, RETURN_, 0) && frame_is(&r, 3, PONG_, 9)) ||
          (frame_is(&r, 2, PONG_, 9) && frame_is(&r, 3, RETURN_, 0)));
    /* Two recalls handled together: every reading taken back is given back (in one CreditReturn or two). */
    recorder_grant(&r, 100);
    recorder_recall(&r, 30);
    recorder_recall(&r, 30);
    let_them_arrive();
    uint64_t returned = 0;
    for (int i = 0; i < 50 && returned < 60; i++) {
        CHECK_RC(c, sluice_poll(c, 20), SLUICE_OK);
        returned = 0;
        pthread_mutex_lock(&r.mu);
        for (int k = 4; k < r.n; k++)
            if (r.kind[k] == RETURN_) returned += r.value[k];
        pthread_mutex_unlock(&r.mu);
    }
    CHECK(returned == 60);
    sluice_get_stats(c, &st);
    CHECK(st.credit == 40 && st.credit_returned == 760);
    pthread_mutex_lock(&r.mu);
    CHECK(r.held == 40 && r.violations == 0);
    pthread_mutex_unlock(&r.mu);
    sluice_close(c);
    fake_stop(s);
}

static void after_giving_everything_back_it_asks_again_for_its_next_batch(void) {
    recorder r;
    recorder_init(&r, 0);
    fake_server *s = fake_start(recorder_script, &r, 1);
    sluice_client *c = recorder_client(s, &r);
    append_n(c, "dev-a", 300, 1700000000000000);
    CHECK_RC(c, sluice_send(c), SLUICE_OK);
    CHECK(run_until_frames(c, &r, 1) && frame_is(&r, 0, REQUEST_, 300));
    /* What it asked for is granted and recalled before it could use it: it has to ask again. */
    recorder_grant(&r, 300);
    recorder_recall(&r, 300);
    let_them_arrive();
    CHECK(run_until_frames(c, &r, 3));
    CHECK(frame_is(&r, 1, RETURN_, 300));
    CHECK(frame_is(&r, 2, REQUEST_, 300));
    for (int i = 0; i < 5; i++) CHECK_RC(c, sluice_poll(c, 20), SLUICE_OK);
    CHECK(recorded(&r) == 3); /* once per need, and no batch without credit */
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.credit == 0 && st.credit_returned == 300 && st.readings_queued == 300);
    recorder_grant(&r, 300);
    CHECK(run_until_frames(c, &r, 4) && frame_is(&r, 3, BATCH_, 300));
    CHECK_RC(c, sluice_flush(c, 3000), SLUICE_OK);
    sluice_get_stats(c, &st);
    CHECK(st.credit == 0 && st.readings_accepted == 300 && st.readings_queued == 0);
    pthread_mutex_lock(&r.mu);
    CHECK(r.held == 0 && r.violations == 0);
    pthread_mutex_unlock(&r.mu);
    sluice_close(c);
    fake_stop(s);
}

static void resends_unacked_batches_in_order_after_reconnect_even_committed_ones(void) {
    good g;
    good_init(&g);
    g.max_batch = 100;
    g.close_after_batches[0] = 3; /* reads 3 batches, acks only the first, then drops the connection */
    g.ack_limit[0] = 1;
    g.committed_seq[1] = 2;       /* ...but seq 2 had committed before the connection died */
    fake_server *s = fake_start(good_script, &g, 2);
    sluice_config cfg = base_config(s->endpoint);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, "dev-a", 500, 1700000000000000);
    int rc = sluice_flush(c, 5000);
    CHECK_RC(c, rc, SLUICE_OK);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.connects == 2);
    CHECK(st.resent_batches >= 1);
    /* seq 2 had committed (Welcome.committed_seq) but its ack was lost: it is resent, and its duplicate ack
       carries the server's counts, rather than being counted as written without them */
    CHECK(st.batches_acked == 5 && st.last_seq == 5);
    /* The second connection saw a run of seqs ending at 5, in order: from 2 (seq 1's ack arrived), or from 1
       when the first connection's reset discarded that ack before the client read it. */
    uint64_t want = 0, duplicates = 0;
    for (int i = 0; i < g.n; i++) {
        if (g.conn[i] != 1) continue;
        if (want == 0) {
            CHECK(g.seq[i] == 1 || g.seq[i] == 2);
            want = g.seq[i];
        }
        CHECK(g.seq[i] == want);
        if (g.seq[i] <= 2) duplicates++;
        want++;
    }
    CHECK(want == 6);
    CHECK(duplicates >= 1 && st.batches_duplicate == duplicates);
    CHECK(g.credit_violations == 0);
    sluice_close(c);
    fake_stop(s);
}

static void sends_heartbeats_and_answers_pings(void) {
    good g;
    good_init(&g);
    g.heartbeat_ms = 100;
    g.ping_nonce = 77;
    fake_server *s = fake_start(good_script, &g, 1);
    sluice_config cfg = base_config(s->endpoint);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    for (int i = 0; i < 12; i++) CHECK_RC(c, sluice_poll(c, 50), SLUICE_OK);
    CHECK(sluice_get_state(c) == SLUICE_STATE_READY);
    pthread_mutex_lock(&g.mu);
    CHECK(g.pings >= 2);
    pthread_mutex_unlock(&g.mu);
    CHECK(g.pong_nonce == 77);
    sluice_close(c);
    fake_stop(s);
}

static void a_silent_server_is_declared_dead_after_three_intervals(void) {
    good g;
    good_init(&g);
    g.heartbeat_ms = 100;
    g.silent = 1;
    fake_server *s = fake_start(good_script, &g, 1);
    sluice_config cfg = base_config(s->endpoint);
    cfg.reconnect_min_ms = cfg.reconnect_max_ms = 5000;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    int rc = SLUICE_OK;
    for (int i = 0; i < 40 && rc == SLUICE_OK; i++) rc = sluice_poll(c, 50);
    CHECK_RC(c, rc, SLUICE_ERR_IO);
    CHECK(strstr(sluice_errstr(c), "silent") != NULL);
    CHECK(sluice_get_state(c) == SLUICE_STATE_BACKOFF);
    sluice_close(c);
    fake_stop(s);
}

static void go_away_drains_then_reconnects_quietly(void) {
    good g;
    good_init(&g);
    g.max_batch = 100;
    g.go_away_after_first_ack_on_conn0 = 1;
    fake_server *s = fake_start(good_script, &g, 2);
    sluice_config cfg = base_config(s->endpoint);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, "dev-a", 100, 1700000000000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    /* GoAway follows the ack: once read, with nothing outstanding, the client leaves quietly */
    CHECK_RC(c, sluice_poll(c, 100), SLUICE_OK);
    CHECK(sluice_get_state(c) == SLUICE_STATE_BACKOFF);
    append_n(c, "dev-a", 150, 1700000100000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.connects == 2 && st.readings_accepted == 250);
    CHECK(sum_readings(&g, 0) == 100 && sum_readings(&g, 1) == 150);
    sluice_close(c);
    fake_stop(s);
}

static void non_blocking_mode_runs_from_the_callers_poll_loop(void) {
    good g;
    good_init(&g);
    g.initial_credit = 700;
    fake_server *s = fake_start(good_script, &g, 1);
    sluice_config cfg = base_config(s->endpoint);
    cfg.nonblocking = 1;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    CHECK(sluice_get_state(c) == SLUICE_STATE_CONNECTING);
    append_n(c, "dev-a", 3000, 1700000000000000);
    CHECK_RC(c, sluice_send(c), SLUICE_OK);
    sluice_stats st;
    int rounds = 0;
    for (; rounds < 2000; rounds++) {
        sluice_get_stats(c, &st);
        if (st.readings_queued == 0 && st.readings_unacked == 0) break;
        struct pollfd p = {sluice_fd(c), 0, 0};
        int ev = sluice_events(c);
        if (ev & SLUICE_WANT_READ) p.events |= POLLIN;
        if (ev & SLUICE_WANT_WRITE) p.events |= POLLOUT;
        int t = sluice_timeout_ms(c);
        poll(&p, p.fd >= 0 ? 1 : 0, t < 0 || t > 100 ? 100 : t);
        CHECK_RC(c, sluice_poll(c, 0), SLUICE_OK);
    }
    CHECK(st.readings_accepted == 3000 && st.batches_acked >= 5);
    CHECK(g.credit_violations == 0);
    sluice_close(c);
    fake_stop(s);
}

typedef struct acks {
    int n, dropped, duplicate;
    uint64_t dropped_seq;
    char msg[128];
} acks;

static void on_ack(void *user, const sluice_ack *a) {
    acks *k = user;
    k->n++;
    if (a->dropped) {
        k->dropped++;
        k->dropped_seq = a->seq;
        snprintf(k->msg, sizeof k->msg, "%s", a->first_reject_message);
    }
    if (a->duplicate) k->duplicate++;
}

static void a_batch_rejected_whole_is_dropped_and_reported(void) {
    good g;
    good_init(&g);
    g.max_batch = 100;
    g.reject_seq = 2;
    fake_server *s = fake_start(good_script, &g, 1);
    sluice_config cfg = base_config(s->endpoint);
    acks k = {0};
    cfg.on_ack = on_ack;
    cfg.on_ack_user = &k;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, "dev-a", 300, 1700000000000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_ERR_REJECTED);
    CHECK(strstr(sluice_errstr(c), "batch 2") != NULL);
    CHECK(k.n == 3 && k.dropped == 1 && k.dropped_seq == 2 && strstr(k.msg, "timestamps") != NULL);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.batches_dropped == 1 && st.batches_unacked == 0 && st.readings_accepted == 200);
    CHECK_RC(c, sluice_flush(c, 100), SLUICE_OK);
    sluice_close(c);
    fake_stop(s);
}

static void a_refused_token_is_fatal_and_sticky(void) {
    good g;
    good_init(&g);
    g.auth_fail = 1;
    fake_server *s = fake_start(good_script, &g, 1);
    sluice_config cfg = base_config(s->endpoint);
    cfg.token = "wrong";
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_ERR_AUTH);
    CHECK(strstr(sluice_errstr(c), "token unknown") != NULL);
    CHECK(sluice_get_state(c) == SLUICE_STATE_FAILED);
    CHECK_RC(c, sluice_append(c, "d", "m", 1, 1.0, 0), SLUICE_ERR_AUTH);
    CHECK_RC(c, sluice_poll(c, 0), SLUICE_ERR_AUTH);
    CHECK(sluice_fd(c) == -1);
    sluice_close(c);
    fake_stop(s);
}

static void full_memory_refuses_readings_until_acks_free_it(void) {
    good g;
    good_init(&g);
    fake_server *s = fake_start(good_script, &g, 1);
    sluice_config cfg = base_config(s->endpoint);
    cfg.memory_limit = 1u << 20;
    cfg.max_batch_bytes = 16u << 10;
    cfg.max_batch_readings = 1000;
    cfg.compression_level = 1;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    int added = 0, rc = SLUICE_OK;
    while (rc == SLUICE_OK && added < 1000000) {
        rc = sluice_append(c, "dev-a", "temp_c", 1700000000000000 + added * 1000ll, added * 0.5, 0);
        if (rc == SLUICE_OK) added++;
    }
    CHECK_RC(c, rc, SLUICE_ERR_FULL);
    CHECK(strstr(sluice_errstr(c), "memory ceiling") != NULL);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.memory_used <= cfg.memory_limit && st.memory_peak <= cfg.memory_limit);
    CHECK(st.readings_open == (uint64_t)added && added > 1000);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    CHECK_RC(c, sluice_flush(c, 10000), SLUICE_OK);
    CHECK(sum_readings(&g, -1) == (uint64_t)added);
    CHECK_RC(c, sluice_append(c, "dev-a", "temp_c", 1700000000000000, 1.0, 0), SLUICE_OK);
    sluice_get_stats(c, &st);
    CHECK(st.memory_peak <= cfg.memory_limit);
    sluice_close(c);
    fake_stop(s);
}

static void config_mistakes_are_named(void) {
    sluice_config cfg;
    sluice_config_init(&cfg);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_ERR_INVALID);
    CHECK(strstr(sluice_errstr(c), "endpoints") != NULL);
    CHECK_RC(c, sluice_connect(c), SLUICE_ERR_INVALID);
    sluice_close(c);
    cfg.endpoints = "127.0.0.1:7878";
    c = sluice_create(&cfg);
    CHECK(strstr(sluice_errstr(c), "producer_id") != NULL);
    sluice_close(c);
    cfg.producer_id[0] = 1;
    cfg.memory_limit = 100000;
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_ERR_INVALID);
    CHECK(strstr(sluice_errstr(c), "below the minimum") != NULL);
    sluice_close(c);
    cfg.memory_limit = 0;
    cfg.endpoints = "::1:7878";
    c = sluice_create(&cfg);
    CHECK(strstr(sluice_errstr(c), "brackets") != NULL);
    sluice_close(c);
    cfg.endpoints = "[::1]:7878, 127.0.0.1:99999";
    c = sluice_create(&cfg);
    CHECK(strstr(sluice_errstr(c), "99999") != NULL);
    sluice_close(c);
    cfg.endpoints = "[::1]:7878, localhost";
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    CHECK_RC(c, sluice_append(c, "bad device", "m", 0, 0, 0), SLUICE_ERR_INVALID);
    CHECK(strstr(sluice_errstr(c), "device_id") != NULL);
    sluice_close(c);
    CHECK(sluice_version_number() == SLUICE_VERSION_NUMBER);
    CHECK(strcmp(sluice_version_string(), SLUICE_VERSION_STRING) == 0);
    CHECK(strcmp(sluice_strerror(SLUICE_ERR_FULL), "SLUICE_ERR_FULL") == 0);
    CHECK(sluice_errstr(NULL) != NULL);
}

int main(void) {
    RUN(config_mistakes_are_named);
    RUN(sends_everything_in_credit_sized_batches_and_flushes);
    RUN(waits_for_credit_without_losing_anything);
    RUN(resends_unacked_batches_in_order_after_reconnect_even_committed_ones);
    RUN(without_credit_it_asks_for_a_whole_batch_when_the_server_reads_requests);
    RUN(a_resend_bigger_than_the_new_sessions_credit_is_asked_for_whole);
    RUN(no_credit_request_to_a_server_that_does_not_read_them);
    RUN(the_hello_says_the_client_answers_credit_recalls);
    RUN(a_recall_is_answered_at_once_and_ahead_of_any_later_batch);
    RUN(a_recall_above_the_credit_held_returns_exactly_what_is_held);
    RUN(after_giving_everything_back_it_asks_again_for_its_next_batch);
    RUN(sends_heartbeats_and_answers_pings);
    RUN(a_silent_server_is_declared_dead_after_three_intervals);
    RUN(go_away_drains_then_reconnects_quietly);
    RUN(non_blocking_mode_runs_from_the_callers_poll_loop);
    RUN(a_batch_rejected_whole_is_dropped_and_reported);
    RUN(a_refused_token_is_fatal_and_sticky);
    RUN(full_memory_refuses_readings_until_acks_free_it);
    CHECK_DONE();
}
