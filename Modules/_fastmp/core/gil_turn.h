/* gil_turn.h - the threads serving a manager's connections, and their
 * turns with the GIL (gil_turn.c); used by a Connection's transfers and
 * by a manager's serve_calls.
 *
 * fastmp_serving_begin() counts the calling thread as serving until
 * fastmp_serving_end(outer), with what begin returned (nonzero if the
 * thread already was).  A transfer that must wait calls
 * fastmp_serving_release() before it drops the GIL (1 if the thread was
 * counted), and if so, once bytes have moved, fastmp_serving_wait_turn()
 * (without the GIL: waits briefly for no other serving thread to want
 * the GIL) and fastmp_serving_retake() after it has the GIL back. */
#ifndef FASTMP_GIL_TURN_H
#define FASTMP_GIL_TURN_H

/* Set up the count's reset in forked children; 0, or -1 with an
 * exception set. */
int fastmp_serving_init(void);
int fastmp_serving_begin(void);
void fastmp_serving_end(int outer);
int fastmp_serving_release(void);
void fastmp_serving_wait_turn(void);
void fastmp_serving_retake(void);

#endif /* FASTMP_GIL_TURN_H */
