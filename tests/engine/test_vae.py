import dataclasses

import pytest
import torch

from engine.config import CONFIGS
from engine.vae import TAEHV, FrameVAE, _clamp_pixels, build_vae, load_vae_weights


def frames(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def frame_vae():
    torch.manual_seed(0)
    return FrameVAE().eval()


@pytest.fixture
def taehv():
    torch.manual_seed(0)
    vae = TAEHV().eval()
    # Random weights put most outputs below 0 (clamped to -1); centre them so comparisons see real values.
    with torch.no_grad():
        vae.decoder[-1].bias.fill_(0.5)
    return vae


# ------------------------------------------------------------------------------------ FrameVAE


def test_frame_vae_fits_the_parameter_budget(frame_vae):
    n = sum(p.numel() for p in frame_vae.parameters())
    assert 2_000_000 < n <= 5_000_000


@torch.no_grad()
def test_frame_vae_shapes_and_range(frame_vae):
    x = frames(2, 3, 64, 96)
    z = frame_vae.encode(x)
    assert z.shape == (2, 16, 8, 12)
    y = frame_vae.decode(z * 100)  # far out of distribution: still valid pixels
    assert y.shape == (2, 3, 64, 96)
    assert y.min() >= -1 and y.max() <= 1
    step = frame_vae.decode_step(frame_vae.encode_step(x[:, None]))
    assert step.shape == (2, 1, 3, 64, 96)
    assert (frame_vae.spatial_factor, frame_vae.frames_per_latent, frame_vae.latent_channels) == (8, 1, 16)


@torch.no_grad()
def test_frame_vae_is_deterministic_and_frame_wise(frame_vae):
    x = frames(3, 3, 32, 32)
    z = frame_vae.encode(x)
    assert torch.equal(z, frame_vae.encode(x))
    frame_vae.reset()  # a no-op: the frame VAE has no memory
    assert torch.allclose(frame_vae.encode(x[1:2]), z[1:2], atol=1e-5)  # no mixing across the batch


@torch.no_grad()
def test_latent_stats_normalise_and_decode_undoes_them():
    torch.manual_seed(0)
    vae = FrameVAE().eval()
    x = frames(2, 3, 32, 32)
    raw = vae.encoder(x)
    before = vae.decode(vae.encode(x))
    mean, std = torch.linspace(-1, 1, 16), torch.linspace(0.5, 2, 16)
    vae.set_latent_stats(mean, std)
    z = vae.encode(x)
    assert torch.allclose(z, (raw - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1), atol=1e-5)
    assert torch.allclose(vae.decode(z), before, atol=1e-5)
    assert "shift" in vae.state_dict() and "scale" in vae.state_dict()  # saved with the weights


@pytest.mark.parametrize(
    "mean, std, message",
    [
        (torch.zeros(15), torch.ones(15), "needs 16 values"),
        (torch.zeros(16), torch.zeros(16), "must be > 0"),
        (torch.full((16,), float("nan")), torch.ones(16), "finite"),
    ],
)
def test_bad_latent_stats_are_refused(mean, std, message):
    with pytest.raises(ValueError, match=message):
        FrameVAE().set_latent_stats(mean, std)


@torch.no_grad()
def test_taehv_stream_memory_is_rewritten_in_place(taehv):
    """CUDA graphs replay a step against the same buffers: later steps must overwrite, not replace, them."""
    assert taehv.stream_memory("encoder") == [] and taehv.stream_memory("decoder") == []
    taehv.encode_step(frames(1, 4, 3, 32, 32))
    taehv.decode_step(torch.randn(1, 16, 4, 4))
    enc, dec = taehv.stream_memory("encoder"), taehv.stream_memory("decoder")
    assert len(enc) == 9 and len(dec) == 9  # one buffer per MemBlock
    before = [t.clone() for t in enc + dec]
    taehv.encode_step(frames(1, 4, 3, 32, 32, seed=1))
    taehv.decode_step(torch.randn(1, 16, 4, 4))
    after_enc, after_dec = taehv.stream_memory("encoder"), taehv.stream_memory("decoder")
    assert all(a is b for a, b in zip(after_enc + after_dec, enc + dec))
    assert all((a - b).abs().max() > 0 for a, b in zip(after_enc + after_dec, before))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda v: v.encode(frames(1, 3, 30, 32)), "divisible by 8"),
        (lambda v: v.encode(frames(1, 4, 32, 32)), r"\(B, 3, H, W\)"),
        (lambda v: v.encode(frames(1, 1, 3, 32, 32)), r"\(B, 3, H, W\)"),
        (lambda v: v.encode_step(frames(1, 2, 3, 32, 32)), "takes 1 frame"),
        (lambda v: v.decode(torch.zeros(1, 4, 4, 4)), "C=16"),
        (lambda v: v.decode_step(torch.zeros(16, 4, 4)), r"\(B, C, h, w\)"),
    ],
)
def test_frame_vae_rejects_bad_shapes(frame_vae, call, message):
    with pytest.raises(ValueError, match=message):
        call(frame_vae)


def test_clamp_keeps_the_gradient_of_out_of_range_pixels():
    x = torch.tensor([-3.0, 0.5, 2.0], requires_grad=True)
    y = _clamp_pixels(x)
    assert y.tolist() == [-1.0, 0.5, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_frame_vae_trains():
    torch.manual_seed(0)
    vae = FrameVAE(widths=(16, 32, 32))  # narrow, so the test is fast; same blocks as the default
    x = frames(2, 3, 16, 16)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = (vae.decode(vae.encode(x)) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------------------ TAEHV


@torch.no_grad()
def test_taehv_shapes(taehv):
    assert (taehv.spatial_factor, taehv.frames_per_latent, taehv.latent_channels) == (8, 4, 16)
    z = taehv.encode_step(frames(2, 4, 3, 32, 48))
    assert z.shape == (2, 16, 4, 6)
    y = taehv.decode_step(z)
    assert y.shape == (2, 4, 3, 32, 48)
    assert y.min() >= -1 and y.max() <= 1
    taehv.reset()  # a new batch size is a new stream
    assert taehv.decode_video(torch.randn(1, 2, 16, 4, 6)).shape == (1, 8, 3, 32, 48)


@torch.no_grad()
def test_taehv_convolutions_see_channels_last_inputs(taehv):
    """cuDNN converts NCHW tensors to NHWC and back around every convolution; TAEHV keeps its activations
    channels last from end to end (the time pool and grow included), so no convolution gets an NCHW input."""
    seen = []
    hooks = [
        m.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
        for m in taehv.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    try:
        z = taehv.encode_video(frames(2, 8, 3, 32, 48))  # two latents: both time pools at stride 2
        taehv.decode_video(z)
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) > 40 and all(seen)
    assert z.is_contiguous()  # latents leave as plain tensors (the DiT's patchify views them)


@torch.no_grad()
def test_taehv_streaming_decode_equals_decoding_the_sequence(taehv):
    latents = torch.randn(1, 3, 16, 4, 4)
    whole = taehv.decode_video(latents)  # (1, 12, 3, 32, 32)
    taehv.reset()
    steps = torch.cat([taehv.decode_step(latents[:, i]) for i in range(3)], dim=1)
    assert torch.allclose(steps, whole, atol=1e-5)


@torch.no_grad()
def test_taehv_streaming_encode_equals_encoding_the_sequence(taehv):
    video = frames(1, 12, 3, 32, 32)
    whole = taehv.encode_video(video)  # (1, 3, 16, 4, 4)
    taehv.reset()
    steps = torch.stack([taehv.encode_step(video[:, 4 * i : 4 * i + 4]) for i in range(3)], dim=1)
    assert torch.allclose(steps, whole, atol=1e-5)


@torch.no_grad()
def test_taehv_is_causal_and_remembers_the_past(taehv):
    a, b, other = torch.randn(3, 1, 16, 4, 4)
    first = taehv.decode_video(torch.stack([a, b], 1))
    taehv.reset()
    changed_future = taehv.decode_video(torch.stack([a, other], 1))
    assert torch.allclose(first[:, :4], changed_future[:, :4], atol=1e-6)  # a's frames ignore what follows
    taehv.reset()
    changed_past = taehv.decode_video(torch.stack([other, b], 1))
    assert (first[:, 4:] - changed_past[:, 4:]).abs().max() > 1e-4  # b's frames depend on a


@torch.no_grad()
def test_taehv_reset_clears_memory(taehv):
    z = torch.randn(1, 16, 4, 4)
    fresh = taehv.decode_step(z)
    again = taehv.decode_step(z)
    assert (again - fresh).abs().max() > 1e-4  # memory of the first call changes the second
    taehv.reset()
    assert torch.allclose(taehv.decode_step(z), fresh, atol=1e-6)
    enc_fresh = taehv.encode_step(frames(1, 4, 3, 32, 32))
    taehv.encode_step(frames(1, 4, 3, 32, 32, seed=1))
    taehv.reset()
    assert torch.allclose(taehv.encode_step(frames(1, 4, 3, 32, 32)), enc_fresh, atol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda v: v.encode_step(frames(1, 3, 3, 32, 32)), "takes 4 frame"),
        (lambda v: v.encode_video(frames(1, 6, 3, 32, 32)), "multiple of 4"),
        (lambda v: v.decode_video(torch.zeros(1, 16, 4, 4)), r"\(B, T, C, h, w\)"),
        (lambda v: v.decode_step(torch.zeros(1, 8, 4, 4)), "C=16"),
    ],
)
def test_taehv_rejects_bad_shapes(taehv, call, message):
    with pytest.raises(ValueError, match=message):
        call(taehv)


@torch.no_grad()
def test_taehv_asks_for_reset_when_the_frame_size_changes(taehv):
    taehv.decode_step(torch.zeros(1, 16, 4, 4))
    with pytest.raises(ValueError, match="reset"):
        taehv.decode_step(torch.zeros(1, 16, 4, 6))
    taehv.reset()
    assert taehv.decode_step(torch.zeros(1, 16, 4, 6)).shape == (1, 4, 3, 32, 48)


@torch.no_grad()
def test_taehv_release_file_loads_and_drops_the_startup_frames(taehv, tmp_path):
    release = {k: v for k, v in taehv.state_dict().items() if k not in ("shift", "scale")}  # taew2_1.pth's keys
    torch.save(release, tmp_path / "taew2_1.pth")
    loaded = TAEHV().eval()
    loaded.set_latent_stats(torch.ones(16), 2 * torch.ones(16))  # a release resets them to the identity
    load_vae_weights(loaded, tmp_path / "taew2_1.pth")
    assert loaded.drop_startup_frames and not taehv.drop_startup_frames
    assert (loaded.shift == 0).all() and (loaded.scale == 1).all()
    z = torch.randn(1, 2, 16, 4, 4)
    full = taehv.decode_video(z)
    assert [loaded.decode_step(z[:, i]).shape[1] for i in range(2)] == [1, 4]
    loaded.reset()
    torch.testing.assert_close(loaded.decode_video(z), full[:, 3:])


def test_vae_files_that_do_not_fit_are_named(taehv, tmp_path):
    state = dict(taehv.state_dict())
    state["decoder.1.weight"] = torch.zeros(8, 16, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"decoder.1.weight: file \(8, 16, 3, 3\) vs model \(256, 16, 3, 3\)"):
        load_vae_weights(TAEHV(), tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit FrameVAE"):
        load_vae_weights(FrameVAE(), tmp_path / "bad.pth")


# ------------------------------------------------------------------------------------ build_vae


def test_build_vae_follows_the_config():
    tiny = build_vae(CONFIGS["tiny"])
    assert isinstance(tiny, FrameVAE) and tiny.latent_channels == CONFIGS["tiny"].latent_channels
    assert isinstance(build_vae(CONFIGS["wan2.1-1.3b"]), TAEHV)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(vae="sdxl"), "unknown vae"),
        (dict(frames_per_latent=4), "frames_per_latent=4"),
        (dict(vae="taehv"), "frames_per_latent=1"),
    ],
)
def test_build_vae_refuses_inconsistent_configs(changes, message):
    with pytest.raises(ValueError, match=message):
        build_vae(dataclasses.replace(CONFIGS["tiny"], **changes))


def test_build_vae_takes_the_frame_vae_shape_from_the_config():
    cfg = dataclasses.replace(CONFIGS["tiny"], vae_widths=(8, 12, 16), vae_blocks=(0, 1, 0))
    vae = build_vae(cfg)
    convs = [m for m in vae.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs[:3]] == [8, 12, 16]
    assert sum(1 for m in vae.encoder if not isinstance(m, (torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.SiLU))) == 1
