"""core.model.spec: the builder's knobs, shape inference and every validation error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.model import ACTIVATION_NAMES, CNNSpec, ConvBlockSpec, HeadSpec, filters_per_block, make_spec


@pytest.mark.slow
def test_spec_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from core.model import make_spec; import core.model.spec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "core/model/spec.py must stay pure (no torch import)"


@pytest.mark.parametrize(
    ("organisation", "expected"),
    [
        ("same", [32, 32, 32, 32, 32]),
        ("double", [32, 64, 128, 256, 512]),
        ("half", [32, 16, 8, 4, 2]),
        ("DOUBLE", [32, 64, 128, 256, 512]),
        ([8, 16, 16, 32, 64], [8, 16, 16, 32, 64]),
    ],
)
def test_filter_organisations(organisation, expected):
    assert filters_per_block(32, organisation) == expected


def test_half_never_drops_below_one_filter():
    assert filters_per_block(4, "half") == [4, 2, 1, 1, 1]


def test_default_spec_shapes_match_hand_computation():
    spec = make_spec()  # defaults: 16 doubling; 224 px, k=3 "same" padding, 2x2 pools: 224 -> 112 -> ... -> 7
    pools = [layer.out_shape for layer in spec.layer_shapes() if layer.kind == "pool"]
    assert pools == [(16, 112, 112), (32, 56, 56), (64, 28, 28), (128, 14, 14), (256, 7, 7)]
    assert spec.feature_shape() == (256, 7, 7)


def test_even_kernel_grows_the_map_by_one_before_pooling():
    spec = make_spec(filters=32, organisation="same", kernel_size=4, image_size=64)
    convs = [layer.out_shape for layer in spec.layer_shapes() if layer.kind == "conv"]
    # 64 -> conv 65 -> pool 32 -> conv 33 -> pool 16 -> 17 -> 8 -> 9 -> 4 -> 5 -> 2
    assert [c[1] for c in convs] == [65, 33, 17, 9, 5]
    assert spec.feature_shape() == (32, 2, 2)


def test_per_block_kernels_and_rectangular_images():
    spec = make_spec(filters=32, organisation="same", kernel_size=[3, 3, 5, 5, 7], image_size=(96, 128))
    assert [b.kernel_size for b in spec.blocks] == [3, 3, 5, 5, 7]
    assert spec.feature_shape() == (32, 3, 4)


def test_round_trip_through_plain_dict():
    spec = make_spec(filters=8, organisation=[8, 8, 16, 16, 32], kernel_size=[3, 5, 3, 5, 3], activation="GELU",
                     batch_norm=True, dropout=0.3, dense_units=64, image_size=(64, 80), num_classes=7)
    data = spec.to_dict()
    assert CNNSpec.from_dict(data) == spec
    assert data["blocks"][0]["activation"] == "gelu", "activation names are stored canonical"


def test_aliases_resolve():
    assert make_spec(activation="Swish").blocks[0].activation == "silu"
    assert make_spec(activation="LeakyReLU").head.activation == "leaky_relu"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "sigmoidish"}, "unknown activation 'sigmoidish'; expected one of"),
        ({"organisation": "triple"}, "unknown filter organisation 'triple'"),
        ({"organisation": "custom"}, "needs the list itself"),
        ({"organisation": [8, 8, 8]}, "needs 5 channel counts"),
        ({"organisation": [8, 8, 0, 8, 8]}, "filters of block 3 must be a positive integer"),
        ({"filters": 0}, "filters must be a positive integer"),
        ({"kernel_size": 0}, "kernel_size must be a positive integer"),
        ({"kernel_size": [3, 3]}, "kernel_size needs one value or 5 values"),
        ({"dropout": 1.0}, "dropout must be a probability in [0, 1)"),
        ({"dropout": -0.1}, "dropout must be a probability"),
        ({"dense_units": 0}, "dense_units must be a positive integer"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"image_size": 16}, "would shrink below 1x1"),
        ({"image_size": 0}, "image_size must be a positive integer"),
        ({"image_size": 16, "kernel_size": 9}, "would shrink below 1x1"),
        ({"image_size": (64, 64, 3)}, "image_size must be an int or (height, width)"),
        ({"batch_norm": "yes"}, "batch_norm must be True or False"),
    ],
)
def test_invalid_knobs_raise_helpful_value_errors(kwargs, message):
    with pytest.raises(ValueError) as info:
        make_spec(**kwargs)
    assert message in str(info.value), f"expected {message!r} in {info.value!r}"


def test_wrong_number_of_blocks():
    block = ConvBlockSpec(out_channels=8, kernel_size=3)
    with pytest.raises(ValueError, match="exactly 5 conv blocks, got 4"):
        CNNSpec(blocks=(block,) * 4, head=HeadSpec(), image_size=64)


def test_from_dict_rejects_unknown_keys():
    data = make_spec(image_size=64).to_dict()
    data["colour"] = "blue"
    with pytest.raises(ValueError, match="unknown CNNSpec keys \\['colour'\\]"):
        CNNSpec.from_dict(data)
    data = make_spec(image_size=64).to_dict()
    data["blocks"][0]["stride"] = 2
    with pytest.raises(ValueError, match="malformed CNNSpec dict"):
        CNNSpec.from_dict(data)


@given(size=st.integers(1, 40), k=st.integers(1, 7))
def test_too_small_images_always_fail_at_construction(size, k):
    """Either the spec is valid and every map is >= 1x1, or construction raises ValueError."""
    try:
        spec = make_spec(filters=2, kernel_size=k, image_size=size, dense_units=4)
    except ValueError as exc:
        assert "shrink below 1x1" in str(exc), str(exc)
        return
    assert all(min(layer.out_shape[1:]) >= 1 for layer in spec.layer_shapes() if len(layer.out_shape) == 3)


def test_activation_names_are_listed_once():
    assert len(set(ACTIVATION_NAMES)) == len(ACTIVATION_NAMES)
