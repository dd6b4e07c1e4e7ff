"""One replica of a fleet, on its own (``framecast serve`` in a subprocess): ids that name it,
readiness, draining (REST, SIGUSR1, the CLI, the deadline), finished sessions that survive a
restart, and the SDK trying a refused creation again. tests/test_cluster.py runs three behind a
proxy."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from framecast import AsyncStreamWriter, ServerFile, StreamWriter
from framecast.errors import InvalidConfig, SessionFailed

from .conftest import ServerProcess
from .media import decode, patterns, read_stamp

W, H = 96, 64
VIDEO = {"type": "video", "width": W, "height": H, "frame_rate": 30}
DISCARD = {"destination": {"type": "discard"}, "streams": [VIDEO]}


def replica(tmp_path: Path, name: str = "r1", **env: str) -> ServerProcess:
    return ServerProcess(tmp_path / name / "output", env={"FRAMECAST_REPLICA_ID": name, **env})


def write_file(url: str, path: str, frames: int = 30) -> str:
    writer = StreamWriter(ServerFile(path), format="matroska", server=url)
    writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
    with writer.open():
        writer.write_video_chunk(0, patterns(frames, H, W))
    assert writer.session_id is not None
    return writer.session_id


def test_without_a_replica_id_nothing_changes(server: ServerProcess) -> None:
    created = httpx.post(server.url + "/v1/sessions", json=DISCARD, timeout=30).json()
    assert re.fullmatch(r"[0-9a-f]{16}", created["id"]) and created["replica"] is None
    assert httpx.get(server.url + "/healthz", timeout=10).json()["replica"] is None
    assert 'replica="' not in httpx.get(server.url + "/metrics", timeout=10).text
    httpx.delete(f"{server.url}/v1/sessions/{created['id']}", timeout=30)


@pytest.mark.parametrize("bad", ["R1", "r_1", "-r1", "r1-", "a" * 64, "r.1"])
def test_a_replica_id_is_a_dns_label(tmp_path: Path, bad: str) -> None:
    with pytest.raises(RuntimeError, match="FRAMECAST_REPLICA_ID: a replica id is a DNS label"):
        replica(tmp_path, bad)


def test_ready_until_full_and_the_id_names_the_replica(tmp_path: Path) -> None:
    server = replica(tmp_path, "pod-7", FRAMECAST_MAX_SESSIONS="2")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            assert api.get("/readyz").json() == {
                "status": "ready",
                "replica": "pod-7",
                "sessions": 0,
                "max_sessions": 2,
            }
            ids = [api.post("/v1/sessions", json=DISCARD).json()["id"] for _ in range(2)]
            assert all(re.fullmatch(r"pod-7\.[0-9a-f]{16}", i) for i in ids), ids
            full = api.get("/readyz")
            assert (full.status_code, full.json()["status"], full.json()["sessions"]) == (503, "full", 2)
            refused = api.post("/v1/sessions", json=DISCARD)
            assert (refused.status_code, refused.json()["error"]["code"]) == (503, "too_many_sessions")
            assert api.get(f"/v1/sessions/{ids[0]}").json()["replica"] == "pod-7"
            api.delete(f"/v1/sessions/{ids[0]}")
            assert api.get("/readyz").status_code == 200
    finally:
        server.stop()


def test_drain_is_for_operators(tmp_path: Path) -> None:
    server = replica(tmp_path, FRAMECAST_API_KEYS="tenant-key-1", FRAMECAST_ADMIN_KEYS="admin-key-1")
    try:
        tenant = {"Authorization": "Bearer tenant-key-1"}
        refused = httpx.post(server.url + "/v1/admin/drain", headers=tenant, timeout=30)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
        assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200
        admin = {"Authorization": "Bearer admin-key-1"}
        status = httpx.post(server.url + "/v1/admin/drain", headers=admin, json={"timeout": 600}, timeout=30).json()
        assert (status["replica"], status["draining"], status["sessions"]) == ("r1", True, 0)
        assert server.proc.wait(30) == 0  # nothing live: drained at once, and gone
    finally:
        server.stop()


def test_sigusr1_drains_and_the_deadline_finalizes_what_is_left(tmp_path: Path) -> None:
    server = replica(tmp_path, FRAMECAST_DRAIN_TIMEOUT="2")
    try:
        writer = StreamWriter(ServerFile("left.mkv"), format="matroska", server=server.url)
        writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
        writer.open()
        writer.write_video_chunk(0, patterns(30, H, W))
        writer.flush()
        server.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/readyz", timeout=10).status_code != 503:
            assert time.monotonic() < deadline, "SIGUSR1 did not start a drain"
            time.sleep(0.05)
        assert httpx.get(server.url + "/healthz", timeout=10).json()["draining"] is True
        assert server.proc.wait(60) == 0  # the 2 s deadline passed with a session live: finalized, then exit
        (video,) = decode(server.output_dir / "left.mkv")["streams"]
        assert [read_stamp(f) for f in video["frames"]] == list(range(30))  # what was acknowledged, kept
        assert "drained (1 sessions left at the deadline)" in server.log()
    finally:
        server.stop()


def test_a_restart_remembers_finished_sessions_and_forgets_what_it_should(tmp_path: Path) -> None:
    env = {"FRAMECAST_REPLICA_ID": "r1", "FRAMECAST_KEEP_FINISHED_SESSIONS": "2"}
    server = ServerProcess(tmp_path / "r1" / "output", env=env)
    ids = [write_file(server.url, f"rec/{i}.mkv") for i in range(3)]
    server.stop()
    records = server.output_dir / ".sessions"
    assert sorted(p.name for p in records.iterdir()) == sorted(f"{i}.json" for i in ids)
    (records / "garbage.json").write_text("{not json")
    server = ServerProcess(server.output_dir, env=env, port=server.port)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            listed = {s["id"]: s for s in api.get("/v1/sessions").json()}
            assert sorted(listed) == sorted(ids[1:])  # the newest 2, as FRAMECAST_KEEP_FINISHED_SESSIONS says
            assert not (records / f"{ids[0]}.json").exists()
            assert api.get(f"/v1/sessions/{ids[0]}").status_code == 404
            got = api.get(f"/v1/sessions/{ids[2]}/output")
            (video,) = decode(got.content)["streams"]
            assert [read_stamp(f) for f in video["frames"]] == list(range(30))
            assert api.get(f"/v1/sessions/{ids[2]}/files/2.mkv").status_code == 200
            assert api.delete(f"/v1/sessions/{ids[2]}").json()["state"] == "closed"
            assert "not restoring the finished session of garbage.json" in server.log()
        with pytest.raises(InvalidConfig, match="exists"):  # its path is still guarded
            write_file(server.url, "rec/2.mkv")
    finally:
        server.stop()


def test_a_record_keeps_no_destination_url(tmp_path: Path) -> None:
    server = replica(tmp_path)
    try:
        config = {"destination": {"type": "url", "url": "rtmp://127.0.0.1:9/live/secret-key-77"}, "streams": [VIDEO]}
        created = httpx.post(server.url + "/v1/sessions", json=config, timeout=30).json()
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/v1/sessions/{created['id']}", timeout=10).json()["state"] != "failed":
            assert time.monotonic() < deadline, "a destination that refuses did not fail the session"
            time.sleep(0.1)
        record = server.output_dir / ".sessions" / f"{created['id']}.json"
        assert record.exists() and "secret-key-77" not in record.read_text()
        assert json.loads(record.read_text())["config"] is None  # no server file: nothing to plan again
    finally:
        server.stop()


@pytest.mark.parametrize("path", [".sessions/r1.0123456789abcdef.json", ".encoders/x.mkv", ".hidden.mkv", "./.x/y.mkv"])
def test_the_servers_own_names_are_no_output_path(server: ServerProcess, path: str) -> None:
    config = {"destination": {"type": "server_file", "path": path}, "streams": [VIDEO]}
    response = httpx.post(server.url + "/v1/sessions", json=config, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "destination.path"
    assert "names starting with '.' at the top of the output directory are the server's own" in response.text


def test_the_sdk_tries_a_full_server_again(tmp_path: Path) -> None:
    server = replica(tmp_path, FRAMECAST_MAX_SESSIONS="1")
    try:
        first = httpx.post(server.url + "/v1/sessions", json=DISCARD, timeout=30).json()
        opened: list[Any] = []

        def open_second() -> None:
            writer = StreamWriter(ServerFile("second.mkv"), format="matroska", server=server.url)
            writer.add_video_stream(frame_rate=30, width=W, height=H)
            writer.open()
            opened.append(writer)

        thread = threading.Thread(target=open_second)
        thread.start()
        deadline = time.monotonic() + 10
        while (
            'framecast_errors_total{kind="too_many_sessions"' not in httpx.get(server.url + "/metrics", timeout=10).text
        ):
            assert time.monotonic() < deadline, "the second session was never refused"
            time.sleep(0.02)
        httpx.delete(f"{server.url}/v1/sessions/{first['id']}", timeout=30)
        thread.join(30)
        assert opened, "the SDK gave up instead of trying again"
        opened[0].close()
    finally:
        server.stop()


def test_an_unanswered_peer_is_named(tmp_path: Path) -> None:
    server = replica(tmp_path, FRAMECAST_PEERS="r1=http://127.0.0.1:9,r2=http://127.0.0.1:9")
    try:
        response = httpx.get(server.url + "/v1/sessions", timeout=30)
        assert response.status_code == 200 and response.json() == []
        (missing,) = json.loads(response.headers["framecast-unanswered"])  # r1 is itself: not asked
        assert (missing["replica"], missing["url"]) == ("r2", "http://127.0.0.1:9")
        assert "ConnectError" in missing["reason"]
        only = httpx.get(server.url + "/v1/sessions", params={"scope": "replica"}, timeout=30)
        assert "framecast-unanswered" not in only.headers
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["sync", "sync-no-shm", "async"])
def test_a_writer_fails_at_once_when_its_server_comes_back_without_its_session(tmp_path: Path, kind: str) -> None:
    """A server restarted under a live writer answers its reconnect with 4404: the writer fails
    then (SessionFailed), not after reconnect_timeout (30 s) of retrying."""
    servers = [replica(tmp_path)]

    def restart() -> None:
        servers[0].kill_group()
        servers.append(ServerProcess(servers[0].output_dir, env={"FRAMECAST_REPLICA_ID": "r1"}, port=servers[0].port))

    try:
        if kind == "async":
            failure = asyncio.run(_async_writer_after_restart(servers[0].url, restart))
        else:
            writer = StreamWriter(
                ServerFile("gone.mkv"), format="matroska", server=servers[0].url, shared_memory=kind == "sync"
            )
            writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
            writer.open()
            writer.write_video_chunk(0, patterns(4, H, W))
            writer.flush()
            restart()
            failure = None
            deadline = time.monotonic() + 10
            while failure is None and time.monotonic() < deadline:
                try:
                    writer.write_video_chunk(0, patterns(2, H, W))
                except Exception as exc:
                    failure = exc
                time.sleep(0.05)
        assert isinstance(failure, SessionFailed), repr(failure)
        assert "no longer has this session" in str(failure)
    finally:
        for server in servers:
            server.stop()


async def _async_writer_after_restart(url: str, restart: Any) -> BaseException | None:
    writer = AsyncStreamWriter(ServerFile("gone-async.mkv"), format="matroska", server=url)
    writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
    await writer.open()
    await writer.write_video_chunk(0, patterns(4, H, W))
    await writer.flush()
    await asyncio.to_thread(restart)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            await writer.write_video_chunk(0, patterns(2, H, W))
        except Exception as exc:
            return exc
        await asyncio.sleep(0.05)
    return None


def test_drain_wait_returns_once_the_last_session_has_ended_and_the_server_exited(tmp_path: Path) -> None:
    server = replica(tmp_path)
    try:
        writer = StreamWriter(ServerFile("last.mkv"), format="matroska", server=server.url)
        writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
        writer.open()
        writer.write_video_chunk(0, patterns(10, H, W))
        command = [sys.executable, "-m", "framecast.cli", "drain", "--server", server.url, "--wait"]
        drain = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while httpx.get(server.url + "/readyz", timeout=10).json()["status"] != "draining":
            assert time.monotonic() < deadline and drain.poll() is None, drain.communicate()
            time.sleep(0.05)
        writer.write_video_chunk(0, patterns(10, H, W, start=10))  # the live session goes on
        writer.close()
        out, err = drain.communicate(timeout=60)
        assert drain.returncode == 0, err
        assert "replica r1 draining: 1 live sessions go on" in out
        assert "replica r1 draining: 0 live sessions go on" in err or "drained: the server has exited" in err
        assert err.rstrip().endswith("drained: the server has exited"), err
        assert server.proc.wait(30) == 0
        (video,) = decode(server.output_dir / "last.mkv")["streams"]
        assert [read_stamp(f) for f in video["frames"]] == list(range(20))
    finally:
        server.stop()
