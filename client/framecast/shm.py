"""The SDK's side of a session's shared memory: payloads go there instead of into the websocket.

A framecast server on the same machine offers a session a segment in ``/dev/shm`` when the SDK
asks (it does when the server URL is a loopback address). The SDK then copies each chunk's payload
into the segment (or converts RGB frames to yuv420p straight into it, ``wire_format``) and sends
only the chunk header and the payload's offset; the encoder process reads the payload from the
same memory. That one copy replaces the websocket's masking, the
kernel's two copies and the server's unmasking and joining (PROTOCOL.md, "Shared memory").

Space is reused once the server acknowledges the chunk, so the segment bounds what is in flight
the way the websocket window does. A payload larger than the whole segment goes over the
websocket as usual. If the segment cannot be opened (a client in another container, another
user), the writer warns and sends every payload over the websocket.
"""

from __future__ import annotations

import mmap
import os
import re
from typing import Any

from .errors import ProtocolError
from .regions import Regions, aligned

#: Where the server's segments live (Linux's POSIX shared memory).
SHM_DIR = "/dev/shm"
_NAME = re.compile(r"framecast-\d+-[0-9a-f]+")


class SharedSegment:
    """A session's segment, mapped read-write, and which regions of it are still unacknowledged.

    Raises (on construction):
        OSError: the segment cannot be opened or is smaller than announced.
        ProtocolError: the server announced something that is not a framecast segment name.
    """

    def __init__(self, name: str, size: int) -> None:
        if not _NAME.fullmatch(name):
            raise ProtocolError(f"the server offered shared memory named {name!r}, not a framecast segment name")
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            actual = os.fstat(fd).st_size
            if actual < size:
                raise OSError(f"shared memory {name} holds {actual} bytes, the server announced {size}")
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._view = memoryview(self._map)
        self.size = size
        self._regions = Regions(size)

    def takes(self, nbytes: int) -> bool:
        """Whether a payload of ``nbytes`` goes here at all (else over the websocket)."""
        return aligned(nbytes) <= self.size

    def has_room(self, nbytes: int) -> bool:
        """Whether a payload of ``nbytes`` fits now, with what is unacknowledged kept."""
        return self._regions.has_room(nbytes)

    def put(self, seq: int, payload: Any) -> int | None:
        """Copy chunk ``seq``'s payload in; its offset, or None if there is no room now."""
        data = memoryview(payload).cast("B")
        reserved = self.reserve(seq, len(data))
        if reserved is None:
            return None
        offset, memory = reserved
        memory[:] = data
        return offset

    def reserve(self, seq: int, nbytes: int) -> tuple[int, memoryview] | None:
        """Room for chunk ``seq``'s payload of ``nbytes``, for the caller to fill before it sends
        the chunk: its offset and the memory there, or None if there is no room now."""
        offset = self._regions.reserve(nbytes, seq)
        if offset is None:
            return None
        return offset, self._view[offset : offset + nbytes]

    def acknowledged(self, seq: int) -> None:
        """Every chunk up to ``seq`` is taken: its space can be used again."""
        self._regions.release_through(seq)

    def refused(self, seq: int) -> None:
        """The server refused chunk ``seq``: its space can be used again."""
        self._regions.release(seq)

    def clear(self) -> None:
        self._regions.clear()

    def close(self) -> None:
        self._regions.clear()
        try:
            self._view.release()
            self._map.close()
        except BufferError:  # a view is still exported somewhere; the mapping goes with it
            pass
