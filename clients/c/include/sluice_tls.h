/*
 * libsluice's optional TLS transport, on mbedTLS (built with `make TLS=mbedtls`; Debian: libmbedtls-dev).
 *
 * It verifies the server's certificate chain against the CA you give and the server's host name, and speaks
 * TLS 1.2 or newer (what the linked mbedTLS offers; 2.28 stops at 1.2). Underneath it runs any transport
 * (the POSIX one by default), so TLS works over lwIP or a modem's sockets too:
 *
 *     sluice_tls_config tc = {0};
 *     tc.ca_file = "/etc/gw/sluice-ca.pem";         // or tc.ca_pem = "-----BEGIN CERTIFICATE-----...";
 *     char err[200];
 *     sluice_tls *tls = sluice_tls_create(&tc, err, sizeof err);   // NULL: err says why
 *     cfg.transport = sluice_tls_transport(tls);
 *     cfg.endpoints = "ingest.example.com:7878";    // the name verified, unless tc.server_name is set
 *     ... sluice_create / use / sluice_close ...
 *     sluice_tls_free(tls);                          // after sluice_close of every handle using it
 *
 * A chain that does not verify or a name that does not match fails the connection with SLUICE_ERR_CONNECT
 * and a message quoting mbedTLS's reason (e.g. "The certificate is not correctly signed by the trusted CA",
 * "The certificate Common Name (CN) does not match with the expected CN"). One sluice_tls may serve several
 * handles (used by one thread at a time). mbedTLS allocates through its own calloc/free
 * (mbedtls_platform_set_calloc_free when built with MBEDTLS_PLATFORM_MEMORY), not through sluice_allocator.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include "sluice.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sluice_tls_config {
    const char *ca_pem;           /* trusted CA certificate(s) in PEM, NUL-terminated; or:            */
    const char *ca_file;          /* a PEM file of them                                                */
    const char *server_name;      /* the name to verify; NULL = the host of the endpoint connected to */
    const sluice_transport *inner; /* what TLS runs over; NULL = sluice_transport_posix()             */
} sluice_tls_config;

typedef struct sluice_tls sluice_tls; /* opaque */

/** Loads the CA and seeds the random generator. NULL on failure, with the reason in err[errlen]. */
sluice_tls *sluice_tls_create(const sluice_tls_config *cfg, char *err, size_t errlen);
/** The transport to put in sluice_config.transport (valid until sluice_tls_free). */
const sluice_transport *sluice_tls_transport(const sluice_tls *tls);
void sluice_tls_free(sluice_tls *tls);

#ifdef __cplusplus
}
#endif
#endif
