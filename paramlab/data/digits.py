"""scikit-learn's bundled digits (UCI optical digits, 8x8, 10 classes, 1797 images). No download."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .task import Task, check_classes, classification_task, select_classes, standardize_inputs



def digits_arrays(test_size: float, seed: int):
    """load_digits (1797 x 64, pixel values 0..16), stratified seeded split."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)  # (1797, 64) float64, (1797,) int
    x_tr, x_te, y_tr, y_te = train_test_split(
        X / 16.0, y.astype(np.int64), test_size=test_size, random_state=seed, stratify=y
    )
    return x_tr, y_tr, x_te, y_te


def digits_task(x_tr, y_tr, x_te, y_te, as_image, meta) -> Task:
    if as_image:
        x_tr = x_tr.reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
        x_te = x_te.reshape(-1, 1, 8, 8)
    return classification_task("digits", x_tr, y_tr, x_te, y_te, len(meta["classes"]), meta)


def digits(
    test_size: float = 0.25,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    standardize: str = "feature",
    as_image: bool = False,
) -> Task:
    """scikit-learn's bundled ``load_digits`` (UCI optical recognition of handwritten digits):
    1797 8x8 images, 10 classes. No download.

    Pixels are scaled to [0, 1] (``/16``) and then standardized with training statistics
    (``standardize="feature"``: per pixel, constant pixels stay 0; "global"; or "none" for [0, 1]).
    The split is stratified and seeded (``test_size`` fraction to test).

    Returns:
        classification Task, x: (n, 64) float32, or (n, 1, 8, 8) with ``as_image=True``
        (``d_in`` is 64 either way); y: (n,) int64, remapped to ``0..len(classes)-1`` when
        ``classes`` is given.
    """
    cl = check_classes(classes, 10)
    x_tr, y_tr, x_te, y_te = digits_arrays(test_size, seed)
    x_tr, y_tr = select_classes(x_tr, y_tr, cl)
    x_te, y_te = select_classes(x_te, y_te, cl)
    x_tr, x_te = standardize_inputs(x_tr, x_te, standardize)
    meta = {"classes": cl, "seed": seed, "standardize": standardize, "as_image": as_image}
    return digits_task(x_tr, y_tr, x_te, y_te, as_image, meta)
