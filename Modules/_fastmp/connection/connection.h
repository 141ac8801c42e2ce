/* connection.h - declarations shared by the Connection's C files:
 * connection.c (the type, framing, reading), connection_spin.c (spinning
 * before sleeping), connection_splice.c (large writes into a pipe by
 * reference), connection_ring.c (the messages of a Pipe() end through
 * shared memory) and serving_turn.c (a manager's serving threads and the
 * GIL).  connection_frame.h declares the frame header's pure codec. */
#ifndef FASTMP_CONNECTION_H
#define FASTMP_CONNECTION_H

#include "core/state.h"

#include <poll.h>
#include <stddef.h>

/* Whether the waits of a connection spin before they sleep: one whose
 * spins keep timing out (an idle or slow peer) stops spinning for a
 * while, longer after each run of failures, then tries again. */
typedef struct {
    unsigned char fails;        /* spins in a row that timed out */
    unsigned char backoff;      /* log2 of the next pause, in waits */
    unsigned short skip;        /* waits left to sleep without spinning */
} spin_state;

/* Whether the next wait spins: not while spinning is paused for the
 * process, nor while the pause of `s` lasts (this counts it down). */
int fastmp_spin_wanted(spin_state *s);

/* Learn from a spin: `found` if what it waited for came while it spun.
 * After a few misses in a row, the waits of `s` sleep straight away for
 * the next 1, 2, 4, ... 1024 times; a hit starts over. */
void fastmp_spin_learn(spin_state *s, int found);

/* Start a spin: *now is set to the time (CLOCK_MONOTONIC ns); returns
 * when the spin must end. */
int64_t fastmp_spin_start(int64_t *now);

/* Between two tries of a spin that may last until `until`: hand the CPU
 * to any other runnable thread on it.  Returns 1 to try again (*now
 * updated), 0 when the spin is over: its time ran out, or the yield took
 * long enough to show the CPUs oversubscribed (which pauses spinning for
 * the process).  Safe without the GIL. */
int fastmp_spin_again(int64_t *now, int64_t until);

/* poll(2) the descriptors without blocking for as long as a spin lasts,
 * but not past the deadline `d`.  Safe without the GIL.  Returns what the
 * last poll returned (0: nothing became ready). */
int fastmp_spin_poll(struct pollfd *fds, nfds_t nfds, const fastmp_deadline *d);

/* The threads serving a manager's connections, and their turns with the
 * GIL (serving_turn.c).  fastmp_serving_begin() counts the calling
 * thread as serving until fastmp_serving_end(outer), with what begin
 * returned (nonzero if the thread already was).  A transfer that must
 * wait calls fastmp_serving_release() before it drops the GIL (1 if the
 * thread was counted), and if so, once bytes have moved,
 * fastmp_serving_wait_turn() (without the GIL: waits briefly for no other
 * serving thread to want the GIL) and fastmp_serving_retake() after it
 * has the GIL back. */
/* Set up the count's reset in forked children; 0, or an errno value. */
int fastmp_serving_init(void);
int fastmp_serving_begin(void);
void fastmp_serving_end(int outer);
int fastmp_serving_release(void);
void fastmp_serving_wait_turn(void);
void fastmp_serving_retake(void);

/* The capacity in bytes of the pipe `fd`, or -1 if it is not a pipe. */
int fastmp_pipe_capacity(int fd);

/* Hand the `len` bytes at `buf` to the pipe `fd` by reference (no copy),
 * then wait until the reader has copied them out, so that the caller may
 * change its buffer once this returns.  Call with the GIL held; it is
 * released while blocked.  Returns 0; 1 if `fd` cannot take pages this
 * way (nothing was sent: write instead); -1 with an exception set. */
int fastmp_splice_to_pipe(int fd, const char *buf, size_t len);

/* ---- connection_ring.c: a Pipe() end's messages in a channel ring ---- */

struct chan_map;

/* Publish the message `data[0..len)` in the ring `tx` and ring the bell
 * on the socket `fd` if it is the only one waiting.  Call with the GIL
 * held; it is released while blocked.  Returns 0, or -1 with an exception
 * set (BrokenPipeError once no reader is left). */
int fastmp_ring_send(struct chan_map *tx, int fd, const char *data, uint64_t len);

/* Take the next message from the ring `rx` (the peer's socket `fd` tells
 * end of file), waiting as long as it takes; taking the last message
 * waiting lingers as `lingering` allows (see connection_ring.c).
 * Returns a new bytes object; NULL with *too_long set to its length for
 * a message longer than `limit` (left unread); NULL with an exception
 * set on error (EOFError once the ring is empty and every writer gone). */
PyObject *fastmp_ring_recv(struct chan_map *rx, int fd, spin_state *lingering,
                           uint64_t limit, uint64_t *too_long);

/* Whether a message (or end of file) can be taken from `rx`, waiting
 * until `d`.  Returns 1, 0, or -1 with an exception set. */
int fastmp_ring_poll(struct chan_map *rx, int fd, const fastmp_deadline *d);

#endif /* FASTMP_CONNECTION_H */
