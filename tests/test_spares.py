"""Spare encoder processes (``framecast_server/spares.py``): started before sessions need them,
put to work by the next session, replaced in the background; a dead spare or none at all still
gives working sessions. Real servers, real processes, outputs decoded."""

from __future__ import annotations

import os
import signal
import time

import httpx
import numpy as np
import psutil

import framecast

from .conftest import ServerProcess
from .media import decode, patterns

SPARE_WAIT = 30.0


def encoder_processes(server: ServerProcess) -> set[int]:
    """PIDs of the processes under the server's forkserver: encoders, busy or spare."""
    found = set()
    for process in psutil.Process(server.proc.pid).children(recursive=True):
        try:  # a process killed by a test may vanish between the listing and these reads
            if process.ppid() != server.proc.pid and process.status() != psutil.STATUS_ZOMBIE:
                found.add(process.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for(predicate, timeout: float = SPARE_WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def write_frames(server: ServerProcess, name: str, frames: np.ndarray) -> dict:
    """Stream ``frames`` (T, C, H, W) into server file ``name``; returns the session as created."""
    writer = framecast.StreamWriter(framecast.ServerFile(name), server=server.url)
    writer.add_video_stream(frame_rate=30, width=frames.shape[3], height=frames.shape[2])
    with writer.open():
        with httpx.Client(base_url=server.url) as api:
            session = api.get(f"/v1/sessions/{writer.session_id}").json()
        writer.write_video_chunk(0, frames)
    return session


def test_a_session_runs_in_the_spare_started_before_it_and_a_new_spare_follows(own_server):
    server = own_server()
    (spare,) = wait_for(lambda: encoder_processes(server))  # started with the server, before any session
    frames = patterns(12, 48, 64)
    session = write_frames(server, "spare.mkv", frames)
    assert session["encoder_pid"] == spare
    (video,) = decode(server.output_dir / "spare.mkv")["streams"]
    assert (video["width"], video["height"], video["frame_count"]) == (64, 48, 12)
    # The replacement is waiting for the next session, which runs in it.
    (replacement,) = wait_for(lambda: encoder_processes(server) - {spare})
    assert write_frames(server, "next.mkv", frames)["encoder_pid"] == replacement
    assert decode(server.output_dir / "next.mkv")["streams"][0]["frame_count"] == 12


def test_a_spare_killed_while_waiting_is_replaced_by_a_fresh_process(own_server):
    server = own_server()
    (spare,) = wait_for(lambda: encoder_processes(server))
    os.kill(spare, signal.SIGKILL)
    wait_for(lambda: spare not in encoder_processes(server))
    session = write_frames(server, "after-kill.mkv", patterns(8, 48, 64))
    assert session["encoder_pid"] != spare
    assert decode(server.output_dir / "after-kill.mkv")["streams"][0]["frame_count"] == 8
    assert "spare encoder process exited while waiting" in server.log()
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_without_spares_each_session_starts_its_own_process(own_server):
    server = own_server(FRAMECAST_SPARE_ENCODERS="0")
    assert encoder_processes(server) == set()
    session = write_frames(server, "own.mkv", patterns(8, 48, 64))
    assert decode(server.output_dir / "own.mkv")["streams"][0]["frame_count"] == 8
    assert session["encoder_pid"] is not None
    time.sleep(0.5)  # nothing is started after it either
    assert encoder_processes(server) == set()


def test_spares_end_with_the_server(own_server):
    server = own_server(FRAMECAST_SPARE_ENCODERS="2")
    spares = wait_for(lambda: found if len(found := encoder_processes(server)) == 2 else None)
    server.stop()  # SIGTERM: a graceful shutdown
    assert "Application shutdown complete" in server.log_path.read_text()
    for pid in spares:
        wait_for(lambda pid=pid: gone(pid), timeout=10)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
