"""Activations by name (the infinite-width kernels in paramlab.measure.kernels know relu, erf, linear)."""

import math

import torch
from torch import nn


class Erf(nn.Module):
    """phi(x) = erf(x): has a closed-form NNGP/NTK (Williams 1997)."""

    def forward(self, x):
        return torch.erf(x)


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "erf": Erf, "linear": nn.Identity, "silu": nn.SiLU}
# He-style gain: keeps the preactivation variance at the base width (sqrt(2) for ReLU).
GAINS = {"relu": math.sqrt(2.0), "tanh": 1.0, "gelu": math.sqrt(2.0), "erf": 1.0, "linear": 1.0, "silu": math.sqrt(2.0)}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: known are {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
