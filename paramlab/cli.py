"""The `paramlab` command."""

from __future__ import annotations

import argparse
import sys


def _demo(args):
    from .demo import run_demo

    run_demo(out=args.out, seeds=args.seeds)


def _schemes(args):
    from .schemes import PRESETS, get_scheme, schemes_table

    names = args.names or list(PRESETS)
    print(schemes_table(names))
    if args.verbose:
        for n in names:
            print()
            print(get_scheme(n).describe())


def _roles(args):
    from . import models
    from .parameterize import role_table

    if not hasattr(models, args.builder) or args.builder not in models.BUILDERS:
        raise ValueError(f"unknown builder {args.builder!r}: known are {', '.join(models.BUILDERS)}")
    model = models.BUILDERS[args.builder](**_builder_kwargs(args))
    print(role_table(model, args.optimizer))


def _builder_kwargs(args) -> dict:
    """--set key=value pairs, values parsed as int / float / bool when they look like one."""
    out = {"scheme": args.scheme, "width": args.width, "base_width": args.base_width}
    for kv in args.set:
        if "=" not in kv:
            raise SystemExit(f"--set expects key=value, got {kv!r}")
        k, v = kv.split("=", 1)
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                pass
        else:
            v = {"true": True, "false": False}.get(v.lower(), v)
        out[k] = v
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="paramlab", description="width parameterizations and feature-learning experiments")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="one-step feature movement vs width for every scheme (about a minute)")
    d.add_argument("--out", default="outputs/demo")
    d.add_argument("--seeds", type=int, default=3)
    d.set_defaults(fn=_demo)

    s = sub.add_parser("schemes", help="print the scheme tables with their invariants")
    s.add_argument("names", nargs="*")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(fn=_schemes)

    r = sub.add_parser("roles", help="print the role table of a builder config")
    r.add_argument("builder", nargs="?", default="mlp", help="builder name (mlp, ...)")
    r.add_argument("--scheme", default="mup")
    r.add_argument("--width", type=int, default=256)
    r.add_argument("--base-width", type=int, default=64)
    r.add_argument("--optimizer", default="adam")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="builder argument, e.g. --set d_in=40 --set d_out=10 --set depth=3")
    r.set_defaults(fn=_roles)

    args = p.parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, TypeError) as e:
        print(f"paramlab: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
