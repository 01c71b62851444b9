"""Encode each generated frame once per codec, and hand the same packets to every viewer.

aiortc's RTCRtpSender encodes whatever `av.VideoFrame` its track returns, so N viewers cost
N encoders. When the track returns an `av.Packet` instead, the sender only packetizes it
(`Encoder.pack`: splitting bytes into RTP payloads) and sends it. A SharedEncoder therefore
runs one aiortc encoder per codec, on its own thread, and every viewer's track returns the
packets it made: encoding costs the same for 1 or 8 viewers.

What a viewer then gives up, and how it is handled:
- Joining mid-stream or losing packets needs a keyframe: a viewer's PacketQueue drops
  everything until the next keyframe and asks for one (PLI/FIR from the browser too); forced
  keyframes are rate-limited, so no viewer can make the stream all keyframes for the others.
- Congestion control (REMB) no longer lowers one viewer's bitrate: everyone gets the
  server's bitrate (stream.rtc.apply_bitrate); a viewer on a slow link drops frames and
  resumes at the next keyframe rather than slowing down everyone's picture.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import logging
from dataclasses import dataclass

import av
from aiortc import RTCRtpCodecParameters
from aiortc.codecs import depayload, get_encoder

from stream.metrics import StreamMetrics
from stream.worker import FrameItem, FrameQueue, GeneratorWorker

logger = logging.getLogger(__name__)

CLOCK_RATE = 90_000  # RTP video clock
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
KEYFRAME_MIN_INTERVAL_S = 1.0  # forced keyframes cost ~10x a normal frame's bits: at most one a second


@dataclass(frozen=True)
class EncodedFrame:
    packet: av.Packet  # one whole encoded frame; every viewer's sender packetizes it for itself
    keyframe: bool
    produced_at: float  # when the generator's frame was due (loop clock)


class PacketQueue:
    """One viewer's encoded frames. Bounded; on overflow it drops what it holds and waits for a
    keyframe (a decoder cannot skip an inter frame), asking its encoder for one. Loop thread only."""

    def __init__(self, encoder: SharedEncoder, maxsize: int, metrics: StreamMetrics) -> None:
        self._encoder = encoder
        self._queue: asyncio.Queue[EncodedFrame] = asyncio.Queue(maxsize)
        self._metrics = metrics
        self._needs_keyframe = True  # a new viewer starts at a keyframe
        self.dropped = 0

    def put(self, frame: EncodedFrame) -> None:
        if self._needs_keyframe and not frame.keyframe:
            self._drop(1)
            return
        if self._queue.full():  # this viewer fell behind: resume at a keyframe
            self._drop(self._queue.qsize())
            while not self._queue.empty():
                self._queue.get_nowait()
            self.request_keyframe()
            if not frame.keyframe:
                self._needs_keyframe = True
                self._drop(1)
                return
        self._needs_keyframe = False
        self._queue.put_nowait(frame)

    async def get(self) -> EncodedFrame:
        return await self._queue.get()

    def request_keyframe(self) -> None:
        """Ask for a keyframe (a new viewer, a lost packet, a PLI or FIR from the browser)."""
        self._encoder.request_keyframe()

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._metrics.dropped.inc(n)

    def __len__(self) -> int:
        return self._queue.qsize()


class SharedEncoder:
    """One codec's encoder for every viewer that negotiated it. Lives on the loop; encodes on its thread."""

    def __init__(self, mime_type: str, worker: GeneratorWorker, metrics: StreamMetrics, queue_frames: int) -> None:
        self.mime_type = mime_type
        self._codec = RTCRtpCodecParameters(mimeType=mime_type, clockRate=CLOCK_RATE, payloadType=96)
        self._encoder = get_encoder(self._codec)  # aiortc's own, with its settings and bitrate
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"encoder-{mime_type[6:]}")
        self._worker = worker
        self._metrics = metrics
        self._queue_frames = queue_frames
        self._viewers: set[PacketQueue] = set()
        self._frames: FrameQueue | None = None  # subscribed to the worker while anyone watches
        self._task: asyncio.Task | None = None
        self._keyframe_wanted = False
        self._last_forced = -float("inf")
        self._epoch: float | None = None
        self._last_pts = -1

    def subscribe(self) -> PacketQueue:
        packets = PacketQueue(self, self._queue_frames, self._metrics)
        self._viewers.add(packets)
        packets.request_keyframe()
        if self._frames is None:
            self._frames = self._worker.subscribe()
            self._task = asyncio.ensure_future(self._run(self._frames))
        return packets

    def unsubscribe(self, packets: PacketQueue) -> None:
        self._viewers.discard(packets)
        if not self._viewers and self._frames is not None:
            self._worker.unsubscribe(self._frames)  # nobody watches this codec: the generator may idle
            self._frames = None
            if self._task is not None:
                self._task.cancel()
                self._task = None

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def request_keyframe(self) -> None:
        self._keyframe_wanted = True

    def close(self) -> None:
        for packets in list(self._viewers):
            self.unsubscribe(packets)
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def _run(self, frames: FrameQueue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await frames.get()
            force = self._take_keyframe_request(loop.time())
            try:
                encoded = await loop.run_in_executor(self._thread, self._encode, item, self._pts(item), force)
            except Exception:  # a codec failure must not end the stream: log it, try the next frame
                logger.exception("%s encoder failed on frame %d", self.mime_type, item.index)
                continue
            if encoded is None:
                continue
            self._metrics.encoded.inc()
            for packets in list(self._viewers):
                packets.put(encoded)

    def _take_keyframe_request(self, now: float) -> bool:
        if not self._keyframe_wanted or now - self._last_forced < KEYFRAME_MIN_INTERVAL_S:
            return False
        self._keyframe_wanted = False
        self._last_forced = now
        return True

    def _pts(self, item: FrameItem) -> int:
        # the generator's own clock (when each frame was due), not a fixed rate: the browser then
        # plays frames at the rate they were produced, and a stall shows as a stall, not a burst
        if self._epoch is None:
            self._epoch = item.produced_at
        self._last_pts = max(round((item.produced_at - self._epoch) * CLOCK_RATE), self._last_pts + 1)
        return self._last_pts

    def _encode(self, item: FrameItem, pts: int, force_keyframe: bool) -> EncodedFrame | None:
        """Encoder thread. aiortc's Encoder.encode returns RTP payloads; joining their depayloaded
        contents gives back the one encoded frame, which each viewer's sender packetizes again."""
        frame = av.VideoFrame.from_ndarray(item.yuv, format="yuv420p")
        frame.pts, frame.time_base = pts, TIME_BASE
        payloads, _ = self._encoder.encode(frame, force_keyframe)
        if not payloads:
            return None
        data = b"".join(depayload(self._codec, p) for p in payloads)
        packet = av.Packet(data)
        packet.pts, packet.time_base = pts, TIME_BASE
        return EncodedFrame(packet, _is_keyframe(self.mime_type, data), item.produced_at)


def _is_keyframe(mime_type: str, data: bytes) -> bool:
    if mime_type == "video/VP8":
        return not data[0] & 1  # RFC 6386 section 9.1: frame tag bit 0 is 0 on a key frame
    # H.264 Annex B: an IDR slice (NAL type 5) anywhere in the access unit
    return any(nal and nal[0] & 0x1F == 5 for nal in data.split(b"\x00\x00\x01")[1:])


class EncoderHub:
    """The shared encoders of one server, one per codec, made when a viewer first needs it."""

    def __init__(self, worker: GeneratorWorker, metrics: StreamMetrics, queue_frames: int) -> None:
        self._worker = worker
        self._metrics = metrics
        self._queue_frames = queue_frames
        self.encoders: dict[str, SharedEncoder] = {}

    def get(self, mime_type: str) -> SharedEncoder:
        if mime_type not in self.encoders:
            self.encoders[mime_type] = SharedEncoder(mime_type, self._worker, self._metrics, self._queue_frames)
        return self.encoders[mime_type]

    def close(self) -> None:
        for encoder in self.encoders.values():
            encoder.close()
