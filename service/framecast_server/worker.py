"""One encoder process per session, and the server's handle on it.

Why a process: PyAV holds the GIL while it opens a network output, writes the header and writes
the trailer, and a crash inside FFmpeg kills whatever process it runs in. In its own process an
encoder can hang or die without touching the event loop or any other session.

Chunk payloads do not cross the pipe: the server copies each into shared memory (``ring.py``).
The pipe carries, server -> worker, chunk descriptors (the CHUNK header as it arrived, already
checked by the server, then the payload's place in the ring) and JSON control messages
(``{"type": "finish"}``, ``{"type": "watch", "seconds": 10}`` while someone looks at previews,
``{"type": "stop", "reason": ...}`` when the session's API key has used up its quota),
and, to a spare process started before its session (``spares.py``), first its assignment;
worker -> server, small pickled tuples:

    ("ready", warnings)                     the output is open (for URLs: not yet connected)
    ("setup_failed", message, field)        it could not be opened (becomes a 422)
    ("connected", warnings)                 a network output is connected, its header written
    ("out", offset, data)                   encoded bytes for a client-side destination
    ("free",)                               the oldest chunk's payload is copied out of the ring
    ("ack", seq, stats or None)             chunk ``seq`` (and all before it) is encoded and muxed
                                            (one for several while the encoder is behind: _AckCoalescer)
    ("failed", reason)                      encoding or connecting failed; the worker exits
    ("closed", stats)                       trailer written, output closed; the worker exits
    ("stopped", reason, stats)              a quota ran out: the output is finalized all the same
                                            (trailer written, closed); the worker exits
    ("preview", {stream: jpeg}, {stream: [dBFS per channel]})   now and then, for the dashboard

``stats`` is ``{"streams": [per-stream counters], "pacing": {...} or None}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import pickle
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any

from framecast import protocol

from . import budget, masking, scheduling
from .malloc import keep_frame_buffers
from .plan import OutputPlan
from .preview import levels_db
from .quotas import QuotaReached
from .ring import IN_CLIENT_MEMORY, PayloadRing, RingReader, descriptor, read_descriptor

log = logging.getLogger(__name__)


class _Pipe:
    """The worker's end of the pipe. Sends are locked, so that the prepare thread (FREE), the
    muxer writing client output and the encoding thread (ACKs) never interleave bytes of two
    messages; receiving is done by one thread at a time."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        with self._lock:
            self._conn.send(message)

    def poll(self, timeout: float | None) -> bool:
        return self._conn.poll(timeout)

    def recv_bytes(self) -> bytes:
        return self._conn.recv_bytes()


class _PipeSink:
    """A file object whose writes and seeks become ("out", offset, data) messages.

    The muxer sees a seekable file exactly when the client's destination is seekable, so the
    bytes written (headers patched by seeking back included) are the ones a local StreamWriter
    would have produced.
    """

    def __init__(self, conn: _Pipe, seekable: bool) -> None:
        self._conn = conn
        self._seekable = seekable
        self._pos = 0
        self._size = 0

    def write(self, data: Any) -> int:
        data = bytes(data)
        self._conn.send(("out", self._pos, data))
        self._pos += len(data)
        self._size = max(self._size, self._pos)
        return len(data)

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if not self._seekable:
            raise OSError("destination is not seekable")
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


def _receive(conn: _Pipe, timeout: float | None = None) -> bytes | None:
    """The next message from the server, None once it went away; raises _NothingYet if none came.

    The worker reads its pipe directly: descriptors are small, and the ring bounds how many are
    in flight, so the pipe never fills however long the worker is busy between reads.
    """
    try:
        if timeout is not None and not conn.poll(timeout):
            raise _NothingYet
        return conn.recv_bytes()
    except (EOFError, OSError):
        return None


class _NothingYet(Exception):
    """No message within the timeout (not an OSError: those mean the pipe is gone)."""


def worker_main(raw: Connection, plan: OutputPlan, ring: RingReader, client: RingReader | None) -> None:
    """Entry point of an encoder process: open the output, then encode until told to finish."""
    conn = _Pipe(raw)
    memory_limit = plan.limits.memory_limit
    budget.limit_address_space(memory_limit)  # first: a spare process is handed its session's limit here
    keep_frame_buffers()
    scheduling.apply(plan.scheduling)  # before any thread starts: they inherit it
    import av.logging

    from .encoder import OutputWriter, SetupError, describe_error

    # FFmpeg's error lines reach Python logging (and the worker's stderr, the server's log), and
    # PyAV attaches the last one to the exception it raises, so failures carry FFmpeg's reason.
    av.logging.set_level(av.logging.ERROR)
    masking.hide_in_process(plan.url)  # FFmpeg quotes URLs with their credentials; stderr is the server's log

    sink = _PipeSink(conn, plan.seekable) if plan.target == "client" else None
    try:
        _enter_workdir(plan.workdir)
    except OSError as exc:
        conn.send(("setup_failed", f"cannot enter the encoder's working directory: {exc}", None))
        return
    try:
        writer = OutputWriter(plan, sink)  # type: ignore[arg-type]
        if not plan.live:
            writer.start()  # files: header now, so a muxer refusal is a 422 at create time
    except SetupError as exc:
        if budget.out_of_memory(exc.__cause__ or exc, str(exc), memory_limit):
            conn.send(("setup_failed", f"{budget.oom_reason(memory_limit)} while opening the output ({exc})",
                       exc.field or "streams"))
        else:
            conn.send(("setup_failed", str(exc), exc.field))
        return
    except Exception as exc:  # anything else PyAV raised while opening
        text = describe_error(exc)
        if budget.out_of_memory(exc, text, memory_limit):
            text = f"{budget.oom_reason(memory_limit)} ({text})"
        conn.send(("setup_failed", f"cannot open output: {text}", None))
        return
    conn.send(("ready", writer.warnings))

    try:
        if plan.live:
            writer.start()  # connects; chunks queue up meanwhile, and then the client waits
            conn.send(("connected", writer.warnings))
        if plan.realtime:
            _paced_loop(conn, writer, _Payloads(ring, client))
        else:
            _direct_loop(conn, writer, _Payloads(ring, client))
    except QuotaReached as exc:
        _stop(conn, writer, str(exc), exc.flush)
    except Exception as exc:
        reason = describe_error(exc)
        if budget.out_of_memory(exc, reason, memory_limit):
            reason = f"{budget.oom_reason(memory_limit)} ({reason})"
        with contextlib.suppress(Exception):
            writer.finish_early(reason)  # not close(): a filter chain may never finish flushing
        with contextlib.suppress(OSError):
            conn.send(("failed", reason))


def _stop(conn: _Pipe, writer: Any, reason: str, flush: bool) -> None:
    """A quota ran out: finalize the output (playable up to here) and say why the session stops."""
    try:
        writer.finish_early(reason, flush)
    except Exception as exc:
        from .encoder import describe_error

        with contextlib.suppress(OSError):
            conn.send(("failed", f"{reason}, but finalizing the output failed: {describe_error(exc)}"))
        return
    with contextlib.suppress(OSError):
        conn.send(("stopped", reason, _stats(writer)))


def _closed(conn: _Pipe, writer: Any, pacer: Any = None) -> None:
    """The output is closed after a finish: ("closed", stats), or ("stopped", ...) if a quota ran
    out while the filter chains flushed."""
    if writer.stopped is not None:
        conn.send(("stopped", writer.stopped, _stats(writer, pacer)))
    else:
        conn.send(("closed", _stats(writer, pacer)))


def _enter_workdir(path: str | None) -> None:
    """Work in ``path``, inside the output directory (``plan.workdir``): whatever an encoder library
    or filter still writes to a relative path lands there, never in the server's working directory.
    A spare enters it when assigned, before any FFmpeg object exists."""
    if path:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chdir(path)


def spare_main(raw: Connection) -> None:
    """Entry point of a spare encoder process (``spares.py``): started before a session needs it,
    it waits for one, then runs exactly as an encoder started for that session would.

    Its assignment comes down the pipe: ``("assign", plan, ring bytes, client memory bytes or
    None)``, then the descriptors of that memory (SCM_RIGHTS), in that order. The pipe closing
    first means the spare is no longer wanted: it exits.
    """
    try:
        _, plan, ring_bytes, client_bytes = raw.recv()
        with socket.socket(fileno=os.dup(raw.fileno())) as sock:
            fds = reduction.recvfds(sock, 1 if client_bytes is None else 2)
    except (EOFError, OSError):
        return
    ring = RingReader(fds[0], ring_bytes)
    client = RingReader(fds[1], client_bytes) if client_bytes is not None else None
    worker_main(raw, plan, ring, client)


def _stats(writer: Any, pacer: Any = None) -> dict[str, Any]:
    return {"streams": writer.stats(), "pacing": pacer.stats() if pacer is not None else None}


class _StatsEvery:
    """Counters ride on ACKs at most every ``interval`` seconds (None in between): enough for the
    dashboard and metrics, and one pickled dict less per chunk. ``closed`` always carries them."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._last = float("-inf")

    def __call__(self, writer: Any, pacer: Any = None) -> dict[str, Any] | None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return None
        self._last = now
        return _stats(writer, pacer)


def _send_preview(conn: _Pipe, previewer: Any) -> None:
    if previewer.due():
        conn.send(("preview", previewer.take(), dict(previewer.levels)))


class _Payloads:
    """Where chunk payloads come from: the server's ring, or the client's shared memory."""

    def __init__(self, ring: RingReader, client: RingReader | None) -> None:
        self.ring, self.client = ring, client

    def chunk(self, message: bytes) -> tuple[Any, Any, bool]:
        """Header, payload array, and whether the ring's space must be handed back after use."""
        return read_descriptor(message, self.ring, self.client)


def _prepare(conn: _Pipe, writer: Any, payloads: _Payloads, out: queue.Queue[Any]) -> None:
    """The direct loop's first stage, on its own thread: take each message off the pipe and build
    the chunk's frames (the copy out of shared memory), so that it overlaps the encoding of the
    chunk before. NumPy's copy and PyAV's encoding both release the GIL.

    Puts ("chunk", header, frames, levels), ("watch", seconds), ("finish",), ("eof",), or the
    exception that stopped it (``QuotaReached`` for a stop message).
    """
    try:
        while True:
            message = _receive(conn)
            if message is None:  # the server went away: finalize what we have
                out.put(("eof",))
                return
            if message[:2] == protocol.MAGIC:
                header, array, in_ring = payloads.chunk(message)
                frames = writer.frames_for(header.stream, array, header.pts) if writer.plan.encode else []
                audio = writer.plan.encode and writer.plan.streams[header.stream].type == "audio"
                levels = levels_db(array) if audio else None
                del array  # frames hold copies: the ring space can be written again
                if in_ring:
                    conn.send(FREE)
                out.put(("chunk", header, frames, levels))
            else:
                control = json.loads(message)
                if control.get("type") == WATCH:
                    out.put(("watch", float(control["seconds"])))
                elif control.get("type") == protocol.FINISH:
                    out.put(("finish",))
                    return
                elif control.get("type") == STOP:
                    out.put(QuotaReached(str(control.get("reason", "stopped"))))
                    return
    except BaseException as exc:  # the encoding thread raises it: the session fails with its reason
        out.put(exc)


def _direct_loop(conn: _Pipe, writer: Any, payloads: _Payloads) -> None:
    """Encode each chunk as it comes: files, client-side outputs, unpaced network outputs.

    Two stages: a thread takes chunks off the pipe and builds their frames (``_prepare``), this
    one encodes and muxes them and acknowledges each; at most two chunks wait between the two.
    """
    from .preview import Previewer

    live = _live_output(conn, writer)
    previewer = Previewer()
    prepared: queue.Queue[Any] = queue.Queue(maxsize=2)
    stats = _StatsEvery()
    acks = _AckCoalescer(conn, writer, stats)
    threading.Thread(target=_prepare, args=(conn, writer, payloads, prepared), daemon=True,
                     name="prepare").start()
    while True:
        if live is not None:
            while live.down:  # nothing more is taken until the destination is back: backpressure
                acks.flush()
                live.tick()
                time.sleep(min(live.next_attempt_in() or 0.0, 0.05))
        try:
            item = prepared.get_nowait()
        except queue.Empty:  # nothing to do next: whatever is encoded is acknowledged now
            acks.flush()
            item = prepared.get()
        if isinstance(item, BaseException):
            acks.flush()
            raise item
        if item[0] == "eof":
            writer.close()
            return
        if item[0] == "watch":
            previewer.watch(item[1])
            continue
        if item[0] == "finish":
            acks.flush()
            writer.close()
            _closed(conn, writer)
            return
        _, header, frames, levels = item
        if frames:
            if live is not None:
                for frame in frames:
                    live.emit(header.stream, frame)
            else:
                writer.emit(header.stream, frames)
        if levels is not None:
            previewer.offer_levels(header.stream, levels)
        elif frames:
            previewer.offer_video(header.stream, frames.built)
        acks.done(header.seq, busy=not prepared.empty())
        _send_preview(conn, previewer)


class _AckCoalescer:
    """ACKs of the direct loop, one for several chunks while the encoder is behind.

    ACKs are cumulative, so while the next chunk is already prepared the ACK of this one can wait
    and go out with it: one message (and one wake-up of the server, and of the client after it)
    for up to ``most`` chunks or ``delay`` seconds, where a busy encoder would send one for each.
    An encoder that keeps up finds nothing waiting and acknowledges every chunk at once, and the
    loop flushes before it waits for anything, so no ACK waits for input that is not there yet.
    """

    def __init__(self, conn: _Pipe, writer: Any, stats: _StatsEvery, most: int = 4, delay: float = 0.02) -> None:
        self._conn, self._writer, self._stats = conn, writer, stats
        self.most, self.delay = most, delay
        self._seq: int | None = None
        self._count = 0
        self._since = 0.0

    def done(self, seq: int, busy: bool) -> None:
        """Chunk ``seq`` is encoded and muxed; ``busy``: another one is ready to be encoded."""
        if self._seq is None:
            self._since = time.monotonic()
        self._seq = seq
        self._count += 1
        if not busy or self._count >= self.most or time.monotonic() - self._since >= self.delay:
            self.flush()

    def flush(self) -> None:
        if self._seq is not None:
            self._conn.send(("ack", self._seq, self._stats(self._writer)))
            self._seq, self._count = None, 0


def _live_output(conn: _Pipe, writer: Any) -> Any:
    """A LiveOutput for network destinations (reconnects, outage policy); None for the rest."""
    if not writer.plan.live:
        return None
    from .live import LiveOutput

    plan = writer.plan
    return LiveOutput(writer, conn.send, plan.on_drop, plan.outage_buffer, plan.reconnect_timeout)


def _paced_loop(conn: _Pipe, writer: Any, payloads: _Payloads) -> None:
    """Release frames at media time; read ahead only as far as the pacer allows (backpressure)."""
    from .pacing import Pacer
    from .preview import Previewer

    pacer = Pacer(len(writer.streams))
    stats = _StatsEvery()
    previewer = Previewer()
    live = _live_output(conn, writer)
    held_since: float | None = None
    finishing = False
    while True:
        now = pacer.clock()
        if live is not None:
            live.tick()
            if live.holding_back:  # "block": release nothing, read nothing, until it is back
                held_since = held_since if held_since is not None else now
                time.sleep(min(live.next_attempt_in() or 0.0, 0.05))
                continue
            if held_since is not None:  # resume the schedule where it stopped
                pacer.shift(now - held_since)
                held_since = None
        for stream, frame in pacer.pop_due(now):
            if live is not None:
                live.emit(stream, frame)
            else:
                writer.emit(stream, [frame])
            if writer.plan.streams[stream].type == "video":
                previewer.offer_video(stream, [frame])
        _send_preview(conn, previewer)
        done = pacer.completed()
        if done is not None:
            conn.send(("ack", done, stats(writer, pacer)))
        if finishing and not len(pacer) and not (live is not None and live.down):
            writer.close()
            _closed(conn, writer, pacer)
            return
        due = pacer.next_due()
        wait = None if due is None else max(0.0, due - pacer.clock())
        if live is not None and live.down:
            retry = live.next_attempt_in() or 0.0
            wait = retry if wait is None else min(wait, retry)
        if finishing or not pacer.wants_more(now):
            time.sleep(wait if wait is not None else 0.01)
            continue
        try:
            message = _receive(conn, wait)
        except _NothingYet:
            continue
        if message is None:
            finishing = True
        elif message[:2] == protocol.MAGIC:
            header, array, in_ring = payloads.chunk(message)
            # The pacer holds a gap's silence until it is due: bounded by FRAMECAST_MAX_PTS_GAP.
            frames = list(writer.frames_for(header.stream, array, header.pts))
            pacer.add(header.stream, frames, header.seq, array.nbytes)
            if writer.plan.streams[header.stream].type == "audio":
                previewer.offer_audio(header.stream, array)
            del array
            if in_ring:
                conn.send(FREE)
        else:
            control = json.loads(message)
            if control.get("type") == WATCH:
                previewer.watch(float(control["seconds"]))
            elif control.get("type") == protocol.FINISH:
                finishing = True
            elif control.get("type") == STOP:
                raise QuotaReached(str(control.get("reason", "stopped")))


#: Sent after each chunk's payload is copied out of the ring (into frames), oldest first.
FREE = ("free",)
#: Server -> worker: someone looks at this session's previews; make them for ``seconds``.
WATCH = "watch"


#: Server -> worker: stop now, finalizing the output; ``reason`` becomes the session's error.
STOP = "stop"


def watch_message(seconds: float) -> bytes:
    return json.dumps({"type": WATCH, "seconds": seconds}).encode()


def stop_message(reason: str) -> bytes:
    return json.dumps({"type": STOP, "reason": reason}).encode()

_context: multiprocessing.context.BaseContext | None = None


def encoder_context() -> multiprocessing.context.BaseContext:
    """A forkserver context that has PyAV and this module loaded already, so starts are cheap."""
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["framecast_server.worker", "framecast_server.encoder"])
        _context = ctx
    return _context


class _WorkerChannel(asyncio.Protocol):
    """The server's end of the pipe, on the event loop: no reader thread, no thread hop per message.

    Messages are framed as ``multiprocessing.Connection`` frames them (a 4-byte big-endian length,
    or -1 and an 8-byte one, then the bytes), so the worker keeps using its plain Connection.
    Messages from the worker are pickles of its own making.
    """

    def __init__(self, on_message: Callable[[tuple], None], on_closed: Callable[[], None]) -> None:
        self._on_message = on_message
        self._on_closed = on_closed
        self._buffer = bytearray()
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            (size,) = _LENGTH.unpack_from(buffer)
            start = 4
            if size == -1:
                if len(buffer) < 12:
                    return
                (size,) = _LONG_LENGTH.unpack_from(buffer, 4)
                start = 12
            if len(buffer) < start + size:
                return
            with memoryview(buffer) as view:
                message = pickle.loads(view[start : start + size])
            del buffer[: start + size]
            self._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_closed()

    def send(self, data: bytes) -> None:
        """Queue one message for the worker (asyncio buffers it; this never blocks)."""
        assert self.transport is not None
        size = len(data)
        head = _LENGTH.pack(size) if size <= 0x7FFFFFFF else _LENGTH.pack(-1) + _LONG_LENGTH.pack(size)
        self.transport.writelines((head, data))


_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")


class EncoderProcess:
    """The server's handle on one encoder process.

    ``start`` blocks and is meant to run in a thread; then ``attach`` moves the pipe onto the event
    loop, where everything else runs. ``on_message`` is called on the loop for every message the
    worker sends (but ``("free",)``, which the ring takes), and once more with
    ``("exited", exitcode)`` after the pipe closes.

    Args:
        buffer_bytes: size of the shared memory the chunks cross over (``ring.py``).
        client_memory: the session's ``shm.ClientMemory``, if its client puts payloads there.
    """

    def __init__(self, plan: OutputPlan, buffer_bytes: int, on_message: Callable[[tuple], None],
                 client_memory: Any = None) -> None:
        self.plan = plan
        self._client_memory = client_memory
        self._on_message = on_message
        self._buffer_bytes = buffer_bytes
        self._conn: Connection | None = None
        self._channel: _WorkerChannel | None = None
        self._early: list[tuple] = []
        self.ring: PayloadRing | None = None
        self.process: multiprocessing.process.BaseProcess | None = None

    def start(self, timeout: float, spare: Spare | None = None) -> tuple:
        """Start the process (or put ``spare`` to work) and wait for its first message: ("ready",
        ...) or ("setup_failed", ...)."""
        self.ring = PayloadRing(self._buffer_bytes)
        if spare is None or not self._assign(spare):
            parent, child = multiprocessing.Pipe(duplex=True)
            self.process = encoder_context().Process(
                target=worker_main, args=(child, self.plan, self.ring, self._client_memory), daemon=True,
                name="framecast-encoder",
            )
            self.process.start()
            child.close()
            self._conn = parent
        parent = self._conn
        assert parent is not None and self.process is not None
        if not parent.poll(timeout):
            self.kill()
            self._abandon()
            return ("setup_failed", f"encoder did not open its output within {timeout:g} s", "destination")
        try:
            first = parent.recv()
            while first[0] == "out":  # output bytes written while opening (a header), delivered after "ready"
                self._early.append(first)
                first = parent.recv()
        except EOFError:
            self.process.join(5)
            self._abandon()
            return ("setup_failed", f"encoder process exited during setup ({exit_text(self.process.exitcode)})", None)
        if first[0] != "ready":
            self.process.join(5)
            self._abandon()
        return first

    def _assign(self, spare: Spare) -> bool:
        """Hand ``spare`` this session's plan and memory; False (and the spare discarded) if it is gone."""
        assert self.ring is not None
        memory = self._client_memory
        fds = [self.ring.fileno()] + ([memory.fileno()] if memory is not None else [])
        try:
            spare.conn.send(("assign", self.plan, self.ring.capacity, memory.size if memory is not None else None))
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
        channel = _WorkerChannel(self._dispatch, lambda: loop.create_task(self._exited()))
        await loop.connect_accepted_socket(lambda: channel, sock=sock)
        self._channel = channel
        early, self._early = self._early, []
        for message in early:
            self._on_message(message)

    def _dispatch(self, message: tuple) -> None:
        if message == FREE:
            assert self.ring is not None
            self.ring.release()
        else:
            self._on_message(message)

    async def _exited(self) -> None:
        assert self.process is not None and self.ring is not None
        self.ring.close()  # wakes a chunk waiting for space: it is not delivered
        await asyncio.to_thread(self.process.join, 10)
        self._on_message(("exited", self.process.exitcode))

    def send(self, data: bytes) -> None:
        """Hand one message to the worker (never blocks). Raises OSError if the pipe is closed."""
        if self._channel is None or self._channel.transport is None or self._channel.transport.is_closing():
            raise BrokenPipeError("encoder process is gone")
        self._channel.send(data)

    async def send_chunk(self, message: bytes | memoryview, header_size: int, payload: memoryview) -> None:
        """Hand one checked CHUNK message to the worker: the payload through the ring, the rest
        through the pipe. Waits (without blocking the loop) while the ring is full.

        Raises:
            OSError: the encoder process is gone (``RingClosed`` is one).
        """
        assert self.ring is not None
        offset = await self.ring.write(payload)
        self.send(descriptor(memoryview(message)[:header_size], offset))

    def send_shared_chunk(self, message: bytes | memoryview, header_size: int, offset: int) -> None:
        """Hand the worker a chunk whose payload the client put into the session's shared memory.

        Raises:
            OSError: the encoder process is gone.
        """
        self.send(descriptor(memoryview(message)[:header_size], offset, IN_CLIENT_MEMORY))

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
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"

