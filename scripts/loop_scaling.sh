#!/bin/bash
# The whole loop at 1, 2 and 4 actors, sampling with burn and with the rollout engine:
# wall time, samples/s and the learner's idle share (time waiting for a batch / (waiting +
# updating), from history.jsonl). Numbers go in docs/performance.md.
#   bash scripts/loop_scaling.sh [OUT_DIR]     (release build first: cargo build --release)
set -euo pipefail
out=${1:-runs/scaling}
bin=${MUSICRL:-target/release/musicrl}
mkdir -p "$out"
for engine in burn native; do
  for actors in 1 2 4; do
    dir="$out/$engine-$actors"
    rm -rf "$dir"
    MUSICRL__ACTOR__ENGINE=$engine "$bin" local --actors "$actors" --overwrite --out "$dir" > "$dir.log" 2>&1
  done
done
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("| actors | engine | wall s | samples/s | learner idle share | reward first → last 10% | max lag |")
print("|---:|---|---:|---:|---:|---|---:|")
for actors in (1, 2, 4):
    for engine in ("burn", "native"):
        d = out / f"{engine}-{actors}"
        s = json.load(open(d / "summary.json"))
        rows = [json.loads(l) for l in open(d / "history.jsonl")]
        wait = sum(r["batch_wait_seconds"] for r in rows)
        step = sum(r["step_seconds"] for r in rows)
        lag = max(r["policy_lag_mean"] for r in rows)
        print(f"| {actors} | {engine} | {s['wall_seconds']:.1f} | {s['samples_per_second']:.1f} | "
              f"{wait / (wait + step):.0%} | {s['reward_mean_first']:.3f} → {s['reward_mean_last']:.3f} | {lag:.1f} |")
PY
