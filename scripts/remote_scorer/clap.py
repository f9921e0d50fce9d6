"""Text-audio similarity with a CLAP model as a musicrl reward component (the MuLan-style
text adherence reward of the MusicRL paper, with an open model, LAION-CLAP through
transformers' `ClapModel`): the cosine similarity of the caption's and the clip's CLAP
embeddings, in [-1, 1].

Bring the model yourself (nothing here downloads it):

    pip install ./python/musicrl-scorer transformers torch
    python scripts/remote_scorer/clap.py --model /path/to/clap-htsat-unfused --listen 127.0.0.1:50061

and configure the component (docs/real-models.md) with `remote_component = "clap"`,
`send_audio = true`, `sample_rate = 48000` (CLAP's rate) and the paper's windows
`windows = [[0, 10], [10, 10], [20, 10]]`. A clip longer than the feature extractor's
`max_length_s` (10 s) is scored on its first `max_length_s` seconds, so that a score never
depends on a random crop. `scripts/remote_scorer/test_clap.py` checks it on a tiny random
CLAP of the same architecture, behind a real musicrl reward server.
"""

import argparse

import musicrl_scorer


def _embeds(out):
    """transformers 4 returns the projected embeddings; 5 a model output holding them."""
    return out if hasattr(out, "dim") else out.pooler_output


def build(model_dir: str, device: str = "cpu"):
    """(score function, version, sample rate) for the CLAP folder `model_dir`."""
    import torch
    from transformers import ClapModel, ClapProcessor

    model = ClapModel.from_pretrained(model_dir, local_files_only=True).to(device).eval()
    processor = ClapProcessor.from_pretrained(model_dir, local_files_only=True)
    rate = processor.feature_extractor.sampling_rate
    longest = int(processor.feature_extractor.max_length_s * rate)

    @torch.no_grad()
    def score(captions, audio, sample_rate):
        if sample_rate != rate:
            raise ValueError(f"clips arrive at {sample_rate} Hz; set sample_rate = {rate} on the component")
        clips = [a[:longest] for a in audio]
        text = processor(text=list(captions), return_tensors="pt", padding=True).to(device)
        sound = processor(audio=clips, sampling_rate=rate, return_tensors="pt").to(device)
        t = torch.nn.functional.normalize(_embeds(model.get_text_features(
            input_ids=text["input_ids"], attention_mask=text["attention_mask"])), dim=-1)
        a = torch.nn.functional.normalize(_embeds(model.get_audio_features(
            input_features=sound["input_features"], is_longer=sound.get("is_longer"))), dim=-1)
        return {"clap": (t * a).sum(-1).tolist()}

    return score, f"clap({model_dir})", rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a local CLAP folder (Hugging Face layout)")
    ap.add_argument("--listen", default="127.0.0.1:50061")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ready-file", help="write {\"port\": N} here once serving")
    args = ap.parse_args()
    score, version, _ = build(args.model, args.device)
    musicrl_scorer.serve(score, components=["clap"], version=version, listen=args.listen,
                         ready_file=args.ready_file)


if __name__ == "__main__":
    main()
