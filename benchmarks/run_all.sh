#!/usr/bin/env bash
# Run the seven benchmarks one after another (default arguments), then print a summary from their JSON
# files in benchmarks/results/: each target with its measured value, its ceiling and pass / short.
#
#     bash benchmarks/run_all.sh            # from the repository root (or anywhere)
#     PYTHON=/path/to/python bash benchmarks/run_all.sh
#
# Run it on a quiet machine: other jobs inflate both sides of every comparison, not always equally.
# A benchmark that fails is reported and the others still run; the exit status is 1 if any failed.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
RESULTS=benchmarks/results
failed=()
t_start=$(date +%s)

for name in ensemble_vs_sequential stacked_transformer coord_vs_mup ntk_vs_loop hook_overhead optim_step train_flops; do
    echo "=== $name ==="
    start=$(date +%s)
    if ! "$PY" "benchmarks/$name.py"; then
        echo "!!! $name failed"
        failed+=("$name")
    fi
    echo "--- $name: $(( $(date +%s) - start )) s"
    echo
done

echo "=== summary ==="
"$PY" - "$RESULTS" "$t_start" <<'EOF'
import json
import sys
from pathlib import Path

res, t_start = Path(sys.argv[1]), float(sys.argv[2])
verdicts = []


def load(name):
    """The JSON this run wrote (None if missing, or older than this run: the benchmark failed)."""
    p = res / f"{name}.json"
    if not p.exists() or p.stat().st_mtime < t_start - 1:
        return None
    return json.loads(p.read_text())


def row(label, value, target, ok, ceiling=None, unit="x", spread=None):
    """One target: measured value (median over rounds, range), ceiling, target, pass / short."""
    if value is None:
        print(f"  {label:56s} {'missing':>8s}   target {target}")
        verdicts.append(False)
        return
    rng = f"({spread[0]:.2f} to {spread[1]:.2f})" if spread else ""
    ceil = f"ceiling {ceiling:6.2f}{unit}" if ceiling is not None else ""
    print(f"  {label:56s} {value:7.2f}{unit} {rng:20s} {ceil:16s} target {target:22s} {'pass' if ok else 'short'}")
    verdicts.append(ok)


def fraction_row(label, value, fraction, target_fraction, ceiling, spread, what):
    """A target stated as a fraction of the measured ceiling; `what` names the ceiling."""
    row(label, value, f">= {target_fraction:.0%} of ceiling", fraction >= target_fraction, ceiling, spread=spread)
    print(f"  {'':4s}= {fraction:.0%} of the ceiling ({what})")


def info(label, value, ceiling=None, unit="x"):
    ceil = f"ceiling {ceiling:6.2f}{unit}" if ceiling is not None else ""
    print(f"  {label:56s} {value:7.2f}{unit} {'':20s} {ceil:16s} (no target)")


e = load("ensemble_vs_sequential")
for r in (e or {}).get("results", []):
    label = f"ensemble vs sequential, K={r['k']}, width {r['width']}"
    sp, ceil, spread = r["speedup"], r["max_speedup"], r.get("speedup_range")
    if r["width"] == 64:
        row(label, sp, ">= 2.5x", sp >= 2.5, ceil, spread=spread)
    elif r.get("target_fraction"):
        fraction_row(label, sp, r["fraction_of_ceiling"], r["target_fraction"], ceil, spread,
                     "sequential / the GEMMs alone")
    else:
        info(label, sp, ceil)
if e is None:
    row("ensemble vs sequential", None, ">= 2/3 of ceiling (width 256)", False)

s = load("stacked_transformer")
for r in (s or {}).get("results", []):
    label = f"stacked LMs vs sequential, K={r['k']}, d_model {r['width']}"
    fraction_row(label, r["speedup"]["stacked"], r["fraction_of_big_batch"]["stacked"], 2 / 3, r["big_batch_ceiling"],
                 r["speedup_range"]["stacked"], "one model on the K batches at once (big-batch)")
    info(f"  (explicit attention: {r['fraction_of_big_batch']['stacked-explicit']:.0%} of big-batch)",
         r["speedup"]["stacked-explicit"], r["big_batch_ceiling"])
if s is None:
    row("stacked LMs", None, ">= 2/3 of big-batch (d_model 32, 64)", False)

c = load("coord_vs_mup")
row("coord check: mup time / paramlab time", c and c["speedup_vs_mup"], ">= 1x, values agree",
    bool(c) and c["speedup_vs_mup"] >= 1.0 and c["values_agree"], c and c["max_speedup_vs_mup"],
    spread=c and c.get("speedup_range"))
if c and c.get("speedup_vs_mup_default") is not None:
    lim = c.get("default_target", 1.5)
    row("coord check, each side's defaults: mup / paramlab", c["speedup_vs_mup_default"], f">= 1/{lim:g}, values agree",
        c["speedup_vs_mup_default"] >= 1 / lim and c["default_values_agree"], c["max_speedup_vs_mup"],
        spread=c.get("speedup_default_range"))

n = load("ntk_vs_loop")
for arch, r in (n or {}).get("results", {}).items():
    ceil = r["max_speedup_gram_methods"]
    for m in ("jacobian", "ntvp", "layerwise"):
        label = f"eNTK {arch} ({m}) vs per-example loop"
        sp, spread = r["speedup_vs_loop"][m], r.get("speedup_range", {}).get(m)
        if arch == "mlp" and m == "layerwise":
            row(label, sp, ">= 10x", sp >= 10.0, ceil, spread=spread)
        elif arch == "cnn" and m == "layerwise" and r.get("target_fraction"):
            fraction_row(label, sp, r["fraction_of_ceiling"][m], r["target_fraction"], ceil, spread,
                         "loop / half the J J^T GEMM")
            if r.get("seconds_gram_triangle") is not None:
                tri, budget = r["seconds_gram_triangle"], r["seconds_target_budget"]
                print(f"  {'':4s}  paramlab's Gram alone {tri:.3f} s ({r['gram_triangle_share_of_layerwise']:.0%} of the "
                      f"method's time) against the target's budget {budget:.3f} s: "
                      + ("the Gram alone is over it" if tri > budget else f"{budget - tri:.3f} s left for the rest"))
        else:
            info(label, sp, ceil)
if n is None:
    row("eNTK", None, ">= 2/3 of ceiling (CNN layerwise)", False)

h = load("hook_overhead")
for r in (h or {}).get("results", []):
    iso = f", isolated {r['isolated_pct']:+.1f}%" if r.get("isolated_pct") is not None else ""
    label = f"hook overhead, {r['model']} width {r['width']} (null {r['null_pct']:+.1f}%{iso})"
    if r.get("target_pct") is not None:
        row(label, r["overhead_pct"], f"<= {r['target_pct']:g}%", r["overhead_pct"] <= r["target_pct"], 0.0, "%",
            spread=r["overhead_pct_range"])
    else:
        info(label, r["overhead_pct"], 0.0, "%")
if h is None:
    row("hook overhead", None, "<= 3% at width >= 256", False)

o = load("optim_step")
for r in (o or {}).get("results", []):
    label = f"optimizer step, {r['family']} {r['model']} width {r['width']} (null {r['null_pct']:+.1f}%)"
    row(label, r["overhead_pct"], f"<= {r['target_pct']:g}%", r["overhead_pct"] <= r["target_pct"], 0.0, "%",
        spread=r["overhead_pct_range"])
    if r.get("floor_pct") is not None:
        print(f"  {'':4s}  floor (plain torch with paramlab's {r['param_groups']} groups) {r['floor_pct']:+.1f}%; "
              f"paramlab beyond it {r['beyond_floor_pct']:+.1f}%")
for fam, why in (o or {}).get("skipped", {}).items():
    print(f"  optimizer step, {fam}: skipped ({why})")
if o is None:
    row("optimizer step", None, "<= 5%", False)

t = load("train_flops")
row(f"training FLOP/s / matmul FLOP/s (width {t['width'] if t else 2048})", t and t["ratio"] * 100, ">= 50%",
    bool(t) and t["ratio"] >= 0.5, 100.0 if t else None, "%")

loads = {k: v.get("load_avg") for k, v in (("ensemble", e), ("stacked LMs", s), ("coord", c), ("ntk", n), ("hooks", h), ("optim", o),
                                          ("flops", t)) if v}
print(f"  {sum(verdicts)} of {len(verdicts)} targets met; load averages at the end of each run: {loads}")
EOF

if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
