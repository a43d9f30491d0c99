"""One W&B Report per experiment group, and uploading a group's offline wandb runs.

`build_report(group_dir)` turns ``<root>/<experiment>/<group>/`` into a W&B Report (the
``wandb-workspaces`` package, the ``wandb[workspaces]`` extra) that shows as W&B panels what the
experiment's figures show: a metric against width per scheme, the loss against log2 lr at each
width per scheme, learning curves, coordinate-check slopes, with text blocks for the prediction
(the experiment's docstring) and the verdicts (the group's summary/summary.json). Every scheme is one run set (one
colour), filtered to the group's wandb group. Offline (the default) it writes the report's JSON
spec to ``GROUP_DIR/wandb_report.json``; with ``WANDB_MODE=online`` and an API key it saves the report
to W&B and returns its URL.

Which keys each experiment's report plots is data (`PANELS`): a metric an experiment renames must
be renamed there too (tests/test_wandb.py reads the keys back from the offline runs).

`sync(path)` uploads the offline runs under a group (or run, or experiment) folder with ``wandb sync``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from .io import read_json, write_json_atomic
from .store import SUMMARY_DIR

__all__ = ["PANELS", "build_report", "panel_keys", "report_spec", "sync"]

# experiment -> its panels. kind:
#   vs_width   scatter of the runs' summary metric `y` against config `x` (default width), per scheme
#   vs_lr      scatter of summary `y` against config log2_lr, one panel grid per value of `per` (width/depth)
#   history    line plot of the history keys `y` against the optimizer step, per scheme
# "{shot}" in a key: one key per entry of the group's `shots` option.
PANELS: dict[str, list[dict[str, Any]]] = {
    "coord_check": [{"kind": "history", "y": ["slope/readout", "slope/layers.0"],
                     "title": "width exponent of the readout and first-layer coordinates vs step"},
                    {"kind": "bar", "y": ["max_act_slope", "n_fail"], "title": "largest activation slope, failures"}],
    "feature_learning": [{"kind": "vs_width", "y": "feat/last/rel_change", "log": True,
                          "title": "feature movement (last hidden layer) vs width"},
                         {"kind": "vs_width", "y": "ntk/rel_change", "log": True, "title": "NTK movement vs width"},
                         {"kind": "history", "y": ["train/loss"], "title": "train loss"}],
    "transfer": [{"kind": "vs_width", "y": "B/probe_gain", "title": "transfer gain of a linear probe vs width"},
                 {"kind": "vs_width", "y": "B/finetune_gain", "title": "transfer gain of fine-tuning vs width"},
                 {"kind": "history", "y": ["train/loss"], "title": "task A train loss"}],
    "lr_transfer": [{"kind": "vs_lr", "y": "train/loss", "per": "width", "log": True,
                     "title": "final train loss vs log2 lr"},
                    {"kind": "history", "y": ["train/loss"], "title": "train loss"}],
    "kernel_limit": [{"kind": "vs_width", "y": "dist_to_ntk_prediction", "log": True,
                      "title": "distance to the NTK prediction vs width"},
                     {"kind": "vs_width", "y": "test/mse", "title": "test MSE vs width"},
                     {"kind": "history", "y": ["train/loss"], "title": "train loss"}],
    "depth_transfer": [{"kind": "vs_lr", "y": "train/loss", "per": "depth", "by": "rule", "log": True,
                        "title": "final train loss vs log2 lr"},
                       {"kind": "vs_width", "x": "depth", "y": "laziness", "by": "rule", "title": "laziness vs depth"},
                       {"kind": "history", "y": ["train/loss"], "by": "rule", "title": "train loss"}],
    "lm_lr_transfer": [{"kind": "vs_lr", "y": "val/loss", "per": "width", "title": "validation loss vs log2 lr"},
                       {"kind": "history", "y": ["train/loss"], "title": "train loss"}],
    "lm_feature_learning": [{"kind": "vs_width", "y": "blocks.0/feat", "log": True,
                             "title": "feature movement (first block) vs width"},
                            {"kind": "vs_width", "y": "tok_emb/feat", "log": True,
                             "title": "token-embedding movement vs width"},
                            {"kind": "vs_width", "y": "val/loss", "title": "validation loss vs width"},
                            {"kind": "history", "y": ["train/loss"], "title": "train loss"}],
    "maml": [{"kind": "vs_width", "y": "k{shot}/gain", "title": "meta-test accuracy gain over init vs width"},
             {"kind": "vs_width", "y": "k{shot}/feature_move", "log": True, "title": "feature movement vs width"},
             {"kind": "history", "y": ["k{shot}/meta_train/query_loss"], "title": "meta-train query loss"}],
}


def _expand(key: str, params: Mapping) -> list[str]:
    return [key.format(shot=s) for s in params.get("shots", [])] if "{shot}" in key else [key]


def panel_keys(experiment: str, params: Mapping) -> dict[str, set]:
    """The keys the report of `experiment` plots: {"summary": run summary keys, "history": history
    keys, "config": config keys} (with the group's `params`, e.g. its shot counts)."""
    out = {"summary": set(), "history": set(), "config": set()}
    for p in PANELS[experiment]:
        ys = [k for y in ([p["y"]] if isinstance(p["y"], str) else p["y"]) for k in _expand(y, params)]
        out["history" if p["kind"] == "history" else "summary"].update(ys)
        out["config"].add(p.get("by", "scheme"))
        if p["kind"] == "vs_width":
            out["config"].add(p.get("x", "width"))
        if p["kind"] == "vs_lr":
            out["config"].update({"log2_lr", p["per"]})
    return out


def _group_info(group_dir: str | os.PathLike) -> tuple[Path, str, dict, dict]:
    """(group folder, experiment, the grid's options, summary.json) of a group; clear errors otherwise."""
    from .experiments import NAMES
    from .records import load_runs

    path = Path(group_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"no group folder {path} (expected <root>/<experiment>/<group>)")
    experiment = path.parent.name
    if experiment not in NAMES:
        raise ValueError(f"{path} is not a group of a known experiment: its parent folder is {experiment!r}, "
                         f"experiments are {', '.join(NAMES)} (give runs/<experiment>/<group>)")
    runs = [r for r in load_runs(path, history=False) if r.name != "summary"]
    if not runs:
        raise ValueError(f"{path} holds no runs: nothing to report (run `paramlab run {experiment}` first)")
    summary = read_json(path / SUMMARY_DIR / "summary.json", {})
    summary = summary if isinstance(summary, dict) else {}
    params = summary.get("params")
    if not isinstance(params, dict):  # no summary yet: the options from the runs' configs
        params = {}
        for key in ("shots",):
            vals = [r.config.get(key) for r in runs if isinstance(r.config.get(key), list)]
            if vals:
                params[key] = vals[0]
    params = {**params, "_configs": [r.config for r in runs]}
    return path, experiment, params, summary


def report_spec(group_dir: str | os.PathLike, *, project: str | None = None, entity: str | None = None):
    """The `wandb_workspaces.reports.v2.Report` of a group (nothing written)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    from .experiments import get
    from .kit.headline import headline
    from .wandb_live import default_project

    path, experiment, params, summary = _group_info(group_dir)
    project = default_project(experiment, project)
    entity = entity or os.environ.get("WANDB_ENTITY") or ""
    if not entity and _online():  # the account's default entity (a network call; never offline)
        import wandb

        entity = wandb.Api().default_entity or ""
    wb_group = f"{experiment}-{path.name}"
    configs = params.pop("_configs")
    doc = get(experiment).doc.strip()
    blocks: list = [wr.H1(f"{experiment}: {path.name}"), wr.P(doc.split("\n\n")[0].replace("\n", " "))]
    if len(doc.split("\n\n")) > 1:
        blocks.append(wr.MarkdownBlock(text="\n\n".join(doc.split("\n\n")[1:3])))

    def runsets(by: str, where: Mapping[str, Any] = {}) -> list:
        values = sorted({str(c[by]) for c in configs if by in c and all(c.get(k) == v for k, v in where.items())})
        return [wr.Runset(entity=entity, project=project, name=f"{by}={v}",
                          filters=[expr.Metric("Group") == wb_group, expr.Config(by) == v,
                                   *[expr.Config(k) == w for k, w in where.items()]])
                for v in values]

    for p in PANELS[experiment]:
        by = p.get("by", "scheme")
        ys = [k for y in ([p["y"]] if isinstance(p["y"], str) else p["y"]) for k in _expand(y, params)]
        blocks.append(wr.H2(p["title"]))
        if p["kind"] == "history":
            panels = [wr.LinePlot(title=y, x="Step", y=[y], log_y=p.get("log")) for y in ys]
            blocks.append(wr.PanelGrid(runsets=runsets(by), panels=panels))
        elif p["kind"] == "bar":
            blocks.append(wr.PanelGrid(runsets=runsets(by), panels=[wr.BarPlot(title=y, metrics=[y]) for y in ys]))
        elif p["kind"] == "vs_width":
            x = p.get("x", "width")
            panels = [wr.ScatterPlot(title=f"{y} vs {x}", x=wr.Config(x), y=wr.SummaryMetric(y), log_x=True,
                                     log_y=p.get("log")) for y in ys]
            blocks.append(wr.PanelGrid(runsets=runsets(by), panels=panels))
        elif p["kind"] == "vs_lr":
            for v in sorted({c[p["per"]] for c in configs if p["per"] in c}):
                blocks.append(wr.H3(f"{p['per']} {v}"))
                panels = [wr.ScatterPlot(title=f"{y} vs log2 lr ({p['per']} {v})", x=wr.Config("log2_lr"),
                                         y=wr.SummaryMetric(y), log_y=p.get("log")) for y in ys]
                blocks.append(wr.PanelGrid(runsets=runsets(by, {p["per"]: v}), panels=panels))
    blocks.append(wr.H2("Verdicts"))
    flat = headline(summary) if summary else {}
    verdicts = [f"{k[len('verdict/'):]}: {'yes' if v else 'no'}" for k, v in flat.items() if k.startswith("verdict/")]
    numbers = [f"{k[len('headline/'):]}: {v:.4g}" for k, v in flat.items() if k.startswith("headline/")]
    if summary.get("title"):
        blocks.append(wr.P(str(summary["title"])))
    if verdicts or numbers:
        blocks.append(wr.UnorderedList(items=verdicts + numbers[:40]))
        blocks.append(wr.P("The same numbers are the scalars of the group's summary run (headline/..., verdict/...):"))
        blocks.append(wr.PanelGrid(runsets=[wr.Runset(entity=entity, project=project, name="summary",
                                                      filters=[expr.Metric("Group") == wb_group,
                                                               expr.Metric("JobType") == "summary"])],
                                   panels=[wr.RunComparer()]))
    else:
        blocks.append(wr.P("No summary.json in the group yet: rerun the experiment with the same --group to finish it."))
    return wr.Report(project=project, entity=entity, title=f"paramlab {experiment} ({path.name})"[:128],
                     description=f"{experiment}: every scheme, identical runs; group {wb_group}", blocks=blocks)


def _online() -> bool:
    return os.environ.get("WANDB_MODE", "").strip().lower() == "online"


def build_report(group_dir: str | os.PathLike, *, project: str | None = None, entity: str | None = None) -> str:
    """Build the group's W&B Report. Offline (``WANDB_MODE`` not ``online``): its JSON spec goes to
    ``GROUP_DIR/wandb_report.json``, whose path is returned. Online with an API key: the report is
    saved to W&B and its URL returned. Unknown experiment, no runs, a malformed project: ValueError,
    nothing written."""
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        raise RuntimeError("the W&B report needs wandb-workspaces: pip install 'wandb[workspaces]'") from None
    report = report_spec(group_dir, project=project, entity=entity)
    if _online():  # wandb-workspaces' save; needs the key (not reachable from the tests: no account)
        report.save()
        return report.url
    spec = report._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")
    out = Path(group_dir) / "wandb_report.json"
    write_json_atomic(out, spec)
    return str(out)


def sync(path: str | os.PathLike, print_only: bool = False) -> int:
    """Upload the offline wandb runs under `path` (a group, run or experiment folder) with ``wandb sync``;
    print_only: print the command and run nothing. Returns wandb sync's exit code."""
    from .records import find_wandb_offline_runs

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no folder {path}")
    # the runs, and the summary runs of a group (or of an experiment's groups), which run discovery skips
    summaries = [p for p in (path / SUMMARY_DIR, *path.glob(f"*/{SUMMARY_DIR}")) if p.is_dir()]
    runs = sorted({str(w.path) for p in (path, *summaries) for w in find_wandb_offline_runs(p)})
    if not runs:
        raise ValueError(f"no offline wandb runs under {path} (runs made with --no-wandb or PARAMLAB_WANDB=0 have none)")
    exe = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb") or "wandb"
    cmd = [exe, "sync", *runs]
    print(f"{len(runs)} offline wandb runs: " + " ".join([Path(exe).name, "sync", *runs[:3]])
          + (f" ... ({len(runs) - 3} more)" if len(runs) > 3 else ""))
    if print_only:
        print(json.dumps(cmd))
        return 0
    return subprocess.run(cmd, check=False).returncode
