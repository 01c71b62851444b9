"""benchmarks/probe_kept_staircase.py: the graph sizes that cost least on a measured staircase."""

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "probe_kept_staircase.py"
_spec = importlib.util.spec_from_file_location("probe_kept_staircase", _PATH)
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)

TOKENS = list(range(10, 101, 10))
STAIRS = [1.0] * 4 + [2.0] * 4 + [3.0] * 2  # ms: the cost steps after 40 and 80 tokens


def test_the_chosen_sizes_sit_at_the_right_edges_of_the_steps():
    assert probe.choose_sizes(TOKENS, STAIRS, 3) == [40, 80, 100]
    assert probe.padded_mean(TOKENS, STAIRS, [40, 80, 100]) == pytest.approx((1 * 40 + 2 * 40 + 3 * 20) / 100)
    # any other 3 sizes pay more: e.g. evenly spread ones
    assert probe.padded_mean(TOKENS, STAIRS, [30, 70, 100]) > probe.padded_mean(TOKENS, STAIRS, [40, 80, 100])


def test_one_size_is_the_whole_frame_and_every_size_costs_each_its_own():
    assert probe.choose_sizes(TOKENS, STAIRS, 1) == [100]
    assert probe.padded_mean(TOKENS, STAIRS, [100]) == 3.0
    assert probe.choose_sizes(TOKENS, STAIRS, len(TOKENS)) == TOKENS
    assert probe.padded_mean(TOKENS, STAIRS, TOKENS) == pytest.approx(sum(STAIRS) / len(STAIRS))


def test_a_count_of_sizes_outside_the_grid_is_refused():
    with pytest.raises(ValueError, match="between 1 and 10"):
        probe.choose_sizes(TOKENS, STAIRS, 0)


def test_the_probe_runs_end_to_end_on_the_cpu(tmp_path):
    argv = ["--model", "tiny", "--size", "64x64", "--device", "cpu", "--buckets", "4", "--choose", "2"]
    result = probe.main([*argv, "--repeats", "1", "--out", str(tmp_path)])
    assert [r["tokens"] for r in result["rows"]] == [4, 8, 12, 16]  # 64x64: 16 tokens a frame
    assert result["chosen"]["sizes"][-1] == 16 and len(result["chosen"]["sizes"]) == 2
    assert result["shipped"]["sizes"] == [4, 8, 12, 16]  # the shipped 16 sizes that lie on this grid
    saved = json.loads((tmp_path / "staircase.json").read_text())
    assert saved["rows"] == result["rows"] and (tmp_path / "staircase.png").stat().st_size > 0
