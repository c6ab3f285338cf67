"""The forecast's corpus: (model, test point, solver, ground truth) -> measured Spearman.

A corpus is a seeded list of :class:`CorpusCase` s (random architectures, activations, weight
decays, dampings, training schedules and warm-start schedules on Iris, digits and real MNIST
subsets). Each case trains one model, picks its test points (highest, median and random loss),
estimates with every corpus solver, computes the features (:mod:`.features`), retrains without
the union of every estimate's top ``k`` training points (the registered ground truth, through its
own sweep: the store makes an interrupted sweep resume) and measures the Spearman of each
estimate against it over its own top ``k``, as the explorer does. Each finished case is saved to
``<folder>/cases/<case_id>.csv`` (atomically), so :func:`generate` resumes where it stopped.

Held-out cases (:func:`heldout_cases`) use widths, activations and training schedules that are in
no zoo preset, no study grid and not in the corpus: the done-when check of the forecast.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import features as feat

#: Solvers every corpus case estimates with (LiSSA is left out: its cost on a 2-core machine;
#: a LiSSA forecast is flagged as outside the corpus).
CORPUS_SOLVERS = ("exact", "cg", "arnoldi", "kfac", "ekfac")
#: Family columns: leave-one-family-out cross-validation holds out each value of each.
FAMILIES = ("dataset", "activation", "arch", "schedule")

#: Training schedules (name -> TrainConfig fields); the held-out ones are in no preset or study.
SCHEDULES: dict[str, dict[str, Any]] = {
    "lbfgs": {"optimizer": "lbfgs", "lr": 1.0, "steps": 400, "grad_tol": 1e-5},
    "adam": {"optimizer": "adam", "lr": 0.01, "steps": 600, "grad_tol": 1e-5},
    "adam-short": {"optimizer": "adam", "lr": 0.01, "steps": 150, "grad_tol": 1e-5},
}
HELDOUT_SCHEDULES: dict[str, dict[str, Any]] = {
    "sgd-momentum": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "steps": 800,
                     "grad_tol": 1e-5},
    "adam-then-lbfgs": {"optimizer": "adam", "lr": 0.003, "steps": 300, "polish_steps": 200,
                        "grad_tol": 1e-5},
}
ACTIVATIONS = ("tanh", "relu", "selu", "sigmoid")
HELDOUT_ACTIVATIONS = ("softplus", "gelu", "elu", "silu")
WIDTHS = (3, 4, 5, 6, 8, 10, 16, 20)
HELDOUT_WIDTHS = (7, 12, 14)
DEPTHS = (1, 2, 3, 4)
WEIGHT_DECAYS = (0.0, 1e-3, 5e-3, 1e-2)
DAMPINGS = (0.0, 0.0, 1e-3, 1e-2)
#: Warm-start schedules (steps, lr) of the ground truth: the default first.
WARM_STARTS = ((500, 1e-3), (500, 1e-3), (200, 1e-3), (500, 3e-3))
#: Dataset -> loader options (seeded subsets keep every case small).
DATASETS: dict[str, dict[str, Any]] = {
    "iris": {},
    "digits": {"train_size": 120, "test_size": 30},
    "mnist": {"train_size": 120, "test_size": 30},
}
#: Up to this many training points every one is retrained (else the union of the top k).
ALL_UNITS = 150
DATASET_WEIGHTS = {"iris": 0.5, "digits": 0.3, "mnist": 0.2}


def arch_family(depth: int) -> str:
    return "shallow (d1)" if depth <= 1 else "d2" if depth == 2 else "deep (d3-4)"


@dataclass(frozen=True)
class CorpusCase:
    """One model of the corpus and how it is evaluated."""

    case_id: str
    dataset: str
    depth: int
    width: int
    activation: str
    weight_decay: float
    schedule: str
    seed: int
    damping: float = 0.0
    ws_steps: int = 500
    ws_lr: float = 1e-3
    n_test: int = 30  # test points: every one up to this many, else highest/median/random
    k: int = 40
    solvers: tuple[str, ...] = CORPUS_SOLVERS
    split: str = "corpus"
    schedule_fields: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] | None = None  # None: DATASETS[dataset]

    def data(self) -> dict[str, Any]:
        return dict(DATASETS[self.dataset] if self.data_options is None else self.data_options)

    @property
    def arch(self) -> str:
        return arch_family(self.depth)

    def labels(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("solvers", "schedule_fields", "data_options"):
            d.pop(key)
        d["arch"] = self.arch
        return d


def _mnist_ok() -> bool:
    from ..experiments.core import load_data

    try:
        load_data("mnist", **DATASETS["mnist"])
    except (FileNotFoundError, OSError, ValueError):
        return False
    return True


def _draw(rng: np.random.Generator, i: int, split: str, widths: Sequence[int],
          activations: Sequence[str], schedules: dict[str, dict[str, Any]],
          datasets: Sequence[str]) -> CorpusCase:
    ds = [d for d in DATASET_WEIGHTS if d in datasets]
    p = np.array([DATASET_WEIGHTS[d] for d in ds])
    dataset = str(rng.choice(ds, p=p / p.sum()))
    depth = int(rng.choice(DEPTHS if dataset != "mnist" else DEPTHS[:1]))
    width = int(rng.choice([w for w in widths if dataset != "mnist" or w <= 3] or [min(widths)]))
    schedule = str(rng.choice(list(schedules)))
    steps, lr = WARM_STARTS[int(rng.integers(len(WARM_STARTS)))]
    return CorpusCase(
        case_id=f"{split}-{i:04d}", dataset=dataset, depth=depth, width=width,
        activation=str(rng.choice(activations)),
        weight_decay=float(rng.choice(WEIGHT_DECAYS)), schedule=schedule,
        seed=int(rng.integers(0, 1000)), damping=float(rng.choice(DAMPINGS)),
        ws_steps=int(steps), ws_lr=float(lr), split=split,
        schedule_fields=dict(schedules[schedule]))


def corpus_cases(n: int, seed: int = 0, datasets: Sequence[str] | None = None) -> list[CorpusCase]:
    """``n`` seeded corpus cases (the same ``n`` and ``seed`` give the same cases; the first
    ``m`` of ``n`` are the ``m`` cases of a smaller corpus)."""
    datasets = datasets or [d for d in DATASETS if d != "mnist" or _mnist_ok()]
    rng = np.random.default_rng(seed)
    return [_draw(rng, i, "corpus", WIDTHS, ACTIVATIONS, SCHEDULES, datasets) for i in range(n)]


def heldout_cases(n: int, seed: int = 1, datasets: Sequence[str] | None = None
                  ) -> list[CorpusCase]:
    """``n`` models in no preset, no study grid and not in the corpus: other widths, activations
    and training schedules."""
    datasets = datasets or ("iris", "digits")  # MNIST at the held-out widths: too many parameters
    rng = np.random.default_rng(10_000 + seed)
    return [_draw(rng, i, "heldout", HELDOUT_WIDTHS, HELDOUT_ACTIVATIONS, HELDOUT_SCHEDULES,
                  datasets) for i in range(n)]


def tiny_cases(n: int, seed: int = 0) -> list[CorpusCase]:
    """``n`` seconds-long cases (a 40-point Iris subset, two solvers, short warm starts): the
    corpus command's tests."""
    rng = np.random.default_rng(seed)
    return [CorpusCase(case_id=f"tiny-{i:04d}", dataset="iris", depth=1,
                       width=int(rng.choice((3, 4))), activation=("tanh", "relu")[i % 2],
                       weight_decay=5e-3, schedule="lbfgs", seed=int(rng.integers(0, 1000)),
                       ws_steps=20, n_test=6, k=10, solvers=("exact", "cg"),
                       schedule_fields=dict(SCHEDULES["lbfgs"]),
                       data_options={"train_size": 40, "test_size": 6})
            for i in range(n)]


def _train(case: CorpusCase):
    from ..experiments.core import ModelCase, load_data, train_case
    from ..models import TrainConfig

    data = load_data(case.dataset, **case.data())
    config = TrainConfig(dtype="float64", device="cpu", **case.schedule_fields)
    mc = ModelCase(dataset=case.dataset, depth=case.depth, width=case.width,
                   activation=case.activation, weight_decay=case.weight_decay, seed=case.seed,
                   data_options=case.data(), train=config, device="cpu")
    return data, train_case(mc, data)


def _test_points(tm: Any, data: Any, case: CorpusCase) -> list[int]:
    from ..experiments.core import _accuracy_and_losses
    from ..ground_truth import pick_test_points

    _, losses = _accuracy_and_losses(tm, data.X_test, data.y_test)
    if len(losses) <= case.n_test:
        return list(range(len(losses)))
    k = max(1, case.n_test // 3)
    picked = []
    for how in ("highest", "median", "random"):
        picked += pick_test_points(losses, how=how, k=k, seed=case.seed)
    return sorted(dict.fromkeys(int(i) for i in picked))


def evaluate(case: CorpusCase) -> pd.DataFrame:
    """The rows of one case: a row per test point x solver x ground truth (warm start, and the
    exact solve for every other solver), with its features, labels and measured Spearman."""
    from ..evaluate import compare
    from ..ground_truth import SweepOptions, make_truth, top_k
    from ..influence import InfluenceEngine, SolverError

    t0 = time.perf_counter()
    data, tm = _train(case)
    tidx = _test_points(tm, data, case)
    test = (data.X_test[tidx], data.y_test[tidx])
    engine = InfluenceEngine(tm, data.train)
    curvature = feat.Curvature.of(engine)
    n = int(data.X_train.shape[0])
    k = min(case.k, n)
    truth_settings = {"steps": case.ws_steps, "lr": case.ws_lr}
    exact = engine.scores(test, solver="exact", damping=case.damping)
    computed: dict[str, feat.Computed] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for solver in case.solvers:
            try:
                computed[solver] = feat.compute(
                    tm, data.train, test, solver=solver, truth="warm_start", k=k,
                    damping=case.damping, truth_settings=truth_settings, engine=engine,
                    curvature=curvature, exact=exact)
            except (SolverError, ArithmeticError, RuntimeError, ValueError):
                continue
    top = {s: [top_k(c.estimate.values[r], k=k) for r in range(len(tidx))]
           for s, c in computed.items()}
    # every training point when there are few (one sweep serves every test point and solver)
    units = (list(range(n)) if n <= ALL_UNITS else
             sorted({i for rows in top.values() for idx in rows for i in idx}))
    gt = make_truth("warm_start", **truth_settings)
    loo = gt.measure(tm, data.train, test, [(i,) for i in units],
                     config=gt.schedule(tm.config),
                     options=SweepOptions(dtype="float64"))
    col = {i: j for j, i in enumerate(units)}
    actual = loo.values.double().cpu().numpy()
    exact_values = exact.values.double().cpu().numpy()
    rows = []
    labels = case.labels()
    for s, c in computed.items():
        est = c.estimate.values.double().cpu().numpy()
        for r, t in enumerate(tidx):
            idx = top[s][r]
            e = est[r, idx]
            targets = [("warm_start", actual[r, [col[i] for i in idx]], c.table.iloc[r])]
            if s != "exact":
                ex_feats = c.table.iloc[r].copy()
                ex_feats.update(pd.Series(feat.truth_features("exact", {}, k)))
                targets.append(("exact", exact_values[r, idx], ex_feats))
            for truth, a, f in targets:
                ok = np.isfinite(a)
                rho = math.nan
                if ok.sum() >= 3 and np.ptp(e[ok]) > 0 and np.ptp(a[ok]) > 0:
                    rho = compare(e, a, drop_nan=True, n_boot=0)["spearman"]
                rows.append({**labels, "test_index": t, "solver": s, "truth": truth,
                             "spearman": rho, "n_eval": int(ok.sum()), **f.to_dict()})
    out = pd.DataFrame(rows)
    out["seconds"] = time.perf_counter() - t0
    return out


def generate(folder: str | Path, cases: Sequence[CorpusCase], *,
             progress: Callable[[int, int, dict[str, Any]], None] | None = None,
             budget_s: float | None = None) -> pd.DataFrame:
    """Evaluate every case not yet saved under ``folder/cases`` and return the whole corpus
    (saved cases included). ``budget_s``: start no new case after this many seconds (the rest
    stay for the next run). A case that fails (e.g. a model that does not train) is saved as an
    empty table with its error, so it is not retried."""
    from .._cache import atomic_write_text

    root = Path(folder) / "cases"
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, case in enumerate(cases):
        path = root / f"{case.case_id}.csv"
        if path.exists():
            continue
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            break
        if progress is not None:
            progress(i, len(cases), case.labels())
        try:
            table = evaluate(case)
        except (RuntimeError, ValueError, ArithmeticError) as e:
            table = pd.DataFrame([{**case.labels(), "error": f"{type(e).__name__}: {e}"}])
        atomic_write_text(path, table.to_csv(index=False))
    if progress is not None:
        progress(len(cases), len(cases), {})
    return load(folder, [c.case_id for c in cases])


def load(folder: str | Path, case_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """The saved rows under ``folder/cases`` (of ``case_ids`` only, when given), rows with a
    measured Spearman only."""
    root = Path(folder) / "cases"
    paths = sorted(root.glob("*.csv")) if root.exists() else []
    if case_ids is not None:
        wanted = set(case_ids)
        paths = [p for p in paths if p.stem in wanted]
    frames = [pd.read_csv(p) for p in paths]
    frames = [f for f in frames if "spearman" in f.columns and len(f)]
    if not frames:
        return pd.DataFrame(columns=["case_id", "spearman", *feat.FEATURES])
    df = pd.concat(frames, ignore_index=True)
    return df[np.isfinite(df["spearman"].astype(float))].reset_index(drop=True)
