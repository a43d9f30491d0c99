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

from pathlib import Path

import torch

from ..io import atomic_write
from ..measure.coord import coord_check
from ..measure.coord_result import CoordResult
from ..models.cnn import cnn
from ..models.mlp import mlp
from ..models.transformer import transformer
from ..report import plot_coord, slope_table
from ..schemes import get_scheme
from ..kit import command
from ..kit.experiment import Experiment
from ..kit.summary import Summary

NAME = "coord_check"
_MLP = dict(model="mlp", d_in=16, depth=3, activation="tanh", base_width=64, optimizer="sgd", lr=0.1, batch_size=16,
            steps=3, data_seed=0)
_TF = dict(model="transformer", vocab_size=64, seq_len=16, depth=2, n_heads=4, base_width=64, optimizer="adam",
           lr=1e-2, batch_size=8, steps=3, data_seed=0, activation="gelu", d_in=0)
SIZES = {
    "tiny": {**_MLP, "schemes": ["sp", "mup"], "widths": [64, 128, 256], "seeds": 1, "steps": 2},
    "quick": {**_MLP, "schemes": ["sp", "ntk", "mf", "mup"], "widths": [64, 128, 256, 512, 1024], "seeds": 3},
    "default": {**_MLP, "schemes": ["sp", "sp-stable", "ntk", "mf", "mup"], "widths": [128, 256, 512, 1024, 2048, 4096],
                "seeds": 4},
    "transformer": {**_TF, "schemes": ["sp", "mup"], "widths": [64, 128, 256, 512], "seeds": 2},
}
MODELS = ("mlp", "cnn", "transformer")


def _batch(p: dict):
    g = torch.Generator().manual_seed(p["data_seed"])
    if p["model"] == "transformer":
        # a repeating pattern with noise: next-token prediction has something to learn
        x = torch.randint(0, p["vocab_size"], (p["batch_size"], p["seq_len"] + 1), generator=g)
        return x[:, :-1], x[:, 1:]
    x = torch.randn(p["batch_size"], p["d_in"], generator=g)
    return x, torch.randn(p["batch_size"], 1, generator=g)


def _factory(p: dict, scheme: str):
    if p["model"] == "transformer":
        return lambda w: transformer(p["vocab_size"], w, depth=p["depth"], n_heads=p["n_heads"], scheme=scheme,
                                     base_width=p["base_width"], max_len=p["seq_len"], zero_query=True,
                                     readout_zero_init=True, attn_logits=True)
    if p["model"] == "cnn":
        return lambda w: cnn(1, 1, w, depth=p["depth"], scheme=scheme, base_width=p["base_width"],
                             activation=p["activation"])
    return lambda w: mlp(p["d_in"], 1, w, depth=p["depth"], scheme=scheme, base_width=p["base_width"],
                         activation=p["activation"])


def _is_act(f: dict) -> bool:
    return f["quantity"].startswith(("act", "dact"))


def run_one(cfg: dict, log) -> dict:
    """The coordinate check of one scheme over every width and seed (one run per scheme)."""
    x, y = _batch(cfg)
    res = coord_check(_factory(cfg, cfg["scheme"]), cfg["widths"], x, y, optimizer=cfg["optimizer"], lr=cfg["lr"],
                      steps=cfg["steps"], seeds=cfg["seeds"], loss="xent" if cfg["model"] == "transformer" else "mse",
                      quantities="all")
    fails = res.failures()
    worst = max((f["slope"] for f in res.fits if f["quantity"] == "act/l1" and f["slope"] == f["slope"]),
                default=float("nan"))
    for f in res.fits:
        if f["quantity"] == "act/l1":
            log({f"slope/{f['name']}": f["slope"]}, f["step"])
    return {"passed": int(res.passed), "n_fail": len(fails), "max_act_slope": worst, "n_rows": len(res.fits),
            "activations_passed": all(f["passed"] for f in res.fits if _is_act(f)),
            "weights_passed": all(f["passed"] for f in res.fits if not _is_act(f)),
            "failures": [f"{f['name']} {f['quantity']} t={f['step']} slope {f['slope']:+.2f}" for f in fails[:12]],
            "failing_modules": "; ".join(sorted({f["name"] for f in fails})),
            # what the plot and the slope table need: act/l1 records, act and dact fits
            "coord": res.to_dict(records=("act/l1",), fits=("act", "dact"))}


def summarize(results: list, p: dict, out_dir: Path) -> Summary:
    """Per scheme: pass/fail of activations and weights, the largest activation slope, a mup-style plot."""
    figures, rows, verdicts, tables = {}, [], {}, []
    for c, r in results:
        s = c["scheme"]
        res = CoordResult.from_dict(r["coord"])
        path = out_dir / f"coord_{p['model']}_{s}.png"
        plot_coord(res, path, quantity="act/l1")
        figures[f"{p['model']} {s}"] = path
        tables.append(f"## {s}\n\n" + slope_table(res, quantities=("act", "dact")))
        act_ok, w_ok = r["activations_passed"], r["weights_passed"]
        verdicts[s] = {"passed": bool(r["passed"]), "activations_passed": act_ok, "weights_passed": w_ok,
                       "n_fail": r["n_fail"], "max_act_slope": r["max_act_slope"], "failures": r["failures"]}
        rows.append([s, "pass" if act_ok else "FAIL", "pass" if w_ok else "FAIL", f"{r['n_fail']}/{r['n_rows']}",
                     r["max_act_slope"], r["failing_modules"][:80]])
    with atomic_write(out_dir / "slopes.md") as f:
        f.write("\n\n".join(tables) + "\n")
    notes = (f"{p['model']}, {p['optimizer']} lr {p['lr']}, {p['steps']} steps on one batch, widths {p['widths']}, "
             f"{p['seeds']} seeds; predictions from each scheme's plan (r: "
             + ", ".join(f"{s} {get_scheme(s).predicted_r():g}" for s in p["schemes"]) + "). Per-module slopes: slopes.md")
    return Summary(f"Coordinate check ({p['model']})", ["scheme", "activations", "weights", "failed rows",
                                                        "largest act/l1 slope", "failing modules"], rows, figures,
                   extra={"verdicts": verdicts, "params": p}, notes=notes)


def _check_model(v) -> str | None:
    return None if v in MODELS else f"is not one of {list(MODELS)}"


EXPERIMENT = Experiment(NAME, SIZES, run_one, summarize, doc=__doc__, axes={"scheme": "schemes"},
                        checks={"model": _check_model})
RUNNER = EXPERIMENT.runner


def main(argv=None):
    return command.main(EXPERIMENT, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
