"""Video frames on the wire as yuv420p (``wire_format``): the client's conversion is the server's,
plane for plane; the server agrees only where the picture comes out the same; what it refuses it
names; and chunks still arrive exactly once across reconnects."""

from __future__ import annotations

import io
from typing import Any

import av
import httpx
import numpy as np
import pytest

from framecast import ServerFile, StreamWriter, yuv
from framecast.errors import InvalidConfig
from framecast_server import libyuv

from .conftest import ServerProcess, payload_paths
from .faults import CuttingProxy
from .media import assert_planes_as_written, decode, patterns, read_stamp

W, H = 160, 120


def server_planes(frame_chw: np.ndarray, in_format: str = "rgb24") -> np.ndarray:
    """What the server's encoder gets from one (C, H, W) frame: libyuv's planes, back to back."""
    h, w = frame_chw.shape[1:]
    converted = av.VideoFrame(w, h, "yuv420p")
    libyuv.RgbToI420(in_format, w, h).convert(frame_chw, converted)
    rows = [
        np.frombuffer(memoryview(plane), np.uint8).reshape(ph, plane.line_size)[:, :pw]
        for plane, (ph, pw) in zip(converted.planes, [(h, w), (h // 2, w // 2), (h // 2, w // 2)])
    ]
    return np.concatenate([r.reshape(-1) for r in rows])


def realistic(count: int) -> np.ndarray:
    """Frames with edges, gradients and noise (not only smooth synthetic ones), (T, 3, H, W)."""
    rng = np.random.default_rng(5)
    frames = patterns(count, H, W).astype(np.int16)
    frames[:, :, 40:80, 30:130] = rng.integers(0, 256, (count, 3, 40, 100))  # a noisy block: sharp chroma
    frames[:, 0, :, ::7] = 255  # hard red lines
    return frames.clip(0, 255).astype(np.uint8)


needs_libyuv = pytest.mark.skipif(not libyuv.available(), reason="scripts/system-deps installs libyuv0")


@needs_libyuv
@pytest.mark.parametrize("in_format", ["rgb24", "bgr24", "rgb0"])
def test_the_clients_conversion_is_the_servers(in_format: str) -> None:
    channels = 4 if in_format.endswith("0") else 3
    frames = realistic(3)
    if channels == 4:
        frames = np.concatenate([frames, np.full((3, 1, H, W), 77, np.uint8)], axis=1)
    expected = np.stack([server_planes(f, in_format) for f in frames])
    with_libyuv = yuv.rgb_to_i420(frames, in_format, use_libyuv=True)
    assert np.array_equal(with_libyuv, expected)  # the same library: bit for bit
    with_numpy = yuv.rgb_to_i420(frames, in_format, use_libyuv=False)
    assert with_numpy.shape == (3, W * H * 3 // 2)
    difference = np.abs(with_numpy.astype(int) - expected.astype(int))
    assert difference.max() <= 1, difference.max()  # within a level: libyuv's SIMD rounds its averages
    luma = W * H
    assert np.array_equal(with_numpy[:, :luma], expected[:, :luma])  # Y is exact


def test_torch_converts_where_the_tensor_is_as_numpy_does() -> None:
    torch = pytest.importorskip("torch")
    frames = realistic(2)
    on_cpu = yuv._torch(torch.from_numpy(frames), (0, 1, 2))  # the device path, run on the CPU
    assert isinstance(on_cpu, torch.Tensor) and on_cpu.dtype == torch.uint8
    assert np.array_equal(on_cpu.numpy(), yuv.rgb_to_i420(frames, use_libyuv=False))
    if not torch.cuda.is_available():
        pytest.skip("no GPU here: the CUDA path ran on the CPU above")
    on_gpu = yuv.rgb_to_i420(torch.from_numpy(frames).cuda())
    assert on_gpu.device.type == "cuda" and np.array_equal(on_gpu.cpu().numpy(), on_cpu.numpy())


@pytest.mark.parametrize("shape", [(1, 3, 121, 160), (1, 3, 120, 161), (1, 2, 120, 160), (3, 120, 160)], ids=str)
def test_what_cannot_be_converted_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected \\(frames"):
        yuv.rgb_to_i420(np.zeros(shape, np.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        yuv.rgb_to_i420(np.zeros((1, 3, 120, 160), np.float32))


# -- what the server agrees to ------------------------------------------------------------------


def stream(**fields: Any) -> dict[str, Any]:
    return {"type": "video", "frame_rate": 30, "width": W, "height": H, **fields}


def created(api: httpx.Client, **fields: Any) -> httpx.Response:
    return api.post("/v1/sessions", json={"destination": {"type": "discard"}, "streams": [stream(**fields)]})


@pytest.mark.parametrize(
    ("fields", "wire"),
    [
        ({}, "rgb24"),
        ({"wire_format": "rgb24"}, "rgb24"),
        ({"wire_format": "yuv420p"}, "yuv420p"),
        ({"wire_format": "yuv420p", "format": "bgr0"}, "yuv420p"),
        ({"wire_format": "auto"}, "yuv420p" if libyuv.available() else "rgb24"),
        ({"wire_format": "auto", "filter_desc": "hflip"}, "rgb24"),
        ({"wire_format": "auto", "encoder_width": 80, "encoder_height": 60}, "rgb24"),
        ({"wire_format": "auto", "format": "gray8"}, "gray8"),
        ({"wire_format": "auto", "encoder_format": "yuv444p"}, "rgb24"),
    ],
)
def test_the_server_says_how_frames_cross_the_wire(api: httpx.Client, fields: dict[str, Any], wire: str) -> None:
    response = created(api, **fields)
    assert response.status_code == 201, response.text
    assert response.json()["streams"][0]["config"]["wire_format"] == wire
    api.delete(f"/v1/sessions/{response.json()['id']}")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"wire_format": "yuv420p", "format": "yuv444p"}, "its format is 'yuv444p', not RGB"),
        ({"wire_format": "yuv420p", "encoder_format": "yuv444p"}, "its encoder takes 'yuv444p', not yuv420p"),
        ({"wire_format": "yuv420p", "encoder_width": 80, "encoder_height": 60}, "it is scaled (160x120 to 80x60)"),
        ({"wire_format": "yuv420p", "encoder_frame_rate": 15}, "its frame rate is converted"),
        ({"wire_format": "yuv420p", "filter_desc": "hflip"}, "it has a filter_desc"),
        ({"wire_format": "rgb24", "format": "bgr24"}, "rgb24 frames on the wire, but the stream's format is 'bgr24'"),
    ],
)
def test_a_wire_format_that_does_not_fit_is_refused_naming_it(
    api: httpx.Client, fields: dict[str, Any], message: str
) -> None:
    response = created(api, **fields)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "streams.0.wire_format" and message in error["message"], error


def test_an_unknown_wire_format_is_refused(api: httpx.Client) -> None:
    response = created(api, wire_format="nv12")
    assert response.status_code == 422 and response.json()["error"]["field"] == "streams.0.wire_format"
    with pytest.raises(InvalidConfig, match="unknown wire_format 'nv12'"):
        StreamWriter(io.BytesIO()).add_video_stream(30, W, H, wire_format="nv12")


def test_a_chunk_of_the_wrong_shape_for_yuv420p_is_refused_by_the_server(server: ServerProcess) -> None:
    from websockets.sync.client import connect

    from framecast import protocol

    body = created(httpx.Client(base_url=server.url, timeout=30), wire_format="yuv420p").json()
    with connect(body["stream_url"], additional_headers={"Authorization": f"Bearer {body['token']}"}) as ws:
        head, payload = protocol.encode_chunk(0, 0, np.zeros((1, 3, H, W), np.uint8))  # RGB, not planes
        ws.send(head + bytes(payload))
        error = None
        for _ in range(20):
            message = ws.recv(timeout=10)
            if isinstance(message, str) and '"error"' in message:
                error = message
                break
    assert error is not None
    assert f"expected shape (frames, {W * H * 3 // 2}) (yuv420p planes: wire_format), got (1, 3, {H}, {W})" in error
    httpx.delete(f"{server.url}/v1/sessions/{body['id']}", timeout=30)


# -- end to end ---------------------------------------------------------------------------------


@needs_libyuv
def test_every_path_gives_the_same_output(server: ServerProcess) -> None:
    """Converted by the client (libyuv) straight into shared memory, by the client for the
    websocket, or by the server (libyuv) from RGB in shared memory: the same planes, so the same
    encoded bytes (bitexact muxing). The first path is the SDK's default on this machine, and its
    payloads do go through shared memory, not the websocket."""
    frames = realistic(30)
    outputs: dict[str, bytes] = {}
    for path, shared, wire, wire_format in (
        ("converted into shared memory", True, None, "yuv420p"),
        ("converted for the websocket", False, None, "yuv420p"),
        ("RGB through shared memory", True, "rgb24", "rgb24"),
    ):
        before = payload_paths(server)
        out = io.BytesIO()
        writer = StreamWriter(out, format="matroska", server=server.url, shared_memory=shared)
        writer.add_video_stream(30, W, H, encoder="libx264", encoder_option={"preset": "ultrafast"}, wire_format=wire)
        with writer.open({"fflags": "+bitexact"}):
            assert writer.wire_formats == [wire_format], path
            for k in range(0, len(frames), 3):
                writer.write_video_chunk(0, frames[k : k + 3])
        after = payload_paths(server)
        through_shm = after.get("client_memory", 0) - before.get("client_memory", 0)
        assert through_shm == (10 if shared else 0), path
        outputs[path] = out.getvalue()
    assert len(set(outputs.values())) == 1, [len(v) for v in outputs.values()]


@needs_libyuv
def test_rgb_converted_into_shared_memory_keeps_every_frame_across_cut_connections(server: ServerProcess) -> None:
    """Payloads converted straight into shared memory are resent from there after a reconnect,
    exactly once each."""
    frames = patterns(120, H, W)
    # Through shared memory a chunk message is its header and offset: cut after few bytes.
    with CuttingProxy(server.port, cuts=4, min_bytes=100, max_bytes=600, seed=5) as proxy:
        writer = StreamWriter(
            ServerFile("wire/cut-shm.mkv", overwrite=True),
            format="matroska",
            server=proxy.url,
            shared_memory=True,
            reconnect_timeout=20,
        )
        writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
        with writer.open():
            assert writer.wire_formats == ["yuv420p"] and writer.shared_memory
            for k in range(0, len(frames), 2):
                writer.write_video_chunk(0, frames[k : k + 2])
        assert proxy.cuts == 4
    assert writer.reconnects >= 1
    (video,) = decode(server.output_dir / "wire" / "cut-shm.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(120))


def test_yuv420p_chunks_arrive_exactly_once_across_cut_connections(server: ServerProcess) -> None:
    frames = patterns(120, H, W)
    with CuttingProxy(server.port, cuts=4, min_bytes=50_000, max_bytes=400_000, seed=11) as proxy:
        writer = StreamWriter(
            ServerFile("wire/cut.mkv", overwrite=True),
            format="matroska",
            server=proxy.url,
            shared_memory=False,
            reconnect_timeout=20,
        )
        writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1", wire_format="yuv420p")
        with writer.open():
            for k in range(0, len(frames), 4):
                writer.write_video_chunk(0, frames[k : k + 4])
        assert proxy.cuts == 4
    assert writer.reconnects >= 1
    (video,) = decode(server.output_dir / "wire" / "cut.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(120))


def test_torch_tensors_are_converted_before_they_are_sent(server: ServerProcess) -> None:
    torch = pytest.importorskip("torch")
    frames = torch.from_numpy(patterns(20, H, W))
    out = io.BytesIO()
    writer = StreamWriter(out, format="matroska", server=server.url, shared_memory=False)
    writer.add_video_stream(30, W, H, encoder="ffv1", wire_format="yuv420p")
    with writer.open():
        writer.write_video_chunk(0, frames)
    (video,) = decode(out.getvalue())["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(20))
    assert video["frames"][0].shape == (H, W, 3)


@needs_libyuv
@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_x264_frames_from_the_websocket_are_the_planes_written(server: ServerProcess, compression: str) -> None:
    """A payload the encoder process unmasks (left masked in the ring) or decompresses goes into
    memory of its own, and the chunk's frames are built over it, without a copy. Encoded
    losslessly (qp 0), every decoded frame is, plane for plane, exactly the one written, however
    far the encoder's prepare stage runs ahead."""
    count = 24
    frames = patterns(count, 360, 640)
    name = f"wire/own-{compression}.mkv"
    writer = StreamWriter(ServerFile(name), server=server.url, shared_memory=False, compression=compression)
    writer.add_video_stream(30, 640, 360, encoder="libx264", encoder_option={"preset": "ultrafast", "qp": "0"})
    before = payload_paths(server)
    with writer.open():
        assert writer.wire_formats == ["yuv420p"] and writer.compression == compression
        for k in range(count):
            writer.write_video_chunk(0, frames[k : k + 1])
    after = payload_paths(server)
    # Into the ring as they came (a large payload, placed), or copied there (a small zstd frame).
    path = "placed" if compression == "none" else "copied"
    assert after.get(path, 0) - before.get(path, 0) == count
    assert_planes_as_written(server.output_dir / name, frames)
