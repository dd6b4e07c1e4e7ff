"""The SDK against a live server: write_video, AsyncStreamWriter, destinations, errors, states."""

from __future__ import annotations

import asyncio
import io
import warnings
from fractions import Fraction

import httpx
import numpy as np
import pytest
import torch

import framecast
from framecast import AsyncStreamWriter, ServerFile, StreamWriter, yuv

from .conftest import ServerProcess
from .media import decode, dominant_frequency, patterns, psnr, read_stamp, sine


def test_write_video_like_torchvision_keeps_fractional_fps(server, tmp_path):
    frames = torch.from_numpy(patterns(30, 96, 128).transpose(0, 2, 3, 1).copy())  # [T, H, W, C]
    audio = torch.from_numpy(sine(440, 16000, 1.0, channels=2).T.copy())  # [C, N]
    path = tmp_path / "tv.mp4"
    framecast.write_video(
        str(path),
        frames,
        fps=29.97,
        options={"crf": "17"},
        audio_array=audio,
        audio_fps=16000,
        audio_codec="aac",
        server=server.url,
    )
    video, sound = decode(path)["streams"]
    assert video["average_rate"] == Fraction(30000, 1001)  # torchvision would have written 30
    assert video["frame_count"] == 30 and (video["width"], video["height"]) == (128, 96)
    assert min(psnr(f, e) for f, e in zip(video["frames"], frames.numpy())) >= 35  # crf 17 honoured
    assert sound["codec"] == "aac" and sound["channels"] == 2
    assert abs(dominant_frequency(sound["pcm"][:, 0], 16000) - 440) < 5


def test_async_writer_same_surface(server, tmp_path):
    path = tmp_path / "async.mkv"

    async def main():
        s = AsyncStreamWriter(str(path), server=server.url)
        s.add_video_stream(frame_rate=25, width=64, height=48)
        s.add_audio_stream(sample_rate=8000, num_channels=1, encoder="pcm_s16le")
        async with s.open():
            for k in range(5):
                await s.write_video_chunk(0, patterns(5, 48, 64, start=5 * k))
                await s.write_audio_chunk(1, sine(300, 8000, 0.2))
            await s.flush()
        assert "AsyncStreamWriter" in repr(s) and "closed" in repr(s)
        return s.summary

    summary = asyncio.run(asyncio.wait_for(main(), 120))
    assert summary["state"] == "closed" and summary["streams"][0]["counters"]["frames"] == 25
    video, audio = decode(path)["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(25))
    assert audio["sample_count"] == 8000


def test_async_errors_surface(server, tmp_path):
    async def main():
        s = AsyncStreamWriter(str(tmp_path / "e.wav"), server=server.url)
        s.add_audio_stream(sample_rate=8000, num_channels=1)
        await s.open()
        await s.write_audio_chunk(0, sine(300, 8000, 0.2), pts=1.0)
        await s.write_audio_chunk(0, sine(300, 8000, 0.2), pts=0.5)  # backwards: refused by the server
        with pytest.raises(framecast.InvalidChunk, match="goes backwards"):
            await s.flush()
        await s.close()

    asyncio.run(asyncio.wait_for(main(), 60))


class WriteOnly:
    """A file-like object with write() and nothing else: not seekable."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)


def test_write_only_file_object_gets_a_streamable_format(server):
    sink = WriteOnly()
    s = StreamWriter(sink, format="mpegts", server=server.url)
    s.add_video_stream(frame_rate=30, width=64, height=48, encoder="libx264")
    with s.open():
        s.write_video_chunk(0, patterns(20, 48, 64))
    (video,) = decode(b"".join(sink.parts), format="mpegts")["streams"]
    assert video["frame_count"] == 20


def test_non_seekable_mp4_is_refused_at_open(server):
    s = StreamWriter(WriteOnly(), format="mp4", server=server.url)
    s.add_video_stream(frame_rate=30, width=64, height=48)
    with pytest.raises(framecast.InvalidConfig, match="non seekable") as err:
        s.open()
    assert err.value.field == "format"


def test_file_object_output_equals_local_path_output(server, tmp_path):
    """Same config, same data: the file-like and the path destinations hold identical bytes."""
    data = patterns(15, 48, 64)
    buf = io.BytesIO()
    for dst in (buf, tmp_path / "same.mkv"):
        s = StreamWriter(dst, format="matroska", server=server.url)
        s.add_video_stream(frame_rate=30, width=64, height=48, encoder="ffv1")
        with s.open(option={"fflags": "+bitexact"}):  # no random Matroska UIDs
            s.write_video_chunk(0, data)
    assert buf.getvalue() == (tmp_path / "same.mkv").read_bytes()


def test_server_file_and_download(server, tmp_path):
    s = StreamWriter(ServerFile("sdk/remote.mp4"), server=server.url)
    s.add_video_stream(frame_rate=30, width=64, height=48)
    s.set_metadata({"title": "remote"})
    with s.open():
        s.write_video_chunk(0, torch.from_numpy(patterns(10, 48, 64)))
    assert (server.output_dir / "sdk" / "remote.mp4").exists()
    target = tmp_path / "copy.mp4"
    size = s.download(target)
    assert size == target.stat().st_size == (server.output_dir / "sdk" / "remote.mp4").stat().st_size
    out = decode(target)
    assert out["metadata"]["title"] == "remote" and out["streams"][0]["frame_count"] == 10


def test_async_writer_downloads_a_server_file_too(server, tmp_path):
    async def main() -> tuple[int, bytes]:
        s = AsyncStreamWriter(ServerFile("sdk/async-remote.mkv"), server=server.url)
        s.add_video_stream(frame_rate=30, width=64, height=48)
        with pytest.raises(framecast.StateError, match="needs a closed writer"):
            await s.download(tmp_path / "early.mkv")
        async with s.open():
            await s.write_video_chunk(0, patterns(9, 48, 64))
        into = io.BytesIO()
        to_path = await s.download(tmp_path / "async.mkv")
        assert await s.download(into) == len(into.getvalue())
        return to_path, into.getvalue()

    to_path, in_memory = asyncio.run(main())
    original = (server.output_dir / "sdk" / "async-remote.mkv").read_bytes()
    assert to_path == len(original) and (tmp_path / "async.mkv").read_bytes() == original == in_memory
    assert decode(tmp_path / "async.mkv")["streams"][0]["frame_count"] == 9
    assert not (tmp_path / "early.mkv").exists()


def test_local_checks_fail_on_the_call(server, tmp_path):
    s = StreamWriter(tmp_path / "c.mp4", server=server.url)
    s.add_video_stream(frame_rate=30, width=64, height=48)
    s.add_audio_stream(sample_rate=8000, num_channels=2)
    with pytest.raises(framecast.StateError, match="call open\\(\\) first"):
        s.write_video_chunk(0, patterns(1, 48, 64))
    with s.open():
        with pytest.raises(framecast.StateError, match="add a stream"):
            s.add_audio_stream(8000, 1)
        with pytest.raises(framecast.InvalidChunk, match=r"expects shape \(frames, 3, 48, 64\), got \(1, 48, 64, 3\)"):
            s.write_video_chunk(0, patterns(1, 48, 64).transpose(0, 2, 3, 1))
        with pytest.raises(framecast.InvalidChunk, match="expects dtype uint8, got float32"):
            s.write_video_chunk(0, patterns(1, 48, 64).astype(np.float32))
        with pytest.raises(framecast.InvalidChunk, match="stream 1 is a audio stream; use write_audio_chunk"):
            s.write_video_chunk(1, patterns(1, 48, 64))
        with pytest.raises(framecast.InvalidChunk, match="stream index 2 does not exist"):
            s.write_audio_chunk(2, sine(100, 8000, 0.1, 2))
        s.write_video_chunk(0, patterns(3, 48, 64))
        s.write_audio_chunk(1, sine(100, 8000, 0.1, 2))
    with pytest.raises(framecast.StateError, match="closed"):
        s.write_video_chunk(0, patterns(1, 48, 64))
    assert decode(tmp_path / "c.mp4")["streams"][0]["frame_count"] == 3


def test_server_refusals_are_raised_by_a_later_call_at_the_latest_close(server, tmp_path):
    s = StreamWriter(tmp_path / "late.wav", server=server.url)
    s.add_audio_stream(sample_rate=8000, num_channels=1)
    s.open()
    s.write_audio_chunk(0, sine(200, 8000, 0.5), pts=2.0)
    s.write_audio_chunk(0, sine(200, 8000, 0.5), pts=1.0)  # the server refuses this one
    with pytest.raises(framecast.InvalidChunk, match="goes backwards") as err:
        s.close()
    assert err.value.seq == 1
    (audio,) = decode(tmp_path / "late.wav")["streams"]
    assert audio["sample_count"] == 2 * 8000 + 4000  # 2 s of silence, then the first chunk


def test_invalid_config_carries_the_servers_message_and_field(server, tmp_path):
    s = StreamWriter(tmp_path / "x.mp4", server=server.url)
    s.add_video_stream(frame_rate=30, width=64, height=48, encoder="libnothing")
    with pytest.raises(framecast.InvalidConfig, match="unknown video encoder 'libnothing'") as err:
        s.open()
    assert err.value.field == "streams.0.encoder"
    with pytest.raises(framecast.InvalidConfig, match="unknown video pixel format"):
        s.add_video_stream(frame_rate=30, width=64, height=48, format="rgba")
    with pytest.raises(framecast.InvalidConfig, match="hw_accel"):
        s.add_video_stream(frame_rate=30, width=64, height=48, hw_accel="cuda:0")


def test_unused_options_come_back_as_warnings(server, tmp_path):
    s = StreamWriter(tmp_path / "w.mp4", server=server.url)
    s.add_video_stream(frame_rate=30, width=64, height=48, encoder_option={"bogus_knob": "1"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with s.open():
            s.write_video_chunk(0, patterns(2, 48, 64))
    assert any(issubclass(w.category, framecast.FramecastWarning) and "bogus_knob" in str(w.message) for w in caught)


def test_unreachable_server_is_a_transport_error(tmp_path):
    from .conftest import free_port

    s = StreamWriter(tmp_path / "x.wav", server=f"http://127.0.0.1:{free_port()}")
    s.add_audio_stream(8000, 1)
    with pytest.raises(framecast.TransportError, match="cannot reach the framecast server"):
        s.open()


def test_capabilities_and_default_server_from_environment(server, monkeypatch):
    monkeypatch.setenv("FRAMECAST_SERVER", server.url)
    caps = framecast.capabilities()
    assert "libx264" in caps["video_encoders"] and "mp4" in caps["muxers"]


@pytest.fixture(scope="module")
def small_message_server(tmp_path_factory):
    # The encoder buffer as small as allowed: a 36 KiB frame fills more than half of it, so every
    # chunk waits for the one before it to leave the ring, and the audio wraps around it.
    proc = ServerProcess(
        tmp_path_factory.mktemp("small") / "out",
        env={"FRAMECAST_MAX_MESSAGE_BYTES": "65536", "FRAMECAST_ENCODER_BUFFER_BYTES": "65536"},
    )
    yield proc
    proc.stop()


@pytest.mark.parametrize("wire_format", ["rgb24", None])
def test_large_chunks_are_split_to_the_servers_message_limit(small_message_server, tmp_path, wire_format):
    frames = patterns(40, 96, 128)  # 36 KiB a frame in RGB: one frame per 64 KiB message
    audio = sine(500, 16000, 3.0, channels=2)  # 384 KB: split in seven
    s = StreamWriter(tmp_path / "split.mkv", server=small_message_server.url)
    s.add_video_stream(frame_rate=20, width=128, height=96, wire_format=wire_format)
    s.add_audio_stream(sample_rate=16000, num_channels=2, encoder="pcm_f32le")
    with s.open():
        s.write_video_chunk(0, frames, pts=0.0)
        s.write_audio_chunk(1, audio)
    assert s.summary is not None
    # As yuv420p (the default where this client has libyuv) a frame is 18 KiB: three a message.
    expected = 14 if s.wire_formats[0] == "yuv420p" else 40
    assert wire_format is not None or s.wire_formats[0] == ("yuv420p" if yuv.library() else "rgb24")
    assert s.summary["streams"][0]["counters"]["chunks"] == expected
    assert s.summary["streams"][1]["counters"]["chunks"] == 6
    video, sound = decode(tmp_path / "split.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(40))
    assert np.array_equal(sound["pcm"], audio)
    too_big = StreamWriter(io.BytesIO(), format="matroska", server=small_message_server.url)
    too_big.add_video_stream(frame_rate=1, width=512, height=512)
    with too_big.open():
        with pytest.raises(framecast.InvalidChunk, match="more than the server's message limit"):
            too_big.write_video_chunk(0, np.zeros((1, 3, 512, 512), np.uint8))


def test_session_listing_shows_sdk_sessions(server, tmp_path):
    s = StreamWriter(tmp_path / "l.wav", server=server.url)
    s.add_audio_stream(8000, 1)
    with s.open():
        s.write_audio_chunk(0, sine(100, 8000, 0.1))
        listed = httpx.get(server.url + "/v1/sessions").json()
        mine = [x for x in listed if x["id"] == s.session_id]
        assert mine and mine[0]["state"] == "streaming"
    assert httpx.get(f"{server.url}/v1/sessions/{s.session_id}").json()["state"] == "closed"


@pytest.mark.parametrize("encode", [False, True])
def test_discard_destination_takes_everything_and_keeps_nothing(server, encode):
    s = StreamWriter(framecast.Discard(encode=encode), server=server.url)
    s.add_video_stream(frame_rate=30, width=64, height=48)
    with s.open():
        for k in range(3):
            s.write_video_chunk(0, patterns(10, 48, 64, start=10 * k))
    assert s.summary is not None
    counters = s.summary["streams"][0]["counters"]
    assert s.summary["destination"] == {"type": "discard", "encode": encode}
    assert counters["chunks"] == 3 and counters["frames"] == 30
    assert (counters["packets"] == 30) if encode else (counters["packets"] == 0)


def test_progress_bars_for_long_writes(small_message_server, tmp_path, capfd):
    frames = patterns(24, 96, 128)  # 36 KiB frames, 64 KiB messages: one message per frame
    framecast.write_video(
        str(tmp_path / "p.mkv"),
        frames.transpose(0, 2, 3, 1),
        fps=12,
        video_codec="ffv1",
        server=small_message_server.url,
        progress=True,
    )
    assert "write_video" in capfd.readouterr().err
    writer = StreamWriter(tmp_path / "q.mkv", server=small_message_server.url, progress=True)
    writer.add_video_stream(frame_rate=12, width=128, height=96, encoder="ffv1")
    with writer.open():
        writer.write_video_chunk(0, frames)
    assert "stream 0" in capfd.readouterr().err
    for name in ("p.mkv", "q.mkv"):
        assert [read_stamp(f) for f in decode(tmp_path / name)["streams"][0]["frames"]] == list(range(24))
    assert "StreamWriter" in repr(writer) and "closed" in repr(writer)
