"""influence_widgets: can I trust these influence estimates on this model?

Influence estimates (exact, CG, LiSSA, Arnoldi) side by side with leave-one-out retraining.
"""

from . import datasets, models
from ._cache import cache_dir
from .models import ModelSpec, TrainConfig, TrainedModel, train

__version__ = "0.1.0"

__all__ = ["ModelSpec", "TrainConfig", "TrainedModel", "cache_dir", "datasets", "models", "train"]
