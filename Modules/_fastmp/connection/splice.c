/* splice.c - large writes into a pipe by reference.  write(2)
 * copies a message into pages the pipe allocates, and the reader copies
 * it out again; vmsplice(2) hands the sender's own pages to the pipe, so
 * the reader's copy is the only one.  The reader copies from those pages
 * until it has read them all, so the sender waits for the pipe to drain
 * before it lets its caller change the buffer. */
#include "connection/connection.h"
#include "core/errors.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>

/* How fast a reader is assumed to drain a pipe, to pace the checks (a
 * little faster than it does: a late check delays the next message). */
#define DRAIN_BYTES_PER_NS 16
#define DRAIN_CHECK_MIN_NS 20000L
#define DRAIN_CHECK_MAX_NS 10000000L

int
fastmp_pipe_capacity(int fd)
{
#ifdef F_GETPIPE_SZ
    return fcntl(fd, F_GETPIPE_SZ);
#else
    return -1;
#endif
}

/* Wait until the pipe `fd` holds no data or has no reader left.  Safe
 * without the GIL.  Returns 0, or an errno value (EINTR included). */
static int
wait_drained(int fd)
{
    for (;;) {
        int queued;
        if (ioctl(fd, FIONREAD, &queued) < 0) {
            return errno;
        }
        if (queued <= 0) {
            return 0;
        }
        struct pollfd p = {fd, 0, 0};  /* POLLERR comes unasked: no reader */
        if (poll(&p, 1, 0) < 0) {
            return errno;
        }
        if (p.revents & (POLLERR | POLLNVAL)) {
            return 0;
        }
        long ns = (long)queued / DRAIN_BYTES_PER_NS;
        struct timespec t = {0, ns < DRAIN_CHECK_MIN_NS ? DRAIN_CHECK_MIN_NS
                                : ns > DRAIN_CHECK_MAX_NS ? DRAIN_CHECK_MAX_NS : ns};
        if (nanosleep(&t, NULL) < 0) {
            return errno;
        }
    }
}

int
fastmp_splice_to_pipe(int fd, const char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n;
        int err;
        Py_BEGIN_ALLOW_THREADS
        struct iovec v = {(void *)(buf + done), len - done};
        n = vmsplice(fd, &v, 1, 0);
        err = n < 0 ? errno : n == 0 ? EIO : 0;
        if (err == EAGAIN) {
            /* an O_NONBLOCK pipe: wait for room */
            struct pollfd p = {fd, POLLOUT, 0};
            if (poll(&p, 1, -1) < 0) {
                err = errno;
            }
        }
        Py_END_ALLOW_THREADS
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (err == EINTR || err == EAGAIN) {
            if (err == EINTR && PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        if (done == 0 && (err == EBADF || err == EINVAL || err == ENOSYS)) {
            return 1;
        }
        fastmp_oserror(err, "vmsplice");
        return -1;
    }
    for (;;) {
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = wait_drained(fd);
        Py_END_ALLOW_THREADS
        if (err == 0) {
            return 0;
        }
        if (err != EINTR) {
            fastmp_oserror(err, "ioctl");
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}
