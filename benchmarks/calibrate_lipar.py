"""Calibrate the `tiny` model's LIPAR thresholds on its VAE's latents.

    python benchmarks/calibrate_lipar.py --out benchmarks/results/lipar_calibration.json

Per-token short-term distance (trimmed mean, 3x3 median, as lipar/mask.py computes it) between
consecutive frames of held-out static-camera clips, split into background tokens (no object within
one token) and object-area tokens. A threshold is good when it prunes nearly all background tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.checkpoint import WEIGHTS_DIR, load_state  # noqa: E402
from engine.config import get_config  # noqa: E402
from engine.vae import build_vae  # noqa: E402
from lipar.mask import median3x3, token_distance  # noqa: E402
from train.dataset import HELDOUT_SEEDS_START, object_masks, render, sample_clip  # noqa: E402

TAUS = (0.005, 0.008, 0.01, 0.012, 0.02, 0.03, 0.05, 0.1, 0.15)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/lipar_calibration.json"))
    a = p.parse_args()
    torch.set_grad_enabled(False)
    cfg = get_config("tiny")
    vae = build_vae(cfg)
    load_state(vae, WEIGHTS_DIR / "tiny" / "vae.safetensors")
    vae.eval()
    background, objects = [], []
    seed, used = HELDOUT_SEEDS_START, 0
    while used < a.clips:
        params = sample_clip(seed, 8)
        seed += 1
        if not params.static_camera:
            continue
        used += 1
        video = render([params], 128)[0]
        z = vae.encode(video.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
        m = object_masks(params, 128, all_objects=True).float()[:, None]  # (T, 1, H, W)
        near = F.max_pool2d(F.max_pool2d(m, 16), 3, 1, 1)[:, 0] > 0  # (T, 8, 8): object within one token
        for t in range(1, len(z)):
            d = median3x3(token_distance(z[t], z[t - 1], 0.2))
            moving = near[t] | near[t - 1]
            background.append(d[~moving].flatten())
            objects.append(d[moving].flatten())
    bg, obj = torch.cat(background).numpy(), torch.cat(objects).numpy()
    result = {
        "command": "python " + " ".join(sys.argv),
        "clips": used,
        "background_quantiles": dict(zip(("p50", "p90", "p95", "p99"), np.percentile(bg, [50, 90, 95, 99]).tolist())),
        "object_area_quantiles": dict(zip(("p10", "p25", "p50", "p75"), np.percentile(obj, [10, 25, 50, 75]).tolist())),
        "by_tau": [
            {"tau_short": t, "background_pruned": float((bg < t).mean()), "object_area_pruned": float((obj < t).mean())}
            for t in TAUS
        ],
        "chosen": {"tau_short": cfg.lipar.tau_short, "tau_long": cfg.lipar.tau_long},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    for row in result["by_tau"]:
        print(row)


if __name__ == "__main__":
    main()
