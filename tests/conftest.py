"""Shared fixtures: a real framecast server (uvicorn, in a subprocess) on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def payload_paths(server: ServerProcess) -> dict[str, float]:
    """``framecast_chunk_payloads_total`` by path: how the server has received chunk payloads so
    far (placed in the ring, copied, or from the client's shared memory)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        m[1]: float(m[2]) for m in re.finditer(r'^framecast_chunk_payloads_total\{path="(\w+)"\} (\S+)$', text, re.M)
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`framecast serve` run exactly as a user would, on 127.0.0.1:<free port>."""

    def __init__(
        self, output_dir: Path, env: dict[str, str] | None = None, args: tuple = (), port: int | None = None
    ) -> None:
        self.port = port or free_port()  # a port given: a server restarted where the last one was
        self.output_dir = output_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = output_dir.parent / f"server-{self.port}.log"
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **(env or {})}
        full_env.pop("FRAMECAST_SERVER", None)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "framecast.cli",
                "serve",
                "--port",
                str(self.port),
                "--output-dir",
                str(output_dir),
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(output_dir.parent),
            start_new_session=True,  # its own process group: encoders included, for kill_group()
        )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill_group(self) -> None:
        """SIGKILL the server and every process it started (encoders, forkserver): a crash."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None and not self._log.closed:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the whole run; tests use their own session ids and file names."""
    base = tmp_path_factory.mktemp("server")
    proc = ServerProcess(base / "output")
    yield proc
    proc.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Servers of the test's own, started with extra environment (``own_server(FRAMECAST_X="1")``)."""
    servers: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        servers.append(ServerProcess(tmp_path / f"out{len(servers)}", env=env))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()
