"""RGB frames for yuv420p encoders are converted with libyuv (``framecast_server/libyuv.py``).

The conversion itself against the exact BT.601 transform; then through real servers: an encode
with x264 at qp 0 (lossless, so the decoded planes are exactly what the encoder was given) holds
libyuv's conversion of every input frame with the default settings, and swscale's with
FRAMECAST_RGB_CONVERSION=swscale; formats and sizes libyuv does not take still go through swscale.
"""

from __future__ import annotations

from typing import Any

import av
import httpx
import numpy as np
import pytest

import framecast
from framecast_server import libyuv
from framecast_server.config import Settings

from .conftest import ServerProcess
from .media import decode, patterns

LOSSLESS = {"qp": "0", "preset": "ultrafast"}


def exact_bt601(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Limited-range BT.601 Y, and Cb, Cr as the mean of each 2x2 block, in floats, from (H, W, 3)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape

    def block_mean(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    return y, block_mean(cb), block_mean(cr)


def planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The Y, U and V planes of a yuv420p frame, without line padding."""
    out = []
    for plane, (w, h) in zip(frame.planes, [(frame.width, frame.height)] + [(frame.width // 2, frame.height // 2)] * 2):
        rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        out.append(rows[:h, :w].copy())
    return out


def libyuv_planes(chw: np.ndarray, pixel_format: str = "rgb24") -> list[np.ndarray]:
    _, height, width = chw.shape
    frame = av.VideoFrame(width, height, "yuv420p")
    libyuv.RgbToI420(pixel_format, width, height).convert(chw, frame)
    return planes(frame)


def swscale_planes(chw: np.ndarray) -> list[np.ndarray]:
    """What PyAV's encode would hand x264 for an rgb24 frame (its default conversion)."""
    packed = np.ascontiguousarray(chw.transpose(1, 2, 0))
    return planes(av.VideoFrame.from_ndarray(packed, format="rgb24").reformat(format="yuv420p"))


@pytest.mark.parametrize("pixel_format", ["rgb24", "bgr24", "rgb0", "bgr0"])
def test_libyuv_matches_the_exact_transform(pixel_format):
    rgb = patterns(1, 72, 128, start=5)[0]  # (3, H, W), R G B
    order = {"rgb24": [0, 1, 2], "rgb0": [0, 1, 2], "bgr24": [2, 1, 0], "bgr0": [2, 1, 0]}[pixel_format]
    chw = rgb[order]
    if pixel_format.endswith("0"):  # a 4th channel, ignored
        chw = np.concatenate([chw, np.full((1, 72, 128), 77, np.uint8)])
    y, u, v = libyuv_planes(chw, pixel_format)
    exact = exact_bt601(rgb.transpose(1, 2, 0))
    for name, got, want in zip("YUV", (y, u, v), exact):
        error = np.abs(got - want)
        assert error.mean() < 0.6 and error.max() <= 2, f"{name}: mean {error.mean():.2f}, max {error.max():.2f}"
    # Luma is what swscale makes too (the two differ in how they filter chroma).
    assert np.abs(y.astype(int) - swscale_planes(rgb)[0]).max() <= 1


def test_libyuv_takes_rows_with_a_stride():
    wide = patterns(1, 48, 96)[0]
    view = wide[:, :, 16:80]  # 64 columns of every 96-byte row
    expected = libyuv_planes(np.ascontiguousarray(view))
    for got, want in zip(libyuv_planes(view), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("width", "height"), [(2, 2), (18, 10), (130, 66), (1280, 720)])
def test_the_4_byte_path_makes_the_planes_the_3_byte_path_does(width, height):
    """``PlanesToI420`` merges into 4-byte pixels (ARGBToI420) where libyuv has it, the faster
    path; into 3-byte ones (RAWToI420) otherwise: the same planes, bit for bit, at widths that
    the SIMD rows cover whole and at widths they do not."""
    if not framecast.yuv.has_packed_4():
        pytest.skip("this libyuv has only the 3-byte path")
    rng = np.random.default_rng(width)
    r, g, b = rng.integers(0, 256, (3, height, width), dtype=np.uint8)
    out = {}
    for packed_4 in (True, False):
        planes = np.zeros(framecast.yuv.frame_bytes(width, height), np.uint8)
        y = planes.ctypes.data
        u, v = y + width * height, y + width * height + (width // 2) * (height // 2)
        framecast.yuv.PlanesToI420(width, height, packed_4).convert(r, g, b, (y, width, u, width // 2, v, width // 2))
        out[packed_4] = planes
    np.testing.assert_array_equal(out[True], out[False])
    assert out[True][: width * height].any()


def test_a_frame_of_another_shape_is_refused_with_both_shapes():
    converter = libyuv.RgbToI420("rgb24", 64, 48)
    frame = av.VideoFrame(64, 48, "yuv420p")
    with pytest.raises(ValueError, match=r"expected a \(3\+, 48, 64\) uint8 frame .* got \(3, 48, 62\)"):
        converter.convert(np.zeros((3, 48, 62), np.uint8), frame)


@pytest.mark.parametrize(
    ("case", "args", "expected"),
    [
        ("rgb24 to yuv420p", ("rgb24", 64, 48, "yuv420p", 64, 48), True),
        ("bgr0 to yuv420p", ("bgr0", 64, 48, "yuv420p", 64, 48), True),
        ("scaled", ("rgb24", 64, 48, "yuv420p", 32, 24), False),
        ("odd width", ("rgb24", 63, 48, "yuv420p", 63, 48), False),
        ("to yuv444p", ("rgb24", 64, 48, "yuv444p", 64, 48), False),
        ("from gray8", ("gray8", 64, 48, "yuv420p", 64, 48), False),
        ("from yuv444p", ("yuv444p", 64, 48, "yuv420p", 64, 48), False),
    ],
)
def test_what_libyuv_converts(case, args, expected):
    assert libyuv.applies(*args) is expected, case


def encode_lossless(
    server: ServerProcess, name: str, frames: np.ndarray, pixel_format: str = "rgb24", **stream: Any
) -> list[list[np.ndarray]]:
    """Encode ``frames`` at qp 0 into server file ``name``; the decoded yuv420p planes of each frame."""
    _, _, height, width = frames.shape
    writer = framecast.StreamWriter(framecast.ServerFile(name), server=server.url)
    writer.add_video_stream(
        frame_rate=30,
        width=width,
        height=height,
        format=pixel_format,
        encoder="libx264",
        encoder_format="yuv420p",
        encoder_option=LOSSLESS,
        **stream,
    )
    with writer.open():
        writer.write_video_chunk(0, frames)
    with av.open(str(server.output_dir / name)) as container:
        decoded = [planes(frame) for frame in container.decode(video=0)]
    assert len(decoded) == len(frames)
    return decoded


def test_the_encoder_is_given_libyuv_frames(server):
    with httpx.Client(base_url=server.url) as api:
        assert api.get("/v1/capabilities").json()["rgb_conversion"] == "libyuv"
    frames = patterns(6, 72, 128)
    for i, got in enumerate(encode_lossless(server, "libyuv.mkv", frames)):
        for name, plane, want in zip("YUV", got, libyuv_planes(frames[i])):
            np.testing.assert_array_equal(plane, want, err_msg=f"frame {i} plane {name}")


def test_bgr_frames_are_converted_with_their_channels_swapped(server):
    rgb = patterns(3, 72, 128)
    got = encode_lossless(server, "bgr.mkv", np.ascontiguousarray(rgb[:, ::-1]), pixel_format="bgr24")
    for i in range(3):
        for plane, want in zip(got[i], libyuv_planes(rgb[i])):
            np.testing.assert_array_equal(plane, want)


def test_with_swscale_the_encoder_is_given_swscale_frames(own_server):
    server = own_server(FRAMECAST_RGB_CONVERSION="swscale")
    with httpx.Client(base_url=server.url) as api:
        assert api.get("/v1/capabilities").json()["rgb_conversion"] == "swscale"
    frames = patterns(4, 72, 128)
    got = encode_lossless(server, "swscale.mkv", frames)
    for i in range(4):
        for plane, want in zip(got[i], swscale_planes(frames[i])):
            np.testing.assert_array_equal(plane, want)
    # and the two differ, so the test above tells which one ran
    assert any(not np.array_equal(a, b) for a, b in zip(got[0], libyuv_planes(frames[0])))


def test_a_scaled_stream_still_converts_with_swscale(server):
    frames = patterns(4, 72, 128)
    writer = framecast.StreamWriter(framecast.ServerFile("scaled.mp4"), server=server.url)
    writer.add_video_stream(frame_rate=30, width=128, height=72, encoder_width=64, encoder_height=36)
    with writer.open():
        writer.write_video_chunk(0, frames)
    (video,) = decode(server.output_dir / "scaled.mp4")["streams"]
    assert (video["width"], video["height"], video["frame_count"]) == (64, 36, 4)


def test_an_unknown_conversion_is_refused_at_startup(tmp_path):
    refused = r"FRAMECAST_RGB_CONVERSION: .*'auto', 'libyuv' or 'swscale' \(got 'opencv'\)"
    with pytest.raises(RuntimeError, match=refused):
        ServerProcess(tmp_path / "out", env={"FRAMECAST_RGB_CONVERSION": "opencv"})


def test_libyuv_asked_for_by_name_must_load(monkeypatch):
    monkeypatch.setattr(libyuv, "library", lambda: None)  # a machine without libyuv0
    with pytest.raises(ValueError, match=r"libyuv \(libyuv.so.0\) cannot be loaded: install Debian's libyuv0"):
        Settings(rgb_conversion="libyuv")
    assert Settings(rgb_conversion="auto").rgb_converter == "swscale"
