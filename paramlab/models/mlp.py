"""Multi-layer perceptron: `depth` hidden layers of `width` units and a linear readout; or, with
`residual=True`, a pre-LN residual MLP of `depth` residual blocks (`ResMLP`)."""

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


class ResBlock(nn.Module):
    """Pre-LN residual block: x + fc2(act(fc1(norm(x)))); (B, width) -> (B, width). fc2 is the branch output
    (it ends in a linear layer, so its output has mean zero at init: what the 1/sqrt(L) rule assumes)."""

    def __init__(self, width: int, activation_name: str, bias: bool, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.norm = nn.LayerNorm(width, **kw)
        self.fc1 = nn.Linear(width, width, bias=bias, **kw)
        self.act = activation(activation_name)
        self.fc2 = nn.Linear(width, width, bias=bias, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ResMLP(nn.Module):
    """x (B, d_in) -> readin -> blocks.0 .. blocks.{depth-1} -> norm_f -> readout -> (B, d_out).

    Roles: readin.weight input, readout.weight output, readout.bias scalar, blocks.*.fc{1,2}.weight
    hidden, every other bias and norm parameter vector. Residual branch outputs: blocks.*.fc2.
    """

    BRANCHES = ("blocks.*.fc2",)

    def __init__(self, d_in: int, d_out: int, width: int, depth: int = 2, activation_name: str = "relu",
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.readin = nn.Linear(d_in, width, bias=bias, **kw)
        self.blocks = nn.ModuleList(ResBlock(width, activation_name, bias, **kw) for _ in range(depth))
        self.norm_f = nn.LayerNorm(width, **kw)
        self.readout = nn.Linear(width, d_out, bias=bias, **kw)
        self.depth = depth

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final-norm output (B, width): what the readout (or a probe) sees."""
        x = self.readin(x)
        for block in self.blocks:
            x = block(x)
        return self.norm_f(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))

    def role_tags(self) -> dict[str, str]:
        tags = {"readin.weight": "input", "readin.bias": "vector", "readout.weight": "output", "readout.bias": "scalar",
                "norm_f.weight": "vector", "norm_f.bias": "vector"}
        for i in range(self.depth):
            for k in ("fc1", "fc2"):
                tags[f"blocks.{i}.{k}.weight"] = "hidden"
                tags[f"blocks.{i}.{k}.bias"] = "vector"
            tags[f"blocks.{i}.norm.weight"] = tags[f"blocks.{i}.norm.bias"] = "vector"
        names = {n for n, _ in self.named_parameters()}
        return {n: r for n, r in tags.items() if n in names}


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
    residual: bool = False,
    base_depth: int | None = None,
    depth_scaling=None,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
    **options,
) -> MLP | ResMLP:
    """An MLP with `depth` hidden layers under `scheme`, relative to `base_width`.

    At width == base_width every scheme gives the same network: weights N(0, gain^2 / fan_in) with
    gain = sqrt(2) for relu/gelu/silu and 1 otherwise (readout gain 1), zero biases (or
    N(0, bias_std^2)), one learning rate. `options` are the `PlanOptions` keywords (gain,
    readout_gain, output_mult, bias_std, readout_zero_init, init; see `paramlab.plan_options`).
    See `paramlab.parameterize` for how widths change it.

    residual=True: a pre-LN residual MLP (`ResMLP`) whose `depth` counts residual blocks
    x + fc2(act(fc1(norm(x)))) (two hidden matrices each), between a read-in layer and a final
    LayerNorm. It takes a depth rule (`paramlab.depth`): `base_depth` (the depth the hyperparameters
    were tuned at) and `depth_scaling` (None, 'depth-mup', 'completep', alpha in [1/2, 1]) multiply
    every branch output blocks.*.fc2 by (depth/base_depth)^-alpha and give in-block tensors the rule's
    lr / eps factors; at depth == base_depth every rule is the network with none.
    """
    for n, v in (("d_in", d_in), ("d_out", d_out), ("depth", depth)):
        check_width(n, v)
    opts = PlanOptions.from_kwargs(options, "mlp").with_gain(GAINS.get(activation, 1.0))
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be True or False, got {residual!r}")
    if not residual:
        if base_depth is not None or depth_scaling is not None:
            raise ValueError("base_depth / depth_scaling need residual blocks: pass residual=True (a plain MLP has no "
                             "residual branches to scale)")
        make = lambda w, device=device: MLP(d_in, d_out, w, depth, activation, bias, device=device, dtype=dtype)  # noqa: E731
        return build(make, width, base_width, scheme, options=opts, device=device, seed=seed)
    rule = None
    if base_depth is not None or depth_scaling is not None:
        rule = dict(depth_scaling=depth_scaling, base_depth=depth if base_depth is None else base_depth, depth=depth,
                    branches=list(ResMLP.BRANCHES))
    make = lambda w, device=device: ResMLP(d_in, d_out, w, depth, activation, bias, device=device, dtype=dtype)  # noqa: E731
    return build(make, width, base_width, scheme, options=opts, device=device, seed=seed, depth_rule=rule)
