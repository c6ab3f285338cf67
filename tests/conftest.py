"""Shared test set-up: every test uses a private cache folder, never the user's."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path_factory.mktemp("iw-cache")))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny problems: one intra-op thread is faster and immune to a busy shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest entry of the reference ``b``."""
    return float((a - b).abs().max() / b.abs().max())


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: run `make test-gpu` on a machine with a GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def clustered(n: int, d: int = 3, k: int = 3, seed: int = 0, dtype=torch.float64):
    """``n`` points in ``k`` Gaussian clusters in ``d`` dimensions, labels ``0..k-1`` in turn:
    the small classification problem the solver tests share."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    X = torch.randn(k, d, generator=g, dtype=dtype)[y] + torch.randn(n, d, generator=g, dtype=dtype)
    return X, y


def small_mlp(seed: int = 0, d: int = 3, width: int = 4, k: int = 3,
              act: nn.Module | None = None, dtype=torch.float64) -> nn.Module:
    """A one-hidden-layer MLP (tanh unless ``act``), seeded."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), act or nn.Tanh(), nn.Linear(width, k)).to(dtype)


@pytest.fixture
def no_real_data(monkeypatch):
    """Hide the data sets installed on this machine (``make data``, Debian's packages,
    ``$INFLUENCE_WIDGETS_DATA``): the loaders then see only the private cache and ``root=``."""
    from influence_widgets.datasets import idx, images

    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    monkeypatch.setattr(images, "project_data_dir", lambda: None)
    monkeypatch.setattr(images, "SYSTEM_FOLDERS", {k: {} for k in images.SYSTEM_FOLDERS})


def _real_data(name: str):
    from influence_widgets.datasets import idx, images

    folder = images.locate(name)
    if folder is None:
        pytest.skip(f"real {idx.KNOWN[name].title} is not on this machine: run `make data` "
                    "(CI does)")
    return folder


@pytest.fixture
def real_mnist():
    """The folder holding real MNIST (the test is skipped, saying why, when there is none)."""
    return _real_data("mnist")


@pytest.fixture
def real_fashion_mnist():
    """The folder holding real Fashion-MNIST (skipped, saying why, when there is none)."""
    return _real_data("fashion_mnist")


# --- tiny data sets in the real MNIST file format ---------------------------------------------

N_TRAIN, N_TEST = 20, 10


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file: big-endian magic (0x08 = uint8, number of dims), dims, then raw bytes."""
    assert array.dtype == np.uint8
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist(root: Path, folder: str = "MNIST/raw", seed: int = 0,
                gz: bool = False) -> dict[str, np.ndarray]:
    """The four IDX files of a tiny MNIST-style set in ``root/folder`` (gzipped if ``gz``)."""
    rng = np.random.default_rng(seed)
    raw = root / folder
    raw.mkdir(parents=True)
    arrays = {
        "X_train": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(N_TRAIN) * 7 % 10).astype(np.uint8),
        "X_test": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }
    for name, key in (("train-images-idx3-ubyte", "X_train"), ("train-labels-idx1-ubyte", "y_train"),
                      ("t10k-images-idx3-ubyte", "X_test"), ("t10k-labels-idx1-ubyte", "y_test")):
        write_idx(raw / name, arrays[key])
        if gz:
            path = raw / name
            path.with_name(name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
    return arrays
