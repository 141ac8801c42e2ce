/* futex.h - process-shared futex wait/wake on 32-bit words in shared
 * memory, with CLOCK_MONOTONIC deadlines.  Safe to call without the GIL. */
#ifndef FASTMP_FUTEX_H
#define FASTMP_FUTEX_H

#include "core/deadline.h"

#include <stdint.h>

/* Sleep while *word == expected, until woken or the deadline passes.
 * Returns 0 when woken or when *word no longer held `expected` (callers
 * re-check their condition), ETIMEDOUT when the deadline passed, EINTR when
 * a signal arrived (the caller checks signals with the GIL and retries with
 * the same deadline), or another errno value on failure. */
int fastmp_futex_wait(uint32_t *word, uint32_t expected, const fastmp_deadline *d);

/* Wake up to `count` waiters on `word` (INT32_MAX for all).  Returns 0 or
 * an errno value. */
int fastmp_futex_wake(uint32_t *word, int count);

#endif /* FASTMP_FUTEX_H */
