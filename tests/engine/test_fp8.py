"""FP8 linear layers: the quantisation and the matmul reference that the CUDA path reproduces."""

import pytest
import torch
from torch import nn

from engine.fp8 import FP8_MAX, Float8Linear, fp8_matmul_reference, quantize, quantize_linears


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize("scaling", ["tensor", "row"])
def test_quantize_maps_the_largest_magnitude_to_fp8_max(scaling):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 32, generator=g) * torch.logspace(-2, 2, 7)[:, None]
    q, scale = quantize(x, scaling)
    assert q.dtype == torch.float8_e4m3fn
    assert scale.shape == (() if scaling == "tensor" else (7, 1))
    peaks = q.float().abs().amax() if scaling == "tensor" else q.float().abs().amax(dim=1)
    assert torch.all(peaks == FP8_MAX)
    # e4m3 keeps 3 mantissa bits: every value within 1/16 relative (or a subnormal step) of the input
    err = (q.float() * scale - x).abs()
    assert torch.all(err <= x.abs() / 16 + scale * 2.0**-9)


def test_zero_input_quantises_to_zero_without_nans():
    q, scale = quantize(torch.zeros(3, 16), "row")
    assert torch.all(q.float() == 0) and torch.isfinite(scale).all()


def test_row_scaling_keeps_small_rows_that_tensor_scaling_flushes():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, generator=g)
    x[0] *= 1e5  # one outlier row: with one scale for the tensor, the other row falls to subnormals
    err = {s: rel_err((lambda q, sc: q.float() * sc)(*quantize(x, s))[1], x[1]) for s in ("tensor", "row")}
    assert err["row"] < 0.05 and err["tensor"] > 0.3


@pytest.mark.parametrize("scaling", ["tensor", "row"])
def test_float8_linear_matches_its_linear_within_fp8_rounding(scaling):
    torch.manual_seed(2)
    linear = nn.Linear(64, 48)
    x = torch.randn(2, 5, 64)
    fp8 = Float8Linear(linear, scaling)
    out = fp8(x)
    assert out.shape == (2, 5, 48) and out.dtype == torch.float32
    assert rel_err(out, linear(x)) < 0.06
    x_q, x_scale = quantize(x.reshape(10, 64), scaling)
    want = fp8_matmul_reference(x_q, x_scale, fp8.weight, fp8.weight_scale, fp8.bias).reshape(2, 5, 48)
    torch.testing.assert_close(out, want)


def test_quantize_linears_replaces_the_block_projections_only(small_model):
    model = small_model.float()
    cfg = model.cfg
    x = torch.randn(1, 6, cfg.patch_dim)
    pos = torch.stack([torch.zeros(6, dtype=torch.long), torch.arange(6) // 3, torch.arange(6) % 3], 1)
    text_kv = model.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim))
    from engine.attention import SequenceAttention

    ref = model(x, pos, torch.full((1, 1), 500.0), text_kv, SequenceAttention(None))
    assert quantize_linears(model, "row") == 8 * cfg.layers
    assert isinstance(model.blocks[0].ffn[2], Float8Linear) and isinstance(model.head.head, nn.Linear)
    assert isinstance(model.blocks[0].cross_attn.k, nn.Linear)  # per-prompt K/V stay as they were
    out = model(x, pos, torch.full((1, 1), 500.0), text_kv, SequenceAttention(None))
    assert 0 < rel_err(out, ref) < 0.1


def test_unknown_scaling_is_refused():
    with pytest.raises(ValueError, match="unknown FP8 scaling 'block'; choose one of: tensor, row"):
        quantize(torch.ones(2, 2), "block")
