"""Datasets that work offline: Iris and the 8x8 digits (shipped with scikit-learn), Gaussian blobs."""

from __future__ import annotations

import torch

from .base import Data, split_indices, standardize


def _finish(name, X, y, class_names, input_shape, is_image, seed, test_fraction, do_standardize, info):
    tr, te = split_indices(X.shape[0], test_fraction, seed, y)
    X_tr, X_te = X[tr], X[te]
    stats = None
    if do_standardize:
        X_tr, X_te, stats = standardize(X_tr, X_te)
    info = dict(info, seed=seed, test_fraction=test_fraction, standardized=do_standardize)
    if stats is not None:
        info["standardization"] = stats
    return Data(name, X_tr, y[tr], X_te, y[te], class_names, input_shape, is_image, info)


def iris(seed: int = 0, test_fraction: float = 0.2, standardize: bool = True) -> Data:
    """Fisher's Iris: 150 flowers, 4 features, 3 classes (120 train / 30 test by default)."""
    from sklearn.datasets import load_iris

    b = load_iris()
    X = torch.tensor(b.data, dtype=torch.float32)
    y = torch.tensor(b.target, dtype=torch.int64)
    info = {"feature_names": list(b.feature_names)}
    return _finish("iris", X, y, list(b.target_names), (4,), False, seed, test_fraction, standardize, info)


def digits(
    seed: int = 0, test_fraction: float = 0.2, standardize: bool = True, flat: bool = True
) -> Data:
    """The 8x8 handwritten digits (1,797 images, 10 classes; 1,437 train / 360 test by default).

    ``flat=True`` gives 64-feature vectors for MLPs; ``flat=False`` gives ``(1, 8, 8)`` images.
    Both can be drawn as thumbnails.
    """
    from sklearn.datasets import load_digits

    b = load_digits()
    X = torch.tensor(b.data, dtype=torch.float32) / 16.0
    y = torch.tensor(b.target, dtype=torch.int64)
    data = _finish(
        "digits", X, y, [str(c) for c in b.target_names], (64,), True, seed, test_fraction, standardize, {}
    )
    data.info["image_shape"] = [1, 8, 8]
    if not flat:
        data = Data(
            "digits",
            data.X_train.reshape(-1, 1, 8, 8),
            data.y_train,
            data.X_test.reshape(-1, 1, 8, 8),
            data.y_test,
            data.class_names,
            (1, 8, 8),
            True,
            data.info,
        )
    return data


def blobs(
    n: int = 200,
    n_features: int = 2,
    n_classes: int = 3,
    spread: float = 1.0,
    seed: int = 0,
    test_fraction: float = 0.25,
    standardize: bool = True,
) -> Data:
    """Synthetic Gaussian blobs: class means on a sphere of radius 3, isotropic noise ``spread``."""
    if n_classes < 2 or n < 2 * n_classes:
        raise ValueError(f"need n_classes >= 2 and n >= 2*n_classes, got n={n}, n_classes={n_classes}")
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_classes, n_features, generator=g, dtype=torch.float64)
    centers = 3.0 * centers / centers.norm(dim=1, keepdim=True)
    y = torch.arange(n) % n_classes
    X = centers[y] + spread * torch.randn(n, n_features, generator=g, dtype=torch.float64)
    info = {"n": n, "spread": spread}
    return _finish(
        "blobs", X.float(), y, [f"class {c}" for c in range(n_classes)], (n_features,), False,
        seed, test_fraction, standardize, info,
    )
