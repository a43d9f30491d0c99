"""What every benchmark records next to its numbers, and how it writes them."""

import json
import os
import platform
from pathlib import Path

import torch


def machine() -> dict:
    """torch version, cores, platform and the load average (other jobs skew timings: look at it)."""
    return dict(torch=torch.__version__, cpu_count=os.cpu_count(), platform=platform.platform(),
                load_avg=os.getloadavg() if hasattr(os, "getloadavg") else None)


def write_json(path, out: dict) -> None:
    """Write the result (plus `machine()`) as JSON and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**out, **machine()}, indent=2) + "\n")
    print(f"wrote {path}")
