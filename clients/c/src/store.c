/* Store-and-forward: the library's side of the store hooks (keeping sealed batches until acked, and
   loading them back at create). */
#include <string.h>

#include "internal.h"

#define SL_STORE_RETRY_MS 1000

int sl_store_load(sluice_client *c) {
    if (c->cfg.store_next == NULL) return SLUICE_OK;
    uint64_t after = 0;
    for (;;) {
        uint64_t seq = 0;
        uint32_t readings = 0;
        size_t len = 0;
        int r = c->cfg.store_next(c->cfg.store_user, after, &seq, &readings, &len);
        if (r == 1) break;
        if (r != 0 || seq <= after || len < 5) {
            return sl_seterr(c, SLUICE_ERR_PERSIST,
                             "config.store_next failed (returned %d after seq %llu): the kept batches cannot be "
                             "loaded, and starting without them would lose their readings",
                             r, (unsigned long long)after);
        }
        sl_batch *b = sl_alloc(&c->mem, sizeof *b, SL_TIER_SEAL);
        uint8_t *buf = b ? sl_alloc(&c->mem, len, SL_TIER_SEAL) : NULL;
        if (buf == NULL) {
            sl_free(&c->mem, b);
            return sl_seterr(c, c->mem.last_refusal == 2 ? SLUICE_ERR_NOMEM : SLUICE_ERR_INVALID,
                             "no room within memory_limit for the kept batch %llu (%zu bytes) after %llu loaded: "
                             "raise memory_limit",
                             (unsigned long long)seq, len, (unsigned long long)c->unacked_batches);
        }
        memset(b, 0, sizeof *b);
        b->buf = buf;
        b->len = len;
        b->seq = seq;
        b->readings = readings;
        b->sends = 1; /* it went out in an earlier life (or may have) */
        b->stored = 1;
        if (c->cfg.store_read(c->cfg.store_user, seq, buf, len) != 0 || buf[0] > 1 || sl_get_be32(buf + 1) != len - 5) {
            sl_batch_free(&c->mem, b);
            return sl_seterr(c, SLUICE_ERR_PERSIST, "config.store_read failed or gave a damaged frame for batch %llu",
                             (unsigned long long)seq);
        }
        if (c->unacked_tail) {
            c->unacked_tail->next = b;
        } else {
            c->unacked_head = b;
        }
        c->unacked_tail = b;
        c->unacked_batches++;
        c->unacked_readings += readings;
        c->st.batches_restored++;
        if (seq >= c->next_seq) c->next_seq = seq + 1;
        if (seq > c->st.last_seq) c->st.last_seq = seq;
        after = seq;
    }
    if (c->st.batches_restored > 0) {
        sl_log(c, SLUICE_LOG_INFO, "%llu kept batches (%llu readings) loaded for resending, next seq %llu",
               (unsigned long long)c->st.batches_restored, (unsigned long long)c->unacked_readings,
               (unsigned long long)c->next_seq);
    }
    return SLUICE_OK;
}

int sl_store_waiting(const sluice_client *c, uint64_t now_ms) {
    return c->cfg.store_put != NULL && c->tx_batch != NULL && !c->tx_batch->stored && c->store_retry_at_ms != 0 &&
           now_ms < c->store_retry_at_ms;
}

int sl_store_put(sluice_client *c, sl_batch *b) {
    if (b->stored || c->cfg.store_put == NULL) {
        b->stored = 1;
        return SLUICE_OK;
    }
    uint64_t now = sl_now_ms(c);
    if (c->store_retry_at_ms != 0 && now < c->store_retry_at_ms) return 1;
    int r = c->cfg.store_put(c->cfg.store_user, b->seq, b->readings, b->buf + b->off, b->len);
    if (r != 0) {
        c->store_retry_at_ms = now + SL_STORE_RETRY_MS;
        return sl_seterr(c, SLUICE_ERR_PERSIST,
                         "config.store_put failed (returned %d) keeping batch %llu (%u readings, %zu bytes): it is "
                         "not sent until it is kept (retried after the next ack, or in %d ms)",
                         r, (unsigned long long)b->seq, b->readings, b->len, SL_STORE_RETRY_MS);
    }
    c->store_retry_at_ms = 0;
    c->st.store_puts++;
    b->stored = 1;
    return SLUICE_OK;
}

void sl_store_remove(sluice_client *c, const sl_batch *b) {
    if (c->cfg.store_remove == NULL || !b->stored) return;
    int r = c->cfg.store_remove(c->cfg.store_user, b->seq);
    if (r != 0) {
        sl_log(c, SLUICE_LOG_WARN, "config.store_remove failed (returned %d) for acked batch %llu: it may be resent once "
               "after a restart (acked as a duplicate)", r, (unsigned long long)b->seq);
    }
    c->store_retry_at_ms = 0; /* storage was freed: a waiting put may fit now */
}
