"""A WHIP endpoint (RFC 9725) for tests, built on aiohttp and aiortc: what a browser-facing media
server (MediaMTX, LiveKit, Janus) does with a WHIP publisher, on 127.0.0.1.

``POST /whip`` with an SDP offer (``application/sdp``) is answered ``201 Created`` with the SDP
answer and a ``Location``; ``DELETE`` of that location ends the session. The media arrives over
ICE/DTLS/SRTP and aiortc decodes it: the endpoint keeps every video frame's stamp (``media.read_stamp``)
and counts the audio. ``token`` makes it demand ``Authorization: Bearer <token>`` (401 otherwise);
``fail`` makes it answer every POST with that status.

aioice offers no loopback candidates of its own; FFmpeg's WHIP muxer uses the first host candidate
of the answer, so the endpoint offers 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from .media import read_stamp

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


@dataclass
class Received:
    """What one WHIP session delivered."""

    authorization: str | None
    stamps: list[int] = field(default_factory=list)
    video_size: tuple[int, int] | None = None
    audio_samples: int = 0
    audio_rate: int | None = None
    audio_channels: int | None = None
    deleted: bool = False


class WhipEndpoint:
    """The endpoint, on a thread of its own with its own event loop, on a free loopback port."""

    def __init__(self, token: str | None = None, fail: int | None = None) -> None:
        self.token, self.fail = token, fail
        self.sessions: list[Received] = []
        self.posts = 0
        self._peers: dict[str, tuple[RTCPeerConnection, list[asyncio.Task[None]]]] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="whip-endpoint", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        """The endpoint as framecast takes it (``whip+http://``)."""
        return f"whip+http://127.0.0.1:{self.port}/whip"

    def start(self) -> WhipEndpoint:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the WHIP endpoint did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/whip", self._post)
        app.router.add_delete("/whip/{sid}", self._delete)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._ready.set()
        self._loop.run_forever()

    async def _post(self, request: web.Request) -> web.Response:
        self.posts += 1
        if self.fail is not None:
            return web.Response(status=self.fail, text="refused by the test\n")
        authorization = request.headers.get("Authorization")
        if self.token is not None and authorization != f"Bearer {self.token}":
            return web.Response(status=401, text="unauthorized\n")
        if request.content_type != "application/sdp":
            return web.Response(status=415, text="expected application/sdp\n")
        received = Received(authorization)
        self.sessions.append(received)
        peer = RTCPeerConnection()
        tasks: list[asyncio.Task[None]] = []
        sid = uuid.uuid4().hex[:12]
        self._peers[sid] = (peer, tasks)

        @peer.on("track")
        def _track(track: Any) -> None:
            tasks.append(asyncio.ensure_future(self._consume(track, received)))

        await peer.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        await peer.setLocalDescription(await peer.createAnswer())
        return web.Response(
            status=201,
            body=peer.localDescription.sdp.encode(),
            content_type="application/sdp",
            headers={"Location": f"/whip/{sid}"},
        )

    @staticmethod
    async def _consume(track: Any, received: Received) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                received.video_size = (frame.width, frame.height)
                received.stamps.append(read_stamp(frame.to_ndarray(format="rgb24")))
            else:
                received.audio_samples += frame.samples
                received.audio_rate = frame.sample_rate
                received.audio_channels = len(frame.layout.channels)

    async def _delete(self, request: web.Request) -> web.Response:
        entry = self._peers.pop(request.match_info["sid"], None)
        if entry is None:
            return web.Response(status=404)
        peer, tasks = entry
        await asyncio.sleep(0.3)  # the last packets sent before the DELETE
        await peer.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.sessions[-1].deleted = True
        return web.Response(status=200)

    def wait_deleted(self, timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sessions and self.sessions[-1].deleted:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        async def stop() -> None:
            for peer, _ in self._peers.values():
                await peer.close()
            await self._runner.cleanup()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(15)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)

    def __enter__(self) -> WhipEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
