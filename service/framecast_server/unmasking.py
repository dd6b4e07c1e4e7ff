"""RFC 6455 masking undone: a client's frame payload XORed with its repeated 4-byte key.

Two places apply it. The websocket receiver (``api/websocket.py``) unmasks what it keeps, in
place. A video payload received straight into a session's ring is left masked, and the session's
encoder process undoes it on its way out of the ring (``encoder/loops.py``), where the bytes are
read anyway: the server's event loop then never touches the payload at all.

A key of four zero bytes masks nothing (``NO_MASK``): the encoder's descriptors carry it for a
payload that is as the client meant it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from websockets.speedups import apply_mask  # websockets' C function, in its wheels
except ImportError:  # pragma: no cover - a websockets built without its C extension
    from websockets.utils import apply_mask

#: The key that leaves every byte as it is.
NO_MASK = bytes(4)

#: Up to this size ``apply_mask`` (a new bytes object, copied back) beats numpy's cost per call.
SMALL_BYTES = 64 * 1024


def unmask(data: Any, key: bytes, out: Any = None) -> None:
    """XOR the bytes of ``data`` with the repeated ``key`` (``key[0]`` lines up with ``data[0]``):
    into ``out`` (writable, as long as ``data``) or, without it, in place.

    Up to ``SMALL_BYTES`` (a chunk's header, a control message) ``websockets``' own C function
    does it: numpy's fixed cost per call is many times the XOR there. Beyond, numpy goes 8 bytes
    at a time on 8-byte-aligned addresses (it would copy an unaligned array through a buffer and
    back, three passes over the memory instead of one) and makes no temporary copy.
    """
    size = memoryview(data).nbytes
    if size <= SMALL_BYTES:
        target = memoryview(data if out is None else out).cast("B")
        if target.nbytes != size:
            raise ValueError(f"unmasking {size} bytes into {target.nbytes}")
        target[:] = apply_mask(data, key)
        return
    src = np.frombuffer(data, dtype=np.uint8)
    dst = src if out is None else np.frombuffer(out, dtype=np.uint8)
    if len(dst) != size:
        raise ValueError(f"unmasking {size} bytes into {len(dst)}")
    lead = min(-src.ctypes.data % 8, size)
    words = (size - lead) // 8 if (dst.ctypes.data - src.ctypes.data) % 8 == 0 else 0
    if words:
        bulk = slice(lead, lead + words * 8)
        pattern = np.frombuffer(rotated(key, lead) * 2, dtype=np.uint64)[0]
        np.bitwise_xor(src[bulk].view(np.uint64), pattern, out=dst[bulk].view(np.uint64))
    else:
        lead = size  # ``out`` is not aligned as ``data`` is: byte by byte, all of it
    for edge in (slice(0, lead), slice(lead + words * 8, size)):
        length = edge.stop - edge.start
        if length > 0:
            pattern8 = np.frombuffer(rotated(key, edge.start) * (length // 4 + 1), dtype=np.uint8, count=length)
            np.bitwise_xor(src[edge], pattern8, out=dst[edge])


def rotated(key: bytes, offset: int) -> bytes:
    """The mask key as it lines up ``offset`` bytes into the masked data."""
    phase = offset % 4
    return key[phase:] + key[:phase]
