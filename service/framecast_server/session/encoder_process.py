"""The server's handle on an encoder process: start it, hand it chunks, hear its messages.

Each session's encoder runs in its own process (``encoder/main.py``, and why). This is the
server's half of the pipe between them, on the event loop; the messages are in ``messages.py``.
Chunk payloads do not cross the pipe: the server copies each into shared memory (``ring.py``) and
sends a descriptor of it.

This module is the only one on the server's side that imports the encoder's: it names the entry
points the new process runs (``tests/test_layout.py`` holds everyone else to that).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from multiprocessing import reduction
from multiprocessing.connection import Connection

from framecast_server.encoder.main import spare_main, worker_main
from framecast_server.messages import (
    IN_CLIENT_MEMORY,
    Assign,
    Control,
    Exited,
    Free,
    FromEncoder,
    OutputBytes,
    PipeFrames,
    Ready,
    SetupFailed,
    decode_from_encoder,
    encode_chunk,
    encode_control,
    pipe_frame,
)
from framecast_server.planning.plan import SessionPlan
from framecast_server.ring import PayloadRing, Placed
from framecast_server.session.client_memory import ClientMemory

_context: multiprocessing.context.ForkServerContext | None = None


def encoder_context() -> multiprocessing.context.ForkServerContext:
    """A forkserver context that has PyAV and this module loaded already, so starts are cheap."""
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["framecast_server.encoder.main"])
        _context = ctx
    return _context


class _WorkerChannel(asyncio.Protocol):
    """The server's end of the pipe, on the event loop: no reader thread, no thread hop per message.

    Messages are framed as ``multiprocessing.Connection`` frames them (``messages.PipeFrames``),
    so a spare's first message can be a plain Connection's. Messages from the worker are
    ``messages.FromEncoder`` records (``decode_from_encoder``).
    """

    def __init__(self, on_message: Callable[[FromEncoder], None], on_closed: Callable[[], None]) -> None:
        self._on_message = on_message
        self._on_closed = on_closed
        self._frames = PipeFrames()
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._on_message(decode_from_encoder(message))

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_closed()

    def send(self, data: bytes) -> None:
        """Queue one message for the worker (asyncio buffers it; this never blocks)."""
        assert self.transport is not None
        self.transport.writelines((pipe_frame(data), data))


class EncoderProcess:
    """The server's handle on one encoder process.

    ``start`` blocks and is meant to run in a thread; then ``attach`` moves the pipe onto the event
    loop, where everything else runs. ``on_message`` is called on the loop for every message the
    worker sends (but ``Free``, which the ring takes), and once more with ``Exited`` after the pipe
    closes.

    Args:
        buffer_bytes: size of the shared memory the chunks cross over (``ring.py``).
        client_memory: the session's ``client_memory.ClientMemory``, if its client puts payloads there.
    """

    def __init__(
        self,
        plan: SessionPlan,
        buffer_bytes: int,
        on_message: Callable[[FromEncoder], None],
        client_memory: ClientMemory | None = None,
    ) -> None:
        self.plan = plan
        self._client_memory = client_memory
        self._on_message = on_message
        self._buffer_bytes = buffer_bytes
        self._conn: Connection | None = None
        self._channel: _WorkerChannel | None = None
        self._early: list[FromEncoder] = []
        self._exit_task: asyncio.Task[None] | None = None
        self.ring: PayloadRing | None = None
        self.process: multiprocessing.process.BaseProcess | None = None

    def start(self, timeout: float, spare: Spare | None = None) -> Ready | SetupFailed:
        """Start the process (or put ``spare`` to work) and wait for its first message: ``Ready``
        or ``SetupFailed``."""
        self.ring = PayloadRing(self._buffer_bytes)
        if spare is None or not self._assign(spare):
            parent, child = multiprocessing.Pipe(duplex=True)
            self.process = encoder_context().Process(
                target=worker_main,
                args=(child, self.plan, self.ring, self._client_memory),
                daemon=True,
                name="framecast-encoder",
            )
            self.process.start()
            child.close()
            self._conn = parent
        conn = self._conn
        assert conn is not None and self.process is not None
        if not conn.poll(timeout):
            self.kill()
            self._abandon()
            return SetupFailed(f"encoder did not open its output within {timeout:g} s", "destination")
        try:
            first = decode_from_encoder(conn.recv_bytes())
            while isinstance(first, OutputBytes):  # written while opening (a header): delivered after Ready
                self._early.append(first)
                first = decode_from_encoder(conn.recv_bytes())
        except EOFError:
            self.process.join(5)
            self._abandon()
            return SetupFailed(f"encoder process exited during setup ({exit_text(self.process.exitcode)})", None)
        if not isinstance(first, Ready):
            self.process.join(5)
            self._abandon()
        assert isinstance(first, Ready | SetupFailed), f"an encoder's first message: {first!r}"
        return first

    def _assign(self, spare: Spare) -> bool:
        """Hand ``spare`` this session's plan and memory; False (and the spare discarded) if it is gone."""
        assert self.ring is not None
        memory = self._client_memory
        fds = [self.ring.fileno()] + ([memory.fileno()] if memory is not None else [])
        try:
            spare.conn.send(Assign(self.plan, self.ring.capacity, memory.size if memory is not None else None))
            with socket.socket(fileno=os.dup(spare.conn.fileno())) as sock:
                reduction.sendfds(sock, fds)
        except OSError:
            spare.discard()
            return False
        self.process, self._conn = spare.process, spare.conn
        return True

    def _abandon(self) -> None:
        assert self._conn is not None and self.ring is not None
        self._conn.close()
        self.ring.dispose()

    async def attach(self) -> None:
        """After a successful ``start``: read and write the pipe on the running event loop."""
        assert self._conn is not None
        loop = asyncio.get_running_loop()
        sock = socket.socket(fileno=os.dup(self._conn.fileno()))  # the socket owns its own descriptor
        self._conn.close()
        self._conn = None
        channel = _WorkerChannel(self._dispatch, self._pipe_closed)
        await loop.connect_accepted_socket(lambda: channel, sock=sock)
        self._channel = channel
        early, self._early = self._early, []
        for message in early:
            self._on_message(message)

    def _dispatch(self, message: FromEncoder) -> None:
        if isinstance(message, Free):
            assert self.ring is not None
            self.ring.release()
        else:
            self._on_message(message)

    def _pipe_closed(self) -> None:
        # The loop keeps only a weak reference to a task: the handle keeps this one.
        self._exit_task = asyncio.get_running_loop().create_task(self._exited())

    async def _exited(self) -> None:
        assert self.process is not None and self.ring is not None
        self.ring.close()  # wakes a chunk waiting for space: it is not delivered
        await asyncio.to_thread(self.process.join, 10)
        self._on_message(Exited(self.process.exitcode))

    def send(self, message: Control) -> None:
        """Hand one control message to the worker (never blocks). Raises OSError if the pipe is closed."""
        self._send(encode_control(message))

    def _send(self, data: bytes) -> None:
        if self._channel is None or self._channel.transport is None or self._channel.transport.is_closing():
            raise BrokenPipeError("encoder process is gone")
        self._channel.send(data)

    async def send_chunk(
        self,
        message: bytes | memoryview,
        header_size: int,
        payload: memoryview,
        received: float,
        compressed: bool = False,
    ) -> None:
        """Hand one checked CHUNK message, which the server had whole at ``received``
        (``time.monotonic()``), to the worker: the payload through the ring, the rest through the
        pipe. Waits (without blocking the loop) while the ring is full.

        Raises:
            OSError: the encoder process is gone (``RingClosed`` is one).
        """
        assert self.ring is not None
        offset = await self.ring.write(payload)
        size = len(payload) if compressed else 0
        self._send(encode_chunk(memoryview(message)[:header_size], offset, size=size, received=received))

    def send_placed_chunk(self, message: bytes | memoryview, header_size: int, placed: Placed, received: float) -> None:
        """Hand the worker a chunk whose payload the websocket received straight into the ring
        (whole at ``received``).

        Raises:
            OSError: the encoder process is gone.
        """
        self._send(encode_chunk(memoryview(message)[:header_size], placed.taken(), mask=placed.mask, received=received))

    def send_shared_chunk(self, message: bytes | memoryview, header_size: int, offset: int, received: float) -> None:
        """Hand the worker a chunk whose payload the client put into the session's shared memory
        (its message received at ``received``).

        Raises:
            OSError: the encoder process is gone.
        """
        self._send(encode_chunk(memoryview(message)[:header_size], offset, IN_CLIENT_MEMORY, received=received))

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


class Spare:
    """An encoder process started ahead of its session (``spare_main``), and the server's end of its pipe."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process, self.conn = process, conn

    @classmethod
    def start(cls) -> Spare:
        """Start one (blocks for a few milliseconds; the server's first start boots the forkserver)."""
        parent, child = multiprocessing.Pipe(duplex=True)
        process = encoder_context().Process(target=spare_main, args=(child,), daemon=True, name="framecast-encoder")
        process.start()
        child.close()
        return cls(process, parent)

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def discard(self) -> None:
        """Close its pipe, which ends it (a spare that is gone already is just forgotten)."""
        self.conn.close()


def exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
