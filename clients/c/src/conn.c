/* The connection: endpoints, reading and writing frames through the transport, timers, backoff. No sockets
   here: those are the transport's (posix.c by default). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

uint64_t sl_now_ms(const sluice_client *c) {
    return c->tp.now_ms(c->tp.ctx);
}

/* ---- Endpoints ------------------------------------------------------------------------------------ */

int sl_parse_endpoints(sluice_client *c, const char *text) {
    size_t len = strlen(text);
    size_t count = 1;
    for (size_t i = 0; i < len; i++) count += text[i] == ',';
    c->endpoint_text = sl_alloc(&c->mem, len + 1, SL_TIER_FIXED);
    c->endpoints = sl_alloc(&c->mem, count * sizeof *c->endpoints, SL_TIER_FIXED);
    if (c->endpoint_text == NULL || c->endpoints == NULL)
        return sl_seterr(c, SLUICE_ERR_NOMEM, "out of memory copying endpoints");
    memcpy(c->endpoint_text, text, len + 1);
    static char default_port[] = "7878";
    char *p = c->endpoint_text;
    size_t n = 0;
    while (p != NULL) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        while (*p == ' ') p++;
        char *end = p + strlen(p);
        while (end > p && end[-1] == ' ') *--end = '\0';
        char *host = p, *port = default_port;
        if (*p == '[') {
            char *close = strchr(p, ']');
            if (close == NULL) return sl_seterr(c, SLUICE_ERR_INVALID, "endpoint \"%s\": missing ']'", p);
            host = p + 1;
            *close = '\0';
            if (close[1] == ':') {
                port = close + 2;
            } else if (close[1] != '\0') {
                return sl_seterr(c, SLUICE_ERR_INVALID, "endpoint \"%s]%s\": expected ':port' after ']'", p, close + 1);
            }
        } else {
            char *colon = strrchr(p, ':');
            if (colon != NULL && strchr(p, ':') != colon)
                return sl_seterr(c, SLUICE_ERR_INVALID,
                                 "endpoint \"%s\": write IPv6 addresses in brackets, e.g. [::1]:7878", p);
            if (colon != NULL) {
                *colon = '\0';
                port = colon + 1;
            }
        }
        if (*host == '\0') return sl_seterr(c, SLUICE_ERR_INVALID, "endpoint %zu has no host", n + 1);
        char *q = port;
        long v = 0;
        for (; *q >= '0' && *q <= '9' && v <= 65535; q++) v = v * 10 + (*q - '0');
        if (*port == '\0' || *q != '\0' || v < 1 || v > 65535)
            return sl_seterr(c, SLUICE_ERR_INVALID, "endpoint \"%s\": port \"%s\" is not 1-65535", host, port);
        c->endpoints[n].host = host;
        c->endpoints[n].port = port;
        n++;
        p = comma ? comma + 1 : NULL;
    }
    c->n_endpoints = n;
    return SLUICE_OK;
}

static const char *ep_host(const sluice_client *c) {
    return c->n_endpoints ? c->endpoints[c->endpoint_current].host : "?";
}

static const char *ep_port(const sluice_client *c) {
    return c->n_endpoints ? c->endpoints[c->endpoint_current].port : "?";
}

/* ---- Connection lifecycle ------------------------------------------------------------------------- */

static uint32_t backoff_delay(sluice_client *c) {
    uint64_t d = c->cfg.reconnect_min_ms;
    for (uint32_t i = 0; i < c->backoff_attempt && d < c->cfg.reconnect_max_ms; i++) d *= 2;
    if (d > c->cfg.reconnect_max_ms) d = c->cfg.reconnect_max_ms;
    if (c->backoff_attempt < 32) c->backoff_attempt++;
    /* xorshift64: jitter spreads the reconnects of many devices after a server restart */
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return (uint32_t)(d / 2 + c->rng % (d / 2 + 1));
}

void sl_reset_tx_for_session(sluice_client *c) {
    c->hello_off = 0;
    c->tx_batch = NULL;
    c->tx_off = 0;
    c->ctrl_len = c->ctrl_off = 0;
    c->return_pending = 0; /* the credit it gave back is the old session's */
    c->return_readings = 0;
    c->pong_pending = 0;
    c->ping_due = 0;
    c->rx_len = 0;
    c->credit = 0;
    c->credit_requested = 0;
    c->srv_credit_requests = 0;
}

void sl_drop_connection(sluice_client *c, int delay_ms) {
    if (c->conn_open) c->tp.close(c->tp.ctx, c->conn);
    c->conn_open = 0;
    sl_reset_tx_for_session(c);
    if (c->state == SLUICE_STATE_FAILED) return;
    c->state = SLUICE_STATE_BACKOFF;
    uint32_t d = delay_ms >= 0 ? (uint32_t)delay_ms : backoff_delay(c);
    c->reconnect_at_ms = sl_now_ms(c) + d;
}

int sl_start_connect(sluice_client *c) {
    if (c->conn_open) sl_drop_connection(c, 0);
    c->endpoint_current = c->endpoint_next;
    c->endpoint_next = (c->endpoint_next + 1) % c->n_endpoints;
    const sl_endpoint *ep = &c->endpoints[c->endpoint_current];
    sl_reset_tx_for_session(c);
    sl_log(c, SLUICE_LOG_INFO, "connecting to %s:%s", ep->host, ep->port);
    c->terr[0] = '\0';
    if (c->tp.connect(c->tp.ctx, c->conn, ep->host, ep->port, c->terr, sizeof c->terr) != 0) {
        int rc = sl_seterr(c, SLUICE_ERR_CONNECT, "connect to %s:%s failed: %s", ep->host, ep->port,
                           c->terr[0] ? c->terr : "the transport refused");
        sl_drop_connection(c, -1);
        return rc;
    }
    c->conn_open = 1;
    c->state = SLUICE_STATE_CONNECTING;
    uint64_t now = sl_now_ms(c);
    c->deadline_ms = now + c->cfg.connect_timeout_ms;
    c->last_rx_ms = c->last_tx_ms = now;
    return SLUICE_OK;
}

/* ---- Writing -------------------------------------------------------------------------------------- */

/* Writes as much of [p, p+n) as the transport takes. Returns bytes written, or -1 after dropping. */
static long write_some(sluice_client *c, const uint8_t *p, size_t n, int *rc) {
    c->terr[0] = '\0';
    long w = c->tp.send(c->tp.ctx, c->conn, p, n, c->terr, sizeof c->terr);
    if (w > 0) {
        c->last_tx_ms = sl_now_ms(c);
        c->progress++;
        return w;
    }
    if (w == 0) return 0;
    if (c->state == SLUICE_STATE_CONNECTING && c->hello_off == 0) {
        *rc = sl_seterr(c, SLUICE_ERR_CONNECT, "connect to %s:%s failed: %s", ep_host(c), ep_port(c), c->terr);
    } else {
        *rc = sl_seterr(c, SLUICE_ERR_IO, "connection to %s:%s lost while writing: %s", ep_host(c), ep_port(c),
                        c->terr);
    }
    sl_drop_connection(c, -1);
    return -1;
}

static uint64_t batch_readings_limit(const sluice_client *c) {
    uint64_t lim = c->cfg.max_batch_readings;
    if (c->srv_max_batch_readings != 0 && c->srv_max_batch_readings < lim) lim = c->srv_max_batch_readings;
    if (c->credit < lim) lim = c->credit;
    return lim;
}

static size_t batch_bytes_limit(const sluice_client *c) {
    size_t lim = c->cfg.max_batch_bytes;
    if (c->srv_max_frame_bytes != 0 && c->srv_max_frame_bytes < lim) lim = c->srv_max_frame_bytes;
    return lim;
}

/* Out of credit for the next batch, which needs `need` readings: with a server that reads CreditRequest,
   queues one (in the control frame slot, free at a frame boundary) unless this need was asked for already
   (credit_requested; a CreditRecall that takes credit back clears it, so a need is asked for again).
   Returns 1 when a request was queued (write it), 0 otherwise. */
static int ask_for_credit(sluice_client *c, uint64_t need) {
    if (!c->srv_credit_requests || need <= c->credit || need == c->credit_requested) return 0;
    if (c->srv_max_batch_readings != 0 && need > c->srv_max_batch_readings) return 0; /* the server would refuse it */
    c->ctrl_len = sl_encode_credit_request(c->ctrl, need);
    c->ctrl_off = 0;
    c->credit_requested = need;
    return 1;
}

/* Writes what may be written now: the preface and Hello, then control frames and batches at frame
   boundaries, each batch only once credit covers it. Seals new batches from the queue as credit allows. */
static int flush_tx(sluice_client *c) {
    int rc = SLUICE_OK;
    while (c->conn_open && !c->close_deferred) {
        if (c->hello_off < c->hello_len) {
            long w = write_some(c, c->hello + c->hello_off, c->hello_len - c->hello_off, &rc);
            if (w <= 0) return rc;
            c->hello_off += (size_t)w;
            continue;
        }
        if (c->state == SLUICE_STATE_CONNECTING) return rc; /* waiting for Welcome */
        if (c->ctrl_off < c->ctrl_len) {
            long w = write_some(c, c->ctrl + c->ctrl_off, c->ctrl_len - c->ctrl_off, &rc);
            if (w <= 0) return rc;
            c->ctrl_off += (size_t)w;
            continue;
        }
        if (c->tx_batch != NULL && c->tx_off > 0) {
            sl_batch *b = c->tx_batch;
            long w = write_some(c, b->buf + b->off + c->tx_off - 1, b->len - (c->tx_off - 1), &rc);
            if (w <= 0) return rc;
            c->tx_off += (size_t)w;
            if (c->tx_off - 1 == b->len) {
                c->st.wire_bytes += b->len;
                c->tx_batch = b->next;
                c->tx_off = 0;
            }
            continue;
        }
        /* At a frame boundary. A CreditReturn first: no batch may start ahead of it. */
        if (c->return_pending) {
            c->ctrl_len = sl_encode_credit_return(c->ctrl, c->return_readings);
            c->ctrl_off = 0;
            c->return_pending = 0;
            c->return_readings = 0;
            continue;
        }
        if (c->pong_pending) {
            c->ctrl_len = sl_encode_ping_pong(c->ctrl, 1, c->pong_nonce);
            c->ctrl_off = 0;
            c->pong_pending = 0;
            continue;
        }
        if (c->ping_due) {
            c->ctrl_len = sl_encode_ping_pong(c->ctrl, 0, ++c->ping_nonce);
            c->ctrl_off = 0;
            c->ping_due = 0;
            continue;
        }
        if (c->state != SLUICE_STATE_READY) return rc; /* draining: no new batches */
        if (c->tx_batch != NULL) {
            sl_batch *b = c->tx_batch;
            if (c->credit < b->readings) {
                if (!c->credit_stalled) c->st.credit_stalls++;
                c->credit_stalled = 1;
                /* a batch sealed on an earlier session is resent whole: ask for what it needs */
                if (ask_for_credit(c, b->readings)) continue;
                return rc;
            }
            /* kept in storage before its first byte goes out (store hooks) */
            int src = sl_store_put(c, b);
            if (src == 1) return rc;
            if (src != SLUICE_OK) return src;
            c->credit -= b->readings;
            c->credit_stalled = 0;
            c->credit_requested = 0;
            if (b->sends++ > 0) c->st.resent_batches++;
            c->tx_off = 1; /* tx_off - 1 bytes written: 0 means "not started" */
            continue;
        }
        if (c->queue.readings == 0) return rc;
        uint64_t lim = batch_readings_limit(c);
        if (lim == 0) {
            if (!c->credit_stalled) c->st.credit_stalls++;
            c->credit_stalled = 1;
            /* ask for a whole batch of what is queued */
            uint64_t want = c->cfg.max_batch_readings;
            if (c->srv_max_batch_readings != 0 && c->srv_max_batch_readings < want) want = c->srv_max_batch_readings;
            if (c->queue.readings < want) want = c->queue.readings;
            if (ask_for_credit(c, want)) continue;
            return rc;
        }
        if (c->next_seq == 0) {
            return sl_seterr(c, SLUICE_ERR_STATE,
                             "every seq up to 2^64-1 is used: no further batch can be sent as this producer_id");
        }
        /* The seq must be durably reserved before a batch carrying it exists (seq_store hook). */
        int prc = sl_seq_reserve(c, sl_now_ms(c));
        if (prc == 1) return rc;
        if (prc != SLUICE_OK) return prc;
        sl_encode_limits el = {lim, batch_bytes_limit(c)};
        sl_batch *b = NULL;
        int erc = sl_encode_batch(&c->mem, &c->queue, c->next_seq, el, &c->cctx, c->cfg.compression_level, &b);
        if (erc == SLUICE_ERR_FULL) return rc; /* acks will free memory */
        if (erc != SLUICE_OK) {
            return sl_seterr(c, erc, "could not encode a batch of up to %llu readings: %s", (unsigned long long)lim,
                             erc == SLUICE_ERR_NOMEM ? "the allocator returned NULL" : "nothing fits max_batch_bytes");
        }
        b->stored = 0;
        c->next_seq++;
        c->st.last_seq = b->seq;
        if (b->compressed) c->st.batches_compressed++;
        if (c->unacked_tail) {
            c->unacked_tail->next = b;
        } else {
            c->unacked_head = b;
        }
        c->unacked_tail = b;
        c->unacked_batches++;
        c->unacked_readings += b->readings;
        c->tx_batch = b;
    }
    return rc;
}

/* ---- Reading -------------------------------------------------------------------------------------- */

static int parse_frames(sluice_client *c) {
    size_t off = 0;
    int rc = SLUICE_OK;
    while (c->rx_len - off >= 5) {
        uint8_t flags = c->rx[off];
        uint32_t len = sl_get_be32(c->rx + off + 1);
        if (flags & ~1u) {
            rc = sl_seterr(c, SLUICE_ERR_PROTOCOL,
                           "server frame flags 0x%02x use reserved bits (only bit 0, zstd, is defined)", flags);
            sl_drop_connection(c, -1);
            return rc;
        }
        if (len > c->cfg.max_server_frame_bytes) {
            rc = sl_seterr(c, SLUICE_ERR_FRAME_TOO_LARGE,
                           "server frame length %u bytes is above max_server_frame_bytes (%u)", len,
                           c->cfg.max_server_frame_bytes);
            sl_drop_connection(c, -1);
            return rc;
        }
        if (c->rx_len - off - 5 < len) break;
        c->progress++;
        int r = sl_handle_frame(c, flags, c->rx + off + 5, len);
        if (r != SLUICE_OK && rc == SLUICE_OK) rc = r;
        if (!c->conn_open || c->close_deferred) return rc; /* the frame ended the connection, or a callback the handle */
        off += 5 + (size_t)len;
    }
    if (off > 0) {
        memmove(c->rx, c->rx + off, c->rx_len - off);
        c->rx_len -= off;
    }
    return rc;
}

static int on_eof(sluice_client *c) {
    int rc = SLUICE_OK;
    if (c->state == SLUICE_STATE_DRAINING && c->rx_len == 0) {
        /* the server finished draining, as GoAway announced */
        uint64_t d = c->goaway_delay_ms > 600000 ? 600000 : c->goaway_delay_ms;
        sl_drop_connection(c, (int)d);
        return rc;
    }
    if (c->rx_len == 0) {
        rc = sl_seterr(c, c->state == SLUICE_STATE_CONNECTING ? SLUICE_ERR_CONNECT : SLUICE_ERR_IO,
                       "connection to %s:%s closed by the server%s", ep_host(c), ep_port(c),
                       c->state == SLUICE_STATE_CONNECTING ? " during the handshake" : "");
    } else if (c->rx_len < 5) {
        rc = sl_seterr(c, SLUICE_ERR_IO, "connection to %s:%s closed in the middle of a frame prefix (%zu of 5 bytes)",
                       ep_host(c), ep_port(c), c->rx_len);
    } else {
        rc = sl_seterr(c, SLUICE_ERR_IO,
                       "connection to %s:%s closed in the middle of a frame: %zu of %u payload bytes received",
                       ep_host(c), ep_port(c), c->rx_len - 5, sl_get_be32(c->rx + 1));
    }
    sl_drop_connection(c, -1);
    return rc;
}

static int read_some(sluice_client *c) {
    int rc = SLUICE_OK;
    while (c->conn_open && !c->close_deferred) {
        c->terr[0] = '\0';
        long r = c->tp.recv(c->tp.ctx, c->conn, c->rx + c->rx_len, c->rx_cap - c->rx_len, c->terr, sizeof c->terr);
        if (r > 0) {
            c->rx_len += (size_t)r;
            c->last_rx_ms = sl_now_ms(c);
            int p = parse_frames(c);
            if (p != SLUICE_OK && rc == SLUICE_OK) rc = p;
            continue;
        }
        if (r == 0) return rc;
        if (r == SLUICE_TRANSPORT_CLOSED) {
            int e = on_eof(c);
            return rc != SLUICE_OK ? rc : e;
        }
        int e = c->state == SLUICE_STATE_CONNECTING
                    ? sl_seterr(c, SLUICE_ERR_CONNECT, "connect to %s:%s failed: %s", ep_host(c), ep_port(c), c->terr)
                    : sl_seterr(c, SLUICE_ERR_IO, "connection to %s:%s lost: %s", ep_host(c), ep_port(c), c->terr);
        sl_drop_connection(c, -1);
        return rc != SLUICE_OK ? rc : e;
    }
    return rc;
}

/* ---- Timers and the pump -------------------------------------------------------------------------- */

static int run_timers(sluice_client *c, uint64_t now) {
    int rc = SLUICE_OK;
    switch (c->state) {
    case SLUICE_STATE_BACKOFF:
        if (now >= c->reconnect_at_ms) rc = sl_start_connect(c);
        break;
    case SLUICE_STATE_CONNECTING:
        if (now >= c->deadline_ms) {
            rc = sl_seterr(c, SLUICE_ERR_CONNECT, "connecting to %s:%s timed out after %u ms", ep_host(c), ep_port(c),
                           c->cfg.connect_timeout_ms);
            sl_drop_connection(c, -1);
        }
        break;
    case SLUICE_STATE_DRAINING:
        if (c->unacked_head == c->tx_batch && c->tx_off == 0) {
            /* every batch written on this connection is acked: leave as GoAway asked */
            uint64_t d = c->goaway_delay_ms > 600000 ? 600000 : c->goaway_delay_ms;
            sl_drop_connection(c, (int)d);
            break;
        }
        if (now >= c->deadline_ms) {
            rc = sl_seterr(c, SLUICE_ERR_IO, "server %s:%s sent GoAway but did not ack within %u ms", ep_host(c),
                           ep_port(c), c->cfg.io_timeout_ms);
            sl_drop_connection(c, -1);
            break;
        }
        /* heartbeats still apply */
        /* fall through */
    case SLUICE_STATE_READY:
        if (c->heartbeat_ms != 0) {
            if (now - c->last_rx_ms >= 3ull * c->heartbeat_ms) {
                rc = sl_seterr(c, SLUICE_ERR_IO, "server %s:%s silent for %llu ms (3 heartbeat intervals)", ep_host(c),
                               ep_port(c), (unsigned long long)(now - c->last_rx_ms));
                sl_drop_connection(c, -1);
            } else if (now - c->last_tx_ms >= c->heartbeat_ms) {
                c->ping_due = 1;
            }
        }
        break;
    default:
        break;
    }
    return rc;
}

/* Milliseconds until run_timers has something to do; -1 if nothing is scheduled. */
static int64_t next_timer(const sluice_client *c, uint64_t now) {
    uint64_t at = 0;
    switch (c->state) {
    case SLUICE_STATE_BACKOFF:
        at = c->reconnect_at_ms;
        break;
    case SLUICE_STATE_CONNECTING:
        at = c->deadline_ms;
        break;
    case SLUICE_STATE_DRAINING:
    case SLUICE_STATE_READY:
        if (c->state == SLUICE_STATE_DRAINING) at = c->deadline_ms;
        if (c->heartbeat_ms != 0) {
            uint64_t dead = c->last_rx_ms + 3ull * c->heartbeat_ms;
            uint64_t ping = c->last_tx_ms + c->heartbeat_ms;
            uint64_t h = dead < ping ? dead : ping;
            if (at == 0 || h < at) at = h;
        }
        /* a failed seq_store is retried when its time comes, if there is something to seal */
        if (c->state == SLUICE_STATE_READY && c->queue.readings > 0 && sl_seq_waiting(c, now) &&
            (at == 0 || c->seq_retry_at_ms < at))
            at = c->seq_retry_at_ms;
        if (c->state == SLUICE_STATE_READY && sl_store_waiting(c, now) && (at == 0 || c->store_retry_at_ms < at))
            at = c->store_retry_at_ms;
        if (at == 0) return -1;
        break;
    default:
        return -1;
    }
    return at <= now ? 0 : (int64_t)(at - now);
}

int sluice_timeout_ms(const sluice_client *c) {
    if (c == NULL) return -1;
    int64_t t = next_timer(c, sl_now_ms(c));
    return t > 0x7fffffff ? 0x7fffffff : (int)t;
}

static int wants_write(const sluice_client *c) {
    if (!c->conn_open) return 0;
    if (c->hello_off < c->hello_len) return 1;
    if (c->state == SLUICE_STATE_CONNECTING) return 0;
    if (c->ctrl_off < c->ctrl_len || c->return_pending || c->pong_pending || c->ping_due || c->tx_off > 0) return 1;
    if (c->state != SLUICE_STATE_READY) return 0;
    if (c->tx_batch != NULL) {
        uint64_t need = c->tx_batch->readings;
        if (sl_store_waiting(c, sl_now_ms(c))) return 0;
        return c->credit >= need || (c->srv_credit_requests && need != c->credit_requested &&
                                     (c->srv_max_batch_readings == 0 || need <= c->srv_max_batch_readings));
    }
    if (c->queue.readings > 0 && c->credit == 0 && c->srv_credit_requests && c->credit_requested == 0) return 1;
    return c->queue.readings > 0 && c->credit > 0 && !sl_seq_waiting(c, sl_now_ms(c));
}

int sluice_fd(const sluice_client *c) {
    if (c == NULL || !c->conn_open || c->tp.fd == NULL) return -1;
    return c->tp.fd(c->tp.ctx, c->conn);
}

static int want_events(const sluice_client *c) {
    int ev = SLUICE_WANT_READ;
    if (wants_write(c)) ev |= SLUICE_WANT_WRITE;
    return ev;
}

int sluice_events(const sluice_client *c) {
    if (c == NULL || !c->conn_open) return 0;
    int ev = want_events(c);
    return c->tp.events != NULL ? c->tp.events(c->tp.ctx, c->conn, ev) : ev;
}

static void keep_first(int *rc, int r) {
    if (*rc == SLUICE_OK && r != SLUICE_OK) *rc = r;
}

int sl_pump(sluice_client *c, int timeout_ms) {
    int rc = SLUICE_OK;
    if (c->close_deferred) return SLUICE_ERR_STATE;
    uint64_t now = sl_now_ms(c);
    uint64_t progress = c->progress;
    keep_first(&rc, run_timers(c, now));
    if (c->conn_open) keep_first(&rc, flush_tx(c));

    int64_t wait = next_timer(c, sl_now_ms(c));
    if (timeout_ms >= 0 && (wait < 0 || wait > timeout_ms)) wait = timeout_ms;
    if (wait < 0) wait = 0; /* no timer and "wait forever" is not offered: callers pass a timeout */
    if (rc != SLUICE_OK || c->progress != progress) wait = 0;

    if (c->conn_open) {
        int ready = c->tp.wait(c->tp.ctx, c->conn, want_events(c), (int)wait);
        if (ready > 0 && (ready & SLUICE_WANT_READ)) keep_first(&rc, read_some(c));
        if (c->close_deferred) return rc;
        if (c->conn_open) keep_first(&rc, flush_tx(c));
    } else if (wait > 0) {
        c->tp.wait(c->tp.ctx, NULL, 0, (int)wait);
    }
    keep_first(&rc, run_timers(c, sl_now_ms(c)));
    if (c->conn_open) keep_first(&rc, flush_tx(c));
    return rc;
}
