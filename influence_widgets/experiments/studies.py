"""The paper's studies as thin grids over :func:`~.core.run_cases`; each returns a tidy table.

Every study takes a preset name (``"tiny"``, ``"quick"``, ``"paper"``; see :mod:`.presets`), any
preset option as a keyword override, ``device`` and ``progress`` (a callback
``(done, total, info)`` or ``True`` for a tqdm bar). Same options -> same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .core import Case, EvalCase, ModelCase, Progress, Truth, load_data, run_cases, to_table
from .presets import image_training, iris_training, preset_names, resolve
from .synthetic import synthetic_image_folder

IRIS_SOLVER_OPTIONS = {"cg": {"tol": 1e-10, "max_iter": 2000}}
#: Options of the small image models (overridable per study with ``arch_options``).
ARCH_OPTIONS: dict[str, dict[str, Any]] = {
    "mlp": {},
    "small_cnn": {"channels": 8},
    "lenet5": {},
    "vgg": {"depth": 4, "width": 8},
    "resnet18": {"norm": "group"},
}


def _iris_model(depth: int, width: int, activation: str, weight_decay: float, seed: int,
                recipe: str, device: str | None) -> ModelCase:
    return ModelCase("iris", "mlp", depth, width, activation, weight_decay, seed,
                     train=iris_training(recipe), device=device)


def _warm_start(retrain: dict[str, Any], params: str = "all", mode: str = "warm_start") -> Truth:
    return Truth(mode=mode, params=params, retrain=dict(retrain))


def _iris_grid(study: str, o: dict[str, Any], ev: EvalCase, depths, widths, activations,
               weight_decays, device: str | None, progress: Progress | bool | None) -> pd.DataFrame:
    cases = [Case(_iris_model(d, w, a, wd, s, o["train"] if wd else o.get("train_no_wd", o["train"]),
                              device), ev)
             for a in activations for wd in weight_decays for d in depths for w in widths
             for s in o["seeds"]]
    return run_cases(cases, study=study, progress=progress)


# ----------------------------------------------------------------------------- (i) depth, width


def depth_study(preset: str = "quick", *, device: str | None = None,
                progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (i): Iris MLPs of growing depth (width fixed), with and without weight decay.

    Nets with weight decay are trained with ``train`` (float64 L-BFGS to a stationary point);
    nets without it with ``train_no_wd`` (default "budget": 100 Adam steps), since trained to
    stationarity they reach the degenerate separable-data regime (see ``IRIS_TRAINING``).
    Exact estimate over all parameters, warm-start LOO of all layers on the ``k`` training points
    with the largest ``|estimate|``, highest-loss test point. Options: ``depths``,
    ``weight_decays``, ``activations``, ``seeds``, ``width``, ``k``, ``test_points``,
    ``retrain`` (LOO TrainConfig changes), ``train`` and ``train_no_wd`` (training recipes, see
    ``IRIS_TRAINING``).
    """
    o = resolve("depth", preset, options)
    ev = EvalCase(k=o["k"], test_points=tuple(o["test_points"]),
                  truths=(_warm_start(o["retrain"]),))
    return _iris_grid("depth", o, ev, o["depths"], (o["width"],), o["activations"],
                      o["weight_decays"], device, progress)


def width_study(preset: str = "quick", *, device: str | None = None,
                progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (i): one-hidden-layer Iris MLPs of growing width (protocol of :func:`depth_study`).

    Options: ``widths``, ``weight_decays``, ``activations``, ``seeds``, ``depth``, ``k``,
    ``test_points``, ``retrain``, ``train``, ``train_no_wd``.
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

    Options: ``depths``, ``weight_decay``, ``activations``, ``seeds``, ``test_points``, ``k``,
    ``retrain``, ``train``.
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
    ``activation``, ``seeds``, ``solvers``, ``damping``, ``lissa_steps``, ``lissa_batch``
    (training points per LiSSA step; ``None``: all, deterministic), ``arnoldi_rank``, ``train``.
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
    against full-network and last-layer retraining (and PBRF), with the retraining noise floor.

    Options: ``depths``, ``weight_decay``, ``activation``, ``seeds``, ``k``, ``modes``
    (retraining modes: "warm_start", "scratch", "pbrf"), ``noise_seeds``, ``retrain``,
    ``train``.
    """
    o = resolve("validation", preset, options)
    truths = tuple(_warm_start(o["retrain"], params, mode) for mode in o["modes"]
                   for params in ("all", "last_layer") if not (mode == "pbrf" and params != "all"))
    ev = EvalCase(params=("all", "last_layer"), k=o["k"], truths=truths,
                  noise_seeds=o["noise_seeds"], noise_mode="warm_start")
    return _iris_grid("validation", o, ev, o["depths"], (5,), (o["activation"],),
                      (o["weight_decay"],), device, progress)


# ----------------------------------------------------------------------------- (ii) weight decay


def _image_model(dataset: str, arch: str, o: dict[str, Any], weight_decay: float, seed: int,
                 device: str | None, data_options: dict[str, Any]) -> ModelCase:
    mlp = arch == "mlp"
    if dataset == "digits" and not mlp:
        dataset = "digits_images"
    options = {**ARCH_OPTIONS.get(arch, {}), **o.get("arch_options", {}).get(arch, {})}
    dtype = "float64" if mlp else "float32"  # conv nets: float32 for speed, LOO in the same dtype
    return ModelCase(dataset, arch, 1 if mlp else None, 32 if mlp else None,
                     "tanh" if mlp else None, weight_decay, seed,
                     options={} if mlp else options, data_options=data_options,
                     train=image_training(o["steps"], dtype=dtype), device=device)


def _available(dataset: str, data_options: dict[str, Any], notes: list[str]) -> bool:
    """Whether ``dataset`` can be loaded; if not, a note says why it was skipped."""
    try:
        load_data(dataset, **data_options)
    except FileNotFoundError as e:
        notes.append(f"{dataset} skipped: {str(e).splitlines()[0]}")
        return False
    return True


def _image_eval(o: dict[str, Any], solvers: tuple[str, ...]) -> EvalCase:
    options = {"cg": {"tol": 1e-5, "max_iter": 300},
               "lissa": {"steps": o.get("lissa_steps", 300), "batch_size": o.get("lissa_batch")}}
    return EvalCase(solvers=solvers, solver_options=options, damping=o["damping"], k=o["k"],
                    truths=(_warm_start(o["retrain"]),))


def _with_notes(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    df.attrs["notes"] = list(notes)
    return df


def weight_decay_study(preset: str = "quick", *, device: str | None = None,
                       progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (ii): MLP and small CNN on digits (and MNIST when its files are there), with and
    without weight decay, CG and LiSSA estimates (damping as given) against warm-start LOO.

    Missing datasets are skipped with a note in ``table.attrs["notes"]``. Options: ``datasets``,
    ``archs``, ``weight_decays``, ``solvers``, ``seeds``, ``k``, ``train_size``, ``test_size``,
    ``steps``, ``damping``, ``lissa_steps``, ``lissa_batch``, ``arch_options``, ``retrain``.
    """
    o = resolve("weight_decay", preset, options)
    notes: list[str] = []
    sizes = {"train_size": o["train_size"], "test_size": o["test_size"]}
    ev = _image_eval(o, tuple(o["solvers"]))
    cases = [Case(_image_model(ds, arch, o, wd, s, device, sizes), ev)
             for ds in o["datasets"] if _available(ds, sizes, notes)
             for arch in o["archs"] for wd in o["weight_decays"] for s in o["seeds"]]
    return _with_notes(_run(cases, "weight_decay", progress), notes)


# ----------------------------------------------------------------------------- (i) architectures


def architecture_study(preset: str = "quick", *, device: str | None = None,
                       progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (i) beyond MLPs: small CNN, LeNet-5 / VGG-style, ResNet-18 on CIFAR-10 when its
    files are there, else (and in the quick preset) on the 8x8 digits as images.

    CG and LiSSA estimates (with damping) against warm-start LOO; CG stops with an error on an
    indefinite Hessian (recorded in the ``error`` column). Options: ``dataset``, ``archs``,
    ``weight_decay``, ``seeds``, ``solvers``, ``lissa_steps``, ``lissa_batch``, ``k``,
    ``train_size``, ``test_size``, ``steps``, ``damping``, ``arch_options``, ``retrain``.
    """
    o = resolve("architecture", preset, options)
    notes: list[str] = []
    sizes = {"train_size": o["train_size"], "test_size": o["test_size"]}
    dataset = o["dataset"]
    if not _available(dataset, sizes, notes):
        dataset = "digits_images"
        notes.append("using the offline stand-in: 8x8 digits as images")
    ev = _image_eval(o, tuple(o["solvers"]))
    cases = [Case(_image_model(dataset, arch, o, o["weight_decay"], s, device, sizes), ev)
             for arch in o["archs"] for s in o["seeds"]]
    return _with_notes(_run(cases, "architecture", progress), notes)


# ----------------------------------------------------------------------------- (v) groups


def group_study(preset: str = "quick", *, device: str | None = None,
                progress: Progress | bool | None = None, **options: Any) -> pd.DataFrame:
    """Finding (v): removing groups of training points from an image-folder model.

    For each group size: the most helpful, the most harmful and random groups; the group
    estimate is the sum of its members' estimates, compared with retraining without the group
    (``mode``: "scratch" retrains from the same initialisation as the model was trained, so the
    noise floor, retraining with other seeds the same way, is the randomness of training
    itself). ``root=None`` writes a tiny synthetic folder of coloured shapes. Options: ``root``,
    ``arch``, ``options``, ``image_size``, ``per_class``, ``weight_decay``, ``seeds``,
    ``group_sizes``, ``group_repeats``, ``steps``, ``noise_seeds``, ``params``, ``mode``,
    ``retrain``.
    """
    o = resolve("group", preset, options)
    root = o["root"] or synthetic_image_folder(per_class=o["per_class"] or 10)
    data_options = {"root": str(root), "image_size": o["image_size"],
                    "max_per_class": o["per_class"]}
    ev = EvalCase(params=(o["params"],), group_sizes=tuple(o["group_sizes"]),
                  group_repeats=o["group_repeats"],
                  truths=(_warm_start(o["retrain"], mode=o["mode"]),),
                  noise_seeds=o["noise_seeds"], noise_mode=o["mode"])
    o = {**o, "arch_options": {o["arch"]: o["options"]}}
    cases = [Case(_image_model("image_folder", o["arch"], o, o["weight_decay"], s, device,
                               data_options), ev) for s in o["seeds"]]
    return _run(cases, "group", progress)


def _run(cases: list[Case], study: str, progress: Progress | bool | None) -> pd.DataFrame:
    return run_cases(cases, study=study, progress=progress) if cases else to_table([])


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
          "on some architectures", ("dataset", "arch", "solver", "weight_decay")),
    Study("architecture", architecture_study, "(i) CNN architectures from small to VGG/ResNet",
          ("dataset", "arch", "solver")),
    Study("test_point", test_point_study, "(iii) accuracy varies strongly with the test point",
          ("activation", "depth", "test_point")),
    Study("solver", solver_study, "(iv) LiSSA adds error, more so for deeper networks",
          ("depth", "solver")),
    Study("validation", validation_study, "how much fragility is the ground truth itself: "
          "last-layer vs full LOO, PBRF, noise floor", ("depth", "params", "loo_mode",
                                                         "loo_params")),
    Study("group", group_study, "(v) group removal and the retraining noise floor",
          ("dataset", "arch", "weight_decay")),
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
