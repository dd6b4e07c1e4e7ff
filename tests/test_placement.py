"""Chunk payloads received straight into the encoder's shared memory (``Session.place``).

The server sets aside a region of the session's ring as soon as a chunk's header fragment has
arrived, and the websocket protocol receives the payload there. What must hold: the pictures are
exactly the ones sent, in order, once each; a chunk whose payload is not the size its header
says is refused as before and the session goes on; a resend is dropped; a connection that breaks
in the middle of a payload leaves nothing behind, and the next connection's chunks come out
right. ``framecast_chunk_payloads_total{path}`` shows which path each payload took.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import framecast
from framecast import protocol

from .conftest import payload_paths
from .media import decode, patterns, read_stamp
from .test_api import ack_seq, create, is_ack, is_type, open_ws, recv_until
from .test_websocket import frame

W, H = 192, 144  # 83 KB of RGB a frame: above the size that is placed
VIDEO = {"type": "video", "frame_rate": 30, "width": W, "height": H}
#: A ring of three such frames (the largest message must fit it).
SMALL_RING = {"FRAMECAST_ENCODER_BUFFER_BYTES": str(256 << 10), "FRAMECAST_MAX_MESSAGE_BYTES": str(128 << 10)}


def two_streams(sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Two ffv1 video streams of these (width, height) sizes."""
    return [{"type": "video", "frame_rate": 30, "width": w, "height": h, "encoder": "ffv1"} for w, h in sizes]


def alternating_chunk(sizes: list[tuple[int, int]], seq: int) -> list[bytes]:
    """Chunk ``seq`` of two streams written in turn (even seqs stream 0, odd ones stream 1), one
    stamped frame each, as header and payload fragments."""
    width, height = sizes[seq % 2]
    head, payload = protocol.encode_chunk(seq % 2, seq, patterns(1, height, width, start=seq // 2))
    return [head, bytes(payload)]


def fragments(seq: int, frames: np.ndarray) -> list[bytes]:
    """A CHUNK message as the SDK sends it: the header, then the payload, as two fragments."""
    head, payload = protocol.encode_chunk(0, seq, np.ascontiguousarray(frames))
    return [head, bytes(payload)]


def stamps(path: Path) -> list[int]:
    video = decode(path)["streams"][0]
    assert (video["width"], video["height"]) == (W, H)
    return [read_stamp(f) for f in video["frames"]]


def stream_and_finish(ws: Any, seqs: range) -> None:
    """Send stamped frames ``seqs`` as the SDK would, wait for the last ACK, finish the session."""
    for seq in seqs:
        ws.send(fragments(seq, patterns(1, H, W, start=seq)))
    recv_until(ws, is_ack(seqs[-1]))
    ws.send(protocol.encode_control(protocol.FINISH))
    recv_until(ws, is_type("closed"))
    ws.close()


def wait_for_disconnect(api: httpx.Client, session_id: str, since: float) -> None:
    """Until the session has seen its client go, at ``since`` (time.time()) or later."""
    for _ in range(500):
        events = api.get(f"/v1/sessions/{session_id}").json()["events"]
        if events and events[-1]["event"] == "client_disconnected" and events[-1]["time"] >= since - 0.002:
            return
        time.sleep(0.02)
    raise AssertionError("the server did not see the client go")


@pytest.mark.parametrize("ring", ["default", "small"])
def test_placed_payloads_come_out_exactly(own_server, ring: str) -> None:
    """Every picture comes out, in order, once, and none took the copying path. With a ring of
    three frames and a client that sends forty without waiting for an ACK, the server stops
    reading until the encoder frees space, rather than receive the rest as usual and copy it in
    later."""
    server = own_server(**SMALL_RING) if ring == "small" else own_server()
    n = 40 if ring == "small" else 12
    with httpx.Client(base_url=server.url, timeout=60) as api:
        created = create(api, [{**VIDEO, "encoder": "ffv1"}], {"type": "server_file", "path": "placed.mkv"})
        stream_and_finish(open_ws(created), range(n))
    assert stamps(server.output_dir / "placed.mkv") == list(range(n))
    assert payload_paths(server) == {"placed": float(n), "copied": 0.0, "client_memory": 0.0}


def test_payloads_of_the_wrong_size_are_refused_and_the_session_goes_on(own_server) -> None:
    """Longer or shorter than the header says, in one fragment or several: refused with the
    header's seq named, as when the payload is copied; the region set aside is given back."""
    server = own_server()
    good = patterns(1, H, W)
    head, payload = fragments(0, good)
    cases = [
        [head, payload + b"extra"],  # more than was placed: the rest arrives as usual
        [head, payload[:-100]],  # less than was placed
        [head, payload[:5000], payload[5000:] + b"x" * 64],
        [head, payload[:-1], b"", b"12"],
        [head, payload, b"extra"],  # more after a frame that filled the region (left masked there)
    ]
    with httpx.Client(base_url=server.url, timeout=60) as api:
        created = create(api, [VIDEO], {"type": "server_file", "path": "sizes.mkv"})
        ws = open_ws(created)
        for message in cases:
            ws.send(message)
            error = recv_until(ws, is_type("error"))[-1]
            assert (error["seq"], error["code"]) == (0, "invalid_chunk"), error
            assert "payload is" in error["message"] and f"needs {W * H * 3}" in error["message"], error
        for seq in range(6):
            ws.send(fragments(seq, patterns(1, H, W, start=seq)))
        ws.send(fragments(3, patterns(1, H, W, start=99)))  # a resend of a taken chunk: dropped
        recv_until(ws, is_ack(5))
        ws.send(protocol.encode_control(protocol.FINISH))
        recv_until(ws, is_type("closed"))
        ws.close()
    assert stamps(server.output_dir / "sizes.mkv") == list(range(6))
    assert payload_paths(server)["placed"] == 6.0


def test_a_connection_cut_inside_a_payload_leaves_nothing_behind(own_server) -> None:
    """Cut in the middle of a placed payload, again and again: the next connection resumes the
    session, and every region the cut ones held is free again (else the ring would fill up and
    the chunks after it would stall, or worse, land on a region the encoder still reads)."""
    server = own_server()
    with httpx.Client(base_url=server.url, timeout=60) as api:
        created = create(api, [VIDEO], {"type": "server_file", "path": "cut.mkv"})
        ws = open_ws(created)
        ws.send(fragments(0, patterns(1, H, W)))
        assert ack_seq(recv_until(ws, lambda m: isinstance(m, bytes))[-1]) == 0
        closed_at = time.time()  # before the close: the server may see it before close() returns
        ws.close()
        wait_for_disconnect(api, created["id"], closed_at)
        host, port = "127.0.0.1", server.port
        for attempt in range(70):  # more than the ring holds chunks in flight (64)
            head, payload = fragments(1, patterns(1, H, W, start=50 + attempt))
            with socket.create_connection((host, port), timeout=10) as raw:
                path = created["stream_url"].split(str(port), 1)[1]
                raw.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    f"Authorization: Bearer {created['token']}\r\n\r\n".encode()
                )
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += raw.recv(4096)
                assert answer.startswith(b"HTTP/1.1 101"), answer
                cut = frame(0x2, head, fin=False) + frame(0x0, payload)
                raw.sendall(cut[: len(cut) - 1 - attempt * 997 % 50_000])
                cut_at = time.time()
            # the server notices the cut before the next connection may attach (4409 otherwise)
            wait_for_disconnect(api, created["id"], cut_at)
        stream_and_finish(open_ws(created), range(1, 30))
    assert stamps(server.output_dir / "cut.mkv") == list(range(30))
    paths = payload_paths(server)
    assert paths["placed"] == 30.0 and paths["copied"] == 0.0, paths


def test_video_payloads_left_masked_come_out_as_those_unmasked_on_the_loop(own_server) -> None:
    """A placed video payload that came in one frame is left masked in the ring and unmasked by
    the encoder process; one that came in several frames is unmasked by the server as each frame
    ends. Losslessly encoded noise (any wrong byte shows) comes out the same both ways, and the
    same as through the client's shared memory, where nothing is ever masked."""
    server = own_server()
    noise = np.random.default_rng(7).integers(0, 256, (6, 3, H, W), dtype=np.uint8)
    lossless = {**VIDEO, "encoder": "ffv1"}
    results = {}
    with httpx.Client(base_url=server.url, timeout=60) as api:
        for how in ("one_frame", "three_frames"):
            created = create(api, [lossless], {"type": "server_file", "path": f"{how}.mkv"})
            ws = open_ws(created)
            for seq in range(len(noise)):
                head, payload = fragments(seq, noise[seq : seq + 1])
                cut = [7, 20_000][seq % 2]  # the mask's phase across the frames differs too
                ws.send([head, payload] if how == "one_frame" else [head, payload[:cut], payload[cut:]])
            recv_until(ws, is_ack(len(noise) - 1))
            ws.send(protocol.encode_control(protocol.FINISH))
            recv_until(ws, is_type("closed"))
            ws.close()
            results[how] = decode(server.output_dir / f"{how}.mkv")["streams"][0]["frames"]
        assert payload_paths(server)["placed"] == 2.0 * len(noise)
        writer = framecast.StreamWriter(framecast.ServerFile("shared.mkv"), server=server.url, shared_memory=True)
        writer.add_video_stream(frame_rate=30, width=W, height=H, encoder="ffv1")
        with writer.open():
            for seq in range(len(noise)):
                writer.write_video_chunk(0, noise[seq : seq + 1])
        assert payload_paths(server)["client_memory"] == float(len(noise))
    reference = decode(server.output_dir / "shared.mkv")["streams"][0]["frames"]
    assert len(reference) == len(noise)
    for how, frames in results.items():
        assert all(np.array_equal(a, b) for a, b in zip(frames, reference, strict=True)), how


def test_a_placed_audio_payload_is_checked_unmasked(own_server) -> None:
    """The server reads a float audio payload (NaN and infinity are refused), so it is never
    left masked, even when it is placed."""
    server = own_server()
    audio = {"type": "audio", "sample_rate": 48000, "num_channels": 2}
    samples = np.zeros((24_000, 2), np.float32)  # 192 KB: placed
    samples[100, 1] = np.nan
    with httpx.Client(base_url=server.url, timeout=60) as api:
        created = create(api, [audio], {"type": "server_file", "path": "nan.wav"})
        ws = open_ws(created)
        head, payload = protocol.encode_chunk(0, 0, samples)
        ws.send([head, bytes(payload)])
        error = recv_until(ws, is_type("error"))[-1]
        assert (error["seq"], error["code"]) == (0, "invalid_chunk") and "NaN or infinite" in error["message"], error
        samples[100, 1] = 0.25
        head, payload = protocol.encode_chunk(0, 1, samples)
        ws.send([head, bytes(payload)])
        recv_until(ws, is_ack(1))
        ws.close()
    assert payload_paths(server)["placed"] == 1.0  # the refused one is not counted


def test_a_connection_cut_while_the_ring_is_full_resumes_exactly(own_server) -> None:
    """Cut while the server waits for room (a chunk's header read, its payload not): the next
    connection sends everything again, and each picture comes out once, in order."""
    server = own_server(**SMALL_RING)
    lossless = {**VIDEO, "encoder": "ffv1"}
    with httpx.Client(base_url=server.url, timeout=60) as api:
        created = create(api, [lossless], {"type": "server_file", "path": "cut_full.mkv"})
        for attempt in range(3):
            ws = open_ws(created)
            for seq in range(10 * attempt, 10 * attempt + 30):
                ws.send(fragments(seq, patterns(1, H, W, start=seq)))
            closed_at = time.time()
            ws.close()
            wait_for_disconnect(api, created["id"], closed_at)
        stream_and_finish(open_ws(created), range(50))  # the taken ones are dropped as resends
    assert stamps(server.output_dir / "cut_full.mkv") == list(range(50))
    assert payload_paths(server)["copied"] == 0.0


@pytest.mark.parametrize("cuts", [0, 2])
def test_copied_chunks_between_placed_ones_keep_every_picture_whole(own_server, cuts: int) -> None:
    """Small chunks (an audio track's, here a thumbnail stream's) are copied into the ring when
    the session takes them, large ones are placed as they arrive. With a full ring and a client
    that sends without waiting, a copied chunk can reach the encoder after a placed one reserved
    later: the ring frees regions in the order the encoder got them, so no picture is
    overwritten while it is read. Each comes out whole, in order, once, also across cuts."""
    server = own_server(**SMALL_RING)
    sizes = [(W, H), (64, 48)]  # 83 KB, placed; 9 KB, copied
    chunk, streams = functools.partial(alternating_chunk, sizes), two_streams(sizes)
    with httpx.Client(base_url=server.url, timeout=60) as api:
        created = create(api, streams, {"type": "server_file", "path": "mixed.mkv"})
        for cut in range(cuts):
            ws = open_ws(created)
            for seq in range(20 * cut, 20 * cut + 40):
                ws.send(chunk(seq))
            closed_at = time.time()
            ws.close()
            wait_for_disconnect(api, created["id"], closed_at)
        ws = open_ws(created)
        for seq in range(80):  # those taken before a cut are dropped as resends
            ws.send(chunk(seq))
        recv_until(ws, is_ack(79))
        ws.send(protocol.encode_control(protocol.FINISH))
        recv_until(ws, is_type("closed"))
        ws.close()
    decoded = decode(server.output_dir / "mixed.mkv")["streams"]
    assert [read_stamp(f) for f in decoded[0]["frames"]] == list(range(40))
    assert [read_stamp(f) for f in decoded[1]["frames"]] == list(range(40))
    assert payload_paths(server) == {"placed": 40.0, "copied": 40.0, "client_memory": 0.0}


def test_an_encoder_killed_while_the_socket_waits_for_room_fails_the_session_promptly(own_server) -> None:
    """The encoder is stopped (SIGSTOP), the client sends forty chunks into a ring of three, so
    the server waits for room with the socket unread; then the encoder is killed. The wait ends
    with the ring: the client hears that the session failed, and why, instead of hanging."""
    server = own_server(**SMALL_RING)
    with httpx.Client(base_url=server.url, timeout=60) as api:
        created = create(api, [{**VIDEO, "encoder": "ffv1"}], {"type": "server_file", "path": "killed.mkv"})
        ws = open_ws(created)
        ws.send(fragments(0, patterns(1, H, W)))
        recv_until(ws, is_ack(0))
        pid = api.get(f"/v1/sessions/{created['id']}").json()["encoder_pid"]
        os.kill(pid, signal.SIGSTOP)
        sender = threading.Thread(
            target=lambda: [ws.send(fragments(s, patterns(1, H, W, start=s))) for s in range(1, 41)]
        )
        sender.daemon = True  # its last sends may block on a socket nobody reads any more
        sender.start()
        deadline = time.monotonic() + 20
        while payload_paths(server)["placed"] < 3:  # the ring is full: the socket waits
            assert time.monotonic() < deadline, payload_paths(server)
            time.sleep(0.02)
        time.sleep(0.2)  # the next chunk's header is read by now, and its payload waits
        os.kill(pid, signal.SIGKILL)
        failed = recv_until(ws, is_type("failed"), timeout=30)[-1]
        assert "SIGKILL" in json.dumps(failed), failed
        assert api.get(f"/v1/sessions/{created['id']}").json()["state"] == "failed"
        with contextlib.suppress(TimeoutError):  # read the refusals of the chunks sent after it,
            while True:  # else websockets' client stops reading and never sees the close's answer
                ws.recv(timeout=1)
        ws.close()


def test_a_placement_waits_for_the_copied_chunks_before_it(own_server) -> None:
    """A ring of 128 KB, chunks of 83 KB (placed) and 58 KB (copied, below the placing size)
    in turn, sent without waiting. Were the next large payload placed while a copied chunk
    before it still waited to be written in, it would hold the space that chunk needs and be
    handed on only after it: neither would move. The websocket offers a header only once the
    messages before it are through, so every picture comes out."""
    server = own_server(FRAMECAST_ENCODER_BUFFER_BYTES=str(128 << 10), FRAMECAST_MAX_MESSAGE_BYTES=str(128 << 10))
    sizes = [(W, H), (160, 120)]
    chunk, streams = functools.partial(alternating_chunk, sizes), two_streams(sizes)
    with httpx.Client(base_url=server.url, timeout=60) as api:
        created = create(api, streams, {"type": "server_file", "path": "tight.mkv"})
        ws = open_ws(created)
        for seq in range(60):
            ws.send(chunk(seq))
        recv_until(ws, is_ack(59))
        ws.send(protocol.encode_control(protocol.FINISH))
        recv_until(ws, is_type("closed"))
        ws.close()
    decoded = decode(server.output_dir / "tight.mkv")["streams"]
    assert [read_stamp(f) for f in decoded[0]["frames"]] == list(range(30))
    assert [read_stamp(f) for f in decoded[1]["frames"]] == list(range(30))
    assert payload_paths(server) == {"placed": 30.0, "copied": 30.0, "client_memory": 0.0}
