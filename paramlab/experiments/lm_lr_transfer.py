"""lm_lr_transfer: does the best learning rate of a small Transformer LM stay best at a large width?

TP5 (arXiv 2203.03466) Fig. 1 on tiny Shakespeare (char level): train `paramlab.transformer` (pre-LN,
learned positions, untied readout, GELU, no biases, fixed 4 heads so d_head grows with d_model) at
d_model spanning 8x from the base width, over a log2 grid of Adam base learning rates, for a fixed token
budget (steps x batch x context), and take the mean validation cross-entropy (nats/char) on fixed
held-out windows. `--set optimizer=muon` (lion, adafactor, adamw: any `paramlab.optimizer` name, one lr
for all its parts) trains with another optimizer family (docs/optimizers.md). Diverged runs count as +inf. The optimum per width is the robust optimum
(`paramlab.measure.optimum`: a parabola in log loss through the seed-mean curve's minimum and its
neighbours, with a bootstrap-over-seeds error); the grid argmin is reported beside it.

Predictions: under muP the optimum moves <= 1 grid step over 8x width, and the val loss at muP's
optimum falls with width ("wider is better"); under SP (Adam) the optimum drifts down like ~1/width,
>= 2 grid steps over 8x. At the base width SP and muP are the same network (checked).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from ..engine.lm import sample, train_lm, train_lm_stacked
from ..engine.stack import stacking_pays
from ..measure.fit import slope_per_doubling
from ..measure.optimum import align_shift, robust_optimum
from ..report import color, describe_size, legend_outside, log_ticks, pyplot, save_figure, width_colors
from ..runners import BatchKey
from ..kit import command
from ..kit.experiment import LR_AXES, Batch, Experiment
from ..kit.lm import OnDevice, check_optimizer, check_task, lm_model, lm_task, protocol
from ..kit.summary import Summary, stored

NAME = "lm_lr_transfer"
_BASE = dict(task="shakespeare_char", depth=2, n_heads=4, base_width=32, context=32, batch=16, n_eval=256,
             eval_seed=0, betas=[0.9, 0.999], eps=1e-8, dtype="float32", device="cpu", sample_chars=300,
             optimizer="adam")
# Sizes measured on a 2-core CPU, 1 thread per run. Widths span 8x from the base
# width (the smallest width, where every scheme is the same network).
SIZES = {
    "tiny": {**_BASE, "schemes": ["sp", "mup"], "widths": [32, 64], "log2_lrs": [-10, -8, -6, -4], "seeds": 1,
             "steps": 20, "n_eval": 32, "sample_chars": 40},
    # 150 steps of 16 x 32 tokens (77k tokens per run), 1 seed
    "quick": {**_BASE, "schemes": ["sp", "mup"], "widths": [32, 64, 128, 256], "log2_lrs": list(range(-11, -3)),
              "seeds": 1, "steps": 150},
    # 250 steps (128k tokens), 3 seeds, two spare grid points on each side of both optima
    "default": {**_BASE, "schemes": ["sp", "mup"], "widths": [32, 64, 128, 256], "log2_lrs": list(range(-12, -2)),
                "seeds": 3, "steps": 250},
    # for a lent GPU (not run on this machine): 16x width, depth 4, 4096 tokens per step, 4.1M tokens per run
    "gpu": {**_BASE, "schemes": ["sp", "mup"], "widths": [64, 128, 256, 512, 1024], "log2_lrs": list(range(-14, -3)),
            "seeds": 2, "steps": 1000, "depth": 4, "base_width": 64, "context": 128, "batch": 32, "n_eval": 512,
            "device": "cuda"},
}


def _summary(res, cfg: dict) -> dict:
    tail = [v for v in res.train_losses[-10:] if math.isfinite(v)]
    return {"val/loss": res.val_loss if math.isfinite(res.val_loss) else float("inf"),
            "train/loss_last10": (sum(tail) / len(tail)) if tail and not res.diverged else float("nan"),
            "diverged": int(res.diverged), "steps_done": res.steps_done,
            "tokens": res.steps_done * cfg["batch"] * cfg["context"]}


def run_one(cfg: dict, log) -> dict:
    task = lm_task(cfg["task"])
    res = train_lm(lm_model(cfg, task), OnDevice(task, cfg["device"]), lr=2.0 ** cfg["log2_lr"], seed=cfg["seed"],
                   log=log, **protocol(cfg))
    return _summary(res, cfg)


# grid points that differ only in lr and seed may train as one stacked ensemble
batch_key = BatchKey(("log2_lr", "seed"))


def batch_pays(cfg: dict) -> bool:
    """The engine's measured rule (`paramlab.engine.stack.stacking_pays`, K = 8 as benchmarked) on the grid
    point's model and batch: on CPU it stacks d_model 32 (9.1e7 FLOPs per model step at batch 16 x 32), not
    64 (3.3e8); the vmap path is not measured on CUDA and does not stack there."""
    if cfg.get("optimizer", "adam") != "adam":  # the stacked pass trains Adam only
        return False
    return _pays(*(cfg[k] for k in ("task", "width", "depth", "n_heads", "base_width", "context", "batch",
                                    "dtype", "device")))


@functools.lru_cache(maxsize=64)
def _pays(task_name, width, depth, n_heads, base_width, context, batch, dtype, device) -> bool:
    cfg = dict(width=width, depth=depth, n_heads=n_heads, scheme="sp", base_width=base_width, context=context,
               seed=0, dtype=dtype, device="cpu")  # the FLOP count needs the shapes only: built on the CPU
    return stacking_pays(lm_model(cfg, lm_task(task_name)), torch.zeros(batch, context, dtype=torch.long), 8, device)


def run_batch(cfgs: list[dict], logs: list) -> list[dict]:
    """`run_one` for each config as one stacked pass (`train_lm_stacked`: the same numbers up to rounding)."""
    task, c0 = lm_task(cfgs[0]["task"]), cfgs[0]
    res = train_lm_stacked([lm_model(c, task) for c in cfgs], OnDevice(task, c0["device"]),
                           lrs=[2.0 ** c["log2_lr"] for c in cfgs], seeds=[c["seed"] for c in cfgs], logs=logs,
                           **protocol(c0))
    return [_summary(r, c0) for r in res]


BATCH = Batch(batch_key, run_batch, batch_pays)


# -- summary -----------------------------------------------------------------------------------------


def curves(results, scheme: str, width: int, log2_lrs, metric: str = "val/loss") -> np.ndarray:
    """(n_seeds, n_lrs) of `metric` for one (scheme, width); +inf where diverged."""
    seeds = sorted({c["seed"] for c, _ in results if c["scheme"] == scheme and c["width"] == width})
    out = np.full((len(seeds), len(log2_lrs)), np.nan)
    for c, r in results:
        if c["scheme"] == scheme and c["width"] == width:
            v = r.get(metric, np.nan)
            out[seeds.index(c["seed"]), list(log2_lrs).index(c["log2_lr"])] = np.inf if r.get("diverged") else v
    return out


def shift_table(results, p: dict, metric: str = "val/loss") -> dict:
    """scheme -> per-width optima (grid argmin, robust +- se, status, best loss) and the base -> widest shift."""
    lrs, widths = list(p["log2_lrs"]), list(p["widths"])
    x = np.array(lrs, dtype=float)
    out = {}
    for s in p["schemes"]:
        per = []
        for w in widths:
            c = curves(results, s, w, lrs, metric)
            o = robust_optimum(x, c)
            mean = c.mean(0)
            per.append(dict(width=w, grid=o.argmin, robust=o.x, se=o.se, status=o.status,
                            best_loss=float(np.min(mean)), mean_curve=mean.tolist()))
        b, t = per[0], per[-1]
        cb, ct = curves(results, s, widths[0], lrs, metric), curves(results, s, widths[-1], lrs, metric)
        i0 = lrs.index(b["grid"]) if np.isfinite(b["grid"]) else None
        out[s] = dict(per_width=per, shift_grid=t["grid"] - b["grid"], shift_robust=t["robust"] - b["robust"],
                      shift_se=float(np.hypot(b["se"], t["se"])),
                      shift_status="ok" if b["status"] == t["status"] == "ok" else f"{b['status']}/{t['status']}",
                      shift_align=align_shift(x, cb, ct),
                      slope_per_doubling=slope_per_doubling(widths, [r["robust"] for r in per]),
                      best_loss_by_width=[r["best_loss"] for r in per],
                      widest_loss_at_base_lr=float(ct.mean(0)[i0]) if i0 is not None else float("nan"))
    return out


def verdicts(table: dict, p: dict) -> dict:
    """The predictions, each True/False with the numbers it read (a grid step = a factor 2 in lr)."""
    v = {}
    if "mup" in table:
        m = table["mup"]
        v["mup_shift_within_1_step"] = bool(abs(m["shift_robust"]) <= 1.0 and m["shift_status"] == "ok")
        v["mup_loss_falls_with_width"] = bool(np.all(np.diff(m["best_loss_by_width"]) < 0))
    if "sp" in table:
        v["sp_drifts_down_2_steps"] = bool(table["sp"]["shift_robust"] <= -2.0 and table["sp"]["shift_status"] == "ok")
    v["widths_span"] = p["widths"][-1] / p["widths"][0]
    return v


def _plot(table: dict, p: dict, out_dir: Path) -> Path:
    plt = pyplot()
    schemes, widths, x = list(table), p["widths"], np.array(p["log2_lrs"], dtype=float)
    fig, axes = plt.subplots(1, len(schemes) + 1, figsize=(4.6 * (len(schemes) + 1), 3.8))
    cols = width_colors(len(widths))
    finite = [v for t in table.values() for v in t["best_loss_by_width"] if np.isfinite(v)]
    lo = min(finite) if finite else None  # every run diverged: no loss to set the axes by
    for ax, s in zip(axes, schemes):
        for i, r in enumerate(table[s]["per_width"]):
            col = cols[i]
            m = np.array(r["mean_curve"])
            ax.plot(x, np.where(np.isfinite(m), m, np.nan), "o-", ms=3, color=col, label=f"d_model {r['width']}")
            if r["status"] == "ok":
                ax.axvline(r["robust"], color=col, lw=0.8, ls=":")
        t = table[s]
        ax.set_title(f"{s}: optimum shift {t['shift_robust']:+.2f} ± {t['shift_se']:.2f}", fontsize=10)
        ax.set_xlabel("log2 base learning rate")
        if lo is not None:
            ax.set_ylim(lo - 0.05, lo + 1.2)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"val loss (nats/char) after {p['steps'] * p['batch'] * p['context']} tokens")
    legend_outside(axes[0], below=True)
    ax = axes[-1]
    for s in schemes:
        ax.plot(widths, table[s]["best_loss_by_width"], "o-", color=color(s), label=f"{s} (its best lr per width)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("d_model")
    ax.set_title("best val loss vs width", fontsize=10)
    ax.grid(alpha=0.3)
    log_ticks(ax, "x", widths)
    legend_outside(ax, below=True)
    fig.suptitle(f"LM lr transfer, Transformer on tiny Shakespeare: val loss vs lr per d_model ({describe_size(p)}; "
                 "dotted: robust optima)", fontsize=10)
    return save_figure(fig, out_dir / "lm_loss_vs_lr.png")


def _sample(table: dict, p: dict, out_dir: Path) -> dict | None:
    """The widest muP model retrained at its best grid lr (seed 0: the grid's run, deterministic) and
    sampled; stored in the summary folder (`paramlab.kit.summary.stored`), so a second summary reads it."""
    if "mup" not in table or not p.get("sample_chars"):
        return None
    r = table["mup"]["per_width"][-1]
    if not np.isfinite(r["grid"]):
        return None
    cfg = {**p, "scheme": "mup", "width": r["width"], "seed": 0, "log2_lr": r["grid"]}
    return stored(out_dir, "sample", cfg, lambda: _draw_sample(cfg))


def _draw_sample(cfg: dict) -> dict:
    """Train `cfg`'s model as its grid run did and sample `sample_chars` characters after "ROMEO:\\n"."""
    task = lm_task(cfg["task"])
    model = lm_model(cfg, task)
    res = train_lm(model, OnDevice(task, cfg["device"]), lr=2.0 ** cfg["log2_lr"], seed=0, **protocol(cfg))
    text = sample(model.cpu(), task, prompt="ROMEO:\n", n=cfg["sample_chars"], temperature=0.8, seed=0)
    return dict(width=cfg["width"], log2_lr=cfg["log2_lr"], val_loss=res.val_loss, prompt="ROMEO:\n",
                temperature=0.8, text=text)


def summarize(results: list, p: dict, out_dir: Path) -> Summary:
    """The shift table (grid argmin and robust optimum per width, shift base -> widest with its error),
    the TP5-Fig.-1 plot, the verdicts, the SP == muP check at the base width and a text sample."""
    table = shift_table(results, p)
    path = _plot(table, p, Path(out_dir))
    rows = []
    for s, t in table.items():
        cells = [f"{r['grid']:g} / {r['robust']:.2f} ± {r['se']:.2f}"
                 + ("" if r["status"] == "ok" else f" ({r['status']})") for r in t["per_width"]]
        headline = f"{t['shift_robust']:+.2f} ± {t['shift_se']:.2f} ({t['shift_status']})"
        rows.append([s] + cells + [t["shift_grid"], headline, round(t["shift_align"], 2),
                                   round(t["slope_per_doubling"], 2),
                                   ", ".join(f"{v:.3f}" for v in t["best_loss_by_width"])])
    cols = (["scheme"] + [f"w={w}: grid / robust ± se" for w in p["widths"]]
            + ["shift grid", "shift robust ± se, status (headline)", "shift aligned", "steps per doubling",
               "best val loss by width"])
    extra = {"table": table, "verdicts": verdicts(table, p), "params": p}
    if {"sp", "mup"} <= set(p["schemes"]):
        a, b = (curves(results, s, p["widths"][0], p["log2_lrs"]) for s in ("sp", "mup"))
        fin = np.isfinite(a) & np.isfinite(b)
        extra["check_sp_equals_mup_at_base"] = dict(
            max_abs_diff=float(np.max(np.abs(a[fin] - b[fin]))) if fin.any() else None,
            same_divergence=bool(np.array_equal(np.isinf(a), np.isinf(b))))
    smp = _sample(table, p, Path(out_dir))
    if smp:
        extra["sample"] = smp
    notes = (f"tiny Shakespeare (char), depth {p['depth']}, {p['n_heads']} heads, context {p['context']}, batch "
             f"{p['batch']}, {p['steps']} {p.get('optimizer', 'adam')} steps ({p['steps'] * p['batch'] * p['context']} tokens), base width "
             f"{p['base_width']}, {p['seeds']} seed(s); metric: val loss (nats/char) on {p['n_eval']} held-out windows. "
             "Robust optimum = vertex of a parabola in log loss around the seed-mean minimum (± bootstrap over "
             "seeds, or the fit's se with one seed); grid step = factor 2 in lr. Prediction: muP shift <= 1 step, "
             f"SP <= -2 steps. Verdicts: {extra['verdicts']}.")
    if smp:
        notes += (f"\n\nSample (muP, d_model {smp['width']}, log2 lr {smp['log2_lr']:g}, val loss {smp['val_loss']:.3f}, "
                  f"T={smp['temperature']}):\n{smp['prompt']}{smp['text']}\n")
    return Summary("LM LR transfer: best learning rate per width (tiny Shakespeare)", cols, rows,
                   {"lm_loss_vs_lr": path}, extra=extra, notes=notes)


EXPERIMENT = Experiment(NAME, SIZES, run_one, summarize, doc=__doc__, batch=BATCH, checks={"task": check_task, "optimizer": check_optimizer},
                        axes=LR_AXES)
RUNNER = EXPERIMENT.runner


def main(argv=None):
    return command.main(EXPERIMENT, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
