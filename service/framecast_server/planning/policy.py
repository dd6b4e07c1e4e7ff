"""What a session config may ask of FFmpeg: the checks that keep it inside its sandbox.

FFmpeg understands far more than any client should reach: protocols that read local files
(``file:``, ``concat:``, ``subfile:``, ``data:``, ``crypto:``, ``pipe:``), muxers that open files of
their own (``tee``, ``hls``, ``segment``, ``dash``, ``fifo``, image patterns), filters that read
files or open sockets (``movie``, ``sendcmd``, ``zmq``, ``drawtext=textfile=``, ``subtitles``, ...),
and options naming files (``passlogfile``, ``stats``, ``hls_segment_filename``, ...). This module
refuses all of that with a clear 422, and enforces the operator's limits, before any encoder,
muxer or filter is opened.

The rules, in order of strength:
1. Destinations: the output directory (paths confined by ``destinations.confine``) and URL
   schemes from an allowlist (``allowed_schemes``), optionally hosts from ``allowed_hosts``.
2. Muxers: no muxer that opens files of its own, except image2 for a single file (no ``%``), and
   HLS and DASH as server files, every file of which framecast names (``segmenting.py``) and the
   encoder opens itself, inside the playlist's directory (``encoder/confined.py``).
3. Filters, encoder options, muxer options: allowlists, checked against FFmpeg's own parse and
   option tables (``allowlist.py``); no value anywhere that looks like a path or URL.
"""

from __future__ import annotations

from typing import Literal

import av

from framecast_server.config import Settings
from framecast_server.errors import InvalidConfig
from framecast_server.planning import allowlist, segmenting, urls

_MAX_OPTIONS = 64


def allowed_name(scheme: str) -> str:
    """The name ``FRAMECAST_ALLOWED_SCHEMES`` knows a URL scheme by: ``whip`` for ``whip+http(s)``."""
    return "whip" if scheme.startswith("whip+") else scheme


def check_destination_scheme(settings: Settings, scheme: str, field: str) -> None:
    if scheme not in settings.allowed_schemes:
        raise InvalidConfig(
            f"destinations of kind {scheme!r} are not allowed on this server; allowed: "
            f"{', '.join(settings.allowed_schemes) or 'none'}",
            field,
        )


def check_url(settings: Settings, url: str, field: str = "destination.url") -> None:
    """Scheme allowlist and optional host allowlist for a network output.

    The host checked is the one FFmpeg will connect to: ``urls.parse`` refuses every URL FFmpeg
    would read differently from Python (a NUL, a backslash, a bad port, ...) and query options that
    make it listen or bind. Patterns are ``urls.HostPattern``s: a wildcard stays within one label.
    """
    scheme = urls.scheme_of(url)
    if not scheme:
        return  # destinations.network_url refuses it, naming the schemes it takes
    check_destination_scheme(settings, allowed_name(scheme), field)
    if scheme not in urls.SCHEMES:
        return  # allowed, but not a network URL ('file'): network_url refuses it the same way
    target = urls.parse(url, field)
    if settings.allowed_hosts and not urls.host_allowed(urls.patterns(tuple(settings.allowed_hosts)), target):
        raise InvalidConfig(f"host {target.host!r} is not in this server's allowed hosts", field)


#: Muxers that open their own connection to a network URL: allowed for those schemes only, whose
#: URLs ``urls.parse`` and the host allowlist have checked.
OWN_CONNECTION_MUXERS = {"rtsp": ("rtsp", "rtsps"), "whip": ("whip+http", "whip+https")}


def check_muxer(
    muxer: str,
    path: str | None,
    field: str = "format",
    path_field: str = "destination.path",
    url_scheme: str | None = None,
) -> None:
    """No muxer that opens files of its own (tee, segment, fifo, ...) but HLS and DASH as server
    files (``segmenting.py`` names their files); image2 only for one file; a network muxer (rtsp,
    whip) only for its own URL schemes."""
    if muxer in OWN_CONNECTION_MUXERS:
        if url_scheme in OWN_CONNECTION_MUXERS[muxer]:
            return
        schemes = " and ".join(f"{s}://" for s in OWN_CONNECTION_MUXERS[muxer])
        raise InvalidConfig(f"muxer {muxer!r} publishes only to {schemes} destinations", field)
    if muxer == "image2":
        if path is not None and "%" in path:
            raise InvalidConfig("image sequence patterns (%d) are not allowed; write one image", path_field)
        return
    if muxer in segmenting.MUXERS:
        if path is not None:
            return  # a server file: segmenting.py names every file it writes, inside its directory
        raise InvalidConfig(f"muxer {muxer!r} writes a playlist and segments: only as a server file", field)
    fmt = av.ContainerFormat(muxer, "w")
    if fmt.no_file or muxer in ("tee", "fifo", "hls", "dash", "segment", "stream_segment", "ssegment"):
        if muxer == "null":
            return
        raise InvalidConfig(f"muxer {muxer!r} opens files of its own and is not allowed", field)


def check_encoder_options(settings: Settings, encoder: str, options: dict[str, str], field: str) -> None:
    """Encoder options: only allowed ones, as FFmpeg resolves and parses them (``allowlist.py``)."""
    allowlist.check_encoder_options(settings, encoder, options, field)


def check_muxer_options(settings: Settings, muxer: str, options: dict[str, str], field: str) -> None:
    """Muxer options: only allowed ones, as FFmpeg resolves and parses them (``allowlist.py``)."""
    allowlist.check_muxer_options(settings, muxer, options, field)


def check_filters(settings: Settings, media: Literal["video", "audio"], desc: str, field: str) -> None:
    """A filter chain: only allowed filters and options, parsed as FFmpeg parses it (``allowlist.py``)."""
    allowlist.check_filters(settings, media, desc, field)


def check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > _MAX_OPTIONS:
        raise InvalidConfig(f"at most {_MAX_OPTIONS} metadata entries, got {len(metadata)}", "metadata")
    for key, value in metadata.items():
        if len(key) > 256 or len(value) > 4096 or "\x00" in key + value:
            raise InvalidConfig("metadata keys up to 256 and values up to 4096 characters, no NUL", f"metadata.{key}")


def check_limits(settings: Settings, kind: str, where: str, **values: float) -> None:
    """Operator limits on sizes and rates; each refusal names the limit and the setting that sets it.

    These bound what a stream takes in and hands its encoder; what a filter chain puts out is held
    to the same limits in the encoder process (``encoder/output.py``), and what a session produces in all
    to its quotas (``quotas.py``).
    """
    limits = {
        "width": (settings.max_width, "FRAMECAST_MAX_WIDTH"),
        "height": (settings.max_height, "FRAMECAST_MAX_HEIGHT"),
        "frame_rate": (settings.max_frame_rate, "FRAMECAST_MAX_FRAME_RATE"),
        "sample_rate": (settings.max_sample_rate, "FRAMECAST_MAX_SAMPLE_RATE"),
        "num_channels": (settings.max_channels, "FRAMECAST_MAX_CHANNELS"),
    }
    for name, value in values.items():
        limit, setting = limits[name]
        if value > limit:
            raise InvalidConfig(
                f"{name} {value:g} is above this server's limit of {limit:g} ({setting})", f"{where}.{name}"
            )
