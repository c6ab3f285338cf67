"""The explorer's computing side, without widgets: what to compute and what to keep.

Only what changed is recomputed:

* one :class:`~influence_widgets.InfluenceEngine` per (model, params, curvature, device), so a new
  damping of the exact solver reuses its eigendecomposition and a new test point reuses everything;
* estimates per (engine, solver, solver settings, test point);
* the *evaluated set* of training points per (model, test point, k, selection): chosen once, from
  the estimate in effect at the first compute (top-k by |estimate|) or at random, and then kept
  while the solver, damping, curvature or parameters change. Comparing solvers on the same points
  keeps their correlations comparable, and a new solver costs no retraining. Changing k, the
  selection or the test point picks a new set;
* ground-truth results per (model, ground truth and its settings, evaluated units), in memory
  and in the ground-truth store on disk (a reopened notebook gets them back without
  retraining). The ground truth is a registered one (:data:`~influence_widgets.ground_truth.TRUTHS`):
  the explorer reads what a dot is, its schedule, its settings and its noise from it. Each
  retrain is evaluated on the whole test split, so another test point reuses every retrain of a
  unit it shares with an earlier evaluated set (random subsets are the same for every test
  point of a seed);
* the truth's noise floor (real retraining randomness) per (model, noise schedule), for all
  test points at once, also in the store.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._findings import Finding, TrustReport, suggest_damping
from ..ground_truth.truths import (
    GroundTruth,
    TruthSettings,
    WarmStartSettings,
    make_truth,
    truth_class,
)
from ..influence import InfluenceEngine, InfluenceResult
from ..influence.settings import SolverSettings, check_damping
from ..influence.solvers import make_settings, power_iteration
from ..models.training import TrainConfig, TrainedModel

if TYPE_CHECKING:
    from ..ground_truth import LOOResult, NoiseResult
    from ..ground_truth.eta import EstimateETA, StepTiming, SweepETA

Progress = Callable[[int, int, dict[str, Any]], None]
ShouldStop = Callable[[], bool]

DEFAULT_MODEL = "iris-mlp-d1-w5-wd"
DEFAULT_GT_STEPS = WarmStartSettings().steps  # the warm-start truths' default steps
DEFAULT_K = 40
NOISE_SEEDS = 3  # 3 seeds + the control: a rough floor that keeps a cold click within ~3 s
# Parameters x training points under which computing uses one thread. Measured on the shared
# 2-core CPU with digits-cnn (1,898 parameters x 1,438 points): two threads made CG + GGN take
# 71 s instead of 6.8 s, the exact Hessian 403 s instead of 40 s, a retraining step 5x longer.
SMALL_WORK = 50_000_000
# Heavy models (any convolution, or SMALL_WORK and more) start with fewer evaluated points and
# shorter warm starts, so that a cold Compute of digits-cnn on a CPU stays within a minute.
HEAVY_DEFAULTS = {"k": 12, "gt_steps": 100}
CPU_CONV_WIDTH = 4  # retrains per chunk of a conv net on CPU (see retrain_options)
EIGEN_MAX_PARAMS = 600  # up to this size, diagnostics fit an exact Hessian for eigenvalues
POWER_ITERS = 20  # larger models: the top eigenvalue by power iteration


@dataclass(frozen=True)
class Request:
    """Everything one compute depends on."""

    model: str
    test_index: int
    solver: str = "exact"
    settings: SolverSettings | None = None  # the solver's own settings class; None: its defaults
    damping: float = 0.0
    curvature: str = "hessian"
    params: str = "all"
    gt_mode: str = "warm_start"  # a registered ground truth (iw.ground_truth.TRUTHS)
    gt_steps: int = DEFAULT_GT_STEPS  # its "steps" setting, for truths that have one
    k: int = 40
    selection: str = "top"
    seed: int = 0
    device: str = "cpu"
    gt_settings: TruthSettings | None = None  # the truth's other settings (None: its defaults)

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", make_settings(self.solver, self.settings))
        object.__setattr__(self, "damping", check_damping(self.damping))
        try:
            cls = truth_class(self.gt_mode)
        except ValueError:
            from ..ground_truth import TRUTHS

            raise ValueError(f"unknown ground truth {self.gt_mode!r}; use one of {list(TRUTHS)} "
                             "(a new one is added with iw.ground_truth.register_truth)") from None
        steps = {"steps": self.gt_steps} if "steps" in _field_names(cls) else {}
        object.__setattr__(self, "gt_settings", make_truth(self.gt_mode, self.gt_settings,
                                                           **steps).settings)
        if self.selection not in ("top", "random"):
            raise ValueError(f"selection must be 'top' or 'random', got {self.selection!r}")
        if self.k < 3:
            raise ValueError(f"k must be at least 3 to compare estimates with LOO, got {self.k}")
        if self.gt_steps < 1:
            raise ValueError(f"ground-truth steps must be >= 1, got {self.gt_steps}")

    @property
    def engine_key(self) -> tuple:
        return (self.model, self.params, self.curvature, self.device)


    @property
    def truth(self) -> GroundTruth:
        """The ground truth with its settings (``gt_steps`` included where it has steps)."""
        return make_truth(self.gt_mode, self.gt_settings)

    @property
    def gt_key(self) -> tuple:
        return (self.gt_mode, self.gt_settings, self.device)

    @property
    def draws_units(self) -> bool:
        """Whether the dots are units the truth draws (random subsets) rather than training
        points."""
        return truth_class(self.gt_mode).draws_units

    @property
    def uses_steps(self) -> bool:
        """Whether the ground truth has a ``steps`` setting (``gt_steps`` applies)."""
        return "steps" in _field_names(truth_class(self.gt_mode))


def _field_names(cls: type[GroundTruth]) -> set[str]:
    return {f.name for f in cls.Settings.fields()}


@dataclass(kw_only=True)
class Outcome:
    """One compute's results, with what produced them (built by keyword only)."""

    request: Request
    estimate: InfluenceResult
    indices: torch.Tensor
    estimated: torch.Tensor
    actual: torch.Tensor
    loo: LOOResult
    noise_std: float | None
    stats: dict[str, Any]
    index_note: str
    eigen: dict[str, Any]
    retrains: int
    seconds: dict[str, float]
    report: TrustReport = field(default_factory=TrustReport)  # every finding, parts and comparison
    notes: tuple[Finding, ...] = ()  # what the compute itself decided (a damping it picked)
    vs_exact: dict[str, Any] | None = None  # an iterative solver against the exact solve
    actual_se: torch.Tensor | None = None  # per dot, for a truth that averages seeds
    forecast: Any = None  # the trust forecast (iw.trust) made before retraining, or None

    def to_frame(self, data: Any = None) -> Any:
        """The comparison as a ``pandas.DataFrame``: one row per dot (training point, or subset
        for the LDS) with its label (with ``data``, a dataset), estimate and actual change (and
        its standard error, for a seed-averaged truth), whether the actual change is within the
        noise floor, and the settings that produced it in every row (so a CSV of it stands
        alone)."""
        import pandas as pd

        req = self.request
        subsets = req.draws_units
        frame = pd.DataFrame({
            "subset" if subsets else "index": self.indices.numpy().astype(int),
            "estimate": self.estimated.numpy(),
            "actual": self.actual.numpy(),
        })
        if self.actual_se is not None:
            frame["actual_se"] = self.actual_se.numpy()
        if not subsets and data is not None:
            y = data.y_train[self.indices].numpy().astype(int)
            names = list(getattr(data, "class_names", None) or [])
            frame.insert(1, "label", [names[v] if 0 <= v < len(names) else str(v) for v in y])
        if self.noise_std is not None:
            frame["within_noise"] = frame["actual"].abs() < self.noise_std
        if not subsets and data is not None and not data.is_image:
            from .panels import for_display

            X = data.X_train[self.indices]
            names = list(data.info.get("feature_names") or
                         [f"x{j}" for j in range(X[0].numel())])
            values = np.stack([for_display(x, data.info) for x in X]) if len(X) else \
                np.empty((0, len(names)))
            for j, name in enumerate(names):  # in the data's own units
                frame[f"feature: {name}"] = values[:, j]
        for key, value in self.stats_row().items():
            frame[key] = value
        for key, value in self.settings().items():
            frame[key] = value
        return frame

    def stats_row(self) -> dict[str, Any]:
        """The agreement statistics as plain values (``stat: pearson``, ``stat: pearson CI
        low`` ...), for a table that stands alone."""
        out = {}
        for key, value in self.stats.items():
            if isinstance(value, tuple | list) and len(value) == 2:
                name = f"{key.removesuffix('_ci')} CI" if key.endswith("_ci") else key
                out[f"stat: {name} low"], out[f"stat: {name} high"] = (float(v) for v in value)
            elif isinstance(value, int | float | np.floating | np.integer) and \
                    not isinstance(value, bool):
                out[f"stat: {key}"] = float(value)
        return out

    def settings(self) -> dict[str, Any]:
        """What produced this outcome, as plain values (the request, solver settings flat)."""
        from ..influence.settings import SolverSettings

        req = self.request
        out = {"model": req.model, "test_index": req.test_index, "solver": req.solver}
        if isinstance(req.settings, SolverSettings):
            out.update({f"{req.solver}.{k}": v for k, v in req.settings.options().items()})
        out.update(damping=req.damping, curvature=req.curvature, params=req.params,
                   ground_truth=req.gt_mode, gt_steps=req.gt_steps if req.uses_steps else None)
        out.update({f"{req.gt_mode}.{k}": v for k, v in req.gt_settings.options().items()
                    if k != "steps"})
        out.update(k=req.k, selection="random subsets" if req.draws_units else req.selection,
                   seed=req.seed, device=req.device, dtype=self.loo.dtype,
                   noise_floor=self.noise_std)
        return out


@dataclass(frozen=True)
class ComputeETA:
    """The expected time of one compute, by part (None: nothing to compute there), measured
    before it starts (:meth:`ExplorerSession.eta`)."""

    request: Request
    estimate: EstimateETA | None
    retrain: SweepETA | None
    noise: SweepETA | None
    seconds_to_plan: float = 0.0  # how long finding these numbers took
    indices_known: bool = True  # False: the evaluated points are not chosen yet (counted new)

    @property
    def parts(self) -> dict[str, float]:
        """Expected seconds of "estimate", "retraining" and "noise"."""
        return {
            name: 0.0 if part is None else float(part.seconds)
            for name, part in (
                ("estimate", self.estimate), ("retraining", self.retrain), ("noise", self.noise)
            )
        }

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        """``expected ~N s (estimate a s, retraining b s, noise c s)``."""
        p = self.parts
        return (
            f"{expected_text(self.seconds)} (estimate {_secs(p['estimate'])}, retraining "
            f"{_secs(p['retraining'])}, noise {_secs(p['noise'])})"
        )

    def details(self) -> list[str]:
        """What each part rests on, one line each."""
        lines = []
        for name, part in (
            ("estimate", self.estimate), ("retraining", self.retrain), ("noise floor", self.noise)
        ):
            lines.append(f"{name}: " + ("cached" if part is None else part.describe()))
        if not self.indices_known:
            lines.append("the evaluated points are chosen by the estimate: all counted as new")
        return lines


def _fewer(steps: int) -> list[int]:
    """Round step counts below ``steps``, largest first (1-2-5 series, down to 10)."""
    out = [m * 10**e for e in range(6, 0, -1) for m in (5, 2, 1)]
    return [s for s in out if s < steps]


def _secs(x: float) -> str:
    """A duration as people read it: "under 1 s", "4.2 s", "35 s" (never "0.0 s")."""
    if x < 0.95:
        return "under 1 s"
    return f"{x:.1f} s" if x < 10 else f"{x:.0f} s"


def expected_text(seconds: float) -> str:
    """``expected ~4.2 s`` or ``expected under 1 s``."""
    return f"expected {'' if seconds < 0.95 else '~'}{_secs(seconds)}"


def gt_config(tm: TrainedModel, truth: Request | GroundTruth | str, steps: int | None = None,
              device: str = "cpu") -> TrainConfig:
    """The retraining schedule of a ground truth for ``tm`` (a :class:`Request`, a truth, or a
    truth's name with ``steps``): the truth's own schedule (e.g. full-batch Adam, lr 1e-3, for
    ``steps`` steps from the trained parameters for a warm start; the model's own for "scratch")
    on ``device``. The objective (loss, weight decay) is always the model's: left unset here,
    the retrains take it from the model."""
    if isinstance(truth, Request):
        truth, device = truth.truth, truth.device
    elif not isinstance(truth, GroundTruth):
        cls = truth_class(truth)
        truth = make_truth(truth, **({"steps": steps} if steps is not None
                                     and "steps" in _field_names(cls) else {}))
    return truth.schedule(tm.config).replace(device=device)


def describe_gt(req: Request, objective: Any = None, dtype: str | None = None,
                tm: TrainedModel | None = None) -> str:
    """One line naming the ground truth and its schedule (with ``tm``, the model's own where the
    truth uses it), the dtype it retrained in, and the objective (a
    :class:`~influence_widgets.ground_truth.RetrainObjective`), for the results panel."""
    truth = req.truth
    config = truth.schedule(tm.config if tm is not None else TrainConfig())
    line = truth.describe(config, None if tm is None else int(tm.X_train.shape[0]))
    if dtype is not None:
        line += f", {dtype}"
    if objective is not None:
        line += f"; objective: {objective.describe()}"
    return line


def _work(tm: TrainedModel) -> int:
    """Parameters x training points: how the explorer sizes a model."""
    return sum(p.numel() for p in tm.model.parameters()) * int(tm.X_train.shape[0])


def _has_conv(tm: TrainedModel) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in tm.model.modules())


def is_heavy(tm: TrainedModel) -> bool:
    """Whether a retraining step of ``tm`` is expensive on a CPU: a conv net, or a model of
    :data:`SMALL_WORK` parameters x training points and more."""
    return _has_conv(tm) or _work(tm) >= SMALL_WORK


def model_defaults(tm: TrainedModel) -> dict[str, int]:
    """The evaluated points ``k`` and warm-start steps ``gt_steps`` the explorer starts with
    for ``tm``: :data:`HEAVY_DEFAULTS` for a heavy model (:func:`is_heavy`), else 40 and 500."""
    if is_heavy(tm):
        return dict(HEAVY_DEFAULTS)
    return {"k": DEFAULT_K, "gt_steps": DEFAULT_GT_STEPS}


def retrain_options(tm: TrainedModel, req: Request) -> dict[str, Any]:
    """How the explorer's retrains run (fields of ``SweepOptions``), the same for the ETA and
    the run:

    * ``dtype``: for a conv net on CPU, the dtype it was trained in; otherwise "auto" (float64
      on CPU under 5e6 parameters). Measured on digits-cnn (trained in float32): float32
      retraining is 2.4x faster than float64 (which has no fast convolution on CPU).
    * ``batch_width``: for a conv net on CPU whose convolutions are retrained, at most
      :data:`CPU_CONV_WIDTH` retrains per chunk (stacked convolutions gain nothing there:
      digits-cnn took 17 ms per retrain-step in chunks of 1-4, 30-48 ms in the chunks of 16-36
      picked by memory); otherwise "auto" (last-layer retrains share the frozen convolutions,
      and stack well).
    """
    from ..ground_truth.retrain import choose_width
    from ..models.params import select_params

    dtype: str = "auto"
    width: int | str = "auto"
    if req.device == "cpu" and _has_conv(tm):
        dtype = tm.config.dtype
        names = select_params(tm.model, req.truth.params)
        conv = {f"{m}.{p}" for m, mod in tm.model.named_modules()
                if isinstance(mod, nn.modules.conv._ConvNd) for p, _ in mod.named_parameters()}
        if conv & set(names):
            cfg = gt_config(tm, req)
            auto = choose_width(tm.model, tm.X_train, 1 << 20, names, cfg, torch.device("cpu"))
            width = min(CPU_CONV_WIDTH, auto)
    return {"dtype": dtype, "batch_width": width}


def one_at_a_time(what: Any, should_stop: ShouldStop | None = None,
                  waiting: Callable[[], None] | None = None) -> Any:
    """A context in which the job ``what`` (any value with a stable ``repr``) runs in one
    process or thread at a time, across every kernel of this machine that shares the cache
    folder: two visitors asking for the same retrains at once compute them once, the second
    waiting (``waiting()`` is called once when it starts to) and then loading them from the
    store. A file lock in the cache folder; where file locks are not available (no ``fcntl``)
    the job simply runs. ``should_stop`` is polled while waiting."""
    return _one_at_a_time(what, should_stop, waiting)


@contextmanager
def _one_at_a_time(what: Any, should_stop: ShouldStop | None,
                   waiting: Callable[[], None] | None) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield
        return
    from .._cache import cache_dir, hash_settings

    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{hash_settings(repr(what))}.lock", "a+") as handle:
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if should_stop is not None and should_stop():
                    raise InterruptedError(
                        "cancelled while waiting for the same computation started elsewhere"
                    ) from None
                if not told and waiting is not None:
                    waiting()
                    told = True
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _waiting_note(progress: Progress | None) -> Callable[[], None] | None:
    if progress is None:
        return None
    return lambda: progress(0, 1, {"note": "the same retrains are running for someone else "
                                           "(another visitor or notebook): waiting to reuse them"})


@contextmanager
def few_threads(tm: TrainedModel) -> Iterator[None]:
    """One torch thread while computing on a small model, restored after: tiny tensors gain
    nothing from more threads, and on a shared few-core CPU spinning threads cost up to 100x."""
    n_params = sum(p.numel() for p in tm.model.parameters())
    before = torch.get_num_threads()
    small = n_params * tm.X_train.shape[0] < SMALL_WORK
    if small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small and before > 1:
            torch.set_num_threads(before)


class ExplorerSession:
    """Caches models, engines, estimates, evaluated sets, LOO results and noise floors."""

    def __init__(self, models: dict[str, TrainedModel] | None = None) -> None:
        self.models: dict[str, TrainedModel] = dict(models or {})
        self.engines: dict[tuple, InfluenceEngine] = {}
        self._estimates: dict[tuple, InfluenceResult] = {}
        self._index_sets: dict[tuple, tuple[torch.Tensor, str]] = {}
        self._loo: dict[tuple, LOOResult] = {}
        self._noise: dict[tuple, NoiseResult | None] = {}
        self._power: dict[tuple, float] = {}
        self._predictions: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._fitted: set[tuple] = set()  # (engine key, solver, settings) fitted once
        self._picked: dict[Request, tuple[Request, Finding]] = {}  # damping picked for a request
        self._timings: dict[tuple, StepTiming] = {}  # measured retraining steps (see eta)
        self._forecasts: dict[tuple, Any] = {}
        self.retrain_count = 0
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ models and data
    def model(self, name: str, progress: Progress | None = None) -> TrainedModel:
        """The trained model called ``name``: passed in, or from the zoo (trained on first use)."""
        tm = self.models.get(name)
        if tm is None:
            with self.lock:
                from ..models import zoo

                tm = self.models.get(name) or zoo.load(name, progress=progress)
                self.models[name] = tm
        if getattr(tm, "data", None) is None:
            raise ValueError(
                f"model {name!r} has no .data, so the explorer has no test split; "
                "train it with iw.train(..., data=data) or set tm.data = data"
            )
        return tm

    def test_losses(self, name: str) -> torch.Tensor:
        """Per-test-point loss of model ``name`` (for picking test points)."""
        return self.predictions(name)[1]

    def predictions(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted class and loss of every test point (computed once per model)."""
        from ..models.losses import per_sample_loss

        hit = self._predictions.get(name)
        if hit is None:
            tm = self.model(name)
            p = next(tm.model.parameters())
            with self.lock, torch.no_grad():
                out = tm.model(tm.data.X_test.to(p.device, p.dtype))
                losses = per_sample_loss(out, tm.data.y_test.to(p.device), tm.config.loss)
            hit = (out.argmax(dim=-1).cpu(), losses.detach().double().cpu())
            self._predictions[name] = hit
        return hit

    # ------------------------------------------------------------------ estimates
    def engine(self, req: Request) -> InfluenceEngine:
        """The engine for (model, params, curvature, device), built once."""
        eng = self.engines.get(req.engine_key)
        if eng is None:
            tm = self.model(req.model)
            eng = InfluenceEngine(
                tm, tm.train, params=req.params, curvature=req.curvature, device=req.device
            )
            self.engines[req.engine_key] = eng
        return eng

    def estimate(self, req: Request, progress: Progress | None = None) -> InfluenceResult:
        """Estimated influence of every training point on the test point (cached)."""
        key = (
            req.engine_key,
            req.solver,
            req.damping,
            req.settings,
            req.test_index,
        )
        res = self._estimates.get(key)
        if res is None:
            tm = self.model(req.model)
            res = self.engine(req).scores(
                tm.data.test,
                solver=req.solver,
                damping=req.damping,
                settings=req.settings,
                test_indices=[req.test_index],
                progress=progress,
            )
            self._estimates[key] = res
            self._fitted.add((req.engine_key, req.solver, req.settings))
        return res

    def agreement_by_test_point(self, out: Outcome, max_points: int = 60,
                                progress: Progress | None = None) -> Any:
        """How well ``out``'s solver agrees with its ground truth on each test point: a
        ``pandas.DataFrame`` with ``test_index``, ``spearman``, ``pearson``, ``test_loss`` and
        ``shown`` (the test point of ``out``), one row per test point (at most ``max_points``,
        evenly spaced, always with ``out``'s).

        Nothing is retrained: every test point is compared over the same training points, those
        evaluated for ``out``'s test point, whose retrains gave every test point's loss. Only
        the estimate is solved for the other test points (one batch, same solver and settings).
        """
        import pandas as pd
        from scipy.stats import pearsonr, spearmanr

        req = out.request
        if req.draws_units:
            raise ValueError(
                f"the agreement per test point compares training points one by one: with the "
                f"{req.truth.short or req.gt_mode} ground truth each dot is a {req.truth.dot}; "
                "choose a LOO ground truth (e.g. LOO warm start) and compute again")
        tm = self.model(req.model)
        n_test = int(tm.data.X_test.shape[0])
        ts = list(range(n_test)) if n_test <= max_points else sorted(
            {int(t) for t in np.linspace(0, n_test - 1, max_points).round()} | {req.test_index})
        with self.lock, few_threads(tm):
            res = self.engine(req).scores(tm.data.test, solver=req.solver, damping=req.damping,
                                          settings=req.settings, test_indices=ts,
                                          progress=progress)
        est = res.values.detach().double().cpu()[:, out.indices].numpy()
        act = torch.as_tensor(out.loo.values).detach().double().cpu()[ts].numpy()
        losses = self.test_losses(req.model)
        rows = []
        for j, t in enumerate(ts):
            ok = np.isfinite(est[j]) & np.isfinite(act[j])
            a, b = est[j][ok], act[j][ok]
            flat = ok.sum() < 3 or np.ptp(a) == 0 or np.ptp(b) == 0
            rows.append({
                "test_index": t,
                "spearman": float("nan") if flat else float(spearmanr(a, b).statistic),
                "pearson": float("nan") if flat else float(pearsonr(a, b).statistic),
                "test_loss": float(losses[t]),
                "shown": t == req.test_index,
            })
        return pd.DataFrame(rows)

    def eigen(self, req: Request, res: InfluenceResult) -> dict[str, Any]:
        """Top / most negative curvature eigenvalues: from the solver, an exact fit when small,
        else the top one by power iteration."""
        d = res.diagnostics
        if "top_eigenvalue" in d and req.solver == "exact":
            return {k: d.get(k) for k in ("top_eigenvalue", "min_eigenvalue", "n_negative")}
        eng = self.engine(req)
        if eng.objective.p > EIGEN_MAX_PARAMS:
            top = d.get("top_eigenvalue")
            if top is None:
                if req.engine_key not in self._power:
                    self._power[req.engine_key] = power_iteration(eng.objective, iters=POWER_ITERS)
                top = self._power[req.engine_key]
            return {
                "top_eigenvalue": top,
                "min_eigenvalue": d.get("min_eigenvalue"),
                "note": f"{eng.objective.p} parameters: top = largest |eigenvalue| from "
                f"{POWER_ITERS} power iterations; the most negative needs solver 'exact'",
            }
        s = eng.solver("exact")
        return {k: s.diagnostics.get(k) for k in ("top_eigenvalue", "min_eigenvalue", "n_negative")}

    #: Up to this many parameters an iterative solver is also compared with the exact solve
    #: (the exact Hessian is fitted there anyway, for the eigenvalue diagnostics).
    EXACT_COMPARE_MAX_PARAMS = EIGEN_MAX_PARAMS

    def against_exact(self, req: Request, est: InfluenceResult) -> dict[str, Any] | None:
        """An iterative (or approximate) solver's estimate against the exact solve of the same
        curvature, damping and parameters, over every training point: relative error
        ``|est - exact| / |exact|`` (2-norms) and their Pearson correlation. None for the exact
        solver itself, for models over :attr:`EXACT_COMPARE_MAX_PARAMS` parameters, and when the
        exact solve fails (its reason is kept)."""
        if req.solver == "exact":
            return None
        obj = self.engine(req).objective
        if obj.p > self.EXACT_COMPARE_MAX_PARAMS:
            return None
        exact_req = replace(req, solver="exact", settings=None)
        try:
            exact = self.estimate(exact_req)
        except Exception as e:  # e.g. a singular H with no damping: say so, do not fail
            return {"error": f"{type(e).__name__}: {e}"}
        from ..evaluate.trust import _pearson

        a = est.values[0].detach().double().cpu()
        b = exact.values[0].detach().double().cpu()
        nb = float(b.norm())
        rel = float((a - b).norm() / nb) if nb > 0 else math.nan
        return {"rel_error": rel, "pearson": _pearson(a.numpy(), b.numpy()),
                "damping": req.damping}

    # ------------------------------------------------------------------ evaluated set
    def indices(self, req: Request, scores_row: torch.Tensor) -> tuple[torch.Tensor, str]:
        """The evaluated training points, chosen once per (model, test point, k, selection)."""
        from ..ground_truth import random_k, top_k

        key = (req.model, req.test_index, req.k, req.selection, req.seed)
        hit = self._index_sets.get(key)
        if hit is None:
            n = scores_row.numel()
            k = min(req.k, n)
            if req.selection == "top":
                idx = top_k(scores_row, k=k)
                note = f"top-{k} by |estimate| of {req.solver} (fixed while the solver changes)"
            else:
                idx = random_k(n, k, req.seed)
                note = f"{k} random training points (seed {req.seed})"
            hit = (torch.as_tensor(idx, dtype=torch.long).reshape(-1).cpu(), note)
            self._index_sets[key] = hit
        return hit

    def units(self, req: Request, scores_row: torch.Tensor
              ) -> tuple[list[tuple[int, ...]], torch.Tensor, str]:
        """The units the dots stand for (the removed points of each), their labels for the
        dots (training indices, or subset numbers) and a note: the evaluated training points, or
        the units a truth that draws its own (random subsets) draws with ``req.seed``."""
        if req.draws_units:
            n = scores_row.numel()
            units = req.truth.draw_units(n, req.k, req.seed)
            note = (f"{len(units)} {req.truth.dots(len(units))} (seed {req.seed}), each removing "
                    f"{len(units[0])} of {n} training points")
            return units, torch.arange(len(units)), note
        idx, note = self.indices(req, scores_row)
        return [(int(i),) for i in idx], idx, note

    # ------------------------------------------------------------------ ground truth
    def _options(self, req: Request, progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> Any:
        from ..ground_truth import SweepOptions

        opts = retrain_options(self.model(req.model), req)
        return SweepOptions(progress=progress, should_stop=should_stop, **opts)

    def actual(
        self,
        req: Request,
        units: list[tuple[int, ...]] | torch.Tensor,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> LOOResult:
        """The ground truth of ``units`` (removed points per dot; a tensor of training indices is
        one point each) on every test point: memory, then the on-disk store, then retraining.
        Records cover the whole test split, so other test points reuse them."""
        if isinstance(units, torch.Tensor):
            units = [(int(i),) for i in units.reshape(-1).tolist()]
        key = (req.model, req.gt_key, tuple(units))
        res = self._loo.get(key)
        if res is None:
            tm = self.model(req.model)
            with one_at_a_time(("loo", key), should_stop, _waiting_note(progress)):
                res = req.truth.measure(tm, tm.train, tm.data.test, units,
                                        config=gt_config(tm, req),
                                        options=self._options(req, progress, should_stop),
                                        estimate=self._estimate_of(req))
            self.retrain_count += int(res.n_retrains_computed)
            self._loo[key] = res
        return res

    def _estimate_of(self, req: Request) -> InfluenceResult | None:
        """The estimate of ``req`` over every test point (what a truth that does not retrain,
        the exact solve, compares with), when it is affordable to compute."""
        truth = req.truth
        if truth.retrains:
            return None
        tm = self.model(req.model)
        exact = replace(req, solver="exact", settings=None)
        return self.engine(exact).scores(tm.data.test, solver="exact", damping=req.damping)

    def noise_key(self, req: Request) -> tuple:
        """What decides the noise floor of ``req``'s truth: its noise schedule for this model."""
        tm = self.model(req.model)
        truth = req.truth
        return (req.model, repr(truth.noise_schedule(tm.config)), truth.noise_new_init,
                req.device)

    def noise_result(self, req: Request, progress: Progress | None = None,
                     should_stop: ShouldStop | None = None) -> NoiseResult | None:
        """The truth's noise floor on every test point (real retraining randomness: the model
        retrained from scratch with nothing removed under :data:`NOISE_SEEDS` new seeds), once
        per model and noise schedule; None for a truth that does not retrain."""
        key = self.noise_key(req)
        if key not in self._noise:
            tm = self.model(req.model)
            with one_at_a_time(("noise", key), should_stop, _waiting_note(progress)):
                res = req.truth.noise_floor(tm, tm.train, tm.data.test, n_seeds=NOISE_SEEDS,
                                            options=self._options(req, progress, should_stop))
            if res is not None:
                self.retrain_count += int(res.n_retrains_computed)
            self._noise[key] = res
        return self._noise[key]

    def noise(
        self, req: Request, progress: Progress | None = None, should_stop: ShouldStop | None = None
    ) -> float | None:
        """The noise floor of the test point (see :meth:`noise_result`); None without one."""
        res = self.noise_result(req, progress, should_stop)
        if res is None:
            return None
        std = float(res.std[req.test_index])
        return std if math.isfinite(std) else None

    # ------------------------------------------------------------------ time, before it is spent
    def eta(self, req: Request, clock: Callable[[], float] = time.perf_counter) -> ComputeETA:
        """How long :meth:`run` of ``req`` (noise floor included) is expected to take, from one
        probe curvature product and gradient chunk (the estimate) and one probe chunk of a few
        retraining steps (reused for later requests of the same retraining): typically well
        under a second. Cached results count nothing; points not chosen yet count as new."""
        t0 = clock()
        tm = self.model(req.model)
        with self.lock, few_threads(tm):
            est = self._estimate_eta(req, clock)
            retrain, noise, known = self._retrain_eta(req, clock)
        return ComputeETA(req, est, retrain, noise, clock() - t0, known)

    def _estimate_eta(self, req: Request, clock: Callable[[], float]) -> EstimateETA | None:
        from ..ground_truth.eta import estimate_eta

        req = self._picked.get(req, (req,))[0]
        key = (req.engine_key, req.solver, req.damping, req.settings, req.test_index)
        if key in self._estimates:
            return None
        obj = self.engine(req).objective
        extra = 0
        if obj.p > EIGEN_MAX_PARAMS:
            if req.solver not in ("exact", "arnoldi") and req.engine_key not in self._power:
                extra = POWER_ITERS
        elif req.solver != "exact" and (req.engine_key, "exact", make_settings("exact")) not in (
            self._fitted
        ):
            extra = obj.p
        fitted = (req.engine_key, req.solver, req.settings) in self._fitted
        return estimate_eta(obj, req.solver, req.settings, fitted=fitted, extra_hvps=extra,
                            clock=clock)

    def _retrain_eta(
        self, req: Request, clock: Callable[[], float]
    ) -> tuple[SweepETA | None, SweepETA | None, bool]:
        from ..ground_truth import random_k
        from ..ground_truth.eta import noise_jobs, sweep_eta, truth_jobs
        from ..ground_truth.noise import noise_problem
        from ..ground_truth.retrain import Job

        tm = self.model(req.model)
        truth = req.truth
        if not truth.retrains:
            return None, None, True
        n = int(tm.X_train.shape[0])
        k = min(req.k, n)
        if req.draws_units:  # drawn now: known, and their keys are those the sweep stores
            known, units = True, truth.draw_units(n, req.k, req.seed)
        else:
            hit = self._index_sets.get((req.model, req.test_index, req.k, req.selection,
                                        req.seed))
            known = hit is not None or req.selection == "random"
            idx = (hit[0].tolist() if hit is not None
                   else random_k(n, k, req.seed) if req.selection == "random"
                   else list(range(k)))
            units = [(int(i),) for i in idx]
        loo_cached = known and (req.model, req.gt_key, tuple(units)) in self._loo
        if loo_cached and self.noise_known(req):
            return None, None, known
        opts = self._options(req)
        retrain = None
        if not loo_cached:
            problem = truth.prepare(tm, tm.train, tm.data.test, config=gt_config(tm, req),
                                    params=None, options=truth.sweep_options(opts))
            jobs = truth_jobs(truth, problem, units)
            if not known:  # not chosen yet: counted as new, whatever the store holds
                jobs = [j if not j.remove else Job(f"?{j.key}", j.remove, j.seed, j.perturb,
                                                   j.reinit) for j in jobs]
            retrain = sweep_eta(problem, jobs, opts, timings=self._timings, clock=clock)
        noise = None
        if not self.noise_known(req):
            schedule = truth.noise_schedule(tm.config).replace(device=req.device)
            problem = noise_problem(tm, tm.train, tm.data.test, config=schedule, mode="scratch",
                                    params="all", options=opts, new_init=truth.noise_new_init)
            noise = sweep_eta(problem, noise_jobs(problem, NOISE_SEEDS,
                                                  new_init=truth.noise_new_init),
                              opts, timings=self._timings, clock=clock)
        return retrain, noise, known

    def choose_points(self, req: Request, progress: Progress | None = None) -> None:
        """Estimate and choose the evaluated points of ``req`` (both kept, as :meth:`run` does
        them), so that :meth:`eta` knows which retrains the store already holds."""
        with self.lock, few_threads(self.model(req.model)):
            req, est, _ = self.estimate_or_pick(req, progress)
            self.indices(req, est.values[0].detach().double().cpu())

    def alternatives(
        self, eta: ComputeETA, limit: float, clock: Callable[[], float] = time.perf_counter
    ) -> list[tuple[str, dict[str, Any], float]]:
        """Cheaper settings that fit within ``limit`` seconds: ``(label, controls to set,
        expected seconds)`` for last-layer retraining (estimate and ground truth), fewer
        evaluated points and fewer warm-start steps, each from the probes already measured
        (last layer: one more probe)."""
        req, out = eta.request, []
        parts = eta.parts
        cheaper = req.truth.cheaper
        if cheaper is not None and req.params == "all":
            cls = truth_class(cheaper)
            alt = replace(req, params=cls.params, gt_mode=cheaper, gt_settings=None)
            seconds = self.eta(alt, clock).seconds
            if seconds <= limit:
                out.append((f"{cls.short or cls.label} (estimate and ground truth)",
                            {"params": cls.params, "gt_mode": cheaper}, seconds))
        retrain, noise = eta.retrain, eta.noise
        if retrain is not None and retrain.n_computed:
            fixed = parts["estimate"] + parts["noise"]
            # k new points and the control: another k picks other points
            fits = [(k, fixed + retrain.seconds_for(n_jobs=k + 1)) for k in range(req.k - 1, 2, -1)]
            fits = [(k, seconds) for k, seconds in fits if seconds <= limit]
            if fits:
                k, seconds = fits[0]
                out.append((f"k = {k} {req.truth.dots(k)}", {"k": k}, seconds))
        if retrain is not None and req.uses_steps:
            for steps in _fewer(req.gt_steps):
                seconds = parts["estimate"] + retrain.seconds_for(steps=steps) + (
                    0.0 if noise is None else noise.seconds_for(steps=steps))
                if seconds <= limit:
                    out.append((f"{steps} steps", {"gt_steps": steps}, seconds))
                    break
        return out

    # ------------------------------------------------------------------ all together
    def noise_source(self, req: Request) -> str | None:
        """What the noise floor of ``req`` randomised, over how many seeds (None if unknown)."""
        res = self._noise.get(self.noise_key(req))
        return None if res is None else res.describe()

    def noise_kind(self, req: Request) -> str | None:
        """"retraining" (real retraining randomness: new initialisations, batch orders) or
        "perturbation" (only a nudged start of a deterministic retrain); None if unknown."""
        res = self._noise.get(self.noise_key(req))
        return None if res is None else getattr(res, "kind", None)

    def noise_known(self, req: Request) -> bool:
        """Whether the noise floor of ``req``'s model and ground truth is already in memory."""
        return self.noise_key(req) in self._noise

    def run(
        self,
        req: Request,
        progress: Callable[[str], Progress] | None = None,
        should_stop: ShouldStop | None = None,
        with_noise: bool = True,
    ) -> Outcome:
        """Estimate, pick the evaluated set, retrain (only what is missing), compare; then the
        noise floor (``with_noise=False`` leaves it to :meth:`add_noise`, unless it is known)."""
        from ..evaluate import compare

        stage = progress or (lambda name: None)
        with self.lock, few_threads(self.model(req.model)):
            t0 = time.perf_counter()
            before = self.retrain_count
            req, est, notes = self.estimate_or_pick(req, stage("estimating"))
            row = est.values[0].detach().double().cpu()
            units, idx, note = self.units(req, row)
            t1 = time.perf_counter()
            loo = self.actual(req, units, stage("retraining"), should_stop)
            actual = torch.as_tensor(loo.values)[req.test_index].detach().double().cpu()
            se = None if loo.se is None else loo.se[req.test_index].detach().double().cpu()
            t2 = time.perf_counter()
            from ..ground_truth import group_estimate

            estimated = group_estimate(row, [list(u) for u in units]).double()
            vs_exact = self.against_exact(req, est)
            forecast = self.forecast(req)
            out = Outcome(
                request=req,
                estimate=est,
                indices=idx,
                estimated=estimated,
                actual=actual,
                loo=loo,
                noise_std=None,
                stats=compare(estimated, actual, drop_nan=True),
                index_note=note,
                eigen=self.eigen(req, est),
                retrains=self.retrain_count - before,
                seconds={
                    "estimate": t1 - t0,
                    "retrain": t2 - t1,
                    "noise": 0.0,
                    "total": time.perf_counter() - t0,
                },
                notes=notes,
                vs_exact=vs_exact,
                actual_se=se,
                forecast=forecast,
            )
            out = replace(out, report=self.trust(out))
        if with_noise or self.noise_known(req):
            out = self.add_noise(out, progress, should_stop)
        return out

    def add_noise(
        self,
        out: Outcome,
        progress: Callable[[str], Progress] | None = None,
        should_stop: ShouldStop | None = None,
    ) -> Outcome:
        """``out`` with the retraining noise floor and the comparison redone against it."""
        from ..evaluate import compare

        stage = progress or (lambda name: None)
        req = out.request
        with self.lock, few_threads(self.model(req.model)):
            t0 = time.perf_counter()
            before = self.retrain_count
            noise = self.noise(req, stage("noise floor"), should_stop)
            stats = compare(
                out.estimated,
                out.actual,
                drop_nan=True,
                **({"noise": noise} if noise is not None else {}),
            )
            dt = time.perf_counter() - t0
        seconds = {**out.seconds, "noise": dt, "total": out.seconds["total"] + dt}
        out = replace(
            out,
            noise_std=noise,
            stats=stats,
            seconds=seconds,
            retrains=out.retrains + self.retrain_count - before,
        )
        return replace(out, report=self.trust(out))

    def trust(self, out: Outcome) -> TrustReport:
        """The findings of ``out``: training, estimate, retrains, noise floor (when known),
        the comparison, and what the compute picked."""
        from ..evaluate import trust_report

        req = out.request
        noise = self._noise.get(self.noise_key(req)) if out.noise_std is not None else None
        return trust_report(
            model=self.model(req.model),
            estimate=out.estimate,
            loo=out.loo,
            noise=noise,
            comparison=out.stats,
            estimated=out.estimated,
            actual=out.actual,
            indices=out.indices,
            test_index=req.test_index,
            extra=out.notes,
            forecast=out.forecast,
        )

    def forecast(self, req: Request) -> Any:
        """The trust forecast of ``req`` (:func:`influence_widgets.trust.predict`): the expected
        Spearman against its ground truth and an 80% interval, from one estimate and cheap
        diagnostics, no retraining (cached; it reuses the session's engine). None when the
        forecaster cannot read this model (the compute goes on without it)."""
        import dataclasses

        key = (req.engine_key, req.solver, req.settings, req.damping, req.gt_mode,
               req.gt_settings, req.k, req.test_index)
        if key not in self._forecasts:
            from ..forecast import forecast_point

            tm = self.model(req.model)
            try:
                fc = forecast_point(
                    tm, tm.train, tm.data.test, req.test_index, solver=req.solver,
                    truth=req.gt_mode, k=req.k, engine=self.engine(req), damping=req.damping,
                    solver_options=req.settings.options(),
                    truth_settings=dataclasses.asdict(req.gt_settings))
            except Exception as e:  # a forecast is an extra: never a reason to fail a compute
                warnings.warn(f"no trust forecast for this setting ({type(e).__name__}: {e})",
                              RuntimeWarning, stacklevel=2)
                fc = None
            self._forecasts[key] = fc
        return self._forecasts[key]

    # ------------------------------------------------------------------ indefinite Hessians
    #: Lanczos steps for the most negative eigenvalue behind a picked damping, and how many
    #: dampings (each 4x the last) are tried before the solver's error is shown.
    PICK_LANCZOS_STEPS = 30
    PICK_TRIES = 3

    def estimate_or_pick(
        self, req: Request, progress: Progress | None = None
    ) -> tuple[Request, InfluenceResult, tuple[Finding, ...]]:
        """The estimate for ``req``; or, when the solver (CG) meets negative curvature with no
        damping (the default: e.g. a CNN whose Hessian is indefinite at its trained
        parameters), the estimate with a damping just above the most negative eigenvalue that a
        short Lanczos run finds. Returns the request actually computed and a finding saying what
        was picked and why."""
        from ..influence import NegativeCurvatureError
        from ..influence.solvers import lanczos, solver_class

        hit = self._picked.get(req)
        if hit is not None:  # picked before: the same damping, its estimate cached
            return hit[0], self.estimate(hit[0], progress), (hit[1],)
        try:
            return req, self.estimate(req, progress), ()
        except NegativeCurvatureError as e:
            if req.damping != 0.0:
                raise
            first = e
        obj = self.engine(req).objective
        curv = "Hessian" if req.curvature == "hessian" else "Gauss-Newton matrix (in rounding)"
        steps = min(obj.p, self.PICK_LANCZOS_STEPS)
        evals, _ = lanczos(obj, k=1, n_iter=steps)
        lo, top = float(evals.min()), float(evals.max())
        damping = suggest_damping(lo) if lo < 0 else suggest_damping(1e-3 * max(abs(top), 1e-12))
        for _ in range(self.PICK_TRIES):
            picked = replace(req, damping=damping)
            try:
                est = self.estimate(picked, progress)
            except NegativeCurvatureError:
                damping = suggest_damping(4 * damping)
                continue
            note = Finding(
                "warning",
                "estimate",
                "damping-picked",
                f"{solver_class(req.solver).label or req.solver} met negative curvature with "
                f"damping 0: the {curv} is indefinite "
                f"here (a {steps}-step Lanczos run found an eigenvalue of {lo:.3g}), so damping "
                f"{damping:g} was picked, and the damping control set to it",
                "with no damping the solver cannot work with an indefinite H; a damping just "
                "above the most negative eigenvalue makes H + damping I positive definite, at "
                "the cost of shrinking the estimate along low-curvature directions",
                "keep it, raise it, or use the Gauss-Newton curvature (positive semi-definite)",
                action={"curvature": "ggn"} if req.curvature != "ggn" else None,
            )
            self._picked[req] = (picked, note)
            return picked, est, (note,)
        raise first
