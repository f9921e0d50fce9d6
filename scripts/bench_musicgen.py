#!/usr/bin/env python3
"""MusicGen sampling side by side: musicrl (burn) against transformers, on one random model
of a published shape, in one run on this machine.

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.15.0 transformers==5.23.0 tokenizers safetensors numpy
    cargo build --release
    /tmp/tvenv/bin/python scripts/bench_musicgen.py --shape small --frames 50 --batches 1,8

It writes a random-weight folder of the shape (musicgen-small: T5-base encoder, a 24-layer
1024-wide decoder over 4 codebooks of 2048; `--shape tiny` is the test fixture's) under
--folder, unless one is there, then times transformers' `generate` (top-k 250, temperature 1,
guidance off and 3.0, the codec's decode left out) and `musicrl bench --workloads musicgen`
on it, and prints frames per second and the ratios. No weights are downloaded.
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
import musicgen_fixture  # noqa: E402

SHAPES = {
    "small": dict(
        text=dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
        decoder=dict(vocab_size=2048, max_position_embeddings=2048, num_hidden_layers=24, ffn_dim=4096,
                     num_attention_heads=16, hidden_size=1024, num_codebooks=4),
    ),
    "medium": dict(
        text=dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
        decoder=dict(vocab_size=2048, max_position_embeddings=2048, num_hidden_layers=48, ffn_dim=6144,
                     num_attention_heads=24, hidden_size=1536, num_codebooks=4),
    ),
}
CAPTION = "an upbeat folk tune with fiddle and guitar"


def write_folder(shape, folder):
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, T5Config)
    s = SHAPES[shape]
    text = T5Config(**s["text"], feed_forward_proj="relu", dropout_rate=0.0)
    audio = EncodecConfig(sampling_rate=32000, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2],
                          codebook_size=2048, num_filters=64, hidden_size=128)
    dec = MusicgenDecoderConfig(**s["decoder"], pad_token_id=2048, bos_token_id=2048, dropout=0.0,
                                attention_dropout=0.0, activation_dropout=0.0)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=dec.to_dict())
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = 2048
    model.generation_config.decoder_start_token_id = 2048
    model.save_pretrained(folder, safe_serialization=True)
    musicgen_fixture.build_tokenizer(text.vocab_size).save(str(Path(folder) / "tokenizer.json"))


def time_transformers(folder, frames, batches, iters):
    from transformers import MusicgenForConditionalGeneration
    from tokenizers import Tokenizer
    model = MusicgenForConditionalGeneration.from_pretrained(folder).eval()
    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))

    class Skip:  # the codec's decode is not part of sampling
        def __init__(self, codes):
            self.audio_values = torch.zeros(codes.shape[1], 1, 1)

    model.audio_encoder.decode = lambda codes, *a, **k: Skip(codes)
    k = model.decoder.num_codebooks
    out = []
    for batch in batches:
        e = tok.encode(CAPTION)
        inputs = dict(input_ids=torch.tensor([e.ids] * batch), attention_mask=torch.tensor([e.attention_mask] * batch))
        for guidance in (False, True):
            def run():
                with torch.no_grad():
                    model.generate(**inputs, do_sample=True, top_k=250, temperature=1.0,
                                   guidance_scale=3.0 if guidance else None, max_new_tokens=frames + k - 1)
            run()
            times = []
            for _ in range(iters):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
            m = statistics.median(times)
            out.append(dict(batch=batch, guidance=guidance, frames_per_second=batch * frames / m, median_seconds=m))
            print(f"transformers sample batch {batch:>3} guidance {guidance!s:<5} {batch * frames / m:9.1f} frames/s", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--folder", default=None, help="where the random model goes [/tmp/musicgen-SHAPE-random]")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--musicrl", default="target/release/musicrl")
    args = ap.parse_args()
    folder = Path(args.folder or f"/tmp/musicgen-{args.shape}-random")
    if not (folder / "model.safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_folder(args.shape, folder)
    batches = [int(b) for b in args.batches.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    ref = time_transformers(str(folder), args.frames, batches, args.iters)
    report = Path("/tmp/musicgen-bench.json")
    subprocess.run([args.musicrl, "bench", "--workloads", "musicgen", "--musicgen", str(folder),
                    "--musicgen-frames", str(args.frames), "--batches", args.batches,
                    "--iters", str(args.iters), "--json", str(report)], check=True)
    ours = [m for m in json.loads(report.read_text())["musicgen"]["measurements"] if m["kind"] == "sample"]
    print("\n| batch | guidance | musicrl frames/s | transformers frames/s | ratio |\n|---|---|---:|---:|---:|")
    for r in ref:
        o = next(m for m in ours if m["batch"] == r["batch"] and m["guidance"] == r["guidance"])
        print(f"| {r['batch']} | {'on' if r['guidance'] else 'off'} | {o['frames_per_second']:.1f} | "
              f"{r['frames_per_second']:.1f} | {o['frames_per_second'] / r['frames_per_second']:.2f} |")


if __name__ == "__main__":
    main()
