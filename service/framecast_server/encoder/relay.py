"""A network output muxed by a process of its own: the encoder's end.

Why a process per network destination: PyAV holds the GIL while FFmpeg connects (``avio_open``
takes no timeout and no interrupt callback there), and FFmpeg blocks in a write to a peer that
stopped reading. A destination that accepts the TCP connection and then answers nothing (an RTMP
server that never completes its handshake, a WHIP endpoint that never answers its POST, a peer
frozen mid-stream) would hold the whole encoder process, and every other output of the session
with it. A relay (``relay_main.py``) does the connecting and muxing of one destination; the
encoder only hands it packets through a pipe, never blocks on it, and ends it when it answers
nothing for ``OutputPlan.connect_timeout`` seconds. What one destination does can then cost that
destination only: the others carry on without a gap.

The relay gets the streams' codec parameters as a NUT header (FFmpeg's own format, which carries
any codec's parameters and extradata exactly) and the packets as records (``messages.py``). It
says how far it got (``RelayProgress``), so when its destination drops, the packets it never
muxed come back (``RelayLost.unsent``) and wait in ``LiveOutput``'s backlog with the rest.

The pipe never blocks the encoder: what the relay has not read yet waits in an outbox, written
as the pipe takes it. Only when the outbox is past ``OUTBOX_LIMIT`` (a destination slower than
the encoder, in a session that is not paced) does ``mux`` wait, up to the same timeout: that is
backpressure, as a slow destination has always given.
"""

from __future__ import annotations

import collections
import io
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av

from framecast_server.encoder.errors import SetupError
from framecast_server.messages import (
    OutputStats,
    RelayClose,
    RelayClosed,
    RelayFrames,
    RelayLost,
    RelayOpen,
    RelayPacket,
    RelayProgress,
    RelayReady,
    RelayTarget,
    encode_relay,
)

if TYPE_CHECKING:
    from framecast_server.planning.plan import OutputPlan

#: Bytes of packets waiting for the relay before ``mux`` waits for it (backpressure).
OUTBOX_LIMIT = 8 * 1024 * 1024
#: Seconds a relay may take to write its trailer and exit after it was told to close.
CLOSE_TIMEOUT = 10.0


class DestinationDropped(Exception):
    """A relay's destination dropped, stalled or its process died (``reason``); ``unsent`` are the
    packets it never muxed, in order, as (stream, packet)."""

    def __init__(self, reason: str, unsent: Sequence[tuple[int, av.Packet[Any]]] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsent = list(unsent)


class Relay:
    """One network output, muxed by a relay process; used like an in-process ``Output``.

    ``begin`` starts a relay and ``poll`` says when it is connected (both return at once: a
    reconnect attempt must not hold the session's other outputs); ``start`` does both and waits.

    Args:
        plan: the destination (a network one).
        templates: the streams the output takes, in its stream order.
        metadata: the session's container metadata.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        plan: OutputPlan,
        templates: Sequence[av.stream.Stream],
        metadata: dict[str, str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.streams = list(templates)
        self.clock = clock
        assert plan.given_url is not None, "a network output"
        target = RelayTarget(plan.muxer, plan.given_url, dict(plan.options), plan.where)
        self._open = RelayOpen(target, stream_header(templates), dict(metadata))
        self.warnings: list[str] = []
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self.reconnects = 0
        self.closed = False
        self._process: subprocess.Popen[bytes] | None = None
        self._frames = RelayFrames()
        self._outbox: collections.deque[memoryview] = collections.deque()
        self._outbox_bytes = 0
        self._progress_at = 0.0  # when the relay last took bytes from the pipe (or answered)
        self._begun_at = 0.0
        self._ready = False
        #: Packets sent whose muxing the relay has not confirmed, and how many it has confirmed.
        self._unconfirmed: collections.deque[RelayPacket] = collections.deque()
        self._confirmed = 0
        self._sent = 0

    @property
    def timeout(self) -> float:
        return self.plan.connect_timeout

    # -- connecting ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a relay process and send it the destination; ``poll`` follows its progress."""
        self._reset()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "framecast_server.encoder.relay_main"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        os.set_blocking(self._process.stdin.fileno(), False)
        os.set_blocking(self._process.stdout.fileno(), False)
        self._begun_at = self._progress_at = self.clock()
        self._send(encode_relay(self._open))

    def poll(self) -> bool:
        """Whether the relay is connected and its header written; False: not yet.

        Raises:
            SetupError: the destination refused, failed, or answered nothing within the timeout.
        """
        if self._ready:
            return True
        try:
            self._exchange()
        except DestinationDropped as exc:
            raise SetupError(exc.reason, self.plan.where) from exc
        if self._ready:
            return True
        if self.clock() - self._begun_at > self.timeout:
            self.abort()
            raise SetupError(self._no_answer(), self.plan.where)
        return False

    def start(self) -> None:
        """Connect and write the header, waiting up to the timeout.

        Raises:
            SetupError: as ``poll``.
        """
        self.begin()
        while not self.poll():
            self._wait(min(0.1, self.timeout))

    def reopen(self) -> None:
        """A new relay for the same destination after it dropped (``poll`` says when it is up)."""
        self.abort()
        self.closed = False
        self.begin()

    def _no_answer(self) -> str:
        return f"could not connect to {self.plan.describe_destination()['url']} within {self.timeout:g} s (no answer)"

    # -- streaming ----------------------------------------------------------------------------

    def mux(self, packet: av.Packet[Any], index: int, copy: bool = True) -> None:
        """Hand ``packet`` of stream ``index`` to the relay (``copy`` does not matter: the relay
        gets the packet's bytes, the packet is left as it was).

        Raises:
            DestinationDropped: the destination dropped or stalled past the timeout.
        """
        record = packet_record(index, packet)
        self._unconfirmed.append(record)
        self._sent += 1
        self._send(encode_relay(record))
        self.packets += 1
        self.bytes += packet.size
        self._exchange()
        if self._outbox_bytes > OUTBOX_LIMIT:  # a slow destination and an unpaced session: wait
            while self._outbox_bytes > OUTBOX_LIMIT:
                self._wait(0.1)
                self._exchange()

    def check(self) -> None:
        """Write what the pipe takes now, read the relay's news; for idle moments.

        Raises:
            DestinationDropped: as ``mux``.
        """
        if self._process is not None and self._ready:
            self._exchange()

    def close(self) -> None:
        """Let the relay write the trailer and exit. Runs once.

        Raises:
            DestinationDropped: it could not, or did not within ``CLOSE_TIMEOUT``.
        """
        if self.closed:
            return
        if not self._ready:  # never connected: nothing to finalize
            self.abort()
            return
        self.closed = True
        self._send(encode_relay(RelayClose()))
        deadline = self.clock() + CLOSE_TIMEOUT
        try:
            while True:
                for message in self._exchange():
                    if isinstance(message, RelayClosed):
                        self._end_process()
                        return
                if self.clock() > deadline:
                    raise DestinationDropped(f"the destination took no trailer within {CLOSE_TIMEOUT:g} s")
                self._wait(0.1)
        finally:
            self.abort()

    def abort(self) -> None:
        """End the relay at once (a broken destination, or one that never answered)."""
        self.closed = True
        if self._process is None:
            return
        process, self._process = self._process, None
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()

    def stats(self) -> OutputStats:
        return OutputStats(self.packets, self.bytes, self.dropped, self.reconnects)

    # -- the pipe -----------------------------------------------------------------------------

    def _reset(self) -> None:
        self._frames = RelayFrames()
        self._outbox.clear()
        self._outbox_bytes = 0
        self._ready = False
        self._unconfirmed.clear()
        self._confirmed = self._sent = 0
        self.warnings = []

    def _send(self, frame: bytes) -> None:
        if not self._outbox:
            self._progress_at = self.clock()  # the relay was keeping up until now
        self._outbox.append(memoryview(frame))
        self._outbox_bytes += len(frame)

    def _exchange(self) -> list[RelayReady | RelayProgress | RelayLost | RelayClosed]:
        """Write what the pipe takes without waiting, read and act on what the relay said.

        Raises:
            DestinationDropped: the relay lost its destination, died, or took nothing for the timeout.
        """
        process = self._process
        if process is None:
            raise DestinationDropped("the relay is not running")
        assert process.stdin is not None and process.stdout is not None
        try:
            while self._outbox:
                written = os.write(process.stdin.fileno(), self._outbox[0])
                self._progress_at = self.clock()
                self._outbox_bytes -= written
                if written < len(self._outbox[0]):
                    self._outbox[0] = self._outbox[0][written:]
                    break
                self._outbox.popleft()
        except BlockingIOError:
            pass
        except BrokenPipeError:
            pass  # it exited: what it said last is read below
        messages = []
        ended = False
        try:
            while data := os.read(process.stdout.fileno(), 65536):
                messages.extend(self._frames.feed(data))
            ended = True  # end of file: the relay exited
        except BlockingIOError:
            pass
        for message in messages:
            match message:
                case RelayReady(warnings):
                    self._ready = True
                    self.warnings = list(warnings)
                    self._progress_at = self.clock()
                case RelayProgress(muxed):
                    self._confirm(muxed)
                case RelayLost(reason, muxed):
                    self._confirm(muxed)
                    self._lose(reason)
                case RelayClosed(muxed):
                    self._confirm(muxed)
        if ended and not any(isinstance(m, RelayClosed) for m in messages):
            self._lose(f"the relay process exited unexpectedly ({_exit_status(process)})")
        if self._outbox and self.clock() - self._progress_at > self.timeout:
            self._lose(f"the destination took nothing for {self.timeout:g} s")
        return messages  # type: ignore[return-value]

    def _confirm(self, muxed: int) -> None:
        while self._confirmed < muxed and self._unconfirmed:
            self._unconfirmed.popleft()
            self._confirmed += 1

    def _lose(self, reason: str) -> None:
        unsent = [(record.stream, packet_from_record(record)) for record in self._unconfirmed]
        self._unconfirmed.clear()
        self.abort()
        raise DestinationDropped(reason, unsent)

    def _wait(self, seconds: float) -> None:
        """Until the relay says something, the pipe takes more, or ``seconds`` pass."""
        process = self._process
        if process is None or process.stdout is None or process.stdin is None:
            return
        writable = [process.stdin] if self._outbox else []
        select.select([process.stdout], writable, [], seconds)

    def _end_process(self) -> None:
        assert self._process is not None
        try:
            self._process.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass  # abort() kills it


def stream_header(templates: Sequence[av.stream.Stream]) -> bytes:
    """A NUT file holding streams like ``templates``: their codec parameters and extradata, which
    a relay opens to make its output's streams. One empty packet follows the header, for the NUT
    demuxer wants a packet before it gives the streams."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="nut") as container:
        streams = [container.add_stream_from_template(template) for template in templates]
        container.start_encoding()
        marker: av.Packet[Any] = av.Packet(b"")
        marker.pts = marker.dts = 0
        marker.time_base = Fraction(1, 1000)
        marker.stream = streams[0]
        container.mux(marker)
    return buffer.getvalue()


def packet_record(stream: int, packet: av.Packet[Any]) -> RelayPacket:
    time_base = packet.time_base or Fraction(1, 1)
    return RelayPacket(
        stream,
        bytes(packet),
        packet.pts,
        packet.dts,
        packet.duration,
        (time_base.numerator, time_base.denominator),
        bool(packet.is_keyframe),
    )


def packet_from_record(record: RelayPacket) -> av.Packet[Any]:
    packet: av.Packet[Any] = av.Packet(record.data)
    packet.pts, packet.dts, packet.duration = record.pts, record.dts, record.duration
    packet.time_base = Fraction(*record.time_base)
    packet.is_keyframe = record.keyframe
    return packet


def _exit_status(process: subprocess.Popen[bytes]) -> str:
    code = process.poll()
    if code is None:
        return "still running"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
