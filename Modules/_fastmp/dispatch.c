/* dispatch.c - the pool's parent-side task dispatcher, type Dispatcher.
 *
 * Python submits pickled tasks; a native thread (no GIL, no Python) owns
 * one stream socket per worker and moves tasks to workers (at most
 * `inflight` per worker), reads result frames back, and watches each
 * worker's sentinel so that a dead worker is noticed at once: the tasks it
 * held complete with RESULT_LOST and an EXIT event tells Python to replace
 * it.  Results are kept per job until a Python thread collects them;
 * waiters sleep on a futex so that signals (Ctrl-C) interrupt them.
 * The wire format is in dispatch.h; the child's loop is in worker.c. */
#include "dispatch.h"
#include "futex.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define JOB_BUCKETS 256
#define READ_CHUNK 65536
/* A worker gets more tasks in flight when its tasks are short: enough to
 * cover about PIPELINE_NS of work, up to DEPTH_MAX tasks. */
#define PIPELINE_NS 2000000.0
#define DEPTH_MAX 64
#define WRITE_BATCH 64

enum { EVENT_EXIT = 1, EVENT_READY = 2 };

/* One task on its way to a worker: a ready-to-send frame. */
typedef struct task {
    struct task *next;
    size_t size;                 /* header + payload */
    unsigned char frame[];       /* frame_header, then the payload */
} task_t;

/* One finished task waiting to be collected by Python. */
typedef struct completion {
    struct completion *next;
    uint64_t index;
    uint32_t status;
    int64_t pid;                 /* RESULT_LOST: the worker that died */
    size_t len;
    unsigned char *data;
} completion_t;

typedef struct job {
    struct job *next;            /* hash chain */
    uint64_t id;
    int64_t expected;            /* number of tasks, -1 until known */
    int64_t finished;
    int failed;
    int fail_fast;               /* ready at the first failure */
    int notify;                  /* post EVENT_READY when ready */
    int ready_posted;
    completion_t *head, *tail;   /* not collected yet */
} job_t;

typedef struct {
    int fd;                      /* -1: free slot */
    int sentinel;                /* readable when the worker is gone */
    int eof;                     /* fd reached end of file */
    int64_t pid;
    int64_t budget;              /* tasks it may still get; -1: unlimited */
    int ninflight;
    int depth;                   /* tasks it may hold now */
    double task_ns;              /* running mean of its task times, 0: none */
    struct timespec last_result;
    task_t *head, *tail;         /* sent or being sent, oldest first */
    task_t *writing;             /* first task not fully written */
    size_t write_off;
    unsigned char *in;           /* bytes read, not parsed yet */
    size_t in_len, in_cap;
} worker_t;

typedef struct event {
    struct event *next;
    int kind;
    int64_t value;
} event_t;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_t thread;
    int thread_running;
    pid_t owner;                 /* the process that may use the thread */
    int wakefd;                  /* eventfd: re-read the state */
    int closed;
    int polling;                 /* the thread sleeps in poll() */
    int inflight_max;
    uint32_t seq;                /* futex word: bumped on every change */
    int waiters;
    task_t *pend_head, *pend_tail;
    int64_t busy;                /* tasks pending or in flight */
    worker_t **workers;          /* slots; each stays put while allocated */
    int nworkers;                /* slots allocated */
    job_t *jobs[JOB_BUCKETS];
    event_t *ev_head, *ev_tail;
    int error;                   /* errno that stopped the thread, or 0 */
} Dispatcher;

/* ---- helpers run with the mutex held (no GIL needed) ------------------ */

static job_t *
find_job(Dispatcher *d, uint64_t id)
{
    for (job_t *j = d->jobs[id % JOB_BUCKETS]; j != NULL; j = j->next) {
        if (j->id == id) {
            return j;
        }
    }
    return NULL;
}

static void
free_completions(completion_t *c)
{
    while (c != NULL) {
        completion_t *next = c->next;
        free(c->data);
        free(c);
        c = next;
    }
}

static int
job_ready(const job_t *j)
{
    return (j->expected >= 0 && j->finished >= j->expected)
           || (j->fail_fast && j->failed);
}

/* Wake every sleeper so it re-checks its condition. */
static void
announce(Dispatcher *d)
{
    __atomic_add_fetch(&d->seq, 1, __ATOMIC_SEQ_CST);
    if (d->waiters > 0) {
        (void)fastmp_futex_wake(&d->seq, INT32_MAX);
    }
}

/* Queue an event for the pool's handler thread.  Returns 0 or ENOMEM. */
static int
post_event(Dispatcher *d, int kind, int64_t value)
{
    event_t *e = malloc(sizeof(*e));
    if (e == NULL) {
        return ENOMEM;
    }
    e->next = NULL;
    e->kind = kind;
    e->value = value;
    if (d->ev_tail) {
        d->ev_tail->next = e;
    }
    else {
        d->ev_head = e;
    }
    d->ev_tail = e;
    return 0;
}

static void
post_ready_if_due(Dispatcher *d, job_t *j)
{
    if (j->notify && !j->ready_posted && job_ready(j)) {
        j->ready_posted = 1;
        if (post_event(d, EVENT_READY, (int64_t)j->id) != 0) {
            d->error = ENOMEM;
        }
    }
}

/* Record the outcome of one task of job `job`, taking ownership of
 * `data` (malloc'd, may be NULL).  Outcomes of forgotten jobs, and of
 * fail-fast jobs after their first failure, are dropped. */
static void
complete(Dispatcher *d, uint64_t job, uint64_t index, uint32_t status,
         int64_t pid, unsigned char *data, size_t len)
{
    d->busy--;
    job_t *j = find_job(d, job);
    if (j == NULL || (j->fail_fast && j->failed)) {
        free(data);
        if (j != NULL) {
            j->finished++;
        }
        return;
    }
    completion_t *c = malloc(sizeof(*c));
    if (c == NULL) {
        free(data);
        d->error = ENOMEM;
        return;
    }
    c->next = NULL;
    c->index = index;
    c->status = status;
    c->pid = pid;
    c->len = len;
    c->data = data;
    if (j->tail) {
        j->tail->next = c;
    }
    else {
        j->head = c;
    }
    j->tail = c;
    j->finished++;
    if (status != RESULT_OK) {
        j->failed = 1;
    }
    post_ready_if_due(d, j);
}

static void
wake_thread(Dispatcher *d)
{
    uint64_t one = 1;
    /* the counter cannot overflow in practice; EAGAIN would mean it is
     * already non-zero, which wakes the thread just the same */
    (void)!write(d->wakefd, &one, sizeof(one));
}

/* Write as much of worker w's unsent frames as the socket takes now,
 * several frames per system call.  Returns 0, or an errno value for a
 * broken socket (the sentinel will report the worker's death; the frames
 * stay in flight). */
static int
flush_worker(worker_t *w)
{
    while (w->writing != NULL) {
        struct iovec iov[WRITE_BATCH];
        int nvec = 0;
        size_t off = w->write_off;
        for (task_t *t = w->writing; t != NULL && nvec < WRITE_BATCH; t = t->next) {
            iov[nvec].iov_base = t->frame + off;
            iov[nvec].iov_len = t->size - off;
            nvec++;
            off = 0;
        }
        ssize_t n = writev(w->fd, iov, nvec);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN ? 0 : errno;
        }
        size_t left = (size_t)n;
        while (w->writing != NULL && left >= w->writing->size - w->write_off) {
            left -= w->writing->size - w->write_off;
            w->writing = w->writing->next;
            w->write_off = 0;
        }
        if (w->writing != NULL) {
            w->write_off += left;
            if (left == 0 || n == 0) {
                return 0;           /* the socket is full */
            }
        }
    }
    return 0;
}

/* Move pending tasks to the least loaded live workers that have room.
 * Returns 1 when some worker was left with unsent bytes (the thread must
 * poll for POLLOUT), else 0. */
static int
assign_pending(Dispatcher *d)
{
    while (d->pend_head != NULL) {
        worker_t *best = NULL;
        for (int i = 0; i < d->nworkers; i++) {
            worker_t *w = d->workers[i];
            if (w->fd < 0 || w->eof || w->budget == 0 || w->ninflight >= w->depth) {
                continue;
            }
            if (best == NULL || w->ninflight < best->ninflight) {
                best = w;
            }
        }
        if (best == NULL) {
            break;
        }
        task_t *t = d->pend_head;
        d->pend_head = t->next;
        if (d->pend_head == NULL) {
            d->pend_tail = NULL;
        }
        t->next = NULL;
        if (best->tail) {
            best->tail->next = t;
        }
        else {
            best->head = t;
        }
        best->tail = t;
        best->ninflight++;
        if (best->budget > 0) {
            best->budget--;
        }
        if (best->writing == NULL) {
            best->writing = t;
            best->write_off = 0;
        }
        (void)flush_worker(best);
    }
    for (int i = 0; i < d->nworkers; i++) {
        if (d->workers[i]->fd >= 0 && d->workers[i]->writing != NULL) {
            return 1;
        }
    }
    return 0;
}

/* A result came from w: when w was busy since its previous result, that
 * gap is one task's time; adapt how many tasks w may hold. */
static void
note_task_time(Dispatcher *d, worker_t *w)
{
    struct timespec now;
    (void)clock_gettime(CLOCK_MONOTONIC, &now);
    if (w->ninflight >= 2 && (w->last_result.tv_sec || w->last_result.tv_nsec)) {
        double ns = (double)(now.tv_sec - w->last_result.tv_sec) * 1e9
                    + (double)(now.tv_nsec - w->last_result.tv_nsec);
        w->task_ns = w->task_ns == 0 ? ns : 0.8 * w->task_ns + 0.2 * ns;
        double fit = PIPELINE_NS / (w->task_ns > 1.0 ? w->task_ns : 1.0);
        w->depth = fit >= DEPTH_MAX ? DEPTH_MAX
                   : fit <= d->inflight_max ? d->inflight_max : (int)fit;
    }
    w->last_result = now;
}

/* Parse the complete result frames in w's input buffer.  Returns 0, or
 * EPROTO for a frame that does not belong there. */
static int
parse_results(Dispatcher *d, worker_t *w)
{
    size_t pos = 0;
    int err = 0;
    while (w->in_len - pos >= sizeof(frame_header)) {
        frame_header h;
        memcpy(&h, w->in + pos, sizeof(h));
        if (h.kind != FRAME_RESULT || h.len > FRAME_MAX_PAYLOAD || w->head == NULL) {
            err = EPROTO;
            break;
        }
        if (w->in_len - pos - sizeof(h) < h.len) {
            break;
        }
        unsigned char *data = NULL;
        if (h.len > 0) {
            data = malloc((size_t)h.len);
            if (data == NULL) {
                err = ENOMEM;
                break;
            }
            memcpy(data, w->in + pos + sizeof(h), (size_t)h.len);
        }
        pos += sizeof(h) + (size_t)h.len;
        task_t *t = w->head;
        w->head = t->next;
        if (w->head == NULL) {
            w->tail = NULL;
        }
        free(t);
        note_task_time(d, w);
        w->ninflight--;
        complete(d, h.job, h.index, h.status, 0, data, (size_t)h.len);
    }
    if (pos > 0) {
        memmove(w->in, w->in + pos, w->in_len - pos);
        w->in_len -= pos;
    }
    return err;
}

/* Read what worker w has sent into its buffer, until the socket is
 * empty; sets w->eof at end of file.  Touches only w's input side, which
 * no other thread uses: the dispatcher thread calls it without the lock.
 * Returns 0 or an errno value. */
static int
slurp_worker(worker_t *w)
{
    for (;;) {
        size_t want = READ_CHUNK;
        if (w->in_len >= sizeof(frame_header)) {
            frame_header h;
            memcpy(&h, w->in, sizeof(h));
            if (h.len <= FRAME_MAX_PAYLOAD && sizeof(h) + h.len > w->in_len + want) {
                want = sizeof(h) + (size_t)h.len - w->in_len;
            }
        }
        if (w->in_cap - w->in_len < want) {
            size_t cap = w->in_len + want;
            unsigned char *in = realloc(w->in, cap);
            if (in == NULL) {
                return ENOMEM;
            }
            w->in = in;
            w->in_cap = cap;
        }
        ssize_t n = read(w->fd, w->in + w->in_len, w->in_cap - w->in_len);
        if (n > 0) {
            w->in_len += (size_t)n;
            continue;
        }
        if (n == 0 || errno == ECONNRESET) {
            w->eof = 1;
            return 0;
        }
        if (errno == EINTR) {
            continue;
        }
        return errno == EAGAIN ? 0 : errno;
    }
}

/* Read and record what worker w sent (mutex held).  Returns 0 or an
 * errno value. */
static int
read_worker(Dispatcher *d, worker_t *w)
{
    int err = slurp_worker(w);
    int perr = parse_results(d, w);
    return err != 0 ? err : perr;
}

/* Forget worker w: unsent tasks go back to the front of the queue, the
 * tasks it held complete as RESULT_LOST, and an EXIT event is posted. */
static void
drop_worker(Dispatcher *d, worker_t *w)
{
    task_t *requeue = NULL;
    if (w->writing != NULL) {
        task_t *from = w->writing;
        if (w->write_off > 0) {
            from = from->next;      /* partly sent: the worker held it */
        }
        /* detach [from, tail] from the in-flight list */
        if (from != NULL) {
            task_t **link = &w->head;
            while (*link != from) {
                link = &(*link)->next;
            }
            *link = NULL;
            requeue = from;
        }
    }
    for (task_t *t = w->head; t != NULL;) {
        task_t *next = t->next;
        frame_header h;
        memcpy(&h, t->frame, sizeof(h));
        complete(d, h.job, h.index, RESULT_LOST, w->pid, NULL, 0);
        free(t);
        t = next;
    }
    if (requeue != NULL) {
        task_t *last = requeue;
        while (last->next != NULL) {
            last = last->next;
        }
        last->next = d->pend_head;
        d->pend_head = requeue;
        if (d->pend_tail == NULL) {
            d->pend_tail = last;
        }
    }
    close(w->fd);
    if (w->sentinel >= 0) {
        close(w->sentinel);
    }
    free(w->in);
    if (post_event(d, EVENT_EXIT, w->pid) != 0) {
        d->error = ENOMEM;
    }
    memset(w, 0, sizeof(*w));
    w->fd = -1;
    w->sentinel = -1;
}

/* ---- the dispatcher thread ------------------------------------------- */

static void *
dispatcher_main(void *arg)
{
    Dispatcher *d = arg;
    struct pollfd *fds = NULL;
    worker_t **owner = NULL;     /* the worker fds[k] belongs to */
    int *read_err = NULL;        /* what reading fds[k] gave */
    size_t cap = 0;

    pthread_mutex_lock(&d->mu);
    while (!d->closed) {
        (void)assign_pending(d);
        size_t need = 1 + 2 * (size_t)d->nworkers;
        if (need > cap) {
            struct pollfd *nf = realloc(fds, need * sizeof(*fds));
            fds = nf != NULL ? nf : fds;
            worker_t **no = realloc(owner, need * sizeof(*owner));
            owner = no != NULL ? no : owner;
            int *ne = realloc(read_err, need * sizeof(*ne));
            read_err = ne != NULL ? ne : read_err;
            if (nf == NULL || no == NULL || ne == NULL) {
                d->error = ENOMEM;
                break;
            }
            cap = need;
        }
        size_t n = 0;
        fds[n].fd = d->wakefd;
        fds[n].events = POLLIN;
        owner[n++] = NULL;
        for (int i = 0; i < d->nworkers; i++) {
            worker_t *w = d->workers[i];
            if (w->fd < 0) {
                continue;
            }
            if (!w->eof) {
                fds[n].fd = w->fd;
                fds[n].events = POLLIN | (w->writing != NULL ? POLLOUT : 0);
                owner[n++] = w;
            }
            if (w->sentinel >= 0) {
                fds[n].fd = w->sentinel;
                fds[n].events = POLLIN;
                owner[n++] = w;
            }
        }
        d->polling = 1;
        pthread_mutex_unlock(&d->mu);

        int r = poll(fds, (nfds_t)n, -1);
        int poll_errno = errno;
        if (r > 0 && fds[0].revents) {
            uint64_t count;
            (void)!read(d->wakefd, &count, sizeof(count));
        }
        /* Only this thread reads worker sockets or drops workers, so the
         * reading needs no lock: submitters are not held up by it. */
        for (size_t k = 1; r > 0 && k < n; k++) {
            worker_t *w = owner[k];
            read_err[k] = 0;
            if (fds[k].fd == w->fd && (fds[k].revents & (POLLIN | POLLHUP | POLLERR))) {
                read_err[k] = slurp_worker(w);
            }
        }

        pthread_mutex_lock(&d->mu);
        d->polling = 0;
        if (r < 0) {
            if (poll_errno == EINTR) {
                continue;
            }
            d->error = poll_errno;
            break;
        }
        int changed = 0;
        /* results first: a dead worker's last results are still valid */
        for (size_t k = 1; k < n; k++) {
            worker_t *w = owner[k];
            if (fds[k].fd != w->fd || fds[k].revents == 0) {
                continue;
            }
            if (fds[k].revents & (POLLIN | POLLHUP | POLLERR)) {
                if (read_err[k] != 0 || parse_results(d, w) != 0) {
                    w->eof = 1;     /* unusable: wait for the sentinel */
                }
                changed = 1;
            }
            if ((fds[k].revents & POLLOUT) && !w->eof && flush_worker(w) != 0) {
                w->eof = 1;
            }
        }
        for (size_t k = 1; k < n; k++) {
            worker_t *w = owner[k];
            int gone = w->fd >= 0
                       && ((fds[k].fd == w->sentinel && fds[k].revents)
                           || (w->sentinel < 0 && w->eof));
            if (gone) {
                if (!w->eof) {
                    (void)read_worker(d, w);
                }
                drop_worker(d, w);
                changed = 1;
            }
        }
        if (changed) {
            announce(d);
        }
    }
    free(fds);
    free(owner);
    free(read_err);
    /* a fatal error: sleepers must not wait for results that will not come */
    announce(d);
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* Start the thread with every signal blocked in it, so that signals go to
 * Python threads.  Returns 0 or an errno value. */
static int
start_thread(Dispatcher *d)
{
    sigset_t all, old;
    sigfillset(&all);
    int err = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (err != 0) {
        return err;
    }
    err = pthread_create(&d->thread, NULL, dispatcher_main, d);
    (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err == 0) {
        d->thread_running = 1;
    }
    return err;
}

/* ---- Python-facing methods ------------------------------------------- */

static int
check_usable(Dispatcher *d)
{
    if (d->owner != getpid()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a pool dispatcher cannot be used in a child process");
        return -1;
    }
    if (d->closed) {
        PyErr_SetString(PyExc_ValueError, "pool dispatcher is closed");
        return -1;
    }
    if (d->error != 0) {
        fastmp_oserror(d->error, "pool dispatcher thread");
        return -1;
    }
    return 0;
}

/* Raise TypeError unless lo <= nargs <= hi.  Returns 0 or -1. */
static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi)
{
    if (nargs < lo || nargs > hi) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)",
                     name, lo, hi, nargs);
        return -1;
    }
    return 0;
}

static int
parse_int(PyObject *obj, int *out)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value out of range for a C int");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int
parse_u64(PyObject *obj, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* Lock the mutex; with the GIL released when it is contended. */
static void
lock_dispatcher(Dispatcher *d)
{
    if (pthread_mutex_trylock(&d->mu) != 0) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&d->mu);
        Py_END_ALLOW_THREADS
    }
}

static PyObject *
Dispatcher_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"inflight", NULL};
    int inflight = 2;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|i:Dispatcher", kwlist, &inflight)) {
        return NULL;
    }
    if (inflight < 1) {
        PyErr_SetString(PyExc_ValueError, "inflight must be at least 1");
        return NULL;
    }
    Dispatcher *d = (Dispatcher *)type->tp_alloc(type, 0);
    if (d == NULL) {
        return NULL;
    }
    d->wakefd = -1;
    d->owner = getpid();
    d->inflight_max = inflight;
    int err = pthread_mutex_init(&d->mu, NULL);
    if (err != 0) {
        Py_DECREF(d);
        return fastmp_oserror(err, "pthread_mutex_init");
    }
    d->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->wakefd < 0) {
        err = errno;
        Py_DECREF(d);
        return fastmp_oserror(err, "eventfd");
    }
    return (PyObject *)d;
}

/* Stop the thread and release every kernel object and buffer.  Sleepers
 * are woken and see `closed`.  Called with the GIL held. */
static void
shutdown_dispatcher(Dispatcher *d, int send_stop)
{
    if (d->owner != getpid()) {
        return;                 /* a forked copy: the thread is not ours */
    }
    lock_dispatcher(d);
    int was_closed = d->closed;
    d->closed = 1;
    if (d->thread_running) {
        wake_thread(d);
    }
    pthread_mutex_unlock(&d->mu);
    if (d->thread_running) {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(d->thread, NULL);
        Py_END_ALLOW_THREADS
        d->thread_running = 0;
    }
    if (was_closed) {
        return;
    }
    lock_dispatcher(d);
    for (int i = 0; i < d->nworkers; i++) {
        worker_t *w = d->workers[i];
        if (w->fd < 0) {
            continue;
        }
        if (send_stop && w->writing == NULL) {
            frame_header stop = {.kind = FRAME_STOP};
            (void)!write(w->fd, &stop, sizeof(stop));
        }
        for (task_t *t = w->head; t != NULL;) {
            task_t *next = t->next;
            free(t);
            t = next;
        }
        close(w->fd);
        if (w->sentinel >= 0) {
            close(w->sentinel);
        }
        free(w->in);
        memset(w, 0, sizeof(*w));
        w->fd = -1;
        w->sentinel = -1;
    }
    for (task_t *t = d->pend_head; t != NULL;) {
        task_t *next = t->next;
        free(t);
        t = next;
    }
    d->pend_head = d->pend_tail = NULL;
    d->busy = 0;
    announce(d);
    pthread_mutex_unlock(&d->mu);
}

static void
Dispatcher_dealloc(Dispatcher *d)
{
    PyTypeObject *tp = Py_TYPE(d);
    shutdown_dispatcher(d, 1);
    for (int b = 0; b < JOB_BUCKETS; b++) {
        for (job_t *j = d->jobs[b]; j != NULL;) {
            job_t *next = j->next;
            free_completions(j->head);
            free(j);
            j = next;
        }
    }
    for (event_t *e = d->ev_head; e != NULL;) {
        event_t *next = e->next;
        free(e);
        e = next;
    }
    for (int i = 0; i < d->nworkers; i++) {
        free(d->workers[i]);
    }
    free(d->workers);
    if (d->wakefd >= 0) {
        close(d->wakefd);
    }
    (void)pthread_mutex_destroy(&d->mu);
    tp->tp_free((PyObject *)d);
    Py_DECREF(tp);
}

/* add_worker(fd, sentinel, pid, budget): take ownership of socket `fd`
 * (made non-blocking here); `sentinel` (or -1) is duplicated.  budget:
 * how many tasks the worker will run before it exits (-1: no limit). */
static PyObject *
Dispatcher_add_worker(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    int fd, sentinel;
    long long pid, budget;
    if (check_nargs("add_worker", nargs, 4, 4) < 0) {
        return NULL;
    }
    if (parse_int(args[0], &fd) < 0 || parse_int(args[1], &sentinel) < 0) {
        return NULL;
    }
    if ((pid = PyLong_AsLongLong(args[2])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if ((budget = PyLong_AsLongLong(args[3])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (check_usable(d) < 0) {
        return NULL;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0
        || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        return fastmp_oserror(errno, "fcntl");
    }
    int sdup = -1;
    if (sentinel >= 0 && (sdup = fcntl(sentinel, F_DUPFD_CLOEXEC, 3)) < 0) {
        return fastmp_oserror(errno, "dup");
    }
    lock_dispatcher(d);
    int slot = -1;
    for (int i = 0; i < d->nworkers; i++) {
        if (d->workers[i]->fd < 0) {
            slot = i;
            break;
        }
    }
    if (slot < 0) {
        worker_t **ws = realloc(d->workers, (size_t)(d->nworkers + 1) * sizeof(*ws));
        worker_t *fresh = ws == NULL ? NULL : malloc(sizeof(*fresh));
        if (ws != NULL) {
            d->workers = ws;
        }
        if (fresh == NULL) {
            pthread_mutex_unlock(&d->mu);
            if (sdup >= 0) {
                close(sdup);
            }
            return PyErr_NoMemory();
        }
        slot = d->nworkers++;
        d->workers[slot] = fresh;
    }
    worker_t *w = d->workers[slot];
    memset(w, 0, sizeof(*w));
    w->fd = fd;
    w->sentinel = sdup;
    w->pid = pid;
    w->budget = budget < 0 ? -1 : budget;
    w->depth = d->inflight_max;
    int err = 0;
    if (!d->thread_running) {
        err = start_thread(d);
    }
    if (err == 0) {
        wake_thread(d);
    }
    else {
        w->fd = -1;
    }
    pthread_mutex_unlock(&d->mu);
    if (err != 0) {
        if (sdup >= 0) {
            close(sdup);
        }
        return fastmp_oserror(err, "pthread_create");
    }
    Py_RETURN_NONE;
}

/* open_job(job, ntasks, fail_fast, notify); ntasks -1: not known yet */
static PyObject *
Dispatcher_open_job(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t id;
    long long ntasks;
    if (check_nargs("open_job", nargs, 4, 4) < 0 || parse_u64(args[0], &id) < 0) {
        return NULL;
    }
    if ((ntasks = PyLong_AsLongLong(args[1])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int fail_fast = PyObject_IsTrue(args[2]);
    int notify = PyObject_IsTrue(args[3]);
    if (fail_fast < 0 || notify < 0 || check_usable(d) < 0) {
        return NULL;
    }
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        return PyErr_NoMemory();
    }
    j->id = id;
    j->expected = ntasks < 0 ? -1 : ntasks;
    j->fail_fast = fail_fast;
    j->notify = notify;
    lock_dispatcher(d);
    if (find_job(d, id) != NULL) {
        pthread_mutex_unlock(&d->mu);
        free(j);
        PyErr_Format(PyExc_ValueError, "job %llu is already open", (unsigned long long)id);
        return NULL;
    }
    j->next = d->jobs[id % JOB_BUCKETS];
    d->jobs[id % JOB_BUCKETS] = j;
    post_ready_if_due(d, j);
    pthread_mutex_unlock(&d->mu);
    Py_RETURN_NONE;
}

/* expect(job, ntasks): the job has this many tasks in all. */
static PyObject *
Dispatcher_expect(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t id, count;
    if (check_nargs("expect", nargs, 2, 2) < 0
        || parse_u64(args[0], &id) < 0 || parse_u64(args[1], &count) < 0) {
        return NULL;
    }
    lock_dispatcher(d);
    job_t *j = find_job(d, id);
    if (j != NULL) {
        j->expected = (int64_t)count;
        post_ready_if_due(d, j);
        announce(d);
    }
    pthread_mutex_unlock(&d->mu);
    Py_RETURN_NONE;
}

/* forget(job): drop the job and whatever it has not collected. */
static PyObject *
Dispatcher_forget(Dispatcher *d, PyObject *arg)
{
    uint64_t id;
    if (parse_u64(arg, &id) < 0) {
        return NULL;
    }
    lock_dispatcher(d);
    job_t **link = &d->jobs[id % JOB_BUCKETS];
    while (*link != NULL && (*link)->id != id) {
        link = &(*link)->next;
    }
    job_t *j = *link;
    if (j != NULL) {
        *link = j->next;
    }
    pthread_mutex_unlock(&d->mu);
    if (j != NULL) {
        free_completions(j->head);
        free(j);
    }
    Py_RETURN_NONE;
}

/* submit(job, index, kind, payload): queue one task. */
static PyObject *
Dispatcher_submit(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t job, index, kind;
    if (check_nargs("submit", nargs, 4, 4) < 0
        || parse_u64(args[0], &job) < 0 || parse_u64(args[1], &index) < 0
        || parse_u64(args[2], &kind) < 0) {
        return NULL;
    }
    if (kind < FRAME_APPLY || kind > FRAME_STARMAP) {
        PyErr_Format(PyExc_ValueError, "bad task kind %llu", (unsigned long long)kind);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[3], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if ((uint64_t)view.len > FRAME_MAX_PAYLOAD) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "task of %zd bytes is too large", view.len);
        return NULL;
    }
    task_t *t = malloc(sizeof(*t) + sizeof(frame_header) + (size_t)view.len);
    if (t == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    frame_header h = {.kind = (uint32_t)kind, .job = job, .index = index,
                      .len = (uint64_t)view.len};
    t->next = NULL;
    t->size = sizeof(h) + (size_t)view.len;
    memcpy(t->frame, &h, sizeof(h));
    memcpy(t->frame + sizeof(h), view.buf, (size_t)view.len);
    PyBuffer_Release(&view);

    lock_dispatcher(d);
    if (d->closed || d->error || d->owner != getpid()) {
        pthread_mutex_unlock(&d->mu);
        free(t);
        (void)check_usable(d);
        return NULL;
    }
    if (d->pend_tail) {
        d->pend_tail->next = t;
    }
    else {
        d->pend_head = t;
    }
    d->pend_tail = t;
    d->busy++;
    /* An idle worker gets the task from this thread: the thread need not
     * wake.  Otherwise the thread sends it (it is told only if asleep). */
    int idle = 0;
    for (int i = 0; i < d->nworkers && !idle; i++) {
        worker_t *w = d->workers[i];
        idle = w->fd >= 0 && !w->eof && w->budget != 0 && w->ninflight == 0;
    }
    if (idle) {
        if (assign_pending(d) && d->polling) {
            wake_thread(d);
        }
    }
    else if (d->polling) {
        wake_thread(d);
    }
    pthread_mutex_unlock(&d->mu);
    Py_RETURN_NONE;
}

/* Sleep on the futex until `seq` moves past `seen` or the deadline.
 * Called with the mutex held and the GIL held; returns with both held.
 * Returns 0, ETIMEDOUT, or -1 with an exception set (a signal handler
 * raised). */
static int
sleep_on_change(Dispatcher *d, uint32_t seen, const fastmp_deadline *dl)
{
    d->waiters++;
    pthread_mutex_unlock(&d->mu);
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = fastmp_futex_wait(&d->seq, seen, dl);
    Py_END_ALLOW_THREADS
    int raised = 0;
    if (err == EINTR) {
        raised = PyErr_CheckSignals() < 0;
    }
    lock_dispatcher(d);
    d->waiters--;
    if (raised) {
        return -1;
    }
    return err == ETIMEDOUT ? ETIMEDOUT : 0;
}

/* Move the job's collected outcomes into a new list of
 * (index, status, payload-or-pid) tuples.  Mutex held.  Returns NULL with
 * an exception set on failure (the outcomes are then lost). */
static PyObject *
take_completions(job_t *j)
{
    PyObject *out = PyList_New(0);
    completion_t *c = j->head;
    j->head = j->tail = NULL;
    for (completion_t *p = c; out != NULL && p != NULL; p = p->next) {
        PyObject *item;
        if (p->status == RESULT_LOST) {
            item = Py_BuildValue("(KIL)", (unsigned long long)p->index,
                                 (unsigned)p->status, (long long)p->pid);
        }
        else {
            item = Py_BuildValue("(KIy#)", (unsigned long long)p->index,
                                 (unsigned)p->status, (const char *)p->data,
                                 (Py_ssize_t)p->len);
        }
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(item);
    }
    free_completions(c);
    return out;
}

enum { WAIT_NONE = 0, WAIT_ANY = 1, WAIT_READY = 2 };
enum { STATE_PENDING = 0, STATE_READY = 1, STATE_CLOSED = 2 };

/* collect(job, timeout, want) -> (state, outcomes)
 * want 0: do not block; 1: until an outcome is there; 2: until the job is
 * ready.  state: 0 pending, 1 ready, 2 the dispatcher closed first (or
 * the job is unknown).  outcomes: every outcome not collected before. */
static PyObject *
Dispatcher_collect(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t id;
    long want;
    fastmp_deadline dl;
    if (check_nargs("collect", nargs, 3, 3) < 0 || parse_u64(args[0], &id) < 0
        || fastmp_deadline_from_object(args[1], &dl) < 0) {
        return NULL;
    }
    if ((want = PyLong_AsLong(args[2])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    lock_dispatcher(d);
    int state;
    job_t *j;
    for (;;) {
        j = find_job(d, id);
        if (j == NULL) {
            state = STATE_CLOSED;
            break;
        }
        state = job_ready(j) ? STATE_READY : STATE_PENDING;
        if (state == STATE_READY || (want == WAIT_ANY && j->head != NULL)
            || want == WAIT_NONE) {
            break;
        }
        if (d->closed || d->error || d->owner != getpid()) {
            state = STATE_CLOSED;
            break;
        }
        uint32_t seen = __atomic_load_n(&d->seq, __ATOMIC_SEQ_CST);
        int r = sleep_on_change(d, seen, &dl);
        if (r < 0) {
            pthread_mutex_unlock(&d->mu);
            return NULL;
        }
        if (r == ETIMEDOUT) {
            j = find_job(d, id);
            state = j != NULL && job_ready(j) ? STATE_READY : STATE_PENDING;
            break;
        }
    }
    PyObject *outcomes = j != NULL ? take_completions(j) : PyList_New(0);
    pthread_mutex_unlock(&d->mu);
    if (outcomes == NULL) {
        return NULL;
    }
    return Py_BuildValue("(iN)", state, outcomes);
}

/* wait_idle(timeout) -> bool: True once no task is pending or in flight. */
static PyObject *
Dispatcher_wait_idle(Dispatcher *d, PyObject *timeout)
{
    fastmp_deadline dl;
    if (fastmp_deadline_from_object(timeout, &dl) < 0) {
        return NULL;
    }
    lock_dispatcher(d);
    int idle;
    for (;;) {
        idle = d->busy == 0;
        if (idle || d->closed || d->error) {
            break;
        }
        uint32_t seen = __atomic_load_n(&d->seq, __ATOMIC_SEQ_CST);
        int r = sleep_on_change(d, seen, &dl);
        if (r < 0) {
            pthread_mutex_unlock(&d->mu);
            return NULL;
        }
        if (r == ETIMEDOUT) {
            idle = d->busy == 0;
            break;
        }
    }
    pthread_mutex_unlock(&d->mu);
    return PyBool_FromLong(idle);
}

/* next_events(timeout) -> list of (kind, value), or None once closed.
 * kind 1 (EXIT): worker `value` (a pid) is gone; 2 (READY): job `value`
 * is ready (jobs opened with notify).  An empty list on timeout. */
static PyObject *
Dispatcher_next_events(Dispatcher *d, PyObject *timeout)
{
    fastmp_deadline dl;
    if (fastmp_deadline_from_object(timeout, &dl) < 0) {
        return NULL;
    }
    lock_dispatcher(d);
    while (d->ev_head == NULL && !d->closed && !d->error) {
        uint32_t seen = __atomic_load_n(&d->seq, __ATOMIC_SEQ_CST);
        int r = sleep_on_change(d, seen, &dl);
        if (r < 0) {
            pthread_mutex_unlock(&d->mu);
            return NULL;
        }
        if (r == ETIMEDOUT) {
            break;
        }
    }
    if (d->ev_head == NULL && (d->closed || d->error)) {
        pthread_mutex_unlock(&d->mu);
        Py_RETURN_NONE;
    }
    event_t *e = d->ev_head;
    d->ev_head = d->ev_tail = NULL;
    pthread_mutex_unlock(&d->mu);
    PyObject *out = PyList_New(0);
    while (e != NULL) {
        event_t *next = e->next;
        if (out != NULL) {
            PyObject *item = Py_BuildValue("(iL)", e->kind, (long long)e->value);
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_CLEAR(out);
            }
            Py_XDECREF(item);
        }
        free(e);
        e = next;
    }
    return out;
}

/* close(stop=True): stop the thread, tell idle workers to STOP, close
 * every channel.  Waiting threads return with state "closed". */
static PyObject *
Dispatcher_close(Dispatcher *d, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("close", nargs, 0, 1) < 0) {
        return NULL;
    }
    int stop = nargs > 0 ? PyObject_IsTrue(args[0]) : 1;
    if (stop < 0) {
        return NULL;
    }
    shutdown_dispatcher(d, stop);
    Py_RETURN_NONE;
}

/* close_in_child(): in a forked child, close the copies of the parent's
 * channels (a worker holding another's channel would hide its end of
 * file).  Nothing else runs in the child, so no lock is taken. */
static PyObject *
Dispatcher_close_in_child(Dispatcher *d, PyObject *Py_UNUSED(ignored))
{
    if (d->owner == getpid()) {
        PyErr_SetString(PyExc_RuntimeError, "close_in_child() called in the parent");
        return NULL;
    }
    for (int i = 0; i < d->nworkers; i++) {
        worker_t *w = d->workers[i];
        if (w->fd >= 0) {
            close(w->fd);
            w->fd = -1;
        }
        if (w->sentinel >= 0) {
            close(w->sentinel);
            w->sentinel = -1;
        }
    }
    if (d->wakefd >= 0) {
        close(d->wakefd);
        d->wakefd = -1;
    }
    Py_RETURN_NONE;
}

static PyObject *
Dispatcher_get_busy(Dispatcher *d, void *Py_UNUSED(closure))
{
    lock_dispatcher(d);
    long long busy = d->busy;
    pthread_mutex_unlock(&d->mu);
    return PyLong_FromLongLong(busy);
}

static PyMethodDef Dispatcher_methods[] = {
    {"add_worker", (PyCFunction)(void (*)(void))Dispatcher_add_worker, METH_FASTCALL,
     "add_worker(fd, sentinel, pid, budget): serve a worker over socket fd."},
    {"open_job", (PyCFunction)(void (*)(void))Dispatcher_open_job, METH_FASTCALL,
     "open_job(job, ntasks, fail_fast, notify): make a slot for a job's\n"
     "outcomes; ntasks -1 until expect() tells."},
    {"expect", (PyCFunction)(void (*)(void))Dispatcher_expect, METH_FASTCALL,
     "expect(job, ntasks): the job has ntasks tasks in all."},
    {"forget", (PyCFunction)Dispatcher_forget, METH_O,
     "forget(job): drop the job and its uncollected outcomes."},
    {"submit", (PyCFunction)(void (*)(void))Dispatcher_submit, METH_FASTCALL,
     "submit(job, index, kind, payload): queue one pickled task."},
    {"collect", (PyCFunction)(void (*)(void))Dispatcher_collect, METH_FASTCALL,
     "collect(job, timeout, want) -> (state, [(index, status, data), ...])"},
    {"wait_idle", (PyCFunction)Dispatcher_wait_idle, METH_O,
     "wait_idle(timeout) -> True once no task is pending or in flight."},
    {"next_events", (PyCFunction)Dispatcher_next_events, METH_O,
     "next_events(timeout) -> [(kind, value), ...], or None once closed."},
    {"close", (PyCFunction)(void (*)(void))Dispatcher_close, METH_FASTCALL,
     "close(stop=True): stop dispatching and close every channel."},
    {"close_in_child", (PyCFunction)Dispatcher_close_in_child, METH_NOARGS,
     "close_in_child(): after fork, close the child's copies of the channels."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Dispatcher_getset[] = {
    {"busy", (getter)Dispatcher_get_busy, NULL, "tasks pending or in flight", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Dispatcher_slots[] = {
    {Py_tp_new, Dispatcher_new},
    {Py_tp_dealloc, Dispatcher_dealloc},
    {Py_tp_methods, Dispatcher_methods},
    {Py_tp_getset, Dispatcher_getset},
    {Py_tp_doc, "Dispatcher(inflight=2): moves pool tasks to workers and "
                "results back, on a native thread."},
    {0, NULL},
};

static PyType_Spec Dispatcher_spec = {
    .name = "fastmp._fastmp.Dispatcher",
    .basicsize = sizeof(Dispatcher),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Dispatcher_slots,
};

int
fastmp_dispatch_exec(PyObject *module, fastmp_state *st)
{
    st->Dispatcher_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &Dispatcher_spec, NULL);
    if (st->Dispatcher_type == NULL
        || PyModule_AddType(module, st->Dispatcher_type) < 0
        || PyModule_AddFunctions(module, fastmp_worker_functions) < 0) {
        return -1;
    }
    if (PyModule_AddIntConstant(module, "TASK_APPLY", FRAME_APPLY) < 0
        || PyModule_AddIntConstant(module, "TASK_MAP", FRAME_MAP) < 0
        || PyModule_AddIntConstant(module, "TASK_STARMAP", FRAME_STARMAP) < 0
        || PyModule_AddIntConstant(module, "RESULT_OK", RESULT_OK) < 0
        || PyModule_AddIntConstant(module, "RESULT_ERROR", RESULT_ERROR) < 0
        || PyModule_AddIntConstant(module, "RESULT_LOST", RESULT_LOST) < 0
        || PyModule_AddIntConstant(module, "EVENT_EXIT", EVENT_EXIT) < 0
        || PyModule_AddIntConstant(module, "EVENT_READY", EVENT_READY) < 0) {
        return -1;
    }
    return 0;
}

int
fastmp_dispatch_traverse(fastmp_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Dispatcher_type);
    return 0;
}

void
fastmp_dispatch_clear(fastmp_state *st)
{
    Py_CLEAR(st->Dispatcher_type);
}
