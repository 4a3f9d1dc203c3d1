#!/usr/bin/env bash
# Keyframe-aware vs uniform frame sampling (the paper's Table 2 ablation) on the synthetic benchmark,
# end to end: clips -> shards -> per seed {localizer; generator + interpolator trained with keyframe
# sampling, and again with uniform sampling} -> test videos from the held-out images and audio ->
# sync score against the true impact times -> summary table. REPRODUCTION.md has the setup and figures.
#
#   One GPU (the REPRODUCTION.md run):   bash launch/recipes/keyframe_vs_uniform.sh runs/kvu
#   CPU smoke run (CI, about 3 minutes): SCALE=smoke bash launch/recipes/keyframe_vs_uniform.sh /tmp/kvu
#   Overfit test (a system that cannot memorise a few clips has a bug):
#                                        MODE=overfit bash launch/recipes/keyframe_vs_uniform.sh runs/overfit
#     N_TRAIN clips (default 16) are the training set AND the test set, keyframe system only
#     (SYSTEMS), one seed, checkpoints every SAVE_EVERY=250 steps so it resumes across commands.
#
#   In two parts (each trains its UNet alone on the GPU, twice the time a shared command gives it):
#     PART=keyframes: data, localizer + generators, each test clip's keyframes (keyframes/);
#     PART=videos: data, interpolators, the videos from those keyframes, scoring. Both parts write the
#     same OUT; the videos part only needs keyframes/ and eval/localizer_s*.json of the first
#     (a few MB), so the parts can run in separate jobs or machines (copy those two over in between).
#
# Every table row stands beside its ceiling and chance level: ground_truth (the real clips),
# vae_round_trip (the real clips through the pipeline's VAE: the ceiling a generated video can reach),
# mismatched (each clip's video with the next clip's audio: chance), with frame-0 PSNR and the flicker
# ratio (keyvid/eval/fidelity.py) beside the sync score.
#
# Every stage is skipped when its output exists and training resumes from its last checkpoint
# (train.resume=auto), so a run cut off by a time limit continues where it stopped when rerun.
# Any setting below can be overridden from the environment, e.g. SEEDS="0 1 2 3" GEN_STEPS=4000;
# also SAVE_EVERY (checkpoint interval; default: only at the end), TRAIN_MINUTES (each training job stops,
# checkpointed and exported, at the first step past this wall time: one device command holds a whole
# run; the step reached is in its log), CPUS, DEVICE, NUM_KEYFRAMES, LR,
# COMPILE (none | blocks | model: torch.compile of the video UNets; GPU default model).
# PARALLEL training jobs share the GPU (about 8.4 GiB each at batch 16); generation runs
# GEN_PARALLEL at a time (one 48-frame, 4-branch batch of 24 clips takes about 60 GiB).
set -euo pipefail
OUT=${1:?usage: keyframe_vs_uniform.sh OUT_DIR}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
SCALE=${SCALE:-gpu}
MODE=${MODE:-compare}
PART=${PART:-all}
case $PART in all|keyframes|videos) ;; *) echo "PART must be all, keyframes or videos, got $PART" >&2; exit 2 ;; esac
if [ "$MODE" = overfit ]; then
  : "${N_TRAIN:=16}" "${SEEDS:=0}" "${SYSTEMS:=keyframe}" "${SAVE_EVERY:=250}"
  [ "$SCALE" = smoke ] || { : "${GEN_STEPS:=1000}" "${INT_STEPS:=1000}"; }
  N_TEST=$N_TRAIN
elif [ "$MODE" != compare ]; then
  echo "MODE must be compare or overfit, got $MODE" >&2; exit 2
fi
: "${SYSTEMS:=keyframe uniform}"
if [ "$SCALE" = smoke ]; then
  : "${N_TRAIN:=9}" "${N_TEST:=3}" "${SEEDS:=0 1}" "${SIZE:=tiny}" "${LOC_SIZE:=tiny}" "${HEIGHT:=32}" "${WIDTH:=48}"
  : "${PIXEL:=2}" "${LOC_STEPS:=4}" "${GEN_STEPS:=2}" "${INT_STEPS:=2}" "${BATCH:=2}" "${LOC_BATCH:=4}"
  : "${SAMPLE_STEPS:=2}" "${WINDOW:=4}" "${WARMUP:=0}" "${LOC_WORKERS:=1}" "${PARALLEL:=1}" "${PRECISION:=no}" "${WORKERS:=1}" "${GEN_BATCH:=3}" "${GEN_PARALLEL:=1}"
  : "${COMPILE:=none}"
else
  : "${N_TRAIN:=800}" "${N_TEST:=48}" "${SEEDS:=0 1 2}" "${SIZE:=small}" "${LOC_SIZE:=small}" "${HEIGHT:=64}" "${WIDTH:=96}"
  : "${PIXEL:=4}" "${LOC_STEPS:=800}" "${GEN_STEPS:=500}" "${INT_STEPS:=500}" "${BATCH:=16}" "${LOC_BATCH:=64}"
  : "${SAMPLE_STEPS:=30}" "${WINDOW:=12}" "${WARMUP:=100}" "${LOC_WORKERS:=4}" "${PARALLEL:=8}" "${PRECISION:=bf16}" "${WORKERS:=2}" "${GEN_BATCH:=16}" "${GEN_PARALLEL:=1}"
  : "${COMPILE:=model}"
fi
NUM_KEYFRAMES=${NUM_KEYFRAMES:-12}; LR=${LR:-2e-4}; CPUS=${CPUS:-$(nproc)}
# PixelVAE latents at unit variance (data_prep/synthetic.py PIXEL_LATENT_SCALE; 1.0 is the old setting)
PIXEL_SCALE=${PIXEL_SCALE:-$(cd "$HERE" && $PY -c "from data_prep.synthetic import PIXEL_LATENT_SCALE as s; print(s)")}
cd "$HERE"
mkdir -p "$OUT/logs"
log() { echo "[$(date +%H:%M:%S)] $*"; }

# 1. Data: a training set and a held-out test set from different generator seeds (overfit: the same
# seed and count, so the test clips are the training clips; clips are deterministic per (seed, index)).
TEST_SEED=$([ "$MODE" = overfit ] && echo 0 || echo 1)
[ -s "$OUT/data/train/train.txt" ] || $PY -m data_prep.synthetic --out "$OUT/data/train" --num-clips "$N_TRAIN" \
  --seed 0 --size "${HEIGHT}x${WIDTH}" --test-fraction 0 --workers "$CPUS"
[ -s "$OUT/data/test/test.txt" ] || $PY -m data_prep.synthetic --out "$OUT/data/test" --num-clips "$N_TEST" \
  --seed "$TEST_SEED" --size "${HEIGHT}x${WIDTH}" --test-fraction 1 --workers "$CPUS"
log "data: $(wc -l < "$OUT/data/train/train.txt") train clips, $(wc -l < "$OUT/data/test/test.txt") test clips"
if [ ! -s "$OUT/shards.txt" ]; then
  $PY launch/prepare_data.py data.root="$OUT/data/train" data.name=synthetic data.split=train out_dir="$OUT/shards" \
    ingest.height="$HEIGHT" ingest.width="$WIDTH" shards.videos_per_shard=100 shards.workers="$CPUS" > "$OUT/logs/prepare.log"
  tail -n 1 "$OUT/logs/prepare.log" | $PY -c "import json,sys; print(json.load(sys.stdin)['urls'])" > "$OUT/shards.txt"
fi
SHARDS="data.train_shards='$(cat "$OUT/shards.txt")'"
log "shards: $(cat "$OUT/shards.txt")"

# 2. Training. The generator and interpolator of both variants share everything but data.sampling.
COMMON=("$SHARDS" data.height="$HEIGHT" data.width="$WIDTH" train.mixed_precision="$PRECISION"
        train.sample_every=0 train.log_every=100 optim.lr="$LR")
[ -n "${TRAIN_MINUTES:-}" ] && COMMON+=(train.time_limit_minutes="$TRAIN_MINUTES")
case $COMPILE in  # the video UNets: none | blocks (regional) | model (whole UNet; the small UNet is launch-bound)
  none) COMPILE_ARGS=() ;; blocks) COMPILE_ARGS=(train.compile_blocks=true) ;; model) COMPILE_ARGS=(train.compile_model=true) ;;
  *) echo "COMPILE must be none, blocks or model, got $COMPILE" >&2; exit 2 ;;
esac
VIDEO=("${COMPILE_ARGS[@]}" train.num_workers="$WORKERS" model.size="$SIZE" model.trainable=full encoders.kind=pixel encoders.pixel_factor="$PIXEL"
       encoders.pixel_scale="$PIXEL_SCALE"
       data.num_keyframes="$NUM_KEYFRAMES" train.batch_size="$BATCH" optim.warmup_steps="$WARMUP")
train() {  # train <script> <run_dir> <steps> <overrides...>: skipped once exported, resumed otherwise
  local script=$1 run=$2 steps=$3; shift 3
  [ -f "$run/export/DONE" ] && return 0
  $PY "launch/$script" run_dir="$run" train.max_steps="$steps" train.save_every="${SAVE_EVERY:-$steps}" "$@" \
    > "$run.log" 2>&1 || { echo "FAILED: $script $run (log: $run.log)"; tail -n 20 "$run.log"; return 1; }
  touch "$run/export/DONE"
}
localizer() {
  train train_localizer.py "$OUT/runs/s$1/localizer" "$LOC_STEPS" "${COMMON[@]}" model.size="$LOC_SIZE" seed="$1" \
    train.batch_size="$LOC_BATCH" train.num_workers="$LOC_WORKERS" optim.warmup_steps=$((LOC_STEPS / 20))
}
video() {  # video <seed> <sampling> generator|interpolator: the two are independent, so they run side by side
  mkdir -p "$OUT/runs/s$1/$2"
  local extra=(); [ "$3" = interpolator ] && extra=(model.window_frames="$WINDOW")
  train "train_$3.py" "$OUT/runs/s$1/$2/$3" "$([ "$3" = generator ] && echo "$GEN_STEPS" || echo "$INT_STEPS")" \
    "${COMMON[@]}" "${VIDEO[@]}" seed="$1" data.sampling="$2" "${extra[@]}"
}
parallel() {  # run the argument strings as commands, $PARALLEL at a time; fail if any failed
  local failed=0 j
  for j in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || failed=1; done
    $j &  # word-split on purpose: "video 0 keyframe generator"
  done
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
  return $failed
}
jobs_=()
for seed in $SEEDS; do
  mkdir -p "$OUT/runs/s$seed"
  [ "$PART" = videos ] || jobs_+=("localizer $seed")
  for sampling in $SYSTEMS; do
    [ "$PART" = videos ] || jobs_+=("video $seed $sampling generator")
    [ "$PART" = keyframes ] || jobs_+=("video $seed $sampling interpolator")
  done
done
log "training ${#jobs_[@]} jobs, $PARALLEL at a time (logs: $OUT/runs/s<seed>/...log)"
parallel "${jobs_[@]}" || { echo "a training job failed"; exit 1; }
log "training done"

# 3. Test videos: every held-out clip's first frame + audio, through the assembled pipeline.
GEN="$OUT/generated"
generate() {  # generate <seed> <sampling>: the videos (PART=all), the keyframes (keyframes) or the videos from them
  local seed=$1 sampling=$2 run="$OUT/runs/s$1/$2" keys="$OUT/keyframes/${2}_s$1"
  local loc="$OUT/runs/s$1/localizer/export" gen="$run/generator/export" int="$run/interpolator/export"
  local stage=full dst="$GEN/${2}_s$1" from=()
  case $PART in  # a part's pipeline leaves out what it did not train
    keyframes) stage=keyframes dst=$keys int=null ;;
    videos) stage=interpolate loc=null gen=null from=(keyframes_from="$keys") ;;
  esac
  [ -f "$dst/DONE" ] && return 0
  if [ "$PART" = videos ] && [ ! -f "$keys/DONE" ]; then
    echo "PART=videos: $keys is missing (run PART=keyframes first)"; return 1
  fi
  $PY launch/assemble_pipeline.py localizer="$loc" generator="$gen" interpolator="$int" out="$run/pipeline.$stage" \
    height="$HEIGHT" width="$WIDTH" \
    num_keyframes="$NUM_KEYFRAMES" encoders.kind=pixel encoders.pixel_factor="$PIXEL" encoders.pixel_scale="$PIXEL_SCALE" \
    > "$run/assemble.log" 2>&1 || { echo "FAILED: assembling $run/pipeline.$stage"; tail -n 20 "$run/assemble.log"; return 1; }
  local keyframes; keyframes=$([ "$sampling" = keyframe ] && echo localizer || echo uniform)
  $PY launch/generate.py pipeline="$run/pipeline.$stage" dataset="$OUT/data/test" split=test.txt out_dir="$dst" \
    stage="$stage" "${from[@]}" keyframes="$keyframes" steps="$SAMPLE_STEPS" batch_size="$GEN_BATCH" seed="$seed" \
    freenoise.window="$WINDOW" freenoise.stride=$((WINDOW / 2)) > "$run/generate.$stage.log" 2>&1 \
    || { echo "FAILED: generation $dst (log: $run/generate.$stage.log)"; tail -n 20 "$run/generate.$stage.log"; return 1; }
  touch "$dst/DONE"
  log "generated $dst"
}
jobs_=()
for seed in $SEEDS; do for sampling in $SYSTEMS; do jobs_+=("generate $seed $sampling"); done; done
# 48 frames x 4 guidance branches x GEN_BATCH clips per forward: one generation job can fill the GPU
PARALLEL=$GEN_PARALLEL parallel "${jobs_[@]}" || { echo "a generation job failed"; exit 1; }
DEVICE=${DEVICE:-$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
localizer_ap() {  # the localizers' AP@t on the test clips (the keyframe system's test-time keyframes come from them)
  mkdir -p "$OUT/eval"
  for seed in $SEEDS; do
    [ -s "$OUT/eval/localizer_s$seed.json" ] || $PY launch/evaluate_localizer.py checkpoint="$OUT/runs/s$seed/localizer/export" \
      data.root="$OUT/data/test" data.split=test height="$HEIGHT" width="$WIDTH" device="$DEVICE" \
      out="$OUT/eval/localizer_s$seed.json" > "$OUT/logs/evaluate_localizer_s$seed.log" 2>&1
  done
}
if [ "$PART" = keyframes ]; then
  localizer_ap
  log "PART=keyframes done: the videos part needs $OUT/keyframes and $OUT/eval/localizer_s*.json"
  exit 0
fi
# The test clips through the pipeline's VAE: the ceiling a generated video can reach.
first_seed=${SEEDS%% *} first_system=${SYSTEMS%% *}
if [ ! -f "$GEN/vae_round_trip/DONE" ]; then
  $PY launch/generate.py pipeline="$OUT/runs/s$first_seed/$first_system/pipeline.$([ "$PART" = videos ] && echo interpolate || echo full)" \
    dataset="$OUT/data/test" split=test.txt \
    round_trip=true out_dir="$GEN/vae_round_trip" > "$OUT/logs/round_trip.log" 2>&1 \
    || { echo "FAILED: VAE round trip (log: $OUT/logs/round_trip.log)"; tail -n 20 "$OUT/logs/round_trip.log"; exit 1; }
  touch "$GEN/vae_round_trip/DONE"
fi
# The test clips themselves, as the ceiling the score can reach; and each test clip's video under the
# next clip's name (its audio and impacts), the chance level of a video whose motion ignores the audio.
mapfile -t TEST < "$OUT/data/test/test.txt"
for i in "${!TEST[@]}"; do
  rel=${TEST[$i]} other=${TEST[$(( (i + 1) % ${#TEST[@]} ))]}
  for row in ground_truth mismatched; do
    src=$([ $row = ground_truth ] && echo "$rel" || echo "$other")
    dst="$GEN/$row/${rel%.mp4}_clip-0.mp4"; mkdir -p "$(dirname "$dst")"
    ln -sf "$(realpath "$OUT/data/test/videos/$src")" "$dst"
  done
done

# 4. Score every folder with the weight-free sync score, then the keyframe-vs-uniform summary.
$PY launch/evaluate.py generated="$GEN" reference="$OUT/data/test" dataset=synthetic metrics=[sync,av_align,fidelity] \
  mode=frames48 num_clips=1 sweep=true out_dir="$OUT/eval" device=cpu > "$OUT/logs/evaluate.log" 2>&1 \
  || { tail -n 30 "$OUT/logs/evaluate.log"; exit 1; }
# the object-trajectory diagnostic beside it (no flow: is the object where the real clip has it, when;
# meaningful on the impact classes only, docs/learning.md); per-clip rows in eval_trajectory/
$PY launch/evaluate.py generated="$GEN" reference="$OUT/data/test" dataset=synthetic metrics=[sync] sync.detector=trajectory \
  mode=frames48 num_clips=1 sweep=true out_dir="$OUT/eval_trajectory" device=cpu > "$OUT/logs/evaluate_trajectory.log" 2>&1 \
  || { tail -n 30 "$OUT/logs/evaluate_trajectory.log"; exit 1; }
[ "$PART" = videos ] || localizer_ap  # PART=videos: from the keyframes part
$PY launch/recipes/summarize_keyframe_vs_uniform.py "$OUT"
