/* frame.c - encoding, decoding and checking the frame header
 * of the Connection wire (see frame.h).  No Python, no I/O. */
#include "connection/frame.h"

#include <string.h>

/* The big-endian number in the n bytes at h. */
static uint64_t
decode_be(const unsigned char *h, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = (v << 8) | h[i];
    }
    return v;
}

size_t
frame_encode(unsigned char *h, uint64_t length)
{
    if (length <= FRAME_SHORT_MAX) {
        for (int i = 0; i < 4; i++) {
            h[i] = (unsigned char)(length >> (24 - 8 * i));
        }
        return FRAME_SHORT_HEADER;
    }
    memset(h, 0xff, 4);
    for (int i = 0; i < 8; i++) {
        h[4 + i] = (unsigned char)(length >> (56 - 8 * i));
    }
    return FRAME_LONG_HEADER;
}

int
frame_decode(const unsigned char *h, size_t n, uint64_t *length)
{
    if (n < FRAME_SHORT_HEADER) {
        return 0;
    }
    uint64_t u = decode_be(h, 4);
    if (u <= FRAME_SHORT_MAX) {
        *length = u;
        return FRAME_SHORT_HEADER;
    }
    if (u != 0xffffffffU) {
        *length = u;
        return -1;
    }
    if (n < FRAME_LONG_HEADER) {
        return 0;
    }
    *length = decode_be(h + 4, 8);
    return FRAME_LONG_HEADER;
}

int
frame_check_length(uint64_t length, uint64_t maxlength, uint64_t object_max, uint64_t memory)
{
    if (length > maxlength) {
        return FRAME_OVER_MAXLENGTH;
    }
    if (length > object_max) {
        return FRAME_OVER_OBJECT;
    }
    if (memory != 0 && length > memory) {
        return FRAME_OVER_MEMORY;
    }
    return FRAME_FITS;
}
