"""Fine-tuning strategies: exact trainable counts per family, LR groups, frozen BN, gradual unfreezing.

Oracles: hand-computed parameter counts (written out below) and sums over torch submodules picked
by attribute — never the block prefixes the code under test uses.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from core.finetune import (
    Full,
    Gradual,
    HeadOnly,
    TopK,
    count_parameters,
    make_strategy,
)
from core.model import build_backbone

NUM_CLASSES = 10


def numel(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def fresh(arch: str) -> nn.Module:
    """A random-init model with a 10-class head (VGG16, 134M params, is built once and reused)."""
    return _vgg16() if arch == "vgg16" else build_backbone(arch, NUM_CLASSES, weights=None)


@functools.cache
def _vgg16_model() -> nn.Module:
    return build_backbone("vgg16", NUM_CLASSES, weights=None)


def _vgg16() -> nn.Module:
    model = _vgg16_model()
    for p in model.parameters():  # undo the previous test's freezing
        p.requires_grad_(True)
    return model.train()


# arch -> (head, last block, second-to-last block) as torch submodules: the independent oracle
def _top_parts(arch: str, m: nn.Module) -> tuple[int, int, int]:
    if arch == "vgg16":
        return numel(m.classifier[6]), numel(m.classifier[3]), numel(m.classifier[0])
    if arch == "alexnet":
        return numel(m.classifier[6]), numel(m.classifier[4]), numel(m.classifier[1])
    if arch == "resnet18":
        return numel(m.fc), numel(m.layer4), numel(m.layer3)
    if arch in ("mobilenet_v2", "efficientnet_b0"):
        return numel(m.classifier[1]), numel(m.features[-1]), numel(m.features[-2])
    if arch == "mobilenet_v3_small":
        return numel(m.classifier[3]), numel(m.classifier[0]), numel(m.features[-1])
    if arch == "convnext_tiny":
        return (numel(m.classifier[2]), numel(m.features[6], m.features[7], m.classifier[0]),
                numel(m.features[4], m.features[5]))
    if arch == "vit_b_16":
        layers = list(m.encoder.layers)
        return numel(m.heads.head), numel(layers[-1], m.encoder.ln), numel(layers[-2])
    raise AssertionError(arch)


ARCHS = ["vgg16", "alexnet", "resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
         "convnext_tiny", "vit_b_16"]


@pytest.mark.parametrize("arch", ARCHS)
def test_trainable_counts_per_strategy_for_every_family(arch):
    model = fresh(arch)
    total = numel(model)
    head, last, second = _top_parts(arch, model)
    expected = {"head": head, "top-k": head + last + second, "full": total, "gradual": head}
    for name, want in expected.items():
        strategy = make_strategy(name, k=2, unfreeze_every=1)
        strategy.setup(model)
        counts = count_parameters(model)
        assert (counts.trainable, counts.total) == (want, total), \
            f"{arch} {name}: {counts.trainable}/{counts.total} trainable, expected {want}/{total}"
        groups = strategy.param_groups(model, lr=1e-3)
        optimizer = torch.optim.SGD(groups, lr=1e-3)
        updated = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
        assert updated == want, f"{arch} {name}: the optimizer must get exactly the trainable parameters"


def test_hand_computed_counts_vgg16_resnet18_mobilenet_v2():
    # VGG16, 10 classes: head 4096*10+10; fc7 4096*4096+4096; fc6 25088*4096+4096
    vgg = _vgg16()
    TopK(2).setup(vgg)
    assert count_parameters(vgg).trainable == 40_970 + 16_781_312 + 102_764_544
    assert count_parameters(vgg).total == 138_357_544 - 4_097_000 + 40_970
    # ResNet-18 layer4: conv3x3 256->512, 2 x conv3x3 512->512 (x2 blocks: 3 of them), 1x1 downsample, 5 BNs
    resnet = fresh("resnet18")
    TopK(1).setup(resnet)
    layer4 = 256 * 512 * 9 + 3 * 512 * 512 * 9 + 256 * 512 + 5 * 2 * 512
    assert count_parameters(resnet).trainable == 512 * 10 + 10 + layer4 == 5_130 + 8_393_728
    # MobileNetV2 features[18] = 1x1 conv 320->1280 + BN; features[17] = inverted residual 160->320 (x6)
    mbv2 = fresh("mobilenet_v2")
    TopK(2).setup(mbv2)
    f18 = 320 * 1280 + 2 * 1280
    f17 = 160 * 960 + 2 * 960 + 960 * 9 + 2 * 960 + 960 * 320 + 2 * 320
    assert count_parameters(mbv2).trainable == 1280 * 10 + 10 + f18 + f17 == 898_890


def test_full_uses_discriminative_learning_rates():
    model = fresh("resnet18")
    strategy = Full(backbone_lr_mult=0.1)
    strategy.setup(model)
    groups = strategy.param_groups(model, lr=0.01)
    head_ids = {id(p) for p in model.fc.parameters()}
    for group in groups:
        is_head = all(id(p) in head_ids for p in group["params"])
        want = 0.01 if is_head else 0.001
        assert group["lr"] == pytest.approx(want), f"group {group['name']}: lr {group['lr']}, expected {want}"
        if all(p.ndim < 2 for p in group["params"]):
            assert group["weight_decay"] == 0.0, f"{group['name']}: biases/norm scales are not decayed"
    assert {g["name"] for g in groups} >= {"head", "head/no_decay", "layer4", "stem/no_decay"}


def _train_steps(model, strategy, epoch, optimizer, steps=3, side=32):
    model.train()
    strategy.on_epoch_start(epoch, model, optimizer)
    torch.manual_seed(epoch)
    for _ in range(steps):
        x, y = torch.randn(4, 3, side, side) * 2 + 1, torch.randint(0, NUM_CLASSES, (4,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _bn_stats(model):
    return {n: m.running_mean.clone() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize(("strategy", "moving"), [
    (HeadOnly(), set()),
    (TopK(1), {"features.18.1"}),
    (Full(bn_eval=True), set()),
])
def test_frozen_batchnorm_keeps_eval_mode_and_running_stats_through_training(strategy, moving):
    model = fresh("mobilenet_v2")
    strategy.setup(model)
    optimizer = torch.optim.SGD(strategy.param_groups(model, lr=0.1), lr=0.1)
    before = _bn_stats(model)
    head_before = model.classifier[1].weight.detach().clone()
    for epoch in range(2):  # model.train() at every epoch start must not wake frozen BN up
        _train_steps(model, strategy, epoch, optimizer, steps=2)
    after = _bn_stats(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == moving, f"{strategy.name}: BN stats changed in {sorted(changed)}, expected {sorted(moving)}"
    in_train = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m.training}
    assert in_train == moving, f"{strategy.name}: BN in train mode {sorted(in_train)}, expected {sorted(moving)}"
    assert not torch.equal(head_before, model.classifier[1].weight), "the head must have trained"


def test_frozen_dropout_in_vgg_fc_blocks_is_eval_but_head_side_stays_train():
    model = _vgg16()
    strategy = HeadOnly()
    strategy.setup(model)
    model.train()
    strategy.on_epoch_start(0, model, torch.optim.SGD(strategy.param_groups(model, 0.1), lr=0.1))
    assert not model.classifier[2].training and not model.classifier[5].training, "fc6/fc7 dropout frozen"
    assert model.classifier[6].training and model.training


def test_gradual_adds_a_param_group_at_the_right_epoch():
    model = fresh("resnet18")
    strategy = Gradual(unfreeze_every=2, backbone_lr_mult=0.5)
    strategy.setup(model)
    optimizer = torch.optim.SGD(strategy.param_groups(model, lr=0.2), lr=0.2)
    seen = []
    for epoch in range(6):
        if epoch == 4:  # pretend a schedule halved the LR: the late group joins at the same point
            for group in optimizer.param_groups:
                group["base_lr"], group["lr"] = group["lr"], group["lr"] / 2
        _train_steps(model, strategy, epoch, optimizer, steps=1)
        seen.append([g["name"] for g in optimizer.param_groups])
    assert seen[0] == seen[1] == ["head", "head/no_decay"], seen[:2]
    assert seen[2] == seen[3] == seen[1] + ["layer4", "layer4/no_decay"], seen[2:4]
    assert seen[4] == seen[5] == seen[3] + ["layer3", "layer3/no_decay"], seen[4:]
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    # layer4 (0.2 * 0.5) was halved with everything else; layer3 joined at base 0.1 times the factor 0.5
    assert lrs["layer4"] == pytest.approx(0.05) and lrs["layer3"] == pytest.approx(0.05), lrs
    assert optimizer.param_groups[-1]["base_lr"] == pytest.approx(0.1)
    assert count_parameters(model).trainable == numel(model.fc, model.layer4, model.layer3)
    strategy.on_epoch_start(5, model, optimizer)  # a repeated call adds nothing
    assert len(optimizer.param_groups) == 6


@pytest.mark.parametrize("every, cap, blocks_by_epoch", [  # the rule, written out: head alone first, then one
    (1, None, [0, 1, 2, 3, 4, 5]),                           # more block every `every` epochs, at most `cap`
    (2, None, [0, 0, 1, 1, 2, 2, 3]),
    (3, 2, [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]),
])
def test_gradual_schedule_table(every, cap, blocks_by_epoch):
    strategy = Gradual(unfreeze_every=every, max_blocks=cap)
    assert [strategy.trained_blocks(e) for e in range(len(blocks_by_epoch))] == blocks_by_epoch


@given(every=st.integers(1, 4), epoch=st.integers(0, 40), cap=st.one_of(st.none(), st.integers(1, 6)))
def test_gradual_schedule_property(every, epoch, cap):
    blocks = 0  # simulate the epochs: a block joins at the start of every epoch that is a multiple of `every`
    for started in range(1, epoch + 1):
        if started % every == 0 and (cap is None or blocks < cap):
            blocks += 1
    assert Gradual(unfreeze_every=every, max_blocks=cap).trained_blocks(epoch) == blocks


def test_misconfiguration_fails_fast_with_a_fix():
    with pytest.raises(ValueError, match="k=0 is --strategy head"):
        TopK(0)
    with pytest.raises(ValueError, match=r"k=9 but resnet has only 5 blocks .*stem.*use a smaller k"):
        TopK(9).setup(fresh("resnet18"))
    with pytest.raises(ValueError, match=r"unknown strategy 'partial'.*'top-k'"):
        make_strategy("partial")
    with pytest.raises(ValueError, match="unfreeze_every must be an int >= 1"):
        Gradual(unfreeze_every=0)
    with pytest.raises(ValueError, match="backbone_lr_mult must be > 0"):
        Full(backbone_lr_mult=0)
    with pytest.raises(RuntimeError, match="call setup"):
        HeadOnly().param_groups(fresh("resnet18"), 0.1)
    with pytest.raises(ValueError, match="no block layout for Sequential"):
        HeadOnly().setup(nn.Sequential(nn.Linear(2, 2)))
