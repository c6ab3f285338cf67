"""A model shared between threads (two explorer visitors, a retrain copying it) is never seen with
its parameters swapped: every ``functional_call`` and forward hook works on a private view.

The probe model's forward looks at the *user's* module while the computation runs: it must still
hold its own ``nn.Parameter`` objects, and ``copy.deepcopy`` of it (what a retrain on another
thread does) must succeed. Before the private views, ``functional_call`` swapped the user's
parameters for non-leaf tensors for the length of each call, and a concurrent deepcopy failed with
"Only Tensors created explicitly by the user (graph leaves) support the deepcopy protocol".
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import influence_widgets as iw
from influence_widgets.models.health import hessian_extremes
from influence_widgets.models.modes import private_view


class Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        user, weight = USER[0], USER[1]
        assert type(user.lin.weight) is nn.Parameter and user.lin.weight is weight, (
            "the user's module has its parameters swapped during a computation")
        copy.deepcopy(user)  # what a retrain on another thread does
        CHECKS.append(1)
        return self.lin(x)


USER: list = []  # (the module the user holds, its weight Parameter): outside the module tree
CHECKS: list[int] = []
pytestmark = pytest.mark.filterwarnings("ignore:gradient norm:RuntimeWarning")  # an untrained probe


@pytest.fixture()
def probe():
    torch.manual_seed(0)
    net = Probe()
    USER[:] = [net, net.lin.weight]
    CHECKS.clear()
    X = torch.randn(12, 3, dtype=torch.float64)
    y = torch.arange(12) % 2
    return net, X, y


def test_private_view_shares_tensors_not_modules(probe):
    net, _, _ = probe
    view = private_view(net)
    assert view is not net and view.lin is not net.lin
    assert view.lin.weight is net.lin.weight and view.lin.bias is net.lin.bias


def test_influence_never_swaps_the_users_parameters(probe):
    net, X, y = probe
    est = iw.influence(net, (X, y), (X[:2], y[:2]), weight_decay=0.1, solver="exact")
    assert est.shape == (2, 12) and torch.isfinite(est).all()
    assert CHECKS  # the probe ran inside the computation
    assert net.lin.weight is USER[1]


def test_the_spectrum_never_swaps_the_users_parameters(probe):
    net, X, y = probe
    CHECKS.clear()
    top, lo = hessian_extremes(net, X, y, loss="cross_entropy", weight_decay=0.1, steps=4)
    assert top >= lo and CHECKS  # the probe ran inside the computation
    assert net.lin.weight is USER[1]
