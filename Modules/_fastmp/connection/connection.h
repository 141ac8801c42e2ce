/* connection.h - declarations shared by the Connection's C files:
 * connection.c (the type, framing, reading), splice.c (large writes into
 * a pipe by reference) and pipe_ring.c (the messages of a Pipe() end
 * through shared memory).  frame.h declares the frame header's pure
 * codec. */
#ifndef FASTMP_CONNECTION_H
#define FASTMP_CONNECTION_H

#include "core/deadline.h"
#include "core/spin.h"

#include <poll.h>
#include <stddef.h>

#include "core/state.h"

/* ---- connection.c: the calls other parts make without a method lookup */

/* Whether `conn` may be handed to the fastmp_connection_* calls below in
 * place of its send, recv, send_bytes and recv_bytes methods: it is a
 * Connection, of the type or of a subclass, on which looking these
 * names up finds the C methods themselves (no subclass overrides them,
 * none was replaced on the class or set on the instance, no
 * __getattribute__/__getattr__ intervenes).  Anything else must be
 * called through its methods.  Returns 1, 0, or -1 with an exception
 * set. */
int fastmp_connection_is_direct(fastmp_state *st, PyObject *conn);

/* conn.send(obj), conn.recv(), conn.send_bytes(data) and
 * conn.recv_bytes() of a Connection that fastmp_connection_is_direct()
 * accepted, with the same results and the same exceptions.  The sends
 * return 0, or -1 with an exception set; the receives a new reference,
 * or NULL with an exception set. */
int fastmp_connection_send(PyObject *conn, PyObject *obj);
PyObject *fastmp_connection_recv(PyObject *conn);
int fastmp_connection_send_bytes(PyObject *conn, PyObject *data);
PyObject *fastmp_connection_recv_bytes(PyObject *conn);

/* The capacity in bytes of the pipe `fd`, or -1 if it is not a pipe. */
int fastmp_pipe_capacity(int fd);

/* Hand the `len` bytes at `buf` to the pipe `fd` by reference (no copy),
 * then wait until the reader has copied them out, so that the caller may
 * change its buffer once this returns.  Call with the GIL held; it is
 * released while blocked.  Returns 0; 1 if `fd` cannot take pages this
 * way (nothing was sent: write instead); -1 with an exception set. */
int fastmp_splice_to_pipe(int fd, const char *buf, size_t len);

/* ---- pipe_ring.c: a Pipe() end's messages in a channel ring ---------- */

struct chan_map;

/* Publish the message `data[0..len)` in the ring `tx` and ring the bell
 * on the socket `fd` if it is the only one waiting.  Call with the GIL
 * held; it is released while blocked.  Returns 0, or -1 with an exception
 * set (BrokenPipeError once no reader is left). */
int fastmp_ring_send(struct chan_map *tx, int fd, const char *data, uint64_t len);

/* Take the next message from the ring `rx` (the peer's socket `fd` tells
 * end of file), waiting as long as it takes; taking the last message
 * waiting lingers as `lingering` allows (see pipe_ring.c).
 * Returns a new bytes object; NULL with *too_long set to its length for
 * a message longer than `limit` (left unread); NULL with an exception
 * set on error (EOFError once the ring is empty and every writer gone). */
PyObject *fastmp_ring_recv(struct chan_map *rx, int fd, spin_state *lingering,
                           uint64_t limit, uint64_t *too_long);

/* Whether a message (or end of file) can be taken from `rx`, waiting
 * until `d`.  Returns 1, 0, or -1 with an exception set. */
int fastmp_ring_poll(struct chan_map *rx, int fd, const fastmp_deadline *d);

#endif /* FASTMP_CONNECTION_H */
