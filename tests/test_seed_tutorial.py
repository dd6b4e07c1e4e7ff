"""The torchaudio StreamWriter tutorial (../shared/seeds/), run against a live framecast server.

Each test is the tutorial's code with one change: ``from framecast import StreamWriter`` in place
of ``from torchaudio.io import StreamWriter`` (plus ``server=`` pointing at the test server, which
users get from $FRAMECAST_SERVER or the default). The tutorial's speech sample is replaced by a
synthetic two-tone waveform, since nothing may be downloaded here. Every output is decoded and
checked: streams, codecs, sizes, frame and sample counts, and content.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

from framecast import StreamWriter

from .media import decode, dominant_frequency, patterns, psnr

SAMPLE_RATE = 16000
NUM_CHANNELS = 1
_t = torch.arange(int(SAMPLE_RATE * 3.5), dtype=torch.float64) / SAMPLE_RATE
WAVEFORM = (0.4 * torch.sin(2 * torch.pi * 440 * _t) + 0.1 * torch.sin(2 * torch.pi * 1250 * _t)).float()[:, None]
NUM_FRAMES, _ = WAVEFORM.shape


@pytest.fixture
def get_path(tmp_path):
    return lambda filename: os.path.join(tmp_path, filename)


def test_basic_usage_wav(server, get_path):
    path = get_path("test.wav")
    s = StreamWriter(path, server=server.url)
    s.add_audio_stream(sample_rate=SAMPLE_RATE, num_channels=NUM_CHANNELS)
    with s.open():
        s.write_audio_chunk(0, WAVEFORM)

    out = decode(path)
    assert out["format"] == "wav"
    (audio,) = out["streams"]
    assert audio["codec"] == "pcm_s16le"  # WAV's default encoding, as the tutorial says
    assert audio["sample_rate"] == SAMPLE_RATE and audio["channels"] == NUM_CHANNELS
    assert audio["sample_count"] == NUM_FRAMES  # PCM: exact
    decoded = audio["pcm"][:, 0].astype(np.float64) / 32768
    assert np.max(np.abs(decoded - WAVEFORM[:, 0].numpy())) < 2 / 32768


def test_chunked_mp3_is_byte_identical_to_one_shot(server):
    # Write data in one-go
    dst1 = io.BytesIO()
    s = StreamWriter(dst=dst1, format="mp3", server=server.url)
    s.add_audio_stream(SAMPLE_RATE, NUM_CHANNELS)
    with s.open():
        s.write_audio_chunk(0, WAVEFORM)
    # Write data in smaller chunks
    dst2 = io.BytesIO()
    s = StreamWriter(dst=dst2, format="mp3", server=server.url)
    s.add_audio_stream(SAMPLE_RATE, NUM_CHANNELS)
    with s.open():
        for start in range(0, NUM_FRAMES, SAMPLE_RATE):
            end = start + SAMPLE_RATE
            s.write_audio_chunk(0, WAVEFORM[start:end, ...])
    # Check that the contents are same
    dst1.seek(0)
    bytes1 = dst1.read()
    dst2.seek(0)
    bytes2 = dst2.read()
    assert len(bytes1) > 1000
    assert bytes1 == bytes2
    assert bytes1[:3] == b"ID3"

    (audio,) = decode(bytes1, format="mp3")["streams"]
    assert audio["codec"] == "mp3"
    assert audio["sample_rate"] == SAMPLE_RATE
    # MP3 pads with encoder delay and a partial last frame: at most two frames (2 x 1152) more.
    assert NUM_FRAMES <= audio["sample_count"] <= NUM_FRAMES + 2 * 1152 + 576
    mono = audio["pcm"].mean(axis=1)
    assert abs(dominant_frequency(mono, SAMPLE_RATE) - 440) < 5


def test_still_image_png(server, get_path):
    height, width = 96, 128
    s = StreamWriter(dst=get_path("image.png"), server=server.url)
    s.add_video_stream(frame_rate=1, height=height, width=width, format="rgb24")
    chunk = torch.randint(256, (1, 3, height, width), dtype=torch.uint8)
    with s.open():
        s.write_video_chunk(0, chunk)

    (video,) = decode(get_path("image.png"))["streams"]
    assert video["codec"] == "png" and (video["width"], video["height"]) == (width, height)
    assert video["frame_count"] == 1
    assert np.array_equal(video["frames"][0], chunk[0].permute(1, 2, 0).numpy())  # PNG is lossless


def test_video_without_audio_mp4(server, get_path):
    frame_rate, height, width = 30, 96, 128
    s = StreamWriter(dst=get_path("video.mp4"), server=server.url)
    s.add_video_stream(frame_rate=frame_rate, height=height, width=width, format="rgb24")
    time = int(frame_rate * 3)
    chunk = torch.from_numpy(patterns(time, height, width))
    with s.open():
        s.write_video_chunk(0, chunk)

    (video,) = decode(get_path("video.mp4"))["streams"]
    assert video["codec"] == "h264" and video["pix_fmt"] == "yuv420p"
    assert (video["width"], video["height"]) == (width, height)
    assert video["frame_count"] == time
    assert video["average_rate"] == frame_rate
    scores = [psnr(f, c) for f, c in zip(video["frames"], chunk.permute(0, 2, 3, 1).numpy())]
    assert min(scores) >= 30, scores


def test_video_with_audio_mp4(server, get_path):
    frame_rate, height, width = 30, 96, 128
    s = StreamWriter(dst=get_path("video.mp4"), server=server.url)
    s.add_audio_stream(sample_rate=SAMPLE_RATE, num_channels=NUM_CHANNELS)
    s.add_video_stream(frame_rate=frame_rate, height=height, width=width, format="rgb24")
    audio_chunk = WAVEFORM[: SAMPLE_RATE * 3]
    video_chunk = torch.from_numpy(patterns(frame_rate * 3, height, width))
    with s.open():
        s.write_audio_chunk(0, audio_chunk)
        s.write_video_chunk(1, video_chunk)

    audio, video = decode(get_path("video.mp4"))["streams"]
    assert audio["codec"] == "aac" and audio["sample_rate"] == SAMPLE_RATE
    # AAC: 1024-sample frames plus priming; the decoder may trim or keep it.
    assert SAMPLE_RATE * 3 - 1024 <= audio["sample_count"] <= SAMPLE_RATE * 3 + 2 * 1024
    assert abs(dominant_frequency(audio["pcm"][:, 0], SAMPLE_RATE) - 440) < 5
    assert video["codec"] == "h264" and video["frame_count"] == frame_rate * 3
    assert min(psnr(f, c) for f, c in zip(video["frames"], video_chunk.permute(0, 2, 3, 1).numpy())) >= 30


def test_yuv422p_mov_through_encoder_format(server, get_path):
    height, width = 96, 128
    s = StreamWriter(get_path("video.mov"), server=server.url)
    s.add_video_stream(
        frame_rate=10,
        height=height,
        width=width,
        encoder="libx264",
        encoder_format="yuv422p",
    )
    chunk = torch.from_numpy(patterns(20, height, width))
    with s.open():
        s.write_video_chunk(0, chunk)

    out = decode(get_path("video.mov"))
    (video,) = out["streams"]
    assert out["format"].startswith("mov")
    assert video["codec"] == "h264" and video["pix_fmt"] == "yuv422p"
    assert video["frame_count"] == 20
    assert min(psnr(f, c) for f, c in zip(video["frames"], chunk.permute(0, 2, 3, 1).numpy())) >= 30


def test_bgr24_video_and_s16_audio_inputs(server, get_path):
    height, width = 96, 128
    rgb = patterns(30, height, width)
    bgr = torch.from_numpy(rgb[:, ::-1].copy())  # channels in blue, green, red order
    pcm = (WAVEFORM[: SAMPLE_RATE * 1] * 32767).to(torch.int16).repeat(1, 2)
    s = StreamWriter(get_path("mixed.mkv"), server=server.url)
    s.add_video_stream(frame_rate=30, height=height, width=width, format="bgr24")
    s.add_audio_stream(sample_rate=SAMPLE_RATE, num_channels=2, format="s16", encoder="pcm_s16le")
    with s.open():
        s.write_video_chunk(0, bgr)
        s.write_audio_chunk(1, pcm)

    video, audio = decode(get_path("mixed.mkv"))["streams"]
    assert video["frame_count"] == 30
    # Decoded as RGB, the frames match the RGB originals: the server honoured the BGR order.
    assert min(psnr(f, c) for f, c in zip(video["frames"], rgb.transpose(0, 2, 3, 1))) >= 30
    assert audio["codec"] == "pcm_s16le" and audio["channels"] == 2
    assert audio["sample_count"] == SAMPLE_RATE
    assert np.array_equal(audio["pcm"], pcm.numpy())


def test_wrong_dtype_is_refused_like_torchaudio(server, get_path):
    import framecast

    s = StreamWriter(get_path("x.wav"), server=server.url)
    s.add_audio_stream(sample_rate=SAMPLE_RATE, num_channels=1, format="s16")
    with s.open():
        with pytest.raises(framecast.InvalidChunk, match="expects dtype int16, got float32"):
            s.write_audio_chunk(0, WAVEFORM)
        s.write_audio_chunk(0, (WAVEFORM * 1000).to(torch.int16))
    (audio,) = decode(get_path("x.wav"))["streams"]
    assert audio["sample_count"] == NUM_FRAMES
