"""The shipped `tiny` weights: they load, give finite frames of the right shape, and follow colour prompts."""

import numpy as np
import pytest

from engine.checkpoint import WEIGHTS_DIR
from engine.generator import StreamingGenerator
from train.evaluate import prompt_following_t2v, prompt_following_v2v

SHIPPED = (WEIGHTS_DIR / "tiny" / "dit.safetensors").is_file()
pytestmark = pytest.mark.skipif(not SHIPPED, reason="engine/weights/tiny/dit.safetensors is not in this checkout")

COLORS = ["red", "green", "blue", "yellow"]
FOLLOW_TARGET = 0.8  # the target; the measured rates are in benchmarks/results/tiny_quality.json


@pytest.fixture(scope="module")
def gen():
    return StreamingGenerator.from_pretrained("tiny", device="cpu")  # the default path: shipped weights


def test_weights_load_and_generate_finite_frames(gen):
    gen.reset()
    gen.set_prompt("a red ball moving right over a plain black background")
    frames = [gen.step(None).frames[0] for _ in range(4)]
    assert all(f.shape == (128, 128, 3) and f.dtype == np.uint8 for f in frames)
    assert np.std(frames[-1]) > 2  # not a blank image


def test_text_to_video_follows_colour_prompts(gen):
    result = prompt_following_t2v(gen, COLORS, frames=8)
    assert result["rate"] >= FOLLOW_TARGET, result


def test_video_to_video_follows_colour_prompts(gen):
    result = prompt_following_v2v(gen, [("red", "blue"), ("blue", "yellow"), ("yellow", "red")], frames=8)
    assert result["rate"] >= FOLLOW_TARGET, result
