"""How full the output directory is, for /metrics: the bytes of the files under it, and the space
left on its filesystem.

Walking a directory costs a stat per file, so its size is walked at most every ``every`` seconds
and at most ``MAX_ENTRIES`` entries deep (a directory the operator filled with millions of files
reports what it counted by then); symlinks are never followed. The free space is one statvfs.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from framecast_server.quotas import free_bytes

#: Entries walked at most for one reading.
MAX_ENTRIES = 50_000


class OutputDirectory:
    """The output directory's size and free space, the size cached for ``every`` seconds."""

    def __init__(self, path: Path, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.every = every
        self.clock = clock
        self._size = 0
        self._read_at: float | None = None

    def size(self) -> int:
        """Bytes of the regular files under the directory (as of at most ``every`` seconds ago)."""
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.every:
            self._size = _walk(self.path)
            self._read_at = now
        return self._size

    def free(self) -> int:
        return free_bytes(self.path)


def _walk(root: Path) -> int:
    total = 0
    seen = 0
    stack = [str(root)]
    while stack and seen < MAX_ENTRIES:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                seen += 1
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISREG(info.st_mode):
                    total += info.st_size
    return total
