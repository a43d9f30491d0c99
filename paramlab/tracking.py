"""One tracked run: its resolved config, versions, git SHA and metrics, in the local store and in wandb.

One call, :func:`start_run`, records a run in two places:

* the **local store** (the source of truth for plots and tables; plain files, no server):
  ``<root>/<experiment>/<group>/<run_name>/`` with config.json, meta.json, summary.json,
  history.jsonl, tables/ and media/ (`paramlab.store` describes the layout). ``group`` is one
  experiment invocation (one wandb group); by default a timestamp-based id made once per process
  and experiment (or ``$PARAMLAB_GROUP``), so every run an invocation starts lands in the same
  group. ``run_name`` is derived from the config, e.g. ``mup-w256-lr0.01-s0``.

* **wandb** (`paramlab.wandb_sink`), OFFLINE unless the user explicitly set ``WANDB_MODE`` (or
  passed ``wandb_mode``): ``dir=`` the run folder, ``group=<experiment>-<group>``,
  ``job_type=<scheme>``, ``name=run_name``, the config plus flat filter keys and ``paramlab_meta``
  (versions, git) as wandb config (`wandb_identity`), metrics via ``wandb.log`` (a sweep opens the
  wandb run before training and passes it in, ``wandb_sink=``: `paramlab.wandb_live`), ``summary`` (+ ``status``) as wandb summary, tables/images as
  ``wandb.Table``/``wandb.Image``. ``use_wandb=False``, ``PARAMLAB_WANDB=0`` or
  ``WANDB_MODE=disabled`` turns wandb off entirely. Tracking never crashes a sweep because of wandb.

Readers: `paramlab.records` (:func:`load_runs`: local store -> ``RunRecord``; :func:`find_wandb_offline_runs`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .provenance import code_git_info, library_versions
from .io import to_jsonable, write_json_atomic
from .store import (FINAL_STATUSES, FORMAT_VERSION, NAME_KEYS, RESERVED_HISTORY_KEYS, RESERVED_SUMMARY_KEYS,
                    default_group, format_value, lookup, now_iso, run_name, safe_component, safe_relpath)
from .wandb_sink import WandbSink, resolve_wandb_mode, wandb_enabled

__all__ = ["Run", "start_run", "wandb_enabled", "wandb_identity"]


def wandb_cells(data: list[list]) -> list[list]:
    """Rows a wandb.Table accepts: an empty string is a missing value (None), and a column that mixes
    text with numbers is all text (wandb types each column by its first cells and refuses a mix)."""
    data = [[None if c == "" else c for c in r] for r in data]
    for j in range(len(data[0]) if data else 0):
        col = [r[j] for r in data if r[j] is not None]
        if any(isinstance(c, str) for c in col) and any(isinstance(c, (int, float)) for c in col):
            for r in data:
                r[j] = None if r[j] is None else str(r[j])
    return data


def wandb_identity(config: Mapping, experiment: str, group: str, name: str, tags: Iterable[str], meta: Mapping,
                   extra: Mapping[str, Any] | None = None) -> dict:
    """How a run appears in wandb: name = the store's run name, group = ``<experiment>-<group>``,
    job_type = the scheme (else the depth rule, else the config's ``kind``, else the experiment), tags = the
    experiment and `tags`, and config = the stored config plus flat keys a filter needs: ``lr`` and
    ``log2_lr`` (each derived from the other where only one is set), ``experiment``, ``git_sha``,
    ``paramlab_version`` and `extra` (e.g. ``size``), with the provenance under ``paramlab_meta``."""
    import math

    scheme = lookup(config, NAME_KEYS["scheme"])
    if scheme is None:  # depth_transfer's runs: the depth rule; an experiment's summary run: "summary"
        scheme = config.get("rule", config.get("kind"))
    flat: dict[str, Any] = {"experiment": experiment}
    lr, log2_lr = config.get("lr"), config.get("log2_lr")
    if isinstance(log2_lr, (int, float)) and not isinstance(log2_lr, bool) and lr is None:
        flat["lr"] = 2.0 ** log2_lr
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 and log2_lr is None:
        flat["log2_lr"] = math.log2(lr)
    git = meta.get("git") or {}
    flat["git_sha"] = git.get("sha")
    flat["paramlab_version"] = (meta.get("versions") or {}).get("paramlab")
    wb_config = {**config, **flat, **dict(extra or {}),
                 "paramlab_meta": {k: meta[k] for k in ("experiment", "group", "versions", "git") if k in meta}}
    return {"name": name, "group": f"{experiment}-{group}",
            "job_type": format_value(scheme) if scheme is not None else experiment,
            "tags": [experiment, *tags], "config": wb_config}


class Run:
    """One tracked run (built by ``start_run``, an alias): records config, versions and git SHA to the
    local store and to wandb.

    Writes ``<root>/<experiment>/<group>/<name>/`` (`paramlab.store` describes the files).

    config: the fully resolved config (any :func:`to_jsonable` input).
    group: one per experiment invocation; default :func:`default_group` (one per process).
    name: run folder and wandb name; default :func:`run_name` (``mup-w256-lr0.01-s0``).
    if_exists: the run folder exists already: ``"suffix"`` (``name-1``, ...), ``"overwrite"``
        (delete it first, e.g. re-running a failed run of a resumed sweep), ``"error"``, or ``"adopt"``
        (use it as it is: the sweep made it for the wandb run it opened before training).
    use_wandb: False (or env PARAMLAB_WANDB=0) for the local store only.
    project, entity: wandb project (default ``$WANDB_PROJECT`` or ``"paramlab"``) and entity (default
        ``$WANDB_ENTITY``, else the account's default).
    wandb_config: extra flat wandb config keys (e.g. the experiment's size); see `wandb_identity`.
    wandb_sink: a started `WandbSink` to record into (the sweep opens one per run before it trains and
        sends the live points through it); history keys it already sent live are not logged again.
    wandb_mode: "offline" / "online"; default ``$WANDB_MODE`` if set, else "offline".
    wandb_settings: extra ``wandb.Settings`` fields (default ``silent=True, console="off"``).

    Use as ``with start_run(cfg, experiment="coord_check") as run: run.log({...}, step=t)``;
    leaving the block finishes the run ("finished", or "failed" with the error on an exception).

    Attributes: ``path`` (the run folder), ``name``, ``experiment``, ``group``, ``config`` (the
    JSON form that was stored), ``meta`` (what meta.json holds), ``status``, ``wandb_run`` (the
    ``wandb.Run`` or None; for extras such as ``define_metric``).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | Any,
        *,
        experiment: str,
        group: str | None = None,
        root: str | Path = "runs",
        name: str | None = None,
        tags: Iterable[str] = (),
        use_wandb: bool = True,
        project: str | None = None,
        wandb_mode: str | None = None,
        wandb_settings: Mapping[str, Any] | None = None,
        if_exists: str = "suffix",
        entity: str | None = None,
        wandb_config: Mapping[str, Any] | None = None,
        wandb_sink: WandbSink | None = None,
    ):
        if not experiment:
            raise ValueError("start_run needs experiment='<name>' (e.g. 'coord_check')")
        if if_exists not in ("suffix", "overwrite", "error", "adopt"):
            raise ValueError(f"if_exists must be 'suffix', 'overwrite', 'error' or 'adopt', not {if_exists!r}")
        self.experiment = safe_component(experiment)
        self.group = safe_component(group if group is not None else default_group(self.experiment))
        self.config = to_jsonable(config)
        if not isinstance(self.config, dict):
            raise TypeError(f"config must be a dict (or a dataclass), got {type(config).__name__}")
        self.tags = [str(t) for t in tags]
        self._t0 = time.monotonic()
        self._summary: dict[str, Any] = {}
        self._last_step: int | None = None
        self._history = None
        self._sink: WandbSink | None = None
        self.status = "running"

        group_dir = Path(root) / self.experiment / self.group
        group_dir.mkdir(parents=True, exist_ok=True)
        self.path = self._make_run_dir(group_dir, safe_component(name or run_name(self.config)), if_exists)
        self.name = self.path.name

        write_json_atomic(self.path / "config.json", self.config)
        self.meta: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "experiment": self.experiment,
            "group": self.group,
            "name": self.name,
            "status": "running",
            "error": None,
            "started_at": now_iso(),
            "finished_at": None,
            "duration_s": None,
            "last_step": None,
            "tags": self.tags,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "argv": list(sys.argv),
            "cwd": os.getcwd(),
            "platform": platform.platform(),
            "versions": library_versions(),
            "git": dict(code_git_info()),
            "wandb": {"enabled": False},
        }
        write_json_atomic(self.path / "meta.json", self.meta)
        write_json_atomic(self.path / "summary.json", {"status": "running"})
        # Line-per-call append, flushed each call: a crash loses at most the line being written.
        self._history = open(self.path / "history.jsonl", "a", encoding="utf-8")

        if wandb_sink is not None:  # opened before the run trained (the sweep's live runs)
            self._sink = wandb_sink
            self.meta["wandb"] = wandb_sink.info
            write_json_atomic(self.path / "meta.json", self.meta)
        elif wandb_enabled(use_wandb):
            self._sink = WandbSink(self.meta["wandb"])
            self._sink.start(run_dir=self.path, **wandb_identity(self.config, self.experiment, self.group, self.name,
                                                                 self.tags, self.meta, wandb_config),
                             project=project, entity=entity, mode=resolve_wandb_mode(wandb_mode),
                             settings=wandb_settings)
            write_json_atomic(self.path / "meta.json", self.meta)

    # -- setup ---------------------------------------------------------------------------------

    @staticmethod
    def _make_run_dir(group_dir: Path, name: str, if_exists: str) -> Path:
        path = group_dir / name
        if if_exists == "adopt":  # made (and cleared) by the sweep before the run trained; holds its live wandb/
            path.mkdir(exist_ok=True)
            return path
        if if_exists == "overwrite" and path.exists():
            shutil.rmtree(path)
        if if_exists in ("overwrite", "error"):
            try:
                path.mkdir()
            except FileExistsError:
                raise FileExistsError(
                    f"run folder {path} exists; pass name=..., if_exists='suffix' or 'overwrite'"
                ) from None
            return path
        # os.mkdir is atomic: two processes starting the same config get name and name-1.
        for i in range(10_000):
            candidate = group_dir / (name if i == 0 else f"{name}-{i}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
        raise FileExistsError(f"no free run folder name for {name!r} in {group_dir}")

    @property
    def wandb_run(self):
        """The ``wandb.Run`` this run mirrors into, or None (for extras such as ``define_metric``)."""
        return self._sink.run if self._sink is not None else None

    def _check_open(self) -> None:
        if self.status != "running":
            raise RuntimeError(f"run {self.name} is already {self.status}; start a new run to log more")

    # -- logging -------------------------------------------------------------------------------

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Append ``{"step": step, "time": seconds, **metrics}`` to history.jsonl (flushed) and
        ``wandb.log(metrics, step=step)``. Names are slash-namespaced (``train/loss``).

        wandb drops steps lower than one already logged; such calls go to the local store only.
        """
        self._check_open()
        step = int(step)
        row: dict[str, Any] = {"step": step, "time": round(time.monotonic() - self._t0, 4)}
        for k, v in metrics.items():
            if not isinstance(k, str):
                raise TypeError(f"metric names must be str, got {k!r}")
            if k in RESERVED_HISTORY_KEYS:
                raise ValueError(f"metric name {k!r} is reserved in history.jsonl; use e.g. 'train/{k}'")
            row[k] = to_jsonable(v)
        self._history.write(json.dumps(row, allow_nan=True) + "\n")
        self._history.flush()
        self._last_step = step if self._last_step is None else max(self._last_step, step)
        if self._sink is not None:
            self._sink.log({k: row[k] for k in metrics}, step)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the run summary: summary.json (atomic) and the wandb summary."""
        self._check_open()
        values = to_jsonable(dict(values))
        bad = [k for k in values if k in RESERVED_SUMMARY_KEYS]
        if bad:
            raise ValueError(f"summary keys {bad} are reserved (set by finish)")
        self._summary.update(values)
        write_json_atomic(self.path / "summary.json", {**self._summary, "status": self.status})
        if self._sink is not None:
            self._sink.summary(values)

    @property
    def summary_values(self) -> dict[str, Any]:
        """The summary so far (a copy)."""
        return dict(self._summary)

    def _media_step(self, step: int | None) -> int:
        # Media without a step attach to the latest step (its wandb row is still open then).
        if step is not None:
            return int(step)
        return self._last_step if self._last_step is not None else 0

    def log_table(
        self, name: str, columns: list[str], rows: Iterable[Iterable[Any]], *, step: int | None = None
    ) -> Path:
        """Store a table as ``tables/<name>.json`` ({"columns", "data", "step"}; a later table
        with the same name replaces it) and log it to wandb as a ``wandb.Table``. Returns the path."""
        self._check_open()
        columns = [str(c) for c in columns]
        data = [to_jsonable(list(r)) for r in rows]
        for r in data:
            if len(r) != len(columns):
                raise ValueError(f"table {name!r}: row {r} has {len(r)} cells, expected {len(columns)}")
        step = self._media_step(step)
        path = self.path / "tables" / safe_relpath(name).with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"columns": columns, "data": data, "step": step})
        if self._sink is not None:
            cells = wandb_cells(data)
            self._sink.media(name, step, lambda wandb: wandb.Table(columns=columns, data=cells))
        return path

    def log_image(
        self, name: str, image: str | Path | Any, *, step: int | None = None, caption: str | None = None
    ) -> Path:
        """Store an image as ``media/<name>.<ext>`` (a copy of the file at ``image``, or a PNG
        saved from a matplotlib figure) and log it to wandb as a ``wandb.Image``. Returns the path."""
        self._check_open()
        rel = safe_relpath(name)
        if hasattr(image, "savefig"):
            dest = self.path / "media" / rel.with_suffix(".png")
            dest.parent.mkdir(parents=True, exist_ok=True)
            image.savefig(dest)
        else:
            src = Path(image)
            if not src.is_file():
                raise FileNotFoundError(f"log_image({name!r}): no image file at {src}")
            dest = self.path / "media" / rel.with_suffix(src.suffix or ".png")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        step = self._media_step(step)
        if self._sink is not None:
            self._sink.media(name, step, lambda wandb: wandb.Image(str(dest), caption=caption))
        return dest

    # -- ending --------------------------------------------------------------------------------

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        """End the run: status ("finished", "diverged" or "failed") and error into meta.json and
        summary.json (atomic), history closed, wandb summary ``status`` set and wandb finished
        (exit code 1 for "failed", so wandb shows it failed; "diverged" is a normal outcome).
        A second call does nothing."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, not {status!r}")
        if self.status != "running":
            return
        self.status = status
        if self._history is not None:
            self._history.close()
        self.meta.update(
            status=status,
            error=error,
            finished_at=now_iso(),
            duration_s=round(time.monotonic() - self._t0, 3),
            last_step=self._last_step,
        )
        final = {**self._summary, "status": status}
        if error is not None:
            final["error"] = error
        write_json_atomic(self.path / "summary.json", final)
        if self._sink is not None:
            self._sink.finish(status, error)
        write_json_atomic(self.path / "meta.json", self.meta)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.finish("finished")
        elif self.status == "running":
            # Record the failure (also KeyboardInterrupt), keep what was logged, and re-raise.
            self.meta["traceback"] = "".join(traceback.format_exception(exc_type, exc, tb))[-20_000:]
            self.finish("failed", error=f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__)
        return False

    def __repr__(self) -> str:
        where = f"{self.experiment}/{self.group}/{self.name}"
        return f"Run({where}, status={self.status!r}, wandb={self.wandb_run is not None})"


# the function form users call: ``with start_run(cfg, experiment=...) as run`` (the same signature as Run)
start_run = Run
