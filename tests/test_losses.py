"""paramlab.losses: one definition of each loss; the stacked form computes per model what the plain one
computes for that model alone (float64, tight)."""

import pytest
import torch
import torch.nn.functional as F

from paramlab.losses import default_loss, loss_fn, stacked_loss_fn

F64 = torch.float64


def test_mse_and_xent_definitions():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    assert loss_fn("mse", out, y) == pytest.approx(float(0.5 * ((out - y) ** 2).sum(1).mean()), rel=1e-14)
    labels = torch.tensor([0, 2, 1, 1, 0])
    onehot = F.one_hot(labels, 3).to(F64)
    assert loss_fn("mse", out, labels) == pytest.approx(float(loss_fn("mse", out, onehot)), rel=1e-14)
    assert loss_fn("xent", out, labels) == pytest.approx(float(F.cross_entropy(out, labels)), rel=1e-14)
    # a language model's (B, T, C) logits: B*T predictions, mean over all of them
    logits, tokens = torch.randn(2, 4, 3, generator=g, dtype=F64), torch.randint(0, 3, (2, 4), generator=g)
    manual = -torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).mean()
    assert loss_fn("xent", logits, tokens) == pytest.approx(float(manual), rel=1e-12)


@pytest.mark.parametrize("name", ["mse", "xent"])
def test_stacked_loss_is_the_plain_loss_per_model(name):
    g = torch.Generator().manual_seed(1)
    out = torch.randn(4, 6, 3, generator=g, dtype=F64)  # 4 models, batch 6, 3 outputs
    y = torch.randint(0, 3, (6,), generator=g) if name == "xent" else torch.randn(6, 3, generator=g, dtype=F64)
    per_model = stacked_loss_fn(name, out, y)
    expect = torch.stack([loss_fn(name, out[k], y) for k in range(4)])
    torch.testing.assert_close(per_model, expect, rtol=1e-14, atol=0)
    shifted = out.clone()
    shifted[2, :, 0] += 1e-3  # a negative control: one model's outputs moved, only its loss moves
    moved = stacked_loss_fn(name, shifted, y) != per_model
    assert moved.tolist() == [False, False, True, False]


def test_errors_name_the_fix():
    class Task:
        kind = "classification"

    assert default_loss(Task()) == "xent"
    with pytest.raises(ValueError, match="integer class labels"):
        loss_fn("xent", torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        stacked_loss_fn("hinge", torch.randn(1, 2, 3), torch.randn(2, 3))
