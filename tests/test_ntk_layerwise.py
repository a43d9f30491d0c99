"""Tests for paramlab.measure.ntk_layerwise: the hook-based eNTK against the naive per-example loop on
convolutions of every padding / stride / dilation kind, Transformers (tied and untied), layers called
twice, weights also used outside their layer (the autograd guard), chunking, and batch norm."""

import pytest
import torch
from torch import nn

import paramlab as pl
from paramlab.measure.ntk import split_params, empirical_ntk, ntk_naive
from paramlab.measure.ntk_layerwise import layerwise_ntk

F64 = torch.float64
MODES = ("full", "trace", "diagonal")


def rel(a, b):
    return float((a - b).norm() / b.norm())


def check(model, x, x2=None, **kw):
    """layerwise == naive loop in every mode (and pairs); returns the tensors left to the generic path."""
    ref = ntk_naive(model, x, x2)
    diag = torch.diagonal(ref, dim1=-2, dim2=-1)
    want = {"full": ref, "trace": diag.mean(-1), "diagonal": diag}
    for mode in MODES:
        assert rel(empirical_ntk(model, x, x2, mode=mode, method="layerwise", **kw), want[mode]) < 1e-10, mode
    if x2 is None:
        idx = torch.arange(x.shape[0])
        for mode in MODES:
            got = empirical_ntk(model, x, mode=mode, pairs=True, method="layerwise", **kw)
            assert rel(got, want[mode][idx, idx]) < 1e-10, mode
    trained, fixed = split_params(model, None)
    return layerwise_ntk(model, trained, fixed, x, x2, None, "trace", False)[1]


class Convs(nn.Module):
    """Conv2d / Conv1d layers with every padding kind, stride and dilation, then a linear head."""

    def __init__(self, width=6):
        super().__init__()
        kw = dict(dtype=F64)
        self.a = nn.Conv2d(2, width, 3, padding=1, **kw)
        self.b = nn.Conv2d(width, width, 4, padding="same", dilation=2, **kw)  # even kernel: asymmetric pad
        self.c = nn.Conv2d(width, width, (3, 2), stride=2, padding="valid", bias=False, **kw)
        self.d = nn.Conv1d(width, width, 3, padding=2, dilation=2, **kw)
        self.e = nn.Conv1d(width, width, 4, padding="same", **kw)  # 1-d, even kernel
        self.head = nn.Linear(width, 3, **kw)

    def forward(self, x):
        h = torch.tanh(self.c(torch.relu(self.b(torch.tanh(self.a(x))))))  # (B, W, H', W')
        h = torch.tanh(self.e(torch.tanh(self.d(h.flatten(2)))))  # (B, W, L)
        return self.head(h.mean(-1))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch: the padded copy is the point
def test_convolutions_of_every_padding_stride_dilation_match_the_loop():
    torch.manual_seed(0)
    model = Convs()
    x = torch.randn(4, 2, 7, 6, dtype=F64)
    rest = check(model, x)
    check(model, x, torch.randn(3, 2, 7, 6, dtype=F64))
    assert rest == []  # every tensor is covered by the hooks


@pytest.mark.parametrize("scheme", ["sp", "ntk", "mup"])
def test_paramlab_cnn_with_norm_and_residual_matches_the_loop(scheme):
    model = pl.cnn(1, 3, 12, depth=3, dim=2, scheme=scheme, base_width=4, seed=0, dtype=F64, norm="layer",
                   residual=True, bias_std=0.1)
    x = torch.randn(4, 1, 5, 5, dtype=F64)
    rest = check(model, x)
    assert sorted(rest) == sorted(n for n, _ in model.named_parameters() if ".norm." in n)
    lr_lw = empirical_ntk(model, x, weights="lr", method="layerwise")
    assert rel(lr_lw, empirical_ntk(model, x, weights="lr", method="jacobian")) < 1e-10


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # torch vmap fallback for fused attention
@pytest.mark.parametrize("tied", [False, True])
def test_transformer_matches_the_loop(tied):
    model = pl.transformer(7, 8, depth=1, n_heads=2, scheme="mup", base_width=4, seed=0, dtype=F64, max_len=4,
                           tied=tied)
    idx = torch.randint(0, 7, (3, 4), generator=torch.Generator().manual_seed(0))
    rest = check(model, idx)
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    covered = {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] in linears}
    assert covered and not covered & set(rest)  # q, k, v, o, fc, proj (and an untied readout) by hooks
    assert "tok_emb.weight" in rest  # embeddings (and the tied readout that shares them) go generic


class FcHead(nn.Module):
    """fc (5 -> 5) then a head (5 -> 2), with fc used in one of three unusual ways (`use`):
    'twice': applied twice (shared weights); 'outside': fc.weight also used outside fc (x @ W^T),
    which hooks on fc alone would miss; 'keyword': fc called with input= (its hook sees no input)."""

    def __init__(self, use):
        super().__init__()
        self.fc = nn.Linear(5, 5, dtype=F64)
        self.head = nn.Linear(5, 2, dtype=F64)
        self.use = use

    def forward(self, x):
        if self.use == "twice":
            return self.head(torch.tanh(self.fc(torch.tanh(self.fc(x)))))
        if self.use == "outside":
            return self.head(torch.tanh(self.fc(x)) + x @ self.fc.weight.T)
        return self.head(torch.tanh(self.fc(input=x)))


@pytest.mark.parametrize("use, generic", [
    ("twice", []),  # both calls are summed over as positions
    ("outside", ["fc.weight"]),  # fails the autograd guard; fc.bias and head stay hooked
    ("keyword", ["fc.weight", "fc.bias"]),
])
def test_unusual_uses_of_a_layer(use, generic):
    torch.manual_seed(0)
    assert check(FcHead(use), torch.randn(4, 5, dtype=F64)) == generic


def test_chunked_per_example_path_is_identical():
    torch.manual_seed(0)
    model = Convs()
    x = torch.randn(6, 2, 7, 6, dtype=F64)
    whole = empirical_ntk(model, x, method="layerwise")
    tiny = empirical_ntk(model, x, method="layerwise", max_memory=1)  # one example per chunk
    assert rel(tiny, whole) < 1e-12
    x2 = torch.randn(5, 2, 7, 6, dtype=F64)
    assert rel(empirical_ntk(model, x, x2, method="layerwise", max_memory=1),
               empirical_ntk(model, x, x2, method="layerwise")) < 1e-12


def test_batch_norm_in_training_mode_is_refused_eval_mode_is_not():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=F64)
    with pytest.raises(ValueError, match="batch norm"):
        empirical_ntk(model, x, method="layerwise")
    model.eval()  # eval mode: per-example affine, so the hooks apply (BN's own tensors go generic)
    assert rel(empirical_ntk(model, x, method="layerwise"), ntk_naive(model, x)) < 1e-10



@pytest.mark.parametrize("n", [1, 11, 16])
def test_gram_triangle_is_the_weighted_gram(n):
    """The upper-block-triangle Gram (mirrored) equals the plain weighted sum of J J^T, every block size."""
    from paramlab.measure.jacobian import gram_triangle

    g = torch.Generator().manual_seed(n)
    jac = {"a": torch.randn(n, 3, 7, generator=g, dtype=F64), "b": torch.randn(n, 3, 5, generator=g, dtype=F64)}
    w = {"a": 0.5, "b": -2.0}
    want = sum(w[k] * torch.einsum("ikp,jlp->ijkl", v, v) for k, v in jac.items())
    assert rel(gram_triangle(jac, w), want) < 1e-14
    assert rel(gram_triangle(jac, None), sum(torch.einsum("ikp,jlp->ijkl", v, v) for v in jac.values())) < 1e-14
    w_off = {"a": 0.5, "b": -2.0 * 1.001}  # negative control: a 0.1% weight change is seen
    assert rel(gram_triangle(jac, w_off), want) > 1e-6
