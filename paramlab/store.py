"""The local store: its layout, safe names and run names (its files are written whole, `paramlab.io`).

Every run paramlab records (a sweep's grid point, an experiment's run) lives in one folder::

    <root>/<experiment>/<group>/<run>/
        config.json     the fully resolved config (JSON; written atomically at start)
        meta.json       status, error + traceback, start/end time, duration, host, argv, library
                        versions, git SHA + dirty flag, wandb id/mode/dir, tags, sweep info
                        (written atomically at start and again, last, at finish)
        summary.json    final metrics plus ``status`` (and ``error``); rewritten atomically
        history.jsonl   one JSON object per logged step: {"step", "time", <metric>: value}; flushed per
                        line, so a crashed run keeps what it logged. NaN/inf are written as the JSON
                        extensions NaN/Infinity, which Python's json module reads back.
        tables/<name>.json   {"columns": [...], "data": [[...]], "step": s}
        media/<name>.<ext>   images
        wandb/offline-run-<YYYYMMDD_HHMMSS>-<id>/   wandb's own folder (when wandb is on)

and a group folder holds, beside its runs, what belongs to the group as a whole: ``sweep.json`` (the
spec a sweep ran), ``.sweep.lock``, and an experiment's summary, a record of its own kind (not a run:
run discovery skips its folder) in ``summary/`` (`SUMMARY_DIR`): ``summary.md``, ``summary.json``,
the figures and, with wandb on, ``wandb/`` (the table and figures as wandb media).

``group`` is one invocation (one wandb group). A sweep's run folder is `run_dir_name(config)`:
`run_name` (``mup-w256-lr0.01-s0``), the other varying options, and a hash of the full config, so
the same grid point always has the same folder; `run_state` tells whether it is complete.

Writers: `paramlab.tracking` (one run), `paramlab.sweep` (a grid). Readers: `paramlab.records`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .io import read_json

__all__ = [
    "COMPLETE_STATUSES", "FINAL_STATUSES", "FORMAT_VERSION", "NAME_KEYS", "NOT_RUN_DIRS", "RESERVED_HISTORY_KEYS",
    "RESERVED_SUMMARY_KEYS", "STATUSES", "SUMMARY_DIR", "check_name", "config_hash", "default_group", "format_value", "lookup",
    "new_group_id", "now_iso", "run_dir_name", "run_name", "run_state", "safe_component", "safe_relpath",
]

STATUSES = ("running", "finished", "diverged", "failed")
FINAL_STATUSES = STATUSES[1:]
COMPLETE_STATUSES = ("finished", "diverged")  # outcomes: a resumed sweep does not run these again
RESERVED_HISTORY_KEYS = ("step", "time")
RESERVED_SUMMARY_KEYS = ("status", "error")
SUMMARY_DIR = "summary"  # a group's summary (`paramlab.kit.summary`): its own record kind, never a run
# Folders that never hold run records: pruned when discovering runs.
NOT_RUN_DIRS = frozenset({"wandb", "media", "tables", "__pycache__", SUMMARY_DIR})
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# files


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def safe_component(text: str) -> str:
    """One path component: letters, digits and ``._=+-``; never empty, '.' or '..'."""
    out = re.sub(r"[^A-Za-z0-9._=+-]", "_", str(text)).strip()
    return "_" if out in ("", ".", "..") else out


def check_name(text, what: str = "group") -> str:
    """`text` if it is usable as one store folder name as it stands (see `safe_component`), else ValueError.

    A group or experiment name given by the user is refused rather than rewritten: ``../../x`` would
    be a folder outside the store, ``a/b`` a group split in two, and a silently renamed folder is one
    the user does not find (nor resumes).
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"{what} name must be a non-empty string, got {text!r}")
    if safe_component(text) != text or text.startswith("."):
        raise ValueError(f"{what} name {text!r} is not one folder name: use letters, digits and ._=+- only "
                         f"(no '/', no '..', not starting with '.'), e.g. {safe_component(text).lstrip('.') or 'g1'!r}")
    return text


def safe_relpath(name: str) -> Path:
    """A slash-namespaced name (``feat/h2/kernel``) as a relative path that stays inside its folder."""
    return Path(*[safe_component(p) for p in str(name).split("/") if p != ""] or ["_"])


# ----------------------------------------------------------------------------------------------
# names and groups

# run-name part -> config keys that may hold it (first found wins)
NAME_KEYS = {
    "scheme": ("scheme", "parameterization", "param"),
    "width": ("width", "hidden_width", "d_model", "n"),
    "lr": ("lr", "learning_rate", "eta"),
    "seed": ("seed",),
}


def lookup(config: Mapping, keys: tuple[str, ...]) -> Any:
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
            found = lookup(v, keys)
            if found is not None:
                return found
    return None


def format_value(v: Any) -> str:
    """A config value as it appears in a name: floats with %g, a scheme table as 'custom'."""
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
        v = lookup(config, NAME_KEYS[key])
        if v is not None:
            parts.append(prefix + format_value(v))
    return safe_component("-".join(parts)) if parts else "run"


def config_hash(config: Mapping) -> str:
    """8 hex digits of the SHA-1 of the config's canonical JSON."""
    blob = json.dumps(config, sort_keys=True, allow_nan=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def run_dir_name(config: Mapping, varying: Sequence[str] = ()) -> str:
    """The deterministic run folder name of a config: `run_name` (``mup-w256-lr0.01-s0``), then
    ``key=value`` for the other keys in `varying`, then 8 hex digits of the full config's hash."""
    parts = [run_name(config)]
    standard = {k for keys in NAME_KEYS.values() for k in keys}
    for k in varying:
        if k in standard or k not in config:
            continue
        v = config[k]
        text = json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, (dict, list)) else format_value(v)
        parts.append(f"{k}={text}")
    readable = safe_component("-".join(parts))[:120]
    return f"{readable}-{config_hash(config)}"


def run_state(path: str | os.PathLike, config: Mapping) -> str:
    """'complete' (finished or diverged, with this config), 'absent', or 'incomplete' (anything else:
    cut off while running, failed, or recorded with another config)."""
    path = Path(path)
    if not path.exists():
        return "absent"
    meta = read_json(path / "meta.json")
    stored = read_json(path / "config.json")
    if not isinstance(meta, dict) or meta.get("status") not in COMPLETE_STATUSES:
        return "incomplete"
    if json.dumps(stored, sort_keys=True) != json.dumps(config, sort_keys=True):
        return "incomplete"
    return "complete"


def new_group_id() -> str:
    """A fresh, unique, sortable group id: ``YYYYMMDD-HHMMSS-<4 hex>`` (local time)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


_DEFAULT_GROUPS: dict[str, str] = {}  # experiment -> this process's group


def default_group(experiment: str) -> str:
    """The group used when none is given: ``$PARAMLAB_GROUP`` if set, else one id per process and
    experiment (made on first use), so one invocation is one group.

    A sweep that runs its runs in other processes should pass ``group=`` (or set PARAMLAB_GROUP).
    """
    env = os.environ.get("PARAMLAB_GROUP")
    if env:
        return env
    if experiment not in _DEFAULT_GROUPS:
        _DEFAULT_GROUPS[experiment] = new_group_id()
    return _DEFAULT_GROUPS[experiment]
