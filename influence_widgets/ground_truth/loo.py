"""Actual influence: leave-one-out and leave-group-out retraining (the ground truth)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._devices import dtype_name
from .._findings import Finding, TrustReport
from ..models.params import ParamSelection
from ..models.training import TrainConfig
from .health import check_retrains
from .options import SweepOptions, sweep_options
from .problem import Problem, RetrainObjective, prepare
from .retrain import Job
from .selection import check_groups, check_indices
from .sweep import run_jobs

CONTROL = "control"


@dataclass
class LOOResult:
    """Actual influence values with everything needed to judge them.

    ``values[t, k]`` is the change in the loss of test point ``t`` when ``indices[k]`` (a training
    index, or a group of them for :func:`leave_group_out`) is removed and the model retrained:
    positive means the removed point(s) helped ``t``. ``reference`` says what the loss after
    retraining is compared with: the control retrain (nothing removed, same steps) or the
    trained model itself. ``n_retrains_computed``/``n_retrains_loaded`` count every retrain of
    the call, the control included (distinct removals only when ``indices`` repeat).

    ``objective`` says which loss and weight decay the retrains minimised and where they came
    from (the model's own, unless asked otherwise). A retrain that diverged has the value NaN
    (``diverged`` marks it), never a number that only looks like an effect; ``findings`` say
    what was seen (divergence, retrains short of stationarity, a different objective).
    """

    values: torch.Tensor
    indices: list[Any]
    mode: str
    steps: int
    params: str
    control_subtracted: bool
    grad_norms: torch.Tensor
    converged: torch.Tensor
    n_retrains_computed: int
    dtype: str
    seconds: float
    n_retrains_loaded: int = 0
    reference: str = "control retrain"
    reference_losses: torch.Tensor | None = None
    control_grad_norm: float | None = None
    batch_width: int = 1
    pbrf_damping: float | None = None
    setting: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    objective: RetrainObjective | None = None
    diverged: torch.Tensor | None = None
    findings: tuple[Finding, ...] = ()

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def __repr__(self) -> str:
        return (f"LOOResult(mode={self.mode!r}, params={self.params!r}, "
                f"values={tuple(self.values.shape)}, "
                f"steps={self.steps}, control_subtracted={self.control_subtracted}, "
                f"converged={int(self.converged.sum())}/{self.converged.numel()}, "
                f"computed={self.n_retrains_computed}, loaded={self.n_retrains_loaded}, "
                f"dtype={self.dtype}, seconds={self.seconds:.2f})")


def leave_one_out(
    model: Any,
    train: Any,
    test: Any,
    indices: Sequence[int] | torch.Tensor,
    *,
    config: TrainConfig | None = None,
    mode: str = "warm_start",
    params: ParamSelection = "all",
    return_result: bool = False,
    options: SweepOptions | None = None,
    **overrides: Any,
) -> torch.Tensor | LOOResult:
    """Actual influence of training points: remove each one, retrain, measure the test losses.

    Returns ``(n_test, len(indices))``: ``loss_t(retrained without i) - loss_t(reference)``, so a
    positive value means point ``i`` was *helping* test point ``t`` (the sign convention of the
    estimates, in the same units). Retraining optimises the same objective on the other ``n-1``
    points: mean loss plus ``(weight_decay/2)||theta||^2``, with ``config`` (default: the
    TrainedModel's own config).

    Modes: ``"warm_start"`` (from the trained parameters, ``config.n_steps(n)`` steps: Koh &
    Liang's protocol), ``"scratch"`` (from the TrainedModel's initial parameters, same seed and
    batch order) and ``"pbrf"`` (the proximal Bregman response function of Bae et al. 2022, with
    ``pbrf_damping``; compared with the trained model, no control). ``params`` retrains only a
    subset ("last_layer" or names); every other tensor stays as trained.

    How the sweep runs is set by ``options`` (a :class:`SweepOptions`) or by its fields as
    keywords, which override it: ``subtract_control`` (the reference is the control retrain,
    else the trained model), ``dtype`` (``"auto"``), ``batch_width`` and ``n_workers`` (how
    many copies are trained together), ``executor`` (any ``concurrent.futures`` executor),
    ``store`` (finished chunks are saved so an interrupted sweep resumes; ``None`` disables),
    ``progress(done, total, info)``, ``should_stop()`` (True stops with an ``InterruptedError``)
    and ``pbrf_damping``; see :class:`SweepOptions` for each. An unknown keyword is a TypeError.
    ``return_result=True`` gives a :class:`LOOResult` with gradient norms and convergence.
    ``progress=True`` shows a tqdm bar (retrains, moved by the steps within each chunk, with
    the time left); :func:`~influence_widgets.ground_truth.loo_eta` says the time beforehand.
    """
    if overrides.get("progress") is True:
        from .eta import progress_bar

        with progress_bar("leave-one-out") as bar:
            return leave_one_out(model, train, test, indices, config=config, mode=mode,
                                 params=params, return_result=return_result, options=options,
                                 **{**overrides, "progress": bar})
    t0 = time.perf_counter()
    opts = sweep_options(options, overrides, caller="leave_one_out")
    problem = _prepare(model, train, test, config, mode, params, opts)
    idx = check_indices(indices, problem.n)
    jobs = [Job(str(i), (i,)) for i in idx]
    result = _removal_sweep(problem, idx, jobs, opts, t0)
    return result if return_result else result.values


def leave_group_out(
    model: Any,
    train: Any,
    test: Any,
    groups: Sequence[Sequence[int]],
    *,
    config: TrainConfig | None = None,
    mode: str = "warm_start",
    params: ParamSelection = "all",
    return_result: bool = False,
    options: SweepOptions | None = None,
    **overrides: Any,
) -> torch.Tensor | LOOResult:
    """Like :func:`leave_one_out`, removing each group of training points at once.

    Returns ``(n_test, len(groups))``; compare with :func:`group_estimate` (the first-order
    estimate of a group is the sum of its members' estimates). ``options`` and the keyword
    overrides are those of :class:`SweepOptions`.
    """
    t0 = time.perf_counter()
    opts = sweep_options(options, overrides, caller="leave_group_out")
    problem = _prepare(model, train, test, config, mode, params, opts)
    gs = check_groups(groups, problem.n)
    jobs = [Job(",".join(map(str, g)), g) for g in gs]
    result = _removal_sweep(problem, gs, jobs, opts, t0)
    return result if return_result else result.values


def _prepare(model: Any, train: Any, test: Any, config: TrainConfig | None, mode: str,
             params: ParamSelection, options: SweepOptions) -> Problem:
    return prepare(model, train, test, config=config, mode=mode, params=params,
                   dtype=options.dtype, subtract_control=options.subtract_control,
                   pbrf_damping=options.pbrf_damping,
                   allow_different_objective=options.allow_different_objective)


def _removal_sweep(problem: Problem, items: list[Any], jobs: list[Job], options: SweepOptions,
                   t0: float) -> LOOResult:
    """Run the removal jobs (plus the control) and turn losses into changes in test loss."""
    control = [Job(CONTROL)] if problem.subtract_control else []
    outcome = run_jobs(problem, control + jobs, options)
    rec = outcome.records
    ref, control_gn = reference_losses(problem, rec)
    losses = torch.stack([rec[j.key].losses for j in jobs], dim=1)
    grad_norms = torch.tensor([rec[j.key].grad_norm for j in jobs], dtype=torch.float64)
    objectives = torch.tensor([rec[j.key].objective for j in jobs], dtype=torch.float64)
    control_obj = rec[CONTROL].objective if problem.subtract_control else None
    health = check_retrains(problem, objectives, grad_norms, control_obj)
    values = (losses - ref[:, None]).masked_fill(health.diverged[None, :], float("nan"))
    TrustReport(health.findings).warn(stacklevel=3)
    return LOOResult(
        values=values.to(problem.dtype),
        indices=list(items),
        mode=problem.mode,
        steps=problem.steps,
        params=problem.params_label,
        control_subtracted=problem.subtract_control,
        grad_norms=grad_norms,
        converged=grad_norms < problem.config.grad_tol,
        n_retrains_computed=outcome.n_computed,
        n_retrains_loaded=outcome.n_loaded,
        dtype=dtype_name(problem.dtype),
        seconds=time.perf_counter() - t0,
        reference="control retrain" if problem.subtract_control else "trained model",
        reference_losses=ref,
        control_grad_norm=control_gn,
        batch_width=outcome.width,
        pbrf_damping=problem.pbrf_damping if problem.mode == "pbrf" else None,
        setting=problem.setting()[0],
        info={"config": problem.config.to_dict(), "device": str(problem.device),
              "trainable": list(problem.names)},
        objective=problem.objective,
        diverged=health.diverged,
        findings=health.findings,
    )


def reference_losses(problem: Problem,
                     records: dict[str, Any]) -> tuple[torch.Tensor, float | None]:
    """The losses every retrain is compared with, and the control's gradient norm (if any)."""
    if problem.subtract_control:
        return records[CONTROL].losses, records[CONTROL].grad_norm
    return problem.trained_losses().detach().cpu().to(torch.float64), None
