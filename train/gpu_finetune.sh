#!/usr/bin/env bash
# One ten-minute GPU call that fine-tunes the shipped tiny weights in place of a long run (session 9):
# the DiT on restyling pairs (train_dit.RESTYLE_SHARE) and, with WITH_VAE=1, beside it on the same GPU
# the VAE decoder only (the encoder, so the DiT's latents, unchanged); then the colour-following
# check for a few video-to-video schedules. Round 1 ran WITH_VAE=1 DIT_MINUTES=6.6, round 2 the
# defaults, round 3 (context lag added) DIT_STEPS=6500 DIT_MINUTES=7.8, round 4 DIT_LR=1.5e-4 and
# the same, each from the weights the round before exported.
#     bash train/gpu_finetune.sh OUT MINILM_DIR
set -euo pipefail
out=$1; minilm=$2
mkdir -p "$out/log" /tmp/ft
w=engine/weights/tiny
if [ "${WITH_VAE:-0}" = 1 ]; then
    python -m train.train_vae --ckpt /tmp/ft/vae --init $w/vae.safetensors --decoder-only --export "$out/vae.safetensors" \
        --steps 4000 --lr 5e-4 --warmup 100 --max-minutes 6.3 >"$out/log/vae.txt" 2>&1 &
else
    cp $w/vae.safetensors "$out/"
fi
python -m train.train_dit --ckpt /tmp/ft/dit --vae $w/vae.safetensors --init $w/dit.safetensors \
    --export "$out/dit.safetensors" --text-model "$minilm" --steps "${DIT_STEPS:-6000}" --lr "${DIT_LR:-2e-4}" --warmup 100 \
    --ema 0.995 --max-minutes "${DIT_MINUTES:-7.6}" >"$out/log/dit.txt" 2>&1
wait
cp /tmp/ft/dit/summary_dit.json /tmp/ft/dit/loss_dit.png "$out/log/"
[ "${WITH_VAE:-0}" = 1 ] && cp /tmp/ft/vae/summary.json /tmp/ft/vae/loss.png "$out/log/"
for s in "500 300 150|3" "600 400 200|3" "400 250 100|3"; do
    python -m train.evaluate --device cuda --weights "$out" --text-encoder "$minilm" \
        --v2v-timesteps ${s%|*} --v2v-shift ${s#*|} 2>/dev/null | head -1 | tee -a "$out/log/evaluate.jsonl"
done
