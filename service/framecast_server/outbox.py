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

    def __init__(self) -> None:
        self._items: collections.deque[_Item] = collections.deque()
        self._unconfirmed: collections.deque[_Item] = collections.deque()
        self._ready = asyncio.Event()
        #: Bytes held: waiting to be sent, or sent and not yet confirmed.
        self.nbytes = 0

    def put(self, message: bytes | str, output_index: int | None = None) -> None:
        self._items.append(_Item(message, output_index))
        self.nbytes += len(message)
        self._ready.set()

    def put_front(self, message: bytes | str) -> None:
        self._items.appendleft(_Item(message, None))
        self.nbytes += len(message)
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
        if item.output_index is not None:
            self._unconfirmed.append(item)
        else:
            self.nbytes -= len(item.message)

    def confirm(self, output_index: int) -> None:
        """The client applied every OUTPUT message up to ``output_index``."""
        while self._unconfirmed and self._unconfirmed[0].output_index <= output_index:  # type: ignore[operator]
            self.nbytes -= len(self._unconfirmed.popleft().message)

    def rewind(self) -> None:
        """A new connection: send the unconfirmed OUTPUT messages again, before anything else."""
        self._items.extendleft(reversed(self._unconfirmed))
        self._unconfirmed.clear()
        if self._items:
            self._ready.set()

    def contains(self, message: bytes | str) -> bool:
        return any(item.message == message for item in self._items)

    def __len__(self) -> int:
        return len(self._items)

