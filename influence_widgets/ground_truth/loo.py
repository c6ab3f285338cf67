"""Actual influence: leave-one-out and leave-group-out retraining (the ground truth).

Both are front ends on the registered ground truths (:mod:`.truths`): ``mode`` names one whose
dots are training points ("warm_start", "scratch", "minibatch", "last_layer", "pbrf", or one a
user registered), and its settings (``n_seeds=5``, ``steps``, ...) may be passed as keywords
beside the sweep options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._findings import TrustReport
from ..models.params import ParamSelection
from ..models.training import TrainConfig
from .options import SweepOptions, sweep_options
from .result import LOOResult
from .runner import CONTROL
from .selection import check_groups, check_indices
from .truths import GroundTruth, TruthSettings, make_truth, split_settings, truth_class

__all__ = ["CONTROL", "LOOResult", "leave_group_out", "leave_one_out", "point_truth"]


def point_truth(mode: str | GroundTruth, settings: TruthSettings | dict | None,
                overrides: dict[str, Any], caller: str) -> tuple[GroundTruth, dict[str, Any]]:
    """The ground truth ``mode`` (its dots must be training points or groups) with its settings
    from ``settings`` and the keywords among ``overrides`` that name them; returns it and the
    remaining keywords (sweep options)."""
    try:
        cls = truth_class(mode)
    except ValueError:
        raise ValueError(f"unknown mode {mode!r}: not a registered ground truth; valid modes: "
                         f"{', '.join(_point_truths())}") from None
    if cls.draws_units or not cls.retrain_mode:
        why = ("draws its own random subsets: use iw.ground_truth.lds(...)" if cls.draws_units
               else "does not retrain")
        valid = ", ".join(n for n, c in _point_truths().items())
        raise ValueError(f"{caller}(mode={cls.name!r}): that ground truth {why}; modes that "
                         f"retrain without given points: {valid}")
    mine, rest = split_settings(cls.name, overrides)
    truth = make_truth(mode, settings, **mine)
    return truth, rest


def _point_truths() -> dict[str, type[GroundTruth]]:
    from .truths import TRUTHS

    return {n: c for n, c in TRUTHS.items() if not c.draws_units and c.retrain_mode}


def leave_one_out(
    model: Any,
    train: Any,
    test: Any,
    indices: Sequence[int] | torch.Tensor,
    *,
    config: TrainConfig | None = None,
    mode: str = "warm_start",
    params: ParamSelection | None = None,
    return_result: bool = False,
    options: SweepOptions | None = None,
    settings: TruthSettings | dict[str, Any] | None = None,
    **overrides: Any,
) -> torch.Tensor | LOOResult:
    """Actual influence of training points: remove each one, retrain, measure the test losses.

    Returns ``(n_test, len(indices))``: ``loss_t(retrained without i) - loss_t(reference)``, so a
    positive value means point ``i`` was *helping* test point ``t`` (the sign convention of the
    estimates, in the same units). Retraining optimises the same objective on the other ``n-1``
    points: mean loss plus ``(weight_decay/2)||theta||^2``, with ``config`` (default: the
    TrainedModel's own config).

    ``mode`` names a registered ground truth (``iw.ground_truth.TRUTHS``): ``"warm_start"`` (from
    the trained parameters, ``config.n_steps(n)`` steps: Koh & Liang's protocol), ``"scratch"``
    (from the TrainedModel's initial parameters, same seed and batch order; with
    ``n_seeds=k`` the mean over k paired seeds, each value with a standard error ``se``),
    ``"minibatch"`` (mini-batch retraining averaged over paired batch orders), ``"last_layer"``
    and ``"pbrf"`` (the proximal Bregman response function of Bae et al. 2022, with
    ``pbrf_damping``; compared with the trained model, no control). Its settings are keywords
    (``n_seeds=5``) or ``settings=``. ``params`` retrains only a subset ("last_layer" or names;
    default: the truth's own, "all" for most); every other tensor stays as trained.

    How the sweep runs is set by ``options`` (a :class:`SweepOptions`) or by its fields as
    keywords, which override it: ``subtract_control`` (the reference is the control retrain,
    else the trained model), ``dtype`` (``"auto"``), ``batch_width`` and ``n_workers`` (how
    many copies are trained together), ``executor`` (any ``concurrent.futures`` executor),
    ``store`` (finished chunks are saved so an interrupted sweep resumes; ``None`` disables),
    ``progress(done, total, info)`` (``True``: a tqdm bar), ``should_stop()`` (True stops with
    an ``InterruptedError``) and ``pbrf_damping``; see :class:`SweepOptions` for each. An
    unknown keyword is a TypeError. ``return_result=True`` gives a :class:`LOOResult` with
    gradient norms and convergence; :func:`~influence_widgets.ground_truth.loo_eta` says the time
    beforehand.
    """
    truth, rest = point_truth(mode, settings, overrides, "leave_one_out")
    opts = sweep_options(options, rest, caller="leave_one_out")

    def units(n: int) -> list[tuple[int, ...]]:
        return [(i,) for i in check_indices(indices, n)]

    result = _measure(truth, model, train, test, units, config, params, opts, items=None)
    result.indices = [u[0] for u in result.units]
    TrustReport(result.findings).warn(stacklevel=2)
    return result if return_result else result.values


def leave_group_out(
    model: Any,
    train: Any,
    test: Any,
    groups: Sequence[Sequence[int]],
    *,
    config: TrainConfig | None = None,
    mode: str = "warm_start",
    params: ParamSelection | None = None,
    return_result: bool = False,
    options: SweepOptions | None = None,
    settings: TruthSettings | dict[str, Any] | None = None,
    **overrides: Any,
) -> torch.Tensor | LOOResult:
    """Like :func:`leave_one_out`, removing each group of training points at once.

    Returns ``(n_test, len(groups))``; compare with :func:`group_estimate` (the first-order
    estimate of a group is the sum of its members' estimates). ``mode``, its settings,
    ``options`` and the keyword overrides are those of :func:`leave_one_out`.
    """
    truth, rest = point_truth(mode, settings, overrides, "leave_group_out")
    opts = sweep_options(options, rest, caller="leave_group_out")

    def units(n: int) -> list[tuple[int, ...]]:
        return check_groups(groups, n)

    result = _measure(truth, model, train, test, units, config, params, opts, items=None)
    TrustReport(result.findings).warn(stacklevel=2)
    return result if return_result else result.values


def _measure(truth: GroundTruth, model: Any, train: Any, test: Any, units: Any,
             config: TrainConfig | None, params: Any, opts: SweepOptions,
             items: Any) -> LOOResult:
    """``truth.measure`` with the API's default schedule: the model's own config (not the
    truth's default schedule, which the explorer and the studies use)."""
    if config is None:
        from .problem import resolve_model

        config = resolve_model(model)[3]
    return truth.measure(model, train, test, units, config=config, params=params, options=opts,
                         items=items)
