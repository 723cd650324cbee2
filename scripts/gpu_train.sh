#!/usr/bin/env bash
# One training stage per invocation on the device machine (see models/MODEL_CARD.md).
#
#   bash scripts/gpu_train.sh smoke|seg|sr|eval|robust-seg|robust-sr|unlabeled-holdout|unlabeled-ship
#   UNLABELED=video bash scripts/gpu_train.sh fine-head
#   HOLDOUT='0006R0 0001TP 0016E5' bash scripts/gpu_train.sh recipe-holdout '' 'gamma=0.3' ...
#   INPUT=video SCALE=4 bash scripts/gpu_train.sh adapt-stream
#   NEW_DRIVE=0006R0 SCALE=4 BENCH_ARGS='--qualities 50 ...' bash scripts/gpu_train.sh new-drive
#   NEW_DRIVE=0006R0 BENCH_ARGS='...' bash scripts/gpu_train.sh new-drive-bench
#
# Runs from the repository root with the CamVid copy carried in .data/camvid11 and the package
# imported from the source tree (no ROS venv there). Finished weights and logs go to $OUT
# (flat: at most 8 files come back); intermediate checkpoints stay in $WORK.
# Time budgets (seconds of training loop, evaluation and loading excluded) are env overrides:
#   SEG_BUDGET (default 420), SR_BUDGET (150), FT_BUDGET (150).
set -euo pipefail
stage=${1:?usage: gpu_train.sh smoke|seg|sr|eval|robust-seg|robust-sr|unlabeled-holdout|unlabeled-ship|fine-head|recipe-holdout|adapt-stream|new-drive|new-drive-bench}
OUT=${OUT:-out/device}
WORK=${WORK:-/tmp/cloudseg_work}
DATA=${DATA:-.data/camvid11}
mkdir -p "$OUT" "$WORK"
# Several trainings share the machine's cores; torch's default (all cores each) oversubscribes.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
cli() { "$PY" -m cloudseg_ros.cli "$@"; }

seg_stage() {  # $1: budget s, $2: out dir, rest: extra --set overrides
  local budget=$1 out=$2
  shift 2
  cli train-seg --out "$out" --set data="$DATA" --set time_budget_s="$budget" \
    --set batch_size=16 --set lr=2e-3 --set scale_min=0.5 --set scale_max=2.0 \
    --set eval_every=1000 --set log_every=100 --set half_weights=true "$@"
}

sr_chain() {  # $1: scale, $2: sr budget, $3: finetune budget, $4: seg checkpoint
  local s=$1
  cli train-sr --out "$WORK/sr_x$s" --set data="$DATA" --set scale="$s" \
    --set time_budget_s="$2" --set eval_every=2000 --set log_every=200
  cli finetune-sr --out "$WORK/sr_x${s}_aware" --set data="$DATA" --set scale="$s" \
    --set sr_checkpoint="$WORK/sr_x$s/last.pt" --set seg_checkpoint="$4" \
    --set time_budget_s="$3" --set eval_every=1000 --set log_every=100
}

# The codec-robust recipe of issue 8: degraded views + consistency for segmentation, codec-aware
# LR for SR. Extra train-seg overrides can be given in SEG_SET.
ROBUST_SEG=(--set degrade_variants=6 --set consistency_weight=1.0 --set ema_decay=0.999
            --set eval_every=500)

# Jobs run one after another: on one GPU, concurrent processes are time-sliced and five of them
# together made about a third of the steps one makes alone (measured on the H200).
robust_logs() {  # logs travel as logs.tgz, SR weights as sr_models.tar ($OUT takes 8 files)
  logs=$WORK/logs ship=$WORK/ship  # global: the EXIT trap reads them
  mkdir -p "$logs" "$ship"
  trap 'tar czf "$OUT/logs.tgz" -C "$logs" . ; tar cf "$OUT/sr_models.tar" -C "$ship" .' EXIT
}

robust_seg_stage() {  # held-out drive run (model selection, report), then the shipping run
  local budget=${SEG_BUDGET:-190}
  robust_logs
  seg_stage "$budget" "$WORK/seg_holdout" "${ROBUST_SEG[@]}" \
    --set holdout_sequences=0006R0 ${SEG_SET:-} 2>&1 | tee "$logs/seg_holdout.log" | grep eval
  cp "$WORK/seg_holdout/best.pt" "$OUT/seg_icnet_holdout.pt"
  seg_stage "$budget" "$WORK/seg" "${ROBUST_SEG[@]}" ${SEG_SET:-} 2>&1 \
    | tee "$logs/seg.log" | grep eval
  cp "$WORK/seg/last.pt" "$OUT/seg_icnet.pt"
}

aware_sr() {  # $1: scale, $2: base SR checkpoint, $3: seg checkpoint, $4: budget s -> $ship
  local s=$1
  cli finetune-sr --out "$WORK/sr_x${s}_aware" --set data="$DATA" --set scale="$s" \
    --set sr_checkpoint="$2" --set seg_checkpoint="$3" \
    --set time_budget_s="$4" --set eval_every=1000 --set log_every=100 \
    --set lr_cache_dir="$WORK/lr_cache" 2>&1 | tee "$logs/ft_x$s.log" | grep "done at\|blend"
  cp "$WORK/sr_x${s}_aware/last.pt" "$ship/sr_carnm_x${s}_aware.pt"
}

robust_sr_stage() {  # codec-aware base SR, then aware fine-tuning against $SEG_CKPT, x2 x3 x4
  local sr_budget=${SR_BUDGET:-55} ft_budget=${FT_BUDGET:-45} seg=${SEG_CKPT:?SEG_CKPT}
  robust_logs
  for s in 2 3 4; do
    cli train-sr --out "$WORK/sr_x$s" --set data="$DATA" --set scale="$s" \
      --set time_budget_s="$sr_budget" --set eval_every=1000 --set log_every=200 \
      --set lr_cache_dir="$WORK/lr_cache" 2>&1 | tee "$logs/sr_x$s.log" | grep "done at"
    cp "$WORK/sr_x$s/last.pt" "$ship/sr_carnm_x$s.pt"
    aware_sr "$s" "$WORK/sr_x$s/last.pt" "$seg" "$ft_budget"
  done
}

# A new camera's unlabeled frames ($UNLABELED, e.g. the highway clip) in the consistency term of
# train-seg (first 70 % train, the rest score unlabeled_agree_jpeg50).
UNLABELED_SEG=(--set unlabeled="${UNLABELED:-}" --set unlabeled_batch=8 --set unlabeled_weight=1.0)

unlabeled_holdout_stage() {  # held-out drive runs, one per width in $WIDTHS (model selection)
  robust_logs
  for width in ${WIDTHS:-32 48}; do
    seg_stage "${SEG_BUDGET:-170}" "$WORK/seg_holdout_w$width" "${ROBUST_SEG[@]}" \
      "${UNLABELED_SEG[@]}" --set width="$width" --set holdout_sequences=0006R0 ${SEG_SET:-} \
      2>&1 | tee "$logs/seg_holdout_unlabeled_w$width.log" | grep "eval\|unlabeled"
  done
}

unlabeled_ship_stage() {  # all drives + unlabeled frames, then aware SR x2/x3/x4 against it
  local ft_budget=${FT_BUDGET:-45}
  robust_logs
  seg_stage "${SEG_BUDGET:-170}" "$WORK/seg" "${ROBUST_SEG[@]}" "${UNLABELED_SEG[@]}" \
    ${SEG_SET:-} 2>&1 | tee "$logs/seg_unlabeled.log" | grep "eval\|unlabeled"
  cp "$WORK/seg/last.pt" "$ship/seg_icnet.pt"
  for s in 2 3 4; do
    aware_sr "$s" "models/sr_carnm_x$s.pt" "$ship/seg_icnet.pt" "$ft_budget"
  done
}

fine_head_stage() {  # head_stride=4: held-out run (CutMix recipe), then shipping + aware SR
  robust_logs
  local h4=(--set head_stride=4 --set cutmix_prob=0.5)
  seg_stage "${HOLDOUT_BUDGET:-130}" "$WORK/seg_holdout_h4" "${ROBUST_SEG[@]}" "${h4[@]}" \
    --set holdout_sequences=0006R0 2>&1 | tee "$logs/seg_holdout_h4.log" | grep "eval\|done"
  seg_stage "${SEG_BUDGET:-150}" "$WORK/seg" "${ROBUST_SEG[@]}" "${UNLABELED_SEG[@]}" \
    "${h4[@]}" --set jitter=0.5 2>&1 | tee "$logs/seg_h4.log" | grep "eval\|unlabeled\|done"
  cp "$WORK/seg/last.pt" "$ship/seg_icnet.pt"
  for s in 2 3 4; do
    aware_sr "$s" "models/sr_carnm_x$s.pt" "$ship/seg_icnet.pt" "${FT_BUDGET:-35}"
  done
}

recipe_holdout_stage() {  # every recipe ("k=v k=v ...") on every drive of $HOLDOUT, then a table
  robust_logs
  local drive i recipe sets log
  for drive in ${HOLDOUT:-0006R0}; do
    i=0
    for recipe in "$@"; do
      i=$((i + 1))
      sets=()
      for kv in $recipe; do sets+=(--set "$kv"); done
      log=$logs/seg_holdout_${drive}_recipe$i.log
      echo "recipe $i on $drive: $recipe" | tee "$log"
      seg_stage "${SEG_BUDGET:-150}" "$WORK/seg_${drive}_recipe$i" "${ROBUST_SEG[@]}" \
        --set holdout_sequences="$drive" "${sets[@]}" 2>&1 \
        | tee -a "$log" | grep "eval\|done"
    done
  done
  "$PY" -m cloudseg_ros.training.holdout_summary "$logs"/seg_holdout_*_recipe*.log \
    | tee "$logs/holdout_summary.md"
}

# `cloudseg adapt` on $INPUT (video or image folder) with its last 30 % held out, then
# bench-stream of exactly those frames (--skip-frames) through the source and the adapted
# folder: the held-out gain at equal bitrate through the robot's real stream.
#   INPUT=.data_hw/highway_1280x720_25fps.mp4 SCALE=4 bash scripts/gpu_train.sh adapt-stream
adapt_stream_stage() {
  local input=${INPUT:?INPUT} scale=${SCALE:-4} device=${DEVICE:-cuda} adapted=$WORK/adapted
  cli adapt --input "$input" --scale "$scale" --out "$adapted" --device "$device" \
    --models "${MODELS:-models}" \
    --set holdout_frac=0.3 --set time_budget_s="${ADAPT_BUDGET:-60}" ${ADAPT_SET:-} \
    2>&1 | tee "$OUT/adapt.log" | grep -v "^adapt[-a-z]* [0-9]*/"
  cp "$adapted/adapt.json" "$OUT/"
  local skip held
  skip=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["frames_train"])' \
    "$adapted/adapt.json")
  held=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["frames_holdout"])' \
    "$adapted/adapt.json")
  for name in source adapted; do
    local models=${MODELS:-models}
    [ "$name" = adapted ] && models=$adapted
    cli bench-stream --input "$input" --skip-frames "$skip" --max-frames "$held" \
      --models "$models" --device "$device" --cache "$WORK/mask_cache" \
      --sr-scales "$scale" --downsample-scales "$scale" ${BENCH_ARGS:-} \
      --json "$OUT/bench_$name.json" 2>&1 | tee "$OUT/bench_$name.log" | grep -v "^points"
  done
}

# A labelled drive as a street the nets never saw: segmentation and SR trained without drive
# $NEW_DRIVE. The drive's frames are 1 s apart, so its clip streams at 1 fps.
split_drive() {  # $1: drive -> $root/known (camvid11 without it), $root/clip (its frames)
  "$PY" - "$DATA" "$root" "$1" <<'PYEOF'
import csv, os, sys
data, root, drive = sys.argv[1:]
seqs = {r['stem']: r['sequence'] for r in csv.DictReader(open(os.path.join(data, 'frames.csv')))}
for sub in ('images', 'labels'):
    for dest in (f'{root}/known/camvid11/train/{sub}', f'{root}/clip/{sub}'):
        os.makedirs(dest, exist_ok=True)
    for name in sorted(os.listdir(f'{data}/train/{sub}')):
        stem = os.path.splitext(name)[0]
        dest = 'clip' if seqs[stem] == drive else 'known/camvid11/train'
        os.symlink(os.path.abspath(f'{data}/train/{sub}/{name}'), f'{root}/{dest}/{sub}/{name}')
for name in ('val', 'classes.txt', 'frames.csv'):
    os.symlink(os.path.abspath(f'{data}/{name}'), f'{root}/known/camvid11/{name}')
PYEOF
}

known_models() {  # $@: SR scales -> $root/models, trained on $root/known only
  DATA=$root/known/camvid11 seg_stage "${SEG_BUDGET:-120}" "$WORK/seg_known" \
    "${ROBUST_SEG[@]}" ${SEG_SET:-} 2>&1 | tee "$logs/seg_known.log" | grep "eval\|done"
  mkdir -p "$root/models"
  cp "$WORK/seg_known/last.pt" "$root/models/seg_icnet.pt"
  for s in "$@"; do
    DATA=$root/known/camvid11 sr_chain "$s" "${SR_BUDGET:-45}" "${FT_BUDGET:-35}" \
      "$root/models/seg_icnet.pt" 2>&1 | tee "$logs/sr_known_x$s.log" | grep "done at\|blend"
    cp "$WORK/sr_x$s/last.pt" "$root/models/sr_carnm_x$s.pt"
    cp "$WORK/sr_x${s}_aware/last.pt" "$root/models/sr_carnm_x${s}_aware.pt"
  done
}

new_drive_stage() {  # adapt-stream on the drive, with its labels (x$SCALE)
  local root=$WORK/new_drive
  robust_logs
  split_drive "${NEW_DRIVE:-0006R0}"
  known_models "${SCALE:-4}"
  INPUT=$root/clip MODELS=$root/models adapt_stream_stage
}

new_drive_bench_stage() {  # bench-stream of the whole drive, x2/x3/x4, with its labels
  local root=$WORK/new_drive
  robust_logs
  split_drive "${NEW_DRIVE:-0006R0}"
  known_models 2 3 4
  cli bench-stream --input "$root/clip" --models "$root/models" --device "${DEVICE:-cuda}" \
    --fps 1 ${BENCH_ARGS:-} --json "$OUT/bench_new_drive.json" --plot "$OUT/bench_new_drive.png" \
    2>&1 | tee "$OUT/bench_new_drive.log" | grep -v "^points"
}

case $stage in
  new-drive)
    new_drive_stage
    ;;
  new-drive-bench)
    new_drive_bench_stage
    ;;
  adapt-stream)
    adapt_stream_stage
    ;;
  recipe-holdout)
    shift
    recipe_holdout_stage "$@"
    ;;
  fine-head)
    fine_head_stage
    ;;
  unlabeled-holdout)
    unlabeled_holdout_stage
    ;;
  unlabeled-ship)
    unlabeled_ship_stage
    ;;
  robust-seg)
    robust_seg_stage
    ;;
  robust-sr)
    robust_sr_stage
    ;;
  smoke)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -c 'import torch, cv2, yaml, matplotlib; print(torch.__version__, cv2.__version__)'
    seg_stage 25 "$WORK/seg_smoke" --set steps=100000 2>&1 | tee "$OUT/log_seg"
    sr_chain 4 20 20 "$WORK/seg_smoke/best.pt" 2>&1 | tee "$OUT/log_sr"
    mkdir -p "$WORK/m"
    cp "$WORK/seg_smoke/best.pt" "$WORK/m/seg_icnet.pt"
    cp "$WORK/sr_x4/last.pt" "$WORK/m/sr_carnm_x4.pt"
    cp "$WORK/sr_x4_aware/last.pt" "$WORK/m/sr_carnm_x4_aware.pt"
    cli eval --data "$DATA" --split val --scale 4 --json "$OUT/eval_smoke.json" \
      --models "$WORK/m" --max-frames 16 2>&1 | tee "$OUT/log_eval"
    ;;
  seg)
    seg_stage "${SEG_BUDGET:-420}" "$WORK/seg" ${SEG_SET:-} 2>&1 | tee "$OUT/log_seg"
    cp "$WORK/seg/best.pt" "$OUT/seg_icnet.pt"
    ;;
  sr)
    seg=${SEG_CKPT:-models/seg_icnet.pt}
    sr_chain 2 "${SR_BUDGET:-150}" "${FT_BUDGET:-150}" "$seg" > "$OUT/log_x2" 2>&1 &
    pid2=$!
    sr_chain 4 "${SR_BUDGET:-150}" "${FT_BUDGET:-150}" "$seg" 2>&1 | tee "$OUT/log_x4"
    wait "$pid2" || { tail -40 "$OUT/log_x2"; exit 1; }
    tail -5 "$OUT/log_x2"
    for s in 2 4; do
      cp "$WORK/sr_x$s/last.pt" "$OUT/sr_carnm_x$s.pt"
      cp "$WORK/sr_x${s}_aware/last.pt" "$OUT/sr_carnm_x${s}_aware.pt"
    done
    ;;
  eval)
    for s in 2 4; do
      cli eval --data "$DATA" --split val --scale "$s" --json "$OUT/eval_x$s.json" \
        --md "$OUT/eval_x$s.md" --plot "$OUT/eval_x$s.png" 2>&1 | tee "$OUT/log_eval_x$s"
    done
    ;;
  *)
    echo "unknown stage '$stage' (see the usage line)" >&2
    exit 2
    ;;
esac
