"""The Triton kernels against their PyTorch references, run by Triton's CPU interpreter.

`triton.jit` decides when a function is defined whether it is interpreted, and that holds for
triton.language's own helpers (tl.max, tl.sum) defined when triton is first imported. Other test
modules import triton before this one runs, so the checks (triton_interpreter/check_*.py) run in a
child pytest that starts with TRITON_INTERPRET=1.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKS = sorted((Path(__file__).parent / "triton_interpreter").glob("check_*.py"))


def test_kernels_match_their_references_in_the_interpreter():
    assert len(CHECKS) == 3
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, CHECKS)],
        cwd=ROOT,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "skipped" not in result.stdout.splitlines()[-1], result.stdout[-2000:]
