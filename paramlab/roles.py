"""Which role each parameter plays as width grows: input, hidden, output, vector or scalar.

A parameter's *width dims* are the dimensions that scale with width. paramlab stores them as the
`mup` package's base-shape format does (`mup/shape.py`): per parameter a tuple with, for each dim,
its size at the base width if it is a width dim, else None. They come from

* a base model and a model at another width ("delta"): a dim that differs is a width dim (mup's rule);
* a `mup` `.bsh` base-shapes file (yaml; `null` = finite dim), or a model already set up by `mup`;

and the role follows from which of the parameter's fan-in / fan-out dims are width dims (TP5 §J.1,
"vector-like" / "matrix-like"; DESIGN.md §1):

    fan_out grows, fan_in fixed  -> input     (first layer, embeddings)
    both grow                    -> hidden
    fan_in grows, fan_out fixed  -> output    (readout)
    1-D and grows                -> vector    (biases, norm gains)
    nothing grows                -> scalar    (readout bias)
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from torch import nn

WidthDims = tuple  # tuple[int | None, ...]: base size of each width dim, None for a fixed dim

# Module kinds paramlab knows the fan-in/fan-out layout of, and can install multipliers on.
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
if hasattr(nn, "RMSNorm"):
    NORM_TYPES = NORM_TYPES + (nn.RMSNorm,)

# weight layout per kind: (fan_out axis, fan_in axis)
_AXES = {"linear": (0, 1), "conv": (0, 1), "embedding": (1, 0)}


def param_kind(module: nn.Module, pname: str) -> str:
    """The kind of parameter `pname` of `module`: linear, conv, embedding, norm, bias or other."""
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and not isinstance(
        module, nn.modules.conv._ConvTransposeNd
    ):
        if pname == "weight":
            return "linear" if isinstance(module, nn.Linear) else "conv"
        if pname == "bias":
            return "bias"
    if isinstance(module, nn.Embedding) and pname == "weight":
        return "embedding"
    if isinstance(module, NORM_TYPES) and pname in ("weight", "bias"):
        return "norm"
    return "other"


def param_kinds(model: nn.Module) -> dict[str, str]:
    """name -> kind for every parameter (shared parameters appear once, under their first name)."""
    kinds = {}
    seen = set()
    for mname, mod in model.named_modules():
        for pname, p in mod._parameters.items():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            kinds[f"{mname}.{pname}" if mname else pname] = param_kind(mod, pname)
    return kinds


def infer_role(kind: str, width_dims: WidthDims) -> str | None:
    """Role from a parameter's kind and width dims, or None if paramlab cannot tell (kind 'other', >=2-D)."""
    grows = [d is not None for d in width_dims]
    if len(grows) <= 1:
        return "vector" if any(grows) else "scalar"
    if kind not in _AXES:
        return None
    fan_out, fan_in = _AXES[kind]
    if any(g for i, g in enumerate(grows) if i not in (fan_out, fan_in)):
        return None  # a kernel-size dim that grows: not a width-scaled layer paramlab understands
    return {(True, True): "hidden", (True, False): "input", (False, True): "output", (False, False): "scalar"}[
        (grows[fan_out], grows[fan_in])
    ]


def width_mult(shape: tuple[int, ...], width_dims: WidthDims) -> float:
    """m of a tensor: current / base size of its last width dim (fan_in for matrices), 1 if none.

    Same rule as `mup`'s `InfShape.width_mult()` (the "main" dim is the last infinite one).
    """
    for size, base in zip(reversed(tuple(shape)), reversed(tuple(width_dims))):
        if base is not None:
            return size / base
    return 1.0


def fan_in(kind: str, shape: tuple[int, ...]) -> int:
    """Fan-in of a weight: product of all dims but fan_out (1 for embeddings and 1-D tensors)."""
    if kind == "embedding" or len(shape) <= 1:
        return 1
    n = 1
    for s in shape[1:]:
        n *= s
    return n


# -- where width dims come from -------------------------------------------------------------------


def _shapes(x) -> dict[str, tuple]:
    if isinstance(x, nn.Module):
        return {n: tuple(p.shape) for n, p in x.named_parameters()}
    if isinstance(x, Mapping):
        return {n: tuple(s) for n, s in x.items()}
    raise TypeError(f"expected an nn.Module or a dict of shapes, got {type(x).__name__}")


def width_dims_from_models(model, base, delta=None) -> dict[str, WidthDims]:
    """mup's rule: a dim is a width dim iff it differs between `base` and `delta` (default: `model`).

    Returns name -> tuple of base sizes (None for fixed dims). Shapes may come from modules (meta
    device is fine) or dicts of shapes.
    """
    target, base_s = _shapes(model), _shapes(base)
    other = _shapes(delta) if delta is not None else target
    for label, s in (("base", base_s), ("delta" if delta is not None else "model", other)):
        if set(s) != set(target):
            extra, missing = sorted(set(s) - set(target)), sorted(set(target) - set(s))
            raise ValueError(
                f"{label} and model have different parameters (extra in {label}: {extra[:5]}, missing: {missing[:5]}): "
                "build the base/delta models with the same architecture, differing only in width"
            )
    out = {}
    for name, shp in target.items():
        b, d = base_s[name], other[name]
        if not (len(b) == len(shp) == len(d)):
            raise ValueError(f"parameter {name!r} has rank {len(shp)} in model but {len(b)} in base / {len(d)} in delta")
        out[name] = tuple(bi if bi != di else None for bi, di in zip(b, d))
    return out


def load_bsh(path: str | Path) -> dict[str, WidthDims]:
    """Read a `mup` base-shapes (.bsh) yaml file: name -> list of base dims (null = fixed dim)."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mup base-shapes file (expected a yaml mapping name -> dims)")
    return {k: tuple(v) for k, v in data.items()}


def save_bsh(width_dims: Mapping[str, WidthDims], path: str | Path) -> None:
    """Write width dims as a `mup`-compatible .bsh file (readable by `mup.set_base_shapes`)."""
    import yaml

    body = yaml.dump({k: list(v) for k, v in width_dims.items()}, indent=4)
    Path(path).write_text(
        "# This is a base shape file encoded in yaml\n"
        "# - `null` indicates a dimension is \"finite\", i.e. a non-\"width\" dimension\n"
        "# - a number indicates the base dimension of an \"infinite\" dimension, i.e. some notion of \"width\"\n" + body
    )


def width_dims_from_mup(model: nn.Module) -> dict[str, WidthDims]:
    """Width dims of a model set up with `mup.set_base_shapes` (read from each `p.infshape`)."""
    out = {}
    for name, p in model.named_parameters():
        if not hasattr(p, "infshape"):
            raise ValueError(f"parameter {name!r} has no mup infshape: call mup.set_base_shapes(model, base) first")
        out[name] = tuple(d.base_dim if d.isinf() else None for d in p.infshape)
    return out


def _is_width_dims(d: Mapping) -> bool:
    """A dict of width dims has a None (fixed dim) somewhere; a dict of plain shapes has none."""
    return any(x is None for v in d.values() for x in v)


def resolve_width_dims(model: nn.Module, base=None, delta=None) -> dict[str, WidthDims]:
    """Width dims of `model` from `base`: a module or dict of shapes at the base width (with `delta`),
    a mup .bsh path, a dict of width dims (as `load_bsh` returns), a mup-configured model, or None when
    `model` itself was set up by mup."""
    if base is None:
        if delta is not None:
            raise ValueError("delta= needs base=: pass the model at the base width too")
        if any(hasattr(p, "infshape") for p in model.parameters()):
            return width_dims_from_mup(model)
        raise ValueError(
            "paramlab needs to know which dims are widths: pass base= (the same model at the base width, "
            "e.g. built on device='meta'), a mup .bsh file, or a model set up by mup.set_base_shapes"
        )
    if isinstance(base, nn.Module) and delta is None and any(hasattr(p, "infshape") for p in base.parameters()):
        base = width_dims_from_mup(base)  # a mup-configured model: take its width dims, like a .bsh file
    if isinstance(base, (str, Path)) or (isinstance(base, Mapping) and _is_width_dims(base)):
        dims = load_bsh(base) if isinstance(base, (str, Path)) else dict(base)
        shapes = _shapes(model)
        if set(dims) != set(shapes):
            raise ValueError(
                f"{base if isinstance(base, (str, Path)) else 'base shapes'}: names do not match the model (extra: {sorted(set(dims) - set(shapes))[:5]}, "
                f"missing: {sorted(set(shapes) - set(dims))[:5]})"
            )
        return dims
    return width_dims_from_models(model, base, delta)

