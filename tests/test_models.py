"""core.model.builder: spec -> nn.Module, one activation module per use, shapes and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.model import ACTIVATION_NAMES, ACTIVATIONS, SmallCNN, build_cnn, make_activation, make_spec


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_output_shape_and_every_parameter_gets_a_gradient(activation):
    torch.manual_seed(0)
    spec = make_spec(filters=4, activation=activation, batch_norm=True, dropout=0.2, dense_units=8,
                     image_size=32, num_classes=10)
    model = build_cnn(spec)
    x = torch.randn(3, 3, 32, 32)
    out = model(x)
    assert out.shape == (3, 10), f"expected (N, num_classes) = (3, 10), got {tuple(out.shape)}"
    out.logsumexp(dim=1).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"
    zero = [name for name, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, f"parameters whose gradient is all zero: {zero}"


def test_one_activation_module_per_use_never_inplace():
    model = build_cnn(make_spec(filters=4, image_size=32, dense_units=8))
    acts = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(acts) == 6, "5 conv blocks + the dense layer each own one activation"
    assert len({id(a) for a in acts}) == 6, "activation modules must not be shared"
    assert not any(a.inplace for a in acts), "in-place activations break backward hooks"


def test_batch_norm_and_dropout_are_built_when_asked():
    with_bn = build_cnn(make_spec(filters=4, image_size=32, batch_norm=True, dropout=0.5))
    without = build_cnn(make_spec(filters=4, image_size=32, batch_norm=False, dropout=0.0))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in without.modules()) == 0
    drops = [m for m in with_bn.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.5]


def test_conv_layers_are_the_five_convs_in_order():
    spec = make_spec(filters=4, organisation="double", image_size=64)
    model = build_cnn(spec)
    convs = model.conv_layers()
    assert [c.out_channels for c in convs] == [4, 8, 16, 32, 64]
    assert convs[4] is model.features[4].conv


def test_wrong_input_shape_names_the_expected_size():
    model = build_cnn(make_spec(filters=4, image_size=32))
    with pytest.raises(ValueError, match=r"expected input of shape \[N, 3, 32, 32\].*got \[2, 3, 64, 64\]"):
        model(torch.zeros(2, 3, 64, 64))


def test_registry_errors_name_the_valid_set():
    assert set(ACTIVATIONS) == set(ACTIVATION_NAMES)
    with pytest.raises(ValueError, match="unknown activation 'prelu'"):
        make_activation("prelu")
    with pytest.raises(TypeError, match="needs a CNNSpec"):
        build_cnn({"filters": 4})


def test_model_keeps_its_spec():
    spec = make_spec(filters=4, image_size=32)
    model = build_cnn(spec)
    assert isinstance(model, SmallCNN) and model.spec is spec
