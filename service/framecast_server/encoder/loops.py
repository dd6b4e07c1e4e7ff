"""The two ways an encoder process works through its chunks, once its output is open.

- ``DirectLoop``: encode each chunk as it comes (files, client-side outputs, unpaced network
  outputs). Two stages overlap: a thread takes chunks off the pipe and builds their frames (the
  copy out of shared memory), this one encodes, muxes and acknowledges.
- ``PacedLoop``: release frames at media time, as ``ffmpeg -re`` does (``pacing.py``), and read
  ahead only as far as the pacer allows, which is the client's backpressure.

Both leave network outputs to the writer's ``LiveOutput`` (``live.py``), which reconnects when the
destination drops, and both make previews while someone watches. Everything here runs in the
encoder process, never on the server's event loop.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import NamedTuple

import numpy as np

from framecast import compression, protocol
from framecast.errors import ProtocolError
from framecast_server.encoder.pacing import Pacer
from framecast_server.encoder.pipe import NothingYet, Pipe
from framecast_server.encoder.preview import Previewer, levels_db
from framecast_server.encoder.writer import ChunkFrames, Memory, SessionWriter
from framecast_server.messages import (
    FREE,
    IN_CLIENT_MEMORY,
    Ack,
    ChunkDescriptor,
    Closed,
    Finish,
    Preview,
    Stats,
    Stop,
    Stopped,
    Watch,
)
from framecast_server.quotas import QuotaReached
from framecast_server.ring import RingReader
from framecast_server.unmasking import NO_MASK, unmask


def stats_of(writer: SessionWriter, pacer: Pacer | None = None) -> Stats:
    """The counters that ride on ``Ack``, ``Closed`` and ``Stopped``."""
    return Stats(writer.stats(), pacer.stats() if pacer is not None else None, writer.output_stats())


def closed_message(writer: SessionWriter, pacer: Pacer | None = None) -> Closed | Stopped:
    """What the server is told once the output is closed after a ``Finish``: ``Closed``, or
    ``Stopped`` if a quota ran out while the filter chains flushed."""
    if writer.stopped is not None:
        return Stopped(writer.stopped, stats_of(writer, pacer))
    return Closed(stats_of(writer, pacer))


class StatsEvery:
    """Counters ride on ACKs at most every ``interval`` seconds (None in between): enough for the
    dashboard and metrics, and one pickled record less per chunk. ``Closed`` always carries them."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._last = float("-inf")

    def __call__(self, writer: SessionWriter, pacer: Pacer | None = None) -> Stats | None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return None
        self._last = now
        return stats_of(writer, pacer)


class Payload(NamedTuple):
    """A chunk's array, and what its memory is."""

    array: np.ndarray
    memory: Memory  # whose it is: whether frames may use it as it is (``writer.Memory``)

    @property
    def in_ring(self) -> bool:
        """Whether it came through the server's ring (as itself, or unmasked or decompressed out
        of it), whose space is handed back after use (``Free``)."""
        return self.memory is not Memory.CLIENT


class Payloads:
    """Where chunk payloads come from: the server's ring, or the client's shared memory; a
    compressed payload is decompressed here, and one the websocket left masked is unmasked here:
    in the encoder process, off the server's loop, each into memory of its own, which the chunk's
    frames may keep (one pass over the bytes, where a copy would follow)."""

    def __init__(self, ring: RingReader, client: RingReader | None) -> None:
        self.ring, self.client = ring, client
        self._decompressor: compression.Decompressor | None = None

    def array(self, chunk: ChunkDescriptor) -> Payload:
        """The payload: a view (no copy) of the ring or the client's memory, unless it was
        compressed or masked.

        Raises:
            ProtocolError: a compressed payload that does not decompress to the array's size.
        """
        if chunk.where == IN_CLIENT_MEMORY:
            assert self.client is not None, "a client-memory chunk for a session without shared memory"
            return Payload(self.client.array(chunk.header, chunk.offset), Memory.CLIENT)
        if chunk.header.compressed:
            return Payload(self._decompressed(chunk), Memory.OWN)
        if chunk.mask != NO_MASK:
            return Payload(self._unmask(chunk), Memory.OWN)
        return Payload(self.ring.array(chunk.header, chunk.offset), Memory.RING)

    def _unmask(self, chunk: ChunkDescriptor) -> np.ndarray:
        """The payload XORed with its mask on its way out of the ring (which this process only
        reads), into memory of its own: one pass, as fast as a copy."""
        size = chunk.header.payload_size
        out = np.empty(size, dtype=np.uint8)
        unmask(self.ring.view(chunk.offset, size), chunk.mask, out=out)
        return out.view(chunk.header.dtype.numpy).reshape(chunk.header.shape)

    def _decompressed(self, chunk: ChunkDescriptor) -> np.ndarray:
        if self._decompressor is None:
            self._decompressor = compression.Decompressor()
        header = chunk.header
        try:
            data = self._decompressor.decompress(self.ring.view(chunk.offset, chunk.size), header.payload_size)
        except ProtocolError as exc:
            raise ProtocolError(f"chunk {header.seq}: {exc}") from None
        return protocol.chunk_array(header, data)


def _send_preview(pipe: Pipe, previewer: Previewer) -> None:
    if previewer.due():
        pipe.send(Preview(previewer.take(), dict(previewer.levels)))


class _Prepared(NamedTuple):
    """A chunk with its frames built, handed from the prepare thread to the encoding thread."""

    header: protocol.ChunkHeader
    frames: ChunkFrames
    levels: list[float] | None  # audio: its levels for the preview


#: What the prepare thread hands on: a chunk, a control record, None once the server went away,
#: or the exception that stopped it (``QuotaReached`` for ``Stop``).
_Item = _Prepared | Watch | Finish | BaseException | None


class AckCoalescer:
    """ACKs of the direct loop, one for several chunks while the encoder is behind.

    ACKs are cumulative, so while the next chunk is already prepared the ACK of this one can wait
    and go out with it: one message (and one wake-up of the server, and of the client after it)
    for up to ``most`` chunks or ``delay`` seconds, where a busy encoder would send one for each.
    An encoder that keeps up finds nothing waiting and acknowledges every chunk at once, and the
    loop flushes before it waits for anything, so no ACK waits for input that is not there yet.
    """

    def __init__(
        self, pipe: Pipe, writer: SessionWriter, stats: StatsEvery, most: int = 4, delay: float = 0.02
    ) -> None:
        self._pipe, self._writer, self._stats = pipe, writer, stats
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
            self._pipe.send(Ack(self._seq, self._stats(self._writer)))
            self._seq, self._count = None, 0


class DirectLoop:
    """Encode each chunk as it comes; at most two prepared chunks wait between the two stages."""

    def __init__(self, pipe: Pipe, writer: SessionWriter, payloads: Payloads) -> None:
        self.pipe, self.writer, self.payloads = pipe, writer, payloads
        self.previewer = Previewer()
        self.prepared: queue.Queue[_Item] = queue.Queue(maxsize=2)
        self.acks = AckCoalescer(pipe, writer, StatsEvery())

    def run(self) -> Closed | Stopped | None:
        """Until the server says ``Finish`` (or goes away): then close the output, and return what
        the server is to be told (None: it went away)."""
        preparing = threading.Thread(target=self._prepare, daemon=True, name="prepare")
        preparing.start()
        while True:
            self._wait_for_destination()
            match self._next():
                case _Prepared() as chunk:
                    self._encode(chunk)
                case Watch(seconds):
                    self.previewer.watch(seconds)
                case Finish():
                    self.acks.flush()
                    self.writer.close()
                    preparing.join()  # it ended at the Finish: it holds nothing more of the session
                    return closed_message(self.writer)
                case None:  # the server went away: finalize what we have
                    self.writer.close()
                    return None
                case BaseException() as exc:
                    self.acks.flush()
                    raise exc

    def _wait_for_destination(self) -> None:
        """While a network destination is down nothing more is taken: backpressure."""
        while self.writer.down:
            self.acks.flush()
            self.writer.tick()
            time.sleep(min(self.writer.next_attempt_in() or 0.0, 0.05))

    def _next(self) -> _Item:
        try:
            return self.prepared.get_nowait()
        except queue.Empty:  # nothing to do next: whatever is encoded is acknowledged now
            self.acks.flush()
            return self.prepared.get()

    def _encode(self, chunk: _Prepared) -> None:
        header, frames = chunk.header, chunk.frames
        if frames:
            self.writer.emit(header.stream, frames)
        if chunk.levels is not None:
            self.previewer.offer_levels(header.stream, chunk.levels)
        elif frames:
            self.previewer.offer_video(header.stream, frames.built)
        self.acks.done(header.seq, busy=not self.prepared.empty())
        _send_preview(self.pipe, self.previewer)

    def _prepare(self) -> None:
        """The first stage, on its own thread: take each message off the pipe and build the chunk's
        frames (the copy out of shared memory), so that it overlaps the encoding of the chunk
        before. NumPy's copy and PyAV's encoding both release the GIL."""
        out = self.prepared
        try:
            while True:
                match self.pipe.receive():
                    case ChunkDescriptor() as chunk:
                        out.put(self._build(chunk))
                    case Watch() as watch:
                        out.put(watch)
                    case Finish() as finish:
                        out.put(finish)
                        return
                    case Stop(reason):
                        out.put(QuotaReached(reason))
                        return
                    case None:
                        out.put(None)
                        return
        except BaseException as exc:  # the encoding thread raises it: the session fails with its reason
            out.put(exc)

    def _build(self, chunk: ChunkDescriptor) -> _Prepared:
        writer, header = self.writer, chunk.header
        payload = self.payloads.array(chunk)
        array, memory = payload
        encode = writer.plan.encode
        frames = writer.frames_for(header.stream, array, header.pts, memory) if encode else ChunkFrames(None, [])
        audio = encode and writer.plan.streams[header.stream].type == "audio"
        levels = levels_db(array) if audio else None
        in_ring = payload.in_ring
        del array, payload  # frames from the ring hold copies: its space can be written again (``Memory``)
        if in_ring:
            self.pipe.send(FREE)
        return _Prepared(header, frames, levels)


class PacedLoop:
    """Release frames at media time; read ahead only as far as the pacer allows (backpressure)."""

    def __init__(self, pipe: Pipe, writer: SessionWriter, payloads: Payloads) -> None:
        self.pipe, self.writer, self.payloads = pipe, writer, payloads
        self.pacer = Pacer(len(writer.streams))
        self.video = frozenset(i for i, stream in enumerate(writer.plan.streams) if stream.type == "video")
        self.stats = StatsEvery()
        self.previewer = Previewer()
        self.held_since: float | None = None
        # Chunks the server received before this loop could read them (while the output connected,
        # or a "block" destination was down) arrived, for the schedule, when reading began.
        self.reading_since = self.pacer.clock()
        self.finishing = False

    def run(self) -> Closed | Stopped:
        """Until the server says ``Finish`` (or goes away) and every frame has left; then close the
        output and return what the server is to be told."""
        pacer = self.pacer
        while True:
            now = pacer.clock()
            if self._holding_back(now):
                continue
            self._release_due(now)
            if self.finishing and not len(pacer) and not self.writer.down:
                self.writer.close()
                return closed_message(self.writer, pacer)
            wait = self._wait()
            if self.finishing or not pacer.wants_more(now):
                time.sleep(wait if wait is not None else 0.01)
                continue
            try:
                message = self.pipe.receive(wait)
            except NothingYet:
                continue
            self._take(message)

    def _holding_back(self, now: float) -> bool:
        """Reconnect when due. Under "block" release nothing and read nothing while the destination
        is down (True); once it is back, resume the schedule where it stopped."""
        writer = self.writer
        writer.tick()
        if writer.holding_back:
            self.held_since = self.held_since if self.held_since is not None else now
            time.sleep(min(writer.next_attempt_in() or 0.0, 0.05))
            return True
        if self.held_since is not None:
            self.pacer.shift(now - self.held_since)
            self.held_since = None
            self.reading_since = now
        return False

    def _release_due(self, now: float) -> None:
        """Encode every frame whose time has come, then acknowledge the chunks that are all out."""
        for stream, frame in self.pacer.pop_due(now):
            self.writer.emit(stream, [frame])
            if stream in self.video:
                self.previewer.offer_video(stream, [frame])
        _send_preview(self.pipe, self.previewer)
        done = self.pacer.completed()
        if done is not None:
            self.pipe.send(Ack(done, self.stats(self.writer, self.pacer)))

    def _wait(self) -> float | None:
        """Seconds until something is due: the next frame, or the next reconnect attempt."""
        due = self.pacer.next_due()
        wait = None if due is None else max(0.0, due - self.pacer.clock())
        retry = self.writer.next_attempt_in()
        if retry is not None:
            wait = retry if wait is None else min(wait, retry)
        return wait

    def _take(self, message: ChunkDescriptor | Watch | Finish | Stop | None) -> None:
        match message:
            case ChunkDescriptor(header):
                payload = self.payloads.array(message)
                array, memory = payload
                # The pacer holds a gap's silence until it is due: bounded by FRAMECAST_MAX_PTS_GAP.
                frames = list(self.writer.frames_for(header.stream, array, header.pts, memory))
                arrived = max(message.received, self.reading_since)
                self.pacer.add(header.stream, frames, header.seq, array.nbytes, arrived)
                if header.stream not in self.video:
                    self.previewer.offer_audio(header.stream, array)
                in_ring = payload.in_ring
                del array, payload
                if in_ring:
                    self.pipe.send(FREE)
            case Watch(seconds):
                self.previewer.watch(seconds)
            case Finish() | None:
                self.finishing = True
            case Stop(reason):
                raise QuotaReached(reason)
