#!/usr/bin/env bash
# One ten-minute GPU call that fine-tunes the shipped tiny weights (the call of 2026-11-27, session 9):
# the DiT on restyling pairs (train_dit.RESTYLE_SHARE) and, beside it on the same GPU, the VAE decoder
# only (the encoder, so the DiT's latents, unchanged); then the colour-following check for a few
# video-to-video schedules.   bash train/gpu_finetune.sh OUT MINILM_DIR
set -euo pipefail
out=$1; minilm=$2
mkdir -p "$out/log" /tmp/ft
w=engine/weights/tiny
python -m train.train_vae --ckpt /tmp/ft/vae --init $w/vae.safetensors --decoder-only --export "$out/vae.safetensors" \
    --steps 4000 --lr 5e-4 --warmup 100 --max-minutes 6.3 >"$out/log/vae.txt" 2>&1 &
python -m train.train_dit --ckpt /tmp/ft/dit --vae $w/vae.safetensors --init $w/dit.safetensors \
    --export "$out/dit.safetensors" --text-model "$minilm" --steps 5500 --lr 2e-4 --warmup 100 --ema 0.995 \
    --max-minutes 6.6 >"$out/log/dit.txt" 2>&1
wait
cp /tmp/ft/dit/summary_dit.json /tmp/ft/dit/loss_dit.png /tmp/ft/vae/summary.json /tmp/ft/vae/loss.png "$out/log/"
for s in "600 400 200|3" "700 500 300|1" "500 333 167|1" "800 600 400 200|1"; do
    python -m train.evaluate --device cuda --weights "$out" --text-encoder "$minilm" \
        --v2v-timesteps ${s%|*} --v2v-shift ${s#*|} 2>/dev/null | head -1 | tee -a "$out/log/evaluate.jsonl"
done
