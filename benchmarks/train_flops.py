"""Achieved training FLOP/s of a paramlab MLP at width 2048 vs this machine's torch matmul FLOP/s,
side by side in one process. Prints the ratio and writes JSON.

    python benchmarks/train_flops.py [--width 2048] [--depth 3] [--batch 512] [--threads N]
                                     [--device cuda] [--precision bf16]

Training goes through `paramlab.train.train` (the loop every experiment uses; Adam with paramlab's
per-tensor param groups). Its step time is the difference of two runs of different lengths, so
model building, the first and last evaluation and the optimizer's first-use cost cancel out. FLOPs
per step count the matmuls only: 6 * batch * (number of weights in Linear layers) (forward 2,
backward 4); the elementwise work (activations, Adam) is extra work the ceiling does not include.
The ceiling is the best of torch.matmul at the training's own shapes ((batch x width) @ (width x
width)) and at a square width^3 product, measured between the training repeats (best of all). Other jobs on the machine slow both sides, not always
equally: rerun on a quiet machine for figures to quote.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _common import write_json
import paramlab as pl
from paramlab.data import multi_index
from paramlab.train import train


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(m, k, n, repeats, dtype=torch.float32, device="cpu"):
    a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * m * k * n / best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--d-in", type=int, default=64)
    p.add_argument("--d-out", type=int, default=10)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, nargs=2, default=[5, 25], metavar=("SHORT", "LONG"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, i.e. the core count)")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: autocast for training, bf16 matmuls for the ceiling")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_flops.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    w, B = args.width, args.batch
    task = multi_index(B * 4, 64, d=args.d_in, k=2, seed=0)
    task = task.replace(y_train=task.y_train.repeat(1, args.d_out), y_test=task.y_test.repeat(1, args.d_out), d_out=args.d_out)
    task = task.to(args.device)
    mm_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32

    def run(steps):
        model = pl.mlp(args.d_in, args.d_out, w, depth=args.depth, scheme="mup", base_width=64, seed=0,
                       device=args.device)
        _sync(args.device)
        t0 = time.perf_counter()
        train(model, task, optimizer=args.optimizer, lr=1e-4, steps=steps, batch_size=B, eval_every=10**9,
              autocast="bf16" if args.precision == "bf16" else None)
        _sync(args.device)
        return time.perf_counter() - t0

    run(2)  # warm-up: the first optimizer, autograd, the GEMM kernels
    short, long_ = args.steps
    per_step, at_shape, square = [], 0.0, 0.0
    for _ in range(args.repeats):  # interleaved, so a load spike on a shared machine hits both sides
        at_shape = max(at_shape, matmul_flops(B, w, w, 5, mm_dtype, args.device))
        square = max(square, matmul_flops(w, w, w, 3, mm_dtype, args.device))
        per_step.append((run(long_) - run(short)) / (long_ - short))
    at_shape = max(at_shape, matmul_flops(B, w, w, 5, mm_dtype, args.device))
    square = max(square, matmul_flops(w, w, w, 3, mm_dtype, args.device))
    step_s = min(per_step)
    weights = args.d_in * w + (args.depth - 1) * w * w + w * args.d_out
    flops_step = 6.0 * B * weights
    achieved = flops_step / step_s
    ceiling = max(at_shape, square)
    ratio = achieved / ceiling
    print(f"MLP width {w}, depth {args.depth}, batch {B}, {args.optimizer}, {args.precision} on {args.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"  training step        {step_s * 1e3:8.2f} ms   {achieved / 1e9:8.1f} GFLOP/s (matmul FLOPs only)")
    print(f"  matmul {B}x{w}x{w}  {at_shape / 1e9:8.1f} GFLOP/s;  {w}^3: {square / 1e9:8.1f} GFLOP/s")
    print(f"  training / matmul ceiling: {ratio:.2f}")
    out = dict(benchmark="train_flops", width=w, depth=args.depth, batch=B, d_in=args.d_in, d_out=args.d_out,
               optimizer=args.optimizer, device=args.device, precision=args.precision,
               threads=torch.get_num_threads(), step_seconds=step_s,
               step_seconds_all=per_step, flops_per_step=flops_step, achieved_flops=achieved,
               matmul_flops_at_shape=at_shape, matmul_flops_square=square, ratio=round(ratio, 4))
    write_json(args.out, out)


if __name__ == "__main__":
    main()
