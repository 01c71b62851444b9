"""A viewer killed without a goodbye (SIGKILL) loses its slot within 10 s (ICE consent)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stream.config import ServerConfig
from stream.server import BackgroundServer
from tests.stream.conftest import FakeGenerator

ROOT = Path(__file__).resolve().parents[2]
RELEASE_LIMIT_S = 10.0
VIEWER = """
import asyncio, sys
from stream.client import StreamClient

async def main():
    viewer = StreamClient(sys.argv[1])
    await viewer.connect()
    await viewer.next_frame(20)
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def start_viewers(url: str, n: int) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", VIEWER, url], stdout=subprocess.PIPE, env=env, cwd=ROOT)
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == b"ready"
    return procs


def test_killed_viewers_are_released_within_10_s_and_the_generator_idles() -> None:
    generator = FakeGenerator()
    with BackgroundServer(ServerConfig(port=0), generator) as srv:
        procs = start_viewers(srv.url, 2)
        assert len(srv.server.viewers) == 2
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        killed = time.monotonic()
        while srv.server.viewers:
            assert time.monotonic() - killed < RELEASE_LIMIT_S, "a dead peer kept its slot"
            time.sleep(0.2)
        time.sleep(0.5)
        frame = generator.frame
        time.sleep(0.5)
        assert generator.frame == frame  # nobody watches: the generator idles
        assert srv.server.metrics.registry.get_sample_value("stream_viewers") == 0
