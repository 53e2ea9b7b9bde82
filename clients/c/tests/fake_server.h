/* A scriptable sluice server on 127.0.0.1:0, run on a thread of the test process, for tests that need a
   server to misbehave in exact ways. Each accepted connection is handed to the script. */
#ifndef SLUICE_FAKE_SERVER_H
#define SLUICE_FAKE_SERVER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/v1/sluice.pb-c.h"

typedef struct fake_server fake_server;
/* Handles connection number `conn` (0-based) on `fd`; the fd is closed after it returns. */
typedef void (*fake_script)(fake_server *s, int fd, int conn);

struct fake_server {
    int listen_fd;
    uint16_t port;
    pthread_t thread;
    fake_script script;
    void *user;
    int max_conns;
    volatile int stop;
    int conns;
    char endpoint[32];
};

fake_server *fake_start(fake_script script, void *user, int max_conns);
void fake_stop(fake_server *s);

/* Reads the preface and Hello; 0 on success. *hello (may be NULL) is freed by the caller with
   sluice__v1__hello__free_unpacked(h, NULL). */
int fake_read_hello(int fd, Sluice__V1__Hello **hello);
/* Reads one client frame (decompressing it); NULL at EOF/error or after timeout_ms. */
Sluice__V1__ClientFrame *fake_read_frame(int fd, int timeout_ms, uint8_t *flags_out);
int fake_send(int fd, const Sluice__V1__ServerFrame *f, int compress);
int fake_write_all(int fd, const void *p, size_t n);

int fake_welcome(int fd, uint64_t credit, uint64_t committed_seq, uint32_t heartbeat_ms, uint32_t max_batch);
/* Like fake_welcome, with Welcome.credit_requests set: the client may send CreditRequest. */
int fake_welcome_requests(int fd, uint64_t credit, uint32_t max_batch);
int fake_ack(int fd, uint64_t seq, uint32_t accepted, int duplicate);
int fake_credit(int fd, uint64_t readings);
int fake_error(int fd, int code, const char *msg, uint64_t seq, int closing);
int fake_go_away(int fd, uint32_t reconnect_after_ms);
int fake_ping(int fd, uint64_t nonce);
int fake_credit_recall(int fd, uint64_t readings);

/* Number of readings in a batch. */
uint64_t fake_batch_readings(const Sluice__V1__Batch *b);

#endif
