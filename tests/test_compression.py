"""Compressed chunk payloads (``compression="zstd"``): lossless, fewer bytes on the link, exactly
once across reconnects; what the server refuses it names, and a payload that does not decompress
fails its session with the reason, never the server."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import zstandard

from framecast import ServerFile, StreamWriter, protocol
from framecast.errors import InvalidConfig

from .conftest import ServerProcess
from .faults import CuttingProxy
from .media import decode, read_stamp, stamp
from .test_api import create, is_ack, is_type, open_ws, recv_until

W, H = 320, 240
VIDEO = {"type": "video", "frame_rate": 30, "width": W, "height": H}
AUDIO = {"type": "audio", "sample_rate": 48000, "num_channels": 2}


def rendered(count: int, start: int = 0) -> np.ndarray:
    """Frames as a renderer or a simulator makes them: flat shading, a moving box, a stamp."""
    frames = np.empty((count, 3, H, W), np.uint8)
    for i in range(count):
        n = start + i
        frames[i] = np.array([30, 60, 90], np.uint8)[:, None, None]
        frames[i, :, 80:160, (n * 3) % 200 : (n * 3) % 200 + 60] = np.array([220, 180, 40], np.uint8)[:, None, None]
        stamp(frames[i], n)
    return frames


def noisy(count: int) -> np.ndarray:
    """Frames no lossless compressor shrinks: sensor noise over everything."""
    frames = np.random.default_rng(3).integers(0, 256, (count, 3, H, W), dtype=np.uint8)
    for i in range(count):
        stamp(frames[i], i)
    return frames


def write(
    server: ServerProcess, path: str, frames: np.ndarray, compression: str, cuts: int = 0, wire_format: str = "auto"
) -> tuple[int, int]:
    """Write ``frames`` through a proxy that counts (and cuts); (bytes on the link, reconnects)."""
    with CuttingProxy(server.port, cuts=cuts, min_bytes=2_000, max_bytes=40_000, seed=5) as proxy:
        writer = StreamWriter(
            ServerFile(path, overwrite=True),
            format="matroska",
            server=proxy.url,
            shared_memory=False,
            compression=compression,
            reconnect_timeout=20,
        )
        writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1", wire_format=wire_format)
        with writer.open():
            assert writer.compression == ("none" if compression == "none" else "zstd")
            for k in range(0, len(frames), 4):
                writer.write_video_chunk(0, frames[k : k + 4])
        assert proxy.cuts == cuts
        return proxy.stream_bytes, writer.reconnects


def frames_of(server: ServerProcess, path: str) -> list[np.ndarray]:
    (video,) = decode(server.output_dir / path)["streams"]
    return video["frames"]


def test_compressed_payloads_are_lossless_and_far_fewer_bytes(server: ServerProcess) -> None:
    frames = rendered(48)
    sent = {mode: write(server, f"zstd/{mode}.mkv", frames, mode)[0] for mode in ("zstd", "none")}
    compressed, plain = frames_of(server, "zstd/zstd.mkv"), frames_of(server, "zstd/none.mkv")
    assert [read_stamp(f) for f in compressed] == list(range(48))
    assert all(np.array_equal(a, b) for a, b in zip(compressed, plain, strict=True))  # the very same pictures
    raw = 48 * W * H * 3 // 2  # yuv420p on the wire
    assert sent["none"] > raw and sent["zstd"] < raw / 10, sent


def test_payloads_that_do_not_shrink_go_as_they_are(server: ServerProcess) -> None:
    frames = noisy(24)
    sent, _ = write(server, "zstd/noisy.mkv", frames, "zstd", wire_format="rgb24")
    assert [read_stamp(f) for f in frames_of(server, "zstd/noisy.mkv")] == list(range(24))
    assert sent > frames.nbytes  # every payload raw (and the headers): compressing would not have paid


def test_chunks_arrive_exactly_once_across_reconnects_with_compression_on(server: ServerProcess) -> None:
    frames = rendered(160)
    _, reconnects = write(server, "zstd/cut.mkv", frames, "zstd", cuts=4)
    assert reconnects >= 1
    assert [read_stamp(f) for f in frames_of(server, "zstd/cut.mkv")] == list(range(160))


def test_auto_leaves_a_loopback_server_alone(server: ServerProcess) -> None:
    writer = StreamWriter(ServerFile("zstd/auto.mkv", overwrite=True), server=server.url, compression="auto")
    writer.add_video_stream(frame_rate=30, width=W, height=H)
    with writer.open():
        assert writer.compression == "none"
        writer.write_video_chunk(0, rendered(2))


def test_an_unknown_mode_is_refused_by_name(server: ServerProcess, api: httpx.Client) -> None:
    with pytest.raises(InvalidConfig, match="compression must be one of 'none', 'zstd', 'auto', got 'brotli'"):
        StreamWriter(ServerFile("x.mkv"), server=server.url, compression="brotli")
    response = api.post(
        "/v1/sessions",
        json={"destination": {"type": "discard"}, "streams": [VIDEO], "compression": "lz4"},
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "compression", response.text
    assert "zstd" in api.get("/v1/capabilities").json()["compression"]


def chunk_message(seq: int, frames: np.ndarray, payload: bytes, stream: int = 0) -> list[bytes]:
    """A CHUNK with the compressed flag and ``payload`` in place of ``frames``'s bytes."""
    head, _ = protocol.encode_chunk(stream, seq, np.ascontiguousarray(frames))
    return [protocol.compressed_header(head), payload]


def zstd(data: bytes, write_content_size: bool = True, write_checksum: bool = False) -> bytes:
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=write_content_size, write_checksum=write_checksum)
    return compressor.compress(data)


def test_what_the_server_refuses_it_names(api: httpx.Client) -> None:
    frame = rendered(1)
    plain = create(api, [VIDEO])
    ws = open_ws(plain)
    ws.send(chunk_message(0, frame, zstd(frame.tobytes())))
    error = recv_until(ws, is_type("error"))[-1]
    assert error["code"] == "invalid_chunk" and "created with compression 'none'" in error["message"], error
    ws.close()

    created = create(api, [VIDEO, AUDIO], compression="zstd")
    ws = open_ws(created)
    cases = [
        (chunk_message(0, frame, zstd(frame.tobytes()[:-300])), "decompresses to 230100 bytes, but shape"),
        (chunk_message(0, frame, b"not zstd at all"), "not a zstd frame"),
        (chunk_message(0, frame, zstd(frame.tobytes(), write_content_size=False)), "does not say how large"),
        (chunk_message(0, frame, b"\x28\xb5\x2f\xfd" + bytes(frame.nbytes)), "compressed payload is shorter than"),
        (
            chunk_message(0, np.zeros((48000, 2), np.float32), zstd(bytes(48000 * 8)), stream=1),
            "only video payloads may be compressed",
        ),
    ]
    for message, text in cases:
        ws.send(message)
        error = recv_until(ws, is_type("error"))[-1]
        assert error["code"] == "invalid_chunk" and text in error["message"], (text, error)
    ws.send(chunk_message(0, frame, zstd(frame.tobytes(), write_content_size=True)))
    recv_until(ws, is_ack(0))
    ws.send(protocol.encode_control(protocol.FINISH))
    recv_until(ws, is_type("closed"))
    ws.close()


def test_a_payload_that_does_not_decompress_fails_its_session_not_the_server(
    api: httpx.Client, server: ServerProcess
) -> None:
    frame = rendered(1)
    created = create(api, [VIDEO], compression="zstd")
    ws = open_ws(created)
    corrupt = bytearray(zstd(frame.tobytes(), write_checksum=True))
    corrupt[len(corrupt) // 2] ^= 0xFF  # the frame header still says the right size
    ws.send(chunk_message(0, frame, bytes(corrupt)))
    failed = recv_until(ws, is_type("failed"))[-1]
    assert "chunk 0: the zstd payload does not decompress" in failed["reason"], failed
    ws.close()
    assert api.get(f"/v1/sessions/{created['id']}").json()["state"] == "failed"
    test_auto_leaves_a_loopback_server_alone(server)  # the server goes on
