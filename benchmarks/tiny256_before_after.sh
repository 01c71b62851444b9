#!/usr/bin/env bash
# The device call of 2026-11-27 (session 9) that measured tiny 256x256 speed with the code before
# this session (commit 66f4031, made with: git archive -o runs/old.tar 66f4031 -- . ":(exclude)engine/weights"
# ":(exclude)benchmarks/results") and after, on the same H200, ran the CUDA tests, then fine-tune round 5.
# Carried: .carry/minilm runs/old.tar. Results: benchmarks/results/gpu_h200/bench_tiny256{,_before}/.
set -u
nvidia-smi --query-gpu=name --format=csv,noheader
r=/tmp/r; mkdir -p $r /tmp/old
tar xf runs/old.tar -C /tmp/old && cp -r engine/weights /tmp/old/engine/ && cp -r .carry /tmp/old/
B="--model tiny --size 256x256 --frames 64 --warmup 8 --text-encoder .carry/minilm"
(cd /tmp/old && python app.py bench $B --out $r/old256a) > $r/old.txt 2>&1
python app.py bench $B --sweep-keep --out $r/tiny256 > $r/new.txt 2>&1
(cd /tmp/old && python app.py bench $B --out $r/old256b) >> $r/old.txt 2>&1
python app.py bench $B --out $r/new256b >> $r/new.txt 2>&1
MINILM_DIR=.carry/minilm python -m pytest -q tests/engine/test_backends_cuda.py tests/lipar/test_kernels_cuda.py > $r/pytest.txt 2>&1
tail -2 $r/pytest.txt
python - <<'P'
import json
for n in ("old256a","tiny256","old256b","new256b"):
    d=json.load(open(f"/tmp/r/{n}/bench.json"))["runs"]
    print(n, {k:(round(v["fps"],1), round(v["latency_ms_p50"],2), {s: round(t,2) for s,t in v["stages_ms"].items()}) for k,v in d.items() if k in ("baseline","lipar")})
P
tar czf $OUT/r.tgz -C /tmp r
DIT_LR=1e-4 DIT_STEPS=4500 DIT_MINUTES=5.0 bash train/gpu_finetune.sh /tmp/ft5 .carry/minilm
cp /tmp/ft5/dit.safetensors $OUT/ && tar czf $OUT/ft5.tgz -C /tmp/ft5 log
