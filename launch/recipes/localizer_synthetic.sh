#!/usr/bin/env bash
# Localizer on the synthetic benchmark, end to end: clips -> shards -> train -> AP@t / onsets.
#   N_CLIPS=1500 STEPS=3000 BATCH=64 SIZE=huge bash launch/recipes/localizer_synthetic.sh /tmp/locsyn
# CPU smoke run: N_CLIPS=12 STEPS=4 BATCH=2 SIZE=tiny WORKERS=2 bash launch/recipes/localizer_synthetic.sh /tmp/locsyn
set -euo pipefail
OUT=${1:?usage: localizer_synthetic.sh OUT_DIR}
N_CLIPS=${N_CLIPS:-1500}; STEPS=${STEPS:-3000}; BATCH=${BATCH:-64}; SIZE=${SIZE:-huge}
WORKERS=${WORKERS:-$(nproc)}; PY=${PYTHON:-python3}
DEVICE=${DEVICE:-$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
# The localizer needs audio and flow motion scores only, so clips are small (flow cost ~ pixels).
$PY -m data_prep.synthetic --out "$OUT/synthetic" --num-clips "$N_CLIPS" --seed 0 --size 64x96 \
    --test-fraction 0.2 --workers "$WORKERS"
$PY launch/prepare_data.py data.root="$OUT/synthetic" data.name=synthetic data.split=train \
    out_dir="$OUT/shards" ingest.height=64 ingest.width=96 shards.videos_per_shard=100 shards.workers="$WORKERS" \
    | tee "$OUT/prepare.log"
URLS=$(tail -n 1 "$OUT/prepare.log" | $PY -c "import json,sys; print(json.load(sys.stdin)['urls'])")
$PY launch/train_localizer.py model.size="$SIZE" "data.train_shards='$URLS'" data.height=64 data.width=96 \
    run_dir="$OUT/run" train.max_steps="$STEPS" train.batch_size="$BATCH" train.save_every="$STEPS" \
    train.log_every=$(( STEPS / 10 > 0 ? STEPS / 10 : 1 )) train.num_workers=$(( WORKERS > 8 ? 8 : WORKERS )) \
    optim.warmup_steps=$(( STEPS / 20 )) optim.lr=2e-4 | grep -E "^step|resumed"
for split in test train; do
  $PY launch/evaluate_localizer.py checkpoint="$OUT/run/export" data.root="$OUT/synthetic" data.split=$split \
      height=64 width=96 device="$DEVICE" out="$OUT/eval_$split.json" > /dev/null
done
# the same network untrained, as the floor to compare against
$PY launch/evaluate_localizer.py checkpoint="random:$SIZE" data.root="$OUT/synthetic" data.split=test \
    height=64 width=96 device="$DEVICE" out="$OUT/eval_test_untrained.json" > /dev/null
MEDIA=${MEDIA:-../shared/media}
if [ -d "$MEDIA" ]; then  # real clips, if present: AP@t against their flow peaks
  mkdir -p "$OUT/media/videos/real"
  for f in chopping.mp4 flipping_a_pancake.mkv landscape_48f.mp4 snow_48f.mp4 dog_running.mp4; do
    ln -sf "$(realpath "$MEDIA/$f")" "$OUT/media/videos/real/$f"; echo "real/$f"; done > "$OUT/media/test.txt"
  $PY launch/evaluate_localizer.py checkpoint="$OUT/run/export" data.root="$OUT/media" data.split=test \
      height=160 width=256 device="$DEVICE" out="$OUT/eval_media.json" > /dev/null
fi
$PY - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob("eval_*.json")):
    r = json.loads(f.read_text())
    print(f.stem, "clips", r["clips"], r["ap"], "onsets", r.get("onsets"), "rejected", len(r["rejected"]))
PY
