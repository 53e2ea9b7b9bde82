/*
 * libsluice: the C client library for sluiced.
 *
 * sluiced stores sensor readings in PostgreSQL and acknowledges a batch only once its transaction has
 * committed. libsluice gives firmware and gateway code one opaque handle per producer that:
 *
 *   - groups readings into columnar series (times as deltas, values as scaled integers when that is
 *     lossless, else doubles) and zstd-compresses batches when that makes them smaller;
 *   - sends only as many readings as the server granted credit for, splitting batches to fit; when its
 *     next batch needs more credit than it holds (a batch resent after a reconnect, or none held at all) and
 *     the server says it reads them (Welcome.credit_requests), it asks for it once with a CreditRequest;
 *     when the server recalls credit it holds and does not use (CreditRecall), it gives it back at once
 *     (CreditReturn, ahead of any later batch) and asks again with a CreditRequest when it next needs it;
 *   - keeps every batch until it is acknowledged, reconnects with capped exponential backoff, and resends
 *     unacknowledged batches in sequence order, so each reading lands in the table exactly once;
 *   - keeps its sequence number across reboots when given seq hooks (sluice_config_seq_file() for a file),
 *     reserving seqs in blocks so storage is written once per 64 batches, never after the batch;
 *   - answers heartbeats, notices a silent server, follows GoAway;
 *   - never allocates more than the memory ceiling fixed at creation, and allocates only through the
 *     caller's allocator when one is given (the library's own memory, protobuf-c's and zstd's alike).
 *
 * Typical blocking use (see examples/sensor_loop.c):
 *
 *     sluice_config cfg;
 *     sluice_config_init(&cfg);
 *     cfg.endpoints = "127.0.0.1:7878";
 *     memcpy(cfg.producer_id, my_stable_16_byte_id, 16);
 *     sluice_config_seq_file(&cfg, "/var/lib/mydevice/sluice.seq"); // or your own seq_load/seq_store
 *     sluice_client *c = sluice_create(&cfg);
 *     if (c == NULL || sluice_err(c) != SLUICE_OK) { ... sluice_errstr(c) ...; sluice_close(c); }
 *     sluice_connect(c);                      // failure is not final: the handle keeps retrying
 *     for (;;) {
 *         sluice_append(c, "boiler-7", "temp_c", now_us, 21.37, 0);
 *         sluice_send(c);                     // hands the readings to the wire as credit allows
 *         sluice_poll(c, 1000);               // reads acks and credit, heartbeats, reconnects
 *     }
 *     sluice_flush(c, 5000);                  // wait until everything is acknowledged
 *     sluice_close(c);
 *
 * Non-blocking use: set `cfg.nonblocking = 1`, then in your own poll loop wait on sluice_fd() for
 * sluice_events() with a timeout of at most sluice_timeout_ms(), and call sluice_poll(c, 0) whenever the fd
 * is ready or the timeout passed. sluice_connect() and sluice_send() then never wait.
 *
 * Conventions (as in hiredis and zstd):
 *   - Every call that can fail returns a sluice_status: SLUICE_OK (0) or a negative code. The handle keeps
 *     the last code (sluice_err) and a sentence a person can act on (sluice_errstr). Nothing is printed,
 *     errno is never the error channel, the library never exits or aborts.
 *   - Transient errors (connection lost, server silent, protocol violation by the server) are reported
 *     once by the call during which they happened; the handle stays usable and reconnects by itself.
 *     Fatal errors (bad token, permission denied, unsupported protocol version) are sticky: every later
 *     call returns them until sluice_close().
 *
 * Thread safety: no global state and no hidden threads. A handle may be used from any thread, but by one
 * thread at a time (serialise calls on one handle yourself). Different handles are independent. The
 * allocator hooks and the ack callback are called only from inside calls on the handle, on the calling
 * thread. With the default POSIX transport, name resolution of a non-numeric host uses getaddrinfo(), which
 * blocks and allocates through the C library; give numeric addresses (e.g. "10.0.0.5:7878", "[::1]:7878") to
 * avoid both, or a transport of your own (config.transport).
 *
 * Callbacks (the ack callback, the log hook, seq and store hooks, allocator hooks, the transport's functions):
 * they run inside a call on the handle, which is
 * in the middle of its work. From inside one of them, on the same handle:
 *   - sluice_close() is allowed and deferred: the call that ran the callback stops at its next step, frees
 *     the handle and returns SLUICE_ERR_STATE (or the error it already had); do not touch the handle after
 *     that call returns.
 *   - sluice_err(), sluice_errstr(), sluice_get_state(), sluice_get_stats(), sluice_fd(), sluice_events()
 *     and sluice_timeout_ms() are allowed (they only read).
 *   - every other call (sluice_append, sluice_send, sluice_poll, sluice_flush, sluice_connect) does nothing
 *     and returns SLUICE_ERR_STATE, with a message saying it was called from a callback. Remember what
 *     to do and do it after the outer call returns.
 * Other handles may be used freely from a callback.
 *
 * The wire protocol is proto/sluice/v1/sluice.proto and DESIGN.md §2 in the sluice repository.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ---------------------------------------------------------------------------------------- */

#define SLUICE_VERSION_MAJOR 0
#define SLUICE_VERSION_MINOR 1
#define SLUICE_VERSION_PATCH 0
/** MAJOR * 10000 + MINOR * 100 + PATCH, e.g. 100 for 0.1.0. */
#define SLUICE_VERSION_NUMBER (SLUICE_VERSION_MAJOR * 10000 + SLUICE_VERSION_MINOR * 100 + SLUICE_VERSION_PATCH)
#define SLUICE_VERSION_STRING "0.1.0"

/** The version of the library actually linked, as SLUICE_VERSION_NUMBER (compare with the macro). */
unsigned sluice_version_number(void);
/** The linked version as text, e.g. "0.1.0". */
const char *sluice_version_string(void);

/* ---- Status codes ----------------------------------------------------------------------------------- */

typedef enum sluice_status {
    SLUICE_OK = 0,
    SLUICE_ERR_INVALID = -1,         /* bad argument, config or reading (the message names which)      */
    SLUICE_ERR_NOMEM = -2,           /* the allocator returned NULL                                      */
    SLUICE_ERR_FULL = -3,            /* would exceed the memory ceiling: nothing was added; let acks
                                        free memory (sluice_send/sluice_poll/sluice_flush), then retry   */
    SLUICE_ERR_TIMEOUT = -4,         /* the call's time ran out; nothing is lost, data stays buffered    */
    SLUICE_ERR_CONNECT = -5,         /* no endpoint accepted a connection (transient, retried)           */
    SLUICE_ERR_IO = -6,              /* the connection broke or the server went silent (transient)       */
    SLUICE_ERR_PROTOCOL = -7,        /* the server broke the wire protocol (transient, reconnects)       */
    SLUICE_ERR_FRAME_TOO_LARGE = -8, /* a server frame, or its zstd decompression, exceeded
                                        max_server_frame_bytes (transient, reconnects)                   */
    SLUICE_ERR_AUTH = -9,            /* UNAUTHENTICATED or PERMISSION_DENIED (fatal)                     */
    SLUICE_ERR_UNSUPPORTED = -10,    /* the server speaks another protocol version (fatal)               */
    SLUICE_ERR_REJECTED = -11,       /* the server rejected a batch whole (INVALID_ARGUMENT); that batch
                                        was dropped, the rest continues                                  */
    SLUICE_ERR_SERVER = -12,         /* the server reported an error (UNAVAILABLE, INTERNAL, ...);
                                        transient, reconnects                                            */
    SLUICE_ERR_STATE = -13,          /* call not valid now (e.g. the handle failed to be created)        */
    SLUICE_ERR_PERSIST = -14         /* the seq_load or seq_store hook failed. From sluice_create: fatal
                                        (the seq to start at is unknown). From sluice_send/poll/flush: the
                                        batch that needed a new seq reservation was not sent; its readings
                                        stay queued and the store is retried 1 s later (transient)       */
} sluice_status;

/** A fixed name for a status code, e.g. "SLUICE_ERR_FULL". Never NULL. */
const char *sluice_strerror(int status);

/* ---- Configuration ---------------------------------------------------------------------------------- */

/**
 * Allocator hooks. When given, every byte the library allocates (its own buffers, protobuf-c's decoded
 * messages, zstd's contexts) comes from malloc_fn and goes back through free_fn. Both are called with
 * `opaque`. malloc_fn returns NULL on failure (the call then fails with SLUICE_ERR_NOMEM). The memory
 * returned must be aligned for any type (like malloc).
 */
typedef struct sluice_allocator {
    void *(*malloc_fn)(void *opaque, size_t size);
    void (*free_fn)(void *opaque, void *ptr);
    void *opaque;
} sluice_allocator;

/** What an ack callback is told about one batch. Pointers are valid only during the callback. */
typedef struct sluice_ack {
    uint64_t seq;                 /* the batch's sequence number                                       */
    uint32_t readings;            /* readings the batch held                                           */
    uint32_t accepted;            /* written to the readings table                                     */
    uint32_t rejected;            /* written to the dead-letter table (bad value, timestamp, name)     */
    int duplicate;                /* 1: committed before (nothing written again); the counts are its original outcome */
    int dropped;                  /* 1: the server rejected the batch whole; it was dropped, not stored */
    int first_reject_code;        /* RejectCode of the first rejected reading (0 if none), or the status
                                     code of the rejection when dropped                                */
    const char *first_reject_message; /* e.g. "value is NaN"; "" if none                               */
} sluice_ack;

typedef void (*sluice_ack_fn)(void *user, const sluice_ack *ack);

/**
 * Seq persistence hooks (optional, both or neither), so that a device keeps its sequence numbers across
 * reboots without writing storage for every batch.
 *
 * Why: the server deduplicates by (producer_id, seq) against the highest seq it has committed for the
 * producer. A device that reboots and starts again at a low seq has its new batches acknowledged as
 * duplicates and not written whenever its previous life's last batches commit after the reconnect
 * (Welcome.committed_seq cannot cover batches still in the server's pipeline). Gaps in seq are harmless:
 * the server accepts any seq above the last one it committed, so jumping forward after a reboot is fine.
 *
 * How: the library reserves seqs in blocks of `seq_reserve` (default 64). Before the first batch whose seq
 * is not yet covered, it calls seq_store(user, seq + seq_reserve) and sends that batch only after the hook
 * returned success; the next seq_reserve - 1 batches need no write. At sluice_create() it calls
 * seq_load(user, &next) once and starts at max(next, first_seq). So a reboot skips at most seq_reserve
 * seqs and never reuses one: one storage write per seq_reserve batches, plus one per boot.
 *
 * seq_load: returns 0 and sets *next_seq (>= 1) when a value is stored; 1 when nothing is stored yet (first
 * boot: start at first_seq); a negative value when storage cannot be read (sluice_create then fails with
 * SLUICE_ERR_PERSIST: starting at a guess could silently lose readings).
 * seq_store: stores next_seq durably (it must survive power loss when the hook returns) and returns 0, or
 * returns non-zero on failure: the call that needed it returns SLUICE_ERR_PERSIST at once, the batch is not
 * sent, its readings stay queued, and the store is tried again no sooner than 1 s later (by whichever call
 * runs then), so failing storage is not hammered. It runs inside sluice_send/sluice_poll/sluice_flush on the
 * calling thread and may block for as long as the write takes, also in non-blocking mode.
 */
typedef int (*sluice_seq_load_fn)(void *user, uint64_t *next_seq);
typedef int (*sluice_seq_store_fn)(void *user, uint64_t next_seq);

/**
 * Store-and-forward hooks (optional: all four or none), so that batches not yet acknowledged survive a
 * crash or power cut of the device: they are kept in storage the device owns (flash, a file) and resent,
 * byte for byte with their seqs, after a restart (the server acks what it already committed as duplicates,
 * so each reading lands exactly once). Use them with seq hooks (sluice_config_seq_file), so that seqs keep
 * rising across restarts also once the store is empty.
 *
 * store_put:    keeps a sealed batch (its seq, reading count and whole frame) before it is first written.
 *               0: kept (durably, by the hook's own policy); non-zero: not now (e.g. storage full). The batch
 *               then waits unsent and nothing more is sealed; the put is retried after an ack frees storage,
 *               or 1 s later, and the call reports SLUICE_ERR_PERSIST.
 * store_remove: the batch was acknowledged (or rejected whole): it need no longer be kept. A failure is only
 *               logged: a batch kept too long is resent once after a restart and acked as a duplicate.
 * store_next:   at sluice_create: the first kept batch with a seq above `after` (0 for the first): 0 and its
 *               seq, readings and frame length; 1 when there is none; negative on failure (sluice_create then
 *               fails with SLUICE_ERR_PERSIST).
 * store_read:   at sluice_create: copies the frame of kept batch `seq` (len bytes) into buf; 0 on success.
 * Kept batches are loaded in seq order as unacknowledged (they count against memory_limit) and the next seq
 * is set above them.
 */
typedef int (*sluice_store_put_fn)(void *user, uint64_t seq, uint32_t readings, const uint8_t *frame, size_t len);
typedef int (*sluice_store_remove_fn)(void *user, uint64_t seq);
typedef int (*sluice_store_next_fn)(void *user, uint64_t after, uint64_t *seq, uint32_t *readings, size_t *len);
typedef int (*sluice_store_read_fn)(void *user, uint64_t seq, uint8_t *buf, size_t len);

/* ---- Transport -------------------------------------------------------------------------------------- */

/**
 * How libsluice reaches the server and tells time (like coreMQTT's TransportInterface_t): give your own for
 * lwIP, a cellular modem's socket API, an RTOS, or TLS (sluice_tls_transport() with TLS=mbedtls). The
 * default, sluice_transport_posix(), is non-blocking TCP over POSIX sockets with CLOCK_MONOTONIC; it tries
 * every address getaddrinfo() gives for a host name, in order (numeric addresses need no resolver).
 *
 * Every call is non-blocking and gets `ctx` and `conn`: `conn` is conn_size bytes the library allocates once
 * (through its allocator, at create) for the state of one connection; the transport keeps whatever it needs
 * there between connect and close. Error texts go into err[errlen] (NUL-terminated); sluice_errstr() then
 * names the endpoint and quotes them.
 *
 * connect: starts connecting to host:port (strings as given in config.endpoints). 0: started (or done);
 *          negative: failed now (nothing to close).
 * send:    writes up to n bytes. Returns bytes written (> 0), 0 when it cannot write now (the connection or
 *          TLS handshake is still in progress, or buffers are full), or SLUICE_TRANSPORT_ERROR.
 * recv:    reads up to n bytes. Returns bytes read (> 0), 0 when nothing is available now,
 *          SLUICE_TRANSPORT_CLOSED when the server closed the connection, or SLUICE_TRANSPORT_ERROR.
 * close:   closes the connection opened by connect (also a failed or half-open one).
 * wait:    waits up to timeout_ms (0: does not wait) until `conn` can make progress on `events`
 *          (SLUICE_WANT_READ / SLUICE_WANT_WRITE) and returns the events that can (0 when the time ran out);
 *          an error or hang-up counts as readable (recv then reports it). With conn NULL it only sleeps.
 * fd:      optional (NULL: sluice_fd() is -1): the file descriptor an event loop waits on.
 * events:  optional (NULL: as asked): maps the events the library wants to those to wait for on fd (a TLS
 *          handshake may need to read when the library wants to write).
 * now_ms:  a monotonic clock in milliseconds (it need not start at 0; it must never go back).
 */
#define SLUICE_TRANSPORT_CLOSED (-1)
#define SLUICE_TRANSPORT_ERROR (-2)
typedef struct sluice_transport {
    size_t conn_size;
    int (*connect)(void *ctx, void *conn, const char *host, const char *port, char *err, size_t errlen);
    long (*send)(void *ctx, void *conn, const uint8_t *p, size_t n, char *err, size_t errlen);
    long (*recv)(void *ctx, void *conn, uint8_t *p, size_t n, char *err, size_t errlen);
    void (*close)(void *ctx, void *conn);
    int (*wait)(void *ctx, void *conn, int events, int timeout_ms);
    int (*fd)(void *ctx, void *conn);
    int (*events)(void *ctx, void *conn, int want);
    uint64_t (*now_ms)(void *ctx);
    void *ctx;
} sluice_transport;

/** The default transport: POSIX sockets, getaddrinfo() (every address), CLOCK_MONOTONIC. Never NULL. */
const sluice_transport *sluice_transport_posix(void);

/* ---- Log hook --------------------------------------------------------------------------------------- */

#define SLUICE_LOG_ERROR 0 /* an error a call returned (the same sentence as sluice_errstr)   */
#define SLUICE_LOG_WARN 1  /* the connection was lost, the server sent GoAway                */
#define SLUICE_LOG_INFO 2  /* connecting, session opened                                     */
/** Called from inside calls on the handle (the callback rules at the top of this file apply). `msg` is
    valid only during the call. */
typedef void (*sluice_log_fn)(void *user, int level, const char *msg);

/**
 * Configuration. Call sluice_config_init() first, then set what you need; a zero numeric field means
 * "the default" (shown in brackets). sluice_create() copies everything it needs: the struct and the
 * strings may be freed afterwards.
 */
typedef struct sluice_config {
    /** Required. "host:port", or several separated by commas, tried in order and rotated on failure.
        IPv6 as "[::1]:7878". Port defaults to 7878 when omitted. */
    const char *endpoints;
    /** Bearer token; NULL or "" when the server accepts anonymous loopback clients. At most 4096 bytes. */
    const char *token;
    /** Required, not all zero. The producer's stable identity: keep it across restarts of the device,
        since the server deduplicates batches by (producer_id, seq). */
    uint8_t producer_id[16];
    /** First sequence number to use [1]. The server deduplicates by (producer_id, seq) and says in Welcome
        which seq it committed last; the client never goes at or below that. A device that may restart while
        a batch is still in the server's pipeline must not reuse seqs: give it seq_load/seq_store below (for
        a file, sluice_config_seq_file()), which the library keeps ahead of every seq it sends. */
    uint64_t first_seq;
    /** Sent in Hello for the server's logs [libsluice]. */
    const char *client_name;

    uint32_t connect_timeout_ms;  /* TCP connect + handshake [5000]                                     */
    uint32_t io_timeout_ms;       /* how long blocking sluice_connect/sluice_send wait [30000]          */
    uint32_t reconnect_min_ms;    /* first backoff delay after a failure [100]                          */
    uint32_t reconnect_max_ms;    /* cap of the exponential backoff (with jitter) [5000]                */

    /** Ceiling on all memory the library holds at any moment, including protobuf-c's and zstd's [8 MiB].
        Buffered readings may use what is left after fixed buffers and the reserves for encoding one
        batch and decoding one server frame; sluice_create() fails with SLUICE_ERR_INVALID, naming the
        minimum, if the ceiling is too small for those. */
    size_t memory_limit;
    /** Largest batch in readings [10000]; the server's Welcome may lower it. */
    uint32_t max_batch_readings;
    /** Largest batch frame in bytes before compression [262144]; the server's Welcome may lower it. */
    uint32_t max_batch_bytes;
    /** Largest server frame accepted, on the wire and after decompression [65536]. Server frames are
        small (acks, credit); anything larger is SLUICE_ERR_FRAME_TOO_LARGE. */
    uint32_t max_server_frame_bytes;
    /** zstd level for batches [3]; -1 disables compression. Compression is used only when it pays. */
    int compression_level;

    /** 0: blocking mode. 1: non-blocking mode, driven by your poll loop (see top of file). */
    int nonblocking;

    /** Optional allocator hooks (see sluice_allocator); NULL = malloc/free. Copied at create. */
    const sluice_allocator *allocator;

    /** Optional: called once per acknowledged or dropped batch, from inside sluice_* calls. */
    sluice_ack_fn on_ack;
    void *on_ack_user;

    /** Optional seq persistence (see sluice_seq_load_fn above): both hooks or neither. `seq_user` is
        passed to them as is and is not copied: it must stay valid until sluice_close(). */
    sluice_seq_load_fn seq_load;
    sluice_seq_store_fn seq_store;
    void *seq_user;
    /** Seqs reserved by one seq_store call [64], at most 1048576. Larger: fewer writes, bigger jumps after
        a reboot. */
    uint32_t seq_reserve;

    /** Optional transport (see sluice_transport); NULL = sluice_transport_posix(). Copied at create; its
        ctx must stay valid until sluice_close(). */
    const sluice_transport *transport;
    /** Optional log hook and its argument; NULL = silent. */
    sluice_log_fn log;
    void *log_user;

    /** Optional store-and-forward hooks (see sluice_store_put_fn): all four or none; for a file,
        sluice_config_store_file(). `store_user` is not copied: it must stay valid until sluice_close(). */
    sluice_store_put_fn store_put;
    sluice_store_remove_fn store_remove;
    sluice_store_next_fn store_next;
    sluice_store_read_fn store_read;
    void *store_user;
} sluice_config;

/* ---- Store-and-forward in a file (POSIX) ------------------------------------------------------------ */

#define SLUICE_STORE_FILE_MAX_BATCHES 256 /* batches one file store keeps at most */
#define SLUICE_FSYNC_EVERY_BATCH 0 /* fdatasync after each put: survives power loss [default]         */
#define SLUICE_FSYNC_NEVER 1       /* the OS writes back when it likes: survives a crash of the process,
                                      not a power cut; for storage that wears out or is slow to sync   */

/**
 * A bounded ring of batches in one file: `capacity` bytes of data after a 128-byte header, written
 * sequentially and wrapping around; records carry their position and a CRC-32, so after a torn write
 * (power cut mid-record) the store recovers every record before it. Removal writes a one-byte tombstone.
 * The file store allocates nothing; the struct (about 6 KiB) is yours, e.g. static. Its fields are private.
 */
typedef struct sluice_store_file {
    int fd;
    int fsync_policy;
    uint64_t capacity;
    uint64_t head, tail, tail_synced; /* positions in the ring's lifetime (monotonic) */
    uint32_t counter;                 /* header generation */
    unsigned n, first;                /* kept records: idx[first .. first + n) mod max */
    struct {
        uint64_t seq, pos;
        uint32_t readings, len;
        int live;
    } idx[SLUICE_STORE_FILE_MAX_BATCHES];
} sluice_store_file;

/**
 * Opens (or creates) the store file at `path` with `capacity` bytes of ring (at least 64 KiB; an existing
 * file keeps the capacity it was created with) and recovers what it holds. 0, or -errno (-EINVAL: not a
 * store file, -ENOSPC: capacity too small).
 */
int sluice_store_file_open(sluice_store_file *s, const char *path, uint64_t capacity, int fsync_policy);
/** Closes the file (after sluice_close() of the handle using it). */
void sluice_store_file_close(sluice_store_file *s);
/** Sets the four store hooks and store_user of `cfg` to the file store `s`. */
void sluice_config_store_file(sluice_config *cfg, sluice_store_file *s);
/** The hooks themselves (`user` is the sluice_store_file). */
int sluice_store_file_put(void *user, uint64_t seq, uint32_t readings, const uint8_t *frame, size_t len);
int sluice_store_file_remove(void *user, uint64_t seq);
int sluice_store_file_next(void *user, uint64_t after, uint64_t *seq, uint32_t *readings, size_t *len);
int sluice_store_file_read(void *user, uint64_t seq, uint8_t *buf, size_t len);

/** Fills `cfg` with the defaults (all zero: every field takes its default). */
void sluice_config_init(sluice_config *cfg);

/* ---- Seq persistence in a file (POSIX) -------------------------------------------------------------- */

/**
 * Ready-made seq hooks keeping the next seq in a file: `user` is the path (a NUL-terminated string that
 * must outlive the handle). The file holds one decimal number and a newline. A store writes `path.tmp`,
 * fsyncs it, renames it over `path` and fsyncs the directory, so a power cut leaves the old value or the
 * new one, never a torn file. They allocate nothing and print nothing; errors come back as -errno
 * (-EINVAL: the file does not hold a seq; -ENAMETOOLONG: a directory part longer than 700 bytes or a file
 * name longer than 255; they use under 1 KiB of stack), and
 * sluice_errstr() names the path and the reason.
 */
int sluice_seq_file_load(void *path, uint64_t *next_seq);
int sluice_seq_file_store(void *path, uint64_t next_seq);

/** Sets cfg->seq_load, seq_store and seq_user to the file hooks above for `path` (kept, not copied). */
void sluice_config_seq_file(sluice_config *cfg, const char *path);

/* ---- Lifetime --------------------------------------------------------------------------------------- */

typedef struct sluice_client sluice_client; /* opaque */

/**
 * Creates a handle; does not connect. Returns NULL only if the allocator could not provide the handle
 * itself. Otherwise check sluice_err(): if it is not SLUICE_OK the config was refused (the message says
 * why) and the handle is only good for sluice_errstr() and sluice_close().
 */
sluice_client *sluice_create(const sluice_config *cfg);

/**
 * Closes the connection and frees everything, including readings not yet acknowledged (call
 * sluice_flush() first to wait for them). NULL is allowed.
 */
void sluice_close(sluice_client *c);

/* ---- Errors ----------------------------------------------------------------------------------------- */

/** The status of the last call that failed or reported an event (SLUICE_OK if none). */
int sluice_err(const sluice_client *c);
/** A sentence describing that status, e.g. "connection to 127.0.0.1:7878 lost: closed by the server".
    Never NULL (also for a NULL handle); valid until the next call on the handle. */
const char *sluice_errstr(const sluice_client *c);

/* ---- Connecting ------------------------------------------------------------------------------------- */

/**
 * Starts connecting. Blocking mode: tries each endpoint once and returns SLUICE_OK when the session is
 * open (Welcome received, unacknowledged batches queued for resending), or the last error. Non-blocking
 * mode: starts the attempt and returns SLUICE_OK; sluice_poll() completes it.
 * Whatever the result, the handle keeps reconnecting by itself from then on (in sluice_poll, sluice_send,
 * sluice_flush), until a fatal error or sluice_close().
 */
int sluice_connect(sluice_client *c);

/** Connection state, for logs and tests. */
typedef enum sluice_state {
    SLUICE_STATE_IDLE = 0,       /* sluice_connect() not called yet                            */
    SLUICE_STATE_CONNECTING = 1, /* TCP connect or handshake in progress                       */
    SLUICE_STATE_READY = 2,      /* session open                                               */
    SLUICE_STATE_DRAINING = 3,   /* the server sent GoAway: waiting for outstanding acks       */
    SLUICE_STATE_BACKOFF = 4,    /* disconnected, waiting before the next attempt              */
    SLUICE_STATE_FAILED = 5      /* fatal error; see sluice_errstr()                           */
} sluice_state;
sluice_state sluice_get_state(const sluice_client *c);

/* ---- Readings --------------------------------------------------------------------------------------- */

/**
 * Adds one reading to the open batch (no I/O). `device_id`: 1-64 bytes of [A-Za-z0-9._:-]; `metric`: 1-64
 * bytes of [a-z0-9_.]; `time_us`: Unix time in microseconds; `quality`: 0 = good. Readings of the same
 * device and metric form one series; keep each series in time order for the smallest encoding.
 * Returns SLUICE_ERR_INVALID for a bad name, SLUICE_ERR_FULL if the memory ceiling would be exceeded
 * (nothing added). Values are sent as given: the server dead-letters NaN and infinities.
 */
int sluice_append(sluice_client *c, const char *device_id, const char *metric, int64_t time_us,
                  double value, uint32_t quality);

/**
 * Adds `n` readings of one series at once; all of them or none (SLUICE_ERR_FULL / SLUICE_ERR_INVALID).
 * `quality` may be NULL (all good).
 */
int sluice_append_series(sluice_client *c, const char *device_id, const char *metric, size_t n,
                         const int64_t *times_us, const double *values, const uint32_t *quality);

/**
 * Closes the open batch and hands its readings to the wire. They go out in batches of at most the credit
 * held, max_batch_readings and max_batch_bytes, each with the next sequence number.
 * Blocking mode: waits (up to io_timeout_ms, reconnecting as needed) until every submitted reading is in a
 * batch written to the socket; SLUICE_ERR_TIMEOUT if credit or the connection did not allow it in time
 * (nothing is lost: the rest goes out later). Non-blocking mode: sends what it can now and returns
 * SLUICE_OK; sluice_poll() sends the rest as credit arrives.
 */
int sluice_send(sluice_client *c);

/**
 * Submits the open batch (as sluice_send) and waits until every reading is acknowledged by the server,
 * or `timeout_ms` passes (SLUICE_ERR_TIMEOUT). Waits in both modes; 0 checks without waiting.
 */
int sluice_flush(sluice_client *c, int timeout_ms);

/* ---- Driving the connection ------------------------------------------------------------------------- */

/**
 * Does all pending work: reads acks, credit, heartbeats and GoAway; writes submitted batches as credit
 * allows; resends after a reconnect; reconnects when the backoff delay has passed. Waits up to
 * `timeout_ms` for the socket or a timer if there is nothing to do right now (0 = never wait; the usual
 * value in non-blocking mode). Returns SLUICE_OK, or the error of an event that happened during the call
 * (e.g. SLUICE_ERR_IO when the connection was lost; the handle is then already planning to reconnect).
 */
int sluice_poll(sluice_client *c, int timeout_ms);

#define SLUICE_WANT_READ 1  /* wait for the fd to be readable (POLLIN)  */
#define SLUICE_WANT_WRITE 2 /* wait for the fd to be writable (POLLOUT) */

/** The socket to wait on, or -1 when there is none right now (then just honour sluice_timeout_ms). */
int sluice_fd(const sluice_client *c);
/** SLUICE_WANT_READ / SLUICE_WANT_WRITE bits for sluice_fd(). */
int sluice_events(const sluice_client *c);
/** Milliseconds until sluice_poll() must be called even without socket events (heartbeat, backoff,
    timeouts); -1 when no timer is pending. */
int sluice_timeout_ms(const sluice_client *c);

/* ---- Statistics ------------------------------------------------------------------------------------- */

typedef struct sluice_stats {
    uint64_t readings_open;     /* appended, not yet submitted by sluice_send/sluice_flush            */
    uint64_t readings_queued;   /* submitted, not yet in a batch                                      */
    uint64_t readings_unacked;  /* in batches sent or waiting to be resent, not yet acknowledged      */
    uint64_t batches_unacked;
    uint64_t credit;            /* readings the server currently allows                               */
    uint64_t credit_stalls;     /* times sending stopped because credit ran out                       */
    uint64_t credit_returned;   /* credit given back to the server when it recalled it (CreditReturn) */
    uint64_t batches_acked;     /* including duplicates                                               */
    uint64_t batches_duplicate;
    uint64_t batches_dropped;   /* rejected whole by the server                                       */
    uint64_t readings_accepted;
    uint64_t readings_rejected; /* dead-lettered by the server                                        */
    uint64_t last_seq;          /* highest seq assigned so far (0 = none)                             */
    uint64_t connects;          /* sessions opened (Welcome received)                                 */
    uint64_t resent_batches;    /* batches written again after a reconnect                            */
    uint64_t wire_bytes;        /* batch frame bytes written (after compression), resends included    */
    uint64_t batches_compressed;
    uint64_t seq_stored;        /* the next_seq last stored through seq_store (0 = none this run)       */
    uint64_t seq_stores;        /* successful seq_store calls                                         */
    uint64_t store_puts;        /* batches kept through store_put                                     */
    uint64_t batches_restored;  /* kept batches loaded at create (store-and-forward)                  */
    size_t memory_used;         /* bytes held now, through the allocator                              */
    size_t memory_peak;
    size_t memory_limit;
    size_t memory_for_readings; /* how much of the ceiling buffered readings may use                 */
} sluice_stats;

/** Fills `out`. */
void sluice_get_stats(const sluice_client *c, sluice_stats *out);

/** The reason the server gave in its last GoAway (e.g. "shutting down"), "" if it sent none. Never NULL. */
const char *sluice_goaway_reason(const sluice_client *c);

#ifdef __cplusplus
}
#endif
#endif /* SLUICE_H */
