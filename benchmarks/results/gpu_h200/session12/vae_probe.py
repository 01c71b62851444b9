"""Where the bench's "encode" stage went at 480x832 (H200, session 12): host preparation against the TAEHV
encoder, NCHW against channels-last, eager against CUDA graphs. Run from the repository root:
python3 benchmarks/results/gpu_h200/session12/vae_probe.py (an ad-hoc probe; its output is in ../README.md)."""

import json
import sys
import time

import cv2
import numpy as np
import torch

sys.path.insert(0, ".")
from engine.backends import GraphedCall  # noqa: E402
from engine.vae import TAEHV  # noqa: E402

DEV = "cuda"
res = {}


def gpu_ms(fn, n=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(n):
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return float(np.median(ts))


def host_ms(fn, n=20):
    fn()
    ts = []
    for _ in range(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts))


big = [np.random.randint(0, 255, (480, 832, 3), np.uint8) for _ in range(4)]
small = [np.random.randint(0, 255, (256, 256, 3), np.uint8) for _ in range(4)]
res["host_stack_upload_480x832"] = host_ms(lambda: torch.stack([torch.from_numpy(f) for f in big]).to(DEV))
res["host_cv2_resize_4x256_to_480x832"] = host_ms(
    lambda: [cv2.resize(f, (832, 480), interpolation=cv2.INTER_AREA) for f in small]
)


def gpu_resize():
    x = torch.stack([torch.from_numpy(f) for f in small]).to(DEV).permute(0, 3, 1, 2).float()
    y = torch.nn.functional.interpolate(x, (480, 832), mode="bilinear", antialias=True)
    return y.round().clamp(0, 255).to(torch.uint8)


res["gpu_resize_4x256_to_480x832"] = host_ms(gpu_resize)


def probe(fmt):
    vae = TAEHV().to(DEV, torch.bfloat16).eval()
    if fmt == "channels_last":
        vae = vae.to(memory_format=torch.channels_last)
    frames = torch.rand(1, 4, 3, 480, 832, device=DEV, dtype=torch.bfloat16) * 2 - 1
    lat = torch.randn(1, 16, 60, 104, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        vae.reset()
        vae.encode_step(frames)
        vae.decode_step(lat)
        res[f"encode_eager_{fmt}"] = gpu_ms(lambda: vae.encode_step(frames))
        res[f"decode_eager_{fmt}"] = gpu_ms(lambda: vae.decode_step(lat))
        res[f"encode_eager_{fmt}_host"] = host_ms(lambda: vae.encode_step(frames))
        enc = GraphedCall(vae.encode_step, lambda: vae.stream_memory("encoder"))
        dec = GraphedCall(vae.decode_step, lambda: vae.stream_memory("decoder"))
        vae.reset()
        enc(frames)
        dec(lat)
        res[f"encode_graph_{fmt}"] = gpu_ms(lambda: enc(frames))
        res[f"decode_graph_{fmt}"] = gpu_ms(lambda: dec(lat))
        res[f"encode_graphs_captured_{fmt}"] = len(enc.graphs)
    print(fmt, {k: round(v, 2) for k, v in res.items()}, flush=True)


for fmt in ("nchw", "channels_last"):
    try:
        probe(fmt)
    except Exception as e:  # channels-last fails in _run_causal (a view of the 5-D tensor)
        print(fmt, "failed", repr(e)[:300])
print(json.dumps(res, indent=1))
