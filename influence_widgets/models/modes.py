"""Module modes (train/eval) set for the length of a ``with`` block, then restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def module_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put ``model`` in training (``True``) or eval mode; restore its own flag afterwards, also
    when the body raises."""
    previous = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(previous)


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Evaluate with batch-norm running statistics and no dropout; restore the flag afterwards."""
    return module_mode(model, False)
