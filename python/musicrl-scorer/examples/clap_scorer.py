"""Text-audio similarity with a CLAP model as a musicrl reward component (the MuLan-style
text adherence reward of the MusicRL paper, with an open model): the cosine similarity of
the caption's and the clip's CLAP embeddings.

Bring the model yourself (nothing here downloads it):

    pip install ./python/musicrl-scorer transformers torch
    python examples/clap_scorer.py --model /path/to/clap-htsat-unfused --listen 127.0.0.1:50061

and configure the component with `remote_component = "clap"`, `send_audio = true` and
`sample_rate = 48000` (CLAP's rate). Not run in CI: it needs the model's weights.
"""

import argparse

import musicrl_scorer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a local CLAP folder (Hugging Face layout)")
    ap.add_argument("--listen", default="127.0.0.1:50061")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch
    from transformers import ClapModel, ClapProcessor

    model = ClapModel.from_pretrained(args.model, local_files_only=True).to(args.device).eval()
    processor = ClapProcessor.from_pretrained(args.model, local_files_only=True)
    rate = processor.feature_extractor.sampling_rate

    @torch.no_grad()
    def score(captions, audio, sample_rate):
        if sample_rate != rate:
            raise ValueError(f"clips arrive at {sample_rate} Hz; set sample_rate = {rate} on the component")
        inputs = processor(text=captions, audios=list(audio), sampling_rate=rate, return_tensors="pt",
                           padding=True).to(args.device)
        text = torch.nn.functional.normalize(model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]), dim=-1)
        sound = torch.nn.functional.normalize(model.get_audio_features(
            input_features=inputs["input_features"]), dim=-1)
        return {"clap": (text * sound).sum(-1).tolist()}

    musicrl_scorer.serve(score, components=["clap"], version=f"clap({args.model})", listen=args.listen)


if __name__ == "__main__":
    main()
