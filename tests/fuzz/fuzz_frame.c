/* fuzz_frame.c - libFuzzer target for the frame header of the Connection
 * wire (Modules/_fastmp/connection/frame.c, linked as is).  The input is
 * a reader's limit (its first 8 bytes) and a byte stream, cut into frames
 * as a Connection cuts what it receives: every header must decode to a
 * length that encodes back to itself, and a length that passes the checks
 * must be within the limits they were given. */
#include "connection/frame.h"

#include <stdlib.h>
#include <string.h>

#define OBJECT_MAX (UINT64_MAX / 2 - 64)
#define MEMORY ((uint64_t)16 << 30)

static void
check_round_trip(uint64_t length)
{
    unsigned char h[FRAME_LONG_HEADER];
    size_t n = frame_encode(h, length);
    uint64_t back = ~length;
    if ((n != FRAME_SHORT_HEADER && n != FRAME_LONG_HEADER)
        || frame_decode(h, n, &back) != (int)n || back != length
        || frame_decode(h, n - 1, &back) != 0) {
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t maxlength;
    if (size < sizeof(maxlength)) {
        return 0;
    }
    memcpy(&maxlength, data, sizeof(maxlength));
    data += sizeof(maxlength);
    size -= sizeof(maxlength);
    size_t at = 0;
    while (at < size) {
        uint64_t length;
        int n = frame_decode(data + at, size - at, &length);
        if (n == 0) {
            break;                      /* a header cut short: wait for more */
        }
        if (n < 0) {
            /* only a negative short length other than -1 is refused */
            if (length <= FRAME_SHORT_MAX || length == 0xffffffffU || length > UINT32_MAX) {
                abort();
            }
            break;
        }
        if ((size_t)n > size - at) {
            abort();
        }
        check_round_trip(length);
        int verdict = frame_check_length(length, maxlength, OBJECT_MAX, MEMORY);
        if ((verdict == FRAME_FITS) != (length <= maxlength && length <= OBJECT_MAX
                                         && length <= MEMORY)) {
            abort();
        }
        if (verdict != FRAME_FITS || length > size - at - (size_t)n) {
            break;                      /* refused, or its payload is not all here */
        }
        at += (size_t)n + (size_t)length;
    }
    return 0;
}
