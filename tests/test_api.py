"""The REST API and the websocket ingest, spoken to directly (httpx and a raw websocket client)."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from framecast import protocol

from .media import decode, patterns, psnr

VIDEO = {"type": "video", "frame_rate": 30, "width": 64, "height": 48}
AUDIO = {"type": "audio", "sample_rate": 8000, "num_channels": 1}


def create(api, streams=None, dest=None, **extra):
    body = {
        "destination": dest or {"type": "server_file", "path": f"api/{time.monotonic_ns()}.mkv"},
        "streams": streams or [VIDEO],
        **extra,
    }
    response = api.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def open_ws(created):
    return connect(
        created["stream_url"],
        additional_headers={"Authorization": f"Bearer {created['token']}"},
        max_size=None,
        open_timeout=10,
    ).__enter__()


def recv_until(ws, predicate, timeout=30.0):
    """Receive messages until predicate(message) is true; return everything received."""
    got: list[Any] = []  # binary messages as bytes, text ones parsed from JSON
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; received {got[-5:]}"
        message = ws.recv(timeout=remaining)
        if isinstance(message, str):
            message = json.loads(message)
        got.append(message)
        if predicate(message):
            return got


def ack_seq(message: bytes) -> int:
    """The seq of a binary message that must be an ACK."""
    reply = protocol.parse_server_binary(message)
    assert isinstance(reply, protocol.Ack), reply
    return reply.seq


def is_ack(seq):
    return lambda m: isinstance(m, bytes) and protocol.parse_server_binary(m) == protocol.Ack(seq)


def is_type(kind):
    return lambda m: isinstance(m, dict) and m["type"] == kind


def chunk(seq, array, stream=0, pts=None):
    head, payload = protocol.encode_chunk(stream, seq, np.ascontiguousarray(array), pts)
    return head + bytes(payload)


def test_health_and_capabilities(api):
    assert api.get("/healthz").json()["status"] == "ok"
    caps = api.get("/v1/capabilities").json()
    assert {"libavcodec", "libavformat", "libavutil"} <= set(caps["versions"])
    assert {"mp4", "matroska", "wav", "mp3", "flv", "mpegts"} <= set(caps["muxers"])
    assert {"libx264", "png", "ffv1"} <= set(caps["video_encoders"])
    assert {"aac", "libmp3lame", "pcm_s16le", "libopus"} <= set(caps["audio_encoders"])
    assert "aac" not in caps["video_encoders"]
    assert {"file", "rtmp", "udp", "tcp"} <= set(caps["protocols"])
    assert "srt" not in caps["protocols"]  # PyPI's PyAV wheels have no libsrt: we say so
    assert caps["destinations"] == ["client", "server_file", "url", "discard"]
    assert api.get("/docs").status_code == 200
    assert "/v1/sessions" in api.get("/openapi.json").json()["paths"]


def test_session_lifecycle_counters_and_download(api, server):
    created = create(api, [VIDEO, AUDIO], {"type": "server_file", "path": "api/life.mkv"})
    assert created["state"] == "created"
    assert created["stream_url"].startswith("ws://127.0.0.1:") and created["token"]
    assert created["streams"][0]["encoder"] == "libx264" and created["streams"][1]["encoder"] == "ac3"
    sid = created["id"]
    assert sid in [s["id"] for s in api.get("/v1/sessions").json()]
    assert api.get(f"/v1/sessions/{sid}/output").status_code == 409  # not closed yet

    ws = open_ws(created)
    ws.send(chunk(0, patterns(10, 48, 64)))
    ws.send(chunk(1, np.zeros((4000, 1), np.float32), stream=1))
    recv_until(ws, is_ack(1))
    info = api.get(f"/v1/sessions/{sid}").json()
    assert info["state"] == "streaming"
    assert info["streams"][0]["counters"]["chunks"] == 1 and info["streams"][0]["counters"]["frames"] == 10
    assert info["streams"][1]["counters"]["frames"] == 4000
    ws.send(protocol.encode_control("finish"))
    closed = recv_until(ws, is_type("closed"))[-1]
    assert closed["session"]["state"] == "closed"
    assert closed["session"]["streams"][0]["counters"]["packets"] == 10
    assert closed["session"]["streams"][0]["counters"]["bytes"] > 0
    ws.close()

    # DELETE is idempotent on a closed session.
    assert api.delete(f"/v1/sessions/{sid}").json()["state"] == "closed"
    assert api.delete(f"/v1/sessions/{sid}").json()["state"] == "closed"
    download = api.get(f"/v1/sessions/{sid}/output")
    assert download.status_code == 200
    assert download.content == (server.output_dir / "api" / "life.mkv").read_bytes()
    v, a = decode(download.content)["streams"]
    assert v["frame_count"] == 10 and a["sample_count"] >= 4000 - 1536


def test_delete_finalizes_an_open_session(api, server):
    created = create(api, [VIDEO], {"type": "server_file", "path": "api/deleted.mp4"})
    ws = open_ws(created)
    ws.send(chunk(0, patterns(12, 48, 64)))
    recv_until(ws, is_ack(0))
    info = api.delete(f"/v1/sessions/{created['id']}").json()
    assert info["state"] == "closed"
    recv_until(ws, is_type("closed"))
    ws.close()
    assert decode(server.output_dir / "api" / "deleted.mp4")["streams"][0]["frame_count"] == 12


def test_capabilities_name_only_the_destinations_the_settings_allow(own_server):
    files_only = own_server(FRAMECAST_ALLOWED_SCHEMES="file")
    assert httpx.get(files_only.url + "/v1/capabilities").json()["destinations"] == ["client", "server_file", "discard"]
    network_only = own_server(FRAMECAST_ALLOWED_SCHEMES="rtmp,udp")
    assert httpx.get(network_only.url + "/v1/capabilities").json()["destinations"] == ["url", "discard"]


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"streams": [{**VIDEO, "encoder": "nope"}]}, "streams.0.encoder", "unknown video encoder 'nope'"),
        ({"streams": [{**VIDEO, "height": 47}]}, "streams.0.encoder_height", "yuv420p needs an even"),
        ({"streams": [{**VIDEO, "encoder_format": "rgb24"}]}, "streams.0.encoder_format", "libx264"),
        ({"streams": [{**VIDEO, "width": 0}]}, "streams.0.width", "greater than 0"),
        ({"streams": [{**VIDEO, "colour": "red"}]}, "streams.0.colour", "Extra inputs"),
        ({"streams": [VIDEO], "destination": {"type": "server_file"}}, "destination.path", "Field required"),
        ({"streams": [VIDEO], "destination": {"type": "url"}}, "destination.url", "Field required"),
        ({"streams": [{**AUDIO, "num_channels": 6, "encoder": "libmp3lame"}]}, "streams.0", "libmp3lame"),
        (
            {"streams": [VIDEO], "destination": {"type": "url", "url": "srt://127.0.0.1:9000"}},
            "destination.url",
            "this server's FFmpeg has no srt protocol",
        ),
        (
            {"streams": [VIDEO], "destination": {"type": "url", "url": "gopher://127.0.0.1/x"}},
            "destination.url",
            "destinations of kind 'gopher' are not allowed on this server",
        ),
        (
            {"streams": [VIDEO], "destination": {"type": "server_file", "path": "../../etc/passwd.mp4"}},
            "destination.path",
            "must not contain '..'",
        ),
        (
            {"streams": [VIDEO], "destination": {"type": "client", "seekable": False}, "format": "mp4"},
            "format",
            "non seekable",
        ),
    ],
)
def test_configs_that_cannot_work_are_422_naming_the_field(api, body, field, message):
    full = {"destination": {"type": "client", "filename": "x.mp4"}, **body}
    response = api.post("/v1/sessions", json=full)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert message in error["message"]
    assert api.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"streams": [', "request body is not valid JSON: Expecting value (at character 13)"),
        ("not json", "request body is not valid JSON: Expecting value (at character 0)"),
        ("", "request body is empty; expected a session config as a JSON object"),
    ],
)
def test_a_body_that_is_not_a_json_config_is_400_saying_why(api, text, message):
    response = api.post("/v1/sessions", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {"code": "bad_request", "message": message}
    assert api.get("/healthz").status_code == 200


def refused(url, headers=None):
    """Connect and return the close code and reason the server answers with."""
    with connect(url, additional_headers=headers or {}, open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as err:
            ws.recv(timeout=10)
    assert err.value.rcvd is not None, "closed without a close frame"
    return err.value.rcvd.code, err.value.rcvd.reason


def test_unknown_session_is_404(api, server):
    response = api.get("/v1/sessions/doesnotexist")
    assert response.status_code == 404 and response.json()["error"]["code"] == "session_not_found"
    assert api.delete("/v1/sessions/doesnotexist").status_code == 404
    ws_url = server.url.replace("http", "ws") + "/v1/sessions/doesnotexist/stream"
    assert refused(ws_url) == (4404, "no session with id 'doesnotexist'")


def test_websocket_needs_the_session_token(api):
    created = create(api)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": created["token"]}):
        assert refused(created["stream_url"], headers) == (4401, "missing or wrong stream token")
    other = create(api)  # one session's token does not open another
    assert refused(other["stream_url"], {"Authorization": f"Bearer {created['token']}"})[0] == 4401
    assert api.get(f"/v1/sessions/{other['id']}").json()["state"] == "created"
    api.delete(f"/v1/sessions/{created['id']}")
    api.delete(f"/v1/sessions/{other['id']}")


def test_bad_chunks_get_clear_errors_and_the_session_lives_on(api, server):
    created = create(api, [VIDEO, AUDIO], {"type": "server_file", "path": "api/bad.mkv"})
    ws = open_ws(created)
    good = patterns(3, 48, 64)
    cases = [
        (b"FC", None, "malformed chunk: message too short"),
        (chunk(0, good)[:30], None, "truncated chunk header"),
        (chunk(0, good)[:-7], 0, "payload is"),  # the header is intact: its seq is named
        (chunk(1, good, stream=7), 1, "stream index 7 does not exist"),
        (chunk(2, good.astype(np.float32)), 2, "expected dtype uint8 (format 'rgb24'), got float32"),
        (chunk(3, good[:, :, :40]), 3, "expected shape (frames, 3, 48, 64), got (3, 3, 40, 64)"),
        (chunk(4, np.zeros((10, 2), np.float32), stream=1), 4, "expected shape (frames, 1), got (10, 2)"),
    ]
    for message, seq, text in cases:
        ws.send(message)
        error = recv_until(ws, is_type("error"))[-1]
        assert text in error["message"], error
        assert (error["seq"], error["code"]) == (seq, "invalid_chunk")
    ws.send("this is not json")
    error = recv_until(ws, is_type("error"))[-1]
    assert "not valid JSON" in error["message"] and error["code"] == "invalid_message"
    ws.send('{"type": "dance"}')
    error = recv_until(ws, is_type("error"))[-1]
    assert "unknown control message type 'dance'" in error["message"] and error["code"] == "invalid_message"

    ws.send(chunk(10, good))
    recv_until(ws, is_ack(10))
    ws.send(chunk(11, good, pts=0.0))  # starts before the end of the previous chunk
    assert "goes backwards" in recv_until(ws, is_type("error"))[-1]["message"]
    ws.send(chunk(10, good))  # a resend of a taken chunk is dropped, not written twice
    ws.send(chunk(12, patterns(3, 48, 64, start=3)))
    recv_until(ws, is_ack(12))
    info = api.get(f"/v1/sessions/{created['id']}").json()
    assert info["state"] == "streaming"
    assert info["streams"][0]["counters"]["errors"] == 3 and info["streams"][0]["counters"]["chunks"] == 2
    assert info["streams"][1]["counters"]["errors"] == 1
    ws.send(protocol.encode_control("finish"))
    recv_until(ws, is_type("closed"))
    ws.close()
    (video, _) = decode(server.output_dir / "api" / "bad.mkv")["streams"]
    assert video["frame_count"] == 6


def test_second_connection_to_a_streaming_session_is_refused(api):
    created = create(api)
    ws = open_ws(created)
    code, reason = refused(created["stream_url"], {"Authorization": f"Bearer {created['token']}"})
    assert code == 4409 and "already has a connected client" in reason
    ws.send(protocol.encode_control("finish"))
    recv_until(ws, is_type("closed"))
    ws.close()


def test_many_fast_chunks_are_slowed_not_dropped(api, server):
    """A client writing far faster than the encoder: every frame arrives, once, in order."""
    created = create(
        api,
        [{**VIDEO, "width": 320, "height": 240, "encoder_option": {"preset": "medium"}}],
        {"type": "server_file", "path": "api/flood.mkv"},
    )
    ws = open_ws(created)
    total = 0
    for seq in range(60):
        ws.send(chunk(seq, patterns(4, 240, 320, start=total)))
        total += 4
    ws.send(protocol.encode_control("finish"))
    got = recv_until(ws, is_type("closed"), timeout=240)
    acks = [ack_seq(m) for m in got if isinstance(m, bytes)]
    # ACKs are cumulative: an encoder this far behind covers several chunks with one.
    assert acks == sorted(set(acks)) and acks[-1] == 59
    assert len(acks) < 60, "an encoder with chunks waiting sent an ACK for every one"
    ws.close()
    from .media import read_stamp

    (video,) = decode(server.output_dir / "api" / "flood.mkv")["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(total))


def test_an_encoder_that_keeps_up_acknowledges_each_chunk_at_once(api):
    """The ACK of a chunk never waits for the next one: a client that waits for each ACK before
    sending more gets every one (within the bounded wait), and each names its own chunk."""
    created = create(api, [{**VIDEO, "width": 160, "height": 96}])
    ws = open_ws(created)
    for seq in range(5):
        ws.send(chunk(seq, patterns(2, 96, 160, start=2 * seq)))
        recv_until(ws, is_ack(seq), timeout=20)
    ws.send(protocol.encode_control("finish"))
    recv_until(ws, is_type("closed"))
    ws.close()


def test_killed_encoder_fails_only_its_session(api, server):
    victim = create(api, [VIDEO], {"type": "server_file", "path": "api/victim.mkv"})
    survivor = create(api, [VIDEO], {"type": "server_file", "path": "api/survivor.mkv"})
    ws_v, ws_s = open_ws(victim), open_ws(survivor)
    ws_v.send(chunk(0, patterns(5, 48, 64)))
    recv_until(ws_v, is_ack(0))
    os.kill(victim["encoder_pid"], signal.SIGKILL)
    failed = recv_until(ws_v, is_type("failed"))[-1]
    assert "killed by SIGKILL" in failed["reason"]
    info = api.get(f"/v1/sessions/{victim['id']}").json()
    assert info["state"] == "failed" and "SIGKILL" in info["error"]
    ws_v.send(chunk(1, patterns(5, 48, 64)))
    assert "session is failed" in recv_until(ws_v, is_type("error"))[-1]["message"]
    ws_v.close()

    ws_s.send(chunk(0, patterns(5, 48, 64)))
    ws_s.send(protocol.encode_control("finish"))
    recv_until(ws_s, is_type("closed"))
    ws_s.close()
    assert api.get("/healthz").status_code == 200
    assert decode(server.output_dir / "api" / "survivor.mkv")["streams"][0]["frame_count"] == 5


def test_disconnected_client_session_is_finalized_after_resume_timeout(tmp_path):
    import httpx

    from .conftest import ServerProcess

    proc = ServerProcess(tmp_path / "out", env={"FRAMECAST_RESUME_TIMEOUT": "0.5"})
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as api:
            created = create(api, [VIDEO], {"type": "server_file", "path": "gone.mkv"})
            ws = open_ws(created)
            ws.send(chunk(0, patterns(7, 48, 64)))
            recv_until(ws, is_ack(0))
            ws.close()
            deadline = time.monotonic() + 20
            while api.get(f"/v1/sessions/{created['id']}").json()["state"] != "closed":
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert decode(tmp_path / "out" / "gone.mkv")["streams"][0]["frame_count"] == 7
    finally:
        proc.stop()


def test_sigterm_finalizes_open_sessions(tmp_path):
    import httpx

    from .conftest import ServerProcess

    proc = ServerProcess(tmp_path / "out")
    with httpx.Client(base_url=proc.url, timeout=30) as api:
        created = create(api, [VIDEO], {"type": "server_file", "path": "term.mp4"})
        ws = open_ws(created)
        ws.send(chunk(0, patterns(9, 48, 64)))
        recv_until(ws, is_ack(0))
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why.
    assert proc.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    # The connected client hears that its session was finalized, then the socket closes.
    closed = recv_until(ws, is_type("closed"), timeout=10)[-1]
    assert closed["session"]["state"] == "closed"
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=5)
    assert decode(tmp_path / "out" / "term.mp4")["streams"][0]["frame_count"] == 9


def test_preview_jpeg_and_audio_levels(api):
    created = create(
        api,
        [{**VIDEO, "width": 160, "height": 120}, {**AUDIO, "num_channels": 2}],
        {"type": "server_file", "path": "api/preview.mkv"},
    )
    sid = created["id"]
    assert api.get(f"/v1/sessions/{sid}/preview").status_code == 404
    ws = open_ws(created)
    frames = patterns(10, 120, 160)
    ws.send(chunk(0, frames))
    ws.send(
        chunk(
            1,
            np.repeat((0.5 * np.sin(np.arange(8000) / 8000 * 2 * np.pi * 440)).astype(np.float32)[:, None], 2, axis=1),
            stream=1,
        )
    )
    recv_until(ws, is_ack(1))
    deadline = time.monotonic() + 10
    seq = 2
    while not (info := api.get(f"/v1/sessions/{sid}").json())["preview_streams"] or not info["audio_levels"]:
        assert time.monotonic() < deadline
        ws.send(chunk(seq, patterns(1, 120, 160, start=10)))  # previews go out at most twice a second
        seq += 1
        time.sleep(0.2)
    response = api.get(f"/v1/sessions/{sid}/preview", params={"stream": 0})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    (jpeg,) = decode(response.content, format="mjpeg")["streams"]
    assert (jpeg["width"], jpeg["height"]) == (160, 120)
    assert max(psnr(jpeg["frames"][0], f) for f in patterns(11, 120, 160).transpose(0, 2, 3, 1)) > 25
    assert info["audio_levels"]["1"] == [pytest.approx(-9.0, abs=0.3)] * 2  # 0.5 peak sine: -9 dBFS RMS
    ws.send(protocol.encode_control("finish"))
    recv_until(ws, is_type("closed"))
    ws.close()


def test_previews_are_made_only_while_someone_looks(api):
    """Nobody asked about the session while it streamed: no preview was made. Asking (as the
    dashboard does every second) starts them."""
    created = create(api, [{**VIDEO, "width": 160, "height": 120}], {"type": "server_file", "path": "api/watch.mkv"})
    sid = created["id"]
    ws = open_ws(created)
    for seq in range(8):
        ws.send(chunk(seq, patterns(1, 120, 160, start=seq)))
        recv_until(ws, is_ack(seq))
        time.sleep(0.15)  # 1.2 s in all: more than two preview intervals
    assert api.get(f"/v1/sessions/{sid}/preview").status_code == 404  # and this request starts them
    deadline = time.monotonic() + 10
    seq = 8
    while api.get(f"/v1/sessions/{sid}/preview").status_code != 200:
        assert time.monotonic() < deadline, "no preview after someone asked"
        ws.send(chunk(seq, patterns(1, 120, 160, start=seq)))
        seq += 1
        time.sleep(0.2)
    ws.send(protocol.encode_control("finish"))
    recv_until(ws, is_type("closed"))
    ws.close()


def test_prometheus_metrics(api):
    created = create(api, [VIDEO], {"type": "server_file", "path": "api/metrics.mkv"})
    ws = open_ws(created)
    ws.send(chunk(0, patterns(6, 48, 64)))
    ws.send(chunk(1, patterns(3, 48, 64)[:, :, :40]))  # refused: wrong shape
    recv_until(ws, is_ack(0))
    api.post("/v1/sessions", json={"destination": {"type": "client"}, "streams": [VIDEO]})  # 422
    text = api.get("/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("framecast_sessions", (("state", "streaming"),))] >= 1
    assert samples[("framecast_chunks_in_total", (("media", "video"),))] >= 1
    assert samples[("framecast_frames_in_total", (("media", "video"),))] >= 6
    assert samples[("framecast_bytes_in_total", (("media", "video"),))] >= 6 * 48 * 64 * 3
    assert samples[("framecast_errors_total", (("kind", "invalid_chunk"),))] >= 1
    assert samples[("framecast_errors_total", (("kind", "invalid_config"),))] >= 1
    assert any(
        name == "framecast_http_request_duration_seconds_count" and dict(labels).get("route") == "/v1/sessions"
        for name, labels in samples
    )
    assert ("framecast_session_queue_chunks", (("session", created["id"]),)) in samples
    ws.send(protocol.encode_control("finish"))
    recv_until(ws, is_type("closed"))
    ws.close()
    after = api.get("/metrics").text
    assert 'framecast_packets_out_total{media="video"}' in after


def test_json_logs_carry_session_and_stream(tmp_path):
    from .conftest import ServerProcess

    proc = ServerProcess(tmp_path / "out", env={"FRAMECAST_LOG_FORMAT": "json"})
    try:
        import httpx

        with httpx.Client(base_url=proc.url, timeout=30) as client:
            created = create(client, [VIDEO, AUDIO], {"type": "server_file", "path": "logs.mkv"})
            ws = open_ws(created)
            ws.send(chunk(0, np.zeros((10, 2), np.float32), stream=1))  # wrong channel count
            recv_until(ws, is_type("error"))
            ws.send(protocol.encode_control("finish"))
            recv_until(ws, is_type("closed"))
            ws.close()
        lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
        assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
        mine = [line for line in lines if line.get("session_id") == created["id"]]
        assert any("created" in line["message"] for line in mine)
        assert any("refused a chunk" in line["message"] and line.get("stream") == 1 for line in mine)
        assert any(line["logger"].startswith("uvicorn") for line in lines)
    finally:
        proc.stop()
