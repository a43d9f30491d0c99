"""Sweeps: a grid of runs (schemes x widths x learning rates x seeds x any option), resumable, on this
machine or on a Ray cluster; every run recorded in the local store (and one wandb group per sweep).

A spec (YAML or TOML file, or a dict)::

    runner: train_mlp            # a registered runner (register_runner); default train_mlp
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
    ensemble: auto               # auto | always | never: stack runs of one width (paramlab.ensemble)
    max_ensemble: 16             # at most this many runs in one stacked pass
    wandb: true                  # false: local store only
    tags: [study-1]

Run it with ``paramlab sweep spec.yaml`` or ``run_sweep("spec.yaml")``. Keys are checked before any
run starts: an unknown key (top level, grid or fixed) or a bad value is rejected with the list of
valid keys.

**Resume.** Each grid point has a deterministic run folder, ``<scheme>-w<width>-lr<lr>-s<seed>[-<other
varying option>=<value>...]-<hash of the full config>``, under ``<root>/<experiment>/<name>/``. A run is
complete when its meta.json (written atomically, last, by ``tracking.Run.finish``) says ``finished``
or ``diverged`` and its config.json is the point's config. Run the same command again after a crash
or a kill (SIGKILL included): complete runs are skipped and never touched, anything else (a run cut
off mid-way, or one that failed with an error) is deleted and run again. Diverged runs are outcomes,
not errors: recorded with status ``diverged`` and not retried. Changing a fixed option changes every
hash, so those runs are new; adding seeds or widths to the grid runs only the new points. A lock file
(``.sweep.lock``, flock) keeps two processes from running the same sweep at once.

Runners compute and return; the sweep process records. A runner is ``fn(config) -> dict``: the
summary metrics, plus optionally ``"history"`` (a list of ``{"step": s, metric: value}`` rows, logged
with ``Run.log``) and ``"status"`` (``"finished"`` or ``"diverged"``). Runners never touch the store,
so runs on remote Ray workers land in the local store and the wandb group of the process that
started the sweep, and a run's record is written only once it is done. (History rows are logged
after the run, so their ``time`` column is the recording time; the run's compute time is in
meta.json under ``sweep.runtime_s``.)

**Executors.** ``local`` (default): in this process, one unit (a run or a stacked ensemble of runs)
after another, with torch's thread count set per unit by the runner's resource request (1 thread for
small models, which on a 2-core machine is faster than 2; all cores for large ones).

``ray``: each unit is a Ray task with ``num_cpus`` / ``num_gpus`` from the runner (fractional GPUs
for small models, so several share a device), results come back to this process as they finish.

* One machine: ``paramlab sweep spec.yaml --executor ray`` starts a local Ray instance.
* An existing cluster: start Ray on the nodes, then run the sweep on the head node (or any node of
  the cluster) with ``--address auto``; or from outside with Ray Client,
  ``--address ray://<head-host>:10001``. Every node needs the same Python environment with paramlab
  (and the module that registers a custom runner) installed; only the driver writes the store.
* On SLURM (one Ray node per SLURM node)::

      #!/bin/bash
      #SBATCH --nodes=4 --ntasks-per-node=1 --cpus-per-task=32 --gpus-per-task=4 --time=12:00:00
      nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
      head=${nodes[0]}
      port=6379
      srun --nodes=1 --ntasks=1 -w "$head" ray start --head --port=$port \\
           --num-cpus=$SLURM_CPUS_PER_TASK --num-gpus=4 --block &
      sleep 20
      for node in "${nodes[@]:1}"; do
        srun --nodes=1 --ntasks=1 -w "$node" ray start --address="$head:$port" \\
             --num-cpus=$SLURM_CPUS_PER_TASK --num-gpus=4 --block &
      done
      sleep 20
      paramlab sweep spec.yaml --executor ray --address "$head:$port" --device cuda

  The store (``--root``) is written by this script's process only, on the head node's filesystem.
  If the job is cut off, submit it again: the sweep resumes where it stopped.

Ray is an optional dependency (``pip install ray``); the local executor needs nothing extra.

**Devices and precision.** The built-in ``train_mlp`` runner has ``device`` (``cpu``, ``cuda``,
``cuda:1``...) and ``precision`` (``fp32``, or ``bf16``: forward passes under torch.autocast, weights
and optimizer state in float32) options; ``--device`` / ``--precision`` set them for every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

from . import tracking

__all__ = [
    "ENSEMBLE_MODES",
    "EXECUTORS",
    "Option",
    "Runner",
    "RUNNERS",
    "SPEC_KEYS",
    "SpecError",
    "SweepReport",
    "SweepSpec",
    "get_runner",
    "load_spec",
    "register_runner",
    "run_dir_name",
    "run_sweep",
]

EXECUTORS = ("local", "ray")
ENSEMBLE_MODES = ("auto", "always", "never")
_COMPLETE = ("finished", "diverged")
_RESULT_KEYS = ("history", "status")


class SpecError(ValueError):
    """A sweep spec that cannot run: unknown key, bad value, empty grid."""


# ----------------------------------------------------------------------------------------------
# runners


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
    options: valid config keys -> Option (or a plain default); None accepts any key, unchecked.
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

    def defaults(self) -> dict:
        return {k: o.default for k, o in (self.options or {}).items()}


RUNNERS: dict[str, Runner] = {}


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
    an installed package or of a script run as __main__).
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a runner needs a non-empty name")
    if not callable(fn):
        raise TypeError(f"runner {name!r}: fn must be callable")
    if (batch is None) != (batch_key is None):
        raise ValueError(f"runner {name!r}: give batch and batch_key together")
    if not replace and name in RUNNERS:
        raise ValueError(f"a runner named {name!r} is registered already")
    opts = None
    if options is not None:
        opts = {k: (v if isinstance(v, Option) else Option(v)) for k, v in options.items()}
    runner = Runner(name, fn, opts, prepare, batch, batch_key, batch_pays, resources)
    RUNNERS[name] = runner
    return runner


def get_runner(name: str | Runner) -> Runner:
    if isinstance(name, Runner):
        return name
    if name not in RUNNERS:
        from .experiments import register_runners  # the experiments' per-run functions, on first need

        register_runners()
    if name not in RUNNERS:
        raise SpecError(f"unknown runner {name!r}: registered runners are {sorted(RUNNERS)}")
    return RUNNERS[name]


# ----------------------------------------------------------------------------------------------
# specs

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
                    raise SpecError(f"run {_describe(p, self.varying())}: {e}") from None
            out.append(tracking.to_jsonable(cfg))
        return out


def _describe(point: Mapping, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={point[k]!r}" for k in keys if k in point) or "(the only point)"


def _valid_keys_text(runner: Runner) -> str:
    return ", ".join(sorted(runner.options)) if runner.options is not None else "(any)"


def load_spec(spec: SweepSpec | Mapping | str | os.PathLike) -> SweepSpec:
    """Parse and check a spec: a SweepSpec, a dict, or a .yaml / .yml / .toml file (safe loaders).

    Raises SpecError naming the bad key or value and listing the valid keys.
    """
    if isinstance(spec, SweepSpec):
        data, stem = dataclasses.asdict(spec), None
    elif isinstance(spec, Mapping):
        data, stem = dict(spec), None
    else:
        path = Path(spec)
        if not path.is_file():
            raise SpecError(f"no sweep spec at {path}")
        text = path.read_text(encoding="utf-8")
        suffix = path.suffix.lower()
        try:
            if suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
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
        stem = path.stem
    if not isinstance(data, Mapping):
        raise SpecError(f"a sweep spec is a mapping of {', '.join(SPEC_KEYS)}; got {type(data).__name__}")
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise SpecError(f"unknown spec keys {unknown}: valid keys are {', '.join(SPEC_KEYS)}")
    data = {k: v for k, v in data.items() if v is not None or k == "name"}
    if "name" not in data or data["name"] is None:
        data["name"] = stem
    s = SweepSpec(**data)
    _check_spec(s)
    return s


def _check_spec(s: SweepSpec) -> None:
    if not isinstance(s.runner, str):
        raise SpecError(f"runner must be a runner name, got {s.runner!r}")
    runner = get_runner(s.runner)
    for key, val in (("experiment", s.experiment), ("root", s.root)):
        if not isinstance(val, str) or not val:
            raise SpecError(f"{key} must be a non-empty string, got {val!r}")
    if s.name is not None and (not isinstance(s.name, str) or not s.name):
        raise SpecError(f"name must be a non-empty string, got {s.name!r}")
    if s.ensemble not in ENSEMBLE_MODES:
        raise SpecError(f"ensemble must be one of {list(ENSEMBLE_MODES)}, got {s.ensemble!r}")
    if isinstance(s.max_ensemble, bool) or not isinstance(s.max_ensemble, int) or s.max_ensemble < 1:
        raise SpecError(f"max_ensemble must be a positive int, got {s.max_ensemble!r}")
    if not isinstance(s.wandb, bool):
        raise SpecError(f"wandb must be true or false, got {s.wandb!r}")
    if not isinstance(s.tags, list) or not all(isinstance(t, str) for t in s.tags):
        raise SpecError(f"tags must be a list of strings, got {s.tags!r}")
    if not isinstance(s.fixed, Mapping):
        raise SpecError(f"fixed must be a mapping of option -> value, got {type(s.fixed).__name__}")
    grids = s.grids()
    if not grids or not all(isinstance(g, Mapping) for g in grids):
        raise SpecError("grid must be a mapping of option -> list of values (or a list of such mappings)")
    for where, keys in [("fixed", list(s.fixed))] + [("grid", list(g)) for g in grids]:
        if runner.options is not None:
            bad = [k for k in keys if k not in runner.options]
            if bad:
                raise SpecError(
                    f"unknown {where} keys {bad} for runner {runner.name!r}: valid keys are {_valid_keys_text(runner)}"
                )
    for g in grids:
        for k, v in g.items():
            if isinstance(v, list) and not v:
                raise SpecError(f"grid key {k!r} has an empty list of values")
    s.fixed = dict(s.fixed)
    s.grid = [dict(g) for g in grids] if isinstance(s.grid, list) else dict(s.grid)
    s.points()  # type and value checks of every point, before anything runs


# ----------------------------------------------------------------------------------------------
# run folders and the store


def _config_hash(config: Mapping) -> str:
    blob = json.dumps(config, sort_keys=True, allow_nan=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def run_dir_name(config: Mapping, varying: Sequence[str] = ()) -> str:
    """The deterministic run folder name of a config: tracking.run_name (``mup-w256-lr0.01-s0``),
    then ``key=value`` for the other keys in `varying`, then 8 hex digits of the full config's hash."""
    parts = [tracking.run_name(config)]
    standard = {k for keys in tracking._NAME_KEYS.values() for k in keys}
    for k in varying:
        if k in standard or k not in config:
            continue
        v = config[k]
        text = json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, (dict, list)) else tracking._fmt(v)
        parts.append(f"{k}={text}")
    readable = tracking._safe_component("-".join(parts))[:120]
    return f"{readable}-{_config_hash(config)}"


def _run_state(path: Path, config: Mapping) -> str:
    """'complete' (finished or diverged, same config), 'absent', or 'incomplete' (anything else)."""
    if not path.exists():
        return "absent"
    meta = tracking._read_json(path / "meta.json")
    stored = tracking._read_json(path / "config.json")
    if not isinstance(meta, dict) or meta.get("status") not in _COMPLETE:
        return "incomplete"
    if json.dumps(stored, sort_keys=True) != json.dumps(config, sort_keys=True):
        return "incomplete"
    return "complete"


@contextlib.contextmanager
def _sweep_lock(group_dir: Path):
    group_dir.mkdir(parents=True, exist_ok=True)
    path = group_dir / ".sweep.lock"
    f = open(path, "a+")
    try:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            raise RuntimeError(
                f"another process is running this sweep ({group_dir} is locked); wait for it or give another name"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()


# ----------------------------------------------------------------------------------------------
# executing units (also inside Ray workers: no store access here)


def _normalize(result: Any) -> dict:
    if not isinstance(result, Mapping):
        raise TypeError(f"a runner must return a dict (the summary), got {type(result).__name__}")
    result = dict(result)
    history = result.pop("history", None) or []
    status = result.pop("status", "finished")
    if status not in _COMPLETE:
        raise ValueError(f"a runner's status must be 'finished' or 'diverged', got {status!r}")
    for key in tracking._RESERVED_SUMMARY_KEYS:
        result.pop(key, None)
    return {"summary": tracking.to_jsonable(result), "history": tracking.to_jsonable(list(history)), "status": status}


def _failure(e: BaseException) -> dict:
    return {"summary": {}, "history": [], "status": "failed",
            "error": f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
            "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))[-20_000:]}


def _execute_unit(runner: Runner, configs: list[dict], threads: int | None) -> list[dict]:
    """Run one unit (one config, or several batched); one outcome dict per config, never raises
    for a run's own error (a failed batch falls back to running its configs one by one)."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        t0 = time.monotonic()
        if len(configs) > 1:
            try:
                results = runner.batch([dict(c) for c in configs])
                if len(results) != len(configs):
                    raise RuntimeError(f"batch runner returned {len(results)} results for {len(configs)} configs")
                outs = [_normalize(r) for r in results]
                dt = (time.monotonic() - t0) / len(configs)
                for o in outs:
                    o.update(runtime_s=round(dt, 4), ensemble=len(configs))
                return outs
            except Exception:
                pass  # run them one by one below: each gets its own record (and error)
        outs = []
        for c in configs:
            t1 = time.monotonic()
            try:
                o = _normalize(runner.fn(dict(c)))
            except Exception as e:
                o = _failure(e)
            o.update(runtime_s=round(time.monotonic() - t1, 4), ensemble=1)
            outs.append(o)
        return outs
    finally:
        torch.set_num_threads(old)


# ----------------------------------------------------------------------------------------------
# the sweep


@dataclass
class SweepReport:
    """What a sweep did. `runs`: one dict per grid point (name, path, status, summary, config),
    in grid order; `skipped`: points already complete before this call."""

    experiment: str
    name: str
    path: Path
    total: int
    skipped: int = 0
    finished: int = 0
    diverged: int = 0
    failed: int = 0
    runs: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def __str__(self) -> str:
        return (f"sweep {self.experiment}/{self.name}: {self.total} runs: {self.skipped} already complete, "
                f"{self.finished} finished, {self.diverged} diverged, {self.failed} failed -> {self.path}")


def _units(runner: Runner, todo: list[tuple[str, dict]], mode: str, max_k: int) -> list[list[tuple[str, dict]]]:
    if runner.batch is None or mode == "never":
        return [[t] for t in todo]
    groups: dict[Any, list] = {}
    singles = []
    for t in todo:
        cfg = t[1]
        if mode == "auto" and runner.batch_pays is not None and not runner.batch_pays(cfg):
            singles.append([t])
            continue
        key = runner.batch_key(cfg)
        if key is None:
            singles.append([t])
        else:
            groups.setdefault(key, []).append(t)
    units = []
    for items in groups.values():
        for i in range(0, len(items), max_k):
            units.append(items[i:i + max_k])
    # keep roughly grid order: by the first item's position
    order = {name: i for i, (name, _) in enumerate(todo)}
    return sorted(units + singles, key=lambda u: order[u[0][0]])


def _resources(runner: Runner, configs: list[dict], num_cpus, num_gpus) -> dict:
    res = dict(runner.resources(configs)) if runner.resources is not None else {"num_cpus": 1, "num_gpus": 0}
    if num_cpus is not None:
        res["num_cpus"] = num_cpus
    if num_gpus is not None:
        res["num_gpus"] = num_gpus
    res.setdefault("num_cpus", 1)
    res.setdefault("num_gpus", 0)
    return res


def run_sweep(
    spec: SweepSpec | Mapping | str | os.PathLike,
    *,
    executor: str = "local",
    address: str | None = None,
    root: str | os.PathLike | None = None,
    name: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    ensemble: str | None = None,
    threads: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    wandb: bool | None = None,
    progress: bool = True,
    dry_run: bool = False,
    ray_init: Mapping[str, Any] | None = None,
) -> SweepReport:
    """Run (or resume) a sweep; returns a SweepReport. Runs that are complete are skipped.

    spec: a SweepSpec, a dict or a .yaml/.toml path (see the module docstring).
    executor: 'local' (this process) or 'ray' (`address`: None starts a local Ray instance unless
        Ray is initialized already; 'auto' joins the cluster this machine belongs to; 'host:port' or
        'ray://host:10001' an existing one). `ray_init`: extra ray.init arguments.
    root, name, ensemble, wandb: override the spec's.
    device, precision: set the runner options of those names for every run (e.g. 'cuda', 'bf16').
    threads: torch threads per unit (local executor); default from the runner's num_cpus request.
    num_cpus, num_gpus: override each unit's resource request.
    dry_run: check the spec and report which runs are complete, run nothing.
    """
    if executor not in EXECUTORS:
        raise SpecError(f"executor must be one of {list(EXECUTORS)}, got {executor!r}")
    s = load_spec(spec)
    if root is not None:
        s.root = str(root)
    if name is not None:
        s.name = name
    if ensemble is not None:
        if ensemble not in ENSEMBLE_MODES:
            raise SpecError(f"ensemble must be one of {list(ENSEMBLE_MODES)}, got {ensemble!r}")
        s.ensemble = ensemble
    if wandb is not None:
        s.wandb = bool(wandb)
    runner = get_runner(s.runner)
    for key, val in (("device", device), ("precision", precision)):
        if val is not None:
            if runner.options is not None and key not in runner.options:
                raise SpecError(f"runner {runner.name!r} has no {key!r} option: valid keys are {_valid_keys_text(runner)}")
            s.fixed[key] = val
            for g in s.grids():
                g.pop(key, None)
    if s.name is None:
        s.name = "sweep-" + _config_hash({"grid": s.grid, "fixed": s.fixed, "runner": s.runner})
    points = s.points()
    varying = s.varying()
    names = [run_dir_name(c, varying) for c in points]
    group = tracking._safe_component(s.name)
    experiment = tracking._safe_component(s.experiment)
    group_dir = Path(s.root) / experiment / group
    report = SweepReport(experiment, group, group_dir, len(points))
    if dry_run:
        for n, c in zip(names, points):
            st = _run_state(group_dir / n, c)
            report.skipped += st == "complete"
            report.runs.append({"name": n, "path": group_dir / n, "status": st, "config": c})
        return report

    with _sweep_lock(group_dir):
        tracking._write_json_atomic(group_dir / "sweep.json", {
            "spec": dataclasses.asdict(s), "executor": executor, "address": address, "runs": len(points),
            "started_at": tracking._now_iso(), "argv": list(sys.argv)})
        todo = []
        for n, c in zip(names, points):
            if _run_state(group_dir / n, c) == "complete":
                report.skipped += 1
            else:
                todo.append((n, c))
        units = _units(runner, todo, s.ensemble, s.max_ensemble)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(points), initial=report.skipped, desc=f"sweep {group}", unit="run",
                       dynamic_ncols=True, file=sys.stderr)

        def record(unit, outcomes):
            for (n, cfg), out in zip(unit, outcomes):
                _record(group_dir, n, cfg, out, s, executor)
                setattr(report, out["status"], getattr(report, out["status"]) + 1)
            if bar is not None:
                bar.update(len(unit))
                bar.set_postfix(diverged=report.diverged, failed=report.failed, refresh=False)

        try:
            if executor == "local":
                for unit in units:
                    cfgs = [c for _, c in unit]
                    res = _resources(runner, cfgs, num_cpus, num_gpus)
                    t = threads or max(1, min(int(math.ceil(res["num_cpus"])), os.cpu_count() or 1))
                    record(unit, _execute_unit(runner, cfgs, t))
            else:
                _run_ray(runner, units, record, address, num_cpus, num_gpus, threads, ray_init)
        finally:
            if bar is not None:
                bar.close()
    for n, c in zip(names, points):
        path = group_dir / n
        meta = tracking._read_json(path / "meta.json", {}) or {}
        report.runs.append({"name": n, "path": path, "status": meta.get("status", "missing"), "config": c,
                            "summary": {k: v for k, v in (tracking._read_json(path / "summary.json", {}) or {}).items()
                                        if k not in tracking._RESERVED_SUMMARY_KEYS}})
    return report


def _record(group_dir: Path, name: str, config: dict, out: dict, s: SweepSpec, executor: str) -> None:
    """Write one run's record; its meta.json (status) is written last, atomically, by Run.finish."""
    run = tracking.start_run(config, experiment=s.experiment, group=group_dir.name, root=s.root, name=name,
                             tags=s.tags, use_wandb=s.wandb, if_exists="overwrite")
    try:
        for row in out["history"]:
            row = dict(row)
            step = row.pop("step", None)
            row.pop("time", None)
            run.log(row, step=int(step) if step is not None else 0)
        if out["summary"]:
            run.summary(out["summary"])
        run.meta["sweep"] = {"executor": executor, "runtime_s": out.get("runtime_s"), "ensemble": out.get("ensemble", 1)}
        if out["status"] == "failed":
            run.meta["traceback"] = out.get("traceback")
            run.finish("failed", error=out.get("error"))
        else:
            run.finish(out["status"])
    except BaseException:
        run.finish("failed", error="recording failed")
        raise


def _run_ray(runner, units, record, address, num_cpus, num_gpus, threads, ray_init) -> None:
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install ray") from None
    started = False
    if not ray.is_initialized():
        kw = {"include_dashboard": False, "log_to_driver": False, **dict(ray_init or {})}
        if address is None:  # a private instance on this machine: nothing listens beyond loopback
            kw.setdefault("_node_ip_address", "127.0.0.1")
        ray.init(address=address, **kw)
        started = True
    try:
        remote = ray.remote(_execute_unit)
        pending = {}
        for unit in units:
            cfgs = [c for _, c in unit]
            res = _resources(runner, cfgs, num_cpus, num_gpus)
            t = threads or max(1, int(math.ceil(res["num_cpus"])))
            ref = remote.options(num_cpus=res["num_cpus"], num_gpus=res["num_gpus"], max_retries=0).remote(runner, cfgs, t)
            pending[ref] = unit
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(done[0])
            try:
                outcomes = ray.get(done[0])
            except Exception as e:  # the worker died (OOM, node lost): record the runs as failed
                outcomes = [_failure(e) for _ in unit]
            record(unit, outcomes)
    finally:
        if started:
            ray.shutdown()


from . import sweep_mlp  # noqa: E402,F401  (registers the built-in runner 'train_mlp')
