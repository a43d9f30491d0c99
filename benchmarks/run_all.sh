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
        print(f"  {label:48s} {'missing':>9s}  target >= {target:g}{unit}")
        return
    ok = "ok" if value >= target else "BELOW TARGET"
    print(f"  {label:48s} {value:8.2f}{unit}  target >= {target:g}{unit}  {ok}")


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
            print(f"  {label:48s} {r['speedup']:8.2f}x  (no target)")

c = load("coord_vs_mup")
line("coord check: mup time / paramlab time", c and c["speedup_vs_mup"], 2.0)
if c is not None:
    print(f"  {'coord check: l1 values agree with mup':48s} {str(c['values_agree']):>8s}")

n = load("ntk_vs_loop")
for method in ("jacobian", "ntvp", "layerwise"):
    line(f"empirical NTK ({method}) vs per-example loop", n and n["speedup_vs_loop"][method], 10.0)

t = load("train_flops")
line(f"training FLOP/s / matmul FLOP/s (width {t['width'] if t else 2048})", t and t["ratio"] * 100, 50.0, "%")

loads = {k: v.get("load_avg") for k, v in (("ensemble", e), ("coord", c), ("ntk", n), ("flops", t)) if v}
print(f"  load averages at the end of each run: {loads}")
EOF

if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
