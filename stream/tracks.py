"""Media tracks: the generated video a viewer receives, and the camera a viewer sends."""

from __future__ import annotations

import asyncio
import fractions
import logging
from collections.abc import Callable

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from stream.metrics import StreamMetrics
from stream.worker import FrameQueue

logger = logging.getLogger(__name__)

CLOCK_RATE = 90_000  # RTP video clock
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)


class GeneratedVideoTrack(MediaStreamTrack):
    """One viewer's copy of the generated stream.

    Timestamps follow the generator's own clock (when each frame was due), not a fixed rate:
    the browser then plays frames at the rate they were produced, and a stall shows as a
    stall rather than as a burst of frames afterwards.
    """

    kind = "video"

    def __init__(self, frames: FrameQueue, metrics: StreamMetrics, on_stop: Callable[[], None]) -> None:
        super().__init__()
        self._frames = frames
        self._metrics = metrics
        self._on_stop = on_stop
        self._epoch: float | None = None
        self._last_pts = -1

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._frames.get()
        if self._epoch is None:
            self._epoch = item.produced_at
        pts = max(round((item.produced_at - self._epoch) * CLOCK_RATE), self._last_pts + 1)
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(item.yuv, format="yuv420p")
        frame.pts = pts
        frame.time_base = TIME_BASE
        self._metrics.delivery_latency.observe(max(0.0, asyncio.get_running_loop().time() - item.produced_at))
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            self._on_stop()
        super().stop()


async def consume_source(track: MediaStreamTrack, sink: Callable[[av.VideoFrame], None]) -> None:
    """Read a viewer's camera track to its end, handing every frame to `sink` (the newest wins)."""
    frames = 0
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            logger.info("camera track ended after %d frames", frames)
            return
        frames += 1
        sink(frame)
