"""The lr_transfer summary's robust optimum on synthetic grids with a known answer: the digits failure
mode (a train loss that falls until a divergence edge that does not move with width) reads no shift
from the train loss, while the held-out test loss's interior optimum gives the true shift (the headline).
The real digits numbers (3 seeds: SP -2.58 +- 0.29, muP -0.10 +- 0.26 steps) are in docs/experiments.md."""

import math

import numpy as np
import pytest

from paramlab.experiments.lr_transfer import robust_shift, summarize

LRS = list(range(-13, -3))
WIDTHS = [64, 128, 256, 512]


def grid(test_shift_per_doubling: float):
    """Results for one scheme: train loss monotone down to a fixed cliff at 2^-5 (diverged beyond), test
    loss a log-parabola whose optimum moves by `test_shift_per_doubling` steps per width doubling."""
    out = []
    for i, w in enumerate(WIDTHS):
        opt = -8.0 + test_shift_per_doubling * i
        for seed in range(2):
            for x in LRS:
                div = x > -5
                out.append(({"scheme": "s", "width": w, "log2_lr": x, "seed": seed},
                            {"train/loss": math.inf if div else math.exp(-0.8 * (x + 13) - 0.3 * i),
                             "test/loss": math.inf if div else 1.5 * math.exp(0.04 * (x - opt) ** 2) * (1 + 0.001 * seed),
                             "diverged": int(div)}))
    return out


def test_headline_reads_the_shift_the_train_loss_cannot():
    res, p = grid(-2 / 3), {"widths": WIDTHS, "log2_lrs": LRS}  # -2 steps over 8x width
    train = robust_shift(res, p, "s", "train/loss")
    assert train["status"] == ["edge"] * 4 and train["shift"] == 0.0  # pinned at the cliff: flagged, no vertex
    head = robust_shift(res, p, "s", "test/loss")
    assert head["shift_status"] == "ok" and head["shift"] == pytest.approx(-2.0, abs=0.05)


def test_negative_control_no_shift(tmp_path):
    res = grid(0.0)
    p = {"widths": WIDTHS, "log2_lrs": LRS, "schemes": ["s"], "metric": "train/loss", "steps": 1, "task": "t",
         "optimizer": "adam", "batch_size": 1, "base_width": 64}
    v = summarize(res, p, tmp_path).extra["verdicts"]["s"]
    assert abs(v["robust_headline"]["shift"]) < 0.05 and np.isfinite(v["robust_headline"]["shift_se"])
