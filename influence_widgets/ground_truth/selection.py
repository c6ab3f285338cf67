"""Which training points to retrain without, and which test points to look at."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

TEST_POINT_RULES = ("highest", "median", "random")


def as_vector(values: Any, name: str = "values") -> np.ndarray:
    """A 1-D float64 numpy array from a tensor, array or list (clear error otherwise)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one value per point), got shape {arr.shape}; "
            "for an (n_test, n_train) matrix pass one row, e.g. estimates[t]"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _check_k(k: int, n: int, what: str = "points") -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > n:
        raise ValueError(f"k={k} is larger than the number of {what} ({n}); pass k <= {n}")
    return int(k)


def check_indices(indices: Any, n: int, what: str = "training") -> list[int]:
    """Validate a list of point indices against ``range(n)``; returns plain ints."""
    if isinstance(indices, torch.Tensor | np.ndarray):
        if indices.dtype in (torch.bool, np.bool_):
            raise TypeError(f"{what} indices must be integers, not a boolean mask; "
                            "use torch.nonzero(mask).flatten()")
        indices = indices.tolist()
    if isinstance(indices, int | np.integer):
        indices = [indices]
    if not isinstance(indices, Sequence | range):
        raise TypeError(f"{what} indices must be a list of ints, got {type(indices).__name__}")
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise TypeError(f"{what} indices must be integers, got {i!r}")
        if not 0 <= i < n:
            raise IndexError(f"{what} index {int(i)} is out of range; valid indices are 0..{n - 1}")
        out.append(int(i))
    if not out:
        raise ValueError(
            f"no {what} indices given; pass at least one, e.g. top_k(estimates[t], k=40), "
            f"random_k(n, k, seed) or all_points(n)"
        )
    return out


def top_k(estimates_row: Any, k: int = 40) -> list[int]:
    """Indices of the ``k`` largest estimates by absolute value, largest first."""
    v = as_vector(estimates_row, "estimates_row")
    k = _check_k(k, v.size, "training points")
    if np.isnan(v).any():
        raise ValueError("estimates_row contains NaN; fix the estimate (e.g. add damping) first")
    order = np.argsort(-np.abs(v), kind="stable")
    return [int(i) for i in order[:k]]


def random_k(n: int, k: int, seed: int = 0) -> list[int]:
    """``k`` distinct indices drawn from ``range(n)`` with ``seed``, sorted."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    k = _check_k(k, n, "training points")
    g = torch.Generator().manual_seed(seed)
    return sorted(int(i) for i in torch.randperm(n, generator=g)[:k])


def all_points(n: int) -> list[int]:
    """Every index ``0..n-1`` (for tiny datasets such as Iris)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return list(range(n))


def pick_test_points(losses: Any, how: str | int | Sequence[int] = "highest", k: int = 1,
                     seed: int = 0) -> list[int]:
    """Test points to examine, from their losses under the trained model.

    ``how``: "highest" (largest losses first), "median" (the ``k`` points ranked closest to the
    median loss), "random" (seeded), or an index / list of indices chosen by the user.
    """
    v = as_vector(losses, "losses")
    n = v.size
    if not isinstance(how, str):
        return check_indices(how, n, "test")
    k = _check_k(k, n, "test points")
    order = np.argsort(-v, kind="stable")  # highest loss first
    if how == "highest":
        chosen = order[:k]
    elif how == "median":
        mid = (n - 1) / 2
        by_rank = sorted(range(n), key=lambda r: (abs(r - mid), r))
        chosen = order[by_rank[:k]]
    elif how == "random":
        return random_k(n, k, seed)
    else:
        raise ValueError(f"unknown rule how={how!r}; use one of {', '.join(TEST_POINT_RULES)} "
                         "or pass test indices")
    return [int(i) for i in chosen]


def group_estimate(estimates: Any, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """First-order estimate of removing each group: the sum of its members' estimates.

    ``estimates`` is one row ``(n_train,)`` or a matrix ``(n_test, n_train)``; returns
    ``(len(groups),)`` or ``(n_test, len(groups))``.
    """
    est = torch.as_tensor(estimates)
    if est.dim() not in (1, 2):
        raise ValueError("estimates must be (n_train,) or (n_test, n_train), "
                         f"got {tuple(est.shape)}")
    n = est.shape[-1]
    groups = check_groups(groups, n)
    cols = [est[..., list(g)].sum(-1) for g in groups]
    return torch.stack(cols, dim=-1)


def check_groups(groups: Any, n: int) -> list[tuple[int, ...]]:
    """Validate groups of training indices; each becomes a sorted tuple of distinct ints."""
    if isinstance(groups, torch.Tensor | np.ndarray) or not isinstance(groups, Sequence):
        raise TypeError("groups must be a list of lists of training indices, e.g. [[0, 5], [3]]")
    if not groups:
        raise ValueError("no groups given; pass at least one list of training indices")
    out = []
    for g in groups:
        idx = check_indices(g, n)
        if len(set(idx)) != len(idx):
            raise ValueError(f"group {list(g)} lists an index twice; each point is removed once")
        if len(idx) >= n:
            raise ValueError(f"group {list(g)[:5]}... removes all {n} training points; keep some")
        out.append(tuple(sorted(idx)))
    return out
