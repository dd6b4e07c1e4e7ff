"""``StreamWriter``: torchaudio's StreamWriter, with the encoding done by a framecast server."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import DATA_OPCODES, CloseCode, Frame, Opcode
from websockets.protocol import Event, State
from websockets.sync.client import ClientConnection, connect

from . import progress
from .base import BaseStreamWriter
from .errors import FramecastError, StateError, TransportError
from .outgoing import send_data_frames
from .rest import RestClient
from .sockets import OPEN_TIMEOUT, loopback_socket
from .writer_base import Backoff, WriterState, close_code, download_directory, fatal_close

T = TypeVar("T")


class StreamWriter(BaseStreamWriter):
    """Encode audio and video chunks into a file, a file-like object, or a server-side file.

    The surface is torchaudio.io.StreamWriter's: configure streams, ``open()``, write chunks,
    ``close()``. The encoding runs on a framecast server; for a local path or a file-like ``dst``
    the encoded bytes come back and land exactly where a local StreamWriter would have put them.
    The arguments are described at ``__init__`` (``BaseStreamWriter``, which AsyncStreamWriter
    shares).

    Server messages are applied on the thread that receives them (``on_event`` and the
    ``event_hooks`` run there); a second thread waits for the connection to drop and reconnects.
    The hooks time each chunk, for instance from send to ACK (encoded and muxed)::

        sent, acked = {}, {}
        writer = StreamWriter("out.mp4", event_hooks={
            "send": [lambda seq, stream, seconds, t: sent.setdefault(seq, t)],
            "ack": [lambda seq, t: acked.setdefault(seq, t)],  # cumulative: seq and all before it
        })

    Errors the server reports for a chunk are raised by that write or a following one, at the
    latest by ``close()``; nothing fails silently.
    """

    def _init_io(self) -> None:
        self._rest: RestClient | None = None
        self._ws: ClientConnection | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Condition()  # guards the core; signalled on every change
        self._send_lock = threading.Lock()  # one sender at a time, and no send during a reconnect
        self._early: list[tuple[ClientConnection, str | bytes]] | None = []  # until open() is done

    def _locked(self) -> threading.Condition:
        return self._lock

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self, option: dict[str, str] | None = None) -> StreamWriter:
        """Create the session on the server and connect to it. Returns self (a context manager).

        Args:
            option: muxer options (e.g. ``{"movflags": "frag_keyframe+empty_moov"}``), for a
                single destination (with several, each ``framecast.Output`` has its own).

        Raises:
            InvalidConfig: the server refused the configuration; the message names the field.
        """
        self._rest = RestClient(self._server, self._api_key)
        config = self._session_config(option, self._rest.server)
        try:
            created = self._rest.create_session(config)
            self._ws = _connect(created["stream_url"], created["token"], self._rest.headers, self._on_message)
        except BaseException:
            self._rest.close()
            raise
        with self._lock:  # messages that came before this wait in _early, and are applied first
            self._core.opened(created)
            early, self._early = self._early, None
            for ws, message in early or []:
                self._on_message(ws, message)
        self._reader = threading.Thread(target=self._read, name="framecast-reader", daemon=True)
        self._reader.start()
        return self

    # -- the connection: reading, reconnecting, sending -----------------------------------------

    def _on_message(self, ws: ClientConnection, message: str | bytes) -> None:
        """Apply one message from the server, on the thread that received it (``_Connection``).

        Never raises: what goes wrong breaks the writer (``_broken``), and later messages are
        ignored, as a reader thread that stopped would have left them unread.
        """
        if self._broken is not None:
            return
        try:
            with self._lock:
                if self._early is not None:  # open() has not taken the session yet
                    self._early.append((ws, message))
                    return
                self._core.handle(message)
                self._lock.notify_all()
            # Confirmations go out when no chunk is being sent (websockets allows one sender at a
            # time); otherwise the writer sends them after its message.
            if self._send_lock.acquire(blocking=False):
                try:
                    self._send_outgoing(ws)
                finally:
                    self._send_lock.release()
        except Exception as exc:
            broken = (
                exc
                if isinstance(exc, FramecastError)
                else TransportError(f"handling a message from the server failed: {exc!r}")
            )
            with self._lock:
                self._broken = broken
                self._lock.notify_all()

    def _read(self) -> None:
        """Wait for the connection to end (messages are applied as they arrive, by
        ``_on_message``); when it drops, reconnect and resend."""
        try:
            while True:
                ws = self._ws
                assert ws is not None
                try:
                    for message in ws:  # none come this way unless a connection bypassed _on_message
                        self._on_message(ws, message)
                    code = ws.close_code
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                except OSError:  # the socket went away under websockets: a lost connection too
                    code = None
                if self._core.done or self._closed_by_user or self._broken is not None:
                    return
                self._broken = self._core.lost_connection(code, self._reconnect)
                if self._broken is not None:
                    return
                if not self._reconnect_and_resend():
                    return
        except FramecastError as exc:
            self._broken = exc
        finally:
            with self._lock:
                if not self._core.done and self._broken is None and not self._closed_by_user:
                    self._broken = TransportError("connection to the framecast server closed unexpectedly")
                self._lock.notify_all()

    def _reconnect_and_resend(self) -> bool:
        """Reconnect with capped exponential backoff; resend everything not yet acknowledged."""
        backoff = Backoff(self._reconnect_timeout, time.monotonic)
        while not self._closed_by_user:
            ws: ClientConnection | None = None
            try:
                with self._send_lock:
                    assert self._rest is not None
                    ws = _connect(
                        self._core.session["stream_url"],
                        self._core.session["token"],
                        self._rest.headers,
                        self._on_message,
                    )
                    with self._lock:
                        backlog = self._core.resend()
                    for message in backlog:
                        ws.send(message)
                    old, self._ws = self._ws, ws
                    self._generation += 1
                if old is not None:
                    old.close()
                with self._lock:
                    self.reconnects += 1
                    self._lock.notify_all()
                return True
            except (TransportError, ConnectionClosed, OSError) as exc:
                code = close_code(exc, ws)
                if ws is not None and ws is not self._ws:
                    with contextlib.suppress(Exception):
                        ws.close()
                if fatal_close(code):  # the reopened connection was refused (a replica without the session)
                    self._broken = self._core.lost_connection(code, False)
                    return False
                delay = backoff.next_delay()
                if delay is None:
                    self._broken = backoff.gave_up(exc)
                    return False
                time.sleep(delay)
        return False

    def _send_outgoing(self, ws: ClientConnection) -> None:
        """Send pending control messages (output confirmations); the caller holds the send lock.
        Most sends have none: that is seen without the core's lock (a confirmation queued
        meanwhile goes with the next send, or from the reading thread that queued it)."""
        if not self._core.has_outgoing:
            return
        with self._lock:
            outgoing = self._core.take_outgoing()
        for text in outgoing:
            _send_if_open(ws, text)

    def _send(self, fragments: Any) -> None:
        """Send one message. If the connection is down, the reconnect resends it (it is pending)."""
        with self._send_lock:
            generation = self._generation
            assert self._ws is not None
            try:
                self._ws.send(fragments)
                self._send_outgoing(self._ws)
                return
            except (ConnectionClosed, OSError):  # OSError: the socket closed under websockets
                if not self._reconnect:
                    self._check()
                    raise TransportError("connection to the framecast server closed") from None
        self._wait(lambda: self._generation != generation, "reconnect")

    # -- writing --------------------------------------------------------------------------------

    def write_audio_chunk(self, i: int, chunk: Any, pts: float | None = None) -> None:
        """Write (frames, channels) audio to stream ``i``; ``pts`` in seconds overrides the time."""
        self._write(i, chunk, pts, "audio")

    def write_video_chunk(self, i: int, chunk: Any, pts: float | None = None) -> None:
        """Write (frames, channels, height, width) uint8 video to stream ``i``."""
        self._write(i, chunk, pts, "video")

    def _write(self, i: int, chunk: Any, pts: float | None, kind: str) -> None:
        # The core's lock is taken three times a write (checked and split; each message once the
        # window is open; retained and checked): the reading thread takes it for every ACK.
        with self._lock:
            self._check()
            messages = self._core.chunk_messages(i, chunk, pts, kind)
        shown = progress.bar(self._progress, len(messages), "msg", f"stream {i}")
        try:
            for message in messages:
                fragments = self._wait(
                    functools.partial(self._core.window_open, message),
                    "write",
                    functools.partial(self._core.sending, message),
                )
                self._send(fragments)
                shown.update()
        except BaseException:
            shown.close()
            self._returning(check=False)
            raise
        shown.close()
        self._returning(check=True)

    def _returning(self, check: bool) -> None:
        """A write returns: the caller may reuse its array, so the payloads still in flight that
        borrow it are copied (to resend after a reconnect); then, if ``check``, what the server
        reported is raised."""
        with self._lock:
            if self._reconnect:
                self._core.retain()
            if check:
                self._check()

    def _wait(self, predicate: Callable[[], bool], what: str, then: Callable[[], T] | None = None) -> T | None:
        """Wait until ``predicate()`` holds (checked on every change of the core), at most the
        writer's timeout, then return ``then()``, called under the same hold of the lock; raise why
        the connection broke, if it does."""
        deadline = time.monotonic() + self._timeout
        with self._lock:
            while not predicate():
                if self._broken is not None:
                    raise self._broken
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransportError(f"{what}: no answer from the server within {self._timeout:g} s")
                self._lock.wait(min(remaining, 1.0))
            return then() if then is not None else None

    def flush(self) -> None:
        """Wait until the server has encoded every chunk written so far; raise what it refused."""
        if self._core.state is WriterState.CONFIGURING:
            raise StateError("cannot flush: call open() first")
        self._wait(lambda: self._core.flushed, "flush")
        self._check()

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish the output (flush, trailer) and wait until it is complete. Idempotent."""
        try:
            if self._core.begin_close():
                self._send(self._core.finish_message())
                self._wait(lambda: self._core.done, "close")
        finally:
            self._teardown()
        self._check()

    def _teardown(self) -> None:
        """Close the websocket, stop the reader, release the output and the REST client."""
        self._closed_by_user = True
        if self._ws is not None:
            self._ws.close()
        if self._reader is not None:
            self._reader.join(10)
        self._core.release()
        if self._rest is not None:
            self._rest.close()
            self._rest = None

    def __enter__(self) -> StreamWriter:
        if self._core.state is WriterState.CONFIGURING:
            self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an error is already on its way out: finalize, but don't mask it
            self.close()
        except FramecastError:
            pass

    # -- extras -------------------------------------------------------------------------------

    def download(self, dst: Any) -> int:
        """Copy a closed ServerFile output to ``dst`` (path or binary file object); returns bytes.
        A recording that rotates is several files: ``dst`` is then a directory (made if missing),
        and each file is copied into it under its own name."""
        path = self._core.download_path()
        segments = self._core.download_segments()
        rest = RestClient(self._server, self._api_key)
        try:
            if segments is not None:
                directory = download_directory(dst)
                total = 0
                for name, url in segments:
                    with open(os.path.join(directory, name), "wb") as f:
                        total += rest.download(url, f)
                return total
            if hasattr(dst, "write"):
                return rest.download(path, dst)
            with open(dst, "wb") as f:
                return rest.download(path, f)
        finally:
            rest.close()


def _send_if_open(ws: ClientConnection, text: str) -> None:
    """Send a courtesy message (an output confirmation) unless the connection is closing: a send
    on a closing connection would wait out the whole close timeout."""
    if ws.protocol.state is State.OPEN:
        with contextlib.suppress(ConnectionClosed, TimeoutError, OSError):
            ws.send(text)


class _Connection(ClientConnection):
    """websockets' sync client connection, handing each complete message to ``on_message`` on the
    thread that received it, in order, instead of queueing it for another thread to ``recv()``.

    A real-time chunk gets an ACK a frame later; queued, each one woke a second thread (the
    writer's reader) and passed through websockets' assembler, per frame, per session. Control
    frames (ping, pong, close) and the handshake keep websockets' own handling.

    Data frames leave as framecast serializes them (``outgoing.py``): masked once, with pooled keys.

    ``process_event``, ``protocol_mutex``, ``send_data`` and the protocol's ``send_frame`` and
    ``writes`` are websockets' private API: tests/test_private_apis.py fails with a clear message
    when an upgrade changes them.
    """

    def __init__(self, *args: Any, on_message: Callable[[ClientConnection, str | bytes], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        send_data_frames(self.protocol)
        self._on_message = on_message
        self._fragments: list[Frame] = []
        self._failed = False

    def process_event(self, event: Event) -> None:
        if not isinstance(event, Frame) or event.opcode not in DATA_OPCODES:
            super().process_event(event)
            return
        if self._failed:  # frames that came in the same read as a bad one are not applied
            return
        if event.opcode is not Opcode.CONT:
            self._fragments = []
        self._fragments.append(event)
        if not event.fin:
            return
        fragments, self._fragments = self._fragments, []
        data = fragments[0].data if len(fragments) == 1 else b"".join(f.data for f in fragments)
        if fragments[0].opcode is Opcode.TEXT:
            try:
                message: str | bytes = bytes(data).decode()
            except UnicodeDecodeError:  # as websockets' own receiving does: fail the connection
                self._failed = True
                with self.protocol_mutex:
                    self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
                    self.send_data()
                return
        else:
            message = bytes(data)
        self._on_message(self, message)


def _connect(
    url: str, token: str, headers: dict[str, str], on_message: Callable[[ClientConnection, str | bytes], None]
) -> ClientConnection:
    sock = None
    try:
        sock = loopback_socket(url, OPEN_TIMEOUT)  # a server on this machine: unpaced (sockets.py)
        # connect() is meant as a context manager; entering it by hand keeps the connection
        # open across calls, and ClientConnection.close() ends it.
        ws: ClientConnection = connect(  # type: ignore[call-overload]  # a factory, not the class itself
            url,
            sock=sock,
            additional_headers={**headers, "Authorization": f"Bearer {token}"},
            max_size=None,
            compression=None,
            open_timeout=OPEN_TIMEOUT,
            create_connection=functools.partial(_Connection, on_message=on_message),
        ).__enter__()
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        if sock is not None:
            sock.close()
        raise TransportError(f"cannot open the stream websocket {url}: {exc}") from exc
    # No Nagle: the tail of each message and small control messages go out at once (asyncio,
    # on the server and in AsyncStreamWriter, does the same for its sockets). The peer may already
    # have closed the connection, and the receiving thread the socket, in the meantime: then there
    # is nothing to tune, and the next send or recv reports the close with its code and reason.
    with contextlib.suppress(OSError):
        ws.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ws
