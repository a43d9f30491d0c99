"""muTransfer on your own model and training loop: sweep the learning rate at a few small widths, check
that the optimum stays put, and take it to the large model.

    res = pl.lr_sweep(build, train_eval, widths=[64, 128, 256], log2_lrs=range(-12, -3), seeds=3)
    print(res.table())              # per-width robust optimum +- its error, the shift over the widths
    lr = res.lr                     # 2**optimum at the widest width swept: use it at any width

``build(width) -> model`` builds your model (e.g. ``pl.parameterize(MyNet(width), "mup", base=...)``);
it is called after ``torch.manual_seed(seed)``, so it must draw its init from torch's global RNG (no
``seed=`` of its own: that is warned, `paramlab.measure.seeds`). A ``build(width, seed)`` that takes a
``seed`` argument gets the seed passed as well. ``train_eval(model, lr) -> float`` is your loop: make
the optimizer (``pl.optimizer(model, "adam", lr)``), train, return the loss you want to transfer
(held-out loss, usually). A non-finite loss (or one ``train_eval`` returns as None) is a diverged run
and counts as +inf.

What it computes, per width w: the curves (seeds x lrs) of returned losses, and
`paramlab.measure.optimum.robust_optimum` of them: the vertex of a parabola in log loss through the
seed-mean minimum and its neighbours (+-2 grid steps), with a bootstrap-over-seeds error (the fit's
own error with one seed), and a status ('ok', or 'edge' where the optimum is at the grid or divergence
edge and the value is only a bound). The **shift** is optimum(widest) - optimum(narrowest) in log2 lr
(= grid steps for a unit grid), errors in quadrature; under muP it is predicted to be 0 (TP5; see
docs/theory.md, "Learning-rate transfer"), under SP about -1 per doubling of width for Adam.

Runs go through the sweep runner (`paramlab.sweep`): every (width, log2_lr, seed) is one run in the
local store, ``<root>/lr_sweep/<name>/``, so a cut-off sweep resumes where it stopped (call it again
with the same arguments) and adding widths or seeds runs only the new points. A run's config holds
the width, log2_lr and seed, ``config`` (anything else your callables depend on, e.g. a dataset's
version), a hash of the network ``build`` makes (its init at the narrowest width, seed 0) and the names
of ``build`` and ``train_eval`` with a hash of their source and of the scalars they read from outside
(closure variables, defaults, module globals such as ``steps = 100``): change any of these and the
runs are new instead of resumed. What the hashes cannot see (a tensor or a data loader the loop reads)
goes in ``config``, or give each sweep its own ``name``.
``executor="ray"`` runs the grid as Ray tasks; Ray pickles the callables with cloudpickle, so closures
and lambdas work where cloudpickle can pickle what they capture (not open files, locks, live data
loaders with worker processes); otherwise use the local executor, which has no such limit.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .measure.optimum import Optimum, robust_optimum
from .measure.seeds import fingerprint, same_network, warn_same_seeds

__all__ = ["LRSweep", "lr_sweep"]

EXPERIMENT = "lr_sweep"  # the store folder: <root>/lr_sweep/<name>/


_SCALARS = (bool, int, float, str, type(None))


def _captured(fn: Callable) -> dict:
    """The scalar values `fn` reads from outside its body: closure cells, defaults, and module globals
    named in its code (e.g. a loop's ``scheme`` or a script's ``steps = 100``)."""
    out = {}
    code = getattr(fn, "__code__", None)
    if code is None:
        return out
    for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
        try:
            v = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(v, _SCALARS):
            out[name] = v
    for i, v in enumerate(getattr(fn, "__defaults__", None) or ()):
        if isinstance(v, _SCALARS):
            out[f"default{i}"] = v
    g = getattr(fn, "__globals__", {})
    for name in code.co_names:
        if name in g and isinstance(g[name], _SCALARS):
            out[name] = g[name]
    return out


def _identity(fn: Callable) -> str:
    """'module.qualname@<hash>': the hash covers its source (where readable) and the scalars it captures, so
    editing the function or changing a value it reads starts new runs instead of resuming stale ones."""
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        src = ""
    key = src + repr(sorted(_captured(fn).items(), key=lambda kv: kv[0]))
    return f"{name}@{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _init_hash(model) -> str:
    """A hash of a model's initial parameters (names, shapes, values): which network the runs train."""
    h = hashlib.sha1()
    for n, p in model.named_parameters():
        h.update(n.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()[:12]


def _takes_seed(build: Callable) -> bool:
    try:
        return "seed" in inspect.signature(build).parameters
    except (TypeError, ValueError):
        return False


def _scheme_name(model) -> str | None:
    from .parameterize import PLAN_ATTR
    from .wrappers import unwrap

    plan = getattr(unwrap(model), PLAN_ATTR, None)
    return getattr(getattr(plan, "scheme", None), "name", None)


def _make(build: Callable, width: int, seed: int):
    torch.manual_seed(seed)
    return build(width, seed=seed) if _takes_seed(build) else build(width)


def _runner_fn(build: Callable, train_eval: Callable) -> Callable[[dict], dict]:
    def run(config: dict) -> dict:
        model = _make(build, int(config["width"]), int(config["seed"]))
        scheme = _scheme_name(model)
        loss = train_eval(model, 2.0 ** float(config["log2_lr"]))
        if isinstance(loss, torch.Tensor):
            loss = loss.detach().item()
        if loss is not None and not isinstance(loss, (int, float)):
            raise TypeError(f"train_eval must return a float loss (or None for a diverged run), got {type(loss).__name__}")
        finite = loss is not None and math.isfinite(float(loss))
        out = {"loss": float(loss) if finite else None, "scheme": scheme}
        if not finite:
            out.update(status="diverged", diverged_reason=f"train_eval returned {loss!r}")
        return out

    return run


@dataclass
class LRSweep:
    """What `lr_sweep` found.

    losses: (n_widths, n_seeds, n_lrs), +inf where a run diverged.
    optima: one `Optimum` per width (x in log2 lr; se: its error; status 'ok' / 'edge' / 'flat' / 'none').
    shift, shift_se: optimum(widest) - optimum(narrowest) in log2 lr, errors in quadrature (nan if either is
        not 'ok'); drift: least-squares slope of the 'ok' optima against log2(width), per doubling.
    """

    widths: list[int]
    log2_lrs: list[float]
    seeds: list[int]
    losses: np.ndarray
    optima: list[Optimum]
    shift: float
    shift_se: float
    drift: float
    scheme: str | None = None
    path: Path | None = None
    plot: Path | None = None
    runs: list = field(default_factory=list, repr=False)

    @property
    def lr(self) -> float:
        """The learning rate to use: 2**optimum at the widest width swept (nan if it has none)."""
        return float(2.0 ** self.optima[-1].x) if np.isfinite(self.optima[-1].x) else float("nan")

    def interval(self, i: int) -> tuple[float, float]:
        """An approximate 95% interval for width i's optimum: x +- 1.96 se (normal approximation of the
        bootstrap, or of the fit's delta-method error with one seed); (nan, nan) without an error."""
        o = self.optima[i]
        return (o.x - 1.96 * o.se, o.x + 1.96 * o.se) if np.isfinite(o.se) else (float("nan"), float("nan"))

    def verdict(self, tol: float = 1.0) -> str:
        """The finding in words: whether the optimum moved by more than `tol` grid steps (plus its 95% error)."""
        if not np.isfinite(self.shift):
            bad = [f"w={w}: {o.status}" for w, o in zip(self.widths, self.optima) if o.status != "ok"]
            return ("no shift: an optimum is not located (" + ", ".join(bad) + "); widen log2_lrs past the "
                    "edge or add seeds")
        span = f"{self.widths[0]} -> {self.widths[-1]}"
        moved = abs(self.shift) > tol + 1.96 * self.shift_se
        what = (f"the optimum moved by {self.shift:+.2f} +- {self.shift_se:.2f} log2 steps over widths {span} "
                f"(x{2 ** self.shift:.2g} in lr)")
        if moved:
            return what + ": the lr does NOT transfer (is the model parameterized? under SP it drifts like 1/width)"
        return what + f": the lr transfers; use lr = {self.lr:.3g} at any width"

    def table(self) -> str:
        from .report import text_table

        rows = []
        for w, o, i in zip(self.widths, self.optima, range(len(self.widths))):
            lo, hi = self.interval(i)
            mean = np.mean(self.losses[i], axis=0)
            best = float(np.min(mean)) if np.isfinite(mean).any() else float("nan")
            rows.append([str(w), f"{o.x:+.2f}", "-" if not np.isfinite(o.se) else f"{o.se:.2f}",
                         "-" if not np.isfinite(lo) else f"[{lo:+.2f}, {hi:+.2f}]", f"{o.argmin:+g}", o.status,
                         f"{2 ** o.x:.3g}" if np.isfinite(o.x) else "-", f"{best:.4g}",
                         str(int(np.sum(~np.isfinite(self.losses[i]))))])
        head = ["width", "optimum (log2 lr)", "se", "~95% interval", "grid argmin", "status", "lr", "best mean loss",
                "diverged runs"]
        return text_table(head, rows) + "\n" + self.verdict()


def _check_grid(widths, log2_lrs, seeds) -> tuple[list[int], list[float], list[int]]:
    ws = [int(w) for w in widths]
    if len(ws) < 2 or any(w <= 0 for w in ws) or sorted(set(ws)) != ws:
        raise ValueError(f"widths must be >= 2 increasing positive ints, got {list(widths)}")
    xs = [float(x) for x in log2_lrs]
    if len(xs) < 3 or any(b <= a for a, b in zip(xs, xs[1:])) or not all(map(math.isfinite, xs)):
        raise ValueError(f"log2_lrs must be >= 3 increasing finite numbers (lr = 2**x), got {list(log2_lrs)}")
    if isinstance(seeds, bool) or not (isinstance(seeds, int) and seeds >= 1):
        raise TypeError(f"seeds is a number of seeds (seeds 0..n-1), got {seeds!r}")
    return ws, xs, list(range(seeds))


def lr_sweep(
    build: Callable[..., torch.nn.Module],
    train_eval: Callable[[torch.nn.Module, float], float],
    *,
    widths: Sequence[int],
    log2_lrs: Sequence[float],
    seeds: int = 3,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    root: str | os.PathLike = "runs",
    executor: str = "local",
    address: str | None = None,
    plot: str | os.PathLike | bool | None = True,
    wandb: bool = False,
    progress: bool = False,
    half: int = 2,
) -> LRSweep:
    """Run ``train_eval(build(width), 2**log2_lr)`` over widths x log2_lrs x seeds and locate each width's
    optimum (see the module docstring). Returns an `LRSweep`.

    name: the store group (default: a hash of the callables' identities, `config` and the grid's widths
        and lrs, so the same call resumes). config: anything else your callables depend on (recorded,
        part of every run's identity). plot: True writes ``<group>/lr_sweep.png``, a path writes there,
        False/None draws nothing. wandb: also log every run to wandb (offline unless WANDB_MODE says
        otherwise). half: the optimum's window, +- grid steps (`robust_optimum`).
    """
    from .runners import register_runner
    from .store import config_hash
    from .sweep import run_sweep

    widths, log2_lrs, seed_list = _check_grid(widths, log2_lrs, seeds)
    clash = {"width", "log2_lr", "seed"} & set(config or {})
    if clash:
        raise ValueError(f"config must not set {sorted(clash)}: they are the grid's axes")
    first = _make(build, widths[0], seed_list[0])
    # a run's identity: the callables (source and captured scalars), the network they build (its init at the
    # narrowest width, seed 0: scheme, architecture, init all show there) and the user's config
    fixed = {"build": _identity(build), "train_eval": _identity(train_eval), "init": _init_hash(first),
             **dict(config or {})}
    if name is None:
        name = "lr-sweep-" + config_hash({"fixed": fixed, "widths": widths, "log2_lrs": log2_lrs})
    if len(seed_list) > 1:  # the seed trap, checked on the narrowest width before anything runs
        if same_network(fingerprint(first), fingerprint(_make(build, widths[0], seed_list[1]))):
            warn_same_seeds("lr_sweep", (seed_list[0], seed_list[1]), widths[0], stacklevel=2)
    del first
    runner_name = f"{EXPERIMENT}:{name}"
    register_runner(runner_name, _runner_fn(build, train_eval))
    spec = {"runner": runner_name, "experiment": EXPERIMENT, "name": name, "root": str(root), "wandb": bool(wandb),
            "grid": {"width": widths, "log2_lr": log2_lrs, "seed": seed_list}, "fixed": fixed, "ensemble": "never"}
    report = run_sweep(spec, executor=executor, address=address, progress=progress)
    failed = [r for r in report.runs if r["status"] not in ("finished", "diverged")]
    if failed:
        from .io import read_json

        err = read_json(Path(failed[0]["path"]) / "meta.json", {}).get("error", "?")
        raise RuntimeError(f"{len(failed)} of {report.total} runs of the lr sweep failed; the first "
                           f"({failed[0]['path']}): {err}. Fix it and call lr_sweep again: complete runs are kept")
    losses = np.full((len(widths), len(seed_list), len(log2_lrs)), np.inf)
    index = {(w, s, x): (i, j, k) for i, w in enumerate(widths) for j, s in enumerate(seed_list)
             for k, x in enumerate(log2_lrs)}
    schemes = set()
    for r in report.runs:
        c = r["config"]
        i, j, k = index[(int(c["width"]), int(c["seed"]), float(c["log2_lr"]))]
        loss = r["summary"].get("loss")
        if r["status"] == "finished" and isinstance(loss, (int, float)) and math.isfinite(loss):
            losses[i, j, k] = float(loss)
        if r["summary"].get("scheme"):
            schemes.add(r["summary"]["scheme"])
    optima = [robust_optimum(log2_lrs, losses[i], half=half) for i in range(len(widths))]
    a, b = optima[0], optima[-1]
    if a.status == b.status == "ok":
        sh, se = b.x - a.x, float(np.hypot(a.se, b.se))
    else:
        sh, se = float("nan"), float("nan")
    ok = [(math.log2(w), o.x) for w, o in zip(widths, optima) if o.status == "ok"]
    drift = float(np.polyfit(*zip(*ok), 1)[0]) if len(ok) >= 2 else float("nan")
    res = LRSweep(widths, log2_lrs, seed_list, losses, optima, sh, se, drift,
                  scheme=", ".join(sorted(schemes)) or None, path=report.path, runs=report.runs)
    if plot:
        from .report import plot_lr_sweep

        res.plot = plot_lr_sweep(res, report.path / "lr_sweep.png" if plot is True else Path(plot))
    if not np.isfinite(sh):
        warnings.warn(f"lr_sweep: {res.verdict()}", RuntimeWarning, stacklevel=2)
    return res
