/* Seq persistence: reserving seqs in blocks through the seq_load/seq_store hooks before a batch uses
   them, and the ready-made hooks that keep the next seq in a file (POSIX). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h> /* rename */
#include <string.h>
#include <unistd.h>

#include "internal.h"

static int file_hooks(const sluice_client *c) {
    return c->cfg.seq_store == sluice_seq_file_store && c->cfg.seq_load == sluice_seq_file_load &&
           c->cfg.seq_user != NULL;
}

/* A file hook's failure in words (they return -errno); NULL for other hooks, whose codes are their own. */
static const char *file_reason(const sluice_client *c, int rc, int loading) {
    if (!file_hooks(c) || rc >= 0) return NULL;
    if (rc == -EINVAL && loading) return "it does not hold a seq (one decimal number >= 1)";
    return strerror(-rc);
}

int sl_seq_load(sluice_client *c) {
    c->seq_reserved_below = UINT64_MAX;
    c->seq_retry_at_ms = 0;
    if (c->cfg.seq_load == NULL) return SLUICE_OK;
    uint64_t stored = 0;
    int rc = c->cfg.seq_load(c->cfg.seq_user, &stored);
    if (rc == 0 && stored == 0) {
        return sl_seterr(c, SLUICE_ERR_PERSIST,
                         "config.seq_load gave next seq 0, but seqs start at 1: the stored value is corrupt");
    }
    if (rc != 0 && rc != 1) {
        const char *why = file_reason(c, rc, 1);
        if (why != NULL) {
            return sl_seterr(c, SLUICE_ERR_PERSIST,
                             "cannot read the seq file %s: %s. Fix it, or remove it to start at first_seq "
                             "(then batches of the previous run still in the server's pipeline could make "
                             "the first new ones count as duplicates)",
                             (const char *)c->cfg.seq_user, why);
        }
        return sl_seterr(c, SLUICE_ERR_PERSIST,
                         "config.seq_load failed (returned %d): the seq to start at is unknown, and a guess that "
                         "is too low would make the server drop new batches as duplicates",
                         rc);
    }
    if (rc == 0 && stored > c->next_seq) c->next_seq = stored;
    c->seq_reserved_below = c->next_seq; /* nothing reserved for this run yet */
    return SLUICE_OK;
}

int sl_seq_waiting(const sluice_client *c, uint64_t now_ms) {
    return c->next_seq >= c->seq_reserved_below && c->seq_retry_at_ms != 0 && now_ms < c->seq_retry_at_ms;
}

int sl_seq_reserve(sluice_client *c, uint64_t now_ms) {
    if (c->next_seq < c->seq_reserved_below || c->cfg.seq_store == NULL) return SLUICE_OK;
    if (sl_seq_waiting(c, now_ms)) return 1;
    uint64_t block = c->cfg.seq_reserve;
    uint64_t upto = c->next_seq > UINT64_MAX - block ? UINT64_MAX : c->next_seq + block;
    int rc = c->cfg.seq_store(c->cfg.seq_user, upto);
    if (rc != 0) {
        c->seq_retry_at_ms = now_ms + SL_SEQ_RETRY_MS;
        const char *why = file_reason(c, rc, 0);
        if (why != NULL) {
            return sl_seterr(c, SLUICE_ERR_PERSIST,
                             "cannot store the next seq (%llu) in %s: %s; batch %llu was not sent (its seq would "
                             "not survive a reboot), its readings stay queued and the store is retried in %d ms",
                             (unsigned long long)upto, (const char *)c->cfg.seq_user, why,
                             (unsigned long long)c->next_seq, SL_SEQ_RETRY_MS);
        }
        return sl_seterr(c, SLUICE_ERR_PERSIST,
                         "config.seq_store failed (returned %d) storing next seq %llu; batch %llu was not sent (its "
                         "seq would not survive a reboot), its readings stay queued and the store is retried in "
                         "%d ms",
                         rc, (unsigned long long)upto, (unsigned long long)c->next_seq, SL_SEQ_RETRY_MS);
    }
    c->seq_retry_at_ms = 0;
    c->seq_reserved_below = upto;
    c->st.seq_stored = upto;
    c->st.seq_stores++;
    return SLUICE_OK;
}

/* ---- File hooks ----------------------------------------------------------------------------------- */

void sluice_config_seq_file(sluice_config *cfg, const char *path) {
    if (cfg == NULL) return;
    cfg->seq_load = sluice_seq_file_load;
    cfg->seq_store = sluice_seq_file_store;
    cfg->seq_user = (void *)path;
}

int sluice_seq_file_load(void *user, uint64_t *next_seq) {
    const char *path = user;
    if (path == NULL || path[0] == '\0' || next_seq == NULL) return -EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 1 : -errno;
    char buf[32];
    size_t n = 0;
    while (n < sizeof buf) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    /* Exactly: digits, then an optional newline. Anything else is not ours, or torn: refuse to guess. */
    uint64_t v = 0;
    size_t i = 0;
    for (; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) {
        unsigned d = (unsigned)(buf[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return -EINVAL;
        v = v * 10 + d;
    }
    if (i == 0 || v == 0) return -EINVAL;
    if (i < n && buf[i] == '\n') i++;
    if (i != n) return -EINVAL;
    *next_seq = v;
    return 0;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -errno;
        if (w == 0) return -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* At most this many bytes in the directory part of a seq file's path, and in its file name: one buffer
   holds either in turn, so the store needs well under 1 KiB of stack. */
#define SL_SEQ_DIR_MAX 700
#define SL_SEQ_NAME_MAX 255

int sluice_seq_file_store(void *user, uint64_t next_seq) {
    const char *path = user;
    if (path == NULL || path[0] == '\0' || next_seq == 0) return -EINVAL;
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    size_t dlen = slash == NULL ? 1 : slash == path ? 1 : (size_t)(slash - path);
    size_t nlen = strlen(name);
    if (nlen == 0) return -EISDIR;
    if (dlen > SL_SEQ_DIR_MAX || nlen > SL_SEQ_NAME_MAX) return -ENAMETOOLONG;

    /* The directory first: the file is written and renamed relative to it, and it is synced last. */
    char buf[SL_SEQ_DIR_MAX + 8];
    if (slash == NULL) {
        memcpy(buf, ".", 2);
    } else if (slash == path) {
        memcpy(buf, "/", 2);
    } else {
        memcpy(buf, path, dlen);
        buf[dlen] = '\0';
    }
    int dfd = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return -errno;
    memcpy(buf, name, nlen);
    memcpy(buf + nlen, ".tmp", 5); /* buf is now the temporary file's name in that directory */

    char digits[24];
    size_t nd = 0;
    char text[24];
    uint64_t v = next_seq;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < nd; i++) text[i] = digits[nd - 1 - i];
    text[nd] = '\n';

    int rc = 0;
    int fd = openat(dfd, buf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) rc = -errno;
    if (rc == 0) {
        rc = write_all(fd, text, nd + 1);
        if (rc == 0 && fsync(fd) != 0) rc = -errno;
        if (close(fd) != 0 && rc == 0) rc = -errno;
        if (rc == 0 && renameat(dfd, buf, dfd, name) != 0) rc = -errno;
        if (rc != 0) unlinkat(dfd, buf, 0);
    }
    /* The rename itself is durable only once the directory is synced. EINVAL: this file system cannot sync a
       directory (its renames are durable by other means). */
    if (rc == 0 && fsync(dfd) != 0 && errno != EINVAL) rc = -errno;
    close(dfd);
    return rc;
}
