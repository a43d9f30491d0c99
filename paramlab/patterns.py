"""Tables keyed by module or parameter names and fnmatch patterns (``blocks.*.attn``): one lookup rule
for every option that takes such a table (attention head dims, init stds, roles, per-layer lrs)."""

from __future__ import annotations

import fnmatch
from typing import Mapping

__all__ = ["match_pattern"]


def match_pattern(name: str, table: Mapping | None):
    """Value for `name` in a dict keyed by exact names or fnmatch patterns (exact names win, then the
    first matching pattern in the table's order); None if nothing matches."""
    if not table:
        return None
    if name in table:
        return table[name]
    for pat, v in table.items():
        if fnmatch.fnmatchcase(name, pat):
            return v
    return None
