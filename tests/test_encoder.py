"""The PyAV layer alone: SessionWriter into files and BytesIO, decoded and checked."""

from __future__ import annotations

import io
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from framecast import yuv
from framecast_server.config import Settings
from framecast_server.encoder.errors import SetupError
from framecast_server.encoder.preview import Previewer
from framecast_server.encoder.writer import (
    SLICED_FILES_MAX_CORES,
    Memory,
    SessionWriter,
    _threading,
    _video_filter_steps,
)
from framecast_server.models import SessionConfig
from framecast_server.planning.plan import VideoPlan, make_plan

from .media import decode, dominant_frequency, patterns, psnr, read_stamp, sine


def writer_for(tmp_path, streams, filename="out.mkv", **extra):
    config = SessionConfig.model_validate(
        {"destination": {"type": "server_file", "path": filename}, "streams": streams, **extra}
    )
    plan = make_plan(config, Settings(output_dir=tmp_path))
    writer = SessionWriter(plan)
    writer.start_files()
    return writer, plan.first.path


def video(**kw):
    return {"type": "video", "frame_rate": 30, "width": 64, "height": 48, **kw}


def audio(**kw):
    return {"type": "audio", "sample_rate": 16000, "num_channels": 2, **kw}


def to_input(rgb_frames: np.ndarray, fmt: str) -> np.ndarray:
    """(T, 3, H, W) RGB -> the (T, C, H, W) layout of input pixel format ``fmt``."""
    if fmt == "rgb24":
        return rgb_frames
    if fmt == "bgr24":
        return rgb_frames[:, ::-1].copy()
    if fmt in ("rgb0", "bgr0"):
        order = rgb_frames if fmt == "rgb0" else rgb_frames[:, ::-1]
        return np.concatenate([order, np.zeros_like(order[:, :1])], axis=1)
    if fmt == "gray8":
        return rgb_frames[:, :1].copy()
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["rgb24", "bgr24", "rgb0", "bgr0", "gray8"])
def test_every_packed_pixel_format_arrives_exactly(tmp_path, fmt):
    # ffv1 is lossless and takes RGB and gray as they are: decoded pixels must equal the input.
    rgb = patterns(6, 48, 64)
    encoder_format = "gray" if fmt == "gray8" else "bgr0"
    w, path = writer_for(tmp_path, [video(format=fmt, encoder="ffv1", encoder_format=encoder_format)])
    w.write(0, to_input(rgb, fmt), None)
    w.close()
    (out,) = decode(path)["streams"]
    assert out["codec"] == "ffv1" and out["frame_count"] == 6
    expected = rgb.transpose(0, 2, 3, 1)
    if fmt == "gray8":
        expected = np.repeat(rgb[:, :1].transpose(0, 2, 3, 1), 3, axis=3)
    assert np.array_equal(np.stack(out["frames"]), expected)


def test_yuv444p_input_is_planar(tmp_path):
    rng = np.random.default_rng(0)
    planes = rng.integers(16, 235, (4, 3, 48, 64), dtype=np.uint8)
    w, path = writer_for(tmp_path, [video(format="yuv444p", encoder="ffv1")])
    w.write(0, planes, None)
    w.close()
    with av.open(path) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"
        frames = [f.to_ndarray(format="yuv444p") for f in c.decode(video=0)]
    assert np.array_equal(np.stack(frames), planes)


@pytest.mark.parametrize(
    "fmt, dtype, encoder, scale",
    [
        ("u8", np.uint8, "pcm_u8", None),
        ("s16", np.int16, "pcm_s16le", None),
        ("s32", np.int32, "pcm_s32le", None),
        ("s64", np.int64, "pcm_s32le", None),
        ("flt", np.float32, "pcm_f32le", None),
        ("dbl", np.float64, "pcm_f64le", None),
    ],
)
def test_every_sample_format_is_taken(tmp_path, fmt, dtype, encoder, scale):
    wave = sine(440, 16000, 0.5, channels=2, amplitude=0.5).astype(np.float64)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2
        samples = (mid + wave * (info.max - mid)).astype(dtype)
    else:
        samples = wave.astype(dtype)
    w, path = writer_for(tmp_path, [audio(format=fmt, encoder=encoder)])
    w.write(0, samples, None)
    w.close()
    (out,) = decode(path)["streams"]
    assert out["sample_count"] == 8000 and out["channels"] == 2
    assert abs(dominant_frequency(out["pcm"][:, 0].astype(np.float64), 16000) - 440) < 3


def test_frame_rate_size_and_filter_conversions(tmp_path):
    frames = patterns(60, 48, 64)
    w, path = writer_for(
        tmp_path,
        [video(encoder_frame_rate=15, encoder_width=128, encoder_height=96, filter_desc="hflip")],
        "conv.mp4",
    )
    w.write(0, frames, None)
    w.close()
    (out,) = decode(path)["streams"]
    assert (out["width"], out["height"]) == (128, 96)
    assert out["average_rate"] == 15
    assert 29 <= out["frame_count"] <= 31  # 2 s at 15 fps
    # Frame k of the output shows input frame 2k, mirrored and scaled up.
    decoded = out["frames"][5]
    small = decoded.reshape(48, 2, 64, 2, 3).mean(axis=(1, 3))
    expected = frames[10].transpose(1, 2, 0)[:, ::-1]
    assert psnr(small, expected) > 25


def test_ntsc_rate_is_kept_exactly(tmp_path):
    w, path = writer_for(tmp_path, [video(frame_rate=29.97)], "ntsc.mp4")
    w.write(0, patterns(30, 48, 64), None)
    w.close()
    (out,) = decode(path)["streams"]
    assert out["average_rate"] == Fraction(30000, 1001)
    assert out["frame_count"] == 30
    assert [read_stamp(f) for f in out["frames"]] == list(range(30))


def test_audio_rate_layout_and_filter_conversions(tmp_path):
    w, path = writer_for(
        tmp_path,
        [audio(encoder="pcm_s16le", encoder_sample_rate=8000, encoder_num_channels=1, filter_desc="volume=0.5")],
        "conv.wav",
    )
    w.write(0, sine(440, 16000, 1.0, channels=2, amplitude=0.8), None)
    w.close()
    (out,) = decode(path)["streams"]
    assert out["sample_rate"] == 8000 and out["channels"] == 1
    assert abs(out["sample_count"] - 8000) <= 64
    peak = np.abs(out["pcm"][1000:-1000]).max() / 32768
    assert 0.35 < peak < 0.45  # 0.8 * 0.5
    assert abs(dominant_frequency(out["pcm"][:, 0].astype(np.float64), 8000) - 440) < 3


def test_codec_config_and_unused_options(tmp_path):
    w, path = writer_for(
        tmp_path,
        [
            video(
                codec_config={"gop_size": 10, "max_b_frames": 0, "bit_rate": 200_000},
                encoder_option={"preset": "ultrafast", "not_an_option": "1"},
            )
        ],
        "gop.mp4",
    )
    assert any("not_an_option" in m for m in w.warnings), w.warnings
    w.write(0, patterns(40, 48, 64), None)
    w.close()
    with av.open(path) as c:
        keys = [p.is_keyframe for p in c.demux(video=0) if p.size]
        assert c.streams.video[0].codec_context.has_b_frames == 0
    assert [i for i, k in enumerate(keys) if k] == [0, 10, 20, 30]


def test_metadata_and_fragmented_mp4(tmp_path):
    w, path = writer_for(
        tmp_path,
        [video()],
        "frag.mp4",
        metadata={"title": "framecast test"},
        options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
    )
    w.write(0, patterns(30, 48, 64), None)
    w.close()
    out = decode(path)
    assert out["metadata"].get("title") == "framecast test"
    assert out["streams"][0]["frame_count"] == 30
    with open(path, "rb") as f:
        assert b"moof" in f.read()


def test_unused_muxer_option_is_a_warning(tmp_path):
    w, _ = writer_for(tmp_path, [video()], "w.mp4", options={"no_such_muxer_flag": "1"})
    assert any("no_such_muxer_flag" in m for m in w.warnings), w.warnings
    w.close()


def test_video_pts_leaves_gaps(tmp_path):
    w, path = writer_for(tmp_path, [video(frame_rate=10)], "gap.mkv")
    w.write(0, patterns(5, 48, 64), None)
    w.write(0, patterns(5, 48, 64, start=5), 2.0)  # frames 5..9 shown from 2.0 s
    w.close()
    with av.open(path) as c:
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert times[:5] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4], abs=0.002)
    assert times[5:] == pytest.approx([2.0, 2.1, 2.2, 2.3, 2.4], abs=0.002)


def test_bytesio_output_through_the_same_writer(tmp_path):
    config = SessionConfig.model_validate(
        {"destination": {"type": "client", "filename": "x.mp4"}, "streams": [video(), audio()]}
    )
    buf = io.BytesIO()
    w = SessionWriter(make_plan(config, Settings(output_dir=tmp_path)), buf)
    w.start_files()
    w.write(0, patterns(15, 48, 64), None)
    w.write(1, sine(1000, 16000, 0.5, channels=2), None)
    w.close()
    v, a = decode(buf.getvalue())["streams"]
    assert v["frame_count"] == 15 and a["codec"] == "aac"
    assert w.stats()[0].frames == 15 and w.stats()[0].packets == 15


def test_encoder_refusal_is_a_setup_error_naming_the_stream(tmp_path):
    with pytest.raises(SetupError, match="libmp3lame") as err:
        writer_for(tmp_path, [audio(num_channels=6, encoder="libmp3lame")], "six.mp3")
    assert err.value.field == "streams.0"


def test_a_frame_rate_conversion_is_the_last_filter_step(tmp_path):
    def steps(**kw):
        body = {"destination": {"type": "server_file", "path": "out.mkv"}, "streams": [video(**kw)]}
        plan = make_plan(SessionConfig.model_validate(body), Settings(output_dir=tmp_path))
        stream = plan.streams[0]
        assert isinstance(stream, VideoPlan)
        return _video_filter_steps(stream)

    assert steps() == []
    assert steps(filter_desc="hflip") == [("hflip", None)]
    assert steps(filter_desc="hflip", encoder_frame_rate=15) == [("hflip", None), ("fps", "15")]


@pytest.mark.parametrize(
    ("stream", "lends", "owns"),
    [
        (video(encoder="libx264", wire_format="yuv420p"), True, True),
        (video(encoder="libx264", wire_format="yuv420p", height=50), False, False),  # PyAV reads heights in fours
        (video(encoder="mpeg4", wire_format="yuv420p"), False, True),  # may keep a frame: no client memory
        (video(encoder="libx264", wire_format="rgb24"), False, False),
    ],
)
def test_frames_use_a_chunks_memory_only_where_that_is_safe(tmp_path, stream, lends, owns):
    """A yuv420p chunk in the client's shared memory becomes frames over that very memory for
    x264, which copies each frame before ``encode`` returns; one in memory of its own (unmasked or
    decompressed by the encoder process) becomes frames over it for any encoder; a chunk in the
    server's ring, written again once its frames are built, is always copied."""
    writer, _ = writer_for(tmp_path, [stream])
    width, height = stream["width"], stream["height"]
    rgb = patterns(2, height, width)
    wire = yuv.rgb_to_i420(rgb) if writer.plan.streams[0].wire_format == "yuv420p" else rgb
    for memory, uses in ((Memory.CLIENT, lends), (Memory.OWN, owns), (Memory.RING, False)):
        frames = writer.frames_for(0, wire, None, memory).built
        shared = [f.planes[0].buffer_ptr == wire[i].ctypes.data for i, f in enumerate(frames)]
        assert shared == [uses] * 2, memory
        writer.emit(0, frames)
    writer.close()
    (decoded,) = decode(tmp_path / "out.mkv")["streams"]
    assert [read_stamp(f) for f in decoded["frames"]] == [0, 1] * 3


def test_a_preview_is_a_copy_taken_only_while_watched():
    """The previewer keeps no frame (it may be the client's memory, written again once its chunk
    is acknowledged): while someone watches, it scales one down as it is offered, at most one per
    stream every ``interval`` seconds, and makes the JPEG of that copy."""
    previewer = Previewer(interval=0.5, width=32)
    rgb = patterns(1, 48, 64)
    memory = yuv.rgb_to_i420(rgb)
    frame = av.VideoFrame.from_numpy_buffer(memory[0].reshape(72, 64), format="yuv420p")
    previewer.offer_video(0, [frame])
    assert not previewer.due()  # nobody watches: nothing taken
    previewer.watch(10)
    previewer.offer_video(0, [frame])
    assert previewer.due()
    memory[:] = 0  # the client writes the region again
    (jpeg,) = decode(previewer.take()[0], format="mjpeg")["streams"]
    assert (jpeg["width"], jpeg["height"]) == (32, 24)
    small = av.VideoFrame.from_ndarray(rgb[0].transpose(1, 2, 0).copy(), format="rgb24").reformat(32, 24)
    assert psnr(jpeg["frames"][0], small.to_ndarray(format="rgb24")) > 25
    previewer.offer_video(0, [frame])
    assert not previewer.due()  # within the interval
    previewer.offer_video(0, [frame], now=time.monotonic() + 0.6)
    previewer.offer_video(1, [frame])  # another stream has an interval of its own
    assert previewer.due() and sorted(previewer.take()) == [0, 1]


def test_x264_files_use_slice_threads_on_small_machines(tmp_path):
    """x264 files: slice threads where the machine has few cores (as PyAV in-process), FFmpeg's
    choice (frame threads) beyond, and for other encoders; paced streams keep theirs."""
    config = SessionConfig.model_validate(
        {"destination": {"type": "server_file", "path": "t.mkv"}, "streams": [video(width=1280, height=720)]}
    )
    plan = make_plan(config, Settings(output_dir=tmp_path)).streams[0]
    assert isinstance(plan, VideoPlan)
    assert _threading(False, plan, "libx264", 2) == ("SLICE", 0)
    assert _threading(False, plan, "libx264", SLICED_FILES_MAX_CORES + 1) == ("AUTO", 0)
    assert _threading(False, plan, "mpeg4", 2) == ("AUTO", 0)
    assert _threading(True, plan, "libx264", 64) == ("SLICE", 0)
