"""paramlab.spec: a sweep spec is checked completely (keys, types, values, every grid point) before
anything runs or is written."""

import pytest

from paramlab.cli import main
from paramlab.runners import SpecError
from paramlab.spec import load_spec
from paramlab.store import run_dir_name
from paramlab.sweep import run_sweep


@pytest.mark.parametrize("spec, match", [
    ({"grid": {"width": [64]}, "grids": {}}, r"unknown spec keys \['grids'\]: valid keys are runner, experiment"),
    ({"grid": {"widht": [64]}}, r"unknown grid keys \['widht'\].*valid keys are .*width"),
    ({"grid": {"width": [64]}, "fixed": {"stpes": 3}}, r"unknown fixed keys \['stpes'\].*steps"),
    ({"grid": {"lr": ["fast"]}}, r"option 'lr': 'fast' is a str, expected int, float"),
    ({"grid": {"width": [64, 0]}}, r"option 'width': 0 must be positive"),
    ({"grid": {"width": [True]}}, r"option 'width': True is a bool, expected int"),
    ({"grid": {"scheme": ["mup", "mupp"]}}, r"option 'scheme': 'mupp' is not a scheme"),
    ({"grid": {"seed": []}}, r"grid key 'seed' has an empty list"),
    ({"grid": {"width": [64]}, "fixed": {"task_args": {"nn_train": 5}}}, r"do not fit task 'multi_index'.*n_train"),
    ({"grid": {"width": [64]}, "ensemble": "sometimes"}, r"ensemble must be one of"),
    ({"grid": {"width": [64]}, "runner": "nope"}, r"unknown runner 'nope': registered runners are .*train_mlp"),
])
def test_bad_specs_are_rejected_before_any_run(tmp_path, spec, match):
    with pytest.raises(SpecError, match=match):
        run_sweep({**spec, "root": str(tmp_path / "runs")}, progress=False)
    assert not (tmp_path / "runs").exists()


def test_spec_files_yaml_toml_and_cli_errors(tmp_path, capsys):
    y = tmp_path / "s.yaml"
    y.write_text("experiment: e\ngrid:\n  scheme: [sp, mup]\n  width: [32, 64]\nfixed:\n  steps: 5\n  task_args: {n_train: 64, n_test: 32}\n")
    t = tmp_path / "s.toml"
    t.write_text('experiment = "e"\n[grid]\nscheme = ["sp", "mup"]\nwidth = [32, 64]\n[fixed]\nsteps = 5\ntask_args = {n_train = 64, n_test = 32}\n')
    a, b = load_spec(y), load_spec(t)
    assert a.name == "s" and a.points() == b.points() and len(a.points()) == 4
    names = [run_dir_name(c, a.varying()) for c in a.points()]
    assert len(set(names)) == 4 and names[0].startswith("sp-w32-lr0.1-s0-")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(SpecError, match="cannot parse"):
        load_spec(bad)
    bad.write_text("grid:\n  width: [64]\n  optimiser: [adam]\n")
    assert main(["sweep", str(bad), "--root", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown grid keys ['optimiser']" in err and "optimizer" in err
    assert main(["sweep", str(y), "--root", str(tmp_path / "r"), "--dry-run"]) == 0
    assert "4 runs, 0 complete, 4 to run" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()
