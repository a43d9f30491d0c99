"""Damaged or duplicated records are warned by name, never silently dropped or double-counted."""

import shutil

import pytest

from paramlab.cli import main
from paramlab.compare import compare
from paramlab.records import RecordWarning, load_run, load_runs
from paramlab.io import write_json_atomic


def fake_run(group, name, scheme, width, loss, status="finished"):
    d = group / name
    write_json_atomic(d / "config.json", {"scheme": scheme, "width": width, "seed": 0})
    write_json_atomic(d / "meta.json", {"status": status})
    write_json_atomic(d / "summary.json", {"train/loss": loss, "status": status})
    return d


@pytest.fixture
def store(tmp_path):
    g = tmp_path / "e" / "g"
    for s, c in (("sp", 1.0), ("mup", 2.0)):
        for w in (32, 64, 128):
            fake_run(g, f"{s}-w{w}", s, w, c * w ** -0.5)
    return g


def test_clean_store_gives_the_slopes(store, recwarn):
    res = compare([store], out=store / "cmp")
    assert res["n_runs"] == 6 and res["slopes"]["train/loss"]["sp"] == pytest.approx(-0.5)
    assert not [w for w in recwarn if issubclass(w.category, RecordWarning)]


@pytest.mark.parametrize("damage, text", [
    ("summary.json", '{"train/loss": 0.1'),      # truncated
    ("config.json", "garbage"),                  # not JSON
    ("summary.json", "[1, 2]"),                  # a JSON list, not an object
])
def test_unreadable_records_are_named(store, damage, text):
    bad = store / "sp-w64"
    (bad / damage).write_text(text)
    with pytest.warns(RecordWarning, match=f"sp-w64/{damage}"):
        rec = load_run(bad)
    assert rec.problems and rec.problems[0].startswith(str(bad / damage))
    with pytest.warns(RecordWarning) as seen:
        res = compare([store], out=store / "cmp")
    assert any("left out" in str(w.message) and str(bad) in str(w.message) for w in seen)
    assert res["n_runs"] == 5 and res["slopes"]["train/loss"]["sp"] == pytest.approx(-0.5)  # 2 widths left


def test_duplicated_and_unfinished_runs_are_named_and_counted_once(store):
    shutil.copytree(store / "mup-w32", store / "mup-w32-copy")
    fake_run(store, "sp-w256", "sp", 256, 5.0, status="running")
    with pytest.warns(RecordWarning) as seen:
        res = compare([store], out=store / "cmp")
    msgs = [str(w.message) for w in seen]
    assert any("duplicated" in m and "mup-w32-copy" in m and "same config as" in m for m in msgs)
    assert any("not finished" in m and "sp-w256 (running)" in m for m in msgs)
    assert res["n_runs"] == 6 and res["slopes"]["train/loss"]["mup"] == pytest.approx(-0.5)


def test_missing_directory_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compare([tmp_path / "nope"])
    with pytest.raises(FileNotFoundError, match="no run store"):
        load_runs(tmp_path / "nope")
    assert main(["compare", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def offline_folder(parent, run_id="abc123", config_line="config: {'scheme': 'sp', 'width': 32}"):
    d = parent / "wandb" / f"offline-run-20260101_000000-{run_id}"
    (d / "files").mkdir(parents=True)
    (d / "logs").mkdir()
    (d / "logs" / "debug.log").write_text(f"some line\n{config_line}\n")
    return d


def test_compare_mode_follows_the_folder_contents_not_its_name(tmp_path, recwarn):
    """A group under my_wandb_study/ is a group: all 4 runs, both schemes, whether or not a run has a wandb
    folder; a run's wandb folder given alone maps to its run."""
    g = tmp_path / "my_wandb_study" / "e" / "g"
    for i, (s, w) in enumerate([("sp", 32), ("sp", 64), ("ntk", 32), ("ntk", 64)]):
        d = fake_run(g, f"{s}-w{w}", s, w, w ** -0.5)
        if i % 2 == 0:
            offline_folder(d, run_id=f"r{i}")
    res = compare([g], out=tmp_path / "cmp")
    assert res["n_runs"] == 4 and set(res["slopes"]["train/loss"]) == {"sp", "ntk"}
    assert not [w for w in recwarn if issubclass(w.category, RecordWarning)]
    res = compare([g / "sp-w32" / "wandb"], out=tmp_path / "cmp2")
    assert res["n_runs"] == 1


def test_wandb_runs_outside_a_paramlab_run_and_damaged_debug_logs_are_named(tmp_path):
    loose = tmp_path / "loose"
    offline_folder(loose, run_id="x1")
    with pytest.warns(RecordWarning, match=r"wandb runs left out, not inside a paramlab run folder.*offline-run-"):
        with pytest.raises(ValueError, match="no runs"):
            compare([loose], out=tmp_path / "cmp")
    from paramlab.records import find_wandb_offline_runs

    for bad in ("config: {[1]: 2}", "config: {'a': ", "config: [1, 2]", "config: {'a': \x00}"):
        d = offline_folder(tmp_path / bad.encode().hex(), run_id="x2", config_line=bad)
        with pytest.warns(RecordWarning, match=rf"{d / 'logs' / 'debug.log'}: its config line cannot be read"):
            (run,) = find_wandb_offline_runs(d)
        assert run.config is None
