"""paramlab.roles: width dims from a base and a delta model (mup's rule), roles from them, width multipliers."""

import pytest
from torch import nn

from paramlab.roles import NORM_TYPES, fan_in, infer_role, param_kinds, width_dims_from_models, width_mult


class Net(nn.Module):
    def __init__(self, width, device=None):
        super().__init__()
        kw = dict(device=device)
        self.emb = nn.Embedding(11, width, **kw)
        self.conv = nn.Conv1d(3, width, 5, **kw)
        self.hid = nn.Linear(width, width, **kw)
        self.norm = nn.LayerNorm(width, **kw)
        self.out = nn.Linear(width, 7, **kw)


def test_roles_follow_which_of_fan_in_and_fan_out_grow():
    model, base, delta = Net(96), Net(32, "meta"), Net(65, "meta")
    dims = width_dims_from_models(model, base, delta)
    kinds = param_kinds(model)
    roles = {n: infer_role(kinds[n], dims[n]) for n in kinds}
    assert roles == {"emb.weight": "input", "conv.weight": "input", "conv.bias": "vector", "hid.weight": "hidden",
                     "hid.bias": "vector", "norm.weight": "vector", "norm.bias": "vector", "out.weight": "output",
                     "out.bias": "scalar"}
    # m is current / base size of the last width dim: fan_in for a matrix, fan_out for an input weight
    assert width_mult((96, 96), dims["hid.weight"]) == 3.0 and width_mult((7, 96), dims["out.weight"]) == 3.0
    assert width_mult((96, 3, 5), dims["conv.weight"]) == 3.0 and width_mult((7,), dims["out.bias"]) == 1.0
    assert fan_in("conv", (96, 3, 5)) == 15 and fan_in("embedding", (11, 96)) == 1


def test_what_paramlab_cannot_classify_gets_no_role():
    assert infer_role("other", (32, 32)) is None  # a raw 2-D Parameter: the user must say
    assert infer_role("conv", (32, 3, 8)) is None  # a growing kernel-size dim is not a width
    assert infer_role("other", (None,)) == "scalar" and infer_role("other", (32,)) == "vector"


def test_norm_types_cover_torch_norms():
    for mod in (nn.LayerNorm(4), nn.GroupNorm(2, 4), nn.BatchNorm1d(4), nn.InstanceNorm1d(4, affine=True)):
        assert isinstance(mod, NORM_TYPES)
    if hasattr(nn, "RMSNorm"):
        assert isinstance(nn.RMSNorm(4), NORM_TYPES)
    assert not isinstance(nn.Linear(2, 2), NORM_TYPES)


def test_same_shapes_without_delta_mark_no_width_dim():
    dims = width_dims_from_models(Net(32), Net(32, "meta"))
    assert all(all(d is None for d in v) for v in dims.values())
    with pytest.raises(ValueError):
        width_dims_from_models(Net(32), {"emb.weight": (11, 32)})  # the base must cover every parameter
