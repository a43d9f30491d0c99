"""The `paramlab` command."""

from __future__ import annotations

import argparse
import sys


def _demo(args):
    from .demo import run_demo

    run_demo(out=args.out, seeds=args.seeds)


def _experiments_help() -> str:
    """The experiments with their first doc line and their quick / default times (`paramlab.timings`)."""
    from .experiments import NAMES, get
    from .timings import describe, load_times

    times = load_times()
    lines = ["usage: paramlab run NAME [--quick | --size SIZE] [options]   (options: paramlab run NAME -h)", "",
             "experiments (time on 2 CPU cores: quick / default):"]
    for n in NAMES:
        doc = get(n).doc.strip().split("\n")[0].split(":", 1)[-1].strip()
        lines.append(f"  {n:<20} {doc}")
        lines.append(f"  {'':<20} quick: {describe(n, 'quick', times)}; default: {describe(n, 'default', times)}")
    lines += ["", "NAME may also be spelt with hyphens (lr-transfer). Rerun with the same --group to resume."]
    return "\n".join(lines)


def _run(args, rest):
    from .experiments import get
    from .kit import command

    return command.main(get(args.experiment), rest)


def _sync(args):
    from .wandb_report import sync

    return sync(args.path, print_only=args.print_only)


def _report(args):
    from .wandb_report import build_report

    print(build_report(args.group_dir, project=args.wandb_project, entity=args.wandb_entity))


def _compare(args):
    from .compare import compare

    compare(args.paths, out=args.out, metrics=args.metric or None)


def _schemes(args):
    from .report import schemes_table
    from .schemes import PRESETS, UNIT_PRESETS, get_scheme

    names = args.names or [*PRESETS, *UNIT_PRESETS]  # u-mup too: it is a preset (in its own unit frame)
    print(schemes_table(names))
    unit = [n for n in names if get_scheme(n).unit]
    if unit:
        print(f"({', '.join(unit)}: exponents in each tensor's own fan-in, unit init and multipliers; docs/peers.md)")
    from .depth import depth_rules_table  # depth rules compose with every width scheme

    print()
    print(depth_rules_table())
    if args.verbose:
        for n in names:
            print()
            print(get_scheme(n).describe())


def _roles(args):
    from .keyvalue import parse_assignments
    from .models import BUILDERS
    from .parameterize import role_table

    if args.builder not in BUILDERS:
        raise ValueError(f"unknown builder {args.builder!r}: known are {', '.join(BUILDERS)}")
    # only what the user gave: every other argument keeps the builder's own default
    given = {"scheme": args.scheme, "width": args.width, "base_width": args.base_width}
    kwargs = {**{k: v for k, v in given.items() if v is not None}, **parse_assignments(args.set)}
    import inspect

    params = inspect.signature(BUILDERS[args.builder]).parameters.values()
    missing = [p.name for p in params if p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs]
    if missing:
        raise ValueError(f"{args.builder} needs {', '.join(missing)}: add " + " ".join(f"--set {m}=..." for m in missing)
                         + f" (e.g. paramlab roles {args.builder} --width {args.width} "
                         + " ".join(f"--set {m}=10" for m in missing) + ")")
    print(role_table(BUILDERS[args.builder](**kwargs), args.optimizer))


def _sweep(args):
    from .sweep import run_sweep

    report = run_sweep(
        args.spec, executor=args.executor, address=args.address, root=args.root, name=args.name,
        device=args.device, precision=args.precision, ensemble=args.ensemble, threads=args.threads,
        num_cpus=args.num_cpus, num_gpus=args.num_gpus, wandb=False if args.no_wandb else None,
        progress=not args.no_progress, dry_run=args.dry_run, yes=args.yes,
        wandb_project=args.wandb_project, wandb_entity=args.wandb_entity, tags=args.tags,
    )
    if args.dry_run:
        if report.unimported:
            print(f"runner {report.unimported!r} not imported: a spec's runner is code, and --dry-run runs none; "
                  "its options are checked when the sweep runs")
        for r in report.runs:
            print(f"{r['status']:<10} {r['name']}")
        print(f"{report.total} runs, {report.skipped} complete, {report.total - report.skipped} to run -> {report.path}")
        return 0
    print(report)
    from .io import read_json

    if any((read_json(r["path"] / "meta.json", {}) or {}).get("wandb", {}).get("mode") == "offline" for r in report.runs):
        print(f"wandb (offline): upload this group with: paramlab sync {report.path}")
    if not report.ok:
        for r in report.runs:
            if r["status"] == "failed":
                print(f"  failed: {r['path']} (see its meta.json; rerun the command to retry)", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    from .version import __version__

    p = argparse.ArgumentParser(prog="paramlab", description="width parameterizations and feature-learning experiments")
    p.add_argument("--version", action="version", version=f"paramlab {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="one-step feature movement vs width for every scheme (about 5-40 s)")
    d.add_argument("--out", default="outputs/demo")
    d.add_argument("--seeds", type=int, default=3)
    d.set_defaults(fn=_demo)

    s = sub.add_parser("schemes", help="print the scheme tables with their invariants")
    s.add_argument("names", nargs="*")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(fn=_schemes)

    r = sub.add_parser("roles", help="print the role table of a builder config")
    r.add_argument("builder", nargs="?", default="mlp", help="builder name (mlp, ...)")
    r.add_argument("--scheme", default=None, help="default: the builder's (mup)")
    r.add_argument("--width", type=int, default=256)
    r.add_argument("--base-width", type=int, default=None, help="default: the builder's (64)")
    r.add_argument("--optimizer", default="adam")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="builder argument, e.g. --set d_in=40 --set d_out=10 --set depth=3")
    r.set_defaults(fn=_roles)

    from .experiments import NAMES

    e = sub.add_parser("run", help="run an experiment: " + ", ".join(NAMES) + " (paramlab run -h lists them with times)",
                       add_help=False)
    # one spelling in the choices; lr-transfer is read as lr_transfer
    e.add_argument("experiment", nargs="?", choices=NAMES, type=lambda v: v.replace("-", "_"))
    e.set_defaults(fn=None)

    c = sub.add_parser("compare", help="redraw and compare runs from the local store or wandb offline folders")
    c.add_argument("paths", nargs="+", help="run, group or experiment folders (or wandb offline-run folders)")
    c.add_argument("--out", default=None, help="where to write the plots (default: <first path>/compare)")
    c.add_argument("--metric", action="append", default=[],
                   help="summary metric(s) to plot (default: all; an unknown one is an error listing the known ones)")
    c.set_defaults(fn=_compare)

    w = sub.add_parser("sweep", help="run or resume a grid of runs from a YAML/TOML spec (see paramlab.sweep)")
    w.add_argument("spec", help="sweep spec: .yaml, .yml or .toml")
    w.add_argument("--executor", choices=("local", "ray"), default="local")
    w.add_argument("--address", default=None,
                   help="Ray cluster: 'auto', 'host:6379' or 'ray://host:10001' (default: start a local instance)")
    w.add_argument("--root", default=None, help="local store root (default: the spec's root, else runs/)")
    w.add_argument("--name", default=None, help="sweep name = run group (default: the spec's name, else the file name)")
    w.add_argument("--device", default=None, help="device option of every run, e.g. cuda")
    w.add_argument("--precision", default=None, choices=("fp32", "bf16"), help="bf16: forward passes under autocast")
    w.add_argument("--ensemble", default=None, choices=("auto", "always", "never"),
                   help="stack runs of one width into one pass (default: the spec's, else auto)")
    w.add_argument("--threads", type=int, default=None, help="torch threads per run (local executor)")
    w.add_argument("--num-cpus", type=float, default=None, help="CPUs each Ray task asks for")
    w.add_argument("--num-gpus", type=float, default=None, help="GPUs (a fraction is fine) each Ray task asks for")
    w.add_argument("--no-wandb", action="store_true", help="local store only")
    w.add_argument("--no-progress", action="store_true")
    w.add_argument("--dry-run", action="store_true", help="check the spec and list the runs and their state")
    w.add_argument("--yes", action="store_true", help="run a grid larger than paramlab.spec.MAX_POINTS points")
    from .kit.command import add_wandb_options

    add_wandb_options(w)
    w.set_defaults(fn=_sweep)

    y = sub.add_parser("sync", help="upload a group's offline wandb runs (wandb sync of every run folder in it)")
    y.add_argument("path", help="a group folder (runs/<experiment>/<group>), a run folder or an experiment folder")
    y.add_argument("--print", dest="print_only", action="store_true", help="print the wandb sync command, run nothing")
    y.set_defaults(fn=_sync)

    rp = sub.add_parser("report", help="build the W&B Report of an experiment's group (--wandb)")
    rp.add_argument("group_dir", help="the group folder: runs/<experiment>/<group>")
    rp.add_argument("--wandb", action="store_true", required=True,
                    help="build a W&B Report (offline: its spec in GROUP_DIR/wandb_report.json; online: saved, URL printed)")
    rp.add_argument("--wandb-project", default=None, help="the project the runs went to (default: as `paramlab run`)")
    rp.add_argument("--wandb-entity", default=None, help="the entity (default: $WANDB_ENTITY)")
    rp.set_defaults(fn=_report)

    args, rest = p.parse_known_args(argv)
    import warnings

    show = warnings.showwarning
    warnings.showwarning = _one_line_warning  # a warning is one line naming what to do, not a file:line dump
    try:
        return _main(p, args, rest)
    except KeyboardInterrupt:  # Ctrl-C: no traceback; a sweep or experiment resumes where it stopped
        print("\nparamlab: interrupted" + ("; rerun the same command to resume: complete runs are kept"
                                           if args.cmd in ("run", "sweep") else ""), file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"paramlab: warning: {message}", file=file or sys.stderr)


def _main(p, args, rest) -> int:
    if args.cmd == "run":  # the experiment parses its own options
        if args.experiment is None:
            if rest and rest[0] not in ("-h", "--help"):
                print(_experiments_help(), file=sys.stderr)
                print(f"\nparamlab run: error: {rest[0]!r} is not an experiment", file=sys.stderr)
                return 2
            print(_experiments_help())
            return 0 if rest else 2
        try:
            _run(args, rest)
        except (ValueError, TypeError, RuntimeError, FileNotFoundError) as e:  # bad options; failed runs
            print(f"paramlab: error: {e}", file=sys.stderr)
            return 2
        except SystemExit as e:  # an interrupt or a storage error, already told in one line
            return e.code if isinstance(e.code, int) else 1
        return 0
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        rc = args.fn(args)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as e:
        if args.cmd == "sweep" and isinstance(e, OSError) and e.errno is not None:
            return _storage_error(e, args)
        print(f"paramlab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if args.cmd != "sweep":
            raise
        return _storage_error(e, args)
    except RuntimeError as e:
        if args.cmd != "sweep":
            raise
        print(f"paramlab: error: {e}", file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0


def _storage_error(e: OSError, args) -> int:
    from .kit.command import storage_error

    print("paramlab: error: " + storage_error(e, f"under {args.root}" if args.root else "in the sweep's store"),
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
