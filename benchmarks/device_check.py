"""One prepared check of paramlab on an accelerator: correctness of the device path, bf16, then the
speed benchmarks there. Made for a session that is lent a GPU, as one call:

    PYTHONPATH=. PYTHONUNBUFFERED=1 python3 benchmarks/device_check.py --device cuda --out "$OUT"

The device image has torch, numpy, einops, tqdm, pyyaml and matplotlib; paramlab runs from the
checkout (PYTHONPATH) and needs neither wandb nor mup here. About 3 minutes on one H200.

Checks (each records its numbers and ok; the exit status is 1 if any is not ok):
    mf_equals_mup               mf and mup, 20 SGD steps on the device, float32 (TF32 off): the test
                                outputs agree to 1e-4 relative (THEORY.md: the same function
                                whatever the multiplier / init / lr split)
    ensemble_equals_sequential  K = 4 MLPs stacked vs one by one on the device, Adam, float32: every
                                logged loss to 1e-5 relative
    entk_layerwise              layerwise vs Jacobian eNTK on the device, MLP and CNN, float32: 1e-4
    bf16_autocast               100 Adam steps under bf16 autocast and in float32 from the same init:
                                both finite and below their step-0 loss; the gap is reported
    coord_check_mup             a muP MLP coordinate check (zero readout) on the device passes every row
Timings (written next to the checks): ensemble_vs_sequential.py (K = 8) and train_flops.py (fp32
and bf16) with --device. --quick runs everything at tiny sizes (tests/test_device_check.py runs it
on the CPU, so the script cannot rot while no GPU is lent); its coordinate check uses widths
128-512, since at 64-256 one row sits on the tolerance edge (a known finite-size effect, README).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import ensemble_vs_sequential  # noqa: E402
import train_flops  # noqa: E402
from _common import machine  # noqa: E402

import paramlab as pl  # noqa: E402
from paramlab.data import multi_index  # noqa: E402
from paramlab.stacked import train_ensemble, train_sequential  # noqa: E402
from paramlab.train import train  # noqa: E402
from paramlab.measure.coord import coord_check  # noqa: E402
from paramlab.measure.ntk import empirical_ntk  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).double().norm() / b.double().norm().clamp_min(1e-30))


def check_mf_equals_mup(dev, q):
    task = multi_index(256, 128, d=16, k=2, seed=0).to(dev)
    outs = {}
    for s in ("mf", "mup"):
        m = pl.mlp(16, 1, 48 if q else 384, depth=3, scheme=s, base_width=32, seed=0, device=dev)  # m = 1.5 or 12
        train(m, task, optimizer="sgd", lr=0.1, steps=20, batch_size=64, seed=0)
        with torch.no_grad():
            outs[s] = m(task.x_test)
    err = rel(outs["mf"], outs["mup"])
    return dict(rel_diff=err, bound=1e-4, ok=err < 1e-4)


def check_ensemble(dev, q):
    task = multi_index(256, 128, d=16, k=2, seed=0).to(dev)
    width, lrs, seeds = (32 if q else 256), [1e-3, 2e-3, 3e-3, 4e-3], [0, 1, 2, 3]
    make = lambda: [pl.mlp(16, 1, width, depth=2, scheme="mup", base_width=32, seed=s, device=dev) for s in seeds]  # noqa: E731
    kw = dict(optimizer="adam", lr=lrs, seed=seeds, steps=20, batch_size=64, eval_every=5)
    ens, seq = train_ensemble(make(), task, device=dev, **kw), train_sequential(make(), task, **kw)
    worst = 0.0
    for a, b in zip(ens, seq):
        for ra, rb in zip(a.history, b.history):
            for k, v in rb.items():
                if isinstance(v, float) and math.isfinite(v) and k != "step":
                    worst = max(worst, abs(ra[k] - v) / max(abs(v), 1e-7))
    return dict(max_rel_diff=worst, bound=1e-5, ok=worst < 1e-5)


def check_entk(dev, q):
    g = torch.Generator().manual_seed(0)
    mlp = pl.mlp(16, 3, 64 if q else 512, depth=2, scheme="mup", base_width=32, seed=0, device=dev)
    cnn = pl.cnn(1, 3, 8 if q else 64, depth=2, dim=2, scheme="mup", base_width=8, seed=0, device=dev)
    out = {}
    for name, model, x in (("mlp", mlp, torch.randn(16, 16, generator=g)), ("cnn", cnn, torch.randn(8, 1, 8, 8, generator=g))):
        x = x.to(dev)
        out[name] = rel(empirical_ntk(model, x, method="layerwise"), empirical_ntk(model, x, method="jacobian"))
    return dict(rel_diff=out, bound=1e-4, ok=all(v < 1e-4 for v in out.values()))


def check_bf16(dev, q):
    task = multi_index(512, 128, d=16, k=2, seed=0).to(dev)
    res = {}
    for prec in ("fp32", "bf16"):
        m = pl.mlp(16, 1, 64 if q else 1024, depth=3, scheme="mup", base_width=32, seed=0, device=dev)
        r = train(m, task, optimizer="adam", lr=3e-3, steps=100, batch_size=128, seed=0, eval_every=100,
                  autocast="bf16" if prec == "bf16" else None)
        res[prec] = (r.history[0]["train/loss"], r.final["train/loss"])
    ok = all(math.isfinite(b) and b < a for a, b in res.values())
    gap = abs(res["bf16"][1] - res["fp32"][1]) / res["fp32"][1]
    return dict(loss_step0_and_last=res, final_rel_gap_bf16_vs_fp32=gap, ok=ok)


def check_coord(dev, q):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 16, generator=g), torch.randn(16, 1, generator=g)
    widths = [128, 256, 512] if q else [128, 256, 512, 1024, 2048]
    # zero readout (TP5's coord-check setting): no 1/sqrt(width) output-at-init transient at small widths
    res = coord_check(lambda w: pl.mlp(16, 1, w, depth=3, scheme="mup", base_width=64, activation="tanh",
                                       readout_zero_init=True, device=dev),
                      widths, x.to(dev), y.to(dev), optimizer="sgd", lr=0.1, steps=3, seeds=3,
                      quantities=("act", "dact"))
    fails = res.failures()
    return dict(widths=widths, failed_rows=[f"{f['name']} {f['quantity']} t={f['step']} {f['slope']:+.2f}" for f in fails],
                rows=len(res.fits), ok=not fails)


CHECKS = {"mf_equals_mup": check_mf_equals_mup, "ensemble_equals_sequential": check_ensemble,
          "entk_layerwise": check_entk, "bf16_autocast": check_bf16, "coord_check_mup": check_coord}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder for the JSON files")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a dry run of every path)")
    p.add_argument("--no-timings", action="store_true", help="the checks only")
    args = p.parse_args(argv)
    dev, out = torch.device(args.device), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = dict(device=str(dev), torch=torch.__version__)
    if dev.type == "cuda":
        info.update(name=torch.cuda.get_device_name(dev), capability=torch.cuda.get_device_capability(dev),
                    bf16=torch.cuda.is_bf16_supported())
        torch.backends.cuda.matmul.allow_tf32 = False  # the equality checks are float32 checks
        torch.backends.cudnn.allow_tf32 = False
    print("device check:", info)
    results, all_ok = {}, True
    for name, fn in CHECKS.items():
        t0 = time.perf_counter()
        try:
            r = fn(dev, args.quick)
        except Exception as e:  # a check that crashes is a failed check, with its traceback
            r = dict(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        r["seconds"] = round(time.perf_counter() - t0, 3)
        results[name] = r
        all_ok &= bool(r["ok"])
        print(f"  {name:28s} {'ok' if r['ok'] else 'FAILED'}  " + json.dumps({k: v for k, v in r.items() if k not in ("ok", "traceback")}, default=str))
    (out / "device_check.json").write_text(json.dumps({**info, "checks": results, **machine()}, indent=2, default=str) + "\n")
    print(f"wrote {out / 'device_check.json'}")
    if not args.no_timings:
        q = ["--widths", "32", "64", "--steps", "5", "--repeats", "1"] if args.quick else []
        ensemble_vs_sequential.main(["--device", str(dev), "--out", str(out / "ensemble_vs_sequential.json")] + q)
        for prec in ("fp32", "bf16"):
            tq = ["--width", "128", "--batch", "32", "--steps", "2", "4", "--repeats", "1"] if args.quick else []
            train_flops.main(["--device", str(dev), "--precision", prec, "--out", str(out / f"train_flops_{prec}.json")] + tq)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
