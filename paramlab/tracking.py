"""Run records: resolved config, versions, git SHA and metrics, to a local store and to wandb.

One call, :func:`start_run`, records a run in two places:

* the **local store** (the source of truth for plots and tables; plain files, no server)::

      <root>/<experiment>/<group>/<run_name>/
          config.json     the fully resolved config (JSON; written atomically at start)
          meta.json       status, error + traceback, start/end time, duration, host, argv,
                          library versions, git SHA + dirty flag, wandb id/mode/dir, tags
                          (written atomically at start and again at finish)
          summary.json    final metrics from ``Run.summary`` plus ``status`` (and ``error``);
                          written atomically on every ``summary()`` call and at finish
          history.jsonl   one JSON object per ``Run.log`` call: {"step", "time", <metric>: value};
                          ``time`` is seconds since the run started. Flushed after every line, so a
                          crashed run keeps everything it logged. NaN/inf are written as the
                          JSON extensions NaN/Infinity, which Python's json module reads back.
          tables/<name>.json   ``Run.log_table``: {"columns": [...], "data": [[...]], "step": s}
          media/<name>.<ext>   ``Run.log_image``: a copy of the image file
          wandb/offline-run-<YYYYMMDD_HHMMSS>-<id>/   wandb's own folder (when wandb is on)

  ``group`` is one experiment invocation (one wandb group); by default a timestamp-based id made
  once per process and experiment (or ``$PARAMLAB_GROUP``), so every run an invocation starts lands
  in the same group. ``run_name`` is derived from the config, e.g. ``mup-w256-lr0.01-s0``.

* **wandb**, OFFLINE unless the user explicitly set ``WANDB_MODE`` (or passed ``wandb_mode``):
  ``dir=`` the run folder, ``group=<experiment>-<group>``, ``job_type=<scheme>``, ``name=run_name``,
  the config plus ``paramlab_meta`` (versions, git) as wandb config, metrics via ``wandb.log``,
  ``summary`` (+ ``status``) as wandb summary, tables/images as ``wandb.Table``/``wandb.Image``.
  ``use_wandb=False``, ``PARAMLAB_WANDB=0`` or ``WANDB_MODE=disabled`` turns wandb off entirely. If
  wandb cannot be imported or started, or fails mid-run, tracking warns once and carries on with
  the local store only: tracking never crashes a sweep because of wandb.

What wandb 0.31 writes in an offline run folder (checked, see tests/test_tracking.py)::

    offline-run-<YYYYMMDD_HHMMSS>-<id>/
        run-<id>.wandb          binary record log (config, history, summary, ...): no public reader;
                                `wandb sync <folder>` uploads it, `wandb leet` shows it in a terminal
        files/requirements.txt  `pip freeze` of the environment
        files/media/...         tables (table/<name>_<step>_<hash>.table.json) and images
        files/output.log        console capture (not with console="off", which paramlab uses)
        logs/debug.log          the SDK log; one line ``config: {...}`` holds the init config as a
                                Python repr, which :func:`find_wandb_offline_runs` parses
        logs/debug-internal.log, logs/debug-core.log, tmp/
    No files/config.yaml, files/wandb-summary.json or files/wandb-metadata.json offline (online
    runs and older wandb versions write them; the reader uses them when present).

Readers: `paramlab.records` (:func:`load_runs`: local store -> ``RunRecord``; :func:`find_wandb_offline_runs`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import functools
import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

__all__ = [
    "STATUSES",
    "Run",
    "default_group",
    "git_info",
    "library_versions",
    "new_group_id",
    "run_name",
    "start_run",
    "to_jsonable",
    "wandb_enabled",
]

STATUSES = ("running", "finished", "diverged", "failed")
_FINAL_STATUSES = STATUSES[1:]
_RESERVED_HISTORY_KEYS = ("step", "time")
_RESERVED_SUMMARY_KEYS = ("status", "error")
# Folders inside a run dir that never hold run records: pruned when discovering runs.
_NOT_RUN_DIRS = {"wandb", "media", "tables", "__pycache__"}
_FORMAT_VERSION = 1

# ----------------------------------------------------------------------------------------------
# small helpers


_WARNED: set[str] = set()


def _warn_once(key: str, message: str, stacklevel: int = 3) -> None:
    # A sweep may start thousands of runs: one warning per cause and process is enough.
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _safe_component(text: str) -> str:
    """One path component: letters, digits and ``._=+-``; never empty, '.' or '..'."""
    out = re.sub(r"[^A-Za-z0-9._=+-]", "_", str(text)).strip()
    return "_" if out in ("", ".", "..") else out


def _safe_relpath(name: str) -> Path:
    """A slash-namespaced name (``feat/h2/kernel``) as a relative path that stays inside its folder."""
    return Path(*[_safe_component(p) for p in str(name).split("/") if p != ""] or ["_"])


def _write_json_atomic(path: Path, obj: Any) -> None:
    # temp file in the same folder + os.replace: readers (plots of a live sweep, a resumed sweep
    # after a crash) see the old file or the new one, never half of one.
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, allow_nan=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


# ----------------------------------------------------------------------------------------------
# configs -> JSON


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types (dict with str keys, list, str, int, float, bool, None).

    Handles tuples/sets (-> lists), numpy scalars and arrays, torch tensors, dtypes and devices
    (``"torch.float32"``, ``"cuda:0"``), Paths, dataclasses (-> dict of fields), namedtuples
    (-> dict), Enums (-> value), datetimes (-> ISO string), classes and functions
    (-> ``"module.qualname"``). Anything else becomes its ``repr`` so that recording a config
    never fails. NaN and inf floats are kept (the writers emit them as NaN/Infinity).
    """
    t = type(obj)
    if obj is None or t in (bool, int, float, str):
        return obj
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):  # includes numpy.float64, a float subclass
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        return {(k if isinstance(k, str) else str(to_jsonable(k))): to_jsonable(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # fields one by one, not dataclasses.asdict: asdict deep-copies, which fails on tensors
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):  # namedtuple
        return to_jsonable(obj._asdict())
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [to_jsonable(v) for v in obj]
        try:
            return sorted(items)
        except TypeError:
            return items
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.generic):
            return to_jsonable(obj.item())
        if isinstance(obj, np.ndarray):
            return to_jsonable(obj.tolist())
        if isinstance(obj, np.dtype):
            return str(obj)
    torch = sys.modules.get("torch")
    if torch is not None:
        if isinstance(obj, torch.Tensor):
            obj = obj.detach().cpu()
            return to_jsonable(obj.item() if obj.dim() == 0 else obj.tolist())
        if isinstance(obj, torch.Size):
            return [int(v) for v in obj]
        if isinstance(obj, (torch.dtype, torch.device)):
            return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    return repr(obj)


# ----------------------------------------------------------------------------------------------
# names, groups, versions, git

_NAME_KEYS = {
    "scheme": ("scheme", "parameterization", "param"),
    "width": ("width", "hidden_width", "d_model", "n"),
    "lr": ("lr", "learning_rate", "eta"),
    "seed": ("seed",),
}


def _flat_lookup(config: Mapping, keys: tuple[str, ...]) -> Any:
    """The value of the first of ``keys`` found at the top level, else anywhere in nested dicts."""
    for k in keys:
        if k in config:
            v = config[k]
            if not isinstance(v, Mapping):
                return v
            if isinstance(v.get("name"), str):  # e.g. a Scheme dataclass stored as a dict
                return v["name"]
    for v in config.values():
        if isinstance(v, Mapping):
            found = _flat_lookup(v, keys)
            if found is not None:
                return found
    return None


def _fmt(v: Any) -> str:
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        return f"{float(v):g}"
    if isinstance(v, Mapping):  # a scheme given as a table: no short name
        return "custom"
    return str(getattr(v, "name", v))


def run_name(config: Mapping) -> str:
    """Short run name from the config: ``<scheme>-w<width>-lr<lr>-s<seed>`` (e.g. ``mup-w256-lr0.01-s0``).

    Keys are looked up at the top level first, then in nested dicts (``scheme``; ``width``;
    ``lr``/``learning_rate``; ``seed``); missing parts are left out; ``"run"`` if none is found.
    """
    parts = []
    for key, prefix in (("scheme", ""), ("width", "w"), ("lr", "lr"), ("seed", "s")):
        v = _flat_lookup(config, _NAME_KEYS[key])
        if v is not None:
            parts.append(prefix + _fmt(v))
    return _safe_component("-".join(parts)) if parts else "run"


def new_group_id() -> str:
    """A fresh, unique, sortable group id: ``YYYYMMDD-HHMMSS-<4 hex>`` (local time)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


_DEFAULT_GROUPS: dict[str, str] = {}


def default_group(experiment: str) -> str:
    """The group used when ``start_run(group=None)``: ``$PARAMLAB_GROUP`` if set, else one id
    per process and experiment (made on first use), so one invocation is one group.

    A sweep that runs its runs in other processes should pass ``group=`` (or set PARAMLAB_GROUP).
    """
    env = os.environ.get("PARAMLAB_GROUP")
    if env:
        return env
    if experiment not in _DEFAULT_GROUPS:
        _DEFAULT_GROUPS[experiment] = new_group_id()
    return _DEFAULT_GROUPS[experiment]


def _dist_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of python, torch, numpy, paramlab, wandb and mup (``None`` when not installed).

    Does not import wandb or mup (installed package metadata is enough).
    """
    import importlib.util

    import paramlab

    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod in ("torch", "numpy"):
        m = sys.modules.get(mod)
        out[mod] = getattr(m, "__version__", None) if m is not None else _dist_version(mod)
    out["paramlab"] = getattr(paramlab, "__version__", None)
    out["wandb"] = _dist_version("wandb")
    out["mup"] = _dist_version("mup")
    if out["mup"] is None and importlib.util.find_spec("mup") is not None:
        out["mup"] = "unknown"
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = getattr(torch.version, "cuda", None)
    return out


def git_info(path: str | Path | None = None) -> dict[str, Any]:
    """``{"sha", "dirty", "root"}`` of the git work tree containing ``path`` (default: cwd).

    ``sha`` is None (and no error is raised) outside a work tree, without git, or before the
    first commit; ``dirty`` is True when tracked or untracked-but-not-ignored files differ.
    """
    cwd = Path(path) if path is not None else Path.cwd()
    out: dict[str, Any] = {"sha": None, "dirty": None, "root": None}

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    root = git("rev-parse", "--show-toplevel")
    if root is None:
        return out
    out["root"] = root
    out["sha"] = git("rev-parse", "--verify", "-q", "HEAD") or None
    status = git("status", "--porcelain")
    out["dirty"] = None if status is None else bool(status)
    return out


@functools.lru_cache(maxsize=None)
def _code_git_info() -> dict[str, Any]:
    # The code that runs is paramlab's: prefer its source tree (an editable install or a checkout);
    # an installed copy under site-packages would report whatever repo the venv sits in, so use
    # the cwd (the experiment's repo) then. Cached: the code cannot change under a running process.
    pkg = Path(__file__).resolve().parent
    if "site-packages" not in pkg.parts and "dist-packages" not in pkg.parts:
        info = git_info(pkg)
        if info["root"] is not None:
            return info
    return git_info(Path.cwd())


# ----------------------------------------------------------------------------------------------
# wandb switch


def _env_off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("0", "false", "no", "off")


def wandb_enabled(use_wandb: bool = True) -> bool:
    """Whether a run would use wandb: ``use_wandb`` and not ``PARAMLAB_WANDB=0`` (or false/no/off)
    and not ``WANDB_MODE=disabled`` / ``WANDB_DISABLED=true``."""
    if not use_wandb or _env_off("PARAMLAB_WANDB"):
        return False
    if os.environ.get("WANDB_MODE", "").strip().lower() == "disabled":
        return False
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return False
    return True


def _wandb_mode(explicit: str | None) -> str:
    # Offline unless the user asked: online with a key and no network hangs in init for ~90 s.
    return explicit or os.environ.get("WANDB_MODE", "").strip() or "offline"


# ----------------------------------------------------------------------------------------------
# the writer


class Run:
    """One tracked run (built by ``start_run``, an alias): records config, versions and git SHA to the
    local store and to wandb.

    Writes ``<root>/<experiment>/<group>/<name>/`` (see the module docstring for the files).

    config: the fully resolved config (any :func:`to_jsonable` input).
    group: one per experiment invocation; default :func:`default_group` (one per process).
    name: run folder and wandb name; default :func:`run_name` (``mup-w256-lr0.01-s0``).
    if_exists: the run folder exists already: ``"suffix"`` (``name-1``, ...), ``"overwrite"``
        (delete it first, e.g. re-running a failed run of a resumed sweep) or ``"error"``.
    use_wandb: False (or env PARAMLAB_WANDB=0) for the local store only.
    project: wandb project (default ``$WANDB_PROJECT`` or ``"paramlab"``).
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
    ):
        if not experiment:
            raise ValueError("start_run needs experiment='<name>' (e.g. 'coord_check')")
        if if_exists not in ("suffix", "overwrite", "error"):
            raise ValueError(f"if_exists must be 'suffix', 'overwrite' or 'error', not {if_exists!r}")
        self.experiment = _safe_component(experiment)
        self.group = _safe_component(group if group is not None else default_group(self.experiment))
        self.config = to_jsonable(config)
        if not isinstance(self.config, dict):
            raise TypeError(f"config must be a dict (or a dataclass), got {type(config).__name__}")
        self.tags = [str(t) for t in tags]
        self._t0 = time.monotonic()
        self._summary: dict[str, Any] = {}
        self._last_step: int | None = None
        self._wandb_last_step: int | None = None
        self._history = None
        self.wandb_run = None
        self.status = "running"

        group_dir = Path(root) / self.experiment / self.group
        group_dir.mkdir(parents=True, exist_ok=True)
        self.path = self._make_run_dir(group_dir, _safe_component(name or run_name(self.config)), if_exists)
        self.name = self.path.name

        _write_json_atomic(self.path / "config.json", self.config)
        self.meta: dict[str, Any] = {
            "format": _FORMAT_VERSION,
            "experiment": self.experiment,
            "group": self.group,
            "name": self.name,
            "status": "running",
            "error": None,
            "started_at": _now_iso(),
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
            "git": dict(_code_git_info()),
            "wandb": {"enabled": False},
        }
        _write_json_atomic(self.path / "meta.json", self.meta)
        _write_json_atomic(self.path / "summary.json", {"status": "running"})
        # Line-per-call append, flushed each call: a crash loses at most the line being written.
        self._history = open(self.path / "history.jsonl", "a", encoding="utf-8")

        if wandb_enabled(use_wandb):
            self._start_wandb(project, _wandb_mode(wandb_mode), wandb_settings)
            _write_json_atomic(self.path / "meta.json", self.meta)

    # -- setup ---------------------------------------------------------------------------------

    @staticmethod
    def _make_run_dir(group_dir: Path, name: str, if_exists: str) -> Path:
        path = group_dir / name
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

    def _start_wandb(self, project: str | None, mode: str, settings: Mapping[str, Any] | None) -> None:
        info: dict[str, Any] = {"enabled": False, "mode": mode}
        self.meta["wandb"] = info
        try:
            import wandb
        except Exception as e:  # ImportError, or a broken install (protobuf mismatch etc.)
            info["error"] = f"import failed: {type(e).__name__}: {e}"
            _warn_once("wandb-import", f"paramlab.tracking: cannot import wandb ({e}); local store only", 5)
            return
        scheme = _flat_lookup(self.config, _NAME_KEYS["scheme"])
        info.update(
            project=project or os.environ.get("WANDB_PROJECT") or "paramlab",
            group=f"{self.experiment}-{self.group}",
            job_type=_fmt(scheme) if scheme is not None else self.experiment,
        )
        wb_config = dict(self.config)
        wb_config["paramlab_meta"] = {
            k: self.meta[k] for k in ("experiment", "group", "versions", "git")
        }
        try:
            # silent + console="off": no banner, no stdout capture (paramlab's stdout stays clean);
            # reinit="create_new": each paramlab Run owns its wandb run, sequential runs in one
            # process work and a user's own wandb run is never finished behind their back.
            wb_settings = wandb.Settings(**{"silent": True, "console": "off", **dict(settings or {})})
            self.wandb_run = wandb.init(
                project=info["project"],
                dir=str(self.path),
                name=self.name,
                group=info["group"],
                job_type=info["job_type"],
                tags=[t[:64] for t in [self.experiment, *self.tags]],
                config=wb_config,
                mode=mode,
                reinit="create_new",
                settings=wb_settings,
            )
        except Exception as e:
            info["error"] = f"init failed: {type(e).__name__}: {e}"
            _warn_once("wandb-init", f"paramlab.tracking: wandb.init failed ({e}); local store only", 5)
            self.wandb_run = None
            return
        info["enabled"] = True
        info["id"] = getattr(self.wandb_run, "id", None)
        try:
            info["dir"] = os.path.relpath(self.wandb_run.settings.sync_dir, self.path)
        except Exception:
            info["dir"] = None

    def _wandb_call(self, fn, *args, **kwargs) -> None:
        # Any wandb error mid-run (service died, disk full in its dir...) turns wandb off for this
        # run; the local store keeps going.
        if self.wandb_run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:
            self.meta["wandb"]["error"] = f"{type(e).__name__}: {e}"
            _warn_once("wandb-call", f"paramlab.tracking: wandb call failed ({e}); local store only")
            run, self.wandb_run = self.wandb_run, None
            try:
                run.finish(exit_code=1)
            except Exception:
                pass

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
            if k in _RESERVED_HISTORY_KEYS:
                raise ValueError(f"metric name {k!r} is reserved in history.jsonl; use e.g. 'train/{k}'")
            row[k] = to_jsonable(v)
        self._history.write(json.dumps(row, allow_nan=True) + "\n")
        self._history.flush()
        self._last_step = step if self._last_step is None else max(self._last_step, step)
        if self.wandb_run is not None:
            if self._wandb_last_step is not None and step < self._wandb_last_step:
                _warn_once(
                    "wandb-step",
                    "paramlab.tracking: a step lower than one already logged goes to the local "
                    "store only (wandb needs non-decreasing steps)",
                )
                return
            self._wandb_last_step = step
            self._wandb_call(self.wandb_run.log, {k: row[k] for k in metrics}, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the run summary: summary.json (atomic) and the wandb summary."""
        self._check_open()
        values = to_jsonable(dict(values))
        bad = [k for k in values if k in _RESERVED_SUMMARY_KEYS]
        if bad:
            raise ValueError(f"summary keys {bad} are reserved (set by finish)")
        self._summary.update(values)
        _write_json_atomic(self.path / "summary.json", {**self._summary, "status": self.status})
        if self.wandb_run is not None:
            self._wandb_call(self.wandb_run.summary.update, values)

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
        path = self.path / "tables" / _safe_relpath(name).with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(path, {"columns": columns, "data": data, "step": step})
        if self.wandb_run is not None:
            self._wandb_media(name, step, lambda wandb: wandb.Table(columns=columns, data=data))
        return path

    def log_image(
        self, name: str, image: str | Path | Any, *, step: int | None = None, caption: str | None = None
    ) -> Path:
        """Store an image as ``media/<name>.<ext>`` (a copy of the file at ``image``, or a PNG
        saved from a matplotlib figure) and log it to wandb as a ``wandb.Image``. Returns the path."""
        self._check_open()
        rel = _safe_relpath(name)
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
        if self.wandb_run is not None:
            self._wandb_media(name, step, lambda wandb: wandb.Image(str(dest), caption=caption))
        return dest

    def _wandb_media(self, name: str, step: int, make) -> None:
        import wandb

        if self._wandb_last_step is not None and step < self._wandb_last_step:
            step = self._wandb_last_step  # wandb would drop it; attach to the current row
        self._wandb_last_step = step
        try:
            obj = make(wandb)
        except Exception as e:  # e.g. an image format PIL cannot read: local copy is kept
            _warn_once("wandb-media", f"paramlab.tracking: wandb could not wrap {name!r} ({e})")
            return
        self._wandb_call(self.wandb_run.log, {name: obj}, step=step)

    # -- ending --------------------------------------------------------------------------------

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        """End the run: status ("finished", "diverged" or "failed") and error into meta.json and
        summary.json (atomic), history closed, wandb summary ``status`` set and wandb finished
        (exit code 1 for "failed", so wandb shows it failed; "diverged" is a normal outcome).
        A second call does nothing."""
        if status not in _FINAL_STATUSES:
            raise ValueError(f"status must be one of {_FINAL_STATUSES}, not {status!r}")
        if self.status != "running":
            return
        self.status = status
        if self._history is not None:
            self._history.close()
        self.meta.update(
            status=status,
            error=error,
            finished_at=_now_iso(),
            duration_s=round(time.monotonic() - self._t0, 3),
            last_step=self._last_step,
        )
        final = {**self._summary, "status": status}
        if error is not None:
            final["error"] = error
        _write_json_atomic(self.path / "summary.json", final)
        if self.wandb_run is not None:
            wb_final = {"status": status} if error is None else {"status": status, "error": error[-1000:]}
            self._wandb_call(self.wandb_run.summary.update, wb_final)
        if self.wandb_run is not None:
            run, self.wandb_run = self.wandb_run, None
            try:
                run.finish(exit_code=1 if status == "failed" else 0)
            except Exception as e:
                self.meta["wandb"]["error"] = f"finish failed: {type(e).__name__}: {e}"
                _warn_once("wandb-finish", f"paramlab.tracking: wandb finish failed ({e})")
        _write_json_atomic(self.path / "meta.json", self.meta)

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
