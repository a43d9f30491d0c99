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
Timings are the best of `--repeats` after a warm-up of each path. On a shared machine other jobs
inflate both sides; the ratio is what to compare.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _common import timed, write_json
import paramlab as pl
from paramlab.measure.ntk import empirical_ntk, ntk_naive

METHODS = ("jacobian", "ntvp", "layerwise")


def gram_seconds(rows: int, cols: int, repeats: int) -> float:
    """Best time of G @ G.T for a random (rows, cols) float32 G."""
    g = torch.randn(rows, cols)
    return timed(lambda: g @ g.T, repeats)[0]


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
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ntk_vs_loop.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for arch in args.archs:
        model, x, desc = problem(arch)
        paths = {"loop": lambda: ntk_naive(model, x)}
        paths.update({m: (lambda m=m: empirical_ntk(model, x, method=m)) for m in METHODS})
        for m in METHODS:  # warm-up on two inputs: first-call costs of autograd / vmap / the kernels
            empirical_ntk(model, x[:2], method=m)
        ntk_naive(model, x[:2])
        times, kernels = {}, {}
        for name, fn in paths.items():
            times[name], kernels[name] = timed(fn, args.repeats)
        # the floor of every method that contracts per-example gradients (the loop included): one GEMM
        # (N K, P) @ (P, N K) of that size; exploiting the kernel's symmetry halves it at best
        ref_k = kernels["loop"].shape[-1]
        t_gemm = gram_seconds(x.shape[0] * ref_k, g_cols(model), args.repeats)
        ref = kernels["loop"]
        errors = {name: float((k - ref).norm() / ref.norm()) for name, k in kernels.items()}
        print(f"{arch}: {desc}, {sum(q.numel() for q in model.parameters())} parameters")
        for name in paths:
            print(f"  {name:9s} {times[name]:8.3f}s   speedup vs loop {times['loop'] / times[name]:7.2f}x   "
                  f"rel. error vs loop {errors[name]:.1e}")
        print(f"  J J^T GEMM ({x.shape[0] * ref_k} x {g_cols(model)}) {t_gemm:.3f}s: a method that forms the Gram of "
              f"per-example gradients is at most {times['loop'] / (t_gemm / 2):.1f}x faster than the loop")
        results[arch] = dict(description=desc, params=sum(q.numel() for q in model.parameters()),
                             seconds={k: round(v, 4) for k, v in times.items()},
                             speedup_vs_loop={k: round(times["loop"] / v, 3) for k, v in times.items()},
                             seconds_gram_gemm=round(t_gemm, 4),
                             max_speedup_gram_methods=round(times["loop"] / (t_gemm / 2), 3),
                             rel_error_vs_loop=errors)
    write_json(args.out, dict(benchmark="ntk_vs_loop", threads=args.threads, results=results))


if __name__ == "__main__":
    main()
