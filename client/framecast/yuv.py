"""RGB to yuv420p on the client, as the server converts: half the bytes on the wire.

A yuv420p frame is half the size of the RGB frame it comes from, and the server converts nearly
every RGB stream to yuv420p for its encoder anyway. When the session agrees (``wire_format``,
negotiated per stream: the server resolves ``"auto"``), the SDK converts each frame before it
sends it, where the frame is:

- a tensor on a GPU (or any device but the CPU) there, with torch: the bytes that cross PCIe and
  the network are halved too;
- a CPU array or tensor with libyuv where the client has it (Debian's ``libyuv0``: the very
  functions the server calls, so the planes are bit for bit the server's; about 0.2 ms a 720p
  frame), else with numpy (about 4.5 ms).

Every path computes libyuv's BT.601 limited-range conversion, chroma from the average of each 2x2
block (centred siting): Y = (66R + 129G + 25B + 0x1080) >> 8, U = (112B - 74G - 38R + 0x8080) >> 8,
V = (112R - 94G - 18B + 0x8080) >> 8. libyuv's SIMD rows round their averages a little differently
from its C rows, so numpy and torch agree with the server within one level, not always bit for bit.

On the wire a frame is its Y plane, then U, then V, each row without padding: ``(T, W*H*3/2)``
uint8 for T frames (even sizes only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from typing import Any

import numpy as np

#: Which channels of a (C, H, W) frame are red, green and blue, by input format.
RGB_CHANNELS = {"rgb24": (0, 1, 2), "rgb0": (0, 1, 2), "bgr24": (2, 1, 0), "bgr0": (2, 1, 0)}

_P, _I = ctypes.c_void_p, ctypes.c_int


def frame_bytes(width: int, height: int) -> int:
    """Bytes of one yuv420p frame on the wire (even sizes)."""
    return width * height * 3 // 2


#: libyuv's soname on Debian and Ubuntu (package libyuv0).
SONAME = "libyuv.so.0"


@functools.cache
def library() -> ctypes.CDLL | None:
    """libyuv with the functions used here (and by the server's ``libyuv.py``) declared, or None
    where it is not installed or lacks them."""
    name = ctypes.util.find_library("yuv") or SONAME
    try:
        lib = ctypes.CDLL(name)
        merge, to_i420 = lib.MergeRGBPlane, lib.RAWToI420
    except (OSError, AttributeError):
        return None
    # void MergeRGBPlane(src_r, stride_r, src_g, stride_g, src_b, stride_b, dst_rgb, stride_rgb, width, height)
    # int RAWToI420(src_raw, stride_raw, dst_y, stride_y, dst_u, stride_u, dst_v, stride_v, width, height)
    merge.argtypes = [_P, _I, _P, _I, _P, _I, _P, _I, _I, _I]
    merge.restype = None
    to_i420.argtypes = [_P, _I, _P, _I, _P, _I, _P, _I, _I, _I]
    to_i420.restype = _I
    try:  # newer libyuv (2021 on): the 4-byte path below
        merge4, argb_to_i420 = lib.MergeARGBPlane, lib.ARGBToI420
    except AttributeError:
        return lib
    # void MergeARGBPlane(src_r, stride_r, src_g, stride_g, src_b, stride_b, src_a, stride_a, dst_argb, stride_argb,
    #                     width, height)
    # int ARGBToI420(src_argb, stride_argb, dst_y, stride_y, dst_u, stride_u, dst_v, stride_v, width, height)
    merge4.argtypes = [_P, _I, _P, _I, _P, _I, _P, _I, _P, _I, _I, _I]
    merge4.restype = None
    argb_to_i420.argtypes = [_P, _I, _P, _I, _P, _I, _P, _I, _I, _I]
    argb_to_i420.restype = _I
    return lib


def has_packed_4() -> bool:
    """Whether this libyuv has the 4-byte path (``MergeARGBPlane`` and ``ARGBToI420``, declared by
    ``library``); False where libyuv cannot be loaded."""
    lib = library()
    return lib is not None and hasattr(lib, "MergeARGBPlane") and lib.MergeARGBPlane.argtypes is not None


class PlanesToI420:
    """RGB planes of one size to yuv420p with libyuv: merged into packed pixels in a scratch frame
    kept from call to call, then converted. Used by the SDK and the server alike, so both make the
    same planes.

    Where libyuv has them, the planes are merged into 4-byte pixels (``MergeARGBPlane`` without
    alpha: an AVX2 row function) and converted with ``ARGBToI420``; else into 3-byte ones
    (``MergeRGBPlane``, SSSE3 at best) and converted with ``RAWToI420``, which itself goes through
    4-byte rows. Both end in the same row functions, so the planes are the same bit for bit; the
    first is about a third faster (0.21 against 0.32-0.37 ms a 720p frame here).

    Not thread-safe: one converter per thread (the scratch frame).

    Raises (on construction):
        RuntimeError: libyuv cannot be loaded.
    """

    def __init__(self, width: int, height: int, packed_4: bool | None = None) -> None:
        lib = library()
        if lib is None:
            raise RuntimeError(f"libyuv ({SONAME}) cannot be loaded")
        if packed_4 is None:
            packed_4 = has_packed_4()
        self.width, self.height = width, height
        self._lib, self._packed_4 = lib, packed_4
        self._packed = np.empty((height, width * (4 if packed_4 else 3)), dtype=np.uint8)

    def convert(self, r: np.ndarray, g: np.ndarray, b: np.ndarray, planes: tuple[int, int, int, int, int, int]) -> None:
        """Convert one frame's R, G and B planes ((H, W) uint8, rows contiguous) into ``planes``:
        the Y, U and V planes' addresses and strides, as ``(y, y_stride, u, u_stride, v, v_stride)``."""
        w, h, packed, lib = self.width, self.height, self._packed, self._lib
        rows = packed.strides[0]
        if self._packed_4:
            lib.MergeARGBPlane(
                r.ctypes.data, r.strides[0], g.ctypes.data, g.strides[0], b.ctypes.data, b.strides[0],
                None, 0, packed.ctypes.data, rows, w, h,
            )  # fmt: skip
            result = lib.ARGBToI420(packed.ctypes.data, rows, *planes, w, h)
        else:
            lib.MergeRGBPlane(
                r.ctypes.data, r.strides[0], g.ctypes.data, g.strides[0], b.ctypes.data, b.strides[0],
                packed.ctypes.data, rows, w, h,
            )  # fmt: skip
            result = lib.RAWToI420(packed.ctypes.data, rows, *planes, w, h)
        if result != 0:
            raise RuntimeError(f"libyuv failed ({result}) to convert a {w}x{h} frame")


def converter() -> str:
    """What converts CPU arrays in this process: ``"libyuv"`` or ``"numpy"``."""
    return "libyuv" if library() is not None else "numpy"


def rgb_to_i420(frames: Any, in_format: str = "rgb24", use_libyuv: bool | None = None) -> Any:
    """(T, C, H, W) uint8 RGB frames (numpy, or a torch tensor on any device) as (T, W*H*3/2)
    yuv420p frames of the same kind, on the same device.

    Raises:
        ValueError: not uint8, not 4-D, too few channels for ``in_format``, or an odd size.
    """
    channels = _channels(in_format, tuple(frames.shape))
    if type(frames).__module__.startswith("torch"):
        if frames.device.type != "cpu":
            return _torch(frames, channels)
        frames = frames.detach().numpy()
    array = np.asarray(frames)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames, got {array.dtype}")
    if use_libyuv is None:
        use_libyuv = library() is not None
    return _libyuv_convert(array, channels) if use_libyuv else _numpy(array, channels)


def rgb_to_i420_into(frames: np.ndarray, out: np.ndarray, in_format: str = "rgb24") -> None:
    """Convert (T, C, H, W) uint8 RGB frames on the CPU with libyuv straight into ``out``, (T,
    W*H*3/2) uint8 and C-contiguous: memory that is sent as it is, such as the session's shared
    memory (the writer's one pass over the frames, where a copy would be).

    Raises:
        ValueError: frames or ``out`` of the wrong shape or type, or an odd size.
        RuntimeError: libyuv cannot be loaded.
    """
    shape = tuple(frames.shape)
    channels = _channels(in_format, shape)
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames, got {frames.dtype}")
    wanted = (shape[0], frame_bytes(shape[3], shape[2]))
    if out.shape != wanted or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"expected C-contiguous uint8 memory of shape {wanted} to convert into, got {out.shape}")
    _libyuv_convert(frames, channels, out)


def _channels(in_format: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Which channels of frames of ``shape`` are red, green and blue.

    Raises:
        ValueError: not 4-D, too few channels for ``in_format``, or an odd size.
    """
    channels = RGB_CHANNELS[in_format]
    if len(shape) != 4 or shape[1] <= max(channels) or shape[2] % 2 or shape[3] % 2:
        raise ValueError(f"expected (frames, {len(channels)}+, even height, even width) RGB frames, got {shape}")
    return channels


def _libyuv_convert(frames: np.ndarray, channels: tuple[int, int, int], out: np.ndarray | None = None) -> np.ndarray:
    t, _, h, w = frames.shape
    if out is None:
        out = np.empty((t, frame_bytes(w, h)), dtype=np.uint8)
    converter = _converter(w, h)
    for i in range(t):
        frame = frames[i]
        if frame.strides[2] != 1:
            frame = np.ascontiguousarray(frame)
        r, g, b = (frame[c] for c in channels)
        y = out[i].ctypes.data
        u = y + w * h
        v = u + (w // 2) * (h // 2)
        converter.convert(r, g, b, (y, w, u, w // 2, v, w // 2))
    return out


_local = threading.local()


def _converter(width: int, height: int) -> PlanesToI420:
    """This thread's converter for frames of this size, kept from chunk to chunk (its scratch
    frame, new, would be 4-8 MB of fresh pages every chunk); per thread, as writers on two
    threads convert at once. A thread keeps the last few sizes it converted."""
    converters: dict[tuple[int, int], PlanesToI420] = _local.__dict__.setdefault("converters", {})
    converter = converters.get((width, height))
    if converter is None:
        if len(converters) >= 4:
            converters.clear()
        converter = converters[width, height] = PlanesToI420(width, height)
    return converter


def _numpy(frames: np.ndarray, channels: tuple[int, int, int]) -> np.ndarray:
    # uint16 holds every intermediate (at most 60,324 for Y; U and V stay within 4,336..61,456
    # when the offset is added before the subtractions): half the memory traffic of int32.
    t, _, h, w = frames.shape
    r, g, b = (frames[:, c].astype(np.uint16) for c in channels)
    out = np.empty((t, frame_bytes(w, h)), dtype=np.uint8)
    luma, chroma = w * h, (w // 2) * (h // 2)
    out[:, :luma] = ((66 * r + 129 * g + 25 * b + 0x1080) >> 8).reshape(t, -1)
    rs, gs, bs = (_block_average(p) for p in (r, g, b))
    out[:, luma : luma + chroma] = ((112 * bs + 0x8080 - 74 * gs - 38 * rs) >> 8).reshape(t, -1)
    out[:, luma + chroma :] = ((112 * rs + 0x8080 - 94 * gs - 18 * bs) >> 8).reshape(t, -1)
    return out


def _block_average(plane: np.ndarray) -> np.ndarray:
    """libyuv's chroma input: each 2x2 block averaged as two rounded pairwise averages."""
    rows = (plane[:, 0::2, :] + plane[:, 1::2, :] + 1) >> 1
    averaged: np.ndarray = (rows[:, :, 0::2] + rows[:, :, 1::2] + 1) >> 1
    return averaged


def _torch(frames: Any, channels: tuple[int, int, int]) -> Any:
    import torch

    if frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 RGB frames, got {frames.dtype}")
    t = frames.shape[0]
    r, g, b = (frames[:, c].to(torch.int32) for c in channels)
    y = ((66 * r + 129 * g + 25 * b + 0x1080) >> 8).to(torch.uint8)

    def block(plane: Any) -> Any:
        rows = (plane[:, 0::2, :] + plane[:, 1::2, :] + 1) >> 1
        return (rows[:, :, 0::2] + rows[:, :, 1::2] + 1) >> 1

    rs, gs, bs = block(r), block(g), block(b)
    u = ((112 * bs - 74 * gs - 38 * rs + 0x8080) >> 8).to(torch.uint8)
    v = ((112 * rs - 94 * gs - 18 * bs + 0x8080) >> 8).to(torch.uint8)
    return torch.cat([y.reshape(t, -1), u.reshape(t, -1), v.reshape(t, -1)], dim=1)
