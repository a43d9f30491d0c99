"""paramlab.kit.experiment: `paramlab run` is a sweep. Its options are checked before anything
runs (a bad --set leaves nothing behind), a killed run resumes with the same command, and the
summary lands next to the runs. (The experiments' science is in test_experiments.py.)"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paramlab.cli import main
from paramlab.experiments import get
from paramlab.records import load_runs
from paramlab.runners import SpecError
from paramlab.io import read_json


@pytest.mark.parametrize("args, message", [
    (["--set", "steps=-1"], "option 'steps': -1 must be >= 0"),
    (["--set", "lr=fast"], "option 'lr': 'fast' is a str, expected int, float"),
    (["--set", "stpes=3"], "unknown option 'stpes' for kernel_limit: options are"),
    (["--schemes", "mup", "mupp"], "option 'scheme': 'mupp' is not a scheme"),
    (["--set", "dtype=float16"], "option 'dtype': 'float16' is not a dtype"),
    (["--seeds", "0"], "'seeds': 0 is not a number of seeds"),
    (["--widths", "64", "-8"], "option 'width': -8 must be positive"),
    (["--size", "tiny", "--set", "x"], "--set expects KEY=VALUE"),
])
def test_a_bad_option_is_refused_before_anything_is_written(tmp_path, capsys, args, message):
    root = tmp_path / "runs"
    assert main(["run", "kernel_limit", "--size", "tiny", "--root", str(root), "--no-wandb", "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err
    assert not root.exists()


def test_the_same_options_are_fine_when_good(tmp_path):
    """The negative control of the test above: good values run, and write the group folder."""
    root = tmp_path / "runs"
    out = get("kernel_limit").run("tiny", root=root, use_wandb=False, progress=False, group="g", steps=2,
                                  dtype="float64", widths=[64, 128])
    assert out["verdicts"] and (root / "kernel_limit" / "g" / "summary" / "summary.json").exists()


def test_options_come_from_every_size_and_axes_are_lists():
    coord = get("coord_check")
    assert {"vocab_size", "seq_len", "n_heads", "widths", "seeds"} <= set(coord.options())  # the transformer size's too
    assert coord.params("tiny", {"schemes": "mup"})["schemes"] == ["mup"]  # one value is a 1-list
    with pytest.raises(SpecError, match="unknown size 'huge'"):
        coord.params("huge", {})
    spec = get("lr_transfer").spec(get("lr_transfer").params("tiny", {"seeds": 2}), group="g")
    assert list(spec.grid) == ["scheme", "width", "log2_lr", "seed"] and spec.grid["seed"] == [0, 1]
    assert "log2_lrs" not in spec.fixed and spec.runner == spec.experiment == "lr_transfer"


def _complete(path: Path) -> bool:
    meta = read_json(path / "meta.json")
    return isinstance(meta, dict) and meta.get("status") in ("finished", "diverged")


def _files(run_dir: Path) -> dict:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_a_killed_paramlab_run_resumes_with_the_same_command(tmp_path):
    root = tmp_path / "runs"
    cmd = [sys.executable, "-m", "paramlab", "run", "kernel_limit", "--size", "tiny", "--seeds", "3",
           "--set", "steps=600", "--root", str(root), "--group", "k", "--no-wandb", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    group = root / "kernel_limit" / "k"
    runs = lambda: [p for p in group.iterdir() if p.is_dir() and p.name != "summary"] if group.exists() else []  # noqa: E731
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and sum(map(_complete, runs())) < 2:
            assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done = [p for p in runs() if _complete(p)]
    assert 2 <= len(done) < 12 and not (group / "summary" / "summary.json").exists()
    before = {p.name: _files(p) for p in done}

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(runs()) == 12  # every grid point once (2 schemes x 2 widths x 3 seeds): nothing run twice
    recs = load_runs(group)
    assert len(recs) == 12 and all(r.status == "finished" for r in recs)
    for name, files in before.items():
        assert _files(group / name) == files, f"the completed run {name} was touched"
    summary = json.loads((group / "summary" / "summary.json").read_text())
    assert set(summary["verdicts"]) == {"ntk", "mup"} and "records: " in out.stdout


def test_a_summary_is_a_record_of_its_own_kind_not_a_run(tmp_path):
    """The summary lives in the group's summary/ folder, which run discovery skips, and every file is
    written whole: rewriting it leaves no temp file and the old text or the new one, never a mix."""
    from paramlab.kit.summary import Summary, summary_markdown, summary_record, write_summary
    from paramlab.store import SUMMARY_DIR

    group = tmp_path / "e" / "g"
    (group / "run-1").mkdir(parents=True)
    (group / "run-1" / "config.json").write_text(json.dumps({"width": 64}))
    s = Summary("title", ["scheme", "slope"], [["mup", 0.01], ["sp", 0.5]], extra={"verdicts": {"mup": True}})
    for _ in range(2):
        data = write_summary(s, experiment="e", group="g", out_dir=group / SUMMARY_DIR, use_wandb=False)
    assert data == summary_record(s) == read_json(group / SUMMARY_DIR / "summary.json")
    assert data["verdicts"] == {"mup": True} and data["rows"] == [["mup", 0.01], ["sp", 0.5]]
    assert (group / SUMMARY_DIR / "summary.md").read_text() == summary_markdown(s)
    assert "| mup | 0.01 |" in summary_markdown(s)
    assert sorted(p.name for p in (group / SUMMARY_DIR).iterdir()) == ["summary.json", "summary.md"]
    assert [r.path.name for r in load_runs(group)] == ["run-1"]  # the summary is not a run
    # a store written when the summary was a run (config.json in summary/): discovery skips it all the same
    (group / SUMMARY_DIR / "config.json").write_text(json.dumps({"kind": "summary"}))
    assert [r.path.name for r in load_runs(group)] == ["run-1"]
    # with wandb: one summary run per group, replaced when the group is summarized again
    from paramlab.records import find_wandb_offline_runs

    for _ in range(2):
        write_summary(s, experiment="e", group="g", out_dir=group / SUMMARY_DIR, use_wandb=True)
    assert len(find_wandb_offline_runs(group / SUMMARY_DIR)) == 1 and find_wandb_offline_runs(group) == []


def test_pl_run_and_pl_coord_check_are_on_the_package_face(tmp_path):
    """`pl.run(NAME, size, ...)` is `paramlab run NAME`: options checked before anything is written,
    then the sweep and its summary; `pl.coord_check` is the width instrument itself."""
    import paramlab as pl
    from paramlab.measure.coord import coord_check

    assert pl.coord_check is coord_check
    with pytest.raises(SpecError, match="unknown option 'stpes' for kernel_limit"):
        pl.run("kernel_limit", "tiny", root=tmp_path, use_wandb=False, stpes=3)
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        pl.run("nope")
    assert not any(tmp_path.iterdir())
    out = pl.run("kernel_limit", "tiny", root=tmp_path, use_wandb=False, progress=False, group="g")
    assert out == read_json(tmp_path / "kernel_limit" / "g" / "summary" / "summary.json") and out["verdicts"]
    recs = load_runs(tmp_path / "kernel_limit" / "g")
    assert recs and all(r.status in ("finished", "diverged") for r in recs)


def test_a_summarys_computation_is_stored_once_and_resumes_after_a_crash(tmp_path):
    """`stored`: computed once per (name, inputs) in the summary folder, read back exactly (NaN, inf,
    float bits); a crash while computing leaves nothing, so the rerun computes; other inputs, another
    record; run discovery does not see the records."""
    from paramlab.kit.summary import PARTS_DIR, stored
    from paramlab.store import SUMMARY_DIR

    group = tmp_path / "e" / "g"
    (group / "run-1").mkdir(parents=True)
    (group / "run-1" / "config.json").write_text(json.dumps({"width": 64}))
    out, calls = group / SUMMARY_DIR, []
    value = {"ntk": 0.1 + 0.2, "nngp": [float("nan"), float("inf"), -1e-300], "k1": {"n": 3}}

    def compute():
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # killed mid-computation
        return value

    with pytest.raises(KeyboardInterrupt):
        stored(out, "kernels", {"width": 64, "lr": 0.1}, compute)
    assert not (out / PARTS_DIR).exists() or not any((out / PARTS_DIR).iterdir())
    first = stored(out, "kernels", {"width": 64, "lr": 0.1}, compute)
    again = stored(out, "kernels", {"lr": 0.1, "width": 64}, compute)  # key order is not part of the key
    assert len(calls) == 2
    assert json.dumps(first) == json.dumps(again) == json.dumps(value)  # bit-exact floats, NaN and inf kept
    assert first["ntk"] == 0.1 + 0.2 and first["nngp"][2] == -1e-300
    stored(out, "kernels", {"width": 128, "lr": 0.1}, compute)  # other inputs: computed and kept beside it
    assert len(calls) == 3 and len(list((out / PARTS_DIR).iterdir())) == 2
    assert [r.path.name for r in load_runs(group)] == ["run-1"]  # the stored parts are not runs
    # a record whose inputs do not match its name (a corrupt or foreign file) is recomputed, not trusted
    path = next(p for p in (out / PARTS_DIR).iterdir() if "128" not in json.dumps(read_json(p)["inputs"]))
    path.write_text(json.dumps({"name": "kernels", "inputs": {"width": 32}, "value": 0}))
    assert stored(out, "kernels", {"width": 64, "lr": 0.1}, compute) == first and len(calls) == 4
