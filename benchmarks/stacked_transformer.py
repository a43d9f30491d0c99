"""Stacked vs sequential training of K Transformer LMs: K = 8 muP models (different lrs and seeds) trained
as one `vmap(functional_call)` pass (`paramlab.engine.lm.train_lm_stacked`, built on
`paramlab.engine.stack.Stacked`) vs one after another (`train_lm`), side by side in one process, with two
ceilings timed in the same run. Prints the ratios per width and writes JSON. Variants run in rounds (each
once per round, the order rotating); every ratio is taken within a round and reported as the median over
rounds with its range; one-thread runs are timed in the process's CPU time.

    python benchmarks/stacked_transformer.py [--k 8] [--widths 32 64] [--steps 40] [--repeats 5]

Setting: tiny Shakespeare, depth 2, 4 heads, batch 16 x context 32 tokens, Adam, 1 thread; evaluation
excluded (2 windows). Variants: `stacked` (SDPA inside vmap: torch has no batching rule for it and loops
over K) and `stacked-explicit` (attention computed as q k^T softmax v, which vmap batches).

Ceilings (sequential time / ceiling time = the most a stacked pass could gain):
  big-batch  ONE model trained on K batches at once (batch K*B): the same GEMM and elementwise work as
             K models, per-model overheads (dispatch, optimizer, Python) paid once: what stacking can
             reach without fusing kernels;
  GEMM       the same steps' matmuls alone (every Linear's forward and two backward GEMMs, attention's
             q k^T, att v and their backward GEMMs), batched over the K models as torch.bmm.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _common import clock_for, fmt_ratio, ratio_stats, timed, timed_rounds, write_json
import paramlab as pl
from paramlab.data.text import shakespeare_char
from paramlab.engine.lm import train_lm, train_lm_stacked


def make(task, width, seed, context, explicit=False):
    m = pl.transformer(task.vocab_size, width, depth=2, n_heads=4, scheme="mup", base_width=32, max_len=context,
                       seed=seed)
    return m.expose_attn_logits(explicit)


def gemm_ceiling(k, width, batch, context, vocab, steps, depth=2, heads=4, clock=None):
    """Seconds for the matmuls alone of `steps` training steps of K stacked models."""
    bt, d, f, dh, t = batch * context, width, 4 * width, width // heads, context
    g = torch.Generator().manual_seed(0)
    shapes = [(d, d)] * 4 + [(d, f), (f, d)]  # q, k, v, o, fc, proj: (in, out)
    lin = [(torch.randn(k, bt, i, generator=g), torch.randn(k, o, i, generator=g), torch.randn(k, bt, o, generator=g))
           for i, o in shapes * depth + [(d, vocab)]]
    kb = k * batch * heads
    q, kk, v = (torch.randn(kb, t, dh, generator=g) for _ in range(3))
    att, gy = torch.randn(kb, t, t, generator=g), torch.randn(kb, t, dh, generator=g)

    def one():
        for _ in range(steps):
            for x, w, gy_ in lin:
                torch.bmm(x, w.mT), torch.bmm(gy_, w), torch.bmm(gy_.mT, x)  # forward, grad input, grad weight
            for _ in range(depth):
                torch.bmm(q, kk.mT), torch.bmm(att, v)  # forward
                torch.bmm(att, kk), torch.bmm(att.mT, q)  # grad q, grad k
                torch.bmm(att.mT, gy), torch.bmm(gy, v.mT)  # grad v, grad att

    one()
    return min(timed_rounds([one], 3, clock)[0][0]) if clock else timed(one, 3)[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5, help="rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/stacked_transformer.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    task = shakespeare_char()
    k = a.k
    lrs = [2.0 ** (-10 + 0.5 * i) for i in range(k)]
    seeds = list(range(k))
    xy = task.eval_windows(2, a.context, seed=0)
    proto = dict(steps=a.steps, batch=a.batch, context=a.context, eval_xy=xy)
    results = []
    for width in a.widths:
        def seq():
            return [train_lm(make(task, width, s, a.context), task, lr=lr, seed=s, **proto) for lr, s in zip(lrs, seeds)]

        def stacked(explicit):
            return lambda: train_lm_stacked([make(task, width, s, a.context, explicit) for s in seeds], task, lrs=lrs,
                                            seeds=seeds, **proto)

        def big_batch():
            return train_lm(make(task, width, 0, a.context), task, lr=lrs[0], seed=0,
                            **{**proto, "batch": a.batch * k})

        fns = {"sequential": seq, "stacked": stacked(False), "stacked-explicit": stacked(True), "big-batch": big_batch}
        warm = {**proto, "steps": 2}
        train_lm(make(task, width, 0, a.context), task, lr=1e-3, seed=0, **warm)  # the first optimizer costs seconds
        train_lm_stacked([make(task, width, s, a.context) for s in (0, 1)], task, lrs=[1e-3] * 2, seeds=[0, 1], **warm)
        clock_name, clock = clock_for(a.threads)
        samples, _ = timed_rounds(list(fns.values()), a.repeats, clock)  # rotating order: load hits all alike
        times = dict(zip(fns, samples))
        best = {n: min(v) for n, v in times.items()}
        gemm = gemm_ceiling(k, width, a.batch, a.context, task.vocab_size, a.steps, clock=clock)
        seq = times["sequential"]
        speed = {n: ratio_stats(seq, times[n]) for n in ("stacked", "stacked-explicit")}
        big = ratio_stats(seq, times["big-batch"])
        # the fraction of the big-batch ceiling, per round: big-batch time / stacked time
        frac = {n: ratio_stats(times["big-batch"], times[n]) for n in speed}
        r = dict(k=k, width=width, steps=a.steps, batch=a.batch, context=a.context, clock=clock_name, times=times,
                 best=best, gemm_seconds=gemm, speedup={n: v["median"] for n, v in speed.items()},
                 speedup_range={n: [v["min"], v["max"]] for n, v in speed.items()},
                 big_batch_ceiling=big["median"], big_batch_ceiling_range=[big["min"], big["max"]],
                 fraction_of_big_batch={n: v["median"] for n, v in frac.items()},
                 fraction_of_big_batch_range={n: [v["min"], v["max"]] for n, v in frac.items()},
                 gemm_ceiling=min(seq) / gemm)
        results.append(r)
        print(f"K={k} width {width}: sequential {min(seq):.2f} s ({clock_name} time, medians of {a.repeats} rounds) | "
              f"stacked {fmt_ratio(speed['stacked'])}, stacked-explicit {fmt_ratio(speed['stacked-explicit'])} | "
              f"ceilings: big-batch {fmt_ratio(big)}, GEMM {r['gemm_ceiling']:.2f}x | of the big-batch ceiling: "
              f"stacked {frac['stacked']['median']:.0%}, explicit {frac['stacked-explicit']['median']:.0%}", flush=True)
    write_json(Path(a.out), dict(args=vars(a), results=results))


if __name__ == "__main__":
    main()
