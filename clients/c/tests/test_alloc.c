/* Allocator hooks: every allocation goes through them (the library's, protobuf-c's and zstd's), nothing is
   left after close, the memory ceiling holds, and an allocator that fails at any point is survived. */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fake_server.h"
#include "sluice.h"

/* ---- Stray malloc detector: this executable's malloc interposes libc's, for libzstd and libprotobuf-c
   too. Calls made on the main thread while `watching` are counted. (Under valgrind, valgrind replaces
   malloc itself, so the check only bites in the native run that `make test` also does.) ---- */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
static pthread_t main_thread;
static volatile int watching;
static volatile long stray;

static void note(void) {
    if (watching && pthread_equal(pthread_self(), main_thread)) stray++;
}
void *malloc(size_t n) {
    note();
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
    note();
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    note();
    return __libc_realloc(p, n);
}
void free(void *p) {
    __libc_free(p);
}

/* ---- Counting allocator ------------------------------------------------------------------------------ */

typedef struct counter {
    size_t live, peak;
    long allocs, frees, calls;
    long fail_at; /* calls after this many fail; -1 never */
} counter;

static void *count_malloc(void *o, size_t n) {
    counter *k = o;
    k->calls++;
    if (k->fail_at >= 0 && k->calls > k->fail_at) return NULL;
    size_t *p = __libc_malloc(n + 16);
    if (p == NULL) return NULL;
    p[0] = n;
    k->live += n;
    if (k->live > k->peak) k->peak = k->live;
    k->allocs++;
    return (char *)p + 16;
}

static void count_free(void *o, void *ptr) {
    counter *k = o;
    if (ptr == NULL) return;
    size_t *p = (size_t *)((char *)ptr - 16);
    k->live -= p[0];
    k->frees++;
    __libc_free(p);
}

/* ---- An acking server whose acks are zstd-compressed (so the client's decompressor runs too) ---------- */

static void acking(fake_server *s, int fd, int conn) {
    (void)conn;
    if (fake_read_hello(fd, NULL) != 0) return;
    fake_welcome(fd, 5000, 0, 0, 0);
    while (!s->stop) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        Sluice__V1__ClientFrame *f = fake_read_frame(fd, 2000, NULL);
        if (f == NULL) return;
        if (f->kind_case == SLUICE__V1__CLIENT_FRAME__KIND_BATCH) {
            uint64_t n = fake_batch_readings(f->batch);
            Sluice__V1__Ack a = SLUICE__V1__ACK__INIT;
            a.seq = f->batch->seq;
            a.accepted = (uint32_t)n;
            Sluice__V1__ServerFrame sf = SLUICE__V1__SERVER_FRAME__INIT;
            sf.kind_case = SLUICE__V1__SERVER_FRAME__KIND_ACK;
            sf.ack = &a;
            fake_send(fd, &sf, 1);
            fake_credit(fd, n);
        }
        sluice__v1__client_frame__free_unpacked(f, NULL);
    }
}

static sluice_config config(const char *ep, sluice_allocator *a) {
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = ep;
    cfg.producer_id[15] = 3;
    cfg.allocator = a;
    cfg.connect_timeout_ms = 2000;
    cfg.reconnect_min_ms = 10;
    cfg.reconnect_max_ms = 50;
    return cfg;
}

/* Appends n readings over 3 series; returns the first non-OK status. */
static int feed(sluice_client *c, int n) {
    static const char *devs[] = {"dev-a", "dev-b", "dev-c"};
    for (int i = 0; i < n; i++) {
        int rc = sluice_append(c, devs[i % 3], "temp_c", 1700000000000000 + i * 1000000ll, 20 + (i % 50) * 0.01, i % 7 == 0);
        if (rc != SLUICE_OK) return rc;
    }
    return SLUICE_OK;
}

static void every_allocation_goes_through_the_hooks_and_none_is_left_after_close(void) {
    fake_server *s = fake_start(acking, NULL, 1);
    counter k = {0, 0, 0, 0, 0, -1};
    sluice_allocator a = {count_malloc, count_free, &k};
    sluice_config cfg = config(s->endpoint, &a);
    watching = 1;
    void *probe = malloc(1); /* is the detector live in this run? */
    int detector_live = stray == 1;
    stray = 0;
    watching = 0;
    free(probe);

    watching = 1;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    CHECK_RC(c, feed(c, 30000), SLUICE_OK);
    CHECK_RC(c, sluice_flush(c, 10000), SLUICE_OK);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.batches_compressed > 0);        /* zstd compression context was used */
    CHECK(st.readings_accepted == 30000);    /* compressed acks were decoded */
    CHECK(st.memory_used == k.live); /* the library counts exactly what the allocator handed out */
    sluice_close(c);
    watching = 0;
    CHECK(k.live == 0 && k.allocs == k.frees && k.allocs > 10);
    if (detector_live) {
        CHECK(stray == 0);
        fprintf(stderr, "  %ld allocations through the hooks, %ld malloc calls outside them\n", k.allocs, stray);
    } else {
        fprintf(stderr, "  malloc interposition inactive here (valgrind); the native run checks strays\n");
    }
    fake_stop(s);
}

static void the_ceiling_holds_offline_and_online(void) {
    counter k = {0, 0, 0, 0, 0, -1};
    sluice_allocator a = {count_malloc, count_free, &k};
    fake_server *s = fake_start(acking, NULL, 1);
    sluice_config cfg = config(s->endpoint, &a);
    cfg.memory_limit = 3u << 20;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    /* offline: readings fill their share, then FULL */
    int rc = feed(c, 10000000);
    CHECK_RC(c, rc, SLUICE_ERR_FULL);
    CHECK(k.peak <= cfg.memory_limit);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.memory_used <= st.memory_for_readings);
    /* online: encoding, compressing and decoding all happen within the same ceiling */
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    CHECK_RC(c, sluice_flush(c, 20000), SLUICE_OK);
    for (int round = 0; round < 3; round++) {
        while (feed(c, 1000) == SLUICE_OK) {
        }
        CHECK_RC(c, sluice_flush(c, 20000), SLUICE_OK);
    }
    sluice_get_stats(c, &st);
    CHECK(st.batches_compressed > 0);
    fprintf(stderr, "  peak %zu of %zu bytes (%zu for readings)\n", k.peak, cfg.memory_limit, st.memory_for_readings);
    CHECK(k.peak <= cfg.memory_limit);
    sluice_close(c);
    CHECK(k.live == 0);
    fake_stop(s);
}

static void an_allocator_failing_at_any_point_is_survived(void) {
    fake_server *s = fake_start(acking, NULL, 1000);
    int ok_runs = 0;
    int points = 0;
    for (long fail_at = 0; fail_at < 400; fail_at += fail_at < 60 ? 1 : 7) {
        points++;
        counter k = {0, 0, 0, 0, 0, fail_at};
        sluice_allocator a = {count_malloc, count_free, &k};
        sluice_config cfg = config(s->endpoint, &a);
        cfg.io_timeout_ms = 500;
        sluice_client *c = sluice_create(&cfg);
        if (c != NULL && sluice_err(c) == SLUICE_OK) {
            sluice_connect(c);
            int rc = feed(c, 3000);
            CHECK(rc == SLUICE_OK || rc == SLUICE_ERR_NOMEM);
            rc = sluice_flush(c, 300);
            if (rc == SLUICE_OK) ok_runs++;
        } else if (c != NULL) {
            CHECK(sluice_err(c) == SLUICE_ERR_NOMEM);
        }
        sluice_close(c);
        CHECK(k.live == 0 && k.allocs == k.frees);
    }
    fprintf(stderr, "  %d failure points, %d runs completed anyway\n", points, ok_runs);
    fake_stop(s);
}

static void seq_persistence_through_the_file_hooks_allocates_only_through_the_hooks(void) {
    char dir[] = "/tmp/libsluice-alloc-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        CHECK(0);
        return;
    }
    char path[64];
    snprintf(path, sizeof path, "%s/seq", dir);
    fake_server *s = fake_start(acking, NULL, 2);
    counter k = {0, 0, 0, 0, 0, -1};
    sluice_allocator a = {count_malloc, count_free, &k};
    sluice_config cfg = config(s->endpoint, &a);
    cfg.memory_limit = 3u << 20;
    cfg.max_batch_readings = 500;
    cfg.seq_reserve = 2; /* a store every other batch: many writes, renames and directory syncs */
    sluice_config_seq_file(&cfg, path);
    stray = 0;
    watching = 1;
    for (int boot = 0; boot < 2; boot++) {
        sluice_client *c = sluice_create(&cfg);
        CHECK_RC(c, sluice_err(c), SLUICE_OK);
        CHECK_RC(c, sluice_connect(c), SLUICE_OK);
        CHECK_RC(c, feed(c, 10000), SLUICE_OK);
        CHECK_RC(c, sluice_flush(c, 10000), SLUICE_OK);
        sluice_stats st;
        sluice_get_stats(c, &st);
        CHECK(st.seq_stores >= 10 && st.seq_stored > st.last_seq);
        CHECK(k.peak <= cfg.memory_limit);
        sluice_close(c);
    }
    watching = 0;
    CHECK(k.live == 0 && k.allocs == k.frees);
    CHECK(stray == 0);
    fake_stop(s);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    main_thread = pthread_self();
    RUN(every_allocation_goes_through_the_hooks_and_none_is_left_after_close);
    RUN(the_ceiling_holds_offline_and_online);
    RUN(an_allocator_failing_at_any_point_is_survived);
    RUN(seq_persistence_through_the_file_hooks_allocates_only_through_the_hooks);
    CHECK_DONE();
}
