"""The ``framecast`` command, run as a subprocess against a live server.

sessions list/show/close on sessions made with the SDK, capabilities, push of a real media file
(to a local path and to a server-side file, decoded and checked frame by frame), and the one-line
errors for bad input.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import framecast

from .conftest import ROOT, ServerProcess, free_port
from .media import decode, dominant_frequency, patterns, read_stamp, sine

W, H, FPS, SECONDS = 160, 120, 30, 2.0
RATE, CHANNELS = 48000, 2
FRAMES, SAMPLES = int(FPS * SECONDS), int(RATE * SECONDS)


def cli(
    *args: str, server: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m framecast.cli ARGS`` (with ``--server`` appended when given)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMECAST_")}
    full_env.update(env or {})
    command = [sys.executable, "-m", "framecast.cli", *args]
    if server is not None:
        command += ["--server", server]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=str(ROOT))


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def failed(proc: subprocess.CompletedProcess[str], *needles: str, alone: bool = True) -> str:
    """The command failed with one clear line on stderr (no traceback) that contains ``needles``;
    ``alone``: and nothing else (else progress lines may come before it).
    """
    assert proc.returncode != 0, f"expected a failure, got exit 0\nstdout:\n{proc.stdout}"
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and (len(lines) == 1 or not alone), proc.stderr
    assert lines[-1].startswith("framecast "), lines[-1]
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def make_media(path: Path, seconds: float = SECONDS) -> Path:
    """``seconds`` of 160x120 stamped test pattern (H.264) and a 440 Hz stereo sine (PCM) in Matroska."""
    frames, samples = int(FPS * seconds), int(RATE * seconds)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=RATE, layout="stereo")
        for i, frame in enumerate(patterns(frames, H, W)):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.transpose(1, 2, 0)), format="rgb24")
            picture.pts = i
            container.mux(video.encode(picture))
        tone = (sine(440, RATE, seconds, CHANNELS, amplitude=0.4) * 32767).astype(np.int16)
        for start in range(0, samples, 1024):
            block = np.ascontiguousarray(tone[start : start + 1024].reshape(1, -1))
            sound = av.AudioFrame.from_ndarray(block, format="s16", layout="stereo")
            sound.sample_rate, sound.pts = RATE, start
            container.mux(audio.encode(sound))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


@pytest.fixture(scope="module")
def media_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_media(tmp_path_factory.mktemp("cli") / "input.mkv")


def check_pushed(result: dict, video_frames: int = FRAMES, samples: int = SAMPLES) -> None:
    """Decoded output: every frame once and in order (stamps), the sine's samples and pitch."""
    video = next(s for s in result["streams"] if s["type"] == "video")
    audio = next(s for s in result["streams"] if s["type"] == "audio")
    assert (video["width"], video["height"]) == (W, H)
    assert [read_stamp(f) for f in video["frames"]] == list(range(video_frames))
    assert Fraction(video["average_rate"]) == FPS
    assert audio["channels"] == CHANNELS
    # Lossy encoders add priming and pad their last frame: within one AAC/AC-3 frame or two.
    seconds = audio["sample_count"] / audio["sample_rate"]
    assert abs(seconds - samples / RATE) < 2048 / audio["sample_rate"], seconds
    assert abs(dominant_frequency(audio["pcm"][:, 0], audio["sample_rate"]) - 440) < 5


def session_id(stdout: str) -> str:
    match = re.search(r"\(session ([0-9a-f]+)\)", stdout)
    assert match, stdout
    return match.group(1)


# -- push --------------------------------------------------------------------------------------


def test_input_file_is_what_we_think(media_file):
    result = decode(media_file)
    video, audio = result["streams"]
    assert video["frame_count"] == FRAMES and audio["sample_count"] == SAMPLES


def test_push_to_local_path(server, media_file, tmp_path):
    out = tmp_path / "pushed.mp4"
    stdout = ok(cli("push", str(media_file), str(out), "--no-realtime", server=server.url))
    assert f"video: {FRAMES} frames" in stdout and f"audio: {SAMPLES} samples" in stdout, stdout
    result = decode(out)
    assert [s["codec"] for s in result["streams"]] == ["h264", "aac"]
    check_pushed(result)
    info = json.loads(ok(cli("sessions", "show", session_id(stdout), "--json", server=server.url)))
    assert info["state"] == "closed" and info["realtime"] is False
    assert info["streams"][0]["config"]["frame_rate"] == "30/1"
    assert info["streams"][1]["config"]["sample_rate"] == RATE


def test_push_real_time_to_server_file(server, media_file):
    name = f"push/{uuid.uuid4().hex[:8]}.mkv"
    started = time.monotonic()
    proc = cli("push", str(media_file), f"server:{name}", server=server.url)
    elapsed = time.monotonic() - started
    stdout = ok(proc)
    assert elapsed > SECONDS * 0.75, f"real time by default, but {SECONDS} s of media took {elapsed:.2f} s"
    assert "in real time" in proc.stderr and "pushed" in proc.stderr  # the start line and progress
    assert "on the server at" in stdout and f"/v1/sessions/{session_id(stdout)}/output" in stdout
    check_pushed(decode(server.output_dir / name))
    info = json.loads(ok(cli("sessions", "show", session_id(stdout), "--json", server=server.url)))
    assert info["realtime"] is True and info["state"] == "closed"


def test_push_to_a_server_file_that_exists_needs_y(server, media_file):
    name = f"push/{uuid.uuid4().hex[:8]}.mkv"
    ok(cli("push", str(media_file), f"server:{name}", "--no-realtime", "--duration", "1", server=server.url))
    first = (server.output_dir / name).read_bytes()
    line = failed(cli("push", str(media_file), f"server:{name}", "--no-realtime", server=server.url))
    assert line == (
        f"framecast push: destination.path: {name!r} exists; choose another path, or set overwrite to true "
        "to replace it (pass -y to replace it)"
    )
    assert (server.output_dir / name).read_bytes() == first
    ok(cli("push", str(media_file), f"server:{name}", "--no-realtime", "-y", server=server.url))
    check_pushed(decode(server.output_dir / name))


def test_push_duration_and_single_stream(server, media_file, tmp_path):
    out = tmp_path / "first-second.mkv"
    stdout = ok(
        cli("push", str(media_file), str(out), "--no-realtime", "--duration", "1", "--quiet", server=server.url)
    )
    assert f"video: {FPS} frames" in stdout and f"audio: {RATE} samples" in stdout, stdout
    check_pushed(decode(out), video_frames=FPS, samples=RATE)

    video_only = tmp_path / "video-only.mp4"
    ok(cli("push", str(media_file), str(video_only), "--no-realtime", "--no-audio", server=server.url))
    (video,) = decode(video_only)["streams"]
    assert video["type"] == "video" and video["frame_count"] == FRAMES


def test_push_keeps_the_ntsc_rate_exact(server, tmp_path):
    source = tmp_path / "ntsc.mkv"
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i, frame in enumerate(patterns(15, H, W)):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.transpose(1, 2, 0)), format="rgb24")
            picture.pts = i
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    stdout = ok(cli("push", str(source), str(tmp_path / "out.mkv"), "--no-realtime", server=server.url))
    info = json.loads(ok(cli("sessions", "show", session_id(stdout), "--json", server=server.url)))
    assert info["streams"][0]["config"]["frame_rate"] == "30000/1001"
    (video,) = decode(tmp_path / "out.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(15))


def test_push_keeps_a_late_start(server, tmp_path):
    """Audio that starts 0.5 s after the video still starts 0.5 s in (silence before it)."""
    source = tmp_path / "late-audio.mkv"
    with av.open(str(source), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=RATE, layout="mono")
        for i, frame in enumerate(patterns(50, H, W)):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.transpose(1, 2, 0)), format="rgb24")
            picture.pts = i
            container.mux(video.encode(picture))
        tone = (sine(440, RATE, 1.5, 1, amplitude=0.4) * 32767).astype(np.int16)
        for start in range(0, len(tone), 1024):
            sound = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(tone[start : start + 1024].T), format="s16", layout="mono"
            )
            sound.sample_rate, sound.pts = RATE, RATE // 2 + start
            container.mux(audio.encode(sound))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    out = tmp_path / "late-audio-out.mkv"
    stdout = ok(cli("push", str(source), str(out), "--no-realtime", server=server.url))
    assert "video: 50 frames" in stdout and f"audio: {len(tone)} samples" in stdout, stdout
    result = decode(out)
    video_out = next(s for s in result["streams"] if s["type"] == "video")
    audio_out = next(s for s in result["streams"] if s["type"] == "audio")
    assert [read_stamp(f) for f in video_out["frames"]] == list(range(50))
    pcm, rate = audio_out["pcm"][:, 0], audio_out["sample_rate"]
    first_sound = np.nonzero(np.abs(pcm) > 0.05)[0][0] / rate
    assert abs(first_sound - 0.5) < 0.03, first_sound


#: ``python -m framecast.cli``, with Ctrl-C handled as Python handles it under a terminal. A suite
#: started in the background (``cmd &`` in a script, some CI runners) hands its children SIGINT
#: ignored, and Python then installs no KeyboardInterrupt: the push would never hear the signal.
CTRL_C_AS_FROM_A_TERMINAL = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('framecast.cli', run_name='__main__', alter_sys=True)"
)


def test_ctrl_c_finishes_what_was_pushed(server, tmp_path):
    """SIGINT mid-push: exit 130, and the output is complete and playable up to where it stopped."""
    source = make_media(tmp_path / "long.mkv", seconds=8)
    out = tmp_path / "interrupted.mkv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMECAST_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_AS_FROM_A_TERMINAL, "push", str(source), str(out), "--server", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        # The first progress line comes a second into the real-time push: at most ~2 s of 8 sent.
        while not any(line.startswith("pushed ") for line in seen):
            ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no progress line within 60 s: {seen}"
            line = proc.stderr.readline()
            assert line, f"push ended early: {seen}"
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, "".join(seen) + stderr
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    match = re.search(r"video: (\d+) frames", stdout)
    assert match, stdout
    pushed = int(match.group(1))
    assert 0 < pushed < 8 * FPS, stdout
    (video, audio) = decode(out)["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(pushed))


# -- sessions ----------------------------------------------------------------------------------


def test_sessions_list_show_close(server):
    running = framecast.StreamWriter(framecast.ServerFile(f"cli/{uuid.uuid4().hex[:8]}.mkv"), server=server.url)
    running.add_video_stream(frame_rate=FPS, width=W, height=H)
    running.add_audio_stream(sample_rate=RATE, num_channels=1)
    finished = framecast.StreamWriter(framecast.ServerFile(f"cli/{uuid.uuid4().hex[:8]}.mp4"), server=server.url)
    finished.add_video_stream(frame_rate=FPS, width=W, height=H)
    try:
        running.open()
        running.write_video_chunk(0, patterns(12, H, W))
        running.flush()
        with finished.open():
            finished.write_video_chunk(0, patterns(5, H, W))
        assert running.session_id is not None and finished.session_id is not None

        table = ok(cli("sessions", "list", server=server.url))
        lines = {line.split()[0]: line for line in table.splitlines()[1:]}
        assert table.splitlines()[0].split()[:3] == ["ID", "STATE", "DESTINATION"]
        assert "streaming" in lines[running.session_id] and "v0 12f/" in lines[running.session_id]
        assert "a1 0s/0p" in lines[running.session_id]
        assert "closed" in lines[finished.session_id] and "v0 5f/5p" in lines[finished.session_id]
        assert ".mkv" in lines[running.session_id]

        listed = json.loads(ok(cli("sessions", "list", "--json", server=server.url)))
        assert {running.session_id, finished.session_id} <= {s["id"] for s in listed}

        shown = ok(cli("sessions", "show", running.session_id, server=server.url))
        assert re.search(r"^state\s+streaming$", shown, re.M), shown
        assert "12 frames in" in shown and "client_connected" in shown
        assert "libx264" in shown and f"{W}x{H}" in shown

        closed = ok(cli("sessions", "close", running.session_id, server=server.url))
        assert f"session {running.session_id} closed" in closed
        info = json.loads(ok(cli("sessions", "show", running.session_id, "--json", server=server.url)))
        assert info["state"] == "closed"
        assert any(e["event"] == "finalized" for e in info["events"])
        assert "finalized" in ok(cli("sessions", "show", running.session_id, server=server.url))
        again = json.loads(ok(cli("sessions", "close", running.session_id, "--json", server=server.url)))
        assert again["state"] == "closed"  # idempotent
    finally:
        running.close()
        finished.close()


def test_sessions_without_an_action_lists(server):
    """`framecast sessions` lists, as `git remote` and `docker ps` do; flags go before or after."""
    writer = framecast.StreamWriter(framecast.Discard(), server=server.url)
    writer.add_video_stream(frame_rate=FPS, width=W, height=H)
    with writer.open():
        writer.write_video_chunk(0, patterns(2, H, W))
    assert writer.session_id is not None
    table = ok(cli("sessions", server=server.url))
    assert table.splitlines()[0].split()[:3] == ["ID", "STATE", "DESTINATION"] and writer.session_id in table
    for args in (("sessions", "--json"), ("sessions", "--json", "list"), ("sessions", "list", "--json")):
        assert writer.session_id in {s["id"] for s in json.loads(ok(cli(*args, server=server.url)))}
    # --server before the action is kept (the action's own parser does not reset it).
    before = cli("sessions", "--server", server.url, "list")
    assert writer.session_id in ok(before)


def test_server_from_the_environment(server):
    assert ok(cli("sessions", "list", env={"FRAMECAST_SERVER": server.url}))
    caps = json.loads(
        ok(cli("capabilities", "--json", env={"FRAMECAST_SERVER": server.url, "FRAMECAST_API_KEY": "unused"}))
    )
    assert "mp4" in caps["muxers"]


def test_capabilities(server):
    text = ok(cli("capabilities", server=server.url))
    assert text.startswith("FFmpeg ")
    assert re.search(r"^video encoders \(\d+\):", text, re.M) and "libx264" in text
    assert re.search(r"^muxers \(\d+\):", text, re.M) and "matroska" in text
    assert re.search(r"^RGB frames converted to yuv420p with: libyuv$", text, re.M)
    caps = json.loads(ok(cli("capabilities", "--json", server=server.url)))
    assert "libx264" in caps["video_encoders"] and "rtmp" in caps["protocols"]


def test_api_key(media_file, tmp_path):
    """Against a server that wants a key: refused without one, served with --api-key or the env."""
    keyed = ServerProcess(tmp_path / "output", env={"FRAMECAST_API_KEYS": "sesame"})
    try:
        failed(cli("sessions", "list", server=keyed.url), "API key", "--api-key")
        failed(cli("push", str(media_file), "server:k.mkv", "--no-realtime", server=keyed.url), "API key")
        assert ok(cli("sessions", "list", "--api-key", "sesame", server=keyed.url)) == "no sessions\n"
        stdout = ok(
            cli("push", str(media_file), "server:k.mkv", "--no-realtime", "--api-key", "sesame", server=keyed.url)
        )
        check_pushed(decode(keyed.output_dir / "k.mkv"))
        assert session_id(stdout) in ok(cli("sessions", "list", "--api-key", "sesame", server=keyed.url))
        shown = ok(
            cli(
                "sessions",
                "show",
                session_id(stdout),
                env={"FRAMECAST_SERVER": keyed.url, "FRAMECAST_API_KEY": "sesame"},
            )
        )
        assert re.search(r"^state\s+closed$", shown, re.M), shown
    finally:
        keyed.stop()


# -- errors ------------------------------------------------------------------------------------


def test_missing_file(server, tmp_path):
    failed(
        cli("push", str(tmp_path / "nope.mp4"), str(tmp_path / "out.mp4"), server=server.url),
        "no such file",
        "nope.mp4",
    )


def test_file_that_is_not_media(server, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    failed(cli("push", str(junk), str(tmp_path / "out.mp4"), server=server.url), "cannot read", "junk.mp4")


def test_unknown_session(server):
    failed(cli("sessions", "show", "0123456789abcdef", server=server.url), "no session with id", "0123456789abcdef")
    failed(cli("sessions", "close", "0123456789abcdef", server=server.url), "no session with id")


def test_unreachable_server(media_file, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (("sessions", "list"), ("capabilities",), ("push", str(media_file), str(tmp_path / "o.mp4"))):
        failed(cli(*args, server=dead), "cannot reach the framecast server", dead)


def test_server_refusals_carry_the_servers_message(server, media_file, tmp_path):
    # A path outside the output dir: the server's 422 names the problem.
    line = failed(cli("push", str(media_file), "server:../outside.mkv", "--no-realtime", server=server.url))
    assert "outside" in line or "output dir" in line, line
    # A destination that refuses the connection: FFmpeg's reason.
    url = f"rtmp://127.0.0.1:{free_port()}/live/nobody"
    line = failed(
        cli("push", str(media_file), url, server=server.url, timeout=60), "session failed", "refused", alone=False
    )
    assert line.count("refused") == 1, line


def test_push_without_pyav_says_what_to_install(media_file, tmp_path):
    fake = tmp_path / "no-av"
    fake.mkdir()
    (fake / "av.py").write_text("raise ImportError('No module named av (simulated)')\n")
    line = failed(cli("push", str(media_file), str(tmp_path / "o.mp4"), env={"PYTHONPATH": str(fake)}))
    assert "pip install 'framecast[server]'" in line


def test_the_sdk_does_not_import_pyav():
    code = "import sys, framecast, framecast.cli; assert 'av' not in sys.modules, 'av imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
