"""``BaseStreamWriter``: the half of StreamWriter and AsyncStreamWriter that does no I/O.

Both writers take the same arguments, configure streams the same way and report the same
properties; only moving bytes differs (threads and a blocking websocket in ``writer.py``, a task
and an asyncio websocket in ``aio.py``). This class holds the shared half, as httpx's BaseClient
does for Client and AsyncClient; the I/O methods are twins with the same names, in the same
order, in the two modules. The state both halves act on is a ``WriterCore`` (``writer_base.py``).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from . import compression as compress
from .errors import FramecastError, InvalidConfig
from .rest import on_this_machine, wants_shared_memory
from .streams import AudioStream, VideoStream
from .writer_base import EventHooks, WriterCore, checked_hooks


class BaseStreamWriter(abc.ABC):
    """What both writers share: arguments, configuration calls, properties (no I/O).

    Not used on its own: construct a :class:`framecast.StreamWriter` or a
    :class:`framecast.AsyncStreamWriter`.
    """

    def __init__(
        self,
        dst: Any,
        format: str | None = None,
        *,
        server: str | None = None,
        api_key: str | None = None,
        timeout: float = 300.0,
        realtime: bool | None = None,
        connect_timeout: float | None = None,
        reconnect: bool = True,
        reconnect_timeout: float = 30.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_destination_drop: str | None = None,
        progress: bool = False,
        shared_memory: bool | None = None,
        compression: str = "none",
        event_hooks: Mapping[str, Sequence[Callable[..., object]]] | None = None,
    ) -> None:
        """Describe the output; nothing is sent until ``open()``.

        Args:
            dst: a local path, a writable file-like object (``write`` required, ``seek`` used
                when it is seekable), a URL (``rtmp://``, ``udp://``, ... the server connects to
                it), ``framecast.ServerFile("dir/name.mp4")`` for a file on the server, or
                ``framecast.Discard()``. Or a list of these, to write to several destinations
                at once (the server encodes once and muxes into each), where any element may be
                a ``framecast.Output(dst, format=..., options=..., required=...)`` with settings
                of its own; a local path or file-like object may appear once (its bytes come
                back over this writer's connection). A destination that fails for good is an
                ``output_failed`` event and the others go on, unless it is ``required``.
            format: muxer name; default: guessed from the file name (required for file-like
                objects without a name). For a single destination: with several, each
                ``framecast.Output`` names its own.
            server: base URL of the framecast server; default $FRAMECAST_SERVER, else
                http://127.0.0.1:8000.
            api_key: API key for servers that require one (else $FRAMECAST_API_KEY).
            timeout: seconds to wait for the server to acknowledge a flush or finish a close.
            realtime: send packets at media time (as ``ffmpeg -re``); default: on for network
                URLs (``rtmp://``, ``udp://``, ...), off for files; on when any of several
                destinations is a network URL.
            connect_timeout: seconds a network destination may take to connect, or take
                nothing while it streams, before it counts as unreachable (it fails, or is
                reconnected if it had connected); default: the server's setting.
            reconnect: when the websocket drops, reconnect with backoff and resend every chunk
                the server has not acknowledged (it drops duplicates), so the output holds each
                chunk once. Costs a copy of what is in flight when a write returns.
            reconnect_timeout: seconds to keep trying to reconnect (keep it under the server's
                resume timeout, 30 s by default, after which it finalizes the session).
            on_event: called with each session event the server reports:
                ``{"event": "reconnecting", "attempt": 2, "reason": ...}`` and so on; an event
                about one of several destinations names it by index, ``"output": 1``.
            on_destination_drop: for network URLs, what happens while the server reconnects a
                destination that dropped: ``"drop"`` (default: live semantics, a few seconds are
                kept and older media is dropped and counted) or ``"block"`` (writes wait until
                it is back). With several destinations, the default of each ``Output``.
            progress: show a tqdm progress bar while a chunk too large for one message is sent
                (needs tqdm installed).
            shared_memory: put chunk payloads into shared memory the server offers, instead of
                the websocket: one copy instead of several, for a client on the server's
                machine. Default: ask when the server URL is a loopback address; the server
                decides, and without it (or if it cannot be opened) payloads go over the
                websocket.
            compression: ``"zstd"`` sends video payloads as zstd frames where that makes them at
                least 10% smaller (lossless; the server's encoder process decompresses them), for
                a link slower than this machine's CPU: rendered and synthetic frames shrink tens
                of times for about a millisecond a 720p frame, camera-like ones about 1.5 times
                for 10-15 ms. ``"auto"``: zstd when the server is on another machine and the
                zstandard package is installed. ``"none"`` (default): never. Not with shared
                memory, which moves no bytes over the link.
            event_hooks: callables run as chunk messages come and go, by name, as httpx's
                ``event_hooks`` (``{"ack": [fn]}``; also the ``event_hooks`` property, whose
                lists may be appended to before or after ``open()``):

                - ``"send"``: ``fn(seq, stream, seconds, time)`` just before a CHUNK message is
                  first sent (not when it is resent after a reconnect): its sequence number,
                  stream index and media seconds.
                - ``"ack"``: ``fn(seq, time)`` when an ACK arrives. ACKs are cumulative: every
                  chunk up to ``seq`` is encoded and muxed (for real-time sessions, once its
                  last frame has left at media time). An ACK repeated after a reconnect is
                  reported again.

                ``time`` is ``time.perf_counter()`` then. Hooks run on the thread (or task) that
                sends or receives the message, and the writer waits for them: keep them short.
                An exception from a hook breaks the writer, like a lost connection.

        Raises:
            InvalidConfig: ``dst`` is none of the above (an element of a list is named by its
                index: ``dst[2]``), ``format`` is given with several destinations,
                ``event_hooks`` names an unknown hook, or ``compression`` is unknown (or "zstd"
                without the zstandard package).
        """
        compress.check_mode(compression)
        self._core = WriterCore(
            dst, format, realtime=realtime, connect_timeout=connect_timeout, on_destination_drop=on_destination_drop
        )
        self._core.on_event = on_event
        self._core.hooks = checked_hooks(event_hooks)
        self._server = server
        self._api_key = api_key
        self._timeout = timeout
        self._reconnect = reconnect
        self._reconnect_timeout = reconnect_timeout
        self._progress = progress
        self._shared_memory = shared_memory
        self._compression = compression
        self._broken: FramecastError | None = None  # why the connection cannot go on, once it cannot
        self._closed_by_user = False
        self._generation = 0  # bumped on every successful reconnect
        #: How many times the websocket was re-established after dropping.
        self.reconnects = 0
        self._init_io()

    @abc.abstractmethod
    def _init_io(self) -> None:
        """Set up what the writer's I/O needs (locks, the socket and REST client to come)."""

    # -- configuration (torchaudio's signatures) -----------------------------------------------

    def add_audio_stream(
        self,
        sample_rate: int,
        num_channels: int,
        format: str = "flt",
        *,
        encoder: str | None = None,
        encoder_option: dict[str, Any] | None = None,
        encoder_format: str | None = None,
        encoder_sample_rate: int | None = None,
        encoder_num_channels: int | None = None,
        codec_config: Any = None,
        filter_desc: str | None = None,
    ) -> None:
        """Add an audio stream; chunks are (frames, num_channels) arrays of ``format``'s dtype."""
        self._core.add_stream(
            AudioStream(
                sample_rate,
                num_channels,
                format,
                encoder,
                encoder_option,
                encoder_format,
                encoder_sample_rate,
                encoder_num_channels,
                codec_config,
                filter_desc,
            )
        )

    def add_video_stream(
        self,
        frame_rate: float | str,
        width: int,
        height: int,
        format: str = "rgb24",
        *,
        encoder: str | None = None,
        encoder_option: dict[str, Any] | None = None,
        encoder_format: str | None = None,
        encoder_frame_rate: float | str | None = None,
        encoder_width: int | None = None,
        encoder_height: int | None = None,
        hw_accel: str | None = None,
        codec_config: Any = None,
        filter_desc: str | None = None,
        wire_format: str | None = None,
    ) -> None:
        """Add a video stream; chunks are (frames, channels, height, width) uint8 arrays.

        ``wire_format`` (not in torchaudio): ``"yuv420p"`` converts RGB frames to yuv420p here
        before sending (half the bytes; where the server would convert them so anyway: its
        encoder takes yuv420p at the same size and rate, without ``filter_desc``), on the
        tensor's own device; ``"auto"`` lets the server say whether that applies; ``"rgb24"``
        sends them as they are. Default: ``"auto"`` when the payloads go over the websocket
        (no shared memory), else as they are. ``writer.wire_formats`` says what was agreed.
        """
        if hw_accel is not None:
            raise InvalidConfig(
                "hw_accel is not supported: frames are encoded on the server; "
                "choose a hardware encoder there with encoder= if it has one",
                field="hw_accel",
            )
        self._core.add_stream(
            VideoStream(
                frame_rate,
                width,
                height,
                format,
                encoder,
                encoder_option,
                encoder_format,
                encoder_frame_rate,
                encoder_width,
                encoder_height,
                codec_config,
                filter_desc,
                wire_format,
            )
        )

    def set_metadata(self, metadata: dict[str, str]) -> None:
        """Set container metadata (title, artist, ...); call before open()."""
        self._core.set_metadata(metadata)

    # -- shared by the I/O twins ----------------------------------------------------------------

    def _session_config(self, option: dict[str, str] | None, server: str) -> dict[str, Any]:
        """The body of POST /v1/sessions, for a server at ``server``."""
        shared = wants_shared_memory(self._shared_memory, server)
        compressed = compress.wanted(self._compression, on_this_machine(server), shared)
        return self._core.session_config(option, shared, compressed)

    def _locked(self) -> AbstractContextManager[Any]:
        """Held while reading or changing the core. The async writer runs on one thread and
        needs nothing; StreamWriter returns its lock."""
        return contextlib.nullcontext()

    def _check(self) -> None:
        """Raise what the server reported (a refused chunk, the session's failure), else why the
        connection broke, if it did and the session is not done."""
        with self._locked():
            self._core.raise_pending()
            if self._broken is not None and not self._core.done:
                raise self._broken

    # -- properties -----------------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The server's id for this writer's session (None before open())."""
        return self._core.session.get("id")

    @property
    def wire_formats(self) -> list[str]:
        """How each stream's frames cross the wire, as agreed at open(): ``"yuv420p"`` where this
        writer converts RGB video before sending, else the stream's own format (audio: its format)."""
        formats = list(self._core.wire_formats)
        return [f or s.format for f, s in zip(formats, self._core.streams)]

    @property
    def compression(self) -> str:
        """``"zstd"`` when this writer's session takes compressed video payloads (asked for and
        agreed at open()), else ``"none"``."""
        return "zstd" if self._core.compressor is not None else "none"

    @property
    def shared_memory(self) -> bool:
        """Whether chunk payloads go through the server's shared memory (granted and opened)."""
        return self._core.shared is not None

    @property
    def events(self) -> list[dict[str, Any]]:
        """Session events so far (connected, reconnecting, recovered, dropped, finalized, ...)."""
        with self._locked():
            return list(self._core.events)

    @property
    def summary(self) -> dict[str, Any] | None:
        """The server's final account of the session (counters per stream), after close()."""
        return self._core.summary

    @property
    def playback_url(self) -> str | None:
        """Where a player (hls.js, Safari, ffplay, VLC) fetches the session's HLS or DASH playlist,
        with this writer's API key as a bearer token: from open() on; None without such a
        destination. A path the server gives is made absolute with ``server``."""
        url = self._core.session.get("playback_url")
        if not isinstance(url, str):
            return None
        if "://" in url or self._server is None:
            return url
        return self._server.rstrip("/") + url

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """Each destination as the server last reported it (index, destination, format,
        required, state, error, counters, events): from open() on, and the final account after
        close(). [] before open(), and from a server that does not report them."""
        with self._locked():
            return self._core.outputs

    @property
    def event_hooks(self) -> EventHooks:
        """The hooks by name (``"send"``, ``"ack"``; see the constructor), as lists to append to."""
        return self._core.hooks

    @event_hooks.setter
    def event_hooks(self, hooks: Mapping[str, Sequence[Callable[..., object]]]) -> None:
        self._core.hooks = checked_hooks(hooks)

    def __repr__(self) -> str:
        return self._core.describe(type(self).__name__)
