"""benchmarks/lipar_drift_oracle.py: the one-off noise change touches exactly one draw."""

import importlib.util
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "lipar_drift_oracle.py"
_spec = importlib.util.spec_from_file_location("lipar_drift_oracle", _PATH)
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)


def test_perturb_once_changes_only_the_chosen_draw_by_about_eps():
    draws = iter(torch.zeros(5, 1, 64, 8))
    source = oracle.perturb_once(lambda shape: next(draws), call=2, eps=0.01)
    out = [source((1, 64, 8)) for _ in range(5)]
    assert [bool(o.abs().sum() > 0) for o in out] == [False, False, True, False, False]
    assert 0.005 < float(out[2].std()) < 0.015
