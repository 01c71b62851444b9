"""A benchmark script's folder is first on sys.path when it runs, so no file there may share a name with an
installed module: benchmarks/kernels.py once hid the PyPI package `kernels` that transformers imports, and every
script that loaded the MiniLM text encoder failed."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCHMARKS.glob("*.py")))
def test_no_benchmark_script_shadows_an_installed_module(script):
    assert str(BENCHMARKS) not in sys.path  # what is found below is installed, not the script itself
    assert script not in sys.stdlib_module_names and importlib.util.find_spec(script) is None, (
        f"benchmarks/{script}.py shadows an installed module of that name when a benchmark runs as a script"
    )
