"""Our TAEHV against madebyollin/taehv's own taehv.py, imported from TAEHV_SRC (a path to taehv.py, e.g.
a checkout of github.com/madebyollin/taehv, or Self-Forcing's copy in demo_utils/taehv.py). Their random
weights go through a .pth file into ours by `load_vae_weights`, as taew2_1.pth would."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from engine.vae import TAEHV, load_vae_weights

SRC = os.environ.get("TAEHV_SRC")
pytestmark = pytest.mark.skipif(
    not SRC or not Path(SRC).is_file(),
    reason="TAEHV_SRC does not point at madebyollin/taehv's taehv.py (set it to run the parity test)",
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("reference_taehv", SRC)
    ref_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref_module)
    torch.manual_seed(0)
    ref = ref_module.TAEHV(checkpoint_path=None).eval()
    path = tmp_path_factory.mktemp("taehv") / "taew2_1.pth"
    torch.save(ref.state_dict(), path)
    ours = TAEHV().eval()
    load_vae_weights(ours, path)
    return ref_module, ref, ours


@torch.no_grad()
def test_encoder_matches_the_reference(pair):
    ref_module, ref, ours = pair
    video = torch.rand(1, 8, 3, 32, 48, generator=torch.Generator().manual_seed(1))  # [0, 1], as theirs takes
    expected = ref_module.apply_model_with_memblocks(ref.encoder, video, True, False)  # (1, 2, 16, 4, 6)
    ours.reset()
    got = ours.encode_video(video * 2 - 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    ours.reset()
    steps = torch.stack([ours.encode_step(video[:, 4 * i : 4 * i + 4] * 2 - 1) for i in range(2)], dim=1)
    torch.testing.assert_close(steps, expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_decoder_matches_the_reference_with_its_startup_frames_dropped(pair):
    ref_module, ref, ours = pair
    latents = torch.randn(1, 3, 16, 4, 6, generator=torch.Generator().manual_seed(2))
    expected = ref_module.apply_model_with_memblocks(ref.decoder, latents, True, False).clamp(0, 1)[:, 3:]
    sequential = ref_module.apply_model_with_memblocks(ref.decoder, latents, False, False).clamp(0, 1)[:, 3:]
    torch.testing.assert_close(sequential, expected, rtol=1e-5, atol=1e-5)  # their two paths agree
    assert ours.drop_startup_frames
    ours.reset()
    torch.testing.assert_close((ours.decode_video(latents) + 1) / 2, expected, rtol=1e-5, atol=1e-5)
    ours.reset()
    steps = [ours.decode_step(latents[:, i]) for i in range(3)]
    assert [s.shape[1] for s in steps] == [1, 4, 4]  # a stream starts with one frame, as Wan's VAE does
    torch.testing.assert_close((torch.cat(steps, dim=1) + 1) / 2, expected, rtol=1e-5, atol=1e-5)
