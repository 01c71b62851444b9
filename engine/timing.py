"""Per-stage timers: CUDA events on the GPU (read once, at the end of a frame), wall clock on the CPU. Each stage
is also a named range ("stage:NAME") in torch.profiler traces, so that a profile can say what the host was doing
while the GPU waited (benchmarks/profile_frame.py, its idle gaps)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

STAGE_PREFIX = "stage:"  # the profiler range of a stage


class StageTimer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._spans: dict[str, list] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        with torch.profiler.record_function(STAGE_PREFIX + stage):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                yield
                end.record()
            else:
                start = time.perf_counter()
                yield
                end = time.perf_counter()
        self._spans.setdefault(stage, []).append((start, end))

    def read_ms(self) -> dict[str, float]:
        """Milliseconds per stage (summed over repeats); synchronizes once on the GPU."""
        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for stage, spans in self._spans.items():
            if self.cuda:
                out[stage] = sum(s.elapsed_time(e) for s, e in spans)
            else:
                out[stage] = sum(e - s for s, e in spans) * 1000.0
        self._spans.clear()
        return out
