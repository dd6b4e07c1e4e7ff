"""Publishing over RTSP (ANNOUNCE/RECORD) to a real RTSP server on 127.0.0.1, as MediaMTX and NVRs
take it: FFmpeg's own CLI listening (``-rtsp_flags listen``) records what framecast publishes, and
the recording is decoded and checked, over TCP (the default) and UDP.

The FFmpeg CLI is Debian's when installed, else the static build imageio-ffmpeg ships (a dev
dependency): both are FFmpeg's RTSP server code, which is what matters here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import framecast

from .media import decode
from .test_live import av_writer, check_received, stream_av


def ffmpeg_cli() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``, read from /proc (a probe connection would be
    taken for the publisher: the listening FFmpeg accepts exactly one)."""
    wanted = f"0100007F:{port:04X}"
    for table in ("/proc/net/tcp",):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # TCP_LISTEN
                return True
    return False


class RtspRecorder:
    """``ffmpeg -rtsp_flags listen`` on a free loopback port, recording one publisher to a file."""

    def __init__(self, out: Path, transport: str = "tcp") -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.out = out
        self.url = f"rtsp://127.0.0.1:{self.port}/live/cam"
        self.log = out.with_suffix(".log")
        args = [ffmpeg_cli(), "-nostdin", "-hide_banner", "-loglevel", "warning", "-rtsp_flags", "listen"]
        args += ["-listen_timeout", "30", "-timeout", "10000000", "-rtsp_transport", transport]
        args += ["-i", self.url, "-c", "copy", "-y", str(out)]
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._log_file)
        deadline = time.monotonic() + 15
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the RTSP listener did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def wait(self, timeout: float = 20) -> int:
        """Wait for the recording to be complete (the publisher's TEARDOWN ends it)."""
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log_file.close()

    def __enter__(self) -> RtspRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_publish_is_recorded_by_an_rtsp_server(server, tmp_path, transport):
    seconds = 3
    with RtspRecorder(tmp_path / "rec.mkv", transport) as recorder:
        url = recorder.url + ("?rtsp_transport=udp" if transport == "udp" else "")
        writer = av_writer(url, server.url)
        with writer.open():
            stream_av(writer, seconds, 10, 4410)
        assert recorder.wait() == 0, recorder.log.read_text()[-2000:]
    check_received(decode(str(recorder.out)), seconds)
    summary = writer.summary
    assert summary is not None and summary["format"] == "rtsp"
    assert summary["destination"] == {"type": "url", "url": f"rtsp://127.0.0.1:{recorder.port}/live/cam"}


def test_rtsp_with_a_file_in_one_session(server, tmp_path):
    with RtspRecorder(tmp_path / "both.mkv") as recorder:
        writer = av_writer([recorder.url, framecast.ServerFile("rtsp/both.mp4")], server.url)
        with writer.open():
            stream_av(writer, 2, 10, 4410)
        assert recorder.wait() == 0, recorder.log.read_text()[-2000:]
    check_received(decode(str(recorder.out)), 2)
    check_received(decode(str(server.output_dir / "rtsp" / "both.mp4")), 2)


def test_rtsp_nobody_listening_fails_with_the_reason(server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    writer = av_writer(f"rtsp://127.0.0.1:{port}/live/cam", server.url)
    with pytest.raises(framecast.FramecastError, match="Connection refused"):
        with writer.open():
            stream_av(writer, 1, 10, 4410)


@pytest.mark.parametrize(
    "url, message",
    [
        ("rtsp://127.0.0.1:8554/live?rtsp_flags=listen", "rtsp URL option 'rtsp_flags' is not allowed"),
        ("rtsp://127.0.0.1:8554/live?rtsp_transport=http", "invalid value"),
        ("rtsp://127.0.0.1:99999/live", "port"),
    ],
)
def test_rtsp_urls_are_checked(api, url, message):
    body = {
        "destination": {"type": "url", "url": url},
        "streams": [{"type": "video", "frame_rate": 30, "width": 64, "height": 48}],
    }
    answer = api.post("/v1/sessions", json=body)
    assert answer.status_code == 422 and message in answer.json()["error"]["message"], answer.json()
    assert answer.json()["error"]["field"] == "destination.url"


def test_rtsp_muxer_options_that_listen_are_refused(api):
    body = {
        "destination": {"type": "url", "url": "rtsp://127.0.0.1:8554/live"},
        "options": {"rtsp_flags": "listen"},
        "streams": [{"type": "video", "frame_rate": 30, "width": 64, "height": 48}],
    }
    answer = api.post("/v1/sessions", json=body)
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "options.rtsp_flags", answer.json()
    file_as_rtsp = api.post(
        "/v1/sessions",
        json={**body, "destination": {"type": "server_file", "path": "x.sdp"}, "format": "rtsp", "options": {}},
    )
    assert file_as_rtsp.status_code == 422 and "publishes only to rtsp://" in file_as_rtsp.json()["error"]["message"]


def test_capabilities_list_rtsp(api):
    protocols = api.get("/v1/capabilities").json()["protocols"]
    assert "rtsp" in protocols and "rtsps" in protocols
