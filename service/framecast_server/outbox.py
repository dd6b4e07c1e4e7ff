"""What the server has to say to a session's client, kept so that a reconnect loses nothing.

Messages leave in order. A message is removed only after the websocket took it; OUTPUT messages
(bytes of a client-side destination) are kept even then, until the client confirms them with
``output_ack``, because a connection can take a message and still die before it arrives. When
the client reconnects, ``rewind()`` puts the unconfirmed OUTPUT messages back in front; the
client skips any it had already applied (they are numbered), so each lands exactly once.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass


@dataclass(frozen=True)
class _Item:
    message: bytes | str
    output_index: int | None  # set for OUTPUT messages, which wait for the client's confirmation


class Outbox:
    """An ordered queue of messages for one client, with replay of unconfirmed output."""

    def __init__(self, replay_limit: int = 64 << 20) -> None:
        self._items: collections.deque[_Item] = collections.deque()
        self._unconfirmed: collections.deque[_Item] = collections.deque()
        self._ready = asyncio.Event()
        self.replay_limit = replay_limit
        #: Bytes waiting to be sent: what a client that does not read makes grow.
        self.waiting_bytes = 0
        #: Bytes sent and kept until the client confirms them (at most ``replay_limit``).
        self.unconfirmed_bytes = 0
        #: OUTPUT messages forgotten unconfirmed because the replay buffer was full.
        self.forgotten = 0

    def put(self, message: bytes | str, output_index: int | None = None) -> None:
        self._items.append(_Item(message, output_index))
        self.waiting_bytes += len(message)
        self._ready.set()

    def put_front(self, message: bytes | str) -> None:
        self._items.appendleft(_Item(message, None))
        self.waiting_bytes += len(message)
        self._ready.set()

    async def peek(self) -> bytes | str:
        """The next message to send (waits for one)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items[0].message

    def pop(self) -> None:
        """The message from ``peek()`` was sent."""
        item = self._items.popleft()
        self.waiting_bytes -= len(item.message)
        if item.output_index is not None:
            self._unconfirmed.append(item)
            self.unconfirmed_bytes += len(item.message)
            # A client that never confirms must not make the server hold its whole output: past
            # the limit the oldest are forgotten (a reconnect could then not repeat them).
            while self.unconfirmed_bytes > self.replay_limit and len(self._unconfirmed) > 1:
                self.unconfirmed_bytes -= len(self._unconfirmed.popleft().message)
                self.forgotten += 1

    def confirm(self, output_index: int) -> None:
        """The client applied every OUTPUT message up to ``output_index``."""
        while self._unconfirmed and self._unconfirmed[0].output_index <= output_index:  # type: ignore[operator]
            self.unconfirmed_bytes -= len(self._unconfirmed.popleft().message)

    def rewind(self) -> None:
        """A new connection: send the unconfirmed OUTPUT messages again, before anything else."""
        self._items.extendleft(reversed(self._unconfirmed))
        self.waiting_bytes += self.unconfirmed_bytes
        self.unconfirmed_bytes = 0
        self._unconfirmed.clear()
        if self._items:
            self._ready.set()

    def contains(self, message: bytes | str) -> bool:
        return any(item.message == message for item in self._items)

    def __len__(self) -> int:
        return len(self._items)

