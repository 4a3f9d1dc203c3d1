#!/usr/bin/env bash
# A real generator training run through launch/train_generator.py (shards, DataLoader workers, frozen
# encoders, UNet step, logging): clips/s and the data-wait share, as the trainer logs them.
#
#   bash bench/train_generator_run.sh OUT [train_generator.py overrides ...]
#   bash bench/train_generator_run.sh /tmp/genrun model.trainable=full              # BENCHMARKS.md, one H100
#   SIZE=64x96 N_CLIPS=8 STEPS=4 BATCH=2 bash bench/train_generator_run.sh /tmp/smoke model.size=tiny \
#       encoders.kind=tiny data.height=64 data.width=96 train.mixed_precision=no     # CPU smoke run
#
# Data: N_CLIPS synthetic clips (data_prep/synthetic.py) at SIZE -> shards (classic flow). Encoders:
# encoders.kind=random (full-size SD 2.x VAE, OpenCLIP ViT-H/14, ImageBind-huge with random weights:
# the compute of a real run without weight files) unless overridden. Writes OUT/$RUN/summary.json (RUN:
# default "run"): the mean clips/s (all processes) and data-wait share over the log intervals after the
# first (start-up, compilation). LAUNCH runs the trainer (default: python3, one process), e.g.
#   LAUNCH="accelerate launch --config_file launch/accelerate/zero2.yaml --num_processes 2" RUN=zero2x2
set -euo pipefail
OUT=${1:?usage: train_generator_run.sh OUT [overrides]}; shift
HERE=$(cd "$(dirname "$0")/.." && pwd); cd "$HERE"
PY=${PY:-python3}; CPUS=${CPUS:-$(nproc)}; SIZE=${SIZE:-320x512}; N_CLIPS=${N_CLIPS:-64}
STEPS=${STEPS:-40}; BATCH=${BATCH:-8}; WORKERS=${WORKERS:-8}; LOG_EVERY=${LOG_EVERY:-10}
LAUNCH=${LAUNCH:-$PY}; RUN=${RUN:-run}
mkdir -p "$OUT"
[ -s "$OUT/data/train.txt" ] || $PY -m data_prep.synthetic --out "$OUT/data" --num-clips "$N_CLIPS" --seed 0 \
  --size "$SIZE" --test-fraction 0 --workers "$CPUS"
if [ ! -s "$OUT/shards.txt" ]; then
  $PY launch/prepare_data.py data.root="$OUT/data" data.name=synthetic data.split=train out_dir="$OUT/shards" \
    ingest.height="${SIZE%x*}" ingest.width="${SIZE#*x}" shards.videos_per_shard=16 shards.workers="$CPUS" \
    > "$OUT/prepare.log"
  tail -n 1 "$OUT/prepare.log" | $PY -c "import json,sys; print(json.load(sys.stdin)['urls'])" > "$OUT/shards.txt"
fi
$LAUNCH launch/train_generator.py run_dir="$OUT/$RUN" "data.train_shards='$(cat "$OUT/shards.txt")'" \
  encoders.kind=random train.batch_size="$BATCH" train.max_steps="$STEPS" train.log_every="$LOG_EVERY" \
  train.save_every=1000000 train.sample_every=0 train.num_workers="$WORKERS" train.gradient_checkpointing=true train.resume=never \
  "$@" 2>&1 | tee "$OUT/$RUN.log" | grep -E "^step |resumed|Error|error" || true
$PY - "$OUT/$RUN" <<'PYEOF'
import json, re, sys
out = sys.argv[1]
log = out + ".log"
rows = [dict(re.findall(r"(\w+)=([-+.\w]+)", line)) for line in open(log) if line.startswith("step ")]
if not rows:
    sys.exit(f"no step lines in {log}: the run failed (see the log)")
steady = rows[1:] or rows
mean = lambda k: sum(float(r[k]) for r in steady) / len(steady)
summary = {"log_intervals": len(rows), "averaged": len(steady), "samples_per_s": round(mean("samples_per_s"), 3),
           "data_wait_share": round(mean("data_wait_share"), 4),
           "gpu_mem_gib": round(max(float(r.get("gpu_mem_gib", "nan")) for r in rows), 1) if "gpu_mem_gib" in rows[0] else None,
           "last_loss": float(rows[-1]["loss"]), "losses": [float(r["loss"]) for r in rows]}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print(json.dumps(summary))
PYEOF
