"""The shared evaluation core, the study grids, presets and summaries (tiny settings only)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from influence_widgets import experiments as ex
from influence_widgets.experiments.core import Case, EvalCase, ModelCase, Truth, run_cases

TINY_LOO = {"optimizer": "adam", "lr": 1e-3, "steps": 20, "polish_steps": 0}
METRICS = ["pearson", "spearman", "pearson_lo", "pearson_hi", "spearman_lo", "spearman_hi",
           "top_eigenvalue", "min_eigenvalue", "train_acc", "test_acc", "grad_norm", "seconds"]


def _iris_case(**eval_changes) -> Case:
    model = ModelCase("iris", "mlp", depth=1, width=5, activation="tanh", weight_decay=0.005,
                      seed=0, train=ex.presets.iris_training("lbfgs"))
    ev = EvalCase(**{"k": 6, "truths": (Truth("warm_start", "all", TINY_LOO),), **eval_changes})
    return Case(model, ev, {"label": "tiny"})


@pytest.fixture(scope="module")
def tiny_table() -> pd.DataFrame:
    return run_cases([_iris_case(test_points=("highest", "median"))], study="unit")


def test_core_rows_have_every_column_and_finite_values(tiny_table):
    assert list(tiny_table.columns[: len(ex.COLUMNS)]) == list(ex.COLUMNS)
    assert "label" in tiny_table.columns  # label columns come after the standard ones
    assert len(tiny_table) == 2 and set(tiny_table.test_point) == {"highest", "median"}
    assert np.isfinite(tiny_table[METRICS].to_numpy(dtype=float)).all()
    assert tiny_table["spearman"].between(-1, 1).all()
    assert (tiny_table["n_eval"] == 6).all() and (tiny_table["error"] == "").all()
    row = tiny_table.iloc[0]
    assert (row.study, row.dataset, row.arch, row.depth, row.solver, row.loo_mode) == \
        ("unit", "iris", "mlp", 1, "exact", "warm_start")
    pair = tiny_table.attrs["pairs"][0]
    assert pair["estimated"].shape == pair["actual"].shape == (6,)


def test_same_seed_gives_the_same_table(tiny_table, tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path / "fresh"))  # no cached retrains
    again = run_cases([_iris_case(test_points=("highest", "median"))], study="unit")
    cols = [c for c in tiny_table.columns if c not in ex.TIMING_COLUMNS]
    pd.testing.assert_frame_equal(tiny_table[cols], again[cols])


def test_solver_errors_are_recorded_not_raised():
    case = _iris_case(solvers=("exact", "lissa"), select="all", k=None,
                      solver_options={"lissa": {"scale": 1e-3, "steps": 50}},
                      truths=(Truth(mode="exact"),))
    table = run_cases([case])
    lissa = table[table.solver == "lissa"].iloc[0]
    assert lissa.error.startswith("DivergenceError") and math.isnan(lissa.spearman)
    exact = table[table.solver == "exact"].iloc[0]
    assert exact.error == "" and exact.spearman == pytest.approx(1.0)
    assert exact.compared_with == "exact" and exact.loo_mode == "none"


def test_groups_one_row_per_group_size_and_noise_floor():
    """Issue 15 (5): group sizes are never pooled into one row (a mean group size like 3.55)."""
    case = _iris_case(group_sizes=(2, 4), group_repeats=1, noise_seeds=2)
    table = run_cases([case])
    assert list(table.group_size) == [2.0, 4.0] and (table["select"] == "groups").all()
    assert (table.n_eval == 3).all()  # top, bottom and one random group of each size
    assert (table.noise_std > 0).all() and table.frac_within_noise.between(0, 1).all()
    # real retraining noise: new initialisations, never a perturbed start
    assert table.noise_source.str.contains("initialisation").all()
    assert not table.noise_source.str.contains("perturbed").any()


def test_each_ground_truth_is_judged_by_its_own_real_noise():
    """Issue 19 (3): every truth's floor is the noise it declares - real retraining randomness
    (new initialisations) for the retraining truths, the batch order for mini-batch retraining;
    truths with the same noise share one floor; a seed-averaged truth has standard errors."""
    truths = (Truth("warm_start", "all", TINY_LOO), Truth("warm_start", "last_layer", TINY_LOO),
              Truth("pbrf", "all", TINY_LOO),
              Truth("minibatch", settings={"n_seeds": 2, "epochs": 5}))
    table = run_cases([_iris_case(truths=truths, k=4, noise_seeds=2)])
    rows = table.set_index(["truth", "loo_params"])
    floors, sources = rows["noise_std"], rows["noise_source"]
    real = [("warm_start", "all"), ("warm_start", "last_layer"), ("pbrf", "all")]
    assert floors[real].nunique() == 1 and (floors > 0).all()
    assert all("initialisation" in sources[k] and sources[k].startswith("scratch")
               for k in real)
    assert "mini-batch order" in sources["minibatch", "all"]
    assert "initialisation" not in sources["minibatch", "all"]
    assert floors["minibatch", "all"] != floors["warm_start", "all"]
    assert rows.loc[("minibatch", "all"), "actual_se"] > 0
    assert np.isnan(rows.loc[real, "actual_se"]).all()
    # the PBRF is compared with the estimate it targets: damped Gauss-Newton
    pbrf = rows.loc[("pbrf", "all")]
    assert (pbrf.curvature, pbrf.damping) == ("ggn", 1e-3)
    # frac_within_noise is |actual| < noise_std, the band drawn around y = 0
    pairs = table.attrs["pairs"]
    for i, row in table.iterrows():
        assert row.frac_within_noise == pytest.approx(
            np.mean(np.abs(pairs[i]["actual"]) < row.noise_std))


def test_depth_study_tiny_and_summary():
    table = ex.depth_study("tiny")
    assert list(table.depth) == [1, 2] and (table.study == "depth").all()
    summary = ex.summarize(table)
    assert {"spearman", "spearman_sd", "n"} <= set(summary.columns)
    # the published figures never sit in our columns (their protocol differs): a table of
    # their own, with the protocol stated
    assert not any(c.startswith("ref_") for c in summary.columns)
    published = ex.reference_table("depth")
    assert published.loc[published.depth == 1, "published Spearman"].item() == 0.66
    assert published["source and protocol"].str.contains("LAST-LAYER Hessian").all()
    text = ex.markdown_summary("depth", table, preset="tiny", seconds=1.0)
    assert "Published figures (their protocol, not ours)" in text and "0.66" in text
    assert "## Reference" in text and "## Claims" in text


def test_missing_dataset_is_skipped_with_a_note(tmp_path, monkeypatch, no_real_data):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path / "empty"))
    table = ex.weight_decay_study("tiny", datasets=("mnist",))
    assert table.empty and list(table.columns[: len(ex.COLUMNS)]) == list(ex.COLUMNS)
    assert table.attrs["notes"] and table.attrs["notes"][0].startswith("mnist skipped")


def test_synthetic_image_folder_is_readable(tmp_path):
    from influence_widgets.datasets import image_folder

    root = ex.synthetic_image_folder(tmp_path / "shapes", n_classes=2, per_class=4, size=8)
    data = image_folder(root, image_size=8)
    assert data.n_classes == 2 and data.X_train.shape[1:] == (3, 8, 8)
    assert ex.synthetic_image_folder(tmp_path / "shapes", n_classes=2, per_class=4, size=8) == root


@pytest.mark.parametrize("study", sorted(ex.STUDIES))
def test_every_study_has_the_three_presets_with_the_same_options(study):
    presets = ex.PRESETS[study]
    assert {"tiny", "quick", "paper"} <= set(presets)
    keys = {name: set(options) for name, options in presets.items()}
    assert all(k == keys["quick"] for k in keys.values()), keys
    assert ex.get_study(study).presets == list(presets)


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown study 'nope'; valid names: depth"):
        ex.run_study("nope")
    with pytest.raises(ValueError, match="unknown preset 'huge'.*valid: tiny, ci, quick, paper"):
        ex.depth_study("huge")
    with pytest.raises(ValueError, match="unknown option.*depht.*valid:.*depths"):
        ex.depth_study("tiny", depht=(1,))
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        ex.load_data("nope")
    with pytest.raises(ValueError, match="unknown select"):
        EvalCase(select="best")


def test_both_weight_decay_arms_train_alike_and_the_table_says_how_healthy_each_is():
    """Issue 20: the arms differ in weight decay only; trained to stationarity without weight
    decay the Iris nets are degenerate (separable data), and the health column says so; a fixed
    budget stops short of a stationary point instead, and says that."""
    table = ex.depth_study("tiny", depths=(1,), weight_decays=(0.005, 0.0))
    arms = table.set_index("weight_decay")
    assert arms.loc[0.005, "health"] == "healthy" and arms.loc[0.0, "health"] == "degenerate"
    # the separable regime: the objective under the degenerate rule's 1e-3, still stationary
    assert arms.loc[0.0, "objective"] < 1e-3 and bool(arms.loc[0.0, "stationary"])
    budget = ex.depth_study("tiny", depths=(1,), weight_decays=(0.0,), train_no_wd="budget")
    assert budget["objective"].min() > 1e-3 and (budget["health"] == "not stationary").all()
    assert not budget["stationary"].any()
    summary = ex.summarize(budget)
    assert {"spearman_se", "objective", "grad_norm", "converged"} <= set(summary.columns)

def test_ground_truth_study_tiny_every_solver_against_loo_lds_and_pbrf():
    """One row per model x seed x test point x solver x ground truth; LDS rows are the LDS of
    ``iw.ground_truth.lds`` on the same seeded subsets; PBRF rows judge the damped Gauss-Newton
    estimate (PBRF damping), LOO and LDS rows the Hessian one; the summaries quote dattri."""
    import influence_widgets as iw
    from influence_widgets.experiments import studies as st

    o = ex.PRESETS["ground_truth"]["tiny"]
    table = st.ground_truth_study("tiny")
    assert len(table) == o["n_test"] * len(o["solvers"]) * 3
    assert list(table.columns[: len(ex.COLUMNS)]) == list(ex.COLUMNS)
    assert set(table.truth) == {"warm_start", "lds", "pbrf"} and (table.error == "").all()
    assert table["spearman"].between(-1, 1).all() and (table.noise_std > 0).all()
    lds_rows = table[table.truth == "lds"]
    assert (lds_rows.n_eval == o["n_subsets"]).all() and (lds_rows.loo_mode == "scratch").all()
    assert (lds_rows.group_size == 60).all()  # half of Iris's 120 training points removed
    pbrf = table[(table.truth == "pbrf") & table.solver.isin(["exact", "cg", "arnoldi"])]
    assert (pbrf.curvature == "ggn").all() and (pbrf.damping == o["pbrf_damping"]).all()
    hessian = table[(table.truth != "pbrf") & (table.solver == "exact")]
    assert (hessian.curvature == "hessian").all() and (hessian.damping == 0).all()
    assert (table.loc[table.solver == "cg", "rel_error"] < 1e-8).all()

    # the LDS column is iw.ground_truth.lds of the exact estimate, subsets seeded by the seed
    exact = lds_rows[lds_rows.solver == "exact"].sort_values("test_index")
    model = st.ground_truth_model_case("iris_mlp", 0, o)
    data = ex.load_data("iris")
    tm = ex.train_case(model, data)
    idx = exact.test_index.tolist()
    test = (data.X_test[idx], data.y_test[idx])
    res = iw.ground_truth.lds(tm, data.train, test, iw.influence(tm, data.train, test),
                              n_subsets=o["n_subsets"], seed=0, dtype=tm.config.dtype)
    np.testing.assert_allclose(exact.spearman.to_numpy(), res.per_test.numpy(), atol=1e-12)

    comparison = st.ground_truth_comparison(table)
    assert comparison.loc["exact", ("iris_mlp", "LDS")].startswith(f"{exact.spearman.mean():.2f}")
    dattri = ("dattri (reference, as published)", "MNIST logistic regression: LOO / LDS")
    assert comparison.loc["exact", dattri] == "0.88 / 0.80"
    assert "within" in comparison.loc["noise floor", ("iris_mlp", "LOO")]
    claims = {c.key: c for c in st.ground_truth_claims(table)}
    assert {"iris_bar", "identity_lds:exact", "arnoldi_below:lds", "pbrf_over_loo"} <= set(claims)
    # the unit is the trained model: one model (one seed) here, its 2 test points averaged
    for c in claims.values():
        assert c.n == 1 and c.main.verdict == ex.claims.NOT_REPRODUCED  # too few models
    ex.claims.check_claims(claims.values())
    assert len(st.ground_truth_conclusion(table)) >= 5
    with pytest.raises(ValueError, match="unknown model.*'nope'.*valid: iris_logreg"):
        st.ground_truth_study("tiny", models=("nope",))


def test_a_case_with_fewer_than_three_finite_pairs_is_a_row_with_an_error_not_a_crash(
        monkeypatch):
    """A model whose retrains all diverged (NaN LOO) stopped a 160-model study after 24 min
    ("need at least 3 points to compare, got 0"); now its row says so and the study goes on."""
    import influence_widgets.experiments.core as core

    real = core._unit_sums

    def nan_sums(values, units):
        out = real(values, units).clone()
        out[:, 1:] = float("nan")  # only one finite (estimate, LOO) pair per test point
        return out

    monkeypatch.setattr(core, "_unit_sums", nan_sums)
    table = run_cases([_iris_case()], study="unit")
    row = table.iloc[0]
    assert math.isnan(row.spearman) and row.n_eval == 1
    assert "1 of 6 (estimate, warm_start) pairs are finite" in row.error
