"""Named settings of every study: ``tiny`` (tests, seconds), ``quick`` (CI notebooks, about a
minute on two CPU cores) and ``paper`` (the full grid, meant for a GPU).

Each preset is a plain dict of the study function's keyword options, so a notebook can print it
and override any entry (``depth_study("quick", seeds=(0, 1, 2))``).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from ..models import TrainConfig

#: Iris training recipes. "lbfgs": float64 L-BFGS towards a stationary point (the zoo's recipe up
#: to depth 3), the same optimiser at every depth so that depth is the only thing that changes;
#: "adam": the zoo's recipe for deeper nets (Adam, then an L-BFGS polish).
#: "budget": a fixed budget (full-batch Adam, lr 0.01, 100 steps) for the arms WITHOUT weight
#: decay: trained to stationarity, those nets reach the separable-data regime (objective ~1e-9,
#: training accuracy 1.0, top Hessian eigenvalue ~1e-6: a degenerate model whose "estimate" is a
#: scaled gradient dot product); 100 Adam steps stop short of it at every depth 1-8 (objective
#: 2e-3 to 0.2 on Iris SELU), at the price of a gradient norm of 1e-2 to 0.15 (not stationary)
#: and an indefinite Hessian, which the tables report beside the correlation.
IRIS_TRAINING = {
    "lbfgs": TrainConfig.preset("exact", grad_tol=1e-5),
    "adam": TrainConfig.preset("adam", grad_tol=1e-5),
    "budget": TrainConfig(optimizer="adam", lr=0.01, steps=100, dtype="float64", grad_tol=1e-5),
}


def iris_training(recipe: str = "lbfgs") -> TrainConfig:
    """How the Iris MLPs of the studies are trained (see :data:`IRIS_TRAINING`)."""
    try:
        return IRIS_TRAINING[recipe]
    except KeyError:
        raise ValueError(f"unknown training recipe {recipe!r}; valid: "
                         f"{', '.join(IRIS_TRAINING)}") from None


#: Warm-start retraining for leave-one-out (Koh & Liang): Adam from the trained parameters for a
#: fixed number of full-batch steps, compared with a control retrain that removes nothing.
LOO_QUICK = {"optimizer": "adam", "lr": 1e-3, "steps": 300, "polish_steps": 0}
LOO_PAPER = {"optimizer": "adam", "lr": 1e-3, "steps": 2000, "polish_steps": 0}
LOO_TINY = {"optimizer": "adam", "lr": 1e-3, "steps": 50, "polish_steps": 0}

_IMAGE_TRAIN = {"optimizer": "adam", "lr": 1e-2, "polish_steps": 0, "grad_tol": 1e-4}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "depth": {
        "tiny": dict(depths=(1, 2), weight_decays=(0.005,), activations=("tanh",), seeds=(0,),
                     width=5, k=10, test_points=("highest",), retrain=LOO_TINY, train="lbfgs", train_no_wd="budget"),
        # 8 seeds: the claimed differences (depth 1 vs 8 with weight decay; with vs without
        # weight decay) then exceed twice their standard error (3 seeds did not).
        "quick": dict(depths=(1, 2, 4, 8), weight_decays=(0.005, 0.0), activations=("selu",),
                      seeds=tuple(range(8)), width=5, k=40, test_points=("highest",), retrain=LOO_QUICK,
                      train="lbfgs", train_no_wd="budget"),
        "paper": dict(depths=(1, 2, 3, 4, 6, 8), weight_decays=(0.005, 0.0),
                      activations=("selu", "tanh"), seeds=tuple(range(20)), width=5, k=40,
                      test_points=("highest",), retrain=LOO_PAPER, train="lbfgs", train_no_wd="budget"),
    },
    "width": {
        "tiny": dict(widths=(5, 10), weight_decays=(0.005,), activations=("tanh",), seeds=(0,),
                     depth=1, k=10, test_points=("highest",), retrain=LOO_TINY, train="lbfgs", train_no_wd="budget"),
        "quick": dict(widths=(5, 20, 50), weight_decays=(0.005,), activations=("selu", "tanh"),
                      seeds=(0,), depth=1, k=40, test_points=("highest",), retrain=LOO_QUICK,
                      train="lbfgs", train_no_wd="budget"),
        "paper": dict(widths=(5, 10, 20, 30, 40, 50), weight_decays=(0.005, 0.0),
                      activations=("selu", "tanh"), seeds=tuple(range(20)), depth=1, k=40,
                      test_points=("highest",), retrain=LOO_PAPER, train="lbfgs", train_no_wd="budget"),
    },
    # Both arms in float64 (CG in float32 failed on round-off where H + damping I is positive
    # definite). Without weight decay the nets are trained for ``steps_no_wd`` steps: trained as
    # long as the weight-decay arm they overfit (objective ~1e-4) and the Hessian vanishes (its
    # top eigenvalue near the damping, so the "inverse" is about I / damping and the estimate a
    # gradient dot product); the study checks top eigenvalue >= 10 x damping.
    "weight_decay": {
        "tiny": dict(datasets=("digits",), archs=("mlp",), weight_decays=(0.01, 0.0),
                     solvers=("cg",), seeds=(0,), k=8, train_size=150, test_size=50, steps=200,
                     steps_no_wd=50, damping=0.01, lissa_steps=100, lissa_batch=None,
                     arch_options={}, retrain={**LOO_TINY, "steps": 30}),
        "quick": dict(datasets=("digits",), archs=("mlp", "small_cnn"), weight_decays=(0.01, 0.0),
                      solvers=("cg", "lissa"), seeds=(0, 1, 2), k=20, train_size=200,
                      test_size=100, steps=500, steps_no_wd=100, damping=0.005, lissa_steps=300,
                      lissa_batch=64, arch_options={}, retrain={**LOO_QUICK, "steps": 100}),
        "paper": dict(datasets=("digits", "mnist"), archs=("mlp", "small_cnn"),
                      weight_decays=(0.01, 0.001, 0.0), solvers=("cg", "lissa"),
                      seeds=tuple(range(5)), k=40, train_size=5000, test_size=1000, steps=5000,
                      steps_no_wd=500, damping=0.01, lissa_steps=2000, lissa_batch=128,
                      arch_options={"small_cnn": {"channels": 16}}, retrain=LOO_PAPER),
    },
    # One common solver (CG) for every architecture, damping above the most negative Hessian
    # eigenvalue of the quick models (about -0.02 for the VGG-style net) so H + damping I is
    # positive definite; the exact solve beside it where affordable (``exact_max_params``) for
    # the solvers' error; a solver that fails stays in the table as failed.
    "architecture": {
        "tiny": dict(dataset="digits_images", archs=("small_cnn",), weight_decay=0.01, seeds=(0,),
                     solvers=("cg",), lissa_steps=100, lissa_batch=None, k=8, train_size=150,
                     test_size=50, steps=150, damping=0.01, exact_max_params=2000,
                     arch_options={}, retrain={**LOO_TINY, "steps": 30}),
        "quick": dict(dataset="digits_images", archs=("small_cnn", "lenet5", "vgg"),
                      weight_decay=0.01, seeds=(0, 1, 2), solvers=("cg", "lissa"),
                      lissa_steps=300, lissa_batch=64, k=20, train_size=150, test_size=100,
                      steps=500, damping=0.05, exact_max_params=2000, arch_options={},
                      retrain={**LOO_QUICK, "steps": 100}),
        "paper": dict(dataset="cifar10", archs=("small_cnn", "vgg", "resnet18"),
                      weight_decay=0.001, seeds=tuple(range(3)), solvers=("cg", "lissa"),
                      lissa_steps=2000, lissa_batch=128, k=40, train_size=10000,
                      test_size=2000, steps=8000, damping=0.01, exact_max_params=0,
                      retrain=LOO_PAPER,
                      arch_options={"small_cnn": {"channels": 32},
                                    "vgg": {"depth": 6, "width": 32}}),
    },
    "test_point": {
        "tiny": dict(depths=(1,), weight_decay=0.005, activations=("tanh",), seeds=(0,),
                     test_points=("highest", "median"), k=10, retrain=LOO_TINY, train="lbfgs"),
        "quick": dict(depths=(1, 4), weight_decay=0.005, activations=("selu", "tanh"),
                      seeds=(0, 1), test_points=("highest", "median", "random"), k=40,
                      retrain=LOO_QUICK, train="lbfgs"),
        "paper": dict(depths=(1, 2, 4, 8), weight_decay=0.005, activations=("selu", "tanh"),
                      seeds=tuple(range(10)), test_points=("highest", "median", "random"), k=40,
                      retrain=LOO_PAPER, train="lbfgs"),
    },
    "solver": {
        "tiny": dict(depths=(1, 2), weight_decay=0.005, activation="tanh", seeds=(0,),
                     solvers=("exact", "cg", "lissa", "arnoldi"), damping=0.001,
                     lissa_steps=100, lissa_batch=None, arnoldi_rank=10, train="lbfgs"),
        "quick": dict(depths=(1, 2, 4, 8), weight_decay=0.005, activation="tanh",
                      seeds=(0, 1, 2), solvers=("exact", "cg", "lissa", "arnoldi"), damping=0.001,
                      lissa_steps=300, lissa_batch=32, arnoldi_rank=20, train="lbfgs"),
        "paper": dict(depths=(1, 2, 3, 4, 6, 8), weight_decay=0.005, activation="tanh",
                      seeds=tuple(range(10)), solvers=("exact", "cg", "lissa", "arnoldi"),
                      damping=0.001, lissa_steps=1000, lissa_batch=32, arnoldi_rank=20,
                      train="lbfgs"),
    },
    "validation": {
        "tiny": dict(depths=(1,), weight_decay=0.005, activation="tanh", seeds=(0,), k=10,
                     modes=("warm_start",), noise_seeds=2, retrain=LOO_TINY, train="lbfgs"),
        "quick": dict(depths=(1, 8), weight_decay=0.005, activation="selu", seeds=(0, 1, 2),
                      k=25,
                      modes=("warm_start", "pbrf"), noise_seeds=3, retrain=LOO_QUICK,
                      train="lbfgs"),
        "paper": dict(depths=(1, 2, 4, 8), weight_decay=0.005, activation="selu",
                      seeds=tuple(range(10)), k=25, modes=("warm_start", "scratch", "pbrf"),
                      noise_seeds=5, retrain=LOO_PAPER, train="lbfgs"),
    },
    # Finding (v). Scratch retraining with mini-batches (batch order and initialisation are real
    # retraining randomness); one row per group size. Quick: 5 seeds x 2 test points; group
    # sizes 1 (single points), 4 and 16 of 45 training images.
    "group": {
        "tiny": dict(root=None, arch="small_cnn", options={"channels": 4}, image_size=8,
                     per_class=8, weight_decay=0.01, seeds=(0,), group_sizes=(1, 2),
                     group_repeats=1, steps=60, batch_size=8, noise_seeds=2, params="all",
                     mode="scratch", test_points=("highest",), retrain={}),
        "quick": dict(root=None, arch="small_cnn", options={"channels": 4}, image_size=12,
                      per_class=20, weight_decay=0.01, seeds=tuple(range(5)),
                      group_sizes=(1, 4, 16), group_repeats=3, steps=200, batch_size=16,
                      noise_seeds=4, params="all", mode="scratch",
                      test_points=("highest", "median"), retrain={}),
        "paper": dict(root=None, arch="resnet18", options={"norm": "group"}, image_size=32,
                      per_class=None, weight_decay=0.001, seeds=tuple(range(5)),
                      group_sizes=(1, 5, 10, 25, 50), group_repeats=5, steps=3000,
                      batch_size=64, noise_seeds=5, params="last_layer", mode="scratch",
                      test_points=("highest", "median", "random"), retrain={}),
    },
    # Which ground truth? Models by name (studies.GROUND_TRUTH_MODELS); the ``n_test``
    # highest-loss test points of each; LOO and PBRF on the ``k`` largest |exact estimates|, LDS
    # on ``n_subsets`` seeded subsets keeping ``fraction`` of the data (retrained from scratch);
    # ``train_size``/``test_size``/``steps``: the digits models' data and Adam steps.
    "ground_truth": {
        "tiny": dict(models=("iris_mlp",), seeds=(0,),
                     solvers=("exact", "cg", "arnoldi", "identity"), test_points="highest",
                     n_test=2, k=8, n_subsets=6, fraction=0.5, retrain=LOO_TINY,
                     pbrf_damping=1e-3, noise_seeds=2, lissa_steps=50, lissa_batch=None,
                     arnoldi_rank=10, train_size=150, test_size=50, steps=200),
        # about 70 s of CPU (notebook 08: 100-110 s on the shared two-core CPU); each claim of
        # the notebook pools 3 models x 2 seeds x 4 test points (the Iris one: 2 x 2 x 4)
        "quick": dict(models=("iris_logreg", "iris_mlp", "digits_mlp"), seeds=(0, 1),
                      solvers=("exact", "cg", "lissa", "arnoldi", "kfac", "ekfac", "identity",
                               "diagonal"), test_points="highest", n_test=4, k=24, n_subsets=24,
                      fraction=0.5, retrain={**LOO_QUICK, "steps": 100}, pbrf_damping=1e-3,
                      noise_seeds=3, lissa_steps=300, lissa_batch=64, arnoldi_rank=20,
                      train_size=300, test_size=100, steps=500),
        "paper": dict(models=("iris_logreg", "iris_mlp", "digits_logreg", "digits_mlp"),
                      seeds=tuple(range(5)),
                      solvers=("exact", "cg", "lissa", "arnoldi", "kfac", "ekfac", "identity",
                               "diagonal"), test_points="highest", n_test=10, k=40, n_subsets=100,
                      fraction=0.5, retrain=LOO_PAPER, pbrf_damping=1e-3, noise_seeds=5,
                      lissa_steps=1000, lissa_batch=64, arnoldi_rank=50, train_size=1000,
                      test_size=300, steps=2000),
    },
}


def preset_names(study: str) -> list[str]:
    """The presets a study has."""
    return list(_study_presets(study))


def resolve(study: str, preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The options of ``study`` under ``preset`` with ``overrides`` applied (validated)."""
    presets = _study_presets(study)
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for study {study!r}; valid: "
                         f"{', '.join(presets)}")
    options = deepcopy(presets[preset])
    unknown = sorted(set(overrides) - set(options))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for study {study!r}; valid: "
                         f"{', '.join(sorted(options))}")
    options.update({k: v for k, v in overrides.items() if v is not None})
    seeds = options.get("seeds")
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive number of seeds (e.g. 3 runs seeds 0, 1, 2) "
                             f"or a tuple of seeds, got {seeds}")
        options["seeds"] = tuple(range(seeds))
    elif "seeds" in options and not options["seeds"]:
        raise ValueError("seeds is empty: give at least one seed, e.g. seeds=(0,) or seeds=3")
    return options


def image_training(steps: int, **changes: Any) -> TrainConfig:
    """Full-batch Adam for the small image models of the studies."""
    return TrainConfig(**{**_IMAGE_TRAIN, "steps": steps, **changes})


def _study_presets(study: str) -> dict[str, dict[str, Any]]:
    try:
        return PRESETS[study]
    except KeyError:
        raise ValueError(f"unknown study {study!r}; valid names: {', '.join(PRESETS)}") from None
