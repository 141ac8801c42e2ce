/* ring.c - the shared-memory ring behind Queue and Pipe(): creating and
 * mapping the memfd, the robust locks, writing records, the futex waits
 * and the message counts (records are read in ring_reader.c).  Nothing
 * here touches Python objects or needs the GIL; errors are errno values.
 * See ring.h for the layout, the crash rules and what is checked. */
#include "queues/ring.h"
#include "core/deadline.h"
#include "core/futex.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLICE_NS 50000000L              /* signal-check slice for waits */
/* A fresh message buffer at least this large asks for huge pages */
#define HUGE_PAGE_BYTES (2u << 20)
#define ADVISE_HUGE_MIN (4u << 20)

static inline uint64_t
load_acq(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void
store_rel(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* ---- mapping --------------------------------------------------------- */

static int
init_robust_mutex(pthread_mutex_t *mu)
{
    pthread_mutexattr_t attr;
    int err = pthread_mutexattr_init(&attr);
    if (err) {
        return err;
    }
    if ((err = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)) == 0
        && (err = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)) == 0) {
        err = pthread_mutex_init(mu, &attr);
    }
    pthread_mutexattr_destroy(&attr);
    return err;
}

static int
map_fd(int fd, size_t len, chan_map **out)
{
    chan_map *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return ENOMEM;
    }
    void *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int err = errno;
        free(m);
        return err;
    }
    m->sh = base;
    m->ring = (unsigned char *)base + CHAN_HEADER_SIZE;
    m->map_len = len;
    m->fd = fd;
    m->efd = -1;
    m->refs = 1;
    m->pid = -1;                        /* feeder state not set up yet */
    *out = m;
    return 0;
}

int
chan_map_create(uint64_t capacity, uint32_t maxsize, uint32_t flags, chan_map **out)
{
    int fd = memfd_create("fastmp-queue", MFD_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    size_t len = CHAN_HEADER_SIZE + capacity;
    chan_map *m = NULL;
    int err = ftruncate(fd, (off_t)len) < 0 ? errno : map_fd(fd, len, &m);
    if (err) {
        close(fd);
        return err;
    }
    m->efd = (flags & CHAN_PIPE) ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->efd < 0 && !(flags & CHAN_PIPE)) {
        err = errno;
        chan_map_decref(m);
        return err;
    }
    chan_shared *sh = m->sh;            /* fresh memfd pages are zero */
    sh->capacity = m->capacity = capacity;
    sh->maxsize = m->maxsize = maxsize;
    sh->flags = m->flags = flags;
    if ((err = init_robust_mutex(&sh->wlock)) != 0
        || (err = init_robust_mutex(&sh->rlock)) != 0) {
        chan_map_decref(m);
        return err;
    }
    m->mask = capacity - 1;
    __atomic_store_n(&sh->magic, CHAN_MAGIC, __ATOMIC_RELEASE);
    *out = m;
    return 0;
}

int
chan_map_attach(int fd, int efd, chan_map **out)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        return errno;
    }
    if (st.st_size <= CHAN_HEADER_SIZE) {
        return EINVAL;
    }
    chan_map *m = NULL;
    int err = map_fd(fd, (size_t)st.st_size, &m);
    if (err) {
        return err;
    }
    /* from here on this process uses its own copies of these */
    uint64_t cap = m->sh->capacity;
    uint32_t flags = m->sh->flags, maxsize = m->sh->maxsize;
    if (__atomic_load_n(&m->sh->magic, __ATOMIC_ACQUIRE) != CHAN_MAGIC
        || cap < CHAN_MIN_CAPACITY || cap > CHAN_MAX_CAPACITY || (cap & (cap - 1)) != 0
        || cap + CHAN_HEADER_SIZE != (uint64_t)st.st_size
        || (flags & ~CHAN_KINDS) != 0 || !(flags & CHAN_PIPE) != (efd >= 0)
        || maxsize > INT32_MAX) {
        m->fd = -1;                     /* not ours to close on failure */
        chan_map_decref(m);
        return EINVAL;
    }
    m->efd = efd;
    m->capacity = cap;
    m->mask = cap - 1;
    m->flags = flags;
    m->maxsize = maxsize;
    *out = m;
    return 0;
}

void
chan_map_incref(chan_map *m)
{
    __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
}

void
chan_map_decref(chan_map *m)
{
    if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) != 0) {
        return;
    }
    if (m->pid >= 0) {
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->work);
        pthread_cond_destroy(&m->idle);
    }
    munmap(m->sh, m->map_len);
    if (m->fd >= 0) {
        close(m->fd);
    }
    if (m->efd >= 0) {
        close(m->efd);
    }
    free(m);
}

/* ---- locks ----------------------------------------------------------- */

const fastmp_deadline chan_no_wait = {0, {0, 0}};
const fastmp_deadline chan_forever = {1, {0, 0}};

/* The earlier of `d` and `ns` from now, in *until.  Returns 1 if that is
 * `d` itself (a timeout there is final), 0 if it is the other. */
static int
earlier_end(const fastmp_deadline *d, long ns, fastmp_deadline *until)
{
    fastmp_deadline_from_seconds(ns / 1e9, until);
    if (!d->infinite
        && (d->at.tv_sec < until->at.tv_sec
            || (d->at.tv_sec == until->at.tv_sec && d->at.tv_nsec < until->at.tv_nsec))) {
        *until = *d;
        return 1;
    }
    return 0;
}

/* The earlier of `d` and one signal-check slice from now (a timeout at
 * the slice means "check signals, then go on"); see earlier_end. */
static int
slice_end(const fastmp_deadline *d, fastmp_deadline *until)
{
    return earlier_end(d, SLICE_NS, until);
}

/* Sleep on the futex `word` while it holds `expected`, until `d` but for
 * one signal-check slice at most: a signal that came while the caller was
 * not asleep yet is then seen within a slice.  Returns as
 * fastmp_futex_wait(), with EINTR at the end of a slice too. */
static int
wait_slice(uint32_t *word, uint32_t expected, const fastmp_deadline *d)
{
    fastmp_deadline until;
    int final = slice_end(d, &until);
    int err = fastmp_futex_wait(word, expected, &until);
    return err == ETIMEDOUT && !final ? EINTR : err;
}

int
chan_lock(pthread_mutex_t *mu, const fastmp_deadline *d, int wait)
{
    int err = pthread_mutex_trylock(mu);
    if (err == EBUSY && wait) {
        fastmp_deadline until;
        int final = slice_end(d, &until);
        err = pthread_mutex_clocklock(mu, CLOCK_MONOTONIC, &until.at);
        if (err == ETIMEDOUT && !final) {
            return EINTR;
        }
    }
    if (err == EOWNERDEAD) {
        /* the holder died: the lock is ours; the shared flags say what to
         * repair, so the state is consistent as far as the lock goes */
        err = pthread_mutex_consistent(mu);
    }
    return err;
}

/* A writer's tries for wlock, spun by fastmp_spin. */
typedef struct {
    chan_map *m;
    int err;                            /* what the last try returned */
} wlock_tries;

/* fastmp_spin's test for wlock: over once a try ends otherwise than with
 * EBUSY, or once the holder may keep the lock long */
static int
wlock_settled(void *arg)
{
    wlock_tries *t = arg;
    if (chan_streaming(t->m)) {
        return 1;
    }
    t->err = chan_lock(&t->m->sh->wlock, &chan_no_wait, 0);
    return t->err != EBUSY;
}

int
chan_lock_writer(chan_map *m, const fastmp_deadline *d, int patient)
{
    int err = chan_lock(&m->sh->wlock, &chan_no_wait, 0);
    /* another producer holds the lock for one small message, which takes
     * well under a microsecond: worth a short spin, then a short sleep;
     * not so for a message being streamed, which can take long */
    if (patient && err == EBUSY && !chan_streaming(m) && fastmp_spin_wanted(FASTMP_WAIT_RING_WLOCK, NULL)) {
        wlock_tries t = {m, EBUSY};
        (void)fastmp_spin(FASTMP_WAIT_RING_WLOCK, NULL, NULL, wlock_settled, &t);
        err = t.err;
    }
    if (patient && err == EBUSY && !chan_streaming(m) && fastmp_spin_wanted(FASTMP_WAIT_RING_WLOCK, NULL)) {
        struct timespec left;
        if (fastmp_deadline_remaining(d, &left)) {
            err = chan_lock(&m->sh->wlock, d, 1);
            if (err == ETIMEDOUT || err == EINTR) {
                err = EBUSY;
            }
        }
    }
    if (err == 0 && (err = chan_repair_writer(m)) != 0) {
        chan_unlock(&m->sh->wlock);
    }
    return err;
}

int
chan_streaming(const chan_map *m)
{
    /* streaming a large message, or waiting for room in a full ring */
    return __atomic_load_n(&m->sh->wr_in_message, __ATOMIC_RELAXED) != 0
           || __atomic_load_n(&m->sh->wr_sleeping, __ATOMIC_RELAXED) != 0;
}

void
chan_unlock(pthread_mutex_t *mu)
{
    (void)pthread_mutex_unlock(mu);
}

/* ---- writing --------------------------------------------------------- */

/* Free bytes for the wlock holder, in *room; re-reads head only when the
 * cached value shows less than `need`.  Returns 0, or CHAN_CORRUPT when
 * head and tail are not record boundaries within a ring of each other. */
static int
free_space(chan_map *m, uint64_t need, uint64_t *room)
{
    uint64_t tail = __atomic_load_n(&m->sh->tail, __ATOMIC_RELAXED);
    uint64_t used = tail - m->seen_head;
    if (used > m->capacity || m->capacity - used < need) {
        /* stale (another process wrote since) or short: look again */
        m->seen_head = load_acq(&m->sh->head);
        used = tail - m->seen_head;
    }
    if (used > m->capacity || ((tail | m->seen_head) & 7)) {
        return chan_mark_corrupt(m, "its head and tail are not a ring's records apart");
    }
    *room = m->capacity - used;
    return 0;
}

/* Whether a record needing `need` bytes fits now: returns 0 if it does,
 * EAGAIN if not, or CHAN_CORRUPT (also for a channel already broken). */
static int
check_room(chan_map *m, uint64_t need)
{
    uint64_t room = 0;
    int err = free_space(m, need, &room);
    if (err == 0 && room < need) {
        /* about to wait: a writer woken because a reader (maybe in another
         * process) found the channel corrupt learns it here */
        err = chan_broken(m) != NULL ? CHAN_CORRUPT : EAGAIN;
    }
    return err;
}

/* Copy n bytes to the ring at absolute position pos (wrapping). */
static void
ring_put(chan_map *m, uint64_t pos, const void *src, uint64_t n)
{
    uint64_t at = pos & m->mask;
    uint64_t first = m->capacity - at;
    if (first >= n) {
        memcpy(m->ring + at, src, n);
    }
    else {
        memcpy(m->ring + at, src, first);
        memcpy(m->ring, (const char *)src + first, n - first);
    }
}

/* Make the readiness eventfd readable (it counts; a reader drains it). */
static void
signal_ready(chan_map *m)
{
    uint64_t one = 1;
    /* EAGAIN would mean the counter is saturated: it is readable anyway */
    (void)!write(m->efd, &one, sizeof(one));
}

int
chan_watch(chan_map *m)
{
    /* pairs with the fence in chan_notify_data: a writer that published
     * before seeing the flag is caught by the check below */
    __atomic_store_n(&m->sh->watched, 1, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (chan_available(m)) {
        signal_ready(m);
    }
    return m->efd;
}

void
chan_rearm(chan_map *m)
{
    if (!__atomic_load_n(&m->sh->watched, __ATOMIC_RELAXED)) {
        return;
    }
    uint64_t count;
    (void)!read(m->efd, &count, sizeof(count));
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (chan_available(m)) {
        signal_ready(m);
    }
}

void
chan_notify_data(chan_map *m)
{
    chan_shared *sh = m->sh;
    /* pairs with the fence in chan_wait_data: either the reader sees the
     * new tail or we see its flag; only the first waker pays a syscall */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sh->watched, __ATOMIC_RELAXED)) {
        signal_ready(m);
    }
    if (__atomic_load_n(&sh->rd_sleeping, __ATOMIC_RELAXED)
        && __atomic_exchange_n(&sh->rd_sleeping, 0, __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(&sh->data_seq, 1, __ATOMIC_SEQ_CST);
        (void)fastmp_futex_wake(&sh->data_seq, INT32_MAX);
    }
}

/* Write one record (header, then payload parts a and b) at tail and
 * publish it. */
static void
put_record(chan_map *m, uint32_t kind, const void *a, uint64_t alen,
           const void *b, uint64_t blen)
{
    chan_shared *sh = m->sh;
    chan_rec rec = {(uint32_t)(alen + blen), kind};
    uint64_t pos = __atomic_load_n(&sh->tail, __ATOMIC_RELAXED);
    ring_put(m, pos, &rec, sizeof(rec));
    if (alen) {
        ring_put(m, pos + sizeof(rec), a, alen);
    }
    if (blen) {
        ring_put(m, pos + sizeof(rec) + alen, b, blen);
    }
    store_rel(&sh->tail, pos + chan_record_size(alen + blen));
}

int
chan_repair_writer(chan_map *m)
{
    if (chan_broken(m) != NULL) {
        return CHAN_CORRUPT;
    }
    uint32_t torn = __atomic_load_n(&m->sh->wr_in_message, __ATOMIC_RELAXED);
    if (torn > 1) {
        return chan_mark_corrupt(m, "its writer's message flag is neither 0 nor 1");
    }
    if (torn) {
        /* a streamed message was cut off; its writer kept room for this */
        int err = check_room(m, sizeof(chan_rec));
        if (err) {
            return err == EAGAIN ? chan_mark_corrupt(m, "no room was kept to end a torn message")
                                 : err;
        }
        put_record(m, REC_ABORT, NULL, 0, NULL, 0);
        m->sh->wr_in_message = 0;
        chan_notify_data(m);
    }
    return 0;
}

int
chan_try_write_whole(chan_map *m, const char *data, uint64_t len, uint32_t flags)
{
    if (len > chan_whole_max(m)) {
        return EAGAIN;
    }
    int err = check_room(m, chan_record_size(len));
    if (err) {
        return err;
    }
    put_record(m, REC_WHOLE | flags, data, len, NULL, 0);
    chan_notify_data(m);
    return 0;
}

/* Sleep until the free space may have changed from what `seen` shows, or
 * until `d` / one slice passes.  Returns 0, ETIMEDOUT or EINTR. */
static int
wait_space(chan_map *m, uint64_t need, const fastmp_deadline *d)
{
    chan_shared *sh = m->sh;
    struct timespec left;
    if (!fastmp_deadline_remaining(d, &left)) {
        return ETIMEDOUT;
    }
    uint32_t seq = __atomic_load_n(&sh->space_seq, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sh->wr_sleeping, 1, __ATOMIC_SEQ_CST);
    int err = check_room(m, need);
    if (err == EAGAIN) {
        err = wait_slice(&sh->space_seq, seq, d);
    }
    __atomic_store_n(&sh->wr_sleeping, 0, __ATOMIC_SEQ_CST);
    return err;
}

int
chan_write(chan_map *m, chan_wmsg *w, const fastmp_deadline *d)
{
    uint64_t whole_max = chan_whole_max(m);
    while (!w->started || w->sent < w->len) {
        uint64_t need, chunk;
        if (!w->started && w->len <= whole_max) {
            chunk = w->len;
            need = chan_record_size(chunk);
        }
        else {
            /* a streamed piece, keeping room for an ABORT record after it */
            uint64_t header = w->started ? 0 : sizeof(uint64_t);
            chunk = w->len - w->sent;
            if (chunk > whole_max - header) {
                chunk = whole_max - header;
            }
            need = chan_record_size(header + chunk) + sizeof(chan_rec);
        }
        int err = check_room(m, need);
        if (err == EAGAIN) {
            err = wait_space(m, need, d);
            if (err) {
                return err;
            }
            continue;
        }
        if (err) {
            return err;
        }
        const char *src = w->data + w->sent;
        if (!w->started && w->len <= whole_max) {
            put_record(m, REC_WHOLE | w->flags, src, chunk, NULL, 0);
        }
        else if (!w->started) {
            m->sh->wr_in_message = 1;
            uint64_t total = w->len;
            put_record(m, REC_FIRST | w->flags, &total, sizeof(total), src, chunk);
        }
        else {
            int last = w->sent + chunk == w->len;
            put_record(m, last ? REC_LAST : REC_MORE, src, chunk, NULL, 0);
            if (last) {
                m->sh->wr_in_message = 0;
            }
        }
        w->started = 1;
        w->sent += chunk;
        chan_notify_data(m);
    }
    return 0;
}

/* ---- reading --------------------------------------------------------- */

/* fastmp_spin's test for a reader: the ring holds data */
static int
data_came(void *m)
{
    return chan_available(m) != 0;
}

int
chan_spin_data(chan_map *m)
{
    return fastmp_spin_wanted(FASTMP_WAIT_RING_DATA, &m->spin)
           && fastmp_spin(FASTMP_WAIT_RING_DATA, &m->spin, NULL, data_came, m);
}

int
chan_wait_data(chan_map *m, const fastmp_deadline *d, uint32_t shut_seen)
{
    chan_shared *sh = m->sh;
    if (chan_spin_data(m)) {
        return 0;
    }
    fastmp_deadline until;
    int final = slice_end(d, &until);
    uint32_t seq = __atomic_load_n(&sh->data_seq, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sh->rd_sleeping, 1, __ATOMIC_SEQ_CST);
    int err = 0;
    /* chan_shut_down bumps data_seq after raising the state, and
     * chan_count_drop after lowering the count: either we see the change
     * here or the futex sees the new sequence */
    if (!chan_available(m) && chan_shut_state(m) == shut_seen
        && !chan_shut_and_drained(m, shut_seen)) {
        err = fastmp_futex_wait(&sh->data_seq, seq, &until);
    }
    __atomic_store_n(&sh->rd_sleeping, 0, __ATOMIC_SEQ_CST);
    /* the end of a slice: look at signals, then wait again */
    return err == ETIMEDOUT && !final ? EINTR : err;
}

void
chan_advise_fresh(void *buf, uint64_t n)
{
#ifdef MADV_HUGEPAGE
    if (n < ADVISE_HUGE_MIN) {
        return;
    }
    uintptr_t start = ((uintptr_t)buf + HUGE_PAGE_BYTES - 1) & ~(uintptr_t)(HUGE_PAGE_BYTES - 1);
    uintptr_t end = ((uintptr_t)buf + n) & ~(uintptr_t)(HUGE_PAGE_BYTES - 1);
    if (end > start) {
        /* a hint: without it the pages simply stay small */
        (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
    }
#else
    (void)buf;
    (void)n;
#endif
}

int
chan_wait_room(chan_map *m, const fastmp_deadline *d, long stall_ns)
{
    chan_shared *sh = m->sh;
    for (;;) {
        fastmp_deadline until;
        int final = earlier_end(d, stall_ns, &until);
        uint64_t head = load_acq(&sh->head);
        uint32_t seq = __atomic_load_n(&sh->room_seq, __ATOMIC_SEQ_CST);
        /* left set on return: other writers may be waiting too, and a
         * stale flag costs one needless wake-up at most */
        __atomic_store_n(&sh->room_sleeping, 1, __ATOMIC_SEQ_CST);
        if (chan_available(m) <= m->capacity / 2) {
            return 0;
        }
        int err = fastmp_futex_wait(&sh->room_seq, seq, &until);
        if (err != ETIMEDOUT) {
            return err;
        }
        if (final || load_acq(&sh->head) == head) {
            return ETIMEDOUT;
        }
    }
}

int
chan_writer_gone(chan_map *m)
{
    chan_shared *sh = m->sh;
    if (chan_lock(&sh->wlock, &chan_no_wait, 0) != 0) {
        return 0;                       /* a live writer is at work */
    }
    int gone = 0;
    if (!chan_readable(m)) {
        /* nobody is writing and the message we are in never finished:
         * whatever its writer published is already read, so just forget
         * that it was streaming */
        sh->wr_in_message = 0;
        gone = 1;
    }
    chan_unlock(&sh->wlock);
    return gone;
}

/* ---- counters -------------------------------------------------------- */

int
chan_count_in(chan_map *m, const fastmp_deadline *d)
{
    chan_shared *sh = m->sh;
    if (m->maxsize == 0) {
        /* sequentially consistent, like the count below: the put looks at
         * the shutdown state after it (see ring.h) */
        __atomic_add_fetch(&sh->n_put, 1, __ATOMIC_SEQ_CST);
        return 0;
    }
    for (;;) {
        uint32_t c = __atomic_load_n(&sh->count, __ATOMIC_SEQ_CST);
        if (chan_broken(m) != NULL) {
            return CHAN_CORRUPT;
        }
        if (c > m->maxsize) {
            return chan_mark_corrupt(m, "it counts more messages than the queue holds");
        }
        if (c < m->maxsize) {
            if (__atomic_compare_exchange_n(&sh->count, &c, c + 1, 0,
                                            __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
                return 0;
            }
            continue;
        }
        /* sleep unless a slot freed or the queue shut down since `seq`
         * was read: both bump it after their change */
        uint32_t seq = __atomic_load_n(&sh->slot_seq, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&sh->slot_waiters, 1, __ATOMIC_SEQ_CST);
        int err = 0;
        if (__atomic_load_n(&sh->count, __ATOMIC_SEQ_CST) >= m->maxsize
            && chan_shut_state(m) == CHAN_OPEN) {
            err = wait_slice(&sh->slot_seq, seq, d);
        }
        __atomic_sub_fetch(&sh->slot_waiters, 1, __ATOMIC_SEQ_CST);
        if (err) {
            return err;
        }
        if (chan_shut_state(m) != CHAN_OPEN) {
            return ESHUTDOWN;
        }
    }
}

/* Take one message off a bounded queue's count and wake a blocked put. */
static void
release_slot(chan_shared *sh)
{
    uint32_t c = __atomic_load_n(&sh->count, __ATOMIC_RELAXED);
    /* never below zero, even after a crash miscounted */
    while (c && !__atomic_compare_exchange_n(&sh->count, &c, c - 1, 0,
                                             __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    if (__atomic_load_n(&sh->slot_waiters, __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(&sh->slot_seq, 1, __ATOMIC_SEQ_CST);
        (void)fastmp_futex_wake(&sh->slot_seq, 1);
    }
}

void
chan_count_done(chan_map *m)
{
    chan_shared *sh = m->sh;
    if (m->maxsize) {
        release_slot(sh);
    }
    else {
        /* only the rlock holder writes n_got */
        __atomic_store_n(&sh->n_got, sh->n_got + 1, __ATOMIC_RELAXED);
    }
}

void
chan_count_cancel(chan_map *m)
{
    chan_shared *sh = m->sh;
    if (m->maxsize) {
        release_slot(sh);
    }
    else {
        __atomic_sub_fetch(&sh->n_put, 1, __ATOMIC_SEQ_CST);
    }
}

/* JoinableQueue: one unfinished task less (never below zero, as
 * queue.Queue), waking join() when none is left. */
static void
drop_task(chan_map *m)
{
    chan_shared *sh = m->sh;
    if (!(m->flags & CHAN_JOINABLE)) {
        return;
    }
    uint32_t u = __atomic_load_n(&sh->unfinished, __ATOMIC_SEQ_CST);
    while (u && !__atomic_compare_exchange_n(&sh->unfinished, &u, u - 1, 0,
                                             __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    if (u == 1 && __atomic_load_n(&sh->join_waiters, __ATOMIC_SEQ_CST)) {
        (void)fastmp_futex_wake(&sh->unfinished, INT32_MAX);
    }
}

/* Wake every reader sleeping for data, so that it looks at the shutdown
 * state and the count again. */
static void
wake_readers(chan_shared *sh)
{
    __atomic_add_fetch(&sh->data_seq, 1, __ATOMIC_SEQ_CST);
    (void)fastmp_futex_wake(&sh->data_seq, INT32_MAX);
}

void
chan_count_drop(chan_map *m)
{
    /* the count first: join() may return as soon as the task is gone,
     * and qsize() then must not count this message */
    chan_count_cancel(m);
    drop_task(m);
    if (chan_shut_state(m) != CHAN_OPEN) {
        /* a reader of a shut-down queue may be waiting for this very
         * message (chan_shut_and_drained): it will not come */
        wake_readers(m->sh);
    }
}

int
chan_qsize(chan_map *m, uint64_t *n)
{
    const chan_shared *sh = m->sh;
    if (m->maxsize) {
        uint32_t c = __atomic_load_n(&sh->count, __ATOMIC_SEQ_CST);
        if (c > m->maxsize) {
            return chan_mark_corrupt(m, "it counts more messages than the queue holds");
        }
        *n = c;
        return 0;
    }
    /* n_put and n_got bound nothing: any values are possible */
    uint64_t got = __atomic_load_n(&sh->n_got, __ATOMIC_SEQ_CST);
    uint64_t put = __atomic_load_n(&sh->n_put, __ATOMIC_SEQ_CST);
    *n = put > got ? put - got : 0;
    return 0;
}

int
chan_wait_joined(chan_map *m)
{
    chan_shared *sh = m->sh;
    for (;;) {
        uint32_t u = __atomic_load_n(&sh->unfinished, __ATOMIC_SEQ_CST);
        if (u == 0) {
            return 0;
        }
        if (chan_broken(m) != NULL) {
            return CHAN_CORRUPT;
        }
        __atomic_add_fetch(&sh->join_waiters, 1, __ATOMIC_SEQ_CST);
        int err = wait_slice(&sh->unfinished, u, &chan_forever);
        __atomic_sub_fetch(&sh->join_waiters, 1, __ATOMIC_SEQ_CST);
        if (err) {
            return err;                 /* EINTR: let the caller see signals */
        }
    }
}

/* ---- shutdown -------------------------------------------------------- */

void
chan_shut_down(chan_map *m, uint32_t how)
{
    chan_shared *sh = m->sh;
    uint32_t old = chan_shut_state(m);
    while (old < how && !__atomic_compare_exchange_n(&sh->shut, &old, how, 0,
                                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    if (old >= how) {
        return;                         /* nothing new: already woken */
    }
    /* every sleeper re-reads the state after reading its sequence word
     * (chan_wait_data, chan_count_in), so bumping the word after the
     * state wakes it or keeps it from sleeping */
    wake_readers(sh);
    __atomic_add_fetch(&sh->slot_seq, 1, __ATOMIC_SEQ_CST);
    (void)fastmp_futex_wake(&sh->slot_seq, INT32_MAX);
    if (__atomic_load_n(&sh->watched, __ATOMIC_SEQ_CST)) {
        signal_ready(m);                /* a waiting get() now raises */
    }
}

int
chan_shut_and_drained(chan_map *m, uint32_t shut)
{
    /* after a plain shutdown, messages counted in but not in the ring yet
     * (another process's buffer, a put still writing) are still to come;
     * a corrupt count: nothing will come that can be read */
    uint64_t n = 0;             /* set unless chan_qsize fails */
    return shut >= CHAN_SHUT_NOW
           || (shut != CHAN_OPEN && (chan_qsize(m, &n) != 0 || n == 0));
}

/* A message discarded from the ring: read, as far as counts go, and its
 * task done. */
static void
discarded(chan_map *m)
{
    chan_count_done(m);
    drop_task(m);
}

/* Holding rlock: take every record published, counting each message that
 * ends as discarded.  A message whose end is not published yet is left
 * half-taken (rd_in_message), for the next reader to skip.  Returns 0 or
 * CHAN_CORRUPT. */
static int
discard_ring(chan_map *m)
{
    chan_reading r;
    int err = chan_read_start(m, &r);
    while (err == 0) {
        switch (chan_read_record(m, &r)) {
        case CHAN_READ_EMPTY:
            return 0;
        case CHAN_READ_CORRUPT:
            err = CHAN_CORRUPT;
            break;
        case CHAN_READ_BEGIN:
            if (chan_read_pass(m, &r)) {
                discarded(m);           /* whole; a streamed one ends below */
            }
            break;
        case CHAN_READ_TORN:            /* a streamed message ends, or a torn one */
            discarded(m);
            break;
        default:                        /* CHAN_READ_TOOK: go on */
            break;
        }
    }
    return err;
}

int
chan_discard_all(chan_map *m)
{
    chan_shared *sh = m->sh;
    int err = chan_lock(&sh->wlock, &chan_forever, 1);
    if (err == EINTR) {
        /* its holder may be streaming a message into a full ring */
        if (chan_lock(&sh->rlock, &chan_no_wait, 0) == 0) {
            err = discard_ring(m);
            chan_unlock(&sh->rlock);
        }
        return err ? err : EINTR;
    }
    if (err) {
        return err;
    }
    err = chan_repair_writer(m);
    if (err == 0) {
        /* readers holding rlock were woken by the state change and let go
         * (EINTR at the end of a slice: the caller calls again) */
        err = chan_lock(&sh->rlock, &chan_forever, 1);
        if (err == 0) {
            err = discard_ring(m);
            chan_unlock(&sh->rlock);
        }
    }
    chan_unlock(&sh->wlock);
    return err;
}
