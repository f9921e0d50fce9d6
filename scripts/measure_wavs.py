#!/usr/bin/env python3
"""Measure the WAVs `musicrl generate` wrote: duration, peak, clipped samples, share of
non-silent 50 ms frames, spectral centroid (timbre) and the most common bar lengths (meter:
24 twelfths of a quarter = 2/4, 36 = 3/4 or 6/8, 48 = 4/4).

    python3 scripts/measure_wavs.py runs/generate      # needs numpy
"""
import glob
import sys
import wave
from collections import Counter

import numpy as np


def main(folder: str) -> None:
    for path in sorted(glob.glob(f"{folder}/*.wav")):
        with wave.open(path) as w:
            sr = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(float) / 32767
        frame = int(0.05 * sr)
        frames = x[: len(x) // frame * frame].reshape(-1, frame)
        nonsilent = (np.sqrt((frames**2).mean(1)) > 0.01).mean()
        spec = np.abs(np.fft.rfft(x))
        freqs = np.fft.rfftfreq(len(x), 1 / sr)
        centroid = (spec * freqs).sum() / spec.sum()
        with open(path.replace(".wav", ".tokens.txt")) as f:
            melody = f.read().splitlines()[1]
        bars = [b.split() for b in melody.split("|") if b.strip()]
        lengths = Counter(sum(int(t.split("/")[1]) for t in b) for b in bars[1:-1])
        print(
            f"{path.split('/')[-1]}: {len(x) / sr:.1f} s, peak {np.abs(x).max():.2f}, "
            f"clipped {(np.abs(x) >= 0.999).sum()}, non-silent {nonsilent:.0%}, "
            f"centroid {centroid:.0f} Hz, bar lengths {lengths.most_common(2)}"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/generate")
