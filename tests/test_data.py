"""Tests for paramlab.data: determinism, shapes, teacher structure, caching, transfer splits, errors."""

import os
import pickle
import random
import re

import numpy as np
import pytest
import torch

from paramlab import data as D

# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------

SMALL_MNIST1D = 200  # 20 per class, generates in ~0.05 s (the import of mnist1d takes ~1 s)


@pytest.fixture
def no_download(monkeypatch):
    """Fail loudly if anything tries mnist1d's downloading path."""
    import mnist1d.data

    def boom(*a, **k):
        raise AssertionError("mnist1d.data.get_dataset (downloads) must never be called")

    monkeypatch.setattr(mnist1d.data, "get_dataset", boom)


@pytest.fixture
def count_make_dataset(monkeypatch, no_download):
    import mnist1d.data

    real = mnist1d.data.make_dataset
    calls = []

    def counting(args=None, template=None):
        calls.append(dict(vars(args)))
        return real(args, template)

    monkeypatch.setattr(mnist1d.data, "make_dataset", counting)
    return calls


def _same(a: D.Task, b: D.Task) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("x_train", "y_train", "x_test", "y_test"))


# ----------------------------------------------------------------------------------------------
# Task container
# ----------------------------------------------------------------------------------------------


def test_task_probe_is_fixed_and_targets_one_hot():
    t = D.sparse_parity(300, 200, d=10, k=2, seed=1)
    x1, y1 = t.probe(64)
    x2, y2 = t.probe(64)
    assert x1.shape == (64, 10) and torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = t.probe(64, seed=1)
    assert not torch.equal(x1, x3)
    xa, _ = t.probe(10_000, split="train")
    assert xa.shape[0] == t.n_train
    oh = t.targets("test")
    assert oh.shape == (200, 2) and oh.dtype == torch.float32 and torch.all(oh.sum(1) == 1)
    with pytest.raises(ValueError, match="split"):
        t.probe(8, split="val")
    with pytest.raises(ValueError, match="positive"):
        t.probe(0)


def test_task_validates_and_describes():
    x, yr = torch.zeros(4, 3), torch.zeros(4, 1)
    with pytest.raises(ValueError, match="kind"):
        D.Task("t", "ranking", x, yr, x, yr, d_in=3, d_out=1)
    with pytest.raises(TypeError, match="int64"):
        D.Task("t", "classification", x, yr, x, yr, d_in=3, d_out=2, n_classes=2)
    with pytest.raises(ValueError, match="labels outside"):
        y = torch.tensor([0, 1, 2, 5])
        D.Task("t", "classification", x, y, x, y, d_in=3, d_out=3, n_classes=3)
    t = D.multi_index(8, 4, d=6, k=2)
    desc = t.describe()
    assert desc["link"] == "tanh_prod" and desc["n_train"] == 8 and "U" not in desc and "teacher" not in desc
    assert "n_train=8" in repr(t) and len(repr(t)) < 200
    pickle.loads(pickle.dumps(t))  # teacher is picklable
    assert t.to("cpu").x_train.device.type == "cpu"


# ----------------------------------------------------------------------------------------------
# multi-index
# ----------------------------------------------------------------------------------------------


def test_multi_index_determinism_and_shapes():
    a = D.multi_index(100, 50, d=16, k=3, seed=3)
    b = D.multi_index(100, 50, d=16, k=3, seed=3)
    c = D.multi_index(100, 50, d=16, k=3, seed=4)
    assert _same(a, b) and torch.equal(a.meta["U"], b.meta["U"])
    assert not torch.equal(a.x_train, c.x_train) and not torch.equal(a.meta["U"], c.meta["U"])
    assert a.x_train.shape == (100, 16) and a.y_train.shape == (100, 1) and a.x_test.shape == (50, 16)
    assert a.x_train.dtype == a.y_train.dtype == torch.float32
    assert (a.kind, a.d_in, a.d_out, a.n_classes) == ("regression", 16, 1, None)
    assert a.meta["U"].shape == (3, 16)
    # the test set does not depend on n_train
    e = D.multi_index(10, 50, d=16, k=3, seed=3)
    assert torch.equal(a.x_test, e.x_test) and torch.equal(a.y_test, e.y_test)


def test_multi_index_defaults():
    t = D.multi_index(5, 5)
    assert t.d_in == 32 and t.meta["k"] == 2 and t.meta["link"] == "tanh_prod"


@pytest.mark.parametrize("link", sorted(D.LINKS))
def test_multi_index_depends_only_on_Ux(link):
    t = D.multi_index(3000, 200, d=12, k=3, link=link, seed=0)
    U = t.meta["U"].double()  # (k, d)
    assert torch.allclose(U @ U.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
    teacher = t.meta["teacher"]
    assert torch.allclose(teacher(t.x_test), t.y_test, atol=1e-5)
    # perturb orthogonally to span(U): y unchanged
    x = t.x_test.double()
    r = 3.0 * torch.randn_like(x)
    r_perp = r - (r @ U.T) @ U  # (N, d), U r_perp = 0
    assert torch.allclose(teacher(x + r_perp), teacher(x), atol=1e-5)
    # perturb inside span(U): y changes
    r_par = (r @ U.T) @ U
    assert (teacher(x + r_par) - teacher(x)).abs().max() > 1e-2
    # targets standardized: mean ~0, variance ~1
    assert abs(float(t.y_train.mean())) < 0.1 and abs(float(t.y_train.std()) - 1) < 0.1


def test_multi_index_given_U_and_noise():
    a = D.multi_index(50, 40, d=10, k=2, seed=0)
    b = D.multi_index(50, 40, link="quadratic", seed=5, U=a.meta["U"])
    assert torch.equal(a.meta["U"], b.meta["U"]) and b.d_in == 10 and b.meta["k"] == 2
    n = D.multi_index(50, 40, d=10, k=2, seed=0, noise=0.5)
    assert torch.equal(n.x_train, a.x_train) and not torch.equal(n.y_train, a.y_train)
    assert torch.equal(n.y_test, a.y_test)  # test targets are the clean teacher

    def my_link(z):
        return z[:, 0] ** 3

    c = D.multi_index(20, 10, d=5, k=1, link=my_link)
    assert c.meta["link"] == "my_link"


def test_multi_index_errors():
    with pytest.raises(ValueError, match="cannot exceed"):
        D.multi_index(10, 10, d=3, k=4)
    with pytest.raises(ValueError, match="n_train must be positive"):
        D.multi_index(0, 10)
    with pytest.raises(ValueError, match="n_test must be positive"):
        D.multi_index(10, -1)
    with pytest.raises(ValueError, match="known links"):
        D.multi_index(10, 10, link="sine")
    with pytest.raises(ValueError, match="orthonormal"):
        D.multi_index(10, 10, U=2 * np.eye(2, 5))
    with pytest.raises(ValueError, match="noise"):
        D.multi_index(10, 10, noise=-1)
    with pytest.raises(ValueError, match="match U"):
        D.multi_index(10, 10, d=7, U=np.eye(2, 5))


# ----------------------------------------------------------------------------------------------
# sparse parity
# ----------------------------------------------------------------------------------------------


def test_sparse_parity_labels_correct():
    t = D.sparse_parity(500, 300, d=20, k=3, seed=2)
    S = t.meta["support"]
    assert len(S) == 3 == len(set(S)) and S == sorted(S) and all(0 <= i < 20 for i in S)
    assert t.x_train.shape == (500, 20) and t.y_train.dtype == torch.int64 and t.n_classes == 2 == t.d_out
    assert set(t.x_train.unique().tolist()) == {-1.0, 1.0}
    for x, y in ((t.x_train, t.y_train), (t.x_test, t.y_test)):
        chi = x[:, S].prod(1)
        assert torch.equal(y, ((1 - chi) / 2).long())
    # no single coordinate predicts the label, labels are roughly balanced
    assert 0.4 < t.y_train.float().mean() < 0.6
    r = D.sparse_parity(500, 300, d=20, k=3, seed=2, kind="regression")
    assert r.y_train.shape == (500, 1) and torch.equal(r.y_train[:, 0], t.meta["chi_train"])
    assert torch.equal(r.x_train, t.x_train)
    assert _same(t, D.sparse_parity(500, 300, d=20, k=3, seed=2))
    supports = {tuple(D.sparse_parity(2, 2, d=20, k=3, seed=s).meta["support"]) for s in range(5)}
    assert len(supports) > 1  # the secret support is drawn from the seed


def test_sparse_parity_errors():
    with pytest.raises(ValueError, match="cannot exceed"):
        D.sparse_parity(10, 10, d=4, k=5)
    with pytest.raises(ValueError, match="k must be positive"):
        D.sparse_parity(10, 10, k=0)
    with pytest.raises(ValueError, match="kind"):
        D.sparse_parity(10, 10, kind="ordinal")


# ----------------------------------------------------------------------------------------------
# mnist1d
# ----------------------------------------------------------------------------------------------


def test_mnist1d_generates_once_then_hits_cache(tmp_path, count_make_dataset, monkeypatch):
    a = D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path)
    assert len(count_make_dataset) == 1 and count_make_dataset[0]["num_samples"] == SMALL_MNIST1D
    assert not a.meta["cache_hit"]
    assert a.x_train.shape == (160, 40) and a.x_test.shape == (40, 40)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert (a.n_classes, a.d_in, a.d_out) == (10, 40, 10)
    assert torch.allclose(a.x_train.mean(0), torch.zeros(40), atol=1e-4)
    assert torch.allclose(a.x_train.std(0, unbiased=False), torch.ones(40), atol=1e-3)
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("mnist1d_") and files[0].endswith(".npz"), files

    import mnist1d.data

    def must_not_generate(*a, **k):
        raise AssertionError("cache hit expected")

    monkeypatch.setattr(mnist1d.data, "make_dataset", must_not_generate)
    b = D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path)
    assert b.meta["cache_hit"] and _same(a, b)
    # classes subset from the same cache, labels remapped in the given order
    c = D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path, classes=[7, 2])
    assert c.n_classes == 2 and set(c.y_train.tolist()) == {0, 1}
    assert int((c.y_train == 0).sum()) == int((a.y_train == 7).sum())


def test_mnist1d_cache_keyed_by_args_and_env(tmp_path, count_make_dataset, monkeypatch):
    monkeypatch.setenv("PARAMLAB_CACHE", str(tmp_path / "env"))
    assert D.cache_dir() == tmp_path / "env"
    a = D.mnist1d(num_samples=SMALL_MNIST1D)
    b = D.mnist1d(num_samples=SMALL_MNIST1D, seed=1)
    c = D.mnist1d(num_samples=SMALL_MNIST1D, shuffle_seq=True)
    assert len(count_make_dataset) == 3
    assert len(os.listdir(tmp_path / "env")) == 3
    assert not torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    D.mnist1d(num_samples=SMALL_MNIST1D, seed=1)
    assert len(count_make_dataset) == 3
    # explicit argument beats the env var; use_cache=False writes nothing
    D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path / "arg", use_cache=False)
    assert not (tmp_path / "arg").exists()


def test_mnist1d_cache_written_atomically(tmp_path, no_download, monkeypatch):
    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy_replace)
    t = D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path)
    assert len(replaced) == 1
    src, dst = replaced[0]
    assert dst == t.meta["cache_path"] and os.path.dirname(src) == os.path.dirname(dst) == str(tmp_path)
    assert src.endswith(".tmp") and not os.path.exists(src)
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(dst)]

    # a crash while writing leaves neither a partial cache file nor a temp file behind
    other = tmp_path / "crash"

    def broken_savez(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.warns(UserWarning, match="could not write"):
        u = D.mnist1d(num_samples=SMALL_MNIST1D, cache=other)
    assert _same(t, u)
    assert os.listdir(other) == []


def test_mnist1d_corrupt_cache_is_regenerated(tmp_path, no_download):
    t = D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path)
    with open(t.meta["cache_path"], "wb") as f:
        f.write(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable"):
        u = D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path)
    assert _same(t, u) and not u.meta["cache_hit"]
    assert D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path).meta["cache_hit"]


def test_mnist1d_leaves_global_rng_alone(tmp_path, no_download):
    np.random.seed(123)
    random.seed(123)
    expect_np, expect_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path, use_cache=False)
    assert np.random.rand() == expect_np and random.random() == expect_py


def test_mnist1d_errors(tmp_path):
    with pytest.raises(ValueError, match="num_samples"):
        D.mnist1d(num_samples=0, cache=tmp_path)
    with pytest.raises(ValueError, match="num_samples >= 10"):
        D.mnist1d(num_samples=5, cache=tmp_path)
    with pytest.raises(ValueError, match="unknown mnist1d generation args"):
        D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path, colour=3)
    with pytest.raises(ValueError, match="train_split"):
        D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path, train_split=1.0)
    with pytest.raises(ValueError, match="outside 0..9"):
        D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path, classes=[3, 10])


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------


def test_digits_shapes_split_and_scaling():
    t = D.digits(seed=0)
    assert t.n_train + t.n_test == 1797 and t.x_train.shape[1] == 64 and t.d_in == 64
    assert t.x_train.dtype == torch.float32 and t.y_train.dtype == torch.int64 and t.n_classes == 10
    assert torch.allclose(t.x_train.mean(0), torch.zeros(64), atol=1e-4)
    assert set(t.y_test.unique().tolist()) == set(range(10))  # stratified
    im = D.digits(seed=0, as_image=True)
    assert im.x_train.shape == (t.n_train, 1, 8, 8) and im.d_in == 64 and im.input_shape == (1, 8, 8)
    assert torch.equal(im.x_train.reshape(t.n_train, 64), t.x_train)
    raw = D.digits(seed=0, standardize="none")
    assert float(raw.x_train.min()) >= 0 and float(raw.x_train.max()) <= 1
    assert _same(t, D.digits(seed=0)) and not torch.equal(t.y_train, D.digits(seed=1).y_train)
    with pytest.raises(ValueError, match="standardize"):
        D.digits(standardize="minmax")
    with pytest.raises(ValueError, match="test_size"):
        D.digits(test_size=0)


# ----------------------------------------------------------------------------------------------
# few-shot and transfer pairs
# ----------------------------------------------------------------------------------------------


def test_few_shot_exact_counts():
    t = D.digits(seed=0)
    f = D.few_shot(t, 4, seed=1)
    assert torch.equal(torch.bincount(f.y_train, minlength=10), torch.full((10,), 4))
    assert torch.equal(f.x_test, t.x_test) and f.meta["few_shot"]["k_per_class"] == 4
    idx = torch.tensor(f.meta["few_shot"]["indices"])
    assert torch.equal(t.x_train[idx], f.x_train)
    assert _same(f, D.few_shot(t, 4, seed=1)) and not torch.equal(f.x_train, D.few_shot(t, 4, seed=2).x_train)
    with pytest.raises(ValueError, match="fewer training examples"):
        D.few_shot(t, 10_000)
    with pytest.raises(ValueError, match="classification"):
        D.few_shot(D.multi_index(10, 10), 2)
    with pytest.raises(ValueError, match="k_per_class must be positive"):
        D.few_shot(t, 0)


def test_transfer_multi_index_shares_U():
    a, b = D.transfer_pair("multi_index", n_train=200, n_test=100, n_train_b=16, d=12, k=2)
    assert torch.equal(a.meta["U"], b.meta["U"])
    assert a.meta["link"] != b.meta["link"] and (a.meta["role"], b.meta["role"]) == ("A", "B")
    assert b.n_train == 16 and b.n_test == 100
    assert not torch.allclose(a.meta["teacher"](b.x_test), b.y_test, atol=1e-2)
    with pytest.raises(ValueError, match="must differ"):
        D.transfer_pair("multi_index", link_a="relu", link_b="relu")


def _check_class_pair(a, b, k, classes_a, classes_b, full_b_test):
    assert set(a.meta["classes"]).isdisjoint(b.meta["classes"])
    assert a.meta["classes"] == list(classes_a) and b.meta["classes"] == list(classes_b)
    assert a.n_classes == len(classes_a) and b.n_classes == len(classes_b)
    assert set(a.y_train.tolist()) == set(range(len(classes_a)))
    assert torch.equal(torch.bincount(b.y_train, minlength=b.n_classes), torch.full((b.n_classes,), k))
    assert set(b.y_test.tolist()) == set(range(len(classes_b)))
    assert b.n_test == full_b_test


def test_transfer_digits_disjoint_k_shot():
    a, b = D.transfer_pair("digits", k_per_class=3, seed=0)
    full = D.digits(seed=0, classes=[5, 6, 7, 8, 9], standardize="none")
    _check_class_pair(a, b, 3, range(5), range(5, 10), full.n_test)
    a2, b2 = D.transfer_pair("digits", classes_a=[9, 1], classes_b=[0, 3, 4], k_per_class=2, as_image=True)
    _check_class_pair(a2, b2, 2, [9, 1], [0, 3, 4], D.digits(classes=[0, 3, 4]).n_test)
    assert b2.x_train.shape == (6, 1, 8, 8)
    with pytest.raises(ValueError, match="disjoint"):
        D.transfer_pair("digits", classes_a=[0, 1, 2], classes_b=[2, 3])


def test_transfer_mnist1d_disjoint_k_shot(tmp_path, no_download):
    a, b = D.transfer_pair("mnist1d", k_per_class=2, num_samples=SMALL_MNIST1D, cache=tmp_path)
    full = D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path, classes=[5, 6, 7, 8, 9])
    assert full.meta["cache_hit"]
    _check_class_pair(a, b, 2, range(5), range(5, 10), full.n_test)
    assert a.x_train.shape[1] == b.x_train.shape[1] == 40


def test_registry_and_unknown_names():
    assert set(D.TASKS) == {"multi_index", "sparse_parity", "mnist1d", "digits"}
    t = D.get_task("sparse-parity", n_train=8, n_test=4, d=6, k=2)
    assert t.name == "sparse_parity" and t.d_in == 6
    with pytest.raises(ValueError, match=r"unknown task 'cifar10'; known: \['digits', 'mnist1d'"):
        D.get_task("cifar10")
    with pytest.raises(ValueError, match="unknown transfer pair 'sparse_parity'; known"):
        D.transfer_pair("sparse_parity")


@pytest.mark.parametrize("tamper, why", [
    ("labels", "its arrays' sha256 differs"),           # labels swapped, shapes kept
    ("rows", "x is float32 (159, 40), expected float32 (160, 40)"),  # a row dropped
    ("out_of_range", "y has labels outside 0..9"),
    ("args", "it was written for other generation args"),
])
def test_mnist1d_tampered_cache_is_regenerated_with_a_warning(tmp_path, count_make_dataset, tamper, why):
    a = D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path)
    path = a.meta["cache_path"]
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    if tamper == "labels":
        data["y"] = (data["y"] + 1) % 10
    elif tamper == "rows":
        data["x"] = data["x"][1:]
    elif tamper == "out_of_range":
        data["y"] = data["y"] + 10
    else:
        data["args_json"] = np.array(str(data["args_json"]).replace('"seed": 42', '"seed": 7'))
    np.savez(path, **data)
    with pytest.warns(UserWarning, match=re.escape(f"mnist1d cache {path} does not match its arguments ({why}")):
        b = D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path)
    assert len(count_make_dataset) == 2 and not b.meta["cache_hit"] and _same(a, b)
    c = D.mnist1d(num_samples=SMALL_MNIST1D, cache=tmp_path)  # the regenerated cache is whole again
    assert c.meta["cache_hit"] and len(count_make_dataset) == 2
