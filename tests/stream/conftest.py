"""A stand-in generator for stream tests where the model is not the point: fast, tiny CPU cost."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.generator import StepOutput
from lipar.config import LiparConfig


class FakeGenerator:
    """The generator's public API (set_prompt, set_lipar, reset, step) on moving noise frames.

    `fail_with` makes the next steps raise that exception until it is set back to None: the fault
    injection of the server tests and benchmarks (an exception, an out-of-memory error).
    """

    def __init__(self, size: tuple[int, int] = (64, 64), step_s: float = 0.02) -> None:
        self.height, self.width = size
        self.lipar = LiparConfig(enabled=True, tau_short=0.005, tau_long=0.01)
        self.device = "cpu"
        self.step_s = step_s
        self.prompts: list[str] = []  # every prompt applied, in order
        self.frame = 0
        self.fail_with: BaseException | None = None
        self._rng = np.random.default_rng(0)
        self._tick = threading.Event()

    def set_prompt(self, text: str, transition_frames: int = 0) -> None:
        self.prompts.append(text)

    def set_lipar(self, config: LiparConfig) -> None:
        self.lipar = config

    def reset(self) -> None:
        self.frame = 0

    def step(self, source: np.ndarray | None = None) -> StepOutput:
        self._tick.wait(self.step_s)  # stands for the model's time, without using a CPU
        if self.fail_with is not None:
            raise self.fail_with
        self.frame += 1
        image = np.roll(self._rng.integers(0, 255, (self.height, self.width, 3), np.uint8), self.frame, axis=1)
        grid = (self.height // 16, self.width // 16)
        stats = {"frame": self.frame, "kept_ratio": 1.0, "stages_ms": {"dit": self.step_s * 1e3}}
        return StepOutput([image], stats, np.ones(grid, bool))


@pytest.fixture
def fake_generator() -> FakeGenerator:
    return FakeGenerator()
