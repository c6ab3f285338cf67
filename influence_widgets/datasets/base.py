"""The one container every loader returns: train/test tensors plus what a plot needs to show them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .._cache import hash_tensors


@dataclass
class Data:
    """Train and test tensors of one dataset, with metadata.

    ``X_*`` are float tensors (images as ``(N, C, H, W)``), ``y_*`` are int64 class labels.
    ``input_shape`` is the shape of one input; ``is_image`` says whether inputs can be drawn
    as thumbnails; ``info`` keeps how the data were made (seed, subset, standardisation).
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]
    input_shape: tuple[int, ...]
    is_image: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            X, y = getattr(self, f"X_{split}"), getattr(self, f"y_{split}")
            if X.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{self.name}: X_{split} has {X.shape[0]} rows but y_{split} has {y.shape[0]}"
                )
            if tuple(X.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"{self.name}: X_{split} inputs have shape {tuple(X.shape[1:])}, "
                    f"metadata says {tuple(self.input_shape)}"
                )

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X_train, self.y_train

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X_test, self.y_test

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_features(self) -> int:
        n = 1
        for s in self.input_shape:
            n *= s
        return n

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Data:
        """A copy with inputs cast to ``dtype`` and all tensors moved to ``device``."""
        kw = {}
        for split in ("train", "test"):
            X, y = getattr(self, f"X_{split}"), getattr(self, f"y_{split}")
            kw[f"X_{split}"] = X.to(device=device, dtype=dtype)
            kw[f"y_{split}"] = y.to(device=device)
        return replace(self, **kw)

    def fingerprint(self) -> str:
        """A hash of the tensors: equal data give equal fingerprints (used in cache keys)."""
        return hash_tensors(self.X_train, self.y_train, self.X_test, self.y_test)

    def __repr__(self) -> str:
        return (
            f"Data({self.name!r}, train={tuple(self.X_train.shape)}, test={tuple(self.X_test.shape)}, "
            f"classes={self.n_classes}, is_image={self.is_image})"
        )


def split_indices(n: int, test_fraction: float, seed: int, y: torch.Tensor | None = None):
    """Deterministic (stratified when ``y`` is given) train/test index split."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    if y is None:
        perm = torch.randperm(n, generator=g)
        n_test = max(1, round(n * test_fraction))
        return perm[n_test:].sort().values, perm[:n_test].sort().values
    train_idx, test_idx = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = max(1, round(len(idx) * test_fraction))
        test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values


def subset_indices(n: int, size: int | None, seed: int) -> torch.Tensor | None:
    """The sorted rows of a seeded random subset of ``size`` of ``n`` rows (None: all of them).

    The same ``(n, size, seed)`` gives the same rows in any process (a seeded CPU generator)."""
    if size is None or size >= n:
        return None
    if size <= 0:
        raise ValueError(f"subset size must be positive, got {size}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:size].sort().values


def subset(X: torch.Tensor, y: torch.Tensor, size: int | None, seed: int):
    """A deterministic random subset of ``size`` rows (all rows when ``size`` is None)."""
    idx = subset_indices(X.shape[0], size, seed)
    return (X, y) if idx is None else (X[idx], y[idx])


def standardize(X_train: torch.Tensor, X_test: torch.Tensor, per_channel: bool = False,
                inplace: bool = False):
    """Standardise with the *training* mean and std (per feature, or per channel for images);
    ``inplace`` overwrites the given tensors instead of making new ones (large image sets)."""
    if per_channel and X_train.dim() == 4:
        dims = (0, 2, 3)
        mean = X_train.mean(dim=dims, keepdim=True)
        std = X_train.std(dim=dims, keepdim=True)
    else:
        mean = X_train.mean(dim=0, keepdim=True)
        std = X_train.std(dim=0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    stats = {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}
    if inplace:
        return X_train.sub_(mean).div_(std), X_test.sub_(mean).div_(std), stats
    return (X_train - mean) / std, (X_test - mean) / std, stats


def _stack_targets(ys: Sequence[Any]) -> torch.Tensor:
    """A Dataset's targets as one tensor, their values and kind kept (what an ``(X, y)`` pair
    would hold): integer labels as int64, real targets (a regression's, or a label written
    1.7) as floating point, vectors stacked as rows. Nothing is rounded: the same checks then
    refuse or accept them as for tensors."""
    first = ys[0]
    if isinstance(first, torch.Tensor):
        return torch.stack([torch.as_tensor(v) for v in ys])
    import numpy as np

    arr = np.asarray(ys)
    if arr.dtype == object:
        raise TypeError("the dataset's targets are not numbers of one shape (got "
                        f"{type(first).__name__} {first!r}); return a number or a tensor as y")
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
    return torch.as_tensor(arr)


def as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept ``(X, y)`` tensor pairs or a map-style torch ``Dataset`` of ``(x, y)`` items."""
    if isinstance(data, Data):
        raise TypeError("pass data.train or data.test, not the whole Data object")
    if isinstance(data, Sequence) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        X, y = data
        if X.dim() == 0 or y.dim() == 0:
            raise ValueError(
                f"X has shape {tuple(X.shape)} and y {tuple(y.shape)}: one row was given without "
                "its batch dimension (X[i], y[i]); pass a batch of one, (X[i:i+1], y[i:i+1]), "
                "or (X[[i]], y[[i]])")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}; they must match")
        return X, y
    if isinstance(data, torch.utils.data.Dataset):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("the dataset is empty")
        items = [data[i] for i in range(n)]
        if not all(isinstance(it, Sequence | torch.Tensor) and len(it) == 2 for it in items[:1]):
            raise TypeError(f"the dataset's items must be (x, y) pairs; item 0 is "
                            f"{type(items[0]).__name__}")
        xs, ys = zip(*items, strict=True)
        X = torch.stack([torch.as_tensor(x) for x in xs])
        return X, _stack_targets(ys)
    raise TypeError(
        f"expected an (X, y) pair of tensors or a torch Dataset, got {type(data).__name__}"
    )
