"""No silent wrong answers (issue 10, sections 3 and 4): each probe that once gave a wrong result
or a cryptic error now gives a clear error naming the problem and the fix."""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import clustered, small_mlp
from PIL import Image
from torch import nn

import influence_widgets as iw
from influence_widgets.__main__ import main
from influence_widgets.datasets import images
from influence_widgets.experiments import core
from influence_widgets.ground_truth.store import LOOStore, StoreError, open_store
from influence_widgets.influence import HessianTooLargeError, InfluenceEngine, hessian_spectrum
from influence_widgets.models import zoo
from influence_widgets.models.losses import check_targets

DT = torch.float64
NAME = "iris-mlp-d1-w5"  # the cheapest zoo preset

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:H is indefinite:RuntimeWarning")]


def _data(n: int = 20, d: int = 3, k: int = 3, seed: int = 0):
    return clustered(n, d, k, seed)


def _mlp(seed: int = 0, d: int = 3, k: int = 3) -> nn.Module:
    return small_mlp(seed, d, 4, k)


TRAIN, TEST = _data(), _data(5, seed=1)


# ----------------------------------------------------------------------------- 1. zoo weights


def _cached(tmp_path: Path) -> tuple[Path, Path, bytes]:
    tm = zoo.load(NAME)
    weights = Path(tm.extra["cache_path"])
    return weights, weights.with_suffix(".json"), weights.read_bytes()


def _flip_one_byte(path: Path) -> None:
    """Flip one bit inside the stored numbers of a weight tensor (the pickle stays loadable)."""
    raw = bytearray(path.read_bytes())
    blob = torch.load(path, weights_only=True)
    data = blob["state"]["3.weight"].numpy().tobytes()
    at = bytes(raw).find(data)
    assert at > 0
    raw[at + 5] ^= 0x10
    path.write_bytes(bytes(raw))


def _edit(path: Path, kind: str) -> None:
    blob = torch.load(path, weights_only=True)
    if kind == "x100":
        blob["state"] = {k: v * 100 for k, v in blob["state"].items()}
    else:
        blob["state"]["3.weight"] = torch.full_like(blob["state"]["3.weight"], float("nan"))
    torch.save(blob, path)


def test_zoo_refuses_edited_weights_until_retrain(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path))
    weights, _, good = _cached(tmp_path)
    for kind in ("flip", "x100", "nan"):
        weights.write_bytes(good)
        _flip_one_byte(weights) if kind == "flip" else _edit(weights, kind)
        with pytest.raises(zoo.ZooCacheError, match="sha256") as err:
            zoo.load(NAME)
        msg = str(err.value)
        assert str(weights) in msg and f"zoo.load({NAME!r}, retrain=True)" in msg, kind
    fixed = zoo.load(NAME, retrain=True)
    assert Path(fixed.extra["cache_path"]).read_bytes() == good  # training is deterministic
    assert zoo.load(NAME).converged


def test_zoo_refuses_nan_weights_even_with_a_matching_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path))
    weights, meta, _ = _cached(tmp_path)
    _edit(weights, "nan")
    info = json.loads(meta.read_text())
    info["sha256"] = zoo._digest(torch.load(weights, weights_only=True))
    meta.write_text(json.dumps(info))
    with pytest.raises(zoo.ZooCacheError, match="'3.weight' holds NaN or inf") as err:
        zoo.load(NAME)
    assert "retrain=True" in str(err.value)


def test_zoo_metadata_without_a_hash_is_refused_and_old_formats_are_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path))
    _, meta, _ = _cached(tmp_path)
    info = json.loads(meta.read_text())
    assert len(info["sha256"]) == 64
    del info["sha256"]
    meta.write_text(json.dumps(info))
    with pytest.raises(zoo.ZooCacheError, match="no sha256") as err:
        zoo.load(NAME)
    assert str(meta) in str(err.value) and "retrain=True" in str(err.value)
    # files of an older format have another key: never read, a new model is trained
    calls = []
    monkeypatch.setattr(zoo, "train", lambda *a, **k: calls.append(1) or iw.train(*a, **k))
    monkeypatch.setattr(zoo, "FORMAT", zoo.FORMAT + 1)
    assert zoo.load(NAME).converged and calls == [1]


# ----------------------------------------------------------------------------- 2. test indices


@pytest.mark.parametrize("indices, error, words", [
    ([1.7], ValueError, "1.7 is not an integer"),
    (1.5, ValueError, "1.5 is not an integer"),
    ([0, float("nan")], ValueError, "nan is not an integer"),
    (np.array([0.5]), ValueError, "0.5 is not an integer"),
    (torch.tensor([1.25]), ValueError, "1.25 is not an integer"),
    ([True], TypeError, "booleans"),
    ([0, True], TypeError, "booleans"),
    (torch.tensor([True, False]), TypeError, "nonzero"),
])
def test_non_integer_test_indices_are_refused(indices, error, words):
    with pytest.raises(error, match=words):
        iw.influence(_mlp(), TRAIN, TEST, test_indices=indices)


def test_integer_valued_test_indices_still_work():
    full = iw.influence(_mlp(), TRAIN, TEST)
    for indices in ([np.int64(1), torch.tensor(3)], torch.tensor([1, 3]), np.array([1, 3]),
                    [1.0, 3.0], range(1, 4, 2)):
        got = iw.influence(_mlp(), TRAIN, TEST, test_indices=indices)
        torch.testing.assert_close(got, full[[1, 3]], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- 3. the CLI


@pytest.mark.parametrize("seeds", ["0", "-1", "two"])
def test_cli_seeds_must_be_positive(tmp_path, capsys, seeds):
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "solver", "--preset", "tiny", "--seeds", seeds,
              "--out", str(tmp_path / "out"), "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and "must be a positive integer" in err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def no_study(monkeypatch):
    """Fails the test if any case of a study is evaluated."""
    def evaluate(*args, **kwargs):
        raise AssertionError("the study ran")

    monkeypatch.setattr(core, "evaluate_case", evaluate)


@pytest.mark.parametrize("blocked", ["file", "under_file", "table_is_a_folder", "read_only"])
def test_cli_unwritable_out_fails_before_the_study(tmp_path, capsys, monkeypatch, no_study,
                                                   blocked):
    (tmp_path / "afile").write_text("x")
    out = {"file": tmp_path / "afile", "under_file": tmp_path / "afile" / "out"}.get(
        blocked, tmp_path / "out")
    if blocked == "table_is_a_folder":
        (out / "solver.csv").mkdir(parents=True)
    if blocked == "read_only":  # chmod does not stop root, so the file system says no instead
        real = Path.write_bytes

        def refuse(self, data):
            if self.parent == out:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", refuse)
    code = main(["reproduce", "solver", "--preset", "tiny", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert str(tmp_path / "afile" if blocked in ("file", "under_file") else out) in err
    assert "--out" in err
    assert "Permission denied" in err or blocked != "read_only"


def test_cli_keeps_the_rows_of_finished_cases(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real = core.evaluate_case
    seen = []

    def second_fails(case, **kwargs):
        seen.append(case)
        if len(seen) == 2:
            raise RuntimeError("the machine went away")
        return real(case, **kwargs)

    monkeypatch.setattr(core, "evaluate_case", second_fails)
    code = main(["reproduce", "solver", "--preset", "tiny", "--out", str(out), "--quiet",
                 "--no-figures"])
    err = capsys.readouterr().err
    assert code == 1 and "the machine went away" in err
    partial = out / "solver.partial.csv"
    assert str(partial) in err and not (out / "solver.csv").exists()
    table = pd.read_csv(partial)
    assert len(table) > 0 and set(table.depth) == {1} and "spearman" in table.columns
    # a full run replaces the partial table by the final one
    monkeypatch.setattr(core, "evaluate_case", real)
    assert main(["reproduce", "solver", "--preset", "tiny", "--out", str(out), "--quiet",
                 "--no-figures"]) == 0
    assert set(pd.read_csv(out / "solver.csv").depth) == {1, 2} and not partial.exists()


# ----------------------------------------------------------------------------- 4. labels


def _bad_labels(split: str, value: int):
    X, y = TRAIN if split == "train" else TEST
    y = y.clone()
    y[2] = value
    return X, y


ENTRY_POINTS = {
    "train": lambda tr, te: iw.train(_mlp(), tr, iw.TrainConfig.preset("exact")),
    "influence": lambda tr, te: iw.influence(_mlp(), tr, te),
    "engine.scores": lambda tr, te: InfluenceEngine(_mlp(), tr).scores(te),
    "leave_one_out": lambda tr, te: iw.leave_one_out(
        _mlp(), tr, te, [0], config=iw.TrainConfig.preset("exact").replace(steps=3), store=None),
}


@pytest.mark.parametrize("entry, split, value", [
    ("train", "train", 7), ("influence", "train", 3), ("influence", "test", -1),
    ("engine.scores", "test", 5), ("leave_one_out", "train", 3), ("leave_one_out", "test", -2),
])
def test_labels_outside_the_classes_are_named(entry, split, value):
    tr = _bad_labels("train", value) if split == "train" else TRAIN
    te = _bad_labels("test", value) if split == "test" else TEST
    what = "training" if split == "train" else "test"
    with pytest.raises(ValueError, match=rf"the {what} labels must be class indices in 0\.\.2 "
                                         rf"\(the model has 3 outputs\), but row 2 is {value}"):
        ENTRY_POINTS[entry](tr, te)


def test_check_targets_names_dtype_shape_and_mse_width():
    with pytest.raises(TypeError, match=r"float64.*y\.long\(\)"):
        check_targets(torch.tensor([0.0, 1.0], dtype=DT), 3, "cross_entropy")
    with pytest.raises(ValueError, match=r"shape \(2, 1\).*reshape"):
        check_targets(torch.tensor([[0], [1]]), 3, "cross_entropy")
    with pytest.raises(ValueError, match=r"shape \(4,\).*3 output\(s\).*\(N, 3\)"):
        check_targets(torch.zeros(4, dtype=DT), 3, "mse", "test")
    with pytest.raises(ValueError, match="finite"):
        check_targets(torch.tensor([0.0, float("nan")]), 1, "mse")
    check_targets(torch.tensor([0, 2]), 3, "cross_entropy")
    check_targets(torch.zeros(4, dtype=DT), 1, "mse")
    check_targets(torch.zeros(4, 2, dtype=DT), 2, "mse")


# ----------------------------------------------------------------------------- 5-8. the model


@pytest.mark.parametrize("entry", ["influence", "engine", "hessian_spectrum"])
def test_empty_training_set_is_named(entry):
    empty = (TRAIN[0][:0], TRAIN[1][:0])
    call = {"influence": lambda: iw.influence(_mlp(), empty, TEST),
            "engine": lambda: InfluenceEngine(_mlp(), empty),
            "hessian_spectrum": lambda: hessian_spectrum(_mlp(), empty)}[entry]
    with pytest.raises(ValueError, match="the training set is empty"):
        call()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_are_refused(dtype):
    model = _mlp().to(dtype)
    with pytest.raises(TypeError, match=r"float32 or float64.*model\.float\(\) or model\.double"):
        iw.influence(model, (TRAIN[0].to(dtype), TRAIN[1]), (TEST[0].to(dtype), TEST[1]))


def test_meta_device_models_are_refused():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="meta device.*load its weights first"):
        iw.influence(model, (TRAIN[0].float(), TRAIN[1]), (TEST[0].float(), TEST[1]))


def test_exact_spectrum_checks_the_size_first():
    big = nn.Sequential(nn.Linear(3, 20000), nn.Tanh(), nn.Linear(20000, 3)).to(DT)
    with pytest.raises(HessianTooLargeError, match=r"needs about [\d,]+ bytes.*method='lanczos'"):
        hessian_spectrum(big, TRAIN, method="exact")
    with pytest.raises(HessianTooLargeError, match="1,000 bytes"):
        hessian_spectrum(_mlp(), TRAIN, method="exact", max_bytes=1000)
    assert hessian_spectrum(_mlp(), TRAIN, method="exact")["n_params"] == 31


# ----------------------------------------------------------------------------- 9. the LOO store


def test_a_file_that_is_not_a_database_is_named(tmp_path):
    garbage = tmp_path / "loo.sqlite"
    garbage.write_bytes(b"not a database " * 100)
    for make in (lambda: open_store(str(garbage)),
                 lambda: iw.leave_one_out(_mlp(), TRAIN, TEST, [0], store=garbage,
                                          config=iw.TrainConfig.preset("exact").replace(steps=3))):
        with pytest.raises(StoreError) as err:
            make()
        msg = str(err.value)
        assert str(garbage) in msg and "not a usable SQLite database" in msg
        assert "store=None" in msg and "delete" in msg


def test_a_store_locked_by_another_process_is_named(tmp_path):
    path = tmp_path / "loo.sqlite"
    store = LOOStore(path, timeout=0.2)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         f"con = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
         "con.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError) as err:
            store.put("s", {"1": iw.ground_truth.store.Record(torch.zeros(2), 0.0)})
    finally:
        holder.communicate("", timeout=30)
    msg = str(err.value)
    assert str(path) in msg and "locked by another process" in msg and "store=None" in msg
    assert store.count() == 0  # usable again once the other process let go
    with pytest.raises(sqlite3.DatabaseError):  # StoreError keeps the SQLite error as its cause
        raise err.value.__cause__


# ----------------------------------------------------------------------------- 10-11. datasets


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


@pytest.mark.parametrize("damage, file", [
    ("text", "train-images-idx3-ubyte"),
    ("truncated", "t10k-images-idx3-ubyte"),
    ("labels_as_images", "train-labels-idx1-ubyte"),
    ("one_label_short", "t10k-labels-idx1-ubyte"),
])
def test_garbage_mnist_files_are_named(tmp_path, damage, file):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("t10k", 4)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8))
    path = raw / file
    if damage == "text":
        path.write_text("<html>404 not found</html>")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "labels_as_images":
        path.write_bytes((raw / "train-images-idx3-ubyte").read_bytes())
    else:
        _write_idx(path, np.arange(3, dtype=np.uint8))
    with pytest.raises(FileNotFoundError) as err:
        images.mnist(tmp_path)
    msg = str(err.value)
    assert f"MNIST file {path} is corrupted" in msg.splitlines()[0]
    assert "Delete it" in msg and "download=True" in msg


def test_image_folder_with_one_class_is_refused_at_load(tmp_path):
    cat = tmp_path / "pets" / "cat"
    cat.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(cat / f"{i}.png")
    with pytest.raises(ValueError, match="found 1 class in .*pets .*at least two class subfolders"):
        images.image_folder(tmp_path / "pets", image_size=8)


# ----------------------------------------------------------------------------- 12. cache=False


def test_zoo_without_cache_touches_no_cache_folder(tmp_path, monkeypatch, no_real_data):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path / "afile" / "cache"))
    tm = zoo.load(NAME, cache=False)  # the cache folder could not even be created
    assert tm.converged and "cache_path" not in tm.extra
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path / "cache"))
    zoo.load(NAME, cache=False)
    with pytest.raises(FileNotFoundError):
        images.mnist()  # the default data folder is looked at, not created
    assert not (tmp_path / "cache").exists()


def test_a_study_with_no_seeds_is_an_error_not_an_empty_table():
    from influence_widgets import experiments as ex

    for seeds in (0, -2, ()):
        with pytest.raises(ValueError, match="seeds"):
            ex.depth_study("tiny", seeds=seeds)
