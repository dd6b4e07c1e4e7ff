"""Sessions: one output, its encoder process, its state machine, its counters.

A session moves through explicit states::

    CREATED ──> STREAMING ──> FINISHING ──> CLOSED
       │            │             │
       └────────────┴─────────────┴──────> FAILED

CREATED: the encoder process is up and its output is open. STREAMING: a client has connected.
FINISHING: no more chunks are taken; encoders flush and the trailer is written. CLOSED: the output
is complete. FAILED: the encoder failed or died; ``error`` says why.

Everything here runs on the event loop. The only blocking call, starting the encoder and waiting
for it to open its output, runs on the session's own thread, never the loop's shared executor.
After that the encoder's pipe is an asyncio transport: its answers are handled on the loop as
they arrive, and writes to it never block, so an encoder stuck in FFmpeg (a connect that never
answers holds its GIL and stops reading its pipe) stalls only its own session, whose chunks wait
for space in its ring.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from framecast import compression, protocol
from framecast.errors import ProtocolError
from framecast_server.budget import death_hint
from framecast_server.chunks import ChunkChecker
from framecast_server.config import Settings
from framecast_server.errors import InvalidChunk, InvalidConfig, StateConflict
from framecast_server.logs import SessionLog
from framecast_server.messages import (
    Ack,
    Closed,
    Connected,
    Dropped,
    Exited,
    Failed,
    Finish,
    FromEncoder,
    OutputBytes,
    OutputFailed,
    Preview,
    Reconnecting,
    Recovered,
    SetupFailed,
    Stats,
    Stop,
    Stopped,
    Watch,
)
from framecast_server.metrics import Metrics, RateMeter
from framecast_server.models import SessionConfig, SessionInfo, StreamCounters, StreamInfo
from framecast_server.planning.plan import AudioPlan, SessionPlan, describe_stream
from framecast_server.quotas import KeyAccount
from framecast_server.ring import Placed
from framecast_server.session.client_memory import ClientMemory
from framecast_server.session.encoder_process import EncoderProcess, Spare, exit_text
from framecast_server.session.outbox import Outbox
from framecast_server.session.output_status import OutputState, OutputStatus
from framecast_server.session.refusals import Refusals

log = logging.getLogger(__name__)

#: Events kept per session for GET /v1/sessions/{id}.
MAX_EVENTS = 100
#: Events kept once a session has ended (the server remembers many finished sessions).
FINISHED_EVENTS = 20

#: A chunk payload this large is received straight into the ring (``Session.place``).
PLACE_MIN_BYTES = 64 * 1024


#: How long an encoder keeps making previews after someone last looked at its session.
PREVIEW_SECONDS = 10.0


class SessionState(str, enum.Enum):
    CREATED = "created"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"  # a network destination dropped; the encoder is reconnecting
    FINISHING = "finishing"
    CLOSED = "closed"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        return self in (SessionState.CLOSED, SessionState.FAILED)

    @property
    def taking_chunks(self) -> bool:
        return self in (SessionState.CREATED, SessionState.STREAMING, SessionState.RECONNECTING)


_ALLOWED = {
    SessionState.CREATED: {
        SessionState.STREAMING,
        SessionState.RECONNECTING,
        SessionState.FINISHING,
        SessionState.FAILED,
    },
    SessionState.STREAMING: {SessionState.RECONNECTING, SessionState.FINISHING, SessionState.FAILED},
    SessionState.RECONNECTING: {SessionState.STREAMING, SessionState.FINISHING, SessionState.FAILED},
    SessionState.FINISHING: {SessionState.CLOSED, SessionState.FAILED},
    SessionState.CLOSED: set(),
    SessionState.FAILED: set(),
}


def _check_finite(header: protocol.ChunkHeader, array: np.ndarray) -> None:
    """Float audio must be finite: NaN or infinity would reach the encoder as noise or a crash."""
    bad = header.shape[0] * header.shape[1] - int(np.isfinite(array).sum())
    if bad:
        raise InvalidChunk(
            f"chunk {header.seq} for stream {header.stream} (audio): {bad} samples are NaN or infinite; "
            "float audio must be finite (np.nan_to_num cleans it)"
        )


class Session:
    """One output being written, from POST /v1/sessions to CLOSED or FAILED."""

    def __init__(
        self,
        session_id: str,
        config: SessionConfig,
        plan: SessionPlan,
        settings: Settings,
        metrics: Metrics,
        client_memory: ClientMemory | None = None,
    ) -> None:
        # What it is, and whose.
        self.id = session_id
        self.config = config
        self.plan = plan
        self.settings = settings
        self.token = secrets.token_urlsafe(32)  # authorizes its websocket
        self.owner: str | None = None  # fingerprint of the API key that created it
        self.key_account: KeyAccount | None = None  # its key's quota, charged as the encoder reports
        self.created_at = time.time()
        self.log = SessionLog(log, {"session_id": session_id})
        self.metrics = metrics
        self._loop = asyncio.get_running_loop()

        # Where it is in its life (SessionState), and what it said about it.
        self.state = SessionState.CREATED
        self.error: str | None = None
        self.warnings: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.ended_at: float | None = None
        #: Called once when it ends (closed or failed): the manager keeps its record (``records.py``).
        self.on_ended: Callable[[Session], None] | None = None
        self._final: str | None = None  # the closed/failed message, repeated to a late client
        self._done = asyncio.Event()

        # The client: its connection, what waits to be sent to it, what it was refused.
        self.connected = False
        self._was_connected = False
        self.last_activity = time.monotonic()
        self.outbox = Outbox(settings.max_queued_output_bytes, settings.max_queued_message_bytes)
        self.refusals = Refusals(
            settings.max_error_replies_per_second,
            settings.max_refused_in_a_row,
            settings.max_refused_bytes_in_a_row,
            lambda level, *args, **kw: getattr(self.log, level)(*args, **kw),
        )
        self._resume_timer: asyncio.TimerHandle | None = None  # finalize unless the client comes back
        self._release_timer: asyncio.TimerHandle | None = None  # free the outbox unless it comes back
        self.client_memory = client_memory  # shared memory it writes payloads into, if any

        # Chunks: taken, handed to the encoder, acknowledged; counted per stream.
        self._checker = ChunkChecker(plan.streams, plan.limits.max_pts_gap)
        self.last_seq = -1
        # Ring regions placed for payloads not yet taken, with the chunk header their prefix held.
        self._placed: dict[Placed, protocol.ChunkHeader] = {}
        self.acked_seq = -1
        self.in_flight = 0  # chunks handed to the encoder, not yet acknowledged
        self.counters = [StreamCounters() for _ in plan.streams]
        self._rates = [RateMeter() for _ in plan.streams]
        # Each stream's labelled counters, looked up once instead of three times a chunk.
        self._counted_in = [
            (metrics.chunks_in.labels(st.type), metrics.bytes_in.labels(st.type), metrics.frames_in.labels(st.type))
            for st in plan.streams
        ]
        self._payload_paths = {
            path: metrics.payload_paths.labels(path) for path in ("placed", "copied", "client_memory")
        }

        # The output, and for network outputs their connection.
        self.output_bytes = 0
        self._output_index = 0  # of the next OUTPUT message (client-side destinations)
        self.outputs = [OutputStatus.of(output) for output in plan.outputs]
        self.reconnects = 0
        self.pacing: dict[str, float] | None = None

        # Previews for the dashboard, made by the encoder while someone watches.
        self.previews: dict[int, bytes] = {}  # stream -> latest frame as JPEG
        self.audio_levels: dict[int, list[float]] = {}  # stream -> dBFS per channel
        self._watch_told = float("-inf")

        # The encoder process, and the thread that waits for it to start.
        self.encoder = EncoderProcess(plan, settings.encoder_buffer_bytes, self._from_encoder, client_memory)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"session-{session_id}")

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        """Run a blocking call on this session's own thread."""
        return await self._loop.run_in_executor(self._thread, fn, *args)

    # -- state --------------------------------------------------------------------------------

    def _move(self, new: SessionState) -> None:
        if new not in _ALLOWED[self.state]:
            raise StateConflict(f"session {self.id} is {self.state.value}; it cannot become {new.value}")
        self.log.info("%s -> %s", self.state.value, new.value)
        self.state = new

    def _event(self, name: str, output: OutputStatus | None = None, **fields: Any) -> None:
        """Record a session event: kept in the session info (and ``output``'s, for an event of one
        output, which then names it by its index), logged, and sent to the client."""
        if output is not None:
            fields = {"output": output.plan.index, **fields}
        event = {"time": round(time.time(), 3), "event": name, **fields}
        self.events.append(event)
        del self.events[:-MAX_EVENTS]
        if output is not None:
            output.record(event)
        self.log.info(
            "%s %s",
            name,
            " ".join(f"{k}={v}" for k, v in fields.items()),
            **({"stream": fields["stream"]} if "stream" in fields else {}),
        )
        self.outbox.put_notice(
            protocol.encode_control(protocol.EVENT, **{k: v for k, v in event.items() if k != "time"})
        )

    def _fail(self, reason: str) -> None:
        if self.state.done:
            return
        self.error = reason
        self.metrics.errors.labels("session_failed").inc()
        self._move(SessionState.FAILED)
        self._event("failed", reason=reason)
        self._final = protocol.encode_control(protocol.FAILED, reason=reason)
        self.outbox.put(self._final)
        self._ended()
        self.log.warning("failed: %s", reason)

    def _ended(self) -> None:
        self.ended_at = time.time()
        self._done.set()
        self.outbox.stop_waiting()  # a chunk waiting for the client to read is not delivered
        self._cancel_resume_timer()
        self._thread.shutdown(wait=False)
        if self.encoder.ring is not None:
            self.encoder.ring.dispose()
        if self.client_memory is not None:
            self.client_memory.dispose()
        self._free_buffers()
        if not self.connected:
            self._release_outbox_later()
        if self.on_ended is not None:
            self.on_ended(self)

    def _free_buffers(self) -> None:
        """The session ended: drop what only a running session needs, keep its summary (``info()``).

        A server remembers up to ``keep_finished_sessions`` finished sessions; each must cost little.
        Previews and audio levels go and events are trimmed to the last FINISHED_EVENTS (the
        encoder's ring and the client's shared memory are unmapped by ``_ended``). The outbox is
        released once no client can still want it (``_release_outbox_later``).
        """
        self.previews.clear()
        self.audio_levels.clear()
        del self.events[:-FINISHED_EVENTS]
        self.refusals.gone()

    def _release_outbox_later(self) -> None:
        """Free the outbox (unsent and unconfirmed messages) unless a client reconnects within
        resume_timeout to collect them; ``_final`` is kept and repeated to any later client."""
        if self._release_timer is not None:
            self._release_timer.cancel()
        self._release_timer = self._loop.call_later(self.settings.resume_timeout, self._release_outbox)

    def _release_outbox(self) -> None:
        self._release_timer = None
        if not self.connected:
            self.outbox.release()

    # -- setup --------------------------------------------------------------------------------

    async def start(self, spare: Spare | None = None) -> None:
        """Start the encoder process (or put ``spare`` to work) and open the output; InvalidConfig
        if FFmpeg refuses it."""
        first = await self._blocking(self.encoder.start, self.settings.open_timeout, spare)
        if isinstance(first, SetupFailed):
            raise InvalidConfig(first.message, first.field)
        await self.encoder.attach()
        self._warn(first.warnings)

    @property
    def destination_connected(self) -> bool | None:
        """Whether every network output still working is connected; None without network outputs."""
        live = [s for s in self.outputs if s.plan.live and s.state is not OutputState.FAILED]
        if not live:
            return None
        return all(s.state in (OutputState.STREAMING, OutputState.CLOSED) for s in live)

    def _warn(self, warnings: list[str]) -> None:
        for warning in warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)
                self.outbox.put_notice(protocol.encode_control(protocol.WARNING, message=warning))

    # -- messages from the encoder ------------------------------------------------------------

    def _from_encoder(self, message: FromEncoder) -> None:
        """One message from the encoder process (``messages.py``), on the event loop."""
        match message:
            case OutputBytes(offset, data):
                self.output_bytes = max(self.output_bytes, offset + len(data))
                self.outbox.put(protocol.encode_output_header(self._output_index, offset) + data, self._output_index)
                self._output_index += 1
            case Ack(seq, stats):
                if stats is not None:
                    self._take_stats(stats)
                self.in_flight = max(0, self.in_flight - (seq - self.acked_seq))
                self.acked_seq = seq
                self.outbox.put_ack(protocol.encode_ack(seq))
            case Connected(output, warnings):
                status = self.outputs[output]
                status.state = OutputState.STREAMING
                self._warn(warnings)
                self._event("destination_connected", output=status, url=status.plan.describe_destination()["url"])
            case Reconnecting(output, attempt, reason):
                self._reconnecting(self.outputs[output], attempt, reason)
            case Recovered(output, attempts, outage):
                status = self.outputs[output]
                status.state = OutputState.STREAMING
                if self.state is SessionState.RECONNECTING:
                    self._move(SessionState.STREAMING if self.connected else SessionState.CREATED)
                self._event("recovered", output=status, attempts=attempts, outage_seconds=round(outage, 3))
            case OutputFailed(output, reason):
                self._output_failed(self.outputs[output], reason)
            case Preview(jpegs, levels):
                self.previews.update(jpegs)
                self.audio_levels.update(levels)
            case Dropped(output, stream, count, total):
                status = self.outputs[output]
                status.counters.dropped += count
                self.counters[stream].dropped += count
                self.metrics.dropped.labels(self.plan.streams[stream].type).inc(count)
                self._event("dropped", output=status, stream=stream, frames=count, total=total)
            case Closed(stats):
                self._closed(stats)
            case Failed(reason):
                self._fail(f"encoder error: {reason}")
            case Stopped(reason, stats):  # a quota ran out; the output is finalized (quotas.py)
                self._take_stats(stats)
                self._measure_file()
                self._fail(reason)
            case Exited(exitcode):
                if not self.state.done:
                    hint = death_hint(exitcode, self.plan.limits.memory_limit)  # budget.py
                    self._fail(f"encoder process died ({exit_text(exitcode)}){hint}")
            case _:
                self.log.error("unexpected message from the encoder: %r", message)

    def _reconnecting(self, status: OutputStatus, attempt: int, reason: str) -> None:
        """A network output dropped and is reconnecting. The session is RECONNECTING only while
        nothing is delivered at all (no other output streams); else it stays as it is."""
        status.state = OutputState.RECONNECTING
        status.counters.reconnects += 1
        self.reconnects += 1
        self.metrics.reconnects.inc()
        delivering = any(s.state is OutputState.STREAMING for s in self.outputs)
        if not delivering and self.state in (SessionState.CREATED, SessionState.STREAMING):
            self._move(SessionState.RECONNECTING)
        self._event("reconnecting", output=status, attempt=attempt, reason=reason)

    def _output_failed(self, status: OutputStatus, reason: str) -> None:
        """One of several outputs failed for good; the encoder carries on with the others."""
        status.state = OutputState.FAILED
        status.error = reason
        self.metrics.errors.labels("output_failed").inc()
        self._event("output_failed", output=status, reason=reason)
        if self.state is SessionState.RECONNECTING and any(s.state is OutputState.STREAMING for s in self.outputs):
            self._move(SessionState.STREAMING if self.connected else SessionState.CREATED)

    def _closed(self, stats: Stats) -> None:
        """The encoder wrote the trailer and closed the output: the session is complete."""
        self._take_stats(stats)
        self._measure_file()
        for status in self.outputs:
            if status.state is not OutputState.FAILED:
                status.state = OutputState.CLOSED
        self._move(SessionState.CLOSED)
        self._event("finalized", output_bytes=self.output_bytes)
        self._final = protocol.encode_control(protocol.CLOSED, session=self.info().model_dump())
        self.outbox.put(self._final)
        self._ended()

    def _measure_file(self) -> None:
        """The first server file's size, once the encoder has closed it (its bytes out)."""
        for output in self.plan.files:
            if output.path and os.path.exists(output.path):
                self.output_bytes = os.path.getsize(output.path)
                return

    def _take_stats(self, stats: Stats) -> None:
        now = time.monotonic()
        for stream, counters, st, rate in zip(self.plan.streams, self.counters, stats.streams, self._rates):
            self.metrics.packets_out.labels(stream.type).inc(st.packets - counters.packets)
            self.metrics.bytes_out.labels(stream.type).inc(st.bytes - counters.bytes)
            counters.packets = st.packets
            counters.bytes = st.bytes
            rate.update(st.frames, now)
        if stats.pacing is not None:
            self.pacing = stats.pacing._asdict()
        for status, output_stats in zip(self.outputs, stats.outputs):
            status.take(output_stats)
        if self.key_account is not None and (over := self.key_account.charge(stats)) is not None:
            with contextlib.suppress(OSError):  # gone already: nothing more to stop
                self.encoder.send(Stop(over))

    # -- chunks and control from the client ---------------------------------------------------

    def place(self, prefix: memoryview) -> Placed | asyncio.Future[None] | None:
        """Where the payload of a chunk whose header (``prefix``, the message's first fragment) has
        arrived should be received: a region of the ring; a future done when the encoder frees
        space, to be asked again then (the ring is full: the websocket waits, unread, rather than
        take the payload as usual and copy it in later); or None to receive it as usual.

        Only a large payload of a chunk that looks acceptable is placed (the websocket asks only
        once the messages before it are through). ``ingest`` decides on the chunk as it would
        otherwise, and gives the region back if it is refused.
        """
        ring = self.encoder.ring
        if ring is None or not self.state.taking_chunks:
            return None
        try:
            header = protocol.parse_chunk_header(prefix)
        except ProtocolError:
            return None
        if header.shared or header.compressed or header.size != len(prefix) or header.payload_size < PLACE_MIN_BYTES:
            return None
        if header.seq <= self.last_seq or header.payload_size > ring.capacity:
            return None  # a resend, or a payload the ring can never hold: ``ingest`` answers it
        placed = ring.place(header.payload_size)
        if placed is None:
            return ring.freed()
        self._placed[placed] = header
        # Nothing here reads a video payload (an audio one is checked for NaN): the encoder may
        # unmask it as it reads it.
        streams = self.plan.streams
        placed.maskable = header.stream < len(streams) and streams[header.stream].type == "video"
        return placed

    async def ingest(self, message: bytes | memoryview, placed: Placed | None = None) -> None:
        """Check one CHUNK message and hand it to the encoder; waits while the encoder is busy
        or the client does not read its output.

        ``placed``: the message is the chunk's header only, and its payload is already in that
        region of the ring (``place``).

        Raises:
            InvalidChunk: the chunk is refused; the session goes on. (The websocket counts, logs and
                answers refusals through ``self.refusals``.)
        """
        try:
            await self._ingest(message, placed)
        finally:
            if placed is not None:
                placed.cancel()  # unless it was handed on
                self._placed.pop(placed, None)

    async def _ingest(self, message: bytes | memoryview, placed: Placed | None) -> None:
        try:
            if placed is None:
                header, payload = protocol.parse_chunk(message)
            else:  # the message is the prefix ``place`` parsed
                header = self._placed.get(placed) or protocol.parse_chunk_header(message)
                payload = placed.view
        except ProtocolError as exc:
            raise InvalidChunk(f"malformed chunk: {exc}") from None
        received = self.last_activity = time.monotonic()
        if not self.state.taking_chunks:
            raise InvalidChunk(f"chunk {header.seq}: session is {self.state.value}; no more chunks are taken")
        if header.seq <= self.last_seq:
            self._resent(header.seq)
            return
        offset = self._check(header, payload)
        self._count(header)
        # A client that does not read its output (OUTPUT messages) is not sent more work.
        await self.outbox.wait_for_room(self.settings.max_queued_output_bytes)
        try:
            if placed is not None:
                self.encoder.send_placed_chunk(message, header.size, placed, received)
                self._payload_paths["placed"].inc()
            elif offset is None:
                await self.encoder.send_chunk(message, header.size, payload, received, header.compressed)
                self._payload_paths["copied"].inc()
            else:
                self._hand_shared(message, header, offset, received)
        except OSError:
            self._not_delivered(header)

    def take_now(self, message: bytes | memoryview) -> bool:
        """Take a chunk whose payload is in the client's shared memory at once, on the websocket's
        own callback, when nothing about it is refused or has to wait: the hot path of a client
        on this host, one small message a frame, without a task switch. False: it was not taken,
        and ``ingest`` decides on it as on any other, refusals included (``_verify`` changes
        nothing when it refuses, so that decision is the same).
        """
        if not self.state.taking_chunks or self.client_memory is None or not self.client_memory.used:
            return False
        if self.outbox.waiting_bytes > self.settings.max_queued_output_bytes:
            return False  # ``ingest`` waits for the client to read its output
        try:
            header, payload = protocol.parse_chunk(message)
        except ProtocolError:
            return False
        if not header.shared or header.compressed or header.seq <= self.last_seq:
            return False
        try:
            offset = self._verify(header, payload)
        except InvalidChunk:
            return False
        assert offset is not None
        received = self.last_activity = time.monotonic()
        self._count(header)
        try:
            self._hand_shared(message, header, offset, received)
        except OSError:
            self._not_delivered(header)
        return True

    def _hand_shared(
        self, message: bytes | memoryview, header: protocol.ChunkHeader, offset: int, received: float
    ) -> None:
        """Hand the encoder a chunk whose payload is at ``offset`` of the client's shared memory
        (its message received at ``received``).

        Raises:
            OSError: the encoder process is gone.
        """
        self.encoder.send_shared_chunk(message, header.size, offset, received)
        self._payload_paths["client_memory"].inc()

    def _not_delivered(self, header: protocol.ChunkHeader) -> None:
        """The encoder died before a chunk reached it; its exit fails the session and the client hears why."""
        self.log.debug("chunk %d not delivered, encoder gone", header.seq, stream=header.stream)

    def _resent(self, seq: int) -> None:
        """A resend of a chunk already taken: dropped, and if it is already written that is said
        again (a client that lost the ACK learns the chunk is safe; one in flight gets its own)."""
        if seq <= self.acked_seq:
            self.outbox.put_ack(protocol.encode_ack(self.acked_seq))

    def _check(self, header: protocol.ChunkHeader, payload: memoryview) -> int | None:
        """Check a new chunk against its stream (``_verify``), counting a refusal as the stream's
        error; where its payload lies in the client's shared memory, or None when it came in the
        message.

        Raises:
            InvalidChunk: it does not fit its stream.
        """
        try:
            return self._verify(header, payload)
        except InvalidChunk:
            if header.stream < len(self.counters):
                self.counters[header.stream].errors += 1
            raise

    def _verify(self, header: protocol.ChunkHeader, payload: memoryview) -> int | None:
        """Check a new chunk against its stream: its payload (compressed as the session agreed,
        within the shared memory, audio without NaN), then its dtype, shape and pts. The last of
        these moves the stream's timeline on, so a chunk refused for any reason leaves it where it
        was, and the next chunk's pts is checked against the chunks taken.

        Raises:
            InvalidChunk: naming what was expected and what came.
        """
        if header.compressed:
            self._check_compressed(header, payload)
        offset, shared = self._shared_payload(header, payload) if header.shared else (None, None)
        streams = self.plan.streams
        if header.stream < len(streams) and isinstance(streams[header.stream], AudioPlan):
            if header.dtype.numpy.kind == "f":
                _check_finite(header, shared if shared is not None else protocol.chunk_array(header, payload))
        self._checker.check(header)
        return offset

    def _check_compressed(self, header: protocol.ChunkHeader, payload: memoryview) -> None:
        """A compressed payload: the session asked for compression, the stream is video, and the
        zstd frame says it decompresses to the size the shape needs (the encoder decompresses it).

        Raises:
            InvalidChunk: naming which of these does not hold.
        """
        where = f"chunk {header.seq}"
        if not self.plan.compressed:
            raise InvalidChunk(
                f"{where}: its payload is compressed (flag bit 2), but this session was created with "
                "compression 'none'; ask for compression 'zstd' in the session config"
            )
        if header.stream < len(self.plan.streams) and self.plan.streams[header.stream].type != "video":
            raise InvalidChunk(f"{where}: only video payloads may be compressed; stream {header.stream} is audio")
        try:
            size = compression.content_size(payload)
        except ProtocolError as exc:
            raise InvalidChunk(f"{where}: {exc}") from None
        if size < 0:
            raise InvalidChunk(
                f"{where}: its zstd frame does not say how large it decompresses (write the content size)"
            )
        if size != header.payload_size:
            raise InvalidChunk(
                f"{where}: its zstd frame decompresses to {size} bytes, but shape {header.shape} of "
                f"{header.dtype.label} needs {header.payload_size}"
            )

    def _count(self, header: protocol.ChunkHeader) -> None:
        """A chunk is taken: count it, in the session's counters and the server's metrics."""
        self.last_seq = header.seq
        counters = self.counters[header.stream]
        counters.chunks += 1
        counters.frames += header.shape[0]
        self.in_flight += 1
        chunks_in, bytes_in, frames_in = self._counted_in[header.stream]
        chunks_in.inc()
        bytes_in.inc(header.payload_size)
        frames_in.inc(header.shape[0])

    def watched(self) -> None:
        """Someone looks at this session (the dashboard, the API): have its encoder make previews
        for the next PREVIEW_SECONDS. Told at most once a second."""
        now = time.monotonic()
        if self.state.done or now - self._watch_told < 1.0:
            return
        self._watch_told = now
        with contextlib.suppress(OSError):  # not attached yet, or gone: nothing to preview
            self.encoder.send(Watch(PREVIEW_SECONDS))

    def _shared_payload(self, header: protocol.ChunkHeader, payload: memoryview) -> tuple[int, np.ndarray]:
        """Where a shared-memory chunk's payload lies, checked against the session's segment, and
        a view of it.

        Raises:
            InvalidChunk: the session has no shared memory, or the payload would lie outside it.
        """
        if self.client_memory is None:
            raise InvalidChunk(
                f"chunk {header.seq} refers to shared memory, but this session has none; send the payload "
                "in the message (shared memory is offered to clients on the server's host that ask for it)"
            )
        offset = protocol.shared_offset(payload)
        array = self.client_memory.payload(header, offset)  # checks the bounds
        if not self.client_memory.used:
            # The client has the segment open: remove its name, so that nothing is left behind.
            self.client_memory.used = True
            self.client_memory.unlink()
        return offset, array

    async def finish(self) -> None:
        """Flush, write the trailer, close. Idempotent; returns once CLOSED or FAILED."""
        if self.state.taking_chunks:
            self._move(SessionState.FINISHING)
            self._cancel_resume_timer()
            with contextlib.suppress(OSError):  # already dead: its exit fails the session
                self.encoder.send(Finish())
        try:
            await asyncio.wait_for(self._done.wait(), self.settings.finish_timeout)
        except asyncio.TimeoutError:
            self.encoder.kill()
            self._fail(f"encoder did not finish within {self.settings.finish_timeout:g} s")

    # -- websocket attachment -----------------------------------------------------------------

    def attach(self) -> None:
        """A client connected. On a reconnect, repeat what the last connection may have lost."""
        if self.connected:
            raise StateConflict(f"session {self.id} already has a connected client")
        self.connected = True
        self.last_activity = time.monotonic()
        self._cancel_resume_timer()
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        if self._was_connected:
            self.outbox.rewind()
            if self.acked_seq >= 0:
                self.outbox.put_front(protocol.encode_ack(self.acked_seq))
            if self._final is not None and not self.outbox.contains(self._final):
                self.outbox.put(self._final)
            self._event("client_reconnected")
        else:
            self._event("client_connected")
        self._was_connected = True
        if self.state is SessionState.CREATED:
            self._move(SessionState.STREAMING)

    def confirm_output(self, index: int) -> None:
        """The client applied every OUTPUT message up to ``index``."""
        self.outbox.confirm(index)

    def detach(self) -> None:
        """The client went away. Unless it comes back within resume_timeout, finalize."""
        for placed in self._placed:  # payloads that arrived (or began to) but were never taken
            placed.cancel()
        self._placed.clear()
        self.connected = False
        self.last_activity = time.monotonic()
        if not self.state.done:
            self._event("client_disconnected")
        else:
            self._release_outbox_later()
        if not self.state.done and self.state is not SessionState.FINISHING:
            self._resume_timer = self._loop.call_later(
                self.settings.resume_timeout, lambda: asyncio.ensure_future(self._abandoned())
            )

    @property
    def never_connected(self) -> bool:
        """No client has connected to this session yet."""
        return not self._was_connected

    def idle(self, connect_grace: float | None = None) -> None:
        """No client and no data for the idle timeout (or, ``connect_grace`` given, no client ever
        within it): finalize."""
        if connect_grace is None:
            self._event("idle", seconds=self.settings.idle_timeout)
        else:
            self._event("idle", seconds=connect_grace, never_connected=True)
        self._idle_task = asyncio.ensure_future(self.finish())

    async def _abandoned(self) -> None:
        if not self.connected and not self.state.done:
            self.log.info("no client for %g s, finalizing", self.settings.resume_timeout)
            await self.finish()

    def _cancel_resume_timer(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

    # -- reporting ----------------------------------------------------------------------------

    @property
    def encode_rates(self) -> list[float]:
        """Frames (video) or samples (audio) per second going into each stream's encoder."""
        return [round(rate.rate, 2) for rate in self._rates]

    def info(self) -> SessionInfo:
        return SessionInfo(
            id=self.id,
            replica=self.settings.replica_id,
            state=self.state.value,
            format=self.plan.first.muxer,
            destination=self.plan.first.describe_destination(),
            created_at=self.created_at,
            error=self.error,
            warnings=list(self.warnings),
            streams=[
                StreamInfo(
                    index=i,
                    type=s.type,
                    encoder=s.encoder,
                    encoder_format=s.encoder_format,
                    config=describe_stream(s),
                    counters=self.counters[i],
                )
                for i, s in enumerate(self.plan.streams)
            ],
            output_bytes=self.output_bytes,
            encoder_pid=self.encoder.pid,
            realtime=self.plan.realtime,
            destination_connected=self.destination_connected,
            pacing=self.pacing,
            reconnects=self.reconnects,
            events=list(self.events),
            preview_streams=sorted(self.previews),
            audio_levels={str(k): v for k, v in self.audio_levels.items()},
            owner=self.owner,
            outputs=[status.info(self.plan.streams, f"/v1/sessions/{self.id}/files/") for status in self.outputs],
            playback_url=self.playback_url,
        )

    @property
    def playback_url(self) -> str | None:
        """Where a player fetches the first HLS or DASH playlist: a path on this server, absolute
        under ``public_url`` when it is set."""
        segmented = next((o.segments for o in self.plan.outputs if o.segments is not None), None)
        if segmented is None:
            return None
        path = f"/v1/sessions/{self.id}/files/{segmented.playlist}"
        return (self.settings.public_url or "").rstrip("/") + path
