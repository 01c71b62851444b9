import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.dataset import (
    COLORS,
    HELDOUT_SEEDS_START,
    Background,
    ClipParams,
    ObjectParams,
    Scene,
    caption,
    main,
    object_masks,
    recolor,
    render,
    sample_clip,
)

PALETTE = torch.tensor(list(COLORS.values()), dtype=torch.float32)  # (K, 3)


def first_seed(predicate, frames: int = 6, start: int = 0) -> ClipParams:
    for seed in range(start, start + 500):
        p = sample_clip(seed, frames)
        if predicate(p):
            return p
    raise AssertionError("no seed in range satisfies the predicate")


def test_render_shape_dtype_and_range():
    clips = [sample_clip(s, 3) for s in range(4)]
    video = render(clips, 32)
    assert video.shape == (4, 3, 32, 32, 3)
    assert video.dtype == torch.uint8
    assert video.float().std() > 10  # not blank


def test_deterministic_by_seed():
    assert sample_clip(7, 8) == sample_clip(7, 8)
    assert caption(sample_clip(7, 8)) == caption(sample_clip(7, 8))
    a = render([sample_clip(7, 4), sample_clip(8, 4)], 32)
    b = render([sample_clip(7, 4), sample_clip(8, 4)], 32)
    assert torch.equal(a, b)


def test_batching_does_not_change_a_clip():
    alone = render([sample_clip(3, 4)], 32)[0]
    batched = render([sample_clip(s, 4) for s in range(6)], 32)[3]
    assert torch.equal(alone, batched)


def test_different_seeds_differ():
    clips = [sample_clip(s, 4) for s in range(10)]
    assert len({c for c in clips}) == 10
    assert len({caption(c) for c in clips}) == 10
    video = render(clips, 32).float()
    for i in range(1, 10):
        assert (video[0] - video[i]).abs().mean() > 1.0


def test_caption_seed_varies_wording_not_content():
    p = sample_clip(11, 8)
    texts = {caption(p, seed) for seed in range(20)}
    assert len(texts) > 1
    assert all(p.main.color in t for t in texts)


def test_same_params_render_at_any_size():
    clips = [sample_clip(s, 2) for s in range(6)]
    small = render(clips, 32).float()
    large = render(clips, 64).float()
    down = F.avg_pool2d(large.flatten(0, 1).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    assert (down - small.flatten(0, 1)).abs().mean() < 8


@pytest.mark.parametrize("seed_block", range(4))
def test_caption_colour_dominates_main_object(seed_block):
    """The first-named object colour is the colour drawn where the main object is."""
    seeds = range(seed_block * 12, seed_block * 12 + 12)
    clips = [sample_clip(s, 3) for s in seeds]
    video = render(clips, 48).float()  # (B, T, H, W, 3)
    checked = 0
    for p, clip in zip(clips, video, strict=True):
        text = caption(p)
        scene_colors = [o.color for o in p.scenes[0].objects]
        mentioned = sorted(scene_colors, key=lambda c: text.find(c))
        assert text.find(p.main.color) >= 0 and mentioned[0] == p.main.color, text
        assert p.main.shape in text or (p.main.shape == "cross" and "crosses" in text), text
        mask = object_masks(p, 48)  # (T, H, W)
        for t in range(p.frames):
            if mask[t].sum() < 10:  # off-screen (entering) or after a cut
                continue
            median = clip[t][mask[t]].median(dim=0).values  # (3,)
            nearest = list(COLORS)[int((PALETTE - median).norm(dim=1).argmin())]
            assert nearest == p.main.color, (text, t)
            checked += 1
    assert checked >= 12


def test_static_camera_background_is_static():
    clips = [
        first_seed(lambda p, kind=kind: p.static_camera and p.scenes[0].background.kind == kind)
        for kind in ("photo", "noise")
    ]
    video = render(clips, 48)
    for p, clip in zip(clips, video, strict=True):
        objects = object_masks(p, 48, all_objects=True)  # (T, H, W)
        # anti-aliased edges reach one pixel past the >0.5 coverage mask
        touched = F.max_pool2d(objects.any(0)[None, None].float(), 3, stride=1, padding=1)[0, 0].bool()
        changes = (clip != clip[:1]).any(-1)  # (T, H, W)
        assert not (changes & ~touched).any()
        assert changes.any()  # the objects do move


def test_camera_pan_moves_the_background():
    p = first_seed(lambda p: p.camera is not None and p.scenes[0].background.kind != "flat")
    clip = render([p], 48)[0].float()
    moved = (clip[-1] - clip[0]).abs().amax(-1) > 8  # (H, W)
    assert moved.float().mean() > 0.2


def test_scene_cut_changes_globally_at_the_cut():
    p = first_seed(lambda p: p.cut is not None, frames=8)
    clip = render([p], 48)[0].float()
    step_change = [((clip[t] - clip[t - 1]).abs().amax(-1) > 8).float().mean().item() for t in range(1, 8)]
    assert step_change[p.cut - 1] > 0.5
    assert max(c for t, c in enumerate(step_change, 1) if t != p.cut) < 0.3


def test_cut_and_pan_are_captioned():
    cut = first_seed(lambda p: p.cut is not None, frames=8)
    assert "cut" in caption(cut) or "then" in caption(cut)
    pan = first_seed(lambda p: p.camera is not None)
    assert "camera" in caption(pan)


def test_most_clips_have_a_static_camera_and_objects_vary():
    clips = [sample_clip(s, 16) for s in range(300)]
    static = np.mean([p.static_camera for p in clips])
    assert 0.5 < static < 0.8
    assert {len(p.scenes[0].objects) for p in clips} == {1, 2, 3}
    assert any(p.main.entering_from for p in clips)
    assert {p.scenes[0].background.kind for p in clips} == {
        "flat",
        "gradient",
        "stripes",
        "checkerboard",
        "noise",
        "photo",
    }


def test_pattern_colours_differ_from_object_colours():
    for s in range(200):
        scene = sample_clip(s, 4).scenes[0]
        if scene.background.kind != "photo":
            assert not set(scene.background.colors) & {o.color for o in scene.objects}


def test_recolor_changes_only_object_colours():
    for s in range(300):
        p = sample_clip(s, 8)
        q = recolor(p, s)
        assert recolor(p, s) == q  # seeded
        for a, b in zip(p.scenes, q.scenes, strict=True):
            assert a.background == b.background
            for o, r in zip(a.objects, b.objects, strict=True):
                assert dataclasses.replace(r, color=o.color) == o and r.color != o.color
            colors = [o.color for o in b.objects]
            assert len(set(colors)) == len(colors) and not set(colors) & set(b.background.colors)
    # same layout: the recoloured clip differs only where objects are
    p = first_seed(lambda p: p.static_camera and len(p.scenes[0].objects) == 1, frames=4)
    a, b = render([p, recolor(p, 0)], 64)
    inside = object_masks(p, 64, all_objects=True)
    near = F.max_pool2d(inside[:, None].float(), 3, 1, 1)[:, 0].bool()  # + the anti-aliased edge
    assert torch.equal(a[~near], b[~near]) and not torch.equal(a[inside], b[inside])


def test_captions_name_the_rendered_motion():
    """Measured on the rendered clips: an object captioned "moving <direction>" moves that way in
    (nearly) every clip, a still one does not move (train.evaluate.dataset_motion)."""
    from train.evaluate import dataset_motion

    result = dataset_motion(range(300), frames=16, size=48)
    directions = [k for k in result if k not in ("still", "bounce")]
    assert len(directions) == 8
    clips = sum(result[k]["clips"] for k in directions)
    moving = sum(result[k]["agree"] * result[k]["clips"] for k in directions) / clips
    assert moving >= 0.97, result
    assert result["still"]["agree"] >= 0.95, result
    assert min(result[k]["per_frame"] for k in directions) > 0.012, result  # ~0.19 of the width in 16 frames


def test_bouncing_objects_name_no_direction():
    ball = ObjectParams("ball", "red", "medium", "right", "fast", (0.8, 0.5), True)  # hits the right edge
    p = ClipParams(seed=0, frames=16, scenes=(Scene(Background("flat", ("blue", "white")), (ball,)),))
    assert ball.reverses(16) and not ball.reverses(2)
    assert "bouncing around" in caption(p) or "bouncing off the edges" in caption(p)
    short = dataclasses.replace(p, frames=2)
    assert "right" in caption(short)


def test_heldout_seeds_are_valid_clips():
    assert sample_clip(HELDOUT_SEEDS_START + 5, 4).frames == 4


def test_object_masks_follow_motion():
    p = first_seed(lambda p: p.static_camera and p.main.speed == "fast" and p.main.entering_from is None, frames=8)
    mask = object_masks(p, 64)
    assert mask.shape == (8, 64, 64) and mask.dtype == torch.bool
    assert mask[0].any() and mask[-1].any()
    assert not torch.equal(mask[0], mask[-1])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="frames must be >= 1"):
        sample_clip(0, 0)
    with pytest.raises(ValueError, match="at least one clip"):
        render([], 32)
    with pytest.raises(ValueError, match="same number of frames"):
        render([sample_clip(0, 2), sample_clip(1, 3)], 32)
    with pytest.raises(ValueError, match="size must be >= 8"):
        render([sample_clip(0, 2)], 4)
    obj = sample_clip(0, 2).main
    with pytest.raises(ValueError, match="unknown colour 'mauve'"):
        dataclasses.replace(obj, color="mauve")
    with pytest.raises(ValueError, match="unknown shape"):
        dataclasses.replace(obj, shape="blob")
    with pytest.raises(ValueError, match="unknown photo"):
        Background(kind="photo", photo="nope")
    with pytest.raises(ValueError, match="at most 3 objects"):
        Scene(Background("flat"), (obj,) * 4)
    scene = Scene(Background("flat"), (obj,))
    with pytest.raises(ValueError, match="needs a cut frame"):
        ClipParams(seed=0, frames=4, scenes=(scene, scene))
    with pytest.raises(ValueError, match="must lie inside the clip"):
        ClipParams(seed=0, frames=4, scenes=(scene, scene), cut=4)


def test_handmade_clip_renders_what_it_says():
    ball = ObjectParams("ball", "red", "large", "right", "still", (0.5, 0.5), True)
    p = ClipParams(seed=0, frames=2, scenes=(Scene(Background("flat", colors=("blue", "white")), (ball,)),))
    frame = render([p], 32)[0, 0]
    assert tuple(frame[16, 16].tolist()) == COLORS["red"]
    assert tuple(frame[1, 1].tolist()) == COLORS["blue"]
    assert caption(p).startswith(("a big red ball", "a large red ball", "a plain blue", "a flat blue", "a solid blue"))


def test_cli_writes_an_mp4(tmp_path, capsys):
    av = pytest.importorskip("av")
    out = tmp_path / "clip.mp4"
    main(["--seed", "3", "--out", str(out), "--size", "32", "--frames", "5"])
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 5 and frames[0].width == 32
    assert capsys.readouterr().out.strip() == caption(sample_clip(3, 5))


def test_cli_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "clip.gif")])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "clip.mp4"), "--size", "33"])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "clip.mp4"), "--frames", "0"])
