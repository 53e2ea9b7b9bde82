/* The optional TLS transport on mbedTLS (sluice_tls.h). Compiled to nothing unless SLUICE_TLS_MBEDTLS is
   defined (make TLS=mbedtls), so builds without mbedTLS (SwiftPM's CSluice, plain make) are unaffected. */
#ifdef SLUICE_TLS_MBEDTLS
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "sluice_tls.h"

struct sluice_tls {
    sluice_transport t; /* what sluice_tls_transport() hands out: ctx = this */
    sluice_transport inner;
    char server_name[256];
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
};

typedef struct tls_conn {
    sluice_tls *tls;
    mbedtls_ssl_context ssl;
    int ssl_ready;     /* mbedtls_ssl_setup done */
    int handshaken;
    int want;          /* SLUICE_WANT_* the TLS layer waits for (handshake, renegotiation) */
    char err[160];     /* the inner transport's last error */
    /* the inner transport's connection state follows (inner.conn_size bytes, 16-aligned) */
} tls_conn;

#define INNER_OFF ((sizeof(tls_conn) + 15) & ~(size_t)15)

static void *inner_conn(tls_conn *k) {
    return (unsigned char *)k + INNER_OFF;
}

static void tls_error(char *err, size_t errlen, const char *what, int rc) {
    char why[160];
#if defined(MBEDTLS_ERROR_C)
    mbedtls_strerror(rc, why, sizeof why);
#else
    snprintf(why, sizeof why, "mbedTLS error -0x%04x", (unsigned)-rc);
#endif
    snprintf(err, errlen, "%s: %s", what, why);
}

static int bio_send(void *ctx, const unsigned char *buf, size_t len) {
    tls_conn *k = ctx;
    const sluice_transport *in = &k->tls->inner;
    long w = in->send(in->ctx, inner_conn(k), buf, len, k->err, sizeof k->err);
    if (w > 0) return (int)w;
    if (w == 0) return MBEDTLS_ERR_SSL_WANT_WRITE;
    return MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len) {
    tls_conn *k = ctx;
    const sluice_transport *in = &k->tls->inner;
    long r = in->recv(in->ctx, inner_conn(k), buf, len, k->err, sizeof k->err);
    if (r > 0) return (int)r;
    if (r == 0) return MBEDTLS_ERR_SSL_WANT_READ;
    if (r == SLUICE_TRANSPORT_CLOSED) return 0; /* EOF */
    return MBEDTLS_ERR_NET_RECV_FAILED;
}

static int tls_connect(void *ctx, void *conn, const char *host, const char *port, char *err, size_t errlen) {
    sluice_tls *t = ctx;
    tls_conn *k = conn;
    memset(k, 0, sizeof *k);
    k->tls = t;
    k->want = SLUICE_WANT_WRITE;
    int rc = t->inner.connect(t->inner.ctx, inner_conn(k), host, port, err, errlen);
    if (rc != 0) return rc;
    mbedtls_ssl_init(&k->ssl);
    k->ssl_ready = 1;
    if ((rc = mbedtls_ssl_setup(&k->ssl, &t->conf)) != 0 ||
        (rc = mbedtls_ssl_set_hostname(&k->ssl, t->server_name[0] ? t->server_name : host)) != 0) {
        tls_error(err, errlen, "TLS setup failed", rc);
        mbedtls_ssl_free(&k->ssl);
        k->ssl_ready = 0;
        t->inner.close(t->inner.ctx, inner_conn(k));
        return SLUICE_TRANSPORT_ERROR;
    }
    mbedtls_ssl_set_bio(&k->ssl, k, bio_send, bio_recv, NULL);
    return 0;
}

/* Maps an mbedTLS result: 1 = go on, 0 = not now (k->want set), SLUICE_TRANSPORT_* otherwise. */
static long tls_result(tls_conn *k, int rc, const char *what, char *err, size_t errlen) {
    if (rc == MBEDTLS_ERR_SSL_WANT_READ) {
        k->want = SLUICE_WANT_READ;
        return 0;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
        k->want = SLUICE_WANT_WRITE;
        return 0;
    }
    if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || rc == MBEDTLS_ERR_SSL_CONN_EOF) return SLUICE_TRANSPORT_CLOSED;
    if (rc == MBEDTLS_ERR_NET_SEND_FAILED || rc == MBEDTLS_ERR_NET_RECV_FAILED) {
        snprintf(err, errlen, "%s", k->err[0] ? k->err : "the connection failed");
        return SLUICE_TRANSPORT_ERROR;
    }
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        char info[300];
        uint32_t flags = mbedtls_ssl_get_verify_result(&k->ssl);
        int n = mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
        while (n > 0 && (info[n - 1] == '\n' || info[n - 1] == ' ')) info[--n] = '\0';
        for (char *p = info; *p; p++)
            if (*p == '\n') *p = ';';
        snprintf(err, errlen, "TLS: the server's certificate does not verify: %s", n > 0 ? info : "unknown reason");
        return SLUICE_TRANSPORT_ERROR;
    }
    tls_error(err, errlen, what, rc);
    return SLUICE_TRANSPORT_ERROR;
}

static long handshake(tls_conn *k, char *err, size_t errlen) {
    if (k->handshaken) return 1;
    int rc = mbedtls_ssl_handshake(&k->ssl);
    if (rc != 0) return tls_result(k, rc, "TLS handshake failed", err, errlen);
    k->handshaken = 1;
    k->want = 0;
    return 1;
}

static long tls_send(void *ctx, void *conn, const uint8_t *p, size_t n, char *err, size_t errlen) {
    tls_conn *k = conn;
    (void)ctx;
    long h = handshake(k, err, errlen);
    if (h != 1) return h;
    int rc = mbedtls_ssl_write(&k->ssl, p, n);
    if (rc > 0) return rc;
    return tls_result(k, rc, "TLS write failed", err, errlen);
}

static long tls_recv(void *ctx, void *conn, uint8_t *p, size_t n, char *err, size_t errlen) {
    tls_conn *k = conn;
    (void)ctx;
    long h = handshake(k, err, errlen);
    if (h != 1) return h;
    int rc = mbedtls_ssl_read(&k->ssl, p, n);
    if (rc > 0) {
        k->want = 0;
        return rc;
    }
    if (rc == 0) return SLUICE_TRANSPORT_CLOSED;
    return tls_result(k, rc, "TLS read failed", err, errlen);
}

static void tls_close(void *ctx, void *conn) {
    sluice_tls *t = ctx;
    tls_conn *k = conn;
    if (k->ssl_ready) {
        if (k->handshaken) mbedtls_ssl_close_notify(&k->ssl); /* best effort, never waits */
        mbedtls_ssl_free(&k->ssl);
        k->ssl_ready = 0;
    }
    t->inner.close(t->inner.ctx, inner_conn(k));
}

static int tls_events(void *ctx, void *conn, int want) {
    tls_conn *k = conn;
    (void)ctx;
    if (!k->handshaken) return k->want ? k->want : SLUICE_WANT_READ | SLUICE_WANT_WRITE;
    return k->want ? (want | k->want) : want;
}

static int tls_wait(void *ctx, void *conn, int events, int timeout_ms) {
    sluice_tls *t = ctx;
    tls_conn *k = conn;
    if (k == NULL) return t->inner.wait(t->inner.ctx, NULL, 0, timeout_ms);
    /* plaintext already decrypted and buffered: readable now, whatever the socket says */
    if (k->handshaken && (events & SLUICE_WANT_READ) && mbedtls_ssl_get_bytes_avail(&k->ssl) > 0)
        return SLUICE_WANT_READ;
    int ev = tls_events(ctx, conn, events);
    int ready = t->inner.wait(t->inner.ctx, inner_conn(k), ev, timeout_ms);
    if (ready <= 0) return ready;
    /* during the handshake any progress may let either direction go on: send and recv drive it */
    if (!k->handshaken) return events;
    return ready & SLUICE_WANT_READ ? (ready | (events & SLUICE_WANT_READ)) : ready;
}

static int tls_fd(void *ctx, void *conn) {
    sluice_tls *t = ctx;
    tls_conn *k = conn;
    return t->inner.fd ? t->inner.fd(t->inner.ctx, inner_conn(k)) : -1;
}

static uint64_t tls_now(void *ctx) {
    sluice_tls *t = ctx;
    return t->inner.now_ms(t->inner.ctx);
}

sluice_tls *sluice_tls_create(const sluice_tls_config *cfg, char *err, size_t errlen) {
    if (cfg == NULL || (cfg->ca_pem == NULL && cfg->ca_file == NULL)) {
        snprintf(err, errlen, "sluice_tls_config needs ca_pem or ca_file: the server's chain is always verified");
        return NULL;
    }
    if (cfg->server_name != NULL && strlen(cfg->server_name) >= 256) {
        snprintf(err, errlen, "sluice_tls_config.server_name is longer than 255 bytes");
        return NULL;
    }
    sluice_tls *t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->inner = cfg->inner ? *cfg->inner : *sluice_transport_posix();
    if (cfg->server_name) snprintf(t->server_name, sizeof t->server_name, "%s", cfg->server_name);
    mbedtls_ssl_config_init(&t->conf);
    mbedtls_x509_crt_init(&t->ca);
    mbedtls_entropy_init(&t->entropy);
    mbedtls_ctr_drbg_init(&t->drbg);
    int rc;
    static const unsigned char pers[] = "libsluice";
    if ((rc = mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy, pers, sizeof pers - 1)) != 0) {
        tls_error(err, errlen, "cannot seed the random generator", rc);
        sluice_tls_free(t);
        return NULL;
    }
    if (cfg->ca_pem != NULL) {
        rc = mbedtls_x509_crt_parse(&t->ca, (const unsigned char *)cfg->ca_pem, strlen(cfg->ca_pem) + 1);
    } else {
        rc = mbedtls_x509_crt_parse_file(&t->ca, cfg->ca_file);
    }
    if (rc != 0) {
        char what[300];
        snprintf(what, sizeof what, "cannot load the CA certificate%s%s", cfg->ca_pem ? "" : " from ",
                 cfg->ca_pem ? "" : cfg->ca_file);
        tls_error(err, errlen, what, rc);
        sluice_tls_free(t);
        return NULL;
    }
    if ((rc = mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
        tls_error(err, errlen, "TLS configuration failed", rc);
        sluice_tls_free(t);
        return NULL;
    }
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED); /* chain and name, always */
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
    mbedtls_ssl_conf_min_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2+ */
    sluice_transport tt = {INNER_OFF + t->inner.conn_size, tls_connect, tls_send, tls_recv, tls_close,
                           tls_wait, tls_fd, tls_events, tls_now, t};
    t->t = tt;
    return t;
}

const sluice_transport *sluice_tls_transport(const sluice_tls *tls) {
    return tls ? &tls->t : NULL;
}

void sluice_tls_free(sluice_tls *t) {
    if (t == NULL) return;
    mbedtls_ssl_config_free(&t->conf);
    mbedtls_x509_crt_free(&t->ca);
    mbedtls_ctr_drbg_free(&t->drbg);
    mbedtls_entropy_free(&t->entropy);
    free(t);
}
#else
typedef int sl_no_tls; /* ISO C wants something in a translation unit */
#endif
