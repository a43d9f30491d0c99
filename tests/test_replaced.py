"""A planned layer replaced after parameterize (same name, new object: a new fine-tuning head, HF's
resize_token_embeddings, another d_out) is refused at its first forward, by paramlab.optimizer and by
role_table, with the fix; the re-plan the message names gives the new layer its scheme."""

import copy

import pytest
import torch
from torch import nn

import paramlab as pl
from paramlab.parameterize import replan_resized

REFUSED = "this model changed after paramlab.parameterize"


class Net(nn.Module):
    def __init__(self, width, d_out=4):
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.out = nn.Linear(width, d_out)

    def forward(self, x):
        return self.out(torch.relu(self.inp(x)))


def net(width=256, d_out=4):
    return pl.parameterize(Net(width, d_out), "mup", base=Net(64, d_out), seed=0)


def refused_everywhere(model, x, match=REFUSED):
    with pytest.raises(ValueError, match=match):
        model(x)
    with pytest.raises(ValueError, match=match):
        pl.optimizer(model, "adam", lr=1e-3)
    with pytest.raises(ValueError, match=match):
        pl.role_table(model)


@pytest.mark.parametrize("d_out", [4, 3])
def test_replaced_readout_refused_at_forward_optimizer_and_role_table(d_out):
    m, x = net(), torch.randn(5, 8)
    m(x)  # the first forward passed: the replacement comes later, as a new fine-tuning head would
    m.out = nn.Linear(256, d_out)
    refused_everywhere(m, x, r"out was replaced by a new Linear after parameterize")
    with pytest.raises(ValueError, match=r"unparameterize\(model\).*reinit=False"):
        pl.optimizer(m, "sgd", lr=0.1)
    if d_out != 4:
        with pytest.raises(ValueError, match=r"out.weight: plan shape \[4, 256\], now \[3, 256\]"):
            pl.role_table(m)


def test_replaced_tensor_of_another_shape_and_replaced_block_refused():
    m, x = net(), torch.randn(5, 8)
    m.out.weight = nn.Parameter(torch.zeros(3, 256))  # same module, another d_out
    with pytest.raises(ValueError, match=r"out.weight has shape \[3, 256\] now .*; the plan's is \[4, 256\]"):
        pl.optimizer(m, "adam", lr=1e-3)
    blocks = pl.mlp(8, 4, 128, depth=3, seed=0)
    blocks.layers[1] = nn.Linear(128, 128)  # a layer inside a container
    refused_everywhere(blocks, x, r"1 was replaced by a new Linear")


def test_unchanged_models_pass_negative_controls():
    """deepcopy, state_dict loads (also assign=True), re-tying the same module and putting a planned module
    back are not replacements."""
    m, x = net(), torch.randn(5, 8)
    m(x)
    c = copy.deepcopy(m)
    c.load_state_dict(m.state_dict(), assign=True)
    c.out = c.out
    for model in (m, c):
        model(x)
        pl.optimizer(model, "adam", lr=1e-3)
        assert "out.weight" in pl.role_table(model)
    old = m.out
    m.out = nn.Linear(256, 4)
    m.out = old
    m(x)
    pl.optimizer(m, "adam", lr=1e-3)


def test_replan_gives_the_new_layer_its_scheme():
    """The fix the message names: unparameterize, parameterize again with reinit=False; the new readout
    then gets muP's 1/m multiplier (checked against the layer's own output) and the plan's lr."""
    torch.manual_seed(0)
    m, x = net(), torch.randn(5, 8)
    head = nn.Linear(256, 3)
    m.out = head
    pl.unparameterize(m)
    pl.parameterize(m, "mup", base=Net(64, 3), reinit=False)
    h = torch.relu(m.inp(x))
    want = head.weight @ h.T * (64 / 256) + head.bias[:, None]  # muP readout: w / m on the input, bias as is
    assert torch.allclose(m(x), want.T, atol=1e-6)
    assert pl.get_plan(m)["out.weight"].mult == pytest.approx(0.25)
    unscaled = h @ head.weight.T + head.bias
    assert not torch.allclose(m(x), unscaled, atol=1e-3)  # negative control: the multiplier matters here


@pytest.mark.parametrize("tied", [False, True])
def test_hf_resize_token_embeddings_refused(tied):
    """Untied, HF puts a new nn.Linear head in place: refused at the first forward. Tied, it resizes the shared
    tensor in place (weight.data = ...), the readout keeps its multiplier and the forward is right, but the plan's
    shapes are stale: the optimizer and role_table refuse."""
    from foreign import gpt2, tokens

    model = pl.parameterize(gpt2(64, tied=tied), "mup", base=gpt2(32, tied=tied, device="meta"), seed=0)
    idx = tokens()
    model(idx)
    model.resize_token_embeddings(80)
    if not tied:
        refused_everywhere(model, idx, r"lm_head was replaced by a new Linear")
        with pytest.raises(ValueError, match=r"lm_head was replaced"):  # a new module is no resize
            replan_resized(model)
    else:
        model(idx)
        for f in (lambda: pl.optimizer(model, "adam", lr=1e-3), lambda: pl.role_table(model)):
            with pytest.raises(ValueError, match=r"transformer.wte.weight has shape \[80, 64\] now"):
                f()
        replan_resized(model)  # the vocabulary is not a width: the plan takes the new shape
        assert "80x64" in pl.role_table(model)
        lrs = pl.effective_lrs(pl.optimizer(model, "adam", lr=1e-3))
        assert lrs["transformer.wte.weight"] == pytest.approx(1e-3)  # muP input layer: the base lr, as before


def test_replan_resized_keeps_the_readout_multiplier_and_refuses_width_changes():
    """A new head with another number of outputs, written into the planned module: replan_resized takes the
    shape; the output is the muP readout w/m (checked by hand), the lr is the plan's. A width dim changed in
    place is refused (its multiplier would change)."""
    m, x = net(), torch.randn(5, 8)
    with torch.no_grad():
        m.out.weight = nn.Parameter(torch.randn(3, 256))
        m.out.bias = nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match=r"replan_resized"):
        pl.optimizer(m, "sgd", lr=0.1)
    replan_resized(m)
    h = torch.relu(m.inp(x))
    assert torch.allclose(m(x), h @ m.out.weight.T * (64 / 256) + m.out.bias, atol=1e-6)
    assert pl.effective_lrs(pl.optimizer(m, "sgd", lr=0.1))["out.weight"] == pytest.approx(0.1 * 256 / 64)
    w = net()
    w.inp.weight = nn.Parameter(torch.zeros(512, 8))  # the width (fan-out of the input layer) changed
    with pytest.raises(ValueError, match=r"inp.weight \(linear, role input\): \[256, 8\] -> \[512, 8\]"):
        replan_resized(w)


class _Mha(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.mha = nn.MultiheadAttention(width, 4, batch_first=True)
        self.out = nn.Linear(width, 3)

    def forward(self, x):  # (B, T, width) -> (B, T, 3)
        return self.out(self.mha(x, x, x, need_weights=False)[0])


def test_replaced_multihead_out_proj_refused():
    """nn.MultiheadAttention reads out_proj's tensors in its functional call (the plan gives them to the
    attention module): a new out_proj never runs its own forward, so the attention module refuses it;
    putting the planned out_proj back passes (negative control)."""
    m = pl.parameterize(_Mha(64), "mup", base=_Mha(32), seed=0, attention="keep")
    x = torch.randn(2, 5, 64)
    m(x)
    old = m.mha.out_proj
    m.mha.out_proj = nn.modules.linear.NonDynamicallyQuantizableLinear(64, 64)
    refused_everywhere(m, x, r"out_proj was replaced by a new NonDynamicallyQuantizableLinear")
    m.mha.out_proj = old
    m(x)
    pl.optimizer(m, "adam", lr=1e-3)
    assert "mha.out_proj.weight" in pl.role_table(m)


class _Blocks(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(2))
        self.out = nn.Linear(width, 4)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = torch.relu(b(h))
        return self.out(h)


def test_replaced_layer_inside_compiled_model_refused():
    """torch.compile does not run a forward hook added after it traced a submodule of a ModuleList (its
    skip_nnmodule_hook_guards): the replacement resets its caches, so the compiled model's next forward runs
    the refusal. Negative control: the compiled model runs before the replacement."""
    m = pl.parameterize(_Blocks(64), "mup", base=_Blocks(32), seed=0)
    c = torch.compile(m, backend="eager")
    x = torch.randn(3, 8)
    c(x)
    m.blocks[0] = nn.Linear(64, 64)
    with pytest.raises(ValueError, match="0 was replaced by a new Linear after parameterize"):
        c(x)
