import asyncio

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from stream.metrics import StreamMetrics
from stream.tracks import CLOCK_RATE, TIME_BASE, GeneratedVideoTrack, consume_source
from stream.worker import FrameItem, FrameQueue


def item(index: int, produced_at: float) -> FrameItem:
    yuv = av.VideoFrame.from_ndarray(np.full((16, 32, 3), index, np.uint8), format="rgb24").reformat(
        format="yuv420p"
    )
    return FrameItem(yuv.to_ndarray(), index, produced_at)


def test_timestamps_follow_the_production_clock_at_90khz() -> None:
    async def main() -> list[av.VideoFrame]:
        frames = FrameQueue(8, StreamMetrics())
        stopped = []
        track = GeneratedVideoTrack(frames, StreamMetrics(), on_stop=lambda: stopped.append(True))
        for i, t in enumerate([10.0, 10.1, 10.1, 10.35]):  # two frames due at once must still advance
            frames.put(item(i, t))
        out = [await track.recv() for _ in range(4)]
        track.stop()
        assert stopped == [True]
        with pytest.raises(MediaStreamError):
            await track.recv()
        return out

    out = asyncio.run(main())
    assert [f.pts for f in out] == [
        0,
        round(0.1 * CLOCK_RATE),
        round(0.1 * CLOCK_RATE) + 1,
        round(0.35 * CLOCK_RATE),
    ]
    assert all(f.time_base == TIME_BASE for f in out)
    assert (out[0].width, out[0].height, out[0].format.name) == (32, 16, "yuv420p")


class _Camera:
    def __init__(self, n: int) -> None:
        self.left = n

    async def recv(self) -> av.VideoFrame:
        if self.left == 0:
            raise MediaStreamError
        self.left -= 1
        return av.VideoFrame(64, 48, "yuv420p")


def test_camera_frames_are_handed_over_until_the_track_ends() -> None:
    got: list[av.VideoFrame] = []
    asyncio.run(asyncio.wait_for(consume_source(_Camera(3), got.append), 5))
    assert len(got) == 3
