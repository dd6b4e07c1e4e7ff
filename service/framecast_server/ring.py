"""Shared memory between the server and one encoder process, so chunk payloads skip the pipe.

A 720p RGB frame is 2.7 MB. Sent through a pipe it is copied into the kernel by the server,
out of it by the encoder, and once more by ``multiprocessing`` reassembling the message: most
of what the encoder process did besides encoding. Through the ring the server copies each
payload once, from the websocket message into memory both processes map, and sends the encoder
only a small descriptor (the chunk header and where the payload lies). The encoder builds its
frames straight from that memory, the one copy it made anyway, and hands the space back.

The ring is a memfd (an anonymous file; elsewhere an unlinked temporary file) that the encoder
inherits as a file descriptor when it starts. Nothing is left behind in ``/dev/shm`` when the
server is killed: the memory goes when the last process holding it does.

Space is handed out first in, first out, the way the encoder consumes it: the server keeps the
regions in flight in a queue, and each ``messages.Free`` from the encoder releases the region
handed to it longest ago. That is the oldest one reserved unless a placed region (below) was
handed on after one reserved later; then the later one is marked free and its space comes back
once every region before it has, so no space is reused while the encoder may still read it.
When the ring empties, writing starts again at its beginning, so a session whose encoder keeps up
touches only a few chunks' worth of pages, not the whole capacity.

The number of chunks in flight is bounded too (``max_chunks``), which bounds the descriptors
queued in the pipe however small the chunks are.

``place`` hands out a region before its payload has arrived, so that the websocket receives the
payload straight into it (``api/websocket.py``) instead of copying it in afterwards. A placed
region is either handed to the encoder like a written one (``Placed.taken``), or cancelled; a
cancelled region's space comes back with that of the regions before it. When nothing fits,
``freed`` is a future done once the encoder has freed a quarter of the ring (``RESUME_FREE``), or
everything: a writer that keeps ahead of its encoder (the usual case for files) then places
several payloads each time it wakes, not one a Free, so the receiver stops and resumes its socket
a few times per ring instead of once per chunk.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import mmap
import os
import tempfile
import threading
from multiprocessing import reduction
from typing import Any

import numpy as np

from framecast import protocol
from framecast.regions import Regions, aligned

from .unmasking import NO_MASK


def _anonymous_file(capacity: int) -> int:
    """A file descriptor of ``capacity`` bytes of memory that no path names."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("framecast-ring", os.MFD_CLOEXEC)
    else:  # macOS and friends: an unlinked temporary file serves the same purpose
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    os.ftruncate(fd, capacity)
    return fd


#: A waiting writer is woken once this share of the ring is free (or nothing is in flight).
RESUME_FREE = 0.25


class RingClosed(BrokenPipeError):
    """The encoder process is gone; no chunk can be handed to it any more."""


class PayloadRing:
    """The server's side of the ring: reserves space, copies payloads in, waits when full.

    ``write`` runs on the event loop, and so do ``release`` and ``close`` (called as the encoder's
    messages arrive on its pipe, an asyncio transport). The lock and the thread-safe wake-up keep
    them correct from any thread all the same.

    Args:
        capacity: bytes of shared memory; the largest chunk payload must fit.
        max_chunks: most chunks in flight (written, not yet released) at once.
    """

    def __init__(self, capacity: int, max_chunks: int = 64) -> None:
        self.capacity = aligned(capacity)
        self._fd = _anonymous_file(self.capacity)
        self._map = mmap.mmap(self._fd, self.capacity)
        self._view = memoryview(self._map)
        self._regions = Regions(self.capacity, max_chunks)
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._keys = itertools.count(1)  # every region's key
        self._handed: collections.deque[int] = collections.deque()  # keys, in the order handed on

    # -- the event loop's side ------------------------------------------------------------------

    async def write(self, payload: bytes | memoryview) -> int:
        """Copy ``payload`` into the ring, waiting while it is full; returns its offset.

        Raises:
            ValueError: the payload is larger than the whole ring.
            RingClosed: the encoder went away (before or while waiting).
        """
        size = len(payload)
        if size > self.capacity:
            raise ValueError(f"chunk payload of {size} bytes is larger than the encoder buffer ({self.capacity} bytes)")
        while True:
            with self._lock:
                if self._closed:
                    raise RingClosed("encoder process is gone")
                key = next(self._keys)
                offset = self._regions.reserve(size, key)
                if offset is not None:
                    self._handed.append(key)  # the caller sends its descriptor next
                    break
                waiter = self._freed()
            await asyncio.shield(waiter)  # shared: a cancelled writer must not cancel it for the others
        self._view[offset : offset + size] = payload
        return offset

    def freed(self) -> asyncio.Future[None] | None:
        """A future done when the encoder next frees a region, or goes away; None if it is gone.

        For a payload that does not fit now (``place`` returned None): ask again once it is done.
        Every caller waiting at the same time gets the same future.
        """
        with self._lock:
            return None if self._closed else self._freed()

    def _freed(self) -> asyncio.Future[None]:
        if self._waiter is None:
            self._loop = asyncio.get_running_loop()
            self._waiter = self._loop.create_future()
        return self._waiter

    def place(self, size: int) -> Placed | None:
        """Reserve ``size`` bytes for a payload still to arrive, if they fit now (never waits:
        ``freed`` says when to try again).

        The caller hands the region to the encoder (``Placed.taken``, then its descriptor) or
        cancels it, in any order with the other regions.
        """
        with self._lock:
            if self._closed:
                return None
            key = next(self._keys)
            offset = self._regions.reserve(size, key)
        if offset is None:
            return None
        return Placed(self, key, offset, self._view[offset : offset + size])

    def cancel(self, key: int) -> None:
        """A placed region will not be handed to the encoder: free it once those before it are."""
        with self._lock:
            if not self._closed:
                self._regions.release(key)
                self._wake()

    # -- the encoder's side, as its messages arrive ----------------------------------------------

    def release(self) -> None:
        """The encoder is done with the region handed to it longest ago (one ``Free``)."""
        with self._lock:
            if self._handed:
                self._regions.release(self._handed.popleft())
            if self._waiter is not None and self._regions.in_use <= self.capacity * (1 - RESUME_FREE):
                self._wake()

    def _taken(self, key: int) -> None:
        """A placed region is handed to the encoder (``Placed.taken``)."""
        with self._lock:
            self._handed.append(key)

    def close(self) -> None:
        """The encoder exited: wake a waiting writer with RingClosed; refuse further writes."""
        with self._lock:
            self._closed = True
            self._regions.clear()
            self._handed.clear()
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve, waiter)

    @property
    def in_flight(self) -> int:
        """Chunks written and not yet released."""
        return len(self._regions)

    # -- handing it to the encoder --------------------------------------------------------------

    def fileno(self) -> int:
        """The memory's file descriptor (for handing it to a spare encoder process)."""
        return self._fd

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled for the encoder process as its file descriptor (only while starting it)."""
        return RingReader, (reduction.DupFd(self._fd), self.capacity)

    def dispose(self) -> None:
        """Unmap the server's side and close the descriptor, once no chunk can be written any more.

        Runs on the thread that writes (the event loop), so it never unmaps under a copy; the
        encoder's own mapping is unaffected.
        """
        if self._fd < 0:
            return
        self.close()
        try:
            self._view.release()
            self._map.close()
        except BufferError:  # a payload view is still alive somewhere; the GC unmaps it later
            pass
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class Placed:
    """A region of the ring reserved for a payload on its way (``PayloadRing.place``).

    ``view`` is where the payload goes. Once it has, the region is handed to the encoder at
    ``offset`` (``taken``) or given back (``cancel``); whichever comes first counts, once.

    ``mask``: the websocket key the payload is still masked with (``unmasking.NO_MASK``: none).
    Only a region whose reader is the encoder alone (``maskable``, a video payload: the server
    itself never reads it) takes its payload masked; the encoder unmasks it as it reads it.
    """

    __slots__ = ("_ring", "_key", "offset", "view", "_open", "maskable", "mask")

    def __init__(self, ring: PayloadRing, key: int, offset: int, view: memoryview) -> None:
        self._ring = ring
        self._key = key
        self.offset = offset
        self.view = view
        self._open = True
        self.maskable = False
        self.mask = NO_MASK

    def leave_masked(self, key: bytes) -> bool:
        """The payload will arrive masked with ``key``: keep it so if the encoder alone reads it."""
        if self.maskable:
            self.mask = key
        return self.maskable

    def taken(self) -> int:
        """The region is handed to the encoder (its descriptor is sent next): its offset."""
        self._open = False
        self._ring._taken(self._key)
        return self.offset

    def cancel(self) -> None:
        if self._open:
            self._open = False
            self._ring.cancel(self._key)

    @property
    def open(self) -> bool:
        """Neither handed on nor cancelled yet."""
        return self._open


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class RingReader:
    """The encoder's side of shared memory: views of chunk payloads, read-only and without a copy."""

    def __init__(self, fd: Any, capacity: int) -> None:
        if not isinstance(fd, int):
            fd = fd.detach()  # a DupFd from the process start
        self._map = mmap.mmap(fd, capacity, access=mmap.ACCESS_READ)
        os.close(fd)

    def array(self, header: protocol.ChunkHeader, offset: int) -> np.ndarray:
        return payload_view(self._map, header, offset)

    def view(self, offset: int, size: int) -> memoryview:
        """``size`` bytes at ``offset``, as they are (a compressed payload)."""
        return memoryview(self._map)[offset : offset + size]


def payload_view(memory: Any, header: protocol.ChunkHeader, offset: int) -> np.ndarray:
    """The payload of chunk ``header`` at ``offset`` of mapped ``memory``, as an array (no copy)."""
    count = header.payload_size // header.dtype.numpy.itemsize
    return np.frombuffer(memory, dtype=header.dtype.numpy, count=count, offset=offset).reshape(header.shape)
