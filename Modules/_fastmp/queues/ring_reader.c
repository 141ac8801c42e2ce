/* ring_reader.c - taking messages out of a channel's ring (see
 * ring.h): what the rlock holder sees published, the record reader, and
 * marking a channel broken.  The reader trusts nothing in the shared
 * memory: before a record is used, head and tail must lie on record
 * boundaries within one ring of each other, and the record's kind, flags
 * and length must fit what is published, what a record can hold and the
 * message in progress.  Nothing here touches Python objects or needs the
 * GIL; tests/fuzz/fuzz_ring.c links this file with core/futex.c alone. */
#include "queues/ring.h"
#include "core/futex.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static inline uint64_t
load_acq(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* ---- what is published ----------------------------------------------- */

uint64_t
chan_available(const chan_map *m)
{
    return load_acq(&m->sh->tail) - load_acq(&m->sh->head);
}

uint64_t
chan_readable(chan_map *m)
{
    uint64_t head = __atomic_load_n(&m->sh->head, __ATOMIC_RELAXED);
    if ((int64_t)(m->seen_tail - head) <= 0) {
        /* all seen is read (possibly by another process): look again */
        m->seen_tail = load_acq(&m->sh->tail);
    }
    return m->seen_tail - head;
}

/* ---- broken channels -------------------------------------------------- */

void
chan_wake_all(chan_map *m)
{
    chan_shared *sh = m->sh;
    uint32_t *seqs[] = {&sh->data_seq, &sh->space_seq, &sh->room_seq, &sh->slot_seq};
    for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        __atomic_add_fetch(seqs[i], 1, __ATOMIC_SEQ_CST);
        (void)fastmp_futex_wake(seqs[i], INT32_MAX);
    }
    /* join(): it wakes, looks at the channel and finds it broken */
    (void)fastmp_futex_wake(&sh->unfinished, INT32_MAX);
}

int
chan_mark_corrupt(chan_map *m, const char *why)
{
    const char *none = NULL;
    (void)__atomic_compare_exchange_n(&m->broken, &none, why, 0, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE);
    __atomic_store_n(&m->sh->corrupt, 1, __ATOMIC_SEQ_CST);
    chan_wake_all(m);
    return CHAN_CORRUPT;
}

const char *
chan_broken_elsewhere(chan_map *m)
{
    const char *none = NULL, *why = "another process found it corrupt";
    if (!__atomic_compare_exchange_n(&m->broken, &none, why, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        why = none;                     /* this process knows why */
    }
    return why;
}

/* ---- copying out ------------------------------------------------------ */

/* Copy a large piece out of the ring into a message buffer that will not
 * be read again soon: streaming stores skip reading the destination into
 * the cache first, which matters when the machine is short of memory
 * bandwidth (a 64 MiB message). */
#define STREAMING_COPY_MIN (64 * 1024)   /* smaller pieces: memcpy is as good */

static void
copy_to_fresh(void *dst, const void *src, uint64_t n)
{
#if defined(__SSE2__)
    if (n >= STREAMING_COPY_MIN) {
        unsigned char *d = dst;
        const unsigned char *s = src;
        size_t lead = (16 - ((uintptr_t)d & 15)) & 15;
        memcpy(d, s, lead);
        d += lead;
        s += lead;
        n -= lead;
        for (; n >= 64; n -= 64, d += 64, s += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)s);
            __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
            __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
            __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
            _mm_stream_si128((__m128i *)d, a);
            _mm_stream_si128((__m128i *)(d + 16), b);
            _mm_stream_si128((__m128i *)(d + 32), c);
            _mm_stream_si128((__m128i *)(d + 48), e);
        }
        _mm_sfence();
        memcpy(d, s, n);
        return;
    }
#endif
    memcpy(dst, src, n);
}

/* Copy `n` bytes (n <= capacity) from ring position `pos` (wrapping)
 * into dst. */
static void
copy_out(const chan_map *m, uint64_t pos, void *dst, uint64_t n)
{
    uint64_t at = pos & m->mask;
    uint64_t first = m->capacity - at;
    if (first >= n) {
        copy_to_fresh(dst, m->ring + at, n);
    }
    else {
        copy_to_fresh(dst, m->ring + at, first);
        copy_to_fresh((char *)dst + first, m->ring, n - first);
    }
}

/* ---- taking records --------------------------------------------------- */

/* Wake writers waiting for space (and for half the ring to be free). */
static void
notify_space(chan_map *m)
{
    chan_shared *sh = m->sh;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sh->wr_sleeping, __ATOMIC_RELAXED)
        && __atomic_exchange_n(&sh->wr_sleeping, 0, __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(&sh->space_seq, 1, __ATOMIC_SEQ_CST);
        (void)fastmp_futex_wake(&sh->space_seq, INT32_MAX);
    }
    if (__atomic_load_n(&sh->room_sleeping, __ATOMIC_RELAXED)
        && chan_available(m) <= m->capacity / 2
        && __atomic_exchange_n(&sh->room_sleeping, 0, __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(&sh->room_seq, 1, __ATOMIC_SEQ_CST);
        (void)fastmp_futex_wake(&sh->room_seq, INT32_MAX);
    }
}

/* Consume the checked record r->rec and wake writers waiting for space. */
static void
consume(chan_map *m, const chan_reading *r)
{
    __atomic_store_n(&m->sh->head, r->head + chan_record_size(r->rec.len), __ATOMIC_RELEASE);
    notify_space(m);
}

/* The flags a record of `kind` may carry on this channel. */
static uint32_t
allowed_flags(const chan_map *m, uint32_t kind)
{
    if ((kind != REC_WHOLE && kind != REC_FIRST) || (m->flags & CHAN_PIPE)) {
        return 0;                       /* a Pipe() carries bytes only */
    }
    return REC_RAW | REC_STR | REC_ASCII;
}

/* Check the record at head: r->head and r->rec are set.  Returns 0,
 * EAGAIN if nothing is published, or CHAN_CORRUPT. */
static int
check_record(chan_map *m, chan_reading *r)
{
    /* every field is read once into a local: another process may change
     * the shared one between a check and a use */
    uint64_t head = __atomic_load_n(&m->sh->head, __ATOMIC_RELAXED);
    uint64_t avail = m->seen_tail - head;
    if (avail == 0 || avail > m->capacity) {
        m->seen_tail = load_acq(&m->sh->tail);
        avail = m->seen_tail - head;
    }
    if (avail > m->capacity) {
        return chan_mark_corrupt(m, "its head and tail are further apart than the ring is long");
    }
    if ((head | m->seen_tail) & 7) {
        return chan_mark_corrupt(m, "its head or tail is not on a record boundary");
    }
    if (avail == 0) {
        /* about to wait: a reader woken because another process found the
         * channel corrupt learns it here */
        return chan_broken(m) != NULL ? CHAN_CORRUPT : EAGAIN;
    }
    /* head is 8-aligned and the ring a multiple of 8: the header is
     * contiguous */
    memcpy(&r->rec, m->ring + (head & m->mask), sizeof(r->rec));
    r->head = head;
    uint32_t kind = r->rec.kind & REC_KIND_MASK, extra = r->rec.kind & ~REC_KIND_MASK;
    uint64_t len = r->rec.len;
    if (kind < REC_WHOLE || kind > REC_ABORT) {
        return chan_mark_corrupt(m, "a record is of an unknown kind");
    }
    if ((extra & ~allowed_flags(m, kind)) != 0
        || ((extra & REC_RAW) && (extra & REC_STR))
        || ((extra & REC_ASCII) && !(extra & REC_STR))) {
        return chan_mark_corrupt(m, "a record has flags it cannot have");
    }
    if (len > chan_whole_max(m) || (kind == REC_ABORT && len != 0)
        || (kind == REC_FIRST && len < sizeof(uint64_t))) {
        return chan_mark_corrupt(m, "a record's length is impossible for its kind");
    }
    if (chan_record_size(len) > avail) {
        return chan_mark_corrupt(m, "a record is longer than the data published");
    }
    return 0;
}

int
chan_read_start(chan_map *m, chan_reading *r)
{
    memset(r, 0, sizeof(*r));
    if (chan_broken(m) != NULL) {
        return CHAN_CORRUPT;
    }
    uint32_t mid = __atomic_load_n(&m->sh->rd_in_message, __ATOMIC_RELAXED);
    if (mid > 1) {
        return chan_mark_corrupt(m, "its reader's message flag is neither 0 nor 1");
    }
    r->state = mid ? CHAN_SKIPPING : CHAN_IDLE;
    return 0;
}

/* The message in progress is over (whole or torn): the next reader
 * starts afresh. */
static void
end_message(chan_map *m, chan_reading *r)
{
    r->state = CHAN_IDLE;
    __atomic_store_n(&m->sh->rd_in_message, 0, __ATOMIC_RELAXED);
}

/* A WHOLE or FIRST record begins a message: learn its length and flags. */
static int
begin_message(chan_map *m, chan_reading *r)
{
    if (r->state == CHAN_FILLING) {
        return chan_mark_corrupt(m, "a message began inside another");
    }
    if (r->state == CHAN_SKIPPING) {
        /* the torn message's end was taken by the reader that died */
        end_message(m, r);
        return CHAN_READ_TORN;
    }
    uint64_t len = r->rec.len;
    r->flags = r->rec.kind & (REC_RAW | REC_STR | REC_ASCII);
    r->filled = 0;
    r->buf = NULL;
    if ((r->rec.kind & REC_KIND_MASK) == REC_WHOLE) {
        r->total = len;
        return CHAN_READ_BEGIN;
    }
    copy_out(m, r->head + sizeof(chan_rec), &r->total, sizeof(r->total));
    if (r->total <= len - sizeof(uint64_t) || r->total > SIZE_MAX / 2) {
        return chan_mark_corrupt(m, "a streamed message's length does not fit its first piece");
    }
    return CHAN_READ_BEGIN;
}

/* A MORE or LAST record continues the message in progress. */
static int
continue_message(chan_map *m, chan_reading *r)
{
    uint64_t len = r->rec.len;
    int last = (r->rec.kind & REC_KIND_MASK) == REC_LAST;
    if (r->state == CHAN_IDLE) {
        return chan_mark_corrupt(m, "a message went on that never began");
    }
    if (r->state == CHAN_FILLING) {
        if (len > r->total - r->filled || (last && r->filled + len != r->total)) {
            return chan_mark_corrupt(m, "a message's pieces do not add up to its length");
        }
        copy_out(m, r->head + sizeof(chan_rec), r->buf + r->filled, len);
        r->filled += len;
    }
    consume(m, r);
    if (!last) {
        return CHAN_READ_TOOK;
    }
    int torn = r->state == CHAN_SKIPPING;
    end_message(m, r);
    return torn ? CHAN_READ_TORN : CHAN_READ_DONE;
}

int
chan_read_record(chan_map *m, chan_reading *r)
{
    int err = check_record(m, r);
    if (err) {
        return err == EAGAIN ? CHAN_READ_EMPTY : CHAN_READ_CORRUPT;
    }
    int rc;
    switch (r->rec.kind & REC_KIND_MASK) {
    case REC_WHOLE:
    case REC_FIRST:
        rc = begin_message(m, r);
        break;
    case REC_MORE:
    case REC_LAST:
        rc = continue_message(m, r);
        break;
    default:
        /* ABORT: the message in progress, if any, is torn */
        consume(m, r);
        rc = r->state == CHAN_IDLE ? CHAN_READ_TOOK : CHAN_READ_TORN;
        end_message(m, r);
        break;
    }
    return rc == CHAN_CORRUPT ? CHAN_READ_CORRUPT : rc;
}

/* After CHAN_READ_BEGIN: the message is taken in (its first record
 * consumed); a streamed one goes on in `state`. */
static int
took_first(chan_map *m, chan_reading *r, int state)
{
    if ((r->rec.kind & REC_KIND_MASK) == REC_WHOLE) {
        consume(m, r);
        return 1;
    }
    /* set before the record goes, for the next reader if this one dies */
    __atomic_store_n(&m->sh->rd_in_message, 1, __ATOMIC_RELAXED);
    r->state = state;
    consume(m, r);
    return 0;
}

int
chan_read_take(chan_map *m, chan_reading *r)
{
    uint64_t skip = (r->rec.kind & REC_KIND_MASK) == REC_FIRST ? sizeof(uint64_t) : 0;
    r->filled = r->rec.len - skip;
    copy_out(m, r->head + sizeof(chan_rec) + skip, r->buf, r->filled);
    return took_first(m, r, CHAN_FILLING) ? CHAN_READ_DONE : CHAN_READ_TOOK;
}

const char *
chan_read_direct(const chan_map *m, const chan_reading *r)
{
    uint64_t at = (r->head + sizeof(chan_rec)) & m->mask;
    if ((r->rec.kind & REC_KIND_MASK) != REC_WHOLE || m->capacity - at < r->total) {
        return NULL;
    }
    return (const char *)m->ring + at;
}

int
chan_read_pass(chan_map *m, chan_reading *r)
{
    return took_first(m, r, CHAN_SKIPPING);
}

void
chan_read_abandon(chan_map *m, chan_reading *r)
{
    end_message(m, r);
}
