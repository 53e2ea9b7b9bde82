/* Seq persistence: seqs are durably reserved in blocks before a batch carries them, a "reboot" resumes above
   every seq used, a failing store sends nothing and says so, a failing load refuses to start, and the
   file-backed hooks round-trip atomically. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fake_server.h"
#include "sluice.h"

#define MAXB 1024

/* ---- In-memory "flash": what the hooks stored, and when they were asked ------------------------------- */

typedef struct flash {
    pthread_mutex_t mu;
    int has;
    uint64_t stored;
    int load_rc;      /* returned by load instead of reading (0 = read normally) */
    int fail_stores;  /* stores return -5 while set */
    int stores;       /* successful */
    int store_calls;  /* all */
    uint64_t log[64]; /* values stored, in order */
} flash;

static void flash_init(flash *f) {
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
}

static int flash_load(void *user, uint64_t *next) {
    flash *f = user;
    if (f->load_rc != 0) return f->load_rc;
    if (!f->has) return 1;
    *next = f->stored;
    return 0;
}

static int flash_store(void *user, uint64_t next) {
    flash *f = user;
    pthread_mutex_lock(&f->mu);
    f->store_calls++;
    int rc = -5;
    if (!f->fail_stores) {
        f->has = 1;
        f->stored = next;
        if (f->stores < 64) f->log[f->stores] = next;
        f->stores++;
        rc = 0;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static uint64_t flash_value(flash *f) {
    pthread_mutex_lock(&f->mu);
    uint64_t v = f->stored;
    pthread_mutex_unlock(&f->mu);
    return v;
}

/* ---- A server that acks everything and records each batch's seq with the stored value at its arrival --- */

typedef struct recorder {
    flash *f;
    uint32_t max_batch;
    uint64_t committed_seq;
    pthread_mutex_t mu;
    int n;
    uint64_t seq[MAXB];
    uint64_t stored_then[MAXB];
    int conn[MAXB];
    uint64_t readings;
} recorder;

static void recorder_init(recorder *r, flash *f, uint32_t max_batch) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    r->f = f;
    r->max_batch = max_batch;
}

static void recording(fake_server *s, int fd, int conn) {
    recorder *r = s->user;
    if (fake_read_hello(fd, NULL) != 0) return;
    fake_welcome(fd, 100000, r->committed_seq, 0, r->max_batch);
    while (!s->stop) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        Sluice__V1__ClientFrame *fr = fake_read_frame(fd, 2000, NULL);
        if (fr == NULL) return;
        if (fr->kind_case == SLUICE__V1__CLIENT_FRAME__KIND_BATCH) {
            uint64_t n = fake_batch_readings(fr->batch);
            pthread_mutex_lock(&r->mu);
            if (r->n < MAXB) {
                r->seq[r->n] = fr->batch->seq;
                r->stored_then[r->n] = r->f ? flash_value(r->f) : 0;
                r->conn[r->n] = conn;
                r->n++;
            }
            r->readings += n;
            pthread_mutex_unlock(&r->mu);
            fake_ack(fd, fr->batch->seq, (uint32_t)n, 0);
            fake_credit(fd, n);
        }
        sluice__v1__client_frame__free_unpacked(fr, NULL);
    }
}

static sluice_config config(const char *ep, flash *f) {
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = ep;
    for (int i = 0; i < 16; i++) cfg.producer_id[i] = (uint8_t)(0xa0 + i);
    cfg.connect_timeout_ms = 2000;
    cfg.io_timeout_ms = 5000;
    cfg.reconnect_min_ms = 10;
    cfg.reconnect_max_ms = 100;
    if (f != NULL) {
        cfg.seq_load = flash_load;
        cfg.seq_store = flash_store;
        cfg.seq_user = f;
    }
    return cfg;
}

static void append_n(sluice_client *c, int n, int64_t t0) {
    for (int i = 0; i < n; i++) {
        int rc = sluice_append(c, "dev-seq", "temp_c", t0 + i * 1000000ll, 20.0 + (i % 100) * 0.01, 0);
        if (rc != SLUICE_OK) {
            CHECK_RC(c, rc, SLUICE_OK);
            return;
        }
    }
}

/* ---- Tests --------------------------------------------------------------------------------------------- */

static void seqs_are_reserved_in_blocks_before_a_batch_carries_them(void) {
    flash f;
    flash_init(&f);
    recorder r;
    recorder_init(&r, &f, 10);
    fake_server *s = fake_start(recording, &r, 1);
    sluice_config cfg = config(s->endpoint, &f);
    cfg.seq_reserve = 4;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    CHECK(f.store_calls == 0); /* nothing is written before there is something to send */
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 95, 1700000000000000); /* 10 batches of at most 10: seqs 1..10 */
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    /* one store per 4 seqs, each before the first seq it covers: 1 -> 5, 5 -> 9, 9 -> 13 */
    CHECK(f.stores == 3);
    CHECK(f.log[0] == 5 && f.log[1] == 9 && f.log[2] == 13);
    CHECK(r.n == 10);
    for (int i = 0; i < r.n; i++) {
        CHECK(r.seq[i] == (uint64_t)i + 1);
        CHECK(r.seq[i] < r.stored_then[i]); /* durably reserved before it went out */
    }
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.seq_stored == 13 && st.seq_stores == 3 && st.last_seq == 10);
    sluice_close(c);
    fake_stop(s);

    /* the default block is 64 seqs: three batches, one write */
    flash_init(&f);
    recorder_init(&r, &f, 10);
    s = fake_start(recording, &r, 1);
    cfg = config(s->endpoint, &f);
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 30, 1700000000000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(f.stores == 1 && f.log[0] == 65 && r.n == 3);
    sluice_close(c);
    fake_stop(s);
}

static void a_reboot_resumes_above_every_seq_the_previous_run_used(void) {
    flash f;
    flash_init(&f);
    recorder r;
    recorder_init(&r, &f, 10);
    fake_server *s = fake_start(recording, &r, 3);
    sluice_config cfg = config(s->endpoint, &f);
    cfg.seq_reserve = 4;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 30, 1700000000000000); /* seqs 1, 2, 3; stored 5 */
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    sluice_close(c); /* power cut: nothing is written at close */
    CHECK(f.stored == 5 && f.stores == 1);

    /* Reboot. The server's Welcome says committed_seq 0 (as when the last batches are still in its
       pipeline): without the stored value the device would start at 1 again. */
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 30, 1700000100000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(r.n == 6);
    CHECK(r.seq[3] == 5 && r.seq[4] == 6 && r.seq[5] == 7); /* 4 was reserved, maybe used: skipped */
    for (int i = 3; i < r.n; i++) CHECK(r.conn[i] == 1 && r.seq[i] < r.stored_then[i]);
    CHECK(f.stores == 2 && f.log[1] == 9);
    sluice_close(c);

    /* first_seq above the stored value wins (e.g. a device that also knows a higher seq) */
    cfg.first_seq = 100;
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 5, 1700000200000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(r.n == 7 && r.seq[6] == 100 && f.stored == 104);
    sluice_close(c);
    fake_stop(s);
}

static void a_failing_store_sends_nothing_and_names_the_problem(void) {
    flash f;
    flash_init(&f);
    f.fail_stores = 1;
    recorder r;
    recorder_init(&r, &f, 10);
    fake_server *s = fake_start(recording, &r, 1);
    sluice_config cfg = config(s->endpoint, &f);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 25, 1700000000000000);
    double t = check_seconds();
    CHECK_RC(c, sluice_send(c), SLUICE_ERR_PERSIST);
    CHECK(check_seconds() - t < 1.0); /* reported at once, not after io_timeout_ms */
    CHECK(strstr(sluice_errstr(c), "seq_store failed (returned -5)") != NULL);
    CHECK(strstr(sluice_errstr(c), "batch 1 was not sent") != NULL);
    CHECK(strcmp(sluice_strerror(SLUICE_ERR_PERSIST), "SLUICE_ERR_PERSIST") == 0);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.readings_queued == 25 && st.batches_unacked == 0 && st.last_seq == 0);
    /* The handle stays usable and does not hammer the storage: one retry per SL_SEQ_RETRY_MS (1 s). */
    int calls = f.store_calls;
    int persist_errors = 0;
    for (int i = 0; i < 30; i++) {
        int rc = sluice_poll(c, 50);
        if (rc == SLUICE_ERR_PERSIST) persist_errors++;
        else CHECK_RC(c, rc, SLUICE_OK);
    }
    CHECK(f.store_calls - calls <= 2 && persist_errors == f.store_calls - calls);
    CHECK(sluice_get_state(c) == SLUICE_STATE_READY);
    pthread_mutex_lock(&r.mu);
    CHECK(r.n == 0);
    pthread_mutex_unlock(&r.mu);
    /* storage back: the queued readings go out with seq 1, nothing lost */
    f.fail_stores = 0;
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(r.readings == 25 && r.n == 3 && r.seq[0] == 1 && f.stored == 65);
    sluice_close(c);
    fake_stop(s);
}

static void a_failing_load_refuses_to_start_and_hooks_come_in_pairs(void) {
    flash f;
    flash_init(&f);
    f.load_rc = -7;
    sluice_config cfg = config("127.0.0.1:7878", &f);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_ERR_PERSIST);
    CHECK(strstr(sluice_errstr(c), "seq_load failed (returned -7)") != NULL);
    CHECK(sluice_get_state(c) == SLUICE_STATE_FAILED);
    CHECK_RC(c, sluice_connect(c), SLUICE_ERR_PERSIST);
    sluice_close(c);

    f.load_rc = 0;
    f.has = 1;
    f.stored = 0;
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_ERR_PERSIST);
    CHECK(strstr(sluice_errstr(c), "seqs start at 1") != NULL);
    sluice_close(c);

    cfg.seq_store = NULL;
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_ERR_INVALID);
    CHECK(strstr(sluice_errstr(c), "go together") != NULL);
    sluice_close(c);

    cfg = config("127.0.0.1:7878", NULL);
    sluice_config_seq_file(&cfg, "");
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_ERR_INVALID);
    CHECK(strstr(sluice_errstr(c), "path") != NULL);
    sluice_close(c);

    cfg = config("127.0.0.1:7878", &f);
    cfg.seq_reserve = (1u << 20) + 1;
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_ERR_INVALID);
    CHECK(strstr(sluice_errstr(c), "seq_reserve") != NULL);
    sluice_close(c);
}

static char dir[64];

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
}

static void read_file(const char *path, char *out, size_t len) {
    out[0] = '\0';
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    ssize_t n = read(fd, out, len - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
}

static void the_file_hooks_round_trip_atomically_and_refuse_to_guess(void) {
    char path[128], tmp[140], text[64];
    snprintf(path, sizeof path, "%s/seq", dir);
    snprintf(tmp, sizeof tmp, "%s/seq.tmp", dir);
    uint64_t v = 0;
    CHECK(sluice_seq_file_load(path, &v) == 1); /* first boot: nothing stored */
    CHECK(sluice_seq_file_store(path, 12345) == 0);
    read_file(path, text, sizeof text);
    CHECK(strcmp(text, "12345\n") == 0);
    CHECK(access(tmp, F_OK) != 0); /* renamed over, not left behind */
    CHECK(sluice_seq_file_load(path, &v) == 0 && v == 12345);
    CHECK(sluice_seq_file_store(path, UINT64_MAX) == 0);
    CHECK(sluice_seq_file_load(path, &v) == 0 && v == UINT64_MAX);
    write_file(path, "77");
    CHECK(sluice_seq_file_load(path, &v) == 0 && v == 77); /* the newline is optional */

    const char *bad[] = {"", "\n", "0\n", "12x\n", "-3\n", " 5\n", "5\n\n", "18446744073709551616\n",
                         "123456789012345678901234567890123456789\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i]);
        v = 42;
        int rc = sluice_seq_file_load(path, &v);
        CHECK(rc == -EINVAL && v == 42);
        if (rc != -EINVAL) fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
    }
    char missing[140];
    snprintf(missing, sizeof missing, "%s/no-such-dir/seq", dir);
    CHECK(sluice_seq_file_store(missing, 5) == -ENOENT);
    static char long_path[4100];
    memset(long_path, 'a', sizeof long_path - 1);
    CHECK(sluice_seq_file_store(long_path, 5) == -ENAMETOOLONG);
    CHECK(sluice_seq_file_store(path, 0) == -EINVAL);

    /* A client on a corrupt file refuses to start, naming the file and the problem. */
    write_file(path, "12x\n");
    sluice_config cfg = config("127.0.0.1:7878", NULL);
    sluice_config_seq_file(&cfg, path);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_ERR_PERSIST);
    CHECK(strstr(sluice_errstr(c), path) != NULL && strstr(sluice_errstr(c), "does not hold a seq") != NULL);
    sluice_close(c);

    /* A store that cannot write names the path and errno's reason. */
    recorder r;
    recorder_init(&r, NULL, 10);
    fake_server *s = fake_start(recording, &r, 1);
    cfg = config(s->endpoint, NULL);
    sluice_config_seq_file(&cfg, missing);
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK); /* missing file: first boot */
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 5, 1700000000000000);
    CHECK_RC(c, sluice_send(c), SLUICE_ERR_PERSIST);
    CHECK(strstr(sluice_errstr(c), missing) != NULL && strstr(sluice_errstr(c), "No such file") != NULL);
    CHECK(r.n == 0);
    sluice_close(c);
    fake_stop(s);

    /* And the whole path: a client on a good file sends, "reboots", and resumes above what it used. */
    unlink(path);
    recorder_init(&r, NULL, 10);
    s = fake_start(recording, &r, 2);
    cfg = config(s->endpoint, NULL);
    sluice_config_seq_file(&cfg, path);
    cfg.seq_reserve = 8;
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 100, 1700000000000000); /* seqs 1..10 */
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    read_file(path, text, sizeof text);
    CHECK(strcmp(text, "17\n") == 0); /* 1 -> 9, 9 -> 17 */
    sluice_close(c);
    c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    append_n(c, 10, 1700000100000000);
    CHECK_RC(c, sluice_flush(c, 5000), SLUICE_OK);
    CHECK(r.n == 11 && r.seq[10] == 17);
    read_file(path, text, sizeof text);
    CHECK(strcmp(text, "25\n") == 0);
    sluice_close(c);
    fake_stop(s);
    unlink(path);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/libsluice-seq-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(seqs_are_reserved_in_blocks_before_a_batch_carries_them);
    RUN(a_reboot_resumes_above_every_seq_the_previous_run_used);
    RUN(a_failing_store_sends_nothing_and_names_the_problem);
    RUN(a_failing_load_refuses_to_start_and_hooks_come_in_pairs);
    RUN(the_file_hooks_round_trip_atomically_and_refuse_to_guess);
    rmdir(dir);
    CHECK_DONE();
}
