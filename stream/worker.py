"""The one generator worker thread: owns the generator, applies controls, publishes frames.

Model work never runs on the asyncio loop (DESIGN.md §3). The loop talks to this thread
through two doors only: `submit` (a command, answered by a concurrent Future) and
`offer_source` (the newest camera frame). Frames come back via `loop.call_soon_threadsafe`
into bounded queues (one per shared encoder) that drop their oldest frame, so a slow
consumer never makes the generator wait.

Commands are coalesced: between two latent frames only the newest command of each kind is
applied (older ones are answered as superseded), so a burst of 500 prompts costs one text
encoding, not 500, and cannot freeze the stream.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import av
import numpy as np

from stream.metrics import StreamMetrics
from stream.protocol import Command, Pause, Reset, Resume, SetLipar, SetMode, SetPrompt

logger = logging.getLogger(__name__)

_FPS_WINDOW_S = 2.0
_ERROR_BACKOFF_S = 0.5
_MAX_ERROR_CHARS = 200


@dataclass(frozen=True)
class FrameItem:
    """One generated video frame as every viewer's encoder wants it."""

    yuv: np.ndarray  # (H*3/2, W) uint8, yuv420p planes: converted once here, not once per viewer
    index: int  # video frame number since the worker started
    produced_at: float  # time.monotonic() (= the loop's clock) at which the frame is due


class FrameQueue:
    """One viewer's frames: bounded, and full means the oldest frame is dropped (loop thread only)."""

    def __init__(self, maxsize: int, metrics: StreamMetrics) -> None:
        self._queue: asyncio.Queue[FrameItem] = asyncio.Queue(maxsize)
        self._metrics = metrics
        self.dropped = 0

    def put(self, item: FrameItem) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            self._metrics.dropped.inc()
        self._queue.put_nowait(item)

    async def get(self) -> FrameItem:
        return await self._queue.get()

    def __len__(self) -> int:
        return self._queue.qsize()


@dataclass(frozen=True)
class Snapshot:
    """What the viewers are told about the stream (the `stats` message)."""

    frame: int = 0  # latent frames generated since the last reset (the generator's count)
    fps: float = 0.0
    latency_ms: float = 0.0  # wall time of the last generator step
    kept_ratio: float = 1.0
    stages_ms: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None  # (h/2, w/2) bool, True = kept token
    motion: dict | None = None  # the camera motion LIPAR compensated (generator stats "motion"), or None
    mode: str = "t2v"
    paused: bool = False
    prompt: str = ""
    lipar: bool = False
    source_frames: int = 0  # camera frames taken by the generator
    error: str | None = None  # why the last step failed; None once a step succeeds again


class GeneratorWorker:
    def __init__(
        self,
        generator: Any,
        loop: asyncio.AbstractEventLoop,
        metrics: StreamMetrics,
        *,
        prompt: str,
        target_fps: float,
        queue_frames: int,
    ) -> None:
        self._gen = generator
        self._loop = loop
        self._metrics = metrics
        self._min_frame_interval = 1.0 / target_fps
        self._queue_frames = queue_frames
        # kind -> the newest command of that kind not yet applied; insertion order = order of arrival
        self._pending: dict[str, tuple[Command, str | None, concurrent.futures.Future]] = {}
        self._pending_lock = threading.Lock()
        self._failures = 0  # generator steps failed in a row
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="generator-worker", daemon=True)
        self._subscribers: set[FrameQueue] = set()  # loop thread only
        self._subscriber_count = 0  # read by the worker thread to idle when nobody watches
        self._source_lock = threading.Lock()
        self._source: av.VideoFrame | np.ndarray | None = None
        self._source_owner: str | None = None  # the viewer whose camera drives v2v
        self._held_source: np.ndarray | None = None  # worker thread only
        self._produced: collections.deque[float] = collections.deque()
        self._next_index = 0
        self._last_due = -math.inf
        self._snapshot = Snapshot(lipar=bool(generator.lipar.enabled))
        # the generator cannot step without a prompt; this future tells the server whether it took
        self.first_prompt = self.submit(SetPrompt(prompt))

    # -- loop side ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Blocks until the current step ends; call it from an executor, not the loop."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("generator worker did not stop within %.1f s", timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def size(self) -> tuple[int, int]:
        return self._gen.height, self._gen.width

    def subscribe(self) -> FrameQueue:
        frames = FrameQueue(self._queue_frames, self._metrics)
        self._subscribers.add(frames)
        self._subscriber_count = len(self._subscribers)
        self._wake.set()
        return frames

    def unsubscribe(self, frames: FrameQueue) -> None:
        self._subscribers.discard(frames)
        self._subscriber_count = len(self._subscribers)

    def submit(self, command: Command, viewer: str | None = None) -> concurrent.futures.Future:
        """Queue a command; it is applied between latent frames. The future fails with its error and
        is done (result None) at once if a newer command of the same kind replaces it. Thread-safe."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        kind = _kind(command)
        with self._pending_lock:
            superseded = self._pending.pop(kind, None)
            self._pending[kind] = (command, viewer, done)
        if superseded is not None and superseded[2].set_running_or_notify_cancel():
            superseded[2].set_result(None)
        self._wake.set()
        return done

    def offer_source(self, viewer: str, frame: av.VideoFrame | np.ndarray) -> None:
        """The newest camera frame of `viewer`; kept only if that viewer drives v2v. Thread-safe."""
        with self._source_lock:
            if viewer == self._source_owner:
                self._source = frame

    def release_source(self, viewer: str) -> None:
        """A viewer left: its camera no longer drives the stream. Thread-safe."""
        with self._source_lock:
            if viewer == self._source_owner:
                self._source_owner = None
                self._source = None

    def _schedule(self, items: list[FrameItem]) -> None:
        now = self._loop.time()
        for item in items:
            if item.produced_at > now:
                self._loop.call_at(item.produced_at, self._publish, item)
            else:
                self._publish(item)

    def _publish(self, item: FrameItem) -> None:
        for frames in self._subscribers:
            frames.put(item)

    # -- worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        logger.info("generator worker started (%dx%d)", self._gen.height, self._gen.width)
        while not self._stopping.is_set():
            self._apply_commands()
            snap = self._snapshot
            if snap.paused or self._subscriber_count == 0:
                self._refresh_fps(time.monotonic())
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            started = time.monotonic()
            try:
                out = self._gen.step(self._take_source() if snap.mode == "v2v" else None)
            except Exception as exc:  # MemoryError and CUDA out-of-memory included: the stream goes on
                self._step_failed(exc)
                continue
            self._failures = 0
            finished = time.monotonic()
            self._emit(out, started, finished)
            # produce at most target_fps: the next step starts no earlier than this
            self._stopping.wait(max(0.0, started + len(out.frames) * self._min_frame_interval - time.monotonic()))
        logger.info("generator worker stopped")

    def _step_failed(self, exc: Exception) -> None:
        self._failures += 1
        self._metrics.generator_errors.inc()
        if self._failures == 1:  # the traceback once, not every half second while it keeps failing
            logger.exception("generator step failed; retrying every %.1f s", _ERROR_BACKOFF_S)
        else:
            logger.warning("generator step failed again (%d in a row): %s", self._failures, type(exc).__name__)
        if _is_out_of_memory(exc):
            _release_cached_memory()
        self._snapshot = replace(self._snapshot, error=_describe_failure(exc))
        self._stopping.wait(_ERROR_BACKOFF_S)

    def _emit(self, out: Any, started: float, finished: float) -> None:
        n = len(out.frames)
        # frames of one latent step are spread over the step's period, so playback stays even
        period = max(finished - started, n * self._min_frame_interval) / n
        items = []
        for i, image in enumerate(out.frames):
            # never due sooner than target_fps allows, even when one step ran faster than the last
            due = max(finished + i * period, self._last_due + self._min_frame_interval)
            yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
            items.append(FrameItem(yuv.to_ndarray(), self._next_index, due))
            self._next_index += 1
            self._last_due = due
            self._produced.append(due)

        stats = out.stats
        latency = finished - started
        self._metrics.frames.inc(n)
        self._metrics.generate_latency.observe(latency)
        self._metrics.kept_ratio.set(stats["kept_ratio"])
        self._snapshot = replace(
            self._snapshot,
            frame=int(stats["frame"]),
            latency_ms=latency * 1e3,
            kept_ratio=float(stats["kept_ratio"]),
            stages_ms={k: round(float(v), 2) for k, v in stats["stages_ms"].items()},
            mask=np.asarray(out.mask, dtype=bool),
            motion=stats.get("motion"),
            error=None,
        )
        self._refresh_fps(finished)
        # published after the snapshot is up to date: whoever gets a frame that followed a failure sees
        # the error cleared (it was published first, and a test caught the stale error in between)
        self._loop.call_soon_threadsafe(self._schedule, items)

    def _refresh_fps(self, now: float) -> None:
        produced = self._produced
        while produced and produced[0] < now - _FPS_WINDOW_S:
            produced.popleft()
        # measured up to now, not to the newest frame, so a pause or a stall shows as falling fps
        fps = (len(produced) - 1) / (max(produced[-1], now) - produced[0]) if len(produced) >= 2 else 0.0
        if fps != self._snapshot.fps:
            self._metrics.fps.set(fps)
            self._snapshot = replace(self._snapshot, fps=fps)

    def _take_source(self) -> np.ndarray | None:
        """The camera's newest frame, held until a newer one comes: a camera slower than the
        generator must not make it flip between v2v and t2v (each flip restarts the LIPAR mask)."""
        with self._source_lock:
            if self._source_owner is None:  # the camera's viewer left
                self._held_source = None
            frame, self._source = self._source, None
        if frame is not None:
            self._snapshot = replace(self._snapshot, source_frames=self._snapshot.source_frames + 1)
            if isinstance(frame, av.VideoFrame):
                # resize while converting: one swscale pass, and the generator gets its own size
                frame = frame.to_ndarray(format="rgb24", width=self._gen.width, height=self._gen.height)
            self._held_source = frame
        return self._held_source  # None until the first camera frame: text-to-video meanwhile

    def _apply_commands(self) -> None:
        with self._pending_lock:
            pending, self._pending = list(self._pending.values()), {}
        for command, viewer, done in pending:
            if not done.set_running_or_notify_cancel():
                continue
            try:
                self._apply(command, viewer)
            except Exception as exc:  # the viewer is told; the stream goes on
                done.set_exception(exc)
            else:
                done.set_result(None)

    def _apply(self, command: Command, viewer: str | None) -> None:
        snap = self._snapshot
        if isinstance(command, SetPrompt):
            self._gen.set_prompt(command.text, transition_frames=command.transition_frames)
            self._snapshot = replace(snap, prompt=command.text)
        elif isinstance(command, SetMode):
            with self._source_lock:
                self._source_owner = viewer if command.mode == "v2v" else None
                self._source = None
            self._held_source = None
            self._snapshot = replace(snap, mode=command.mode)
        elif isinstance(command, SetLipar):
            self._gen.set_lipar(_lipar_config(self._gen, command))
            self._snapshot = replace(
                snap, lipar=command.enabled, kept_ratio=1.0 if not command.enabled else snap.kept_ratio
            )
        elif isinstance(command, Reset):
            self._gen.reset()
            self._snapshot = replace(snap, frame=0)
        elif isinstance(command, (Pause, Resume)):
            self._snapshot = replace(snap, paused=isinstance(command, Pause))
        else:
            raise TypeError(f"unknown command {command!r}")


def _kind(command: Command) -> str:
    """Commands of one kind replace each other while pending; pause and resume are one setting."""
    return "pause" if isinstance(command, (Pause, Resume)) else type(command).__name__


def _is_out_of_memory(exc: BaseException) -> bool:
    # torch.OutOfMemoryError (CUDA) is a RuntimeError; named here so the stream needs no torch import
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def _release_cached_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _describe_failure(exc: Exception) -> str:
    """What viewers are told: the generator's own words for a bad input (ValueError), else only the kind."""
    retry = f"retrying every {_ERROR_BACKOFF_S:g} s"
    if _is_out_of_memory(exc):
        return f"the generator ran out of memory; {retry}"
    if isinstance(exc, ValueError):
        return f"{str(exc)[:_MAX_ERROR_CHARS]}; {retry}"
    return f"the generator failed ({type(exc).__name__}); {retry}"


def _lipar_config(generator: Any, command: SetLipar) -> Any:
    # thresholds left out keep the generator's current (model-calibrated) ones
    changes: dict[str, Any] = {"enabled": command.enabled}
    if command.tau_short is not None:
        changes["tau_short"] = command.tau_short
    if command.tau_long is not None:
        changes["tau_long"] = command.tau_long
    return replace(generator.lipar, **changes)
