"""influence_widgets: can I trust these influence estimates on this model?

Influence estimates (exact, CG, LiSSA, Arnoldi) side by side with leave-one-out retraining::

    import influence_widgets as iw

    tm = iw.zoo.load("iris-mlp-d1-w5-wd")
    est = iw.influence(tm, tm.data.train, tm.data.test)            # (n_test, n_train)
    idx = iw.ground_truth.top_k(est[0], k=40)
    act = iw.leave_one_out(tm, tm.data.train, tm.data.test, idx,
                           config=iw.TrainConfig(steps=500, lr=1e-3))
    iw.compare(est[:, idx][0], act[0])                             # pearson, spearman, ...

Heavy front ends (widgets, plots, experiments) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import datasets, models
from ._cache import cache_dir
from .influence import InfluenceEngine, InfluenceResult, hessian_spectrum, influence
from .models import ModelSpec, TrainConfig, TrainedModel, train

__version__ = "0.1.0"

_LAZY = {
    "leave_one_out": ("ground_truth", "leave_one_out"),
    "leave_group_out": ("ground_truth", "leave_group_out"),
    "retraining_noise": ("ground_truth", "retraining_noise"),
    "LOOResult": ("ground_truth", "LOOResult"),
    "compare": ("evaluate", "compare"),
    "InfluenceExplorer": ("widgets", "InfluenceExplorer"),
    "wrap": ("models.wrap", "wrap"),
    "zoo": ("models.zoo", None),
    "ground_truth": ("ground_truth", None),
    "evaluate": ("evaluate", None),
    "experiments": ("experiments", None),
    "plots": ("plots", None),
    "widgets": ("widgets", None),
    "trust": ("forecast", None),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'influence_widgets' has no attribute {name!r}") from None
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "InfluenceEngine", "InfluenceExplorer", "InfluenceResult", "LOOResult", "ModelSpec",
    "TrainConfig", "TrainedModel", "cache_dir", "compare", "datasets", "evaluate", "experiments",
    "ground_truth", "hessian_spectrum", "influence", "leave_group_out", "leave_one_out", "models",
    "plots", "retraining_noise", "train", "trust", "widgets", "wrap", "zoo",
]
