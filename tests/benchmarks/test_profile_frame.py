"""benchmarks/profile_frame.py: the GPU busy time it reports is the union of kernel intervals."""

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "profile_frame.py"
_spec = importlib.util.spec_from_file_location("profile_frame", _PATH)
profile_frame = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_frame)


def test_busy_time_counts_overlapping_kernels_once_and_gaps_not_at_all():
    spans = [(10.0, 20.0), (0.0, 4.0), (15.0, 30.0), (40.0, 41.0), (16.0, 18.0)]
    assert profile_frame.union_length(spans) == 4.0 + 20.0 + 1.0


def test_busy_time_of_no_kernels_is_zero():
    assert profile_frame.union_length([]) == 0.0
