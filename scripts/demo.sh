#!/usr/bin/env bash
# The gear job end to end: find the photos, pack, train, evaluate. Called by `make demo`.
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${GEARSIGHT_WORK:-work}
export GEARSIGHT_WORK="$WORK"

# ../shared/data/gear when present (or $GEARSIGHT_DATA/gear); otherwise download it once, verified.
if ! GEAR=$("$BIN/gearsight" datasets where gear 2>/dev/null); then
  "$BIN/gearsight" datasets download gear
  GEAR=$("$BIN/gearsight" datasets where gear)
fi
echo "== gear photos: $GEAR"

echo "== pack (decode once, 64 px, pad to square)"
"$BIN/gearsight" pack "$GEAR/split.csv" "$WORK/gear64" --size 64 --resize pad

echo "== train"
start=$(date +%s)
"$BIN/gearsight" train "$WORK/gear64" --out "$WORK/runs/gear" --quiet
echo "train wall time: $(( $(date +%s) - start )) s"

echo "== evaluate on the test split"
"$BIN/gearsight" evaluate "$WORK/runs/gear/model.safetensors" "$WORK/gear64" --split test --out "$WORK/runs/gear/eval-test"
