"""The unit frame: a scheme whose exponents apply to each tensor's own fan, as u-muP states its rules.

Every other scheme is relative: m = width / base width, and at m = 1 it is the SP network with one
learning rate. u-muP (Blake et al. 2024, "u-muP: The Unit-Scaled Maximal Update Parametrization",
arXiv 2407.17465, Table 2 / §4; Graphcore's `unit-scaling` package) has no base shapes: every weight is
drawn N(0, 1) and the rules are written in the tensor's own fan. A scheme with `unit=True` reads its
exponents that way, i.e. with base size 1 for every dim:

    m        the tensor's fan as u-muP counts it: fan-in of a matmul or conv weight (kernel included), the
             width d of an embedding (its lr rule is 1/sqrt(fan-out)), the length of a vector; scalars 1
    init     N(0, sigma^2) with sigma = gain / sqrt(1) = gain (1 by default), embedding_std, readout_gain:
             the plan options' SP init at base size 1, i.e. unit variance
    forward  m^-a (u-muP: hidden 1/sqrt(fan-in), readout 1/fan-in, embedding 1), and a matmul in the
             input role (an MLP's first Linear, whose fan-in is no width) keeps unit scaling's own
             1/sqrt(fan-in): the constant `unit_const`
    lr       lr * m^-c (u-muP Adam: hidden and input 1/sqrt(fan), readout and vectors 1)

Attention in the unit frame has base head dim 1: logits = q.k * attn_mult / d_head^attn (u-muP: attn 1,
q.k * attn_mult / d_head). The architecture's own unit-scaled ops (the scaled GELU / SwiGLU, the attention
output's and the residual sums' tau weights) are the model's, not the parameterization's; `paramlab.depth`'s
'u-mup' rule gives the in-block lr factor depth^-1/2 (base_depth=1).
"""

from __future__ import annotations

from .layouts import fan_in

MATMUL_KINDS = ("linear", "linear_t", "conv")


def unit_fan(kind: str, role: str, shape: tuple) -> float:
    """m of a tensor in the unit frame (see the module docstring)."""
    if role == "scalar" or not shape:
        return 1.0
    if kind in MATMUL_KINDS:
        return float(fan_in(kind, shape))
    if kind == "embedding":
        return float(shape[-1])
    return float(shape[0]) if len(shape) == 1 else float(fan_in("linear", shape))


def unit_const(kind: str, role: str, shape: tuple) -> float:
    """The width-free forward constant of the unit frame: 1/sqrt(fan-in) on an input-role matmul, else 1."""
    return float(fan_in(kind, shape)) ** -0.5 if role == "input" and kind in MATMUL_KINDS else 1.0


def base_shape(shape: tuple) -> tuple:
    """Every dim at base size 1 (the init's fan-in is 1: unit variance times gain)."""
    return tuple(1 for _ in shape)
