#!/usr/bin/env python3
"""MusicGen sampling side by side: musicrl (burn) against transformers, on one random model
of a published shape, in one run on this machine.

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.15.0 transformers==5.23.0 tokenizers safetensors numpy
    cargo build --release
    /tmp/tvenv/bin/python scripts/bench_musicgen.py --shape small --frames 50 --batches 1,8 --update-batch 8

It writes a random-weight folder of the shape (musicgen-small: T5-base encoder, a 24-layer
1024-wide decoder over 4 codebooks of 2048; `--shape tiny` is the test fixture's) under
--folder, unless one is there, then times transformers' `generate` (top-k 250, temperature 1,
guidance off and 3.0, the codec's decode left out) and `musicrl bench --workloads musicgen`
on it, and prints frames per second and the ratios; then one learner update of musicrl's
objective in eager PyTorch against `MusicgenTrainer::try_train_step` on the same folder. No
weights are downloaded.
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


def median_time(fn, iters):
    """Median seconds of `iters` calls of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def write_folder(shape, folder, decoder_layers=None):
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, T5Config)
    s = SHAPES[shape]
    if decoder_layers:
        s = dict(s, decoder=dict(s["decoder"], num_hidden_layers=decoder_layers))
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
            m = median_time(run, iters)
            out.append(dict(batch=batch, guidance=guidance, frames_per_second=batch * frames / m, median_seconds=m))
            print(f"transformers sample batch {batch:>3} guidance {guidance!s:<5} {batch * frames / m:9.1f} frames/s", flush=True)
    return out


def time_update(folder, frames, batch, iters):
    """One learner update of musicrl's objective, eager PyTorch: T5 and the projection
    frozen, the decoder and a value head trained; the frozen reference decoder's logits; the
    exact KL over each code's codebook; the policy term with leave-one-out baselines; the
    value regression; backward; Adam. What `MusicgenTrainer::try_train_step` computes."""
    import copy
    from transformers import MusicgenForConditionalGeneration
    from tokenizers import Tokenizer
    model = MusicgenForConditionalGeneration.from_pretrained(folder)
    model.train(False)
    reference = copy.deepcopy(model)
    for p in list(model.text_encoder.parameters()) + list(model.enc_to_dec_proj.parameters()) + list(reference.parameters()):
        p.requires_grad_(False)
    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    k, v = model.decoder.num_codebooks, model.decoder.config.vocab_size
    d = model.decoder.config.hidden_size
    value = torch.nn.Linear(d, 1)
    params = [p for p in model.decoder.parameters() if p.requires_grad] + list(value.parameters())
    opt = torch.optim.Adam(params, lr=1e-5)
    captions = [CAPTION, "a slow lament on the harp"]
    enc = [tok.encode(captions[i % 2]) for i in range(batch)]
    width = max(len(e.ids) for e in enc)
    ids = torch.tensor([e.ids + [0] * (width - len(e.ids)) for e in enc])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in enc])
    codes = (torch.arange(batch * k * frames) * 7 % v).reshape(batch, k, frames)
    grid = torch.full((batch, k, frames + k), 2048)
    for j in range(k):
        grid[:, j, j + 1:j + 1 + frames] = codes[:, j]
    inputs = grid[:, :, :-1].reshape(batch * k, frames + k - 1)
    rewards = torch.arange(batch, dtype=torch.float32) / batch
    behaviour = torch.full((batch, k, frames), -math.log(v))

    def aligned(t):  # [B, K, L, ...] -> [B, K, T, ...]: code [k][t] from position t + k
        return torch.stack([t[:, j, j:j + frames] for j in range(k)], 1)

    def update():
        out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=inputs, output_hidden_states=True)
        logits = aligned(out.logits.reshape(batch, k, frames + k - 1, v))
        with torch.no_grad():
            ref = aligned(reference(input_ids=ids, attention_mask=mask, decoder_input_ids=inputs).logits
                          .reshape(batch, k, frames + k - 1, v))
        hidden = out.decoder_hidden_states[-1].detach()  # [B, L, d]
        values = aligned(value(hidden).squeeze(-1).unsqueeze(1).expand(batch, k, frames + k - 1))
        logp = torch.log_softmax(logits, -1)
        logp_a = logp.gather(-1, codes.unsqueeze(-1)).squeeze(-1)
        kl = (logp.exp() * (logp - torch.log_softmax(ref, -1))).sum(-1)
        baseline = (rewards.reshape(-1, 2).sum(0).repeat(batch // 2) - rewards) / (batch // 2 - 1)
        adv = (rewards - baseline)[:, None, None]
        w = (logp_a.detach() - behaviour).exp().clamp(max=1.0)
        pg = -(w * adv * logp_a)
        vl = (rewards[:, None, None] - values) ** 2
        loss = (0.98 * pg.sum() + 0.02 * kl.sum() + 0.5 * vl.sum()) / (batch * k * frames)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    m = median_time(update, iters)
    print(f"pytorch      update batch {batch:>3} {m:9.2f} s per update ({batch * frames / m:.1f} frames/s)", flush=True)
    return dict(batch=batch, median_seconds=m)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--folder", default=None, help="where the random model goes [/tmp/musicgen-SHAPE-random]")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--musicrl", default="target/release/musicrl")
    ap.add_argument("--update-batch", type=int, default=8, help="clips in the timed learner update (0: skip it)")
    ap.add_argument("--write-only", action="store_true", help="write the random folder and stop (scripts/device/musicgen.sh)")
    ap.add_argument("--decoder-layers", type=int, default=None,
                    help="the shape's width with this many decoder layers (musicrl bench --workloads lora at musicgen-medium's width)")
    args = ap.parse_args()
    depth = f"-{args.decoder_layers}layers" if args.decoder_layers else ""
    folder = Path(args.folder or f"/tmp/musicgen-{args.shape}{depth}-random")
    if not (folder / "model.safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_folder(args.shape, folder, args.decoder_layers)
    if args.write_only:
        print(folder)
        return
    batches = [int(b) for b in args.batches.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    ref = time_transformers(str(folder), args.frames, batches, args.iters)
    ref_update = time_update(str(folder), args.frames, args.update_batch, args.iters) if args.update_batch else None
    report = Path("/tmp/musicgen-bench.json")
    subprocess.run([args.musicrl, "bench", "--workloads", "musicgen", "--musicgen", str(folder),
                    "--musicgen-frames", str(args.frames), "--batches", args.batches,
                    "--musicgen-update-batch", str(args.update_batch),
                    "--iters", str(args.iters), "--json", str(report)], check=True)
    measured = json.loads(report.read_text())["musicgen"]["measurements"]
    def ours(kind, r):
        return next(m for m in measured
                    if m["kind"] == kind and m["batch"] == r["batch"] and m["guidance"] == r["guidance"])
    print("\n| batch | guidance | musicrl engine frames/s | musicrl burn frames/s | transformers frames/s | ratio (engine) |"
          "\n|---|---|---:|---:|---:|---:|")
    for r in ref:
        o, b = ours("sample", r), ours("sample-burn", r)
        print(f"| {r['batch']} | {'on' if r['guidance'] else 'off'} | {o['frames_per_second']:.1f} | "
              f"{b['frames_per_second']:.1f} | {r['frames_per_second']:.1f} | "
              f"{o['frames_per_second'] / r['frames_per_second']:.2f} |")
    if ref_update:
        o = next(m for m in measured if m["kind"] == "update")
        print(f"\n| learner update, batch {o['batch']} × {args.frames} frames | musicrl s | PyTorch s | ratio (PyTorch / musicrl) |\n|---|---:|---:|---:|")
        print(f"| seconds per update | {o['median_seconds']:.2f} | {ref_update['median_seconds']:.2f} | "
              f"{ref_update['median_seconds'] / o['median_seconds']:.2f} |")


if __name__ == "__main__":
    main()
