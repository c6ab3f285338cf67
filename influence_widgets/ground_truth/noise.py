"""The noise floor: how much the test losses move when retraining with *nothing* removed.

By default it measures **real retraining randomness**: the model retrained from scratch under
other seeds, each drawing a new initialisation and mini-batch order (K & Sogaard 2022; Basu et
al. 2021, finding v). An actual leave-one-out effect smaller than this spread cannot be told apart
from what another training run would change.

A deterministic schedule retrained from a nudged start (a full-batch warm start, a last-layer or
PBRF retrain: ``mode="warm_start"`` or ``"pbrf"``) measures something else: how reproducible the
optimiser is from this start. That floor is computed on request, labelled ``kind=
"perturbation"``, and never used for "within noise".
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
from .options import SweepOptions, sweep_options
from .problem import Problem, RetrainObjective, prepare
from .retrain import Job
from .runner import control_job, run_sweep

DEFAULT_PERTURB = 1e-3
#: What a noise floor's seeds randomised: real retraining, or only a perturbed start.
KINDS = ("retraining", "perturbation")


@dataclass
class NoiseResult:
    """Changes in test loss ``(n_test, n_seeds)`` of retrains with nothing removed.

    ``std`` ``(n_test,)`` is the noise floor: the standard deviation (ddof=1) of the retrained
    test losses over the ``n_seeds`` runs *and* the reference run (which counts as one more
    sample, value 0). ``how`` says in words what was randomised; ``kind`` is "retraining" (real
    retraining randomness: a new initialisation and/or batch order per seed) or "perturbation"
    (only a perturbed start of a deterministic schedule: how reproducible the optimiser is, not
    retraining noise, and never used for "within noise"). ``reference`` says what each run is
    compared with.
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
    kind: str = "retraining"
    reference: str = "control retrain"
    n_retrains_loaded: int = 0

    @property
    def is_real(self) -> bool:
        """Whether this floor is real retraining noise (usable for "within noise")."""
        return self.kind == "retraining"

    def describe(self) -> str:
        """``"3 seeds; initialisation + mini-batch order"`` (what the floor rests on)."""
        label = "" if self.is_real else " (perturbation only: optimiser reproducibility)"
        return f"{len(self.seeds)} seeds; {self.how}{label}"


def noise_floor(values: torch.Tensor) -> torch.Tensor:
    """Per-test-point std (ddof=1) of ``(n_test, n_seeds)`` changes plus the reference's 0;
    NaN entries (diverged retrains) are left out."""
    v = torch.as_tensor(values)
    v = v.unsqueeze(1) if v.dim() == 1 else v
    full = torch.cat([torch.zeros_like(v[:, :1]), v], dim=1)
    dev = full - full.nanmean(dim=1, keepdim=True)
    return (dev.pow(2).nansum(dim=1) / (full.isfinite().sum(dim=1) - 1)).sqrt()


def noise_problem(model: Any, train: Any, test: Any, *, config: TrainConfig | None, mode: str,
                  params: ParamSelection, options: SweepOptions, new_init: bool) -> Problem:
    """The problem of a noise floor (a seeded fresh start needs no model initialisation)."""
    return prepare(model, train, test, config=config, mode=mode, params=params,
                   dtype=options.dtype, subtract_control=True, pbrf_damping=options.pbrf_damping,
                   allow_different_objective=options.allow_different_objective,
                   needs_init=not (mode == "scratch" and new_init))


def noise_jobs(problem: Problem, n_seeds: int, perturb: float | str = "auto",
               new_init: bool = True) -> list[Job]:
    """The retrains of a noise floor: one per seed ``config.seed + 1 .. + n_seeds``, nothing
    removed, each compared with the seed-less control (the model's own start; the trained model
    when that start is unknown or in mode "pbrf"). Their store keys are those of the paired
    controls of seed-averaged truths, so the two share retrains."""
    size, _, _ = _randomness(problem, perturb, new_init)
    reference = (control_job() if problem.subtract_control and
                 (problem.mode != "scratch" or problem.init_known) else None)
    out = []
    for s in range(1, n_seeds + 1):
        c = control_job(problem.config.seed + s, perturb=size, reinit=new_init)
        out.append(Job(c.key, (), c.seed, c.perturb, c.reinit, reference))
    return out


def retraining_noise(
    model: Any,
    train: Any,
    test: Any,
    *,
    config: TrainConfig | None = None,
    n_seeds: int = 5,
    mode: str = "scratch",
    params: ParamSelection = "all",
    perturb: float | str = "auto",
    new_init: bool = True,
    return_result: bool = False,
    options: SweepOptions | None = None,
    **overrides: Any,
) -> torch.Tensor | NoiseResult:
    """Retrain with nothing removed under seeds ``config.seed + 1 .. + n_seeds``.

    Returns ``(n_test, n_seeds)``: test loss after each retrain minus the reference, in the units
    of the LOO values. The reference is the control retrain of :func:`leave_one_out` (the model's
    own start and seed); in "pbrf" mode, and in "scratch" mode for a model whose initialisation
    is unknown (``iw.wrap``), the trained model itself.

    ``mode="scratch"`` (the default) measures **real retraining randomness**: each seed draws a
    new initialisation (from the model's spec, else every submodule's ``reset_parameters()``;
    ``new_init=False`` keeps the model's own) and, with mini-batches, a new batch order; the
    schedule is ``config`` (default: the model's own). ``mode="warm_start"`` or ``"pbrf"``
    retrain from the trained parameters: with a full-batch schedule that is deterministic, so
    with ``perturb="auto"`` the start is moved by a seeded Gaussian perturbation of ``1e-3``
    times each tensor's RMS (``perturb`` sets the size and applies it in every case; 0 turns it
    off). Such a floor says how reproducible the optimiser is from this start, not how much real
    training runs differ: its result has ``kind="perturbation"`` and a finding says so.

    How the sweep runs (``dtype``, ``batch_width``, ``executor``, ``store``, ``progress``, ...)
    is set by ``options`` or by the fields of :class:`SweepOptions` as keywords, as in
    :func:`leave_one_out`. ``return_result=True`` gives a :class:`NoiseResult` with the noise
    floor ``std``. ``progress=True`` shows a tqdm bar.
    """
    t0 = time.perf_counter()
    opts = sweep_options(options, overrides, caller="retraining_noise")
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"n_seeds must be a positive integer, got {n_seeds!r}")
    if not isinstance(new_init, bool):
        raise TypeError(f"new_init must be True or False, got {new_init!r}")
    if not opts.subtract_control:
        raise ValueError("retraining_noise always compares with the control retrain: "
                         "leave subtract_control at True (it applies to leave_one_out)")
    problem = noise_problem(model, train, test, config=config, mode=mode, params=params,
                            options=opts, new_init=new_init)
    size, how, kind = _randomness(problem, perturb, new_init)
    jobs = noise_jobs(problem, n_seeds, perturb, new_init)
    run = run_sweep(problem, jobs, opts, source="noise floor", desc="noise floor", t0=t0)
    values = run.values.to(problem.dtype)
    std = noise_floor(values)
    findings = run.findings + _source_findings(problem, how, kind, std)
    TrustReport(findings).warn(stacklevel=2)
    if not return_result:
        return values
    return NoiseResult(
        values=values, std=std, seeds=[j.seed for j in jobs], mode=problem.mode, perturb=size,
        how=how, steps=problem.steps, params=problem.params_label,
        dtype=dtype_name(problem.dtype), grad_norms=run.grad_norms.float(),
        n_retrains_computed=run.n_computed, n_retrains_loaded=run.n_loaded,
        seconds=time.perf_counter() - t0, objective=problem.objective, findings=findings,
        kind=kind, reference="control retrain" if jobs[0].reference else "trained model",
    )


def _source_findings(problem: Problem, how: str, kind: str,
                     floor: torch.Tensor) -> tuple[Finding, ...]:
    """A note when the seeds randomise nothing but the perturbed start: a full-batch warm start
    (or a last-layer or PBRF retrain) is deterministic, so the floor says how far retraining
    from a nudged start lands, not how much real retraining runs differ."""
    if kind != "perturbation":
        return ()
    typical = float(floor[torch.isfinite(floor)].median()) if bool(
        torch.isfinite(floor).any()) else math.nan
    return (Finding(
        "info", "noise floor", "noise-perturbation-only",
        f"this floor (median {typical:.2g} over the test points) comes from a perturbed start "
        f"only ({how}): {problem.mode} retraining with full batches is otherwise deterministic",
        "it measures how reproducible the optimiser is from this start, not the seed-to-seed "
        "spread of real training runs (initialisation, mini-batch order), so it is never used "
        "for 'within noise'",
        "for real retraining noise use retraining_noise(..., mode='scratch') (the default), "
        "which every ground truth's noise floor uses",
        action=None),)


def randomness(problem: Problem, perturb: float | str = "auto",
               new_init: bool = True) -> tuple[float, str]:
    """The perturbation size and a description of what a seed randomises in ``problem``."""
    size, how, _ = _randomness(problem, perturb, new_init)
    return size, how


MAX_PERTURB = 1.0  # a start moved by more than its own size is a new start, not a perturbation


def check_perturb_size(size: float) -> None:
    """A ``ValueError`` for a perturbation larger than the parameters themselves (relative to
    each tensor's RMS), which throws the start far away and makes every loss overflow."""
    if size > MAX_PERTURB:
        raise ValueError(f"perturb={size:g} moves the start by {size:g} times each tensor's size "
                         f"(RMS): at most {MAX_PERTURB:g}; a perturbation is small (the default "
                         "is 1e-3), and real retraining noise comes from mode='scratch'")


def _randomness(problem: Problem, perturb: float | str,
                new_init: bool = True) -> tuple[float, str, str]:
    """The perturbation size, a description of what the seeds randomise, and the kind of noise
    ("retraining" or "perturbation")."""
    sources = []
    if problem.config.batch_size is not None and problem.config.batch_size < problem.n:
        sources.append("mini-batch order")
    if problem.mode == "scratch" and new_init:
        sources.append("initialisation (rebuilt from the model spec)" if problem.spec is not None
                       else "initialisation (reset_parameters with the seed)")
    if perturb == "auto":
        size = 0.0 if sources else DEFAULT_PERTURB
    elif isinstance(perturb, int | float) and not isinstance(perturb, bool) and perturb >= 0 \
            and math.isfinite(perturb):
        size = float(perturb)
    else:
        raise ValueError(f"perturb must be 'auto' or a finite number >= 0, got {perturb!r}")
    check_perturb_size(size)
    kind = "retraining" if sources else "perturbation"
    if size:
        sources.append(f"start perturbed by {size:g} x RMS per tensor")
    how = " + ".join(sources) if sources else (
        "nothing: full-batch retraining is deterministic, so every seed repeats the control")
    return size, how, kind
