"""Encoder processes reuse their frame buffers instead of faulting in fresh pages for every frame
(``framecast_server/malloc.py``): measured on a real encoder process, by its page-fault counter.

Only the real-time path is held to a bound. Encoding as fast as possible (720p, frame threads and
the prepare thread), the rate depends on where glibc's adaptive mmap threshold settles in that
run: 0, 4, 0 and 382 pages per frame in four runs without malloc.py's settings, 0 to 10.2 with
them (26 runs). A bound there would fail on good code or pass on bad code; the real-time path
faulted in ~81 pages per frame without them in 3 runs of 4, and under 0.2 with them in every run."""

from __future__ import annotations

import time

from .media import patterns
from .test_api import ack_seq, chunk, create, open_ws, recv_until

LIVE_360P = {
    "type": "video",
    "frame_rate": 30,
    "width": 640,
    "height": 360,
    "format": "rgb24",
    "encoder": "libx264",
    "encoder_option": {"preset": "veryfast", "tune": "zerolatency"},
}


def minor_faults(pid: int) -> int:
    """Page faults served without I/O so far (/proc/<pid>/stat, field 10): a fresh page each."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def acked_through(seq: int):
    return lambda m: isinstance(m, bytes) and ack_seq(m) >= seq


def test_a_real_time_encoder_does_not_fault_in_pages_for_every_frame(api):
    """A 640x360 frame is 345 KB as yuv420p; glibc left alone maps and unmaps such buffers, and the
    encoder faulted in ~80 fresh pages per frame. Kept on the heap, frames after the first second
    need (almost) none."""
    created = create(api, [LIVE_360P], {"type": "discard", "encode": True}, realtime=True)
    pid = created["encoder_pid"]
    frames = patterns(30, 360, 640)
    ws = open_ws(created)
    try:
        start = time.monotonic()
        before = None
        for i in range(120):
            time.sleep(max(0.0, start + i / 30 - time.monotonic()))
            ws.send(chunk(i, frames[i % len(frames) : i % len(frames) + 1]))
            if i == 39:  # past x264's start and the pacer's first second: the steady state
                recv_until(ws, acked_through(39))
                before = minor_faults(pid)
        recv_until(ws, acked_through(119))
        assert before is not None
        per_frame = (minor_faults(pid) - before) / 80
    finally:
        ws.close()
    assert per_frame < 10, f"the encoder faulted in {per_frame:.1f} pages per frame"
