#!/usr/bin/env bash
# Every GPU result the issues ask for, in one device call (not yet run: see README "Benchmarks").
# Usage on the GPU machine: bash benchmarks/gpu_evidence.sh "$OUT"    (about 6 minutes on an H100)
set -o pipefail
OUT=${1:?output folder}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
mkdir -p "$OUT"
timeout 60 python3 -m pytest -q -x tests/lipar/test_kernels_cuda.py 2>&1 | tail -3
timeout 90 python3 benchmarks/kernels.py --out "$OUT/kernels.json" 2>&1 | tail -20
timeout 90 python3 benchmarks/dit_pass.py --out "$OUT/dit_pass" 2>&1 | tail -4
for triton in "" "--triton"; do
    timeout 150 python3 app.py bench --model wan2.1-1.3b --random-weights --size 480x832 --frames 32 --warmup 8 \
        --sweep-keep --target-fps 40 $triton --out "$OUT/wan${triton:+_triton}" 2>&1 | tr '\r' '\n' \
        | grep -v "latent frame/s" | tail -22
done
timeout 60 python3 app.py bench --model tiny --size 256x256 --frames 64 --warmup 8 --sweep-keep \
    --out "$OUT/tiny256" 2>&1 | tr '\r' '\n' | grep -v "latent frame/s" | tail -18
