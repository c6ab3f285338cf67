"""The reference figures of PAPER.md, printed beside our numbers (never used to tune them)."""

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
}


def reference_notes(study: str) -> list[str]:
    """What PAPER.md reports for ``study`` (empty for unknown names)."""
    return list(_NOTES.get(study, []))
