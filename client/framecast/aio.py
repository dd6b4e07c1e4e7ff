"""``AsyncStreamWriter``: the StreamWriter surface for asyncio code.

Configuration calls (``add_audio_stream``, ``add_video_stream``, ``set_metadata``) are plain
methods; everything that talks to the server is a coroutine. ``async with writer.open():`` works
like StreamWriter's ``with writer.open():``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State

from . import progress
from .base import BaseStreamWriter
from .errors import FramecastError, StateError, TransportError
from .outgoing import send_data_frames
from .rest import AsyncRestClient
from .sockets import OPEN_TIMEOUT, loopback_socket_async
from .writer_base import Backoff, WriterCore, WriterState, close_code, download_directory, fatal_close


class _OpenAwaitable:
    """What ``AsyncStreamWriter.open()`` returns: await it, or use it in ``async with``."""

    def __init__(self, writer: AsyncStreamWriter, option: dict[str, str] | None) -> None:
        self._writer = writer
        self._option = option

    def __await__(self) -> Any:
        return self._writer._open(self._option).__await__()

    async def __aenter__(self) -> AsyncStreamWriter:
        return await self._writer._open(self._option)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self._writer.__aexit__(exc_type, exc, tb)


class AsyncStreamWriter(BaseStreamWriter):
    """Asyncio twin of :class:`framecast.StreamWriter`: same arguments (see ``__init__``), same
    behaviour; the methods that talk to the server are coroutines.

    Server messages are applied by a task the writer starts at ``open()``; ``on_event`` and the
    ``event_hooks`` run in it (and ``send`` hooks in the task that writes).
    """

    def _init_io(self) -> None:
        self._rest: AsyncRestClient | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # set on every change of the core
        self._send_lock = asyncio.Lock()  # one sender at a time, and no send during a reconnect

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self, option: dict[str, str] | None = None) -> _OpenAwaitable:
        """Create the session and connect: ``await w.open()`` or ``async with w.open():``.

        Args:
            option: muxer options (e.g. ``{"movflags": "frag_keyframe+empty_moov"}``), for a
                single destination (with several, each ``framecast.Output`` has its own).

        Raises:
            InvalidConfig: the server refused the configuration; the message names the field.
        """
        return _OpenAwaitable(self, option)

    async def _open(self, option: dict[str, str] | None) -> AsyncStreamWriter:
        self._rest = AsyncRestClient(self._server, self._api_key)
        config = self._session_config(option, self._rest.server)
        try:
            created = await self._rest.create_session(config)
            self._ws = await self._connect(created)
        except BaseException:
            await self._rest.aclose()
            raise
        self._core.opened(created)
        self._reader = asyncio.create_task(self._read())
        return self

    # -- the connection: reading, reconnecting, sending -----------------------------------------

    async def _connect(self, created: dict[str, Any]) -> ClientConnection:
        """Open the session's stream websocket (``created`` is the body of POST /v1/sessions)."""
        assert self._rest is not None
        sock = None
        try:
            sock = await loopback_socket_async(created["stream_url"], OPEN_TIMEOUT)  # unpaced (sockets.py)
            ws = await connect(
                created["stream_url"],
                sock=sock,
                additional_headers={**self._rest.headers, "Authorization": f"Bearer {created['token']}"},
                max_size=None,
                compression=None,
                open_timeout=OPEN_TIMEOUT,
            )
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            if sock is not None:
                sock.close()
            raise TransportError(f"cannot open the stream websocket {created['stream_url']}: {exc}") from exc
        send_data_frames(ws.protocol)  # data frames serialized by framecast (outgoing.py)
        return ws

    async def _read(self) -> None:
        """Apply what the server sends; when the connection drops, reconnect and resend."""
        try:
            while True:
                ws = self._ws
                assert ws is not None
                try:
                    async for message in ws:
                        _handle(self._core, message)
                        self._changed.set()
                        if not self._send_lock.locked():  # else the writer sends them after its message
                            async with self._send_lock:
                                await self._send_outgoing(ws)
                    code = ws.close_code
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                except OSError:  # the socket went away under websockets: a lost connection too
                    code = None
                if self._core.done or self._closed_by_user:
                    return
                self._broken = self._core.lost_connection(code, self._reconnect)
                if self._broken is not None:
                    return
                if not await self._reconnect_and_resend():
                    return
        except FramecastError as exc:
            self._broken = exc
        finally:
            if not self._core.done and self._broken is None and not self._closed_by_user:
                self._broken = TransportError("connection to the framecast server closed unexpectedly")
            self._changed.set()

    async def _reconnect_and_resend(self) -> bool:
        """Reconnect with capped exponential backoff; resend everything not yet acknowledged."""
        backoff = Backoff(self._reconnect_timeout, asyncio.get_running_loop().time)
        while not self._closed_by_user:
            ws: ClientConnection | None = None
            try:
                async with self._send_lock:
                    ws = await self._connect(self._core.session)
                    for message in self._core.resend():
                        await ws.send(message)
                    old, self._ws = self._ws, ws
                    self._generation += 1
                if old is not None:
                    await old.close()
                self.reconnects += 1
                self._changed.set()
                return True
            except (TransportError, ConnectionClosed, OSError) as exc:
                code = close_code(exc, ws)
                if ws is not None and ws is not self._ws:
                    with contextlib.suppress(Exception):
                        await ws.close()
                if fatal_close(code):  # the reopened connection was refused (a replica without the session)
                    self._broken = self._core.lost_connection(code, False)
                    return False
                delay = backoff.next_delay()
                if delay is None:
                    self._broken = backoff.gave_up(exc)
                    return False
                await asyncio.sleep(delay)
        return False

    async def _send_outgoing(self, ws: ClientConnection) -> None:
        """Send pending output confirmations unless the connection is closing (the caller holds
        the send lock; a send on a closing connection would wait out the close timeout)."""
        for text in self._core.take_outgoing():
            if ws.protocol.state is State.OPEN:
                with contextlib.suppress(ConnectionClosed, TimeoutError, OSError):
                    await ws.send(text)

    async def _send(self, fragments: Any) -> None:
        """Send one message. If the connection is down, the reconnect resends it (it is pending)."""
        async with self._send_lock:
            generation = self._generation
            assert self._ws is not None
            try:
                await self._ws.send(fragments)
                await self._send_outgoing(self._ws)
                return
            except (ConnectionClosed, OSError):  # OSError: the socket closed under websockets
                if not self._reconnect:
                    self._check()
                    raise TransportError("connection to the framecast server closed") from None
        await self._wait(lambda: self._generation != generation, "reconnect")

    # -- writing --------------------------------------------------------------------------------

    async def write_audio_chunk(self, i: int, chunk: Any, pts: float | None = None) -> None:
        """Write (frames, channels) audio to stream ``i``; ``pts`` in seconds overrides the time."""
        await self._write(i, chunk, pts, "audio")

    async def write_video_chunk(self, i: int, chunk: Any, pts: float | None = None) -> None:
        """Write (frames, channels, height, width) uint8 video to stream ``i``."""
        await self._write(i, chunk, pts, "video")

    async def _write(self, i: int, chunk: Any, pts: float | None, kind: str) -> None:
        self._check()
        messages = self._core.chunk_messages(i, chunk, pts, kind)
        shown = progress.bar(self._progress, len(messages), "msg", f"stream {i}")
        try:
            for message in messages:
                await self._wait(functools.partial(self._core.window_open, message), "write")
                await self._send(self._core.sending(message))
                shown.update()
        finally:
            shown.close()
            if self._reconnect:
                self._core.retain()  # the caller may reuse its array once we return
        self._check()

    async def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait until ``predicate()`` holds (checked on every change of the core), at most the
        writer's timeout; raise why the connection broke, if it does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while not predicate():
            if self._broken is not None:
                raise self._broken
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TransportError(f"{what}: no answer from the server within {self._timeout:g} s")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))

    async def flush(self) -> None:
        """Wait until the server has encoded every chunk written so far; raise what it refused."""
        if self._core.state is WriterState.CONFIGURING:
            raise StateError("cannot flush: call open() first")
        await self._wait(lambda: self._core.flushed, "flush")
        self._check()

    # -- closing --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Finish the output (flush, trailer) and wait until it is complete. Idempotent."""
        try:
            if self._core.begin_close():
                await self._send(self._core.finish_message())
                await self._wait(lambda: self._core.done, "close")
        finally:
            await self._teardown()
        self._check()

    async def _teardown(self) -> None:
        """Close the websocket, stop the reader, release the output and the REST client."""
        self._closed_by_user = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=10)
        self._core.release()
        if self._rest is not None:
            await self._rest.aclose()
            self._rest = None

    async def __aenter__(self) -> AsyncStreamWriter:
        if self._core.state is WriterState.CONFIGURING:
            await self._open(None)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self.close()
            return
        try:  # an error is already on its way out: finalize, but don't mask it
            await self.close()
        except FramecastError:
            pass

    # -- extras -------------------------------------------------------------------------------

    async def download(self, dst: Any) -> int:
        """Copy a closed ServerFile output to ``dst`` (path or binary file object); returns bytes.
        A recording that rotates is several files: ``dst`` is then a directory (made if missing)."""
        path = self._core.download_path()
        segments = self._core.download_segments()
        rest = AsyncRestClient(self._server, self._api_key)
        try:
            if segments is not None:
                directory = download_directory(dst)
                total = 0
                for name, url in segments:
                    with open(os.path.join(directory, name), "wb") as f:
                        total += await rest.download(url, f)
                return total
            if hasattr(dst, "write"):
                return await rest.download(path, dst)
            with open(dst, "wb") as f:
                return await rest.download(path, f)
        finally:
            await rest.aclose()


def _handle(core: WriterCore, message: str | bytes) -> None:
    """Apply one server message; a failure that is not the SDK's own (an ``on_event`` or hook that
    raised) becomes the TransportError that breaks the writer, as in StreamWriter."""
    try:
        core.handle(message)
    except FramecastError:
        raise
    except Exception as exc:
        raise TransportError(f"handling a message from the server failed: {exc!r}") from exc
