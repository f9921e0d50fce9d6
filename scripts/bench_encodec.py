#!/usr/bin/env python3
"""EnCodec decoding side by side: musicrl (burn) against transformers, on one random codec of
musicgen-small's shape (`facebook/encodec_32khz`: 32 kHz, 4 codebooks of 2,048, 50 frames a
second, SEANet widths 1024 → 64, two LSTM layers), in one run on this machine.

    /tmp/tvenv/bin/pip install torch==2.15.0 transformers==5.23.0 safetensors numpy   # once
    cargo build --release
    /tmp/tvenv/bin/python scripts/bench_encodec.py --seconds 10 --runs 3

It writes the random-weight folder under --folder unless one is there (no weights are
downloaded), draws `--seconds` of random codes, times transformers' `EncodecModel.decode`
(PyTorch's default threads, after one warm-up) and `musicrl codec decode` (its own
`decode_seconds`, loading excluded, each run a fresh process), and prints seconds of audio
decoded per second of wall time for both, the ratio, and the largest sample difference
between the two outputs (the same codes through the same weights).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def build(folder: Path):
    from transformers import EncodecConfig, EncodecModel
    # facebook/encodec_32khz's config.json (the keys that differ from EncodecConfig's defaults).
    config = EncodecConfig(sampling_rate=32000, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2],
                           codebook_size=2048, num_filters=64, hidden_size=128, use_causal_conv=False,
                           use_conv_shortcut=False)
    torch.manual_seed(0)
    model = EncodecModel(config).eval()
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn_like(layer.codebook.embed))
    model.save_pretrained(str(folder), safe_serialization=True)


def read_float_wav(path: Path) -> np.ndarray:
    """The samples of a mono 32-bit float WAV (its `data` chunk)."""
    data = path.read_bytes()
    pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if tag == b"data":
            return np.frombuffer(data[pos + 8:pos + 8 + size], dtype="<f4")
        pos += 8 + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/encodec-32khz-random"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--musicrl", default="target/release/musicrl")
    args = parser.parse_args()

    from transformers import EncodecModel
    if not (args.folder / "model.safetensors").is_file():
        build(args.folder)
    model = EncodecModel.from_pretrained(str(args.folder)).eval()
    frames = int(args.seconds * model.config.frame_rate)
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, model.config.codebook_size, (4, frames), generator=gen)
    codes_file = args.folder / "bench-codes.json"
    codes_file.write_text(json.dumps({"codes": codes.tolist()}))

    def reference():
        with torch.no_grad():
            return model.decode(codes[None, None], [None])[0][0, 0].numpy()

    reference()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        pcm_ref = reference()
        times.append(time.perf_counter() - start)
    torch_s = statistics.median(times)

    ours = []
    wav = args.folder / "bench.wav"
    for _ in range(args.runs):
        out = subprocess.run([args.musicrl, "codec", "decode", "--codec", str(args.folder),
                              "--codes", str(codes_file), "--out", str(wav)],
                             check=True, capture_output=True, text=True)
        ours.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ours_s = statistics.median(r["decode_seconds"] for r in ours)
    raw = read_float_wav(wav)
    worst = float(np.abs(raw[: len(pcm_ref)] - pcm_ref).max())

    audio_s = len(pcm_ref) / model.config.sampling_rate
    print(f"codec: musicgen-small shape (32 kHz, 4 x 2048, 50 frames/s), {frames} frames = {audio_s:.1f} s, "
          f"{torch.get_num_threads()} torch threads, median of {args.runs}")
    print(f"| implementation | decode s | s of audio / s |")
    print(f"|---|---:|---:|")
    print(f"| transformers {__import__('transformers').__version__} (torch {torch.__version__}) | {torch_s:.3f} | {audio_s / torch_s:.1f} |")
    print(f"| musicrl (burn flex) | {ours_s:.3f} | {audio_s / ours_s:.1f} |")
    print(f"musicrl / transformers speed: {torch_s / ours_s:.2f}x; load {ours[-1]['load_seconds']:.2f} s; "
          f"largest sample difference {worst:.2e} (peak {float(np.abs(pcm_ref).max()):.3f})")


if __name__ == "__main__":
    sys.exit(main())
