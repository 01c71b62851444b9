"""Split-KV attention (flash-decoding style) for few queries against a long KV.

With LIPAR the current frame's queries are only the kept tokens (25-100% of a frame) while the keys
span the whole context window (sinks + m frames + the current frame). A flash-attention kernel
launches one program per (query block, batch, head): at 25% kept that is too few programs to fill the
GPU, so the speed-up stays well below 4x (DESIGN.md §4.6). Here the keys are also split into chunks,
one program per (query block, batch * head, chunk), each writing a partial output and its
log-sum-exp; a second small kernel merges the chunks.

`attention()` is the entry point: for each shape it runs the kernel measured fastest on this card
at first use (`tuned_choice`: SDPA's own choice, flash forced, this split-KV kernel, or stock cuDNN
over KV chunks merged by this file's merge kernel, `merge_partials`).

Layouts follow the KV cache: q (B, Lq, H, D), k/v (B, Lk, H, D), any strides (cache views).
"""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from lipar.kernels import use_triton

_LOG2E = 1.4426950408889634
log = logging.getLogger(__name__)


def attention_reference(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """q (B, Lq, H, D), k/v (B, Lk, H, D), key_mask (Lk,) bool True = attend -> (B, Lq, H, D)."""
    mask = None if key_mask is None else key_mask[None, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


# SDPA's own backends, each forced by `sdpa_kernel` ("sdpa" lets PyTorch pick: cuDNN on an H200).
STOCK_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}
# "auto": time the candidates on first use of each shape and keep the fastest correct one.
BACKENDS = ("auto", "sdpa", *STOCK_BACKENDS, "split_kv", "cudnn_split")
CUDNN_SPLITS = (2, 3, 4, 5, 6, 8, 10)  # KV chunk counts the tuner tries for cudnn_split
MIN_CHUNK = 256  # keys per chunk at least (a bound on the candidates, not a measured optimum)
TUNE_REPEATS = 5
TUNE_CALLS = 4  # calls per timed graph replay
TUNE_TOLERANCE = 2e-2  # a candidate's relative difference to SDPA above this is wrong, not rounding
_forced: str | None = None
_tuned: dict[tuple, tuple[str, int]] = {}  # (backend, shapes, dtype, device) -> (kernel, KV splits)


def set_attention_backend(name: str | None) -> None:
    """Force one backend for every unmasked 16-bit CUDA call (benchmarks), or None for "auto"."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    global _forced
    _forced = name


def choose_backend(lq: int, head_dim: int, dtype: torch.dtype, on_cuda: bool, masked: bool) -> str:
    """Which backend serves softmax(q k^T) v for `lq` queries of `head_dim` (any key count).

    The Triton switch (`lipar.kernels.set_triton("attention", True)`) sends every CUDA call to the
    split-KV kernel. Otherwise CPU, masked (the `exclude` recovery mode) and float32 calls go to SDPA, a
    forced backend is used as forced, and the rest are tuned ("auto", see `tuned_choice`)."""
    if not on_cuda:
        return "sdpa"
    if use_triton("attention"):
        return "split_kv"
    if masked or dtype not in (torch.bfloat16, torch.float16):
        return "sdpa"
    return _forced or "auto"


def candidates(backend: str, lk: int, head_dim: int) -> list[tuple[str, int]]:
    """(kernel, KV splits) pairs the tuner times for `backend`: "auto" tries SDPA's choice, flash
    forced (its own split heuristic wins at a few hundred queries), the Triton split-KV kernel and
    cuDNN over KV chunks; "cudnn_split" tries its chunk counts only."""
    splits = [("cudnn_split", n) for n in CUDNN_SPLITS if lk % n == 0 and lk // n >= MIN_CHUNK]
    if head_dim & (head_dim - 1):  # the merge kernel reads rows of a power-of-two head dim
        splits = []
    if backend == "cudnn_split":
        return splits
    return [("sdpa", 1), ("flash", 1), ("split_kv", 0), *splits]


def pick_fastest(results: dict[tuple[str, int], tuple[float, float] | None]) -> tuple[str, int]:
    """The fastest candidate whose output matched SDPA's; results: candidate -> (ms, rel err) or None
    where it failed. Raises if none qualifies."""
    ok = {c: r[0] for c, r in results.items() if r is not None and r[1] < TUNE_TOLERANCE}
    if not ok:
        raise RuntimeError(f"no attention candidate ran correctly: {results}")
    return min(ok, key=ok.get)


def _run(choice: tuple[str, int], q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Every kernel's output is laid out as SDPA's, (B, Lq, H, D) viewed from (B, H, Lq, D): compiled
    blocks take it as an input, and a change of layout or view-ness between calls would recompile them."""
    name, splits = choice
    if name == "sdpa":
        return attention_reference(q, k, v)
    if name in ("split_kv", "cudnn_split"):
        b, lq, h, d = q.shape
        out = torch.empty(b, h, lq, d, device=q.device, dtype=q.dtype).transpose(1, 2)
        if name == "split_kv":
            return split_kv_attention(q, k, v, out=out)
        return cudnn_split_attention(q, k, v, splits, out)
    with sdpa_kernel(STOCK_BACKENDS[name]):
        return attention_reference(q, k, v)


def _time_ms(fn) -> float:
    """Median ms of one call as the CUDA-graph runner runs it: TUNE_CALLS calls captured in a graph
    and replayed. Timed eagerly one call at a time, the host's launch work counted against the
    candidates of several kernels (cuDNN over KV chunks: a copy, the attention, a merge): on an H200
    at 780 queries the tuner saw 0.23-0.25 ms for them where the graph-free benchmark's back-to-back
    calls took 0.157 (benchmarks/results/gpu_h200/session14/), and kept plain cuDNN (0.170)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(TUNE_CALLS):
            fn()
    graph.replay()
    times = []
    for _ in range(TUNE_REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / TUNE_CALLS)
    return sorted(times)[len(times) // 2]


def tuned_choice(backend: str, q: Tensor, k: Tensor, v: Tensor) -> tuple[str, int]:
    """The kernel for this call's shapes: measured once per shape on this card (the winner depends
    on the multiprocessor count and on how the programs fill its waves), then looked up. Never
    measured inside a CUDA-graph capture: the graphs' warm-up runs come first and tune every shape."""
    if backend not in ("auto", "cudnn_split"):
        return backend, 1
    key = (backend, tuple(q.shape), tuple(k.shape), q.dtype, q.device)
    if key in _tuned:
        return _tuned[key]
    options = candidates(backend, k.shape[1], q.shape[-1])
    if torch.cuda.is_current_stream_capturing():
        log.warning("attention shape %s first seen inside a graph capture: untuned %s", key[1:3], options[0])
        return options[0]
    ref = attention_reference(q, k, v).float()
    results: dict[tuple[str, int], tuple[float, float] | None] = {}
    for choice in options:
        try:
            out = _run(choice, q, k, v).float()
            err = ((out - ref).norm() / ref.norm()).item()
            results[choice] = (_time_ms(lambda c=choice: _run(c, q, k, v)), err)
        except RuntimeError as e:  # a kernel that cannot take these operands is not a candidate
            log.debug("attention candidate %s failed: %s", choice, e)
            results[choice] = None
    best = _tuned[key] = pick_fastest(results)
    timed = ", ".join(f"{c[0]}{c[1] if c[0] == 'cudnn_split' else ''} {r[0]:.3f}" for c, r in results.items() if r)
    log.info("attention Lq=%d Lk=%d: %s (ms: %s)", q.shape[1], k.shape[1], best, timed)
    return best


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Softmax(q k^T / sqrt(D)) v with the shapes of `attention_reference`, by `choose_backend`."""
    on_cuda = q.is_cuda and k.is_cuda and v.is_cuda
    backend = choose_backend(q.shape[1], q.shape[-1], q.dtype, on_cuda, key_mask is not None)
    if backend == "split_kv":
        return split_kv_attention(q, k, v, key_mask)
    if backend == "sdpa":
        return attention_reference(q, k, v, key_mask)
    return _run(tuned_choice(backend, q, k, v), q, k, v)


def cudnn_split_attention(q: Tensor, k: Tensor, v: Tensor, splits: int, out: Tensor | None = None) -> Tensor:
    """Stock cuDNN attention over `splits` KV chunks at once (the chunks as its batch), merged by
    `merge_partials` from each chunk's log-sum-exp. On an H200 stock cuDNN takes one wave's time
    (0.168 ms) for up to 1,365 queries x 12 heads against 12,480 keys and two for 1,560
    (benchmarks/results/gpu_h200/kernels.json): few, long programs. Chunks make more, shorter ones. q (1, Lq, H, D),
    k/v (1, Lk, H, D) views of the cache with Lk a multiple of `splits`; written into `out` (any strides)
    if given."""
    b, lq, h, d = q.shape
    lk = k.shape[1]
    if b != 1 or lk % splits:
        raise ValueError(f"cudnn_split needs batch 1 and keys ({lk}) divisible by the splits ({splits})")
    chunk = lk // splits
    # (S, H, Lq, D), the chunks' shared queries as a stride-0 batch: cuDNN reads them in place (H200,
    # cuDNN in torch 2.11: bit-identical output, same kernel time), where a contiguous copy of the S
    # copies cost 0.022 of 0.162 ms at 890 queries and 6 splits, ~2.6 ms of a LIPAR frame's 120 calls
    # (gpu_h200/session18/probe_attn.json); the tuner still checks every candidate against SDPA
    qs = q[0].transpose(0, 1).expand(splits, h, lq, d)
    ks = k[0].unflatten(0, (splits, chunk)).transpose(1, 2)  # (S, H, chunk, D), views of the cache
    vs = v[0].unflatten(0, (splits, chunk)).transpose(1, 2)
    o_part, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(qs, ks, vs, None, True)[:2]
    # cuDNN lays its output out after q's strides, so with stride-0 queries o_part is not contiguous:
    # the merge reads it in place (a .contiguous() here was a copy of S x the output per call)
    out = torch.empty_like(q) if out is None else out
    merge_partials(o_part, lse.reshape(splits, h, lq), out, lse_to_log2=_LOG2E)  # cuDNN's LSE: natural log
    return out


def merge_partials(o_part: Tensor, lse: Tensor, out: Tensor, lse_to_log2: float) -> Tensor:
    """Merge per-chunk attention outputs by their log-sum-exp into `out`.

    o_part (S, B*H, Lq, D) and lse (S, B*H, Lq), any strides: chunk s's softmax-normalised output and
    the log-sum-exp of its scores, in units that `lse_to_log2` turns into log2 (1 for log2, log2(e) for
    natural log). out (B, Lq, H, D), any strides. `merge_reference` is the same in PyTorch."""
    splits, bh, lq = o_part.shape[:3]
    block_m = 32
    _combine_kernel[(triton.cdiv(lq, block_m), bh)](
        o_part, lse, out, *o_part.stride(), *lse.stride(), *out.stride(), lq, out.shape[2], splits,
        LSE_TO_LOG2=lse_to_log2, HEAD_DIM=out.shape[-1], BLOCK_D=triton.next_power_of_2(out.shape[-1]),
        BLOCK_M=block_m, num_warps=4,
    )  # fmt: skip
    return out


def merge_reference(o_part: Tensor, lse: Tensor, lse_to_log2: float, heads: int) -> Tensor:
    """`merge_partials` in PyTorch: (S, B*H, Lq, D), (S, B*H, Lq) -> (B, Lq, H, D) in o_part's dtype."""
    weights = torch.softmax(lse.double() * lse_to_log2 * math.log(2.0), dim=0)  # over the chunks
    merged = (weights[..., None] * o_part.double()).sum(0)  # (B*H, Lq, D)
    return merged.unflatten(0, (-1, heads)).transpose(1, 2).to(o_part.dtype)


def split_count(programs: int, kv_blocks: int, num_sms: int, max_splits: int = 16) -> int:
    """How many KV chunks: the fewest that fill the GPU's waves well (FlashAttention's heuristic).

    `programs` is the count of (query block, batch * head) programs without splitting, `kv_blocks`
    the count of BLOCK_N key blocks. A wave is one program per multiprocessor; a last wave that is
    mostly empty wastes the whole wave, so efficiency = waves / ceil(waves).
    """
    if programs <= 0 or kv_blocks <= 0:
        return 1
    limit = max(1, min(max_splits, kv_blocks))
    efficiency = []
    for splits in range(1, limit + 1):
        waves = programs * splits / num_sms
        efficiency.append(waves / math.ceil(waves))
    best = max(efficiency)
    return next(s for s, e in enumerate(efficiency, start=1) if e >= 0.85 * best)


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@triton.jit
def _split_kv_kernel(
    Q,
    K,
    V,
    KEY_MASK,
    OUT,
    O_PART,
    LSE,
    sq_b,
    sq_l,
    sq_h,
    sq_d,
    sk_b,
    sk_l,
    sk_h,
    sk_d,
    sv_b,
    sv_l,
    sv_h,
    sv_d,
    so_b,
    so_l,
    so_h,
    so_d,
    Lq,
    Lk,
    H,
    chunk,
    scale_log2,
    HAS_MASK: tl.constexpr,
    DIRECT: tl.constexpr,
    PRECISION: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    split = tl.program_id(2)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < Lq
    d_ok = (offs_d < HEAD_DIM) | (BLOCK_D == HEAD_DIM)  # constant-true for a power-of-two head dim

    q = tl.load(
        Q + b * sq_b + h * sq_h + offs_m[:, None].to(tl.int64) * sq_l + offs_d[None, :] * sq_d,
        mask=m_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    k_base = K + b * sk_b + h * sk_h
    v_base = V + b * sv_b + h * sv_h
    start = split * chunk
    end = tl.minimum(start + chunk, Lk)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < end
        n64 = offs_n.to(tl.int64)
        # K rows as stored (head dim innermost, 16-byte loads); the dot takes their transpose
        k = tl.load(
            k_base + n64[:, None] * sk_l + offs_d[None, :] * sk_d,
            mask=n_ok[:, None] & d_ok[None, :],
            other=0.0,
        )  # (BLOCK_N, BLOCK_D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2  # (BLOCK_M, BLOCK_N), log2 units
        if HAS_MASK:
            n_ok = n_ok & (tl.load(KEY_MASK + offs_n, mask=n_ok, other=0) != 0)
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # rows with no valid key yet keep m = -inf; subtract 0 there so exp2 gives 0, not NaN
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        vt = tl.load(
            v_base + n64[:, None] * sv_l + offs_d[None, :] * sv_d,
            mask=n_ok[:, None] & d_ok[None, :],
            other=0.0,
        )  # (BLOCK_N, BLOCK_D)
        acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt, input_precision=PRECISION)
        m_i = m_new

    empty = l_i == 0.0
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    out_mask = m_ok[:, None] & d_ok[None, :]
    if DIRECT:
        dst = OUT + b * so_b + h * so_h + offs_m[:, None].to(tl.int64) * so_l + offs_d[None, :] * so_d
        tl.store(dst, o.to(OUT.dtype.element_ty), mask=out_mask)
    else:
        # partials are contiguous (splits, B*H, Lq, BLOCK_D) float32; lse (splits, B*H, Lq) in log2 units
        row = (split * tl.num_programs(1) + pid_bh).to(tl.int64) * Lq + offs_m
        tl.store(O_PART + row[:, None] * BLOCK_D + offs_d[None, :], o, mask=out_mask)
        tl.store(LSE + row, tl.where(empty, float("-inf"), m_i + tl.log2(l_i)), mask=m_ok)


@triton.jit
def _combine_kernel(
    O_PART,
    LSE,
    OUT,
    sp_s,
    sp_bh,
    sp_l,
    sp_d,
    sl_s,
    sl_bh,
    sl_l,
    so_b,
    so_l,
    so_h,
    so_d,
    Lq,
    H,
    splits,
    LSE_TO_LOG2: tl.constexpr,  # the factor from LSE's units to log2 (1: already log2; log2(e): natural log)
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < Lq
    out_mask = m_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    lse_rows = LSE + pid_bh * sl_bh + offs_m.to(tl.int64) * sl_l
    o_rows = O_PART + pid_bh * sp_bh + offs_m[:, None].to(tl.int64) * sp_l + offs_d[None, :] * sp_d

    lse_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    for s in range(splits):
        lse_max = tl.maximum(lse_max, tl.load(lse_rows + s * sl_s, mask=m_ok, other=float("-inf")) * LSE_TO_LOG2)
    lse_safe = tl.where(lse_max == float("-inf"), 0.0, lse_max)
    denom = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for s in range(splits):
        w = tl.exp2(tl.load(lse_rows + s * sl_s, mask=m_ok, other=float("-inf")) * LSE_TO_LOG2 - lse_safe)
        o = tl.load(o_rows + s * sp_s, mask=out_mask, other=0.0)
        denom += w
        acc += w[:, None] * o
    o = acc / tl.where(denom == 0.0, 1.0, denom)[:, None]
    dst = OUT + b * so_b + h * so_h + offs_m[:, None].to(tl.int64) * so_l + offs_d[None, :] * so_d
    tl.store(dst, o.to(OUT.dtype.element_ty), mask=out_mask)


def split_kv_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None = None,
    num_splits: int | None = None,
    block_m: int | None = None,
    block_n: int = 64,
    num_warps: int | None = None,
    num_stages: int = 3,
    out: Tensor | None = None,
) -> Tensor:
    """Triton split-KV attention; same contract as `attention_reference`.

    Writes into `out` (B, Lq, H, D), any strides, if given, else into a new contiguous tensor.
    Queries whose keys are all masked get 0 (SDPA gives NaN). `num_splits` None picks the count
    with `split_count`; the tiling arguments exist for the benchmark's sweep.
    """
    b, lq, h, d = q.shape
    lk = k.shape[1]
    if out is None:
        out = torch.empty(b, lq, h, d, device=q.device, dtype=q.dtype)
    if out.numel() == 0:
        return out
    block_m = block_m or (128 if lq >= 512 else 64)
    num_warps = num_warps or (8 if block_m >= 128 else 4)
    block_d = triton.next_power_of_2(d)
    m_blocks = triton.cdiv(lq, block_m)
    kv_blocks = triton.cdiv(lk, block_n)
    if num_splits is None:
        num_splits = split_count(m_blocks * b * h, kv_blocks, _num_sms(q.device.index or 0)) if q.is_cuda else 1
    # chunks of whole key blocks; recount so that no chunk is empty
    chunk = triton.cdiv(kv_blocks, max(1, min(num_splits, kv_blocks))) * block_n
    splits = triton.cdiv(lk, chunk) if lk else 1
    direct = splits == 1
    if direct:
        o_part = lse = out  # unused by the kernel
    else:
        o_part = torch.empty(splits, b * h, lq, block_d, device=q.device, dtype=torch.float32)
        lse = torch.empty(splits, b * h, lq, device=q.device, dtype=torch.float32)
    mask = key_mask if key_mask is not None else out
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    _split_kv_kernel[(m_blocks, b * h, splits)](
        q,
        k,
        v,
        mask,
        out,
        o_part,
        lse,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *out.stride(),
        lq,
        lk,
        h,
        max(chunk, 1),
        _LOG2E / math.sqrt(d),
        HAS_MASK=key_mask is not None,
        DIRECT=direct,
        PRECISION=precision,
        HEAD_DIM=d,
        BLOCK_D=block_d,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    if not direct:
        merge_partials(o_part, lse, out, lse_to_log2=1.0)  # the split-KV kernel writes log2 units
    return out
