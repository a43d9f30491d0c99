"""Coordinate check: how the sizes of activations and weight updates scale with width.

`coord_check(make_model, widths, x, y)` builds the model at every width (and seed), trains it for a
few steps on one fixed batch, and records at steps t = 0..T (t = 0: at init, before any update; the
forward pass of step t is the one whose loss gives update t+1) for every module and parameter:

    act/rms, act/l1      RMS and mean |.| of the module's output on the batch (mup's 'l2'/'l1')
    dact/rms, dact/l1    the same for its change since init, out_t - out_0        (t >= 1)
    W/rms, W/spec        RMS and spectral norm of the effective weight (multiplier included)
    dW/rms, dW/spec      the same for W_t - W_0, the change since init            (t >= 1)
    upd/rms, upd/spec    the same for W_t - W_{t-1}, the last update               (t >= 1)

By default all but the spectral norms (`DEFAULT_QUANTITIES`): they cost more than the rest of the
check together; ``quantities="all"`` adds them. Spectral norms are on the 2-D view (fan_out, -1),
vectors: l2 norm, by `weights.spectral_norm` with `SPECTRAL` (20 Lanczos steps above a 64-wide side: a
lower bound, within 2.5% with probability >= 97%; ``spectral={"steps": None}`` converges it instead).
act/l1 and act/rms are mup's 'l1' and 'l2' statistics (`mup.coord_check`), W/rms its parameter 'l2'
times the multiplier; mup's t = k is the forward pass of t = k - 1 here (tests/test_coord.py).
Attention modules in the model's plan (HF attention, modules calling scaled_dot_product_attention;
`paramlab.attention`) also get rows '<module>.logits': the act/dact sizes of their q.k * scale logits
(B, heads, T, T), before any mask. A model inside DDP, FSDP1 or torch.compile is measured on the module
inside, in eager mode; a tied tensor's weight rows appear under each name that uses it.
Then it fits the log-log slope against width (`fit_slope`, seeds averaged in log space) for every
(name, quantity, step), compares it with a predicted slope, and gives a verdict with the tolerance used.

The run is paramlab's own step (`paramlab.train.train_step`: the loss of `paramlab.losses`, the
optimizer of `paramlab.optim` for a paramlab model, or one you pass); the predictions come from
`coord_predict` (or, for a model set up with the `mup` package, `mup_shapes`), the fits and
verdicts from `coord_result`, the table and the plot from `paramlab.report`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..attention import attention_logits
from ..losses import LOSSES
from ..optim import OPTIMIZERS, trained_families
from ..optim import optimizer as make_optimizer
from ..parameterize import PLAN_ATTR
from ..schemes import family_base, optimizer_family
from ..train import train_step
from ..wrappers import unwrap
from .coord_predict import adam_equivalent_infos, parameter_owners, plan_tensor_infos, predict_slopes
from .coord_result import WEIGHT_QUANTITIES, CoordResult, fit_all, wanted_quantities
from .capture import Capture, capture, leaf_module_names
from .weights import spectral_norm
from .mup_shapes import mup_tensor_infos
from .coord_result import DEFAULT_QUANTITIES
from .seeds import fingerprint, same_network, warn_same_seeds

__all__ = ["SPECTRAL", "coord_check"]

# spectral norms (opt-in quantities): exact SVD up to a 64-wide side, above it 20 Lanczos steps, a lower
# bound within 2.5% with probability >= 97% for any matrix up to 4096 wide (`weights.spectral_norm`)
SPECTRAL = {"steps": 20, "exact_max": 64}


def _optimizer(model: nn.Module, optimizer, lr) -> torch.optim.Optimizer:
    """A callable(model) -> torch optimizer, called; or a name, `paramlab.optimizer` from the model's plan."""
    if callable(optimizer) and not isinstance(optimizer, str):
        opt = optimizer(model)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optimizer(model) must return a torch.optim.Optimizer, got {type(opt).__name__}")
        return opt
    name = str(optimizer).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)} or a callable(model) "
                         "-> optimizer")
    if getattr(model, PLAN_ATTR, None) is None:
        raise ValueError(
            f"optimizer={optimizer!r} builds paramlab's per-tensor optimizer from the model's plan, and this model "
            "has none: pass a callable, e.g. optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1) "
            "(mup.MuSGD / mup.MuAdam for a model set up with the mup package)")
    if lr is None:
        lr = 0.1 if name == "sgd" else 1e-3  # mup's get_coord_data defaults
    return make_optimizer(model, name, lr=lr)


def _prediction_family(model: nn.Module, opt, infos):
    """('sgd' | 'adam', infos) for the predictions: a paramlab optimizer's normalized families (Adam, Lion,
    Adafactor, Muon) are predicted as their Adam-equivalent steps (`coord_predict.adam_equivalent_infos`)."""
    if not getattr(opt, "paramlab_lr_mult", False) or getattr(model, PLAN_ATTR, None) is None:
        return optimizer_family(opt), infos
    fams = trained_families(opt)
    bases = {family_base(f) for f in fams.values()}
    if len(bases) > 1:
        raise ValueError(f"a mix of SGD and normalized optimizers ({sorted(set(fams.values()))}) has no automatic "
                         "prediction: pass predicted= (or auto_predict=False)")
    base = bases.pop()
    return base, (adam_equivalent_infos(model, infos, fams) if base == "adam" else infos)


def _seed_list(seeds) -> list[int]:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise TypeError(f"seeds is a number of seeds (seeds 0..n-1), got {seeds!r}: pass e.g. seeds=3")
    return list(range(seeds))


def _stats(t: torch.Tensor, rms: bool = True, l1: bool = True) -> tuple[float | None, float | None]:
    """(RMS, mean |t|) of a tensor (None for a statistic not asked for).

    Computed in the tensor's dtype, at least float32: torch's mean sums in cascades, so a float32
    mean is within ~1e-7 relative of the float64 one (measured on up to 4M entries), and it is
    several times faster than converting to float64 first (this runs on every module output of
    every forward of the coordinate check).
    """
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    r = float(t.square().mean().sqrt()) if rms else None
    a = float(t.abs().mean()) if l1 else None
    return r, a


def _rms(t: torch.Tensor) -> float:
    """RMS of a (weight-sized) tensor without a temporary copy (a fresh MB-sized one page-faults).

    Norms of the rows of the 2-D view (shape[0], -1) in t's dtype, combined in float64: within ~1e-8
    relative of the float64 value for a 4096 x 4096 float32 matrix (a single float32 norm or dot: ~1e-4).
    """
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    rows = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)
    return float(torch.linalg.vector_norm(rows, dim=1).double().square().sum().sqrt()) / math.sqrt(max(t.numel(), 1))


class _StatCapture(Capture):
    """`Capture` that reduces each module output to (RMS, l1) as the forward produces it (before any
    later in-place op can change it), so the tensor itself is cloned only when it is kept (for dact)."""

    def __init__(self, model, names, want: tuple[bool, bool], keep: bool):
        self.want, self.stats = want, {}
        super().__init__(model, names, clone=keep)

    def _hook(self, name):
        record = super()._hook(name)

        def hook(module, args, out):
            if isinstance(out, torch.Tensor):
                record(module, args, out)
                if any(self.want):
                    self.stats[(name, len(self._calls[name]) - 1)] = _stats(out, *self.want)
            return None

        return hook

    def named_stats(self) -> dict[str, tuple]:
        return {self._key(n, i): self.stats[(n, i)] for n, i in self._order if (n, i) in self.stats}

    def clear(self) -> None:
        super().clear()
        self.stats = {}


def _run(model, opt, x, y, loss, steps, names, qs, infos, spectral_kw, record, pool):
    """Train `steps` steps on (x, y), calling record(step, name, quantity, value).

    Returns (the recorded names of the first forward, the parameter names measured, the captured
    modules' names in the order the first forward called them). `pool` holds the weight-sized buffers
    (W_0, W_{t-1}, W_t - W_0, W_t - W_{t-1}) by (name, shape, dtype, device) from run to run: the next
    seed at the same width reuses them (a fresh MB-sized tensor page-faults on its first write).
    """
    want_act = ("act/rms" in qs, "act/l1" in qs)
    want_dact = ("dact/rms" in qs, "dact/l1" in qs)
    cap = _StatCapture(model, names, want_act, keep=any(want_dact))
    # attention paramlab scaled: its q.k logits, as '{module}.logits' (no interception without any)
    has_sites = bool(attention_logits(model).sites)
    first_order = None
    try:
        params = dict(model.named_parameters(remove_duplicate=False))  # a tied tensor under each name that uses it
        want_w = any(q in qs for q in WEIGHT_QUANTITIES)
        mods = names if names is not None else leaf_module_names(model)
        wnames = []
        if want_w:
            owned = parameter_owners(model)
            wnames = [n for n, m in owned.items() if m in set(mods) and params[n].is_floating_point()]
        # |multiplier|: RMS and spectral norm of the effective weight mult * W are |mult| times W's
        scale = {n: abs(infos[n].mult if n in infos else 1.0) for n in wnames}
        want_d, want_upd = (any(q.startswith(f"{tag}/") for q in qs) for tag in ("dW", "upd"))
        bufs = _weight_buffers(params, wnames if want_d or want_upd else (), pool)
        out0 = None
        for t in range(steps + 1):
            for n in wnames:  # weights used by the forward pass of step t
                cur = params[n].detach()
                tensors = [("W", cur)]
                if t > 0:
                    b0, b1, bd, bu = bufs[n]  # W_0, W_{t-1}, W_t - W_0, W_t - W_{t-1}
                    if want_d or (want_upd and t == 1):
                        tensors.append(("dW", torch.sub(cur, b0, out=bd)))
                    if want_upd:  # at t = 1 the update is the change since init: measured once
                        tensors.append(("upd", bd if t == 1 else torch.sub(cur, b1, out=bu)))
                done = {}
                for tag, tensor in tensors:
                    for stat in ("rms", "spec"):
                        if f"{tag}/{stat}" in qs:
                            if (id(tensor), stat) not in done:
                                done[id(tensor), stat] = (_rms(tensor) if stat == "rms"
                                                          else spectral_norm(tensor, **spectral_kw))
                            record(t, n, f"{tag}/{stat}", scale[n] * done[id(tensor), stat])
                if want_upd and 0 < t < steps:
                    bufs[n][1].copy_(cur)
            cap.clear()
            loss_t = 0.0
            with attention_logits(model) if has_sites else contextlib.nullcontext({}) as logits:
                if t < steps:
                    loss_t = train_step(model, opt, x, y, loss)  # the forward of step t gives update t+1
                else:
                    with torch.no_grad():
                        model(x)
            acts = {**cap.outputs, **logits}
            if out0 is None:
                out0, first_order = acts, cap.order
            _record_activations(t, acts, out0, cap.named_stats(), want_act, want_dact, record)
            if not math.isfinite(loss_t):  # diverged: no update was taken, later steps are not measured
                break
        return list(out0.keys()), wnames, first_order
    finally:
        cap.remove()


def _weight_buffers(params: dict, wnames, pool: dict) -> dict[str, tuple]:
    """name -> (W_0, W_{t-1}, W_t - W_0, W_t - W_{t-1}) buffers from `pool` (made there on first use), W_0
    filled with the parameter's value now."""
    bufs = {}
    for n in wnames:
        p = params[n].detach()
        key = (n, tuple(p.shape), p.dtype, p.device)
        if key not in pool:
            pool[key] = tuple(torch.empty_like(p, memory_format=torch.contiguous_format) for _ in range(4))
        bufs[n] = pool[key]
        bufs[n][0].copy_(p)
    return bufs


def _record_activations(t, acts, out0, stats, want_act, want_dact, record) -> None:
    """record act/rms, act/l1 of each output at step t (from the capture's `stats` where it reduced it) and,
    for t >= 1, dact/rms, dact/l1 of its change since the first forward `out0` (same shape only)."""
    for name, a in acts.items():
        if any(want_act):
            rms, l1 = stats[name] if name in stats else _stats(a, *want_act)
            if want_act[0]:
                record(t, name, "act/rms", rms)
            if want_act[1]:
                record(t, name, "act/l1", l1)
        if any(want_dact) and t > 0 and name in out0 and out0[name].shape == a.shape:
            rms, l1 = _stats(a - out0[name], *want_dact)
            if want_dact[0]:
                record(t, name, "dact/rms", rms)
            if want_dact[1]:
                record(t, name, "dact/l1", l1)


def _check_seed_trap(inits: dict, model: nn.Module, w: int, s: int, seeds: list[int]) -> None:
    """Keep the first seed's initial parameters at width w; warn when a later seed builds the same network
    (a builder that fixes its own seed), once per width."""
    if s == seeds[0]:
        inits[w] = fingerprint(model)
    elif w in inits:
        if same_network(inits.pop(w), fingerprint(model)):
            warn_same_seeds("coord_check", (seeds[0], s), w)


def _on_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) on the model's device, floating-point ones in its parameters' dtype."""
    p0 = next((p for p in model.parameters() if p.is_floating_point()), None)
    xx = x.to(device=p0.device, dtype=p0.dtype if x.is_floating_point() else x.dtype) if p0 is not None else x
    yy = y.to(device=xx.device, dtype=p0.dtype if (y.is_floating_point() and p0 is not None) else y.dtype)
    return xx, yy


def _full_forward_order(model: nn.Module, names: list[str] | None, x: torch.Tensor) -> list[str] | None:
    """The forward order of all leaves and the requested modules, for the predictions, by a no-grad forward
    on x; None when the run's own first forward records exactly those modules (it gives the order)."""
    every = list(dict.fromkeys(leaf_module_names(model) + (names or [])))
    if names is None or every == names:
        return None
    with torch.no_grad(), capture(model, every, clone=False) as cap:
        model(x)
        return cap.order


def coord_check(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    optimizer="sgd",
    lr: float | None = None,
    steps: int = 3,
    seeds: int = 3,
    loss="mse",
    modules: Iterable[str] | None = None,
    quantities: Iterable[str] | None = None,
    predicted=None,
    auto_predict: bool = True,
    family: str | None = None,
    tol: float | Mapping[str, float] = 0.15,
    spectral: Mapping | None = None,
    progress: bool = False,
) -> CoordResult:
    """Coordinate check of ``make_model`` over ``widths`` and ``seeds`` on one fixed batch (x, y).

    Args:
        make_model: width -> model. Called after ``torch.manual_seed(seed)``, so a builder that draws
            from torch's global RNG (paramlab builders with seed=None, plain nn.Modules) gets one
            init per seed. A builder that fixes its own seed builds the same network for every seed:
            warned (`seeds.SeedWarning`), from the second seed's first width.
        optimizer: 'sgd', 'adam', 'adamw' (paramlab's per-tensor optimizer from the model's plan, with
            ``lr``; default lr 0.1 for SGD, 1e-3 for Adam as in mup), or a callable(model) -> torch
            optimizer (e.g. ``lambda m: mup.MuSGD(m.parameters(), lr=.1)``; needed for a model without
            a paramlab plan).
        seeds: the number of seeds (0..seeds-1): one init per seed at every width.
        steps: number of updates T; measurements at t = 0..T.
        loss: a `paramlab.losses` name, 'mse' (0.5 * sum over outputs, mean over the batch) or 'xent'
            (y: class indices; (B, T, C) logits are B*T predictions), or a callable(out, y) -> scalar.
        modules: module names to record (default: all leaf modules with a tensor output); the
            parameters these modules own are measured too.
        quantities: subset of QUANTITIES or prefixes ('act', 'dact', 'W', 'dW', 'upd'), or "all";
            default `DEFAULT_QUANTITIES` (all but the spectral norms, which are opt-in).
        predicted: user slopes, overriding the automatic ones: a callable(name, quantity, step) ->
            slope or None, or a dict keyed by (name, quantity, step), (name, quantity), or
            name -> {quantity or prefix -> slope or {step: slope}}. A slope may be a (lo, hi) range.
        auto_predict: derive slopes from the model's plan (or mup infshapes); see the module docstring.
        family: 'sgd' or 'adam' for the predictions (default: from the optimizer's class).
        tol: tolerance on the predicted slope and on growth (float, or dict quantity/prefix -> tol).
        spectral: keyword arguments for `weights.spectral_norm`, over `SPECTRAL` (e.g. {"steps": None}:
            converged Lanczos, exact up to rtol 1e-7).
        progress: show a tqdm progress bar.
    """
    widths = [int(w) for w in widths]
    seeds = _seed_list(seeds)
    if len(widths) < 2:
        raise ValueError(f"coord_check needs at least 2 widths to fit a slope, got {widths}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    qs = wanted_quantities(DEFAULT_QUANTITIES if quantities is None else quantities)
    spectral_kw = {**SPECTRAL, **(spectral or {})}
    if not callable(loss) and loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)} or a callable(out, y)")
    names = None if modules is None else list(modules)
    res = CoordResult(widths=widths, seeds=seeds, steps=steps, family=family or "sgd")
    shapes: dict[str, list[tuple]] = {}
    pool: dict = {}  # weight-sized buffers, reused by the next seed at the same width
    first = None
    inits: dict[int, list] = {}  # width -> the first seed's initial parameters (the seed trap)
    runs = [(w, s) for s in seeds for w in widths]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc="coord_check")
    for w, s in runs:
        torch.manual_seed(s)
        model = unwrap(make_model(w))  # DDP / FSDP1 / compile: measured on the module inside, in eager mode
        _check_seed_trap(inits, model, w, s, seeds)
        xx, yy = _on_model(model, x, y)
        opt = _optimizer(model, optimizer, lr)
        infos = plan_tensor_infos(model) or mup_tensor_infos(model)
        if family is None:
            res.family, infos = _prediction_family(model, opt, infos)

        def record(t, name, q, v, w=w, s=s):
            res.records.append({"width": w, "seed": s, "step": t, "name": name, "quantity": q, "value": v})

        # the full forward order for the predictions: before the run, which changes the model
        pre_order = _full_forward_order(model, names, xx) if first is None else None
        order, wnames, run_order = _run(model, opt, xx, yy, loss, steps, names, qs, infos, spectral_kw, record, pool)
        if s == seeds[0]:
            for n, p in model.named_parameters(remove_duplicate=False):
                shapes.setdefault(n, []).append(tuple(p.shape))
        if first is None:
            first = (model, order, wnames, infos)
            full_order = run_order if pre_order is None else pre_order
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model, order, wnames, infos = first
    res.order, res.params = order, wnames
    pred = {}
    if auto_predict and infos:
        # (recorded name, module name) in forward order
        pairs = [(rec, rec.split("[")[0]) for rec in full_order]
        pred = predict_slopes(pairs, infos, res.family, steps, shapes, widths)
    fit_all(res, pred, predicted, tol)
    return res
