"""An experiment: one question asked identically of every scheme, run as a sweep, closed by a summary.

`Experiment.run(size, **overrides)` resolves the size's options, turns them into a sweep spec (the
grid: the experiment's axes, scheme x width x ... x seed; fixed: every other option) and runs it with
`paramlab.sweep.run_sweep`. So every experiment gets what a sweep has: all options checked before
any run starts (a bad value leaves nothing behind), one store layout
(``<root>/<experiment>/<group>/<run>/``), resume (run the same command with the same ``--group``
after a crash: complete runs are kept, the rest run), the lock against two processes on one group,
stacked ensembles where the experiment can batch, and Ray. Then `summarize` turns the runs'
summaries into a table, figures and verdicts, written beside the runs in the group's ``summary/``
folder (`paramlab.kit.summary`); what it computes beyond the runs (kernel baselines, a text sample) it
stores there with `paramlab.kit.summary.stored`, so summarizing the group again reads it back.

The per-run part is also a runner of its own (`Experiment.runner`, registered under the experiment's
name in `paramlab.runners`), so ``paramlab sweep`` specs can use it with any grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Mapping

from ..runners import Option, Runner, SpecError
from ..spec import SweepSpec, load_spec
from ..store import SUMMARY_DIR, default_group, safe_component
from .checks import CHECKS, cross_check
from .summary import Summary, write_summary

__all__ = ["Batch", "Experiment", "History", "LR_AXES", "Log", "SIZES", "WIDTH_AXES"]

SIZES = ("tiny", "quick", "default")  # tiny: the tests; quick: minutes; default: the numbers in docs/experiments.md (each one's time: paramlab/experiment_times.json)
# the grids of the experiments: scheme x width x seed, and with a log2 learning-rate axis (the LR-transfer ones)
WIDTH_AXES = {"scheme": "schemes", "width": "widths", "seed": "seeds"}
LR_AXES = {"scheme": "schemes", "width": "widths", "log2_lr": "log2_lrs", "seed": "seeds"}
MAX_BATCH = 16  # configs run together in one batch at most (a stacked ensemble holds them all in memory)

Log = Callable[[Mapping, int], None]  # log(metrics, step): one history row


class History:
    """A run's `log`: keeps what run_one logs as history rows, which the sweep records."""

    def __init__(self):
        self.rows: list[dict] = []

    def log(self, metrics: Mapping, step: int) -> None:
        self.rows.append({"step": int(step), **metrics})


@dataclass(frozen=True)
class Batch:
    """How an experiment runs several grid points together (e.g. K learning rates as one stacked ensemble).

    key(config) -> hashable: configs with equal keys may run together.
    run(configs, logs) -> [summary]: one summary per config; ``logs[i]`` records config i's history.
    pays(config) -> bool: whether batching this config pays (else it runs alone); default always.
    The sweep asks `pays` under ``ensemble: auto`` (``always`` / ``never`` override it).
    """

    key: Callable[[dict], Hashable]
    run: Callable[[list, list], list]
    pays: Callable[[dict], bool] = lambda config: True


def _result(summary: Mapping, history: History) -> dict:
    return {**summary, "history": history.rows, "status": "diverged" if summary.get("diverged") else "finished"}


@dataclass(frozen=True)
class Experiment:
    """An experiment (see the module docstring and `paramlab.experiments` for how to write one).

    name: the store folder and runner name. sizes: size -> options; the options named in `axes`
        list the grid's values (``seeds`` is a count: seeds 0..n-1), every other option is fixed.
    run_one(config, log) -> summary: one grid point, computed (never written: the sweep records it).
        A summary with ``diverged: 1`` marks the run diverged.
    summarize(results, params, out_dir) -> Summary: results are [(config, summary)] in grid order;
        work beyond reading them goes through `paramlab.kit.summary.stored(out_dir, name, inputs, compute)`.
    axes: grid key -> the size option that lists its values, in grid order.
    checks: option -> check (see `paramlab.runners.Option`) beyond the shared `checks.CHECKS`.
    batch: how grid points run together, if they can (`Batch`).
    doc: the question and the prediction (the module docstring; `paramlab run NAME -h` prints it).
    """

    name: str
    sizes: Mapping[str, dict]
    run_one: Callable[[dict, Log], dict]
    summarize: Callable[[list, dict, Path], Summary]
    axes: Mapping[str, str] = field(default_factory=lambda: dict(WIDTH_AXES))
    checks: Mapping[str, Callable] = field(default_factory=dict)
    batch: Batch | None = None
    doc: str = ""

    def __post_init__(self):
        for size, opts in self.sizes.items():
            missing = [o for o in self.axes.values() if o not in opts]
            if missing:
                raise ValueError(f"experiment {self.name!r}: size {size!r} lacks the axis options {missing}")

    # -- options -----------------------------------------------------------------------------------

    def _check(self, key: str):
        return self.checks.get(key, CHECKS.get(key))

    def options(self) -> dict[str, Option]:
        """The runner's options: every size's fixed options (defaults from the default size), and one
        value of each axis."""
        base = self.sizes["default"]
        listed = set(self.axes.values())
        every = {**{k: v for size in self.sizes.values() for k, v in size.items()}, **base}
        opts = {k: Option(v, check=self._check(k)) for k, v in every.items() if k not in listed}
        for key, listed_key in self.axes.items():
            first = 0 if listed_key == "seeds" else base[listed_key][0]
            opts[key] = Option(first, check=self._check(key))
        return opts

    def params(self, size: str, overrides: Mapping) -> dict:
        """The size's options with the non-None overrides applied; axis options checked for shape."""
        if size not in self.sizes:
            raise SpecError(f"unknown size {size!r} for {self.name}: sizes are {', '.join(self.sizes)}")
        p = dict(self.sizes[size])
        for k, v in overrides.items():
            if v is None:
                continue
            if k not in p:
                raise SpecError(f"unknown option {k!r} for {self.name}: options are {', '.join(sorted(p))}")
            p[k] = v
        for listed_key in self.axes.values():
            v = p[listed_key]
            if listed_key == "seeds":
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise SpecError(f"option 'seeds': {v!r} is not a number of seeds (a positive int)")
            elif not isinstance(v, list):
                p[listed_key] = [v]
            elif not v:
                raise SpecError(f"option {listed_key!r} is an empty list")
        return p

    def spec(self, params: Mapping, *, root="runs", group: str, use_wandb: bool = True) -> SweepSpec:
        """The sweep spec of resolved `params` (see `params`)."""
        grid = {key: list(range(params[k])) if k == "seeds" else list(params[k]) for key, k in self.axes.items()}
        fixed = {k: v for k, v in params.items() if k not in set(self.axes.values())}
        return SweepSpec(grid=grid, fixed=fixed, runner=self.name, experiment=self.name, name=group, root=str(root),
                         ensemble="auto", max_ensemble=MAX_BATCH, wandb=use_wandb)

    # -- the runner --------------------------------------------------------------------------------

    def run_config(self, config: dict) -> dict:
        """The runner's fn: run_one with a History as its log."""
        history = History()
        return _result(self.run_one(dict(config), history.log), history)

    def run_batch(self, configs: list) -> list:
        """The runner's batch: `batch.run` with one History per config."""
        histories = [History() for _ in configs]
        outs = self.batch.run([dict(c) for c in configs], [h.log for h in histories])
        return [_result(o, h) for o, h in zip(outs, histories)]

    @property
    def runner(self) -> Runner:
        if self.batch is None:
            return Runner(self.name, self.run_config, self.options(), prepare=cross_check)
        return Runner(self.name, self.run_config, self.options(), prepare=cross_check, batch=self.run_batch,
                      batch_key=self.batch.key, batch_pays=self.batch.pays)

    # -- running -----------------------------------------------------------------------------------

    def run(self, size: str = "default", root="runs", use_wandb: bool = True, progress: bool = True,
            group: str | None = None, threads: int | None = None, *, executor: str = "local",
            address: str | None = None, wandb_project: str | None = None, wandb_entity: str | None = None,
            tags: list[str] | None = None, **overrides) -> dict:
        """Run (or resume) the experiment at `size` with `overrides`; returns its summary dict.

        group: the store folder of this invocation (default: a new timestamped one). Give the same
        group to resume: complete runs are kept, the others run. threads: torch threads per run
        (default 1: small models on a shared CPU). executor / address / wandb_project / wandb_entity /
        tags: as `paramlab.sweep.run_sweep` (the wandb config of every run also holds the size).
        """
        import torch

        from ..sweep import run_sweep

        p = self.params(size, overrides)
        group = group or default_group(self.name)
        spec = self.spec(p, root=root, group=group, use_wandb=use_wandb)
        spec = load_spec(spec)  # every option and grid point checked before anything is written
        print(f"{self.name} ({size}): {len(spec.points())} runs in {Path(root) / self.name / safe_component(group)} "
              f"(if cut off, rerun with --group {group}: complete runs are kept)", flush=True)
        old = torch.get_num_threads()
        torch.set_num_threads(threads or 1)
        try:
            wb = {"wandb_project": wandb_project, "wandb_entity": wandb_entity, "tags": tags,
                  "wandb_config": {"size": size}}
            report = run_sweep(spec, executor=executor, address=address, threads=threads or 1, progress=progress, **wb)
            failed = [r for r in report.runs if r["status"] not in ("finished", "diverged")]
            if failed:
                raise RuntimeError(
                    f"{len(failed)} of {report.total} runs of {self.name} failed (errors in their meta.json, e.g. "
                    f"{failed[0]['path']}); fix the cause and rerun with --group {report.name}: complete runs are kept")
            results = [(r["config"], r["summary"]) for r in report.runs]
            out_dir = Path(report.path) / SUMMARY_DIR
            out_dir.mkdir(parents=True, exist_ok=True)
            summary = self.summarize(results, p, out_dir)
            return write_summary(summary, experiment=self.name, group=report.name, out_dir=out_dir,
                                 use_wandb=use_wandb, wandb=wb)
        finally:
            torch.set_num_threads(old)
