"""Small convolutional network for 1-D and 2-D inputs: width = channels.

    x (B, C_in, L) or (B, C_in, H, W) -> blocks.0 -> blocks.1 ... -> pool (global mean) -> readout -> (B, d_out)

Each block is `act(norm(conv(x)))` (plus `x` when `residual=True`, for blocks 1.. which map width to
width). The kernel size is fixed, so a convolution's width dims are its channels and its role follows
fan-in / fan-out in channels exactly as a Linear layer's does (TP5 §J.1; `paramlab.roles`):

    blocks.0.conv.weight   (width, C_in, k...)   input   (fan_in C_in * k fixed)
    blocks.i.conv.weight   (width, width, k...)  hidden  (i >= 1; base fan_in = base_width * k)
    conv biases, norm gains and norm biases      vector
    readout.weight         (d_out, width)        output
    readout.bias           (d_out,)              scalar

Norms (`norm=`): "batch" (BatchNorm), "group" (GroupNorm with a fixed number of groups `norm_groups`,
so the group size grows with width), "layer" (LayerNorm over the channels at each position, as in
ConvNeXt; a `ChannelLayerNorm` wrapping an nn.LayerNorm so paramlab's hooks see channels last).
"""

from __future__ import annotations

import torch
from torch import nn

from ..plan_options import PlanOptions
from .activations import GAINS, activation
from .build import BASE_WIDTH, build, check_width

NORMS = (None, "layer", "group", "batch")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dim of (B, C, *spatial): per-position normalization, per-channel gain."""

    def __init__(self, channels: int, device=None, dtype=None):
        super().__init__()
        self.ln = nn.LayerNorm(channels, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.movedim(1, -1)).movedim(-1, 1)


def _norm(kind: str | None, channels: int, dim: int, groups: int, device, dtype) -> nn.Module | None:
    kw = dict(device=device, dtype=dtype)
    if kind is None:
        return None
    if kind == "batch":
        return (nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(channels, **kw)
    if kind == "group":
        if channels % groups:
            raise ValueError(
                f"norm='group' with norm_groups={groups} needs a width divisible by {groups}, got {channels}: "
                "change the width or norm_groups"
            )
        return nn.GroupNorm(groups, channels, **kw)
    if kind == "layer":
        return ChannelLayerNorm(channels, **kw)
    raise ValueError(f"unknown norm {kind!r}: expected one of {NORMS}")


class ConvBlock(nn.Module):
    """y = act(norm(conv(x))); returns x + y if residual. Shapes (B, C, *spatial) -> (B, width, *spatial)."""

    def __init__(self, c_in: int, c_out: int, dim: int, kernel_size: int, activation_name: str, bias: bool,
                 norm: str | None, norm_groups: int, residual: bool, device=None, dtype=None):
        super().__init__()
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        self.conv = conv(c_in, c_out, kernel_size, padding="same", bias=bias, device=device, dtype=dtype)
        self.norm = _norm(norm, c_out, dim, norm_groups, device, dtype)
        self.act = activation(activation_name)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.norm is not None:
            y = self.norm(y)
        y = self.act(y)
        return x + y if self.residual else y


class GlobalAvgPool(nn.Module):
    """(B, C, *spatial) -> (B, C): the mean over all spatial positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1)


class CNN(nn.Module):
    """`depth` conv blocks of `width` channels, global average pooling and a linear readout.

    Input (B, C_in, L) for dim=1 or (B, C_in, H, W) for dim=2; with in_channels == 1 the channel dim
    may be left out: (B, L) (e.g. mnist1d's (B, 40)) or (B, H, W) (e.g. sklearn digits' (B, 8, 8)).
    Parameter names: blocks.0.* (input), blocks.1..depth-1.* (hidden), blocks.*.norm.* (vector),
    readout.* (output). See the module docstring for the roles.
    """

    def __init__(self, in_channels: int, d_out: int, width: int, depth: int = 2, dim: int = 1, kernel_size: int = 3,
                 activation_name: str = "relu", bias: bool = True, residual: bool = False, norm: str | None = None,
                 norm_groups: int = 8, device=None, dtype=None):
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 (sequences, (B, C, L)) or 2 (images, (B, C, H, W)), got {dim!r}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}: expected one of {NORMS}")
        kw = dict(dim=dim, kernel_size=kernel_size, activation_name=activation_name, bias=bias, norm=norm,
                  norm_groups=norm_groups, device=device, dtype=dtype)
        self.blocks = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else width, width, residual=residual and i > 0, **kw) for i in range(depth)
        )
        self.pool = GlobalAvgPool()
        self.readout = nn.Linear(width, d_out, bias=bias, device=device, dtype=dtype)
        self.in_channels, self.dim, self.depth = in_channels, dim, depth

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled activations of the last block (B, width): what the readout (or a probe) sees."""
        if x.dim() == self.dim + 1 and self.in_channels == 1:
            x = x.unsqueeze(1)  # (B, L) -> (B, 1, L); (B, H, W) -> (B, 1, H, W)
        if x.dim() != self.dim + 2 or x.shape[1] != self.in_channels:
            want = "(B, C, L)" if self.dim == 1 else "(B, C, H, W)"
            raise ValueError(f"CNN(dim={self.dim}, in_channels={self.in_channels}) expects {want}, got {tuple(x.shape)}")
        for block in self.blocks:
            x = block(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))  # (B, d_out)

    def role_tags(self) -> dict[str, str]:
        tags = {"readout.weight": "output", "readout.bias": "scalar"}
        for i, block in enumerate(self.blocks):
            tags[f"blocks.{i}.conv.weight"] = "input" if i == 0 else "hidden"
            tags[f"blocks.{i}.conv.bias"] = "vector"
            if block.norm is not None:
                for n, _ in block.norm.named_parameters():
                    tags[f"blocks.{i}.norm.{n}"] = "vector"
        return {k: v for k, v in tags.items() if k in dict(self.named_parameters())}


def cnn(
    in_channels: int,
    d_out: int,
    width: int,
    *,
    depth: int = 2,
    dim: int = 1,
    kernel_size: int = 3,
    scheme="mup",
    base_width: int = BASE_WIDTH,
    activation: str = "relu",
    bias: bool = True,
    residual: bool = False,
    norm: str | None = None,
    norm_groups: int = 8,
    base_depth: int | None = None,
    depth_scaling=None,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
    **options,
) -> CNN:
    """A CNN with `depth` conv layers of `width` channels under `scheme`, relative to `base_width` channels.

    At width == base_width every scheme gives the same network: conv weights N(0, gain^2 / fan_in) with
    fan_in = channels_in * kernel volume and gain = sqrt(2) for relu/gelu/silu (1 otherwise), readout
    N(0, readout_gain^2 / width), zero biases (or N(0, bias_std^2)), norm gains 1, one learning rate.
    `options` are the `PlanOptions` keywords (see `paramlab.plan_options`).

    Depth rule (`paramlab.depth`, residual=True only): `base_depth` is counted like `depth` (conv
    layers); the rule sees the depth - 1 residual blocks blocks.1.. (blocks.0 is the input conv) and
    multiplies each block's output act(norm(conv(x))) by ((depth-1)/(base_depth-1))^-alpha. Only
    alpha = 1 ('completep') is accepted with an activation of nonzero mean (relu, gelu, silu): the
    branch then ends in that activation, whose positive mean adds coherently over blocks as
    L * L^-alpha, so depth-muP's stream at init grows like sqrt(L) (measured slope +0.32 over
    L = 2..32, predicted 0). Use pl.mlp(residual=True) or pl.transformer (blocks ending in a linear
    layer) for depth-muP.
    """
    for n, v in (("in_channels", in_channels), ("d_out", d_out), ("depth", depth), ("kernel_size", kernel_size),
                 ("norm_groups", norm_groups)):
        check_width(n, v)
    opts = PlanOptions.from_kwargs(options, "cnn").with_gain(GAINS.get(activation, 1.0))
    rule = _depth_rule(depth, residual, activation, base_depth, depth_scaling)

    def make(w, device=device):
        return CNN(in_channels, d_out, w, depth, dim, kernel_size, activation, bias, residual, norm, norm_groups,
                   device=device, dtype=dtype)

    # delta = 2 * base_width keeps the width divisible by norm_groups whenever base_width is
    return build(make, width, base_width, scheme, options=opts, delta_width=2 * base_width, device=device, seed=seed,
                 depth_rule=rule)


ZERO_MEAN_ACTIVATIONS = ("tanh", "erf", "linear")  # odd activations: a branch ending in one has mean zero at init


def _depth_rule(depth, residual, activation_name, base_depth, depth_scaling) -> dict | None:
    """The depth keywords for `parameterize` (None without a rule); refuses what the rule cannot make right."""
    from ..depth import get_depth_rule

    if base_depth is None and depth_scaling is None:
        return None
    if not residual:
        raise ValueError("base_depth / depth_scaling need residual blocks: pass residual=True")
    base_depth = depth if base_depth is None else base_depth
    for n, v in (("depth", depth), ("base_depth", base_depth)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ValueError(f"{n}={v!r}: a residual CNN with a depth rule needs {n} >= 2 (blocks.0 is the input conv, "
                             "the residual blocks are blocks.1..)")
    rule = get_depth_rule(depth_scaling)
    if rule.alpha and rule.alpha < 1 and activation_name not in ZERO_MEAN_ACTIVATIONS:
        raise ValueError(
            f"depth_scaling={rule.name!r} (alpha {rule.alpha:g}) on pl.cnn(residual=True, activation={activation_name!r}): "
            "each residual block ends in the activation, whose positive mean adds coherently over blocks, so the "
            "stream at init grows like L^(1-alpha) (measured slope +0.32 for depth-muP over L = 2..32, predicted 0). "
            "Use depth_scaling='completep' here, an odd activation (tanh, erf, linear), or a model whose blocks end in "
            "a linear layer: pl.mlp(residual=True) or pl.transformer")
    return dict(depth_scaling=depth_scaling, base_depth=base_depth - 1, depth=depth - 1,
                branches=[f"blocks.{i}.act" for i in range(1, depth)])
