"""Reading stored runs: paramlab's local store and wandb's offline folders.

:func:`load_runs` turns run folders written by `paramlab.tracking` (config.json, meta.json,
summary.json, history.jsonl; `paramlab.store` has the layout) into :class:`RunRecord` objects, the
source of every plot and table; :func:`find_wandb_offline_runs` lists what can be read from wandb run
folders without parsing wandb's binary ``.wandb`` file (which has no public reader in wandb 0.31).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

from .io import read_json
from .store import NOT_RUN_DIRS, RESERVED_HISTORY_KEYS, SUMMARY_DIR, safe_relpath

__all__ = ["RecordWarning", "RunRecord", "WandbOfflineRun", "find_wandb_offline_runs", "load_run", "load_runs",
           "read_history"]


class RecordWarning(UserWarning):
    """A stored record that cannot be read as it should (truncated or garbage JSON, a JSON list where an
    object belongs, a duplicated run): warned with its path, never silently dropped or double-counted."""


def _read_object(path: Path, problems: list[str]) -> dict:
    """The JSON object at `path`; {} if the file is missing; {} and a problem (named) if it is unreadable."""
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{path}: unreadable ({type(e).__name__}: {str(e)[:80]})")
        return {}
    if not isinstance(value, dict):
        problems.append(f"{path}: a JSON {type(value).__name__}, not an object")
        return {}
    return value


# ----------------------------------------------------------------------------------------------
# readers: local store


def read_history(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Rows of a history.jsonl and the number of unreadable lines skipped.

    A run killed mid-write leaves a truncated last line: it (and any other broken line) is
    skipped rather than failing the whole read.
    """
    rows: list[dict[str, Any]] = []
    bad = 0
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return rows, 0
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


@dataclasses.dataclass
class RunRecord:
    """One run read back from the local store.

    ``history`` is a list of dicts, one per ``Run.log`` call (keys ``step``, ``time`` and metric
    names); ``history_errors`` counts unreadable lines skipped (a crash mid-write). ``status`` is
    "running" for a run that has not finished (still going, or killed without a chance to record).
    ``problems`` names each of its files that could not be read (read as empty, and warned).
    """

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    meta: dict[str, Any]
    history: list[dict[str, Any]]
    status: str
    history_errors: int = 0
    problems: list = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name

    @property
    def experiment(self) -> str:
        return self.meta.get("experiment") or self.path.parent.parent.name

    @property
    def group(self) -> str:
        return self.meta.get("group") or self.path.parent.name

    @property
    def metric_names(self) -> list[str]:
        """Every metric name that appears in the history (sorted)."""
        names = {k for row in self.history for k in row}
        return sorted(names - set(RESERVED_HISTORY_KEYS))

    def metric(self, name: str) -> tuple[list[int], list[Any]]:
        """(steps, values) of the rows that logged ``name``."""
        rows = [r for r in self.history if name in r]
        return [r.get("step") for r in rows], [r[name] for r in rows]

    def columns(self) -> dict[str, list[Any]]:
        """The history as columns: ``{"step": [...], "time": [...], name: [...]}``, None where a
        row did not log that name."""
        keys = [*RESERVED_HISTORY_KEYS, *self.metric_names]
        return {k: [r.get(k) for r in self.history] for k in keys}

    def history_frame(self):
        """The history as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.columns())

    @property
    def tables(self) -> dict[str, Path]:
        """Logged tables: name -> tables/<name>.json."""
        base = self.path / "tables"
        return {p.relative_to(base).with_suffix("").as_posix(): p for p in sorted(base.rglob("*.json"))}

    def table(self, name: str) -> dict[str, Any]:
        """A logged table: {"columns": [...], "data": [[...], ...], "step": s}."""
        path = self.tables.get(name) or self.path / "tables" / safe_relpath(name).with_suffix(".json")
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    @property
    def images(self) -> dict[str, Path]:
        """Logged images: name -> media/<name>.<ext>."""
        base = self.path / "media"
        files = [p for p in sorted(base.rglob("*")) if p.is_file()]
        return {p.relative_to(base).with_suffix("").as_posix(): p for p in files}

    @property
    def wandb_dir(self) -> Path | None:
        """The wandb folder of this run (``wandb/offline-run-...``) or None."""
        rel = (self.meta.get("wandb") or {}).get("dir")
        return (self.path / rel) if rel else None


def load_run(path: str | Path, *, history: bool = True) -> RunRecord:
    """Read one run folder (the one holding config.json). Missing files read as empty."""
    path = Path(path)
    if path.name == "config.json":
        path = path.parent
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a paramlab run folder (no config.json)")
    problems: list[str] = []
    config = _read_object(path / "config.json", problems)
    meta = _read_object(path / "meta.json", problems)
    summary = _read_object(path / "summary.json", problems)
    rows, bad = read_history(path / "history.jsonl") if history else ([], 0)
    status = meta.get("status") or summary.get("status") or "unknown"
    for p in problems:
        warnings.warn(f"run record {p}: read as empty", RecordWarning, stacklevel=2)
    return RunRecord(
        path=path,
        config=config,
        summary=summary,
        meta=meta,
        history=rows,
        status=status,
        history_errors=bad,
        problems=problems,
    )


def _discover(root: Path) -> list[Path]:
    if (root / "config.json").is_file():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "config.json" in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []  # a run folder holds no further runs
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in NOT_RUN_DIRS and not d.startswith("."))
    return sorted(found)


def load_runs(paths: str | Path | Iterable[str | Path], *, history: bool = True) -> list[RunRecord]:
    """Every run under ``paths``: a run folder, a group, an experiment, the store root, or a list
    of them. Runs are found by their config.json (wandb/, media/, tables/ and dot-folders are not
    searched); sorted by path; each run once. ``history=False`` skips reading history.jsonl."""
    if isinstance(paths, (str, PurePath)):
        paths = [paths]
    seen: set[Path] = set()
    out: list[RunRecord] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"no run store at {p}")
        if p.is_file():
            p = p.parent
        for run_dir in _discover(p):
            key = run_dir.resolve()
            if key not in seen:
                seen.add(key)
                out.append(load_run(run_dir, history=history))
    return out


# ----------------------------------------------------------------------------------------------
# readers: wandb offline folders

_OFFLINE_RE = re.compile(r"^(offline-run|run)-(\d{8}_\d{6})-([A-Za-z0-9]+)$")


@dataclasses.dataclass
class WandbOfflineRun:
    """What can be read from a wandb run folder without parsing the binary ``.wandb`` file.

    ``config`` comes from ``files/config.yaml`` when present (online runs, older wandb), else from
    the ``config: {...}`` line of ``logs/debug.log`` (``config_source`` says which; None if
    neither). ``summary``/``metadata`` come from ``files/wandb-summary.json`` /
    ``files/wandb-metadata.json`` when present (wandb 0.31 offline writes neither).
    ``paramlab_run`` is the paramlab run folder it belongs to, when it sits inside one.
    """

    path: Path
    run_id: str
    started: str  # YYYYMMDD_HHMMSS from the folder name (local time of the run)
    wandb_file: Path | None
    files: list[str]
    config: dict[str, Any] | None
    config_source: str | None
    summary: dict[str, Any] | None
    metadata: dict[str, Any] | None
    requirements: list[str]
    paramlab_run: Path | None


def _literal(text: str) -> Any:
    """Evaluate a Python-literal repr, also allowing nan/inf (which ast.literal_eval refuses)."""
    tree = ast.parse(text, mode="eval")
    allowed = (
        ast.Expression, ast.Constant, ast.Dict, ast.List, ast.Tuple, ast.Set,
        ast.UnaryOp, ast.USub, ast.UAdd, ast.Load, ast.Name,
    )
    for node in ast.walk(tree):
        if not isinstance(node, allowed) or (isinstance(node, ast.Name) and node.id not in ("nan", "inf")):
            raise ValueError(f"not a literal: {type(node).__name__}")
    names = {"nan": math.nan, "inf": math.inf}
    return eval(compile(tree, "<wandb-config>", "eval"), {"__builtins__": {}}, names)


def _config_from_debug_log(path: Path) -> dict[str, Any] | None:
    """The ``config: {...}`` line of a wandb debug.log; None (warned with the file's path) if it is damaged."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("config: "):
                    cfg = _literal(line[len("config: "):].strip())
                    if not isinstance(cfg, dict):
                        raise ValueError(f"a {type(cfg).__name__}, not a mapping")
                    return cfg
    except FileNotFoundError:
        return None
    except Exception as e:  # damaged: any parse or evaluation error ({[1]: 2} is a TypeError), or unreadable
        warnings.warn(f"{path}: its config line cannot be read ({type(e).__name__}: {e}); that wandb run's "
                      "config is left empty", RecordWarning, stacklevel=2)
        return None
    return None


def _read_wandb_folder(path: Path, run_id: str, started: str) -> WandbOfflineRun:
    files_dir = path / "files"
    files = sorted(p.relative_to(files_dir).as_posix() for p in files_dir.rglob("*") if p.is_file())
    config, source = None, None
    if (files_dir / "config.yaml").is_file():
        try:
            import yaml

            raw = yaml.safe_load((files_dir / "config.yaml").read_text()) or {}
            # wandb writes {key: {"value": v, "desc": ...}}
            config = {
                k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in raw.items()
            }
            source = "config.yaml"
        except Exception as e:  # damaged: named, then the debug.log line is tried
            warnings.warn(f"{files_dir / 'config.yaml'}: cannot be read ({type(e).__name__}: {e})", RecordWarning,
                          stacklevel=2)
            config = None
    if config is None:
        config = _config_from_debug_log(path / "logs" / "debug.log")
        source = "debug.log" if config is not None else None
    if config is not None:
        config.pop("_wandb", None)
    req = files_dir / "requirements.txt"
    parent = path.parent.parent  # <paramlab run>/wandb/offline-run-...
    wandb_file = path / f"run-{run_id}.wandb"
    return WandbOfflineRun(
        path=path,
        run_id=run_id,
        started=started,
        wandb_file=wandb_file if wandb_file.is_file() else None,
        files=files,
        config=config,
        config_source=source,
        summary=read_json(files_dir / "wandb-summary.json"),
        metadata=read_json(files_dir / "wandb-metadata.json"),
        requirements=req.read_text(errors="replace").splitlines() if req.is_file() else [],
        paramlab_run=parent if path.parent.name == "wandb" and (parent / "config.json").is_file() else None,
    )


def find_wandb_offline_runs(path: str | Path, *, include_online: bool = False) -> list[WandbOfflineRun]:
    """wandb run folders (``offline-run-*``; also ``run-*`` with ``include_online``) under
    ``path`` (searched recursively; ``latest-run`` links are skipped), sorted by path, with
    whatever plain files they hold (see :class:`WandbOfflineRun`). Upload them with
    ``wandb sync <folder>``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such folder: {path}")
    prefixes = ("offline-run",) + (("run",) if include_online else ())
    out = []

    def check(p: Path) -> None:
        m = _OFFLINE_RE.match(p.name)
        if m and m.group(1) in prefixes and not p.is_symlink():
            out.append(_read_wandb_folder(p, run_id=m.group(3), started=m.group(2)))

    check(path)
    for dirpath, dirnames, _ in os.walk(path):  # does not follow symlinks (latest-run)
        for d in sorted(dirnames):
            check(Path(dirpath) / d)
        # nothing to find inside a wandb run folder or the store's media/tables; a group's summary is not
        # a run (pass its folder itself to read its wandb run)
        dirnames[:] = sorted(d for d in dirnames if not _OFFLINE_RE.match(d) and d not in ("media", "tables", SUMMARY_DIR))
    return sorted(out, key=lambda r: str(r.path))
