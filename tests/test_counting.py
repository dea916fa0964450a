"""core.model.counting: exact counts from the spec, proved equal to what torch measures (the oracle).

Golden example, worked by hand (m=32 filters of 3x3 in every block, n=256 dense units, 224x224 RGB,
10 classes, no batch norm). Maps after each pool: 112, 56, 28, 14, 7.

    params = m(C k^2 + 1) + 4 m(m k^2 + 1) + n(m H5 W5 + 1) + N(n + 1)
           = 32*28 + 4*32*289 + 256*(32*49 + 1) + 10*257
           = 896 + 36992 + 401664 + 2570                                    = 442,122
    MACs   = k^2 m [C H0 W0 + m (112^2 + 56^2 + 28^2 + 14^2)] + n (m H5 W5 + N)
           = 9*32*[3*50176 + 32*16660] + 256*(1568 + 10)
           = 288*683648 + 403968                                            = 197,294,592
    FLOPs  = 2 * MACs                                                       = 394,589,184
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from core.model import (
    ACTIVATION_NAMES,
    CLOSED_FORMULA,
    build_cnn,
    closed_form,
    count_flops,
    count_layers,
    count_params,
    count_totals,
    make_spec,
    measured_flops,
    uniform_knobs,
)


def measured_params(model) -> int:
    """What torch says: the number of trainable parameter elements."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_golden_example_from_the_docstring():
    spec = make_spec(filters=32, organisation="same", kernel_size=3, dense_units=256, image_size=224, batch_norm=False)
    totals = count_totals(spec)
    assert totals.params == 442_122
    assert totals.macs == 197_294_592
    assert totals.flops == 394_589_184
    cf = closed_form(32, 3, 256, 224)
    assert (cf.params, cf.macs, cf.flops) == (442_122, 197_294_592, 394_589_184)


def test_golden_example_matches_torch():
    spec = make_spec(filters=32, organisation="same", kernel_size=3, dense_units=256, image_size=224, batch_norm=False)
    model = build_cnn(spec)
    assert measured_params(model) == 442_122
    assert measured_flops(model, (1, 3, 224, 224)) == 394_589_184


valid_knobs = st.fixed_dictionaries(
    {
        "filters": st.integers(1, 12),
        "organisation": st.one_of(
            st.sampled_from(["same", "double", "half"]), st.lists(st.integers(1, 12), min_size=5, max_size=5)
        ),
        "kernel_size": st.one_of(st.integers(1, 6), st.lists(st.integers(1, 5), min_size=5, max_size=5)),
        "activation": st.sampled_from(ACTIVATION_NAMES),
        "batch_norm": st.booleans(),
        "dropout": st.sampled_from([0.0, 0.25]),
        "dense_units": st.integers(1, 24),
        "image_size": st.one_of(st.integers(32, 80), st.tuples(st.integers(32, 72), st.integers(32, 72))),
        "in_channels": st.integers(1, 4),
        "num_classes": st.integers(2, 12),
    }
)


def _spec_or_reject(knobs):
    try:
        return make_spec(**knobs)
    except ValueError:
        assume(False)


@given(knobs=valid_knobs)
def test_params_and_flops_equal_torch(knobs):
    """Oracle: parameter numel and FlopCounterMode on the built model, batch 1."""
    spec = _spec_or_reject(knobs)
    model = build_cnn(spec)
    h, w = spec.height_width
    assert count_params(spec) == measured_params(model), f"params differ for {knobs}"
    assert count_flops(spec) == measured_flops(model, (1, spec.in_channels, h, w)), f"FLOPs differ for {knobs}"


@given(knobs=valid_knobs, batch=st.integers(2, 4))
def test_flops_scale_linearly_with_batch(knobs, batch):
    spec = _spec_or_reject(knobs)
    model = build_cnn(spec)
    h, w = spec.height_width
    measured = measured_flops(model, (batch, spec.in_channels, h, w))
    assert measured == batch * count_flops(spec) == count_flops(spec, batch_size=batch)


@given(m=st.integers(1, 16), k=st.integers(1, 6), n=st.integers(1, 64), h=st.integers(40, 130),
       w=st.integers(40, 130), c=st.integers(1, 4), classes=st.integers(2, 12), bn=st.booleans())
def test_closed_formula_equals_per_layer_sum(m, k, n, h, w, c, classes, bn):
    try:
        spec = make_spec(filters=m, organisation="same", kernel_size=k, dense_units=n, image_size=(h, w), in_channels=c,
                         num_classes=classes, batch_norm=bn)
    except ValueError:
        assume(False)
    totals = count_totals(spec)
    cf = closed_form(m, k, n, (h, w), c, classes, batch_norm=bn)
    assert (cf.params, cf.macs, cf.flops) == (totals.params, totals.macs, totals.flops)
    assert uniform_knobs(spec) == (m, k, n)


@given(knobs=valid_knobs, size=st.integers(1, 31), odd_k=st.sampled_from([1, 3, 5, 7]))
def test_invalid_specs_raise_value_error_not_crash(knobs, size, odd_k):
    """With odd kernels the map halves exactly 5 times, so any side below 2^5 = 32 must be refused."""
    knobs = {**knobs, "image_size": size, "kernel_size": odd_k}
    with pytest.raises(ValueError, match="shrink below 1x1"):
        make_spec(**knobs)


def test_total_ops_convention_on_a_hand_counted_layer():
    spec = make_spec(filters=2, kernel_size=3, dense_units=4, image_size=32, in_channels=1, num_classes=3,
                     batch_norm=True)
    rows = {r.name: r for r in count_layers(spec)}
    conv = rows["block1.conv"]  # 2 x 32 x 32 outputs, each 9 MACs + 1 bias add
    assert conv.macs == 2 * 32 * 32 * 9 and conv.total_ops == 2 * conv.macs + 2 * 32 * 32
    assert rows["block1.bn"].total_ops == 2 * (2 * 32 * 32) and rows["block1.bn"].params == 4
    assert rows["block1.act"].total_ops == 2 * 32 * 32
    assert rows["block1.pool"].total_ops == 2 * 16 * 16 * 3  # 3 comparisons per 2x2 window
    assert rows["head.dropout"].total_ops == 0
    assert rows["head.out"].total_ops == 2 * 4 * 3 + 3


def test_non_uniform_spec_has_no_closed_form_knobs():
    assert uniform_knobs(make_spec(organisation="double", image_size=64)) is None
    assert uniform_knobs(make_spec(kernel_size=[3, 3, 5, 5, 5], image_size=64)) is None
    assert "FLOPs  = 2 · MACs" in CLOSED_FORMULA


def test_measured_flops_restores_training_mode():
    model = build_cnn(make_spec(filters=2, image_size=32, dense_units=4)).train()
    measured_flops(model, (1, 3, 32, 32))
    assert model.training
    assert torch.is_grad_enabled()
