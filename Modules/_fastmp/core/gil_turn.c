/* gil_turn.c - the turns of a manager's serving threads with the GIL
 * (see gil_turn.h; used by connection/connection.c and
 * managers/method_calls.c). */
#include "core/gil_turn.h"
#include "core/fork.h"
#include "core/spin.h"

/* Threads that serve a manager's connections (serve_calls) share one GIL
 * and take turns with it at every request.  A serving thread whose
 * request arrived while another one runs Python would sleep on the GIL
 * and be woken when it is dropped: a wake-up per message again.  It
 * waits a little instead, awake, for the count of serving threads that
 * hold the GIL (or want it) to drop to zero, then takes the GIL.  The
 * count is a hint (a thread counted may be blocked in a method call with
 * the GIL released, say in a contended Lock's acquire): the wait is
 * short (FASTMP_WAIT_GIL_TURN), and a thread whose waits keep timing out
 * stops waiting for a while (spin_state). */
static int serving_busy;                /* relaxed atomic */
static _Thread_local int serving_counted;
static _Thread_local spin_state serving_spin;

/* A forked child has only the thread that forked: only it may count. */
static void
recount_serving_in_child(void)
{
    serving_busy = serving_counted;
}

int
fastmp_serving_init(void)
{
    static const fastmp_fork_hooks hooks = {
        "gil_turn", NULL, NULL, recount_serving_in_child,
    };
    return fastmp_fork_add_hooks(&hooks);
}

int
fastmp_serving_begin(void)
{
    int outer = serving_counted;
    if (!outer) {
        serving_counted = 1;
        __atomic_add_fetch(&serving_busy, 1, __ATOMIC_RELAXED);
    }
    return outer;
}

void
fastmp_serving_end(int outer)
{
    if (!outer) {
        serving_counted = 0;
        __atomic_sub_fetch(&serving_busy, 1, __ATOMIC_RELAXED);
    }
}

int
fastmp_serving_release(void)
{
    if (!serving_counted) {
        return 0;
    }
    __atomic_sub_fetch(&serving_busy, 1, __ATOMIC_RELAXED);
    return 1;
}

/* fastmp_spin's test: no other serving thread holds or wants the GIL */
static int
serving_idle(void *unused)
{
    (void)unused;
    return __atomic_load_n(&serving_busy, __ATOMIC_RELAXED) == 0;
}

void
fastmp_serving_wait_turn(void)
{
    if (!serving_idle(NULL) && fastmp_spin_wanted(FASTMP_WAIT_GIL_TURN, &serving_spin)) {
        (void)fastmp_spin(FASTMP_WAIT_GIL_TURN, &serving_spin, NULL, serving_idle, NULL);
    }
}

void
fastmp_serving_retake(void)
{
    __atomic_add_fetch(&serving_busy, 1, __ATOMIC_RELAXED);
}
