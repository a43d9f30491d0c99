"""benchmarks/device_check.py, the one script a session with a lent GPU runs, dry-run on the CPU at
tiny sizes: every check runs and passes, and the timing JSON files are written."""

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_device_check_dry_run_on_cpu(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import device_check

    assert device_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert set(report["checks"]) == set(device_check.CHECKS)
    assert all(c["ok"] for c in report["checks"].values()), report["checks"]
    for name in ("ensemble_vs_sequential", "train_flops_fp32", "train_flops_bf16"):
        assert json.loads((tmp_path / f"{name}.json").read_text())["device"] == "cpu"
    sys.modules.pop("device_check", None)
