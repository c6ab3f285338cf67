"""The objective belongs to the model: retraining takes the model's loss and weight decay, a
different one is an error unless asked for (and then recorded); a diverged retrain is NaN with a
finding, never a number that looks like an effect."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import influence_widgets as iw
from influence_widgets.ground_truth import ObjectiveMismatchError, SweepOptions

DT = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wd_model():
    """An Iris-sized MLP trained with weight decay 0.05 (float64, L-BFGS to stationarity)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    X = torch.randn(3, 4, generator=g, dtype=DT)[y] + 0.8 * torch.randn(60, 4, generator=g, dtype=DT)
    yt = torch.arange(9) % 3
    Xt = torch.randn(3, 4, generator=g, dtype=DT)[yt] + torch.randn(9, 4, generator=g, dtype=DT)
    spec = iw.models.architectures.mlp_spec((4,), 3, depth=1, width=5, activation="tanh")
    tm = iw.train(spec, (X, y), iw.TrainConfig.preset("exact", weight_decay=0.05))
    return tm, (X, y), (Xt, yt)


SCHEDULE = iw.TrainConfig(optimizer="adam", lr=1e-3, steps=200)


def test_a_schedule_retrains_under_the_models_objective(wd_model):
    tm, train, test = wd_model
    assert SCHEDULE.weight_decay is None and SCHEDULE.loss is None  # "the model's"
    res = iw.leave_one_out(tm, train, test, [0, 1, 2, 3, 4], config=SCHEDULE, store=None,
                           return_result=True)
    assert res.objective.weight_decay == 0.05 and res.objective.source == "model"
    assert res.info["config"]["weight_decay"] == 0.05
    assert all(f.severity == "info" for f in res.findings)
    # the same as spelling the model's weight decay out
    same = iw.leave_one_out(tm, train, test, [0, 1, 2, 3, 4], store=None,
                            config=SCHEDULE.replace(weight_decay=0.05))
    torch.testing.assert_close(res.values, same, rtol=0, atol=0)


@pytest.mark.parametrize("front", ["leave_one_out", "leave_group_out", "retraining_noise"])
def test_a_different_objective_is_an_error_unless_asked_for(wd_model, front):
    tm, train, test = wd_model
    args = {"leave_one_out": ([0, 1, 2],), "leave_group_out": ([[0, 1], [2, 3]],),
            "retraining_noise": ()}[front]
    fn = getattr(iw.ground_truth, front)
    kw = {"n_seeds": 2} if front == "retraining_noise" else {}
    with pytest.raises(ObjectiveMismatchError, match=r"sets weight_decay=0\.0 but the model was "
                       r"trained with weight_decay=0\.05.*allow_different_objective=True"):
        fn(tm, train, test, *args, config=SCHEDULE.replace(weight_decay=0.0), store=None, **kw)
    with pytest.raises(ObjectiveMismatchError, match="loss='mse'"):
        fn(tm, train, test, *args, config=SCHEDULE.replace(loss="mse"), store=None, **kw)
    with pytest.warns(RuntimeWarning, match="DIFFERENT from the model's"):
        res = fn(tm, train, test, *args, config=SCHEDULE.replace(weight_decay=0.0), store=None,
                 options=SweepOptions(allow_different_objective=True), return_result=True, **kw)
    assert res.objective.differs and res.objective.weight_decay == 0.0
    assert res.objective.model == {"loss": "cross_entropy", "weight_decay": 0.05}
    assert [f.code for f in res.findings if f.code == "objective-mismatch"] == ["objective-mismatch"]


def test_the_widget_and_a_plain_module_say_where_the_objective_came_from(wd_model):
    from influence_widgets.widgets.session import Request, describe_gt, gt_config

    tm, train, test = wd_model
    cfg = gt_config(tm, "warm_start", 50, "cpu")
    assert cfg.weight_decay is None and cfg.loss is None
    res = iw.leave_one_out(tm, train, test, [0, 1, 2], config=cfg, store=None, return_result=True)
    assert "weight decay 0.05 (the model's own)" in describe_gt(Request("m", 0), res.objective)
    plain = iw.leave_one_out(tm.model, train, test, [0, 1, 2], store=None, return_result=True,
                             config=SCHEDULE.replace(weight_decay=0.05))
    assert plain.objective.source == "config" and plain.objective.weight_decay == 0.05
    assert torch.isfinite(plain.values).all()


def test_training_resolves_an_unset_objective():
    X, y = torch.randn(12, 2, dtype=DT), torch.arange(12) % 2
    tm = iw.train(nn.Linear(2, 2).to(DT), (X, y), iw.TrainConfig(steps=3, dtype="float64"))
    assert tm.config.weight_decay == 0.0 and tm.config.loss == "cross_entropy"


def test_a_diverged_retrain_is_nan_with_a_finding(wd_model):
    tm, train, test = wd_model
    blow_up = SCHEDULE.replace(lr=1e6, steps=50)
    with pytest.warns(RuntimeWarning, match="diverged"):
        res = iw.leave_one_out(tm, train, test, [0, 1, 2], config=blow_up, store=None,
                               return_result=True)
    assert torch.isnan(res.values).all() and bool(res.diverged.all())
    assert {f.code for f in res.findings} & {"control-diverged", "retrain-diverged"}
    est = iw.influence(tm, train, test)[:, :3]
    with pytest.raises(ValueError, match="diverged retrain"):
        iw.compare(est[0], res.values[0])


def test_compare_can_leave_nan_pairs_out():
    est = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    act = torch.tensor([0.1, float("nan"), 0.3, 0.5, 0.4])
    out = iw.compare(est, act, drop_nan=True, n_boot=0)
    assert out["n"] == 4 and out["n_excluded"] == 1 and "1 pair(s) with NaN left out" in out["note"]


def test_a_healthy_sweep_warns_about_nothing(wd_model):
    tm, train, test = wd_model
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = iw.leave_one_out(tm, train, test, [0, 1], config=SCHEDULE, store=None,
                               return_result=True)
    assert not torch.isnan(res.values).any() and not bool(res.diverged.any())


def test_the_noise_floor_of_pbrf_has_no_control_and_works(wd_model):
    tm, train, test = wd_model
    res = iw.ground_truth.retraining_noise(tm, train, test, config=SCHEDULE, mode="pbrf",
                                           n_seeds=2, store=None, return_result=True)
    assert res.values.shape == (9, 2) and torch.isfinite(res.std).all()


def test_a_plain_modules_unset_weight_decay_is_assumed_out_loud(wd_model):
    tm, train, test = wd_model
    with pytest.warns(RuntimeWarning, match="ASSUMED"):
        res = iw.leave_one_out(tm.model, train, test, [0, 1, 2], config=SCHEDULE, store=None,
                               return_result=True)
    assert res.objective.source == "assumed" and "objective-assumed" in {f.code for f in res.findings}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        given = iw.leave_one_out(tm.model, train, test, [0, 1, 2], store=None, return_result=True,
                                 config=SCHEDULE.replace(weight_decay=0.05))
    assert given.objective.source == "config"
