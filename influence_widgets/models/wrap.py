"""``iw.wrap``: bring your own model. A module you trained your own way, plus its data, becomes
the :class:`~influence_widgets.models.training.TrainedModel` that ``iw.influence``,
``iw.leave_one_out`` and ``iw.InfluenceExplorer`` take, with its weights kept exactly as they are
(nothing is retrained)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._devices import dtype_name
from .._settings import number
from .losses import LOSSES, check_targets, output_width
from .modes import eval_mode
from .training import TrainConfig, TrainedModel

DEFAULT_NAME = "my model"


def _pair(split: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)`` as tensors: tensor pairs, numpy/list pairs, or a torch Dataset."""
    from ..datasets.base import Data, as_tensors

    if isinstance(split, Data):
        raise TypeError(f"{what}= takes an (X, y) pair; pass a whole Data object as data=")
    if isinstance(split, tuple | list) and len(split) == 2 and not all(
            isinstance(t, torch.Tensor) for t in split):
        try:
            split = tuple(torch.as_tensor(t) for t in split)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{what}= must be an (X, y) pair of tensors or arrays ({e})") from e
    try:
        return as_tensors(split)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{what}=: {e}") from e


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    params = [p for p in model.parameters()]
    if not params:
        raise ValueError("the model has no parameters: there is nothing to estimate influence on")
    floats = {p.dtype for p in params if p.is_floating_point()}
    if not floats <= {torch.float32, torch.float64} or len(floats) != 1:
        raise TypeError(
            f"the model's parameters are {sorted(dtype_name(d) for d in floats)}; influence needs "
            "one dtype, float32 or float64: call model.float() (or model.double()) first")
    if any(p.is_meta for p in params):
        raise ValueError("the model's parameters are on the meta device (not materialised); load "
                         "its weights first")
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise ValueError(f"the model's parameter {name!r} holds NaN or inf: the weights are "
                             "broken (training diverged?); retrain with a lower learning rate or "
                             "load a good checkpoint before wrapping")
    return floats.pop(), params[0].device


def warn_probabilities(model: nn.Module, X: torch.Tensor, who: str, stacklevel: int = 3) -> None:
    """A ``UserWarning`` when the model's outputs on the first rows of ``X`` look like
    probabilities (each row >= 0, summing to 1): cross-entropy takes logits, so a model ending
    in Softmax is trained and explained on the wrong loss. One rule for ``iw.wrap`` and
    ``iw.influence``."""
    with torch.no_grad(), eval_mode(model):
        out = model(X[:64])
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] > 1 \
            and bool((out >= 0).all()) \
            and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-4):
        warnings.warn(
            f"{who}: the model's outputs look like probabilities (each row sums to 1); "
            "cross_entropy takes logits: remove the final Softmax (the loss and every "
            "estimate are otherwise those of log-probabilities fed to a second softmax)",
            UserWarning, stacklevel=stacklevel)


def _first_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The first module with weights of its own, when it is an ``nn.Linear`` (its
    ``in_features`` is the feature count the model takes); otherwise None."""
    for name, m in model.named_modules():
        if next(m.parameters(recurse=False), None) is not None:
            ok = isinstance(m, nn.Linear) and not isinstance(m, nn.LazyLinear)
            return (name, m) if ok else None
    return None


def _check_inputs(model: nn.Module, X: torch.Tensor, X_test: torch.Tensor) -> None:
    from .architectures import check_input_shape

    first = _first_linear(model)
    for what, T in (("train", X), ("test", X_test)):
        if T.shape[0] == 0:
            raise ValueError(f"the {what} set is empty")
        if not bool(torch.isfinite(T).all()):
            row = int(torch.nonzero((~torch.isfinite(T.reshape(T.shape[0], -1))).any(1))[0])
            raise ValueError(f"the {what} inputs hold NaN or inf (first at row {row}): drop or "
                             "impute those rows before wrapping")
        if first is not None and T.dim() == 2 and T.shape[1] != first[1].in_features:
            name, layer = first
            raise ValueError(
                f"the {what} inputs have {T.shape[1]} features per row but the model's first "
                f"layer ({name or 'the model'}: {layer}) takes {layer.in_features}: pass the "
                "inputs the model was trained on (the same columns, in the same order, "
                "preprocessed the same way)")
    if tuple(X.shape[1:]) != tuple(X_test.shape[1:]):
        raise ValueError(
            f"train inputs have shape {tuple(X.shape[1:])} per row but test inputs "
            f"{tuple(X_test.shape[1:])}: pass the same columns, preprocessed the same way")
    check_input_shape(model, X)


def wrap(
    model: nn.Module,
    train: Any = None,
    test: Any = None,
    *,
    data: Any = None,
    loss: str | None = None,
    weight_decay: float | None = None,
    feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    name: str = DEFAULT_NAME,
    config: TrainConfig | None = None,
) -> TrainedModel:
    """Your trained ``nn.Module`` and its data, as a :class:`TrainedModel`, without retraining.

    The module is copied (yours is never edited) and its weights are kept bit for bit, in their
    dtype and on their device. What a module does not carry is given here: the data it was
    trained on, the *objective* it was trained with (``loss`` and ``weight_decay``; the estimate's
    Hessian and every leave-one-out retrain use them, so give the values your optimiser used), and
    the names the explorer shows. The result goes anywhere a zoo model goes: ``iw.influence(tm,
    tm.data.train, tm.data.test)``, ``iw.leave_one_out(tm, ...)``, ``iw.InfluenceExplorer(model=tm)``
    (``InfluenceExplorer(model=net, train=..., test=...)`` calls this for you).

    Args:
        model: the trained module; it maps a batch of inputs ``(N, ...)`` to outputs ``(N, K)``
            (logits, not probabilities, for cross-entropy).
        train, test: ``(X, y)`` pairs (tensors or numpy arrays) or torch Datasets: the points the
            model was trained on, and the points whose losses are explained. Class labels are
            integers ``0..K-1``, output ``k`` being class ``k``.
        data: instead of ``train``/``test``, an ``iw.datasets.Data`` (its splits, class names and
            ``info``, feature names included).
        loss: "cross_entropy" (default) or "mse": the loss the model was trained with.
        weight_decay: the L2 coefficient of the training objective, ``mean loss +
            (weight_decay / 2) ||theta||^2``, i.e. the ``weight_decay`` of ``torch.optim.SGD`` /
            ``Adam`` (not ``AdamW``'s decoupled decay). ``None``: 0 is assumed, with a warning.
        feature_names: one name per input feature (column), shown by the explorer.
        class_names: one name per output (class ``k`` is output ``k``); default "0", "1", ...
        name: the model's name (in the explorer's model list).
        config: the :class:`TrainConfig` it was trained with, if you have one: its schedule is
            kept as the default for retraining, its ``loss``/``weight_decay`` fill those not given
            here (a different value in both places is an error); its dtype and device are those
            of the model's weights.

    Its initial parameters are not known, so ``init_params`` holds the trained ones and
    ``extra["init_known"]`` is False: leave-one-out in ``warm_start`` mode (the default) is the
    ground truth that fits. Raises ``TypeError``/``ValueError`` naming what to change when the
    data do not fit the model (feature count, label range, class or feature names) or the loss
    at the given weights is not finite.

    Example::

        import torch
        import influence_widgets as iw

        torch.manual_seed(0)
        X, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
        net = torch.nn.Linear(3, 2)                 # trained your own way (here: not at all)
        tm = iw.wrap(net, train=(X[:30], y[:30]), test=(X[30:], y[30:]), weight_decay=0.01,
                     feature_names=["a", "b", "c"], class_names=["no", "yes"], name="toy")
        est = iw.influence(tm, tm.data.train, tm.data.test)   # (10, 30)
    """
    from ..datasets.base import Data

    if isinstance(model, TrainedModel):
        raise TypeError("model is already a TrainedModel: use it as it is (iw.wrap is for a plain "
                        "nn.Module)")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a trained torch nn.Module, got {type(model).__name__}")
    info: dict[str, Any] = {}
    is_image = False
    if data is not None:
        if not isinstance(data, Data):
            raise TypeError(f"data= takes an iw.datasets.Data, got {type(data).__name__}; pass "
                            "(X, y) pairs as train= and test=")
        if train is not None or test is not None:
            raise TypeError("pass data= or train= and test=, not both")
        train, test = data.train, data.test
        info = dict(data.info)
        is_image = data.is_image
        class_names = list(data.class_names) if class_names is None else class_names
    if train is None or test is None:
        raise TypeError(
            "iw.wrap needs the model's data: train=(X_train, y_train), the points it was trained "
            "on, and test=(X_test, y_test), the points to explain (or data=an iw.datasets.Data)")
    X, y = _pair(train, "train")
    X_test, y_test = _pair(test, "test")

    # the objective: arguments, else the config's, else the defaults (weight decay: assumed 0)
    given = config.objective if config is not None else {"loss": None, "weight_decay": None}
    for key, value in (("loss", loss), ("weight_decay", weight_decay)):
        if value is not None and given[key] is not None and value != given[key]:
            raise ValueError(f"{key}={value!r} differs from the config's {key}={given[key]!r}: "
                             "give the value the model was trained with once")
    loss = loss or given["loss"] or "cross_entropy"
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(LOSSES)}")
    source = "given"
    if weight_decay is None:
        weight_decay = given["weight_decay"]
    if weight_decay is None:
        source, weight_decay = "assumed", 0.0
        warnings.warn(
            f"iw.wrap({name!r}): no weight_decay given, so 0 is assumed. The estimate's Hessian "
            "and the leave-one-out retrains include the weight decay the model was trained "
            "with: pass weight_decay= the value your optimiser used (0 if none) to silence this",
            UserWarning, stacklevel=2)
    weight_decay = number(weight_decay, "weight_decay", minimum=0.0,
                          hint="the L2 coefficient your optimiser used, 0 if none")

    dtype, device = _model_dtype_device(model)
    X, X_test = X.to(dtype), X_test.to(dtype)  # the model's dtype, as influence computes in
    if loss == "cross_entropy":  # integer labels as int64; others are refused by check_targets
        y, y_test = (t.long() if t.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8)
                     else t for t in (y, y_test))
    _check_inputs(model, X.to(device), X_test.to(device))
    width = output_width(model, X.to(device))
    check_targets(y, width, loss, "training")
    check_targets(y_test, width, loss, "test")

    n_features = math.prod(X.shape[1:])
    for what, names in (("feature_names", feature_names), ("class_names", class_names)):
        if isinstance(names, str | bytes):
            raise TypeError(f"{what} must be a list of names, one per "
                            f"{'input feature' if what == 'feature_names' else 'output'}, got "
                            f"the single string {names!r} (which would be read letter by "
                            f"letter): pass e.g. {what}=[{names!r}, ...]")
    if feature_names is not None:
        feature_names = [str(f) for f in feature_names]
        if len(feature_names) != n_features:
            raise ValueError(
                f"feature_names has {len(feature_names)} names but the inputs have {n_features} "
                f"features per row: pass one name per column, in column order")
        info["feature_names"] = feature_names
    if class_names is None:
        class_names = [str(k) for k in range(width)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != width:
        raise ValueError(
            f"class_names has {len(class_names)} names but the model has {width} outputs: pass "
            "one name per output, in output order (output k is class k)")
    if loss == "cross_entropy":
        warn_probabilities(model, X.to(device), f"iw.wrap({name!r})")

    dataset = Data(name, X, y, X_test, y_test, class_names, tuple(X.shape[1:]),
                   is_image or X.dim() == 4, info)
    base = config if config is not None else TrainConfig()
    config = base.replace(loss=loss, weight_decay=float(weight_decay), dtype=dtype_name(dtype),
                          device=str(device))

    from .zoo import _from_module  # reused as is: zero steps, the objective at these weights

    tm = _from_module(model, config, dataset, None)
    objective = tm.diagnostics["objective"]
    if not math.isfinite(objective):
        raise ValueError(
            f"the training loss of the model at its given weights is {objective} ({loss}): "
            "check that the outputs are finite for these inputs, that the labels match the "
            "outputs, and that the loss is the one the model was trained with")
    tm.name = name
    tm.extra["objective_source"] = source
    _warn_not_stationary(tm, name, float(weight_decay), source)
    return tm


def _warn_not_stationary(tm: TrainedModel, name: str, weight_decay: float, source: str) -> None:
    """A ``RuntimeWarning`` when the weights are not at a stationary point of the objective as
    stated (its "not-stationary" finding): most often the weight decay given is not the one the
    model was trained with (a value off by 10x, AdamW's decoupled decay, one left out), which
    the estimate and every LOO retrain would then share, so that they agree and nothing else
    would say so."""
    found = next((f for f in tm.diagnostics.get("findings") or ()
                  if f.get("code") == "not-stationary"), None)
    if found is None:
        return
    how = "given" if source == "given" else "assumed (none given)"
    warnings.warn(
        f"iw.wrap({name!r}): {found['what']} of the objective mean loss + (weight_decay / 2) "
        f"||theta||^2 with weight_decay={weight_decay:g} ({how}). The weight decay given does "
        "not match how this model was trained (or it was not trained to convergence): the "
        "estimate's Hessian and every leave-one-out retrain would use an objective the model "
        "does not minimise, and would agree with each other anyway. Pass the weight_decay "
        "your optimiser used (for AdamW's decoupled decay there is no such value: train with "
        "SGD/Adam weight_decay, or polish with L-BFGS), or train to convergence",
        RuntimeWarning, stacklevel=3)


def explorer_model(model: Any, *, train: Any = None, test: Any = None, data: Any = None,
                   **options: Any) -> Any:
    """What ``InfluenceExplorer(model=...)`` selects first: a name or a ``TrainedModel`` as
    given, a plain ``nn.Module`` wrapped with its data (:func:`wrap`; ``options`` are its
    keywords, those left ``None`` taking wrap's defaults)."""
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(model, nn.Module):
        if train is None and test is None and data is None:
            raise TypeError(
                f"model= is a plain nn.Module ({type(model).__name__}), which carries neither its "
                "data nor its objective: pass them too, InfluenceExplorer(model=net, "
                "train=(X_train, y_train), test=(X_test, y_test), weight_decay=..., "
                "feature_names=[...], class_names=[...]), or wrap it first with "
                "tm = iw.wrap(net, train=..., test=..., ...) and pass model=tm")
        return wrap(model, train, test, data=data, **options)
    if train is not None or test is not None or data is not None or options:
        given = [k for k, v in (("train", train), ("test", test), ("data", data)) if v is not None]
        what = ", ".join(f"{k}=" for k in given + sorted(options))
        if model is None:
            raise TypeError(f"{what} describe your own model: pass it too, as model=net (a "
                            "trained nn.Module)")
        raise TypeError(
            f"{what} are for a plain nn.Module passed as model=; model={model!r} brings its own "
            "data (a TrainedModel keeps it in .data, a zoo name loads it)")
    if model is not None and not isinstance(model, str | TrainedModel):
        raise TypeError(f"model= takes a zoo or models= name, a TrainedModel or a trained "
                        f"nn.Module (with train= and test=), got {type(model).__name__}")
    return model
