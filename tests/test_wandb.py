"""wandb as the place schemes are compared: live runs, names and configs, the summary run's answer,
one report per experiment, sync, and no hang when online cannot reach its server.

Everything is read back with wandb's own reader of offline runs, ``wandb leet inspect --json``
(wandb 0.31: one JSON record per line: run (config, group, job_type, tags), history, summary, ...).
wandb runs offline, every wandb folder in pytest's tmp dirs; nothing contacts a network (the
online case points WANDB_BASE_URL at a closed loopback port).
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import paramlab as pl
from paramlab import store, wandb_sink
from paramlab.provenance import code_git_info
from paramlab.experiments import NAMES, get
from paramlab.kit.headline import headline
from paramlab.records import find_wandb_offline_runs, load_runs
from paramlab.wandb_report import PANELS, build_report, panel_keys

WANDB = shutil.which("wandb", path=str(Path(sys.executable).parent)) or "wandb"

# each experiment's tiny size, shrunk where that costs nothing to what a test reads
SHRINK = {"maml": {"seeds": 1}, "lr_transfer": {"log2_lrs": [-8, -6, -4]},
          "lm_lr_transfer": {"log2_lrs": [-8, -6, -4]}, "depth_transfer": {"rules": ["none", "completep"]}}


def inspect(offline_dir: Path) -> dict:
    """One offline wandb run as wandb's reader sees it: run (metadata), config, history rows, summary."""
    out = subprocess.run([WANDB, "leet", "inspect", "--json", str(offline_dir)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    run, config, history, summary = {}, {}, [], {}
    for line in out.splitlines():
        rec = json.loads(line)
        if rec["type"] == "run":
            run = rec["run"]
            config.update(run.get("config", {}).get("update", {}))
        elif rec["type"] == "config":
            config.update(rec["config"].get("update", {}))
        elif rec["type"] == "history":
            history.append(rec["history"]["item"])
        elif rec["type"] == "summary":
            summary.update(rec["summary"].get("update", {}))
    config.pop("_wandb", None)
    return {"run": run, "config": config, "history": history, "summary": summary}


@pytest.fixture(scope="module")
def wandb_env(wandb_home):
    """Offline wandb (its folders in a tmp dir: conftest's wandb_home), no key, no project or entity set."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "PARAMLAB_WANDB"):
            mp.delenv(var, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        yield wandb_home


@pytest.fixture(scope="module")
def groups(wandb_env, tmp_path_factory):
    """Every experiment at its tiny size with wandb offline: name -> (group folder, {run name: inspected})."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in NAMES:
        get(name).run("tiny", root, use_wandb=True, progress=False, group="g", tags=["ci"], **SHRINK.get(name, {}))
        gdir = root / name / "g"
        runs = {w.paramlab_run.name: inspect(w.path) for w in find_wandb_offline_runs(gdir)}
        (summary,) = find_wandb_offline_runs(gdir / "summary")  # the group's summary record holds its own run
        out[name] = (gdir, {**runs, "summary": inspect(summary.path)})
    return out


def _num_equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-12))


def _value(v):
    """wandb's reader writes NaN as "NaN" in history and as null in the summary."""
    return float("nan") if v is None or v in ("NaN", "nan") else v


@pytest.mark.parametrize("name", NAMES)
def test_every_run_is_in_wandb_once_live_with_filterable_config(groups, name):
    gdir, runs = groups[name]
    recs = [r for r in load_runs(gdir) if r.name != "summary"]
    assert recs and set(runs) == {r.name for r in recs} | {"summary"}
    size_opts = get(name).sizes["tiny"]
    for rec in recs:
        wb = runs[rec.name]
        # names a researcher filters on
        assert wb["run"]["display_name"] == rec.name
        assert wb["run"]["run_group"] == f"{name}-g"
        assert wb["run"]["project"] == "paramlab-" + name.replace("_", "-")
        assert wb["run"]["job_type"] == str(rec.config.get("scheme", rec.config.get("rule")))
        assert set(wb["run"]["tags"]) == {name, "ci"}
        cfg = wb["config"]
        assert cfg["size"] == "tiny" and cfg["experiment"] == name
        assert cfg["git_sha"] == rec.meta["git"]["sha"] and cfg["paramlab_version"] == rec.meta["versions"]["paramlab"]
        for k, v in rec.config.items():  # the stored config, flat
            assert cfg[k] == v, k
        if "log2_lr" in rec.config or "lr" in rec.config:  # the actual lr and its log2, whichever was set
            assert math.isclose(cfg["lr"], 2.0 ** cfg["log2_lr"], rel_tol=1e-12)
        for k in ("scheme", "width", "base_width", "depth", "seed", "optimizer"):
            if k in size_opts or k + "s" in size_opts or (k == "seed" and "seeds" in size_opts and name != "coord_check"):
                if k in rec.config:
                    assert k in cfg
        # history: every stored point once, at its optimizer step (maml: steps continue across shot counts)
        stored = [{k: v for k, v in row.items() if k != "time"} for row in rec.history]
        logged = [{k: _value(v) for k, v in row.items() if not k.startswith("_")} for row in wb["history"]]
        keys = sorted({k for row in stored for k in row if k != "step"})
        assert keys == sorted({k for row in logged for k in row}), rec.name
        for k in keys:
            s = [(row["step"], row[k]) for row in stored if k in row]
            w = [(row["_step"], _value(row[k])) for row in wb["history"] if k in row]
            assert len(s) == len(w), (rec.name, k)
            assert all(_num_equal(a[1], b[1]) for a, b in zip(s, w)), (rec.name, k)
            if name != "maml":
                assert [a[0] for a in s] == [b[0] for b in w], (rec.name, k)
        # the summary and the status
        for k, v in rec.summary.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                assert _num_equal(v, _value(wb["summary"][k])), k
        assert wb["summary"]["status"] == rec.status


def test_history_is_live_spread_over_training(groups):
    """Points reach wandb while the unit trains: every one before the run's record is started (its
    config.json written, after training); a replay after the fact logs them all after it."""
    checked = 0
    for name in NAMES:
        gdir, runs = groups[name]
        for rec in load_runs(gdir):
            if rec.name == "summary" or not runs[rec.name]["history"]:
                continue
            ts = [row["_timestamp"] for row in runs[rec.name]["history"]]
            recorded = (rec.path / "config.json").stat().st_mtime
            if name == "coord_check":  # slopes are measured after training: logged with the record
                assert min(ts) >= recorded, rec.name
                continue
            assert max(ts) < recorded, (rec.name, max(ts), recorded)
            checked += 1
    assert checked >= 40


def test_summary_run_holds_headline_scalars_and_verdicts_equal_to_summary_json(groups):
    with_verdicts = 0
    for name in NAMES:
        gdir, runs = groups[name]
        data = json.loads((gdir / "summary" / "summary.json").read_text())
        wb = runs["summary"]
        assert wb["run"]["job_type"] == "summary" and wb["config"]["size"] == "tiny"
        # the answer's provenance: the code's commit and version, as every run of the group has them
        assert wb["config"]["git_sha"] == code_git_info()["sha"] and wb["config"]["paramlab_version"] == pl.__version__
        flat = headline(data)
        assert flat, name
        for k, v in flat.items():
            assert _num_equal(_value(wb["summary"][k]), v), (name, k)
        assert wb["summary"]["summary._type"] == "table-file"  # the table, and the figures
        assert all(wb["summary"][f"{k}._type"] == "image-file" for k in data["figures"]), name
        verdicts = {k: v for k, v in flat.items() if k.startswith("verdict/")}
        assert all(v in (0, 1) for v in verdicts.values())
        with_verdicts += bool(verdicts)
    # spot checks against summary.json itself, under the documented keys
    data = json.loads((groups["coord_check"][0] / "summary" / "summary.json").read_text())
    assert groups["coord_check"][1]["summary"]["summary"]["verdict/mup/passed"] == int(data["verdicts"]["mup"]["passed"])
    data = json.loads((groups["transfer"][0] / "summary" / "summary.json").read_text())
    ws = data["params"]["widths"]
    assert groups["transfer"][1]["summary"]["summary"][f"headline/mup/gain/w{ws[-1]}"] == pytest.approx(
        data["verdicts"]["mup"]["gain"][-1], rel=1e-12)
    data = json.loads((groups["lr_transfer"][0] / "summary" / "summary.json").read_text())
    for s in ("sp", "mup"):
        assert groups["lr_transfer"][1]["summary"]["summary"][f"verdict/{s}/shift_within_1_step"] == int(
            data["verdicts"][s]["shift_within_1_step"])
    assert with_verdicts >= 6


def _report_keys(spec: dict) -> dict:
    """What the report's panels and run sets name: history, summary and config keys, and filter values."""
    out = {"history": set(), "summary": set(), "config": set(), "filters": []}

    def key(axis: str):
        sec, _, k = axis.partition(":")
        if sec == "config":
            out["config"].add(k.removesuffix(".value"))
        elif sec == "summary":
            out["summary"].add(k)

    for block in spec["spec"]["blocks"]:
        if block["type"] != "panel-grid":
            continue
        meta = block["metadata"]
        for p in meta["panelBankSectionConfig"]["panels"]:
            c = p["config"]
            if p["viewType"] == "Run History Line Plot":
                out["history"].update(c["metrics"])
                assert c["xAxis"] == "_step"
            elif p["viewType"] == "Bar Chart":
                out["summary"].update(c["metrics"])
            elif p["viewType"] == "Scatter Plot":
                key(c["xAxis"])
                key(c["yAxis"])
        for rs in meta["runSets"]:
            for f in rs["filters"]["filters"]:
                out["filters"].append((f["key"]["section"], f["key"]["name"], f["value"]))
    return out


def check_report(spec: dict, runs: dict, wb_group: str) -> list[str]:
    """Every key a panel or run set names is one the group's wandb runs log; the faults, empty if none."""
    keys = _report_keys(spec)
    train = [r for n, r in runs.items() if n != "summary"]
    history = {k for r in train for row in r["history"] for k in row}
    summary = {k for r in train for k in r["summary"]}
    config = {k for r in train for k in r["config"]}
    faults = [f"history key {k!r}" for k in keys["history"] - history]
    faults += [f"summary key {k!r}" for k in keys["summary"] - summary]
    faults += [f"config key {k!r}" for k in keys["config"] - config]
    for section, k, v in keys["filters"]:
        if section == "run":
            ok = (k == "group" and v == wb_group) or (k == "jobType" and v == "summary")
        else:
            ok = any(r["config"].get(k) == v for r in train)
        if not ok:
            faults.append(f"filter {section}.{k} = {v!r} matches no run")
    return faults


@pytest.mark.parametrize("name", NAMES)
def test_report_panels_name_keys_the_runs_log(groups, name, monkeypatch):
    gdir, runs = groups[name]
    out = build_report(gdir)
    assert out == str(gdir / "wandb_report.json")
    spec = json.loads(Path(out).read_text())
    assert check_report(spec, runs, f"{name}-g") == []
    keys = _report_keys(spec)
    assert keys["history"] or keys["summary"]
    text = json.dumps(spec)
    assert "Verdicts" in text and spec["project"]["name"] == "paramlab-" + name.replace("_", "-")
    # negative control: a metric renamed in the panel table is caught
    panels = [dict(p) for p in PANELS[name]]
    p = panels[0]
    p["y"] = ["renamed/" + y for y in p["y"]] if isinstance(p["y"], list) else "renamed/" + p["y"]
    monkeypatch.setitem(PANELS, name, panels)
    bad = json.loads(Path(build_report(gdir)).read_text())
    assert any("renamed/" in f for f in check_report(bad, runs, f"{name}-g"))


def test_panel_table_covers_every_experiment():
    assert set(PANELS) == set(NAMES)
    for name in NAMES:
        keys = panel_keys(name, {"shots": [1, 5]})
        assert keys["summary"] | keys["history"]


def test_sync_lists_every_offline_run_of_a_group(groups, capsys):
    from paramlab.cli import main

    gdir, runs = groups["kernel_limit"]
    assert main(["sync", str(gdir), "--print"]) == 0
    cmd = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cmd[1] == "sync" and Path(cmd[0]).name == "wandb"
    every = find_wandb_offline_runs(gdir) + find_wandb_offline_runs(gdir / "summary")  # the runs and the summary's
    assert sorted(cmd[2:]) == sorted(str(w.path) for w in every)
    assert len(cmd[2:]) == len(runs)


def test_run_prints_the_sync_command_when_offline(wandb_env, tmp_path, capsys):
    from paramlab.cli import main

    rc = main(["run", "coord_check", "--size", "tiny", "--root", str(tmp_path), "--group", "g", "--no-progress",
               "--widths", "64", "128"])
    assert rc == 0
    assert f"paramlab sync {tmp_path / 'coord_check' / 'g'}" in capsys.readouterr().out


def test_sweep_prints_the_sync_command_when_offline(wandb_env, tmp_path, capsys):
    import yaml

    from paramlab.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"experiment": "e", "name": "g", "root": str(tmp_path), "grid": {"width": [16]},
                                    "fixed": {"steps": 2, "task_args": {"n_train": 32, "n_test": 16, "d": 8, "k": 2}}}))
    assert main(["sweep", str(spec), "--no-progress"]) == 0
    assert f"paramlab sync {tmp_path / 'e' / 'g'}" in capsys.readouterr().out
    assert main(["sweep", str(spec), "--no-progress", "--no-wandb", "--name", "h"]) == 0
    assert "paramlab sync" not in capsys.readouterr().out


def test_bad_input_is_a_clear_error_and_writes_nothing(groups, tmp_path, capsys):
    from paramlab.cli import main

    # unknown experiment
    odd = tmp_path / "not_an_experiment" / "g"
    (odd / "r").mkdir(parents=True)
    assert main(["report", str(odd), "--wandb"]) == 2
    assert "not a group of a known experiment" in capsys.readouterr().err
    # a group with no runs
    empty = tmp_path / "lr_transfer" / "empty"
    empty.mkdir(parents=True)
    assert main(["report", str(empty), "--wandb"]) == 2
    assert "holds no runs" in capsys.readouterr().err
    assert main(["sync", str(empty)]) == 2
    assert "no offline wandb runs" in capsys.readouterr().err
    # a malformed project name: the report, a run and a sweep refuse it before writing anything
    gdir = groups["kernel_limit"][0]
    (gdir / "wandb_report.json").unlink(missing_ok=True)
    assert main(["report", str(gdir), "--wandb", "--wandb-project", "my/project"]) == 2
    assert "malformed wandb project name" in capsys.readouterr().err
    assert not (gdir / "wandb_report.json").exists()
    root = tmp_path / "runs"
    assert main(["run", "kernel_limit", "--size", "tiny", "--root", str(root), "--wandb-project", "a b"]) == 2
    assert "malformed wandb project name" in capsys.readouterr().err
    assert not root.exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_online_without_a_server_falls_back_to_offline_once_and_fast(wandb_env, tmp_path, monkeypatch):
    """WANDB_MODE=online with a key and no reachable server: the first run waits at most
    ONLINE_INIT_TIMEOUT, warns once, and it and every later run go offline at once; the store is complete."""
    from paramlab.sweep import run_sweep

    spec = {"runner": "train_mlp", "experiment": "online", "name": "base", "root": str(tmp_path),
            "grid": {"scheme": ["sp", "mup"], "width": [16, 32]},
            "fixed": {"steps": 3, "task": "multi_index", "task_args": {"n_train": 64, "n_test": 32, "d": 8, "k": 2},
                      "batch_size": 16}, "ensemble": "never"}
    t0 = time.monotonic()
    run_sweep(spec, progress=False)  # the same sweep offline: the baseline
    base = time.monotonic() - t0
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(wandb_sink, "_ONLINE_DOWN", None)
    monkeypatch.setattr(wandb_sink, "_WARNED", set())
    monkeypatch.setattr(store, "_DEFAULT_GROUPS", {})
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run_sweep({**spec, "name": "g"}, progress=False)
    took = time.monotonic() - t0
    online = [w for w in caught if "could not start online" in str(w.message)]
    assert len(online) == 1, [str(w.message) for w in caught]
    assert report.finished == 4 and report.failed == 0
    recs = load_runs(tmp_path / "online" / "g")
    assert len(recs) == 4 and all(r.status == "finished" and r.history for r in recs)
    assert all(r.meta["wandb"]["mode"] == "offline" and r.meta["wandb"]["fallback"] for r in recs)
    assert all(r.meta["wandb"]["enabled"] for r in recs)
    assert len(find_wandb_offline_runs(tmp_path / "online" / "g")) == 4
    # one bounded wait (ONLINE_INIT_TIMEOUT, then an offline start) for the whole sweep, not ~90 s per run
    assert took - base < wandb_sink.ONLINE_INIT_TIMEOUT + 6, (took, base)


def _paced(cfg):
    """A runner whose loop records 3 points 0.3 s apart, sending them live when `live` is set."""
    from paramlab import live

    rows = []
    for step in (0, 5, 10):
        if step:
            time.sleep(0.3)
        rows.append({"step": step, "train/loss": 1.0 / (1 + step)})
        if cfg["live"]:
            live.emit({"train/loss": rows[-1]["train/loss"]}, step)
    return {"train/loss": rows[-1]["train/loss"], "history": rows}


def test_live_points_carry_their_compute_time_and_a_replay_does_not(wandb_env, tmp_path):
    from paramlab.runners import register_runner
    from paramlab.sweep import run_sweep

    register_runner("paced", _paced, options={"live": True})
    run_sweep({"runner": "paced", "experiment": "paced", "name": "g", "root": str(tmp_path),
               "grid": {"live": [True, False]}}, progress=False)
    spans = {}
    for rec in load_runs(tmp_path / "paced" / "g"):
        (w,) = find_wandb_offline_runs(rec.path)
        wb = inspect(w.path)
        assert [(r["_step"], r["train/loss"]) for r in wb["history"]] == [(r["step"], r["train/loss"]) for r in rec.history]
        ts = [r["_timestamp"] for r in wb["history"]]
        spans[rec.config["live"]] = max(ts) - min(ts)
        stored = [r["time"] for r in rec.history]
        assert max(stored) - min(stored) < 0.1  # the store is written after the run, as before
    assert spans[True] >= 0.55 and spans[False] < 0.1, spans


def test_ray_workers_send_their_points_live_to_the_driver(wandb_env, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed")
    from paramlab.runners import register_runner
    from paramlab.sweep import run_sweep

    register_runner("paced", _paced, options={"live": True})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    try:
        rep = run_sweep({"runner": "paced", "experiment": "paced", "name": "ray", "root": str(tmp_path),
                         "grid": {"live": [True]}},
                        executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert rep.finished == 1
    (rec,) = load_runs(tmp_path / "paced" / "ray")
    assert rec.meta["sweep"]["executor"] == "ray"
    (w,) = find_wandb_offline_runs(rec.path)
    wb = inspect(w.path)
    assert [(r["_step"], r["train/loss"]) for r in wb["history"]] == [(r["step"], r["train/loss"]) for r in rec.history]
    ts = [r["_timestamp"] for r in wb["history"]]
    assert max(ts) - min(ts) >= 0.55, ts  # the worker's time of each point
