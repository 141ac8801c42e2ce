/* shm.h - declarations shared by the shared-memory C files: the heap
 * (shm.c: arenas, block allocator, BufferWrapper), the synchronized ctypes
 * accessors (shm_sync.c) and named POSIX segments (shm_segment.c). */
#ifndef FASTMP_SHM_H
#define FASTMP_SHM_H

#include "core/state.h"

/* Add the Synchronized* core types and shm_open/shm_unlink to the module
 * (shm_sync.c); called from fastmp_shm_exec.  -1 with an exception set on
 * error. */
int fastmp_shm_sync_exec(PyObject *module, fastmp_state *st);
int fastmp_shm_sync_traverse(fastmp_state *st, visitproc visit, void *arg);
void fastmp_shm_sync_clear(fastmp_state *st);

/* Add SegmentMapping and shm_map/shm_unlink (shm_segment.c);
 * called from fastmp_shm_exec.  -1 with an exception set on error. */
int fastmp_shm_segment_exec(PyObject *module, fastmp_state *st);
int fastmp_shm_segment_traverse(fastmp_state *st, visitproc visit, void *arg);
void fastmp_shm_segment_clear(fastmp_state *st);

#endif /* FASTMP_SHM_H */
