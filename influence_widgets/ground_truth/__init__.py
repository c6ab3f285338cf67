"""Ground truth: leave-one-out and group retraining, PBRF, the retraining noise floor, the linear
datamodeling score (LDS), selection."""

from .eta import EstimateETA, SweepETA, estimate_eta, loo_eta, noise_eta, sweep_eta
from .lds import LDSResult, lds
from .loo import LOOResult, leave_group_out, leave_one_out
from .noise import NoiseResult, noise_floor, retraining_noise
from .options import SweepOptions
from .problem import ObjectiveMismatchError, RetrainObjective
from .selection import all_points, group_estimate, pick_test_points, random_k, top_k
from .store import LOOStore, StoreError
from .sweep import SweepError

__all__ = [
    "EstimateETA", "SweepETA", "estimate_eta", "loo_eta", "noise_eta", "sweep_eta",
    "LDSResult", "LOOResult", "LOOStore", "NoiseResult", "ObjectiveMismatchError", "RetrainObjective",
    "SweepOptions", "all_points", "group_estimate",
    "lds", "leave_group_out", "leave_one_out", "noise_floor", "pick_test_points", "random_k",
    "StoreError", "SweepError", "retraining_noise", "top_k",
]
