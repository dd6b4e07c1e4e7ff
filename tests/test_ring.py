"""The shared-memory ring between the server and an encoder process: placement, waiting, closing.

The ring is handed to the reader the way an encoder process gets it (pickled with its file
descriptor), so what the reader sees is what the server wrote, through a second mapping.
"""

from __future__ import annotations

import asyncio
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
from pydantic import ValidationError

from framecast import protocol
from framecast_server.config import Settings
from framecast_server.messages import ChunkDescriptor, decode_to_encoder, encode_chunk
from framecast_server.ring import PayloadRing, RingClosed, RingReader


def reader_of(ring: PayloadRing) -> RingReader:
    reader = pickle.loads(ForkingPickler.dumps(ring))
    assert isinstance(reader, RingReader)
    return reader


def chunk(seq: int, value: int, frames: int = 1) -> tuple[bytes, memoryview, np.ndarray]:
    array = np.full((frames, 100), value, np.uint8)
    header, payload = protocol.encode_chunk(0, seq, array)
    return header, payload, array


def test_payloads_wrap_around_and_wait_for_space() -> None:
    async def main() -> None:
        ring = PayloadRing(256)
        reader = reader_of(ring)
        offsets = []
        for seq in range(2):
            header, payload, _ = chunk(seq, seq)
            offsets.append(await ring.write(payload))
        assert offsets == [0, 128]  # 100 bytes take 128: regions start on 64-byte boundaries
        header, payload, array = chunk(2, 2)
        third = asyncio.create_task(ring.write(payload))
        await asyncio.sleep(0.05)
        assert not third.done()  # full: it waits for the encoder to free the oldest
        ring.release()
        assert await asyncio.wait_for(third, 5) == 0  # wrapped to the start
        descriptor = decode_to_encoder(encode_chunk(header, 0, received=0.0))
        assert isinstance(descriptor, ChunkDescriptor) and descriptor.header.seq == 2
        assert np.array_equal(reader.array(descriptor.header, descriptor.offset), array)
        assert ring.in_flight == 2
        ring.release()
        ring.release()
        assert ring.in_flight == 0
        header, payload, array = chunk(3, 3, frames=2)  # an empty ring starts over at 0
        assert await ring.write(payload) == 0
        ring.dispose()

    asyncio.run(main())


def test_the_number_of_chunks_in_flight_is_bounded() -> None:
    async def main() -> None:
        ring = PayloadRing(1 << 20, max_chunks=3)
        for seq in range(3):
            await ring.write(chunk(seq, seq)[1])
        fourth = asyncio.create_task(ring.write(chunk(3, 3)[1]))
        await asyncio.sleep(0.05)
        assert not fourth.done()
        ring.release()
        assert await asyncio.wait_for(fourth, 5) == 384
        ring.dispose()

    asyncio.run(main())


def test_a_closed_ring_wakes_the_waiting_writer_and_refuses_more() -> None:
    async def main() -> None:
        ring = PayloadRing(128)
        await ring.write(chunk(0, 0)[1])
        waiting = asyncio.create_task(ring.write(chunk(1, 1)[1]))
        await asyncio.sleep(0.05)
        ring.close()  # the encoder process exited
        with pytest.raises(RingClosed):
            await asyncio.wait_for(waiting, 5)
        with pytest.raises(OSError, match="encoder process is gone"):
            await ring.write(chunk(2, 2)[1])
        ring.dispose()

    asyncio.run(main())


def test_a_payload_larger_than_the_ring_is_refused_by_name() -> None:
    async def main() -> None:
        ring = PayloadRing(128)
        with pytest.raises(ValueError, match="larger than the encoder buffer"):
            await ring.write(bytes(200))
        ring.dispose()

    asyncio.run(main())


def test_the_encoder_buffer_must_hold_the_largest_message() -> None:
    with pytest.raises(ValidationError, match="encoder_buffer_bytes .* must be at least max_message_bytes"):
        Settings(encoder_buffer_bytes=1 << 20, max_message_bytes=2 << 20)
    assert Settings(encoder_buffer_bytes=4 << 20, max_message_bytes=4 << 20).encoder_buffer_bytes == 4 << 20


def test_placed_regions_are_handed_on_or_cancelled_in_any_order() -> None:
    """Regions placed for payloads still to arrive: the encoder's frees release the oldest region
    handed to it, skipping the cancelled ones, wherever in the queue they were cancelled."""

    async def main() -> None:
        ring = PayloadRing(1024, max_chunks=8)
        reader = reader_of(ring)
        first = ring.place(100)
        second = ring.place(100)
        third = ring.place(100)
        assert first is not None and second is not None and third is not None
        assert (first.offset, second.offset, third.offset) == (0, 128, 256)
        header, payload, array = chunk(0, 7)
        first.view[:] = payload  # "received" straight into the region
        assert first.taken() == 0
        second.cancel()  # refused: in the middle of the queue
        second.cancel()  # once only
        third.taken()
        assert ring.in_flight == 3
        descriptor = decode_to_encoder(encode_chunk(header, 0, received=0.0))
        assert isinstance(descriptor, ChunkDescriptor)
        assert np.array_equal(reader.array(descriptor.header, 0), array)
        ring.release()  # the encoder frees the first; the cancelled second goes with it
        assert ring.in_flight == 1
        first.cancel()  # handed on already: nothing happens
        assert ring.in_flight == 1
        ring.release()  # the third
        assert ring.in_flight == 0
        assert ring.place(2000) is None  # more than fits now: not placed, never waits
        full = [ring.place(100) for _ in range(8)]
        assert all(p is not None for p in full) and ring.place(1) is None  # max_chunks
        for p in full:
            assert p is not None
            p.cancel()
        assert ring.in_flight == 0
        ring.close()
        assert ring.place(100) is None  # the encoder is gone
        ring.dispose()

    asyncio.run(main())


def test_regions_handed_on_out_of_order_are_freed_in_the_order_handed_on() -> None:
    """A chunk written the usual way can reach the encoder before one placed earlier. The
    encoder's first free is then the written one's: its space comes back only with the placed
    one's, so nothing is reused while the encoder may still read it; and ``freed`` says when
    to try again."""

    async def main() -> None:
        ring = PayloadRing(1024, max_chunks=8)
        placed = ring.place(256)
        assert placed is not None and placed.offset == 0
        written = await ring.write(bytes(512))  # reserved after the placed region, handed on first
        assert written == 256
        assert ring.place(512) is None  # 256 bytes left
        room = ring.freed()
        assert room is not None and ring.freed() is room  # one future for everyone waiting
        ring.release()  # the encoder is done with the written chunk, not the placed one
        await asyncio.wait_for(room, 5)
        assert ring.place(512) is None  # its space waits for the placed region's
        placed.taken()
        ring.release()  # now the placed one: both come back
        again = ring.place(768)
        assert again is not None and again.offset == 0
        ring.close()
        assert ring.freed() is None  # the encoder is gone: no room will come
        ring.dispose()

    asyncio.run(main())


def test_a_writer_cancelled_while_waiting_for_room_leaves_the_others_waiting() -> None:
    """Writers waiting for room share one future: one cancelled (its connection dropped) must
    not wake or fail the others."""

    async def main() -> None:
        ring = PayloadRing(1024, max_chunks=8)
        await ring.write(bytes(1024))
        first = asyncio.ensure_future(ring.write(bytes(512)))
        second = asyncio.ensure_future(ring.write(bytes(512)))
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        assert not second.done()
        ring.release()
        assert await asyncio.wait_for(second, 5) == 0
        ring.dispose()

    asyncio.run(main())


def test_a_full_ring_wakes_its_writer_once_a_quarter_is_free() -> None:
    """A writer ahead of its encoder is woken when a quarter of the ring is free, not at every
    Free, so it places several payloads a wake-up; an empty ring always wakes it."""

    async def main() -> None:
        ring = PayloadRing(8 * 128)
        for seq in range(8):
            await ring.write(chunk(seq, seq)[1])  # 100 bytes, 128 with alignment: the ring is full
        assert ring.place(100) is None
        freed = ring.freed()
        assert freed is not None
        waiting = asyncio.create_task(ring.write(chunk(8, 8)[1]))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # waiting for room
        ring.release()  # 7 of 8 in use: not yet
        await asyncio.sleep(0.05)
        assert not freed.done() and not waiting.done()
        ring.release()  # 6 of 8: a quarter is free
        await asyncio.wait_for(waiting, 5)
        assert freed.done()
        second = ring.place(100)  # the writer's wake-up finds room for more than the one
        assert second is not None
        second.cancel()
        ring.dispose()

    asyncio.run(main())


def test_small_chunks_bounded_by_count_wake_their_writer_at_every_free() -> None:
    async def main() -> None:
        ring = PayloadRing(1 << 20, max_chunks=2)
        await ring.write(chunk(0, 0)[1])
        await ring.write(chunk(1, 1)[1])
        waiting = asyncio.create_task(ring.write(chunk(2, 2)[1]))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # two chunks in flight, at most two
        ring.release()
        await asyncio.wait_for(waiting, 5)
        ring.dispose()

    asyncio.run(main())
