"""Where output goes: server-side paths, client-side bytes, network URLs, and their live defaults.

Network outputs get what live viewers need unless the config says otherwise: a keyframe at least
every 2 seconds (a player joining waits for one; x264's default GOP is 250 frames), no B-frames
and x264's zerolatency tuning, H.264 + AAC for FLV and MPEG-TS, ``flvflags=no_duration_filesize``
for RTMP (no "Failed to update header" at close), and 1316-byte UDP packets (7 TS packets).
"""

from __future__ import annotations

import math
import os
import stat
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av

from framecast_server import masking
from framecast_server.errors import InvalidConfig
from framecast_server.planning import ffmpeg, urls

#: scheme -> the muxer it implies
NETWORK_MUXERS = {
    "rtmp": "flv",
    "rtmps": "flv",
    "rtsp": "rtsp",
    "rtsps": "rtsp",
    "udp": "mpegts",
    "tcp": "mpegts",
    "srt": "mpegts",
}

#: muxers whose default codecs (FLV1, MP3, MPEG-2, MP2, MPEG-4 part 2) no live viewer wants: use H.264 + AAC
LIVE_ENCODERS = {"flv": ("libx264", "aac"), "mpegts": ("libx264", "aac"), "rtsp": ("libx264", "aac")}

#: Seconds an RTSP server may leave the publisher waiting for an answer: without a bound, one that
#: accepts the connection and says nothing would hold the encoder forever.
RTSP_TIMEOUT = 10

#: seconds between keyframes on network outputs
LIVE_KEYFRAME_SECONDS = 2


def confine(output_dir: Path, relative: str, field_name: str) -> Path:
    """Resolve ``relative`` under ``output_dir``; refuse anything that would land outside it, or
    anything there that is not a regular file.

    A FIFO, socket or device planted in the output directory would block or misdirect the
    encoder's open (a FIFO without a reader blocks it for the whole open timeout), so an existing
    target must be a regular file. (``outputs.OutputFiles`` then creates the file exclusively.)
    """
    if "\x00" in relative:
        raise InvalidConfig("path contains a NUL byte", field_name)
    if os.path.isabs(relative) or relative.startswith("~"):
        raise InvalidConfig(f"must be relative to the output directory, got {relative!r}", field_name)
    parts = Path(relative).parts
    if not parts:
        raise InvalidConfig(f"must name a file under the output directory, got {relative!r}", field_name)
    if ".." in parts:
        raise InvalidConfig(f"must not contain '..', got {relative!r}", field_name)
    if ":" in parts[0]:
        raise InvalidConfig(f"must be a plain path, not a URL or protocol, got {relative!r}", field_name)
    if len(relative.encode()) > 1024 or any(len(part.encode()) > 255 for part in parts):
        raise InvalidConfig("path too long: at most 1024 bytes, and 255 per file or folder name", field_name)
    root = output_dir.resolve()
    try:
        target = (root / relative).resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops and the like
        raise InvalidConfig(f"cannot resolve {relative!r}: {exc}", field_name) from None
    if not target.is_relative_to(root) or target == root:
        raise InvalidConfig(f"{relative!r} resolves outside the output directory", field_name)
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return target
    except OSError as exc:  # a parent that is a file, no permission, ...
        raise InvalidConfig(f"cannot use {relative!r}: {exc.strerror}", field_name) from None
    if stat.S_ISDIR(mode):
        raise InvalidConfig(f"{relative!r} is a directory", field_name)
    if not stat.S_ISREG(mode):
        kind = {
            stat.S_IFIFO: "a FIFO",
            stat.S_IFSOCK: "a socket",
            stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device",
        }.get(stat.S_IFMT(mode), "not a regular file")
        raise InvalidConfig(f"{relative!r} exists and is {kind}; only a regular file can be replaced", field_name)
    return target


def client_muxer(muxer: str) -> str:
    """The muxer to use when the bytes go back to the client through a custom I/O context.

    Muxers flagged AVFMT_NOFILE open files of their own and ignore the I/O context. image2 (the
    muxer for .png, .jpg, ...) has a twin that writes to the context, image2pipe, producing the
    same image bytes; the others (hls, segment, tee, ...) can't write to a client at all.
    """
    if muxer == "image2":
        return "image2pipe"
    if av.ContainerFormat(muxer, "w").no_file:
        raise InvalidConfig(
            f"muxer {muxer!r} writes files of its own and cannot send its output to the client", "format"
        )
    return muxer


class NetworkTarget(NamedTuple):
    """A checked network URL: what FFmpeg is given, the muxer its scheme implies, and muxer options
    the URL asked for (RTSP's ``?rtsp_transport=udp``)."""

    url: str
    muxer: str
    options: dict[str, str]


def network_url(url: str, field_name: str = "destination.url") -> NetworkTarget:
    """Check a network URL; return it with live defaults, the muxer its scheme implies, its options.

    The URL is read as FFmpeg will read it (``urls.parse``): anything FFmpeg would parse differently,
    a bad port, a query option that is not known to be safe, is an InvalidConfig naming
    ``field_name``, so nothing malformed is ever registered as a session.
    """
    scheme = urls.scheme_of(url)
    if scheme not in NETWORK_MUXERS:
        raise InvalidConfig(
            f"unsupported URL scheme {scheme or '(none)'!r}; expected one of {', '.join(NETWORK_MUXERS)}",
            field_name,
        )
    if scheme not in ffmpeg.publish_schemes():
        raise InvalidConfig(
            f"this server's FFmpeg has no {scheme} protocol; GET /v1/capabilities lists the ones it has",
            field_name,
        )
    target = urls.parse(url, field_name)
    url = target.url
    options: dict[str, str] = {}
    if scheme == "udp" and not any(key == "pkt_size" for key, _ in target.query):
        url += ("&" if target.raw_query else "?") + "pkt_size=1316"
    if scheme in ("rtsp", "rtsps") and target.raw_query is not None:
        url = url[: -len(target.raw_query) - 1]
        options = dict(target.query)
    return NetworkTarget(url, NETWORK_MUXERS[scheme], options)


def masked(url: str) -> str:
    """``url`` as it may be shown: no user:password, no query, RTMP stream keys hidden
    (``masking.masked``; never raises, whatever the string)."""
    return masking.masked(url)


def live_video_defaults(
    encoder: str, frame_rate: Fraction, options: dict[str, str], codec_config: dict[str, int | None]
) -> tuple[dict[str, str], dict[str, int | None]]:
    """Encoder options and codec config for a network video stream; explicit settings win."""
    options = dict(options)
    config = dict(codec_config)
    if encoder in ("libx264", "libx265"):
        options.setdefault("preset", "veryfast")
        options.setdefault("tune", "zerolatency")
    if config.get("gop_size", -1) in (-1, None) and "g" not in options:
        config["gop_size"] = max(1, math.ceil(frame_rate * LIVE_KEYFRAME_SECONDS))
    if config.get("max_b_frames", -1) in (-1, None) and "bf" not in options:
        config["max_b_frames"] = 0
    return options, config


def live_muxer_options(muxer: str, options: dict[str, str]) -> dict[str, str]:
    """Muxer options for a network output; explicit settings win."""
    options = dict(options)
    if muxer == "flv":
        options.setdefault("flvflags", "no_duration_filesize")
    if muxer == "rtsp":
        options.setdefault("rtsp_transport", "tcp")  # interleaved: through any NAT, no UDP ports to open
        options.setdefault("timeout", str(RTSP_TIMEOUT * 1_000_000))  # microseconds
    return options


#: Muxers whose plain output is unplayable until the trailer (the moov atom) is written.
MOOV_MUXERS = {"mp4", "mov", "ipod", "ismv", "3gp", "3g2", "psp", "f4v"}


def crash_safe_options(muxer: str, options: dict[str, str]) -> dict[str, str]:
    """Muxer options that keep a server-side file playable if its encoder dies mid-stream.

    MP4 becomes fragmented MP4: a self-contained fragment at least every second (and at each
    keyframe), with the header up front, so a kill loses at most the fragment being written.
    Matroska keeps each cluster in memory until it is complete, so clusters are capped at a
    second. Packets are flushed to the file as they are muxed; MPEG-TS needs nothing more.
    Explicit ``movflags`` win (e.g. ``+faststart`` for plain MP4).
    """
    options = dict(options)
    if muxer in MOOV_MUXERS and "movflags" not in options:
        options["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
        options.setdefault("frag_duration", "1000000")
    if muxer in ("matroska", "webm"):
        options.setdefault("cluster_time_limit", "1000")  # ms; clusters are written whole
    options.setdefault("flush_packets", "1")
    return options
