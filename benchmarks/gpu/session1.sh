#!/usr/bin/env bash
# One device call (H100/H200): train the tiny DiT, then every GPU measurement, each step guarded.
# Usage on the device: bash benchmarks/gpu/session1.sh "$OUT"
set -o pipefail
OUT=${1:?out dir}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
mkdir -p "$OUT/res"
timeout 290 python3 -m train.train_dit --ckpt runs/dit --vae engine/weights/tiny/vae.safetensors \
    --export engine/weights/tiny/dit.safetensors --text-model .carry/minilm --max-minutes 4.0 2>&1 \
    | tr '\r' '\n' | grep -v "step/s" | tail -4
cp engine/weights/tiny/dit.safetensors "$OUT/" ; cp runs/dit/loss_dit.png runs/dit/summary_dit.json "$OUT/res/"
timeout 90 python3 benchmarks/dit_pass.py --out "$OUT/res/dit_pass" 2>&1 | tail -4
timeout 150 python3 app.py bench --model wan2.1-1.3b --random-weights --size 480x832 --frames 24 --warmup 8 \
    --sweep-keep --target-fps 40 --out "$OUT/res/wan" 2>&1 | tr '\r' '\n' | grep -v "latent frame/s" | tail -28
timeout 60 python3 app.py bench --model tiny --size 256x256 --frames 48 --warmup 8 --sweep-keep \
    --out "$OUT/res/tiny256" 2>&1 | tr '\r' '\n' | grep -v "latent frame/s" | tail -22
timeout 40 python3 -m pytest -q -x tests/lipar/test_kernels_cuda.py 2>&1 | tail -3
timeout 60 python3 benchmarks/kernels.py --out "$OUT/res/kernels.json" 2>&1 | tail -25
cd "$OUT" && tar czf results.tgz res && rm -rf res && ls -la "$OUT"
