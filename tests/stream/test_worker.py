import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import av
import numpy as np
import pytest

from stream.config import ServerConfig
from stream.metrics import StreamMetrics
from stream.protocol import Pause, Reset, Resume, SetLipar, SetMode, SetPrompt
from stream.server import load_generator
from stream.worker import FrameItem, FrameQueue, GeneratorWorker

TIMEOUT_S = 30


@pytest.fixture(scope="module")
def generator():
    return load_generator(ServerConfig(device="cpu", size=(128, 128), random_weights=True))


@asynccontextmanager
async def running(generator, target_fps: float = 30.0, queue_frames: int = 2) -> AsyncIterator[GeneratorWorker]:
    generator.reset()
    worker = GeneratorWorker(
        generator,
        asyncio.get_running_loop(),
        StreamMetrics(),
        prompt="a red ball bouncing over a gray background",
        target_fps=target_fps,
        queue_frames=queue_frames,
    )
    worker.start()
    await asyncio.wrap_future(worker.first_prompt)
    try:
        yield worker
    finally:
        await asyncio.get_running_loop().run_in_executor(None, worker.stop)


async def take(frames: FrameQueue, n: int) -> list[FrameItem]:
    return [await asyncio.wait_for(frames.get(), TIMEOUT_S) for _ in range(n)]


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 2 * TIMEOUT_S))


def test_frame_queue_keeps_the_newest() -> None:
    async def main() -> None:
        metrics = StreamMetrics()
        frames = FrameQueue(2, metrics)
        for i in range(5):
            frames.put(FrameItem(np.zeros((6, 4), np.uint8), i, float(i)))
        assert frames.dropped == 3
        assert [(await frames.get()).index for _ in range(2)] == [3, 4]
        assert metrics.registry.get_sample_value("stream_dropped_frames_total") == 3

    run(main())


def test_every_subscriber_gets_the_same_frames_in_order(generator) -> None:
    async def main() -> None:
        async with running(generator) as worker:
            a, b = worker.subscribe(), worker.subscribe()
            got_a, got_b = await asyncio.gather(take(a, 4), take(b, 4))
        assert [f.index for f in got_a] == [f.index for f in got_b]
        assert np.diff([f.index for f in got_a]).tolist() == [1, 1, 1]
        assert all(np.diff([f.produced_at for f in got_a]) > 0)
        assert got_a[0].yuv.shape == (128 * 3 // 2, 128)  # yuv420p planes of a 128x128 frame
        assert got_a[0].yuv is got_b[0].yuv  # converted once, shared by every viewer

    run(main())


def test_a_viewer_that_never_reads_drops_frames_and_does_not_hold_up_the_others(generator) -> None:
    async def main() -> None:
        async with running(generator, queue_frames=2) as worker:
            reader, stuck = worker.subscribe(), worker.subscribe()
            got = await take(reader, 8)
            await asyncio.sleep(0)  # let the last publish reach both queues
        indices = [f.index for f in got]
        assert indices == list(range(indices[0], indices[0] + 8))  # the reader missed nothing
        assert stuck.dropped >= 5
        newest = [(await stuck.get()).index for _ in range(2)]
        assert newest[-1] >= indices[-1]  # what the stuck viewer still holds is the newest

    run(main())


def test_production_never_exceeds_target_fps(generator) -> None:
    async def main() -> None:
        async with running(generator, target_fps=5.0) as worker:
            got = await take(worker.subscribe(), 4)
        gaps = np.diff([f.produced_at for f in got])
        assert gaps.min() >= 0.2 - 0.01, gaps

    run(main())


def test_commands_change_the_stream(generator) -> None:
    async def main() -> None:
        async with running(generator) as worker:
            frames = worker.subscribe()
            await take(frames, 2)
            await asyncio.wrap_future(worker.submit(SetPrompt("a blue square over a brick wall", 4)))
            assert worker.snapshot.prompt == "a blue square over a brick wall"

            await asyncio.wrap_future(worker.submit(SetLipar(True, tau_short=0.05)))
            assert generator.lipar.enabled and generator.lipar.tau_short == 0.05
            assert generator.lipar.tau_long is not None  # left out: the model's calibrated value stays
            assert worker.snapshot.lipar

            await asyncio.wrap_future(worker.submit(Pause()))
            await asyncio.sleep(0.1)
            while len(frames):
                await frames.get()
            await asyncio.sleep(0.6)
            assert len(frames) == 0, "frames were produced while paused"
            assert worker.snapshot.paused
            await asyncio.wrap_future(worker.submit(Resume()))
            await take(frames, 1)

            before = worker.snapshot.frame
            await asyncio.wrap_future(worker.submit(Reset()))
            await take(frames, 1)
            assert worker.snapshot.frame < before

    run(main())


def test_a_command_that_fails_is_reported_to_its_sender_and_the_stream_goes_on(generator) -> None:
    async def main() -> None:
        async with running(generator) as worker:
            frames = worker.subscribe()
            with pytest.raises(TypeError, match="unknown command"):
                await asyncio.wrap_future(worker.submit("explode"))  # type: ignore[arg-type]
            await take(frames, 2)

    run(main())


def test_camera_frames_drive_v2v_only_from_the_viewer_that_asked(generator) -> None:
    async def main() -> None:
        camera = av.VideoFrame.from_ndarray(np.full((480, 640, 3), 200, np.uint8), format="rgb24")
        async with running(generator) as worker:
            frames = worker.subscribe()
            await asyncio.wrap_future(worker.submit(SetMode("v2v"), viewer="alice"))
            worker.offer_source("bob", camera)
            await take(frames, 3)
            assert worker.snapshot.source_frames == 0  # bob does not drive the stream
            deadline = time.monotonic() + TIMEOUT_S
            while worker.snapshot.source_frames < 2 and time.monotonic() < deadline:
                worker.offer_source("alice", camera)
                await frames.get()
            assert worker.snapshot.source_frames >= 2
            assert worker.snapshot.mode == "v2v"

            worker.release_source("alice")  # alice left: her frames are no longer taken
            taken = worker.snapshot.source_frames
            worker.offer_source("alice", camera)
            await take(frames, 2)
            assert worker.snapshot.source_frames == taken

    run(main())


def test_a_failing_step_is_reported_and_the_worker_recovers(generator) -> None:
    async def main() -> None:
        async with running(generator) as worker:
            frames = worker.subscribe()
            await asyncio.wrap_future(worker.submit(SetMode("v2v"), viewer="alice"))
            worker.offer_source("alice", np.zeros((4, 4, 3), np.uint8))  # too small for any model
            deadline = time.monotonic() + TIMEOUT_S
            while worker.snapshot.error is None:
                assert time.monotonic() < deadline, "the failing step was not reported"
                await asyncio.sleep(0.05)
            assert "too small" in worker.snapshot.error  # a ValueError: the generator's own words
            assert worker.alive
            while len(frames):  # frames made before the failure
                await frames.get()
            worker.offer_source("alice", np.full((128, 128, 3), 90, np.uint8))
            await take(frames, 1)
            assert worker.snapshot.error is None

    run(main())


def test_a_burst_of_commands_is_coalesced_to_the_newest_of_each_kind(fake_generator) -> None:
    async def main() -> None:
        async with running(fake_generator) as worker:
            frames = worker.subscribe()
            await take(frames, 2)
            applied = len(fake_generator.prompts)
            futures = [worker.submit(SetPrompt(f"prompt {i}")) for i in range(500)]
            futures += [worker.submit(Pause()), worker.submit(Resume())]
            await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))  # every sender gets an answer
            started = time.monotonic()
            await take(frames, 3)
            assert time.monotonic() - started < 2.0  # the stream did not freeze
        # coalesced: the newest wins, and the burst costs a few text encodings, not 500 (the worker may
        # apply one between frames while the burst is still arriving: that is a race, not a failure)
        burst = fake_generator.prompts[applied:]
        assert burst[-1] == "prompt 499" and len(burst) <= 5, burst
        assert not worker.snapshot.paused  # pause then resume: the newest wins

    run(main())


@pytest.mark.parametrize(
    "fault, error",
    [
        (RuntimeError("CUDA error: an illegal memory access was encountered"), "the generator failed (RuntimeError)"),
        (MemoryError(), "the generator ran out of memory"),
    ],
)
def test_an_injected_fault_is_reported_plainly_and_the_stream_resumes(fake_generator, fault, error) -> None:
    async def main() -> None:
        async with running(fake_generator) as worker:
            frames = worker.subscribe()
            await take(frames, 2)
            fake_generator.fail_with = fault
            deadline = time.monotonic() + TIMEOUT_S
            while worker.snapshot.error is None:
                assert time.monotonic() < deadline, "the failing step was not reported"
                await asyncio.sleep(0.02)
            assert worker.snapshot.error.startswith(error) and "illegal memory" not in worker.snapshot.error
            assert worker.alive
            fake_generator.fail_with = None
            while len(frames):
                await frames.get()
            await take(frames, 1)
            assert worker.snapshot.error is None

    run(main())
