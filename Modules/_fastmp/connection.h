/* connection.h - declarations shared by the Connection's C files:
 * connection.c (the type, framing, reading) and connection_splice.c
 * (large writes into a pipe by reference). */
#ifndef FASTMP_CONNECTION_H
#define FASTMP_CONNECTION_H

#include "fastmp.h"

#include <stddef.h>

/* The capacity in bytes of the pipe `fd`, or -1 if it is not a pipe. */
int fastmp_pipe_capacity(int fd);

/* Hand the `len` bytes at `buf` to the pipe `fd` by reference (no copy),
 * then wait until the reader has copied them out, so that the caller may
 * change its buffer once this returns.  Call with the GIL held; it is
 * released while blocked.  Returns 0; 1 if `fd` cannot take pages this
 * way (nothing was sent: write instead); -1 with an exception set. */
int fastmp_splice_to_pipe(int fd, const char *buf, size_t len);

#endif /* FASTMP_CONNECTION_H */
