"""The linear datamodeling score (LDS; Park et al. 2023, TRAK): do the summed scores of the points
a random subset leaves out rank the test losses after training on that subset?

Single-point leave-one-out is a noisy target for non-convex models; removing half the data moves
the test losses far more than retraining noise does, so LDS still separates good estimators from
bad ones where LOO correlations are all near 0 (see ``PAPER.md``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

from .._findings import Finding, TrustReport
from ..influence import InfluenceResult
from ..models.params import ParamSelection
from ..models.training import TrainConfig
from .noise import DEFAULT_PERTURB
from .options import SweepOptions, sweep_options
from .problem import RetrainObjective
from .result import LOOResult
from .truths import make_truth

MIN_SUBSETS = 3  # a Spearman correlation of fewer pairs means nothing


@dataclass
class LDSResult:
    """The linear datamodeling score per test point, with the subsets and numbers behind it.

    ``per_test[t]`` is the Spearman correlation, across the subsets, between ``predicted[t]``
    (the sum of the scores of the points each subset leaves out) and ``actual[t]`` (the test loss
    after training on the subset, minus the ``reference``); ``mean`` is its mean over the test
    points that have one (NaN-mean). ``subsets[s]`` is the boolean mask ``(n_train,)`` of the
    points subset ``s`` keeps. A subset whose retrains all diverged has ``actual`` NaN and is
    left out of the correlation (``diverged`` per retrain, ``n_used`` subsets per test point).
    ``n_retrains_computed``/``n_retrains_loaded`` count every retrain, the control included.
    """

    per_test: torch.Tensor  # (n_test,)
    mean: float
    subsets: torch.Tensor  # (n_subsets, n_train) bool: the kept points
    predicted: torch.Tensor  # (n_test, n_subsets)
    actual: torch.Tensor  # (n_test, n_subsets)
    fraction: float
    n_subsets: int
    n_repeats: int
    seed: int
    mode: str
    steps: int
    params: str
    reference: str
    repeats: str  # what the repeats of a subset randomise ("" with n_repeats=1)
    n_used: torch.Tensor  # (n_test,) subsets with a usable retrain, per test point
    diverged: torch.Tensor  # (n_subsets, n_repeats) bool
    n_retrains_computed: int
    n_retrains_loaded: int
    dtype: str
    seconds: float
    setting: str = ""
    objective: RetrainObjective | None = None
    findings: tuple[Finding, ...] = ()

    @property
    def report(self) -> TrustReport:
        """The findings as a :class:`TrustReport` (``print(res.report.to_text())``)."""
        return TrustReport(self.findings)

    def __repr__(self) -> str:
        n_test, n = self.predicted.shape[0], self.subsets.shape[1]
        kept = int(self.subsets[0].sum()) if self.n_subsets else 0
        ok = int(torch.isfinite(self.per_test).sum())
        return (f"LDSResult(mean={self.mean:.3f} over {ok}/{n_test} test points, "
                f"subsets={self.n_subsets} x {self.n_repeats} repeat(s) keeping {kept} of {n} "
                f"(fraction {self.fraction:g}, seed {self.seed}), mode={self.mode!r}, "
                f"params={self.params!r}, diverged={int(self.diverged.sum())}/"
                f"{self.diverged.numel()}, computed={self.n_retrains_computed}, "
                f"loaded={self.n_retrains_loaded}, dtype={self.dtype}, "
                f"seconds={self.seconds:.2f})")


def lds(
    model: Any,
    train: Any,
    test: Any,
    scores: torch.Tensor | InfluenceResult | Any,
    *,
    fraction: float = 0.5,
    n_subsets: int = 50,
    n_repeats: int = 1,
    config: TrainConfig | None = None,
    mode: str = "scratch",
    seed: int = 0,
    params: ParamSelection = "all",
    perturb: float | str = "auto",
    return_result: bool = True,
    options: SweepOptions | None = None,
    **overrides: Any,
) -> LDSResult | torch.Tensor:
    """The linear datamodeling score of ``scores``: do they rank group removals correctly?

    Draws ``n_subsets`` random subsets ``S`` of ``round(fraction * n_train)`` training points
    (seeded by ``seed``), retrains on each and, per test point ``t``, takes the Spearman
    correlation across the subsets of::

        predicted[t, S] = sum(scores[t, i] for i not in S)
        actual[t, S] = loss_t(trained on S) - loss_t(reference)

    In this project's sign convention (a score is the change in test loss when the point is
    removed; positive = it helped), the prediction for ``S`` is the sum of the scores of the
    points it *removes*, and ``actual`` is in the same units: the reference is the control
    retrain on all points with the same schedule (the trained model when
    ``subtract_control=False``, and in mode "pbrf"). Positive LDS = the scores rank the
    outcomes of removing half the data correctly; about 0 = no better than random scores.

    ``scores``: ``(n_test, n_train)``, e.g. ``iw.influence(...)`` or its ``InfluenceResult``.
    The protocol is TRAK's: ``mode="scratch"`` (default) retrains from the model's initial
    parameters with the config's seed and steps; ``"warm_start"`` from the trained parameters.
    Retraining minimises the model's own objective on ``S`` (mean loss over ``S`` plus the same
    weight decay); ``config`` (default: the model's) sets the schedule. ``n_repeats > 1``
    retrains each subset that many times and averages the test losses: repeat 0 as above,
    repeat ``r`` with seed ``config.seed + r`` (a fresh initialisation from the model's spec in
    "scratch" mode, another mini-batch order, and with ``perturb="auto"`` a perturbed start
    when nothing else would change; see :func:`retraining_noise`). Diverged retrains are NaN
    and left out of the average; a subset with none left is left out of the correlation, with
    a finding.

    How the sweep runs (``batch_width``, ``executor``, ``store``, ``progress``,
    ``should_stop``, ``allow_different_objective``, ...) is set by ``options`` or by the fields
    of :class:`SweepOptions` as keywords, as in :func:`leave_one_out`; each retrain is stored
    under a key of its removed points, so an interrupted call resumes and a repeated one
    retrains nothing. Returns an :class:`LDSResult` (``return_result=False``: ``per_test``).

    Example (a logistic regression on 30 points; under a second)::

        import torch
        import influence_widgets as iw

        g = torch.Generator().manual_seed(0)
        X = torch.randn(40, 2, generator=g, dtype=torch.float64)
        y = (X[:, 0] + 0.7 * torch.randn(40, generator=g, dtype=torch.float64) > 0).long()
        train, test = (X[:30], y[:30]), (X[30:], y[30:])
        spec = iw.models.mlp_spec((2,), 2, depth=0)
        tm = iw.train(spec, train, iw.TrainConfig.preset("exact", weight_decay=0.05))
        scores = iw.influence(tm, train, test)
        res = iw.ground_truth.lds(tm, train, test, scores, n_subsets=8, store=None)
        assert res.mean > 0.5, res  # 0.86: exact scores of a convex model rank removals well
    """
    t0 = time.perf_counter()
    fraction = _check_fraction(fraction)
    n_subsets = _check_count("n_subsets", n_subsets, MIN_SUBSETS)
    n_repeats = _check_count("n_repeats", n_repeats, 1)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if mode not in ("scratch", "warm_start"):
        raise ValueError(f"unknown mode {mode!r} for lds: it retrains each subset from scratch "
                         f"(mode='scratch', TRAK's protocol) or from the trained parameters "
                         f"(mode='warm_start')")
    if not (perturb == "auto" or (isinstance(perturb, int | float) and not isinstance(perturb, bool)
                                  and math.isfinite(perturb) and perturb >= 0)):
        raise ValueError(f"perturb must be 'auto' or a finite number >= 0, got {perturb!r}")
    if perturb != "auto":
        from .noise import check_perturb_size

        check_perturb_size(float(perturb))
    opts = sweep_options(options, overrides, caller="lds")
    values = _score_matrix(scores)
    truth = make_truth("lds", fraction=fraction, n_repeats=n_repeats, retrain=mode,
                       perturb=DEFAULT_PERTURB if perturb == "auto" else float(perturb))
    from ..datasets.base import as_tensors

    n_test = int(as_tensors(test)[0].shape[0])

    def units(n: int) -> list[tuple[int, ...]]:
        if tuple(values.shape) != (n_test, n):
            raise ValueError(
                f"scores must have shape (n_test, n_train) = ({n_test}, {n}), got "
                f"{tuple(values.shape)}: one row per test point, one column per training point, "
                "as iw.influence(model, train, test) returns for the same data")
        return truth.draw_units(n, n_subsets, int(seed))

    if config is None:
        from .problem import resolve_model

        config = resolve_model(model)[3]
    res = truth.measure(model, train, test, units, config=config, params=params, options=opts)
    n = values.shape[1]
    removed = torch.zeros(n_subsets, n, dtype=torch.bool)
    for s, u in enumerate(res.units):
        removed[s, list(u)] = True
    keep = ~removed
    actual = res.values.double()
    diverged = res.diverged.reshape(n_subsets) if res.diverged is not None else torch.zeros(
        n_subsets, dtype=torch.bool)
    predicted = values @ removed.to(torch.float64).T  # the sum over the removed points
    per_test, n_used = spearman_rows(predicted, actual)
    findings = (res.findings + _lds_findings(per_test, n_used, n_subsets)
                + _scores_findings(scores, res.params, res.objective))
    TrustReport(findings).warn(stacklevel=2)
    how = "" if n_repeats == 1 else _repeats_how(res, truth)
    result = LDSResult(
        per_test=per_test,
        mean=float(per_test.nanmean()) if bool(torch.isfinite(per_test).any()) else math.nan,
        subsets=keep, predicted=predicted, actual=actual, fraction=fraction,
        n_subsets=n_subsets, n_repeats=n_repeats, seed=int(seed), mode=res.mode,
        steps=res.steps, params=res.params, reference=res.reference,
        repeats=how, n_used=n_used, diverged=diverged[:, None].expand(n_subsets, n_repeats),
        n_retrains_computed=res.n_retrains_computed, n_retrains_loaded=res.n_retrains_loaded,
        dtype=res.dtype, seconds=time.perf_counter() - t0,
        setting=res.setting, objective=res.objective, findings=findings,
    )
    return result if return_result else result.per_test


def _repeats_how(res: LOOResult, truth: Any) -> str:
    """What the repeats of a subset randomised (in words)."""
    parts = []
    cfg = res.info.get("config", {})
    if cfg.get("batch_size"):
        parts.append("mini-batch order")
    if res.mode == "scratch":
        parts.append("initialisation")
    if not parts:
        parts.append(f"start perturbed by {truth.settings.perturb:g} x RMS per tensor")
    return " + ".join(parts)


def random_subsets(n: int, fraction: float, n_subsets: int, seed: int = 0) -> torch.Tensor:
    """``(n_subsets, n)`` boolean masks, each keeping ``round(fraction * n)`` points drawn
    without replacement with ``seed`` (the same seed gives the same subsets anywhere)."""
    k = round(fraction * n)
    if not 1 <= k <= n - 1:
        raise ValueError(
            f"fraction={fraction:g} of {n} training points keeps {k}: a subset must keep at "
            f"least 1 point and remove at least 1; pick a fraction in "
            f"[{0.5 / n:.3g}, {1 - 0.5 / n:.3g}] for this data")
    g = torch.Generator().manual_seed(seed)
    keep = torch.zeros(n_subsets, n, dtype=torch.bool)
    for s in range(n_subsets):
        keep[s, torch.randperm(n, generator=g)[:k]] = True
    return keep


def spearman_rows(predicted: torch.Tensor,
                  actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the Spearman correlation over the columns where both are finite, and how many
    columns that is. NaN for a row with fewer than ``MIN_SUBSETS`` of them or a constant side."""
    p, a = predicted.double().numpy(), actual.double().numpy()
    rho = np.full(p.shape[0], np.nan)
    used = np.zeros(p.shape[0], dtype=np.int64)
    for t in range(p.shape[0]):
        ok = np.isfinite(p[t]) & np.isfinite(a[t])
        used[t] = int(ok.sum())
        x, y = p[t, ok], a[t, ok]
        if used[t] >= MIN_SUBSETS and np.ptp(x) > 0 and np.ptp(y) > 0:
            rho[t] = stats.spearmanr(x, y)[0]
    return torch.from_numpy(rho), torch.from_numpy(used)


# ----------------------------------------------------------------------------- helpers


def _check_fraction(fraction: Any) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, int | float | np.floating):
        raise TypeError(f"fraction must be a number in (0, 1), got {fraction!r}")
    if not (math.isfinite(fraction) and 0 < fraction < 1):
        raise ValueError(f"fraction must be in (0, 1) (the share of the training points each "
                         f"subset keeps; TRAK uses 0.5), got {fraction!r}")
    return float(fraction)


def _check_count(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < least:
        why = (" (a Spearman correlation across fewer subsets means nothing; TRAK uses 50-100)"
               if name == "n_subsets" else "")
        raise ValueError(f"{name} must be at least {least}{why}, got {value}")
    return int(value)


def _score_matrix(scores: Any) -> torch.Tensor:
    """The ``(n_test, n_train)`` scores as a float64 CPU tensor (clear errors otherwise)."""
    if isinstance(scores, InfluenceResult):
        scores = scores.values
    try:
        values = torch.as_tensor(scores).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError("scores must be an (n_test, n_train) tensor or array, or an "
                        f"InfluenceResult; got {type(scores).__name__}") from None
    if values.dim() != 2:
        raise ValueError(f"scores must be 2-D (n_test, n_train), got shape {tuple(values.shape)}"
                         "; for one test point pass scores[None] (or scores.unsqueeze(0))")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("scores contain NaN or inf: the sum over a subset would be undefined; "
                         "fix the estimate (e.g. add damping) first")
    return values


def _scores_findings(scores: Any, params: str,
                     objective: RetrainObjective | None) -> tuple[Finding, ...]:
    """An InfluenceResult says what it explains: a parameter set or weight decay other than the
    retrains' is a warning (the two then answer different questions)."""
    if not isinstance(scores, InfluenceResult):
        return ()
    differ = []
    if scores.params != params:
        differ.append(f"parameters {scores.params!r} vs {params!r}")
    if objective is not None and not math.isclose(scores.weight_decay, objective.weight_decay):
        differ.append(f"weight decay {scores.weight_decay:g} vs {objective.weight_decay:g}")
    if not differ:
        return ()
    return (Finding(
        "warning", "comparison", "lds-scores-mismatch",
        f"the scores and the retrains differ: {'; '.join(differ)} (scores vs retrains)",
        "the LDS then measures how well the scores predict another problem than theirs",
        "pass the same params (and the model's weight decay) to iw.influence and lds", None),)


def _lds_findings(per_test: torch.Tensor, n_used: torch.Tensor,
                  n_subsets: int) -> tuple[Finding, ...]:
    found = []
    short = n_used < n_subsets
    if bool(short.any()):
        found.append(Finding(
            "info", "comparison", "lds-subsets-left-out",
            f"the LDS of {int(short.sum())} test point(s) uses only {int(n_used.min())} to "
            f"{int(n_used[short].max())} of the {n_subsets} subsets",
            "the subsets left out had only diverged retrains (NaN): the correlation is over "
            "the others, so it is noisier",
            "lower the learning rate (or the steps) of the retraining config", None))
    missing = ~torch.isfinite(per_test)
    if bool(missing.any()):
        found.append(Finding(
            "warning", "comparison", "lds-undefined",
            f"{int(missing.sum())} of {per_test.numel()} test points have no LDS (NaN)",
            f"a Spearman correlation needs at least {MIN_SUBSETS} subsets with a usable "
            "retrain and predictions and outcomes that vary across the subsets",
            "fix the diverged retrains, draw more subsets, or check that the scores are not "
            "constant", None))
    return tuple(found)
