"""What a trained Part A CNN looks at: guided backprop on CONV5 neurons, filters, feature maps (numbers only;
:mod:`core.explain.figures` draws them, :mod:`core.explain.gradcam` holds Grad-CAM).

Captum's ``GuidedBackprop`` overrides ``nn.ReLU`` *modules* only; with GELU/SiLU/Mish or a functional ReLU it
silently returns the plain gradient. So :func:`explain_neurons` inspects the model first: ``auto`` uses guided
backprop only on an all-ReLU model and otherwise the plain gradient labelled "saliency"; ``relu-swap``
explains a ReLU copy (and says so); a "guided" result identical to the gradient is relabelled: the label
never claims a rule that was not applied. A CONV5 neuron is ``(channel, y, x)`` of the conv's *output*
(before BN and activation), well defined for every activation and for the swapped copy (:data:`NEURON_RULE`
picks them). Every function leaves the model as it found it: same flags, no hooks, no ``.grad``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

GUIDED_MODES = ("auto", "relu-swap", "saliency")
METHOD_LABELS = {
    "guided": "guided backprop",
    "relu-swap": "guided backprop on a ReLU-swapped copy (not the trained activations)",
    "saliency": "plain gradient (saliency), not guided backprop",
}
NEURON_RULE = (
    "top-k CONV5 channels by mean conv output (pre-BN, pre-activation) on the image; "
    "in each, the spatial argmax (y, x); ties go to the lower channel index"
)
# torch.nn.modules.activation also holds these, which are not pointwise activations
_NOT_ACTIVATIONS = (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d, nn.MultiheadAttention)


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    """``model.conv_layers()``, or a ValueError saying explanations are for Part A CNNs."""
    getter = getattr(model, "conv_layers", None)
    if not callable(getter):
        raise ValueError(
            f"{type(model).__name__} has no conv_layers(): filters, feature maps, guided backprop and "
            "Grad-CAM are defined for the Part A SmallCNN (core.model.builder.build_cnn), not for Part B backbones"
        )
    layers = list(getter())
    if not layers or not all(isinstance(m, nn.Conv2d) for m in layers):
        raise ValueError(f"{type(model).__name__}.conv_layers() must return nn.Conv2d modules, got {layers!r}")
    return layers


def conv5(model: nn.Module) -> nn.Conv2d:
    """The fifth conv layer (``conv_layers()[4]``)."""
    layers = conv_layers(model)
    if len(layers) < 5:
        raise ValueError(f"{type(model).__name__} has {len(layers)} conv layers; CONV5 needs at least 5")
    return layers[4]


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation" and not isinstance(module, _NOT_ACTIVATIONS)


@dataclass(frozen=True)
class ActivationReport:
    """Which activation modules a model has, by qualified name: decides if guided backprop is faithful."""

    relu_modules: tuple[str, ...]
    other_activations: tuple[tuple[str, str], ...]  # (qualified name, class name), e.g. ("features.0.act", "GELU")

    @property
    def guided_faithful(self) -> bool:
        """True when Captum's ReLU override covers every activation module (and there is at least one)."""
        return bool(self.relu_modules) and not self.other_activations

    def describe(self) -> str:
        if self.guided_faithful:
            return f"{len(self.relu_modules)} nn.ReLU modules, no other activations"
        if not self.relu_modules and not self.other_activations:
            return "no activation modules (activations applied as functions?)"
        kinds = sorted({cls for _, cls in self.other_activations})
        return f"{len(self.other_activations)} non-ReLU activation modules ({', '.join(kinds)})"


def inspect_activations(model: nn.Module) -> ActivationReport:
    """Find ``nn.ReLU`` modules and every other ``torch.nn`` activation module in ``model``."""
    relus, others = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.ReLU):
            relus.append(name)
        elif _is_activation(module):
            others.append((name, type(module).__name__))
    return ActivationReport(relu_modules=tuple(relus), other_activations=tuple(others))


def swap_activations_to_relu(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every non-ReLU activation module replaced by ``nn.ReLU()``."""
    report = inspect_activations(model)
    if not report.relu_modules and not report.other_activations:
        raise ValueError(
            "relu-swap found no activation modules to replace (activations applied as functions?); "
            "use guided mode 'saliency'"
        )
    swapped = copy.deepcopy(model)
    for name, _ in report.other_activations:
        parent_name, _, child = name.rpartition(".")
        parent = swapped.get_submodule(parent_name) if parent_name else swapped
        setattr(parent, child, nn.ReLU())
    return swapped


def resolve_guided_mode(mode: str, report: ActivationReport) -> str:
    """``auto|relu-swap|saliency`` → the method to run: ``guided``, ``relu-swap`` or ``saliency``.

    ``relu-swap`` on an all-ReLU model is plain guided backprop (nothing to swap).
    """
    if mode not in GUIDED_MODES:
        raise ValueError(f"unknown guided mode {mode!r}; expected one of {list(GUIDED_MODES)}")
    if mode == "saliency":
        return mode
    if report.guided_faithful:
        if mode == "relu-swap":
            logger.info("relu-swap: the model's activations are all nn.ReLU already; plain guided backprop")
        return "guided"
    if mode == "relu-swap":
        return mode
    logger.warning(
        "guided backprop is defined for ReLU, and this model has %s: Captum would silently return the plain "
        "gradient, so the figure shows plain saliency, labelled as such. Use guided mode 'relu-swap' for "
        "guided backprop on a ReLU copy of the model.", report.describe(),
    )
    return "saliency"


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the call (BN running stats, no dropout), each module's flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _module_name(model: nn.Module, layer: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ValueError(f"layer {layer!r} is not a submodule of {type(model).__name__}")


def _as_batch(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one normalised image [3, H, W] or [1, 3, H, W], got shape {list(image.shape)}")
    return image.detach()


def layer_output(model: nn.Module, layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The output of ``layer`` when ``model`` runs on ``inputs`` (eval mode, no grad), hook removed after."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        with _eval_mode(model), torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"layer ran {len(captured)} times in one forward pass; expected exactly once")
    return captured[0]


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """CONV1 weights ``[out_channels, in_channels, k, k]`` (a detached CPU copy)."""
    return conv_layers(model)[0].weight.detach().cpu().clone()


def first_layer_feature_maps(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """CONV1 output ``[out_channels, H, W]`` for one normalised image (conv output, before BN/activation)."""
    x = _as_batch(image)
    layer = conv_layers(model)[0]
    return layer_output(model, layer, x.to(layer.weight.device))[0].cpu()


@dataclass(frozen=True)
class Neuron:
    """One CONV5 unit: ``channel`` at spatial ``(y, x)`` of the conv output, with its value there."""

    channel: int
    y: int
    x: int
    value: float  # conv output at (channel, y, x)
    channel_mean: float  # mean conv output of the channel (the ranking key)

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "y": self.y, "x": self.x, "value": self.value,
                "channel_mean": self.channel_mean}


def select_neurons(activation: torch.Tensor, k: int = 10) -> tuple[Neuron, ...]:
    """Apply :data:`NEURON_RULE` to one image's conv output ``[C, H, W]``."""
    if activation.dim() != 3:
        raise ValueError(f"expected one image's layer output [C, H, W], got shape {list(activation.shape)}")
    channels, height, width = activation.shape
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= channels:
        raise ValueError(
            f"k (neurons) must be an int in [1, {channels}] for a layer with {channels} channels, got {k!r}"
        )
    act = activation.detach().float().cpu()
    means = act.mean(dim=(1, 2))
    order = sorted(range(channels), key=lambda c: (-float(means[c]), c))[:k]
    neurons = []
    for c in order:
        flat = int(act[c].flatten().argmax())
        y, x = divmod(flat, width)
        neurons.append(Neuron(channel=c, y=y, x=x, value=float(act[c, y, x]), channel_mean=float(means[c])))
    return tuple(neurons)


def _neuron_selector(neurons: Sequence[Neuron]):
    """Captum selector picking neuron ``i`` of ``neurons`` for batch row ``i`` (one backward for all)."""
    channels = torch.tensor([n.channel for n in neurons])
    ys = torch.tensor([n.y for n in neurons])
    xs = torch.tensor([n.x for n in neurons])

    def select(output: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(output.shape[0], device=output.device)
        return output[rows, channels.to(output.device), ys.to(output.device), xs.to(output.device)]

    return select


def _neuron_attributions(model: nn.Module, layer: nn.Module, x: torch.Tensor, neurons: Sequence[Neuron],
                         guided: bool) -> torch.Tensor:
    """Gradients of each neuron w.r.t. the image, ``[k, C, H, W]``; Captum's guided rule if ``guided``."""
    from captum.attr import NeuronGradient, NeuronGuidedBackprop

    batch = x.expand(len(neurons), *x.shape[1:]).clone().requires_grad_(True)
    selector = _neuron_selector(neurons)
    with _eval_mode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        method = NeuronGuidedBackprop(model, layer) if guided else NeuronGradient(model, layer)
        return method.attribute(batch, neuron_selector=selector).detach()


@dataclass(frozen=True)
class NeuronAttributions:
    """Per-neuron input attributions for one image, the method that produced them, and why."""

    method: str  # "guided" | "relu-swap" | "saliency": what was actually computed
    requested_mode: str
    label: str  # the figure title text for ``method``
    warning: str | None  # set when the result is not guided backprop on the trained model
    layer_name: str
    activations: str  # ActivationReport.describe()
    neurons: tuple[Neuron, ...]
    attributions: torch.Tensor  # float32 [k, C, H, W], row i for neurons[i]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record of the choice (no tensors): written next to the figure."""
        return {
            "method": self.method, "requested_mode": self.requested_mode, "label": self.label,
            "warning": self.warning, "layer": self.layer_name, "attribute_to": "conv output (pre-BN, pre-activation)",
            "activations": self.activations, "rule": NEURON_RULE,
            "neurons": [n.to_dict() for n in self.neurons],
        }


def explain_neurons(model: nn.Module, image: torch.Tensor, *, k: int = 10, mode: str = "auto",
                    layer: nn.Module | None = None) -> NeuronAttributions:
    """Guided backprop (or the honest fallback, see the module docstring) for ``k`` neurons of ``layer``.

    ``image`` is one normalised image ``[3, H, W]``; ``layer`` defaults to CONV5.
    """
    layer = conv5(model) if layer is None else layer
    layer_name = _module_name(model, layer)
    x = _as_batch(image).to(layer.weight.device if hasattr(layer, "weight") else image.device)
    report = inspect_activations(model)
    method = resolve_guided_mode(mode, report)
    neurons = select_neurons(layer_output(model, layer, x)[0], k)

    if method == "guided":
        warning = None
    elif method == "relu-swap":
        warning = f"explains a copy of the model with its {report.describe()} swapped to nn.ReLU"
    elif report.guided_faithful:
        warning = "plain gradient requested (guided mode 'saliency')"
    else:
        warning = f"model has {report.describe()}; guided backprop is defined for nn.ReLU"
    if method == "saliency":
        attributions = _neuron_attributions(model, layer, x, neurons, guided=False)
    else:
        target = swap_activations_to_relu(model) if method == "relu-swap" else model
        target_layer = target.get_submodule(layer_name) if method == "relu-swap" else layer
        attributions = _neuron_attributions(target, target_layer, x, neurons, guided=True)
        plain = _neuron_attributions(target, target_layer, x, neurons, guided=False)
        if torch.equal(attributions, plain):
            warning = ("guided backprop changed nothing (ReLUs applied as functions, or activation classes "
                       "Captum does not override): the result is the plain gradient, labelled saliency")
            logger.warning("%s", warning)
            method = "saliency"
    if method == "relu-swap":
        logger.warning("explaining a copy of the model with every activation swapped to nn.ReLU (%s)",
                       report.describe())
    return NeuronAttributions(
        method=method, requested_mode=mode, label=METHOD_LABELS[method], warning=warning,
        layer_name=layer_name, activations=report.describe(), neurons=neurons,
        attributions=attributions.float().cpu(),
    )
