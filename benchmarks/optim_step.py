"""Optimizer step cost: `paramlab.optimizer(model, family)` (per-tensor learning rates from the plan) vs the
plain torch optimizer over the same parameters (one group, one lr), side by side in one process.
Prints the overhead per family, model and width and writes JSON.

    python benchmarks/optim_step.py [--families adam lion adafactor muon] [--widths 256 1024] [--threads 1]

What is timed: `opt.step()` alone, `--steps` times per call, on fixed gradients (one backward pass
of a batch first; every step reads the same .grad), so forward and backward, common to both sides,
do not dilute the difference. Both sides start from the same weights (deepcopies) and gradients.

    family     paramlab                                   plain
    adam       pl.optimizer(m, 'adam')                    torch.optim.Adam(m.parameters())
    lion       pl.optimizer(m, 'lion')                    paramlab.lion.Lion(m.parameters()) (torch has none)
    adafactor  pl.optimizer(m, 'adafactor')               torch.optim.Adafactor(m.parameters())
    muon       pl.optimizer(m, 'muon') (the hybrid)       torch.optim.Muon(hidden 2-D matrices) + AdamW(rest)

A family that `paramlab.optimizer` does not know (an older paramlab) is skipped and listed as such.
Models: muP MLP (d_in 32, 10 outputs, depth 2, base 64) and Transformer (vocab 256, depth 2, 4 heads,
base 64) at each width. The overhead is paramlab / plain - 1 within a round (rounds rotate the
order), the median over `--rounds` rounds with its range, beside the null (a second plain copy vs
the first: what the timing reads when nothing differs). Ceiling: 0%. Target: <= 5%. With one thread
the clock is the process's CPU time (waiting for a core is not counted).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import clock_for, ratio_stats, timed_rounds, write_json
import paramlab as pl


def make(kind: str, width: int):
    """(model, loss of one fixed batch) for one model kind at one width."""
    g = torch.Generator().manual_seed(0)
    if kind == "mlp":
        model = pl.mlp(32, 10, width, depth=2, scheme="mup", base_width=64, seed=0)
        x, y = torch.randn(128, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
        return model, lambda m: F.cross_entropy(m(x), y)
    if kind == "transformer":
        model = pl.transformer(256, width, depth=2, n_heads=4, scheme="mup", base_width=64, seed=0)
        idx = torch.randint(0, 256, (4, 33), generator=g)
        return model, lambda m: F.cross_entropy(m(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    raise ValueError(f"unknown model kind {kind!r}: mlp or transformer")


def plain_optimizer(family: str, model, lr: float):
    """The plain torch optimizer of a family over model.parameters() (one group, one lr)."""
    params = list(model.parameters())
    if family == "adam":
        return [torch.optim.Adam(params, lr=lr)]
    if family == "lion":
        from paramlab.lion import Lion

        return [Lion(params, lr=lr)]
    if family == "adafactor":
        return [torch.optim.Adafactor(params, lr=lr)]
    if family == "muon":  # the standard hybrid: Muon on the hidden matrices, AdamW on everything else
        names = dict(model.named_parameters())
        hidden = [p for n, p in names.items() if p.dim() == 2 and "embed" not in n and "readout" not in n]
        ids = {id(p) for p in hidden}
        return [torch.optim.Muon(hidden, lr=lr), torch.optim.AdamW([p for p in params if id(p) not in ids], lr=lr)]
    raise ValueError(f"unknown family {family!r}")


def stepper(opts, steps: int):
    def run():
        for _ in range(steps):
            for o in opts:
                o.step()
    return run


def with_grads(model, loss):
    """The model with .grad set by one backward pass of its batch."""
    model.zero_grad(set_to_none=True)
    loss(model).backward()
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["adam", "lion", "adafactor", "muon"])
    p.add_argument("--models", nargs="+", default=["mlp", "transformer"])
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per timed call")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", type=float, default=5.0, help="target: overhead <= this many percent")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "optim_step.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock_name, clock = clock_for(args.threads)
    rows, skipped = [], {}
    for family in args.families:
        for kind in args.models:
            for width in args.widths:
                model, loss = make(kind, width)
                try:
                    ours = [pl.optimizer(with_grads(model, loss), family, lr=args.lr)]
                except (ValueError, KeyError, TypeError) as e:  # a family this paramlab does not know
                    skipped[family] = str(e).splitlines()[0][:200]
                    break
                # same weights; the same batch gives the same .grad (deepcopy does not copy a Parameter's .grad)
                plain_m, twin_m = (with_grads(copy.deepcopy(model), loss) for _ in range(2))
                assert all(torch.equal(a.grad, b.grad) for a, b in zip(model.parameters(), plain_m.parameters()))
                plain, twin = plain_optimizer(family, plain_m, args.lr), plain_optimizer(family, twin_m, args.lr)
                fa, fb, fc = stepper(ours, args.steps), stepper(plain, args.steps), stepper(twin, args.steps)
                fa(), fb(), fc()  # warm-up: optimizer state, allocator
                (ta, tb, tc), _ = timed_rounds([fa, fb, fc], args.rounds, clock)
                over = {k: round((v - 1) * 100, 2) for k, v in ratio_stats(ta, tb).items()}
                null = {k: round((v - 1) * 100, 2) for k, v in ratio_stats(tc, tb).items()}
                med = lambda ts: sorted(ts)[len(ts) // 2] / args.steps  # noqa: E731
                verdict = "pass" if over["median"] <= args.target else "short"
                rows.append(dict(family=family, model=kind, width=width, steps_per_call=args.steps, rounds=args.rounds,
                                 seconds_per_step_paramlab=round(med(ta), 6), seconds_per_step_plain=round(med(tb), 6),
                                 overhead_pct=over["median"], overhead_pct_range=[over["min"], over["max"]],
                                 null_pct=null["median"], null_pct_range=[null["min"], null["max"]],
                                 param_groups=sum(len(o.param_groups) for o in ours), target_pct=args.target))
                print(f"{family:10s} {kind:12s} width {width:5d}  step {med(ta) * 1e3:7.3f} ms paramlab, "
                      f"{med(tb) * 1e3:7.3f} ms plain  overhead {over['median']:+6.2f}% ({over['min']:+.1f} to "
                      f"{over['max']:+.1f}; ceiling 0%; null {null['median']:+.2f}%)  target <= {args.target:g}%: "
                      f"{verdict}")
            if family in skipped:
                break
    for family, why in skipped.items():
        print(f"{family:10s} skipped: paramlab.optimizer does not build it here ({why})")
    write_json(args.out, dict(benchmark="optim_step", threads=args.threads, clock=clock_name, lr=args.lr,
                              results=rows, skipped=skipped))


if __name__ == "__main__":
    main()
