/* Store-and-forward in one file: a bounded ring of batch records (POSIX). Left out with -DSLUICE_NO_POSIX.

   Layout: two 64-byte header slots (the one with the valid CRC and the higher counter wins, so a torn header
   write leaves the other), then `capacity` bytes of ring. Positions are 64-bit and only grow; a record at
   position p lives at 128 + p % capacity and never straddles the end (a WRAP record, or too little room for
   a record header, sends the reader to the next lap). Each record header holds its own position, so stale
   records of an earlier lap are not mistaken for new ones; its CRC-32 covers the header fields and the
   frame, so a torn write ends the log just before it. The header's tail (oldest kept record) is written when
   it advances and synced before the space behind it is reused: a reader starting there always finds whole
   records. */
#ifndef SLUICE_NO_POSIX
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define HDR_SLOT 64
#define DATA_OFF 128
#define REC_HDR 40
#define MAGIC_HDR 0x534c4831u /* "SLH1" */
#define MAGIC_REC 0x534c5231u /* "SLR1" */
#define MAGIC_WRAP 0x534c5257u /* "SLRW" */
#define DEAD_AT 36            /* offset of the tombstone byte in a record header (outside the CRC) */
#define MAX SLUICE_STORE_FILE_MAX_BATCHES

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? -errno : -EIO;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* 0: all read; 1: the file ends first; -errno. */
static int pread_all(int fd, void *buf, size_t n, uint64_t off) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) return 1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static uint64_t phys(const sluice_store_file *s, uint64_t pos) {
    return DATA_OFF + pos % s->capacity;
}

/* The start of the lap after the one `pos` is in. */
static uint64_t next_lap(const sluice_store_file *s, uint64_t pos) {
    return pos - pos % s->capacity + s->capacity;
}

static int write_header(sluice_store_file *s, int sync) {
    uint8_t h[HDR_SLOT];
    memset(h, 0, sizeof h);
    s->counter++;
    put32(h, MAGIC_HDR);
    put32(h + 4, s->counter);
    put64(h + 8, s->capacity);
    put64(h + 16, s->tail);
    put32(h + 24, crc32_update(0, h, 24));
    int rc = pwrite_all(s->fd, h, sizeof h, (s->counter & 1u) * HDR_SLOT);
    if (rc == 0 && sync && fdatasync(s->fd) != 0) rc = -errno;
    if (rc == 0 && sync) s->tail_synced = s->tail;
    return rc;
}

static int read_header(const sluice_store_file *s, int slot, uint32_t *counter, uint64_t *cap, uint64_t *tail) {
    uint8_t h[HDR_SLOT];
    if (pread_all(s->fd, h, sizeof h, (uint64_t)slot * HDR_SLOT) != 0) return -1;
    if (get32(h) != MAGIC_HDR || get32(h + 24) != crc32_update(0, h, 24)) return -1;
    *counter = get32(h + 4);
    *cap = get64(h + 8);
    *tail = get64(h + 16);
    return 0;
}

/* Checks the record at `pos`: 1 record (header in h), 2 wrap marker, 0 end of the log, -errno. */
static int check_record(sluice_store_file *s, uint64_t pos, uint8_t h[REC_HDR]) {
    if (s->capacity - pos % s->capacity < REC_HDR) return 2;
    int rc = pread_all(s->fd, h, REC_HDR, phys(s, pos));
    if (rc < 0) return rc;
    if (rc == 1 || get64(h + 8) != pos) return 0;
    if (get32(h) == MAGIC_WRAP) return get32(h + 4) == crc32_update(0, h + 8, 8) ? 2 : 0;
    if (get32(h) != MAGIC_REC) return 0;
    uint32_t len = get32(h + 28);
    if (len > s->capacity - pos % s->capacity - REC_HDR) return 0;
    uint32_t crc = crc32_update(0, h + 8, 24);
    uint8_t buf[256];
    for (uint32_t done = 0; done < len;) {
        uint32_t k = len - done < sizeof buf ? len - done : (uint32_t)sizeof buf;
        rc = pread_all(s->fd, buf, k, phys(s, pos) + REC_HDR + done);
        if (rc < 0) return rc;
        if (rc == 1) return 0;
        crc = crc32_update(crc, buf, k);
        done += k;
    }
    return crc == get32(h + 4) ? 1 : 0;
}

int sluice_store_file_open(sluice_store_file *s, const char *path, uint64_t capacity, int fsync_policy) {
    if (s == NULL || path == NULL) return -EINVAL;
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->fsync_policy = fsync_policy;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    s->fd = fd;
    uint32_t c0 = 0, c1 = 0;
    uint64_t cap0 = 0, cap1 = 0, t0 = 0, t1 = 0;
    int ok0 = read_header(s, 0, &c0, &cap0, &t0) == 0;
    int ok1 = read_header(s, 1, &c1, &cap1, &t1) == 0;
    if (!ok0 && !ok1) {
        struct stat st;
        if (fstat(fd, &st) != 0 || st.st_size > 0) {
            /* something is there, but neither header: not ours (or both torn, which one write cannot do) */
            close(fd);
            s->fd = -1;
            return -EINVAL;
        }
        if (capacity < (64u << 10)) {
            close(fd);
            s->fd = -1;
            return -ENOSPC;
        }
        s->capacity = capacity;
        int rc = write_header(s, 1);
        if (rc != 0) {
            close(fd);
            s->fd = -1;
        }
        return rc;
    }
    int use1 = ok1 && (!ok0 || (int32_t)(c1 - c0) > 0);
    s->counter = use1 ? c1 : c0;
    s->capacity = use1 ? cap1 : cap0;
    s->tail = s->tail_synced = use1 ? t1 : t0;
    if (s->capacity < (64u << 10)) {
        close(fd);
        s->fd = -1;
        return -EINVAL;
    }
    /* Recovery: walk the records from the tail until the log ends (a torn or stale record). */
    uint64_t pos = s->tail;
    uint64_t last_seq = 0;
    for (;;) {
        uint8_t h[REC_HDR];
        int r = check_record(s, pos, h);
        if (r < 0) {
            close(fd);
            s->fd = -1;
            return r;
        }
        if (r == 0) break;
        if (r == 2) {
            pos = next_lap(s, pos);
            continue;
        }
        uint64_t seq = get64(h + 16);
        if (seq <= last_seq || s->n == MAX) break; /* seqs only rise: anything else is not this log's */
        last_seq = seq;
        unsigned i = (s->first + s->n) % MAX;
        s->idx[i].seq = seq;
        s->idx[i].pos = pos;
        s->idx[i].readings = get32(h + 24);
        s->idx[i].len = get32(h + 28);
        s->idx[i].live = h[DEAD_AT] == 0;
        s->n++;
        pos += REC_HDR + s->idx[i].len;
    }
    s->head = pos;
    /* drop dead records at the front */
    while (s->n > 0 && !s->idx[s->first].live) {
        s->first = (s->first + 1) % MAX;
        s->n--;
    }
    s->tail = s->n > 0 ? s->idx[s->first].pos : s->head;
    return 0;
}

void sluice_store_file_close(sluice_store_file *s) {
    if (s == NULL || s->fd < 0) return;
    if (s->tail != s->tail_synced) write_header(s, 1);
    close(s->fd);
    s->fd = -1;
}

void sluice_config_store_file(sluice_config *cfg, sluice_store_file *s) {
    if (cfg == NULL) return;
    cfg->store_put = sluice_store_file_put;
    cfg->store_remove = sluice_store_file_remove;
    cfg->store_next = sluice_store_file_next;
    cfg->store_read = sluice_store_file_read;
    cfg->store_user = s;
}

int sluice_store_file_put(void *user, uint64_t seq, uint32_t readings, const uint8_t *frame, size_t len) {
    sluice_store_file *s = user;
    if (s == NULL || s->fd < 0) return -EBADF;
    if (s->n == MAX) return -ENOSPC;
    if (len > s->capacity - REC_HDR) return -EFBIG;
    uint64_t pos = s->head;
    uint64_t room = s->capacity - pos % s->capacity;
    int wrap = room < REC_HDR + len;
    uint64_t at = wrap ? next_lap(s, pos) : pos;
    uint64_t end = at + REC_HDR + len;
    /* never over a kept record; over records the synced header still points at only once it is synced */
    uint64_t tail = s->n > 0 ? s->tail : at;
    if (end - tail > s->capacity) return -ENOSPC;
    int rc;
    if (end - s->tail_synced > s->capacity) {
        s->tail = tail;
        if ((rc = write_header(s, 1)) != 0) return rc;
    }
    uint8_t h[REC_HDR];
    if (wrap && room >= REC_HDR) {
        memset(h, 0, sizeof h);
        put32(h, MAGIC_WRAP);
        put64(h + 8, pos);
        put32(h + 4, crc32_update(0, h + 8, 8));
        if ((rc = pwrite_all(s->fd, h, REC_HDR, phys(s, pos))) != 0) return rc;
    }
    memset(h, 0, sizeof h);
    put32(h, MAGIC_REC);
    put64(h + 8, at);
    put64(h + 16, seq);
    put32(h + 24, readings);
    put32(h + 28, (uint32_t)len);
    put32(h + 4, crc32_update(crc32_update(0, h + 8, 24), frame, len));
    if ((rc = pwrite_all(s->fd, h, REC_HDR, phys(s, at))) != 0) return rc;
    if ((rc = pwrite_all(s->fd, frame, len, phys(s, at) + REC_HDR)) != 0) return rc;
    if (s->fsync_policy == SLUICE_FSYNC_EVERY_BATCH && fdatasync(s->fd) != 0) return -errno;
    unsigned i = (s->first + s->n) % MAX;
    s->idx[i].seq = seq;
    s->idx[i].pos = at;
    s->idx[i].readings = readings;
    s->idx[i].len = (uint32_t)len;
    s->idx[i].live = 1;
    if (s->n == 0) s->tail = at;
    s->n++;
    s->head = end;
    return 0;
}

int sluice_store_file_remove(void *user, uint64_t seq) {
    sluice_store_file *s = user;
    if (s == NULL || s->fd < 0) return -EBADF;
    for (unsigned k = 0; k < s->n; k++) {
        unsigned i = (s->first + k) % MAX;
        if (s->idx[i].seq != seq || !s->idx[i].live) continue;
        s->idx[i].live = 0;
        uint8_t dead = 1;
        int rc = pwrite_all(s->fd, &dead, 1, phys(s, s->idx[i].pos) + DEAD_AT);
        if (k == 0) {
            while (s->n > 0 && !s->idx[s->first].live) {
                s->first = (s->first + 1) % MAX;
                s->n--;
            }
            s->tail = s->n > 0 ? s->idx[s->first].pos : s->head;
            int h = write_header(s, 0); /* synced before its space is reused (put) */
            if (rc == 0) rc = h;
        }
        return rc;
    }
    return 0;
}

int sluice_store_file_next(void *user, uint64_t after, uint64_t *seq, uint32_t *readings, size_t *len) {
    sluice_store_file *s = user;
    if (s == NULL || s->fd < 0) return -EBADF;
    for (unsigned k = 0; k < s->n; k++) {
        unsigned i = (s->first + k) % MAX;
        if (!s->idx[i].live || s->idx[i].seq <= after) continue;
        *seq = s->idx[i].seq;
        *readings = s->idx[i].readings;
        *len = s->idx[i].len;
        return 0;
    }
    return 1;
}

int sluice_store_file_read(void *user, uint64_t seq, uint8_t *buf, size_t len) {
    sluice_store_file *s = user;
    if (s == NULL || s->fd < 0) return -EBADF;
    for (unsigned k = 0; k < s->n; k++) {
        unsigned i = (s->first + k) % MAX;
        if (s->idx[i].seq != seq || !s->idx[i].live) continue;
        if (len != s->idx[i].len) return -EINVAL;
        int rc = pread_all(s->fd, buf, len, phys(s, s->idx[i].pos) + REC_HDR);
        return rc == 1 ? -EIO : rc;
    }
    return -ENOENT;
}
#else
typedef int sl_no_store_file; /* ISO C wants something in a translation unit */
#endif
