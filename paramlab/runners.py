"""The runner registry: what a sweep can run, by name.

A runner turns one config (a dict of options) into a result: ``fn(config) -> dict`` with the summary
metrics, plus optionally ``"history"`` (a list of ``{"step": s, metric: value}`` rows) and
``"status"`` (``"finished"`` or ``"diverged"``). Runners compute and return; they never touch the
store, so a run on a remote Ray worker is recorded by the process that started the sweep.

Registration is explicit. The built-in runners are ``"module:attribute"`` names, imported on first
use (so this module imports nothing above it): the ``train_mlp`` runner (`BUILTIN`) and one per
experiment, which the experiments list themselves (`paramlab.experiments.RUNNERS`, read by
`builtin_runners`). A runner of your own is either registered in-process with
`register_runner`, or named in a spec by its import path, ``runner: mypackage.module:RUNNER``
(which Ray workers can import too).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping

__all__ = ["BUILTIN", "RUNNERS", "BatchKey", "Option", "Runner", "SpecError", "builtin_runners", "get_runner",
           "non_negative", "positive", "register_runner"]

# name -> "module:attribute" of a Runner, imported on first use
BUILTIN = {"train_mlp": "paramlab.kit.train_mlp:RUNNER"}
# the package that lists the experiments' runners (its RUNNERS: name -> "module:attribute")
EXPERIMENT_PACKAGE = "paramlab.experiments"


def builtin_runners() -> dict[str, str]:
    """Every built-in runner, name -> ``"module:attribute"``: `BUILTIN` and the experiments' own list
    (read by name, so the runners' layer never imports the experiments above it)."""
    return {**BUILTIN, **importlib.import_module(EXPERIMENT_PACKAGE).RUNNERS}


class SpecError(ValueError):
    """A sweep spec (or an experiment's options) that cannot run: unknown key, bad value, empty grid."""


def positive(v) -> str | None:
    """An Option check: None if v > 0, else the reason."""
    return None if v > 0 else "must be positive"


def non_negative(v) -> str | None:
    """An Option check: None if v >= 0, else the reason."""
    return None if v >= 0 else "must be >= 0"


@dataclass(frozen=True)
class Option:
    """One option of a runner: default, accepted types (None among them: may be null), choices,
    and a check returning an error text (or None) for a value."""

    default: Any = None
    types: tuple = ()
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None
    help: str = ""

    def accepted(self) -> tuple:
        if self.types:
            return self.types
        if self.default is None:
            return ()
        t = type(self.default)
        return (int, float) if t is float else (t,)

    def validate(self, key: str, value: Any) -> None:
        """Raise SpecError naming `key` if `value` has the wrong type, is not finite, not a choice,
        or fails the check."""
        types = self.accepted()
        if types:
            ok = (value is None and None in types) or any(
                t is not None and isinstance(value, t) and not (isinstance(value, bool) and t in (int, float))
                for t in types
            )
            if not ok:
                names = ", ".join("null" if t is None else t.__name__ for t in types)
                raise SpecError(f"option {key!r}: {value!r} is a {type(value).__name__}, expected {names}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"option {key!r}: {value!r} is not a finite number")
        if self.choices is not None and value not in self.choices:
            raise SpecError(f"option {key!r}: {value!r} is not one of {list(self.choices)}")
        if self.check is not None and value is not None:
            msg = self.check(value)
            if msg:
                raise SpecError(f"option {key!r}: {value!r} {msg}")


@dataclass(frozen=True)
class Runner:
    """A registered runner: how to run one config, and optionally several at once.

    fn(config) -> dict: the summary, plus optional "history" rows and "status".
    options: valid config keys -> Option; None accepts any key, unchecked.
    prepare(config) -> config: check values that need more than a type (raise ValueError) and
        fill in derived defaults; runs on every grid point before any run starts.
    batch(configs) -> [result]: run several configs in one pass (e.g. a stacked ensemble);
    batch_key(config) -> hashable: configs with equal keys may be batched together;
    batch_pays(config) -> bool: the `ensemble: auto` policy (default: always batch).
    resources(configs) -> {"num_cpus": c, "num_gpus": g}: what one unit asks of its executor.
    """

    name: str
    fn: Callable[[dict], dict]
    options: Mapping[str, Option] | None = None
    prepare: Callable[[dict], dict] | None = None
    batch: Callable[[list], list] | None = None
    batch_key: Callable[[dict], Hashable] | None = None
    batch_pays: Callable[[dict], bool] | None = None
    resources: Callable[[list], dict] | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a runner needs a non-empty name")
        if not callable(self.fn):
            raise TypeError(f"runner {self.name!r}: fn must be callable")
        if (self.batch is None) != (self.batch_key is None):
            raise ValueError(f"runner {self.name!r}: give batch and batch_key together")
        if self.options is not None:
            opts = {k: (v if isinstance(v, Option) else Option(v)) for k, v in self.options.items()}
            object.__setattr__(self, "options", opts)

    def defaults(self) -> dict:
        return {k: o.default for k, o in (self.options or {}).items()}

    def valid_keys(self) -> str:
        return ", ".join(sorted(self.options)) if self.options is not None else "(any)"


@dataclass(frozen=True)
class BatchKey:
    """A `Runner.batch_key`: configs that differ only in the `per_model` options (what the models of one
    stacked ensemble may differ in, e.g. lr and seed) get equal keys."""

    per_model: tuple[str, ...]

    def __call__(self, config: Mapping) -> Hashable:
        return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in self.per_model))


RUNNERS: dict[str, Runner] = {}  # registered in this process (register_runner) or loaded from BUILTIN


def register_runner(
    name: str,
    fn: Callable[[dict], dict],
    *,
    options: Mapping[str, Option | Any] | None = None,
    prepare: Callable[[dict], dict] | None = None,
    batch: Callable[[list], list] | None = None,
    batch_key: Callable[[dict], Hashable] | None = None,
    batch_pays: Callable[[dict], bool] | None = None,
    resources: Callable[[list], dict] | None = None,
    replace: bool = True,
) -> Runner:
    """Register `fn(config) -> summary dict` under `name` (see `Runner` for the other arguments).

    `options` maps each valid config key to an `Option` or to its default value (its type is then
    the accepted type). For Ray, `fn` must be importable on the workers (a module-level function of
    an installed package or of a script run as __main__); or name the runner by its import path.
    """
    if not replace and (name in RUNNERS or name in builtin_runners()):
        raise ValueError(f"a runner named {name!r} is registered already")
    runner = Runner(name, fn, options, prepare, batch, batch_key, batch_pays, resources)
    RUNNERS[name] = runner
    return runner


def _load(path: str) -> Runner:
    module, _, attr = path.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr or "RUNNER")
    except (ImportError, AttributeError) as e:
        raise SpecError(f"cannot load runner {path!r} ({e}): give 'package.module:ATTRIBUTE' of a Runner") from None
    if not isinstance(obj, Runner):
        raise SpecError(f"{path!r} is a {type(obj).__name__}, not a paramlab Runner")
    return obj


def get_runner(name: str | Runner) -> Runner:
    """The runner called `name`: registered in this process, built in, or ``"module:attribute"``."""
    if isinstance(name, Runner):
        return name
    if not isinstance(name, str):
        raise SpecError(f"runner must be a runner name, got {name!r}")
    if name in RUNNERS:
        return RUNNERS[name]
    builtin = builtin_runners()
    if name in builtin:
        RUNNERS[name] = _load(builtin[name])
        return RUNNERS[name]
    if ":" in name:
        return _load(name)
    raise SpecError(f"unknown runner {name!r}: registered runners are {sorted(set(RUNNERS) | set(builtin))} "
                    "(or give 'package.module:ATTRIBUTE')")
