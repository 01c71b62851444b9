"""The CUDA-graph backend against eager execution on a GPU (skipped without CUDA). Where the MiniLM
package is not installed, MINILM_DIR names a folder of it (train/export_minilm.py)."""

import os

import numpy as np
import pytest
import torch

from engine.backends import CudaGraphRunner, GraphedCall, pad_to_bucket
from engine.generator import StreamingGenerator
from lipar.config import LiparConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_full_bucket_is_not_copied():
    x, pos, idx = torch.randn(1, 4, 8), torch.zeros(4, 3, dtype=torch.long), torch.arange(4)
    assert all(a is b for a, b in zip(pad_to_bucket(4, x, pos, idx), (x, pos, idx)))


@cuda
def test_graphed_call_replays_the_function_on_new_inputs():
    call = GraphedCall(lambda x: torch.nn.functional.silu(x) * 2 + 1)
    for _ in range(3):
        x = torch.randn(2, 5, device="cuda")
        out = call(x)
        torch.testing.assert_close(out, torch.nn.functional.silu(x) * 2 + 1)
    assert len(call.graphs) == 1
    kept = call(x)
    call(torch.zeros_like(x))
    torch.testing.assert_close(kept, torch.nn.functional.silu(x) * 2 + 1)  # not overwritten by a replay


@cuda
def test_pinned_upload_keeps_each_steps_frames_although_its_buffer_is_reused():
    from engine.upload import HostUpload

    upload = HostUpload(torch.device("cuda"))
    rng = np.random.default_rng(0)
    steps = [[rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(4)] for _ in range(3)]
    outs = [upload(frames) for frames in steps]  # no sync between: each fill waits for the last copy
    for frames, out in zip(steps, outs):
        np.testing.assert_array_equal(out.cpu().numpy(), np.stack(frames))
    assert len(upload._buffers) == 1
    view = steps[0][0][:, ::-1]  # a non-contiguous frame
    np.testing.assert_array_equal(upload([view]).cpu().numpy()[0], view)


@cuda
@torch.no_grad()
def test_graphed_stateful_taehv_stream_matches_eager_across_a_reset():
    """TAEHV's streaming memory in CUDA graphs: the first step eager, the capture's warm-up undone, the
    startup frames dropped again after a reset (a TAEHV release), a new stream's buffers captured anew."""
    from engine.vae import TAEHV

    torch.manual_seed(0)
    graphed, eager = TAEHV(drop_startup_frames=True).cuda().eval(), TAEHV(drop_startup_frames=True).cuda().eval()
    eager.load_state_dict(graphed.state_dict())
    encode = GraphedCall(graphed.encode_step, lambda: graphed.stream_memory("encoder"))
    decode = GraphedCall(graphed.decode_step, lambda: graphed.stream_memory("decoder"))
    video = torch.rand(1, 20, 3, 32, 48, device="cuda") * 2 - 1
    for steps in (5, 3):  # two streams
        graphed.reset()
        eager.reset()
        for i in range(steps):
            chunk = video[:, 4 * i : 4 * i + 4]
            z, z_ref = encode(chunk), eager.encode_step(chunk)
            torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-4)
            y, y_ref = decode(z_ref), eager.decode_step(z_ref)
            assert y.shape == y_ref.shape == ((1, 1 if i == 0 else 4, 3, 32, 48))
            torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    assert len(encode.graphs) == 1 and len(decode.graphs) == 1  # one shape each, the stale stream's graph replaced


@cuda
@pytest.mark.parametrize("lipar", [False, True])
def test_cuda_graphs_match_eager_on_a_stream(lipar):
    rng = np.random.default_rng(0)
    source = [np.clip(rng.integers(0, 255, (128, 128, 3)) + i, 0, 255).astype(np.uint8) for i in range(12)]
    outs = {}
    for backend in ("torch", "cudagraph"):
        gen = StreamingGenerator.from_pretrained(
            "tiny",
            device="cuda",
            backend=backend,
            lipar=LiparConfig(enabled=lipar),
            text_encoder_path=os.environ.get("MINILM_DIR"),
        )
        gen.set_prompt("a red ball moving right over a plain black background")
        gen.set_side_stream(backend == "cudagraph")  # eager in order against graphs with the decode beside
        outs[backend] = np.stack([gen.step(f).frames[-1] for f in source]).astype(np.float32)
    # bf16 both ways; the graphs replay the same kernels, so frames differ by rounding only. With LIPAR the
    # captures of every bucket happened over recovered K/V, which they must have left as they found them.
    # The decode beside the cache pass must read the block's clean tokens, not a later state.
    assert np.abs(outs["torch"] - outs["cudagraph"]).mean() < 1.0
    passes = {gen.recovery.stores_step_kv, True}  # the denoising steps' pass and the cache pass
    assert set(gen.runner.graphs) == {(size, p) for size in gen.runner.sizes for p in passes}


@cuda
@pytest.mark.parametrize("scaling", ["tensor", "row"])
def test_fp8_scaled_mm_computes_the_reference(scaling):
    from engine.fp8 import Float8Linear, fp8_matmul_reference, quantize

    torch.manual_seed(0)
    linear = torch.nn.Linear(1536, 8960).cuda().bfloat16()
    x = torch.randn(1, 1170, 1536, device="cuda", dtype=torch.bfloat16)  # a kept count, not a multiple of 16
    layer = Float8Linear(linear, scaling)
    out = layer(x)
    x_q, x_scale = quantize(x[0], scaling)
    want = fp8_matmul_reference(x_q, x_scale, layer.weight, layer.weight_scale, layer.bias)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 1170, 8960)
    assert ((out[0].float() - want).norm() / want.norm()).item() < 1e-2


@cuda
@pytest.mark.parametrize("backend", ["auto", "sdpa", "flash", "efficient", "cudnn", "split_kv", "cudnn_split"])
@pytest.mark.parametrize("lq", [98, 780, 1560])
def test_every_attention_backend_matches_the_reference_on_cache_views(backend, lq):
    from lipar.kernels import attention as attn

    g = torch.Generator("cuda").manual_seed(0)
    n, h, d = 1560, 12, 128
    cache = torch.randn(2, 1, 9 * n, h, d, device="cuda", generator=g).bfloat16()
    k, v = cache[0, :, : 8 * n], cache[1, :, : 8 * n]
    q = torch.randn(1, lq, h, d, device="cuda", generator=g).bfloat16()
    attn.set_attention_backend(backend)
    try:
        out = attn.attention(q, k, v)
    finally:
        attn.set_attention_backend(None)
    ref = attn.attention_reference(q.double(), k.double(), v.double())
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-2


@cuda
def test_cudnn_split_merges_chunks_exactly():
    from lipar.kernels import attention as attn

    g = torch.Generator("cuda").manual_seed(3)
    q, k, v = (torch.randn(1, n, 12, 128, device="cuda", generator=g).bfloat16() for n in (300, 3000, 3000))
    ref = attn.attention_reference(q.double(), k.double(), v.double())
    for splits in (1, 2, 5):
        out = attn.cudnn_split_attention(q, k, v, splits)
        assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-2, splits


@cuda
def test_compiled_blocks_in_cuda_graphs_match_eager():
    """The shipped runner (blocks compiled, replayed from graphs) against the eager model, at every
    kept count of a small frame: one dynamic-shape compile serves all buckets."""
    import dataclasses

    from engine.backends import EagerRunner
    from engine.config import CONFIGS, KVWindow
    from engine.dit import CausalDiT, init_weights
    from engine.kv_cache import RollingKVCache

    cfg = dataclasses.replace(
        CONFIGS["tiny"], dim=256, layers=2, heads=2, ffn_dim=512, text_len=8, window=KVWindow(sinks=1, m=2)
    )
    torch.manual_seed(0)
    model = CausalDiT(cfg)
    init_weights(model, seed=1)
    model = model.cuda().bfloat16().eval()
    n = 64
    cache = RollingKVCache(cfg.layers, 1, n, cfg.heads, cfg.head_dim, cfg.window, "cuda", torch.bfloat16)
    for t in (cache.k, cache.v, cache.k_pre):
        t.normal_()
    cache.frames = cfg.window.slots - 1
    cache.append()
    text_kv = model.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim, device="cuda"))
    timestep = torch.full((1, 1), 500.0, device="cuda")
    inputs = []
    for kept in (64, 33, 7):
        idx = torch.randperm(n, device="cuda")[:kept].sort().values
        pos = torch.stack([torch.full_like(idx, cache.frames), idx // 8, idx % 8], 1)
        x = torch.randn(1, kept, cfg.patch_dim, device="cuda", dtype=torch.bfloat16)
        inputs.append((x, pos, timestep, text_kv, cache.token_index(cache.current_slot, idx), False))
    written = torch.zeros(cache.k.shape[2], dtype=torch.bool, device="cuda")
    for args in inputs:
        written[args[4]] = True
    with torch.inference_mode():
        # the same calls in the same order: the current slot holds the same K/V before each
        want = [EagerRunner(model, cache)(*args).float() for args in inputs]  # before any compilation
        want_cache = [t.clone() for t in (cache.k, cache.v, cache.k_pre)]
        graphs = CudaGraphRunner(model, cache, compiled=True)
        got = [graphs(*args).float() for args in inputs]
    for g, w in zip(got, want):
        assert ((g - w).norm() / w.norm()).item() < 2e-2, g.shape
    # the first call captured every bucket, whose warm-ups wrote K/V all over the current slot: where no
    # call wrote, the cache is bit for bit what it was (in LIPAR, the pruned tokens' recovered K/V)
    for t, w in zip((cache.k, cache.v), want_cache[:2]):
        assert torch.equal(t[:, :, ~written], w[:, :, ~written])
    assert torch.equal(cache.k_pre, want_cache[2])  # no call here stores K before RoPE
    assert model.compiled and set(graphs.graphs) == {(size, False) for size in graphs.sizes}
