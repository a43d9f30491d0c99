"""Multi-layer perceptron: `depth` hidden layers of `width` units and a linear readout."""

from __future__ import annotations

import torch
from torch import nn

from ..plan_options import PlanOptions
from .activations import GAINS, activation
from .build import BASE_WIDTH, build, check_width


class MLP(nn.Module):
    """x (B, d_in) -> layers.0 -> act -> layers.1 -> act ... -> readout -> (B, d_out).

    Parameter names: layers.0.* (input), layers.1..depth-1.* (hidden), readout.* (output).
    """

    def __init__(self, d_in: int, d_out: int, width: int, depth: int = 2, activation_name: str = "relu",
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        kw = dict(bias=bias, device=device, dtype=dtype)
        dims = [d_in] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(i, o, **kw) for i, o in zip(dims[:-1], dims[1:]))
        self.act = activation(activation_name)
        self.readout = nn.Linear(width, d_out, **kw)
        self.depth = depth

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations (B, width): what the readout (or a probe) sees."""
        for layer in self.layers:
            x = self.act(layer(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))

    def role_tags(self) -> dict[str, str]:
        tags = {"layers.0.weight": "input", "readout.weight": "output", "readout.bias": "scalar"}
        for i in range(1, self.depth):
            tags[f"layers.{i}.weight"] = "hidden"
        for i in range(self.depth):
            tags[f"layers.{i}.bias"] = "vector"
        names = {n for n, _ in self.named_parameters()}
        return {n: r for n, r in tags.items() if n in names}  # bias=False has no bias tensors


def mlp(
    d_in: int,
    d_out: int,
    width: int,
    *,
    depth: int = 2,
    scheme="mup",
    base_width: int = BASE_WIDTH,
    activation: str = "relu",
    bias: bool = True,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
    **options,
) -> MLP:
    """An MLP with `depth` hidden layers under `scheme`, relative to `base_width`.

    At width == base_width every scheme gives the same network: weights N(0, gain^2 / fan_in) with
    gain = sqrt(2) for relu/gelu/silu and 1 otherwise (readout gain 1), zero biases (or
    N(0, bias_std^2)), one learning rate. `options` are the `PlanOptions` keywords (gain,
    readout_gain, output_mult, bias_std, readout_zero_init, init; see `paramlab.plan_options`).
    See `paramlab.parameterize` for how widths change it.
    """
    for n, v in (("d_in", d_in), ("d_out", d_out), ("depth", depth)):
        check_width(n, v)
    opts = PlanOptions.from_kwargs(options, "mlp").with_gain(GAINS.get(activation, 1.0))
    make = lambda w, device=device: MLP(d_in, d_out, w, depth, activation, bias, device=device, dtype=dtype)  # noqa: E731
    return build(make, width, base_width, scheme, options=opts, device=device, seed=seed)
