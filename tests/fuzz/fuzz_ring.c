/* fuzz_ring.c - libFuzzer target for the record reader of the Queue and
 * Pipe() rings (Modules/_fastmp/queues/ring_reader.c, linked as is, with
 * core/futex.c).  The input is what another process could have left in the
 * shared memory: the head and tail counters, the reader's message flag,
 * and the ring's bytes from head on.  The harness reads messages out of it
 * as chan_read_message() does, into buffers of exactly the announced
 * size, until the ring is empty or found corrupt; AddressSanitizer
 * catches any access outside the ring or a buffer. */
#include "queues/ring.h"

#include <stdlib.h>
#include <string.h>

#define CAPACITY CHAN_MIN_CAPACITY
#define BUFFER_MAX (1u << 20)           /* larger messages are dropped */
#define MESSAGES_MAX 64

/* Take `n` bytes of the input (zeros once it is used up). */
static void
take(const uint8_t **data, size_t *size, void *out, size_t n)
{
    size_t k = *size < n ? *size : n;
    memset(out, 0, n);
    memcpy(out, *data, k);
    *data += k;
    *size -= k;
}

/* Lay the input out as the shared memory of a channel; NULL if too short. */
static chan_map *
make_channel(const uint8_t *data, size_t size)
{
    uint8_t mode;
    take(&data, &size, &mode, 1);
    chan_map *m = calloc(1, sizeof(*m));
    unsigned char *mem = calloc(1, CHAN_HEADER_SIZE + CAPACITY);
    if (m == NULL || mem == NULL) {
        abort();
    }
    m->sh = (chan_shared *)mem;
    m->ring = mem + CHAN_HEADER_SIZE;
    m->capacity = CAPACITY;
    m->mask = CAPACITY - 1;
    m->flags = (mode & 1) ? CHAN_PIPE : 0;
    m->pid = -1;
    chan_shared *sh = m->sh;
    sh->capacity = CAPACITY;
    if (mode & 2) {
        /* raw counters, as anything may have written them */
        take(&data, &size, &sh->head, sizeof(sh->head));
        take(&data, &size, &sh->tail, sizeof(sh->tail));
        take(&data, &size, &sh->rd_in_message, sizeof(sh->rd_in_message));
        sh->corrupt = (mode & 8) != 0;  /* as another process marks it */
    }
    else {
        /* counters on record boundaries, at most a ring apart, so that
         * the records themselves get looked at */
        uint32_t head;
        uint16_t used;
        take(&data, &size, &head, sizeof(head));
        take(&data, &size, &used, sizeof(used));
        sh->head = (uint64_t)head * 8;
        sh->tail = sh->head + (uint64_t)(used % (CAPACITY / 8 + 1)) * 8;
        sh->rd_in_message = (mode & 4) != 0;
    }
    /* the reader's private view of tail, which no other process writes:
     * the tail as it last read it, which is the tail found here (left at
     * 0, a cache no reader could hold made it read bytes never published) */
    m->seen_tail = sh->tail;
    for (size_t i = 0; i < size && i < CAPACITY; i++) {
        m->ring[(sh->head + i) & m->mask] = data[i];
    }
    return m;
}

static void
free_channel(chan_map *m)
{
    free(m->sh);
    free(m);
}

/* Read every byte of a message handed out in place. */
static void
touch(const char *p, uint64_t n)
{
    volatile unsigned char sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        sum += (unsigned char)p[i];
    }
}

/* Read one message as chan_read_message() does.  Returns 0 to go on with
 * the next one, 1 when the ring is empty or corrupt. */
static int
read_message(chan_map *m)
{
    chan_reading r;
    char *buf = NULL;
    int over = 0;
    if (chan_read_start(m, &r) != 0) {
        return 1;
    }
    for (int steps = 0; !over; steps++) {
        if (steps > 2 * CAPACITY) {
            abort();                    /* each step takes a record or ends */
        }
        int event = chan_read_record(m, &r);
        switch (event) {
        case CHAN_READ_TOOK:
            if (r.state == CHAN_FILLING && (r.filled > r.total || r.buf != buf)) {
                abort();
            }
            continue;
        case CHAN_READ_TORN:
            free(buf);
            buf = NULL;
            continue;
        case CHAN_READ_BEGIN:
            if (r.flags & REC_STR) {
                const char *direct = chan_read_direct(m, &r);
                if (direct != NULL) {
                    touch(direct, r.total);
                    if (!chan_read_pass(m, &r)) {
                        abort();        /* in place means whole */
                    }
                    return 0;
                }
            }
            if (r.total > BUFFER_MAX) {
                if (chan_read_pass(m, &r)) {
                    return 0;
                }
                continue;               /* as when the buffer cannot be had */
            }
            if ((buf = malloc(r.total ? (size_t)r.total : 1)) == NULL) {
                abort();
            }
            r.buf = buf;
            if (chan_read_take(m, &r) == CHAN_READ_DONE) {
                over = 1;
            }
            continue;
        case CHAN_READ_DONE:
            if (r.filled != r.total) {
                abort();
            }
            over = 1;
            continue;
        case CHAN_READ_EMPTY:
            if (r.state == CHAN_IDLE) {
                free(buf);
                return 1;
            }
            chan_read_abandon(m, &r);   /* as when its writer is gone */
            free(buf);
            buf = NULL;
            continue;
        default:
            if (chan_broken(m) == NULL) {
                abort();                /* corrupt, but not marked so */
            }
            free(buf);
            return 1;
        }
    }
    if (buf != NULL && r.total) {
        touch(buf, r.total);
    }
    free(buf);
    uint64_t left = m->sh->tail - m->sh->head;
    if (left > m->capacity) {
        abort();                        /* a message read past the tail */
    }
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    chan_map *m = make_channel(data, size);
    for (int i = 0; i < MESSAGES_MAX && read_message(m) == 0; i++) {
    }
    free_channel(m);
    return 0;
}
