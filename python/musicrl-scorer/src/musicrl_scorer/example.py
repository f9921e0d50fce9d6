"""The example scorer: **sounding**, the share of 50 ms frames whose RMS level is above
-40 dBFS (how much of a clip is heard rather than silent). Deliberately simple and exact — an
example of the kit, not a music model; `scripts/remote_scorer/clap.py` is the same few lines around
a real audio-text model.

    musicrl-scorer-example --listen 127.0.0.1:50061

then point a remote component at it (see the package docs) with remote_component = "sounding".
"""

import argparse
import json
import logging
import os

import numpy as np

from musicrl_scorer import serve

COMPONENT = "sounding"
VERSION = "sounding-1(frame=50ms,threshold=-40dBFS)"
FRAME_SECONDS = 0.05
THRESHOLD_DBFS = -40.0


def sounding(clip: np.ndarray, sample_rate: int) -> float:
    """The share of 50 ms frames louder than -40 dBFS, in [0, 1]; 0 for a clip shorter than a frame."""
    frame = max(1, int(sample_rate * FRAME_SECONDS))
    n = len(clip) // frame
    if n == 0:
        return 0.0
    frames = clip[: n * frame].astype(np.float64).reshape(n, frame)
    rms = np.sqrt((frames**2).mean(axis=1))
    return float((rms > 10 ** (THRESHOLD_DBFS / 20)).mean())


def score(captions, audio, sample_rate):
    return {COMPONENT: [sounding(a, sample_rate) for a in audio]}


def main():
    ap = argparse.ArgumentParser(description="musicrl's example remote scorer (sounding)")
    ap.add_argument("--listen", default="127.0.0.1:50061", help="host:port (port 0 picks one)")
    ap.add_argument("--ready-file", help='write {"port": N} here once serving')
    ap.add_argument("--stats-file", help="keep what was received here as JSON (calls, clips, rates)")
    ap.add_argument("--max-batch", type=int, default=32, help="clips a call of the scoring function")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)

    def dump(st):
        # What arrived, for tests and curious users: rewritten after every call.
        now = {"calls": st.calls, "samples": st.clips, "sample_rates": sorted(st.sample_rates),
               "audio_seconds": st.audio_seconds, "function_calls": list(st.function_calls)}
        tmp = args.stats_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(now, f)
        os.replace(tmp, args.stats_file)

    server = serve(score, components=[COMPONENT], version=VERSION, listen=args.listen,
                   max_batch=args.max_batch, block=False, ready_file=args.ready_file,
                   on_call=dump if args.stats_file else None)
    print(f"remote scorer {COMPONENT!r} serving on port {server.port}", flush=True)
    server.wait()


if __name__ == "__main__":
    main()
