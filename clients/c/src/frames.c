/* Frames the client writes (Hello, Ping, Pong, CreditRequest, CreditReturn) and what it does with each frame
   the server sends. */
#include <stdio.h>
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_createDCtx_advanced: zstd allocates through our hooks */
#include <zstd.h>
#include <zstd_errors.h>

#include "internal.h"
#include "sluice/v1/sluice.pb-c.h"

static const char *status_name(int code) {
    static const char *names[] = {"OK", "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED",
                                  "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "UNAVAILABLE", "UNIMPLEMENTED",
                                  "INTERNAL", "PROTOCOL_ERROR", "FRAME_TOO_LARGE"};
    if (code >= 0 && code < (int)(sizeof names / sizeof names[0])) return names[code];
    return "UNKNOWN_STATUS";
}

int sl_encode_hello(sluice_client *c) {
    Sluice__V1__Hello hello = SLUICE__V1__HELLO__INIT;
    Sluice__V1__Compression comps[2] = {SLUICE__V1__COMPRESSION__COMPRESSION_NONE,
                                        SLUICE__V1__COMPRESSION__COMPRESSION_ZSTD};
    hello.protocol_version = 1;
    hello.producer_id.len = 16;
    hello.producer_id.data = c->cfg.producer_id;
    hello.token = (char *)(c->cfg.token ? c->cfg.token : "");
    hello.client_name = (char *)c->cfg.client_name;
    hello.client_version = (char *)SLUICE_VERSION_STRING;
    hello.n_compressions = 2;
    hello.compressions = comps;
    hello.credit_returns = 1; /* it answers CreditRecall (on_credit_recall) */
    Sluice__V1__ClientFrame frame = SLUICE__V1__CLIENT_FRAME__INIT;
    frame.kind_case = SLUICE__V1__CLIENT_FRAME__KIND_HELLO;
    frame.hello = &hello;
    size_t size = protobuf_c_message_get_packed_size(&frame.base);
    if (size > (64u << 10)) {
        return sl_seterr(c, SLUICE_ERR_INVALID,
                         "Hello would be %zu bytes, above the 64 KiB handshake limit: shorten the token", size);
    }
    c->hello = sl_alloc(&c->mem, 4 + 5 + size, SL_TIER_FIXED);
    if (c->hello == NULL) return sl_seterr(c, SLUICE_ERR_NOMEM, "out of memory encoding Hello");
    memcpy(c->hello, "SLU1", 4);
    c->hello[4] = 0;
    sl_put_be32(c->hello + 5, (uint32_t)size);
    protobuf_c_message_pack(&frame.base, c->hello + 9);
    c->hello_len = 9 + size;
    return SLUICE_OK;
}

/* One uncompressed ClientFrame whose case `tag` holds a message with one varint field 1 = `value`. */
static size_t encode_varint_case(uint8_t *out, uint8_t tag, uint64_t value) {
    uint8_t body[16];
    size_t n = 0;
    if (value != 0) {
        body[n++] = 0x08;
        n += sl_put_varint(body + n, value);
    }
    size_t len = 0;
    out[5 + len++] = tag;
    out[5 + len++] = (uint8_t)n;
    memcpy(out + 5 + len, body, n);
    len += n;
    out[0] = 0;
    sl_put_be32(out + 1, (uint32_t)len);
    return 5 + len;
}

size_t sl_encode_ping_pong(uint8_t *out, int is_pong, uint64_t nonce) {
    /* ClientFrame.ping = 3 / .pong = 4, each { nonce = 1 (varint) } */
    return encode_varint_case(out, is_pong ? 0x22 : 0x1a, nonce);
}

size_t sl_encode_credit_request(uint8_t *out, uint64_t readings) {
    /* ClientFrame.credit_request = 5 { readings = 1 (varint) } */
    return encode_varint_case(out, 0x2a, readings);
}

size_t sl_encode_credit_return(uint8_t *out, uint64_t readings) {
    /* ClientFrame.credit_return = 6 { readings = 1 (varint) } */
    return encode_varint_case(out, 0x32, readings);
}

/* ---- Server frames ---------------------------------------------------------------------------------- */

static void *zstd_alloc(void *opaque, size_t n) {
    sl_mem *m = opaque;
    return sl_alloc(m, n, m->tier);
}

static void zstd_free(void *opaque, void *p) {
    sl_free(opaque, p);
}

/* Decompresses at most max_server_frame_bytes: a zstd bomb is an error, never an allocation. */
static int inflate(sluice_client *c, const uint8_t *p, size_t len, uint8_t **out, size_t *out_len) {
    size_t cap = c->cfg.max_server_frame_bytes;
    unsigned long long declared = ZSTD_getFrameContentSize(p, len);
    if (declared == ZSTD_CONTENTSIZE_ERROR) {
        return sl_seterr(c, SLUICE_ERR_PROTOCOL,
                         "server frame has flags bit 0 (zstd) set but its payload is not a zstd frame");
    }
    if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared > cap) {
        return sl_seterr(c, SLUICE_ERR_FRAME_TOO_LARGE,
                         "server frame declares %llu bytes decompressed, above max_server_frame_bytes (%zu)",
                         declared, cap);
    }
    size_t whole = ZSTD_findFrameCompressedSize(p, len);
    if (ZSTD_isError(whole)) {
        return sl_seterr(c, SLUICE_ERR_PROTOCOL, "corrupt or truncated zstd payload in server frame: %s",
                         ZSTD_getErrorName(whole));
    }
    if (whole != len) {
        return sl_seterr(c, SLUICE_ERR_PROTOCOL,
                         "server frame payload has %zu bytes after its zstd frame: a payload is exactly one frame",
                         len - whole);
    }
    c->mem.tier = SL_TIER_RECV;
    if (c->dctx == NULL) {
        ZSTD_customMem cm = {zstd_alloc, zstd_free, &c->mem};
        c->dctx = ZSTD_createDCtx_advanced(cm);
        if (c->dctx == NULL) {
            return sl_seterr(c, c->mem.last_refusal == 2 ? SLUICE_ERR_NOMEM : SLUICE_ERR_FULL,
                             "no memory for a zstd decompression context");
        }
    }
    size_t room = declared != ZSTD_CONTENTSIZE_UNKNOWN ? (size_t)declared : cap;
    uint8_t *buf = sl_alloc(&c->mem, room ? room : 1, SL_TIER_RECV);
    if (buf == NULL) {
        return sl_seterr(c, c->mem.last_refusal == 2 ? SLUICE_ERR_NOMEM : SLUICE_ERR_FULL,
                         "no memory to decompress a server frame of %zu bytes", room);
    }
    size_t r = ZSTD_decompressDCtx(c->dctx, buf, room, p, len);
    if (ZSTD_isError(r)) {
        sl_free(&c->mem, buf);
        if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall && room == cap) {
            return sl_seterr(c, SLUICE_ERR_FRAME_TOO_LARGE,
                             "server frame expands past max_server_frame_bytes (%zu) when decompressed", cap);
        }
        return sl_seterr(c, SLUICE_ERR_PROTOCOL, "corrupt zstd payload in server frame: %s", ZSTD_getErrorName(r));
    }
    *out = buf;
    *out_len = r;
    return SLUICE_OK;
}

static void report(sluice_client *c, const sl_batch *b, const Sluice__V1__Ack *ack, int dropped, int status,
                   const char *message) {
    if (c->cfg.on_ack == NULL) return;
    sluice_ack info;
    memset(&info, 0, sizeof info);
    info.seq = b->seq;
    info.readings = b->readings;
    info.first_reject_message = "";
    if (ack != NULL) {
        info.accepted = ack->accepted;
        info.rejected = ack->rejected;
        info.duplicate = ack->duplicate != 0;
        if (ack->n_reasons > 0 && ack->reasons[0] != NULL) {
            info.first_reject_code = (int)ack->reasons[0]->code;
            if (ack->reasons[0]->message) info.first_reject_message = ack->reasons[0]->message;
        }
    } else if (dropped) {
        info.dropped = 1;
        info.first_reject_code = status;
        info.first_reject_message = message ? message : "";
    }
    c->cfg.on_ack(c->cfg.on_ack_user, &info);
}

/* Removes batch `seq` from the unacked list; NULL if it is not there. */
static sl_batch *take_unacked(sluice_client *c, uint64_t seq) {
    sl_batch *prev = NULL;
    for (sl_batch *b = c->unacked_head; b != NULL; prev = b, b = b->next) {
        if (b->seq != seq) continue;
        /* A frame half written cannot be settled: removing it would cut the byte stream mid-frame. */
        if (c->tx_batch == b && c->tx_off > 0) return NULL;
        if (c->tx_batch == b) {
            c->tx_batch = b->next;
            c->tx_off = 0;
        }
        if (prev) {
            prev->next = b->next;
        } else {
            c->unacked_head = b->next;
        }
        if (c->unacked_tail == b) c->unacked_tail = prev;
        c->unacked_batches--;
        c->unacked_readings -= b->readings;
        b->next = NULL;
        return b;
    }
    return NULL;
}

static int on_welcome(sluice_client *c, const Sluice__V1__Welcome *w) {
    if (c->state != SLUICE_STATE_CONNECTING || c->hello_off < c->hello_len) {
        sl_seterr(c, SLUICE_ERR_PROTOCOL, "server sent Welcome outside the handshake");
        sl_drop_connection(c, -1);
        return SLUICE_ERR_PROTOCOL;
    }
    if (w->protocol_version != 1) {
        sl_seterr(c, SLUICE_ERR_UNSUPPORTED, "server speaks protocol version %u; libsluice %s speaks 1",
                  w->protocol_version, SLUICE_VERSION_STRING);
        c->state = SLUICE_STATE_FAILED;
        sl_drop_connection(c, 0);
        return SLUICE_ERR_UNSUPPORTED;
    }
    /* committed_seq is the server's word on this producer: it cannot be the last seq there is (nothing could
       follow it), nor above what this run has sealed once it sealed any (the server cannot have committed a
       batch never sent; another device using the same producer_id would explain it). */
    if (w->committed_seq == UINT64_MAX) {
        sl_seterr(c, SLUICE_ERR_PROTOCOL, "server's Welcome.committed_seq is 2^64-1: no seq is left to send");
        sl_drop_connection(c, -1);
        return SLUICE_ERR_PROTOCOL;
    }
    if (c->st.last_seq != 0 && w->committed_seq > c->st.last_seq) {
        sl_seterr(c, SLUICE_ERR_PROTOCOL,
                  "server's Welcome.committed_seq %llu is above the highest seq this client has sent (%llu): is "
                  "another device using the same producer_id?",
                  (unsigned long long)w->committed_seq, (unsigned long long)c->st.last_seq);
        sl_drop_connection(c, -1);
        return SLUICE_ERR_PROTOCOL;
    }
    c->credit = w->initial_credit;
    c->session_id = w->session_id;
    c->srv_max_batch_readings = w->max_batch_readings;
    c->srv_max_frame_bytes = w->max_frame_bytes;
    c->srv_credit_requests = w->credit_requests ? 1 : 0;
    c->credit_requested = 0;
    c->heartbeat_ms = w->heartbeat_interval_ms;
    /* Batches at or below committed_seq were committed in an earlier session and their ack was lost. They
       are resent all the same: the server acks each as a duplicate with the counts of its original outcome
       (dead-lettered readings included), which committed_seq alone cannot tell the ack callback. */
    if (c->next_seq <= w->committed_seq) c->next_seq = w->committed_seq + 1;
    c->tx_batch = c->unacked_head;
    c->tx_off = 0;
    c->state = SLUICE_STATE_READY;
    c->backoff_attempt = 0;
    c->deadline_ms = 0;
    c->st.connects++;
    c->credit_stalled = 0;
    sl_log(c, SLUICE_LOG_INFO, "session %llu open with %s:%s: credit %llu, committed_seq %llu, next seq %llu",
           (unsigned long long)c->session_id, c->endpoints[c->endpoint_current].host,
           c->endpoints[c->endpoint_current].port, (unsigned long long)c->credit,
           (unsigned long long)w->committed_seq, (unsigned long long)c->next_seq);
    return SLUICE_OK;
}

static int on_ack(sluice_client *c, const Sluice__V1__Ack *ack) {
    sl_batch *b = c->unacked_head;
    /* An ack may only name a batch written whole on this connection. */
    for (; b != NULL && b != c->tx_batch; b = b->next) {
        if (b->seq == ack->seq) break;
    }
    if (b == NULL || b == c->tx_batch) {
        /* Not outstanding here: already settled by Welcome.committed_seq or a repeated ack. Harmless. */
        return SLUICE_OK;
    }
    if ((uint64_t)ack->accepted + ack->rejected > b->readings) {
        sl_seterr(c, SLUICE_ERR_PROTOCOL, "server's Ack for batch %llu counts %u accepted + %u rejected readings, but "
                  "the batch held %u", (unsigned long long)ack->seq, ack->accepted, ack->rejected, b->readings);
        sl_drop_connection(c, -1);
        return SLUICE_ERR_PROTOCOL;
    }
    b = take_unacked(c, ack->seq);
    c->st.batches_acked++;
    if (ack->duplicate) c->st.batches_duplicate++;
    c->st.readings_accepted += ack->accepted;
    c->st.readings_rejected += ack->rejected;
    sl_store_remove(c, b);
    report(c, b, ack, 0, 0, NULL);
    sl_batch_free(&c->mem, b);
    return SLUICE_OK;
}

static int on_error(sluice_client *c, const Sluice__V1__Error *e) {
    const char *msg = e->message ? e->message : "";
    int code = (int)e->code;
    const char *name = status_name(code);
    if (code == SLUICE__V1__STATUS_CODE__STATUS_CODE_UNIMPLEMENTED) {
        sl_seterr(c, SLUICE_ERR_UNSUPPORTED, "server: UNIMPLEMENTED: %s", msg);
        c->state = SLUICE_STATE_FAILED;
        sl_drop_connection(c, 0);
        return SLUICE_ERR_UNSUPPORTED;
    }
    int batch_level = e->seq != 0 && (code == SLUICE__V1__STATUS_CODE__STATUS_CODE_INVALID_ARGUMENT ||
                                      (code == SLUICE__V1__STATUS_CODE__STATUS_CODE_PERMISSION_DENIED && !e->closing));
    if (batch_level) {
        /* Rejected whole: sending it again cannot help, so it is dropped (and reported). */
        sl_batch *b = take_unacked(c, e->seq);
        if (b != NULL) {
            c->st.batches_dropped++;
            sl_store_remove(c, b);
            report(c, b, NULL, 1, code, msg);
            sl_batch_free(&c->mem, b);
        }
        sl_seterr(c, SLUICE_ERR_REJECTED, "server rejected batch %llu (%s): %s", (unsigned long long)e->seq, name,
                  msg);
        if (e->closing) sl_drop_connection(c, -1);
        return SLUICE_ERR_REJECTED;
    }
    if (code == SLUICE__V1__STATUS_CODE__STATUS_CODE_UNAUTHENTICATED ||
        code == SLUICE__V1__STATUS_CODE__STATUS_CODE_PERMISSION_DENIED) {
        sl_seterr(c, SLUICE_ERR_AUTH, "server: %s: %s", name, msg);
        c->state = SLUICE_STATE_FAILED;
        sl_drop_connection(c, 0);
        return SLUICE_ERR_AUTH;
    }
    sl_seterr(c, SLUICE_ERR_SERVER, "server: %s: %s%s", name, msg, e->closing ? " (closing the connection)" : "");
    if (e->closing) sl_drop_connection(c, -1);
    return SLUICE_ERR_SERVER;
}

static int on_go_away(sluice_client *c, const Sluice__V1__GoAway *g) {
    c->goaway_delay_ms = g->reconnect_after_ms;
    snprintf(c->goaway_reason, sizeof c->goaway_reason, "%s", g->reason ? g->reason : "");
    sl_log(c, SLUICE_LOG_WARN, "server %s sent GoAway (%s): reconnecting in %u ms once its acks are in",
           c->endpoints[c->endpoint_current].host, c->goaway_reason, g->reconnect_after_ms);
    if (c->state == SLUICE_STATE_CONNECTING) {
        sl_seterr(c, SLUICE_ERR_SERVER, "server is draining (GoAway: %s); reconnecting in %u ms",
                  g->reason ? g->reason : "", g->reconnect_after_ms);
        sl_drop_connection(c, (int)(g->reconnect_after_ms > 600000 ? 600000 : g->reconnect_after_ms));
        return SLUICE_ERR_SERVER;
    }
    if (c->state == SLUICE_STATE_READY) {
        c->state = SLUICE_STATE_DRAINING;
        uint32_t t = c->cfg.io_timeout_ms;
        c->deadline_ms = sl_now_ms(c) + t;
    }
    return SLUICE_OK;
}

/* CreditRecall: gives back at once up to `readings` of the credit held now (0 when it holds none: the
   answer is owed all the same). The CreditReturn is written at the next frame boundary, before any batch
   (the server charges frames in arrival order, and a batch needing the credit given back would exceed what
   it holds); recalls answered before it is written add to it. A need asked for with CreditRequest may have
   been granted with the credit just given back: it is asked for again when the next batch needs it. */
static void on_credit_recall(sluice_client *c, const Sluice__V1__CreditRecall *r) {
    uint64_t give = r->readings < c->credit ? r->readings : c->credit;
    c->credit -= give;
    c->return_readings = give > UINT64_MAX - c->return_readings ? UINT64_MAX : c->return_readings + give;
    c->return_pending = 1;
    c->st.credit_returned += give;
    if (give > 0) c->credit_requested = 0;
}

static const char *kind_name(int kind) {
    static const char *names[] = {"nothing", "Welcome", "Ack",    "Credit",      "Error",
                                  "Ping",    "Pong",    "GoAway", "CreditRecall"};
    return kind >= 0 && kind < 9 ? names[kind] : "an unknown frame";
}

int sl_handle_frame(sluice_client *c, uint8_t flags, const uint8_t *payload, size_t len) {
    uint8_t *plain = NULL;
    size_t plain_len = len;
    int rc;
    if (flags & 0x01) {
        rc = inflate(c, payload, len, &plain, &plain_len);
        if (rc != SLUICE_OK) {
            sl_drop_connection(c, -1);
            return rc;
        }
        payload = plain;
    }
    ProtobufCAllocator pa = sl_protobuf_allocator(&c->mem);
    c->mem.tier = SL_TIER_RECV;
    c->mem.last_refusal = 0;
    Sluice__V1__ServerFrame *f = sluice__v1__server_frame__unpack(&pa, plain_len, payload);
    if (f == NULL) {
        if (c->mem.last_refusal != 0) {
            rc = sl_seterr(c, SLUICE_ERR_FRAME_TOO_LARGE,
                           "server frame of %zu bytes needs more memory to decode than the ceiling leaves", plain_len);
        } else {
            rc = sl_seterr(c, SLUICE_ERR_PROTOCOL, "server frame of %zu bytes is not a valid ServerFrame message",
                           plain_len);
        }
        sl_free(&c->mem, plain);
        sl_drop_connection(c, -1);
        return rc;
    }
    sl_free(&c->mem, plain);
    if (f->kind_case == SLUICE__V1__SERVER_FRAME__KIND__NOT_SET) {
        rc = sl_seterr(c, SLUICE_ERR_PROTOCOL, "server frame holds no known message (empty, or newer than v1)");
        sl_drop_connection(c, -1);
        sluice__v1__server_frame__free_unpacked(f, &pa);
        return rc;
    }
    if (c->state == SLUICE_STATE_CONNECTING && f->kind_case != SLUICE__V1__SERVER_FRAME__KIND_WELCOME &&
        f->kind_case != SLUICE__V1__SERVER_FRAME__KIND_ERROR && f->kind_case != SLUICE__V1__SERVER_FRAME__KIND_GO_AWAY) {
        rc = sl_seterr(c, SLUICE_ERR_PROTOCOL, "server sent %s before Welcome", kind_name(f->kind_case));
        sl_drop_connection(c, -1);
        sluice__v1__server_frame__free_unpacked(f, &pa);
        return rc;
    }
    switch (f->kind_case) {
    case SLUICE__V1__SERVER_FRAME__KIND_WELCOME:
        rc = on_welcome(c, f->welcome);
        break;
    case SLUICE__V1__SERVER_FRAME__KIND_ACK:
        rc = on_ack(c, f->ack);
        break;
    case SLUICE__V1__SERVER_FRAME__KIND_CREDIT:
        c->credit = f->credit->readings > UINT64_MAX - c->credit ? UINT64_MAX : c->credit + f->credit->readings;
        rc = SLUICE_OK;
        break;
    case SLUICE__V1__SERVER_FRAME__KIND_ERROR:
        rc = on_error(c, f->error);
        break;
    case SLUICE__V1__SERVER_FRAME__KIND_PING:
        c->pong_pending = 1;
        c->pong_nonce = f->ping->nonce;
        rc = SLUICE_OK;
        break;
    case SLUICE__V1__SERVER_FRAME__KIND_PONG:
        rc = SLUICE_OK;
        break;
    case SLUICE__V1__SERVER_FRAME__KIND_GO_AWAY:
        rc = on_go_away(c, f->go_away);
        break;
    case SLUICE__V1__SERVER_FRAME__KIND_CREDIT_RECALL:
        on_credit_recall(c, f->credit_recall);
        rc = SLUICE_OK;
        break;
    default:
        rc = sl_seterr(c, SLUICE_ERR_PROTOCOL, "server frame holds no known message (empty or newer than v1)");
        sl_drop_connection(c, -1);
        break;
    }
    sluice__v1__server_frame__free_unpacked(f, &pa);
    return rc;
}
