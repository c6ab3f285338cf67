"""Issue 22, "no silent wrong answer, round 3": one test per hostile probe that was answered
silently wrong or with an unclear error. Each of them fails on the code before the fix."""

from __future__ import annotations

import math
import sqlite3
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import influence_widgets as iw
from influence_widgets.datasets.base import as_tensors
from influence_widgets.influence.api import InfluenceEngine
from influence_widgets.influence.settings import SolverSettings, setting
from influence_widgets.influence.solvers import Solver, register_solver, unregister_solver

DT = torch.float64
WD = 0.01

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 40, d: int = 3, k: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    X = torch.randn(k, d, generator=g, dtype=DT)[y] + torch.randn(n, d, generator=g, dtype=DT)
    return X, y


def _mlp(seed: int = 0, d: int = 3, k: int = 3, width: int = 5, extra: nn.Module | None = None):
    torch.manual_seed(seed)
    layers = [nn.Linear(d, width), nn.Tanh()] + ([extra] if extra is not None else [])
    return nn.Sequential(*layers, nn.Linear(width, k)).to(DT)


@pytest.fixture(scope="module")
def tm():
    """A small classifier trained to a stationary point of loss + (WD/2)||theta||^2."""
    X, y = _data()
    model = iw.train(_mlp(), (X[:30], y[:30]), iw.TrainConfig.preset("exact", weight_decay=WD))
    model.test = (X[30:], y[30:])
    return model


def _messages(fn, *args, **kwargs) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in rec]


def _quiet_retrain() -> iw.TrainConfig:
    return iw.TrainConfig(optimizer="sgd", lr=0.05, steps=20, dtype="float64")


# ============================================================================ silent wrong results


def test_own_weight_decay_is_silent_and_another_one_warns(tm):
    _, own = _messages(iw.influence, tm, tm.train, tm.test)
    assert not [m for m in own if "weight decay" in m], own
    _, msgs = _messages(iw.influence, tm, tm.train, tm.test, weight_decay=0.05)
    assert any("does not match how this model was trained" in m for m in msgs), msgs


def test_a_plain_module_with_its_weight_decay_left_out_warns():
    """Trained with weight decay 0.05, estimated as if with none: not at a minimum of that
    objective, and the warning says what that most likely means."""
    X, y = _data()
    trained = iw.train(_mlp(), (X[:30], y[:30]), iw.TrainConfig.preset("exact", weight_decay=0.05))
    _, msgs = _messages(iw.influence, trained.model, (X[:30], y[:30]), (X[30:], y[30:]))
    hit = [m for m in msgs if "far from a stationary point" in m]
    assert hit and "weight decay given may not match how this model was trained" in hit[0]


@pytest.mark.parametrize("which", ["test split", "one row", "duplicated", "foreign"])
def test_a_training_set_that_is_not_the_models_own_warns(tm, which):
    X, y = tm.train
    other = {"test split": tm.test, "one row": (X[:1], y[:1]),
             "duplicated": (torch.cat([X, X]), torch.cat([y, y])),
             "foreign": _data(30, seed=7)}[which]
    _, msgs = _messages(iw.influence, tm, other, tm.test)
    assert any("not the model's own training set" in m for m in msgs), msgs
    _same_rows_in_another_order_are_the_models_own(tm)


def _same_rows_in_another_order_are_the_models_own(tm):
    """No false alarm: a permutation of its own rows is the model's training set."""
    X, y = tm.train
    perm = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(3))
    shuffled, msgs = _messages(iw.influence, tm, (X[perm], y[perm]), tm.test)
    assert not [m for m in msgs if "own training set" in m], msgs
    plain = iw.influence(tm, tm.train, tm.test)
    assert torch.allclose(shuffled, plain[:, perm], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("options", [{"scale": 1e6}, {"scale": 1e3}, {"steps": 5},
                                     {"steps": 20}])
def test_lissa_cut_short_or_overscaled_warns_with_its_measured_residual(tm, options):
    res, msgs = _messages(iw.influence, tm, tm.train, tm.test, solver="lissa",
                          return_result=True, **options)
    assert any("LiSSA's answer has relative residual" in m for m in msgs), msgs
    assert res.report.get("lissa-inexact") is not None
    # the residual it reports is the true one, ||v - H x|| / ||v||, against the explicit H
    engine = InfluenceEngine(tm, tm.train)
    G = engine.objective.per_sample_grads(*tm.test)
    solve = engine.solver("lissa", **options).solve(G, 0.0)
    H = engine.objective.hessian()
    true = float(((G - solve.X @ H).norm(dim=1) / G.norm(dim=1)).max())
    assert solve.diagnostics["residual"] == pytest.approx(true, rel=1e-8)
    assert true > 0.1


def test_lissa_converged_does_not_warn(tm):
    res, msgs = _messages(iw.influence, tm, tm.train, tm.test, solver="lissa", steps=3000,
                          return_result=True)
    assert res.report.get("lissa-inexact") is None and res.diagnostics["residual"] < 1e-3


def test_dropout_is_off_in_every_retrain_one_definition_deterministic():
    """A model with dropout: LOO retrains the objective the estimate differentiates (dropout off),
    whatever the width: the same numbers as the model without its dropout layer."""
    X, y = _data()
    drop = _mlp(extra=nn.Dropout(0.5))
    plain = _mlp(extra=nn.Identity())
    plain.load_state_dict(drop.state_dict())
    cfg = iw.TrainConfig.preset("exact", weight_decay=WD)
    a, b = (iw.train(m, (X[:30], y[:30]), cfg) for m in (drop, plain))
    for (ka, va), (_kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va, vb), ka
    test, points = (X[30:], y[30:]), [0, 3, 7]
    one = iw.leave_one_out(a, a.train, test, points, config=_quiet_retrain(), batch_width=1,
                           store=None)
    again = iw.leave_one_out(a, a.train, test, points, config=_quiet_retrain(), batch_width=1,
                             store=None)
    wide = iw.leave_one_out(a, a.train, test, points, config=_quiet_retrain(), store=None)
    ref = iw.leave_one_out(b, b.train, test, points, config=_quiet_retrain(), store=None)
    assert torch.equal(one, again)
    assert torch.allclose(wide, one, rtol=1e-9, atol=1e-13)
    assert torch.allclose(wide, ref, rtol=1e-9, atol=1e-13)


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, X, y, as_python=True):
        self.X, self.y, self.py = X, y, as_python

    def __len__(self):
        return self.X.shape[0]

    def __getitem__(self, i):
        v = self.y[i]
        return self.X[i], (v.item() if self.py and v.dim() == 0 else v)


def test_dataset_regression_targets_are_kept_exactly():
    g = torch.Generator().manual_seed(0)
    X, t = torch.randn(20, 3, generator=g, dtype=DT), torch.randn(20, generator=g, dtype=DT)
    Xd, td = as_tensors(_Pairs(X, t))
    assert torch.equal(Xd, X) and torch.equal(td, t)  # not int(t)
    torch.manual_seed(0)
    net = nn.Linear(3, 1).to(DT)
    from_tensors = iw.influence(net, (X[:15], t[:15, None]), (X[15:], t[15:, None]), loss="mse")
    Xs = _Pairs(X[:15], t[:15, None], as_python=False)
    from_dataset = iw.influence(net, Xs, _Pairs(X[15:], t[15:, None], as_python=False), loss="mse")
    assert torch.equal(from_dataset, from_tensors)


def test_dataset_fractional_class_label_is_refused_as_for_tensors(tm):
    X, y = tm.test
    labels = y.to(DT)
    labels[0] = 1.7
    with pytest.raises(TypeError, match="cross_entropy needs integer class indices"):
        iw.influence(tm, tm.train, _Pairs(X, labels))


def test_a_softmax_ending_model_warns_in_influence():
    X, y = _data()
    model = nn.Sequential(_mlp(), nn.Softmax(dim=1))
    _, msgs = _messages(iw.influence, model, (X[:30], y[:30]), (X[30:], y[30:]))
    assert any("look like probabilities" in m and "Softmax" in m for m in msgs), msgs


def test_a_diverged_training_run_warns():
    X, y = _data()
    cfg = iw.TrainConfig(optimizer="sgd", lr=0.5, momentum=1.5, steps=200, dtype="float64")
    trained, msgs = _messages(iw.train, _mlp(), (X, y), cfg)
    assert trained.diagnostics["objective"] > 1e6
    assert any("training diverged" in m and "momentum" in m for m in msgs), msgs


def test_edited_zoo_diagnostics_are_refused(tmp_path, monkeypatch):
    import json

    from influence_widgets.models import zoo

    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path))
    good = zoo.load("iris-mlp-d1-w5")
    meta = tmp_path / "zoo" / f"iris-mlp-d1-w5-{good.extra['cache_key']}.json"
    info = json.loads(meta.read_text())
    info["diagnostics"]["grad_norm"] = 1e-12  # a model "healthier" than it is
    meta.write_text(json.dumps(info))
    with pytest.raises(zoo.ZooCacheError, match="diagnostics .* were edited"):
        zoo.load("iris-mlp-d1-w5")


def _store_with_one_row(tmp_path):
    from influence_widgets.ground_truth.store import LOOStore, Record

    store = LOOStore(tmp_path / "s.sqlite")
    store.put("S", {"3": Record(torch.tensor([0.5, 0.25], dtype=DT), 1e-7, 0.1)})
    assert torch.equal(store.get("S", ["3"])["3"].losses, torch.tensor([0.5, 0.25], dtype=DT))
    return store


def test_an_edited_loss_row_in_the_store_is_recomputed_not_trusted(tmp_path):
    store = _store_with_one_row(tmp_path)
    with sqlite3.connect(store.path) as con:
        (blob,) = con.execute("SELECT losses FROM results").fetchone()
        edited = np.frombuffer(blob[:16], dtype=np.float64).copy()
        edited[0] = 0.0  # the first test loss, hand-edited
        con.execute("UPDATE results SET losses = ?", (edited.tobytes() + blob[16:],))
    assert store.get("S", ["3"]) == {}


def test_a_truncated_store_blob_is_recomputed_not_a_raw_error(tmp_path):
    store = _store_with_one_row(tmp_path)
    with sqlite3.connect(store.path) as con:
        con.execute("UPDATE results SET losses = ?", (b"0123456789abc",))  # 13 bytes
    assert store.get("S", ["3"]) == {}


def test_feature_names_as_one_string_is_refused():
    X, y = _data()
    with pytest.raises(TypeError, match="single string 'abc'"):
        iw.wrap(_mlp(), (X[:30], y[:30]), (X[30:], y[30:]), weight_decay=WD, feature_names="abc")


def test_an_all_nan_claim_says_no_data_not_a_verdict():
    from influence_widgets.experiments import claims

    rows = pd.DataFrame([{"seed": s, "spearman": math.nan, "minimum": f"m{s}",
                          "stationary": True, "collapsed": False} for s in range(6)])
    c = claims.level("x", "k", "all NaN", rows, above=0.0)
    assert c.n == 0 and "no data" in c.main.verdict and "no data" in c.verdict


# ============================================================================ unclear errors


@pytest.mark.parametrize("call, error, text", [
    (lambda tm: iw.influence(tm, tm.train, tm.test, weight_decay="0.005"), TypeError,
     "weight_decay must be a finite number, got the text '0.005'"),
    (lambda tm: iw.influence(tm, tm.train, tm.test, chunk_size=2.5), TypeError,
     "chunk_size must be an integer, got 2.5"),
    (lambda tm: iw.TrainConfig(lr="0.1"), TypeError, "TrainConfig.lr must be a finite number"),
    (lambda tm: iw.TrainConfig(seed=1.5), TypeError, "TrainConfig.seed must be an integer"),
    (lambda tm: iw.compare(np.arange(10.0), np.arange(10.0) ** 2, n_boot=1.5), TypeError,
     "n_boot must be an integer"),
    (lambda tm: iw.compare(np.arange(10.0), np.arange(10.0) ** 2, seed="x"), TypeError,
     "seed must be an integer"),
    (lambda tm: iw.zoo.load(None), TypeError, "zoo.load takes a model's name"),
    (lambda tm: iw.influence(tm, tm.train, tm.test, device="tpu"), ValueError,
     "unknown device 'tpu'"),
    (lambda tm: iw.influence(tm, tm.train, tm.test, device="meta"), ValueError,
     "device='meta' holds shapes but no values"),
    (lambda tm: iw.train(_mlp(), tm.train, iw.TrainConfig(dtype="float16", steps=3)),
     ValueError, "half precision is too coarse"),
    (lambda tm: iw.influence(tm, tm.train, (tm.test[0][0], tm.test[1][0])), ValueError,
     "one row was given without its batch dimension"),
    (lambda tm: iw.hessian_spectrum(tm, tm.train, method="lanczos", k=0), ValueError,
     "k must be an integer >= 1"),
])
def test_unclear_errors_name_the_argument_and_the_fix(tm, call, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        call(tm)


@pytest.mark.parametrize("damping", [np.float32(0.25), torch.tensor(0.25, dtype=DT),
                                     torch.tensor(0.25), np.array(0.25)])
def test_numeric_scalars_are_numbers(tm, damping):
    expected = iw.influence(tm, tm.train, tm.test, damping=0.25)
    got = iw.influence(tm, tm.train, tm.test, damping=damping)
    assert torch.equal(got, expected)


class _Tuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3).to(DT)

    def forward(self, x):
        return self.lin(x), x


class _Dict(_Tuple):
    def forward(self, x):
        return {"logits": self.lin(x)}


@pytest.mark.parametrize("model, text", [
    (_Tuple, "forward returns a tuple"), (_Dict, r"forward returns a dict \(keys \['logits'\]\)"),
])
def test_forward_returning_a_tuple_or_dict_is_named(tm, model, text):
    with pytest.raises(TypeError, match=text):
        iw.influence(model(), tm.train, tm.test)


def test_mixed_dtypes_and_nan_weights_are_named_as_such(tm):
    mixed = _mlp()
    mixed[2].float()
    with pytest.raises(TypeError, match="mixes parameter dtypes"):
        iw.influence(mixed, tm.train, tm.test)
    broken = _mlp()
    with torch.no_grad():
        broken[0].weight[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"parameter '0.weight' holds NaN .* not the inputs"):
        iw.influence(broken, tm.train, tm.test)


def test_two_dimensional_mse_targets_in_a_dataset(tm):
    X, _ = _data()
    T = X[:, :2] * 2.0
    net = nn.Linear(3, 2).to(DT)
    a = iw.influence(net, _Pairs(X[:30], T[:30], as_python=False), (X[30:], T[30:]), loss="mse")
    b = iw.influence(net, (X[:30], T[:30]), (X[30:], T[30:]), loss="mse")
    assert torch.equal(a, b)


def test_an_inf_test_input_is_named_in_the_estimate_and_in_leave_one_out(tm):
    X, y = tm.test
    bad = X.clone()
    bad[2, 1] = math.inf
    with pytest.raises(FloatingPointError, match=r"test rows \[2\]"):  # as before
        iw.influence(tm, tm.train, (bad, y))
    with pytest.raises(ValueError, match="test inputs contain NaN or inf .*row 2"):
        iw.leave_one_out(tm, tm.train, (bad, y), [0, 1], config=_quiet_retrain(), store=None)


def test_a_cache_folder_that_is_a_file_keeps_the_trained_model(tmp_path, monkeypatch):
    from influence_widgets.models import zoo

    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(blocker))
    model, msgs = _messages(zoo.load, "iris-mlp-d1-w5")
    assert model.diagnostics["objective"] > 0
    assert any("could not be saved" in m and str(blocker) in m for m in msgs), msgs


def test_hessian_spectrum_of_a_one_parameter_model():
    X = torch.linspace(-1, 1, 9, dtype=DT)[:, None]
    net = nn.Linear(1, 1, bias=False).to(DT)
    out = iw.hessian_spectrum(net, (X, 3 * X), loss="mse", method="lanczos")
    # mse per row is 0.5 (w x - t)^2: H = mean(x^2)
    assert out["eigenvalues"].tolist() == pytest.approx([float((X**2).mean())], rel=1e-12)


def test_memory_is_checked_before_the_test_gradients_are_built(tm, monkeypatch):
    from influence_widgets.influence import solvers

    def never(*args, **kwargs):
        raise AssertionError("the test gradients were built before the memory check")

    monkeypatch.setattr(InfluenceEngine, "_test_grads", never)
    with pytest.raises(MemoryError, match="exact solver needs about"):
        iw.influence(tm, tm.train, tm.test, max_bytes=1)
    monkeypatch.setattr(solvers, "available_bytes", lambda device: 1000, raising=False)
    for name in ("exact", "cg", "arnoldi"):
        with pytest.raises(MemoryError, match="needs about .* only 0.00 GB is available.*"
                                              "test_indices"):
            iw.influence(tm, tm.train, tm.test, solver=name)


def _write(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("content, text", [
    (b"\xff\xfe\x00garbage\x00\x81", "is not a study table"),
    ("a,b\n1,2\n", "has no column 'seed'"),
    ("seed,spearman\n0,0.5\n1,abc\n", "column 'spearman' holds 'abc'"),
])
def test_results_table_on_a_bad_csv_names_the_file(tmp_path, capsys, content, text):
    from influence_widgets.__main__ import main

    path = _write(tmp_path / "depth.csv", content)
    assert main(["results-table", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and text in err


def test_results_table_to_an_unwritable_out_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from influence_widgets import experiments
    from influence_widgets.__main__ import main

    _write(tmp_path / "depth.csv", "seed,spearman\n0,0.5\n")
    monkeypatch.setattr(experiments, "results_table", lambda tables: "| table |\n")
    assert main(["results-table", str(tmp_path), "--out", str(tmp_path)]) == 2  # a folder
    assert "cannot write the results table to --out" in capsys.readouterr().err


def test_reproduce_refuses_an_absurd_number_of_seeds(capsys):
    from influence_widgets.__main__ import _parser

    with pytest.raises(SystemExit):
        _parser().parse_args(["reproduce", "depth", "--seeds", str(10**20)])
    assert "at most" in capsys.readouterr().err


# ============================================================================ what a solver knows


@dataclass(frozen=True)
class _ShiftSettings(SolverSettings):
    shift: float = setting(2.0, "the curvature is taken to be shift * I", above=0)


class _UndeclaredSolver(Solver):
    """A user's solver that declares no cost model."""

    name = "probe-undeclared"
    label = "undeclared"
    Settings = _ShiftSettings

    def _fit(self, objective):
        pass

    def _solve(self, V, damping, info):
        return V / (self.settings.shift + damping)


def test_a_solver_without_a_declared_cost_is_not_free(tm):
    from influence_widgets.ground_truth.eta import estimate_eta, solver_work

    register_solver(_UndeclaredSolver)
    try:
        p, n = 50, 30
        products, passes, note = solver_work("probe-undeclared", _ShiftSettings(), p, n)
        assert products == p and passes > 0 and "declares no cost model" in note
        engine = InfluenceEngine(tm, tm.train)
        eta = estimate_eta(engine.objective, "probe-undeclared")
        assert eta.hvps == engine.objective.p
    finally:
        unregister_solver("probe-undeclared")


def test_every_built_in_solver_declares_its_cost():
    from influence_widgets.influence.solvers import SOLVERS

    for name, cls in SOLVERS.items():
        if not cls.__module__.startswith("influence_widgets."):
            continue
        cost = cls.cost(cls.Settings(), 100, 50, 4, 8)
        assert cost.known, name
        assert "cost" in cls.__dict__ or any("cost" in b.__dict__ for b in cls.__mro__[1:-1]
                                             if b is not Solver), name


def test_solver_diagnostics_are_typed_and_a_renamed_key_is_loud(tm):
    from influence_widgets.influence import CGDiagnostics, Diagnostics, LiSSADiagnostics

    engine = InfluenceEngine(tm, tm.train)
    G = engine.objective.per_sample_grads(*tm.test)
    cg = engine.solver("cg", max_iter=2).solve(G, 0.0).diagnostics
    assert isinstance(cg, CGDiagnostics) and cg.converged is False and cg.iterations == 2
    assert cg["iterations"] == 2 and dict(cg)["solver"] == "cg"  # still reads as a dict
    assert "top_eigenvalue" not in cg  # not measured: absent, as in the dict it replaces
    assert [f.code for f in cg.findings(0.0)] == ["cg-not-converged"]
    with pytest.raises(TypeError, match="LiSSADiagnostics has no field 'restart'"):
        LiSSADiagnostics.of({"restart": 1})  # a renamed key fails where it is written
    loose = Diagnostics.of({"solver": "mine", "shift": 1.5})  # a user's solver: kept aside
    assert loose["shift"] == 1.5 and loose.extra == {"shift": 1.5}


def test_a_perturbation_larger_than_the_parameters_is_named_not_blamed_on_the_lr(tm):
    from influence_widgets.ground_truth import retraining_noise

    with pytest.raises(ValueError, match=r"perturb=1e\+30 moves the start by"):
        retraining_noise(tm, tm.train, tm.test, n_seeds=2, config=_quiet_retrain(), perturb=1e30,
                         store=None)


def test_wrap_with_a_weight_decay_ten_times_the_trained_one_warns():
    X, y = _data()
    trained = iw.train(_mlp(), (X[:30], y[:30]), iw.TrainConfig.preset("exact", weight_decay=0.005))
    _, right = _messages(iw.wrap, trained.model, (X[:30], y[:30]), (X[30:], y[30:]),
                         weight_decay=0.005)
    assert not [m for m in right if "does not match how this model was trained" in m], right
    _, wrong = _messages(iw.wrap, trained.model, (X[:30], y[:30]), (X[30:], y[30:]),
                         weight_decay=0.05)
    assert any("weight decay given does not match how this model was trained" in m
               for m in wrong), wrong
