"""Instruments: small functions and hooks that measure what moves inside a network. No wandb, no
model building, no training loops of their own (a coordinate check steps through `paramlab.train`).

coord           coordinate check over widths: runs the steps and records sizes
coord_predict   the slopes a scheme predicts, from a model's plan
coord_result    records, slope fits and verdicts (CoordResult)
mup_shapes      what a model set up with the `mup` package looks like to the predictions
capture         named module outputs from forward hooks
features        feature / kernel movement, CKA, kernel-target alignment, effective rank
weights         weight movement (spectral and Frobenius), spectral norms, share of a change in a subspace
ntk             empirical NTK (torch.func): full / trace / diagonal, NTK-vector products, change between checkpoints
ntk_layerwise   the eNTK from per-layer hooks (MLPs, convolutions, token layers)
jacobian        the block contractions both eNTK paths share
kernels         infinite-width NNGP / NTK of MLPs (arc-cosine and erf recursions)
kernel_regression  the infinite-width model of a task: kernel regression, gradient flow on MSE
probe           linear probes and kernel ridge regression with leave-one-out ridge choice
limits          exact infinite-width references (TP4 Cor. 6.2)
fit             log-log slope fits
depth_coord     coordinate check over depth: stream and branch sizes vs L, predicted slopes from the depth rule
lazy            laziness of residual blocks: distance of a block's change from its linearization (CompleteP)
optimum         robust optimum of a loss-vs-log2(lr) curve and its shift between widths, with errors

Tables and plots of these results live in `paramlab.report` (slope_table, plot_coord, plot_depth_coord,
plot_vs_width).
"""

from .coord import coord_check
from .coord_result import CoordResult
from .capture import capture, features
from .features import (effective_rank, feature_kernel, feature_metrics, kernel_alignment, kernel_change, linear_cka,
                       rel_change)
from .weights import subspace_fraction, weight_change, weight_changes
from .fit import fit_slope
from .optimum import Optimum, align_shift, robust_optimum, shift
from .kernel_regression import gd_mse_prediction, kernel_regression
from .kernels import MLPKernel, nngp_ntk
from .limits import tp4_linear_limit
from .ntk import empirical_ntk, ntk_change, ntk_vp
from .probe import kernel_ridge_loo, linear_probe

__all__ = [
    "CoordResult", "MLPKernel", "capture", "coord_check", "effective_rank", "empirical_ntk", "feature_kernel",
    "feature_metrics", "features", "fit_slope", "gd_mse_prediction", "kernel_alignment", "kernel_change",
    "kernel_regression", "kernel_ridge_loo", "linear_cka", "linear_probe", "ntk_change", "ntk_vp", "nngp_ntk",
    "rel_change", "subspace_fraction", "tp4_linear_limit", "weight_change", "weight_changes",
    "Optimum", "align_shift", "robust_optimum", "shift",
]
