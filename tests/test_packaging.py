"""The SDK stays light: `pip install .` brings numpy, httpx and websockets, nothing of the server."""

from __future__ import annotations

import subprocess
import sys

import tomllib

from .conftest import ROOT


def test_sdk_dependencies_are_light():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]}
    assert names == {"numpy", "httpx", "websockets"}
    server = " ".join(project["optional-dependencies"]["server"])
    for needed in ("fastapi", "uvicorn", "av", "pydantic-settings"):
        assert needed in server


def test_importing_the_sdk_loads_no_server_pyav_or_torch():
    code = (
        "import sys, framecast\n"
        "heavy = {'fastapi', 'uvicorn', 'av', 'starlette', 'pydantic', 'torch', 'framecast_server'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_lists_serve_flags():
    out = subprocess.run(
        [sys.executable, "-m", "framecast.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for flag in ("--host", "--port", "--output-dir", "FRAMECAST_HOST", "FRAMECAST_OUTPUT_DIR"):
        assert flag in out


def test_sdk_is_mypy_strict_clean():
    out = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_wheel_carries_the_javascript_client(tmp_path):
    """A non-editable install (the Docker image's) serves /static/framecast.js from the package."""
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("framecast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("framecast.js", "writer.js", "media.js", "protocol.js", "errors.js", "framecast.d.ts"):
        assert f"framecast_server/js/{name}" in names, name
    assert "framecast_server/api/static/dashboard.js" in names
