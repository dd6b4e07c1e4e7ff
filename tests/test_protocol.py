"""The wire format, byte for byte (pure: no I/O)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from framecast import protocol
from framecast.errors import ProtocolError


def test_chunk_header_bytes_are_exactly_as_documented():
    header = protocol.ChunkHeader(stream=1, seq=7, dtype=protocol.DType.FLOAT32, shape=(1024, 2), pts=1.5)
    data = header.serialize()
    expected = (
        b"FC"  # magic
        + bytes([1, 1])  # version 1, kind CHUNK
        + struct.pack("<H", 1)  # stream index
        + bytes([5, 1])  # dtype FLOAT32, flags: has pts
        + struct.pack("<Q", 7)  # seq
        + struct.pack("<d", 1.5)  # pts seconds
        + bytes([2, 0, 0, 0])  # ndim, reserved
        + struct.pack("<II", 1024, 2)  # shape
        + bytes(4)  # pad to 40 (a multiple of 8)
    )
    assert data == expected
    assert header.size == 40 and len(data) == 40
    assert header.payload_size == 1024 * 2 * 4


def test_video_header_without_pts():
    header = protocol.ChunkHeader(stream=0, seq=2**64 - 1, dtype=protocol.DType.UINT8, shape=(3, 3, 96, 128))
    data = header.serialize()
    assert data[6:8] == bytes([1, 0])  # uint8, no flags
    assert data[8:16] == b"\xff" * 8
    assert data[16:24] == bytes(8)
    assert data[24] == 4 and len(data) == 48  # 28 + 16 = 44, padded to 48
    assert struct.unpack_from("<4I", data, 28) == (3, 3, 96, 128)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "int64", "float32", "float64"])
def test_chunk_round_trip_for_every_dtype(dtype):
    array = (np.arange(60).reshape(10, 6) % 100).astype(dtype)
    head, payload = protocol.encode_chunk(3, 42, array, pts=0.25)
    header, body = protocol.parse_chunk(head + bytes(payload))
    assert header == protocol.ChunkHeader(3, 42, protocol.DType.from_numpy(dtype), (10, 6), 0.25)
    out = protocol.chunk_array(header, body)
    assert out.dtype == np.dtype(dtype) and np.array_equal(out, array)


def test_payload_is_a_view_not_a_copy():
    array = np.zeros((4, 2), np.float32)
    _, payload = protocol.encode_chunk(0, 0, array)
    array[0, 0] = 5
    assert np.frombuffer(payload, np.float32)[0] == 5


def test_payload_starts_aligned():
    array = np.ones((5, 3), np.float64)
    head, payload = protocol.encode_chunk(0, 0, array)
    message = bytearray(len(head) + len(payload) + 8)
    start = (-np.frombuffer(message, np.uint8).ctypes.data) % 8  # an 8-aligned place in the buffer
    message[start : start + len(head) + len(payload)] = head + bytes(payload)
    header, body = protocol.parse_chunk(memoryview(message)[start : start + len(head) + len(payload)])
    assert protocol.chunk_array(header, body).ctypes.data % 8 == 0


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:3], "too short"),
        (lambda b: b"XX" + b[2:], "bad magic"),
        (lambda b: b[:2] + bytes([9]) + b[3:], "unsupported protocol version 9"),
        (lambda b: b[:3] + bytes([2]) + b[4:], "expected a CHUNK message"),
        (lambda b: b[:6] + bytes([99]) + b[7:], "unknown dtype code 99"),
        (lambda b: b[:7] + bytes([0x80]) + b[8:], "unknown flags"),
        (lambda b: b[:24] + bytes([0]) + b[25:], "1 to 8 dimensions, got 0"),
        (lambda b: b[:24] + bytes([9]) + b[25:], "1 to 8 dimensions, got 9"),
        (lambda b: b[:20], "truncated chunk header"),
        (lambda b: b[:36], "truncated chunk header"),
        (lambda b: b[:-1], "payload is 31 bytes but shape (4, 2) of float32 needs 32"),
        (lambda b: b + b"\x00", "payload is 33 bytes"),
        (lambda b: b[:7] + bytes([1]) + b[8:16] + struct.pack("<d", float("nan")) + b[24:], "finite"),
    ],
)
def test_malformed_chunks_are_refused_with_a_reason(mutate, message):
    head, payload = protocol.encode_chunk(0, 1, np.zeros((4, 2), np.float32))
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        protocol.parse_chunk(mutate(head + bytes(payload)))


def test_encode_refuses_what_the_format_cannot_carry():
    with pytest.raises(ProtocolError, match="C-contiguous"):
        protocol.encode_chunk(0, 0, np.zeros((4, 4), np.uint8)[:, ::2])
    with pytest.raises(ProtocolError, match="unsupported dtype complex64"):
        protocol.encode_chunk(0, 0, np.zeros(3, np.complex64))
    with pytest.raises(ProtocolError, match="stream index"):
        protocol.ChunkHeader(70000, 0, protocol.DType.UINT8, (1,)).serialize()
    with pytest.raises(ProtocolError, match="finite"):
        protocol.ChunkHeader(0, 0, protocol.DType.UINT8, (1,), pts=float("inf")).serialize()


@pytest.mark.parametrize("pts", [None, 1.5])
def test_a_header_made_shared_is_the_shared_chunk_of_its_parse(pts):
    """The SDK marks a serialized header as shared in place (``shared_header``): the same bytes as
    parsing it and building the shared chunk, and parsed back to the same offset."""
    array = np.zeros((2, 3, 4, 6), dtype=np.uint8)
    header, _ = protocol.encode_chunk(1, 42, array, pts)
    made = protocol.shared_header(header, 4096)
    assert made == protocol.shared_chunk(protocol.parse_chunk_header(header), 4096)
    parsed, payload = protocol.parse_chunk(made)
    assert parsed.shared and parsed.pts == pts and protocol.shared_offset(payload) == 4096
    with pytest.raises(ProtocolError, match="compressed"):
        protocol.shared_header(protocol.compressed_header(header), 0)


def test_ack_and_output_bytes():
    assert protocol.encode_ack(258) == b"FC\x01\x02" + bytes(4) + struct.pack("<Q", 258)
    assert protocol.parse_server_binary(protocol.encode_ack(258)) == protocol.Ack(258)
    message = protocol.encode_output_header(7, 4096) + b"hello"
    assert message[:24] == b"FC\x01\x03" + bytes(4) + struct.pack("<QQ", 7, 4096)
    out = protocol.parse_server_binary(message)
    assert isinstance(out, protocol.Output) and (out.index, out.offset) == (7, 4096) and bytes(out.data) == b"hello"
    with pytest.raises(ProtocolError, match="ACK must be 16 bytes"):
        protocol.parse_server_binary(protocol.encode_ack(1) + b"x")
    with pytest.raises(ProtocolError, match="unexpected message kind 1"):
        protocol.parse_server_binary(protocol.ChunkHeader(0, 0, protocol.DType.UINT8, (0,)).serialize())


def test_control_messages():
    assert protocol.encode_control("finish") == '{"type":"finish"}'
    assert protocol.parse_control('{"type":"error","seq":3}') == {"type": "error", "seq": 3}
    for bad in ("not json", "[1,2]", '{"kind":"x"}', '{"type":5}'):
        with pytest.raises(ProtocolError):
            protocol.parse_control(bad)


def test_formats_map_to_dtypes():
    assert protocol.AUDIO_SAMPLE_FORMATS["s16"].numpy == np.dtype("<i2")
    assert protocol.AUDIO_SAMPLE_FORMATS["dbl"] is protocol.DType.FLOAT64
    assert protocol.VIDEO_PIXEL_FORMATS == {"gray8": 1, "rgb24": 3, "bgr24": 3, "rgb0": 4, "bgr0": 4, "yuv444p": 3}


# --- the shared vectors: tests/protocol_vectors.json is read by this file and by the JavaScript
# client's tests (tests/js/protocol.test.mjs), so both implementations agree byte for byte.

VECTORS = json.loads((Path(__file__).parent / "protocol_vectors.json").read_text())


@pytest.mark.parametrize("v", VECTORS["chunk_headers"], ids=lambda v: f"{v['dtype']}{v['shape']}")
def test_vector_chunk_headers(v):
    header = protocol.ChunkHeader(
        stream=v["stream"],
        seq=int(v["seq"]),
        dtype=protocol.DType.from_numpy(v["dtype"]),
        shape=tuple(v["shape"]),
        pts=v["pts"],
        shared=v["shared"],
    )
    assert header.serialize().hex() == v["hex"]
    assert protocol.parse_chunk_header(bytes.fromhex(v["hex"])) == header


@pytest.mark.parametrize("v", VECTORS["chunks"], ids=lambda v: v["dtype"])
def test_vector_chunks(v):
    values = [int(x) for x in v["values"]] if v["dtype"] == "int64" else v["values"]
    array = np.array(values, dtype=v["dtype"]).reshape(v["shape"])
    head, payload = protocol.encode_chunk(v["stream"], int(v["seq"]), array, v["pts"])
    assert (head + bytes(payload)).hex() == v["hex"]
    header, body = protocol.parse_chunk(bytes.fromhex(v["hex"]))
    assert np.array_equal(protocol.chunk_array(header, body), array)


@pytest.mark.parametrize("v", VECTORS["malformed_chunks"], ids=lambda v: v["what"])
def test_vector_malformed_chunks(v):
    with pytest.raises(ProtocolError) as err:
        protocol.parse_chunk(bytes.fromhex(v["hex"]))
    assert v["error"] in str(err.value)


def test_vector_server_messages():
    for v in VECTORS["acks"]:
        assert protocol.encode_ack(int(v["seq"])).hex() == v["hex"]
        assert protocol.parse_server_binary(bytes.fromhex(v["hex"])) == protocol.Ack(int(v["seq"]))
    for v in VECTORS["outputs"]:
        assert (
            protocol.encode_output_header(int(v["index"]), int(v["offset"])) + bytes.fromhex(v["data_hex"])
        ).hex() == v["hex"]
        out = protocol.parse_server_binary(bytes.fromhex(v["hex"]))
        assert isinstance(out, protocol.Output)
        assert (out.index, out.offset, bytes(out.data).hex()) == (int(v["index"]), int(v["offset"]), v["data_hex"])
    for v in VECTORS["malformed_server_binary"]:
        with pytest.raises(ProtocolError) as err:
            protocol.parse_server_binary(bytes.fromhex(v["hex"]))
        assert v["error"] in str(err.value), v["what"]


def test_vector_controls_and_formats():
    for v in VECTORS["controls"]:
        assert protocol.encode_control(v["type"], **v["fields"]) == v["text"]
        assert protocol.parse_control(v["text"]) == {"type": v["type"], **v["fields"]}
    for text in VECTORS["malformed_controls"]:
        with pytest.raises(ProtocolError):
            protocol.parse_control(text)
    assert {k: int(d) for k, d in protocol.AUDIO_SAMPLE_FORMATS.items()} == VECTORS["audio_sample_formats"]
    assert protocol.VIDEO_PIXEL_FORMATS == VECTORS["video_pixel_formats"]
    assert {d.label: int(d) for d in protocol.DType} == VECTORS["dtypes"]
