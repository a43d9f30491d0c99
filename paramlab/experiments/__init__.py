"""The experiments: each one question, asked identically of every scheme (same data, model family,
optimizer and seeds; only the scheme and the width change), run as a sweep (`paramlab.sweep`).

    coord_check        do activations and updates keep their size as width grows?
    feature_learning   which schemes move features, and with what width exponent?
    transfer           which schemes learn features that transfer to a few-shot task?
    lr_transfer        does the best learning rate at small width stay best at large width?
    kernel_limit       when is a finite network its infinite-width NTK?
    depth_transfer     does the best learning rate at base depth stay best at larger depth (depth rules)?
    lm_lr_transfer     the same for a Transformer LM on tiny Shakespeare (TP5 Fig. 1, robust optimum)
    lm_feature_learning  feature and kernel movement per block of that Transformer LM, NTK vs muP
    maml               does first-order MAML meta-learn features for few-shot mnist1d at every width?

(what they share, and the built-in sweep runner ``train_mlp``, is `paramlab.kit`). Run one with
``paramlab run NAME``, ``python experiments/NAME.py`` or ``get(NAME).run(size, ...)``;
`paramlab.kit.experiment.Experiment.run` has the options. Each run lands in
``<root>/<NAME>/<group>/``; the summary (table, figures, verdicts) beside them in ``summary/``.

Adding an experiment
--------------------
Write ``paramlab/experiments/<name>.py`` with:

    NAME = "<name>"
    SIZES = {"tiny": {...}, "quick": {...}, "default": {...}}
        # options of each size: "schemes", "widths" (lists) and "seeds" (a count) are the grid's axes,
        # every other key a fixed option; 'tiny' runs in seconds (tests), 'quick' in 1-3 minutes,
        # 'default' (the README's numbers) in at most ~30 minutes on 2 CPU cores
    def run_one(config, log) -> dict:
        # one grid point (config: every option, with one scheme, width and seed): build, train with
        # paramlab.train.train(..., log=log), measure with paramlab.measure; return the summary
        # metrics ({"diverged": 1} marks a diverged run). Compute only: never write files here.
    def summarize(results, params, out_dir) -> Summary:
        # results: [(config, summary)] of every run in grid order; draw the figures into out_dir
        # (paramlab.report), fit slopes (paramlab.measure.fit) and return a Summary with the table,
        # the figures and the verdicts
    EXPERIMENT = Experiment(NAME, SIZES, run_one, summarize, doc=__doc__)
        # axes={...} for another grid (e.g. add "log2_lr": "log2_lrs"), checks={...} for option
        # checks, batch=Batch(...) to run grid points together (a stacked ensemble)
    RUNNER = EXPERIMENT.runner
    def main(argv=None):
        return command.main(EXPERIMENT, argv)

then add its name to `NAMES` below (that is all the registration there is), a thin
CLI ``experiments/<name>.py`` at the repository root if you like, and its test at the tiny size in
tests/test_experiments.py. Nothing else needs to change: ``paramlab run <name>`` and ``paramlab
sweep`` with ``runner: <name>`` pick it up.
"""

from __future__ import annotations

import importlib

__all__ = ["NAMES", "RUNNERS", "get", "run"]

# The experiments, in the order `paramlab run` lists them; each is a module paramlab.experiments.<name>
# with an EXPERIMENT (paramlab.kit.experiment.Experiment) and its RUNNER.
NAMES = ("coord_check", "feature_learning", "transfer", "lr_transfer", "kernel_limit", "depth_transfer",
         "lm_lr_transfer", "lm_feature_learning", "maml")
# name -> "module:attribute" of each experiment's Runner (`paramlab.runners.get_runner` reads it by name)
RUNNERS = {name: f"{__name__}.{name}:RUNNER" for name in NAMES}


def get(name: str):
    """The `Experiment` called `name` (``-`` and ``_`` alike)."""
    key = name.replace("-", "_")
    if key not in NAMES:
        raise ValueError(f"unknown experiment {name!r}: known are {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{key}").EXPERIMENT


def run(name: str, size: str = "default", **options) -> dict:
    """Run (or resume) the experiment `name` at `size` and return its summary dict: ``pl.run("coord_check",
    "tiny", root="runs", widths=[64, 128])``. `options`: `paramlab.kit.experiment.Experiment.run`'s
    (root, group, use_wandb, ...) and the experiment's own (its sizes' keys)."""
    return get(name).run(size, **options)
