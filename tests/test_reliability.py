"""The fault audit's cases that have no better home: every one fails fast with a message that names the
fix, and none hangs (each test bounds its own time)."""

import time
import warnings

import pytest
import torch

from paramlab.cli import main
from paramlab.runners import SpecError
from paramlab.spec import load_spec
from paramlab.sweep import run_sweep

SMALL = {"grid": {"width": [8]}, "fixed": {"steps": 2, "task_args": {"n_train": 16, "n_test": 8}}, "wandb": False}


def laughs(levels: int, fan: int = 10, indent: str = "") -> str:
    """A "billion laughs" YAML block: level i is `fan` aliases of level i-1 (fan**levels strings)."""
    lines = [f"{indent}l0: &l0 [" + ", ".join(["lol"] * fan) + "]"]
    lines += [f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# -- Ray: a dead address fails at once, naming it ------------------------------------------------------

def test_ray_unreachable_address_fails_fast_naming_it(tmp_path, capsys):
    pytest.importorskip("ray")
    t0 = time.monotonic()
    rc = main(["sweep", _spec_file(tmp_path), "--executor", "ray", "--address", "127.0.0.1:1",
               "--root", str(tmp_path / "runs"), "--no-progress"])
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" in err and "Leave --address out" in err
    assert not (tmp_path / "runs").exists()  # refused before the store is touched


def test_ray_address_check_names_malformed_addresses():
    pytest.importorskip("ray")
    from paramlab.executors import check_ray_address

    for bad in ("nohost", "host:port", "ray://:1"):
        with pytest.raises(RuntimeError, match="is not 'auto', 'host:port'"):
            check_ray_address(bad)


@pytest.mark.parametrize("reply", [None, b"HTTP/1.1 400 Bad Request\r\n\r\n"])
def test_ray_address_of_another_server_is_refused_in_seconds(reply):
    """A port that accepts connections but is no gRPC server (silent, or HTTP/1): Ray would wait out its GCS
    timeouts (measured: over 60 s); the check refuses it within its timeout."""
    pytest.importorskip("ray")
    import socket
    import threading

    from paramlab.executors import check_ray_address

    srv = socket.create_server(("0.0.0.0", 0))  # all interfaces: Ray dials this node's IP for 127.0.0.1

    def serve():
        conns = []
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            conns.append(c)
            if reply:
                c.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match=r"accepts connections but does not answer as a Ray server"):
            check_ray_address(f"127.0.0.1:{srv.getsockname()[1]}", timeout=1.0)
    finally:
        srv.close()
    assert time.monotonic() - t0 < 5


def _spec_file(tmp_path, extra: str = "") -> str:
    p = tmp_path / "s.yaml"
    p.write_text("grid: {width: [8]}\nfixed: {steps: 2, task_args: {n_train: 16, n_test: 8}}\nwandb: false\n" + extra)
    return str(p)


# -- YAML: aliases bounded, duplicate keys warned ---------------------------------------------------

@pytest.mark.parametrize("where", ["fixed", "description", "grid"])
def test_yaml_alias_bomb_is_refused_in_under_a_second(tmp_path, where):
    if where == "fixed":  # 10**9 strings once expanded, in each case
        text = "grid: {width: [8]}\nfixed:\n  task_args:\n" + laughs(9, indent="    ")
    elif where == "description":
        text = "grid: {width: [8]}\ndescription:\n" + laughs(9, indent="  ")
    else:  # the levels as values of one grid list
        text = "grid:\n  width: [8]\n  lr:\n" + "".join("    - " + ln.split(": ", 1)[1] + "\n"
                                                        for ln in laughs(9).splitlines())
    p = tmp_path / "bomb.yaml"
    p.write_text(text)
    t0 = time.monotonic()
    with pytest.raises(SpecError, match=r"bomb.yaml: the spec expands to more than 1,000,000 values"):
        load_spec(p)
    assert time.monotonic() - t0 < 1.0


def test_yaml_aliases_of_modest_size_still_work(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("grid:\n  width: [8]\n  task_args: [&t {n_train: 16, n_test: 8}, *t]\nfixed: {steps: 2}\n")
    assert len(load_spec(p).points()) == 1  # the two aliased points are one point


def test_recursive_yaml_alias_is_refused(tmp_path):
    p = tmp_path / "rec.yaml"
    p.write_text("grid: {width: [8]}\ndescription: &d [*d]\n")
    with pytest.raises(SpecError, match="contains itself"):
        load_spec(p)


def test_description_must_be_text():
    with pytest.raises(SpecError, match="description must be a string"):
        load_spec({**SMALL, "description": [1, 2]})


def test_duplicate_yaml_keys_warn_naming_file_and_lines(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("grid: {width: [8]}\nfixed: {steps: 3}\nfixed: {steps: 2, task_args: {n_train: 16, n_test: 8}}\n")
    with pytest.warns(UserWarning, match=r"dup.yaml: key 'fixed' is given twice \(lines 2 and 3\)"):
        s = load_spec(p)
    assert s.fixed["steps"] == 2
    p.write_text(_spec_text_ok())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_spec(p)


def _spec_text_ok():
    return "grid: {width: [8]}\nfixed: {steps: 2, task_args: {n_train: 16, n_test: 8}}\n"


# -- config errors: refused before any run, never stored as a result -------------------------------

@pytest.mark.parametrize("name, args, match", [
    ("lm_lr_transfer", ["--set", "batch=0"], r"option 'batch': 0 must be positive"),
    ("lm_lr_transfer", ["--set", "n_eval=0"], r"option 'n_eval': 0 must be positive"),
    ("lm_lr_transfer", ["--set", "context=0"], r"option 'context': 0 must be positive"),
    ("lm_lr_transfer", ["--set", "n_heads=0"], r"option 'n_heads': 0 must be positive"),
    ("lm_lr_transfer", ["--widths", "32", "30"], r"width 30 is not divisible by n_heads=4"),
    ("lm_feature_learning", ["--set", "n_heads=3"], r"width 32 is not divisible by n_heads=3"),
    ("lm_lr_transfer", ["--set", "eps=0"], r"option 'eps': 0 must be > 0"),
    ("lm_lr_transfer", ["--set", "betas=0.9,1.0"], r"option 'betas': \[0.9, 1.0\] must be a list of two numbers in \[0, 1\)"),
    ("lm_lr_transfer", ["--set", f"eval_seed={2 ** 70}"], r"option 'eval_seed': 1180591620717411303424 must be in \[0, 2\*\*32\)"),
    ("transfer", ["--set", "ft_lr_ratio=0"], r"option 'ft_lr_ratio': 0 must be positive"),
    ("transfer", ["--set", "ft_lr_ratio=-0.5"], r"option 'ft_lr_ratio': -0.5 must be positive"),
    ("transfer", ["--set", f"data_seed={2 ** 70}"], r"option 'data_seed': .* must be in \[0, 2\*\*32\)"),
    # the grid axes through --set: the same option as --schemes / --widths / --seeds
    ("lm_lr_transfer", ["--set", "schemes=mup,mupp"], r"option 'scheme': 'mupp' is not a scheme"),
    ("transfer", ["--set", "widths=64,0"], r"option 'width': 0 must be positive"),
    ("transfer", ["--set", "seeds=0"], r"option 'seeds': 0 is not a number of seeds"),
    ("transfer", ["--set", "seeds=2", "--seeds", "3"], r"--seeds and --set seeds= both given"),
])
def test_experiment_config_errors_refused_before_any_run(tmp_path, capsys, name, args, match):
    import re

    root = tmp_path / "runs"
    rc = main(["run", name, "--size", "tiny", "--root", str(root), "--no-wandb", "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 2 and re.search(match, err), err
    assert "got multiple values" not in err
    assert not root.exists()  # nothing written: no run stored as failed or diverged


@pytest.mark.parametrize("fixed, match", [
    ({"optimizer": "sgd", "momentum": 2.0}, r"option 'momentum': 2.0 must be in \[0, 1\)"),
    ({"optimizer": "sgd", "momentum": 1}, r"option 'momentum': 1 must be in \[0, 1\)"),
    ({"optimizer": "sgd", "momentum": -0.1}, r"option 'momentum': -0.1 must be in \[0, 1\)"),
    ({"optimizer": "adam", "eps": 0}, r"option 'eps': 0 must be > 0"),
    ({"optimizer": "adam", "betas": [0.9, 1.5]}, r"option 'betas'.*in \[0, 1\)"),
    ({"optimizer": "adam", "betas": [-0.1, 0.9]}, r"option 'betas'.*in \[0, 1\)"),
    ({"seed": 2 ** 70}, r"option 'seed'.*must be in \[0, 2\*\*32\)"),
])
def test_invalid_optimizer_values_refused_before_any_run(tmp_path, fixed, match):
    spec = {**SMALL, "fixed": {**SMALL["fixed"], **fixed}, "root": str(tmp_path / "runs")}
    with pytest.raises(SpecError, match=match):
        run_sweep(spec, progress=False)
    assert not (tmp_path / "runs").exists()


def test_every_experiment_size_passes_its_own_checks():
    """Negative control of the checks above: the shipped sizes are all valid."""
    from paramlab.experiments import NAMES, get

    for name in NAMES:
        e = get(name)
        for size in e.sizes:
            load_spec(e.spec(e.params(size, {}), group="g"), max_points=None)


# -- storage faults: one line naming the path, complete runs kept, a rerun resumes ----------------

def _sweep_args(tmp_path, *extra):
    spec = tmp_path / "two.yaml"
    spec.write_text("experiment: e\ngrid: {width: [8, 16]}\nfixed: {steps: 2, task_args: {n_train: 16, n_test: 8}}\n"
                    "wandb: false\n")
    return ["sweep", str(spec), "--root", str(tmp_path / "runs"), "--no-progress", *extra]


@pytest.mark.parametrize("code", ["ENOSPC", "EFBIG", "EACCES"])
def test_storage_errors_mid_sweep_are_one_line_and_a_rerun_resumes(tmp_path, capsys, monkeypatch, code):
    import errno
    import os

    import paramlab.store as store

    real_replace, calls = os.replace, []

    def failing_replace(src, dst):  # the 2nd run's meta.json (its "finished") cannot be written
        calls.append(dst)
        if str(dst).endswith("meta.json") and sum(str(c).endswith("meta.json") for c in calls) >= 4:
            if code == "EACCES":
                raise PermissionError(errno.EACCES, "Permission denied", str(dst))
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))  # as write/fsync raise it
        return real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", failing_replace)
    rc = main(_sweep_args(tmp_path))
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert f"[{code}]" in err and "complete runs are kept" in err and "rerun the same command" in err
    assert (str(tmp_path / "runs") in err) if code != "EACCES" else ("meta.json" in err)
    monkeypatch.setattr(store.os, "replace", real_replace)
    assert main(_sweep_args(tmp_path)) == 0
    assert "2 runs: 1 already complete, 1 finished" in capsys.readouterr().out


def test_root_that_is_a_file_and_a_name_too_long_are_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["sweep", *_sweep_args(tmp_path)[1:-3], "--root", str(tmp_path / "afile"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "[ENOTDIR]" in err and "afile" in err and "check --root" in err and len(err.splitlines()) == 1
    rc = main(["run", "coord_check", "--size", "tiny", "--root", str(tmp_path / "r"), "--no-wandb", "--no-progress",
               "--group", "g" * 300])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "[ENAMETOOLONG]" in err and "shorter --group" in err and "Traceback" not in err


def test_a_failing_flock_is_not_reported_as_another_process(tmp_path, capsys, monkeypatch):
    import errno
    import fcntl

    def flock(fd, op, code=errno.ENOLCK):
        raise OSError(code, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)
    assert main(_sweep_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "cannot lock" in err and "does not support flock" in err and "another process" not in err
    monkeypatch.undo()


def test_a_held_sweep_lock_refuses_a_second_process(tmp_path, capsys):
    """The lock is real: a flock held on the group's .sweep.lock (another open file: another process to
    flock) refuses the sweep, which writes nothing; once released the sweep runs."""
    import fcntl

    lock = tmp_path / "runs" / "e" / "two" / ".sweep.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(_sweep_args(tmp_path)) == 2
        assert "another process is running this sweep" in capsys.readouterr().err
        assert sorted(p.name for p in lock.parent.iterdir()) == [".sweep.lock"]
    assert main(_sweep_args(tmp_path)) == 0


# -- unclear messages made clear ----------------------------------------------------------------------

class _Net(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.inp, self.out = torch.nn.Linear(8, width), torch.nn.Linear(width, 4)

    def forward(self, x):
        return self.out(torch.relu(self.inp(x)))


def test_width_zero_model_or_base_is_an_error_naming_the_parameter():
    import paramlab as pl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "Initializing zero-element tensors is a no-op"
        for model, base in ((_Net(0), _Net(64)), (_Net(64), _Net(0))):
            with pytest.raises(ValueError, match=r"parameter 'inp.weight' has shape .* a width of 0"):
                pl.parameterize(model, "mup", base=base)
    pl.parameterize(_Net(128), "mup", base=_Net(64))  # negative control


@pytest.mark.parametrize("text, match", [
    ("w: 64\n", r"'w' has dims 64; a mup base-shapes file gives each parameter a list"),
    ("w: [64, 0]\n", r"'w' has dims \[64, 0\]"),
    ("w: [64, x]\n", r"'w' has dims \[64, 'x'\]"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", r"binary, not yaml text"),
    ("w: [64\n", r"yaml error"),
    ("- 64\n", r"expected a yaml mapping"),
])
def test_bad_bsh_files_name_the_file_and_the_entry(tmp_path, text, match):
    from paramlab.roles import load_bsh

    p = tmp_path / "base.bsh"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=rf"{p}: .*{match}" if not match.startswith("'") else match):
        load_bsh(p)


# -- trust: a spec's runner is code; --dry-run does not import it --------------------------------------

def test_dry_run_does_not_import_a_runner_module(tmp_path, monkeypatch, capsys):
    import sys

    marker = tmp_path / "imported"
    (tmp_path / "specrunner_mod.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')  # code that runs on import\n"
        "from paramlab.runners import Runner\n"
        "RUNNER = Runner('mine', lambda cfg: {'loss': float(cfg['x'])})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "specrunner_mod", raising=False)
    spec = tmp_path / "s.yaml"
    spec.write_text("runner: specrunner_mod:RUNNER\nexperiment: e\ngrid: {x: [1, 2], width: [8]}\nwandb: false\n")
    args = ["sweep", str(spec), "--root", str(tmp_path / "runs"), "--no-progress"]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert not marker.exists() and "not imported: a spec's runner is code" in out
    assert out.count("absent") == 2 and "2 runs, 0 complete, 2 to run" in out
    assert main(args) == 0 and marker.exists()  # running it imports it: that is what a sweep is for
    marker.unlink()
    monkeypatch.delitem(sys.modules, "specrunner_mod", raising=False)
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert not marker.exists() and out.count("complete ") == 2 and "2 runs, 2 complete, 0 to run" in out


def test_unreadable_spec_files_are_one_line(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00binary")
    assert main(["sweep", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{p}: not a text file" in err and "Traceback" not in err
    p.write_text(_spec_text_ok())
    real = Path.read_text

    def denied(self, *a, **k):
        if self == p:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", denied)  # the tests run as root, which chmod does not stop
    assert main(["sweep", str(p), "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert f"Permission denied [EACCES]: {p}" in err and len(err.splitlines()) == 1
