/* Store-and-forward: the file ring (round trip, tombstones, a torn write recovered, bounded and wrapping),
   and the client keeping unacked batches in it: a "crashed" client's batches are loaded by the next one and
   resent with their seqs; a store that refuses holds batches back with SLUICE_ERR_PERSIST. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fake_server.h"
#include "sluice.h"

static char dir[64];

static void path_of(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", dir, name);
}

/* A frame-shaped payload: flags 0, length, then bytes derived from seq. */
static size_t frame_of(uint8_t *buf, uint64_t seq, size_t len) {
    buf[0] = 0;
    uint32_t body = (uint32_t)(len - 5);
    buf[1] = (uint8_t)(body >> 24);
    buf[2] = (uint8_t)(body >> 16);
    buf[3] = (uint8_t)(body >> 8);
    buf[4] = (uint8_t)body;
    for (size_t i = 5; i < len; i++) buf[i] = (uint8_t)(seq * 31 + i);
    return len;
}

static int count_kept(sluice_store_file *s, uint64_t *seqs, int max) {
    uint64_t after = 0, seq;
    uint32_t readings;
    size_t len;
    int n = 0;
    while (sluice_store_file_next(s, after, &seq, &readings, &len) == 0) {
        if (n < max) seqs[n] = seq;
        n++;
        after = seq;
    }
    return n;
}

static int frame_ok(sluice_store_file *s, uint64_t seq, size_t len) {
    static uint8_t want[70000], got[70000];
    frame_of(want, seq, len);
    return sluice_store_file_read(s, seq, got, len) == 0 && memcmp(want, got, len) == 0;
}

static void the_file_ring_keeps_batches_until_removed_across_reopens(void) {
    char path[128];
    path_of(path, sizeof path, "ring1");
    sluice_store_file s;
    static uint8_t buf[70000];
    CHECK(sluice_store_file_open(&s, path, 1u << 20, SLUICE_FSYNC_EVERY_BATCH) == 0);
    for (uint64_t q = 1; q <= 3; q++) CHECK(sluice_store_file_put(&s, q, 10, buf, frame_of(buf, q, 1000 + q)) == 0);
    CHECK(sluice_store_file_remove(&s, 1) == 0);
    CHECK(sluice_store_file_remove(&s, 3) == 0); /* out of order: a tombstone in the middle */
    sluice_store_file_close(&s);
    CHECK(sluice_store_file_open(&s, path, 0, SLUICE_FSYNC_EVERY_BATCH) == 0);
    uint64_t seqs[8];
    CHECK(count_kept(&s, seqs, 8) == 1 && seqs[0] == 2);
    CHECK(frame_ok(&s, 2, 1002));
    CHECK(sluice_store_file_read(&s, 3, buf, 1003) == -ENOENT);
    sluice_store_file_close(&s);

    /* not a store file: refused, not overwritten */
    path_of(path, sizeof path, "not-a-ring");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(write(fd, "hello\n", 6) == 6);
    close(fd);
    CHECK(sluice_store_file_open(&s, path, 1u << 20, 0) == -EINVAL);
    path_of(path, sizeof path, "too-small");
    CHECK(sluice_store_file_open(&s, path, 1000, 0) == -ENOSPC);
}

static void a_torn_write_loses_only_the_record_it_tore(void) {
    char path[128];
    path_of(path, sizeof path, "ring2");
    sluice_store_file s;
    static uint8_t buf[70000];
    CHECK(sluice_store_file_open(&s, path, 1u << 20, SLUICE_FSYNC_EVERY_BATCH) == 0);
    for (uint64_t q = 1; q <= 3; q++) CHECK(sluice_store_file_put(&s, q, 10, buf, frame_of(buf, q, 5000)) == 0);
    sluice_store_file_close(&s);
    /* power cut in the middle of the third record: its last bytes never reached the disk */
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK(truncate(path, st.st_size - 100) == 0);
    CHECK(sluice_store_file_open(&s, path, 0, SLUICE_FSYNC_EVERY_BATCH) == 0);
    uint64_t seqs[8];
    CHECK(count_kept(&s, seqs, 8) == 2 && seqs[0] == 1 && seqs[1] == 2);
    CHECK(frame_ok(&s, 1, 5000) && frame_ok(&s, 2, 5000));
    /* the log goes on where the torn record began */
    CHECK(sluice_store_file_put(&s, 4, 10, buf, frame_of(buf, 4, 3000)) == 0);
    sluice_store_file_close(&s);
    /* a flipped bit in a record's frame: that record and everything after it are not trusted */
    CHECK(sluice_store_file_open(&s, path, 0, 0) == 0);
    CHECK(count_kept(&s, seqs, 8) == 3 && seqs[2] == 4);
    sluice_store_file_close(&s);
    int fd = open(path, O_RDWR);
    uint8_t b;
    CHECK(pread(fd, &b, 1, 128 + 40 + 5000 + 40 + 77) == 1); /* inside record 2's frame */
    b ^= 0x10;
    CHECK(pwrite(fd, &b, 1, 128 + 40 + 5000 + 40 + 77) == 1);
    close(fd);
    CHECK(sluice_store_file_open(&s, path, 0, 0) == 0);
    CHECK(count_kept(&s, seqs, 8) == 1 && seqs[0] == 1);
    sluice_store_file_close(&s);
}

static void the_ring_is_bounded_and_wraps_around(void) {
    char path[128];
    path_of(path, sizeof path, "ring3");
    sluice_store_file s;
    static uint8_t buf[70000];
    CHECK(sluice_store_file_open(&s, path, 64u << 10, SLUICE_FSYNC_NEVER) == 0);
    uint64_t q = 1;
    while (sluice_store_file_put(&s, q, 10, buf, frame_of(buf, q, 10000)) == 0) q++;
    CHECK(q == 7); /* six 10 KB records fit in 64 KiB */
    CHECK(sluice_store_file_put(&s, q, 10, buf, frame_of(buf, q, 10000)) == -ENOSPC);
    CHECK(sluice_store_file_put(&s, q, 10, buf, frame_of(buf, q, 70000)) == -EFBIG);
    /* acks free the oldest: the ring wraps, laps after laps, and a reopen finds exactly the kept ones */
    uint64_t oldest = 1;
    for (int lap = 0; lap < 20; lap++) {
        CHECK(sluice_store_file_remove(&s, oldest++) == 0);
        CHECK(sluice_store_file_put(&s, q, 10, buf, frame_of(buf, q, 10000)) == 0);
        q++;
    }
    sluice_store_file_close(&s);
    CHECK(sluice_store_file_open(&s, path, 0, 0) == 0);
    uint64_t seqs[8];
    CHECK(count_kept(&s, seqs, 8) == 6 && seqs[0] == oldest && seqs[5] == q - 1);
    CHECK(frame_ok(&s, q - 1, 10000) && frame_ok(&s, oldest, 10000));
    sluice_store_file_close(&s);
}

/* ---- the client with a file store ------------------------------------------------------------------- */

typedef struct srv {
    int silent_conn0; /* connection 0 never acks (its client "crashes") */
    int n;
    uint64_t seqs[64];
} srv;

static void script(fake_server *s, int fd, int conn) {
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
            if (v->n < 64) v->seqs[v->n] = f->batch->seq;
            v->n++;
            if (!(conn == 0 && v->silent_conn0)) {
                fake_ack(fd, f->batch->seq, n, 0);
                fake_credit(fd, n);
            }
        }
        sluice__v1__client_frame__free_unpacked(f, NULL);
    }
}

static sluice_config base_config(const char *endpoint) {
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = endpoint;
    for (int i = 0; i < 16; i++) cfg.producer_id[i] = (uint8_t)(0x20 + i);
    cfg.connect_timeout_ms = 2000;
    cfg.io_timeout_ms = 5000;
    cfg.reconnect_min_ms = 10;
    cfg.reconnect_max_ms = 100;
    cfg.max_batch_readings = 100;
    return cfg;
}

static void append_n(sluice_client *c, int n, int64_t t0) {
    for (int i = 0; i < n; i++) CHECK_RC(c, sluice_append(c, "dev-st", "temp_c", t0 + i * 1000ll, i * 0.25, 0), SLUICE_OK);
}

static void a_crashed_clients_batches_are_resent_by_the_next_with_their_seqs(void) {
    srv v;
    memset(&v, 0, sizeof v);
    v.silent_conn0 = 1;
    fake_server *s = fake_start(script, &v, 2);
    char path[128], seqp[128];
    path_of(path, sizeof path, "client-ring");
    path_of(seqp, sizeof seqp, "client-seq");
    sluice_store_file st;
    CHECK(sluice_store_file_open(&st, path, 1u << 20, SLUICE_FSYNC_EVERY_BATCH) == 0);
    sluice_config cfg = base_config(s->endpoint);
    sluice_config_store_file(&cfg, &st);
    sluice_config_seq_file(&cfg, seqp);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 300, 1700000000000000);
    CHECK_RC(c, sluice_send(c), SLUICE_OK);
    sluice_stats s1;
    sluice_get_stats(c, &s1);
    CHECK(s1.store_puts == 3 && s1.batches_unacked == 3);
    sluice_close(c); /* the "crash": nothing acked, everything kept in the file */
    sluice_store_file_close(&st);

    /* the next life: same file, same seq file */
    CHECK(sluice_store_file_open(&st, path, 0, SLUICE_FSYNC_EVERY_BATCH) == 0);
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    sluice_stats s2;
    sluice_get_stats(c, &s2);
    CHECK(s2.batches_restored == 3 && s2.readings_unacked == 300);
    append_n(c, 50, 1700000001000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    sluice_get_stats(c, &s2);
    CHECK(s2.readings_accepted == 350 && s2.resent_batches == 3);
    /* the server saw 1, 2, 3 then again 1, 2, 3 (same seqs: it dedups them) and a new batch above 3 */
    CHECK(v.n == 7 && v.seqs[3] == 1 && v.seqs[4] == 2 && v.seqs[5] == 3 && v.seqs[6] > 3);
    uint64_t seqs[8];
    CHECK(count_kept(&st, seqs, 8) == 0); /* all acked: nothing kept */
    sluice_close(c);
    sluice_store_file_close(&st);
    fake_stop(s);
}

static int g_refuse;
static int refusing_put(void *user, uint64_t seq, uint32_t readings, const uint8_t *frame, size_t len) {
    if (g_refuse) return -ENOSPC;
    return sluice_store_file_put(user, seq, readings, frame, len);
}

static void a_refusing_store_holds_batches_back(void) {
    srv v;
    memset(&v, 0, sizeof v);
    fake_server *s = fake_start(script, &v, 1);
    char path[128];
    path_of(path, sizeof path, "refusing-ring");
    sluice_store_file st;
    CHECK(sluice_store_file_open(&st, path, 1u << 20, SLUICE_FSYNC_NEVER) == 0);
    sluice_config cfg = base_config(s->endpoint);
    sluice_config_store_file(&cfg, &st);
    cfg.store_put = refusing_put;
    cfg.io_timeout_ms = 300;
    g_refuse = 1;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 100, 1700000000000000);
    CHECK_RC(c, sluice_send(c), SLUICE_ERR_PERSIST);
    CHECK(strstr(sluice_errstr(c), "store_put failed") != NULL);
    CHECK(v.n == 0);
    g_refuse = 0;
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK); /* the retry a second later succeeds */
    CHECK(v.n == 1);
    sluice_close(c);
    sluice_store_file_close(&st);
    fake_stop(s);

    /* the hooks come in fours */
    cfg.endpoints = "127.0.0.1:7878";
    cfg.store_read = NULL;
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_ERR_INVALID);
    CHECK(strstr(sluice_errstr(c), "go together") != NULL);
    sluice_close(c);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/libsluice-store-%d", (int)getpid());
    mkdir(dir, 0755);
    RUN(the_file_ring_keeps_batches_until_removed_across_reopens);
    RUN(a_torn_write_loses_only_the_record_it_tore);
    RUN(the_ring_is_bounded_and_wraps_around);
    RUN(a_crashed_clients_batches_are_resent_by_the_next_with_their_seqs);
    RUN(a_refusing_store_holds_batches_back);
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    CHECK_DONE();
}
