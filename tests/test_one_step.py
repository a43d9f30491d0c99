"""Width exponents after one SGD step on one example (docs/theory.md §3.3): the core prediction.

Widths 256..4096 (base 64), 6 seeds, tanh MLP with 2 hidden layers, float64, lr small enough for
linear response. Finite widths bend every curve a little, so the kernel-regime prediction is
checked as a difference of slopes against muP, which the theory makes exact.
"""

import pytest

from paramlab.measure.one_step import width_sweep

WIDTHS = [256, 512, 1024, 2048, 4096]


@pytest.fixture(scope="module")
def sweep():
    return width_sweep(["sp", "sp-stable", "ntk", "mf", "mup"], WIDTHS, seeds=6, lr=1e-3,
                       quantities=("R/hidden", "df"))


def slope(sweep, scheme, q):
    return sweep[scheme]["slopes"][q]


@pytest.mark.slow
def test_feature_learning_schemes_move_hidden_features_at_every_width(sweep):
    for s in ("mup", "mf"):
        assert abs(slope(sweep, s, "R/hidden")) < 0.15, (s, slope(sweep, s, "R/hidden"))
        assert abs(slope(sweep, s, "df")) < 0.15  # stable: the output update does not grow or vanish


@pytest.mark.slow
def test_kernel_regime_schemes_freeze_features_like_root_width(sweep):
    ref = slope(sweep, "mup", "R/hidden")
    for s in ("ntk", "sp-stable"):
        diff = slope(sweep, s, "R/hidden") - ref
        assert abs(diff + 0.5) < 0.15, (s, diff)
        assert abs(slope(sweep, s, "df")) < 0.15, (s, slope(sweep, s, "df"))  # still nontrivial


@pytest.mark.slow
def test_sp_at_fixed_lr_output_update_grows_with_width(sweep):
    assert slope(sweep, "sp", "df") > 0.3, slope(sweep, "sp", "df")
