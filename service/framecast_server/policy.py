"""What a session config may ask of FFmpeg: the checks that keep it inside its sandbox.

FFmpeg understands far more than any client should reach: protocols that read local files
(``file:``, ``concat:``, ``subfile:``, ``data:``, ``crypto:``, ``pipe:``), muxers that open files of
their own (``tee``, ``hls``, ``segment``, ``dash``, ``fifo``, image patterns), filters that read
files or open sockets (``movie``, ``sendcmd``, ``zmq``, ``drawtext=textfile=``, ``subtitles``, ...),
and options naming files (``passlogfile``, ``stats``, ``hls_segment_filename``, ...). This module
refuses all of that with a clear 422, and enforces the operator's limits. Everything here is
plain string and number checks, applied before any FFmpeg object exists.

The rules, in order of strength:
1. Destinations: the output directory (paths confined by ``destinations.confine``) and URL
   schemes from an allowlist (``allowed_schemes``), optionally hosts from ``allowed_hosts``.
2. Muxers: no muxer that opens files of its own, except image2 for a single file (no ``%``).
3. Filters: a denylist of filters that read, write, load or listen, and of file-naming options.
4. Option values anywhere (encoder, muxer, filter arguments): no URLs, absolute or parent paths.
5. Option names: a denylist of options that name files or URLs.
"""

from __future__ import annotations

import re

import av

from . import urls
from .config import Settings
from .errors import InvalidConfig

#: Filters that read or write files, load code, talk to the network or run commands.
DENIED_FILTERS = frozenset(
    {
        "movie", "amovie", "sendcmd", "asendcmd", "zmq", "azmq", "ladspa", "lv2", "frei0r",
        "frei0r_src", "lut1d", "lut3d", "subtitles", "ass", "ocr", "vidstabdetect", "vidstabtransform",
        "dnn_classify", "dnn_detect", "dnn_processing", "sr", "derain", "arnndn", "signature",
        "qrencode", "qrencodesrc", "vmafmotion", "libvmaf", "metadata", "ametadata", "ebur128",
        "psnr", "ssim", "xpsnr", "msad", "identity", "corr", "coreimage", "coreimagesrc", "opencl",
        "openclsrc", "avgblur_opencl", "program_opencl", "cover_rect", "find_rect", "apad_file",
        "nnedi", "afir", "sofalizer", "spectrumsynth", "showspatial", "whisper",
    }
)

#: Option names that take a file name, a URL or a command: refused in encoder, muxer and filter options.
_DENIED_OPTION = re.compile(
    r"(file|path|url|uri|list|log|dump|stats|passlog|key_info|master_pl|"
    r"model|script|command|cmd|protocol_whitelist|protocol_blacklist|"
    r"headers|listen|fifo|tee|hls_base_url|segment|init_seg|media_seg|attach)",
    re.IGNORECASE,
)

#: Option values that point somewhere: a URL or protocol prefix, an absolute, home or parent path.
_DENIED_VALUE = re.compile(r"(^\s*[/~\\]|\.\.|[a-z][a-z0-9+.-]*:(?!\d)|\|)", re.IGNORECASE)

#: Options whose values are lists of ``key=value`` pairs for the encoder library itself.
_PARAM_LISTS = ("x264-params", "x265-params", "x264opts", "svtav1-params", "aom-params", "rav1e-params")

_MAX_OPTIONS = 64
_MAX_VALUE = 1024


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
    check_destination_scheme(settings, scheme, field)
    if scheme not in urls.SCHEMES:
        return  # allowed, but not a network URL ('file'): network_url refuses it the same way
    target = urls.parse(url, field)
    if settings.allowed_hosts and not urls.host_allowed(urls.patterns(tuple(settings.allowed_hosts)), target):
        raise InvalidConfig(f"host {target.host!r} is not in this server's allowed hosts", field)


def check_muxer(muxer: str, path: str | None, field: str = "format") -> None:
    """No muxer that opens files of its own (tee, hls, segment, dash, fifo, ...); image2 only for one file."""
    if muxer == "image2":
        if path is not None and "%" in path:
            raise InvalidConfig("image sequence patterns (%d) are not allowed; write one image", "destination.path")
        return
    fmt = av.ContainerFormat(muxer, "w")
    if fmt.no_file or muxer in ("tee", "fifo", "hls", "dash", "segment", "stream_segment", "ssegment"):
        if muxer == "null":
            return
        raise InvalidConfig(f"muxer {muxer!r} opens files of its own and is not allowed", field)


def check_options(options: dict[str, str], field: str) -> None:
    """Encoder or muxer options: bounded, no file- or URL-naming option, no value pointing anywhere."""
    if len(options) > _MAX_OPTIONS:
        raise InvalidConfig(f"at most {_MAX_OPTIONS} options, got {len(options)}", field)
    for key, value in options.items():
        where = f"{field}.{key}"
        if len(value) > _MAX_VALUE or len(key) > 64:
            raise InvalidConfig(f"option too long (at most {_MAX_VALUE} characters)", where)
        if _DENIED_OPTION.search(key):
            raise InvalidConfig(f"option {key!r} names files, URLs or commands and is not allowed", where)
        if key in _PARAM_LISTS:
            for pair in re.split(r"[:,]", value):
                name = pair.partition("=")[0]
                if _DENIED_OPTION.search(name) or _DENIED_VALUE.search(pair.partition("=")[2]):
                    raise InvalidConfig(f"{key} entry {pair!r} names files or URLs and is not allowed", where)
            continue
        if _DENIED_VALUE.search(value):
            raise InvalidConfig(f"value {value!r} looks like a path or URL; not allowed in options", where)


def check_filters(chain: list[tuple[str, str | None]], field: str) -> None:
    """A parsed filter chain: no denied filter, no file-naming argument, no value pointing anywhere."""
    if len(chain) > 32:
        raise InvalidConfig(f"at most 32 filters in a chain, got {len(chain)}", field)
    for name, args in chain:
        base = name.split("@", 1)[0]
        if base in DENIED_FILTERS:
            raise InvalidConfig(f"filter {base!r} reads or writes files, or opens connections; not allowed", field)
        for arg in re.split(r"(?<!\\):", args or ""):
            key, sep, value = arg.partition("=")
            if sep and _DENIED_OPTION.search(key):
                raise InvalidConfig(f"filter option {key!r} of {base!r} names files or URLs; not allowed", field)
            if _DENIED_VALUE.search(value if sep else key):
                raise InvalidConfig(f"filter argument {arg!r} of {base!r} looks like a path or URL; not allowed",
                                    field)


def check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > _MAX_OPTIONS:
        raise InvalidConfig(f"at most {_MAX_OPTIONS} metadata entries, got {len(metadata)}", "metadata")
    for key, value in metadata.items():
        if len(key) > 256 or len(value) > 4096 or "\x00" in key + value:
            raise InvalidConfig("metadata keys up to 256 and values up to 4096 characters, no NUL", f"metadata.{key}")


def check_limits(settings: Settings, kind: str, where: str, **values: float) -> None:
    """Operator limits on sizes and rates; each refusal names the limit."""
    limits = {
        "width": settings.max_width,
        "height": settings.max_height,
        "frame_rate": settings.max_frame_rate,
        "sample_rate": settings.max_sample_rate,
        "num_channels": settings.max_channels,
    }
    for name, value in values.items():
        limit = limits[name]
        if value > limit:
            raise InvalidConfig(f"{name} {value:g} is above this server's limit of {limit:g}", f"{where}.{name}")
