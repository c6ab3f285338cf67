"""Convolutional architectures: forward shapes, hand-derived parameter counts, seeding, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from influence_widgets.models import cnn
from influence_widgets.models.architectures import ModelSpec, count_parameters

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
ARCHS = [
    ("small_cnn", {"channels": 4}),
    ("small_cnn", {"activation": "tanh"}),
    ("small_cnn", {"channels": 4, "activation": "tanh", "pool": "avg"}),
    ("lenet5", {}),
    ("lenet5", {"activation": "relu"}),
    ("vgg", {"depth": 3, "width": 4}),
    ("vgg", {"depth": 4, "width": 4, "batch_norm": True}),
    ("resnet18", {}),
    ("resnet18", {"norm": "group"}),
]


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def linear(d_in: int, d_out: int) -> int:
    return d_in * d_out + d_out


def last_parameterised(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))][-1]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch,options", ARCHS)
def test_forward_shape_and_last_layer(arch, options, shape):
    spec = ModelSpec(arch, shape, 7, options)
    model = spec.build(seed=0)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    last = last_parameterised(model)
    assert isinstance(last, nn.Linear) and last.out_features == 7


def test_small_cnn_parameter_count():
    # (1, 28, 28), 16 channels: conv 1->16, pool 28->14, conv 16->32, pool 14->7, linear 32*7*7->10
    expected = conv(1, 16, 3) + conv(16, 32, 3) + linear(32 * 7 * 7, 10)
    assert expected == 20490
    assert count_parameters(ModelSpec("small_cnn", (1, 28, 28), 10).build(seed=0)) == expected
    # (3, 32, 32), 8 channels: 32 -> 16 -> 8
    expected = conv(3, 8, 3) + conv(8, 16, 3) + linear(16 * 8 * 8, 4)
    spec = ModelSpec("small_cnn", (3, 32, 32), 4, {"channels": 8})
    assert count_parameters(spec.build(seed=0)) == expected
    # (1, 8, 8): 8 -> 4 -> 2
    expected = conv(1, 16, 3) + conv(16, 32, 3) + linear(32 * 2 * 2, 10)
    assert count_parameters(ModelSpec("small_cnn", (1, 8, 8), 10).build(seed=0)) == expected


def test_small_cnn_average_pooling_is_smooth_and_averages():
    """``pool="avg"`` averages each 2x2 block (no kinks: with tanh the network is smooth)."""
    spec = ModelSpec("small_cnn", (1, 28, 28), 10, {"channels": 4, "activation": "tanh",
                                                     "pool": "avg"})
    model = spec.build(seed=0).double()
    assert [type(m) for m in model if isinstance(m, nn.AvgPool2d | nn.MaxPool2d)] == [nn.AvgPool2d] * 2
    assert count_parameters(model) == conv(1, 4, 3) + conv(4, 8, 3) + linear(8 * 7 * 7, 10) == 4266
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(model[2](x), x.reshape(3, 4, 3, 2, 3, 2).mean(dim=(3, 5)))
    with pytest.raises(ValueError, match="pool must be 'max' or 'avg', got 'min'"):
        ModelSpec("small_cnn", (1, 28, 28), 10, {"pool": "min"}).build()


def test_lenet5_parameter_count():
    def lenet(c_in: int, n: int) -> int:
        return (conv(c_in, 6, 5) + conv(6, 16, 5) + linear(16 * 5 * 5, 120) + linear(120, 84)
                + linear(84, n))

    assert lenet(1, 10) == 61706  # the classic LeNet-5 count
    for shape in SHAPES:
        model = ModelSpec("lenet5", shape, 10).build(seed=0)
        assert count_parameters(model) == lenet(shape[0], 10)
    # default activation is tanh
    model = ModelSpec("lenet5", (1, 28, 28), 10).build()
    assert any(isinstance(m, nn.Tanh) for m in model.modules())


def test_vgg_parameter_count():
    # depth 4, width 8 on (1, 28, 28): 1->8, 8->8, pool (width 16), 8->16, 16->16, pool, fc 16->10
    expected = conv(1, 8, 3) + conv(8, 8, 3) + conv(8, 16, 3) + conv(16, 16, 3) + linear(16, 10)
    spec = ModelSpec("vgg", (1, 28, 28), 10, {"width": 8})
    assert count_parameters(spec.build(seed=0)) == expected == 4322
    # depth 7, width 2 on (3, 8, 8): pools at 8->4->2->1, then no more pools; channels 2,4,8,16
    expected = (conv(3, 2, 3) + conv(2, 2, 3) + conv(2, 4, 3) + conv(4, 4, 3) + conv(4, 8, 3)
                + conv(8, 8, 3) + conv(8, 16, 3) + linear(16, 3))
    spec = ModelSpec("vgg", (3, 8, 8), 3, {"depth": 7, "width": 2})
    model = spec.build(seed=0)
    assert count_parameters(model) == expected
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    # channels are capped at 8 * width: depth 10, width 1 on (1, 32, 32) -> 1, 2, 4, 8, 8
    spec = ModelSpec("vgg", (1, 32, 32), 2, {"depth": 10, "width": 1})
    widths = [m.out_channels for m in spec.build().modules() if isinstance(m, nn.Conv2d)]
    assert widths == [1, 1, 2, 2, 4, 4, 8, 8, 8, 8]
    # batch norm: conv without bias, BatchNorm2d adds 2 parameters per channel
    expected = (conv(1, 8, 3, False) + conv(8, 8, 3, False) + conv(8, 16, 3, False)
                + conv(16, 16, 3, False) + 2 * (8 + 8 + 16 + 16) + linear(16, 10))
    spec = ModelSpec("vgg", (1, 28, 28), 10, {"width": 8, "batch_norm": True})
    assert count_parameters(spec.build(seed=0)) == expected


def resnet18_count(c_in: int, n_classes: int) -> int:
    def block(c1: int, c2: int, downsample: bool) -> int:
        n = conv(c1, c2, 3, False) + 2 * c2 + conv(c2, c2, 3, False) + 2 * c2
        return n + (conv(c1, c2, 1, False) + 2 * c2 if downsample else 0)

    stem = conv(c_in, 64, 3, False) + 2 * 64
    layers = block(64, 64, False) + block(64, 64, False)
    for c1, c2 in [(64, 128), (128, 256), (256, 512)]:
        layers += block(c1, c2, True) + block(c2, c2, False)
    return stem + layers + linear(512, n_classes)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_resnet18_structure_and_count(norm):
    assert resnet18_count(3, 10) == 11173962  # the usual CIFAR ResNet-18 count
    model = ModelSpec("resnet18", (1, 28, 28), 10, {"norm": norm}).build(seed=0)
    assert count_parameters(model) == resnet18_count(1, 10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.Identity)
    norm_cls = nn.BatchNorm2d if norm == "batch" else nn.GroupNorm
    other = nn.GroupNorm if norm == "batch" else nn.BatchNorm2d
    assert isinstance(model.bn1, norm_cls)
    assert not any(isinstance(m, other) for m in model.modules())
    if norm == "group":
        assert model.bn1.num_groups == 2


@pytest.mark.parametrize("arch,options", [ARCHS[0], ARCHS[2], ARCHS[5], ARCHS[6]])
def test_seeded_build_is_reproducible(arch, options):
    spec = ModelSpec(arch, (3, 32, 32), 5, options)
    a, b = spec.build(seed=0).state_dict(), spec.build(seed=0).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = spec.build(seed=1).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_unknown_arch_and_options():
    with pytest.raises(ValueError, match="small_cnn"):
        ModelSpec("alexnet", (1, 28, 28), 10)
    spec = ModelSpec("small_cnn", (1, 28, 28), 10)
    object.__setattr__(spec, "arch", "alexnet")  # bypass ModelSpec's own check
    with pytest.raises(ValueError, match=r"alexnet.*lenet5, resnet18, small_cnn, vgg"):
        cnn.build(spec)
    with pytest.raises(ValueError, match="channel.*valid options: activation, channels"):
        ModelSpec("small_cnn", (1, 28, 28), 10, {"channel": 8}).build()
    with pytest.raises(ValueError, match="unknown norm"):
        ModelSpec("resnet18", (3, 32, 32), 10, {"norm": "layer"}).build()
    with pytest.raises(ValueError, match="unknown activation"):
        ModelSpec("vgg", (3, 32, 32), 10, {"activation": "swish"}).build()


def test_flat_inputs_rejected():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ModelSpec("lenet5", (64,), 10).build()
    with pytest.raises(ValueError, match="at least"):
        ModelSpec("small_cnn", (1, 2, 2), 10).build()
