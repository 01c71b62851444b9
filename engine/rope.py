"""3-D rotary position embedding at true (t, h, w) token positions (Wan2.1 layout).

A head of dimension D holds D/2 complex pairs (x[2i], x[2i+1]); they are split among time,
height and width as c - 2*(c//3), c//3, c//3 pairs (22/21/21 for D = 128), each axis with
frequencies theta^(-2j / d_axis).
"""

from __future__ import annotations

import torch
from torch import Tensor


class Rope3D:
    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        pairs = head_dim // 2
        split = (pairs - 2 * (pairs // 3), pairs // 3, pairs // 3)
        # float64: positions grow without bound in a stream, and fp32 angles lose phase past ~1e4
        self.inv_freq = [1.0 / theta ** (torch.arange(0, 2 * n, 2, dtype=torch.float64) / (2 * n)) for n in split]
        self.head_dim = head_dim
        self._on_device: dict[torch.device, list[torch.Tensor]] = {}  # no host copies inside CUDA graphs

    def cos_sin(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """pos (N, 3) integer (t, h, w) -> cos, sin each (N, head_dim/2) float32 on pos.device."""
        if pos.device not in self._on_device:
            self._on_device[pos.device] = [f.to(pos.device) for f in self.inv_freq]
        inv_freq = self._on_device[pos.device]
        pos = pos.to(torch.float64)
        angles = torch.cat([pos[:, axis, None] * f[None, :] for axis, f in enumerate(inv_freq)], dim=1)
        return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, N, H, D); cos/sin (N, D/2). Rotation in float32, result in x's dtype."""
    xf = x.float().unflatten(-1, (-1, 2))  # (B, N, H, D/2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.flatten(-2).to(x.dtype)
