"""Long single runs: periodic atomic checkpoints, exact resume (float64), plan mismatch refused."""

import pytest
import torch

import paramlab as pl
from paramlab.checkpoint import load_checkpoint, read_checkpoint
from paramlab.data import multi_index
from paramlab.train import train

F64 = torch.float64


@pytest.fixture(scope="module")
def task():
    return multi_index(200, 64, d=8, k=2, seed=0)


def model(scheme="mup", width=48):
    return pl.mlp(8, 1, width, depth=2, scheme=scheme, base_width=32, seed=0, dtype=F64)


KW = dict(optimizer="adam", steps=24, batch_size=48, seed=3, eval_every=5)  # 200/48: the order reshuffles mid-run


def test_checkpoints_every_n_steps_weights_only(task, tmp_path):
    ck = tmp_path / "c.pt"
    seen = []
    train(model(), task, lr=1e-2, checkpoint=ck, checkpoint_every=7,
          log=lambda m, s: seen.append(read_checkpoint(ck)["step"] if ck.exists() else None), **KW)
    state = torch.load(ck, map_location="cpu", weights_only=True)  # tensors and plain python only
    assert state["step"] == 24 and state["plan"]["scheme"] == "mup" and "optimizer" in state
    assert set(state["train"]) >= {"gen", "perm", "pos", "history", "initial_loss", "args"}
    assert seen == [None, None, 7, 14, 14, 21]  # at the logs of steps 0, 5, 10, 15, 20, 24
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temp file left behind


@pytest.mark.parametrize("every, kill_at, saved", [(7, 15, 14), (4, 10, 8), (7, 24, 21)])
def test_resume_reproduces_the_uninterrupted_run_exactly(task, tmp_path, every, kill_at, saved):
    # cut the run after its periodic checkpoint at `saved` (raised from the log callback, as a kill would
    # stop it: the steps after that checkpoint are lost), resume, compare bit for bit in float64
    full_m = model()
    full = train(full_m, task, lr=1e-2, **KW)

    def kill(metrics, step):
        if step == kill_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(model(), task, lr=1e-2, checkpoint=tmp_path / "c.pt", checkpoint_every=every, log=kill, **KW)
    assert read_checkpoint(tmp_path / "c.pt")["step"] == saved
    m = model()
    res = train(m, task, lr=1e-2, resume=tmp_path / "c.pt", **KW)
    assert res.history == full.history and res.steps_done == full.steps_done  # equal floats, not close
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), full_m.parameters()))
    # negative control: the same comparison with lr 0.1% off fails
    m_off = model()
    off = train(m_off, task, lr=1e-2 * 1.001, **KW)
    assert off.history != full.history
    assert not all(torch.equal(a, b) for a, b in zip(m_off.parameters(), full_m.parameters()))
    assert max(float((a - b).detach().abs().max()) for a, b in zip(m_off.parameters(), full_m.parameters())) > 1e-9


def test_checkpoint_into_another_plan_is_an_error(task, tmp_path):
    train(model("mup"), task, lr=1e-2, checkpoint=tmp_path / "c.pt", **{**KW, "steps": 3})
    with pytest.raises(ValueError, match=r"scheme 'mup'.*scheme 'sp'"):
        load_checkpoint(tmp_path / "c.pt", model("sp"))
    with pytest.raises(ValueError, match=r"scheme 'mup'.*scheme 'sp'"):
        train(model("sp"), task, lr=1e-2, resume=tmp_path / "c.pt", **KW)
    with pytest.raises(ValueError, match="plan"):
        load_checkpoint(tmp_path / "c.pt", model("mup", width=64))  # same scheme, other width
    with pytest.raises(ValueError, match=r"lr=0.01 \(now 0.02\)"):
        train(model("mup"), task, lr=2e-2, resume=tmp_path / "c.pt", **KW)
    assert load_checkpoint(tmp_path / "c.pt", model("mup")) == 3
