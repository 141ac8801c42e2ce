/* spin.c - the one spin policy (see spin.h).  A sleeping waiter costs
 * both sides of a hand-off a kernel wake-up (tens of microseconds); one
 * that retries for a little while picks up what it waits for as it
 * lands.  Every spin is bounded by its kind's budget, adaptive per waiter
 * (spin_state) and paused for the whole process while the CPUs are
 * oversubscribed; then the caller sleeps (futex, poll) as it would have. */
#include "core/spin.h"
#include "core/deadline.h"

#include <sched.h>

/* The budget of each kind of wait, and how it gives up the CPU between
 * tries: a try that is a system call (or a lock and a pump) is followed
 * by a sched_yield(), in case the peer waits for this very CPU; cheap
 * looks at shared memory are separated by cpu_relax() steps, with a
 * yield now and then -- or never, for a spin that holds the GIL or a
 * lock and is shorter than a time slice anyway. */
typedef struct {
    int64_t budget_ns;          /* the longest spin */
    int relaxes;                /* cpu_relax() steps between two tries;
                                 * 0: sched_yield() between tries */
    int64_t yield_ns;           /* with relaxes: yield this often; 0: never */
    int pausable;               /* paused while the CPUs are oversubscribed */
    int backoff_max;            /* the longest pause of spin_state, log2 of
                                 * the asks it skips */
} spin_policy;

/* A connection's peer may stay idle for long: its back-off goes up to
 * 2**10 skipped waits.  A pool's waits come in runs while the pool works
 * (pool_map_noop_1M: 8 % slower with the longer back-off): up to 2**5. */
#define BACKOFF_IDLE_PEER 10
#define BACKOFF_POOL 5

static const spin_policy policies[] = {
    [FASTMP_WAIT_IO] = {50000, 0, 0, 1, BACKOFF_IDLE_PEER},
    [FASTMP_WAIT_POOL_RESULT] = {50000, 0, 0, 1, BACKOFF_POOL},
    /* A Pool(n) worker on n cores shares them with the parent's thread
     * and the dispatcher's, which feed it: its yields hand the CPU to
     * them, and one that sleeps instead is woken per batch of tasks
     * (pool_apply_async_burst: 30 % slower when paused). */
    [FASTMP_WAIT_POOL_TASK] = {50000, 0, 0, 0, BACKOFF_POOL},
    /* a few requests' worth of Python on another serving thread */
    [FASTMP_WAIT_GIL_TURN] = {20000, 0, 0, 1, BACKOFF_IDLE_PEER},
    [FASTMP_WAIT_RING_DATA] = {20000, 1, 2000, 1, BACKOFF_IDLE_PEER},
    /* a writer streaming messages counts its next one within a
     * microsecond or so */
    [FASTMP_WAIT_PIPE_COUNT] = {5000, 1, 0, 1, BACKOFF_IDLE_PEER},
    /* another writer holds the lock for one small message, which takes
     * well under a microsecond: a few tries */
    [FASTMP_WAIT_RING_WLOCK] = {1500, 8, 0, 1, BACKOFF_IDLE_PEER},
};

/* cpu_relax() steps between two readings of the clock */
#define CLOCK_EVERY_RELAXES 16

/* A busy-wait step that lets a sibling hyperthread run. */
static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ---- the record per waiter (spin_state) -------------------------------- */

#define EARLY_TRY_FAILS 3       /* failed tries in a row before a pause */

/* spin_state.bits: asks left to answer "no" (bits 0-15), failed tries in
 * a row (16-23), log2 of the next pause (24-31). */
static inline uint32_t
record(uint32_t skip, uint32_t fails, uint32_t backoff)
{
    return skip | fails << 16 | backoff << 24;
}

int
fastmp_early_try_wanted(spin_state *s)
{
    uint32_t bits = __atomic_load_n(&s->bits, __ATOMIC_RELAXED);
    if ((bits & 0xffffu) == 0) {
        return 1;
    }
    __atomic_store_n(&s->bits, bits - 1, __ATOMIC_RELAXED);
    return 0;
}

void
fastmp_early_try_learn(fastmp_wait kind, spin_state *s, int found)
{
    uint32_t bits = __atomic_load_n(&s->bits, __ATOMIC_RELAXED);
    if (found) {
        if (bits != 0) {
            __atomic_store_n(&s->bits, 0, __ATOMIC_RELAXED);
        }
        return;
    }
    uint32_t skip = bits & 0xffffu, fails = (bits >> 16) & 0xffu, backoff = bits >> 24;
    if (++fails < EARLY_TRY_FAILS) {
        __atomic_store_n(&s->bits, record(skip, fails, backoff), __ATOMIC_RELAXED);
        return;
    }
    skip = 1u << backoff;
    if (backoff < (uint32_t)policies[kind].backoff_max) {
        backoff++;
    }
    __atomic_store_n(&s->bits, record(skip, 0, backoff), __ATOMIC_RELAXED);
}

/* ---- the pause while the CPUs are oversubscribed ------------------------
 * Then a spinner's sched_yield() hands its CPU to another thread for a
 * whole time slice, and a waiter that sleeps is served sooner than one
 * that spins (the scheduler favours threads waking up).  A yield that
 * takes this long shows that; then no wait of this process spins for a
 * pause that doubles while the condition lasts and halves after each
 * spin that pays.  Process-wide, updated without the GIL: relaxed
 * atomics.  The bound sits well under a time slice but above a hand-off
 * to a thread that works a few tens of microseconds and then waits
 * itself (a manager server thread, another client): such a yield is time
 * well spent, and sleeping instead would make every message of the
 * exchange pay a wake-up. */
#define YIELD_SLOW_NS 200000
#define CONTENDED_PAUSE_MIN_NS 10000000LL
#define CONTENDED_PAUSE_MAX_NS 1000000000LL
static int64_t spin_paused_until;      /* CLOCK_MONOTONIC ns */
static int64_t spin_pause_ns;          /* the next pause */

/* Between two tries of a spin that may last until `until`: hand the CPU
 * to any other runnable thread on it.  Returns 1 to try again (*now
 * updated), 0 when the spin is over: its time ran out, or the yield took
 * long enough to show the CPUs oversubscribed (which pauses spinning for
 * the process). */
static int
yield_cpu(int64_t *now, int64_t until)
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

/* ---- the spin ------------------------------------------------------------ */

/* Try, yield, try ... from `now` until `until`.  Returns 1 when done(). */
static int
spin_yielding(int64_t now, int64_t until, fastmp_spin_done done, void *arg)
{
    while (!done(arg)) {
        if (!yield_cpu(&now, until)) {
            return 0;
        }
    }
    return 1;
}

/* Try, relax, try ... from `now` until `until`, yielding as `p` says.
 * Returns 1 when done(). */
static int
spin_relaxing(const spin_policy *p, int64_t now, int64_t until, fastmp_spin_done done,
              void *arg)
{
    int64_t yield_at = p->yield_ns > 0 ? now + p->yield_ns : INT64_MAX;
    int relaxed = 0;
    while (!done(arg)) {
        for (int i = 0; i < p->relaxes; i++) {
            cpu_relax();
        }
        if ((relaxed += p->relaxes) < CLOCK_EVERY_RELAXES) {
            continue;
        }
        relaxed = 0;
        now = fastmp_monotonic_ns();
        if (now >= until) {
            return 0;
        }
        if (now >= yield_at) {
            if (!yield_cpu(&now, until)) {
                return 0;
            }
            yield_at = now + p->yield_ns;
        }
    }
    return 1;
}

int
fastmp_spin_wanted(fastmp_wait kind, spin_state *s)
{
    if (policies[kind].pausable
        && fastmp_monotonic_ns() < __atomic_load_n(&spin_paused_until, __ATOMIC_RELAXED)) {
        return 0;
    }
    return s == NULL || fastmp_early_try_wanted(s);
}

int
fastmp_spin(fastmp_wait kind, spin_state *s, const fastmp_deadline *d,
            fastmp_spin_done done, void *arg)
{
    const spin_policy *p = &policies[kind];
    int64_t now = fastmp_monotonic_ns();
    int64_t until = now + p->budget_ns;
    if (d != NULL && !d->infinite) {
        int64_t at = (int64_t)d->at.tv_sec * FASTMP_NSEC_PER_SEC + d->at.tv_nsec;
        until = at < until ? at : until;
    }
    int found = p->relaxes == 0 ? spin_yielding(now, until, done, arg)
                                : spin_relaxing(p, now, until, done, arg);
    int64_t pause = found ? __atomic_load_n(&spin_pause_ns, __ATOMIC_RELAXED) : 0;
    if (pause != 0) {
        __atomic_store_n(&spin_pause_ns, pause / 2, __ATOMIC_RELAXED);
    }
    if (s != NULL) {
        fastmp_early_try_learn(kind, s, found);
    }
    return found;
}
