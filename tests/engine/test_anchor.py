import dataclasses

import numpy as np
import pytest
import torch

from engine.anchor import anchor_to_source
from engine.config import CONFIGS
from engine.dit import patchify
from engine.generator import StreamingGenerator
from lipar.config import LiparConfig


def test_anchor_takes_the_source_where_the_output_agrees_and_keeps_the_output_where_it_does_not():
    source = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(0))
    offsets = torch.tensor([0.0, 0.1, 0.2, 0.5])  # mean |clean - source| of each token
    signs = torch.tensor([1.0, -1.0] * 4)
    clean = source + offsets[None, :, None] * signs
    out = anchor_to_source(clean, source, 0.4)
    weight = torch.tensor([1.0, 0.75, 0.5, 0.0])[None, :, None]  # 1 - d / tolerance, clamped
    torch.testing.assert_close(out, clean + weight * (source - clean))
    torch.testing.assert_close(out[:, 0], source[:, 0])
    torch.testing.assert_close(out[:, 3], clean[:, 3])


def test_bad_anchor_tolerance_is_refused():
    for bad in (0.0, -0.4):
        with pytest.raises(ValueError, match="v2v_anchor is a latent distance > 0"):
            dataclasses.replace(CONFIGS["tiny"], v2v_anchor=bad)


def moving_square(i, size=64):
    frame = np.full((size, size, 3), 90, np.uint8)
    frame[20:36, 4 + 3 * i : 20 + 3 * i] = (230, 30, 30)
    return frame


def run(gen, anchor, frames):
    """Outputs of a stream and, per step, the tokens the cache committed for its frame."""
    gen.cfg = dataclasses.replace(gen.cfg, v2v_anchor=anchor)
    gen.reset()
    outs, committed = [], []
    n = gen.tokens
    for f in frames:
        outs.append(gen.step(f))
        slot = gen.cache.previous_slot
        committed.append(gen.cache.clean[:, slot * n : (slot + 1) * n].clone())
    return outs, committed


@pytest.mark.parametrize("lipar", [False, True])
def test_video_to_video_cache_holds_the_anchored_source_while_the_output_stays_the_models(lipar):
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu", random_weights=True, size=(64, 64), seed=3)
    gen.set_prompt("a red ball rolling left over a brick wall")
    gen.set_lipar(LiparConfig(enabled=lipar))
    frames = [moving_square(i) for i in range(4)]
    sources = [patchify(gen.encode_source(f)) for f in frames]
    off, off_cache = run(gen, None, frames)
    on, on_cache = run(gen, 1e6, frames)  # a tolerance no output misses: the cache holds the source
    for out, cache in zip(off, off_cache):
        torch.testing.assert_close(cache, patchify(out.latents[:, 0]))  # off: the model's own output
    for cache, source in zip(on_cache, sources):
        torch.testing.assert_close(cache, source, atol=1e-5, rtol=0)
    # the first frame has no context yet, so anchoring cannot change it; later ones see the anchored context
    np.testing.assert_array_equal(off[0].frames[0], on[0].frames[0])
    assert not torch.equal(off[-1].latents, on[-1].latents)
    assert not torch.allclose(patchify(on[-1].latents[:, 0]), sources[-1], atol=1e-3)  # output: the model's


def test_text_to_video_is_not_anchored():
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu", random_weights=True, size=(64, 64), seed=3)
    gen.set_prompt("a red ball rolling left over a brick wall")
    off, _ = run(gen, None, [None] * 3)
    on, _ = run(gen, 1e6, [None] * 3)
    for a, b in zip(off, on):
        np.testing.assert_array_equal(a.frames[0], b.frames[0])
