#!/usr/bin/env python3
"""musicrl's policy in numpy, from its safetensors file alone (`musicrl policy export`).

What a PyTorch or JAX user needs to run a trained policy outside musicrl, written out so the
layout documented in docs/interop.md is checked: tests/interop/check.py compares this
module's log-probabilities with `musicrl policy score` to 1e-4.

    python3 scripts/policy_numpy.py theta0.safetensors "a lively reel in G major" 1 20 53 22 53

prints log pi(a_t | caption, a_<t) for each token. Needs numpy and safetensors (PyPI).
"""

import json
import math
import sys

import numpy as np
from safetensors import safe_open

LN_EPS = 1e-5  # burn's LayerNorm default


class Policy:
    def __init__(self, path):
        with safe_open(path, "np") as f:
            meta = f.metadata()
            if meta.get("format") != "musicrl-policy":
                raise ValueError(f"{path}: not a musicrl policy file")
            self.config = json.loads(meta["policy_config"])
            self.w = {k: f.get_tensor(k).astype(np.float64) for k in f.keys()}
        if self.config["caption_encoder"] != "words-fnv1a":
            raise ValueError("this reference implements the words-fnv1a caption encoder only")

    # -- the caption encoder: a hashed bag of words (policy/src/melody/caption.rs) --
    def caption_ids(self, caption):
        words, word = [], ""
        for ch in caption:
            if ch.isalnum():
                word += ch
            elif word:
                words.append(word)
                word = ""
        if word:
            words.append(word)
        words = [w.lower() for w in words[: self.config["max_caption_words"]]] or ["<empty>"]
        buckets = self.config["caption_buckets"]
        ids = []
        for w in words:
            h = 0xCBF29CE484222325
            for b in w.encode():
                h ^= b
                h = (h * 0x100000001B3) % (1 << 64)
            ids.append(1 + h % (buckets - 1))
        return ids

    def linear(self, name, x):
        # burn stores Linear weights as [d_in, d_out]: y = x @ W + b.
        return x @ self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def layer_norm(self, name, x):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + LN_EPS) * self.w[f"{name}.gamma"] + self.w[f"{name}.beta"]

    def forward(self, caption, tokens):
        """Log-probabilities [T, vocab] and values [T] of a sequence, row t from s_t."""
        c, d, h = self.config, self.config["d_model"], self.config["n_heads"]
        dh = d // h
        cond = self.w["caption_emb.weight"][self.caption_ids(caption)].mean(0)
        cond = self.linear("cond_proj", cond)
        t = len(tokens)
        x = np.vstack([cond[None, :], self.w["token_emb.weight"][tokens[: t - 1]]])
        x = x + self.w["pos_emb.weight"][:t]
        mask = np.triu(np.ones((t, t), dtype=bool), 1)
        erf = np.vectorize(math.erf)
        for i in range(c["n_layers"]):
            b = f"blocks.{i}"
            qkv = self.linear(f"{b}.qkv", self.layer_norm(f"{b}.ln1", x))
            q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(t, h, dh).transpose(1, 0, 2) for j in range(3))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
            scores = np.where(mask[None], -1e9, scores)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = (scores / scores.sum(-1, keepdims=True)) @ v
            x = x + self.linear(f"{b}.attn_out", attn.transpose(1, 0, 2).reshape(t, d))
            m = self.linear(f"{b}.mlp_in", self.layer_norm(f"{b}.ln2", x))
            m = 0.5 * m * (1.0 + erf(m / math.sqrt(2.0)))  # exact GELU
            x = x + self.linear(f"{b}.mlp_out", m)
        x = self.layer_norm("ln_f", x)
        logits = self.linear("lm_head", x)
        logits = logits - logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        values = self.linear("value_head", x)[:, 0]
        return logp, values

    def score(self, caption, tokens):
        logp, values = self.forward(caption, tokens)
        return [float(logp[i, a]) for i, a in enumerate(tokens)], [float(v) for v in values]


if __name__ == "__main__":
    policy = Policy(sys.argv[1])
    lp, _ = policy.score(sys.argv[2], [int(a) for a in sys.argv[3:]])
    print(json.dumps(lp))
