"""maml: does meta-learning (first-order MAML) learn features that help few-shot learning, at every width?

TP4's protocol (arXiv 2011.14522, §9: first-order MAML on Omniglot, 1-shot 5-way: muP 66.4% vs
NTK 47.8% and NNGP 47.6%) at CPU size, on mnist1d. An MLP (depth 2, ReLU, `n_way` outputs) of each
scheme and width is meta-trained by first-order MAML (`paramlab.engine.maml`) on N-way K-shot episodes of
classes 0-4 and meta-tested on episodes of classes 5-9, the disjoint split of
`paramlab.data.image_pairs.mnist1d_disjoint` (meta-test draws = that pair's B draws, so the kernel
baselines and the transfer pair see the same shots).

    episode        N classes (a random subset when n_way < 5), labels 0..N-1 in a random order per
                   episode; K support shots per class; query: `n_query` more per class in
                   meta-training, B's ~500 held-out test signals of those classes in meta-test.
    inner loop     `inner_steps` SGD steps on the support's cross-entropy, each tensor with the step
                   size the scheme gives it (inner_lr * m^-c_sgd, `meta.inner_lrs`), functional.
    outer step     the query gradient at the adapted parameters (first order), averaged over
                   `meta_batch` episodes, through `paramlab.optim.optimizer(model, optimizer, lr)`.
    meta-test      adapt from the meta-trained parameters on each draw's support; accuracy on its
                   query. The same from the *initial* parameters: gain = acc(meta-trained) - acc(init).
    baselines      NNGP and NTK kernel regression (`measure.kernels.MLPKernel`, ridge by exact LOO,
                   as the transfer pairs) on the same supports and queries.
    meta-val       the query loss after adaptation on episodes of classes 0-4 drawn from their held-out
                   signals: what the learning rates were chosen by (never the meta-test classes).

Prediction (TP4 and the seed): muP / MF (feature-update exponent r = 0) meta-trained accuracy beats
the kernels and the gain does not shrink with width; NTK and SP-with-stable-lr (r > 0) gain -> 0 with
width, their accuracy -> the accuracy from init (a kernel method). The verdicts are those of the
transfer pairs (`transfer_episodes.prediction`), with accuracy in place of the probe.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .. import live
from ..data.episodes import k_shot_episodes
from ..data.image_pairs import mnist1d_disjoint
from ..engine.maml import adapt, inner_lrs, meta_params
from ..engine.maml import meta_train as fomaml_train
from ..measure.fit import mean_ci, slope_per_doubling
from ..measure.kernels import MLPKernel
from ..measure.probe import kernel_ridge_loo
from ..models.activations import GAINS
from ..models.mlp import mlp
from ..report import color, describe_size, save_figure
from ..runners import positive
from ..schemes import get_scheme
from ..kit import command
from ..kit.experiment import Experiment
from ..kit.summary import Summary, by_width
from ..kit.transfer_episodes import CHECKS as EPISODE_CHECKS
from ..kit.transfer_episodes import fmt_ci, kernel_lines, paired_gaps, prediction, summary_frame, width_axes


NAME = "maml"
N_CLASSES = 5  # mnist1d_disjoint: classes 0-4 meta-train, 5-9 meta-test
_SCHEMES = ["sp-stable", "ntk", "mf", "mup"]
# inner_lr and lr: chosen once at the base width 64 (every scheme is the same network there) by the lowest
# meta-validation query loss (classes 0-4, held-out signals) over inner_lr x lr in {0.1, 0.3, 1} x {0.1, 0.3, 1}
# (docs/experiments.md, "Few-shot learning by first-order MAML"); the meta-test classes were never looked at for it.
_BASE = dict(depth=2, activation="relu", base_width=64, n_way=5, shots=[1, 5], n_query=15, inner_steps=5,
             inner_lr=0.1, optimizer="sgd", lr=0.3, meta_batch=4, meta_steps=1000, n_episodes=50,
             n_val_episodes=50, data_seed=0, dtype="float32")
SIZES = {
    "tiny": {**_BASE, "schemes": ["ntk", "mup"], "widths": [32, 64], "base_width": 32, "seeds": 2, "meta_steps": 6,
             "meta_batch": 2, "n_episodes": 3, "n_val_episodes": 3, "inner_steps": 2},
    "quick": {**_BASE, "schemes": ["ntk", "mup"], "widths": [64, 256, 1024], "seeds": 3, "meta_steps": 500,
              "n_episodes": 20, "n_val_episodes": 20},
    "default": {**_BASE, "schemes": _SCHEMES, "widths": [64, 128, 256, 512, 1024], "seeds": 3},
}
_STYLE = {"mf": dict(ls="--", marker="s", mfc="none")}  # mf and mup are one symmetry class: keep both visible


def _check_n_way(v) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= N_CLASSES:
        return (f"must be an int in 2..{N_CLASSES}: mnist1d_disjoint has {N_CLASSES} meta-training classes (0-4) "
                f"and {N_CLASSES} meta-test classes (5-9); pass n_way <= {N_CLASSES}")
    return None


def _at_least_one(v) -> str | None:
    return None if v >= 1 else "must be >= 1"


CHECKS = {"shots": EPISODE_CHECKS["shots"], "n_way": _check_n_way, "n_query": _at_least_one,
          "inner_steps": _at_least_one, "inner_lr": positive, "meta_batch": _at_least_one,
          "meta_steps": lambda v: None if v >= 0 else "must be >= 0", "n_episodes": _at_least_one,
          "n_val_episodes": _at_least_one}


# -- episodes --------------------------------------------------------------------------------------


class Episode:
    """One N-way episode as index sets into a pool: support (N*K,), query, and `classes` (N,), the
    pool's class of label 0, 1, ..., N-1 (a random order per episode)."""

    def __init__(self, support: np.ndarray, query: np.ndarray, classes: np.ndarray):
        self.support, self.query, self.classes = support, query, classes

    def labels(self, y_pool: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(len(idx),) labels 0..N-1 of pool items idx (their class's position in `classes`)."""
        lut = np.full(int(y_pool.max()) + 1, -1, dtype=np.int64)
        lut[self.classes] = np.arange(len(self.classes))
        out = lut[y_pool[idx]]
        if (out < 0).any():
            raise ValueError(f"items of classes {sorted(set(y_pool[idx][out < 0].tolist()))} are not in this episode's "
                             f"classes {self.classes.tolist()}: index the pool the episode was drawn from")
        return out


def _check_way(n_way: int, classes) -> None:
    if not 1 <= n_way <= len(classes):
        raise ValueError(f"n_way={n_way}, but only {len(classes)} classes are available ({list(classes)}): "
                         f"pass n_way <= {len(classes)}")


def _choose(draws: list, y_pool: np.ndarray, classes: np.ndarray, n_way: int, seed: int, k: int | None) -> list:
    """Episodes from k_shot draws over all `classes`: per draw e (generator [seed, e, 1]) an n_way subset in a
    random label order; support = its items of the draw (the first k per class when k is given; the
    rest are its query), query = the draw's test items of those classes otherwise."""
    out = []
    for e, (tr, te) in enumerate(draws):
        g = np.random.default_rng([seed, e, 1])
        chosen = g.permutation(classes)[:n_way]  # label j <-> class chosen[j]
        if k is None:
            s = tr[np.isin(y_pool[tr], chosen)]
            q = te[np.isin(y_pool[te], chosen)]
        else:
            per = [tr[y_pool[tr] == c] for c in chosen]
            s = np.concatenate([p[:k] for p in per])
            q = np.concatenate([p[k:] for p in per])
        out.append(Episode(s, q, chosen))
    return out


def train_episodes(y_pool: np.ndarray, reserved: np.ndarray, *, k: int, n_query: int, n_way: int, n: int,
                   seed: int) -> list:
    """n meta-training episodes: k + n_query shots per class drawn by `k_shot_episodes` from the pool minus
    `reserved` (the classes are those of `reserved`), split per class into k support and n_query query."""
    if k < 1 or n_query < 1:
        raise ValueError(f"k (support shots per class) and n_query (query items per class) must be >= 1, got k={k}, "
                         f"n_query={n_query}")
    classes = np.unique(y_pool[reserved])
    _check_way(n_way, classes)
    draws = k_shot_episodes(y_pool, reserved, k + n_query, n, seed)
    return _choose(draws, y_pool, classes, n_way, seed, k)


def test_episodes(B, n_way: int, seed: int) -> list:
    """Meta-test episodes from an `Episodes` pool B: each of B's draws, restricted to n_way of its classes."""
    y = B.y.numpy()
    classes = np.unique(y[B.episodes[0][1]])
    _check_way(n_way, classes)
    return _choose(B.episodes, y, classes, n_way, seed, None)


@functools.lru_cache(maxsize=4)
def _data(k: int, n_episodes: int, data_seed: int):
    """(A, B) of mnist1d_disjoint with k shots and n_episodes draws of B (the transfer pair's draws)."""
    return mnist1d_disjoint(k=k, n_episodes=n_episodes, seed=data_seed)


def _pools(cfg: dict, k: int):
    """x / y pools and the three episode lists (meta-train, meta-val, meta-test) for shot count k."""
    A, B = _data(k, cfg["n_episodes"], cfg["data_seed"])
    xa = torch.cat([A.x_train, A.x_test])  # (n_a, 40): A's train signals, then its held-out ones
    ya = torch.cat([A.y_train, A.y_test]).numpy()
    n_tr = len(A.x_train)
    tr_idx, te_idx = np.arange(n_tr), np.arange(n_tr, len(xa))
    n_train = cfg["meta_steps"] * cfg["meta_batch"]
    kw = dict(k=k, n_query=cfg["n_query"], n_way=cfg["n_way"])
    meta_tr = train_episodes(ya, te_idx, n=max(n_train, 1), seed=cfg["data_seed"], **kw)[:n_train]
    meta_val = train_episodes(ya, tr_idx, n=cfg["n_val_episodes"], seed=cfg["data_seed"] + 1, **kw)
    meta_te = test_episodes(B, cfg["n_way"], cfg["data_seed"])
    return (xa, ya), (B.x, B.y.numpy()), meta_tr, meta_val, meta_te


def _batch(x, y, ep: Episode, dtype):
    ys = torch.from_numpy(ep.labels(y, ep.support))
    yq = torch.from_numpy(ep.labels(y, ep.query))
    return x[ep.support].to(dtype), ys, x[ep.query].to(dtype), yq


# -- meta-training and meta-test --------------------------------------------------------------------


def meta_train(model: nn.Module, x, y, episodes: list, cfg: dict, log=None) -> list:
    """First-order MAML on `episodes`, `meta_batch` per outer step (`paramlab.engine.maml.meta_train`);
    returns the outer steps' query losses."""
    dtype = next(model.parameters()).dtype
    return fomaml_train(model, episodes, inner_lrs(model, cfg["inner_lr"]), cfg["inner_steps"],
                        meta_batch=cfg["meta_batch"], prepare=lambda ep: _batch(x, y, ep, dtype),
                        optimizer=cfg["optimizer"], lr=cfg["lr"], log=log)


@torch.no_grad()
def _predict(model, theta, x):
    return functional_call(model, theta, (x,))


def meta_test(model: nn.Module, x, y, episodes: list, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, query loss) per episode after `inner_steps` inner SGD steps on its support, from the model's
    current parameters (left unchanged)."""
    lrs = inner_lrs(model, cfg["inner_lr"])
    theta0 = meta_params(model)
    dtype = next(model.parameters()).dtype
    acc, loss = [], []
    for ep in episodes:
        xs, ys, xq, yq = _batch(x, y, ep, dtype)
        out = _predict(model, adapt(model, theta0, lrs, xs, ys, cfg["inner_steps"]), xq)
        acc.append(float((out.argmax(1) == yq).double().mean()))
        loss.append(float(nn.functional.cross_entropy(out, yq)))
    return np.array(acc), np.array(loss)


def _model(cfg: dict) -> nn.Module:
    return mlp(40, cfg["n_way"], cfg["width"], depth=cfg["depth"], scheme=cfg["scheme"], base_width=cfg["base_width"],
               activation=cfg["activation"], seed=cfg["seed"], dtype=getattr(torch, cfg["dtype"]))


def run_one(cfg: dict, log) -> dict:
    """One (scheme, width, seed): per shot count k, meta-train a fresh network and meta-test it and its init."""
    out: dict = {"diverged": 0}
    done = 0  # outer steps of the earlier shot counts: the live (wandb) step keeps growing across them
    send = live.sink()  # the engine's points are unprefixed: this run sends them per shot count (klog)
    for k in cfg["shots"]:
        (xa, ya), (xb, yb), meta_tr, meta_val, meta_te = _pools(cfg, k)
        model = _model(cfg)
        init = copy.deepcopy(model)

        def klog(m, s, k=k, base=done):
            point = {f"k{k}/{n}": v for n, v in m.items()}
            if send is not None:
                send(point, base + s)
            if log is not None:
                log(point, s)

        with live.sending_to([]):
            losses = meta_train(model, xa, ya, meta_tr, cfg, klog)
        done += len(losses)
        if losses and not np.isfinite(losses[-1]):
            return {**out, "diverged": 1}
        a0, _ = meta_test(init, xb, yb, meta_te, cfg)
        a1, _ = meta_test(model, xb, yb, meta_te, cfg)
        v0 = meta_test(init, xa, ya, meta_val, cfg)
        v1 = meta_test(model, xa, ya, meta_val, cfg)
        tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
        with torch.no_grad():  # relative movement of the last hidden features on the meta-test pool
            dtype = next(model.parameters()).dtype
            F0, F1 = init.features(xb.to(dtype)), model.features(xb.to(dtype))
        out |= {f"k{k}/acc": float(a1.mean()), f"k{k}/acc_init": float(a0.mean()), f"k{k}/gain": float((a1 - a0).mean()),
                f"k{k}/acc_episodes": a1.tolist(), f"k{k}/acc_init_episodes": a0.tolist(),
                f"k{k}/val_loss": float(v1[1].mean()), f"k{k}/val_loss_init": float(v0[1].mean()),
                f"k{k}/val_acc": float(v1[0].mean()), f"k{k}/train_query_loss": float(np.mean(tail)),
                f"k{k}/feature_move": float((F1 - F0).norm() / F0.norm())}
    return out


# -- kernels and summary ---------------------------------------------------------------------------


def _kernel_accs(grams: dict, y: np.ndarray, episodes: list) -> dict:
    """name -> [accuracy per episode] of kernel ridge (LOO ridge, one-hot targets) with each (P, P) gram."""
    out = {}
    for name, K in grams.items():
        accs = []
        for ep in episodes:
            s, q = torch.from_numpy(ep.support), torch.from_numpy(ep.query)
            ys, yq = (torch.from_numpy(ep.labels(y, i)) for i in (ep.support, ep.query))
            pred, _ = kernel_ridge_loo(K[s][:, s], nn.functional.one_hot(ys, len(ep.classes)).double(), K[q][:, s])
            accs.append(float((pred.argmax(1) == yq).double().mean()))
        out[name] = accs
    return out


def kernel_baselines(p: dict) -> dict:
    """"k<k>" -> {"nngp": [acc per draw], "ntk": [...]}: kernel ridge of the architecture's infinite-width
    kernels on the meta-test supports, scored on their queries; "val/k<k>": the same on the meta-val episodes
    (classes 0-4, held-out signals)."""
    if p["activation"] not in ("relu", "erf", "linear"):
        return {}
    kern = MLPKernel(depth=p["depth"], activation=p["activation"], W_std=GAINS[p["activation"]])
    out, grams_b, grams_a = {}, {}, {}
    for k in p["shots"]:
        (xa, ya), (xb, yb), _, meta_val, meta_te = _pools({**p, "meta_steps": 0}, k)
        if not grams_b:  # (P, P) over B's pool and over A's pool
            grams_b = {name: getattr(kern, name)(xb.double()) for name in ("nngp", "ntk")}
            grams_a = {name: getattr(kern, name)(xa.double()) for name in ("nngp", "ntk")}
        out[f"k{k}"] = _kernel_accs(grams_b, yb, meta_te)
        out[f"val/k{k}"] = _kernel_accs(grams_a, ya, meta_val)
    return out


def summarize(results: list, p: dict, out_dir: Path) -> Summary:
    """Per shot count: meta-test accuracy and gain vs width per scheme (95% t-intervals over seeds), the
    accuracy from init and the kernels on the same draws, TP4's verdicts, and the figure."""
    widths, schemes = p["widths"], p["schemes"]
    kern, variants, fit, fig, axes = summary_frame(p, out_dir, kernel_baselines, 3, 16)
    rows, verdicts, gap_notes = [], {}, []
    for row, v in enumerate(variants):
        gains, acc, at_init, val, val_acc = (by_width(results, schemes, widths, f"{v}/{key}")
                                             for key in ("gain", "acc", "acc_init", "val_loss", "val_acc"))
        ref = {name: float(np.mean(a)) for name, a in kern.get(v, {}).items()}
        ref_val = {name: float(np.mean(a)) for name, a in kern.get(f"val/{v}", {}).items()}
        best_kernel = max(ref.values()) if ref else float("nan")
        vv = {"kernels": ref, "meta_val_kernels": ref_val, "schemes": {}}
        for s in schemes:
            gm, gh = mean_ci(gains[s])
            am, ah = mean_ci(acc[s])
            im, ih = mean_ci(at_init[s])
            vm, vh = mean_ci(val_acc[s])
            over = mean_ci(acc[s][-1:] - best_kernel)
            slope = slope_per_doubling(np.array(widths)[fit], gm[fit])
            regime = "feature learning" if get_scheme(s).predicted_r() == 0 else "kernel"
            vv["schemes"][s] = {"regime": regime, "gain": gm.tolist(), "gain_ci95": gh.tolist(), "acc": am.tolist(),
                                "acc_ci95": ah.tolist(), "acc_init": im.tolist(), "acc_init_ci95": ih.tolist(),
                                "gain_per_doubling": slope,
                                "meta_val_loss": np.nanmean(val[s], axis=1).tolist(), "meta_val_acc": vm.tolist(),
                                "meta_val_acc_ci95": vh.tolist(),
                                "gain_excludes_zero_at_largest": bool(gm[-1] - gh[-1] > 0),
                                # the name prediction() reads: the few-shot accuracy plays the probe's part
                                "probe_minus_best_kernel_at_largest": [float(over[0][0]), float(over[1][0])]}
            rows.append([v, s] + [fmt_ci(m, h) for m, h in zip(am, ah)] + [fmt_ci(m, h) for m, h in zip(gm, gh)]
                        + [round(slope, 4), fmt_ci(im[-1], ih[-1]), fmt_ci(over[0][0], over[1][0])]
                        + [fmt_ci(m, h) for m, h in zip(vm, vh)])
            style = {"marker": "o", "capsize": 3, "color": color(s), **_STYLE.get(s, {})}
            axes[row][0].errorbar(widths, gm, yerr=np.nan_to_num(gh), label=f"{s} ({regime})", **style)
            line = axes[row][1].errorbar(widths, am, yerr=np.nan_to_num(ah), label=s, **style)
            axes[row][1].plot(widths, im, ls=":", marker=".", color=line[0].get_color(), label=f"{s}, adapted from init")
            axes[row][2].errorbar(widths, vm, yerr=np.nan_to_num(vh), label=s, **style)
        kernel_lines(axes[row][1], ref)
        kernel_lines(axes[row][2], ref_val)
        shots = v[1:]
        width_axes(axes[row], ((f"gain (meta-trained - init), {shots}-shot", "MAML gain, 95% CI over seeds"),
                               (f"meta-test accuracy, {shots}-shot", "classes 5-9 vs kernels, same draws"),
                               (f"meta-val accuracy, {shots}-shot", "classes 0-4, held-out signals")),
                   f"mnist1d {p['n_way']}-way {shots}-shot")
        axes[row][0].axhline(0, color="k", lw=0.8)
        vv["prediction"] = prediction(vv["schemes"], fit)
        gaps = paired_gaps(vv["schemes"], gains)
        if gaps:
            vv["gap_at_largest"] = gaps
            vv["meta_val_gap_at_largest"] = paired_gaps(vv["schemes"], val_acc)
            gap_notes.append(f"{v}: " + ", ".join(f"{k} {fmt_ci(*g)}" for k, g in gaps.items()))
        verdicts[v] = vv
    fig.suptitle(f"first-order MAML on mnist1d: gain, meta-test and meta-val accuracy vs width ({describe_size(p)})",
                 fontsize=10)
    path = save_figure(fig, out_dir / "maml_mnist1d.png")
    cols = (["K", "scheme"] + [f"acc w={w}" for w in widths] + [f"gain w={w}" for w in widths]
            + ["gain per 2x width", f"acc from init at w={widths[-1]}", f"acc - best kernel at w={widths[-1]}"]
            + [f"meta-val acc w={w}" for w in widths])
    kern_note = "; ".join(f"{v}: " + ", ".join(f"{k.upper()} {np.mean(a):.3f}" for k, a in kv.items())
                          for v, kv in kern.items())  # "val/k<k>": on the meta-val episodes (classes 0-4)
    notes = (f"first-order MAML on mnist1d (meta-train classes 0-4, meta-test 5-9), {p['n_way']}-way; "
             f"{p['meta_steps']} outer {p['optimizer']} steps (lr {p['lr']}) of {p['meta_batch']} episodes, "
             f"{p['inner_steps']} inner SGD steps (inner lr {p['inner_lr']}, per tensor from the scheme) at base width "
             f"{p['base_width']}; accuracy on {p['n_episodes']} meta-test draws (classes 5-9; meta-val: "
             f"{p['n_val_episodes']} draws of classes 0-4 from held-out signals); gain = meta-trained - from init; "
             f"mean ± 95% t-interval over {p['seeds']} seeds. Kernel regression on the same draws: {kern_note or 'n/a'}."
             + (f" Gain gap at w={widths[-1]}, paired by seed: {'; '.join(gap_notes)}." if gap_notes else ""))
    return Summary("MAML on mnist1d: few-shot accuracy and gain vs width", cols, rows, {"maml": path},
                   extra={"verdicts": verdicts, "kernel_baselines": kern, "params": p}, notes=notes)


EXPERIMENT = Experiment(NAME, SIZES, run_one, summarize, doc=__doc__, checks=CHECKS)
RUNNER = EXPERIMENT.runner


def main(argv=None):
    return command.main(EXPERIMENT, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
