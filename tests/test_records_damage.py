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
