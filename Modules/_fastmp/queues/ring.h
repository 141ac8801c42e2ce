/* ring.h - the shared-memory ring of the Queue channel and of a Pipe()
 * end: ring.c (creating and mapping it, writing records, the waits and
 * counts, no GIL), ring_reader.c (taking records out, no GIL) and
 * ring_message.c (whole messages, with the GIL), for queues/channel.c (the
 * Python type), queues/feeder.c (the per-process feeder thread, see
 * feeder.h) and connection/pipe_ring.c.
 *
 * The channel is an anonymous memfd mapping: a header (two robust
 * process-shared mutexes, the ring indices and the futex words) followed by
 * a power-of-two byte ring.  Messages travel as records: an 8-byte header
 * (payload length, kind) and the payload padded to 8 bytes.  A message that
 * fits a quarter of the ring is one WHOLE record; a larger one streams as
 * FIRST (whose payload starts with the 64-bit total length), MORE..., LAST.
 * One writer at a time holds `wlock` for a whole message and one reader
 * holds `rlock` for a whole message, so between them the ring is a
 * single-producer single-consumer ring on two 64-bit counters.
 *
 * Crash safety: a writer that dies or gives up mid-message leaves
 * `wr_in_message` set; the next holder of `wlock` publishes an ABORT record
 * (space for it is always kept free), and readers drop the torn message.  A
 * reader that dies mid-message leaves `rd_in_message` set; the next holder
 * of `rlock` skips the rest of that message.  Robust mutexes hand the lock
 * over (EOWNERDEAD) instead of wedging.
 *
 * Untrusted memory: any process that can map the memfd can write anything
 * into it.  The fields that never change (capacity, flags, maxsize) are
 * checked once when a process maps the channel and read from its own copy
 * after that; every other field (head, tail, the records, the flags and
 * counts) is checked before each use.  A process that finds the memory
 * corrupt marks the channel broken (CHAN_CORRUPT, see chan_mark_corrupt):
 * from then on every call on it fails at once, in every process.
 *
 * Shutdown (Queue.shutdown): `shut` says it, for every process.  A put
 * counts its message in, then looks at `shut`; a reader that finds the
 * ring empty looks at `shut`, then at the count: so either the put raises
 * ShutDown or the reader waits for its message.  An immediate shutdown
 * takes wlock once (every message published before is then in the ring,
 * and every later writer sees the state and drops its message) and
 * discards the ring. */
#ifndef FASTMP_RING_H
#define FASTMP_RING_H

#include "core/deadline.h"
#include "core/spin.h"

#include <pthread.h>
#include <sys/types.h>

#define CHAN_MAGIC 0x464d5143u          /* "FMQC" */
#define CHAN_MIN_CAPACITY 4096u
#define CHAN_MAX_CAPACITY ((uint64_t)1 << 40)
#define CHAN_HEADER_SIZE 4096u
/* What a bad capacity raises (ValueError) */
#define CHAN_CAPACITY_ERROR "capacity must be a power of two between 4096 and 2**40"

/* Whether `capacity` is one chan_map_create() takes: a power of two from
 * CHAN_MIN_CAPACITY to CHAN_MAX_CAPACITY. */
static inline int
chan_capacity_valid(long long capacity)
{
    return capacity >= (long long)CHAN_MIN_CAPACITY && (uint64_t)capacity <= CHAN_MAX_CAPACITY
           && (capacity & (capacity - 1)) == 0;
}
/* Ring bytes of a Queue and of each direction of a duplex Pipe(): pages
 * are only touched as messages pass (exported as _fastmp.RING_SIZE). */
#define CHAN_RING_SIZE (1u << 20)

/* record kinds (low byte of chan_rec.kind) */
enum { REC_WHOLE = 1, REC_FIRST = 2, REC_MORE = 3, REC_LAST = 4, REC_ABORT = 5 };
#define REC_KIND_MASK 0xffu
#define REC_RAW 0x100u                  /* payload is the bytes object itself */
#define REC_STR 0x200u                  /* payload is a str's UTF-8 */
#define REC_ASCII 0x400u                /* with REC_STR: all of it ASCII */

/* chan_shared.flags */
#define CHAN_JOINABLE 1u
#define CHAN_SIMPLE 2u                  /* SimpleQueue: put blocks, no feeder */
#define CHAN_PIPE 4u                    /* a Pipe() direction: no eventfd (its
                                         * socket's bells tell readiness) */
#define CHAN_KINDS (CHAN_JOINABLE | CHAN_SIMPLE | CHAN_PIPE)

/* chan_shared.shut: it only ever goes up */
#define CHAN_OPEN 0u
#define CHAN_SHUT 1u                    /* put refused; get drains, then refused */
#define CHAN_SHUT_NOW 2u                /* put and get refused, messages discarded */

/* The error code (errno value) of a channel whose shared memory is
 * corrupt; chan_raise_corrupt() says why. */
#define CHAN_CORRUPT EBADMSG

typedef struct {
    uint32_t len;                       /* payload bytes in this record */
    uint32_t kind;                      /* REC_* | REC_RAW */
} chan_rec;

typedef struct {
    uint32_t magic;
    uint32_t flags;
    uint64_t capacity;                  /* ring bytes, a power of two */
    uint32_t maxsize;                   /* message limit (bounded queues) */
    uint32_t watched;                   /* someone polls the eventfd */
    uint32_t corrupt;                   /* a process found this memory corrupt */
    uint32_t shut;                      /* CHAN_OPEN, CHAN_SHUT, CHAN_SHUT_NOW */
    /* each lock on a cache line of its own: the fields above are read on
     * every put and get, and must not bounce between the two sides */
    _Alignas(64) pthread_mutex_t wlock; /* held by one writer per message */
    _Alignas(64) pthread_mutex_t rlock; /* held by one reader per message */
    /* writer side: changed only by the wlock holder */
    _Alignas(64) uint64_t tail;         /* bytes ever published */
    uint32_t wr_in_message;             /* a streamed message is unfinished */
    /* reader side: changed only by the rlock holder */
    _Alignas(64) uint64_t head;         /* bytes ever consumed */
    uint32_t rd_in_message;
    uint64_t n_got;                     /* messages taken out (unbounded) */
    /* futex words, bumped when data / space appears; at most one reader
     * (the rlock holder) and one writer (the wlock holder) sleep on them,
     * and each raises its `sleeping` flag first */
    _Alignas(64) uint32_t data_seq;
    uint32_t rd_sleeping;
    _Alignas(64) uint32_t space_seq;
    uint32_t wr_sleeping;
    /* writers waiting, without wlock, for half the ring to be free (woken
     * in one batch rather than per message read): put calls for a moment
     * (channel.c), feeder threads for as long as it takes */
    uint32_t room_seq;
    uint32_t room_sleeping;
    /* messages put (unbounded queues: n_put - n_got is qsize) */
    _Alignas(64) uint64_t n_put;
    /* bounded queues: messages in, and put calls waiting for a slot (on
     * slot_seq, bumped when a slot frees or the queue shuts down) */
    _Alignas(64) uint32_t count;
    uint32_t slot_waiters;
    uint32_t slot_seq;
    /* JoinableQueue */
    _Alignas(64) uint32_t unfinished;
    uint32_t join_waiters;
    /* Pipe(): messages published and not yet taken, in step with the
     * socket's bells (connection/pipe_ring.c); below 0 for a moment while a
     * reader takes a message its writer has not counted yet */
    _Alignas(64) int64_t pipe_pending;
} chan_shared;

/* A message waiting in this process for the feeder thread.  Small payloads
 * are copied after the struct; large ones point into `view`, the buffer
 * of the pickled object, which is released with the GIL once sent. */
typedef struct chan_pending {
    struct chan_pending *next;
    const char *data;
    uint64_t len;
    uint32_t flags;                     /* REC_RAW or 0 */
    Py_buffer view;                     /* view.obj is NULL when copied */
} chan_pending;

/* One process's view of a channel: the mapping and the feeder state.
 * Reference-counted: the Python object, the process's live list and a
 * running feeder thread each hold one reference. */
typedef struct chan_map {
    chan_shared *sh;
    unsigned char *ring;
    /* this process's copies of the fields that never change, checked once
     * when mapped (the shared ones may be overwritten since) */
    uint64_t capacity;
    uint64_t mask;
    uint32_t flags;
    uint32_t maxsize;
    const char *broken;                 /* atomic; why the channel is unusable */
    size_t map_len;
    int fd;
    int efd;                            /* readiness eventfd (see chan_watch) */
    int refs;                           /* atomic */
    spin_state spin;                    /* whether chan_wait_data spins */
    /* last values seen of the other side's counter (they only grow), so
     * that the lock holder rarely touches the other side's cache line */
    uint64_t seen_head;                 /* under wlock */
    uint64_t seen_tail;                 /* under rlock */
    /* feeder state, valid in process `pid` only */
    pid_t pid;
    pthread_mutex_t mu;
    pthread_cond_t work;                /* signalled when messages arrive */
    pthread_cond_t idle;                /* broadcast when `first` empties */
    chan_pending *first, *last;         /* FIFO; the head leaves once written */
    chan_pending *done;                 /* sent, owner still to release */
    int feeder_running;
    int cancelled;                      /* cancel_join_thread: no flush */
    int listed;                         /* on the process's live list */
    struct chan_map *next_live;
} chan_map;

/* A message being written: the payload and how much of it is published. */
typedef struct {
    const char *data;
    uint64_t len;
    uint32_t flags;
    uint64_t sent;                      /* payload bytes published */
    int started;                        /* first record published */
} chan_wmsg;

/* ---- ring.c: no GIL needed, errors as errno values ----------- */

/* Create a memfd-backed channel with `capacity` ring bytes (power of two).
 * Returns 0 and sets *out, or an errno value. */
int chan_map_create(uint64_t capacity, uint32_t maxsize, uint32_t flags, chan_map **out);
/* Map an existing channel fd with its readiness eventfd (taking
 * ownership of both on success); efd < 0 for a Pipe() direction.  Returns
 * 0, EINVAL for a fd that is not a channel of that kind, or an errno
 * value. */
int chan_map_attach(int fd, int efd, chan_map **out);
void chan_map_incref(chan_map *m);
/* Drop a reference; the last one unmaps and closes the fd. */
void chan_map_decref(chan_map *m);

/* A deadline that has always passed: "do not wait". */
extern const fastmp_deadline chan_no_wait;
/* A deadline that never passes: "wait as long as it takes". */
extern const fastmp_deadline chan_forever;

/* Lock a robust mutex, waiting at most until `d` (or one signal-check slice
 * of ~50 ms, which returns EINTR).  On EOWNERDEAD the lock is made
 * consistent and 0 is returned: callers repair from the shared flags.
 * `wait` 0 means try once (EBUSY).  Returns 0, EBUSY, ETIMEDOUT, EINTR or
 * an errno value. */
int chan_lock(pthread_mutex_t *mu, const fastmp_deadline *d, int wait);
void chan_unlock(pthread_mutex_t *mu);
/* Take wlock for a small message: try, and if `patient`, spin a little
 * then sleep until `d` -- unless its holder may keep it long
 * (chan_streaming).  Repairs a message left unfinished.  Returns 0, EBUSY,
 * CHAN_CORRUPT (the lock is not held then) or an errno value. */
int chan_lock_writer(chan_map *m, const fastmp_deadline *d, int patient);
/* True while the wlock holder may keep it long: it is streaming a large
 * message or waiting for room in the ring. */
int chan_streaming(const chan_map *m);

/* Holding wlock: publish an ABORT for a message a previous holder left
 * unfinished, if any.  Returns 0, or CHAN_CORRUPT if the channel is
 * broken (the caller lets go of the lock and gives up). */
int chan_repair_writer(chan_map *m);
/* Holding wlock: publish WHOLE if it fits now; returns 0, EAGAIN or
 * CHAN_CORRUPT. */
int chan_try_write_whole(chan_map *m, const char *data, uint64_t len, uint32_t flags);
/* Holding wlock: publish as much of `w` as space allows, waiting for
 * space until `d`.  Returns 0 when all is published, ETIMEDOUT, EINTR
 * (a signal-check slice; call again to continue) or CHAN_CORRUPT.  A
 * caller that gives up on a started message leaves wr_in_message set for
 * the next writer. */
int chan_write(chan_map *m, chan_wmsg *w, const fastmp_deadline *d);

/* Spin briefly, then sleep until data is published, the shutdown state
 * moves on from `shut_seen` (or a shut-down queue turns out drained), or
 * `d` passes, for one signal-check slice at most.  Returns 0 (data may be
 * there: re-check), ETIMEDOUT, or EINTR (a signal, or the end of a slice:
 * check signals and call again). */
int chan_wait_data(chan_map *m, const fastmp_deadline *d, uint32_t shut_seen);
/* chan_wait_data's spin, for readers that sleep another way: spin for
 * data while this process's record for `m` says it pays (returns 1 if
 * data came). */
int chan_spin_data(chan_map *m);
/* Without wlock: sleep until half the ring is free (readers wake the
 * writers waiting so in one batch, not per message read), until `d`, or
 * until the readers take nothing out for `stall_ns`.  Returns 0 (look
 * again), ETIMEDOUT, EINTR or an errno value. */
int chan_wait_room(chan_map *m, const fastmp_deadline *d, long stall_ns);
/* Ask for huge pages behind a fresh buffer about to receive `n` bytes
 * (a large message), so that filling it does not fault page by page. */
void chan_advise_fresh(void *buf, uint64_t n);
/* Holding rlock, mid-message with nothing to read: decide whether the
 * writer is gone.  Returns 1 (and discards the torn remainder) if so, 0 if
 * a live writer holds the message or data arrived. */
int chan_writer_gone(chan_map *m);

/* Message accounting: a message is counted in at put (a slot on a
 * bounded queue, waiting until `d` for a signal-check slice at most: 0,
 * ETIMEDOUT, EINTR, CHAN_CORRUPT, or ESHUTDOWN when the queue shuts down
 * meanwhile) and out when read or lost (chan_count_done, under rlock) or
 * when put fails (chan_count_cancel).  chan_count_drop counts out a
 * message put that will never be read (and its JoinableQueue task),
 * waking join() when no task is left. */
int chan_count_in(chan_map *m, const fastmp_deadline *d);
void chan_count_done(chan_map *m);
void chan_count_cancel(chan_map *m);
void chan_count_drop(chan_map *m);
/* Messages put and not yet read, in *n.  Returns 0 or CHAN_CORRUPT. */
int chan_qsize(chan_map *m, uint64_t *n);
/* Wake data waiters after a publish (cheap when nobody waits). */
void chan_notify_data(chan_map *m);
/* Readiness for poll()/connection.wait(): from the first call on, in any
 * process, the eventfd returned is readable whenever a message is there
 * (writers signal it, readers re-arm it with chan_rearm after a get).
 * Until then nobody pays the system calls. */
int chan_watch(chan_map *m);
void chan_rearm(chan_map *m);
/* JoinableQueue: wait until `unfinished` is 0, for a signal-check slice
 * at most.  Returns 0, EINTR (a signal arrived, or the slice ended),
 * CHAN_CORRUPT or an errno value. */
int chan_wait_joined(chan_map *m);

/* ---- ring_reader.c: no GIL needed --------------------------------- */

/* Bytes published and not consumed (any process, no lock; a hint, which
 * the reader checks). */
uint64_t chan_available(const chan_map *m);
/* The same for the rlock holder, mostly from its cached view of tail. */
uint64_t chan_readable(chan_map *m);
/* Ring bytes a record of `len` payload bytes takes. */
static inline uint64_t
chan_record_size(uint64_t len)
{
    return sizeof(chan_rec) + ((len + 7u) & ~(uint64_t)7u);
}
/* Largest payload of one record. */
static inline uint64_t
chan_whole_max(const chan_map *m)
{
    return m->capacity / 4 - sizeof(chan_rec);
}

/* Mark the channel broken because its shared memory is corrupt (`why`
 * says how, a static string), in this process and, through the shared
 * header, in the others; wake every process waiting on it.  Returns
 * CHAN_CORRUPT. */
int chan_mark_corrupt(chan_map *m, const char *why);
/* chan_broken() for a channel another process marked broken. */
const char *chan_broken_elsewhere(chan_map *m);
/* Why the channel is broken (in this process or another), or NULL. */
static inline const char *
chan_broken(chan_map *m)
{
    const char *why = __atomic_load_n(&m->broken, __ATOMIC_ACQUIRE);
    if (why == NULL && __atomic_load_n(&m->sh->corrupt, __ATOMIC_ACQUIRE)) {
        why = chan_broken_elsewhere(m);
    }
    return why;
}
/* Wake every process sleeping on the channel's futex words. */
void chan_wake_all(chan_map *m);

/* Shutdown (ring.c; see the top of this file).  The state, as last published (a
 * value no process writes marks the channel corrupt). */
static inline uint32_t
chan_shut_state(chan_map *m)
{
    uint32_t shut = __atomic_load_n(&m->sh->shut, __ATOMIC_SEQ_CST);
    if (__builtin_expect(shut > CHAN_SHUT_NOW, 0)) {
        (void)chan_mark_corrupt(m, "its shutdown state is unknown");
        return CHAN_SHUT_NOW;
    }
    return shut;
}
/* Holding wlock: true if a message about to be published must be dropped
 * instead (chan_count_drop), the queue having shut down immediately. */
static inline int
chan_dropping(const chan_map *m)
{
    return __atomic_load_n(&m->sh->shut, __ATOMIC_RELAXED) >= CHAN_SHUT_NOW;
}
/* Raise the state to `how` (CHAN_SHUT or CHAN_SHUT_NOW) and wake every
 * blocked put and get of every process. */
void chan_shut_down(chan_map *m, uint32_t how);
/* For a reader that found the ring empty in state `shut`: true if get
 * must raise ShutDown rather than wait (nothing more will come). */
int chan_shut_and_drained(chan_map *m, uint32_t shut);
/* Immediate shutdown, after chan_shut_down: take wlock, then rlock, and
 * discard every message in the ring (each counts as read and as a done
 * task).  Meanwhile, what a writer streaming a long message publishes is
 * discarded so that it can finish.  Returns 0, EINTR after a slice of
 * waiting (check signals, call again), CHAN_CORRUPT or an errno value. */
int chan_discard_all(chan_map *m);

/* A message being taken out of the ring by the rlock holder, one record
 * at a time (chan_read_record). */
enum { CHAN_IDLE, CHAN_SKIPPING, CHAN_FILLING };
typedef struct {
    int state;                          /* CHAN_IDLE, or inside a message:
                                         * skipping a torn one's remainder, or
                                         * filling `buf` */
    char *buf;                          /* the caller's buffer of `total` bytes */
    uint64_t total;                     /* the message's payload bytes */
    uint64_t filled;                    /* bytes of it copied into buf */
    uint32_t flags;                     /* its REC_RAW / REC_STR / REC_ASCII */
    uint64_t head;                      /* where the checked record `rec` is */
    chan_rec rec;
} chan_reading;

/* What chan_read_record did. */
enum {
    CHAN_READ_EMPTY,                    /* nothing is published: wait for data */
    CHAN_READ_TOOK,                     /* took a record: call again */
    CHAN_READ_BEGIN,                    /* a message of r->total bytes begins
                                         * (not taken yet): chan_read_take()
                                         * or chan_read_pass() it */
    CHAN_READ_DONE,                     /* the message in r->buf is whole */
    CHAN_READ_TORN,                     /* the message in progress was torn
                                         * (its writer or a reader died):
                                         * dropped; count it out */
    CHAN_READ_CORRUPT,                  /* the memory is corrupt (marked broken) */
};

/* Holding rlock: start reading a message (a reader before may have
 * stopped inside one: its remainder is skipped).  Returns 0, or
 * CHAN_CORRUPT. */
int chan_read_start(chan_map *m, chan_reading *r);
/* Holding rlock: check the record at head (its header and length against
 * the data published and the ring) and take it if it continues or ends
 * the message in progress.  Returns a CHAN_READ_* value. */
int chan_read_record(chan_map *m, chan_reading *r);
/* After CHAN_READ_BEGIN: copy the record's payload into r->buf (set by
 * the caller, r->total bytes) and take it.  Returns CHAN_READ_DONE if
 * the message was whole in it, else CHAN_READ_TOOK. */
int chan_read_take(chan_map *m, chan_reading *r);
/* After CHAN_READ_BEGIN: the whole message's payload where it lies in
 * the ring, if it is one record in one piece there; else NULL. */
const char *chan_read_direct(const chan_map *m, const chan_reading *r);
/* After CHAN_READ_BEGIN: take the record without copying it (read in
 * place, or dropped); the rest of a streamed message will be skipped.
 * Returns 1 if that was the whole message, else 0. */
int chan_read_pass(chan_map *m, chan_reading *r);
/* Drop the message in progress (its writer is gone; the caller counts it
 * out). */
void chan_read_abandon(chan_map *m, chan_reading *r);

/* ---- ring_message.c: with the GIL ------------------------------------ */

/* Lock a robust mutex (as chan_lock), waiting as long as it takes with
 * the GIL released and running signal handlers between slices.  Returns
 * 0, or -1 with an exception set. */
int chan_lock_blocking(pthread_mutex_t *mu);

/* Raise OSError(EBADMSG) saying that the queue's (or Pipe()'s) shared
 * memory is corrupt and why.  Returns NULL. */
PyObject *chan_raise_corrupt(chan_map *m);
/* Raise for a channel operation that failed with `err`: as above for
 * CHAN_CORRUPT, else OSError naming the failing `call`.  Returns NULL. */
PyObject *chan_oserror(chan_map *m, int err, const char *call);

/* The str whose UTF-8 is the `n` bytes at `utf8` of a message of `m` with
 * the REC_* `flags`; NULL with an exception set (OSError if the bytes are
 * not what the writer flagged: `m` is then marked corrupt). */
PyObject *chan_str_from_payload(chan_map *m, const char *utf8, Py_ssize_t n, uint32_t flags);

/* Holding rlock: read one whole message.  Returns its
 * bytes (REC_* flags in *flags); NULL without an exception for "nothing
 * before the deadline", or, with *too_long set to its length, for a
 * message longer than `limit` (left in the ring); NULL with an exception
 * on error. */
PyObject *chan_read_message(chan_map *m, int block, const fastmp_deadline *d,
                            uint32_t *flags, uint64_t limit, uint64_t *too_long);

#endif /* FASTMP_RING_H */
