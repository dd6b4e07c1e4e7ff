"""The vocabulary of the pipes between the server and an encoder process, and between an encoder
and its relays (``messages.py``).

Every record survives the trip as the pipe makes it (pickled by ``Connection.send``, or encoded
by the server's own framing), and the module holds every kind there is: a reader who opens it
finds the whole conversation.
"""

from __future__ import annotations

import inspect
import os
import pickle
import typing

import numpy as np
import pytest

from framecast import protocol
from framecast_server import messages
from framecast_server.messages import (
    IN_CLIENT_MEMORY,
    IN_RING,
    Ack,
    ChunkDescriptor,
    Finish,
    OutputStats,
    PacingStats,
    Stats,
    Stop,
    StreamStats,
    Watch,
    decode_from_encoder,
    decode_to_encoder,
    encode_chunk,
    encode_control,
    encode_from_encoder,
)
from framecast_server.unmasking import NO_MASK

STATS = Stats(
    (StreamStats(chunks=2, frames=50, packets=48, bytes=12345, seconds=2.0),),
    PacingStats(1.5, 2.0),
    (OutputStats(packets=48, bytes=12345, dropped=0, reconnects=1),),
)


def records() -> list[type]:
    return [
        cls
        for _, cls in inspect.getmembers(messages, inspect.isclass)
        if cls.__module__ == messages.__name__ and issubclass(cls, tuple)
    ]


def test_every_record_is_part_of_the_vocabulary() -> None:
    union = set(typing.get_args(messages.FromEncoder)) | set(typing.get_args(messages.ToEncoder))
    union |= set(typing.get_args(messages.ToRelay)) | set(typing.get_args(messages.FromRelay))
    counters = {StreamStats, PacingStats, OutputStats, Stats}
    assert set(records()) - counters - {messages.Assign, messages.RelayTarget} == union
    for cls in records():
        assert cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("), f"{cls.__name__} needs a docstring"


@pytest.mark.parametrize(
    "message",
    [
        messages.Ready(["a warning"]),
        messages.SetupFailed("no such encoder", "streams.0.encoder"),
        messages.Connected(0, []),
        messages.OutputBytes(42, b"\x00" * 10),
        messages.FREE,
        Ack(7, STATS),
        Ack(8, None),
        messages.Reconnecting(1, 1, "Broken pipe"),
        messages.Recovered(1, 3, 1.25),
        messages.Dropped(1, 0, 1, 19),
        messages.OutputFailed(2, "Connection refused"),
        messages.Preview({0: b"\xff\xd8"}, {1: [-20.0, -21.5]}),
        messages.Closed(STATS),
        messages.Stopped("stopped: quota", STATS),
        messages.Failed("encoder error"),
        messages.Exited(-9),
    ],
    ids=lambda m: type(m).__name__,
)
def test_records_from_the_encoder_survive_pickling(message: messages.FromEncoder) -> None:
    again = pickle.loads(pickle.dumps(message))
    assert type(again) is type(message) and again == message
    sent = decode_from_encoder(encode_from_encoder(message))  # as they cross the pipe
    assert type(sent) is type(message) and sent == message


@pytest.mark.parametrize("seq", [0, 1, 128, 2**40, 2**63 - 1])
def test_a_chunks_free_and_ack_cross_the_pipe_unpickled(seq: int) -> None:
    """The two messages of every chunk are a few bytes, not pickles; an Ack with stats is pickled."""
    assert encode_from_encoder(messages.FREE) == b"" and decode_from_encoder(b"") is messages.FREE
    data = encode_from_encoder(Ack(seq, None))
    assert len(data) == 9 and not data.startswith(pickle.PROTO)
    assert decode_from_encoder(memoryview(data)) == Ack(seq, None)
    with_stats = Ack(seq, STATS)
    assert decode_from_encoder(encode_from_encoder(with_stats)) == with_stats


@pytest.mark.parametrize(
    "control", [Watch(10.0), Finish(), Stop("stopped: this API key's quota is used up")], ids=lambda m: type(m).__name__
)
def test_control_records_round_trip(control: messages.Control) -> None:
    again = decode_to_encoder(encode_control(control))
    assert type(again) is type(control) and again == control


@pytest.mark.parametrize("where", [IN_RING, IN_CLIENT_MEMORY])
def test_a_chunk_descriptor_carries_the_header_the_payloads_place_and_when_it_came(where: int) -> None:
    array = np.zeros((2, 4, 6, 3), np.uint8)
    header, _ = protocol.encode_chunk(1, 99, array, pts=1.5)
    got = decode_to_encoder(encode_chunk(header, 4096, where, received=12345.678901))
    assert isinstance(got, ChunkDescriptor)
    assert (got.header.stream, got.header.seq, got.header.shape, got.header.pts) == (1, 99, (2, 4, 6, 3), 1.5)
    assert (got.offset, got.where, got.size, got.mask, got.received) == (4096, where, 0, NO_MASK, 12345.678901)
    masked = decode_to_encoder(encode_chunk(header, 64, where, mask=b"\x01\x02\x03\x04", received=1.0))
    assert isinstance(masked, ChunkDescriptor) and masked.mask == b"\x01\x02\x03\x04" and masked.received == 1.0


def test_empty_records_are_told_apart_by_type_not_by_equality() -> None:
    # Both are empty tuples, so == cannot tell them apart: both sides match on the class.
    free: object = messages.FREE  # as object: mypy would call the comparison with Finish impossible
    assert free == Finish() and type(free) is not Finish
    assert not isinstance(decode_to_encoder(encode_control(Finish())), messages.Free)


def test_the_encoder_is_not_handed_a_record_meant_for_the_server() -> None:
    with pytest.raises(TypeError, match="not a message for an encoder"):
        decode_to_encoder(pickle.dumps(messages.Failed("x")))


RELAY_RECORDS: list[messages.ToRelay | messages.FromRelay] = [
    messages.RelayOpen(
        messages.RelayTarget(
            "flv", "rtmp://127.0.0.1:1935/live/k", {"flvflags": "aac_seq_header_detect"}, "destination"
        ),
        b"nut header",
        {"title": "t"},
    ),
    messages.RelayPacket(1, b"\x00\x01" * 700, 1024, 1024, 1024, (1, 48000), True),
    messages.RelayPacket(0, b"", None, None, None, (1, 90000), False),
    messages.RelayClose(),
    messages.RelayReady(["open options: unused"]),
    messages.RelayProgress(42),
    messages.RelayLost("Broken pipe", 41),
    messages.RelayClosed(43),
]


def test_relay_records_survive_their_framing_cut_anywhere() -> None:
    stream = b"".join(messages.encode_relay(record) for record in RELAY_RECORDS)
    for cut in (1, 3, 7, 64, 1000):  # the pipe hands over bytes in pieces of any size
        frames = messages.RelayFrames()
        got = [r for start in range(0, len(stream), cut) for r in frames.feed(stream[start : start + cut])]
        assert [type(r) for r in got] == [type(r) for r in RELAY_RECORDS] and got == RELAY_RECORDS


def test_a_relay_frame_holding_something_else_is_refused() -> None:
    data = pickle.dumps(messages.Failed("x"))
    with pytest.raises(TypeError, match="not a relay message"):
        messages.RelayFrames().feed(len(data).to_bytes(4, "big") + data)


def test_pipe_messages_survive_their_framing_cut_anywhere_as_a_connection_frames_them() -> None:
    """Both ends cut the pipe with ``PipeFrames``, while a spare's first message is a plain
    ``multiprocessing.Connection``'s: the framing must be exactly that one, at every length."""
    import multiprocessing

    payloads = [b"", b"A" + bytes(8), bytes(range(256)) * 300, b"x"]
    ours = b"".join(messages.pipe_frame(p) + p for p in payloads)
    reader, writer = multiprocessing.Pipe(duplex=False)
    with reader, writer:
        for p in payloads[:2]:  # small enough not to fill the pipe
            writer.send_bytes(p)
            assert os.read(reader.fileno(), 1024) == messages.pipe_frame(p) + p
    for cut in (1, 3, 5, 4096, len(ours)):
        frames = messages.PipeFrames()
        got = [m for start in range(0, len(ours), cut) for m in frames.feed(ours[start : start + cut])]
        assert got == payloads
    # Over 2 GiB a length is -1 and then 8 bytes; the parser waits for all of them.
    long_head = (-1).to_bytes(4, "big", signed=True) + (3).to_bytes(8, "big")
    frames = messages.PipeFrames()
    assert frames.feed(long_head[:7]) == [] and frames.feed(long_head[7:] + b"ab") == []
    assert frames.feed(b"c") == [b"abc"]
