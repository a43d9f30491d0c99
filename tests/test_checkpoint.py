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


class _Evil:
    """A pickle that would call a function on load (print here; os.system in an attack)."""

    def __reduce__(self):
        return (print, ("this ran at load time",))


def test_steps_may_grow_with_the_default_eval_every(task, tmp_path):
    """eval_every left at its default (steps // 10) is not part of the resume key: 20 -> 40 steps resumes,
    and the weights equal a fresh 40-step run's bit for bit (evaluation does not touch the trajectory)."""
    kw = {k: v for k, v in KW.items() if k not in ("steps", "eval_every")}
    train(model(), task, lr=1e-2, steps=20, checkpoint=tmp_path / "c.pt", **kw)
    m = model()
    res = train(m, task, lr=1e-2, steps=40, resume=tmp_path / "c.pt", **kw)
    fresh_m = model()
    fresh = train(fresh_m, task, lr=1e-2, steps=40, **kw)
    assert res.steps_done == 40 and res.history[-1]["step"] == 40
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), fresh_m.parameters()))
    assert res.history[-1] == fresh.history[-1]
    with pytest.raises(ValueError, match=r"eval_every=the default \(now 5\)"):  # an explicit change is refused
        train(model(), task, lr=1e-2, steps=40, eval_every=5, resume=tmp_path / "c.pt", **kw)


def test_checkpoint_past_the_steps_or_from_a_longer_run_is_refused(task, tmp_path):
    ck = tmp_path / "c.pt"
    train(model(), task, lr=1e-2, checkpoint=ck, **KW)  # 24 steps
    with pytest.raises(ValueError, match=r"is at step 24, past the requested steps=20"):
        train(model(), task, lr=1e-2, resume=ck, **{**KW, "steps": 20})
    state = torch.load(ck, weights_only=True)
    state["step"] = 10 ** 6
    torch.save(state, ck)
    with pytest.raises(ValueError, match=r"is at step 1000000, past the requested steps=40"):
        train(model(), task, lr=1e-2, resume=ck, **{**KW, "steps": 40})

    def kill(metrics, step):
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a 24-step run cut after its checkpoint at step 14
        train(model(), task, lr=1e-2, checkpoint=ck, checkpoint_every=7, log=kill, **KW)
    with pytest.raises(ValueError, match=r"\(step 14\) is from a run of steps=24; resuming it with steps=20"):
        train(model(), task, lr=1e-2, resume=ck, **{**KW, "steps": 20})
    assert train(model(), task, lr=1e-2, resume=ck, **KW).steps_done == 24  # negative control


def test_damaged_checkpoints_get_one_line_naming_the_file(task, tmp_path):
    ck = tmp_path / "c.pt"
    train(model(), task, lr=1e-2, checkpoint=ck, **{**KW, "steps": 3})
    good = ck.read_bytes()
    cases = {"empty": b"", "truncated": good[: len(good) // 2], "garbage": b"\x00\xffnot a checkpoint" * 10}
    for what, data in cases.items():
        ck.write_bytes(data)
        with pytest.raises(ValueError, match=rf"checkpoint {ck} is damaged \(") as e:
            read_checkpoint(ck)
        assert "\n" not in str(e.value) and ("empty" in str(e.value)) == (what == "empty")
    ck.write_bytes(good)
    state = torch.load(ck, weights_only=True)
    del state["train"]["args"]
    torch.save(state, ck)
    with pytest.raises(ValueError, match=rf"checkpoint {ck} has a damaged training state \(missing \['args'\]\)"):
        train(model(), task, lr=1e-2, resume=ck, **KW)
    torch.save({"model": {}, "step": 1, "x": _Evil()}, ck)
    with pytest.raises(ValueError, match=rf"checkpoint {ck} holds Python objects .* refused") as e:
        read_checkpoint(ck)
    assert "weights_only=False" not in str(e.value)
