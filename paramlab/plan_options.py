"""The plan options: one set of keywords, with one set of defaults, for every place that makes a plan.

`make_plan`, `parameterize`, every builder (`mlp`, `cnn`, `transformer`) and the sweep runners take
the same keywords and check them here. They fix the network at the base width, which every scheme
equals at m = 1 (the scheme then says how each piece scales with width; see `paramlab.parameterize`):

    input / hidden weights   N(0, gain^2 / fan_in)          readout weight  N(0, readout_gain^2 / fan_in)
    embeddings               N(0, embedding_std^2)          biases          N(0, bias_std^2), zero by default
    readout                  times output_mult, a width-free constant (Bordelon & Pehlevan's 1/gamma_0)
    readout_zero_init        zero the readout weight and its bias (TP5's recommendation; removes f_0)
    init                     name or fnmatch pattern -> a base std, or 'zeros' / 'ones' / 'keep'

`gain=None` means "the builder's default gain", stated once per builder:

    mlp, cnn        the activation's He gain (`paramlab.models.activations.GAINS`: sqrt(2) for relu,
                    gelu and silu, 1 otherwise): every hidden matrix reads an activation's output
    transformer     1 (LeCun): its q/k/v matrices and MLP input read LayerNorm outputs. Kept at 1 on
                    purpose: the documented Transformer measurements (docs/experiments.md, tests/test_transformer.py)
                    were made with it; with sqrt(2) the muP attention-logit fit changes (see that test)
    parameterize    1: it does not know your module's activations

Pass a number to choose.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["PlanOptions"]


def _number(name: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'positive' if positive else '>= 0'}, got {value!r}")


@dataclass(frozen=True)
class PlanOptions:
    """The base-width network every scheme starts from (see the module docstring for each field)."""

    gain: float | None = None
    readout_gain: float = 1.0
    output_mult: float = 1.0
    bias_std: float = 0.0
    embedding_std: float = 1.0
    readout_zero_init: bool = False
    init: Mapping[str, float | str] | None = None

    def __post_init__(self):
        if self.gain is not None:
            _number("gain", self.gain, positive=True)
        _number("readout_gain", self.readout_gain, positive=False)
        _number("output_mult", self.output_mult, positive=True)
        _number("bias_std", self.bias_std, positive=False)
        _number("embedding_std", self.embedding_std, positive=False)
        if not isinstance(self.readout_zero_init, bool):
            raise TypeError(f"readout_zero_init must be True or False, got {self.readout_zero_init!r}")
        if self.init is not None and not isinstance(self.init, Mapping):
            raise TypeError(f"init must be a mapping name/pattern -> std or 'zeros'/'ones'/'keep', got {self.init!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], where: str = "") -> PlanOptions:
        """PlanOptions from keyword arguments; an unknown keyword is refused with the valid ones listed."""
        unknown = [k for k in kwargs if k not in cls.names()]
        if unknown:
            at = f"{where}: " if where else ""
            raise TypeError(f"{at}unknown keyword(s) {unknown}: the plan options are {', '.join(cls.names())}")
        return cls(**kwargs)

    def with_gain(self, default: float) -> PlanOptions:
        """These options with `gain` set to `default` where it is None."""
        return self if self.gain is not None else dataclasses.replace(self, gain=float(default))

    def as_kwargs(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.names()}
