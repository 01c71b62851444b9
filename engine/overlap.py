"""A second CUDA stream for work that may run beside the main one.

The VAE decode of a block needs only its clean latent, which is ready before the DiT's cache pass over
that block starts; the two touch no common buffer, so the generator runs the decode here while the
cache pass runs on the main stream, and waits for it at the end of the step. On the CPU (or with the
overlap off, to measure it) the work runs at once, in order, on the current stream.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class SideStream:
    """`start(fn, x)` queues `fn(x)` on the side stream, after everything queued so far on the current
    one; `result()` makes the current stream wait for it and returns its output. One at a time."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.stream = torch.cuda.Stream(device) if enabled and device.type == "cuda" else None
        self._pending: tuple[Tensor, Tensor] | None = None  # (input, output) of the started call

    @property
    def overlaps(self) -> bool:
        return self.stream is not None

    def start(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> None:
        if self._pending is not None:
            raise RuntimeError("SideStream.start: the previous call's result was not taken")
        if self.stream is None:
            self._pending = (x, fn(x))
            return
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = fn(x)
        self._pending = (x, out)

    def result(self) -> Tensor:
        if self._pending is None:
            raise RuntimeError("SideStream.result: nothing was started")
        x, out = self._pending
        self._pending = None
        if self.stream is not None:
            main = torch.cuda.current_stream()
            main.wait_stream(self.stream)
            # the input was read on the side stream and the output is used on the main one: neither block
            # may be handed to another tensor before both streams are done with it
            x.record_stream(self.stream)
            out.record_stream(main)
        return out
