/* Counted allocation: every byte goes through the caller's hooks (or malloc) and against the ceiling. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Each allocation carries its size in front, since protobuf-c's and zstd's free callbacks do not pass it.
   16 bytes keep the user pointer aligned like malloc's. */
#define SL_HEADER 16

static void *default_malloc(void *opaque, size_t n) {
    (void)opaque;
    return malloc(n);
}

static void default_free(void *opaque, void *p) {
    (void)opaque;
    free(p);
}

void sl_mem_init(sl_mem *m, const sluice_allocator *a) {
    memset(m, 0, sizeof *m);
    if (a != NULL && a->malloc_fn != NULL && a->free_fn != NULL) {
        m->a = *a;
    } else {
        m->a.malloc_fn = default_malloc;
        m->a.free_fn = default_free;
        m->a.opaque = NULL;
    }
    m->limit = SIZE_MAX;
    for (int i = 0; i < 4; i++) m->tier_limit[i] = SIZE_MAX;
}

void *sl_alloc(sl_mem *m, size_t n, int tier) {
    if (n > SIZE_MAX - SL_HEADER) {
        m->last_refusal = 1;
        return NULL;
    }
    size_t total = n + SL_HEADER;
    size_t cap = m->tier_limit[tier];
    if (m->live > cap || total > cap - m->live) {
        m->last_refusal = 1;
        return NULL;
    }
    unsigned char *p = m->a.malloc_fn(m->a.opaque, total);
    if (p == NULL) {
        m->last_refusal = 2;
        return NULL;
    }
    memcpy(p, &total, sizeof total);
    m->live += total;
    if (m->live > m->peak) m->peak = m->live;
    return p + SL_HEADER;
}

void sl_free(sl_mem *m, void *p) {
    if (p == NULL) return;
    unsigned char *base = (unsigned char *)p - SL_HEADER;
    size_t total;
    memcpy(&total, base, sizeof total);
    m->live -= total;
    m->a.free_fn(m->a.opaque, base);
}

static void *pc_alloc(void *data, size_t n) {
    sl_mem *m = data;
    return sl_alloc(m, n, m->tier);
}

static void pc_free(void *data, void *p) {
    sl_free(data, p);
}

ProtobufCAllocator sl_protobuf_allocator(sl_mem *m) {
    ProtobufCAllocator a = {pc_alloc, pc_free, m};
    return a;
}
