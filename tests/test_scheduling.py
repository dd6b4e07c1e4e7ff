"""Encoder processes run as batch work (``framecast_server/scheduling.py``): every thread of a
session's encoder is SCHED_BATCH while it encodes, so a chunk that wakes it never preempts the
server that relays it; the server keeps the default policy; FRAMECAST_ENCODER_SCHEDULING=normal
leaves encoders on the default too. Real servers, real encoders, outputs decoded."""

from __future__ import annotations

import os

import httpx
import pytest

import framecast

from .conftest import ServerProcess
from .media import decode, patterns

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux scheduling policies")


def thread_policies(pid: int) -> set[int]:
    """The scheduling policy of every thread of process ``pid`` (one that ends meanwhile is skipped)."""
    policies = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            policies.add(os.sched_getscheduler(int(tid)))
        except ProcessLookupError:
            continue
    return policies


def encode_and_look(server: ServerProcess, name: str, realtime: bool) -> tuple[set[int], int]:
    """Stream 12 frames into server file ``name``; the policies of the encoder's threads, seen
    halfway while it encodes, and its pid."""
    frames = patterns(12, 48, 64)
    writer = framecast.StreamWriter(framecast.ServerFile(name), server=server.url, realtime=realtime)
    writer.add_video_stream(frame_rate=30, width=64, height=48)
    with writer.open():
        writer.write_video_chunk(0, frames[:6])
        writer.flush()  # acknowledged: encoded by the session's encoder process
        with httpx.Client(base_url=server.url) as api:
            pid = api.get(f"/v1/sessions/{writer.session_id}").json()["encoder_pid"]
        seen = thread_policies(pid)
        writer.write_video_chunk(0, frames[6:])
    (video,) = decode(server.output_dir / name)["streams"]
    assert video["frame_count"] == 12
    return seen, pid


@pytest.mark.parametrize("realtime", [False, True], ids=["as-fast-as-possible", "paced"])
def test_every_thread_of_an_encoder_runs_as_batch_work(server, realtime):
    # Files encode with x264's frame threads and a prepare thread: they inherit the policy too.
    seen, pid = encode_and_look(server, f"batch-{realtime}.mkv", realtime)
    assert seen == {os.SCHED_BATCH}, f"encoder {pid} threads' policies: {seen}"
    assert os.sched_getscheduler(server.proc.pid) == os.SCHED_OTHER  # the server itself: the default


def test_normal_scheduling_leaves_encoders_on_the_default_policy(own_server):
    server = own_server(FRAMECAST_ENCODER_SCHEDULING="normal")
    seen, _ = encode_and_look(server, "normal.mkv", realtime=False)
    assert seen == {os.SCHED_OTHER}


def test_an_unknown_policy_is_refused_at_startup(tmp_path):
    with pytest.raises(RuntimeError, match=r"FRAMECAST_ENCODER_SCHEDULING: .*'batch' or 'normal' \(got 'realtime'\)"):
        ServerProcess(tmp_path / "out", env={"FRAMECAST_ENCODER_SCHEDULING": "realtime"})
