"""Sweep specs: a grid of runs as data, checked completely before any run starts.

A spec (YAML or TOML file, or a dict)::

    runner: train_mlp            # a runner name (paramlab.runners) or 'module:ATTRIBUTE'; default train_mlp
                                 #   (an import path is code: running the spec imports and runs it)
    experiment: lr_transfer      # store folder <root>/<experiment>/<name>/ ; default "sweep"
    name: mlp-adam               # the sweep's group (wandb group <experiment>-<name>); default: file stem
    root: runs                   # local store root; default "runs"
    grid:                        # the cartesian product of these lists (a scalar is a 1-list);
      scheme: [sp, mup]          #   a list of such mappings is the union of their grids
      width: [64, 256, 1024]
      lr: [0.001, 0.003, 0.01]
      seed: [0, 1, 2]
    fixed:                       # options every run shares
      optimizer: adam
      steps: 500
      batch_size: 128
      task: multi_index
      task_args: {n_train: 2048, n_test: 512, d: 32, k: 2}
    ensemble: auto               # auto | always | never: stack runs of one width (paramlab.stacked)
    max_ensemble: 16             # at most this many runs in one stacked pass
    wandb: true                  # false: local store only
    tags: [study-1]

A spec file is code when its ``runner`` is an import path: running it imports that module with your
permissions, as ``python -m`` would (``--dry-run`` does not import it). Values are data: the YAML is read
with a safe loader (no tags that build objects), its expanded size is capped (`MAX_SPEC_SIZE`, against
alias bombs), and a key given twice is warned.

Keys are checked by `load_spec`: an unknown key (top level, grid or fixed) or a bad value is
rejected with a `SpecError` that lists the valid keys, and every grid point is resolved (runner
defaults + fixed + grid) and checked against the runner's options before anything runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .runners import SpecError, get_runner
from .io import to_jsonable
from .store import check_name, safe_component

__all__ = ["ENSEMBLE_MODES", "EXECUTORS", "MAX_POINTS", "MAX_SPEC_SIZE", "SPEC_KEYS", "SweepSpec", "check_spec",
           "count_points", "describe_point", "expanded_size", "foreign_runner", "load_spec"]

# A grid with more points than this is refused unless the caller says yes (`run_sweep(yes=True)`,
# ``paramlab sweep --yes``): resolving 10^6 points alone takes minutes and gigabytes.
MAX_POINTS = 10_000
# A spec holding more values than this once YAML aliases are expanded is refused (a spec is a few hundred).
MAX_SPEC_SIZE = 1_000_000

EXECUTORS = ("local", "ray")
ENSEMBLE_MODES = ("auto", "always", "never")
SPEC_KEYS = ("runner", "experiment", "name", "root", "grid", "fixed", "ensemble", "max_ensemble", "wandb", "tags",
             "description")


@dataclass
class SweepSpec:
    """A parsed sweep spec (see the module docstring); `points()` lists the resolved run configs."""

    grid: dict | list = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    runner: str = "train_mlp"
    experiment: str = "sweep"
    name: str | None = None
    root: str = "runs"
    ensemble: str = "auto"
    max_ensemble: int = 16
    wandb: bool = True
    tags: list = field(default_factory=list)
    description: str = ""

    def grids(self) -> list[dict]:
        return list(self.grid) if isinstance(self.grid, list) else [self.grid]

    def varying(self) -> list[str]:
        """Grid keys with more than one value (in first-seen order)."""
        seen: dict[str, set] = {}
        for g in self.grids():
            for k, vals in g.items():
                vals = vals if isinstance(vals, list) else [vals]
                seen.setdefault(k, set()).update(json.dumps(v, sort_keys=True) for v in vals)
        if len(self.grids()) > 1:  # a key given in only some sub-grids varies too
            keys = set().union(*(g.keys() for g in self.grids()))
            for k in keys:
                if any(k not in g for g in self.grids()):
                    seen.setdefault(k, set()).add("<absent>")
        return [k for k, v in seen.items() if len(v) > 1]

    def raw_points(self) -> list[dict]:
        out, seen = [], set()
        for g in self.grids():
            keys = list(g)
            lists = [g[k] if isinstance(g[k], list) else [g[k]] for k in keys]
            for combo in itertools.product(*lists):
                point = {**self.fixed, **dict(zip(keys, combo))}
                key = json.dumps(point, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    out.append(point)
        return out

    def points(self) -> list[dict]:
        """Every run's full config (runner defaults + fixed + grid point), checked; grid order."""
        runner = get_runner(self.runner)
        out = []
        for p in self.raw_points():
            cfg = {**runner.defaults(), **p}
            if runner.options is not None:
                for k, v in cfg.items():
                    runner.options[k].validate(k, v)
            if runner.prepare is not None:
                try:
                    cfg = runner.prepare(dict(cfg))
                except SpecError:
                    raise
                except (ValueError, TypeError, KeyError) as e:
                    raise SpecError(f"run {describe_point(p, self.varying())}: {e}") from None
            out.append(to_jsonable(cfg))
        return out


def count_points(s: SweepSpec) -> int:
    """The number of grid points before duplicates are removed (an upper bound; cheap)."""
    total = 0
    for g in s.grids():
        n = 1
        for v in g.values():
            n *= len(v) if isinstance(v, list) else 1
        total += n
    return total


def _yaml_loader():
    """PyYAML's SafeLoader, but reading ``1e-3`` / ``5E+2`` as floats (YAML 1.2 does; PyYAML's YAML 1.1
    resolver wants a dot, ``1.0e-3``, and reads ``1e-3`` as the string '1e-3')."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(self, node, deep=False):  # a key given twice: warn (YAML keeps the last silently)
        seen = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    warnings.warn(f"{key_node.start_mark.name}: key {key_node.value!r} is given twice (lines "
                                  f"{seen[key_node.value]} and {line}); the last value is used", stacklevel=2)
                seen[key_node.value] = line
        return yaml.SafeLoader.construct_mapping(self, node, deep=deep)

    Loader.construct_mapping = construct_mapping
    Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"""),
        list("-+0123456789"))
    return Loader


def expanded_size(data, limit: int = MAX_SPEC_SIZE) -> int:
    """The number of values `data` holds once every shared reference is copied out (a YAML alias is one
    shared object until the spec is copied or written as JSON), each string counted per 100 characters;
    raises SpecError above `limit`, for a value that contains itself, or for nesting deeper than 100.

    Memoized by object id, so a "billion laughs" document (9 aliases of 9 aliases ...) is measured in
    time linear in its text, not in its expansion.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(x, depth):
        if isinstance(x, str):
            return 1 + len(x) // 100
        if not isinstance(x, (list, tuple, dict)):
            return 1
        if id(x) in sizes:
            return sizes[id(x)]
        if id(x) in active:
            raise SpecError("the spec holds a value that contains itself (a recursive YAML alias)")
        if depth > 100:
            raise SpecError("the spec is nested more than 100 levels deep")
        active.add(id(x))
        items = [v for kv in x.items() for v in kv] if isinstance(x, dict) else x
        n = 1
        for v in items:
            n += size(v, depth + 1)
            if n > limit:
                raise SpecError(f"the spec expands to more than {limit:,} values (YAML aliases of aliases, "
                                "\"billion laughs\"?); write the values out, or give a smaller spec")
        active.discard(id(x))
        sizes[id(x)] = n
        return n

    return size(data, 0)


def describe_point(point: Mapping, keys: Sequence[str]) -> str:
    """``key=value, ...`` of a grid point for the given keys (for error messages)."""
    return ", ".join(f"{k}={point[k]!r}" for k in keys if k in point) or "(the only point)"


def load_spec(spec: SweepSpec | Mapping | str | os.PathLike, max_points: int | None = MAX_POINTS,
              import_runner: bool = True) -> SweepSpec:
    """Parse and check a spec: a SweepSpec, a dict, or a .yaml / .yml / .toml file (safe loaders).

    Raises SpecError naming the bad key or value and listing the valid keys; and one for a grid of
    more than `max_points` points (None: no limit), before the points are resolved.
    import_runner=False: a runner named by import path ('module:ATTR', code the spec points at) is
    not imported, and the checks that need it (option names and values) are skipped.
    """
    if isinstance(spec, SweepSpec):
        expanded_size(vars(spec))  # before asdict copies it
        data, stem = dataclasses.asdict(spec), None
    elif isinstance(spec, Mapping):
        data, stem = dict(spec), None
    else:
        path = Path(spec)
        if not path.is_file():
            raise SpecError(f"no sweep spec at {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SpecError(f"{path}: not a text file (a sweep spec is UTF-8 YAML or TOML)") from None
        suffix = path.suffix.lower()
        try:
            if suffix in (".yaml", ".yml"):
                import yaml

                loader = _yaml_loader()(text)  # a SafeLoader
                loader.name = str(path)  # named in its warnings and errors
                try:
                    data = loader.get_single_data()
                finally:
                    loader.dispose()
            elif suffix == ".toml":
                try:
                    import tomllib
                except ImportError:  # Python 3.10
                    import tomli as tomllib
                data = tomllib.loads(text)
            else:
                raise SpecError(f"{path}: a sweep spec is a .yaml, .yml or .toml file")
        except SpecError:
            raise
        except Exception as e:  # yaml.YAMLError, tomllib.TOMLDecodeError
            raise SpecError(f"{path}: cannot parse: {e}") from None
        if data is None:
            data = {}
        stem = safe_component(path.stem).lstrip(".") or "sweep"  # a derived name: made safe, not refused
    try:
        expanded_size(data)  # before anything copies it
    except SpecError as e:
        raise SpecError(f"{path}: {e}" if stem is not None else str(e)) from None
    if not isinstance(data, Mapping):
        raise SpecError(f"a sweep spec is a mapping of {', '.join(SPEC_KEYS)}; got {type(data).__name__}")
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise SpecError(f"unknown spec keys {unknown}: valid keys are {', '.join(SPEC_KEYS)}")
    data = {k: v for k, v in data.items() if v is not None or k == "name"}
    if "name" not in data or data["name"] is None:
        data["name"] = stem
    s = SweepSpec(**data)
    check_spec(s, max_points, import_runner)
    return s


def foreign_runner(name) -> bool:
    """Whether `name` is a runner given by import path only (neither registered nor built in): code."""
    from .runners import BUILTIN, RUNNERS

    return isinstance(name, str) and ":" in name and name not in RUNNERS and name not in BUILTIN


def check_spec(s: SweepSpec, max_points: int | None = MAX_POINTS, import_runner: bool = True) -> None:
    """Check every key and value of a parsed spec, and every grid point (raises SpecError); with
    import_runner=False a runner given by import path is not imported and its option checks are skipped."""
    if not isinstance(s.runner, str):
        raise SpecError(f"runner must be a runner name, got {s.runner!r}")
    skip = not import_runner and foreign_runner(s.runner)
    runner = None if skip else get_runner(s.runner)
    for key, val in (("experiment", s.experiment), ("root", s.root)):
        if not isinstance(val, str) or not val:
            raise SpecError(f"{key} must be a non-empty string, got {val!r}")
    if s.name is not None and (not isinstance(s.name, str) or not s.name):
        raise SpecError(f"name must be a non-empty string, got {s.name!r}")
    for what, val in (("experiment", s.experiment), ("sweep (group)", s.name)):
        if val is not None:
            try:
                check_name(val, what)
            except ValueError as e:
                raise SpecError(str(e)) from None
    if s.ensemble not in ENSEMBLE_MODES:
        raise SpecError(f"ensemble must be one of {list(ENSEMBLE_MODES)}, got {s.ensemble!r}")
    if isinstance(s.max_ensemble, bool) or not isinstance(s.max_ensemble, int) or s.max_ensemble < 1:
        raise SpecError(f"max_ensemble must be a positive int, got {s.max_ensemble!r}")
    if not isinstance(s.wandb, bool):
        raise SpecError(f"wandb must be true or false, got {s.wandb!r}")
    if not isinstance(s.description, str):
        raise SpecError(f"description must be a string, got a {type(s.description).__name__}")
    if not isinstance(s.tags, list) or not all(isinstance(t, str) for t in s.tags):
        raise SpecError(f"tags must be a list of strings, got {s.tags!r}")
    if not isinstance(s.fixed, Mapping):
        raise SpecError(f"fixed must be a mapping of option -> value, got {type(s.fixed).__name__}")
    grids = s.grids()
    if not grids or not all(isinstance(g, Mapping) for g in grids):
        raise SpecError("grid must be a mapping of option -> list of values (or a list of such mappings)")
    for where, keys in [("fixed", list(s.fixed))] + [("grid", list(g)) for g in grids]:
        if runner is not None and runner.options is not None:
            bad = [k for k in keys if k not in runner.options]
            if bad:
                raise SpecError(
                    f"unknown {where} keys {bad} for runner {runner.name!r}: valid keys are {runner.valid_keys()}"
                )
    for g in grids:
        for k, v in g.items():
            if isinstance(v, list) and not v:
                raise SpecError(f"grid key {k!r} has an empty list of values")
    s.fixed = dict(s.fixed)
    s.grid = [dict(g) for g in grids] if isinstance(s.grid, list) else dict(s.grid)
    n = count_points(s)
    if max_points is not None and n > max_points:
        raise SpecError(f"the grid has {n} points, more than {max_points}: resolving and running it is large; "
                        "if you mean it, pass --yes (run_sweep(..., yes=True)), else shrink the grid")
    if runner is not None:
        s.points()  # type and value checks of every point, before anything runs
