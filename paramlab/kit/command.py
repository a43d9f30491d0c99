"""The command line of an experiment: ``paramlab run NAME [options]`` (and ``python experiments/NAME.py``)."""

from __future__ import annotations

import argparse
import sys

from ..keyvalue import parse_assignments
from ..runners import SpecError
from .experiment import Experiment

# errno name -> what to do about it (the runs already complete are kept either way)
_FIXES = {"ENOSPC": "the disk is full: free space", "EDQUOT": "the disk quota is used up: free space",
          "EFBIG": "a file outgrew the file-size limit (ulimit -f): raise it",
          "EACCES": "no permission to write there: fix the permissions or choose another --root",
          "EPERM": "no permission to write there: fix the permissions or choose another --root",
          "EROFS": "the filesystem is read-only: choose another --root",
          "ENOTDIR": "a part of the path is a file, not a folder: check --root",
          "ENAMETOOLONG": "a file name is too long: give a shorter --group / --name or experiment name"}


def storage_error(e: OSError, where: str) -> str:
    """One line for an OS error while a sweep reads or writes its store: what, the path, the fix, and
    that complete runs are kept (each run's record is written atomically) and a rerun resumes."""
    import errno as E

    code = E.errorcode.get(e.errno, "") if e.errno is not None else ""
    path = e.filename if e.filename is not None else where
    path = f"{path} -> {e.filename2}" if getattr(e, "filename2", None) else path
    what = e.strerror or str(e) or type(e).__name__
    fix = _FIXES.get(code, "fix the cause")
    return (f"{what}{f' [{code}]' if code else ''}: {path}. {fix[0].upper() + fix[1:]}, then rerun the same "
            "command: complete runs are kept and the rest run (nothing half-written is kept)")


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
    axes = {"schemes": a.schemes, "widths": a.widths, "seeds": a.seeds}
    for key, flag in axes.items():  # --set schemes=... is the same option as --schemes
        if key in extra:
            if flag is not None:
                raise SpecError(f"--{key} and --set {key}= both given: give one")
            axes[key] = extra.pop(key)
    try:
        return experiment.run(a.size, a.root, a.use_wandb, a.progress, a.group, a.threads, executor=a.executor,
                              address=a.address, wandb_project=a.wandb_project, wandb_entity=a.wandb_entity,
                              tags=a.tags, **axes, **extra)
    except KeyboardInterrupt:  # Ctrl-C: a message, not a traceback (also for python experiments/NAME.py)
        print(f"\n{experiment.name}: interrupted; rerun with the same --group to resume: complete runs are kept",
              file=sys.stderr)
        raise SystemExit(130) from None
    except OSError as e:  # disk full, read-only, a path that is a file, a name too long: one line
        if isinstance(e, FileNotFoundError) and e.errno is None:
            raise  # paramlab's own "no such ..." message
        print(f"{experiment.name}: error: " + storage_error(e, f"under {a.root}"), file=sys.stderr)
        raise SystemExit(1) from None
