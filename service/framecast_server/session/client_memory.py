"""Shared memory a session offers a client on the same host, so payloads skip the websocket.

A 720p frame sent over a loopback websocket is masked by the client, copied through the kernel
twice, and unmasked, buffered and joined by the server: about half of what the whole pipeline
spends on a frame next to the encoder. A client on the same machine can instead copy each payload
once into memory the session's encoder process maps too, and send only the chunk header and the
payload's offset (PROTOCOL.md, "Shared memory"). Same idea as Triton's system shared memory or
``torch.multiprocessing``.

The server creates the segment when the client asks for it and connects from loopback: a file in
``/dev/shm`` with an unguessable name, readable and writable by this user only, its whole size
reserved up front (``posix_fallocate``), so a write into it can never hit a full ``/dev/shm`` and
die of SIGBUS. Reserving it only at first use would give that guarantee up (a client may write
into its mapping before the server hears of it), so instead every segment counts against a
server-wide budget (``MemoryBudget``, ``FRAMECAST_SHARED_MEMORY_TOTAL_BYTES``): past it a session
just goes without, and a session whose client never connects is finalized after
``FRAMECAST_CONNECT_GRACE``, which frees its segment. The encoder inherits a descriptor; the client
opens it by the name the session answer carries. The name is removed as soon as the first chunk
shows the client has it open (or when the session ends), so nothing is left in ``/dev/shm`` while a
session streams; segments of a server that was killed before that are removed when the next server
starts.

The server only reads the segment (the NaN check of float audio). The client decides where each
payload goes and reuses the space once the chunk is acknowledged; the server checks every offset
against the segment's bounds, so a client can only ever confuse its own session.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import secrets
import stat
from multiprocessing import reduction
from pathlib import Path
from typing import Any

import numpy as np

from framecast import protocol
from framecast.regions import ALIGN, aligned
from framecast_server.errors import InvalidChunk
from framecast_server.planning.plan import SessionPlan, VideoPlan
from framecast_server.ring import RingReader, payload_view

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
PREFIX = "framecast-"
#: Smallest segment offered: room for a few chunks of any stream.
MIN_BYTES = 16 << 20
#: Segments hold this many frames of the largest video stream (when that is more than MIN_BYTES).
FRAMES = 8


class Unavailable(Exception):
    """No shared memory for this session; the reason is logged, and the client sends payloads inline."""


class MemoryBudget:
    """The shared memory all of a server's sessions hold together, at most ``total`` bytes."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0

    def take(self, size: int) -> None:
        """Count ``size`` more bytes.

        Raises:
            Unavailable: they would exceed the total.
        """
        if self.used + size > self.total:
            raise Unavailable(
                f"{self.used} of the {self.total} bytes sessions may hold are in use, {size} more do not fit "
                "(FRAMECAST_SHARED_MEMORY_TOTAL_BYTES)"
            )
        self.used += size

    def give_back(self, size: int) -> None:
        self.used -= size


def segment_size(plan: SessionPlan, limit: int) -> int:
    """Bytes to offer a session: a few frames of its largest video stream as they cross the wire
    (yuv420p is half the bytes of RGB), within ``limit``."""
    frame = max((s.wire_frame_bytes for s in plan.streams if isinstance(s, VideoPlan)), default=0)
    size = max(MIN_BYTES, FRAMES * frame)
    return min(limit, aligned(size))


class ClientMemory:
    """One session's segment, on the server's side.

    Args:
        budget: what the server's sessions may hold together; ``size`` is counted against it until
            ``dispose()``.

    Raises (on construction):
        Unavailable: this machine has no ``/dev/shm``, not ``size`` bytes free in it, or the budget
            has no room.
    """

    def __init__(self, size: int, budget: MemoryBudget | None = None, directory: Path = SHM_DIR) -> None:
        self._fd = -1
        self._budget: MemoryBudget | None = None
        if not directory.is_dir():
            raise Unavailable(f"{directory} does not exist on this machine")
        if budget is not None:
            budget.take(size)
            self._budget = budget
        self.size = size
        self.name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(16)}"
        self._path: Path | None = directory / self.name
        try:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._path = None
            self.dispose()
            raise Unavailable(f"cannot create a segment in {directory}: {exc.strerror}") from None
        try:
            os.posix_fallocate(self._fd, 0, size)
            self._map = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        except OSError as exc:
            self.dispose()
            raise Unavailable(f"cannot reserve {size} bytes in {directory}: {exc.strerror}") from None
        self.used = False

    def describe(self) -> dict[str, Any]:
        """What the session answer tells the client."""
        return {"name": self.name, "bytes": self.size}

    def payload(self, header: protocol.ChunkHeader, offset: int) -> np.ndarray:
        """The chunk's payload as an array (a view), once its place is checked.

        Raises:
            InvalidChunk: the payload would not lie within the segment, or not on a 64-byte line.
        """
        end = offset + header.payload_size
        if offset % ALIGN or end > self.size:
            raise InvalidChunk(
                f"chunk {header.seq}: shared-memory payload at offset {offset} ({header.payload_size} bytes) must "
                f"start on a multiple of {ALIGN} and end within the session's {self.size} bytes"
            )
        return payload_view(self._map, header, offset)

    def unlink(self) -> None:
        """Remove the name: whoever has the segment open keeps it, nobody else can open it."""
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None

    def dispose(self) -> None:
        """Unlink, unmap and close (the session ended; the encoder's and client's mappings live on)."""
        self.unlink()
        if getattr(self, "_map", None) is not None:
            with contextlib.suppress(BufferError):
                self._map.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._budget is not None:
            self._budget.give_back(self.size)
            self._budget = None

    def fileno(self) -> int:
        """The memory's file descriptor (for handing it to a spare encoder process)."""
        return self._fd

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled for the encoder process as its file descriptor (only while starting it)."""
        return RingReader, (reduction.DupFd(self._fd), self.size)


#: The names of segments: framecast-<pid>-<hex> (this module gives 32 hex digits).
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-[0-9a-f]+")


def sweep(directory: Path = SHM_DIR) -> int:
    """Remove segments left by framecast servers that are no longer running; how many went.

    Only regular files named exactly as this module names segments and owned by this process's
    user: a server run as root must not remove another user's files that merely look alike.
    """
    removed = 0
    if not directory.is_dir():
        return 0
    uid = os.getuid()
    for path in directory.glob(PREFIX + "*"):
        match = _NAME.fullmatch(path.name)
        if match is None or _alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            info = path.lstat()
            if info.st_uid != uid or not stat.S_ISREG(info.st_mode):
                continue
            path.unlink()
            removed += 1
    if removed:
        log.info("removed %d shared-memory segments left by servers that are gone", removed)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True
