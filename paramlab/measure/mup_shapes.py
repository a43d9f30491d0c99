"""The `mup` package adapter of the coordinate check: what a model set up with ``mup.set_base_shapes``
(parameters carrying ``infshape``) and trained with MuSGD / MuAdam looks like to `coord_predict`.

Roles follow from the infshapes as in mup: a `MuReadout` weight is the output (its forward multiplier
output_mult / width_mult is read from the module), two infinite dims hidden, one infinite dim input
(matrices) or vector, none scalar. Their exponents are the muP invariants of THEORY.md §4.5.
"""

from __future__ import annotations

from torch import nn

from ..schemes import MUP, ROLES
from .coord_predict import TensorInfo, parameter_owners


# muP invariants of a model set up with the `mup` package and trained with MuSGD / MuAdam: those of
# the muP preset (THEORY.md §4.5): role -> (effective init std, SGD step, Adam step) exponents of 1/m.
MUP_PACKAGE_INVARIANTS = {r: tuple(float(v) for v in MUP[r].invariants()) for r in ROLES}


def mup_tensor_infos(model: nn.Module) -> dict[str, TensorInfo]:
    """name -> TensorInfo from `mup` infshapes; {} unless every parameter has one."""
    owner = parameter_owners(model)
    mods = dict(model.named_modules())
    infos = {}
    for name, p in model.named_parameters():
        shape = getattr(p, "infshape", None)
        if shape is None:
            return {}
        mod = mods[owner[name]]
        ninf = shape.ninf()
        is_readout = hasattr(mod, "output_mult") and hasattr(mod, "width_mult")
        mult = 1.0
        if is_readout and name.endswith("weight"):
            role = "output"
            mult = float(mod.output_mult) / float(mod.width_mult())
        elif ninf == 2:
            role = "hidden"
        elif ninf == 1:
            role = "input" if p.dim() >= 2 else "vector"
        else:
            role = "scalar"
        std, sgd, adam = MUP_PACKAGE_INVARIANTS[role]
        infos[name] = TensorInfo(name, owner[name], role, std, sgd, adam, bool((p == 0).all()), mult)
    return infos
