"""Coordinate checks under every optimizer family: paramlab's MLP and Transformer and HF GPT-2 (tiny
config, parameterized by paramlab), muP and SP, Adam / Muon hybrid / Lion / Adafactor.

Prints one markdown row per (model, scheme, optimizer): the log-log slope in width of the RMS change of
every recorded module's output after 1 and 3 steps (dact/rms, `paramlab.measure.coord_check`), the
largest of them, and how many rows with a prediction (Adam-equivalent steps, `coord_predict`) agree
with it. muP should be flat (slopes ~ 0) and SP should grow (positive slopes) on the predicted values.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/optimizer_coord_check.py [--models mlp,transformer,gpt2]
"""

from __future__ import annotations

import argparse
import sys

import torch

import paramlab as pl
from paramlab.measure.coord import coord_check

WIDTHS = [64, 128, 256, 512]
LRS = {"adam": 1e-2, "muon": 1e-2, "lion": 1e-3, "adafactor": 1e-2}
V = 64


def gpt2(width, device=None):
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=16, n_embd=width, n_layer=2, n_head=4, bos_token_id=0,
                                  eos_token_id=0, attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)
    with torch.device(device or "cpu"):
        return transformers.GPT2LMHeadModel(cfg)


class Logits(torch.nn.Module):
    """HF output -> logits tensor (coord_check's losses take a tensor)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, idx):
        return self.inner(idx).logits


def models(name, scheme):
    if name == "mlp":
        x, y = torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), None
        y = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
        return (lambda w: pl.mlp(8, 3, w, depth=3, scheme=scheme, base_width=WIDTHS[0], seed=None)), x, y, "mse"
    data = torch.randint(0, V, (8, 17), generator=torch.Generator().manual_seed(0))
    x, y = data[:, :-1], data[:, 1:]
    if name == "transformer":
        return (lambda w: pl.transformer(V, w, depth=2, n_heads=4, scheme=scheme, base_width=WIDTHS[0], max_len=16,
                                         seed=None)), x, y, "xent"
    return (lambda w: pl.parameterize(Logits(gpt2(w)), scheme, base=Logits(gpt2(WIDTHS[0], device="meta")),
                                      delta=Logits(gpt2(2 * WIDTHS[0], device="meta")))), x, y, "xent"


def row(model, scheme, opt):
    make, x, y, loss = models(model, scheme)
    res = coord_check(make, WIDTHS, x, y, optimizer=opt, lr=LRS[opt], steps=3, seeds=2, loss=loss,
                      quantities=["dact/rms"])
    fits = [f for f in res.fits if f["quantity"] == "dact/rms" and f["step"] in (1, 3)]
    slopes = {(f["name"], f["step"]): f["slope"] for f in fits}
    pred = [f for f in fits if f["predicted"] is not None]
    agree = sum(1 for f in pred if f["agrees"])
    worst = max(slopes, key=lambda k: abs(slopes[k]))
    t1 = [f["slope"] for f in fits if f["step"] == 1]
    return (f"| {model} | {scheme} | {opt} | {min(t1):+.2f} .. {max(t1):+.2f} | {worst[0]} t={worst[1]}: "
            f"{slopes[worst]:+.2f} | {agree}/{len(pred)} |")


def adjust_rows():
    """Muon's two adjust_lr_fn on the MLP's hidden matrices, with paramlab's lr factor and without it (torch's
    Muon at one lr: the factor set to 1), muP and SP: width slopes of the hidden layers' dact/rms after 1
    and 3 steps and of the spectral norm of the first hidden matrix's first update."""
    make_x = models("mlp", "mup")
    x, y = make_x[1], make_x[2]
    out = []
    for scheme in ("mup", "sp"):
        for fn in ("original", "match_rms_adamw"):
            for corrected in (True, False):
                def opt(model, fn=fn, corrected=corrected):
                    o = pl.optimizer(model, "muon", lr=1e-2, adjust_lr_fn=fn)
                    if not corrected:
                        muon = next(p for p in o.parts if isinstance(p, torch.optim.Muon))
                        for g in muon.param_groups:  # torch's own behaviour at one lr
                            g["lr_mult"] = 1.0
                    return o

                res = coord_check(models("mlp", scheme)[0], WIDTHS, x, y, optimizer=opt, steps=3, seeds=2,
                                  quantities=["dact/rms", "upd/spec"], auto_predict=False)
                sl = {(f["name"], f["quantity"], f["step"]): f["slope"] for f in res.fits}
                cells = " | ".join(f"{sl[(n, 'dact/rms', t)]:+.2f}" for n in ("layers.1", "layers.2") for t in (1, 3))
                cells += f" | {sl[('layers.1.weight', 'upd/spec', 1)]:+.2f}"
                out.append(f"| {scheme} | {fn} | {'paramlab' if corrected else 'torch (one lr)'} | {cells} |")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,transformer,gpt2")
    ap.add_argument("--optimizers", default="adam,muon,lion,adafactor")
    ap.add_argument("--adjust", action="store_true", help="only the adjust_lr_fn table")
    args = ap.parse_args(argv)
    if args.adjust:
        print("| scheme | adjust_lr_fn | hidden lr | dact layers.1 t=1 | t=3 | dact layers.2 t=1 | t=3 | "
              "||update||_2 of layers.1.weight, step 1 |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(adjust_rows()))
        return 0
    print("| model | scheme | optimizer | dact/rms slopes at t=1 (min .. max) | largest |slope| | predicted rows that agree |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for scheme in ("mup", "sp"):
            for opt in args.optimizers.split(","):
                print(row(model, scheme, opt), flush=True)


if __name__ == "__main__":
    sys.exit(main())
