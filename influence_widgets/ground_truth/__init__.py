"""Ground truth: what estimates are compared with. Registered ground truths (:mod:`.truths`:
leave-one-out warm start, from scratch with paired seeds, mini-batch, last layer, PBRF, the
linear datamodeling score, the exact solve), one sweep runner (:mod:`.runner`), real retraining
noise (:mod:`.noise`), selection."""

from .eta import EstimateETA, SweepETA, estimate_eta, loo_eta, noise_eta, sweep_eta
from .lds import LDSResult, lds
from .loo import leave_group_out, leave_one_out
from .noise import NoiseResult, noise_floor, retraining_noise
from .options import SweepOptions
from .problem import ObjectiveMismatchError, RetrainObjective
from .result import LOOResult
from .selection import all_points, group_estimate, pick_test_points, random_k, top_k
from .store import LOOStore, StoreError
from .sweep import SweepError
from .truths import (
    TRUTHS,
    GroundTruth,
    Target,
    TruthSettings,
    make_truth,
    register_truth,
    truth_class,
    unregister_truth,
)

__all__ = [
    "EstimateETA", "SweepETA", "estimate_eta", "loo_eta", "noise_eta", "sweep_eta",
    "GroundTruth", "LDSResult", "LOOResult", "LOOStore", "NoiseResult", "ObjectiveMismatchError",
    "RetrainObjective", "SweepOptions", "TRUTHS", "Target", "TruthSettings", "all_points",
    "group_estimate", "lds", "leave_group_out", "leave_one_out", "make_truth", "noise_floor",
    "pick_test_points", "random_k", "register_truth", "retraining_noise", "StoreError",
    "SweepError", "top_k", "truth_class", "unregister_truth",
]
