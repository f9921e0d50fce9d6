#!/usr/bin/env python3
"""Percentiles of the melodic statistics the `form` reward's thresholds come from
(rewards/src/form.rs), over the bundled corpus's training split, each tune cut as the policy's
clips are (128 tokens: a note is two tokens, a bar line one).

    python3 scripts/corpus_form_stats.py [--max-tokens 128]

Prints, for each statistic, its 1st/5th/25th/50th/75th/95th/99th percentiles: the pitch span
(semitones), the type-token ratio of four-note pitch patterns, the share of leaps over an
octave and the number of distinct pitches. Nothing here reads the judge."""
import argparse
import gzip
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--corpus", default=str(ROOT / "data/corpus/tunes.jsonl.gz"))
    args = ap.parse_args()
    stats = {"span": [], "ttr": [], "leaps": [], "distinct": []}
    with gzip.open(args.corpus, "rt") as f:
        for line in f:
            tune = json.loads(line)
            if tune["split"] != "train":
                continue
            tokens, pitches = 0, []
            for e in tune["events"]:
                tokens += 1 if e == "|" else 2
                if tokens > args.max_tokens - 1:  # room for END
                    break
                if e != "|" and e[0] >= 0:
                    pitches.append(e[0])
            if len(pitches) < 8:
                continue
            grams = [tuple(pitches[i : i + 4]) for i in range(len(pitches) - 3)]
            stats["span"].append(max(pitches) - min(pitches))
            stats["ttr"].append(len(set(grams)) / len(grams))
            stats["leaps"].append(
                sum(abs(b - a) > 12 for a, b in zip(pitches, pitches[1:])) / (len(pitches) - 1)
            )
            stats["distinct"].append(len(set(pitches)))
    qs = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    print(f"{'statistic':<10} {'clips':>6} " + " ".join(f"p{int(q * 100):<5}" for q in qs))
    for name, xs in stats.items():
        xs.sort()
        row = " ".join(f"{xs[int(q * (len(xs) - 1))]:<6.3g}" for q in qs)
        print(f"{name:<10} {len(xs):>6} {row}")


if __name__ == "__main__":
    main()
