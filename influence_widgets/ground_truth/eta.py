"""How long a computation will take, known before it starts: one short probe, extrapolated.

* A retraining sweep (leave-one-out, group removal, the noise floor) costs, per chunk of
  stacked retrains, ``steps x`` the time of one optimiser step of that chunk plus the chunk's
  fixed part (set-up, final gradient norms, test losses). :func:`probe_chunk` measures both on
  the real data by training one chunk for a few steps (its retrains are thrown away);
  :func:`sweep_eta` leaves out what the store already holds, chunks the rest as
  :func:`~influence_widgets.ground_truth.sweep.run_jobs` does and extrapolates.
  :func:`loo_eta` and :func:`noise_eta` take the arguments of ``leave_one_out`` and
  ``retraining_noise``.
* An influence estimate costs its Hessian-vector products and per-sample-gradient rows, each
  timed once: :func:`estimate_eta`.

Every estimate says what it assumed (``describe()``). Retraining with Adam or SGD runs exactly
the steps asked for, so its estimate is a measurement times a count (within 2x of the real time
in the tests, CPU time on one thread); L-BFGS and CG stop once converged, so for them it is an
upper bound or a guess, said in ``note``. ``clock`` is wall time by default
(``time.process_time`` measures CPU time instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..influence.solvers import CGSolver
from ..models.params import ParamSelection
from ..models.training import TrainConfig
from .noise import noise_jobs, noise_problem
from .options import SweepOptions, sweep_options
from .problem import Problem
from .retrain import Job, run_chunk
from .runner import with_controls
from .selection import check_indices
from .store import open_store
from .sweep import chunk_jobs, progress_bar, resolve_width

__all__ = ["EstimateETA", "StepTiming", "SweepETA", "estimate_eta", "loo_eta", "noise_eta",
           "noise_jobs", "probe_chunk", "progress_bar", "solver_work", "sweep_eta", "truth_jobs"]

Clock = Callable[[], float]
PROBE_STEPS = 5  # optimiser steps a probe runs at most
PROBE_BUDGET = 0.5  # seconds after which a probe stops, once it has timed two steps
SLOW_FIRST_STEP = 10  # ... or after one step, when that took this many budgets (set-up is small)
FIXED_STEPS = 1.5  # a chunk's final gradient norms and test losses, in steps (probe cut short)
CG_SHARE = CGSolver.SHARE  # the share of its products CG is expected to need (its cost model)


class _ProbeDone(Exception):
    """Raised from the probe's progress callback: it has measured enough."""


def _fmt(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


# ----------------------------------------------------------------------------- retraining


@dataclass(frozen=True)
class StepTiming:
    """One measured chunk: seconds per optimiser step, and per chunk outside the steps."""

    width: int  # retrains in the measured chunk
    step: float
    fixed: float
    probe_steps: int
    probe_seconds: float

    def chunk(self, width: int, steps: int) -> float:
        """Seconds of a chunk of ``width`` retrains for ``steps`` steps (linear in the width
        when it is not the measured one)."""
        return width / self.width * (self.fixed + steps * self.step)


@dataclass(frozen=True)
class SweepETA:
    """The expected time of a retraining sweep, and what it rests on."""

    seconds: float
    n_jobs: int  # distinct retrains asked for
    n_loaded: int  # of those, found in the store
    chunks: tuple[int, ...]  # width of every chunk to compute
    steps: int
    timings: tuple[StepTiming, ...]
    workers: int = 1
    note: str = ""

    @property
    def n_computed(self) -> int:
        return sum(self.chunks)

    @property
    def probe_seconds(self) -> float:
        return sum(t.probe_seconds for t in self.timings)

    @property
    def width(self) -> int:
        return max(self.chunks, default=0)

    def seconds_for(self, *, n_jobs: int | None = None, steps: int | None = None) -> float:
        """The time with ``n_jobs`` retrains to compute (chunked at the same width) and/or
        ``steps`` steps, from the same measurements: what fewer points or steps would cost."""
        chunks = self.chunks
        if n_jobs is not None:
            w = max(self.width, 1)
            chunks = (w,) * (n_jobs // w) + ((n_jobs % w,) if n_jobs % w else ())
        return _total(chunks, self.steps if steps is None else steps, self.timings, self.workers)

    def describe(self) -> str:
        if not self.chunks:
            return f"{self.n_jobs} retrains, all in the store: no retraining"
        t = _nearest(self.timings, self.width)
        measured = (f"{t.step * 1000:.3g} ms per step of {t.width} measured" if t.step
                    else f"{t.fixed:.2g} s per retrain of {t.width} measured")
        line = (f"{self.n_computed} retrains ({self.n_loaded} in the store) in "
                f"{len(self.chunks)} chunk(s) of <= {self.width} x {self.steps} steps, "
                f"{measured}: ~{_fmt(self.seconds)}")
        return line + (f" ({self.note})" if self.note else "")


def _nearest(timings: Sequence[StepTiming], width: int) -> StepTiming:
    return min(timings, key=lambda t: (abs(t.width - width), -t.width))


def _total(chunks: Sequence[int], steps: int, timings: Sequence[StepTiming], workers: int) -> float:
    if not chunks:
        return 0.0
    total = sum(_nearest(timings, c).chunk(c, steps) for c in chunks)
    return total / max(1, min(workers, len(chunks)))


def _one_by_one(problem: Problem) -> bool:
    """Whether stacked copies train one at a time (batch norm in training mode: see
    ``fit_copies``; L-BFGS trains them together)."""
    return problem.mode != "pbrf" and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in problem.module.modules())


def probe_chunk(problem: Problem, jobs: Sequence[Job], *, steps: int = PROBE_STEPS,
                budget: float = PROBE_BUDGET, clock: Clock = time.perf_counter) -> StepTiming:
    """Time the chunk ``jobs`` of ``problem`` on its real data for up to ``steps`` optimiser
    steps (fewer once ``budget`` seconds have passed and two steps are timed, or one step that
    took ``SLOW_FIRST_STEP`` budgets; no L-BFGS polish). The first step's extra cost (first
    calls in a process can take a second) counts as set-up. A chunk whose copies train one by
    one (batch norm) is timed on one copy and scales with its width. L-BFGS, which stops once
    every copy has converged, runs the whole chunk when it ends within ``budget``: then that
    chunk's time is the measurement (``step`` 0), else its iterations so far give an upper
    bound."""
    jobs = list(jobs)
    if len(jobs) > 1 and _one_by_one(problem):
        jobs = jobs[:1]
    lbfgs = problem.config.optimizer == "lbfgs"
    n = problem.steps if lbfgs else max(1, min(steps, problem.steps))
    task = problem.task(jobs, portable=False)
    task = replace(task, steps=n, config=task.config.replace(polish_steps=0))
    if not lbfgs:  # torch.optim's first optimizer in a process imports torch._dynamo (seconds,
        # once): paid here, not counted as the chunk's set-up
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    stamps: list[tuple[int, float]] = []
    t0 = clock()

    def tick(step: int, _total: int, _info: dict[str, Any]) -> None:
        stamps.append((step, clock()))
        elapsed = stamps[-1][1] - t0
        if step < n and (elapsed > SLOW_FIRST_STEP * budget
                         or (len(stamps) >= 2 and elapsed > budget)):
            raise _ProbeDone

    try:
        run_chunk(task, progress=tick)
        end: float | None = clock()
    except _ProbeDone:
        end = None
    if lbfgs and end is not None:  # one whole retrain, to convergence or its last iteration
        return StepTiming(len(jobs), 0.0, end - t0, stamps[-1][0] if stamps else 0, end - t0)
    if not stamps:  # no step reported (an optimiser that stopped at once)
        stamps = [(n, end if end is not None else clock())]
        end = stamps[0][1]
    (s1, t1), (sk, tk) = stamps[0], stamps[-1]
    step = (tk - t1) / (sk - s1) if sk > s1 else (t1 - t0) / max(s1, 1)
    setup = max(0.0, t1 - t0 - s1 * step)
    teardown = end - tk if end is not None else FIXED_STEPS * step
    return StepTiming(len(jobs), step, setup + teardown, sk, (end or tk) - t0)


def sweep_eta(problem: Problem, jobs: Sequence[Job], options: SweepOptions | None = None, *,
              timings: dict[tuple, StepTiming] | None = None, clock: Clock = time.perf_counter,
              probe_steps: int = PROBE_STEPS, budget: float = PROBE_BUDGET) -> SweepETA:
    """The expected time of ``run_jobs(problem, jobs, options)``: jobs in the store cost
    nothing; the rest are chunked as ``run_jobs`` chunks them, and the first chunk of each width
    kind (stacked, alone) is probed. ``timings`` (a dict the caller keeps, keyed by the
    problem's store setting and a chunk width) reuses earlier probes and keeps new ones. The
    controls ``jobs`` are compared with are counted too (:func:`~.runner.with_controls`)."""
    options = options or SweepOptions()
    unique = list({j.key: j for j in with_controls(jobs)}.values())
    store = open_store(options.store)
    setting = problem.setting()[0]
    found = store.get(setting, [j.key for j in unique]) if store is not None and unique else {}
    todo = [j for j in unique if j.key not in found]
    chunks = chunk_jobs(todo, resolve_width(problem, options, len(todo))) if todo else []
    measured: dict[int, StepTiming] = {}
    kinds = [c for c in chunks if c[0].stackable][:1] + [c for c in chunks if not c[0].stackable][:1]
    for chunk in kinds:
        key = (setting, len(chunk))
        if len(chunk) in measured:
            continue
        hit = timings.get(key) if timings is not None else None
        if hit is None:
            hit = probe_chunk(problem, chunk, steps=probe_steps, budget=budget, clock=clock)
            if timings is not None:
                timings[key] = hit
        measured[len(chunk)] = hit
    widths = tuple(len(c) for c in chunks)
    workers = options.workers() if options.executor is not None else 1
    notes = []
    if problem.config.optimizer == "lbfgs" and measured:
        notes.append("L-BFGS stops once converged: " + (
            "as long as one chunk run to its end in the probe"
            if all(t.step == 0.0 for t in measured.values()) else "an upper bound"))
    if problem.config.polish_steps and problem.mode != "pbrf":
        notes.append(f"plus up to {problem.config.polish_steps} L-BFGS polish iterations per "
                     "retrain, not counted")
    return SweepETA(
        seconds=_total(widths, problem.steps, tuple(measured.values()), workers),
        n_jobs=len(unique), n_loaded=len(unique) - len(todo), chunks=widths,
        steps=problem.steps, timings=tuple(measured.values()), workers=workers,
        note="; ".join(notes),
    )


def truth_jobs(truth: Any, problem: Problem, units: Sequence[Sequence[int]]) -> list[Job]:
    """Every retrain (controls included) of ``truth`` measuring ``units`` on ``problem``: the
    list a sweep runs and a time estimate counts."""
    return with_controls(truth.jobs([tuple(u) for u in units], problem))


def loo_eta(model: Any, train: Any, test: Any, indices: Sequence[int] | torch.Tensor, *,
            config: TrainConfig | None = None, mode: str = "warm_start",
            params: ParamSelection | None = None, options: SweepOptions | None = None,
            timings: dict[tuple, StepTiming] | None = None, clock: Clock = time.perf_counter,
            **overrides: Any) -> SweepETA:
    """The expected time of ``leave_one_out`` with the same arguments (the controls included)."""
    from .loo import point_truth
    from .problem import resolve_model

    truth, rest = point_truth(mode, None, overrides, "loo_eta")
    opts = truth.sweep_options(sweep_options(options, rest, caller="loo_eta"))
    config = config if config is not None else resolve_model(model)[3]
    problem = truth.prepare(model, train, test, config=config, params=params, options=opts)
    units = [(i,) for i in check_indices(indices, problem.n)]
    return sweep_eta(problem, truth_jobs(truth, problem, units), opts, timings=timings,
                     clock=clock)


def noise_eta(model: Any, train: Any, test: Any, *, config: TrainConfig | None = None,
              n_seeds: int = 5, mode: str = "scratch", params: ParamSelection = "all",
              perturb: float | str = "auto", new_init: bool = True,
              options: SweepOptions | None = None,
              timings: dict[tuple, StepTiming] | None = None, clock: Clock = time.perf_counter,
              **overrides: Any) -> SweepETA:
    """The expected time of ``retraining_noise`` with the same arguments."""
    opts = sweep_options(options, overrides, caller="noise_eta")
    problem = noise_problem(model, train, test, config=config, mode=mode, params=params,
                            options=opts, new_init=new_init)
    return sweep_eta(problem, noise_jobs(problem, n_seeds, perturb, new_init), opts,
                     timings=timings, clock=clock)


# ----------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class EstimateETA:
    """The expected time of an influence estimate, and what it rests on."""

    seconds: float
    hvps: int  # curvature products expected
    grad_rows: int  # per-sample-gradient rows expected
    hvp_seconds: float  # one product, measured
    row_seconds: float  # one row's gradient, measured
    probe_seconds: float
    note: str = ""

    def describe(self) -> str:
        line = (f"{self.hvps} curvature products x {self.hvp_seconds * 1000:.3g} ms + "
                f"{self.grad_rows} gradient rows x {self.row_seconds * 1e6:.3g} us: "
                f"~{_fmt(self.seconds)}")
        return line + (f" ({self.note})" if self.note else "")


def solver_work(solver: str, settings: Any, p: int, n: int, *, fitted: bool = False,
                k: int = 1) -> tuple[int, float, str]:
    """``(products, passes over the training gradients, note)`` a solve of ``solver`` needs
    besides the one pass every estimate makes (its fit included unless ``fitted``), read from
    the cost the solver class declares (:meth:`Solver.cost`). A solver that declares none (one
    registered by a user without it) is counted as expensive as the exact solver, never free."""
    from ..influence.solvers import solver_class

    cost = solver_class(solver).cost(settings, p, n, k, 8)
    products = cost.solve_products + (0 if fitted else cost.fit_products)
    passes = 0.0 if fitted else cost.fit_passes
    return products, passes, cost.note


def estimate_eta(objective: Any, solver: str, settings: Any = None, *, fitted: bool = False,
                 extra_hvps: int = 0, clock: Clock = time.perf_counter) -> EstimateETA:
    """The expected time of an estimate on ``objective`` (an engine's
    :class:`~influence_widgets.influence.objective.Objective`) with ``solver``: one
    curvature product and one chunk of per-sample gradients are timed (the first product also
    builds what later products reuse) and multiplied by what the solver needs
    (:func:`solver_work`; none for its fit when ``fitted``) plus ``extra_hvps`` (diagnostics)."""
    from ..influence.solvers import make_settings

    st = make_settings(solver, settings)
    p, n = int(objective.p), int(objective.n)
    hvps, passes, note = solver_work(solver, st, p, n, fitted=fitted)
    hvps += extra_hvps
    g = torch.Generator().manual_seed(0)
    v = torch.randn(p, generator=g, dtype=torch.float64).to(objective.device, objective.dtype)

    def timed(fn: Callable[[], Any]) -> float:
        fn()
        if objective.device.type == "cuda":
            torch.cuda.synchronize(objective.device)
        return clock()

    rows = max(1, min(n, 256, objective.psg_chunk_size(n)))

    def grads() -> Any:
        return objective.per_sample_grads(objective.X[:rows], objective.y[:rows], check=False)

    # each twice or more: the first call also builds what later ones reuse (one-off set-up)
    t = [clock()]
    for fn in (lambda: objective.hvp(v),) * 3 + (grads,) * 2:
        t.append(timed(fn))
    d = [b - a for a, b in zip(t, t[1:])]
    hvp, row = min(d[1], d[2]), d[4] / rows
    setup = max(0.0, d[0] - hvp) + max(0.0, d[3] - d[4])
    grad_rows = int(round((1.0 + passes) * n))
    seconds = setup + hvps * hvp + grad_rows * row
    return EstimateETA(seconds, hvps, grad_rows, hvp, row, t[-1] - t[0], note)
