"""Issue 21 (12) and issue 22's explorer probes: a restricted setting refuses a bad value with
the valid ones named and keeps the value it had; results are built by keyword."""

from __future__ import annotations

import dataclasses

import pytest
from test_explorer_view import MODEL, K, iris_model  # noqa: F401  (a module fixture)
from traitlets import TraitError

import influence_widgets as iw
from influence_widgets.widgets.session import Outcome


@pytest.fixture
def explorer(iris_model):  # noqa: F811
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False,
                              interactive=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    return ex


@pytest.mark.parametrize("name, bad, named", [
    ("gt_mode", "bogus", "'lds'"),
    ("solver", "bogus", "'ekfac'"),
    ("curvature", "bogus", "'ggn'"),
    ("params", "bogus", "'last_layer'"),
    ("selection", "bogus", "'random'"),
    ("device", "tpu", "'cpu'"),
    ("test_pick", "bogus", "'median'"),
    ("model_name", "nope", repr(MODEL)),
])
def test_a_bad_choice_is_refused_naming_the_valid_ones_and_not_kept(explorer, name, bad, named):
    before = getattr(explorer, name)
    with pytest.raises(TraitError, match="not one of its choices") as info:
        setattr(explorer, name, bad)
    assert named in str(info.value)
    assert getattr(explorer, name) == before
    control = getattr(explorer.controls, "model" if name == "model_name" else name)
    assert control.value == before  # the control and the setting agree


def test_out_of_range_numbers_are_refused(explorer):
    with pytest.raises(TraitError, match="press Compute first"):
        explorer.selected = 10000
    explorer.compute(raise_errors=True)
    with pytest.raises(TraitError, match=f"{K} dots: 0 to {K - 1}"):
        explorer.selected = 10000
    explorer.selected = 2
    assert explorer.selected == 2
    before = explorer.test_index
    with pytest.raises(TraitError, match="30 test points, 0 to 29"):
        explorer.test_index = 10000
    assert explorer.test_index == before
    with pytest.raises(TraitError, match="at least 3"):
        explorer.k = 1


def test_constructor_names_the_valid_models_and_devices(iris_model):  # noqa: F811
    with pytest.raises(ValueError, match=f"its models are: {MODEL}, iris-mlp"):
        iw.InfluenceExplorer({MODEL: iris_model}, model="nope", threaded=False)
    with pytest.raises(ValueError, match="choose one of: cpu"):
        iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, device="tpu", threaded=False)


def test_outcome_is_built_by_keyword_only():
    fields = dataclasses.fields(Outcome)
    assert all(f.kw_only for f in fields)
    with pytest.raises(TypeError):
        Outcome(*([None] * 12))
