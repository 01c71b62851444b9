#!/usr/bin/env bash
# A short device call: DiT training first (its weights are what everything else needs), then the
# real-scale DiT pass timing, then the wan bench; each step writes into $OUT as soon as it ends.
set -o pipefail
OUT=${1:?out dir}; TRAIN_MIN=${2:-2.5}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p "$OUT/res"
timeout 260 python3 -m train.train_dit --ckpt runs/dit --vae engine/weights/tiny/vae.safetensors \
    --export "$OUT/dit.safetensors" --text-model .carry/minilm --max-minutes "$TRAIN_MIN" 2>&1 \
    | tr '\r' '\n' | grep -v "step/s" | tail -3
cp runs/dit/loss_dit.png runs/dit/summary_dit.json "$OUT/" 2>/dev/null
timeout 70 python3 benchmarks/dit_pass.py --repeats 20 --out "$OUT/dp" 2>&1 | tail -3
timeout 120 python3 app.py bench --model wan2.1-1.3b --random-weights --size 480x832 --frames 12 --warmup 8 \
    --sweep-keep --target-fps 40 --out "$OUT/wan" 2>&1 | tr '\r' '\n' | grep -v "latent frame/s" | tail -24
