#!/usr/bin/env bash
# Every CPU result file the README cites, regenerated in one go (about 30 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/calibrate_lipar.py --out benchmarks/results/lipar_calibration.json
python benchmarks/tiny_quality.py --out benchmarks/results
python benchmarks/v2v_anchor_sweep.py --out benchmarks/results
python benchmarks/lipar_quality.py --out benchmarks/results
python benchmarks/lipar_sweep.py --clips benchmarks/data/disc_seed11.mp4 benchmarks/data/vtest_path.mp4 \
    benchmarks/data/coins_triangle.mp4 --taus 0.005,0.01 0.008,0.016 0.012,0.024 --modes noisy-copy noise-aware \
    --out benchmarks/results/lipar_sweep
python benchmarks/lipar_drift_oracle.py --frames 48 --out benchmarks/results/lipar_drift_oracle.json
python benchmarks/lipar_drift_oracle.py --frames 104 --out benchmarks/results/lipar_drift_horizon.json
python app.py bench --device cpu --frames 24 --warmup 8 --timed-passes 4 --sweep-keep --out benchmarks/results/bench_tiny_cpu
python app.py bench --device cpu --source benchmarks/data/chromium_fake_camera.mp4 --frames 24 --warmup 8 \
    --out benchmarks/results/bench_tiny_cpu_fake_camera
python benchmarks/stream_latency.py
python -m pytest -q tests/e2e   # refreshes benchmarks/results/stream_page.png
