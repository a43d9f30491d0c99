"""Depth rules as data: how residual branches and in-block hyperparameters scale with depth.

The rule (`DepthRule`, presets `"depth-mup"`, `"completep"`, a float alpha, or None) and its
resolution for one model (`DepthPlan`: which modules are residual branches, which tensors live inside
the blocks), stored in the model's `Plan` (`plan.depth`). `paramlab.parameterize` takes it
(`depth_scaling=`, `base_depth=`, `branches=`), the builders pass it, `paramlab.optim` applies the
lr / eps factors per tensor, and each branch output gets a `BranchScale` forward hook.

A residual network of depth `L` (number of residual blocks) is trained from a base depth `L0`;
write `m_L = L / L0` (the depth multiplier). A depth rule with branch exponent `alpha` changes
(Dey et al. 2025, "Don't be lazy: CompleteP enables compute-efficient deep transformers",
arXiv 2505.01618, Table 1 and its reference code, EleutherAI/nanoGPT-mup branch `completep`):

    h_{l+1} = h_l + m_L^(-alpha) * F_l(h_l)            every residual branch output (attn, MLP, conv block)
    lr(w)   = lr_width(w) * m_L^(-e_lr[fam])          w inside a residual branch (hidden weights, biases, norm gains)
    eps(w)  = eps_width(w) * m_L^(-e_eps)             Adam only, w inside a residual branch
    wd(w)   = wd_width(w) * m_L^(-e_wd)               the AdamW / SGD weight-decay coefficient itself

Parameters outside the residual branches (embeddings, the first layer, the final norm, the
readout) get no depth factor. The exponents, per optimizer family, as functions of alpha:

    family  e_lr (in-block lr)        e_eps (in-block eps)   e_wd
    adam    1 - alpha  (lr ~ m_L^(alpha-1))    alpha                  0
    sgd     1 - 2 alpha (lr ~ m_L^(2 alpha-1)) -  (no eps)            0

Sources, entry by entry (how sure, in brackets):
  * branch multiplier m_L^-alpha: CompleteP Table 1 rows "MHA Residual" / "MLP Residual"
    (X + m_L^-alpha MHA(LN(X))), nanoGPT-mup@completep model.py `Block.residual_scaling`;
    alpha = 1/2 is Depth-muP (Yang, Yu, Zhu, Hayou 2023, "Tensor Programs VI", arXiv 2310.02244:
    block multiplier a/sqrt(L); Bordelon, Noci, Li, Hanin, Pehlevan 2023, arXiv 2309.16620:
    branch scale beta_0/sqrt(L) with muP). [sure]
  * Adam lr of hidden weights m_L^(alpha-1): CompleteP Table 1 "Hidden LR (AdamW)"
    eta_base m_N^-1 m_L^(alpha-1); at alpha = 1/2 this is TP6's Depth-muP for Adam (lr ~ L^-1/2),
    also u-muP (Blake et al. 2024, arXiv 2407.17465) Table 2 "Residual" column sqrt(base-depth/depth). [sure]
  * Adam lr of in-block biases and pre-LN gains m_L^(alpha-1): CompleteP Table 1 "Hidden Bias LR"
    and "Pre-LN LR"; nanoGPT-mup@completep model.py `configure_optimizers` (hidden_ln_params,
    hidden_bias_params get `depth_lr_scaling`). [sure]
  * embedding, final-LN, unembedding lr: no depth factor (CompleteP Table 1; code lr_scale 1.0). [sure]
  * Adam eps of in-block tensors m_L^-alpha: CompleteP Table 1 "AdamW eps (residual blocks)"
    eps_base m_N^-1 m_L^-alpha; also Mlodozeniec et al. 2025 ("Completed hyperparameter transfer",
    arXiv 2512.22382) Table 1: hidden weights/biases/norms x m_N^-1 x m_L^-alpha, input embedding
    x m_N^-1, output weights/biases/norms x 1. NB the nanoGPT-mup reference code scales ONE global
    eps (every group, embeddings included) by m_N^-1 m_L^-alpha; the tables restrict it to the
    residual blocks, which is what paramlab does with eps_mode="gradient" (eps follows each tensor's gradient, whose scale
    carries the branch multiplier m_L^-alpha). [sure for the blocks; code/table differ outside them]
  * weight decay: no depth factor on the AdamW coefficient lambda (CompleteP Table 1 "Hidden WD
    (AdamW)" lambda_base m_N; code: weight_decay / width_lr_scaling only). With torch's AdamW the
    per-step decay lr * lambda therefore scales like m_L^(alpha-1) inside blocks. NB this differs
    from paramlab's width convention (wd * m^c, per-step decay invariant): the depth factor must not
    be divided out of wd. Identical for CompleteP (alpha = 1: no lr factor). [sure what the source
    does; weight decay is not part of either paper's depth theory]
  * SGD lr m_L^(2 alpha - 1): CompleteP reference notebook completep_examples/
    relative_distance_from_linearization.ipynb (`lr_depth_scale = (L/base_depth)**(2*alpha - 1)` for
    SGD); alpha = 1/2 gives a depth-independent SGD lr, which is TP6's Depth-muP for SGD and
    Bordelon et al.'s choice (eta_0 gamma_0^2 N, no L). Derivation: the in-block gradient carries
    the branch multiplier m_L^-alpha, an SGD step moves a block by m_L^-2alpha * lr, and L blocks add
    coherently: L^(1-2alpha) lr = Theta(1). [sure for hidden weights; for in-block vectors under SGD
    no source states it, derived by the same count: medium]
  * SGD weight decay: no source. Left at 0 (no depth factor). [no source]

Init: no rule changes any init (Table 1 init variances carry no m_L). Composition with the width
schemes: every factor above multiplies the width scheme's own (lr * m_N^-c, eps * m_N^-(a+g),
wd * m_N^c); the depth count uses only how the branch multiplier enters the forward and the
gradient, which no width exponent changes, so the same depth table holds for sp, ntk, mf and mup.
At L == L0 every factor is 1.0 exactly (1.0 ** x == 1.0), so every rule is the unscaled network.

`None` means no depth scaling at all (every factor 1). It is not alpha = 0: alpha = 0 through the
formula would still scale the Adam lr like 1/m_L. Float alphas are refused outside [1/2, 1], the
range both papers study (below 1/2 the stream at init grows with depth; above 1 blocks vanish).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import torch
from torch import nn

from .schemes import optimizer_family

__all__ = ["COMPLETEP", "DEPTH_MUP", "DEPTH_PRESETS", "NO_DEPTH", "U_MUP_DEPTH", "BranchScale", "DepthExponents", "DepthPlan",
           "DepthRule", "alpha_rule", "depth_mult", "depth_rules_table", "get_depth_rule", "resolve"]

@dataclass(frozen=True)
class DepthExponents:
    """Exponents e of 1/m_L (factor m_L^-e) for one class of tensors: lr per family, Adam eps, weight decay."""

    lr_sgd: float = 0.0
    lr_adam: float = 0.0
    eps_adam: float = 0.0
    wd: float = 0.0

    def lr(self, family) -> float:
        """The lr exponent for an optimizer or its name ('sgd', 'adamw', ...): `schemes.optimizer_family`."""
        return self.lr_adam if optimizer_family(family) == "adam" else self.lr_sgd


@dataclass(frozen=True)
class DepthRule:
    """A depth parameterization: branch exponent alpha plus per-class exponents (see the module docstring).

    `block`: tensors inside a residual branch (hidden weights, their biases, pre-norm gains).
    `outside`: everything else (embeddings / first layer, final norm, readout). Every source gives it
    zeros; it is a field so that a research rule can be written down, not because a source varies it.
    """

    name: str
    alpha: float
    block: DepthExponents
    outside: DepthExponents = DepthExponents()
    description: str = ""

    def branch_mult(self, m_L: float) -> float:
        """Multiplier of every residual branch output: m_L^-alpha."""
        return m_L ** (-self.alpha)

    def factors(self, m_L: float, in_block: bool, family: str) -> tuple[float, float, float]:
        """(lr, eps, wd) multipliers m_L^-e of one tensor; family: an optimizer or its name ('sgd', 'adamw', ...)."""
        e = self.block if in_block else self.outside
        return m_L ** (-e.lr(family)), m_L ** (-e.eps_adam), m_L ** (-e.wd)

    def describe(self) -> str:
        head = f"{self.name}: branch multiplier (L/L0)^-{self.alpha:g}" if self.alpha else f"{self.name}: no branch multiplier"
        lines = [f"{head}  {self.description}".rstrip(),
                 f"  {'tensors':<8} {'lr sgd':>7} {'lr adam':>8} {'eps':>6} {'wd':>5}   (exponents e of the factor (L/L0)^-e)"]
        for k in ("block", "outside"):
            e = getattr(self, k)
            lines.append(f"  {k:<8} {e.lr_sgd:>7.3g} {e.lr_adam:>8.3g} {e.eps_adam:>6.3g} {e.wd:>5.3g}")
        return "\n".join(lines)


def alpha_rule(alpha: float, name: str | None = None, description: str = "") -> DepthRule:
    """The rule for branch exponent alpha in [1/2, 1]: Adam lr m_L^(alpha-1), SGD lr m_L^(2alpha-1), eps m_L^-alpha."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise TypeError(f"depth_scaling must be None, 'depth-mup', 'completep', a DepthRule or a finite alpha, got {alpha!r}")
    if not 0.5 <= alpha <= 1.0:
        raise ValueError(
            f"depth_scaling alpha={alpha!r} is outside [0.5, 1], the range the sources study (Depth-muP 0.5, "
            "CompleteP 1): below 0.5 the residual stream at init grows with depth, above 1 the blocks vanish. "
            "Use None for no depth scaling, or write a paramlab.depth.DepthRule by hand for a research rule"
        )
    a = float(alpha)
    return DepthRule(name or f"alpha-{a:g}", a, DepthExponents(lr_sgd=1 - 2 * a, lr_adam=1 - a, eps_adam=a, wd=0.0),
                     description=description)


NO_DEPTH = DepthRule("none", 0.0, DepthExponents(), description="no depth scaling (not alpha = 0)")
DEPTH_MUP = alpha_rule(0.5, "depth-mup", "Depth-muP (TP6, arXiv 2310.02244; Bordelon et al., arXiv 2309.16620)")
COMPLETEP = alpha_rule(1.0, "completep", "CompleteP (Dey et al. 2025, arXiv 2505.01618, Table 1)")
# u-muP (Blake et al. 2024, arXiv 2407.17465, §4 / Table 2 "residual" column; unit-scaling 0.3.5's
# lr_scale_for_depth): in-block lr x depth^-1/2 at base depth 1, and AdamW's lambda x depth^1/2 so that the
# per-step decay lr * lambda is depth-free (the package's independent_weight_decay). No branch multiplier:
# a u-muP model's residual sums carry their own tau weights (unit_scaling.functional.residual_add).
U_MUP_DEPTH = DepthRule("u-mup", 0.0, DepthExponents(lr_sgd=0.5, lr_adam=0.5, eps_adam=0.0, wd=-0.5),
                        description="u-muP (Blake et al. 2024): in-block lr (L/L0)^-1/2, lr * wd depth-free; "
                                    "use base_depth=1")
DEPTH_PRESETS = {r.name: r for r in (DEPTH_MUP, COMPLETEP, U_MUP_DEPTH)}


def get_depth_rule(rule) -> DepthRule:
    """None -> no scaling; 'depth-mup' | 'completep' | a float alpha in [1/2, 1] | a DepthRule."""
    if rule is None:
        return NO_DEPTH
    if isinstance(rule, DepthRule):
        return rule
    if isinstance(rule, str):
        key = rule.lower().replace("_", "-")
        if key in DEPTH_PRESETS:
            return DEPTH_PRESETS[key]
        if key == "none":
            return NO_DEPTH
        raise ValueError(f"unknown depth_scaling {rule!r}: known are None, {', '.join(map(repr, DEPTH_PRESETS))}, "
                         "or a float alpha in [0.5, 1]")
    return alpha_rule(rule)


def depth_mult(depth: int, base_depth: int) -> float:
    """m_L = depth / base_depth (positive ints; depth < base_depth is legal, m_L < 1)."""
    for n, v in (("depth", depth), ("base_depth", base_depth)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{n} must be a positive int (a number of residual blocks), got {v!r}")
    return depth / base_depth


def depth_rules_table() -> str:
    """The presets as text (printed by `paramlab schemes`)."""
    parts = ["depth rules (compose with every width scheme; L = residual blocks, L0 = base_depth):"]
    parts += [r.describe() for r in (NO_DEPTH, DEPTH_MUP, COMPLETEP, U_MUP_DEPTH)]
    parts.append("float alpha in [0.5, 1]: block exponents lr sgd 1-2a, lr adam 1-a, eps a, wd 0; outside 0")
    return "\n".join(parts)


# -- a rule resolved for one model -----------------------------------------------------------------


class BranchScale:
    """Forward hook: the branch output (bias included) -> m_L^-alpha * output."""

    def __init__(self, mult: float):
        self.mult = float(mult)

    def __call__(self, module, args, out):
        if not torch.is_tensor(out):
            raise TypeError(
                f"a residual branch output must be a tensor, but this {type(module).__name__} returns "
                f"{type(out).__name__}: name in branches= the module whose tensor output enters the residual sum "
                "(e.g. the attention's output projection, not the attention module)"
            )
        return out * self.mult


@dataclass(frozen=True)
class DepthPlan:
    """A depth rule resolved for one model (plain numbers and names, safe to copy and pickle).

    depth: residual blocks counted in the model (distinct blocks the branch patterns match).
    branches: module names whose output is multiplied by `branch_mult`.
    in_block: parameter names inside the residual blocks (they get the rule's block factors).
    """

    rule: DepthRule
    depth: int
    base_depth: int
    branches: tuple[str, ...]
    in_block: frozenset
    blocks: tuple[str, ...] = ()  # the residual blocks' names (module prefixes)

    @property
    def m_L(self) -> float:
        return depth_mult(self.depth, self.base_depth)

    @property
    def branch_mult(self) -> float:
        return self.rule.branch_mult(self.m_L)

    def factors(self, name: str, family: str) -> tuple[float, float, float]:
        """(lr, eps, wd) depth multipliers of parameter `name` for optimizer family 'sgd' | 'adam'."""
        return self.rule.factors(self.m_L, name in self.in_block, family)

    def describe(self) -> str:
        return (f"depth rule {self.rule.name}: {self.depth} residual blocks, base depth {self.base_depth}, "
                f"branch multiplier {self.branch_mult:.4g} on {len(self.branches)} branch outputs, "
                f"{len(self.in_block)} tensors in blocks")


def _as_list(p, what: str) -> list[str]:
    items = [p] if isinstance(p, str) else list(p)
    if not items or not all(isinstance(s, str) and s for s in items):
        raise TypeError(f"{what} must be a module-name pattern or a list of them (fnmatch, e.g. 'blocks.*.attn.o'), got {p!r}")
    return items


def _block_id(pattern: str, module_name: str) -> str:
    """The residual block a matched branch module belongs to.

    'blocks.*.attn.o' matching 'blocks.3.attn.o' -> 'blocks.3' (cut after the pattern's first wildcard
    segment); a pattern without wildcards ('blocks.3.act') -> the module's parent ('blocks.3').
    """
    parts = pattern.split(".")
    for i, s in enumerate(parts):
        if any(c in s for c in "*?["):
            return ".".join(module_name.split(".")[: i + 1])
    return module_name.rpartition(".")[0]


def resolve(model: nn.Module, plan, depth_scaling, base_depth, branches, blocks=None, depth=None) -> DepthPlan | None:
    """The `DepthPlan` of `model` (its width `plan` made already), or None when no depth argument is given.

    branches: fnmatch pattern(s) of the modules whose whole output is a residual branch output.
    blocks: pattern(s) of the residual blocks' parameter names (default: each matched branch's block,
        'blocks.3.attn.o' -> 'blocks.3.*'). depth: the number of residual blocks, as a check.
    base_depth: the depth the hyperparameters were tuned at (default: the counted depth, i.e. no scaling).
    """
    if branches is None:
        if depth_scaling is not None:
            raise ValueError(
                "depth_scaling needs branches=: name the modules whose output enters a residual sum "
                "(e.g. branches=['blocks.*.attn.o', 'blocks.*.mlp.proj']); only you know which they are"
            )
        if base_depth is not None or depth is not None or blocks is not None:
            raise ValueError("base_depth= / depth= / blocks= describe residual blocks: give branches= (and depth_scaling=)")
        return None
    rule = get_depth_rule(depth_scaling)
    names = _as_list(branches, "branches")
    modules = dict(model.named_modules())
    matched = {p: [n for n in modules if n and fnmatch.fnmatchcase(n, p)] for p in names}
    for p, found in matched.items():
        if not found:
            raise ValueError(f"branches pattern {p!r} matches no module of the model; module names look like "
                             f"{[n for n in modules if n][:8]}")
    ids = sorted({_block_id(p, n) for p, found in matched.items() for n in found},
                 key=lambda s: [int(t) if t.isdigit() else t for t in s.split(".")])
    if depth is not None and depth != len(ids):
        raise ValueError(f"depth={depth} but the branch patterns match {len(ids)} residual blocks ({ids[:4]}...): "
                         "check branches=")
    base_depth = len(ids) if base_depth is None else base_depth
    depth_mult(len(ids), base_depth)  # checks base_depth
    block_pats = [i + ".*" for i in ids] if blocks is None else _as_list(blocks, "blocks")
    params = [n for n, _ in model.named_parameters()]
    in_block = frozenset(n for n in params if any(fnmatch.fnmatchcase(n, p) for p in block_pats))
    bad = [f"{t.name} ({t.role})" for t in plan if t.name in in_block and t.role not in ("hidden", "vector")]
    if bad:
        raise ValueError(
            f"parameters inside residual blocks must be hidden weights or vectors, but {bad} are not: the first "
            "layer / embeddings and the readout sit outside the residual stream; narrow blocks= to the residual blocks"
        )
    branch_names = tuple(n for p in names for n in matched[p])
    for n in branch_names:
        own = [f"{n}.{k}" if n else k for k, v in modules[n]._parameters.items() if v is not None]
        if any(o not in in_block for o in own):
            raise ValueError(f"branch module {n!r} has parameters outside blocks={block_pats}: check the patterns")
    return DepthPlan(rule, len(ids), base_depth, branch_names, in_block, tuple(ids))


def install(model: nn.Module, dplan: DepthPlan | None) -> None:
    """A `BranchScale` hook on every branch module, only where the multiplier is not 1.0 (at L == L0 and
    for no rule nothing is installed: the same graph as without a rule)."""
    if dplan is None or dplan.branch_mult == 1.0:
        return
    modules = dict(model.named_modules())
    for n in dplan.branches:
        modules[n].register_forward_hook(BranchScale(dplan.branch_mult))


def remove(model: nn.Module) -> None:
    """Remove every `BranchScale` hook from `model`'s modules."""
    for mod in model.modules():
        for k in [k for k, h in mod._forward_hooks.items() if isinstance(h, BranchScale)]:
            del mod._forward_hooks[k]


def has_hooks(model: nn.Module) -> bool:
    return any(isinstance(h, BranchScale) for mod in model.modules() for h in mod._forward_hooks.values())


if __name__ == "__main__":  # pragma: no cover
    print(depth_rules_table())
