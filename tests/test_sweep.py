import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paramlab import records, tracking
from paramlab.runners import SpecError, register_runner
from paramlab.spec import load_spec
from paramlab.io import read_json
from paramlab.store import run_dir_name
from paramlab.sweep import run_sweep

SMALL = {"task": "multi_index", "task_args": {"n_train": 256, "n_test": 128, "d": 8, "k": 2}, "steps": 20,
         "batch_size": 64, "optimizer": "sgd", "lr": 0.05}


def complete(path: Path) -> bool:
    meta = read_json(path / "meta.json")
    return isinstance(meta, dict) and meta.get("status") in ("finished", "diverged")


def files(run_dir: Path) -> dict:
    """Every file of a run folder: bytes, or the target of a symlink (wandb links its shared service
    log, outside the run, into each run's logs/)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(run_dir):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            key = p.relative_to(run_dir).as_posix()
            if p.is_symlink():
                out[key] = ("link", os.readlink(p))
            elif p.is_file():
                out[key] = p.read_bytes()
    return out


# -- resume after SIGKILL --------------------------------------------------------------------------


KILL_SPEC = """\
experiment: kill
name: kill
grid:
  scheme: [sp, mup]
  lr: [0.02, 0.05]
  seed: [0, 1, 2]
fixed:
  width: 64
  steps: 150
  batch_size: 32
  task_args: {n_train: 256, n_test: 128, d: 8, k: 2}
ensemble: never
"""


def test_sigkill_mid_sweep_then_rerun_finishes_without_duplicates(tmp_path):
    spec = tmp_path / "kill.yaml"
    spec.write_text(KILL_SPEC)
    root = tmp_path / "runs"
    cmd = [sys.executable, "-m", "paramlab", "sweep", str(spec), "--root", str(root), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("PARAMLAB_WANDB", None)
    group = root / "kill" / "kill"
    s = load_spec(spec)
    points = s.points()
    names = [run_dir_name(c, s.varying()) for c in points]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 45
        while time.time() < deadline:
            if group.exists() and sum(complete(group / n) for n in names) >= 3:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # helpers it started (wandb's service), if any are left
        except ProcessLookupError:
            pass
    done = [n for n in names if complete(group / n)]
    assert 3 <= len(done) < len(names), f"{len(done)} of {len(names)} complete at the kill"
    before = {n: files(group / n) for n in done}
    # a run cut off while being recorded: a folder with config.json, status "running"
    pending = [(n, c) for n, c in zip(names, points) if n not in done]
    if not any((group / n).exists() for n, _ in pending):
        n, c = pending[0]
        tracking.start_run(c, experiment="kill", group="kill", root=root, name=n, use_wandb=False)

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{len(names)} runs: {len(done)} already complete, {len(names) - len(done)} finished, 0 diverged, 0 failed" in out.stdout
    runs = sorted(p.name for p in group.iterdir() if p.is_dir())
    assert runs == sorted(names)  # every run exactly once: no name-1 duplicates, nothing missing
    for n, c in zip(names, points):
        assert complete(group / n) and json.loads((group / n / "config.json").read_text()) == c
        assert len(list((group / n / "wandb").glob("offline-run-*"))) == 1
    for n in done:
        assert files(group / n) == before[n], f"completed record {n} changed"
    recs = records.load_runs(group)
    assert len(recs) == len(names) and {r.meta["wandb"]["group"] for r in recs} == {"kill-kill"}


# -- diverged, failed, custom runners ----------------------------------------------------------------


def test_diverged_runs_are_recorded_and_not_retried(tmp_path):
    spec = {"experiment": "div", "name": "div", "root": str(tmp_path), "wandb": False,
            "grid": {"lr": [0.05, 50.0]}, "fixed": {**SMALL, "scheme": "sp", "width": 256, "base_width": 32, "steps": 30}}
    rep = run_sweep(spec, progress=False)
    assert (rep.finished, rep.diverged, rep.failed) == (1, 1, 0)
    div = next(r for r in rep.runs if r["config"]["lr"] == 50.0)
    assert div["status"] == "diverged" and div["summary"]["diverged"] == 1 and math.isnan(div["summary"]["train/loss"])
    rec = records.load_run(div["path"])
    assert rec.status == "diverged" and rec.history[-1]["diverged"] == 1
    before = files(div["path"])
    rep2 = run_sweep(spec, progress=False)
    assert (rep2.skipped, rep2.finished, rep2.diverged) == (2, 0, 0)
    assert files(div["path"]) == before


CALLS = []


def flaky(config):
    CALLS.append(config["x"])
    if config["x"] == 1 and not Path(config["flag"]).exists():
        raise RuntimeError("transient")
    return {"history": [{"step": s, "y": config["x"] * s} for s in range(3)], "y": config["x"] * 2,
            "label": config["label"]}


def test_custom_runner_failed_runs_are_retried_on_resume(tmp_path):
    register_runner("flaky", flaky, options={"x": 0, "flag": "", "label": "a"})
    flag = tmp_path / "flag"
    spec = {"runner": "flaky", "experiment": "c", "name": "c", "root": str(tmp_path), "wandb": False,
            "grid": {"x": [0, 1, 2]}, "fixed": {"flag": str(flag)}}
    CALLS.clear()
    rep = run_sweep(spec, progress=False)
    assert (rep.finished, rep.failed) == (2, 1) and not rep.ok
    bad = next(r for r in rep.runs if r["status"] == "failed")
    meta = json.loads((bad["path"] / "meta.json").read_text())
    assert meta["error"] == "RuntimeError: transient" and "raise RuntimeError" in meta["traceback"]
    good = next(r for r in rep.runs if r["config"]["x"] == 2)
    rec = records.load_run(good["path"])
    assert rec.config == {"x": 2, "flag": str(flag), "label": "a"}  # defaults are recorded
    assert rec.summary == {"y": 4, "label": "a", "status": "finished"} and [r["y"] for r in rec.history] == [0, 2, 4]
    flag.touch()
    CALLS.clear()
    rep = run_sweep(spec, progress=False)
    assert CALLS == [1] and (rep.skipped, rep.finished, rep.failed) == (2, 1, 0)
    assert sorted(p.name for p in (tmp_path / "c" / "c").iterdir() if p.is_dir()) == sorted(r["name"] for r in rep.runs)


def test_ensemble_auto_matches_sequential_runs(tmp_path):
    base = {"experiment": "ens", "root": str(tmp_path), "wandb": False,
            "grid": {"scheme": ["sp", "mup"], "seed": [0, 1], "lr": [0.02, 0.05]},
            "fixed": {**SMALL, "width": 64, "dtype": "float64"}}  # float64: equal arithmetic, tight bar
    a = run_sweep({**base, "name": "auto", "ensemble": "auto"}, progress=False)
    b = run_sweep({**base, "name": "never", "ensemble": "never"}, progress=False)
    metas = [json.loads((r["path"] / "meta.json").read_text())["sweep"] for r in a.runs]
    assert {m["ensemble"] for m in metas} == {8}
    for ra, rb in zip(a.runs, b.runs):
        assert ra["name"] == rb["name"]
        for k, v in rb["summary"].items():
            assert ra["summary"][k] == pytest.approx(v, rel=1e-10, abs=1e-12)
    # negative control: the same comparison against lr 0.02 -> 0.02002 (0.1%) fails for those runs
    off = run_sweep({**base, "name": "off", "ensemble": "never", "grid": {**base["grid"], "lr": [0.02 * 1.001, 0.05]}},
                    progress=False)
    for ra, ro in zip(a.runs, off.runs):
        same = all(ra["summary"][k] == pytest.approx(v, rel=1e-10, abs=1e-12) for k, v in ro["summary"].items())
        assert same == (ra["config"]["lr"] == 0.05), ra["name"]


def test_precision_and_device_options_apply_to_every_run(tmp_path):
    spec = {"experiment": "p", "name": "p", "root": str(tmp_path), "wandb": False,
            "grid": {"scheme": ["sp", "mup"], "width": [32, 1024]}, "fixed": {**SMALL, "steps": 2}}
    rep = run_sweep(spec, precision="bf16", device="cpu", progress=False)
    assert all(r["config"]["precision"] == "bf16" for r in rep.runs)
    # SP at width 1024 with SGD lr 0.05 blows up (loss ~1e5 x initial after 2 steps): diverged by the
    # paramlab.divergence rule, an outcome; every other run finishes with a finite loss
    assert rep.failed == 0 and rep.finished == 3 and [r["status"] for r in rep.runs][1] == "diverged"
    assert all(math.isfinite(r["summary"]["train/loss"]) for r in rep.runs if r["status"] == "finished")
    ens = [json.loads((r["path"] / "meta.json").read_text())["sweep"]["ensemble"] for r in rep.runs]
    assert ens == [2, 1, 2, 1]  # auto: width 32 stacked, width 1024 one by one
    with pytest.raises(SpecError, match="option 'precision'"):
        run_sweep(spec, precision="fp8", progress=False)


# -- Ray ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray, or the dev extra)")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_local_summaries(tmp_path, local_ray):
    spec = {"experiment": "ray", "root": str(tmp_path), "grid": {"scheme": ["sp", "mup"], "width": [32, 64]},
            "fixed": {**SMALL, "base_width": 32}, "ensemble": "never"}
    loc = run_sweep({**spec, "name": "local"}, progress=False)
    ray = run_sweep({**spec, "name": "ray"}, executor="ray", progress=False)
    assert ray.finished == loc.finished == 4
    assert [r["summary"] for r in ray.runs] == [r["summary"] for r in loc.runs]
    assert [r["name"] for r in ray.runs] == [r["name"] for r in loc.runs]
    recs = records.load_runs(tmp_path / "ray" / "ray")
    assert {r.meta["sweep"]["executor"] for r in recs} == {"ray"}
    assert {r.meta["wandb"]["group"] for r in recs} == {"ray-ray"} and all(r.meta["wandb"]["enabled"] for r in recs)
