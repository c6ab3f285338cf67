"""Convolutional architectures for image inputs ``(C, H, W)``: small CNN, LeNet-5, VGG, ResNet-18.

In every model the classifier ``nn.Linear`` is the last module with parameters, so the
"last layer" is always the last parameterised module.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from .architectures import ModelSpec, activation


def _image_shape(spec: ModelSpec, min_size: int) -> tuple[int, int, int]:
    if len(spec.input_shape) != 3:
        raise ValueError(
            f"{spec.arch} needs image inputs of shape (C, H, W), got {spec.input_shape}; "
            "load images unflattened (e.g. digits(flat=False))"
        )
    c, h, w = spec.input_shape
    if min(h, w) < min_size:
        raise ValueError(f"{spec.arch} needs images of at least {min_size}x{min_size}, got {h}x{w}")
    return c, h, w


def _options(spec: ModelSpec, defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(spec.options) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {spec.arch}; "
            f"valid options: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **spec.options}


def small_cnn(spec: ModelSpec) -> nn.Module:
    """Two conv3x3 + activation + pool blocks (``channels``, then twice that), then a linear.

    ``pool``: "max" (default) or "avg"; with a smooth ``activation`` (tanh) and average pooling
    the net is smooth, so training can reach a stationary point (ReLU and max-pooling put
    minima on kinks)."""
    o = _options(spec, {"channels": 16, "activation": "relu", "pool": "max"})
    c_in, h, w = _image_shape(spec, 4)
    ch = int(o["channels"])
    if ch < 1:
        raise ValueError(f"channels must be >= 1, got {ch}")
    act = str(o["activation"])
    pools = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
    if o["pool"] not in pools:
        raise ValueError(f"pool must be 'max' or 'avg', got {o['pool']!r}")
    pool = pools[o["pool"]]
    return nn.Sequential(
        nn.Conv2d(c_in, ch, 3, padding=1), activation(act), pool(2),
        nn.Conv2d(ch, 2 * ch, 3, padding=1), activation(act), pool(2),
        nn.Flatten(),
        nn.Linear(2 * ch * (h // 4) * (w // 4), spec.n_classes),
    )


def lenet5(spec: ModelSpec) -> nn.Module:
    """LeNet-5: conv5x5(6), pool, conv5x5(16), pool, fc 120, fc 84, fc ``n_classes``.

    The first conv pads by 2 (so 28x28 inputs follow the classic 32x32 sizes); the second pads
    by 2 only when the image is too small for it; adaptive pooling then gives 16x5x5 features.
    """
    o = _options(spec, {"activation": "tanh"})
    c_in, h, w = _image_shape(spec, 4)
    act = str(o["activation"])
    pad2 = 0 if min(h, w) // 2 >= 6 else 2
    return nn.Sequential(
        nn.Conv2d(c_in, 6, 5, padding=2), activation(act), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5, padding=pad2), activation(act), nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(5), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), activation(act),
        nn.Linear(120, 84), activation(act),
        nn.Linear(84, spec.n_classes),
    )


def vgg(spec: ModelSpec) -> nn.Module:
    """VGG-style: ``depth`` conv3x3 layers, max-pool after every second while the image is > 1px.

    Channels start at ``width`` and double after each pool (at most ``8 * width``); global
    average pooling then feeds the linear classifier. ``pool``: "max" (default) or "avg" (with
    a smooth activation the net is smooth, so training can reach a stationary point).
    """
    o = _options(spec, {"depth": 4, "width": 16, "activation": "relu", "batch_norm": False,
                        "pool": "max"})
    pools = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
    if o["pool"] not in pools:
        raise ValueError(f"pool must be 'max' or 'avg', got {o['pool']!r}")
    c_in, h, w = _image_shape(spec, 1)
    depth, width, bn = int(o["depth"]), int(o["width"]), bool(o["batch_norm"])
    if depth < 1 or width < 1:
        raise ValueError(f"vgg needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
    layers: list[nn.Module] = []
    ch = width
    for i in range(depth):
        layers.append(nn.Conv2d(c_in, ch, 3, padding=1, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm2d(ch))
        layers.append(activation(str(o["activation"])))
        c_in = ch
        if i % 2 == 1 and min(h, w) > 1:
            layers.append(pools[o["pool"]](2))
            h, w = h // 2, w // 2
            ch = min(2 * ch, 8 * width)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, spec.n_classes)]
    return nn.Sequential(*layers)


def resnet18(spec: ModelSpec) -> nn.Module:
    """torchvision's ResNet-18 for small images: 3x3 stride-1 stem, no max-pool.

    Option ``norm``: ``"batch"`` (BatchNorm, default) or ``"group"`` (GroupNorm with 2 groups).
    """
    from torchvision.models import resnet18 as tv_resnet18

    o = _options(spec, {"norm": "batch"})
    c_in, _, _ = _image_shape(spec, 1)
    norms: dict[str, Callable[..., nn.Module]] = {
        "batch": nn.BatchNorm2d, "group": partial(nn.GroupNorm, 2)
    }
    if o["norm"] not in norms:
        raise ValueError(f"unknown norm {o['norm']!r} for resnet18; valid: {', '.join(norms)}")
    model = tv_resnet18(weights=None, num_classes=spec.n_classes, norm_layer=norms[o["norm"]])
    model.conv1 = nn.Conv2d(c_in, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


BUILDERS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "small_cnn": small_cnn,
    "lenet5": lenet5,
    "vgg": vgg,
    "resnet18": resnet18,
}


def build(spec: ModelSpec) -> nn.Module:
    """Build the convolutional network ``spec.arch`` (one of :data:`BUILDERS`)."""
    try:
        builder = BUILDERS[spec.arch]
    except KeyError:
        raise ValueError(
            f"unknown convolutional architecture {spec.arch!r}; "
            f"valid names: {', '.join(sorted(BUILDERS))}"
        ) from None
    return builder(spec)
