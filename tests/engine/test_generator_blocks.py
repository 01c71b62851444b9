"""Blocks of latent frames (Self-Forcing / CausVid's 3-frame blocks), the sampler, the window and the
KV re-cache on a prompt switch, on a small random model (CPU, fp32)."""

import dataclasses

import numpy as np
import pytest
import torch

from engine.attention import SequenceAttention
from engine.config import CONFIGS, KVWindow
from engine.dit import CausalDiT, init_weights, unpatchify
from engine.generator import StreamingGenerator
from engine.sampler import SeededNoise, euler_step, next_sigmas
from engine.text import CachedTextEncoder, RandomTextEncoder
from engine.vae import build_vae
from lipar.config import LiparConfig
from tests.engine.conftest import small_config

SIZE = (32, 32)  # 4x4 latent, 2x2 = 4 tokens per frame
BLOCKS_OF_3 = KVWindow(0, 6, 3)
NO_LIPAR = LiparConfig(enabled=False)


def make_gen(window=BLOCKS_OF_3, sampler="euler", lipar=NO_LIPAR, seed=0):
    cfg = small_config(window=window, sampler=sampler)
    dit = CausalDiT(cfg)
    init_weights(dit, seed=1)
    text = CachedTextEncoder(RandomTextEncoder(cfg.text_dim, cfg.text_len))
    gen = StreamingGenerator(cfg, dit, build_vae(cfg), text, torch.device("cpu"), SIZE, lipar, seed=seed)
    gen.set_prompt("a red ball rolling left")
    return gen


def test_a_step_is_a_block_with_stats_per_block_and_per_frame():
    gen = make_gen()
    outs = [gen.step(None) for _ in range(4)]
    assert gen.frames_per_step == 3 and len(outs[0].frames) == 3 and outs[0].frames[0].shape == (*SIZE, 3)
    assert outs[0].latents.shape == (1, 3, 4, 4, 4)
    assert [o.stats["frame"] for o in outs] == [0, 3, 6, 9]
    assert [o.stats["kv_frames"] for o in outs] == [0, 3, 6, 6]  # m = 6 clean frames, then eviction
    s = outs[1].stats
    assert s["latent_frames"] == 3 and s["ms_per_latent_frame"] == pytest.approx(s["total_ms"] / 3)


@torch.no_grad()
def test_block_frames_attend_to_each_other_and_to_the_cached_block():
    """Reference: two blocks as one sequence, block-causal, with the clean first block as context."""
    gen = make_gen()
    outs = [gen.step(None) for _ in range(2)]
    dit, n, d = gen.dit, gen.tokens, gen.cfg.patch_dim
    text_kv = gen.prompt.kv
    noise = SeededNoise(0, "cpu")
    pos = torch.cat([gen.positions(f, gen.all_idx) for f in range(6)])
    sigmas = gen.cfg.t2v_schedule.sigmas

    def denoise(x, context, mask):
        for sigma, sigma_next in zip(sigmas, next_sigmas(sigmas)):
            seq = x if context is None else torch.cat([context, x], dim=1)
            ts = torch.cat([torch.zeros(1, seq.shape[1] - x.shape[1]), torch.full((1, x.shape[1]), sigma * 1000)], 1)
            v = dit(seq, pos[: seq.shape[1]], ts, text_kv, SequenceAttention(mask))[:, -x.shape[1] :]
            x = euler_step(x, v, sigma, sigma_next)
        return x

    first = denoise(noise((1, 3 * n, d)), None, None)  # one block: every frame sees all three
    block = torch.arange(6).repeat_interleave(n) // 3
    mask = block[None, :] <= block[:, None]  # block-causal: the second block sees the first and itself
    second = denoise(noise((1, 3 * n, d)), first, mask)
    ours = [torch.stack([unpatchify(f, 4, 4) for f in c.split(n, dim=1)], 1) for c in (first, second)]
    torch.testing.assert_close(outs[0].latents, ours[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[1].latents, ours[1], rtol=1e-5, atol=1e-5)


class CountingNoise(SeededNoise):
    def __init__(self):
        super().__init__(0, "cpu")
        self.shapes = []

    def __call__(self, shape):
        self.shapes.append(shape)
        return super().__call__(shape)


def test_renoise_draws_fresh_noise_after_every_step_but_the_last():
    gen = make_gen(sampler="renoise")
    gen.noise_source = CountingNoise()
    gen.step(None)
    steps = len(gen.cfg.t2v_schedule.sigmas)
    assert gen.noise_source.shapes == [(1, 3 * gen.tokens, gen.cfg.patch_dim)] * steps  # start + steps - 1
    euler = make_gen(sampler="euler")
    euler.noise_source = CountingNoise()
    euler.step(None)
    assert len(euler.noise_source.shapes) == 1


def test_recache_under_the_same_prompt_reproduces_the_cache():
    gen = make_gen(window=KVWindow(0, 9, 3))  # nothing evicted yet: every cached frame saw all it sees now
    for _ in range(3):
        gen.step(None)
    k, v, k_pre = gen.cache.k.clone(), gen.cache.v.clone(), gen.cache.k_pre.clone()
    cached = [s for block in gen.cache.cached_blocks() for s in block]
    gen.set_prompt("a red ball rolling left", recache=True)
    out = gen.step(None)
    assert out.stats["recached_frames"] == 9 and "recache" in out.stats["stages_ms"]
    idx = torch.cat([gen.cache.token_index(s, torch.arange(gen.tokens)) for s in cached])
    for before, after in ((k, gen.cache.k), (v, gen.cache.v), (k_pre, gen.cache.k_pre)):
        torch.testing.assert_close(after[:, :, idx], before[:, :, idx], rtol=1e-5, atol=1e-5)
    assert gen.step(None).stats["recached_frames"] == 0  # once, at the step after the switch


def test_recache_under_a_new_prompt_changes_only_what_the_prompt_reaches():
    gen = make_gen()
    for _ in range(2):
        gen.step(None)
    k = gen.cache.k.clone()
    gen.set_prompt("a blue square drifting up", recache=True)
    gen.step(None)
    idx = torch.cat([gen.cache.token_index(s, torch.arange(gen.tokens)) for s in range(6)])
    torch.testing.assert_close(gen.cache.k[0, :, idx], k[0, :, idx])  # layer 0's keys come before any prompt
    assert (gen.cache.k[1, :, idx] - k[1, :, idx]).abs().max() > 1e-4  # later layers saw the new prompt


def test_recache_skips_frames_the_window_evicted():
    gen = make_gen(window=KVWindow(1, 3, 3))
    for _ in range(3):
        gen.step(None)  # frames 0..8; the window keeps the sink 0 and frames 6, 7, 8
    gen.set_prompt("a blue square drifting up", recache=True)
    assert gen.step(None).stats["recached_frames"] == 4


def static_clip(count, size=32):
    frame = np.full((size, size, 3), 90, np.uint8)
    frame[8:20, 8:20] = (230, 30, 30)
    return [frame] * count


def test_lipar_prunes_per_frame_inside_a_block_and_restores_from_the_last_clean_frame():
    # a static source prunes everything the drift rules allow: warm-up 1 frame, any output settled, no age bound
    lipar = LiparConfig(tau_short=0.5, tau_long=1.0, warmup_frames=1, tau_output=1e9, max_age=0)
    gen = make_gen(lipar=lipar)
    clip = static_clip(3)
    outs = [gen.step(clip) for _ in range(3)]
    assert outs[0].stats["kept_ratio"] == 1.0
    last = outs[-1]
    assert last.stats["kept_ratio"] < 1.0
    previous = outs[-2].latents[:, -1]  # the last clean frame before the block
    for f in range(3):  # a pruned token keeps the value it had in the last clean frame
        pruned = ~torch.from_numpy(np.repeat(np.repeat(last.mask, 2, 0), 2, 1))
        torch.testing.assert_close(last.latents[0, f][:, pruned], previous[0][:, pruned])


def test_block_sources_take_a_block_of_frames():
    gen = make_gen()
    with pytest.raises(ValueError, match="expected 3 source frame"):
        gen.step(static_clip(2))
    assert len(gen.step(static_clip(1)).frames) == 3  # one still frame is held for the block


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window="1,0"), "M \\(clean frames after the sinks\\) must be >= 1"),
        (dict(window="global:1"), "global:N needs"),
        (dict(window="frames"), "takes SINKS,M"),
        (dict(sampler="ddim"), "unknown sampler 'ddim'"),
    ],
)
def test_bad_window_and_sampler_give_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StreamingGenerator.from_pretrained("tiny", device="cpu", random_weights=True, size=(32, 32), **kwargs)


def test_window_and_sampler_override_the_preset():
    gen = StreamingGenerator.from_pretrained(
        "tiny", device="cpu", random_weights=True, size=(32, 32), window="global:5", sampler="renoise"
    )
    assert gen.cfg.window == KVWindow(0, 4, 1) and gen.cfg.sampler == "renoise"
    assert gen.cache.k.shape[2] == 5 * gen.tokens  # the cache is sized from the window
    assert CONFIGS["tiny"].window == KVWindow(1, 6, 1)  # the preset itself is untouched


def test_frame_wise_presets_keep_their_behaviour():
    cfg = dataclasses.replace(small_config(), window=KVWindow(1, 2))
    assert cfg.frames_per_block == 1 and cfg.sampler == "euler"
