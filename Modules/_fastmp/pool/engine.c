/* engine.c - the pool dispatcher's engine (no GIL, no Python):
 * the job table, the per-worker streams (tasks out, result frames in),
 * the native thread that serves them, and the step of that work a
 * waiting caller does itself (dispatch_pump).
 *
 * The thread owns one stream socket per worker and moves tasks to workers
 * (at most `depth` per worker), reads result frames back, and watches each
 * worker's sentinel so that a dead worker is noticed at once: the tasks it
 * held complete with RESULT_LOST and an EXIT event tells Python to replace
 * it.  Results are kept per job until a Python thread collects them.
 * The Python type is in dispatcher.c; the child's loop is in worker.c. */
#include "pool/engine.h"
#include "pool/wire.h"
#include "core/deadline.h"
#include "core/fork.h"
#include "core/futex.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_CHUNK 65536
/* A worker gets more tasks in flight when its tasks are short: enough to
 * cover about PIPELINE_NS of work, up to DEPTH_MAX tasks. */
#define PIPELINE_NS 2000000.0
#define DEPTH_MAX 64
#define WRITE_BATCH 64
/* How long after a caller's pump the thread does not read results. */
#define BLIND_NS 1000000

/* ---- fork safety ------------------------------------------------------
 * Threads that hold `mu` without the GIL (the dispatcher thread, a caller
 * pumping while it waits) allocate memory.  Some malloc implementations
 * (ASan's, for one) leave their lock held in a child forked while another
 * thread was inside malloc, and the child then hangs at its first
 * allocation.  So fork waits until no such thread is in an allocating
 * section (alloc_mu).  Those threads never wait for the GIL while holding
 * alloc_mu, so the forking thread (which holds the GIL) cannot deadlock
 * on it. */

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static Dispatcher *registry_head;

static void
before_fork(void)
{
    pthread_mutex_lock(&registry_mu);
    for (Dispatcher *d = registry_head; d != NULL; d = d->next_live) {
        pthread_mutex_lock(&d->alloc_mu);
    }
}

static void
after_fork_in_parent(void)
{
    for (Dispatcher *d = registry_head; d != NULL; d = d->next_live) {
        pthread_mutex_unlock(&d->alloc_mu);
    }
    pthread_mutex_unlock(&registry_mu);
}

/* The child has no dispatcher thread: fresh, unlocked mutexes.  Its
 * dispatchers are the parent's copies, which dispatch_owned() tells by
 * their fork generation. */
static void
after_fork_in_child(void)
{
    for (Dispatcher *d = registry_head; d != NULL; d = d->next_live) {
        (void)pthread_mutex_init(&d->alloc_mu, NULL);
        (void)pthread_mutex_init(&d->mu, NULL);
    }
    (void)pthread_mutex_init(&registry_mu, NULL);
}

int
dispatch_fork_init(void)
{
    static const fastmp_fork_hooks hooks = {
        "pool engine", before_fork, after_fork_in_parent, after_fork_in_child,
    };
    return fastmp_fork_add_hooks(&hooks);
}

void
dispatch_register(Dispatcher *d)
{
    pthread_mutex_lock(&registry_mu);
    d->fork_generation = fastmp_fork_generation();
    d->next_live = registry_head;
    registry_head = d;
    pthread_mutex_unlock(&registry_mu);
}

void
dispatch_unregister(Dispatcher *d)
{
    pthread_mutex_lock(&registry_mu);
    Dispatcher **link = &registry_head;
    while (*link != NULL && *link != d) {
        link = &(*link)->next_live;
    }
    if (*link == d) {
        *link = d->next_live;
    }
    pthread_mutex_unlock(&registry_mu);
}

int
dispatch_owned(const Dispatcher *d)
{
    return d->fork_generation == fastmp_fork_generation();
}

void
dispatch_lock_nogil(Dispatcher *d)
{
    pthread_mutex_lock(&d->mu);
    pthread_mutex_lock(&d->alloc_mu);
}

void
dispatch_unlock_nogil(Dispatcher *d)
{
    pthread_mutex_unlock(&d->alloc_mu);
    pthread_mutex_unlock(&d->mu);
}

/* ---- jobs, outcomes, events (mutex held) ------------------------------- */

job_t *
dispatch_find_job(Dispatcher *d, uint64_t id)
{
    if (d->job_buckets == 0) {
        return NULL;
    }
    for (job_t *j = d->jobs[id & (d->job_buckets - 1)]; j != NULL; j = j->next) {
        if (j->id == id) {
            return j;
        }
    }
    return NULL;
}

int
dispatch_link_job(Dispatcher *d, job_t *j)
{
    if (d->njobs >= 2 * d->job_buckets) {
        size_t n = d->job_buckets == 0 ? JOB_BUCKETS_MIN : 2 * d->job_buckets;
        job_t **table = calloc(n, sizeof(*table));
        if (table == NULL) {
            return ENOMEM;
        }
        for (size_t b = 0; b < d->job_buckets; b++) {
            for (job_t *k = d->jobs[b]; k != NULL;) {
                job_t *next = k->next;
                k->next = table[k->id & (n - 1)];
                table[k->id & (n - 1)] = k;
                k = next;
            }
        }
        free(d->jobs);
        d->jobs = table;
        d->job_buckets = n;
    }
    job_t **head = &d->jobs[j->id & (d->job_buckets - 1)];
    j->next = *head;
    *head = j;
    d->njobs++;
    return 0;
}

/* Payloads from this size up are mapped fresh.  Heap memory that was
 * free when a worker was forked is shared copy-on-write with it: writing
 * a result there copies every page, and each copy interrupts the other
 * CPUs that ran this process's threads to flush their TLBs.  Fresh pages
 * are only zeroed. */
#define PAYLOAD_MAP_MIN (64 * 1024)

unsigned char *
dispatch_payload_alloc(size_t len)
{
    if (len < PAYLOAD_MAP_MIN) {
        return malloc(len > 0 ? len : 1);
    }
    void *at = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return at == MAP_FAILED ? NULL : at;
}

void
dispatch_payload_free(unsigned char *data, size_t len)
{
    if (data == NULL) {
        return;
    }
    if (len < PAYLOAD_MAP_MIN) {
        free(data);
    }
    else {
        (void)munmap(data, len);    /* fails only for a bad range: ours is not */
    }
}

void
dispatch_free_completions(completion_t *c)
{
    while (c != NULL) {
        completion_t *next = c->next;
        dispatch_payload_free(c->data, c->len);
        free(c);
        c = next;
    }
}

job_t *
dispatch_unlink_job(Dispatcher *d, uint64_t id)
{
    if (d->job_buckets == 0) {
        return NULL;
    }
    job_t **link = &d->jobs[id & (d->job_buckets - 1)];
    while (*link != NULL && (*link)->id != id) {
        link = &(*link)->next;
    }
    job_t *j = *link;
    if (j != NULL) {
        *link = j->next;
        d->njobs--;
    }
    return j;
}

void
dispatch_free_job(job_t *j)
{
    if (j != NULL) {
        dispatch_free_completions(j->head);
        free(j);
    }
}

void
dispatch_free_tasks(task_t *t)
{
    while (t != NULL) {
        task_t *next = t->next;
        free(t);
        t = next;
    }
}

int
dispatch_job_ready(const job_t *j)
{
    return j->expected >= 0 && j->finished >= j->expected;
}

/* Bump `word` and wake every thread asleep on it, if there are any. */
static void
bump(uint32_t *word, int sleepers)
{
    __atomic_add_fetch(word, 1, __ATOMIC_SEQ_CST);
    if (sleepers > 0) {
        (void)fastmp_futex_wake(word, INT32_MAX);
    }
}

void
dispatch_announce(Dispatcher *d)
{
    d->results_dirty = 0;
    bump(&d->seq, d->waiters);
}

void
dispatch_announce_events(Dispatcher *d)
{
    bump(&d->ev_seq, d->ev_waiters);
}

/* Wake the sleepers of `seq` when something they wait for happened. */
static void
settle(Dispatcher *d)
{
    if (d->results_dirty || (d->idle_waiters > 0 && d->busy == 0)) {
        dispatch_announce(d);
    }
}

/* Queue an event for the pool's handler thread and wake it.  Returns 0
 * or ENOMEM. */
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
    dispatch_announce_events(d);
    return 0;
}

void
dispatch_post_ready_if_due(Dispatcher *d, job_t *j)
{
    if (j->notify && !j->ready_posted && dispatch_job_ready(j)) {
        j->ready_posted = 1;
        if (post_event(d, EVENT_READY, (int64_t)j->id) != 0) {
            d->error = ENOMEM;
        }
    }
}

/* Record the outcome of one task of job `job`, taking ownership of
 * `data` (malloc'd, may be NULL).  Outcomes of forgotten jobs are dropped;
 * those of a drop_after_failure job that has failed are counted, then
 * dropped (a map keeps its first failure only). */
static void
complete(Dispatcher *d, uint64_t job, uint64_t index, uint32_t status,
         int64_t pid, unsigned char *data, size_t len)
{
    d->busy--;
    job_t *j = dispatch_find_job(d, job);
    if (j == NULL) {
        dispatch_payload_free(data, len);
        return;
    }
    j->finished++;
    int kept = !(j->drop_after_failure && j->failed);
    if (kept) {
        completion_t *c = malloc(sizeof(*c));
        if (c == NULL) {
            dispatch_payload_free(data, len);
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
        if (status != RESULT_OK && status != RESULT_QUICK) {
            j->failed = 1;
        }
    }
    else {
        dispatch_payload_free(data, len);
    }
    /* a dropped outcome wakes nobody, unless it made the job ready */
    int ready = dispatch_job_ready(j);
    if ((kept && j->want_any > 0) || (ready && (j->want_any > 0 || j->want_ready > 0))) {
        d->results_dirty = 1;
    }
    dispatch_post_ready_if_due(d, j);
}

/* ---- the worker streams (mutex held) ----------------------------------- */

void
dispatch_wake_thread(Dispatcher *d)
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

int
dispatch_assign_pending(Dispatcher *d)
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
    }
    /* every task assigned first: one write per worker carries them all */
    int unsent = 0;
    for (int i = 0; i < d->nworkers; i++) {
        worker_t *w = d->workers[i];
        if (w->fd >= 0 && w->writing != NULL) {
            (void)flush_worker(w);
            unsent |= w->writing != NULL;
        }
    }
    return unsent;
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

/* The result frame h (payload `data`, taken over) came from w: its
 * oldest task is done. */
static void
deliver(Dispatcher *d, worker_t *w, const frame_header *h, unsigned char *data)
{
    task_t *t = w->head;
    w->head = t->next;
    if (w->head == NULL) {
        w->tail = NULL;
    }
    free(t);
    note_task_time(d, w);
    w->ninflight--;
    complete(d, h->job, h->index, h->status, 0, data, (size_t)h->len);
}

/* Deliver w's large payload once it is whole, then parse the complete
 * result frames in w's input buffer.  A large frame (PAYLOAD_MAP_MIN)
 * that is not whole yet moves to memory of its own, where the rest of it
 * is read.  Returns 0, or EPROTO for a frame that does not belong there
 * (or ENOMEM). */
static int
parse_results(Dispatcher *d, worker_t *w)
{
    if (w->big != NULL) {
        if (w->big_got < w->big_h.len) {
            return 0;
        }
        unsigned char *data = w->big;
        w->big = NULL;
        deliver(d, w, &w->big_h, data);
    }
    size_t pos = 0;
    int err = 0;
    while (w->in_len - pos >= sizeof(frame_header)) {
        frame_header h;
        memcpy(&h, w->in + pos, sizeof(h));
        if (h.kind != FRAME_RESULT || h.len > FRAME_MAX_PAYLOAD || w->head == NULL) {
            err = EPROTO;
            break;
        }
        size_t have = w->in_len - pos - sizeof(h);
        if (have < h.len && h.len < PAYLOAD_MAP_MIN) {
            break;
        }
        unsigned char *data = NULL;
        if (h.len > 0 && (data = dispatch_payload_alloc((size_t)h.len)) == NULL) {
            err = ENOMEM;
            break;
        }
        size_t part = have < h.len ? have : (size_t)h.len;
        memcpy(data, w->in + pos + sizeof(h), part);
        pos += sizeof(h) + part;
        if (part < h.len) {
            w->big_h = h;
            w->big = data;
            w->big_got = part;
            break;
        }
        deliver(d, w, &h, data);
    }
    if (pos > 0) {
        memmove(w->in, w->in + pos, w->in_len - pos);
        w->in_len -= pos;
    }
    return err;
}

/* Read what worker w has sent: into its large payload while one is being
 * read, else into its input buffer.  Returns 0 when the socket is empty
 * (or at end of file, w->eof set), -1 when the buffer filled up (parse,
 * then read again), or an errno value. */
static int
slurp_worker(worker_t *w)
{
    unsigned char *at;
    size_t room;
    if (w->big != NULL) {
        at = w->big + w->big_got;
        room = (size_t)w->big_h.len - w->big_got;
    }
    else {
        size_t want = READ_CHUNK;
        if (w->in_len >= sizeof(frame_header)) {
            frame_header h;
            memcpy(&h, w->in, sizeof(h));
            if (h.len < PAYLOAD_MAP_MIN && sizeof(h) + h.len > w->in_len + want) {
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
        at = w->in + w->in_len;
        room = w->in_cap - w->in_len;
    }
    for (;;) {
        ssize_t n = read(w->fd, at, room);
        if (n > 0) {
            if (w->big != NULL) {
                w->big_got += (size_t)n;
            }
            else {
                w->in_len += (size_t)n;
            }
            return (size_t)n < room ? 0 : -1;   /* a short read: the socket is empty */
        }
        if (n == 0 || errno == ECONNRESET) {
            w->eof = 1;
            return 0;
        }
        if (errno != EINTR) {
            return errno == EAGAIN ? 0 : errno;
        }
    }
}

/* Read and record what worker w sent; a worker whose stream fails is
 * marked at end of file (its sentinel reports the death). */
static void
read_worker(Dispatcher *d, worker_t *w)
{
    int r;
    do {
        r = slurp_worker(w);
        if (r > 0 || parse_results(d, w) != 0) {
            w->eof = 1;
            return;
        }
    } while (r < 0);
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
    dispatch_payload_free(w->big, (size_t)w->big_h.len);
    if (post_event(d, EVENT_EXIT, w->pid) != 0) {
        d->error = ENOMEM;
    }
    memset(w, 0, sizeof(*w));
    w->fd = -1;
    w->sentinel = -1;
}

void
dispatch_hand_back(Dispatcher *d)
{
    d->pumped_ns = 0;
    if (d->blind && d->polling) {
        dispatch_wake_thread(d);
    }
}

void
dispatch_pump(Dispatcher *d)
{
    d->pumped_ns = fastmp_monotonic_ns();
    for (int i = 0; i < d->nworkers; i++) {
        worker_t *w = d->workers[i];
        if (w->fd >= 0 && !w->eof && w->ninflight > 0) {
            read_worker(d, w);
        }
    }
    if (dispatch_assign_pending(d) && d->polling) {
        dispatch_wake_thread(d);    /* it must poll for POLLOUT */
    }
    settle(d);
}

/* ---- the dispatcher thread ------------------------------------------- */

static void *
dispatcher_main(void *arg)
{
    Dispatcher *d = arg;
    struct pollfd *fds = NULL;
    worker_t **owner = NULL;     /* the worker fds[k] belongs to */
    size_t cap = 0;

    dispatch_lock_nogil(d);
    while (!d->closed) {
        (void)dispatch_assign_pending(d);
        size_t need = 1 + 2 * (size_t)d->nworkers;
        if (need > cap) {
            struct pollfd *nf = realloc(fds, need * sizeof(*fds));
            fds = nf != NULL ? nf : fds;
            worker_t **no = realloc(owner, need * sizeof(*owner));
            owner = no != NULL ? no : owner;
            if (nf == NULL || no == NULL) {
                d->error = ENOMEM;
                break;
            }
            cap = need;
        }
        /* blind: callers pumped lately and read results themselves */
        int64_t since_pump = fastmp_monotonic_ns() - d->pumped_ns;
        d->blind = d->pumped_ns != 0 && since_pump < BLIND_NS;
        struct timespec blind_left = {0, d->blind ? BLIND_NS - since_pump : 0};
        size_t n = 0;
        fds[n].fd = d->wakefd;
        fds[n].events = POLLIN;
        owner[n++] = NULL;
        for (int i = 0; i < d->nworkers; i++) {
            worker_t *w = d->workers[i];
            if (w->fd < 0) {
                continue;
            }
            if (!w->eof && (!d->blind || w->writing != NULL)) {
                fds[n].fd = w->fd;
                fds[n].events = (d->blind ? 0 : POLLIN) | (w->writing != NULL ? POLLOUT : 0);
                owner[n++] = w;
            }
            if (w->sentinel >= 0) {
                fds[n].fd = w->sentinel;
                fds[n].events = POLLIN;
                owner[n++] = w;
            }
        }
        d->polling = 1;
        dispatch_unlock_nogil(d);

        int r = ppoll(fds, (nfds_t)n, d->blind ? &blind_left : NULL, NULL);
        int poll_errno = errno;
        if (r > 0 && fds[0].revents) {
            uint64_t count;
            (void)!read(d->wakefd, &count, sizeof(count));
        }

        dispatch_lock_nogil(d);
        d->polling = 0;
        d->blind = 0;
        if (r < 0) {
            if (poll_errno == EINTR) {
                continue;
            }
            d->error = poll_errno;
            break;
        }
        /* results first: a dead worker's last results are still valid */
        for (size_t k = 1; k < n; k++) {
            worker_t *w = owner[k];
            if (fds[k].fd != w->fd || fds[k].revents == 0) {
                continue;
            }
            if ((fds[k].revents & (POLLIN | POLLHUP | POLLERR)) && !w->eof) {
                read_worker(d, w);
            }
            if ((fds[k].revents & POLLOUT) && !w->eof && flush_worker(w) != 0) {
                w->eof = 1;
            }
        }
        int dropped = 0;
        for (size_t k = 1; k < n; k++) {
            worker_t *w = owner[k];
            int gone = w->fd >= 0
                       && ((fds[k].fd == w->sentinel && fds[k].revents)
                           || (w->sentinel < 0 && w->eof));
            if (gone) {
                if (!w->eof) {
                    read_worker(d, w);
                }
                drop_worker(d, w);
                dropped = 1;
            }
        }
        if (dropped) {
            dispatch_announce(d);
        }
        else {
            settle(d);
        }
    }
    free(fds);
    free(owner);
    /* a fatal error: sleepers must not wait for results that will not come */
    dispatch_announce(d);
    dispatch_announce_events(d);
    dispatch_unlock_nogil(d);
    return NULL;
}

int
dispatch_start_thread(Dispatcher *d)
{
    /* every signal blocked in the thread, so that signals go to Python */
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
