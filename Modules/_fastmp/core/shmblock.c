/* shmblock.c - small blocks of shared memory, anonymous or named by POSIX
 * shm (see shmblock.h). */
#include "core/shmblock.h"
#include "core/errors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Shared blocks are for this user's processes only. */
#define SHM_BLOCK_MODE 0600

/* The shm path for a block name: "/sem.<name without leading '/'>", the
 * path glibc uses for a named semaphore.  -1 with ValueError if the name is
 * empty, has another '/', or is too long. */
static int
block_path(const char *name, char *path, size_t pathsize)
{
    while (*name == '/') {
        name++;
    }
    if (*name == '\0' || strchr(name, '/') != NULL || strlen(name) > NAME_MAX - 8) {
        PyErr_Format(PyExc_ValueError, "invalid semaphore name '%s': it must be "
                     "a non-empty word of at most %d characters, optionally "
                     "after one leading '/'", name, NAME_MAX - 8);
        return -1;
    }
    (void)snprintf(path, pathsize, "/sem.%s", name);
    return 0;
}

/* Map `size` bytes of the shm object open on `fd` and close `fd`.  With
 * `create`, size the new object first; otherwise check that it is big
 * enough (a mapping past its end would SIGBUS on first touch).  NULL with
 * an exception set on error. */
static void *
map_and_close(int fd, size_t size, int create)
{
    void *p = MAP_FAILED;
    const char *failed = NULL;
    int err = 0;
    struct stat sb;
    if (create && ftruncate(fd, (off_t)size) < 0) {
        failed = "ftruncate";
        err = errno;
    }
    else if (!create && fstat(fd, &sb) < 0) {
        failed = "fstat";
        err = errno;
    }
    else if (!create && (size_t)sb.st_size < size) {
        failed = "shm_open (object too small for a fastmp block)";
        err = EINVAL;
    }
    else if ((p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
        failed = "mmap";
        err = errno;
    }
    (void)close(fd);
    if (failed != NULL) {
        return fastmp_oserror(err, failed);
    }
    return p;
}

void *
fastmp_block_create(const char *name, size_t size)
{
    if (name == NULL) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            return fastmp_oserror(errno, "mmap");
        }
        return p;
    }
    char path[NAME_MAX + 8];
    if (block_path(name, path, sizeof(path)) < 0) {
        return NULL;
    }
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, SHM_BLOCK_MODE);
    if (fd < 0) {
        return fastmp_oserror(errno, "shm_open");
    }
    void *p = map_and_close(fd, size, 1);
    if (p == NULL) {
        (void)shm_unlink(path);
    }
    return p;
}

void *
fastmp_block_open(const char *name, size_t size)
{
    char path[NAME_MAX + 8];
    if (block_path(name, path, sizeof(path)) < 0) {
        return NULL;
    }
    int fd = shm_open(path, O_RDWR | O_CLOEXEC, SHM_BLOCK_MODE);
    if (fd < 0) {
        return fastmp_oserror(errno, "shm_open");
    }
    return map_and_close(fd, size, 0);
}

int
fastmp_block_unlink(const char *name)
{
    char path[NAME_MAX + 8];
    if (block_path(name, path, sizeof(path)) < 0) {
        return -1;
    }
    if (shm_unlink(path) < 0) {
        fastmp_oserror(errno, "sem_unlink");
        return -1;
    }
    return 0;
}

void
fastmp_block_unmap(void *block, size_t size)
{
    if (block != NULL) {
        (void)munmap(block, size);
    }
}
