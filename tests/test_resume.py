"""Resumed sweeps are bit-identical to uninterrupted ones: summaries compared byte for byte.

Stacked ensembles are float32 here on purpose (the sweep default): a run computed in another stack, or
alone, differs in the last bits, so only recomputing it in its original stack passes these checks.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from paramlab.sweep import run_sweep

FIXED = {"task": "multi_index", "task_args": {"n_train": 256, "n_test": 64, "d": 8, "k": 2}, "steps": 40,
         "batch_size": 32, "optimizer": "adam"}


def spec(root, name="g", lrs=(1e-2, 3e-3), steps=40, seeds=4, widths=(32,)):
    return {"experiment": "r", "name": name, "root": str(root), "wandb": False, "ensemble": "always",
            "max_ensemble": 4, "grid": {"width": list(widths), "lr": list(lrs), "seed": list(range(seeds))},
            "fixed": {**FIXED, "steps": steps}}


def summaries(group: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(group.glob("*/summary.json"))}


def test_a_point_rerun_after_deletion_reproduces_its_stack(tmp_path):
    rep = run_sweep(spec(tmp_path), progress=False, threads=1)
    before = summaries(rep.path)
    assert len(before) == 8 and rep.finished == 8
    meta = json.loads((rep.runs[5]["path"] / "meta.json").read_text())["sweep"]
    assert meta["ensemble"] == 4 and len(meta["stack"]) == 4 and meta["threads"] == 1
    assert rep.runs[5]["name"] in meta["stack"]
    victim = rep.runs[5]["path"]
    for f in victim.iterdir():
        f.unlink()
    victim.rmdir()
    again = run_sweep(spec(tmp_path), progress=False, threads=1)
    assert again.skipped == 7 and again.finished == 1  # only the deleted run is written again
    assert summaries(rep.path) == before  # byte for byte
    # negative control: the same point with its lr 0.1% off is not byte-equal (the check can fail)
    off = run_sweep(spec(tmp_path, name="off", lrs=(1e-2, 3e-3 * 1.001)), progress=False, threads=1)
    changed = [n for n, b in summaries(off.path).items() if "lr0.003" in n]
    assert changed and all(b != before.get(n) for n, b in summaries(off.path).items() if "lr0.003" in n)
    assert [json.loads(b)["train/loss"] for n, b in sorted(summaries(off.path).items()) if "lr0.01-" in n] == \
        [json.loads(b)["train/loss"] for n, b in sorted(before.items()) if "lr0.01-" in n]


def test_killed_stacked_sweep_resumes_to_the_same_bytes(tmp_path):
    s = spec(tmp_path / "killed", steps=300, widths=(32, 48))  # 16 runs in 4 stacks of 4
    code = ("import json, sys, torch; torch.set_num_threads(1); from paramlab.sweep import run_sweep; "
            "run_sweep(json.loads(sys.argv[1]), progress=False, threads=1)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(s)], env=env)
    group = tmp_path / "killed" / "r" / "g"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = [m for m in group.glob("*/meta.json") if json.loads(m.read_text() or "{}").get("status") == "finished"]
            if done:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(60)
    complete = [m for m in group.glob("*/meta.json") if json.loads(m.read_text()).get("status") == "finished"]
    assert 0 < len(complete) < 16, f"the kill came at {len(complete)} of 16 runs: it must cut the sweep mid-way"
    resumed = run_sweep(s, progress=False, threads=1)
    assert resumed.skipped == len(complete) and resumed.ok
    whole = run_sweep({**s, "root": str(tmp_path / "whole")}, progress=False, threads=1)
    a, b = summaries(resumed.path), summaries(whole.path)
    assert len(a) == 16 and a == b  # byte for byte
