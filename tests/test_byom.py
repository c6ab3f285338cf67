"""Bring your own model: a plain trained ``nn.Module`` plus its data -> ``iw.wrap`` -> the
explorer, with its weights as they are (nothing retrained)."""

from __future__ import annotations

import html
import math
import warnings

import pytest
import torch
from torch import nn
from traitlets import TraitError

import influence_widgets as iw

FEATURES = ["stem", "leaf", "root", "bud"]
CLASSES = ["oak", "elm", "ash"]
WD = 0.01


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _data(n_train=36, n_test=9, d=4, k=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(k, d, generator=g, dtype=dtype)
    y = torch.arange(n_train + n_test) % k
    X = centers[y] + torch.randn(n_train + n_test, d, generator=g, dtype=dtype)
    return (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:])


def _fit(net, train, weight_decay=WD, steps=200):
    """The user's own training loop (full-batch L-BFGS on loss + wd/2 ||theta||^2)."""
    opt = torch.optim.LBFGS(net.parameters(), max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=0.0)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(train[0]), train[1])
        loss = loss + 0.5 * weight_decay * sum((p ** 2).sum() for p in net.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    return net


def _mlp(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    train, test = _data()
    return _fit(_mlp(), train), train, test


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wrap_keeps_the_weights_bit_for_bit_and_leaves_the_module_alone(dtype):
    train, test = _data(dtype=dtype)
    net = _fit(_mlp(dtype), train, steps=30)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    tm = iw.wrap(net, train, test, weight_decay=WD, feature_names=FEATURES, class_names=CLASSES,
                 name="mine")
    assert isinstance(tm, iw.TrainedModel) and tm.name == "mine" and tm.model is not net
    after = tm.model.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
        assert torch.equal(net.state_dict()[k], v)  # the user's module is not edited
    assert tm.config.weight_decay == WD and tm.config.loss == "cross_entropy"
    assert tm.config.dtype == str(dtype).replace("torch.", "") and tm.diagnostics["steps"] == 0
    assert tm.extra["init_known"] is False and tm.extra["objective_source"] == "given"
    assert tm.data.info["feature_names"] == FEATURES and tm.data.class_names == CLASSES
    with torch.no_grad():
        expect = nn.functional.cross_entropy(net(train[0]), train[1]) + 0.5 * WD * sum(
            (p ** 2).sum() for p in net.parameters())
    assert tm.diagnostics["objective"] == pytest.approx(float(expect), rel=1e-5)
    # editing the wrapped copy leaves the user's module alone
    with torch.no_grad():
        tm.model[0].weight.zero_()
    assert torch.equal(net[0].weight, before["0.weight"])


def test_names_reach_the_explorers_test_point_panel(trained):
    net, train, test = trained
    ex = iw.InfluenceExplorer(model=net, train=train, test=test, weight_decay=WD,
                              feature_names=FEATURES, class_names=CLASSES, name="my net",
                              threaded=False)
    assert ex.error is None, ex.error
    assert ex.model_name == "my net" and ex.controls.model.value == "my net"
    shown = ex.test_html.value
    for f in FEATURES:
        assert html.escape(f) in shown
    label = CLASSES[int(test[1][ex.test_index])]
    assert f"label <b>{label}</b>" in shown and "predicted <b>" in shown
    tm = ex.session.model("my net")
    assert all(torch.equal(tm.model.state_dict()[k], v) for k, v in net.state_dict().items())


def test_the_explorer_computes_on_a_plain_module(trained):
    net, train, test = trained
    ex = iw.InfluenceExplorer(model=net, train=train, test=test, weight_decay=WD,
                              feature_names=FEATURES, class_names=CLASSES, threaded=False)
    ex.controls.k.value = 8
    ex.controls.gt_steps.value = 60
    out = ex.compute(raise_errors=True)
    assert out is not None and ex.error is None, ex.error
    stats = ex.last_stats
    assert len(ex.last_indices) == 8
    assert math.isfinite(stats["pearson"]) and math.isfinite(stats["spearman"])
    assert torch.isfinite(ex.last_estimates).all() and torch.isfinite(ex.last_actual).all()


def test_wrapped_logistic_regression_influence_equals_influence_on_the_module():
    train, test = _data(n_train=40, n_test=6)
    torch.manual_seed(1)
    net = _fit(nn.Linear(4, 3).double(), train, weight_decay=0.05, steps=300)
    tm = iw.wrap(net, train, test, weight_decay=0.05)
    est = iw.influence(tm, tm.data.train, tm.data.test, solver="exact")
    ref = iw.influence(net, train, test, weight_decay=0.05, solver="exact")
    assert est.dtype == ref.dtype == torch.float64 and est.shape == (6, 40)
    assert torch.allclose(est, ref, rtol=0, atol=1e-10 * float(ref.abs().max()))
    assert float((est - ref).abs().max()) <= 1e-10


def test_a_plain_module_without_data_is_a_clear_type_error():
    net = _mlp()
    with pytest.raises(TypeError, match=r"plain nn.Module.*train=\(X_train, y_train\).*iw.wrap"):
        iw.InfluenceExplorer(model=net)
    try:
        iw.InfluenceExplorer(model=net, threaded=False)
    except TraitError:  # pragma: no cover - the bug this guards
        pytest.fail("a plain module ended in a TraitError")
    except TypeError:
        pass
    train, test = _data()
    with pytest.raises(TypeError, match="test="):
        iw.InfluenceExplorer(model=net, train=train)
    with pytest.raises(TypeError, match="model=net"):
        iw.InfluenceExplorer(train=train, test=test)
    with pytest.raises(TypeError, match="brings its own data"):
        iw.InfluenceExplorer(model="iris-mlp-d1-w5-wd", train=train, test=test)
    with pytest.raises(TypeError, match="nn.Module"):
        iw.InfluenceExplorer(model=42)
    with pytest.raises(TypeError, match="train="):
        iw.wrap(net)


def test_help_shows_the_explorers_own_documentation():
    init_doc = iw.InfluenceExplorer.__init__.__doc__
    assert init_doc and "Public constructor" not in init_doc and "nn.Module" in init_doc
    doc = iw.InfluenceExplorer.__doc__
    for arg in ("train, test:", "feature_names, class_names:", "weight_decay:"):
        assert arg in doc
    assert "wrap" in iw.__all__ and iw.wrap.__doc__.count("Example::") == 1


def test_data_object_brings_its_names():
    data = iw.datasets.iris()
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    tm = iw.wrap(net, data=data, weight_decay=0.0)
    assert tm.data.info["feature_names"] == data.info["feature_names"]
    assert tm.data.class_names == data.class_names
    assert torch.equal(tm.data.X_test, data.X_test)
    with pytest.raises(TypeError, match="not both"):
        iw.wrap(net, data.train, data.test, data=data, weight_decay=0.0)


def test_numpy_pairs_and_int32_labels_are_accepted(trained):
    net, train, test = trained
    tm = iw.wrap(net, (train[0].numpy(), train[1].int().numpy()), (test[0], test[1].int()),
                 weight_decay=WD)
    assert tm.data.y_train.dtype == torch.int64 and torch.equal(tm.data.X_train, train[0])


def test_mismatches_are_errors_that_say_what_to_do(trained):
    net, train, test = trained
    X, y = train
    with pytest.raises(ValueError, match=r"train inputs have 5 features per row but the "
                                         r"model's first layer .* takes 4"):
        iw.wrap(net, (torch.cat([X, X[:, :1]], 1), y), test, weight_decay=WD)
    with pytest.raises(ValueError, match="test inputs have 3 features per row"):
        iw.wrap(net, train, (test[0][:, :3], test[1]), weight_decay=WD)
    conv = nn.Sequential(nn.Conv1d(1, 2, 2), nn.Flatten(), nn.Linear(6, 3)).double()
    with pytest.raises(ValueError, match=r"train inputs have shape \(1, 4\) .* test inputs"):
        iw.wrap(conv, (X[:, None], y), (test[0][:, None, :3], test[1]), weight_decay=WD)
    with pytest.raises(ValueError, match=r"class indices in 0..2 .* 3 outputs.*relabel"):
        iw.wrap(net, (X, y + 1), test, weight_decay=WD)
    with pytest.raises(ValueError, match="test labels must be class indices"):
        iw.wrap(net, train, (test[0], test[1] - 1), weight_decay=WD)
    with pytest.raises(TypeError, match="y.long()"):
        iw.wrap(net, (X, y.double()), test, weight_decay=WD)
    with pytest.raises(ValueError, match="feature_names has 3 names but the inputs have 4"):
        iw.wrap(net, train, test, weight_decay=WD, feature_names=FEATURES[:3])
    with pytest.raises(ValueError, match="class_names has 2 names but the model has 3 outputs"):
        iw.wrap(net, train, test, weight_decay=WD, class_names=CLASSES[:2])
    with pytest.raises(ValueError, match="rows but y has"):
        iw.wrap(net, (X, y[:-1]), test, weight_decay=WD)
    bad_X = X.clone()
    bad_X[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf .*row 3"):
        iw.wrap(net, (bad_X, y), test, weight_decay=WD)
    with pytest.raises(ValueError, match="weight_decay must be a finite number"):
        iw.wrap(net, train, test, weight_decay=-1.0)
    with pytest.raises(ValueError, match="differs from the config's"):
        iw.wrap(net, train, test, weight_decay=WD, config=iw.TrainConfig(weight_decay=0.5))
    with pytest.raises(TypeError, match="already a TrainedModel"):
        iw.wrap(iw.wrap(net, train, test, weight_decay=WD), train, test)


class _Inf(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3).double()

    def forward(self, x):
        return self.lin(x) * float("inf")


def test_non_finite_loss_and_broken_weights_are_errors(trained):
    _, train, test = trained
    with pytest.raises(ValueError, match="loss of the model at its given weights is (nan|inf)"):
        iw.wrap(_Inf(), train, test, weight_decay=WD)
    net = _mlp()
    with torch.no_grad():
        net[2].bias[0] = float("nan")
    with pytest.raises(ValueError, match=r"parameter '2.bias' holds NaN"):
        iw.wrap(net, train, test, weight_decay=WD)
    with pytest.raises(TypeError, match="float32 or float64"):
        iw.wrap(_mlp().half(), train, test, weight_decay=WD)


def test_the_objective_is_never_silent(trained):
    net, train, test = trained
    with pytest.warns(UserWarning, match="no weight_decay given, so 0 is assumed"):
        tm = iw.wrap(net, train, test)
    assert tm.config.weight_decay == 0.0 and tm.extra["objective_source"] == "assumed"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm = iw.wrap(net, train, test, config=iw.TrainConfig(weight_decay=WD, lr=0.1, steps=7))
    assert tm.config.weight_decay == WD and tm.config.steps == 7 and tm.config.lr == 0.1
    soft = nn.Sequential(_mlp(), nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="look like probabilities"):
        iw.wrap(soft, train, test, weight_decay=WD)


def test_scratch_and_lds_ground_truths_refuse_an_unknown_initialisation():
    """A wrapped module's initial weights are unknown: retraining "from scratch" (LOO or the
    LDS) would start from the trained weights, so it is an error that names the way out."""
    torch.manual_seed(0)
    X = torch.randn(30, 3, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    net = torch.nn.Linear(3, 2).double()
    with pytest.warns(UserWarning):
        tm = iw.wrap(net, (X[:24], y[:24]), (X[24:], y[24:]))
    with pytest.raises(ValueError, match="initialisation is not known"):
        iw.leave_one_out(tm, tm.data.train, tm.data.test, [0, 1], mode="scratch", store=None)
    scores = torch.zeros(6, 24, dtype=torch.float64)
    with pytest.raises(ValueError, match="mode='warm_start'"):
        iw.ground_truth.lds(tm, tm.data.train, tm.data.test, scores, n_subsets=3, store=None)
