/* Calls into the client from inside its own callbacks, server frames outside the protocol's limits, config
   values past their bounds, and the token left in freed memory. Each test reproduces a bug seen before:
   sluice_close() from the ack callback was a use-after-free, sluice_poll() from it re-parsed stale bytes,
   Welcome.committed_seq = 2^64-1 wrapped the next seq to 0, and the Hello buffer was freed with the token
   still in it. Run under valgrind and with AddressSanitizer + UBSan. */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "fake_server.h"
#include "sluice.h"

typedef struct srv {
    uint64_t committed[2];  /* Welcome.committed_seq per connection */
    int batches_per_burst;  /* read this many batches, then write all their acks in one write */
    int close_after_burst;  /* conn 0 closes after its first burst */
    int ack_extra;          /* add this to Ack.accepted (a lying server) */
    /* recorded */
    int batches;
    uint64_t last_seq;
} srv;

/* One Ack frame, prefix included, appended at out + *len. */
static void put_ack(uint8_t *out, size_t *len, uint64_t seq, uint32_t accepted) {
    Sluice__V1__Ack a = SLUICE__V1__ACK__INIT;
    a.seq = seq;
    a.accepted = accepted;
    Sluice__V1__ServerFrame f = SLUICE__V1__SERVER_FRAME__INIT;
    f.kind_case = SLUICE__V1__SERVER_FRAME__KIND_ACK;
    f.ack = &a;
    size_t n = protobuf_c_message_get_packed_size(&f.base);
    uint8_t *p = out + *len;
    p[0] = 0;
    p[1] = (uint8_t)(n >> 24);
    p[2] = (uint8_t)(n >> 16);
    p[3] = (uint8_t)(n >> 8);
    p[4] = (uint8_t)n;
    protobuf_c_message_pack(&f.base, p + 5);
    *len += 5 + n;
}

static void burst_script(fake_server *s, int fd, int conn) {
    srv *v = s->user;
    if (fake_read_hello(fd, NULL) != 0) return;
    fake_welcome(fd, 100000, v->committed[conn < 2 ? conn : 1], 0, 100);
    uint8_t out[4096];
    size_t len = 0;
    int in_burst = 0;
    while (!s->stop) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) {
            if (len > 0) fake_write_all(fd, out, len); /* a short burst: nothing more came */
            len = 0;
            in_burst = 0;
            continue;
        }
        Sluice__V1__ClientFrame *f = fake_read_frame(fd, 2000, NULL);
        if (f == NULL) return;
        if (f->kind_case == SLUICE__V1__CLIENT_FRAME__KIND_BATCH) {
            uint32_t n = (uint32_t)fake_batch_readings(f->batch);
            v->batches++;
            v->last_seq = f->batch->seq;
            put_ack(out, &len, f->batch->seq, n + (uint32_t)v->ack_extra);
            fake_credit(fd, n);
            if (++in_burst == v->batches_per_burst) {
                fake_write_all(fd, out, len); /* every ack in one write: the client parses them in one go */
                len = 0;
                in_burst = 0;
                if (conn == 0 && v->close_after_burst) {
                    sluice__v1__client_frame__free_unpacked(f, NULL);
                    poll(NULL, 0, 100);
                    return;
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
    for (int i = 0; i < 16; i++) cfg.producer_id[i] = (uint8_t)(0x40 + i);
    cfg.connect_timeout_ms = 2000;
    cfg.io_timeout_ms = 5000;
    cfg.reconnect_min_ms = 10;
    cfg.reconnect_max_ms = 100;
    cfg.max_batch_readings = 100;
    return cfg;
}

static void append_n(sluice_client *c, int n) {
    for (int i = 0; i < n; i++) CHECK_RC(c, sluice_append(c, "dev-cb", "temp_c", 1700000000000000 + i * 1000ll, i, 0), SLUICE_OK);
}

/* ---- sluice_close from the ack callback ------------------------------------------------------------- */

typedef struct closer {
    sluice_client *c;
    int acks;
} closer;

static void close_on_first_ack(void *user, const sluice_ack *a) {
    closer *k = user;
    (void)a;
    k->acks++;
    sluice_close(k->c); /* deferred: the handle is freed when sluice_flush returns */
}

static void closing_from_the_ack_callback_is_deferred_not_a_use_after_free(void) {
    srv v = {{0, 0}, 3, 0, 0, 0, 0};
    fake_server *s = fake_start(burst_script, &v, 1);
    sluice_config cfg = base_config(s->endpoint);
    closer k = {NULL, 0};
    cfg.on_ack = close_on_first_ack;
    cfg.on_ack_user = &k;
    sluice_client *c = sluice_create(&cfg);
    k.c = c;
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 300); /* 3 batches of 100: their 3 acks arrive in one read */
    int rc = sluice_flush(c, 5000);
    /* c is freed now: no more calls on it */
    CHECK(rc == SLUICE_ERR_STATE);
    CHECK(k.acks == 1); /* it stopped at the next step: no callback on a closed handle */
    fake_stop(s);
}

/* ---- every other call from the ack callback --------------------------------------------------------- */

typedef struct reenter {
    sluice_client *c;
    int acks;
    uint64_t seqs[8];
    int rc_poll, rc_send, rc_flush, rc_append, rc_connect;
    int named;
} reenter;

static void call_everything(void *user, const sluice_ack *a) {
    reenter *k = user;
    if (k->acks < 8) k->seqs[k->acks] = a->seq;
    k->acks++;
    k->rc_poll = sluice_poll(k->c, 0);
    k->named += strstr(sluice_errstr(k->c), "sluice_poll called from inside a callback") != NULL;
    k->rc_send = sluice_send(k->c);
    k->rc_flush = sluice_flush(k->c, 100);
    k->rc_append = sluice_append(k->c, "dev-cb", "temp_c", 1, 1.0, 0);
    k->rc_connect = sluice_connect(k->c);
    sluice_stats st;
    sluice_get_stats(k->c, &st); /* reading is fine */
}

static void calls_from_the_ack_callback_fail_cleanly_and_nothing_is_parsed_twice(void) {
    srv v = {{0, 0}, 3, 0, 0, 0, 0};
    fake_server *s = fake_start(burst_script, &v, 1);
    sluice_config cfg = base_config(s->endpoint);
    reenter k;
    memset(&k, 0, sizeof k);
    cfg.on_ack = call_everything;
    cfg.on_ack_user = &k;
    sluice_client *c = sluice_create(&cfg);
    k.c = c;
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 300);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    /* each ack reported once, in order: no stale bytes parsed again */
    CHECK(k.acks == 3 && k.seqs[0] == 1 && k.seqs[1] == 2 && k.seqs[2] == 3);
    CHECK(k.rc_poll == SLUICE_ERR_STATE && k.rc_send == SLUICE_ERR_STATE && k.rc_flush == SLUICE_ERR_STATE);
    CHECK(k.rc_append == SLUICE_ERR_STATE && k.rc_connect == SLUICE_ERR_STATE);
    CHECK(k.named == 3);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.batches_acked == 3 && st.readings_accepted == 300 && st.readings_open == 0);
    /* and the handle works normally afterwards */
    append_n(c, 10);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(v.batches == 4);
    sluice_close(c);
    fake_stop(s);
}

/* ---- a seq hook calling back in --------------------------------------------------------------------- */

typedef struct seqk {
    sluice_client *c;
    int rc_send;
} seqk;

static int load_none(void *user, uint64_t *next) {
    (void)user;
    (void)next;
    return 1;
}

static int store_and_send(void *user, uint64_t next) {
    seqk *k = user;
    (void)next;
    k->rc_send = sluice_send(k->c);
    return 0;
}

static void a_seq_hook_calling_back_in_gets_state_error(void) {
    srv v = {{0, 0}, 1, 0, 0, 0, 0};
    fake_server *s = fake_start(burst_script, &v, 1);
    sluice_config cfg = base_config(s->endpoint);
    seqk k = {NULL, 0};
    cfg.seq_load = load_none;
    cfg.seq_store = store_and_send;
    cfg.seq_user = &k;
    sluice_client *c = sluice_create(&cfg);
    k.c = c;
    append_n(c, 50);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(k.rc_send == SLUICE_ERR_STATE);
    sluice_close(c);
    fake_stop(s);
}

/* ---- server frames past the protocol's limits ------------------------------------------------------- */

static void committed_seq_at_the_end_of_the_seq_space_is_a_protocol_error(void) {
    srv v = {{UINT64_MAX, UINT64_MAX}, 1, 0, 0, 0, 0};
    fake_server *s = fake_start(burst_script, &v, 1);
    sluice_config cfg = base_config(s->endpoint);
    cfg.reconnect_min_ms = cfg.reconnect_max_ms = 10000;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_ERR_PROTOCOL);
    CHECK(strstr(sluice_errstr(c), "committed_seq is 2^64-1") != NULL);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.connects == 0 && st.last_seq == 0);
    sluice_close(c);
    fake_stop(s);
}

static void the_last_seq_there_is_is_still_usable(void) {
    srv v = {{UINT64_MAX - 1, 0}, 1, 0, 0, 0, 0};
    fake_server *s = fake_start(burst_script, &v, 1);
    sluice_config cfg = base_config(s->endpoint);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 10);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(v.batches == 1 && v.last_seq == UINT64_MAX);
    sluice_close(c);
    fake_stop(s);
}

static void committed_seq_above_what_was_sent_is_a_protocol_error(void) {
    srv v = {{0, 1000}, 2, 1, 0, 0, 0}; /* conn 0 acks 2 batches and closes; conn 1 claims seq 1000 committed */
    fake_server *s = fake_start(burst_script, &v, 2);
    sluice_config cfg = base_config(s->endpoint);
    cfg.reconnect_min_ms = cfg.reconnect_max_ms = 10;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 200);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    int rc = SLUICE_OK; /* first the lost connection (SLUICE_ERR_IO), then the second Welcome */
    for (int i = 0; i < 100 && rc != SLUICE_ERR_PROTOCOL; i++) rc = sluice_poll(c, 50);
    CHECK_RC(c, rc, SLUICE_ERR_PROTOCOL);
    CHECK(strstr(sluice_errstr(c), "committed_seq 1000 is above the highest seq this client has sent (2)") != NULL);
    sluice_close(c);
    fake_stop(s);
}

static void an_ack_counting_more_readings_than_the_batch_held_is_a_protocol_error(void) {
    srv v = {{0, 0}, 1, 0, 5, 0, 0};
    fake_server *s = fake_start(burst_script, &v, 1);
    sluice_config cfg = base_config(s->endpoint);
    cfg.reconnect_min_ms = cfg.reconnect_max_ms = 10000;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 10);
    CHECK_RC(c, sluice_send(c), SLUICE_OK);
    int rc = SLUICE_OK;
    for (int i = 0; i < 100 && rc == SLUICE_OK; i++) rc = sluice_poll(c, 50);
    CHECK_RC(c, rc, SLUICE_ERR_PROTOCOL);
    CHECK(strstr(sluice_errstr(c), "counts 15 accepted + 0 rejected readings, but the batch held 10") != NULL);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.batches_unacked == 1 && st.readings_accepted == 0); /* kept for resending */
    sluice_close(c);
    fake_stop(s);
}

/* ---- config bounds ---------------------------------------------------------------------------------- */

static void config_values_have_upper_bounds(void) {
    struct {
        const char *field;
        int which;
    } cases[] = {{"max_batch_readings", 0}, {"max_batch_bytes", 1}, {"io_timeout_ms", 2},
                 {"connect_timeout_ms", 3}, {"reconnect_max_ms", 4}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sluice_config cfg = base_config("127.0.0.1:7878");
        switch (cases[i].which) {
        case 0: cfg.max_batch_readings = UINT32_MAX; break;
        case 1: cfg.max_batch_bytes = UINT32_MAX; break;
        case 2: cfg.io_timeout_ms = UINT32_MAX; break;
        case 3: cfg.connect_timeout_ms = UINT32_MAX; break;
        default: cfg.reconnect_max_ms = UINT32_MAX; break;
        }
        sluice_client *c = sluice_create(&cfg);
        CHECK_RC(c, sluice_err(c), SLUICE_ERR_INVALID);
        CHECK(strstr(sluice_errstr(c), cases[i].field) != NULL);
        sluice_close(c);
    }
    sluice_config cfg = base_config("127.0.0.1:7878");
    cfg.max_batch_readings = 1000000;
    cfg.max_batch_bytes = 1u << 20;
    cfg.memory_limit = 64u << 20;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    sluice_close(c);
}

/* ---- the token is wiped before its memory is freed -------------------------------------------------- */

static const char k_token[] = "s3cr3t-token-4f1c2a9e";
static int g_token_in_freed;

static void *scan_malloc(void *opaque, size_t n) {
    (void)opaque;
    return calloc(1, n); /* zeroed, so the scan below reads only defined bytes (valgrind) */
}

static void scan_free(void *opaque, void *p) {
    size_t n = *(size_t *)p; /* libsluice stores each allocation's size in front */
    (void)opaque;
    for (size_t i = 0; i + sizeof k_token - 1 <= n; i++)
        if (memcmp((char *)p + i, k_token, sizeof k_token - 1) == 0) g_token_in_freed++;
    free(p);
}

static void the_token_is_wiped_before_its_memory_is_freed(void) {
    sluice_allocator a = {scan_malloc, scan_free, NULL};
    sluice_config cfg = base_config("127.0.0.1:7878");
    cfg.token = k_token;
    cfg.allocator = &a;
    g_token_in_freed = 0;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    sluice_close(c);
    CHECK(g_token_in_freed == 0);
}

int main(void) {
    RUN(closing_from_the_ack_callback_is_deferred_not_a_use_after_free);
    RUN(calls_from_the_ack_callback_fail_cleanly_and_nothing_is_parsed_twice);
    RUN(a_seq_hook_calling_back_in_gets_state_error);
    RUN(committed_seq_at_the_end_of_the_seq_space_is_a_protocol_error);
    RUN(the_last_seq_there_is_is_still_usable);
    RUN(committed_seq_above_what_was_sent_is_a_protocol_error);
    RUN(an_ack_counting_more_readings_than_the_batch_held_is_a_protocol_error);
    RUN(config_values_have_upper_bounds);
    RUN(the_token_is_wiped_before_its_memory_is_freed);
    CHECK_DONE();
}
