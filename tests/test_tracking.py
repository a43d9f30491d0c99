"""paramlab.tracking (one Run) and its wandb sink: local store round trip, wandb offline folders,
failures, readers.

wandb runs offline only, with every wandb folder inside pytest's tmp dirs and no API key; a wandb
offline init costs ~0.4 s for the first run in a process (it starts wandb-core) and ~0.05 s after.
"""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

import pytest
import torch

import paramlab
from paramlab import store, wandb_sink
from paramlab.records import find_wandb_offline_runs, load_runs
from paramlab.tracking import start_run


@pytest.fixture(autouse=True)
def _env(monkeypatch, wandb_home):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("PARAMLAB_WANDB", raising=False)
    monkeypatch.delenv("PARAMLAB_GROUP", raising=False)
    monkeypatch.setattr(store, "_DEFAULT_GROUPS", {})  # a fresh process: no default group made yet
    monkeypatch.setattr(wandb_sink, "_WARNED", set())  # and no warning given yet


@dataclasses.dataclass(frozen=True)
class _Opt:
    name: str = "adam"
    betas: tuple = (0.9, 0.99)


CONFIG = {
    "scheme": "mup",
    "width": 256,
    "base_width": 64,
    "lr": np.float64(0.01),
    "seed": 0,
    "dtype": torch.float32,
    "data_dir": Path("/data/x"),
    "optim": _Opt(),
    "widths": (64, 128),
}
CONFIG_JSON = {
    "scheme": "mup", "width": 256, "base_width": 64, "lr": 0.01, "seed": 0,
    "dtype": "torch.float32", "data_dir": "/data/x",
    "optim": {"name": "adam", "betas": [0.9, 0.99]}, "widths": [64, 128],
}


def _png(path):
    from PIL import Image

    Image.new("RGB", (4, 4), (255, 0, 0)).save(path)
    return path


def test_run_roundtrip_local_store_and_offline_wandb(tmp_path, monkeypatch):
    # WANDB_MODE unset: paramlab must still go offline (never online by default)
    monkeypatch.delenv("WANDB_MODE")
    root = tmp_path / "runs"
    with start_run(CONFIG, experiment="coord_check", group="g1", root=root, tags=["t1"]) as run:
        assert run.name == "mup-w256-lr0.01-s0"
        assert run.wandb_run is not None
        for t in range(3):
            run.log({"train/loss": 1.0 / (t + 1), "feat/h2/rel_change": torch.tensor(0.5 * t)}, step=t)
        run.log_table("coord/table", ["width", "size"], [(64, 1.0), (128, np.float32(2.0))])
        run.log_image("plots/coord", _png(tmp_path / "img.png"))
        run.summary({"final/loss": 1 / 3})
    assert run.path == root / "coord_check" / "g1" / "mup-w256-lr0.01-s0"
    files = {p.name for p in run.path.iterdir()}
    assert files >= {"config.json", "history.jsonl", "summary.json", "meta.json"}

    for where in (root, root / "coord_check", root / "coord_check" / "g1", run.path):
        (rec,) = load_runs(where)
    assert rec.config == CONFIG_JSON
    assert rec.status == "finished" and rec.summary == {"final/loss": 1 / 3, "status": "finished"}
    assert [r["step"] for r in rec.history] == [0, 1, 2]
    assert rec.metric("train/loss") == ([0, 1, 2], [1.0, 0.5, 1 / 3])
    assert rec.columns()["feat/h2/rel_change"] == [0.0, 0.5, 1.0]
    assert rec.metric_names == ["feat/h2/rel_change", "train/loss"]
    assert (rec.experiment, rec.group, rec.name) == ("coord_check", "g1", "mup-w256-lr0.01-s0")
    assert rec.table("coord/table")["data"] == [[64, 1.0], [128, 2.0]]
    assert rec.images["plots/coord"].read_bytes() == (tmp_path / "img.png").read_bytes()

    # versions and git are recorded (this checkout may have no commit yet: sha may be None)
    meta = rec.meta
    assert set(meta["versions"]) >= {"python", "torch", "numpy", "paramlab", "wandb", "mup"}
    assert meta["versions"]["torch"] == torch.__version__
    assert set(meta["git"]) == {"sha", "dirty", "root"}
    assert meta["duration_s"] >= 0 and meta["last_step"] == 2 and meta["tags"] == ["t1"]

    # wandb: offline, inside the run folder, with what wandb 0.31 writes there
    wb = meta["wandb"]
    assert wb["enabled"] and wb["mode"] == "offline" and wb["group"] == "coord_check-g1"
    assert wb["job_type"] == "mup" and "error" not in wb
    (off,) = find_wandb_offline_runs(root)
    assert off.path == rec.wandb_dir and off.path.name.startswith("offline-run-")
    assert off.run_id == wb["id"] and off.paramlab_run == run.path
    assert off.wandb_file is not None and off.wandb_file.stat().st_size > 0
    assert off.config_source in ("debug.log", "config.yaml")
    # the stored config, plus the flat keys a wandb filter needs (the lr's log2 derived from the lr)
    flat = {k: v for k, v in off.config.items() if k != "paramlab_meta"}
    assert {k: flat.pop(k) for k in CONFIG_JSON} == CONFIG_JSON
    assert flat.pop("log2_lr") == pytest.approx(math.log2(0.01))
    assert flat == {"experiment": "coord_check", "git_sha": meta["git"]["sha"], "paramlab_version": paramlab.__version__}
    assert off.config["paramlab_meta"]["versions"]["torch"] == torch.__version__
    assert "files/requirements.txt" in [f"files/{f}" for f in off.files]
    assert any(f.startswith("media/table/") for f in off.files)
    assert any(f.startswith("media/images/") for f in off.files)
    # the store's reader does not mistake wandb's folder for a run
    assert len(load_runs(root)) == 1


def test_two_runs_in_one_process_share_the_default_group(tmp_path):
    root = tmp_path / "runs"
    cfg = {"scheme": "sp", "width": 8, "lr": 0.1, "seed": 0}
    with start_run(cfg, experiment="lr_transfer", root=root) as a:
        a.log({"train/loss": 1.0}, step=0)
    with start_run(cfg, experiment="lr_transfer", root=root) as b:
        b.log({"train/loss": 2.0}, step=0)
    assert a.group == b.group and a.path.parent == b.path.parent
    assert (a.name, b.name) == ("sp-w8-lr0.1-s0", "sp-w8-lr0.1-s0-1")
    recs = load_runs(root / "lr_transfer")
    assert [r.status for r in recs] == ["finished", "finished"]
    assert [r.metric("train/loss")[1] for r in recs] == [[1.0], [2.0]]
    ids = {r.meta["wandb"]["id"] for r in recs}
    assert len(ids) == 2 and None not in ids
    assert len(find_wandb_offline_runs(root)) == 2


def test_exception_marks_failed_and_keeps_history(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with start_run({"scheme": "ntk", "seed": 1}, experiment="e", group="g", root=tmp_path) as run:
            run.log({"train/loss": 0.7}, step=0)
            run.log({"train/loss": 0.6}, step=1)
            1 / 0
    (rec,) = load_runs(tmp_path)
    assert rec.status == "failed" and run.status == "failed"
    assert rec.meta["error"].startswith("ZeroDivisionError") and "1 / 0" in rec.meta["traceback"]
    assert rec.summary["status"] == "failed" and "ZeroDivisionError" in rec.summary["error"]
    assert rec.metric("train/loss") == ([0, 1], [0.7, 0.6])
    with pytest.raises(RuntimeError, match="already failed"):
        run.log({"x": 1}, step=2)


def test_diverged_nan_and_truncated_history(tmp_path):
    cfg = {"scheme": "sp", "width": 4096}
    run = start_run(cfg, experiment="e", group="g", root=tmp_path, use_wandb=False)
    run.log({"train/loss": 1.0}, step=0)
    run.log({"train/loss": float("nan"), "train/grad": float("inf")}, step=1)
    run.finish("diverged")
    run.finish("finished")  # second call: no effect
    # a crash mid-write leaves half a line at the end
    with open(run.path / "history.jsonl", "a") as f:
        f.write('{"step": 2, "train/lo')
    (rec,) = load_runs(run.path / "config.json")
    assert rec.status == "diverged" and rec.history_errors == 1
    steps, losses = rec.metric("train/loss")
    assert steps == [0, 1] and losses[0] == 1.0 and math.isnan(losses[1])
    assert rec.metric("train/grad")[1] == [math.inf]
    # a run killed before finishing reads as "running", with meta/summary possibly missing
    (run.path / "meta.json").unlink()
    (run.path / "summary.json").unlink()
    assert load_runs(tmp_path)[0].status == "unknown"


@pytest.mark.parametrize("how", ["env", "arg"])
def test_wandb_off_writes_no_wandb_folder(tmp_path, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("PARAMLAB_WANDB", "0")
    with start_run({"seed": 0}, experiment="e", root=tmp_path, use_wandb=(how == "env")) as run:
        run.log({"train/loss": 1.0}, step=0)
        run.log_table("t", ["a"], [[1]])
        assert run.wandb_run is None
    assert not [p for p in tmp_path.rglob("*") if "wandb" in p.name]
    (rec,) = load_runs(tmp_path)
    assert rec.meta["wandb"] == {"enabled": False} and rec.name == "s0"


def test_wandb_init_failure_warns_once_and_continues(tmp_path, monkeypatch):
    import wandb

    def boom(*a, **k):
        raise RuntimeError("no service")

    monkeypatch.setattr(wandb, "init", boom)
    with pytest.warns(RuntimeWarning, match="local store only"):
        with start_run({"seed": 0}, experiment="e", root=tmp_path) as run:
            run.log({"train/loss": 1.0}, step=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second failure stays quiet
        start_run({"seed": 1}, experiment="e", root=tmp_path).finish()
    recs = load_runs(tmp_path)
    assert [r.status for r in recs] == ["finished", "finished"]
    assert "no service" in recs[0].meta["wandb"]["error"]


def test_summary_table_with_empty_and_mixed_cells_reaches_wandb_without_warning(tmp_path, recwarn):
    """A summary row without a value ('') in a numeric column, and a column mixing text and numbers, as the
    transfer summary writes: wandb.Table refuses both as they are (a RuntimeWarning, table lost); the local
    store keeps the raw cells."""
    from paramlab.tracking import wandb_cells

    rows = [["ntk", -0.0023, "0.1 ± 0.02"], ["probe at init", "", 0.5]]
    assert wandb_cells(rows) == [["ntk", -0.0023, "0.1 ± 0.02"], ["probe at init", None, "0.5"]]
    assert rows[1][1] == ""  # the caller's rows are not changed
    with start_run({"seed": 0}, experiment="e", root=tmp_path) as run:
        assert run.wandb_run is not None
        path = run.log_table("summary", ["scheme", "slope", "gain"], rows)
    assert not [w for w in recwarn.list if "could not wrap" in str(w.message)]
    assert json.loads(path.read_text())["data"][1] == ["probe at init", "", 0.5]
