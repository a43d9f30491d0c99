"""The real-data transfer pairs: shapes, no leakage between A and B, determinism, and
the CBOW model and kernel baseline they rely on."""

import numpy as np
import pytest
import torch

import paramlab as pl
from paramlab import data as D
from paramlab.data import text_pairs
from paramlab.data.episodes import Episodes, k_shot_episodes
from paramlab.measure.kernels import MLPKernel

IMAGE = ["mnist1d_disjoint", "mnist1d_compose", "digits_disjoint"]
TEXT = ["shakespeare_w2v", "shakespeare_plays"]


def _rows(x):
    return {bytes(r) for r in x.numpy().reshape(len(x), -1)}


@pytest.fixture(scope="module")
def pairs():
    """name -> (A, B) with 4 draws (k=2 shots per class for the images, the pairs' own k for text)."""
    out = {n: D.transfer_episodes(n, k=2, n_episodes=4) for n in IMAGE}
    out |= {n: D.transfer_episodes(n, n_episodes=4) for n in TEXT}
    return out


@pytest.mark.parametrize("name", IMAGE + TEXT)
def test_shapes_and_registered(name, pairs):
    A, B = pairs[name]
    assert name in D.TRANSFER_PAIRS and name in D.EPISODE_PAIRS
    assert A.kind == "classification" and len(B) == 4 and B.x.dtype == torch.float32
    per_class = 10 if name == "mnist1d_compose" else B.n_classes  # compose: k shots per *original* class
    for e, (tr, te) in enumerate(B.episodes):
        assert len(tr) == B.meta["k_per_class"] * per_class and len(te) > len(tr)
        assert not set(tr.tolist()) & set(te.tolist())
        y = B.labels(e)
        assert y.shape == (len(B.x),) and int(y.max()) < B.n_classes
        assert torch.bincount(y[torch.from_numpy(tr)], minlength=B.n_classes).min() > 0  # every class has shots
    t = D.transfer_pair(name, episode=2, **({"k": 2} if name in IMAGE else {}))[1]  # one draw as a Task
    tr, te = B.episodes[2]
    assert torch.equal(t.x_train, B.x[tr]) and torch.equal(t.y_test, B.labels(2)[te])
    assert t.d_out == B.n_classes and t.meta["episode"] == 2


def test_text_inputs_are_word_ids(pairs):
    A, B = pairs["shakespeare_w2v"]
    assert A.meta["input"] == "token_ids" and A.d_in == 4 and A.n_classes == A.meta["vocab_size"] == 2000
    assert float(A.x_train.min()) >= -1 and float(A.x_train.max()) < 2000 and B.x.shape[1] == 1
    assert len(B) == 4 and B.n_classes == 10 and 150 < len(B.x) < 200


@pytest.mark.parametrize("name", IMAGE)
def test_images_no_leakage(name, pairs):
    A, B = pairs[name]
    assert not _rows(A.x_train) & _rows(B.x), "a B item is in A's training set"
    assert not _rows(A.x_train) & _rows(B.x[torch.from_numpy(B.episodes[0][1])])
    if name != "mnist1d_compose":  # disjoint classes: B's original classes are never A's
        assert not set(A.meta["classes"]) & set(B.meta["classes"])
    else:  # compose: every draw splits the 10 classes into two halves
        assert all(len(s) == 5 for s in B.meta["subsets"]) and len({tuple(s) for s in B.meta["subsets"]}) > 1


def test_text_no_leakage():
    words = text_pairs.word_category_episodes(n_episodes=1)
    assert len(set(words.meta["words"])) == len(words.meta["words"])  # no word in two categories
    plays = text_pairs.play_episodes(n_episodes=1)
    # every speech of the plays task lies after A's last training window (centres < cut, reach cut - 1 + window)
    cut = int(len(text_pairs.spoken_words()) * 0.9)
    assert min(plays.meta["starts"]) >= cut + 2
    assert 0 < plays.meta["counts"][1] < plays.meta["counts"][0]


@pytest.mark.parametrize("name", ["mnist1d_compose", "shakespeare_w2v"])
def test_determinism(name):
    kw = {"k": 2} if name in IMAGE else {}
    A, B = D.transfer_episodes(name, n_episodes=3, seed=0, **kw)
    A2, B2 = D.transfer_episodes(name, n_episodes=3, seed=0, **kw)
    _, B3 = D.transfer_episodes(name, n_episodes=3, seed=1, **kw)
    assert torch.equal(A.x_train, A2.x_train) and torch.equal(A.y_train, A2.y_train)
    assert torch.equal(B.x, B2.x) and torch.equal(B.x, B3.x)  # the pool does not depend on the draw seed
    for e in range(3):
        assert all(np.array_equal(a, b) for a, b in zip(B.episodes[e], B2.episodes[e]))
        assert torch.equal(B.labels(e), B2.labels(e))
    assert not np.array_equal(B.episodes[0][0], B3.episodes[0][0])  # another seed draws other shots
    assert not np.array_equal(B.episodes[0][0], B.episodes[1][0])  # and the draws of one seed differ
    _, B5 = D.transfer_episodes(name, n_episodes=5, seed=0, **kw)  # draw e does not depend on n_episodes
    assert np.array_equal(B5.episodes[2][0], B.episodes[2][0])


def test_episodes_refuse_bad_draws():
    y = np.array([0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="fewer candidates"):
        k_shot_episodes(y, np.array([0, 2]), k=2, n=1, seed=0)  # class 0 has one candidate left
    with pytest.raises(ValueError, match="overlap"):
        Episodes("x", torch.zeros(5, 1), torch.from_numpy(y), 2, [(np.array([0, 1]), np.array([1, 2]))])
    with pytest.raises(ValueError, match="not an episode pair"):
        D.transfer_episodes("multi_index")
    with pytest.raises(ValueError, match="fewer than 2 categories"):
        text_pairs.word_category_episodes(vocab=60, n_episodes=1)


# -- the CBOW model ---------------------------------------------------------------------------------


def test_cbow_masked_mean_and_roles():
    m = pl.cbow(50, 16, scheme="mup", base_width=16, seed=0)
    x = torch.tensor([[3.0, 5.0, -1.0, -1.0], [5.0, 3.0, 3.0, 5.0]])
    f = m.features(x)
    assert torch.allclose(f[0], f[1], atol=1e-6)  # the mean of the present words; -1 is no word
    assert torch.allclose(f[0], m.features(torch.tensor([[3.0, 5.0]]))[0], atol=1e-6)
    roles = {t.name: t.role for t in pl.get_plan(m)}
    assert roles == {"emb.weight": "input", "readout.weight": "output", "readout.bias": "scalar"}
    with pytest.raises(ValueError, match="outside this CBOW's vocabulary"):
        m(torch.tensor([[50.0]]))


def test_cbow_schemes_coincide_at_base_width():
    x, y = torch.tensor([[1.0, 2, 3, -1], [4, 5, 6, 7]]), torch.tensor([0, 9])
    outs = []
    for s in ("sp-stable", "ntk", "mf", "mup"):
        m = pl.cbow(30, 16, scheme=s, base_width=16, seed=3)
        opt = pl.optimizer(m, "adam", lr=1e-2)
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        outs.append(m(x).detach())
    assert all(torch.allclose(o, outs[0], atol=1e-6) for o in outs[1:])
    m2 = pl.cbow(30, 32, scheme="ntk", base_width=16, seed=3)  # control: off the base width they differ
    m3 = pl.cbow(30, 32, scheme="mup", base_width=16, seed=3)
    assert not torch.allclose(m2(x), m3(x), atol=1e-3)


def test_cbow_kernel_is_the_bag_of_words_kernel():
    """Monte Carlo: the initial CBOW features' Gram / width -> bow . bow' = vocab * MLPKernel(depth=1,
    linear) NNGP of the normalized bag of words (the baseline the experiment uses for text pairs)."""
    from paramlab.kit.transfer_episodes import bag_of_words

    vocab, width = 40, 8192
    ids = torch.tensor([[1.0, 2, -1], [2.0, 3, -1], [4.0, -1, -1], [1.0, 2, 2]])
    m = pl.cbow(vocab, width, scheme="ntk", base_width=64, seed=0)
    f = m.features(ids).double()
    mc = f @ f.T / width
    bow = bag_of_words(ids, vocab)
    k = vocab * MLPKernel(depth=1, activation="linear", W_std=1.0).nngp(bow)
    assert torch.allclose(k, bow @ bow.T, atol=1e-12)
    assert (mc - k).abs().max() < 5 / width**0.5, (mc, k)
    assert (mc - k).abs().max() > 1e-4  # Monte Carlo, not a copy
    assert abs(float(k[0, 2])) < 1e-12  # two texts with no word in common: kernel 0
