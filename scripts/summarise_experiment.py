#!/usr/bin/env python3
"""Prints an experiment's results.json (musicrl experiment) as Markdown tables: the win
rates over seeds, the mean scores, and each run's checkpoint selection.

    python3 scripts/summarise_experiment.py runs/experiment/results.json
"""
import json
import math
import sys


def f(x, digits=3):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def p_text(p):
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.2f}" if p >= 0.01 else f"{p:.1e}"


def main(path):
    r = json.load(open(path))
    seeds = r["seeds"]
    print(f"{len(r['plan']['recipes'])} recipes × {len(seeds)} seeds, {r['wall_seconds'] / 60:.0f} min\n")
    print("| model | against | win | tie | loss | win rate (mean ± sd) | per seed: win rate (p) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for row in r["table"]:
        per = ", ".join(f"{f(c['win_rate'])} ({p_text(c['p_value'])})" for c in row["runs"])
        print(
            f"| {row['a']} | {row['b']} | {row['win_pct']:.1f}% | {row['tie_pct']:.1f}% | {row['loss_pct']:.1f}% "
            f"| **{f(row['win_rate'])} ± {f(row['win_rate_sd'])}** | {per} |"
        )
    print("\n| model | overall | adherence | quality | appeal | key | meter | well-formed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in r["scores"]:
        cells = [f"{f(s[k]['mean'], 2)} ± {f(s[k]['sd'], 2)}" for k in
                 ["overall", "adherence", "quality", "appeal", "key", "meter", "well_formed"]]
        print(f"| {s['recipe']} | " + " | ".join(cells) + " |")
    print("\n| run | start's held-out | chosen step | its held-out | final step's held-out | KL at chosen | rule |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for run in r["runs"]:
        curve = run["curve"]
        sel = run["selection"]
        chosen = next(p for p in curve if p["step"] == sel["best_step"])
        fired = sel.get("fired")
        rule = f"fired at step {fired['step']}" if fired else "did not fire"
        print(
            f"| {run['recipe']}-{run['seed']} | {f(curve[0]['judge_overall'])} | {sel['best_step']} "
            f"| {f(sel['best_held_out'])} | {f(curve[-1]['judge_overall'])} | {f(chosen['kl'], 1)} | {rule} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/experiment/results.json")
