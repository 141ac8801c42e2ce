/* deadline.h - deadlines on CLOCK_MONOTONIC (deadline.c): a wait that a
 * signal interrupts resumes with the time left, never a fresh timeout.
 * Also the monotonic clock in nanoseconds.  Safe without the GIL, except
 * fastmp_deadline_from_object. */
#ifndef FASTMP_DEADLINE_H
#define FASTMP_DEADLINE_H

#include "core/compat.h"

#include <stdint.h>
#include <time.h>

typedef struct {
    int infinite;               /* no deadline: block forever */
    struct timespec at;         /* absolute CLOCK_MONOTONIC time */
} fastmp_deadline;

/* Convert a Python timeout (None = forever, a number of seconds; negative
 * counts as zero) into a deadline starting now.  Returns -1 with a
 * TypeError/ValueError set on a bad object. */
int fastmp_deadline_from_object(PyObject *timeout, fastmp_deadline *d);

/* Deadline `seconds` from now; seconds < 0 means infinite. */
void fastmp_deadline_from_seconds(double seconds, fastmp_deadline *d);

/* Milliseconds left, rounded up, for poll(): -1 if infinite, 0 if past,
 * capped at INT_MAX. */
int fastmp_deadline_remaining_ms(const fastmp_deadline *d);

/* Time left as a relative timespec.  Returns 0 if the deadline has passed
 * (then *left is zero), 1 otherwise; for an infinite deadline returns 1
 * and leaves *left untouched. */
int fastmp_deadline_remaining(const fastmp_deadline *d, struct timespec *left);

#define FASTMP_NSEC_PER_SEC 1000000000L

/* The CLOCK_MONOTONIC time in nanoseconds (CLOCK_MONOTONIC cannot fail). */
static inline int64_t
fastmp_monotonic_ns(void)
{
    struct timespec t;
    (void)clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * FASTMP_NSEC_PER_SEC + t.tv_nsec;
}

#endif /* FASTMP_DEADLINE_H */
