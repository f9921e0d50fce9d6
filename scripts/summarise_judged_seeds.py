#!/usr/bin/env python3
"""The paper's experiment over seeds judged in more than one `musicrl experiment` folder
(e.g. `--runs 1` then `--first-seed 2 --runs 4`): reads every DIR/judge/seed-N.json and
DIR/runs/<model>-N/selection.json and prints the same Markdown tables as
summarise_experiment.py prints for one results.json — win rates against θ0 and each other
(mean ± sd over seeds, each seed's win rate and p), mean panel scores, checkpoint choices.

    python3 scripts/summarise_judged_seeds.py runs/experiment-a runs/experiment-b
"""
import glob
import json
import math
import os
import re
import statistics
import sys


def f(x, digits=3):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def p_text(p):
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return f"{p:.2f}" if p >= 0.01 else f"{p:.1e}"


def mean_sd(xs):
    if not xs:
        return "–"
    if len(xs) == 1:
        return f(xs[0])
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def main(dirs):
    seeds = {}
    for d in dirs:
        for path in glob.glob(os.path.join(d, "judge", "seed-*.json")):
            seed = int(re.search(r"seed-(\d+)\.json$", path).group(1))
            seeds[seed] = (d, json.load(open(path)))
    order = sorted(seeds)
    recipe = lambda model: model.rsplit("-", 1)[0]
    rows = {}
    scores = {}
    for seed in order:
        _, j = seeds[seed]
        for c in j["comparisons"]:
            a, b = recipe(c["a"]), recipe(c["b"])
            # Every pair as "recipe against the baseline or the earlier recipe", θ0 last.
            key, flip = (a, b), False
            if a == "theta0":
                key, flip = (b, a), True
            rows.setdefault(key, []).append((seed, c, flip))
        for m in j["models"]:
            scores.setdefault(recipe(m["model"]), []).append(m)
    print(f"{len(order)} seeds judged: {', '.join(map(str, order))}\n")
    print("| model | against | win | tie | loss | win rate (mean ± sd) | per seed: win rate (p) |")
    print("|---|---|---:|---:|---:|---:|---|")
    wanted = [("rl-r", "theta0"), ("rl-u", "theta0"), ("rl-ru", "theta0"), ("joint", "theta0"),
              ("rl-ru", "rl-r"), ("rl-ru", "rl-u"), ("rl-r", "rl-u"), ("rl-ru", "joint"), ("rl-r", "joint")]
    for a, b in wanted:
        entries = rows.get((a, b)) or [(s, c, not fl) for s, c, fl in rows.get((b, a), [])]
        if not entries:
            continue
        wins, ties, losses, rates, per = [], [], [], [], []
        for seed, c, flip in entries:
            w, l = (c["loss_pct"], c["win_pct"]) if flip else (c["win_pct"], c["loss_pct"])
            rate = 1 - c["win_rate"] if flip else c["win_rate"]
            wins.append(w)
            ties.append(c["tie_pct"])
            losses.append(l)
            rates.append(rate)
            per.append(f"{f(rate)} ({p_text(c['p_value'])})")
        print(
            f"| {a} | {b} | {statistics.mean(wins):.1f}% | {statistics.mean(ties):.1f}% | "
            f"{statistics.mean(losses):.1f}% | **{mean_sd(rates)}** | {', '.join(per)} |"
        )
    print()
    print("| model | overall | adherence | quality | appeal | key | meter | well-formed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ["rl-r", "rl-u", "rl-ru", "joint", "theta0"]:
        ms = scores.get(name, [])
        if not ms:
            continue
        cell = lambda k: f"{statistics.mean(m[k] for m in ms):.2f}"
        print(
            f"| {name} | {cell('overall')} | {cell('adherence')} | {cell('quality')} | {cell('appeal')} | "
            f"{cell('measured_key')} | {cell('measured_meter')} | {cell('measured_well_formed')} |"
        )
    print()
    print("| run | chosen step | its held-out | runner-up step | margin ± se | rule |")
    print("|---|---:|---:|---:|---:|---|")
    for seed in order:
        d, _ = seeds[seed]
        for name in ["rl-r", "rl-u", "rl-ru", "joint"]:
            path = os.path.join(d, "runs", f"{name}-{seed}", "selection.json")
            if not os.path.exists(path):
                continue
            s = json.load(open(path))
            print(
                f"| {name}-{seed} | {s['best_step']} | {f(s['best_held_out'])} | {s.get('runner_up_step', '–')} | "
                f"{f(s.get('margin'))} ± {f(s.get('margin_se'))} | {'fired' if s.get('fired') else 'did not fire'} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
