"""Ground truths as registered types (issue 19): one registry that the API, the explorer, the
studies and the CLI read; one sweep runner; paired seeds with standard errors; real retraining
noise; store keys that cover the model's code."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import clustered
from torch import nn

import influence_widgets as iw
from influence_widgets._settings import setting
from influence_widgets.ground_truth import (
    TRUTHS,
    GroundTruth,
    TruthSettings,
    register_truth,
    unregister_truth,
)
from influence_widgets.ground_truth.truths import make_truth, mean_and_se


def _adam(**changes) -> iw.TrainConfig:
    base = {"optimizer": "adam", "lr": 0.05, "steps": 40, "dtype": "float64",
            "weight_decay": 0.01, "device": "cpu"}
    return iw.TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def small():
    """A tanh MLP on clustered points, trained with full-batch Adam (fixed steps: fast)."""
    X, y = clustered(30, d=3, k=3, seed=1)
    Xt, yt = clustered(6, d=3, k=3, seed=2)
    spec = iw.models.mlp_spec((3,), 3, depth=1, width=4, activation="tanh")
    tm = iw.train(spec, (X, y), _adam())
    return tm, spec, (X, y), (Xt, yt)


# ----------------------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class ToySettings(TruthSettings):
    steps: int = setting(5, "SGD steps from the trained parameters", minimum=1)
    lr: float = setting(0.01, "SGD learning rate", above=0.0)


class ToySGD(GroundTruth):
    """A toy ground truth: a short SGD warm start. All a new truth takes is this class."""

    name = "toy_sgd"
    label = "toy: SGD warm start"
    short = "toy"
    summary = "a few plain SGD steps from the trained parameters (a test's toy)"
    retrain_mode = "warm_start"
    Settings = ToySettings

    def schedule(self, model_config: iw.TrainConfig) -> iw.TrainConfig:
        return model_config.replace(loss=None, weight_decay=None, optimizer="sgd",
                                    lr=self.settings.lr, steps=self.settings.steps,
                                    batch_size=None, epochs=None, polish_steps=0)


@pytest.fixture
def toy():
    register_truth(ToySGD)
    try:
        yield ToySGD
    finally:
        unregister_truth(ToySGD.name)


def test_a_toy_truth_is_one_registry_entry_and_appears_everywhere(toy, small, monkeypatch):
    """Adding a ground truth is this file's ToySGD class and one register_truth call: the API,
    the explorer's list and controls, the studies and the CLI take it with no other change."""
    tm, _, train, test = small
    # the API
    res = iw.leave_one_out(tm, train, test, [0, 3], mode="toy_sgd", steps=3, store=None,
                           config=toy(toy.Settings(steps=3)).schedule(tm.config),
                           return_result=True)
    assert res.truth == "toy_sgd" and res.steps == 3 and res.values.shape == (6, 2)
    # the explorer: listed, with its own settings control, and computable
    from influence_widgets.widgets.controls import truth_options

    assert ("toy: SGD warm start", "toy_sgd") in truth_options()
    data = iw.datasets.Data("toy", *train, *test, class_names=["a", "b", "c"], input_shape=(3,))
    tm.data, tm.name = data, "toy-model"
    monkeypatch.setattr(iw.widgets.explorer, "_interactive_canvas", lambda: False)
    ex = iw.InfluenceExplorer({"toy-model": tm}, model="toy-model", threaded=False)
    assert "toy_sgd" in [v for _, v in ex.controls.gt_mode.options]
    ex.gt_mode, ex.k, ex.controls.gt_steps.value = "toy_sgd", 4, 3
    assert "lr" in ex.controls.truth_settings.widgets["toy_sgd"]
    assert ex.controls.gt_steps.layout.display is None  # it has steps: the shared control shows
    out = ex.compute(raise_errors=True)
    assert out.loo.truth == "toy_sgd" and "toy" in ex.last_figure.axes[0].get_title()
    # the studies
    from influence_widgets.experiments.core import Truth

    assert Truth("toy_sgd", settings={"steps": 2}).truth().settings.steps == 2
    # the command line
    from influence_widgets.__main__ import cmd_list

    assert "toy_sgd" in cmd_list() and "SGD steps from the trained parameters" in cmd_list()


def test_registry_refuses_bad_entries_and_names_valid_ones():
    with pytest.raises(TypeError, match="GroundTruth subclass"):
        register_truth(int)
    with pytest.raises(ValueError, match="built-in"):
        unregister_truth("warm_start")
    with pytest.raises(ValueError, match="unknown ground truth 'nope'.*warm_start"):
        make_truth("nope")
    with pytest.raises(TypeError, match="ground truth 'scratch' has no option 'step'"):
        make_truth("scratch", step=3)
    with pytest.raises(ValueError, match="n_seeds must be >= 1"):
        make_truth("scratch", n_seeds=0)
    with pytest.raises(ValueError, match="draws its own random subsets"):
        iw.leave_one_out(nn.Linear(2, 2), None, None, [0], mode="lds")
    assert {"warm_start", "scratch", "minibatch", "last_layer", "pbrf", "lds", "exact"} <= set(
        TRUTHS)
    # what one dot is, and the estimate each is the target of, are part of the description
    assert make_truth("lds").draws_units and make_truth("lds").dot == "random subset"
    assert make_truth("pbrf", pbrf_damping=0.01).estimate_settings() == {
        "curvature": "ggn", "damping": 0.01}
    assert make_truth("warm_start").estimate_settings() == {}


def test_no_import_cycle_inside_the_ground_truth_package():
    """eta, loo, noise, lds, runner and truths import each other one way only."""
    root = Path(iw.__file__).parent / "ground_truth"
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        deps = set()
        for node in tree.body:  # module-level imports only (a function may import late)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                deps.add(node.module.split(".")[0])
        graph[path.stem] = deps & {p.stem for p in root.glob("*.py")}

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join(stack + (node,))}"
        for dep in graph.get(node, ()):
            visit(dep, stack + (node,))

    for module in graph:
        visit(module, ())


# ----------------------------------------------------------------------------- one runner


def test_every_sweep_takes_progress_true(small, capsys):
    tm, _, train, test = small
    kw = {"store": None, "progress": True}
    iw.leave_one_out(tm, train, test, [0, 1], config=_adam(steps=3), **kw)
    iw.leave_group_out(tm, train, test, [[0, 1], [2, 3]], config=_adam(steps=3), **kw)
    iw.retraining_noise(tm, train, test, config=_adam(steps=3), n_seeds=2, **kw)
    scores = iw.influence(tm, train, test)
    iw.ground_truth.lds(tm, train, test, scores, n_subsets=3, config=_adam(steps=3), **kw)
    err = capsys.readouterr().err
    for bar in ("LOO warm start", "noise floor", "LDS"):
        assert bar in err, bar


def test_paired_seeds_match_independent_retrains(small):
    """Scratch LOO over 3 seeds: seed 1 is the model's own start, each further seed a new
    initialisation and batch order shared by its control and its removal; the value is the mean
    of the paired differences, with its standard error (checked against iw.train runs)."""
    tm, spec, train, test = small
    X, y = train
    res = iw.leave_one_out(tm, train, test, [4], mode="scratch", n_seeds=3, store=None,
                           return_result=True)
    assert res.n_seeds == 3 and res.se is not None and res.truth == "scratch"
    keep = torch.ones(X.shape[0], dtype=torch.bool)
    keep[4] = False
    diffs = []
    for seed in (0, 1, 2):
        cfg = tm.config.replace(seed=seed)
        full = iw.train(spec, (X, y), cfg)
        removed = iw.train(spec, (X[keep], y[keep]), cfg)
        loss = [torch.nn.functional.cross_entropy(m.model(test[0]), test[1], reduction="none")
                for m in (removed, full)]
        diffs.append((loss[0] - loss[1]).detach())
    per_seed = torch.stack(diffs, dim=1)[:, :, None]  # (n_test, seeds, 1)
    mean, se = mean_and_se(per_seed)
    torch.testing.assert_close(res.values, mean, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(res.se, se, rtol=1e-5, atol=1e-9)
    expected = per_seed[:, :, 0].std(dim=1) / 3 ** 0.5
    torch.testing.assert_close(res.se[:, 0], expected, rtol=1e-5, atol=1e-9)


def test_minibatch_truth_shares_each_batch_order_within_a_seed(small):
    tm, _, train, test = small
    truth = make_truth("minibatch", n_seeds=2, batch_size=8, epochs=2)
    res = truth.measure(tm, train, test, [(0,), (5,)], options=iw.ground_truth.SweepOptions(
        store=None))
    assert res.values.shape == (6, 2) and res.se is not None and bool(res.se.isfinite().all())
    assert res.n_retrains_computed == 6  # 2 seeds x (control + 2 removals)
    from influence_widgets.ground_truth.problem import prepare

    problem = prepare(tm, train, test, config=truth.schedule(tm.config), mode="scratch",
                      params="all", dtype="auto", subtract_control=True, pbrf_damping=0.0)
    jobs = truth.jobs([(0,), (5,)], problem)
    assert {j.group for j in jobs} == {(0, 0.0, False), (1, 0.0, False)}  # order only
    assert all(j.reference.seed == j.seed and not j.reference.remove for j in jobs)


def test_real_noise_is_retraining_from_new_initialisations(small):
    """The default noise floor retrains from scratch under new seeds; each value is an
    independent iw.train run's test loss minus the control's (the model's own start)."""
    tm, spec, train, test = small
    res = iw.retraining_noise(tm, train, test, n_seeds=2, store=None, return_result=True)
    assert res.kind == "retraining" and "initialisation" in res.how and res.seeds == [1, 2]
    control = iw.train(spec, train, tm.config)

    def losses(m):
        return torch.nn.functional.cross_entropy(m.model(test[0]), test[1], reduction="none")

    for j, seed in enumerate(res.seeds):
        other = iw.train(spec, train, tm.config.replace(seed=seed))
        torch.testing.assert_close(res.values[:, j], (losses(other) - losses(control)).detach(),
                                   rtol=1e-7, atol=1e-10)
    full = torch.cat([torch.zeros(6, 1, dtype=torch.float64), res.values], dim=1)
    torch.testing.assert_close(res.std, full.std(dim=1), rtol=1e-10, atol=0)


def test_noise_of_a_wrapped_model_draws_fresh_starts_with_reset_parameters(small):
    """No spec, no known initialisation: each seed re-initialises with reset_parameters, and the
    runs are compared with the trained model itself."""
    tm, _, train, test = small
    wrapped = iw.wrap(tm.model, train, test, weight_decay=0.01, config=_adam())
    res = iw.retraining_noise(wrapped, train, test, n_seeds=2, store=None, return_result=True)
    assert res.reference == "trained model" and "reset_parameters" in res.how
    assert bool(res.std.isfinite().all()) and bool((res.values != 0).any())
    with pytest.raises(ValueError, match="initialisation is not known"):
        iw.leave_one_out(wrapped, train, test, [0], mode="scratch", store=None)


# ----------------------------------------------------------------------------- store keys


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.scale = 1.0

    def forward(self, x):
        return self.lin(x) * self.scale


def _edited_class():
    class _Scaled(nn.Module):  # same name, same parameters, another forward
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.scale = 1.0

        def forward(self, x):
            return torch.tanh(self.lin(x)) * self.scale

    return _Scaled


def test_an_edited_forward_or_attribute_recomputes_instead_of_loading(small, tmp_path):
    """Issue 19 (4): a cell that redefines ``forward`` (same class name, same weights), or a
    changed plain attribute, is another setting: nothing stale comes back from the store."""
    _, _, train, test = small
    torch.manual_seed(0)
    net = _Scaled().double()
    store, cfg = tmp_path / "loo.sqlite", _adam(steps=5)
    kw = {"config": cfg, "store": store, "return_result": True}
    first = iw.leave_one_out(net, train, test, [0, 1], **kw)
    again = iw.leave_one_out(net, train, test, [0, 1], **kw)
    assert (first.n_retrains_computed, again.n_retrains_computed) == (3, 0)
    edited = _edited_class()().double()
    edited.load_state_dict(net.state_dict())
    other = iw.leave_one_out(edited, train, test, [0, 1], **kw)
    assert other.n_retrains_loaded == 0 and other.setting != first.setting
    assert (other.values - first.values).abs().max() > 1e-6
    net.scale = 2.0
    scaled = iw.leave_one_out(net, train, test, [0, 1], **kw)
    assert scaled.n_retrains_loaded == 0 and scaled.setting != first.setting


def test_store_keys_cover_buffers(small, tmp_path):
    _, _, train, test = small
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).double()
    net.eval()
    kw = {"config": _adam(steps=3), "store": tmp_path / "s.sqlite", "return_result": True}
    first = iw.leave_one_out(net, train, test, [0], **kw)
    net[1].running_mean += 1.0
    second = iw.leave_one_out(net, train, test, [0], **kw)
    assert second.n_retrains_loaded == 0 and second.setting != first.setting
