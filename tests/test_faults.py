"""Real faults, each bounded in time: cut connections, killed processes, restarted peers."""

from __future__ import annotations

import io

import pytest

from framecast import ServerFile, StreamWriter

from .faults import CuttingProxy
from .media import decode, patterns, read_stamp

W, H = 160, 120


@pytest.mark.parametrize("destination", ["server_file", "client_bytesio"])
def test_websocket_cuts_lose_and_duplicate_nothing(server, destination):
    frames = patterns(240, H, W)  # 13.8 MB of rgb24
    with CuttingProxy(server.port, cuts=6, min_bytes=200_000, max_bytes=1_800_000, seed=7) as proxy:
        dst = ServerFile(f"faults/cut-{destination}.mkv") if destination == "server_file" else io.BytesIO()
        events = []
        writer = StreamWriter(dst, format="matroska", server=proxy.url, reconnect_timeout=20,
                              on_event=events.append)
        writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
        with writer.open():
            for k in range(0, len(frames), 8):
                writer.write_video_chunk(0, frames[k : k + 8])
        assert proxy.cuts == 6
    assert writer.reconnects >= 1  # (a cut during a reconnect is retried within that reconnect)
    assert any(e["event"] == "client_reconnected" for e in writer.events)
    source = server.output_dir / "faults" / f"cut-{destination}.mkv" if destination == "server_file" else dst
    (video,) = decode(source if not isinstance(source, io.BytesIO) else source.getvalue())["streams"]
    assert [read_stamp(f) for f in video["frames"]] == list(range(240))  # each frame once, in order
    assert writer.summary["streams"][0]["counters"]["frames"] == 240
