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


def test_the_oracle_generator_streams_through_the_generators_step():
    """It overrides StreamingGenerator.denoise, so it must follow that method's signature (session 21 found it
    failing once the step began handing denoise its decode)."""
    import numpy as np

    from lipar.config import LiparConfig

    gen = oracle.OracleContext.from_pretrained("tiny", device="cpu", random_weights=True, size=(64, 64))
    gen.set_prompt(oracle.PROMPT)
    gen.set_lipar(LiparConfig(warmup_frames=1, tau_output=float("inf"), max_age=0))  # random weights: source rule only
    frame = np.full((64, 64, 3), 90, np.uint8)
    outs = [gen.step(frame) for _ in range(4)]
    assert all(o.frames[0].shape == (64, 64, 3) for o in outs)
    assert outs[-1].stats["kept_ratio"] < 1.0  # a still source: pruned, so the oracle's own path ran
