"""An experiment's answer as flat scalars: what its wandb summary run holds, under stable keys.

`headline(data)` walks the dict an experiment's summary is written as (summary.json: the verdicts
per scheme, baselines, ...) and returns

    headline/<path>   every number, e.g. ``headline/mup/shift_steps``, ``headline/ntk/gain/w1024``
    verdict/<path>    every yes/no verdict as 0 or 1, e.g. ``verdict/sp/passed``

The path is the keys joined by ``/`` with the top-level ``verdicts`` left out (it holds the
schemes); a list with one entry per width (per depth, per log2 lr) gets ``w<width>`` (``d<depth>``,
``lr<log2 lr>``) labels, any other list its indices. Text (fit statuses, failure lists) and the
table, figures and options are not scalars and are left out (the table and figures are logged as
media beside them).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["headline"]

_SKIP = ("title", "columns", "rows", "figures", "params")
# list labels: the size option that lists the axis, and the prefix of each label
_AXES = (("widths", "w"), ("depths", "d"), ("log2_lrs", "lr"), ("shots", "k"))


def _labels(n: int, params: Mapping) -> list[str]:
    for key, prefix in _AXES:
        values = params.get(key)
        if isinstance(values, list) and len(values) == n and len(set(map(str, values))) == n:
            return [f"{prefix}{v:g}" if isinstance(v, float) else f"{prefix}{v}" for v in values]
    return [str(i) for i in range(n)]


def headline(data: Mapping[str, Any]) -> dict[str, float]:
    """The flat ``headline/...`` and ``verdict/...`` scalars of an experiment's summary dict (see the module)."""
    params = data.get("params") if isinstance(data.get("params"), Mapping) else {}
    out: dict[str, float] = {}

    def walk(v: Any, path: list[str]) -> None:
        if isinstance(v, bool):
            out["verdict/" + "/".join(path)] = int(v)
        elif isinstance(v, (int, float)):
            out["headline/" + "/".join(path)] = float(v) if isinstance(v, float) or not math.isfinite(v) else v
        elif isinstance(v, Mapping):
            for k, x in v.items():
                walk(x, [*path, str(k)])
        elif isinstance(v, (list, tuple)):
            for label, x in zip(_labels(len(v), params), v):
                walk(x, [*path, label])

    for key, value in data.items():
        if key not in _SKIP:
            walk(value, [] if key == "verdicts" else [str(key)])
    return out
