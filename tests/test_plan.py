"""Config validation, StreamWriter defaults, pts arithmetic: no server, no sockets."""

from __future__ import annotations

import os
from fractions import Fraction

import pytest
from pydantic import ValidationError

from framecast.protocol import ChunkHeader, DType
from framecast_server.chunks import ChunkChecker, Timeline
from framecast_server.config import Settings
from framecast_server.errors import InvalidChunk, InvalidConfig
from framecast_server.models import SessionConfig, parse_frame_rate
from framecast_server.planning.plan import AudioPlan, _plan_destination, _wanted_outputs, make_plan, split_filter_chain


def config(streams, dest=None, **extra):
    return SessionConfig.model_validate(
        {"destination": dest or {"type": "client", "filename": "out.mp4"}, "streams": streams, **extra}
    )


def at(root):
    """Settings with ``root`` as the output directory, defaults otherwise."""
    return Settings(output_dir=root)


VIDEO = {"type": "video", "frame_rate": 30, "width": 128, "height": 96}
AUDIO = {"type": "audio", "sample_rate": 16000, "num_channels": 2}


@pytest.mark.parametrize(
    "value, expected",
    [
        (29.97, Fraction(30000, 1001)),
        (23.976, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        ("30000/1001", Fraction(30000, 1001)),
        (30, Fraction(30)),
        (30.0, Fraction(30)),
        (12.5, Fraction(25, 2)),
        (1, Fraction(1)),
        ("25", Fraction(25)),
    ],
)
def test_frame_rates_are_exact_rationals(value, expected):
    assert parse_frame_rate(value) == expected


@pytest.mark.parametrize("value", [0, -5, "abc", "1/0x", 5000, "0/0", "30/0"])
def test_bad_frame_rates_are_refused(value):
    with pytest.raises((ValueError, ZeroDivisionError)):
        parse_frame_rate(value)


@pytest.mark.parametrize(
    "filename, muxer, video, audio",
    [
        ("out.mp4", "mp4", "libx264", "aac"),
        ("out.mov", "mov", "libx264", "aac"),
        ("out.mkv", "matroska", "libx264", None),
        ("clip.webm", "webm", "libvpx-vp9", "libopus"),
        ("a.wav", "wav", None, "pcm_s16le"),
        ("a.mp3", "mp3", None, "libmp3lame"),
        ("still.png", "image2pipe", "png", None),
        ("still.jpg", "image2pipe", "mjpeg", None),
    ],
)
def test_defaults_follow_the_muxer_like_streamwriter(tmp_path, filename, muxer, video, audio):
    streams = ([VIDEO] if video else []) + ([AUDIO] if audio else [])
    plan = make_plan(config(streams, {"type": "client", "filename": filename}), at(tmp_path))
    assert plan.first.muxer == muxer
    encoders = [s.encoder for s in plan.streams]
    assert encoders == [e for e in (video, audio) if e]


@pytest.mark.parametrize(
    "dest, target, plan_muxer, muxer, filename",
    [
        ({"type": "client", "filename": "still.png"}, "client", "image2pipe", "image2", "still.png"),
        ({"type": "server_file", "path": "rec/a.wav"}, "file", "wav", "wav", "rec/a.wav"),
        ({"type": "url", "url": "rtmp://127.0.0.1/live/k"}, "url", "flv", "flv", None),
        ({"type": "discard"}, "discard", "null", "null", None),
    ],
)
def test_each_destination_is_planned_before_its_streams(tmp_path, dest, target, plan_muxer, muxer, filename):
    """The muxer the encoder defaults follow may differ from the plan's (image2 sends image2pipe to
    a client); the file name they are guessed from is the server's own path for a server file."""
    session = config([VIDEO], dest)
    (wanted,) = _wanted_outputs(session, at(tmp_path))
    output, resolved, name = _plan_destination(wanted, at(tmp_path))
    assert (output.target, output.muxer, resolved) == (target, plan_muxer, muxer)
    assert name == (str(tmp_path.resolve() / filename) if target == "file" else filename)
    assert output.options == {} and output.where == "destination" and output.required


def test_encoder_formats_default_to_input_when_possible(tmp_path):
    plan = make_plan(config([VIDEO, {**VIDEO, "format": "yuv444p"}, AUDIO]), at(tmp_path))
    assert plan.streams[0].encoder_format == "yuv420p"  # libx264 takes no rgb24
    assert plan.streams[1].encoder_format == "yuv444p"  # libx264 takes yuv444p as it is
    assert plan.streams[2].encoder_format == "fltp"  # aac: planar float for float input
    wav = make_plan(config([{**AUDIO, "format": "s16"}], {"type": "client", "filename": "a.wav"}), at(tmp_path))
    assert wav.streams[0].encoder_format == "s16"


def test_sample_rate_picks_a_supported_one(tmp_path):
    plan = make_plan(config([{**AUDIO, "sample_rate": 96000}], {"type": "client", "filename": "a.mp3"}), at(tmp_path))
    assert isinstance(plan.streams[0], AudioPlan)
    assert plan.streams[0].encoder_sample_rate == 48000
    with pytest.raises(InvalidConfig, match="does not take 96000 Hz") as err:
        make_plan(
            config([{**AUDIO, "encoder_sample_rate": 96000}], {"type": "client", "filename": "a.mp3"}), at(tmp_path)
        )
    assert err.value.field == "streams.0.encoder_sample_rate"


@pytest.mark.parametrize(
    "streams, dest, extra, field, message",
    [
        ([{**VIDEO, "encoder": "nope264"}], None, {}, "streams.0.encoder", "unknown video encoder 'nope264'"),
        ([{**VIDEO, "encoder": "aac"}], None, {}, "streams.0.encoder", "'aac' is a audio encoder"),
        ([{**VIDEO, "encoder_format": "rgb24"}], None, {}, "streams.0.encoder_format", "does not take 'rgb24'"),
        ([{**VIDEO, "height": 95}], None, {}, "streams.0.encoder_height", "yuv420p needs an even width and height"),
        ([{**VIDEO, "width": 127}], None, {}, "streams.0.encoder_width", "got 127x96"),
        ([AUDIO], {"type": "client"}, {}, "format", "required when the destination has no file name"),
        ([AUDIO], None, {"format": "nonsense"}, "format", "unknown muxer 'nonsense'"),
        ([AUDIO], {"type": "client", "filename": "x.unknownext"}, {}, "format", "cannot guess a muxer"),
        ([AUDIO], {"type": "url", "url": "srt://127.0.0.1:9000"}, {}, "destination.url", "has no srt protocol"),
        ([AUDIO], {"type": "url", "url": "file:///etc/passwd"}, {}, "destination.url", "unsupported URL scheme"),
        ([AUDIO], {"type": "url", "url": "concat:/etc/passwd|/etc/hosts"}, {}, "destination.url", "not allowed"),
        ([AUDIO], {"type": "url", "url": "rtmp:///live/x"}, {}, "destination.url", "needs a host"),
        ([{**VIDEO, "filter_desc": "nosuchfilter=1"}], None, {}, "streams.0.filter_desc", "unknown filter"),
        ([{**VIDEO, "filter_desc": "[in]hflip[out]"}], None, {}, "streams.0.filter_desc", "linear chain"),
        ([AUDIO], {"type": "client", "filename": "a.m3u8"}, {}, "format", "writes files of its own"),
        ([AUDIO], {"type": "server_file", "path": "../escape.wav"}, {}, "destination.path", "must not contain '..'"),
        ([AUDIO], {"type": "server_file", "path": "/etc/x.wav"}, {}, "destination.path", "must be relative"),
        ([AUDIO], {"type": "server_file", "path": "file:x.wav"}, {}, "destination.path", "not a URL"),
    ],
)
def test_configs_that_cannot_work_name_the_field(tmp_path, streams, dest, extra, field, message):
    with pytest.raises(InvalidConfig, match=message) as err:
        make_plan(config(streams, dest, **extra), at(tmp_path))
    assert err.value.field == field


def test_symlinks_out_of_the_output_dir_are_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(InvalidConfig, match="resolves outside the output directory"):
        make_plan(config([AUDIO], {"type": "server_file", "path": "link/a.wav"}), at(root))
    plan = make_plan(config([AUDIO], {"type": "server_file", "path": "rec/a.wav"}), at(root))
    assert plan.first.path == str(root.resolve() / "rec" / "a.wav") and plan.first.muxer == "wav"


@pytest.mark.parametrize("path", ["inside/a.wav", "rec/inner/a.wav", "rec/a.wav", "rec/show.m3u8"])
def test_a_symlink_inside_the_output_dir_is_not_followed_either(tmp_path, path):
    root = tmp_path / "root"
    (root / "real" / "deeper").mkdir(parents=True)
    (root / "rec").mkdir()
    os.symlink(root / "real", root / "inside")  # a directory link, within the output dir
    os.symlink(root / "real" / "deeper", root / "rec" / "inner")
    os.symlink(root / "real" / "x.wav", root / "rec" / "a.wav")  # a file link (dangling)
    os.symlink(root / "real" / "x.m3u8", root / "rec" / "show.m3u8")
    with pytest.raises(InvalidConfig, match="goes through a symlink") as err:
        make_plan(config([AUDIO], {"type": "server_file", "path": path}), at(root))
    assert err.value.field == "destination.path"


def test_model_refuses_unknown_fields_and_formats():
    with pytest.raises(ValidationError, match="unknown input pixel format 'rgba'"):
        config([{**VIDEO, "format": "rgba"}])
    with pytest.raises(ValidationError, match="unknown input sample format 's24'"):
        config([{**AUDIO, "format": "s24"}])
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        config([{**AUDIO, "bogus": 1}])
    with pytest.raises(ValidationError):
        config([])


def test_filter_chains_are_parsed_as_ffmpeg_does_and_written_back_with_named_options():
    assert split_filter_chain("hflip,scale=64:48") == [("hflip", None), ("scale", "w=64:h=48")]
    assert split_filter_chain("drawbox=color='red@0.5':x=1") == [("drawbox", "color=red@0.5:x=1")]
    assert split_filter_chain(r"setpts=PTS\,1") == [("setpts", "expr=PTS,1")]
    # two levels of unescaping, as in ffmpeg -vf: '\\\:' is ':' in the value, written back as '\:'
    assert split_filter_chain(r"drawbox=color=a\\\:b") == [("drawbox", r"color=a\:b")]
    with pytest.raises(ValueError, match="no option name near 'b'"):
        split_filter_chain(r"drawbox=color=a\:b")
    for bad in ("hflip;vflip", "hflip,,vflip", "'open", "[in]hflip", "hflip,"):
        with pytest.raises(ValueError):
            split_filter_chain(bad)


def test_timeline_places_chunks_and_refuses_going_back():
    line = Timeline(Fraction(30000, 1001))
    assert line.start_of(10, None) == 0
    line.advance(0, 10)
    assert line.start_of(5, 10 * 1001 / 30000) == 10  # exactly where the last chunk ended
    assert line.start_of(5, 1.0) == 30  # a gap is allowed
    with pytest.raises(InvalidChunk, match="goes backwards"):
        line.start_of(5, 0.1)


def test_chunk_checker_names_expected_and_received(tmp_path):
    plan = make_plan(config([VIDEO, AUDIO]), at(tmp_path))
    checker = ChunkChecker(plan.streams)
    assert checker.check(ChunkHeader(0, 0, DType.UINT8, (2, 3, 96, 128))) == 0
    assert checker.check(ChunkHeader(0, 1, DType.UINT8, (2, 3, 96, 128))) == 2
    cases = [
        (ChunkHeader(5, 2, DType.UINT8, (1,)), "stream index 5 does not exist; this session has streams 0..1"),
        (ChunkHeader(0, 2, DType.FLOAT32, (1, 3, 96, 128)), "expected dtype uint8 .* got float32"),
        (
            ChunkHeader(0, 2, DType.UINT8, (1, 3, 96, 100)),
            r"expected shape \(frames, 3, 96, 128\), got \(1, 3, 96, 100\)",
        ),
        (ChunkHeader(1, 2, DType.FLOAT32, (100, 1)), r"expected shape \(frames, 2\), got \(100, 1\)"),
        (ChunkHeader(0, 2, DType.UINT8, (1, 3, 96, 128), pts=0.0), "goes backwards"),
    ]
    for header, message in cases:
        with pytest.raises(InvalidChunk, match=message):
            checker.check(header)
    assert checker.check(ChunkHeader(1, 3, DType.FLOAT32, (100, 2))) == 0


def test_network_outputs_get_live_defaults(tmp_path):
    rtmp = {"type": "url", "url": "rtmp://127.0.0.1:1935/live/secretkey"}
    plan = make_plan(config([VIDEO, AUDIO], rtmp), at(tmp_path))
    assert plan.first.muxer == "flv" and plan.first.target == "url" and plan.realtime
    video, audio = plan.streams
    assert (video.encoder, audio.encoder) == ("libx264", "aac")
    assert video.codec_config["gop_size"] == 60 and video.codec_config["max_b_frames"] == 0
    assert video.encoder_option == {"preset": "veryfast", "tune": "zerolatency"}
    assert plan.first.options == {"flvflags": "no_duration_filesize"}
    assert plan.first.describe_destination() == {"type": "url", "url": "rtmp://127.0.0.1:1935/live/****"}

    udp = make_plan(
        config(
            [{**VIDEO, "frame_rate": 29.97, "codec_config": {"gop_size": 15}, "encoder_option": {"tune": "film"}}],
            {"type": "url", "url": "udp://127.0.0.1:5000"},
            realtime=False,
        ),
        at(tmp_path),
    )
    assert udp.first.muxer == "mpegts" and udp.first.url == "udp://127.0.0.1:5000?pkt_size=1316" and not udp.realtime
    assert udp.streams[0].codec_config["gop_size"] == 15  # explicit settings win
    assert udp.streams[0].encoder_option == {"tune": "film", "preset": "veryfast"}
    kept = make_plan(config([VIDEO], {"type": "url", "url": "udp://127.0.0.1:5000?pkt_size=188"}), at(tmp_path))
    assert kept.first.url == "udp://127.0.0.1:5000?pkt_size=188"
    tcp = {"type": "url", "url": "tcp://127.0.0.1:5000"}
    ntsc = make_plan(config([{**VIDEO, "frame_rate": 29.97}], tcp), at(tmp_path))
    assert ntsc.first.muxer == "mpegts" and ntsc.streams[0].codec_config["gop_size"] == 60  # ceil(2 s * 29.97)
    forced = make_plan(config([VIDEO], {"type": "url", "url": "rtmp://h/live/x"}, format="mpegts"), at(tmp_path))
    assert forced.first.muxer == "mpegts"


def test_credentials_are_masked_in_descriptions(tmp_path):
    url = {"type": "url", "url": "rtmp://user:pw@example.com/app/key?token=t"}
    plan = make_plan(config([VIDEO], url), at(tmp_path))
    assert plan.first.describe_destination()["url"] == "rtmp://example.com/app/****"


def test_operator_allowlists_for_schemes_and_hosts(tmp_path):
    strict = Settings(output_dir=tmp_path, allowed_schemes=["file", "rtmp"], allowed_hosts=["*.example.com"])
    ok = make_plan(config([VIDEO], {"type": "url", "url": "rtmp://ingest.example.com/live/k"}), strict)
    assert ok.first.muxer == "flv"
    with pytest.raises(InvalidConfig, match="host 'evil.net' is not in this server's allowed hosts") as err:
        make_plan(config([VIDEO], {"type": "url", "url": "rtmp://evil.net/live/k"}), strict)
    assert err.value.field == "destination.url"
    with pytest.raises(InvalidConfig, match="kind 'udp' are not allowed"):
        make_plan(config([VIDEO], {"type": "url", "url": "udp://ingest.example.com:5000"}), strict)
    no_files = Settings(output_dir=tmp_path, allowed_schemes=["rtmp"])
    with pytest.raises(InvalidConfig, match="kind 'file' are not allowed"):
        make_plan(config([VIDEO], {"type": "server_file", "path": "a.mkv"}), no_files)
