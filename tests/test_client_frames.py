"""The SDK's websocket frames as they leave (``framecast.outgoing``).

framecast serializes the data frames itself: a large one is queued as its header and its masked
payload instead of websockets' one joined ``bytes``, a small one as one write, each with a mask key
from a pool of ``os.urandom`` bytes. What must hold: websockets' own server parser reads every frame
back as sent, whatever its size (every length encoding), opcode and FIN bit; each frame has a key
of its own, across pool refills; control frames go websockets' way, unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from framecast.outgoing import KEY_POOL_BYTES, UNJOINED_FRAME_BYTES, send_data_frames


def client() -> ClientProtocol:
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=State.OPEN)
    send_data_frames(protocol)
    return protocol


def received(writes: list[bytes]) -> list[Frame]:
    server = ServerProtocol(state=State.OPEN, max_size=None)
    server.receive_data(b"".join(writes))
    return [e for e in server.events_received() if isinstance(e, Frame)]


@pytest.mark.parametrize("size", [0, 100, 125, 126, 65535, UNJOINED_FRAME_BYTES, 1_382_400 + 3])
def test_every_frame_reads_back_as_sent(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    protocol = client()
    protocol.send_binary(b"head", fin=False)
    protocol.send_continuation(data, fin=False)
    protocol.send_continuation(b"", fin=True)
    protocol.send_text(data.hex()[: 2 * size].encode(), fin=True)  # a text frame of twice the size
    protocol.send_ping(b"still there?")
    writes = protocol.data_to_send()
    frames = received(writes)
    assert [(f.opcode, f.fin) for f in frames] == [
        (Opcode.BINARY, False),
        (Opcode.CONT, False),
        (Opcode.CONT, True),
        (Opcode.TEXT, True),
        (Opcode.PING, True),
    ]
    assert frames[1].data == data and frames[3].data == data.hex().encode() and frames[4].data == b"still there?"
    # Only data frames of UNJOINED_FRAME_BYTES or more are split: a 14-byte header with its key, the payload.
    assert UNJOINED_FRAME_BYTES == 65536
    split = [size >= UNJOINED_FRAME_BYTES, 2 * size >= UNJOINED_FRAME_BYTES]
    assert len(writes) == 5 + sum(split)
    if split[0]:
        assert len(writes[1]) == 14 and len(writes[2]) == size and writes[2] != data[: len(writes[2])]


def test_each_large_frame_has_a_fresh_mask_key() -> None:
    payload = bytes(UNJOINED_FRAME_BYTES)  # zeros: the masked payload is the key, repeated
    protocol = client()
    for _ in range(20):
        protocol.send_binary(payload)
    writes = protocol.data_to_send()
    keys = {bytes(header[10:14]) for header in writes[0::2]}
    assert all(bytes(w[:4]) == bytes(h[10:14]) for h, w in zip(writes[0::2], writes[1::2], strict=True))
    assert len(keys) == 20
    assert [f.data for f in received(writes)] == [payload] * 20


def test_small_frames_have_keys_of_their_own_across_pool_refills() -> None:
    """Chunk headers and shared-memory descriptors are small frames, one per video frame: their
    keys come from the pool, each used once, and the pool is drawn again as it runs out."""
    count = 3 * KEY_POOL_BYTES // 4 + 5  # three refills and then some
    protocol = client()
    for k in range(count):
        protocol.send_binary(bytes(8) + k.to_bytes(4, "big"))  # zeros: the masked bytes are the key
    writes = protocol.data_to_send()
    assert len(writes) == count and all(len(w) == 2 + 4 + 12 for w in writes)
    keys = [bytes(w[2:6]) for w in writes]
    assert all(bytes(w[6:10]) == key for w, key in zip(writes, keys, strict=True))
    assert len(set(keys)) > count - 3  # 32 random bits each: a repeat or two at most, by chance
    assert [f.data for f in received(writes)] == [bytes(8) + k.to_bytes(4, "big") for k in range(count)]
