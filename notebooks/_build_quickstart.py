"""Writes notebooks/00_quickstart.ipynb (outputs stripped)."""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

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
* the shaded **band** is the retraining noise floor: how much the test loss moves when nothing is
  removed and only the retraining randomness changes. Differences inside the band are noise.

Pearson and Spearman correlations (with bootstrap 95% intervals) summarise the agreement.

**What to try** (Basu, Pope & Feizi, ICLR 2021, *Influence functions in deep learning are fragile*):

* **depth**: switch the model from `iris-mlp-d1-w5-wd` to `iris-mlp-d2-w5-wd` or `iris-mlp-d4-w5-wd`
  — estimates usually get worse with depth;
* **weight decay**: compare with `iris-mlp-d1-w5` (no weight decay) and look at the Hessian's
  eigenvalues in the *diagnostics* tab;
* **solver**: exact vs CG vs LiSSA (try a small LiSSA scale to see it diverge) vs Arnoldi;
* **last layer**: restrict the estimate (*parameters*) and/or the retraining (*ground truth*) to the
  last layer;
* **test point**: highest-loss vs median-loss vs random test points.

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

CHECK_MD = """\
The cell below runs only in CI (`IW_NOTEBOOK_QUICK` set): it computes with the default settings and
checks that the numbers make sense on this shallow, weight-decayed model."""

CHECK = """\
if os.environ.get("IW_NOTEBOOK_QUICK"):
    import math

    explorer.compute(raise_errors=True)
    stats = explorer.last_stats
    assert stats is not None, explorer.error
    assert math.isfinite(stats["pearson"]) and math.isfinite(stats["spearman"]), stats
    assert stats["pearson"] > 0.5, f"Pearson {stats['pearson']:.3f} is too low on iris-mlp-d1-w5-wd"
    print(f"Pearson {stats['pearson']:.3f}, Spearman {stats['spearman']:.3f}, n = {stats['n']}")"""

nb = new_notebook(cells=[
    new_markdown_cell(INTRO), new_code_cell(LOAD), new_code_cell(EXPLORER),
    new_markdown_cell(CHECK_MD), new_code_cell(CHECK),
])
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
for i, cell in enumerate(nb.cells):
    cell.metadata = {}
    cell.id = f"quickstart-{i}"
nbformat.validate(nb)
nbformat.write(nb, "notebooks/00_quickstart.ipynb")
