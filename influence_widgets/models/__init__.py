"""Models: architectures from a ModelSpec, functional training with TrainConfig, and the zoo."""

from .architectures import (
    ACTIVATIONS,
    ARCHITECTURES,
    MLP,
    SMOOTH_ACTIVATIONS,
    ModelSpec,
    check_input_shape,
    count_parameters,
    mlp_spec,
)
from .modes import eval_mode, module_mode
from .training import TrainConfig, TrainedModel, train

__all__ = [
    "ACTIVATIONS", "ARCHITECTURES", "MLP", "SMOOTH_ACTIVATIONS", "ModelSpec", "TrainConfig",
    "TrainedModel", "check_input_shape", "count_parameters", "eval_mode", "mlp_spec",
    "module_mode", "train",
]
