"""Width parameterizations as data: a table of abc-exponents per tensor role.

A tensor `w` of role `r` in a network of width `n`, trained from base width `n0` (`m = n / n0`), is
used and trained as (Yang & Hu 2021, "Tensor Programs IV", arXiv 2011.14522, §3):

    W_eff = m^(-a) * w                    forward multiplier
    w     ~ N(0, (sigma_base * m^(-b))^2)  init (sigma_base: the SP std at the base width)
    lr(w) = eta * m^(-c)                  c = c_sgd for SGD-like, c_adam for Adam-like optimizers

so at `m = 1` every scheme is the same standard-parameterized network with the same optimizer.
What decides the dynamics are three invariants per role (exponents of 1/m): effective init std
`a + b`, effective SGD step `2a + c_sgd`, effective Adam step `a + c_adam`. The symmetry
`(a, b, c_sgd, c_adam) -> (a + t, b - t, c_sgd - 2t, c_adam - t)` leaves them, and the trained
function, unchanged (TP4 Eq. 5; TP5 §; Everett et al. 2024 §2): exactly for SGD, for Adam up to
eps (see `paramlab.optim` for how paramlab scales eps so that it holds there too).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

ROLES = ("input", "hidden", "output", "vector", "scalar")
# Roles whose tensors have a width dimension. `scalar` tensors (readout bias) have m = 1 always, so
# their exponents never matter and are ignored when schemes are compared.
WIDTH_ROLES = ("input", "hidden", "output", "vector")
OPTIMIZER_FAMILIES = ("sgd", "adam")


@dataclass(frozen=True)
class Exponents:
    """Width exponents of one role: multiplier m^-a, init std m^-b, SGD lr m^-c_sgd, Adam lr m^-c_adam."""

    a: float = 0.0
    b: float = 0.0
    c_sgd: float = 0.0
    c_adam: float = 0.0

    def c(self, family: str) -> float:
        """The lr exponent of a family whose rule is a bare column (sgd, adam, sign): c_sgd or c_adam.
        Adafactor's and Muon's depend on the role and scheme: `Scheme.lr_exponent`."""
        return getattr(self, "c_" + column_family(family))

    def invariants(self) -> tuple[float, float, float]:
        """(effective init std, effective SGD step, effective Adam step) exponents: (a+b, 2a+c_sgd, a+c_adam)."""
        return invariants(self.a, self.b, self.c_sgd, self.c_adam)

    def shifted(self, t: float) -> "Exponents":
        """Apply the abc symmetry with shift t: (a+t, b-t, c_sgd-2t, c_adam-t). Invariants unchanged."""
        return Exponents(self.a + t, self.b - t, self.c_sgd - 2 * t, self.c_adam - t)


def invariants(a: float, b: float, c_sgd: float, c_adam: float) -> tuple[float, float, float]:
    """The exponents (of 1/m) that decide the dynamics, from a multiplier m^-a, init m^-b and lrs m^-c:
    effective init std a + b, effective SGD step 2a + c_sgd, effective Adam step a + c_adam (TP4 Eq. 5).
    A tied tensor's further use takes its own a with the tensor's b and c."""
    return (a + b, 2 * a + c_sgd, a + c_adam)


def backward_signal_exponent(std_out: float, step_out: float | None = None) -> float:
    """The exponent `back` of the backward signal df/dh ~ m^-back that every hidden layer's gradient
    carries. At init it is the readout's effective init std `std_out`; once the readout has taken a
    step, the larger of the readout's init and its update: min(std_out, step_out) (TP4 §5, muP: 1)."""
    return std_out if step_out is None else min(std_out, step_out)


# -- optimizer families ------------------------------------------------------------------------------
#
# How a family's per-tensor lr exponent follows from a scheme's columns, derived from the size of one
# update. Write a tensor's effective step as the change of its effective weight W_eff = m^-a w, and
# let its fan-out and fan-in grow like m^alpha and m^beta (input (alpha, beta) = (1, 0), hidden (1, 1),
# output (0, 1)). A scheme's Adam column fixes the per-entry step m^-(a + c_adam); for an aligned
# (low-rank) update that is a spectral norm m^-(a + c_adam) * m^((alpha + beta)/2). Each family below
# is given the exponent whose update has the SAME size as the scheme's Adam step, so every family trains
# the scheme's intended regime (and its invariants are the Adam ones):
#
#   sgd        c = c_sgd                          (TP4 §3: the SGD column itself)                [sure]
#   adam       c = c_adam                         (TP5 Table 3 / Table 8)                         [sure]
#   sign       c = c_adam                         Lion (Chen et al. 2023, arXiv 2302.06675) steps
#              sign(.) = +-1 per entry, the size of Adam's normalized step at eps = 0: the same
#              exponent, exactly                                                                [sure]
#   adafactor  c = c_adam - b                     torch.optim.Adafactor (Shazeer & Stern 2018) steps
#              rho * max(eps2, RMS(w)) * (normalized update): the stored tensor's RMS ~ m^-b
#              supplies m^-b, so the lr keeps only the rest. Invariant under the abc shift (a+t, b-t)
#              as Everett et al. 2024 (arXiv 2407.05872, §2) state for Adafactor with parameter
#              scaling. Holds while RMS(w) is its init's (hidden muP weights: the update is m^-1/2
#              smaller than the init)                                                           [sure at init, medium later]
#   spectral   c = c_adam - (alpha + beta)/2 + max(0, alpha - beta)/2
#              torch.optim.Muon with adjust_lr_fn="original": the orthogonalized update has every
#              singular value 1 and torch multiplies lr by sqrt(max(1, A/B)) (A, B = fan-out, fan-in),
#              so ||dW_eff||_2 = m^-(a+c) * m^(max(0, alpha-beta)/2). Matching the Adam step's spectral
#              norm gives input +0, hidden -1, output -1/2: under muP the hidden lr is width-free and the
#              readout's falls like m^-1/2, which is Yang, Simon & Bernstein 2023 (arXiv 2310.17813)'s
#              spectral condition ||dW||_2 ~ sqrt(fan_out / fan_in)                              [sure for Linear weights]
#   spectral-rms  c = c_adam - min(alpha, beta)/2
#              Muon with adjust_lr_fn="match_rms_adamw": torch's factor 0.2 * sqrt(max(A, B)) grows
#              like m^(max(alpha, beta)/2), so hidden -1/2 and input/output +0: under muP the hidden
#              lr must fall like m^-1/2 (not AdamW's 1/m: that freezes hidden features as m^-1/2;
#              no correction at all grows them as m^+1/2)                                       [sure for Linear weights]
#
# Spectral families take 2-D (out, in) matrices only (torch's Muon refuses the rest; an embedding's
# (vocab, width) layout would read A/B backwards), so they have no vector or scalar exponent. Schemes
# with ONE global lr (SP, sp-stable) do not use these rules: they list their lr per family
# (`Scheme.global_lr`), because "SP under Muon" means every tensor at the same lr.

# width exponents (fan-out, fan-in) of the matrix roles
ROLE_DIMS = {"input": (1, 0), "hidden": (1, 1), "output": (0, 1)}


@dataclass(frozen=True)
class OptimizerFamily:
    """How one family's per-tensor lr (and eps) scale with width, as data (see the table above).

    lr exponent of a tensor with exponents (a, b, c_sgd, c_adam) and role r:
        c = c_<base> + lr_shift[r] + lr_b * b          (lr_shift[r] None: the family cannot train role r)
    `eps`: option name -> what it must follow: 'gradient' (eps * m^-(a + g), compared to |grad|),
    'param' (eps * m^-b, compared to RMS(w): Adafactor's eps2 floor), 'fixed' (not scaled).
    `names`: the names `paramlab.optimizer` and `optimizer_family` accept; `classes`: torch class
    names recognized along an optimizer's MRO.
    """

    name: str
    base: str
    lr_shift: Mapping[str, float | None]
    lr_b: float = 0.0
    eps: tuple[tuple[str, str], ...] = ()
    names: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    source: str = ""

    def shift(self, role: str) -> float | None:
        return self.lr_shift.get(role, self.lr_shift.get("*"))

    def c(self, e: "Exponents", role: str) -> float | None:
        """The lr exponent of a tensor with exponents `e` and role `role`, or None if this family cannot train it."""
        d = self.shift(role)
        return None if d is None else getattr(e, "c_" + self.base) + d + self.lr_b * e.b

    def adam_step(self, e: "Exponents", role: str, c: float) -> float:
        """The Adam-equivalent effective step exponent of a tensor trained with lr exponent `c` (inverse of `c`)."""
        return e.a + c - (self.shift(role) or 0.0) - self.lr_b * e.b


def _spectral_shift(adjust_exp):
    shifts = {r: -(al + be) / 2 + adjust_exp(al, be) for r, (al, be) in ROLE_DIMS.items()}
    return {**shifts, "vector": None, "scalar": None}


FAMILIES: dict[str, OptimizerFamily] = {f.name: f for f in (
    OptimizerFamily("sgd", "sgd", {"*": 0.0}, names=("sgd", "momentum"), classes=("SGD",),
                    source="TP4 §3"),
    OptimizerFamily("adam", "adam", {"*": 0.0}, eps=(("eps", "gradient"),), names=("adam", "adamw"),
                    classes=("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad"),
                    source="TP5 Table 3"),
    OptimizerFamily("sign", "adam", {"*": 0.0}, names=("lion", "sign"), classes=("Lion",),
                    source="Chen et al. 2023 (Lion): sign updates, Adam's step size"),
    OptimizerFamily("adafactor", "adam", {"*": 0.0}, lr_b=-1.0, eps=(("eps1", "gradient"), ("eps2", "param")),
                    names=("adafactor",), classes=("Adafactor",),
                    source="Everett et al. 2024 §2 (parameter scaling): lr exponent c_adam - b"),
    OptimizerFamily("spectral", "adam", _spectral_shift(lambda al, be: max(0, al - be) / 2),
                    eps=(("eps", "fixed"),), names=("muon", "spectral"), classes=("Muon",),
                    source="Yang, Simon & Bernstein 2023; torch Muon adjust_lr_fn='original'"),
    OptimizerFamily("spectral-rms", "adam", _spectral_shift(lambda al, be: max(al, be) / 2),
                    eps=(("eps", "fixed"),), names=("spectral-rms",),
                    source="torch Muon adjust_lr_fn='match_rms_adamw' (0.2 sqrt(max(A, B)))"),
)}
OPTIMIZER_FAMILIES = tuple(FAMILIES)
# torch Muon's adjust_lr_fn -> the family it makes
MUON_ADJUST = {None: "spectral", "original": "spectral", "match_rms_adamw": "spectral-rms"}
_BY_NAME = {n: f.name for f in FAMILIES.values() for n in (f.name, *f.names)}
_BY_CLASS = {c: f.name for f in FAMILIES.values() for c in f.classes}


def get_family(optimizer) -> OptimizerFamily:
    """The `OptimizerFamily` of a family or optimizer name ('lion', 'muon', ...) or a torch optimizer.

    A torch optimizer is recognized by class name along its MRO (subclasses and wrappers such as
    mup's MuAdam, which returns a torch Adam, included); a `paramlab_family` attribute wins. Muon's
    family follows its `adjust_lr_fn` (`MUON_ADJUST`). Anything else is refused: its scaling is not known.
    """
    if isinstance(optimizer, OptimizerFamily):
        return optimizer
    if isinstance(optimizer, str):
        key = _BY_NAME.get(optimizer.lower())
        if key is None:
            raise ValueError(f"unknown optimizer {optimizer!r}: expected one of {', '.join(sorted(_BY_NAME))}")
        return FAMILIES[key]
    declared = getattr(optimizer, "paramlab_family", None)
    if declared is not None:
        return get_family(declared)
    for cls in type(optimizer).__mro__:
        if cls.__name__ == "Muon":
            return FAMILIES[MUON_ADJUST.get(getattr(optimizer, "defaults", {}).get("adjust_lr_fn"), "spectral")]
        if cls.__name__ in _BY_CLASS:
            return FAMILIES[_BY_CLASS[cls.__name__]]
    raise ValueError(
        f"cannot tell the width-scaling family of a {type(optimizer).__name__} optimizer: name it "
        f"(paramlab.optimizer(model, FAMILY, impl={type(optimizer).__name__}) with FAMILY one of "
        f"{', '.join(OPTIMIZER_FAMILIES)})"
    )


def optimizer_family(optimizer) -> str:
    """The width-scaling family name of an optimizer: 'sgd', 'adam', 'sign', 'adafactor', 'spectral', 'spectral-rms'.

    `optimizer` is a name ('sgd', 'momentum', 'adam', 'adamw', 'lion', 'adafactor', 'muon') or a
    torch optimizer instance (see `get_family`). SGD is 'sgd'; Adam, AdamW, Adamax, NAdam, RAdam,
    RMSprop and Adagrad, whose steps are normalized per coordinate, are 'adam'.
    """
    return get_family(optimizer).name


def column_family(optimizer) -> str:
    """'sgd' or 'adam' for a family whose lr exponent IS that scheme column on every role (sgd, adam, sign);
    refuses the others, whose exponent needs the role and the scheme (`Scheme.lr_exponent`)."""
    fam = get_family(optimizer)
    if fam.lr_b or any(fam.shift(r) for r in ROLES):
        raise ValueError(f"the {fam.name} family's lr exponent depends on the tensor's role and the scheme: use "
                         f"paramlab.get_plan(model).lr_exponent(name, {fam.name!r}) or Scheme.lr_exponent")
    return fam.base


def family_base(optimizer) -> str:
    """'sgd' or 'adam': the scheme column (and depth rule) a family's exponents derive from."""
    return get_family(optimizer).base


@dataclass(frozen=True)
class Scheme:
    """A width parameterization: one `Exponents` per role, plus the attention-logit exponent.

    `attn` is the exponent of the attention logit scale in d_head: logits = q.k / d_head^attn, with
    1/2 for SP/NTK-class schemes and 1 for muP/MF (TP5 Def. 4.1; docs/theory.md §4.7). Models scale it
    relative to the base d_head, so at the base width every scheme has the same attention.
    """

    name: str
    input: Exponents
    hidden: Exponents
    output: Exponents
    vector: Exponents
    scalar: Exponents = field(default_factory=Exponents)
    attn: float = 0.5
    description: str = ""
    # schemes with ONE lr for every tensor (SP-type): family -> the exponent of that lr. Families not
    # listed derive their exponents from the columns (`OptimizerFamily.c`); 'sgd'/'adam' must match them.
    global_lr: tuple[tuple[str, float], ...] = ()
    unit: bool = False  # exponents in each tensor's own fan, base size 1 (u-muP's frame; paramlab.unit)

    def __post_init__(self):
        for role in ROLES:
            e = getattr(self, role)
            if not isinstance(e, Exponents):
                raise TypeError(f"Scheme {self.name!r}: role {role!r} must be an Exponents, got {type(e).__name__}")
            for k, v in dataclasses.asdict(e).items():
                if not (isinstance(v, (int, float)) and math.isfinite(v)):
                    raise ValueError(f"Scheme {self.name!r}: {role}.{k} must be a finite number, got {v!r}")
        if not math.isfinite(self.attn):
            raise ValueError(f"Scheme {self.name!r}: attn must be finite, got {self.attn!r}")
        for fam, c in self.global_lr:
            f = get_family(fam)
            if f.name in ("sgd", "adam") and any(getattr(self[r], "c_" + f.name) != c for r in WIDTH_ROLES):
                raise ValueError(f"Scheme {self.name!r}: global_lr[{fam!r}] = {c} disagrees with its c_{f.name} column")

    def lr_exponent(self, role: str, family, e: "Exponents | None" = None) -> float | None:
        """The lr exponent c of a tensor of `role` (exponents `e`, default the role's) under an optimizer family.

        A scheme with one global lr gives its listed exponent (`global_lr`); otherwise the family's rule
        (`OptimizerFamily.c`). None: the family cannot train this role (a spectral family on a vector).
        """
        f = get_family(family)
        e = self[role] if e is None else e
        g = dict(self.global_lr)
        if f.name in g:
            return None if f.shift(role) is None else g[f.name]
        return f.c(e, role)

    def __getitem__(self, role: str) -> Exponents:
        if role not in ROLES:
            raise KeyError(f"unknown role {role!r}: roles are {', '.join(ROLES)}")
        return getattr(self, role)

    def table(self) -> dict[str, Exponents]:
        """role -> Exponents, in the order of ROLES."""
        return {r: self[r] for r in ROLES}

    # -- invariants, symmetry, canonical form -------------------------------------------------------

    def invariants(self) -> dict[str, dict[str, float]]:
        """Per width role: exponents of 1/m of the effective init std, SGD step and Adam step.

        std = a+b, sgd = 2a+c_sgd, adam = a+c_adam (docs/theory.md §1.2). Two schemes with equal
        invariants train identically (SGD exactly; Adam up to eps).
        """
        return {r: dict(zip(("std", "sgd", "adam"), self[r].invariants())) for r in WIDTH_ROLES}

    def shift(self, t: float | Mapping[str, float], name: str | None = None) -> "Scheme":
        """Apply the abc symmetry per role: a+t, b-t, c_sgd-2t, c_adam-t (t a number or role -> t)."""
        ts = {r: (t.get(r, 0.0) if isinstance(t, Mapping) else float(t)) for r in ROLES}
        if isinstance(t, Mapping) and set(t) - set(ROLES):
            raise ValueError(f"unknown roles in shift: {sorted(set(t) - set(ROLES))}; roles are {ROLES}")
        new = {r: self[r].shifted(ts[r]) for r in ROLES}
        return dataclasses.replace(self, name=name or f"{self.name}~shift", global_lr=self._shifted_global(ts), **new)

    def _shifted_global(self, ts: Mapping[str, float]) -> tuple:
        """`global_lr` after the shift: one t on every width role moves each family's exponent by
        base (-2t SGD, -t Adam) - lr_b * t; a per-role shift leaves no single global lr (the rules apply)."""
        uniform = {ts[r] for r in WIDTH_ROLES}
        if not self.global_lr or len(uniform) != 1:
            return ()
        t = uniform.pop()
        return tuple((f, c - (2 * t if get_family(f).base == "sgd" else t) - get_family(f).lr_b * t)
                     for f, c in self.global_lr)

    def canonical(self) -> "Scheme":
        """The equivalent scheme with no forward multipliers (a = 0 on every role).

        Then b = a+b, c_sgd = 2a+c_sgd, c_adam = a+c_adam: the invariants themselves (the "TP5 Table 3"
        form). Two schemes are equivalent iff their canonical forms agree on the width roles.
        """
        return self.shift({r: -self[r].a for r in ROLES}, name=f"{self.name}~canonical")

    def equivalent(self, other: "Scheme | str", optimizer: str | None = None, tol: float = 1e-12) -> bool:
        """True if the two schemes train identically under the symmetry.

        optimizer='sgd' compares (std, sgd) invariants, 'adam'/'adamw' compares (std, adam), None both.
        Scalar tensors are ignored (m = 1), and so is `attn` unless both have attention.
        """
        other = get_scheme(other)
        keys = ("std", "sgd", "adam") if optimizer is None else ("std", family_base(optimizer))
        mine, theirs = self.invariants(), other.invariants()
        return all(abs(mine[r][k] - theirs[r][k]) <= tol for r in WIDTH_ROLES for k in keys) and (
            abs(self.attn - other.attn) <= tol
        ) and self.unit == other.unit  # a unit-frame scheme has other constants at every width

    def lerp(self, other: "Scheme | str", t: float, name: str | None = None) -> "Scheme":
        """Exponents (1-t)*self + t*other, role by role. Invariants interpolate linearly too."""
        other = get_scheme(other)
        if self.unit != other.unit:
            raise ValueError(f"cannot mix {self.name!r} and {other.name!r}: one states its exponents in each tensor's own "
                             "fan (unit frame), the other relative to a base width")
        mix = lambda x, y: (1 - t) * x + t * y  # noqa: E731
        new = {
            r: Exponents(*(mix(getattr(self[r], k), getattr(other[r], k)) for k in ("a", "b", "c_sgd", "c_adam")))
            for r in ROLES
        }
        # one global lr survives only between two schemes that both have one
        fams = dict(self.global_lr).keys() & dict(other.global_lr).keys()
        glr = tuple((f, mix(dict(self.global_lr)[f], dict(other.global_lr)[f])) for f in fams)
        return dataclasses.replace(
            self, name=name or f"{self.name}->{other.name}@{t:g}", attn=mix(self.attn, other.attn), global_lr=glr, **new
        )

    def predicted_r(self) -> float:
        """Feature-update exponent r for SGD: Delta x^L ~ m^(-r) (TP4 Def. 3.2, per-layer-LR form).

        Per layer, with s_l = 2a_l + c_l (effective SGD step) and the backward-signal exponent
        back = min(a_out + b_out, s_out): r_in = s_in + back, r_hidden = s_hidden - 1 + back, and
        r = min of those. With one global c this is TP4's Def. 3.2 exactly. r = 0: feature learning;
        r > 0: kernel regime (features move like m^-r);
        r < 0: unstable.
        """
        inv = self.invariants()
        back = backward_signal_exponent(inv["output"]["std"], inv["output"]["sgd"])
        r_in = inv["input"]["sgd"] + back
        r_hidden = inv["hidden"]["sgd"] - 1 + back
        return min(r_in, r_hidden)

    def describe(self) -> str:
        """A multi-line text table of exponents and invariants."""
        lines = [f"{self.name}: {self.description}".rstrip(": "), f"  attention logits ~ 1/d_head^{self.attn:g}"]
        if self.unit:
            lines.append("  unit frame: m is each tensor's own fan (base size 1), weights N(0, gain^2) (paramlab.unit)")
        lines.append(f"  {'role':<7} {'a':>6} {'b':>6} {'c_sgd':>6} {'c_adam':>6} | {'std':>6} {'sgd':>6} {'adam':>6}")
        for r in ROLES:
            e = self[r]
            inv = e.invariants()
            lines.append(
                f"  {r:<7} {_f(e.a)} {_f(e.b)} {_f(e.c_sgd)} {_f(e.c_adam)} | {_f(inv[0])} {_f(inv[1])} {_f(inv[2])}"
            )
        return "\n".join(lines + ["", self.describe_families()])

    def describe_families(self) -> str:
        """Per optimizer family: the lr exponent c of each role (lr ~ m^-c), its eps rules and its source."""
        fams = list(FAMILIES.values())
        lines = [f"  lr exponent c per optimizer family (lr ~ m^-c){'; one global lr per family' if self.global_lr else ''}",
                 f"  {'family':<13} " + " ".join(f"{r:>7}" for r in ROLES) + f"  {'eps follows':<26} source"]
        for f in fams:
            cs = [self.lr_exponent(r, f) for r in ROLES]
            eps = ",".join(f"{k}~{v}" for k, v in f.eps) or "-"
            lines.append(f"  {f.name:<13} " + " ".join("      -" if c is None else f"{c:>7.3g}" for c in cs)
                         + f"  {eps:<26} {f.source}")
        return "\n".join(lines)


def _f(x: float) -> str:
    return f"{x:>6.3g}"


def _scheme(name, description, a, b, c_sgd, c_adam, attn, vector=None, global_lr=()):
    """Build a preset from [input, hidden, output] columns; biases and norm gains follow the input column."""
    roles = {r: Exponents(a[i], b[i], c_sgd[i], c_adam[i]) for i, r in enumerate(("input", "hidden", "output"))}
    return Scheme(name=name, vector=vector or roles["input"], attn=attn, description=description,
                  global_lr=tuple(global_lr), **roles)


H = 0.5
SP = _scheme(
    "sp", "standard (PyTorch default init, one global LR; TP5's SP). Unstable at fixed LR as width grows",
    a=(0, 0, 0), b=(0, H, H), c_sgd=(0, 0, 0), c_adam=(0, 0, 0), attn=0.5,
    global_lr=(("sgd", 0), ("adam", 0), ("sign", 0), ("adafactor", 0), ("spectral", 0), ("spectral-rms", 0)),
)
# SP with its largest stable LR (TP4 Thm 4.1): SGD lr ~ 1/m on every layer -> kernel regime. For Adam a
# global lr ~ 1/m is not stable (logits grow like m^(1/2), docs/theory.md §3.3), the global choice that is
# stable and nontrivial is lr ~ m^(-3/2) (kernel regime; first layer frozen, hidden features ~m^(-1/2)).
SP_STABLE = _scheme(
    "sp-stable", "SP with its largest stable global LR: SGD lr ~ 1/m, Adam lr ~ m^-3/2 (kernel regime)",
    a=(0, 0, 0), b=(0, H, H), c_sgd=(1, 1, 1), c_adam=(1.5, 1.5, 1.5), attn=0.5,
    # sign: Adam's step size [sure]. adafactor: the hidden and readout steps carry RMS(w) ~ m^-1/2, so a
    # global lr ~ m^-1/2 keeps them O(1) [derived]. spectral: dW_out x ~ lr sqrt(n) bounds it at m^-1/2;
    # spectral-rms: 0.2 sqrt(n) more, m^-1 [derived]. (Muon hybrids: the AdamW part binds at m^-3/2.)
    global_lr=(("sgd", 1), ("adam", 1.5), ("sign", 1.5), ("adafactor", 0.5), ("spectral", 0.5), ("spectral-rms", 1)),
)
NTK = _scheme(
    "ntk", "neural tangent (TP4 NTP; Adam: kernel-regime exponents, docs/theory.md §2.5). Kernel regime",
    a=(0, H, H), b=(0, 0, 0), c_sgd=(0, 0, 0), c_adam=(H, 1, H), attn=0.5,
)
MF = _scheme(
    "mf", "mean field (Everett et al. 2024 MFP; TP4 MF for one hidden layer). Feature learning, = muP",
    a=(0, H, 1), b=(0, 0, 0), c_sgd=(-1, -1, -1), c_adam=(0, H, 0), attn=1.0,
)
MUP = _scheme(
    "mup", "maximal update (TP5 Table 8, the form of the `mup` package: MuReadout + MuSGD/MuAdam)",
    a=(0, 0, 1), b=(0, H, 0), c_sgd=(-1, 0, -1), c_adam=(0, 1, 0), attn=1.0,
)

# u-muP (Blake et al. 2024, arXiv 2407.17465, Table 2; Graphcore's unit-scaling 0.3.5 optim.lr_scale_func_adam)
# in its own frame (unit=True: m is the tensor's fan, weights N(0, 1); paramlab.unit): hidden x fan_in^-1/2 with
# Adam lr fan_in^-1/2, readout x 1/fan_in with lr 1, embeddings x 1 with lr d^-1/2, vectors x 1 with lr 1,
# q.k / d_head. SGD takes the package's SGD rule for its default readout (the Adam column); with true
# gradients that is not the package's SGD step (docs/peers.md).
U_MUP = Scheme(
    "u-mup", input=Exponents(0, 0, H, H), hidden=Exponents(H, 0, H, H), output=Exponents(1, 0, 0, 0),
    vector=Exponents(0, 0, 0, 0), attn=1.0, unit=True,
    description="unit-scaled muP (Blake et al. 2024; Graphcore unit-scaling): unit init, rules in each tensor's fan",
)

# relative schemes: at the base width every one is the same SP network with one lr
PRESETS: dict[str, Scheme] = {s.name: s for s in (SP, SP_STABLE, NTK, MF, MUP)}
# unit-frame schemes (paramlab.unit): no base width, their own constants at every width
UNIT_PRESETS: dict[str, Scheme] = {s.name: s for s in (U_MUP,)}


def lazy_rich(alpha: float) -> Scheme:
    """A one-parameter family from the kernel regime (alpha=0, NTK) to feature learning (alpha=1, muP).

    Exponents are (1-alpha) * NTK + alpha * muP role by role. In invariant form the readout's
    effective init std is m^-(1/2 + alpha/2) (Chizat, Oyallon & Bach 2019's output scale
    alpha(m) ~ m^((1-alpha)/2) relative to mean field), the readout SGD step stays m^-1 (TP4 Thm 3.3:
    2a_out + c = 1) and the feature-update exponent is r = (1 - alpha)/2 (TP4 Def. 3.2), so hidden
    features move like m^(-(1-alpha)/2): every alpha < 1 is stable and in the kernel regime at
    infinite width, alpha = 1 is muP. (Bordelon & Pehlevan 2022's gamma_0 is the width-independent
    counterpart: an output constant 1/gamma_0 with lr ~ gamma_0^2; pass it as the builders' `output_mult`.)
    """
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"lazy_rich(alpha): alpha must be in [0, 1] (0 = NTK, 1 = muP), got {alpha!r}")
    return NTK.lerp(MUP, alpha, name=f"lazy-rich-{alpha:g}")


def get_scheme(scheme: "Scheme | str") -> Scheme:
    """A Scheme from a preset name ('sp', 'sp-stable', 'ntk', 'mf', 'mup', 'lazy-rich-<alpha>', 'u-mup') or a Scheme."""
    if isinstance(scheme, Scheme):
        return scheme
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a Scheme or a preset name, got {type(scheme).__name__}")
    key = scheme.lower().replace("_", "-")
    if key in PRESETS or key in UNIT_PRESETS:
        return PRESETS.get(key) or UNIT_PRESETS[key]
    if key.startswith("lazy-rich-"):
        try:
            return lazy_rich(float(key[len("lazy-rich-"):]))
        except ValueError as e:
            raise ValueError(f"bad lazy-rich scheme {scheme!r}: {e}") from None
    known = ", ".join([*PRESETS, *UNIT_PRESETS]) + ", lazy-rich-<alpha in [0,1]>"
    raise ValueError(f"unknown scheme {scheme!r}: known schemes are {known}")


def custom(name: str, description: str = "", attn: float = 0.5, **roles: Exponents | Iterable[float]) -> Scheme:
    """Define a scheme from role=Exponents or role=(a, b, c_sgd, c_adam); `vector` defaults to `input`."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}: roles are {', '.join(ROLES)}")
    missing = {"input", "hidden", "output"} - set(roles)
    if missing:
        raise ValueError(f"custom scheme {name!r} needs exponents for {sorted(missing)}")
    ex = {r: (v if isinstance(v, Exponents) else Exponents(*v)) for r, v in roles.items()}
    ex.setdefault("vector", ex["input"])
    return Scheme(name=name, description=description, attn=attn, **ex)


def equivalent(s1: "Scheme | str", s2: "Scheme | str", optimizer: str | None = None) -> bool:
    """Whether two schemes train identically under the abc symmetry (see `Scheme.equivalent`)."""
    return get_scheme(s1).equivalent(s2, optimizer=optimizer)
