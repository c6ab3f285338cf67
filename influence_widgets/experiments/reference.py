"""The reference figures of docs/findings.md, printed beside our numbers (never used to tune them)."""

from __future__ import annotations

import pandas as pd

#: Epifano et al. (Neural Networks 2023), numbers read from its published result files.
REFERENCE_SOURCE = (
    "Epifano et al. 2023 (public replication): Iris, width 5, SELU, weight decay 0.005, exact "
    "last-layer Hessian, warm-start LOO of all layers, 25 highest-training-loss points, "
    "highest-loss test point, 50 seeds"
)
REFERENCE_DEPTH = pd.DataFrame({
    "depth": [1, 2, 4, 8],
    "spearman": [0.66, 0.40, 0.51, 0.40],
    "top_eigenvalue": [1.5, 4.9, 12.0, 24.1],
})
REFERENCE_WEIGHT_DECAY = 0.005
NO_WEIGHT_DECAY_RANGE = (0.02, 0.19)

#: dattri's published benchmark (docs/findings.md), quoted literally: LOO correlation and LDS on MNIST,
#: by our solver name (dattri's "explicit" is our "exact"). "" = not quoted. Its MLP LDS also
#: lists TracIn 0.15 and TRAK-50 0.45, which have no counterpart here.
DATTRI_SOURCE = "dattri's published benchmark (MNIST; LOO correlation / LDS)"
DATTRI_REFERENCE = pd.DataFrame({
    "model": ["logistic regression"] * 4 + ["MLP"] * 4,
    "solver": ["exact", "cg", "lissa", "arnoldi"] * 2,
    "loo": ["0.88", "0.88", "0.87", "0.27", "<= 0.02", "<= 0.02", "<= 0.02", "<= 0.02"],
    "lds": ["0.80", "0.80", "0.79", "0.31", "", "0.26", "0.14", "0.09"],
})
#: dattri: on the MNIST MLP every method's LOO correlation is at most this.
DATTRI_MLP_LOO_MAX = 0.02

_NOTES: dict[str, list[str]] = {
    "depth": [
        REFERENCE_SOURCE + ": mean Spearman 0.66 / 0.40 / 0.51 / 0.40 at depth 1 / 2 / 4 / 8; "
        "top Hessian eigenvalue 1.5 / 4.9 / 12.0 / 24.1.",
        "Without weight decay: mean Spearman 0.02-0.19 at every depth.",
        "With last-layer LOO the depth trend flattens (about 0.48 -> 0.50).",
    ],
    "width": [
        "Basu et al. 2021: accuracy drops as width grows, while the top Hessian eigenvalue grows.",
        "Without weight decay (Epifano et al.): mean Spearman 0.02-0.19.",
    ],
    "weight_decay": [
        "Basu et al. 2021: for some architectures and datasets weight decay is needed for good "
        "estimates (without it the Hessian is badly conditioned or indefinite).",
        "Epifano et al. on Iris: mean Spearman 0.02-0.19 without weight decay, 0.40-0.66 with.",
    ],
    "architecture": [
        "Basu et al. 2021: small CNNs give fair estimates on MNIST; VGG/ResNet on CIFAR-10 poor "
        "ones.",
    ],
    "test_point": [
        "Basu et al. 2021: accuracy varies strongly with the test point (highest-loss vs "
        "median-loss).",
    ],
    "solver": [
        "Basu et al. 2021: LiSSA adds error, more so for deeper networks; the exact Hessian is "
        "affordable only for small models.",
    ],
    "validation": [
        "Epifano et al.: with last-layer LOO the depth trend flattens (about 0.48 -> 0.50): part "
        "of the measured fragility comes from the validation procedure.",
        "Bae et al. 2022: influence functions approximate the PBRF well even where they miss LOO.",
        "K & Sogaard 2022: LOO is unstable under retraining randomness; measure the noise floor.",
    ],
    "group": [
        "Basu et al. 2021: at ImageNet scale one removal changes less than retraining randomness "
        "does; group-level analysis is suggested.",
    ],
    "ground_truth": [
        DATTRI_SOURCE + ": logistic regression - explicit 0.88 / 0.80, CG 0.88 / 0.80, LiSSA "
        "0.87 / 0.79, Arnoldi 0.27 / 0.31; MLP - every method's LOO correlation <= 0.02, LDS CG "
        "0.26, LiSSA 0.14, Arnoldi 0.09, TracIn 0.15, TRAK-50 0.45.",
        "Park et al. 2023 (TRAK): LDS = Spearman correlation, across random half subsets, of the "
        "summed scores of the removed points with the retrained test loss; 50-100 subsets.",
        "Bae et al. 2022: influence functions approximate the PBRF (damped Gauss-Newton estimate, "
        "damping = the PBRF damping) well even where they miss LOO.",
        "K & Sogaard 2022: single-point LOO is unstable under retraining randomness; measure the "
        "noise floor.",
    ],
}


def reference_notes(study: str) -> list[str]:
    """What docs/findings.md reports for ``study`` (empty for unknown names)."""
    return list(_NOTES.get(study, []))


#: How this project's studies measure, to state beside a published figure (the protocols differ).
OUR_PROTOCOL = {
    "depth": "ours: Iris width 5, tanh (stationary) and SELU (reported apart: not stationary), "
             "weight decay 0.005 and 0 trained alike, exact Hessian of ALL layers, warm-start LOO "
             "of all layers on the k largest |estimates|, highest-loss test point, models as "
             "units on two seed sets",
    "ground_truth": "ours: Iris and 8x8-digits models (hundreds of points, not MNIST), exact "
                    "Hessian, 24 LOO points, 24 LDS subsets",
}


def reference_table(study: str) -> pd.DataFrame:
    """The published figures for ``study`` in a table of their own, with the source and the
    protocol behind them (which differs from ours: :data:`OUR_PROTOCOL`). Never drawn on our
    axes or put in our columns. Empty for a study without published figures."""
    if study in ("depth", "width"):
        t = REFERENCE_DEPTH.rename(columns={"spearman": "published Spearman",
                                            "top_eigenvalue": "published top eigenvalue"})
        t["source and protocol"] = (
            "Epifano et al. 2023: SELU, weight decay 0.005, exact LAST-LAYER Hessian, 25 "
            "highest-TRAINING-loss points, warm-start LOO of all layers, 50 seeds; without "
            "weight decay 0.02-0.19 at every depth")
        return t
    if study == "ground_truth":
        t = DATTRI_REFERENCE.rename(columns={"loo": "published LOO", "lds": "published LDS"})
        t["source and protocol"] = DATTRI_SOURCE + ": MNIST (60,000 points)"
        return t
    return pd.DataFrame()
