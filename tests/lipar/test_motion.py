import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from engine.backends import EagerRunner
from engine.config import KVWindow
from engine.dit import CausalDiT, init_weights
from engine.generator import StreamingGenerator
from engine.kv_cache import RollingKVCache
from lipar.config import LiparConfig
from lipar.motion import GlobalMotion, MotionEstimator, entering, warp_grid, warp_tokens
from lipar.recovery import recover_kv
from tests.engine.conftest import small_config

SIZE = 128


def texture(size: int = 2 * SIZE, seed: int = 0) -> np.ndarray:
    """A photograph-like grey texture (blurred noise at several scales), uint8 (size, size, 3)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.float32)
    for sigma in (1.0, 3.0, 9.0):
        img += cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma) * sigma
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.repeat(img.astype(np.uint8)[..., None], 3, axis=2)


def view(img: np.ndarray, dx: float = 0.0, dy: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """The centre SIZE x SIZE of `img` with its content moved by (dx, dy) pixels and zoomed by `scale`
    about the centre (cubic resampling of the larger image, so no border enters the view)."""
    c = img.shape[0] / 2 - 0.5
    m = np.array([[scale, 0, (1 - scale) * c + dx], [0, scale, (1 - scale) * c + dy]], np.float32)
    moved = cv2.warpAffine(img, m, img.shape[:2][::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    o = (img.shape[0] - SIZE) // 2
    return torch.from_numpy(np.ascontiguousarray(moved[o : o + SIZE, o : o + SIZE]))


def estimate(first: torch.Tensor, second: torch.Tensor, model: str = "translation") -> GlobalMotion:
    est = MotionEstimator(model)
    assert est.update(first).confidence == 0.0  # no predecessor yet
    return est.update(second)


def test_translation_and_zoom_constructors_round_trip_through_theta():
    m = GlobalMotion.translation(0.1, -0.05, confidence=0.5)
    assert m.shift == pytest.approx((0.1, -0.05)) and m.scale == pytest.approx(1.0)
    z = GlobalMotion.zoom(1.25, 0.02, 0.03)
    assert z.scale == pytest.approx(1.25) and z.shift == pytest.approx((0.02, 0.03))
    assert GlobalMotion().displacement((16, 16)) == 0.0
    assert GlobalMotion.translation(1 / 8, 0).displacement((8, 8)) == pytest.approx(1.0)  # one token of 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"theta": ((1.0, 0.0), (0.0, 1.0))}, "2x3"),
        ({"theta": ((1.0, 0.0, math.nan), (0.0, 1.0, 0.0))}, "finite"),
        ({"confidence": 1.5}, "confidence"),
    ],
)
def test_bad_motions_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GlobalMotion(**kwargs)


def test_estimator_refuses_bad_settings_and_frames():
    with pytest.raises(ValueError, match="motion model"):
        MotionEstimator("homography")
    with pytest.raises(ValueError, match="max_side"):
        MotionEstimator(max_side=8)
    with pytest.raises(ValueError, match="uint8"):
        MotionEstimator().update(torch.zeros(64, 64, 3))


@pytest.mark.parametrize("dx, dy", [(3.0, 0.0), (0.0, -2.0), (1.25, 0.5), (-0.4, 0.7), (-6.5, -4.0)])
def test_estimator_finds_synthetic_shifts_of_known_size(dx, dy):
    img = texture()
    m = estimate(view(img), view(img, dx, dy))
    assert (m.shift[0] * SIZE, m.shift[1] * SIZE) == pytest.approx((dx, dy), abs=0.1)
    assert m.scale == 1.0 and m.confidence > 0.3


def test_a_still_camera_gives_exactly_zero_motion_even_with_an_object_moving():
    img = texture()
    first, second = view(img), view(img).clone()
    second[10:40, 10:40] = view(img, 5.0, 3.0)[10:40, 10:40]  # an object moves in one corner
    m = estimate(first, second)
    assert m.displacement((SIZE, SIZE)) < 1e-6 and m.confidence > 0.5
    assert estimate(first, first.clone()).theta == GlobalMotion().theta


@pytest.mark.parametrize("scale", [1.02, 0.98])
def test_similarity_model_finds_a_zoom(scale):
    img = texture()
    m = estimate(view(img), view(img, scale=scale), "similarity")
    assert m.scale == pytest.approx(scale, abs=0.003)
    assert (m.shift[0] * SIZE, m.shift[1] * SIZE) == pytest.approx((0.0, 0.0), abs=0.1)


def test_warp_grid_moves_content_by_whole_cells_exactly():
    x = torch.randn(2, 5, 8, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(warp_grid(x, GlobalMotion()), x)
    moved = warp_grid(x, GlobalMotion.translation(2 / 10, -1 / 8))  # right 2 cells, up 1
    assert torch.allclose(moved[:, :, :7, 2:], x[:, :, 1:, :8], atol=1e-6)
    assert torch.allclose(moved[:, :, :7, :2], x[:, :, 1:, :1].expand(-1, -1, -1, 2), atol=1e-6)  # border


def test_entering_marks_the_tokens_whose_content_was_outside_the_previous_frame():
    grid = (6, 8)
    assert not entering(grid, GlobalMotion()).any()
    right = entering(grid, GlobalMotion.translation(0.3 / 8, 0))  # content moves right by 0.3 token
    assert right[:, 0].all() and not right[:, 1:].any()
    up_left = entering(grid, GlobalMotion.translation(-1.5 / 8, -0.5 / 6))
    assert up_left[:, -2:].all() and up_left[-1].all() and not up_left[:-1, :-2].any()
    zoom_out = entering(grid, GlobalMotion.zoom(0.9))  # zooming out brings in a ring at the border
    assert zoom_out[0].all() and zoom_out[:, 0].all() and not zoom_out[1:-1, 1:-1].any()
    assert not entering(grid, GlobalMotion.zoom(1.2)).any()  # zooming in brings in nothing


def test_shifted_kv_rotated_at_the_new_positions_equals_the_recomputed_kv():
    """A frame moved by whole tokens: the previous frame's pre-RoPE K and V warped by the motion and
    recovered (K rotated at the new positions) must equal the K/V the model computes for the moved frame.
    One layer, so K/V depend on the token alone (deeper layers mix in attention over other positions)."""
    torch.manual_seed(0)
    cfg = small_config(layers=1, window=KVWindow(sinks=1, m=2))
    dit = CausalDiT(cfg).double().eval()
    init_weights(dit, seed=1)
    dit.double()
    gh, gw = 4, 6
    n = gh * gw
    text_kv = dit.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim, dtype=torch.float64))
    frame = torch.randn(1, cfg.latent_channels, 2 * gh, 2 * gw, dtype=torch.float64)
    moved = torch.roll(frame, shifts=(2, -2), dims=(2, 3))  # content down 1 token, left 1 token

    def cache_pass(latent: torch.Tensor, t: int) -> RollingKVCache:
        cache = RollingKVCache(1, 1, n, cfg.heads, cfg.head_dim, cfg.window, "cpu", torch.float64)
        for _ in range(t):  # earlier frames: zeros are fine, layer-0 K/V do not depend on them
            cache.append()
            cache.commit()
        cache.append()
        tokens = latent.reshape(1, -1, gh, 2, gw, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, n, -1)
        idx = torch.arange(n)
        pos = torch.stack([torch.full_like(idx, t), idx // gw, idx % gw], 1)
        with torch.no_grad():
            write_idx = cache.token_index(cache.current_slot, idx)
            EagerRunner(dit, cache)(tokens, pos, torch.zeros(1, 1), text_kv, write_idx, True)
        return cache

    before, after = cache_pass(frame, 0), cache_pass(moved, 1)
    _, src_v, src_k_pre = before.frame(before.current_slot)
    want_k, want_v, want_k_pre = after.frame(after.current_slot)
    motion = GlobalMotion.translation(-1 / gw, 1 / gh)
    k_pre, v = warp_tokens(src_k_pre, (gh, gw), motion), warp_tokens(src_v, (gh, gw), motion)
    dst = [torch.zeros_like(want_k) for _ in range(3)]
    inside = (~entering((gh, gw), motion)).flatten().nonzero()[:, 0]
    pos = torch.stack([torch.ones_like(inside), inside // gw, inside % gw], 1)
    cos, sin = dit.rope.cos_sin(pos)
    recover_kv(k_pre, v, dst[0], dst[1], dst[2], inside, cos, sin)
    assert inside.numel() == (gh - 1) * (gw - 1)
    for got, want in zip(dst, (want_k, want_v, want_k_pre)):
        assert torch.allclose(got[:, inside], want[:, inside], atol=1e-10)


def test_token_warp_matches_grid_sample_for_sub_token_motions():
    tokens = torch.randn(3, 6 * 8, 2, 5, generator=torch.Generator().manual_seed(1))
    for motion in (GlobalMotion.translation(0.37 / 8, -0.8 / 6), GlobalMotion.zoom(1.1, 0.02, -0.01)):
        reference = warp_grid(tokens.flatten(2).transpose(1, 2).reshape(3, 10, 6, 8), motion)
        reference = reference.reshape(3, 10, 48).transpose(1, 2).reshape(tokens.shape)
        assert torch.allclose(warp_tokens(tokens, (6, 8), motion), reference, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"motion": "homography"}, "motion must be one of"),
        ({"motion_confidence": 1.5}, "motion_confidence"),
        ({"motion_tau_scale": 0}, "motion_tau_scale"),
        ({"motion_output_scale": -1.0}, "motion_output_scale"),
        ({"t2v": 1}, "t2v must be a bool"),
    ],
)
def test_bad_motion_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LiparConfig(**kwargs)


# ---------------------------------------------------------------- through the generator

GEN_SIZE = 128  # 8x8 tokens of 16 pixels


@pytest.fixture(scope="module")
def gen():
    g = StreamingGenerator.from_pretrained("tiny", device="cpu", random_weights=True, size=(GEN_SIZE, GEN_SIZE))
    g.set_prompt("a red ball over a brick wall")
    return g


def loose(**changes) -> LiparConfig:
    """Thresholds so loose that only the rules under test keep tokens (random weights, any latent scale)."""
    base = dict(
        tau_short=1e3, tau_long=1e3, warmup_frames=1, max_age=0, tau_output=float("inf"), scene_cut=1.0, dilation=0
    )
    return LiparConfig(**{**base, **changes})


def run(g, lipar, frames):
    g.set_lipar(lipar)
    g.reset()
    outs = []
    for f in frames:
        outs.append(g.step(f))
        outs[-1].clean = g.previous_clean.clone()
    return outs


def panning(frames: int, px_per_frame: float) -> list[np.ndarray]:
    """A camera panning right over a still texture: the content moves left on screen."""
    img = texture(4 * GEN_SIZE, seed=3)
    return [view(img, -px_per_frame * i)[..., [0, 0, 0]].numpy().copy() for i in range(frames)]


def test_a_still_camera_stream_is_exactly_plain_lipar(gen):
    img = texture(2 * GEN_SIZE, seed=4)
    frames = []
    for i in range(5):  # a still camera, an object moving over one corner
        f = view(img).numpy().copy()
        f[8:40, 8 + 6 * i : 40 + 6 * i] = (200, 40, 40)
        frames.append(f)
    cfg = LiparConfig(warmup_frames=1, tau_output=float("inf"))
    plain = run(gen, cfg, frames)
    moving = run(gen, replace(cfg, motion="translation"), frames)
    for a, b in zip(plain, moving):
        assert b.stats["motion"] is None or not b.stats["motion"]["used"]
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.frames[0], b.frames[0])


def test_under_a_pan_the_entering_border_is_kept_and_pruned_tokens_follow_the_content(gen):
    frames = panning(4, 16.0)  # one token per frame, content moving left
    outs = run(gen, loose(motion="translation", motion_confidence=0.0), frames)
    for prev, out in zip(outs[1:], outs[2:]):
        motion = out.stats["motion"]
        assert motion["used"] and motion["dx"] == pytest.approx(-1 / 8, abs=0.01)
        assert out.mask[:, -1].all()  # the column entering on the right is computed
        assert not out.mask[:, :-1].any()  # everything else only moved
        # restored tokens are the previous clean tokens one token to the right (up to the estimate's
        # few hundredths of a pixel), not those at the same place
        now, before = out.clean.view(8, 8, -1)[:, :-1], prev.clean.view(8, 8, -1)
        moved_error = (now - before[:, 1:]).abs().max()
        assert moved_error < 0.05 * (now - before[:, :-1]).abs().max()


def test_text_to_video_pruning_restores_settled_tokens_from_the_previous_output(gen):
    plain = run(gen, loose(), [None] * 4)
    assert all(o.stats["kept_ratio"] == 1.0 and o.stats["mask_reason"] == "disabled" for o in plain)
    outs = run(gen, loose(t2v=True, tau_output=1e9), [None] * 4)
    assert [o.stats["mask_reason"] for o in outs] == ["first", "pruned", "pruned", "pruned"]
    # frame 1 has no measured output change yet (frame 0 had no predecessor): all computed
    assert [o.stats["kept_ratio"] for o in outs] == [1.0, 1.0, 0.0, 0.0]
    assert torch.equal(outs[2].clean, outs[1].clean)  # nothing computed: the previous output, as it was
    aged = run(gen, loose(t2v=True, tau_output=1e9, max_age=2), [None] * 4)
    assert 0.0 < aged[2].stats["kept_ratio"] < 1.0  # bounded age: half the tokens refreshed each frame
    strict = run(gen, loose(t2v=True, tau_output=1e-9), [None] * 4)
    assert all(o.stats["kept_ratio"] == 1.0 for o in strict)  # no output settles that tightly
