"""Media tracks: the generated video a viewer receives, and the camera a viewer sends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from stream.encoding import PacketQueue, SharedEncoder
from stream.metrics import StreamMetrics

logger = logging.getLogger(__name__)


class GeneratedVideoTrack(MediaStreamTrack):
    """One viewer's copy of the generated stream: packets of the encoder shared by its codec.

    It returns `av.Packet`s, which aiortc's sender packetizes without encoding again
    (stream/encoding.py). It joins the encoder on the sender's first `recv()`, i.e. once the
    peer is connected: a viewer that never connects never makes the generator work.
    """

    kind = "video"

    def __init__(self, metrics: StreamMetrics) -> None:
        super().__init__()
        self._metrics = metrics
        self._encoder: SharedEncoder | None = None
        self.packets: PacketQueue | None = None

    def bind(self, encoder: SharedEncoder) -> None:
        """The encoder of the codec this viewer negotiated (known once the answer is made)."""
        self._encoder = encoder

    def request_keyframe(self) -> None:
        """The browser lost a picture (PLI/FIR): aiortc calls its sender's hook, routed here."""
        if self.packets is not None:
            self.packets.request_keyframe()

    async def recv(self) -> av.Packet:
        if self.readyState != "live" or self._encoder is None:
            raise MediaStreamError
        if self.packets is None:
            self.packets = self._encoder.subscribe()
        frame = await self.packets.get()
        self._metrics.delivery_latency.observe(max(0.0, asyncio.get_running_loop().time() - frame.produced_at))
        return frame.packet

    def stop(self) -> None:
        if self.packets is not None and self._encoder is not None:
            self._encoder.unsubscribe(self.packets)
            self._encoder = None
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
