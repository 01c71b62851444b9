"""benchmarks/t2v_schedule_sweep.py: its prompts are new and well-formed, the shipped schedule comes first."""

import importlib.util
from pathlib import Path

from engine.config import get_config
from train.dataset import COLORS, DIRECTIONS, SHAPES
from train.evaluate import MOTION_PROMPTS

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "t2v_schedule_sweep.py"
_spec = importlib.util.spec_from_file_location("t2v_schedule_sweep", _PATH)
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def test_extra_prompts_are_new_and_use_the_dataset_vocabulary():
    assert len(set(sweep.EXTRA_PROMPTS)) == len(sweep.EXTRA_PROMPTS) == 12
    assert not set(sweep.EXTRA_PROMPTS) & set(MOTION_PROMPTS)
    for color, shape, direction, background in sweep.EXTRA_PROMPTS:
        assert color in COLORS and background in COLORS and shape in SHAPES and direction in DIRECTIONS


def test_the_shipped_schedule_is_the_first_and_the_others_differ():
    cfg = get_config("tiny")
    runs = list(sweep.variants(cfg.t2v_schedule, cfg.sampler).values())
    assert runs[0] == (cfg.t2v_schedule, cfg.sampler) and all(r != runs[0] for r in runs[1:])
    assert {sampler for _, sampler in runs} == {"euler", "renoise"}
