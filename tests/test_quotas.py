"""Quotas and memory on a real server: tiny input asking for huge output is stopped with a clear
reason, within its budget, and the server keeps answering.

Each case of the security issue ("tiny input, huge output") has a test: 16x16 frames upscaled to 8K
rawvideo across a pts gap at 240 fps, audio chunks far apart, filters that multiply frames without
end, filter chains whose output outgrows the size limits, encoders that would need more memory than
a process may have, and many large streams in one session. Budgets are set small through the
settings so that every case ends in seconds; the bounds checked are the output's size on disk and
the encoder process's resident memory (sampled with psutil while it runs).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import httpx
import numpy as np
import psutil
import pytest

from framecast import protocol
from framecast_server import budget
from framecast_server.config import Settings
from framecast_server.models import SessionConfig
from framecast_server.planning.plan import make_plan

from .test_api import chunk, is_ack, is_type, open_ws, recv_until

MiB = 1 << 20


def create(server, streams, path, key: str | None = None, expect: int = 201, **extra):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"destination": {"type": "server_file", "path": path}, "streams": streams, **extra}
    response = httpx.post(server.url + "/v1/sessions", json=body, headers=headers, timeout=60)
    assert response.status_code == expect, response.text
    return response.json()


def create_on(api: httpx.Client, streams, path):
    response = api.post("/v1/sessions", json={"destination": {"type": "server_file", "path": path}, "streams": streams})
    assert response.status_code == 201, response.text
    return response.json()


def failed_reason(ws, timeout: float = 120.0) -> str:
    """Receive until the session fails; its reason (every message on the way is kept in the error)."""
    got = recv_until(ws, is_type("failed"), timeout)
    return got[-1]["reason"]


def file_size(server, path: str) -> int:
    return (server.output_dir / path).stat().st_size


def video_packets(path: Path) -> tuple[int, int, int]:
    """(packets, width, height) of the first video stream: the file's index and trailer are intact
    enough to demux it to the end, and its first frame decodes."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = 0
        first = None
        for packet in container.demux(stream):
            if packet.size:
                packets += 1
                if first is None:
                    first = packet.decode()
        assert first, "no frame decodes"
        return packets, stream.codec_context.width, stream.codec_context.height


class Watch:
    """While a session runs: the encoder's peak resident memory (psutil, every 10 ms) and the
    server's /healthz, asked again and again; every answer must come, and be 200."""

    def __init__(self, server, pid: int) -> None:
        self.server, self.pid = server, pid
        self.peak_rss = 0
        self.health: list[int] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._memory, daemon=True),
            threading.Thread(target=self._healthz, daemon=True),
        ]

    def _memory(self) -> None:
        try:
            process = psutil.Process(self.pid)
            while not self._stop.is_set():
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
                time.sleep(0.01)
        except psutil.Error:  # it exited
            return

    def _healthz(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=10) as client:
            while not self._stop.is_set():
                self.health.append(client.get("/healthz").status_code)
                time.sleep(0.1)

    @contextmanager
    def running(self) -> Iterator[Watch]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(15)
        assert self.health and set(self.health) == {200}, self.health
        assert httpx.get(self.server.url + "/healthz", timeout=10).json()["status"] == "ok"


def test_8k_rawvideo_across_a_pts_gap_stops_at_the_byte_quota(own_server):
    # The first case: 16x16 frames, encoded as 8K rawvideo at 240 fps, with a pts gap
    # that the frame-rate conversion fills with duplicates (50 s: 12000 frames of 100 MB).
    server = own_server(FRAMECAST_MAX_SESSION_BYTES=str(48 * MiB))
    stream = {
        "type": "video",
        "frame_rate": 30,
        "width": 16,
        "height": 16,
        "encoder": "rawvideo",
        "encoder_width": 7680,
        "encoder_height": 4320,
        "encoder_frame_rate": 240,
    }
    created = create(server, [stream], "q/raw8k.nut")
    frame_bytes = 7680 * 4320 * 3  # rawvideo keeps rgb24: 100 MB a frame
    with Watch(server, created["encoder_pid"]).running() as watch:
        ws = open_ws(created)
        ws.send(chunk(0, np.zeros((1, 3, 16, 16), np.uint8), pts=0.0))
        ws.send(chunk(1, np.zeros((1, 3, 16, 16), np.uint8), pts=50.0))
        reason = failed_reason(ws)
        ws.close()
    assert reason == (
        "stopped: output quota of 48 MiB (FRAMECAST_MAX_SESSION_BYTES) reached; the output is finalized up to there"
    )
    # Stopped at the first packet past the quota; the file is finalized and plays.
    assert file_size(server, "q/raw8k.nut") <= 48 * MiB + frame_bytes + MiB
    packets, width, height = video_packets(server.output_dir / "q/raw8k.nut")
    assert (width, height) == (7680, 4320) and 1 <= packets <= 2
    assert watch.peak_rss < 1200 * MiB  # a few 100 MB frames at once, never the gap's 12000
    info = httpx.get(f"{server.url}/v1/sessions/{created['id']}").json()
    assert info["state"] == "failed" and info["error"] == reason
    assert any(e["event"] == "failed" and e["reason"] == reason for e in info["events"])


def test_a_video_gap_filled_by_frame_rate_conversion_counts_against_the_duration_quota(own_server):
    server = own_server(FRAMECAST_MAX_SESSION_SECONDS="20")
    stream = {
        "type": "video",
        "frame_rate": 30,
        "width": 64,
        "height": 48,
        "encoder_frame_rate": 240,
        "encoder_option": {"preset": "ultrafast"},
    }
    created = create(server, [stream], "q/gap.mkv")
    ws = open_ws(created)
    ws.send(chunk(0, np.zeros((1, 3, 48, 64), np.uint8), pts=0.0))
    ws.send(chunk(1, np.zeros((1, 3, 48, 64), np.uint8), pts=59.0))
    reason = failed_reason(ws)
    ws.close()
    assert reason == (
        "stopped: output quota of 20 s of media (FRAMECAST_MAX_SESSION_SECONDS) reached; "
        "the output is finalized up to there"
    )
    packets, _, _ = video_packets(server.output_dir / "q/gap.mkv")
    assert packets == 20 * 240  # exactly the quota's frames at the encoder's rate


def test_a_pts_gap_beyond_the_cap_is_refused_and_the_session_goes_on(own_server):
    server = own_server(FRAMECAST_MAX_PTS_GAP="10")
    # The second case: two one-sample audio chunks with pts 1500 s apart.
    created = create(server, [{"type": "audio", "sample_rate": 48000, "num_channels": 2}], "q/audio.mka")
    ws = open_ws(created)
    ws.send(chunk(0, np.zeros((1, 2), np.float32), pts=0.0))
    ws.send(chunk(1, np.zeros((1, 2), np.float32), pts=1500.0))
    error = recv_until(ws, is_type("error"))[-1]
    assert "chunk 1 for stream 0 (audio)" in error["message"]
    assert "jumps 1499.99" in error["message"] and "at most 10 s (FRAMECAST_MAX_PTS_GAP)" in error["message"]
    ws.send(chunk(2, np.zeros((480, 2), np.float32), pts=9.0))  # within the cap: taken, the gap is silence
    recv_until(ws, is_ack(2))
    ws.send(protocol.encode_control("finish"))
    closed = recv_until(ws, is_type("closed"))[-1]
    ws.close()
    assert closed["session"]["state"] == "closed"
    with av.open(str(server.output_dir / "q/audio.mka")) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert 9 * 48000 <= samples <= 9 * 48000 + 480 + 2048  # silence up to 9 s, then the chunk


def test_a_paced_session_fills_an_allowed_gap_with_silence(api, server):
    # Real time: the pacer holds the gap's silence (in pieces) until it is due.
    response = api.post(
        "/v1/sessions",
        json={
            "destination": {"type": "server_file", "path": "q/paced.mka"},
            "streams": [{"type": "audio", "sample_rate": 8000, "num_channels": 1, "encoder": "pcm_f32le"}],
            "realtime": True,
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    ws = open_ws(created)
    ws.send(chunk(0, np.full((800, 1), 0.25, np.float32), pts=0.0))
    ws.send(chunk(1, np.full((800, 1), 0.25, np.float32), pts=1.5))
    recv_until(ws, is_ack(1))
    ws.send(protocol.encode_control("finish"))
    assert recv_until(ws, is_type("closed"))[-1]["session"]["state"] == "closed"
    ws.close()
    with av.open(str(server.output_dir / "q/paced.mka")) as container:
        pcm = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    loud = np.flatnonzero(np.abs(pcm) > 0.1)
    # 800 samples of sound, 1.4 s of silence, 800 of sound.
    assert pcm.size == 12000 + 800
    assert loud.tolist() == list(range(800)) + list(range(12000, 12800))


def test_silence_for_an_audio_gap_is_written_in_pieces(own_server):
    # 59 s at 384 kHz in 16 channels of float: 1.45 GB as one array; written piece by piece it
    # costs the encoder next to nothing, and the byte quota ends the output.
    server = own_server(FRAMECAST_MAX_SESSION_BYTES=str(64 * MiB))
    stream = {"type": "audio", "sample_rate": 384000, "num_channels": 16, "encoder": "pcm_f32le"}
    created = create(server, [stream], "q/silence.mka")
    with Watch(server, created["encoder_pid"]).running() as watch:
        ws = open_ws(created)
        ws.send(chunk(0, np.zeros((1, 16), np.float32), pts=0.0))
        ws.send(chunk(1, np.zeros((1, 16), np.float32), pts=59.0))
        reason = failed_reason(ws)
        ws.close()
    assert reason.startswith("stopped: output quota of 64 MiB (FRAMECAST_MAX_SESSION_BYTES) reached")
    assert 64 * MiB <= file_size(server, "q/silence.mka") <= 66 * MiB
    assert watch.peak_rss < 400 * MiB


@pytest.mark.parametrize(
    "filter_desc",
    [
        "loop=loop=-1:size=1",  # repeats the first frame forever
        "zoompan=d=100000:s=64x48",  # 100000 frames for every frame in
        "tpad=stop=-1:stop_mode=clone",  # pads forever once the input ends: at finish
    ],
)
def test_filters_that_multiply_frames_stop_at_the_duration_quota(own_server, filter_desc):
    # Not on the built-in filter allowlist; an operator who allows them is still covered.
    server = own_server(FRAMECAST_MAX_SESSION_SECONDS="10", FRAMECAST_EXTRA_FILTERS="loop,zoompan,tpad")
    stream = {
        "type": "video",
        "frame_rate": 25,
        "width": 64,
        "height": 48,
        "filter_desc": filter_desc,
        "encoder_option": {"preset": "ultrafast"},
    }
    path = f"q/{filter_desc.split('=')[0]}.mkv"
    created = create(server, [stream], path)
    ws = open_ws(created)
    ws.send(chunk(0, np.zeros((2, 3, 48, 64), np.uint8)))
    ws.send(protocol.encode_control("finish"))
    reason = failed_reason(ws)
    ws.close()
    assert reason == (
        "stopped: output quota of 10 s of media (FRAMECAST_MAX_SESSION_SECONDS) reached; "
        "the output is finalized up to there"
    )
    packets, _, _ = video_packets(server.output_dir / path)
    assert packets <= 10 * 25


@pytest.mark.parametrize(
    "stream, what",
    [
        (
            {"type": "video", "frame_rate": 30, "width": 16, "height": 16, "filter_desc": "scale=3840:2160"},
            "3840x2160 frames, above this server's limit of 1920x1080 (FRAMECAST_MAX_WIDTH/_HEIGHT)",
        ),
        (
            {"type": "video", "frame_rate": 30, "width": 16, "height": 16, "filter_desc": "pad=2000:16"},
            "2000x16 frames, above this server's limit of 1920x1080 (FRAMECAST_MAX_WIDTH/_HEIGHT)",
        ),
        (
            {"type": "video", "frame_rate": 30, "width": 16, "height": 16, "filter_desc": "zoompan=d=1"},
            "1280x720 frames",
        ),  # zoompan's own default size: within the limits, taken
        (
            {"type": "audio", "sample_rate": 8000, "num_channels": 1, "filter_desc": "aresample=96000"},
            "audio at 96000 Hz, above this server's limit of 48000 Hz (FRAMECAST_MAX_SAMPLE_RATE)",
        ),
    ],
)
def test_filter_chains_whose_output_exceeds_the_limits_are_refused(own_server, stream, what):
    server = own_server(
        FRAMECAST_MAX_WIDTH="1920",
        FRAMECAST_MAX_HEIGHT="1080",
        FRAMECAST_MAX_SAMPLE_RATE="48000",
        FRAMECAST_EXTRA_FILTERS="zoompan,aresample",
    )
    if what == "1280x720 frames":
        created = create(server, [stream], "q/zoompan.mkv")
        assert created["state"] == "created"
        return
    refused = create(server, [stream], "q/refused.mkv", expect=422)["error"]
    assert refused["field"] == "streams.0.filter_desc"
    assert refused["message"] == f"streams.0.filter_desc: the filter chain puts out {what}"


def test_a_filter_whose_output_grows_at_run_time_fails_the_session(own_server):
    server = own_server(FRAMECAST_MAX_WIDTH="1920", FRAMECAST_MAX_HEIGHT="1080")
    # scale evaluated per frame: 64x48 for the probe's first frame, 2560x1920 from the fourth on.
    grow = r"scale=w='if(gt(n\,2)\,2560\,64)':h='if(gt(n\,2)\,1920\,48)':eval=frame"
    stream = {
        "type": "video",
        "frame_rate": 30,
        "width": 64,
        "height": 48,
        "filter_desc": grow,
        "encoder_option": {"preset": "ultrafast"},
    }
    created = create(server, [stream], "q/grow.mkv")
    ws = open_ws(created)
    ws.send(chunk(0, np.zeros((6, 3, 48, 64), np.uint8)))
    reason = failed_reason(ws)
    ws.close()
    assert reason == (
        "encoder error: streams.0.filter_desc: the filter chain put out 2560x1920 frames, "
        "above this server's limit of 1920x1080 (FRAMECAST_MAX_WIDTH/_HEIGHT)"
    )


def test_a_filter_chain_faster_than_the_frame_rate_limit_fails_the_session(api):
    stream = {
        "type": "video",
        "frame_rate": 30,
        "width": 64,
        "height": 48,
        "filter_desc": "fps=1000",
        "encoder_option": {"preset": "ultrafast"},
    }
    created = create_on(api, [stream], "q/fast.mkv")
    ws = open_ws(created)
    ws.send(chunk(0, np.zeros((30, 3, 48, 64), np.uint8)))
    reason = failed_reason(ws)
    ws.close()
    # Frame n comes at n/1000 s: past 240 * (n/1000 + 1) frames, a second of slack included, at n = 316.
    assert reason.startswith(
        "encoder error: streams.0.filter_desc: the filter chain put out 316 frames in 0.315 s "
        "of media, faster than this server's limit of 240 frames per second "
        "(FRAMECAST_MAX_FRAME_RATE)"
    ), reason


def test_sessions_beyond_the_memory_budget_are_refused_with_503(own_server):
    server = own_server(FRAMECAST_MEMORY_BUDGET=str(1024 * MiB))
    hd = {"type": "video", "frame_rate": 30, "width": 16, "height": 16, "encoder_width": 1920, "encoder_height": 1080}
    first = create(server, [hd], "q/hd1.mkv")  # x264 medium at 1080p: ~0.6 GiB estimated
    refused = create(server, [hd], "q/hd2.mkv", expect=503)["error"]
    assert refused["code"] == "over_budget"
    message = refused["message"]
    assert message.startswith("this session needs an estimated ")
    assert "of encoder memory; " in message and "of this server's 1 GiB (FRAMECAST_MEMORY_BUDGET) is left" in message
    # A lighter encoder fits into what is left; once the first session ends, the second fits too.
    create(server, [{**hd, "encoder_option": {"preset": "ultrafast"}}], "q/light.mkv")
    assert httpx.delete(f"{server.url}/v1/sessions/{first['id']}", timeout=60).json()["state"] == "closed"
    create(server, [hd], "q/hd3.mkv")


@pytest.mark.parametrize(
    "streams, extra",
    [
        ([{"type": "video", "frame_rate": 30, "width": 1280, "height": 720}], {}),  # x264 medium, frame threads
        (
            [
                {
                    "type": "video",
                    "frame_rate": 30,
                    "width": 640,
                    "height": 360,
                    "encoder_option": {"preset": "veryfast"},
                },
                {"type": "audio", "sample_rate": 48000, "num_channels": 2},
            ],
            {},
        ),
        (
            [{"type": "video", "frame_rate": 30, "width": 960, "height": 540, "filter_desc": "hflip"}],
            {"realtime": True},
        ),
    ],
)
def test_the_memory_estimate_is_above_what_encoders_hold(api, server, streams, extra):
    # What admission counts must not be less than what an encoder really takes at its peak, here.
    config = {
        "destination": {"type": "server_file", "path": f"q/est{time.monotonic_ns()}.mkv"},
        "streams": streams,
        **extra,
    }
    settings = Settings(output_dir=server.output_dir)  # as the shared server runs
    estimate = budget.estimate(
        make_plan(SessionConfig.model_validate(config), settings), budget.chunks_in_flight(settings)
    )
    response = api.post("/v1/sessions", json=config)
    assert response.status_code == 201, response.text
    created = response.json()
    rng = np.random.default_rng(1)
    with Watch(server, created["encoder_pid"]).running() as watch:
        ws = open_ws(created)
        seq = 0
        for _ in range(12):  # 60 frames of noise: every lookahead, reference and thread buffer filled
            for index, stream in enumerate(streams):
                if stream["type"] == "video":
                    array = rng.integers(0, 256, (5, 3, stream["height"], stream["width"]), np.uint8)
                else:
                    array = rng.uniform(-0.5, 0.5, (stream["sample_rate"] // 6, 2)).astype(np.float32)
                ws.send(chunk(seq, array, stream=index))
                seq += 1
        recv_until(ws, is_ack(seq - 1), timeout=120)
        ws.send(protocol.encode_control("finish"))
        recv_until(ws, is_type("closed"), timeout=120)
        ws.close()
    assert 0 < watch.peak_rss < estimate, (watch.peak_rss >> 20, estimate >> 20)


def test_sessions_asked_for_at_once_cannot_all_take_the_same_memory(own_server):
    # A session counts from its admission on, while its encoder is still starting.
    server = own_server(FRAMECAST_MEMORY_BUDGET=str(1024 * MiB), FRAMECAST_SPARE_ENCODERS="0")
    hd = {"type": "video", "frame_rate": 30, "width": 16, "height": 16, "encoder_width": 1920, "encoder_height": 1080}
    statuses: list[int] = []

    def ask(n: int) -> None:
        body = {"destination": {"type": "server_file", "path": f"q/race{n}.mkv"}, "streams": [hd]}
        statuses.append(httpx.post(server.url + "/v1/sessions", json=body, timeout=60).status_code)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201, 503, 503, 503]


def test_sixteen_8k_x264_streams_are_refused_before_any_memory_is_taken(api):
    # The issue: 16 streams of 8K x264 per session took 1.5 GB before a frame arrived.
    stream = {
        "type": "video",
        "frame_rate": 30,
        "width": 16,
        "height": 16,
        "encoder_width": 7680,
        "encoder_height": 4320,
    }
    response = api.post(
        "/v1/sessions", json={"destination": {"type": "server_file", "path": "q/x16.mkv"}, "streams": [stream] * 16}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "streams"
    assert "more than one encoder process may have (4 GiB, FRAMECAST_ENCODER_MEMORY_LIMIT)" in error["message"]
    assert "streams.0 " in error["message"] and "13 more" in error["message"]
    # The third case, one stream: 8K with rc-lookahead=40 took 3.6 GB. Refused the same way.
    one = {**stream, "encoder_option": {"rc-lookahead": "40"}}
    response = api.post(
        "/v1/sessions", json={"destination": {"type": "server_file", "path": "q/x1.mkv"}, "streams": [one]}
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "streams"
    # The same stream at ultrafast is taken.
    light = {**stream, "encoder_option": {"preset": "ultrafast"}}
    response = api.post(
        "/v1/sessions", json={"destination": {"type": "server_file", "path": "q/x1.mkv"}, "streams": [light]}
    )
    assert response.status_code == 201, response.text
    api.delete(f"/v1/sessions/{response.json()['id']}")


def test_an_encoder_past_its_memory_limit_fails_with_a_clear_reason(own_server):
    # 'reverse' keeps every frame until the input ends: memory the estimate cannot foresee.
    server = own_server(FRAMECAST_ENCODER_MEMORY_LIMIT=str(768 * MiB), FRAMECAST_EXTRA_FILTERS="reverse")
    stream = {
        "type": "video",
        "frame_rate": 30,
        "width": 640,
        "height": 360,
        "filter_desc": "reverse",
        "encoder_option": {"preset": "ultrafast"},
    }
    created = create(server, [stream], "q/reverse.mkv")
    frames = np.zeros((20, 3, 360, 640), np.uint8)  # 14 MB a chunk
    with Watch(server, created["encoder_pid"]).running() as watch:
        ws = open_ws(created)
        reason = None
        for seq in range(100):  # 1.4 GB in all, more than the limit
            ws.send(chunk(seq, frames))
            got = recv_until(ws, lambda m, seq=seq: is_ack(seq)(m) or is_type("failed")(m))
            if is_type("failed")(got[-1]):
                reason = got[-1]["reason"]
                break
        ws.close()
    assert reason is not None, "the encoder took 1.4 GB of frames within a 768 MiB limit"
    assert reason.startswith(
        "encoder error: encoder process ran out of memory: limit 768 MiB (FRAMECAST_ENCODER_MEMORY_LIMIT)"
    ), reason
    assert watch.peak_rss < 768 * MiB


def test_an_api_keys_quota_holds_across_its_sessions(own_server):
    server = own_server(FRAMECAST_API_KEYS="key-a-1f2e,key-b-3d4c", FRAMECAST_MAX_KEY_SECONDS="12")
    stream = {"type": "video", "frame_rate": 30, "width": 64, "height": 48, "encoder_option": {"preset": "ultrafast"}}
    frames = np.zeros((30, 3, 48, 64), np.uint8)
    # The first session uses 8 of the key's 12 s.
    first = create(server, [stream], "q/key1.mkv", key="key-a-1f2e")
    ws = open_ws(first)
    for seq in range(8):
        ws.send(chunk(seq, frames))
    recv_until(ws, is_ack(7))
    ws.send(protocol.encode_control("finish"))
    assert recv_until(ws, is_type("closed"))[-1]["session"]["state"] == "closed"
    ws.close()
    # The second gets what is left: 4 s.
    second = create(server, [stream], "q/key2.mkv", key="key-a-1f2e")
    ws = open_ws(second)
    for seq in range(8):
        ws.send(chunk(seq, frames))
    reason = failed_reason(ws)
    ws.close()
    assert reason == (
        "stopped: this API key's quota (FRAMECAST_MAX_KEY_SECONDS) is used up; the output is finalized up to there"
    )
    packets, _, _ = video_packets(server.output_dir / "q/key2.mkv")
    assert packets == 4 * 30
    # Now the key has nothing left; another key is not affected.
    refused = create(server, [stream], "q/key3.mkv", key="key-a-1f2e", expect=503)["error"]
    assert refused["code"] == "over_budget"
    assert refused["message"] == (
        "this API key's quota of 12 s of media (FRAMECAST_MAX_KEY_SECONDS) is used up "
        "(12.0 s since the server started); no new session can start"
    )
    create(server, [stream], "q/other.mkv", key="key-b-3d4c")


def test_an_encoder_that_dies_of_a_signal_allocation_failures_end_in_says_so(api):
    created = create_on(api, [{"type": "video", "frame_rate": 30, "width": 64, "height": 48}], "q/segv.mkv")
    ws = open_ws(created)
    ws.send(chunk(0, np.zeros((1, 3, 48, 64), np.uint8)))
    recv_until(ws, is_ack(0))
    psutil.Process(created["encoder_pid"]).send_signal(signal.SIGSEGV)
    reason = failed_reason(ws)
    ws.close()
    assert reason == (
        "encoder process died (killed by SIGSEGV); it may have run out of memory: "
        "limit 4096 MiB (FRAMECAST_ENCODER_MEMORY_LIMIT)"
    )


def test_open_sessions_of_a_key_over_its_byte_quota_are_stopped(own_server):
    # Both sessions start with the key's whole 2 MiB; the server charges what each writes and
    # stops them once their sum is over, wherever it was crossed.
    server = own_server(FRAMECAST_API_KEYS="key-c-5e6f", FRAMECAST_MAX_KEY_BYTES=str(2 * MiB))
    raw = {"type": "video", "frame_rate": 30, "width": 64, "height": 48, "encoder": "rawvideo"}
    frames = np.zeros((170, 3, 48, 64), np.uint8)  # 1.5 MiB of rawvideo
    first = create(server, [raw], "q/keyb1.nut", key="key-c-5e6f")
    second = create(server, [raw], "q/keyb2.nut", key="key-c-5e6f")
    ws1, ws2 = open_ws(first), open_ws(second)
    ws1.send(chunk(0, frames))
    recv_until(ws1, is_ack(0))
    ws2.send(chunk(0, frames))
    reason = failed_reason(ws2)
    assert reason.startswith("stopped: this API key's output quota of 2 MiB (FRAMECAST_MAX_KEY_BYTES) is used up ("), (
        reason
    )
    assert file_size(server, "q/keyb2.nut") < 2 * MiB
    # The first session is stopped too, when it next reports (stats ride on ACKs at most every 0.1 s).
    seq = 1
    while True:
        ws1.send(chunk(seq, frames[:1]))
        got = recv_until(ws1, lambda m, seq=seq: is_ack(seq)(m) or is_type("failed")(m))
        if is_type("failed")(got[-1]):
            break
        seq += 1
    # Whichever comes first: the server's stop when the session's stats are charged (at most every
    # 0.1 s), or the session's own byte limit, which it started with as the key's whole 2 MiB and
    # reaches first when it writes its frames faster than that.
    assert got[-1]["reason"].startswith("stopped: this API key's"), got[-1]["reason"]
    assert "(FRAMECAST_MAX_KEY_BYTES) is used up" in got[-1]["reason"], got[-1]["reason"]
    ws1.close()
    ws2.close()
    refused = create(server, [raw], "q/keyb3.nut", key="key-c-5e6f", expect=503)["error"]
    assert refused["code"] == "over_budget" and "(FRAMECAST_MAX_KEY_BYTES) is used up" in refused["message"]
