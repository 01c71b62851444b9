"""Record a short clip from headless Chromium's fake camera (the LIPAR evidence's "webcam" clip).

    python benchmarks/record_fake_camera.py --out benchmarks/data/chromium_fake_camera.mp4

Chromium's fake capture device draws a moving pattern; the page grabs frames from a <video> playing
getUserMedia's stream onto a canvas at ~10 fps and hands them back as PNG data URLs.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.video_io import write_video  # noqa: E402
from stream.browser import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402

PAGE = b"""<!doctype html><video id=v autoplay muted playsinline></video><canvas id=c></canvas><script>
async function grab(n, size, everyMs) {
  const s = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}});
  const v = document.getElementById('v'); v.srcObject = s; await v.play();
  const c = document.getElementById('c'); c.width = size; c.height = size;
  const g = c.getContext('2d'); const out = [];
  for (let i = 0; i < n; i++) {
    const side = Math.min(v.videoWidth, v.videoHeight);
    g.drawImage(v, (v.videoWidth - side) / 2, (v.videoHeight - side) / 2, side, side, 0, 0, size, size);
    out.push(c.toDataURL('image/png'));
    await new Promise(r => setTimeout(r, everyMs));
  }
  return out;
}
</script>"""


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("benchmarks/data/chromium_fake_camera.mp4"))
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS))
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        urls = page.evaluate(f"grab({a.frames}, {a.size}, 100)")
        browser.close()
    server.shutdown()
    frames = []
    for url in urls:
        png = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
        frames.append(cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    write_video(frames, a.out, fps=10)
    print(f"wrote {len(frames)} frames to {a.out}")


if __name__ == "__main__":
    main()
