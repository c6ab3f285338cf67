"""Issue 21 (3): export gives the browser a download (CSV and PNG), names files per visitor,
puts the statistics and each point's features in the CSV, and says clearly when it cannot
write."""

from __future__ import annotations

import base64
import io
import os
import re
import stat

import pandas as pd
import pytest
from test_explorer_view import MODEL, K, iris_model  # noqa: F401  (a module fixture)

import influence_widgets as iw


@pytest.fixture
def explorer(iris_model, monkeypatch):  # noqa: F811
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", False)
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    ex.compute(raise_errors=True)
    return ex


def test_the_csv_has_the_statistics_and_each_points_features(explorer, iris_model):  # noqa: F811
    frame = explorer.to_frame()
    names = iris_model.data.info["feature_names"]
    for name in names:
        assert f"feature: {name}" in frame.columns
    from influence_widgets.widgets.panels import for_display

    first = int(frame["index"].iloc[0])
    shown = for_display(iris_model.X_train[first], iris_model.data.info)
    assert frame[f"feature: {names[0]}"].iloc[0] == pytest.approx(float(shown[0]))
    assert frame["stat: spearman"].iloc[0] == pytest.approx(explorer.last_stats["spearman"])
    assert frame["stat: pearson"].nunique() == 1
    assert "stat: pearson CI low" in frame.columns and "stat: n" in frame.columns


def test_the_download_button_gives_the_browser_both_files(explorer):
    explorer.export_button.click()
    assert explorer.error is None, explorer.error
    page = explorer.download_html.value
    links = dict(re.findall(r"download='([^']+)' href='data:[a-z/]+;base64,([^']+)'", page))
    stem = explorer.export_stem()
    assert set(links) == {f"{stem}.csv", f"{stem}.png"}
    back = pd.read_csv(io.BytesIO(base64.b64decode(links[f"{stem}.csv"])))
    assert len(back) == K and "stat: spearman" in back.columns
    assert base64.b64decode(links[f"{stem}.png"])[:8] == b"\x89PNG\r\n\x1a\n"
    explorer.controls.solver.value = "cg"
    explorer.compute(raise_errors=True)
    assert explorer.download_html.value == ""  # no link to results no longer shown


def test_two_visitors_never_share_a_file_name(explorer, iris_model):  # noqa: F811
    other = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False,
                                 interactive=False)
    other.controls.k.value = K
    other.controls.gt_steps.value = 150
    other.compute(raise_errors=True)
    assert other.outcome.settings() == explorer.outcome.settings()
    assert other.export_stem() != explorer.export_stem()


def test_export_expands_home_and_writes_readable_files(explorer, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    umask = os.umask(0o022)
    try:
        paths = explorer.export("~/exports")
    finally:
        os.umask(umask)
    assert paths["csv"].parent == tmp_path / "exports" and paths["csv"].exists()
    for path in paths.values():  # as any file created under that umask (not 0600)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_export_to_a_file_or_an_unwritable_folder_is_a_clear_error(explorer, tmp_path,
                                                                   monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file: give a folder"):
        explorer.export(a_file)

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("influence_widgets._cache.atomic_write_bytes", refuse)
    with pytest.raises(PermissionError, match="choose a folder you can write to"):
        explorer.export(tmp_path / "locked")
