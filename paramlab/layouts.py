"""Layer layouts as data: what paramlab needs to know about each module type it meets.

One table keyed by module type (walked along the class's MRO, so subclasses inherit their parent's
entry). Per type it says

    kinds        attribute name -> parameter kind (linear, linear_t, conv, embedding, norm, bias, other);
                 the kind fixes where fan-in and fan-out live (KIND_AXES) and the default init
    multiplier   how a forward multiplier m^-a is installed on this module:
                   input    scale the input (forward pre-hook), the layer is linear in it (Linear, Conv,
                            HF Conv1D); with a bias whose multiplier differs, an affine output hook
                   output   out * w_mult + (b_mult - w_mult) * bias (Embedding, norms)
                   builtin  the module applies its own multiplier (mup's MuReadout: output_mult / width_mult());
                            paramlab checks that it equals the scheme's and adds nothing
                   managed  the module's owner sets it from the plan (paramlab's TiedReadout, via apply_plan)
                   mha      nn.MultiheadAttention: inputs of q/k/v scaled by a pre-hook; out_proj, which the
                            functional call reads directly (a hook on it never fires), by an output hook
                   None     paramlab cannot install one: a multiplier other than 1 is refused
    bias_dim     the axis of the output a bias broadcasts on (-1: trailing dims, 1: channels)
    attention    how the attention-logit scale is set: hf (the module's `scaling` float, HF
                 transformers), mha (cannot be set: refused unless the scheme keeps 1/sqrt(d_head)),
                 managed (paramlab's own Attention, set by its model's apply_plan), or None
    claims       children whose parameters this module uses itself (MHA's out_proj)

Foreign classes (HF transformers, mup) are keyed by their qualified names, so neither package is
imported here. HF attention classes are many (one per model family) and share one contract: a
float `scaling` applied to q.k and an int `head_dim`; they are matched by that contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from torch import nn

# weight layout per kind: (fan_out axis, fan_in axis)
KIND_AXES = {"linear": (0, 1), "conv": (0, 1), "embedding": (1, 0), "linear_t": (1, 0)}
# kinds whose tensors are vectors whatever their rank (a bias of shape (1, 1, E) is still a bias)
VECTOR_KINDS = ("bias", "norm")


@dataclass(frozen=True)
class Layout:
    """How paramlab reads and scales one module type (see the module docstring)."""

    name: str
    kinds: Mapping[str, str] = field(default_factory=dict)
    multiplier: str | None = None
    bias_dim: int = -1
    attention: str | None = None
    claims: tuple[str, ...] = ()

    def kind(self, pname: str) -> str:
        return self.kinds.get(pname, "other")


_LINEAR = Layout("linear", {"weight": "linear", "bias": "bias"}, "input", -1)
_CONV = Layout("conv", {"weight": "conv", "bias": "bias"}, "input", 1)
_EMBEDDING = Layout("embedding", {"weight": "embedding"}, "output", -1)
_NORM_LAST = Layout("norm", {"weight": "norm", "bias": "norm"}, "output", -1)  # normalizes trailing dims
_NORM_CHANNEL = Layout("norm", {"weight": "norm", "bias": "norm"}, "output", 1)  # (N, C, ...) layouts
_MHA = Layout(
    "multihead_attention",
    {"in_proj_weight": "linear", "q_proj_weight": "linear", "k_proj_weight": "linear", "v_proj_weight": "linear",
     "in_proj_bias": "bias", "bias_k": "bias", "bias_v": "bias", "out_proj.weight": "linear", "out_proj.bias": "bias"},
    "mha", -1, attention="mha", claims=("out_proj",),
)
UNKNOWN = Layout("unknown")

# type -> layout; looked up along the MRO. Transposed convolutions are absent on purpose: their
# weight is (in, out / groups, *k) and their fan-in depends on the stride, so paramlab refuses them
# (roles= and init= make them explicit).
TABLE: dict[object, Layout] = {
    nn.Linear: _LINEAR,
    nn.Conv1d: _CONV, nn.Conv2d: _CONV, nn.Conv3d: _CONV,
    nn.Embedding: _EMBEDDING, nn.EmbeddingBag: _EMBEDDING,
    nn.LayerNorm: _NORM_LAST,
    nn.GroupNorm: _NORM_CHANNEL,
    nn.modules.batchnorm._BatchNorm: _NORM_CHANNEL,
    nn.modules.instancenorm._InstanceNorm: _NORM_CHANNEL,
    nn.MultiheadAttention: _MHA,
    # HF transformers: GPT-2 / GPT / CTRL's Conv1D stores its weight in x out and computes x @ W + b
    "transformers.pytorch_utils.Conv1D": Layout("hf_conv1d", {"weight": "linear_t", "bias": "bias"}, "input", -1),
    # mup: the readout divides its input by width_mult() itself (MuSharedReadout inherits this entry)
    "mup.layer.MuReadout": Layout("mup_readout", {"weight": "linear", "bias": "bias"}, "builtin", -1),
    # paramlab's own Transformer: its model's apply_plan sets the attention scale and the tied readout's multiplier
    "paramlab.models.transformer.Attention": Layout("paramlab_attention", attention="managed"),
    "paramlab.models.transformer.TiedReadout": Layout("paramlab_tied_readout", {"weight": "linear", "bias": "bias"}, "managed"),
}
if hasattr(nn, "RMSNorm"):
    TABLE[nn.RMSNorm] = _NORM_LAST

_HF_ATTENTION = Layout("hf_attention", attention="hf")


def _key(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def is_hf_attention(module: nn.Module) -> bool:
    """An HF transformers attention module: a float `scaling` on q.k and an int `head_dim`."""
    return (type(module).__module__.startswith("transformers.")
            and isinstance(getattr(module, "scaling", None), float)
            and isinstance(getattr(module, "head_dim", None), int))


def layout_of(module: nn.Module) -> Layout:
    """The layout of `module`'s type (UNKNOWN if paramlab has none)."""
    for cls in type(module).__mro__:
        hit = TABLE.get(cls) or TABLE.get(_key(cls))
        if hit is not None:
            return hit
    if is_hf_attention(module):
        return _HF_ATTENTION
    return UNKNOWN


def owned_parameters(module: nn.Module, layout: Layout):
    """(attribute name, parameter) the module uses itself: its own and those of the children it claims."""
    for pname, p in module._parameters.items():
        if p is not None:
            yield pname, p
    for child in layout.claims:
        sub = getattr(module, child, None)
        if sub is not None:
            for pname, p in sub._parameters.items():
                if p is not None:
                    yield f"{child}.{pname}", p


def fan_in(kind: str, shape: tuple[int, ...]) -> int:
    """Fan-in of a weight of this kind: its fan_in dim times any kernel dims (1 for embeddings, vectors)."""
    if kind == "embedding" or len(shape) <= 1:
        return 1
    if kind == "linear_t":
        return shape[0]
    n = 1
    for s in shape[1:]:
        n *= s
    return n
