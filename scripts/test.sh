#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the whole test suite on CPU. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=offline WANDB_SILENT=true OMP_NUM_THREADS=1
exec .venv/bin/python -m pytest "$@"
