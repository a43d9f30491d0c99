"""paramlab.plan_options: one keyword contract for make_plan, parameterize and every builder."""

import math

import pytest
import torch
from torch import nn

import paramlab as pl
from paramlab.models.activations import GAINS
from paramlab.plan_options import PlanOptions


def test_one_set_of_defaults_and_checks():
    assert PlanOptions().as_kwargs() == {"gain": None, "readout_gain": 1.0, "output_mult": 1.0, "bias_std": 0.0,
                                         "embedding_std": 1.0, "readout_zero_init": False, "init": None}
    assert PlanOptions(gain=None).with_gain(2.0).gain == 2.0 and PlanOptions(gain=3.0).with_gain(2.0).gain == 3.0
    for kw, match in [({"gain": 0}, "gain must be positive"), ({"bias_std": -1}, "bias_std must be >= 0"),
                      ({"output_mult": math.inf}, "finite"), ({"readout_zero_init": 1}, "True or False"),
                      ({"init": ["a"]}, "mapping")]:
        with pytest.raises((TypeError, ValueError), match=match):
            PlanOptions(**kw)


def test_every_builder_and_parameterize_refuse_an_unknown_keyword():
    for build in (lambda: pl.mlp(4, 2, 64, gian=2.0), lambda: pl.cnn(1, 2, 64, gian=2.0),
                  lambda: pl.transformer(16, 64, gian=2.0),
                  lambda: pl.parameterize(nn.Linear(4, 8), "mup", base=nn.Linear(4, 2, device="meta"), gian=2.0)):
        with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['gian'\]: the plan options are gain, readout_gain"):
            build()


def std_of(model, name):
    return pl.get_plan(model)[name].base_std


def test_default_gain_is_the_activation_s_he_gain_in_builders_and_1_in_parameterize():
    assert std_of(pl.mlp(10, 1, 64, activation="relu"), "layers.1.weight") == pytest.approx(GAINS["relu"] / 8)
    assert std_of(pl.mlp(10, 1, 64, activation="tanh"), "layers.1.weight") == pytest.approx(1 / 8)
    assert std_of(pl.cnn(1, 1, 64, kernel_size=1), "blocks.1.conv.weight") == pytest.approx(GAINS["relu"] / 8)
    assert std_of(pl.mlp(10, 1, 64, gain=3.0, readout_gain=0.5), "layers.1.weight") == pytest.approx(3 / 8)
    assert std_of(pl.mlp(10, 1, 64, readout_gain=0.5), "readout.weight") == pytest.approx(0.5 / 8)
    own = pl.parameterize(nn.Linear(64, 64), "mup", base=nn.Linear(16, 16, device="meta"))
    assert std_of(own, "weight") == pytest.approx(1 / 4)
    # the transformer's default is 1 (see its docstring)
    assert std_of(pl.transformer(16, 64), "blocks.0.attn.q.weight") == pytest.approx(1 / 8)


def test_builders_take_sizes_positionally_and_the_rest_by_keyword():
    with pytest.raises(TypeError):
        pl.mlp(4, 2, 64, 3)  # depth is keyword-only
    m = pl.mlp(4, 2, 64, depth=3, bias_std=0.5, output_mult=0.25, readout_zero_init=True, seed=0)
    assert len(m.layers) == 3 and torch.all(m.readout.weight == 0)
    assert pl.get_plan(m)["readout.weight"].const == 0.25 and pl.get_plan(m)["layers.0.bias"].base_std == 0.5
