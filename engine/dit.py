"""The causal video DiT (Wan2.1 block layout), run over any subset of a frame's tokens.

Parameter names and shapes follow Wan2.1-T2V-1.3B (shared/wan2.1-1.3b.md), so a Self-Forcing
checkpoint loads key for key. The model knows nothing of the noise schedule or of the cache: the
caller hands `forward` the tokens it wants computed, their true (t, h, w) positions, a timestep
per token, the prompt's cross-attention K/V and one `SelfAttention` object that decides what the
queries see (a masked sequence in training, the rolling cache at inference).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import ModelConfig
from engine.rope import Rope3D, apply_rope


class SelfAttention(Protocol):
    """Given the current tokens' q, k (after RoPE), v and k_pre (before RoPE), each (B, n, H, D),
    return the attention output (B, n, H, D). Implementations live in engine/attention.py."""

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor, k_pre: Tensor) -> Tensor: ...


def patchify(latent: Tensor) -> Tensor:
    """(B, C, h, w) -> tokens (B, N, C*4), token layout (C, 2, 2), row-major token grid."""
    b, c, h, w = latent.shape
    x = latent.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # (B, h/2, w/2, C, 2, 2)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpatchify(tokens: Tensor, h: int, w: int) -> Tensor:
    """Inverse of `patchify`: tokens (B, N, C*4) -> (B, C, h, w)."""
    b, _, d = tokens.shape
    c = d // 4
    x = tokens.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def sinusoidal_embedding(timestep: Tensor, dim: int) -> Tensor:
    """Wan's 1-D sinusoid: [cos, sin] of t * 10000^(-i/half), in float32 (fp32 island)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, device=timestep.device, dtype=torch.float64) / half)
    angles = timestep.to(torch.float64)[..., None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).float()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class AttentionProjections(nn.Module):
    """q, k, v, o projections with QK RMSNorm over the full width (before the head split)."""

    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The q, k and v projections of x (B, n, dim). Three products, not one joined (3*dim) product: in
        the compiled block the joined one measured slower (benchmarks/probe_qkv_fusion.py --block, H200:
        30 layers' input halves 3.27 ms against 2.04 at 1,560 tokens, 2.06 against 1.51 at 890), although
        alone its GEMM is faster (1.10x at 1,560 tokens, 1.44x at 890). The probe times variants through here."""
        return self.q(x), self.k(x), self.v(x)

    def split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1))  # (B, n, H, D)


class DiTBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = AttentionProjections(dim, cfg.heads, cfg.eps)
        self.norm3 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=True)
        self.cross_attn = AttentionProjections(dim, cfg.heads, cfg.eps)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def text_kv(self, text: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention K/V of the embedded text states (B, Lt, dim), computed once per prompt. Copies,
        not views of the projections: the CUDA-graph runner holds copies, and compiled blocks recompile
        when an input turns from a view into a tensor of its own (torch.compile guards on it)."""
        ca = self.cross_attn
        return ca.split(ca.norm_k(ca.k(text))).clone(), ca.split(ca.v(text)).clone()

    def forward(
        self,
        x: Tensor,  # (B, n, dim)
        e: Tensor,  # (B, n|1, 6, dim) float32 projected timestep
        cos: Tensor,  # (n, D/2)
        sin: Tensor,
        text_kv: tuple[Tensor, Tensor],  # each (B, Lt, H, D)
        layer: int,
        attn: SelfAttention,
    ) -> Tensor:
        # the two halves around the self-attention are pure functions of tensors, so
        # `CausalDiT.compile_blocks` can fuse their elementwise work; the attention writes the cache
        q, k, v, k_pre = self.attention_inputs(x, e, cos, sin)
        out = attn(layer, q, k, v, k_pre)  # (B, n, H, D)
        return self.after_attention(x, out, e, text_kv)

    def attention_inputs(self, x: Tensor, e: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, ...]:
        """Self-attention q, k (after RoPE), v and k_pre (before RoPE), each (B, n, H, D)."""
        shift, scale = (self.modulation[:, :2].float() + e[..., :2, :]).unbind(-2)  # modulation in fp32
        sa = self.self_attn
        y = (self.norm1(x).float() * (1 + scale) + shift).to(x.dtype)
        q, k, v = sa.qkv(y)
        q = apply_rope(sa.split(sa.norm_q(q)), cos, sin)
        k_pre = sa.split(sa.norm_k(k))
        return q, apply_rope(k_pre, cos, sin), sa.split(v), k_pre

    def after_attention(self, x: Tensor, out: Tensor, e: Tensor, text_kv: tuple[Tensor, Tensor]) -> Tensor:
        """Self-attention output projection and gate, cross-attention to the prompt, feed-forward."""
        gate, shift, scale, ffn_gate = (self.modulation[:, 2:].float() + e[..., 2:, :]).unbind(-2)
        x = x + (self.self_attn.o(out.flatten(-2)).float() * gate).to(x.dtype)
        ca = self.cross_attn
        q = ca.split(ca.norm_q(ca.q(self.norm3(x))))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), text_kv[0].transpose(1, 2), text_kv[1].transpose(1, 2))
        x = x + ca.o(out.transpose(1, 2).flatten(-2))
        y = (self.norm2(x).float() * (1 + scale) + shift).to(x.dtype)
        return x + (self.ffn(y).float() * ffn_gate).to(x.dtype)


class Head(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.patch_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        shift, scale = (self.modulation.float() + t_emb.float()[..., None, :]).unbind(-2)
        return self.head((self.norm(x).float() * (1 + scale) + shift).to(x.dtype))


class CausalDiT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.latent_channels, dim, kernel_size=cfg.patch, stride=cfg.patch)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.layers))
        self.head = Head(cfg)
        self.rope = Rope3D(cfg.head_dim, cfg.rope_theta)
        self.compiled = False  # see compile_blocks
        c = cfg.latent_channels
        # The head emits patches as (1, 2, 2, C) (Wan's unpatchify order); tokens enter as (C, 1, 2, 2).
        self.register_buffer("head_to_token", torch.arange(4 * c).reshape(4, c).t().reshape(-1), persistent=False)

    def text_kv(self, text_states: Tensor) -> list[tuple[Tensor, Tensor]]:
        """text_states (B, Lt, text_dim) -> per-layer cross-attention (K, V), each (B, Lt, H, D)."""
        text = self.text_embedding(text_states.to(self.patch_embedding.weight.dtype))
        return [block.text_kv(text) for block in self.blocks]

    def forward(
        self,
        x: Tensor,  # (B, n, C*4) noisy latent tokens, any subset of positions
        pos: Tensor,  # (n, 3) int64 true (t, h, w) of each token
        timestep: Tensor,  # (B, n) or (B, 1): sigma * 1000 per token
        text_kv: list[tuple[Tensor, Tensor]],
        attn: SelfAttention,
    ) -> Tensor:
        """Velocity (eps - x0) at the given tokens, (B, n, C*4) in the input token layout."""
        cos, sin = self.rope.cos_sin(pos)
        return self.forward_rotary(x, cos, sin, timestep, text_kv, attn)

    def forward_rotary(
        self, x: Tensor, cos: Tensor, sin: Tensor, timestep: Tensor, text_kv: list, attn: SelfAttention
    ) -> Tensor:
        """`forward` with the tokens' RoPE tables (n, D/2) given instead of their positions: exported
        graphs take cos/sin as inputs, since TensorRT has no float64 for the angles of long streams."""
        w = self.patch_embedding
        h = F.linear(x.to(w.weight.dtype), w.weight.flatten(1), w.bias)  # (B, n, dim)
        t_emb = self.time_embedding(sinusoidal_embedding(timestep, self.cfg.freq_dim).to(h.dtype))
        e = self.time_projection(t_emb).float().unflatten(-1, (6, self.cfg.dim))  # (B, n|1, 6, dim)
        for i, block in enumerate(self.blocks):
            h = block(h, e, cos, sin, text_kv[i], i, attn)
        out = self.head(h, t_emb)  # (B, n, 4*C) as (2, 2, C)
        return out[..., self.head_to_token]

    def compile_blocks(self) -> None:
        """Fuse the elementwise work around each block's matmuls (LayerNorm + modulation, QK RMSNorm +
        RoPE, gates + residuals, bias + GELU) with torch.compile, block by block: every block runs
        the same code, so it compiles once; shapes are dynamic (one kernel set for every kept count).
        The self-attention between the two halves stays outside (it writes the KV cache). Idempotent."""
        if self.compiled:
            return
        self.compiled = True
        for block in self.blocks:
            block.attention_inputs = torch.compile(block.attention_inputs, dynamic=True, fullgraph=True)
            block.after_attention = torch.compile(block.after_attention, dynamic=True, fullgraph=True)

    def flops_per_token(self, context: int, text_len: int) -> float:
        """Matmul FLOPs for one token attending to `context` keys (for the roofline floor)."""
        c = self.cfg
        proj = 2 * c.dim * c.dim * 6  # self q, k, v, o and cross q, o (the prompt's K/V are cached)
        attn = 2 * 2 * c.dim * (context + text_len)
        ffn = 2 * 2 * c.dim * c.ffn_dim
        return c.layers * (proj + attn + ffn) + 2 * c.dim * c.patch_dim * 2


def init_weights(model: CausalDiT, seed: int = 0) -> None:
    """Deterministic init for training from scratch or random-weight timing."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() >= 2 and "modulation" not in name:
            fan_in = math.prod(p.shape[1:])
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        elif name.endswith("bias"):
            with torch.no_grad():
                p.zero_()
    with torch.no_grad():  # start each residual branch and the head near zero (adaLN-zero style)
        model.head.head.weight.mul_(0.1)
        for block in model.blocks:
            block.self_attn.o.weight.mul_(0.1)
            block.ffn[2].weight.mul_(0.1)
