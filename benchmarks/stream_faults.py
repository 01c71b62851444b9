"""Faults against the real server on 127.0.0.1: abrupt disconnects, and faults injected into the generator.

1. Abrupt disconnects: aiortc viewers in processes of their own connect, decode a frame, and
   are killed (SIGKILL: no DTLS close, no SCTP abort, nothing). Each batch must be released
   by the server (ICE consent) within 10 s; after all of them, the server's asyncio tasks,
   threads and open files must be back at their level after a warm-up batch, and its RSS
   within 5 % of it.
2. Generator faults: a RuntimeError, then a torch.OutOfMemoryError, raised by the generator's
   step() for a few seconds each while a viewer watches. Recorded: the `error` its stats
   carry, /health meanwhile, whether a new viewer still gets in, and how long after the fault
   ends frames flow again.

    python benchmarks/stream_faults.py                           # 100 disconnects (10 x 10), both faults
    python benchmarks/stream_faults.py --batches 2 --batch 5 --out /tmp/faults.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.checkpoint import WEIGHTS_DIR  # noqa: E402
from stream import hostile  # noqa: E402
from stream.client import StreamClient  # noqa: E402
from stream.config import ServerConfig  # noqa: E402
from stream.server import BackgroundServer, load_generator  # noqa: E402

RELEASE_LIMIT_S = 10.0
RSS_GROWTH_LIMIT = 0.05


class FaultInjector:
    """The real generator, whose step() raises `fault` while it is set."""

    def __init__(self, generator: Any) -> None:
        self._gen = generator
        self.fault: BaseException | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gen, name)

    def step(self, source: Any = None) -> Any:
        if self.fault is not None:
            raise self.fault
        return self._gen.step(source)


def resources(srv: BackgroundServer) -> dict:
    gc.collect()

    async def tasks() -> int:
        return len(asyncio.all_tasks())

    status = Path("/proc/self/status").read_text().splitlines()
    rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    return {
        "asyncio_tasks": srv.call(tasks()),
        "threads": threading.active_count(),
        "open_fds": len(os.listdir("/proc/self/fd")),
        "rss_mb": round(rss_kb / 1024, 1),
        "viewers": len(srv.server.viewers),
    }


def kill_batch(srv: BackgroundServer, n: int) -> float:
    """n viewers connect and are killed; seconds until the server has released all of them."""
    procs = hostile.start_viewer_processes(srv.url, n)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait()
    killed = time.monotonic()
    while srv.server.viewers and time.monotonic() - killed < 3 * RELEASE_LIMIT_S:
        time.sleep(0.05)
    return round(time.monotonic() - killed, 2)


def disconnects(srv: BackgroundServer, batches: int, batch: int) -> dict:
    kill_batch(srv, batch)  # warm-up: encoder thread, executor threads, codec state, allocator pools
    time.sleep(1.0)
    before = resources(srv)
    releases = [kill_batch(srv, batch) for _ in range(batches)]
    time.sleep(1.0)
    after = resources(srv)
    growth = (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"]
    return {
        "viewers_killed": batches * batch,
        "batches": f"{batches} x {batch} viewers, each a process killed with SIGKILL after its first frame",
        "release_seconds_per_batch": releases,
        "release_seconds_max": max(releases),
        "resources_after_warmup": before,
        "resources_after": after,
        "rss_growth": round(growth, 4),
        "targets": {
            "released_within_10_s": max(releases) <= RELEASE_LIMIT_S,
            "no_leaked_peers": after["viewers"] == 0,
            "no_leaked_tasks": after["asyncio_tasks"] <= before["asyncio_tasks"],
            "no_leaked_threads": after["threads"] <= before["threads"],
            "no_leaked_fds": after["open_fds"] <= before["open_fds"],
            "rss_growth_le_5_percent": growth <= RSS_GROWTH_LIMIT,
        },
    }


def generator_faults(srv: BackgroundServer, injector: FaultInjector, seconds: float) -> list[dict]:
    import aiohttp
    import torch

    faults = [
        RuntimeError("injected: CUDA error: an illegal memory access was encountered"),
        torch.OutOfMemoryError("injected: CUDA out of memory. Tried to allocate 2.00 GiB"),
    ]

    async def health() -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{srv.url}/health") as resp:
                return {"http_status": resp.status, **(await resp.json())}

    async def one(fault: BaseException) -> dict:
        async with StreamClient(srv.url) as viewer:
            await viewer.next_frame(30)
            injector.fault = fault
            injected = time.monotonic()
            while (stats := await viewer.next_message("stats", 30))["error"] is None:
                pass
            reported_after = time.monotonic() - injected
            during = await health()
            try:
                async with StreamClient(srv.url) as newcomer:
                    hello = await newcomer.next_message("hello", 30)
                newcomer_ok = hello["type"] == "hello"
            except Exception as exc:  # recorded: the point is whether this happens
                newcomer_ok = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - injected)))
            injector.fault = None
            cleared = time.monotonic()
            viewer.drain()
            await viewer.next_frame(30)
            resumed_after = time.monotonic() - cleared
            while (await viewer.next_message("stats", 30))["error"] is not None:  # stats sent before the frame
                pass
            error_cleared_after = time.monotonic() - cleared
        return {
            "fault": f"{type(fault).__name__}: {fault}",
            "error_viewers_saw": stats["error"],
            "reported_after_s": round(reported_after, 2),
            "health_during": during,
            "new_viewer_got_in_during_fault": newcomer_ok,
            "frames_again_after_s": round(resumed_after, 2),
            "error_cleared_after_s": round(error_cleared_after, 2),
        }

    return [srv.call(one(fault), timeout=120) for fault in faults]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--batch", type=int, default=10, help="viewers killed at once")
    p.add_argument("--fault-seconds", type=float, default=3.0, help="how long each injected fault lasts")
    p.add_argument("--note", default="", help="saved in the result (e.g. what else ran on the machine)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stream_faults.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    problems = hostile.LogProblems()
    logging.getLogger().addHandler(problems)

    import torch

    trained = (WEIGHTS_DIR / "tiny" / "dit.safetensors").is_file()
    config = ServerConfig(port=0, device="cpu", size=(128, 128), random_weights=not trained, max_viewers=args.batch)
    injector = FaultInjector(load_generator(config))
    started = time.monotonic()
    with BackgroundServer(config, injector) as srv:
        result_disconnects = disconnects(srv, args.batches, args.batch)
        result_faults = generator_faults(srv, injector, args.fault_seconds)
    result = {
        "what": "abrupt disconnects and injected generator faults against the server on 127.0.0.1",
        "model": "tiny",
        "random_weights": not trained,
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "seconds": round(time.monotonic() - started, 1),
        "consent": {"interval_s": config.consent_interval_s, "failures": config.consent_failures},
        "disconnects": result_disconnects,
        "generator_faults": result_faults,
        "log_records_with_traceback_or_error": problems.summary()[:20],
        "command": " ".join(["python", *sys.argv]),
        "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
