"""coord_check: do activations and updates keep their size as width grows?

For each scheme, build the model at every width (same seeds), train a few steps at a large LR on one
fixed batch, and record the size of every module's output (and its change) and of every weight
update at steps 0..T (`measure.coord`). Fit the log-log slope against width and compare it with the
slope the scheme predicts, which is read from the model's plan. A scheme passes when every module
agrees with its prediction and no activation grows with width.

Expected (TP5 §3, mup's coord checks): muP and MF flat and passing; SP at a fixed LR grows
(the logits first, then every layer after the readout has moved) and fails.

`--size transformer` runs the same check on the decoder-only Transformer, attention logits
included. It uses Adam, and zero-initialized query and readout under every scheme, as the mup
README recommends (this removes the 1/sqrt(width) transient of the muP logits at init).
"""

from __future__ import annotations

import sys
import torch
import torch.nn.functional as F

from ..measure.coord import coord_check, plot_coord, slope_table
from ..models.cnn import cnn
from ..models.mlp import mlp
from ..models.transformer import transformer
from ..schemes import get_scheme
from .common import finish, run_grid, setup

NAME = "coord_check"
_MLP = dict(model="mlp", d_in=16, depth=3, activation="tanh", base_width=64, optimizer="sgd", lr=0.1, batch=16,
            steps=3, data_seed=0)
_TF = dict(model="transformer", vocab=64, seq=16, depth=2, n_heads=4, base_width=64, optimizer="adam", lr=1e-2,
           batch=8, steps=3, data_seed=0, activation="gelu", d_in=0)
SIZES = {
    "tiny": {**_MLP, "schemes": ["sp", "mup"], "widths": [64, 128, 256], "seeds": 1, "steps": 2},
    "quick": {**_MLP, "schemes": ["sp", "ntk", "mf", "mup"], "widths": [64, 128, 256, 512, 1024], "seeds": 3},
    "default": {**_MLP, "schemes": ["sp", "sp-stable", "ntk", "mf", "mup"], "widths": [128, 256, 512, 1024, 2048, 4096],
                "seeds": 4},
    "transformer": {**_TF, "schemes": ["sp", "mup"], "widths": [64, 128, 256, 512], "seeds": 2},
}


def _batch(p: dict):
    g = torch.Generator().manual_seed(p["data_seed"])
    if p["model"] == "transformer":
        # a repeating pattern with noise: next-token prediction has something to learn
        x = torch.randint(0, p["vocab"], (p["batch"], p["seq"] + 1), generator=g)
        return x[:, :-1], x[:, 1:]
    x = torch.randn(p["batch"], p["d_in"], generator=g)
    return x, torch.randn(p["batch"], 1, generator=g)


def _factory(p: dict, scheme: str):
    if p["model"] == "transformer":
        return lambda w: transformer(p["vocab"], w, depth=p["depth"], n_heads=p["n_heads"], scheme=scheme,
                                     base_width=p["base_width"], max_len=p["seq"], zero_query=True,
                                     readout_zero_init=True, attn_logits=True)
    if p["model"] == "cnn":
        return lambda w: cnn(1, 1, w, depth=p["depth"], scheme=scheme, base_width=p["base_width"],
                             activation=p["activation"])
    return lambda w: mlp(p["d_in"], 1, w, depth=p["depth"], scheme=scheme, base_width=p["base_width"],
                         activation=p["activation"])


def _loss(p: dict):
    if p["model"] == "transformer":
        return lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten())
    return "mse"


def run(size: str = "default", root="runs", use_wandb: bool = True, progress: bool = True, group=None,
        threads=None, **overrides) -> dict:
    p, ctx = setup(sys.modules[__name__], size, root, use_wandb, progress, group, threads, overrides)
    x, y = _batch(p)
    figures, rows, verdicts, tables = {}, [], {}, []

    def one(cfg, run):
        s = cfg["scheme"]
        res = coord_check(_factory(p, s), p["widths"], x, y, optimizer=p["optimizer"], lr=p["lr"], steps=p["steps"],
                          seeds=range(p["seeds"]), loss=_loss(p))
        path = ctx.out_dir / f"coord_{p['model']}_{s}.png"
        plot_coord(res, path, quantity="act/l1")
        figures[f"{p['model']} {s}"] = path
        tables.append(f"## {s}\n\n" + slope_table(res, quantities=("act", "dact")))
        fails = res.failures()
        worst = max((f["slope"] for f in res.fits if f["quantity"] == "act/l1" and f["slope"] == f["slope"]),
                    default=float("nan"))
        is_act = lambda f: f["quantity"].startswith(("act", "dact"))  # noqa: E731
        act_ok = all(f["passed"] for f in res.fits if is_act(f))
        w_ok = all(f["passed"] for f in res.fits if not is_act(f))
        verdicts[s] = {"passed": res.passed, "activations_passed": act_ok, "weights_passed": w_ok,
                       "n_fail": len(fails), "max_act_slope": worst,
                       "failures": [f"{f['name']} {f['quantity']} t={f['step']} slope {f['slope']:+.2f}" for f in fails[:12]]}
        rows.append([s, "pass" if act_ok else "FAIL", "pass" if w_ok else "FAIL", f"{len(fails)}/{len(res.fits)}", worst,
                     "; ".join(sorted({f["name"] for f in fails}))[:80]])
        for f in res.fits:
            if f["quantity"] == "act/l1":
                run.log({f"slope/{f['name']}": f["slope"]}, step=f["step"])
        return {"passed": int(res.passed), "n_fail": len(fails), "max_act_slope": worst}

    run_grid(ctx, [{**{k: v for k, v in p.items() if k not in ("schemes", "widths")}, "scheme": s, "width": max(p["widths"])}
                   for s in p["schemes"]], one)
    (ctx.out_dir / "slopes.md").write_text("\n\n".join(tables) + "\n")
    notes = (f"{p['model']}, {p['optimizer']} lr {p['lr']}, {p['steps']} steps on one batch, widths {p['widths']}, "
             f"{p['seeds']} seeds; predictions from each scheme's plan (r: "
             + ", ".join(f"{s} {get_scheme(s).predicted_r():g}" for s in p["schemes"]) + "). Per-module slopes: slopes.md")
    return finish(ctx, f"Coordinate check ({p['model']})", ["scheme", "activations", "weights", "failed rows",
                                                             "largest act/l1 slope", "failing modules"], rows, figures,
                  extra={"verdicts": verdicts, "params": p}, notes=notes)


def main(argv=None):
    from .common import cli_main

    return cli_main(sys.modules[__name__], argv)


if __name__ == "__main__":  # pragma: no cover
    main()
