/* frame.h - the frame header of the Connection wire (the
 * standard package's): a 4-byte big-endian signed length, or -1 followed
 * by an 8-byte big-endian length for a payload past 2 GiB - 1.  Pure
 * functions over bytes, without Python or I/O: connection.c reads and
 * writes its frames with them, and tests/fuzz/fuzz_frame.c fuzzes them. */
#ifndef FASTMP_CONNECTION_FRAME_H
#define FASTMP_CONNECTION_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_SHORT_HEADER 4
#define FRAME_LONG_HEADER 12            /* the most a header takes */
#define FRAME_SHORT_MAX 0x7fffffffULL   /* longest payload of a short header */

/* Write the header for a payload of `length` bytes into h (room for
 * FRAME_LONG_HEADER bytes).  Returns the header's size. */
size_t frame_encode(unsigned char *h, uint64_t length);

/* Parse the header at the start of h[0..n).  Returns its size
 * (FRAME_SHORT_HEADER or FRAME_LONG_HEADER) with *length set to the
 * payload's length; 0 if the header is longer than the n bytes given
 * (FRAME_LONG_HEADER are always enough); -1 if it announces a negative
 * length (*length: the 32-bit value as sent). */
int frame_decode(const unsigned char *h, size_t n, uint64_t *length);

/* Whether a payload of `length` bytes may be received: FRAME_FITS, or
 * why not.  `maxlength` is the caller's limit (UINT64_MAX: none),
 * `object_max` the longest payload a buffer can hold, `memory` the
 * machine's memory in bytes (0: unknown, not checked). */
enum { FRAME_FITS, FRAME_OVER_MAXLENGTH, FRAME_OVER_OBJECT, FRAME_OVER_MEMORY };
int frame_check_length(uint64_t length, uint64_t maxlength, uint64_t object_max,
                       uint64_t memory);

#endif /* FASTMP_CONNECTION_FRAME_H */
