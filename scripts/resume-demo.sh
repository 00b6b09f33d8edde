#!/bin/bash
# Kill a training run with SIGKILL after a checkpoint, resume it, and compare every step's loss and the final
# weights with an unbroken run (docs/TRAINING.md, real run (c)).
#
#   scripts/resume-demo.sh ENCORE MODEL_DIR TRAIN.jsonl [WORKDIR]
#   e.g. scripts/resume-demo.sh .build/release/encore mu-debian-init debian/train.jsonl /tmp/resume-demo
set -euo pipefail
ENCORE=$(realpath "$1"); MODEL=$(realpath "$2"); DATA=$(realpath "$3"); WORK=${4:-/tmp/encore-resume-demo}
TOOLS=$(cd "$(dirname "$0")/.." && pwd)/tools
mkdir -p "$WORK" && cd "$WORK" && rm -rf run-c-straight run-c-killed run-c-*.jsonl
ARGS=(train --model "$MODEL" --data "$DATA" --steps 40 --batch-size 8 --encoder-seq-len 64 --decoder-seq-len 16 --lr 1e-3
      --warmup 10 --bucket-by-length --save-every 10 --progress lines --progress-every 10)
"$ENCORE" "${ARGS[@]}" --out run-c-straight --log run-c-straight.jsonl 2> run-c-straight.stderr
"$ENCORE" "${ARGS[@]}" --out run-c-killed --log run-c-killed.jsonl 2> run-c-killed.stderr &
PID=$!
while [ ! -f run-c-killed/checkpoints/state-20/checkpoint.json ]; do sleep 0.5; done
sleep 4
kill -9 $PID
wait $PID || echo "killed: exit status $?"
"$ENCORE" "${ARGS[@]}" --out run-c-killed --log run-c-resumed.jsonl --resume 2> run-c-resumed.stderr
grep '"resumed"' run-c-resumed.stderr
python3 "$TOOLS/compare_train_logs.py" run-c-straight.jsonl run-c-killed.jsonl run-c-resumed.jsonl
cmp run-c-straight/model.safetensors run-c-killed/model.safetensors && echo "final weights identical"
