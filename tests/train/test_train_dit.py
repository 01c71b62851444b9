import pytest
import torch
from safetensors.torch import load_file

from engine.attention import SequenceAttention, frame_causal_mask
from engine.checkpoint import load_state, save_state
from engine.config import get_config
from engine.dit import CausalDiT, init_weights
from engine.sampler import add_noise, velocity_target
from train.train_dit import (
    MOTION_WEIGHT,
    DiTTrainConfig,
    clip_positions,
    flow_loss,
    lagged,
    motion_weight,
    own_reconstruction,
    restyle_start,
    sample_sigmas,
    train,
    training_masks,
)


def loss_inputs(batch: int):
    """A fresh tiny DiT and a batch of 3-frame 4x4-latent clips, captions and the training mask."""
    cfg = get_config("tiny")
    model = CausalDiT(cfg)
    init_weights(model)
    latents = torch.randn(batch, 3, cfg.latent_channels, 4, 4)
    return model, latents, torch.randn(batch, cfg.text_len, cfg.text_dim), frame_causal_mask(3, 4, 1, 6, copies=2)


def test_teacher_forcing_mask_is_what_inference_sees():
    """Copy 0 = clean frames (the cache pass), copy 1 = noisy frames: noisy frame f sees the clean frames of
    its window before it and itself, never its own clean copy, other noisy frames or the future."""
    m = frame_causal_mask(frames=9, tokens_per_frame=1, sinks=1, m=6, copies=2)
    noisy = 9  # row offset of the noisy copy
    f = 8
    assert m[noisy + f, noisy + f] and not m[noisy + f, noisy + f - 1]
    assert not m[noisy + f, f]  # its own clean copy
    assert m[noisy + f, 0] and m[noisy + f, 2] and m[noisy + f, 7] and not m[noisy + f, 1]  # sink + last 6
    assert not m[3, 4] and m[4, 3]  # clean copy is causal


def test_noisy_frames_never_see_the_future():
    cfg = get_config("tiny")
    torch.manual_seed(0)
    model = CausalDiT(cfg).eval()
    init_weights(model)
    f, n = 4, 4
    x = torch.randn(1, 2 * f * n, cfg.patch_dim)
    pos = clip_positions(f, 2, 2, 0, "cpu").repeat(2, 1)
    t = torch.rand(1, 2 * f * n) * 1000
    text = model.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim))
    attn = SequenceAttention(frame_causal_mask(f, n, 1, 6, copies=2))
    with torch.no_grad():
        a = model(x, pos, t, text, attn)
        y = x.clone()
        y[:, 2 * n : 3 * n] += 1.0  # change clean frame 2
        b = model(y, pos, t, text, attn)
    noisy = slice(f * n, (f + 3) * n)  # noisy frames 0..2, including frame 2's own noisy version
    torch.testing.assert_close(a[:, noisy], b[:, noisy])
    assert not torch.allclose(a[:, (f + 3) * n :], b[:, (f + 3) * n :])  # noisy frame 3 sees clean frame 2


def test_sigmas_cover_the_schedules_and_stay_in_range():
    cfg = get_config("tiny")
    s = sample_sigmas(cfg, (4000,), "cpu")
    assert s.min() > 0 and s.max() <= 1
    exact = torch.tensor(cfg.t2v_schedule.sigmas)
    assert (s[:, None] - exact[None]).abs().min(1).values.eq(0).float().mean() > 0.15


def test_flow_loss_is_finite_and_has_gradients():
    model, latents, text, mask = loss_inputs(2)
    loss = flow_loss(model, latents, text, mask, gap=100)
    loss.backward()
    assert torch.isfinite(loss) and model.blocks[0].self_attn.q.weight.grad.abs().sum() > 0


def test_restyle_start_lies_on_the_video_to_video_path():
    # the straight line from the noised source (at sigma0) to the target, evaluated at sigma
    torch.manual_seed(0)
    x0, source, noise = torch.randn(3, 1, 10, 4).unbind(0)
    sigma0 = torch.tensor([[[0.8]]])
    for s in (0.8, 0.5, 0.1):
        sigma = torch.tensor([[[s]]])
        start, offset = restyle_start(x0, source, sigma, sigma0)
        begin = add_noise(source, noise, sigma0)
        on_line = x0 + (sigma / sigma0) * (begin - x0)
        torch.testing.assert_close(add_noise(start, noise, sigma), on_line)
        torch.testing.assert_close(velocity_target(x0, noise) + offset, (begin - x0) / sigma0)
    # a pair whose source is the clip itself is plain rectified flow
    start, offset = restyle_start(x0, x0, torch.tensor([[[0.4]]]), sigma0)
    torch.testing.assert_close(start, x0)
    assert offset.abs().max() == 0


def test_motion_weight_favours_tokens_that_changed():
    x = torch.zeros(1, 3 * 4, 2)  # 3 frames of 4 tokens
    x[0, 4 + 1] = 1.0  # token 1 of frame 1 changes, and changes back in frame 2
    w = motion_weight(x, 3).reshape(3, 4)
    assert w[0].eq(1).all()  # the first frame has nothing to move from
    assert w[1, 1] == w[2, 1] == 1 + MOTION_WEIGHT
    assert w[1, [0, 2, 3]].eq(1).all() and w[2, [0, 2, 3]].eq(1).all()


def test_lagged_context_holds_earlier_frames():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4 * 3, 1)  # 2 clips, 4 frames of 3 tokens
    out = lagged(x, torch.tensor([0, 2]), 4)
    torch.testing.assert_close(out[0], x[0])
    frames = out[1].reshape(4, 3)[:, 0] // 3 - 4  # frame index of each token row, clip 1
    assert frames.tolist() == [0, 0, 0, 1]


def test_flow_loss_takes_restyling_sources(monkeypatch):
    monkeypatch.setattr("train.train_dit.MAX_CONTEXT_LAG", 0)  # lagging context is tested above
    model, latents, text, mask = loss_inputs(4)
    torch.manual_seed(1)
    same = flow_loss(model, latents, text, mask, gap=0, sources=latents)
    torch.manual_seed(1)
    plain = flow_loss(model, latents, text, mask, gap=0)
    torch.manual_seed(1)
    other = flow_loss(model, latents, text, mask, gap=0, sources=latents + 3.0)
    torch.testing.assert_close(same, plain)  # source == clip: the pair adds nothing
    assert torch.isfinite(other) and other > plain


def test_training_resumes_and_exports(tmp_path):
    base = dict(
        ckpt=tmp_path / "ckpt",
        vae=get_vae_path(),
        export=tmp_path / "dit.safetensors",
        device="cpu",
        frames=3,
        batch_small=1,
        pool_clips=2,
        pool_steps=10,
        large_every=0,
        warmup=1,
        sink_only=0.75,  # every step with context sees only the sink: that mask runs through the loop
    )
    first = train(DiTTrainConfig(steps=2, **base))
    assert first["step"] == 2
    second = train(DiTTrainConfig(steps=3, **base))
    assert second["step"] == 3
    model = CausalDiT(get_config("tiny"))
    load_state(model, tmp_path / "dit.safetensors")


def test_no_context_mask_cuts_the_noisy_copy_off_the_clean_one():
    cfg = get_config("tiny")
    with_context, without, _ = training_masks(4, 2, cfg, "cpu")
    clean, noisy = slice(0, 8), slice(8, 16)
    assert torch.equal(without[clean], with_context[clean])  # the cache pass is unchanged
    assert not without[noisy, clean].any() and with_context[noisy, clean].any()
    assert torch.equal(
        without[noisy, noisy], torch.eye(4, dtype=torch.bool).repeat_interleave(2, 0).repeat_interleave(2, 1)
    )


def test_sink_only_mask_shows_each_noisy_frame_the_clean_sink_and_itself():
    cfg = get_config("tiny")  # one sink frame
    frames, n = 5, 2
    with_context, _, sink_only = training_masks(frames, n, cfg, "cpu")
    clean, noisy = slice(0, frames * n), slice(frames * n, 2 * frames * n)
    assert torch.equal(sink_only[clean], with_context[clean])  # the cache pass is unchanged
    seen = sink_only[noisy, clean][::n, ::n]  # (query frame, clean key frame)
    want = torch.zeros(frames, frames, dtype=torch.bool)
    want[1:, 0] = True  # frame 0 has no clean frame before it; every later one sees frame 0 only
    assert torch.equal(seen, want)
    assert torch.equal(sink_only[noisy, noisy], with_context[noisy, noisy])  # and itself


def test_sink_only_share_is_checked():
    with pytest.raises(ValueError, match="sink_only"):
        DiTTrainConfig(ckpt="x", vae="y", sink_only=0.9)


def test_init_starts_from_given_weights_only_without_a_checkpoint(tmp_path):
    model = CausalDiT(get_config("tiny"))
    init_weights(model, seed=5)
    save_state(model, tmp_path / "init.safetensors")
    base = dict(vae=get_vae_path(), device="cpu", frames=3, batch_small=1, pool_clips=2, large_every=0, warmup=1)
    train(
        DiTTrainConfig(
            ckpt=tmp_path / "a", export=tmp_path / "a.safetensors", steps=0, init=tmp_path / "init.safetensors", **base
        )
    )
    exported, initial = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "init.safetensors")
    assert all(torch.equal(exported[k], initial[k]) for k in initial)
    train(DiTTrainConfig(ckpt=tmp_path / "b", export=tmp_path / "b.safetensors", steps=1, **base))
    again = train(
        DiTTrainConfig(
            ckpt=tmp_path / "b", export=tmp_path / "b.safetensors", steps=1, init=tmp_path / "init.safetensors", **base
        )
    )
    assert again["step"] == 1  # resumed from its checkpoint: --init is ignored there
    assert not torch.equal(load_file(tmp_path / "b.safetensors")["head.head.weight"], initial["head.head.weight"])


def get_vae_path():
    from engine.checkpoint import WEIGHTS_DIR

    return WEIGHTS_DIR / "tiny" / "vae.safetensors"


def test_own_reconstruction_treats_each_frame_alone_and_recovers_a_clean_frame():
    """The self-context stand-in: frame f's reconstruction depends on frame f only, and a model that
    predicts the true velocity gives back the clean frame (x_sigma - sigma * v = x0)."""
    cfg = get_config("tiny")
    torch.manual_seed(0)
    model = CausalDiT(cfg).eval()
    init_weights(model)
    f, n = 3, 4
    x = torch.randn(1, f * n, cfg.patch_dim)
    pos = clip_positions(f, 2, 2, 0, "cpu")
    text = model.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim))
    torch.manual_seed(1)
    a = own_reconstruction(model, x, text, pos, f)
    y = x.clone()
    y[:, 2 * n :] += 1.0  # change frame 2
    torch.manual_seed(1)
    b = own_reconstruction(model, y, text, pos, f)
    torch.testing.assert_close(a[:, : 2 * n], b[:, : 2 * n])
    assert not torch.allclose(a[:, 2 * n :], b[:, 2 * n :])

    class Oracle(torch.nn.Module):  # knows the noise it will be given: the exact flow velocity
        def forward(self, noisy, pos, timestep, text_kv, attn):
            sigma = timestep[..., None] / 1000.0
            return (noisy - x) / sigma  # noise - x0 = (x_sigma - x0) / sigma

    torch.testing.assert_close(own_reconstruction(Oracle(), x, text, pos, f), x, rtol=1e-4, atol=1e-4)


def test_self_context_changes_the_loss_and_keeps_gradients():
    model, latents, text, mask = loss_inputs(2)
    torch.manual_seed(2)
    plain = flow_loss(model, latents, text, mask, gap=0)
    torch.manual_seed(2)
    own = flow_loss(model, latents, text, mask, gap=0, self_context=1.0)
    own.backward()
    assert torch.isfinite(own) and not torch.isclose(own, plain)
    assert model.blocks[0].self_attn.q.weight.grad.abs().sum() > 0


def test_self_context_share_is_checked():
    with pytest.raises(ValueError, match="self_context"):
        DiTTrainConfig(ckpt="x", vae="y", self_context=1.5)
