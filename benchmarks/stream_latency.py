"""Stream latency and fan-out: generated frame -> decoded frame over WebRTC on loopback.

The real server runs in this process (its own thread and loop); aiortc viewers, one process
each, connect to it on 127.0.0.1. Each generated frame gets its number painted as a row of
black/white blocks and its generation time recorded; a viewer reads the number back from the decoded frame, so
latency = decode time - generation time on one clock, through the real encoder, RTP, jitter
buffer and decoder. Phases: 1 viewer, then N viewers (the generator's fps is compared), then
headless Chromium as the viewer where /usr/bin/chromium exists. The server's own share of the
latency (generated -> handed to a viewer's encoder) and its CPU per frame by thread role come
from its metrics and /proc; CPU time, unlike fps, barely moves when other programs share the
machine.

aiortc's receiver hands a frame to its decoder only when the next frame's first packet
arrives, so the aiortc numbers include about one frame interval that a browser does not add;
Chromium's numbers (requestVideoFrameCallback presentation time, read on the same wall clock)
are the ones a person sees.

    python benchmarks/stream_latency.py                       # tiny, 128x128, CPU or GPU
    python benchmarks/stream_latency.py --viewers 8 --seconds 60 --rounds 1 --no-browser \\
        --out benchmarks/results/stream_load_8x60.json        # the load run: 8 viewers x 60 s vs 1
    python benchmarks/stream_latency.py --device cuda --target-fps 1000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import logging
import math
import multiprocessing
import os
import platform
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.checkpoint import WEIGHTS_DIR  # noqa: E402
from stream.browser import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402
from stream.client import StreamClient  # noqa: E402
from stream.config import ServerConfig  # noqa: E402
from stream.server import BackgroundServer, load_generator  # noqa: E402

BITS = 16  # frame numbers modulo 2**16 fit in one row of blocks
READY_TIMEOUT_S = 300  # viewers run at a low priority: on a busy machine importing aiortc alone can take a minute


class StampedGenerator:
    """The real generator, with each output frame's number painted on it and its time recorded."""

    def __init__(self, generator: Any) -> None:
        self._gen = generator
        self._next = 0
        self._lock = threading.Lock()
        self._generated: dict[int, tuple[float, float]] = {}  # code -> (monotonic, wall) when step() returned

    def generated(self, code: int) -> float | None:
        """time.monotonic() at which the frame with this code was generated."""
        with self._lock:
            return self._generated.get(code, (None, None))[0]

    def generated_wall(self, code: int) -> float | None:
        """time.time() at which the frame with this code was generated (for clocks in other processes)."""
        with self._lock:
            return self._generated.get(code, (None, None))[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gen, name)

    def step(self, source: Any = None) -> Any:
        out = self._gen.step(source)
        now = (time.monotonic(), time.time())
        for frame in out.frames:
            code = self._next % (1 << BITS)
            paint_code(frame, code)
            with self._lock:
                self._generated[code] = now
            self._next += 1
        return out


def block_size(width: int) -> int:
    return width // BITS


def paint_code(frame: np.ndarray, code: int) -> None:
    """Top row of BITS square blocks, white = 1, most significant bit first. In place."""
    b = block_size(frame.shape[1])
    for i in range(BITS):
        frame[:b, i * b : (i + 1) * b] = 255 if (code >> (BITS - 1 - i)) & 1 else 0


def read_code(frame: np.ndarray) -> int:
    b = block_size(frame.shape[1])
    q = max(1, b // 4)  # block centres only: codec ringing lives at the edges
    code = 0
    for i in range(BITS):
        centre = frame[q : b - q, i * b + q : (i + 1) * b - q].mean()
        code = (code << 1) | int(centre > 127)
    return code


def server_counters(metrics: Any) -> dict:
    delivery = "stream_delivery_latency_seconds"
    return {
        "time": time.monotonic(),
        "frames": metrics.get_sample_value("stream_frames_total"),
        "encoded": metrics.get_sample_value("stream_encoded_frames_total") or 0.0,
        "delivered_s": metrics.get_sample_value(f"{delivery}_sum"),
        "delivered": metrics.get_sample_value(f"{delivery}_count"),
        "cpu": thread_cpu_seconds(),
    }


def server_rates(before: dict, after: dict) -> dict:
    frames = max(after["frames"] - before["frames"], 1)
    delivered = max(after["delivered"] - before["delivered"], 1)
    return {
        "generator_fps": round(frames / (after["time"] - before["time"]), 2),
        # 1.0 = each frame encoded once, whatever the number of viewers (stream/encoding.py)
        "encodes_per_frame": round((after["encoded"] - before["encoded"]) / frames, 3),
        # the server's own share of the latency: generated -> handed to a viewer's encoder
        "server_delivery_ms_mean": round(1e3 * (after["delivered_s"] - before["delivered_s"]) / delivered, 1),
        "server_cpu_ms_per_frame": {
            role: round(1e3 * (cpu - before["cpu"].get(role, 0.0)) / frames, 1) for role, cpu in after["cpu"].items()
        },
    }


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this process's threads, by role (Linux /proc; empty elsewhere).
    CPU time, unlike fps, is barely moved by other programs on a shared machine."""
    roles = {
        "generator-worker": "generator",
        "stream-server": "event_loop",
        "encoder-VP8": "encoders",  # stream/encoding.py: one thread per codec, shared by every viewer
        "encoder-H264": "encoders",
        "asyncio": "executor",  # the loop's default executor
    }
    names = {t.native_id: roles.get(t.name.split("_")[0], "other") for t in threading.enumerate()}
    out: dict[str, float] = {}
    tasks = Path("/proc/self/task")
    for task in tasks.iterdir() if tasks.is_dir() else []:
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        role = names.get(int(task.name), "torch_pool")  # threads Python did not start: torch's OpenMP pool
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def viewer_process(url: str, seconds: float, conn: Connection, nice: int) -> None:
    """One aiortc viewer in its own process, as a remote viewer would be: it shares no GIL with the
    server. Says "ready" once frames flow, waits for "go", then sends back (code, decode time)
    pairs; time.monotonic() is one clock for every process on Linux. It runs at a low CPU priority
    (`--viewer-nice`, 19 by default): on a small machine it then takes mostly what the server leaves
    idle, as a viewer on another machine would, and the fps comparison measures the server's own
    per-viewer cost. On a machine that is already overloaded, 19 can starve a viewer so long that it
    misses the server's ICE consent checks (5 s) and is dropped as dead: use 10 there."""
    os.nice(nice)

    async def main() -> list[tuple[int, float]]:
        async with StreamClient(url) as viewer:
            await viewer.next_frame(timeout=30)
            conn.send("ready")
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            viewer.drain()
            seen, end = [], time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    frame = await viewer.next_frame(timeout=0.5)
                except TimeoutError:
                    continue
                seen.append((read_code(frame.image), frame.received_at))
            return seen

    conn.send(asyncio.run(main()))


def phase(
    srv: BackgroundServer, stamps: StampedGenerator, viewers: int, warmup: float, seconds: float, nice: int
) -> tuple[dict, list[float]]:
    """Run `viewers` viewer processes; returns the phase's summary and its latencies (ms)."""
    metrics = srv.server.metrics.registry
    ctx = multiprocessing.get_context("spawn")
    pipes = [ctx.Pipe() for _ in range(viewers)]
    procs = [ctx.Process(target=viewer_process, args=(srv.url, seconds, child, nice)) for _, child in pipes]
    for proc in procs:
        proc.start()
    try:
        for parent, _ in pipes:
            if not parent.poll(READY_TIMEOUT_S) or parent.recv() != "ready":
                raise RuntimeError("a viewer process did not start receiving frames")
        time.sleep(warmup)  # bitrate ramp-up, first keyframes, allocator warm-up
        for parent, _ in pipes:
            parent.send("go")
        before = server_counters(metrics)
        time.sleep(seconds)
        after = server_counters(metrics)
        results = [parent.recv() for parent, _ in pipes]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():  # never got its "go": the phase failed
                proc.terminate()
    latencies, unknown = [], 0
    for seen in results:
        for code, received_at in seen:
            generated = stamps.generated(code)
            if generated is None or received_at < generated:
                unknown += 1
            else:
                latencies.append((received_at - generated) * 1e3)
    return {
        "viewers": viewers,
        "client": "aiortc, one process per viewer",
        **server_rates(before, after),
        "frames_decoded_per_viewer": [len(seen) for seen in results],
        "frames_with_unreadable_code": unknown,
        # at nice 19 on a busy machine this includes the viewer's own waiting for a CPU
        "aiortc_viewer_latency_ms": summary(latencies),
    }, latencies


def per_viewer_cpu(phases: list[dict], viewers: int) -> float:
    """What one more viewer costs the server: event loop + encoder CPU per frame, N viewers vs 1."""

    def cost(n: int) -> float:
        per = [p["server_cpu_ms_per_frame"] for p in phases if p["viewers"] == n]
        return float(np.median([c.get("event_loop", 0.0) + c.get("encoders", 0.0) for c in per]))

    return round((cost(viewers) - cost(1)) / (viewers - 1), 2)


def encode_cost(size: int, viewers: int, codec: str, frames: int = 60) -> dict:
    """CPU ms per frame to serve `viewers` viewers of one codec, in one process on the same frames:
    an aiortc encoder per viewer (what aiortc does by itself) vs the server's SharedEncoder, whose one
    encoded frame every viewer's sender only packetizes (Encoder.pack)."""
    import av
    from aiortc.codecs import get_encoder

    from stream.encoding import SharedEncoder
    from stream.metrics import StreamMetrics
    from stream.worker import FrameItem

    mime = f"video/{codec.upper()}"
    shared = SharedEncoder(mime, None, StreamMetrics(), queue_frames=2)  # type: ignore[arg-type]
    params = shared._codec
    base = np.random.default_rng(0).integers(0, 255, (size, size, 3), np.uint8)
    items = [
        FrameItem(
            av.VideoFrame.from_ndarray(np.roll(base, 2 * i, axis=1), format="rgb24")
            .reformat(format="yuv420p")
            .to_ndarray(),
            i,
            i / 30,
        )
        for i in range(frames)
    ]

    def per_viewer() -> None:
        encoders = [get_encoder(params) for _ in range(viewers)]
        for item in items:
            for encoder in encoders:
                picture = av.VideoFrame.from_ndarray(item.yuv, format="yuv420p")
                picture.pts, picture.time_base = item.index * 3000, fractions.Fraction(1, 90_000)
                encoder.encode(picture)

    def one_for_all() -> None:
        senders = [get_encoder(params) for _ in range(viewers)]
        for item in items:
            encoded = shared._encode(item, item.index * 3000, False)
            for sender in senders:
                sender.pack(encoded.packet)

    def cpu_ms_per_frame(run: Any) -> float:
        started = time.thread_time()
        run()
        return round(1e3 * (time.thread_time() - started) / frames, 3)

    return {
        "codec": codec,
        "size": [size, size],
        "viewers": viewers,
        "per_viewer_encoders_cpu_ms_per_frame": cpu_ms_per_frame(per_viewer),
        "shared_encoder_cpu_ms_per_frame": cpu_ms_per_frame(one_for_all),
    }


def summary(latencies_ms: list[float]) -> dict:
    a = np.asarray(latencies_ms)
    if a.size == 0:
        return {"n": 0}
    pct = {f"p{q}": round(float(np.percentile(a, q)), 1) for q in (50, 95)}
    return {**pct, "max": round(float(a.max()), 1), "n": int(a.size)}


# Reads the painted code of every frame Chromium presents, with the presentation time on the wall clock.
_PAGE_PROBE = """BITS => {
  window.__samples = [];
  const video = document.getElementById('video');
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const onFrame = (now, meta) => {
    canvas.width = meta.width;
    canvas.height = meta.height;
    ctx.drawImage(video, 0, 0);
    const b = Math.floor(meta.width / BITS), q = Math.max(1, b >> 2);
    const px = ctx.getImageData(0, 0, meta.width, b).data;
    let code = 0;
    for (let i = 0; i < BITS; i++) {
      let sum = 0, n = 0;
      for (let y = q; y < b - q; y++) {
        for (let x = i * b + q; x < (i + 1) * b - q; x++) {
          const k = (y * meta.width + x) * 4;
          sum += (px[k] + px[k + 1] + px[k + 2]) / 3;
          n++;
        }
      }
      code = (code << 1) | (sum / n > 127 ? 1 : 0);
    }
    window.__samples.push([code, performance.timeOrigin + meta.presentationTime]);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}"""


def chromium_phase(srv: BackgroundServer, stamps: StampedGenerator, warmup: float, seconds: float) -> dict | None:
    if not CHROMIUM.exists():
        return None
    from playwright.sync_api import sync_playwright

    metrics = srv.server.metrics.registry
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS))
        page = browser.new_page()
        page.goto(srv.url)
        page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30_000)
        time.sleep(warmup)
        page.evaluate(_PAGE_PROBE, BITS)
        before = server_counters(metrics)
        time.sleep(seconds)
        after = server_counters(metrics)
        samples = page.evaluate("window.__samples")
        browser.close()
    latencies, unknown = [], 0
    for code, presented_ms in samples:
        generated = stamps.generated_wall(code)
        if generated is None or presented_ms / 1e3 < generated:
            unknown += 1
        else:
            latencies.append(presented_ms - generated * 1e3)
    return {
        "viewers": 1,
        "client": f"headless Chromium ({CHROMIUM}), presentation time",
        **server_rates(before, after),
        "frames_presented": len(samples),
        "frames_with_unreadable_code": unknown,
        "latency_ms": summary(latencies),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=128, help="square frame size in pixels")
    p.add_argument("--viewers", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=2, help="alternate 1 and N viewers this many times (noise)")
    p.add_argument("--target-fps", type=float, default=30.0, help="the server's cap (1000 = uncapped)")
    p.add_argument("--torch-threads", type=int, default=None, help="CPU threads for the generator (torch)")
    p.add_argument("--codec", choices=("h264", "vp8"), default="vp8", help="VP8: what Debian's Chromium gets")
    p.add_argument("--no-browser", action="store_true", help="skip the headless Chromium phase")
    p.add_argument("--viewer-nice", type=int, default=19, help="CPU priority of the viewer processes")
    p.add_argument("--note", default="", help="saved in the result (e.g. what else ran on the machine)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stream_latency.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    trained = (WEIGHTS_DIR / args.model / "dit.safetensors").is_file()
    config = ServerConfig(
        port=0,
        model=args.model,
        device=args.device,
        size=(args.size, args.size),
        random_weights=not trained,
        target_fps=args.target_fps,
        prefer_codec=args.codec,
        max_viewers=args.viewers,
    )
    stamps = StampedGenerator(load_generator(config))
    load_before = os.getloadavg()
    with BackgroundServer(config, stamps) as srv:
        phases, latencies = [], {1: [], args.viewers: []}
        for _ in range(args.rounds):
            for n in (1, args.viewers):
                summary_n, latencies_n = phase(srv, stamps, n, args.warmup, args.seconds, args.viewer_nice)
                phases.append(summary_n)
                latencies[n] += latencies_n
        browser = None if args.no_browser else chromium_phase(srv, stamps, args.warmup, args.seconds)

    def median_fps(viewers: int) -> float:
        return round(float(np.median([p["generator_fps"] for p in phases if p["viewers"] == viewers])), 2)

    ratio = median_fps(args.viewers) / median_fps(1)
    result = {
        "what": "generated frame -> decoded frame over WebRTC on 127.0.0.1",
        "model": args.model,
        "size": [args.size, args.size],
        "device": str(stamps.device),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() and stamps.device.type == "cuda" else None,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "random_weights": not trained,
        "codec": args.codec,
        "target_fps": args.target_fps,
        "seconds_per_phase": args.seconds,
        "viewer_nice": args.viewer_nice,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "phases": phases + ([browser] if browser else []),
        "generator_fps_median": {"1": median_fps(1), str(args.viewers): median_fps(args.viewers)},
        "aiortc_viewer_latency_ms": {str(n): summary(v) for n, v in latencies.items()},
        "server_cpu_ms_per_frame_per_viewer": per_viewer_cpu(phases, args.viewers),
        "fps_ratio_many_vs_one": round(ratio, 3),
        "encode_cost_one_process": encode_cost(args.size, args.viewers, args.codec),
        "command": " ".join(["python", *sys.argv]),
        "note": args.note,
        "targets": {
            # judged on what a person sees (Chromium) where it ran, else on the aiortc upper bound
            "latency_p95_ms_le_150": (browser["latency_ms"] if browser else summary(latencies[1])).get("p95", math.inf)
            <= 150,
            "fps_within_5_percent": abs(ratio - 1) <= 0.05,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
