"""The one evaluation every study shares.

:func:`evaluate_case` takes one model setting and does: train -> pick test points -> estimate
(one or more solvers and parameter subsets) -> choose the training points (or groups) to check ->
retrain without them (one or more ground truths) -> compare -> one row per
test point x estimate x ground truth. The studies in :mod:`.studies` are grids of such cases.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import datasets
from ..datasets.base import Data, subset
from ..ground_truth import GroundTruth, SweepOptions, make_truth
from ..influence import InfluenceEngine, SolverError
from ..models import ModelSpec, TrainConfig, TrainedModel, train
from ..models.architectures import mlp_spec

Progress = Callable[[int, int, dict[str, Any]], None]

#: Columns every study table has, in this order (studies may add label columns after them).
#: One row per model x test point x (solver, params) x ground truth. ``params``/``loo_params``:
#: the parameters estimated / retrained; ``truth``: the registered ground truth
#: (``iw.ground_truth.TRUTHS``), ``loo_mode`` its retraining mode ("none" without retraining),
#: ``compared_with``: "loo" (retraining) or "exact" (the exact estimate, no retraining);
#: ``curvature``/``damping``: those of the estimate compared (a truth that targets another
#: estimate, as the PBRF targets the damped Gauss-Newton one, is compared with that one);
#: ``n_eval``: training points, groups or subsets compared; ``*_lo``/``*_hi``: bootstrap 95%
#: intervals; ``noise_std``: the truth's own noise floor (real retraining randomness: the model
#: retrained from scratch under new seeds), ``noise_source``: what its seeds randomised;
#: ``frac_within_noise``: the share of |actual| below ``noise_std`` (the band drawn around
#: y = 0 in the study figures); ``effect_to_noise``: median |actual| over it;
#: ``spread_to_noise``: the standard deviation of the actual effects over it; ``actual_se``: the
#: median standard error of the actual effects of a seed-averaged truth (NaN with one seed);
#: ``group_size``: points removed per unit (one row per group size in the group study);
#: ``rel_error``: ||estimate - exact|| / ||exact|| over all training points (NaN when the exact
#: solve was not computed); ``seconds``: the whole evaluation of the model. ``health``: the
#: model's health status ("healthy", "collapsed", "degenerate", "not stationary", "indefinite";
#: :mod:`influence_widgets.models.health`), ``stationary``/``collapsed`` its two flags the claims
#: filter on, ``minimum``: an identifier of the minimum the model reached (its objective and test
#: losses to 5 significant digits: seeds that land in the same minimum share it), ``seed_set``:
#: "preset" or "check" (the disjoint seed sets every claim is judged on).
COLUMNS = (
    "study", "dataset", "arch", "depth", "width", "activation", "weight_decay", "seed",
    "test_index", "test_point", "test_loss", "solver", "damping", "params", "curvature", "truth",
    "loo_mode", "loo_params", "compared_with", "select", "k", "group_size", "n_eval",
    "pearson", "pearson_lo", "pearson_hi", "spearman", "spearman_lo", "spearman_hi",
    "topk_overlap", "sign_agreement", "frac_within_noise", "noise_std", "noise_source",
    "effect_to_noise", "spread_to_noise", "actual_se", "rel_error", "top_eigenvalue",
    "min_eigenvalue", "train_acc", "test_acc", "objective", "grad_norm", "converged", "health",
    "stationary", "collapsed", "minimum", "seed_set", "n_train", "n_params", "train_seconds",
    "est_seconds", "loo_seconds", "seconds", "error",
)
#: Wall-clock columns: the only ones that differ between two runs with the same seeds.
TIMING_COLUMNS = ("train_seconds", "est_seconds", "loo_seconds", "seconds")

DATASETS = ("iris", "digits", "digits_images", "blobs", "mnist", "fashion_mnist", "cifar10",
            "image_folder")


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ModelCase:
    """How one model is built and trained.

    ``train`` gives the optimiser; its ``weight_decay``, ``seed`` and ``device`` come from this
    case. ``options`` go to the :class:`ModelSpec` (MLPs take ``depth``/``width``/``activation``
    from the fields), ``data_options`` to the dataset loader (plus ``train_size``/``test_size``,
    seeded subsets, for any dataset).
    """

    dataset: str = "iris"
    arch: str = "mlp"
    depth: int | None = 1
    width: int | None = 5
    activation: str | None = "tanh"
    weight_decay: float = 0.0
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig.preset("exact"))
    device: str | None = None

    def config(self) -> TrainConfig:
        return self.train.replace(weight_decay=self.weight_decay, seed=self.seed,
                                  device=self.device)


@dataclass(frozen=True)
class Truth:
    """One ground truth of a study: the registered one named ``mode`` (``"warm_start"``,
    ``"scratch"``, ``"minibatch"``, ``"last_layer"``, ``"pbrf"``, ``"lds"``, ``"exact"``, or one a
    user registered; see ``iw.ground_truth.TRUTHS``) with its ``settings``.

    ``params``: the retrained parameters (None: the truth's own, "all" for most).
    ``retrain``: changes to the model's own :class:`TrainConfig` for the retraining (optimiser,
    steps, ...); empty: the truth's own default schedule. ``k``: for a truth that draws its own
    units (LDS subsets), how many (None: the :class:`EvalCase`'s ``k``).
    """

    mode: str = "warm_start"
    params: str | None = None
    retrain: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    k: int | None = None

    def __post_init__(self) -> None:
        self.truth()  # an unknown truth or setting is an error now, not mid-study

    def truth(self) -> GroundTruth:
        return make_truth(self.mode, **self.settings)

    def config(self, tm: TrainedModel) -> TrainConfig:
        """The retraining schedule: the model's own with ``retrain`` applied, or the truth's
        default schedule when ``retrain`` is empty."""
        if self.retrain:
            return tm.config.replace(**self.retrain)
        return self.truth().schedule(tm.config)

    def retrained(self) -> str:
        return self.params if self.params is not None else self.truth().params


@dataclass(frozen=True)
class EvalCase:
    """What is estimated, on which test and training points, and against which ground truths.

    ``select`` picks the training points to check per test point: ``"top_abs"`` (the ``k`` largest
    ``|estimate|`` of the first solver), ``"train_loss"`` (the ``k`` highest training losses),
    ``"random"`` (``k`` seeded random points) or ``"all"``. With ``group_sizes`` the units are
    groups instead: for each size the most helpful, the most harmful and ``group_repeats``
    random groups, one row per group size. A truth that draws its own units (LDS) compares those.
    ``test_points``: rules ("highest", "median", "random") or indices, ``n_test`` points per rule.
    ``noise_seeds > 0`` also measures each truth's noise floor (its ``noise_floor``: real
    retraining randomness, the model retrained from scratch with nothing removed under that many
    new seeds; truths with the same noise share one). ``exact_max_params``: also compute the
    exact solve, for ``rel_error``, when the model has at most this many parameters.
    """

    solvers: tuple[str, ...] = ("exact",)
    solver_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    damping: float = 0.0
    #: several estimation dampings (rows for each; a truth that fixes its target's damping, as
    #: the PBRF does, keeps its own); empty: ``damping`` alone
    dampings: tuple[float, ...] = ()
    params: tuple[str, ...] = ("all",)
    test_points: tuple[str | int, ...] = ("highest",)
    n_test: int = 1
    select: str = "top_abs"
    k: int | None = 40
    truths: tuple[Truth, ...] = (Truth(),)
    noise_seeds: int = 0
    exact_max_params: int = 0
    group_sizes: tuple[int, ...] = ()
    group_repeats: int = 2
    compare_k: int = 10
    keep_pairs: bool = True
    #: The Hessian-vector-product route (``Objective``'s ``hvp_mode``). "auto" is a fixed rule of
    #: device and sizes, so the same seeds give the same numbers in every process.
    hvp_mode: str = "auto"

    def __post_init__(self) -> None:
        selects = ("top_abs", "train_loss", "random", "all")
        if self.select not in selects:
            raise ValueError(f"unknown select {self.select!r}; valid: {', '.join(selects)}")
        if not self.solvers or not self.params or not self.truths:
            raise ValueError("an EvalCase needs at least one solver, one params and one truth")
        if not all(isinstance(t, Truth) for t in self.truths):
            raise TypeError("EvalCase.truths takes Truth(...) entries, e.g. Truth('warm_start')")
        if isinstance(self.n_test, bool) or not isinstance(self.n_test, int) or self.n_test < 1:
            raise ValueError(f"n_test must be a positive integer, got {self.n_test!r}")


@dataclass(frozen=True)
class Case:
    """One model, how to evaluate it, and label columns added to each of its rows."""

    model: ModelCase
    eval: EvalCase
    labels: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- data and models


def load_data(dataset: str, **options: Any) -> Data:
    """A dataset by name; ``train_size``/``test_size`` take seeded subsets of any of them."""
    return _load_data_cached(dataset, tuple(sorted(options.items())))


@lru_cache(maxsize=8)
def _load_data_cached(dataset: str, options: tuple[tuple[str, Any], ...]) -> Data:
    opts = dict(options)
    train_size, test_size = opts.pop("train_size", None), opts.pop("test_size", None)
    if dataset == "digits_images":
        data = datasets.digits(flat=False, **opts)
    elif dataset in ("mnist", "fashion_mnist", "cifar10"):
        data = datasets.load(dataset, train_size=train_size, test_size=test_size, **opts)
        train_size = test_size = None
    elif dataset in DATASETS:
        data = datasets.load(dataset, **opts)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; valid names: {', '.join(DATASETS)}")
    seed = int(opts.get("seed", 0))
    X_tr, y_tr = subset(data.X_train, data.y_train, train_size, seed)
    X_te, y_te = subset(data.X_test, data.y_test, test_size, seed + 1)
    return Data(data.name, X_tr, y_tr, X_te, y_te, data.class_names, data.input_shape,
                data.is_image, dict(data.info, train_size=train_size, test_size=test_size))


def model_spec(case: ModelCase, data: Data) -> ModelSpec:
    """The architecture of ``case`` for ``data``."""
    if case.arch == "mlp":
        return mlp_spec(data.input_shape, data.n_classes, case.depth or 0, case.width or 5,
                        case.activation or "tanh")
    return ModelSpec(case.arch, data.input_shape, data.n_classes, dict(case.options))


def train_case(case: ModelCase, data: Data | None = None) -> TrainedModel:
    """Train the model of ``case`` on its dataset (same case -> same parameters)."""
    data = data if data is not None else load_data(case.dataset, **case.data_options)
    spec = model_spec(case, data)
    return train(spec, data.train, case.config(), data=data)


def _accuracy_and_losses(tm: TrainedModel, X: torch.Tensor, y: torch.Tensor):
    p = next(tm.model.parameters())
    with torch.no_grad():
        out = tm.model(X.to(p.device, p.dtype))
        losses = torch.nn.functional.cross_entropy(out, y.to(p.device), reduction="none")
    acc = float((out.argmax(1).cpu() == y.cpu()).double().mean())
    return acc, losses.double().cpu()


# ----------------------------------------------------------------------------- the evaluation


def _pick_test_points(specs: Sequence[str | int], losses: torch.Tensor, seed: int,
                      n_test: int = 1) -> list[tuple[str, int]]:
    """``(label, test index)`` of every test point: ``n_test`` per rule, one per given index."""
    from ..ground_truth import pick_test_points

    out: list[tuple[str, int]] = []
    for how in specs:
        if isinstance(how, str):
            k = min(n_test, len(losses))
            out += [(how, i) for i in pick_test_points(losses, how=how, k=k, seed=seed)]
        else:
            out.append(("given", pick_test_points(losses, how=how, seed=seed)[0]))
    return list(dict.fromkeys(out))


def _units(ev: EvalCase, est_row: torch.Tensor, train_losses: torch.Tensor,
           seed: int) -> list[tuple[int, ...]]:
    """The training points (singletons) or groups checked for one test point."""
    from ..ground_truth import random_k, top_k

    n = est_row.numel()
    if ev.group_sizes:
        order = torch.argsort(est_row, descending=True).tolist()
        units = []
        for g in ev.group_sizes:
            units += [tuple(sorted(order[:g])), tuple(sorted(order[-g:]))]
            for r in range(ev.group_repeats):
                drawn = random_k(n, g, seed=seed + 1000 * r + g)
                units.append(tuple(sorted(int(i) for i in drawn)))
        return list(dict.fromkeys(units))
    k = n if ev.k is None else min(ev.k, n)
    if ev.select == "all":
        idx = list(range(n))
    elif ev.select == "top_abs":
        idx = top_k(est_row, k=k)
    elif ev.select == "train_loss":
        idx = torch.argsort(train_losses, descending=True)[:k]
    else:
        idx = random_k(n, k, seed=seed)
    return [(int(i),) for i in torch.as_tensor(idx).reshape(-1).tolist()]


#: The key of an estimate's target: ``()`` for the study's own estimate (its damping, the
#: Hessian), else the sorted settings a ground truth fixes (``(("curvature", "ggn"), ...)``).
TargetKey = tuple


def _target_key(truth: GroundTruth) -> TargetKey:
    return tuple(sorted(truth.estimate_settings().items()))


def _row_targets(ev: EvalCase, truth: GroundTruth) -> list[TargetKey]:
    """The estimates ``truth`` is compared with: its target, at each of ``ev.dampings`` unless
    the target fixes its own damping."""
    base = truth.estimate_settings()
    if not ev.dampings or "damping" in base:
        return [tuple(sorted(base.items()))]
    return [tuple(sorted({**base, "damping": float(d)}.items())) for d in ev.dampings]


def _estimates(tm: TrainedModel, data: Data, ev: EvalCase, tidx: list[int],
               needs_exact: set[str], targets: Sequence[TargetKey] = ((),)
               ) -> dict[Any, dict[str, Any]]:
    """``(solver, params, target) -> {values (n_t, n_train), result, seconds, diag, curvature,
    damping, error}`` for the study's solvers on every target (see :data:`TargetKey`), plus the
    exact solve of ``needs_exact`` parameters on each; ``"spectrum"``: the extremes of the first
    curvature."""
    out: dict[Any, dict[str, Any]] = {}
    engines: dict[tuple[str, str], InfluenceEngine] = {}
    wanted = _wanted(ev)
    wanted += [("exact", p) for p in sorted(needs_exact) if ("exact", p) not in wanted]
    for target in dict.fromkeys(((), *targets)):
        fixed = dict(target)
        curvature, damping = fixed.get("curvature", "hessian"), fixed.get("damping", ev.damping)
        for solver, params in wanted:
            t0 = time.perf_counter()
            entry: dict[str, Any] = {"curvature": curvature, "damping": damping}
            try:
                key = (params, curvature)
                if key not in engines:
                    engines[key] = InfluenceEngine(tm, data.train, params=params,
                                                   curvature=curvature, hvp_mode=ev.hvp_mode)
                res = engines[key].scores(data.test, solver=solver, damping=damping,
                                          test_indices=tidx, **ev.solver_options.get(solver, {}))
                entry.update(values=res.values.double().cpu(), result=res, diag=res.diagnostics,
                             error="")
            except (SolverError, MemoryError, FloatingPointError) as e:
                entry.update(values=None, result=None, diag={}, error=f"{type(e).__name__}: {e}")
            entry["seconds"] = time.perf_counter() - t0
            out[solver, params, target] = entry
    first = engines.get((ev.params[0], "hessian"))
    out["spectrum"] = _spectrum(out, ev.params[0], first)
    return out


def _spectrum(est: dict, params: str, engine: InfluenceEngine | None) -> dict[str, float]:
    for solver in ("exact", "arnoldi"):
        diag = est.get((solver, params, ()), {}).get("diag", {})
        if "top_eigenvalue" in diag:
            return {"top": diag["top_eigenvalue"], "min": diag.get("min_eigenvalue", math.nan)}
    if engine is None:
        return {"top": math.nan, "min": math.nan}
    return _lanczos_extremes(engine.objective)


def _lanczos_extremes(objective: Any, m: int = 40) -> dict[str, float]:
    """The largest and smallest Ritz values of ``m`` Lanczos steps on the curvature: the top
    eigenvalue (close) and an upper bound on the smallest (a negative one proves the Hessian
    indefinite)."""
    from ..influence.solvers import _lanczos

    evals, _, _ = _lanczos(objective.hvp, objective.p, objective.dtype, objective.device,
                           min(objective.p, m))
    return {"top": float(evals.max()), "min": float(evals.min())}


def _measure(tm: TrainedModel, data: Data, truth: Truth, tidx: list[int],
             units: list[tuple[int, ...]], est: dict, progress: Progress | None) -> Any:
    """The ground truth's :class:`~influence_widgets.ground_truth.LOOResult` of every unit on the
    test points ``tidx`` (retrains in the dtype of the schedule)."""
    test = (data.X_test[tidx], data.y_test[tidx])
    gt = truth.truth()
    config = truth.config(tm)
    exact = est.get(("exact", truth.retrained(), _target_key(gt)), {}).get("result")
    options = SweepOptions(dtype=config.dtype, progress=progress)
    return gt.measure(tm, data.train, test, units, config=config, params=truth.params,
                      options=options, estimate=exact)


@dataclass(frozen=True)
class Floor:
    """The noise floor of one ground truth: ``std`` ``(n_t,)`` (the spread of the test losses of
    retrains with nothing removed, in the units of the actual effects) and ``how``, what its
    seeds randomised."""

    std: torch.Tensor
    how: str


def _noise(tm: TrainedModel, data: Data, ev: EvalCase, tidx: list[int]) -> list[Floor | None]:
    """The noise floor of each truth of ``ev`` (:meth:`GroundTruth.noise_floor`: real retraining
    randomness), ``None`` without noise seeds or for a truth that does not retrain; truths with
    the same noise schedule share one floor."""
    if ev.noise_seeds <= 0:
        return [None] * len(ev.truths)
    test = (data.X_test[tidx], data.y_test[tidx])
    floors: dict[tuple, Floor | None] = {}
    out: list[Floor | None] = []
    for truth in ev.truths:
        gt = truth.truth()
        schedule = gt.noise_schedule(tm.config)
        key = (repr(schedule), gt.noise_new_init)
        if key not in floors:
            res = gt.noise_floor(tm, data.train, test, n_seeds=ev.noise_seeds,
                                 options=SweepOptions(dtype=tm.config.dtype))
            floors[key] = None if res is None else Floor(res.std.double().cpu(),
                                                         f"{res.mode}: {res.describe()}")
        out.append(floors[key])
    return out


def _metrics(estimated: np.ndarray, actual: np.ndarray, noise: float | None,
             k: int) -> dict[str, Any]:
    from ..evaluate import compare

    m = compare(estimated, actual, noise=noise, k=k, drop_nan=True)
    noise_std = math.nan if noise is None else float(noise)
    med = float(np.median(np.abs(actual)))
    pl, ph = m["pearson_ci"]
    sl, sh = m["spearman_ci"]
    spread = float(np.nanstd(actual, ddof=1)) if actual.size > 1 else math.nan
    return {
        "pearson": m["pearson"], "pearson_lo": pl, "pearson_hi": ph,
        "spearman": m["spearman"], "spearman_lo": sl, "spearman_hi": sh,
        "topk_overlap": m["topk_overlap"], "sign_agreement": m["sign_agreement"],
        "frac_within_noise": m.get("frac_within_noise", math.nan), "noise_std": noise_std,
        "effect_to_noise": med / noise_std if noise_std > 0 else math.nan,
        "spread_to_noise": spread / noise_std if noise_std > 0 else math.nan, "n_eval": m["n"],
    }


def _rel_error(values: torch.Tensor | None, exact: torch.Tensor | None, row: int) -> float:
    if values is None or exact is None:
        return math.nan
    ref = exact[row]
    return float((values[row] - ref).norm() / ref.norm().clamp_min(1e-300))


@dataclass
class _Measured:
    """One ground truth's values on a run: the truth, its units (columns of ``values``), its
    result (``values``/``se`` ``(n_t, n_units)``) and its noise floor."""

    truth: Truth
    gt: GroundTruth
    units: list[tuple[int, ...]]
    result: Any
    floor: Floor | None


@dataclass
class _Run:
    """Everything computed for one case, before it is turned into rows."""

    tm: TrainedModel
    data: Data
    picked: list[tuple[str, int]]  # (label, test index)
    tidx: list[int]  # distinct test indices, sorted: the rows of every estimate
    est: dict
    units: dict[int, list[tuple[int, ...]]]  # test index -> points or groups checked
    measured: list[_Measured]  # per truth of the EvalCase
    info: dict[str, Any]


def _run(case: Case, progress: Progress | None) -> _Run:
    """Train, pick test points, estimate, choose the units, measure every ground truth and its
    noise floor."""
    t0 = time.perf_counter()
    mc, ev = case.model, case.eval
    data = load_data(mc.dataset, **mc.data_options)
    tm = train_case(mc, data)
    info: dict[str, Any] = {"train_seconds": time.perf_counter() - t0}
    info["train_acc"], train_losses = _accuracy_and_losses(tm, data.X_train, data.y_train)
    info["test_acc"], info["test_losses"] = _accuracy_and_losses(tm, data.X_test, data.y_test)
    picked = _pick_test_points(ev.test_points, info["test_losses"], mc.seed, ev.n_test)
    tidx = sorted({i for _, i in picked})
    truths = [t.truth() for t in ev.truths]
    needs_exact = {t.retrained() for t, g in zip(ev.truths, truths) if not g.retrains}
    if sum(p.numel() for p in tm.model.parameters()) <= ev.exact_max_params:
        needs_exact |= set(ev.params)  # the reference of rel_error
    est = _estimates(tm, data, ev, tidx, needs_exact,
                     [t for g in truths for t in _row_targets(ev, g)])
    first = next((est[key + ((),)]["values"] for key in _wanted(ev)
                  if est[key + ((),)]["values"] is not None),
                 torch.zeros(len(tidx), data.X_train.shape[0], dtype=torch.float64))
    units = {t: _units(ev, first[r], train_losses, mc.seed) for r, t in enumerate(tidx)}
    shared = list(dict.fromkeys(u for t in tidx for u in units[t]))
    n = int(data.X_train.shape[0])
    t1 = time.perf_counter()
    measured = []
    for truth, gt in zip(ev.truths, truths):
        own = gt.draw_units(n, truth.k or ev.k or n, mc.seed) if gt.draws_units else shared
        measured.append(_Measured(truth, gt, own, _measure(tm, data, truth, tidx, own, est,
                                                           progress), None))
    for m, floor in zip(measured, _noise(tm, data, ev, tidx)):
        m.floor = floor
    info["loo_seconds"] = time.perf_counter() - t1
    return _Run(tm, data, picked, tidx, est, units, measured, info)


def minimum_id(objective: float, test_losses: torch.Tensor, digits: int = 5) -> str:
    """An identifier of the minimum a model reached: its objective and test losses rounded to
    ``digits`` significant digits (seeds that converge to the same minimum agree far beyond
    that; different minima differ in their losses long before)."""
    from .._cache import hash_settings

    losses = [float(f"{float(v):.{digits}g}") for v in torch.as_tensor(test_losses).reshape(-1)]
    return hash_settings([float(f"{objective:.{digits}g}"), losses], length=12)


def _base_row(case: Case, run: _Run, study: str) -> dict[str, Any]:
    """The columns shared by every row of one case."""
    mc, ev, tm = case.model, case.eval, run.tm
    health = tm.health
    return {
        "study": study, "dataset": mc.dataset, "arch": mc.arch, "depth": mc.depth,
        "width": mc.width, "activation": mc.activation, "weight_decay": mc.weight_decay,
        "seed": mc.seed, "damping": ev.damping,
        "select": "groups" if ev.group_sizes else ev.select, "k": ev.k,
        "top_eigenvalue": run.est["spectrum"]["top"], "min_eigenvalue": run.est["spectrum"]["min"],
        "train_acc": run.info["train_acc"], "test_acc": run.info["test_acc"],
        "objective": tm.diagnostics["objective"], "grad_norm": tm.grad_norm,
        "converged": tm.converged, "health": health.status, "stationary": health.stationary,
        "collapsed": health.collapsed,
        "minimum": minimum_id(tm.diagnostics["objective"], run.info["test_losses"]),
        "seed_set": "preset", "n_train": int(run.data.X_train.shape[0]),
        "n_params": sum(p.numel() for p in tm.model.parameters()),
        "train_seconds": run.info["train_seconds"], "loo_seconds": run.info["loo_seconds"],
        **case.labels,
    }


def _compare_row(ev: EvalCase, run: _Run, r: int, m: _Measured, cols: list[int], solver: str,
                 params: str, units: list[tuple[int, ...]], target: TargetKey
                 ) -> tuple[dict[str, Any], dict | None]:
    """One estimate (of ``target``) against one ground truth on one test point: the metrics and
    the arrays."""
    e = run.est[solver, params, target]
    exact = run.est.get(("exact", params, target), {}).get("values")
    row = {"solver": solver, "params": params, "curvature": e["curvature"],
           "damping": e["damping"], "truth": m.gt.name, "loo_mode": m.gt.mode or "none",
           "loo_params": m.truth.retrained(),
           "compared_with": "loo" if m.gt.retrains else "exact",
           "est_seconds": e["seconds"], "error": e["error"],
           "rel_error": math.nan if solver == "exact" else _rel_error(e["values"], exact, r),
           "noise_source": "" if m.floor is None else m.floor.how}
    if m.gt.draws_units:
        row.update(select="subsets", k=len(m.units))
    se = m.result.se
    row["actual_se"] = (float(se[r, cols].double().nanmedian()) if se is not None and cols
                        else math.nan)
    if e["values"] is None:
        return {**row, **_metrics_nan(len(cols))}, None
    estimated = _unit_sums(e["values"], units)[r].numpy()
    actual = m.result.values.double().cpu()[r, cols].numpy()
    noise = None if m.floor is None else float(m.floor.std[r])
    finite = int((np.isfinite(estimated) & np.isfinite(actual)).sum())
    if finite < 3:
        # e.g. every retrain diverged: the row says so, and the study goes on
        why = (f"{finite} of {len(cols)} (estimate, {m.gt.name}) pairs are finite; "
               "at least 3 are needed to compare")
        return {**row, **_metrics_nan(finite),
                "error": "; ".join(x for x in (row["error"], why) if x)}, None
    row.update(_metrics(estimated, actual, noise, ev.compare_k))
    pair = {"estimated": estimated, "actual": actual, "noise": row["noise_std"],
            "se": None if se is None else se[r, cols].double().numpy()}
    return row, pair if ev.keep_pairs else None


def evaluate_case(case: Case, *, study: str = "custom", progress: Progress | None = None
                  ) -> tuple[list[dict[str, Any]], list[dict | None]]:
    """Train, estimate, retrain and compare for one case: its rows and, per row, the
    (estimated, actual) arrays behind it (``None`` where an estimate failed)."""
    t0 = time.perf_counter()
    ev = case.eval
    run = _run(case, progress)
    base = _base_row(case, run, study)
    rows, pairs = [], []
    for label, t in run.picked:
        r = run.tidx.index(t)
        point = dict(base, test_index=t, test_point=label,
                     test_loss=float(run.info["test_losses"][t]))
        for m in run.measured:
            col = {u: j for j, u in enumerate(m.units)}
            mine = m.units if m.gt.draws_units else run.units[t]
            # one row per group size (singletons: one row); drawn subsets: one row
            sizes = [None] if m.gt.draws_units else sorted({len(u) for u in mine})
            for size in sizes:
                units = [u for u in mine if size is None or len(u) == size]
                group = float(np.mean([len(u) for u in units])) if size is None else float(size)
                for target in _row_targets(ev, m.gt):
                    for solver, params in _wanted(ev):
                        row, pair = _compare_row(ev, run, r, m, [col[u] for u in units], solver,
                                                 params, units, target)
                        rows.append({**point, "group_size": group, **row})
                        pairs.append(pair)
    total = time.perf_counter() - t0
    for row in rows:
        row["seconds"] = total
    return rows, pairs


def _wanted(ev: EvalCase) -> list[tuple[str, str]]:
    return [(s, p) for p in ev.params for s in ev.solvers]


def _unit_sums(values: torch.Tensor, units: list[tuple[int, ...]]) -> torch.Tensor:
    """Estimated effect of each unit: the sum of its points' estimates, ``(n_t, len(units))``."""
    from ..ground_truth import group_estimate

    return group_estimate(values, [list(u) for u in units]).double()


def _metrics_nan(n: int) -> dict[str, Any]:
    keys = ("pearson", "pearson_lo", "pearson_hi", "spearman", "spearman_lo", "spearman_hi",
            "topk_overlap", "sign_agreement", "frac_within_noise", "noise_std", "effect_to_noise",
            "spread_to_noise")
    return dict(dict.fromkeys(keys, math.nan), n_eval=n)


# ----------------------------------------------------------------------------- grids


def run_cases(cases: Iterable[Case], *, study: str = "custom",
              progress: Progress | bool | None = None) -> pd.DataFrame:
    """Evaluate every case; one tidy table. ``progress``: a callback ``(done, total, info)`` or
    ``True`` for a tqdm bar; after each case it is called with ``info["rows"]``, that case's rows
    as a table, so a caller can save partial results as the study goes. The (estimated, actual)
    arrays behind each row are in ``table.attrs["pairs"]`` (row index -> dict), for scatter
    plots."""
    cases = list(cases)
    callback, close = progress_callback(progress, len(cases), study)
    rows: list[dict[str, Any]] = []
    pairs: dict[int, dict] = {}
    try:
        for i, case in enumerate(cases):
            if callback is not None:
                callback(i, len(cases), {"study": study, **_describe(case)})
            with warnings.catch_warnings():
                # recorded in the table (min_eigenvalue), not repeated for every model
                warnings.filterwarnings("ignore", "H is indefinite", RuntimeWarning)
                new_rows, new_pairs = evaluate_case(case, study=study)
            for row, pair in zip(new_rows, new_pairs):
                if pair is not None:
                    pairs[len(rows)] = pair
                rows.append(row)
            if callback is not None:
                callback(i + 1, len(cases), {"study": study, **_describe(case),
                                             "rows": to_table(new_rows)})
        if callback is not None:
            callback(len(cases), len(cases), {"study": study})
    finally:
        close()
    return to_table(rows, pairs)


def to_table(rows: list[dict[str, Any]], pairs: dict[int, dict] | None = None) -> pd.DataFrame:
    """Rows -> DataFrame with :data:`COLUMNS` first (extra label columns after them)."""
    extra = [c for r in rows for c in r if c not in COLUMNS]
    columns = list(COLUMNS) + list(dict.fromkeys(extra))
    df = pd.DataFrame(rows, columns=columns)
    for flag in ("converged", "stationary", "collapsed"):
        df[flag] = df[flag].astype(bool)
    df.attrs["pairs"] = pairs or {}
    return df


def _describe(case: Case) -> dict[str, Any]:
    m = case.model
    return {"dataset": m.dataset, "arch": m.arch, "depth": m.depth, "width": m.width,
            "weight_decay": m.weight_decay, "seed": m.seed, **case.labels}


def progress_callback(progress: Progress | bool | None, total: int,
                      desc: str) -> tuple[Progress | None, Callable[[], None]]:
    """A callback and its closer: the given callable, a tqdm.auto bar for ``True``, or none."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, leave=False)

        def update(done: int, _total: int, info: dict[str, Any]) -> None:
            bar.n = done
            bar.set_postfix({k: v for k, v in info.items() if k in ("arch", "depth", "width",
                                                                  "weight_decay", "seed")})
            bar.refresh()

        return update, bar.close
    if callable(progress):
        return progress, lambda: None
    return None, lambda: None
