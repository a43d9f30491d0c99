"""The plan guard: plain torch optimizers over a parameterized model (nanoGPT's configure_optimizers,
model.parameters()) warn once at their first step naming the fix; paramlab's optimizers, torch
optimizers over paramlab.param_groups, SP (one lr is its plan) and the documented switches stay quiet."""

import warnings

import pytest
import torch

import paramlab as pl
from paramlab import guard
from paramlab.guard import PlanBlindOptimizerWarning


def lm(scheme="mup", width=128):
    return pl.transformer(32, width, depth=1, n_heads=4, scheme=scheme, base_width=32, seed=0)


def nanogpt_groups(model, weight_decay=0.1):
    """nanoGPT's configure_optimizers, written out: decay the >= 2-D tensors, not the rest, one lr."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def steps(model, opt, n=3):
    x = torch.randint(0, 32, (2, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(n):
            opt.zero_grad()
            model(x).logsumexp(-1).mean().backward()
            opt.step()
    return [w for w in caught if issubclass(w.category, PlanBlindOptimizerWarning)]


def test_nanogpt_style_adamw_warns_once_naming_the_fix():
    model = lm()
    caught = steps(model, torch.optim.AdamW(nanogpt_groups(model), lr=6e-4, betas=(0.9, 0.95)))
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "paramlab.optimizer" in msg and "paramlab.param_groups" in msg and "configure_optimizers" in msg
    assert "scheme mup" in msg and "0.00015" in msg  # a hidden matrix: 6e-4 / m at m = 4


def test_model_parameters_warns_for_sgd_too():
    model = lm()
    assert len(steps(model, torch.optim.SGD(model.parameters(), lr=0.1))) == 1


@pytest.mark.parametrize("make", [
    lambda m: pl.optimizer(m, "adamw", lr=1e-3),
    lambda m: pl.optimizer(m, "muon", lr=1e-2),
    lambda m: pl.optimizer(m, "lion", lr=1e-4),
    lambda m: torch.optim.AdamW(pl.param_groups(m, "adamw", lr=1e-3)),
    lambda m: torch.optim.Muon([p for n, p in m.named_parameters() if pl.get_plan(m)[n].role == "hidden"], lr=0.02),
])
def test_plan_aware_optimizers_are_quiet(make):
    """torch's Muon alone over muP's hidden matrices is right as it is: their spectral lr is width-free."""
    model = lm()
    assert steps(model, make(model)) == []


def test_sp_and_the_base_width_are_quiet():
    """SP's plan is one lr for every tensor; at the base width every scheme's is."""
    for model in (lm("sp"), lm("mup", width=32)):
        assert steps(model, torch.optim.AdamW(model.parameters(), lr=1e-3)) == []


def test_the_switches_silence_it():
    model = lm()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.paramlab_plan_ok = True
    assert steps(model, opt) == []
    guard.enable(False)
    try:
        assert steps(model, torch.optim.AdamW(model.parameters(), lr=1e-3)) == []
    finally:
        guard.enable(True)
    assert len(steps(model, torch.optim.AdamW(model.parameters(), lr=1e-3))) == 1  # back on


def test_a_loop_that_erases_the_ratios_of_param_groups_warns():
    """Negative control for the quiet case: paramlab's groups in a plain torch optimizer, then nanoGPT's loop
    writing one lr into every group before the first step: every tensor at one lr again."""
    model = lm()
    opt = torch.optim.AdamW(pl.param_groups(model, "adamw", lr=1e-3))
    for g in opt.param_groups:
        g["lr"] = 1e-3
    assert len(steps(model, opt)) == 1


def test_an_optimizer_of_unknown_family_warns():
    model = lm()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1)
    x = torch.randint(0, 32, (2, 8))
    with pytest.warns(PlanBlindOptimizerWarning, match="cannot tell its width-scaling family"):
        opt.step(lambda: model(x).logsumexp(-1).mean())
