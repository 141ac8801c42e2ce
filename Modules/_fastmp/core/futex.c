/* futex.c - process-shared futex wait/wake (see futex.h). */
#include "core/futex.h"
#include "core/deadline.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

int
fastmp_futex_wait(uint32_t *word, uint32_t expected, const fastmp_deadline *d)
{
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, so a retry
     * after EINTR keeps the original deadline without recomputing it. */
    const struct timespec *at = d->infinite ? NULL : &d->at;
    long r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, at, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    if (r == 0) {
        return 0;
    }
    switch (errno) {
    case EAGAIN:            /* the word changed before we slept */
        return 0;
    case ETIMEDOUT:
    case EINTR:
        return errno;
    default:
        return errno;
    }
}

int
fastmp_futex_wake(uint32_t *word, int count)
{
    long r = syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
    return r < 0 ? errno : 0;
}
