"""Ensemble vs sequential training: K MLPs (different seeds and learning rates) trained stacked in one
pass (`paramlab.stacked.train_ensemble`) vs one after another (`paramlab.train.train`), side by side
in one process. Prints the speedup per width and writes JSON.

    python benchmarks/ensemble_vs_sequential.py [--k 8] [--widths 64 256 1024] [--threads 1]

The floor: the GEMMs alone of the work both sides do, as batched matmuls over the K models (no
optimizer, no Python loop), timed in the same rounds: every training step's forward and weight-gradient
products of every layer and input-gradient products of every layer but the first (the data needs no
gradient, and neither side computes one), plus the forward products of the two evaluations (step 0 and
the last, both splits, every row: 2 x 2304 rows, ~12% of the GEMM work at width 256). Sequential time /
floor is the most any implementation could gain (the ceiling); the target is a speedup of at least 2/3 of
it (`--target-fraction`). The JSON also gives the training-only floor (all three products of every layer,
no evaluations: `seconds_gemm_floor_training`, `fraction_of_training_floor`), the floor this benchmark
used before; it leaves out GEMM work both sides must do, so its ceiling is out of reach.

Both paths do the same work: same models, batches, optimizer (Adam, paramlab's per-tensor lr/eps),
evaluation only at the first and last step. After a warm-up (the first optimizer built in a process
costs seconds), sequential, ensemble and floor run in `--repeats` rounds (seq ens floor, seq ens
floor, ...); each ratio is taken within a round and reported as the median over rounds with its
range. With one thread the clock is the process's CPU time (waiting for a core is not counted);
other jobs still slow all sides through shared caches and memory; the ratio is what to compare.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _common import clock_for, fmt_ratio, ratio_stats, timed_rounds, write_json
import paramlab as pl
from paramlab.data import multi_index
from paramlab.stacked import step_flops, train_ensemble, train_sequential, use_ensemble


def make_models(k, width, depth, d_in, scheme, base_width):
    return [pl.mlp(d_in, 1, width, depth=depth, scheme=scheme, base_width=base_width, seed=s) for s in range(k)]


def gemm_floor(k, width, depth, d_in, d_out, batch, steps, dtype=torch.float32, device="cpu", eval_rows=0,
               input_grad=False):
    """A function running the GEMMs alone of `steps` training steps of K stacked MLPs, as `torch.bmm` on (K, ...)
    stacks: per layer the forward h @ W^T, the weight gradient gy^T @ h and the input gradient gy @ W (not for
    the first layer unless `input_grad`: its input is the data), then the forward products of `eval_rows` rows
    (the evaluations). The floor of any implementation of that work."""
    dims = [d_in] + [width] * depth + [d_out]
    g = torch.Generator().manual_seed(0)
    hs = [torch.randn(k, batch, i, generator=g, dtype=dtype).to(device) for i in dims[:-1]]
    ws = [torch.randn(k, o, i, generator=g, dtype=dtype).to(device) for i, o in zip(dims[:-1], dims[1:])]
    gys = [torch.randn(k, batch, o, generator=g, dtype=dtype).to(device) for o in dims[1:]]
    evs = [torch.randn(k, eval_rows, i, generator=g, dtype=dtype).to(device) for i in dims[:-1]] if eval_rows else []

    def one():
        for _ in range(steps):
            for i, (h, w, gy) in enumerate(zip(hs, ws, gys)):
                torch.bmm(h, w.mT)
                if i > 0 or input_grad:
                    torch.bmm(gy, w)
                torch.bmm(gy.mT, h)
        for h, w in zip(evs, ws):
            torch.bmm(h, w.mT)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)

    one()
    return one


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--d-in", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="default: 200 / 100 / 20 for width <= 64 / 256 / more")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--target-fraction", type=float, default=2 / 3,
                   help="target: speedup >= this fraction of the ceiling (widths with a target)")
    p.add_argument("--target-widths", type=int, nargs="*", default=[256],
                   help="widths held to the fraction-of-ceiling target (width 64: >= 2.5x, see run_all.sh)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ensemble_vs_sequential.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock_name, clock = clock_for(args.threads if args.device == "cpu" else 0)
    task = multi_index(2048, 256, d=args.d_in, k=2, seed=0)
    k = args.k
    lrs = [1e-3 * 1.5 ** i for i in range(k)] if args.optimizer != "sgd" else [0.01 * 1.5 ** i for i in range(k)]
    seeds = list(range(k))
    common = dict(optimizer=args.optimizer, batch_size=args.batch, device=args.device)

    def run(fn, width, steps):
        models = make_models(k, width, args.depth, args.d_in, "mup", 64)
        return fn(models, task, lr=lrs, seed=seeds, steps=steps, eval_every=steps, **common)

    # warm-up: the first optimizer, autograd and the batched kernels
    run(train_sequential, 64, 5)
    run(train_ensemble, 64, 5)
    rows = []
    for width in args.widths:
        steps = args.steps or (200 if width <= 64 else 100 if width <= 256 else 20)
        run(train_ensemble, width, 2)
        eval_rows = 2 * (task.n_train + task.n_test)  # evaluations at step 0 and the last, both splits
        floor = gemm_floor(k, width, args.depth, args.d_in, 1, args.batch, steps, device=args.device,
                           eval_rows=eval_rows)
        floor_train = gemm_floor(k, width, args.depth, args.d_in, 1, args.batch, steps, device=args.device,
                                 input_grad=True)
        (ts_seq, ts_ens, ts_floor, ts_ftrain), _ = timed_rounds(
            [lambda: run(train_sequential, width, steps), lambda: run(train_ensemble, width, steps), floor, floor_train],
            args.repeats, clock)
        sp, ceil, frac = ratio_stats(ts_seq, ts_ens), ratio_stats(ts_seq, ts_floor), ratio_stats(ts_floor, ts_ens)
        frac_train = ratio_stats(ts_ftrain, ts_ens)
        med = lambda ts: round(sorted(ts)[len(ts) // 2], 4)  # noqa: E731
        flops = step_flops(width, args.depth, args.d_in, 1, args.batch)
        target = width in args.target_widths
        row = dict(width=width, k=k, steps=steps, seconds_sequential=med(ts_seq), seconds_ensemble=med(ts_ens),
                   speedup=sp["median"], speedup_range=[sp["min"], sp["max"]], seconds_gemm_floor=med(ts_floor),
                   max_speedup=ceil["median"], max_speedup_range=[ceil["min"], ceil["max"]],
                   fraction_of_ceiling=frac["median"], fraction_of_ceiling_range=[frac["min"], frac["max"]],
                   eval_rows=eval_rows, seconds_gemm_floor_training=med(ts_ftrain),
                   fraction_of_training_floor=frac_train["median"],
                   target_fraction=args.target_fraction if target else None,
                   samples=dict(sequential=ts_seq, ensemble=ts_ens, floor=ts_floor, floor_training=ts_ftrain),
                   flops_per_model_step=flops,
                   auto_policy_picks_ensemble=use_ensemble(width, args.depth, args.d_in, 1, args.batch, k, args.device))
        rows.append(row)
        print(f"width {width:5d}  K={k}  {steps:4d} steps  sequential {med(ts_seq):7.3f}s  ensemble {med(ts_ens):7.3f}s  "
              f"GEMMs of the same work alone {med(ts_floor):7.3f}s  ({clock_name} time, medians of {args.repeats} rounds; "
              f"auto: {'ensemble' if row['auto_policy_picks_ensemble'] else 'sequential'})")
        verdict = "" if not target else ("  pass" if frac["median"] >= args.target_fraction else "  short")
        print(f"      speedup {fmt_ratio(sp)}, ceiling (sequential / GEMMs alone) {fmt_ratio(ceil)}: "
              f"{frac['median']:.0%} of the ceiling" + (f" (target {args.target_fraction:.0%}){verdict}" if target else ""))
        print(f"      (training GEMMs alone, all three products per layer, no evaluations: {med(ts_ftrain):.3f}s; "
              f"the ensemble at {frac_train['median']:.0%} of that floor's ceiling)")
    out = dict(benchmark="ensemble_vs_sequential", threads=args.threads, repeats=args.repeats, clock=clock_name, optimizer=args.optimizer, batch=args.batch,
               depth=args.depth, d_in=args.d_in, device=args.device, results=rows)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
