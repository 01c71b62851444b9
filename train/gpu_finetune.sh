#!/usr/bin/env bash
# One GPU call (under ten minutes) that fine-tunes the shipped tiny weights in place of a long run:
# the DiT (restyling and identity pairs, motion-weighted loss: train/train_dit.py) and, with
# WITH_VAE=1, beside it on the same GPU the VAE decoder only (the encoder, so the DiT's latents,
# unchanged; it halves the DiT's steps); then every measure of train.evaluate on the GPU for the
# shipped weights and for the new ones at several video-to-video start sigmas (0.5 to 0.75, shift 3),
# so the schedule is chosen by measurement. Results: $OUT/dit.safetensors, vae.safetensors,
# evaluate.jsonl (one headline line per setting) and logs.tar.gz.
# Session 9 ran five rounds of the older script (restyling pairs only); session 10 (issue 16) ran
# round 6, DIT_FRAMES=20 DIT_MINUTES=6.8, from round 5's weights: the call hit its 600 s limit after
# two evaluations (then a full one per schedule), which is why the schedules now get --v2v-only.
# MINILM_DIR may be a `python -m train.export_minilm DIR --compact` folder (the fp16 one no longer fits a
# call beside the tree); it is expanded here first. EVAL_SHIPPED=0 skips the shipped weights' evaluation and
# V2V_SCHEDULES ("t1 t2 t3|..."), default the three below, names the video-to-video schedules tried (empty: none).
# DIT_SELF_CONTEXT (default 0): the share of clips trained on the model's own reconstructions as context
# (train_dit.own_reconstruction); round 8 (session 13) at 0.5 followed motion worse (2 of 8 prompts).
# DIT_SINK_ONLY (default 0): the share of steps whose noisy frames see only the sink frame
# (train_dit.training_masks), so that motion must come from the prompt; round 9 (session 14) at 0.4: direction
# contrast +0.10 against the shipped +0.04, motion 2 of 8 prompts; round 10, continuing it at 0.75 (the most
# train_dit takes): +0.16, motion 3 of 8; neither shipped.
#     bash train/gpu_finetune.sh OUT MINILM_DIR
set -euo pipefail
out=$1; minilm=$2
mkdir -p "$out" /tmp/ft/log
if [ -f "$minilm/model.compact.safetensors" ]; then
    python -m train.export_minilm --expand "$minilm" /tmp/ft/minilm
    minilm=/tmp/ft/minilm
fi
pack() { tar -czf "$out/logs.tar.gz" -C /tmp/ft log; }
trap pack EXIT  # the logs come back when a step fails; a call killed at its limit kills this too, so
w=engine/weights/tiny
if [ "${WITH_VAE:-0}" = 1 ]; then
    python -m train.train_vae --ckpt /tmp/ft/vae --init $w/vae.safetensors --decoder-only --export "$out/vae.safetensors" \
        --steps 4000 --lr 5e-4 --warmup 100 --max-minutes "${VAE_MINUTES:-6.3}" >/tmp/ft/log/vae.txt 2>&1 &
else
    cp $w/vae.safetensors "$out/"
fi
python -m train.train_dit --ckpt /tmp/ft/dit --vae $w/vae.safetensors --init $w/dit.safetensors \
    --export "$out/dit.safetensors" --text-model "$minilm" --steps "${DIT_STEPS:-6000}" --lr "${DIT_LR:-2e-4}" \
    --warmup 100 --ema 0.995 --max-minutes "${DIT_MINUTES:-7.0}" --frames "${DIT_FRAMES:-16}" \
    --batch-small "${DIT_BATCH:-48}" --self-context "${DIT_SELF_CONTEXT:-0}" --sink-only "${DIT_SINK_ONLY:-0}" \
    >/tmp/ft/log/dit.txt 2>&1
wait
cp /tmp/ft/dit/summary_dit.json /tmp/ft/dit/loss_dit.png /tmp/ft/log/
if [ "${WITH_VAE:-0}" = 1 ]; then cp /tmp/ft/vae/summary.json /tmp/ft/vae/loss.png /tmp/ft/log/; fi
pack  # ... the training logs are packed before the evaluations start
evaluate() {  # label, weights folder, then extra train.evaluate arguments
    local label=$1 weights=$2; shift 2
    python -m train.evaluate --device cuda --weights "$weights" --text-encoder "$minilm" "$@" \
        >/tmp/ft/log/eval_"$label".json 2>/tmp/ft/log/eval_"$label".err || return 0  # the weights still count
    echo "{\"label\": \"$label\", \"headline\": $(head -1 /tmp/ft/log/eval_"$label".json)}" | tee -a "$out/evaluate.jsonl"
}
# a full evaluation took ~70 s on the H200 (session 10), the video-to-video part about half of it
[ "${EVAL_SHIPPED:-1}" = 1 ] && evaluate shipped $w
evaluate new "$out"
IFS='|' read -r -a schedules <<< "${V2V_SCHEDULES-250 150 75|333 200 100|400 250 125}"  # set but empty: none
for t in "${schedules[@]}"; do
    evaluate "new_t${t%% *}" "$out" --v2v-only --v2v-timesteps $t --v2v-shift 3
done
