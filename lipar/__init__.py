"""LIPAR: latent inter-frame pruning with attention recovery (DESIGN.md §4).

| paper concept | here |
|---|---|
| keep mask (d_short, d_long, smoothing, scene cut; warm-up, settled output, bounded age) | `lipar.mask` |
| pruned forward: gather kept tokens, their positions | `lipar.prune` |
| attention recovery (noisy-copy, noise-aware, exclude; the paper's M-degree is `KVWindow`) | `lipar.recovery` |
| restoration of pruned outputs | `lipar.prune.restore` |
| kernels (Triton) with PyTorch references | `lipar.kernels` |
"""

from lipar.config import LiparConfig
from lipar.mask import MaskResult, StreamingMask, compute_mask
from lipar.prune import gather, positions, restore
from lipar.recovery import key_padding_mask, recover_kv

__all__ = [
    "LiparConfig",
    "MaskResult",
    "StreamingMask",
    "compute_mask",
    "gather",
    "key_padding_mask",
    "positions",
    "recover_kv",
    "restore",
]
