"""Coordinate check: `paramlab.measure.coord.coord_check` vs `mup.coord_check.get_coord_data` on the same
muP MLP grid (widths, seeds, batch, steps, optimizer, loss, statistic), side by side in one process.
Prints both times, the ratio mup / paramlab and whether the recorded values agree; writes JSON.

    python benchmarks/coord_vs_mup.py [--widths 64 128 ... 2048] [--seeds 3] [--steps 3] [--threads 1]

The grid (both sides)
    MLP x (batch, d_in) -> layers.0 -> act -> layers.1 -> act -> readout -> (batch, d_out), ReLU,
    `--depth` hidden layers; muP relative to base width `--base` (64); widths 64..2048 (powers of 2);
    seeds 0..S-1; one fixed batch (x, labels) of `--batch` examples; `--steps` (3) plain SGD updates,
    lr 0.1; loss mup's 'mse': F.mse_loss(out, one_hot(labels)) (mean over batch x outputs; paramlab
    gets the same callable, its own 'mse' is 0.5 * sum / batch); statistic mup's default 'l1' =
    mean |out| of a module's output. Same init on both sides: for seed s and every width,
    torch.manual_seed(s), nn.Linear construction, then He-normal draws in parameter order, so the
    two runs see bit-for-bit (up to rounding of the std) the same weights and batch.

paramlab side
    coord_check(lambda w: pl.mlp(d_in, d_out, w, depth=depth, scheme='mup', base_width=64), widths, x, y,
    optimizer='sgd', lr=0.1, steps=3, seeds=S, loss=<mup's mse>, quantities=('act/l1',)):
    builds each model (plus base and delta models on the meta device for the plan) and paramlab's
    per-tensor SGD, captures the leaf modules' outputs (layers.0, act[0], layers.1, act[1], readout)
    by forward hooks, each reduced to its l1 (mean |.|, float32 cascade sum) as it is produced, and
    records act/l1 at t = 0..3: t = 0..2 are the forward passes of the 3 training steps, t = 3 is
    one extra no-grad forward after the last update. At the end it computes the predicted slopes
    from the plan and a log-log fit with a verdict for every (module, step). So paramlab does
    MORE work: 4 recorded forwards instead of 3, plus the fits and predictions.
mup side
    get_coord_data({w: lazy model}, [(x, labels)], optimizer='sgd', lr=0.1, mup=True, nsteps=3,
    nseeds=S, lossfn='mse', cuda=False, show_progress=False): each lazy model is the same MLP class
    with a `mup.MuReadout` readout, `mup.set_base_shapes(model, base, delta=delta)` (base / delta
    built on the meta device, as paramlab does), trained with `mup.MuSGD`; forward hooks on every
    module (named_modules, including the root '') record l1 (float32) of the forward pass of each of
    the 3 steps (mup's t = 1..3 = the forward before update t), collected into a pandas DataFrame.
    The root's output is the readout's, recorded once more.

paramlab's defaults (the second setting)
    The same call with quantities=None: what a user gets without choosing, against mup's default
    (the same get_coord_data call: mup's default is 'l1' only). paramlab records act/rms, act/l1,
    dact/rms, dact/l1 of every module and W/rms, dW/rms, upd/rms of every parameter at t = 0..3:
    seven statistics where mup records one. Target: paramlab default time <= 1.5x mup's, i.e.
    `speedup_vs_mup_default` (mup / paramlab) >= 0.67. With `--spectral` a third paramlab setting is
    timed, quantities='all' (adding the opt-in spectral norms: 20 Lanczos steps per matrix above a
    64-wide side), with no target: the price of opting in.

floor
    The work both must do, timed in the same run: build each model (paramlab's builder, same draws),
    paramlab's SGD, 3 steps of forward, loss, backward and update; no hooks, nothing recorded. mup's
    time / the floor is the most any coordinate check could gain over mup on this grid.

Both are checked to record the same numbers: mup's t = k is paramlab's t = k - 1 (mup numbers the
forward before update k as step k; paramlab calls the init forward t = 0). Timings: after a
warm-up of both (the first optimizer built in a process costs seconds), `--repeats` rounds of
(paramlab, mup, floor) in an order that rotates from round to round; each ratio is taken within a
round and reported as the median over rounds with its range. With one thread the clock is the
process's CPU time (waiting for a core is not counted). Targets: mup time / paramlab time >= 1 with
act/l1 only; >= 1 / 1.5 with each side's defaults.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _common import clock_for, fmt_ratio, ratio_stats, timed_rounds, write_json
import paramlab as pl
from paramlab.measure.coord import coord_check
from paramlab.models.activations import GAINS

try:
    import mup
    from mup import MuReadout, set_base_shapes
    from mup.coord_check import get_coord_data
except ImportError as e:  # pragma: no cover
    raise SystemExit(f"this benchmark needs the `mup` package (and pandas): {e}")


class MupMLP(nn.Module):
    """paramlab's MLP layout (layers.i, one shared act, readout) with mup's MuReadout as the readout."""

    def __init__(self, d_in, d_out, width, depth, device=None):
        super().__init__()
        dims = [d_in] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(i, o, device=device) for i, o in zip(dims[:-1], dims[1:]))
        self.act = nn.ReLU()
        self.readout = MuReadout(width, d_out, device=device)

    def forward(self, x):
        for layer in self.layers:
            x = self.act(layer(x))
        return self.readout(x)


def mup_model_factory(d_in, d_out, depth, base_width):
    """width -> lazy mup model (what get_coord_data wants).

    Re-seeds with the seed mup's loop has just set (torch.initial_seed()), so every width of seed s
    starts from torch.manual_seed(s), as paramlab's coord_check does; draws He-normal weights in
    parameter order (paramlab's init at the base width); set_base_shapes then rescales the readout
    (x sqrt(width_mult)), which with MuReadout's 1/width_mult multiplier gives muP's readout.
    """
    gain = GAINS["relu"]

    def make(width):
        def lazy():
            base = MupMLP(d_in, d_out, base_width, depth, device="meta")
            delta = MupMLP(d_in, d_out, 2 * base_width + 1, depth, device="meta")
            seed = torch.initial_seed()
            model = MupMLP(d_in, d_out, width, depth)
            torch.manual_seed(seed)  # paramlab's builders skip PyTorch's default init: draw from the seed
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith("weight"):
                        g = 1.0 if name.startswith("readout") else gain
                        p.copy_(torch.randn(p.shape) * (g / math.sqrt(p.shape[1])))
                    else:
                        p.zero_()
            return set_base_shapes(model, base, delta=delta)

        return lazy

    return make


def mup_mse(out, y):
    """mup's lossfn='mse' (get_coord_data), for paramlab too."""
    return F.mse_loss(out, F.one_hot(y, num_classes=out.size(-1)).float())


def compare(res, df, seeds, steps):
    """Match mup's records to paramlab's: mup (width, module, t) with call index -> paramlab
    (width, seed, name, t - 1). Returns {mup t: max relative difference}, counts, unmatched names."""
    df = df[df["module"] != ""].copy()  # the root: the same tensor as the readout's output
    calls_per = df.groupby(["width", "module", "t"]).size() // len(seeds)  # calls per forward (act: depth)
    df["k"] = df.groupby(["width", "module", "t"]).cumcount()
    pl_vals = {(r["width"], r["seed"], r["name"], r["step"]): r["value"] for r in res.records
               if r["quantity"] == "act/l1"}
    worst, n_matched, unmatched = {}, {}, set()
    for row in df.itertuples(index=False):
        ncall = int(calls_per[(row.width, row.module, row.t)])
        seed, call = seeds[row.k // ncall], row.k % ncall
        name = row.module if ncall == 1 else f"{row.module}[{call}]"
        key = (row.width, seed, name, row.t - 1)
        if key not in pl_vals:
            unmatched.add(name)
            continue
        a, b = pl_vals[key], row.l1
        rel = abs(a - b) / max(abs(a), abs(b), 1e-30)
        worst[row.t] = max(worst.get(row.t, 0.0), rel)
        n_matched[row.t] = n_matched.get(row.t, 0) + 1
    return worst, n_matched, sorted(unmatched)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    p.add_argument("--base", type=int, default=64, help="base width of muP (both sides)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--d-in", type=int, default=32)
    p.add_argument("--d-out", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--quantities", nargs="+", default=["act/l1"],
                   help="paramlab's quantities (default act/l1, mup's 'l1'); e.g. 'act dact' to time more work")
    p.add_argument("--spectral", action="store_true",
                   help="also time paramlab with quantities='all' (the opt-in spectral norms); no target")
    p.add_argument("--default-target", type=float, default=1.5,
                   help="paramlab's default quantities may cost at most this many times mup's default")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rtol", type=float, default=1e-4, help="tolerance of the value check (float32 on mup's side)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "coord_vs_mup.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock_name, clock = clock_for(args.threads)
    warnings.filterwarnings("ignore", module="mup")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.d_in, generator=g)
    y = torch.randint(0, args.d_out, (args.batch,), generator=g)
    seeds = list(range(args.seeds))
    make_mup = mup_model_factory(args.d_in, args.d_out, args.depth, args.base)

    def run_paramlab(widths, nseeds, quantities=args.quantities):
        return coord_check(lambda w: pl.mlp(args.d_in, args.d_out, w, depth=args.depth, scheme="mup",
                                            base_width=args.base),
                           widths, x, y, optimizer="sgd", lr=args.lr, steps=args.steps, seeds=nseeds,
                           loss=mup_mse, quantities=quantities)

    def run_floor(widths, nseeds):
        """The work common to both: build each model, 3 SGD steps on the batch; nothing recorded."""
        for s in range(nseeds):
            for w in widths:
                torch.manual_seed(s)
                model = pl.mlp(args.d_in, args.d_out, w, depth=args.depth, scheme="mup", base_width=args.base)
                opt = pl.optimizer(model, "sgd", lr=args.lr)
                for _ in range(args.steps):
                    opt.zero_grad(set_to_none=True)
                    mup_mse(model(x), y).backward()
                    opt.step()

    def run_mup(widths, nseeds):
        return get_coord_data({w: make_mup(w) for w in widths}, [(x, y)], optimizer="sgd", lr=args.lr, mup=True,
                              nsteps=args.steps, nseeds=nseeds, lossfn="mse", cuda=False, show_progress=False)

    # warm-up: the first optimizer of each kind, autograd, pandas, the GEMM kernels
    warm = [args.base, 2 * args.base]
    run_paramlab(warm, 1)
    run_paramlab(warm, 1, None)
    run_mup(warm, 1)
    run_floor(warm, 1)
    sides = [lambda: run_paramlab(args.widths, args.seeds), lambda: run_mup(args.widths, args.seeds),
             lambda: run_floor(args.widths, args.seeds), lambda: run_paramlab(args.widths, args.seeds, None)]
    if args.spectral:
        run_paramlab(warm, 1, "all")
        sides.append(lambda: run_paramlab(args.widths, args.seeds, "all"))
    times, outs = timed_rounds(sides, args.repeats, clock)
    ts_pl, ts_mup, ts_floor, ts_def = times[:4]
    res, df, res_def = outs[0], outs[1], outs[3]
    med = lambda ts: sorted(ts)[len(ts) // 2]  # noqa: E731
    t_pl, t_mup, t_floor, t_def = med(ts_pl), med(ts_mup), med(ts_floor), med(ts_def)
    speed, ceiling = ratio_stats(ts_mup, ts_pl), ratio_stats(ts_mup, ts_floor)
    speed_def = ratio_stats(ts_mup, ts_def)
    speed_all = ratio_stats(ts_mup, times[4]) if args.spectral else None
    ratio = speed["median"]
    worst, n_matched, unmatched = compare(res, df, seeds, args.steps)
    worst_def, _, _ = compare(res_def, df, seeds, args.steps)
    agree = bool(worst) and all(v <= args.rtol for v in worst.values())
    agree_def = bool(worst_def) and all(v <= args.rtol for v in worst_def.values())

    n_runs = len(args.widths) * args.seeds
    print(f"MLP depth {args.depth}, d_in {args.d_in}, d_out {args.d_out}, batch {args.batch}; widths {args.widths}, "
          f"base {args.base}; {args.seeds} seed(s), {args.steps} SGD steps lr {args.lr}; {args.threads} thread(s); "
          f"{clock_name} time, medians of {args.repeats} rounds")
    label_pl = f"paramlab coord_check (quantities {', '.join(args.quantities)})"
    label_mup = "mup get_coord_data ('l1')"
    wl = max(len(label_pl), len(label_mup), 44)
    print(f"  {label_pl:{wl}s} {t_pl:8.3f}s  ({t_pl / n_runs * 1e3:.1f} ms per model)")
    print(f"  {label_mup:{wl}s} {t_mup:8.3f}s  ({t_mup / n_runs * 1e3:.1f} ms per model)")
    label_floor = "floor: build + SGD steps, nothing recorded"
    print(f"  {label_floor:{wl}s} {t_floor:8.3f}s  (mup {t_mup / t_floor:.2f}x the floor, paramlab {t_pl / t_floor:.2f}x)")
    verdict = "pass" if ratio >= 1.0 else "short"
    print(f"  speedup (mup / paramlab): {fmt_ratio(speed)}, target >= 1x: {verdict}; ceiling (the most any coordinate "
          f"check could reach over mup here, mup / floor): {fmt_ratio(ceiling)}")
    label_def = "paramlab coord_check, its default quantities"
    n_def = len({r["quantity"] for r in res_def.records})
    print(f"  {label_def:{wl}s} {t_def:8.3f}s  ({n_def} statistics; mup's default records 1)")
    verdict_def = "pass" if speed_def["median"] >= 1 / args.default_target else "short"
    print(f"  each side's defaults, mup / paramlab: {fmt_ratio(speed_def)} (paramlab {1 / speed_def['median']:.2f}x "
          f"mup's time), target paramlab <= {args.default_target:g}x mup: {verdict_def}; act/l1 "
          f"{'AGREES' if agree_def else 'DIFFERS'}")
    if speed_all is not None:
        print(f"  quantities='all' (opt-in spectral norms), mup / paramlab: {fmt_ratio(speed_all)} "
              f"({med(times[4]):.3f}s; no target)")
    for t in sorted(worst):
        print(f"  values: mup t={t} vs paramlab t={t - 1}: {n_matched[t]} records, max rel. diff {worst[t]:.1e}")
    if unmatched:
        print(f"  mup modules with no paramlab counterpart: {unmatched}")
    if agree:
        print(f"  l1 values AGREE (rtol {args.rtol:g}) for every module and step both record")
    else:
        print(f"  l1 values DIFFER (rtol {args.rtol:g}): see the max rel. diff per step above")

    out = dict(benchmark="coord_vs_mup", widths=args.widths, base_width=args.base, seeds=args.seeds, steps=args.steps,
               depth=args.depth, d_in=args.d_in, d_out=args.d_out, batch=args.batch, lr=args.lr, optimizer="sgd",
               loss="mup mse (F.mse_loss vs one-hot)", paramlab_quantities=args.quantities, mup_stat="l1",
               threads=args.threads, repeats=args.repeats, clock=clock_name,
               seconds={"paramlab": round(t_pl, 4), "mup": round(t_mup, 4), "floor": round(t_floor, 4),
                        "paramlab_default": round(t_def, 4),
                        **({"paramlab_all": round(med(times[4]), 4)} if args.spectral else {})},
               samples={"paramlab": ts_pl, "mup": ts_mup, "floor": ts_floor, "paramlab_default": ts_def,
                        **({"paramlab_all": times[4]} if args.spectral else {})},
               speedup_vs_mup=ratio, speedup_range=[speed["min"], speed["max"]],
               speedup_vs_mup_default=speed_def["median"], speedup_default_range=[speed_def["min"], speed_def["max"]],
               default_target=args.default_target, default_values_agree=agree_def,
               paramlab_default_quantities=sorted({r["quantity"] for r in res_def.records}),
               speedup_vs_mup_all=speed_all and speed_all["median"],
               max_speedup_vs_mup=ceiling["median"], max_speedup_range=[ceiling["min"], ceiling["max"]],
               values_agree=agree, rtol=args.rtol,
               max_rel_diff={f"mup_t{t}_vs_paramlab_t{t - 1}": v for t, v in sorted(worst.items())},
               records_compared=sum(n_matched.values()), unmatched_mup_modules=unmatched,
               mup=getattr(mup, "__version__", None))
    write_json(args.out, out)


if __name__ == "__main__":
    main()
