import subprocess
import sys

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
