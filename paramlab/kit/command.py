"""The command line of an experiment: ``paramlab run NAME [options]`` (and ``python experiments/NAME.py``)."""

from __future__ import annotations

import argparse
import sys

from ..keyvalue import parse_assignments
from .experiment import Experiment


def add_wandb_options(p: argparse.ArgumentParser) -> None:
    """--wandb-project, --wandb-entity, --tags (shared by `paramlab run` and `paramlab sweep`)."""
    p.add_argument("--wandb-project", default=None,
                   help="wandb project (default: $WANDB_PROJECT, else paramlab-<experiment>, e.g. paramlab-lr-transfer)")
    p.add_argument("--wandb-entity", default=None, help="wandb entity (default: $WANDB_ENTITY, else your account's)")
    p.add_argument("--tags", nargs="+", default=None, metavar="TAG", help="extra wandb tags of every run")


def main(experiment: Experiment, argv=None) -> dict:
    """Parse `argv` and run `experiment`; returns its summary."""
    sizes = list(experiment.sizes)
    p = argparse.ArgumentParser(
        prog=f"paramlab run {experiment.name}", description=experiment.doc.split("\n")[0],
        epilog=f"sizes: {', '.join(sizes)}. --set takes any of: " + ", ".join(sorted(experiment.sizes["default"]))
        + ". Rerun with the same --group to resume: complete runs are kept.")
    from ..timings import describe

    p.add_argument("--size", choices=sizes, default="default",
                   help="grid size; time on 2 CPU cores: quick " + describe(experiment.name, "quick") + ", default "
                        + describe(experiment.name, "default") + " (tiny: seconds, the tests' size)")
    p.add_argument("--quick", dest="size", action="store_const", const="quick", help="same as --size quick")
    p.add_argument("--root", default="runs", help="local store root (default: runs/)")
    p.add_argument("--group", default=None, help="group name (default: a new timestamp id); an existing one resumes")
    p.add_argument("--no-wandb", dest="use_wandb", action="store_false", help="local store only")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--schemes", nargs="+", default=None)
    p.add_argument("--widths", nargs="+", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (seeds 0..n-1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default 1: small models on 2 cores)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other option of the size")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="as `paramlab sweep`")
    p.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    add_wandb_options(p)
    a = p.parse_args(argv)
    extra = parse_assignments(a.set)
    try:
        return experiment.run(a.size, a.root, a.use_wandb, a.progress, a.group, a.threads, executor=a.executor,
                              address=a.address, schemes=a.schemes, widths=a.widths, seeds=a.seeds,
                              wandb_project=a.wandb_project, wandb_entity=a.wandb_entity, tags=a.tags, **extra)
    except KeyboardInterrupt:  # Ctrl-C: a message, not a traceback (also for python experiments/NAME.py)
        print(f"\n{experiment.name}: interrupted; rerun with the same --group to resume: complete runs are kept",
              file=sys.stderr)
        raise SystemExit(130) from None
