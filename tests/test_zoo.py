"""The model zoo: cache reuse, cache keys, refusing corrupted or foreign files, registering."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pandas as pd
import pytest
import torch
from conftest import write_mnist
from torch import nn

from influence_widgets.models import zoo
from influence_widgets.models.training import TrainConfig, TrainedModel, train

NAME = "iris-mlp-d1-w5"  # the cheapest preset (no weight decay: L-BFGS stops in ~50 iterations)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _setup(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path))
    yield
    for name in [n for n in zoo.names() if n not in zoo.PRESETS]:
        zoo.unregister(name)


@pytest.fixture
def calls(monkeypatch):
    """Counts the zoo's calls to ``train``."""
    counter = {"n": 0}

    def counting(*args, **kwargs):
        counter["n"] += 1
        return train(*args, **kwargs)

    monkeypatch.setattr(zoo, "train", counting)
    return counter


def zoo_files(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "zoo").iterdir())


def same_state(a: TrainedModel, b: TrainedModel) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_second_load_reuses_the_cache_bit_identically(tmp_path, calls):
    a = zoo.load(NAME)
    b = zoo.load(NAME)
    assert calls["n"] == 1
    assert same_state(a, b)
    assert b.diagnostics == a.diagnostics
    assert all(torch.equal(a.init_params[k], b.init_params[k]) for k in a.init_params)
    assert a.init_params.keys() == b.init_params.keys()
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_train, b.y_train)
    assert b.X_train.dtype == torch.float64 and b.model[1].weight.dtype == torch.float64
    assert b.name == NAME and b.data is not None and b.data.name == "iris"
    assert b.config == zoo.get_preset(NAME).config and b.spec == a.spec
    assert b.extra["init_known"] is True
    assert b.grad_norm < 1e-5
    # the loaded model predicts, and its spec rebuilds
    assert b.model(b.data.X_test.double()).shape == (30, 3)
    files = zoo_files(tmp_path)
    key = b.extra["cache_key"]
    assert files == [f"{NAME}-{key}.json", f"{NAME}-{key}.pt"]  # no temporary files left
    meta = json.loads((tmp_path / "zoo" / f"{NAME}-{key}.json").read_text())
    assert meta["key"] == key and meta["config"] == b.config.to_dict()


def test_cache_false_and_retrain(tmp_path, calls):
    a = zoo.load(NAME, cache=False)
    assert not (tmp_path / "zoo").exists() or zoo_files(tmp_path) == []
    zoo.load(NAME)
    b = zoo.load(NAME, retrain=True)
    assert calls["n"] == 3
    assert same_state(a, b)  # training is deterministic
    assert len(zoo_files(tmp_path)) == 2


def test_changed_config_trains_under_another_file(tmp_path, calls, monkeypatch):
    first = zoo.load(NAME)
    p = zoo.get_preset(NAME)
    monkeypatch.setitem(
        zoo.PRESETS, NAME, dataclasses.replace(p, config=p.config.replace(weight_decay=0.01))
    )
    second = zoo.load(NAME)
    assert calls["n"] == 2
    assert second.extra["cache_key"] != first.extra["cache_key"]
    assert second.config.weight_decay == 0.01
    assert len(zoo_files(tmp_path)) == 4
    zoo.load(NAME)
    assert calls["n"] == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_weights_are_refused_until_retrain(tmp_path, calls, damage):
    good = zoo.load(NAME)
    path = tmp_path / "zoo" / f"{NAME}-{good.extra['cache_key']}.pt"
    raw = path.read_bytes()
    path.write_bytes(
        {"truncate": raw[: len(raw) // 2], "garbage": b"\x80\x02garbage" * 50, "empty": b""}[damage]
    )
    with pytest.raises(zoo.ZooCacheError, match="retrain=True") as err:
        zoo.load(NAME)
    assert str(path) in str(err.value)
    fixed = zoo.load(NAME, retrain=True)
    assert calls["n"] == 2
    assert same_state(good, fixed)
    assert same_state(good, zoo.load(NAME)) and calls["n"] == 2


def test_metadata_key_mismatch_and_bad_json_are_refused(tmp_path):
    good = zoo.load(NAME)
    meta = tmp_path / "zoo" / f"{NAME}-{good.extra['cache_key']}.json"
    info = json.loads(meta.read_text())
    meta.write_text(json.dumps({**info, "key": "0123456789abcdef"}))
    with pytest.raises(zoo.ZooCacheError, match="does not match") as err:
        zoo.load(NAME)
    assert str(meta) in str(err.value) and "retrain=True" in str(err.value)
    meta.write_text(json.dumps({**info, "config": {**info["config"], "lr": 0.5}}))
    with pytest.raises(zoo.ZooCacheError, match="differs from the preset"):
        zoo.load(NAME)
    meta.write_text('{"key": ')
    with pytest.raises(zoo.ZooCacheError, match="cannot be read"):
        zoo.load(NAME)


def test_weights_that_do_not_fit_the_model_are_refused(tmp_path):
    good = zoo.load(NAME)
    key = good.extra["cache_key"]
    path = tmp_path / "zoo" / f"{NAME}-{key}.pt"
    blob = torch.load(path, weights_only=True)
    wrong_shape = {
        **blob,
        "state": {**blob["state"], "1.weight": torch.zeros(6, 4, dtype=torch.float64)},
    }
    torch.save(wrong_shape, path)
    with pytest.raises(zoo.ZooCacheError, match="'1.weight'") as err:
        zoo.load(NAME)
    assert str(path) in str(err.value)
    missing = {**blob, "init": {k: v for k, v in blob["init"].items() if k != "3.bias"}}
    torch.save(missing, path)
    with pytest.raises(zoo.ZooCacheError, match="missing"):
        zoo.load(NAME)
    torch.save({**blob, "key": "0123456789abcdef"}, path)
    with pytest.raises(zoo.ZooCacheError, match="does not match"):
        zoo.load(NAME)
    path.unlink()
    with pytest.raises(zoo.ZooCacheError, match="missing"):
        zoo.load(NAME)


class _Touch:
    """Unpickling this object creates a file: the payload a malicious cache file could carry."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_with_code_is_never_executed(tmp_path):
    good = zoo.load(NAME)
    key = good.extra["cache_key"]
    path = tmp_path / "zoo" / f"{NAME}-{key}.pt"
    # the payload does run under a plain unpickler ...
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Touch(str(probe))))
    assert probe.exists()
    # ... but not when the zoo loads it
    marker = tmp_path / "pwned"
    torch.save({"format": zoo.FORMAT, "key": key, "state": _Touch(str(marker))}, path)
    with pytest.raises(zoo.ZooCacheError, match="plain tensors") as err:
        zoo.load(NAME)
    assert not marker.exists()
    assert "retrain=True" in str(err.value)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"did you mean 'iris-mlp-d1-w5'") as err:
        zoo.load("iris-mlp-d1-w6")
    assert "valid names:" in str(err.value) and "digits-mlp" in str(err.value)
    with pytest.raises(ValueError, match="unknown zoo model 'nope'; valid names"):
        zoo.load("nope")


def test_preset_table():
    names = zoo.names()
    iris = [n for n in names if n.startswith("iris-")]
    assert len(iris) == 11 * 2 + 3 + 4  # tanh with/without wd; ReLU d1-4; SELU d1-8
    assert {
        "iris-mlp-d8-w5-wd",
        "iris-mlp-d1-w50",
        "iris-mlp-d4-w5-relu-wd",
        "iris-mlp-d8-w5-selu-wd",
        "digits-mlp",
        "digits-cnn",
        "mnist-small-mlp",
        "mnist-small-cnn",
        "fashion-mnist-small-mlp",
        "fashion-mnist-small-cnn",
        "cifar10-small-cnn",
        "cifar10-vgg",
        "cifar10-resnet18",
    } <= set(names)
    for n in iris:
        p = zoo.get_preset(n)
        assert p.config.dtype == "float64"
        assert p.config.weight_decay == (zoo.IRIS_WEIGHT_DECAY if n.endswith("-wd") else 0.0)
        assert p.options["activation"] == (
            "relu" if "-relu" in n else "selu" if "-selu" in n else "tanh"
        )
    table = zoo.describe()
    assert isinstance(table, pd.DataFrame) and list(table["name"]) == names
    assert {"name", "dataset", "arch", "options", "weight_decay", "optimizer"} <= set(table.columns)


@pytest.mark.parametrize("name", ["mnist-small-cnn", "cifar10-resnet18"])
def test_missing_image_data_is_a_clear_error(name, no_real_data):
    with pytest.raises(FileNotFoundError, match="not found"):
        zoo.load(name)


REAL = ["mnist-small-mlp", "mnist-small-cnn", "fashion-mnist-small-mlp", "fashion-mnist-small-cnn"]


def test_real_image_presets_are_small_float64_lbfgs_with_weight_decay():
    """Quick clicks on a 2-core CPU: seeded subsets of at most 1,000 training images, smooth
    models (tanh, average pooling) trained in float64 to a gradient norm under 1e-5."""
    assert [n for n in zoo.names() if "mnist" in n] == REAL
    for name in REAL:
        p = zoo.get_preset(name)
        assert p.dataset == ("fashion_mnist" if name.startswith("fashion") else "mnist")
        assert p.dataset_kwargs["train_size"] <= 1000 and p.dataset_kwargs["test_size"] == 500
        assert p.config.dtype == "float64" and p.config.optimizer == "lbfgs"
        assert p.config.weight_decay > 0 and p.config.grad_tol == 1e-5
        assert p.options["activation"] == "tanh" and p.options.get("pool", "avg") == "avg"
        n = p.dataset_kwargs["train_size"]
        assert f"{n:,} training / 500 test" in p.description and "2-core CPU" in p.description


def test_missing_data_explains_and_available_names_leaves_out(no_real_data, tmp_path):
    for name in ("mnist-small-mlp", "fashion-mnist-small-cnn", "cifar10-vgg"):
        why = zoo.missing_data(name)
        assert why and "\n" not in why and "download=True" in why
    assert "MNIST is not on this machine" in zoo.missing_data("mnist-small-cnn")
    assert "make data" in zoo.missing_data("fashion-mnist-small-mlp")
    assert "Fashion-MNIST" in zoo.missing_data("fashion-mnist-small-mlp")
    assert zoo.missing_data(NAME) is None and zoo.missing_data("digits-mlp") is None
    assert zoo.health_line("mnist-small-mlp") == f"not known: {zoo.missing_data('mnist-small-mlp')}"
    available = zoo.available_names()
    assert NAME in available and "digits-cnn" in available
    assert not [n for n in available if "mnist" in n or "cifar" in n]
    assert available == [n for n in zoo.names() if zoo.missing_data(n) is None]
    with pytest.raises(ValueError, match="unknown zoo model"):
        zoo.missing_data("nope")

    from influence_widgets.__main__ import _zoo_lines

    text = "\n".join(_zoo_lines())
    listed, _, explained = text.partition("Not listed")
    assert NAME in listed and "mnist-small-mlp" not in listed
    assert "mnist-small-mlp" in explained and "make data" in explained

    write_mnist(tmp_path / "data", "MNIST/raw")  # MNIST arrives in the cache's data folder
    assert zoo.missing_data("mnist-small-mlp") is None
    assert {"mnist-small-mlp", "mnist-small-cnn"} <= set(zoo.available_names())
    assert zoo.missing_data("fashion-mnist-small-mlp") is not None


def test_real_image_preset_data_are_the_seeded_subset(real_mnist, real_fashion_mnist):
    for name in REAL:
        p = zoo.get_preset(name)
        data = p.load_data()
        n = p.dataset_kwargs["train_size"]
        assert data.X_train.shape == (n, 1, 28, 28) and data.X_test.shape == (500, 1, 28, 28)
        counts = torch.bincount(data.y_train, minlength=10)
        assert (counts > n / 20).all()  # every class is there (a random, not stratified, subset)
        assert data.info["seed"] == 0 and data.info["found_in"] != "root="
    assert zoo.missing_data("mnist-small-mlp") is None
    assert {*REAL} <= set(zoo.available_names())


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_real_image_presets_are_healthy(name, real_mnist, real_fashion_mnist):
    """Trained offline, each reaches a stationary point (gradient norm under grad_tol 1e-5,
    against an objective of about 0.05) and classifies well above chance (10 %)."""
    tm = zoo.load(name, cache=False)
    d = tm.diagnostics
    assert tm.converged and d["grad_norm"] < min(1e-5, 1e-3 * d["objective"]), d
    assert tm.health.healthy and not zoo.get_preset(name).teaching, tm.health.line()
    assert not [f for f in d["findings"] if f["severity"] in ("warning", "error")], d["findings"]
    assert d["train_accuracy"] > 0.85  # chance is 0.1 (a collapsed model predicts one class)
    X, y = tm.data.test
    with torch.no_grad():
        test_acc = float((tm.model(X.double()).argmax(1) == y).double().mean())
    assert test_acc > (0.8 if name.startswith("mnist") else 0.7), test_acc


def test_register_a_user_module_and_a_trained_model():
    data = zoo.get_preset(NAME).load_data()
    config = TrainConfig(optimizer="adam", lr=0.05, steps=30, dtype="float64", device="cpu")
    module = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    tm = zoo.register("my-net", module, config=config, data=data)
    assert "my-net" in zoo.names() and "my-net" in set(zoo.describe()["name"])
    loaded = zoo.load("my-net")
    # a TrainedModel keeps its objective resolved: the unset loss/weight decay are the defaults
    assert loaded.name == "my-net" and loaded.data is data and loaded.config == config.resolved()
    assert loaded.extra["init_known"] is False
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())
    assert all(torch.equal(before[k], loaded.init_params[k]) for k in before)
    assert loaded.diagnostics["steps"] == 0 and loaded.grad_norm > 0
    # the diagnostics are the objective at the registered parameters
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(module(data.X_train.double()), data.y_train)
    assert loaded.diagnostics["objective"] == pytest.approx(float(ce), rel=1e-12)
    # load gives a copy: editing it changes neither the registry nor the user's module
    with torch.no_grad():
        loaded.model[0].weight.zero_()
    assert torch.equal(zoo.load("my-net").model[0].weight, before["0.weight"])
    assert torch.equal(module[0].weight, before["0.weight"])
    assert tm.model is not module

    trained = train(module, data.train, config)
    zoo.register("my-trained", trained, data=data)
    bias = trained.model[0].bias.detach().clone()
    with torch.no_grad():
        trained.model[0].bias.add_(1.0)  # the registry holds its own copy
    again = zoo.load("my-trained")
    assert again.extra["init_known"] is True and again.data is data
    assert torch.equal(again.model[0].bias, bias)

    with pytest.raises(ValueError, match="already registered"):
        zoo.register("my-net", module, config=config, data=data)
    with pytest.raises(ValueError, match="preset name"):
        zoo.register(NAME, module, config=config, data=data)
    with pytest.raises(ValueError, match="config="):
        zoo.register("other", module, data=data)
    with pytest.raises(ValueError, match="cannot retrain"):
        zoo.load("my-net", retrain=True)
    zoo.unregister("my-net")
    assert "my-net" not in zoo.names()
    with pytest.raises(ValueError, match="unknown zoo model"):
        zoo.load("my-net")


def test_every_iris_preset_is_meant_healthy_or_a_labelled_teaching_example():
    """Issue 20: a preset is healthy, or a teaching example whose problem is said in words."""
    for name in zoo.names():
        p = zoo.get_preset(name)
        if not name.startswith("iris-"):
            continue
        no_wd = not name.endswith("-wd")
        kinked = "-relu" in name or "-selu" in name
        assert bool(p.teaching) == (no_wd or kinked), name
        if no_wd:
            assert "degenerate" in p.teaching
        elif kinked:
            assert "stationary" in p.teaching
    # depth 8 tanh with weight decay collapses from seed 0: the preset trains from seed 1
    assert zoo.get_preset("iris-mlp-d8-w5-wd").config.seed == 1
    assert "iris-mlp-d8-w5-relu-wd" not in zoo.names()  # collapsed from every seed tried
    table = zoo.describe()
    assert {"teaching", "health"} <= set(table.columns)
    row = table.set_index("name").loc["iris-mlp-d1-w5-wd"]
    assert row.teaching == "" and row.health.startswith("not known yet")


def test_a_trained_preset_lists_its_measured_health():
    tm = zoo.load(NAME)
    line = zoo.describe().set_index("name").loc[NAME, "health"]
    # NAME is a teaching example (no weight decay): its listing says what is wrong with it
    assert line == tm.health.line() and line.startswith("degenerate")


@pytest.mark.slow  # trains every Iris and digits preset: several minutes on 2 cores
def test_no_preset_is_collapsed_and_unlabelled_ones_are_healthy():
    for name in zoo.names():
        p = zoo.get_preset(name)
        if p.dataset not in ("iris", "digits"):
            continue
        h = zoo.load(name).health
        assert not h.collapsed, (name, h.line())
        if not p.teaching:
            assert h.healthy, (name, h.line())
