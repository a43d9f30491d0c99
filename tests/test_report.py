"""paramlab.report: the tables and plots (they format and draw; the numbers come from elsewhere)."""


import numpy as np
import pytest
import torch

import paramlab as pl
from paramlab.measure.coord import coord_check
from paramlab.measure.coord_result import CoordResult
from paramlab.report import markdown_table, plot_coord, plot_vs_width, schemes_table, slope_table, text_table
from paramlab.schemes import PRESETS


def test_markdown_and_text_tables():
    md = markdown_table(["a", "b"], [[1, 0.123456], ["x", float("nan")]])
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.123 |", "| x | nan |"]
    txt = text_table(["name", "v"], [["long-name", 1.5], ["s", 2]]).splitlines()
    assert txt[0] == "name       v" and txt[1] == "---------  ---" and txt[2] == "long-name  1.5"
    assert text_table(["a"], []) == "a\n-"


def test_schemes_table_has_every_preset_and_its_invariants():
    text = schemes_table()
    assert text.count("\n") == 1 + len(PRESETS) and "| mup |" in text
    row = next(r for r in text.splitlines() if r.startswith("| mup |"))
    assert "| 0, 0.5, 1, 0 |" in row  # mup's effective init std exponents


def test_coord_result_round_trips_through_json_data_for_its_table_and_plot(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 6, generator=g), torch.randn(8, 1, generator=g)
    make = lambda w: pl.mlp(6, 1, w, depth=2, scheme="mup", base_width=32, activation="tanh")  # noqa: E731
    res = coord_check(make, [32, 64], x, y, steps=1, seeds=1)
    data = res.to_dict(records=("act/l1",), fits=("act", "dact"))
    assert {r["quantity"] for r in data["records"]} == {"act/l1"}
    back = CoordResult.from_dict(data)
    assert slope_table(back) == slope_table(res, quantities=("act", "dact"))
    assert back.passed == all(f["passed"] for f in res.fits if f["quantity"].startswith(("act", "dact")))
    plot_coord(back, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="no records"):
        plot_coord(back, quantity="dW/rms")
    with pytest.raises(ValueError, match="fmt"):
        slope_table(res, fmt="html")


def test_plot_vs_width_writes_a_png_with_fitted_slopes(tmp_path):
    widths = [64, 128, 256]
    path = plot_vs_width({"mup": (widths, np.array([[1.0, 1.1], [1.0, 0.9], [1.0, 1.0]])),
                          "ntk": (widths, [1.0, 2 ** -0.5, 0.5])}, tmp_path / "p.png", "movement",
                         hlines={"kernel": 0.3})
    assert path.stat().st_size > 5_000
