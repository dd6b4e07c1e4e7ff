"""One destination of a session: a container that muxes the packets the session's encoders made.

Encode once, mux many (LiveKit Egress's "transcode once, send to many", FFmpeg's tee muxer): the
session's encoders live apart from every container (``writer.py``), and each ``Output`` copies
their stream parameters (``add_stream_from_template``) and muxes copies of their packets. What one
muxer needs that another does not, FFmpeg inserts itself as it muxes (``av_interleaved_write_frame``
runs the muxer's own bitstream filters: MPEG-TS gets the H.264 parameter sets in-band before every
keyframe, MP4 and FLV get them in the header), so the encoders are set up once, with global headers
whenever any destination wants them.

An Output can be reopened after its destination dropped (``live.py``): a new container with the
same streams and a new header; the packets it takes next start at a keyframe.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, Generic, Protocol, TypeVar

import av

from framecast_server.encoder.confined import ConfinedFiles
from framecast_server.encoder.errors import SetupError, describe_error
from framecast_server.messages import OutputStats
from framecast_server.planning.segmenting import SegmentPlan

log = logging.getLogger(__name__)

#: FFmpeg's AVFMT_GLOBALHEADER: the muxer wants codec parameters in the header, not in the stream.
GLOBAL_HEADER = 0x0040


def wants_global_header(muxer: str) -> bool:
    """Whether ``muxer`` takes the codec's parameter sets from its header (FLV, MP4, Matroska, RTSP, WHIP)."""
    return bool(av.ContainerFormat(muxer, "w").flags & GLOBAL_HEADER)


class Destination(Protocol):
    """What an Output needs of its destination: an ``OutputPlan``, or a relay's ``RelayTarget``."""

    @property
    def muxer(self) -> str: ...
    @property
    def target(self) -> str: ...  # "client", "file", "url" or "discard"
    @property
    def path(self) -> str | None: ...
    @property
    def given_url(self) -> str | None: ...
    @property
    def options(self) -> Mapping[str, str]: ...
    @property
    def where(self) -> str: ...
    @property
    def live(self) -> bool: ...
    @property
    def segments(self) -> SegmentPlan | None: ...  # HLS, DASH


D = TypeVar("D", bound=Destination)


class _WarningCollector(logging.Handler):
    """Collects PyAV's 'options were not used' warnings so they reach the client."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Output(Generic[D]):
    """One destination's container, fed copies of the encoders' packets.

    Args:
        plan: the destination.
        templates: the encoders' streams, in stream order; the container gets a stream like each.
        metadata: the session's container metadata.
        file: a writable file object for a client-side destination; None for the others.
    """

    def __init__(
        self,
        plan: D,
        templates: Sequence[av.stream.Stream],
        metadata: dict[str, str],
        file: BinaryIO | None = None,
    ) -> None:
        self.plan = plan
        self._templates = templates
        self._metadata = metadata
        self._file = file
        self.warnings: list[str] = []
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self.reconnects = 0
        self.closed = False
        self._files: ConfinedFiles | None = None
        self.container = self._open()

    def _open(self) -> av.container.OutputContainer:
        plan = self.plan
        target: Any = {"file": plan.path, "url": plan.given_url, "discard": "null"}.get(plan.target, self._file)
        try:
            if plan.segments is not None and not plan.segments.rotating:  # HLS, DASH: files of their own
                self._files = ConfinedFiles(plan.segments)
                container = av.open(
                    plan.segments.target, "w", format=plan.muxer, options=dict(plan.options), io_open=self._files
                )
            else:
                container = av.open(target, "w", format=plan.muxer, options=dict(plan.options))
        except Exception as exc:
            raise SetupError(f"cannot open output: {describe_error(exc)}", plan.where) from exc
        try:
            self.streams = [container.add_stream_from_template(template) for template in self._templates]
            container.metadata.update(self._metadata)
        except Exception as exc:
            _close_quietly(container)
            raise SetupError(
                f"muxer {plan.muxer!r} cannot take these streams: {describe_error(exc)}", plan.where
            ) from exc
        return container

    def start(self) -> None:
        """Write the header: for network outputs this connects, and may take a while or fail.

        Raises:
            SetupError: the muxer refused the streams, or the destination could not be reached.
        """
        collector = _WarningCollector()
        av_log = logging.getLogger("av.container.output")
        av_log.addHandler(collector)
        try:
            self.container.start_encoding()
        except Exception as exc:
            self.abort()
            if self.plan.live:
                raise SetupError(f"cannot reach the destination: {describe_error(exc)}", self.plan.where) from exc
            field = "format" if self.plan.where == "destination" else self.plan.where + ".format"
            raise SetupError(f"muxer {self.plan.muxer!r} refused the streams: {describe_error(exc)}", field) from exc
        finally:
            av_log.removeHandler(collector)
        self.warnings.extend(f"open options: {m}" for m in collector.messages)

    def mux(self, packet: av.Packet[Any], index: int, copy: bool = True) -> None:
        """Mux ``packet`` of stream ``index`` (a copy of it unless ``copy`` is False: the muxer
        rescales a packet's timestamps in place, and the other outputs need them as they were).

        Raises:
            Exception: whatever FFmpeg raised (a network destination that dropped: EPIPE, ...).
        """
        out = copy_packet(packet) if copy else packet
        out.stream = self.streams[index]
        self.container.mux_one(out)
        self.packets += 1
        self.bytes += packet.size

    def close(self) -> None:
        """Write the trailer and close. Runs once."""
        if self.closed:
            return
        self.closed = True
        try:
            self.container.close()
        finally:
            self._close_files()

    def abort(self) -> None:
        """Close without caring whether the trailer could be written (a broken output)."""
        self.closed = True
        _close_quietly(self.container)
        self._close_files()

    def _close_files(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None

    def reopen(self) -> None:
        """Open the destination again after it dropped: a new container, the same streams, a new
        header (which connects).

        Raises:
            SetupError: still unreachable.
        """
        self.abort()
        self.closed = False
        self.container = self._open()
        self.start()

    def stats(self) -> OutputStats:
        return OutputStats(self.packets, self.bytes, self.dropped, self.reconnects)

    def disk_bytes(self) -> int:
        """The bytes this output's files take on disk now: a server file's size (or what was muxed
        into it, when more: a muxer keeps up to a cluster or fragment before writing it), an HLS
        or DASH output's playlist and segments; 0 for the rest."""
        segments = self.plan.segments
        if segments is not None:
            return segments.disk_bytes()
        if self.plan.target == "file" and self.plan.path is not None:
            try:
                return max(self.bytes, os.stat(self.plan.path).st_size)
            except FileNotFoundError:
                return self.bytes
        return 0


def copy_packet(packet: av.Packet[Any]) -> av.Packet[Any]:
    """A copy of ``packet``: its bytes, timestamps, key flag, side data and stream (muxing one
    rescales its timestamps in place, and the next output needs them as the encoder made them).
    Side data matters at the end: FLAC's last packet carries the final STREAMINFO, which the
    muxer writes back into the file's header."""
    out: av.Packet[Any] = av.Packet(bytes(packet))
    out.pts, out.dts, out.time_base, out.duration = packet.pts, packet.dts, packet.time_base, packet.duration
    out.is_keyframe = packet.is_keyframe
    for side_data in packet.iter_sidedata():
        out.set_sidedata(side_data)
    out.stream = packet.stream
    return out


def _close_quietly(container: av.container.OutputContainer) -> None:
    try:
        container.close()
    except Exception:  # the output is broken already; the original error is what matters
        log.debug("closing a half-open output failed", exc_info=True)
