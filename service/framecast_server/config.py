"""Server settings, read from the environment (prefix ``FRAMECAST_``) and injected.

Nothing reads settings at import time: ``create_app(settings)`` receives a ``Settings`` and hands
it to what needs it, so tests build as many differently configured apps as they like.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from framecast_server import libyuv
from framecast_server.libyuv import Choice, Conversion
from framecast_server.scheduling import Policy

#: A replica id: a DNS label (RFC 1123), as a StatefulSet pod name is; it becomes a session id's prefix.
REPLICA_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Peer:
    """Another replica of the fleet (``FRAMECAST_PEERS``): its URL, and its replica id when given
    as ``ID=URL`` (so that a replica can tell itself apart in a list shared by all)."""

    url: str
    replica: str | None = None

    @classmethod
    def parse(cls, text: str) -> Peer:
        name, sep, url = text.partition("=")
        if not sep:
            name, url = "", text
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a peer is [REPLICA_ID=]http(s)://host:port, got {text!r}")
        name = name.strip()
        if name and not REPLICA_ID.fullmatch(name):
            raise ValueError(f"a peer's replica id is a DNS label (a-z, 0-9, -), got {name!r}")
        return cls(url.rstrip("/"), name or None)


class Settings(BaseSettings):
    """Everything an operator can tune. Each field is also ``FRAMECAST_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FRAMECAST_", extra="ignore")

    @field_validator(
        "api_keys", "admin_keys", "allowed_schemes", "allowed_hosts", "cors_origins", "peers", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        """Lists come from the environment as comma-separated strings."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("replica_id")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not REPLICA_ID.fullmatch(value):
            raise ValueError("a replica id is a DNS label: 1-63 of a-z, 0-9 and -, not starting or ending with -")
        return value

    @field_validator("peers", mode="after")
    @classmethod
    def _peers(cls, value: list[str]) -> list[str]:
        for text in value:
            Peer.parse(text)
        return value

    @functools.cached_property
    def peer_list(self) -> list[Peer]:
        """``peers`` parsed (once: every fleet list asks for them)."""
        return [Peer.parse(text) for text in self.peers]

    @model_validator(mode="after")
    def _no_open_door(self) -> Settings:
        """Refuse to listen beyond loopback without API keys, unless told so explicitly."""
        if not self.api_keys and not self.admin_keys and not self.loopback_only and not self.insecure:
            raise ValueError(
                f"refusing to listen on {self.host} without API keys: set FRAMECAST_API_KEYS, or "
                "pass --insecure (FRAMECAST_INSECURE=1) if something in front of this server authenticates"
            )
        return self

    @model_validator(mode="after")
    def _buffer_holds_a_message(self) -> Settings:
        """Every chunk message must fit into the encoder buffer, or it could never be taken."""
        if self.encoder_buffer_bytes < self.max_message_bytes:
            raise ValueError(
                f"encoder_buffer_bytes ({self.encoder_buffer_bytes}) must be at least max_message_bytes "
                f"({self.max_message_bytes}): a chunk message has to fit into it"
            )
        return self

    @field_validator("rgb_conversion")
    @classmethod
    def _libyuv_is_there(cls, value: Choice) -> Choice:
        """Asked for by name, libyuv must load: a server never quietly runs slower than it was told."""
        if value == "libyuv" and not libyuv.available():
            raise ValueError(f"libyuv ({libyuv.SONAME}) cannot be loaded: install Debian's libyuv0, or use 'auto'")
        return value

    @property
    def rgb_converter(self) -> Conversion:
        """What converts RGB frames for yuv420p encoders on this machine (``rgb_conversion`` resolved)."""
        return libyuv.resolve(self.rgb_conversion)

    @property
    def loopback_only(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port the HTTP server listens on.")
    output_dir: Path = Field(Path("output"), description="Root of every server-side output file.")
    public_url: str | None = Field(
        None,
        description="Base URL clients use to reach this server (for the websocket URLs it hands "
        "out); default: derived from each request.",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="API keys accepted as bearer tokens (comma-separated in FRAMECAST_API_KEYS). "
        "Without any, the server only listens on loopback unless `insecure` is set.",
    )
    admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Operator keys (comma-separated in FRAMECAST_ADMIN_KEYS): accepted like API keys, and "
        "they see and act on every tenant's sessions and read per-session metrics. An API key sees only "
        "the sessions it created.",
    )
    insecure: bool = Field(False, description="Allow listening beyond loopback without API keys.")
    allowed_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["file", "rtmp", "rtmps", "rtsp", "rtsps", "whip", "udp", "srt", "tcp"],
        description="Destinations allowed: 'file' (the output dir, and client-side outputs) and URL schemes.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins (https://player.example.com) whose pages may call this server from the "
        "browser, e.g. a player fetching a session's HLS playlist and segments; '*' for any. Default: none.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="If set, network outputs may only go to these hosts: names or IPv4 addresses with "
        "wildcards that stay within one label ('*.example.com' matches a.example.com, not a.b.example.com; "
        "'10.0.0.*'), CIDR networks ('10.0.0.0/24', 'fd00::/8') or IPv6 addresses. Names are matched as "
        "names, before DNS: listing one trusts its DNS.",
    )
    server_names: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Without API keys, requests are answered only if their Host header is loopback "
        "(localhost, 127.x.x.x, [::1]), the host of FRAMECAST_PUBLIC_URL or one of these names "
        "(comma-separated in FRAMECAST_SERVER_NAMES): a defence against DNS rebinding.",
    )

    @field_validator("server_names", mode="before")
    @classmethod
    def _server_name_list(cls, value: object) -> object:
        """Comma-separated in the environment, like the other lists."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        """Every allowed-hosts pattern must compile, so a typo stops the server, not a session."""
        from framecast_server.planning.urls import patterns

        patterns(tuple(value))
        return value

    max_sessions: int = Field(64, ge=1, description="Sessions open at once.")
    max_sessions_per_key: int = Field(
        16, ge=1, description="Sessions open at once for one API key, on this replica (each replica counts its own)."
    )
    # -- a replica among several (README "Running more than one") ----------------------------
    replica_id: str | None = Field(
        None,
        description="This replica's name in a fleet behind a proxy (a DNS label: a StatefulSet pod name, r1, ...). "
        "Session ids become <replica>.<hex>, so the proxy routes each session's requests to its owner.",
    )
    peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The fleet's replicas as [REPLICA_ID=]URL (comma-separated in FRAMECAST_PEERS): GET "
        "/v1/sessions answers for all of them.",
    )
    drain_timeout: float = Field(
        3600.0,
        gt=0,
        description="Seconds a draining replica (framecast drain, SIGUSR1, POST /v1/admin/drain) waits for its "
        "sessions to end before it finalizes the rest and exits.",
    )
    max_outputs: int = Field(8, ge=1, le=64, description="Destinations one session may write to at once.")
    max_width: int = Field(7680, ge=16, description="Largest frame width.")
    max_height: int = Field(4320, ge=16, description="Largest frame height.")
    max_frame_rate: float = Field(240.0, gt=0, description="Highest video frame rate.")
    max_sample_rate: int = Field(384_000, ge=8000, description="Highest audio sample rate.")
    max_channels: int = Field(16, ge=1, description="Most audio channels.")
    max_queued_output_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Encoded bytes waiting for a slow client before the session stops taking chunks.",
    )
    keep_finished_sessions: int = Field(
        1000, ge=0, description="Closed or failed sessions kept for GET /v1/sessions and downloads."
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, description="Largest websocket message; clients split chunks to fit."
    )
    encoder_buffer_bytes: int = Field(
        32 * 1024 * 1024,
        ge=64 * 1024,
        description="Shared memory between the server and one encoder process for chunks on their "
        "way to it; at least FRAMECAST_MAX_MESSAGE_BYTES. Pages are used only as chunks need them.",
    )
    shared_memory: bool = Field(
        True,
        description="Offer clients on this machine that ask for it shared memory for chunk payloads "
        "(/dev/shm), so their chunks skip the websocket's copies.",
    )
    shared_memory_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Most shared memory one session is offered: 8 frames of its largest video stream as they "
        "cross the wire (yuv420p or the input format), at least 16 MiB, within this. Reserved for the "
        "session's lifetime.",
    )
    spare_encoders: int = Field(
        1,
        ge=0,
        le=16,
        description="Encoder processes kept started ahead of sessions, so that opening one skips "
        "starting a process (~15 ms; the server's first session ~0.5 s). 0: each session starts its own.",
    )
    encoder_scheduling: Policy = Field(
        "batch",
        description="How the kernel schedules encoder processes: 'batch' (SCHED_BATCH: their wake-ups "
        "never preempt the server, which relays every session's chunks and ACKs) or 'normal' (the "
        "default policy). Linux; elsewhere encoders keep the default.",
    )
    rgb_conversion: Choice = Field(
        "auto",
        description="What converts RGB frames for yuv420p encoders (H.264's usual input): 'libyuv' (4-5x "
        "faster than swscale, closer to the exact BT.601 transform; Debian's libyuv0), 'swscale' (what "
        "PyAV and the ffmpeg CLI use), or 'auto': libyuv where it is installed.",
    )
    open_timeout: float = Field(
        30.0, gt=0, description="Seconds an encoder process may take to start and open its output."
    )
    connect_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a network output may take to connect, or take nothing while it streams, before it "
        "counts as unreachable: a first connect fails the output, a stalled one is reconnected.",
    )
    reconnect_timeout: float = Field(
        60.0, gt=0, description="Seconds a dropped network destination may stay down before its session fails."
    )
    finish_timeout: float = Field(
        120.0, gt=0, description="Seconds an encoder may take to flush and write its trailer."
    )
    resume_timeout: float = Field(
        30.0, ge=0, description="Seconds a session waits for its client to reconnect before finalizing."
    )
    idle_timeout: float = Field(
        300.0, gt=0, description="Seconds a session with no client and no data is kept before it is finalized."
    )
    log_level: str = Field("info", description="Logging level (debug, info, warning, error).")
    log_format: Literal["text", "json"] = Field("text", description="Log lines as readable text or JSON.")
    max_queued_message_bytes: int = Field(
        1024 * 1024,
        ge=64 * 1024,
        description="Errors, warnings and events waiting for a client that does not read; past it new ones "
        "are dropped (the client is told how many once it reads again).",
    )
    max_error_replies_per_second: int = Field(
        20, ge=1, description="Error replies a session sends each second; more refusals are answered by one summary."
    )
    max_refused_in_a_row: int = Field(
        100,
        ge=1,
        description="Refused messages in a row, nothing valid in between, before the connection is closed "
        "(1008; the session goes on and the client may reconnect).",
    )
    max_refused_bytes_in_a_row: int = Field(
        256 * 1024 * 1024,
        ge=64 * 1024,
        description="Refused bytes in a row, nothing valid in between, before the connection is closed (1008).",
    )
    connect_grace: float = Field(
        30.0, gt=0, description="Seconds a new session waits for its first client before it is finalized."
    )
    shared_memory_total_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1024 * 1024,
        description="Shared memory all sessions together are offered; a session past it goes without "
        "(its chunks come over the websocket).",
    )
    max_connections: int = Field(
        1000,
        ge=8,
        description="HTTP and websocket connections at once; more are closed as they come (uvicorn's "
        "limit_concurrency answers 503 before that). The file descriptor limit is raised to allow it where possible.",
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's headers (slow or stalled requests are closed).",
    )
    keep_alive_timeout: float = Field(
        5.0, gt=0, description="Seconds an idle keep-alive connection is kept open between requests."
    )
    # -- quotas and memory (quotas.py, budget.py) ----------------------------------------------
    max_session_bytes: int = Field(
        64 * 1024**3,
        ge=0,
        description="Encoded bytes one session may write, all outputs (client-side too); past it the output "
        "is finalized and the session stops with the reason. 0: no limit.",
    )
    max_session_seconds: float = Field(
        24 * 3600.0,
        ge=0,
        description="Seconds of media one session may encode (its longest stream, as encoded: duplicates and "
        "frames made by filters count); past it the output is finalized and the session stops. 0: no limit.",
    )
    max_output_bytes_per_session: int = Field(
        0,
        ge=0,
        description="Bytes one session's server files may take on disk at once (a live playlist's or a rotating "
        "recording's, whose old files are deleted, can stay under it for ever); past it the output is "
        "finalized and the session stops with the reason. 0: no limit.",
    )
    min_free_disk: int = Field(
        512 * 1024**2,
        ge=0,
        description="Bytes to keep free on the output directory's disk: below it sessions writing there are "
        "finalized and stopped, and new ones refused (507). 0: no limit.",
    )
    max_key_bytes: int = Field(
        1024 * 1024**3,
        ge=0,
        description="Encoded bytes all sessions of one API key may write since the server started; past it "
        "its open sessions stop and new ones are refused (503). 0: no limit.",
    )
    max_key_seconds: float = Field(
        30 * 24 * 3600.0,
        ge=0,
        description="Seconds of media all sessions of one API key may encode since the server started. 0: no limit.",
    )
    max_pts_gap: float = Field(
        60.0,
        gt=0,
        description="Seconds a chunk's pts may jump past the end of its stream's previous chunk; the gap is "
        "filled (silence, repeated frames), so a larger jump is refused with the chunk.",
    )
    encoder_memory_limit: int = Field(
        4 * 1024**3,
        ge=0,
        description="Address space (RLIMIT_AS) of one encoder process, in bytes; a session whose encoder "
        "runs out fails saying so, and one estimated never to fit is refused (422). 0: no limit.",
    )
    memory_budget: int | None = Field(
        None,
        ge=64 * 1024 * 1024,
        description="Bytes of encoder memory all open sessions together may be estimated to need; a "
        "session that does not fit is refused (503). Default: three quarters of the machine's memory.",
    )
    # -- what sessions may ask of FFmpeg (allowlist.py) -----------------------------------------
    extra_filters: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Filters allowed in filter_desc besides the built-in allowlist (comma-separated). Each "
        "one is trusted with all of its options: add none that reads or writes files or opens connections.",
    )
    extra_encoder_options: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Encoder options allowed besides the built-in allowlist (comma-separated names); "
        "'flags.VALUE' allows a flag value, 'x264-params.KEY' (x265-params, svtav1-params) a library parameter.",
    )
    extra_muxer_options: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Muxer options allowed besides the built-in allowlist (comma-separated names); "
        "'movflags.VALUE' (fflags) allows a flag value.",
    )
    # -- the JavaScript client's examples (dashboard.py) ---------------------------------------
    examples: bool = Field(
        False,
        description="Serve the example pages (/examples/canvas: a canvas and a tone pushed with framecast.js).",
    )

    @field_validator("extra_filters", "extra_encoder_options", "extra_muxer_options", mode="before")
    @classmethod
    def _extra_allowlist(cls, value: object) -> object:
        """Allowlist extensions come from the environment as comma-separated strings."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value
