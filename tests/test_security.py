"""Hostile input and access control, against real servers: nobody gets in where they don't belong,
nothing reaches outside the sandbox, and bad data gets a clear answer while the server lives on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import framecast
from framecast import protocol

from .conftest import ROOT, ServerProcess, free_port
from .media import patterns, sine

VIDEO = {"type": "video", "frame_rate": 30, "width": 64, "height": 48}
AUDIO = {"type": "audio", "sample_rate": 8000, "num_channels": 1}
FILE = {"type": "server_file", "path": "sec/x.mkv"}


def body(dest=None, streams=None, **extra):
    return {"destination": dest or FILE, "streams": streams or [VIDEO], **extra}


HOSTILE = [
    # Destinations: FFmpeg pseudo-protocols, local files, paths out of the output dir.
    (body({"type": "url", "url": "concat:/etc/passwd|/etc/hosts"}), "destination.url", "not allowed"),
    (body({"type": "url", "url": "subfile:,start,0,end,100,:/etc/passwd"}), "destination.url", "not allowed"),
    (body({"type": "url", "url": "pipe:1"}), "destination.url", "not allowed"),
    (body({"type": "url", "url": "file:///etc/passwd"}), "destination.url", "unsupported URL scheme"),
    (body({"type": "url", "url": "data:text/plain,hi"}), "destination.url", "not allowed"),
    (body({"type": "url", "url": "crypto:/etc/passwd"}), "destination.url", "not allowed"),
    (body({"type": "url", "url": "http://127.0.0.1:9/x"}), "destination.url", "not allowed"),
    (body({"type": "server_file", "path": "/etc/x.mkv"}), "destination.path", "must be relative"),
    (body({"type": "server_file", "path": "../x.mkv"}), "destination.path", "must not contain '..'"),
    (body({"type": "server_file", "path": "a/../../x.mkv"}), "destination.path", "must not contain '..'"),
    (body({"type": "server_file", "path": "file:x.mkv"}), "destination.path", "not a URL"),
    (body({"type": "server_file", "path": "~/x.mkv"}), "destination.path", "must be relative"),
    # Muxers that write files of their own.
    (body({"type": "server_file", "path": "a.mkv|/tmp/pwned.mkv"}, format="tee"), "format", "not allowed"),
    (body({"type": "server_file", "path": "seg.mkv"}, format="segment"), "format", "not allowed"),
    (body({"type": "server_file", "path": "m.mkv"}, format="dash"), "destination.path", "playlist is NAME.mpd"),
    (body({"type": "url", "url": "udp://127.0.0.1:9"}, format="hls"), "format", "only as a server file"),
    # HLS and DASH name every file themselves (tests/test_hls.py has the whole class).
    (
        body({"type": "server_file", "path": "live.m3u8"}, options={"hls_segment_filename": "/tmp/pwned%d.ts"}),
        "options.hls_segment_filename",
        "names files",
    ),
    (
        body({"type": "server_file", "path": "m.mpd"}, options={"media_seg_name": "../x.m4s"}),
        "options.media_seg_name",
        "names files",
    ),
    (body({"type": "server_file", "path": "img%03d.png"}), "destination.path", "patterns"),
    # Filters that read files, run commands or listen.
    (body(streams=[{**VIDEO, "filter_desc": "movie=/etc/passwd"}]), "streams.0.filter_desc", "'movie'"),
    (body(streams=[{**AUDIO, "filter_desc": "amovie=/etc/passwd"}]), "streams.0.filter_desc", "'amovie'"),
    (body(streams=[{**VIDEO, "filter_desc": "hflip,scale=textfile=x.txt"}]), "streams.0.filter_desc", "textfile"),
    (body(streams=[{**VIDEO, "filter_desc": "subtitles=evil.srt"}]), "streams.0.filter_desc", "'subtitles'"),
    (body(streams=[{**VIDEO, "filter_desc": "sendcmd=c='0 hflip'"}]), "streams.0.filter_desc", "'sendcmd'"),
    (body(streams=[{**VIDEO, "filter_desc": "zmq"}]), "streams.0.filter_desc", "'zmq'"),
    (body(streams=[{**VIDEO, "filter_desc": "hflip,scale=w=/etc:h=2"}]), "streams.0.filter_desc", "path or URL"),
    # Options naming files or URLs.
    (
        body(streams=[{**VIDEO, "encoder_option": {"passlogfile": "/tmp/x"}}]),
        "streams.0.encoder_option.passlogfile",
        "names files",
    ),
    (body(streams=[{**VIDEO, "encoder_option": {"stats": "x.log"}}]), "streams.0.encoder_option.stats", "names files"),
    (
        body(streams=[{**VIDEO, "encoder_option": {"x264-params": "keyint=30:stats=/tmp/s"}}]),
        "streams.0.encoder_option.x264-params",
        "names files",
    ),
    (
        body(streams=[{**VIDEO, "encoder_option": {"preset": "http://evil/"}}]),
        "streams.0.encoder_option.preset",
        "path or URL",
    ),
    (body(options={"hls_segment_filename": "/tmp/s%d.ts"}), "options.hls_segment_filename", "names files"),
    (body(options={"movflags": "../../x"}), "options.movflags", "path or URL"),
    (body(options={"protocol_whitelist": "file,http"}), "options.protocol_whitelist", "names files"),
    (body(metadata={"title": "x" * 5000}), "metadata.title", "4096"),
    # Limits.
    (body(streams=[{**VIDEO, "width": 16000, "height": 48}]), "streams.0.width", "above this server's limit"),
    (body(streams=[{**VIDEO, "frame_rate": 900}]), "streams.0.frame_rate", "above this server's limit"),
    (body(streams=[{**AUDIO, "num_channels": 40}]), "streams.0.num_channels", "above this server's limit"),
    (body(streams=[VIDEO] * 17), "streams", "at most 16"),
    (body(streams=[{**VIDEO, "bogus": 1}]), "streams.0.bogus", "Extra inputs"),
]


@pytest.mark.parametrize("config, field, message", HOSTILE, ids=[f"{i}-{h[1]}" for i, h in enumerate(HOSTILE)])
def test_hostile_configs_are_refused_naming_the_field(api, server, config, field, message):
    response = api.post("/v1/sessions", json=config)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert message in error["message"], error
    assert not (server.output_dir.parent / "pwned.mkv").exists()
    assert api.get("/healthz").status_code == 200


def test_safe_lookalikes_still_work(api):
    """The policy is not so broad that ordinary settings trip it."""
    ok = body(
        streams=[
            {
                **VIDEO,
                "filter_desc": "hflip,scale=64:48,setpts=PTS-STARTPTS,vflip",
                "encoder_option": {"preset": "ultrafast", "x264-params": "keyint=30:min-keyint=30", "crf": "20"},
            }
        ],
        options={"cluster_time_limit": "500"},
        metadata={"title": "a: b / c"},
    )
    response = api.post("/v1/sessions", json=ok)
    assert response.status_code == 201, response.text
    assert api.delete(f"/v1/sessions/{response.json()['id']}").json()["state"] == "closed"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    env = {"FRAMECAST_API_KEYS": "key-one-3f9a, key-two-77c1", "FRAMECAST_MAX_SESSIONS_PER_KEY": "2"}
    proc = ServerProcess(tmp_path_factory.mktemp("keyed") / "out", env=env)
    yield proc
    proc.stop()


def test_api_keys_guard_every_rest_route_but_healthz(keyed):
    assert httpx.get(keyed.url + "/healthz").status_code == 200
    for method, path in [
        ("GET", "/v1/sessions"),
        ("GET", "/v1/capabilities"),
        ("POST", "/v1/sessions"),
        ("GET", "/v1/sessions/x"),
        ("DELETE", "/v1/sessions/x"),
        ("GET", "/v1/sessions/x/output"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "key-one-3f9a"}):
            response = httpx.request(method, keyed.url + path, headers=headers, json=body())
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "unauthorized"
    ok = httpx.get(keyed.url + "/v1/capabilities", headers={"Authorization": "Bearer key-two-77c1"})
    assert ok.status_code == 200


def test_sdk_uses_the_api_key_and_keys_never_leak(keyed, tmp_path, monkeypatch):
    with pytest.raises(framecast.ServerError, match="missing or wrong API key") as err:
        framecast.capabilities(server=keyed.url)
    assert err.value.status == 401
    monkeypatch.setenv("FRAMECAST_API_KEY", "key-one-3f9a")
    writer = framecast.StreamWriter(tmp_path / "k.mkv", server=keyed.url)
    writer.add_video_stream(frame_rate=30, width=64, height=48)
    with writer.open():
        writer.write_video_chunk(0, patterns(5, 48, 64))
    listing = httpx.get(keyed.url + "/v1/sessions", headers={"Authorization": "Bearer key-one-3f9a"}).text
    log = keyed.log()
    for secret in ("key-one-3f9a", "key-two-77c1", writer._core.session["token"]):
        assert secret not in listing and secret not in log


def test_sessions_per_key_are_limited(keyed):
    headers = {"Authorization": "Bearer key-two-77c1"}

    def own_file(name: str) -> dict:  # a path is one open session's at a time (outputs.py)
        return body({"type": "server_file", "path": f"sec/limit-{name}.mkv"})

    created = [
        httpx.post(keyed.url + "/v1/sessions", json=own_file(str(i)), headers=headers, timeout=30) for i in range(2)
    ]
    assert all(r.status_code == 201 for r in created)
    third = httpx.post(keyed.url + "/v1/sessions", json=own_file("third"), headers=headers, timeout=30)
    assert third.status_code == 503 and "already has 2 open sessions" in third.json()["error"]["message"]
    other = httpx.post(
        keyed.url + "/v1/sessions", json=own_file("other"), headers={"Authorization": "Bearer key-one-3f9a"}, timeout=30
    )
    assert other.status_code == 201
    for r in [*created, other]:
        httpx.delete(f"{keyed.url}/v1/sessions/{r.json()['id']}", headers=headers, timeout=30)


def test_listening_beyond_loopback_needs_keys_or_insecure(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMECAST_")}
    command = [
        sys.executable,
        "-m",
        "framecast.cli",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--output-dir",
        str(tmp_path),
    ]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "refusing to listen on 0.0.0.0 without API keys" in refused.stderr
    assert "--insecure" in refused.stderr
    # With --insecure it starts (and is only ever spoken to on loopback here).
    port = free_port()
    proc = subprocess.Popen(
        [*command[:-4], "--port", str(port), "--output-dir", str(tmp_path), "--insecure"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)


def test_nan_audio_and_oversized_messages_get_clear_errors(api, server):
    created = api.post("/v1/sessions", json=body({"type": "server_file", "path": "sec/nan.wav"}, [AUDIO])).json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    with connect(created["stream_url"], additional_headers=headers, max_size=None, open_timeout=10) as ws:
        bad = sine(300, 8000, 0.1)
        bad[10, 0] = np.nan
        bad[20, 0] = np.inf
        head, payload = protocol.encode_chunk(0, 0, bad)
        ws.send(head + bytes(payload))
        error: dict[str, Any] = {"type": "event"}
        while error["type"] == "event":  # skip session events (client_connected)
            error = json.loads(ws.recv(timeout=10))
        assert error["type"] == "error" and error["seq"] == 0
        assert "2 samples are NaN or infinite" in error["message"]
        head, payload = protocol.encode_chunk(0, 1, sine(300, 8000, 0.1))
        ws.send(head + bytes(payload))
        reply = ws.recv(timeout=10)
        assert isinstance(reply, bytes) and protocol.parse_server_binary(reply) == protocol.Ack(1)
    # A message over the server's limit closes that connection (1009); the session goes on.
    limit = created["max_message_bytes"]
    with connect(created["stream_url"], additional_headers=headers, max_size=None, open_timeout=10) as ws:
        head, payload = protocol.encode_chunk(0, 2, np.zeros(((limit // 4) + 8192, 1), np.float32))
        ws.send(head + bytes(payload))
        with pytest.raises(ConnectionClosed) as err:
            for _ in range(50):  # what the server repeats on a reconnect (ACK, events), then the close
                ws.recv(timeout=10)
        assert err.value.rcvd is not None and err.value.rcvd.code == 1009
    assert api.get(f"/v1/sessions/{created['id']}").json()["state"] == "streaming"
    assert api.delete(f"/v1/sessions/{created['id']}").json()["state"] == "closed"


def test_schemathesis_finds_no_server_errors(tmp_path):
    """Property-based requests from the OpenAPI schema: no 5xx, responses match the schema."""
    env = {"FRAMECAST_IDLE_TIMEOUT": "2", "FRAMECAST_MAX_SESSIONS": "500"}
    proc = ServerProcess(tmp_path / "out", env=env)
    try:
        result = subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "schemathesis")
                if (ROOT / ".venv" / "bin" / "schemathesis").exists()
                else "schemathesis",
                "run",
                f"{proc.url}/openapi.json",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance",
                "--max-examples",
                "40",
                "--phases",
                "examples,coverage,fuzzing",
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--seed",
                "1",
                "--no-color",
                # Draining ends the server once it has no live session, as it is meant to: every
                # other operation, draining's status included, is fuzzed. tests/test_replica.py
                # checks the drain itself.
                "--exclude-operation-id",
                "drain_v1_admin_drain_post",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert proc.proc.poll() is None  # the server is still alive
    finally:
        proc.stop()
