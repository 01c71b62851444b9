"""Host stalls in a GPU step: per-step latency and stages over a stream, the cost of a full gc.collect(),
and a torch.profiler table of the host side over a few steps.

    python benchmarks/step_stalls.py CLIP --out benchmarks/results/gpu_h200/step_stalls.json

`wan2.1-1.3b` (random weights, timing only) at 480x832, video-to-video on CLIP, LIPAR off. Session 12
found with it that the bench's bimodal latency (86 vs 108 ms) came from the host, in the first stage of
a step, where the GPU waits on it: the source upload (engine/upload.py now reuses a pinned buffer) and,
for full collections, the cyclic collector (engine.backends.capture freezes what is alive after a capture).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.bench import PROMPT  # noqa: E402
from engine.generator import StreamingGenerator  # noqa: E402
from engine.video_io import read_frames  # noqa: E402
from lipar.config import LiparConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clip")
    p.add_argument("--steps", type=int, default=40, help="steps timed after 10 warm-up steps")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    gen = StreamingGenerator.from_pretrained(
        "wan2.1-1.3b", device="cuda", random_weights=True, size=(480, 832), lipar=LiparConfig(enabled=False)
    )
    n = gen.frames_per_step
    frames = list(read_frames(a.clip))
    chunks = [frames[(i * n) % (len(frames) - n) :][:n] for i in range(10 + a.steps + 4)]
    gen.set_prompt(PROMPT)
    steps = []
    for i, chunk in enumerate(chunks[: 10 + a.steps]):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = gen.step(chunk)
        if i >= 10:
            steps.append({"ms": (time.perf_counter() - start) * 1e3, "stages_ms": out.stats["stages_ms"]})
    collect_ms = []
    for _ in range(3):
        start = time.perf_counter()
        gc.collect()
        collect_ms.append((time.perf_counter() - start) * 1e3)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for chunk in chunks[10 + a.steps :]:
            gen.step(chunk)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    ms = np.array([s["ms"] for s in steps])
    result = {
        "command": "python " + " ".join(sys.argv),
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "gc_frozen_objects": gc.get_freeze_count(),
        "step_ms_p50": float(np.median(ms)),
        "step_ms_p95": float(np.percentile(ms, 95)),
        "step_ms_max": float(ms.max()),
        "steps_over_1.1x_p50": int((ms > 1.1 * np.median(ms)).sum()),
        "full_gc_collect_ms": collect_ms,
        "steps": steps,
        "host_profile_table": table,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print({k: v for k, v in result.items() if k not in ("steps", "host_profile_table")})
    print(table)


if __name__ == "__main__":
    main()
