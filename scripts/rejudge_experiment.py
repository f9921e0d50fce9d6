#!/usr/bin/env python3
"""Re-judges an experiment's chosen models against θ0 on another prompt file, seed by seed,
with `musicrl judge` (an independent check of the table: e.g. an experiment that chose its
checkpoints on the judge's own prompts, judged again on prompts it never saw).

    python3 scripts/rejudge_experiment.py runs/experiment data/prompts/select.txt OUT

Writes OUT/seed-N/ (results.json, samples/) and prints each recipe's win rate over θ0 per
seed and its mean ± sd. Needs a release build.
"""
import json
import os
import statistics
import subprocess
import sys


def main(exp, prompts, out):
    r = json.load(open(os.path.join(exp, "results.json")))
    rates = {}
    for seed in r["seeds"]:
        runs = [x for x in r["runs"] if x["seed"] == seed]
        cmd = ["./target/release/musicrl", "judge", "--prompts", prompts, "--seed", str(seed),
               "--out", os.path.join(out, f"seed-{seed}")]
        for x in runs:
            cmd += ["--policy", x["chosen"], "--name", f"{x['recipe']}-{seed}"]
        print(" ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        rep = json.load(open(os.path.join(out, f"seed-{seed}", "results.json")))["report"]
        for c in rep["comparisons"]:
            if c["b"] == "theta0":
                recipe = c["a"].rsplit("-", 1)[0]
                rates.setdefault(recipe, []).append((c["win_rate"], c["p_value"]))
    print("| model | against | win rate (mean ± sd) | per seed: win rate (p) |")
    print("|---|---|---:|---|")
    for recipe, xs in rates.items():
        ws = [w for w, _ in xs]
        sd = statistics.stdev(ws) if len(ws) > 1 else 0.0
        per = ", ".join(f"{w:.3f} ({p:.2g})" for w, p in xs)
        print(f"| {recipe} | theta0 | **{statistics.mean(ws):.3f} ± {sd:.3f}** | {per} |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
