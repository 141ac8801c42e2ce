/* feeder.h - the per-process buffer of an unbounded Queue and its native
 * feeder thread (feeder.c). */
#ifndef FASTMP_FEEDER_H
#define FASTMP_FEEDER_H

#include "queues/ring.h"

/* Reset the feeder state if this process is a fork of the one that set it
 * up.  Call with the GIL held before touching the feeder state. */
void chan_feeder_adopt(chan_map *m);
/* Queue `item` for the feeder thread, starting the thread if needed.
 * Returns 0 or an errno value (item not queued). */
int chan_feeder_push(chan_map *m, chan_pending *item);
/* Holding wlock: send the buffered messages that fit in the ring now, in
 * order (after an immediate shutdown: drop them all).  Returns 0 when the
 * buffer is empty, EAGAIN when some remain, or CHAN_CORRUPT. */
int chan_feeder_drain(chan_map *m);
/* With the GIL: release the owners of messages the feeder has sent. */
void chan_feeder_release_done(chan_map *m);
/* Wait (GIL released by the caller) up to one slice for the buffer to
 * empty.  Returns 0 when empty or cancelled, EINTR for another slice. */
int chan_feeder_wait_empty(chan_map *m);
/* True if this process has messages waiting for the feeder. */
int chan_feeder_has_pending(chan_map *m);

/* The process's maps that ever buffered messages (flushed at exit);
 * GIL-protected. */
void chan_live_add(chan_map *m);
/* Drop the maps that have nothing buffered any more. */
void chan_live_prune(void);
chan_map *chan_live_first(void);

#endif /* FASTMP_FEEDER_H */
