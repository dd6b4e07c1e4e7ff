"""The ``framecast`` command.

    framecast serve                      run the server (needs ``framecast[server]``)
    framecast sessions [list]            the server's sessions: state, destination, counters, age
    framecast sessions show ID           one session in full, with its events
    framecast sessions close ID          finish a session (flush, trailer, close)
    framecast capabilities               what the server's FFmpeg has
    framecast push FILE DST [DST...]     decode a media file and stream it through the server

Every command but ``serve`` takes ``--server`` (default $FRAMECAST_SERVER, else
http://127.0.0.1:8000) and ``--api-key`` (default $FRAMECAST_API_KEY). Errors are one line on
stderr and a non-zero exit status.

``push`` decodes with PyAV, which the SDK itself does not need: it is imported only by that
command (``pip install 'framecast[server]'`` or ``pip install av``). It takes the first video and
the first audio stream, writes the pictures in order as rgb24 at the stream's average frame rate
(kept exact: 30000/1001 stays 30000/1001) and the audio as interleaved float32 at its own rate and
channel count; a stream that starts later than the other keeps its offset. Given several DSTs,
it streams to all of them in one session (encoded once); one that fails for good is reported and
the others go on.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FramecastError, TransportError
from .rest import RestClient, server_url

#: Exit status for bad usage or a missing optional dependency (argparse uses 2 as well).
EXIT_USAGE = 2
#: Exit status for everything that went wrong at run time.
EXIT_ERROR = 1

SERVER_PREFIX = "server:"


class CliError(Exception):
    """A problem the command reports as one line on stderr."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# -- argument parsing --------------------------------------------------------------------------


def _shared_flags(default: Any, json_default: Any) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The flags every remote command takes (``--server``, ``--api-key``) and ``--json``."""
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--server", default=default, help="server URL (default $FRAMECAST_SERVER, else http://127.0.0.1:8000)"
    )
    remote.add_argument("--api-key", default=default, help="API key (default $FRAMECAST_API_KEY)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", default=json_default, help="print the server's JSON answer")
    return remote, as_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framecast", description="Stream tensors into FFmpeg encoders.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the framecast server")
    serve.add_argument("--host", default=None, help="bind address (FRAMECAST_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (FRAMECAST_PORT, default 8000)")
    serve.add_argument(
        "--output-dir", type=Path, default=None, help="server-side outputs (FRAMECAST_OUTPUT_DIR, default ./output)"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening beyond loopback without API keys (FRAMECAST_INSECURE); behind an authenticating proxy",
    )

    remote, as_json = _shared_flags(None, False)
    # Flags given before the action (`sessions --json list`) must survive the action's parser,
    # whose own defaults would otherwise overwrite them: there they default to nothing at all.
    action_remote, action_json = _shared_flags(argparse.SUPPRESS, argparse.SUPPRESS)

    sessions = sub.add_parser(
        "sessions",
        parents=[remote, as_json],
        help="list, show and close sessions (no action: list)",
        description="Without an action, list the sessions, as `git remote` and `docker ps` do.",
    )
    actions = sessions.add_subparsers(dest="action", metavar="ACTION")
    action_flags = [action_remote, action_json]
    actions.add_parser("list", parents=action_flags, help="every session: state, destination, counters, age")
    show = actions.add_parser("show", parents=action_flags, help="one session in full, with its events")
    show.add_argument("id", help="session id")
    close = actions.add_parser("close", parents=action_flags, help="finish a session: flush, trailer, close")
    close.add_argument("id", help="session id")

    sub.add_parser("capabilities", parents=[remote, as_json], help="what the server's FFmpeg can do")

    drain = sub.add_parser(
        "drain",
        parents=[remote, as_json],
        help="drain a replica: no new sessions, the live ones go on, then it exits",
        description="Drain the server at --server (one replica, not the proxy) for a rolling update: it takes "
        "no new sessions from now on, its live sessions go on until they end or the timeout passes, then it "
        "finalizes what is left and exits. Needs an admin key on a server with keys.",
    )
    drain.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds its live sessions may go on (default: the server's FRAMECAST_DRAIN_TIMEOUT)",
    )
    drain.add_argument(
        "--wait", action="store_true", help="return once the server has exited (e.g. as a Kubernetes preStop hook)"
    )

    push = sub.add_parser(
        "push",
        parents=[remote],
        help="decode a media file and stream it through the server",
        description="Decode FILE (its first video and first audio stream) and stream it through the "
        "server to DST, in real time unless --no-realtime. DST is a URL (rtmp://, udp://, ...), a local "
        "path (the encoded bytes come back here), or server:PATH for a file under the server's output dir. "
        "Several DSTs get the same encoded streams, in one session; at most one may be a local path.",
    )
    push.add_argument("file", help="media file to decode (anything FFmpeg reads)")
    push.add_argument(
        "dst", nargs="+", help="rtmp://..., udp://..., a local path, or server:relative/path.mp4 (one or more)"
    )
    push.add_argument(
        "--format", default=None, help="output muxer of a single DST (default: from DST's name or scheme)"
    )
    push.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send at media time, as ffmpeg -re (default: on)",
    )
    push.add_argument(
        "-y",
        "--overwrite",
        action="store_true",
        help="replace server:PATH files that exist, as ffmpeg -y (default: such a DST is refused)",
    )
    push.add_argument("--no-video", dest="video", action="store_false", help="leave the video stream out")
    push.add_argument("--no-audio", dest="audio", action="store_false", help="leave the audio stream out")
    push.add_argument("--duration", type=float, default=None, help="stop after this many seconds of media")
    push.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            from framecast_server.api.serve import serve as run
        except ImportError as exc:
            print(f"framecast serve needs the server extra: pip install 'framecast[server]' ({exc})", file=sys.stderr)
            return EXIT_USAGE
        run(host=args.host, port=args.port, output_dir=args.output_dir, insecure=args.insecure)
        return 0
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "sessions": cmd_sessions,
        "capabilities": cmd_capabilities,
        "drain": cmd_drain,
        "push": cmd_push,
    }
    try:
        return commands[args.command](args)
    except CliError as exc:
        print(f"framecast {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except FramecastError as exc:
        hint = _hint(args.command, exc)
        print(f"framecast {args.command}: {exc}{hint}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"framecast {args.command}: interrupted", file=sys.stderr)
        return 130


def _hint(command: str, exc: FramecastError) -> str:
    """What to do next, for the errors a flag of this command answers."""
    if getattr(exc, "status", None) == 401:
        return " (pass --api-key or set FRAMECAST_API_KEY)"
    detail = getattr(exc, "detail", None)
    if command == "push" and isinstance(detail, dict) and detail.get("code") == "path_exists":
        return " (pass -y to replace it)"
    return ""


def _rest(args: argparse.Namespace) -> RestClient:
    return RestClient(args.server, args.api_key, timeout=60.0)


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    print()


# -- sessions ----------------------------------------------------------------------------------


def cmd_sessions(args: argparse.Namespace) -> int:
    rest = _rest(args)
    try:
        if args.action in (None, "list"):
            listed = rest.list_sessions()
            if args.json:
                _print_json(listed.sessions)
            else:
                print(format_sessions_table(listed.sessions, now=time.time()))
            for peer in listed.unanswered:  # a fleet's replica that did not answer: its sessions are missing
                name = f"replica {peer.get('replica')} ({peer.get('url')})" if peer.get("replica") else peer.get("url")
                print(f"framecast sessions: {name} did not answer: {peer.get('reason')}", file=sys.stderr)
        elif args.action == "show":
            info: dict[str, Any] = rest.request("GET", f"/v1/sessions/{args.id}")
            if args.json:
                _print_json(info)
            else:
                print(format_session(info, now=time.time()))
        else:  # close
            info = rest.request("DELETE", f"/v1/sessions/{args.id}")
            if args.json:
                _print_json(info)
            else:
                error = f": {info['error']}" if info.get("error") else ""
                print(f"session {info['id']} {info['state']}{error}; {_bytes(info.get('output_bytes', 0))} written")
    finally:
        rest.close()
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    rest = _rest(args)
    try:
        status: dict[str, Any] = rest.request(
            "POST", "/v1/admin/drain", json=None if args.timeout is None else {"timeout": args.timeout}
        )
        if args.json:
            _print_json(status)
        else:
            print(format_drain(status))
        if not args.wait:
            return 0
        sessions = status.get("sessions")
        while True:  # until the server has exited: its own deadline bounds this
            time.sleep(1.0)
            try:
                status = rest.request("GET", "/v1/admin/drain")
            except TransportError:
                print("drained: the server has exited", file=sys.stderr)
                return 0
            if status.get("sessions") != sessions and not args.json:
                sessions = status.get("sessions")
                print(format_drain(status), file=sys.stderr)
    finally:
        rest.close()


def format_drain(status: dict[str, Any]) -> str:
    name = f"replica {status['replica']}" if status.get("replica") else "server"
    left = status.get("seconds_left")
    deadline = f" (at most {left:.0f} s more)" if left is not None else ""
    live = status.get("sessions", 0)
    return f"{name} draining: {live} live sessions go on{deadline}, no new ones; it exits once they end"


def format_destinations(info: dict[str, Any]) -> str:
    """A session's destination, or its first and how many more when it has several outputs."""
    outputs = info.get("outputs") or []
    if len(outputs) > 1:
        first = format_destination(outputs[0].get("destination") or info.get("destination", {}))
        return f"{first} +{len(outputs) - 1} more"
    return format_destination(info.get("destination", {}))


def format_output(output: dict[str, Any]) -> str:
    """One line for one of a session's outputs: index, state, destination, muxer, counters, error."""
    counters = output.get("counters") or {}
    line = (
        f"{output.get('index', '?')}: {output.get('state')}  {format_destination(output.get('destination') or {})}"
        f"  {output.get('format')}{'  required' if output.get('required') else ''}  "
        f"{counters.get('packets', 0)} packets / {_bytes(int(counters.get('bytes', 0)))}, "
        f"{counters.get('dropped', 0)} dropped, {counters.get('reconnects', 0)} reconnects"
    )
    return line + (f"  error: {output['error']}" if output.get("error") else "")


def format_destination(destination: dict[str, Any]) -> str:
    kind = destination.get("type")
    if kind == "server_file":
        path = str(destination.get("path"))
        return f"server file {path}" if path.startswith("/") else f"server:{path}"
    if kind == "url":
        return str(destination.get("url"))
    if kind == "discard":
        return "discard (encode)" if destination.get("encode") else "discard"
    if kind == "client":
        return "client" if destination.get("seekable", True) else "client (stream)"
    return str(kind)


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d{int(seconds % 86400 // 3600):02d}h"


def format_counters(stream: dict[str, Any]) -> str:
    """``v0 120f/120p`` for video (frames in, packets out), ``a1 96000s/94p`` for audio (samples)."""
    counters = stream.get("counters", {})
    unit = "f" if stream.get("type") == "video" else "s"
    text = f"{str(stream.get('type', '?'))[:1]}{stream.get('index', '?')} {counters.get('frames', 0)}{unit}"
    text += f"/{counters.get('packets', 0)}p"
    for name in ("errors", "dropped"):
        if counters.get(name):
            text += f" {counters[name]} {name}"
    return text


def format_sessions_table(sessions: list[dict[str, Any]], now: float) -> str:
    """One line a session. A fleet's listing (sessions with a ``replica``) has a REPLICA column;
    an admin key's listing spans tenants: then an OWNER column says whose each session is (the
    fingerprint of the key that created it)."""
    if not sessions:
        return "no sessions"
    tenants = len({info.get("owner") for info in sessions}) > 1
    fleet = any(info.get("replica") for info in sessions)
    header: tuple[str, ...] = ("ID", "STATE", "DESTINATION", "STREAMS (frames|samples in / packets out)", "AGE")
    extra = (("REPLICA",) if fleet else ()) + (("OWNER",) if tenants else ())
    header = (header[0], *extra, *header[1:])
    rows = [header]
    for info in sorted(sessions, key=lambda s: float(s.get("created_at", 0))):
        cells: tuple[str, ...] = (str(info.get("replica") or "-"),) if fleet else ()
        cells += (str(info.get("owner") or "-"),) if tenants else ()
        rows.append(
            (
                str(info.get("id")),
                *cells,
                str(info.get("state")),
                format_destinations(info),
                ", ".join(format_counters(s) for s in info.get("streams", [])),
                format_age(now - float(info.get("created_at", now))),
            )
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _clock(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) + f".{int(timestamp * 1000) % 1000:03d}"


def _bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


def format_session(info: dict[str, Any], now: float) -> str:
    created = float(info.get("created_at", now))
    lines = [
        f"session      {info.get('id')}",
        f"state        {info.get('state')}" + (f" ({info['error']})" if info.get("error") else ""),
        f"destination  {format_destinations(info)}",
        f"format       {info.get('format')}",
        f"created      {_clock(created)} ({format_age(now - created)} ago)",
        f"realtime     {'yes' if info.get('realtime') else 'no'}",
        f"output       {_bytes(int(info.get('output_bytes') or 0))}",
    ]
    if info.get("owner"):
        lines.append(f"owner        key {info['owner']}")
    if info.get("encoder_pid") is not None:
        lines.append(f"encoder pid  {info['encoder_pid']}")
    if info.get("destination_connected") is not None:
        lines.append(f"connected    {'yes' if info['destination_connected'] else 'no'}")
    if info.get("reconnects"):
        lines.append(f"reconnects   {info['reconnects']}")
    pacing = info.get("pacing")
    if pacing:
        lines.append("pacing       " + ", ".join(f"{k}={v}" for k, v in pacing.items()))
    lines.append("streams")
    for stream in info.get("streams", []):
        config = stream.get("config", {})
        if stream.get("type") == "video":
            what = (
                f"{config.get('width')}x{config.get('height')} {config.get('format')} @ {config.get('frame_rate')} fps"
            )
        else:
            what = f"{config.get('sample_rate')} Hz x{config.get('num_channels')} {config.get('format')}"
        counters = stream.get("counters", {})
        unit = "frames" if stream.get("type") == "video" else "samples"
        lines.append(
            f"  {stream.get('index')}: {stream.get('type')} {what} -> {stream.get('encoder')} "
            f"({stream.get('encoder_format')})"
        )
        lines.append(
            f"     {counters.get('chunks', 0)} chunks, {counters.get('frames', 0)} {unit} in, "
            f"{counters.get('packets', 0)} packets / {_bytes(int(counters.get('bytes', 0)))} out, "
            f"{counters.get('errors', 0)} errors, {counters.get('dropped', 0)} dropped"
        )
    outputs = info.get("outputs") or []  # servers before several destinations did not say
    if outputs:
        lines.append("outputs")
        lines.extend(f"  {format_output(output)}" for output in outputs)
    warnings = info.get("warnings") or []
    if warnings:
        lines.append("warnings")
        lines.extend(f"  {w}" for w in warnings)
    events = info.get("events") or []
    lines.append("events" if events else "events       none")
    for event in events:
        fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "event"))
        stamp = _clock(float(event["time"])) if "time" in event else ""
        lines.append(f"  {stamp}  {event.get('event')}" + (f"  {fields}" if fields else ""))
    return "\n".join(lines)


# -- capabilities ------------------------------------------------------------------------------


def cmd_capabilities(args: argparse.Namespace) -> int:
    rest = _rest(args)
    try:
        caps: dict[str, Any] = rest.request("GET", "/v1/capabilities")
    finally:
        rest.close()
    if args.json:
        _print_json(caps)
    else:
        print(format_capabilities(caps))
    return 0


def _names(title: str, names: Any) -> list[str]:
    names = sorted(names)
    body = textwrap.fill(", ".join(names), width=100, initial_indent="  ", subsequent_indent="  ")
    return [f"{title} ({len(names)}):", body]


def format_capabilities(caps: dict[str, Any]) -> str:
    versions = caps.get("versions", {})
    lines = [f"FFmpeg {caps.get('ffmpeg', '?')}"]
    lines.extend(f"  {lib} {version}" for lib, version in versions.items())
    lines.append("destinations: " + ", ".join(caps.get("destinations", [])))
    if "rgb_conversion" in caps:  # servers before it did not say (swscale)
        lines.append(f"RGB frames converted to yuv420p with: {caps['rgb_conversion']}")
    lines += _names("output protocols", caps.get("protocols", []))
    lines += _names("video encoders", caps.get("video_encoders", {}))
    lines += _names("audio encoders", caps.get("audio_encoders", {}))
    lines += _names("muxers", caps.get("muxers", {}))
    lines.append("(--json for the descriptions)")
    return "\n".join(lines)


# -- push --------------------------------------------------------------------------------------


def parse_destinations(dsts: list[str], format: str | None, overwrite: bool = False) -> Any:
    """The writer's ``dst`` for push's DST arguments: the one destination, or a list of them;
    ``overwrite`` lets ``server:`` files replace files that exist.

    Raises:
        CliError: ``server:`` without a path, ``--format`` with several DSTs, or two local paths
            (checked before FILE is decoded).
    """
    from .streams import describe_destination

    parsed = [parse_destination(dst, overwrite) for dst in dsts]
    if len(parsed) == 1:
        return parsed[0]
    if format is not None:
        raise CliError(
            f"--format applies to a single DST; {len(parsed)} were given (each takes the muxer its name implies)",
            EXIT_USAGE,
        )
    local = [text for text, dst in zip(dsts, parsed) if describe_destination(dst)["type"] == "client"]
    if len(local) > 1:
        raise CliError(
            f"only one DST may be a local path (its bytes come back to this command); got {', '.join(local)}: "
            "send the others to server:PATH",
            EXIT_USAGE,
        )
    return parsed


def parse_destination(dst: str, overwrite: bool = False) -> Any:
    """``server:dir/a.mp4`` is a ServerFile; anything else (a URL or local path) goes as given."""
    from .streams import ServerFile

    if dst.startswith(SERVER_PREFIX) and "://" not in dst:
        path = dst[len(SERVER_PREFIX) :]
        if not path:
            raise CliError(
                "server: needs a path under the server's output dir, e.g. server:recordings/a.mp4", EXIT_USAGE
            )
        return ServerFile(path, overwrite=True if overwrite else None)
    return dst


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise CliError(
            f"push decodes FILE with PyAV, which is not installed ({exc}): "
            "pip install 'framecast[server]' (or pip install av)",
            EXIT_USAGE,
        ) from exc
    return av


class _Buffer:
    """Decoded arrays of one stream, written as a chunk once they hold ``seconds`` of media."""

    def __init__(self, index: int, kind: str, rate: Fraction, seconds: float = 0.25, max_bytes: int = 8 << 20) -> None:
        self.index = index
        self.kind = kind
        self.rate = rate
        self.limit = max(1, int(seconds * rate))
        self.max_bytes = max_bytes
        self.parts: list[np.ndarray] = []
        self.count = 0  # units (frames or samples) buffered
        self.nbytes = 0
        self.written = 0  # units written so far
        self.offset = 0.0  # seconds after the earliest stream that this one starts
        self.pts: float | None = None  # for the stream's first chunk, when it starts later

    def add(self, array: np.ndarray) -> bool:
        self.parts.append(array)
        self.count += array.shape[0]
        self.nbytes += array.nbytes
        return self.count >= self.limit or self.nbytes >= self.max_bytes

    def take(self) -> tuple[np.ndarray, float | None] | None:
        if not self.parts:
            return None
        chunk = self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)
        pts, self.pts = self.pts, None
        self.parts, self.count, self.nbytes = [], 0, 0
        return chunk, pts


class _Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last = self.started
        self.shown = False

    def update(self, media_seconds: float, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self.last < 1.0):
            return
        self.last = now
        elapsed = now - self.started
        speed = f"{media_seconds / elapsed:.2f}x" if elapsed > 0 else "-"
        line = f"pushed {media_seconds:7.2f} s  {text}  ({speed})"
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
            self.shown = True
        else:
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.shown:
            print(file=sys.stderr, flush=True)


def _rate_text(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


def cmd_push(args: argparse.Namespace) -> int:
    source = Path(args.file)
    if not source.is_file():
        raise CliError(f"no such file: {args.file}" if not source.exists() else f"not a file: {args.file}")
    if args.duration is not None and args.duration <= 0:
        raise CliError("--duration must be positive", EXIT_USAGE)
    dst = parse_destinations(args.dst, args.format, args.overwrite)
    av = _import_av()
    try:
        container = av.open(str(source))
    except av.FFmpegError as exc:
        raise CliError(f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        return _push(av, container, args, dst)
    finally:
        container.close()


def _push(av: Any, container: Any, args: argparse.Namespace, dst: Any) -> int:
    return _Push(av, container, args, dst).run()


class _Push:
    """One ``framecast push``: the input's chosen streams, a buffer for each, and the writer they
    feed. Set up in named steps (choose the streams, declare them, line up their starts, cap them
    at ``--duration``); ``run`` decodes and writes."""

    def __init__(self, av: Any, container: Any, args: argparse.Namespace, dst: Any) -> None:
        from .writer import StreamWriter

        self.av, self.container, self.args = av, container, args
        self.video, self.audio = self._choose_streams()
        self.writer = StreamWriter(
            dst,
            args.format,
            server=args.server,
            api_key=args.api_key,
            realtime=args.realtime,
            on_event=None if args.quiet else _print_event,
        )
        self.buffers: dict[int, _Buffer] = {}  # by input stream index
        self.described: list[str] = []
        if self.video is not None:
            self._declare_video(self.video)
        if self.audio is not None:
            self._declare_audio(self.audio)
        self.selected = [s for s in (self.video, self.audio) if s is not None]
        self._line_up_starts()
        self.limit = {
            i: None if args.duration is None else max(0, int((args.duration - b.offset) * b.rate))
            for i, b in self.buffers.items()
        }
        self.finished = {i for i, cap in self.limit.items() if cap == 0}  # starts after --duration

    # -- setup ------------------------------------------------------------------------------------

    def _choose_streams(self) -> tuple[Any, Any]:
        """The first video stream that is not cover art and the first audio stream, as asked."""
        args = self.args
        pictures = self.av.stream.Disposition.attached_pic  # cover art is a "video" stream of one picture
        streams = self.container.streams
        video = next((s for s in streams.video if not s.disposition & pictures), None) if args.video else None
        audio = next(iter(streams.audio), None) if args.audio else None
        if video is None and audio is None:
            wanted = " and ".join(k for k, on in (("video", args.video), ("audio", args.audio)) if on) or "stream"
            raise CliError(f"{args.file} has no {wanted} stream to push")
        return video, audio

    def _declare_video(self, video: Any) -> None:
        ctx = video.codec_context
        rate = video.average_rate or video.guessed_rate or video.base_rate
        if not rate:
            raise CliError(f"{self.args.file}: the video stream has no frame rate")
        rate = Fraction(rate.numerator, rate.denominator)
        self.width, self.height = int(ctx.width), int(ctx.height)
        self.writer.add_video_stream(frame_rate=_rate_text(rate), width=self.width, height=self.height)
        self.buffers[video.index] = _Buffer(len(self.buffers), "video", rate)
        self.described.append(f"video {self.width}x{self.height} @ {_rate_text(rate)} fps ({ctx.name})")

    def _declare_audio(self, audio: Any) -> None:
        ctx = audio.codec_context
        sample_rate = int(ctx.sample_rate)
        self.channels = int(ctx.layout.nb_channels)
        if not sample_rate or not self.channels:
            raise CliError(f"{self.args.file}: the audio stream has no sample rate or channel layout")
        self.writer.add_audio_stream(sample_rate=sample_rate, num_channels=self.channels)
        self.buffers[audio.index] = _Buffer(len(self.buffers), "audio", Fraction(sample_rate))
        self.resampler = self.av.AudioResampler(format="flt", layout=ctx.layout, rate=sample_rate)
        self.described.append(f"audio {sample_rate} Hz x{self.channels} ({ctx.name})")

    def _line_up_starts(self) -> None:
        """A stream that starts later than the other keeps its offset (its first chunk's pts)."""
        starts = {s.index: _start_seconds(s) for s in self.selected}
        origin = min(starts.values())
        for s in self.selected:
            offset = starts[s.index] - origin
            if offset > 0.001:
                self.buffers[s.index].offset = self.buffers[s.index].pts = offset

    # -- feeding the writer -----------------------------------------------------------------------

    def write(self, index: int) -> None:
        """Send what stream ``index`` has buffered as one chunk."""
        buffer = self.buffers[index]
        taken = buffer.take()
        if taken is None:
            return
        chunk, pts = taken
        if buffer.kind == "video":
            self.writer.write_video_chunk(buffer.index, chunk, pts)
        else:
            self.writer.write_audio_chunk(buffer.index, chunk, pts)
        buffer.written += chunk.shape[0]

    def add(self, index: int, array: np.ndarray) -> None:
        """Buffer decoded frames or samples of stream ``index``, cut at its ``--duration`` cap;
        write once the buffer is full or the stream is done."""
        if index in self.finished:
            return
        buffer = self.buffers[index]
        cap = self.limit[index]
        if cap is not None and buffer.written + buffer.count + array.shape[0] >= cap:
            array = array[: max(0, cap - buffer.written - buffer.count)]
            self.finished.add(index)
        if array.shape[0] and buffer.add(array):
            self.write(index)
        elif index in self.finished:
            self.write(index)

    def status(self) -> tuple[float, str]:
        """Media seconds pushed so far, and what of each stream."""
        parts, seconds = [], 0.0
        for buffer in self.buffers.values():
            unit = "frames" if buffer.kind == "video" else "samples"
            parts.append(f"{buffer.kind} {buffer.written} {unit}")
            seconds = max(seconds, buffer.offset + buffer.written / float(buffer.rate))
        return seconds, ", ".join(parts)

    def _decode_all(self, progress: _Progress) -> None:
        """Demux and decode the chosen streams to the end (or every cap), feeding the writer."""
        for packet in self.container.demux(self.selected):
            if packet.stream.index in self.finished:
                if len(self.finished) == len(self.buffers):
                    break
                continue
            for frame in _decode(self.av, packet, self.args.file):
                if packet.stream.type == "video":
                    rgb = frame.reformat(width=self.width, height=self.height, format="rgb24").to_ndarray()
                    self.add(packet.stream.index, rgb.transpose(2, 0, 1)[None])
                else:
                    for out in self.resampler.resample(frame):
                        self.add(packet.stream.index, _interleaved(out, self.channels))
            progress.update(*self.status())
        if self.audio is not None and self.audio.index not in self.finished:
            for out in self.resampler.resample(None):
                self.add(self.audio.index, _interleaved(out, self.channels))
        for index in self.buffers:
            self.write(index)
        progress.update(*self.status(), force=True)

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> int:
        """Push everything (or until Ctrl-C), finalize the output, print the summary; the exit code."""
        args, writer = self.args, self.writer
        started = time.monotonic()
        interrupted = False
        with writer.open():
            if not args.quiet:
                mode = "in real time" if args.realtime else "as fast as possible"
                print(
                    f"pushing {args.file} ({', '.join(self.described)}) to {', '.join(args.dst)} {mode} "
                    f"(session {writer.session_id})",
                    file=sys.stderr,
                    flush=True,
                )
            progress = _Progress(args.quiet)
            try:
                self._decode_all(progress)
            except KeyboardInterrupt:  # stop reading; leaving the block finalizes what was sent
                interrupted = True
            finally:
                progress.done()
            if interrupted:
                print(
                    "framecast push: interrupted; finishing the output (Ctrl-C again to stop waiting)",
                    file=sys.stderr,
                    flush=True,
                )
        elapsed = time.monotonic() - started
        print(_summary(writer, ", ".join(args.dst), server_url(args.server), self.buffers, elapsed, interrupted))
        return 130 if interrupted else 0


def _start_seconds(stream: Any) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _decode(av: Any, packet: Any, name: str) -> list[Any]:
    try:
        return list(packet.decode())
    except av.FFmpegError as exc:  # a damaged packet: say so and go on, as ffmpeg does
        print(f"framecast push: skipping a packet of {name} that does not decode: {exc}", file=sys.stderr)
        return []


def _interleaved(frame: Any, channels: int) -> np.ndarray:
    """A packed float32 audio frame as (samples, channels)."""
    array = frame.to_ndarray()
    return np.ascontiguousarray(array.reshape(-1, channels), dtype=np.float32)


def _print_event(event: dict[str, Any]) -> None:
    # A failure ends with its own line; a destination that failed (of several) is logged by the SDK.
    if event.get("event") in ("client_connected", "finalized", "failed", "output_failed"):
        return
    fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "type", "time"))
    print(f"event: {event.get('event')} {fields}".rstrip(), file=sys.stderr, flush=True)


def _summary(
    writer: Any, dst: str, server: str, buffers: dict[int, _Buffer], elapsed: float, interrupted: bool = False
) -> str:
    session = writer.summary or {}
    what = "interrupted: pushed the start" if interrupted else "pushed"
    lines = [f"{what} to {dst} in {elapsed:.1f} s (session {writer.session_id})"]
    streams = session.get("streams", [])
    for buffer in buffers.values():
        counters: dict[str, Any] = next((s.get("counters", {}) for s in streams if s.get("index") == buffer.index), {})
        unit = "frames" if buffer.kind == "video" else "samples"
        line = f"  {buffer.kind}: {buffer.written} {unit} ({buffer.written / float(buffer.rate):.2f} s)"
        if counters:
            line += f", {counters.get('packets', 0)} packets, {_bytes(int(counters.get('bytes', 0)))}"
        lines.append(line)
    if session.get("output_bytes"):
        lines.append(f"  output: {_bytes(int(session['output_bytes']))}")
    outputs = session.get("outputs") or []
    if len(outputs) > 1:
        lines.extend(f"  output {format_output(output)}" for output in outputs)
    destination = session.get("destination") or {}
    if destination.get("type") == "server_file":
        lines.append(
            f"  on the server at {destination.get('path')}; download it from "
            f"{server}/v1/sessions/{writer.session_id}/output"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
