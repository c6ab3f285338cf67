"""Named settings of every study: ``tiny`` (unit tests, seconds), ``ci`` (the notebooks in CI:
a slim grid that exercises every computation in about a minute on two loaded CPU cores; its
verdicts mean little and CI never asserts them), ``quick`` (the grid whose verdicts the README
reports: at least 5 models per arm on each of two disjoint seed sets, minutes on a CPU) and
``paper`` (the full grid, meant for a GPU).

Every preset has ``seeds`` and ``check_seeds``, two disjoint sets: each claim is judged on both
and reads "unstable" where they disagree. Each preset is a plain dict of the study function's
keyword options, so a notebook can print it and override any entry
(``depth_study("quick", seeds=(0, 1, 2))``).
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
    # the same L-BFGS run further: the stationarity limit is relative to the objective, and
    # deep nets need more iterations to get there
    "stationary": TrainConfig.preset("exact", steps=5000, grad_tol=1e-6),
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

_CHECK = tuple(range(10, 15))  # the check seeds of every quick preset (never used elsewhere)
_QUICK = tuple(range(5))

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Finding (i) by depth. Both weight-decay arms are trained the same way (float64 L-BFGS
    # to stationarity): without weight decay that reaches the separable regime (degenerate but
    # stationary, reported as such). Tanh nets reach a stationary point; SELU (the replication's
    # activation) stops on a kink: its models are reported apart, never pooled into a finding.
    "depth": {
        "tiny": dict(depths=(1, 2), weight_decays=(0.005,), activations=("tanh",), seeds=(0,),
                     check_seeds=(), width=5, k=10, test_points=("highest",), retrain=LOO_TINY,
                     train="lbfgs", train_no_wd="lbfgs"),
        "ci": dict(depths=(1, 4), weight_decays=(0.005, 0.0), activations=("tanh",),
                   seeds=(0, 1), check_seeds=(10, 11), width=5, k=20, test_points=("highest",),
                   retrain=LOO_TINY, train="lbfgs", train_no_wd="lbfgs"),
        "quick": dict(depths=(1, 2, 4, 8), weight_decays=(0.005, 0.0),
                      activations=("tanh", "selu"), seeds=_QUICK, check_seeds=_CHECK, width=5,
                      k=40, test_points=("highest",), retrain=LOO_QUICK, train="stationary",
                      train_no_wd="stationary"),
        "paper": dict(depths=(1, 2, 3, 4, 6, 8), weight_decays=(0.005, 0.0),
                      activations=("selu", "tanh"), seeds=tuple(range(20)),
                      check_seeds=tuple(range(100, 120)), width=5, k=40,
                      test_points=("highest",), retrain=LOO_PAPER, train="stationary",
                      train_no_wd="stationary"),
    },
    "width": {
        "tiny": dict(widths=(5, 10), weight_decays=(0.005,), activations=("tanh",), seeds=(0,),
                     check_seeds=(), depth=1, k=10, test_points=("highest",), retrain=LOO_TINY,
                     train="lbfgs", train_no_wd="lbfgs"),
        "ci": dict(widths=(5, 50), weight_decays=(0.005,), activations=("tanh",), seeds=(0, 1),
                   check_seeds=(10, 11), depth=1, k=20, test_points=("highest",),
                   retrain=LOO_TINY, train="lbfgs", train_no_wd="lbfgs"),
        "quick": dict(widths=(5, 20, 50), weight_decays=(0.005,), activations=("tanh", "selu"),
                      seeds=_QUICK, check_seeds=_CHECK, depth=1, k=40, test_points=("highest",),
                      retrain=LOO_QUICK, train="stationary", train_no_wd="stationary"),
        "paper": dict(widths=(5, 10, 20, 30, 40, 50), weight_decays=(0.005, 0.0),
                      activations=("selu", "tanh"), seeds=tuple(range(20)),
                      check_seeds=tuple(range(100, 120)), depth=1, k=40,
                      test_points=("highest",), retrain=LOO_PAPER, train="stationary",
                      train_no_wd="stationary"),
    },
    # Finding (ii) as a factorial: the same schedule for both weight-decay arms (each schedule
    # in ``schedules``: a fixed Adam budget, or float64 L-BFGS "to stationarity"), weight decay
    # in ``weight_decays``, and each estimate at every estimation damping in ``dampings``
    # (damping the no-weight-decay estimate tells how much of the effect lives in the
    # estimator). A difference is judged only where both arms match on stationarity. Tanh MLPs
    # on the 8x8 digits, all in float64.
    "weight_decay": {
        "tiny": dict(datasets=("digits",), archs=("mlp",), weight_decays=(0.005, 0.0),
                     schedules=("adam:100",), dampings=(0.0,), solvers=("cg",), seeds=(0,),
                     check_seeds=(), k=8, train_size=150, test_size=50, dataset_sizes={},
                     width=16,
                     lissa_steps=100, lissa_batch=None, arch_options={},
                     retrain={**LOO_TINY, "steps": 30}),
        "ci": dict(datasets=("digits", "mnist"), archs=("mlp",), weight_decays=(0.005, 0.0),
                   schedules=("adam:100", "stationary"), dampings=(0.0, 0.005),
                   solvers=("cg",), seeds=(0,), check_seeds=(10,), k=10, train_size=150,
                   test_size=50, dataset_sizes={"mnist": (150, 50)}, width=16,
                   lissa_steps=100, lissa_batch=None, arch_options={},
                   retrain={**LOO_TINY, "steps": 30}),
        # real MNIST beside the 8x8 digits: a seeded subset of 1,000 28x28 images (CG: the exact
        # Hessian of a 784-32-10 MLP would take 5 GB)
        "quick": dict(datasets=("digits", "mnist"), archs=("mlp",), weight_decays=(0.005, 0.0),
                      schedules=("adam:100", "adam:500", "stationary"), dampings=(0.0, 0.005),
                      solvers=("cg",), seeds=_QUICK, check_seeds=_CHECK, k=20,
                      train_size=200, test_size=100, dataset_sizes={"mnist": (1000, 300)},
                      width=32, lissa_steps=300, lissa_batch=64, arch_options={},
                      retrain={**LOO_QUICK, "steps": 100}),
        "paper": dict(datasets=("digits", "mnist"), archs=("mlp",), weight_decays=(0.005, 0.0),
                      schedules=("adam:100", "adam:1000", "stationary"), dampings=(0.0, 0.005),
                      solvers=("cg", "lissa"), seeds=tuple(range(10)),
                      check_seeds=tuple(range(100, 110)), k=40, train_size=5000,
                      test_size=1000, dataset_sizes={}, width=128, lissa_steps=2000,
                      lissa_batch=128, arch_options={}, retrain=LOO_PAPER),
    },
    # Finding (i) beyond MLPs: smooth variants (tanh, average pooling) so that a stationary
    # point exists, polished with float64 L-BFGS; one common solver (CG, damping above the most
    # negative eigenvalue), the exact solve beside it where affordable; architectures ordered by
    # their parameter count.
    "architecture": {
        "tiny": dict(datasets=("digits_images",), archs=("small_cnn",), weight_decay=0.01,
                     seeds=(0,), check_seeds=(), solvers=("cg",), lissa_steps=100,
                     lissa_batch=None, k=8, train_size=150, test_size=50, dataset_sizes={},
                     steps=150, polish_steps=0, damping=0.01, exact_max_params=2000,
                     arch_options={}, retrain={**LOO_TINY, "steps": 30}),
        "ci": dict(datasets=("digits_images", "mnist"), archs=("small_cnn", "vgg"),
                   weight_decay=0.01, seeds=(0,), check_seeds=(10,), solvers=("cg",),
                   lissa_steps=100, lissa_batch=None, k=8, train_size=120, test_size=50,
                   dataset_sizes={"mnist": (60, 30)}, steps=200, polish_steps=100,
                   damping=0.01, exact_max_params=700,
                   arch_options={"small_cnn": {"channels": 4}, "vgg": {"width": 4}},
                   retrain={**LOO_TINY, "steps": 30}),
        # real MNIST beside the 8x8 digits: seeded subsets of 300 28x28 images
        "quick": dict(datasets=("digits_images", "mnist"), archs=("small_cnn", "vgg", "lenet5"),
                      weight_decay=0.01, seeds=_QUICK, check_seeds=_CHECK,
                      solvers=("cg", "lissa"), lissa_steps=300, lissa_batch=64, k=20,
                      train_size=150, test_size=100, dataset_sizes={"mnist": (300, 100)},
                      steps=500, polish_steps=1000, damping=0.01, exact_max_params=2000,
                      arch_options={}, retrain={**LOO_QUICK, "steps": 100}),
        "paper": dict(datasets=("cifar10",), archs=("small_cnn", "vgg", "resnet18"),
                      weight_decay=0.001, seeds=tuple(range(3)), check_seeds=(100, 101, 102),
                      solvers=("cg", "lissa"), lissa_steps=2000, lissa_batch=128, k=40,
                      train_size=10000, test_size=2000, dataset_sizes={}, steps=8000,
                      polish_steps=0,
                      damping=0.01, exact_max_params=0, retrain=LOO_PAPER,
                      arch_options={"small_cnn": {"channels": 32},
                                    "vgg": {"depth": 6, "width": 32}}),
    },
    "test_point": {
        "tiny": dict(depths=(1,), weight_decay=0.005, activations=("tanh",), seeds=(0,),
                     check_seeds=(), test_points=("highest", "median"), k=10, retrain=LOO_TINY,
                     train="lbfgs"),
        "ci": dict(depths=(1,), weight_decay=0.005, activations=("tanh",), seeds=(0, 1),
                   check_seeds=(10, 11), test_points=("highest", "median", "random"), k=20,
                   retrain=LOO_TINY, train="lbfgs"),
        "quick": dict(depths=(1, 4), weight_decay=0.005, activations=("tanh", "selu"),
                      seeds=_QUICK, check_seeds=_CHECK,
                      test_points=("highest", "median", "random"), k=40, retrain=LOO_QUICK,
                      train="stationary"),
        "paper": dict(depths=(1, 2, 4, 8), weight_decay=0.005, activations=("selu", "tanh"),
                      seeds=tuple(range(10)), check_seeds=tuple(range(100, 110)),
                      test_points=("highest", "median", "random"), k=40, retrain=LOO_PAPER,
                      train="stationary"),
    },
    "solver": {
        "tiny": dict(depths=(1, 2), weight_decay=0.005, activation="tanh", seeds=(0,),
                     check_seeds=(), solvers=("exact", "cg", "lissa", "arnoldi"), damping=0.001,
                     lissa_steps=100, lissa_batch=None, arnoldi_rank=10, train="lbfgs"),
        "ci": dict(depths=(1, 2), weight_decay=0.005, activation="tanh", seeds=(0,),
                   check_seeds=(10,), solvers=("exact", "cg", "lissa", "arnoldi"),
                   damping=0.001, lissa_steps=200, lissa_batch=32, arnoldi_rank=10,
                   train="lbfgs"),
        "quick": dict(depths=(1, 2, 4, 8), weight_decay=0.005, activation="tanh", seeds=_QUICK,
                      check_seeds=_CHECK, solvers=("exact", "cg", "lissa", "arnoldi"),
                      damping=0.001, lissa_steps=300, lissa_batch=32, arnoldi_rank=20,
                      train="stationary"),
        "paper": dict(depths=(1, 2, 3, 4, 6, 8), weight_decay=0.005, activation="tanh",
                      seeds=tuple(range(10)), check_seeds=tuple(range(100, 110)),
                      solvers=("exact", "cg", "lissa", "arnoldi"), damping=0.001,
                      lissa_steps=1000, lissa_batch=32, arnoldi_rank=20, train="stationary"),
    },
    "validation": {
        "tiny": dict(depths=(1,), weight_decay=0.005, activation="tanh", seeds=(0,),
                     check_seeds=(), k=10, modes=("warm_start",), noise_seeds=2,
                     retrain=LOO_TINY, train="lbfgs"),
        "ci": dict(depths=(1,), weight_decay=0.005, activation="tanh", seeds=(0,),
                   check_seeds=(10,), k=10, modes=("warm_start", "pbrf"), noise_seeds=2,
                   retrain=LOO_TINY, train="lbfgs"),
        "quick": dict(depths=(1, 4), weight_decay=0.005, activation="tanh", seeds=_QUICK,
                      check_seeds=_CHECK, k=25, modes=("warm_start", "pbrf"), noise_seeds=3,
                      retrain=LOO_QUICK, train="stationary"),
        "paper": dict(depths=(1, 2, 4, 8), weight_decay=0.005, activation="selu",
                      seeds=tuple(range(10)), check_seeds=tuple(range(100, 110)), k=25,
                      modes=("warm_start", "scratch", "pbrf"), noise_seeds=5,
                      retrain=LOO_PAPER, train="stationary"),
    },
    # Finding (v). Scratch retraining with mini-batches (batch order and initialisation are real
    # retraining randomness), then a full-batch float64 L-BFGS polish so that every model and
    # retrain ends at a stationary point; one row per group size.
    "group": {
        "tiny": dict(datasets=("image_folder",), dataset_sizes={}, root=None, arch="small_cnn",
                     options={"channels": 4}, image_size=8,
                     per_class=8, weight_decay=0.01, seeds=(0,), check_seeds=(),
                     group_sizes=(1, 2), group_repeats=1, steps=60, batch_size=8, polish_steps=0,
                     noise_seeds=2, params="all", mode="scratch", test_points=("highest",),
                     retrain={}),
        "ci": dict(datasets=("image_folder", "mnist"), dataset_sizes={"mnist": (60, 20)},
                   root=None, arch="small_cnn", options={"channels": 4, "activation": "tanh",
                                                         "pool": "avg"},
                   image_size=8, per_class=10, weight_decay=0.01, seeds=(0,), check_seeds=(10,),
                   group_sizes=(1, 8), group_repeats=2, steps=80, batch_size=10,
                   polish_steps=100, noise_seeds=2, params="all", mode="scratch",
                   test_points=("highest",), retrain={}),
        "quick": dict(datasets=("image_folder", "mnist"), dataset_sizes={"mnist": (300, 100)},
                      root=None, arch="small_cnn", options={"channels": 4, "activation": "tanh",
                                                            "pool": "avg"},
                      image_size=12, per_class=20, weight_decay=0.01, seeds=_QUICK,
                      check_seeds=_CHECK, group_sizes=(1, 4, 16), group_repeats=3, steps=200,
                      batch_size=16, polish_steps=300, noise_seeds=4, params="all",
                      mode="scratch", test_points=("highest", "median"), retrain={}),
        "paper": dict(datasets=("image_folder", "mnist"), dataset_sizes={"mnist": (5000, 1000)},
                      root=None, arch="resnet18", options={"norm": "group"}, image_size=32,
                      per_class=None, weight_decay=0.001, seeds=tuple(range(5)),
                      check_seeds=tuple(range(100, 105)), group_sizes=(1, 5, 10, 25, 50),
                      group_repeats=5, steps=3000, batch_size=64, polish_steps=0, noise_seeds=5,
                      params="last_layer", mode="scratch",
                      test_points=("highest", "median", "random"), retrain={}),
    },
    # Finding (v) on the Iris and digits models: single-point effects (warm start and from
    # scratch) and group effects against real retraining noise (the model retrained from scratch
    # under new seeds). Models by name (studies.NOISE_MODELS).
    "noise": {
        "tiny": dict(models=("iris_tanh",), seeds=(0,), check_seeds=(), group_sizes=(1, 8),
                     group_repeats=1, noise_seeds=2, truths=("warm_start",),
                     retrain=LOO_TINY, test_points=("highest",), train_size=150, test_size=50,
                     steps=200, train="lbfgs"),
        "ci": dict(models=("iris_tanh",), seeds=(0,), check_seeds=(10,),
                   group_sizes=(1, 8, 32), group_repeats=2, noise_seeds=2,
                   truths=("warm_start", "scratch"), retrain=LOO_TINY,
                   test_points=("highest",), train_size=150, test_size=50, steps=200,
                   train="lbfgs"),
        "quick": dict(models=("iris_tanh", "iris_selu", "digits_mlp"), seeds=_QUICK,
                      check_seeds=_CHECK, group_sizes=(1, 8, 32), group_repeats=3,
                      noise_seeds=3, truths=("warm_start", "scratch"), retrain=LOO_QUICK,
                      test_points=("highest",), train_size=300, test_size=100, steps=500,
                      train="stationary"),
        "paper": dict(models=("iris_tanh", "iris_selu", "digits_mlp"),
                      seeds=tuple(range(10)), check_seeds=tuple(range(100, 110)),
                      group_sizes=(1, 8, 32, 64), group_repeats=5, noise_seeds=5,
                      truths=("warm_start", "scratch", "minibatch"), retrain=LOO_PAPER,
                      test_points=("highest", "median"), train_size=1000, test_size=300,
                      steps=2000, train="stationary"),
    },
    # Which ground truth? Models by name (studies.GROUND_TRUTH_MODELS); the ``n_test``
    # highest-loss test points of each; LOO and PBRF on the ``k`` largest |exact estimates|, LDS
    # on ``n_subsets`` seeded subsets keeping ``fraction`` of the data (retrained from scratch);
    # ``train_size``/``test_size``/``steps``: the digits models' data and Adam steps.
    "ground_truth": {
        "tiny": dict(models=("iris_mlp",), seeds=(0,), check_seeds=(),
                     solvers=("exact", "cg", "arnoldi", "identity"), test_points="highest",
                     n_test=2, k=8, n_subsets=6, fraction=0.5, retrain=LOO_TINY,
                     pbrf_damping=1e-3, noise_seeds=2, lissa_steps=50, lissa_batch=None,
                     arnoldi_rank=10, train_size=150, test_size=50, steps=200),
        "ci": dict(models=("iris_logreg", "iris_mlp"), seeds=(0,), check_seeds=(10,),
                   solvers=("exact", "cg", "lissa", "arnoldi", "identity"),
                   test_points="highest", n_test=2, k=12, n_subsets=8, fraction=0.5,
                   retrain=LOO_TINY, pbrf_damping=1e-3, noise_seeds=2, lissa_steps=100,
                   lissa_batch=None, arnoldi_rank=10, train_size=150, test_size=50, steps=200),
        "quick": dict(models=("iris_logreg", "iris_mlp", "digits_mlp"), seeds=_QUICK,
                      check_seeds=_CHECK,
                      solvers=("exact", "cg", "lissa", "arnoldi", "kfac", "ekfac", "identity",
                               "diagonal"), test_points="highest", n_test=4, k=24, n_subsets=24,
                      fraction=0.5, retrain={**LOO_QUICK, "steps": 100}, pbrf_damping=1e-3,
                      noise_seeds=3, lissa_steps=300, lissa_batch=64, arnoldi_rank=20,
                      train_size=300, test_size=100, steps=500),
        "paper": dict(models=("iris_logreg", "iris_mlp", "digits_logreg", "digits_mlp"),
                      seeds=tuple(range(10)), check_seeds=tuple(range(100, 110)),
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
    check = options.get("check_seeds")
    if isinstance(check, int) and not isinstance(check, bool):
        options["check_seeds"] = tuple(range(100, 100 + check))
    overlap = set(options.get("seeds", ())) & set(options.get("check_seeds", ()))
    if overlap:
        raise ValueError(f"seeds and check_seeds must be disjoint (each claim is judged on both "
                         f"as independent sets); both contain {sorted(overlap)}")
    return options


def seed_sets(options: dict[str, Any]) -> list[tuple[str, int]]:
    """``(seed set, seed)`` for every seed of a resolved preset: its ``seeds`` ("preset") then
    its ``check_seeds`` ("check")."""
    return ([("preset", s) for s in options["seeds"]]
            + [("check", s) for s in options.get("check_seeds", ())])


def image_training(steps: int, **changes: Any) -> TrainConfig:
    """Full-batch Adam for the small image models of the studies."""
    return TrainConfig(**{**_IMAGE_TRAIN, "steps": steps, **changes})


def _study_presets(study: str) -> dict[str, dict[str, Any]]:
    try:
        return PRESETS[study]
    except KeyError:
        raise ValueError(f"unknown study {study!r}; valid names: {', '.join(PRESETS)}") from None
