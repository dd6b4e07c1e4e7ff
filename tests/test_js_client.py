"""The JavaScript client (client/js) against real parts: Node's test runner, TypeScript, headless
Chromium (the dashboard tests' fixtures) and a real `framecast serve`.

Node runs tests/js/*.test.mjs: the wire format against tests/protocol_vectors.json (the vectors
tests/test_protocol.py pins) and pushes to the server given in FRAMECAST_TEST_SERVER; this file
decodes what arrived. Chromium loads the module from the server (/static/framecast.js) into a page
of that server and streams canvases and sines through page.evaluate. `ws` and `typescript` come
from tests/js/package-lock.json (`npm ci`, run by scripts/test). Every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from . import test_dashboard as dashboard_tests
from .conftest import ROOT, ServerProcess
from .faults import CuttingProxy
from .media import decode, dominant_frequency, psnr, read_stamp
from .peers import NginxRtmp
from .test_dashboard import Page

#: The dashboard tests' fixtures: Debian's Chromium (module scope), a fresh page per test.
browser = dashboard_tests.browser
browser_page = dashboard_tests.browser_page

JS_TESTS = ROOT / "tests" / "js"
NODE_MODULES = JS_TESTS / "node_modules"
PUSH = (JS_TESTS / "browser_push.js").read_text()
W, H = 320, 240


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("the JavaScript client's tests need Node 18+: scripts/system-deps installs Debian's nodejs")
    return path


@pytest.fixture(scope="module")
def js_deps() -> Path:
    """tests/js/node_modules, as `npm ci` (scripts/test) installs it from the lock file."""
    missing = [name for name in ("ws", "typescript") if not (NODE_MODULES / name / "package.json").is_file()]
    if missing:
        pytest.fail(f"tests/js/node_modules lacks {', '.join(missing)}: run scripts/test, or npm ci --prefix tests/js")
    return NODE_MODULES


def run_node(
    *args: str, env: dict[str, str] | None = None, cwd: Path = JS_TESTS, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(cwd),
        env={**os.environ, **(env or {})},
    )


# -- Node -----------------------------------------------------------------------------------------


def test_node_runs_the_vectors_and_pushes_to_a_server_file(js_deps, server: ServerProcess):
    """`node --test tests/js/`: the protocol vectors, then pushes from Node: 90 frames and 3 s of
    a sine to a server file (decoded here), a ClientBlob equal to the server muxer's file, errors,
    and both again through proxies that cut the websocket three times each."""
    with (
        CuttingProxy(server.port, cuts=3, min_bytes=200_000, max_bytes=1_000_000, seed=1) as to_file,
        CuttingProxy(server.port, cuts=3, min_bytes=100_000, max_bytes=400_000, seed=2) as to_blob,
    ):
        proc = run_node(
            "--test",
            str(JS_TESTS),
            cwd=ROOT,
            env={
                "FRAMECAST_TEST_SERVER": server.url,
                "FRAMECAST_TEST_PREFIX": "node",
                "FRAMECAST_TEST_PROXY_FILE": to_file.url,
                "FRAMECAST_TEST_PROXY_BLOB": to_blob.url,
            },
        )
        cuts = (to_file.cuts, to_blob.cuts)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-6000:]
    assert "# fail 0" in report and "# pass 16" in report, report[-3000:]
    assert cuts == (3, 3)

    out = decode(server.output_dir / "node" / "push.mkv")
    video, audio = out["streams"]
    assert (video["codec"], video["width"], video["height"], video["frame_count"]) == ("h264", 128, 96, 90)
    assert [read_stamp(frame) for frame in video["frames"]] == list(range(90))
    for index in (0, 45, 89):
        assert psnr(video["frames"][index], pattern_rgb(index, 128, 96)) > 30
    assert abs(audio["sample_count"] - 144000) <= 2048 and audio["channels"] == 2
    assert abs(dominant_frequency(audio["pcm"][:, 0], 48000) - 440) < 2
    cut = decode(server.output_dir / "node" / "cut.mkv")["streams"][0]
    assert [read_stamp(frame) for frame in cut["frames"]] == list(range(90))  # each frame once, in order


def pattern_rgb(f: int, width: int, height: int) -> np.ndarray:
    """tests/js/pattern.mjs's patternRGBA(f), as (H, W, 3)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.stack(
        [
            np.round(128 + 100 * np.sin(2 * np.pi * (x / width + f / 60))),
            np.round(128 + 100 * np.sin(2 * np.pi * (y / height + f / 90))),
            np.round(128 + 100 * np.sin(2 * np.pi * ((x + y) / (width + height) - f / 120))),
        ],
        axis=-1,
    ).astype(np.uint8)
    block = width // 12
    for bit in range(12):
        rgb[:16, bit * block : (bit + 1) * block] = 255 if (f >> bit) & 1 else 0
    return rgb


def test_the_types_compile(js_deps):
    """tsc --noEmit --strict: framecast.d.ts, and the README's use of it (tests/js/types.test.ts)."""
    proc = run_node(str(js_deps / "typescript" / "bin" / "tsc"), "-p", str(JS_TESTS / "tsconfig.json"), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def rtmp(tmp_path: Path):
    with NginxRtmp(tmp_path / "nginx") as nginx:
        yield nginx


def test_node_push_example_streams_to_rtmp(js_deps, server: ServerProcess, rtmp: NginxRtmp):
    """examples/node_push.mjs: a generated pattern and a tone, in real time, to nginx-rtmp."""
    proc = run_node(
        str(ROOT / "examples" / "node_push.mjs"),
        "--url",
        rtmp.url("node"),
        "--seconds",
        "2",
        "--width",
        "192",
        "--height",
        "108",
        "--server",
        server.url,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wrote 60 frames and 96000 samples" in proc.stdout, proc.stdout
    assert rtmp.wait_closed("node", timeout=15), rtmp.log()
    summary = rtmp.decode("node")
    assert summary["video"]["codec"] == "h264" and summary["video"]["frames"] == 60
    assert summary["audio"]["codec"] == "aac" and abs(summary["audio"]["samples"] - 96000) <= 2048
    stamps = []
    for rgb in summary["rgb"]:  # the example stamps its frame number as 12 blocks of 192/12 = 16 pixels
        number = 0
        for bit in range(12):
            cell = rgb[2:14, bit * 16 + 3 : (bit + 1) * 16 - 3]
            number |= (cell.mean() > 127) << bit
        stamps.append(number)
    assert stamps == list(range(60))


# -- the server's side: the module and the example page -------------------------------------------


def test_the_server_serves_the_module_under_its_policy(server: ServerProcess):
    for name in ("framecast.js", "writer.js", "media.js", "protocol.js", "errors.js"):
        response = httpx.get(f"{server.url}/static/{name}", timeout=10)
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith("text/javascript")
        assert "script-src 'self';" in response.headers["content-security-policy"]
        assert response.content == (ROOT / "client" / "js" / name).read_bytes()
    assert httpx.get(f"{server.url}/static/package.json", timeout=10).status_code == 404
    assert httpx.get(f"{server.url}/static/..%2Fwriter.js", timeout=10).status_code == 404
    # The example page only with FRAMECAST_EXAMPLES=1.
    response = httpx.get(f"{server.url}/examples/canvas", timeout=10)
    assert response.status_code == 404 and "FRAMECAST_EXAMPLES=1" in response.json()["error"]["message"]


# -- Chromium ---------------------------------------------------------------------------------------


def server_takes_the_token_from_a_browser(url: str) -> bool:
    """Whether the server accepts a stream token offered as a websocket subprotocol, which is all
    a browser's WebSocket can send (client/js/writer.js offers it that way)."""
    created = httpx.post(
        f"{url}/v1/sessions",
        timeout=30,
        json={
            "destination": {"type": "discard"},
            "streams": [{"type": "video", "frame_rate": 30, "width": 64, "height": 48}],
        },
    ).json()
    try:
        with connect(
            created["stream_url"],
            open_timeout=10,
            close_timeout=5,
            subprotocols=[Subprotocol("framecast.v1"), Subprotocol("framecast.bearer." + created["token"])],
        ) as ws:
            ws.send(json.dumps({"type": "finish"}))
            while True:
                ws.recv(timeout=10)
    except ConnectionClosed as closed:
        return closed.rcvd is not None and closed.rcvd.code == 1000
    except (InvalidHandshake, TimeoutError, OSError):
        return False
    finally:
        httpx.delete(f"{url}/v1/sessions/{created['id']}", timeout=30)


@pytest.fixture(scope="module")
def browser_auth(server: ServerProcess) -> None:
    """A browser's WebSocket sends no headers: the server takes the token as a subprotocol."""
    assert server_takes_the_token_from_a_browser(server.url), (
        "the server must take the stream token as the subprotocol framecast.bearer.<token> (ingest.py)"
    )


def test_a_wrong_subprotocol_token_is_refused(server: ServerProcess) -> None:
    created = httpx.post(
        f"{server.url}/v1/sessions",
        timeout=30,
        json={
            "destination": {"type": "discard"},
            "streams": [{"type": "video", "frame_rate": 30, "width": W, "height": H}],
        },
    ).json()
    try:
        with pytest.raises(ConnectionClosed) as closed:
            with connect(
                created["stream_url"],
                open_timeout=10,
                close_timeout=5,
                subprotocols=[Subprotocol("framecast.v1"), Subprotocol("framecast.bearer.not-" + created["token"])],
            ) as ws:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    finally:
        httpx.delete(f"{server.url}/v1/sessions/{created['id']}", timeout=30)


def push(page: Page, origin: str, **kwargs: Any) -> dict[str, Any]:
    page.page.goto(origin + "/")  # the dashboard: a page of the server, under its strict policy
    result = page.page.evaluate(PUSH, {"width": W, "height": H, "keep": [], **kwargs})
    assert not page.errors, page.errors
    return result


def kept_frames(result: dict[str, Any]) -> dict[int, np.ndarray]:
    return {
        int(f): np.frombuffer(base64.b64decode(data), np.uint8).reshape(H, W, 3) for f, data in result["kept"].items()
    }


def test_chromium_streams_a_canvas_and_a_sine_to_a_server_file(browser_auth, browser_page: Page, server: ServerProcess):
    result = push(
        browser_page,
        server.url,
        dst={"kind": "file", "path": "js/canvas.mp4"},
        frames=90,
        seconds=3,
        keep=[0, 1, 2, 3, 44, 89],
    )
    assert result["states"] == ["open", "closing", "closed"]
    video_counters, audio_counters = (s["counters"] for s in result["summary"]["streams"])
    assert video_counters["frames"] == 90 and audio_counters["frames"] == 144000

    out = decode(server.output_dir / "js" / "canvas.mp4")
    video, audio = out["streams"]
    assert (video["codec"], video["width"], video["height"], video["frame_count"]) == ("h264", W, H, 90)
    assert [read_stamp(frame) for frame in video["frames"]] == list(range(90))
    # Frames 0-3 went as the canvas, an ImageData, an ImageBitmap and a VideoFrame.
    for index, expected in kept_frames(result).items():
        assert psnr(video["frames"][index], expected) > 30, index
    assert audio["codec"] == "aac" and audio["channels"] == 2
    assert abs(audio["sample_count"] - 144000) <= 2048
    assert abs(dominant_frequency(audio["pcm"][:, 0], 48000) - 440) < 2


def test_chromium_blob_is_the_server_muxers_bytes(browser_auth, browser_page: Page, server: ServerProcess):
    """The same frames to a ClientBlob and to a server file (lossless, bitexact): equal bytes, and
    the same bytes again as the page's download (writer.save())."""
    same = {
        "frames": 30,
        "seconds": 1,
        "video": {"encoder": "ffv1"},
        "audio": {"encoder": "flac"},
        "option": {"fflags": "+bitexact"},
    }
    with browser_page.page.expect_download(timeout=30_000) as download:
        blob = push(browser_page, server.url, dst={"kind": "blob", "name": "canvas.mkv", "save": True}, **same)
    push(browser_page, server.url, dst={"kind": "file", "path": "js/twin.mkv"}, **same)
    data = base64.b64decode(blob["bytes"])
    assert len(data) > 100_000
    assert data == (server.output_dir / "js" / "twin.mkv").read_bytes()
    # writer.save(): the same bytes as a download named after the ClientBlob.
    assert download.value.suggested_filename == "canvas.mkv"
    assert Path(download.value.path()).read_bytes() == data
    video, audio = decode(data)["streams"]
    assert (video["codec"], video["frame_count"], audio["codec"]) == ("ffv1", 30, "flac")
    assert [read_stamp(frame) for frame in video["frames"]] == list(range(30))


def test_chromium_resumes_through_cuts_and_every_frame_arrives_once(
    browser_auth, browser_page: Page, server: ServerProcess
):
    # Chromium deflates its messages (the server accepts permessage-deflate): budgets of compressed bytes.
    with CuttingProxy(server.port, cuts=3, min_bytes=50_000, max_bytes=400_000, seed=19) as proxy:
        result = push(browser_page, proxy.url, dst={"kind": "file", "path": "js/cut.mkv"}, frames=90, seconds=3)
        assert proxy.cuts == 3
    assert result["reconnects"] >= 3, result["reconnects"]
    video = decode(server.output_dir / "js" / "cut.mkv")["streams"][0]
    assert [read_stamp(frame) for frame in video["frames"]] == list(range(90))
    assert result["summary"]["streams"][1]["counters"]["frames"] == 144000


INPUTS = (JS_TESTS / "browser_inputs.js").read_text()


def test_chromium_takes_every_kind_of_input(browser_page: Page, server: ServerProcess):
    """Canvases (2D and WebGL), ImageBitmaps, VideoFrames (RGB and YUV), ImageData and typed
    arrays become R, G, B planes; AudioBuffers, AudioData and typed arrays interleaved samples."""
    browser_page.page.goto(server.url + "/")
    got = browser_page.page.evaluate(INPUTS)
    planes = [10 * p + c for c in range(3) for p in range(8)]  # R plane, G plane, B plane
    for kind in ("typed", "imageData", "canvas2d", "bitmap", "videoFrame", "rgb24"):
        assert got[kind] == planes, kind
    assert got["list"] == planes + planes
    assert got["webgl"] == [51] * 8 + [102] * 8 + [153] * 8
    shape, grey = got["yuvFrame"]
    assert shape == [1, 3, 2, 4] and len(set(grey)) == 1 and 120 <= grey[0] <= 140, grey  # limited range: ~130
    assert got["audioBuffer"] == [0.5, 0.25, -0.5, 0, 1, -1] == got["audioData"]
    assert got["audioDataS16"] == [16384, 8192, -16383, 0, 32767, -32767]  # x * 32767, rounded half up
    assert got["int16"] == [2, 2]
    names = [(e[0], e[1]) if e else None for e in got["errors"]]
    assert names == [("InvalidChunk", "invalid_chunk")] * 6, got["errors"]
    assert "a 5x2 image for a 4x2 stream" in got["errors"][0][2]
    assert "expects a Float32Array; got Int16Array" in got["errors"][3][2]
    assert not browser_page.errors


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.1)


def test_node_with_its_global_websocket(browser_auth, server: ServerProcess):
    """Node 22's global WebSocket (Node 20's behind --experimental-websocket) works as a browser's:
    the token goes as a subprotocol, no `ws` package needed."""
    has_global = run_node("-e", "process.exit(globalThis.WebSocket ? 0 : 1)").returncode == 0
    flags = [] if has_global else ["--experimental-websocket"]
    proc = run_node(
        *flags, "--test", str(JS_TESTS / "global_websocket.mjs"), env={"FRAMECAST_TEST_SERVER": server.url}, timeout=120
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    video = decode(server.output_dir / "node" / "global.mkv")["streams"][0]
    assert [read_stamp(frame) for frame in video["frames"]] == list(range(30))


def test_example_page_pushes_its_canvas_to_a_server_file_and_to_rtmp(
    browser_auth, browser_page: Page, own_server, rtmp: NginxRtmp
):
    """examples/browser_canvas.html at /examples/canvas (FRAMECAST_EXAMPLES=1), under its strict
    policy: start, stop, the state shown; to a server file, then live to nginx-rtmp."""
    examples = own_server(FRAMECAST_EXAMPLES="1")
    page = browser_page.page
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(examples.url + "/examples/canvas")

    def run(kind: str, dest: str, frames: int) -> int:
        page.select_option("#kind", kind)
        page.fill("#dest", dest)
        page.click("#start")
        # Polled from here: the page's policy refuses the eval that wait_for_function's strings need.
        wait_until(lambda: int(page.text_content("#frames") or 0) >= frames, f"{frames} frames sent")
        assert page.text_content("#state") == "open"
        page.click("#start")  # stop
        wait_until(lambda: page.text_content("#state") == "closed", "the writer closed")
        assert page.text_content("#error") == ""
        return int(page.text_content("#frames") or 0)

    sent = run("file", "web/example.mp4", 45)
    video, audio = decode(examples.output_dir / "web" / "example.mp4")["streams"]
    assert (video["width"], video["height"], video["frame_count"]) == (640, 360, sent)
    assert abs(dominant_frequency(audio["pcm"][:, 0], 48000) - 440) < 2

    sent = run("url", rtmp.url("canvas"), 30)
    assert rtmp.wait_closed("canvas", timeout=15), rtmp.log()
    live = rtmp.decode("canvas", keep_rgb=False)
    assert live["video"]["codec"] == "h264" and live["video"]["frames"] == sent
    assert live["audio"]["codec"] == "aac"
    assert not violations and not browser_page.errors, violations + browser_page.errors
    assert browser_page.only_from(examples.url) == []
