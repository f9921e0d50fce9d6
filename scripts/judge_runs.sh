#!/usr/bin/env bash
# Trains RUNS independent runs of a recipe with `musicrl local` (seeds 1..RUNS for the learner
# and the actors) and judges each final checkpoint against θ0 with the rater panel
# (`musicrl judge`), then summarises mean and spread (scripts/summarise_judge.py).
#
#   scripts/judge_runs.sh NAME CONFIG STEPS RUNS [OUT] [FIRST]   (runs FIRST..RUNS; FIRST defaults to 1)
#   scripts/judge_runs.sh rl-r "" 200 3              # the default recipe (RL-R), 3 runs
#   scripts/judge_runs.sh rl-u config/rl-u.toml 50 3
#
# Needs a release build (cargo build --release). Writes OUT/NAME-K/ (the run, its logs and
# judge/results.json + judge/samples/*.jsonl, with the reward components' agreement with the
# judge on the judged clips, `--rewards`); OUT defaults to runs/results.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 config=$2 steps=$3 runs=$4 out=${5:-runs/results} first=${6:-1}
bin=./target/release/musicrl
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
mkdir -p "$out"
config_flag=()
[ -n "$config" ] && config_flag=(--config "$config")
for k in $(seq "$first" "$runs"); do
  dir="$out/$name-$k"
  rm -rf "$dir"
  echo "== $name run $k: $steps steps -> $dir" >&2
  MUSICRL_ACTOR_SEED=$k MUSICRL_LEARNER_SEED=$k \
    "$bin" "${config_flag[@]}" local --steps "$steps" --overwrite --out "$dir" > "$out/$name-$k.log" 2>&1
  ckpt="$(ls -d "$dir"/checkpoints/step-* | sort | tail -1)/policy.bpk"
  "$bin" "${config_flag[@]}" judge --policy "$ckpt" --name "$name-$k" --out "$dir/judge" --rewards \
    > "$dir/judge.txt" 2> "$dir/judge.log"
  cat "$dir/judge.txt" >&2
done
python3 scripts/summarise_judge.py "$out/$name"-*/judge/results.json
