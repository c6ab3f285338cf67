"""Issue 21 (4, 10): the workshop app's participant view, and the copy of it that Voila serves."""

from __future__ import annotations

import json

import ipywidgets as W
import pytest
from test_explorer_view import MODEL, iris_model  # noqa: F401  (a module fixture)

import influence_widgets as iw
from influence_widgets.models import zoo
from influence_widgets.widgets import workshop


def _all_widgets(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _all_widgets(child)


@pytest.fixture
def app(iris_model, monkeypatch):  # noqa: F811
    keep = [n for n in zoo.names() if n.startswith("iris-")]
    monkeypatch.setattr(zoo, "available_names", lambda: keep)
    return iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False,
                                interactive=False, view="participant")


def test_models_are_named_in_words_and_missing_ones_explained(app):
    labels = dict((value, label) for label, value in app.controls.model.options)
    assert "Iris flowers" in labels["iris-mlp-d1-w5-wd"]
    assert "hidden layer" in labels["iris-mlp-d1-w5-wd"]
    assert "float64" not in labels["iris-mlp-d1-w5-wd"] and "lbfgs" not in labels["iris-mlp-d1-w5-wd"]
    assert not [n for n in labels if n.startswith(("digits", "mnist", "cifar"))]
    assert app.missing_models and all(not n.startswith("iris-") for n in app.missing_models)
    note = [w.value for w in _all_widgets(app) if isinstance(w, W.HTML)
            and "iw-missing-models" in w.value]
    assert note and f"{len(app.missing_models)} more models" in note[0]


def test_the_model_line_says_size_and_health(app, iris_model):  # noqa: F811
    n_params = sum(p.numel() for p in iris_model.model.parameters())
    assert f"{n_params:,} parameters" in app.model_line.value
    assert iris_model.health.line().split(":")[0] in app.model_line.value
    assert "TrainedModel(" not in app.model_line.value


def test_advanced_settings_are_folded_and_errors_come_first_in_plain_words(app):
    [fold] = [w for w in _all_widgets(app) if isinstance(w, W.Accordion)
              and "iw-advanced" in w._dom_classes]
    assert fold.selected_index is None
    inside = set(map(id, _all_widgets(fold)))
    for control in (app.controls.curvature, app.controls.params, app.controls.device,
                    app.controls.settings.damping, app.controls.gt_mode):
        assert id(control) in inside
    assert id(app.controls.compute) not in inside and id(app.controls.solver) not in inside
    assert app.children.index(app.error_box) < 2  # above the explorer
    app.controls.k.value = 3
    app.session.run = lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError(
        "the CIFAR-10 files are not on this machine\n/tmp/a\n/tmp/b\n/tmp/c"))
    app.compute()
    text = app.error_box.value
    assert "Something went wrong while computing" in text and "CIFAR-10" in text
    assert "FileNotFoundError" not in text and "Traceback" not in text and "/tmp/c" not in text


def test_the_app_notebook_is_one_short_cell(tmp_path):
    path = workshop.write_app(tmp_path / "app" / "workshop.ipynb")
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) == 1 and "participant_app()" in "".join(code[0]["source"])
    assert workshop.TITLE in "".join(nb["cells"][0]["source"])


def test_an_unknown_view_is_a_clear_error(iris_model):  # noqa: F811
    with pytest.raises(ValueError, match="'full', 'participant'"):
        iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, view="kiosk")
