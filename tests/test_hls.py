"""HLS and DASH written by framecast and served by it, live (issue 16).

A session writes a playlist and its segments into the output directory; the running server serves
them over HTTP while the session streams, and Debian's ffprobe (the ffmpeg package) reads the live
stream through the server's URL, as a player would. After close every segment decodes and the
stamped frames across them are every frame written, once. Then the confinement: every muxer
option that names a file is refused, symlinks planted in the output directory are never followed,
and two sessions never write the same names.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

import framecast

from .media import decode, patterns, read_stamp, sine
from .test_live import FPS, RATE, H, W, av_writer

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(FFPROBE is None, reason="Debian's ffprobe (apt install ffmpeg)")


def stream_seconds(writer: framecast.StreamWriter, first: int, end: int) -> None:
    """Stamped frames ``first`` to ``end`` and their tone, a second at a time (paced by the server)."""
    for start in range(first, end, FPS):
        stop = min(end, start + FPS)
        writer.write_video_chunk(0, patterns(stop - start, H, W, start=start))
        writer.write_audio_chunk(1, sine(440, RATE, (stop - start) / FPS, channels=2, amplitude=0.3))


class Background:
    """Runs ``stream_seconds`` in a thread, so the test can watch the session from outside."""

    def __init__(self, writer: framecast.StreamWriter, seconds: int) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(writer, seconds), daemon=True)
        self.thread.start()

    def _run(self, writer: framecast.StreamWriter, seconds: int) -> None:
        try:
            stream_seconds(writer, 0, seconds * FPS)
        except BaseException as exc:  # re-raised by join()
            self.error = exc

    def join(self, timeout: float = 120) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the writer thread did not finish"
        if self.error is not None:
            raise self.error


def media_sequence(playlist: str) -> int:
    match = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist)
    assert match, playlist
    return int(match.group(1))


def segment_names(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


def test_a_live_hls_session_is_served_while_it_streams(server):
    writer = av_writer(framecast.ServerFile("hls/live.m3u8", playlist_size=3), server.url)
    seen: list[tuple[int, list[str]]] = []
    with writer.open():
        url = writer.playback_url
        assert url == f"{server.url}/v1/sessions/{writer.session_id}/files/live.m3u8"
        assert url is not None
        background = Background(writer, 14)
        with httpx.Client(timeout=10) as http:
            deadline = time.monotonic() + 60
            while background.thread.is_alive() and time.monotonic() < deadline:
                response = http.get(url)
                if response.status_code == 200:
                    assert response.headers["content-type"] == "application/vnd.apple.mpegurl"
                    assert response.headers["cache-control"] == "no-store"
                    seen.append((media_sequence(response.text), segment_names(response.text)))
                else:  # before the first segment is complete there is no playlist yet
                    assert response.status_code == 404 and not seen, response.text
                time.sleep(0.5)
            assert seen, "the playlist never appeared"
            first_sequence, first_names = seen[0]
            # A segment is immutable and served in byte ranges.
            segment_url = url.rsplit("/", 1)[0] + "/" + seen[-1][1][-1]
            whole = http.get(segment_url)
            assert whole.status_code == 200 and whole.headers["content-type"] == "video/iso.segment"
            assert "immutable" in whole.headers["cache-control"]
            part = http.get(segment_url, headers={"Range": "bytes=0-99"})
            assert part.status_code == 206 and part.content == whole.content[:100]
            assert part.headers["content-range"] == f"bytes 0-99/{len(whole.content)}"
            init = http.get(url.rsplit("/", 1)[0] + "/live_init.mp4")
            assert init.status_code == 200 and init.headers["content-type"] == "video/mp4"
            if FFPROBE is not None:  # a player's view: ffprobe reads the live stream through the server
                probe = subprocess.run(
                    [FFPROBE, "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json", url],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert probe.returncode == 0, probe.stderr
                streams = json.loads(probe.stdout)["streams"]
                assert {s["codec_name"] for s in streams} == {"h264", "aac"}
                assert any(s.get("width") == W and s.get("height") == H for s in streams)
            background.join()
            # The live window slid: the media sequence advanced, and the first segments are gone.
            last_sequence, last_names = seen[-1]
            assert last_sequence > first_sequence and len(last_names) <= 3
            gone = http.get(url.rsplit("/", 1)[0] + "/" + first_names[0])
            assert gone.status_code == 404 and gone.json()["error"]["code"] == "file_not_found"
    summary = writer.summary
    assert summary is not None and summary["state"] == "closed"
    assert summary["playback_url"] == f"/v1/sessions/{writer.session_id}/files/live.m3u8"
    files = sorted(os.listdir(server.output_dir / "hls"))
    assert "live.m3u8" in files and "live_init.mp4" in files and not [f for f in files if f.endswith(".tmp")]


def stamps_of(source: Any, format: str | None = None) -> list[int]:
    with av.open(source, format=format) as container:
        return [read_stamp(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def test_an_event_playlist_keeps_every_segment_each_decodable_alone(server):
    seconds = 7
    writer = av_writer(framecast.ServerFile("hls/event.m3u8", playlist_type="event", segment_duration=2), server.url)
    with writer.open():
        stream_seconds(writer, 0, seconds * FPS)
    directory = server.output_dir / "hls"
    playlist = (directory / "event.m3u8").read_text()
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in playlist and "#EXT-X-ENDLIST" in playlist
    names = segment_names(playlist)
    assert len(names) == 4, playlist  # 2 + 2 + 2 + 1 s: a segment per keyframe interval
    init = (directory / "event_init.mp4").read_bytes()
    stamps: list[int] = []
    for name in names:  # each segment decodes on its own (with the init segment), from a keyframe
        got = stamps_of(io.BytesIO(init + (directory / name).read_bytes()))
        assert got and got == list(range(got[0], got[0] + len(got)))
        stamps += got
    assert stamps == list(range(seconds * FPS))  # every frame, once, in order, across the segments
    assert stamps_of(str(directory / "event.m3u8")) == list(range(seconds * FPS))  # and as a player reads it
    audio = decode(str(directory / "event.m3u8"))["streams"]
    assert [s["type"] for s in audio] == ["video", "audio"] and audio[1]["codec"] == "aac"


def test_mpegts_segments(server):
    writer = av_writer(framecast.ServerFile("hls/ts.m3u8", playlist_type="event", segment_format="mpegts"), server.url)
    with writer.open():
        stream_seconds(writer, 0, 3 * FPS)
    directory = server.output_dir / "hls"
    names = segment_names((directory / "ts.m3u8").read_text())
    assert names and all(re.fullmatch(r"ts_\d{5}\.ts", n) for n in names)
    assert sum((stamps_of(str(directory / n)) for n in names), []) == list(range(3 * FPS))


@needs_ffprobe
def test_dash_mpd_and_segments_decode_with_ffprobe(server):
    seconds = 5
    writer = av_writer(framecast.ServerFile("dashonly/show.mpd", playlist_type="event"), server.url)
    with writer.open():
        url = writer.playback_url
        assert url is not None and url.endswith("/files/show.mpd")
        stream_seconds(writer, 0, seconds * FPS)
        mpd = httpx.get(url, timeout=10)
        assert mpd.headers["content-type"] == "application/dash+xml" and "<MPD" in mpd.text
    assert FFPROBE is not None
    probe = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "json",
            str(server.output_dir / "dashonly" / "show.mpd"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    streams = {s["codec_name"]: s for s in json.loads(probe.stdout)["streams"]}
    assert set(streams) == {"h264", "aac"}
    assert (streams["h264"]["width"], streams["h264"]["height"]) == (W, H)
    assert int(streams["h264"]["nb_read_frames"]) == seconds * FPS
    files = sorted(os.listdir(server.output_dir / "dashonly"))
    assert all(f == "show.mpd" or f.startswith("show-") for f in files), files


# -- confinement ---------------------------------------------------------------------------------

VIDEO = {"type": "video", "width": 64, "height": 48, "frame_rate": 10}


def hls_config(path: str = "conf/a.m3u8", **extra: Any) -> dict[str, Any]:
    return {"destination": {"type": "server_file", "path": path}, "streams": [VIDEO], **extra}


@pytest.mark.parametrize(
    "option, value",
    [
        ("hls_segment_filename", "/tmp/evil_%05d.ts"),
        ("hls_segment_filename", "../../evil_%05d.ts"),
        ("hls_segment_filename", "seg_%05d.ts"),
        ("hls_fmp4_init_filename", "../init.mp4"),
        ("hls_base_url", "http://elsewhere.example/"),
        ("master_pl_name", "../../master.m3u8"),
        ("hls_key_info_file", "/etc/passwd"),
        ("hls_time", "4"),
        ("hls_flags", "append_list"),
        ("method", "PUT"),
    ],
)
def test_hls_options_that_name_files_or_are_framecasts_own_are_refused(api, option, value):
    response = api.post("/v1/sessions", json=hls_config(options={option: value}))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == f"options.{option}", error
    assert not list(Path("/tmp").glob("evil_*"))


@pytest.mark.parametrize(
    "option", ["init_seg_name", "media_seg_name", "hls_master_name", "window_size", "remove_at_exit"]
)
def test_dash_options_likewise(api, option):
    config = {
        "destinations": [{"type": "server_file", "path": "conf/d.mpd", "options": {option: "../x-$Number$.m4s"}}],
        "streams": [VIDEO],
    }
    response = api.post("/v1/sessions", json=config)
    assert response.status_code == 422 and response.json()["error"]["field"] == f"destinations.0.options.{option}"


@pytest.mark.parametrize(
    "dest, field, message",
    [
        ({"type": "server_file", "path": "conf/a%05d.m3u8"}, "destination.path", "letters, digits"),
        ({"type": "server_file", "path": "conf/$Number$.mpd"}, "destination.path", "letters, digits"),
        ({"type": "server_file", "path": "conf/a.mkv", "playlist_size": 3}, "destination.playlist_size", "HLS"),
        (
            {"type": "server_file", "path": "conf/a.mpd", "segment_format": "mpegts"},
            "destination.segment_format",
            "HLS",
        ),
        ({"type": "url", "url": "udp://127.0.0.1:9"}, "format", "only as a server file"),
    ],
)
def test_playlist_names_and_fields_are_checked(api, dest, field, message):
    extra = {"format": "hls"} if dest["type"] == "url" else {}
    response = api.post("/v1/sessions", json={"destination": dest, "streams": [VIDEO], **extra})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field and message in response.json()["error"]["message"]


def test_two_sessions_never_write_the_same_names(api):
    first = api.post("/v1/sessions", json=hls_config("busy/same.m3u8"))
    assert first.status_code == 201, first.text
    try:
        for path in ("busy/same.m3u8", "busy/same.mpd", "busy/same_init.mp4"):
            response = api.post("/v1/sessions", json=hls_config(path))
            assert response.status_code == 409, (path, response.text)
            assert response.json()["error"]["code"] == "path_in_use"
            assert response.json()["error"]["field"] == "destination.path"
        other = api.post("/v1/sessions", json=hls_config("busy/other.m3u8"))  # another stem: fine
        assert other.status_code == 201, other.text
        api.delete(f"/v1/sessions/{other.json()['id']}")
    finally:
        api.delete(f"/v1/sessions/{first.json()['id']}")


def test_files_from_before_are_replaced_only_when_asked(api, server):
    directory = server.output_dir / "before"
    directory.mkdir(exist_ok=True)
    (directory / "old_00007.m4s").write_bytes(b"an earlier stream")
    refused = api.post("/v1/sessions", json=hls_config("before/old.m3u8"))
    assert refused.status_code == 422 and "overwrite" in refused.json()["error"]["message"]
    assert (directory / "old_00007.m4s").exists()
    replaced = api.post(
        "/v1/sessions",
        json={"destination": {"type": "server_file", "path": "before/old.m3u8", "overwrite": True}, "streams": [VIDEO]},
    )
    assert replaced.status_code == 201, replaced.text
    api.delete(f"/v1/sessions/{replaced.json()['id']}")
    assert not (directory / "old_00007.m4s").exists()


def test_symlinks_planted_in_the_output_dir_are_never_followed(api, server, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    directory = server.output_dir / "planted"
    directory.mkdir(exist_ok=True)
    # A directory link and a playlist link: refused when the session is asked for.
    os.symlink(directory, server.output_dir / "linkdir", target_is_directory=True)  # within the output dir
    os.symlink(tmp_path, server.output_dir / "outdir", target_is_directory=True)  # out of it
    os.symlink(victim, directory / "pl.m3u8")
    for path, why in (("linkdir/a.m3u8", "symlink"), ("outdir/a.m3u8", "outside"), ("planted/pl.m3u8", "outside")):
        response = api.post("/v1/sessions", json=hls_config(path))
        assert response.status_code == 422 and why in response.json()["error"]["message"], response.text
    # A segment's name linked out before the session, with overwrite: the link goes, not its target.
    os.symlink(victim, directory / "seg_00000.m4s")
    created = api.post(
        "/v1/sessions",
        json={
            "destination": {"type": "server_file", "path": "planted/seg.m3u8", "overwrite": True},
            "streams": [VIDEO],
        },
    )
    assert created.status_code == 201, created.text
    api.delete(f"/v1/sessions/{created.json()['id']}")
    assert victim.read_text() == "untouched" and not (directory / "seg_00000.m4s").is_symlink()


def test_a_symlink_planted_while_it_streams_fails_the_session_and_writes_nothing_through_it(server, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    directory = server.output_dir / "race"
    writer = av_writer(framecast.ServerFile("race/r.m3u8", segment_duration=1), server.url)
    with pytest.raises(framecast.FramecastError, match="symlink"):
        with writer.open():
            stream_seconds(writer, 0, FPS)
            for k in range(3, 10):  # where the next segments go, before the muxer gets there
                os.symlink(victim, directory / f"r_{k:05d}.m4s.tmp")
            stream_seconds(writer, FPS, 8 * FPS)
    assert victim.read_text() == "untouched"
    info = httpx.get(f"{server.url}/v1/sessions/{writer.session_id}", timeout=10).json()
    assert info["state"] == "failed" and "not followed" in info["error"]
    # The files endpoint serves no link either.
    os.symlink(victim, directory / "r_00099.m4s")
    response = httpx.get(f"{server.url}/v1/sessions/{writer.session_id}/files/r_00099.m4s", timeout=10)
    assert response.status_code == 404


def test_the_files_endpoint_serves_only_the_sessions_own_files(api, server):
    created = api.post("/v1/sessions", json=hls_config("own/o.m3u8")).json()
    (server.output_dir / "own" / "secret.txt").write_text("not the session's")
    try:
        base = f"/v1/sessions/{created['id']}/files/"
        for name in ("secret.txt", "o.m3u8.tmp", "other_00001.m4s", "%2e%2e%2fsecret.txt", "%2e%2e"):
            response = api.get(base + name)
            assert response.status_code == 404, (name, response.status_code, response.text)
    finally:
        api.delete(f"/v1/sessions/{created['id']}")
    plain = api.post(
        "/v1/sessions", json={"destination": {"type": "server_file", "path": "own/plain.mkv"}, "streams": [VIDEO]}
    ).json()
    early = api.get(f"/v1/sessions/{plain['id']}/files/plain.mkv")
    assert early.status_code == 409  # a single file: once the session is closed
    api.delete(f"/v1/sessions/{plain['id']}")
    done = api.get(f"/v1/sessions/{plain['id']}/files/plain.mkv")
    assert done.status_code == 200 and done.headers["content-type"] == "video/x-matroska"


def test_cors_is_off_unless_the_operator_names_origins(own_server, server):
    preflight = {"Origin": "https://player.example", "Access-Control-Request-Method": "GET"}
    default = httpx.options(f"{server.url}/v1/sessions/x/files/a.m3u8", headers=preflight, timeout=10)
    assert "access-control-allow-origin" not in default.headers
    cors = own_server(FRAMECAST_CORS_ORIGINS="https://player.example")
    allowed = httpx.options(
        f"{cors.url}/v1/sessions/x/files/a.m3u8",
        headers={**preflight, "Access-Control-Request-Headers": "authorization,range"},
        timeout=10,
    )
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://player.example"
    other = httpx.options(
        f"{cors.url}/v1/sessions/x/files/a.m3u8", headers={**preflight, "Origin": "https://evil.example"}, timeout=10
    )
    assert "access-control-allow-origin" not in other.headers


def test_a_ladder_of_3_rungs_gives_3_variants_each_at_its_size(server):
    seconds = 4
    rungs = [{"height": 240, "bitrate": "600k"}, {"height": 160, "bitrate": "300k"}, {"height": 120, "bitrate": "150k"}]
    writer = av_writer(framecast.ServerFile("ladder/show.m3u8", playlist_type="event", renditions=rungs), server.url)
    with writer.open():
        stream_seconds(writer, 0, seconds * FPS)
    directory = server.output_dir / "ladder"
    master = (directory / "show.m3u8").read_text()
    # One variant per rung, each with the shared audio rendition (and FFmpeg's audio-only variant).
    variants = [v for v in re.findall(r"#EXT-X-STREAM-INF:([^\n]*)\n([^\n]+)", master) if "RESOLUTION=" in v[0]]
    assert len(variants) == 3, master
    assert [line.split("RESOLUTION=")[1].split(",")[0] for line, _ in variants] == ["320x240", "214x160", "160x120"]
    assert all('AUDIO="group_audio"' in line for line, _ in variants), master
    assert '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="group_audio"' in master
    for (_, playlist), size in zip(variants, [(320, 240), (214, 160), (160, 120)]):
        with av.open(str(directory / playlist)) as container:
            frames = list(container.decode(video=0))
        assert (frames[0].width, frames[0].height) == size
        assert len(frames) == seconds * FPS, (playlist, len(frames))
        if size == (320, 240):  # the top rung is the session's own encoder: every stamp, in order
            assert [read_stamp(f.to_ndarray(format="rgb24")) for f in frames] == list(range(seconds * FPS))
    # Each video rung is its own encode, the audio one; the top rung is the session's own stream.
    assert writer.outputs[0]["encoders"] == ["libx264", "libx264", "libx264", "aac"]
    summary = writer.summary
    assert summary is not None and summary["streams"][0]["config"]["encoder_height"] == 240


@needs_ffprobe
def test_a_dash_ladder_has_a_representation_per_rung(server):
    rungs: list[dict[str, Any]] = [{"height": 240}, {"height": 120, "bitrate": "100k"}]
    writer = av_writer(framecast.ServerFile("dashladder/l.mpd", playlist_type="event", renditions=rungs), server.url)
    with writer.open():
        stream_seconds(writer, 0, 3 * FPS)
    assert FFPROBE is not None
    probe = subprocess.run(
        [FFPROBE, "-v", "error", "-count_frames", "-show_entries", "stream=codec_type,width,height,nb_read_frames",
         "-of", "json", str(server.output_dir / "dashladder" / "l.mpd")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    video = [s for s in json.loads(probe.stdout)["streams"] if s["codec_type"] == "video"]
    assert sorted((s["width"], s["height"]) for s in video) == [(160, 120), (320, 240)]
    assert all(int(s["nb_read_frames"]) == 3 * FPS for s in video)


@pytest.mark.parametrize(
    "dest, streams, message",
    [
        ({"path": "bad/a.mkv", "renditions": [{"height": 120}]}, [VIDEO], "for HLS"),
        ({"path": "bad/a.m3u8", "renditions": [{"height": 120}, {"height": 120}]}, [VIDEO], "same as an earlier"),
        ({"path": "bad/a.m3u8", "renditions": [{"height": 120}]}, [VIDEO, VIDEO], "one video stream"),
        ({"path": "bad/a.m3u8", "renditions": [{"height": 9000}]}, [VIDEO], "less than or equal"),
        ({"path": "bad/a.m3u8", "renditions": [{"height": 120, "bitrate": "lots"}]}, [VIDEO], "pattern"),
    ],
)
def test_ladders_are_checked(api, dest, streams, message):
    response = api.post("/v1/sessions", json={"destination": {"type": "server_file", **dest}, "streams": streams})
    assert response.status_code == 422, response.text
    assert message in response.text
