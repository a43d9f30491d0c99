import subprocess
import sys
import warnings

from paramlab.cli import main
from paramlab.demo import run_demo


def test_schemes_and_roles_commands(capsys):
    assert main(["schemes", "-v"]) == 0
    out = capsys.readouterr().out
    assert "| mup |" in out and "attention logits" in out
    assert main(["roles", "mlp", "--scheme", "ntk", "--width", "128", "--set", "d_in=5", "--set", "d_out=2"]) == 0
    out = capsys.readouterr().out
    assert "layers.1.weight" in out and "hidden" in out and "scheme ntk" in out


def test_roles_keeps_the_builder_s_own_defaults(capsys):
    # only --width is given: scheme, base width, depth, kernel size are cnn's own
    assert main(["roles", "cnn", "--width", "128", "--set", "in_channels=1", "--set", "d_out=10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "scheme mup"
    hidden = next(line for line in lines if line.startswith("blocks.1.conv.weight"))
    assert hidden.split()[1:4] == ["128x128x3", "hidden", "2"]  # m = 128 / BASE_WIDTH 64


def test_cli_errors_are_clean(capsys):
    assert main(["roles", "mlp", "--scheme", "nope", "--set", "d_in=5", "--set", "d_out=2"]) == 2
    assert "known schemes" in capsys.readouterr().err
    assert main(["roles", "resnet", "--set", "d_in=5"]) == 2


def test_demo_end_to_end(tmp_path, capsys):
    res = run_demo(out=tmp_path, widths=(64, 128), seeds=1)
    assert (tmp_path / "one_step_features_vs_width.png").stat().st_size > 10_000
    assert "| mup |" in capsys.readouterr().out
    assert set(res["results"]) == {"sp", "sp-stable", "ntk", "mf", "mup"}


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "paramlab", "schemes", "mup"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "| mup |" in r.stdout


# -- the first hour's command line --------------------------------------------------------------------------


def test_run_help_lists_experiments_with_times(capsys):
    from paramlab.experiments import NAMES

    assert main(["run", "-h"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in NAMES) and "quick: " in out and "default: " in out
    assert "lr-transfer" not in out.split("NAME may also")[0]  # one spelling per experiment in the list
    r = subprocess.run([sys.executable, "-m", "paramlab", "run", "lr-transfer", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "paramlab run lr_transfer" in r.stdout and "time on 2 CPU cores" in r.stdout
    assert main(["run"]) == 2  # no experiment named: the list, and a usage error


def test_version_and_roles_names_missing_keys(capsys):
    r = subprocess.run([sys.executable, "-m", "paramlab", "--version"], capture_output=True, text=True, timeout=120)
    from paramlab import __version__

    assert r.returncode == 0 and r.stdout.strip() == f"paramlab {__version__}"
    assert main(["roles", "mlp", "--width", "256"]) == 2
    err = capsys.readouterr().err
    assert "--set d_in=... --set d_out=..." in err and "Traceback" not in err


def _fake_store(root):
    from paramlab.tracking import start_run

    for s in ("ntk", "mup"):
        for w in (64, 128):
            run = start_run({"scheme": s, "width": w, "seed": 0}, experiment="x", group="g", root=root,
                            name=f"{s}-{w}", use_wandb=False)
            run.summary({"loss": 1.0 / w if s == "ntk" else 0.5, "gain": 0.1 * w / 64 - 0.15})
            run.finish()
    start_run({"scheme": "mup", "width": 256, "seed": 0}, experiment="x", group="g", root=root, name="cut-off",
              use_wandb=False)  # never finished: compare leaves it out with a warning
    return root / "x" / "g"


def test_compare_unknown_metric_is_an_error_and_warnings_are_one_line(tmp_path, capsys):
    group = _fake_store(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["compare", str(group), "--out", str(tmp_path / "c")]) == 0
        cap = capsys.readouterr()
        assert main(["compare", str(group), "--metric", "los", "--out", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
    assert "unknown metric(s) 'los'" in err and "gain, loss" in err
    warn = [line for line in cap.err.splitlines() if "warning" in line]
    assert len(warn) == 1 and warn[0].startswith("paramlab: warning: compare: 1 runs left out, not finished")
    assert "RecordWarning" not in cap.err and ".py:" not in cap.err
    # one slope definition per row, named: loss > 0 is a width exponent, gain (crosses 0) a change per 2x width
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in cap.out.splitlines()
            if line.startswith("| ") and "metric" not in line}
    assert rows == {"gain": "change per 2x width", "loss": "width exponent"}
    assert "| gain | change per 2x width | +0.100 | +0.100 |" in cap.out
