"""Real test peers for live outputs: an RTMP server (nginx + nginx-rtmp) and a UDP MPEG-TS receiver.

Live-output tests need something real on the other end of the wire, so that what framecast sends
is judged by an independent implementation rather than by a mock of our own making:

* :class:`NginxRtmp` runs Debian's nginx with the RTMP module on a free loopback port, in the
  foreground, with its config, logs, pid file and recordings in one private directory. Every
  stream published to ``application live`` is recorded to ``<record dir>/<name>.flv``, which
  tests decode to check what arrived. It can be stopped, killed and restarted on the same port,
  for tests of a server that goes away while framecast is publishing.
* :class:`UdpTsReceiver` is a UDP socket on a free loopback port that collects every datagram in a
  background thread; the bytes are an MPEG-TS stream that :meth:`UdpTsReceiver.decode` demuxes.
* :func:`decode_summary` decodes a file or bytes with PyAV into a small summary (codecs, frame
  and sample counts, sizes, and the decoded pictures as RGB arrays) for both peers' outputs.

nginx is not a Python package: install it with ``apt-get install -y nginx-light libnginx-mod-rtmp``
(see :data:`NGINX_INSTALL_HINT`); :func:`nginx_available` tells tests whether to skip.
Every wait here is bounded by a timeout, and only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

import av
import numpy as np

NGINX_INSTALL_HINT = "apt-get update && apt-get install -y nginx-light libnginx-mod-rtmp"

# Where Debian's libnginx-mod-rtmp puts the module (nginx's --modules-path), then other usual places.
RTMP_MODULE_CANDIDATES = (
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",
    "/usr/share/nginx/modules/ngx_rtmp_module.so",
    "/usr/lib64/nginx/modules/ngx_rtmp_module.so",
    "/usr/local/nginx/modules/ngx_rtmp_module.so",
)


class NginxError(RuntimeError):
    """nginx is missing, or failed to start or stop; the message carries its logs."""


def find_nginx() -> str | None:
    """Path of the nginx binary, looking in /usr/sbin too since a non-root PATH often lacks it."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/local/nginx/sbin")


def find_rtmp_module() -> str | None:
    """Path of ngx_rtmp_module.so, or None when libnginx-mod-rtmp is not installed."""
    for candidate in RTMP_MODULE_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate
    return None


def nginx_available() -> bool:
    """True when both nginx and its RTMP module are installed, so :class:`NginxRtmp` can run."""
    return find_nginx() is not None and find_rtmp_module() is not None


def _free_tcp_port() -> int:
    """A loopback TCP port that was free a moment ago (bound to 0 and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts_tcp(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _quote(path: Path) -> str:
    """A path as an nginx config string (quoted, so spaces are safe)."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


class NginxRtmp:
    """nginx with the RTMP module on ``127.0.0.1:<port>``, recording every published stream.

    Use as a context manager (``with NginxRtmp(tmp_path) as rtmp:``), publish to
    ``rtmp.url("name")``, then :meth:`stop` (graceful, so the recording is complete) and decode
    ``rtmp.recording("name")`` with :func:`decode_summary` (format ``"flv"``), or just call
    ``rtmp.decode("name")``.

    nginx runs in the foreground (``daemon off``) as our child, in its own process group so that a
    forced stop can never leave a worker behind holding the port. All of its files live under
    ``workdir`` (a new temp dir when not given, removed on exit; a given one is kept):
    ``nginx.conf``, ``error.log``, ``access.log``, ``nginx.pid``, ``stderr.log`` and ``record/``.

    ``record_append``: nginx-rtmp truncates ``NAME.flv`` when a stream of the same name is
    published again (e.g. a publisher that reconnects after :meth:`restart`); with
    ``record_append=True`` it appends instead, so one file holds every session of that name, the
    later ones shifted in time to follow on without a gap.

    Three ways down, for three kinds of test: :meth:`stop` (graceful: waits for publishers to
    finish), :meth:`terminate` (fast: drops publishers at once, like a server restarting under
    them) and :meth:`kill` (like a crash). nginx-rtmp writes every FLV tag straight to the file
    with write(2), so a recording holds everything received up to that moment in all three cases.
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        port: int | None = None,
        record_append: bool = False,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        bind_attempts: int = 5,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="framecast-nginx-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = self.workdir.resolve()
        self.record_dir = self.workdir / "record"
        self.record_dir.mkdir(exist_ok=True)
        self.conf_path = self.workdir / "nginx.conf"
        self.error_log_path = self.workdir / "error.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.access_log_path = self.workdir / "access.log"
        self.pid_path = self.workdir / "nginx.pid"
        self.record_append = record_append
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.bind_attempts = bind_attempts
        self._fixed_port = port
        self.port: int = port or 0
        self.proc: subprocess.Popen | None = None
        self.frozen = False

    # -- addresses and files -------------------------------------------------------------------

    def url(self, stream_name: str) -> str:
        """The RTMP URL to publish ``stream_name`` to: ``rtmp://127.0.0.1:PORT/live/NAME``."""
        return f"rtmp://127.0.0.1:{self.port}/live/{stream_name}"

    def recording(self, stream_name: str) -> Path:
        """Where nginx-rtmp records ``stream_name`` (``record_unique off``): ``<record dir>/NAME.flv``."""
        return self.record_dir / f"{stream_name}.flv"

    def decode(self, stream_name: str, keep_rgb: bool = True) -> dict[str, Any]:
        """:func:`decode_summary` of ``stream_name``'s recording; when there is none, the error
        carries nginx's log (which says why, e.g. the record dir was not writable).
        """
        path = self.recording(stream_name)
        if not path.exists():
            raise FileNotFoundError(f"no recording of {stream_name!r} at {path}:\n{self.log()}")
        return decode_summary(path, format="flv", keep_rgb=keep_rgb)

    def log(self) -> str:
        """nginx's error log and anything it printed to stderr, for failure messages."""
        parts = []
        for path in (self.error_log_path, self.stderr_path):
            if path.exists():
                text = path.read_text(errors="replace").strip()
                if text:
                    parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts) or "(nginx logged nothing)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> NginxRtmp:
        """Start nginx and wait until it has written its pid file and accepts TCP on the port.

        A port picked by us can be taken by someone else between picking and nginx binding it;
        nginx then exits with "Address already in use", and we try again on a new port (up to
        ``bind_attempts`` times). A fixed port (given, or kept by :meth:`restart`) is not changed.
        """
        if self.running:
            return self
        nginx, module = find_nginx(), find_rtmp_module()
        if nginx is None or module is None:
            missing = "nginx" if nginx is None else "the nginx RTMP module (ngx_rtmp_module.so)"
            raise NginxError(f"{missing} is not installed; install it with: {NGINX_INSTALL_HINT}")
        port_kept = bool(self._fixed_port or self.port)
        attempts = 1 if port_kept else self.bind_attempts
        for attempt in range(attempts):
            if not port_kept:
                self.port = _free_tcp_port()
            try:
                self._launch(nginx, module)
                return self
            except NginxError as error:
                if "Address already in use" in str(error) and attempt + 1 < attempts:
                    continue
                if not port_kept:
                    self.port = 0  # a later start() picks a new port rather than this bad one
                raise
        raise AssertionError("unreachable")

    def _launch(self, nginx: str, module: str) -> None:
        for stale in (self.pid_path, self.error_log_path, self.stderr_path):
            stale.unlink(missing_ok=True)
        self.conf_path.write_text(self._config(module))
        with open(self.stderr_path, "wb") as stderr:
            # -e: errors logged before our config is read go to our error.log too.
            # start_new_session: master and workers share a process group we can kill whole.
            self.proc = subprocess.Popen(
                [nginx, "-p", str(self.workdir), "-e", str(self.error_log_path), "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir),
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise NginxError(f"nginx exited with {code} while starting on port {self.port}:\n{self.log()}")
            # nginx binds its sockets before it writes the pid file, so a connect that succeeds
            # after the pid file appeared reached our nginx, not a stranger that took the port.
            if self._pid_file_matches() and _accepts_tcp(self.port):
                return
            time.sleep(0.05)
        self._kill_group()
        raise NginxError(
            f"nginx did not accept connections on port {self.port} within {self.start_timeout} s:\n{self.log()}"
        )

    def _pid_file_matches(self) -> bool:
        try:
            return self.proc is not None and int(self.pid_path.read_text().strip()) == self.proc.pid
        except (OSError, ValueError):
            return False

    def _config(self, module: str) -> str:
        # As root, workers would otherwise run as nobody and could not write the record dir.
        user = "user root;\n" if os.geteuid() == 0 else ""
        return f"""load_module {_quote(Path(module))};
{user}daemon off;
master_process on;
worker_processes 1;
pid {_quote(self.pid_path)};
lock_file {_quote(self.workdir / "nginx.lock")};
error_log {_quote(self.error_log_path)} info;

events {{
    worker_connections 256;
}}

rtmp {{
    # nginx-rtmp's access log defaults to the distro's /var/log/nginx/access.log: keep it here.
    access_log {_quote(self.access_log_path)};
    server {{
        listen 127.0.0.1:{self.port};
        chunk_size 4096;
        application live {{
            live on;
            record all;
            record_path {_quote(self.record_dir)};
            record_unique off;
            record_append {"on" if self.record_append else "off"};
        }}
    }}
}}
"""

    def stop(self, timeout: float | None = None) -> bool:
        """Stop gracefully (SIGQUIT): nginx lets connected publishers finish and closes their
        recordings (nginx-rtmp marks the FLV header's audio/video flags on close).

        A graceful nginx-rtmp waits for publishers for as long as they keep sending (its RTMP
        connections ignore ``worker_shutdown_timeout``), so after ``timeout`` (default
        ``stop_timeout``) this falls back to :meth:`terminate`, then to :meth:`kill`.
        Returns True when nginx exited gracefully within the timeout.
        """
        if self._reap():
            return True
        assert self.proc is not None
        self.thaw()
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.terminate()
            return False
        self._kill_group()  # nothing should be left; make sure no worker outlives the master
        return True

    def terminate(self, timeout: float = 5.0) -> None:
        """Fast shutdown (SIGTERM): nginx exits at once and publishers see their connection
        drop (a broken pipe), as when a server restarts under them. Kills after ``timeout``.
        """
        if self._reap():
            return
        assert self.proc is not None
        self.thaw()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self._kill_group()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL to master and workers), like a crashed server.

        Recordings open at that moment keep what was written so far (FLV has no index or
        trailer, so they decode up to the last complete tag).
        """
        self._kill_group()

    def _reap(self) -> bool:
        """True (and forget the process) when nginx is not running any more."""
        if self.proc is not None and self.proc.poll() is not None:
            self._kill_group()
        return self.proc is None

    def _kill_group(self) -> None:
        """SIGKILL nginx's whole process group (workers too) and reap the master; bounded."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def freeze(self) -> None:
        """Stop every nginx process (SIGSTOP) and close nothing: connections stay open and the
        kernel still accepts new ones into the listen queue, but nothing is read or answered, as
        when a server hangs. :meth:`thaw` lets it go on; stopping a frozen nginx thaws it first."""
        assert self.proc is not None, "nginx is not running"
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """Let a frozen nginx go on (SIGCONT): it reads what waited, and answers again."""
        if self.proc is not None and self.frozen:
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    def restart(self, down_for: float = 0.0, how: str = "terminate") -> NginxRtmp:
        """Go down, stay down ``down_for`` seconds, and start again on the same port with the
        same record dir.

        ``how`` is ``"terminate"`` (default: publishers are dropped at once, as by a real server
        restart), ``"stop"`` (graceful: waits for publishers to finish first) or ``"kill"``.
        A publisher that reconnects to the same name starts ``NAME.flv`` anew (truncating it)
        unless ``record_append``.
        """
        actions: dict[str, Callable[[], object]] = {"terminate": self.terminate, "stop": self.stop, "kill": self.kill}
        if how not in actions:
            raise ValueError(f"how must be one of {sorted(actions)}, not {how!r}")
        actions[how]()
        if down_for > 0:
            time.sleep(down_for)
        return self.start()

    def wait_closed(self, stream_name: str, timeout: float = 10.0) -> bool:
        """Wait until no nginx process holds ``stream_name``'s recording open (the publisher
        disconnected and nginx closed the file), without stopping nginx. True if it happened
        within ``timeout``; reads /proc, so Linux only.
        """
        target = os.path.realpath(self.recording(stream_name))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(self._holds(pid, target) for pid in self._pids()):
                return True
            time.sleep(0.05)
        return False

    def _pids(self) -> list[int]:
        """The master's pid and its workers' (children found through /proc)."""
        if self.proc is None:
            return []
        pids = [self.proc.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                # Fields after the ")" that ends the command name: state, ppid, ...
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[1]) == self.proc.pid:
                    pids.append(int(entry))
        return pids

    @staticmethod
    def _holds(pid: int, target: str) -> bool:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
        return False

    def close(self) -> None:
        """Stop nginx and remove the workdir if we created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NginxRtmp:
        try:
            return self.start()
        except BaseException:
            self.close()  # the error already carries the logs; leave no temp dir behind
            raise

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NginxRtmp(port={self.port}, running={self.running}, workdir={str(self.workdir)!r})"


class UdpTsReceiver:
    """A UDP socket on ``127.0.0.1:<free port>`` that keeps every datagram sent to it.

    The socket is bound in the constructor, so :attr:`port` is reserved before anything is sent,
    and datagrams that arrive before the thread runs wait in the kernel buffer. A background
    thread appends datagrams to a buffer until :meth:`stop`, ``max_seconds`` after start, or
    ``max_bytes`` received, whichever comes first. The receive buffer is made large because
    loopback UDP drops datagrams rather than slow the sender when the reader falls behind.
    """

    def __init__(
        self, max_seconds: float = 120.0, max_bytes: int = 256 * 1024 * 1024, rcvbuf: int = 8 * 1024 * 1024
    ) -> None:
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:  # SO_RCVBUFFORCE passes net.core.rmem_max, but only as root; else SO_RCVBUF, capped.
                self._sock.setsockopt(socket.SOL_SOCKET, option, rcvbuf)
                break
            except OSError:
                continue
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.datagrams = 0
        self.last_arrival: float | None = None

    @property
    def url(self) -> str:
        """Where to send: ``udp://127.0.0.1:PORT`` (add ``?pkt_size=1316`` for 7 TS packets a datagram)."""
        return f"udp://127.0.0.1:{self.port}"

    def start(self) -> UdpTsReceiver:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"udp-ts-{self.port}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline and len(self._buffer) < self.max_bytes:
            self._receive_one()
        # Whatever is already queued in the kernel was sent before stop(): keep it.
        self._sock.setblocking(False)
        while len(self._buffer) < self.max_bytes and self._receive_one():
            pass

    def _receive_one(self) -> bool:
        try:
            datagram = self._sock.recv(65536)
        except (TimeoutError, BlockingIOError, InterruptedError):
            return False
        except OSError:  # socket closed under us
            self._stop.set()
            return False
        with self._lock:
            self._buffer += datagram
            self.datagrams += 1
            self.last_arrival = time.monotonic()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving (after draining what the kernel already holds) and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close()

    def wait_for_bytes(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` bytes arrived; True if within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self._buffer) >= count:
                return True
            time.sleep(0.02)
        return len(self._buffer) >= count

    def wait_quiet(self, quiet: float = 0.5, timeout: float = 10.0) -> bool:
        """Wait until something arrived and then nothing for ``quiet`` seconds (the sender is done).

        True if that happened within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.last_arrival
            if last is not None and time.monotonic() - last >= quiet:
                return True
            time.sleep(0.02)
        return False

    def data(self) -> bytes:
        """Every byte received so far, datagrams concatenated in arrival order."""
        with self._lock:
            return bytes(self._buffer)

    def decode(self, keep_rgb: bool = True) -> dict[str, Any]:
        """:func:`decode_summary` of the bytes received, demuxed as MPEG-TS."""
        return decode_summary(self.data(), format="mpegts", keep_rgb=keep_rgb)

    def __enter__(self) -> UdpTsReceiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"UdpTsReceiver(port={self.port}, bytes={len(self._buffer)}, datagrams={self.datagrams})"


Source = Union[str, Path, bytes, bytearray, io.BytesIO]


def decode_summary(source: Source, format: str | None = None, keep_rgb: bool = True) -> dict[str, Any]:
    """Demux and decode a recording or received bytes into a summary tests can assert on.

    Returns ``{"format", "stream_types", "video", "audio", "rgb", "errors"}`` where ``video`` is
    ``{"codec", "frames", "width", "height", "pix_fmt", "times"}`` (``times``: each decoded frame's
    time in seconds) and ``audio`` is ``{"codec", "frames", "sample_rate", "channels", "samples"}``
    (``samples``: decoded samples per channel), each None when the source has no such stream; only
    the first stream of each type is summarised. ``rgb`` lists the decoded video frames as
    (H, W, 3) uint8 arrays (empty when ``keep_rgb`` is False). ``errors`` counts packets the
    decoder rejected: live streams can legitimately start or end mid-GOP (a receiver that joined
    late, a server killed mid-write), so bad packets are counted rather than raised.
    """
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ValueError("nothing to decode: no bytes were received")
        source = io.BytesIO(bytes(source))
    elif isinstance(source, io.BytesIO):
        source.seek(0)
    elif isinstance(source, Path):
        source = str(source)
    if isinstance(source, str) and not os.path.exists(source):
        raise FileNotFoundError(f"nothing to decode: {source} does not exist")

    summary: dict[str, Any] = {"video": None, "audio": None, "rgb": [], "errors": 0}
    with av.open(source, "r", format=format) as container:
        summary["format"] = container.format.name
        summary["stream_types"] = [stream.type for stream in container.streams]
        video = next(iter(container.streams.video), None)
        audio = next(iter(container.streams.audio), None)
        if video is not None:
            summary["video"] = {
                "codec": video.codec_context.name,
                "frames": 0,
                "width": video.codec_context.width,
                "height": video.codec_context.height,
                "pix_fmt": video.codec_context.pix_fmt,
                "times": [],
            }
        if audio is not None:
            summary["audio"] = {
                "codec": audio.codec_context.name,
                "frames": 0,
                "sample_rate": audio.codec_context.sample_rate,
                "channels": audio.codec_context.layout.nb_channels,
                "samples": 0,
            }
        wanted = [stream for stream in (video, audio) if stream is not None]
        if not wanted:
            return summary
        for packet in container.demux(wanted):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                summary["errors"] += 1
                continue
            for frame in frames:
                if packet.stream is video:
                    assert isinstance(frame, av.VideoFrame)
                    info = summary["video"]
                    info["frames"] += 1
                    info["width"], info["height"] = frame.width, frame.height
                    info["pix_fmt"] = frame.format.name
                    info["times"].append(None if frame.time is None else float(frame.time))
                    if keep_rgb:
                        summary["rgb"].append(frame.to_ndarray(format="rgb24"))
                else:
                    assert isinstance(frame, av.AudioFrame)
                    info = summary["audio"]
                    info["frames"] += 1
                    info["samples"] += frame.samples
                    info["sample_rate"] = frame.sample_rate
                    info["channels"] = frame.layout.nb_channels
    return summary


def rgb_frames(summary: dict[str, Any]) -> np.ndarray:
    """The summary's decoded video frames stacked as (T, H, W, 3) uint8."""
    frames = summary["rgb"]
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), dtype=np.uint8)
