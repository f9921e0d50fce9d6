#!/usr/bin/env python3
"""Interop with real gRPC stacks other than tonic, against live musicrl servers (CI runs it).

- A Python client (grpcio, code generated from our protos) calls the reward server and the
  learner with gzip compression and gets OK.
- gRPC reflection (v1alpha, what grpcio-reflection and older grpcurl speak) lists the
  services of both servers.
- A trained policy leaves as safetensors (`musicrl policy export`) with the tensor names
  docs/interop.md lists, and scripts/policy_numpy.py, a numpy implementation written from
  that document, reproduces `musicrl policy score`'s log-probabilities to 1e-4.
- The scorer kit's example (python/musicrl-scorer, `musicrl-scorer-example`) receives the
  clips' rendered audio (16-bit PCM, 16 kHz), and its score arrives in the combined reward,
  also for a batch too big for one 4 MiB message (the reward server splits it).

Usage: python3 tests/interop/check.py path/to/musicrl      (needs grpcio, grpcio-tools,
grpcio-reflection, numpy, safetensors, and `pip install ./python/musicrl-scorer`)
"""

import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]

import grpc  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)


def load_protos(proto_dir: pathlib.Path):
    """Generates the musicrl.v1 Python modules from proto_dir into a temp folder and imports them."""
    from grpc_tools import protoc
    import importlib.resources

    out = pathlib.Path(tempfile.mkdtemp(prefix="musicrl-proto-"))
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    files = [str(p.relative_to(proto_dir)) for p in sorted((proto_dir / "musicrl" / "v1").glob("*.proto"))]
    if protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}",
                    f"--grpc_python_out={out}", *files]) != 0:
        sys.exit(f"protoc failed on {proto_dir}")
    sys.path.insert(0, str(out))
    from musicrl.v1 import reward_pb2, reward_pb2_grpc  # noqa: E402
    return reward_pb2, reward_pb2_grpc


reward_pb2, reward_pb2_grpc = load_protos(REPO / "proto")
from musicrl.v1 import learner_pb2, learner_pb2_grpc  # noqa: E402  (generated beside reward_pb2)

WORK = pathlib.Path(tempfile.mkdtemp(prefix="musicrl-interop-"))
PROCS = []


def fail(msg):
    for p in PROCS:
        p.kill()
    for log in sorted(WORK.glob("*.log")):
        print(f"--- {log.name} ---\n{log.read_text()[-3000:]}", file=sys.stderr)
    sys.exit(f"interop check failed: {msg}")


def start(name, argv, ready):
    log = open(WORK / f"{name}.log", "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICRL_")}
    PROCS.append(subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=WORK))
    deadline = time.time() + 120
    while time.time() < deadline:
        if ready.exists():
            try:
                return json.loads(ready.read_text())
            except json.JSONDecodeError:
                pass
        if PROCS[-1].poll() is not None:
            fail(f"{name} exited with {PROCS[-1].returncode}")
        time.sleep(0.1)
    fail(f"{name} was not ready in 120 s")


def check(cond, msg):
    if not cond:
        fail(msg)
    print(f"  ok: {msg}")


def services(target):
    with grpc.insecure_channel(target) as ch:
        return set(ProtoReflectionDescriptorDatabase(ch).get_services())


def main():
    musicrl = str(pathlib.Path(sys.argv[1]).resolve())
    stats = WORK / "remote-stats.json"
    r = start("remote-scorer", [sys.executable, "-m", "musicrl_scorer.example",
                                "--listen", "127.0.0.1:0", "--ready-file", str(WORK / "remote.ready"),
                                "--stats-file", str(stats)], WORK / "remote.ready")
    config = WORK / "musicrl.toml"
    config.write_text(f"""
[learner]
init_policy = ""
checkpoint_dir = "{WORK}/checkpoints"

[[reward.components]]
kind = "token-fraction"
weight = 0.5
target_below = 32

[[reward.components]]
kind = "remote"
name = "sounding"
endpoint = "http://127.0.0.1:{r['port']}"
remote_component = "sounding"
send_audio = true
sample_rate = 16000
""")
    rs = start("reward-server", [musicrl, "--config", str(config), "reward-server", "--listen", "127.0.0.1:0",
                                 "--metrics-listen", "", "--ready-file", str(WORK / "reward.ready")],
               WORK / "reward.ready")
    ln = start("learner", [musicrl, "--config", str(config), "learner", "--listen", "127.0.0.1:0",
                           "--metrics-listen", "", "--ready-file", str(WORK / "learner.ready")],
               WORK / "learner.ready")
    reward_addr, learner_addr = rs["grpc"], ln["grpc"]

    print("== reflection ==")
    got = services(reward_addr)
    check({"musicrl.v1.RewardService", "grpc.health.v1.Health"} <= got and "musicrl.v1.LearnerService" not in got,
          f"reward server lists {sorted(got)}")
    got = services(learner_addr)
    check({"musicrl.v1.LearnerService", "grpc.health.v1.Health"} <= got and "musicrl.v1.RewardService" not in got,
          f"learner lists {sorted(got)}")

    print("== a Python client with gzip ==")
    rng = random.Random(7)
    samples = [reward_pb2.Sample(caption=f"a lively reel in D major, played on fiddle {i}",
                                 tokens=[rng.randrange(1, 64) for _ in range(128)]) for i in range(4)]
    with grpc.insecure_channel(reward_addr, compression=grpc.Compression.Gzip) as ch:
        stub = reward_pb2_grpc.RewardServiceStub(ch)
        resp = stub.Score(reward_pb2.ScoreRequest(samples=samples), timeout=120)
        info = stub.Info(reward_pb2.InfoRequest(), timeout=30)
    names = [c.name for c in resp.components]
    check(names == ["token-fraction", "sounding"], f"Score with gzip answered OK, components {names}")
    check(len(info.components) == 2, "Info with gzip answered OK")
    with grpc.insecure_channel(learner_addr, compression=grpc.Compression.Gzip) as ch:
        status = learner_pb2_grpc.LearnerServiceStub(ch).Status(learner_pb2.StatusRequest(), timeout=30)
    check(status.step == 0, f"the learner's Status with gzip answered OK (step {status.step})")

    print("== the Python remote scorer hears the audio ==")
    st = json.loads(stats.read_text())
    check(st["samples"] == 4 and st["sample_rates"] == [16000],
          f"it received 4 clips at 16 kHz ({st['audio_seconds']:.1f} s of audio)")
    check(st["audio_seconds"] > 4 * 2.0, "every clip carried seconds of audio")
    weights = [c.weight for c in resp.components]
    for s in resp.scores:
        tf, sounding = s.components
        check(0.0 < sounding <= 1.0, f"sounding {sounding:.3f} arrived in the scores")
        expect = weights[0] * tf + weights[1] * sounding
        check(abs(s.reward - expect) < 1e-4, f"reward {s.reward:.4f} = 0.5·{tf:.3f} + 1·{sounding:.3f}")

    print("== a batch too big for one message goes as several calls ==")
    big = [reward_pb2.Sample(caption=f"a slow air in G minor, played on flute {i}",
                             tokens=[rng.randrange(1, 64) for _ in range(128)]) for i in range(48)]
    with grpc.insecure_channel(reward_addr, compression=grpc.Compression.Gzip,
                               options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        resp = reward_pb2_grpc.RewardServiceStub(ch).Score(reward_pb2.ScoreRequest(samples=big), timeout=300)
    st2 = json.loads(stats.read_text())
    calls = st2["calls"] - st["calls"]
    mb = (st2["audio_seconds"] - st["audio_seconds"]) * 16000 * 2 / 2**20
    check(len(resp.scores) == 48 and st2["samples"] - st["samples"] == 48,
          f"48 clips ({mb:.1f} MiB of PCM) scored in {calls} calls")
    check(calls >= 2 if mb > 3 else calls >= 1, "split under 3 MiB a call")

    print("== the policy as safetensors, run by numpy ==")
    check_policy_export(musicrl)

    for p in PROCS:
        p.terminate()
    print("interop check passed")


def check_policy_export(musicrl):
    import re
    import numpy as np  # noqa: F401  (policy_numpy needs it)
    sys.path.insert(0, str(REPO / "scripts"))
    import policy_numpy

    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICRL_")}
    path = WORK / "theta0.safetensors"
    subprocess.run([musicrl, "policy", "export", "--policy", str(REPO / "models/base/policy.bpk"),
                    "--out", str(path)], check=True, env=env, capture_output=True)
    policy = policy_numpy.Policy(str(path))
    doc = (REPO / "docs/interop.md").read_text()
    documented = dict(re.findall(r"^\| `([a-z0-9_.]+)` \| (\[[0-9, ]+\]) \|$", doc, re.M))
    actual = {k: str(list(v.shape)) for k, v in policy.w.items()}
    check(documented == actual, f"the file's {len(actual)} tensors are the ones docs/interop.md lists, with their shapes")
    rng = random.Random(3)
    worst = 0.0
    cases = [("a lively reel in G major, played on fiddle", [1, 20, 53, 22, 53, 1, 0])]
    cases += [(f"a slow air in {k} minor on flute", [rng.randrange(0, 64) for _ in range(128)]) for k in "ADE"]
    for caption, tokens in cases:
        out = subprocess.run([musicrl, "policy", "score", "--policy", str(path), "--caption", caption,
                              "--tokens", " ".join(map(str, tokens))], check=True, env=env, capture_output=True, text=True)
        ours = json.loads(out.stdout)
        lp, values = policy.score(caption, tokens)
        worst = max(worst, max(abs(a - b) for a, b in zip(ours["logprobs"], lp)),
                    max(abs(a - b) for a, b in zip(ours["values"], values)))
    check(worst < 1e-4, f"numpy reproduces musicrl's log-probabilities and values (largest difference {worst:.1e})")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
