#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the main job: a small end-to-end demo with its plot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true
exec .venv/bin/python -m paramlab demo "$@"
