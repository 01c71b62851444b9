"""LIPAR wired through the generator (DESIGN.md §4): equivalence, recovery, restoration, ablations."""

import numpy as np
import pytest
import torch

from engine.dit import patchify
from engine.generator import StreamingGenerator
from engine.rope import apply_rope
from lipar.config import RECOVERY_MODES, LiparConfig

SIZE = 64  # 4x4 tokens


@pytest.fixture(scope="module")
def gen():
    g = StreamingGenerator.from_pretrained("tiny", device="cpu", random_weights=True, size=(SIZE, SIZE), seed=5)
    g.set_prompt("a green square moving right over blue stripes")
    return g


def clip(frames=5):
    """Static background; a square moves in the left half only, so the right half never changes."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    out = []
    for i in range(frames):
        f = background.copy()
        f[4:20, 2 + 2 * i : 18 + 2 * i] = (30, 220, 60)
        out.append(f)
    return out


def run(gen, lipar, frames):
    gen.set_lipar(lipar)
    gen.reset()
    return [gen.step(f) for f in frames]


def test_tau_zero_prunes_nothing_and_equals_unpruned(gen):
    frames = clip()
    base = run(gen, LiparConfig(enabled=False), frames)
    zero = run(gen, LiparConfig(tau_short=0.0, tau_long=0.0), frames)
    for a, b in zip(base, zero):
        assert b.stats["kept_ratio"] == 1.0
        np.testing.assert_array_equal(a.frames[0], b.frames[0])  # exact: the same computation


_TAU = {}


def tiny_tau(recovery="noise-aware"):
    """Thresholds at the median token change between the first two frames of `clip()` under this random
    VAE, so about half the tokens are pruned whatever the latent scale; no scene cuts, no margins."""
    if not _TAU:
        from lipar.mask import token_distance

        g = StreamingGenerator.from_pretrained("tiny", device="cpu", random_weights=True, size=(SIZE, SIZE), seed=5)
        with torch.inference_mode():
            z = [g.encode_source(f)[0] for f in clip(2)]
        _TAU["tau"] = float(token_distance(z[1], z[0], 0.2).median())
    tau = _TAU["tau"]
    return LiparConfig(
        tau_short=tau,
        tau_long=2 * tau,
        temporal=0.0,
        dilation=0,
        scene_cut=1.0,
        recovery=recovery,
        warmup_frames=1,  # prune from frame 1 on: these tests look at one pruned frame
        max_age=0,
        tau_output=float("inf"),
    )


def test_unchanged_region_is_pruned_and_restored_exactly(gen):
    outs = run(gen, tiny_tau(), clip(3))
    mask = outs[1].mask
    assert 0 < outs[1].stats["kept_ratio"] < 1
    assert mask[:, :2].any()  # where the square moves
    # restoration: pruned tokens of the clean latent are the previous frame's, bit for bit
    prev_clean = gen.previous_clean  # after frame 2
    gen.reset()
    gen.step(clip(3)[0])
    clean0 = gen.previous_clean.clone()
    gen.step(clip(3)[1])
    clean1 = gen.previous_clean
    pruned = torch.from_numpy(~mask.flatten())
    torch.testing.assert_close(clean1[:, pruned], clean0[:, pruned], rtol=0, atol=0)
    assert not torch.equal(clean1[:, ~pruned], clean0[:, ~pruned])
    assert prev_clean.shape == clean1.shape


def test_recovery_equals_recomputed_clean_previous_frame_kv(gen):
    """Pruned K/V in the current slot == the clean previous frame's K/V recomputed from scratch
    (a full forward at sigma 0 of the context the cache committed for it: its clean latent anchored to
    the source, engine/anchor.py), K re-rotated at the current frame's time."""
    frames = clip(2)
    gen.set_lipar(tiny_tau())
    gen.reset()
    gen.step(frames[0])
    first = gen.cache.previous_slot * gen.tokens
    clean0 = gen.cache.clean[:, first : first + gen.tokens].clone()
    out = gen.step(frames[1])
    pruned = torch.from_numpy(~out.mask.flatten()).nonzero().flatten()
    assert pruned.numel() > 0

    recorded = {}

    def record(layer, q, k, v, k_pre):  # frame 0 is the first frame: it attends to itself only
        recorded[layer] = (k_pre, v)
        return torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        ).transpose(1, 2)

    all_idx = torch.arange(gen.tokens)
    with torch.inference_mode():
        gen.dit(clean0, gen.positions(0, all_idx), torch.zeros(1, 1), gen.prompt.kv, record)
        cos, sin = gen.dit.rope.cos_sin(gen.positions(1, pruned))
        slot = gen.cache.slot_of(1)
        n = gen.tokens
        for layer, (k_pre, v) in recorded.items():
            k_cache = gen.cache.k[layer, :, slot * n : (slot + 1) * n]
            v_cache = gen.cache.v[layer, :, slot * n : (slot + 1) * n]
            kp_cache = gen.cache.k_pre[layer, :, slot * n : (slot + 1) * n]
            torch.testing.assert_close(kp_cache[:, pruned], k_pre[:, pruned], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v_cache[:, pruned], v[:, pruned], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(k_cache[:, pruned], apply_rope(k_pre[:, pruned], cos, sin), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", RECOVERY_MODES)
def test_recovery_modes_run_and_differ_only_where_they_should(gen, mode):
    frames = clip(5)
    outs = run(gen, tiny_tau(mode), frames)
    assert all(np.isfinite(o.frames[0]).all() for o in outs)
    assert outs[0].stats["kept_ratio"] == 1.0 and outs[2].stats["kept_ratio"] < 1.0


def test_ablation_modes_change_the_kept_tokens(gen):
    frames = clip(5)
    results = {m: run(gen, tiny_tau(m), frames) for m in RECOVERY_MODES}
    # same masks, different attention context for the kept tokens -> different outputs
    for a, b in [("exclude", "noise-aware"), ("noisy-copy", "noise-aware")]:
        np.testing.assert_array_equal(results[a][3].mask, results[b][3].mask)
        assert not np.array_equal(results[a][3].frames[0], results[b][3].frames[0])


def test_lipar_can_be_switched_between_frames(gen):
    frames = clip(4)
    gen.set_lipar(tiny_tau())
    gen.reset()
    gen.step(frames[0])
    assert gen.step(frames[1]).stats["kept_ratio"] < 1
    gen.set_lipar(LiparConfig(enabled=False))
    assert gen.step(frames[2]).stats["kept_ratio"] == 1.0
    gen.set_lipar(tiny_tau())
    assert gen.step(frames[3]).stats["kept_ratio"] == 1.0  # a new mask starts by keeping everything


def test_text_to_video_never_prunes(gen):
    gen.set_lipar(tiny_tau())
    gen.reset()
    assert all(gen.step(None).stats["kept_ratio"] == 1.0 for _ in range(3))


def test_patchify_of_source_matches_mask_grid(gen):
    latent = torch.randn(1, gen.cfg.latent_channels, gen.latent_h, gen.latent_w)
    assert patchify(latent).shape[1] == gen.grid[0] * gen.grid[1]


def warm(gen, warmup=3):
    """tiny_tau with a warm-up: what each trigger must start again."""
    import dataclasses

    return dataclasses.replace(tiny_tau(), warmup_frames=warmup)


def test_warmup_after_reset_prompt_change_and_mode_switch(gen):
    frames = clip(1) * 12  # a still source: once warmed up, everything is pruned
    gen.set_lipar(warm(gen, 3))
    gen.reset()
    kept = [gen.step(f).stats["kept_ratio"] for f in frames[:4]]
    assert kept == [1.0, 1.0, 1.0, 0.0]  # reset: 3 whole frames
    gen.set_prompt("a red ball", transition_frames=2)
    kept = [gen.step(f).stats["kept_ratio"] for f in frames[4:10]]
    assert kept == [1.0] * 5 + [0.0]  # prompt change: the 2-frame blend + 3 frames
    gen.step(None)  # a text-to-video frame: a mode switch
    out = [gen.step(f) for f in frames[10:12]]
    assert [o.stats["kept_ratio"] for o in out] == [1.0, 1.0]
    assert out[0].stats["mask_reason"] == "first" and out[1].stats["mask_reason"] == "warmup"
    gen.set_prompt("a green square moving right over blue stripes")


def test_with_lipar_off_no_recovery_state_is_kept(gen, monkeypatch):
    """The noisy-copy mode snapshots every step's K/V for the next frame's pruned tokens; with LIPAR off
    nothing is pruned, so an unpruned stream must neither take those snapshots nor write K before RoPE
    during its denoising steps (the cost the unpruned baseline once paid)."""
    snapshots, step_pre_writes = [], []
    real_snapshot = type(gen)._slot_snapshot
    monkeypatch.setattr(type(gen), "_slot_snapshot", lambda self: snapshots.append(1) or real_snapshot(self))
    real_runner = gen.runner

    def runner(x, pos, timestep, text_kv, write_idx, store_pre, key_mask=None):
        if float(timestep.flatten()[0]) > 0:  # a denoising step, not the cache pass (which always writes it)
            step_pre_writes.append(store_pre)
        return real_runner(x, pos, timestep, text_kv, write_idx, store_pre, key_mask)

    monkeypatch.setattr(gen, "runner", runner)
    run(gen, LiparConfig(enabled=False, recovery="noisy-copy"), clip(3))
    assert step_pre_writes and not snapshots and not any(step_pre_writes)
    step_pre_writes.clear()
    run(gen, tiny_tau("noisy-copy"), clip(3))  # on, the same mode takes them at every step
    assert len(snapshots) == len(step_pre_writes) and all(step_pre_writes)
