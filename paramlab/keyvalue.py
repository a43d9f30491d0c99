"""``KEY=VALUE`` options from the command line (``--set``), parsed one way everywhere.

Values become Python values when they look like one: ``3`` -> 3, ``0.5`` -> 0.5, ``1e-3`` -> 0.001,
``true`` / ``false`` -> True / False, ``null`` / ``none`` -> None, ``64,128`` -> [64, 128] (a comma
makes a list; ``64,`` is a one-element list), anything else a string.
"""

from __future__ import annotations

from typing import Any, Iterable


def parse_value(text: str) -> Any:
    """One value (see the module docstring)."""
    if "," in text:
        return [parse_value(x) for x in text.split(",") if x]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None, "none": None}.get(text.lower(), text)


def parse_assignments(pairs: Iterable[str]) -> dict[str, Any]:
    """``["a=1", "b=x,y"]`` -> ``{"a": 1, "b": ["x", "y"]}``; raises ValueError naming a malformed pair."""
    out: dict[str, Any] = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {kv!r}")
        out[key.strip()] = parse_value(value)
    return out
