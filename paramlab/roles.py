"""Which role each parameter plays as width grows: input, hidden, output, vector or scalar; one per *use*.

A parameter's *width dims* are the dimensions that scale with width. paramlab stores them as the
`mup` package's base-shape format does (`mup/shape.py`): per parameter a tuple with, for each dim,
its size at the base width if it is a width dim, else None. They come from

* a base model and a model at another width ("delta"): a dim that differs is a width dim (mup's rule);
  without delta, every differing dim must grow by the same factor (else the base is refused, naming
  the tensor: a base with d_in 5 for a model with d_in 4 is a mistake, not a width);
* a `mup` `.bsh` base-shapes file (yaml; `null` = finite dim), or a model already set up by `mup`;

and the role follows from which of the parameter's fan-in / fan-out dims are width dims (TP5 §J.1,
"vector-like" / "matrix-like"; docs/theory.md §1.3). Where fan-in and fan-out live depends on the module
that uses the tensor (`paramlab.layouts`: an nn.Embedding's (V, d) weight has fan-out d, an
nn.Linear's (V, d) weight has fan-in d):

    fan_out grows, fan_in fixed  -> input     (first layer, embeddings)
    both grow                    -> hidden
    fan_in grows, fan_out fixed  -> output    (readout)
    1-D and grows                -> vector    (biases, norm gains)
    nothing grows                -> scalar    (readout bias)

A tensor held by several modules (an embedding tied to its readout) has one `Use` per module, and
each use its own role: the embedding's weight is an input, the same tensor in the readout an output.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Mapping

from torch import nn

from .layouts import KIND_AXES, VECTOR_KINDS, Layout, fan_in, layout_of, owned_parameters  # noqa: F401 (fan_in re-exported)

WidthDims = tuple  # tuple[int | None, ...]: base size of each width dim, None for a fixed dim

# torch's norm layers (their gains and biases are vectors; see the norm entries of paramlab.layouts)
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
if hasattr(nn, "RMSNorm"):
    NORM_TYPES = NORM_TYPES + (nn.RMSNorm,)


@dataclass(frozen=True)
class Use:
    """One place a tensor is used: a module that holds it (a tensor tied into two modules has two uses).

    `name` is how this use spells the tensor (`lm_head.weight`); `tensor` is the tensor's own name,
    the first under which `named_parameters` lists it (`model.embed_tokens.weight`).
    """

    name: str
    tensor: str
    module: str  # the module that uses it ('' for the root)
    attr: str  # attribute path inside that module ('weight', 'out_proj.weight')
    layout: Layout
    kind: str


def find_uses(model: nn.Module) -> dict[str, list[Use]]:
    """tensor name -> its uses, in module order. A tensor held by two modules (tied embeddings) has two.

    Children that a module uses itself (`Layout.claims`, e.g. MultiheadAttention's out_proj) are not
    uses of their own: their parameters are uses of the claiming module.
    """
    canon = {}
    for name, p in model.named_parameters():
        canon.setdefault(id(p), name)
    claimed = set()
    modules = list(model.named_modules())
    for _, mod in modules:
        for child in layout_of(mod).claims:
            if isinstance(getattr(mod, child, None), nn.Module):
                claimed.add(id(getattr(mod, child)))
    uses: dict[str, list[Use]] = {n: [] for n in canon.values()}
    for mname, mod in modules:
        if id(mod) in claimed:
            continue
        layout = layout_of(mod)
        for pname, p in owned_parameters(mod, layout):
            if id(p) not in canon:  # a parameter the model does not list (should not happen)
                continue
            uname = f"{mname}.{pname}" if mname else pname
            uses[canon[id(p)]].append(Use(uname, canon[id(p)], mname, pname, layout, layout.kind(pname)))
    return uses


def param_kinds(model: nn.Module) -> dict[str, str]:
    """name -> kind of every tensor, as its first use sees it (see `find_uses` for every use)."""
    return {name: (us[0].kind if us else "other") for name, us in find_uses(model).items()}


def infer_role(kind: str, width_dims: WidthDims) -> str | None:
    """Role from a parameter's kind and width dims, or None if paramlab cannot tell (kind 'other', >=2-D)."""
    grows = [d is not None for d in width_dims]
    if len(grows) <= 1 or kind in VECTOR_KINDS:
        return "vector" if any(grows) else "scalar"
    if kind not in KIND_AXES:
        return None
    fan_out, fan_in_ = KIND_AXES[kind]
    if any(g for i, g in enumerate(grows) if i not in (fan_out, fan_in_)):
        return None  # a kernel-size dim that grows: not a width-scaled layer paramlab understands
    return {(True, True): "hidden", (True, False): "input", (False, True): "output", (False, False): "scalar"}[
        (grows[fan_out], grows[fan_in_])
    ]


def width_mult(shape: tuple[int, ...], width_dims: WidthDims) -> float:
    """m of a tensor: current / base size of its last width dim (fan_in for matrices), 1 if none.

    Same rule as `mup`'s `InfShape.width_mult()` (the "main" dim is the last infinite one).
    """
    for size, base in zip(reversed(tuple(shape)), reversed(tuple(width_dims))):
        if base is not None:
            return size / base
    return 1.0


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
    device is fine) or dicts of shapes. Checked, naming the tensor: the ranks agree; with `delta`, a
    dim that base and delta agree on (a fixed dim) has the same size in the model; without it, every
    dim that differs grows by the same factor (a dim that differs by another factor, e.g. d_in 5 in
    the base and 4 in the model, is a mistake, not a width).
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
        if delta is not None:
            for i, (si, bi, di) in enumerate(zip(shp, b, d)):
                if bi == di and si != bi:
                    raise ValueError(
                        f"parameter {name!r}: dim {i} is {si} in the model but {bi} in both base and delta, so it is not "
                        f"a width dim and must be the same in all three: build base and delta with the model's non-width "
                        f"sizes (shapes {tuple(shp)} / {tuple(b)} / {tuple(d)})"
                    )
        out[name] = tuple(bi if bi != di else None for bi, di in zip(b, d))
    if delta is None:
        _check_one_width_ratio(target, out)
    return out


def _check_one_width_ratio(shapes: Mapping[str, tuple], dims: Mapping[str, WidthDims]) -> None:
    """Every width dim of a model grows by the same factor from its base (else name the odd tensor)."""
    ratios = Counter(Fraction(s, b) for n, shp in shapes.items() for s, b in zip(shp, dims[n]) if b)
    if len(ratios) <= 1:
        return
    main = ratios.most_common(1)[0][0]
    for n, shp in shapes.items():
        for i, (s, b) in enumerate(zip(shp, dims[n])):
            if b and Fraction(s, b) != main:
                raise ValueError(
                    f"parameter {n!r}: dim {i} is {s} in the model but {b} in the base, a factor of {float(Fraction(s, b)):.4g}, "
                    f"while the model's other width dims grow by {float(main):.4g}. If dim {i} is not a width (an input "
                    "size, a vocabulary), build the base with the model's size there; if the model really has widths "
                    "that grow by different factors, pass delta= (the model at a second width) to mark them"
                )


def load_bsh(path: str | Path) -> dict[str, WidthDims]:
    """Read a `mup` base-shapes (.bsh) yaml file: name -> list of base dims (null = fixed dim)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a mup base-shapes file (binary, not yaml text)") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not a mup base-shapes file (yaml error: {str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mup base-shapes file (expected a yaml mapping name -> dims)")
    for k, v in data.items():
        if not (isinstance(v, list) and all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0)
                                            for d in v)):
            raise ValueError(f"{path}: {k!r} has dims {v!r}; a mup base-shapes file gives each parameter a list of "
                             "base dims, a positive int per width dim and null per fixed dim (e.g. [64, null])")
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
        dims = load_bsh(base) if isinstance(base, (str, Path)) else {k: tuple(v) for k, v in base.items()}
        shapes = _shapes(model)
        label = base if isinstance(base, (str, Path)) else "base shapes"
        if set(dims) != set(shapes):
            raise ValueError(
                f"{label}: names do not match the model (extra: {sorted(set(dims) - set(shapes))[:5]}, "
                f"missing: {sorted(set(shapes) - set(dims))[:5]})"
            )
        for n, shp in shapes.items():
            if len(dims[n]) != len(shp):
                raise ValueError(f"{label}: parameter {n!r} has rank {len(shp)} {tuple(shp)} in the model but "
                                 f"{len(dims[n])} dims {list(dims[n])} in the base shapes: regenerate them from the model")
            bad = [i for i, b in enumerate(dims[n]) if b is not None and (not isinstance(b, int) or b <= 0)]
            if bad:
                raise ValueError(f"{label}: parameter {n!r} has base dims {list(dims[n])}: a width dim's base size "
                                 "must be a positive int (null marks a fixed dim)")
    else:
        dims = width_dims_from_models(model, base, delta)
    for n, shp in _shapes(model).items():  # m = size / base: neither may be 0
        if any(b is not None and (b == 0 or size == 0) for size, b in zip(shp, dims.get(n, ()))):
            raise ValueError(f"parameter {n!r} has shape {tuple(shp)} and base dims {list(dims[n])}: a width of 0 "
                             "(in the model or its base) has no width multiplier; build both with a positive width")
    return dims

