"""A framecast server for one scenario: ``framecast serve`` in a subprocess on a free loopback port.

The same way tests/conftest.py's ServerProcess runs it (as a user would), plus what benchmarks
need: the pids of the whole process tree (the server, its forkserver, one encoder process per
session) and their memory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from .measure import processes_cpu_seconds


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TreeMemory:
    """Memory of a process tree in bytes. RSS counts pages shared between processes once per
    process (forked encoders share PyAV's pages with the forkserver); PSS splits shared pages
    among their users, so its sum is what the tree really occupies; USS is what only it holds."""

    rss: int
    pss: int
    uss: int
    processes: int
    main_rss: int


class BenchServer:
    """``framecast serve`` on 127.0.0.1:<free port>, with its output dir in a temporary directory.

    Use as a context manager; the server gets SIGTERM (then SIGKILL) on exit.
    """

    def __init__(self, env: dict[str, str] | None = None, log_level: str = "warning") -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="framecast-bench-")
        base = Path(self._tmp.name)
        self.output_dir = base / "output"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        full_env = {**os.environ, "FRAMECAST_LOG_LEVEL": log_level, **(env or {})}
        full_env.pop("FRAMECAST_SERVER", None)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "framecast.cli",
                "serve",
                "--port",
                str(self.port),
                "--output-dir",
                str(self.output_dir),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(base),
        )
        self.process = psutil.Process(self.proc.pid)
        self._http = httpx.Client(base_url=self.url, timeout=30)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"framecast serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self._http.get("/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"framecast serve did not become healthy in {timeout} s:\n{self.log()}")

    def session(self, session_id: str) -> dict:
        """GET /v1/sessions/{id}."""
        response = self._http.get(f"/v1/sessions/{session_id}")
        response.raise_for_status()
        return dict(response.json())

    def processes(self) -> list[psutil.Process]:
        """The server and every process under it (forkserver, encoders, resource tracker)."""
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def memory(self) -> TreeMemory:
        """RSS, PSS and USS summed over the process tree (processes that exit meanwhile are skipped)."""
        rss = pss = uss = count = main_rss = 0
        for p in self.processes():
            try:
                info = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            uss += info.uss
            count += 1
            if p.pid == self.process.pid:
                main_rss = info.rss
        return TreeMemory(rss, pss, uss, count, main_rss)

    def cpu_seconds(self, pids: list[int] | None = None) -> float:
        """User + system CPU seconds of the given pids (default: the server's main process)."""
        return processes_cpu_seconds(pids or [self.process.pid])

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._http.close()
        self._log.close()
        self._tmp.cleanup()

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
