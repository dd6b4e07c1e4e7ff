"""Clients that try to exhaust the server: memory, logs, connections, files, shared memory.

Each test plays one hostile client against a real server (``framecast serve`` in a subprocess)
and checks that what the server holds stays bounded, that the hostile client is told clearly
what happened, and that the session (where it should) and other sessions live on. Pure parts
(the outbox, the refusal counter, the shared-memory sweep) are checked without a server first.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from framecast import protocol
from framecast_server.session import client_memory
from framecast_server.session.outbox import Outbox
from framecast_server.session.refusals import LOG_FIRST, Refusals

from .conftest import ServerProcess
from .test_api import VIDEO, chunk, create, is_ack, is_type, open_ws, recv_until

MiB = 1 << 20
SHM = "/dev/shm"


# -- pure: the outbox and the refusal counter --------------------------------------------------


def test_acks_coalesce_notices_are_bounded_and_the_drop_is_reported() -> None:
    asyncio.run(_outbox_checks())


async def _outbox_checks() -> None:
    outbox = Outbox(replay_limit=MiB, notice_limit=64 * 1024)
    outbox.put(b"output", output_index=0)
    for seq in range(1000):
        outbox.put_ack(protocol.encode_ack(seq))
    assert len(outbox) == 2, "ACKs are cumulative: one queued ACK stands for all"
    notice = protocol.encode_control(protocol.ERROR, seq=None, code="invalid_message", message="x" * 500)
    taken = sum(outbox.put_notice(notice) for _ in range(1000))
    assert 0 < taken < 1000 and outbox.notice_bytes <= 64 * 1024
    assert outbox.dropped_notices == 1000 - taken
    sent = []
    while len(outbox):
        sent.append(await outbox.peek())
        outbox.pop()
    assert sent[:2] == [b"output", protocol.encode_ack(999)]
    warnings = [json.loads(m) for m in sent if isinstance(m, str) and '"warning"' in m]
    assert len(warnings) == 1 and f"{1000 - taken} messages" in warnings[0]["message"], warnings
    outbox.put(b"final")
    outbox.release()
    assert len(outbox) == 0 and outbox.waiting_bytes == outbox.unconfirmed_bytes == 0


def test_an_ack_is_sent_at_once_only_when_nothing_waits_before_it() -> None:
    """ACKs leave through ``send_now`` while the outbox is empty; behind any queued message they
    queue too (and coalesce), so they never overtake it; refused by ``send_now``, they queue."""

    async def main() -> None:
        outbox = Outbox()
        wire: list[bytes] = []
        open_ = [True]

        def send_now(message: bytes) -> bool:
            if open_[0]:
                wire.append(message)
            return open_[0]

        outbox.send_now = send_now
        outbox.put_ack(protocol.encode_ack(1))
        assert wire == [protocol.encode_ack(1)] and len(outbox) == 0
        outbox.put(b"output", output_index=0)
        outbox.put_ack(protocol.encode_ack(2))
        outbox.put_ack(protocol.encode_ack(3))
        assert len(wire) == 1 and len(outbox) == 2, "behind the output: queued, coalesced"
        sent = []
        while len(outbox):
            sent.append(await outbox.peek())
            outbox.pop()
        assert sent == [b"output", protocol.encode_ack(3)]
        open_[0] = False  # e.g. the transport's buffer is full
        outbox.put_ack(protocol.encode_ack(4))
        assert len(outbox) == 1 and await outbox.peek() == protocol.encode_ack(4)

    asyncio.run(main())


def test_a_writer_waits_for_room_until_the_client_reads_or_the_session_ends() -> None:
    async def main() -> None:
        outbox = Outbox()
        for index in range(3):
            outbox.put(b"x" * 100, output_index=index)
        waiting = asyncio.create_task(outbox.wait_for_room(150))
        await asyncio.sleep(0.05)
        assert not waiting.done(), "300 bytes wait, the limit is 150"
        await outbox.peek()
        outbox.pop()
        await asyncio.sleep(0.05)
        assert not waiting.done(), "200 bytes still wait"
        outbox.pop()
        await asyncio.wait_for(waiting, 5)  # 100 bytes: room
        outbox.put(b"y" * 1000)
        waiting = asyncio.create_task(outbox.wait_for_room(150))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        outbox.stop_waiting()  # the session ended: the chunk is not delivered, nobody hangs
        await asyncio.wait_for(waiting, 5)
        await asyncio.wait_for(outbox.wait_for_room(0), 5)  # and nobody waits later either

    asyncio.run(main())


def test_refusals_reply_at_a_rate_summarize_log_little_and_lose_patience() -> None:
    now = [100.0]
    lines: list[str] = []
    refusals = Refusals(
        replies_per_second=3,
        max_in_a_row=10,
        max_bytes_in_a_row=10**9,
        log=lambda level, fmt, *args, **kw: lines.append(fmt % args),
        clock=lambda: now[0],
    )
    verdicts = [refusals.refused("chunk", 10, "wrong shape " + "y" * 1000) for _ in range(8)]
    assert [v.reply for v in verdicts] == [True] * 3 + [False] * 5
    assert all(v.close_reason is None for v in verdicts)
    assert len(lines) == LOG_FIRST + 1 and all(len(line) < 500 for line in lines), lines  # quoted reasons cut
    now[0] += 1.0
    nxt = refusals.refused("chunk", 10, "wrong shape")
    assert nxt.reply and nxt.summary is not None and "5 more messages refused" in nxt.summary
    assert refusals.accepted() is None  # nothing left unanswered; and the count in a row starts over
    verdicts = [refusals.refused("control message", 10, "not JSON") for _ in range(11)]
    assert verdicts[-1].close_reason == "11 messages in a row refused, nothing valid in between"
    assert all(v.close_reason is None for v in verdicts[:-1])
    now[0] += 60
    refusals.gone()
    assert lines[-1] == "refused 15 more messages in the last 61 s (20 in all); the last: not JSON", lines[-3:]


def test_the_sweep_removes_only_our_users_segments_of_dead_servers(tmp_path: Path) -> None:
    gone = psutil.Popen(["true"])
    gone.wait()
    ours = tmp_path / f"framecast-{gone.pid}-0123456789abcdef0123456789abcdef"
    not_ours = tmp_path / f"framecast-{gone.pid}-fedcba9876543210fedcba9876543210"
    look_alike = tmp_path / f"framecast-{gone.pid}-notours.txt"
    for path in (ours, not_ours, look_alike):
        path.write_bytes(b"x")
    os.chown(not_ours, 65534, 65534)  # another user's (these tests run as root, as the server did)
    assert client_memory.sweep(tmp_path) == 1
    assert not ours.exists() and not_ours.exists() and look_alike.exists()


# -- helpers for live servers -------------------------------------------------------------------


def rss(server: ServerProcess) -> int:
    return psutil.Process(server.proc.pid).memory_info().rss


class PeakRss:
    """Samples a server's RSS in a thread while the block runs; ``peak`` is the largest seen."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.peak = rss(server)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss(self.server))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, rss(self.server))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def never_reading(created: dict) -> ClientConnection:
    """A websocket client that stops reading: its receive queue holds one message, then the
    server's writes back up into TCP."""
    return connect(
        created["stream_url"],
        additional_headers={"Authorization": f"Bearer {created['token']}"},
        max_size=None,
        max_queue=1,
        open_timeout=10,
    ).__enter__()


def closed_with(ws: ClientConnection, timeout: float = 30) -> tuple[int, str, list]:
    """Read until the server closes; its code and reason, and what came before."""
    got: list = []
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as err:
        while True:
            assert time.monotonic() < deadline, f"the server did not close; last messages {got[-3:]}"
            got.append(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
    assert err.value.rcvd is not None, f"closed without a close frame: {err.value}"
    return err.value.rcvd.code, err.value.rcvd.reason, got


def state_of(server: ServerProcess, session_id: str, headers: dict | None = None) -> str:
    return httpx.get(f"{server.url}/v1/sessions/{session_id}", headers=headers, timeout=10).json()["state"]


def stream_one(created: dict) -> None:
    """A well-behaved client: one chunk, ACKed, then finish and the summary."""
    ws = open_ws(created)
    ws.send(chunk(0, np.zeros((1, 3, 48, 64), np.uint8)))
    recv_until(ws, is_ack(0))
    ws.send(protocol.encode_control("finish"))
    recv_until(ws, is_type("closed"))
    ws.close()


# -- memory and logs ---------------------------------------------------------------------------


def test_a_client_flooding_garbage_without_reading_holds_little_memory_and_log(own_server) -> None:
    """Unknown control types that used to come back 3x larger, and chunks of the wrong shape: the
    server's memory and its log stay small however much is sent, and the session lives on."""
    # Patience high, so that the flood is not cut short: this test is about memory and logs.
    server = own_server(FRAMECAST_MAX_REFUSED_IN_A_ROW="100000000", FRAMECAST_MAX_REFUSED_BYTES_IN_A_ROW=str(1 << 40))
    with httpx.Client(base_url=server.url, timeout=30) as api:
        victim = create(api, [VIDEO])
        bystander = create(api, [VIDEO])
        ws = never_reading(victim)
        ws.send(chunk(0, np.zeros((1, 3, 48, 64), np.uint8)))  # one good chunk: the client is "real"
        time.sleep(0.5)
        before, log_before = rss(server), len(server.log())
        # 4000 bytes of type, ~12 KB once escaped into JSON; 34-byte chunks whose header is cut
        # short (each one used to make a log line); and 1 MiB chunks of the wrong shape.
        unknown = json.dumps({"type": "\u00e9" * 2000}, ensure_ascii=False)
        truncated = b"FC\x01\x01" + bytes(30)
        wrong_shape = chunk(1, np.zeros((40, 3, 96, 91), np.uint8))  # 1 MiB, height 96 where 48 is due
        sent = 0
        with PeakRss(server) as peak:
            for i in range(24_000):
                ws.send(unknown)
                ws.send(truncated)
                sent += len(unknown.encode()) + len(truncated)
                if i % 200 == 0:
                    ws.send(wrong_shape)
                    sent += len(wrong_shape)
        assert sent > 200 * MiB
        log_growth = len(server.log()) - log_before
        assert peak.peak - before < 96 * MiB, f"server RSS grew by {(peak.peak - before) / MiB:.0f} MiB"
        assert log_growth < 64 * 1024, f"the log grew by {log_growth} bytes:\n{server.log()[-3000:]}"

        # The client reads at last: refusals, a few answered one by one and the rest summarized.
        ws.send(chunk(2, np.zeros((1, 3, 48, 64), np.uint8)))
        got = recv_until(ws, is_ack(2), timeout=60)
        errors = [m for m in got if isinstance(m, dict) and m["type"] == "error"]
        assert 0 < len(errors) < 48_000 // 10
        assert any(e["code"] == "refused_more" and "more messages refused" in e["message"] for e in errors)
        unknown_replies = [e for e in errors if "unknown control message type" in e["message"]]
        assert unknown_replies and all(len(e["message"]) < 300 for e in unknown_replies), unknown_replies[:1]
        assert state_of(server, victim["id"]) == "streaming"
        stream_one(bystander)
        ws.send(protocol.encode_control("finish"))
        recv_until(ws, is_type("closed"))
        ws.close()


def test_a_finished_sessions_buffers_are_freed(own_server) -> None:
    """A client-side destination whose client never reads its output, then goes: the session
    finalizes and, once no client can come back for it, the server lets go of the output."""
    server = own_server(FRAMECAST_RESUME_TIMEOUT="1")
    big = {"type": "video", "frame_rate": 30, "width": 640, "height": 480, "encoder": "ffv1"}
    with httpx.Client(base_url=server.url, timeout=30) as api:
        created = create(api, [big], {"type": "client"}, format="matroska")
        before = rss(server)
        ws = never_reading(created)
        frames = np.random.default_rng(1).integers(0, 255, (4, 3, 480, 640), np.uint8)
        for seq in range(12):  # 48 frames of noise, losslessly: ~44 MiB of output the client never reads
            ws.send(chunk(seq, frames))
        wait_for(lambda: rss(server) - before > 32 * MiB, 60, "the output to pile up in the server")
        held = rss(server)
        ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a word, its output unread
        wait_for(lambda: state_of(server, created["id"]) == "closed", 60, "the session to finalize")
        wait_for(
            lambda: rss(server) < before + (held - before) / 2,
            30,
            f"the server to release the output (held {(held - before) / MiB:.0f} MiB more than before)",
        )


# -- connections that only send garbage -----------------------------------------------------------


def test_a_connection_sending_only_garbage_is_closed_and_the_session_survives(own_server) -> None:
    server = own_server(FRAMECAST_MAX_REFUSED_IN_A_ROW="30")
    with httpx.Client(base_url=server.url, timeout=30) as api:
        created = create(api, [VIDEO])
        ws = open_ws(created)
        ws.send(chunk(0, np.zeros((1, 3, 48, 64), np.uint8)))
        recv_until(ws, is_ack(0))
        for i in range(40):
            ws.send(b"garbage" if i % 2 else '{"type": "dance"}')
        code, reason, _ = closed_with(ws)
        assert code == 1008 and reason == "31 messages in a row refused, nothing valid in between", (code, reason)
        assert state_of(server, created["id"]) == "streaming"
        assert "closing the connection: 31 messages in a row refused" in server.log()
        again = open_ws(created)  # the session survives: a client may reconnect
        recv_until(again, is_ack(0))  # the latest ACK, repeated on reconnect
        again.send(chunk(1, np.zeros((1, 3, 48, 64), np.uint8)))
        recv_until(again, is_ack(1))
        again.send(protocol.encode_control("finish"))
        assert recv_until(again, is_type("closed"))[-1]["session"]["streams"][0]["counters"]["chunks"] == 2
        again.close()


def test_a_deeply_nested_text_frame_gets_an_error_not_a_dropped_socket(api) -> None:
    created = create(api, [VIDEO])
    ws = open_ws(created)
    ws.send("[" * 4000)  # deeper than Python's recursion limit, shorter than the length limit
    error = recv_until(ws, is_type("error"))[-1]
    assert (error["code"], error["seq"]) == ("invalid_message", None)
    assert error["message"] == "control message is not valid JSON: nested too deeply"
    ws.send("{" * 100_000)
    error = recv_until(ws, is_type("error"))[-1]
    assert error["message"] == "control message is 100000 characters long; at most 4096 are taken"
    ws.send(chunk(0, np.zeros((1, 3, 48, 64), np.uint8)))  # the connection lives on
    recv_until(ws, is_ack(0))
    ws.send(protocol.encode_control("finish"))
    recv_until(ws, is_type("closed"))
    ws.close()


def test_a_seq_below_the_last_is_answered_with_the_latest_ack(api) -> None:
    created = create(api, [VIDEO])
    ws = open_ws(created)
    frames = np.zeros((1, 3, 48, 64), np.uint8)
    ws.send(chunk(0, frames))
    ws.send(chunk(1, frames))
    recv_until(ws, is_ack(1))
    ws.send(chunk(0, frames))  # a resend of a chunk already written: nothing written, the ACK repeated
    got = recv_until(ws, lambda m: isinstance(m, (bytes, dict)), timeout=10)
    assert got == [protocol.encode_ack(1)], got
    ws.send(protocol.encode_control("finish"))
    summary = recv_until(ws, is_type("closed"))[-1]["session"]
    assert summary["streams"][0]["counters"]["chunks"] == 2
    ws.close()


# -- server-side paths ---------------------------------------------------------------------------


def refusal(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["field"], error["message"]


def file_config(path: str, **destination: Any) -> dict[str, Any]:
    """A video session writing the server file ``path``, with ``destination`` fields beside it."""
    return {"destination": {"type": "server_file", "path": path, **destination}, "streams": [VIDEO]}


def test_a_path_belongs_to_one_session_at_a_time(api, server) -> None:
    config = file_config("abuse/same.mkv")
    first = api.post("/v1/sessions", json=config).json()
    response = api.post("/v1/sessions", json=config)
    status, field, message = refusal(response)
    assert (status, field, response.json()["error"]["code"]) == (409, "destination.path", "path_in_use")
    assert message == (
        f"destination.path: 'abuse/same.mkv' is being written by another open session "
        f"({first['id']}); choose another path"
    )
    stream_one(first)
    written = (server.output_dir / "abuse" / "same.mkv").read_bytes()
    again = api.post("/v1/sessions", json=config)  # finished, and the same key's: replaced only when asked
    assert (*refusal(again), again.json()["error"]["code"]) == (
        422,
        "destination.path",
        "destination.path: 'abuse/same.mkv' exists; choose another path, or set overwrite to true to replace it",
        "path_exists",
    )
    assert (server.output_dir / "abuse" / "same.mkv").read_bytes() == written
    again = api.post("/v1/sessions", json=file_config("abuse/same.mkv", overwrite=True))
    assert again.status_code == 201, again.text
    api.delete(f"/v1/sessions/{again.json()['id']}")


def test_a_finished_file_of_one_key_is_not_replaced_by_another(own_server) -> None:
    server = own_server(FRAMECAST_API_KEYS="key-one-5d1e,key-two-90ab")
    one, two = ({"Authorization": f"Bearer {key}"} for key in ("key-one-5d1e", "key-two-90ab"))
    config, replace = file_config("mine.mkv"), file_config("mine.mkv", overwrite=True)
    created = httpx.post(server.url + "/v1/sessions", json=config, headers=one, timeout=30).json()
    stream_one(created)
    written = (server.output_dir / "mine.mkv").read_bytes()
    for asked in (config, replace):  # overwrite never reaches another key's file
        status, field, message = refusal(httpx.post(server.url + "/v1/sessions", json=asked, headers=two, timeout=30))
        assert (status, field) == (409, "destination.path") and "another API key's session" in message
    assert (server.output_dir / "mine.mkv").read_bytes() == written
    mine_again = httpx.post(server.url + "/v1/sessions", json=config, headers=one, timeout=30)
    assert mine_again.status_code == 422 and mine_again.json()["error"]["code"] == "path_exists"
    mine_again = httpx.post(server.url + "/v1/sessions", json=replace, headers=one, timeout=30)
    assert mine_again.status_code == 201, mine_again.text


@pytest.mark.parametrize("overwrite", [None, False])
def test_a_file_from_before_is_left_alone_unless_the_config_says_overwrite(api, server, overwrite) -> None:
    old = server.output_dir / "abuse" / f"kept-{overwrite}.mkv"
    old.parent.mkdir(exist_ok=True)
    old.write_bytes(b"old content " * 1000)
    destination = {"type": "server_file", "path": f"abuse/kept-{overwrite}.mkv", "overwrite": overwrite}
    response = api.post("/v1/sessions", json={"destination": destination, "streams": [VIDEO]})
    assert refusal(response)[:2] == (422, "destination.path") and response.json()["error"]["code"] == "path_exists"
    assert old.read_bytes() == b"old content " * 1000
    assert sorted(p.name for p in old.parent.iterdir() if p.name.startswith(old.stem)) == [
        old.name
    ]  # nothing beside it


def test_a_file_from_before_is_replaced_by_a_new_inode(api, server) -> None:
    """A file no remembered session wrote (an earlier run's), with overwrite: replaced, not
    written into, so a reader of the old file keeps it whole."""
    old = server.output_dir / "abuse" / "before.mkv"
    old.parent.mkdir(exist_ok=True)
    old.write_bytes(b"old content " * 1000)
    with open(old, "rb") as reader:
        created = create(api, [VIDEO], {"type": "server_file", "path": "abuse/before.mkv", "overwrite": True})
        stream_one(created)
        assert reader.read() == b"old content " * 1000
    assert old.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # a Matroska file now


@pytest.mark.parametrize("path", [".", "./", "abuse/."])
def test_a_path_naming_no_file_is_422(api, server, path) -> None:
    (server.output_dir / "abuse").mkdir(exist_ok=True)
    response = api.post("/v1/sessions", json={"destination": {"type": "server_file", "path": path}, "streams": [VIDEO]})
    status, field, _ = refusal(response)
    assert (status, field) == (422, "destination.path"), response.text


def test_a_fifo_in_the_output_dir_is_refused_at_once(api, server) -> None:
    fifo = server.output_dir / "abuse" / "pipe.mkv"
    fifo.parent.mkdir(exist_ok=True)
    os.mkfifo(fifo)
    response = api.post(
        "/v1/sessions",
        json={"destination": {"type": "server_file", "path": "abuse/pipe.mkv"}, "streams": [VIDEO]},
        timeout=10,
    )
    assert refusal(response) == (
        422,
        "destination.path",
        "destination.path: 'abuse/pipe.mkv' exists and is a FIFO; only a regular file can be replaced",
    )


# -- slow and idle connections -----------------------------------------------------------------


@pytest.fixture
def partial_requests() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for s in sockets:
        s.close()


def test_slow_and_idle_connections_are_bounded_and_time_out(own_server, partial_requests) -> None:
    server = own_server(FRAMECAST_MAX_CONNECTIONS="50", FRAMECAST_HEADER_TIMEOUT="2")
    fds_before = psutil.Process(server.proc.pid).num_fds()
    for i in range(300):  # more than the server takes: a slowloris client
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if i % 2 == 0:  # half start a request and never finish its headers, half send nothing
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        partial_requests.append(s)
    time.sleep(0.5)  # (the server accepts them as it gets to them)
    held = psutil.Process(server.proc.pid).num_fds() - fds_before
    assert held <= 50 + 10, f"the server holds {held} more descriptors with 300 partial requests open"

    # The first partial request, one the server took, is closed once its headers are late.
    first = partial_requests[0]
    first.settimeout(30)
    assert first.recv(1024) == b"", "a request whose headers never end was answered instead of closed"
    # And the server answers others (once the stalled connections are gone, if not before).
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(server.url + "/healthz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "/healthz did not answer while slow clients held connections"
        time.sleep(0.2)


# -- shared memory -------------------------------------------------------------------------------


def test_shared_memory_is_budgeted_and_sessions_never_connected_expire(own_server) -> None:
    server = own_server(FRAMECAST_SHARED_MEMORY_TOTAL_BYTES=str(40 * MiB), FRAMECAST_CONNECT_GRACE="2")
    with httpx.Client(base_url=server.url, timeout=30) as api:
        created = [create(api, [VIDEO], shared_memory=True) for _ in range(3)]
        segments = [c["shared_memory"] for c in created]
        assert [s is not None for s in segments] == [True, True, False]  # 16 MiB each, 40 MiB in all
        assert all(os.path.exists(os.path.join(SHM, s["name"])) for s in segments[:2])
        connected = create(api, [VIDEO])
        ws = open_ws(connected)  # a client that connects within the grace keeps its session
        wait_for(
            lambda: all(state_of(server, c["id"]) == "closed" for c in created),
            30,
            "the never-connected sessions to finalize",
        )
        events = api.get(f"/v1/sessions/{created[0]['id']}").json()["events"]
        assert any(e["event"] == "idle" and e.get("never_connected") for e in events), events
        assert not any(os.path.exists(os.path.join(SHM, s["name"])) for s in segments[:2])
        assert state_of(server, connected["id"]) == "streaming"
        assert create(api, [VIDEO], shared_memory=True)["shared_memory"] is not None  # the budget is back
        ws.send(protocol.encode_control("finish"))
        recv_until(ws, is_type("closed"))
        ws.close()


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_the_header_deadline_and_the_connection_cap_hold_with_either_parser(parser: str) -> None:
    """connections.py hooks into uvicorn's protocol classes (``on_headers_complete`` for httptools,
    ``handle_events`` and h11's states for h11, ``on_response_complete``, ``connections``): an
    uvicorn upgrade that changes them fails here, for both parsers, not in production."""
    import uvicorn

    from framecast_server.api.connections import limited_protocol

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        await asyncio.sleep(1.0)  # longer than the header deadline: a request under way is not cut
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def read_all(reader: asyncio.StreamReader) -> bytes:
        try:
            return await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:  # closed as it was accepted: a reset, not a FIN
            return b""

    async def main() -> None:
        sock = socket.create_server(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        limited = limited_protocol(0.5, 4, parser)  # type: ignore[arg-type]
        server = uvicorn.Server(uvicorn.Config(app, http=limited, lifespan="off", log_level="warning"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
            held[0][1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers begun, never ended
            # Two connections over the cap are closed at once; the four taken, once their headers are late.
            assert [await read_all(reader) for reader, _ in held] == [b""] * 6
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.readuntil(b"ok"), 10)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            # Kept alive after the response: the next request's headers are due in time too.
            assert await read_all(reader) == b""
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 10)

    asyncio.run(main())
