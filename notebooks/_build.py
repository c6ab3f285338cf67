"""Write every bundled notebook (00_quickstart, 01-08 one per finding, 09 the trust forecast),
outputs stripped.

This is the one source of the notebooks: edit the cells here, never the ``.ipynb`` files, then run
from the repository root::

    .venv/bin/python notebooks/_build.py           # (re)write the notebooks
    .venv/bin/python notebooks/_build.py --check   # exit 1 if a committed notebook is stale

The output is deterministic (fixed cell ids, no outputs, no execution counts), so the same cells
give byte-identical files; ``tests/test_notebook_sources.py`` fails when a committed notebook
differs from what this script writes. Notebooks 01-07 explain their finding, run the study under
``PRESET`` (``quick`` unless ``IW_PRESET=paper``), show the figures, print our numbers beside the
reference and assert what holds on the quick preset. CI executes them in ``tests/test_notebooks.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

#: Notebook-level metadata shared by every notebook.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}

#: File name -> its cells in order, each ``("md" | "code", source)`` or with a third element, the
#: cell's metadata (e.g. :data:`CI_CHECK`); filled below, 00 first.
NOTEBOOKS: dict[str, list[tuple]] = {}

# ---------------------------------------------------------------------------------------------
# Cells shared by notebooks 01-07
# ---------------------------------------------------------------------------------------------

SETUP = """\
%matplotlib inline
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from IPython.display import Image, display
from matplotlib.figure import Figure

import influence_widgets as iw
from influence_widgets import experiments as ex
from influence_widgets import plots

# The live run below: by default the slim "ci" grid (about a minute; too few models for a
# verdict: the reported verdicts are shown first, from docs/results). IW_PRESET=quick recomputes
# the reported ones (minutes on a CPU); IW_PRESET=paper runs the full grid (meant for a GPU).
PRESET = os.environ.get("IW_PRESET", "ci")
assert PRESET in ("ci", "quick", "paper"), f"IW_PRESET must be ci, quick or paper, not {PRESET!r}"
if PRESET != "paper":
    torch.set_num_threads(1)  # the models are tiny: one thread is fastest on a shared CPU
RESULTS = Path("..") / "docs" / "results"  # what `make reproduce-quick` wrote
pd.options.display.float_format = "{:.3g}".format  # significant digits: small values stay visible
print("preset:", PRESET)"""


def reference_cell(study: str) -> str:
    return f"""\
print("Reference figures, quoted literally from the papers (see docs/findings.md):")
for note in ex.reference_notes({study!r}):
    print(" -", note)
published = ex.reference_table({study!r})
if not published.empty:  # in a table of their own: their protocol differs from ours
    display(published)"""


#: Metadata of the CI checks: collapsed in JupyterLab, tagged so they can be found or skipped.
CI_CHECK = {"jupyter": {"source_hidden": True}, "tags": ["ci-check"]}

CLAIMS_HOW = """\
    Every claim is computed from the table with the **trained model as the unit**: the rows of
    one model (its test points, solvers) are averaged first, and seeds that reached the same
    minimum count once. Only models at a stationary point that did not collapse carry a finding;
    the others are counted and reported apart. A verdict is two-sided: "held" (beyond two
    standard errors), "reversed beyond 2 SE", or "not reproduced at this scale" (also with fewer
    than 5 models per arm). Each claim is judged on the preset seeds and on a disjoint set of
    check seeds; a verdict that differs between them reads "unstable" and is never called held."""


def results_first(study: str, what: str = "") -> list[tuple]:
    """The reported results of ``study`` (the quick preset, both seed sets), shown before
    anything is computed: the figures and the claims a ``reproduce`` run stored."""
    return [
        ("md", f"""\
    ## The reported results, first

    What the README reports{what}: `python -m influence_widgets reproduce {study} --preset quick
    --out docs/results/{study}` (`make reproduce-quick` runs every study) stored the table, the
    figures and `{study}_summary.md` (its date and settings) under `docs/results/{study}`. They are shown
    here before anything is computed; the cells after them run the study again."""),
        ("code", f"""\
    stored = ex.stored_results({study!r}, RESULTS / {study!r})
    if stored is None:
        print("not stored yet: run `make reproduce-quick` to make the reported results")
    else:
        reported, figures = stored
        for path in figures:
            display(Image(filename=str(path)))
        display(ex.claims_frame(ex.study_claims({study!r}, reported)))"""),
    ]


def health_cells(table: str) -> list[tuple]:
    return [
        ("md", """\
    **Which models can carry a claim?** Each model's health, counted once per model
    (`iw.zoo` and the explorer show the same assessment): healthy, collapsed (one output for
    every input), degenerate (separable data without weight decay), not stationary, indefinite.
    Collapsed models are left out of every claim; models not at a stationary point are reported
    apart."""),
        ("code", f"ex.health_table({table})"),
    ]


def claims_cells(study: str, table: str) -> list[tuple]:
    """The study's claims computed from its table (printed, never typed), then the CI check that
    they were computed (CI never asserts a verdict: it depends on seeds and machines)."""
    return [
        ("md", "    ## What the numbers say\n\n" + CLAIMS_HOW),
        ("code", f"""\
    claims = ex.study_claims({study!r}, {table})
    display(ex.claims_frame(claims))
    for c in claims:
        print("-", c.sentence)"""),
        ("code", """\
    # CI check (collapsed): every claim was computed and reached a valid verdict (whichever);
    # no check of the protocol failed
    ex.check_claims(claims)
    print("claims computed")""", CI_CHECK),
    ]


def figures_cell(study: str, table: str) -> str:
    return f"""\
for fig in plots.study_figures({study!r}, {table}).values():
    display(fig)"""


def live_run(study: str, func: str, table: str = "table") -> str:
    return f"""\
print(ex.PRESETS[{study!r}][PRESET])
{table} = ex.{func}(PRESET, progress=True)
for note in {table}.attrs.get("notes", []):
    print("note:", note)
ex.summarize({table})"""


# ---------------------------------------------------------------------------------------------
# 00 · Quickstart
# ---------------------------------------------------------------------------------------------

INTRO = """\
# Quickstart: can I trust these influence estimates?

An **influence estimate** says how much the loss of one *test point* would change if one *training
point* were removed and the model retrained (Koh & Liang 2017). This notebook checks estimates
against the real thing: leave-one-out (LOO) retraining.

In the explorer's scatter plot each dot is one training point:

* **x** = the *estimated* change in the test point's loss if that training point is removed,
* **y** = the *actual* change after removing it and retraining,
* dots on the dashed **y = x** line are estimated exactly; positive values mean the point was
  *helping* the test point (removing it raises the loss),
* the shaded horizontal **band** is the retraining noise floor: how much the test loss moves when
  nothing is removed and only the retraining randomness changes. Dots inside it (|actual| below
  the floor) moved the loss by less than noise does: their actual effect is indistinguishable
  from 0 (the share of such dots is "within noise floor").

**Click a dot** (or hover it) to see its training point: features or image, label, estimate and
actual change. Pearson and Spearman correlations (with bootstrap 95% intervals) summarise the
agreement; hover any number, or open *What do these numbers mean?*, for its definition. The
**overlay** list draws an earlier run on the same axes (exact vs LiSSA, depth 1 vs depth 4), and
**Download CSV + PNG** saves the comparison with every setting that produced it.

**What to try** (Basu, Pope & Feizi, ICLR 2021, *Influence functions in deep learning are fragile*):

* **depth**: switch the model from `iris-mlp-d1-w5-wd` to `iris-mlp-d2-w5-wd` or `iris-mlp-d4-w5-wd`
  — estimates usually get worse with depth;
* **weight decay**: compare with `iris-mlp-d1-w5` (no weight decay) and look at the Hessian's
  eigenvalues in the *diagnostics* tab;
* **solver**: exact vs CG vs LiSSA (try a small LiSSA scale to see it diverge) vs Arnoldi;
* **last layer**: restrict the estimate (*parameters*) and/or the retraining (*ground truth*) to the
  last layer;
* **test point**: highest-loss vs median-loss vs random test points;
* **ground truth**: LOO (warm start, from scratch, last layer), PBRF, or **LDS**: random subsets
  of half the data retrained from scratch, one dot per subset (x: the summed estimates of the
  points it removes; its Spearman correlation is the linear datamodeling score).

Your own trained model goes in the same explorer, its weights untouched: see "Bring your own
model" in the README.

Changing only the solver reuses the retrained results; everything is cached on disk, so reopening
this notebook shows earlier results at once.
"""

LOAD = """\
import os

import influence_widgets as iw

# Trained on first use (a few seconds), then loaded from the cache.
tm = iw.zoo.load("iris-mlp-d1-w5-wd", progress=True)
tm"""

EXPLORER = """\
explorer = iw.InfluenceExplorer(model="iris-mlp-d1-w5-wd")
explorer"""

CHECK = """\
# Runs only in CI (IW_NOTEBOOK_QUICK set): computes with the default settings and checks that the
# numbers make sense on this shallow, weight-decayed model. Elsewhere it does nothing.
if os.environ.get("IW_NOTEBOOK_QUICK"):
    import math

    explorer.compute(raise_errors=True)
    stats = explorer.last_stats
    assert stats is not None, explorer.error
    assert math.isfinite(stats["pearson"]) and math.isfinite(stats["spearman"]), stats
    assert stats["pearson"] > 0.5, f"Pearson {stats['pearson']:.3f} is too low on iris-mlp-d1-w5-wd"
    print(f"Pearson {stats['pearson']:.3f}, Spearman {stats['spearman']:.3f}, n = {stats['n']}")"""

NOTEBOOKS["00_quickstart.ipynb"] = [
    ("md", INTRO), ("code", LOAD), ("code", EXPLORER), ("code", CHECK),
]

# ---------------------------------------------------------------------------------------------
# 01-08 · One notebook per finding
# ---------------------------------------------------------------------------------------------

NOTEBOOKS["01_depth_and_width.ipynb"] = [
    ("md", """\
    # 01 · Depth and width: are influence estimates accurate for deep networks?

    **Finding (i)** of Basu, Pope & Feizi (ICLR 2021): first-order influence estimates are
    fairly accurate for *shallow* networks and often wrong for *deeper* ones; **(ii)** weight
    decay matters.

    Protocol (every choice is an option of `ex.depth_study`): Iris MLPs of width 5 and growing
    depth, with weight decay 0.005 and without, **both arms trained alike** (float64 L-BFGS to a
    stationary point); the **exact** Hessian over all parameters; the highest-loss test point; the
    40 training points with the largest |estimate|; the actual effect by **warm-start
    leave-one-out retraining of all layers**, minus a control retrain that removes nothing.
    Influence functions assume a minimum: tanh nets reach one; SELU nets (the replication's
    activation) stop on an activation kink, so their numbers are reported apart and never carry a
    finding; without weight decay the data are separable and the models degenerate (the health
    table says so).

    The published figures (Epifano et al. 2023) come from another protocol (a last-layer Hessian,
    the 25 highest-training-loss points, SELU only); they are printed in a table of their own,
    never on our axes."""),
    ("code", SETUP),
    *results_first("depth", " for depth"),
    ("md", "## Depth, computed now"),
    ("code", live_run("depth", "depth_study", "depth")),
    *health_cells("depth"),
    ("md", "**Can these numbers be trusted?** The same checks `iw.influence` reports, per group:"),
    ("code", """\
    for note in ex.trust_notes(depth):
        print("-", note)"""),
    ("code", figures_cell("depth", "depth")),
    ("code", reference_cell("depth")),
    *claims_cells("depth", "depth"),
    ("md", """\
    ## Width, computed now

    One-hidden-layer nets of growing width, the same protocol."""),
    ("code", live_run("width", "width_study", "width")),
    ("code", figures_cell("width", "width")),
    *claims_cells("width", "width"),
    ("code", """\
    # CI check (collapsed): one row per model, both seed sets, every model assessed
    models = depth[["activation", "weight_decay", "depth", "seed"]].drop_duplicates()
    assert len(depth) == len(models) and set(ex.COLUMNS) <= set(depth.columns)
    assert set(depth.seed_set) == {"preset", "check"} or PRESET == "paper"
    assert depth["health"].notna().all() and depth["minimum"].notna().all()
    assert depth["spearman"].dropna().between(-1, 1).all()
    assert width["spearman"].dropna().between(-1, 1).all() and len(width) > 0
    print("checks passed")""", CI_CHECK),
]

NOTEBOOKS["02_weight_decay.ipynb"] = [
    ("md", """\
    # 02 · Weight decay: needed for good estimates?

    **Finding (ii)** (Basu et al., quoted): for some architectures and datasets weight decay is
    needed for good influence estimates; without it the Hessian at the trained parameters is badly
    conditioned or indefinite. Whether that is so *here* is computed below, not assumed.

    **A factorial design.** The two arms differ in weight decay only: for each training
    **schedule** (a fixed budget of full-batch Adam steps, or float64 L-BFGS *to stationarity*)
    both arms train the same way; each estimate is computed at every **estimation damping**
    (0, and the other arm's weight decay): damping the no-weight-decay estimate shows how much of
    the effect lives in the estimator rather than in the model. Every cell reports its
    diagnostics (health, gradient norm, spectrum), and a difference between the arms is judged
    only where they match on stationarity (otherwise it is reported, not judged). Tanh MLPs on
    the 8x8 digits, float64; exact estimates against warm-start LOO."""),
    ("code", SETUP),
    *results_first("weight_decay"),
    ("md", "## Computed now"),
    ("code", live_run("weight_decay", "weight_decay_study")),
    *health_cells("table"),
    ("md", "Every estimate that failed, with its reason (never dropped from the tables):"),
    ("code", """\
    table[table.error != ""][["schedule", "weight_decay", "damping", "seed", "solver",
                              "min_eigenvalue", "error"]]"""),
    ("code", reference_cell("weight_decay")),
    ("code", figures_cell("weight_decay", "table")),
    *claims_cells("weight_decay", "table"),
    ("code", """\
    # CI check (collapsed): the full factorial is there, both seed sets, correlations in range
    o = ex.PRESETS["weight_decay"][PRESET]
    assert set(table.schedule) == set(o["schedules"]) and set(table.damping) == set(o["dampings"])
    assert set(table.weight_decay) == set(o["weight_decays"])
    assert table["spearman"].dropna().between(-1, 1).all()
    assert table.groupby(["schedule", "weight_decay"])["seed"].nunique().eq(
        len(o["seeds"]) + len(o["check_seeds"])).all()
    print("checks passed")""", CI_CHECK),
]

NOTEBOOKS["03_architectures.ipynb"] = [
    ("md", """\
    # 03 · Architectures: small CNN, VGG-style, LeNet-5, ResNet

    **Finding (i)** beyond MLPs (Basu et al., quoted): on MNIST small CNNs give fair estimates; on
    CIFAR-10 larger networks (VGG, ResNet) give poor ones.

    The paper preset runs CIFAR-10 (small CNN, VGG-style, ResNet-18 with GroupNorm) when its files
    are there. The quick preset uses the 8x8 digits as images, with **smooth** variants (tanh,
    average pooling) trained with Adam and then polished with float64 L-BFGS, so that the models
    can reach the stationary point influence functions assume (ReLU and max-pooling put minima on
    kinks). Architectures are compared by their **parameter count**, printed with each.

    **Everything else held fixed.** Every architecture is scored with the *same* solvers (CG, and
    stochastic LiSSA beside it) and the same damping; a solver that fails is shown as failed,
    never dropped from an average. Each solver's relative error against the exact solve is
    reported beside its agreement with LOO where the exact solve is affordable, since a solver's
    error would otherwise pass for an architecture effect."""),
    ("code", SETUP),
    *results_first("architecture"),
    ("md", "## Computed now"),
    ("code", live_run("architecture", "architecture_study")),
    *health_cells("table"),
    ("md", "Per model: parameters, health, gradient norm and curvature."),
    ("code", """\
    table.drop_duplicates(["arch", "seed"])[["arch", "n_params", "seed", "health", "objective",
                                             "grad_norm", "top_eigenvalue", "min_eigenvalue",
                                             "test_acc"]]"""),
    ("code", reference_cell("architecture")),
    ("code", figures_cell("architecture", "table")),
    *claims_cells("architecture", "table"),
    ("code", """\
    # CI check (collapsed): every architecture has every solver on every seed and dataset
    # (failed or not)
    o = ex.PRESETS["architecture"][PRESET]
    n_seeds = len(o["seeds"]) + len(o["check_seeds"])
    # a dataset missing on this machine (real MNIST before `make data`) is skipped with a note
    notes = table.attrs.get("notes", [])
    present = [d for d in o["datasets"] if not any(n.startswith(f"{d} skipped") for n in notes)]
    assert len(table) == len(present) * len(o["archs"]) * n_seeds * len(o["solvers"])
    assert table.groupby("arch")["solver"].apply(set).map(lambda s: s == set(o["solvers"])).all()
    assert table["spearman"].dropna().between(-1, 1).all()
    small = table[(table.n_params <= o["exact_max_params"]) & (table.solver == "cg")
                  & (table.error == "")]
    assert (small.rel_error < 1e-3).all()
    print("checks passed")""", CI_CHECK),
    ("md", """\
    ## Retraining guidance for ResNet-18-sized models

    Exact Hessians and full-network leave-one-out are out of reach at ResNet-18 size (11 M
    parameters), but three things remain affordable on one machine:

    * **Last-layer estimate and last-layer LOO.** `params="last_layer"` restricts both the
      estimate and the retraining to the classifier (5,130 parameters for 10 classes): the exact
      solve is then cheap and the retraining is a convex problem, so the two should agree closely
      (notebook 06 shows how closely). Say in the results that this is what was compared.
    * **Group removal** (notebook 07): remove tens of points at once and compare with real
      retraining noise, since a single point's effect is often inside it.
    * **Time and memory.** Measured in this project (`benchmarks/RESULTS.md`): ResNet-18 with
      GroupNorm on 1,000 CIFAR-shaped images peaks at 2.4-2.6 GiB per solver (CG, LiSSA, Arnoldi,
      exact last layer); training-side gradients are streamed in chunks, so memory does not grow
      as training points x parameters. LOO retraining costs one training run per removed point
      (warm starts: a fixed number of steps), so plan k x steps on a GPU (`--device cuda`), and
      run sweeps on a process pool or Dask (`executor=`) for more.

    A tiny runnable version (a ResNet-18 with GroupNorm on 40 digits, a few steps: it shows the
    calls, not a result):"""),
    ("code", """\
    from influence_widgets.experiments.core import ModelCase, load_data, train_case

    # the ci preset only shows the calls (2 training steps, 3 points, 5 retraining steps)
    n, steps, k, loo_steps = (20, 2, 3, 5) if PRESET == "ci" else (40, 20, 5, 50)
    small = ModelCase("digits_images", "resnet18", None, None, None, weight_decay=0.01, seed=0,
                      options={"norm": "group"}, data_options={"train_size": n, "test_size": 10},
                      train=ex.presets.image_training(steps if PRESET != "paper" else 500))
    data = load_data(small.dataset, **small.data_options)
    resnet = train_case(small, data)
    test = (data.X_test[:1], data.y_test[:1])
    est = iw.influence(resnet, data.train, test, params="last_layer", damping=0.01)
    top = est[0].abs().argsort(descending=True)[:k]
    act = iw.leave_one_out(resnet, data.train, test, top, params="last_layer", mode="warm_start",
                           config=resnet.config.replace(steps=loo_steps, lr=1e-3))
    print("last-layer estimate:", est[0, top].numpy())
    print("last-layer LOO:     ", act[0].numpy())"""),
]

NOTEBOOKS["04_test_points.ipynb"] = [
    ("md", """\
    # 04 · Test points: how much does the answer depend on which test point?

    **Finding (iii)**: the accuracy of influence estimates varies strongly with the test point
    examined, e.g. the highest-loss vs a median-loss test point.

    Protocol: Iris MLPs (depth 1 and 4, weight decay 0.005, tanh; SELU reported apart), the
    highest-loss, a median-loss and a random test point of each model; exact estimates against
    warm-start LOO on each test point's 40 largest |estimates|.

    **Against what null?** A correlation over 40 points is itself noisy: even if every test point
    had the same true agreement, the measured Spearman would differ between them. The range
    claim is therefore the observed range across a model's test points *minus* the range that
    sampling noise alone gives (each test point drawn around one common value with the spread of
    its own bootstrap interval)."""),
    ("code", SETUP),
    *results_first("test_point"),
    ("md", "## Computed now"),
    ("code", live_run("test_point", "test_point_study")),
    *health_cells("table"),
    ("code", reference_cell("test_point")),
    ("code", figures_cell("test_point", "table")),
    ("md", "Per model: the observed range across its test points and the range of noise alone."),
    ("code", "ex.claims.range_null(table[table.stationary & ~table.collapsed])"),
    *claims_cells("test_point", "table"),
    ("code", """\
    # CI check (collapsed)
    assert table["spearman"].dropna().between(-1, 1).all()
    assert set(table.test_point) == set(ex.PRESETS["test_point"][PRESET]["test_points"])
    assert {"spearman_lo", "spearman_hi"} <= set(table.columns)
    print("checks passed")""", CI_CHECK),
]

NOTEBOOKS["05_solvers_and_curvature.ipynb"] = [
    ("md", """\
    # 05 · Solvers: exact, CG, LiSSA, Arnoldi

    **Finding (iv)** (Basu et al., quoted): stochastic inverse-Hessian-vector products (LiSSA) add
    error, more so for deeper networks; the exact Hessian is affordable only for small models.

    Every influence estimate needs `(H + damping I)^{-1} g_t`, the test gradient multiplied by the
    inverse of the (damped) Hessian of the training objective. The solvers differ only in how they
    get that product:

    * **exact** builds the whole `p x p` Hessian (one Hessian-vector product per parameter) and
      factorises it. Exact to rounding, and it gives every eigenvalue, but memory grows as `p^2`
      and time as `p^3`: fine for Iris nets (tens to hundreds of parameters), impossible for a
      LeNet-5 (61,706 parameters: 15 GB in float32).
    * **CG** (conjugate gradient) solves the linear system with Hessian-vector products only, each
      costing about two gradient evaluations. Deterministic; it converges to the exact answer when
      `H + damping I` is positive definite, and stops with an error when it meets negative
      curvature (an indefinite Hessian), which this toolkit reports instead of hiding.
    * **LiSSA** (Agarwal et al. 2016) approximates the inverse by a truncated Neumann series,
      `sum_j (I - (H + damping I)/scale)^j`, each term using the Hessian of a random mini-batch.
      Cheap per step and needs no positive definiteness, but its answer has two errors: the
      truncation (a fixed recursion depth) and the mini-batch noise. Both grow when the Hessian's
      top eigenvalue (which sets `scale`) is large compared to its small ones, as in deeper nets.
    * **Arnoldi** (Schioppa et al. 2022) keeps only the top eigenpairs of the Hessian (rank 20
      here) and inverts within them: fast and deterministic, but blind to the directions it
      dropped.

    Protocol: Iris tanh MLPs of depth 1-8 with weight decay 0.005; every solver's estimate of the
    influence of *all* training points on the highest-loss test point, against the exact solve with
    the same damping (0.001). `rel_error` = ||estimate - exact|| / ||exact||. Deep tanh nets with
    weight decay can collapse to the zero network: such models are excluded from the trend and
    counted (the health table)."""),
    ("code", SETUP),
    *results_first("solver"),
    ("md", "## Computed now"),
    ("code", """\
    print(ex.PRESETS["solver"][PRESET])
    table = ex.solver_study(PRESET, progress=True)
    columns = ["depth", "solver", "rel_error", "spearman", "est_seconds", "top_eigenvalue", "n"]
    ex.summarize(table)[columns]"""),
    *health_cells("table"),
    ("code", reference_cell("solver")),
    ("md", """\
    **How to read the figures.** Left: each solver's relative error against the exact solve, by
    depth, on a log scale: a point is the mean over models, its bar the standard error where at
    least 5 models share it (a bar is cut at the smallest value drawn rather than running down to
    0, which a log axis cannot show). Lower is better: about 1e-10 is rounding (CG), about 0.1-1
    means the estimate's direction is noticeably off (compare with the Spearman column of the
    table: a solver can have a large error in norm and still rank the training points
    similarly). The exact solver is left out: it is the reference. Right: seconds per estimate,
    same layout and the same colour per solver. Below: **estimated against actual** (here the
    actual is the exact solve) for the models of one seed drawn at random; points on the dashed
    y = x line are estimated exactly."""),
    ("code", figures_cell("solver", "table")),
    *claims_cells("solver", "table"),
    ("code", """\
    # CI check (collapsed)
    assert (table.loc[table.solver == "cg", "rel_error"] < 1e-3).all()
    assert (table.loc[table.solver != "exact", "rel_error"].dropna() >= 0).all()
    assert len(plots.study_figures("solver", table)) == 2  # the errors and the scatter grid
    print("checks passed")""", CI_CHECK),
]

NOTEBOOKS["06_validation_procedure.ipynb"] = [
    ("md", """\
    # 06 · Validation: how much of the "fragility" is the ground truth itself?

    Leave-one-out retraining is a choice, not the truth. The reference replication (Epifano et al.)
    found that retraining only the last layer, matching a last-layer estimate, flattens the depth
    trend (about 0.48 -> 0.50). Bae et al. (NeurIPS 2022) showed that influence functions
    approximate the proximal Bregman response function (PBRF) well even where they miss LOO.
    K & Søgaard (2022): LOO is unstable under retraining randomness.

    Protocol: Iris tanh MLPs (depth 1 and 4, weight decay 0.005, trained to stationarity); exact
    estimates over all parameters and over the last layer, against warm-start LOO of all layers,
    warm-start LOO of the last layer only, and the PBRF, each compared with the estimate it
    targets (the PBRF with the damped Gauss-Newton estimate). **Every ground truth is judged
    against real retraining noise**: the model retrained from scratch with nothing removed under
    new seeds (a new initialisation and batch order each, its own schedule); `noise_source` says
    what was randomised. A full-batch warm start from a nudged start would only say how
    reproducible the optimiser is, so it is never used for "within noise". `frac_within_noise` is
    the share of |actual| below the floor, the band drawn around y = 0 in the scatter plots. A
    difference is two-sided: a PBRF *worse* than LOO reads "reversed beyond 2 SE"."""),
    ("code", SETUP),
    *results_first("validation"),
    ("md", "## Computed now"),
    ("code", """\
    print(ex.PRESETS["validation"][PRESET])
    table = ex.validation_study(PRESET, progress=True)
    ex.summarize(table)[["depth", "params", "truth", "loo_params", "curvature", "spearman",
                         "spearman_sd", "frac_within_noise", "n"]]"""),
    *health_cells("table"),
    ("code", reference_cell("validation")),
    ("code", figures_cell("validation", "table")),
    *claims_cells("validation", "table"),
    ("code", """\
    # CI check (collapsed): every ground truth is judged by real retraining noise (new
    # initialisations, never a perturbed start); frac_within_noise in [0, 1]
    assert table["frac_within_noise"].between(0, 1).all() and (table["noise_std"] > 0).all()
    assert table["noise_source"].str.contains("initialisation").all()
    assert not table["noise_source"].str.contains("perturbed").any()
    assert table["spearman"].dropna().between(-1, 1).all()
    print("checks passed")""", CI_CHECK),
]

NOTEBOOKS["07_scale_and_groups.ipynb"] = [
    ("md", """\
    # 07 · Scale and groups: one point's effect against retraining's own randomness

    **Finding (v)** (Basu et al., quoted): at ImageNet scale (ResNet-50) estimates are imprecise and
    LOO retraining is itself noisy: removing one point changes less than the randomness of
    retraining does, so the paper suggests group-level analysis.

    It shows at small scale too, once "noise" means what retraining really does. Part 1 takes the
    Iris and digits models of the other notebooks: for single points and for groups, the actual
    effect (by warm-start LOO, and by LOO from scratch) against **real retraining noise** (the
    model retrained from scratch with nothing removed, under new seeds). Part 2 does the same on
    an image-folder CNN trained with mini-batches. `effect_to_noise` is the median |actual| over
    the noise: below 1, removing one point changes the test loss by less than another training
    run would."""),
    ("code", SETUP),
    *results_first("noise", " for the Iris and digits models"),
    ("md", """\
    ## Part 1 · Iris and digits, computed now

    For each model, seed and the highest-loss test point: the most helpful, the most harmful and
    random groups of every size (size 1: single points); each measured by warm-start LOO and by
    LOO from scratch (the model's own schedule and initialisation), against the same real
    retraining noise."""),
    ("code", live_run("noise", "noise_study", "effects")),
    *health_cells("effects"),
    ("code", """\
    effects[["model", "seed", "truth", "group_size", "n_eval", "noise_std", "effect_to_noise",
             "frac_within_noise", "spearman", "noise_source"]]"""),
    ("code", figures_cell("noise", "effects")),
    *claims_cells("noise", "effects"),
    ("md", """\
    ## Part 2 · An image-folder CNN trained with mini-batches

    An ImageNet-style image folder (`datasets.image_folder`; when none is given, a small synthetic
    folder of coloured shapes, 3 classes, is written to the cache folder), a small smooth CNN
    trained **with mini-batches** and polished to a stationary point. For each group size the
    most helpful, the most harmful and random groups; the **group estimate** is the sum of its
    members' estimates; the **actual** effect retrains from scratch, from the same
    initialisation and batch order, without the group. One row per seed x test point x group
    size: sizes are never pooled. The paper preset uses a ResNet-18 with GroupNorm (last-layer
    estimate) on 32x32 images; pass `root=` for your own folder."""),
    *results_first("group", " for the image-folder CNN"),
    ("code", live_run("group", "group_study")),
    *health_cells("table"),
    ("code", reference_cell("group")),
    ("md", """\
    **How to read the figures.** Left: for each group size, the share of the actual effects whose
    size |actual| is below the noise floor (the rule of `frac_within_noise`, the band around
    y = 0 in the scatter plots). Middle: the median |actual| over the noise floor; the dashed line
    at 1 is the floor. Right: how well the summed estimates rank the actual effects of groups of
    that size. Each point is one seed x test point; error bars only over at least 5 of them."""),
    ("code", figures_cell("group", "table")),
    *claims_cells("group", "table"),
    ("code", """\
    # CI check (collapsed): one row per group size (never pooled); real retraining noise
    o = ex.PRESETS["group"][PRESET]
    assert sorted(table.group_size.unique()) == sorted(o["group_sizes"])
    assert table.groupby(["seed", "test_index"]).size().eq(len(o["group_sizes"])).all()
    for t in (table, effects):
        assert t.noise_source.str.contains("initialisation").all()
        assert t["frac_within_noise"].between(0, 1).all() and (t["noise_std"] > 0).all()
    assert set(effects.truth) == set(ex.PRESETS["noise"][PRESET]["truths"])
    print("checks passed")""", CI_CHECK),
]


def trust_cells(table: str) -> list[tuple]:
    """The study's trust notes, printed right after its table is computed (the checks that
    ``iw.influence`` and the explorer report, counted per group of models)."""
    return [
        ("md", """\
    **Can these numbers be trusted?** Models far from a stationary point, degenerate models and
    indefinite Hessians, counted with the same rules the explorer and `iw.influence` report (an
    empty list: nothing to flag)."""),
        ("code", f"""\
    for note in ex.trust_notes({table}):
        print("-", note)"""),
    ]


# Every study notebook prints its trust notes after the cell that computes its table.
for _name in ("02_weight_decay.ipynb", "03_architectures.ipynb", "04_test_points.ipynb",
              "05_solvers_and_curvature.ipynb", "06_validation_procedure.ipynb",
              "07_scale_and_groups.ipynb"):
    _cells = NOTEBOOKS[_name]
    _at = next(i for i, (_, src, *_m) in enumerate(_cells)
               if "table = ex." in src and "_study(" in src)
    _cells[_at + 1:_at + 1] = trust_cells("table")


# ---------------------------------------------------------------------------------------------
# 08 · Which ground truth?
# ---------------------------------------------------------------------------------------------

NOTEBOOKS["08_which_ground_truth.ipynb"] = [
    ("md", """\
    # 08 · Which ground truth? Leave-one-out, LDS and PBRF side by side

    An estimate is only as "wrong" as the ground truth it is judged by. Three are in use, each a
    registered ground truth of the toolkit (`iw.ground_truth.TRUTHS`):

    * **LOO** (`warm_start`) — remove one training point, retrain warm-started from the trained
      parameters for a fixed number of steps, and measure the change in the test loss (Koh &
      Liang; the protocol of Basu et al. and of notebooks 01-06). Correlation over the training
      points with the largest |exact estimate|.
    * **LDS** (`lds`) — the linear datamodeling score (Park et al. 2023, TRAK): retrain *from
      scratch* on random halves of the training set; per test point, the Spearman correlation
      across the subsets between the summed estimates of the removed points and the retrained
      test loss.
    * **PBRF** (`pbrf`) — the proximal Bregman response function (Bae et al. 2022), which
      influence functions approximate even where they miss LOO. It is compared with the estimate
      it targets: the **damped Gauss-Newton** one (`curvature="ggn"`, damping = the PBRF
      damping), not the Hessian estimate used for LOO and LDS.

    Every solver of the registry is judged by all three on the same models and test points: an
    Iris logistic regression (convex), an Iris tanh MLP (one hidden layer of 5) and a digits tanh
    MLP (one hidden layer of 32), each on the highest-loss test points of every seed (the
    preset's and the check seeds). Every ground truth is judged against real retraining noise:
    the model retrained from scratch with nothing removed under new seeds.

    dattri's published benchmark (LOO correlation / LDS, MNIST) is printed in a table of its own:
    MNIST is far larger than these models, so it is a reference, not a target."""),
    ("code", SETUP),
    *results_first("ground_truth"),
    ("md", "## Computed now"),
    ("code", """\
    from influence_widgets.experiments.studies import (
        ground_truth_comparison,
        ground_truth_conclusion,
    )

    print(ex.PRESETS["ground_truth"][PRESET])
    table = ex.run_study("ground_truth", PRESET, progress=True)
    table[["model", "seed", "test_index", "truth", "solver", "curvature", "damping", "spearman",
           "n_eval", "noise_std"]].head(8)"""),
    *trust_cells("table"),
    *health_cells("table"),
    ("md", """\
    ## Every solver against every ground truth

    Mean Spearman correlation ± its standard error over seeds and test points; the last row is
    each column's noise floor (the share of the actual effects inside it, and how many times it
    the spread of the actual effects is)."""),
    ("code", "display(ground_truth_comparison(table))"),
    ("code", reference_cell("ground_truth")),
    ("code", figures_cell("ground_truth", "table")),
    *claims_cells("ground_truth", "table"),
    ("md", "## What to conclude\n\nOne sentence per claim, computed from the table above."),
    ("code", """\
    for line in ground_truth_conclusion(table):
        print("-", line)"""),
    ("code", """\
    # CI check (collapsed): one row per model x seed x test point x solver x ground truth,
    # correlations in range, CG equal to the exact solve, LDS over every subset, PBRF against
    # the damped Gauss-Newton estimate
    o = ex.PRESETS["ground_truth"][PRESET]
    n_seeds = len(o["seeds"]) + len(o["check_seeds"])
    n_rows = len(o["models"]) * n_seeds * o["n_test"] * len(o["solvers"]) * 3
    assert len(table) == n_rows and set(table.truth) == {"warm_start", "lds", "pbrf"}, len(table)
    assert table["spearman"].between(-1, 1).all() and (table.error == "").all()
    assert (table.loc[table.solver == "cg", "rel_error"] < 1e-6).all()
    assert (table.loc[table.truth == "lds", "n_eval"] == o["n_subsets"]).all()
    pbrf = table[(table.truth == "pbrf") & table.solver.isin(["exact", "cg", "lissa", "arnoldi"])]
    assert (pbrf.curvature == "ggn").all() and (pbrf.damping == o["pbrf_damping"]).all()
    print("checks passed")""", CI_CHECK),
]


# ---------------------------------------------------------------------------------------------
# 09 · Trust forecast
# ---------------------------------------------------------------------------------------------

NOTEBOOKS["09_trust_forecast.ipynb"] = [
    ("md", """\
    # 09 · Trust forecast: will these estimates agree with retraining?

    Notebooks 01-08 answer "can I trust these estimates?" by **retraining**: leave-one-out for
    every compared training point. Where influence functions are needed most, nobody can
    retrain. `iw.trust.predict(model, train, test, solver=..., truth=..., k=40)` answers
    *before* retraining: per test point, the Spearman the estimate is expected to reach against
    the ground truth over its top `k` training points (as the explorer measures it), with an
    80% interval.

    It is a small model (gradient-boosted trees, shipped as JSON with its provenance) learned
    from a corpus of measured comparisons (`python -m influence_widgets forecast-corpus`:
    random MLPs on Iris, digits and MNIST subsets, several activations, weight decays,
    dampings, training schedules and warm-start schedules; five solvers; the warm-start LOO and
    the exact solve as ground truths). Its inputs are what the toolkit computes anyway: the
    estimate, a 30-step Lanczos run on the curvature, the model's health, the test point's loss
    and margin, the solver's error against the exact solve where affordable.

    The interval is split-conformal, calibrated on predictions made with the whole family held
    out (dataset, activation, depth, schedule). An input outside the corpus's range gets
    [-1, 1] and a note: never a confident number. This notebook uses the **shipped**
    forecaster and the validation files the corpus command wrote; it never regenerates the
    corpus."""),
    ("code", SETUP),
    ("code", """\
    from influence_widgets.forecast import features as F
    from influence_widgets.forecast.validation import TARGET, scores

    FORECAST = Path("..") / "benchmarks" / "results" / "forecast"  # what --fit wrote
    f = iw.trust.load()
    prov = f.provenance
    print(f"forecaster: {len(f.trees)} trees over {len(f.features)} features; corpus "
          f"{prov['corpus_rows']} rows from {prov['corpus_models']} models; commit "
          f"{prov['git_commit']}; {prov['date']}")
    print("solvers:", f.solvers, "ground truths:", f.truths)
    print(f"80% interval half-width: {f.halfwidth:.3f}")"""),
    ("md", """\
    ## What predicts fragility

    Left: how much each feature's splits reduce the error, summed over the trees. Right: how the
    forecast moves along each of the four most important features, the others held at the
    corpus's median (partial dependence; each curve spans the corpus's range of its feature)."""),
    ("code", """\
    imp = f.importance()
    fig = Figure(figsize=(12, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    top = imp.head(12)[::-1]
    ax.barh(top.index, top.values, color="tab:blue")
    ax.set_xlabel("share of the error reduction")
    ax = fig.add_subplot(1, 2, 2)
    curves = {}
    for name in imp.index[:4]:
        j = f.features.index(name)
        grid = np.linspace(f.lo_range[j], f.hi_range[j], 25)
        X = np.tile(np.asarray(f.medians), (grid.size, 1))
        X[:, j] = grid
        curves[name] = (grid, f.predict_raw(X))
        u = (grid - grid[0]) / max(grid[-1] - grid[0], 1e-12)
        ax.plot(u, curves[name][1], label=name)
    ax.set_xlabel("feature, from the corpus's lowest to its highest value")
    ax.set_ylabel("forecast Spearman")
    ax.legend(fontsize=8)
    fig.tight_layout()
    display(fig)
    for name, (grid, y) in curves.items():
        print(f"{name:>18}: forecast {y[0]:+.2f} at {grid[0]:.3g} -> {y[-1]:+.2f} at {grid[-1]:.3g}")"""),
    ("md", """\
    ## Calibration on held-out models

    Models in **no preset, no study grid and not in the corpus**: other widths (7, 12, 14),
    activations (softplus, GELU, ELU, SiLU) and training schedules (SGD with momentum; Adam then
    L-BFGS). Each dot is one test point x solver x ground truth: the forecast against the
    Spearman measured by retraining. The done-when bar: mean |error| <= 0.15, coverage >= 0.7,
    mean width <= 0.6; the constant forecast (the corpus mean, its own conformal interval) is the
    baseline. Read the rows by ground truth: against the exact solve the forecast is nearly
    given (the solver's Spearman against the exact solve is one of its features); the warm-start
    rows, judged by retraining, are the hard part (benchmarks/RESULTS.md has the verdict for
    each)."""),
    ("code", """\
    held = pd.read_csv(FORECAST / "heldout.csv.gz")
    pred = f.predict(held[f.features], held.solver.tolist(), held.truth.tolist())
    held = held.assign(forecast=pred.spearman.to_numpy(), lo=pred.lo.to_numpy(),
                       hi=pred.hi.to_numpy(), in_range=pred.in_range.to_numpy())
    rows = []
    for name, part in [("all", held), *held.groupby("truth")]:
        s = scores(part.spearman, part.forecast, part.lo, part.hi)
        const = np.full(len(part), prov["corpus_mean"])
        c = scores(part.spearman, const, np.clip(const - prov["const_halfwidth"], -1, 1),
                   np.clip(const + prov["const_halfwidth"], -1, 1))
        rows.append({"rows": name, "n": len(part), **s, **{f"const_{k}": v for k, v in c.items()}})
    summary = pd.DataFrame(rows).set_index("rows")
    display(summary)

    fig = Figure(figsize=(12, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    for truth, part in held.groupby("truth"):
        ax.scatter(part.forecast, part.spearman, s=8, alpha=0.4, label=f"truth: {truth}")
    ax.plot([-1, 1], [-1, 1], color="k", lw=1)
    ax.set_xlabel("forecast Spearman")
    ax.set_ylabel("measured Spearman")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    bins = pd.cut(held.forecast, np.linspace(-1, 1, 11))
    by = held.groupby(bins, observed=True)
    cover = by.apply(lambda p: ((p.spearman >= p.lo) & (p.spearman <= p.hi)).mean())
    ax.bar([b.mid for b in cover.index], cover.values, width=0.18, color="tab:green")
    ax.axhline(0.8, color="k", ls="--", lw=1)
    ax.set_xlabel("forecast Spearman (bins)")
    ax.set_ylabel("interval coverage")
    fig.tight_layout()
    display(fig)"""),
    ("md", """\
    ## Leave-one-family-out cross-validation

    Each row: one family value held out of the corpus (a dataset, an activation, a depth, a
    training schedule), the forecaster fitted and calibrated on the rest, scored on the held-out
    rows, beside the constant forecast calibrated the same way."""),
    ("code", """\
    cv = pd.read_csv(FORECAST / "cv.csv")
    display(cv.round(3))
    print("mean over folds:", cv[["mae", "coverage", "width", "const_mae", "const_coverage",
                                  "const_width"]].mean().round(3).to_dict())"""),
    ("md", """\
    ## Where the forecast fails

    The held-out rows with the largest errors, and the error by solver and by ground truth.
    Single-point LOO over 40 points is itself noisy (notebook 07): part of every error is the
    ground truth's own noise, which no forecast can remove."""),
    ("code", """\
    held["abs_error"] = (held.forecast - held.spearman).abs()
    display(held.groupby(["truth", "solver"]).abs_error.agg(["mean", "count"]).round(3))
    display(held.groupby("activation").abs_error.agg(["mean", "count"]).round(3))
    cols = ["case_id", "dataset", "activation", "depth", "width", "schedule", "solver", "truth",
            "test_index", "spearman", "forecast", "lo", "hi", "test_loss", "log_grad_rel",
            "neg_mass"]
    held.sort_values("abs_error", ascending=False)[cols].head(8)"""),
    ("md", """\
    ## A forecast before retraining, then the measurement

    A model in no preset: Iris, two hidden layers of 7 softplus units, weight decay 0.005. The
    forecast for every test point, then (for the highest-loss test points) the warm-start LOO
    it forecasts, measured."""),
    ("code", """\
    from influence_widgets.experiments.core import load_data
    from influence_widgets.ground_truth import make_truth, top_k
    from influence_widgets.models.architectures import mlp_spec

    data = load_data("iris")
    config = iw.TrainConfig.preset("exact", weight_decay=5e-3, grad_tol=1e-5, device="cpu")
    tm = iw.train(mlp_spec(data.input_shape, data.n_classes, 2, 7, "softplus"), data.train, config)
    print(tm.health.line())
    table = iw.trust.predict(tm, data.train, data.test, solver="cg", truth="warm_start", k=40)
    table[["test_index", "spearman", "lo", "hi", "in_range", "test_loss", "margin",
           "log_top_eig", "neg_mass", "topk_share"]].sort_values("test_loss", ascending=False).head()"""),
    ("code", """\
    n_measure = 1 if PRESET == "ci" else 5
    picked = table.sort_values("test_loss", ascending=False).test_index.head(n_measure).tolist()
    est = iw.influence(tm, data.train, (data.X_test[picked], data.y_test[picked]), solver="cg")
    gt = make_truth("warm_start")
    measured = []
    for r, t in enumerate(picked):
        idx = top_k(est[r], k=40)
        loo = gt.measure(tm, data.train, (data.X_test[[t]], data.y_test[[t]]),
                         [(i,) for i in idx])
        rho = iw.compare(est[r, idx], loo.values[0], n_boot=0)["spearman"]
        fc = iw.trust.forecast_point(tm, data.train, data.test, t, solver="cg", k=40)
        measured.append((t, rho, fc))
        print(f"test point {t}: {fc.beside(rho)}")"""),
    ("code", """\
    # CI check (collapsed): the table, the intervals, the shipped file's own numbers
    assert len(table) == data.X_test.shape[0] and list(F.FEATURES) == f.features
    assert ((table.lo <= table.spearman) & (table.spearman <= table.hi)).all()
    assert table.lo.between(-1, 1).all() and table.hi.between(-1, 1).all()
    assert (table.loc[~table.in_range, "note"].str.len() > 0).all()
    assert abs(imp.sum() - 1) < 1e-9
    # the held-out numbers recomputed here are those the corpus command recorded
    rec = prov["heldout"]["all"]
    for key in ("mae", "coverage", "width"):
        assert abs(summary.loc["all", key] - rec[key]) < 1e-9, (key, summary.loc["all", key])
    assert len(cv) >= 4 and cv[["mae", "width"]].ge(0).all().all()
    for _t, rho, fc in measured:
        assert -1 <= rho <= 1 and fc.lo <= fc.spearman <= fc.hi
    print("checks passed")""", CI_CHECK),
]


# ---------------------------------------------------------------------------------------------
# Building and writing
# ---------------------------------------------------------------------------------------------

#: Notebooks whose cells are written exactly as given. The cells of every other notebook are
#: dedented and stripped of leading/trailing newlines (so they can be indented in this file).
VERBATIM = {"00_quickstart.ipynb"}


def cell_id_prefix(name: str) -> str:
    """Cell ids are ``<prefix>-<index>``: ``nb01-0``, ``nb01-1``, ... and ``quickstart-0``, ..."""
    return "quickstart" if name == "00_quickstart.ipynb" else "nb" + name.split("_")[0]


def notebook(name: str, cells: list[tuple]) -> nbformat.NotebookNode:
    """A notebook from ``(kind, source)`` cells, with stable cell ids and no outputs."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    prefix = cell_id_prefix(name)
    for i, (kind, source, *meta) in enumerate(cells):
        text = source if name in VERBATIM else dedent(source).strip("\n")
        cell = new_markdown_cell(text) if kind == "md" else new_code_cell(text)
        cell["id"] = f"{prefix}-{i}"
        if meta:
            cell["metadata"] = dict(meta[0])
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def build() -> dict[str, str]:
    """Every notebook in memory: file name -> the exact text written to ``notebooks/<name>``."""
    texts = {}
    for name, cells in NOTEBOOKS.items():
        text = nbformat.writes(notebook(name, cells))
        texts[name] = text if text.endswith("\n") else text + "\n"  # as nbformat.write does
    return texts


def committed() -> set[str]:
    """The notebooks in ``notebooks/`` (as ``tests/test_notebooks.py`` collects them)."""
    return {p.name for p in HERE.glob("*.ipynb") if not p.name.startswith(".")}


def stale(texts: dict[str, str]) -> list[str]:
    """The notebooks whose committed file is missing or differs from ``texts``."""
    return [name for name, text in texts.items()
            if not (HERE / name).is_file() or (HERE / name).read_bytes() != text.encode("utf-8")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a committed notebook differs from the "
                             "generated one, or a notebook is missing or not generated here")
    args = parser.parse_args(argv)
    texts = build()
    changed = stale(texts)
    stray = sorted(committed() - set(texts))
    if args.check:
        for name in changed:
            state = "differs from the generator" if (HERE / name).is_file() else "is missing"
            print(f"notebooks/{name} {state}")
        for name in stray:
            print(f"notebooks/{name} is not written by notebooks/_build.py")
        if changed or stray:
            print("run `.venv/bin/python notebooks/_build.py` (and delete stray notebooks or add "
                  "them to the generator)", file=sys.stderr)
            return 1
        print(f"{len(texts)} notebooks up to date")
        return 0
    for name in changed:
        (HERE / name).write_text(texts[name], encoding="utf-8", newline="\n")
        print(f"wrote notebooks/{name}")
    for name in stray:
        print(f"warning: notebooks/{name} is not written by notebooks/_build.py", file=sys.stderr)
    print(f"{len(texts)} notebooks up to date ({len(changed)} rewritten)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
