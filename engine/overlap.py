"""Independent GPU work beside the main stream: a second CUDA stream the step hands work that nothing
on the main stream waits for until later (decoding a block while its cache pass runs; the mask
encoder's latent while the model's encoder runs). At LIPAR's kept counts the DiT's matmuls and
attention leave multiprocessors idle (890 queries x 12 heads make 84 tiles of 128 on the H200's 132),
which the other work can use. On the CPU everything runs inline, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def _tensors(value) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


class Pending(Generic[T]):
    """Work issued beside the main stream (CUDA), or deferred until it is asked for (CPU, where
    nothing overlaps and the caller's stage timers must not count it twice)."""

    def __init__(self, get: Callable[[], T]) -> None:
        self._get, self._value, self._ready = get, None, False

    def result(self) -> T:
        """The value; on CUDA the current stream first waits for the side stream's work."""
        if not self._ready:
            self._value, self._ready = self._get(), True
        return self._value


class SideStream:
    """`enabled` False (or the CPU): every `run` is deferred to its `result()`, in order on one stream."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.stream = torch.cuda.Stream(device) if enabled and device.type == "cuda" else None

    def run(self, fn: Callable[..., T], *args) -> Pending[T]:
        """`fn(*args)` on the side stream, after everything issued so far on the current one (on the CPU:
        at `result()`). The allocator is told who reads what: the tensor arguments are not reused before
        the side stream is done with them, the outputs not before the main stream is."""
        if self.stream is None:
            return Pending(lambda: fn(*args))
        main = torch.cuda.current_stream()
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            value = fn(*args)
            done = torch.cuda.Event()
            done.record()
        for t in _tensors(list(args)):
            t.record_stream(self.stream)
        for t in _tensors(value):
            t.record_stream(main)

        def wait() -> T:
            main.wait_event(done)
            return value

        return Pending(wait)
