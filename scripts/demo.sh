#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the main job: the transfer experiment at quick size (21 s wall,
# 20 s CPU on 2 cores, measured by benchmarks/time_experiments.py). It prints its verdicts in words, the summary table and
# where its plot and records are.
# Extra args go to the experiment, e.g. `bash scripts/demo.sh --size default`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true
exec .venv/bin/python -m paramlab run transfer --quick --no-progress "$@"
