"""CBOW word model (TP4's Word2Vec network): embed the context words, average, read out the centre word.

    x (B, k) float32 word ids, -1 = no word (masked)  ->  emb (B, k, n)  ->  masked mean (B, n)
      = features(x)  ->  readout  ->  logits (B, vocab)

In TP4's words (Yang & Hu 2021, arXiv 2011.14522, section 9) a 1-hidden-layer *linear* network on
bag-of-words inputs: the embedding is the input layer (role ``input``), the readout over the
vocabulary the output layer (role ``output``). Its infinite-width NNGP / NTK are therefore those of
`MLPKernel(depth=1, activation="linear")` on the normalized bag-of-words vector (the mean of the
context words' one-hots), and the kernel between two different single words is 0.
"""

from __future__ import annotations

import torch
from torch import nn

from ..plan_options import PlanOptions
from .build import BASE_WIDTH, build, check_width

__all__ = ["CBOW", "cbow"]


class CBOW(nn.Module):
    """Parameter names: emb.weight (vocab, width) input; readout.weight (vocab, width) output; readout.bias."""

    def __init__(self, vocab: int, width: int, device=None, dtype=None):
        super().__init__()
        self.emb = nn.Embedding(vocab, width, device=device, dtype=dtype)
        self.readout = nn.Linear(width, vocab, device=device, dtype=dtype)
        self.vocab = vocab

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean embedding of the context words (B, width); ids < 0 are left out (an all-empty row gives 0)."""
        ids = x.long()  # (B, k): word ids < 2^24 are exact in float32
        if len(ids) and int(ids.max()) >= self.vocab:
            raise ValueError(f"word id {int(ids.max())} is outside this CBOW's vocabulary of {self.vocab}")
        mask = (ids >= 0).to(self.emb.weight.dtype)  # (B, k)
        e = self.emb(ids.clamp_min(0))  # (B, k, n); paramlab's hook on the Embedding applies its multiplier
        return (e * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))

    def role_tags(self) -> dict[str, str]:
        return {"emb.weight": "input", "readout.weight": "output", "readout.bias": "scalar"}


def cbow(vocab: int, width: int, *, scheme="mup", base_width: int = BASE_WIDTH, seed: int | None = None,
         dtype: torch.dtype | None = None, device=None, **options) -> CBOW:
    """A CBOW model of `width` under `scheme`, relative to `base_width`.

    At width == base_width every scheme gives the same network: embeddings N(0, 1), readout
    N(0, 1 / base_width) (fan-in init, gain 1: the model is linear), zero bias, one learning rate.
    `options` are the `PlanOptions` keywords (see `paramlab.plan_options`).
    """
    check_width("vocab", vocab)
    opts = PlanOptions.from_kwargs(options, "cbow").with_gain(1.0)
    make = lambda w, device=device: CBOW(vocab, w, device=device, dtype=dtype)  # noqa: E731
    return build(make, width, base_width, scheme, options=opts, device=device, seed=seed)
