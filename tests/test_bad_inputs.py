"""Bad inputs at the command line and in specs: clear errors before anything is written."""

import json

import pytest
import torch

from paramlab import cli
from paramlab.cli import main
from paramlab.experiments import get
from paramlab.runners import SpecError
from paramlab.spec import MAX_POINTS, load_spec
from paramlab.sweep import run_sweep

SMALL = {"task": "multi_index", "task_args": {"n_train": 64, "n_test": 32, "d": 8, "k": 2}, "steps": 2,
         "batch_size": 32, "optimizer": "sgd", "lr": 0.05}


def test_yaml_exponent_numbers_are_floats(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("grid:\n  lr: [1e-3, 5E+2, +2e-1]\n  width: [32]\nfixed:\n  steps: 2\n  momentum: 1e-1\n")
    s = load_spec(f)
    assert s.grid["lr"] == [1e-3, 500.0, 0.2] and s.fixed["momentum"] == 0.1
    assert all(type(v) is float for v in s.grid["lr"])
    f.write_text("grid:\n  width: [32]\nfixed:\n  task: '1e-3'\n")  # quoted stays a string
    with pytest.raises(SpecError, match="is not a task"):
        load_spec(f)


@pytest.mark.parametrize("group", ["../../x", "a/b", "..", ".hidden", "a b", ""])
def test_group_names_that_escape_or_split_are_refused(tmp_path, group):
    spec = {"experiment": "e", "root": str(tmp_path / "store"), "wandb": False, "grid": {"width": [32]}, "fixed": SMALL}
    with pytest.raises((SpecError, ValueError), match="name"):
        run_sweep({**spec, "name": group}, progress=False)
    with pytest.raises((SpecError, ValueError), match="name"):
        run_sweep({**spec, "name": "ok"}, name=group, progress=False)
    if group:  # (an empty --group means: a new one)
        with pytest.raises((SpecError, ValueError), match="name"):
            get("lr_transfer").run("tiny", root=tmp_path / "store", use_wandb=False, progress=False, group=group, steps=1)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.json"))
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_spec_file_stem_is_made_safe_not_refused(tmp_path):
    f = tmp_path / "my sweep.yaml"
    f.write_text("grid:\n  width: [32]\n")
    assert load_spec(f).name == "my_sweep"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_without_cuda_is_refused_up_front(tmp_path, capsys):
    spec = {"experiment": "e", "name": "g", "root": str(tmp_path), "wandb": False, "grid": {"width": [32]},
            "fixed": SMALL}
    with pytest.raises(SpecError, match="CUDA is not available"):
        run_sweep(spec, device="cuda", progress=False)
    assert not (tmp_path / "e").exists()  # nothing written
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps({**spec, "root": str(tmp_path / "cli")}))
    f = f.rename(tmp_path / "s.yml")
    assert main(["sweep", str(f), "--device", "cuda", "--no-progress"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err and not (tmp_path / "cli").exists()


def test_huge_grid_needs_yes(tmp_path, capsys):
    big = {"experiment": "e", "name": "g", "root": str(tmp_path), "wandb": False, "fixed": SMALL,
           "grid": {"width": list(range(1, 101)), "seed": list(range(101))}}  # 10100 > MAX_POINTS points
    assert 100 * 101 > MAX_POINTS
    with pytest.raises(SpecError, match=r"10100 points, more than 10000.*--yes"):
        load_spec(big)
    f = tmp_path / "big.yml"
    f.write_text(json.dumps(big))
    assert main(["sweep", str(f), "--dry-run"]) == 2
    assert "--yes" in capsys.readouterr().err
    s = load_spec(big, max_points=None)  # with yes: accepted
    assert len(s.grid["seed"]) == 101


def test_ctrl_c_is_a_message_not_a_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_sweep", interrupted)
    assert main(["sweep", "whatever.yaml"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "rerun the same command to resume" in err and "Traceback" not in err


def test_diverged_run_records_its_reason(tmp_path):
    spec = {"experiment": "e", "name": "g", "root": str(tmp_path), "wandb": False,
            "grid": {"scheme": ["sp"], "width": [256]},
            "fixed": {**SMALL, "optimizer": "adam", "lr": 10.0, "steps": 30, "batch_size": 16}}
    rep = run_sweep(spec, progress=False)
    assert rep.diverged == 1
    meta = json.loads((rep.runs[0]["path"] / "meta.json").read_text())
    assert meta["status"] == "diverged" and "x initial" in meta["diverged"]


def test_ctrl_c_in_an_experiment_command_is_a_message(capsys):
    from types import SimpleNamespace

    from paramlab.kit import command

    def run(*a, **k):
        raise KeyboardInterrupt

    fake = SimpleNamespace(name="fake", sizes={"default": {}}, doc="fake experiment", run=run)
    with pytest.raises(SystemExit) as e:
        command.main(fake, ["--group", "g1"])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--group to resume" in err
