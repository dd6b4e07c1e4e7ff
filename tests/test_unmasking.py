"""RFC 6455 unmasking (``framecast_server.unmasking``): in place, as the websocket receiver does
it, and into another buffer, as the encoder process does for a payload left masked in the ring."""

from __future__ import annotations

import os

import numpy as np
import pytest

from framecast_server.unmasking import NO_MASK, rotated, unmask


def rfc_xor(data: bytes, key: bytes) -> bytes:
    """RFC 6455 section 5.3, byte by byte: octet i XOR key octet i MOD 4."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("start", [0, 1, 2, 3, 5, 8])
@pytest.mark.parametrize("size", [0, 1, 3, 7, 8, 9, 64, 1001])
def test_unmasking_in_place_is_the_rfc_xor(start: int, size: int) -> None:
    key = os.urandom(4)
    data = os.urandom(start + size + 3)
    buffer = bytearray(data)
    unmask(memoryview(buffer)[start : start + size], key)
    assert bytes(buffer) == data[:start] + rfc_xor(data[start : start + size], key) + data[start + size :]


@pytest.mark.parametrize("src_start", [0, 3, 8])
@pytest.mark.parametrize("out_start", [0, 3, 8])
@pytest.mark.parametrize("size", [1, 9, 4097])
def test_unmasking_into_another_buffer_leaves_the_masked_bytes_alone(src_start: int, out_start: int, size: int) -> None:
    """Aligned alike or not (then byte by byte), the result is the same and the source unchanged:
    the encoder reads the ring, which it may not write."""
    key = os.urandom(4)
    data = os.urandom(src_start + size)
    source = bytes(data)
    out = np.zeros(out_start + size + 5, dtype=np.uint8)
    unmask(memoryview(source)[src_start:], key, out=out[out_start : out_start + size])
    assert source == data
    assert out[out_start : out_start + size].tobytes() == rfc_xor(data[src_start:], key)
    assert not out[:out_start].any() and not out[out_start + size :].any()


def test_a_key_lines_up_with_the_first_byte_it_is_given() -> None:
    """Unmasking a frame in two parts: the second part's key is rotated by where it starts."""
    key, data = b"\x01\x02\x03\x04", bytes(range(11))
    whole = bytearray(data)
    unmask(whole, key)
    parts = bytearray(data)
    unmask(memoryview(parts)[:5], key)
    unmask(memoryview(parts)[5:], rotated(key, 5))
    assert parts == whole == bytearray(rfc_xor(data, key))


def test_the_zero_key_masks_nothing_and_sizes_must_match() -> None:
    data = bytearray(os.urandom(100))
    before = bytes(data)
    unmask(data, NO_MASK)
    assert bytes(data) == before
    with pytest.raises(ValueError, match="unmasking 100 bytes into 99"):
        unmask(data, b"abcd", out=bytearray(99))
