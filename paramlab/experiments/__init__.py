"""The experiments: each identical across schemes (same data, model family, optimizer, seeds).

Each module has SIZES ('tiny' for tests, 'quick' ~1 min, 'default' <= 15 min on 2 CPU cores),
run(size, root, use_wandb, progress, group, threads, **overrides) -> summary, and main(argv).
"""

import importlib

NAMES = ("coord_check", "feature_learning", "transfer", "lr_transfer", "kernel_limit")


def register_runners() -> None:
    """Make the per-run part of each experiment a `paramlab sweep` runner (name = experiment name)."""
    from .common import as_sweep_runner

    for name in ("transfer", "feature_learning", "kernel_limit"):
        as_sweep_runner(get(name))
    as_sweep_runner(get("lr_transfer"), log2_lr="log2_lrs")


def get(name: str):
    """The experiment module by name."""
    key = name.replace("-", "_")
    if key not in NAMES:
        raise ValueError(f"unknown experiment {name!r}: known are {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{key}")
