"""``WriterCore``, the writers' state without sockets: messages in, messages out.

Like python-websockets' test_protocol.py, every test feeds the core server messages built with
the protocol's own encoders (``encode_ack``, ``encode_output_header``, ``encode_control``) and
checks what it decides: the CHUNK bytes it produces, how much it lets be in flight before the
writer must wait, what a new connection sends again, which errors the next call raises, and the
bytes it writes (and seeks) into a local destination. No server, no sockets, no threads.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import numpy as np
import pytest

from framecast import protocol, writer_base
from framecast.errors import InvalidChunk, InvalidConfig, ProtocolError, SessionFailed, StateError, TransportError
from framecast.streams import AudioStream, Discard, ServerFile, VideoStream
from framecast.writer_base import FramecastWarning, Message, WriterCore, WriterState

FRAME_BYTES = 3 * 4 * 4  # one rgb24 frame of the 4x4 test stream
HEADER_ROOM = 64 + 4 * 4  # what chunk_messages keeps free in a message for a 4-d chunk's header


def frames(count: int, start: int = 0) -> np.ndarray:
    """``count`` 4x4 rgb24 frames whose bytes differ from frame to frame (and from other calls)."""
    values = np.arange(start * FRAME_BYTES, (start + count) * FRAME_BYTES) % 251
    return values.astype(np.uint8).reshape(count, 3, 4, 4)


def opened_core(
    dst: Any = None, *, realtime: bool = False, frames_per_message: int | None = None, audio: bool = False
) -> WriterCore:
    """A core with a 30 fps 4x4 video stream (and a 1 kHz mono audio stream), opened as the server
    would answer POST /v1/sessions."""
    core = WriterCore(Discard() if dst is None else dst, "mp4")
    core.add_stream(VideoStream(30, 4, 4))
    if audio:
        core.add_stream(AudioStream(1000, 1))
    created: dict[str, Any] = {"id": "r0.core", "realtime": realtime}
    if frames_per_message is not None:
        created["max_message_bytes"] = HEADER_ROOM + frames_per_message * FRAME_BYTES
    core.opened(created)
    return core


def wire(fragments: bytes | list[bytes | memoryview] | str) -> bytes | str:
    """The websocket message a writer sends for ``fragments`` (header and payload joined)."""
    if isinstance(fragments, (bytes, str)):
        return fragments
    return b"".join(bytes(f) for f in fragments)


def send_all(core: WriterCore, messages: list[Message]) -> list[bytes | str]:
    return [wire(core.sending(m)) for m in messages]


def binary(message: bytes | str) -> bytes:
    """A websocket message that must be binary (a CHUNK)."""
    assert isinstance(message, bytes), message
    return message


def resent(core: WriterCore) -> list[bytes | str]:
    """What a new connection sends first, as websocket messages."""
    return [wire(m) for m in core.resend()]


def output(index: int, offset: int, data: bytes) -> bytes:
    return protocol.encode_output_header(index, offset) + data


# -- CHUNK messages ---------------------------------------------------------------------------


def test_a_chunk_becomes_one_chunk_message_byte_for_byte() -> None:
    core = opened_core()
    video = frames(2)
    [message] = core.chunk_messages(0, video, 1.5, "video")
    header, payload = protocol.encode_chunk(0, 0, video, 1.5)
    assert (message.seq, message.header, bytes(message.payload)) == (0, header, bytes(payload))
    assert message.seconds == pytest.approx(2 / 30)
    assert wire(core.sending(message)) == header + video.tobytes()


def test_a_chunk_too_big_for_one_message_is_split_with_consecutive_seqs_and_pts() -> None:
    core = opened_core(frames_per_message=3)
    video = frames(10)
    messages = core.chunk_messages(0, video, 2.0, "video")
    sent = [protocol.parse_chunk(binary(m)) for m in send_all(core, messages)]
    assert [h.seq for h, _ in sent] == [0, 1, 2, 3]
    assert [h.shape[0] for h, _ in sent] == [3, 3, 3, 1]
    assert [h.pts for h, _ in sent] == pytest.approx([2.0, 2.1, 2.2, 2.3])
    joined = np.concatenate([protocol.chunk_array(h, p) for h, p in sent])
    assert np.array_equal(joined, video)
    # The next chunk goes on from the next seq; without pts, none is sent.
    [after] = core.chunk_messages(0, frames(1), None, "video")
    header = protocol.parse_chunk_header(after.header)
    assert (header.seq, header.pts) == (4, None)


def test_a_realtime_session_sends_quarter_second_pieces() -> None:
    core = opened_core(realtime=True)
    messages = core.chunk_messages(0, frames(30), None, "video")  # one second at 30 fps
    assert [protocol.parse_chunk_header(m.header).shape[0] for m in messages] == [7, 7, 7, 7, 2]
    assert sum(m.seconds for m in messages) == pytest.approx(1.0)


def test_a_frame_larger_than_a_message_is_refused_before_anything_is_sent() -> None:
    core = opened_core(frames_per_message=0)
    with pytest.raises(InvalidChunk, match="one frame is 48 bytes, more than the server's message limit of 0"):
        core.chunk_messages(0, frames(1), None, "video")
    assert core.flushed


@pytest.mark.parametrize(
    ("index", "chunk", "kind", "error"),
    [
        (1, frames(1), "video", r"stream index 1 does not exist; this writer has streams 0..0"),
        (0, frames(1), "audio", r"stream 0 is a video stream; use write_video_chunk"),
        (0, frames(1)[:, :2], "video", r"stream 0 \(video\) expects shape \(frames, 3, 4, 4\), got \(1, 2, 4, 4\)"),
        (0, frames(1).astype(np.float32), "video", r"expects dtype uint8, got float32"),
    ],
)
def test_a_wrong_chunk_is_refused_locally_and_uses_no_seq(index: int, chunk: np.ndarray, kind: str, error: str) -> None:
    core = opened_core()
    with pytest.raises(InvalidChunk, match=error):
        core.chunk_messages(index, chunk, None, kind)
    [message] = core.chunk_messages(0, frames(1), None, "video")
    assert message.seq == 0


def test_calls_the_state_does_not_allow() -> None:
    core = WriterCore(Discard(), None)
    with pytest.raises(StateError, match=r"^cannot write a video chunk: call open\(\) first$"):
        core.chunk_messages(0, frames(1), None, "video")
    with pytest.raises(StateError, match=r"^cannot open: add at least one stream first"):
        core.session_config(None)
    core.add_stream(VideoStream(30, 4, 4))
    assert core.session_config({"movflags": "faststart"})["options"] == {"movflags": "faststart"}
    core.opened({"id": "r0.core"})
    with pytest.raises(StateError, match=r"^cannot add a stream: the writer is already open$"):
        core.add_stream(VideoStream(30, 4, 4))
    with pytest.raises(StateError, match=r"^cannot set metadata: the writer is already open$"):
        core.set_metadata({"title": "x"})
    assert core.begin_close() is True and core.state is WriterState.CLOSING
    with pytest.raises(StateError, match=r"^cannot write a video chunk: the writer is closing$"):
        core.chunk_messages(0, frames(1), None, "video")
    assert core.begin_close() is False  # closing twice sends finish once


def test_closing_a_writer_never_opened_needs_no_server() -> None:
    core = WriterCore(Discard(), None)
    assert core.begin_close() is False
    assert core.state is WriterState.CLOSED and core.done


# -- the window (flow control) ----------------------------------------------------------------


def test_acks_are_cumulative_and_empty_the_window() -> None:
    core = opened_core(frames_per_message=1)
    send_all(core, core.chunk_messages(0, frames(5), None, "video"))
    assert not core.flushed
    core.handle(protocol.encode_ack(2))
    assert [protocol.parse_chunk_header(binary(wire(m))).seq for m in core.resend()] == [3, 4]
    core.handle(protocol.encode_ack(1))  # an older ACK (repeated after a reconnect) changes nothing
    assert len(resent(core)) == 2
    core.handle(protocol.encode_ack(4))
    assert core.flushed and resent(core) == []


def test_the_window_closes_past_the_unacknowledged_byte_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_base, "MAX_UNACKED_BYTES", 3 * FRAME_BYTES)
    core = opened_core(frames_per_message=1)
    messages = core.chunk_messages(0, frames(6), None, "video")
    sent = 0
    while core.window_open(messages[sent]):
        core.sending(messages[sent])
        sent += 1
    # At the limit another message may go (the window is a bound on what is pending, not on
    # what it would become); one byte past it, none.
    assert sent == 4
    core.handle(protocol.encode_ack(0))
    assert core.window_open(messages[4])
    core.sending(messages[4])
    assert not core.window_open(messages[5])
    core.handle(protocol.encode_ack(4))
    assert core.window_open(messages[5])


def test_a_message_larger_than_the_window_goes_when_nothing_is_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_base, "MAX_UNACKED_BYTES", FRAME_BYTES // 2)
    core = opened_core()
    [message] = core.chunk_messages(0, frames(4), None, "video")
    assert core.window_open(message)  # else the writer would wait for an ACK that cannot come
    core.sending(message)
    assert not core.window_open()


def test_a_realtime_window_holds_about_one_second_of_media_across_streams() -> None:
    core = opened_core(realtime=True, audio=True)
    video = core.chunk_messages(0, frames(30), None, "video")  # 4 x 7/30 s + 2/30 s
    audio = core.chunk_messages(1, np.zeros((500, 1), np.float32), None, "audio")  # 2 x 0.25 s
    assert [m.seconds for m in audio] == pytest.approx([0.25, 0.25])
    for message in video[:4]:  # 28/30 s in flight: under a second
        assert core.window_open(message)
        core.sending(message)
    assert core.window_open(audio[0])
    core.sending(audio[0])  # 28/30 + 1/4 s: over a second
    assert not core.window_open(audio[1]) and not core.window_open(video[4])
    core.handle(protocol.encode_ack(0))  # the first 7 frames: 21/30 + 1/4 s
    assert core.window_open(video[4])


def test_the_window_does_not_bound_a_session_that_is_not_realtime() -> None:
    core = opened_core()
    for _ in range(50):  # 50 s of media, a few KB
        [message] = core.chunk_messages(0, frames(30), None, "video")
        assert core.window_open(message)
        core.sending(message)


def test_a_finished_session_never_makes_the_writer_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_base, "MAX_UNACKED_BYTES", 0)
    core = opened_core()
    core.sending(core.chunk_messages(0, frames(2), None, "video")[0])
    assert not core.window_open() and not core.flushed
    core.handle(protocol.encode_control(protocol.CLOSED, session={"frames": 2}))
    assert core.window_open() and core.flushed and core.done
    assert core.summary == {"frames": 2}


# -- after a reconnect -------------------------------------------------------------------------


def test_a_new_connection_resends_what_is_unacknowledged_in_order_with_the_same_seqs() -> None:
    core = opened_core(frames_per_message=2)
    first = send_all(core, core.chunk_messages(0, frames(6), 0.0, "video"))  # seqs 0, 1, 2
    second = send_all(core, core.chunk_messages(0, frames(2, start=6), None, "video"))  # seq 3
    core.handle(protocol.encode_ack(0))
    assert resent(core) == first[1:] + second
    assert resent(core) == first[1:] + second  # a failed reconnect attempt loses nothing


def test_a_resend_carries_the_bytes_written_even_after_the_caller_reused_its_array() -> None:
    core = opened_core()
    video = frames(2)
    expected = send_all(core, core.chunk_messages(0, video, None, "video"))
    core.retain()  # the write returns
    video[:] = 0  # the caller fills its buffer with the next frames
    assert resent(core) == expected


def test_without_retain_the_pending_message_borrows_the_callers_memory() -> None:
    # Why retain() exists: the message in flight is a view of the caller's array.
    core = opened_core()
    video = frames(2)
    expected = send_all(core, core.chunk_messages(0, video, None, "video"))
    video[:] = 0
    assert resent(core) != expected


def test_payloads_the_writer_made_are_kept_without_a_copy() -> None:
    """Frames converted to yuv420p (or compressed) are the writer's own memory: kept for a resend
    as they are, and the caller reusing its array changes nothing."""
    core = opened_core()
    core.opened({"id": "r0.core", "streams": [{"config": {"wire_format": "yuv420p"}}]})
    video = frames(2)
    expected = send_all(core, core.chunk_messages(0, video, None, "video"))
    kept = [m.payload for m in core._pending.values()]
    core.retain()
    assert [m.payload for m in core._pending.values()] == kept  # no copy made
    assert all(m.payload.obj is k.obj for m, k in zip(core._pending.values(), kept))
    video[:] = 0
    assert resent(core) == expected


def test_a_closing_writer_sends_finish_again_after_the_chunks() -> None:
    core = opened_core()
    sent = send_all(core, core.chunk_messages(0, frames(1), None, "video"))
    assert core.begin_close()
    assert core.finish_message() == protocol.encode_control(protocol.FINISH)
    assert resent(core) == [*sent, protocol.encode_control(protocol.FINISH)]


def test_a_refused_chunk_is_not_resent() -> None:
    core = opened_core(frames_per_message=1)
    sent = send_all(core, core.chunk_messages(0, frames(3), None, "video"))
    core.handle(protocol.encode_control(protocol.ERROR, seq=1, message="pts went backwards"))
    assert resent(core) == [sent[0], sent[2]]


@pytest.mark.parametrize(
    ("code", "reconnect", "expected"),
    [
        (1006, True, None),
        (1011, True, None),
        (None, True, None),
        (4401, True, "the server refused the stream token"),
        (4404, True, "session failed: the server no longer has this session"),
        (1006, False, "the connection to the framecast server closed unexpectedly"),
    ],
)
def test_which_lost_connections_are_worth_a_reconnect(code: int | None, reconnect: bool, expected: str | None) -> None:
    error = opened_core().lost_connection(code, reconnect)
    if expected is None:
        assert error is None
    else:
        kind = SessionFailed if code == 4404 else TransportError  # 4404: nothing more will be written
        assert isinstance(error, kind) and str(error).startswith(expected), error


# -- errors the server reports -----------------------------------------------------------------


def test_a_refused_chunk_is_raised_by_the_next_call_once() -> None:
    core = opened_core(frames_per_message=1)
    send_all(core, core.chunk_messages(0, frames(3), None, "video"))
    core.handle(protocol.encode_control(protocol.ERROR, seq=1, message="chunk 1 refused: pts went backwards"))
    core.handle(protocol.encode_control(protocol.ERROR, seq=2, message="chunk 2 refused"))
    with pytest.raises(InvalidChunk, match="^chunk 1 refused: pts went backwards$") as info:
        core.chunk_messages(0, frames(1), None, "video")
    assert info.value.seq == 1
    with pytest.raises(InvalidChunk) as info:
        core.raise_pending()
    assert info.value.seq == 2
    core.raise_pending()  # each error is raised once
    core.handle(protocol.encode_ack(0))
    assert core.flushed  # the refused chunks are no longer waited for


def test_an_error_without_a_seq_is_raised_too() -> None:
    core = opened_core()
    core.handle(protocol.encode_control(protocol.ERROR, message="control message refused"))
    with pytest.raises(InvalidChunk, match="control message refused") as info:
        core.raise_pending()
    assert info.value.seq is None


def test_a_failed_session_raises_its_reason_on_every_call_after() -> None:
    core = opened_core()
    send_all(core, core.chunk_messages(0, frames(2), None, "video"))
    core.handle(protocol.encode_control(protocol.ERROR, seq=0, message="refused"))
    core.handle(protocol.encode_control(protocol.FAILED, reason="Broken pipe (rtmp)"))
    assert core.state is WriterState.FAILED and core.flushed and resent(core) == []
    for _ in range(2):  # the failure, not the earlier chunk error: it is the cause of what follows
        with pytest.raises(SessionFailed, match=r"^session failed: Broken pipe \(rtmp\)$") as info:
            core.chunk_messages(0, frames(1), None, "video")
        assert info.value.reason == "Broken pipe (rtmp)"


def test_events_warnings_and_unknown_controls() -> None:
    core = opened_core()
    seen: list[dict[str, Any]] = []
    core.on_event = seen.append
    for attempt in range(writer_base.MAX_EVENTS + 5):
        core.handle(protocol.encode_control(protocol.EVENT, event="reconnecting", attempt=attempt))
    assert len(seen) == writer_base.MAX_EVENTS + 5
    assert len(core.events) == writer_base.MAX_EVENTS and core.events[0] == {"event": "reconnecting", "attempt": 5}
    with pytest.warns(FramecastWarning, match="unused option 'preset'"):
        core.handle(protocol.encode_control(protocol.WARNING, message="unused option 'preset'"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        core.handle(protocol.encode_control("from_a_newer_server", detail=1))
    assert core.state is WriterState.OPEN


def test_a_malformed_server_message_is_a_protocol_error() -> None:
    core = opened_core()
    with pytest.raises(ProtocolError):
        core.handle(b"XX\x01\x02" + bytes(12))
    with pytest.raises(ProtocolError):
        core.handle("not json")


# -- a local destination: OUTPUT messages ------------------------------------------------------


def test_output_messages_are_written_at_their_offsets_including_a_header_patch() -> None:
    dst = io.BytesIO()
    core = opened_core(dst)
    core.handle(output(0, 0, b"ftyp----"))
    core.handle(output(1, 8, b"mdat-data"))
    core.handle(output(2, 4, b"SIZE"))  # back to the header, as a muxer does on close
    core.handle(output(3, 17, b"moov"))  # and on from the end again
    assert dst.getvalue() == b"ftypSIZEmdat-datamoov"


def test_outputs_repeated_after_a_rewind_are_applied_exactly_once() -> None:
    dst = io.BytesIO()
    core = opened_core(dst)
    core.handle(output(0, 0, b"AAAA"))
    core.handle(output(1, 4, b"BBBB"))
    core.handle(output(2, 0, b"aa"))
    # The connection dropped before the server saw a confirmation: it repeats all three.
    core.handle(output(0, 0, b"AAAA"))
    core.handle(output(1, 4, b"BBBB"))
    core.handle(output(2, 0, b"aa"))
    core.handle(output(3, 8, b"CC"))
    assert dst.getvalue() == b"aaAABBBBCC"


def test_an_output_out_of_order_is_a_protocol_error() -> None:
    core = opened_core(io.BytesIO())
    core.handle(output(0, 0, b"A"))
    with pytest.raises(ProtocolError, match="^output message 2 arrived before 1$"):
        core.handle(output(2, 1, b"C"))


def test_applied_outputs_are_confirmed_every_sixteen_newest_only() -> None:
    core = opened_core(io.BytesIO())
    for index in range(writer_base.OUTPUT_ACK_EVERY - 1):
        core.handle(output(index, index, b"x"))
    assert core.take_outgoing() == []
    core.handle(output(15, 15, b"x"))
    for index in range(16, 32):
        core.handle(output(index, index, b"x"))
    assert core.take_outgoing() == [protocol.encode_control(protocol.OUTPUT_ACK, index=31)]
    assert core.take_outgoing() == []


def test_a_non_seekable_destination_starts_where_the_server_does_and_cannot_go_back() -> None:
    class Pipe:  # write() only, as a socket or a pipe wrapper
        def __init__(self) -> None:
            self.data = b""

        def write(self, data: memoryview) -> int:
            self.data += bytes(data)
            return len(data)

    pipe = Pipe()
    core = opened_core(pipe)
    assert core.destination == {"type": "client", "filename": None, "seekable": False}
    core.handle(output(0, 100, b"TS-packet-1"))
    core.handle(output(1, 111, b"TS-packet-2"))
    assert pipe.data == b"TS-packet-1TS-packet-2"
    with pytest.raises(ProtocolError, match="^server wrote at offset 0 but the destination cannot seek"):
        core.handle(output(2, 0, b"patch"))


def test_a_pipe_takes_the_output_without_a_seek() -> None:
    # A pipe's file object has seek(), which fails: only seekable() tells (e.g. sys.stdout.buffer
    # piped into a player).
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as pipe:
        core = opened_core(pipe)
        assert core.destination["seekable"] is False
        core.handle(output(0, 0, b"TS-packet-1"))
        core.handle(output(1, 11, b"TS-packet-2"))
        pipe.flush()
        assert reader.read(22) == b"TS-packet-1TS-packet-2"


def test_a_short_write_is_continued() -> None:
    class Trickle(io.RawIOBase):  # writes at most 3 bytes a call, as a non-blocking raw file may
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            self.data += bytes(data[:3])
            return min(3, len(data))

    sink = Trickle()
    core = opened_core(sink)
    core.handle(output(0, 0, b"0123456789"))
    assert bytes(sink.data) == b"0123456789"


def test_a_destination_that_refuses_a_write_fails_the_writer_as_a_transport_error(tmp_path: Any) -> None:
    class Full(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    core = opened_core(Full())
    with pytest.raises(TransportError, match="writing the output locally failed: .*No space left on device"):
        core.handle(output(0, 0, b"x"))


def test_a_local_path_is_opened_at_open_and_closed_at_release(tmp_path: Any) -> None:
    path = tmp_path / "out.mp4"
    core = opened_core(str(path))
    assert core.session_config is not None and path.exists()
    core.handle(output(0, 0, b"ftyp"))
    core.handle(output(1, 4, b"moov"))
    core.handle(output(2, 0, b"FTYP"))
    core.release()
    assert path.read_bytes() == b"FTYPmoov"


def test_output_for_a_server_side_destination_is_a_protocol_error() -> None:
    core = opened_core(ServerFile("out.mp4"))
    with pytest.raises(ProtocolError, match="server sent output bytes for a destination that lives on the server"):
        core.handle(output(0, 0, b"x"))
    with pytest.raises(StateError, match=r"download\(\) needs a closed writer"):
        core.download_path()
    core.handle(protocol.encode_control(protocol.CLOSED, session={}))
    assert core.download_path() == "/v1/sessions/r0.core/output"


# -- event hooks -------------------------------------------------------------------------------


class FakeClock:
    """A clock that ticks one second per reading."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_send_and_ack_hooks_get_seq_stream_seconds_and_time() -> None:
    core = WriterCore(Discard(), None, clock=FakeClock())
    core.add_stream(VideoStream(30, 4, 4))
    core.add_stream(AudioStream(1000, 1))
    core.opened({"id": "r0.core", "max_message_bytes": HEADER_ROOM + 2 * FRAME_BYTES})
    sent: list[tuple[object, ...]] = []  # (seq, stream, seconds, time), compared with pytest.approx
    acked: list[tuple[int, float]] = []
    core.hooks["send"].append(lambda *args: sent.append(args))
    core.hooks["ack"].append(lambda *args: acked.append(args))
    send_all(core, core.chunk_messages(0, frames(3), None, "video"))  # seqs 0, 1
    send_all(core, core.chunk_messages(1, np.zeros((24, 1), np.float32), None, "audio"))  # seq 2, 96 bytes
    assert sent == [
        (0, 0, pytest.approx(2 / 30), 101.0),
        (1, 0, pytest.approx(1 / 30), 102.0),
        (2, 1, pytest.approx(0.024), 103.0),
    ]
    core.handle(protocol.encode_ack(1))
    core.resend()  # a reconnect: resending is not sending anew
    core.handle(protocol.encode_ack(1))  # the server re-ACKs after a reconnect: reported again
    core.handle(protocol.encode_ack(2))
    assert acked == [(1, 104.0), (1, 105.0), (2, 106.0)]
    assert len(sent) == 3


def test_every_hook_runs_in_order_and_none_costs_a_clock_reading() -> None:
    clock = FakeClock()
    core = WriterCore(Discard(), None, clock=clock)
    core.add_stream(VideoStream(30, 4, 4))
    core.opened({"id": "r0.core"})
    calls: list[str] = []
    core.hooks["ack"].extend(
        [lambda seq, t: calls.append(f"first {seq}"), lambda seq, t: calls.append(f"second {seq}")]
    )
    core.handle(protocol.encode_ack(7))
    assert calls == ["first 7", "second 7"]
    core.hooks["ack"].clear()
    before = clock.now
    core.handle(protocol.encode_ack(8))
    send_all(core, core.chunk_messages(0, frames(1), None, "video"))
    assert clock.now == before


@pytest.mark.parametrize(
    ("hooks", "error"),
    [
        ({"acks": [print]}, r"^unknown event hook 'acks'; the hooks are 'send', 'ack'$"),
        ({"ack": print}, r"^event_hooks\['ack'\] must be a list of callables \(seq, time\)$"),
        ({"send": [None]}, r"^event_hooks\['send'\] must be a list of callables \(seq, stream, seconds, time\)$"),
    ],
)
def test_hooks_that_cannot_work_are_refused(hooks: Any, error: str) -> None:
    with pytest.raises(InvalidConfig, match=error) as info:
        writer_base.checked_hooks(hooks)
    assert info.value.field == "event_hooks"


def test_the_hooks_a_writer_keeps_are_a_copy_with_every_name() -> None:
    mine = [print]
    hooks = writer_base.checked_hooks({"ack": mine})
    assert hooks == {"send": [], "ack": [print]}
    hooks["ack"].append(repr)
    assert mine == [print]
