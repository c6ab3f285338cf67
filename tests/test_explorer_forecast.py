"""Issue 24 (4): the trust forecast in the explorer: made before any retraining, shown before
the run (and in the question before a long one), beside the measured Spearman after it, and
read by the trust report."""

from __future__ import annotations

import dataclasses

import pytest
from test_explorer_view import MODEL, K, iris_model  # noqa: F401  (a module fixture)

import influence_widgets as iw
from influence_widgets.forecast import forecast_point


@pytest.fixture
def explorer(iris_model, monkeypatch):  # noqa: F811
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", False)
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    return ex


def test_the_forecast_is_the_public_one_and_sits_beside_the_measured_spearman(explorer):
    statuses = []
    explorer.controls.status.observe(lambda c: statuses.append(c["new"]), "value")
    out = explorer.compute(raise_errors=True)
    req = out.request
    tm = explorer.session.model(req.model)
    public = forecast_point(tm, tm.train, tm.data.test, req.test_index, solver=req.solver,
                            truth=req.gt_mode, k=req.k, damping=req.damping,
                            solver_options=req.settings.options(),
                            truth_settings=dataclasses.asdict(req.gt_settings))
    fc = out.forecast
    assert fc is not None and fc.spearman == pytest.approx(public.spearman, abs=1e-9)
    assert -1.0 <= fc.lo <= fc.spearman <= fc.hi <= 1.0
    # before the retraining: the status names the expected agreement
    before = [s for s in statuses if "expected agreement with" in s]
    assert before and statuses.index(before[0]) < statuses.index(
        next(s for s in statuses if s.startswith("done in")))
    # after: the measured Spearman beside the forecast's interval
    done = explorer.controls.status.value
    assert f"measured Spearman {out.stats['spearman']:.2f}" in done and "80% interval" in done
    # the trust report reads it (a finding keyed "forecast")
    assert "forecast" in {f.code for f in out.report.findings}


def test_a_long_compute_asks_first_with_the_forecast_in_the_question(explorer, monkeypatch):
    monkeypatch.setattr(iw.InfluenceExplorer, "CONFIRM_SECONDS", 0.0)  # every compute is long
    assert explorer.compute(raise_errors=True, ask=True) is None  # it waits for the user
    text = explorer.confirm_box.children[0].value
    assert "Trust forecast, before any retraining" in text and "80% interval" in text
    assert explorer.session.retrain_count == 0  # nothing was retrained to forecast
