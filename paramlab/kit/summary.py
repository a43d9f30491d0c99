"""An experiment's closing summary: the table, figures and verdicts drawn from all its runs.

A summary is a record of its own kind, not a run: it lives beside the runs in the group's
``summary/`` folder (`paramlab.store.SUMMARY_DIR`, which run discovery skips),
``<root>/<experiment>/<group>/summary/``: ``summary.md`` (the table and the figures),
``summary.json`` (the same as data, with the verdicts and the options; `summary_record`), the
figures themselves and, with wandb on, ``wandb/``: a wandb run of job type ``summary`` whose wandb
summary holds the answer as scalars (`paramlab.kit.headline`: ``headline/...`` numbers,
``verdict/...`` 0/1) and which carries the table and the figures as wandb media. Every file is written whole (`paramlab.io`), so a reader
sees the old summary or the new one. `write_summary` also prints the table and where everything is.

What a summary computes beyond reading the runs (kernel baselines, a text sample from a retrained
model) is stored there too, in ``summary/parts/`` (`stored`): a second summary of the group, or one
resumed after a crash, reads it back instead of computing it again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..io import atomic_write, read_json, to_jsonable, write_json_atomic
from ..provenance import code_git_info, library_versions
from .headline import headline
from ..report import markdown_table
from ..wandb_sink import WandbSink, resolve_wandb_mode, wandb_enabled

__all__ = ["PARTS_DIR", "Summary", "by_width", "stored", "summary_markdown", "summary_record", "write_summary"]

PARTS_DIR = "parts"  # in the group's summary folder: the summary's stored computations (`stored`)


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


def stored(out_dir: Path, name: str, inputs: Mapping, compute: Callable[[], Any]) -> Any:
    """compute() once per (name, inputs) in a group: the value as JSON, read back, from
    ``out_dir/parts/<name>-<hash of inputs>.json`` (out_dir: the group's summary folder).

    The file, written whole (`paramlab.io.write_json_atomic`), holds the name, the inputs and the value;
    a crash while computing leaves nothing, so a rerun computes again. inputs: everything the value
    depends on (JSON data; a change gives another file). The value comes back as JSON gives it
    (tuples as lists, str keys; floats, NaN and inf exact), the same on the first call as on later ones.
    """
    inputs = to_jsonable(dict(inputs))
    text = json.dumps(inputs, sort_keys=True, allow_nan=True)
    path = Path(out_dir) / PARTS_DIR / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    rec = read_json(path)
    if not (isinstance(rec, dict) and rec.get("name") == name
            and json.dumps(rec.get("inputs"), sort_keys=True, allow_nan=True) == text):
        rec = {"name": name, "inputs": inputs, "value": to_jsonable(compute())}
        write_json_atomic(path, rec)
    return json.loads(json.dumps(rec["value"], allow_nan=True))


def _cell(v):
    return v if isinstance(v, (int, float, str)) or v is None else str(v)


def summary_record(summary: Summary) -> dict:
    """`summary` as plain JSON data, what summary.json holds: title, columns, rows, figures (name ->
    path) and the experiment's extra entries (verdicts, baselines, headline numbers, options)."""
    return {"title": summary.title, "columns": list(summary.columns), "rows": to_jsonable(summary.rows),
            "figures": {k: str(p) for k, p in dict(summary.figures).items()}, **to_jsonable(dict(summary.extra))}


def summary_markdown(summary: Summary) -> str:
    """summary.md: the title, the notes, the table and the figures (linked by file name, beside it)."""
    md = [f"# {summary.title}", "", summary.notes, "", markdown_table(summary.columns, summary.rows), ""]
    return "\n".join(md + [f"![{k}]({Path(p).name})" for k, p in dict(summary.figures).items()]) + "\n"


def _log_to_wandb(summary: Summary, data: dict, *, experiment: str, group: str, out_dir: Path,
                  wandb: Mapping | None = None) -> dict:
    """The summary as a wandb run of job type 'summary' in out_dir/wandb: the answer as scalars
    (`headline`: ``headline/...`` numbers, ``verdict/...`` 0/1), the table and the figures. It
    replaces the run an earlier summary of the group left there (one summary run per group).
    wandb: the sweep's wandb names (wandb_project, wandb_entity, tags, wandb_config). Returns the
    sink's info (mode, project, ...)."""
    from ..wandb_live import default_project

    wb = dict(wandb or {})
    shutil.rmtree(out_dir / "wandb", ignore_errors=True)
    sink = WandbSink({})
    sink.start(run_dir=out_dir, name="summary", group=f"{experiment}-{group}", job_type="summary",
               tags=[experiment, "summary", *(wb.get("tags") or ())],
               config={"experiment": experiment, "kind": "summary", "git_sha": code_git_info().get("sha"),
                       "paramlab_version": library_versions().get("paramlab"), **dict(wb.get("wandb_config") or {})},
               project=default_project(experiment, wb.get("wandb_project")), entity=wb.get("wandb_entity"),
               mode=resolve_wandb_mode(), settings=None)
    sink.summary(headline(data))
    sink.media("summary", 0, lambda wandb: wandb.Table(columns=list(summary.columns),
                                                       data=[list(map(_cell, r)) for r in summary.rows]))
    for k, p in dict(summary.figures).items():
        sink.media(k, 0, lambda wandb, p=p: wandb.Image(str(p)))
    sink.finish("finished", None)
    return sink.info


def write_summary(summary: Summary, *, experiment: str, group: str, out_dir: Path, use_wandb: bool,
                  wandb: Mapping | None = None) -> dict:
    """Write, log and print `summary` in `out_dir`, the group's summary folder (see the module
    docstring); returns `summary_record(summary)`, as summary.json holds it. wandb: as `_log_to_wandb`;
    with wandb offline it also prints the command that uploads the group."""
    out_dir = Path(out_dir)
    with atomic_write(out_dir / "summary.md") as f:
        f.write(summary_markdown(summary))
    data = summary_record(summary)
    write_json_atomic(out_dir / "summary.json", data)
    info = {}
    if wandb_enabled(use_wandb):
        info = _log_to_wandb(summary, data, experiment=experiment, group=group, out_dir=out_dir, wandb=wandb)
    table = markdown_table(summary.columns, summary.rows)
    notes = summary.notes
    print(f"\n{summary.title}\n{notes}\n{table}" if notes else f"\n{summary.title}\n{table}")
    for k, p in summary.figures.items():
        print(f"plot ({k}): {p}")
    print(f"records: {out_dir}")
    if info.get("enabled") and info.get("mode") == "offline":
        print(f"wandb (offline): upload this group with: paramlab sync {out_dir.parent}")
    return data
