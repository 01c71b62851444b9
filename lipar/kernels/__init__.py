"""Triton kernels for LIPAR, each beside its pure-PyTorch reference.

The public entry points use a kernel only on CUDA tensors and only while its switch here is on; the
benchmark (benchmarks/kernels.py) measures each against its reference so a caller can turn on the
kernels that pay on its card (`app.py bench --triton`). Everything else runs the reference. The
switches start off: no kernel has been timed against its reference on a GPU yet.
"""

from __future__ import annotations

from torch import Tensor

_TRITON: dict[str, bool] = {"attention": False, "gather": False, "recovery": False}


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
