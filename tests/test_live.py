"""Live outputs against real peers on 127.0.0.1: nginx-rtmp, a UDP MPEG-TS receiver, a TCP sink.

Each test streams stamped test patterns and a sine through the real SDK and server, then decodes
what the peer received: frame count and order (stamps), resolution, audio, keyframe spacing,
and how audio and video interleave.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import av
import httpx
import numpy as np
import pytest

import framecast
from framecast import StreamWriter

from .faults import CuttingProxy
from .media import decode, dominant_frequency, patterns, psnr, read_stamp, sine
from .peers import NginxRtmp, UdpTsReceiver

W, H, FPS, RATE = 320, 240, 30, 44100


@pytest.fixture
def rtmp(tmp_path):
    with NginxRtmp(tmp_path / "nginx") as server:
        yield server


def stream_av(writer: StreamWriter, seconds: float, video_chunk: int, audio_chunk: int) -> None:
    """Write ``seconds`` of stamped video (stream 0) and a 440 Hz tone (stream 1), interleaved."""
    frames = patterns(int(seconds * FPS), H, W)
    tone = sine(440, RATE, seconds, channels=2, amplitude=0.3)
    v = a = 0
    while v < len(frames) or a < len(tone):
        # Feed whichever stream is behind in media time, in the chunk sizes asked for.
        if a >= len(tone) or (v < len(frames) and v / FPS <= a / RATE):
            writer.write_video_chunk(0, frames[v : v + video_chunk])
            v += video_chunk
        else:
            writer.write_audio_chunk(1, tone[a : a + audio_chunk])
            a += audio_chunk


def av_writer(dst: Any, server_url: str, **kw: Any) -> StreamWriter:
    """A writer of stamped 320x240 video (stream 0) and 44.1 kHz stereo (stream 1) to ``dst`` (one or a list)."""
    writer = StreamWriter(dst, server=server_url, **kw)
    writer.add_video_stream(frame_rate=FPS, width=W, height=H)
    writer.add_audio_stream(sample_rate=RATE, num_channels=2)
    return writer


def packet_order(path_or_bytes, format=None):
    """(stream type, dts seconds, keyframe) of every packet in file order."""
    source = path_or_bytes if not isinstance(path_or_bytes, bytes) else __import__("io").BytesIO(path_or_bytes)
    with av.open(source if isinstance(source, str) else source, format=format) as c:
        return [
            (p.stream.type, float(p.dts * p.time_base), p.is_keyframe)
            for p in c.demux()
            if p.size and p.dts is not None
        ]


def max_av_skew(order) -> float:
    """The largest gap, anywhere in the file, between how far audio and video have got."""
    last = {}
    worst = 0.0
    for kind, dts, _ in order:
        last[kind] = dts
        if len(last) == 2:
            worst = max(worst, abs(last["audio"] - last["video"]))
    return worst


def check_received(out, seconds):
    video, audio = out["streams"] if out["streams"][0]["type"] == "video" else out["streams"][::-1]
    count = int(seconds * FPS)
    assert video["codec"] == "h264" and (video["width"], video["height"]) == (W, H)
    assert [read_stamp(f) for f in video["frames"]] == list(range(count))
    expected = patterns(count, H, W).transpose(0, 2, 3, 1)
    assert min(psnr(f, e) for f, e in zip(video["frames"], expected)) >= 30
    assert audio["codec"] == "aac" and audio["sample_rate"] == RATE and audio["channels"] == 2
    assert abs(audio["sample_count"] - seconds * RATE) <= 3 * 1024
    assert abs(dominant_frequency(audio["pcm"][:, 0], RATE) - 440) < 5


@pytest.mark.parametrize("video_chunk, audio_chunk", [(1, 44100), (30, 1024), (7, 5000)])
def test_rtmp_to_nginx(rtmp, server, video_chunk, audio_chunk):
    seconds = 3
    name = f"cam{video_chunk}"
    writer = av_writer(rtmp.url(name), server.url)
    started = time.monotonic()
    with writer.open():
        stream_av(writer, seconds, video_chunk, audio_chunk)
    elapsed = time.monotonic() - started
    assert rtmp.wait_closed(name, timeout=10)
    path = str(rtmp.recording(name))
    check_received(decode(path), seconds)

    order = packet_order(path)
    keys = [dts for kind, dts, key in order if kind == "video" and key]
    assert keys[0] < 0.05  # the first frame is a keyframe (AAC priming may shift all by ~23 ms)
    assert max(np.diff(keys)) <= 2.0 + 1e-6  # and one at least every 2 s
    assert max_av_skew(order) <= 1024 / RATE + 1 / FPS + 1e-3  # within one audio frame (+ a frame)
    # Paced at media time: 3 s of media can't have gone out faster than real time.
    assert elapsed >= seconds - 1.5
    summary = writer.summary
    assert summary is not None
    assert summary["destination"]["url"] == f"rtmp://127.0.0.1:{rtmp.port}/live/****"
    assert summary["pacing"]["media_seconds"] >= seconds - 0.1


def test_what_waits_for_a_slow_destination_leaves_paced_once_it_answers(rtmp, server):
    """nginx-rtmp behind a proxy that holds the RTMP handshake for 2 s. The video the client
    writes meanwhile waits in the session (the client's window holds it back), and once the
    destination has answered it leaves at media time, not in a burst: for the schedule, a chunk
    the server received before its encoder could read anything arrived when reading began."""
    with CuttingProxy(rtmp.port, cuts=0, min_bytes=0, max_bytes=0, delay=2.0) as proxy:
        writer = StreamWriter(f"rtmp://127.0.0.1:{proxy.port}/live/slow", server=server.url)
        writer.add_video_stream(frame_rate=FPS, width=W, height=H)
        with writer.open():
            writer.write_video_chunk(0, patterns(2 * FPS, H, W))
        assert rtmp.wait_closed("slow", timeout=10)
    (video,) = decode(str(rtmp.recording("slow")))["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(2 * FPS))
    assert writer.summary is not None
    # Scheduled from when the server received it, the first frame would have left 2 s late.
    assert writer.summary["pacing"]["max_lateness_ms"] < 1000


def test_udp_mpegts_to_a_receiver(server):
    with UdpTsReceiver() as receiver:
        writer = av_writer(receiver.url, server.url)
        with writer.open():
            stream_av(writer, 2, 10, 4410)
        assert receiver.wait_quiet(0.5, timeout=10)
        data = receiver.data()
    assert len(data) % 188 == 0 and receiver.datagrams >= len(data) // 1316  # 1316-byte packets (7 TS packets)
    check_received(decode(data, format="mpegts"), 2)


def test_tcp_mpegts_to_a_listener(server):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(20)
    received = bytearray()

    def sink():
        conn, _ = listener.accept()
        conn.settimeout(20)
        with conn:
            while chunk := conn.recv(1 << 16):
                received.extend(chunk)

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    writer = av_writer(f"tcp://127.0.0.1:{listener.getsockname()[1]}", server.url, realtime=False)
    with writer.open():
        stream_av(writer, 1, 30, 44100)
    thread.join(20)
    listener.close()
    check_received(decode(bytes(received), format="mpegts"), 1)


def test_refused_destination_fails_the_session_with_ffmpegs_reason(server):
    from .conftest import free_port

    writer = av_writer(f"rtmp://127.0.0.1:{free_port()}/live/nobody", server.url)
    writer.open()  # the session exists: connecting happens in its encoder process
    with pytest.raises(framecast.SessionFailed, match="Connection refused") as err:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            writer.write_video_chunk(0, patterns(1, H, W))
            time.sleep(0.05)
    info = httpx.get(f"{server.url}/v1/sessions/{writer.session_id}").json()
    assert info["state"] == "failed" and "Connection refused" in info["error"]
    assert "Connection refused" in err.value.reason
    with pytest.raises(framecast.SessionFailed):
        writer.close()


def test_blackholed_destination_freezes_nothing(server, tmp_path):
    """A listener that never answers the RTMP handshake: the API stays fast, other sessions stream."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # accepts the TCP handshake in the kernel, never reads a byte
    stuck = av_writer(f"rtmp://127.0.0.1:{hole.getsockname()[1]}/live/void", server.url, connect_timeout=8)
    stuck.open()
    stuck.write_video_chunk(0, patterns(5, H, W))  # queued behind the hung connect

    # /healthz answers at once while the encoder process hangs in FFmpeg's connect.
    with httpx.Client(base_url=server.url) as api:
        latencies = []
        for _ in range(20):
            started = time.perf_counter()
            assert api.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
    assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies

    # Another session streams on at full rate: every frame arrives while the stuck one waits, and
    # it runs about as fast as the same session does once the stuck one is gone.
    frames = patterns(60, H, W)

    def other_session(name: str) -> float:
        other = StreamWriter(tmp_path / name, server=server.url)
        other.add_video_stream(frame_rate=FPS, width=W, height=H, encoder_option={"preset": "ultrafast"})
        started = time.perf_counter()
        with other.open():
            for k in range(6):
                other.write_video_chunk(0, frames[10 * k : 10 * k + 10])
        return time.perf_counter() - started

    during = other_session("during.mp4")
    assert httpx.get(f"{server.url}/v1/sessions/{stuck.session_id}").json()["state"] != "failed"
    assert [read_stamp(f) for f in decode(tmp_path / "during.mp4")["streams"][0]["frames"]] == list(range(60))

    # The stuck session fails by itself within its connect timeout, saying why.
    deadline = time.monotonic() + 30
    while (info := httpx.get(f"{server.url}/v1/sessions/{stuck.session_id}").json())["state"] != "failed":
        assert time.monotonic() < deadline, info
        time.sleep(0.1)
    assert "could not connect to rtmp://127.0.0.1" in info["error"] and "within 8 s" in info["error"]
    with pytest.raises(framecast.SessionFailed, match="could not connect"):
        stuck.close()
    hole.close()
    after = other_session("after.mp4")
    # A stall would make `during` seconds long; the bound is loose so a busy machine can't flake it.
    assert during < 3 * after + 1.0, (during, after)


def test_one_call_of_many_seconds_is_paced_not_dropped(server, tmp_path):
    """Six seconds in one write: flow control slows the call to real time; nothing is dropped."""
    with UdpTsReceiver() as receiver:
        writer = StreamWriter(receiver.url, server=server.url)
        writer.add_audio_stream(sample_rate=RATE, num_channels=2)
        writer.open()
        started = time.monotonic()
        writer.write_audio_chunk(0, sine(440, RATE, 6.0, channels=2, amplitude=0.3))
        returned = time.monotonic() - started
        writer.close()
        assert receiver.wait_quiet(0.5, timeout=10)
        data = receiver.data()
    (audio,) = decode(data, format="mpegts")["streams"]
    assert abs(audio["sample_count"] - 6 * RATE) <= 3 * 1024
    assert returned >= 2.0  # the call was held back: the server holds a few seconds ahead, not 6
    assert writer.summary is not None
    assert writer.summary["pacing"]["media_seconds"] >= 5.9
