#!/usr/bin/env python3
"""Checks the Audiobox Aesthetics remote scorer (scripts/remote_scorer/aesthetics.py) on random
weights of the real architecture (`AesMultiOutput`: WavLM base, 12 layers, four projection
heads), built offline and saved as the released folder is (`save_pretrained`), served on
127.0.0.1:0: a Score request with a 1 s and a 12 s clip at 16 kHz answers, for each axis,
the package's own `AesPredictor.forward` prediction on the same 16-bit audio rescaled from
[1, 10] to [0, 1]; a clip at another rate is refused naming the rate.

Random weights make the predictions meaningless; what is checked is the plumbing (loading,
windowing, the inverse target transform, the rescaling, the wire). Run it in a throwaway
venv, not in CI:

    /tmp/tvenv/bin/pip install torch audiobox-aesthetics grpcio grpcio-tools grpcio-reflection ./python/musicrl-scorer
    /tmp/tvenv/bin/python scripts/remote_scorer/test_aesthetics.py
"""

import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
import torch

import musicrl_scorer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aesthetics  # noqa: E402


def s16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).round().astype("<i2").tobytes()


def main():
    from audiobox_aesthetics.infer import AesPredictor
    from audiobox_aesthetics.model.aes import AesMultiOutput, Normalize

    torch.manual_seed(0)
    transform = {a: {"mean": 5.5, "std": 1.5} for a in aesthetics.AXES}
    with tempfile.TemporaryDirectory(prefix="musicrl-aes-") as tmp:
        AesMultiOutput(target_transform=transform).save_pretrained(tmp)
        score, version, _ = aesthetics.build(tmp)
        server = musicrl_scorer.serve(score, components=aesthetics.AXES, version=version,
                                      listen="127.0.0.1:0", block=False)
        try:
            pb, rpc = musicrl_scorer.protos()
            stub = rpc.RewardServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
            rng = np.random.default_rng(0)
            clips = [0.3 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000),
                     0.1 * rng.standard_normal(12 * 16000)]
            samples = [pb.Sample(caption="a", tokens=[1], audio=pb.Audio(sample_rate=16000, pcm_s16le=s16(a)))
                       for a in clips]
            answer = stub.Score(pb.ScoreRequest(samples=samples), timeout=600)
            names = [c.name for c in answer.components]
            assert names == aesthetics.AXES, names

            # The reference: the package's own predictor, on the same model and 16-bit audio.
            reference = AesPredictor.__new__(AesPredictor)
            reference.device = torch.device("cpu")
            reference.sample_rate = 16000
            reference.data_col = "path"
            reference.model = AesMultiOutput.from_pretrained(tmp).eval()
            reference.target_transform = {a: Normalize(**transform[a]) for a in aesthetics.AXES}
            heard = [torch.as_tensor(musicrl_scorer.pcm_to_float(s16(a)))[None] for a in clips]
            rows = reference.forward([{"path": w, "sample_rate": 16000} for w in heard])
            for i, row in enumerate(rows):
                for j, a in enumerate(aesthetics.AXES):
                    got, want = answer.scores[i].components[j], aesthetics.rescale(row[a])
                    assert abs(got - want) < 1e-4, (i, a, got, want)
            print("axes " + ", ".join(f"{a} {answer.scores[0].components[j]:.4f}/{answer.scores[1].components[j]:.4f}"
                                      for j, a in enumerate(aesthetics.AXES))
                  + f" (raw PQ {rows[0]['PQ']:.3f}/{rows[1]['PQ']:.3f}) = the package's predictor, rescaled")

            bad = pb.Sample(caption="a", tokens=[1], audio=pb.Audio(sample_rate=48000, pcm_s16le=s16(clips[0])))
            try:
                stub.Score(pb.ScoreRequest(samples=[bad]))
                raise AssertionError("a 48 kHz clip was scored")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INTERNAL and "16000" in e.details(), e
            print("48 kHz refused; ok")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
