"""Sweeps: a grid of runs (schemes x widths x learning rates x seeds x any option), resumable, on this
machine or on a Ray cluster; every run recorded in the local store (and one wandb group per sweep).

A spec (`paramlab.spec`: YAML or TOML file, or a dict) names a runner (`paramlab.runners`), a
grid and the fixed options. Run it with ``paramlab sweep spec.yaml`` or ``run_sweep("spec.yaml")``;
every experiment (``paramlab run <name>``) is a sweep too. Keys and values are checked before any
run starts: an unknown key or a bad value is rejected with the list of valid keys, and nothing is
written.

**Resume.** Each grid point has a deterministic run folder, ``<scheme>-w<width>-lr<lr>-s<seed>[-<other
varying option>=<value>...]-<hash of the full config>``, under ``<root>/<experiment>/<name>/``. A run is
complete when its meta.json (written atomically, last, by ``tracking.Run.finish``) says ``finished``
or ``diverged`` and its config.json is the point's config. Run the same command again after a crash
or a kill (SIGKILL included): complete runs are skipped and never touched, anything else (a run cut
off mid-way, or one that failed with an error) is deleted and run again. Diverged runs are outcomes,
not errors: recorded with status ``diverged`` and not retried. Changing a fixed option changes every
hash, so those runs are new; adding seeds or widths to the grid runs only the new points. A lock file
(``.sweep.lock``, flock) keeps two processes from running the same sweep at once.

Runners compute and return; the sweep process records (`paramlab.tracking`). Runs on remote Ray
workers land in the local store and the wandb group of the process that started the sweep, and a
run's record is written only once it is done. (History rows are written to the store after the run,
so their ``time`` column is the recording time; the run's compute time is in meta.json under
``sweep.runtime_s``.) wandb sees each point live: a unit's wandb runs are opened before it trains
and the training loops' `live.emit` points reach them as they are computed (`paramlab.wandb_live`);
``wandb_project`` (default ``paramlab-<experiment>``), ``wandb_entity`` and ``tags`` name them.

**Executors** (`paramlab.executors`): ``local`` (default, in this process) or ``ray`` (a local Ray
instance, an existing cluster, or SLURM: see that module for the recipes).

**Devices and precision.** The built-in ``train_mlp`` runner has ``device`` (``cpu``, ``cuda``,
``cuda:1``...) and ``precision`` (``fp32``, or ``bf16``: forward passes under torch.autocast, weights
and optimizer state in float32) options; ``--device`` / ``--precision`` set them for every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .executors import run_local, run_ray
from .runners import Runner, SpecError, get_runner
from .spec import ENSEMBLE_MODES, EXECUTORS, MAX_POINTS, SweepSpec, describe_point, foreign_runner, load_spec
from .io import read_json, write_json_atomic
from .store import RESERVED_SUMMARY_KEYS, check_name, config_hash, now_iso, run_dir_name, run_state, safe_component
from .tracking import start_run
from .wandb_live import LiveRuns, default_project
from .wandb_sink import wandb_enabled

__all__ = ["SweepReport", "run_sweep"]


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
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # the lock itself failed
                raise RuntimeError(
                    f"cannot lock {path} ({e.strerror or e}): this filesystem does not support flock (a network "
                    "filesystem without lock service?), so two processes could write this sweep at once; put --root "
                    "on a local disk") from None
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
    unimported: str | None = None  # a dry run's runner left unimported (given by import path: code)

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


def _check_devices(points: list[dict]) -> None:
    """Every run's device exists on this machine (a sweep computed here), checked before any run."""
    import torch

    for dev in sorted({str(c["device"]) for c in points if isinstance(c.get("device"), str)}):
        d = torch.device(dev)
        if d.type == "cuda":
            if not torch.cuda.is_available():
                raise SpecError(f"device {dev!r}: CUDA is not available on this machine (torch.cuda.is_available() "
                                "is False): use --device cpu, or run on a machine with a GPU")
            if d.index is not None and d.index >= torch.cuda.device_count():
                raise SpecError(f"device {dev!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        elif d.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise SpecError(f"device {dev!r}: MPS is not available on this machine: use --device cpu")


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
    yes: bool = False,
    wandb_project: str | None = None,
    wandb_entity: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    wandb_config: Mapping[str, Any] | None = None,
) -> SweepReport:
    """Run (or resume) a sweep; returns a SweepReport. Runs that are complete are skipped.

    spec: a SweepSpec, a dict or a .yaml/.toml path (see `paramlab.spec`).
    executor: 'local' (this process) or 'ray' (`address`: None starts a local Ray instance unless
        Ray is initialized already; 'auto' joins the cluster this machine belongs to; 'host:port' or
        'ray://host:10001' an existing one). `ray_init`: extra ray.init arguments.
    root, name, ensemble, wandb: override the spec's.
    device, precision: set the runner options of those names for every run (e.g. 'cuda', 'bf16').
    threads: torch threads per unit (local executor); default from the runner's num_cpus request.
    num_cpus, num_gpus: override each unit's resource request.
    dry_run: check the spec and report which runs are complete, run nothing.
    yes: run a grid of more than `paramlab.spec.MAX_POINTS` points (refused otherwise).
    wandb_project, wandb_entity: where the wandb runs go (default ``$WANDB_PROJECT``, else
        ``paramlab-<experiment>``; ``$WANDB_ENTITY``, else the account's). tags: added to the spec's.
    wandb_config: extra flat wandb config keys of every run (e.g. ``{"size": "quick"}``).

    Stacking is a function of the full grid, not of what is left to run: a resumed sweep (or a point
    rerun after its folder was deleted) recomputes each incomplete run in the very stack it had the
    first time (the stack's complete runs are computed again and not rewritten), so resumed results
    are bit-identical to an uninterrupted sweep at the same thread count. meta.json's ``sweep`` entry
    records the stack (its runs, in order) and the torch thread count.
    """
    if executor not in EXECUTORS:
        raise SpecError(f"executor must be one of {list(EXECUTORS)}, got {executor!r}")
    s = load_spec(spec, max_points=None if yes else MAX_POINTS, import_runner=not dry_run)
    if dry_run and foreign_runner(s.runner):  # a spec's runner is code: a dry run does not import it
        return _dry_run_unimported(s, root, name)
    _override_spec(s, root=root, name=name, ensemble=ensemble, wandb=wandb, tags=tags)
    project = default_project(s.experiment, wandb_project)
    runner = get_runner(s.runner)
    _set_runner_options(s, runner, device=device, precision=precision)
    if s.name is None:
        s.name = "sweep-" + config_hash({"grid": s.grid, "fixed": s.fixed, "runner": s.runner})
    points = s.points()
    if executor == "local" or address is None:  # computed on this machine
        _check_devices(points)
    varying = s.varying()
    names = [run_dir_name(c, varying) for c in points]
    group = safe_component(s.name)
    experiment = safe_component(s.experiment)
    group_dir = Path(s.root) / experiment / group
    report = SweepReport(experiment, group, group_dir, len(points))
    if executor == "ray" and address is not None and not dry_run:
        from .executors import check_ray_address

        check_ray_address(address)  # a dead address fails here, in seconds, before anything is written
    if dry_run:
        for n, c in zip(names, points):
            st = run_state(group_dir / n, c)
            report.skipped += st == "complete"
            report.runs.append({"name": n, "path": group_dir / n, "status": st, "config": c})
        return report

    with _sweep_lock(group_dir):
        write_json_atomic(group_dir / "sweep.json", {
            "spec": dataclasses.asdict(s), "executor": executor, "address": address, "runs": len(points),
            "started_at": now_iso(), "argv": list(sys.argv)})
        complete = set()
        for n, c in zip(names, points):
            if run_state(group_dir / n, c) == "complete":
                report.skipped += 1
                complete.add(n)
        # stacks from the whole grid (see the docstring): a unit runs again if any of its runs is incomplete
        units = [u for u in _units(runner, list(zip(names, points)), s.ensemble, s.max_ensemble)
                 if any(n not in complete for n, _ in u)]
        _run_units(runner, units, complete, report, s, executor=executor, address=address, project=project,
                   wandb_entity=wandb_entity, wandb_config=wandb_config, progress=progress, num_cpus=num_cpus,
                   num_gpus=num_gpus, threads=threads, ray_init=ray_init)
    _collect_runs(report, names, points)
    return report


def _override_spec(s: SweepSpec, *, root, name, ensemble, wandb, tags) -> None:
    """Apply run_sweep's root, name, ensemble, wandb and tags arguments to the loaded spec (None: keep the
    spec's); tags are appended to the spec's, without repeats."""
    if root is not None:
        s.root = str(root)
    if name is not None:
        s.name = check_name(name, "sweep (group)")
    if ensemble is not None:
        if ensemble not in ENSEMBLE_MODES:
            raise SpecError(f"ensemble must be one of {list(ENSEMBLE_MODES)}, got {ensemble!r}")
        s.ensemble = ensemble
    if wandb is not None:
        s.wandb = bool(wandb)
    if tags:
        if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
            raise SpecError(f"tags must be a list of non-empty strings, got {tags!r}")
        s.tags = [*s.tags, *[t for t in tags if t not in s.tags]]


def _set_runner_options(s: SweepSpec, runner: Runner, **options) -> None:
    """Fix each given runner option (device, precision) for every run: it leaves the grid and joins the
    fixed options; refused when the runner has no option of that name."""
    for key, val in options.items():
        if val is not None:
            if runner.options is not None and key not in runner.options:
                raise SpecError(f"runner {runner.name!r} has no {key!r} option: valid keys are {runner.valid_keys()}")
            s.fixed[key] = val
            for g in s.grids():
                g.pop(key, None)


def _run_units(runner: Runner, units: list, complete: set, report: SweepReport, s: SweepSpec, *, executor: str,
               address, project, wandb_entity, wandb_config, progress: bool, num_cpus, num_gpus, threads,
               ray_init) -> None:
    """Compute the units on the executor and record each incomplete run as its unit returns (store, wandb,
    the report's counts and the progress bar); a unit's complete runs are computed again, never rewritten."""
    group_dir, experiment, group = report.path, report.experiment, report.name
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=report.total, initial=report.skipped, desc=f"sweep {group}", unit="run",
                   dynamic_ncols=True, file=sys.stderr)

    live_runs = (LiveRuns(group_dir, experiment, group, tags=s.tags, project=project, entity=wandb_entity,
                          config=wandb_config) if s.wandb and wandb_enabled() else None)
    wb = {"project": project, "entity": wandb_entity, "wandb_config": wandb_config}

    def open_live(unit):
        return LiveRuns.sinks(live_runs.open(unit, complete))

    def record(unit, outcomes):
        stack = [n for n, _ in unit]
        todo = [(u, out) for u, out in zip(unit, outcomes) if u[0] not in complete]
        for (n, cfg), out in todo:
            _record(group_dir, n, cfg, out, s, executor, stack, wb,
                    live_runs.take(n) if live_runs is not None else None)
            setattr(report, out["status"], getattr(report, out["status"]) + 1)
        if bar is not None:
            bar.update(len(todo))
            bar.set_postfix(diverged=report.diverged, failed=report.failed, refresh=False)

    try:
        if executor == "local":
            run_local(runner, units, record, num_cpus, num_gpus, threads,
                      open_live if live_runs is not None else None)
        else:
            run_ray(runner, units, record, address, num_cpus, num_gpus, threads, ray_init,
                    open_live if live_runs is not None else None)
    finally:
        if live_runs is not None:
            live_runs.close()
        if bar is not None:
            bar.close()


def _collect_runs(report: SweepReport, names: list[str], points: list[dict]) -> None:
    """Append each grid point's stored status and summary (reserved keys left out) to report.runs, in grid
    order; a record damaged after it was written reads as 'unreadable'."""
    for n, c in zip(names, points):
        path = report.path / n
        meta = read_json(path / "meta.json", {})
        summary = read_json(path / "summary.json", {})
        if not isinstance(meta, dict) or not isinstance(summary, dict):  # damaged after it was written
            meta, summary = {"status": "unreadable"}, {}
        report.runs.append({"name": n, "path": path, "status": meta.get("status", "missing"), "config": c,
                            "summary": {k: v for k, v in summary.items() if k not in RESERVED_SUMMARY_KEYS}})


def _dry_run_unimported(s: SweepSpec, root, name) -> SweepReport:
    """A dry run that leaves the spec's runner (code) unimported: without its defaults the run folders
    cannot be named, so each grid point is matched against the stored configs that contain it; a point
    no stored run contains is 'absent'. Status 'complete' needs the full config: 'stored' says a run of
    the point exists (and its meta.json status)."""
    s.root = str(root) if root is not None else s.root
    s.name = check_name(name, "sweep (group)") if name is not None else s.name
    group_dir = Path(s.root) / safe_component(s.experiment) / safe_component(s.name or "sweep")
    stored = []
    if group_dir.is_dir():
        for d in sorted(p for p in group_dir.iterdir() if p.is_dir()):
            cfg = read_json(d / "config.json")
            if isinstance(cfg, dict):
                stored.append((d, cfg, (read_json(d / "meta.json", {}) or {}).get("status", "missing")))
    points = s.raw_points()
    report = SweepReport(safe_component(s.experiment), group_dir.name, group_dir, len(points))
    for p in points:
        hit = next(((d, st) for d, cfg, st in stored
                    if all(json.dumps(cfg.get(k), sort_keys=True) == json.dumps(v, sort_keys=True) for k, v in p.items())),
                   None)
        status = "absent" if hit is None else ("complete" if hit[1] in ("finished", "diverged") else "incomplete")
        report.skipped += status == "complete"
        report.runs.append({"name": hit[0].name if hit else describe_point(p, s.varying()), "status": status,
                            "path": hit[0] if hit else group_dir, "config": p})
    report.unimported = s.runner
    return report


def _record(group_dir: Path, name: str, config: dict, out: dict, s: SweepSpec, executor: str,
            stack: list[str] | None = None, wb: Mapping[str, Any] | None = None, sink=None) -> None:
    """Write one run's record; its meta.json (status) is written last, atomically, by Run.finish.
    wb: project, entity, wandb_config of its wandb run; sink: the wandb run opened before it trained
    (`paramlab.wandb_live`; its folder is the run folder, kept), whose live keys are not logged again."""
    run = start_run(config, experiment=s.experiment, group=group_dir.name, root=s.root, name=name,
                    tags=s.tags, use_wandb=s.wandb, if_exists="overwrite" if sink is None else "adopt",
                    wandb_sink=sink, **dict(wb or {}))
    try:
        for row in out["history"]:
            row = dict(row)
            step = row.pop("step", None)
            row.pop("time", None)
            run.log(row, step=int(step) if step is not None else 0)
        if out["summary"]:
            run.summary(out["summary"])
        run.meta["sweep"] = {"executor": executor, "runtime_s": out.get("runtime_s"), "ensemble": out.get("ensemble", 1),
                             # how it was computed: bit-identical reruns need the same stack and threads
                             "stack": stack if out.get("ensemble", 1) > 1 else [name], "threads": out.get("threads")}
        if out["status"] == "diverged":
            run.meta["diverged"] = (out["summary"].get("diverged_reason") or "the runner says so")
        if out["status"] == "failed":
            run.meta["traceback"] = out.get("traceback")
            run.finish("failed", error=out.get("error"))
        else:
            run.finish(out["status"])
    except BaseException:
        run.finish("failed", error="recording failed")
        raise
