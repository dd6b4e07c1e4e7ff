"""The dashboard at GET /, in a real headless Chromium driven by Playwright.

Chromium is Debian's (``apt-get install -y --no-install-recommends chromium``); Playwright's Python
package (``pip install playwright``) brings only its driver here, and ``playwright install`` is
never needed: the browser is launched from its system path. Streams are real SDK sessions
(``framecast.Discard(encode=True)``, paced in real time); nothing is mocked, and every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import framecast

from .conftest import ServerProcess
from .media import patterns, sine

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
CHROMIUM_HINT = "apt-get install -y --no-install-recommends chromium (or set FRAMECAST_CHROMIUM to a Chromium binary)"
VIEWPORT = {"width": 1280, "height": 800}
WAIT_MS = 20_000  # the longest any single browser wait may take


def chromium_path() -> str | None:
    return os.environ.get("FRAMECAST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the dashboard tests need Playwright's Python package: pip install playwright "
            "(no 'playwright install': the system Chromium is used)"
        )
    path = chromium_path()
    if path is None:
        pytest.fail(f"the dashboard tests need Chromium: {CHROMIUM_HINT}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, timeout=60_000)
        yield chromium
        chromium.close()


class Page:
    """A fresh browser context and page, recording every request and script error."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def only_from(self, origin: str) -> list[str]:
        """Requests that went anywhere but ``origin`` (blob: previews and data: URLs are local)."""
        return [u for u in self.requests if not (u.startswith(origin + "/") or u.startswith(("blob:", "data:")))]


@pytest.fixture
def browser_page(browser: Any) -> Iterator[Page]:
    page = Page(browser)
    yield page
    page.context.close()


class Streamer(threading.Thread):
    """An SDK session in the background (to ``dst``, by default a Discard that encodes): 320x240
    video at 15 fps plus 48 kHz stereo, written in 1-second chunks and paced in real time, until
    ``seconds`` are written or ``stop`` is set."""

    def __init__(self, url: str, seconds: int = 6, api_key: str | None = None, dst: Any = None) -> None:
        super().__init__(name="dashboard-streamer", daemon=True)
        self.url, self.seconds, self.api_key = url, seconds, api_key
        self.dst = framecast.Discard(encode=True) if dst is None else dst
        self.opened = threading.Event()
        self.stop = threading.Event()
        self.session_id: str | None = None
        self.error: BaseException | None = None
        self.seconds_written = 0

    def run(self) -> None:
        try:
            writer = framecast.StreamWriter(self.dst, server=self.url, realtime=True, api_key=self.api_key)
            writer.add_video_stream(frame_rate=15, width=320, height=240)
            writer.add_audio_stream(sample_rate=48000, num_channels=2)
            tone = sine(440, 48000, 1.0, channels=2, amplitude=0.5)  # -9 dBFS RMS
            tone[:, 1] *= 0.1  # the right channel 20 dB quieter
            with writer.open():
                self.session_id = writer.session_id
                self.opened.set()
                for second in range(self.seconds):
                    if self.stop.is_set():
                        break
                    writer.write_video_chunk(0, patterns(15, 240, 320, start=15 * second))
                    writer.write_audio_chunk(1, tone)
                    self.seconds_written += 1
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.opened.set()

    def finish(self, timeout: float = 60.0) -> None:
        self.stop.set()
        self.join(timeout)
        assert not self.is_alive(), "the streaming thread did not finish"
        if self.error is not None:
            raise self.error


#: Hash and basic statistics of an <img>'s pixels, drawn into a canvas (blob: URLs are same-origin).
PIXELS_JS = """img => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let h = 2166136261, sum = 0, sq = 0;
  for (let i = 0; i < d.length; i++) {
    h = Math.imul(h ^ d[i], 16777619);
    if (i % 4 !== 3) { sum += d[i]; sq += d[i] * d[i]; }
  }
  const n = (d.length / 4) * 3;
  return {width: c.width, height: c.height, hash: h >>> 0, std: Math.sqrt(sq / n - (sum / n) ** 2)};
}"""


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def png_pixels(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def test_dashboard_page_and_static_files(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert 'src="static/dashboard.js"' in page.text and 'href="static/dashboard.css"' in page.text
        for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            answer = http.get(f"/static/{name}")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
            assert "http://" not in answer.text and "https://" not in answer.text  # nothing from outside
        for bad in ("/static/nope.js", "/static/..%2Fapp.py", "/static/dashboard.py", "/static/__init__.py"):
            assert http.get(bad).status_code == 404, bad
        assert "/" not in http.get("/openapi.json").json()["paths"]  # the page is not part of the API


def test_dashboard_live_session(server: ServerProcess, browser_page: Page, tmp_path: Path) -> None:
    streamer = Streamer(server.url, seconds=12)  # stops early once the checks are done
    streamer.start()
    try:
        assert streamer.opened.wait(30), "the SDK did not open its session"
        assert streamer.error is None, streamer.error
        sid = streamer.session_id
        page = browser_page.page
        page.goto(server.url + "/")

        row = page.locator(f'[data-session-id="{sid}"]')
        row.wait_for(state="visible")
        frames = row.locator('tr[data-stream="0"] [data-counter="frames"]')
        preview = row.locator('img[data-preview-stream="0"]')
        # A preview has been loaded and frames have been counted.
        page.wait_for_function(
            """sid => {
                const row = document.querySelector(`[data-session-id="${sid}"]`);
                const img = row && row.querySelector('img[data-preview-stream="0"]');
                const frames = row && row.querySelector('tr[data-stream="0"] [data-counter="frames"]');
                return img && img.complete && img.naturalWidth > 0 && Number(img.dataset.loads) > 0
                    && Number(frames.dataset.value) > 0;
            }""",
            arg=sid,
        )
        assert row.locator(".badge").inner_text().lower() == "streaming"
        assert row.get_attribute("data-state") == "streaming"
        assert "discard" in row.locator('[data-field="destination"]').inner_text()

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        data = shot.read_bytes()
        width, height = png_size(data)
        assert width == VIEWPORT["width"] and height >= VIEWPORT["height"]
        assert len(data) > 20_000, "a near-empty screenshot"
        assert png_pixels(shot).std() > 20, "a featureless screenshot"
        print(f"dashboard screenshot: {shot}")

        first_frames = int(frames.get_attribute("data-value"))
        first_preview = preview.evaluate(PIXELS_JS)
        assert first_preview["width"] == 320 and first_preview["height"] == 240
        assert first_preview["std"] > 10, "the preview is a flat image, not the test pattern"

        # The audio meter: the left channel's sine is loud (-9 dBFS), the right one 20 dB quieter.
        meter = row.locator('[data-audio-stream="1"]')
        page.wait_for_function(
            """sid => {
                const m = document.querySelector(`[data-session-id="${sid}"] [data-audio-stream="1"]`);
                return m && Number(m.querySelector('[data-channel="0"]').dataset.db) > -90;
            }""",
            arg=sid,
        )
        left = float(meter.locator('[data-channel="0"]').get_attribute("data-db"))
        right = float(meter.locator('[data-channel="1"]').get_attribute("data-db"))
        assert left > -30, left
        assert abs(left - -9.0) < 3 and abs(right - -29.0) < 3, (left, right)

        # About 1.5 s later the counter has grown and the preview shows another frame.
        time.sleep(1.5)
        deadline = time.monotonic() + 10
        while True:
            later_frames = int(frames.get_attribute("data-value"))
            later_preview = preview.evaluate(PIXELS_JS)
            if (
                later_frames > first_frames and later_preview["hash"] != first_preview["hash"]
            ) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert later_frames > first_frames, (first_frames, later_frames)
        assert later_preview["hash"] != first_preview["hash"], "the preview did not change"

        rate = float(row.locator('tr[data-stream="0"] [data-rate]').get_attribute("data-rate"))
        assert 3 < rate < 45, f"video rate {rate} fps (15 fps written in real time)"
        audio_rate = float(row.locator('tr[data-stream="1"] [data-rate]').get_attribute("data-rate"))
        assert 10_000 < audio_rate < 150_000, f"audio rate {audio_rate} samples/s"
        # x264 (no zerolatency here) holds its first 40 frames in its lookahead: packets show up
        # once 2.7 s of the 15 fps video has been released in real time.
        page.wait_for_function(
            """sid => ["chunks", "packets", "bytes"].every(counter => Number(document.querySelector(
                `[data-session-id="${sid}"] tr[data-stream="0"] [data-counter="${counter}"]`).dataset.value) > 0)""",
            arg=sid,
            timeout=20_000,
        )
        for counter in ("errors", "dropped"):
            assert row.locator(f'tr[data-stream="0"] [data-counter="{counter}"]').get_attribute("data-value") == "0"
        assert "client_connected" in row.locator('[data-field="events"]').inner_text()
        assert page.locator("#banner").is_hidden()
    finally:
        streamer.finish()

    # Once closed, the session says so, with no rate.
    row.locator('.badge[data-state="closed"]').wait_for()
    assert row.locator('tr[data-stream="0"] [data-rate]').get_attribute("data-rate") == "0"
    assert browser_page.errors == []
    assert browser_page.only_from(server.url) == []


def test_dashboard_api_key_form_and_unreachable_banner(browser_page: Page, tmp_path: Path) -> None:
    keyed = ServerProcess(tmp_path / "out", env={"FRAMECAST_API_KEYS": "k1"})
    try:
        writer = framecast.StreamWriter(framecast.Discard(), server=keyed.url, api_key="k1")
        writer.add_video_stream(frame_rate=15, width=64, height=48)
        writer.open()
        page = browser_page.page
        page.goto(keyed.url + "/")

        form = page.locator("#key-form")
        form.wait_for(state="visible")
        assert page.locator("#status").get_attribute("data-status") == "locked"
        assert page.locator("[data-session-id]").count() == 0

        page.fill("#api-key", "wrong")
        page.click("#key-submit")
        page.locator("#key-error").wait_for(state="visible")
        assert "did not accept" in page.locator("#key-error").inner_text()
        assert page.evaluate("sessionStorage.getItem('framecast.apiKey')") is None

        page.fill("#api-key", "k1")
        with page.expect_request(lambda r: "/v1/sessions" in r.url) as sent:
            page.click("#key-submit")
        assert sent.value.all_headers().get("authorization") == "Bearer k1"
        page.locator(f'[data-session-id="{writer.session_id}"]').wait_for(state="visible")
        assert form.is_hidden()
        assert page.evaluate("sessionStorage.getItem('framecast.apiKey')") == "k1"

        # The key lasts for the tab: a reload goes straight to the sessions.
        page.reload()
        page.locator(f'[data-session-id="{writer.session_id}"]').wait_for(state="visible")
        assert form.is_hidden()
        writer.close()

        # The server goes away: a banner says so, and the page keeps trying.
        keyed.stop()
        banner = page.locator("#banner")
        banner.wait_for(state="visible")
        assert "Cannot reach the framecast server" in banner.inner_text()
        assert page.locator("#status").get_attribute("data-status") == "down"
        assert "stale" in page.locator("#sessions").get_attribute("class")  # dimmed: as of the last contact
        assert browser_page.errors == []
        assert browser_page.only_from(keyed.url) == []
    finally:
        keyed.stop()


def test_dashboard_closed_session_without_preview_and_bytes_out(server: ServerProcess, browser_page: Page) -> None:
    """A server file nobody watched while it streamed: once closed it has no preview to show, and
    the card says so instead of a broken image; its header's "out" is never less than the bytes the
    stream table counts (the file's size is known only at close)."""
    writer = framecast.StreamWriter(framecast.ServerFile(f"dash/{time.monotonic_ns()}.mkv"), server=server.url)
    writer.add_video_stream(frame_rate=15, width=160, height=120)
    with writer.open():
        writer.write_video_chunk(0, patterns(30, 120, 160))
    page = browser_page.page
    page.goto(server.url + "/")
    row = page.locator(f'[data-session-id="{writer.session_id}"]')
    row.wait_for(state="visible")
    tile = row.locator('[data-video-stream="0"]')
    page.wait_for_function("el => el.classList.contains('none')", arg=tile.element_handle())
    assert tile.locator("img").is_hidden()
    assert "no preview" in tile.evaluate("el => getComputedStyle(el.querySelector('figcaption'), '::before').content")
    out = int(row.locator('[data-field="output_bytes"]').get_attribute("data-value"))
    table = int(row.locator('tr[data-stream="0"] [data-counter="bytes"]').get_attribute("data-value"))
    assert out >= table > 0, (out, table)
    assert browser_page.errors == []


def test_dashboard_shows_each_of_several_destinations(server: ServerProcess, browser_page: Page) -> None:
    writer = framecast.StreamWriter(
        [framecast.ServerFile("dash/a.mkv"), framecast.Output(framecast.ServerFile("dash/b.mkv"), required=True)],
        server=server.url,
    )
    writer.add_video_stream(frame_rate=15, width=64, height=48)
    with writer.open():
        writer.write_video_chunk(0, np.zeros((15, 3, 48, 64), np.uint8))
        writer.flush()
        page = browser_page.page
        page.goto(server.url + "/")
        lines = page.locator(f'[data-session-id="{writer.session_id}"] [data-field="outputs"] li')
        lines.nth(1).wait_for(state="visible")
        texts = lines.all_inner_texts()
    assert len(texts) == 2, texts
    assert texts[0].startswith("#0 streaming") and "server_file: dash/a.mkv" in texts[0] and "matroska" in texts[0]
    assert texts[1].startswith("#1 streaming") and "dash/b.mkv" in texts[1] and texts[1].endswith("required")
    assert browser_page.errors == []


#: The playing video's current frame, drawn into a canvas: its size, brightness and contrast.
VIDEO_PIXELS_JS = """video => {
  const c = document.createElement("canvas");
  c.width = video.videoWidth; c.height = video.videoHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(video, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sq = 0;
  for (let i = 0; i < d.length; i++) if (i % 4 !== 3) { sum += d[i]; sq += d[i] * d[i]; }
  const n = (d.length / 4) * 3;
  return {width: c.width, height: c.height, mean: sum / n, std: Math.sqrt(sq / n - (sum / n) ** 2)};
}"""

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def test_dashboard_plays_a_live_hls_session(server: ServerProcess, browser_page: Page) -> None:
    live = framecast.ServerFile("dashboard/live.m3u8", segment_duration=1, overwrite=True)
    streamer = Streamer(server.url, seconds=20, dst=live)
    streamer.start()
    try:
        assert streamer.opened.wait(30), "the SDK did not open its session"
        assert streamer.error is None, streamer.error
        sid = streamer.session_id
        page = browser_page.page
        page.goto(server.url + "/")
        video = page.locator(f'[data-session-id="{sid}"] [data-player="hls"] video')
        video.wait_for(state="attached")
        # Playing: the clock of the video element advances past a second, live.
        page.wait_for_function("v => v.currentTime > 1.5 && !v.paused && v.readyState >= 2", arg=video.element_handle())
        pixels = video.evaluate(VIDEO_PIXELS_JS)
        assert (pixels["width"], pixels["height"]) == (320, 240), pixels
        assert pixels["mean"] > 10 and pixels["std"] > 10, f"a black or flat frame: {pixels}"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard-hls.png"
        page.screenshot(path=str(shot), full_page=True)
        assert png_pixels(shot).std() > 20, "a featureless screenshot"
        print(f"dashboard screenshot with a playing HLS stream: {shot}")
        # Everything came from this server: the page, hls.js, the playlist and the segments.
        assert browser_page.only_from(server.url) == [], browser_page.only_from(server.url)
        assert any("/files/live.m3u8" in u for u in browser_page.requests)
        assert any(u.endswith(".m4s") for u in browser_page.requests)
        assert browser_page.errors == [], browser_page.errors
    finally:
        streamer.finish()
