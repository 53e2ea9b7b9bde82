/* The default transport: non-blocking TCP over POSIX sockets, every address getaddrinfo() gives tried in
   turn, and CLOCK_MONOTONIC. Left out with -DSLUICE_NO_POSIX (then config.transport is required). */
#ifndef SLUICE_NO_POSIX
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SO_NOSIGPIPE is set on the socket instead */
#endif

typedef struct px_conn {
    int fd;
    int pending;             /* connect() in progress on fd */
    struct addrinfo *res;    /* getaddrinfo's list (NULL for a numeric address) */
    struct addrinfo *next;   /* the address to try after the current one fails */
    struct sockaddr_storage sa; /* a numeric address */
    socklen_t salen;
    unsigned tried;
} px_conn;

static uint64_t px_now_ms(void *ctx) {
    struct timespec ts;
    (void)ctx;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Starts a non-blocking connect to sa. 0: started or done; -errno: failed at once. */
static int px_dial(px_conn *k, const struct sockaddr *sa, socklen_t salen) {
    if (k->fd >= 0) close(k->fd);
    k->fd = -1;
    k->pending = 0;
    k->tried++;
    int fd = socket(sa->sa_family, SOCK_STREAM, 0);
    if (fd < 0) return -errno;
    int one = 1;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef SO_NOSIGPIPE
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    k->fd = fd;
    if (connect(fd, sa, salen) != 0) {
        if (errno != EINPROGRESS && errno != EINTR) return -errno;
        k->pending = 1;
    }
    return 0;
}

/* The current address failed with `e`: dials the next one. 0 when one is being tried; -e when none is left. */
static int px_next(px_conn *k, int e) {
    while (k->next != NULL) {
        struct addrinfo *ai = k->next;
        k->next = ai->ai_next;
        if (px_dial(k, ai->ai_addr, ai->ai_addrlen) == 0) return 0;
    }
    return -e;
}

static void px_fail(px_conn *k, int e, char *err, size_t errlen) {
    if (k->tried > 1) {
        snprintf(err, errlen, "%s (tried %u addresses)", strerror(e), k->tried);
    } else {
        snprintf(err, errlen, "%s", strerror(e));
    }
}

static int px_connect(void *ctx, void *conn, const char *host, const char *port, char *err, size_t errlen) {
    px_conn *k = conn;
    (void)ctx;
    memset(k, 0, sizeof *k);
    k->fd = -1;
    uint16_t p = (uint16_t)atoi(port);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&k->sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&k->sa;
    int rc;
    /* Numeric addresses need no resolver (which would block and allocate outside the allocator hooks). */
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(p);
        k->salen = sizeof *in4;
        rc = px_dial(k, (struct sockaddr *)&k->sa, k->salen);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(p);
        k->salen = sizeof *in6;
        rc = px_dial(k, (struct sockaddr *)&k->sa, k->salen);
    } else {
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int r = getaddrinfo(host, port, &hints, &k->res);
        if (r != 0 || k->res == NULL) {
            snprintf(err, errlen, "cannot resolve \"%s\": %s", host, r != 0 ? gai_strerror(r) : "no address");
            if (k->res) freeaddrinfo(k->res);
            k->res = NULL;
            return SLUICE_TRANSPORT_ERROR;
        }
        k->next = k->res->ai_next;
        rc = px_dial(k, k->res->ai_addr, k->res->ai_addrlen);
        if (rc != 0) rc = px_next(k, -rc);
    }
    if (rc != 0) {
        px_fail(k, -rc, err, errlen);
        return SLUICE_TRANSPORT_ERROR;
    }
    return 0;
}

/* While connecting: 1 once connected, 0 still in progress, or an error (after every address). */
static int px_settle(px_conn *k, char *err, size_t errlen) {
    while (k->pending) {
        struct pollfd p = {k->fd, POLLOUT, 0};
        int n = poll(&p, 1, 0);
        if (n == 0) return 0;
        if (n < 0) {
            if (errno == EINTR) continue;
            px_fail(k, errno, err, errlen);
            return SLUICE_TRANSPORT_ERROR;
        }
        int e = 0;
        socklen_t len = sizeof e;
        if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0) e = errno;
        if (e == 0) {
            k->pending = 0;
            return 1;
        }
        if (px_next(k, e) != 0) {
            px_fail(k, e, err, errlen);
            return SLUICE_TRANSPORT_ERROR;
        }
    }
    return 1;
}

static long px_send(void *ctx, void *conn, const uint8_t *p, size_t n, char *err, size_t errlen) {
    px_conn *k = conn;
    (void)ctx;
    int s = px_settle(k, err, errlen);
    if (s <= 0) return s;
    for (;;) {
        ssize_t w = send(k->fd, p, n, MSG_NOSIGNAL);
        if (w >= 0) return (long)w;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        snprintf(err, errlen, "%s", strerror(errno));
        return SLUICE_TRANSPORT_ERROR;
    }
}

static long px_recv(void *ctx, void *conn, uint8_t *p, size_t n, char *err, size_t errlen) {
    px_conn *k = conn;
    (void)ctx;
    int s = px_settle(k, err, errlen);
    if (s <= 0) return s;
    for (;;) {
        ssize_t r = recv(k->fd, p, n, 0);
        if (r > 0) return (long)r;
        if (r == 0) return SLUICE_TRANSPORT_CLOSED;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        snprintf(err, errlen, "%s", strerror(errno));
        return SLUICE_TRANSPORT_ERROR;
    }
}

static void px_close(void *ctx, void *conn) {
    px_conn *k = conn;
    (void)ctx;
    if (k->fd >= 0) close(k->fd);
    k->fd = -1;
    if (k->res != NULL) freeaddrinfo(k->res);
    k->res = k->next = NULL;
}

static int px_wait(void *ctx, void *conn, int events, int timeout_ms) {
    px_conn *k = conn;
    (void)ctx;
    if (k == NULL || k->fd < 0) {
        if (timeout_ms > 0) poll(NULL, 0, timeout_ms);
        return 0;
    }
    struct pollfd p = {k->fd, 0, 0};
    /* while connecting, only writability (or an error) says the attempt is over */
    if (k->pending) {
        p.events = POLLOUT;
    } else {
        if (events & SLUICE_WANT_READ) p.events |= POLLIN;
        if (events & SLUICE_WANT_WRITE) p.events |= POLLOUT;
    }
    int n = poll(&p, 1, timeout_ms);
    if (n <= 0) return 0;
    if (k->pending) return events; /* settled one way or the other: send/recv find out which */
    int ready = 0;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) ready |= SLUICE_WANT_READ;
    if (p.revents & POLLOUT) ready |= SLUICE_WANT_WRITE;
    return ready;
}

static int px_fd(void *ctx, void *conn) {
    (void)ctx;
    return ((px_conn *)conn)->fd;
}

static int px_events(void *ctx, void *conn, int want) {
    (void)ctx;
    return ((px_conn *)conn)->pending ? SLUICE_WANT_WRITE : want;
}

static const sluice_transport px_transport = {sizeof(px_conn), px_connect, px_send, px_recv, px_close,
                                              px_wait, px_fd, px_events, px_now_ms, NULL};

const sluice_transport *sluice_transport_posix(void) {
    return &px_transport;
}
#else
typedef int sl_no_posix_transport; /* ISO C wants something in a translation unit */
#endif
