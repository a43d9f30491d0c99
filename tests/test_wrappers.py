"""Wrapped models keep their plan: DDP and FSDP (2 gloo ranks on CPU) equal one process on the full batch;
torch.compile is unwrapped by name."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import paramlab as pl

D_IN, D_OUT, WIDTH, BASE, STEPS = 6, 3, 64, 16, 3


def make(width=WIDTH, device=None):
    return pl.MLP(D_IN, D_OUT, width, depth=2, device=device, dtype=torch.float64)


def data():
    g = torch.Generator().manual_seed(5)
    return torch.randn(8, D_IN, generator=g, dtype=torch.float64), torch.randn(8, D_OUT, generator=g, dtype=torch.float64)


def train(model, opt, x, y):
    for _ in range(STEPS):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()  # the mean over a half batch, averaged over 2 ranks = full batch
        opt.step()


def single(lr=1e-2):
    model = pl.parameterize(make(), "mup", base=make(BASE, "meta"), seed=0)
    train(model, pl.optimizer(model, "adam", lr=lr), *data())
    return model.state_dict()


def _worker(rank, port, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    x, y = data()
    x, y = x[rank * 4:(rank + 1) * 4], y[rank * 4:(rank + 1) * 4]
    results = {}
    # DDP: parameterize the wrapped model (seed=: every rank draws the same weights), then its optimizer
    ddp = nn.parallel.DistributedDataParallel(make())
    pl.parameterize(ddp, "mup", base=make(BASE, "meta"), seed=0)
    assert pl.get_plan(ddp).scheme.name == "mup" and "readout.weight" in pl.role_table(ddp)
    train(ddp, pl.optimizer(ddp, "adam", lr=1e-2), x, y)
    results["ddp"] = ddp.module.state_dict()
    # FSDP2: the model is its own root, shards are DTensors under the same names
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, fully_shard

    model = pl.parameterize(make(), "mup", base=make(BASE, "meta"), seed=0)
    fully_shard(model)
    train(model, pl.optimizer(model, "adam", lr=1e-2), x, y)
    results["fsdp2"] = {k: v.full_tensor() for k, v in model.state_dict().items()}
    # FSDP1 with use_orig_params: parameterized before wrapping, names through _fsdp_wrapped_module
    model = pl.parameterize(make(), "mup", base=make(BASE, "meta"), seed=0)
    fsdp = FSDP(model, use_orig_params=True, device_id=torch.device("cpu"))
    train(fsdp, pl.optimizer(fsdp, "adam", lr=1e-2), x, y)
    with FSDP.summon_full_params(fsdp):
        results["fsdp1"] = {k: v.detach().clone() for k, v in model.named_parameters()}
    # refusals: FSDP1 cannot be parameterized after wrapping, nor given per-tensor lrs with flattened params
    errors = {}
    try:
        pl.parameterize(FSDP(make(), use_orig_params=True, device_id=torch.device("cpu")), "mup", base=make(BASE, "meta"))
    except ValueError as e:
        errors["parameterize_fsdp1"] = str(e)
    flat = FSDP(pl.parameterize(make(), "mup", base=make(BASE, "meta"), seed=0), use_orig_params=False,
                device_id=torch.device("cpu"))
    try:
        pl.optimizer(flat, "adam", lr=1e-2)
    except ValueError as e:
        errors["flat"] = str(e)
    try:
        pl.parameterize(nn.parallel.DistributedDataParallel(make()), "mup", base=make(BASE, "meta"))
    except ValueError as e:
        errors["ddp_no_seed"] = str(e)
    if rank == 0:
        torch.save({"results": results, "errors": errors}, out)
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_and_fsdp_on_two_gloo_ranks_equal_one_process(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2)
    got = torch.load(out, weights_only=False)
    ref, off = single(), single(lr=1e-2 * 1.001)  # off: the negative control, a 0.1% different lr
    moved = max((ref[k] - v).abs().max().item() for k, v in make().state_dict().items())
    assert moved > 1e-2
    for kind, sd in got["results"].items():
        diff = max((sd[k] - v).abs().max().item() for k, v in ref.items())
        assert diff < 1e-12, (kind, diff)
        assert max((sd[k] - v).abs().max().item() for k, v in off.items()) > 1e-6, kind
    err = got["errors"]
    assert "parameterize on the model before wrapping" in err["parameterize_fsdp1"]
    assert "FlatParameter" in err["flat"] and "use_orig_params=True" in err["flat"]
    assert "pass seed=" in err["ddp_no_seed"]


def test_torch_compile_wrapper_is_unwrapped():
    x = torch.randn(4, D_IN, dtype=torch.float64)
    compiled = torch.compile(make(), backend="eager")  # dynamo traces the hooks; the backend does not matter here
    pl.parameterize(compiled, "mup", base=make(BASE, "meta"), seed=0)  # the plan lands on _orig_mod
    eager = pl.parameterize(make(), "mup", base=make(BASE, "meta"), seed=0)
    assert pl.get_plan(compiled) == pl.get_plan(eager) and "readout.weight" in pl.role_table(compiled)
    assert torch.allclose(compiled(x), eager(x), rtol=1e-12, atol=1e-12)
    assert pl.effective_lrs(pl.optimizer(compiled, "adam", lr=1e-3)) == pl.effective_lrs(pl.optimizer(eager, "adam", lr=1e-3))
    assert pl.wrappers.clean_name("_orig_mod.module.readout.weight", ["compile", "ddp"]) == "readout.weight"
    assert pl.wrappers.clean_name("module.readout.weight") == "module.readout.weight"  # a user's own 'module'


def test_torch_compile_keeps_an_sdpa_callers_scale():
    """dynamo traces through the TorchFunctionMode that sets the scale; the traced graph must not be rescaled again."""
    from foreign import SdpaBlock, tokens

    idx = tokens()
    model = pl.parameterize(SdpaBlock(128), "mup", base=SdpaBlock(32, device="meta"), seed=0)
    with torch.no_grad():
        eager = model(idx)
        assert torch.allclose(torch.compile(model, backend="eager")(idx), eager, atol=1e-6)
