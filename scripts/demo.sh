#!/usr/bin/env bash
# The gear job end to end: find the photos, pack, train, evaluate on the catalog test photos and on
# the outdoor benchmark (the same photos pasted on real scenes). Called by `make demo`.
#   GEARSIGHT_DEMO=scratch make demo    # the from-scratch GearNet recipe at 64 px instead
#   GEARSIGHT_DEMO=catalog make demo    # from scratch, catalog photos only, 96 px: the best test figure
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${GEARSIGHT_WORK:-work}
export GEARSIGHT_WORK="$WORK"
RECIPE=${GEARSIGHT_DEMO:-lite0}
case "$RECIPE" in
  lite0)   SIZE=144; CONFIG=configs/gear-lite0.yaml ;;    # EfficientNet-Lite0 from ImageNet + background augmentation
  scratch) SIZE=64;  CONFIG=configs/gear-scratch.yaml ;;  # GearNet from scratch + background augmentation
  catalog) SIZE=96;  CONFIG=configs/gear-scratch-catalog.yaml ;;  # GearNet from scratch, three seeds, no scenes
  *) echo "GEARSIGHT_DEMO must be lite0, scratch or catalog, not '$RECIPE'" >&2; exit 2 ;;
esac

# ../shared/data/NAME when present (or $GEARSIGHT_DATA/NAME); otherwise download it once, verified.
need() {
  if ! "$BIN/gearsight" datasets where "$1" 2>/dev/null; then
    "$BIN/gearsight" datasets download "$1" >&2
    "$BIN/gearsight" datasets where "$1"
  fi
}
GEAR=$(need gear)
echo "== gear photos: $GEAR"
# COCO128's scenes serve background augmentation (one half) and the outdoor benchmark (the other).
OVERRIDES=()
if COCO=$(need coco128); then
  echo "== scenes: $COCO"
else
  echo "== COCO128 unavailable: training without background augmentation, no outdoor benchmark" >&2
  COCO=""; OVERRIDES=(--background-p 0)
fi

stage() { echo "   ($(( SECONDS - stage_start )) s)"; stage_start=$SECONDS; }  # each stage's wall time
stage_start=$SECONDS
echo "== pack (decode once, $SIZE px, pad to square)"
"$BIN/gearsight" pack "$GEAR/split.csv" "$WORK/gear$SIZE" --size "$SIZE" --resize pad --quiet
stage
if [ -n "$COCO" ]; then
  echo "== outdoor benchmark (test photos cut out and pasted on scenes never trained on)"
  "$BIN/gearsight" outdoor "$GEAR/split.csv" "$WORK/outdoor" --pack "$WORK/outdoor$SIZE" --size "$SIZE"
  stage
fi

echo "== train ($CONFIG)"
"$BIN/gearsight" train "$WORK/gear$SIZE" --out "$WORK/runs/gear" --config "$CONFIG" "${OVERRIDES[@]}" --quiet
stage

echo "== evaluate on the test split (catalog photos)"
"$BIN/gearsight" evaluate "$WORK/runs/gear/model.safetensors" "$WORK/gear$SIZE" --split test --out "$WORK/runs/gear/eval-test"
stage
if [ -n "$COCO" ]; then
  echo "== evaluate on the outdoor benchmark (the same test photos on real scenes)"
  "$BIN/gearsight" evaluate "$WORK/runs/gear/model.safetensors" "$WORK/outdoor$SIZE" --split test \
    --out "$WORK/runs/gear/eval-outdoor"
  stage
  "$BIN/python" - "$WORK/runs/gear" <<'PY'
import json, sys
run = sys.argv[1]
test, outdoor = (json.load(open(f"{run}/eval-{s}/report.json")) for s in ("test", "outdoor"))
print(f"\n== gear: test accuracy {test['accuracy']:.2%} (catalog photos), outdoor accuracy "
      f"{outdoor['accuracy']:.2%} (the same photos on real scenes); ECE {test['ece']:.3f} / {outdoor['ece']:.3f}")
PY
fi
