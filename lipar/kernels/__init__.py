"""Triton kernels for LIPAR, each beside its pure-PyTorch reference.

The public entry points use a kernel only on CUDA tensors and only while its switch here is on; the
benchmark (benchmarks/kernels.py) measures each against its reference so a caller can turn off a
kernel that does not pay on its card. Everything else runs the reference.
"""

from __future__ import annotations

from torch import Tensor

_TRITON: dict[str, bool] = {"attention": True, "gather": True, "recovery": True}


def set_triton(kernel: str, enabled: bool) -> None:
    """Turn the Triton path of one kernel ("attention" | "gather" | "recovery") on or off."""
    if kernel not in _TRITON:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of: {', '.join(_TRITON)}")
    _TRITON[kernel] = bool(enabled)


def use_triton(kernel: str, *tensors: Tensor) -> bool:
    return _TRITON[kernel] and all(t.is_cuda for t in tensors)
