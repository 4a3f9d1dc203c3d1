#!/usr/bin/env bash
# Two-GPU DeepSpeed ZeRO-2 check of the generator trainer (issue 6), through bench/train_generator_run.sh:
#   PART=throughput: 1 process vs 2 at the same per-GPU batch (target: 2 GPUs >= 0.9 x 2 x one);
#   PART=loss:       50 steps of 2 GPUs at batch B each vs 1 GPU at batch 2B (the same global batch).
#
#   PART=throughput bash bench/zero2_scaling.sh OUT model.trainable=full optim.fused=true    # 2 GPUs
#   PART=loss       bash bench/zero2_scaling.sh OUT model.trainable=full optim.fused=true
#   ACCEL_CONFIG=launch/accelerate/cpu_zero2.yaml SIZE=64x96 N_CLIPS=8 STEPS=4 LOG_EVERY=1 BATCH=1 WORKERS=0 \
#     bash bench/zero2_scaling.sh /tmp/z2 model.size=tiny encoders.kind=tiny data.height=64 data.width=96 \
#     train.mixed_precision=no                                                # CPU smoke run of this script
#
# Each part runs two trainings of the 512 generator (minutes each on an H100 with checkpointing, eager);
# run the parts as separate commands. The two runs read the same shards in a different order (each rank
# reads its own share), so the loss curves agree in level and trend, not step by step. Writes
# OUT/<part>.json.
set -euo pipefail
OUT=${1:?usage: zero2_scaling.sh OUT [overrides]}; shift
HERE=$(cd "$(dirname "$0")/.." && pwd); cd "$HERE"
PY=${PY:-python3}; PART=${PART:-throughput}; B=${BATCH:-8}
ACCEL="accelerate launch --config_file ${ACCEL_CONFIG:-launch/accelerate/zero2.yaml} --main_process_port ${PORT:-29533}"
run() {  # run NAME PROCESSES BATCH [STEPS LOG_EVERY] overrides...
  local name=$1 n=$2 batch=$3; shift 3
  LAUNCH="$ACCEL --num_processes $n" RUN=$name BATCH=$batch bash bench/train_generator_run.sh "$OUT" "$@" > /dev/null
}
case $PART in
  throughput)
    run ${PART}_1 1 "$B" "$@"; run ${PART}_2 2 "$B" "$@";;
  loss)
    export STEPS=${STEPS:-50} LOG_EVERY=${LOG_EVERY:-1}
    run ${PART}_1 1 $((2 * B)) "$@"; run ${PART}_2 2 "$B" "$@";;
  *) echo "PART must be throughput or loss, got $PART" >&2; exit 2;;
esac
$PY - "$OUT" "$PART" <<'PYEOF'
import json, sys
out, part = sys.argv[1:]
one, two = (json.load(open(f"{out}/{part}_{n}/summary.json")) for n in (1, 2))
res = {"part": part, "one_gpu": one, "two_gpus": two}
if part == "throughput":
    res["scaling"] = round(two["samples_per_s"] / (2 * one["samples_per_s"]), 3)  # target >= 0.9
else:
    a, b = one["losses"], two["losses"]
    half = len(a) // 2
    mean = lambda v: sum(v) / len(v)
    res.update(first_half_mean=[round(mean(a[:half]), 4), round(mean(b[:half]), 4)],
               second_half_mean=[round(mean(a[half:]), 4), round(mean(b[half:]), 4)],
               mean_abs_step_diff=round(mean([abs(x - y) for x, y in zip(a, b)]), 4))
json.dump(res, open(f"{out}/{part}.json", "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k not in ("one_gpu", "two_gpus")}))
PYEOF
