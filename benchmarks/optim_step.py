"""Optimizer step cost: `paramlab.optimizer(model, family)` (per-tensor learning rates from the plan) vs the
plain torch optimizer over the same parameters (one group, one lr), side by side in one process.
Prints the overhead per family, model and width and writes JSON.

    python benchmarks/optim_step.py [--families adam lion adafactor muon] [--widths 256 1024] [--threads 1]

What is timed: `opt.step()` alone, `--steps` times per call (default: as many steps as take about
`--call-seconds` on paramlab's side, read off a warm-up step, at least 1: a Muon step of the width-1024
Transformer takes seconds, an Adam step of the width-256 MLP ~0.2 ms), in up to `--rounds` (60)
rounds, as many as fit in `--row-seconds` (15 s) per row and at least `--min-rounds` (5), on fixed
gradients (one backward pass
of a batch first; every step reads the same .grad), so forward and backward, common to both sides,
do not dilute the difference. Both sides start from the same weights (deepcopies) and gradients.

    family     paramlab                                   plain
    adam       pl.optimizer(m, 'adam')                    torch.optim.Adam(m.parameters())
    lion       pl.optimizer(m, 'lion')                    paramlab.lion.Lion(m.parameters()) (torch has none)
    adafactor  pl.optimizer(m, 'adafactor')               torch.optim.Adafactor(m.parameters())
    muon       pl.optimizer(m, 'muon') (the hybrid)       torch.optim.Muon(hidden 2-D matrices) + AdamW(rest)

A third side, `grouped`: the plain torch optimizer built with paramlab's own parameter groups (the same
tensors in the same groups, each group's effective lr written in, no step hooks). muP gives the input,
hidden and output layers different learning rates, so no muP optimizer built on torch's can use fewer
groups; grouped / plain - 1 is the cost of those groups alone (torch's fixed cost per group), the floor
of paramlab's overhead, timed in the same rounds (`floor_pct`; the Muon hybrid has none: its two parts
differ from the plain partition). paramlab / grouped - 1 is what paramlab adds on top (`beyond_floor_pct`).
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


def grouped_twin(ours, model, twin_model):
    """The plain torch optimizer of `ours`'s class over `twin_model` with `ours`'s param groups (tensors
    matched by position in `model.parameters()`), each group's effective lr (lr x lr_mult) written in and no
    paramlab step hooks; None for a combined optimizer (the Muon hybrid)."""
    if len(ours) != 1 or not isinstance(ours[0], torch.optim.Optimizer) or hasattr(ours[0], "parts"):
        return None
    opt = ours[0]
    pos = {id(q): i for i, q in enumerate(model.parameters())}
    twin = list(twin_model.parameters())
    groups = [{**{k: v for k, v in g.items() if k not in ("params", "lr_mult")},
               "params": [twin[pos[id(q)]] for q in g["params"]], "lr": g["lr"] * g.get("lr_mult", 1.0)}
              for g in opt.param_groups]
    return [type(opt)(groups, lr=opt.defaults["lr"])]


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
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps per timed call (default: about --call-seconds of paramlab's steps)")
    p.add_argument("--call-seconds", type=float, default=0.05, help="the default call's length")
    p.add_argument("--rounds", type=int, default=60,
                   help="rounds per row, fewer (at least --min-rounds) where a row would take over --row-seconds")
    p.add_argument("--min-rounds", type=int, default=5)
    p.add_argument("--row-seconds", type=float, default=15.0)
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
                plain_m, twin_m, grouped_m = (with_grads(copy.deepcopy(model), loss) for _ in range(3))
                assert all(torch.equal(a.grad, b.grad) for a, b in zip(model.parameters(), plain_m.parameters()))
                plain, twin = plain_optimizer(family, plain_m, args.lr), plain_optimizer(family, twin_m, args.lr)
                grouped = grouped_twin(ours, model, grouped_m)
                sides = (ours, plain, twin) + ((grouped,) if grouped else ())
                for o in sides:
                    stepper(o, 1)()  # warm-up: optimizer state, allocator
                t0 = clock()
                stepper(ours, 1)()
                t_step = max(clock() - t0, 1e-6)
                steps = args.steps or max(1, round(args.call_seconds / t_step))
                # per-call noise on this machine is +-10-40%, so many rounds where calls are short (the median's
                # error shrinks as 1/sqrt(rounds)); a Muon step of the width-1024 Transformer takes seconds: fewer
                # rounds there, never under min-rounds
                rounds = min(args.rounds, max(args.min_rounds, int(args.row_seconds / (len(sides) * steps * t_step))))
                fns = [stepper(o, steps) for o in sides]
                (ta, tb, tc, *tg), _ = timed_rounds(fns, rounds, clock)
                pct = lambda num, den: {k: round((v - 1) * 100, 2) for k, v in ratio_stats(num, den).items()}  # noqa: E731
                over, null = pct(ta, tb), pct(tc, tb)
                floor = pct(tg[0], tb) if tg else None
                beyond = pct(ta, tg[0]) if tg else None
                med = lambda ts: sorted(ts)[len(ts) // 2] / steps  # noqa: E731
                verdict = "pass" if over["median"] <= args.target else "short"
                rows.append(dict(family=family, model=kind, width=width, steps_per_call=steps, rounds=rounds,
                                 seconds_per_step_paramlab=round(med(ta), 6), seconds_per_step_plain=round(med(tb), 6),
                                 overhead_pct=over["median"], overhead_pct_range=[over["min"], over["max"]],
                                 null_pct=null["median"], null_pct_range=[null["min"], null["max"]],
                                 floor_pct=floor and floor["median"], floor_pct_range=floor and [floor["min"], floor["max"]],
                                 beyond_floor_pct=beyond and beyond["median"],
                                 beyond_floor_pct_range=beyond and [beyond["min"], beyond["max"]],
                                 param_groups=sum(len(o.param_groups) for o in ours), target_pct=args.target))
                print(f"{family:10s} {kind:12s} width {width:5d}  step {med(ta) * 1e3:7.3f} ms paramlab, "
                      f"{med(tb) * 1e3:7.3f} ms plain  overhead {over['median']:+6.2f}% ({over['min']:+.1f} to "
                      f"{over['max']:+.1f}; ceiling 0%; null {null['median']:+.2f}%)  target <= {args.target:g}%: "
                      f"{verdict}")
                if floor:
                    print(f"{'':10s} {'':12s} {'':11s} plain torch with paramlab's {rows[-1]['param_groups']} groups (the "
                          f"floor): {floor['median']:+6.2f}% ({floor['min']:+.1f} to {floor['max']:+.1f}); paramlab beyond "
                          f"it {beyond['median']:+6.2f}% ({beyond['min']:+.1f} to {beyond['max']:+.1f})")
            if family in skipped:
                break
    for family, why in skipped.items():
        print(f"{family:10s} skipped: paramlab.optimizer does not build it here ({why})")
    write_json(args.out, dict(benchmark="optim_step", threads=args.threads, clock=clock_name, lr=args.lr,
                              results=rows, skipped=skipped))


if __name__ == "__main__":
    main()
