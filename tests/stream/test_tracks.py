import asyncio

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from stream.metrics import StreamMetrics
from stream.tracks import GeneratedVideoTrack, consume_source


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


def test_a_track_without_an_encoder_or_stopped_ends_the_stream() -> None:
    async def main() -> None:
        track = GeneratedVideoTrack(StreamMetrics())
        with pytest.raises(MediaStreamError):  # never bound: the offer failed before a codec was chosen
            await track.recv()
        track.stop()
        with pytest.raises(MediaStreamError):
            await track.recv()

    asyncio.run(main())
