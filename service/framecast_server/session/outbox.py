"""What the server has to say to a session's client, kept so that a reconnect loses nothing.

Messages leave in order. A message is removed only after the websocket took it; OUTPUT messages
(bytes of a client-side destination) are kept even then, until the client confirms them with
``output_ack``, because a connection can take a message and still die before it arrives. When
the client reconnects, ``rewind()`` puts the unconfirmed OUTPUT messages back in front; the
client skips any it had already applied (they are numbered), so each lands exactly once.

A client that never reads must not make the server hold more and more: every kind of message is
bounded here or upstream.

- OUTPUT messages: the session stops taking chunks while ``waiting_bytes`` is over its limit
  (``Session.ingest``), and at most ``replay_limit`` bytes wait for confirmation.
- ACKs are cumulative, so a queued ACK that has not started to leave is replaced by the next one
  (``put_ack``): however many chunks are taken, at most one ACK waits between two other messages.
- Notices (errors, warnings, events) are informative: past ``notice_limit`` bytes waiting, new ones
  are dropped and counted, and once the client has read its way below half the limit it gets one
  warning saying how many it missed.
- Must-deliver messages (OUTPUT, the final ``closed``/``failed``) are never dropped.

``release()`` empties it all once the session has ended and its client is gone for good.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass

from framecast import protocol

#: What a queued message costs beyond its own bytes (the deque slot, the item, the object headers):
#: counted against the notice limit, so that many tiny notices cannot hide behind their length.
ITEM_OVERHEAD = 128


class Kind(enum.Enum):
    MESSAGE = "message"  # must be delivered: OUTPUT, closed, failed
    ACK = "ack"  # cumulative: a newer one replaces a queued one
    NOTICE = "notice"  # error, warning, event: dropped (and counted) when too many wait


@dataclass
class _Item:
    message: bytes | str
    kind: Kind
    output_index: int | None = None  # set for OUTPUT messages, which wait for the client's confirmation


class Outbox:
    """An ordered, bounded queue of messages for one client, with replay of unconfirmed output.

    Args:
        replay_limit: most bytes of sent OUTPUT messages kept for a reconnect.
        notice_limit: most bytes (with ``ITEM_OVERHEAD`` each) of notices waiting to be sent.
    """

    def __init__(self, replay_limit: int = 64 << 20, notice_limit: int = 1 << 20) -> None:
        self._items: collections.deque[_Item] = collections.deque()
        self._unconfirmed: collections.deque[_Item] = collections.deque()
        self._ready = asyncio.Event()
        self._sent = asyncio.Event()  # set whenever a message leaves: room for a writer waiting
        self._stopped_waiting = False
        self.replay_limit = replay_limit
        self.notice_limit = notice_limit
        #: Bytes waiting to be sent: what a client that does not read makes grow.
        self.waiting_bytes = 0
        #: Bytes sent and kept until the client confirms them (at most ``replay_limit``).
        self.unconfirmed_bytes = 0
        #: OUTPUT messages forgotten unconfirmed because the replay buffer was full.
        self.forgotten = 0
        #: Notices waiting, in bytes plus ``ITEM_OVERHEAD`` each (at most ``notice_limit``).
        self.notice_bytes = 0
        #: Notices dropped because too many were waiting, over the outbox's life.
        self.dropped_notices = 0
        self._unreported_drops = 0
        #: Sends a small message at once, or answers False (``websocket.SEND_NOW``): set while a
        #: connection is attached. ACKs go this way when nothing waits before them.
        self.send_now: Callable[[bytes], bool] | None = None

    # -- adding -------------------------------------------------------------------------------

    def put(self, message: bytes | str, output_index: int | None = None) -> None:
        """Queue a message that must reach the client (OUTPUT, ``closed``, ``failed``)."""
        self._append(_Item(message, Kind.MESSAGE, output_index))

    def put_ack(self, message: bytes) -> None:
        """Send an ACK now when nothing waits before it (``send_now``: one every chunk, and the
        sending task would wake for each); else queue it, replacing a queued one that has not
        started to leave (ACKs are cumulative)."""
        if not self._items and self.send_now is not None and self.send_now(message):
            return
        # items[0] may be in the sender's hands (peeked, being sent): never replace it.
        if len(self._items) >= 2 and self._items[-1].kind is Kind.ACK:
            self.waiting_bytes += len(message) - len(self._items[-1].message)
            self._items[-1] = _Item(message, Kind.ACK)
            return
        self._append(_Item(message, Kind.ACK))

    def put_notice(self, message: str) -> bool:
        """Queue an error, warning or event; False if it was dropped because too many wait."""
        cost = len(message) + ITEM_OVERHEAD
        if self.notice_bytes + cost > self.notice_limit:
            self.dropped_notices += 1
            self._unreported_drops += 1
            return False
        self.notice_bytes += cost
        self._append(_Item(message, Kind.NOTICE))
        return True

    def put_front(self, message: bytes | str) -> None:
        """Queue a must-deliver message before everything else (a repeated ACK on reconnect)."""
        self._items.appendleft(_Item(message, Kind.MESSAGE))
        self.waiting_bytes += len(message)
        self._ready.set()

    def _append(self, item: _Item) -> None:
        self._items.append(item)
        self.waiting_bytes += len(item.message)
        self._ready.set()

    # -- sending ------------------------------------------------------------------------------

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
        self._sent.set()
        if item.kind is Kind.NOTICE:
            self.notice_bytes -= len(item.message) + ITEM_OVERHEAD
            if self._unreported_drops and self.notice_bytes <= self.notice_limit // 2:
                self._report_drops()
        if item.output_index is not None:
            self._unconfirmed.append(item)
            self.unconfirmed_bytes += len(item.message)
            # A client that never confirms must not make the server hold its whole output: past
            # the limit the oldest are forgotten (a reconnect could then not repeat them).
            while self.unconfirmed_bytes > self.replay_limit and len(self._unconfirmed) > 1:
                self.unconfirmed_bytes -= len(self._unconfirmed.popleft().message)
                self.forgotten += 1

    async def wait_for_room(self, limit: int) -> None:
        """Return once at most ``limit`` bytes wait to be sent (or ``stop_waiting`` was called).

        How a client that does not read its output is not sent more work: its chunks wait here.
        """
        while self.waiting_bytes > limit and not self._stopped_waiting:
            self._sent.clear()
            await self._sent.wait()

    def stop_waiting(self) -> None:
        """The session ended: nothing waits for room any more, now or later."""
        self._stopped_waiting = True
        self._sent.set()

    def _report_drops(self) -> None:
        count, self._unreported_drops = self._unreported_drops, 0
        self.put_notice(
            protocol.encode_control(
                protocol.WARNING,
                message=f"{count} messages to this client (errors, warnings, events) were dropped because it was "
                f"not reading them; at most {self.notice_limit} bytes of them wait",
            )
        )

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

    def release(self) -> None:
        """Forget everything queued and kept for replay: the session ended and its client is gone.

        The memory goes back to the system too: messages of a few dozen KiB come from malloc's
        heap, whose free pages glibc returns only from the top unless asked (``trim_heap``).
        """
        held = self.waiting_bytes + self.unconfirmed_bytes
        self._items.clear()
        self._unconfirmed.clear()
        self.waiting_bytes = self.unconfirmed_bytes = self.notice_bytes = 0
        self._unreported_drops = 0
        self._sent.set()
        if held >= TRIM_AFTER_BYTES:
            trim_heap()

    def contains(self, message: bytes | str) -> bool:
        return any(item.message == message for item in self._items)

    def __len__(self) -> int:
        return len(self._items)


#: Released bytes worth a ``malloc_trim`` (a walk over the heap: milliseconds, not for every session).
TRIM_AFTER_BYTES = 1 << 20


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def trim_heap() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim(0)``; elsewhere nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
