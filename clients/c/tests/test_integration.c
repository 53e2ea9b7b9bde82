/* libsluice against the real sluiced and PostgreSQL: 100k readings acked and counted; credit wait while
   PostgreSQL is held back by a lock; sluiced killed (SIGKILL) and restarted mid-stream, every reading
   present exactly once afterwards; a device "rebooted" with batches still in the server's pipeline resumes
   its seq from its seq file, and no reading is dropped as a duplicate (a control without the file is).
   Needs SLUICED (path of a built sluiced) and SLUICE_TEST_DATABASE_URL (tools/test sets it); the Makefile
   runs this only when both are there and says so when it does not. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "sluice.h"
#ifdef SLUICE_TLS_MBEDTLS
#include "sluice_tls.h"
#endif

static const char *sluiced_path;
static char admin_url[512];  /* the test cluster's `postgres` database */
static char db_url[512];     /* our fresh database */
static char db_name[64];
static char psql_path[512];
static char work_dir[128];
static pid_t daemon_pid = -1;
static int daemon_port;
static int daemon_starts;
static const char *daemon_tls_cert, *daemon_tls_key; /* set: sluiced serves TLS */

static int64_t now_us(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* Runs psql with one SQL command on `url`; the first output line goes to `out`. Returns the exit status. */
static int psql(const char *url, char *out, size_t outlen, const char *fmt, ...) {
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    int pipefd[2];
    if (pipe(pipefd) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        execl(psql_path, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char buf[4096];
    size_t n = 0;
    ssize_t r;
    while ((r = read(pipefd[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
    close(pipefd[0]);
    buf[n] = '\0';
    int status;
    waitpid(pid, &status, 0);
    if (out) {
        char *nl = strchr(buf, '\n');
        if (nl) *nl = '\0';
        size_t m = strlen(buf) < outlen - 1 ? strlen(buf) : outlen - 1;
        memcpy(out, buf, m);
        out[m] = '\0';
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static long long count_rows(const char *where) {
    char out[64] = "";
    if (psql(db_url, out, sizeof out, "SELECT count(*) FROM readings %s", where) != 0) return -1;
    return atoll(out);
}

static void daemon_log_tail(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "tail -n 30 %s/sluiced.log >&2", work_dir);
    if (system(cmd) != 0) fprintf(stderr, "(no sluiced log)\n");
}

/* Starts sluiced (on `port`, 0 = any) and waits for its "listening on" line. */
static int start_daemon(int port) {
    char log[200], listen[64], state[200];
    snprintf(log, sizeof log, "%s/sluiced.log", work_dir);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(state, sizeof state, "%s/state", work_dir);
    long start_offset = 0;
    FILE *lf = fopen(log, "a");
    if (lf) {
        start_offset = ftell(lf);
        fclose(lf);
    }
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        if (daemon_tls_cert != NULL) {
            execl(sluiced_path, "sluiced", "--listen", listen, "--database-url", db_url, "--http", "127.0.0.1:0",
                  "--state-dir", state, "--tls-cert", daemon_tls_cert, "--tls-key", daemon_tls_key, (char *)NULL);
        }
        execl(sluiced_path, "sluiced", "--listen", listen, "--database-url", db_url, "--http", "127.0.0.1:0",
              "--state-dir", state, (char *)NULL);
        _exit(127);
    }
    daemon_pid = pid;
    daemon_starts++;
    for (int i = 0; i < 600; i++) { /* up to 60 s */
        FILE *f = fopen(log, "r");
        if (f) {
            fseek(f, start_offset, SEEK_SET);
            char line[512];
            while (fgets(line, sizeof line, f)) {
                char *p = strstr(line, "sluiced: listening on ");
                if (p) {
                    char *colon = strrchr(p, ':');
                    daemon_port = atoi(colon + 1);
                    fclose(f);
                    return 0;
                }
            }
            fclose(f);
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "  sluiced exited before listening:\n");
            daemon_log_tail();
            daemon_pid = -1;
            return -1;
        }
        usleep(100000);
    }
    fprintf(stderr, "  sluiced did not print its listening line within 60 s\n");
    daemon_log_tail();
    return -1;
}

static void stop_daemon(int sig) {
    if (daemon_pid <= 0) return;
    kill(daemon_pid, sig);
    for (int i = 0; i < 300; i++) {
        if (waitpid(daemon_pid, NULL, WNOHANG) == daemon_pid) {
            daemon_pid = -1;
            return;
        }
        usleep(100000);
    }
    kill(daemon_pid, SIGKILL);
    waitpid(daemon_pid, NULL, 0);
    daemon_pid = -1;
}

/* Like sluice_flush, but with a progress line every 5 s when SLUICE_IT_VERBOSE is set. */
static int flush_verbose(sluice_client *c, int timeout_ms) {
    if (getenv("SLUICE_IT_VERBOSE") == NULL) return sluice_flush(c, timeout_ms);
    double t0 = check_seconds();
    for (;;) {
        int rc = sluice_flush(c, 5000);
        sluice_stats st;
        sluice_get_stats(c, &st);
        fprintf(stderr, "    %.1fs: %s state %d unacked %llu queued %llu credit %llu acked %llu conn %llu [%s]\n",
                check_seconds() - t0, sluice_strerror(rc), (int)sluice_get_state(c),
                (unsigned long long)st.readings_unacked, (unsigned long long)st.readings_queued,
                (unsigned long long)st.credit, (unsigned long long)st.batches_acked, (unsigned long long)st.connects,
                sluice_errstr(c));
        if (rc != SLUICE_ERR_TIMEOUT || (check_seconds() - t0) * 1000 > timeout_ms) return rc;
    }
}

static int64_t run_stamp; /* with the pid and an id byte: producer ids unique to this run */

static void producer_id(uint8_t out[16], uint8_t id_byte) {
    memset(out, 0, 16);
    memcpy(out, &run_stamp, sizeof run_stamp);
    pid_t p = getpid();
    memcpy(out + 8, &p, sizeof p);
    out[15] = id_byte;
}

/* The settings every client of these tests shares: the daemon under test, its own producer id, quick
   reconnects. `ep` must outlive the client's creation. */
static sluice_config daemon_config(char ep[64], uint8_t id_byte) {
    snprintf(ep, 64, "127.0.0.1:%d", daemon_port);
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = ep;
    producer_id(cfg.producer_id, id_byte);
    cfg.reconnect_min_ms = 50;
    cfg.reconnect_max_ms = 500;
    return cfg;
}

static sluice_client *new_client(uint8_t id_byte, size_t memory) {
    char ep[64];
    sluice_config cfg = daemon_config(ep, id_byte);
    cfg.memory_limit = memory;
    cfg.io_timeout_ms = 1000; /* a blocking send gives up after 1 s when the daemon is down or out of credit */
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    return c;
}

/* Appends `n` readings of device `dev`, one per millisecond from t0, sending as memory requires. */
static int feed(sluice_client *c, const char *dev, int64_t t0, int n) {
    for (int i = 0; i < n; i++) {
        double v = 20.0 + (double)((i * 7) % 1000) / 100.0;
        int rc = sluice_append(c, dev, "temp_c", t0 + (int64_t)i * 1000, v, 0);
        if (rc == SLUICE_ERR_FULL) {
            rc = sluice_send(c);
            if (rc != SLUICE_OK && rc != SLUICE_ERR_TIMEOUT && rc != SLUICE_ERR_IO && rc != SLUICE_ERR_CONNECT) return rc;
            sluice_poll(c, 10);
            i--;
            continue;
        }
        if (rc != SLUICE_OK) return rc;
    }
    return SLUICE_OK;
}

static void a_hundred_thousand_readings_are_acked_and_stored(void) {
    sluice_client *c = new_client(1, 64u << 20);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    int64_t t0 = now_us() - 3600ll * 1000000;
    char dev[32];
    for (int d = 0; d < 10; d++) {
        snprintf(dev, sizeof dev, "it-bulk-%d", d);
        CHECK_RC(c, feed(c, dev, t0, 10000), SLUICE_OK);
    }
    CHECK_RC(c, sluice_flush(c, 120000), SLUICE_OK);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.readings_accepted == 100000 && st.readings_rejected == 0);
    fprintf(stderr, "  %llu batches, %llu wire bytes (%.2f bytes/reading)\n", (unsigned long long)st.batches_acked,
            (unsigned long long)st.wire_bytes, (double)st.wire_bytes / 100000.0);
    CHECK(count_rows("WHERE device_id LIKE 'it-bulk-%'") == 100000);
    sluice_close(c);
}

/* A psql session holding an exclusive lock on readings: no COPY can commit until it is released. */
typedef struct table_lock {
    pid_t psql;
    int to_psql;
} table_lock;

static table_lock lock_readings(void) {
    table_lock l = {-1, -1};
    int to_psql[2];
    if (pipe(to_psql) != 0) return l;
    pid_t locker = fork();
    if (locker == 0) {
        dup2(to_psql[0], 0);
        close(to_psql[0]);
        close(to_psql[1]);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        execl(psql_path, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db_url, (char *)NULL);
        _exit(127);
    }
    close(to_psql[0]);
    l.psql = locker;
    l.to_psql = to_psql[1];
    const char *lock = "BEGIN; LOCK TABLE readings IN ACCESS EXCLUSIVE MODE;\n";
    CHECK(write(l.to_psql, lock, strlen(lock)) == (ssize_t)strlen(lock));
    char out[64] = "";
    for (int i = 0; i < 100; i++) {
        psql(db_url, out, sizeof out,
             "SELECT count(*) FROM pg_locks WHERE relation = 'readings'::regclass AND mode = 'AccessExclusiveLock' "
             "AND granted");
        if (atoi(out) == 1) break;
        usleep(100000);
    }
    CHECK(atoi(out) == 1);
    return l;
}

static void unlock_readings(table_lock l) {
    if (l.psql <= 0) return;
    const char *commit = "COMMIT;\n";
    CHECK(write(l.to_psql, commit, strlen(commit)) == (ssize_t)strlen(commit));
    close(l.to_psql);
    waitpid(l.psql, NULL, 0);
}

static void sending_waits_on_credit_while_postgres_is_held_back(void) {
    /* No COPY can commit, so the server's queue fills and it stops granting credit. */
    table_lock lock = lock_readings();

    sluice_client *c = new_client(2, 256u << 20);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    int64_t t0 = now_us() - 1800ll * 1000000;
    long long sent = 0;
    int stalled = 0;
    char dev[32];
    sluice_stats st;
    /* Keep offering readings until the server stops granting credit. */
    for (int round = 0; round < 400 && !stalled; round++) {
        snprintf(dev, sizeof dev, "it-credit-%d", round);
        if (feed(c, dev, t0, 10000) != SLUICE_OK) break;
        sent += 10000;
        sluice_send(c);
        for (int i = 0; i < 5; i++) sluice_poll(c, 20);
        sluice_get_stats(c, &st);
        stalled = st.credit == 0 && st.readings_queued > 0;
    }
    CHECK(stalled);
    sluice_get_stats(c, &st);
    unsigned long long acked_before = st.batches_acked;
    fprintf(stderr, "  credit ran out after %lld readings offered (%llu unacked, %llu queued, %llu acked batches)\n",
            sent, (unsigned long long)st.readings_unacked, (unsigned long long)st.readings_queued, acked_before);
    /* While PostgreSQL is held back: no acks, no credit, no errors; the client simply waits. */
    for (int i = 0; i < 20; i++) CHECK_RC(c, sluice_poll(c, 50), SLUICE_OK);
    sluice_get_stats(c, &st);
    CHECK(st.credit == 0 && st.readings_queued > 0 && st.credit_stalls >= 1);
    CHECK(sluice_get_state(c) == SLUICE_STATE_READY);

    unlock_readings(lock);
    CHECK_RC(c, flush_verbose(c, 180000), SLUICE_OK);
    sluice_get_stats(c, &st);
    CHECK(st.readings_accepted == (unsigned long long)sent);
    CHECK(count_rows("WHERE device_id LIKE 'it-credit-%'") == sent);
    sluice_close(c);
}

static void a_killed_daemon_is_survived_with_every_reading_stored_exactly_once(void) {
    sluice_client *c = new_client(3, 64u << 20);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    int64_t t0 = now_us() - 900ll * 1000000;
    long long total = 0;
    char dev[32];
    for (int round = 0; round < 30; round++) {
        snprintf(dev, sizeof dev, "it-kill-%d", round);
        CHECK_RC(c, feed(c, dev, t0, 5000), SLUICE_OK);
        total += 5000;
        /* SIGSTOP first, so the batch about to go out is surely in flight when the daemon dies */
        if (round == 10) kill(daemon_pid, SIGSTOP);
        int rc = sluice_send(c);
        if (round < 10 || round >= 20) CHECK(rc == SLUICE_OK || rc == SLUICE_ERR_IO || rc == SLUICE_ERR_TIMEOUT);
        if (round == 10) {
            /* right after a batch went out: it is unacked here, maybe committed there */
            sluice_stats st;
            sluice_get_stats(c, &st);
            fprintf(stderr, "  SIGKILL sluiced with %llu readings unacked\n", (unsigned long long)st.readings_unacked);
            stop_daemon(SIGKILL);
        }
        sluice_poll(c, 10);
        if (round == 20) {
            /* readings kept buffering while the daemon was down */
            CHECK(start_daemon(daemon_port) == 0);
        }
    }
    CHECK_RC(c, flush_verbose(c, 180000), SLUICE_OK);
    sluice_stats st;
    sluice_get_stats(c, &st);
    fprintf(stderr, "  %llu sessions, %llu batches resent, %llu duplicates\n", (unsigned long long)st.connects,
            (unsigned long long)st.resent_batches, (unsigned long long)st.batches_duplicate);
    CHECK(st.connects >= 2);
    CHECK(count_rows("WHERE device_id LIKE 'it-kill-%'") == total);
    char out[64] = "";
    psql(db_url, out, sizeof out,
         "SELECT count(*) FROM (SELECT 1 FROM readings WHERE device_id LIKE 'it-kill-%%' "
         "GROUP BY device_id, metric, time HAVING count(*) > 1) d");
    CHECK(strcmp(out, "0") == 0);
    sluice_close(c);
}

/* A device whose batches are still in the server's pipeline when it reboots (held there by a lock on
   readings, so Welcome.committed_seq cannot cover them yet). */
static sluice_client *device(uint8_t id_byte, const char *seq_path) {
    char ep[64];
    sluice_config cfg = daemon_config(ep, id_byte);
    cfg.max_batch_readings = 1000;
    cfg.io_timeout_ms = 5000;
    if (seq_path != NULL) sluice_config_seq_file(&cfg, seq_path);
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    return c;
}

static long long duplicated_rows(const char *like) {
    char out[64] = "";
    if (psql(db_url, out, sizeof out,
             "SELECT count(*) FROM (SELECT 1 FROM readings WHERE device_id LIKE '%s' "
             "GROUP BY device_id, metric, time HAVING count(*) > 1) d",
             like) != 0)
        return -1;
    return atoll(out);
}

static void a_rebooted_device_resumes_its_seq_from_the_file_and_no_reading_is_dropped(void) {
    char path[200];
    snprintf(path, sizeof path, "%s/device.seq", work_dir);
    int64_t t0 = now_us() - 600ll * 1000000;
    table_lock lock = lock_readings();
    /* Life 1 of the device (seq file) and of a control producer without one: 3 batches each, sent while
       PostgreSQL is held back, so they sit uncommitted in the server. */
    sluice_client *d = device(4, path);
    sluice_client *x = device(5, NULL);
    CHECK_RC(d, feed(d, "it-reboot-a", t0, 3000), SLUICE_OK);
    CHECK_RC(x, feed(x, "it-noseq-a", t0, 3000), SLUICE_OK);
    CHECK_RC(d, sluice_send(d), SLUICE_OK);
    CHECK_RC(x, sluice_send(x), SLUICE_OK);
    char out[64] = "";
    for (int i = 0; i < 100; i++) { /* a writer's COPY is waiting for the lock */
        psql(db_url, out, sizeof out,
             "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = "
             "'Lock' AND query LIKE '%%COPY%%'");
        if (atoi(out) >= 1) break;
        usleep(100000);
    }
    CHECK(atoi(out) >= 1);
    for (int i = 0; i < 10; i++) { /* let every batch reach the writer pool */
        sluice_poll(d, 50);
        sluice_poll(x, 50);
    }
    sluice_stats st;
    sluice_get_stats(d, &st);
    CHECK(st.last_seq == 3 && st.seq_stored == 65 && st.batches_acked == 0);
    sluice_close(d); /* power cut: the unacked batches are gone from the device, not from the server */
    sluice_close(x);

    /* Life 2: Welcome says committed_seq 0 (nothing has committed), yet the device starts above seq 3. */
    d = device(4, path);
    x = device(5, NULL);
    CHECK_RC(d, feed(d, "it-reboot-b", t0, 3000), SLUICE_OK);
    CHECK_RC(x, feed(x, "it-noseq-b", t0, 3000), SLUICE_OK);
    CHECK_RC(d, sluice_send(d), SLUICE_OK);
    CHECK_RC(x, sluice_send(x), SLUICE_OK);
    unlock_readings(lock);
    CHECK_RC(d, flush_verbose(d, 120000), SLUICE_OK);
    CHECK_RC(x, flush_verbose(x, 120000), SLUICE_OK);
    sluice_get_stats(d, &st);
    fprintf(stderr, "  with the seq file: seqs %llu..%llu after the reboot, %llu duplicates\n",
            (unsigned long long)(st.last_seq - 2), (unsigned long long)st.last_seq,
            (unsigned long long)st.batches_duplicate);
    CHECK(st.last_seq == 67 && st.batches_duplicate == 0 && st.readings_accepted == 3000);
    sluice_stats sx;
    sluice_get_stats(x, &sx);
    fprintf(stderr, "  without it (control): seqs 1..%llu again, %llu of 3 batches dropped as duplicates\n",
            (unsigned long long)sx.last_seq, (unsigned long long)sx.batches_duplicate);
    CHECK(sx.batches_duplicate == 3); /* the hazard the seq file removes */
    sluice_close(d);
    sluice_close(x);

    /* Life 3, nothing held back: resumes at the stored mark again. */
    d = device(4, path);
    CHECK_RC(d, feed(d, "it-reboot-c", t0, 1000), SLUICE_OK);
    CHECK_RC(d, flush_verbose(d, 60000), SLUICE_OK);
    sluice_get_stats(d, &st);
    CHECK(st.last_seq == 129 && st.batches_duplicate == 0);
    sluice_close(d);

    CHECK(count_rows("WHERE device_id = 'it-reboot-a'") == 3000);
    CHECK(count_rows("WHERE device_id = 'it-reboot-b'") == 3000);
    CHECK(count_rows("WHERE device_id = 'it-reboot-c'") == 1000);
    CHECK(duplicated_rows("it-reboot-%") == 0);
    CHECK(count_rows("WHERE device_id = 'it-noseq-a'") == 3000);
    CHECK(count_rows("WHERE device_id = 'it-noseq-b'") == 0);
    uint8_t id[16];
    producer_id(id, 4);
    char uuid[40];
    snprintf(uuid, sizeof uuid, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", id[0], id[1],
             id[2], id[3], id[4], id[5], id[6], id[7], id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]);
    psql(db_url, out, sizeof out, "SELECT committed_seq FROM producers WHERE producer_id = '%s'", uuid);
    CHECK(strcmp(out, "129") == 0);
    unlink(path);
}

/* Issue 14: after a restart every client holds a batch bigger than the small first window the server gives
   when many connections are new; without CreditRequest such a batch never gets its credit. Here a
   10,000-reading batch stays unacked (PostgreSQL held back) while sluiced is killed; after the restart 16 idle
   clients take the whole slice of the budget for connections not seen busy, so this client's new session
   starts with 64 credit, and its resend needs a CreditRequest. */
static void a_big_resent_batch_gets_its_credit_through_a_credit_request(void) {
    int64_t t0 = now_us() - 300ll * 1000000;
    table_lock lock = lock_readings();
    sluice_client *c = new_client(6, 64u << 20);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    CHECK_RC(c, feed(c, "it-request", t0, 10000), SLUICE_OK);
    sluice_send(c);
    for (int i = 0; i < 25; i++) sluice_poll(c, 20);
    sluice_stats st;
    sluice_get_stats(c, &st);
    CHECK(st.batches_unacked == 1 && st.readings_unacked == 10000 && st.batches_acked == 0);
    stop_daemon(SIGKILL);
    unlock_readings(lock);
    CHECK(start_daemon(daemon_port) == 0);

    enum { IDLE = 16 };
    sluice_client *idle[IDLE];
    for (int i = 0; i < IDLE; i++) {
        idle[i] = new_client((uint8_t)(100 + i), 4u << 20);
        CHECK_RC(idle[i], sluice_connect(idle[i]), SLUICE_OK);
    }
    double t = check_seconds();
    CHECK_RC(c, flush_verbose(c, 20000), SLUICE_OK);
    double acked = check_seconds() - t;
    sluice_get_stats(c, &st);
    /* The first window of the new session, from the daemon's "session opened" line for this producer. */
    uint8_t id[16];
    producer_id(id, 6);
    char uuid[40];
    snprintf(uuid, sizeof uuid, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", id[0], id[1],
             id[2], id[3], id[4], id[5], id[6], id[7], id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]);
    char log[200], line[1024];
    snprintf(log, sizeof log, "%s/sluiced.log", work_dir);
    long long first_credit = -1;
    FILE *lf = fopen(log, "r");
    while (lf && fgets(line, sizeof line, lf)) {
        char *ic = strstr(line, "initial_credit=");
        if (strstr(line, "session opened") && strstr(line, uuid) && ic) first_credit = atoll(ic + strlen("initial_credit="));
    }
    if (lf) fclose(lf);
    fprintf(stderr, "  first credit of the new session %lld for a 10000-reading resend: acked %.2f s after reconnecting\n",
            first_credit, acked);
    CHECK(first_credit >= 0 && first_credit < 10000); /* the resend needed more than the first window */
    CHECK(st.readings_unacked == 0 && st.resent_batches == 1);
    CHECK(acked < 10.0);
    CHECK(count_rows("WHERE device_id = 'it-request'") == 10000);
    for (int i = 0; i < IDLE; i++) sluice_close(idle[i]);
    sluice_close(c);
}

/* Store-and-forward: a device process killed (SIGKILL) mid-stream, its batches sent but uncommitted (a lock
   holds PostgreSQL back) and then lost by the server too (sluiced killed before it could commit them). The
   restarted device loads them from its file store and resends them: every reading lands exactly once. A
   control device without a store loses them. */
static pid_t device_process(uint8_t id_byte, const char *store_path, const char *seq_path, const char *dev,
                            int64_t t0, int rounds, int report_fd) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    static sluice_store_file st;
    char ep[64];
    sluice_config cfg = daemon_config(ep, id_byte);
    cfg.max_batch_readings = 1000;
    cfg.io_timeout_ms = 5000;
    sluice_config_seq_file(&cfg, seq_path);
    if (store_path != NULL) {
        if (sluice_store_file_open(&st, store_path, 4u << 20, SLUICE_FSYNC_EVERY_BATCH) != 0) _exit(2);
        sluice_config_store_file(&cfg, &st);
    }
    sluice_client *c = sluice_create(&cfg);
    if (c == NULL || sluice_err(c) != SLUICE_OK || sluice_connect(c) != SLUICE_OK) _exit(3);
    for (int r = 0; r < rounds; r++) {
        if (feed(c, dev, t0 + (int64_t)r * 1000 * 1000, 1000) != SLUICE_OK) _exit(4);
        while (sluice_send(c) != SLUICE_OK) sluice_poll(c, 50);
        if (write(report_fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(5);
    }
    for (;;) sluice_poll(c, 1000); /* mid-stream: waiting for acks that cannot come, until SIGKILL */
}

static void a_killed_device_resends_its_kept_batches_and_every_reading_lands_once(void) {
    char store_path[200], seq_a[200], seq_b[200];
    snprintf(store_path, sizeof store_path, "%s/device.ring", work_dir);
    snprintf(seq_a, sizeof seq_a, "%s/saf-a.seq", work_dir);
    snprintf(seq_b, sizeof seq_b, "%s/saf-b.seq", work_dir);
    int64_t t0 = now_us() - 200ll * 1000000;
    table_lock lock = lock_readings();
    int reports[2];
    CHECK(pipe(reports) == 0);
    pid_t a = device_process(7, store_path, seq_a, "it-saf", t0, 3, reports[1]);
    pid_t b = device_process(8, NULL, seq_b, "it-nosaf", t0, 3, reports[1]);
    int got = 0, r;
    while (got < 6 && read(reports[0], &r, sizeof r) == (ssize_t)sizeof r) got++;
    CHECK(got == 6); /* both devices sealed, kept and wrote 3 batches */
    close(reports[0]);
    close(reports[1]);
    char out[64] = "";
    for (int i = 0; i < 100; i++) { /* a writer's COPY is waiting for the lock */
        psql(db_url, out, sizeof out,
             "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = "
             "'Lock' AND query LIKE '%%COPY%%'");
        if (atoi(out) >= 1) break;
        usleep(100000);
    }
    kill(a, SIGKILL); /* the devices crash mid-stream... */
    kill(b, SIGKILL);
    waitpid(a, NULL, 0);
    waitpid(b, NULL, 0);
    stop_daemon(SIGKILL); /* ...and the server loses the batches it had not committed */
    unlock_readings(lock);
    CHECK(start_daemon(daemon_port) == 0);
    CHECK(count_rows("WHERE device_id IN ('it-saf', 'it-nosaf')") == 0);

    /* The devices restart: A finds its 3 batches in its store, B has nothing. Each sends one more round. */
    static sluice_store_file st;
    CHECK(sluice_store_file_open(&st, store_path, 4u << 20, SLUICE_FSYNC_EVERY_BATCH) == 0);
    char ep[64];
    sluice_config cfg = daemon_config(ep, 7);
    cfg.max_batch_readings = 1000;
    sluice_config_seq_file(&cfg, seq_a);
    sluice_config_store_file(&cfg, &st);
    sluice_client *d = sluice_create(&cfg);
    CHECK_RC(d, sluice_err(d), SLUICE_OK);
    sluice_stats sd;
    sluice_get_stats(d, &sd);
    CHECK(sd.batches_restored == 3 && sd.readings_unacked == 3000);
    CHECK_RC(d, feed(d, "it-saf", t0 + 3ll * 1000 * 1000, 1000), SLUICE_OK);
    CHECK_RC(d, flush_verbose(d, 120000), SLUICE_OK);
    sluice_get_stats(d, &sd);
    fprintf(stderr, "  with the store: %llu kept batches loaded and resent, %llu readings acked\n",
            (unsigned long long)sd.batches_restored, (unsigned long long)sd.readings_accepted);
    sluice_close(d);
    sluice_store_file_close(&st);

    sluice_config cx = daemon_config(ep, 8);
    cx.max_batch_readings = 1000;
    sluice_config_seq_file(&cx, seq_b);
    sluice_client *x = sluice_create(&cx);
    CHECK_RC(x, sluice_err(x), SLUICE_OK);
    CHECK_RC(x, feed(x, "it-nosaf", t0 + 3ll * 1000 * 1000, 1000), SLUICE_OK);
    CHECK_RC(x, flush_verbose(x, 120000), SLUICE_OK);
    sluice_close(x);

    long long with = count_rows("WHERE device_id = 'it-saf'");
    long long without = count_rows("WHERE device_id = 'it-nosaf'");
    fprintf(stderr, "  readings stored: %lld of 4000 with the store, %lld of 4000 without (control)\n", with, without);
    CHECK(with == 4000);
    CHECK(duplicated_rows("it-saf") == 0);
    CHECK(without == 1000); /* the hazard the store removes */
    unlink(store_path);
    unlink(seq_a);
    unlink(seq_b);
}

#ifdef SLUICE_TLS_MBEDTLS
/* TLS with mbedTLS against sluiced --tls-cert/--tls-key, with a throwaway CA: the right CA and name stream
   every reading exactly once (sluiced killed and restarted mid-stream included); a wrong CA or a wrong name
   fails with a clear error. */
static int sh(const char *fmt, ...) {
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static sluice_client *tls_client(sluice_tls *tls, uint8_t id_byte, char ep[64]) {
    sluice_config cfg = daemon_config(ep, id_byte);
    snprintf(ep, 64, "localhost:%d", daemon_port); /* the name in the server's certificate */
    cfg.transport = sluice_tls_transport(tls);
    cfg.io_timeout_ms = 1000;
    cfg.memory_limit = 64u << 20;
    sluice_client *c = sluice_create(&cfg);
    CHECK_RC(c, sluice_err(c), SLUICE_OK);
    return c;
}

static void tls_streams_every_reading_once_and_refuses_a_wrong_ca_or_name(void) {
    char d[200], ca[256], ca2[256], cert[256], key[256];
    snprintf(d, sizeof d, "%s/tls", work_dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", d);
    snprintf(ca2, sizeof ca2, "%s/other-ca.pem", d);
    snprintf(cert, sizeof cert, "%s/server.pem", d);
    snprintf(key, sizeof key, "%s/server.key", d);
    int rc = sh("set -e; mkdir -p %s; cd %s; "
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key "
                "-out ca.pem -days 2 -subj /CN=sluice-test-ca 2>/dev/null; "
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other-ca.key "
                "-out other-ca.pem -days 2 -subj /CN=sluice-other-ca 2>/dev/null; "
                "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key "
                "-out server.csr -subj /CN=localhost 2>/dev/null; "
                "printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf; "
                "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem "
                "-days 2 -extfile ext.cnf 2>/dev/null",
                d, d);
    CHECK(rc == 0);
    if (rc != 0) return;
    stop_daemon(SIGTERM);
    daemon_tls_cert = cert;
    daemon_tls_key = key;
    CHECK(start_daemon(daemon_port) == 0);

    char err[200], ep[64];
    sluice_tls_config tc;
    memset(&tc, 0, sizeof tc);
    tc.ca_file = ca;
    sluice_tls *tls = sluice_tls_create(&tc, err, sizeof err);
    CHECK(tls != NULL);
    if (tls == NULL) {
        fprintf(stderr, "  %s\n", err);
        return;
    }

    /* streaming, with sluiced killed and restarted in the middle */
    sluice_client *c = tls_client(tls, 9, ep);
    CHECK_RC(c, sluice_connect(c), SLUICE_OK);
    int64_t t0 = now_us() - 100ll * 1000000;
    long long total = 0;
    char dev[32];
    for (int round = 0; round < 12; round++) {
        snprintf(dev, sizeof dev, "it-tls-%d", round);
        CHECK_RC(c, feed(c, dev, t0, 5000), SLUICE_OK);
        total += 5000;
        if (round == 4) kill(daemon_pid, SIGSTOP);
        int r = sluice_send(c);
        if (round < 4) CHECK_RC(c, r, SLUICE_OK);
        if (round == 4) stop_daemon(SIGKILL);
        sluice_poll(c, 10);
        if (round == 7) CHECK(start_daemon(daemon_port) == 0);
    }
    CHECK_RC(c, flush_verbose(c, 120000), SLUICE_OK);
    sluice_stats st;
    sluice_get_stats(c, &st);
    fprintf(stderr, "  over TLS: %llu readings acked in %llu sessions (%llu batches resent)\n",
            (unsigned long long)st.readings_accepted, (unsigned long long)st.connects,
            (unsigned long long)st.resent_batches);
    CHECK(st.connects >= 2);
    CHECK(count_rows("WHERE device_id LIKE 'it-tls-%'") == total);
    CHECK(duplicated_rows("it-tls-%") == 0);
    sluice_close(c);

    /* a name the certificate does not carry */
    tc.server_name = "wrong.example";
    sluice_tls *wrong_name = sluice_tls_create(&tc, err, sizeof err);
    c = tls_client(wrong_name, 10, ep);
    CHECK_RC(c, sluice_connect(c), SLUICE_ERR_CONNECT);
    fprintf(stderr, "  wrong name: %s\n", sluice_errstr(c));
    CHECK(strstr(sluice_errstr(c), "does not verify") != NULL && strstr(sluice_errstr(c), "CN") != NULL);
    sluice_close(c);
    sluice_tls_free(wrong_name);

    /* a CA that did not sign the server's certificate */
    tc.server_name = NULL;
    tc.ca_file = ca2;
    sluice_tls *wrong_ca = sluice_tls_create(&tc, err, sizeof err);
    c = tls_client(wrong_ca, 11, ep);
    CHECK_RC(c, sluice_connect(c), SLUICE_ERR_CONNECT);
    fprintf(stderr, "  wrong CA: %s\n", sluice_errstr(c));
    CHECK(strstr(sluice_errstr(c), "not correctly signed by the trusted CA") != NULL);
    sluice_close(c);
    sluice_tls_free(wrong_ca);

    /* no CA at all is refused up front */
    tc.ca_file = NULL;
    CHECK(sluice_tls_create(&tc, err, sizeof err) == NULL && strstr(err, "ca_pem or ca_file") != NULL);
    tc.ca_file = "/nonexistent/ca.pem";
    CHECK(sluice_tls_create(&tc, err, sizeof err) == NULL && strstr(err, "/nonexistent/ca.pem") != NULL);
    sluice_tls_free(tls);
}
#endif

int main(void) {
    sluiced_path = getenv("SLUICED");
    const char *url = getenv("SLUICE_TEST_DATABASE_URL");
    if (sluiced_path == NULL || access(sluiced_path, X_OK) != 0 || url == NULL || url[0] == '\0') {
        fprintf(stderr, "test_integration: needs SLUICED and SLUICE_TEST_DATABASE_URL\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *bindir = getenv("SLUICE_TEST_PG_BINDIR");
    snprintf(psql_path, sizeof psql_path, "%s/psql", bindir ? bindir : "/usr/bin");
    if (access(psql_path, X_OK) != 0) snprintf(psql_path, sizeof psql_path, "/usr/bin/psql");
    run_stamp = now_us();
    snprintf(admin_url, sizeof admin_url, "%s", url);
    snprintf(db_name, sizeof db_name, "libsluice_it_%d_%lld", (int)getpid(), (long long)(now_us() / 1000000));
    /* same URL, our database name instead of the path's */
    char *q = strchr(admin_url, '?');
    char *slash = strrchr(admin_url, '/');
    char *host_start = strstr(admin_url, "://");
    if (slash == NULL || host_start == NULL || slash < host_start + 3) {
        fprintf(stderr, "test_integration: cannot parse SLUICE_TEST_DATABASE_URL %s\n", url);
        return 1;
    }
    snprintf(db_url, sizeof db_url, "%.*s/%s%s", (int)(slash - admin_url), admin_url, db_name, q ? q : "");
    double t = check_seconds();
    if (psql(admin_url, NULL, 0, "CREATE DATABASE %s", db_name) != 0) {
        fprintf(stderr, "test_integration: CREATE DATABASE %s failed\n", db_name);
        return 1;
    }
    snprintf(work_dir, sizeof work_dir, "/tmp/libsluice-it-%d", (int)getpid());
    mkdir(work_dir, 0755);
    if (start_daemon(0) == 0) {
        fprintf(stderr, "  sluiced listening on 127.0.0.1:%d, database %s (%.1f s)\n", daemon_port, db_name,
                check_seconds() - t);
        RUN(a_hundred_thousand_readings_are_acked_and_stored);
        RUN(sending_waits_on_credit_while_postgres_is_held_back);
        RUN(a_killed_daemon_is_survived_with_every_reading_stored_exactly_once);
        RUN(a_rebooted_device_resumes_its_seq_from_the_file_and_no_reading_is_dropped);
        RUN(a_big_resent_batch_gets_its_credit_through_a_credit_request);
        RUN(a_killed_device_resends_its_kept_batches_and_every_reading_lands_once);
#ifdef SLUICE_TLS_MBEDTLS
        RUN(tls_streams_every_reading_once_and_refuses_a_wrong_ca_or_name); /* last: sluiced serves TLS after it */
#endif
    } else {
        check_failures++;
    }
    if (check_failures) daemon_log_tail();
    stop_daemon(SIGTERM);
    psql(admin_url, NULL, 0, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", work_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", work_dir);
    CHECK_DONE();
}
