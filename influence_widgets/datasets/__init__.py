"""Datasets: Iris, digits, synthetic blobs (offline); MNIST, Fashion-MNIST, CIFAR-10, image folders."""

from __future__ import annotations

from collections.abc import Callable

from .base import Data, as_tensors, split_indices, standardize, subset, subset_indices
from .tabular import blobs, digits, iris


def _images(name: str) -> Callable[..., Data]:
    def loader(*args, **kwargs) -> Data:
        from . import images

        return getattr(images, name)(*args, **kwargs)

    loader.__name__ = name
    loader.__doc__ = f"See :func:`influence_widgets.datasets.images.{name}`."
    return loader


mnist = _images("mnist")
fashion_mnist = _images("fashion_mnist")
cifar10 = _images("cifar10")
image_folder = _images("image_folder")

LOADERS: dict[str, Callable[..., Data]] = {
    "iris": iris,
    "digits": digits,
    "blobs": blobs,
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "image_folder": image_folder,
}


def names() -> list[str]:
    return sorted(LOADERS)


#: Data sets read from files that may be absent (the others ship with the package's dependencies).
FILE_DATASETS = ("mnist", "fashion_mnist", "cifar10")


def missing(name: str, root: str | None = None) -> str | None:
    """None when ``load(name)`` (with this ``root``) finds its data on this machine, else one
    line in plain words saying what is missing and what to do (``make data``, ``download=True``).

    Only the files' presence is checked (cheap: nothing is read). Iris, digits and blobs are
    always present; an image folder needs ``root``."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(names())}")
    if name == "image_folder":
        from pathlib import Path

        if root is None or not Path(root).expanduser().is_dir():
            return f"image folder {root} does not exist" if root else "an image folder needs root="
        return None
    if name not in FILE_DATASETS:
        return None
    from . import images

    return images.missing(name, root)


def locate(name: str, root: str | None = None):
    """The folder ``load(name)`` reads MNIST or Fashion-MNIST from (a ``Path``), or None when
    the data are not on this machine; the search order is in :mod:`.images`."""
    from . import images

    return images.locate(name, root)


def load(name: str, **kwargs) -> Data:
    """Load a dataset by name (see :func:`names`); keyword arguments go to its loader."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(names())}") from None
    return loader(**kwargs)


__all__ = [
    "Data", "as_tensors", "blobs", "cifar10", "digits", "fashion_mnist", "image_folder", "iris",
    "load", "locate", "missing", "mnist", "names", "split_indices", "standardize", "subset",
    "subset_indices", "FILE_DATASETS", "LOADERS",
]
