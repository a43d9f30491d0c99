"""Hook overhead: one Adam training step of a parameterized model vs the same module with paramlab's
multiplier hooks removed, side by side in one process. Prints the overhead per model and width and
writes JSON.

    python benchmarks/hook_overhead.py [--widths 64 128 256 512 1024] [--models mlp transformer] [--threads 1]

Both sides are the same weights (a deepcopy, then `paramlab.multipliers.remove` on the copy), the
same batch and the same optimizer (`paramlab.optimizer(model, 'adam')`, per-tensor lr), so the only
difference is the multipliers' work in forward and backward: what the scheme costs. (The hooks-off
copy computes a different function, of course; only time is compared.)

    mlp          paramlab.mlp(32, 10, width, depth 2, muP, base 64), batch 128: the readout's multiplier
    transformer  paramlab.transformer(vocab 256, d_model = width, depth 2, 4 heads, muP, base 64),
                 batch 4 x 32 tokens: the readout's multiplier (the attention scale is a float in the
                 attention, not a hook, and costs the same with or without it)

Timing: after a warm-up, `--rounds` rounds of (hooked, plain, plain's twin), each `--steps` steps
(forward, backward, Adam step), in an order that rotates from round to round; the overhead is
hooked / plain - 1 within a round, reported as the median over rounds with its range. The twin is a
second copy of the plain model: twin / plain - 1 is the null (what the timing alone reads when there
is no difference), printed beside the overhead. At width 64 = the base width muP has no multiplier,
so there hooked vs plain is a second null. The ceiling is 0% (no multiplier work at all); the
target is <= 3% at width >= 256. With one thread the clock is the process's CPU time (waiting for a
core is not counted). Under load, per-round noise can exceed the effect: look at the range and the
null. So the hooks' cost is also measured on its own ('isolated'): forward and backward of the
hooked modules alone (the readout, on its input from one forward of the model), hooked vs plain, 200
calls per round in the same rotating rounds; (hooked - plain) per call / the plain model's whole step
is the share of the step the hooks cost, without the rest of the step's noise (cache effects of the
extra tensors on the rest of the step are not in it).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import clock_for, ratio_stats, timed_rounds, write_json
import paramlab as pl
from paramlab import multipliers


def make(kind: str, width: int, seed: int = 0):
    """(model, batch, loss) for one model kind at one width."""
    g = torch.Generator().manual_seed(seed)
    if kind == "mlp":
        model = pl.mlp(32, 10, width, depth=2, scheme="mup", base_width=64, seed=seed)
        x, y = torch.randn(128, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
        return model, x, lambda out: F.cross_entropy(out, y)
    if kind == "transformer":
        model = pl.transformer(256, width, depth=2, n_heads=4, scheme="mup", base_width=64, seed=seed)
        idx = torch.randint(0, 256, (4, 33), generator=g)
        x, y = idx[:, :-1], idx[:, 1:]
        return model, x, lambda out: F.cross_entropy(out.flatten(0, 1), y.flatten())
    raise ValueError(f"unknown model kind {kind!r}: mlp or transformer")


def hooks_of(model) -> list[str]:
    """Names and types of the multiplier hooks on the model (what the hooked side pays for)."""
    out = []
    for name, mod in model.named_modules():
        for h in list(mod._forward_pre_hooks.values()) + list(mod._forward_hooks.values()):
            if isinstance(h, multipliers.HOOK_TYPES):
                out.append(f"{name or '<root>'}: {type(h).__name__}")
    return out


def isolated(hooked, plain, x, clock, rounds: int, reps: int = 200):
    """Seconds per call, (hooked, plain), of forward + backward of the hooked modules alone (their own
    inputs from one forward of the model, a fixed output gradient), timed in rounds: the hooks' cost
    without the rest of the step, so that per-round noise of a whole step does not swamp it."""
    names = sorted({h.split(":")[0] for h in hooks_of(hooked)})
    if not names:
        return 0.0, 0.0
    inputs, mods = {}, dict(hooked.named_modules())
    handles = [mods[n].register_forward_pre_hook(lambda m, a, n=n: inputs.setdefault(n, a[0].detach()), prepend=True)
               for n in names]
    with torch.no_grad():
        hooked(x)
    for h in handles:
        h.remove()

    def call(model):
        ms = dict(model.named_modules())
        xs = {n: inputs[n].clone().requires_grad_() for n in names}
        gs = {n: torch.randn_like(ms[n](xs[n])) for n in names}

        def run():
            for _ in range(reps):
                for n in names:
                    ms[n](xs[n]).backward(gs[n])
        return run

    fa, fb = call(hooked), call(plain)
    fa(), fb()
    (ta, tb), _ = timed_rounds([fa, fb], rounds, clock)
    return sorted(ta)[len(ta) // 2] / reps, sorted(tb)[len(tb) // 2] / reps


def stepper(model, x, loss, steps: int):
    opt = pl.optimizer(model, "adam", lr=1e-3)

    def run():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss(model(x)).backward()
            opt.step()

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--models", nargs="+", default=["mlp", "transformer"])
    p.add_argument("--steps", type=int, default=None, help="steps per timed call (default: ~0.1 s of work)")
    p.add_argument("--rounds", type=int, default=41,
                   help="rounds (per-call noise here is +-10-40%%: the median's error shrinks as 1/sqrt(rounds))")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", type=float, default=3.0, help="target: overhead <= this many percent ...")
    p.add_argument("--target-min-width", type=int, default=256, help="... at widths >= this")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "hook_overhead.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock_name, clock = clock_for(args.threads)
    rows = []
    for kind in args.models:
        for width in args.widths:
            hooked, x, loss = make(kind, width)
            plain = copy.deepcopy(hooked)
            multipliers.remove(plain)
            twin = copy.deepcopy(plain)
            assert not multipliers.has_hooks(plain)
            hooks = hooks_of(hooked)
            steps = args.steps
            if steps is None:  # calibrate: about 0.1 s per timed call
                warm = stepper(copy.deepcopy(plain), x, loss, 1)
                warm()
                t, _ = timed_rounds([warm], 2, clock)
                steps = max(1, min(50, round(0.1 / min(t[0]))))
            fa, fb, fc = stepper(hooked, x, loss, steps), stepper(plain, x, loss, steps), stepper(twin, x, loss, steps)
            fa(), fb(), fc()  # warm-up: optimizer state, allocator
            (ta, tb, tc), _ = timed_rounds([fa, fb, fc], args.rounds, clock)
            over = {k: round((v - 1) * 100, 2) for k, v in ratio_stats(ta, tb).items()}
            null = {k: round((v - 1) * 100, 2) for k, v in ratio_stats(tc, tb).items()}
            iso_h, iso_p = isolated(hooked, plain, x, clock, args.rounds)
            step_plain = sorted(tb)[len(tb) // 2] / steps
            iso_pct = round((iso_h - iso_p) / step_plain * 100, 2)
            target = width >= args.target_min_width
            verdict = ("pass" if over["median"] <= args.target else "short") if target else ""
            rows.append(dict(model=kind, width=width, steps_per_call=steps, rounds=args.rounds,
                             seconds_per_step_hooked=round(sorted(ta)[len(ta) // 2] / steps, 6),
                             seconds_per_step_plain=round(sorted(tb)[len(tb) // 2] / steps, 6),
                             overhead_pct=over["median"], overhead_pct_range=[over["min"], over["max"]],
                             null_pct=null["median"], null_pct_range=[null["min"], null["max"]],
                             isolated_pct=iso_pct, isolated_seconds={"hooked": iso_h, "plain": iso_p},
                             target_pct=args.target if target else None, hooks=hooks))
            print(f"{kind:12s} width {width:5d}  step {sorted(ta)[len(ta) // 2] / steps * 1e3:8.2f} ms hooked, "
                  f"{sorted(tb)[len(tb) // 2] / steps * 1e3:8.2f} ms plain  overhead {over['median']:+6.2f}% "
                  f"({over['min']:+.1f} to {over['max']:+.1f}; ceiling 0%; null {null['median']:+.2f}%; "
                  f"isolated {iso_pct:+.2f}%)"
                  + (f"  target <= {args.target:g}%: {verdict}" if target else "") + f"  hooks: {hooks}")
    write_json(args.out, dict(benchmark="hook_overhead", threads=args.threads, clock=clock_name, optimizer="adam", results=rows))


if __name__ == "__main__":
    main()
