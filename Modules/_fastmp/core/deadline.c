/* deadline.c - deadlines on CLOCK_MONOTONIC (see deadline.h). */
#include "core/deadline.h"

#include <limits.h>
#include <math.h>

static void
now_monotonic(struct timespec *ts)
{
    /* CLOCK_MONOTONIC cannot fail with a valid pointer on Linux */
    (void)clock_gettime(CLOCK_MONOTONIC, ts);
}

void
fastmp_deadline_from_seconds(double seconds, fastmp_deadline *d)
{
    if (seconds < 0 || isinf(seconds)) {
        d->infinite = 1;
        d->at.tv_sec = 0;
        d->at.tv_nsec = 0;
        return;
    }
    d->infinite = 0;
    now_monotonic(&d->at);
    double whole = floor(seconds);
    if (whole > (double)(INT64_MAX / 4)) {
        d->infinite = 1;
        return;
    }
    d->at.tv_sec += (time_t)whole;
    d->at.tv_nsec += (long)((seconds - whole) * 1e9);
    if (d->at.tv_nsec >= FASTMP_NSEC_PER_SEC) {
        d->at.tv_sec += 1;
        d->at.tv_nsec -= FASTMP_NSEC_PER_SEC;
    }
}

int
fastmp_deadline_from_object(PyObject *timeout, fastmp_deadline *d)
{
    if (timeout == NULL || timeout == Py_None) {
        fastmp_deadline_from_seconds(-1.0, d);
        return 0;
    }
    double seconds = PyFloat_AsDouble(timeout);
    if (seconds == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (isnan(seconds)) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    fastmp_deadline_from_seconds(seconds < 0 ? 0.0 : seconds, d);
    return 0;
}

int
fastmp_deadline_remaining(const fastmp_deadline *d, struct timespec *left)
{
    if (d->infinite) {
        return 1;
    }
    struct timespec now;
    now_monotonic(&now);
    time_t sec = d->at.tv_sec - now.tv_sec;
    long nsec = d->at.tv_nsec - now.tv_nsec;
    if (nsec < 0) {
        nsec += FASTMP_NSEC_PER_SEC;
        sec -= 1;
    }
    if (sec < 0 || (sec == 0 && nsec == 0)) {
        left->tv_sec = 0;
        left->tv_nsec = 0;
        return 0;
    }
    left->tv_sec = sec;
    left->tv_nsec = nsec;
    return 1;
}

int
fastmp_deadline_remaining_ms(const fastmp_deadline *d)
{
    if (d->infinite) {
        return -1;
    }
    struct timespec left;
    if (!fastmp_deadline_remaining(d, &left)) {
        return 0;
    }
    if (left.tv_sec >= INT_MAX / 1000 - 1) {
        return INT_MAX;
    }
    return (int)(left.tv_sec * 1000 + (left.tv_nsec + 999999L) / 1000000L);
}
