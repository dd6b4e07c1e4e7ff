"""The proxies a fleet runs behind, run for tests: the shipped configs (docker/cluster/haproxy.cfg,
docker/cluster/nginx.conf) with only the addresses changed to replicas on 127.0.0.1.

``Proxy(kind, workdir, replicas)`` renders the config, starts the proxy in the foreground in its
own process group (so that a kill leaves nothing behind), and waits until it answers. The replica
names are the shipped ones (``framecast-1``, ``framecast-2``, ...): they are the servers' names in
the configs, and so must be the replicas' ``FRAMECAST_REPLICA_ID``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"haproxy": ROOT / "docker" / "cluster" / "haproxy.cfg", "nginx": ROOT / "docker" / "cluster" / "nginx.conf"}
HAPROXY = "/usr/sbin/haproxy"
NGINX = "/usr/sbin/nginx"


def render(kind: str, port: int, replicas: dict[str, int]) -> str:
    """The shipped config of ``kind`` listening on 127.0.0.1:``port``, its servers at the
    replicas' ports (``{"framecast-1": 41234, ...}``); every shipped server must be given one."""
    text = CONFIGS[kind].read_text()
    named = set(re.findall(r"\b(framecast-\d+):8000\b", text))
    assert named == set(replicas), f"{CONFIGS[kind].name} names {sorted(named)}, the test runs {sorted(replicas)}"
    for name, replica_port in replicas.items():
        text = re.sub(rf"\b{re.escape(name)}:8000\b", f"127.0.0.1:{replica_port}", text)
    if kind == "haproxy":
        text, bound = re.subn(r"^(\s*)bind :8000$", rf"\1bind 127.0.0.1:{port}", text, flags=re.M)
    else:
        text, bound = re.subn(r"^(\s*)listen 8000;$", rf"\1listen 127.0.0.1:{port};", text, flags=re.M)
    assert bound == 1, f"{CONFIGS[kind].name}: no listening line to move to port {port}"
    return text


class Proxy:
    """HAProxy or nginx on 127.0.0.1:``port`` in front of ``replicas``."""

    def __init__(self, kind: str, workdir: Path, replicas: dict[str, int], port: int) -> None:
        self.kind = kind
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.conf = workdir / ("haproxy.cfg" if kind == "haproxy" else "nginx.conf")
        self.conf.write_text(render(kind, port, replicas))
        self.log_path = workdir / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.kind == "haproxy":
            return [HAPROXY, "-db", "-f", str(self.conf)]
        pid = self.workdir / "nginx.pid"
        return [NGINX, "-p", str(self.workdir), "-c", str(self.conf), "-e", "stderr", "-g", f"daemon off; pid {pid};"]

    def start(self, timeout: float = 15.0) -> Proxy:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not answer on {self.url} within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the proxy and its workers: every connection through it breaks at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
