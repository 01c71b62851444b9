"""Triton kernels for LIPAR, each beside its pure-PyTorch reference.

The public entry points use a kernel only on CUDA tensors and only while its switch here is on.
The defaults follow benchmarks/kernels.py on an H200 (benchmarks/results/kernels.json): fused
recovery is ~8.7x faster than its reference and gather/restore 1.0-1.6x, so they are on. The
"attention" switch sends every attention call to the split-KV kernel (`app.py bench --triton` turns
every kernel on); while it is off, lipar.kernels.attention times the split-KV kernel against the
stock ones per shape and uses it where it wins. Feeding SDPA's flash kernel KV chunks as a batch
was slower than SDPA (0.69-0.94x); stock cuDNN over KV chunks is one of the timed candidates.
"""

from __future__ import annotations

from torch import Tensor

_TRITON: dict[str, bool] = {"attention": False, "gather": True, "recovery": True}


def set_triton(kernel: str, enabled: bool) -> None:
    """Turn the Triton path of one kernel ("attention" | "gather" | "recovery") on or off."""
    if kernel not in _TRITON:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of: {', '.join(_TRITON)}")
    _TRITON[kernel] = bool(enabled)


def set_all_triton(enabled: bool) -> None:
    for kernel in _TRITON:
        set_triton(kernel, enabled)


def use_triton(kernel: str, *tensors: Tensor) -> bool:
    return _TRITON[kernel] and all(t.is_cuda for t in tensors)
