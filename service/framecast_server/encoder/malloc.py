"""The encoder process's allocator: frame buffers come from the heap, and the heap stays.

Video frame buffers are large (a 640x360 yuv420p frame is 345 KB, a 1280x720 planar RGB one
2.7 MB). glibc's malloc serves an allocation above its mmap threshold with a fresh ``mmap`` and
returns it with ``munmap`` on free, and trims the top of its heap whenever more than its trim
threshold is free there. An encoder process builds, converts and frees a few such buffers per
frame, in an order (the pacer and the preview keep some alive) that glibc's adaptive threshold
does not settle on, so every frame faulted in and zeroed fresh pages: kernel time on every frame. Raising the mmap
threshold to glibc's maximum keeps those buffers on the heap, and a trim threshold as large keeps
freed ones there for the next frame. The cost: an encoder's heap stays at its peak, which is
what it holds at its busiest (the pacer's second of frames) and would reach again anyway.

Every encoder process applies it when it starts. What it saves, real-time and file encoding, is
measured in BENCHMARKS.md, "Measurements behind design choices".

glibc only; elsewhere (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's upper limit for M_MMAP_THRESHOLD on 64-bit systems (4 MiB * sizeof(long)).
MMAP_THRESHOLD_MAX = 32 << 20
#: Free memory at the top of the heap kept rather than given back to the system.
TRIM_THRESHOLD = 64 << 20


def keep_frame_buffers() -> bool:
    """Apply the settings above to this process's malloc; True if it took them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    taken: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not taken:
        log.debug("malloc settings for frame buffers not taken; frames may be mapped and unmapped each time")
    return taken
