"""The scorer kit against a real musicrl reward server, and its own refusals.

Run: MUSICRL_BIN=path/to/musicrl pytest python/musicrl-scorer/tests
"""

import json
import os
import pathlib
import subprocess
import tempfile
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import musicrl_scorer
from musicrl_scorer import example

pb2, pb2_grpc = musicrl_scorer.protos()


def musicrl_bin() -> str:
    path = os.environ.get("MUSICRL_BIN")
    if not path:
        pytest.fail("set MUSICRL_BIN to a musicrl binary (target/debug/musicrl)")
    return str(pathlib.Path(path).resolve())


class Recorder:
    """A scorer that keeps what it was given: loudness (RMS) and duration of every clip."""

    def __init__(self):
        self.calls = []

    def __call__(self, captions, audio, sample_rate):
        self.calls.append((list(captions), [a.copy() for a in audio], sample_rate))
        return {
            "rms": [float(np.sqrt((a.astype(np.float64) ** 2).mean())) for a in audio],
            "seconds": [len(a) / sample_rate for a in audio],
        }


@pytest.fixture
def scorer():
    rec = Recorder()
    server = musicrl_scorer.serve(rec, components=["rms", "seconds"], version="test-1",
                                  listen="127.0.0.1:0", max_batch=3, block=False)
    yield rec, server
    server.stop()


def stub(port):
    return pb2_grpc.RewardServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


def clip(seconds=1.0, rate=16000, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    pcm = (amplitude * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    return pb2.Audio(sample_rate=rate, pcm_s16le=pcm)


def test_scores_audio_in_batches_of_max_batch_grouped_by_rate(scorer):
    rec, server = scorer
    samples = [pb2.Sample(caption=f"c{i}", tokens=[1, 2], audio=clip(0.5 + 0.1 * i, 16000 if i < 4 else 22050))
               for i in range(6)]
    resp = stub(server.port).Score(pb2.ScoreRequest(samples=samples), timeout=30)
    assert [c.name for c in resp.components] == ["rms", "seconds"]
    assert resp.scorer_version == "test-1"
    # Four clips at 16 kHz in slices of at most 3, then two at 22.05 kHz.
    assert [(len(c), r) for c, _, r in rec.calls] == [(3, 16000), (1, 16000), (2, 22050)]
    assert [c for call in rec.calls for c in call[0]] == [f"c{i}" for i in range(6)]
    for i, s in enumerate(resp.scores):
        rms, seconds = s.components
        assert seconds == pytest.approx(0.5 + 0.1 * i, abs=1e-4)
        assert rms == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)  # a sine's RMS
        assert s.reward == pytest.approx(rms + seconds, rel=1e-6)
    info = stub(server.port).Info(pb2.InfoRequest(), timeout=30)
    assert [c.name for c in info.components] == ["rms", "seconds"]


@pytest.mark.parametrize("sample,message", [
    (None, "empty batch"),
    (pb2.Sample(caption="x", tokens=[1]), "sample 0 has no audio"),
    (pb2.Sample(caption="x", tokens=[1], audio=pb2.Audio(sample_rate=16000, pcm_s16le=b"abc")), "not whole 16-bit"),
    (pb2.Sample(caption="x", tokens=[1], audio=pb2.Audio(sample_rate=100, pcm_s16le=b"ab")), "outside 8000"),
])
def test_bad_requests_are_refused_by_name_and_the_server_keeps_serving(scorer, sample, message):
    rec, server = scorer
    with pytest.raises(grpc.RpcError) as e:
        stub(server.port).Score(pb2.ScoreRequest(samples=[] if sample is None else [sample]), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in e.value.details()
    assert rec.calls == []
    ok = stub(server.port).Score(pb2.ScoreRequest(samples=[pb2.Sample(caption="y", tokens=[1], audio=clip())]),
                                 timeout=30)
    assert len(ok.scores) == 1


@pytest.mark.parametrize("result,message", [
    ({"loudness": [1.0]}, "not the declared"),
    ({"rms": [1.0, 2.0]}, "2 scores for 1 clips"),
    ({"rms": [float("nan")]}, "non-finite"),
    ("oops", "not a dict"),
])
def test_a_scorer_that_answers_wrongly_is_an_internal_error_saying_what(result, message):
    server = musicrl_scorer.serve(lambda c, a, r: result, components=["rms"], version="bad-1",
                                  listen="127.0.0.1:0", block=False)
    try:
        with pytest.raises(grpc.RpcError) as e:
            stub(server.port).Score(pb2.ScoreRequest(samples=[pb2.Sample(caption="x", tokens=[1], audio=clip())]),
                                    timeout=30)
        assert e.value.code() == grpc.StatusCode.INTERNAL
        assert message in e.value.details(), e.value.details()
        assert server.stats.failed == 1
    finally:
        server.stop()


def test_health_and_reflection(scorer):
    _, server = scorer
    ch = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(ch)
    for service in ["", "musicrl.v1.RewardService"]:
        got = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert got.status == health_pb2.HealthCheckResponse.SERVING
    assert "musicrl.v1.RewardService" in set(ProtoReflectionDescriptorDatabase(ch).get_services())


def test_the_example_scorer_feeds_a_real_musicrl_reward_server():
    """musicrl's reward server sends the clips it renders to the kit's example scorer, and the
    example's score arrives in the combined reward with the server's own component."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="musicrl-scorer-test-"))
    server = musicrl_scorer.serve(example.score, components=[example.COMPONENT], version=example.VERSION,
                                  listen="127.0.0.1:0", block=False)
    config = work / "musicrl.toml"
    config.write_text(f"""
[learner]
init_policy = ""

[[reward.components]]
kind = "token-fraction"
weight = 0.5
target_below = 32

[[reward.components]]
kind = "remote"
name = "sounding"
endpoint = "http://127.0.0.1:{server.port}"
remote_component = "sounding"
send_audio = true
sample_rate = 16000
""")
    ready = work / "reward.ready"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICRL_")}
    proc = subprocess.Popen([musicrl_bin(), "--config", str(config), "reward-server", "--listen", "127.0.0.1:0",
                             "--metrics-listen", "", "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "reward.log", "w"), env=env, cwd=work)
    try:
        deadline = time.time() + 120
        while not ready.exists():
            assert proc.poll() is None, (work / "reward.log").read_text()
            assert time.time() < deadline, "the reward server was not ready in 120 s"
            time.sleep(0.1)
        time.sleep(0.1)
        addr = json.loads(ready.read_text())["grpc"]
        rng = np.random.default_rng(3)
        samples = [pb2.Sample(caption=f"a lively reel in D major, played on fiddle {i}",
                              tokens=[int(t) for t in rng.integers(1, 64, 128)]) for i in range(5)]
        with grpc.insecure_channel(addr) as ch:
            resp = pb2_grpc.RewardServiceStub(ch).Score(pb2.ScoreRequest(samples=samples), timeout=120)
        assert [c.name for c in resp.components] == ["token-fraction", "sounding"]
        assert server.stats.clips == 5 and server.stats.sample_rates == {16000}
        assert server.stats.audio_seconds > 5 * 2.0, "every clip carried seconds of audio"
        w = [c.weight for c in resp.components]
        for s in resp.scores:
            tf, sounding = s.components
            assert 0.0 < sounding <= 1.0
            assert s.reward == pytest.approx(w[0] * tf + w[1] * sounding, abs=1e-4)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.stop()
