"""The workshop app: the explorer for people who have never seen Python, served by Voila.

``participant_app()`` is the explorer in its participant view (the explorer first, models named
in words, the advanced settings folded, models whose data are missing left out and explained,
errors at the top in plain words). ``python -m influence_widgets.widgets.workshop PATH`` writes
the app's notebook to ``PATH``: ``make workshop`` serves that copy, never the quickstart that an
instructor may be editing in JupyterLab.
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path
from typing import Any

TITLE = "Can I trust these influence estimates?"
APP_INTRO = f"# {TITLE}\n\nPick a model and press **Compute**; click a dot to see its point."
APP_CODE = (
    "from influence_widgets.widgets.workshop import participant_app\n\n"
    "participant_app()"
)
DATASET_WORDS = {
    "iris": "Iris flowers",
    "digits": "Digits 8x8",
    "mnist": "MNIST digits",
    "fashion_mnist": "Fashion-MNIST clothes",
    "cifar10": "CIFAR-10 photos",
    "synthetic": "Synthetic points",
}
NETWORK_WORDS = {"cnn": "small convolutional network", "lenet": "LeNet convolutional network",
                 "vgg": "VGG-style convolutional network", "resnet": "ResNet convolutional network"}


def model_words(name: str) -> str:
    """A model in words for its list entry: the data and the network, without training jargon
    (no dtype, no optimiser), then its code name."""
    from ..models import zoo

    try:
        preset = zoo.get_preset(name)
    except ValueError:
        return name
    data = DATASET_WORDS.get(preset.dataset, preset.dataset)
    opts = dict(preset.options or {})
    if preset.arch == "mlp" and "depth" in opts:
        d = int(opts["depth"])
        net = (f"{d} hidden layer{'s' if d != 1 else ''} of {opts.get('width', '?')} "
               f"{opts.get('activation', '')} units").replace("  ", " ")
    else:
        net = next((words for key, words in NETWORK_WORDS.items() if key in preset.arch),
                   preset.arch)
    wd = preset.config.weight_decay
    decay = "weight decay" if wd else "no weight decay"
    return f"{data}: {net}, {decay} ({name})"


def model_line(tm: Any) -> str:
    """One line about a loaded model: data, size, parameters and health, in plain words."""
    data = tm.data
    n_params = sum(p.numel() for p in tm.model.parameters())
    health = tm.health.line() if getattr(tm, "health", None) is not None else "health unknown"
    words = DATASET_WORDS.get(getattr(data, "name", ""), getattr(data, "name", "data"))
    return (f"<div class='iw-model-line' style='color:#333'>{html.escape(str(words))} · "
            f"{data.X_train.shape[0]} training points · {n_params:,} parameters · "
            f"<b>{html.escape(health.split(':')[0])}</b>"
            f"<span style='color:#666'>{html.escape(health[len(health.split(':')[0]):])}"
            "</span></div>")


def missing_note(names: list[str]) -> str:
    """Why some models are not in the list: their data are not on this machine."""
    if not names:
        return ""
    from ..models import zoo

    reasons = sorted({zoo.missing_data(n) or "" for n in names} - {""})
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons)
    return (f"<details class='iw-missing-models' style='color:#555'><summary>{len(names)} more "
            "models need data that is not on this machine</summary><ul style='margin:2px 0 "
            f"2px 16px;padding:0'>{items}</ul></details>")


def participant_app(model: str | None = None, **options: Any) -> Any:
    """The explorer in its participant view (see the module docstring)."""
    from .explorer import InfluenceExplorer

    return InfluenceExplorer(model=model, view="participant", **options)


def app_notebook() -> dict[str, Any]:
    """The app's notebook: a short title and one cell that shows the participant view."""
    def lines(text: str) -> list[str]:
        parts = text.split("\n")
        return [p + "\n" for p in parts[:-1]] + [parts[-1]]

    return {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": lines(APP_INTRO)},
            {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
             "source": lines(APP_CODE)},
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_app(path: str | Path) -> Path:
    """Write the app's notebook to ``path`` (its folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(app_notebook(), indent=1) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m influence_widgets.widgets.workshop PATH.ipynb", file=sys.stderr)
        return 2
    print(f"workshop app written to {write_app(args[0])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
