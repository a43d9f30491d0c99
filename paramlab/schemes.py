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
        """The LR exponent for an optimizer family ('sgd' or 'adam')."""
        return self.c_adam if optimizer_family(family) == "adam" else self.c_sgd

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


# torch optimizer classes by how their step scales with the gradient (matched by class name along the
# MRO, so subclasses and wrappers such as mup's MuAdam, which returns a torch Adam, are recognized)
_SGD_CLASSES = frozenset({"SGD"})
_ADAM_CLASSES = frozenset({"Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad"})


def optimizer_family(optimizer) -> str:
    """The width-scaling family of an optimizer: 'sgd' (lr exponent c_sgd) or 'adam' (c_adam).

    `optimizer` is a name ('sgd', 'momentum', 'adam', 'adamw') or a torch optimizer instance: SGD is
    'sgd'; Adam, AdamW, Adamax, NAdam, RAdam, RMSprop and Adagrad, whose steps are normalized per
    coordinate, are 'adam'. Anything else is refused: its scaling is not known.
    """
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name in ("sgd", "momentum"):
            return "sgd"
        if name in ("adam", "adamw"):
            return "adam"
        raise ValueError(f"unknown optimizer {optimizer!r}: expected one of 'sgd', 'adam', 'adamw'")
    classes = {c.__name__ for c in type(optimizer).__mro__}
    if classes & _ADAM_CLASSES:
        return "adam"
    if classes & _SGD_CLASSES:
        return "sgd"
    raise ValueError(
        f"cannot tell the width-scaling family of a {type(optimizer).__name__} optimizer: name it "
        "(family='sgd' for SGD-like steps, 'adam' for per-coordinate normalized ones)"
    )


@dataclass(frozen=True)
class Scheme:
    """A width parameterization: one `Exponents` per role, plus the attention-logit exponent.

    `attn` is the exponent of the attention logit scale in d_head: logits = q.k / d_head^attn, with
    1/2 for SP/NTK-class schemes and 1 for muP/MF (TP5 Def. 4.1; THEORY.md §4.7). Models scale it
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

        std = a+b, sgd = 2a+c_sgd, adam = a+c_adam (THEORY.md §1.2). Two schemes with equal
        invariants train identically (SGD exactly; Adam up to eps).
        """
        return {r: dict(zip(("std", "sgd", "adam"), self[r].invariants())) for r in WIDTH_ROLES}

    def shift(self, t: float | Mapping[str, float], name: str | None = None) -> "Scheme":
        """Apply the abc symmetry per role: a+t, b-t, c_sgd-2t, c_adam-t (t a number or role -> t)."""
        ts = {r: (t.get(r, 0.0) if isinstance(t, Mapping) else float(t)) for r in ROLES}
        if isinstance(t, Mapping) and set(t) - set(ROLES):
            raise ValueError(f"unknown roles in shift: {sorted(set(t) - set(ROLES))}; roles are {ROLES}")
        new = {r: self[r].shifted(ts[r]) for r in ROLES}
        return dataclasses.replace(self, name=name or f"{self.name}~shift", **new)

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
        keys = ("std", "sgd", "adam") if optimizer is None else ("std", optimizer_family(optimizer))
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
        return dataclasses.replace(
            self, name=name or f"{self.name}->{other.name}@{t:g}", attn=mix(self.attn, other.attn), **new
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
        return "\n".join(lines)


def _f(x: float) -> str:
    return f"{x:>6.3g}"


def _scheme(name, description, a, b, c_sgd, c_adam, attn, vector=None):
    """Build a preset from [input, hidden, output] columns; biases and norm gains follow the input column."""
    roles = {r: Exponents(a[i], b[i], c_sgd[i], c_adam[i]) for i, r in enumerate(("input", "hidden", "output"))}
    return Scheme(name=name, vector=vector or roles["input"], attn=attn, description=description, **roles)


H = 0.5
SP = _scheme(
    "sp", "standard (PyTorch default init, one global LR; TP5's SP). Unstable at fixed LR as width grows",
    a=(0, 0, 0), b=(0, H, H), c_sgd=(0, 0, 0), c_adam=(0, 0, 0), attn=0.5,
)
# SP with its largest stable LR (TP4 Thm 4.1): SGD lr ~ 1/m on every layer -> kernel regime. For Adam a
# global lr ~ 1/m is not stable (logits grow like m^(1/2), THEORY.md §3.3), the global choice that is
# stable and nontrivial is lr ~ m^(-3/2) (kernel regime; first layer frozen, hidden features ~m^(-1/2)).
SP_STABLE = _scheme(
    "sp-stable", "SP with its largest stable global LR: SGD lr ~ 1/m, Adam lr ~ m^-3/2 (kernel regime)",
    a=(0, 0, 0), b=(0, H, H), c_sgd=(1, 1, 1), c_adam=(1.5, 1.5, 1.5), attn=0.5,
)
NTK = _scheme(
    "ntk", "neural tangent (TP4 NTP; Adam: kernel-regime exponents, THEORY.md §2.5). Kernel regime",
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
