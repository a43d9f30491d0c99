"""A sweep's wandb runs, opened before their unit trains, so wandb shows each point as it is computed.

A unit (one config, or K configs trained as one stacked ensemble) gets one wandb run per config it
records, opened in the run's store folder (``<group>/<run>/wandb/``) just before the unit trains;
the unit's function runs inside ``live.sending_to([...])`` so that every `live.emit(metrics, step,
model=k)` of a training loop lands in run k at wandb step = the optimizer step. When the unit is
done the sweep writes the local store exactly as without wandb (`paramlab.tracking.Run`, adopting
the open run): the history rows whose keys went live are not sent again, the others (points a
runner computes after training, e.g. coordinate-check slopes) are, then the summary and the status.

On Ray the unit's points travel back to the driver through a `ray.util.queue.Queue` and the driver
logs them (it holds every wandb run; the workers need no wandb and no network); a unit's runs are
opened when its first point arrives, i.e. when a worker starts training it.

Names (`default_project`): one wandb project per experiment, ``paramlab-<experiment>`` (e.g.
``paramlab-lr-transfer``): each experiment logs its own keys, so each project's workspace and
report show panels that fit it; ``--wandb-project`` or ``$WANDB_PROJECT`` put everything in one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .provenance import code_git_info, library_versions
from .store import safe_component
from .tracking import wandb_identity
from .wandb_sink import WandbSink, check_project, resolve_wandb_mode


def default_project(experiment: str, explicit: str | None = None) -> str:
    """The wandb project of an experiment's runs: `explicit` (``--wandb-project``), else
    ``$WANDB_PROJECT``, else ``paramlab-<experiment>`` with ``_`` as ``-``; checked (`check_project`)."""
    return check_project(explicit or os.environ.get("WANDB_PROJECT")
                         or "paramlab-" + safe_component(experiment).replace("_", "-"))


def _drop(metrics: Mapping[str, Any], step: int) -> None:
    """The sink of a config whose run is complete already (a stack recomputes it, nothing records it)."""


class LiveRuns:
    """The open wandb runs of a sweep's units: `open(unit)` before a unit trains, `sinks` for
    `live.sending_to`, `take(name)` hands a run's sink to the record (`tracking.Run(wandb_sink=...)`).

    group_dir: the sweep's group folder; experiment, group: the store's names; tags: extra tags;
    project, entity: wandb's (see `default_project`); config: extra flat config keys (e.g. size).
    """

    def __init__(self, group_dir: Path, experiment: str, group: str, *, tags: Sequence[str] = (),
                 project: str | None = None, entity: str | None = None, config: Mapping[str, Any] | None = None):
        self.group_dir = Path(group_dir)
        self.experiment, self.group = experiment, group
        self.tags = list(tags)
        self.project, self.entity = project, entity
        self.config = dict(config or {})
        self._open: dict[str, WandbSink] = {}
        self._meta = None

    def _provenance(self) -> dict:
        if self._meta is None:  # one git call per sweep, not per run
            self._meta = {"experiment": self.experiment, "group": self.group, "versions": library_versions(),
                          "git": dict(code_git_info())}
        return self._meta

    def open(self, unit: Sequence[tuple[str, dict]], complete: set | frozenset = frozenset()) -> list[WandbSink | None]:
        """Clear and make the run folder of each config of `unit` not in `complete` and open its
        wandb run there; one sink per config (None for a complete one)."""
        out: list[WandbSink | None] = []
        for name, cfg in unit:
            if name in complete:
                out.append(None)
                continue
            if name in self._open:
                out.append(self._open[name])
                continue
            path = self.group_dir / name
            if path.exists():  # cut off or failed before: it runs again from scratch
                shutil.rmtree(path)
            path.mkdir(parents=True)
            sink = WandbSink({})
            sink.start(run_dir=path, **wandb_identity(cfg, self.experiment, self.group, name, self.tags,
                                                      self._provenance(), self.config),
                       project=self.project, entity=self.entity, mode=resolve_wandb_mode(), settings=None)
            self._open[name] = sink
            out.append(sink)
        return out

    @staticmethod
    def sinks(opened: Sequence[WandbSink | None]) -> list[Callable[[Mapping[str, Any], int], None]]:
        """The `live.sending_to` sinks of a unit's opened runs."""
        return [s.live if s is not None else _drop for s in opened]

    def take(self, name: str) -> WandbSink | None:
        """The open sink of run `name` (the record finishes it), or None if none was opened."""
        return self._open.pop(name, None)

    def close(self) -> None:
        """Finish every run still open (a sweep that stops before recording them: they are failed)."""
        for name in list(self._open):
            self._open.pop(name).finish("failed", "the sweep stopped before this run was recorded")
