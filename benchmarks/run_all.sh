#!/usr/bin/env bash
# Run the four benchmarks one after another (default arguments), then print a summary of the ratios
# from their JSON files in benchmarks/results/ against the issue's targets.
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

for name in ensemble_vs_sequential coord_vs_mup ntk_vs_loop train_flops; do
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


def load(name):
    """The JSON this run wrote (None if missing, or older than this run: the benchmark failed)."""
    p = res / f"{name}.json"
    if not p.exists() or p.stat().st_mtime < t_start - 1:
        return None
    return json.loads(p.read_text())


def line(label, value, target, unit="x"):
    if value is None:
        print(f"  {label:58s} {'missing':>9s}  target >= {target:g}{unit}")
        return
    ok = "ok" if value >= target else "BELOW TARGET"
    print(f"  {label:58s} {value:8.2f}{unit}  target >= {target:g}{unit}  {ok}")


def ceiling(value, what, who="any implementation"):
    print(f"  {'':4s}{'ceiling from ' + what:54s} {value:8.2f}x  (the most {who} could reach here)")


e = load("ensemble_vs_sequential")
if e is None:
    line("ensemble vs sequential", None, 2.5)
else:
    for r in e["results"]:
        target = 2.5 if r["width"] in (64, 256) else 0.0
        label = f"ensemble vs sequential, K={r['k']}, width {r['width']}"
        if target:
            line(label, r["speedup"], target)
        else:
            print(f"  {label:58s} {r['speedup']:8.2f}x  (no target)")
        ceiling(r["max_speedup"], "the GEMMs alone")

c = load("coord_vs_mup")
line("coord check: mup time / paramlab time", c and c["speedup_vs_mup"], 2.0)
if c is not None:
    ceiling(c["max_speedup_vs_mup"], "building and training alone")
    print(f"  {'coord check: l1 values agree with mup':58s} {str(c['values_agree']):>8s}")

n = load("ntk_vs_loop")
for arch, r in (n["results"].items() if n else [("mlp", None)]):
    for method in ("jacobian", "ntvp", "layerwise"):
        line(f"empirical NTK {arch} ({method}) vs per-example loop", r and r["speedup_vs_loop"][method], 10.0)
    if r is not None:
        ceiling(r["max_speedup_gram_methods"], "the J J^T GEMM alone (half)", "methods that form J J^T")

t = load("train_flops")
line(f"training FLOP/s / matmul FLOP/s (width {t['width'] if t else 2048})", t and t["ratio"] * 100, 50.0, "%")

loads = {k: v.get("load_avg") for k, v in (("ensemble", e), ("coord", c), ("ntk", n), ("flops", t)) if v}
print(f"  load averages at the end of each run: {loads}")
EOF

if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
