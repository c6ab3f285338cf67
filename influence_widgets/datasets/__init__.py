"""Datasets: Iris, digits, synthetic blobs (offline); MNIST, Fashion-MNIST, CIFAR-10, image folders."""

from __future__ import annotations

from collections.abc import Callable

from .base import Data, as_tensors, split_indices, standardize, subset
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


def load(name: str, **kwargs) -> Data:
    """Load a dataset by name (see :func:`names`); keyword arguments go to its loader."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(names())}") from None
    return loader(**kwargs)


__all__ = [
    "Data", "as_tensors", "blobs", "cifar10", "digits", "fashion_mnist", "image_folder", "iris",
    "load", "mnist", "names", "split_indices", "standardize", "subset", "LOADERS",
]
