"""Write every bundled notebook (00_quickstart and 01-08, one per finding), outputs stripped.

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

import numpy as np
import pandas as pd
import torch
from IPython.display import display
from matplotlib.figure import Figure

import influence_widgets as iw
from influence_widgets import experiments as ex
from influence_widgets import plots

# One switch: IW_PRESET=paper runs the full grid (meant for a GPU); otherwise the quick preset.
PRESET = "paper" if os.environ.get("IW_PRESET") == "paper" else "quick"
if PRESET == "quick":
    torch.set_num_threads(1)  # the quick models are tiny: one thread is fastest on a shared CPU
pd.options.display.float_format = "{:.3g}".format  # significant digits: small values stay visible
print("preset:", PRESET)"""


def reference_cell(study: str) -> str:
    return f"""\
print("Reference figures, quoted literally from the papers (see docs/findings.md):")
for note in ex.reference_notes({study!r}):
    print(" -", note)"""


#: Metadata of the CI checks: collapsed in JupyterLab, tagged so they can be found or skipped.
CI_CHECK = {"jupyter": {"source_hidden": True}, "tags": ["ci-check"]}


def claims_cells(study: str, table: str, held: tuple[str, ...] = (),
                 not_held: tuple[str, ...] = ()) -> list[tuple]:
    """The study's claims computed from its table (printed, never typed), then the CI check that
    the quick preset's verdicts are the ones this notebook states (collapsed, tagged)."""
    return [
        ("md", """\
    ## What the numbers say

    Every sentence below is computed from the table above: a mean with its standard error (SE)
    and standard deviation over seeds (and test points), the rule it is judged by, and the verdict.
    A finding counts only beyond two standard errors; otherwise it reads "not reproduced at this
    scale". Checks are conditions the protocol needs; "reported" rows are numbers without a
    verdict."""),
        ("code", f"""\
    claims = ex.study_claims({study!r}, {table})
    display(ex.claims_frame(claims))
    for c in claims:
        print("-", c.sentence)"""),
        ("code", f"""\
    # CI check (collapsed): on the quick preset the verdicts are those stated above; no check fails
    if PRESET == "quick":
        ex.expect(claims, held={list(held)!r}, not_held={list(not_held)!r})
    else:
        ex.expect(claims)""", CI_CHECK),
    ]


def figures_cell(study: str, table: str) -> str:
    return f"""\
for fig in plots.study_figures({study!r}, {table}).values():
    display(fig)"""


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
**Export CSV + PNG** saves the comparison with every setting that produced it.

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
# 01-07 · One notebook per finding
# ---------------------------------------------------------------------------------------------

#: The validation claims that hold on the quick preset (asserted by notebook 06).
VALIDATION_HELD = ("last_layer_matched:8",)

NOTEBOOKS["01_depth_and_width.ipynb"] = [
    ("md", """\
    # 01 · Depth and width: are influence estimates accurate for deep networks?

    **Finding (i)** of Basu, Pope & Feizi (ICLR 2021): first-order influence estimates are
    fairly accurate for *shallow* networks and often wrong for *deeper* ones; **(ii)** weight
    decay matters.

    Protocol (every choice is an option of `ex.depth_study`): Iris MLPs of width 5 and growing
    depth, with weight decay 0.005 (trained in float64 with L-BFGS towards a stationary point, the
    same optimiser at every depth) and without (a fixed budget of 100 Adam steps: trained to
    stationarity, these nets reach the separable-data regime, objective ~1e-9 and a vanishing
    Hessian, where the "estimate" is a scaled gradient dot product; 100 steps stop short of it,
    at the price of a large gradient norm, reported below); the **exact** Hessian over all
    parameters; the highest-loss test point; the 40 training points with the largest |estimate|;
    the actual effect by **warm-start leave-one-out retraining of all layers** under the model's
    own objective, minus a control retrain that removes nothing. The quick preset uses SELU (the
    activation of the reference table) and 8 seeds, enough for the claims checked below to exceed
    twice their standard error; the paper preset adds tanh and 20 seeds.

    Reference figures (quoted literally from Epifano et al. 2023, SELU, weight decay 0.005, 50
    seeds; see `docs/findings.md`): mean Spearman 0.66 / 0.40 / 0.51 / 0.40 at depth 1 / 2 / 4 /
    8; without weight decay 0.02-0.19."""),
    ("code", SETUP),
    ("md", "## Depth"),
    ("code", """\
    print(ex.PRESETS["depth"][PRESET])
    depth = ex.depth_study(PRESET, progress=True)
    depth.head()"""),
    ("md", """\
    Our mean Spearman by depth, with its standard error over seeds (`spearman_se`), beside the
    reference (`ref_*`: weight decay 0.005 only), and what the models are: the training objective,
    the gradient norm, the fraction that reached the gradient tolerance, the Hessian's extreme
    eigenvalues."""),
    ("code", """\
    summary = ex.summarize(depth)
    summary[["activation", "weight_decay", "depth", "spearman", "spearman_se", "n", "ref_spearman",
             "objective", "grad_norm", "converged", "top_eigenvalue", "ref_top_eigenvalue",
             "min_eigenvalue"]]"""),
    ("md", "**Can these numbers be trusted?** The same checks `iw.influence` reports, per group:"),
    ("code", """\
    for note in ex.trust_notes(depth):
        print("-", note)"""),
    ("code", figures_cell("depth", "depth")),
    ("md", """\
    **Is the model at a stationary point?** Influence functions assume one. The `grad_norm` column
    is the norm of the training objective's gradient at the trained parameters: with SELU L-BFGS
    stalls on an activation kink, and the no-weight-decay arm stops after its fixed budget.
    Negative `min_eigenvalue`s say the Hessian is indefinite there. Both are candidate causes of
    "fragility" that have nothing to do with depth; compare with
    `ex.depth_study(PRESET, activations=("tanh",))`, whose nets reach a stationary point."""),
    ("code", """\
    curvature = ["grad_norm", "min_eigenvalue", "top_eigenvalue"]
    depth.groupby(["weight_decay", "depth"])[curvature].median()"""),
    ("md", "## Width"),
    ("code", """\
    width = ex.width_study(PRESET, progress=True)
    ex.summarize(width)[["activation", "weight_decay", "width", "spearman", "n", "top_eigenvalue",
                         "grad_norm"]]"""),
    ("code", figures_cell("width", "width")),
    ("md", """\
    ## Explore

    Pick a model, a test point and a solver; the explorer retrains only what is not cached."""),
    ("code", "iw.InfluenceExplorer()"),
    *claims_cells("depth", "depth", held=("shallow_beats_deep:selu", "weight_decay_helps:selu",
                                          "curvature_grows:selu")),
    ("md", """\
    The width study of the quick preset has one seed per activation: it has no standard error, so
    its claims print "not reproduced at this scale" by rule (the paper preset runs 20 seeds)."""),
    *claims_cells("width", "width"),
    ("code", """\
    # CI check (collapsed): one row per model, correlations in range, no degenerate model
    models = depth[["activation", "weight_decay", "depth", "seed"]].drop_duplicates()
    assert len(depth) == len(models) and set(ex.COLUMNS) <= set(depth.columns)
    assert depth["spearman"].dropna().between(-1, 1).all()
    assert depth["spearman"].notna().mean() > 0.9
    assert not any("degenerate" in note for note in ex.trust_notes(depth))
    assert width["spearman"].dropna().between(-1, 1).all() and len(width) > 0
    print("checks passed")""", CI_CHECK),
]

NOTEBOOKS["02_weight_decay.ipynb"] = [
    ("md", """\
    # 02 · Weight decay: needed for good estimates?

    **Finding (ii)** (Basu et al., quoted): for some architectures and datasets weight decay is
    needed for good influence estimates; without it the Hessian at the trained parameters is badly
    conditioned or indefinite. Whether that is so *here* is computed below, not assumed.

    Protocol (printed with the preset): the 8x8 digits (MNIST too when its files are in the cache
    folder), a one-hidden-layer tanh MLP and a small ReLU CNN, in float64, with and without weight
    decay; **CG** and stochastic **LiSSA** estimates with the damping of the preset; warm-start
    LOO of all layers on the training points with the largest |estimate|.

    **Why the arms are trained differently.** Trained as long as the weight-decay arm, the nets
    without weight decay overfit (objective ~1e-4) and their Hessian vanishes: its top eigenvalue
    falls to about the damping, the "inverse Hessian" becomes about `I / damping` and the estimate
    a plain gradient dot product. That is a degenerate model, not a finding about weight decay. So
    they train for `steps_no_wd` steps, and a check below requires every one of them to keep its
    top Hessian eigenvalue at least 10x the damping. A solver that fails (CG on negative
    curvature) stays in the tables as failed and is never averaged in."""),
    ("code", SETUP),
    ("code", """\
    print(ex.PRESETS["weight_decay"][PRESET])
    table = ex.weight_decay_study(PRESET, progress=True)
    for note in table.attrs.get("notes", []):
        print("note:", note)
    ex.summarize(table)"""),
    ("md", "Every estimate that failed, with its reason (never dropped from the tables):"),
    ("code", """\
    table[table.error != ""][["arch", "weight_decay", "seed", "solver", "min_eigenvalue", "error"]]"""),
    ("code", reference_cell("weight_decay")),
    ("code", figures_cell("weight_decay", "table")),
    ("md", """\
    **Which arm is indefinite?** The rows "smallest Ritz value" below give the most negative
    curvature Lanczos found in each arm, and in how many models `H + damping I` is indefinite
    (where CG must fail): read the sentence, not this paragraph."""),
    *claims_cells("weight_decay", "table", held=("weight_decay_helps:digits:mlp:0.01",)),
    ("code", """\
    # CI check (collapsed): every failure is negative curvature, on a model whose H + damping I
    # is indefinite; both arms present; correlations in range
    assert table["spearman"].dropna().between(-1, 1).all()
    failed = table[table.error != ""]
    assert failed["error"].str.startswith("NegativeCurvatureError").all()
    assert (failed["min_eigenvalue"] + failed["damping"] < 0).all()
    assert set(table.weight_decay) == set(ex.PRESETS["weight_decay"][PRESET]["weight_decays"])
    no_wd = table[table.weight_decay == 0]
    assert (no_wd.top_eigenvalue >= 10 * no_wd.damping).all(), no_wd.top_eigenvalue.min()
    print("checks passed")""", CI_CHECK),
]

NOTEBOOKS["03_architectures.ipynb"] = [
    ("md", """\
    # 03 · Architectures: small CNN, LeNet-5, VGG, ResNet

    **Finding (i)** beyond MLPs (Basu et al., quoted): on MNIST small CNNs give fair estimates; on
    CIFAR-10 larger networks (VGG, ResNet) give poor ones.

    The paper preset runs CIFAR-10 (small CNN, VGG-style, ResNet-18 with GroupNorm) when its files
    are in the cache folder. The quick preset, and the paper preset without CIFAR-10, use an offline
    stand-in: the 8x8 digits as images, with a small ReLU CNN, LeNet-5 (tanh) and a VGG-style ReLU
    network, 3 seeds each.

    **Everything else held fixed.** Every architecture is scored with the *same* solvers (CG, and
    stochastic LiSSA beside it) and the same damping, chosen above the most negative Hessian
    eigenvalue of these models so that `H + damping I` is positive definite; a solver that still
    fails is shown as failed, never dropped from an average. Each solver's relative error against
    the exact solve is reported beside its agreement with LOO (where the exact solve is affordable:
    LeNet-5's 61,706 parameters are not), since a solver's error would otherwise pass for an
    architecture effect. Models that did not reach their stationarity tolerance are flagged in the
    tables (`converged`, `grad_norm`) and on the figure's axis."""),
    ("code", SETUP),
    ("code", """\
    print(ex.PRESETS["architecture"][PRESET])
    table = ex.architecture_study(PRESET, progress=True)
    for note in table.attrs.get("notes", []):
        print("note:", note)
    ex.summarize(table)"""),
    ("md", "Per model: stationarity (`converged` is False when the gradient norm is above the tolerance) and curvature."),
    ("code", """\
    table.drop_duplicates(["arch", "seed"])[["arch", "seed", "n_params", "objective", "grad_norm",
                                             "converged", "top_eigenvalue", "min_eigenvalue",
                                             "test_acc"]]"""),
    ("code", reference_cell("architecture")),
    ("code", figures_cell("architecture", "table")),
    *claims_cells("architecture", "table", not_held=("larger_is_worse",)),
    ("code", """\
    # CI check (collapsed): every architecture has every solver on every seed (failed or not)
    o = ex.PRESETS["architecture"][PRESET]
    assert len(o["seeds"]) >= 3 or PRESET != "quick"
    assert len(table) == len(o["archs"]) * len(o["seeds"]) * len(o["solvers"])
    assert table.groupby("arch")["solver"].apply(set).map(lambda s: s == set(o["solvers"])).all()
    assert table["spearman"].dropna().between(-1, 1).all()
    small = table[(table.n_params <= o["exact_max_params"]) & (table.solver == "cg")]
    assert (small.rel_error < 1e-3).all() and small.rel_error.notna().all()
    print("checks passed")""", CI_CHECK),
    ("md", """\
    ## Retraining guidance for ResNet-18-sized models

    Exact Hessians and full-network leave-one-out are out of reach at ResNet-18 size (11 M
    parameters), but three things remain affordable on one machine:

    * **Last-layer estimate and last-layer LOO.** `params="last_layer"` restricts both the
      estimate and the retraining to the classifier (5,130 parameters for 10 classes): the exact
      solve is then cheap and the retraining is a convex problem, so the two should agree closely
      (notebook 06 shows how closely). Say in the results that this is what was compared.
    * **Group removal** (notebook 07): remove tens of points at once and compare with the
      retraining noise floor, since a single point's effect is often inside it.
    * **Time and memory.** Measured in this project (`benchmarks/RESULTS.md`,
      `benchmarks/results/memory.md`): ResNet-18 with GroupNorm on 1,000 CIFAR-shaped images peaks
      at 2.4-2.6 GiB per solver (CG, LiSSA, Arnoldi, exact last layer); training-side gradients
      are streamed in chunks, so memory does not grow as training points x parameters. LOO
      retraining costs one training run per removed point (warm starts: a fixed number of steps),
      so plan k x steps on a GPU (`--device cuda`), and run sweeps on a process pool or Dask
      (`executor=`) for more.

    A tiny runnable version (a ResNet-18 with GroupNorm on 40 digits, a few steps: it shows the
    calls, not a result):"""),
    ("code", """\
    from influence_widgets.experiments.core import ModelCase, load_data, train_case

    small = ModelCase("digits_images", "resnet18", None, None, None, weight_decay=0.01, seed=0,
                      options={"norm": "group"}, data_options={"train_size": 40, "test_size": 10},
                      train=ex.presets.image_training(20 if PRESET == "quick" else 500))
    data = load_data(small.dataset, **small.data_options)
    resnet = train_case(small, data)
    test = (data.X_test[:1], data.y_test[:1])
    est = iw.influence(resnet, data.train, test, params="last_layer", damping=0.01)
    top = est[0].abs().argsort(descending=True)[:5]
    act = iw.leave_one_out(resnet, data.train, test, top, params="last_layer", mode="warm_start",
                           config=resnet.config.replace(steps=50, lr=1e-3))
    print("last-layer estimate:", est[0, top].numpy())
    print("last-layer LOO:     ", act[0].numpy())"""),
]

NOTEBOOKS["04_test_points.ipynb"] = [
    ("md", """\
    # 04 · Test points: how much does the answer depend on which test point?

    **Finding (iii)**: the accuracy of influence estimates varies strongly with the test point
    examined, e.g. the highest-loss vs a median-loss test point.

    Protocol: Iris MLPs (depth 1 and 4, weight decay 0.005, SELU and tanh), the highest-loss, a
    median-loss and a random test point of each model; exact estimates against warm-start LOO
    on each test point's 40 largest |estimates|."""),
    ("code", SETUP),
    ("code", """\
    print(ex.PRESETS["test_point"][PRESET])
    table = ex.test_point_study(PRESET, progress=True)
    ex.summarize(table)"""),
    ("code", reference_cell("test_point")),
    ("code", figures_cell("test_point", "table")),
    ("md", """\
    The figure keeps activations apart (x: activation / test point) and colours depth. The
    spread across the test points of one model (max - min Spearman):"""),
    ("code", """\
    model = ["activation", "depth", "seed"]
    spread = table.groupby(model)["spearman"].agg(lambda s: s.max() - s.min()).rename("range")
    spread.to_frame()"""),
    ("md", """\
    **Depth, read beside convergence.** Finding (i) says deeper networks give worse estimates,
    yet deep tanh models here can score as well as shallow ones. First-order influence assumes
    the model sits at a minimum of its training objective (a zero gradient); the claims below
    compare depths within each activation and report, beside them, the share of models trained
    to their stationarity tolerance (`converged`). Read a depth effect together with that share:
    a model far from a minimum adds the optimiser's drift to every actual change, so its estimate
    can be off for a reason that has nothing to do with depth."""),
    *claims_cells("test_point", "table", held=("range", "depth:selu"),
                  not_held=("depth:tanh",)),
    ("code", """\
    # CI check (collapsed)
    assert table["spearman"].dropna().between(-1, 1).all()
    assert set(table.test_point) == set(ex.PRESETS["test_point"][PRESET]["test_points"])
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
    the same damping (0.001). `rel_error` = ||estimate - exact|| / ||exact||."""),
    ("code", SETUP),
    ("code", """\
    print(ex.PRESETS["solver"][PRESET])
    table = ex.solver_study(PRESET, progress=True)
    columns = ["depth", "solver", "rel_error", "spearman", "est_seconds", "top_eigenvalue", "n"]
    ex.summarize(table)[columns]"""),
    ("code", reference_cell("solver")),
    ("md", """\
    **How to read the figure.** Left: each solver's relative error against the exact solve, by
    depth, on a log scale: a point is the mean over seeds, its bar the standard error (a bar is
    cut at the smallest value drawn rather than running down to 0, which a log axis cannot show).
    Lower is better: about 1e-10 is rounding (CG), about 0.1-1 means the estimate's direction is
    noticeably off (compare with the Spearman column of the table: a solver can have a large error
    in norm and still rank the training points similarly). The exact solver is left out: it is
    the reference. Right: seconds per estimate, same layout: how the cost grows with depth.
    Below: estimated against actual (here: the exact estimate) for a few models; points on the
    dashed y = x line are estimated exactly."""),
    ("code", figures_cell("solver", "table")),
    *claims_cells("solver", "table", held=("lissa_error_grows",)),
    ("code", """\
    # CI check (collapsed)
    assert (table.loc[table.solver == "cg", "rel_error"] < 1e-3).all()
    assert (table.loc[table.solver != "exact", "rel_error"].dropna() >= 0).all()
    print("checks passed")""", CI_CHECK),
]

NOTEBOOKS["06_validation_procedure.ipynb"] = [
    ("md", """\
    # 06 · Validation: how much of the "fragility" is the ground truth itself?

    Leave-one-out retraining is a choice, not the truth. The reference replication (Epifano et al.)
    found that retraining only the last layer, matching a last-layer estimate, flattens the depth
    trend (about 0.48 -> 0.50). Bae et al. (NeurIPS 2022) showed that influence functions
    approximate the proximal Bregman response function (PBRF) well even where they miss LOO.
    K & Søgaard (2022): LOO is unstable under retraining randomness — measure the noise floor first.

    Protocol: Iris SELU MLPs (depth 1 and 8, weight decay 0.005); exact estimates over all
    parameters and over the last layer, against warm-start LOO of all layers, warm-start LOO of the
    last layer only, and the PBRF. **Every ground truth is judged against real retraining
    noise**: the model retrained from scratch with nothing removed under new seeds (a new
    initialisation and batch order each, its own schedule); `noise_source` says what was
    randomised. A full-batch warm start from a nudged start would only say how reproducible the
    optimiser is, so it is never used for "within noise". `frac_within_noise` is the share of
    |actual| below the floor, the band drawn around y = 0 in the scatter plots."""),
    ("code", SETUP),
    ("code", """\
    print(ex.PRESETS["validation"][PRESET])
    table = ex.validation_study(PRESET, progress=True)
    ex.summarize(table)[["depth", "params", "loo_mode", "loo_params", "spearman", "spearman_sd",
                         "frac_within_noise", "n"]]"""),
    ("code", reference_cell("validation")),
    ("code", figures_cell("validation", "table")),
    *claims_cells("validation", "table", held=VALIDATION_HELD),
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
    # 07 · Scale and groups: single points against the noise floor, groups by size

    **Finding (v)** (Basu et al., quoted): at ImageNet scale (ResNet-50) estimates are imprecise and
    LOO retraining is itself noisy: removing one point changes less than the randomness of
    retraining does, so the paper suggests group-level analysis.

    Protocol: an ImageNet-style image folder (`datasets.image_folder`; when none is given, a
    small synthetic folder of coloured shapes, 3 classes, is written to the cache folder), a
    small CNN trained **with mini-batches**, so that retraining has real randomness: the order of
    the mini-batches and the initialisation. For each group size (size 1: single points) the most
    helpful, the most harmful and random groups of training points; the **group estimate** is the
    sum of its members' estimates; the **actual** effect retrains from scratch, from the same
    initialisation and batch order, without the group; the **noise floor** retrains with nothing
    removed under other seeds (a new initialisation and batch order). One row per seed x test
    point x group size: sizes are never pooled. The paper preset uses a ResNet-18 with GroupNorm
    (last-layer estimate) on 32x32 images; pass `root=` for your own folder."""),
    ("code", SETUP),
    ("code", """\
    print(ex.PRESETS["group"][PRESET])
    table = ex.group_study(PRESET, progress=True)
    ex.summarize(table)"""),
    ("code", reference_cell("group")),
    ("md", """\
    **How to read the figures.** Left: for each group size, the share of the actual effects whose
    size |actual| is below the noise floor (the rule of `frac_within_noise`, the band around
    y = 0 in the scatter plots). Middle: the median |actual| over the noise floor; the dashed line
    at 1 is the floor. Right: how well the summed estimates rank the actual effects of groups of
    that size. Each point is one seed x test point; bars are mean ± SE."""),
    ("code", figures_cell("group", "table")),
    ("code", """\
    table[["seed", "test_point", "group_size", "n_eval", "spearman", "noise_std",
           "frac_within_noise", "effect_to_noise", "noise_source"]]"""),
    *claims_cells("group", "table", held=("single_within_noise", "groups_exceed_noise",
                                          "rank:16")),
    ("code", """\
    # CI check (collapsed): one row per group size (never pooled), at least 5 seeds on the
    # quick preset, a noise floor from real retraining randomness
    o = ex.PRESETS["group"][PRESET]
    assert sorted(table.group_size.unique()) == sorted(o["group_sizes"])
    assert table.groupby(["seed", "test_index"]).size().eq(len(o["group_sizes"])).all()
    assert PRESET != "quick" or table.seed.nunique() >= 5
    assert table.noise_source.str.contains("initialisation").all()
    assert table["frac_within_noise"].between(0, 1).all() and (table["noise_std"] > 0).all()
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

    An estimate is only as "wrong" as the ground truth it is judged by. Three are in use:

    * **LOO** — remove one training point, retrain warm-started from the trained parameters for a
      fixed number of steps, and measure the change in the test loss (Koh & Liang; the protocol of
      Basu et al. and of notebooks 01-06). Correlation over the 24 (quick) training points with
      the largest |exact estimate|.
    * **LDS** — the linear datamodeling score (Park et al. 2023, TRAK): retrain *from scratch* on
      random halves of the training set; per test point, the Spearman correlation across the
      subsets between the summed estimates of the removed points and the retrained test loss.
    * **PBRF** — the proximal Bregman response function (Bae et al. 2022), which influence
      functions approximate even where they miss LOO. It is compared with the estimate it
      approximates: the **damped Gauss-Newton** one (`curvature="ggn"`, damping = the PBRF
      damping), not the Hessian estimate used for LOO and LDS.

    Every solver of the registry is judged by all three on the same models and test points: an
    Iris logistic regression (convex), an Iris tanh MLP (one hidden layer of 5) and a digits tanh
    MLP (one hidden layer of 32, trained with weight decay by full-batch Adam), each the 4 (quick)
    highest-loss test points of 2 seeds. Every ground truth is judged against real retraining
    noise: the model retrained from scratch with nothing removed under new seeds.

    Reference: dattri's published benchmark (LOO correlation / LDS). MNIST logistic regression —
    explicit 0.88 / 0.80, CG 0.88 / 0.80, LiSSA 0.87 / 0.79, Arnoldi 0.27 / 0.31; MNIST MLP —
    every method's LOO correlation <= 0.02, LDS CG 0.26, LiSSA 0.14, Arnoldi 0.09. Our models are
    much smaller than MNIST's; where a published claim does not hold here, the notebook says "not
    reproduced at this scale"."""),
    ("code", SETUP),
    ("code", """\
    from influence_widgets.experiments.studies import (
        ground_truth_claims,
        ground_truth_comparison,
        ground_truth_conclusion,
    )

    print(ex.PRESETS["ground_truth"][PRESET])
    table = ex.run_study("ground_truth", PRESET, progress=True)
    table[["model", "seed", "test_index", "truth", "solver", "curvature", "damping", "spearman",
           "n_eval", "noise_std"]].head(8)"""),
    *trust_cells("table"),
    ("md", """\
    ## Every solver against every ground truth, beside dattri's figures

    Mean Spearman correlation ± its standard error over seeds and test points; the last row is
    each column's noise floor (the share of the actual effects inside it, and how many times it
    the spread of the actual effects is). The dattri columns are the published numbers, quoted
    as they are (MNIST, far larger than these models): a reference, not a target."""),
    ("code", "display(ground_truth_comparison(table))"),
    ("code", reference_cell("ground_truth")),
    ("code", figures_cell("ground_truth", "table")),
    ("md", """\
    ## What to conclude

    Computed from the table above, each claim with its standard error over models, seeds and test
    points (test points of one model are not independent: read the errors as optimistic). A
    difference counts only beyond twice its standard error; otherwise the sentence says "not
    reproduced at this scale"."""),
    ("code", """\
    for line in ground_truth_conclusion(table):
        print("-", line)"""),
    ("md", """\
    ## Checks

    Always: one row per model x seed x test point x solver x ground truth, correlations in
    [-1, 1], no failed estimate, CG equal to the exact solve, LDS over every subset. On the quick
    preset (seeds fixed), also the claims that held there: exact and CG agree with every ground
    truth on the Iris models above the bar, and LDS puts the identity baseline below exact and CG
    beyond 2 SE."""),
    ("code", """\
    o = ex.PRESETS["ground_truth"][PRESET]
    claims = {c.key: c for c in ground_truth_claims(table)}
    n_rows = len(o["models"]) * len(o["seeds"]) * o["n_test"] * len(o["solvers"]) * 3
    assert len(table) == n_rows and set(table.truth) == {"warm_start", "lds", "pbrf"}, len(table)
    assert table["spearman"].between(-1, 1).all() and (table.error == "").all()
    assert (table.loc[table.solver == "cg", "rel_error"] < 1e-6).all()
    assert (table.loc[table.truth == "lds", "n_eval"] == o["n_subsets"]).all()
    pbrf = table[(table.truth == "pbrf") & table.solver.isin(["exact", "cg", "lissa", "arnoldi"])]
    assert (pbrf.curvature == "ggn").all() and (pbrf.damping == o["pbrf_damping"]).all()
    for c in claims.values():
        print(("HELD   " if c.held else "NOT    ") + c.key)
    if PRESET == "quick":  # the seeds are fixed: these held when the notebook was written
        assert claims["iris_bar"].held, claims["iris_bar"].sentence
        assert claims["identity_lds:exact"].held and claims["identity_lds:cg"].held
    print("checks passed")"""),
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
