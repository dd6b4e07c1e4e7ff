"""A fleet: three real replicas (``framecast serve`` with FRAMECAST_REPLICA_ID and FRAMECAST_PEERS)
behind the shipped HAProxy and nginx configs (tests/proxies.py), on 127.0.0.1; every test runs
against both proxies.

What is checked is what a user of a fleet meets: new sessions spread over ready replicas, a full
fleet's JSON 503, every request for a session reaching its owner, a dead owner answering 404 and
4404 from a live replica (never a 502, never a hang) and its writers failing at once while the rest
lose nothing, a proxy restart costing nothing, a drain, a restart that remembers finished sessions,
and the fleet's session list, whole or saying who is missing.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import framecast
from framecast import ServerFile, StreamWriter
from framecast.errors import SessionFailed

from .conftest import ServerProcess, free_port
from .media import decode, patterns, read_stamp
from .proxies import Proxy

REPLICAS = ("framecast-1", "framecast-2", "framecast-3")
MAX_SESSIONS = 4
W, H = 96, 64
ID = re.compile(r"^(framecast-\d)\.[0-9a-f]{16}$")


class Cluster:
    """Three replicas, each its own output directory and port, and a proxy in front."""

    def __init__(self, base: Path, kind: str) -> None:
        self.base = base
        self.ports = {name: free_port() for name in REPLICAS}
        self.env = {
            "FRAMECAST_MAX_SESSIONS": str(MAX_SESSIONS),
            "FRAMECAST_PEERS": ",".join(f"{name}=http://127.0.0.1:{port}" for name, port in self.ports.items()),
        }
        with concurrent.futures.ThreadPoolExecutor(len(REPLICAS)) as pool:
            self.replicas = dict(zip(REPLICAS, pool.map(self._start, REPLICAS)))
        self.proxy = Proxy(kind, base / kind, self.ports, free_port()).start()
        self.url = self.proxy.url

    def _start(self, name: str) -> ServerProcess:
        env = {**self.env, "FRAMECAST_REPLICA_ID": name}
        return ServerProcess(self.base / name / "output", env=env, port=self.ports[name])

    def restart(self, name: str) -> ServerProcess:
        self.replicas[name].stop()
        self.replicas[name] = self._start(name)
        return self.replicas[name]

    def owner(self, session_id: str) -> str:
        match = ID.match(session_id)
        assert match, f"{session_id!r} does not name its replica"
        return match.group(1)

    def close(self) -> None:
        self.proxy.stop()
        for replica in self.replicas.values():
            if replica.proc.poll() is None:
                replica.stop()


@pytest.fixture(params=["haproxy", "nginx"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    fleet = Cluster(tmp_path, request.param)
    try:
        yield fleet
    finally:
        fleet.close()


VIDEO = {"type": "video", "width": W, "height": H, "frame_rate": 30}
DISCARD = {"destination": {"type": "discard"}, "streams": [VIDEO]}


def ready(replica: ServerProcess) -> httpx.Response:
    return httpx.get(replica.url + "/readyz", timeout=10)


# -- spread ------------------------------------------------------------------------------------


def test_new_sessions_spread_over_ready_replicas_and_a_full_fleet_answers_json_503(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=30) as api:
        created = []
        for _ in range(len(REPLICAS) * MAX_SESSIONS):
            response = api.post("/v1/sessions", json=DISCARD)
            assert response.status_code == 201, response.text
            created.append(response.json())
        spread = collections.Counter(cluster.owner(c["id"]) for c in created)
        assert spread == {name: MAX_SESSIONS for name in REPLICAS}
        assert all(c["replica"] == cluster.owner(c["id"]) for c in created)
        for replica in cluster.replicas.values():
            answer = ready(replica)
            assert (answer.status_code, answer.json()["status"]) == (503, "full")

        refused = api.post("/v1/sessions", json=DISCARD)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/json")
        assert refused.json()["error"]["code"] in ("too_many_sessions", "no_replica"), refused.text

        for c in created:  # each request reaches the session's owner, through the proxy
            assert api.get(f"/v1/sessions/{c['id']}").json()["state"] in ("created", "streaming")
            closed = api.delete(f"/v1/sessions/{c['id']}")
            assert (closed.status_code, closed.json()["state"]) == (200, "closed"), closed.text
        again = api.post("/v1/sessions", json=DISCARD)
        assert again.status_code == 201, again.text
        api.delete(f"/v1/sessions/{again.json()['id']}")


# -- a replica killed --------------------------------------------------------------------------


class Pusher(threading.Thread):
    """A writer streaming stamped frames through the proxy until told to stop, or until it fails."""

    def __init__(self, url: str, index: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.index = index
        self.stop_event = stop
        self.dst: Any = ServerFile(f"fleet/{index}.mkv") if index % 2 == 0 else io.BytesIO()
        self.writer = StreamWriter(self.dst, format="matroska", server=url, shared_memory=index % 3 != 0)
        self.writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
        self.writer.open()
        self.session_id: str = self.writer.session_id or ""
        self.written = 0
        self.error: BaseException | None = None
        self.failed_at: float | None = None

    def run(self) -> None:
        frames = patterns(600, H, W)
        try:
            while not self.stop_event.is_set() and self.written < len(frames) - 2:
                self.writer.write_video_chunk(0, frames[self.written : self.written + 2])
                self.written += 2
                time.sleep(0.02)
            self.writer.close()
        except BaseException as exc:  # the test looks at what it was
            self.failed_at = time.monotonic()
            self.error = exc

    def stamps(self, cluster: Cluster) -> list[int]:
        if isinstance(self.dst, io.BytesIO):
            source: Any = self.dst.getvalue()
        else:
            source = cluster.base / cluster.owner(self.session_id) / "output" / "fleet" / f"{self.index}.mkv"
        (video,) = decode(source)["streams"]
        return [read_stamp(frame) for frame in video["frames"]]


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def test_a_replica_killed_costs_only_its_own_sessions(cluster: Cluster) -> None:
    stop = threading.Event()
    pushers = [Pusher(cluster.url, i, stop) for i in range(6)]
    victim = cluster.owner(pushers[0].session_id)
    theirs = [p for p in pushers if cluster.owner(p.session_id) == victim]
    others = [p for p in pushers if p not in theirs]
    assert others, "every writer landed on one replica"
    for p in pushers:
        p.start()
    wait_for(lambda: all(p.written >= 20 for p in pushers), 30, "every writer streaming")

    killed_at = time.monotonic()
    cluster.replicas[victim].kill_group()
    for p in theirs:  # they fail at once, not after reconnect_timeout
        p.join(5.0 + max(0.0, killed_at - time.monotonic()))
        assert not p.is_alive(), f"writer {p.index} on the killed replica has not failed 5 s after the kill"
        assert isinstance(p.error, SessionFailed), repr(p.error)
        assert "no longer has this session" in str(p.error)

    with httpx.Client(base_url=cluster.url, timeout=30) as api:
        for p in theirs:  # a live replica answers for the dead one: 404, not 502
            for method in ("GET", "DELETE"):
                answer = api.request(method, f"/v1/sessions/{p.session_id}")
                assert answer.status_code == 404, f"{method}: {answer.status_code} {answer.text}"
                assert answer.json()["error"]["code"] == "session_not_found"
        for p in theirs:  # and its websocket is closed with 4404, at once
            url = cluster.url.replace("http://", "ws://") + f"/v1/sessions/{p.session_id}/stream"
            with connect(url, additional_headers={"Authorization": "Bearer not-the-token"}, open_timeout=10) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
        fresh = [api.post("/v1/sessions", json=DISCARD) for _ in range(3)]
        assert all(f.status_code == 201 for f in fresh), [f.text for f in fresh]
        assert victim not in {cluster.owner(f.json()["id"]) for f in fresh}
        for f in fresh:
            api.delete(f"/v1/sessions/{f.json()['id']}")

    stop.set()
    for p in others:
        p.join(60)
        assert not p.is_alive() and p.error is None, repr(p.error)
        assert p.stamps(cluster) == list(range(p.written)), f"writer {p.index}"  # every frame once


# -- the proxy killed --------------------------------------------------------------------------


def test_the_proxy_killed_and_restarted_mid_stream_loses_nothing(cluster: Cluster) -> None:
    stop = threading.Event()
    pushers = [Pusher(cluster.url, i, stop) for i in range(3)]
    for p in pushers:
        p.start()
    wait_for(lambda: all(p.written >= 20 for p in pushers), 30, "every writer streaming")
    cluster.proxy.kill()
    time.sleep(1.0)
    cluster.proxy.start()
    written = [p.written for p in pushers]
    wait_for(lambda: all(p.written >= w + 20 for p, w in zip(pushers, written)), 30, "streaming again")
    stop.set()
    for p in pushers:
        p.join(60)
        assert not p.is_alive() and p.error is None, repr(p.error)
        assert p.writer.reconnects >= 1
        assert p.stamps(cluster) == list(range(p.written)), f"writer {p.index}"


# -- draining ----------------------------------------------------------------------------------


def test_a_draining_replica_takes_no_new_sessions_finishes_its_own_then_exits(cluster: Cluster) -> None:
    stop = threading.Event()
    pusher = Pusher(cluster.url, 0, stop)
    name = cluster.owner(pusher.session_id)
    replica = cluster.replicas[name]
    pusher.start()
    wait_for(lambda: pusher.written >= 20, 30, "the writer streaming")

    drained = subprocess.run(
        [sys.executable, "-m", "framecast.cli", "drain", "--server", replica.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert drained.returncode == 0, drained.stderr
    assert f"replica {name} draining: 1 live sessions go on" in drained.stdout, drained.stdout
    answer = ready(replica)
    assert (answer.status_code, answer.json()["status"]) == (503, "draining")
    direct = httpx.post(replica.url + "/v1/sessions", json=DISCARD, timeout=30)
    assert (direct.status_code, direct.json()["error"]["code"]) == (503, "draining")

    with httpx.Client(base_url=cluster.url, timeout=30) as api:
        fresh = [api.post("/v1/sessions", json=DISCARD) for _ in range(4)]
        assert all(f.status_code == 201 for f in fresh), [f.text for f in fresh]
        assert name not in {cluster.owner(f.json()["id"]) for f in fresh}
        for f in fresh:
            api.delete(f"/v1/sessions/{f.json()['id']}")
        wait_for(lambda: pusher.written >= 60, 30, "the draining replica's session streaming on")
        stop.set()
        pusher.join(60)
        assert pusher.error is None, repr(pusher.error)
        assert pusher.stamps(cluster) == list(range(pusher.written))
    assert replica.proc.wait(30) == 0  # its last session ended: it exits by itself


# -- a restart ---------------------------------------------------------------------------------


def test_a_restarted_replica_still_lists_and_serves_its_finished_sessions(cluster: Cluster) -> None:
    frames = patterns(30, H, W)
    ids = []
    for i in range(3):
        writer = StreamWriter(ServerFile(f"kept/{i}.mkv"), format="matroska", server=cluster.url)
        writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
        with writer.open():
            writer.write_video_chunk(0, frames)
        assert writer.session_id is not None
        ids.append(writer.session_id)
    name = cluster.owner(ids[0])
    mine = [i for i in ids if cluster.owner(i) == name]
    before = {i: httpx.get(f"{cluster.url}/v1/sessions/{i}", timeout=30).json() for i in mine}
    cluster.restart(name)
    with httpx.Client(base_url=cluster.url, timeout=30) as api:
        listed = {s["id"]: s for s in api.get("/v1/sessions").json()}
        for session_id in mine:
            assert listed[session_id]["state"] == "closed"
            info = api.get(f"/v1/sessions/{session_id}").json()
            assert info == before[session_id]
            got = api.get(f"/v1/sessions/{session_id}/output")
            assert got.status_code == 200, got.text
            (video,) = decode(got.content)["streams"]
            assert [read_stamp(f) for f in video["frames"]] == list(range(30))
        # Its path stays its own: another session on it needs overwrite, as before the restart.
        path = before[mine[0]]["destination"]["path"]
        writer = StreamWriter(ServerFile(path), format="matroska", server=cluster.replicas[name].url)
        writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
        with pytest.raises(framecast.InvalidConfig, match="exists"):
            writer.open()


# -- the fleet's list --------------------------------------------------------------------------


def cli_list(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framecast.cli", "sessions", "list", "--server", url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_fleet_list_through_the_proxy_and_a_replica_missing_from_it(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=30) as api:
        created = [api.post("/v1/sessions", json=DISCARD).json() for _ in range(6)]
        by_replica = collections.defaultdict(list)
        for c in created:
            by_replica[cluster.owner(c["id"])].append(c["id"])
        assert set(by_replica) == set(REPLICAS)

        whole = api.get("/v1/sessions")
        assert "framecast-unanswered" not in whole.headers
        assert sorted(s["id"] for s in whole.json()) == sorted(c["id"] for c in created)
        assert {s["replica"] for s in whole.json()} == set(REPLICAS)
        shown = cli_list(cluster.url)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[0].split()[:3] == ["ID", "REPLICA", "STATE"]
        assert all(c["id"] in shown.stdout for c in created)

        gone = "framecast-2"
        cluster.replicas[gone].kill_group()
        partial = api.get("/v1/sessions")
        assert partial.status_code == 200
        left = sorted(i for name, ids in by_replica.items() if name != gone for i in ids)
        assert sorted(s["id"] for s in partial.json()) == left
        (missing,) = json.loads(partial.headers["framecast-unanswered"])
        assert (missing["replica"], missing["url"]) == (gone, cluster.replicas[gone].url)
        shown = cli_list(cluster.url)
        assert shown.returncode == 0, shown.stderr
        assert f"replica {gone} ({cluster.replicas[gone].url}) did not answer" in shown.stderr
        for session_id in left:
            api.delete(f"/v1/sessions/{session_id}")


def test_metrics_and_health_name_the_replica(cluster: Cluster) -> None:
    for name, replica in cluster.replicas.items():
        health = httpx.get(replica.url + "/healthz", timeout=10).json()
        assert (health["replica"], health["draining"]) == (name, False)
        text = httpx.get(replica.url + "/metrics", timeout=10).text
        series = [line for line in text.splitlines() if line.startswith("framecast_") and "{" in line]
        assert series and all(f'replica="{name}"' in line for line in series), series[:3]
        assert f"[replica={name}]" in replica.log()  # every log line says which replica
