"""The deployment: Dockerfile and docker-compose.yml checked statically (no Docker engine here),
and the container's command run on the host exactly as compose would run it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from .conftest import ROOT, free_port
from .media import decode
from .peers import NginxRtmp

COMPOSE_KEY = "compose-test-key"


def test_compose_refuses_to_start_without_api_keys():
    env = {k: v for k, v in os.environ.items() if k != "FRAMECAST_API_KEYS"}
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode != 0 and "set FRAMECAST_API_KEYS" in out.stderr


def compose_config() -> dict:
    """The compose file as docker-compose resolves it (variables substituted, validated)."""
    env = {**os.environ, "FRAMECAST_API_KEYS": COMPOSE_KEY}
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def dockerfile() -> dict:
    """FROM, ENV, USER, HEALTHCHECK and CMD of docker/Dockerfile."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    info: dict = {"env": {}}
    for line in lines:
        keyword, _, rest = line.partition(" ")
        if keyword == "FROM":
            info["from"] = rest
        elif keyword == "ENV":
            info["env"].update(dict(re.findall(r"(\w+)=(\S+)", rest)))
        elif keyword == "USER":
            info["user"] = rest
        elif keyword == "HEALTHCHECK":
            info["healthcheck"] = json.loads(rest[rest.index("CMD") + 3 :].strip())
        elif keyword == "CMD":
            info["cmd"] = json.loads(rest)
    return info


def test_compose_file_is_valid_and_complete():
    config = compose_config()
    app, mtx = config["services"]["framecast"], config["services"]["mediamtx"]
    assert (ROOT / app["build"]["context"] / app["build"]["dockerfile"]).is_file()
    assert app["restart"] == mtx["restart"] == "unless-stopped"
    assert app["healthcheck"]["test"][0] == "CMD" and "/healthz" in " ".join(app["healthcheck"]["test"])
    assert "wget" in mtx["healthcheck"]["test"]
    assert app["depends_on"]["mediamtx"]["condition"] == "service_healthy"
    env = app["environment"]
    assert env["FRAMECAST_OUTPUT_DIR"] == "/data/output" and env["FRAMECAST_API_KEYS"] == COMPOSE_KEY
    assert "outputs:/data/output:rw" in app["volumes"] and "outputs" in config["volumes"]
    # The stop grace period outlasts the encoders' finish timeout, so SIGTERM can finalize outputs.
    period = re.fullmatch(r"(\d+)s", app["stop_grace_period"])
    assert period is not None, app["stop_grace_period"]
    grace = int(period.group(1))
    assert grace > float(env["FRAMECAST_FINISH_TIMEOUT"])
    assert mtx["image"].startswith("bluenviron/mediamtx:")
    assert {p["target"] for p in mtx["ports"]} >= {1935, 8888, 8889}
    assert f"{ROOT / 'docker' / 'mediamtx.yml'}:/mediamtx.yml:ro" in mtx["volumes"]


def test_mediamtx_config_serves_rtmp_hls_and_webrtc():
    mtx = yaml.safe_load((ROOT / "docker" / "mediamtx.yml").read_text())
    assert mtx["rtmp"] is True and mtx["rtmpAddress"] == ":1935"
    assert mtx["hls"] is True and mtx["webrtc"] is True and mtx["api"] is True
    assert "all_others" in mtx["paths"]


def test_dockerfile_is_slim_unprivileged_with_healthcheck():
    info = dockerfile()
    assert re.fullmatch(r"python:3\.\d+-slim", info["from"])
    assert info["user"] not in ("", "root", "0")
    assert info["cmd"] == ["framecast", "serve"]
    assert info["healthcheck"][0] == "python" and "/healthz" in info["healthcheck"][-1]


def test_container_command_runs_on_the_host_as_compose_would(tmp_path):
    """Dockerfile ENV + compose environment + CMD, on loopback and a free port; then publish."""
    info = dockerfile()
    service = compose_config()["services"]["framecast"]
    port = free_port()
    env = {
        **os.environ,
        **info["env"],
        **{k: str(v) for k, v in service["environment"].items()},
        # The host differs from the container only in where it listens and writes.
        "FRAMECAST_HOST": "127.0.0.1",
        "FRAMECAST_PORT": str(port),
        "FRAMECAST_OUTPUT_DIR": str(tmp_path / "data"),
        "FRAMECAST_API_KEY": COMPOSE_KEY,  # what a client of this deployment uses
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("FRAMECAST_SERVER", None)
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(info["cmd"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # Both healthchecks pass: the image's (port from the environment) and compose's (fixed port).
        subprocess.run(info["healthcheck"], env=env, check=True, timeout=10)
        compose_check = [arg.replace("8000", str(port)) for arg in service["healthcheck"]["test"][1:]]
        subprocess.run(compose_check, env=env, check=True, timeout=10)

        # Publish the example's test pattern to an RTMP server standing in for MediaMTX.
        with NginxRtmp(tmp_path / "nginx") as rtmp:
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "examples" / "live_rtmp.py"),
                    "--url",
                    rtmp.url("demo"),
                    "--server",
                    url,
                    "--seconds",
                    "2",
                    "--width",
                    "320",
                    "--height",
                    "180",
                    "--fps",
                    "25",
                ],
                check=True,
                timeout=60,
                env=env,
            )
            assert rtmp.wait_closed("demo", timeout=10)
            out = decode(str(rtmp.recording("demo")))
        video, audio = sorted(out["streams"], key=lambda s: s["type"] != "video")
        assert video["codec"] == "h264" and (video["width"], video["height"]) == (320, 180)
        assert video["frame_count"] == 50
        assert audio["codec"] == "aac" and abs(audio["sample_count"] - 96000) <= 3 * 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) in (0, -signal.SIGTERM)
        log.close()
