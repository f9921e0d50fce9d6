#!/usr/bin/env python3
"""Prepare musicrl's folk-tune corpus from the ABC collections that ship with music21.

Re-runnable and deterministic: parses every tune with music21, keeps monophonic melodies
with a known meter and key, and writes data/corpus/tunes.jsonl.gz, one JSON object a line:

  id          "<collection>/<file>#<X number>"
  collection  essen | oneills1850 | ryans_mammoth | airds_airs
  title, type (from the ABC R: field, normalised; "" when unknown), origin (Essen's O: field,
  as a region name; "" when unknown), meter ("6/8"), key_tonic ("D"), key_mode ("major"),
  tempo_bpm (from Q: when given, else null), split (train | validation | test, by a hash of
  the id: 90/5/5), and
  events      [[midi_pitch_or_-1_for_rest, duration_in_twelfths_of_a_quarter], ... , "|" at
              each bar line]

Usage: pip install music21==10.5.1 && python3 scripts/prepare_corpus.py [--limit N]
"""
import argparse
import gzip
import hashlib
import json
import os
import re
import sys
import time
import warnings

import music21
from music21 import converter, corpus

COLLECTIONS = {
    "essenFolksong": "essen",
    "oneills1850": "oneills1850",
    "ryansMammoth": "ryans_mammoth",
    "airdsAirs": "airds_airs",
}

TYPES = {
    "reel": "reel", "jig": "jig", "double jig": "jig", "single jig": "jig",
    "slip jig": "slip jig", "slipjig": "slip jig", "hornpipe": "hornpipe",
    "strathspey": "strathspey", "clog": "clog", "highland fling": "highland fling",
    "air": "air", "waltz": "waltz", "march": "march", "polka": "polka",
    "set dance": "set dance", "long dance": "set dance", "mazurka": "mazurka",
    "schottische": "schottische", "gavotte": "gavotte", "minuet": "minuet",
}

# Essen's O: field is a path such as "Europa, Mitteleuropa, Deutschland".
ORIGINS = {
    "deutschland": "German", "lothringen": "Lorraine", "elsass": "Alsatian",
    "schweiz": "Swiss", "oesterreich": "Austrian", "niederlande": "Dutch",
    "daenemark": "Danish", "polen": "Polish", "china": "Chinese", "jugoslavija": "Yugoslav",
    "frankreich": "French", "rossija": "Russian", "luxemburg": "Luxembourgish",
    "magyarorszag": "Hungarian", "irland": "Irish", "schweden": "Swedish",
    "tschechei": "Czech", "rumaenien": "Romanian", "italia": "Italian", "england": "English",
}


def split_of(tune_id: str) -> str:
    h = int(hashlib.sha256(tune_id.encode()).hexdigest()[:8], 16) % 100
    return "test" if h < 5 else "validation" if h < 10 else "train"


def header_fields(abc_text: str):
    """Maps X number -> {field letter: [values]} from the raw ABC text."""
    tunes, current = {}, None
    for line in abc_text.splitlines():
        m = re.match(r"^([A-Za-z]):\s*(.*)$", line)
        if not m:
            continue
        k, v = m.group(1), m.group(2).strip()
        if k == "X":
            current = v
            tunes[current] = {}
        elif current is not None:
            tunes[current].setdefault(k, []).append(v)
    return tunes


def tune_type(fields):
    for r in fields.get("R", []):
        r = r.strip().lower().rstrip("s]").strip()
        if r in TYPES:
            return TYPES[r]
    return ""


def origin(fields):
    for o in fields.get("O", []):
        for part in reversed([p.strip().lower() for p in o.split(",")]):
            for key, name in ORIGINS.items():
                if key in part:
                    return name
    return ""


def tempo(fields):
    for q in fields.get("Q", []):
        m = re.search(r"(?:(\d+)/(\d+)\s*=\s*)?(\d+)", q)
        if not m:
            continue
        bpm = int(m.group(3))
        if m.group(1):  # the beat unit, converted to quarter notes per minute
            bpm = round(bpm * 4 * int(m.group(1)) / int(m.group(2)))
        if 30 <= bpm <= 300:
            return bpm
    return None


def events_of(score):
    events = []
    part = score.parts[0] if score.parts else score
    for measure in part.getElementsByClass("Measure"):
        for x in measure.flatten().notesAndRests:
            if x.duration.isGrace or x.quarterLength == 0:
                continue
            twelfths = int(round(float(x.quarterLength) * 12))
            if twelfths <= 0:
                continue
            if x.isRest:
                events.append([-1, twelfths])
            elif x.isNote:
                events.append([int(x.pitch.midi), twelfths])
            else:  # a chord: keep its top note (the melody)
                events.append([int(max(p.midi for p in x.pitches)), twelfths])
        events.append("|")
    while events and events[-1] == "|":
        events.pop()
    return events


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "corpus", "tunes.jsonl.gz"))
    ap.add_argument("--limit", type=int, default=0, help="tunes per collection (0 = all)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    root = os.path.join(os.path.dirname(music21.__file__), "corpus")
    rows, skipped, started = [], {}, time.time()
    for folder, name in COLLECTIONS.items():
        files = sorted(
            os.path.relpath(os.path.join(d, f), root)
            for d, _, fs in os.walk(os.path.join(root, folder)) for f in fs if f.endswith(".abc")
        )
        kept = 0
        for rel in files:
            text = open(os.path.join(root, rel), encoding="latin-1").read()
            fields = header_fields(text)
            try:
                opus = converter.parse(os.path.join(root, rel), format="abc", forceSource=True)
            except Exception as e:  # a file music21 cannot read is skipped, and counted
                skipped[f"{rel}: parse error"] = str(e)[:80]
                continue
            scores = opus.scores if hasattr(opus, "scores") else [opus]
            for score in scores:
                number = str(score.metadata.number) if score.metadata and score.metadata.number else ""
                f = fields.get(number, {})
                try:
                    ts = score.flatten().getElementsByClass("TimeSignature")
                    ks = score.flatten().getElementsByClass("KeySignature")
                    if not ts or not ks:
                        skipped["no meter or key"] = skipped.get("no meter or key", 0) + 1
                        continue
                    key = ks[0].asKey() if not hasattr(ks[0], "tonic") else ks[0]
                    events = events_of(score)
                except Exception:
                    skipped["unreadable tune"] = skipped.get("unreadable tune", 0) + 1
                    continue
                notes = [e for e in events if e != "|"]
                if len(notes) < 8:
                    skipped["fewer than 8 notes"] = skipped.get("fewer than 8 notes", 0) + 1
                    continue
                tune_id = f"{rel}#{number}"
                rows.append({
                    "id": tune_id,
                    "collection": name,
                    "title": (score.metadata.title or "").strip(),
                    "type": tune_type(f),
                    "origin": origin(f),
                    "meter": ts[0].ratioString,
                    "key_tonic": key.tonic.name.replace("-", "b"),
                    "key_mode": key.mode if key.mode in ("major", "minor") else "major",
                    "tempo_bpm": tempo(f),
                    "split": split_of(tune_id),
                    "events": events,
                })
                kept += 1
                if args.limit and kept >= args.limit:
                    break
            if args.limit and kept >= args.limit:
                break
        print(f"{name}: {kept} tunes ({time.time() - started:.0f} s)", file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with gzip.GzipFile(args.out, "wb", mtime=0) as gz:
        for r in rows:
            gz.write((json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
    print(f"wrote {len(rows)} tunes to {args.out}; skipped: {json.dumps(skipped)[:500]}", file=sys.stderr)


if __name__ == "__main__":
    main()
