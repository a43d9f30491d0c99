"""Tied embeddings at init (paramlab.tied): the own-token logit estimate, its warning, and the std it names."""

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

import paramlab as pl
from foreign import HF, V, NanoGPT, logits, tokens


def own_logit_rms_and_loss(model):
    idx = tokens(4, 12)
    with torch.no_grad():
        lg = logits(model, idx)
    own = lg.gather(-1, idx[..., None]).squeeze(-1)
    return own.pow(2).mean().sqrt().item(), F.cross_entropy(lg[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1)).item()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "nanogpt"])
def test_tied_embedding_at_default_std_warns_and_the_named_std_fixes_it(arch):
    """muP, width 256 from base 64, embedding_std=1: the own-token logits start at RMS ~35-43 (estimate 64) and the
    loss far above ln V; the warning names the embedding_std that makes the estimate 1, and with it they are O(1)."""
    make = HF.get(arch) or (lambda w, device=None: NanoGPT(w, device=device))
    with pytest.warns(UserWarning, match=r"own-token logits start at about 64 .*embedding_std=0.0156") as rec:
        model = pl.parameterize(make(256), "mup", base=make(64, device="meta"), seed=0)
    rms, loss = own_logit_rms_and_loss(model)
    assert rms > 10 and loss > 3 * math.log(V)  # what the warning is about
    std = float(re.search(r"embedding_std=([0-9.e-]+)", str(rec[0].message)).group(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = pl.parameterize(make(256), "mup", base=make(64, device="meta"), seed=0, embedding_std=std)
    rms, loss = own_logit_rms_and_loss(fixed)
    assert rms < 1 and abs(loss - math.log(V)) < 0.2


def test_untied_and_paramlab_tied_transformer():
    """An untied model has no own-token readout: no warning. paramlab's tied Transformer warns like any other."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pl.parameterize(HF["gpt2"](128, tied=False), "mup", base=HF["gpt2"](32, tied=False, device="meta"), seed=0)
    with pytest.warns(UserWarning, match="tok_emb.weight is tied to the readout readout.weight"):
        pl.transformer(V, 128, base_width=32, tied=True)
