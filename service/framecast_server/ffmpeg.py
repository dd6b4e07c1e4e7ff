"""Facts about the FFmpeg this server runs: versions, muxers, encoders, protocols.

Everything here is read from the libraries PyAV loaded, so GET /v1/capabilities reports what
this server really has, not what FFmpeg could have. Two facts PyAV does not expose (the list of
output protocols, and FFmpeg's muxer guess from a file name) are read through ctypes from the very
libavformat PyAV bundles.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import av


@functools.lru_cache(maxsize=1)
def _libavformat() -> ctypes.CDLL:
    libs = Path(av.__file__).parent.parent / "av.libs"
    candidates = sorted(libs.glob("libavformat*.so*")) if libs.is_dir() else []
    path = str(candidates[0]) if candidates else "libavformat.so"
    lib = ctypes.CDLL(path)
    lib.avio_enum_protocols.restype = ctypes.c_char_p
    lib.avio_enum_protocols.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    lib.av_guess_format.restype = ctypes.POINTER(ctypes.c_char_p)  # first field of AVOutputFormat: name
    lib.av_guess_format.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    return lib


@functools.lru_cache(maxsize=1)
def output_protocols() -> Tuple[str, ...]:
    """Protocols libavformat can write to (``file``, ``rtmp``, ``udp``, ...)."""
    lib = _libavformat()
    opaque = ctypes.c_void_p()
    names: List[str] = []
    while True:
        name = lib.avio_enum_protocols(ctypes.byref(opaque), 1)
        if name is None:
            break
        names.append(name.decode())
    return tuple(names)


def guess_muxer(filename: str) -> Optional[str]:
    """The muxer FFmpeg would pick for ``filename`` (by its extension), or None."""
    ptr = _libavformat().av_guess_format(None, os.fsencode(filename), None)
    if not ptr:
        return None
    return ptr[0].decode()


@functools.lru_cache(maxsize=1)
def muxers() -> Dict[str, str]:
    """Output formats: name -> long name."""
    out = {}
    for name in sorted(av.formats_available):
        try:
            fmt = av.ContainerFormat(name, "w")
        except ValueError:
            continue
        out[name] = fmt.long_name
    return out


@functools.lru_cache(maxsize=1)
def _encoders() -> Dict[str, Dict[str, str]]:
    found: Dict[str, Dict[str, str]] = {"audio": {}, "video": {}}
    for name in sorted(av.codecs_available):
        try:
            codec = av.Codec(name, "w")
        except Exception:  # not an encoder
            continue
        if codec.type in found and codec.name == name:
            found[codec.type][name] = codec.long_name
    return found


def audio_encoders() -> Dict[str, str]:
    return _encoders()["audio"]


def video_encoders() -> Dict[str, str]:
    return _encoders()["video"]


@functools.lru_cache(maxsize=None)
def muxer_defaults(muxer: str) -> Tuple[Optional[str], Optional[str]]:
    """The (video, audio) encoder names a muxer defaults to, as FFmpeg's CLI would pick them."""
    container = av.open(io.BytesIO(), "w", format=muxer)
    try:
        picks = []
        for codec_name in (container.default_video_codec, container.default_audio_codec):
            try:
                picks.append(av.Codec(codec_name, "w").name if codec_name != "none" else None)
            except Exception:
                picks.append(None)
        return picks[0], picks[1]
    finally:
        container.close()


def versions() -> Dict[str, str]:
    return {name: ".".join(map(str, v)) for name, v in av.library_versions.items()}


def version() -> str:
    """FFmpeg's release string (e.g. '8.0')."""
    return str(av.ffmpeg_version_info)
