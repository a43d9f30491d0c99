"""Empirical NTK with torch.func (Jacobian contraction, NTK-vector products) vs a naive per-example,
per-output autograd loop, on the same paramlab MLP and inputs, side by side in one process. Prints
the ratios and writes JSON.

    python benchmarks/ntk_vs_loop.py [--width 512] [--depth 2] [--n 64] [--d-out 10] [--threads 1]

All three compute the full kernel (N, N, K, K) and are checked to agree (relative Frobenius error).
Timings are the best of `--repeats` after a warm-up of each path. On a shared machine other jobs
inflate both sides; the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _common import write_json
import paramlab as pl
from paramlab.measure.ntk import empirical_ntk, ntk_naive


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--d-in", type=int, default=32)
    p.add_argument("--d-out", type=int, default=10)
    p.add_argument("--n", type=int, default=64, help="number of inputs")
    p.add_argument("--scheme", default="mup")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ntk_vs_loop.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = pl.mlp(args.d_in, args.d_out, args.width, depth=args.depth, scheme=args.scheme, base_width=64, seed=0)
    x = torch.randn(args.n, args.d_in, generator=torch.Generator().manual_seed(0))

    paths = {
        "loop": lambda: ntk_naive(model, x),
        "jacobian": lambda: empirical_ntk(model, x, method="jacobian"),
        "ntvp": lambda: empirical_ntk(model, x, method="ntvp"),
        "layerwise": lambda: empirical_ntk(model, x, method="layerwise"),
    }
    small = x[:2]  # warm-up on a small input: first-call costs of autograd / vmap / the kernels
    ntk_naive(model, small)
    empirical_ntk(model, small, method="jacobian")
    empirical_ntk(model, small, method="ntvp")
    empirical_ntk(model, small, method="layerwise")
    times, kernels = {}, {}
    for name, fn in paths.items():
        times[name], kernels[name] = timed(fn, args.repeats)
    ref = kernels["loop"]
    errors = {name: float((k - ref).norm() / ref.norm()) for name, k in kernels.items()}
    n_params = sum(p.numel() for p in model.parameters())
    for name in paths:
        print(f"{name:9s} {times[name]:8.3f}s   speedup vs loop {times['loop'] / times[name]:7.2f}x   "
              f"rel. error vs loop {errors[name]:.1e}")
    out = dict(benchmark="ntk_vs_loop", width=args.width, depth=args.depth, d_in=args.d_in, d_out=args.d_out,
               n=args.n, scheme=args.scheme, params=n_params, threads=args.threads,
               seconds={k: round(v, 4) for k, v in times.items()},
               speedup_vs_loop={k: round(times["loop"] / v, 3) for k, v in times.items()},
               rel_error_vs_loop=errors)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
