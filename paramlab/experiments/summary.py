"""An experiment's closing summary: the table, figures and verdicts drawn from all its runs.

`write_summary` puts them next to the runs, in the group folder ``<root>/<experiment>/<group>/``:
``summary.md`` (the table and the figures), ``summary.json`` (the same as data, with the verdicts
and the options), the figures themselves, and, with wandb on, a ``summary`` run there (job_type
``summary``) whose wandb summary holds the answer as scalars (`headline`: ``headline/...`` numbers,
``verdict/...`` 0/1) and which carries the table and the figures as wandb media. It also prints the
table, where everything is, and with wandb offline the command that uploads the group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..report import markdown_table
from ..store import to_jsonable, write_json_atomic
from ..tracking import start_run
from .headline import headline

__all__ = ["Summary", "by_width", "write_summary"]


@dataclass
class Summary:
    """title; the table (columns, rows); figures: name -> PNG path; extra: verdicts, baselines and
    options (into summary.json); notes: one paragraph printed above the table."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence]
    figures: Mapping[str, Path] = field(default_factory=dict)
    extra: Mapping = field(default_factory=dict)
    notes: str = ""


def by_width(results, schemes, widths, key: str, **where) -> dict:
    """scheme -> array (n_widths, n_repeats) of summary `key` (nan where missing), filtered by `where`."""
    import numpy as np

    def pick(c, s, w):
        return c["scheme"] == s and c["width"] == w and all(c.get(k) == v for k, v in where.items())

    return {s: np.array([[r.get(key, np.nan) for c, r in results if pick(c, s, w)] for w in widths], dtype=float)
            for s in schemes}


def _cell(v):
    return v if isinstance(v, (int, float, str)) or v is None else str(v)


def write_summary(summary: Summary, *, experiment: str, root, group: str, out_dir: Path, use_wandb: bool,
                  wandb: Mapping | None = None) -> dict:
    """Write, log and print `summary` (see the module docstring); returns it as summary.json holds it.
    wandb: the sweep's wandb names (wandb_project, wandb_entity, tags, wandb_config)."""
    out_dir = Path(out_dir)
    table = markdown_table(summary.columns, summary.rows)
    figures = dict(summary.figures)
    md = [f"# {summary.title}", "", summary.notes, "", table, ""] + [f"![{k}]({Path(p).name})" for k, p in figures.items()]
    (out_dir / "summary.md").write_text("\n".join(md) + "\n")
    data = {"title": summary.title, "columns": list(summary.columns), "rows": to_jsonable(summary.rows),
            "figures": {k: str(p) for k, p in figures.items()}, **to_jsonable(dict(summary.extra))}
    write_json_atomic(out_dir / "summary.json", data)
    wb = dict(wandb or {})
    offline_dir = None
    if use_wandb:
        from ..wandb_live import default_project

        project = default_project(experiment, wb.get("wandb_project"))
        with start_run({"experiment": experiment, "kind": "summary"}, experiment=experiment, group=group, root=root,
                       name="summary", use_wandb=True, if_exists="overwrite", project=project,
                       entity=wb.get("wandb_entity"), tags=wb.get("tags") or (),
                       wandb_config=wb.get("wandb_config")) as run:
            run.summary(headline(data))
            run.log_table("summary", list(summary.columns), [list(map(_cell, r)) for r in summary.rows])
            for k, p in figures.items():
                run.log_image(k, p)
            if run.meta["wandb"].get("enabled") and run.meta["wandb"].get("mode") == "offline":
                offline_dir = out_dir
    notes = summary.notes
    print(f"\n{summary.title}\n{notes}\n{table}" if notes else f"\n{summary.title}\n{table}")
    for k, p in figures.items():
        print(f"plot ({k}): {p}")
    print(f"records: {out_dir}")
    if offline_dir is not None:
        print(f"wandb (offline): upload this group with: paramlab sync {offline_dir}")
    return data
