"""paramlab: width parameterizations (SP, NTK, MF, muP, any abc-scheme) for PyTorch models, and the
experiments that show which of them learn features.

    import paramlab as pl
    model = pl.mlp(d_in=40, d_out=10, width=1024, depth=3, scheme="mup", base_width=64)
    opt = pl.optimizer(model, "adam", lr=3e-3)       # per-tensor LR from the scheme
    print(pl.role_table(model))                      # name, shape, role, a, b, c, init std, lr
    net = pl.parameterize(my_module, "ntk", base=my_module_at_base_width)
    pl.schemes.equivalent("mf", "mup", optimizer="sgd")  # True
    res = pl.coord_check(lambda w: pl.mlp(40, 10, w, scheme="mup"), [64, 128, 256], x, y)  # slopes, verdicts
    pl.run("coord_check", "tiny")                    # an experiment, as `paramlab run coord_check --size tiny`
"""

from . import schemes
from .models.cbow import CBOW, cbow
from .models.cnn import CNN, cnn
from .models.mlp import MLP, mlp
from .models.transformer import Transformer, transformer
from .experiments import run
from .export import fold
from .measure.coord import coord_check
from .optim import effective_lrs, optimizer, param_groups
from .parameterize import Plan, TensorPlan, UsePlan, get_plan, initialize, parameterize, role_table, unparameterize
from .plan_options import PlanOptions
from .roles import load_bsh, save_bsh
from .schemes import Exponents, Scheme, custom, equivalent, get_scheme, lazy_rich, optimizer_family
from .version import __version__

__all__ = [
    "CNN", "Exponents", "MLP", "Plan", "PlanOptions", "Scheme", "TensorPlan", "Transformer", "UsePlan", "__version__", "cnn",
    "custom", "effective_lrs", "equivalent", "fold", "get_plan", "get_scheme", "initialize", "lazy_rich", "load_bsh", "mlp", "optimizer",
    "optimizer_family", "param_groups", "parameterize", "role_table", "save_bsh", "schemes", "transformer",
    "unparameterize",
    "CBOW", "cbow", "coord_check", "run",
]
