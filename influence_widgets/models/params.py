"""Which parameters an estimate or a retrain covers: "all", "last_layer" or a list of names."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ParamSelection = str | Sequence[str]


def select_params(model: nn.Module, params: ParamSelection = "all") -> list[str]:
    """Names of the selected trainable parameters, in the model's order.

    ``"last_layer"`` is every parameter of the last submodule that owns parameters directly
    (the classifier ``nn.Linear`` in every bundled architecture).
    """
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    if isinstance(params, str):
        if params == "all":
            return trainable
        if params == "last_layer":
            owners = [(name, m) for name, m in model.named_modules()
                      if any(True for _ in m.parameters(recurse=False))]
            prefix, last = owners[-1]
            names = [f"{prefix}.{n}" if prefix else n for n, p in last.named_parameters(recurse=False)
                     if p.requires_grad]
            return names
        raise ValueError(f"params must be 'all', 'last_layer' or a list of names, got {params!r}")
    names = list(params)
    unknown = [n for n in names if n not in trainable]
    if unknown or not names:
        raise ValueError(
            f"unknown or empty parameter names {unknown}; trainable parameters are: {', '.join(trainable)}"
        )
    return [n for n in trainable if n in set(names)]


def describe_params(params: ParamSelection) -> str:
    """A stable text label of a selection, recorded with every result."""
    return params if isinstance(params, str) else ",".join(params)
