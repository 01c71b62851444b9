"""Headless Chromium drives the real page against the real server (tiny model on the CPU)."""

import time
from pathlib import Path

import pytest

from engine.checkpoint import WEIGHTS_DIR
from stream.browser import CHROMIUM, CHROMIUM_FLAGS
from stream.config import ServerConfig
from stream.server import BackgroundServer

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
)
TRAINED = (WEIGHTS_DIR / "tiny" / "dit.safetensors").is_file()
SCREENSHOT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "stream_page.png"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def server():
    config = ServerConfig(port=0, device="cpu", size=(128, 128), random_weights=not TRAINED)
    with BackgroundServer(config) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS), timeout=TIMEOUT_MS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    page.wait_for_function("document.getElementById('state').dataset.state === 'connected'")
    yield page
    page.close()


def current_time(page) -> float:
    return page.evaluate("document.getElementById('video').currentTime")


def wait_until_playing(page) -> None:
    page.wait_for_function("(v => v.currentTime > 0 && v.videoWidth > 0)(document.getElementById('video'))")
    start = current_time(page)
    page.wait_for_function(f"document.getElementById('video').currentTime > {start} + 0.5")


def test_page_connects_plays_and_shows_the_typed_prompt(page) -> None:
    wait_until_playing(page)
    assert page.evaluate("document.getElementById('video').videoWidth") == 128

    prompt = "a blue square sliding left over a plain yellow background"
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")
    page.wait_for_function(f"document.getElementById('current-prompt').textContent === {prompt!r}")
    assert page.input_value("#prompt") == ""  # sent, and kept in the history instead
    page.press("#prompt", "ArrowUp")
    assert page.input_value("#prompt") == prompt
    assert float(page.text_content("#fps")) > 0
    assert page.is_hidden("#message")


def test_camera_mode_sends_the_fake_camera_and_frames_come_back(page, server) -> None:
    worker = server.server.worker
    wait_until_playing(page)
    taken = worker.snapshot.source_frames
    page.check("input[name=mode][value=camera]")
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while worker.snapshot.source_frames < taken + 5:
        assert time.monotonic() < deadline, "no camera frames reached the generator"
        page.wait_for_timeout(100)
    assert worker.snapshot.mode == "v2v"
    wait_until_playing(page)  # generated from the camera, and still playing
    assert page.is_hidden("#message"), page.text_content("#message")

    page.check("#mask")
    page.wait_for_timeout(1000)  # a few stats messages, so the overlay has a mask to draw
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    page.check("input[name=mode][value=t2v]")
    page.wait_for_function("document.getElementById('state').dataset.state === 'connected'")
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while worker.snapshot.mode != "t2v":
        assert time.monotonic() < deadline, "switching back to text-to-video did not reach the server"
        page.wait_for_timeout(100)
