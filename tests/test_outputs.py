"""One session, several destinations, against real peers on 127.0.0.1 (issue 15).

Each stream is encoded once and its packets go to every destination: two nginx-rtmp servers and a
file on the server here. Every peer's recording is decoded and its stamped frames checked: all of
them, once each, in order. Then the isolation between outputs: one RTMP server restarted
mid-stream (the others never notice, it resumes on a keyframe), one that refuses for good (it
alone fails, unless it is required).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import av
import httpx
import numpy as np
import pytest

import framecast
from framecast import StreamWriter

from .media import decode, read_stamp, sine
from .peers import NginxRtmp
from .test_live import FPS, RATE, H, W, av_writer, check_received, stream_av

SECONDS = 3


@pytest.fixture
def two_rtmp(tmp_path):
    with NginxRtmp(tmp_path / "a") as a, NginxRtmp(tmp_path / "b") as b:
        yield a, b


def stamps(summary: dict[str, Any]) -> list[int]:
    video = next(s for s in summary["streams"] if s["type"] == "video")
    return [read_stamp(f) for f in video["frames"]]


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_one_encode_goes_to_two_rtmp_servers_and_a_file(two_rtmp, server):
    a, b = two_rtmp
    writer = av_writer([a.url("cam"), b.url("cam"), framecast.ServerFile("fan/rec.mkv")], server.url)
    with writer.open():
        stream_av(writer, SECONDS, 10, 4410)
    assert a.wait_closed("cam", timeout=10) and b.wait_closed("cam", timeout=10)
    for recording in (a.recording("cam"), b.recording("cam"), server.output_dir / "fan" / "rec.mkv"):
        check_received(decode(str(recording)), SECONDS)  # every stamped frame, once, in order; the tone
    summary = writer.summary
    assert summary is not None and summary["state"] == "closed"
    outputs = summary["outputs"]
    assert [o["state"] for o in outputs] == ["closed"] * 3
    assert [o["format"] for o in outputs] == ["flv", "flv", "matroska"]
    assert outputs[0]["destination"] == {"type": "url", "url": f"rtmp://127.0.0.1:{a.port}/live/****"}
    assert outputs[2]["destination"] == {"type": "server_file", "path": "fan/rec.mkv"}
    # One encode: every output muxed every packet the encoders made.
    packets = sum(s["counters"]["packets"] for s in summary["streams"])
    assert [o["counters"]["packets"] for o in outputs] == [packets] * 3
    assert all(o["counters"]["dropped"] == 0 and o["counters"]["reconnects"] == 0 for o in outputs)
    connected = [e["output"] for e in summary["events"] if e["event"] == "destination_connected"]
    assert sorted(connected) == [0, 1]


def test_each_destination_shows_in_metrics_while_it_streams(two_rtmp, server):
    a, b = two_rtmp
    writer = av_writer([a.url("m"), b.url("m")], server.url)
    with writer.open():
        stream_av(writer, 1, 10, 4410)
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    session = writer.session_id
    for index in (0, 1):
        assert f'framecast_session_output_bytes{{output="{index}",session="{session}"}}' in metrics
    streaming = [line for line in metrics.splitlines() if line.startswith('framecast_outputs{state="streaming"}')]
    assert streaming and float(streaming[0].split()[-1]) >= 2


class StateWatch:
    """Polls the session's info while it streams: which states the session and each output went through."""

    def __init__(self, writer: StreamWriter, server_url: str) -> None:
        self.writer, self.server_url = writer, server_url
        self.session_states: set[str] = set()
        self.output_states: dict[int, set[str]] = {}
        self.latest: dict[int, str] = {}  # each output's state at the last look
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.server_url, timeout=10) as rest:
            while not self._stop.wait(0.05):
                if self.writer.session_id is None:
                    continue
                info = rest.get(f"/v1/sessions/{self.writer.session_id}").json()
                self.session_states.add(info["state"])
                for output in info["outputs"]:
                    self.output_states.setdefault(output["index"], set()).add(output["state"])
                    self.latest[output["index"]] = output["state"]

    def __enter__(self) -> StateWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_restarted_rtmp_server_resumes_on_a_keyframe_and_the_others_never_notice(two_rtmp, server, tmp_path):
    a, b = two_rtmp
    seconds = 6
    writer = av_writer([a.url("cam"), b.url("cam"), framecast.ServerFile("fan/restart.mkv")], server.url)
    with writer.open(), StateWatch(writer, server.url) as watch:
        frames_before = int(2.5 * FPS)
        stream_av_range(writer, 0, frames_before)
        a.restart(down_for=1.0)
        stream_av_range(writer, frames_before, seconds * FPS)
    assert a.wait_closed("cam", timeout=10) and b.wait_closed("cam", timeout=10)
    # The file and the other server have every frame, once, in order.
    for recording in (b.recording("cam"), server.output_dir / "fan" / "restart.mkv"):
        check_received(decode(str(recording)), seconds)
    # The restarted server's new recording starts at a keyframe: its first frame decodes, and the
    # frames from there on are consecutive up to the end.
    after = stamps(decode(str(a.recording("cam"))))
    assert after and after == list(range(after[0], seconds * FPS)), after[:5]
    assert after[0] > frames_before  # it starts after the restart
    summary = writer.summary
    assert summary is not None and summary["state"] == "closed"
    first = summary["outputs"][0]
    events = [e["event"] for e in first["events"]]
    assert "reconnecting" in events and "recovered" in events, events
    assert first["counters"]["reconnects"] >= 1 and first["state"] == "closed"
    assert all(e.get("output") == 0 for e in first["events"])
    # The session kept streaming; only the restarted output reconnected.
    assert "reconnecting" not in watch.session_states, watch.session_states
    assert "reconnecting" in watch.output_states[0]
    assert watch.output_states[1] <= {"connecting", "streaming", "closed"}
    assert watch.output_states[2] <= {"streaming", "closed"}


def stream_av_range(writer: StreamWriter, first: int, end: int) -> None:
    """Frames ``first`` to ``end`` of the stamped video and the tone that goes with them, a second's
    worth at a time (paced by the server: this takes as long as the media lasts)."""
    from .media import patterns, sine

    for start in range(first, end, FPS):
        stop = min(end, start + FPS)
        writer.write_video_chunk(0, patterns(stop - start, H, W, start=start))
        seconds = (stop - start) / FPS
        writer.write_audio_chunk(1, sine(440, RATE, seconds, channels=2, amplitude=0.3))


def test_an_output_that_refuses_fails_alone_and_the_session_closes(server):
    refused = f"rtmp://127.0.0.1:{closed_port()}/live/nobody"
    events: list[dict[str, Any]] = []
    writer = av_writer([refused, framecast.ServerFile("fan/alone.mkv")], server.url, on_event=events.append)
    with writer.open():
        stream_av(writer, 2, 10, 4410)
    check_received(decode(str(server.output_dir / "fan" / "alone.mkv")), 2)
    summary = writer.summary
    assert summary is not None and summary["state"] == "closed" and summary["error"] is None
    failed, file = summary["outputs"]
    assert failed["state"] == "failed" and "Connection refused" in failed["error"], failed
    assert file["state"] == "closed" and file["counters"]["packets"] > 0
    reported = [e for e in events if e["event"] == "output_failed"]
    assert reported and reported[0]["output"] == 0 and "Connection refused" in reported[0]["reason"]


def blackhole() -> socket.socket:
    """A loopback listener that never answers: the kernel accepts connections into its queue, and
    nothing reads a byte (a hung server, a firewall that swallows packets after the handshake)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    return hole


def test_a_destination_that_never_answers_fails_alone_and_the_others_stream(two_rtmp, server):
    a, _ = two_rtmp
    with blackhole() as hole:
        port = hole.getsockname()[1]
        silent = f"rtmp://127.0.0.1:{port}/live/void"
        writer = av_writer(
            [silent, a.url("cam"), framecast.ServerFile("fan/silent.mkv")], server.url, connect_timeout=3
        )
        with writer.open(), StateWatch(writer, server.url) as watch:
            stream_av_range(writer, 0, 5 * FPS)
    assert a.wait_closed("cam", timeout=10)
    for recording in (a.recording("cam"), server.output_dir / "fan" / "silent.mkv"):
        check_received(decode(str(recording)), 5)  # every frame, once, in order: nothing waited for the silent one
    summary = writer.summary
    assert summary is not None and summary["state"] == "closed" and summary["error"] is None
    silent_output = summary["outputs"][0]
    assert silent_output["state"] == "failed", silent_output
    assert silent_output["error"].startswith(f"could not connect to rtmp://127.0.0.1:{port}/live/")
    assert silent_output["error"].endswith("within 3 s (no answer)")
    assert [o["state"] for o in summary["outputs"][1:]] == ["closed", "closed"]
    assert watch.session_states <= {"created", "streaming", "finishing", "closed"}, watch.session_states


def noisy(count: int, start: int) -> Any:
    """Stamped frames whose rest is noise: a megabyte a second or so of H.264, so that a peer
    that stops reading fills the socket buffers between it and the encoder within seconds."""
    from .media import patterns

    frames = patterns(count, H, W, start=start)
    frames[:, :, 24:, :] = np.random.default_rng(start).integers(0, 256, frames[:, :, 24:, :].shape, dtype=np.uint8)
    return frames


def test_a_frozen_rtmp_server_is_left_and_rejoined_while_the_others_stream(two_rtmp, server):
    """nginx stops mid-stream without closing anything (SIGSTOP): the output takes nothing for its
    connect timeout, counts as dropped, reconnects (attempts answered by nobody while it is frozen
    time out), and resumes on a keyframe once nginx goes on. The other server and the file never
    notice."""
    a, b = two_rtmp
    writer = av_writer(
        [a.url("cam"), b.url("cam"), framecast.ServerFile("fan/frozen.mkv")],
        server.url,
        connect_timeout=2,
        reconnect_timeout=60,
    )

    def second(k: int) -> None:
        writer.write_video_chunk(0, noisy(FPS, k * FPS))
        writer.write_audio_chunk(1, sine(440, RATE, 1.0, channels=2, amplitude=0.3))

    with writer.open(), StateWatch(writer, server.url) as watch:
        k = 0
        for k in range(2):
            second(k)
        a.freeze()
        try:
            for k in range(2, 30):  # until the frozen output is noticed (bounded)
                second(k)
                if "reconnecting" in watch.output_states.get(0, set()):
                    break
            assert "reconnecting" in watch.output_states.get(0, set()), watch.output_states
            second(k + 1)  # an attempt or two against the frozen server, answered by nobody
            frozen_until = k + 1
        finally:
            a.thaw()
        for k in range(frozen_until + 1, frozen_until + 6):
            second(k)
            if watch.latest.get(0) == "streaming":
                break
        end = k + 1
        second(end)  # the recovered output takes a second more
        end += 1
    seconds = end
    assert a.wait_closed("cam", timeout=10) and b.wait_closed("cam", timeout=10)
    for recording in (b.recording("cam"), server.output_dir / "fan" / "frozen.mkv"):
        assert stamps(decode(str(recording))) == list(range(seconds * FPS))
    summary = writer.summary
    assert summary is not None and summary["state"] == "closed", summary
    first = summary["outputs"][0]
    events = [e for e in first["events"] if e["event"] in ("reconnecting", "recovered")]
    assert events[0]["event"] == "reconnecting" and "took nothing for 2 s" in events[0]["reason"], events
    assert events[-1]["event"] == "recovered", events
    assert first["state"] == "closed"
    # nginx-rtmp starts the recording anew for the reconnected publisher: from a keyframe on, every frame.
    after = stamps(decode(str(a.recording("cam"))))
    assert after and after == list(range(after[0], seconds * FPS)), after[:5]
    assert "reconnecting" not in watch.session_states, watch.session_states
    assert watch.output_states[1] <= {"connecting", "streaming", "closed"}


def test_a_required_output_that_refuses_fails_the_session(server):
    refused = f"rtmp://127.0.0.1:{closed_port()}/live/nobody"
    writer = av_writer([framecast.Output(refused, required=True), framecast.ServerFile("fan/required.mkv")], server.url)
    with pytest.raises(framecast.FramecastError, match="Connection refused"):
        with writer.open():
            stream_av(writer, 2, 10, 4410)
            time.sleep(1)
    info = httpx.get(f"{server.url}/v1/sessions/{writer.session_id}", timeout=10).json()
    assert info["state"] == "failed" and info["outputs"][0]["state"] != "closed"


def test_several_destinations_are_checked_before_anything_opens(api, server):
    video = {"type": "video", "frame_rate": 30, "width": 64, "height": 48}

    def create(**body: Any) -> Any:
        return api.post("/v1/sessions", json={"streams": [video], **body})

    both = create(destination={"type": "discard"}, destinations=[{"type": "discard"}])
    assert both.status_code == 422 and both.json()["error"]["field"] == "destinations"
    many = create(destinations=[{"type": "discard"}] * 9)
    assert many.status_code == 422 and "FRAMECAST_MAX_OUTPUTS" in many.json()["error"]["message"]
    clients = create(destinations=[{"type": "client", "filename": "a.mkv"}, {"type": "client", "filename": "b.mkv"}])
    assert clients.status_code == 422 and clients.json()["error"]["field"] == "destinations.1"
    same = create(destinations=[{"type": "server_file", "path": "x/same.mkv"}] * 2)
    assert same.status_code == 422 and same.json()["error"]["field"] == "destinations.1.path"
    host = create(destinations=[{"type": "server_file", "path": "x/ok.mkv"}, {"type": "url", "url": "rtmp://[::1"}])
    assert host.status_code == 422 and host.json()["error"]["field"].startswith("destinations.1.url")
    top = create(destinations=[{"type": "discard"}], format="mp4")
    assert top.status_code == 422 and top.json()["error"]["field"] == "format"
    explicit = create(
        destinations=[{"type": "server_file", "path": "x/a.mkv"}, {"type": "server_file", "path": "x/b.webm"}],
        streams=[{**video, "encoder": "libx264"}],
    )
    assert explicit.status_code == 422 and explicit.json()["error"]["field"] == "destinations.1.format"
    assert "webm cannot carry libx264" in explicit.json()["error"]["message"]
    # Nothing was created or left behind by the refusals.
    assert not (server.output_dir / "x").exists() or not any((server.output_dir / "x").iterdir())


def test_an_output_whose_muxer_cannot_carry_the_codecs_gets_encoders_of_its_own(server):
    writer = av_writer([framecast.ServerFile("own/a.mp4"), framecast.ServerFile("own/b.webm")], server.url)
    with writer.open():
        stream_av(writer, 2, 10, 4410)
    summary = writer.summary
    assert summary is not None and summary["state"] == "closed"
    mp4, webm = summary["outputs"]
    assert mp4["encoders"] == ["libx264", "aac"] and webm["encoders"] == ["libvpx-vp9", "libopus"]
    assert [s["encoder"] for s in summary["streams"]] == ["libx264", "aac"]  # the session's own
    check_received(decode(str(server.output_dir / "own" / "a.mp4")), 2)
    out = decode(str(server.output_dir / "own" / "b.webm"))
    video, audio = out["streams"] if out["streams"][0]["type"] == "video" else out["streams"][::-1]
    assert video["codec"] == "vp9" and stamps(out) == list(range(2 * FPS))
    assert audio["codec"] == "opus" and abs(audio["sample_count"] / audio["sample_rate"] - 2) < 0.1


def test_every_flac_output_gets_the_final_streaminfo(server):
    """FLAC's encoder hands the final STREAMINFO (sample count, MD5) to the muxer as side data of
    its last packet: each output's copy carries it, so each file's header is complete."""
    writer = StreamWriter([framecast.ServerFile("flac/a.flac"), framecast.ServerFile("flac/b.flac")], server=server.url)
    writer.add_audio_stream(sample_rate=RATE, num_channels=2)
    with writer.open():
        writer.write_audio_chunk(0, sine(440, RATE, 1.5, channels=2, amplitude=0.3))
    for name in ("a", "b"):
        with av.open(str(server.output_dir / "flac" / f"{name}.flac")) as container:
            stream = container.streams.audio[0]
            # The header's own count, not a decode: a missing STREAMINFO update leaves it at 0.
            assert stream.duration is not None and abs(stream.duration - int(1.5 * RATE)) <= 1, stream.duration
