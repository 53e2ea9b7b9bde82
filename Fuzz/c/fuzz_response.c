/* libFuzzer target: libsluice's handling of bytes from the server (frame prefixes, zstd, protobuf-c
   ServerFrame decoding, Welcome/Ack/Credit/Error/GoAway handling) under ASan. conn.c is included so the
   static parse_frames() is reachable; every input runs on a fresh client handle in the state the first byte
   picks, with a few unacked batches so Acks and Errors have something to settle. See docs/chaos.md.

   Build and run: Fuzz/build-c && .build-chaos/fuzz/fuzz-response Fuzz/corpus/response */
#include "../../clients/c/src/conn.c"

#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = "127.0.0.1:1";
    cfg.max_server_frame_bytes = 64 * 1024;
    cfg.memory_limit = 4 * 1024 * 1024;
    cfg.nonblocking = 1;
    memset(cfg.producer_id, 7, sizeof cfg.producer_id);
    sluice_client *c = sluice_create(&cfg);
    if (c == NULL) return 0;
    if (sluice_err(c) != SLUICE_OK) {
        sluice_close(c);
        return 0;
    }
    /* An open session with batches sent and awaiting their acks (seqs 1..3), the peer end kept open. */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        sluice_close(c);
        return 0;
    }
    c->fd = sv[0];
    c->state = SLUICE_STATE_READY;
    c->hello_off = c->hello_len;
    c->credit = 1000;
    c->srv_max_batch_readings = 2;
    c->srv_max_frame_bytes = 65536;
    c->heartbeat_ms = 5000;
    for (int i = 0; i < 6; i++) (void)sluice_append(c, "dev-1", "temp", 1764000000000000LL + i, 21.5 + i, 0);
    sl_series_list_splice(&c->queue, &c->open);
    (void)flush_tx(c);
    if (c->fd >= 0) c->state = (data[0] & 1) ? SLUICE_STATE_READY : SLUICE_STATE_CONNECTING;
    size_t n = size - 1 < c->rx_cap ? size - 1 : c->rx_cap;
    memcpy(c->rx, data + 1, n);
    c->rx_len = n;
    if (c->fd >= 0) (void)parse_frames(c);
    sluice_close(c);
    close(sv[1]);
    return 0;
}
