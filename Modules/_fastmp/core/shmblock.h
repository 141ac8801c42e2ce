/* shmblock.h - small blocks of shared memory (shmblock.c), for SemLock and
 * Condition: an anonymous shared mapping when only fork() children use the
 * block, or a POSIX shared-memory object named "sem.<name>" (the file name
 * glibc gives a named semaphore, so either sem_unlink() removes it) when
 * processes started by spawn or forkserver must open it by name. */
#ifndef FASTMP_SHMBLOCK_H
#define FASTMP_SHMBLOCK_H

#include "core/compat.h"

#include <stddef.h>

/* A small block of shared memory: `size` bytes, zero-filled when created.
 * name == NULL: an anonymous shared mapping (inherited by fork only).
 * Otherwise a new POSIX shm object for `name` (a leading '/' is optional;
 * no other '/').  Returns the mapping, or NULL with an exception set
 * (FileExistsError if the name is taken). */
void *fastmp_block_create(const char *name, size_t size);

/* Map the existing block `name` made by fastmp_block_create; checks that it
 * is at least `size` bytes.  NULL with an exception set on error. */
void *fastmp_block_open(const char *name, size_t size);

/* Unmap a block mapped by the functions above. */
void fastmp_block_unmap(void *block, size_t size);

/* Remove the name of the block `name` (an OSError naming sem_unlink if
 * there is none).  Returns 0, or -1 with an exception set. */
int fastmp_block_unlink(const char *name);

#endif /* FASTMP_SHMBLOCK_H */
