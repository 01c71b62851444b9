"""Headless Chromium drives the real page against the real server (tiny model on the CPU)."""

import time
from pathlib import Path

import av
import numpy as np
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
MAX_VIEWERS = 2


@pytest.fixture(scope="module")
def server():
    config = ServerConfig(port=0, device="cpu", size=(128, 128), random_weights=not TRAINED, max_viewers=MAX_VIEWERS)
    with BackgroundServer(config) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS), timeout=TIMEOUT_MS)
        yield chromium
        chromium.close()


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    return page


def wait_connected(page) -> None:
    page.wait_for_function("document.getElementById('state').dataset.state === 'connected'")


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server)
    wait_connected(page)
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

    page.evaluate("send({type: 'teleport'})")  # what a buggy or hostile client might send
    page.wait_for_function("document.getElementById('message').textContent.includes('unknown message type')")
    start = current_time(page)
    page.wait_for_function(f"document.getElementById('video').currentTime > {start} + 0.5")  # still playing


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


def write_clip(path: Path, frames: int = 48, fps: int = 24) -> Path:
    """A two-second VP8 WebM: a white square crossing a blue field."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            image = np.zeros((120, 160, 3), np.uint8)
            image[:] = (30, 70, 220)
            image[40:80, 2 * i : 2 * i + 40] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


def test_file_mode_sends_a_short_clip_to_the_generator(page, server, tmp_path) -> None:
    worker = server.server.worker
    taken = worker.snapshot.source_frames
    with page.expect_file_chooser() as chooser:
        page.check("input[name=mode][value=file]")
    chooser.value.set_files(str(write_clip(tmp_path / "clip.webm")))
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while worker.snapshot.source_frames < taken + 5:
        assert time.monotonic() < deadline, f"no file frames reached the generator: {page.text_content('#message')}"
        page.wait_for_timeout(100)
    assert worker.snapshot.mode == "v2v"
    wait_until_playing(page)
    assert page.is_hidden("#message"), page.text_content("#message")


def test_a_busy_server_and_a_dropped_connection_are_explained_and_retried(browser, server) -> None:
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while server.server.viewers:  # pages of earlier tests, closing
        assert time.monotonic() < deadline, "closed pages kept their viewer slots"
        time.sleep(0.1)
    pages = [open_page(browser, server) for _ in range(MAX_VIEWERS)]
    try:
        for p in pages:
            wait_connected(p)
        extra = open_page(browser, server)
        pages.append(extra)
        # one check in the page: the page retries after 1 s, and a loaded machine can take longer than
        # that between two separate reads from here
        extra.wait_for_function(
            "document.getElementById('message').textContent.startsWith('Server busy')"
            " && document.getElementById('message').textContent.includes('Retrying in')"
            " && document.getElementById('state').dataset.state === 'disconnected'"
        )
        extra.close()
        pages.remove(extra)

        # the server drops the first page's connection: the page says so, then reconnects by itself
        dropped = pages[0]
        viewer_id = dropped.get_attribute("#state", "data-viewer")
        server.call(server.server.viewers[viewer_id].pc.close())
        dropped.wait_for_function("document.getElementById('state').dataset.state === 'disconnected'")
        assert "Retrying in" in dropped.text_content("#message")
        wait_connected(dropped)
        wait_until_playing(dropped)
        assert dropped.is_hidden("#message")
    finally:
        for p in pages:
            p.close()


TOKEN, WATCH_TOKEN = "page-token-0123456789", "watch-token-0123456789"


@pytest.fixture(scope="module")
def guarded_server():
    from tests.stream.conftest import FakeGenerator

    config = ServerConfig(port=0, token=TOKEN, watch_token=WATCH_TOKEN)
    with BackgroundServer(config, FakeGenerator(size=(128, 128))) as srv:
        yield srv


def test_the_page_takes_its_token_from_the_link_and_a_watch_link_cannot_steer(browser, guarded_server) -> None:
    console: list[str] = []
    pages = []
    try:
        for fragment in ("", f"#token={TOKEN}", f"#token={WATCH_TOKEN}"):
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("console", lambda msg: console.append(msg.text))
            page.goto(guarded_server.url + "/" + fragment)
            pages.append(page)
        locked, steering, watching = pages
        locked.wait_for_function("document.getElementById('message').textContent.includes('needs a token')")
        for page in (steering, watching):
            wait_connected(page)
            wait_until_playing(page)
        assert steering.is_enabled("#prompt")
        watching.wait_for_function("document.getElementById('prompt').disabled")
        assert "watching" in watching.text_content("#message")
    finally:
        for page in pages:
            page.close()
    assert not any(TOKEN in line or WATCH_TOKEN in line for line in console)  # the page never logs a token
