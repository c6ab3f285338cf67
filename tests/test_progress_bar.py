"""The training bar (``train(..., progress=True)``) ends complete when L-BFGS converges early.

Issue: the quickstart's first cell left a frozen red tqdm bar ("2% 50/2000") after training
stopped at convergence: a closed ``tqdm.notebook`` bar with ``n < total`` is drawn as failed.
"""

from __future__ import annotations

import pytest
import torch
import tqdm.auto

from influence_widgets.datasets import iris
from influence_widgets.models.architectures import mlp_spec
from influence_widgets.models.training import TrainConfig, train

SPEC = mlp_spec((4,), 3, depth=1, width=5)
MAX_STEPS = 2000

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    d = iris()
    return d.X_train.double(), d.y_train


def _config(**kw) -> TrainConfig:
    base = {
        "optimizer": "lbfgs",
        "lr": 1.0,
        "steps": MAX_STEPS,
        "weight_decay": 0.005,
        "dtype": "float64",
        "device": "cpu",
    }
    return TrainConfig(**{**base, **kw})


def _recording(monkeypatch, base):
    """Patch ``tqdm.auto.tqdm`` (what ``train`` imports) with ``base``, recording the bars."""
    bars = []

    class Recording(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    return bars


def test_terminal_bar_is_complete_after_early_convergence(data, monkeypatch, capsys):
    from tqdm.std import tqdm as std_tqdm

    bars = _recording(monkeypatch, std_tqdm)
    tm = train(SPEC, data, _config(), progress=True)
    steps = tm.diagnostics["steps"]
    assert tm.converged and 0 < steps < MAX_STEPS  # the case of the issue: stopped early
    (bar,) = bars
    assert bar.n == bar.total == steps
    assert f"converged at step {steps}" in bar.desc
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{steps}/{steps}" in last and "100%" in last, last
    assert f"/{MAX_STEPS}" not in last, last


def test_notebook_bar_is_green_not_red_after_early_convergence(data, monkeypatch, capsys):
    pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm as notebook_tqdm

    bars = _recording(monkeypatch, notebook_tqdm)
    tm = train(SPEC, data, _config(), progress=True)
    steps = tm.diagnostics["steps"]
    assert 0 < steps < MAX_STEPS
    (bar,) = bars
    _, widget, _ = bar.container.children
    assert widget.bar_style == "success", widget.bar_style  # "danger" is the red bar
    assert widget.value == widget.max == steps
    assert bar.container.layout.visibility != "hidden"


def test_bar_stays_marked_failed_when_training_fails(data, monkeypatch, capsys):
    pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm as notebook_tqdm

    bars = _recording(monkeypatch, notebook_tqdm)
    X, y = data
    X = X.clone()
    X[0, 0] = float("nan")  # the training loss becomes NaN: training raises
    with pytest.raises(FloatingPointError):
        train(SPEC, (X, y), _config(optimizer="adam", lr=0.01, steps=50), progress=True)
    (bar,) = bars
    _, widget, _ = bar.container.children
    assert widget.bar_style == "danger"
    assert bar.n < bar.total


def test_full_length_runs_end_complete_too(data, monkeypatch, capsys):
    from tqdm.std import tqdm as std_tqdm

    bars = _recording(monkeypatch, std_tqdm)
    tm = train(SPEC, data, _config(optimizer="adam", lr=0.01, steps=30), progress=True)
    (bar,) = bars
    assert bar.n == bar.total == tm.diagnostics["steps"] == 30
    assert bar.desc == "training"
    assert torch.isfinite(torch.tensor(tm.diagnostics["objective"]))
