"""core.explain.attributions: guided backprop against a hand-written guided-ReLU oracle, fallbacks, Grad-CAM,
hygiene.
"""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from core.explain import attributions as explain
from core.explain.gradcam import grad_cam

pytest.importorskip("captum.attr")  # imported up front: its import raises the recursion limit mid-test


class TinyBlock(nn.Module):
    def __init__(self, cin: int, cout: int, act: nn.Module, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x):
        return self.pool(self.act(self.bn(self.conv(x))))


class TinyCNN(nn.Module):
    """Five conv blocks like SmallCNN (pooling in the first three only, so 24 px inputs suffice)."""

    def __init__(self, act=nn.ReLU, channels=(4, 6, 8, 8, 12), num_classes=3, seed=0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        cins = (3, *channels[:-1])
        self.features = nn.Sequential(
            *(TinyBlock(ci, co, act(), pool=i < 3) for i, (ci, co) in enumerate(zip(cins, channels)))
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * 9, num_classes))
        for m in self.modules():  # non-trivial BN statistics, so eval mode matters
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.classifier(self.features(x))

    def conv_layers(self):
        return [b.conv for b in self.features]


class FunctionalReLUCNN(TinyCNN):
    """Same weights layout, but the features apply F.relu instead of their nn.ReLU modules."""

    def forward(self, x):
        for b in self.features:
            x = b.pool(torch.relu(b.bn(b.conv(x))))
        return self.classifier(x)


def neuron_gradients(model: nn.Module, image: torch.Tensor, neurons, guided: bool) -> torch.Tensor:
    """Oracle: plain autograd; if ``guided``, full backward hooks clamp negative gradients at every nn.ReLU."""
    model.eval()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)] if guided else []
    hooks = [m.register_full_backward_hook(lambda _m, gin, _gout: (gin[0].clamp(min=0),)) for m in relus]
    conv5 = model.conv_layers()[4]
    out = []
    try:
        for n in neurons:
            captured: list[torch.Tensor] = []
            h = conv5.register_forward_hook(lambda _m, _i, o, store=captured: store.append(o))
            x = image[None].clone().requires_grad_(True)
            try:
                model(x)
            finally:
                h.remove()
            (grad,) = torch.autograd.grad(captured[0][0, n.channel, n.y, n.x], x)
            out.append(grad[0])
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(out)


def guided_reference(model, image, neurons):
    return neuron_gradients(model, image, neurons, guided=True)


def plain_gradient(model, image, neurons):
    return neuron_gradients(model, image, neurons, guided=False)


def assert_untouched(model: nn.Module, before_out: torch.Tensor, probe: torch.Tensor, training: bool) -> None:
    for name, m in model.named_modules():
        assert not m._forward_hooks, f"forward hook left on {name or 'model'}"
        assert not m._forward_pre_hooks, f"forward pre-hook left on {name or 'model'}"
        assert not m._backward_hooks, f"backward hook left on {name or 'model'}"
        assert m.training == training, f"{name or 'model'} training flag changed to {m.training}"
    for name, p in model.named_parameters():
        assert p.grad is None, f"{name}.grad was written"
    model.eval()
    with torch.no_grad():
        after = model(probe)
    assert torch.equal(after, before_out), "model outputs changed after explaining"


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000))
def test_guided_backprop_matches_hand_written_reference(seed):
    model = TinyCNN(seed=seed % 7)
    image = torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(seed))
    result = explain.explain_neurons(model, image, k=10)
    assert result.method == "guided", f"all-ReLU model should get real guided backprop, got {result.method}"
    assert result.warning is None, f"no warning expected for an all-ReLU model, got {result.warning!r}"
    expected = guided_reference(model, image, result.neurons)
    assert result.attributions.shape == (10, 3, 24, 24), f"shape {tuple(result.attributions.shape)}"
    torch.testing.assert_close(result.attributions, expected, rtol=1e-5, atol=1e-6)


def test_guided_backprop_differs_from_plain_gradient_on_relu_model():
    model = TinyCNN()
    image = torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(1))
    result = explain.explain_neurons(model, image, k=10)
    plain = plain_gradient(model, image, result.neurons)
    assert not torch.allclose(result.attributions, plain), "guided backprop must not equal the plain gradient"


def test_neuron_rule_picks_top_mean_channels_at_argmax():
    act = torch.zeros(5, 3, 4)
    act[2] = 5.0
    act[2, 1, 3] = 9.0
    act[4, 0, 0] = 30.0  # mean 2.5: second
    act[0, 2, 1] = 1.2  # mean 0.1: third; channels 1 and 3 tie at 0 and go by index
    neurons = explain.select_neurons(act, k=4)
    got = [(n.channel, n.y, n.x) for n in neurons]
    assert got == [(2, 1, 3), (4, 0, 0), (0, 2, 1), (1, 0, 0)], f"neuron choice {got}"
    assert neurons[0].value == 9.0 and neurons[0].channel_mean == pytest.approx(64 / 12), neurons[0]
    with pytest.raises(ValueError, match=r"k \(neurons\) must be an int in \[1, 5\]"):
        explain.select_neurons(act, k=6)


def test_gelu_model_warns_and_labels_saliency(caplog):
    model = TinyCNN(act=nn.GELU)
    image = torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(2))
    report = explain.inspect_activations(model)
    assert not report.guided_faithful and len(report.other_activations) == 5, report
    with caplog.at_level(logging.WARNING, logger="core.explain.attributions"):
        result = explain.explain_neurons(model, image, k=10, mode="auto")
    assert result.method == "saliency", f"GELU + auto must fall back to labelled saliency, got {result.method}"
    assert "saliency" in result.label and result.warning, (result.label, result.warning)
    assert any("guided backprop is defined for ReLU" in r.getMessage() for r in caplog.records), caplog.text
    torch.testing.assert_close(result.attributions, plain_gradient(model, image, result.neurons))
    assert result.to_dict()["method"] == "saliency"


@pytest.mark.filterwarnings("ignore::UserWarning:captum")
def test_captum_guided_on_gelu_is_silently_plain_gradient():
    """Why the detection exists: Captum's guided backprop on GELU modules equals the plain gradient."""
    from captum.attr import NeuronGuidedBackprop

    model = TinyCNN(act=nn.GELU).eval()
    image = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    n = explain.select_neurons(explain.layer_output(model, model.conv_layers()[4], image)[0], k=1)[0]
    captum_gb = NeuronGuidedBackprop(model, model.conv_layers()[4]).attribute(image, (n.channel, n.y, n.x))
    torch.testing.assert_close(captum_gb[0], plain_gradient(model, image[0], [n])[0], rtol=0, atol=0)


def test_relu_swap_equals_reference_on_swapped_copy_and_keeps_original():
    model = TinyCNN(act=nn.SiLU)
    probe = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    model.eval()
    with torch.no_grad():
        before = model(probe)
    image = probe[0]
    result = explain.explain_neurons(model, image, k=10, mode="relu-swap")
    assert result.method == "relu-swap" and "ReLU-swapped" in result.label, (result.method, result.label)
    assert all(isinstance(b.act, nn.SiLU) for b in model.features), "original activations must stay SiLU"
    swapped = explain.swap_activations_to_relu(model)
    assert explain.inspect_activations(swapped).guided_faithful, "the copy must be all-ReLU"
    torch.testing.assert_close(result.attributions, guided_reference(swapped, image, result.neurons),
                               rtol=1e-5, atol=1e-6)
    assert_untouched(model, before, probe, training=False)


def test_functional_relu_is_relabelled_saliency(caplog):
    model = FunctionalReLUCNN()
    image = torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(5))
    with caplog.at_level(logging.WARNING, logger="core.explain.attributions"):
        result = explain.explain_neurons(model, image, k=4, mode="auto")
    assert result.method == "saliency", f"a functional ReLU must not be labelled guided, got {result.method}"
    assert "changed nothing" in (result.warning or ""), result.warning
    assert "changed nothing" in caplog.text


@pytest.mark.parametrize("mode", ["auto", "relu-swap", "saliency"])
def test_model_unchanged_after_explaining(mode):
    model = TinyCNN(act=nn.ReLU if mode == "auto" else nn.Mish)
    model.train()  # explaining must switch to eval for the call and restore train mode after
    probe = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    model.eval()
    with torch.no_grad():
        before = model(probe)
    model.train()
    explain.explain_neurons(model, probe[0], k=3, mode=mode)
    grad_cam(model, probe, [0, 2])
    explain.first_layer_feature_maps(model, probe[1])
    assert_untouched(model, before, probe, training=True)


def test_grad_cam_shape_nonnegative_and_matches_manual():
    model = TinyCNN().eval()
    images = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(7))
    cams = grad_cam(model, images, [0, 1, 2])
    assert cams.shape == (3, 24, 24), f"Grad-CAM shape {tuple(cams.shape)}"
    assert float(cams.min()) >= 0.0, "Grad-CAM maps are ReLU'd"
    # manual Grad-CAM for image 1, class 1: weights = spatial mean of d logit / d A, map = relu(sum w A)
    captured = []
    h = model.conv_layers()[4].register_forward_hook(lambda _m, _i, o: captured.append(o))
    try:
        logits = model(images[1:2])
    finally:
        h.remove()
    (grad,) = torch.autograd.grad(logits[0, 1], captured[0])
    small = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * captured[0]).sum(1, keepdim=True))
    manual = nn.functional.interpolate(small, size=(24, 24), mode="bilinear")[0, 0]
    torch.testing.assert_close(cams[1], manual.detach(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="one target class per image"):
        grad_cam(model, images, [0, 1])


def test_filters_and_feature_maps():
    model = TinyCNN()
    filters = explain.first_layer_filters(model)
    assert filters.shape == (4, 3, 3, 3), f"filters {tuple(filters.shape)}"
    assert torch.equal(filters, model.conv_layers()[0].weight.detach()), "filters must be CONV1's weights"
    image = torch.randn(3, 24, 24)
    maps = explain.first_layer_feature_maps(model, image)
    assert maps.shape == (4, 24, 24), f"feature maps {tuple(maps.shape)}"
    torch.testing.assert_close(maps, model.conv_layers()[0](image[None])[0].detach())


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown guided mode 'guided'.*auto"):
        explain.explain_neurons(TinyCNN(), torch.randn(3, 24, 24), mode="guided")
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="no conv_layers\\(\\).*Part A SmallCNN"):
        explain.explain_neurons(backbone, torch.randn(3, 24, 24))
    with pytest.raises(ValueError, match="one normalised image"):
        explain.explain_neurons(TinyCNN(), torch.randn(2, 3, 24, 24))

    class NoActivations(TinyCNN):
        pass

    bare = NoActivations()
    for b in bare.features:
        b.act = nn.Identity()
    with pytest.raises(ValueError, match="relu-swap found no activation modules"):
        explain.swap_activations_to_relu(bare)


def test_real_small_cnn_gelu_and_relu():
    """The project's SmallCNN: CONV5 is found, and both activation kinds run end to end."""
    from core.model import build_cnn, make_spec

    for activation, expected in (("relu", "guided"), ("gelu", "saliency")):
        torch.manual_seed(0)
        model = build_cnn(make_spec(filters=12, activation=activation, batch_norm=True, image_size=32,
                                    dense_units=8, num_classes=3))
        result = explain.explain_neurons(model, torch.randn(3, 32, 32), k=10)
        assert result.method == expected, f"{activation}: got {result.method}"
        assert result.layer_name == "features.4.conv", result.layer_name
        assert result.attributions.abs().sum() > 0, f"{activation}: all-zero attributions"


def test_explicit_modes_on_a_relu_model():
    model = TinyCNN()
    image = torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(8))
    swapped = explain.explain_neurons(model, image, k=3, mode="relu-swap")
    assert swapped.method == "guided" and swapped.warning is None, "nothing to swap: plain guided backprop"
    plain = explain.explain_neurons(model, image, k=3, mode="saliency")
    assert plain.method == "saliency" and "requested" in plain.warning, (plain.method, plain.warning)
    torch.testing.assert_close(plain.attributions, plain_gradient(model, image, plain.neurons))
