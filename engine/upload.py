"""Source frames from the host to the device, once per step."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class HostUpload:
    """uint8 (H, W, 3) host frames -> one (T, H, W, 3) device tensor.

    On a GPU through one pinned buffer per shape, reused: a step neither allocates fresh host memory
    (first touch of new pages) nor copies from pageable memory (a synchronous staging copy). Filling a
    buffer waits for the previous copy out of it. On the CPU it is a plain stack.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: dict[tuple[int, ...], Tensor] = {}
        self._copied = torch.cuda.Event() if device.type == "cuda" else None  # the last copy out of a buffer

    def __call__(self, frames: list[np.ndarray]) -> Tensor:
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(frames)).to(self.device)
        shape = (len(frames), *frames[0].shape)
        buffer = self._buffers.get(shape)
        if buffer is None:
            buffer = self._buffers[shape] = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        self._copied.synchronize()  # returns at once before the first record
        host = buffer.numpy()
        for i, frame in enumerate(frames):
            host[i] = frame
        out = buffer.to(self.device, non_blocking=True)
        self._copied.record()
        return out
