#!/usr/bin/env bash
# Every GPU result the issues ask for, in one device call (results: benchmarks/results/gpu_h200/).
# Usage on the GPU machine: bash benchmarks/gpu_evidence.sh OUT_DIR [MINILM_DIR]   (at most 8 minutes)
# MINILM_DIR: a folder from `python -m train.export_minilm` where the text-encoder package is absent.
set -o pipefail
OUT=${1:?output folder}
TEXT=${2:+--text-encoder $2}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
mkdir -p "$OUT"
timeout 60 python3 -m pytest -q -x tests/lipar/test_kernels_cuda.py 2>&1 | tail -3
timeout 60 python3 benchmarks/kernels.py --out "$OUT/kernels.json" 2>&1 | tail -20
timeout 60 python3 benchmarks/dit_pass.py --out "$OUT" 2>&1 | tail -4   # dit_pass.json, .png
for triton in "" "--triton"; do
    timeout 120 python3 app.py bench --model wan2.1-1.3b --random-weights --size 480x832 --frames 32 --warmup 8 \
        --sweep-keep --target-fps 40 $triton --out "$OUT/bench_wan${triton:+_all_triton}" 2>&1 | tr '\r' '\n' \
        | grep -v "latent frame/s" | tail -22
done
timeout 60 python3 app.py bench --model tiny --size 256x256 --frames 64 --warmup 8 --sweep-keep $TEXT \
    --out "$OUT/bench_tiny256" 2>&1 | tr '\r' '\n' | grep -v "latent frame/s" | tail -18
