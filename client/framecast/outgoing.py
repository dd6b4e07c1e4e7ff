"""How the SDK's websocket frames leave: large ones masked once, straight into what is sent.

websockets serializes a frame by masking its payload into a new ``bytes``, writing that into a
``BytesIO`` after the header and taking the whole out again: three passes over a 1.4 MB frame
where one does. ``unjoin_large_frames`` replaces a connection's ``Protocol.send_frame`` (every
frame the protocol sends passes through it; websockets' private API, pinned in
tests/test_private_apis.py) so that a data frame of ``UNJOINED_FRAME_BYTES`` or more is masked
once, into the ``bytes`` that is sent, and its header (with a mask key fresh from ``secrets``, as
websockets draws it) is queued as a write of its own. Everything else goes websockets' way.
Both the sync and the asyncio client use it; neither negotiates extensions.
"""

from __future__ import annotations

import functools
import secrets
import struct
from collections.abc import Callable

from websockets.frames import DATA_OPCODES, Frame
from websockets.protocol import Protocol

#: A data frame this large is queued as two writes, its header and its masked payload.
UNJOINED_FRAME_BYTES = 64 * 1024

_apply_mask: Callable[[bytes | bytearray | memoryview, bytes], bytes]
try:
    from websockets.speedups import apply_mask as _apply_mask  # C, as websockets itself masks
except ImportError:  # a websockets built without its C extension
    from websockets.utils import apply_mask as _apply_mask


def unjoin_large_frames(protocol: Protocol) -> None:
    """Have ``protocol`` (a client's, without extensions) queue large data frames unjoined."""
    protocol.send_frame = functools.partial(send_frame_unjoined, protocol)  # type: ignore[method-assign]


def send_frame_unjoined(protocol: Protocol, frame: Frame) -> None:
    """``Protocol.send_frame``, with a large data frame queued as its header and its masked payload."""
    length = len(frame.data)
    if length < UNJOINED_FRAME_BYTES or frame.opcode not in DATA_OPCODES or protocol.extensions:
        Protocol.send_frame(protocol, frame)
        return
    frame.check()
    if protocol.debug:
        protocol.logger.debug("> %s", frame)
    first = (0x80 if frame.fin else 0) | frame.opcode
    key = secrets.token_bytes(4)
    # Masked (0x80), with the 64-bit length (127) that every length from 64 KiB on takes.
    protocol.writes.append(struct.pack("!BBQ", first, 0x80 | 127, length) + key)
    protocol.writes.append(_apply_mask(frame.data, key))
