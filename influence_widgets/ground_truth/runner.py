"""One sweep runner for every ground truth.

A measurement is a list of retraining *jobs* (:class:`~.retrain.Job`), each compared with its
*reference*: a control retrain with nothing removed under the same seed and start, or the trained
model itself. :func:`run_sweep` runs the jobs and their controls (store look-up, chunks, executor:
:func:`~.sweep.run_jobs`), turns test losses into changes in test loss, checks every retrain's
health (:func:`~.health.check_retrains`) and masks the unusable ones with NaN, in one place.

The job builders here (:func:`control_job`, :func:`removal_job`, :func:`with_controls`) make
every store key. :func:`leave_one_out`, :func:`leave_group_out`, :func:`lds`,
:func:`retraining_noise`, the registered ground truths and the time estimate (:mod:`.eta`) all
build their jobs with them, so what a time estimate counts as "already in the store" is what a
sweep then loads.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .._cache import hash_settings
from .._findings import Finding
from .health import check_retrains
from .options import SweepOptions
from .problem import Problem
from .retrain import Job
from .sweep import run_jobs

CONTROL = "control"
#: Groups of up to this many points are keyed by their indices ("3,8,11"), larger ones by a hash.
GROUP_KEY_MAX = 8


def seed_suffix(seed: int | None, perturb: float = 0.0, reinit: bool = True) -> str:
    """The part of a store key that names a job's seed, perturbation and initialisation."""
    if seed is None and not perturb:
        return ""
    out = f";seed={seed}"
    if perturb:
        out += f";perturb={perturb:g}"
    if not reinit:
        out += ";order-only"
    return out


def control_job(seed: int | None = None, *, perturb: float = 0.0, reinit: bool = True) -> Job:
    """The control retrain (nothing removed) of a seed: what that seed's removals compare with."""
    return Job(CONTROL + seed_suffix(seed, perturb, reinit), (), seed, perturb, reinit)


def removal_key(unit: Sequence[int]) -> str:
    """The store key of removing ``unit`` (one point: ``"17"``; a group: ``"3,8,11"``; a group
    of more than :data:`GROUP_KEY_MAX` points: its size and a hash of its members)."""
    unit = tuple(int(i) for i in unit)
    if len(unit) <= GROUP_KEY_MAX:
        return ",".join(map(str, unit))
    return f"remove {len(unit)}#{hash_settings(list(unit), length=24)}"


def removal_job(unit: Sequence[int], *, seed: int | None = None, perturb: float = 0.0,
                reinit: bool = True, control: bool = True) -> Job:
    """Retrain without ``unit`` under ``seed``; compared with that seed's control when
    ``control``, else with the trained model."""
    ref = control_job(seed, perturb=perturb, reinit=reinit) if control else None
    return Job(removal_key(unit) + seed_suffix(seed, perturb, reinit), tuple(int(i) for i in unit),
               seed, perturb, reinit, ref)


def with_controls(jobs: Sequence[Job]) -> list[Job]:
    """The controls ``jobs`` are compared with (each once, in order of first use), then the jobs:
    every retrain a sweep of ``jobs`` runs."""
    controls = {j.reference.key: j.reference for j in jobs if j.reference is not None}
    return list(controls.values()) + [j for j in jobs if j.key not in controls]


@dataclass
class SweepRun:
    """What one sweep measured, before a front end shapes it.

    ``values[t, j]`` is the test loss of test point ``t`` after job ``j`` minus that job's
    reference (its control, or the trained model): NaN where the retrain or its control diverged
    (``diverged``). ``findings`` say what the health checks saw.
    """

    problem: Problem
    jobs: list[Job]
    values: torch.Tensor  # (n_test, n_jobs) float64
    grad_norms: torch.Tensor  # (n_jobs,) float64
    objectives: torch.Tensor  # (n_jobs,) float64
    diverged: torch.Tensor  # (n_jobs,) bool
    reference_losses: torch.Tensor  # (n_test,) the first job's reference
    control_grad_norm: float | None  # of the first job's control (None: the trained model)
    findings: tuple[Finding, ...]
    n_computed: int
    n_loaded: int
    width: int
    seconds: float

    @property
    def converged(self) -> torch.Tensor:
        return self.grad_norms < self.problem.config.grad_tol

    def by_seed(self, n_seeds: int) -> torch.Tensor:
        """``values`` as ``(n_test, n_seeds, n_jobs // n_seeds)`` for seed-major jobs."""
        n_test, n = self.values.shape
        return self.values.reshape(n_test, n_seeds, n // n_seeds)


def run_sweep(problem: Problem, jobs: Sequence[Job], options: SweepOptions, *,
              source: str = "retraining", desc: str = "retraining",
              t0: float | None = None) -> SweepRun:
    """Run ``jobs`` and their controls (:func:`with_controls`) and compare each with its
    reference; see :class:`SweepRun`. ``source`` names the findings' source; ``desc`` the
    progress bar (``options.progress=True``)."""
    t0 = time.perf_counter() if t0 is None else t0
    jobs = list(jobs)
    outcome = run_jobs(problem, with_controls(jobs), options, desc)
    rec = outcome.records
    trained: torch.Tensor | None = None

    def reference(job: Job) -> torch.Tensor:
        nonlocal trained
        if job.reference is not None:
            return rec[job.reference.key].losses
        if trained is None:
            trained = problem.trained_losses().detach().cpu().to(torch.float64)
        return trained

    losses = torch.stack([rec[j.key].losses for j in jobs], dim=1)
    refs = torch.stack([reference(j) for j in jobs], dim=1)
    grad_norms = torch.tensor([rec[j.key].grad_norm for j in jobs], dtype=torch.float64)
    objectives = torch.tensor([rec[j.key].objective for j in jobs], dtype=torch.float64)
    controls = {j.reference.key: rec[j.reference.key].objective for j in jobs
                if j.reference is not None}
    health = check_retrains(problem, jobs, objectives, grad_norms, controls, source)
    values = (losses - refs).masked_fill(health.diverged[None, :], float("nan"))
    first = jobs[0].reference if jobs else None
    return SweepRun(
        problem=problem, jobs=jobs, values=values, grad_norms=grad_norms, objectives=objectives,
        diverged=health.diverged, reference_losses=refs[:, 0] if jobs else reference(Job("")),
        control_grad_norm=None if first is None else rec[first.key].grad_norm,
        findings=health.findings, n_computed=outcome.n_computed, n_loaded=outcome.n_loaded,
        width=outcome.width, seconds=time.perf_counter() - t0)
