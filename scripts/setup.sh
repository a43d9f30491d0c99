#!/usr/bin/env bash
# Create .venv and install paramlab with everything its demo and tests need. Idempotent and quick
# when nothing changed. torch is pinned to the CPU wheel (constraints.txt) so that `torch>=2.2`
# never pulls a CUDA build; `mup` goes in with --no-deps (its PyPI release drags torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.setup-stamp
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha1sum | cut -c1-40)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
export PIP_CONSTRAINT="$PWD/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -m pip install -q --no-deps "mup==1.0.0"
.venv/bin/python -c "import torch, mup, paramlab; print('paramlab', paramlab.__version__, '| torch', torch.__version__)"
echo "$want" > "$stamp"
