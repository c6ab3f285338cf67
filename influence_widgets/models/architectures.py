"""Architectures, each rebuilt exactly from a small JSON-able :class:`ModelSpec`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .modes import eval_mode

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "selu": nn.SELU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}
SMOOTH_ACTIVATIONS = frozenset({"tanh", "softplus", "gelu", "sigmoid", "silu"})


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; valid names: {', '.join(sorted(ACTIVATIONS))}"
        ) from None


class MLP(nn.Sequential):
    """``depth`` hidden layers of ``width`` units (depth 0 is multinomial logistic regression).

    Image inputs are flattened first. The last ``nn.Linear`` is the "last layer" for
    ``params="last_layer"``.
    """

    def __init__(self, in_features: int, n_classes: int, depth: int = 1, width: int = 5,
                 activation_name: str = "tanh") -> None:
        if depth < 0 or width < 1:
            raise ValueError(f"MLP needs depth >= 0 and width >= 1, got depth={depth}, width={width}")
        layers: list[nn.Module] = [nn.Flatten()]
        d_in = in_features
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), activation(activation_name)]
            d_in = width
        layers.append(nn.Linear(d_in, n_classes))
        super().__init__(*layers)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an architecture: its name, input shape, classes and options."""

    arch: str
    input_shape: tuple[int, ...]
    n_classes: int
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        if self.arch not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.arch!r}; valid names: {', '.join(sorted(ARCHITECTURES))}"
            )
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")

    def build(self, seed: int | None = None) -> nn.Module:
        """A fresh model; with ``seed`` its initial parameters are reproducible."""
        if seed is None:
            return ARCHITECTURES[self.arch](self)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ARCHITECTURES[self.arch](self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(d["arch"], tuple(d["input_shape"]), int(d["n_classes"]), dict(d.get("options", {})))

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.arch}({opts})" if opts else self.arch


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _build_mlp(spec: ModelSpec) -> nn.Module:
    o = spec.options
    return MLP(_numel(spec.input_shape), spec.n_classes, int(o.get("depth", 1)), int(o.get("width", 5)),
               str(o.get("activation", "tanh")))


def _build_cnn_family(spec: ModelSpec) -> nn.Module:
    from . import cnn

    return cnn.build(spec)


ARCHITECTURES: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "mlp": _build_mlp,
    "small_cnn": _build_cnn_family,
    "lenet5": _build_cnn_family,
    "vgg": _build_cnn_family,
    "resnet18": _build_cnn_family,
}


def mlp_spec(input_shape, n_classes: int, depth: int = 1, width: int = 5,
             activation: str = "tanh") -> ModelSpec:
    return ModelSpec("mlp", tuple(input_shape), n_classes,
                     {"depth": depth, "width": width, "activation": activation})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_input_shape(model: nn.Module, X: torch.Tensor, spec: ModelSpec | None = None) -> None:
    """Raise a clear error when ``X`` does not fit the model (checked on one row)."""
    if spec is not None and tuple(X.shape[1:]) != spec.input_shape:
        raise ValueError(
            f"inputs have shape {tuple(X.shape[1:])} per row but the model ({spec.describe()}) "
            f"expects {spec.input_shape}; load the dataset the model was built for"
        )
    try:
        with torch.no_grad(), eval_mode(model):
            model(X[:1])
    except RuntimeError as e:
        raise ValueError(
            f"the model cannot take inputs of shape {tuple(X.shape[1:])} per row ({e}); "
            "check that the model and the dataset match"
        ) from e


class ReinitError(ValueError):
    """A module has parameters that no ``reset_parameters()`` covers: no fresh start can be drawn."""


def reinitialised(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A fresh, seeded initialisation of ``module``'s parameters (``module`` is not edited).

    A copy of the module calls ``reset_parameters()`` on every submodule that has one (PyTorch's
    own initialisers: ``nn.Linear``, ``nn.Conv2d``, norms, ...) under ``torch.manual_seed(seed)``
    in a forked RNG, so the same seed gives the same parameters in any process. A parameter that
    no ``reset_parameters()`` reaches raises :class:`ReinitError` naming it: its initialisation is
    the module's own business, and a fresh start cannot be drawn for it.
    """
    import copy

    work = copy.deepcopy(module).cpu()
    covered: set[str] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for prefix, m in work.named_modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
                covered |= {f"{prefix}.{k}" if prefix else k
                            for k, _ in m.named_parameters(recurse=False)}
    missing = [k for k, _ in work.named_parameters() if k not in covered]
    if missing:
        raise ReinitError(
            f"no reset_parameters() covers the parameter(s) {', '.join(missing[:5])}: a fresh "
            "initialisation cannot be drawn for this model; give its submodules a "
            "reset_parameters() method, or train it with iw.train(spec, ...) so its spec can be "
            "rebuilt with another seed")
    return {k: v.detach().clone() for k, v in work.named_parameters()}
