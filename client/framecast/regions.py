"""First-in, first-out placement of regions in a fixed buffer, without I/O.

Both ends of framecast's shared memory hand out space this way: the server for chunk payloads on
their way to an encoder process, the SDK for payloads it puts into a session's shared memory
instead of the websocket. Space comes back oldest first: a region released out of order is
marked, and dropped once everything before it is gone, so the free space is always one or two
contiguous runs. When nothing is in flight, placement starts over at the beginning: a writer that
stays ahead of its reader keeps touching the same few pages instead of the whole buffer.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

#: Regions start on cache-line boundaries, so arrays viewed on them are aligned for any dtype.
ALIGN = 64


def aligned(size: int) -> int:
    """``size`` rounded up to a whole number of ALIGN-byte lines (at least one)."""
    return max(ALIGN, (size + ALIGN - 1) & ~(ALIGN - 1))


@dataclass
class _Region:
    key: int
    start: int
    end: int
    released: bool = False


class Regions:
    """Where the next region goes, and which are still in use.

    Args:
        capacity: bytes of the buffer.
        max_regions: most regions in use at once (None: no limit but space).
    """

    def __init__(self, capacity: int, max_regions: int | None = None) -> None:
        self.capacity = capacity
        self.max_regions = max_regions
        self._regions: collections.deque[_Region] = collections.deque()
        self._next = 0

    def __len__(self) -> int:
        return len(self._regions)

    def reserve(self, size: int, key: int = 0) -> int | None:
        """Claim ``size`` bytes; their offset, or None if they do not fit now."""
        size = aligned(size)
        start = self._place(size)
        if start is not None:
            self._next = start + size
            self._regions.append(_Region(key, start, self._next))
        return start

    @property
    def in_use(self) -> int:
        """Bytes from the oldest region in use to the end of the newest (a gap left at the end of
        the buffer when placement wrapped around counts as in use)."""
        if not self._regions:
            return 0
        oldest = self._regions[0].start
        return self._next - oldest if self._next > oldest else self.capacity - oldest + self._next

    def has_room(self, size: int) -> bool:
        """Whether ``size`` bytes would fit now (nothing is claimed)."""
        return self._place(aligned(size)) is not None

    def _place(self, size: int) -> int | None:
        if size > self.capacity:
            return None
        if not self._regions:
            self._next = 0
            return 0
        if self.max_regions is not None and len(self._regions) >= self.max_regions:
            return None
        oldest = self._regions[0].start
        if self._next > oldest:  # in use: [oldest, next); free: [next, capacity) and [0, oldest)
            return self._next if self._next + size <= self.capacity else (0 if size <= oldest else None)
        # wrapped around: in use: [oldest, capacity) and [0, next); free: [next, oldest)
        return self._next if self._next + size <= oldest else None

    def release_through(self, key: int) -> None:
        """Every region whose key is ``key`` or lower is free again (keys grow with each reserve)."""
        for region in self._regions:
            if region.key > key:
                break
            region.released = True
        self._compact()

    def release(self, key: int) -> None:
        """The region with ``key`` is free again, wherever it is in the queue."""
        for region in self._regions:
            if region.key == key:
                region.released = True
        self._compact()

    def clear(self) -> None:
        self._regions.clear()

    def _compact(self) -> None:
        while self._regions and self._regions[0].released:
            self._regions.popleft()
