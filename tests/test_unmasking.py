"""RFC 6455 unmasking (``framecast_server.unmasking``): in place, as the websocket receiver does
it, and into another buffer, as the encoder process does for a payload left masked in the ring."""

from __future__ import annotations

import os
import types

import numpy as np
import pytest

from framecast_server import unmasking
from framecast_server.unmasking import NO_MASK, SMALL_BYTES, rotated, unmask

#: Both ways it is done: websockets' C function for small sizes, numpy's words beyond.
SIZES = [0, 1, 3, 7, 8, 9, 64, 1001, SMALL_BYTES, SMALL_BYTES + 1, SMALL_BYTES + 13, 3 * SMALL_BYTES + 6]


def rfc_xor(data: bytes, key: bytes) -> bytes:
    """RFC 6455 section 5.3: octet i XOR key octet i MOD 4."""
    return (np.frombuffer(data, np.uint8) ^ np.resize(np.frombuffer(key, np.uint8), len(data))).tobytes()


def test_the_reference_is_the_rfc_byte_by_byte() -> None:
    data, key = os.urandom(37), os.urandom(4)
    assert rfc_xor(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("start", [0, 1, 2, 3, 5, 8])
@pytest.mark.parametrize("size", SIZES)
def test_unmasking_in_place_is_the_rfc_xor(start: int, size: int) -> None:
    key = os.urandom(4)
    data = os.urandom(start + size + 3)
    buffer = bytearray(data)
    unmask(memoryview(buffer)[start : start + size], key)
    assert bytes(buffer) == data[:start] + rfc_xor(data[start : start + size], key) + data[start + size :]


@pytest.mark.parametrize("src_start", [0, 3, 8])
@pytest.mark.parametrize("out_start", [0, 3, 8])
@pytest.mark.parametrize("size", [1, 9, 4097, SMALL_BYTES + 1, 2 * SMALL_BYTES + 3])
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


@pytest.mark.parametrize("size", [100, 2 * SMALL_BYTES])
def test_the_zero_key_masks_nothing_and_sizes_must_match(size: int) -> None:
    data = bytearray(os.urandom(size))
    before = bytes(data)
    unmask(data, NO_MASK)
    assert bytes(data) == before
    with pytest.raises(ValueError, match=f"unmasking {size} bytes into {size - 1}"):
        unmask(data, b"abcd", out=bytearray(size - 1))


def test_small_sizes_go_through_websockets_c_function() -> None:
    """Its wheels build it; the pure-Python fallback would cost every chunk header far more."""
    function = vars(unmasking)["apply_mask"]
    assert isinstance(function, types.BuiltinFunctionType), function
