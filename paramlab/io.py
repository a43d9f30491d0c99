"""Files written whole or not at all, and JSON: the leaf every writer of the package stands on (the
store, checkpoints, dataset caches). It imports nothing of paramlab."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import enum
import json
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

__all__ = ["atomic_write", "read_json", "to_jsonable", "write_json_atomic"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs):
    """Open a temp file beside `path` for writing; when the block ends it is fsynced and moved onto
    `path` with os.replace (on an error it is removed and `path` left as it was).

    Readers (plots of a live sweep, a sweep resumed after a crash, two processes filling one cache)
    see the old file or the new one, never half of one. The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """`obj` as indented JSON at `path`, atomically (see `atomic_write`); NaN/inf kept."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, allow_nan=True)
        f.write("\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON at `path`, or `default` if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default



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
