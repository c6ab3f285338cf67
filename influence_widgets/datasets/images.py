"""Image datasets: MNIST, Fashion-MNIST and CIFAR-10 through torchvision, and image folders."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torchvision import datasets as tvd
from torchvision import transforms as T

from .._cache import cache_dir
from .base import Data, split_indices, subset
from .base import standardize as _standardize

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


class _CIFAR10Unverified(tvd.CIFAR10):
    """CIFAR-10 that only checks that its files exist, not their md5 sums (tests' tiny files)."""

    train_list = [[name, None] for name, _ in tvd.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


def _default_root(root: str | os.PathLike | None) -> Path:
    # no folder is created here: reading creates nothing, and downloading makes its own folders
    return Path(root).expanduser() if root is not None else cache_dir(create=False) / "data"


def _missing_error(
    title: str, func: str, folder: Path, files: tuple[str, ...], download: bool, cause: Exception
) -> FileNotFoundError:
    missing = [f for f in files if not (folder / f).is_file()]
    lines = [
        f"{title} files not found or corrupted in {folder}",
        f"Put these files there (uncompressed): {', '.join(files)}.",
        f"Missing now: {', '.join(missing)}." if missing else
        "All files are there, so one of them is corrupted or not the official file.",
        f"Or call {func}(..., download=True) on a machine with internet to fetch them.",
    ]
    if download:
        lines.append(f"Downloading failed: {type(cause).__name__}: {cause}")
    return FileNotFoundError("\n".join(lines))


def _corrupt_error(title: str, func: str, path: Path, why: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{title} file {path} is corrupted: {why}\n"
        f"Delete it and download it again with {func}(..., download=True) on a machine with "
        "internet, or put the official uncompressed file there."
    )


_IDX_DIMS = {"images": 3, "labels": 1}


def _idx_problem(path: Path, dims: int) -> tuple[str, int | None]:
    """Why ``path`` is not an uint8 IDX file with ``dims`` dimensions ("" if it is one), and its
    number of rows."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4 + 4 * dims)
    if len(head) < 4 or head[:3] != b"\x00\x00\x08" or head[3] != dims:
        return (f"not an IDX file of {dims}-D unsigned bytes (its first bytes are "
                f"{head[:4].hex() or 'missing'}, expected 00 00 08 0{dims})"), None
    if len(head) < 4 + 4 * dims:
        return f"its header is cut short ({size} bytes)", None
    shape = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    want = 4 + 4 * dims + math.prod(shape)
    if size != want:
        return (f"its header says shape {tuple(shape)} ({want:,} bytes) but the file has "
                f"{size:,} bytes (truncated or not the official file)"), None
    return "", shape[0]


def _bad_idx_file(folder: Path, files: tuple[str, ...]) -> tuple[Path, str] | None:
    """The first MNIST-style IDX file in ``folder`` that is corrupted, and why (None if all the
    files there are sound; missing files are not this function's business)."""
    rows: dict[str, tuple[Path, int]] = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            continue
        kind = "images" if "images" in name else "labels"
        why, n = _idx_problem(path, _IDX_DIMS[kind])
        if why:
            return path, why
        split = name.split("-")[0]
        if split in rows and rows[split][1] != n:
            other, m = rows[split]
            return path, f"it has {n:,} rows but {other.name} has {m:,}"
        rows[split] = (path, n)
    return None


def _bad_md5_file(dataset_cls: type, folder: Path) -> tuple[Path, str] | None:
    """The first file of a checksummed torchvision dataset (CIFAR-10) whose md5 is wrong."""
    from torchvision.datasets.utils import check_integrity

    listed = list(getattr(dataset_cls, "train_list", [])) + list(getattr(dataset_cls, "test_list", []))
    meta = getattr(dataset_cls, "meta", None)
    if isinstance(meta, dict) and "filename" in meta:
        listed.append([meta["filename"], meta.get("md5")])
    for name, md5 in listed:
        path = folder / name
        if md5 and path.is_file() and not check_integrity(str(path), md5):
            return path, "its md5 sum is not the official file's"
    return None


def _torchvision_data(
    name: str,
    title: str,
    dataset_cls: type,
    subfolder: str,
    files: tuple[str, ...],
    root: str | os.PathLike | None,
    download: bool,
    train_size: int | None,
    test_size: int | None,
    seed: int,
    do_standardize: bool,
) -> Data:
    """Load a torchvision dataset into :class:`Data` (shared by MNIST, Fashion-MNIST, CIFAR-10)."""
    root = _default_root(root)
    folder = root / subfolder
    is_idx = issubclass(dataset_cls, tvd.MNIST)
    # torchvision reads a malformed file with bare asserts, or into tensors of the wrong length
    bad_errors = (RuntimeError, OSError, AssertionError, TypeError, ValueError, IndexError,
                  KeyError, EOFError, pickle.UnpicklingError)
    try:
        splits = [dataset_cls(str(root), train=train, download=download) for train in (True, False)]
    except bad_errors as e:
        bad = _bad_idx_file(folder, files) if is_idx else _bad_md5_file(dataset_cls, folder)
        if bad is not None:
            raise _corrupt_error(title, name, *bad) from e
        raise _missing_error(title, name, folder, files, download, e) from e
    bad = _bad_idx_file(folder, files) if is_idx else None
    if bad is not None:  # sound files that do not fit together (e.g. more labels than images)
        raise _corrupt_error(title, name, *bad)

    tensors = []
    for ds, size in zip(splits, (train_size, test_size)):
        data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(ds.data)
        X = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)  # (N, C, H, W)
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        X, y = subset(X, y, size, seed)
        tensors += [X.float().div_(255.0).contiguous(), y.clone()]
    X_tr, y_tr, X_te, y_te = tensors

    public = tvd.CIFAR10 if dataset_cls is _CIFAR10Unverified else dataset_cls
    info: dict[str, Any] = {
        "root": str(root),
        "source": f"torchvision.datasets.{public.__name__}",
        "train_size": train_size,
        "test_size": test_size,
        "n_train": X_tr.shape[0],
        "n_test": X_te.shape[0],
        "seed": seed,
        "standardized": do_standardize,
    }
    if do_standardize:
        X_tr, X_te, info["standardization"] = _standardize(X_tr, X_te, per_channel=True)
    classes = [str(c) for c in splits[0].classes]
    return Data(name, X_tr, y_tr, X_te, y_te, classes, tuple(X_tr.shape[1:]), True, info)


def mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> Data:
    """MNIST digits as ``(N, 1, 28, 28)`` tensors; ``train_size``, ``test_size``: seeded subsets."""
    return _torchvision_data(
        "mnist", "MNIST", tvd.MNIST, "MNIST/raw", _MNIST_FILES,
        root, download, train_size, test_size, seed, standardize,
    )


def fashion_mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> Data:
    """Fashion-MNIST clothes as ``(N, 1, 28, 28)`` tensors; subsets and scaling as for MNIST."""
    return _torchvision_data(
        "fashion_mnist", "Fashion-MNIST", tvd.FashionMNIST, "FashionMNIST/raw", _MNIST_FILES,
        root, download, train_size, test_size, seed, standardize,
    )


def cifar10(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    standardize: bool = True,
    _verify_checksums: bool = True,
) -> Data:
    """CIFAR-10 as ``(N, 3, 32, 32)`` tensors; the files' md5 sums are checked (torchvision's)."""
    cls = tvd.CIFAR10 if _verify_checksums else _CIFAR10Unverified
    return _torchvision_data(
        "cifar10", "CIFAR-10", cls, tvd.CIFAR10.base_folder, _CIFAR_FILES,
        root, download, train_size, test_size, seed, standardize,
    )


class _ImageFolder(tvd.ImageFolder):
    """``ImageFolder`` that ignores hidden folders such as ``.ipynb_checkpoints``."""

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        classes = sorted(
            e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")
        )
        if not classes:
            raise FileNotFoundError(f"no class folders in {directory}")
        return classes, {c: i for i, c in enumerate(classes)}


def image_folder(
    root: str | os.PathLike,
    *,
    image_size: int = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    max_per_class: int | None = None,
) -> Data:
    """Images in ``root/<class name>/*.png|jpg|...`` as ``(N, 3, image_size, image_size)`` tensors.

    Each image is resized (shorter side) and centre-cropped to ``image_size``; the train/test
    split is stratified and seeded; ``max_per_class`` keeps a seeded subset of each class.
    """
    root = Path(root).expanduser()
    layout = f"expected one subfolder per class with images inside, e.g. {root / 'cat' / '001.png'}"
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; {layout}")
    if max_per_class is not None and max_per_class < 2:
        raise ValueError(f"max_per_class must be >= 2 (one train, one test), got {max_per_class}")
    transform = T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor()])
    try:
        ds = _ImageFolder(str(root), transform=transform)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"cannot read image folder {root}: {e}; {layout} "
            f"(extensions: {', '.join(tvd.folder.IMG_EXTENSIONS)})"
        ) from e
    if len(ds.classes) < 2:
        raise ValueError(
            f"found {len(ds.classes)} class in {root} ({', '.join(ds.classes)}); an image folder "
            "needs at least two class subfolders (a classifier of one class learns nothing): "
            f"{layout}"
        )

    targets = torch.as_tensor(ds.targets, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c, class_name in enumerate(ds.classes):
        idx = torch.nonzero(targets == c).flatten()
        if len(idx) < 2:
            raise ValueError(
                f"class folder {root / class_name} has {len(idx)} image(s); need at least 2 "
                "so that both the training and the test split get one"
            )
        if max_per_class is not None and len(idx) > max_per_class:
            idx = idx[torch.randperm(len(idx), generator=g)[:max_per_class]].sort().values
        chosen.append(idx)
    idx = torch.cat(chosen)
    X = torch.stack([ds[i][0] for i in idx.tolist()])
    y = targets[idx]

    tr, te = split_indices(len(idx), test_fraction, seed, y)
    X_tr, X_te = X[tr], X[te]
    files = [os.path.relpath(ds.samples[i][0], root) for i in idx.tolist()]
    info: dict[str, Any] = {
        "root": str(root),
        "image_size": image_size,
        "test_fraction": test_fraction,
        "max_per_class": max_per_class,
        "seed": seed,
        "n_train": len(tr),
        "n_test": len(te),
        "train_files": [files[i] for i in tr.tolist()],
        "test_files": [files[i] for i in te.tolist()],
        "standardized": standardize,
    }
    if standardize:
        X_tr, X_te, info["standardization"] = _standardize(X_tr, X_te, per_channel=True)
    return Data(
        "image_folder", X_tr, y[tr], X_te, y[te], list(ds.classes), tuple(X.shape[1:]), True, info
    )
