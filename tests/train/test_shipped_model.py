"""The shipped `tiny` weights: they load by default, give finite frames of the right shape, the
prompt changes what is generated, text-to-video follows colour prompts, and video-to-video restyles
a source's object in more frames than a floor (90 % measured, benchmarks/results/tiny_quality.json;
the session-9 weights 54 %): a guard against losing restyling, not a claim of the target."""

import numpy as np
import pytest

from engine.checkpoint import WEIGHTS_DIR
from engine.generator import StreamingGenerator
from train.evaluate import (
    EVAL_COLORS,
    EVAL_PAIRS,
    fidelity,
    motion_following,
    prompt_following_t2v,
    prompt_following_v2v,
)

SHIPPED = (WEIGHTS_DIR / "tiny" / "dit.safetensors").is_file()
pytestmark = pytest.mark.skipif(not SHIPPED, reason="engine/weights/tiny/dit.safetensors is not in this checkout")


@pytest.fixture(scope="module")
def gen():
    return StreamingGenerator.from_pretrained("tiny", device="cpu")  # the default path: shipped weights


def frames_for(gen, prompt, count=6):
    gen.reset()
    gen.set_prompt(prompt)
    return np.stack([gen.step(None).frames[0] for _ in range(count)]).astype(np.float32)


def test_weights_load_and_generate_finite_frames(gen):
    frames = frames_for(gen, "a red ball moving right over a plain black background", 3)
    assert frames.shape == (3, 128, 128, 3)
    assert frames.std() > 2  # not a blank image


def test_the_background_follows_the_prompt(gen):
    """A grass prompt is greener than a plain-black one, and a light background brighter."""
    black = frames_for(gen, "a red ball moving right over a plain black background")
    grass = frames_for(gen, "a white triangle moving left over grass")
    light = frames_for(gen, "a yellow square drifting up over a plain white background")
    green = lambda f: f[..., 1].mean() - (f[..., 0].mean() + f[..., 2].mean()) / 2  # noqa: E731
    assert green(grass) > green(black) + 10
    assert light.mean() > black.mean() + 60


def test_text_to_video_follows_colour_prompts(gen):
    """The named colour dominates the object region in >= 80% of frames (8 colours x 16 frames)."""
    result = prompt_following_t2v(gen, EVAL_COLORS, 16)
    assert result["rate"] >= 0.8, result["per_color"]


def test_video_to_video_restyles_the_source_object(gen):
    """The prompted colour, not the source's, dominates the moving source object in >= 40% of frames
    (5 colour pairs x 16 frames; the weights before restyling training scored 0%)."""
    result = prompt_following_v2v(gen, EVAL_PAIRS, 16)
    assert result["rate"] >= 0.4, result["per_pair"]


def test_text_to_video_objects_move_the_named_way(gen):
    """On average over 8 prompts the object moves the named way (0.12 of the width in 16 frames
    measured; the session-9 weights drew objects standing still, 0.00 / -0.07 / -0.02). A floor on these
    weights at seed 0 only: their direction contrast is +0.04 (tiny_quality.md), the motion follows
    the seed rather than the direction word."""
    moved = [m or 0.0 for m in motion_following(gen, 16)["per_prompt"].values()]
    assert np.mean(moved) > 0.05, moved


def test_video_to_video_keeps_a_source_its_prompt_describes(gen):
    """With the source's own caption the output stays near the source (21.7 dB measured over 4 clips;
    the session-9 weights 16.8-19.1 dB): a floor, not the 24 dB target."""
    result = fidelity(gen, 16)
    assert result["psnr_db"] > 20.0, result["per_clip"]
