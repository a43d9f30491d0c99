"""Decoder-only causal Transformer language model (pre-LN), width = d_model.

    idx (B, T) -> tok_emb (+ pos_emb) -> blocks.0 ... blocks.{depth-1} -> ln_f -> readout -> logits (B, T, V)
    block:  x = x + attn(ln1(x));  x = x + mlp(ln2(x))

The number of heads is fixed, so d_head = d_model / n_heads grows with width. Roles:

    tok_emb.weight, pos_emb.weight            input   (embeddings: fan_out = d_model grows)
    attn.{q,k,v,o}.weight, mlp.{fc,proj}.weight hidden
    LayerNorm gains/biases, hidden biases     vector
    readout.weight                            output
    readout.bias                              scalar

**Attention logit scale.** logits = q.k * scale with

    scale = attn_mult / sqrt(d_head_base) * (d_head_base / d_head) ** scheme.attn

where `scheme.attn` is the scheme's attention exponent (1/2 for SP/NTK-like schemes, 1 for muP/MF:
TP5 Def. 4.1, "1/d attention"; THEORY.md §4.7). At the base width every scheme has the usual
1/sqrt(d_head) * attn_mult; under muP the scale falls like 1/d_head because, once trained, q and k are
correlated and q.k grows like d_head (law of large numbers), not sqrt(d_head). The number is read from
the plan by `Transformer.apply_plan` (d_head / d_head_base is the plan's width multiplier m).

**Tied embeddings (`tied=True`).** One tensor `tok_emb.weight` (V, d_model) is the embedding and the
unembedding (`readout.weight` is the same Parameter; PyTorch lists it once in named_parameters, under
`tok_emb.weight`). paramlab's roles are per tensor, so it gets ONE role, ONE init and ONE learning rate:
those of the embedding (role `input`). The readout's forward multiplier is applied in the unembedding's
forward only:

    logits = F.linear(h * readout_mult, tok_emb.weight),  readout_mult = output_mult * m ** -a_output

with `a_output` the scheme's output-role multiplier exponent and m = d_model / base d_model;
`readout_mult` is a plain float on the `TiedReadout` module, set by `apply_plan` from the plan (it is
not stored on the Parameter, so state_dict / deepcopy / torch.func are unaffected).

Why this is right: a tensor used in two places needs one init exponent b and one LR exponent c. In
TP5 Table 8 (the form of muP paramlab stores) input and output weights are both "vector-like" and get
the *same* init (width-independent) and the same LR (SGD ~ fan_out = fan_in = m; Adam 1); they differ
only in the forward multiplier (1 for the embedding, 1/fan_in for the readout). So with the
embedding's (b, c) and the readout's m^-a in the unembedding forward, a tied muP model is exactly
muP for both uses: embedding coordinates Theta(1), logits' effective readout std ~ 1/m, readout
updates ~ 1/m. The same holds for MF, NTK and every lazy-rich mix (their input and output roles have
equal b and c). For SP and sp-stable the output role's init b = 1/2 differs from the embedding's
b = 0; the shared tensor keeps the embedding's constant init, i.e. tied SP is "GPT-2 style" SP whose
logits at init grow like sqrt(d_model) (the untied SP readout would have std 1/sqrt(d_model)).
`readout_zero_init` is refused with tied weights (it would zero the embedding).

How it differs from mup's `MuSharedReadout(emb.weight)`: mup's readout scales its input by
output_mult / width_mult in the forward, as here, and MuSGD/MuAdam treat the shared tensor as
vector-like, as here. But `mup.set_base_shapes(..., rescale_params=True)` (the default) calls
`MuReadout._rescale_parameters` on the shared readout, which multiplies the *embedding* tensor by
sqrt(width_mult) (checked with mup 1.0.0: N(0, 1) embeddings become std 2 at m = 4, std 4 at m = 16).
The embedding's outputs then grow like sqrt(m) (not muP) and the effective readout std is
sqrt(m)/m = m^-1/2 (SP-like), unless the user re-initializes after set_base_shapes or passes
rescale_params=False. Its `readout_zero_init` is also silently ignored (it zeroes a temporary weight
that is then replaced). paramlab draws the shared tensor once from the embedding's plan and never
rescales it.

State dicts of tied models hold both keys (`tok_emb.weight` and `readout.weight`, one storage when
saved with torch.save); loading keeps the tie, also with `load_state_dict(..., assign=True)` (a
post-load hook re-ties), and a checkpoint whose two keys differ is refused.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..parameterize import PLAN_ATTR
from ..plan_options import PlanOptions
from .activations import activation
from .build import BASE_WIDTH, build, check_width

POS = ("learned", "rotary")


def rotary(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021, "RoFormer") of x (B, H, T, d_head), rotate-half form."""
    t, d = x.shape[-2], x.shape[-1]
    half = d // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    ang = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # (T, d/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    """Causal multi-head self-attention with separate q, k, v, o projections (d_model -> d_model).

    `scale` is the logit scale (a float set by the owner's `apply_plan`; 1/sqrt(d_head) * attn_mult
    by default). With `explicit = True` the logits q.k * scale (B, H, T, T), before the causal mask,
    pass through the `attn_logits` module (an nn.Identity), a hook point for measurements; otherwise
    torch's fused scaled_dot_product_attention is used (same numbers up to float error).
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = False, rotary: bool = False, attn_mult: float = 1.0,
                 device=None, dtype=None):
        super().__init__()
        kw = dict(bias=bias, device=device, dtype=dtype)
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model, **kw) for _ in range(4))
        self.attn_logits = nn.Identity()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.rotary = rotary
        self.scale = attn_mult / math.sqrt(self.d_head)
        self.explicit = False

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, d_head={self.d_head}, scale={self.scale:.4g}, rotary={self.rotary}, explicit={self.explicit}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = lambda t: rearrange(t, "b t (h d) -> b h t d", h=self.n_heads)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))  # (B, H, T, d_head)
        if self.rotary:
            q, k = rotary(q), rotary(k)
        if self.explicit:
            logits = self.attn_logits(q @ k.transpose(-2, -1) * self.scale)  # (B, H, T, T)
            t = x.shape[1]
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            y = logits.masked_fill(future, float("-inf")).softmax(-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.o(rearrange(y, "b h t d -> b t (h d)"))


class FeedForward(nn.Module):
    """d_model -> mlp_ratio * d_model -> act -> d_model."""

    def __init__(self, d_model: int, mlp_ratio: int, activation_name: str, bias: bool, device=None, dtype=None):
        super().__init__()
        kw = dict(bias=bias, device=device, dtype=dtype)
        self.fc = nn.Linear(d_model, mlp_ratio * d_model, **kw)
        self.act = activation(activation_name)
        self.proj = nn.Linear(mlp_ratio * d_model, d_model, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, d_model, n_heads, mlp_ratio, activation_name, bias, rotary, attn_mult, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.ln1 = nn.LayerNorm(d_model, **kw)
        self.attn = Attention(d_model, n_heads, bias, rotary, attn_mult, **kw)
        self.ln2 = nn.LayerNorm(d_model, **kw)
        self.mlp = FeedForward(d_model, mlp_ratio, activation_name, bias, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TiedReadout(nn.Module):
    """Unembedding that shares `weight` (V, d_model) with an nn.Embedding: logits = (h * mult) @ weight.T (+ bias).

    `mult` is the readout's forward multiplier output_mult * m^-a_output, a plain float set by
    `Transformer.apply_plan` (see the module docstring for why it lives here and not on the Parameter).
    """

    def __init__(self, weight: nn.Parameter, bias: bool = False):
        super().__init__()
        self.weight = weight  # the embedding's Parameter: registered here too, listed once by named_parameters
        self.bias = nn.Parameter(torch.zeros(weight.shape[0], device=weight.device, dtype=weight.dtype)) if bias else None
        self.mult = 1.0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h * self.mult, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"shared weight {tuple(self.weight.shape)}, mult={self.mult:.4g}, bias={self.bias is not None}"


class Transformer(nn.Module):
    """Causal LM: idx (B, T) int64 -> logits (B, T, vocab_size). See the module docstring.

    Numbers the forward needs from the scheme (each attention's `scale`, a tied readout's `mult`) are
    set by `apply_plan(plan)`; `paramlab.transformer` calls it. After parameterizing a Transformer
    yourself, call `model.apply_plan(paramlab.get_plan(model))` (the forward refuses to run otherwise).
    """

    BRANCHES = ("blocks.*.attn.o", "blocks.*.mlp.proj")  # residual branch outputs (paramlab.depth)

    def __init__(self, vocab_size: int, d_model: int, depth: int = 2, n_heads: int = 4, mlp_ratio: int = 4,
                 max_len: int = 256, pos: str = "learned", tied: bool = False, bias: bool = False,
                 activation_name: str = "gelu", attn_mult: float = 1.0, output_mult: float = 1.0,
                 device=None, dtype=None):
        super().__init__()
        if pos not in POS:
            raise ValueError(f"pos must be one of {POS}, got {pos!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}: pick a width that is a multiple of n_heads")
        if pos == "rotary" and (d_model // n_heads) % 2:
            raise ValueError(f"rotary positions need an even d_head, got d_model / n_heads = {d_model // n_heads}")
        kw = dict(device=device, dtype=dtype)
        self.tok_emb = nn.Embedding(vocab_size, d_model, **kw)
        self.pos_emb = nn.Embedding(max_len, d_model, **kw) if pos == "learned" else None
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, mlp_ratio, activation_name, bias, pos == "rotary", attn_mult, **kw) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(d_model, **kw)
        if tied:
            self.readout = TiedReadout(self.tok_emb.weight, bias=bias)
        else:
            self.readout = nn.Linear(d_model, vocab_size, bias=bias, **kw)
        self.vocab_size, self.d_model, self.depth, self.n_heads = vocab_size, d_model, depth, n_heads
        self.max_len, self.pos, self.tied = max_len, pos, tied
        self.attn_mult, self.output_mult = float(attn_mult), float(output_mult)
        self._applied_plan = None  # the plan whose numbers the forward uses (None: a plain, unparameterized model)
        if tied:
            self.register_load_state_dict_pre_hook(_check_tied_checkpoint)
            self.register_load_state_dict_post_hook(_retie)

    # -- numbers from the scheme -----------------------------------------------------------------------

    def apply_plan(self, plan) -> None:
        """Set the attention scales and the tied readout multiplier from a paramlab plan (None: defaults).

        m = d_model / base d_model is read from the plan (the width multiplier of a hidden weight),
        so d_head_base = d_head / m; scale = attn_mult / sqrt(d_head_base) * m ** -scheme.attn, and the
        tied readout's mult = output_mult * m ** -scheme.output.a. A unit-frame scheme (u-mup) has m = d_model
        and d_head_base = 1: scale = attn_mult / d_head ** scheme.attn.
        """
        m, attn_exp, a_out = 1.0, 0.5, 0.0
        if plan is not None:
            m = plan["blocks.0.attn.q.weight"].m if self.depth else plan["tok_emb.weight"].m
            attn_exp, a_out = plan.scheme.attn, plan.scheme.output.a
        unit = plan is not None and plan.scheme.unit  # u-muP's frame: base head dim 1 (paramlab.unit)
        for block in self.blocks:
            if unit:
                block.attn.scale = self.attn_mult * block.attn.d_head ** (-attn_exp)
                continue
            d_head_base = block.attn.d_head / m
            block.attn.scale = self.attn_mult / math.sqrt(d_head_base) * m ** (-attn_exp)
        if self.tied:
            self.readout.mult = self.output_mult * m ** (-a_out)
        self._applied_plan = plan

    @torch.no_grad()
    def fold_plan(self, plan) -> None:
        """Put the numbers `apply_plan` set into the weights (`paramlab.fold` calls it on a copy whose hooks and
        plan are gone): each attn.q (weight and bias) times scale * sqrt(d_head), so that attn_mult 1 gives the
        same logits; a tied readout becomes an nn.Linear holding mult * W (the embedding keeps W), so the model
        is a plain `Transformer(..., tied=False)` with attn_mult = output_mult = 1. Call apply_plan(None) after.
        """
        for block in self.blocks:
            f = block.attn.scale * math.sqrt(block.attn.d_head)
            if f != 1.0:
                for p in block.attn.q.parameters():
                    p.mul_(f)
        if self.tied:
            old, w = self.readout, self.tok_emb.weight
            lin = nn.Linear(self.d_model, self.vocab_size, bias=old.bias is not None, device=w.device, dtype=w.dtype)
            lin.weight.copy_(w * old.mult)
            if old.bias is not None:
                lin.bias.copy_(old.bias)
            self.readout, self.tied = lin, False
            for hooks in (self._load_state_dict_pre_hooks, self._load_state_dict_post_hooks):
                for k in [k for k, h in hooks.items() if getattr(h, "hook", h) in (_check_tied_checkpoint, _retie)]:
                    del hooks[k]
        self.attn_mult = self.output_mult = 1.0

    def expose_attn_logits(self, on: bool = True) -> "Transformer":
        """Compute attention explicitly so that each block's logits pass through `blocks.i.attn.attn_logits`."""
        for block in self.blocks:
            block.attn.explicit = on
        return self

    # -- forward ---------------------------------------------------------------------------------------

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if self.__dict__.get(PLAN_ATTR) is not self._applied_plan:
            raise RuntimeError(
                "this Transformer's plan changed since apply_plan: its attention scale and tied readout "
                "multiplier come from the plan. Call model.apply_plan(paramlab.get_plan(model)) after "
                "paramlab.parameterize (or model.apply_plan(None) after unparameterize); paramlab.transformer does this"
            )
        b, t = idx.shape
        if t > self.max_len and self.pos_emb is not None:
            raise ValueError(f"sequence length {t} exceeds max_len={self.max_len}: build the model with a larger max_len")
        x = self.tok_emb(idx)  # (B, T, d_model)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.readout(self.ln_f(x))  # (B, T, V)

    def role_tags(self) -> dict[str, str]:
        tags = {"tok_emb.weight": "input", "pos_emb.weight": "input", "ln_f.weight": "vector", "ln_f.bias": "vector",
                "readout.bias": "scalar"}
        if not self.tied:
            tags["readout.weight"] = "output"
        for i in range(self.depth):
            p = f"blocks.{i}."
            for ln in ("ln1", "ln2"):
                tags[p + ln + ".weight"] = tags[p + ln + ".bias"] = "vector"
            for lin in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc", "mlp.proj"):
                tags[p + lin + ".weight"] = "hidden"
                tags[p + lin + ".bias"] = "vector"
        names = {n for n, _ in self.named_parameters()}
        return {k: v for k, v in tags.items() if k in names}


def _check_tied_checkpoint(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    emb, out = state_dict.get(prefix + "tok_emb.weight"), state_dict.get(prefix + "readout.weight")
    if emb is not None and out is not None and not torch.equal(emb, out):
        error_msgs.append(
            f"{prefix}tok_emb.weight and {prefix}readout.weight differ, but this model ties them: the checkpoint "
            "comes from an untied model (build it with tied=False)"
        )


def _retie(module, incompatible_keys):
    # load_state_dict(assign=True) replaces each Parameter by its own object: make the readout share the embedding's
    if module.readout.weight is not module.tok_emb.weight:
        module.readout.weight = module.tok_emb.weight


def transformer(
    vocab_size: int,
    width: int,
    *,
    depth: int = 2,
    n_heads: int = 4,
    scheme="mup",
    base_width: int = BASE_WIDTH,
    mlp_ratio: int = 4,
    max_len: int = 256,
    pos: str = "learned",
    tied: bool = False,
    bias: bool = False,
    activation: str = "gelu",
    zero_query: bool = False,
    attn_mult: float = 1.0,
    attn_logits: bool = False,
    base_depth: int | None = None,
    depth_scaling=None,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
    **options,
) -> Transformer:
    """A causal Transformer LM with d_model = `width` under `scheme`, relative to d_model = `base_width`.

    n_heads is fixed (d_head = width / n_heads grows). At width == base_width every scheme gives the same
    network: embeddings N(0, embedding_std^2), q/k/v/o and MLP weights N(0, gain^2 / fan_in) (gain 1 by
    default), readout N(0, readout_gain^2 / d_model), LayerNorm gains 1 and biases 0, attention scale
    attn_mult/sqrt(d_head), one learning rate. zero_query / readout_zero_init: zero the query (and
    readout) weights, as TP5 and the mup README recommend (removes the 1/sqrt(width) transients of logits
    at init). attn_logits: route attention through each block's `attn.attn_logits` hook point (see
    `Attention`). `options` are the `PlanOptions` keywords (see `paramlab.plan_options`); `init` adds
    name/pattern -> base std or 'zeros'/'ones'/'keep' overrides.

    Depth (`paramlab.depth`): `depth` counts blocks; with `base_depth` (the depth the hyperparameters
    were tuned at) and `depth_scaling` (None, 'depth-mup', 'completep', or alpha in [1/2, 1]) every
    branch output `blocks.*.attn.o` and `blocks.*.mlp.proj` (bias included) is multiplied by
    (depth/base_depth)^-alpha and the tensors inside the blocks get the rule's lr and eps factors.
    At depth == base_depth every rule is the same network as none. `base_depth` with
    depth_scaling=None records the blocks without scaling (for the depth coordinate check).
    """
    for n, v in (("vocab_size", vocab_size), ("depth", depth), ("n_heads", n_heads), ("mlp_ratio", mlp_ratio),
                 ("max_len", max_len)):
        check_width(n, v)
    opts = PlanOptions.from_kwargs(options, "transformer").with_gain(1.0)  # the default gain: see plan_options
    if tied and opts.readout_zero_init:
        raise ValueError("readout_zero_init=True with tied=True would zero the shared embedding: use a small output_mult instead")
    for n, w in (("width", width), ("base_width", base_width)):
        if isinstance(w, int) and w > 0 and w % n_heads:
            raise ValueError(f"{n}={w} is not divisible by n_heads={n_heads}: d_model must be a multiple of n_heads")

    def make(w, device=device):
        return Transformer(vocab_size, w, depth, n_heads, mlp_ratio, max_len, pos, tied, bias, activation,
                           attn_mult, opts.output_mult, device=device, dtype=dtype)

    overrides = dict(opts.init or {})
    if zero_query:
        overrides.setdefault("blocks.*.attn.q.weight", "zeros")
    if tied and bias:
        overrides.setdefault("readout.bias", opts.bias_std if opts.bias_std > 0 else "zeros")
    opts = dataclasses.replace(opts, init=overrides or None)
    # delta = 2 * base_width stays divisible by n_heads (and keeps d_head even for rotary)
    rule = None
    if base_depth is not None or depth_scaling is not None:
        rule = dict(depth_scaling=depth_scaling, base_depth=depth if base_depth is None else base_depth, depth=depth,
                    branches=list(Transformer.BRANCHES))
    model = build(make, width, base_width, scheme, options=opts, delta_width=2 * base_width, device=device, seed=seed,
                  depth_rule=rule)
    return model.expose_attn_logits(attn_logits)
