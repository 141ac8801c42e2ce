/* engine.h - the pool dispatcher's state and the engine that moves tasks
 * and results (engine.c), shared with the Python type in dispatcher.c.
 *
 * Locking: `mu` guards every field below and every worker socket (only a
 * holder of `mu` reads or writes one).  A thread that holds `mu` without
 * the GIL takes `alloc_mu` too before it allocates (dispatch_lock_nogil),
 * see the fork-safety note in engine.c. */
#ifndef FASTMP_ENGINE_H
#define FASTMP_ENGINE_H

#include "pool/wire.h"
#include "core/compat.h"
#include "core/spin.h"

#include <pthread.h>
#include <time.h>

/* The job table starts with this many buckets and doubles when the jobs
 * outnumber them twice (an apply_async burst has one job per task). */
#define JOB_BUCKETS_MIN 256
#define FUNC_CACHE 16

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
    int drop_after_failure;      /* outcomes after the first failure are
                                  * counted, not kept */
    int notify;                  /* post EVENT_READY when ready */
    int ready_posted;
    int want_any;                /* threads asleep until an outcome comes */
    int want_ready;              /* threads asleep until the job is ready */
    int nudged;                  /* an outcome kept outside the dispatcher
                                  * (see nudge()) waits for its collector */
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
    /* a large result frame whose payload is read straight into memory of
     * its own (dispatch_payload_alloc), or big == NULL */
    frame_header big_h;
    unsigned char *big;
    size_t big_got;
} worker_t;

typedef struct event {
    struct event *next;
    int kind;
    int64_t value;
} event_t;

typedef struct Dispatcher {
    PyObject_HEAD
    struct Dispatcher *next_live;   /* the fork registry */
    int registered;                 /* mutexes made, in the registry */
    pthread_mutex_t alloc_mu;       /* held by GIL-less threads while they allocate */
    pthread_mutex_t mu;
    pthread_t thread;
    int thread_running;
    uint64_t fork_generation;       /* dispatch_owned(): made in this process */
    int wakefd;                  /* eventfd: re-read the state */
    int closed;
    int polling;                 /* the thread sleeps in poll() */
    int blind;                   /* ... without watching worker results */
    int64_t pumped_ns;           /* when a caller last pumped, 0: never */
    unsigned busy_submits;       /* tasks submitted while every worker had a queue */
    int inflight_max;
    uint32_t seq;                /* futex word: outcomes, idleness, closing */
    int waiters;
    int idle_waiters;            /* threads in wait_idle() */
    int results_dirty;           /* an outcome some sleeper waits for came */
    uint32_t ev_seq;             /* futex word: events, closing */
    int ev_waiters;
    spin_state caller_spin;      /* for threads waiting in collect() */
    task_t *pend_head, *pend_tail;
    int64_t busy;                /* tasks pending or in flight */
    worker_t **workers;          /* slots; each stays put while allocated */
    int nworkers;                /* slots allocated */
    job_t **jobs;                /* hash table of open jobs, by id */
    size_t job_buckets;          /* a power of two, 0 until the first job */
    size_t njobs;
    event_t *ev_head, *ev_tail;
    int error;                   /* errno that stopped the thread, or 0 */
    /* task functions pickled by name: weak references and their pickles
     * (GIL held; a slot per address hash) */
    PyObject *func_refs[FUNC_CACHE];
    PyObject *func_pickles[FUNC_CACHE];
} Dispatcher;

/* Fork registry: add the engine's fork hooks (at the part's exec; 0, or
 * -1 with an exception set), then register each dispatcher made. */
int dispatch_fork_init(void);
void dispatch_register(Dispatcher *d);
void dispatch_unregister(Dispatcher *d);
/* 1 when d was made in this process (not a forked copy). */
int dispatch_owned(const Dispatcher *d);

/* mu and alloc_mu, for a thread that does not hold the GIL. */
void dispatch_lock_nogil(Dispatcher *d);
void dispatch_unlock_nogil(Dispatcher *d);

/* ---- with mu held ---- */
job_t *dispatch_find_job(Dispatcher *d, uint64_t id);
/* Add j (its id not in the table).  Returns 0 or ENOMEM. */
int dispatch_link_job(Dispatcher *d, job_t *j);
job_t *dispatch_unlink_job(Dispatcher *d, uint64_t id);   /* NULL if none */
void dispatch_free_job(job_t *j);                         /* NULL is fine */
void dispatch_free_tasks(task_t *t);
void dispatch_free_completions(completion_t *c);
/* Memory for a result payload of len bytes, NULL when out of memory;
 * freed by dispatch_payload_free(data, len) (NULL is fine). */
unsigned char *dispatch_payload_alloc(size_t len);
void dispatch_payload_free(unsigned char *data, size_t len);
int dispatch_job_ready(const job_t *j);
/* Post EVENT_READY for a notify job that just became ready. */
void dispatch_post_ready_if_due(Dispatcher *d, job_t *j);
/* Wake the threads asleep in collect()/wait_idle(), and in next_events(). */
void dispatch_announce(Dispatcher *d);
void dispatch_announce_events(Dispatcher *d);
/* Move pending tasks to workers with room.  Returns 1 when a worker was
 * left with unsent bytes (the thread must poll for POLLOUT), else 0. */
int dispatch_assign_pending(Dispatcher *d);
/* Read what the workers sent, record it, refill the workers and wake the
 * sleepers concerned: one step of the thread's work, done by a waiting
 * caller so that its result needs no hand-off.  While callers keep doing
 * it, the thread leaves results to them (it is "blind" for BLIND_NS after
 * the last pump) instead of waking for each.  mu and alloc_mu held. */
void dispatch_pump(Dispatcher *d);
/* A pumping caller stops (it will sleep): the thread reads results again
 * at once instead of when its blind spell ends. */
void dispatch_hand_back(Dispatcher *d);
/* Tell the thread to re-read the state. */
void dispatch_wake_thread(Dispatcher *d);

/* Start the dispatcher thread.  Returns 0 or an errno value. */
int dispatch_start_thread(Dispatcher *d);

#endif /* FASTMP_ENGINE_H */
