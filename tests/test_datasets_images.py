"""Image loaders on tiny files written in the real on-disk formats (nothing is downloaded)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tvd

from influence_widgets import datasets
from influence_widgets.datasets import images

N_TRAIN, N_TEST = 20, 10


# --- writers for the real formats -------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file: big-endian magic (0x08 = uint8, number of dims), dims, then raw bytes."""
    assert array.dtype == np.uint8
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist(root: Path, folder: str = "MNIST", seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "X_train": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(N_TRAIN) * 7 % 10).astype(np.uint8),
        "X_test": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }
    write_idx(raw / "train-images-idx3-ubyte", arrays["X_train"])
    write_idx(raw / "train-labels-idx1-ubyte", arrays["y_train"])
    write_idx(raw / "t10k-images-idx3-ubyte", arrays["X_test"])
    write_idx(raw / "t10k-labels-idx1-ubyte", arrays["y_test"])
    return arrays


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root: Path) -> dict[str, np.ndarray]:
    """CIFAR-10 python batches: pickled dicts with ``data`` (N, 3072) uint8 rows (R, G, B planes
    of 32x32) and ``labels``; ``batches.meta`` holds ``label_names``."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    X_train = rng.integers(0, 256, (N_TRAIN, 3072), dtype=np.uint8)
    y_train = [int(v) for v in rng.integers(0, 10, N_TRAIN)]
    X_test = rng.integers(0, 256, (N_TEST, 3072), dtype=np.uint8)
    y_test = [int(v) for v in rng.integers(0, 10, N_TEST)]

    def dump(name: str, obj: dict) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    per = N_TRAIN // 5
    for i in range(5):
        rows = slice(i * per, (i + 1) * per)
        dump(f"data_batch_{i + 1}", {"batch_label": f"training batch {i + 1} of 5",
                                     "data": X_train[rows], "labels": y_train[rows],
                                     "filenames": [f"img_{j}.png" for j in range(per)]})
    dump("test_batch", {"batch_label": "testing batch 1 of 1", "data": X_test, "labels": y_test,
                        "filenames": [f"test_{j}.png" for j in range(N_TEST)]})
    dump("batches.meta", {"label_names": CIFAR_NAMES, "num_cases_per_batch": per, "num_vis": 3072})
    return {"X_train": X_train, "y_train": np.array(y_train),
            "X_test": X_test, "y_test": np.array(y_test)}


def raw_float(X: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(X.reshape(-1, *shape).astype(np.float32) / 255.0)


# --- MNIST and Fashion-MNIST ------------------------------------------------------------------


@pytest.fixture
def mnist_root(tmp_path):
    return tmp_path, write_mnist(tmp_path)


def test_mnist_loads_real_idx_files(mnist_root):
    root, a = mnist_root
    d = images.mnist(root, standardize=False)
    assert d.name == "mnist" and d.is_image
    assert d.X_train.shape == (N_TRAIN, 1, 28, 28) and d.X_test.shape == (N_TEST, 1, 28, 28)
    assert d.input_shape == (1, 28, 28)
    assert d.X_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert 0.0 <= d.X_train.min() and d.X_train.max() <= 1.0
    torch.testing.assert_close(d.X_train, raw_float(a["X_train"], (1, 28, 28)))
    torch.testing.assert_close(d.X_test, raw_float(a["X_test"], (1, 28, 28)))
    assert d.y_train.tolist() == a["y_train"].tolist()
    assert d.y_test.tolist() == a["y_test"].tolist()
    assert d.class_names == list(tvd.MNIST.classes) and d.n_classes == 10
    assert d.info["root"] == str(root) and d.info["seed"] == 0
    assert d.info["n_train"] == N_TRAIN and d.info["n_test"] == N_TEST


def test_mnist_standardizes_with_training_statistics(mnist_root):
    root, a = mnist_root
    d = images.mnist(root)
    assert abs(d.X_train.mean().item()) < 1e-5
    assert d.X_train.std().item() == pytest.approx(1.0, abs=1e-4)
    mean, std = d.info["standardization"]["mean"], d.info["standardization"]["std"]
    assert len(mean) == len(std) == 1  # one value per channel
    train = raw_float(a["X_train"], (1, 28, 28))
    assert mean[0] == pytest.approx(train.mean().item(), abs=1e-6)
    torch.testing.assert_close(d.X_test, (raw_float(a["X_test"], (1, 28, 28)) - mean[0]) / std[0])
    assert abs(d.X_test.mean().item()) > 1e-4  # test data are not re-centred on their own mean


def test_mnist_subsets_are_deterministic_by_seed(mnist_root):
    root, a = mnist_root
    d1 = images.mnist(root, train_size=8, test_size=4, seed=3, standardize=False)
    d2 = images.mnist(root, train_size=8, test_size=4, seed=3, standardize=False)
    d3 = images.mnist(root, train_size=8, test_size=4, seed=4, standardize=False)
    assert d1.X_train.shape == (8, 1, 28, 28) and d1.X_test.shape == (4, 1, 28, 28)
    assert torch.equal(d1.X_train, d2.X_train) and torch.equal(d1.y_test, d2.y_test)
    assert not torch.equal(d1.X_train, d3.X_train)
    assert d1.info["train_size"] == 8 and d1.info["test_size"] == 4 and d1.info["seed"] == 3
    # every subset row is one of the written images, with its own label
    full = raw_float(a["X_train"], (1, 28, 28))
    for x, y in zip(d1.X_train, d1.y_train):
        (row,) = torch.nonzero((full == x).flatten(1).all(1)).flatten().tolist()
        assert int(a["y_train"][row]) == int(y)


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    a = write_mnist(tmp_path, "FashionMNIST", seed=5)
    d = images.fashion_mnist(tmp_path, standardize=False)
    assert d.name == "fashion_mnist"
    assert d.class_names[:2] == ["T-shirt/top", "Trouser"] and d.n_classes == 10
    torch.testing.assert_close(d.X_test, raw_float(a["X_test"], (1, 28, 28)))
    assert d.y_train.tolist() == a["y_train"].tolist()
    with pytest.raises(FileNotFoundError, match="MNIST"):
        images.mnist(tmp_path)  # the MNIST folder is not there


def test_mnist_missing_files_error_names_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        images.mnist(tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in msg
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in msg
    assert "download=True" in msg

    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="Missing now: t10k-labels-idx1-ubyte"):
        images.mnist(tmp_path)


def test_default_root_is_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cache" / "data" / "MNIST")):
        images.mnist()
    write_mnist(tmp_path / "cache" / "data")
    d = datasets.load("mnist", train_size=5)  # through the package's lazy loader
    assert d.X_train.shape == (5, 1, 28, 28)
    assert d.info["root"] == str(tmp_path / "cache" / "data")


# --- CIFAR-10 ---------------------------------------------------------------------------------


@pytest.fixture
def cifar_root(tmp_path):
    return tmp_path, write_cifar(tmp_path)


def test_cifar10_loads_real_pickle_batches(cifar_root):
    root, a = cifar_root
    d = images.cifar10(root, standardize=False, _verify_checksums=False)
    assert d.name == "cifar10" and d.is_image and d.input_shape == (3, 32, 32)
    assert d.X_train.shape == (N_TRAIN, 3, 32, 32) and d.X_test.shape == (N_TEST, 3, 32, 32)
    assert d.X_train.dtype == torch.float32 and d.y_test.dtype == torch.int64
    # channel planes come back in the file's R, G, B order, rows across the five batches in order
    torch.testing.assert_close(d.X_train, raw_float(a["X_train"], (3, 32, 32)))
    torch.testing.assert_close(d.X_test, raw_float(a["X_test"], (3, 32, 32)))
    assert d.y_train.tolist() == a["y_train"].tolist()
    assert d.y_test.tolist() == a["y_test"].tolist()
    assert d.class_names == CIFAR_NAMES
    assert d.info["source"] == "torchvision.datasets.CIFAR10"


def test_cifar10_standardizes_per_channel_and_subsets(cifar_root):
    root, a = cifar_root
    d = images.cifar10(root, train_size=12, test_size=6, seed=1, _verify_checksums=False)
    assert d.X_train.shape == (12, 3, 32, 32) and d.X_test.shape == (6, 3, 32, 32)
    means = d.X_train.mean(dim=(0, 2, 3))
    stds = d.X_train.std(dim=(0, 2, 3))
    torch.testing.assert_close(means, torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(stds, torch.ones(3), atol=1e-4, rtol=0)
    assert len(d.info["standardization"]["mean"]) == 3
    again = images.cifar10(root, train_size=12, test_size=6, seed=1, _verify_checksums=False)
    other = images.cifar10(root, train_size=12, test_size=6, seed=2, _verify_checksums=False)
    assert torch.equal(d.X_train, again.X_train) and torch.equal(d.y_train, again.y_train)
    assert not torch.equal(d.X_train, other.X_train)


def test_cifar10_checks_md5_by_default(cifar_root):
    root, _ = cifar_root
    with pytest.raises(FileNotFoundError) as e:
        images.cifar10(root)
    msg = str(e.value)
    assert str(root / "cifar-10-batches-py") in msg
    assert "corrupted" in msg and "download=True" in msg
    # turning verification off for one call changes nothing for torchvision's class
    assert all(md5 for _, md5 in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list)
    assert tvd.CIFAR10.meta["md5"]
    with pytest.raises(RuntimeError):
        tvd.CIFAR10(str(root), train=True)


def test_cifar10_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        images.cifar10(tmp_path, _verify_checksums=False)
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    for name in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        assert name in msg
    assert "download=True" in msg


# --- image folders ----------------------------------------------------------------------------

CLASSES = ["bird", "cat", "dog"]
PER_CLASS = 5


def color(c: int, j: int) -> tuple[int, int, int]:
    """A solid colour that identifies class ``c`` and image ``j``."""
    return (40 * c + 3 * j + 10, 100 + c, 200 - j)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for j in range(PER_CLASS):
            Image.new("RGB", (12, 10), color(c, j)).save(root / name / f"{j:03d}.png")
    # a grayscale image is read as RGB; hidden folders and non-image files are ignored
    Image.new("L", (9, 9), 77).save(root / "dog" / "gray.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".ipynb_checkpoints").mkdir()
    return root


def identify(x: torch.Tensor) -> tuple[int, int, int]:
    return tuple(int(round(v)) for v in (x.mean(dim=(1, 2)) * 255).tolist())


def test_image_folder_loads_and_splits(folder):
    d = images.image_folder(folder, image_size=8, standardize=False)
    assert d.name == "image_folder" and d.is_image
    assert d.class_names == CLASSES and d.input_shape == (3, 8, 8)
    n = 3 * PER_CLASS + 1
    assert len(d.y_train) + len(d.y_test) == n
    assert sorted(d.y_test.tolist()) == [0, 1, 2]  # stratified: round(5 * 0.2) = round(6 * 0.2) = 1
    assert d.X_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert 0.0 <= d.X_train.min() and d.X_train.max() <= 1.0
    expected = {color(c, j): c for c in range(3) for j in range(PER_CLASS)} | {(77, 77, 77): 2}
    for X, y, files in ((d.X_train, d.y_train, d.info["train_files"]),
                        (d.X_test, d.y_test, d.info["test_files"])):
        for x, label, f in zip(X, y.tolist(), files):
            assert expected[identify(x)] == label  # each image keeps its own label
            assert Path(f).parts[0] == CLASSES[label]
    seen = [identify(x) for x in torch.cat([d.X_train, d.X_test])]
    assert sorted(seen) == sorted(expected)


def test_image_folder_split_is_seeded_and_standardized(folder):
    a = images.image_folder(folder, image_size=8, seed=0)
    b = images.image_folder(folder, image_size=8, seed=0)
    c = images.image_folder(folder, image_size=8, seed=7)
    assert a.info["test_files"] == b.info["test_files"] and torch.equal(a.X_test, b.X_test)
    assert a.info["test_files"] != c.info["test_files"]
    torch.testing.assert_close(a.X_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def test_image_folder_max_per_class_and_size(folder):
    d = images.image_folder(folder, image_size=6, max_per_class=3, test_fraction=0.34)
    assert d.X_train.shape == (6, 3, 6, 6) and d.X_test.shape == (3, 3, 6, 6)
    assert torch.bincount(d.y_test).tolist() == [1, 1, 1]
    e = images.image_folder(folder, image_size=6, max_per_class=3, test_fraction=0.34, seed=1)
    assert sorted(d.info["train_files"] + d.info["test_files"]) != sorted(
        e.info["train_files"] + e.info["test_files"])


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        images.image_folder(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(FileNotFoundError, match="one subfolder per class"):
        images.image_folder(tmp_path / "flat")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"cat.*\.png"):
        images.image_folder(tmp_path / "empty")
    for name, n in (("cat", 3), ("dog", 1)):
        (tmp_path / "one" / name).mkdir(parents=True)
        for j in range(n):
            Image.new("RGB", (4, 4)).save(tmp_path / "one" / name / f"{j}.png")
    with pytest.raises(ValueError, match="dog"):
        images.image_folder(tmp_path / "one")
