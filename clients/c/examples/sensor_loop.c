/* A minimal sensor loop: read a (fake) temperature sensor once a second and send it to sluiced.
 *
 *   make example && ./build/sensor_loop 127.0.0.1:7878 [seconds] [seq-file]
 *
 * Shows the error handling a device needs: a refused config is fatal; a lost server is not (libsluice
 * buffers and reconnects, we just log); a full buffer means the server has been away too long, so the
 * oldest policy here is "drop the new reading and count it" — pick what suits your device.
 *
 * The sequence number survives restarts through a seq file (default ./sensor_loop.seq): run it twice and
 * the second run continues above every seq the first one used, so the server never mistakes its batches
 * for duplicates of the first run's. A device without a file system gives its own seq_load/seq_store
 * hooks (e.g. a flash sector or RTC RAM) instead of sluice_config_seq_file().
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice.h"

static double read_fake_sensor(int tick) {
    /* 21 °C with a slow wave, at the sensor's 0.01 °C resolution: encoded as scaled integers */
    return round((21.0 + 0.5 * sin(tick / 60.0)) * 100.0) / 100.0;
}

static int64_t unix_micros(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void log_ack(void *user, const sluice_ack *a) {
    (void)user;
    if (a->dropped) fprintf(stderr, "batch %llu refused by the server: %s\n", (unsigned long long)a->seq,
                            a->first_reject_message);
    else if (a->rejected) fprintf(stderr, "batch %llu: %u readings dead-lettered (%s)\n", (unsigned long long)a->seq,
                                  a->rejected, a->first_reject_message);
}

int main(int argc, char **argv) {
    const char *endpoint = argc > 1 ? argv[1] : "127.0.0.1:7878";
    int seconds = argc > 2 ? atoi(argv[2]) : 60;
    const char *seq_file = argc > 3 ? argv[3] : "sensor_loop.seq";

    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = endpoint;
    cfg.token = getenv("SLUICE_TOKEN");
    /* A real device derives this from its serial number and keeps it forever. */
    memcpy(cfg.producer_id, "sensor-loop-demo", 16);
    cfg.memory_limit = 4u << 20;
    cfg.max_batch_bytes = 64u << 10;
    cfg.on_ack = log_ack;
    /* One durable write per 64 batches (the default seq_reserve): cheap on flash, safe across reboots. */
    sluice_config_seq_file(&cfg, seq_file);
    /* Non-blocking: sluice_send never holds up the next reading; sluice_poll does the waiting. */
    cfg.nonblocking = 1;

    sluice_client *c = sluice_create(&cfg);
    if (c == NULL || sluice_err(c) != SLUICE_OK) {
        /* also SLUICE_ERR_PERSIST: the seq file is unreadable, and starting at a guess could lose data */
        fprintf(stderr, "sluice_create: %s\n", sluice_errstr(c));
        sluice_close(c);
        return 1;
    }
    if (sluice_connect(c) != SLUICE_OK) {
        /* not fatal: readings buffer and the handle keeps reconnecting */
        fprintf(stderr, "not connected yet: %s\n", sluice_errstr(c));
    }

    long dropped = 0;
    int64_t next_tick = monotonic_ms();
    for (int tick = 0; tick < seconds; tick++) {
        int rc = sluice_append(c, "demo-boiler-1", "temp_c", unix_micros(), read_fake_sensor(tick), 0);
        if (rc == SLUICE_ERR_FULL) {
            dropped++;
        } else if (rc != SLUICE_OK) {
            fprintf(stderr, "append: %s\n", sluice_errstr(c));
            break;
        }
        rc = sluice_send(c);
        if (rc == SLUICE_ERR_AUTH || rc == SLUICE_ERR_UNSUPPORTED) {
            fprintf(stderr, "giving up: %s\n", sluice_errstr(c));
            break;
        }
        /* SLUICE_ERR_PERSIST: the seq file could not be written; the readings stay buffered and the store is
           retried (at most once a second) — a storage fault worth raising on a real device */
        if (rc != SLUICE_OK) fprintf(stderr, "send (will retry): %s\n", sluice_errstr(c));
        /* the rest of the second goes to acks, credit, heartbeats and reconnects */
        next_tick += 1000;
        for (int64_t now = monotonic_ms(); now < next_tick; now = monotonic_ms()) {
            rc = sluice_poll(c, (int)(next_tick - now));
            if (rc == SLUICE_ERR_AUTH || rc == SLUICE_ERR_UNSUPPORTED) break;
            if (rc != SLUICE_OK) fprintf(stderr, "connection (will retry): %s\n", sluice_errstr(c));
        }
    }

    int rc = sluice_flush(c, 10000);
    sluice_stats st;
    sluice_get_stats(c, &st);
    printf("sent %llu readings in %llu batches (%.2f bytes/reading on the wire), %ld dropped while full; last seq "
           "%llu (%s keeps the next run above it); flush: %s\n",
           (unsigned long long)st.readings_accepted, (unsigned long long)st.batches_acked,
           st.readings_accepted ? (double)st.wire_bytes / (double)st.readings_accepted : 0.0, dropped,
           (unsigned long long)st.last_seq, seq_file, rc == SLUICE_OK ? "all acknowledged" : sluice_errstr(c));
    sluice_close(c);
    return rc == SLUICE_OK ? 0 : 2;
}
