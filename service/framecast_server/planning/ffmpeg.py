"""Facts about the FFmpeg this server runs: versions, muxers, encoders, protocols.

Everything here is read from the libraries PyAV loaded, so GET /v1/capabilities reports what
this server really has, not what FFmpeg could have. Three facts PyAV does not expose (the list of
output protocols, FFmpeg's muxer guess from a file name, and how FFmpeg splits a URL into host and
port) are read through ctypes from the very libavformat PyAV bundles.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import NamedTuple

import av


def _bundled(name: str) -> ctypes.CDLL:
    libs = Path(av.__file__).parent.parent / "av.libs"
    candidates = sorted(libs.glob(f"{name}*.so*")) if libs.is_dir() else []
    return ctypes.CDLL(str(candidates[0]) if candidates else f"{name}.so")


@functools.lru_cache(maxsize=1)
def _libavformat() -> ctypes.CDLL:
    lib = _bundled("libavformat")
    lib.avio_enum_protocols.restype = ctypes.c_char_p
    lib.avio_enum_protocols.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    lib.av_guess_format.restype = ctypes.c_void_p  # const AVOutputFormat *; its first field is name
    lib.av_guess_format.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.av_guess_codec.restype = ctypes.c_int  # enum AVCodecID
    lib.av_guess_codec.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    lib.avformat_query_codec.restype = ctypes.c_int
    lib.avformat_query_codec.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.av_url_split.restype = None
    lib.av_url_split.argtypes = [
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
    ]
    return lib


class UrlParts(NamedTuple):
    """A URL as libavformat's ``av_url_split`` reads it: what its protocols connect to."""

    proto: str
    authorization: str  # user[:password], without the '@'
    hostname: str  # without IPv6 brackets
    port: int  # -1 when the URL names none; atoi() of what follows ':' otherwise
    path: str  # from the first '/', '?' or '#' after the host on, query included


_URL_SPLIT_SIZE = 4096


def url_split(url: str) -> UrlParts:
    """Split ``url`` exactly as FFmpeg's protocols do (``av_url_split``, which tcp, udp, rtmp and srt
    call to find the host they connect to), so our checks can compare their reading with ours.

    The URL is passed as a C string: FFmpeg stops at the first NUL, as it does when it opens one.
    Raises ValueError for a URL longer than FFmpeg's buffers here (4095 bytes), which would be cut.
    """
    raw = url.encode("utf-8", "surrogateescape")
    if len(raw) >= _URL_SPLIT_SIZE:
        raise ValueError(f"URL too long to split: {len(raw)} bytes, at most {_URL_SPLIT_SIZE - 1}")
    buffers = [ctypes.create_string_buffer(_URL_SPLIT_SIZE) for _ in range(4)]
    port = ctypes.c_int(-1)
    proto, auth, host, path = buffers
    _libavformat().av_url_split(
        proto,
        _URL_SPLIT_SIZE,
        auth,
        _URL_SPLIT_SIZE,
        host,
        _URL_SPLIT_SIZE,
        ctypes.byref(port),
        path,
        _URL_SPLIT_SIZE,
        raw,
    )
    text = [b.value.decode("utf-8", "surrogateescape") for b in buffers]
    return UrlParts(text[0], text[1], text[2], port.value, text[3])


@functools.lru_cache(maxsize=1)
def _libavcodec() -> ctypes.CDLL:
    lib = _bundled("libavcodec")
    lib.avcodec_get_name.restype = ctypes.c_char_p
    lib.avcodec_get_name.argtypes = [ctypes.c_int]
    return lib


_AVMEDIA_TYPE = {"video": 0, "audio": 1}


@functools.lru_cache(maxsize=1)
def publish_schemes() -> tuple[str, ...]:
    """URL schemes this FFmpeg can publish to: its output protocols, and ``rtsp`` (``rtsps``) where
    it has the rtsp muxer and the tcp (tls) protocol under it."""
    protocols = output_protocols()
    extra = []
    if "rtsp" in muxers():
        extra += [scheme for scheme, under in (("rtsp", "tcp"), ("rtsps", "tls")) if under in protocols]
    if "whip" in muxers():
        extra += [scheme for scheme, under in (("whip+http", "http"), ("whip+https", "https")) if under in protocols]
    return protocols + tuple(extra)


@functools.lru_cache(maxsize=1)
def output_protocols() -> tuple[str, ...]:
    """Protocols libavformat can write to (``file``, ``rtmp``, ``udp``, ...)."""
    lib = _libavformat()
    opaque = ctypes.c_void_p()
    names: list[str] = []
    while True:
        name = lib.avio_enum_protocols(ctypes.byref(opaque), 1)
        if name is None:
            break
        names.append(name.decode())
    return tuple(names)


def muxer_takes(muxer: str, encoder: str) -> bool | None:
    """Whether ``muxer`` can carry what ``encoder`` makes (FFmpeg's ``avformat_query_codec``);
    None when the muxer does not say, and only opening it would tell."""
    fmt = _libavformat().av_guess_format(muxer.encode(), None, None)
    if not fmt:
        return None
    answer: int = _libavformat().avformat_query_codec(fmt, av.Codec(encoder, "w").id, 0)  # FF_COMPLIANCE_NORMAL
    return None if answer < 0 else bool(answer)


def guess_muxer(filename: str) -> str | None:
    """The muxer FFmpeg would pick for ``filename`` (by its extension), or None."""
    ptr = _libavformat().av_guess_format(None, os.fsencode(filename), None)
    if not ptr:
        return None
    name: bytes = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_char_p))[0]
    return name.decode()


def default_encoder(muxer: str, media: str, filename: str | None = None) -> str | None:
    """The encoder FFmpeg's CLI would pick for ``media`` in ``muxer`` (and ``filename``).

    The file name matters for muxers like image2, where ``.png`` means PNG and ``.jpg`` JPEG.
    Returns None when the muxer has no codec of that type or this FFmpeg has no encoder for it.
    """
    lib = _libavformat()
    fmt = lib.av_guess_format(muxer.encode(), None, None)
    if not fmt:
        return None
    codec_id = lib.av_guess_codec(fmt, None, os.fsencode(filename) if filename else None, None, _AVMEDIA_TYPE[media])
    if codec_id == 0:  # AV_CODEC_ID_NONE
        return None
    try:
        return av.Codec(_libavcodec().avcodec_get_name(codec_id).decode(), "w").name
    except Exception:
        return None


@functools.lru_cache(maxsize=1)
def muxers() -> dict[str, str]:
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
def _encoders() -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {"audio": {}, "video": {}}
    for name in sorted(av.codecs_available):
        try:
            codec = av.Codec(name, "w")
        except Exception:  # not an encoder
            continue
        if codec.type in found and codec.name == name:
            found[codec.type][name] = codec.long_name
    return found


def audio_encoders() -> dict[str, str]:
    return _encoders()["audio"]


def video_encoders() -> dict[str, str]:
    return _encoders()["video"]


def versions() -> dict[str, str]:
    return {name: ".".join(map(str, v)) for name, v in av.library_versions.items()}


def version() -> str:
    """FFmpeg's release string (e.g. '8.0')."""
    return str(av.ffmpeg_version_info)
