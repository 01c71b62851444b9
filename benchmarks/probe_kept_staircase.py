"""The DiT's time per latent frame at every kept count of a fine grid, and the graph sizes that would cost least.

    python benchmarks/probe_kept_staircase.py --buckets 64 --out DIR   # on the GPU machine: about 3 minutes

Why: LIPAR's kept counts are padded up to the next CUDA-graph size (`engine.backends.bucket_sizes`, 1/16 of a
frame). In session 21 (H200) ~890 kept tokens run as 896 cost what they cost as 975 (DiT 50.2 against 50.3 ms),
while the sweep's 780 run as 832 cost 2.5 ms more: the DiT's time is a staircase in the kept count (GEMM waves,
attention tiles), and where the sizes sit on it matters more than how many there are. This measures the
staircase: bench's kept-ratio sweep step (`engine.bench.forced_step_ms`: denoising steps, recovery and cache
pass under a random mask) at each size of a runner with `--buckets` sizes per frame (64: every 25 tokens at
480x832), wan2.1-1.3b with random weights, CUDA graphs as shipped. Then, for `--choose` sizes (default: as many
as ship), the sizes that minimise the mean padded time over kept counts spread evenly over the frame (`choose_sizes`,
exact by dynamic programming over the measured grid), beside the shipped sizes' mean.

Writes staircase.json (rows, both size sets and their mean ms) and staircase.png (ms against kept tokens,
the shipped and the chosen sizes marked). On a CPU it runs the eager runner (for testing; there is no padding).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.backends import GRAPH_BUCKETS, CudaGraphRunner, bucket_sizes  # noqa: E402
from engine.bench import card_name, forced_mask, forced_step_ms, steady_source_tokens, synthetic_clip  # noqa: E402
from engine.generator import StreamingGenerator  # noqa: E402
from lipar.config import LiparConfig  # noqa: E402


def padded_mean(tokens: list[int], ms: list[float], sizes: list[int]) -> float:
    """Mean time over kept counts 1..tokens[-1] spread evenly, each padded to the next of `sizes` (a subset of
    the measured `tokens`, the largest included) and costing that size's measured `ms`."""
    cost = dict(zip(tokens, ms))
    total, below = 0.0, 0
    for size in sorted(sizes):
        total += cost[size] * (size - below)
        below = size
    return total / below


def choose_sizes(tokens: list[int], ms: list[float], count: int) -> list[int]:
    """The `count` of the measured sizes (the largest always among them) whose `padded_mean` is least."""
    if not 1 <= count <= len(tokens):
        raise ValueError(f"choose between 1 and {len(tokens)} sizes, got {count}")
    n = len(tokens)
    edge = [0, *tokens]  # edge[i + 1] is size i's token count
    # best[k][i]: least summed cost of counts 1..tokens[i] with k sizes, the largest of them tokens[i]
    best = np.full((count + 1, n), np.inf)
    came = np.zeros((count + 1, n), dtype=int)
    for i in range(n):
        best[1][i] = ms[i] * edge[i + 1]
    for k in range(2, count + 1):
        for i in range(k - 1, n):
            options = [best[k - 1][p] + ms[i] * (edge[i + 1] - edge[p + 1]) for p in range(k - 2, i)]
            p = int(np.argmin(options))
            best[k][i], came[k][i] = options[p], p + k - 2
    sizes, i = [], n - 1
    for k in range(count, 0, -1):
        sizes.append(tokens[i])
        i = came[k][i]
    return sorted(sizes)


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot([r["tokens"] for r in rows], [r["ms"] for r in rows], ".-", lw=1, label="DiT per latent frame (p50)")
    for sizes, style, name in ((result["shipped"], ":", "shipped"), (result["chosen"], "--", "chosen")):
        for i, s in enumerate(sizes["sizes"]):
            label = f"{name} sizes: mean {sizes['mean_ms']:.2f} ms" if i == 0 else None
            ax.axvline(s, ls=style, lw=0.8, color="C1" if name == "shipped" else "C2", label=label)
    title = f"{result['model']} {result['size']}, {result['card']}, torch {result['torch']}"
    ax.set(xlabel="kept tokens (padded to the graph size)", ylabel="ms per latent frame", title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wan2.1-1.3b")
    p.add_argument("--size", default="480x832")
    p.add_argument("--buckets", type=int, default=64, help="graph sizes per frame to measure")
    p.add_argument("--choose", type=int, default=GRAPH_BUCKETS, help="how many sizes to choose")
    p.add_argument("--repeats", type=int, default=10, help="timed forced steps per size")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.size.split("x"))
    gen = StreamingGenerator.from_pretrained(
        a.model, device=a.device, random_weights=True, size=(h, w), lipar=LiparConfig(enabled=False)
    )
    frame = gen.tokens * gen.block
    if gen.backend == "cudagraph":
        gen.runner = CudaGraphRunner(gen.dit, gen.cache, buckets=a.buckets)  # before any capture
    grid = bucket_sizes(frame, a.buckets)
    rng = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        tokens = steady_source_tokens(gen, synthetic_clip(h, w, gen.frames_per_step))
        for count in grid:
            keep, pruned = forced_mask(gen, count / frame, rng)
            times = forced_step_ms(gen, tokens, keep, pruned, gen.prompt.kv, a.repeats)
            rows.append({"tokens": count, "ms": float(np.median(times)), "ms_p95": float(np.percentile(times, 95))})
            print(f"{count:5d} tokens  {rows[-1]['ms']:7.2f} ms", flush=True)
    measured, ms = [r["tokens"] for r in rows], [r["ms"] for r in rows]
    shipped = [s for s in bucket_sizes(frame) if s in measured]
    chosen = choose_sizes(measured, ms, min(a.choose, len(measured)))
    result = {
        "model": a.model,
        "size": a.size,
        "card": card_name(gen.device),
        "torch": torch.__version__,
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "rows": rows,
        # the shipped sizes that lie on this grid (all of them where --buckets is a multiple of GRAPH_BUCKETS)
        "shipped": {"sizes": shipped, "mean_ms": padded_mean(measured, ms, shipped) if shipped else None},
        "chosen": {"sizes": chosen, "mean_ms": padded_mean(measured, ms, chosen)},
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "staircase.json").write_text(json.dumps(result, indent=1))
    plot(result, a.out / "staircase.png")
    print(json.dumps({k: result[k] for k in ("shipped", "chosen")}))
    return result


if __name__ == "__main__":
    main()
