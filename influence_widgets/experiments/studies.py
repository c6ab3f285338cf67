"""The paper's studies as thin grids over :func:`~.core.run_cases`; each returns a tidy table.

Every study takes a preset name (``"tiny"``, ``"quick"``, ``"paper"``; see :mod:`.presets`), any
preset option as a keyword override, ``device`` and ``progress`` (a callback
``(done, total, info)`` or ``True`` for a tqdm bar). Same options -> same numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..ground_truth import truth_class
from ..models import TrainConfig
from . import claims as claims_mod
from .core import (
    Case,
    EvalCase,
    ModelCase,
    Progress,
    Truth,
    load_data,
    run_cases,
    to_table,
)
from .presets import image_training, iris_training, preset_names, resolve, seed_sets
from .reference import DATTRI_MLP_LOO_MAX, DATTRI_REFERENCE, DATTRI_SOURCE
from .synthetic import synthetic_image_folder

IRIS_SOLVER_OPTIONS = {"cg": {"tol": 1e-10, "max_iter": 2000}}
#: Options of the small image models (overridable per study with ``arch_options``): smooth
#: variants (tanh, average pooling), so that training can reach a stationary point.
ARCH_OPTIONS: dict[str, dict[str, Any]] = {
    "mlp": {},
    "small_cnn": {"channels": 8, "activation": "tanh", "pool": "avg"},
    "lenet5": {"activation": "tanh"},
    "vgg": {"depth": 4, "width": 8, "activation": "tanh", "pool": "avg"},
    "resnet18": {"norm": "group"},
}


def _iris_model(depth: int, width: int, activation: str, weight_decay: float, seed: int,
                recipe: str, device: str | None) -> ModelCase:
    return ModelCase("iris", "mlp", depth, width, activation, weight_decay, seed,
                     train=iris_training(recipe), device=device)


def _warm_start(retrain: dict[str, Any], params: str = "all", mode: str = "warm_start") -> Truth:
    """The registered ground truth ``mode`` retraining ``params`` with the study's schedule."""
    return Truth(mode=mode, params=params, retrain=dict(retrain))


def _iris_grid(study: str, o: dict[str, Any], ev: EvalCase, depths, widths, activations,
               weight_decays, device: str | None, progress: Progress | bool | None) -> pd.DataFrame:
    """Every Iris model of the grid on both seed sets (``seed_set`` label: "preset", "check")."""
    cases = [Case(_iris_model(d, w, a, wd, s, o["train"] if wd else o.get("train_no_wd",
                                                                             o["train"]), device),
                  ev, {"seed_set": which})
             for a in activations for wd in weight_decays for d in depths for w in widths
             for which, s in seed_sets(o)]
    return run_cases(cases, study=study, progress=progress)


# ----------------------------------------------------------------------------- (i) depth, width


def depth_study(preset: str = "quick", *, device: str | None = None,
                progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (i): Iris MLPs of growing depth (width fixed), with and without weight decay.

    Both weight-decay arms train with the same recipe (``train``/``train_no_wd``, default float64
    L-BFGS to stationarity; see ``IRIS_TRAINING``); without weight decay that is the separable
    regime (degenerate, as the ``health`` column says). Exact estimate over all parameters,
    warm-start LOO of all layers on the ``k`` training points with the largest ``|estimate|``,
    highest-loss test point; every model on the preset ``seeds`` and the ``check_seeds``.
    Options: ``depths``, ``weight_decays``, ``activations``, ``seeds``, ``check_seeds``,
    ``width``, ``k``, ``test_points``, ``retrain`` (LOO TrainConfig changes), ``train`` and
    ``train_no_wd`` (training recipes, see ``IRIS_TRAINING``).
    """
    o = resolve("depth", preset, options)
    ev = EvalCase(k=o["k"], test_points=tuple(o["test_points"]),
                  truths=(_warm_start(o["retrain"]),))
    return _iris_grid("depth", o, ev, o["depths"], (o["width"],), o["activations"],
                      o["weight_decays"], device, progress)


def width_study(preset: str = "quick", *, device: str | None = None,
                progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (i): one-hidden-layer Iris MLPs of growing width (protocol of :func:`depth_study`).

    Options: ``widths``, ``weight_decays``, ``activations``, ``seeds``, ``check_seeds``,
    ``depth``, ``k``, ``test_points``, ``retrain``, ``train``, ``train_no_wd``.
    """
    o = resolve("width", preset, options)
    ev = EvalCase(k=o["k"], test_points=tuple(o["test_points"]),
                  truths=(_warm_start(o["retrain"]),))
    return _iris_grid("width", o, ev, (o["depth"],), o["widths"], o["activations"],
                      o["weight_decays"], device, progress)


# ----------------------------------------------------------------------------- (iii) test points


def test_point_study(preset: str = "quick", *, device: str | None = None,
                     progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (iii): the highest-loss, a median-loss and a random test point of each model.

    Options: ``depths``, ``weight_decay``, ``activations``, ``seeds``, ``check_seeds``,
    ``test_points``, ``k``, ``retrain``, ``train``.
    """
    o = resolve("test_point", preset, options)
    ev = EvalCase(k=o["k"], test_points=tuple(o["test_points"]),
                  truths=(_warm_start(o["retrain"]),))
    return _iris_grid("test_point", o, ev, o["depths"], (5,), o["activations"],
                      (o["weight_decay"],), device, progress)


# ----------------------------------------------------------------------------- (iv) solvers


def solver_study(preset: str = "quick", *, device: str | None = None,
                 progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (iv): CG, LiSSA and Arnoldi against the exact estimate, by depth, with times.

    No retraining: ``rel_error`` is ``||est - exact|| / ||exact||`` over all training points and
    the correlations are with the exact estimate. Options: ``depths``, ``weight_decay``,
    ``activation``, ``seeds``, ``check_seeds``, ``solvers``, ``damping``, ``lissa_steps``,
    ``lissa_batch`` (training points per LiSSA step; ``None``: all, deterministic),
    ``arnoldi_rank``, ``train``.
    """
    o = resolve("solver", preset, options)
    lissa = {"steps": o["lissa_steps"], "batch_size": o["lissa_batch"]}
    solver_options = {**IRIS_SOLVER_OPTIONS, "lissa": lissa,
                      "arnoldi": {"rank": o["arnoldi_rank"]}}
    ev = EvalCase(solvers=tuple(o["solvers"]), solver_options=solver_options,
                  damping=o["damping"], select="all", k=None, truths=(Truth(mode="exact"),))
    return _iris_grid("solver", o, ev, o["depths"], (5,), (o["activation"],),
                      (o["weight_decay"],), device, progress)


# ----------------------------------------------------------------------------- validation


def validation_study(preset: str = "quick", *, device: str | None = None,
                     progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """How much "fragility" is the ground truth itself: full-network and last-layer estimates
    against full-network and last-layer retraining (and PBRF), each judged against real
    retraining noise.

    Options: ``depths``, ``weight_decay``, ``activation``, ``seeds``, ``check_seeds``, ``k``,
    ``modes`` (registered ground truths: "warm_start" brings "last_layer" with it, "scratch",
    "pbrf"), ``noise_seeds``, ``retrain``, ``train``.
    """
    o = resolve("validation", preset, options)
    truths = []
    for mode in o["modes"]:
        truths.append(_warm_start(o["retrain"], "all", mode))
        if mode == "warm_start":
            truths.append(_warm_start(o["retrain"], "last_layer", "last_layer"))
    ev = EvalCase(params=("all", "last_layer"), k=o["k"], truths=tuple(truths),
                  noise_seeds=o["noise_seeds"])
    return _iris_grid("validation", o, ev, o["depths"], (5,), (o["activation"],),
                      (o["weight_decay"],), device, progress)


# ----------------------------------------------------------------------------- (ii) weight decay


def _image_model(dataset: str, arch: str, o: dict[str, Any], weight_decay: float, seed: int,
                 device: str | None, data_options: dict[str, Any],
                 train: TrainConfig | None = None, **changes: Any) -> ModelCase:
    mlp = arch == "mlp"
    if dataset == "digits" and not mlp:
        dataset = "digits_images"
    options = {**ARCH_OPTIONS.get(arch, {}), **o.get("arch_options", {}).get(arch, {})}
    config = train if train is not None else image_training(
        o["steps"], **{"dtype": "float64", "polish_steps": o.get("polish_steps", 0), **changes})
    return ModelCase(dataset, arch, 1 if mlp else None, o.get("width", 32) if mlp else None,
                     "tanh" if mlp else None, weight_decay, seed,
                     options={} if mlp else options, data_options=data_options, train=config,
                     device=device)


def _available(dataset: str, data_options: dict[str, Any], notes: list[str]) -> bool:
    """Whether ``dataset`` can be loaded; if not, a note says why it was skipped."""
    try:
        load_data(dataset, **data_options)
    except FileNotFoundError as e:
        notes.append(f"{dataset} skipped: {str(e).splitlines()[0]}")
        return False
    return True


def _image_eval(o: dict[str, Any], solvers: tuple[str, ...],
                dampings: tuple[float, ...] = ()) -> EvalCase:
    options = {"cg": {"tol": 1e-5, "max_iter": 300},
               "lissa": {"steps": o.get("lissa_steps", 300), "batch_size": o.get("lissa_batch")}}
    return EvalCase(solvers=solvers, solver_options=options, damping=o.get("damping", 0.0),
                    dampings=tuple(dampings), k=o["k"], truths=(_warm_start(o["retrain"]),),
                    exact_max_params=o.get("exact_max_params", 0))


def _sizes(o: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The seeded subset sizes of ``dataset`` in a study (``dataset_sizes``, else the study's
    ``train_size``/``test_size``)."""
    train, test = o.get("dataset_sizes", {}).get(dataset, (o.get("train_size"),
                                                           o.get("test_size")))
    return {"train_size": train, "test_size": test}


def _with_notes(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    df.attrs["notes"] = list(notes)
    return df


#: A weight-decay study schedule by name: ``"adam:N"`` (N full-batch Adam steps, lr 0.01) or
#: ``"stationary"`` (float64 L-BFGS to a gradient norm of 1e-6: the same recipe for both arms).
def schedule(name: str) -> TrainConfig:
    """The training schedule called ``name`` (see the weight-decay study)."""
    if name == "stationary":
        return TrainConfig.preset("exact", steps=5000, grad_tol=1e-6)
    kind, _, steps = name.partition(":")
    if kind == "adam" and steps.isdigit() and int(steps) > 0:
        return image_training(int(steps), dtype="float64")
    raise ValueError(f"unknown schedule {name!r}: use 'adam:N' (N Adam steps) or 'stationary'")


def weight_decay_study(preset: str = "quick", *, device: str | None = None,
                       progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (ii) as a factorial design: digits models (MLP, and MNIST when its files are
    there), every training ``schedule`` (the same for both arms: a fixed Adam budget, or float64
    L-BFGS to stationarity) x ``weight_decays`` x estimation damping (each estimate at every
    damping in ``dampings``), against warm-start LOO; diagnostics (health, gradient norm,
    spectrum) in every row, the ``schedule`` column naming the cell. Failed estimates stay in
    the table.

    Missing datasets are skipped with a note in ``table.attrs["notes"]`` (real MNIST: ``make
    data``). Options: ``datasets``, ``archs``, ``weight_decays``, ``schedules``, ``dampings``,
    ``solvers``, ``seeds``, ``check_seeds``, ``k``, ``train_size``, ``test_size``,
    ``dataset_sizes`` (``{dataset: (train, test)}``), ``width``, ``lissa_steps``,
    ``lissa_batch``, ``arch_options``, ``retrain``.
    """
    o = resolve("weight_decay", preset, options)
    notes: list[str] = []
    ev = _image_eval(o, tuple(o["solvers"]), tuple(o["dampings"]))
    cases = [Case(_image_model(ds, arch, {**o, "steps": 1}, wd, s, device, _sizes(o, ds),
                               train=schedule(name)), ev,
                  {"schedule": name, "seed_set": which})
             for ds in o["datasets"] if _available(ds, _sizes(o, ds), notes)
             for arch in o["archs"] for name in o["schedules"] for wd in o["weight_decays"]
             for which, s in seed_sets(o)]
    return _with_notes(_run(cases, "weight_decay", progress), notes)


# ----------------------------------------------------------------------------- (i) architectures


def architecture_study(preset: str = "quick", *, device: str | None = None,
                       progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (i) beyond MLPs: small CNN, VGG-style and LeNet-5 (ResNet-18 on CIFAR-10 when its
    files are there), on the 8x8 digits as images in the quick preset; smooth variants (tanh,
    average pooling) trained with Adam then a float64 L-BFGS polish, so that a stationary point
    exists. Architectures are compared by their parameter count (``n_params``).

    The same solvers for every architecture (CG and LiSSA, with damping) against warm-start LOO;
    a solver that fails (CG on negative curvature) is recorded in the ``error`` column, never
    dropped. ``rel_error``: each solver against the exact solve, computed for models of at most
    ``exact_max_params`` parameters (NaN above). Options: ``datasets`` (each a separate arm:
    the 8x8 digits as images, real MNIST after ``make data``, CIFAR-10 when its files are
    there, else the digits stand-in), ``archs``, ``weight_decay``, ``seeds``, ``check_seeds``,
    ``solvers``, ``lissa_steps``, ``lissa_batch``, ``k``, ``train_size``, ``test_size``,
    ``dataset_sizes``, ``steps``, ``polish_steps``, ``damping``, ``exact_max_params``,
    ``arch_options``, ``retrain``.
    """
    o = resolve("architecture", preset, options)
    notes: list[str] = []
    datasets_: list[str] = []
    for dataset in o["datasets"]:
        if _available(dataset, _sizes(o, dataset), notes):
            datasets_.append(dataset)
        elif "digits_images" not in datasets_:
            datasets_.append("digits_images")
            notes.append("using the offline stand-in: 8x8 digits as images")
    ev = _image_eval(o, tuple(o["solvers"]))
    cases = [Case(_image_model(dataset, arch, o, o["weight_decay"], s, device,
                               _sizes(o, dataset)), ev, {"seed_set": which})
             for dataset in datasets_ for arch in o["archs"] for which, s in seed_sets(o)]
    return _with_notes(_run(cases, "architecture", progress), notes)


# ----------------------------------------------------------------------------- (v) groups


def group_study(preset: str = "quick", *, device: str | None = None,
                progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (v): single training points and groups of them against real retraining noise,
    on an image-folder model trained with mini-batches (then, in the quick preset, a float64
    L-BFGS polish to a stationary point).

    For each group size (size 1: single points) the most helpful, the most harmful and
    ``group_repeats`` random groups; the group estimate is the sum of its members' estimates,
    compared with retraining without the group. ``mode="scratch"`` retrains from the same
    initialisation and batch order as the model was trained; the noise floor retrains with
    nothing removed under other seeds (a new initialisation and batch order): the randomness of
    training itself. One row per seed x test point x group size. ``datasets``: "image_folder"
    (``root``; ``root=None`` writes a small synthetic folder of coloured shapes) and/or real
    "mnist" (``dataset_sizes``; after ``make data``). Options: ``datasets``,
    ``dataset_sizes``, ``root``, ``arch``, ``options``,
    ``image_size``, ``per_class``, ``weight_decay``, ``seeds``, ``check_seeds``,
    ``group_sizes``, ``group_repeats``, ``steps``, ``batch_size`` (training mini-batch),
    ``polish_steps``, ``noise_seeds``, ``params``, ``mode``, ``test_points``, ``retrain``.
    """
    o = resolve("group", preset, options)
    notes: list[str] = []
    folders: list[tuple[str, dict[str, Any]]] = []
    for dataset in o["datasets"]:
        if dataset == "image_folder":
            root = o["root"] or synthetic_image_folder(per_class=o["per_class"] or 10)
            folders.append((dataset, {"root": str(root), "image_size": o["image_size"],
                                      "max_per_class": o["per_class"]}))
        elif _available(dataset, _sizes(o, dataset), notes):
            folders.append((dataset, _sizes(o, dataset)))
    ev = EvalCase(params=(o["params"],), group_sizes=tuple(o["group_sizes"]),
                  group_repeats=o["group_repeats"], test_points=tuple(o["test_points"]),
                  truths=(_warm_start(o["retrain"], params=o["params"], mode=o["mode"]),),
                  noise_seeds=o["noise_seeds"])
    o = {**o, "arch_options": {o["arch"]: o["options"]}}
    cases = [Case(_image_model(dataset, o["arch"], o, o["weight_decay"], s, device,
                               data_options, batch_size=o["batch_size"]), ev,
                  {"seed_set": which})
             for dataset, data_options in folders for which, s in seed_sets(o)]
    return _with_notes(_run(cases, "group", progress), notes)


@dataclass(frozen=True)
class NoiseModel:
    """A model of :func:`noise_study`: dataset, depth, width, activation, weight decay and how it
    is trained ("lbfgs": float64 L-BFGS towards a stationary point; "adam": the preset's
    ``steps`` of full-batch Adam then an L-BFGS polish)."""

    dataset: str
    depth: int
    width: int
    activation: str
    weight_decay: float
    recipe: str


NOISE_MODELS: dict[str, NoiseModel] = {
    "iris_tanh": NoiseModel("iris", 1, 5, "tanh", 0.005, "lbfgs"),
    "iris_selu": NoiseModel("iris", 1, 5, "selu", 0.005, "lbfgs"),
    "digits_mlp": NoiseModel("digits", 1, 32, "tanh", 0.01, "adam"),
}


def noise_study(preset: str = "quick", *, device: str | None = None,
                progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (v) on the Iris and digits models: does removing one training point change a
    test loss more than retraining does with nothing removed?

    For each model of ``models`` (names in :data:`NOISE_MODELS`), seed and test point: the
    most helpful, the most harmful and ``group_repeats`` random groups of every size in
    ``group_sizes`` (size 1: single points), each measured by every ground truth of ``truths``
    (registered names: warm-start LOO, LOO from scratch, ...), against real retraining noise
    (``noise_seeds`` retrains from scratch with nothing removed, new initialisation and batch
    order). ``effect_to_noise`` (median |actual| over the noise) below 1 means one point
    changes less than retraining itself does. Options: ``models``, ``seeds``, ``check_seeds``,
    ``group_sizes``, ``group_repeats``, ``noise_seeds``, ``truths``, ``retrain`` (the warm
    starts' schedule), ``test_points``, ``train`` (the Iris models' recipe, see
    ``IRIS_TRAINING``), and for the digits model ``train_size``, ``test_size``, ``steps``.
    """
    o = resolve("noise", preset, options)
    unknown = [m for m in o["models"] if m not in NOISE_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(map(repr, unknown))} for the noise "
                         f"study; valid: {', '.join(NOISE_MODELS)}")
    truths = tuple(_warm_start(o["retrain"]) if t == "warm_start" else Truth(t)
                   for t in o["truths"])
    ev = EvalCase(group_sizes=tuple(o["group_sizes"]), group_repeats=o["group_repeats"],
                  test_points=tuple(o["test_points"]), truths=truths,
                  noise_seeds=o["noise_seeds"])
    cases = []
    for name in o["models"]:
        m = NOISE_MODELS[name]
        sizes = ({"train_size": o["train_size"], "test_size": o["test_size"]}
                 if m.dataset == "digits" else {})
        train = (iris_training(o["train"]) if m.recipe == "lbfgs" else
                 image_training(o["steps"], dtype="float64", polish_steps=500, grad_tol=1e-6))
        cases += [Case(ModelCase(m.dataset, "mlp", m.depth, m.width, m.activation,
                                 m.weight_decay, s, data_options=sizes, train=train,
                                 device=device), ev, {"model": name, "seed_set": which})
                  for which, s in seed_sets(o)]
    return _run(cases, "noise", progress)


def _run(cases: list[Case], study: str, progress: Progress | bool | None) -> pd.DataFrame:
    return run_cases(cases, study=study, progress=progress) if cases else to_table([])


# ----------------------------------------------------------------------------- which ground truth


@dataclass(frozen=True)
class GroundTruthModel:
    """A model of :func:`ground_truth_study`: a tanh MLP with ``depth`` hidden layers of
    ``width`` units (depth 0: logistic regression, convex), trained with ``weight_decay`` by
    ``recipe`` ("lbfgs": float64 L-BFGS to a stationary point; "adam": the preset's ``steps`` of
    full-batch Adam, as the digits models of the weight-decay study). ``damping`` is added to the
    curvature of its LOO and LDS estimates (the digits MLP's Hessian is slightly indefinite at
    its trained parameters); the PBRF estimates use the PBRF damping."""

    dataset: str
    depth: int
    width: int
    weight_decay: float
    recipe: str
    damping: float = 0.0

    @property
    def convex(self) -> bool:
        return self.depth == 0


GROUND_TRUTH_MODELS: dict[str, GroundTruthModel] = {
    "iris_logreg": GroundTruthModel("iris", 0, 0, 0.005, "lbfgs"),
    "iris_mlp": GroundTruthModel("iris", 1, 5, 0.005, "lbfgs"),
    "digits_logreg": GroundTruthModel("digits", 0, 0, 0.01, "lbfgs"),
    "digits_mlp": GroundTruthModel("digits", 1, 32, 0.01, "adam", damping=0.01),
}
#: The ground truths of :func:`ground_truth_study` (registered names), each against the estimate
#: it approximates.
GROUND_TRUTHS = ("warm_start", "lds", "pbrf")


def curvature_aware() -> list[str]:
    """The registered solvers that use the curvature: all but the baselines (identity: none;
    diagonal: its diagonal), read from each solver's ``baseline`` flag."""
    from ..influence.solvers import SOLVERS

    return [name for name, cls in SOLVERS.items() if not cls.baseline]


#: The bar exact and CG must clear (mean Spearman minus 2 SE) on the Iris models, every truth.
IRIS_BAR = 0.7


def ground_truth_study(preset: str = "quick", *, device: str | None = None,
                       progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Which ground truth? Every solver against three registered ground truths, on the same
    models and test points (one :class:`Case` per model and seed, through the shared core):

    * ``warm_start``: warm-start leave-one-out retraining of all layers (``retrain``: the paper's
      protocol) on the ``k`` training points with the largest |estimate| of the first solver,
      compared with the Hessian estimate (the model's damping);
    * ``lds``: the linear datamodeling score (Park et al. 2023): ``n_subsets`` seeded subsets
      keeping ``fraction`` of the training set, each retrained from scratch with the model's own
      schedule; the same estimates, summed over the removed points;
    * ``pbrf``: the proximal Bregman response function (Bae et al. 2022) on the LOO points,
      compared with the estimate it targets: the damped Gauss-Newton one (``curvature="ggn"``,
      damping = ``pbrf_damping``; the factored solvers fit a Fisher in every column, so only
      their damping changes).

    With ``noise_seeds`` each truth has its noise floor: real retraining randomness (the model
    retrained from scratch under new seeds, its own schedule); ``spread_to_noise`` is the
    standard deviation of the actual effects compared over it. One row per model x seed x test
    point x solver x ground truth (column ``model`` after the standard ones). Options:
    ``models`` (names in :data:`GROUND_TRUTH_MODELS`), ``seeds``, ``solvers``, ``test_points``
    (a rule: "highest", "median", "random") and ``n_test``, ``k``, ``n_subsets``, ``fraction``,
    ``retrain``, ``pbrf_damping``, ``noise_seeds``, ``lissa_steps``, ``lissa_batch``,
    ``arnoldi_rank``, and for the digits models ``train_size``, ``test_size``, ``steps``.
    Summaries: :func:`ground_truth_comparison` (beside dattri's published figures) and
    :func:`ground_truth_claims`.
    """
    o = resolve("ground_truth", preset, options)
    unknown = [m for m in o["models"] if m not in GROUND_TRUTH_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(map(repr, unknown))} for the ground_truth "
                         f"study; valid: {', '.join(GROUND_TRUTH_MODELS)}")
    cases = [Case(ground_truth_model_case(name, seed, o, device),
                  _ground_truth_eval(o, GROUND_TRUTH_MODELS[name]),
                  {"model": name, "seed_set": which})
             for name in o["models"] for which, seed in seed_sets(o)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "H is indefinite", RuntimeWarning)
        return run_cases(cases, study="ground_truth", progress=progress)


def _ground_truth_eval(o: dict[str, Any], m: GroundTruthModel) -> EvalCase:
    """The evaluation of :func:`ground_truth_study`: its solvers against LOO, LDS and PBRF."""
    solver_options = {"cg": {"tol": 1e-10, "max_iter": 2000},
                      "lissa": {"steps": o["lissa_steps"], "batch_size": o["lissa_batch"]},
                      "arnoldi": {"rank": o["arnoldi_rank"]}}
    truths = (Truth("warm_start", retrain=dict(o["retrain"])),
              Truth("lds", settings={"fraction": o["fraction"]}, k=o["n_subsets"]),
              Truth("pbrf", retrain=dict(o["retrain"]),
                    settings={"pbrf_damping": o["pbrf_damping"]}))
    return EvalCase(solvers=tuple(o["solvers"]), solver_options=solver_options,
                    damping=m.damping, k=o["k"], test_points=(o["test_points"],),
                    n_test=o["n_test"], truths=truths, noise_seeds=o["noise_seeds"])


def ground_truth_model_case(name: str, seed: int, options: dict[str, Any],
                            device: str | None = None) -> ModelCase:
    """The :class:`ModelCase` of model ``name`` of :data:`GROUND_TRUTH_MODELS` under the resolved
    preset ``options`` (``steps``, ``train_size``, ``test_size`` of the digits models)."""
    m = GROUND_TRUTH_MODELS[name]
    adam = m.recipe == "adam"
    train = image_training(options["steps"], dtype="float64") if adam else iris_training()
    sizes = ({"train_size": options["train_size"], "test_size": options["test_size"]}
             if m.dataset == "digits" else {})
    return ModelCase(m.dataset, "mlp", m.depth, m.width or None, "tanh", m.weight_decay, seed,
                     data_options=sizes, train=train, device=device)


def ground_truth_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model x ground truth x solver: mean Spearman, its sd and standard error over seeds and
    test points, ``n``, the mean fraction of actual effects within the noise floor and the median
    spread of the actual effects over it."""
    g = table.groupby(["model", "truth", "solver"], sort=False)
    out = g.agg(spearman=("spearman", "mean"), spearman_sd=("spearman", "std"),
                n=("spearman", "count"), frac_within_noise=("frac_within_noise", "mean"),
                spread_to_noise=("spread_to_noise", "median"),
                rel_error=("rel_error", "mean")).reset_index()
    out.insert(5, "spearman_se", out["spearman_sd"] / np.sqrt(out["n"]))
    return out


def _short(truth: str) -> str:
    """A registered ground truth's short name for table columns ("LOO", "LDS", "PBRF")."""
    return truth_class(truth).short or truth


def ground_truth_comparison(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The study's one table: a row per solver, a column per model x ground truth ("mean +/- SE"
    of the Spearman correlation over seeds and test points), dattri's published figures beside
    them (literal, as quoted), and a last row with each column's noise floor (mean share of the
    actual effects within it; median spread of the effects over it)."""
    s = ground_truth_summary(table)
    solvers = list(dict.fromkeys(s["solver"]))
    cols = list(dict.fromkeys(zip(s["model"], s["truth"])))
    out = pd.DataFrame(index=pd.Index([*solvers, "noise floor"], name="solver"),
                       columns=pd.MultiIndex.from_tuples([(m, _short(t)) for m, t in cols]),
                       dtype=object)
    for r in s.itertuples(index=False):
        se = "" if not np.isfinite(r.spearman_se) else f" ± {r.spearman_se:.{digits}f}"
        out.loc[r.solver, (r.model, _short(r.truth))] = f"{r.spearman:.{digits}f}{se}"
    for (model, truth), g in s.groupby(["model", "truth"], sort=False):
        within, spread = g["frac_within_noise"].mean(), g["spread_to_noise"].median()
        out.loc["noise floor", (model, _short(truth))] = (
            "—" if not np.isfinite(spread) else f"{within:.0%} within; spread {spread:.3g}x")
    ref = DATTRI_REFERENCE.set_index(["model", "solver"])
    for model in ("logistic regression", "MLP"):
        column = ("dattri (reference, as published)", f"MNIST {model}: LOO / LDS")
        for solver in solvers:
            if (model, solver) in ref.index:
                loo, lds = ref.loc[(model, solver), ["loo", "lds"]]
                out.loc[solver, column] = f"{loo} / {lds or '—'}"
        out[column] = out[column].fillna("")
    return out.fillna("")


def _gt_rows(table: pd.DataFrame, truth: str, solver: str,
             models: list[str] | None = None) -> pd.DataFrame:
    sel = table[(table["truth"] == truth) & (table["solver"] == solver)]
    return sel if models is None else sel[sel["model"].isin(models)]


def ground_truth_claims(table: pd.DataFrame) -> list[claims_mod.Claim]:
    """What the ground-truth study's table says about each published claim, with the trained
    model as the unit (test points averaged within a model; seeds that reached the same minimum
    count once), two-sided verdicts, judged on the preset and the check seeds. Claims whose
    solvers or models are not in the table are left out."""
    cm = claims_mod
    models = list(dict.fromkeys(table["model"]))
    iris = [m for m in models if GROUND_TRUTH_MODELS[m].dataset == "iris"]
    nonconvex = [m for m in models if not GROUND_TRUTH_MODELS[m].convex]
    solvers = list(dict.fromkeys(table["solver"]))
    out: list[cm.Claim | None] = []
    if iris and {"exact", "cg"} & set(solvers):
        # the weakest of (Iris model, truth, exact or CG) must clear the bar
        combos = [(m, t, s) for m in iris for t in dict.fromkeys(table.truth)
                  for s in ("exact", "cg") if s in solvers]
        levels = [cm.level("ground_truth", f"bar:{m}:{t}:{s}", f"{m}, {_short(t)}, {s}",
                           _gt_rows(table, t, s, [m]), above=IRIS_BAR) for m, t, s in combos]
        worst = min(levels, key=lambda c: c.value - 2 * (c.se if np.isfinite(c.se) else 1e9))
        held = all(c.main.verdict == cm.HELD for c in levels)
        held_check = all(c.check is not None and c.check.verdict == cm.HELD for c in levels)
        main = cm.Estimate(worst.value, worst.se, worst.sd, worst.n,
                           cm.HELD if held else cm.NOT_REPRODUCED, worst.n_seeds)
        check = None if worst.check is None else cm.Estimate(
            worst.check.value, worst.check.se, worst.check.sd, worst.check.n,
            cm.HELD if held_check else cm.NOT_REPRODUCED, worst.check.n_seeds)
        out.append(cm.Claim("ground_truth", "iris_bar",
                            f"On the Iris models ({', '.join(iris)}) exact and CG agree with "
                            f"every ground truth: the weakest ({worst.what}) mean Spearman, bar "
                            f"{IRIS_BAR}", f"every combination mean - 2 SE > {IRIS_BAR}", main,
                            check, note="Koh & Liang 2017; dattri (logistic regression)",
                            excluded=worst.excluded))
    if "identity" in solvers:
        for s in curvature_aware():
            if s in solvers:
                out.append(cm.difference(
                    "ground_truth", f"identity_lds:{s}", f"LDS of {s} minus identity (all "
                    "models)", _gt_rows(table, "lds", s), _gt_rows(table, "lds", "identity"),
                    paired=True, note="Kronfluence/TRAK: curvature beats gradient dot products"))
        if "exact" in solvers:
            out.append(cm.difference(
                "ground_truth", "identity_loo:exact", "LOO Spearman of exact minus identity (all "
                "models)", _gt_rows(table, "warm_start", "exact"),
                _gt_rows(table, "warm_start", "identity"), paired=True))
    if {"exact", "arnoldi"} <= set(solvers):
        for key, truth in (("loo", "warm_start"), ("lds", "lds")):
            out.append(cm.difference(
                "ground_truth", f"arnoldi_below:{key}", f"{_short(truth)} of exact minus Arnoldi "
                f"(all models; dattri: {'0.61' if key == 'loo' else '0.49'} on logistic "
                "regression)", _gt_rows(table, truth, "exact"), _gt_rows(table, truth, "arnoldi"),
                paired=True, note=DATTRI_SOURCE))
    if {"exact", "lissa"} <= set(solvers):
        for key, truth in (("loo", "warm_start"), ("lds", "lds")):
            d = cm.difference("ground_truth", f"lissa_close:{key}", f"{_short(truth)} of exact "
                              "minus LiSSA (all models; dattri: 0.01)",
                              _gt_rows(table, truth, "exact"), _gt_rows(table, truth, "lissa"),
                              paired=True)

            def close(e: cm.Estimate | None) -> cm.Estimate | None:
                if e is None:
                    return None
                ok = e.n >= cm.MIN_MODELS and abs(e.value) + 2 * e.se < 0.05
                far = e.n >= cm.MIN_MODELS and abs(e.value) - 2 * e.se > 0.05
                return cm.Estimate(e.value, e.se, e.sd, e.n, cm.HELD if ok else cm.REVERSED
                                   if far else cm.NOT_REPRODUCED, e.n_seeds)

            out.append(cm.Claim(d.study, d.key, d.what, "|difference| + 2 SE < 0.05 (reversed: "
                                "|difference| - 2 SE > 0.05)", close(d.main), close(d.check),
                                note=DATTRI_SOURCE, excluded=d.excluded))
    for model in nonconvex:
        best = max((cm.level("ground_truth", "", "", _gt_rows(table, "warm_start", s, [model]))
                    for s in solvers), key=lambda c: -math.inf if not np.isfinite(c.value)
                   else c.value)
        s = next(s for s in solvers if cm.level("ground_truth", "", "", _gt_rows(
            table, "warm_start", s, [model])).value == best.value)
        c = cm.level("ground_truth", f"mlp_loo_collapse:{model}", f"{model} (warm-start LOO): "
                     f"the best solver's ({s}) Spearman; dattri: every method's LOO correlation "
                     f"<= {DATTRI_MLP_LOO_MAX} on the MNIST MLP",
                     _gt_rows(table, "warm_start", s, [model]), below=DATTRI_MLP_LOO_MAX)
        out.append(cm.Claim(c.study, c.key, c.what, c.rule, c.main, c.check, c.kind,
                            DATTRI_SOURCE + " (MLP)", c.excluded))
    if nonconvex and "exact" in solvers:
        out.append(cm.difference(
            "ground_truth", "pbrf_over_loo", "Exact estimate: Spearman with PBRF (damped GGN) "
            f"minus with LOO (Hessian), non-convex models ({', '.join(nonconvex)})",
            _gt_rows(table, "pbrf", "exact", nonconvex),
            _gt_rows(table, "warm_start", "exact", nonconvex), paired=True,
            note="Bae et al. 2022"))
    if "exact" in solvers:
        rows = _gt_rows(table, "warm_start", "exact")
        if rows["frac_within_noise"].notna().any():
            c = cm.level("ground_truth", "loo_within_noise", "Single-point LOO effects within "
                         "real retraining noise (share of |actual| below it)", rows,
                         "frac_within_noise", above=0.5)
            out.append(cm.Claim(c.study, c.key, c.what, c.rule, c.main, c.check, c.kind,
                                "K & Sogaard 2022", c.excluded))
    return [c for c in out if c is not None]


def ground_truth_conclusion(table: pd.DataFrame) -> list[str]:
    """What the reader should conclude, one sentence per claim, computed from the table."""
    claims = ground_truth_claims(table)
    n_models, n_seeds = table["model"].nunique(), table["seed"].nunique()
    n_points = table.groupby(["model", "seed"])["test_index"].nunique().max()
    lines = [f"From {n_models} model kind(s) x {n_seeds} seed(s) x {n_points} test point(s); "
             "every number is a mean ± its standard error over trained models (test points "
             "averaged within a model)."]
    lines += [c.sentence + "." for c in claims]
    s = ground_truth_summary(table)
    means = s.pivot_table(index=["model", "solver"], columns="truth", values="spearman",
                          sort=False)
    agree = []
    for other in ("lds", "pbrf"):
        if {"warm_start", other} <= set(means.columns):
            rho = {m: g["warm_start"].corr(g[other], method="spearman")
                   for m, g in means.groupby(level="model", sort=False) if len(g) > 2}
            agree.append(f"LOO vs {_short(other)}: " + ", ".join(f"{m} {r:.2f}"
                                                                   for m, r in rho.items()))
    if agree:
        lines.append(f"Do the ground truths order the solvers alike? Rank correlation across the "
                     f"{s['solver'].nunique()} solvers of their mean Spearman (descriptive, no "
                     f"standard error): " + "; ".join(agree) + ".")
    return lines


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Study:
    """A study: its function, the finding it shows and the columns its summary groups by."""

    name: str
    func: Callable[..., pd.DataFrame]
    finding: str
    by: tuple[str, ...]

    @property
    def presets(self) -> list[str]:
        return preset_names(self.name)

    def __call__(self, preset: str = "quick", **kwargs: Any) -> pd.DataFrame:
        return self.func(preset, **kwargs)


STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("depth", depth_study, "(i) estimates are accurate for shallow networks, poor for deep "
          "ones; weight decay matters", ("activation", "weight_decay", "depth")),
    Study("width", width_study, "(i) accuracy against network width",
          ("activation", "weight_decay", "width")),
    Study("weight_decay", weight_decay_study, "(ii) weight decay is needed for good estimates "
          "on some architectures (a factorial: schedule x weight decay x damping)",
          ("dataset", "arch", "schedule", "weight_decay", "damping")),
    Study("architecture", architecture_study, "(i) CNN architectures from small to VGG/ResNet",
          ("dataset", "arch", "solver")),
    Study("test_point", test_point_study, "(iii) accuracy varies strongly with the test point",
          ("activation", "depth", "test_point")),
    Study("solver", solver_study, "(iv) LiSSA adds error, more so for deeper networks",
          ("depth", "solver")),
    Study("validation", validation_study, "how much fragility is the ground truth itself: "
          "last-layer vs full LOO, PBRF, noise floor", ("depth", "params", "truth",
                                                         "loo_params", "curvature")),
    Study("group", group_study, "(v) single points and groups against the retraining noise "
          "floor", ("dataset", "arch", "weight_decay", "group_size")),
    Study("noise", noise_study, "(v) on Iris and digits: one point's effect against real "
          "retraining noise, beside group effects", ("model", "truth", "group_size")),
    Study("ground_truth", ground_truth_study, "which ground truth: every solver against LOO, "
          "LDS and PBRF, beside dattri's published figures", ("model", "truth", "solver")),
)}


def get_study(name: str) -> Study:
    """A study by name (clear error listing the valid names)."""
    try:
        return STUDIES[name]
    except KeyError:
        raise ValueError(f"unknown study {name!r}; valid names: {', '.join(STUDIES)}") from None


def run_study(name: str, preset: str = "quick", **kwargs: Any) -> pd.DataFrame:
    """Run study ``name`` under ``preset``; keyword arguments as for the study function."""
    return get_study(name)(preset, **kwargs)
