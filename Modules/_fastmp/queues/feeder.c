/* feeder.c - the per-process buffer of an unbounded Queue and the
 * native thread that drains it into the ring when the ring is full (or a
 * message is too big to go in at once), plus the process's list of
 * channels that have buffered messages, flushed at exit.  The thread never
 * touches Python objects: owners of sent payloads go on a `done` list that
 * GIL holders release. */
#include "queues/feeder.h"
#include "queues/ring.h"
#include "core/deadline.h"
#include "core/fork.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

#define IDLE_EXIT_SECONDS 0.2           /* an idle feeder exits after this */
#define FLUSH_SLICE_SECONDS 0.05        /* signal checks while flushing */

/* GIL-protected list of this process's channels with feeder state. */
static chan_map *live_head;
static pid_t live_pid;

static void
live_adopt(void)
{
    /* a forked child inherits the parent's list but none of its feeders */
    pid_t pid = fastmp_fork_pid();
    if (live_pid != pid) {
        live_head = NULL;
        live_pid = pid;
    }
}

void
chan_live_add(chan_map *m)
{
    live_adopt();
    if (!m->listed) {
        chan_map_incref(m);
        m->listed = 1;
        m->next_live = live_head;
        live_head = m;
    }
}

void
chan_live_prune(void)
{
    live_adopt();
    chan_map **p = &live_head;
    while (*p != NULL) {
        chan_map *m = *p;
        if (chan_feeder_has_pending(m)) {
            p = &m->next_live;
            continue;
        }
        *p = m->next_live;
        m->listed = 0;
        chan_map_decref(m);
    }
}

chan_map *
chan_live_first(void)
{
    live_adopt();
    return live_head;
}

void
chan_feeder_adopt(chan_map *m)
{
    pid_t pid = fastmp_fork_pid();
    if (m->pid == pid) {
        return;
    }
    /* first use in this process: the parent's buffer, thread and lock
     * state (possibly mid-operation at fork) are not ours; abandon them */
    if (m->pid >= 0) {
        /* the parent's feeder thread and live list held references */
        __atomic_sub_fetch(&m->refs, m->feeder_running + m->listed, __ATOMIC_RELAXED);
    }
    m->listed = 0;
    m->next_live = NULL;
    /* with default attributes these cannot fail on Linux; the conditions
     * time out on CLOCK_MONOTONIC like every other wait here */
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->work, &attr);
    pthread_cond_init(&m->idle, &attr);
    pthread_condattr_destroy(&attr);
    m->first = m->last = m->done = NULL;
    m->feeder_running = 0;
    m->cancelled = 0;
    m->pid = pid;
}

int
chan_feeder_has_pending(chan_map *m)
{
    if (m->pid != fastmp_fork_pid()) {
        return 0;
    }
    pthread_mutex_lock(&m->mu);
    int pending = m->first != NULL;
    pthread_mutex_unlock(&m->mu);
    return pending;
}

/* Wait for the next message; returns it (still at the head of the list),
 * or NULL when the feeder has been idle long enough to exit. */
static chan_pending *
next_item(chan_map *m)
{
    pthread_mutex_lock(&m->mu);
    while (m->first == NULL) {
        fastmp_deadline until;
        fastmp_deadline_from_seconds(IDLE_EXIT_SECONDS, &until);
        if (pthread_cond_timedwait(&m->work, &m->mu, &until.at) == ETIMEDOUT
            && m->first == NULL) {
            m->feeder_running = 0;
            pthread_mutex_unlock(&m->mu);
            return NULL;
        }
    }
    chan_pending *item = m->first;
    pthread_mutex_unlock(&m->mu);
    return item;
}

/* Take the sent head item off the list. */
static void
retire_item(chan_map *m, chan_pending *item)
{
    pthread_mutex_lock(&m->mu);
    m->first = item->next;
    if (m->first == NULL) {
        m->last = NULL;
        pthread_cond_broadcast(&m->idle);
    }
    if (item->view.obj != NULL) {
        item->next = m->done;
        m->done = item;
        item = NULL;
    }
    pthread_mutex_unlock(&m->mu);
    free(item);
}

/* The head of the buffer, or NULL. */
static chan_pending *
peek_item(chan_map *m)
{
    pthread_mutex_lock(&m->mu);
    chan_pending *item = m->first;
    pthread_mutex_unlock(&m->mu);
    return item;
}

/* Holding wlock: send buffered messages in order.  A message too big for
 * one record streams, keeping the lock while it waits for room; for the
 * others the lock is let go when the ring is full.  Returns 0, EAGAIN if
 * messages remain that wait for room, or CHAN_CORRUPT. */
static int
feed_locked(chan_map *m)
{
    int err;
    while ((err = chan_feeder_drain(m)) != 0) {
        chan_pending *item = peek_item(m);
        if (err != EAGAIN || item->len <= chan_whole_max(m)) {
            return err;
        }
        chan_wmsg w = {item->data, item->len, item->flags, 0, 0};
        while ((err = chan_write(m, &w, &chan_forever)) == EINTR) {
        }
        if (err) {
            return err;
        }
        retire_item(m, item);
    }
    return 0;
}

/* The channel is broken: nothing buffered will ever be sent. */
static void
drop_all(chan_map *m)
{
    chan_pending *item;
    while ((item = peek_item(m)) != NULL) {
        retire_item(m, item);
    }
}

static void *
feeder_main(void *arg)
{
    chan_map *m = arg;
    while (next_item(m) != NULL) {
        int err;
        while ((err = chan_lock(&m->sh->wlock, &chan_forever, 1)) == EINTR) {
        }
        if (err) {
            /* the lock is unusable (ENOTRECOVERABLE): drop the message
             * rather than spin; the channel is broken for everyone */
            retire_item(m, peek_item(m));
            continue;
        }
        err = chan_repair_writer(m);
        if (err == 0) {
            err = feed_locked(m);
        }
        chan_unlock(&m->sh->wlock);
        if (err == CHAN_CORRUPT) {
            drop_all(m);
        }
        else if (err) {
            /* wait for room without the lock, so that this process's
             * put calls can drain the buffer themselves meanwhile */
            fastmp_deadline slice;
            fastmp_deadline_from_seconds(FLUSH_SLICE_SECONDS, &slice);
            (void)chan_wait_room(m, &slice, (long)(FLUSH_SLICE_SECONDS * 1e9));
        }
    }
    chan_map_decref(m);
    return NULL;
}

int
chan_feeder_drain(chan_map *m)
{
    chan_pending *item;
    while ((item = peek_item(m)) != NULL) {
        if (chan_dropping(m)) {
            /* shut down immediately: what is still buffered is discarded
             * (counted out first: once the buffer is empty the process
             * may exit, this thread with it) */
            chan_count_drop(m);
            retire_item(m, item);
            continue;
        }
        int err = chan_try_write_whole(m, item->data, item->len, item->flags);
        if (err) {
            return err;
        }
        retire_item(m, item);
    }
    return 0;
}

static int
start_feeder(chan_map *m)
{
    /* the thread takes no signals: they belong to Python's main thread */
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    int err = pthread_attr_init(&attr);
    if (err) {
        return err;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t tid;
    chan_map_incref(m);
    err = pthread_create(&tid, &attr, feeder_main, m);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err) {
        chan_map_decref(m);
        return err;
    }
    m->feeder_running = 1;
    return 0;
}

int
chan_feeder_push(chan_map *m, chan_pending *item)
{
    chan_feeder_adopt(m);
    item->next = NULL;
    pthread_mutex_lock(&m->mu);
    int err = 0;
    if (!m->feeder_running) {
        err = start_feeder(m);
    }
    if (err == 0) {
        if (m->last != NULL) {
            m->last->next = item;
        }
        else {
            m->first = item;
        }
        m->last = item;
        pthread_cond_signal(&m->work);
    }
    pthread_mutex_unlock(&m->mu);
    if (err == 0 && !m->listed) {
        chan_live_prune();
        chan_live_add(m);
    }
    return err;
}

void
chan_feeder_release_done(chan_map *m)
{
    if (m->pid != fastmp_fork_pid()) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    chan_pending *done = m->done;
    m->done = NULL;
    pthread_mutex_unlock(&m->mu);
    while (done != NULL) {
        chan_pending *next = done->next;
        PyBuffer_Release(&done->view);
        free(done);
        done = next;
    }
}

int
chan_feeder_wait_empty(chan_map *m)
{
    if (m->pid != fastmp_fork_pid()) {
        return 0;
    }
    pthread_mutex_lock(&m->mu);
    int err = 0;
    if (m->first != NULL && !m->cancelled) {
        fastmp_deadline until;
        fastmp_deadline_from_seconds(FLUSH_SLICE_SECONDS, &until);
        pthread_cond_timedwait(&m->idle, &m->mu, &until.at);
        err = (m->first != NULL && !m->cancelled) ? EINTR : 0;
    }
    pthread_mutex_unlock(&m->mu);
    return err;
}
