"""The README's first screen runs as written: the own-model quick start, its coordinate check (which must
pass under muP, and fail under SP: the negative control) and the lr_sweep recipe (at a smaller grid)."""

import re
import warnings
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_quick_start_coord_check_and_lr_sweep(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    own, check, sweep = _blocks()[:3]
    ns: dict = {}
    exec(compile(own, "README:own", "exec"), ns)
    assert "hid.weight" in str(ns["pl"].role_table(ns["model"], "adam"))
    exec(compile(check, "README:coord_check", "exec"), ns)
    assert ns["res"].passed, ns["res"].failures()
    assert (tmp_path / "coord.png").exists()
    # negative control: the same model and check under SP fails (outputs grow with width)
    pl, MyNet = ns["pl"], ns["MyNet"]
    ns["build"] = lambda w: pl.parameterize(MyNet(w), "sp", base=MyNet(64, device="meta"), delta=MyNet(128, device="meta"))
    exec(compile(check.replace('plot_coord(res, "coord.png", title="muP, MyNet")', ""), "README:sp", "exec"), ns)
    assert not ns["res"].passed
    # the lr_sweep recipe, on a smaller grid (the README's is 90 runs)
    ns["build"] = lambda w: pl.parameterize(MyNet(w), "mup", base=MyNet(64, device="meta"), delta=MyNet(128, device="meta"))
    small = (sweep.replace("widths=[64, 128, 256], log2_lrs=range(-12, -2), seeds=3",
                           "widths=[64, 128], log2_lrs=range(-9, -5), seeds=1")
             .replace("range(100)", "range(5)").replace("build(8192)", "build(256)"))
    assert small != sweep
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 5 steps on 4 lrs: the optimum may sit at the grid edge
        exec(compile(small, "README:lr_sweep", "exec"), ns)
    assert ns["res"].losses.shape == (2, 1, 4)
    assert ns["opt"].param_groups[0]["lr"] == ns["res"].lr
