"""Empirical NTK with paramlab (layerwise hooks, Jacobian contraction, NTK-vector products) vs a naive
per-example, per-output autograd loop, on paramlab's MLP, CNN and Transformer, side by side in one
process. Prints the ratios and writes JSON.

    python benchmarks/ntk_vs_loop.py [--archs mlp cnn transformer] [--threads 1] [--repeats 3]

Every method computes the full kernel (N, N, K, K) and is checked against the loop (relative
Frobenius error). The networks (muP, base width 16 or 64):
    mlp          width 512, depth 2, 32 inputs, K = 10 outputs, N = 64 points
    cnn          2-d, 64 channels, depth 2, 3x3 kernels, 8x8 one-channel images, K = 10, N = 64
    transformer  d_model 64, depth 2, 4 heads, vocab 16, 8 tokens (K = 8 x 16 = 128 logits), N = 16;
                 attention computed explicitly (`expose_attn_logits`) for every method: torch has no
                 forward AD (needed by ntvp) for the fused CPU attention kernel
The ceiling: the one GEMM G G^T of the (N K, P) per-example gradients that the loop and every
method that contracts per-example gradients must do, half of it at best (the kernel is symmetric):
loop time / (GEMM time / 2), timed in the same rounds. Target: the layerwise eNTK of the CNN at
>= 2/3 of that ceiling (`--target-fraction`). Also timed in the same rounds, for the CNN: the Gram
as paramlab computes it (`gram_triangle`, the upper block triangle) on a G of the same shape, alone:
the floor of the layerwise method before its forward and backward passes and per-example gradients.
The target is reachable only if that floor fits in its time budget, (GEMM time / 2) / target
fraction; the JSON gives both (`seconds_gram_triangle`, `seconds_target_budget`).

Timings: after a warm-up of each path, `--repeats` rounds of every path and the GEMM, in an order
that rotates from round to round; each ratio is taken within a round and reported as the median over
rounds with its range. With one thread the clock is the process's CPU time (waiting for a core is
not counted). On a shared machine other jobs still slow all sides; the ratio is what to compare.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _common import clock_for, fmt_ratio, ratio_stats, timed_rounds, write_json
import paramlab as pl
from paramlab.measure.jacobian import gram_triangle
from paramlab.measure.ntk import empirical_ntk, ntk_naive

METHODS = ("jacobian", "ntvp", "layerwise")


def gram_fns(n: int, k: int, cols: int):
    """Two functions on one random (N K, cols) float32 G: G @ G.T (the ceiling's GEMM) and paramlab's
    `gram_triangle` (the symmetric Gram the layerwise method computes, its upper block triangle)."""
    g = torch.randn(n * k, cols)
    return (lambda: g @ g.T), (lambda: gram_triangle({"G": g.view(n, k, cols)}, None))


def g_cols(model) -> int:
    return sum(q.numel() for q in model.parameters())


def problem(arch: str):
    """(model, inputs, description) of one benchmark network."""
    g = torch.Generator().manual_seed(0)
    if arch == "mlp":
        model = pl.mlp(32, 10, 512, depth=2, scheme="mup", base_width=64, seed=0)
        return model, torch.randn(64, 32, generator=g), "MLP width 512, depth 2, d_in 32, K=10, N=64"
    if arch == "cnn":
        model = pl.cnn(1, 10, 64, depth=2, dim=2, scheme="mup", base_width=16, seed=0)
        return model, torch.randn(64, 1, 8, 8, generator=g), "CNN 2-d, 64 channels, depth 2, 8x8 inputs, K=10, N=64"
    if arch == "transformer":
        model = pl.transformer(16, 64, depth=2, n_heads=4, scheme="mup", base_width=16, seed=0, max_len=8)
        model.expose_attn_logits()  # explicit attention: torch has no forward AD (ntvp) for CPU fused attention
        return model, torch.randint(0, 16, (16, 8), generator=g), "Transformer d 64, depth 2, vocab 16, T=8, K=128, N=16"
    raise ValueError(f"unknown arch {arch!r}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=["mlp", "cnn", "transformer"], choices=["mlp", "cnn", "transformer"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target-fraction", type=float, default=2 / 3,
                   help="target: the CNN's layerwise speedup >= this fraction of the Gram ceiling")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ntk_vs_loop.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock_name, clock = clock_for(args.threads)
    results = {}
    for arch in args.archs:
        model, x, desc = problem(arch)
        paths = {"loop": lambda: ntk_naive(model, x)}
        paths.update({m: (lambda m=m: empirical_ntk(model, x, method=m)) for m in METHODS})
        for m in METHODS:  # warm-up on two inputs: first-call costs of autograd / vmap / the kernels
            empirical_ntk(model, x[:2], method=m)
        ntk_naive(model, x[:2])
        # the floor of every method that contracts per-example gradients (the loop included): one GEMM
        # (N K, P) @ (P, N K) of that size; exploiting the kernel's symmetry halves it at best
        k_out = ntk_naive(model, x[:1]).shape[-1]
        target = arch == "cnn"
        paths["gram"], tri = gram_fns(x.shape[0], k_out, g_cols(model))
        if target:  # the method's floor under the target (the MLP's layerwise forms no per-example gradients)
            paths["gram_triangle"] = tri
        names = list(paths)
        samples, outs = timed_rounds([paths[nm] for nm in names], args.repeats, clock)
        ts, kernels = dict(zip(names, samples)), dict(zip(names, outs))
        med = {nm: sorted(v)[len(v) // 2] for nm, v in ts.items()}
        half = [t / 2 for t in ts["gram"]]
        speed = {nm: ratio_stats(ts["loop"], ts[nm]) for nm in ("loop",) + METHODS}
        ceiling = ratio_stats(ts["loop"], half)
        frac = {nm: ratio_stats(half, ts[nm]) for nm in METHODS}  # speedup / ceiling, per round
        ref = kernels["loop"]
        errors = {name: float((kernels[name] - ref).norm() / ref.norm()) for name in ("loop",) + METHODS}
        print(f"{arch}: {desc}, {sum(q.numel() for q in model.parameters())} parameters "
              f"({clock_name} time, medians of {args.repeats} rounds)")
        for name in ("loop",) + METHODS:
            of_ceiling = f"{frac[name]['median']:5.0%} of the ceiling" if name in frac else " " * 20
            print(f"  {name:9s} {med[name]:8.3f}s   speedup vs loop {fmt_ratio(speed[name]):22s} {of_ceiling}   "
                  f"rel. error vs loop {errors[name]:.1e}")
        verdict = ""
        if target:
            verdict = "pass" if frac["layerwise"]["median"] >= args.target_fraction else "short"
            verdict = f"; target: layerwise >= {args.target_fraction:.0%} of it: {verdict}"
        print(f"  J J^T GEMM ({x.shape[0] * k_out} x {g_cols(model)}) {med['gram']:.3f}s: ceiling (loop / half the GEMM) "
              f"{fmt_ratio(ceiling)}{verdict}")
        budget = med["gram"] / 2 / args.target_fraction
        floor = {}
        if target:
            tri_share = ratio_stats(ts["gram_triangle"], ts["layerwise"])  # Gram alone / layerwise, per round
            print(f"  paramlab's Gram alone (gram_triangle) {med['gram_triangle']:.3f}s = {tri_share['median']:.0%} of the "
                  f"layerwise time; the target's budget (half the GEMM / {args.target_fraction:.2f}) {budget:.3f}s: "
                  + ("the Gram alone does not fit it" if med["gram_triangle"] > budget else
                     f"{budget - med['gram_triangle']:.3f}s left for the passes and per-example gradients"))
            floor = dict(seconds_gram_triangle=round(med["gram_triangle"], 4), seconds_target_budget=round(budget, 4),
                         gram_triangle_share_of_layerwise=tri_share["median"])
        results[arch] = dict(description=desc, params=sum(q.numel() for q in model.parameters()),
                             seconds={k: round(v, 4) for k, v in med.items() if not k.startswith("gram")},
                             samples=ts,
                             speedup_vs_loop={k: v["median"] for k, v in speed.items()},
                             speedup_range={k: [v["min"], v["max"]] for k, v in speed.items()},
                             seconds_gram_gemm=round(med["gram"], 4),
                             **floor,
                             max_speedup_gram_methods=ceiling["median"],
                             max_speedup_range=[ceiling["min"], ceiling["max"]],
                             fraction_of_ceiling={k: v["median"] for k, v in frac.items()},
                             target_fraction=args.target_fraction if target else None,
                             rel_error_vs_loop=errors)
    write_json(args.out, dict(benchmark="ntk_vs_loop", threads=args.threads, clock=clock_name, repeats=args.repeats,
                              results=results))


if __name__ == "__main__":
    main()
