"""Same-host shared memory: payloads in /dev/shm, only headers and offsets over the websocket.

The SDK asks for it when the server is on loopback (every server in these tests), so most other
tests run through it too; these check the segment itself, the refusals, and the way back to
inline payloads when either side says no.
"""

from __future__ import annotations

import io
import mmap
import os
import stat
import subprocess

import av
import numpy as np
import pytest

from framecast import AsyncStreamWriter, ServerFile, StreamWriter, protocol, yuv
from framecast.regions import Regions

from .conftest import ServerProcess, payload_paths
from .media import assert_planes_as_written, decode, patterns, read_stamp, sine
from .test_api import AUDIO, VIDEO, chunk, create, is_ack, is_type, open_ws, recv_until

SHM = "/dev/shm"


def shared_chunk(seq: int, array: np.ndarray, offset: int, stream: int = 0) -> bytes:
    return protocol.encode_shared_chunk(stream, seq, np.ascontiguousarray(array), offset)


def test_the_segment_is_private_reserved_and_gone_once_used(api, server):
    created = create(api, [VIDEO], {"type": "server_file", "path": "shm/raw.mkv"}, shared_memory=True)
    segment = created["shared_memory"]
    path = os.path.join(SHM, segment["name"])
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_size == segment["bytes"] >= 16 << 20
    assert info.st_blocks * 512 >= segment["bytes"]  # reserved up front: writing it cannot SIGBUS
    fd = os.open(path, os.O_RDWR)
    memory = mmap.mmap(fd, segment["bytes"])
    os.close(fd)
    ws = open_ws(created)
    frames = patterns(6, 48, 64)
    for seq, k in enumerate(range(0, 6, 2)):
        offset = seq * 4096
        memory[offset : offset + frames[k : k + 2].nbytes] = frames[k : k + 2].tobytes()
        ws.send(shared_chunk(seq, frames[k : k + 2], offset))
        recv_until(ws, is_ack(seq))
        assert not os.path.exists(path)  # the client has it open: the name is gone
    ws.send(protocol.encode_control("finish"))
    recv_until(ws, is_type("closed"))
    ws.close()
    memory.close()
    (video,) = decode(server.output_dir / "shm" / "raw.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(6))


@pytest.mark.parametrize(("wire_format", "frame_bytes"), [("rgb24", 1920 * 1080 * 3), ("yuv420p", 1920 * 540 * 3)])
def test_the_segment_holds_eight_frames_as_they_cross_the_wire(api, wire_format, frame_bytes):
    """yuv420p on the wire is half the bytes of RGB: so is the segment (and the /dev/shm a
    session reserves, and the time to reserve it)."""
    stream = {**VIDEO, "width": 1920, "height": 1080, "encoder": "libx264", "wire_format": wire_format}
    created = create(api, [stream], {"type": "server_file", "path": f"shm/size-{wire_format}.mkv"}, shared_memory=True)
    assert created["shared_memory"]["bytes"] == 8 * frame_bytes
    api.delete(f"/v1/sessions/{created['id']}")


def test_bad_shared_chunks_get_clear_errors_and_the_session_lives_on(api, server):
    created = create(api, [VIDEO, AUDIO], {"type": "server_file", "path": "shm/bad.mkv"}, shared_memory=True)
    size = created["shared_memory"]["bytes"]
    fd = os.open(os.path.join(SHM, created["shared_memory"]["name"]), os.O_RDWR)
    memory = mmap.mmap(fd, size)
    os.close(fd)
    ws = open_ws(created)
    good = patterns(2, 48, 64)
    bad_audio = np.full((100, 1), np.nan, np.float32)
    memory[8192 : 8192 + bad_audio.nbytes] = bad_audio.tobytes()
    cases = [
        (
            shared_chunk(0, good, size - 64),
            0,
            f"must start on a multiple of 64 and end within the session's {size} bytes",
        ),
        (shared_chunk(1, good, 100), 1, "must start on a multiple of 64"),
        (shared_chunk(2, good, 0)[:-4], 2, "carries an 8-byte offset after its header, got 4 bytes"),
        (shared_chunk(3, bad_audio, 8192, stream=1), 3, "100 samples are NaN or infinite"),
    ]
    for message, seq, text in cases:
        ws.send(message)
        error = recv_until(ws, is_type("error"))[-1]
        assert text in error["message"], error
        assert error["seq"] == seq
    memory[0 : good.nbytes] = good.tobytes()
    ws.send(shared_chunk(10, good, 0))
    recv_until(ws, is_ack(10))
    # Once the segment is in use, good chunks are taken on the websocket's callback
    # (``Session.take_now``); bad ones must still get the same refusals, and move nothing on.
    # A refused chunk of stream 0 before the good one would have moved its pts past 2/30 s.
    later = patterns(2, 48, 64, start=2)
    memory[65536 : 65536 + later.nbytes] = later.tobytes()
    memory[131072 : 131072 + bad_audio.nbytes] = bad_audio.tobytes()
    cases = [
        (shared_chunk(11, good, size - 64), 11, "must start on a multiple of 64 and end within"),
        (shared_chunk(12, good, 100), 12, "must start on a multiple of 64"),
        (shared_chunk(13, good, 0)[:-4], 13, "carries an 8-byte offset after its header, got 4 bytes"),
        (shared_chunk(14, bad_audio, 131072, stream=1), 14, "100 samples are NaN or infinite"),
        (shared_chunk(15, patterns(1, 48, 32), 0), 15, "expected shape (frames, 3, 48, 64), got (1, 3, 48, 32)"),
        (protocol.encode_shared_chunk(0, 16, good, 0, pts=0.0), 16, "pts"),  # before the stream's end
    ]
    for message, seq, text in cases:
        ws.send(message)
        error = recv_until(ws, is_type("error"))[-1]
        assert text in error["message"], error
        assert error["seq"] == seq
    ws.send(shared_chunk(10, good, 0))  # a resend of a chunk taken: its ACK again, nothing written
    recv_until(ws, is_ack(10))
    # Refused chunks left the timeline where it was: frames 2 and 3 at their own pts are taken.
    ws.send(protocol.encode_shared_chunk(0, 17, later, 65536, pts=2 / 30))
    recv_until(ws, is_ack(17))
    ws.send(protocol.encode_control("finish"))
    recv_until(ws, is_type("closed"))
    ws.close()
    memory.close()
    (video, _) = decode(server.output_dir / "shm" / "bad.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == [0, 1, 2, 3]

    plain = create(api, [VIDEO])  # did not ask: no segment, and a shared chunk is refused by name
    assert plain["shared_memory"] is None
    ws = open_ws(plain)
    ws.send(shared_chunk(0, good, 0))
    error = recv_until(ws, is_type("error"))[-1]
    assert "refers to shared memory, but this session has none; send the payload in the message" in error["message"]
    ws.send(chunk(1, good))
    recv_until(ws, is_ack(1))
    ws.close()
    api.delete(f"/v1/sessions/{plain['id']}")


def test_the_sdk_uses_it_on_this_machine_sync_and_async(server, tmp_path):
    frames = patterns(40, 96, 128)
    audio = sine(440, 16000, 2.0, channels=2)
    writer = StreamWriter(tmp_path / "local.mkv", server=server.url)
    writer.add_video_stream(frame_rate=20, width=128, height=96, encoder="ffv1")
    writer.add_audio_stream(sample_rate=16000, num_channels=2, encoder="pcm_f32le")
    with writer.open():
        assert writer.shared_memory
        for k in range(0, 40, 4):
            writer.write_video_chunk(0, frames[k : k + 4])
            frames[k : k + 4] = 0  # the SDK copied the payload out when the write returned
        writer.write_audio_chunk(1, audio)
    video, sound = decode(tmp_path / "local.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(40))
    assert np.array_equal(sound["pcm"], audio)

    import asyncio

    async def main() -> io.BytesIO:
        sink = io.BytesIO()
        w = AsyncStreamWriter(sink, format="matroska", server=server.url)
        w.add_video_stream(frame_rate=20, width=128, height=96, encoder="ffv1")
        async with w.open():
            assert w.shared_memory
            await w.write_video_chunk(0, patterns(30, 96, 128))
        return sink

    (video,) = decode(asyncio.run(main()).getvalue())["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(30))


@pytest.fixture(scope="module")
def no_shm_server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("noshm") / "out", env={"FRAMECAST_SHARED_MEMORY": "0"})
    yield proc
    proc.stop()


def test_payloads_go_inline_when_either_side_says_no(server, no_shm_server, tmp_path):
    for url, choice in ((no_shm_server.url, None), (server.url, False)):
        writer = StreamWriter(ServerFile("shm/inline.mkv"), server=url, shared_memory=choice)
        writer.add_video_stream(frame_rate=20, width=128, height=96, encoder="ffv1")
        with writer.open():
            assert not writer.shared_memory
            writer.write_video_chunk(0, patterns(10, 96, 128))
        assert writer.summary is not None
        assert writer.summary["streams"][0]["counters"]["frames"] == 10


def test_segments_of_dead_servers_are_removed_at_start(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = os.path.join(SHM, f"framecast-{gone.pid}-0123456789abcdef")
    mine = os.path.join(SHM, f"framecast-{os.getpid()}-0123456789abcdef")  # a live process's: kept
    for path in (stale, mine):
        with open(path, "wb") as f:
            f.write(b"x" * 4096)
    try:
        proc = ServerProcess(tmp_path / "out")
        try:
            assert not os.path.exists(stale)
            assert os.path.exists(mine)
        finally:
            proc.stop()
    finally:
        for path in (stale, mine):
            if os.path.exists(path):
                os.unlink(path)


def test_regions_are_handed_out_first_in_first_out():
    regions = Regions(1024)
    assert [regions.reserve(300, key) for key in range(3)] == [0, 320, 640]
    assert not regions.has_room(100)  # 960..1024 is too small, and 0.. is still in use
    regions.release(1)  # out of order: kept until the one before it goes
    assert not regions.has_room(100)
    regions.release_through(0)  # 0 and 1 go now
    assert regions.reserve(600, 3) == 0 and len(regions) == 2
    regions.release_through(3)
    assert len(regions) == 0 and regions.reserve(1024, 4) == 0  # empty: starts over at 0
    assert Regions(1000).reserve(1001) is None


@pytest.fixture(scope="module")
def small_shm_server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("smallshm") / "out", env={"FRAMECAST_SHARED_MEMORY_BYTES": "1048576"})
    yield proc
    proc.stop()


@pytest.mark.parametrize(("wire_format", "large"), [("rgb24", 3), (None, 4)])
def test_a_full_segment_waits_and_a_payload_larger_than_it_goes_inline(small_shm_server, wire_format, large):
    """1 MiB of shared memory holds one 640x360 RGB frame (0.69 MB), or three as yuv420p (0.35 MB
    each, converted into the segment by the SDK, the default where the client has libyuv): a
    chunk that fits waits for room, and a larger one (3 RGB frames, 4 yuv420p ones) is converted
    into memory of its own, if at all, and goes over the websocket."""
    frames = patterns(9 + 3 * large, 360, 640)  # nine 1-frame chunks, three large ones
    writer = StreamWriter(ServerFile(f"shm/mixed-{large}.mkv"), server=small_shm_server.url)
    writer.add_video_stream(frame_rate=30, width=640, height=360, encoder="ffv1", wire_format=wire_format)
    before = payload_paths(small_shm_server)
    with writer.open():
        assert writer.shared_memory
        assert writer.wire_formats == ["rgb24" if wire_format else ("yuv420p" if yuv.library() else "rgb24")]
        k = 0
        for size in (1, large, 1, 1, large, 1, 1, 1, 1, 1, large, 1):
            writer.write_video_chunk(0, frames[k : k + size])
            k += size
    assert k == len(frames)
    after = payload_paths(small_shm_server)
    assert after.get("client_memory", 0) - before.get("client_memory", 0) == 9  # the chunks that fit
    (video,) = decode(small_shm_server.output_dir / "shm" / f"mixed-{large}.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(k))


@pytest.mark.parametrize(("realtime", "width", "height"), [(False, 640, 360), (True, 640, 360), (False, 322, 240)])
def test_x264_encodes_from_the_client_memory_every_frame_as_written(small_shm_server, realtime, width, height):
    """x264's frames use the client's shared memory as it is (``SessionWriter._may_lend``), and
    the client writes each region again once its chunk is acknowledged. Three 640x360 frames fit
    the segment here, so every region is written many times over: encoded losslessly (qp 0), each
    decoded frame must still be, plane for plane, exactly the frame written into it, straight
    (``realtime=False``) and through the pacer, which holds frames until they are due; and with
    chroma rows of an odd length (161 bytes at 322 wide)."""
    count = 30 if realtime else 45
    frames = patterns(count, height, width)
    name = f"shm/lent-{realtime}-{width}.mkv"
    writer = StreamWriter(ServerFile(name), server=small_shm_server.url, realtime=realtime)
    writer.add_video_stream(
        frame_rate=30, width=width, height=height, encoder="libx264", encoder_option={"preset": "ultrafast", "qp": "0"}
    )
    before = payload_paths(small_shm_server)
    with writer.open():
        assert writer.shared_memory and writer.wire_formats == ["yuv420p"]
        for k in range(count):
            writer.write_video_chunk(0, frames[k : k + 1])
    after = payload_paths(small_shm_server)
    assert after.get("client_memory", 0) - before.get("client_memory", 0) == count
    assert_planes_as_written(small_shm_server.output_dir / name, frames)


def test_a_file_through_shared_memory_is_what_pyav_in_process_writes(server):
    """The same frames, converted by the SDK into shared memory and encoded by the server's x264
    (slice threads, frames over the client's memory), give the very packets PyAV gives encoding
    them in-process from yuv420p: the issue 18 anchor, "the encoder alone", to the bit."""
    rgb = patterns(24, 240, 320)
    options = {"preset": "ultrafast"}
    writer = StreamWriter(ServerFile("shm/anchor.mp4", crash_safe=False), server=server.url)
    writer.add_video_stream(frame_rate=30, width=320, height=240, encoder="libx264", encoder_option=options)
    with writer.open():
        assert writer.shared_memory and writer.wire_formats == ["yuv420p"]
        for k in range(len(rgb)):
            writer.write_video_chunk(0, rgb[k : k + 1])
    local = io.BytesIO()
    with av.open(local, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for k, planes in enumerate(yuv.rgb_to_i420(rgb)):
            frame = av.VideoFrame.from_numpy_buffer(planes.reshape(360, 320), format="yuv420p")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    def packets(source: str | io.BytesIO) -> list[bytes]:
        with av.open(source, "r") as container:
            return [bytes(p) for p in container.demux(video=0) if p.size]

    local.seek(0)
    served = packets(str(server.output_dir / "shm" / "anchor.mp4"))
    assert len(served) == len(rgb) and served == packets(local)


def test_client_side_output_with_inline_payloads_is_intact(server):
    """Inline payloads go through the server's ring, whose space the encoder's prepare thread
    hands back while its main thread muxes output bytes for the client: both write the same pipe,
    and every message must arrive whole."""
    frames = patterns(120, 240, 320)  # lossless frames of ~100 KB: each OUTPUT takes two writes
    sink = io.BytesIO()
    writer = StreamWriter(sink, format="matroska", server=server.url, shared_memory=False)
    writer.add_video_stream(frame_rate=30, width=320, height=240, encoder="ffv1")
    with writer.open():
        assert not writer.shared_memory
        for k in range(120):
            writer.write_video_chunk(0, frames[k : k + 1])
    (video,) = decode(sink.getvalue())["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(120))
