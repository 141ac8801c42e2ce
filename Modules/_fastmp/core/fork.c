/* fork.c - the one fork tracker of the process (see fork.h): the only
 * pthread_atfork registration of fastmp, the cached pid and fork
 * generation, and the table of the parts' hooks. */
#include "core/fork.h"
#include "core/errors.h"

#include <pthread.h>
#include <unistd.h>

/* Parts with hooks: semlock, gil_turn and the pool engine today. */
#define MAX_HOOKS 8

pid_t fastmp_fork_current_pid;
uint64_t fastmp_fork_current_generation;

static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_error;

/* Entries are only appended.  hooks_mu guards them, and is held from the
 * prepare handler to the parent's (reset in the child), so the hooks a
 * fork prepared are exactly those it finishes. */
static pthread_mutex_t hooks_mu = PTHREAD_MUTEX_INITIALIZER;
static fastmp_fork_hooks hooks[MAX_HOOKS];
static size_t nhooks;

static void
before_fork(void)
{
    pthread_mutex_lock(&hooks_mu);
    for (size_t i = nhooks; i-- > 0;) {
        if (hooks[i].prepare != NULL) {
            hooks[i].prepare();
        }
    }
}

static void
after_fork_in_parent(void)
{
    for (size_t i = 0; i < nhooks; i++) {
        if (hooks[i].parent != NULL) {
            hooks[i].parent();
        }
    }
    pthread_mutex_unlock(&hooks_mu);
}

/* The child's hooks see its own pid and generation already. */
static void
after_fork_in_child(void)
{
    fastmp_fork_current_pid = getpid();
    fastmp_fork_current_generation++;
    for (size_t i = 0; i < nhooks; i++) {
        if (hooks[i].child != NULL) {
            hooks[i].child();
        }
    }
    /* the forking thread held it: a fresh one, as nobody else is here */
    (void)pthread_mutex_init(&hooks_mu, NULL);
}

static void
install(void)
{
    fastmp_fork_current_pid = getpid();
    install_error = pthread_atfork(before_fork, after_fork_in_parent,
                                   after_fork_in_child);
}

int
fastmp_fork_track(void)
{
    int err = pthread_once(&install_once, install);
    if (err != 0) {
        fastmp_oserror(err, "pthread_once");
        return -1;
    }
    if (install_error != 0) {
        fastmp_oserror(install_error, "pthread_atfork");
        return -1;
    }
    return 0;
}

static int
same_hooks(const fastmp_fork_hooks *a, const fastmp_fork_hooks *b)
{
    return a->prepare == b->prepare && a->parent == b->parent && a->child == b->child;
}

int
fastmp_fork_add_hooks(const fastmp_fork_hooks *h)
{
    if (fastmp_fork_track() < 0) {
        return -1;
    }
    int err = pthread_mutex_lock(&hooks_mu);
    if (err != 0) {
        fastmp_oserror(err, "pthread_mutex_lock");
        return -1;
    }
    int full = 0;
    size_t i = 0;
    while (i < nhooks && !same_hooks(&hooks[i], h)) {
        i++;
    }
    if (i == nhooks) {
        if (nhooks < MAX_HOOKS) {
            hooks[nhooks++] = *h;
        }
        else {
            full = 1;
        }
    }
    (void)pthread_mutex_unlock(&hooks_mu);
    if (full) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot add the fork hooks of %s: the table holds %d "
                     "(raise MAX_HOOKS in core/fork.c)", h->part, MAX_HOOKS);
        return -1;
    }
    return 0;
}
