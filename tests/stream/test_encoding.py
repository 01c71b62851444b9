import asyncio

import av
import numpy as np
import pytest

from stream.encoding import CLOCK_RATE, TIME_BASE, EncodedFrame, PacketQueue, SharedEncoder
from stream.metrics import StreamMetrics
from stream.worker import FrameItem, FrameQueue

TIMEOUT_S = 10


class FakeWorker:
    """The two calls a SharedEncoder makes on the generator worker."""

    def __init__(self, metrics: StreamMetrics) -> None:
        self.metrics = metrics
        self.queues: list[FrameQueue] = []

    def subscribe(self) -> FrameQueue:
        self.queues.append(FrameQueue(8, self.metrics))
        return self.queues[-1]

    def unsubscribe(self, frames: FrameQueue) -> None:
        self.queues.remove(frames)

    def publish(self, item: FrameItem) -> None:
        for q in self.queues:
            q.put(item)


def item(index: int, produced_at: float, size: tuple[int, int] = (64, 96)) -> FrameItem:
    rgb = np.random.default_rng(index).integers(0, 255, (*size, 3), dtype=np.uint8)
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    return FrameItem(yuv.to_ndarray(), index, produced_at)


async def take(packets: PacketQueue, n: int) -> list[EncodedFrame]:
    return [await asyncio.wait_for(packets.get(), TIMEOUT_S) for _ in range(n)]


def decode(mime: str, frames: list[EncodedFrame]) -> list[av.VideoFrame]:
    codec = av.CodecContext.create("libvpx" if mime == "video/VP8" else "h264", "r")
    return [f for e in frames for f in codec.decode(av.Packet(bytes(e.packet)))]


@pytest.mark.parametrize("mime", ["video/VP8", "video/H264"])
def test_each_frame_is_encoded_once_for_every_viewer_and_decodes(mime: str) -> None:
    async def main() -> None:
        metrics = StreamMetrics()
        worker = FakeWorker(metrics)
        encoder = SharedEncoder(mime, worker, metrics, queue_frames=8)
        viewers = [encoder.subscribe() for _ in range(3)]
        assert len(worker.queues) == 1  # one subscription to the generator for all three viewers
        for i, t in enumerate([10.0, 10.1, 10.1, 10.35]):  # two frames due at once must still advance
            worker.publish(item(i, t))
        got = [await take(v, 4) for v in viewers]
        assert metrics.registry.get_sample_value("stream_encoded_frames_total") == 4
        assert all(a.packet is b.packet for a, b in zip(got[0], got[1]))  # the same packets, not copies
        assert got[0][0].keyframe and not any(f.keyframe for f in got[0][1:])
        assert [f.packet.pts for f in got[0]] == [0, round(0.1 * CLOCK_RATE), round(0.1 * CLOCK_RATE) + 1, 31500]
        assert all(f.packet.time_base == TIME_BASE for f in got[0])
        pictures = decode(mime, got[0])
        assert [(p.width, p.height) for p in pictures] == [(96, 64)] * 4
        for v in viewers:
            encoder.unsubscribe(v)
        assert worker.queues == []  # nobody watches this codec: the generator is free to idle
        encoder.close()

    asyncio.run(main())


def test_a_late_or_lagging_viewer_waits_for_a_keyframe_and_keyframes_are_rate_limited() -> None:
    async def main() -> None:
        metrics = StreamMetrics()
        worker = FakeWorker(metrics)
        encoder = SharedEncoder("video/VP8", worker, metrics, queue_frames=2)
        first = encoder.subscribe()
        for i in range(3):
            worker.publish(item(i, i / 10))
            await take(first, 1)
        late = encoder.subscribe()  # asks for a keyframe, but one was forced < 1 s ago
        for i in range(3, 6):
            worker.publish(item(i, i / 10))
            await take(first, 1)
        assert len(late) == 0 and late.dropped == 3  # inter frames are useless to a decoder that just joined
        encoder._last_forced -= 1.0  # as if a second had passed: the pending request is honoured now
        worker.publish(item(6, 0.6))
        frame = (await take(late, 1))[0]
        assert frame.keyframe and (await take(first, 1))[0].keyframe
        assert decode("video/VP8", [frame])  # decodable on its own
        encoder.close()

    asyncio.run(main())


def test_a_full_viewer_queue_drops_to_the_next_keyframe() -> None:
    class Encoder:
        requests = 0

        def request_keyframe(self) -> None:
            self.requests += 1

    def frame(keyframe: bool) -> EncodedFrame:
        return EncodedFrame(av.Packet(b"x"), keyframe, 0.0)

    async def main() -> None:
        encoder = Encoder()
        packets = PacketQueue(encoder, 2, StreamMetrics())  # type: ignore[arg-type]
        for key in (True, False, False):  # the third overflows: both held frames go, and it goes too
            packets.put(frame(key))
        assert (len(packets), packets.dropped, encoder.requests) == (0, 3, 1)
        packets.put(frame(False))
        assert len(packets) == 0  # still waiting for a keyframe
        packets.put(frame(True))
        packets.put(frame(False))
        assert len(packets) == 2 and (await packets.get()).keyframe

    asyncio.run(main())
