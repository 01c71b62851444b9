"""Where a latent frame's large copy kernels are launched from (eager run, so every kernel has its op).

    python benchmarks/probe_copies.py --source vtest_480x832.mp4 --out DIR

The graph-replayed profile (benchmarks/profile_frame.py) names kernels but not the code behind them: in
session 19 an `elementwise_kernel<128, 4>` copy ran 9 times per unpruned latent frame (0.25 ms each) and 24
times with LIPAR. Here the same frame runs eagerly (the blocks not compiled), under torch.profiler with
stacks and shapes, and the ops whose own device time is largest are written with their shapes and stacks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.bench import latent_chunks  # noqa: E402
from engine.generator import StreamingGenerator  # noqa: E402
from engine.video_io import read_frames  # noqa: E402
from lipar.config import LiparConfig  # noqa: E402

PROMPT = "people walking along a grey path past green grass"


def top_ops(gen: StreamingGenerator, chunks: list, top: int) -> list[dict]:
    gen.reset()
    gen.set_prompt(PROMPT)
    for chunk in chunks[:-1]:
        gen.step(chunk)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True, with_stack=True) as prof:
        gen.step(chunks[-1])
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages(group_by_input_shape=True, group_by_stack_n=6):
        dev = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if dev > 0:
            rows.append(
                {
                    "op": e.key,
                    "calls": e.count,
                    "self_device_ms": dev / 1000.0,
                    "per_call_ms": dev / 1000.0 / max(e.count, 1),
                    "shapes": str(e.input_shapes)[:300],
                    "stack": [s for s in e.stack if "site-packages" not in s][:6],
                }
            )
    rows.sort(key=lambda r: -r["per_call_ms"])
    return rows[:top]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--lipar-tau", default="0.012,0.024")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    gen = StreamingGenerator.from_pretrained(
        "wan2.1-1.3b",
        device="cuda",
        random_weights=True,
        size=(480, 832),
        lipar=LiparConfig(enabled=False),
        backend="torch",
    )
    need = gen.cfg.window.slots + 3
    clip = list(read_frames(a.source, limit=need * gen.frames_per_step))
    chunks = latent_chunks(clip, gen.frames_per_step)
    command = "python " + " ".join(sys.argv)
    result = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "command": command}
    with torch.inference_mode():
        result["unpruned"] = top_ops(gen, chunks, a.top)
        short, long = (float(x) for x in a.lipar_tau.split(","))
        gen.set_mask_encoder("tiny")
        gen.set_lipar(LiparConfig(tau_short=short, tau_long=long))
        result["lipar"] = top_ops(gen, chunks, a.top)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "probe_copies.json").write_text(json.dumps(result, indent=2))
    for name in ("unpruned", "lipar"):
        print(name)
        for r in result[name][:15]:
            print(f"  {r['per_call_ms']:.3f} ms x{r['calls']} {r['op']} {r['shapes'][:120]} {r['stack'][:2]}")


if __name__ == "__main__":
    main()
