/* spin.c - a reader that would sleep spins first.  A sleeping reader
 * costs both sides a kernel wake-up (tens of microseconds); one that
 * retries for a little while picks the data up as it lands.  The spin is
 * bounded, adaptive per waiter (spin_state, see spin.h) and paused for
 * the whole process while the CPUs are oversubscribed. */
#include "core/spin.h"
#include "core/deadline.h"

#include <poll.h>
#include <sched.h>

#define SPIN_NS 50000           /* longest spin before a reader sleeps */
#define SPIN_FAILS 3            /* timed-out spins in a row before a pause */
#define SPIN_BACKOFF_MAX 10     /* the longest pause: 2**10 waits */

/* When the CPUs are oversubscribed, a spinner's sched_yield() hands its
 * CPU to another thread for a whole time slice, and a reader that sleeps
 * is served sooner than one that spins (the scheduler favours threads
 * waking up).  A yield that takes this long shows that; then no wait of
 * this process spins for a pause that doubles while the condition lasts
 * and halves after each spin that finds data.  Process-wide, updated
 * without the GIL: relaxed atomics.  The bound sits well under a time
 * slice but above a hand-off to a thread that works a few tens of
 * microseconds and then waits itself (a manager server thread, another
 * client): such a yield is time well spent, and sleeping instead would
 * make every message of the exchange pay a wake-up. */
#define YIELD_SLOW_NS 200000
#define CONTENDED_PAUSE_MIN_NS 10000000LL
#define CONTENDED_PAUSE_MAX_NS 1000000000LL
static int64_t spin_paused_until;      /* CLOCK_MONOTONIC ns */
static int64_t spin_pause_ns;          /* the next pause */

int
fastmp_spin_wanted(spin_state *s)
{
    if (fastmp_monotonic_ns() < __atomic_load_n(&spin_paused_until, __ATOMIC_RELAXED)) {
        return 0;
    }
    if (s->skip == 0) {
        return 1;
    }
    s->skip--;
    return 0;
}

void
fastmp_spin_learn(spin_state *s, int found)
{
    if (found) {
        s->fails = 0;
        s->backoff = 0;
        int64_t pause = __atomic_load_n(&spin_pause_ns, __ATOMIC_RELAXED);
        __atomic_store_n(&spin_pause_ns, pause / 2, __ATOMIC_RELAXED);
        return;
    }
    if (++s->fails < SPIN_FAILS) {
        return;
    }
    s->fails = 0;
    s->skip = (unsigned short)(1u << s->backoff);
    if (s->backoff < SPIN_BACKOFF_MAX) {
        s->backoff++;
    }
}

int
fastmp_spin_again(int64_t *now, int64_t until)
{
    if (*now >= until) {
        return 0;
    }
    (void)sched_yield();
    int64_t after = fastmp_monotonic_ns();
    if (after - *now > YIELD_SLOW_NS) {
        int64_t pause = __atomic_load_n(&spin_pause_ns, __ATOMIC_RELAXED);
        pause = pause < CONTENDED_PAUSE_MIN_NS ? CONTENDED_PAUSE_MIN_NS
                : pause > CONTENDED_PAUSE_MAX_NS / 2 ? CONTENDED_PAUSE_MAX_NS : 2 * pause;
        __atomic_store_n(&spin_pause_ns, pause, __ATOMIC_RELAXED);
        __atomic_store_n(&spin_paused_until, after + pause, __ATOMIC_RELAXED);
        return 0;
    }
    *now = after;
    return 1;
}

int64_t
fastmp_spin_start(int64_t *now)
{
    *now = fastmp_monotonic_ns();
    return *now + SPIN_NS;
}

int
fastmp_spin_poll(struct pollfd *fds, nfds_t nfds, const fastmp_deadline *d)
{
    int64_t now, until = fastmp_spin_start(&now);
    if (!d->infinite) {
        int64_t at = (int64_t)d->at.tv_sec * 1000000000 + d->at.tv_nsec;
        until = at < until ? at : until;
    }
    int n;
    do {
        n = poll(fds, nfds, 0);
    } while (n == 0 && fastmp_spin_again(&now, until));
    return n;
}
