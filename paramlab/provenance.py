"""Provenance: which code and which libraries produced a run (recorded in every run's meta.json)."""

from __future__ import annotations

import functools
import importlib.util
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .version import __version__


def _dist_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of python, torch, numpy, paramlab, wandb and mup (``None`` when not installed),
    and torch's CUDA version.

    Does not import wandb or mup (installed package metadata is enough).
    """
    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod in ("torch", "numpy"):
        m = sys.modules.get(mod)
        out[mod] = getattr(m, "__version__", None) if m is not None else _dist_version(mod)
    out["paramlab"] = __version__
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
def code_git_info() -> dict[str, Any]:
    """`git_info` of the code that runs: paramlab's source tree (an editable install or a checkout).

    An installed copy under site-packages would report whatever repository the venv sits in, so the
    cwd (the experiment's repository) is used then. Cached: the code cannot change under a process.
    """
    pkg = Path(__file__).resolve().parent
    if "site-packages" not in pkg.parts and "dist-packages" not in pkg.parts:
        info = git_info(pkg)
        if info["root"] is not None:
            return info
    return git_info(Path.cwd())
