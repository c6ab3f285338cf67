"""Ground truths as registered types, as solvers are.

A ground truth is what an estimate is compared with. Each is a small :class:`GroundTruth` class:
its ``name`` and ``label``; what one dot of a scatter is (``dot``: a training point, or a random
subset the truth draws itself); the retraining ``mode`` and parameters; which estimate it is the
target of (:class:`Target`: e.g. the PBRF approximates the damped Gauss-Newton estimate, not the
Hessian one); its settings, a frozen dataclass whose fields carry help and validation (the same
machinery as the solvers' settings, :mod:`influence_widgets._settings`); and its noise model: how
much real retraining randomness moves the quantity it measures.

Every layer reads the registry :data:`TRUTHS`: the API functions (``leave_one_out(mode=...)``
takes any registered truth whose dots are training points), the explorer's list, labels, titles
and controls, the studies' :class:`~influence_widgets.experiments.Truth`, and the command line's
``list``. Adding a ground truth is one class and one :func:`register_truth` call; no layer
branches on a truth's name.

Every retraining truth measures through one path, :meth:`GroundTruth.measure`: prepare the
problem, build the jobs (:meth:`GroundTruth.jobs`, with the builders of :mod:`.runner`, so the
store keys and the time estimate agree), run them (:func:`~.runner.run_sweep`: controls,
references, health, NaN mask, progress, store) and combine them (:meth:`GroundTruth.combine`:
e.g. the mean over paired seeds, with its standard error).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .._devices import dtype_name
from .._settings import Registry, Settings, setting
from ..models.training import TrainConfig
from .options import SweepOptions
from .problem import Problem, prepare, resolve_model
from .result import LOOResult
from .retrain import Job
from .runner import SweepRun, removal_job, run_sweep


@dataclass(frozen=True)
class TruthSettings(Settings):
    """Base class of every ground truth's settings (no fields of its own)."""

    KIND: ClassVar[str] = "ground truth"
    UNKNOWN_NOTE: ClassVar[str] = (" (how the sweep runs - store, batch_width, progress, ... - "
                                   "are SweepOptions fields)")


@dataclass(frozen=True)
class Target:
    """The estimate a ground truth is the target of: ``curvature`` ("ggn": the Gauss-Newton
    estimate) and ``damping`` (the name of the truth's setting the estimate's damping must
    equal); ``None``: the estimate's own. Which parameters are estimated is the comparison's
    choice (a full-network estimate against last-layer retraining is a question worth asking)."""

    curvature: str | None = None
    damping: str | None = None

    def settings(self, truth_settings: Settings) -> dict[str, Any]:
        """The estimate settings this target fixes, e.g. ``{"curvature": "ggn", "damping":
        0.001}`` (empty: any estimate)."""
        out: dict[str, Any] = {}
        if self.curvature is not None:
            out["curvature"] = self.curvature
        if self.damping is not None:
            out["damping"] = float(getattr(truth_settings, self.damping))
        return out

    def describe(self, truth_settings: Settings) -> str:
        fixed = self.settings(truth_settings)
        if not fixed:
            return "any estimate (the one it is compared with)"
        return "the estimate with " + ", ".join(f"{k} {v:g}" if isinstance(v, float)
                                                 else f"{k} {v}" for k, v in fixed.items())


class GroundTruth:
    """Base class: subclasses set the class attributes and, where they differ from a plain
    removal sweep, override :meth:`schedule`, :meth:`jobs`, :meth:`combine` or :meth:`measure`.

    An instance holds validated settings (``GroundTruth(settings)``, or :func:`make_truth` by
    name with keyword settings); like a fitted solver it is never reconfigured from outside.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # shown in the explorer's list and the CLI
    short: ClassVar[str] = ""  # a few letters for table columns and legends ("LOO", "PBRF")
    summary: ClassVar[str] = ""  # one line: what it measures and when to use it
    dot: ClassVar[str] = "training point"  # what one dot (one compared unit) is
    draws_units: ClassVar[bool] = False  # True: the truth draws its own units (random subsets)
    retrain_mode: ClassVar[str] = "warm_start"  # "" for a truth that does not retrain
    params: ClassVar[str] = "all"  # the parameters retrained
    target: ClassVar[Target] = Target()
    noise: ClassVar[str] = (
        "real retraining noise: the model retrained from scratch with nothing removed under new "
        "seeds (a new initialisation and batch order each), its own schedule")
    noise_new_init: ClassVar[bool] = True  # its noise runs draw a new initialisation per seed
    #: a cheaper registered truth of the same kind, offered when a compute would take long
    #: (its ``params`` apply to the estimate too)
    cheaper: ClassVar[str | None] = None
    Settings: ClassVar[type[TruthSettings]] = TruthSettings

    def __init__(self, settings: TruthSettings | None = None) -> None:
        settings = self.Settings() if settings is None else settings
        if not isinstance(settings, self.Settings):
            raise TypeError(f"ground truth {self.name!r} takes {self.Settings.__name__}, "
                            f"got {type(settings).__name__}")
        self.settings = settings

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.settings.options().items())
        return f"{type(self).__name__}({opts})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.settings == self.settings

    def __hash__(self) -> int:
        return hash((type(self), self.settings))

    # ------------------------------------------------------------------ what it is
    @property
    def mode(self) -> str:
        """The retraining mode (``"warm_start"``, ``"scratch"``, ``"pbrf"``; ``""``: none)."""
        return self.retrain_mode

    @property
    def retrains(self) -> bool:
        return bool(self.mode)

    @property
    def n_seeds(self) -> int:
        """How many paired seeds each value averages (1: one retrain per dot)."""
        return int(getattr(self.settings, "n_seeds", 1))

    def dots(self, n: int = 2) -> str:
        """``dot`` in the plural when ``n != 1``."""
        return self.dot if n == 1 else f"{self.dot}s"

    def estimate_settings(self) -> dict[str, Any]:
        """What the estimate this truth approximates fixes (see :class:`Target`)."""
        return self.target.settings(self.settings)

    def schedule(self, model_config: TrainConfig) -> TrainConfig:
        """The default retraining schedule for a model trained with ``model_config``; the
        objective is left unset, so the retrains take the model's own."""
        return model_config.replace(loss=None, weight_decay=None)

    def noise_schedule(self, model_config: TrainConfig) -> TrainConfig | None:
        """How this truth's noise floor retrains (None: it has none): by default the model's
        own schedule, from scratch, new seeds."""
        return model_config.replace(loss=None, weight_decay=None) if self.retrains else None

    def noise_floor(self, model: Any, train: Any, test: Any, *, n_seeds: int = 3,
                    options: SweepOptions | None = None) -> Any:
        """This truth's noise: :func:`~.noise.retraining_noise` from scratch (new seeds) under
        :meth:`noise_schedule` of the model's own schedule (a ``NoiseResult``), or None for a
        truth that does not retrain. It says how much retraining randomness alone moves the
        test losses, in the units of this truth's values."""
        from .noise import retraining_noise

        model_config = resolve_model(model)[3]
        schedule = self.noise_schedule(model_config) if model_config is not None else None
        if schedule is None:
            return None
        return retraining_noise(model, train, test, config=schedule, n_seeds=n_seeds,
                                mode="scratch", new_init=self.noise_new_init, return_result=True,
                                options=options)

    def describe(self, config: TrainConfig, n: int | None = None) -> str:
        """One line naming the truth and its schedule, for titles and result panels."""
        steps = config.n_steps(n) if n is not None else config.steps
        what = (f"{config.optimizer}, lr {config.lr:g}"
                + (f", batch {config.batch_size}" if config.batch_size else ", full batch")
                + (f", {steps} steps" if steps else ""))
        seeds = f", {self.n_seeds} seeds averaged" if self.n_seeds > 1 else ""
        return f"{self.label}: {what}{seeds}"

    # ------------------------------------------------------------------ how it is measured
    def sweep_options(self, options: SweepOptions) -> SweepOptions:
        """The sweep options this truth runs with (e.g. the PBRF's damping)."""
        return options

    def draw_units(self, n: int, k: int, seed: int = 0) -> list[tuple[int, ...]]:
        """The units a truth that draws its own (``draws_units``) compares: ``k`` of them."""
        raise TypeError(f"ground truth {self.name!r} compares the {self.dots()} it is given; it "
                        "draws none")

    def jobs(self, units: Sequence[tuple[int, ...]], problem: Problem) -> list[Job]:
        """The retrains of ``units`` (seed-major when seeds are averaged)."""
        return [removal_job(u, control=problem.subtract_control) for u in units]

    def combine(self, run: SweepRun, n_units: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The value ``(n_test, n_units)`` of each unit from the retrains, and its standard
        error (None when one retrain per unit)."""
        return run.values, None

    def prepare(self, model: Any, train: Any, test: Any, *, config: TrainConfig | None,
                params: Any, options: SweepOptions) -> Problem:
        """The resolved problem: ``config`` None takes :meth:`schedule` of the model's own."""
        if config is None:
            model_config = resolve_model(model)[3]
            config = self.schedule(model_config) if model_config is not None else None
        return prepare(model, train, test, config=config, mode=self.mode,
                       params=self.params if params is None else params, dtype=options.dtype,
                       subtract_control=options.subtract_control,
                       pbrf_damping=options.pbrf_damping,
                       allow_different_objective=options.allow_different_objective)

    def measure(self, model: Any, train: Any, test: Any,
                units: Callable[[int], list[tuple[int, ...]]] | Sequence[Sequence[int]], *,
                config: TrainConfig | None = None, params: Any = None,
                options: SweepOptions | None = None, estimate: Any = None,
                items: Sequence[Any] | None = None) -> LOOResult:
        """The truth's value of every unit on every test point, with all that judges it.

        ``units``: the removed points of each dot (lists of training indices), or a function of
        the number of training points that returns them (checked against the data).
        ``config``: the retraining schedule (default :meth:`schedule` of the model's own);
        ``params``: the retrained parameters (default the truth's); ``options``: how the sweep
        runs; ``items``: what ``LOOResult.indices`` lists (default the units). The findings are
        in the result; nothing is warned here (the API functions warn).
        """
        t0 = time.perf_counter()
        options = self.sweep_options(options or SweepOptions())
        problem = self.prepare(model, train, test, config=config, params=params, options=options)
        units = units(problem.n) if callable(units) else _check_units(units, problem.n)
        run = run_sweep(problem, self.jobs(units, problem), options, desc=self.label, t0=t0)
        values, se = self.combine(run, len(units))
        return result_of(self, problem, run, values, se, units,
                         list(items) if items is not None else list(units))


def result_of(truth: GroundTruth, problem: Problem, run: SweepRun, values: torch.Tensor,
              se: torch.Tensor | None, units: Sequence[tuple[int, ...]],
              items: list[Any]) -> LOOResult:
    """A :class:`LOOResult` of ``truth`` from one sweep (per-unit diagnostics: the worst over
    the unit's seeds)."""
    n_units = len(units)
    per = run.grad_norms.reshape(-1, n_units) if n_units else run.grad_norms
    grad_norms = per.max(dim=0).values if n_units else per
    diverged = run.diverged.reshape(-1, n_units).any(dim=0) if n_units else run.diverged
    return LOOResult(
        values=values.to(problem.dtype), indices=items, mode=problem.mode, steps=problem.steps,
        params=problem.params_label, control_subtracted=problem.subtract_control,
        grad_norms=grad_norms, converged=grad_norms < problem.config.grad_tol,
        n_retrains_computed=run.n_computed, n_retrains_loaded=run.n_loaded,
        dtype=dtype_name(problem.dtype), seconds=run.seconds,
        reference="control retrain" if problem.subtract_control else "trained model",
        reference_losses=run.reference_losses, control_grad_norm=run.control_grad_norm,
        batch_width=run.width,
        pbrf_damping=problem.pbrf_damping if problem.mode == "pbrf" else None,
        setting=problem.setting()[0],
        info={"config": problem.config.to_dict(), "device": str(problem.device),
              "trainable": list(problem.names)},
        objective=problem.objective, diverged=diverged, findings=run.findings,
        truth=truth.name, se=None if se is None else se.to(problem.dtype),
        n_seeds=truth.n_seeds, units=[tuple(u) for u in units])


def _check_units(units: Sequence[Sequence[int]], n: int) -> list[tuple[int, ...]]:
    from .selection import check_groups

    return check_groups(list(units), n)


def seed_list(config: TrainConfig, n_seeds: int) -> list[int | None]:
    """The seeds of ``n_seeds`` paired runs: ``None`` (the config's own seed and start), then
    ``config.seed + 1``, ``+ 2``, ..."""
    return [None] + [config.seed + s for s in range(1, n_seeds)]


def mean_and_se(per_seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean over the seed axis (1) of ``(n_test, n_seeds, n_units)``, NaN-aware, and its standard
    error (ddof=1; NaN with fewer than 2 finite seeds); no standard error for one seed."""
    mean = per_seed.nanmean(dim=1)
    if per_seed.shape[1] < 2:
        return mean, None
    count = per_seed.isfinite().sum(dim=1)
    dev = (per_seed - mean[:, None, :]).nan_to_num(0.0).pow(2).sum(dim=1)
    sd = (dev / (count - 1).clamp_min(1)).sqrt()
    se = (sd / count.clamp_min(1).sqrt()).masked_fill(count < 2, float("nan"))
    return mean, se


# ----------------------------------------------------------------------------- the truths


@dataclass(frozen=True)
class WarmStartSettings(TruthSettings):
    steps: int = setting(500, "optimiser steps of each retrain, from the trained parameters",
                         minimum=1)
    optimizer: str = setting("adam", "the optimiser of the retrains (full batch)",
                             choices=("adam", "sgd", "lbfgs"))
    lr: float = setting(1e-3, "learning rate of the retrains", above=0.0)


class WarmStart(GroundTruth):
    name = "warm_start"
    label = "LOO warm start"
    short = "LOO"
    summary = ("retrain without each point from the trained parameters for a fixed number of "
               "steps (Koh & Liang's protocol): a local quantity, the paper's ground truth")
    retrain_mode = "warm_start"
    cheaper = "last_layer"
    Settings = WarmStartSettings

    def schedule(self, model_config: TrainConfig) -> TrainConfig:
        s = self.settings
        return model_config.replace(loss=None, weight_decay=None, steps=s.steps, epochs=None,
                                    batch_size=None, polish_steps=0, optimizer=s.optimizer,
                                    lr=s.lr)


class LastLayer(WarmStart):
    name = "last_layer"
    label = "LOO last layer (warm start)"
    short = "LOO last layer"
    summary = ("retrain only the last layer without each point, from the trained parameters: "
               "the ground truth of a last-layer estimate")
    params = "last_layer"
    cheaper = None


@dataclass(frozen=True)
class ScratchSettings(TruthSettings):
    n_seeds: int = setting(1, "paired seeds averaged per point: seed 1 is the model's own start "
                           "and batch order, each further seed a new initialisation and batch "
                           "order shared by its control and its removals", minimum=1)


class Scratch(GroundTruth):
    name = "scratch"
    label = "LOO from scratch"
    short = "LOO scratch"
    summary = ("retrain without each point from the model's initialisation with its own "
               "schedule; with n_seeds > 1, averaged over paired seeds (each with a standard "
               "error): what retraining really does, minima jumps included")
    retrain_mode = "scratch"
    Settings = ScratchSettings

    def describe(self, config: TrainConfig, n: int | None = None) -> str:
        return super().describe(config, n).replace(
            f"{self.label}:", f"{self.label} (the model's own schedule):")

    def jobs(self, units: Sequence[tuple[int, ...]], problem: Problem) -> list[Job]:
        return [removal_job(u, seed=s, control=problem.subtract_control)
                for s in seed_list(problem.config, self.n_seeds) for u in units]

    def combine(self, run: SweepRun, n_units: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return mean_and_se(run.by_seed(self.n_seeds))


@dataclass(frozen=True)
class MiniBatchSettings(TruthSettings):
    n_seeds: int = setting(3, "paired seeds averaged per point: each a mini-batch order shared "
                           "by its control and its removals (the same initialisation)", minimum=1)
    batch_size: int = setting(32, "mini-batch size of the retrains", minimum=1)
    epochs: int = setting(100, "passes over the training data", minimum=1)
    optimizer: str = setting("adam", "the optimiser of the retrains", choices=("adam", "sgd"))
    lr: float = setting(0.01, "learning rate of the retrains", above=0.0)


class MiniBatch(GroundTruth):
    name = "minibatch"
    label = "LOO mini-batch retraining"
    short = "LOO mini-batch"
    summary = ("retrain without each point from the model's initialisation with mini-batches, "
               "averaged over paired batch orders (each with a standard error): the randomness "
               "of stochastic training in the ground truth")
    retrain_mode = "scratch"
    noise = ("mini-batch order noise: retraining with nothing removed under other batch orders "
             "(the same initialisation, this truth's schedule)")
    noise_new_init = False
    Settings = MiniBatchSettings

    def schedule(self, model_config: TrainConfig) -> TrainConfig:
        s = self.settings
        return model_config.replace(loss=None, weight_decay=None, optimizer=s.optimizer,
                                    lr=s.lr, batch_size=s.batch_size, epochs=s.epochs,
                                    steps=None, polish_steps=0)

    def noise_schedule(self, model_config: TrainConfig) -> TrainConfig:
        return self.schedule(model_config)

    def jobs(self, units: Sequence[tuple[int, ...]], problem: Problem) -> list[Job]:
        seeds = [problem.config.seed + s for s in range(self.n_seeds)]
        return [removal_job(u, seed=s, reinit=False, control=problem.subtract_control)
                for s in seeds for u in units]

    def combine(self, run: SweepRun, n_units: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return mean_and_se(run.by_seed(self.n_seeds))


@dataclass(frozen=True)
class PBRFSettings(WarmStartSettings):
    pbrf_damping: float = setting(1e-3, "the damping of the proximal term (and of the damped "
                                  "Gauss-Newton estimate the PBRF approximates)", minimum=0.0)


class PBRF(WarmStart):
    name = "pbrf"
    label = "PBRF (proximal Bregman response)"
    short = "PBRF"
    summary = ("the proximal Bregman response function (Bae et al. 2022): what influence "
               "functions approximate even where they miss LOO; compared with the trained model")
    retrain_mode = "pbrf"
    cheaper = None
    target = Target(curvature="ggn", damping="pbrf_damping")
    Settings = PBRFSettings

    def sweep_options(self, options: SweepOptions) -> SweepOptions:
        return options.replace(pbrf_damping=self.settings.pbrf_damping)

    def describe(self, config: TrainConfig, n: int | None = None) -> str:
        return super().describe(config, n) + f", damping {self.settings.pbrf_damping:g}"


@dataclass(frozen=True)
class LDSSettings(TruthSettings):
    fraction: float = setting(0.5, "the share of the training set each subset keeps (TRAK: 0.5)",
                              above=0.0)
    n_repeats: int = setting(1, "retrains per subset, averaged (repeat 1: the model's own seed; "
                             "each further one a new seed, paired with its own control)",
                             minimum=1)
    retrain: str = setting("scratch", "how each subset is retrained: from the model's "
                           "initialisation with its own schedule (TRAK), or from the trained "
                           "parameters", choices=("scratch", "warm_start"))
    perturb: float = setting(1e-3, "for repeats of a deterministic schedule (full-batch warm "
                             "start), the relative size of a seeded perturbation of the start",
                             minimum=0.0, advanced=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.fraction < 1:
            raise ValueError(f"LDSSettings.fraction must be in (0, 1) (the share of the training "
                             f"points each subset keeps; TRAK uses 0.5), got {self.fraction!r}")


class LDS(GroundTruth):
    name = "lds"
    label = "LDS (random half-subsets)"
    short = "LDS"
    summary = ("the linear datamodeling score (Park et al. 2023): random subsets retrained from "
               "scratch; the estimates summed over the points each removes should rank the test "
               "losses")
    dot = "random subset"
    draws_units = True
    retrain_mode = "scratch"
    Settings = LDSSettings

    @property
    def mode(self) -> str:
        return self.settings.retrain

    @property
    def n_seeds(self) -> int:
        return self.settings.n_repeats

    def describe(self, config: TrainConfig, n: int | None = None) -> str:
        how = ("retrained from scratch with the model's own schedule" if self.mode == "scratch"
               else f"each warm-started ({config.optimizer}, lr {config.lr:g}, "
                    f"{config.steps} steps)")
        reps = f", {self.settings.n_repeats} repeats averaged" if self.settings.n_repeats > 1 else ""
        return (f"LDS: random subsets keeping {self.settings.fraction:.0%} of the training set, "
                f"{how}{reps}")

    def schedule(self, model_config: TrainConfig) -> TrainConfig:
        if self.mode == "scratch":
            return model_config.replace(loss=None, weight_decay=None)
        return WarmStart().schedule(model_config)

    def draw_units(self, n: int, k: int, seed: int = 0) -> list[tuple[int, ...]]:
        from .lds import random_subsets

        keep = random_subsets(n, self.settings.fraction, k, seed)
        return [tuple(torch.nonzero(~row).flatten().tolist()) for row in keep]

    def jobs(self, units: Sequence[tuple[int, ...]], problem: Problem) -> list[Job]:
        from .noise import randomness

        size, _ = (randomness(problem, self.settings.perturb if problem.mode != "scratch"
                              else "auto") if self.settings.n_repeats > 1 else (0.0, ""))
        out = []
        for s in seed_list(problem.config, self.settings.n_repeats):
            out += [removal_job(u, seed=s, perturb=size if s is not None else 0.0,
                                control=problem.subtract_control) for u in units]
        return out

    def combine(self, run: SweepRun, n_units: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return mean_and_se(run.by_seed(self.settings.n_repeats))


@dataclass(frozen=True)
class ExactSettings(TruthSettings):
    pass


class Exact(GroundTruth):
    name = "exact"
    label = "exact solve (no retraining)"
    short = "exact"
    summary = ("the exact inverse-Hessian solve with the estimate's own curvature, damping and "
               "parameters: how far an iterative or factored solver is from its own target")
    retrain_mode = ""
    noise = "none: the exact solve is deterministic"
    Settings = ExactSettings

    def describe(self, config: TrainConfig | None = None, n: int | None = None) -> str:
        return f"{self.label}: the estimate's own curvature, damping and parameters"

    def measure(self, model: Any, train: Any, test: Any,
                units: Callable[[int], list[tuple[int, ...]]] | Sequence[Sequence[int]], *,
                config: TrainConfig | None = None, params: Any = None,
                options: SweepOptions | None = None, estimate: Any = None,
                items: Sequence[Any] | None = None) -> LOOResult:
        """The exact estimate summed over each unit; ``estimate`` (an ``InfluenceResult``) gives
        the curvature, damping and parameters (default: Hessian, 0, all). An ``estimate`` that
        is itself the exact solve (of ``test``) is used as it is, not solved again."""
        from ..influence import InfluenceEngine
        from .selection import group_estimate

        t0 = time.perf_counter()
        curvature = getattr(estimate, "curvature", "hessian")
        damping = float(getattr(estimate, "damping", 0.0))
        params = getattr(estimate, "params", None) or params or "all"
        if getattr(estimate, "solver", None) == "exact":
            res = estimate
        else:
            engine = InfluenceEngine(model, train, params=params, curvature=curvature)
            res = engine.scores(test, solver="exact", damping=damping)
        values = res.values.detach().cpu().double()
        n = values.shape[1]
        units = units(n) if callable(units) else _check_units(units, n)
        actual = group_estimate(values, [list(u) for u in units])
        zeros = torch.zeros(len(units), dtype=torch.float64)
        return LOOResult(
            values=actual, indices=list(items) if items is not None else list(units),
            mode="exact", steps=0, params=str(params), control_subtracted=False,
            grad_norms=zeros, converged=torch.ones(len(units), dtype=torch.bool),
            n_retrains_computed=0, dtype=dtype_name(values.dtype),
            seconds=time.perf_counter() - t0, reference="exact solve",
            info={"curvature": curvature, "damping": damping}, truth=self.name,
            diverged=torch.zeros(len(units), dtype=torch.bool), findings=res.findings,
            units=[tuple(u) for u in units])


# ----------------------------------------------------------------------------- the registry

#: Every ground truth by name. A new one is a :class:`GroundTruth` subclass with its
#: ``Settings`` and one :func:`register_truth` call; the API, the explorer, the studies and the
#: CLI read it.
TRUTHS: Registry = Registry("ground truth", GroundTruth, TruthSettings)
register_truth = TRUTHS.register
unregister_truth = TRUTHS.unregister

for _cls in (WarmStart, Scratch, MiniBatch, LastLayer, PBRF, LDS, Exact):
    register_truth(_cls)


def truth_class(name: str | GroundTruth) -> type[GroundTruth]:
    """The ground truth class called ``name``, or a ``ValueError`` listing the valid names."""
    return type(name) if isinstance(name, GroundTruth) else TRUTHS.lookup(name)


def make_truth(name: str | GroundTruth, settings: TruthSettings | dict[str, Any] | None = None,
               **options: Any) -> GroundTruth:
    """A ground truth by name with its settings (a ``Settings`` instance, a dict or keywords);
    unknown names and settings are clear errors. A :class:`GroundTruth` is returned as it is
    (with ``options`` replacing its settings)."""
    if isinstance(name, GroundTruth):
        if not options and settings is None:
            return name
        settings = settings if settings is not None else name.settings
        name = name.name
    cls = truth_class(name)
    if isinstance(settings, dict):
        options = {**settings, **options}
        settings = None
    if settings is None:
        return cls(cls.Settings.from_options(cls.name, **options))
    if not isinstance(settings, cls.Settings):
        raise TypeError(f"ground truth {name!r} takes {cls.Settings.__name__}, "
                        f"got {type(settings).__name__}")
    if options:
        settings = cls.Settings.from_options(cls.name, **{**settings.options(), **options})
    return cls(settings)


def split_settings(truth: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``overrides`` split into the settings of ground truth ``truth`` and the rest (sweep
    options); a name that is both (``pbrf_damping``) goes to both."""
    from .options import OPTION_NAMES

    fields = {f.name for f in truth_class(truth).Settings.fields()}
    mine = {k: v for k, v in overrides.items() if k in fields}
    rest = {k: v for k, v in overrides.items() if k not in fields or k in OPTION_NAMES}
    return mine, rest


def describe_truths() -> list[str]:
    """One line per registered ground truth: name, label, what a dot is, settings (the CLI)."""
    lines = []
    for name, cls in TRUTHS.items():
        fields = ", ".join(f"{f.name}={f.default!r}" for f in cls.Settings.fields())
        lines.append(f"  {name:<11} {cls.label}: one dot per {cls.dot}"
                     + (f"; settings: {fields}" if fields else "") + f". {cls.summary}")
    return lines

