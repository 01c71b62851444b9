"""`bench --mask-encoder` and the peer block: another VAE's latents drive LIPAR's mask; the peer's fps
are read from the harness's file (CPU)."""

import json
import os
import time

import numpy as np
import pytest

from engine.bench import BenchConfig, peer_block, run_bench, synthetic_clip
from engine.generator import StreamingGenerator
from lipar.config import LiparConfig


def stream(gen, clip):
    gen.reset()
    gen.set_prompt("a red ball moving right over a brick wall")
    outs = [gen.step(f) for f in clip]
    return [o.mask for o in outs], [o.frames[0] for o in outs]


def test_the_models_own_vae_as_mask_encoder_changes_nothing():
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu", lipar=LiparConfig())
    clip = synthetic_clip(128, 128, 8)  # a disc crossing a still texture
    masks, outs = stream(gen, clip)
    gen.set_mask_encoder("tiny")  # the same shipped VAE: the same latents, so the same masks and frames
    masks2, outs2 = stream(gen, clip)
    assert any(not m.all() for m in masks), "the clip must prune something for this test to mean anything"
    assert all(np.array_equal(a, b) for a, b in zip(masks, masks2))
    assert all(np.array_equal(a, b) for a, b in zip(outs, outs2))


def test_with_lipar_off_the_mask_encoder_does_not_run():
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu", lipar=LiparConfig())
    gen.set_mask_encoder("tiny")
    encode, calls = gen._mask_encode, []
    gen._mask_encode = lambda chunk: calls.append(1) or encode(chunk)
    clip = synthetic_clip(128, 128, 3)
    stream(gen, clip)
    assert len(calls) == 3, "LIPAR on: one mask encode per frame"
    gen.set_lipar(LiparConfig(enabled=False))
    stream(gen, clip)
    assert len(calls) == 3, "LIPAR off: nothing compares the latents, so they are not made"


def test_the_mask_encoder_is_timed_as_its_own_stage():
    """Its encode runs beside the model's (on a GPU, on a second stream): inside "mask" it would be summed with
    the mask's own work and overstate what the mask costs the frame."""
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu", lipar=LiparConfig())
    gen.set_prompt("a red ball")
    frame = synthetic_clip(128, 128, 1)[0]
    assert "mask_encoder" not in gen.step(frame).stats["stages_ms"]
    gen.set_mask_encoder("tiny")
    slow, encode = [], gen._mask_encode
    gen._mask_encode = lambda chunk: slow.append(time.sleep(0.2)) or encode(chunk)
    stages = gen.step(frame).stats["stages_ms"]
    assert slow and stages["mask_encoder"] >= 200 > stages["mask"]


@pytest.mark.parametrize(
    ("name", "message"),
    [("wan2.1-1.3b", "mask encoder 'wan2.1-1.3b' must be a frame VAE"), ("huge", "unknown model 'huge'")],
)
def test_unsuitable_mask_encoders_are_refused(name, message):
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu")
    with pytest.raises(ValueError, match=message):
        gen.set_mask_encoder(name)


def write_peer(path, gpu, chunk=(20.0, 28.0), frame=(10.0, 14.0)):
    modes = {
        "3": {"fps_diffusion_only": chunk[0], "fps_diffusion_only_noprofile": chunk[1]},
        "1": {"fps_diffusion_only": frame[0], "fps_diffusion_only_noprofile": frame[1]},
    }
    path.write_text(json.dumps({"gpu": gpu, "modes": modes}))
    return path


def test_peer_block_takes_each_modes_better_run_and_checks_the_call(tmp_path):
    path = write_peer(tmp_path / "peer.json", "NVIDIA H200")
    block = peer_block(path, "NVIDIA H200", our_fps=56.0)
    assert block["self_forcing_chunkwise_fps"] == 28.0 and block["self_forcing_framewise_fps"] == 14.0
    assert block["ours_over_chunkwise"] == 2.0 and block["ours_over_framewise"] == 4.0
    assert block["same_call"] is True
    assert peer_block(path, "NVIDIA H100", 56.0)["same_call"] is False  # another card
    old = time.time() - 7200
    os.utime(path, (old, old))
    assert peer_block(path, "NVIDIA H200", 56.0)["same_call"] is False  # from an earlier call


def test_bench_records_the_mask_encoder_and_the_peer(tmp_path):
    peer = write_peer(tmp_path / "peer.json", "cpu")
    cfg = BenchConfig(device="cpu", frames=2, warmup=1, mask_encoder="tiny", peer=peer, out=tmp_path / "b")
    result = run_bench(cfg)
    saved = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert saved["mask_encoder"] == "tiny" == result["mask_encoder"]
    assert saved["peer"]["self_forcing_chunkwise_fps"] == 28.0
    assert saved["peer"]["same_call"] is False  # the peer file says "cpu", not this machine's card name
