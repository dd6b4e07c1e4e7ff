"""Publishing over WebRTC with WHIP (RFC 9725) to a real WebRTC peer on 127.0.0.1.

The endpoint is built here with aiortc (``whip_peer.py``): FFmpeg's WHIP muxer, in the session's
encoder process, POSTs its SDP offer, connects over ICE, DTLS and SRTP, and sends H.264 and Opus;
aiortc decodes what arrives, and the stamped frames are checked. aiortc holds back the last video
frame it received (it waits for a newer one to know the frame is complete) and a few audio frames
in its jitter buffer, so counts may be short by that much, never out of order.
"""

from __future__ import annotations

import socket
import time

import pytest

import framecast

from .media import decode
from .test_live import FPS, av_writer, check_received, stream_av
from .whip_peer import WhipEndpoint

pytest.importorskip("aiortc", reason="the WHIP endpoint needs aiortc (pip install -e .[dev])")


def check_whip(received, seconds: int) -> None:
    frames = seconds * FPS
    assert received.video_size == (320, 240)
    assert received.stamps == list(range(len(received.stamps))), received.stamps[:10]  # in order, from the first
    assert frames - 2 <= len(received.stamps) <= frames
    assert received.audio_rate == 48000 and received.audio_channels == 2
    assert abs(received.audio_samples - seconds * 48000) <= 4 * 960  # Opus frames of 20 ms held back at most


def test_whip_publish_reaches_a_webrtc_peer(server):
    seconds = 3
    with WhipEndpoint() as endpoint:
        writer = av_writer(endpoint.url, server.url)
        with writer.open():
            stream_av(writer, seconds, 10, 4410)
        assert endpoint.wait_deleted(), "the publisher did not end its WHIP session (DELETE)"
        (received,) = endpoint.sessions
    check_whip(received, seconds)
    summary = writer.summary
    assert summary is not None and summary["state"] == "closed" and summary["format"] == "whip"
    assert summary["destination"] == {"type": "url", "url": endpoint.url}
    assert [s["encoder"] for s in summary["streams"]] == ["libx264", "libopus"]
    assert summary["streams"][0]["config"]["encoder_option"]["profile"] == "baseline"


def test_whip_beside_rtmp_and_a_file_gets_encoders_of_its_own(server, tmp_path):
    from .peers import NginxRtmp

    seconds = 2
    with WhipEndpoint(token="s3cret") as endpoint, NginxRtmp(tmp_path / "nginx") as rtmp:
        destinations = [
            rtmp.url("cam"),
            framecast.Output(endpoint.url, bearer_token="s3cret"),
            framecast.ServerFile("whip/rec.mp4"),
        ]
        writer = av_writer(destinations, server.url)
        with writer.open():
            stream_av(writer, seconds, 10, 4410)
        assert endpoint.wait_deleted()
        assert rtmp.wait_closed("cam", timeout=10)
        (received,) = endpoint.sessions
        from .media import decode

        check_received(decode(str(rtmp.recording("cam"))), seconds)
    check_received(decode(str(server.output_dir / "whip" / "rec.mp4")), seconds)
    check_whip(received, seconds)
    assert received.authorization == "Bearer s3cret"
    summary = writer.summary
    assert summary is not None
    flv, whip, mp4 = summary["outputs"]
    assert flv["encoders"] == ["libx264", "aac"] == mp4["encoders"]
    assert whip["encoders"] == ["libx264", "libopus"] and whip["state"] == "closed"
    assert "s3cret" not in str(summary)


@pytest.mark.parametrize("status", [401, 403, 500])
def test_an_endpoint_that_refuses_fails_the_output_with_its_reason(server, status):
    with WhipEndpoint(fail=status) as endpoint:
        writer = av_writer([endpoint.url, framecast.ServerFile(f"whip/refused{status}.mkv")], server.url)
        with writer.open():
            stream_av(writer, 1, 10, 4410)
            time.sleep(0.5)
    summary = writer.summary
    assert summary is not None and summary["state"] == "closed"  # the file carried on
    whip = summary["outputs"][0]
    said = {401: "401 Unauthorized", 403: "403 Forbidden", 500: "5XX Server Error"}[status]
    assert whip["state"] == "failed" and said in whip["error"] and "v=0" not in whip["error"], whip
    assert endpoint.posts >= 1


def test_an_endpoint_that_never_answers_fails_the_output_within_the_connect_timeout(server):
    """FFmpeg's WHIP muxer waits for its POST's answer with no timeout of its own: the relay it
    runs in is ended after the connect timeout, and only that output fails."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(4)  # the kernel accepts; nothing ever reads the POST
        port = hole.getsockname()[1]
        writer = av_writer(
            [f"whip+http://127.0.0.1:{port}/whip/cam", framecast.ServerFile("whip/silent.mp4")],
            server.url,
            connect_timeout=2,
        )
        with writer.open():
            stream_av(writer, 3, 10, 4410)
    check_received(decode(str(server.output_dir / "whip" / "silent.mp4")), 3)
    summary = writer.summary
    assert summary is not None and summary["state"] == "closed"
    whip = summary["outputs"][0]
    assert whip["state"] == "failed", whip
    assert whip["error"] == f"could not connect to whip+http://127.0.0.1:{port}/whip/cam within 2 s (no answer)"


def test_a_lone_whip_endpoint_that_refuses_fails_the_session(server):
    with WhipEndpoint(token="right") as endpoint:
        writer = av_writer(framecast.Output(endpoint.url, bearer_token="wrong"), server.url)
        with pytest.raises(framecast.FramecastError, match="401"):
            with writer.open():
                stream_av(writer, 1, 10, 4410)
                time.sleep(1)


def test_whip_urls_and_tokens_are_checked(api):
    video = {"type": "video", "frame_rate": 30, "width": 64, "height": 48}

    def create(destination: dict, **extra: object) -> dict:
        return api.post("/v1/sessions", json={"destination": destination, "streams": [video], **extra}).json()

    for injected in ("t\r\nX-Evil: 1", "t x", "t\x00", "t\n"):  # a token goes into an HTTP header
        refused = create({"type": "url", "url": "whip+http://127.0.0.1:9/whip", "bearer_token": injected})
        assert refused["error"]["field"] == "destination.bearer_token", refused
    token_elsewhere = create({"type": "url", "url": "rtmp://127.0.0.1/live/x", "bearer_token": "t"})
    assert token_elsewhere["error"]["field"] == "destination.bearer_token"
    wrong_codec = create(
        {"type": "url", "url": "whip+http://127.0.0.1:9/whip"}, streams=[{**video, "encoder": "libvpx-vp9"}]
    )
    assert wrong_codec["error"]["field"] == "streams.0.encoder" and "H.264" in wrong_codec["error"]["message"]
    file_as_whip = create({"type": "server_file", "path": "x.sdp"}, format="whip")
    assert "publishes only to whip+http:// and whip+https://" in file_as_whip["error"]["message"]
    plain_https = create({"type": "url", "url": "https://127.0.0.1:9/whip"})
    assert plain_https["error"]["field"] == "destination.url"  # https alone is no destination
    caps = api.get("/v1/capabilities").json()
    assert "whip+http" in caps["protocols"] and "whip+https" in caps["protocols"]


def test_https_with_format_whip_is_a_whip_endpoint(api):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    created = api.post(
        "/v1/sessions",
        json={
            "destination": {"type": "url", "url": f"http://127.0.0.1:{port}/whip"},
            "format": "whip",
            "streams": [{"type": "video", "frame_rate": 30, "width": 64, "height": 48}],
        },
    )
    assert created.status_code == 201, created.json()
    assert created.json()["format"] == "whip"
    api.delete(f"/v1/sessions/{created.json()['id']}")
