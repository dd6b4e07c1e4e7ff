"""Property-based fuzzing (Hypothesis) of the chunk decoder and the session-config path.

Whatever bytes or JSON come in, the only outcomes are a parsed value or our own clear error:
ProtocolError for the wire format, pydantic's ValidationError or InvalidConfig for configs,
InvalidChunk for chunks that don't fit their stream. Never anything else.
"""

from __future__ import annotations

import os
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from framecast import protocol
from framecast.errors import ProtocolError
from framecast_server.chunks import ChunkChecker
from framecast_server.config import Settings
from framecast_server.errors import InvalidChunk, InvalidConfig
from framecast_server.models import SessionConfig
from framecast_server.planning.plan import make_plan

# On CI the examples are derived from the test itself (derandomize): a submission's CI run is
# repeatable. Elsewhere every run explores new inputs, and failures are kept in .hypothesis/.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile("ci" if os.environ.get("CI") else "dev")

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

headers = st.builds(
    protocol.ChunkHeader,
    stream=st.integers(0, 0xFFFF),
    seq=st.integers(0, 2**64 - 1),
    dtype=st.sampled_from(list(protocol.DType)),
    shape=st.lists(st.integers(0, 6), min_size=1, max_size=protocol.MAX_NDIM).map(tuple),
    pts=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64)),
)


@FAST
@given(st.binary(max_size=512))
def test_any_bytes_parse_or_raise_protocol_error(data):
    try:
        header, payload = protocol.parse_chunk(data)
    except ProtocolError:
        return
    assert len(payload) == header.payload_size


@FAST
@given(st.binary(min_size=2, max_size=64).map(lambda b: b"FC\x01\x01" + b))
def test_plausible_prefixes_parse_or_raise_protocol_error(data):
    try:
        protocol.parse_chunk(data)
    except ProtocolError:
        pass


@FAST
@given(headers, st.data())
def test_headers_round_trip_and_survive_bit_flips(header, data):
    payload = bytes(header.payload_size)
    message = bytearray(header.serialize() + payload)
    parsed, body = protocol.parse_chunk(bytes(message))
    assert parsed == header and len(body) == header.payload_size
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(message) - 1))
        message[position] ^= data.draw(st.integers(1, 255))
    try:
        protocol.parse_chunk(bytes(message))
    except ProtocolError:
        pass


@FAST
@given(st.binary(max_size=64))
def test_server_messages_parse_or_raise_protocol_error(data):
    for candidate in (data, b"FC\x01\x02" + data, b"FC\x01\x03" + data):
        try:
            protocol.parse_server_binary(candidate)
        except ProtocolError:
            pass


@FAST
@given(headers)
def test_chunk_checker_only_refuses_with_invalid_chunk(header):
    config = SessionConfig.model_validate(
        {
            "destination": {"type": "discard"},
            "streams": [
                {"type": "video", "frame_rate": 30, "width": 4, "height": 2},
                {"type": "audio", "sample_rate": 8000, "num_channels": 2},
            ],
        }
    )
    checker = ChunkChecker(make_plan(config, Settings()).streams)
    try:
        assert checker.check(header) >= 0
    except InvalidChunk:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)

names = st.sampled_from(["libx264", "aac", "png", "nope", "ffv1", "pcm_s16le", "libmp3lame", "rawvideo", ""])
small = st.integers(-4, 5000)
video = st.fixed_dictionaries(
    {
        "type": st.just("video"),
        "frame_rate": st.one_of(st.floats(-1, 2000), st.text(max_size=12)),
        "width": small,
        "height": small,
    },
    optional={
        "format": st.sampled_from(["rgb24", "gray8", "yuv444p", "bgr0", "rgba", ""]),
        "encoder": names,
        "encoder_format": st.sampled_from(["yuv420p", "yuv444p", "rgb24", "nv12", "bogus"]),
        "encoder_option": st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=3),
        "filter_desc": st.text(max_size=40),
        "encoder_frame_rate": st.floats(0.1, 500),
    },
)
audio = st.fixed_dictionaries(
    {"type": st.just("audio"), "sample_rate": st.integers(-1, 10**6), "num_channels": st.integers(-1, 70)},
    optional={
        "format": st.sampled_from(["flt", "s16", "u8", "dbl", "s24"]),
        "encoder": names,
        "encoder_sample_rate": st.integers(1, 200000),
        "filter_desc": st.text(max_size=40),
    },
)
destinations = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("client")}, optional={"filename": st.text(max_size=20), "seekable": st.booleans()}
    ),
    st.fixed_dictionaries({"type": st.just("server_file"), "path": st.text(min_size=1, max_size=40)}),
    st.fixed_dictionaries({"type": st.just("url"), "url": st.text(min_size=1, max_size=40)}),
    st.fixed_dictionaries({"type": st.just("discard")}),
)
configs = st.fixed_dictionaries(
    {"destination": destinations, "streams": st.lists(st.one_of(video, audio), max_size=3)},
    optional={
        "format": st.sampled_from(["mp4", "matroska", "tee", "hls", "null", "wav", "bogus"]),
        "options": st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=3),
        "metadata": st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=3),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(configs, json_values))
def test_session_configs_validate_or_refuse_clearly(tmp_path_factory, raw):
    root = tmp_path_factory.getbasetemp() / "fuzz-out"
    try:
        config = SessionConfig.model_validate(raw)
    except ValidationError:
        return
    try:
        plan = make_plan(config, Settings(output_dir=root))
    except InvalidConfig as exc:
        assert str(exc)
        return
    assert plan.streams and plan.first.muxer
    for output in plan.files:
        assert output.path is not None and output.path.startswith(str(root.resolve()))


def test_struct_sizes_match_the_documented_layout():
    assert struct.calcsize("<2sBBHBBQdB3x") == 28
    assert protocol.ChunkHeader(0, 0, protocol.DType.UINT8, (1, 2, 3)).size == 40
    assert np.dtype(protocol.DType.FLOAT64.numpy).itemsize == 8
