"""A zoo of named trained models: trained on demand, cached on disk, reloaded safely.

``load(name)`` trains a preset the first time and caches it under
``cache_dir()/zoo/<name>-<key>.pt`` (a plain dict of tensors, read back with
``weights_only=True``: loading never runs pickled code) and ``<name>-<key>.json`` (spec, config,
diagnostics, and the sha256 of the tensors). The key hashes everything the model depends on
(spec, TrainConfig, dataset and its fingerprint, cache format and package version), so changed
settings train a new file; a cached file that is corrupted, edited (its tensors no longer match
the recorded sha256), holds NaN/inf weights or does not match is an error, never silently reused.
``cache=False`` neither reads nor writes the cache folder.

Users can add their own trained models with :func:`register`; they then appear in :func:`names`.
"""

from __future__ import annotations

import copy
import difflib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._cache import (
    atomic_torch_save,
    atomic_write_text,
    cache_dir,
    digest_tensors,
    hash_settings,
    safe_torch_load,
    stable_json,
)
from .._devices import resolve_device
from .architectures import ModelSpec
from .losses import cast_targets
from .training import Progress, TrainConfig, TrainedModel, fit_copies, state_of, summarize, train

FORMAT = 6  # bump when the layout of the cached files changes (3: sha256 of the tensors in the
# metadata; 4: the model's health in the diagnostics; 5: L-BFGS trains stacked copies together
# with its own line search, so the trained models differ; 6: a sha256 of the diagnostics too;
# files of an older format have another key, so they are simply not found: stale)

__all__ = [
    "PRESETS",
    "Preset",
    "ZooCacheError",
    "available_names",
    "cache_paths",
    "describe",
    "get_preset",
    "load",
    "missing_data",
    "names",
    "register",
    "unregister",
]


class ZooCacheError(RuntimeError):
    """A cached zoo file is corrupted or does not match the settings it is loaded for."""


@dataclass(frozen=True)
class Preset:
    """A named recipe for a trained model: dataset, architecture and how to train it.

    ``arch`` and ``options`` make the :class:`ModelSpec` (input shape and classes come from the
    data); ``config`` is the :class:`TrainConfig`; the data are loaded only by :meth:`load_data`.
    Every preset trains to a healthy model (see :mod:`~influence_widgets.models.health`) unless
    it is a *teaching example*: then ``teaching`` says, in words, the problem it is there to show
    (the explorer shows it, with the model's measured health, before anything is computed).
    """

    name: str
    dataset: str
    dataset_kwargs: dict[str, Any]
    arch: str
    options: dict[str, Any]
    config: TrainConfig
    description: str = ""
    teaching: str = ""

    def load_data(self) -> Any:
        """The dataset (:class:`~influence_widgets.datasets.Data`); may raise FileNotFoundError."""
        from .. import datasets

        return datasets.load(self.dataset, **self.dataset_kwargs)

    def spec(self, data: Any) -> ModelSpec:
        return ModelSpec(self.arch, tuple(data.input_shape), data.n_classes, dict(self.options))

    def key(self, data: Any) -> str:
        """Hash of everything the trained model depends on."""
        import influence_widgets

        return hash_settings(
            {
                "format": FORMAT,
                "version": influence_widgets.__version__,
                "spec": self.spec(data).to_dict(),
                "config": self.config.resolved().to_dict(),
                "dataset": self.dataset,
                "dataset_kwargs": self.dataset_kwargs,
                "data": data.fingerprint(),
            }
        )


# ----------------------------------------------------------------------------- the presets

IRIS_WEIGHT_DECAY = 0.005
#: Seeds of the Iris presets whose default seed (0) falls into a collapsed basin: depth 8 tanh
#: with weight decay reaches the zero network from seeds 0, 2 and 3 (a stationary, collapsed
#: point) and a healthy minimum from seed 1 (measured with float64 L-BFGS and with Adam).
IRIS_SEEDS = {(8, 5, "tanh", IRIS_WEIGHT_DECAY): 1}
TEACH_NO_WD = ("no weight decay: the Iris classes are separable, so the objective has no finite "
               "minimum and the curvature vanishes (degenerate); it shows why weight decay "
               "matters (finding ii)")
TEACH_KINK = ("{act}: the minimum sits on an activation kink, so training stops short of a "
              "stationary point (not stationary, often an indefinite Hessian); it shows how far "
              "from a minimum the paper's SELU protocol is")


def _iris_config(depth: int, weight_decay: float, seed: int = 0) -> TrainConfig:
    # Float64 L-BFGS on CPU: smooth (tanh) nets reach a gradient norm < 1e-5 in well under a
    # second to a few seconds; ReLU/SELU nets stall on a kink and say so in their diagnostics.
    return TrainConfig.preset("exact", weight_decay=weight_decay, grad_tol=1e-5,
                              device="cpu", seed=seed).resolved()


def _iris(depth: int, width: int, act: str, weight_decay: float) -> Preset:
    suffix = ("" if act == "tanh" else f"-{act}") + ("-wd" if weight_decay else "")
    seed = IRIS_SEEDS.get((depth, width, act, weight_decay), 0)
    config = _iris_config(depth, weight_decay, seed)
    teaching = (TEACH_NO_WD if not weight_decay else
                TEACH_KINK.format(act=act.upper()) if act != "tanh" else "")
    return Preset(
        name=f"iris-mlp-d{depth}-w{width}{suffix}",
        dataset="iris",
        dataset_kwargs={},
        arch="mlp",
        options={"depth": depth, "width": width, "activation": act},
        config=config,
        description=f"Iris MLP, {depth} hidden layer(s) of {width} {act} units, "
        f"weight decay {weight_decay}, float64 {config.optimizer}"
        + (" + L-BFGS polish" if config.polish_steps else "")
        + (f", seed {seed} (seed 0 collapses to the zero network)" if seed else ""),
        teaching=teaching,
    )


def _iris_grid() -> list[Preset]:
    """Tanh MLPs of depth 1-8 (width 5) and width 5-50 (depth 1), with weight decay (healthy)
    and without (teaching examples: degenerate); ReLU and SELU with weight decay at depth 1, 2,
    4 (and SELU at 8), teaching examples of non-stationarity. Depth-8 ReLU at width 5 is not in
    the zoo: it collapsed to a constant predictor from every seed and weight decay tried (6 of
    6 runs collapsed or stalled)."""
    archs = sorted({(d, 5) for d in (1, 2, 3, 4, 6, 8)} | {(1, w) for w in (5, 10, 20, 30, 40, 50)})
    out = [_iris(d, w, "tanh", wd) for d, w in archs for wd in (IRIS_WEIGHT_DECAY, 0.0)]
    out += [_iris(d, 5, "relu", IRIS_WEIGHT_DECAY) for d in (1, 2, 4)]
    out += [_iris(d, 5, "selu", IRIS_WEIGHT_DECAY) for d in (1, 2, 4, 8)]
    return out


_ADAM = {"optimizer": "adam", "lr": 1e-3}
_CIFAR = {"train_size": 10000, "test_size": 2000}

# name, dataset, dataset kwargs, arch, options, TrainConfig fields, description
# fmt: off
_IMAGE_TABLE: list[tuple[str, str, dict, str, dict, dict, str]] = [
    ("digits-mlp", "digits", {}, "mlp", {"depth": 1, "width": 128, "activation": "tanh"},
     {**_ADAM, "steps": 3000, "polish_steps": 500, "dtype": "float64", "weight_decay": 1e-3,
      "device": "cpu"},
     "8x8 digits, MLP 64-128-10 tanh, float64 Adam + L-BFGS polish"),
    # smooth (tanh, average pooling) so that a stationary point exists: the ReLU/max-pool CNN
    # trained with Adam stopped at gradient norm 0.098 with an indefinite Hessian. Measured:
    # 442 L-BFGS iterations to gradient 9.2e-6, Hessian eigenvalues 6.2e-4 to 3.4, training
    # accuracy 99%, 72 s on the shared 2-core CPU with another job running.
    ("digits-cnn", "digits", {"flat": False}, "small_cnn",
     {"channels": 6, "activation": "tanh", "pool": "avg"},
     {"optimizer": "lbfgs", "lr": 1.0, "steps": 3000, "dtype": "float64", "grad_tol": 1e-5,
      "weight_decay": 3e-3, "device": "cpu"},
     "8x8 digits as images, small CNN (6 then 12 channels, tanh, average pooling; 1,210 "
     "parameters), weight decay 0.003, float64 L-BFGS to a gradient norm under 1e-5"),
    ("cifar10-small-cnn", "cifar10", _CIFAR, "small_cnn", {"channels": 32},
     {**_ADAM, "epochs": 30, "batch_size": 128, "weight_decay": 5e-4},
     "CIFAR-10 subset (10,000 train), small CNN (32 channels, ReLU), float32 Adam"),
    ("cifar10-vgg", "cifar10", _CIFAR, "vgg", {"depth": 6, "width": 32},
     {**_ADAM, "epochs": 30, "batch_size": 128, "weight_decay": 5e-4},
     "CIFAR-10 subset (10,000 train), VGG-style 6 conv layers (32-128 channels), float32 Adam"),
    ("cifar10-resnet18", "cifar10", _CIFAR, "resnet18", {"norm": "group"},
     {**_ADAM, "epochs": 20, "batch_size": 128, "weight_decay": 5e-4},
     "CIFAR-10 subset (10,000 train), ResNet-18 with GroupNorm, float32 Adam"),
]
# fmt: on


# Real 28x28 images (MNIST, Fashion-MNIST; `make data` installs them): seeded subsets small
# enough to train in one click on a 2-core CPU, in float64 with full-batch L-BFGS until the
# gradient norm is under 1e-5: a stationary point, which both models allow (tanh, average
# pooling: smooth) and the weight decay keeps finite; it also conditions the Hessian, so that
# L-BFGS gets there in a few hundred iterations (with 1e-3, Fashion-MNIST's MLP is still far
# from it after 2,000). The same seed gives the same subset in any process.
_REAL_SETS = [("mnist", "mnist", "MNIST"), ("fashion-mnist", "fashion_mnist", "Fashion-MNIST")]
_REAL_TEST_SIZE = 500
_REAL_LBFGS = {"optimizer": "lbfgs", "lr": 1.0, "dtype": "float64", "grad_tol": 1e-5,
               "device": "cpu"}
# fmt: off
# name suffix, training images, arch, options, weight decay, most L-BFGS iterations, what it is,
# training time: measured with one torch thread on a shared 2-core CPU, other jobs running
# (load 4-6; MLP: 700 iterations on MNIST, 1,600 on Fashion-MNIST; CNN: 550 and 450). Two torch
# threads on the same busy machine were several times slower (MNIST MLP: 417 s against 44 s).
_REAL_MODELS: list[tuple[str, int, str, dict, float, int, str, str]] = [
    ("small-mlp", 1000, "mlp", {"depth": 1, "width": 32, "activation": "tanh"}, 1e-2, 5000,
     "MLP 784-32-10 tanh (25,450 parameters)", "30-100 s"),
    ("small-cnn", 300, "small_cnn", {"channels": 4, "activation": "tanh", "pool": "avg"}, 3e-2,
     1000, "small CNN: 4 then 8 conv3x3 channels, tanh, average pooling (4,266 parameters)",
     "50-125 s"),
]
# fmt: on


def _real_image_presets() -> list[Preset]:
    out = []
    for prefix, dataset, title in _REAL_SETS:
        for suffix, n_train, arch, opts, wd, steps, what, seconds in _REAL_MODELS:
            config = TrainConfig(**_REAL_LBFGS, weight_decay=wd, steps=steps).resolved()
            out.append(Preset(
                f"{prefix}-{suffix}", dataset, {"train_size": n_train, "test_size": _REAL_TEST_SIZE},
                arch, dict(opts), config,
                f"{title}, seeded subset of {n_train:,} training / {_REAL_TEST_SIZE} test real "
                f"28x28 images; {what}; weight decay {wd:g}, float64 L-BFGS to a gradient norm "
                f"under {config.grad_tol:g}; trains in {seconds} on a 2-core CPU (then cached)",
            ))
    return out


def _image_presets() -> list[Preset]:
    return [
        Preset(name, ds, dict(kw), arch, dict(opts), TrainConfig(**cfg).resolved(), desc)
        for name, ds, kw, arch, opts, cfg, desc in _IMAGE_TABLE
    ]


def _all_presets() -> list[Preset]:
    """Iris, digits, real MNIST/Fashion-MNIST, then CIFAR-10 (the order of :func:`names`)."""
    table = _image_presets()
    cifar = [p for p in table if p.dataset == "cifar10"]
    return _iris_grid() + [p for p in table if p not in cifar] + _real_image_presets() + cifar


PRESETS: dict[str, Preset] = {p.name: p for p in _all_presets()}
_REGISTERED: dict[str, TrainedModel] = {}


# ----------------------------------------------------------------------------- listing


def names() -> list[str]:
    """Names of all presets (in table order) followed by registered models."""
    return list(PRESETS) + [n for n in _REGISTERED if n not in PRESETS]


def missing_data(name: str) -> str | None:
    """None when the data of model ``name`` are on this machine, else one line in plain words
    saying which data set is missing and how to get it (``make data``, ``download=True``).

    Cheap (the data files are looked for, not read): front ends call it to list only models
    that can be loaded here (:func:`available_names`) and to explain the others. A registered
    model carries its own data."""
    if name in _REGISTERED:
        return None
    preset = get_preset(name)
    return _missing_dataset(preset.dataset, preset.dataset_kwargs.get("root"))


def _missing_dataset(dataset: str, root: Any) -> str | None:
    from .. import datasets

    return datasets.missing(dataset, root)


def available_names() -> list[str]:
    """The names of :func:`names` whose data are on this machine (see :func:`missing_data`)."""
    seen: dict[tuple[str, Any], str | None] = {}
    out = []
    for name in names():
        if name in _REGISTERED:
            out.append(name)
            continue
        p = PRESETS[name]
        key = (p.dataset, p.dataset_kwargs.get("root"))
        if key not in seen:
            seen[key] = _missing_dataset(*key)
        if seen[key] is None:
            out.append(name)
    return out


def _unknown(name: str) -> ValueError:
    valid = names()
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    return ValueError(f"unknown zoo model {name!r}; {hint}valid names: {', '.join(valid)}")


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name`` (ValueError with close matches if there is none)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise _unknown(name) from None


def describe() -> Any:
    """A pandas DataFrame with one row per model: name, dataset, arch, options, training, the
    problem a teaching example shows (``teaching``) and its measured health (``health``: from
    the cache for a trained preset; nothing is trained here)."""
    import pandas as pd

    rows = []
    for p in PRESETS.values():
        rows.append({**_row(p.name, p.dataset, p.arch, p.options, p.config, "preset",
                            p.description), "teaching": p.teaching, "health": health_line(p.name)})
    for name, tm in _REGISTERED.items():
        arch = tm.spec.arch if tm.spec is not None else type(tm.model).__name__
        opts = tm.spec.options if tm.spec is not None else {}
        dataset = getattr(tm.data, "name", None)
        rows.append({**_row(name, dataset, arch, opts, tm.config, "registered", ""),
                     "teaching": "", "health": tm.health.line()})
    return pd.DataFrame(rows)


def health_line(name: str) -> str:
    """The measured health of model ``name`` in one line, without training anything: a
    registered model's, a trained (cached) preset's, or why it is not known yet."""
    from .health import Health

    if name in _REGISTERED:
        return _REGISTERED[name].health.line()
    preset = get_preset(name)
    why = missing_data(name)
    if why is not None:
        return f"not known: {why}"
    try:
        data = preset.load_data()
    except (FileNotFoundError, OSError) as e:  # there, but unreadable: the loader says why
        return f"not known: its data cannot be read ({str(e).splitlines()[0][:120]})"
    _, meta = cache_paths(name, preset.key(data))
    try:
        health = json.loads(meta.read_text(encoding="utf-8"))["diagnostics"]["health"]
        return Health.from_dict(health).line()
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError):
        return "not known yet: measured when the model is first trained (zoo.load)"


def _row(name, dataset, arch, options, config: TrainConfig, source: str, description: str) -> dict:
    return {
        "name": name,
        "dataset": dataset,
        "arch": arch,
        "options": ", ".join(f"{k}={v}" for k, v in sorted(options.items())),
        "weight_decay": config.weight_decay,
        "optimizer": config.optimizer,
        "dtype": config.dtype,
        "source": source,
        "description": description,
    }


# ----------------------------------------------------------------------------- loading


def cache_paths(name: str, key: str) -> tuple[Path, Path]:
    """The weights (``.pt``) and metadata (``.json``) paths of a cached model."""
    folder = cache_dir(create=False) / "zoo"  # created by the first write, never by a read
    return folder / f"{name}-{key}.pt", folder / f"{name}-{key}.json"


def load(
    name: str, *, retrain: bool = False, progress: Progress | bool | None = None, cache: bool = True
) -> TrainedModel:
    """The trained model ``name``: from the cache, or trained now (and cached when ``cache``).

    ``retrain=True`` trains again and overwrites the cached files. A cached file that is
    corrupted, edited or does not match the preset raises :class:`ZooCacheError` (pass
    ``retrain=True``). ``cache=False`` trains without reading or writing the cache folder.
    ``progress=True`` shows a tqdm bar while training; a callable gets ``(step, total, info)``.
    """
    if not isinstance(name, str):
        raise TypeError(f"zoo.load takes a model's name (a string), got {type(name).__name__} "
                        f"{name!r}; the names: iw.zoo.available_names() (or `python -m "
                        "influence_widgets list`)")
    if name in _REGISTERED:
        if retrain:
            raise ValueError(f"{name!r} is a registered model: the zoo cannot retrain it")
        tm = _REGISTERED[name]
        return copy.deepcopy(tm, memo={id(tm.data): tm.data})
    preset = get_preset(name)
    data = preset.load_data()
    key = preset.key(data)
    if cache:
        weights, meta = cache_paths(name, key)
        if not retrain and meta.exists():
            return _read(preset, data, key, weights, meta)
    spec = preset.spec(data)
    tm = train(spec, data.train, preset.config, name=name, data=data, progress=progress)
    tm.extra.update(init_known=True, cache_key=key)
    if cache:
        try:
            _write(preset, data, key, tm, weights, meta)
        except OSError as e:  # a cache folder that is a file, read-only or full
            import warnings

            warnings.warn(
                f"zoo.load({name!r}): the model was trained but could not be saved to "
                f"{weights.parent} ({type(e).__name__}: {e.strerror or e}); it is returned from "
                "memory and will be trained again next time: set INFLUENCE_WIDGETS_CACHE to a "
                "folder you can write to, free some space, or pass cache=False",
                RuntimeWarning, stacklevel=2)
            return tm
        tm.extra["cache_path"] = str(weights)
    return tm


def _write(
    preset: Preset, data: Any, key: str, tm: TrainedModel, weights: Path, meta: Path
) -> None:
    blob = {
        "format": FORMAT,
        "key": key,
        "state": {k: v.detach().cpu() for k, v in state_of(tm.model).items()},
        "init": {k: v.detach().cpu() for k, v in tm.init_params.items()},
    }
    atomic_torch_save(blob, weights)
    info = {
        "format": FORMAT,
        "key": key,
        "sha256": _digest(blob),
        "name": preset.name,
        "dataset": preset.dataset,
        "dataset_kwargs": preset.dataset_kwargs,
        "data_fingerprint": data.fingerprint(),
        "spec": tm.spec.to_dict() if tm.spec is not None else preset.spec(data).to_dict(),
        "config": tm.config.to_dict(),
        "diagnostics": tm.diagnostics,
        "diagnostics_sha256": _diagnostics_digest(tm.diagnostics),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # The JSON is written last: it marks the entry as complete.
    atomic_write_text(meta, json.dumps(info, indent=1, sort_keys=True))


def _bad(path: Path, problem: str) -> ZooCacheError:
    name = path.name.rsplit("-", 1)[0]  # the files are <name>-<key>.pt|.json (cache_paths)
    return ZooCacheError(
        f"cached zoo file {path} {problem}; it was not used. Pass retrain=True "
        f"(zoo.load({name!r}, retrain=True)) to train the model again and overwrite it."
    )


def _digest(blob: dict) -> str:
    """sha256 of the cached tensors (``state`` and ``init``, names sorted; dtype, shape, bytes)."""
    return digest_tensors(
        {f"{part}/{k}": v for part in ("state", "init") for k, v in blob[part].items()}
    )


def _diagnostics_digest(diagnostics: Any) -> str:
    """sha256 of the diagnostics as canonical JSON (what the metadata file holds)."""
    import hashlib

    return hashlib.sha256(stable_json(json.loads(json.dumps(diagnostics))).encode()).hexdigest()


def _read(preset: Preset, data: Any, key: str, weights: Path, meta: Path) -> TrainedModel:
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(meta, f"cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(info, dict) or info.get("key") != key or info.get("format") != FORMAT:
        found = info.get("key") if isinstance(info, dict) else None
        raise _bad(meta, f"does not match the preset's settings (key {found!r}, expected {key!r})")
    if not isinstance(info.get("diagnostics"), dict):
        raise _bad(meta, "has no diagnostics")
    if not isinstance(info.get("sha256"), str):
        raise _bad(meta, "has no sha256 of the weights, so they cannot be checked")
    if not isinstance(info.get("diagnostics_sha256"), str):
        raise _bad(meta, "has no sha256 of its diagnostics, so they cannot be checked")
    if _diagnostics_digest(info["diagnostics"]) != info["diagnostics_sha256"]:
        raise _bad(meta, "holds diagnostics (objective, gradient norm, health) that do not "
                   "match the sha256 recorded when it was saved: they were edited after training")
    if not weights.exists():
        raise _bad(weights, "is missing (its metadata file exists)")
    try:
        blob = safe_torch_load(weights)
    except Exception as e:  # truncated, garbage, or a pickle that is not plain tensors
        raise _bad(
            weights,
            "cannot be loaded as plain tensors: it is truncated, corrupted or "
            f"holds pickled objects ({type(e).__name__}: {e})",
        ) from e
    if not isinstance(blob, dict) or blob.get("key") != key:
        raise _bad(weights, f"does not match the preset's settings (expected key {key!r})")

    try:
        spec, config = ModelSpec.from_dict(info["spec"]), TrainConfig.from_dict(info["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(meta, f"has an invalid spec or config ({type(e).__name__}: {e})") from e
    if spec != preset.spec(data) or config != preset.config.resolved():
        raise _bad(meta, "holds a spec or config that differs from the preset's")
    device, dtype = resolve_device(config.device), config.torch_dtype
    model = spec.build(seed=config.seed).to(device=device, dtype=dtype)
    expected = state_of(model)
    for part in ("state", "init"):
        tensors = blob.get(part)
        if not isinstance(tensors, dict):
            raise _bad(weights, f"has no {part!r} tensors")
        _check_tensors(weights, part, tensors, expected)
    if _digest(blob) != info["sha256"]:
        raise _bad(
            weights,
            f"does not match the sha256 recorded in {meta.name} when it was saved: its tensors "
            "were changed or corrupted after training",
        )
    for part in ("state", "init"):
        for k, v in sorted(blob[part].items()):
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise _bad(weights, f"{part}: tensor {k!r} holds NaN or inf values")
    with torch.no_grad():
        model.load_state_dict(blob["state"], strict=True)
    model.eval()
    X, y = data.train
    X = X.to(device=device, dtype=dtype)
    y = cast_targets(y, config.loss, device, dtype)
    extra = {"init_known": True, "cache_key": key, "cache_path": str(weights)}
    return TrainedModel(
        model,
        config,
        dict(blob["init"]),
        X,
        y,
        info["diagnostics"],
        spec=spec,
        name=preset.name,
        data=data,
        extra=extra,
    )


def _check_tensors(path: Path, part: str, tensors: dict, expected: dict[str, torch.Tensor]) -> None:
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        problem = f"missing {missing}, unexpected {unexpected}"
        raise _bad(path, f"{part}: tensor names differ from the model's ({problem})")
    for k, v in tensors.items():
        want = expected[k]
        if not isinstance(v, torch.Tensor) or v.shape != want.shape or v.dtype != want.dtype:
            got = (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else type(v).__name__
            raise _bad(
                path,
                f"{part}: tensor {k!r} is {got}, the model expects "
                f"{(tuple(want.shape), want.dtype)}",
            )


# ----------------------------------------------------------------------------- user models


def register(
    name: str,
    model_or_trained: nn.Module | TrainedModel,
    *,
    config: TrainConfig | None = None,
    data: Any = None,
    spec: ModelSpec | None = None,
    overwrite: bool = False,
) -> TrainedModel:
    """Add a user's trained model to the zoo (in memory) so that ``load(name)`` returns it.

    A ``TrainedModel`` is kept as is (``config``/``data``/``spec`` replace its own if given).
    A plain ``nn.Module`` needs the ``config`` it was trained with and the ``data`` (a ``Data``);
    it is copied, and since its initial parameters are unknown, ``init_params`` holds its current
    parameters and ``extra["init_known"]`` is False (use it for warm-start leave-one-out only).
    """
    if name in PRESETS:
        raise ValueError(f"{name!r} is a preset name; register the model under another name")
    if name in _REGISTERED and not overwrite:
        raise ValueError(f"{name!r} is already registered; pass overwrite=True to replace it")
    if isinstance(model_or_trained, TrainedModel):
        src = model_or_trained
        tm = copy.deepcopy(src, memo={id(src.data): src.data, id(data): data})
        tm.config = (config or tm.config).resolved()
        tm.data = data if data is not None else tm.data
        tm.spec = spec or tm.spec
        tm.extra = {"init_known": True, **tm.extra}
    elif isinstance(model_or_trained, nn.Module):
        if config is None or data is None:
            raise ValueError("registering an nn.Module needs config= (its TrainConfig) and data=")
        tm = _from_module(model_or_trained, config, data, spec)
    else:
        raise TypeError(
            f"expected an nn.Module or a TrainedModel, got {type(model_or_trained).__name__}"
        )
    if tm.data is None:
        raise ValueError(f"{name!r}: pass data= (the Data the model was trained on)")
    tm.name = name
    _REGISTERED[name] = tm
    return tm


def _from_module(
    module: nn.Module, config: TrainConfig, data: Any, spec: ModelSpec | None
) -> TrainedModel:
    from .architectures import check_input_shape

    config = config.resolved()
    device, dtype = resolve_device(config.device), config.torch_dtype
    model = copy.deepcopy(module).to(device=device, dtype=dtype)
    X, y = data.train
    X = X.to(device=device, dtype=dtype)
    y = cast_targets(y, config.loss, device, dtype)
    check_input_shape(model, X, spec)
    state = state_of(model)
    # Zero steps: only the objective and its gradient norm at the given parameters.
    _, diag = fit_copies(
        model, state, X, y, torch.ones(1, X.shape[0]), config, steps=0, polish=False
    )
    model.eval()
    diagnostics = summarize(diag, config, params="all", dtype=dtype, device=device,
                            model=model, X=X, y=y)
    init = {k: v.cpu() for k, v in state.items()}
    return TrainedModel(
        model, config, init, X, y, diagnostics, spec=spec, data=data, extra={"init_known": False}
    )


def unregister(name: str) -> None:
    """Remove a registered model (presets cannot be removed)."""
    if name in PRESETS:
        raise ValueError(f"{name!r} is a preset, not a registered model")
    try:
        del _REGISTERED[name]
    except KeyError:
        raise _unknown(name) from None
