#!/usr/bin/env bash
# The resident memory of a MusicGen learner serving version 0 (start-up done, no update yet),
# whole decoder and with adapters, on a random folder of a published width:
#   /tmp/tvenv/bin/python scripts/bench_musicgen.py --shape medium --decoder-layers 8 --write-only
#   bash scripts/learner_memory.sh /tmp/musicgen-medium-8layers-random [target/release/musicrl]
# Prints VmRSS (now) and VmHWM (the peak, loading included) per rank.
set -euo pipefail
folder=${1:?usage: scripts/learner_memory.sh FOLDER [BIN]}
bin=${2:-target/release/musicrl}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for rank in 0 16; do
  "$bin" --config config/musicgen-small.toml --set policy.folder="$folder" \
    --set policy.frames=10 --set policy.max_tokens=40 --set policy.lora.rank=$rank \
    --set 'reward.components=[{kind="token-fraction", target_below=512}]' \
    --set learner.checkpoint_dir="$work/ckpt-$rank" --set learner.metrics_listen= \
    --set learner.listen=127.0.0.1:0 learner > "$work/learner-$rank.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 240); do grep -q "learner serving" "$work/learner-$rank.log" && break; sleep 0.5; done
  sleep 8
  echo "policy.lora.rank = $rank: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \t' ' ' | tr '\n' ' ')"
  kill -INT $pid; wait $pid 2>/dev/null || true
done
