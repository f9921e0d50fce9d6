#!/usr/bin/env python3
"""Checks the CLAP remote scorer (scripts/remote_scorer/clap.py) on a tiny random CLAP of the
real architecture (transformers' `ClapConfig`: a RoBERTa text tower, an HTSAT audio tower,
both projected), built offline, served by the scorer on 127.0.0.1:0:

1. directly: a Score request with two clips at 48 kHz answers the cosine similarity of each
   caption's and clip's embeddings, as transformers computes it from the same 16-bit audio;
   a clip at another rate is refused, naming the rate to configure;
2. behind a real musicrl reward server (`musicrl reward-server`, the tiny MusicGen policy of
   the parity fixture, `reward.codec` = the fixture's graded EnCodec): the reward server
   decodes each clip, resamples it to 48 kHz, sends its two windows to CLAP, and the CLAP
   component arrives in the combined reward with its window scores, its version naming the
   codec.

Run it in a throwaway venv, not in CI (torch is ~5 GB):

    /tmp/tvenv/bin/pip install torch transformers grpcio grpcio-tools grpcio-reflection ./python/musicrl-scorer
    cargo build --release
    /tmp/tvenv/bin/python scripts/remote_scorer/test_clap.py [--musicrl target/release/musicrl]
"""

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import torch

import musicrl_scorer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import clap  # noqa: E402

WORDS = ["<s>", "<pad>", "</s>", "<unk>", "lo-fi", "piano", "with", "rain", "an", "upbeat",
         "folk", "tune", "fiddle", "and", "guitar", "sad", "waltz"]


def tiny_clap(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor,
                              RobertaTokenizerFast)

    text = dict(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, max_position_embeddings=40, projection_dim=8,
                pad_token_id=1, bos_token_id=0, eos_token_id=2)
    audio = dict(hidden_size=16, patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[2, 4],
                 window_size=4, spec_size=128, num_mel_bins=32, projection_dim=8, enable_fusion=False)
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8)).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                     unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                                     sep_token="</s>", mask_token="<unk>")
    features = ClapFeatureExtractor(feature_size=32, sampling_rate=48000, max_length_s=1,
                                    truncation="rand_trunc", padding="repeatpad")
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(str(folder))


def s16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).round().astype("<i2").tobytes()


def check_direct(folder: Path):
    score, version, rate = clap.build(str(folder))
    server = musicrl_scorer.serve(score, components=["clap"], version=version,
                                  listen="127.0.0.1:0", block=False)
    pb, rpc = musicrl_scorer.protos()
    stub = rpc.RewardServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    rng = np.random.default_rng(0)
    captions = ["lo-fi piano with rain", "an upbeat folk tune"]
    clips = [0.3 * np.sin(np.arange(48000) * 2 * math.pi * 440 / 48000), 0.2 * rng.standard_normal(36000)]
    samples = [pb.Sample(caption=c, tokens=[1, 2, 3], audio=pb.Audio(sample_rate=rate, pcm_s16le=s16(a)))
               for c, a in zip(captions, clips)]
    answer = stub.Score(pb.ScoreRequest(samples=samples))
    got = [s.components[0] for s in answer.scores]
    # The reference, independent of the scorer's code: ClapModel's own forward pass (which
    # projects and normalises both embeddings) on the same 16-bit audio.
    from transformers import ClapModel, ClapProcessor
    model = ClapModel.from_pretrained(str(folder)).eval()
    processor = ClapProcessor.from_pretrained(str(folder))
    heard = [musicrl_scorer.pcm_to_float(s16(a)) for a in clips]
    with torch.no_grad():
        out = model(**processor(text=captions, audio=heard, sampling_rate=rate, return_tensors="pt",
                                padding=True))
    want = (out.text_embeds * out.audio_embeds).sum(-1).tolist()
    assert all(abs(g - w) < 1e-5 for g, w in zip(got, want)), (got, want)
    assert all(-1.0 <= g <= 1.0 for g in got) and abs(got[0] - got[1]) > 1e-4, got
    assert answer.components[0].name == "clap" and answer.components[0].version == version
    # A clip at another rate is refused, and says which rate to configure.
    bad = pb.Sample(caption="x", tokens=[1], audio=pb.Audio(sample_rate=16000, pcm_s16le=s16(clips[0])))
    try:
        stub.Score(pb.ScoreRequest(samples=[bad]))
        raise AssertionError("a 16 kHz clip was scored")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INTERNAL and "48000" in e.details(), e
    print(f"direct: clap {got[0]:+.4f} {got[1]:+.4f} (transformers {want[0]:+.4f} {want[1]:+.4f}); "
          "16 kHz refused")
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_behind_reward_server(musicrl: str, clap_port: int, work: Path):
    frames = 100  # 2 s at the fixture codec's 50 frames a second
    port = free_port()
    config = work / "reward.toml"
    config.write_text(f"""
[policy]
family = "musicgen"
folder = "{ROOT}/policy/tests/fixtures/musicgen/tiny"
frames = {frames}
vocab_size = 32
max_tokens = {4 * frames}
end_token = 32

[reward]
listen = "127.0.0.1:{port}"
metrics_listen = ""
codec = "{ROOT}/policy/tests/fixtures/encodec/tiny-graded"

[[reward.components]]
kind = "remote"
name = "clap"
endpoint = "http://127.0.0.1:{clap_port}"
remote_component = "clap"
send_audio = true
sample_rate = 48000
windows = [[0, 1], [-1, 1]]
""")
    log = open(work / "reward-server.log", "w")
    proc = subprocess.Popen([musicrl, "--config", str(config), "reward-server"], stdout=log, stderr=log,
                            env={k: v for k, v in os.environ.items() if k != "MUSICRL_CONFIG"})
    try:
        pb, rpc = musicrl_scorer.protos()
        stub = rpc.RewardServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        tokens = [(7 * i) % 32 for i in range(4 * frames)]
        request = pb.ScoreRequest(samples=[pb.Sample(caption="lo-fi piano with rain", tokens=tokens)])
        for _ in range(100):
            try:
                answer = stub.Score(request, timeout=30)
                break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or proc.poll() is not None:
                    log.flush()
                    sys.stderr.write((work / "reward-server.log").read_text()[-3000:])
                    raise
                time.sleep(0.2)
        else:
            raise AssertionError("the reward server did not come up")
        score = answer.scores[0]
        windows = list(score.windows[0].values)
        assert answer.components[0].name == "clap", answer.components
        assert "+encodec-" in answer.components[0].version, answer.components[0].version
        assert len(windows) == 2 and abs(score.components[0] - sum(windows) / 2) < 1e-6, score
        assert abs(score.reward - score.components[0]) < 1e-6
        print(f"behind musicrl reward-server: clap {score.components[0]:+.4f} (windows "
              f"{windows[0]:+.4f}, {windows[1]:+.4f}); version {answer.components[0].version}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--musicrl", default=str(ROOT / "target/release/musicrl"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="musicrl-clap-") as tmp:
        folder = Path(tmp) / "tiny-clap"
        tiny_clap(folder)
        server = check_direct(folder)
        try:
            check_behind_reward_server(args.musicrl, server.port, Path(tmp))
        finally:
            server.stop()
    print("ok")


if __name__ == "__main__":
    main()
