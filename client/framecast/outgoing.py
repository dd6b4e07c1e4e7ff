"""How the SDK's websocket data frames leave: masked once, straight into what is sent.

websockets serializes a frame by masking its payload into a new ``bytes``, writing that into a
``BytesIO`` after the header and taking the whole out again: three passes over a 1.4 MB frame
where one does, and for the small frames that carry a chunk's header or its place in shared
memory (one for every frame of video), most of the Python a send costs, with a system call for
each mask key. ``send_data_frames`` replaces a connection's ``Protocol.send_frame`` (every frame
the protocol sends passes through it; websockets' private API, pinned in
tests/test_private_apis.py) so that framecast serializes the data frames itself: a frame of
``UNJOINED_FRAME_BYTES`` or more is masked once, into the ``bytes`` that is sent, and its header
queued as a write of its own; a smaller one is queued as one write, header and masked payload.
Control frames (ping, pong, close) go websockets' way. Both the sync and the asyncio client use
it; neither negotiates extensions.

Mask keys come from the operating system's CSPRNG (``os.urandom``, what ``secrets`` draws on, as
websockets does), 4 KiB at a time: each key is used once, and unpredictable as RFC 6455 asks
(section 10.3), for one system call per 1024 frames instead of one per frame.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable

from websockets.frames import DATA_OPCODES, Frame
from websockets.protocol import Protocol

#: A data frame this large is queued as two writes, its header and its masked payload.
UNJOINED_FRAME_BYTES = 64 * 1024

#: Random bytes drawn at a time for mask keys: 1024 keys.
KEY_POOL_BYTES = 4096

_apply_mask: Callable[[bytes | bytearray | memoryview, bytes], bytes]
try:
    from websockets.speedups import apply_mask as _apply_mask  # C, as websockets itself masks
except ImportError:  # a websockets built without its C extension
    from websockets.utils import apply_mask as _apply_mask

_MASKED = 0x80
_U16 = struct.Struct("!BBH")
_U64 = struct.Struct("!BBQ")


class MaskKeys:
    """Fresh 4-byte mask keys, each used once, drawn from ``os.urandom`` a pool at a time.

    One per connection: its frames are serialized one at a time (under the sync connection's
    protocol mutex, or on the asyncio client's loop), so it needs no lock of its own.
    """

    def __init__(self, pool_bytes: int = KEY_POOL_BYTES) -> None:
        self._pool_bytes = pool_bytes
        self._pool = b""
        self._next = 0

    def take(self) -> bytes:
        if self._next + 4 > len(self._pool):
            self._pool, self._next = os.urandom(self._pool_bytes), 0
        key = self._pool[self._next : self._next + 4]
        self._next += 4
        return key


def send_data_frames(protocol: Protocol) -> None:
    """Have ``protocol`` (a client's, without extensions) queue its data frames as framecast
    serializes them."""
    protocol.send_frame = functools.partial(send_frame, protocol, MaskKeys())  # type: ignore[method-assign]


def send_frame(protocol: Protocol, keys: MaskKeys, frame: Frame) -> None:
    """``Protocol.send_frame``, with a data frame queued as framecast serializes it: a large one
    as its header and its masked payload, a small one as one write."""
    if frame.opcode not in DATA_OPCODES or protocol.extensions:
        Protocol.send_frame(protocol, frame)
        return
    frame.check()
    if protocol.debug:
        protocol.logger.debug("> %s", frame)
    first = (0x80 if frame.fin else 0) | frame.opcode
    length = len(frame.data)
    key = keys.take()
    if length < 126:
        head = bytes((first, _MASKED | length))
    elif length < 65536:
        head = _U16.pack(first, _MASKED | 126, length)
    else:
        head = _U64.pack(first, _MASKED | 127, length)
    masked = _apply_mask(frame.data, key)
    if length < UNJOINED_FRAME_BYTES:
        protocol.writes.append(head + key + masked)
    else:
        protocol.writes.append(head + key)
        protocol.writes.append(masked)
