"""The measures themselves, on frames whose answer is known (a fake generator that draws it)."""

import json

import numpy as np
import pytest

from lipar.config import LiparConfig
from train.dataset import COLORS, DIRECTIONS, Background, ClipParams, ObjectParams, Scene, caption, render
from train.evaluate import (
    caption_motion,
    color_centroid,
    color_names,
    displacement,
    dominant_color,
    fidelity,
    motion_following,
    object_region,
    sequence_psnr,
    v2v_source,
)


class FakeGenerator:
    """Draws what a perfect model would: the prompted ball moving the prompted way (text-to-video),
    or the source frame itself (video-to-video); `speed` in frame fractions per frame."""

    height = 64

    def __init__(self, speed: float, always: str | None = None) -> None:
        self.speed, self.always = speed, always  # always: move this way whatever the prompt says

    def reset(self) -> None:
        self.t = 0

    def set_prompt(self, text: str) -> None:
        words = text.split()  # "a red ball moving right over a plain black background"
        is_motion = len(words) == 10 and words[3] == "moving"
        self.prompt = (words[1], words[2], self.always or words[4], words[8]) if is_motion else None

    def step(self, source):
        self.t += 1
        if source is not None:
            return type("Out", (), {"frames": [source]})
        color, shape, direction, background = self.prompt
        obj = ObjectParams(shape, color, "medium", direction, "still", (0.5, 0.5), True)
        params = ClipParams(seed=0, frames=1, scenes=(Scene(Background("flat", (background, "red")), (obj,)),))
        frame = render([params], self.height)[0, 0].numpy()
        dx, dy = (round(v * self.speed * self.t * self.height) for v in DIRECTIONS[direction])
        return type("Out", (), {"frames": [np.roll(frame, (dy, dx), axis=(0, 1))]})


def test_each_named_colour_maps_to_itself():
    pixels = np.array(list(COLORS.values()), np.uint8)
    assert [list(COLORS)[i] for i in color_names(pixels)] == list(COLORS)


def test_rendered_ball_is_found_and_named():
    for color in ("red", "blue", "yellow"):
        video, masks = v2v_source(color, 3, 64)
        frame = video[1]
        assert dominant_color(frame, masks[1]) == color
        region = object_region(frame, "black")
        overlap = (region & masks[1]).sum() / masks[1].sum()
        assert overlap > 0.9 and region.sum() < 1.3 * masks[1].sum()


def test_too_small_a_region_has_no_colour():
    frame = np.zeros((16, 16, 3), np.uint8)
    region = np.zeros((16, 16), bool)
    region[0, :3] = True
    assert dominant_color(frame, region) is None


def test_centroid_and_displacement_follow_the_ball():
    video, _ = v2v_source("red", 10, 64)  # a ball moving right at "medium" speed
    first, last = color_centroid(video[0], "red", "black"), color_centroid(video[-1], "red", "black")
    assert displacement(first, last, "right") > 0.1 and abs(displacement(first, last, "down")) < 0.01
    assert displacement(first, last, "left") == pytest.approx(-displacement(first, last, "right"))
    assert color_centroid(video[0], "blue", "black") is None and displacement(None, last, "right") is None


def test_motion_following_counts_prompts_that_move_far_enough():
    fast, slow = motion_following(FakeGenerator(0.02), 16), motion_following(FakeGenerator(0.005), 16)
    assert fast["rate"] == 1.0 and slow["rate"] == 0.0
    assert all(0.25 < m < 0.35 for m in fast["per_prompt"].values())  # 0.02 x 15 frames
    assert fast["background_flicker"] < 1.0  # only anti-aliased edge pixels change


def test_direction_contrast_tells_words_from_the_seed():
    follows = motion_following(FakeGenerator(0.02), 16)
    ignores = motion_following(FakeGenerator(0.02, always="right"), 16)
    # following the words: +0.3 the named way, -0.3 with the opposite word
    assert 0.5 < follows["direction_contrast"] < 0.7
    assert all(-0.35 < m < -0.25 for m in follows["opposite_word"].values())
    # ignoring them: some prompts still "move the named way", but the opposite word changes nothing
    assert ignores["rate"] == 0.25 and ignores["direction_contrast"] == pytest.approx(0.0, abs=1e-9)


def test_sequence_psnr_is_from_total_mse():
    ref = [np.zeros((4, 4, 3), np.uint8)] * 2
    out = [np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 10, np.uint8)]
    # per-frame PSNRs would average infinity with 28.1 dB; the total MSE is 50
    assert sequence_psnr(out, ref) == pytest.approx(10 * np.log10(255**2 / 50))


def test_fidelity_of_a_copy_is_perfect():
    result = fidelity(FakeGenerator(0.0), 4)
    assert result["psnr_db"] > 100 and result["still_flicker"] == 0.0
    assert len(result["per_clip"]) == 4


def test_caption_motion_reads_the_words():
    ball = ObjectParams("ball", "black", "medium", "up-left", "medium", (0.5, 0.5), False)
    photo = Background("photo", photo="camera")  # "a black and white photo ...": black is not the ball
    for seed in range(10):
        p = ClipParams(seed=seed, frames=4, scenes=(Scene(photo, (ball,)),))
        assert caption_motion(caption(p), p) == "up-left", caption(p)
    entering = ObjectParams("square", "red", "small", "down", "fast", (0.5, -0.1), False)
    p = ClipParams(seed=0, frames=4, scenes=(Scene(Background("flat", ("blue", "white")), (entering,)),))
    assert caption_motion("a small red square entering from the top over a plain blue background", p) == "down"
    with pytest.raises(ValueError, match="no motion phrase"):
        caption_motion("a red square over a plain blue background", p)


def test_cli_video_to_video_measures_on_the_shipped_model(capsys):
    from train.evaluate import main

    argv = ["--device", "cpu", "--frames", "2", "--v2v-only", "--v2v-timesteps", "500", "250", "--v2v-shift", "1"]
    result = main([*argv, "--v2v-anchor", "off"])
    rates = json.loads(capsys.readouterr().out.splitlines()[0])
    assert rates["v2v_sigmas"] == [0.5, 0.25] and rates["v2v_anchor"] is None
    assert (rates["lipar"], rates["dilation"]) == (True, LiparConfig().dilation)
    assert set(result) == {"fidelity", "v2v_procedural", "v2v_photo"}
    assert 0 <= rates["v2v_procedural"] <= 1 and rates["fidelity"] > 5


def test_cli_rejects_bad_arguments(capsys):
    from train.evaluate import main

    for argv, message in (
        (["--v2v-timesteps", "200", "500"], "must decrease"),
        (["--lipar-dilation", "-1"], "--lipar-dilation must be >= 0"),
        (["--frames", "1"], "--frames must be >= 2"),
        (["--v2v-anchor", "-1"], "v2v_anchor is a latent distance > 0"),
        (["--v2v-anchor", "loose"], "--v2v-anchor takes a tolerance > 0 or 'off'"),
    ):
        with pytest.raises(SystemExit):
            main(["--device", "cpu", *argv])
        assert message in capsys.readouterr().err
