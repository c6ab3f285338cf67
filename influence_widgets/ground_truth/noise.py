"""The noise floor: how much the test losses move when retraining with *nothing* removed.

An actual leave-one-out effect smaller than this spread cannot be told apart from the
randomness of retraining (K & Sogaard 2022; Basu et al. 2021 at ImageNet scale).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from .._devices import dtype_name
from .._findings import Finding, TrustReport
from ..models.params import ParamSelection
from ..models.training import TrainConfig
from .health import check_retrains
from .loo import CONTROL, reference_losses
from .options import SweepOptions, sweep_options
from .problem import Problem, RetrainObjective, prepare
from .retrain import Job
from .sweep import run_jobs

DEFAULT_PERTURB = 1e-3


@dataclass
class NoiseResult:
    """Changes in test loss ``(n_test, n_seeds)`` of retrains with nothing removed.

    ``std`` ``(n_test,)`` is the noise floor: the standard deviation (ddof=1) of the retrained
    test losses over the ``n_seeds`` runs *and* the reference run (which counts as one more
    sample, value 0). ``how`` says in words what was randomised.
    """

    values: torch.Tensor
    std: torch.Tensor
    seeds: list[int]
    mode: str
    perturb: float
    how: str
    steps: int
    params: str
    dtype: str
    grad_norms: torch.Tensor
    n_retrains_computed: int
    seconds: float
    objective: RetrainObjective | None = None
    findings: tuple[Finding, ...] = ()


def noise_floor(values: torch.Tensor) -> torch.Tensor:
    """Per-test-point std (ddof=1) of ``(n_test, n_seeds)`` changes plus the reference's 0;
    NaN entries (diverged retrains) are left out."""
    v = torch.as_tensor(values)
    v = v.unsqueeze(1) if v.dim() == 1 else v
    full = torch.cat([torch.zeros_like(v[:, :1]), v], dim=1)
    dev = full - full.nanmean(dim=1, keepdim=True)
    return (dev.pow(2).nansum(dim=1) / (full.isfinite().sum(dim=1) - 1)).sqrt()


def retraining_noise(
    model: Any,
    train: Any,
    test: Any,
    *,
    config: TrainConfig | None = None,
    n_seeds: int = 5,
    mode: str = "warm_start",
    params: ParamSelection = "all",
    perturb: float | str = "auto",
    return_result: bool = False,
    options: SweepOptions | None = None,
    **overrides: Any,
) -> torch.Tensor | NoiseResult:
    """Retrain with nothing removed under seeds ``config.seed + 1 .. + n_seeds``.

    Returns ``(n_test, n_seeds)``: test loss after each retrain minus the reference (the control
    retrain of :func:`leave_one_out`, or the trained model in "pbrf" mode), in the same units
    as the LOO values. What a seed changes: the mini-batch order (when ``config.batch_size`` is
    smaller than the data), and in "scratch" mode a fresh initialisation from the model's spec.
    Full-batch optimisers are deterministic: with ``perturb="auto"`` the start is then moved by a
    seeded Gaussian perturbation of ``1e-3`` times each tensor's RMS (``perturb`` sets the size
    and applies it in every case; 0 turns it off, and the values are then exactly 0).
    How the sweep runs (``dtype``, ``batch_width``, ``executor``, ``store``, ``progress``, ...)
    is set by ``options`` or by the fields of :class:`SweepOptions` as keywords, as in
    :func:`leave_one_out`. ``return_result=True`` gives a :class:`NoiseResult` with the noise
    floor ``std``. ``progress=True`` shows a tqdm bar.
    """
    if overrides.get("progress") is True:
        from .eta import progress_bar

        with progress_bar("noise floor") as bar:
            return retraining_noise(model, train, test, config=config, n_seeds=n_seeds, mode=mode,
                                    params=params, perturb=perturb, return_result=return_result,
                                    options=options, **{**overrides, "progress": bar})
    t0 = time.perf_counter()
    opts = sweep_options(options, overrides, caller="retraining_noise")
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"n_seeds must be a positive integer, got {n_seeds!r}")
    if not opts.subtract_control:
        raise ValueError("retraining_noise always compares with the control retrain: "
                         "leave subtract_control at True (it applies to leave_one_out)")
    problem = prepare(model, train, test, config=config, mode=mode, params=params,
                      dtype=opts.dtype, subtract_control=True, pbrf_damping=opts.pbrf_damping,
                      allow_different_objective=opts.allow_different_objective)
    size, how = _randomness(problem, perturb)
    seeds = [problem.config.seed + s for s in range(1, n_seeds + 1)]
    jobs = [Job(f"seed={s};perturb={size:g};{how}", seed=s, perturb=size) for s in seeds]
    control = [Job(CONTROL)] if problem.subtract_control else []
    outcome = run_jobs(problem, control + jobs, opts)
    ref, _ = reference_losses(problem, outcome.records)
    rec = outcome.records
    losses = torch.stack([rec[j.key].losses for j in jobs], dim=1)
    grad_norms = torch.tensor([rec[j.key].grad_norm for j in jobs], dtype=torch.float64)
    objectives = torch.tensor([rec[j.key].objective for j in jobs], dtype=torch.float64)
    control_obj = rec[CONTROL].objective if problem.subtract_control else None
    health = check_retrains(problem, objectives, grad_norms, control_obj, source="noise floor")
    values = (losses - ref[:, None]).masked_fill(health.diverged[None, :], float("nan"))
    values = values.to(problem.dtype)
    std = noise_floor(values)
    findings = health.findings + _source_findings(problem, how, std)
    TrustReport(findings).warn(stacklevel=2)
    if not return_result:
        return values
    return NoiseResult(
        values=values, std=std, seeds=seeds, mode=problem.mode, perturb=size,
        how=how, steps=problem.steps, params=problem.params_label,
        dtype=dtype_name(problem.dtype),
        grad_norms=grad_norms.float(), n_retrains_computed=outcome.n_computed,
        seconds=time.perf_counter() - t0, objective=problem.objective, findings=findings,
    )


def _source_findings(problem: Problem, how: str, floor: torch.Tensor) -> tuple[Finding, ...]:
    """A note when the seeds randomise nothing but the perturbed start: a full-batch warm start
    (or a last-layer or PBRF retrain) is deterministic, so the floor says how far retraining
    from a nudged start lands, not how much real retraining runs differ."""
    if problem.mode == "scratch" or "mini-batch" in how:
        return ()
    typical = float(floor[torch.isfinite(floor)].median()) if bool(
        torch.isfinite(floor).any()) else math.nan
    return (Finding(
        "info", "noise floor", "noise-perturbation-only",
        f"the noise floor (median {typical:.2g} over the test points) comes from a perturbed "
        f"start only ({how}): {problem.mode} retraining with full batches is otherwise "
        "deterministic",
        "it measures how far retraining from a nudged start lands, not the seed-to-seed spread "
        "of real training runs (initialisation, mini-batch order); effects above it are "
        "reproducible, not necessarily larger than what another training run would change",
        "for the spread of real retraining, compute the floor with mode='scratch' or a "
        "mini-batch config (the explorer's 'from scratch' ground truth)",
        action=None),)


def _randomness(problem: Problem, perturb: float | str) -> tuple[float, str]:
    """The perturbation size and a description of what the seeds randomise."""
    sources = []
    if problem.config.batch_size is not None and problem.config.batch_size < problem.n:
        sources.append("mini-batch order")
    if problem.mode == "scratch" and problem.spec is not None:
        sources.append("initialisation (rebuilt from the model spec)")
    if perturb == "auto":
        size = 0.0 if sources else DEFAULT_PERTURB
    elif isinstance(perturb, int | float) and perturb >= 0:
        size = float(perturb)
    else:
        raise ValueError(f"perturb must be 'auto' or a number >= 0, got {perturb!r}")
    if size:
        sources.append(f"start perturbed by {size:g} x RMS per tensor")
    how = " + ".join(sources) if sources else (
        "nothing: full-batch retraining is deterministic, so every seed repeats the control")
    return size, how
