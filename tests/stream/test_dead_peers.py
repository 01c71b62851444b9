"""A viewer killed without a goodbye (SIGKILL) loses its slot within 10 s (ICE consent)."""

import signal
import time

from stream.config import ServerConfig
from stream.hostile import start_viewer_processes
from stream.server import BackgroundServer
from tests.stream.conftest import FakeGenerator

RELEASE_LIMIT_S = 10.0


def test_killed_viewers_are_released_within_10_s_and_the_generator_idles() -> None:
    generator = FakeGenerator()
    with BackgroundServer(ServerConfig(port=0), generator) as srv:
        procs = start_viewer_processes(srv.url, 2)
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
