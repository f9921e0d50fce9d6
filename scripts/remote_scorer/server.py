#!/usr/bin/env python3
"""An example remote reward component in Python: scores the audio musicrl renders.

A musicrl reward server with a component like

    [[reward.components]]
    kind = "remote"
    name = "sounding"
    endpoint = "http://127.0.0.1:50061"
    remote_component = "sounding"
    send_audio = true          # each clip arrives as mono 16-bit PCM with its sample rate
    sample_rate = 16000

forwards every Score batch here, with the clip it rendered for each sample, and adds this
server's score to the combined reward. This is how an audio model written in Python (a CLAP,
an aesthetics predictor) plugs in without a copy of musicrl's synthesizer.

The score here is deliberately simple and exact, an example rather than a music model:
**sounding**, the share of 50 ms frames whose RMS level is above -40 dBFS (how much of the
clip is heard rather than silent). Replace `score_clip` with your model.

The code is generated from musicrl's own protos at start-up (grpcio-tools), so it never goes
out of date. Needs: grpcio, grpcio-tools (PyPI). Run:

    python3 scripts/remote_scorer/server.py --listen 127.0.0.1:50061
"""

import argparse
import array
import json
import math
import os
import pathlib
import sys
import tempfile
import threading
from concurrent import futures

REPO = pathlib.Path(__file__).resolve().parents[2]
COMPONENT = "sounding"
VERSION = "sounding-1(frame=50ms,threshold=-40dBFS)"
FRAME_SECONDS = 0.05
THRESHOLD_DBFS = -40.0


def load_protos(proto_dir: pathlib.Path):
    """Generates the musicrl.v1 Python modules from proto_dir into a temp folder and imports them."""
    from grpc_tools import protoc
    import importlib.resources

    out = pathlib.Path(tempfile.mkdtemp(prefix="musicrl-proto-"))
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    files = [str(p.relative_to(proto_dir)) for p in sorted((proto_dir / "musicrl" / "v1").glob("*.proto"))]
    code = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", *files])
    if code != 0:
        sys.exit(f"protoc failed on {proto_dir}")
    sys.path.insert(0, str(out))
    from musicrl.v1 import reward_pb2, reward_pb2_grpc  # noqa: E402
    return reward_pb2, reward_pb2_grpc


def score_clip(pcm: bytes, sample_rate: int) -> float:
    """The share of 50 ms frames louder than -40 dBFS, in [0, 1]; 0 for an empty clip."""
    samples = array.array("h")
    samples.frombytes(pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    frame = max(1, int(sample_rate * FRAME_SECONDS))
    n_frames = len(samples) // frame
    if n_frames == 0:
        return 0.0
    threshold = 32767.0 * 10 ** (THRESHOLD_DBFS / 20)
    loud = 0
    for f in range(n_frames):
        chunk = samples[f * frame:(f + 1) * frame]
        rms = math.sqrt(sum(x * x for x in chunk) / frame)
        loud += rms > threshold
    return loud / n_frames


def make_servicer(reward_pb2, reward_pb2_grpc, stats_path):
    import grpc

    class Sounding(reward_pb2_grpc.RewardServiceServicer):
        def __init__(self):
            self.lock = threading.Lock()
            self.stats = {"calls": 0, "samples": 0, "sample_rates": [], "audio_seconds": 0.0}

        def _component(self):
            return reward_pb2.Component(name=COMPONENT, version=VERSION, weight=1.0)

        def Score(self, request, context):
            if not request.samples:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty batch")
            scores = []
            seconds = 0.0
            rates = set()
            for i, s in enumerate(request.samples):
                if not s.HasField("audio"):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"sample {i} has no audio: set send_audio = true on the remote component")
                a = s.audio
                if not 8000 <= a.sample_rate <= 192000 or len(a.pcm_s16le) % 2:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"sample {i}: malformed audio")
                value = score_clip(a.pcm_s16le, a.sample_rate)
                seconds += len(a.pcm_s16le) / 2 / a.sample_rate
                rates.add(a.sample_rate)
                scores.append(reward_pb2.SampleScore(reward=value, components=[value]))
            with self.lock:
                st = self.stats
                st["calls"] += 1
                st["samples"] += len(request.samples)
                st["sample_rates"] = sorted(set(st["sample_rates"]) | rates)
                st["audio_seconds"] += seconds
                if stats_path:
                    tmp = stats_path + ".tmp"
                    with open(tmp, "w") as f:
                        json.dump(st, f)
                    os.replace(tmp, stats_path)
            return reward_pb2.ScoreResponse(scores=scores, components=[self._component()],
                                            scorer_version=VERSION)

        def Info(self, request, context):
            return reward_pb2.InfoResponse(components=[self._component()], scorer_version=VERSION)

    return Sounding()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:50061", help="host:port (port 0 picks one)")
    ap.add_argument("--protos", default=str(REPO / "proto"), help="musicrl's proto folder")
    ap.add_argument("--ready-file", help="write {\"port\": N} here once serving")
    ap.add_argument("--stats-file", help="keep what was received here as JSON (calls, samples, rates)")
    args = ap.parse_args()

    import grpc

    reward_pb2, reward_pb2_grpc = load_protos(pathlib.Path(args.protos))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         compression=grpc.Compression.Gzip,
                         options=[("grpc.max_receive_message_length", 16 << 20)])
    reward_pb2_grpc.add_RewardServiceServicer_to_server(
        make_servicer(reward_pb2, reward_pb2_grpc, args.stats_file), server)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    print(f"remote scorer {COMPONENT!r} serving on port {port}", file=sys.stderr, flush=True)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"port": port}, f)
        os.replace(tmp, args.ready_file)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
