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
from typing import TYPE_CHECKING, NamedTuple

import av

from framecast_server import masking
from framecast_server.errors import InvalidConfig
from framecast_server.planning import ffmpeg, urls

if TYPE_CHECKING:  # plan.py imports this module
    from framecast_server.planning.plan import AudioPlan, VideoPlan

#: scheme -> the muxer it implies
NETWORK_MUXERS = {
    "rtmp": "flv",
    "rtmps": "flv",
    "rtsp": "rtsp",
    "rtsps": "rtsp",
    "udp": "mpegts",
    "tcp": "mpegts",
    "srt": "mpegts",
    "whip+http": "whip",
    "whip+https": "whip",
}

#: muxers whose default codecs (FLV1, MP3, MPEG-2, MP2, MPEG-4 part 2) no live viewer wants: use H.264 + AAC
LIVE_ENCODERS = {
    "flv": ("libx264", "aac"),
    "mpegts": ("libx264", "aac"),
    "rtsp": ("libx264", "aac"),
    "whip": ("libx264", "libopus"),
}

#: What WebRTC players decode, and what FFmpeg's WHIP muxer sends: H.264 without B-frames (baseline:
#: every browser's hardware decoder takes it) and Opus at 48 kHz in stereo.
WHIP_VIDEO_ENCODERS = ("libx264",)
WHIP_AUDIO_ENCODERS = ("libopus",)

#: Seconds an RTSP server may leave the publisher waiting for an answer: without a bound, one that
#: accepts the connection and says nothing would hold the encoder forever.
RTSP_TIMEOUT = 10

#: seconds between keyframes on network outputs
LIVE_KEYFRAME_SECONDS = 2


def confine(output_dir: Path, relative: str, field_name: str) -> Path:
    """Resolve ``relative`` under ``output_dir``; refuse anything that would land outside it, in the
    server's own directories (a top-level name starting with '.'), that goes through a symlink, or
    that is there already and is not a regular file.

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
    if parts[0].startswith("."):  # .encoders, .sessions (records.py), and whatever the server adds later
        raise InvalidConfig(
            f"names starting with '.' at the top of the output directory are the server's own, got {relative!r}",
            field_name,
        )
    if len(relative.encode()) > 1024 or any(len(part.encode()) > 255 for part in parts):
        raise InvalidConfig("path too long: at most 1024 bytes, and 255 per file or folder name", field_name)
    root = output_dir.resolve()
    try:
        target = (root / relative).resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops and the like
        raise InvalidConfig(f"cannot resolve {relative!r}: {exc}", field_name) from None
    if not target.is_relative_to(root) or target == root:
        raise InvalidConfig(f"{relative!r} resolves outside the output directory", field_name)
    walked = root
    for part in parts:  # a symlink planted in the output directory is never followed, even within it
        walked = walked / part
        if walked.is_symlink():
            raise InvalidConfig(
                f"{relative!r} goes through a symlink ({walked.relative_to(root)}); symlinks are not followed",
                field_name,
            )
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


def whip_video(video: VideoPlan, where: str) -> None:
    """Make ``video`` a WHIP stream: H.264 in the baseline profile, no B-frames.

    Raises:
        InvalidConfig: the config names another encoder.
    """
    if video.encoder not in WHIP_VIDEO_ENCODERS:
        raise InvalidConfig(
            f"WHIP sends H.264: encoder must be one of {', '.join(WHIP_VIDEO_ENCODERS)}, got {video.encoder!r}",
            where + ".encoder",
        )
    video.encoder_format = "yuv420p"
    video.encoder_option = {**video.encoder_option, "profile": "baseline"}
    video.codec_config = {**video.codec_config, "max_b_frames": 0}


def whip_audio(audio: AudioPlan, where: str) -> None:
    """Make ``audio`` a WHIP stream: Opus at 48 kHz in stereo.

    Raises:
        InvalidConfig: the config names another encoder.
    """
    if audio.encoder not in WHIP_AUDIO_ENCODERS:
        raise InvalidConfig(
            f"WHIP sends Opus: encoder must be one of {', '.join(WHIP_AUDIO_ENCODERS)}, got {audio.encoder!r}",
            where + ".encoder",
        )
    audio.encoder_sample_rate = 48000
    audio.encoder_num_channels = 2
    if audio.encoder_format not in ("s16", "flt"):
        audio.encoder_format = "flt"


def whip_certificate(directory: Path) -> tuple[str, str]:
    """The DTLS certificate and key a WHIP publisher presents: an ECDSA P-256 one, made once per
    server in ``directory`` (the encoders' working directory, inside the output directory).

    FFmpeg makes its own otherwise, on curve P-224, which WebRTC stacks refuse (OpenSSL in aiortc
    answers the handshake with an illegal_parameter alert; browsers take P-256 only).
    """
    cert, key = directory / "whip-cert.pem", directory / "whip-key.pem"
    if cert.is_file() and key.is_file():
        return str(cert), str(key)
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "framecast")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(private, hashes.SHA256())
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with os.fdopen(os.open(key, flags, 0o600), "wb") as out:
        out.write(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return str(cert), str(key)


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
    config = keyframe_defaults(frame_rate, options, config, LIVE_KEYFRAME_SECONDS)
    if config.get("max_b_frames", -1) in (-1, None) and "bf" not in options:
        config["max_b_frames"] = 0
    return options, config


def keyframe_defaults(
    frame_rate: Fraction, options: dict[str, str], codec_config: dict[str, int | None], seconds: float
) -> dict[str, int | None]:
    """A keyframe at least every ``seconds`` (a live receiver joins on one; an HLS or DASH segment
    starts on one), unless the config sets the interval; a shorter one already planned stays."""
    config = dict(codec_config)
    if "g" in options:
        return config
    gop = max(1, math.ceil(frame_rate * Fraction(seconds).limit_denominator(1000)))
    current = config.get("gop_size", -1)
    if current in (-1, None) or (current is not None and current > gop):
        config["gop_size"] = gop
    return config


def steady_keyframes(encoder: str, options: dict[str, str]) -> dict[str, str]:
    """No keyframes but the interval's for an HLS or DASH output, whose segments start on keyframes
    and should last the interval each: x264 otherwise adds one at each scene cut. Explicit
    settings win."""
    options = dict(options)
    if encoder == "libx264":
        options.setdefault("sc_threshold", "0")
    return options


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
