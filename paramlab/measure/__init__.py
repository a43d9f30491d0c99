"""Instruments: small functions and hooks that measure what moves inside a network. No wandb here.

coord       coordinate check over widths with predicted slopes and verdicts
features    captured activations, feature / kernel movement, CKA, alignment, effective rank, weight movement
ntk         empirical NTK (torch.func): full / trace / diagonal, NTK-vector products, change between checkpoints
kernels     infinite-width NNGP / NTK of MLPs, kernel regression, gradient-descent MSE prediction
probe       linear probes and kernel ridge regression with leave-one-out ridge choice
one_step    one-step width sweeps (the cleanest test of a scheme's exponents)
limits      exact infinite-width references (TP4 Cor. 6.2)
fit         log-log slope fits
"""

from .coord import CoordResult, coord_check, plot_coord, slope_table
from .features import (capture, effective_rank, feature_kernel, feature_metrics, features, kernel_alignment,
                       kernel_change, linear_cka, rel_change, subspace_fraction, weight_change, weight_changes)
from .fit import fit_slope
from .kernels import MLPKernel, gd_mse_prediction, kernel_regression, nngp_ntk
from .limits import tp4_linear_limit
from .ntk import empirical_ntk, ntk_change, ntk_vp
from .probe import kernel_ridge_loo, linear_probe

__all__ = [
    "CoordResult", "MLPKernel", "capture", "coord_check", "effective_rank", "empirical_ntk", "feature_kernel",
    "feature_metrics", "features", "fit_slope", "gd_mse_prediction", "kernel_alignment", "kernel_change",
    "kernel_regression", "kernel_ridge_loo", "linear_cka", "linear_probe", "ntk_change", "ntk_vp", "nngp_ntk",
    "plot_coord", "rel_change", "slope_table", "subspace_fraction", "tp4_linear_limit", "weight_change",
    "weight_changes",
]
