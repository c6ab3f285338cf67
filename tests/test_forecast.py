"""The trust forecast: features against exact answers, predict's table and intervals, the shipped
JSON forecaster (no pickle, provenance), the corpus command (tiny, resumable) and the fit."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import clustered
from torch import nn

import influence_widgets as iw
from influence_widgets.forecast import corpus, features
from influence_widgets.forecast.model import Forecaster, conformal_quantile, fit
from influence_widgets.models import TrainConfig
from influence_widgets.models.architectures import mlp_spec


@pytest.fixture(scope="module")
def tiny(one_thread):
    """A float64 tanh MLP (3 inputs, 3 hidden, 3 classes: 24 parameters) trained to a minimum
    with weight decay, and its data."""
    X, y = clustered(36, d=3, k=3, seed=1)
    Xt, yt = clustered(9, d=3, k=3, seed=2)
    config = TrainConfig.preset("exact", weight_decay=1e-2, grad_tol=1e-9, device="cpu")
    tm = iw.train(mlp_spec((3,), 3, depth=1, width=3, activation="tanh"), (X, y), config)
    return tm, (X, y), (Xt, yt)


def _full_hessian(tm, X, y):
    params = [p for p in tm.model.parameters()]
    names = [n for n, _ in tm.model.named_parameters()]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    theta = torch.cat([p.detach().reshape(-1) for p in params])

    def objective(flat):
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split(sizes), shapes))))
        out = torch.func.functional_call(tm.model, parts, (X,))
        return (nn.functional.cross_entropy(out, y)
                + 0.5 * tm.config.weight_decay * flat.pow(2).sum())

    return torch.autograd.functional.hessian(objective, theta)


def test_features_match_exact_answers(tiny):
    tm, (X, y), (Xt, yt) = tiny
    k = 10
    c = features.compute(tm, (X, y), (Xt, yt), solver="cg", truth="warm_start", k=k,
                         damping=1e-3, truth_settings={"steps": 200, "lr": 2e-3})
    t = c.table
    assert list(t.columns) == list(features.FEATURES) and len(t) == 9
    p = sum(q.numel() for q in tm.model.parameters())
    assert p == 24 and p <= features.LANCZOS_STEPS  # Lanczos spans the whole space: exact
    H = _full_hessian(tm, X, y)
    ev = torch.linalg.eigvalsh(H)
    row = t.iloc[0]
    assert row["log_top_eig"] == pytest.approx(math.log10(float(ev.max())), abs=1e-8)
    assert row["min_eig_rel"] == pytest.approx(float(ev.min() / ev.max()), abs=1e-8)
    neg = float(ev.clamp(max=0).abs().sum() / ev.abs().sum())
    assert row["neg_mass"] == pytest.approx(neg, abs=1e-8)
    assert row["log_damping_rel"] == pytest.approx(math.log10(1e-3 / float(ev.max())), abs=1e-8)
    assert row["log_params"] == pytest.approx(math.log10(24))
    assert row["depth"] == 1 and row["log_width"] == pytest.approx(math.log10(3))
    assert row["kinked"] == 0 and row["log_n_train"] == pytest.approx(math.log10(36))
    assert row["log_weight_decay"] == pytest.approx(math.log10(1e-2 + 1e-6))
    assert row["solver_cg"] == 1 and row["solver_exact"] == 0
    assert row["truth_warm_start"] == 1 and row["truth_exact"] == 0
    assert row["log_truth_steps"] == pytest.approx(math.log10(201))
    assert row["log_truth_lr"] == pytest.approx(math.log10(2e-3))
    assert row["log_k"] == pytest.approx(1.0)
    # the test point: loss, margin and gradient norm by hand
    with torch.no_grad():
        out = tm.model(Xt)
    loss = nn.functional.cross_entropy(out, yt, reduction="none")
    other = out.clone()
    other[torch.arange(9), yt] = -torch.inf
    margin = out[torch.arange(9), yt] - other.max(dim=1).values
    np.testing.assert_allclose(t["test_loss"], loss.numpy(), rtol=1e-10)
    np.testing.assert_allclose(t["margin"], margin.numpy(), rtol=1e-10)
    for r in range(9):
        tm.model.zero_grad()
        nn.functional.cross_entropy(tm.model(Xt[r : r + 1]), yt[r : r + 1]).backward()
        g = torch.cat([q.grad.reshape(-1) for q in tm.model.parameters()]).norm()
        assert t["log_test_grad"].iloc[r] == pytest.approx(math.log10(float(g)), abs=1e-9)
    # the estimate's concentration, from the estimate itself
    est = c.estimate.values.double().numpy()
    a = np.abs(est[3])
    top = np.sort(a)[::-1][:k]
    assert t["topk_share"].iloc[3] == pytest.approx(top.sum() / a.sum(), rel=1e-12)
    assert t["top1_share"].iloc[3] == pytest.approx(top[0] / top.sum(), rel=1e-12)
    assert t["participation"].iloc[3] == pytest.approx(top.sum() ** 2 / (top**2).sum() / k)
    # CG converges on 24 parameters: its error against the exact solve is tiny
    assert (t["solver_rel_error"] < -5).all()
    assert (t["solver_vs_exact"] > 0.999).all()


def test_kinked_activation_and_module_input(tiny):
    _, (X, y), (Xt, yt) = tiny
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(),
                        nn.Linear(5, 3)).double()
    t = features.compute(net, (X, y), (Xt, yt), k=5, weight_decay=0.0).table
    assert (t["kinked"] == 1).all() and (t["depth"] == 2).all()
    assert (t["solver_exact"] == 1).all() and (t["solver_vs_exact"] == 1).all()


def test_conformal_quantile():
    r = np.arange(1, 11, dtype=float)  # n = 10: the ceil(11 * 0.8) = 9th smallest
    assert conformal_quantile(r, 0.8) == 9.0
    assert conformal_quantile(r[:4], 0.8) == 4.0  # ceil(5 * 0.8) = 4
    assert math.isinf(conformal_quantile(r[:3], 0.8))  # ceil(4 * 0.8) = 4 > 3: no quantile
    assert conformal_quantile(np.array([np.nan, *r]), 0.8) == 9.0  # NaN is no residual


def _synthetic_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(features.FEATURES)))
    t = pd.DataFrame(X, columns=list(features.FEATURES))
    t["spearman"] = np.tanh(0.6 * t["log_top_eig"] - 0.4 * t["neg_mass"]) + rng.normal(
        0, 0.05, n)
    t["case_id"] = [f"m{i % 30}" for i in range(n)]
    t["dataset"] = np.where(np.arange(n) % 30 < 15, "a", "b")
    t["solver"], t["truth"] = "exact", "warm_start"
    return t


def test_fit_round_trips_through_json_without_pickle(tmp_path, monkeypatch):
    table = _synthetic_table()
    f = fit(table, provenance={"note": "synthetic"})
    assert 0 < f.halfwidth < 0.5
    path = tmp_path / "f.json"
    f.to_json(path)

    def refuse(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    g = Forecaster.from_json(path)
    X = table[list(features.FEATURES)]
    np.testing.assert_array_equal(f.predict_raw(X), g.predict_raw(X))
    assert g.provenance == {"note": "synthetic"} and g.halfwidth == f.halfwidth
    # it learned the function, not the noise
    assert np.mean(np.abs(g.predict_raw(X) - table["spearman"])) < 0.1
    imp = g.importance()
    assert set(imp.index[:2]) == {"log_top_eig", "neg_mass"}


def test_out_of_range_gets_a_wide_interval_and_a_note():
    f = fit(_synthetic_table(), halfwidth=0.2)
    X = _synthetic_table(4, seed=1)[list(features.FEATURES)].clip(-1, 1)
    X.loc[2, "log_top_eig"] = 50.0
    out = f.predict(X, ["exact", "exact", "exact", "lissa"], ["warm_start"] * 4)
    assert list(out.columns) == ["spearman", "lo", "hi", "in_range", "note"]
    assert out["in_range"].tolist() == [True, True, False, False]
    assert (out.loc[[2, 3], "lo"] == -1).all() and (out.loc[[2, 3], "hi"] == 1).all()
    assert "log_top_eig=50" in out.loc[2, "note"] and "'lissa'" in out.loc[3, "note"]
    inside = out.loc[[0, 1]]
    assert np.allclose(inside["hi"] - inside["lo"],
                       np.minimum(inside["spearman"] + 0.2, 1) - np.maximum(
                           inside["spearman"] - 0.2, -1))


def test_shipped_forecaster_is_json_with_provenance(monkeypatch):
    from influence_widgets.forecast import load, shipped_path

    path = shipped_path()
    d = json.loads(path.read_text())  # plain JSON
    prov = d["provenance"]
    for key in ("version", "git_commit", "date", "corpus_rows", "corpus_models", "command"):
        assert prov[key], key
    assert prov["corpus_rows"] >= 1000 and d["features"] == list(features.FEATURES)
    assert len(prov["case_ids"]) == prov["corpus_models"]  # which drawn cases it was fitted on
    assert 0 < d["halfwidth"] < 1 and path.stat().st_size < 1_000_000
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle used"))
    f = load()
    assert f.features == list(features.FEATURES)


def test_predict_table(tiny):
    tm, train, test = tiny
    out = iw.trust.predict(tm, train, test, solver="exact", truth="warm_start", k=10)
    assert len(out) == 9 and out["test_index"].tolist() == list(range(9))
    for col in ("spearman", "lo", "hi", "in_range", "note", *features.FEATURES):
        assert col in out.columns
    assert ((out["lo"] <= out["spearman"]) & (out["spearman"] <= out["hi"])).all()
    assert ((out["lo"] >= -1) & (out["hi"] <= 1)).all()
    assert out.loc[~out["in_range"], "note"].str.contains("outside").all()
    two = iw.trust.predict(tm, train, test, test_indices=[4, 7], k=10, steps=200)
    assert two["test_index"].tolist() == [4, 7]
    assert two["log_truth_steps"].iloc[0] == pytest.approx(math.log10(201))
    # the same inputs give the same numbers
    again = iw.trust.predict(tm, train, test, test_indices=[4, 7], k=10, steps=200)
    pd.testing.assert_frame_equal(two, again)


def test_predict_unknown_solver_is_wide_and_says_so(tiny):
    tm, train, test = tiny
    with pytest.raises(TypeError, match="solver_options"):  # LiSSA's steps or the warm start's?
        iw.trust.predict(tm, train, test, solver="lissa", k=10, test_indices=[0], steps=50)
    out = iw.trust.predict(tm, train, test, solver="lissa", k=10, test_indices=[0],
                           solver_options={"steps": 50}, truth_settings={"steps": 200},
                           repeats=1)
    assert out["log_truth_steps"].iloc[0] == pytest.approx(math.log10(201))
    assert out["lo"].iloc[0] == -1 and out["hi"].iloc[0] == 1
    assert "lissa" in out["note"].iloc[0] and not out["in_range"].iloc[0]
    with pytest.raises(TypeError, match="unknown setting"):
        iw.trust.predict(tm, train, test, k=10, bogus=1)


def test_forecast_point_and_trust_report(tiny):
    from influence_widgets.evaluate.trust import trust_report
    from influence_widgets.forecast import forecast_point

    tm, train, test = tiny
    fc = forecast_point(tm, train, test, 2, solver="cg", k=10)
    assert fc.lo <= fc.spearman <= fc.hi
    assert fc.line().startswith("expected agreement with LOO warm start")
    assert "inside" in fc.beside(fc.spearman) and "OUTSIDE" in fc.beside(fc.hi + 0.5)
    report = trust_report(forecast=fc, comparison={"spearman": fc.hi + 0.5, "n": 10})
    codes = [f.code for f in report.findings]
    assert "forecast" in codes and "forecast-missed" in codes


def test_corpus_command_runs_tiny_and_resumes(tmp_path, one_thread):
    from influence_widgets.__main__ import main

    out = tmp_path / "corpus"
    model = tmp_path / "f.json"
    assert main(["forecast-corpus", "--tiny", "--cases", "3", "--out", str(out), "--quiet",
                 "--fit", "--model", str(model)]) == 0
    files = sorted((out / "cases").glob("*.csv"))
    assert [p.stem for p in files] == ["tiny-0000", "tiny-0001", "tiny-0002"]
    table = corpus.load(out)
    assert set(table["solver"]) == {"exact", "cg"} and set(table["truth"]) == {
        "warm_start", "exact"}
    assert table["spearman"].between(-1, 1).all()
    f = Forecaster.from_json(model)
    assert f.provenance["corpus_rows"] == len(table) and (out / "cv.csv").exists()
    # interrupted after the first case: it is saved, and a second run computes only the rest
    cases = corpus.tiny_cases(2, seed=5)
    again = tmp_path / "again"

    def stop(done, total, info):
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        corpus.generate(again, cases, progress=stop)
    first = again / "cases" / "tiny-0000.csv"
    assert first.exists() and not (again / "cases" / "tiny-0001.csv").exists()
    stamp = first.stat().st_mtime_ns
    seen = []
    corpus.generate(again, cases, progress=lambda d, t, i: seen.append(i.get("case_id")))
    assert first.stat().st_mtime_ns == stamp and seen == ["tiny-0001", None]
    # the same case gives the same numbers
    redo = corpus.evaluate(cases[0])
    np.testing.assert_allclose(redo["spearman"], pd.read_csv(first)["spearman"])
