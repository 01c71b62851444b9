"""The `self-forcing` preset against Self-Forcing's own code (github guandeh17/Self-Forcing, commit 33593df).

Runs when SELF_FORCING_SRC points at their unpacked source (`.ci/run` unpacks ../shared/peers and sets it)
and their pure-Python dependencies import (diffusers, easydict, ftfy, einops); skipped with the reason
otherwise. Their code is imported from that path at test time, with the stand-ins their README lists for a
CPU: `torch.cuda.current_device` while importing, and an fp32 SDPA for their flash-attention calls.
"""

import dataclasses
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.config import get_config
from engine.dit import CausalDiT, init_weights, patchify
from engine.generator import StreamingGenerator
from engine.text import WAN_T5_FILE, CachedTextEncoder, RandomTextEncoder, UMT5Encoder
from engine.vae import build_vae
from lipar.config import LiparConfig
from tests.engine.test_text import tiny_tokenizer

SRC = os.environ.get("SELF_FORCING_SRC")
pytestmark = pytest.mark.skipif(
    not SRC or not (Path(SRC) / "pipeline" / "causal_inference.py").is_file(),
    reason="SELF_FORCING_SRC does not point at Self-Forcing's unpacked source (.ci/run sets it)",
)
BLOCKS = 7  # 21 latent frames: their whole global window
PROMPT = "a red ball rolling over a brick wall"


def sdpa(q, k, v, *args, **kwargs):
    """fp32 stand-in for their flash_attention / attention: q, k, v (B, L, H, D)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


@pytest.fixture(scope="module")
def peer():
    monkey = pytest.MonkeyPatch()
    monkey.setattr(sys, "path", [*sys.path, SRC])  # last: their train.py must not hide our train package
    wan = types.ModuleType("wan")  # their wan/__init__.py pulls in the image-to-video pipeline and torchvision
    wan.__path__ = [os.path.join(SRC, "wan")]
    monkey.setitem(sys.modules, "wan", wan)
    if not torch.cuda.is_available():
        monkey.setattr(torch.cuda, "current_device", lambda: 0)  # called at import by demo_utils/memory.py
    try:
        import pipeline.causal_inference as causal_inference
        import utils.scheduler as scheduler
        import utils.wan_wrapper as wan_wrapper
        import wan.modules.causal_model as causal_model
        import wan.modules.model as wan_model
        import wan.modules.t5 as t5
    except ImportError as e:
        monkey.undo()
        pytest.skip(f"Self-Forcing's dependencies are not installed ({e}); pip install diffusers easydict ftfy einops")
    monkey.setattr(causal_model, "attention", sdpa)
    monkey.setattr(wan_model, "flash_attention", sdpa)
    yield types.SimpleNamespace(
        causal_model=causal_model,
        pipeline=causal_inference,
        scheduler=scheduler,
        wrapper=wan_wrapper,
        t5=t5,
        monkey=monkey,
    )
    monkey.undo()


def their_model(peer, cfg, **kw):
    return peer.causal_model.CausalWanModel(
        model_type="t2v",
        text_len=cfg.text_len,
        in_dim=cfg.latent_channels,
        dim=cfg.dim,
        ffn_dim=cfg.ffn_dim,
        text_dim=cfg.text_dim,
        out_dim=cfg.latent_channels,
        num_heads=cfg.heads,
        num_layers=cfg.layers,
        cross_attn_norm=True,
        **kw,
    )


def test_whole_1_3b_layout_is_theirs_key_for_key(peer):
    cfg = get_config("self-forcing")
    with torch.device("meta"):
        theirs = their_model(peer, cfg)
        ours = CausalDiT(cfg)
    shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert len(shapes) == 825
    assert shapes == {k: tuple(v.shape) for k, v in ours.state_dict().items()}


class QueuedNoise:
    """Hands out prepared tensors in order, checking each has the shape asked for."""

    def __init__(self, tensors):
        self.tensors = list(tensors)

    def __call__(self, shape):
        out = self.tensors.pop(0)
        assert tuple(out.shape) == tuple(shape), (tuple(out.shape), tuple(shape))
        return out


def block_tokens(latents):
    """(F, C, h, w) latent frames -> our block tokens (1, F*N, C*4), frame-major."""
    return torch.cat([patchify(f[None]) for f in latents], dim=1)


@torch.no_grad()
def test_self_forcing_preset_reproduces_their_causal_inference_pipeline(peer):
    # fp32, 2 layers at the real width (their cache is hard-wired to 12 heads x 128), a 64x64 frame (16 tokens)
    cfg = dataclasses.replace(get_config("self-forcing"), layers=2, ffn_dim=256, text_dim=64, text_len=16)
    dit = CausalDiT(cfg)
    init_weights(dit, seed=1)
    text = CachedTextEncoder(RandomTextEncoder(cfg.text_dim, cfg.text_len))
    states = text.encode(PROMPT)
    g = torch.Generator().manual_seed(5)
    f, c, h, w = cfg.frames_per_block, cfg.latent_channels, 8, 8
    noise = torch.randn(1, BLOCKS * f, c, h, w, generator=g)
    renoise = [torch.randn(f, c, h, w, generator=g) for _ in range(BLOCKS * 3)]  # 3 re-noisings per block

    # theirs: CausalInferencePipeline with their WanDiffusionWrapper (x0 conversion, scheduler) around our weights
    model = their_model(peer, cfg).eval()
    model.load_state_dict(dit.state_dict())
    wrapper = peer.wrapper.WanDiffusionWrapper.__new__(peer.wrapper.WanDiffusionWrapper)
    nn.Module.__init__(wrapper)
    wrapper.model, wrapper.uniform_timestep, wrapper.seq_len = model, False, 32760
    wrapper.scheduler = peer.scheduler.FlowMatchScheduler(shift=5.0, sigma_min=0.0, extra_one_step=True)
    wrapper.scheduler.set_timesteps(1000, training=True)
    wrapper.post_init()

    class Text(nn.Module):
        def forward(self, text_prompts):
            return {"prompt_embeds": states[None]}

    class NoVAE(nn.Module):
        def decode_to_pixel(self, latent, use_cache=False):
            return latent

    args = types.SimpleNamespace(  # configs/self_forcing_dmd.yaml + default_config.yaml
        denoising_step_list=[1000, 750, 500, 250],
        warp_denoising_step=True,
        num_frame_per_block=3,
        independent_first_frame=False,
        context_noise=0,
        model_kwargs={"timestep_shift": 5.0},
    )
    pipe = peer.pipeline.CausalInferencePipeline(args, "cpu", generator=wrapper, text_encoder=Text(), vae=NoVAE())
    pipe.num_transformer_blocks, pipe.frame_seq_length = cfg.layers, (h // 2) * (w // 2)
    queued = QueuedNoise(renoise)
    with pytest.MonkeyPatch.context() as mp:  # their re-noising draws torch.randn_like(x0)
        mp.setattr(torch, "randn_like", lambda like, **kwargs: queued(like.shape))
        _, theirs = pipe.inference(noise, [PROMPT], return_latents=True)  # (1, 21, C, h, w)
    assert not queued.tensors

    # ours: the preset's generator with the same weights, prompt states and noise, in the order it draws them
    order = []
    for b in range(BLOCKS):
        order.append(block_tokens(noise[0, f * b : f * (b + 1)]))
        order += [block_tokens(r) for r in renoise[3 * b : 3 * b + 3]]
    gen = StreamingGenerator(cfg, dit, build_vae(cfg), text, torch.device("cpu"), (64, 64), LiparConfig(enabled=False))
    gen.noise_source = QueuedNoise(order)
    gen.set_prompt(PROMPT)
    ours = torch.cat([gen.step(None).latents for _ in range(BLOCKS)], dim=1)  # (1, 21, C, h, w)

    assert ours.shape == theirs.shape == (1, BLOCKS * f, c, h, w)
    rel = ((ours - theirs).norm() / theirs.norm()).item()
    per_block = [((o - t).norm() / t.norm()).item() for o, t in zip(ours.split(f, dim=1), theirs.split(f, dim=1))]
    report = f"relative error {rel:.2e} (per block {[f'{e:.1e}' for e in per_block]})"
    print(report)  # the figure README quotes: pytest -rP shows it
    assert rel <= 1e-4, report


@torch.no_grad()
def test_wan_release_t5_file_matches_their_t5_encoder(peer, tmp_path):
    torch.manual_seed(0)
    theirs = peer.t5.T5Encoder(
        vocab=48, dim=32, dim_attn=32, dim_ffn=40, num_heads=4, num_layers=2, num_buckets=32, shared_pos=False
    ).eval()
    torch.save({k: v.bfloat16() for k, v in theirs.state_dict().items()}, tmp_path / WAN_T5_FILE)
    theirs = theirs.to(torch.bfloat16).float()  # the same bf16 values as the file
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path / "google" / "umt5-xxl")
    ours = UMT5Encoder(tmp_path, text_len=12, dtype=torch.float32)
    batch = tokenizer(["a red ball over the wall"], padding="max_length", max_length=12, return_tensors="pt")
    expected = theirs(batch.input_ids, batch.attention_mask)[0]
    expected[batch.attention_mask[0].sum() :] = 0  # as their WanTextEncoder zeroes the padding
    torch.testing.assert_close(ours.encode("a red ball over the wall"), expected, rtol=1e-5, atol=1e-5)
