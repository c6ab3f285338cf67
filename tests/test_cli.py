"""``python -m influence_widgets``: list, reproduce (tiny preset), clear errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from influence_widgets.__main__ import main


def test_list_names_studies_datasets_models_and_solvers():
    out = subprocess.run([sys.executable, "-m", "influence_widgets", "list"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for word in ("depth", "validation", "group", "iris", "digits", "cifar10", "image_folder",
                 "exact", "cg", "lissa", "arnoldi", "iris-mlp-d1-w5-wd"):
        assert word in out.stdout


def test_reproduce_tiny_writes_table_figures_and_summary(tmp_path, capsys):
    out = tmp_path / "depth"
    assert main(["reproduce", "depth", "--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "depth.csv")
    assert len(table) == 2 and {"depth", "spearman", "weight_decay"} <= set(table.columns)
    assert (out / "depth_trend.png").stat().st_size > 1000
    assert (out / "depth_scatter.png").exists()
    summary = (out / f"{out.name}_summary.md").read_text()
    # the published figures in a table of their own (their protocol is not ours)
    assert "Published figures" in summary and "0.66" in summary and "depth_trend.png" in summary
    assert "ref_spearman" not in summary and "Claims (models as units" in summary
    assert capsys.readouterr().out == ""  # --quiet


def test_reproduce_seeds_option(tmp_path):
    out = tmp_path / "solver"
    assert main(["reproduce", "solver", "--preset", "tiny", "--seeds", "2", "--out", str(out),
                 "--quiet", "--no-figures"]) == 0
    table = pd.read_csv(out / "solver.csv")
    assert sorted(table.seed.unique()) == [0, 1] and not list(out.glob("*.png"))


def test_unknown_names_exit_nonzero_with_one_line(capsys):
    assert main(["reproduce", "depht", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown study 'depht'" in err and "depth, width" in err
    assert main(["reproduce", "depth", "--preset", "huge"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown preset 'huge'" in err and "tiny, ci, quick, paper" in err


def test_missing_image_folder_is_a_clear_error(tmp_path, capsys):
    code = main(["reproduce", "group", "--preset", "tiny", "--root", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "does not exist" in err


def test_reproduce_ground_truth_tiny(tmp_path):
    out = tmp_path / "ground_truth"
    assert main(["reproduce", "ground_truth", "--preset", "tiny", "--out", str(out),
                 "--quiet"]) == 0
    table = pd.read_csv(out / "ground_truth.csv")
    assert set(table.truth) == {"warm_start", "lds", "pbrf"} and {"model", "curvature"} <= set(table)
    assert (out / "ground_truth_spread.png").stat().st_size > 1000
    summary = (out / f"{out.name}_summary.md").read_text()
    assert "| model | truth | solver |" in summary and "dattri" in summary


def test_two_studies_in_one_folder_never_overwrite_each_other(tmp_path):
    """Issue 22 (data loss): every output file is named for its study."""
    out = tmp_path / "shared"
    for study in ("depth", "width"):
        assert main(["reproduce", study, "--preset", "tiny", "--out", str(out), "--quiet",
                     "--no-figures"]) == 0
    depth, width = (out / "depth_summary.md").read_text(), (out / "width_summary.md").read_text()
    assert depth.startswith("# depth study") and width.startswith("# width study")
    assert (out / "depth.csv").exists() and (out / "width.csv").exists()
