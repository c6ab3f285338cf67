"""Training engine: determinism, the objective by hand, optimisers, steps, NaN and input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from influence_widgets.datasets import iris
from influence_widgets.models.architectures import mlp_spec
from influence_widgets.models.modes import eval_mode, module_mode
from influence_widgets.models.training import (
    Copies,
    TrainConfig,
    TrainingObjective,
    fit_copies,
    state_of,
    train,
)

SPEC = mlp_spec((4,), 3, depth=1, width=5)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    d = iris()
    return d.X_train.double(), d.y_train


def cfg(**kw) -> TrainConfig:
    base = {"optimizer": "adam", "lr": 0.01, "steps": 100, "dtype": "float64", "device": "cpu"}
    return TrainConfig(**{**base, **kw})


def objective_by_hand(model: nn.Module, X, y, wd: float) -> torch.Tensor:
    loss = F.cross_entropy(model(X), y)
    return loss + 0.5 * wd * sum((p**2).sum() for p in model.parameters())


def params(tm) -> list[torch.Tensor]:
    return [p.detach().clone() for p in tm.model.parameters()]


def test_same_seed_is_bit_identical_and_other_seed_differs(data):
    a, b = train(SPEC, data, cfg(seed=3)), train(SPEC, data, cfg(seed=3))
    c = train(SPEC, data, cfg(seed=4))
    assert all(torch.equal(p, q) for p, q in zip(params(a), params(b)))
    assert a.diagnostics["objective"] == b.diagnostics["objective"]
    assert not any(torch.equal(p, q) for p, q in zip(params(a), params(c)))


def test_objective_and_grad_norm_match_hand_computation(data):
    X, y = data
    wd = 0.02
    tm = train(SPEC, data, cfg(weight_decay=wd, steps=150))
    model = tm.model
    obj = objective_by_hand(model, X, y, wd)
    grads = torch.autograd.grad(obj, list(model.parameters()))
    gn = math.sqrt(sum(float((g**2).sum()) for g in grads))
    obj = obj.detach()
    assert tm.diagnostics["objective"] == pytest.approx(float(obj), rel=1e-12)
    assert tm.diagnostics["grad_norm"] == pytest.approx(gn, rel=1e-9)
    # the weight-decay term is really in there
    with torch.no_grad():
        assert float(obj) - float(F.cross_entropy(model(X), y)) > 1e-3


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.5), ("adam", 0.01), ("lbfgs", 1.0)])
def test_each_optimizer_reduces_the_objective(data, optimizer, lr):
    X, y = data
    tm = train(SPEC, data, cfg(optimizer=optimizer, lr=lr, steps=50, weight_decay=0.01))
    start = SPEC.build(seed=0).double()
    start.load_state_dict(tm.init_params)
    with torch.no_grad():
        before = float(objective_by_hand(start, X, y, 0.01))
    assert tm.diagnostics["objective"] < before - 0.1


def test_epochs_and_batch_size_give_the_number_of_steps(data):
    calls: list[int] = []
    config = cfg(optimizer="sgd", lr=0.1, steps=None, epochs=3, batch_size=32)
    tm = train(SPEC, data, config, progress=lambda step, total, info: calls.append(step))
    assert config.n_steps(120) == 3 * 4  # ceil(120 / 32) = 4 batches per epoch
    assert tm.diagnostics["steps"] == 12
    assert calls == list(range(1, 13))


def test_polish_steps_reduce_the_gradient_norm(data):
    rough = train(SPEC, data, cfg(steps=50, weight_decay=0.005))
    polished = train(SPEC, data, cfg(steps=50, weight_decay=0.005, polish_steps=200))
    assert polished.grad_norm < 1e-3 * rough.grad_norm
    assert polished.diagnostics["objective"] < rough.diagnostics["objective"]


def test_lbfgs_float64_iris_reaches_a_stationary_point(data):
    tm = train(SPEC, data, TrainConfig.preset("exact", weight_decay=0.005, device="cpu"))
    assert tm.grad_norm < 1e-5
    assert tm.converged
    assert tm.diagnostics["seconds"] < 20  # a few seconds; generous for loaded machines


def test_lbfgs_does_not_stop_before_converging_on_deeper_nets(data):
    spec = mlp_spec((4,), 3, depth=4, width=5)
    tm = train(spec, data, TrainConfig.preset("exact", weight_decay=0.005, device="cpu"))
    assert tm.grad_norm < 1e-5


def test_lbfgs_copies_trained_together_match_copies_trained_alone(data):
    """Stacked L-BFGS copies (each its own history, steps and stop) land where each copy
    trained alone lands; every copy ends under grad_tol. (Alone, a copy runs without vmap, so
    the paths differ in rounding: both stop within grad_tol / lambda_min ~ 2e-7 of the same
    minimiser.)"""
    X, y = data
    config = TrainConfig.preset("exact", weight_decay=0.005, device="cpu", grad_tol=1e-9)
    model = SPEC.build(seed=0).double()
    start = state_of(model)
    w = torch.ones(4, X.shape[0], dtype=torch.float64)
    for c, i in enumerate((3, 40, 77)):
        w[c + 1, i] = 0.0
    stacked, diag = fit_copies(model, start, X, y, w, config)
    assert float(diag["grad_norm"].max()) < 1e-9
    for c in range(4):
        alone, d1 = fit_copies(model, start, X, y, w[c : c + 1], config)
        assert float(d1["grad_norm"][0]) < 1e-9
        for k in alone:
            torch.testing.assert_close(stacked[k][c], alone[k][0], rtol=0, atol=1e-7)
        assert float(diag["objective"][c]) == pytest.approx(float(d1["objective"][0]), abs=1e-14)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_half_subsets_train_on_their_own_rows_beside_a_full_control(data, optimizer):
    """LDS-like weights (a control on every row, copies on half the rows): the subsets train on
    their gathered rows, the control apart; each equals training on its rows alone."""
    from influence_widgets.models.training import gather_rows

    X, y = data
    n = X.shape[0]
    config = (TrainConfig.preset("exact", weight_decay=0.01, device="cpu", grad_tol=1e-10)
              if optimizer == "lbfgs" else cfg(steps=80, weight_decay=0.01))
    model = mlp_spec((4,), 3, depth=0).build(seed=0).double()  # logistic regression: convex
    start = state_of(model)
    g = torch.Generator().manual_seed(0)
    w = torch.ones(4, n, dtype=torch.float64)
    for c in (1, 2, 3):
        w[c, torch.randperm(n, generator=g)[: n // 2]] = 0.0
    assert gather_rows(w[1:]) and not gather_rows(w)
    stacked, diag = fit_copies(model, start, X, y, w, config)
    for c in range(4):
        keep = w[c] != 0
        alone, d1 = fit_copies(model, start, X[keep], y[keep], torch.ones(1, int(keep.sum())),
                               config)
        for k in alone:
            torch.testing.assert_close(stacked[k][c], alone[k][0], rtol=0, atol=1e-9)
        assert float(diag["objective"][c]) == pytest.approx(float(d1["objective"][0]), abs=1e-12)


def test_lbfgs_stops_each_copy_on_its_own(data):
    """A copy that starts at a stationary point stays there, bit for bit, while the copy
    beside it (a point removed) trains to its own stationary point."""
    X, y = data
    config = TrainConfig.preset("exact", weight_decay=0.005, device="cpu", grad_tol=1e-8)
    tm = train(SPEC, data, config)
    assert tm.grad_norm < 1e-8
    start = state_of(tm.model)
    w = torch.ones(2, X.shape[0], dtype=torch.float64)
    w[1, 9] = 0.0
    got, diag = fit_copies(tm.model, start, X, y, w, config)
    for k, v in got.items():
        assert torch.equal(v[0], start[k]), k
    assert float(diag["grad_norm"][1]) < 1e-8
    assert (got["1.weight"][1] - start["1.weight"]).abs().max() > 1e-5
    assert diag["steps"] > 0


def test_lbfgs_compact_history_is_the_two_loop_recursion():
    """The batched compact-form product H g equals the textbook two-loop recursion of each
    copy's own pairs (copies keep different numbers of pairs, the oldest dropped past m)."""
    from influence_widgets.models.training import _History

    g = torch.Generator().manual_seed(0)
    C, m, P = 3, 5, 7
    A = torch.randn(P, P, generator=g, dtype=torch.float64)
    A = A @ A.T + torch.eye(P, dtype=torch.float64)
    hist = _History(C, m, P, torch.zeros(1, dtype=torch.float64))
    pairs: list[list] = [[] for _ in range(C)]

    def two_loop(S, Y, v):
        q, alphas = v.clone(), []
        for s, yv in reversed(list(zip(S, Y))):
            rho = 1 / (s @ yv)
            a = rho * (s @ q)
            q -= a * yv
            alphas.append((a, rho, s, yv))
        r = q * ((S[-1] @ Y[-1]) / (Y[-1] @ Y[-1]) if S else 1.0)
        for a, rho, s, yv in reversed(alphas):
            r += s * (a - rho * (yv @ r))
        return r

    for step in range(9):
        s = torch.randn(C, P, generator=g, dtype=torch.float64)
        keep = torch.tensor([True, step % 2 == 0, step > 5])
        hist.push(s, s @ A, keep)
        for c in range(C):
            if keep[c]:
                pairs[c] = (pairs[c] + [(s[c], (s @ A)[c])])[-m:]
        v = torch.randn(C, P, generator=g, dtype=torch.float64)
        got = hist.apply(v)
        for c in range(C):
            ref = two_loop([q[0] for q in pairs[c]], [q[1] for q in pairs[c]], v[c])
            torch.testing.assert_close(got[c], ref, rtol=1e-10, atol=1e-12)


def test_fit_copies_with_a_zero_weight_equals_training_without_the_point(data):
    X, y = data
    config = cfg(steps=200, weight_decay=0.01)
    model = SPEC.build(seed=0).double()
    start = state_of(model)
    w = torch.ones(3, X.shape[0], dtype=torch.float64)
    w[1, 5] = 0.0
    w[2, 17] = 0.0
    stacked, diag = fit_copies(model, start, X, y, w, config)
    for c, i in ((1, 5), (2, 17)):
        keep = torch.arange(X.shape[0]) != i
        alone, d1 = fit_copies(
            model, start, X[keep], y[keep], torch.ones(1, X.shape[0] - 1), config
        )
        for k in alone:
            torch.testing.assert_close(stacked[k][c], alone[k][0], rtol=0, atol=1e-10)
        assert float(diag["objective"][c]) == pytest.approx(float(d1["objective"][0]), abs=1e-10)
    # the removed point did change the result
    assert not torch.allclose(stacked["1.weight"][0], stacked["1.weight"][1], atol=1e-8)


def test_nan_loss_names_the_step(data):
    X, y = data
    relu = mlp_spec((4,), 3, depth=1, width=5, activation="relu")
    with pytest.raises(FloatingPointError, match=r"step \d+"):
        train(relu, (X.float(), y), TrainConfig(optimizer="sgd", lr=1e6, steps=200, device="cpu"))
    Xn = X.clone()
    Xn[3, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="step 0"):
        train(SPEC, (Xn, y), cfg())


def test_wrong_input_shape_is_a_clear_error(data):
    X, y = data
    with pytest.raises(ValueError, match=r"expects \(4,\)"):
        train(SPEC, (torch.randn(10, 5), y[:10]), cfg())
    with pytest.raises(ValueError, match="cannot take inputs"):
        train(nn.Linear(5, 3), data, cfg())
    with pytest.raises(ValueError, match="rows"):
        train(SPEC, (X, y[:-1]), cfg())


@pytest.mark.parametrize(
    "kw",
    [
        {"optimizer": "rmsprop"},
        {"loss": "hinge"},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"lr": -1.0},
        {"steps": 0},
        {"epochs": -1},
        {"steps": 10, "epochs": 2},
        {"batch_size": 1.5},
        {"weight_decay": -0.1},
        {"momentum": -1.0},
        {"polish_steps": -1},
        {"grad_tol": 0.0},
        {"optimizer": "lbfgs", "batch_size": 16},
        {"dtype": "int8"},
    ],
)
def test_invalid_config_values_raise(kw):
    with pytest.raises(ValueError):
        TrainConfig(**kw)


NAN = float("nan")


@pytest.mark.parametrize(
    "kw",
    [
        {"weight_decay": NAN},
        {"weight_decay": float("inf")},
        {"momentum": NAN},
        {"grad_tol": NAN},
        {"steps": True},
    ],
)
def test_non_finite_config_values_raise(kw):
    with pytest.raises(ValueError):
        TrainConfig(**kw)


def test_config_dict_round_trip_and_errors():
    c = TrainConfig.preset("exact", weight_decay=0.01)
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({**c.to_dict(), "lrr": 1})
    with pytest.raises(ValueError, match="valid names"):
        TrainConfig.preset("fast")


def test_user_module_is_not_modified(data):
    module = SPEC.build(seed=1).double()
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    ids = [id(p) for p in module.parameters()]
    tm = train(module, data, cfg(steps=30))
    assert tm.model is not module
    assert [id(p) for p in module.parameters()] == ids
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert module.training
    assert all(torch.equal(tm.init_params[k], v) for k, v in before.items())


def test_relu_model_reports_non_stationarity(data):
    relu = mlp_spec((4,), 3, depth=2, width=5, activation="relu")
    tm = train(relu, data, TrainConfig.preset("exact", weight_decay=0.005, device="cpu"))
    d = tm.diagnostics
    assert d["converged"] is False
    assert d["grad_norm"] > d["grad_tol"] == 1e-6
    assert math.isfinite(d["grad_norm"])
    assert "converged=False" in repr(tm)


# ----------------------------------------------------------------------------- one engine


def _adam_by_hand(objective, n: int, config: TrainConfig, steps: int) -> None:
    """A plain torch.optim.Adam loop: the seeded batch order, a new permutation per epoch."""
    opt = torch.optim.Adam(list(objective.copies.trainable.values()), lr=config.lr)
    B = config.batch_size or n
    per_epoch = math.ceil(n / B)
    g = torch.Generator().manual_seed(config.seed)
    for step in range(steps):
        rows = None
        if B < n:
            if step % per_epoch == 0:
                order = torch.randperm(n, generator=g)
            rows = order[(step % per_epoch) * B : (step % per_epoch + 1) * B]
        opt.zero_grad()
        objective(rows).sum().backward()
        opt.step()


def _one_copy(model, start, names, X, y, removed: int | None, config, make):
    copies = Copies.stack(model, start, names, 1, X.device, X.dtype)
    w = torch.ones(1, X.shape[0], dtype=X.dtype)
    if removed is not None:
        w[0, removed] = 0.0
    return make(copies, X, y, w, config), w


def _pbrf(copies, X, y, w, config):
    from influence_widgets.ground_truth.pbrf import PBRFObjective

    return PBRFObjective(copies, X, y, w, config, damping=0.01)


@pytest.mark.parametrize("batch_size", [None, 32])
@pytest.mark.parametrize("which", ["training", "pbrf"])
def test_fit_copies_is_a_plain_adam_loop_over_its_objective(data, which, batch_size):
    """One copy through the engine is bit for bit a hand-written torch.optim.Adam loop over the
    same objective, in the module mode the objective asks for. PBRF is never polished (its
    config asks for polish steps; the training objective's would be polished, so none there)."""
    from influence_widgets.ground_truth.pbrf import pbrf_objective

    X, y = data
    pbrf = which == "pbrf"
    config = cfg(steps=30, weight_decay=0.01, batch_size=batch_size, seed=5,
                 polish_steps=20 if pbrf else 0)
    model = SPEC.build(seed=2).double()
    start, names = state_of(model), [k for k, _ in model.named_parameters()]
    make = _pbrf if pbrf else TrainingObjective
    objective, w = _one_copy(model, start, names, X, y, 7, config, make)
    with module_mode(model, not pbrf):
        _adam_by_hand(objective, X.shape[0], config, 30)
    got, diag = fit_copies(model, start, X, y, w, config,
                           objective=pbrf_objective(0.01) if pbrf else None)
    for k in names:
        assert torch.equal(got[k], objective.copies.trainable[k].detach()), k
    assert diag["steps"] == 30


def test_pbrf_with_nothing_removed_stays_at_the_start(data):
    """theta_s minimises the PBRF objective when nothing is removed; removing a point moves the
    copy (2 stacked copies, float64). SGD: Adam's normalised steps would blow the ~1e-17
    round-off gradient at theta_s up to steps of size lr."""
    from influence_widgets.ground_truth.pbrf import pbrf_objective

    X, y = data
    model = SPEC.build(seed=1).double()
    start = state_of(model)
    w = torch.ones(2, X.shape[0], dtype=torch.float64)
    w[1, 11] = 0.0
    config = cfg(optimizer="sgd", lr=0.5, steps=50)
    got, diag = fit_copies(model, start, X, y, w, config, objective=pbrf_objective(1e-3))
    for k, v in got.items():
        torch.testing.assert_close(v[0], start[k], rtol=0, atol=1e-12)
    assert float(diag["grad_norm"][0]) < 1e-12 < float(diag["grad_norm"][1])
    assert (got["1.weight"][1] - start["1.weight"]).abs().max() > 1e-6
    assert model.training  # the module's own mode is restored


def test_pbrf_is_cancelled_like_training(data):
    from influence_widgets.ground_truth.pbrf import pbrf_objective

    X, y = data
    model = SPEC.build(seed=1).double()
    with pytest.raises(InterruptedError, match="cancelled at step 1 of 50"):
        fit_copies(model, state_of(model), X, y, torch.ones(1, X.shape[0]), cfg(steps=50),
                   objective=pbrf_objective(1e-3), should_stop=lambda: True)
    with pytest.raises(ValueError, match="pbrf_damping must be a finite number >= 0"):
        pbrf_objective(float("nan"))


@pytest.mark.parametrize("context", [eval_mode, lambda m: module_mode(m, True)])
def test_module_mode_restores_the_flag_also_when_the_body_raises(context):
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    for flag in (True, False):
        model.train(flag)
        with pytest.raises(RuntimeError, match="inside"):
            with context(model):
                assert model.training is (context is not eval_mode)
                raise RuntimeError("inside")
        assert model.training is flag and model[1].training is flag


def test_the_spec_rides_on_the_trained_model_not_on_the_module(data):
    tm = train(SPEC, data, cfg(steps=5))
    assert tm.spec is SPEC and not hasattr(tm.model, "_iw_spec")
    again = train(tm.model, data, cfg(steps=5), spec=SPEC)
    assert again.spec is SPEC and not hasattr(again.model, "_iw_spec")
    assert train(tm.model, data, cfg(steps=5)).spec is None
    with pytest.raises(ValueError, match="not two different ones"):
        train(SPEC, data, cfg(steps=5), spec=mlp_spec((4,), 3, depth=2))


def test_no_module_metadata_or_private_engine_names_in_models_and_ground_truth():
    from pathlib import Path

    import influence_widgets

    root = Path(influence_widgets.__file__).parent
    for folder in ("models", "ground_truth"):
        for path in (root / folder).glob("*.py"):
            text = path.read_text(encoding="utf-8")
            for name in ("_iw_spec", "_max_workers", "_check_finite"):
                assert name not in text, f"{path.name} uses {name}"


def test_lbfgs_chunks_are_no_longer_capped_at_eight():
    """L-BFGS copies train together, so a sweep stacks up to LBFGS_MAX_WIDTH of them (Iris:
    every point of a LOO in one chunk); first-order optimisers keep their own limits."""
    from influence_widgets.ground_truth.retrain import LBFGS_MAX_WIDTH, choose_width

    X = iris().X_train.double()
    model = SPEC.build(seed=0).double()
    names = [k for k, _ in model.named_parameters()]
    lbfgs = TrainConfig.preset("exact", device="cpu")
    assert choose_width(model, X, 121, names, lbfgs, torch.device("cpu")) == 121
    assert choose_width(model, X, 1000, names, lbfgs, torch.device("cpu")) == LBFGS_MAX_WIDTH
    assert choose_width(model, X, 1000, names, cfg(), torch.device("cpu")) > LBFGS_MAX_WIDTH
