#!/usr/bin/env python3
"""Mean and spread over runs of `musicrl judge` results (each: one policy against theta0).

    python3 scripts/summarise_judge.py runs/results/rl-r-*/judge/results.json
"""
import json
import statistics
import sys


def spread(xs):
    xs = [x for x in xs if x == x]  # drop NaN
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def proxy(path):
    """The run's proxy rewards over its first and last 20 steps, and its final KL, from the
    history.jsonl beside judge/ (a `musicrl local` run folder); None without one."""
    import os
    history = os.path.join(os.path.dirname(os.path.dirname(path)), "history.jsonl")
    if not os.path.exists(history):
        return None
    steps = [json.loads(line) for line in open(history) if line.strip()]
    policy_steps = [s for s in steps if not s.get("value_warmup")]
    if len(policy_steps) < 2:
        return None
    k = max(1, min(20, len(policy_steps) // 2))

    def mean(xs, name):
        return statistics.mean(dict(x["component_means"]).get(name, float("nan")) for x in xs)

    names = [n for n, _ in policy_steps[0]["component_means"]]
    return {
        "components": {n: (mean(policy_steps[:k], n), mean(policy_steps[-k:], n)) for n in names},
        "kl": statistics.mean(s["kl"] for s in policy_steps[-k:]),
    }


rows = []
proxies = []
for path in sys.argv[1:]:
    p = proxy(path)
    if p:
        proxies.append((path, p))
    report = json.load(open(path))["report"]
    models = {m["model"]: m for m in report["models"]}
    for c in report["comparisons"]:
        if "theta0" not in (c["a"], c["b"]):
            continue
        policy, base = (c["a"], c["b"]) if c["b"] == "theta0" else (c["b"], c["a"])
        flip = c["a"] == "theta0"
        win, loss = (c["loss_pct"], c["win_pct"]) if flip else (c["win_pct"], c["loss_pct"])
        rate = 1 - c["win_rate"] if flip else c["win_rate"]
        rows.append({
            "run": policy, "win": win, "tie": c["tie_pct"], "loss": loss, "win_rate": rate,
            "p": c["p_value"],
            **{f"{k}_{who}": models[m][k]
               for who, m in (("policy", policy), ("theta0", base))
               for k in ("overall", "adherence", "quality", "appeal", "measured_key",
                         "measured_meter", "measured_well_formed")},
        })
if not rows:
    sys.exit("no comparisons against theta0 in the given results")
for r in rows:
    print(f"{r['run']:<16} win {r['win']:5.1f}%  tie {r['tie']:5.1f}%  loss {r['loss']:5.1f}%  "
          f"win rate {r['win_rate']:.3f}  p {r['p']:.2e}  "
          f"overall {r['overall_policy']:.2f} vs {r['overall_theta0']:.2f}  "
          f"adherence {r['adherence_policy']:.2f} vs {r['adherence_theta0']:.2f}  "
          f"quality {r['quality_policy']:.2f} vs {r['quality_theta0']:.2f}  "
          f"appeal {r['appeal_policy']:.2f} vs {r['appeal_theta0']:.2f}")
print()
print(f"over {len(rows)} runs (mean ± sd):")
for k in ("win", "tie", "loss", "win_rate"):
    print(f"  {k:<22} {spread([r[k] for r in rows])}")
for k in ("overall", "adherence", "quality", "appeal", "measured_key", "measured_meter",
          "measured_well_formed"):
    print(f"  {k:<22} policy {spread([r[k + '_policy'] for r in rows])}   "
          f"theta0 {spread([r[k + '_theta0'] for r in rows])}")
for path, p in proxies:
    parts = "  ".join(f"{n} {a:.3f} -> {b:.3f}" for n, (a, b) in p["components"].items())
    print(f"  proxy rewards (first -> last 20 policy steps) {parts}  KL {p['kl']:.3f}   [{path}]")
print(f"  runs with p < 0.05      {sum(r['p'] < 0.05 for r in rows)} of {len(rows)} "
      f"(policy ahead in {sum(r['win_rate'] > 0.5 and r['p'] < 0.05 for r in rows)})")
