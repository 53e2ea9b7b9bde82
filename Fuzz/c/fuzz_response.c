/* libFuzzer target: libsluice's handling of bytes from the server (frame prefixes, zstd, protobuf-c
   ServerFrame decoding, Welcome/Ack/Credit/Error/GoAway handling) under ASan. conn.c is included so the
   static parse_frames() is reachable; every input runs on a fresh client handle in the state the first byte
   picks, with a few unacked batches so Acks and Errors have something to settle. See docs/chaos.md.

   Build and run: Fuzz/build-c && .build-chaos/fuzz/fuzz-response Fuzz/corpus/response */
#include "../../clients/c/src/conn.c"

/* An in-memory transport: every write is taken whole, nothing arrives (the input goes straight into the
   receive buffer), the clock stands still. */
static int mem_connect(void *ctx, void *conn, const char *host, const char *port, char *err, size_t errlen) {
    (void)ctx, (void)conn, (void)host, (void)port, (void)err, (void)errlen;
    return 0;
}
static long mem_send(void *ctx, void *conn, const uint8_t *p, size_t n, char *err, size_t errlen) {
    (void)ctx, (void)conn, (void)p, (void)err, (void)errlen;
    return (long)n;
}
static long mem_recv(void *ctx, void *conn, uint8_t *p, size_t n, char *err, size_t errlen) {
    (void)ctx, (void)conn, (void)p, (void)n, (void)err, (void)errlen;
    return 0;
}
static void mem_close(void *ctx, void *conn) { (void)ctx, (void)conn; }
static int mem_wait(void *ctx, void *conn, int events, int timeout_ms) {
    (void)ctx, (void)conn, (void)timeout_ms;
    return events;
}
static uint64_t mem_now(void *ctx) {
    (void)ctx;
    return 1000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    sluice_config cfg;
    sluice_config_init(&cfg);
    cfg.endpoints = "127.0.0.1:1";
    cfg.max_server_frame_bytes = 64 * 1024;
    cfg.memory_limit = 4 * 1024 * 1024;
    cfg.nonblocking = 1;
    static const sluice_transport memory = {sizeof(int), mem_connect, mem_send, mem_recv, mem_close, mem_wait,
                                            NULL, NULL, mem_now, NULL};
    cfg.transport = &memory;
    memset(cfg.producer_id, 7, sizeof cfg.producer_id);
    sluice_client *c = sluice_create(&cfg);
    if (c == NULL) return 0;
    if (sluice_err(c) != SLUICE_OK) {
        sluice_close(c);
        return 0;
    }
    /* An open session with batches sent and awaiting their acks (seqs 1..3). */
    c->conn_open = 1;
    c->state = SLUICE_STATE_READY;
    c->hello_off = c->hello_len;
    c->credit = 1000;
    c->srv_max_batch_readings = 2;
    c->srv_max_frame_bytes = 65536;
    c->heartbeat_ms = 5000;
    for (int i = 0; i < 6; i++) (void)sluice_append(c, "dev-1", "temp", 1764000000000000LL + i, 21.5 + i, 0);
    sl_series_list_splice(&c->queue, &c->open);
    (void)flush_tx(c);
    if (c->conn_open) c->state = (data[0] & 1) ? SLUICE_STATE_READY : SLUICE_STATE_CONNECTING;
    size_t n = size - 1 < c->rx_cap ? size - 1 : c->rx_cap;
    memcpy(c->rx, data + 1, n);
    c->rx_len = n;
    if (c->conn_open) (void)parse_frames(c);
    sluice_close(c);
    return 0;
}
