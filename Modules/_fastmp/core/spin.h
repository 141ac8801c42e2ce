/* spin.h - a waiter that would sleep spins first (spin.c): bounded,
 * adaptive per waiter (spin_state) and paused for the whole process while
 * the CPUs are oversubscribed.  Used by the Connection's reads, a Pipe()
 * ring's reads and the serving threads' turns (gil_turn.c).  Safe without
 * the GIL. */
#ifndef FASTMP_SPIN_H
#define FASTMP_SPIN_H

#include "core/deadline.h"

#include <poll.h>
#include <stdint.h>

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

#endif /* FASTMP_SPIN_H */
