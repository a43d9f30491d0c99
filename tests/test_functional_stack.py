"""Stacked (vmap(functional_call)) training == one-by-one training for Transformer LMs, in float64 with a
tight tolerance, and negative controls that must fail the same check (a 0.1% lr change, another seed)."""

import math

import pytest
import torch

import paramlab as pl
from paramlab.data.text import shakespeare_char
from paramlab.engine.lm import train_lm, train_lm_stacked
from paramlab.stacked import Stacked

RTOL = 1e-10
PROTO = dict(steps=10, batch=4, context=16)


@pytest.fixture(scope="module")
def task():
    return shakespeare_char()


@pytest.fixture(scope="module")
def eval_xy(task):
    return task.eval_windows(8, PROTO["context"], seed=0)


def models(task, scheme, width, seeds, **kw):
    return [pl.transformer(task.vocab_size, width, depth=2, n_heads=4, scheme=scheme, base_width=16,
                           max_len=PROTO["context"], seed=s, dtype=torch.float64, **kw) for s in seeds]


def assert_same(ra, rb, ma, mb, rtol=RTOL):
    for a, b in zip(ra, rb):
        assert a.diverged == b.diverged and a.steps_done == b.steps_done
        assert len(a.train_losses) == len(b.train_losses)
        for u, v in zip(a.train_losses, b.train_losses):
            assert (math.isnan(u) and math.isnan(v)) or u == pytest.approx(v, rel=rtol, abs=0)
        assert a.val_loss == pytest.approx(b.val_loss, rel=rtol, abs=0)
    for x, y, r in zip(ma, mb, rb):
        if r.diverged:
            continue  # a diverged run's weights hold non-finite values by construction
        for (n, p), q in zip(x.named_parameters(), y.parameters()):
            err = float((p.detach() - q.detach()).norm() / q.detach().norm().clamp_min(1e-300))
            assert err < rtol, (n, err)


def both(task, eval_xy, scheme, width, lrs, seeds, lrs_b=None, seeds_b=None, **kw):
    a, b = models(task, scheme, width, seeds, **kw), models(task, scheme, width, seeds, **kw)
    ra = train_lm_stacked(a, task, lrs=lrs, seeds=seeds, eval_xy=eval_xy, **PROTO)
    rb = [train_lm(m, task, lr=lr, seed=s, eval_xy=eval_xy, **PROTO)
          for m, lr, s in zip(b, lrs_b or lrs, seeds_b or seeds)]
    return ra, rb, a, b


@pytest.mark.parametrize("scheme", ["mup", "sp"])
def test_stacked_equals_one_by_one(task, eval_xy, scheme):
    """K = 4 models at 4x the base width (multipliers != 1), mixed lrs and seeds (one seed repeated)."""
    assert_same(*both(task, eval_xy, scheme, 64, [2 ** -6, 2 ** -8, 2 ** -7, 2 ** -5], [0, 1, 2, 0]))


def test_shared_seed_and_tied_readout(task, eval_xy):
    """All models share one batch seed (the batch is passed once), with a tied embedding/readout."""
    assert_same(*both(task, eval_xy, "mup", 32, [2 ** -6, 2 ** -8, 2 ** -4], [3, 3, 3], tied=True))


@pytest.mark.parametrize("change", ["lr", "seed"])
def test_negative_control(task, eval_xy, change):
    """The bar is tight enough: a 0.1% lr change of one model, or another batch seed, fails it."""
    lrs, seeds = [2 ** -6, 2 ** -7], [0, 1]
    kw = dict(lrs_b=[lrs[0], lrs[1] * 1.001]) if change == "lr" else dict(seeds_b=[0, 2])
    ra, rb, a, b = both(task, eval_xy, "mup", 64, lrs, seeds, **kw)
    with pytest.raises(AssertionError):
        assert_same(ra, rb, a, b)


def test_divergence_drops_one_model_only(task, eval_xy):
    """A model that diverges (lr 1e150) is recorded as its one-by-one run is; the others are unaffected."""
    ra, rb, a, b = both(task, eval_xy, "sp", 64, [2 ** -6, 1e150, 2 ** -7], [0, 1, 2])
    assert rb[1].diverged  # the control really diverges
    assert_same(ra, rb, a, b)


def test_multipliers_apply_inside_the_stack(task):
    """paramlab's forward hooks and the 1/d attention scale act inside functional_call + vmap: the stacked
    forward equals each model's own, and a stack whose base lost them does not."""
    ms = models(task, "mup", 64, [0, 1])
    x, _ = task.eval_windows(3, PROTO["context"])
    st = Stacked(ms)
    out = st(x)  # (K, 3, T, V)
    for r, m in enumerate(ms):
        torch.testing.assert_close(out[r], m(x), rtol=1e-12, atol=0)
    bare = Stacked(ms)
    pl.unparameterize(bare.base)
    bare.base.apply_plan(None)
    assert not torch.allclose(bare(x)[0], out[0], rtol=1e-3)


def test_refuses_mixed_schemes_widths_and_buffers(task):
    with pytest.raises(ValueError, match="same scheme, width and base width"):
        Stacked(models(task, "mup", 64, [0]) + models(task, "sp", 64, [1]))
    with pytest.raises(ValueError, match="other parameters"):
        Stacked(models(task, "mup", 64, [0]) + models(task, "mup", 32, [1]))
    with pytest.raises(ValueError, match="at least one"):
        Stacked([])


def test_depth_rule_stacks(task, eval_xy):
    """A depth-scaled Transformer (depth-muP at 2x base depth: branch outputs x 2^-1/2 by a forward hook,
    in-block Adam lr x 2^-1/2) stacks: stacked == one by one, so the stacked forward replays the branch
    hook and the stacked optimizer applies the rule's in-block lr factor; a mix of rules is refused."""
    kw = dict(depth=4, base_depth=2, depth_scaling="depth-mup")
    ms = [pl.transformer(task.vocab_size, 32, n_heads=4, base_width=16, max_len=PROTO["context"], seed=s,
                         dtype=torch.float64, **kw) for s in (0, 1)]
    assert pl.get_plan(ms[0]).depth.branch_mult == pytest.approx(2 ** -0.5)
    ra = train_lm_stacked(ms, task, lrs=[2 ** -6, 2 ** -7], seeds=[0, 1], eval_xy=eval_xy, **PROTO)
    one = [pl.transformer(task.vocab_size, 32, n_heads=4, base_width=16, max_len=PROTO["context"], seed=s,
                          dtype=torch.float64, **kw) for s in (0, 1)]
    rb = [train_lm(m, task, lr=lr, seed=s, eval_xy=eval_xy, **PROTO) for m, lr, s in zip(one, [2 ** -6, 2 ** -7], [0, 1])]
    assert_same(ra, rb, ms, one)
    other = pl.transformer(task.vocab_size, 32, n_heads=4, base_width=16, max_len=PROTO["context"], seed=2,
                           dtype=torch.float64, depth=4, base_depth=2, depth_scaling="completep")
    with pytest.raises(ValueError, match="different forward"):
        Stacked([ms[0], other])


def test_foreign_model_stacks_after_its_first_forward():
    """An HF GPT-2 (tiny config, built here) under muP with CompleteP on its Conv1D branches: refused while
    paramlab's first-forward check is pending (the fix named), then the stacked forward equals each model's
    own in float64, and a stack whose base lost the multipliers does not."""
    tr = pytest.importorskip("transformers")

    def gpt(d, seed):
        torch.manual_seed(seed)
        cfg = tr.GPT2Config(vocab_size=50, n_positions=16, n_embd=d, n_layer=4, n_head=4, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, attn_implementation="eager")
        return tr.GPT2LMHeadModel(cfg).double()

    ms = [pl.parameterize(gpt(64, s), "mup", base=gpt(32, 0), depth_scaling="completep", base_depth=2,
                          branches=["transformer.h.*.attn.c_proj", "transformer.h.*.mlp.c_proj"], seed=s)
          for s in (0, 1)]
    with pytest.raises(ValueError, match="first-forward check"):
        Stacked(ms)
    x = torch.randint(0, 50, (3, 16))
    own = [m(x).logits for m in ms]  # the first forward runs the check
    st = Stacked(ms)
    out = st(x).logits
    for r in range(2):
        torch.testing.assert_close(out[r], own[r], rtol=1e-12, atol=0)
    bare = Stacked(ms)
    pl.unparameterize(bare.base)
    assert not torch.allclose(bare(x).logits[0], own[0], rtol=1e-3)
