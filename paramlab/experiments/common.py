"""What every experiment shares: sizes, the run loop (one tracked run per grid point), the closing
summary (table, plots, a wandb summary run), and the command-line options."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from ..report import markdown_table
from ..tracking import default_group, start_run, to_jsonable

SIZES = ("tiny", "quick", "default")


@dataclass
class Context:
    """Where an experiment invocation writes: root/<experiment>/<group>/ (one wandb group)."""

    experiment: str
    root: Path = Path("runs")
    group: str | None = None
    use_wandb: bool = True
    progress: bool = True
    results: list = field(default_factory=list)

    def __post_init__(self):
        self.root = Path(self.root)
        self.group = self.group or default_group(self.experiment)

    @property
    def out_dir(self) -> Path:
        d = self.root / self.experiment / self.group
        d.mkdir(parents=True, exist_ok=True)
        return d


def grid(**axes: Iterable) -> list[dict]:
    """All combinations of the given axes, as config dicts, in a stable order."""
    keys = list(axes)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(list(axes[k]) for k in keys))]


def setup(module, size: str, root, use_wandb: bool, progress: bool, group, threads, overrides) -> tuple[dict, Context]:
    """Resolve an experiment's size with overrides, set torch threads, and open its Context."""
    p = resolve(module.SIZES, size, overrides)
    set_threads(threads)
    return p, Context(module.NAME, root, group, use_wandb, progress)


def run_points(ctx: Context, p: dict, fn, batch=None, **extra_axes: str) -> list[tuple[dict, dict]]:
    """run_grid over scheme x width x (extra axes) x seed; every other option of `p` is fixed.

    extra_axes: config key -> the option of `p` that lists its values (e.g. log2_lr="log2_lrs").
    batch: see `run_grid`.
    """
    listed = {"schemes", "widths", "seeds", *extra_axes.values()}
    fixed = {k: v for k, v in p.items() if k not in listed}
    axes = {"scheme": p["schemes"], "width": p["widths"], **{k: p[v] for k, v in extra_axes.items()},
            "seed": range(p["seeds"])}
    return run_grid(ctx, [{**fixed, **c} for c in grid(**axes)], fn, batch=batch)


def by_width(results, schemes, widths, key: str, **where) -> dict:
    """scheme -> array (n_widths, n_repeats) of summary `key` (nan where missing), filtered by `where`."""
    import numpy as np

    def pick(c, r, s, w):
        return c["scheme"] == s and c["width"] == w and all(c.get(k) == v for k, v in where.items())

    return {s: np.array([[r.get(key, np.nan) for c, r in results if pick(c, r, s, w)] for w in widths], dtype=float)
            for s in schemes}


MAX_BATCH = 16  # configs run together in one batch at most (a stacked ensemble holds them all in memory)


@dataclass(frozen=True)
class Batch:
    """How an experiment runs several grid points together (e.g. K learning rates as one stacked ensemble).

    key(config) -> hashable: configs with equal keys may run together.
    run(configs, runs) -> [summary]: one summary per config; ``runs[i].log`` records config i's history.
    pays(config) -> bool: whether batching this config pays (else it runs alone); default always.
    The same three serve `paramlab sweep` (`as_sweep_runner`), where ``ensemble: auto`` asks `pays`.
    """

    key: Callable[[dict], object]
    run: Callable[[list, list], list]
    pays: Callable[[dict], bool] = lambda config: True


def _units(configs: list[dict], batch: Batch | None) -> list[list[int]]:
    """Config indices in run order: configs sharing a batch key together (at most MAX_BATCH), else alone."""
    if batch is None:
        return [[i] for i in range(len(configs))]
    units, open_unit = [], {}
    for i, cfg in enumerate(configs):
        if not batch.pays(cfg):
            units.append([i])
            continue
        k = batch.key(cfg)
        if k not in open_unit or len(open_unit[k]) >= MAX_BATCH:
            open_unit[k] = []
            units.append(open_unit[k])
        open_unit[k].append(i)
    return units


def run_grid(ctx: Context, configs: list[dict], fn: Callable[[dict, object], dict], desc: str = "",
             batch: Batch | None = None) -> list[tuple[dict, dict]]:
    """Run `fn(config, run) -> summary` for every config, each recorded as one tracked run.

    `fn` may call `run.log(metrics, step)`; a summary with `diverged: 1` marks the run diverged.
    With `batch`, configs that share its key run together through `batch.run` (still one tracked run
    each, opened side by side). Returns [(config, summary)] in config order and keeps them on
    `ctx.results`.
    """
    from tqdm.auto import tqdm

    configs = [{"experiment": ctx.experiment, **cfg} for cfg in configs]
    summaries: list[dict | None] = [None] * len(configs)
    with tqdm(total=len(configs), desc=desc or ctx.experiment, disable=not ctx.progress) as bar:
        for unit in _units(configs, batch):
            cfgs = [configs[i] for i in unit]
            with contextlib.ExitStack() as stack:  # a failing unit marks each of its runs failed
                runs = [stack.enter_context(start_run(c, experiment=ctx.experiment, group=ctx.group, root=ctx.root,
                                                      use_wandb=ctx.use_wandb)) for c in cfgs]
                outs = [fn(cfgs[0], runs[0])] if len(unit) == 1 else batch.run(cfgs, runs)
                for i, run, summary in zip(unit, runs, outs):
                    run.summary(summary)
                    if summary.get("diverged"):
                        run.finish("diverged")
                    summaries[i] = summary
            bar.update(len(unit))
    ctx.results.extend(zip(configs, summaries))
    return ctx.results


def finish(ctx: Context, title: str, columns, rows, figures: Mapping[str, Path], extra: Mapping | None = None,
           notes: str = "") -> dict:
    """Print and store the summary table, list the figures, and log both to a wandb 'summary' run."""
    table = markdown_table(columns, rows)
    out = ctx.out_dir
    md = [f"# {title}", "", notes, "", table, ""] + [f"![{k}]({Path(p).name})" for k, p in figures.items()]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    summary = {"title": title, "columns": list(columns), "rows": to_jsonable(rows), "figures": {k: str(p) for k, p in figures.items()},
               **to_jsonable(dict(extra or {}))}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "summary.json")
    if ctx.use_wandb:
        with start_run({"experiment": ctx.experiment, "kind": "summary"}, experiment=ctx.experiment, group=ctx.group,
                       root=out, name="summary", use_wandb=True) as run:
            run.log_table("summary", list(columns), [list(map(_cell, r)) for r in rows])
            for k, p in figures.items():
                run.log_image(k, p)
    print(f"\n{title}\n{notes}\n{table}" if notes else f"\n{title}\n{table}")
    for k, p in figures.items():
        print(f"plot ({k}): {p}")
    print(f"records: {out}")
    return summary


def _cell(v):
    return v if isinstance(v, (int, float, str)) or v is None else str(v)


def _parse_value(v: str):
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, '64,128' -> [64, 128], else the string."""
    if "," in v:
        return [_parse_value(x) for x in v.split(",") if x]
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def cli_main(module, argv=None) -> dict:
    """Command line of an experiment module (its NAME, SIZES, run and docstring)."""
    sizes = list(module.SIZES)
    p = argparse.ArgumentParser(prog=f"paramlab run {module.NAME}", description=module.__doc__.split("\n")[0],
                                epilog=f"sizes: {', '.join(sizes)}. --set takes any of: "
                                       + ", ".join(sorted(module.SIZES["default"])))
    p.add_argument("--size", choices=sizes, default="default", help="grid size (quick: about a minute on 2 CPU cores)")
    p.add_argument("--quick", dest="size", action="store_const", const="quick", help="same as --size quick")
    p.add_argument("--root", default="runs", help="local store root (default: runs/)")
    p.add_argument("--group", default=None, help="group name (default: a timestamp id)")
    p.add_argument("--no-wandb", dest="use_wandb", action="store_false", help="local store only")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--schemes", nargs="+", default=None)
    p.add_argument("--widths", nargs="+", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1: small models on 2 cores)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other option of the size")
    a = p.parse_args(argv)
    extra = {}
    for kv in a.set:
        if "=" not in kv:
            p.error(f"--set expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        extra[k] = _parse_value(v)
    return module.run(a.size, a.root, a.use_wandb, a.progress, a.group, a.threads, schemes=a.schemes, widths=a.widths,
                      seeds=a.seeds, **extra)


def resolve(sizes: Mapping[str, dict], size: str, overrides: Mapping) -> dict:
    """The size's parameters with non-None overrides applied."""
    if size not in sizes:
        raise ValueError(f"unknown size {size!r}: known are {', '.join(sizes)}")
    params = dict(sizes[size])
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in params:
            raise ValueError(f"unknown option {k!r} for this experiment: options are {', '.join(sorted(params))}")
        params[k] = v
    return params


def set_threads(n: int | None) -> None:
    torch.set_num_threads(n or 1)


class _Collect:
    """Stands in for a tracking Run inside a sweep runner: keeps what run_one logs as history rows."""

    def __init__(self):
        self.rows: list[dict] = []

    def log(self, metrics: Mapping, step: int) -> None:
        self.rows.append({"step": int(step), **metrics})


def as_sweep_runner(module, **extra_axes: str):
    """Register `module.run_one` as a `paramlab sweep` runner named after the experiment.

    Its options are the default size's options with the per-run axes (scheme, width, seed and
    `extra_axes`: config key -> the list option it replaces) in place of the lists. A module with a
    `BATCH` (`Batch`) also gets the sweep's batched path (``ensemble: auto | always | never``).
    """
    from ..sweep import Option, register_runner

    listed = {"schemes", "widths", "seeds", *extra_axes.values()}
    base = module.SIZES["default"]
    options = {k: v for k, v in base.items() if k not in listed}
    options.update(scheme=Option("mup", (str,)), width=Option(base["widths"][0], (int,)), seed=Option(0, (int,)))
    for key, listed_key in extra_axes.items():
        options[key] = Option(base[listed_key][0])

    def fn(config: dict) -> dict:
        log = _Collect()
        summary = module.run_one({"experiment": module.NAME, **config}, log)
        status = "diverged" if summary.get("diverged") else "finished"
        return {**summary, "history": log.rows, "status": status}

    fn.__qualname__ = fn.__name__ = f"{module.NAME}_runner"
    batch: Batch | None = getattr(module, "BATCH", None)
    if batch is None:
        return register_runner(module.NAME, fn, options=options)

    def batch_fn(configs: list) -> list:
        cfgs = [{"experiment": module.NAME, **c} for c in configs]
        logs = [_Collect() for _ in cfgs]
        outs = batch.run(cfgs, logs)
        return [{**o, "history": lg.rows, "status": "diverged" if o.get("diverged") else "finished"}
                for o, lg in zip(outs, logs)]

    return register_runner(module.NAME, fn, options=options, batch=batch_fn, batch_key=batch.key,
                           batch_pays=batch.pays)
