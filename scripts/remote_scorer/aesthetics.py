"""Meta's Audiobox Aesthetics as musicrl reward components (the MOS-style quality reward of
the MusicRL paper, with an open model): its four axes — production quality (PQ), production
complexity (PC), content enjoyment (CE), content usefulness (CU), each predicted on a 1–10
scale — rescaled to [0, 1] as the paper rescales its MOS, `(score − 1) / 9`, clipped.

Bring the weights yourself (CC-BY 4.0; nothing here downloads them): a local copy of the
`facebook/audiobox-aesthetics` folder (`config.json`, `model.safetensors`):

    pip install ./python/musicrl-scorer audiobox-aesthetics torch
    python scripts/remote_scorer/aesthetics.py --model /path/to/audiobox-aesthetics --listen 127.0.0.1:50062

and configure one component per axis you want (docs/real-models.md), e.g. `remote_component =
"PQ"`, `send_audio = true`, `sample_rate = 16000` (the model's rate) and the paper's quality
windows `windows = [[0, 20], [-20, 20]]`. The package's own inference is followed: a clip is
cut into 10 s windows (the last zero-padded and masked), each predicted, and their predictions
averaged weighted by how much of each window is audio. `scripts/remote_scorer/test_aesthetics.py`
checks it against the package's `AesPredictor` on random weights of the real architecture.
"""

import argparse

import musicrl_scorer

AXES = ["PQ", "PC", "CE", "CU"]
RATE = 16000


def rescale(x: float) -> float:
    """A 1–10 prediction on [0, 1], as the paper rescales its 1–5 MOS."""
    return min(1.0, max(0.0, (x - 1.0) / 9.0))


def build(model_dir: str, device: str = "cpu"):
    """(score function, version, raw predictor) for the Aesthetics folder `model_dir`."""
    import torch
    from audiobox_aesthetics.infer import make_inference_batch
    from audiobox_aesthetics.model.aes import AesMultiOutput, Normalize

    model = AesMultiOutput.from_pretrained(model_dir, local_files_only=True).to(device).eval()
    inverse = {a: Normalize(**model.target_transform[a]).inverse for a in AXES}

    @torch.inference_mode()
    def predict(audio):
        """Each clip's four axes on the model's 1–10 scale."""
        wavs = [torch.as_tensor(a, dtype=torch.float32)[None] for a in audio]
        wavs, masks, weights, owners = make_inference_batch(wavs, 10, 10, sample_rate=RATE)
        out = model({"wav": torch.stack(wavs).to(device), "mask": torch.stack(masks).to(device)})
        weights = torch.tensor(weights, device=device)
        owners = torch.tensor(owners, device=device)
        rows = []
        for i in range(len(audio)):
            w = weights[owners == i]
            rows.append({a: float((inverse[a](out[a])[owners == i] * w).sum() / w.sum()) for a in AXES})
        return rows

    def score(captions, audio, sample_rate):
        if sample_rate != RATE:
            raise ValueError(f"clips arrive at {sample_rate} Hz; set sample_rate = {RATE} on the component")
        rows = predict(audio)
        return {a: [rescale(r[a]) for r in rows] for a in AXES}

    return score, f"audiobox-aesthetics({model_dir})", predict


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a local audiobox-aesthetics folder")
    ap.add_argument("--listen", default="127.0.0.1:50062")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ready-file", help="write {\"port\": N} here once serving")
    args = ap.parse_args()
    score, version, _ = build(args.model, args.device)
    musicrl_scorer.serve(score, components=AXES, version=version, listen=args.listen,
                         ready_file=args.ready_file)


if __name__ == "__main__":
    main()
