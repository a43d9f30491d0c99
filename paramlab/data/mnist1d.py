"""MNIST-1D (Greydanus 2020, "Scaling down deep learning", arXiv 2011.14439): 40-dim, 10 classes.

Generated locally by ``mnist1d.data.make_dataset`` (never ``get_dataset``, which downloads) and
cached as ``.npz``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..io import atomic_write
from .task import Task, check_classes, check_pos, classification_task, select_classes, standardize_inputs

_MNIST1D_CACHE_FORMAT = 2  # 2: the arrays' sha256 stored and checked


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The data cache directory: ``path`` if given, else ``$PARAMLAB_CACHE``, else
    ``~/.cache/paramlab``. Not created here."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("PARAMLAB_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "paramlab"


def _mnist1d_version() -> str:
    try:
        from importlib.metadata import version

        return version("mnist1d")
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


def _mnist1d_args(num_samples: int, train_split: float, seed: int, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The generation arguments: mnist1d defaults updated with ours; the download url removed."""
    from mnist1d.data import get_dataset_args

    args = dict(get_dataset_args(as_dict=True))
    unknown = sorted(set(overrides) - set(args) - {"url"})
    if unknown:
        raise ValueError(f"unknown mnist1d generation args {unknown}; known: {sorted(set(args) - {'url'})}")
    args.update(overrides)
    args.update(num_samples=int(num_samples), train_split=float(train_split), seed=int(seed))
    args.pop("url", None)
    return args


def _cache_key(args: Mapping[str, Any]) -> str:
    blob = json.dumps(
        {"args": dict(args), "mnist1d": _mnist1d_version(), "format": _MNIST1D_CACHE_FORMAT},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _generate_mnist1d(args: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` (never ``get_dataset``, which downloads).

    make_dataset calls ``random.seed``/``np.random.seed``: the global RNG states are restored after.
    """
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        ds = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": np.asarray(ds["x"], dtype=np.float32),  # (n_train, 40)
        "y": np.asarray(ds["y"], dtype=np.int64),  # (n_train,)
        "x_test": np.asarray(ds["x_test"], dtype=np.float32),  # (n_test, 40)
        "y_test": np.asarray(ds["y_test"], dtype=np.int64),  # (n_test,)
    }


def mnist1d_arrays(
    num_samples: int,
    train_split: float,
    seed: int,
    cache: str | os.PathLike | None,
    use_cache: bool,
    overrides: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Raw mnist1d arrays, from the cache when present; returns (arrays, info)."""
    check_pos(num_samples=num_samples)
    if num_samples < 10:
        raise ValueError(f"mnist1d needs num_samples >= 10 (one per class), got {num_samples}")
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"train_split must be in (0, 1), got {train_split}")
    n_kept = (num_samples // 10) * 10
    n_tr = int(n_kept * train_split)
    if n_tr == 0 or n_tr == n_kept:
        raise ValueError(f"num_samples={num_samples}, train_split={train_split} leaves an empty train or test split")
    args = _mnist1d_args(num_samples, train_split, seed, overrides)
    key = _cache_key(args)
    path = cache_dir(cache) / f"mnist1d_{key}.npz"
    info: dict[str, Any] = {"cache_path": str(path), "cache_hit": False, "gen_args": args}
    names = ("x", "y", "x_test", "y_test")
    args_json = json.dumps(args, sort_keys=True, default=str)
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {n: z[n] for n in names}
                stored_args, stored_digest = str(z["args_json"]), str(z["sha256"])
        except Exception as e:  # corrupt/foreign file: regenerate and overwrite
            warnings.warn(f"ignoring unreadable mnist1d cache {path} ({type(e).__name__}: {e}): regenerated")
        else:
            why = _cache_mismatch(arrays, args, stored_args, args_json, stored_digest, n_kept - n_tr, n_tr)
            if why is None:
                info["cache_hit"] = True
                return arrays, info
            warnings.warn(f"mnist1d cache {path} does not match its arguments ({why}): regenerated")
    arrays = _generate_mnist1d(args)
    if use_cache:
        try:
            with atomic_write(path, "wb") as f:  # readers see no file or a whole one
                np.savez(f, **arrays, args_json=np.array(args_json), sha256=np.array(_digest(arrays)))
        except OSError as e:
            warnings.warn(f"could not write mnist1d cache {path}: {e}")
    return arrays, info


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for n in ("x", "y", "x_test", "y_test"):
        a = np.ascontiguousarray(arrays[n])
        h.update(f"{n}{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _cache_mismatch(arrays, args, stored_args: str, args_json: str, digest: str, n_te: int, n_tr: int) -> str | None:
    """Why cached arrays are not the ones `args` generate (None if they are): the stored args, the shapes
    (train / test rows from num_samples and train_split, final_seq_length columns), dtypes, the labels
    (0..9) and the arrays' sha256 (written beside them) must all agree."""
    if stored_args != args_json:
        return "it was written for other generation args"
    length = int(args.get("final_seq_length", 40))
    want = {"x": ((n_tr, length), np.float32), "y": ((n_tr,), np.int64), "x_test": ((n_te, length), np.float32),
            "y_test": ((n_te,), np.int64)}
    for n, (shape, dtype) in want.items():
        if arrays[n].shape != shape or arrays[n].dtype != dtype:
            return f"{n} is {arrays[n].dtype} {arrays[n].shape}, expected {np.dtype(dtype)} {shape}"
    for n in ("y", "y_test"):
        if arrays[n].size and (arrays[n].min() < 0 or arrays[n].max() > 9):
            return f"{n} has labels outside 0..9"
    if _digest(arrays) != digest:
        return "its arrays' sha256 differs from the one stored with them (changed after it was written)"
    return None


def mnist1d(
    num_samples: int = 5000,
    train_split: float = 0.8,
    seed: int = 42,
    classes: Sequence[int] | None = None,
    standardize: str = "feature",
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
    **gen_args: Any,
) -> Task:
    """MNIST-1D (Greydanus 2020, arXiv 2011.14439): 1-d signals of length 40, 10 classes.

    Generated locally by ``mnist1d.data.make_dataset(get_dataset_args())`` with ``num_samples``,
    ``train_split`` and ``seed`` (default 42, the canonical dataset: 4000 train / 1000 test) and any
    other generation arg in ``gen_args`` (e.g. ``shuffle_seq=True``, ``iid_noise_scale=0.05``).
    ``get_dataset`` (which downloads) is never used. make_dataset keeps ``num_samples // 10`` per
    class and splits after a seeded shuffle, so class counts are only roughly balanced.

    The generated arrays are cached as ``<cache>/mnist1d_<hash>.npz`` keyed by the generation args
    and the mnist1d version (cache dir: ``cache`` argument, else ``$PARAMLAB_CACHE``, else
    ``~/.cache/paramlab``), written atomically (temp file + ``os.replace``). A cache file is used
    only if its stored args, shapes, dtypes, labels and sha256 match; otherwise it is regenerated with
    a warning (a tampered or foreign file is never used silently).

    Args:
        classes: keep only these classes; labels are remapped to ``0..len(classes)-1`` in the given
            order (``meta["classes"]`` keeps the originals).
        standardize: "feature" (per-coordinate, train statistics; default), "global" or "none"
            (make_dataset already centers and scales all signals by one global mean/std).

    Returns:
        classification Task, x: (n, 40) float32, y: (n,) int64.
    """
    cl = check_classes(classes, 10)
    arrays, info = mnist1d_arrays(num_samples, train_split, seed, cache, use_cache, gen_args)
    x_tr, y_tr = select_classes(arrays["x"], arrays["y"], cl)
    x_te, y_te = select_classes(arrays["x_test"], arrays["y_test"], cl)
    x_tr, x_te = standardize_inputs(x_tr, x_te, standardize)
    meta = {"classes": cl, "seed": seed, "standardize": standardize, "cache_path": info["cache_path"],
            "cache_hit": info["cache_hit"], "gen_args": info["gen_args"]}
    return classification_task("mnist1d", x_tr, y_tr, x_te, y_te, len(cl), meta)

