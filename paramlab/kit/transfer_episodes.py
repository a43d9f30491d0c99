"""The transfer experiment on real-data pairs: many few-shot draws of B per trained network.

One run (scheme, width, seed) trains the pair's model on A and, for every shot count k in `shots`,
scores a ridge probe (`measure.probe.linear_probe`, ridge by exact leave-one-out) on every draw of
B, once on the trained and once on the initial features. Per run: the means over draws. The
summary puts 95% t-intervals over seeds on them (every run sees the same draws, so seeds are the
unit; the draws are averaged inside a run) and runs the NNGP / NTK kernel regressors on the same
draws: for an MLP the architecture's kernels, for CBOW those of a 1-hidden-layer linear net on the
normalized bag-of-words vector (TP4 §9: two different words have kernel 0).

The width predictions are read off the scheme's own exponents: a scheme whose feature-update
exponent r (`Scheme.predicted_r`) is 0 learns features (muP, MF), r > 0 is the kernel regime
(NTK, SP with its stable lr), whose gain must fall with width towards 0.

`paramlab run transfer --set task=NAME` takes the pair's options from `PAIR_SIZES`; a `paramlab
sweep` spec with ``runner: transfer`` gets the runner's defaults (the synthetic pair's lr and
optimizer), so give the pair's options there yourself (a token-id task with ``model: mlp`` is refused).
"""

from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import EPISODE_PAIRS, transfer_episodes
from ..measure.fit import mean_ci, slope_per_doubling
from ..measure.kernels import MLPKernel
from ..measure.probe import kernel_ridge_loo, linear_probe
from ..models.activations import GAINS
from ..models.cbow import cbow
from ..models.mlp import mlp
from ..report import color, describe_size, legend_outside, log_ticks, pyplot, save_figure
from ..runners import non_negative
from ..schemes import get_scheme
from ..train import train
from .summary import Summary, by_width, stored


_SCHEMES = ["sp-stable", "ntk", "mf", "mup"]
# lr / optimizer / steps of each pair: chosen once at the base width (where every scheme is the same
# network) by the lowest final test loss on A alone, without looking at B (which would leak the answer).
_MLP = dict(model="mlp", depth=2, activation="relu", base_width=64, optimizer="sgd", lr=0.1, batch_size=128,
            steps=1000, shots=[1, 5], n_episodes=50, ft_steps=0, ft_episodes=0, max_train=0)
_CBOW = dict(model="cbow", vocab=2000, window=2, base_width=64, optimizer="adam", lr=3e-3, batch_size=256,
             steps=2000, shots=[4], n_episodes=50, ft_steps=0, ft_episodes=0, max_train=0)
# tiny: the tests (seconds); quick: a few minutes on 2 cores; default: the numbers in docs/experiments.md
_MLP_TINY = dict(schemes=["ntk", "mup"], widths=[32, 64], base_width=32, seeds=2, steps=30, n_episodes=3,
                 ft_steps=5, ft_episodes=1)
_MLP_QUICK = dict(schemes=_SCHEMES, widths=[64, 256, 1024], seeds=3, n_episodes=20)
_CBOW_TINY = dict(schemes=["ntk", "mup"], widths=[16, 32], base_width=16, seeds=2, steps=10, n_episodes=3,
                  max_train=2000, ft_steps=5, ft_episodes=1)
# text quick: ntk and mup only, half the steps (a CBOW step at width 512 costs ~20 MLP steps)
_CBOW_QUICK = dict(schemes=["ntk", "mup"], widths=[64, 256, 512], seeds=3, n_episodes=20, steps=1000)


def _sizes(base: dict, tiny: dict, quick: dict, default: dict) -> dict:
    return {"tiny": {**base, **tiny}, "quick": {**base, **quick}, "default": {**base, **default}}


PAIR_SIZES = {
    "mnist1d_disjoint": _sizes(_MLP, _MLP_TINY, _MLP_QUICK,
                               dict(schemes=_SCHEMES, widths=[64, 128, 256, 512, 1024, 2048], seeds=5)),
    "mnist1d_compose": _sizes(_MLP, _MLP_TINY, _MLP_QUICK,
                              dict(schemes=_SCHEMES, widths=[64, 128, 256, 512, 1024], seeds=5)),
    "digits_disjoint": _sizes({**_MLP, "lr": 1.0, "steps": 500}, _MLP_TINY, _MLP_QUICK,
                              dict(schemes=_SCHEMES, widths=[64, 128, 256, 512, 1024], seeds=5)),
    "shakespeare_w2v": _sizes(_CBOW, _CBOW_TINY, _CBOW_QUICK,
                              dict(schemes=_SCHEMES, widths=[64, 128, 256, 512, 1024], seeds=3)),
    "shakespeare_plays": _sizes({**_CBOW, "shots": [5]}, _CBOW_TINY, _CBOW_QUICK,
                                dict(schemes=_SCHEMES, widths=[64, 128, 256, 512, 1024], seeds=3)),
}
MODELS = ("mlp", "cbow")
EVAL_ROWS = 8192  # rows of A's train / test split for its reported loss (a fixed subset, `train.eval_subset`)
_STYLE = {"mf": dict(ls="--", marker="s", mfc="none")}  # mf and mup are one symmetry class: keep both visible


def _check_shots(v) -> str | None:
    ok = isinstance(v, list) and v and all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in v)
    return None if ok else "must be a non-empty list of positive ints (shots per class)"


def _check_model(v) -> str | None:
    return None if v in MODELS else f"is not a transfer model: {', '.join(MODELS)}"


CHECKS = {"shots": _check_shots, "model": _check_model, "n_episodes": lambda v: None if v >= 1 else "must be >= 1",
          "ft_episodes": non_negative, "max_train": non_negative, "vocab": lambda v: None if v >= 2 else "must be >= 2",
          "window": lambda v: None if v >= 1 else "must be >= 1"}


def pair_key(task: str) -> str:
    return task.strip().lower().replace("-", "_")


def is_episode_pair(task) -> bool:
    return isinstance(task, str) and pair_key(task) in EPISODE_PAIRS


# -- data and model ------------------------------------------------------------------------------


def episode_tasks(cfg: dict):
    """(A, {"k<k>": B Episodes}) of cfg's pair: one B per shot count, all drawn with seed data_seed."""
    name = pair_key(cfg["task"])
    params = inspect.signature(EPISODE_PAIRS[name]).parameters
    extra = {k: cfg[k] for k in ("vocab", "window", "max_train") if k in params and k in cfg}
    if cfg.get("max_train") and "max_train" not in params:
        raise ValueError(f"max_train applies to the text pairs only, not {name!r}")
    A, Bs = None, {}
    for k in cfg["shots"]:
        A, Bs[f"k{k}"] = transfer_episodes(name, k=k, n_episodes=cfg["n_episodes"], seed=cfg["data_seed"], **extra)
    return A, Bs


def build_model(cfg: dict, A) -> nn.Module:
    """The pair's model under cfg's scheme: CBOW for token-id tasks, the MLP otherwise."""
    tokens = A.meta.get("input") == "token_ids"
    if tokens != (cfg["model"] == "cbow"):
        raise ValueError(f"task {cfg['task']!r} has {'token-id' if tokens else 'real-valued'} inputs: use "
                         f"model={'cbow' if tokens else 'mlp'} (got model={cfg['model']!r})")
    if tokens:
        if cfg["vocab"] != A.meta["vocab_size"]:
            raise ValueError(f"vocab={cfg['vocab']} but the task's vocabulary has {A.meta['vocab_size']} words")
        return cbow(cfg["vocab"], cfg["width"], scheme=cfg["scheme"], base_width=cfg["base_width"], seed=cfg["seed"])
    return mlp(A.d_in, A.d_out, cfg["width"], depth=cfg["depth"], scheme=cfg["scheme"], base_width=cfg["base_width"],
               activation=cfg["activation"], seed=cfg["seed"])


def fresh_readout(model: nn.Module, d_out: int) -> nn.Module:
    """Zero `model.readout` in place; if B needs another output size, replace its tensors by zeros of
    shape (d_out, width) / (d_out,) under the same names (they keep the output role's plan entry:
    multiplier and lr scaling do not depend on the number of outputs)."""
    ro = model.readout
    with torch.no_grad():
        if ro.weight.shape[0] == d_out:
            ro.weight.zero_()
            if ro.bias is not None:
                ro.bias.zero_()
            return model
    kw = dict(dtype=ro.weight.dtype, device=ro.weight.device)
    ro.weight = nn.Parameter(torch.zeros(d_out, ro.weight.shape[1], **kw))
    if ro.bias is not None:
        ro.bias = nn.Parameter(torch.zeros(d_out, **kw))
    ro.out_features = d_out
    from ..parameterize import replan_resized

    return replan_resized(model)  # the plan takes the new number of outputs (not a width dim)


@torch.no_grad()
def pool_features(model: nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """model.features of the whole pool (P, width), in batches."""
    return torch.cat([model.features(x[i:i + batch]) for i in range(0, len(x), batch)])


def probe_episodes(F: torch.Tensor, B) -> np.ndarray:
    """(n_episodes,) ridge-probe accuracy on every draw of B, features F (P, p) of B's pool."""
    F = F.double()
    accs = []
    for e, (tr, te) in enumerate(B.episodes):
        y = B.labels(e)
        pred, _ = linear_probe(F[tr], nn.functional.one_hot(y[tr], B.n_classes).double(), F[te])
        accs.append(float((pred.argmax(1) == y[te]).double().mean()))
    return np.array(accs)


def run_one(cfg: dict, log, finetune) -> dict:
    """One grid point of an episode pair (module docstring); finetune(model, B task, cfg) -> score."""
    A, Bs = episode_tasks(cfg)
    model = build_model(cfg, A)
    init = copy.deepcopy(model)
    # A's loss is reported, not used by the probes on B: evaluate it at start and end on at most EVAL_ROWS rows of
    # each split (the text pair's A has 154k windows x 2000 words of logits; the image pairs are smaller: all rows)
    res = train(model, A, optimizer=cfg["optimizer"], lr=cfg["lr"], steps=cfg["steps"], batch_size=cfg["batch_size"],
                seed=cfg["seed"], log=log, eval_every=max(1, cfg["steps"]), eval_rows=EVAL_ROWS)
    out = {"A/test_loss": res.final.get("test/loss", float("nan")), "A/test_acc": res.final.get("test/acc", float("nan")),
           "diverged": int(res.diverged)}
    if res.diverged:
        return out
    for v, B in Bs.items():
        F0, F1 = pool_features(init, B.x), pool_features(model, B.x)
        p0, p1 = probe_episodes(F0, B), probe_episodes(F1, B)
        out |= {f"B/{v}/probe_init": float(p0.mean()), f"B/{v}/probe": float(p1.mean()),
                f"B/{v}/probe_gain": float((p1 - p0).mean()), f"B/{v}/probe_episodes": p1.tolist(),
                f"B/{v}/probe_init_episodes": p0.tolist(),
                f"B/{v}/feature_move": float((F1 - F0).norm() / F0.norm())}  # relative movement of the pool's features
        n_ft = min(cfg["ft_episodes"], len(B))
        if n_ft and cfg["ft_steps"]:
            ft = np.array([[finetune(net, B.task(e), cfg) for net in (init, model)] for e in range(n_ft)])
            out |= {f"B/{v}/finetune_init": float(ft[:, 0].mean()), f"B/{v}/finetune": float(ft[:, 1].mean()),
                    f"B/{v}/finetune_gain": float((ft[:, 1] - ft[:, 0]).mean())}
    return out


# -- kernels and summary ---------------------------------------------------------------------------


def bag_of_words(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """(P, L) word ids (-1 = none) -> (P, vocab) float64 mean of the words' one-hots (CBOW's input)."""
    ids = ids.long()
    x = torch.zeros(len(ids), vocab, dtype=torch.float64)
    x.scatter_add_(1, ids.clamp_min(0), (ids >= 0).double())
    return x / x.sum(1, keepdim=True).clamp_min(1.0)


def kernel_baselines(p: dict) -> dict:
    """variant -> {"nngp": (n_episodes,), "ntk": (n_episodes,)} accuracy of kernel ridge (same LOO
    ridge as the probe) on every draw of B: the infinite-width networks' predictors on B."""
    _, Bs = episode_tasks(p)
    if p["model"] == "cbow":  # a 1-hidden-layer linear net on bag-of-words inputs (models.cbow)
        kern, prep = MLPKernel(depth=1, activation="linear", W_std=1.0), lambda x: bag_of_words(x, p["vocab"])
    elif p["activation"] in ("relu", "erf", "linear"):
        kern = MLPKernel(depth=p["depth"], activation=p["activation"], W_std=GAINS[p["activation"]])
        prep = lambda x: x.double().flatten(1)  # noqa: E731
    else:
        return {}
    out = {}
    for v, B in Bs.items():
        x = prep(B.x)
        out[v] = {}
        for name in ("nngp", "ntk"):
            K = getattr(kern, name)(x)  # (P, P)
            accs = []
            for e, (tr, te) in enumerate(B.episodes):
                y = B.labels(e)
                yoh = nn.functional.one_hot(y[tr], B.n_classes).double()
                pred, _ = kernel_ridge_loo(K[tr][:, tr], yoh, K[te][:, tr])
                accs.append(float((pred.argmax(1) == y[te]).double().mean()))
            out[v][name] = accs
    return out


def fmt_ci(m, h) -> str:
    """'mean ± half-width' with 3 decimals (the mean alone where the interval is undefined)."""
    return f"{m:.3f}" if not np.isfinite(h) else f"{m:.3f} ± {h:.3f}"


def kernel_lines(ax, ref: dict) -> None:
    """A dashed horizontal line per kernel baseline {name: accuracy}, in the palette's kernel colours."""
    for name, val in ref.items():
        ax.axhline(val, ls="--", lw=1, color=color(f"{name} kernel"), label=f"{name.upper()} kernel")


def width_axes(axes, labels, title_prefix: str) -> None:
    """Log2 width x-axis, y label, title '<prefix>: <title>' and legend on each of `axes`; labels: (ylabel, title)."""
    for ax, (ylabel, title) in zip(axes, labels):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title_prefix}: {title}", fontsize=9)
        log_ticks(ax, "x", sorted({float(x) for line in ax.get_lines() for x in line.get_xdata() if x > 1}))
        legend_outside(ax, below=True, fontsize=7)  # below the panel: never over the data


def paired_gaps(per_scheme: dict, values: dict) -> dict:
    """{'<top> - <k>': [mean, 95% half-width]} at the largest width, paired by seed (one seed = the same initial
    network in every scheme): the feature-learning scheme (mup if run) minus each kernel-regime scheme; {} where
    a regime did not run. values: scheme -> (n_widths, n_seeds)."""
    fl = [s for s in per_scheme if per_scheme[s]["regime"] == "feature learning"]
    kr = [s for s in per_scheme if per_scheme[s]["regime"] == "kernel"]
    if not (fl and kr):
        return {}
    top = "mup" if "mup" in fl else fl[0]
    return {f"{top} - {k}": [float(x[0]) for x in mean_ci(values[top][-1:] - values[k][-1:])] for k in kr}


def fit_indices(widths, base_width: int) -> list[int]:
    """The widths a gain's slope is fitted on: those above the base width, where the schemes differ (at
    the base width every scheme is the same network); all of them if fewer than 2 are above."""
    fit = [i for i, w in enumerate(widths) if w > base_width]
    return fit if len(fit) >= 2 else list(range(len(widths)))


def summary_frame(p: dict, out_dir: Path, baselines, panels: int, fig_width: float):
    """What an episode experiment's summary starts from: its kernel baselines (`baselines(p)`, a stored
    record), one variant 'k<shots>' per shot count, the widths the slopes are fitted on (`fit_indices`),
    and a figure with a row per variant and `panels` columns. Returns (kern, variants, fit, fig, axes)."""
    kern = stored(out_dir, "kernel_baselines", p, lambda: baselines(p))
    variants = [f"k{k}" for k in p["shots"]]
    fig, axes = pyplot().subplots(len(variants), panels, figsize=(fig_width, 3.8 * len(variants)), squeeze=False)
    return kern, variants, fit_indices(p["widths"], p["base_width"]), fig, axes


def summarize(results: list, p: dict, out_dir: Path) -> Summary:
    """Per shot count: gain vs width with intervals per scheme, probe vs the kernels, verdicts, figure."""
    widths, schemes = p["widths"], p["schemes"]
    kern, variants, fit, fig, axes = summary_frame(p, out_dir, kernel_baselines, 2, 11)
    rows, verdicts, gap_notes = [], {}, []
    for row, v in enumerate(variants):
        gains, probe, at_init = (by_width(results, schemes, widths, f"B/{v}/{k}")
                                 for k in ("probe_gain", "probe", "probe_init"))
        ref = {k: float(np.mean(a)) for k, a in kern.get(v, {}).items()}
        best_kernel = max(ref.values()) if ref else float("nan")
        init_m, init_h = mean_ci(np.nanmean(np.stack(list(at_init.values())), axis=0))
        vv = {"kernels": ref, "probe_at_init": [float(x) for x in init_m], "schemes": {}}
        for s in schemes:
            gm, gh = mean_ci(gains[s])
            pm, ph = mean_ci(probe[s])
            over_kernel = mean_ci(probe[s][-1:] - best_kernel)
            slope = slope_per_doubling(np.array(widths)[fit], gm[fit])
            regime = "feature learning" if get_scheme(s).predicted_r() == 0 else "kernel"
            vv["schemes"][s] = {"regime": regime, "gain": gm.tolist(), "gain_ci95": gh.tolist(),
                                "gain_per_doubling": slope, "probe": pm.tolist(), "probe_ci95": ph.tolist(),
                                "gain_excludes_zero_at_largest": bool(gm[-1] - gh[-1] > 0),
                                "probe_minus_best_kernel_at_largest": [float(over_kernel[0][0]),
                                                                       float(over_kernel[1][0])]}
            rows.append([v, s] + [fmt_ci(m, h) for m, h in zip(gm, gh)]
                        + [round(slope, 4), fmt_ci(pm[-1], ph[-1]), fmt_ci(over_kernel[0][0], over_kernel[1][0])])
            ax = axes[row][0]
            style = {"marker": "o", "capsize": 3, "color": color(s), **_STYLE.get(s, {})}
            ax.errorbar(widths, gm, yerr=np.nan_to_num(gh), label=f"{s} ({regime})", **style)
            axes[row][1].errorbar(widths, pm, yerr=np.nan_to_num(ph), label=s, **style)
        rows.append([v, "probe at init"] + [fmt_ci(m, h) for m, h in zip(init_m, init_h)] + ["", "", ""])
        axes[row][1].plot(widths, init_m, "k:", marker=".", label="initial features")
        kernel_lines(axes[row][1], ref)
        width_axes(axes[row], ((f"probe gain (trained - init), {v}", "transfer gain, 95% CI over seeds"),
                               (f"probe accuracy on B, {v}", "probe vs kernels on the same draws")), p["task"])
        axes[row][0].axhline(0, color="k", lw=0.8)
        vv["prediction"] = prediction(vv["schemes"], fit)
        gaps = paired_gaps(vv["schemes"], gains)
        if gaps:
            vv["gap_at_largest"] = gaps
            gap_notes.append(f"{v}: " + ", ".join(f"{k} {fmt_ci(*g)}" for k, g in gaps.items()))
        verdicts[v] = vv
    fig.suptitle(f"transfer on {p['task']} ({p['model']}): probe gain and accuracy on few-shot B vs width "
                 f"({describe_size(p)}; {p['n_episodes']} draws)", fontsize=10)
    path = save_figure(fig, out_dir / "transfer_gain_vs_width.png")
    cols = (["B", "scheme"] + [f"gain w={w}" for w in widths]
            + ["gain per 2x width", f"probe at w={widths[-1]}", f"probe - best kernel at w={widths[-1]}"])
    kern_note = "; ".join(f"{v}: " + ", ".join(f"{k.upper()} {np.mean(a):.3f}" for k, a in kv.items())
                          for v, kv in kern.items())
    notes = (f"task {p['task']} ({p['model']}): pretrain on A for {p['steps']} {p['optimizer']} steps (lr {p['lr']} at "
             f"base width {p['base_width']}), then a ridge probe on {p['n_episodes']} few-shot draws of B per shot count "
             f"(k{{shots}} = shots per class); mean ± 95% t-interval over {p['seeds']} seeds. Kernel regression on the "
             f"same draws: {kern_note or 'n/a'}."
             + (f" Gain gap at w={widths[-1]}, paired by seed: {'; '.join(gap_notes)}." if gap_notes else ""))
    return Summary(f"Transfer on {p['task']}: probe gain on few-shot draws of B vs width", cols, rows,
                   {"transfer": path}, extra={"verdicts": verdicts, "kernel_baselines": kern, "params": p}, notes=notes)


def prediction(per_scheme: dict, fit: list) -> dict:
    """TP4's predictions checked on the numbers (None where no scheme of that regime ran).

    feature_learning_gain_positive: every r = 0 scheme's interval at the largest width excludes 0.
    feature_learning_not_shrinking: its gain at the largest width is within the two intervals of its
        gain at the first width above the base width (or above it).
    kernel_gain_falls: every r > 0 scheme's gain falls with width (negative slope per doubling above
        the base width) and ends below every feature-learning scheme's.
    beats_kernels: a feature-learning scheme's probe beats the better kernel regressor at the largest
        width, interval excluding 0.
    """
    fl = {s: v for s, v in per_scheme.items() if v["regime"] == "feature learning"}
    kr = {s: v for s, v in per_scheme.items() if v["regime"] == "kernel"}
    i0 = fit[0]

    def not_shrinking(v):
        h0, h1 = (np.nan_to_num(v["gain_ci95"][i]) for i in (i0, -1))
        return bool(v["gain"][-1] + h1 >= v["gain"][i0] - h0)

    fl_min = min((v["gain"][-1] for v in fl.values()), default=math.nan)
    return {
        "feature_learning_gain_positive": all(v["gain_excludes_zero_at_largest"] for v in fl.values()) if fl else None,
        "feature_learning_not_shrinking": all(not_shrinking(v) for v in fl.values()) if fl else None,
        "kernel_gain_falls": (all(v["gain_per_doubling"] < 0 and v["gain"][-1] < fl_min for v in kr.values())
                              if kr and fl else None),
        "beats_kernels": (any(m - h > 0 for m, h in (v["probe_minus_best_kernel_at_largest"] for v in fl.values()))
                          if fl else None),
    }
