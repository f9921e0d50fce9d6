#!/usr/bin/env python3
"""musicrl bench and the PyTorch reference, side by side, in alternating rounds.

    python3 scripts/bench_side_by_side.py --torch-python /tmp/torchvenv/bin/python \
        --musicrl target/release/musicrl --rounds 3 --iters 5

Each round runs `musicrl bench` and then `../shared/bench/torch_policy_bench.py` (same
workloads: cached sampling at each batch, the learner update), one after the other, so
both see the same machine state. Prints a Markdown table: each side's median tokens/s and
GFLOP/s over the rounds, and the median of the per-round ratios (musicrl / PyTorch).

Standard library only. PyTorch is a benchmark dependency: install it in a throwaway virtual
environment (`python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch`),
never in the tests' environment.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_musicrl(binary: str, iters: int, batches: list[int]) -> dict[tuple[str, int], dict]:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run(
            [binary, "bench", "--iters", str(iters), "--workloads", "engine,burn,learner",
             "--batches", ",".join(map(str, batches)), "--json", f.name],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = json.load(open(f.name))
    out = {}
    for m in report["measurements"]:
        out[(m["kind"], m["batch"])] = m
    return out


def run_torch(python: str, script: Path, iters: int, batches: list[int],
              threads: int) -> dict[tuple[str, int], dict]:
    args = [python, str(script), "--iters", str(iters), "--workloads", "cached,learner",
            "--sweep", ",".join(map(str, batches))]
    if threads:
        args += ["--threads", str(threads)]
    res = subprocess.run(args, check=True, capture_output=True, text=True)
    out = {}
    for line in res.stdout.splitlines():
        rec = json.loads(line)
        if rec.get("kind") in ("cached", "learner"):
            out[(rec["kind"], rec["batch"])] = rec
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--musicrl", default=str(ROOT / "target/release/musicrl"))
    ap.add_argument("--torch-python", required=True, help="a python with torch installed")
    ap.add_argument("--torch-bench", default=str(ROOT.parent / "shared/bench/torch_policy_bench.py"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    ap.add_argument("--json", help="also write every round's numbers here")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b]

    rows: dict[str, dict[str, list[float]]] = {}
    order: list[str] = []
    rounds = []
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}: musicrl", file=sys.stderr, flush=True)
        ours = run_musicrl(args.musicrl, args.iters, batches)
        print(f"round {r + 1}/{args.rounds}: torch", file=sys.stderr, flush=True)
        theirs = run_torch(args.torch_python, Path(args.torch_bench), args.iters, batches,
                           args.torch_threads)
        rounds.append({"musicrl": {f"{k}/{b}": v for (k, b), v in ours.items()},
                       "torch": {f"{k}/{b}": v for (k, b), v in theirs.items()}})
        pairs = [(f"sampling with the cache, batch {b} (musicrl: rollout engine)", ("engine", b), ("cached", b))
                 for b in batches]
        pairs += [(f"sampling with the cache, batch {b} (musicrl: burn)", ("burn", b), ("cached", b))
                  for (k, b) in ours if k == "burn"]
        pairs += [(f"learner update, batch {b}", ("learner", b), ("learner", b))
                  for (k, b) in ours if k == "learner"]
        for name, mk, tk in pairs:
            if mk not in ours or tk not in theirs:
                continue
            row = rows.setdefault(name, {"ours": [], "theirs": [], "ratio": [],
                                         "ours_gf": [], "theirs_gf": []})
            if name not in order:
                order.append(name)
            a, b = ours[mk], theirs[tk]
            row["ours"].append(a["tokens_per_second"])
            row["theirs"].append(b["tokens_per_second"])
            row["ratio"].append(a["tokens_per_second"] / b["tokens_per_second"])
            row["ours_gf"].append(a["gflops_per_second"])
            row["theirs_gf"].append(b["flops_per_iteration"] / b["median_seconds"] / 1e9)

    med = statistics.median
    print("| workload | musicrl tokens/s | PyTorch tokens/s | ratio | musicrl GFLOP/s | PyTorch GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in order:
        r = rows[name]
        print(f"| {name} | {med(r['ours']):,.0f} | {med(r['theirs']):,.0f} | {med(r['ratio']):.2f} "
              f"| {med(r['ours_gf']):.1f} | {med(r['theirs_gf']):.1f} |")
    if args.json:
        json.dump(rounds, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
